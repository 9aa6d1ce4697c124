/* Unit tests for libsealroom's sans-I/O core: scripted stanzas in, captured
 * stanzas out. Covers request matching, identity registration, roster chain
 * verification (good and tampered chains), join/leave, the outbox with
 * resends after a lost link, history, error mapping, timeouts, the identity
 * API, and garbage input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sealroom/sealroom.h>

#include "internal.h"
#include "proto/b64.h"
#include "proto/roster.h"

#define SVC "rooms.localhost"
#define ROOM "team@rooms.localhost"
#define MAX_OUT 64
#define MAX_EV 64

typedef struct ev_copy {
    int type;
    uint32_t request_id;
    int kind, result;
    char error_text[512], room[128], nick[128], jid[128], stanza_id[64], origin_id[64];
    char first[64], last[64];
    unsigned char payload[256];
    size_t payload_len;
    int64_t ts;
    int history, self, complete;
    unsigned char pk[32];
    int have_pk;
    uint64_t roster_version;
} ev_copy;

typedef struct fixture {
    sealroom_ctx *ctx;
    xmpp_ctx_t *xmpp;
    char *out[MAX_OUT];
    size_t nout;
    ev_copy ev[MAX_EV];
    size_t nev;
    bool fail_send;
    sealroom_identity *alice;
    unsigned char alice_pk[32], alice_sk[64];
    unsigned char bob_pk[32], bob_sk[64];
    unsigned char carol_pk[32], carol_sk[64];
} fixture;

static int send_cb(void *user, const char *xml, size_t len)
{
    fixture *f = user;
    assert_int_equal(strlen(xml), len);
    if (f->fail_send)
        return -1;
    assert_true(f->nout < MAX_OUT);
    f->out[f->nout++] = strdup(xml);
    return 0;
}

static void copy_str(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

static void event_cb(void *user, const sealroom_event *ev)
{
    fixture *f = user;
    assert_true(f->nev < MAX_EV);
    ev_copy *c = &f->ev[f->nev++];
    memset(c, 0, sizeof *c);
    c->type = sealroom_event_get_type(ev);
    c->request_id = sealroom_event_request_id(ev);
    c->kind = sealroom_event_request_kind(ev);
    c->result = sealroom_event_result(ev);
    copy_str(c->error_text, sizeof c->error_text, sealroom_event_error_text(ev));
    copy_str(c->room, sizeof c->room, sealroom_event_room(ev));
    copy_str(c->nick, sizeof c->nick, sealroom_event_nick(ev));
    copy_str(c->jid, sizeof c->jid, sealroom_event_jid(ev));
    copy_str(c->stanza_id, sizeof c->stanza_id, sealroom_event_stanza_id(ev));
    copy_str(c->origin_id, sizeof c->origin_id, sealroom_event_origin_id(ev));
    copy_str(c->first, sizeof c->first, sealroom_event_history_first(ev));
    copy_str(c->last, sizeof c->last, sealroom_event_history_last(ev));
    size_t len;
    const unsigned char *p = sealroom_event_payload(ev, &len);
    if (p) {
        assert_true(len <= sizeof c->payload);
        memcpy(c->payload, p, len);
        c->payload_len = len;
    }
    c->ts = sealroom_event_timestamp_ms(ev);
    c->history = sealroom_event_is_history(ev);
    c->self = sealroom_event_is_self(ev);
    c->complete = sealroom_event_history_complete(ev);
    if (sealroom_event_public_key(ev)) {
        memcpy(c->pk, sealroom_event_public_key(ev), 32);
        c->have_pk = 1;
    }
    c->roster_version = sealroom_event_roster_version(ev);
}

static void seeded(unsigned char pk[32], unsigned char sk[64], unsigned char b)
{
    unsigned char seed[32];
    memset(seed, b, sizeof seed);
    crypto_sign_seed_keypair(pk, sk, seed);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || sodium_init() < 0)
        return -1;
    sealroom_callbacks cb = {0};
    cb.struct_size = sizeof cb;
    cb.send_xml = send_cb;
    cb.on_event = event_cb;
    cb.user = f;
    if (sealroom_ctx_new(&f->ctx, "Alice@localhost/dev", SVC, &cb) != SEALROOM_OK)
        return -1;
    f->xmpp = xmpp_ctx_new(NULL, NULL);
    seeded(f->alice_pk, f->alice_sk, 1);
    seeded(f->bob_pk, f->bob_sk, 2);
    seeded(f->carol_pk, f->carol_sk, 3);
    unsigned char seed[32];
    memset(seed, 1, sizeof seed);
    if (sealroom_identity_import(&f->alice, seed, sizeof seed) != SEALROOM_OK ||
        sealroom_ctx_set_identity(f->ctx, f->alice) != SEALROOM_OK)
        return -1;
    *state = f;
    return 0;
}

static void clear_out(fixture *f)
{
    for (size_t i = 0; i < f->nout; i++)
        free(f->out[i]);
    f->nout = 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    clear_out(f);
    sealroom_ctx_free(f->ctx);
    sealroom_identity_free(f->alice);
    xmpp_ctx_free(f->xmpp);
    free(f);
    return 0;
}

static int feed(fixture *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int feed(fixture *f, const char *fmt, ...)
{
    char *buf = malloc(256 * 1024);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, 256 * 1024, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && n < 256 * 1024);
    int rc = sealroom_ctx_receive_xml(f->ctx, buf, (size_t)n);
    free(buf);
    return rc;
}

/* The i-th captured outgoing stanza, parsed (caller releases). */
static xmpp_stanza_t *out_stanza(fixture *f, size_t i)
{
    assert_true(i < f->nout);
    xmpp_stanza_t *st = xmpp_stanza_new_from_string(f->xmpp, f->out[i]);
    assert_non_null(st);
    return st;
}

static xmpp_stanza_t *last_out(fixture *f)
{
    assert_true(f->nout > 0);
    return out_stanza(f, f->nout - 1);
}

static const ev_copy *find_event(fixture *f, int type)
{
    for (size_t i = 0; i < f->nev; i++)
        if (f->ev[i].type == type)
            return &f->ev[i];
    return NULL;
}

static const ev_copy *done_event(fixture *f, uint32_t id)
{
    for (size_t i = 0; i < f->nev; i++)
        if (f->ev[i].type == SEALROOM_EVENT_REQUEST_DONE && f->ev[i].request_id == id)
            return &f->ev[i];
    return NULL;
}

static void answer_result(fixture *f, const char *from, const char *id, const char *inner)
{
    assert_int_equal(feed(f, "<iq type='result' from='%s' to='alice@localhost/dev' id='%s'>%s</iq>",
                          from, id, inner ? inner : ""),
                     1);
}

/* ---- identity ---- */

static void test_identity_api(void **state)
{
    sealroom_identity *a = NULL, *b = NULL;
    unsigned char secret[32], pk1[32], pk2[32];
    char fp[SEALROOM_FINGERPRINTBYTES];
    assert_int_equal(sealroom_identity_generate(&a), SEALROOM_OK);
    assert_int_equal(sealroom_identity_export(secret, sizeof secret, a), SEALROOM_OK);
    assert_int_equal(sealroom_identity_import(&b, secret, sizeof secret), SEALROOM_OK);
    sodium_memzero(secret, sizeof secret);
    assert_int_equal(sealroom_identity_public_key(pk1, sizeof pk1, a), SEALROOM_OK);
    assert_int_equal(sealroom_identity_public_key(pk2, sizeof pk2, b), SEALROOM_OK);
    assert_memory_equal(pk1, pk2, 32);
    assert_int_equal(sealroom_identity_fingerprint(fp, sizeof fp, a), SEALROOM_OK);
    assert_int_equal(strlen(fp), 71);
    for (int g = 1; g < 8; g++)
        assert_int_equal(fp[g * 9 - 1], ' ');
    unsigned char h[32];
    char hex[65];
    crypto_generichash(h, 32, pk1, 32, NULL, 0);
    sodium_bin2hex(hex, sizeof hex, h, 32);
    assert_memory_equal(fp, hex, 8);
    assert_memory_equal(fp + 63, hex + 56, 8);
    assert_int_equal(sealroom_identity_import(&b, secret, 31), SEALROOM_E_INVALID);
    assert_null(b);
    assert_int_equal(sealroom_identity_export(secret, 16, a), SEALROOM_E_INVALID);
    assert_int_equal(sealroom_fingerprint(fp, 10, pk1, 32), SEALROOM_E_INVALID);
    sealroom_identity_free(a);
    sealroom_identity_free(NULL);
    assert_string_equal(sealroom_version(), SEALROOM_VERSION_STRING);
    assert_int_equal(sealroom_version_number(), SEALROOM_VERSION_NUMBER);
    for (int rc = 0; rc >= SEALROOM_E_UNAVAILABLE; rc--)
        assert_string_not_equal(sealroom_strerror(rc), "unknown error");
    assert_string_equal(sealroom_strerror(-999), "unknown error");
}

