/* Unit tests for libsealroom's sans-I/O core: scripted stanzas in, captured
 * stanzas out. A small fake Sealroom service inside the test answers the
 * key-management IQs (roster chain, bundles, epochs, data keys, vault,
 * identities) the way the component does, and plays the other members
 * with the real e2e core (their envelopes, data keys and sealed messages),
 * so the core is checked against independently made ciphertext. Covers
 * request matching, identity registration and pins, roster chain
 * verification (good and tampered chains), room creation and membership
 * changes with their new epochs, join/leave, sealing and the outbox with
 * resends after a lost link, receiving (decrypt, and every refusal:
 * tampering, non-members, wrong-epoch headers, replays, bad envelopes),
 * history, the vault, error mapping, timeouts, and garbage input. The
 * fake also plays the component's part of multi-cast key distribution
 * runs (dmkd-wire.md), with members that are library contexts or are
 * simulated with e2e/dmkd.c, honestly or as an attacker rewriting rounds,
 * and the component's part of archive re-encryption (archive-wire.md):
 * check headers stored with every epoch, tokens checked and stored, the
 * lazy re-keying of <datakeys/> answers, and <confirm-check/>. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sealroom/sealroom.h>

#include "e2e/dmkd.h"
#include "e2e/envelope.h"
#include "e2e/message.h"
#include "internal.h"
#include "proto/b64.h"
#include "proto/jid.h"
#include "proto/roster.h"
#include "search/keyring.h"
#include "testhook.h"

#define SVC "rooms.localhost"
#define ROOM "team@rooms.localhost"
#define MAX_EV 256
#define PASS "correct horse battery staple"

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
    uint64_t roster_version, epoch;
    char fingerprint[SEALROOM_FINGERPRINTBYTES], previous_fingerprint[SEALROOM_FINGERPRINTBYTES];
} ev_copy;

/* ---- the fake service ---- */

/* The users the service knows; each has a fixed identity root. */
enum { U_ALICE, U_BOB, U_CAROL, U_DAVE, NUSERS };
static const char *const user_jid[NUSERS] = {"alice@localhost", "bob@localhost", "carol@localhost",
                                             "dave@localhost"};

/* A registered identity as the service publishes it. */
typedef struct fs_reg {
    bool on;
    unsigned char ed[32], x[32], sig[64], bsig[64];
} fs_reg;

typedef struct fs_epoch {
    uint64_t rv;
    unsigned char hash[32], kc[32], secret[32];
    sr_e2e_epoch_keys keys;
    char sealer[64];
    char env[NUSERS][256]; /* base64 envelope per user, "" if none */
    int env_sealer[NUSERS]; /* 1 + who sealed it when not sealer (a run's envelopes), or 0 */
    bool expired;
    unsigned char check[32]; /* H_c = k_e·P_c, when have_check (epochs before it have none) */
    bool have_check;
} fs_epoch;

typedef struct fs_dk {
    unsigned char id[16], h[32], p[32];
    uint64_t epoch;
    int sender;
    bool have_p;
} fs_dk;

#define FS_MAXV 16
#define FS_MAXE 16
#define FS_MAXDK 128

typedef struct fsvc {
    sr_e2e_identity id[NUSERS]; /* what the fake uses when acting as a user */
    fs_reg reg[NUSERS];
    bool auto_identity; /* answer identity get/set too */
    sr_roster_state roster;
    char *vxml[FS_MAXV];
    unsigned char heads[FS_MAXV][32];
    size_t nver;
    uint64_t membership_version;
    fs_epoch ep[FS_MAXE]; /* epoch n is ep[n - 1]; the current one is nep */
    size_t nep;
    fs_dk dk[FS_MAXDK];
    size_t ndk;
    unsigned char *vault;
    size_t vault_len;
    uint64_t vault_version;
    bool vault_hidden;
    unsigned n_chain, n_bundles, n_epoch_get, n_epoch_get_numbered, n_epoch_set, n_epoch_refused;
    unsigned n_datakey_set, n_datakeys_get, n_vault_get, n_vault_set;
    /* key distribution: the answer to <rekey/>, and what members told us */
    const char *rekey_mode; /* "solo", "run", or "refuse" (not a member) */
    unsigned n_rekey, n_abort;
    char abort_run[32], abort_reason[512];
    /* archive re-encryption: token[f] is Δ(f-1→f) when have_token[f] */
    unsigned char token[FS_MAXE + 1][32];
    bool have_token[FS_MAXE + 1];
    int token_sender[FS_MAXE + 1];
    bool no_lazy;             /* answer <datakeys/> with headers as stored */
    const char *token_refuse; /* refuse every token with this condition (NULL: check it) */
    unsigned n_token, n_token_refused, n_rekeyed;
    unsigned n_check_ok, n_check_failed;
    uint64_t check_answer_epoch;
    unsigned n_epoch_get_by[FS_MAXE + 1]; /* numbered fetches per epoch */
    /* encrypted search: answer <state/> with generation 1 and this key
     * sealed for the current epoch (otherwise: no search at all) */
    bool search_on;
    unsigned char search_kg[32];
} fsvc;

typedef struct fixture {
    sealroom_ctx *ctx;
    xmpp_ctx_t *xmpp;
    char own_full[64], own_bare[64];
    char **out;    /* captured stanzas */
    bool *handled; /* taken by the test or answered by the fake */
    size_t nout, capout;
    ev_copy ev[MAX_EV];
    size_t nev;
    bool fail_send;
    sealroom_identity *alice;
    unsigned char alice_pk[32], alice_sk[64];
    unsigned char bob_pk[32], bob_sk[64];
    unsigned char carol_pk[32], carol_sk[64];
    fsvc *svc;
    bool own_svc;
} fixture;

static int send_cb(void *user, const char *xml, size_t len)
{
    fixture *f = user;
    assert_int_equal(strlen(xml), len);
    if (f->fail_send) return -1;
    if (f->nout == f->capout) {
        size_t cap = f->capout ? f->capout * 2 : 64;
        f->out = realloc(f->out, cap * sizeof *f->out);
        f->handled = realloc(f->handled, cap * sizeof *f->handled);
        assert_non_null(f->out);
        assert_non_null(f->handled);
        f->capout = cap;
    }
    f->handled[f->nout] = false;
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
    c->epoch = sealroom_event_epoch(ev);
    copy_str(c->fingerprint, sizeof c->fingerprint, sealroom_event_fingerprint(ev));
    copy_str(c->previous_fingerprint, sizeof c->previous_fingerprint,
             sealroom_event_previous_fingerprint(ev));
}

static void fs_register_user(fsvc *s, int u)
{
    fs_reg *r = &s->reg[u];
    r->on = true;
    memcpy(r->ed, s->id[u].sign_pk, 32);
    memcpy(r->x, s->id[u].box_pk, 32);
    assert_true(sr_identity_proof_sign(r->sig, user_jid[u], r->ed, s->id[u].sign_sk));
    assert_int_equal(sr_e2e_bundle_sign(r->bsig, user_jid[u], &s->id[u]), SR_E2E_OK);
}

/* Replaces user u's identity with the one of root byte b (a new device
 * key, or a server substituting one). */
static void fs_user_rekey(fsvc *s, int u, unsigned char b)
{
    unsigned char root[32];
    memset(root, b, sizeof root);
    assert_int_equal(sr_e2e_identity_derive(&s->id[u], root), SR_E2E_OK);
    fs_register_user(s, u);
}

static fsvc *fs_new(void)
{
    fsvc *s = calloc(1, sizeof *s);
    assert_non_null(s);
    for (int u = 0; u < NUSERS; u++)
        fs_user_rekey(s, u, (unsigned char)(u + 1));
    sr_roster_state_init(&s->roster);
    s->rekey_mode = "solo";
    return s;
}

static void fs_free(fsvc *s)
{
    if (!s) return;
    sr_roster_state_free(&s->roster);
    for (size_t i = 0; i < s->nver; i++)
        free(s->vxml[i]);
    free(s->vault);
    sodium_memzero(s, sizeof *s);
    free(s);
}

static int user_index(const char *jid)
{
    char bare[SR_BARE_JID_MAX];
    if (!jid || !sr_jid_normalise_bare(bare, sizeof bare, jid)) return -1;
    for (int u = 0; u < NUSERS; u++)
        if (strcmp(bare, user_jid[u]) == 0) return u;
    return -1;
}