static void test_ctx_new_invalid(void **state)
{
    sealroom_ctx *ctx = (sealroom_ctx *)1;
    sealroom_callbacks cb = {0};
    cb.struct_size = sizeof cb;
    assert_int_equal(sealroom_ctx_new(&ctx, "alice@localhost", SVC, &cb), SEALROOM_E_INVALID);
    assert_null(ctx);
    cb.send_xml = send_cb;
    assert_int_equal(sealroom_ctx_new(&ctx, "localhost", SVC, &cb), SEALROOM_E_INVALID);
    assert_int_equal(sealroom_ctx_new(&ctx, "alice@localhost", "x@" SVC, &cb), SEALROOM_E_INVALID);
    assert_int_equal(sealroom_ctx_new(&ctx, "a lice@localhost", SVC, &cb), SEALROOM_E_INVALID);
    sealroom_ctx_free(NULL);
}

static void test_identity_register(void **state)
{
    fixture *f = *state;
    uint32_t id = 0;
    assert_int_equal(sealroom_identity_register(f->ctx, &id), SEALROOM_OK);
    assert_int_not_equal(id, 0);
    xmpp_stanza_t *iq = last_out(f);
    assert_string_equal(xmpp_stanza_get_name(iq), "iq");
    assert_string_equal(xmpp_stanza_get_type(iq), "set");
    assert_string_equal(xmpp_stanza_get_to(iq), SVC);
    xmpp_stanza_t *el = xmpp_stanza_get_child_by_name_and_ns(iq, "identity", SR_NS);
    assert_non_null(el);
    unsigned char pk[32], sig[64];
    assert_true(sr_b64_decode_exact(pk, 32, xmpp_stanza_get_attribute(el, "key")));
    assert_true(sr_b64_decode_exact(sig, 64, xmpp_stanza_get_attribute(el, "sig")));
    assert_memory_equal(pk, f->alice_pk, 32);
    /* The proof binds the normalised bare JID. */
    assert_true(sr_identity_proof_verify(sig, "alice@localhost", pk));
    char iqid[64];
    snprintf(iqid, sizeof iqid, "%s", xmpp_stanza_get_id(iq));
    xmpp_stanza_release(iq);

    /* An answer from the wrong entity, or with an unknown id, is not ours. */
    assert_int_equal(feed(f, "<iq type='result' from='evil.localhost' id='%s'/>", iqid), 0);
    assert_int_equal(feed(f, "<iq type='result' from='" SVC "' id='nope'/>"), 0);
    assert_null(done_event(f, id));
    answer_result(f, SVC, iqid, NULL);
    const ev_copy *e = done_event(f, id);
    assert_non_null(e);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_int_equal(e->kind, SEALROOM_REQ_IDENTITY_REGISTER);
    /* Answered once: a replay is no longer matched. */
    assert_int_equal(feed(f, "<iq type='result' from='" SVC "' id='%s'/>", iqid), 0);

    /* Conflict with the server's text. */
    assert_int_equal(sealroom_identity_register(f->ctx, &id), SEALROOM_OK);
    iq = last_out(f);
    assert_int_equal(
        feed(f,
             "<iq type='error' from='" SVC "' id='%s'><error type='cancel'>"
             "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
             "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>another key is registered</text>"
             "</error></iq>",
             xmpp_stanza_get_id(iq)),
        1);
    xmpp_stanza_release(iq);
    e = done_event(f, id);
    assert_int_equal(e->result, SEALROOM_E_CONFLICT);
    assert_string_equal(e->error_text, "conflict: another key is registered");
    assert_string_equal(sealroom_ctx_last_error(f->ctx), "conflict: another key is registered");
}

static void test_register_without_identity(void **state)
{
    fixture *f = *state;
    sealroom_callbacks cb = {0};
    cb.struct_size = sizeof cb;
    cb.send_xml = send_cb;
    cb.user = f;
    sealroom_ctx *ctx;
    assert_int_equal(sealroom_ctx_new(&ctx, "bob@localhost", SVC, &cb), SEALROOM_OK);
    uint32_t id = 0;
    assert_int_equal(sealroom_identity_register(ctx, &id), SEALROOM_E_STATE);
    assert_int_equal(sealroom_room_create(ctx, &id, "team"), SEALROOM_E_STATE);
    assert_int_equal(id, 0);
    assert_int_equal(f->nout, 0);
    sealroom_ctx_free(ctx);
}

static void answer_identity(fixture *f, const char *jid, const unsigned char pk[32],
                            const unsigned char sk[64], bool break_sig)
{
    xmpp_stanza_t *iq = last_out(f);
    unsigned char sig[64];
    char k[64], s[128];
    assert_true(sr_identity_proof_sign(sig, jid, pk, sk));
    if (break_sig)
        sig[3] ^= 1;
    sr_b64_encode(k, sizeof k, pk, 32);
    sr_b64_encode(s, sizeof s, sig, 64);
    char inner[512];
    snprintf(inner, sizeof inner, "<identity xmlns='" SR_NS "' jid='%s' key='%s' sig='%s'/>", jid,
             k, s);
    answer_result(f, SVC, xmpp_stanza_get_id(iq), inner);
    xmpp_stanza_release(iq);
}

static void test_identity_fetch(void **state)
{
    fixture *f = *state;
    uint32_t id;
    unsigned char pk[32];
    assert_int_equal(sealroom_ctx_known_key(f->ctx, pk, 32, "bob@localhost"), SEALROOM_E_NOT_FOUND);
    assert_int_equal(sealroom_identity_fetch(f->ctx, &id, "Bob@LocalHost/phone"), SEALROOM_OK);
    xmpp_stanza_t *iq = last_out(f);
    assert_string_equal(xmpp_stanza_get_type(iq), "get");
    xmpp_stanza_t *el = xmpp_stanza_get_child_by_name_and_ns(iq, "identity", SR_NS);
    assert_string_equal(xmpp_stanza_get_attribute(el, "jid"), "bob@localhost");
    xmpp_stanza_release(iq);
    answer_identity(f, "bob@localhost", f->bob_pk, f->bob_sk, false);
    const ev_copy *e = done_event(f, id);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_true(e->have_pk);
    assert_memory_equal(e->pk, f->bob_pk, 32);
    assert_string_equal(e->jid, "bob@localhost");
    assert_int_equal(sealroom_ctx_known_key(f->ctx, pk, 32, "bob@localhost"), SEALROOM_OK);
    assert_memory_equal(pk, f->bob_pk, 32);

    /* A proof that does not verify is refused. */
    assert_int_equal(sealroom_identity_fetch(f->ctx, &id, "carol@localhost"), SEALROOM_OK);
    answer_identity(f, "carol@localhost", f->carol_pk, f->carol_sk, true);
    assert_int_equal(done_event(f, id)->result, SEALROOM_E_VERIFY);
    /* An answer about another JID is refused. */
    assert_int_equal(sealroom_identity_fetch(f->ctx, &id, "carol@localhost"), SEALROOM_OK);
    answer_identity(f, "bob@localhost", f->bob_pk, f->bob_sk, false);
    assert_int_equal(done_event(f, id)->result, SEALROOM_E_PROTOCOL);
    assert_int_equal(sealroom_ctx_known_key(f->ctx, pk, 32, "carol@localhost"), SEALROOM_E_NOT_FOUND);

    /* Unknown user. */
    assert_int_equal(sealroom_identity_fetch(f->ctx, &id, "dave@localhost"), SEALROOM_OK);
    iq = last_out(f);
    feed(f,
         "<iq type='error' from='" SVC "' id='%s'><error type='cancel'>"
         "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
         "<unknown-identity xmlns='" SR_NS "'/>"
         "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>no identity for dave@localhost</text>"
         "</error></iq>",
         xmpp_stanza_get_id(iq));
    xmpp_stanza_release(iq);
    e = done_event(f, id);
    assert_int_equal(e->result, SEALROOM_E_NOT_FOUND);
    assert_string_equal(e->error_text,
                        "item-not-found/unknown-identity: no identity for dave@localhost");
    assert_int_equal(sealroom_identity_fetch(f->ctx, &id, "not a jid"), SEALROOM_E_INVALID);
}

/* ---- roster ---- */

static sr_roster_version *make_version(uint64_t ver, const unsigned char prev[32],
                                       const char *signer)
{
    sr_roster_version *v = calloc(1, sizeof *v);
    strcpy(v->room, ROOM);
    strcpy(v->signer, signer);
    v->version = ver;
    if (prev)
        memcpy(v->prev, prev, 32);
    return v;
}

static void add_op(sr_roster_version *v, sr_op_kind kind, const char *jid, sr_role role,
                   const unsigned char *pk)
{
    sr_roster_op *op = &v->ops[v->nops++];
    op->kind = kind;
    strcpy(op->jid, jid);
    op->role = role;
    if (pk)
        memcpy(op->key, pk, 32);
}

/* XML text of a signed version; updates *st (the server-side state). */
static char *version_xml(fixture *f, sr_roster_version *v, const unsigned char sk[64],
                         sr_roster_state *st)
{
    assert_true(sr_roster_sign(v, sk));
    if (st)
        assert_int_equal(sr_roster_apply(st, v), SR_ROSTER_OK);
    xmpp_stanza_t *el = sr_roster_to_xml(f->xmpp, v);
    char *buf;
    size_t len;
    assert_int_equal(xmpp_stanza_to_text(el, &buf, &len), XMPP_EOK);
    char *copy = strdup(buf);
    xmpp_free(f->xmpp, buf);
    xmpp_stanza_release(el);
    free(v);
    return copy;
}

/* A chain v0..v3: alice creates, adds bob (admin) and carol, bob adds dave. */
static void build_chain(fixture *f, char *xml[4], sr_roster_state *st)
{
    sr_roster_state_init(st);
    sr_roster_version *v = make_version(0, NULL, "alice@localhost");
    add_op(v, SR_OP_ADD, "alice@localhost", SR_ROLE_OWNER, f->alice_pk);
    xml[0] = version_xml(f, v, f->alice_sk, st);
    v = make_version(1, st->head, "alice@localhost");
    add_op(v, SR_OP_ADD, "bob@localhost", SR_ROLE_ADMIN, f->bob_pk);
    xml[1] = version_xml(f, v, f->alice_sk, st);
    v = make_version(2, st->head, "alice@localhost");
    add_op(v, SR_OP_ADD, "carol@localhost", SR_ROLE_MEMBER, f->carol_pk);
    xml[2] = version_xml(f, v, f->alice_sk, st);
    v = make_version(3, st->head, "bob@localhost");
    add_op(v, SR_OP_ADD, "dave@localhost", SR_ROLE_MEMBER, f->carol_pk);
    xml[3] = version_xml(f, v, f->bob_sk, st);
}

static void expect_chain_query(fixture *f, const char *from, char *id, size_t idlen)
{
    xmpp_stanza_t *iq = last_out(f);
    assert_string_equal(xmpp_stanza_get_type(iq), "get");
    assert_string_equal(xmpp_stanza_get_to(iq), ROOM);
    xmpp_stanza_t *c = xmpp_stanza_get_child_by_name_and_ns(iq, "chain", SR_NS);
    assert_non_null(c);
    assert_string_equal(xmpp_stanza_get_attribute(c, "from"), from);
    snprintf(id, idlen, "%s", xmpp_stanza_get_id(iq));
    xmpp_stanza_release(iq);
}

static void answer_chain(fixture *f, const char *id, const char *head, const char *complete,
                         const char *body)
{
    char inner[64 * 1024];
    snprintf(inner, sizeof inner, "<chain xmlns='" SR_NS "' head='%s' complete='%s'>%s</chain>",
             head, complete, body);
    answer_result(f, ROOM, id, inner);
}

static void test_sync_good_chain(void **state)
{
    fixture *f = *state;
    char *xml[4], id[64], body[32 * 1024];
    sr_roster_state st;
    build_chain(f, xml, &st);
    uint32_t req;
    assert_int_equal(sealroom_room_sync(f->ctx, &req, "team"), SEALROOM_OK);
    expect_chain_query(f, "0", id, sizeof id);
    snprintf(body, sizeof body, "%s%s", xml[0], xml[1]);
    answer_chain(f, id, "3", "false", body);
    assert_null(done_event(f, req));
    expect_chain_query(f, "2", id, sizeof id);
    snprintf(body, sizeof body, "%s%s", xml[2], xml[3]);
    answer_chain(f, id, "3", "true", body);
    const ev_copy *e = done_event(f, req);
    assert_non_null(e);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_int_equal(e->roster_version, 3);
    e = find_event(f, SEALROOM_EVENT_ROSTER_CHANGED);
    assert_non_null(e);
    assert_string_equal(e->room, ROOM);
    uint64_t ver;
    assert_int_equal(sealroom_room_roster_version(f->ctx, &ver, ROOM), SEALROOM_OK);
    assert_int_equal(ver, 3);
    assert_int_equal(sealroom_room_member_count(f->ctx, "team"), 4);
    assert_int_equal(sealroom_room_member_role(f->ctx, "team", "Bob@localhost"), SEALROOM_ROLE_ADMIN);
    const char *jid;
    sealroom_role role;
    unsigned char pk[32];
    assert_int_equal(sealroom_room_member(f->ctx, &jid, &role, pk, "team", 0), SEALROOM_OK);
    assert_string_equal(jid, "alice@localhost");
    assert_int_equal(role, SEALROOM_ROLE_OWNER);
    assert_memory_equal(pk, f->alice_pk, 32);
    assert_int_equal(sealroom_room_member(f->ctx, &jid, &role, pk, "team", 4), SEALROOM_E_NOT_FOUND);

    /* A server that rolls the roster back is caught: our head is 3. */
    f->nev = 0;
    assert_int_equal(sealroom_room_sync(f->ctx, &req, "team"), SEALROOM_OK);
    expect_chain_query(f, "4", id, sizeof id);
    answer_chain(f, id, "2", "true", "");
    e = done_event(f, req);
    assert_int_equal(e->result, SEALROOM_E_VERIFY);
    assert_int_equal(sealroom_room_roster_version(f->ctx, &ver, ROOM), SEALROOM_OK);
    assert_int_equal(ver, 3);
    /* Up to date: nothing new, no ROSTER_CHANGED. */
    f->nev = 0;
    assert_int_equal(sealroom_room_sync(f->ctx, &req, "team"), SEALROOM_OK);
    expect_chain_query(f, "4", id, sizeof id);
    answer_chain(f, id, "3", "true", "");
    assert_int_equal(done_event(f, req)->result, SEALROOM_OK);
    assert_null(find_event(f, SEALROOM_EVENT_ROSTER_CHANGED));
    for (int i = 0; i < 4; i++)
        free(xml[i]);
    sr_roster_state_free(&st);
}

/* Replaces the first occurrence of from by to in s (same length). */
static void patch(char *s, const char *from, const char *to)
{
    char *p = strstr(s, from);
    assert_non_null(p);
    assert_int_equal(strlen(from), strlen(to));
    memcpy(p, to, strlen(to));
}