/* A growing string. */
typedef struct sbuf {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    if (b->n + (size_t)n + 1 > b->cap) {
        b->cap = (b->n + (size_t)n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        assert_non_null(b->s);
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

static char *b64_of(const unsigned char *p, size_t n)
{
    size_t cap = sr_b64_encoded_len(n);
    char *s = malloc(cap);
    assert_non_null(s);
    assert_true(sr_b64_encode(s, cap, p, n));
    return s;
}

/* Decodes base64 text into a malloc'd buffer. */
static unsigned char *unb64(const char *s, size_t *len)
{
    size_t cap = sr_b64_decoded_max(strlen(s));
    unsigned char *p = malloc(cap ? cap : 1);
    assert_non_null(p);
    if (!sr_b64_decode(p, cap, len, s, strlen(s))) {
        free(p);
        return NULL;
    }
    return p;
}

/* The service's answers: fed to the core as if they came from the IQ's
 * addressee. */
static void fs_answer(fixture *f, xmpp_stanza_t *iq, const char *inner)
{
    sbuf b = {0};
    sb_add(&b, "<iq type='result' from='%s' to='%s' id='%s'>%s</iq>", xmpp_stanza_get_to(iq),
           f->own_full, xmpp_stanza_get_id(iq), inner ? inner : "");
    sealroom_ctx_receive_xml(f->ctx, b.s, b.n);
    free(b.s);
}

static void fs_error(fixture *f, xmpp_stanza_t *iq, const char *etype, const char *cond,
                     const char *app, const char *text)
{
    sbuf b = {0};
    sb_add(&b,
           "<iq type='error' from='%s' to='%s' id='%s'><error type='%s'>"
           "<%s xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>",
           xmpp_stanza_get_to(iq), f->own_full, xmpp_stanza_get_id(iq), etype, cond);
    if (app) sb_add(&b, "<%s xmlns='" SR_NS "'/>", app);
    if (text) sb_add(&b, "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>%s</text>", text);
    sb_add(&b, "</error></iq>");
    sealroom_ctx_receive_xml(f->ctx, b.s, b.n);
    free(b.s);
}

/* Records a signed version as the room's next one (the service's chain). */
static void fs_apply(fixture *f, const sr_roster_version *v)
{
    fsvc *s = f->svc;
    assert_true(s->nver < FS_MAXV);
    assert_int_equal(sr_roster_apply(&s->roster, v), SR_ROSTER_OK);
    xmpp_stanza_t *el = sr_roster_to_xml(f->xmpp, v);
    char *buf;
    size_t len;
    assert_int_equal(xmpp_stanza_to_text(el, &buf, &len), XMPP_EOK);
    s->vxml[s->nver] = strdup(buf);
    xmpp_free(f->xmpp, buf);
    xmpp_stanza_release(el);
    memcpy(s->heads[s->nver], s->roster.head, 32);
    s->nver++;
    for (unsigned i = 0; i < v->nops; i++)
        if (v->ops[i].kind != SR_OP_ROLE) s->membership_version = v->version;
}

/* Another member (signer) changes the roster: one op on target. */
static void fs_version(fixture *f, int signer, sr_op_kind kind, int target, sr_role role)
{
    fsvc *s = f->svc;
    sr_roster_version *v = calloc(1, sizeof *v);
    assert_non_null(v);
    strcpy(v->room, ROOM);
    strcpy(v->signer, user_jid[signer]);
    v->version = s->roster.exists ? s->roster.version + 1 : 0;
    if (s->roster.exists) memcpy(v->prev, s->roster.head, 32);
    v->nops = 1;
    v->ops[0].kind = kind;
    strcpy(v->ops[0].jid, user_jid[target]);
    v->ops[0].role = kind == SR_OP_REMOVE ? SR_ROLE_NONE : role;
    if (kind == SR_OP_ADD) memcpy(v->ops[0].key, s->id[target].sign_pk, 32);
    assert_true(sr_roster_sign(v, s->id[signer].sign_sk));
    fs_apply(f, v);
    free(v);
}

/* How a fake member's new epoch goes wrong for alice (or has no check
 * header, as before archive re-encryption). */
enum {
    FS_EPOCH_GOOD = 0,
    FS_EPOCH_REPLAYED_ENVELOPE,
    FS_EPOCH_WRONG_KC,
    FS_EPOCH_WRONG_CHECK,
    FS_EPOCH_NO_CHECK
};

/* H_c of a random key: a valid point that is no epoch's check header. */
static void fs_wrong_check(unsigned char hc[32])
{
    unsigned char k[32];
    crypto_core_ristretto255_scalar_random(k);
    assert_int_equal(sr_e2e_check_header(hc, k, ROOM), SR_E2E_OK);
}

/* A member (sealer) starts the next epoch at the current roster version,
 * sealed to every member with a registered identity. Returns its number. */
static uint64_t fs_new_epoch(fixture *f, int sealer, int how)
{
    fsvc *s = f->svc;
    assert_true(s->nep < FS_MAXE);
    uint64_t number = s->nep + 1;
    fs_epoch *e = &s->ep[s->nep];
    memset(e, 0, sizeof *e);
    e->rv = s->roster.version;
    memcpy(e->hash, s->heads[e->rv], 32);
    snprintf(e->sealer, sizeof e->sealer, "%s", user_jid[sealer]);
    randombytes_buf(e->secret, sizeof e->secret);
    assert_int_equal(sr_e2e_epoch_derive(&e->keys, e->secret, ROOM, number, e->hash), SR_E2E_OK);
    memcpy(e->kc, e->keys.kc, 32);
    if (how == FS_EPOCH_WRONG_KC) e->kc[0] ^= 1;
    e->have_check = how != FS_EPOCH_NO_CHECK;
    if (how == FS_EPOCH_WRONG_CHECK)
        fs_wrong_check(e->check);
    else
        assert_int_equal(sr_e2e_check_header(e->check, e->keys.k, ROOM), SR_E2E_OK);
    for (size_t i = 0; i < s->roster.nmembers; i++) {
        int u = user_index(s->roster.members[i].jid);
        if (u < 0 || !s->reg[u].on) continue;
        if (how == FS_EPOCH_REPLAYED_ENVELOPE && u == U_ALICE && number > 1) {
            /* The server hands out alice's envelope of the previous epoch. */
            memcpy(e->env[u], s->ep[number - 2].env[u], sizeof e->env[u]);
            continue;
        }
        sr_e2e_envelope_ctx ectx = {ROOM,        number,     e->hash, user_jid[sealer],
                                    user_jid[u], s->reg[u].x};
        unsigned char env[SR_E2E_ENVELOPE_BYTES];
        assert_int_equal(sr_e2e_envelope_seal(env, &ectx, e->secret, s->id[sealer].sign_sk),
                         SR_E2E_OK);
        assert_true(sr_b64_encode(e->env[u], sizeof e->env[u], env, sizeof env));
    }
    s->nep++;
    return number;
}

/* The room of most tests: alice owns it, bob is a member (version 1),
 * and alice made epoch 1. */
static void fs_room_setup(fixture *f)
{
    fs_version(f, U_ALICE, SR_OP_ADD, U_ALICE, SR_ROLE_OWNER);
    fs_version(f, U_ALICE, SR_OP_ADD, U_BOB, SR_ROLE_MEMBER);
    assert_int_equal(fs_new_epoch(f, U_ALICE, FS_EPOCH_GOOD), 1);
}

/* A data key of sender announced for epoch, its header wrapped under the
 * key of epoch wrap_epoch (normally the same). Returns its index. */
static size_t fs_datakey(fixture *f, int sender, uint64_t epoch, uint64_t wrap_epoch)
{
    fsvc *s = f->svc;
    assert_true(s->ndk < FS_MAXDK && wrap_epoch >= 1 && wrap_epoch <= s->nep);
    fs_dk *d = &s->dk[s->ndk];
    memset(d, 0, sizeof *d);
    sr_e2e_datakey_id_random(d->id);
    assert_int_equal(sr_e2e_datakey_random(d->p), SR_E2E_OK);
    assert_int_equal(sr_e2e_header_wrap(d->h, s->ep[wrap_epoch - 1].keys.k, d->p), SR_E2E_OK);
    d->epoch = epoch;
    d->sender = sender;
    d->have_p = true;
    return s->ndk++;
}

/* sender's message sealed with data key dk (base64, malloc'd). */
static char *fs_seal(fixture *f, int sender, size_t dk, const char *origin, uint64_t rv,
                     const char *plain)
{
    fsvc *s = f->svc;
    size_t n = strlen(plain), cap = n + SR_E2E_MSG_OVERHEAD, len = 0;
    unsigned char *buf = malloc(cap);
    assert_non_null(buf);
    sr_e2e_msg_meta meta = {ROOM, user_jid[sender], origin, s->dk[dk].id, rv};
    assert_int_equal(sr_e2e_message_seal(buf, cap, &len, (const unsigned char *)plain, n, &meta,
                                         s->dk[dk].p, s->id[sender].sign_sk),
                     SR_E2E_OK);
    char *b64 = b64_of(buf, len);
    free(buf);
    return b64;
}

static fs_dk *fs_dk_find(fsvc *s, const unsigned char id[16])
{
    for (size_t i = 0; i < s->ndk; i++)
        if (memcmp(s->dk[i].id, id, 16) == 0) return &s->dk[i];
    return NULL;
}

/* A live room message from nick (real JID sender, may be NULL). */
static void feed_groupchat(fixture *f, const char *nick, const char *sender, const char *origin,
                           const char *stanza_id, const char *sealed)
{
    sbuf b = {0};
    sb_add(&b,
           "<message type='groupchat' from='" ROOM "/%s' to='%s'><body>x</body>"
           "<sealed xmlns='" SR_NS "'>%s</sealed><origin-id xmlns='" SR_NS_SID "' id='%s'/>"
           "<stanza-id xmlns='" SR_NS_SID "' by='" ROOM "' id='%s'/>",
           nick, f->own_full, sealed, origin, stanza_id);
    if (sender) sb_add(&b, "<x xmlns='" SR_NS_MUC_USER "'><item jid='%s/phone'/></x>", sender);
    sb_add(&b, "</message>");
    assert_int_equal(sealroom_ctx_receive_xml(f->ctx, b.s, b.n), 1);
    free(b.s);
}

/* ---- the fake service's IQ handlers ---- */

static void fs_chain(fixture *f, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    fsvc *s = f->svc;
    uint64_t from = 0;
    s->n_chain++;
    if (!sr_parse_u64(xmpp_stanza_get_attribute(el, "from"), &from)) {
        fs_error(f, iq, "modify", "bad-request", NULL, NULL);
        return;
    }
    if (s->nver == 0) {
        fs_error(f, iq, "cancel", "item-not-found", NULL, "no such room");
        return;
    }
    sbuf b = {0};
    sb_add(&b, "<chain xmlns='" SR_NS "' head='%zu' complete='true'>", s->nver - 1);
    for (uint64_t v = from; v < s->nver; v++)
        sb_add(&b, "%s", s->vxml[v]);
    sb_add(&b, "</chain>");
    fs_answer(f, iq, b.s);
    free(b.s);
}

static void fs_bundles(fixture *f, xmpp_stanza_t *iq)
{
    fsvc *s = f->svc;
    s->n_bundles++;
    sbuf b = {0};
    sb_add(&b, "<bundles xmlns='" SR_NS "'>");
    for (size_t i = 0; i < s->roster.nmembers; i++) {
        int u = user_index(s->roster.members[i].jid);
        if (u < 0 || !s->reg[u].on) continue;
        char *k = b64_of(s->reg[u].ed, 32), *x = b64_of(s->reg[u].x, 32),
             *bs = b64_of(s->reg[u].bsig, 64);
        sb_add(&b, "<bundle jid='%s' key='%s' box-key='%s' bundle-sig='%s'/>", user_jid[u], k, x,
               bs);
        free(k);
        free(x);
        free(bs);
    }
    sb_add(&b, "</bundles>");
    fs_answer(f, iq, b.s);
    free(b.s);
}

static void fs_epoch_get(fixture *f, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    fsvc *s = f->svc;
    uint64_t number = s->nep;
    s->n_epoch_get++;
    if (xmpp_stanza_get_attribute(el, "number")) {
        s->n_epoch_get_numbered++;
        if (!sr_parse_u64(xmpp_stanza_get_attribute(el, "number"), &number)) number = 0;
        if (number <= FS_MAXE) s->n_epoch_get_by[number]++;
    }
    if (number == 0 || number > s->nep) {
        fs_error(f, iq, "cancel", "item-not-found", "no-epoch", NULL);
        return;
    }
    const fs_epoch *e = &s->ep[number - 1];
    int me = user_index(f->own_bare);
    char *h = b64_of(e->hash, 32), *kc = b64_of(e->kc, 32), *check = b64_of(e->check, 32);
    /* The sealer of the envelope handed out (a run's envelopes have
     * several): the envelopes table's, as the component must answer. */
    const char *sealer =
        me >= 0 && e->env[me][0] && e->env_sealer[me] ? user_jid[e->env_sealer[me] - 1] : e->sealer;
    sbuf b = {0};
    sb_add(&b,
           "<epoch xmlns='" SR_NS "' number='%" PRIu64 "' roster-version='%" PRIu64
           "' roster-hash='%s' kc='%s' sealer='%s' created='2026-11-01T10:00:00Z' "
           "max-age='86400'%s%s",
           number, e->rv, h, kc, sealer, e->rv < s->membership_version ? " stale='true'" : "",
           e->expired ? " expired='true'" : "");
    if (e->have_check) sb_add(&b, " check='%s'", check);
    sb_add(&b, ">");
    if (me >= 0 && e->env[me][0])
        sb_add(&b, "<envelope to='%s'>%s</envelope>", user_jid[me], e->env[me]);
    sb_add(&b, "</epoch>");
    fs_answer(f, iq, b.s);
    free(h);
    free(kc);
    free(check);
    free(b.s);
}

/* A new epoch from the core, checked as the component checks it (spec
 * 4.1, archive-wire.md: a check header is required and must be a point),
 * and more: the fake holds every member's sealing key, so it opens every
 * envelope and checks they all carry the secret KC confirms, and that the
 * check header is that secret's k_e·P_c. */
static void fs_epoch_set(fixture *f, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    fsvc *s = f->svc;
    uint64_t number, rv;
    unsigned char kc[32], secret[32], first[32], check[32];
    bool have_secret = false;
    s->n_epoch_set++;
    int sealer = user_index(f->own_bare);
    if (!sr_parse_u64(xmpp_stanza_get_attribute(el, "number"), &number) ||
        !sr_parse_u64(xmpp_stanza_get_attribute(el, "roster-version"), &rv) ||
        !sr_b64_decode_exact(kc, 32, xmpp_stanza_get_attribute(el, "kc")) ||
        !sr_b64_decode_exact(check, 32, xmpp_stanza_get_attribute(el, "check")) || sealer < 0) {
        fs_error(f, iq, "modify", "bad-request", NULL, NULL);
        s->n_epoch_refused++;
        return;
    }
    if (sr_e2e_point_check(check) != SR_E2E_OK) {
        fs_error(f, iq, "modify", "bad-request", "bad-point", NULL);
        s->n_epoch_refused++;
        return;
    }
    if (rv != s->roster.version) {
        fs_error(f, iq, "wait", "conflict", "stale-roster", NULL);
        s->n_epoch_refused++;
        return;
    }
    if (number != s->nep + 1) {
        fs_error(f, iq, "cancel", "conflict", "epoch-conflict", NULL);
        s->n_epoch_refused++;
        return;
    }
    fs_epoch e;
    memset(&e, 0, sizeof e);
    e.rv = rv;
    memcpy(e.hash, s->heads[rv], 32);
    memcpy(e.kc, kc, 32);
    snprintf(e.sealer, sizeof e.sealer, "%s", user_jid[sealer]);
    const sr_member *sm = sr_roster_find(&s->roster, user_jid[sealer]);
    size_t covered = 0, given = 0;
    bool bad = sm == NULL;
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(el); c; c = xmpp_stanza_get_next(c))
        if (xmpp_stanza_is_tag(c) && strcmp(xmpp_stanza_get_name(c), "envelope") == 0) given++;
    for (size_t i = 0; !bad && i < s->roster.nmembers; i++) {
        int u = user_index(s->roster.members[i].jid);
        if (u < 0 || !s->reg[u].on) continue;
        xmpp_stanza_t *env = NULL;
        for (xmpp_stanza_t *c = xmpp_stanza_get_children(el); c; c = xmpp_stanza_get_next(c)) {
            const char *to = xmpp_stanza_is_tag(c) ? xmpp_stanza_get_attribute(c, "to") : NULL;
            if (to && user_index(to) == u) env = c;
        }
        char *text = env ? xmpp_stanza_get_text(env) : NULL;
        unsigned char blob[SR_E2E_ENVELOPE_BYTES];
        bad = !text || !sr_b64_decode_exact(blob, sizeof blob, text);
        if (!bad) {
            sr_e2e_envelope_ctx ectx = {ROOM,        number,     e.hash, user_jid[sealer],
                                        user_jid[u], s->reg[u].x};
            bad = sr_e2e_envelope_open(secret, blob, sizeof blob, &ectx, sm->key,
                                       s->id[u].box_sk) != SR_E2E_OK ||
                  (have_secret && memcmp(secret, first, 32) != 0);
            if (!bad) {
                memcpy(first, secret, 32);
                have_secret = true;
                snprintf(e.env[u], sizeof e.env[u], "%s", text);
                covered++;
            }
        }
        if (text) xmpp_free(f->xmpp, text);
    }
    if (bad || covered != given || !have_secret ||
        sr_e2e_epoch_confirm(kc, first, ROOM, number, e.hash) != SR_E2E_OK) {
        fs_error(f, iq, "modify", "not-acceptable", "bad-envelope", NULL);
        s->n_epoch_refused++;
        return;
    }
    memcpy(e.secret, first, 32);
    assert_int_equal(sr_e2e_epoch_derive(&e.keys, e.secret, ROOM, number, e.hash), SR_E2E_OK);
    if (sr_e2e_check_header_verify(check, e.keys.k, ROOM) != SR_E2E_OK) {
        fs_error(f, iq, "modify", "not-acceptable", "bad-check", NULL);
        s->n_epoch_refused++;
        return;
    }
    memcpy(e.check, check, 32);
    e.have_check = true;
    s->ep[s->nep++] = e;
    fs_answer(f, iq, NULL);
}

static void fs_datakey_set(fixture *f, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    fsvc *s = f->svc;
    unsigned char id[16], h[32];
    uint64_t epoch;
    s->n_datakey_set++;
    char *text = xmpp_stanza_get_text(el);
    bool ok = text && sr_b64_decode_exact(h, 32, text) &&
              sr_b64_decode_exact(id, 16, xmpp_stanza_get_attribute(el, "id")) &&
              sr_parse_u64(xmpp_stanza_get_attribute(el, "epoch"), &epoch);
    if (text) xmpp_free(f->xmpp, text);
    if (!ok) {
        fs_error(f, iq, "modify", "bad-request", NULL, NULL);
        return;
    }
    if (epoch != s->nep || s->ep[epoch - 1].rv < s->membership_version ||
        s->ep[epoch - 1].expired) {
        fs_error(f, iq, "modify", "not-acceptable", "stale-epoch", NULL);
        return;
    }
    if (sr_e2e_point_check(h) != SR_E2E_OK) {
        fs_error(f, iq, "modify", "bad-request", "bad-point", NULL);
        return;
    }
    int sender = user_index(f->own_bare);
    fs_dk *d = fs_dk_find(s, id);
    if (d) {
        if (d->sender == sender && memcmp(d->h, h, 32) == 0)
            fs_answer(f, iq, NULL);
        else
            fs_error(f, iq, "cancel", "conflict", "datakey-conflict", NULL);
        return;
    }
    assert_true(s->ndk < FS_MAXDK);
    d = &s->dk[s->ndk++];
    memset(d, 0, sizeof *d);
    memcpy(d->id, id, 16);
    memcpy(d->h, h, 32);
    d->epoch = epoch;
    d->sender = sender;
    d->have_p = sr_e2e_header_unwrap(d->p, s->ep[epoch - 1].keys.k, h) == SR_E2E_OK;
    fs_answer(f, iq, NULL);
}

/* The lazy path: a header behind the current epoch c whose tokens up to
 * c are all stored goes to c with their composition, and is written back
 * (as the component may). */
static void fs_lazy_rekey(fsvc *s, fs_dk *d)
{
    uint64_t c = s->nep;
    if (s->no_lazy || d->epoch >= c) return;
    for (uint64_t g = d->epoch + 1; g <= c; g++)
        if (!s->have_token[g]) return;
    unsigned char delta[32], next[32], h[32];
    memcpy(delta, s->token[d->epoch + 1], 32);
    for (uint64_t g = d->epoch + 2; g <= c; g++) {
        assert_int_equal(sr_e2e_token_compose(next, s->token[g], delta), SR_E2E_OK);
        memcpy(delta, next, 32);
    }
    assert_int_equal(sr_e2e_header_rekey(h, delta, d->h), SR_E2E_OK);
    memcpy(d->h, h, 32);
    d->epoch = c;
    s->n_rekeyed++;
}

static void fs_datakeys_get(fixture *f, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    fsvc *s = f->svc;
    s->n_datakeys_get++;
    sbuf b = {0};
    sb_add(&b, "<datakeys xmlns='" SR_NS "'>");
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(el); c; c = xmpp_stanza_get_next(c)) {
        unsigned char id[16];
        if (!xmpp_stanza_is_tag(c) ||
            !sr_b64_decode_exact(id, 16, xmpp_stanza_get_attribute(c, "id")))
            continue;
        fs_dk *d = fs_dk_find(s, id);
        if (!d) continue;
        fs_lazy_rekey(s, d);
        char *ids = b64_of(d->id, 16), *h = b64_of(d->h, 32);
        sb_add(&b, "<datakey id='%s' epoch='%" PRIu64 "' sender='%s'>%s</datakey>", ids, d->epoch,
               user_jid[d->sender], h);
        free(ids);
        free(h);
    }
    sb_add(&b, "</datakeys>");
    fs_answer(f, iq, b.s);
    free(b.s);
}

static void fs_vault(fixture *f, xmpp_stanza_t *iq, xmpp_stanza_t *el, bool set)
{
    fsvc *s = f->svc;
    if (!set) {
        s->n_vault_get++;
        if (!s->vault || s->vault_hidden) {
            fs_error(f, iq, "cancel", "item-not-found", "no-vault", NULL);
            return;
        }
        char *b64 = b64_of(s->vault, s->vault_len);
        sbuf b = {0};
        sb_add(&b, "<vault xmlns='" SR_NS "' version='%" PRIu64 "'>%s</vault>", s->vault_version,
               b64);
        fs_answer(f, iq, b.s);
        free(b.s);
        free(b64);
        return;
    }
    s->n_vault_set++;
    uint64_t version;
    size_t len = 0;
    char *text = xmpp_stanza_get_text(el);
    unsigned char *blob = text ? unb64(text, &len) : NULL;
    if (text) xmpp_free(f->xmpp, text);
    if (!sr_parse_u64(xmpp_stanza_get_attribute(el, "version"), &version) || !blob || len < 74 ||
        memcmp(blob, "SRVL", 4) != 0 || blob[4] != 1) {
        free(blob);
        fs_error(f, iq, "modify", "not-acceptable", "bad-vault", NULL);
        return;
    }
    if (version != (s->vault ? s->vault_version : 0)) {
        free(blob);
        fs_error(f, iq, "cancel", "conflict", "vault-conflict", NULL);
        return;
    }
    free(s->vault);
    s->vault = blob;
    s->vault_len = len;
    s->vault_version = version + 1;
    char inner[128];
    snprintf(inner, sizeof inner, "<vault xmlns='" SR_NS "' version='%" PRIu64 "'/>",
             s->vault_version);
    fs_answer(f, iq, inner);
}

static void fs_identity(fixture *f, xmpp_stanza_t *iq, xmpp_stanza_t *el, bool set)
{
    fsvc *s = f->svc;
    if (!set) {
        int u = user_index(xmpp_stanza_get_attribute(el, "jid"));
        if (u < 0 || !s->reg[u].on) {
            fs_error(f, iq, "cancel", "item-not-found", "unknown-identity", NULL);
            return;
        }
        const fs_reg *r = &s->reg[u];
        char *k = b64_of(r->ed, 32), *sig = b64_of(r->sig, 64), *x = b64_of(r->x, 32),
             *bs = b64_of(r->bsig, 64);
        sbuf b = {0};
        sb_add(&b,
               "<identity xmlns='" SR_NS
               "' jid='%s' key='%s' sig='%s' box-key='%s' bundle-sig='%s'/>",
               user_jid[u], k, sig, x, bs);
        fs_answer(f, iq, b.s);
        free(b.s);
        free(k);
        free(sig);
        free(x);
        free(bs);
        return;
    }
    fs_reg r = {0};
    int u = user_index(f->own_bare);
    if (u < 0 || !sr_b64_decode_exact(r.ed, 32, xmpp_stanza_get_attribute(el, "key")) ||
        !sr_b64_decode_exact(r.sig, 64, xmpp_stanza_get_attribute(el, "sig")) ||
        !sr_b64_decode_exact(r.x, 32, xmpp_stanza_get_attribute(el, "box-key")) ||
        !sr_b64_decode_exact(r.bsig, 64, xmpp_stanza_get_attribute(el, "bundle-sig"))) {
        fs_error(f, iq, "modify", "bad-request", NULL, NULL);
        return;
    }
    if (!sr_identity_proof_verify(r.sig, user_jid[u], r.ed) ||
        sr_e2e_bundle_verify(r.bsig, user_jid[u], r.ed, r.x) != SR_E2E_OK) {
        fs_error(f, iq, "modify", "not-acceptable", "bad-signature", NULL);
        return;
    }
    if (s->reg[u].on &&
        (memcmp(s->reg[u].ed, r.ed, 32) != 0 || memcmp(s->reg[u].x, r.x, 32) != 0)) {
        fs_error(f, iq, "cancel", "conflict", NULL, "another key is registered");
        return;
    }
    r.on = true;
    s->reg[u] = r;
    fs_answer(f, iq, NULL);
}

/* <rekey xmlns=keys/>: a run, or "start it yourself" (rekey_mode). */
static void fs_rekey(fixture *f, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    char inner[128];
    f->svc->n_rekey++;
    if (strcmp(f->svc->rekey_mode, "refuse") == 0) {
        fs_error(f, iq, "cancel", "forbidden", "not-member", NULL);
        return;
    }
    snprintf(inner, sizeof inner, "<rekey xmlns='" SR_NS_KEYS "' mode='%s'/>", f->svc->rekey_mode);
    fs_answer(f, iq, inner);
}

/* <abort/> from a member who caught the run misbehaving. */
static void fs_abort(fixture *f, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    fsvc *s = f->svc;
    s->n_abort++;
    copy_str(s->abort_run, sizeof s->abort_run, xmpp_stanza_get_attribute(el, "run"));
    copy_str(s->abort_reason, sizeof s->abort_reason, xmpp_stanza_get_attribute(el, "reason"));
    fs_answer(f, iq, NULL);
}

/* A refusal of the fake service: error type, condition, app condition. */
typedef struct fs_refusal {
    const char *type, *cond, *app;
} fs_refusal;

/* <token from=e to=f delta=Δ/>, checked in the component's order
 * (archive-wire.md "Tokens"), nothing stored on a refusal. */
static void fs_token(fixture *f, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    static const fs_refusal not_member = {"auth", "forbidden", "not-member"},
                            no_epoch = {"cancel", "item-not-found", "no-epoch"},
                            not_sealer = {"auth", "forbidden", "not-sealer"},
                            malformed = {"modify", "bad-request", "bad-token"},
                            wrong = {"modify", "not-acceptable", "bad-token"},
                            other = {"cancel", "conflict", "bad-token"};
    fsvc *s = f->svc;
    uint64_t from = 0, to = 0;
    unsigned char delta[32], h[32];
    s->n_token++;
    int sender = user_index(f->own_bare);
    fs_refusal told = {"auth", "forbidden", s->token_refuse};
    const fs_refusal *no = NULL;
    if (s->token_refuse)
        no = &told;
    else if (sender < 0 || !sr_roster_find(&s->roster, user_jid[sender]))
        no = &not_member;
    else if (!sr_parse_u64(xmpp_stanza_get_attribute(el, "to"), &to) || to == 0 || to > s->nep)
        no = &no_epoch;
    else if (!sr_parse_u64(xmpp_stanza_get_attribute(el, "from"), &from) || to < 2 ||
             from != to - 1)
        no = &malformed;
    else if (strcmp(s->ep[to - 1].sealer, user_jid[sender]) != 0)
        no = &not_sealer;
    else if (!sr_b64_decode_exact(delta, 32, xmpp_stanza_get_attribute(el, "delta")) ||
             sr_e2e_scalar_check(delta) != SR_E2E_OK)
        no = &malformed;
    else if (s->ep[from - 1].have_check && s->ep[to - 1].have_check &&
             (sr_e2e_header_rekey(h, delta, s->ep[from - 1].check) != SR_E2E_OK ||
              memcmp(h, s->ep[to - 1].check, 32) != 0))
        no = &wrong;
    else if (s->have_token[to] && memcmp(s->token[to], delta, 32) != 0)
        no = &other;
    if (no) {
        s->n_token_refused++;
        fs_error(f, iq, no->type, no->cond, no->app, NULL);
        return;
    }
    memcpy(s->token[to], delta, 32);
    s->have_token[to] = true;
    s->token_sender[to] = sender;
    fs_answer(f, iq, NULL);
}

/* <check-ok/> or <check-failed/> after a <confirm-check/>. */
static void fs_check_answer(fixture *f, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    fsvc *s = f->svc;
    bool ok = strcmp(xmpp_stanza_get_name(el), "check-ok") == 0;
    s->n_check_ok += ok;
    s->n_check_failed += !ok;
    assert_true(sr_parse_u64(xmpp_stanza_get_attribute(el, "epoch"), &s->check_answer_epoch));
    fs_answer(f, iq, NULL);
}

/* Answers every captured IQ the fake service handles by itself, including
 * those the answers provoke, until none is left or max were answered.
 * Stanzas the test takes (out_stanza) are left alone. Returns how many
 * were answered. */
/* <state/>: generation 1, one batch, the keyring sealed for the current epoch. */
static void fs_search_state(fixture *f, xmpp_stanza_t *iq)
{
    fsvc *s = f->svc;
    const fs_epoch *e = &s->ep[s->nep - 1];
    sr_sse_keyring kr = {0};
    assert_int_equal(sr_sse_keyring_put(&kr, 1, s->search_kg), SR_E2E_OK);
    unsigned char *blob = NULL;
    size_t len = 0;
    assert_int_equal(sr_sse_keyring_seal(&blob, &len, &kr, e->keys.keyring, ROOM, s->nep),
                     SR_E2E_OK);
    char *b = b64_of(blob, len), inner[4096];
    snprintf(inner, sizeof inner,
             "<state xmlns='urn:xmpp:sealroom:search:0' gen='1' need-gen='false' batch='1'>"
             "<keyring epoch='%zu'>%s</keyring></state>",
             s->nep, b);
    fs_answer(f, iq, inner);
    free(b);
    free(blob);
    sr_sse_keyring_free(&kr);
}

static size_t settle_max(fixture *f, size_t max)
{
    size_t answered = 0;
    for (size_t i = 0; i < f->nout && answered < max; i++) {
        if (f->handled[i]) continue;
        xmpp_stanza_t *st = xmpp_stanza_new_from_string(f->xmpp, f->out[i]);
        assert_non_null(st);
        const char *name = xmpp_stanza_get_name(st), *type = xmpp_stanza_get_type(st);
        xmpp_stanza_t *el = xmpp_stanza_get_children(st);
        while (el && !xmpp_stanza_is_tag(el))
            el = xmpp_stanza_get_next(el);
        if (strcmp(name, "iq") != 0 || !type || !el) {
            xmpp_stanza_release(st);
            continue;
        }
        const char *child = xmpp_stanza_get_name(el), *ns = xmpp_stanza_get_ns(el);
        bool set = strcmp(type, "set") == 0, get = strcmp(type, "get") == 0;
        bool archive = ns && strcmp(ns, SR_NS_ARCHIVE) == 0;
        void (*h)(fixture *, xmpp_stanza_t *, xmpp_stanza_t *) = NULL;
        int kind = 0;
        if (get && strcmp(child, "chain") == 0)
            h = fs_chain;
        else if (get && strcmp(child, "epoch") == 0)
            h = fs_epoch_get;
        else if (set && strcmp(child, "epoch") == 0)
            h = fs_epoch_set;
        else if (set && strcmp(child, "datakey") == 0)
            h = fs_datakey_set;
        else if (get && strcmp(child, "datakeys") == 0)
            h = fs_datakeys_get;
        else if (set && strcmp(child, "rekey") == 0 && xmpp_stanza_get_ns(el) &&
                 strcmp(xmpp_stanza_get_ns(el), SR_NS_KEYS) == 0)
            h = fs_rekey;
        else if (set && strcmp(child, "abort") == 0)
            h = fs_abort;
        else if (set && archive && strcmp(child, "token") == 0)
            h = fs_token;
        else if (set && archive &&
                 (strcmp(child, "check-ok") == 0 || strcmp(child, "check-failed") == 0))
            h = fs_check_answer;
        else if (get && strcmp(child, "bundles") == 0)
            kind = 1;
        else if (strcmp(child, "vault") == 0)
            kind = 2;
        else if (strcmp(child, "identity") == 0 && f->svc->auto_identity)
            kind = 3;
        else if (ns && strcmp(ns, "urn:xmpp:sealroom:search:0") == 0 &&
                 (!f->svc->search_on || strcmp(child, "state") == 0))
            kind = 4; /* the state, or anything when the fake has no search */
        if (!h && !kind) {
            xmpp_stanza_release(st);
            continue;
        }
        f->handled[i] = true;
        answered++;
        if (h)
            h(f, st, el);
        else if (kind == 1)
            fs_bundles(f, st);
        else if (kind == 2)
            fs_vault(f, st, el, set);
        else if (kind == 4 && f->svc->search_on && strcmp(child, "state") == 0)
            fs_search_state(f, st);
        else if (kind == 4)
            fs_error(f, st, "cancel", "feature-not-implemented", NULL, NULL);
        else
            fs_identity(f, st, el, set);
        xmpp_stanza_release(st);
    }
    return answered;
}

/* settle_max, failing the test if the core keeps asking without end. */
static void settle(fixture *f)
{
    if (settle_max(f, 500) >= 500)
        fail_msg("the core keeps sending requests (over 500 answered in a row)");
}

/* ---- fixture ---- */

static void client_init(fixture *f, const char *full, fsvc *svc)
{
    f->svc = svc;
    snprintf(f->own_full, sizeof f->own_full, "%s", full);
    assert_true(sr_jid_normalise_bare(f->own_bare, sizeof f->own_bare, full));
    sealroom_callbacks cb = {0};
    cb.struct_size = sizeof cb;
    cb.send_xml = send_cb;
    cb.on_event = event_cb;
    cb.user = f;
    assert_int_equal(sealroom_ctx_new(&f->ctx, full, SVC, &cb), SEALROOM_OK);
    f->xmpp = xmpp_ctx_new(NULL, NULL);
    assert_non_null(f->xmpp);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || sodium_init() < 0) return -1;
    client_init(f, "Alice@localhost/dev", fs_new());
    f->own_svc = true;
    memcpy(f->alice_pk, f->svc->id[U_ALICE].sign_pk, 32);
    memcpy(f->alice_sk, f->svc->id[U_ALICE].sign_sk, 64);
    memcpy(f->bob_pk, f->svc->id[U_BOB].sign_pk, 32);
    memcpy(f->bob_sk, f->svc->id[U_BOB].sign_sk, 64);
    memcpy(f->carol_pk, f->svc->id[U_CAROL].sign_pk, 32);
    memcpy(f->carol_sk, f->svc->id[U_CAROL].sign_sk, 64);
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

static void client_free(fixture *f)
{
    clear_out(f);
    free(f->out);
    free(f->handled);
    sealroom_ctx_free(f->ctx);
    sealroom_identity_free(f->alice);
    xmpp_ctx_free(f->xmpp);
    if (f->own_svc) fs_free(f->svc);
    free(f);
}

static int teardown(void **state)
{
    client_free(*state);
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

/* The i-th captured outgoing stanza, parsed (caller releases). The test
 * takes it: the fake service will not answer it. */
static xmpp_stanza_t *out_stanza(fixture *f, size_t i)
{
    assert_true(i < f->nout);
    f->handled[i] = true;
    xmpp_stanza_t *st = xmpp_stanza_new_from_string(f->xmpp, f->out[i]);
    assert_non_null(st);
    return st;
}

static xmpp_stanza_t *last_out(fixture *f)
{
    assert_true(f->nout > 0);
    return out_stanza(f, f->nout - 1);
}

/* The last captured stanza named name (message, iq, presence) with a
 * child named child (NULL: any), or NULL. Only a look: the fake service
 * still answers it. */
static xmpp_stanza_t *peek_out_with(fixture *f, const char *name, const char *child)
{
    for (size_t i = f->nout; i-- > 0;) {
        xmpp_stanza_t *st = xmpp_stanza_new_from_string(f->xmpp, f->out[i]);
        assert_non_null(st);
        if (strcmp(xmpp_stanza_get_name(st), name) == 0 &&
            (!child || xmpp_stanza_get_child_by_name(st, child)))
            return st;
        xmpp_stanza_release(st);
    }
    return NULL;
}

static size_t count_out_with(fixture *f, const char *name, const char *child)
{
    size_t n = 0;
    for (size_t i = 0; i < f->nout; i++) {
        xmpp_stanza_t *st = xmpp_stanza_new_from_string(f->xmpp, f->out[i]);
        assert_non_null(st);
        n += strcmp(xmpp_stanza_get_name(st), name) == 0 &&
             (!child || xmpp_stanza_get_child_by_name(st, child));
        xmpp_stanza_release(st);
    }
    return n;
}

static const ev_copy *find_event(fixture *f, int type)
{
    for (size_t i = 0; i < f->nev; i++)
        if (f->ev[i].type == type) return &f->ev[i];
    return NULL;
}

static size_t count_events(fixture *f, int type)
{
    size_t n = 0;
    for (size_t i = 0; i < f->nev; i++)
        n += f->ev[i].type == type;
    return n;
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

/* The fingerprint text of an identity (signing and sealing key), as the
 * FINGERPRINT_CHANGED event and sealroom_ctx_pinned_fingerprint give it. */
static void fpr_of(char out[SEALROOM_FINGERPRINTBYTES], const unsigned char ed[32],
                   const unsigned char x[32])
{
    unsigned char fpr[32];
    char hex[65];
    assert_int_equal(sr_e2e_fingerprint(fpr, ed, x), SR_E2E_OK);
    sodium_bin2hex(hex, sizeof hex, fpr, sizeof fpr);
    char *p = out;
    for (int g = 0; g < 8; g++) {
        if (g) *p++ = ' ';
        memcpy(p, hex + g * 8, 8);
        p += 8;
    }
    *p = '\0';
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
    /* The sealing key travels with its signature by the identity key. */
    unsigned char box[32], bsig[64];
    assert_true(sr_b64_decode_exact(box, 32, xmpp_stanza_get_attribute(el, "box-key")));
    assert_true(sr_b64_decode_exact(bsig, 64, xmpp_stanza_get_attribute(el, "bundle-sig")));
    assert_memory_equal(box, f->svc->id[U_ALICE].box_pk, 32);
    assert_int_equal(sr_e2e_bundle_verify(bsig, "alice@localhost", pk, box), SR_E2E_OK);
    assert_int_equal(sr_e2e_bundle_verify(bsig, "bob@localhost", pk, box), SR_E2E_ERR_SIGNATURE);
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

/* How answer_identity spoils its answer. */
enum { ID_GOOD = 0, ID_BAD_PROOF = 1, ID_NO_BUNDLE = 2, ID_BAD_BUNDLE = 4 };

/* Answers the last captured IQ (an identity fetch) with id as jid's
 * registered identity. */
static void answer_identity_ex(fixture *f, const char *jid, const sr_e2e_identity *id, int how)
{
    xmpp_stanza_t *iq = last_out(f);
    unsigned char sig[64], bsig[64];
    assert_true(sr_identity_proof_sign(sig, jid, id->sign_pk, id->sign_sk));
    assert_int_equal(sr_e2e_bundle_sign(bsig, jid, id), SR_E2E_OK);
    if (how & ID_BAD_PROOF) sig[3] ^= 1;
    if (how & ID_BAD_BUNDLE) bsig[5] ^= 1;
    char k[64], s[128], x[64], bs[128];
    sr_b64_encode(k, sizeof k, id->sign_pk, 32);
    sr_b64_encode(s, sizeof s, sig, 64);
    sr_b64_encode(x, sizeof x, id->box_pk, 32);
    sr_b64_encode(bs, sizeof bs, bsig, 64);
    char inner[1024];
    if (how & ID_NO_BUNDLE)
        snprintf(inner, sizeof inner, "<identity xmlns='" SR_NS "' jid='%s' key='%s' sig='%s'/>",
                 jid, k, s);
    else
        snprintf(inner, sizeof inner,
                 "<identity xmlns='" SR_NS
                 "' jid='%s' key='%s' sig='%s' box-key='%s' bundle-sig='%s'/>",
                 jid, k, s, x, bs);
    answer_result(f, SVC, xmpp_stanza_get_id(iq), inner);
    xmpp_stanza_release(iq);
}

static void answer_identity(fixture *f, const char *jid, int user, bool break_sig)
{
    answer_identity_ex(f, jid, &f->svc->id[user], break_sig ? ID_BAD_PROOF : ID_GOOD);
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
    answer_identity(f, "bob@localhost", U_BOB, false);
    const ev_copy *e = done_event(f, id);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_true(e->have_pk);
    assert_memory_equal(e->pk, f->bob_pk, 32);
    assert_string_equal(e->jid, "bob@localhost");
    assert_int_equal(sealroom_ctx_known_key(f->ctx, pk, 32, "bob@localhost"), SEALROOM_OK);
    assert_memory_equal(pk, f->bob_pk, 32);

    /* A proof that does not verify is refused. */
    assert_int_equal(sealroom_identity_fetch(f->ctx, &id, "carol@localhost"), SEALROOM_OK);
    answer_identity(f, "carol@localhost", U_CAROL, true);
    assert_int_equal(done_event(f, id)->result, SEALROOM_E_VERIFY);
    /* An answer about another JID is refused. */
    assert_int_equal(sealroom_identity_fetch(f->ctx, &id, "carol@localhost"), SEALROOM_OK);
    answer_identity(f, "bob@localhost", U_BOB, false);
    assert_int_equal(done_event(f, id)->result, SEALROOM_E_PROTOCOL);
    /* An identity without its sealing key is not usable. */
    assert_int_equal(sealroom_identity_fetch(f->ctx, &id, "carol@localhost"), SEALROOM_OK);
    answer_identity_ex(f, "carol@localhost", &f->svc->id[U_CAROL], ID_NO_BUNDLE);
    assert_int_equal(done_event(f, id)->result, SEALROOM_E_PROTOCOL);
    /* A sealing key its identity key did not sign is refused. */
    assert_int_equal(sealroom_identity_fetch(f->ctx, &id, "carol@localhost"), SEALROOM_OK);
    answer_identity_ex(f, "carol@localhost", &f->svc->id[U_CAROL], ID_BAD_BUNDLE);
    assert_int_equal(done_event(f, id)->result, SEALROOM_E_VERIFY);
    assert_int_equal(sealroom_ctx_known_key(f->ctx, pk, 32, "carol@localhost"),
                     SEALROOM_E_NOT_FOUND);
    /* None of the refused answers pinned anything. */
    char fp[SEALROOM_FINGERPRINTBYTES];
    assert_int_equal(sealroom_ctx_pinned_fingerprint(f->ctx, fp, sizeof fp, "carol@localhost"),
                     SEALROOM_E_NOT_FOUND);

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

/* Trust on first use, then a loud refusal of a different key until the
 * app accepts it. */
static void test_fingerprint_change(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    uint32_t id;
    char pinned[SEALROOM_FINGERPRINTBYTES], expect_old[SEALROOM_FINGERPRINTBYTES],
        expect_new[SEALROOM_FINGERPRINTBYTES];
    unsigned char pk[32];
    fpr_of(expect_old, s->id[U_BOB].sign_pk, s->id[U_BOB].box_pk);
    assert_int_equal(
        sealroom_ctx_pinned_fingerprint(f->ctx, pinned, sizeof pinned, "bob@localhost"),
        SEALROOM_E_NOT_FOUND);
    assert_int_equal(sealroom_identity_fetch(f->ctx, &id, "bob@localhost"), SEALROOM_OK);
    answer_identity(f, "bob@localhost", U_BOB, false);
    assert_int_equal(done_event(f, id)->result, SEALROOM_OK);
    assert_int_equal(
        sealroom_ctx_pinned_fingerprint(f->ctx, pinned, sizeof pinned, "Bob@localhost"),
        SEALROOM_OK);
    assert_string_equal(pinned, expect_old);
    assert_null(find_event(f, SEALROOM_EVENT_FINGERPRINT_CHANGED));

    /* The service now publishes another key for bob. */
    fs_user_rekey(s, U_BOB, 9);
    fpr_of(expect_new, s->id[U_BOB].sign_pk, s->id[U_BOB].box_pk);
    f->nev = 0;
    assert_int_equal(sealroom_identity_fetch(f->ctx, &id, "bob@localhost"), SEALROOM_OK);
    answer_identity(f, "bob@localhost", U_BOB, false);
    const ev_copy *ch = find_event(f, SEALROOM_EVENT_FINGERPRINT_CHANGED);
    assert_non_null(ch);
    assert_string_equal(ch->jid, "bob@localhost");
    assert_true(ch->have_pk);
    assert_memory_equal(ch->pk, s->id[U_BOB].sign_pk, 32);
    assert_string_equal(ch->fingerprint, expect_new);
    assert_string_equal(ch->previous_fingerprint, expect_old);
    const ev_copy *e = done_event(f, id);
    assert_int_equal(e->result, SEALROOM_E_KEY_CHANGED);
    /* The event comes before the refusal, so the app can ask its user. */
    assert_true(ch < e);
    /* Nothing of the new key is used: the known key is still the old one. */
    assert_int_equal(sealroom_ctx_known_key(f->ctx, pk, 32, "bob@localhost"), SEALROOM_OK);
    assert_memory_equal(pk, f->bob_pk, 32);
    assert_int_equal(
        sealroom_ctx_pinned_fingerprint(f->ctx, pinned, sizeof pinned, "bob@localhost"),
        SEALROOM_OK);
    assert_string_equal(pinned, expect_old);

    /* Asked again: still refused, but reported only once. */
    f->nev = 0;
    assert_int_equal(sealroom_identity_fetch(f->ctx, &id, "bob@localhost"), SEALROOM_OK);
    answer_identity(f, "bob@localhost", U_BOB, false);
    assert_int_equal(done_event(f, id)->result, SEALROOM_E_KEY_CHANGED);
    assert_null(find_event(f, SEALROOM_EVENT_FINGERPRINT_CHANGED));

    /* Nothing to accept for a user whose key did not change. */
    assert_int_equal(sealroom_ctx_accept_fingerprint(f->ctx, "carol@localhost"),
                     SEALROOM_E_NOT_FOUND);
    assert_int_equal(sealroom_ctx_accept_fingerprint(f->ctx, "Bob@LocalHost/x"), SEALROOM_OK);
    assert_int_equal(
        sealroom_ctx_pinned_fingerprint(f->ctx, pinned, sizeof pinned, "bob@localhost"),
        SEALROOM_OK);
    assert_string_equal(pinned, expect_new);
    f->nev = 0;
    assert_int_equal(sealroom_identity_fetch(f->ctx, &id, "bob@localhost"), SEALROOM_OK);
    answer_identity(f, "bob@localhost", U_BOB, false);
    e = done_event(f, id);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_memory_equal(e->pk, s->id[U_BOB].sign_pk, 32);
    assert_int_equal(sealroom_ctx_known_key(f->ctx, pk, 32, "bob@localhost"), SEALROOM_OK);
    assert_memory_equal(pk, s->id[U_BOB].sign_pk, 32);
    assert_int_equal(sealroom_ctx_accept_fingerprint(f->ctx, "bob@localhost"),
                     SEALROOM_E_NOT_FOUND);

    /* The old key coming back is a change again. */
    fs_user_rekey(s, U_BOB, 2);
    f->nev = 0;
    assert_int_equal(sealroom_identity_fetch(f->ctx, &id, "bob@localhost"), SEALROOM_OK);
    answer_identity(f, "bob@localhost", U_BOB, false);
    assert_int_equal(done_event(f, id)->result, SEALROOM_E_KEY_CHANGED);
    ch = find_event(f, SEALROOM_EVENT_FINGERPRINT_CHANGED);
    assert_non_null(ch);
    assert_string_equal(ch->fingerprint, expect_old);
    assert_string_equal(ch->previous_fingerprint, expect_new);
}

/* ---- roster ---- */

static sr_roster_version *make_version(uint64_t ver, const unsigned char prev[32],
                                       const char *signer)
{
    sr_roster_version *v = calloc(1, sizeof *v);
    strcpy(v->room, ROOM);
    strcpy(v->signer, signer);
    v->version = ver;
    if (prev) memcpy(v->prev, prev, 32);
    return v;
}

static void add_op(sr_roster_version *v, sr_op_kind kind, const char *jid, sr_role role,
                   const unsigned char *pk)
{
    sr_roster_op *op = &v->ops[v->nops++];
    op->kind = kind;
    strcpy(op->jid, jid);
    op->role = role;
    if (pk) memcpy(op->key, pk, 32);
}

/* XML text of a signed version; updates *st (the server-side state). */
static char *version_xml(fixture *f, sr_roster_version *v, const unsigned char sk[64],
                         sr_roster_state *st)
{
    assert_true(sr_roster_sign(v, sk));
    if (st) assert_int_equal(sr_roster_apply(st, v), SR_ROSTER_OK);
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
    assert_int_equal(sealroom_room_member_role(f->ctx, "team", "Bob@localhost"),
                     SEALROOM_ROLE_ADMIN);
    const char *jid;
    sealroom_role role;
    unsigned char pk[32];
    assert_int_equal(sealroom_room_member(f->ctx, &jid, &role, pk, "team", 0), SEALROOM_OK);
    assert_string_equal(jid, "alice@localhost");
    assert_int_equal(role, SEALROOM_ROLE_OWNER);
    assert_memory_equal(pk, f->alice_pk, 32);
    assert_int_equal(sealroom_room_member(f->ctx, &jid, &role, pk, "team", 4),
                     SEALROOM_E_NOT_FOUND);

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

/* Checks the REQUEST_DONE of a membership change that moved the room to
 * epoch number: alice holds it, the fake service got it sealed to exactly
 * the members in want (and verified every envelope). */
static void expect_epoch_done(fixture *f, uint32_t req, uint64_t number, uint64_t rv,
                              const int *want, size_t nwant)
{
    fsvc *s = f->svc;
    const ev_copy *e = done_event(f, req);
    assert_non_null(e);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_int_equal(e->epoch, number);
    assert_int_equal(e->roster_version, rv);
    assert_int_equal(s->nep, number);
    assert_int_equal(s->ep[number - 1].rv, rv);
    assert_string_equal(s->ep[number - 1].sealer, "alice@localhost");
    for (int u = 0; u < NUSERS; u++) {
        bool wanted = false;
        for (size_t i = 0; i < nwant; i++)
            wanted |= want[i] == u;
        assert_int_equal(s->ep[number - 1].env[u][0] != '\0', wanted);
    }
    const ev_copy *c = NULL;
    for (size_t i = 0; i < f->nev; i++)
        if (f->ev[i].type == SEALROOM_EVENT_EPOCH_CHANGED) c = &f->ev[i];
    assert_non_null(c);
    assert_int_equal(c->epoch, number);
    assert_int_equal(c->roster_version, rv);
    assert_string_equal(c->room, ROOM);
    uint64_t held;
    assert_int_equal(sealroom_room_epoch(f->ctx, &held, "team"), SEALROOM_OK);
    assert_int_equal(held, number);
}

static void test_create_and_update(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    char id[64];
    uint32_t req;
    uint64_t held;

    assert_int_equal(sealroom_room_create(f->ctx, &req, "Team"), SEALROOM_OK);
    sr_roster_version *v = sent_version(f, id, sizeof id);
    assert_int_equal(v->version, 0);
    assert_string_equal(v->room, ROOM);
    assert_string_equal(v->signer, "alice@localhost");
    fs_apply(f, v);
    free(v);
    answer_head(f, id, &s->roster);
    /* The room is usable only with its first epoch: not done yet. */
    assert_null(done_event(f, req));
    assert_int_equal(sealroom_room_member_role(f->ctx, ROOM, "alice@localhost"),
                     SEALROOM_ROLE_OWNER);
    assert_int_equal(sealroom_room_epoch(f->ctx, &held, "team"), SEALROOM_E_NOT_FOUND);
    settle(f);
    assert_int_equal(s->n_bundles, 1);
    assert_int_equal(s->n_epoch_refused, 0);
    const int only_alice[] = {U_ALICE};
    expect_epoch_done(f, req, 1, 0, only_alice, 1);
    assert_int_equal(done_event(f, req)->kind, SEALROOM_REQ_ROOM_CREATE);

    /* Add bob without a key: the core fetches his registered key first.
     * The change is done once its new epoch is: the core asks the room,
     * which (with nobody else online) leaves the epoch to us. */
    f->nev = 0;
    assert_int_equal(
        sealroom_room_add_member(f->ctx, &req, "team", "bob@localhost", SEALROOM_ROLE_MEMBER, NULL),
        SEALROOM_OK);
    xmpp_stanza_t *iq = last_out(f);
    assert_non_null(xmpp_stanza_get_child_by_name_and_ns(iq, "identity", SR_NS));
    xmpp_stanza_release(iq);
    answer_identity(f, "bob@localhost", U_BOB, false);
    v = sent_version(f, id, sizeof id);
    assert_int_equal(v->version, 1);
    assert_memory_equal(v->ops[0].key, f->bob_pk, 32);
    fs_apply(f, v);
    free(v);
    answer_head(f, id, &s->roster);
    assert_null(done_event(f, req));
    xmpp_stanza_t *asked = peek_out_with(f, "iq", "rekey");
    assert_non_null(asked);
    assert_non_null(xmpp_stanza_get_child_by_name_and_ns(asked, "rekey", SR_NS_KEYS));
    xmpp_stanza_release(asked);
    settle(f);
    assert_int_equal(s->n_rekey, 1);
    const int alice_bob[] = {U_ALICE, U_BOB};
    expect_epoch_done(f, req, 2, 1, alice_bob, 2);
    assert_int_equal(done_event(f, req)->roster_version, 1);
    assert_int_equal(sealroom_room_member_count(f->ctx, ROOM), 2);
    /* Asked for one while alone online, we seal it to both members. */
    f->nev = 0;
    assert_int_equal(sealroom_room_rekey(f->ctx, &req, "team"), SEALROOM_OK);
    xmpp_stanza_t *ask = peek_out_with(f, "iq", "rekey");
    assert_non_null(ask);
    assert_string_equal(xmpp_stanza_get_type(ask), "set");
    assert_string_equal(xmpp_stanza_get_to(ask), ROOM);
    assert_non_null(xmpp_stanza_get_child_by_name_and_ns(ask, "rekey", SR_NS_KEYS));
    xmpp_stanza_release(ask);
    settle(f);
    assert_int_equal(s->n_rekey, 2);
    expect_epoch_done(f, req, 3, 1, alice_bob, 2);

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
     * core syncs and retries on top of the new head. A role change is no
     * membership change: no new epoch. */
    f->nev = 0;
    assert_int_equal(
        sealroom_room_set_role(f->ctx, &req, ROOM, "bob@localhost", SEALROOM_ROLE_ADMIN),
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
    fs_version(f, U_ALICE, SR_OP_ADD, U_CAROL, SR_ROLE_MEMBER);
    answer_chain(f, cid, "2", "true", s->vxml[2]);
    v = sent_version(f, id, sizeof id);
    assert_int_equal(v->version, 3);
    assert_int_equal(v->ops[0].kind, SR_OP_ROLE);
    fs_apply(f, v);
    free(v);
    answer_head(f, id, &s->roster);
    const ev_copy *e = done_event(f, req);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_int_equal(e->roster_version, 3);
    assert_int_equal(sealroom_room_member_count(f->ctx, ROOM), 3);
    assert_null(find_event(f, SEALROOM_EVENT_EPOCH_CHANGED));
    assert_int_equal(s->n_rekey, 2); /* a role change asks for no epoch */
    assert_int_equal(s->nep, 3);

    /* A second stale answer is not retried forever. */
    assert_int_equal(sealroom_room_remove_member(f->ctx, &req, ROOM, "carol@localhost"),
                     SEALROOM_OK);
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
    assert_int_equal(sealroom_room_remove_member(f->ctx, &req, ROOM, "carol@localhost"),
                     SEALROOM_OK);
    v = sent_version(f, id, sizeof id);
    free(v);
    answer_result(f, ROOM, id,
                  "<roster-head xmlns='" SR_NS "' version='4' "
                  "hash='AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='/>");
    assert_int_equal(done_event(f, req)->result, SEALROOM_E_VERIFY);

    /* Removing carol for real: done with its new epoch (here ours, alone
     * online), which is not sealed to her. */
    f->nev = 0;
    assert_int_equal(sealroom_room_remove_member(f->ctx, &req, ROOM, "carol@localhost"),
                     SEALROOM_OK);
    v = sent_version(f, id, sizeof id);
    assert_int_equal(v->version, 4);
    fs_apply(f, v);
    free(v);
    answer_head(f, id, &s->roster);
    assert_null(done_event(f, req));
    settle(f);
    expect_epoch_done(f, req, 4, 4, alice_bob, 2);
    assert_int_equal(s->n_epoch_refused, 0);

    /* An explicit rekey at the same roster. */
    f->nev = 0;
    assert_int_equal(sealroom_room_rekey(f->ctx, &req, "team"), SEALROOM_OK);
    settle(f);
    expect_epoch_done(f, req, 5, 4, alice_bob, 2);
    assert_int_equal(done_event(f, req)->kind, SEALROOM_REQ_REKEY);
}

/* A rekey completed with an epoch of at least min_epoch that alice holds
 * and that is sealed to alice and bob. */
static void expect_rekey_done(fixture *f, uint32_t req, uint64_t min_epoch)
{
    const ev_copy *e = done_event(f, req);
    assert_non_null(e);
    if (e->result != SEALROOM_OK)
        fail_msg("rekey failed: %s (%s)", sealroom_strerror(e->result), e->error_text);
    assert_true(e->epoch >= min_epoch);
    assert_true(e->epoch <= f->svc->nep);
    uint64_t held;
    assert_int_equal(sealroom_room_epoch(f->ctx, &held, "team"), SEALROOM_OK);
    assert_int_equal(held, e->epoch);
    assert_int_not_equal(f->svc->ep[e->epoch - 1].env[U_ALICE][0], '\0');
    assert_int_not_equal(f->svc->ep[e->epoch - 1].env[U_BOB][0], '\0');
}

/* Someone else made the epoch number we propose: the core learns the
 * current one and goes on from there (spec 4.1: "client fetches the
 * current one"), however many epochs it missed. */
static void test_rekey_race(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    uint32_t req;
    fs_room_setup(f);
    assert_int_equal(sealroom_room_sync(f->ctx, &req, "team"), SEALROOM_OK);
    settle(f);
    assert_int_equal(done_event(f, req)->result, SEALROOM_OK);
    /* Bob starts epoch 2 just before alice proposes hers. */
    f->nev = 0;
    fs_new_epoch(f, U_BOB, FS_EPOCH_GOOD);
    assert_int_equal(sealroom_room_rekey(f->ctx, &req, "team"), SEALROOM_OK);
    settle(f);
    expect_rekey_done(f, req, 2);

    /* Bob's devices made four more meanwhile. */
    for (int i = 0; i < 4; i++)
        fs_new_epoch(f, U_BOB, FS_EPOCH_GOOD);
    uint64_t newest = s->nep;
    f->nev = 0;
    s->n_epoch_refused = 0;
    assert_int_equal(sealroom_room_rekey(f->ctx, &req, "team"), SEALROOM_OK);
    settle(f);
    assert_true(s->n_epoch_refused <= 2);
    expect_rekey_done(f, req, newest);
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
    feed(f, "<presence from='" ROOM "/alice'><x xmlns='" SR_NS_MUC_USER
            "'><item jid='alice@localhost/dev'/>"
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
    assert_int_equal(
        sealroom_room_send(f->ctx, &req, NULL, 0, "team", (const unsigned char *)"x", 1),
        SEALROOM_E_STATE);

    assert_int_equal(sealroom_room_join(f->ctx, &req, "team", "bob"), SEALROOM_OK);
    feed(f, "<presence type='error' from='" ROOM "/bob'><error type='cancel'>"
            "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>");
    assert_int_equal(done_event(f, req)->result, SEALROOM_E_CONFLICT);

    assert_int_equal(sealroom_room_join(f->ctx, &req, "team", ""), SEALROOM_E_INVALID);
    assert_int_equal(sealroom_room_join(f->ctx, &req, "team@elsewhere.org", "a"),
                     SEALROOM_E_INVALID);
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
    assert_int_equal(
        sealroom_room_send(f->ctx, &req, NULL, 0, "team", (const unsigned char *)"x", 1),
        SEALROOM_E_STATE);
}

static char *sent_origin(fixture *f, xmpp_stanza_t *m)
{
    xmpp_stanza_t *o = xmpp_stanza_get_child_by_name_and_ns(m, "origin-id", SR_NS_SID);
    assert_non_null(o);
    return strdup(xmpp_stanza_get_attribute(o, "id"));
}

/* The fake service's room (set up if need be), joined, with its current
 * epoch held. */
static void join_ready(fixture *f)
{
    if (f->svc->nver == 0) fs_room_setup(f);
    join_room(f, "alice");
    settle(f);
    uint64_t held;
    assert_int_equal(sealroom_room_epoch(f->ctx, &held, "team"), SEALROOM_OK);
    assert_int_equal(held, f->svc->nep);
    f->nev = 0;
}

static char *sealed_text(fixture *f, xmpp_stanza_t *m)
{
    xmpp_stanza_t *sealed = xmpp_stanza_get_child_by_name_and_ns(m, "sealed", SR_NS);
    assert_non_null(sealed);
    char *t = xmpp_stanza_get_text(sealed);
    assert_non_null(t);
    char *copy = strdup(t);
    xmpp_free(f->xmpp, t);
    return copy;
}

/* Opens a message alice sent, as another member does: with the data key
 * whose header alice gave the service. Returns that data key's record. */
static const fs_dk *open_sent(fixture *f, xmpp_stanza_t *m, unsigned char *plain, size_t cap,
                              size_t *plain_len, uint64_t *rv)
{
    fsvc *s = f->svc;
    char *b64 = sealed_text(f, m), *origin = sent_origin(f, m);
    size_t len = 0;
    unsigned char *raw = unb64(b64, &len);
    assert_non_null(raw);
    sr_e2e_sealed_view v;
    assert_int_equal(sr_e2e_message_parse(&v, raw, len), SR_E2E_OK);
    const fs_dk *d = fs_dk_find(s, v.datakey_id);
    assert_non_null(d);
    assert_int_equal(d->sender, U_ALICE);
    assert_true(d->have_p);
    assert_true(v.ct_len - SR_E2E_TAG_BYTES <= cap);
    assert_int_equal(sr_e2e_message_open(plain, cap, plain_len, &v, ROOM, "alice@localhost", origin,
                                         s->reg[U_ALICE].ed, d->p),
                     SR_E2E_OK);
    *rv = v.roster_version;
    free(raw);
    free(b64);
    free(origin);
    return d;
}

/* The room reflects our message m under archive id stanza_id. */
static void reflect(fixture *f, xmpp_stanza_t *m, const char *stanza_id)
{
    char *b64 = sealed_text(f, m), *origin = sent_origin(f, m);
    feed_groupchat(f, "alice", "alice@localhost", origin, stanza_id, b64);
    free(b64);
    free(origin);
}

static void test_send_and_reflection(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    join_ready(f);
    uint32_t req;
    char origin[64];
    const unsigned char payload[] = {0, 1, 2, 0xff, 'h', 'i'};
    assert_int_equal(
        sealroom_room_send(f->ctx, &req, origin, sizeof origin, "team", payload, sizeof payload),
        SEALROOM_OK);
    assert_int_equal(sealroom_ctx_outbox_size(f->ctx), 1);
    /* The room learns our data key before any message sealed with it. */
    assert_int_equal(count_out_with(f, "message", NULL), 0);
    xmpp_stanza_t *dk = peek_out_with(f, "iq", "datakey");
    assert_non_null(dk);
    assert_string_equal(xmpp_stanza_get_type(dk), "set");
    assert_string_equal(xmpp_stanza_get_to(dk), ROOM);
    assert_string_equal(
        xmpp_stanza_get_attribute(xmpp_stanza_get_child_by_name(dk, "datakey"), "epoch"), "1");
    xmpp_stanza_release(dk);
    settle(f);
    assert_int_equal(s->n_datakey_set, 1);
    xmpp_stanza_t *m = last_out(f);
    assert_string_equal(xmpp_stanza_get_name(m), "message");
    assert_string_equal(xmpp_stanza_get_type(m), "groupchat");
    assert_string_equal(xmpp_stanza_get_to(m), ROOM);
    char *oid = sent_origin(f, m);
    assert_string_equal(oid, origin);
    unsigned char plain[64];
    size_t n;
    uint64_t rv;
    const fs_dk *d = open_sent(f, m, plain, sizeof plain, &n, &rv);
    assert_int_equal(n, sizeof payload);
    assert_memory_equal(plain, payload, n);
    assert_int_equal(d->epoch, 1);
    assert_int_equal(rv, 1);
    char *b64 = sealed_text(f, m);
    char *body = xmpp_stanza_get_text(xmpp_stanza_get_child_by_name(m, "body"));
    assert_string_equal(body, SR_FALLBACK_BODY);
    xmpp_free(f->xmpp, body);
    xmpp_stanza_release(m);

    /* A second message gets a different origin-id and the same data key. */
    uint32_t req2;
    char origin2[64];
    assert_int_equal(sealroom_room_send(f->ctx, &req2, origin2, sizeof origin2, "team", payload, 1),
                     SEALROOM_OK);
    assert_string_not_equal(origin, origin2);
    settle(f);
    assert_int_equal(s->n_datakey_set, 1);
    m = last_out(f);
    assert_ptr_equal(open_sent(f, m, plain, sizeof plain, &n, &rv), d);
    xmpp_stanza_release(m);
    /* A client-forged stanza-id (wrong by) is not the archive id; the
     * room's is. */
    sealroom_ctx_tick(f->ctx, 5000);
    feed(f,
         "<message type='groupchat' from='" ROOM "/alice' id='x'><body>fallback</body>"
         "<sealed xmlns='" SR_NS "'>%s</sealed><origin-id xmlns='" SR_NS_SID "' id='%s'/>"
         "<stanza-id xmlns='" SR_NS_SID "' by='alice@localhost' id='999'/>"
         "<stanza-id xmlns='" SR_NS_SID "' by='" ROOM "' id='7'/>"
         "<x xmlns='" SR_NS_MUC_USER "'><item jid='alice@localhost/dev'/></x></message>",
         b64, oid);
    const ev_copy *e = find_event(f, SEALROOM_EVENT_MESSAGE);
    assert_non_null(e);
    assert_true(e->self);
    assert_false(e->history);
    assert_string_equal(e->nick, "alice");
    assert_string_equal(e->jid, "alice@localhost");
    assert_string_equal(e->stanza_id, "7");
    assert_string_equal(e->origin_id, oid);
    assert_int_equal(e->ts, 5000);
    assert_int_equal(e->epoch, 1);
    assert_int_equal(e->roster_version, 1);
    assert_int_equal(e->payload_len, sizeof payload);
    assert_memory_equal(e->payload, payload, sizeof payload);
    e = done_event(f, req);
    assert_non_null(e);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_string_equal(e->stanza_id, "7");
    assert_int_equal(sealroom_ctx_outbox_size(f->ctx), 1);
    assert_null(done_event(f, req2));

    /* Someone else's message with the same origin-id completes nothing. */
    f->nev = 0;
    size_t bdk = fs_datakey(f, U_BOB, 1, 1);
    char *bm = fs_seal(f, U_BOB, bdk, origin2, 1, "not yours");
    feed_groupchat(f, "bob", "bob@localhost", origin2, "8", bm);
    free(bm);
    settle(f);
    e = find_event(f, SEALROOM_EVENT_MESSAGE);
    assert_non_null(e);
    assert_false(e->self);
    assert_string_equal(e->jid, "bob@localhost");
    assert_int_equal(e->payload_len, 9);
    assert_memory_equal(e->payload, "not yours", 9);
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
    free(b64);
    free(oid);
}

static void test_link_down_resend(void **state)
{
    fixture *f = *state;
    join_ready(f);
    uint32_t req, sync_req, req_offline;
    char origin[64], origin_off[64];
    assert_int_equal(sealroom_room_send(f->ctx, &req, origin, sizeof origin, "team",
                                        (const unsigned char *)"one", 3),
                     SEALROOM_OK);
    settle(f);
    assert_int_equal(count_out_with(f, "message", "sealed"), 1);
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
    xmpp_stanza_t *first = strcmp(o1, origin) == 0 ? m1 : m2;
    xmpp_stanza_t *second = first == m1 ? m2 : m1;
    /* The one sealed offline is a proper message too. */
    unsigned char plain[16];
    size_t n;
    uint64_t rv;
    open_sent(f, second, plain, sizeof plain, &n, &rv);
    assert_int_equal(n, 3);
    assert_memory_equal(plain, "two", 3);
    reflect(f, first, "41");
    xmpp_stanza_release(m1);
    xmpp_stanza_release(m2);
    free(o1);
    free(o2);
    assert_string_equal(done_event(f, req)->stanza_id, "41");
    assert_int_equal(sealroom_ctx_outbox_size(f->ctx), 1);
}

/* A message handed to the core while its first data key is on the way
 * survives a lost link, like any message in the outbox, and goes out
 * after the rejoin. */
static void test_link_down_during_datakey(void **state)
{
    fixture *f = *state;
    join_ready(f);
    uint32_t req;
    char origin[64];
    assert_int_equal(sealroom_room_send(f->ctx, &req, origin, sizeof origin, "team",
                                        (const unsigned char *)"early", 5),
                     SEALROOM_OK);
    assert_int_equal(count_out_with(f, "iq", "datakey"), 1);
    sealroom_ctx_link_down(f->ctx);
    assert_null(done_event(f, req));
    assert_int_equal(sealroom_ctx_outbox_size(f->ctx), 1);
    clear_out(f);
    assert_int_equal(sealroom_ctx_link_up(f->ctx), SEALROOM_OK);
    feed(f, "<presence from='" ROOM "/alice'><x xmlns='" SR_NS_MUC_USER "'><status code='110'/>"
            "</x></presence>");
    settle(f);
    xmpp_stanza_t *m = peek_out_with(f, "message", "sealed");
    assert_non_null(m);
    char *oid = sent_origin(f, m);
    assert_string_equal(oid, origin);
    reflect(f, m, "50");
    xmpp_stanza_release(m);
    free(oid);
    assert_int_equal(done_event(f, req)->result, SEALROOM_OK);
}

/* A message queued offline before we ever had a data key is sealed and
 * sent once we are back in the room. */
static void test_send_offline_without_key(void **state)
{
    fixture *f = *state;
    join_ready(f);
    sealroom_ctx_link_down(f->ctx);
    uint32_t req;
    char origin[64];
    assert_int_equal(sealroom_room_send(f->ctx, &req, origin, sizeof origin, "team",
                                        (const unsigned char *)"later", 5),
                     SEALROOM_OK);
    clear_out(f);
    assert_int_equal(sealroom_ctx_link_up(f->ctx), SEALROOM_OK);
    feed(f, "<presence from='" ROOM "/alice'><x xmlns='" SR_NS_MUC_USER "'><status code='110'/>"
            "</x></presence>");
    settle(f);
    xmpp_stanza_t *m = peek_out_with(f, "message", "sealed");
    assert_non_null(m);
    char *oid = sent_origin(f, m);
    assert_string_equal(oid, origin);
    reflect(f, m, "51");
    xmpp_stanza_release(m);
    free(oid);
    assert_int_equal(done_event(f, req)->result, SEALROOM_OK);
}

/* A search answer is opened like history, and a hit whose plaintext lacks
 * the query's words (a service that errs or lies) is dropped, not shown. */
static void test_search_hits_rechecked(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    uint32_t req;
    s->search_on = true;
    randombytes_buf(s->search_kg, sizeof s->search_kg);
    join_ready(f);
    assert_int_equal(sealroom_room_search(f->ctx, &req, "team", "", NULL, 0), SEALROOM_E_INVALID);
    assert_int_equal(sealroom_room_search(f->ctx, &req, "team", "a b c d e f g h i", NULL, 0),
                     SEALROOM_E_INVALID);
    assert_int_equal(sealroom_room_search(f->ctx, &req, "team", "Hello", NULL, 0), SEALROOM_OK);
    settle(f);
    xmpp_stanza_t *iq = peek_out_with(f, "iq", "search");
    assert_non_null(iq);
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(iq, "search",
                                                            "urn:xmpp:sealroom:search:0");
    assert_non_null(q);
    assert_string_equal(xmpp_stanza_get_attribute(q, "hi"), "1");
    assert_string_equal(xmpp_stanza_get_attribute(q, "max"), "50");
    xmpp_stanza_t *kw = xmpp_stanza_get_child_by_name(q, "keyword");
    assert_non_null(kw);
    assert_null(xmpp_stanza_get_next(kw)); /* one word */
    xmpp_stanza_t *cover = xmpp_stanza_get_child_by_name(kw, "cover");
    assert_non_null(cover);
    assert_string_equal(xmpp_stanza_get_attribute(cover, "gen"), "1");
    char iqid[64];
    snprintf(iqid, sizeof iqid, "%s", xmpp_stanza_get_id(iq));
    xmpp_stanza_release(iq);

    size_t dk = fs_datakey(f, U_BOB, s->nep, s->nep);
    char *hit = fs_seal(f, U_BOB, dk, "o-hit", 1, "hello, world");
    char *liar = fs_seal(f, U_BOB, dk, "o-liar", 1, "goodbye, world");
#define HIT_FMT                                                                                    \
    "<forwarded xmlns='" SR_NS_FORWARD "'><delay xmlns='" SR_NS_DELAY                              \
    "' stamp='2026-11-01T10:00:00Z'/><message type='groupchat' from='" ROOM "/bob'>"                \
    "<body>x</body><sealed xmlns='" SR_NS "'>%s</sealed><origin-id xmlns='" SR_NS_SID "' id='%s'/>" \
    "<stanza-id xmlns='" SR_NS_SID "' id='%s' by='" ROOM "'/>"                                       \
    "<x xmlns='" SR_NS_MUC_USER "'><item jid='bob@localhost'/></x></message></forwarded>"
    char result[8192];
    int n = snprintf(result, sizeof result,
                     "<result xmlns='urn:xmpp:sealroom:search:0' batch='1' complete='true'>" HIT_FMT
                     HIT_FMT "<set xmlns='" SR_NS_RSM "'><first>8</first><last>7</last></set>"
                     "</result>",
                     liar, "o-liar", "8", hit, "o-hit", "7");
    assert_true(n > 0 && (size_t)n < sizeof result);
#undef HIT_FMT
    answer_result(f, ROOM, iqid, result);
    settle(f);
    size_t messages = 0;
    const ev_copy *shown = NULL;
    for (size_t i = 0; i < f->nev; i++)
        if (f->ev[i].type == SEALROOM_EVENT_MESSAGE) {
            messages++;
            shown = &f->ev[i];
        }
    assert_int_equal(messages, 1);
    assert_string_equal(shown->stanza_id, "7");
    assert_true(shown->history);
    assert_int_equal(shown->payload_len, strlen("hello, world"));
    assert_memory_equal(shown->payload, "hello, world", shown->payload_len);
    const ev_copy *done = done_event(f, req);
    assert_int_equal(done->result, SEALROOM_OK);
    assert_int_equal(done->kind, SEALROOM_REQ_SEARCH);
    assert_true(done->complete);
    assert_string_equal(done->last, "7");
    free(hit);
    free(liar);
}

static void test_history(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    uint32_t req;
    join_ready(f);
    size_t bob_dk = fs_datakey(f, U_BOB, 1, 1), alice_dk = fs_datakey(f, U_ALICE, 1, 1);
    char *hi = fs_seal(f, U_BOB, bob_dk, "o5", 1, "hi");
    char *yo = fs_seal(f, U_ALICE, alice_dk, "o6", 1, "yo"); /* from alice's other device */
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

#define RESULT_FMT                                                                                 \
    "<message to='alice@localhost/dev' from='" ROOM "'><result xmlns='" SR_NS_MAM                  \
    "' queryid='%s' id='%s'><forwarded xmlns='" SR_NS_FORWARD "'>"                                 \
    "<delay xmlns='" SR_NS_DELAY "' stamp='%s'/>"                                                  \
    "<message type='groupchat' from='" ROOM "/%s'><body>x</body>"                                  \
    "<sealed xmlns='" SR_NS "'>%s</sealed><origin-id xmlns='" SR_NS_SID "' id='o%s'/>"             \
    "<x xmlns='" SR_NS_MUC_USER "'><item jid='%s@localhost'/></x>"                                 \
    "</message></forwarded></result></message>"
    assert_int_equal(
        feed(f, RESULT_FMT, qid, "5", "2026-11-01T10:00:00.250Z", "bob", hi, "5", "bob"), 1);
    assert_int_equal(
        feed(f, RESULT_FMT, qid, "6", "2026-11-01T11:00:00+01:00", "alice", yo, "6", "alice"), 1);
    /* Another query's results, or results from another room, are not ours. */
    assert_int_equal(
        feed(f, RESULT_FMT, "other", "9", "2026-11-01T10:00:00Z", "bob", hi, "9", "bob"), 0);
    /* Nothing is shown before its keys are there ... */
    assert_int_equal(f->nev, 0);
    answer_result(f, ROOM, iqid,
                  "<fin xmlns='" SR_NS_MAM "' complete='true'><set xmlns='" SR_NS_RSM "'>"
                  "<first>5</first><last>6</last></set></fin>");
    /* ... and the page is not done before its messages were decided. */
    assert_int_equal(f->nev, 0);
    settle(f);
    assert_true(s->n_datakeys_get >= 1);
    assert_int_equal(f->nev, 3);
    const ev_copy *e = &f->ev[0];
    assert_int_equal(e->type, SEALROOM_EVENT_MESSAGE);
    assert_true(e->history);
    assert_string_equal(e->stanza_id, "5");
    assert_string_equal(e->nick, "bob");
    assert_string_equal(e->jid, "bob@localhost");
    assert_string_equal(e->origin_id, "o5");
    assert_int_equal(e->payload_len, 2);
    assert_memory_equal(e->payload, "hi", 2);
    assert_int_equal(e->ts, 1793527200250LL);
    e = &f->ev[1];
    assert_int_equal(e->type, SEALROOM_EVENT_MESSAGE);
    assert_int_equal(e->ts, 1793527200000LL);
    assert_int_equal(e->payload_len, 2);
    assert_memory_equal(e->payload, "yo", 2);
    assert_true(e->self);
    assert_true(e->history);

    e = &f->ev[2];
    assert_int_equal(e->type, SEALROOM_EVENT_REQUEST_DONE);
    assert_int_equal(e->request_id, req);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_int_equal(e->kind, SEALROOM_REQ_HISTORY);
    assert_string_equal(e->first, "5");
    assert_string_equal(e->last, "6");
    assert_true(e->complete);
    free(hi);
    free(yo);

    /* Paging back with before, then a refusal for non-members. */
    assert_int_equal(sealroom_room_history(f->ctx, &req, "team", "5", 0), SEALROOM_OK);
    iq = last_out(f);
    q = xmpp_stanza_get_child_by_name_and_ns(iq, "query", SR_NS_MAM);
    set = xmpp_stanza_get_child_by_name_and_ns(q, "set", SR_NS_RSM);
    assert_null(xmpp_stanza_get_child_by_name(set, "max"));
    char *b = xmpp_stanza_get_text(xmpp_stanza_get_child_by_name(set, "before"));
    assert_string_equal(b, "5");
    xmpp_free(f->xmpp, b);
    feed(f,
         "<iq type='error' from='" ROOM "' id='%s'><error type='auth'>"
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
    assert_int_equal(feed(f, "<iq type='result' from='" SVC "' id='%s'/>", xmpp_stanza_get_id(iq)),
                     0);
    xmpp_stanza_release(iq);
}

/* A temporary refusal ("wait") keeps the message and resends it with the
 * same origin-id; a permanent one ends the request. */

/* A temporary refusal ("wait") keeps the message and resends it with the
 * same origin-id; a permanent one ends the request. */
static void test_send_wait_retry(void **state)
{
    fixture *f = *state;
    join_ready(f);
    sealroom_ctx_tick(f->ctx, 1000);
    uint32_t req;
    char origin[64];
    assert_int_equal(sealroom_room_send(f->ctx, &req, origin, sizeof origin, "team",
                                        (const unsigned char *)"hi", 2),
                     SEALROOM_OK);
    settle(f);
    size_t sent = f->nout;
    xmpp_stanza_t *first = last_out(f);
    char *first_sealed = sealed_text(f, first);
    xmpp_stanza_release(first);
    feed(f,
         "<message type='error' from='" ROOM "' id='%s'><error type='wait'>"
         "<internal-server-error xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
         origin);
    assert_null(find_event(f, SEALROOM_EVENT_REQUEST_DONE));
    assert_int_equal(sealroom_ctx_outbox_size(f->ctx), 1);
    sealroom_ctx_tick(f->ctx, 1500);
    assert_int_equal(f->nout, sent); /* not yet */
    sealroom_ctx_tick(f->ctx, 2100);
    assert_int_equal(f->nout, sent + 1);
    xmpp_stanza_t *m = last_out(f);
    char *oid = sent_origin(f, m), *resent = sealed_text(f, m);
    assert_string_equal(oid, origin);
    /* The very same stanza: nothing stored, nothing to seal again. */
    assert_string_equal(resent, first_sealed);
    free(oid);
    free(resent);
    free(first_sealed);
    reflect(f, m, "9");
    xmpp_stanza_release(m);
    assert_int_equal(done_event(f, req)->result, SEALROOM_OK);
    assert_int_equal(sealroom_ctx_outbox_size(f->ctx), 0);

    assert_int_equal(sealroom_room_send(f->ctx, &req, origin, sizeof origin, "team",
                                        (const unsigned char *)"x", 1),
                     SEALROOM_OK);
    feed(f,
         "<message type='error' from='" ROOM "' id='%s'><error type='modify'>"
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
    answer_identity(f, "bob@localhost", U_BOB, false);
    assert_int_equal(done_event(f, req)->result, SEALROOM_OK);
    assert_int_not_equal(reentrant_req, 0);
    assert_int_equal(f->nout, sent + 1);
    xmpp_stanza_t *iq = last_out(f);
    xmpp_stanza_t *el = xmpp_stanza_get_child_by_name_and_ns(iq, "identity", SR_NS);
    assert_string_equal(xmpp_stanza_get_attribute(el, "jid"), "x@localhost");
    xmpp_stanza_release(iq);
}

/* ---- receiving ---- */

static void test_receive_message(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    join_ready(f);
    size_t dk = fs_datakey(f, U_BOB, 1, 1);
    char *b = fs_seal(f, U_BOB, dk, "o-bob-1", 1, "hello alice");
    feed_groupchat(f, "bob", "bob@localhost", "o-bob-1", "100", b);
    free(b);
    /* Nothing yet: the core asks the room for the data key's header. */
    assert_int_equal(f->nev, 0);
    xmpp_stanza_t *q = peek_out_with(f, "iq", "datakeys");
    assert_non_null(q);
    assert_string_equal(xmpp_stanza_get_type(q), "get");
    assert_string_equal(xmpp_stanza_get_to(q), ROOM);
    xmpp_stanza_t *item =
        xmpp_stanza_get_child_by_name(xmpp_stanza_get_child_by_name(q, "datakeys"), "datakey");
    assert_non_null(item);
    char *want = b64_of(s->dk[dk].id, 16);
    assert_string_equal(xmpp_stanza_get_attribute(item, "id"), want);
    free(want);
    xmpp_stanza_release(q);
    settle(f);
    assert_int_equal(f->nev, 1);
    const ev_copy *e = &f->ev[0];
    assert_int_equal(e->type, SEALROOM_EVENT_MESSAGE);
    assert_int_equal(e->payload_len, 11);
    assert_memory_equal(e->payload, "hello alice", 11);
    assert_string_equal(e->room, ROOM);
    assert_string_equal(e->jid, "bob@localhost");
    assert_string_equal(e->nick, "bob");
    assert_string_equal(e->stanza_id, "100");
    assert_string_equal(e->origin_id, "o-bob-1");
    assert_false(e->self);
    assert_false(e->history);
    assert_int_equal(e->epoch, 1);
    assert_int_equal(e->roster_version, 1);

    /* The same data key again: known, no new question. */
    f->nev = 0;
    b = fs_seal(f, U_BOB, dk, "o-bob-2", 1, "again");
    feed_groupchat(f, "bob", "bob@localhost", "o-bob-2", "101", b);
    free(b);
    assert_int_equal(f->nev, 1);
    assert_int_equal(f->ev[0].type, SEALROOM_EVENT_MESSAGE);
    assert_memory_equal(f->ev[0].payload, "again", 5);
    assert_int_equal(s->n_datakeys_get, 1);

    /* A data key of an epoch nobody told us about: the core fetches that
     * epoch's envelope by number, then decrypts. */
    f->nev = 0;
    assert_int_equal(fs_new_epoch(f, U_BOB, FS_EPOCH_GOOD), 2);
    size_t dk2 = fs_datakey(f, U_BOB, 2, 2);
    b = fs_seal(f, U_BOB, dk2, "o-bob-3", 1, "in epoch two");
    feed_groupchat(f, "bob", "bob@localhost", "o-bob-3", "102", b);
    free(b);
    settle(f);
    assert_int_equal(s->n_epoch_get_numbered, 1);
    assert_int_equal(f->nev, 2);
    assert_int_equal(f->ev[0].type, SEALROOM_EVENT_EPOCH_CHANGED);
    assert_int_equal(f->ev[0].epoch, 2);
    assert_int_equal(f->ev[1].type, SEALROOM_EVENT_MESSAGE);
    assert_int_equal(f->ev[1].epoch, 2);
    assert_int_equal(f->ev[1].payload_len, 12);
    assert_memory_equal(f->ev[1].payload, "in epoch two", 12);
    uint64_t held;
    assert_int_equal(sealroom_room_epoch(f->ctx, &held, "team"), SEALROOM_OK);
    assert_int_equal(held, 2);
}

/* Exactly one MESSAGE_REJECTED with code for stanza_id, and no MESSAGE;
 * clears the events. */
static void expect_rejected(fixture *f, int code, const char *stanza_id, const char *sender)
{
    assert_null(find_event(f, SEALROOM_EVENT_MESSAGE));
    assert_int_equal(count_events(f, SEALROOM_EVENT_MESSAGE_REJECTED), 1);
    const ev_copy *e = find_event(f, SEALROOM_EVENT_MESSAGE_REJECTED);
    if (e->result != code)
        fail_msg("message %s refused with %s (%s), expected %s", stanza_id,
                 sealroom_strerror(e->result), e->error_text, sealroom_strerror(code));
    assert_string_equal(e->stanza_id, stanza_id);
    assert_string_equal(e->room, ROOM);
    assert_string_equal(e->jid, sender ? sender : "");
    assert_int_not_equal(strlen(e->error_text), 0);
    f->nev = 0;
}

/* bob's message sealed with data key dk, one byte of its payload flipped
 * (at: from the start if >= 0, from the end if < 0; no flip if NULL). */
static char *tampered(fixture *f, int sender, size_t dk, const char *origin, uint64_t rv,
                      const char *plain, const long *at)
{
    char *b = fs_seal(f, sender, dk, origin, rv, plain);
    if (!at) return b;
    size_t len = 0;
    unsigned char *raw = unb64(b, &len);
    size_t pos = *at >= 0 ? (size_t)*at : len - (size_t)(-*at);
    raw[pos] ^= 0x01;
    free(b);
    b = b64_of(raw, len);
    free(raw);
    return b;
}

static void test_receive_rejects(void **state)
{
    fixture *f = *state;
    join_ready(f);
    size_t dk = fs_datakey(f, U_BOB, 1, 1);
    const long ct_byte = SR_E2E_MSG_HEADER_BYTES, sig_byte = -1;

    /* A ciphertext bit: the signature covers it. */
    char *b = tampered(f, U_BOB, dk, "o-a", 1, "tampered", &ct_byte);
    feed_groupchat(f, "bob", "bob@localhost", "o-a", "200", b);
    free(b);
    settle(f);
    expect_rejected(f, SEALROOM_E_VERIFY, "200", "bob@localhost");
    /* A signature bit. */
    b = tampered(f, U_BOB, dk, "o-b", 1, "tampered", &sig_byte);
    feed_groupchat(f, "bob", "bob@localhost", "o-b", "201", b);
    free(b);
    settle(f);
    expect_rejected(f, SEALROOM_E_VERIFY, "201", "bob@localhost");
    /* A forged sender: bob's message claimed by carol's nick and JID. */
    b = fs_seal(f, U_BOB, dk, "o-c", 1, "who am i");
    feed_groupchat(f, "carol", "carol@localhost", "o-c", "202", b);
    free(b);
    settle(f);
    expect_rejected(f, SEALROOM_E_FORBIDDEN, "202", "carol@localhost");
    /* Carol is no member at all, whatever key she holds. */
    size_t carol_dk = fs_datakey(f, U_CAROL, 1, 1);
    b = fs_seal(f, U_CAROL, carol_dk, "o-d", 1, "let me in");
    feed_groupchat(f, "carol", "carol@localhost", "o-d", "203", b);
    free(b);
    settle(f);
    expect_rejected(f, SEALROOM_E_FORBIDDEN, "203", "carol@localhost");
    /* Bob naming roster version 0, before he was added. */
    b = fs_seal(f, U_BOB, dk, "o-e", 0, "from the past");
    feed_groupchat(f, "bob", "bob@localhost", "o-e", "204", b);
    free(b);
    settle(f);
    expect_rejected(f, SEALROOM_E_FORBIDDEN, "204", "bob@localhost");
    /* Bob using a data key the room holds as carol's. */
    b = fs_seal(f, U_BOB, carol_dk, "o-f", 1, "borrowed key");
    feed_groupchat(f, "bob", "bob@localhost", "o-f", "205", b);
    free(b);
    settle(f);
    expect_rejected(f, SEALROOM_E_VERIFY, "205", "bob@localhost");
    /* A header announced for epoch 2 but wrapped under epoch 1's key: it
     * unwraps to another data key and the message does not decrypt. */
    fs_new_epoch(f, U_BOB, FS_EPOCH_GOOD);
    size_t wrong = fs_datakey(f, U_BOB, 2, 1);
    b = fs_seal(f, U_BOB, wrong, "o-g", 1, "wrong epoch");
    feed_groupchat(f, "bob", "bob@localhost", "o-g", "206", b);
    free(b);
    settle(f);
    assert_non_null(find_event(f, SEALROOM_EVENT_EPOCH_CHANGED)); /* epoch 2 itself is fine */
    expect_rejected(f, SEALROOM_E_DECRYPT, "206", "bob@localhost");
    /* Without the sender's JID a message cannot be checked. */
    b = fs_seal(f, U_BOB, dk, "o-h", 1, "anonymous");
    feed_groupchat(f, "bob", NULL, "o-h", "207", b);
    free(b);
    settle(f);
    expect_rejected(f, SEALROOM_E_PROTOCOL, "207", NULL);

    /* A replay: the same (sender, origin-id) under another archive id. */
    b = fs_seal(f, U_BOB, dk, "o-i", 1, "only once");
    feed_groupchat(f, "bob", "bob@localhost", "o-i", "300", b);
    settle(f);
    assert_int_equal(count_events(f, SEALROOM_EVENT_MESSAGE), 1);
    f->nev = 0;
    feed_groupchat(f, "bob", "bob@localhost", "o-i", "301", b);
    expect_rejected(f, SEALROOM_E_REPLAY, "301", "bob@localhost");
    /* Reading the same archived message again is no replay. */
    feed_groupchat(f, "bob", "bob@localhost", "o-i", "300", b);
    settle(f);
    assert_int_equal(count_events(f, SEALROOM_EVENT_MESSAGE), 1);
    assert_null(find_event(f, SEALROOM_EVENT_MESSAGE_REJECTED));
    free(b);
}

/* A message naming a roster version beyond the service's chain: the core
 * syncs once, then refuses it, and the messages behind it go on. */
static void test_receive_future_roster(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    join_ready(f);
    size_t dk = fs_datakey(f, U_BOB, 1, 1);
    unsigned chains = s->n_chain;
    char *b = fs_seal(f, U_BOB, dk, "o-future", 7, "from the future");
    feed_groupchat(f, "bob", "bob@localhost", "o-future", "400", b);
    free(b);
    b = fs_seal(f, U_BOB, dk, "o-now", 1, "now");
    feed_groupchat(f, "bob", "bob@localhost", "o-now", "401", b);
    free(b);
    assert_true(settle_max(f, 20) < 20);
    assert_true(s->n_chain - chains <= 2);
    assert_int_equal(count_events(f, SEALROOM_EVENT_MESSAGE_REJECTED), 1);
    const ev_copy *e = find_event(f, SEALROOM_EVENT_MESSAGE_REJECTED);
    assert_int_equal(e->result, SEALROOM_E_VERIFY);
    assert_string_equal(e->stanza_id, "400");
    e = find_event(f, SEALROOM_EVENT_MESSAGE);
    assert_non_null(e);
    assert_string_equal(e->stanza_id, "401");
}

/* Envelopes the core must not accept: the previous epoch's envelope
 * replayed for a new epoch, a KC that does not match the secret, and a
 * check header that is not the key's k_e·P_c (archive-wire.md). */
static void test_bad_envelope(void **state)
{
    fixture *f = *state;
    join_ready(f);
    const int how[] = {FS_EPOCH_REPLAYED_ENVELOPE, FS_EPOCH_WRONG_KC, FS_EPOCH_WRONG_CHECK};
    for (size_t i = 0; i < sizeof how / sizeof *how; i++) {
        f->nev = 0;
        uint64_t number = fs_new_epoch(f, U_BOB, how[i]);
        feed(f,
             "<message type='headline' from='" ROOM "' to='alice@localhost/dev'>"
             "<epoch xmlns='" SR_NS "' number='%" PRIu64 "' roster-version='1'/></message>",
             number);
        settle(f);
        assert_null(find_event(f, SEALROOM_EVENT_EPOCH_CHANGED));
        uint64_t held;
        assert_int_equal(sealroom_room_epoch(f->ctx, &held, "team"), SEALROOM_OK);
        assert_int_equal(held, 1);
        /* Bob's messages of that epoch stay unreadable. */
        size_t dk = fs_datakey(f, U_BOB, number, number);
        char origin[16], sid[16];
        snprintf(origin, sizeof origin, "o-env-%zu", i);
        snprintf(sid, sizeof sid, "50%zu", i);
        char *b = fs_seal(f, U_BOB, dk, origin, 1, "sealed away");
        feed_groupchat(f, "bob", "bob@localhost", origin, sid, b);
        free(b);
        settle(f);
        assert_null(find_event(f, SEALROOM_EVENT_MESSAGE));
        const ev_copy *e = find_event(f, SEALROOM_EVENT_MESSAGE_REJECTED);
        assert_non_null(e);
        assert_true(e->result == SEALROOM_E_VERIFY || e->result == SEALROOM_E_NO_KEY);
        assert_null(find_event(f, SEALROOM_EVENT_EPOCH_CHANGED));
    }
    /* A proper epoch after them is taken. */
    f->nev = 0;
    uint64_t number = fs_new_epoch(f, U_BOB, FS_EPOCH_GOOD);
    feed(f,
         "<message type='headline' from='" ROOM "' to='alice@localhost/dev'>"
         "<epoch xmlns='" SR_NS "' number='%" PRIu64 "' roster-version='1'/></message>",
         number);
    settle(f);
    const ev_copy *c = find_event(f, SEALROOM_EVENT_EPOCH_CHANGED);
    assert_non_null(c);
    assert_int_equal(c->epoch, number);
    size_t dk = fs_datakey(f, U_BOB, number, number);
    char *b = fs_seal(f, U_BOB, dk, "o-env-ok", 1, "readable");
    feed_groupchat(f, "bob", "bob@localhost", "o-env-ok", "510", b);
    free(b);
    settle(f);
    assert_non_null(find_event(f, SEALROOM_EVENT_MESSAGE));
    /* So is an epoch without a check header (made before there were any). */
    f->nev = 0;
    number = fs_new_epoch(f, U_BOB, FS_EPOCH_NO_CHECK);
    feed(f,
         "<message type='headline' from='" ROOM "' to='alice@localhost/dev'>"
         "<epoch xmlns='" SR_NS "' number='%" PRIu64 "' roster-version='1'/></message>",
         number);
    settle(f);
    c = find_event(f, SEALROOM_EVENT_EPOCH_CHANGED);
    assert_non_null(c);
    assert_int_equal(c->epoch, number);
}

/* The room refuses a message sealed under an epoch that is no longer
 * current: the core fetches the new epoch and seals the same message
 * (same origin-id) again, a bounded number of times. */
static void test_stale_epoch_reseal(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    join_ready(f);
    uint32_t req;
    char origin[64];
    assert_int_equal(sealroom_room_send(f->ctx, &req, origin, sizeof origin, "team",
                                        (const unsigned char *)"again", 5),
                     SEALROOM_OK);
    settle(f);
    xmpp_stanza_t *m = last_out(f);
    unsigned char plain[16];
    size_t n;
    uint64_t rv;
    assert_int_equal(open_sent(f, m, plain, sizeof plain, &n, &rv)->epoch, 1);
    xmpp_stanza_release(m);
    /* Bob rotated meanwhile. */
    fs_new_epoch(f, U_BOB, FS_EPOCH_GOOD);
    size_t sent = f->nout;
    feed(f,
         "<message type='error' from='" ROOM "' id='%s'><error type='modify'>"
         "<not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
         "<stale-epoch xmlns='" SR_NS "'/></error></message>",
         origin);
    assert_null(done_event(f, req));
    settle(f);
    assert_true(f->nout > sent);
    m = last_out(f);
    assert_string_equal(xmpp_stanza_get_name(m), "message");
    char *oid = sent_origin(f, m);
    assert_string_equal(oid, origin);
    free(oid);
    const fs_dk *d = open_sent(f, m, plain, sizeof plain, &n, &rv);
    assert_int_equal(d->epoch, 2);
    assert_int_equal(n, 5);
    assert_memory_equal(plain, "again", 5);
    const ev_copy *c = find_event(f, SEALROOM_EVENT_EPOCH_CHANGED);
    assert_non_null(c);
    assert_int_equal(c->epoch, 2);
    assert_null(done_event(f, req));
    reflect(f, m, "60");
    xmpp_stanza_release(m);
    assert_int_equal(done_event(f, req)->result, SEALROOM_OK);

    /* A room that refuses every time does not make the core loop. */
    assert_int_equal(sealroom_room_send(f->ctx, &req, origin, sizeof origin, "team",
                                        (const unsigned char *)"never", 5),
                     SEALROOM_OK);
    settle(f);
    for (int round = 0; round < SR_SEND_RESEAL_MAX + 1; round++) {
        assert_null(done_event(f, req));
        feed(f,
             "<message type='error' from='" ROOM "' id='%s'><error type='modify'>"
             "<not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
             "<stale-epoch xmlns='" SR_NS "'/></error></message>",
             origin);
        settle(f);
    }
    assert_int_equal(done_event(f, req)->result, SEALROOM_E_STALE);
    assert_int_equal(s->n_epoch_refused, 0);
}

/* ---- the account and its vault ---- */

static void test_vault(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    uint32_t req;
    s->auto_identity = true;
    assert_int_equal(sealroom_ctx_set_vault_limits(f->ctx, 1, crypto_pwhash_MEMLIMIT_INTERACTIVE),
                     SEALROOM_E_INVALID);
    assert_int_equal(sealroom_ctx_set_vault_limits(f->ctx, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                                   crypto_pwhash_MEMLIMIT_INTERACTIVE),
                     SEALROOM_OK);
    assert_int_equal(sealroom_account_create(f->ctx, &req, NULL, 0), SEALROOM_E_INVALID);
    assert_int_equal(sealroom_account_create(f->ctx, &req, PASS, strlen(PASS)), SEALROOM_OK);
    settle(f);
    const ev_copy *e = done_event(f, req);
    assert_non_null(e);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_int_equal(e->kind, SEALROOM_REQ_ACCOUNT_CREATE);
    assert_int_equal(s->vault_version, 1);
    assert_memory_equal(s->vault, "SRVL", 4);
    assert_int_equal(sr_e2e_get_u32(s->vault + 6), crypto_pwhash_OPSLIMIT_INTERACTIVE);
    /* The passphrase never leaves the device. */
    for (size_t i = 0; i < f->nout; i++)
        assert_null(strstr(f->out[i], "horse"));

    /* A pin made now is saved back to the vault (compare-and-swap). */
    assert_int_equal(sealroom_identity_fetch(f->ctx, &req, "bob@localhost"), SEALROOM_OK);
    settle(f);
    assert_int_equal(done_event(f, req)->result, SEALROOM_OK);
    sealroom_ctx_tick(f->ctx, 1000);
    settle(f);
    assert_int_equal(s->vault_version, 2);
    char bob_fpr[SEALROOM_FINGERPRINTBYTES];
    assert_int_equal(
        sealroom_ctx_pinned_fingerprint(f->ctx, bob_fpr, sizeof bob_fpr, "bob@localhost"),
        SEALROOM_OK);

    /* Creating the account again: the vault exists. */
    assert_int_equal(sealroom_account_create(f->ctx, &req, PASS, strlen(PASS)), SEALROOM_OK);
    settle(f);
    assert_int_equal(done_event(f, req)->result, SEALROOM_E_CONFLICT);
    assert_int_equal(s->vault_version, 2);

    /* A fresh device knows only the passphrase. */
    fixture *g = calloc(1, sizeof *g);
    assert_non_null(g);
    client_init(g, "alice@localhost/laptop", s);
    assert_int_equal(sealroom_room_create(g->ctx, &req, "team"), SEALROOM_E_STATE);
    assert_int_equal(sealroom_account_login(g->ctx, &req, "wrong", 5), SEALROOM_OK);
    settle(g);
    assert_int_equal(done_event(g, req)->result, SEALROOM_E_PASSPHRASE);
    assert_null(g->ctx->identity);
    assert_int_equal(sealroom_account_login(g->ctx, &req, PASS, strlen(PASS)), SEALROOM_OK);
    settle(g);
    e = done_event(g, req);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_int_equal(e->kind, SEALROOM_REQ_ACCOUNT_LOGIN);
    assert_non_null(g->ctx->identity);
    assert_memory_equal(g->ctx->identity->pk, f->alice_pk, 32);
    assert_memory_equal(g->ctx->identity->e2e.root, f->ctx->identity->e2e.root, 32);
    assert_memory_equal(g->ctx->identity->e2e.box_pk, s->id[U_ALICE].box_pk, 32);
    char fpr[SEALROOM_FINGERPRINTBYTES];
    assert_int_equal(sealroom_ctx_pinned_fingerprint(g->ctx, fpr, sizeof fpr, "bob@localhost"),
                     SEALROOM_OK);
    assert_string_equal(fpr, bob_fpr);

    /* No vault stored. */
    s->vault_hidden = true;
    assert_int_equal(sealroom_account_login(g->ctx, &req, PASS, strlen(PASS)), SEALROOM_OK);
    settle(g);
    assert_int_equal(done_event(g, req)->result, SEALROOM_E_NOT_FOUND);
    s->vault_hidden = false;
    /* A vault the server altered does not open. */
    s->vault[s->vault_len - 1] ^= 1;
    assert_int_equal(sealroom_account_login(g->ctx, &req, PASS, strlen(PASS)), SEALROOM_OK);
    settle(g);
    assert_int_equal(done_event(g, req)->result, SEALROOM_E_PASSPHRASE);
    s->vault[s->vault_len - 1] ^= 1;
    /* The service publishes another identity for alice than the vault's. */
    fs_user_rekey(s, U_ALICE, 7);
    assert_int_equal(sealroom_account_login(g->ctx, &req, PASS, strlen(PASS)), SEALROOM_OK);
    settle(g);
    assert_int_equal(done_event(g, req)->result, SEALROOM_E_VERIFY);
    client_free(g);
}

/* Random bit flips of a valid sealed message: whatever the core makes of
 * them, it never shows plaintext other than the sender's. */
static void test_fuzz_sealed(void **state)
{
    fixture *f = *state;
    join_ready(f);
    size_t dk = fs_datakey(f, U_BOB, 1, 1);
    char *b = fs_seal(f, U_BOB, dk, "o-fz", 1, "fuzz me");
    sbuf seed = {0};
    sb_add(&seed,
           "<message type='groupchat' from='" ROOM "/bob'><body>x</body><sealed xmlns='" SR_NS
           "'>%s</sealed><origin-id xmlns='" SR_NS_SID "' id='o-fz'/><stanza-id xmlns='" SR_NS_SID
           "' by='" ROOM "' id='1'/><x xmlns='" SR_NS_MUC_USER "'><item jid='bob@localhost'/></x>"
           "</message>",
           b);
    free(b);
    char *buf = malloc(seed.n + 1);
    uint32_t rnd = 4242;
    size_t delivered = 0;
    for (int iter = 0; iter < 1500; iter++) {
        memcpy(buf, seed.s, seed.n + 1);
        for (int k = 0; k < 1 + iter % 3; k++) {
            rnd = rnd * 1103515245u + 12345u;
            size_t pos = (rnd >> 8) % seed.n;
            rnd = rnd * 1103515245u + 12345u;
            buf[pos] ^= (char)(1u << ((rnd >> 16) % 8));
        }
        size_t len = strnlen(buf, seed.n);
        assert_true(sealroom_ctx_receive_xml(f->ctx, buf, len) <= 1);
        settle_max(f, 20);
        for (size_t i = 0; i < f->nev; i++) {
            if (f->ev[i].type != SEALROOM_EVENT_MESSAGE) continue;
            delivered++;
            assert_int_equal(f->ev[i].payload_len, 7);
            assert_memory_equal(f->ev[i].payload, "fuzz me", 7);
            assert_string_equal(f->ev[i].jid, "bob@localhost");
        }
        f->nev = 0;
        clear_out(f);
    }
    /* Flips in unsigned parts (body, ids) leave the message readable. */
    assert_true(delivered > 0);
    free(buf);
    free(seed.s);
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
        "",
        "<",
        "<<<>>>",
        "</stream>",
        "<?xml version='1.0'?><iq/>",
        "plain text",
        "<iq",
        "<iq type='result'",
        "<iq type='result' id='x'/>",
        "<iq/>",
        "<message/>",
        "<presence/>",
        "<presence from=''/>",
        "<presence from='@@@'/>",
        "<presence from='" ROOM "'/>",
        "<presence from='" ROOM "/'/>",
        "<presence from='" ROOM "/x' type='error'/>",
        "<presence from='" ROOM "/x' type='unavailable'/>",
        "<presence from='" ROOM "/x'><x xmlns='" SR_NS_MUC_USER "'><item jid='@'/></x></presence>",
        "<message from='" ROOM "/x' type='groupchat'/>",
        "<message from='" ROOM "/x' type='groupchat'><sealed xmlns='" SR_NS
        "'>!!!!</sealed></message>",
        "<message from='" ROOM "/x' type='groupchat'><sealed xmlns='" SR_NS
        "'>AAA</sealed></message>",
        "<message from='" ROOM "/x' type='groupchat'><sealed xmlns='" SR_NS "'/></message>",
        "<message from='" ROOM "/x' type='groupchat'><sealed xmlns='" SR_NS "'>AA==</sealed>"
        "<delay xmlns='" SR_NS_DELAY "' stamp='yesterday'/><origin-id xmlns='" SR_NS_SID
        "'/></message>",
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
    assert_int_equal(feed(f,
                          "<message from='" ROOM "'><result xmlns='" SR_NS_MAM "' queryid='%s' "
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

/* ---- key distribution runs: the fake plays the component ---- */

/* A run participant: a library context (f), or a member the fake
 * simulates with e2e/dmkd.c (f NULL). */
typedef struct fr_part {
    int u;
    fixture *f;
    sr_e2e_dmkd_member m;
    unsigned char R[32], c[32], sig1[64];
    unsigned char T[32], second[32], sig2[64];
    unsigned char kc[32], secret[32], check[32];
} fr_part;

#define FR_MAXP 4

typedef struct frun {
    fsvc *s;
    unsigned char id[16];
    char idb64[32];
    uint64_t epoch, rv;
    unsigned char hash[32];
    sr_e2e_dmkd_ctx dctx;
    size_t n;
    fr_part p[FR_MAXP]; /* ring order: p[0] is the representative U_1 */
    unsigned char sid[32], kprime[32], Tp[FR_MAXP][32];
    int slice[NUSERS]; /* offline members, sealed to by p[slice_to] */
    size_t nslice, slice_to;
    char env[NUSERS][256];  /* the envelopes the participants sealed */
    int env_sealer[NUSERS]; /* 1 + who sealed env[u] */
    bool wrong_check;       /* commit the epoch with a check header of another key */
} frun;

/* A run at the service's head for epoch nep + 1 over users in ring order
 * (fx[i] the library context of users[i], NULL: simulated). */
static void fr_start(frun *r, fsvc *s, const int *users, fixture *const *fx, size_t n)
{
    assert_true(n >= 2 && n <= FR_MAXP);
    memset(r, 0, sizeof *r);
    r->s = s;
    randombytes_buf(r->id, sizeof r->id);
    assert_true(sr_b64_encode(r->idb64, sizeof r->idb64, r->id, sizeof r->id));
    r->epoch = s->nep + 1;
    r->rv = s->roster.version;
    memcpy(r->hash, s->heads[r->rv], 32);
    sr_e2e_dmkd_ctx c = {ROOM, r->epoch, r->hash, r->id};
    r->dctx = c;
    r->n = n;
    for (size_t i = 0; i < n; i++) {
        r->p[i].u = users[i];
        r->p[i].f = fx ? fx[i] : NULL;
    }
}

static void fr_headline(fixture *f, const char *inner)
{
    assert_int_equal(feed(f, "<message type='headline' from='" ROOM "' to='%s'>%s</message>",
                          f->own_full, inner),
                     1);
}

/* The newest untaken IQ set carrying <child xmlns=keys/>, taken (the
 * test answers it as the component), or NULL. */
static xmpp_stanza_t *fr_take(fixture *f, const char *child)
{
    for (size_t i = f->nout; i-- > 0;) {
        if (f->handled[i]) continue;
        xmpp_stanza_t *st = xmpp_stanza_new_from_string(f->xmpp, f->out[i]);
        assert_non_null(st);
        if (strcmp(xmpp_stanza_get_name(st), "iq") == 0 &&
            xmpp_stanza_get_child_by_name_and_ns(st, child, SR_NS_KEYS)) {
            f->handled[i] = true;
            assert_string_equal(xmpp_stanza_get_type(st), "set");
            assert_string_equal(xmpp_stanza_get_to(st), ROOM);
            return st;
        }
        xmpp_stanza_release(st);
    }
    return NULL;
}

static char *fr_round1_xml(const frun *r)
{
    sbuf b = {0};
    char *h = b64_of(r->hash, 32);
    sb_add(&b,
           "<round1 xmlns='" SR_NS_KEYS "' run='%s' epoch='%" PRIu64 "' roster-version='%" PRIu64
           "' roster-hash='%s'/>",
           r->idb64, r->epoch, r->rv, h);
    free(h);
    return b.s;
}

/* Participant i's round 1; a library context gets xml (NULL: the honest
 * headline), and its answer is checked as the component checks it and
 * stored. False if it sent none. */
static bool fr_round1_one(frun *r, size_t i, const char *xml)
{
    fr_part *p = &r->p[i];
    const sr_e2e_identity *id = &r->s->id[p->u];
    if (!p->f) {
        assert_int_equal(sr_e2e_dmkd_round1(&p->m, &r->dctx, user_jid[p->u], id->dmkd_a,
                                            id->dmkd_b, NULL, NULL),
                         SR_E2E_OK);
        memcpy(p->R, p->m.R, 32);
        memcpy(p->c, p->m.c, 32);
        assert_int_equal(
            sr_e2e_dmkd_round1_sign(p->sig1, &r->dctx, user_jid[p->u], p->R, p->c, id->sign_sk),
            SR_E2E_OK);
        return true;
    }
    char *own = xml ? NULL : fr_round1_xml(r);
    fr_headline(p->f, xml ? xml : own);
    free(own);
    settle(p->f); /* a chain sync first, when the run's roster is new to it */
    xmpp_stanza_t *iq = fr_take(p->f, "round1");
    if (!iq) return false;
    xmpp_stanza_t *el = xmpp_stanza_get_child_by_name_and_ns(iq, "round1", SR_NS_KEYS);
    assert_string_equal(xmpp_stanza_get_attribute(el, "run"), r->idb64);
    assert_true(sr_b64_decode_exact(p->R, 32, xmpp_stanza_get_attribute(el, "R")));
    assert_true(sr_b64_decode_exact(p->c, 32, xmpp_stanza_get_attribute(el, "c")));
    assert_true(sr_b64_decode_exact(p->sig1, 64, xmpp_stanza_get_attribute(el, "sig")));
    assert_int_equal(
        sr_e2e_dmkd_round1_verify(p->sig1, &r->dctx, user_jid[p->u], p->R, p->c, id->sign_pk),
        SR_E2E_OK);
    fs_answer(p->f, iq, NULL);
    xmpp_stanza_release(iq);
    return true;
}

static void fr_round1(frun *r)
{
    for (size_t i = 0; i < r->n; i++)
        assert_true(fr_round1_one(r, i, NULL));
}

/* The ring is fixed: sid over (jid, c, R) in ring order. */
static void fr_sid(frun *r)
{
    const char *jids[FR_MAXP];
    unsigned char c[FR_MAXP][32], R[FR_MAXP][32];
    for (size_t i = 0; i < r->n; i++) {
        jids[i] = user_jid[r->p[i].u];
        memcpy(c[i], r->p[i].c, 32);
        memcpy(R[i], r->p[i].R, 32);
    }
    assert_int_equal(sr_e2e_dmkd_sid(r->sid, &r->dctx, r->n, jids, (const unsigned char(*)[32])c,
                                     (const unsigned char(*)[32])R),
                     SR_E2E_OK);
}

/* Round 2 as the component sends it, before an attacker touches it. */
typedef struct fr_r2 {
    const char *run;
    unsigned char sid[32];
    uint64_t n, pos;
    int who[3]; /* left, right, representative */
    unsigned char R[3][32], c[3][32], sig[3][64];
} fr_r2;

static void fr_r2_make(const frun *r, size_t i, fr_r2 *m)
{
    size_t idx[3] = {(i + r->n - 1) % r->n, (i + 1) % r->n, 0};
    m->run = r->idb64;
    memcpy(m->sid, r->sid, 32);
    m->n = r->n;
    m->pos = i + 1;
    for (int k = 0; k < 3; k++) {
        const fr_part *p = &r->p[idx[k]];
        m->who[k] = p->u;
        memcpy(m->R[k], p->R, 32);
        memcpy(m->c[k], p->c, 32);
        memcpy(m->sig[k], p->sig1, 64);
    }
}

static char *fr_r2_xml(const frun *r, const fr_r2 *m)
{
    static const char *const names[3] = {"left", "right", "representative"};
    sbuf b = {0};
    char *sid = b64_of(m->sid, 32);
    sb_add(&b,
           "<round2 xmlns='" SR_NS_KEYS "' run='%s' epoch='%" PRIu64 "' sid='%s' n='%" PRIu64
           "' position='%" PRIu64 "'>",
           m->run, r->epoch, sid, m->n, m->pos);
    for (int k = 0; k < 3; k++) {
        char *R = b64_of(m->R[k], 32), *c = b64_of(m->c[k], 32), *sig = b64_of(m->sig[k], 64);
        sb_add(&b, "<%s jid='%s' R='%s' c='%s' sig='%s'/>", names[k], user_jid[m->who[k]], R, c,
               sig);
        free(R);
        free(c);
        free(sig);
    }
    sb_add(&b, "</round2>");
    free(sid);
    return b.s;
}

/* Participant i's round 2 (after fr_sid), as fr_round1_one. */
static bool fr_round2_one(frun *r, size_t i, const char *xml)
{
    fr_part *p = &r->p[i];
    const sr_e2e_identity *id = &r->s->id[p->u];
    if (!p->f) {
        const fr_part *l = &r->p[(i + r->n - 1) % r->n], *rt = &r->p[(i + 1) % r->n];
        assert_int_equal(sr_e2e_dmkd_round2(&p->m, p->T, p->second, r->sid, l->R, rt->R, i == 0),
                         SR_E2E_OK);
        assert_int_equal(sr_e2e_dmkd_round2_sign(p->sig2, r->sid, user_jid[p->u], p->T,
                                                 p->second, id->sign_sk),
                         SR_E2E_OK);
        return true;
    }
    char *own = NULL;
    if (!xml) {
        fr_r2 m;
        fr_r2_make(r, i, &m);
        own = fr_r2_xml(r, &m);
    }
    fr_headline(p->f, xml ? xml : own);
    free(own);
    settle(p->f);
    xmpp_stanza_t *iq = fr_take(p->f, "round2");
    if (!iq) return false;
    xmpp_stanza_t *el = xmpp_stanza_get_child_by_name_and_ns(iq, "round2", SR_NS_KEYS);
    assert_string_equal(xmpp_stanza_get_attribute(el, "run"), r->idb64);
    assert_true(sr_b64_decode_exact(p->T, 32, xmpp_stanza_get_attribute(el, "T")));
    assert_true(sr_b64_decode_exact(p->second, 32, xmpp_stanza_get_attribute(el, "second")));
    assert_true(sr_b64_decode_exact(p->sig2, 64, xmpp_stanza_get_attribute(el, "sig")));
    assert_int_equal(
        sr_e2e_dmkd_round2_verify(p->sig2, r->sid, user_jid[p->u], p->T, p->second, id->sign_pk),
        SR_E2E_OK);
    fs_answer(p->f, iq, NULL);
    xmpp_stanza_release(iq);
    return true;
}

static void fr_round2(frun *r)
{
    fr_sid(r);
    for (size_t i = 0; i < r->n; i++)
        assert_true(fr_round2_one(r, i, NULL));
}

/* The component's step: commitments of k_2..k_n, the T's, k' and T'_i. */
static void fr_server(frun *r)
{
    const char *jids[FR_MAXP];
    unsigned char c[FR_MAXP][32], T[FR_MAXP][32], k[FR_MAXP][32], ks[32];
    for (size_t i = 0; i < r->n; i++) {
        jids[i] = user_jid[r->p[i].u];
        memcpy(c[i], r->p[i].c, 32);
        memcpy(T[i], r->p[i].T, 32);
        memcpy(k[i], r->p[i].second, 32); /* k[0] is T', never looked at */
    }
    randombytes_buf(ks, sizeof ks);
    size_t bad;
    assert_int_equal(sr_e2e_dmkd_server(r->kprime, r->Tp, &bad, &r->dctx, r->n, jids,
                                        (const unsigned char(*)[32])c,
                                        (const unsigned char(*)[32])T,
                                        (const unsigned char(*)[32])k, ks),
                     SR_E2E_OK);
}

/* Round 3 for participant i with T'_i (tpi), or an attacker's. */
static char *fr_round3_xml_ex(const frun *r, size_t i, const unsigned char tpi[32])
{
    sbuf b = {0};
    char *kp = b64_of(r->kprime, 32), *ti = b64_of(tpi, 32), *tp = b64_of(r->p[0].second, 32);
    sb_add(&b,
           "<round3 xmlns='" SR_NS_KEYS "' run='%s' epoch='%" PRIu64
           "' k-prime='%s' t-prime-i='%s' t-prime='%s'>",
           r->idb64, r->epoch, kp, ti, tp);
    for (size_t j = 0; i == r->slice_to && j < r->nslice; j++) {
        const fs_reg *g = &r->s->reg[r->slice[j]];
        char *k = b64_of(g->ed, 32), *x = b64_of(g->x, 32), *bs = b64_of(g->bsig, 64);
        sb_add(&b, "<seal jid='%s' key='%s' box-key='%s' bundle-sig='%s'/>",
               user_jid[r->slice[j]], k, x, bs);
        free(k);
        free(x);
        free(bs);
    }
    sb_add(&b, "</round3>");
    free(kp);
    free(ti);
    free(tp);
    return b.s;
}

/* Participant i's round 3 (after fr_server): its <confirm/> checked as
 * the component checks it, and more, since the fake holds every sealing
 * key: envelopes exactly to itself and its slice, sealed by it, all one
 * secret, which KC_e confirms. */
static bool fr_round3_one(frun *r, size_t i, const char *xml)
{
    fr_part *p = &r->p[i];
    fsvc *s = r->s;
    if (!p->f) {
        sr_e2e_epoch_keys keys;
        assert_int_equal(sr_e2e_dmkd_derive(p->secret, &p->m, r->sid, &r->dctx,
                                            user_jid[r->p[0].u], r->p[0].c, r->kprime, r->Tp[i],
                                            r->p[0].second),
                         SR_E2E_OK);
        assert_int_equal(sr_e2e_epoch_derive(&keys, p->secret, ROOM, r->epoch, r->hash), SR_E2E_OK);
        memcpy(p->kc, keys.kc, 32);
        assert_int_equal(sr_e2e_check_header(p->check, keys.k, ROOM), SR_E2E_OK);
        sr_e2e_envelope_ctx ectx = {ROOM,           r->epoch,          r->hash, user_jid[p->u],
                                    user_jid[p->u], s->reg[p->u].x};
        unsigned char env[SR_E2E_ENVELOPE_BYTES];
        assert_int_equal(sr_e2e_envelope_seal(env, &ectx, p->secret, s->id[p->u].sign_sk),
                         SR_E2E_OK);
        assert_true(sr_b64_encode(r->env[p->u], sizeof r->env[p->u], env, sizeof env));
        r->env_sealer[p->u] = p->u + 1;
        return true;
    }
    char *own = xml ? NULL : fr_round3_xml_ex(r, i, r->Tp[i]);
    fr_headline(p->f, xml ? xml : own);
    free(own);
    settle(p->f);
    xmpp_stanza_t *iq = fr_take(p->f, "confirm");
    if (!iq) return false;
    xmpp_stanza_t *el = xmpp_stanza_get_child_by_name_and_ns(iq, "confirm", SR_NS_KEYS);
    assert_string_equal(xmpp_stanza_get_attribute(el, "run"), r->idb64);
    assert_true(sr_b64_decode_exact(p->kc, 32, xmpp_stanza_get_attribute(el, "kc")));
    assert_true(sr_b64_decode_exact(p->check, 32, xmpp_stanza_get_attribute(el, "check")));
    bool seen[NUSERS] = {false}, have = false;
    size_t count = 0;
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(el); c; c = xmpp_stanza_get_next(c)) {
        if (!xmpp_stanza_is_tag(c)) continue;
        assert_string_equal(xmpp_stanza_get_name(c), "envelope");
        int u = user_index(xmpp_stanza_get_attribute(c, "to"));
        assert_true(u >= 0 && !seen[u]);
        bool wanted = u == p->u;
        for (size_t j = 0; i == r->slice_to && j < r->nslice; j++)
            wanted |= r->slice[j] == u;
        assert_true(wanted);
        seen[u] = true;
        char *text = xmpp_stanza_get_text(c);
        unsigned char blob[SR_E2E_ENVELOPE_BYTES], secret[32];
        assert_true(sr_b64_decode_exact(blob, sizeof blob, text));
        sr_e2e_envelope_ctx ectx = {ROOM,        r->epoch,   r->hash, user_jid[p->u],
                                    user_jid[u], s->reg[u].x};
        assert_int_equal(sr_e2e_envelope_open(secret, blob, sizeof blob, &ectx,
                                              s->id[p->u].sign_pk, s->id[u].box_sk),
                         SR_E2E_OK);
        if (have) assert_memory_equal(secret, p->secret, 32);
        memcpy(p->secret, secret, 32);
        have = true;
        snprintf(r->env[u], sizeof r->env[u], "%s", text);
        r->env_sealer[u] = p->u + 1;
        xmpp_free(p->f->xmpp, text);
        count++;
    }
    assert_int_equal(count, 1 + (i == r->slice_to ? r->nslice : 0));
    assert_int_equal(sr_e2e_epoch_confirm(p->kc, p->secret, ROOM, r->epoch, r->hash), SR_E2E_OK);
    /* The check header is the agreed key's k_e·P_c. */
    sr_e2e_epoch_keys keys;
    assert_int_equal(sr_e2e_epoch_derive(&keys, p->secret, ROOM, r->epoch, r->hash), SR_E2E_OK);
    assert_int_equal(sr_e2e_check_header_verify(p->check, keys.k, ROOM), SR_E2E_OK);
    fs_answer(p->f, iq, NULL);
    xmpp_stanza_release(iq);
    return true;
}

static void fr_round3(frun *r)
{
    fr_server(r);
    for (size_t i = 0; i < r->n; i++)
        assert_true(fr_round3_one(r, i, NULL));
}

static void fr_announce(fsvc *s, fixture *const *listeners, size_t nl)
{
    for (size_t i = 0; i < nl; i++) {
        char inner[256];
        snprintf(inner, sizeof inner,
                 "<epoch xmlns='" SR_NS "' number='%zu' roster-version='%" PRIu64 "'/>", s->nep,
                 s->ep[s->nep - 1].rv);
        fr_headline(listeners[i], inner);
        settle(listeners[i]);
    }
}

/* Every KC_e equal: the epoch is stored with the envelopes and announced
 * to the library contexts in listeners (each fetches it). */
static void fr_commit(frun *r, fixture *const *listeners, size_t nl)
{
    fsvc *s = r->s;
    for (size_t i = 1; i < r->n; i++) {
        assert_memory_equal(r->p[i].kc, r->p[0].kc, 32);
        assert_memory_equal(r->p[i].check, r->p[0].check, 32);
    }
    assert_true(s->nep < FS_MAXE);
    assert_int_equal(s->nep + 1, r->epoch);
    fs_epoch *e = &s->ep[s->nep];
    memset(e, 0, sizeof *e);
    e->rv = r->rv;
    memcpy(e->hash, r->hash, 32);
    memcpy(e->kc, r->p[0].kc, 32);
    memcpy(e->check, r->p[0].check, 32);
    e->have_check = true;
    if (r->wrong_check) fs_wrong_check(e->check);
    memcpy(e->secret, r->p[0].secret, 32);
    assert_int_equal(sr_e2e_epoch_derive(&e->keys, e->secret, ROOM, r->epoch, e->hash), SR_E2E_OK);
    snprintf(e->sealer, sizeof e->sealer, "%s", user_jid[r->p[0].u]);
    memcpy(e->env, r->env, sizeof e->env);
    memcpy(e->env_sealer, r->env_sealer, sizeof e->env_sealer);
    s->nep++;
    fr_announce(s, listeners, nl);
}

static void fr_full(frun *r)
{
    fr_round1(r);
    fr_round2(r);
    fr_round3(r);
}

/* Another member's library context on the fake service, with its
 * identity and the room's verified roster. */
static fixture *fr_member(fsvc *s, int u, const char *full)
{
    fixture *g = calloc(1, sizeof *g);
    assert_non_null(g);
    client_init(g, full, s);
    unsigned char seed[32];
    memset(seed, u + 1, sizeof seed);
    assert_int_equal(sealroom_identity_import(&g->alice, seed, sizeof seed), SEALROOM_OK);
    assert_int_equal(sealroom_ctx_set_identity(g->ctx, g->alice), SEALROOM_OK);
    uint32_t req;
    assert_int_equal(sealroom_room_sync(g->ctx, &req, "team"), SEALROOM_OK);
    settle(g);
    assert_int_equal(done_event(g, req)->result, SEALROOM_OK);
    return g;
}

static const sr_epoch *held_epoch(fixture *f, uint64_t number)
{
    const sr_room *room = sr_room_find(f->ctx, ROOM);
    assert_non_null(room);
    return sr_epoch_find(room, number);
}

static bool run_state(fixture *f)
{
    const sr_room *room = sr_room_find(f->ctx, ROOM);
    return room && room->run;
}

/* ---- archive re-encryption (archive-wire.md) ---- */

/* H_c of the fake's epoch n, recomputed from the epoch's own key. */
static void fs_check_of(const fsvc *s, uint64_t n, unsigned char hc[32])
{
    assert_int_equal(sr_e2e_check_header(hc, s->ep[n - 1].keys.k, ROOM), SR_E2E_OK);
}

/* The fake stored the token to-1 -> to from sender, and it is right:
 * Δ·H_c(to-1) = H_c(to) with both check headers recomputed from the
 * keys, and so Δ = k_to·k_(to-1)⁻¹. */
static void expect_token(const fsvc *s, uint64_t to, int sender)
{
    unsigned char he[32], hf[32], h[32], want[32];
    assert_true(to >= 2 && s->have_token[to]);
    assert_int_equal(s->token_sender[to], sender);
    fs_check_of(s, to - 1, he);
    fs_check_of(s, to, hf);
    assert_int_equal(sr_e2e_header_rekey(h, s->token[to], he), SR_E2E_OK);
    assert_memory_equal(h, hf, 32);
    assert_int_equal(sr_e2e_token_make(want, s->ep[to - 2].keys.k, s->ep[to - 1].keys.k),
                     SR_E2E_OK);
    assert_memory_equal(s->token[to], want, 32);
}

/* alice, bob and carol are members (version 2); alice holds epoch 1
 * (made at version 1, so stale) and is in the room. */
static void dmkd_room(fixture *f)
{
    fs_room_setup(f);
    fs_version(f, U_ALICE, SR_OP_ADD, U_CAROL, SR_ROLE_MEMBER);
    join_ready(f);
}

/* A run with alice (the library) at each place of the ring, the others
 * simulated, dave offline with his envelope sealed by alice: everyone
 * gets one key, and dave opens his envelope later. */
static void test_dmkd_run(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    dmkd_room(f);
    /* dave joins the roster while alice is in the room: the run names a
     * version alice syncs first. */
    fs_version(f, U_ALICE, SR_OP_ADD, U_DAVE, SR_ROLE_MEMBER);
    frun *r = calloc(1, sizeof *r);
    assert_non_null(r);
    static const int rings[3][3] = {
        {U_ALICE, U_BOB, U_CAROL}, {U_BOB, U_ALICE, U_CAROL}, {U_BOB, U_CAROL, U_ALICE}};
    for (size_t pos = 0; pos < 3; pos++) {
        fixture *fx[3] = {NULL, NULL, NULL};
        fx[pos] = f;
        fr_start(r, s, rings[pos], fx, 3);
        r->slice[0] = U_DAVE;
        r->nslice = 1;
        r->slice_to = pos;
        f->nev = 0;
        fr_full(r);
        assert_true(run_state(f));
        assert_null(find_event(f, SEALROOM_EVENT_EPOCH_CHANGED));
        fr_commit(r, &f, 1);
        const ev_copy *c = find_event(f, SEALROOM_EVENT_EPOCH_CHANGED);
        assert_non_null(c);
        assert_int_equal(c->epoch, r->epoch);
        assert_int_equal(c->roster_version, 3);
        const sr_epoch *e = held_epoch(f, r->epoch);
        assert_non_null(e);
        for (size_t i = 0; i < 3; i++)
            if (i != pos) assert_memory_equal(e->secret, r->p[i].secret, 32);
        assert_memory_equal(e->secret, r->p[pos].secret, 32);
        assert_null(find_event(f, SEALROOM_EVENT_KEY_AGREEMENT_FAILED));
        assert_false(run_state(f));
        assert_int_equal(s->n_abort, 0);
    }
    /* No envelope path was taken by alice: the fake got no epoch set. */
    assert_int_equal(s->n_epoch_set, 0);
    /* Alice represented the run of epoch 2 holding epoch 1: she gave the
     * token 1->2; of epochs 3 and 4 bob was the representative, so she
     * gave none (and bob, simulated here, none either). */
    assert_int_equal(s->n_token, 1);
    assert_int_equal(s->n_token_refused, 0);
    expect_token(s, 2, U_ALICE);
    assert_false(s->have_token[3]);
    assert_false(s->have_token[4]);
    /* dave, offline throughout, opens the envelope alice sealed to him
     * (not the representative's: bob sealed nothing to him). */
    fixture *d = fr_member(s, U_DAVE, "dave@localhost/pc");
    fr_announce(s, &d, 1);
    const sr_epoch *de = held_epoch(d, 4);
    assert_non_null(de);
    assert_memory_equal(de->secret, held_epoch(f, 4)->secret, 32);
    client_free(d);
    free(r);
}

/* Library contexts agree among themselves: two (the ring of two, carol
 * offline and sealed to by bob), then three. */
static void test_dmkd_contexts(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    dmkd_room(f);
    fixture *b = fr_member(s, U_BOB, "bob@localhost/phone");
    fixture *c = fr_member(s, U_CAROL, "carol@localhost/pad");
    fixture *all[3] = {f, b, c};
    frun *r = calloc(1, sizeof *r);
    assert_non_null(r);

    const int two[2] = {U_ALICE, U_BOB};
    fr_start(r, s, two, all, 2);
    r->slice[0] = U_CAROL;
    r->nslice = 1;
    r->slice_to = 1;
    fr_full(r);
    fr_commit(r, all, 3);
    for (int i = 0; i < 3; i++) {
        const sr_epoch *e = held_epoch(all[i], 2);
        assert_non_null(e);
        assert_memory_equal(e->secret, s->ep[1].secret, 32);
        assert_false(run_state(all[i]));
    }

    const int three[3] = {U_BOB, U_ALICE, U_CAROL};
    fixture *ring[3] = {b, f, c};
    fr_start(r, s, three, ring, 3);
    fr_full(r);
    fr_commit(r, all, 3);
    for (int i = 0; i < 3; i++) {
        const sr_epoch *e = held_epoch(all[i], 3);
        assert_non_null(e);
        assert_memory_equal(e->secret, s->ep[2].secret, 32);
        assert_null(find_event(all[i], SEALROOM_EVENT_KEY_AGREEMENT_FAILED));
    }
    assert_int_equal(s->n_abort, 0);
    /* Each representative, holding the epoch before, gave its token; the
     * others gave none. */
    assert_int_equal(s->n_token, 2);
    assert_int_equal(s->n_token_refused, 0);
    expect_token(s, 2, U_ALICE);
    expect_token(s, 3, U_BOB);
    client_free(b);
    client_free(c);
    free(r);
}

/* The room resends a round (as after its restart): the same answer each
 * time, byte for byte. */
static void test_dmkd_idempotent(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    dmkd_room(f);
    frun *r = calloc(1, sizeof *r);
    assert_non_null(r);
    const int ring[2] = {U_BOB, U_ALICE};
    fixture *fx[2] = {NULL, f};
    fr_start(r, s, ring, fx, 2);
    char *x1 = fr_round1_xml(r);
    assert_true(fr_round1_one(r, 0, NULL));
    assert_true(fr_round1_one(r, 1, x1));
    fr_part first = r->p[1];
    assert_true(fr_round1_one(r, 1, x1));
    assert_memory_equal(r->p[1].R, first.R, 32);
    assert_memory_equal(r->p[1].c, first.c, 32);
    assert_memory_equal(r->p[1].sig1, first.sig1, 64);

    fr_sid(r);
    fr_r2 m;
    fr_r2_make(r, 1, &m);
    char *x2 = fr_r2_xml(r, &m);
    assert_true(fr_round2_one(r, 0, NULL));
    assert_true(fr_round2_one(r, 1, x2));
    first = r->p[1];
    assert_true(fr_round2_one(r, 1, x2));
    assert_memory_equal(r->p[1].T, first.T, 32);
    assert_memory_equal(r->p[1].second, first.second, 32);
    assert_memory_equal(r->p[1].sig2, first.sig2, 64);
    /* An old round 1 of the run once more: still the same answer. */
    assert_true(fr_round1_one(r, 1, x1));
    assert_memory_equal(r->p[1].R, first.R, 32);

    fr_server(r);
    char *x3 = fr_round3_xml_ex(r, 1, r->Tp[1]);
    assert_true(fr_round3_one(r, 0, NULL));
    assert_true(fr_round3_one(r, 1, x3));
    char env[256];
    snprintf(env, sizeof env, "%s", r->env[U_ALICE]);
    memcpy(first.kc, r->p[1].kc, 32);
    assert_true(fr_round3_one(r, 1, x3));
    assert_string_equal(r->env[U_ALICE], env);
    assert_memory_equal(r->p[1].kc, first.kc, 32);
    assert_int_equal(s->n_abort, 0);
    fr_commit(r, &f, 1);
    assert_non_null(held_epoch(f, 2));
    assert_memory_equal(held_epoch(f, 2)->secret, r->p[0].secret, 32);
    free(x1);
    free(x2);
    free(x3);
    free(r);
}

/* The room abandons a run: the state is gone, later rounds of it are
 * not answered, nothing is reported as an attack; a failed headline of
 * another run changes nothing. */
static void test_dmkd_failed_headline(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    dmkd_room(f);
    frun *r = calloc(1, sizeof *r);
    assert_non_null(r);
    const int ring[2] = {U_ALICE, U_BOB};
    fixture *fx[2] = {f, NULL};
    fr_start(r, s, ring, fx, 2);
    fr_round1(r);
    fr_headline(f, "<failed xmlns='" SR_NS_KEYS "' run='AAAAAAAAAAAAAAAAAAAAAA==' reason='timeout'/>");
    assert_true(run_state(f));
    fr_sid(r);
    assert_true(fr_round2_one(r, 0, NULL));
    assert_true(fr_round2_one(r, 1, NULL));
    char inner[256];
    snprintf(inner, sizeof inner,
             "<failed xmlns='" SR_NS_KEYS "' run='%s' reason='member-dropped'/>", r->idb64);
    fr_headline(f, inner);
    assert_false(run_state(f));
    fr_server(r);
    assert_false(fr_round3_one(r, 0, NULL));
    settle(f);
    assert_int_equal(s->n_abort, 0);
    assert_null(find_event(f, SEALROOM_EVENT_KEY_AGREEMENT_FAILED));
    assert_null(find_event(f, SEALROOM_EVENT_EPOCH_CHANGED));
    /* The next run goes ahead. */
    fr_start(r, s, ring, fx, 2);
    fr_full(r);
    fr_commit(r, &f, 1);
    assert_non_null(held_epoch(f, 2));
    free(r);
}

/* The test hook's stalled session ignores round 2 but keeps its state:
 * the round resent (after the room's restart) is answered once the
 * stall ends. */
static void test_dmkd_stall_hook(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    dmkd_room(f);
    frun *r = calloc(1, sizeof *r);
    assert_non_null(r);
    const int ring[2] = {U_BOB, U_ALICE};
    fixture *fx[2] = {NULL, f};
    fr_start(r, s, ring, fx, 2);
    fr_round1(r);
    fr_sid(r);
    assert_true(fr_round2_one(r, 0, NULL));
    sr_testhook_dmkd_stall(f->ctx, 2);
    assert_false(fr_round2_one(r, 1, NULL));
    assert_true(run_state(f));
    sr_testhook_dmkd_stall(f->ctx, 0);
    assert_true(fr_round2_one(r, 1, NULL));
    fr_round3(r);
    fr_commit(r, &f, 1);
    assert_non_null(held_epoch(f, 2));
    free(r);
}

/* Run state older than five minutes is dropped. */
static void test_dmkd_expiry(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    dmkd_room(f);
    frun *r = calloc(1, sizeof *r);
    assert_non_null(r);
    const int ring[2] = {U_BOB, U_ALICE};
    fixture *fx[2] = {NULL, f};
    sealroom_ctx_tick(f->ctx, 1000);
    fr_start(r, s, ring, fx, 2);
    fr_round1(r);
    sealroom_ctx_tick(f->ctx, 1000 + SR_RUN_MAX_AGE_MS - 1);
    fr_sid(r);
    assert_true(fr_round2_one(r, 0, NULL));
    assert_true(fr_round2_one(r, 1, NULL));
    sealroom_ctx_tick(f->ctx, 1000 + SR_RUN_MAX_AGE_MS);
    fr_server(r);
    assert_false(fr_round3_one(r, 1, NULL));
    assert_false(run_state(f));
    settle(f);
    assert_int_equal(s->n_abort, 0);
    assert_null(find_event(f, SEALROOM_EVENT_KEY_AGREEMENT_FAILED));
    free(r);
}

/* Alice's run failed with code, for the reason why names: the event, the
 * run's <abort/> (unless the run was over), no epoch installed, no state
 * kept. */
static void expect_run_failed(fixture *f, const frun *r, int code, const char *why, bool aborted,
                              unsigned aborts)
{
    fsvc *s = f->svc;
    settle(f);
    assert_int_equal(count_events(f, SEALROOM_EVENT_KEY_AGREEMENT_FAILED), 1);
    const ev_copy *e = find_event(f, SEALROOM_EVENT_KEY_AGREEMENT_FAILED);
    if (e->result != code)
        fail_msg("failed with %s (%s), not %s", sealroom_strerror(e->result), e->error_text,
                 sealroom_strerror(code));
    assert_string_equal(e->room, ROOM);
    assert_int_equal(e->epoch, r->epoch);
    if (!strstr(e->error_text, why)) fail_msg("failed for '%s', not for '%s'", e->error_text, why);
    assert_int_equal(s->n_abort, aborts + aborted);
    if (aborted) {
        assert_string_equal(s->abort_run, r->idb64);
        assert_string_equal(s->abort_reason, e->error_text);
    }
    assert_null(find_event(f, SEALROOM_EVENT_EPOCH_CHANGED));
    assert_false(run_state(f));
    if (r->epoch > 1) assert_null(held_epoch(f, r->epoch));
    uint64_t held;
    assert_int_equal(sealroom_room_epoch(f->ctx, &held, "team"), SEALROOM_OK);
    assert_int_equal(held, 1);
}

/* A fresh run of alice (library, at ring place alice_at) with bob and
 * carol simulated, or with users; the events so far forgotten. */
static void attack_start(fixture *f, frun *r, const int *users, size_t alice_at, unsigned *aborts)
{
    static const int abc[3] = {U_ALICE, U_BOB, U_CAROL};
    fixture *fx[3] = {NULL, NULL, NULL};
    fx[alice_at] = f;
    fr_start(r, f->svc, users ? users : abc, fx, 3);
    f->nev = 0;
    *aborts = f->svc->n_abort;
}

/* The fake service rewrites the rounds on their way to alice: every
 * rewrite makes the run fail on her with the code of the check that
 * caught it, and she tells the room to abort. */
static void test_dmkd_attacks(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    dmkd_room(f);
    frun *r = calloc(1, sizeof *r), *old = calloc(1, sizeof *old);
    assert_non_null(r);
    assert_non_null(old);
    unsigned aborts;
    fr_r2 m;
    char *x;

    /* A forged roster hash in round 1; a rekey request waiting for the
     * run fails with it. */
    uint32_t req;
    s->rekey_mode = "run";
    assert_int_equal(sealroom_room_rekey(f->ctx, &req, "team"), SEALROOM_OK);
    settle(f);
    attack_start(f, r, NULL, 0, &aborts);
    r->hash[7] ^= 0x40;
    x = fr_round1_xml(r);
    r->hash[7] ^= 0x40;
    assert_false(fr_round1_one(r, 0, x));
    free(x);
    expect_run_failed(f, r, SEALROOM_E_VERIFY, "roster hash", true, aborts);
    assert_int_equal(done_event(f, req)->result, SEALROOM_E_VERIFY);

    /* A neighbour's R substituted (its signature no longer verifies). */
    attack_start(f, r, NULL, 0, &aborts);
    fr_round1(r);
    fr_sid(r);
    fr_r2_make(r, 0, &m);
    unsigned char sc[32];
    crypto_core_ristretto255_scalar_random(sc);
    assert_int_equal(crypto_scalarmult_ristretto255_base(m.R[0], sc), 0);
    x = fr_r2_xml(r, &m);
    assert_false(fr_round2_one(r, 0, x));
    free(x);
    expect_run_failed(f, r, SEALROOM_E_VERIFY, "carol@localhost (our left neighbour) does not verify",
                      true, aborts);
    /* Its later rounds are not answered. */
    assert_true(fr_round2_one(r, 1, NULL));
    assert_true(fr_round2_one(r, 2, NULL));
    memset(r->p[0].T, 0, 32);
    assert_false(fr_round2_one(r, 0, NULL));

    /* T'_i altered: the representative's commitment does not open. */
    static const int bac[3] = {U_BOB, U_ALICE, U_CAROL};
    attack_start(f, r, bac, 1, &aborts);
    fr_round1(r);
    fr_round2(r);
    fr_server(r);
    unsigned char tpi[32];
    memcpy(tpi, r->Tp[1], 32);
    tpi[0] ^= 1;
    x = fr_round3_xml_ex(r, 1, tpi);
    assert_false(fr_round3_one(r, 1, x));
    free(x);
    expect_run_failed(f, r, SEALROOM_E_DECRYPT, "commitment of the representative bob@localhost",
                      true, aborts);

    /* A round 2 of an older run replayed into the next one: as it was,
     * and with the run id rewritten (signed for the other run). */
    attack_start(f, old, bac, 1, &aborts);
    fr_round1(old);
    fr_sid(old);
    fr_r2_make(old, 1, &m);
    char *replay = fr_r2_xml(old, &m);
    assert_true(fr_round2_one(old, 1, replay));
    attack_start(f, r, bac, 1, &aborts);
    fr_round1(r);
    fr_headline(f, replay);
    settle(f);
    assert_null(fr_take(f, "round2"));
    expect_run_failed(f, r, SEALROOM_E_PROTOCOL, "of another run", true, aborts);
    attack_start(f, r, bac, 1, &aborts);
    fr_round1(r);
    m.run = r->idb64;
    x = fr_r2_xml(r, &m);
    assert_false(fr_round2_one(r, 1, x));
    free(x);
    expect_run_failed(f, r, SEALROOM_E_VERIFY, "does not verify", true, aborts);
    free(replay);

    /* dave, not in the signed roster, put into the ring next to alice
     * (with a valid round 1 under his own key). */
    static const int abd[3] = {U_ALICE, U_BOB, U_DAVE};
    attack_start(f, r, abd, 0, &aborts);
    fr_round1(r);
    fr_sid(r);
    assert_false(fr_round2_one(r, 0, NULL));
    expect_run_failed(f, r, SEALROOM_E_VERIFY, "dave@localhost (our left neighbour), not a member",
                      true, aborts);

    /* The representative somewhere else than position 1: alice named
     * representative at position 2, bob named it while alice is at 1,
     * carol (position 2) named it to alice at position 3. */
    attack_start(f, r, bac, 1, &aborts);
    fr_round1(r);
    fr_sid(r);
    fr_r2_make(r, 1, &m);
    m.who[2] = U_ALICE;
    memcpy(m.R[2], r->p[1].R, 32);
    memcpy(m.c[2], r->p[1].c, 32);
    memcpy(m.sig[2], r->p[1].sig1, 64);
    x = fr_r2_xml(r, &m);
    assert_false(fr_round2_one(r, 1, x));
    free(x);
    expect_run_failed(f, r, SEALROOM_E_PROTOCOL, "representative off position 1", true, aborts);
    attack_start(f, r, NULL, 0, &aborts);
    fr_round1(r);
    fr_sid(r);
    fr_r2_make(r, 0, &m);
    m.who[2] = U_BOB;
    memcpy(m.R[2], r->p[1].R, 32);
    memcpy(m.c[2], r->p[1].c, 32);
    memcpy(m.sig[2], r->p[1].sig1, 64);
    x = fr_r2_xml(r, &m);
    assert_false(fr_round2_one(r, 0, x));
    free(x);
    expect_run_failed(f, r, SEALROOM_E_PROTOCOL, "another member as it at position 1", true,
                      aborts);
    static const int bca[3] = {U_BOB, U_CAROL, U_ALICE};
    attack_start(f, r, bca, 2, &aborts);
    fr_round1(r);
    fr_sid(r);
    fr_r2_make(r, 2, &m);
    m.who[2] = U_CAROL; /* carol, at position 2, named the representative */
    memcpy(m.R[2], r->p[1].R, 32);
    memcpy(m.c[2], r->p[1].c, 32);
    memcpy(m.sig[2], r->p[1].sig1, 64);
    x = fr_r2_xml(r, &m);
    assert_false(fr_round2_one(r, 2, x));
    free(x);
    expect_run_failed(f, r, SEALROOM_E_PROTOCOL, "at a place other than position 1", true, aborts);
    /* The representative on alice's left with another round 1 than the
     * one named as the representative's; alice as the representative
     * with a round 1 not hers. */
    attack_start(f, r, bac, 1, &aborts);
    fr_round1(r);
    fr_sid(r);
    fr_r2_make(r, 1, &m);
    m.R[2][0] ^= 1;
    x = fr_r2_xml(r, &m);
    assert_false(fr_round2_one(r, 1, x));
    free(x);
    expect_run_failed(f, r, SEALROOM_E_PROTOCOL, "two different round 1s", true, aborts);
    attack_start(f, r, NULL, 0, &aborts);
    fr_round1(r);
    fr_sid(r);
    fr_r2_make(r, 0, &m);
    memcpy(m.R[2], r->p[1].R, 32);
    x = fr_r2_xml(r, &m);
    assert_false(fr_round2_one(r, 0, x));
    free(x);
    expect_run_failed(f, r, SEALROOM_E_PROTOCOL, "a round 1 that is not ours", true, aborts);

    /* A ring of two with different members on either side. */
    static const int ba[2] = {U_BOB, U_ALICE};
    fixture *fx2[2] = {NULL, f};
    f->nev = 0;
    aborts = s->n_abort;
    fr_start(r, s, ba, fx2, 2);
    fr_round1(r);
    fr_sid(r);
    fr_r2_make(r, 1, &m);
    m.who[1] = U_CAROL;
    x = fr_r2_xml(r, &m);
    assert_false(fr_round2_one(r, 1, x));
    free(x);
    expect_run_failed(f, r, SEALROOM_E_PROTOCOL, "two different neighbours in a ring of two", true,
                      aborts);

    /* Round 1 of the run again with another epoch. */
    attack_start(f, r, NULL, 0, &aborts);
    fr_round1(r);
    r->epoch++;
    x = fr_round1_xml(r);
    r->epoch--;
    assert_false(fr_round1_one(r, 0, x));
    free(x);
    expect_run_failed(f, r, SEALROOM_E_PROTOCOL, "round 1 of this run came again", true, aborts);

    /* Round 2 and round 3 of the run again with other values. */
    attack_start(f, r, NULL, 0, &aborts);
    fr_round1(r);
    fr_round2(r);
    fr_r2_make(r, 0, &m);
    m.sid[0] ^= 1;
    x = fr_r2_xml(r, &m);
    assert_false(fr_round2_one(r, 0, x));
    free(x);
    expect_run_failed(f, r, SEALROOM_E_PROTOCOL, "round 2 of this run came again", true, aborts);
    attack_start(f, r, NULL, 0, &aborts);
    fr_full(r);
    r->kprime[0] ^= 1;
    x = fr_round3_xml_ex(r, 0, r->Tp[0]);
    assert_false(fr_round3_one(r, 0, x));
    free(x);
    expect_run_failed(f, r, SEALROOM_E_PROTOCOL, "round 3 of this run came again", true, aborts);

    /* A run under the roster before carol was added, with that
     * version's true hash: the new key would reach whom a later change
     * removed. */
    static const int ab2[2] = {U_ALICE, U_BOB};
    fixture *fxo[2] = {f, NULL};
    f->nev = 0;
    aborts = s->n_abort;
    fr_start(r, s, ab2, fxo, 2);
    r->rv = 1;
    memcpy(r->hash, s->heads[1], 32);
    assert_false(fr_round1_one(r, 0, NULL));
    expect_run_failed(f, r, SEALROOM_E_VERIFY, "before the membership change", true, aborts);

    /* A run for an epoch alice holds already. */
    attack_start(f, r, NULL, 0, &aborts);
    r->epoch = r->dctx.epoch = 1;
    assert_false(fr_round1_one(r, 0, NULL));
    expect_run_failed(f, r, SEALROOM_E_PROTOCOL, "but we hold epoch 1", true, aborts);

    /* The room commits another key than the one the run agreed on (it
     * gave alice and bob different k'): alice installs nothing. */
    fixture *fx3[2] = {f, NULL};
    f->nev = 0;
    aborts = s->n_abort;
    static const int ab[2] = {U_ALICE, U_BOB};
    fr_start(r, s, ab, fx3, 2);
    fr_full(r);
    assert_true(run_state(f));
    assert_int_equal(fs_new_epoch(f, U_BOB, FS_EPOCH_GOOD), r->epoch);
    fr_announce(s, &f, 1);
    expect_run_failed(f, r, SEALROOM_E_VERIFY, "not the key our run agreed on", false, aborts);

    /* dave, not a member, is asked to take part: he refuses. */
    fixture *d = fr_member(s, U_DAVE, "dave@localhost/pc");
    static const int dab[3] = {U_DAVE, U_ALICE, U_BOB};
    fixture *fxd[3] = {d, NULL, NULL};
    aborts = s->n_abort;
    fr_start(r, s, dab, fxd, 3);
    assert_false(fr_round1_one(r, 0, NULL));
    settle(d);
    const ev_copy *de = find_event(d, SEALROOM_EVENT_KEY_AGREEMENT_FAILED);
    assert_non_null(de);
    assert_int_equal(de->result, SEALROOM_E_VERIFY);
    assert_non_null(strstr(de->error_text, "we are not a member"));
    assert_int_equal(s->n_abort, aborts + 1);
    assert_false(run_state(d));
    client_free(d);
    free(r);
    free(old);
}

/* Offline members in alice's slice get an envelope only if their sealing
 * key checks out like a fetched bundle: a box key the server swapped in
 * (bundle signature fails), a non-member, a key that is not the roster's
 * are skipped, and the run goes on. */
static void test_dmkd_slice_checks(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    dmkd_room(f);
    frun *r = calloc(1, sizeof *r);
    assert_non_null(r);
    static const int ab[2] = {U_ALICE, U_BOB};
    fixture *fx[2] = {f, NULL};
    fr_start(r, s, ab, fx, 2);
    fr_round1(r);
    fr_round2(r);
    fr_server(r);
    assert_true(fr_round3_one(r, 1, NULL));
    unsigned char evil[32], evil_sk[32];
    crypto_box_keypair(evil, evil_sk);
    const fs_reg *c = &s->reg[U_CAROL], *d = &s->reg[U_DAVE], *b = &s->reg[U_BOB];
    char *ck = b64_of(c->ed, 32), *cbs = b64_of(c->bsig, 64), *ev = b64_of(evil, 32);
    char *dk = b64_of(d->ed, 32), *dx = b64_of(d->x, 32), *dbs = b64_of(d->bsig, 64);
    char *bk = b64_of(b->ed, 32), *cx = b64_of(c->x, 32);
    char *x = fr_round3_xml_ex(r, 0, r->Tp[0]);
    sbuf seals = {0};
    sb_add(&seals, "<seal jid='carol@localhost' key='%s' box-key='%s' bundle-sig='%s'/>", ck, ev,
           cbs);
    sb_add(&seals, "<seal jid='dave@localhost' key='%s' box-key='%s' bundle-sig='%s'/>", dk, dx,
           dbs);
    sb_add(&seals, "<seal jid='carol@localhost' key='%s' box-key='%s' bundle-sig='%s'/>", bk, cx,
           cbs);
    char *end = strstr(x, "</round3>");
    assert_non_null(end);
    *end = '\0';
    sbuf xml = {0};
    sb_add(&xml, "%s%s</round3>", x, seals.s);
    /* Only alice's own envelope (fr_round3_one checks the count). */
    assert_true(fr_round3_one(r, 0, xml.s));
    assert_int_equal(r->env[U_CAROL][0], '\0');
    assert_int_equal(r->env[U_DAVE][0], '\0');
    fr_commit(r, &f, 1);
    assert_non_null(held_epoch(f, 2));
    assert_null(find_event(f, SEALROOM_EVENT_KEY_AGREEMENT_FAILED));
    sodium_memzero(evil_sk, sizeof evil_sk);
    free(xml.s);
    free(seals.s);
    free(x);
    free(ck);
    free(cbs);
    free(ev);
    free(dk);
    free(dx);
    free(dbs);
    free(bk);
    free(cx);
    free(r);
}

/* Who makes a new epoch: the room's run when it says mode="run" (for a
 * message waiting under a stale epoch, asked once; for an explicit
 * rekey, which completes with the run's epoch), we alone when it says
 * mode="solo" or nudges us; a refusal fails the request. */
static void test_dmkd_rekey_modes(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    dmkd_room(f);
    frun *r = calloc(1, sizeof *r);
    assert_non_null(r);
    static const int abc[3] = {U_ALICE, U_BOB, U_CAROL};
    fixture *fx[3] = {f, NULL, NULL};

    s->rekey_mode = "run";
    uint32_t sreq, sreq2, req;
    char origin[64];
    assert_int_equal(sealroom_room_send(f->ctx, &sreq, origin, sizeof origin, "team",
                                        (const unsigned char *)"new key", 7),
                     SEALROOM_OK);
    settle(f);
    assert_int_equal(s->n_rekey, 1);
    assert_int_equal(s->n_epoch_set, 0);
    assert_int_equal(count_out_with(f, "message", NULL), 0);
    /* More waiting messages do not ask again while the run is due. */
    assert_int_equal(sealroom_room_send(f->ctx, &sreq2, NULL, 0, "team",
                                        (const unsigned char *)"more", 4),
                     SEALROOM_OK);
    settle(f);
    assert_int_equal(s->n_rekey, 1);
    fr_start(r, s, abc, fx, 3);
    fr_full(r);
    fr_commit(r, &f, 1);
    settle(f);
    assert_int_equal(s->n_epoch_set, 0);
    xmpp_stanza_t *msg = peek_out_with(f, "message", "sealed");
    assert_non_null(msg);
    unsigned char plain[16];
    size_t n;
    uint64_t rv;
    assert_int_equal(open_sent(f, msg, plain, sizeof plain, &n, &rv)->epoch, 2);
    assert_int_equal(rv, 2);
    xmpp_stanza_release(msg);

    /* An explicit rekey while the room runs one. */
    f->nev = 0;
    assert_int_equal(sealroom_room_rekey(f->ctx, &req, "team"), SEALROOM_OK);
    settle(f);
    assert_int_equal(s->n_rekey, 2);
    assert_null(done_event(f, req));
    fr_start(r, s, abc, fx, 3);
    fr_full(r);
    fr_commit(r, &f, 1);
    const ev_copy *e = done_event(f, req);
    assert_non_null(e);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_int_equal(e->kind, SEALROOM_REQ_REKEY);
    assert_int_equal(e->epoch, 3);

    /* Alone online: we seal the new epoch to every member. */
    s->rekey_mode = "solo";
    f->nev = 0;
    assert_int_equal(sealroom_room_rekey(f->ctx, &req, "team"), SEALROOM_OK);
    settle(f);
    assert_int_equal(s->n_epoch_set, 1);
    e = done_event(f, req);
    assert_non_null(e);
    assert_int_equal(e->result, SEALROOM_OK);
    assert_int_equal(e->epoch, 4);
    assert_string_equal(s->ep[3].sealer, "alice@localhost");
    for (int u = U_ALICE; u <= U_CAROL; u++)
        assert_int_not_equal(s->ep[3].env[u][0], '\0');

    /* The room's nudge (the one member online): a solo epoch too. */
    f->nev = 0;
    fr_headline(f, "<rekey xmlns='" SR_NS "' reason='expired'/>");
    settle(f);
    assert_int_equal(s->n_epoch_set, 2);
    e = find_event(f, SEALROOM_EVENT_EPOCH_CHANGED);
    assert_non_null(e);
    assert_int_equal(e->epoch, 5);

    /* A room that refuses. */
    s->rekey_mode = "refuse";
    f->nev = 0;
    assert_int_equal(sealroom_room_rekey(f->ctx, &req, "team"), SEALROOM_OK);
    settle(f);
    e = done_event(f, req);
    assert_non_null(e);
    assert_int_equal(e->result, SEALROOM_E_FORBIDDEN);
    assert_int_equal(s->n_epoch_set, 2);
    free(r);
}

/* The last captured IQ set with <child xmlns=ns/> (a look), or NULL. */
static xmpp_stanza_t *peek_set(fixture *f, const char *child, const char *ns)
{
    for (size_t i = f->nout; i-- > 0;) {
        xmpp_stanza_t *st = xmpp_stanza_new_from_string(f->xmpp, f->out[i]);
        assert_non_null(st);
        const char *type = xmpp_stanza_get_type(st);
        if (strcmp(xmpp_stanza_get_name(st), "iq") == 0 && type && strcmp(type, "set") == 0 &&
            xmpp_stanza_get_child_by_name_and_ns(st, child, ns))
            return st;
        xmpp_stanza_release(st);
    }
    return NULL;
}

/* A solo epoch carries its check header; the one who made it, holding
 * the epoch before, gives the token right after, once. */
static void test_archive_solo(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    uint32_t req;
    unsigned char got[32], hc[32];
    join_ready(f);
    assert_int_equal(s->n_token, 0); /* epoch 1 has no epoch before it */
    assert_int_equal(sealroom_room_rekey(f->ctx, &req, "team"), SEALROOM_OK);
    settle(f);
    expect_rekey_done(f, req, 2);
    assert_int_equal(s->n_epoch_refused, 0);
    xmpp_stanza_t *set = peek_set(f, "epoch", SR_NS);
    assert_non_null(set);
    xmpp_stanza_t *el = xmpp_stanza_get_child_by_name_and_ns(set, "epoch", SR_NS);
    assert_string_equal(xmpp_stanza_get_attribute(el, "number"), "2");
    assert_true(sr_b64_decode_exact(got, 32, xmpp_stanza_get_attribute(el, "check")));
    fs_check_of(s, 2, hc);
    assert_memory_equal(got, hc, 32);
    xmpp_stanza_release(set);

    assert_int_equal(s->n_token, 1);
    assert_int_equal(s->n_token_refused, 0);
    expect_token(s, 2, U_ALICE);
    xmpp_stanza_t *iq = peek_set(f, "token", SR_NS_ARCHIVE);
    assert_non_null(iq);
    assert_string_equal(xmpp_stanza_get_to(iq), ROOM);
    el = xmpp_stanza_get_child_by_name_and_ns(iq, "token", SR_NS_ARCHIVE);
    assert_string_equal(xmpp_stanza_get_attribute(el, "from"), "1");
    assert_string_equal(xmpp_stanza_get_attribute(el, "to"), "2");
    xmpp_stanza_release(iq);

    /* Epoch 2 fetched and installed again: no second token. */
    sr_room *room = sr_room_find(f->ctx, ROOM);
    assert_non_null(room);
    assert_int_equal(sr_epoch_fetch(f->ctx, room, 2), SEALROOM_OK);
    settle(f);
    assert_int_equal(s->n_epoch_get_by[2], 1);
    assert_int_equal(s->n_token, 1);
    /* The next epoch, the next token. */
    assert_int_equal(sealroom_room_rekey(f->ctx, &req, "team"), SEALROOM_OK);
    settle(f);
    expect_rekey_done(f, req, 3);
    assert_int_equal(s->n_token, 2);
    expect_token(s, 3, U_ALICE);
}

/* No token from a member who did not make the epoch, none from its maker
 * while it lacks the epoch before (but once it has it), and a refused
 * token disturbs nothing. */
static void test_archive_token_conditions(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    uint32_t req;
    join_ready(f);

    /* Bob made epoch 2; alice installs it holding epoch 1. */
    assert_int_equal(fs_new_epoch(f, U_BOB, FS_EPOCH_GOOD), 2);
    fr_headline(f, "<epoch xmlns='" SR_NS "' number='2' roster-version='1'/>");
    settle(f);
    assert_non_null(held_epoch(f, 2));
    assert_int_equal(s->n_token, 0);

    /* Bob made epoch 3 without sealing it to alice; alice then makes 4. */
    assert_int_equal(fs_new_epoch(f, U_BOB, FS_EPOCH_GOOD), 3);
    char saved[256];
    memcpy(saved, s->ep[2].env[U_ALICE], sizeof saved);
    s->ep[2].env[U_ALICE][0] = '\0';
    fr_headline(f, "<epoch xmlns='" SR_NS "' number='3' roster-version='1'/>");
    settle(f);
    assert_null(held_epoch(f, 3));
    assert_int_equal(sealroom_room_rekey(f->ctx, &req, "team"), SEALROOM_OK);
    settle(f);
    expect_rekey_done(f, req, 4);
    assert_null(held_epoch(f, 3));
    assert_int_equal(s->n_token, 0);
    /* Once alice has epoch 3 after all, the token 3->4 is hers to give. */
    memcpy(s->ep[2].env[U_ALICE], saved, sizeof saved);
    assert_int_equal(sr_epoch_fetch(f->ctx, sr_room_find(f->ctx, ROOM), 3), SEALROOM_OK);
    settle(f);
    assert_non_null(held_epoch(f, 3));
    assert_int_equal(s->n_token, 1);
    expect_token(s, 4, U_ALICE);

    /* The room refuses alice's next token: the epoch, and sending in it,
     * go on as if nothing happened, and the token is not pressed again. */
    s->token_refuse = "not-sealer";
    f->nev = 0;
    assert_int_equal(sealroom_room_rekey(f->ctx, &req, "team"), SEALROOM_OK);
    settle(f);
    expect_rekey_done(f, req, 5);
    assert_int_equal(s->n_token, 2);
    assert_int_equal(s->n_token_refused, 1);
    assert_false(s->have_token[5]);
    char origin[64];
    assert_int_equal(sealroom_room_send(f->ctx, &req, origin, sizeof origin, "team",
                                        (const unsigned char *)"still fine", 10),
                     SEALROOM_OK);
    settle(f);
    xmpp_stanza_t *m = last_out(f);
    unsigned char plain[16];
    size_t n;
    uint64_t rv;
    assert_int_equal(open_sent(f, m, plain, sizeof plain, &n, &rv)->epoch, 5);
    xmpp_stanza_release(m);
    assert_int_equal(sr_epoch_fetch(f->ctx, sr_room_find(f->ctx, ROOM), 5), SEALROOM_OK);
    settle(f);
    assert_int_equal(s->n_token, 2);
    assert_null(find_event(f, SEALROOM_EVENT_MESSAGE_REJECTED));
    assert_null(find_event(f, SEALROOM_EVENT_KEY_AGREEMENT_FAILED));
}

/* A run's epoch whose stored check header is not the one every
 * participant confirmed is refused like a wrong KC_e. */
static void test_archive_run_check(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    dmkd_room(f);
    frun *r = calloc(1, sizeof *r);
    assert_non_null(r);
    unsigned aborts;
    attack_start(f, r, NULL, 0, &aborts);
    fr_full(r);
    r->wrong_check = true;
    fr_commit(r, &f, 1);
    expect_run_failed(f, r, SEALROOM_E_VERIFY, "check header", false, aborts);
    assert_int_equal(s->n_token, 0);
    free(r);
}

static void confirm_check(fixture *f, const char *epoch, const unsigned char *hc,
                          const char *text)
{
    char *b = hc ? b64_of(hc, 32) : NULL;
    sbuf x = {0};
    sb_add(&x, "<confirm-check xmlns='" SR_NS_ARCHIVE "'");
    if (epoch) sb_add(&x, " epoch='%s'", epoch);
    if (b || text) sb_add(&x, " check='%s'", b ? b : text);
    sb_add(&x, "/>");
    fr_headline(f, x.s);
    settle(f);
    free(x.s);
    free(b);
}

/* <confirm-check/>: check-ok exactly when the re-keyed check header is
 * k_c·P_c of an epoch we hold. */
static void test_archive_confirm_check(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    uint32_t req;
    unsigned char hc[32];
    join_ready(f);
    assert_int_equal(sealroom_room_rekey(f->ctx, &req, "team"), SEALROOM_OK);
    settle(f);
    expect_rekey_done(f, req, 2);
    /* The component carried H_c(1) to epoch 2 with the token alice gave. */
    assert_int_equal(sr_e2e_header_rekey(hc, s->token[2], s->ep[0].check), SR_E2E_OK);
    confirm_check(f, "2", hc, NULL);
    assert_int_equal(s->n_check_ok, 1);
    assert_int_equal(s->n_check_failed, 0);
    assert_int_equal(s->check_answer_epoch, 2);
    /* Unchanged, or with a wrong token, it is not epoch 2's. */
    confirm_check(f, "2", s->ep[0].check, NULL);
    fs_wrong_check(hc);
    confirm_check(f, "2", hc, NULL);
    confirm_check(f, "2", NULL, "not base64");
    assert_int_equal(s->n_check_ok, 1);
    assert_int_equal(s->n_check_failed, 3);
    /* Epoch 1's own check header, asked of epoch 1. */
    confirm_check(f, "1", s->ep[0].check, NULL);
    assert_int_equal(s->n_check_ok, 2);
    assert_int_equal(s->check_answer_epoch, 1);
    /* An epoch we do not hold, or none named: no answer. */
    size_t before = f->nout;
    confirm_check(f, "9", hc, NULL);
    confirm_check(f, NULL, hc, NULL);
    confirm_check(f, "0", hc, NULL);
    assert_int_equal(f->nout, before);
    assert_int_equal(s->n_check_ok + s->n_check_failed, 5);
}

/* The archive follows the room to a new member: alice writes in epoch 1,
 * adds bob, makes epoch 2 (alone online) and gives the token; the room
 * re-keys her header with it, and bob, who holds only epoch 2, reads her
 * epoch-1 message. Without the re-keying he cannot. */
/* A header read before the room had the token fails for want of its epoch;
 * read again once the room can re-key it, after SR_DK_REFETCH_MS, the data
 * key is asked for afresh and the message opens (no restart needed). */
static void test_archive_refetch_after_token(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    uint32_t req;
    char origin1[64], origin2[64], id[64];
    fs_version(f, U_ALICE, SR_OP_ADD, U_ALICE, SR_ROLE_OWNER);
    assert_int_equal(fs_new_epoch(f, U_ALICE, FS_EPOCH_GOOD), 1);
    join_ready(f);
    char *sealed[2];
    const char *texts[2] = {"first one", "second one"};
    char *origins[2] = {origin1, origin2};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(sealroom_room_send(f->ctx, &req, origins[i], 64, "team",
                                            (const unsigned char *)texts[i], strlen(texts[i])),
                         SEALROOM_OK);
        settle(f);
        xmpp_stanza_t *m = last_out(f);
        sealed[i] = sealed_text(f, m);
        reflect(f, m, i == 0 ? "1" : "2");
        xmpp_stanza_release(m);
    }
    assert_int_equal(sealroom_room_add_member(f->ctx, &req, "team", "bob@localhost",
                                              SEALROOM_ROLE_MEMBER, f->bob_pk),
                     SEALROOM_OK);
    settle(f);
    sr_roster_version *v = sent_version(f, id, sizeof id);
    fs_apply(f, v);
    free(v);
    answer_head(f, id, &s->roster);
    settle(f);
    assert_int_equal(done_event(f, req)->result, SEALROOM_OK);
    expect_token(s, 2, U_ALICE);

    /* Bob reads the first message while the room does not re-key yet; too
     * soon after, the failure stands without asking again. */
    s->no_lazy = true;
    fixture *b = fr_member(s, U_BOB, "bob@localhost/phone");
    sealroom_ctx_tick(b->ctx, 1000);
    feed_groupchat(b, "alice", "alice@localhost", origin1, "1", sealed[0]);
    settle(b);
    expect_rejected(b, SEALROOM_E_NO_KEY, "1", "alice@localhost");
    s->no_lazy = false;
    sealroom_ctx_tick(b->ctx, 1000 + SR_DK_REFETCH_MS - 1);
    feed_groupchat(b, "alice", "alice@localhost", origin2, "2", sealed[1]);
    settle(b);
    assert_int_equal(s->n_rekeyed, 0);
    assert_null(find_event(b, SEALROOM_EVENT_MESSAGE));
    client_free(b);

    /* Once the room can re-key it, the same session asks again and reads. */
    b = fr_member(s, U_BOB, "bob@localhost/phone");
    s->no_lazy = true;
    sealroom_ctx_tick(b->ctx, 1000);
    feed_groupchat(b, "alice", "alice@localhost", origin1, "1", sealed[0]);
    settle(b);
    expect_rejected(b, SEALROOM_E_NO_KEY, "1", "alice@localhost");
    s->no_lazy = false;
    sealroom_ctx_tick(b->ctx, 1000 + SR_DK_REFETCH_MS);
    feed_groupchat(b, "alice", "alice@localhost", origin2, "2", sealed[1]);
    settle(b);
    assert_int_equal(s->n_rekeyed, 1);
    const ev_copy *e = find_event(b, SEALROOM_EVENT_MESSAGE);
    assert_non_null(e);
    assert_string_equal(e->origin_id, origin2);
    assert_int_equal(e->payload_len, strlen(texts[1]));
    assert_memory_equal(e->payload, texts[1], strlen(texts[1]));
    assert_int_equal(e->epoch, 2);
    client_free(b);
    free(sealed[0]);
    free(sealed[1]);
}

static void test_archive_new_member_reads(void **state)
{
    fixture *f = *state;
    fsvc *s = f->svc;
    uint32_t req;
    char origin[64], id[64];
    fs_version(f, U_ALICE, SR_OP_ADD, U_ALICE, SR_ROLE_OWNER);
    assert_int_equal(fs_new_epoch(f, U_ALICE, FS_EPOCH_GOOD), 1);
    join_ready(f);
    assert_int_equal(sealroom_room_send(f->ctx, &req, origin, sizeof origin, "team",
                                        (const unsigned char *)"before bob", 10),
                     SEALROOM_OK);
    settle(f);
    xmpp_stanza_t *m = last_out(f);
    assert_string_equal(xmpp_stanza_get_name(m), "message");
    unsigned char plain[16];
    size_t n;
    uint64_t rv;
    const fs_dk *d = open_sent(f, m, plain, sizeof plain, &n, &rv);
    assert_int_equal(d->epoch, 1);
    assert_int_equal(rv, 0);
    char *sealed = sealed_text(f, m);
    reflect(f, m, "1");
    xmpp_stanza_release(m);

    /* Bob is added; the room leaves the new epoch to alice. */
    assert_int_equal(sealroom_room_add_member(f->ctx, &req, "team", "bob@localhost",
                                              SEALROOM_ROLE_MEMBER, f->bob_pk),
                     SEALROOM_OK);
    settle(f);
    sr_roster_version *v = sent_version(f, id, sizeof id);
    fs_apply(f, v);
    free(v);
    answer_head(f, id, &s->roster);
    settle(f);
    assert_int_equal(done_event(f, req)->result, SEALROOM_OK);
    assert_int_equal(s->nep, 2);
    assert_string_equal(s->ep[1].sealer, "alice@localhost");
    assert_string_equal(s->ep[0].env[U_BOB], ""); /* epoch 1 was never bob's */
    expect_token(s, 2, U_ALICE);

    /* Without the re-keying, bob cannot read it. */
    s->no_lazy = true;
    fixture *b = fr_member(s, U_BOB, "bob@localhost/phone");
    feed_groupchat(b, "alice", "alice@localhost", origin, "1", sealed);
    settle(b);
    expect_rejected(b, SEALROOM_E_NO_KEY, "1", "alice@localhost");
    assert_int_equal(s->n_rekeyed, 0);
    client_free(b);

    /* The room re-keys alice's header from epoch 1 to 2 with her token. */
    s->no_lazy = false;
    memset(s->n_epoch_get_by, 0, sizeof s->n_epoch_get_by);
    b = fr_member(s, U_BOB, "bob@localhost/phone");
    feed_groupchat(b, "alice", "alice@localhost", origin, "1", sealed);
    settle(b);
    assert_int_equal(s->n_rekeyed, 1);
    const ev_copy *e = find_event(b, SEALROOM_EVENT_MESSAGE);
    assert_non_null(e);
    assert_null(find_event(b, SEALROOM_EVENT_MESSAGE_REJECTED));
    assert_string_equal(e->jid, "alice@localhost");
    assert_string_equal(e->origin_id, origin);
    assert_int_equal(e->payload_len, 10);
    assert_memory_equal(e->payload, "before bob", 10);
    assert_int_equal(e->roster_version, 0);
    assert_int_equal(e->epoch, 2); /* the epoch whose key opened the data key */
    assert_non_null(held_epoch(b, 2));
    assert_null(held_epoch(b, 1));
    assert_int_equal(s->n_epoch_get_by[1], 0);
    /* The header the room keeps is now epoch 2's: k_2·P. */
    const fs_dk *stored = fs_dk_find(s, d->id);
    unsigned char h[32];
    assert_int_equal(stored->epoch, 2);
    assert_int_equal(sr_e2e_header_wrap(h, s->ep[1].keys.k, stored->p), SR_E2E_OK);
    assert_memory_equal(stored->h, h, 32);
    client_free(b);
    free(sealed);
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
        T(test_fingerprint_change),
        T(test_sync_good_chain),
        T(test_sync_tampered_chain),
        T(test_create_and_update),
        T(test_rekey_race),
        T(test_join_presence),
        T(test_join_errors),
        T(test_kicked),
        T(test_send_and_reflection),
        T(test_link_down_resend),
        T(test_link_down_during_datakey),
        T(test_send_offline_without_key),
        T(test_history),
        T(test_search_hits_rechecked),
        T(test_timeout),
        T(test_send_wait_retry),
        T(test_send_failure),
        T(test_reentrant),
        T(test_receive_message),
        T(test_receive_rejects),
        T(test_receive_future_roster),
        T(test_bad_envelope),
        T(test_stale_epoch_reseal),
        T(test_vault),
        T(test_fuzz_sealed),
        T(test_garbage),
        T(test_dmkd_run),
        T(test_dmkd_contexts),
        T(test_dmkd_idempotent),
        T(test_dmkd_failed_headline),
        T(test_dmkd_stall_hook),
        T(test_dmkd_expiry),
        T(test_dmkd_attacks),
        T(test_dmkd_slice_checks),
        T(test_dmkd_rekey_modes),
        T(test_archive_solo),
        T(test_archive_token_conditions),
        T(test_archive_run_check),
        T(test_archive_confirm_check),
        T(test_archive_new_member_reads),
        T(test_archive_refetch_after_token),
    };
    return cmocka_run_group_tests_name("client_core", tests, NULL, NULL);
}