static void sync_expect_verify_failure(fixture *f, char *xml[4])
{
    char id[64], body[32 * 1024];
    uint32_t req;
    f->nev = 0;
    assert_int_equal(sealroom_room_sync(f->ctx, &req, ROOM), SEALROOM_OK);
    expect_chain_query(f, "0", id, sizeof id);
    snprintf(body, sizeof body, "%s%s%s%s", xml[0], xml[1], xml[2], xml[3]);
    answer_chain(f, id, "3", "true", body);
    const ev_copy *e = done_event(f, req);
    assert_non_null(e);
    assert_int_equal(e->result, SEALROOM_E_VERIFY);
    assert_int_not_equal(strlen(e->error_text), 0);
    uint64_t ver;
    assert_int_equal(sealroom_room_roster_version(f->ctx, &ver, ROOM), SEALROOM_E_NOT_FOUND);
    assert_null(find_event(f, SEALROOM_EVENT_ROSTER_CHANGED));
}

static void test_sync_tampered_chain(void **state)
{
    fixture *f = *state;
    char *xml[4];
    sr_roster_state st;
    char key[64];
    build_chain(f, xml, &st);

    /* The server swaps carol's key for bob's in version 2. */
    char *saved = strdup(xml[2]);
    char bobkey[64];
    sr_b64_encode(key, sizeof key, f->carol_pk, 32);
    sr_b64_encode(bobkey, sizeof bobkey, f->bob_pk, 32);
    patch(xml[2], key, bobkey);
    sync_expect_verify_failure(f, xml);
    strcpy(xml[2], saved);
    free(saved);

    /* Version 1 promotes bob to owner instead of admin. */
    saved = strdup(xml[1]);
    patch(xml[1], "role=\"admin\"", "role=\"owner\"");
    sync_expect_verify_failure(f, xml);
    strcpy(xml[1], saved);
    free(saved);

    /* Head claims more than the chain holds. */
    {
        char id[64], body[32 * 1024];
        uint32_t req;
        f->nev = 0;
        assert_int_equal(sealroom_room_sync(f->ctx, &req, ROOM), SEALROOM_OK);
        expect_chain_query(f, "0", id, sizeof id);
        snprintf(body, sizeof body, "%s%s%s", xml[0], xml[1], xml[2]);
        answer_chain(f, id, "3", "true", body);
        assert_int_equal(done_event(f, req)->result, SEALROOM_E_VERIFY);
    }
    /* A version left out (0, 1, 3). */
    {
        char id[64], body[32 * 1024];
        uint32_t req;
        f->nev = 0;
        assert_int_equal(sealroom_room_sync(f->ctx, &req, ROOM), SEALROOM_OK);
        expect_chain_query(f, "0", id, sizeof id);
        snprintf(body, sizeof body, "%s%s%s", xml[0], xml[1], xml[3]);
        answer_chain(f, id, "3", "true", body);
        assert_int_equal(done_event(f, req)->result, SEALROOM_E_VERIFY);
    }
    /* Untampered, it verifies. */
    {
        char id[64], body[32 * 1024];
        uint32_t req;
        f->nev = 0;
        assert_int_equal(sealroom_room_sync(f->ctx, &req, ROOM), SEALROOM_OK);
        expect_chain_query(f, "0", id, sizeof id);
        snprintf(body, sizeof body, "%s%s%s%s", xml[0], xml[1], xml[2], xml[3]);
        answer_chain(f, id, "3", "true", body);
        assert_int_equal(done_event(f, req)->result, SEALROOM_OK);
    }
    for (int i = 0; i < 4; i++)
        free(xml[i]);
    sr_roster_state_free(&st);
}

/* Parses the <roster/> inside the last IQ sent. */
static sr_roster_version *sent_version(fixture *f, char *id, size_t idlen)
{
    xmpp_stanza_t *iq = last_out(f);
    assert_string_equal(xmpp_stanza_get_type(iq), "set");
    assert_string_equal(xmpp_stanza_get_to(iq), ROOM);
    xmpp_stanza_t *el = xmpp_stanza_get_child_by_name_and_ns(iq, "roster", SR_NS);
    if (!el) {
        xmpp_stanza_t *create = xmpp_stanza_get_child_by_name_and_ns(iq, "create", SR_NS);
        assert_non_null(create);
        el = xmpp_stanza_get_child_by_name(create, "roster");
    }
    assert_non_null(el);
    sr_roster_version *v = malloc(sizeof *v);
    const char *why;
    assert_true(sr_roster_from_xml(v, el, &why));
    snprintf(id, idlen, "%s", xmpp_stanza_get_id(iq));
    xmpp_stanza_release(iq);
    return v;
}

static void answer_head(fixture *f, const char *id, const sr_roster_state *st)
{
    char inner[256], h[64];
    sr_b64_encode(h, sizeof h, st->head, 32);
    snprintf(inner, sizeof inner, "<roster-head xmlns='" SR_NS "' version='%llu' hash='%s'/>",
             (unsigned long long)st->version, h);
    answer_result(f, ROOM, id, inner);
}

static void test_create_and_update(void **state)
{
    fixture *f = *state;
    char id[64];
    uint32_t req;
    sr_roster_state server;
    sr_roster_state_init(&server);

    assert_int_equal(sealroom_room_create(f->ctx, &req, "Team"), SEALROOM_OK);
    sr_roster_version *v = sent_version(f, id, sizeof id);
    assert_int_equal(v->version, 0);
    assert_string_equal(v->room, ROOM);
    assert_string_equal(v->signer, "alice@localhost");
    assert_int_equal(sr_roster_apply(&server, v), SR_ROSTER_OK);
    free(v);
    answer_head(f, id, &server);
    assert_int_equal(done_event(f, req)->result, SEALROOM_OK);
    assert_int_equal(sealroom_room_member_role(f->ctx, ROOM, "alice@localhost"), SEALROOM_ROLE_OWNER);

    /* Add bob without a key: the core fetches his registered key first. */
    assert_int_equal(sealroom_room_add_member(f->ctx, &req, "team", "bob@localhost",
                                              SEALROOM_ROLE_MEMBER, NULL),
                     SEALROOM_OK);
    xmpp_stanza_t *iq = last_out(f);
    assert_non_null(xmpp_stanza_get_child_by_name_and_ns(iq, "identity", SR_NS));
    xmpp_stanza_release(iq);
    answer_identity(f, "bob@localhost", f->bob_pk, f->bob_sk, false);
    v = sent_version(f, id, sizeof id);
    assert_int_equal(v->version, 1);
    assert_memory_equal(v->ops[0].key, f->bob_pk, 32);
    assert_int_equal(sr_roster_apply(&server, v), SR_ROSTER_OK);
    free(v);
    answer_head(f, id, &server);
    const ev_copy *e = done_event(f, req);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_int_equal(e->roster_version, 1);
    assert_int_equal(sealroom_room_member_count(f->ctx, ROOM), 2);

    /* Local refusals need no round trip. */
    size_t before = f->nout;
    assert_int_equal(sealroom_room_add_member(f->ctx, &req, ROOM, "bob@localhost",
                                              SEALROOM_ROLE_MEMBER, f->bob_pk),
                     SEALROOM_E_CONFLICT);
    assert_int_equal(sealroom_room_remove_member(f->ctx, &req, ROOM, "zed@localhost"),
                     SEALROOM_E_NOT_FOUND);
    assert_int_equal(sealroom_room_remove_member(f->ctx, &req, ROOM, "alice@localhost"),
                     SEALROOM_E_FORBIDDEN); /* the last owner */
    assert_int_equal(sealroom_room_set_role(f->ctx, &req, ROOM, "bob@localhost", 9),
                     SEALROOM_E_INVALID);
    assert_int_equal(f->nout, before);

    /* Someone else (alice's other device) changes the roster first: the
     * core syncs and retries on top of the new head. */
    assert_int_equal(sealroom_room_set_role(f->ctx, &req, ROOM, "bob@localhost", SEALROOM_ROLE_ADMIN),
                     SEALROOM_OK);
    v = sent_version(f, id, sizeof id);
    assert_int_equal(v->version, 2);
    free(v);
    assert_int_equal(
        feed(f,
             "<iq type='error' from='" ROOM "' id='%s'><error type='cancel'>"
             "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><stale-version xmlns='" SR_NS
             "'/></error></iq>",
             id),
        1);
    assert_null(done_event(f, req));
    char cid[64];
    expect_chain_query(f, "2", cid, sizeof cid);
    sr_roster_version *other = make_version(2, server.head, "alice@localhost");
    add_op(other, SR_OP_ADD, "carol@localhost", SR_ROLE_MEMBER, f->carol_pk);
    char *x2 = version_xml(f, other, f->alice_sk, &server);
    answer_chain(f, cid, "2", "true", x2);
    free(x2);
    v = sent_version(f, id, sizeof id);
    assert_int_equal(v->version, 3);
    assert_int_equal(v->ops[0].kind, SR_OP_ROLE);
    assert_int_equal(sr_roster_apply(&server, v), SR_ROSTER_OK);
    free(v);
    answer_head(f, id, &server);
    e = done_event(f, req);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_int_equal(e->roster_version, 3);
    assert_int_equal(sealroom_room_member_count(f->ctx, ROOM), 3);

    /* A second stale answer is not retried forever. */
    assert_int_equal(sealroom_room_remove_member(f->ctx, &req, ROOM, "carol@localhost"), SEALROOM_OK);
    for (int round = 0; round < 2; round++) {
        v = sent_version(f, id, sizeof id);
        free(v);
        feed(f,
             "<iq type='error' from='" ROOM "' id='%s'><error type='cancel'>"
             "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><stale-version xmlns='" SR_NS
             "'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>stale</text></error></iq>",
             id);
        if (round == 0) {
            expect_chain_query(f, "4", cid, sizeof cid);
            answer_chain(f, cid, "3", "true", "");
        }
    }
    e = done_event(f, req);
    assert_int_equal(e->result, SEALROOM_E_STALE);
    assert_string_equal(e->error_text, "conflict/stale-version: stale");

    /* A service reporting a head we did not sign is caught. */
    assert_int_equal(sealroom_room_remove_member(f->ctx, &req, ROOM, "carol@localhost"), SEALROOM_OK);
    v = sent_version(f, id, sizeof id);
    free(v);
    answer_result(f, ROOM, id,
                  "<roster-head xmlns='" SR_NS "' version='4' "
                  "hash='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='/>");
    assert_int_equal(done_event(f, req)->result, SEALROOM_E_VERIFY);
    sr_roster_state_free(&server);
}

/* ---- rooms ---- */

static void join_room(fixture *f, const char *nick)
{
    uint32_t req;
    assert_int_equal(sealroom_room_join(f->ctx, &req, "team", nick), SEALROOM_OK);
    xmpp_stanza_t *p = last_out(f);
    assert_string_equal(xmpp_stanza_get_name(p), "presence");
    char to[128];
    snprintf(to, sizeof to, ROOM "/%s", nick);
    assert_string_equal(xmpp_stanza_get_to(p), to);
    assert_non_null(xmpp_stanza_get_child_by_name_and_ns(p, "x", SR_NS_MUC));
    xmpp_stanza_release(p);
    assert_int_equal(feed(f,
                          "<presence from='" ROOM "/%s'><x xmlns='" SR_NS_MUC_USER "'>"
                          "<item affiliation='owner' role='participant' jid='alice@localhost/dev'/>"
                          "<status code='110'/></x></presence>",
                          nick),
                     1);
    const ev_copy *e = done_event(f, req);
    assert_non_null(e);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_int_equal(e->kind, SEALROOM_REQ_JOIN);
}

static void test_join_presence(void **state)
{
    fixture *f = *state;
    uint32_t req;
    assert_int_equal(sealroom_room_join(f->ctx, &req, "team", "alice"), SEALROOM_OK);
    /* Others first, then us with 110. */
    assert_int_equal(feed(f, "<presence from='" ROOM "/bob'><x xmlns='" SR_NS_MUC_USER "'>"
                             "<item affiliation='member' role='participant' jid='bob@localhost/x'/>"
                             "</x></presence>"),
                     1);
    const ev_copy *e = find_event(f, SEALROOM_EVENT_OCCUPANT_JOINED);
    assert_non_null(e);
    assert_string_equal(e->nick, "bob");
    assert_string_equal(e->jid, "bob@localhost");
    assert_false(e->self);
    assert_null(done_event(f, req));
    feed(f, "<presence from='" ROOM "/alice'><x xmlns='" SR_NS_MUC_USER "'><item jid='alice@localhost/dev'/>"
            "<status code='110'/></x></presence>");
    assert_int_equal(done_event(f, req)->result, SEALROOM_OK);
    /* The subject message after joining is consumed quietly. */
    size_t nev = f->nev;
    assert_int_equal(feed(f, "<message type='groupchat' from='" ROOM "'><subject/></message>"), 1);
    assert_int_equal(f->nev, nev);
    /* Bob leaves. */
    assert_int_equal(feed(f, "<presence type='unavailable' from='" ROOM "/bob'/>"), 1);
    e = find_event(f, SEALROOM_EVENT_OCCUPANT_LEFT);
    assert_non_null(e);
    assert_string_equal(e->jid, "bob@localhost");
    /* Presence from elsewhere is not ours. */
    assert_int_equal(feed(f, "<presence from='bob@localhost/x'/>"), 0);
    assert_int_equal(feed(f, "<presence from='other@" SVC "/x'/>"), 0);

    /* Leave. */
    assert_int_equal(sealroom_room_leave(f->ctx, &req, "team"), SEALROOM_OK);
    xmpp_stanza_t *p = last_out(f);
    assert_string_equal(xmpp_stanza_get_type(p), "unavailable");
    xmpp_stanza_release(p);
    feed(f, "<presence type='unavailable' from='" ROOM "/alice'><x xmlns='" SR_NS_MUC_USER "'>"
            "<status code='110'/></x></presence>");
    assert_int_equal(done_event(f, req)->result, SEALROOM_OK);
    assert_int_equal(sealroom_room_leave(f->ctx, &req, "team"), SEALROOM_E_STATE);
}

static void test_join_errors(void **state)
{
    fixture *f = *state;
    uint32_t req;
    assert_int_equal(sealroom_room_join(f->ctx, &req, "team", "alice"), SEALROOM_OK);
    feed(f, "<presence type='error' from='" ROOM "/alice'><error type='auth'>"
            "<registration-required xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>not a member of this room</text>"
            "</error></presence>");
    const ev_copy *e = done_event(f, req);
    assert_int_equal(e->result, SEALROOM_E_FORBIDDEN);
    assert_string_equal(e->error_text, "registration-required: not a member of this room");
    /* Not joined: sending is refused. */
    assert_int_equal(sealroom_room_send(f->ctx, &req, NULL, 0, "team", (const unsigned char *)"x", 1),
                     SEALROOM_E_STATE);

    assert_int_equal(sealroom_room_join(f->ctx, &req, "team", "bob"), SEALROOM_OK);
    feed(f, "<presence type='error' from='" ROOM "/bob'><error type='cancel'>"
            "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>");
    assert_int_equal(done_event(f, req)->result, SEALROOM_E_CONFLICT);

    assert_int_equal(sealroom_room_join(f->ctx, &req, "team", ""), SEALROOM_E_INVALID);
    assert_int_equal(sealroom_room_join(f->ctx, &req, "team@elsewhere.org", "a"), SEALROOM_E_INVALID);
    assert_int_equal(sealroom_room_join(f->ctx, &req, "team", "a\x01"), SEALROOM_E_INVALID);
}

static void test_kicked(void **state)
{
    fixture *f = *state;
    join_room(f, "alice");
    feed(f, "<presence type='unavailable' from='" ROOM "/alice'><x xmlns='" SR_NS_MUC_USER "'>"
            "<item affiliation='none' role='none'/><status code='110'/><status code='321'/>"
            "</x></presence>");
    const ev_copy *e = find_event(f, SEALROOM_EVENT_REMOVED);
    assert_non_null(e);
    assert_string_equal(e->room, ROOM);
    uint32_t req;
    assert_int_equal(sealroom_room_send(f->ctx, &req, NULL, 0, "team", (const unsigned char *)"x", 1),
                     SEALROOM_E_STATE);
}

static char *sent_origin(fixture *f, xmpp_stanza_t *m)
{
    xmpp_stanza_t *o = xmpp_stanza_get_child_by_name_and_ns(m, "origin-id", SR_NS_SID);
    assert_non_null(o);
    return strdup(xmpp_stanza_get_attribute(o, "id"));
}

static void test_send_and_reflection(void **state)
{
    fixture *f = *state;
    join_room(f, "alice");
    uint32_t req;
    char origin[64];
    const unsigned char payload[] = {0, 1, 2, 0xff, 'h', 'i'};
    assert_int_equal(sealroom_room_send(f->ctx, &req, origin, sizeof origin, "team", payload,
                                        sizeof payload),
                     SEALROOM_OK);
    assert_int_equal(sealroom_ctx_outbox_size(f->ctx), 1);
    xmpp_stanza_t *m = last_out(f);
    assert_string_equal(xmpp_stanza_get_type(m), "groupchat");
    assert_string_equal(xmpp_stanza_get_to(m), ROOM);
    char *oid = sent_origin(f, m);
    assert_string_equal(oid, origin);
    xmpp_stanza_t *sealed = xmpp_stanza_get_child_by_name_and_ns(m, "sealed", SR_NS);
    char *b64 = xmpp_stanza_get_text(sealed);
    unsigned char dec[16];
    size_t n;
    assert_true(sr_b64_decode(dec, sizeof dec, &n, b64, strlen(b64)));
    assert_int_equal(n, sizeof payload);
    assert_memory_equal(dec, payload, n);
    char *body = xmpp_stanza_get_text(xmpp_stanza_get_child_by_name(m, "body"));
    assert_string_equal(body, SR_FALLBACK_BODY);
    xmpp_free(f->xmpp, body);
    xmpp_stanza_release(m);

    /* A second message gets a different origin-id. */
    uint32_t req2;
    char origin2[64];
    assert_int_equal(sealroom_room_send(f->ctx, &req2, origin2, sizeof origin2, "team", payload, 1),
                     SEALROOM_OK);
    assert_string_not_equal(origin, origin2);
    /* A client-forged stanza-id (wrong by) is not the archive id; the
     * room's is. */
    sealroom_ctx_tick(f->ctx, 5000);
    feed(f,
         "<message type='groupchat' from='" ROOM "/alice' id='x'><body>fallback</body>"
         "<sealed xmlns='" SR_NS "'>%s</sealed><origin-id xmlns='" SR_NS_SID "' id='%s'/>"
         "<stanza-id xmlns='" SR_NS_SID "' by='alice@localhost' id='999'/>"
         "<stanza-id xmlns='" SR_NS_SID "' by='" ROOM "' id='7'/></message>",
         b64, oid);
    const ev_copy *e = find_event(f, SEALROOM_EVENT_MESSAGE);
    assert_non_null(e);
    assert_true(e->self);
    assert_false(e->history);
    assert_string_equal(e->nick, "alice");
    assert_string_equal(e->stanza_id, "7");
    assert_string_equal(e->origin_id, oid);
    assert_int_equal(e->ts, 5000);
    assert_int_equal(e->payload_len, sizeof payload);
    assert_memory_equal(e->payload, payload, sizeof payload);
    e = done_event(f, req);
    assert_non_null(e);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_string_equal(e->stanza_id, "7");
    assert_int_equal(sealroom_ctx_outbox_size(f->ctx), 1);
    assert_null(done_event(f, req2));

    /* Someone else's message with the same origin-id completes nothing. */
    feed(f,
         "<message type='groupchat' from='" ROOM "/bob'><sealed xmlns='" SR_NS "'>AA==</sealed>"
         "<origin-id xmlns='" SR_NS_SID "' id='%s'/><stanza-id xmlns='" SR_NS_SID "' by='" ROOM
         "' id='8'/></message>",
         origin2);
    assert_null(done_event(f, req2));
    assert_int_equal(sealroom_ctx_outbox_size(f->ctx), 1);

    /* The service refuses the second message. */
    feed(f,
         "<message type='error' from='" ROOM "' id='%s'><error type='modify'>"
         "<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><too-large xmlns='" SR_NS
         "'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>payload over 65536 bytes</text>"
         "</error></message>",
         origin2);
    e = done_event(f, req2);
    assert_int_equal(e->result, SEALROOM_E_TOO_LARGE);
    assert_string_equal(e->error_text, "policy-violation/too-large: payload over 65536 bytes");
    assert_int_equal(sealroom_ctx_outbox_size(f->ctx), 0);
    xmpp_free(f->xmpp, b64);
    free(oid);
}

static void test_link_down_resend(void **state)
{
    fixture *f = *state;
    join_room(f, "alice");
    uint32_t req, sync_req, req_offline;
    char origin[64], origin_off[64];
    assert_int_equal(sealroom_room_send(f->ctx, &req, origin, sizeof origin, "team",
                                        (const unsigned char *)"one", 3),
                     SEALROOM_OK);
    assert_int_equal(sealroom_room_sync(f->ctx, &sync_req, "team"), SEALROOM_OK);

    sealroom_ctx_link_down(f->ctx);
    /* The IQ is lost with the stream; the message stays in the outbox. */
    assert_int_equal(done_event(f, sync_req)->result, SEALROOM_E_NETWORK);
    assert_null(done_event(f, req));
    assert_int_equal(sealroom_ctx_outbox_size(f->ctx), 1);
    size_t sent = f->nout;
    assert_int_equal(sealroom_room_sync(f->ctx, &sync_req, "team"), SEALROOM_E_STATE);
    /* Sending while offline queues. */
    assert_int_equal(sealroom_room_send(f->ctx, &req_offline, origin_off, sizeof origin_off, "team",
                                        (const unsigned char *)"two", 3),
                     SEALROOM_OK);
    assert_int_equal(f->nout, sent);
    /* Timeouts do not run while the link is down. */
    sealroom_ctx_tick(f->ctx, 1);
    sealroom_ctx_tick(f->ctx, 10000000);
    assert_null(done_event(f, req));

    clear_out(f);
    assert_int_equal(sealroom_ctx_link_up(f->ctx), SEALROOM_OK);
    /* First the rejoin, messages only after the room confirms it. */
    assert_int_equal(f->nout, 1);
    xmpp_stanza_t *p = out_stanza(f, 0);
    assert_string_equal(xmpp_stanza_get_name(p), "presence");
    assert_string_equal(xmpp_stanza_get_to(p), ROOM "/alice");
    xmpp_stanza_release(p);
    feed(f, "<presence from='" ROOM "/alice'><x xmlns='" SR_NS_MUC_USER "'><status code='110'/>"
            "</x></presence>");
    assert_int_equal(f->nout, 3);
    xmpp_stanza_t *m1 = out_stanza(f, 1), *m2 = out_stanza(f, 2);
    char *o1 = sent_origin(f, m1), *o2 = sent_origin(f, m2);
    /* Same origin-ids as before, so the service can drop duplicates. */
    assert_true((strcmp(o1, origin) == 0 && strcmp(o2, origin_off) == 0) ||
                (strcmp(o2, origin) == 0 && strcmp(o1, origin_off) == 0));
    xmpp_stanza_release(m1);
    xmpp_stanza_release(m2);
    free(o1);
    free(o2);

    feed(f,
         "<message type='groupchat' from='" ROOM "/alice'><sealed xmlns='" SR_NS "'>b25l</sealed>"
         "<origin-id xmlns='" SR_NS_SID "' id='%s'/><stanza-id xmlns='" SR_NS_SID "' by='" ROOM
         "' id='41'/></message>",
         origin);
    assert_string_equal(done_event(f, req)->stanza_id, "41");
    assert_int_equal(sealroom_ctx_outbox_size(f->ctx), 1);
}

static void test_history(void **state)
{
    fixture *f = *state;
    uint32_t req;
    join_room(f, "alice");
    f->nev = 0;
    assert_int_equal(sealroom_room_history(f->ctx, &req, "team", NULL, 2), SEALROOM_OK);
    xmpp_stanza_t *iq = last_out(f);
    assert_string_equal(xmpp_stanza_get_type(iq), "set");
    assert_string_equal(xmpp_stanza_get_to(iq), ROOM);
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(iq, "query", SR_NS_MAM);
    assert_non_null(q);
    char qid[64], iqid[64];
    snprintf(qid, sizeof qid, "%s", xmpp_stanza_get_attribute(q, "queryid"));
    snprintf(iqid, sizeof iqid, "%s", xmpp_stanza_get_id(iq));
    xmpp_stanza_t *set = xmpp_stanza_get_child_by_name_and_ns(q, "set", SR_NS_RSM);
    assert_non_null(set);
    char *max = xmpp_stanza_get_text(xmpp_stanza_get_child_by_name(set, "max"));
    assert_string_equal(max, "2");
    xmpp_free(f->xmpp, max);
    xmpp_stanza_t *before = xmpp_stanza_get_child_by_name(set, "before");
    assert_non_null(before);
    assert_null(xmpp_stanza_get_children(before));
    xmpp_stanza_release(iq);

#define RESULT_FMT                                                                          \
        "<message to='alice@localhost/dev' from='" ROOM "'><result xmlns='" SR_NS_MAM                       \
        "' queryid='%s' id='%s'><forwarded xmlns='" SR_NS_FORWARD "'>"           \
        "<delay xmlns='" SR_NS_DELAY "' stamp='%s'/>"                                        \
        "<message type='groupchat' from='" ROOM "/%s'><body>x</body>"                       \
        "<sealed xmlns='" SR_NS "'>%s</sealed><origin-id xmlns='" SR_NS_SID "' id='o%s'/>"  \
        "</message></forwarded></result></message>"
    assert_int_equal(feed(f, RESULT_FMT, qid, "5", "2026-11-01T10:00:00.250Z", "bob", "aGk=", "5"), 1);
    assert_int_equal(feed(f, RESULT_FMT, qid, "6", "2026-11-01T11:00:00+01:00", "alice", "eW8=", "6"), 1);
    /* Another query's results, or results from another room, are not ours. */
    assert_int_equal(feed(f, RESULT_FMT, "other", "9", "2026-11-01T10:00:00Z", "bob", "aGk=", "9"), 0);
    assert_int_equal(f->nev, 2);
    const ev_copy *e = &f->ev[0];
    assert_int_equal(e->type, SEALROOM_EVENT_MESSAGE);
    assert_true(e->history);
    assert_string_equal(e->stanza_id, "5");
    assert_string_equal(e->nick, "bob");
    assert_string_equal(e->origin_id, "o5");
    assert_int_equal(e->payload_len, 2);
    assert_memory_equal(e->payload, "hi", 2);
    assert_int_equal(e->ts, 1793527200250LL);
    e = &f->ev[1];
    assert_int_equal(e->ts, 1793527200000LL);
    assert_memory_equal(e->payload, "yo", 2);
    assert_true(e->self);

    answer_result(f, ROOM, iqid,
                  "<fin xmlns='" SR_NS_MAM "' complete='true'><set xmlns='" SR_NS_RSM "'>"
                  "<first>5</first><last>6</last></set></fin>");
    e = done_event(f, req);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_int_equal(e->kind, SEALROOM_REQ_HISTORY);
    assert_string_equal(e->first, "5");
    assert_string_equal(e->last, "6");
    assert_true(e->complete);

    /* Paging back with before, then a refusal for non-members. */
    assert_int_equal(sealroom_room_history(f->ctx, &req, "team", "5", 0), SEALROOM_OK);
    iq = last_out(f);
    q = xmpp_stanza_get_child_by_name_and_ns(iq, "query", SR_NS_MAM);
    set = xmpp_stanza_get_child_by_name_and_ns(q, "set", SR_NS_RSM);
    assert_null(xmpp_stanza_get_child_by_name(set, "max"));
    char *b = xmpp_stanza_get_text(xmpp_stanza_get_child_by_name(set, "before"));
    assert_string_equal(b, "5");
    xmpp_free(f->xmpp, b);
    feed(f, "<iq type='error' from='" ROOM "' id='%s'><error type='auth'>"
            "<forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><not-member xmlns='" SR_NS "'/>"
            "</error></iq>",
         xmpp_stanza_get_id(iq));
    xmpp_stanza_release(iq);
    e = done_event(f, req);
    assert_int_equal(e->result, SEALROOM_E_FORBIDDEN);
    assert_string_equal(e->error_text, "forbidden/not-member");
}

static void test_timeout(void **state)
{
    fixture *f = *state;
    uint32_t req;
    sealroom_ctx_set_timeout(f->ctx, 1000);
    sealroom_ctx_tick(f->ctx, 100);
    assert_int_equal(sealroom_identity_fetch(f->ctx, &req, "bob@localhost"), SEALROOM_OK);
    sealroom_ctx_tick(f->ctx, 200); /* schedules the deadline: 1200 */
    sealroom_ctx_tick(f->ctx, 1199);
    assert_null(done_event(f, req));
    sealroom_ctx_tick(f->ctx, 1200);
    const ev_copy *e = done_event(f, req);
    assert_non_null(e);
    assert_int_equal(e->result, SEALROOM_E_TIMEOUT);
    /* A late answer is no longer matched. */
    xmpp_stanza_t *iq = last_out(f);
    assert_int_equal(feed(f, "<iq type='result' from='" SVC "' id='%s'/>", xmpp_stanza_get_id(iq)), 0);
    xmpp_stanza_release(iq);
}

/* A temporary refusal ("wait") keeps the message and resends it with the
 * same origin-id; a permanent one ends the request. */
static void test_send_wait_retry(void **state)
{
    fixture *f = *state;
    join_room(f, "alice");
    f->nev = 0;
    sealroom_ctx_tick(f->ctx, 1000);
    uint32_t req;
    char origin[64];
    assert_int_equal(sealroom_room_send(f->ctx, &req, origin, sizeof origin, "team",
                                        (const unsigned char *)"hi", 2),
                     SEALROOM_OK);
    size_t sent = f->nout;
    feed(f, "<message type='error' from='" ROOM "' id='%s'><error type='wait'>"
            "<internal-server-error xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
         origin);
    assert_null(find_event(f, SEALROOM_EVENT_REQUEST_DONE));
    assert_int_equal(sealroom_ctx_outbox_size(f->ctx), 1);
    sealroom_ctx_tick(f->ctx, 1500);
    assert_int_equal(f->nout, sent); /* not yet */
    sealroom_ctx_tick(f->ctx, 2100);
    assert_int_equal(f->nout, sent + 1);
    xmpp_stanza_t *m = last_out(f);
    char *oid = sent_origin(f, m);
    assert_string_equal(oid, origin);
    free(oid);
    xmpp_stanza_release(m);
    feed(f, "<message type='groupchat' from='" ROOM "/alice' id='%s'><sealed xmlns='" SR_NS
            "'>aGk=</sealed><origin-id xmlns='" SR_NS_SID "' id='%s'/>"
            "<stanza-id xmlns='" SR_NS_SID "' by='" ROOM "' id='9'/></message>",
         origin, origin);
    assert_int_equal(done_event(f, req)->result, SEALROOM_OK);
    assert_int_equal(sealroom_ctx_outbox_size(f->ctx), 0);

    assert_int_equal(sealroom_room_send(f->ctx, &req, origin, sizeof origin, "team",
                                        (const unsigned char *)"x", 1),
                     SEALROOM_OK);
    feed(f, "<message type='error' from='" ROOM "' id='%s'><error type='modify'>"
            "<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            "<too-large xmlns='" SR_NS "'/></error></message>",
         origin);
    assert_int_equal(done_event(f, req)->result, SEALROOM_E_TOO_LARGE);
}

static void test_send_failure(void **state)
{
    fixture *f = *state;
    uint32_t req = 0;
    f->fail_send = true;
    assert_int_equal(sealroom_identity_fetch(f->ctx, &req, "bob@localhost"), SEALROOM_E_NETWORK);
    assert_int_equal(req, 0);
    assert_int_equal(f->nev, 0);
}

/* Re-entrancy: a request started from inside an event callback. */
static fixture *reentrant_f;
static uint32_t reentrant_req;
static void reentrant_cb(void *user, const sealroom_event *ev)
{
    event_cb(user, ev);
    if (sealroom_event_get_type(ev) == SEALROOM_EVENT_REQUEST_DONE && !reentrant_req)
        assert_int_equal(sealroom_identity_fetch(reentrant_f->ctx, &reentrant_req, "x@localhost"),
                         SEALROOM_OK);
}

static void test_reentrant(void **state)
{
    fixture *f = *state;
    reentrant_f = f;
    reentrant_req = 0;
    f->ctx->cb.on_event = reentrant_cb;
    uint32_t req;
    assert_int_equal(sealroom_identity_fetch(f->ctx, &req, "bob@localhost"), SEALROOM_OK);
    size_t sent = f->nout;
    answer_identity(f, "bob@localhost", f->bob_pk, f->bob_sk, false);
    assert_int_equal(done_event(f, req)->result, SEALROOM_OK);
    assert_int_not_equal(reentrant_req, 0);
    assert_int_equal(f->nout, sent + 1);
    xmpp_stanza_t *iq = last_out(f);
    xmpp_stanza_t *el = xmpp_stanza_get_child_by_name_and_ns(iq, "identity", SR_NS);
    assert_string_equal(xmpp_stanza_get_attribute(el, "jid"), "x@localhost");
    xmpp_stanza_release(iq);
}

/* ---- garbage ---- */

static void test_garbage(void **state)
{
    fixture *f = *state;
    join_room(f, "alice");
    uint32_t req;
    assert_int_equal(sealroom_room_history(f->ctx, &req, "team", NULL, 5), SEALROOM_OK);
    xmpp_stanza_t *iq = last_out(f);
    char iqid[64], qid[64];
    snprintf(iqid, sizeof iqid, "%s", xmpp_stanza_get_id(iq));
    snprintf(qid, sizeof qid, "%s",
             xmpp_stanza_get_attribute(xmpp_stanza_get_child_by_name(iq, "query"), "queryid"));
    xmpp_stanza_release(iq);
    uint32_t sreq;
    assert_int_equal(sealroom_room_sync(f->ctx, &sreq, "team"), SEALROOM_OK);
    char sid[64];
    expect_chain_query(f, "0", sid, sizeof sid);

    const char *cases[] = {
        "", "<", "<<<>>>", "</stream>", "<?xml version='1.0'?><iq/>", "plain text",
        "<iq", "<iq type='result'", "<iq type='result' id='x'/>", "<iq/>", "<message/>",
        "<presence/>", "<presence from=''/>", "<presence from='@@@'/>",
        "<presence from='" ROOM "'/>", "<presence from='" ROOM "/'/>",
        "<presence from='" ROOM "/x' type='error'/>",
        "<presence from='" ROOM "/x' type='unavailable'/>",
        "<presence from='" ROOM "/x'><x xmlns='" SR_NS_MUC_USER "'><item jid='@'/></x></presence>",
        "<message from='" ROOM "/x' type='groupchat'/>",
        "<message from='" ROOM "/x' type='groupchat'><sealed xmlns='" SR_NS "'>!!!!</sealed></message>",
        "<message from='" ROOM "/x' type='groupchat'><sealed xmlns='" SR_NS "'>AAA</sealed></message>",
        "<message from='" ROOM "/x' type='groupchat'><sealed xmlns='" SR_NS "'/></message>",
        "<message from='" ROOM "/x' type='groupchat'><sealed xmlns='" SR_NS "'>AA==</sealed>"
        "<delay xmlns='" SR_NS_DELAY "' stamp='yesterday'/><origin-id xmlns='" SR_NS_SID "'/></message>",
        "<message from='" ROOM "' type='error' id='zz'/>",
        "<message from='" ROOM "'><result xmlns='" SR_NS_MAM "'/></message>",
        "<message from='" ROOM "'><result xmlns='" SR_NS_MAM "' queryid='x'/></message>",
        "<iq type='error' id='x' from='" ROOM "'><error><bogus/></error></iq>",
        "<a><b><c><d><e><f><g><h/></g></f></e></d></c></b></a>",
        "<iq type='result' id='x'>\xff\xfe</iq>",
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        assert_true(sealroom_ctx_receive_xml(f->ctx, cases[i], strlen(cases[i])) <= 1);
    char nul[] = "<iq/>\0<iq/>";
    assert_int_equal(sealroom_ctx_receive_xml(f->ctx, nul, sizeof nul - 1), SEALROOM_E_INVALID);
    assert_int_equal(sealroom_ctx_receive_xml(f->ctx, NULL, 3), SEALROOM_E_INVALID);

    /* MAM result with a forwarded message lacking everything useful. */
    assert_int_equal(feed(f, "<message from='" ROOM "'><result xmlns='" SR_NS_MAM "' queryid='%s' "
                             "id='1'><forwarded xmlns='" SR_NS_FORWARD "'><message/></forwarded>"
                             "</result></message>",
                          qid),
                     1);
    /* Malformed answers to pending IQs fail the request cleanly. */
    answer_result(f, ROOM, iqid, "<fin xmlns='urn:bogus'/>");
    assert_int_equal(done_event(f, req)->result, SEALROOM_E_PROTOCOL);
    answer_chain(f, sid, "zz", "true",
                 "<roster room='x' version='-1' prev='###' signer='' sig=''><add/></roster>");
    assert_int_equal(done_event(f, sreq)->result, SEALROOM_E_PROTOCOL);

    /* Random bit flips of a valid reflection and of a chain answer. */
    static const char *seed_xml =
        "<message type='groupchat' from='" ROOM "/alice'><body>b</body><sealed xmlns='" SR_NS
        "'>aGVsbG8=</sealed><origin-id xmlns='" SR_NS_SID "' id='o'/><stanza-id xmlns='" SR_NS_SID
        "' by='" ROOM "' id='1'/><x xmlns='" SR_NS_MUC_USER "'><item jid='a@b'/></x></message>";
    size_t n = strlen(seed_xml);
    char *buf = malloc(n + 1);
    uint32_t rnd = 12345;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(buf, seed_xml, n + 1);
        for (int k = 0; k < 1 + iter % 4; k++) {
            rnd = rnd * 1103515245u + 12345u;
            size_t pos = (rnd >> 8) % n;
            rnd = rnd * 1103515245u + 12345u;
            buf[pos] = (char)((rnd >> 16) & 0xff);
        }
        size_t len = strnlen(buf, n);
        int rc = sealroom_ctx_receive_xml(f->ctx, buf, len);
        assert_true(rc <= 1);
        f->nev = 0;
    }
    free(buf);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_api),
        cmocka_unit_test(test_ctx_new_invalid),
        T(test_identity_register),
        T(test_register_without_identity),
        T(test_identity_fetch),
        T(test_sync_good_chain),
        T(test_sync_tampered_chain),
        T(test_create_and_update),
        T(test_join_presence),
        T(test_join_errors),
        T(test_kicked),
        T(test_send_and_reflection),
        T(test_link_down_resend),
        T(test_history),
        T(test_timeout),
        T(test_send_wait_retry),
        T(test_send_failure),
        T(test_reentrant),
        T(test_garbage),
    };
    return cmocka_run_group_tests_name("client_core", tests, NULL, NULL);
}
