/* A removed member cannot read later epochs (issue 3 item 5). alice, bob
 * and carol talk; alice removes bob, which starts a new epoch; alice and
 * carol go on talking. bob's client keeps running, and the test stands
 * between it and the service: until the removal every stanza passes
 * through unchanged (bob reads the early messages, the control), after it
 * the test plays a malicious service that hands bob everything it stores:
 * the later messages as live groupchat stanzas and as archive results, the
 * data-key headers, the roster chain, and for the new epoch its public row
 * with bob's newest envelope (of an earlier epoch) relabelled. bob must
 * never show a later message. Then, bypassing the library: bob holds no
 * secret of a later epoch (by name and by value, against alice's and
 * carol's), and none of his epoch keys or data keys opens a later stored
 * message with the e2e core, while alice's keys do (the control). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "e2e/archive.h"
#include "e2e/message.h"
#include "e2e_common.h"
#include "testhook.h"

/* bob's core and the test between it and the service. */
typedef struct proxy {
    it_raw *rc;
    sealroom_ctx *ctx;
    e2e_lib *rec;
    xmpp_ctx_t *xctx; /* parses what the core sends */
    bool malicious;
    long long room_id;
    char **queue; /* forged stanzas for the core, fed outside its callbacks */
    size_t nqueue, capqueue;
    unsigned forged_mam, forged_datakeys, forged_epoch, forged_chain;
} proxy;

typedef struct sent {
    const char *from;
    char origin[72];
    char text[128];
    bool later; /* after bob's removal */
} sent;

static char room[256];
static sent msgs[16];
static int nmsgs;

static void enqueue(proxy *p, char *xml)
{
    if (p->nqueue == p->capqueue) {
        p->capqueue = p->capqueue ? p->capqueue * 2 : 16;
        p->queue = realloc(p->queue, p->capqueue * sizeof *p->queue);
        IT_CHECK(p->queue != NULL, "out of memory");
    }
    p->queue[p->nqueue++] = xml;
}

/* printf into a fresh string. */
__attribute__((format(printf, 1, 2))) static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    char *s = malloc((size_t)n + 1);
    IT_CHECK(s != NULL, "out of memory");
    va_start(ap, f);
    vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    return s;
}

static char *b64_of(const PGresult *res, int row, int col)
{
    size_t len = 0;
    unsigned char *b = e2e_pg_bytea(res, row, col, &len);
    IT_CHECK(b != NULL, "NULL bytea");
    char *s = it_b64(b, len);
    free(b);
    return s;
}

static const char *bob_full(const proxy *p)
{
    return it_raw_full(p->rc);
}

/* <message> as the room reflects and archives it (component/archive.c). */
static char *room_message(const char *nick, const char *sender, const char *origin,
                          const char *sealed, const char *sid, const char *to)
{
    char *sidel = sid ? fmt("<stanza-id xmlns='urn:xmpp:sid:0' by='%s' id='%s'/>", room, sid)
                      : strdup("");
    char *toattr = to ? fmt(" to='%s'", to) : strdup("");
    char *m = fmt("<message type='groupchat' from='%s/%s'%s><body>sealed</body>"
                  "<sealed xmlns='%s'>%s</sealed><origin-id xmlns='urn:xmpp:sid:0' id='%s'/>%s"
                  "<x xmlns='%s'><item jid='%s'/></x></message>",
                  room, nick, toattr, IT_NS, sealed, origin, sidel, IT_NS_MUC_USER, sender);
    free(sidel);
    free(toattr);
    return m;
}

/* Archive rows of the room, oldest first: seq, sender, nick, origin_id,
 * payload, stamp (ms). */
static PGresult *archive_rows(const proxy *p)
{
    char rid[24];
    snprintf(rid, sizeof rid, "%lld", p->room_id);
    const char *prm[1] = {rid};
    return e2e_pg_exec("SELECT seq, sender, nick, origin_id, payload, "
                       "(extract(epoch FROM stamp) * 1000)::bigint FROM messages "
                       "WHERE room_id = $1 ORDER BY seq",
                       1, prm, true);
}

static void forge_mam(proxy *p, const char *iq_id, const char *queryid)
{
    PGresult *res = archive_rows(p);
    int n = PQntuples(res);
    char first[24] = "", last[24] = "";
    for (int i = 0; i < n; i++) {
        char seq[24], stamp[32];
        snprintf(seq, sizeof seq, "%lld", e2e_pg_int8(res, i, 0));
        it_format_stamp(stamp, e2e_pg_int8(res, i, 5));
        char *sealed = b64_of(res, i, 4);
        char *inner = room_message(PQgetvalue(res, i, 2), PQgetvalue(res, i, 1),
                                   PQgetvalue(res, i, 3), sealed, NULL, NULL);
        enqueue(p, fmt("<message from='%s' to='%s'><result xmlns='%s' queryid='%s' id='%s'>"
                       "<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' "
                       "stamp='%s'/>%s</forwarded></result></message>",
                       room, bob_full(p), IT_NS_MAM, queryid, seq, stamp, inner));
        free(inner);
        free(sealed);
        if (!first[0]) snprintf(first, sizeof first, "%s", seq);
        snprintf(last, sizeof last, "%s", seq);
    }
    PQclear(res);
    char *set = first[0] ? fmt("<set xmlns='%s'><first index='0'>%s</first><last>%s</last></set>",
                               IT_NS_RSM, first, last)
                         : fmt("<set xmlns='%s'/>", IT_NS_RSM);
    enqueue(p, fmt("<iq type='result' id='%s' from='%s' to='%s'><fin xmlns='%s' complete='true' "
                   "queryid='%s'>%s</fin></iq>",
                   iq_id, room, bob_full(p), IT_NS_MAM, queryid, set));
    free(set);
    p->forged_mam++;
}

static void forge_datakeys(proxy *p, const char *iq_id, xmpp_stanza_t *el)
{
    char rid[24];
    snprintf(rid, sizeof rid, "%lld", p->room_id);
    size_t cap = 4096, len = 0;
    char *body = malloc(cap);
    IT_CHECK(body != NULL, "out of memory");
    body[0] = 0;
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(el); c; c = xmpp_stanza_get_next(c)) {
        const char *id = xmpp_stanza_is_tag(c) ? xmpp_stanza_get_attribute(c, "id") : NULL;
        if (!id) continue;
        unsigned char dkid[64];
        size_t dl = 0;
        if (sodium_base642bin(dkid, sizeof dkid, id, strlen(id), NULL, &dl, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0)
            continue;
        const char *prm[2] = {rid, (const char *)dkid};
        int lens[2] = {0, (int)dl};
        PGresult *res = e2e_pg_exec_bin(
            "SELECT epoch, sender, header FROM datakeys WHERE room_id = $1 AND dkid = $2", 2, prm,
            lens, true);
        if (PQntuples(res) == 1) {
            char *h = b64_of(res, 0, 2);
            char *one = fmt("<datakey id='%s' epoch='%lld' sender='%s'>%s</datakey>", id,
                            e2e_pg_int8(res, 0, 0), PQgetvalue(res, 0, 1), h);
            free(h);
            size_t ol = strlen(one);
            while (len + ol + 1 > cap)
                body = realloc(body, cap *= 2);
            IT_CHECK(body != NULL, "out of memory");
            memcpy(body + len, one, ol + 1);
            len += ol;
            free(one);
        }
        PQclear(res);
    }
    enqueue(p, fmt("<iq type='result' id='%s' from='%s' to='%s'><datakeys xmlns='%s'>%s"
                   "</datakeys></iq>",
                   iq_id, room, bob_full(p), IT_NS, body));
    free(body);
    p->forged_datakeys++;
}

/* The epoch's public row, with bob's newest real envelope (sealed for an
 * earlier epoch) put under it: all a service could give him. */
static void forge_epoch(proxy *p, const char *iq_id, xmpp_stanza_t *el)
{
    char rid[24], bob[256];
    snprintf(rid, sizeof rid, "%lld", p->room_id);
    snprintf(bob, sizeof bob, "%s", it_raw_bare(p->rc));
    const char *number = xmpp_stanza_get_attribute(el, "number");
    const char *prm[2] = {rid, number};
    PGresult *res = e2e_pg_exec(
        number ? "SELECT epoch, roster_version, roster_hash, kc, sealer, "
                 "(extract(epoch FROM created_at) * 1000)::bigint FROM epochs "
                 "WHERE room_id = $1 AND epoch = $2::bigint"
               : "SELECT e.epoch, e.roster_version, e.roster_hash, e.kc, e.sealer, "
                 "(extract(epoch FROM e.created_at) * 1000)::bigint FROM epochs e "
                 "JOIN rooms r USING (room_id) WHERE e.room_id = $1 AND e.epoch = r.current_epoch",
        number ? 2 : 1, prm, true);
    IT_CHECK(PQntuples(res) == 1, "bob asked for epoch %s, which the database does not hold",
             number ? number : "(current)");
    const char *eprm[2] = {rid, bob};
    PGresult *env = e2e_pg_exec("SELECT blob, epoch FROM envelopes WHERE room_id = $1 AND "
                                "recipient = $2 ORDER BY epoch DESC LIMIT 1",
                                2, eprm, true);
    char *envel = strdup("");
    if (PQntuples(env) == 1) {
        char *b = b64_of(env, 0, 0);
        free(envel);
        envel = fmt("<envelope to='%s'>%s</envelope>", bob, b);
        free(b);
        it_log("malicious service: epoch %lld served with bob's envelope of epoch %lld",
               e2e_pg_int8(res, 0, 0), e2e_pg_int8(env, 0, 1));
    }
    PQclear(env);
    char stamp[32];
    it_format_stamp(stamp, e2e_pg_int8(res, 0, 5));
    char *rh = b64_of(res, 0, 2), *kc = b64_of(res, 0, 3);
    enqueue(p, fmt("<iq type='result' id='%s' from='%s' to='%s'><epoch xmlns='%s' number='%lld' "
                   "roster-version='%lld' roster-hash='%s' kc='%s' sealer='%s' created='%s' "
                   "max-age='86400'>%s</epoch></iq>",
                   iq_id, room, bob_full(p), IT_NS, e2e_pg_int8(res, 0, 0),
                   e2e_pg_int8(res, 0, 1), rh, kc, PQgetvalue(res, 0, 4), stamp, envel));
    free(rh);
    free(kc);
    free(envel);
    PQclear(res);
    p->forged_epoch++;
}

static void forge_chain(proxy *p, const char *iq_id, xmpp_stanza_t *el)
{
    char rid[24];
    snprintf(rid, sizeof rid, "%lld", p->room_id);
    const char *from = xmpp_stanza_get_attribute(el, "from");
    const char *prm[2] = {rid, from ? from : "0"};
    PGresult *res = e2e_pg_exec("SELECT version, canonical, sig FROM roster_versions WHERE "
                                "room_id = $1 AND version >= $2::bigint ORDER BY version",
                                2, prm, true);
    sr_roster_version *v = malloc(sizeof *v);
    IT_CHECK(v != NULL, "out of memory");
    size_t cap = 8192, len = 0;
    char *body = calloc(1, cap);
    IT_CHECK(body != NULL, "out of memory");
    long long head = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        size_t cl = 0, sl = 0;
        unsigned char *canon = e2e_pg_bytea(res, i, 1, &cl), *sig = e2e_pg_bytea(res, i, 2, &sl);
        IT_CHECK(canon && sig && sl == SR_SIG_BYTES && sr_roster_from_canonical(v, canon, cl),
                 "stored roster version does not decode");
        memcpy(v->sig, sig, SR_SIG_BYTES);
        char *x = it_roster_xml(v);
        size_t xl = strlen(x);
        while (len + xl + 1 > cap)
            body = realloc(body, cap *= 2);
        IT_CHECK(body != NULL, "out of memory");
        memcpy(body + len, x, xl + 1);
        len += xl;
        free(x);
        free(canon);
        free(sig);
        head = e2e_pg_int8(res, i, 0);
    }
    PQclear(res);
    free(v);
    enqueue(p, fmt("<iq type='result' id='%s' from='%s' to='%s'><chain xmlns='%s' head='%lld' "
                   "complete='true'>%s</chain></iq>",
                   iq_id, room, bob_full(p), IT_NS, head, body));
    free(body);
    p->forged_chain++;
}

/* After the removal, IQs to the room that a malicious service would answer
 * from its database are answered here; the rest goes to the real service. */
static bool intercept(proxy *p, const char *xml)
{
    if (!p->malicious) return false;
    xmpp_stanza_t *st = xmpp_stanza_new_from_string(p->xctx, xml);
    if (!st) return false;
    bool taken = false;
    const char *name = xmpp_stanza_get_name(st), *type = xmpp_stanza_get_type(st);
    const char *to = xmpp_stanza_get_to(st), *id = xmpp_stanza_get_id(st);
    if (name && strcmp(name, "iq") == 0 && type && to && id && strcasecmp(to, room) == 0) {
        bool get = strcmp(type, "get") == 0;
        xmpp_stanza_t *q;
        /* XEP-0313 queries are type set; the Sealroom fetches type get. */
        if (strcmp(type, "set") == 0 &&
            (q = xmpp_stanza_get_child_by_name_and_ns(st, "query", IT_NS_MAM))) {
            const char *qid = xmpp_stanza_get_attribute(q, "queryid");
            forge_mam(p, id, qid ? qid : "");
            taken = true;
        } else if (get && (q = xmpp_stanza_get_child_by_name_and_ns(st, "datakeys", IT_NS))) {
            forge_datakeys(p, id, q);
            taken = true;
        } else if (get && (q = xmpp_stanza_get_child_by_name_and_ns(st, "epoch", IT_NS))) {
            forge_epoch(p, id, q);
            taken = true;
        } else if (get && (q = xmpp_stanza_get_child_by_name_and_ns(st, "chain", IT_NS))) {
            forge_chain(p, id, q);
            taken = true;
        }
    }
    xmpp_stanza_release(st);
    return taken;
}

static int proxy_send(void *user, const char *xml, size_t len)
{
    (void)len;
    proxy *p = user;
    if (intercept(p, xml)) return 0;
    if (!it_raw_connected(p->rc)) return -1;
    it_raw_send(p->rc, "%s", xml);
    return 0;
}

static void proxy_event(void *user, const sealroom_event *ev)
{
    proxy *p = user;
    e2e_record(p->rec, ev);
}

static bool match_any(xmpp_stanza_t *st, const void *arg)
{
    (void)st;
    (void)arg;
    return true;
}

static void feed(proxy *p, const char *xml)
{
    int rc = sealroom_ctx_receive_xml(p->ctx, xml, strlen(xml));
    IT_CHECK(rc >= 0, "bob's core refused to parse a stanza (%d): %s", rc, xml);
}

/* Move stanzas both ways for ms milliseconds. */
static void pump(proxy *p, unsigned ms)
{
    uint64_t end = it_mono_ms() + ms;
    do {
        xmpp_stanza_t *st = it_raw_wait(p->rc, match_any, NULL, 10);
        if (st) {
            char *x = it_stanza_xml(st);
            xmpp_stanza_release(st);
            feed(p, x);
            free(x);
        }
        /* Feeding may queue more answers. */
        for (size_t i = 0; i < p->nqueue; i++) {
            feed(p, p->queue[i]);
            free(p->queue[i]);
        }
        p->nqueue = 0;
        sealroom_ctx_tick(p->ctx, it_mono_ms());
    } while (it_mono_ms() < end);
}

static int proxy_wait(proxy *p, uint32_t req)
{
    uint64_t end = it_mono_ms() + IT_TIMEOUT_MS;
    while (it_mono_ms() < end) {
        const it_ev *d = it_lib_done(p->rec->l, req);
        if (d) return d->result;
        pump(p, 20);
    }
    return SEALROOM_E_TIMEOUT;
}

static void proxy_wait_ok(proxy *p, uint32_t req, const char *what)
{
    int rc = proxy_wait(p, req);
    IT_CHECK(rc == SEALROOM_OK, "bob: %s: %d (%s): %s", what, rc, sealroom_strerror(rc),
             e2e_done_text(p->rec, req));
}

static proxy *proxy_new(void)
{
    proxy *p = calloc(1, sizeof *p);
    IT_CHECK(p != NULL, "out of memory");
    p->rc = it_raw_connect("bob");
    p->rec = e2e_recorder_new("bob");
    p->xctx = xmpp_ctx_new(NULL, NULL);
    IT_CHECK(p->xctx != NULL, "libstrophe context");
    sealroom_callbacks cb = {sizeof cb, proxy_send, NULL, proxy_event, p};
    IT_OK(sealroom_ctx_new(&p->ctx, it_raw_full(p->rc), it_env_get()->service, &cb));
    sealroom_identity *id = it_user_identity(it_raw_bare(p->rc));
    IT_OK(sealroom_ctx_set_identity(p->ctx, id));
    sealroom_identity_free(id);
    sealroom_ctx_tick(p->ctx, it_mono_ms());
    return p;
}

static void proxy_free(proxy *p)
{
    sealroom_ctx_free(p->ctx);
    e2e_lib_free(p->rec);
    it_raw_free(p->rc);
    xmpp_ctx_free(p->xctx);
    for (size_t i = 0; i < p->nqueue; i++)
        free(p->queue[i]);
    free(p->queue);
    free(p);
}

static void say(e2e_lib *w, const char *text, bool later)
{
    IT_CHECK(nmsgs < 16, "too many messages");
    sent *s = &msgs[nmsgs++];
    s->from = w->l->bare;
    s->later = later;
    snprintf(s->text, sizeof s->text, "%s", text);
    free(it_lib_say(w->l, room, (const unsigned char *)s->text, strlen(s->text), s->origin));
}

typedef struct want_live {
    const char *origin;
} want_live;

static bool has_live(it_lib *l, const void *arg)
{
    return it_lib_live_by_origin(l, room, ((const want_live *)arg)->origin) != NULL;
}

static bool contains(const unsigned char *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; n <= len && i <= len - n; i++)
        if (memcmp(hay + i, needle, n) == 0) return true;
    return false;
}

/* bob must not show any later message, however it reached him. */
static void check_bob_blind(const proxy *p, const char *how)
{
    for (int m = 0; m < nmsgs; m++) {
        if (!msgs[m].later) continue;
        const it_ev *e = e2e_any_msg(p->rec, room, msgs[m].origin);
        IT_CHECK(e == NULL, "%s: removed bob was shown later message %d (%zu bytes%s)", how, m,
                 e ? e->payload_len : 0,
                 e && e->payload_len == strlen(msgs[m].text) &&
                         memcmp(e->payload, msgs[m].text, e->payload_len) == 0
                     ? ", the plaintext"
                     : "");
        for (size_t i = 0; i < p->rec->l->nev; i++) {
            const it_ev *x = &p->rec->l->ev[i];
            IT_CHECK(!(x->payload && contains(x->payload, x->payload_len, msgs[m].text)),
                     "%s: an event of bob carries the plaintext of later message %d", how, m);
        }
    }
}

static size_t count_rejected(const proxy *p)
{
    size_t n = 0;
    for (int m = 0; m < nmsgs; m++)
        n += msgs[m].later && e2e_rejected(p->rec, room, msgs[m].origin) != NULL;
    return n;
}

/* Live injection: every later archived row as the room would send it. */
static void inject_live(proxy *p)
{
    PGresult *res = archive_rows(p);
    int fed = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *origin = PQgetvalue(res, i, 3);
        bool later = false;
        for (int m = 0; m < nmsgs; m++)
            later |= msgs[m].later && strcmp(msgs[m].origin, origin) == 0;
        if (!later) continue;
        char seq[24];
        snprintf(seq, sizeof seq, "%lld", e2e_pg_int8(res, i, 0));
        char *sealed = b64_of(res, i, 4);
        char *m = room_message(PQgetvalue(res, i, 2), PQgetvalue(res, i, 1), origin, sealed, seq,
                               bob_full(p));
        feed(p, m);
        free(m);
        free(sealed);
        fed++;
    }
    PQclear(res);
    IT_CHECK(fed > 0, "no later message rows to hand bob");
    it_log("handed bob %d later messages as live groupchat stanzas", fed);
}

/* --- the e2e core directly ---------------------------------------------- */

typedef struct later_row {
    char sender[256];
    char origin[72];
    unsigned char *payload;
    size_t len;
    unsigned char header[32];
    uint64_t epoch;
    const char *text;
} later_row;

static size_t load_later(const proxy *p, later_row *rows, size_t max)
{
    PGresult *res = archive_rows(p);
    size_t n = 0;
    char rid[24];
    snprintf(rid, sizeof rid, "%lld", p->room_id);
    for (int i = 0; i < PQntuples(res) && n < max; i++) {
        const char *origin = PQgetvalue(res, i, 3);
        const sent *s = NULL;
        for (int m = 0; m < nmsgs; m++)
            if (msgs[m].later && strcmp(msgs[m].origin, origin) == 0) s = &msgs[m];
        if (!s) continue;
        later_row *r = &rows[n++];
        snprintf(r->sender, sizeof r->sender, "%s", PQgetvalue(res, i, 1));
        snprintf(r->origin, sizeof r->origin, "%s", origin);
        r->payload = e2e_pg_bytea(res, i, 4, &r->len);
        r->text = s->text;
        IT_CHECK(r->payload && r->len >= SR_E2E_MSG_OVERHEAD && r->payload[0] == 1,
                 "stored payload of %s is not an e2e v1 message", origin);
        const char *prm[2] = {rid, (const char *)(r->payload + 1)};
        int lens[2] = {0, SR_E2E_DATAKEY_ID_BYTES};
        PGresult *dk = e2e_pg_exec_bin(
            "SELECT header, epoch FROM datakeys WHERE room_id = $1 AND dkid = $2", 2, prm, lens,
            true);
        IT_CHECK(PQntuples(dk) == 1, "no stored header for the data key of %s", origin);
        size_t hl = 0;
        unsigned char *h = e2e_pg_bytea(dk, 0, 0, &hl);
        IT_CHECK(h && hl == 32, "header size %zu", hl);
        memcpy(r->header, h, 32);
        free(h);
        r->epoch = (uint64_t)e2e_pg_int8(dk, 0, 1);
        PQclear(dk);
    }
    PQclear(res);
    return n;
}

/* Try to open a stored message with data key pt; OK only on success. */
static int try_open(const later_row *r, const unsigned char pt[32], char *plain, size_t cap)
{
    sr_e2e_sealed_view v;
    int rc = sr_e2e_message_parse(&v, r->payload, r->len);
    IT_CHECK(rc == SR_E2E_OK, "stored payload of %s does not parse: %s", r->origin,
             sr_e2e_strerror(rc));
    unsigned char pk[32], sk[64];
    it_user_keys(r->sender, pk, sk);
    sodium_memzero(sk, sizeof sk);
    size_t plen = 0;
    IT_CHECK(v.ct_len - SR_E2E_TAG_BYTES < cap, "message too long");
    rc = sr_e2e_message_open((unsigned char *)plain, cap, &plen, &v, room, r->sender, r->origin,
                             pk, pt);
    if (rc == SR_E2E_OK) plain[plen] = 0;
    return rc;
}

static void crypto_checks(proxy *p, e2e_lib *alice, e2e_lib *carol, uint64_t removal_epoch)
{
    e2e_secrets bob = {0}, others = {0};
    IT_CHECK(e2e_secrets_collect(&bob, p->ctx, "bob") > 0, "the hook reported nothing for bob");
    e2e_secrets_collect(&others, e2e_ctx(alice), "alice");
    e2e_secrets_collect(&others, e2e_ctx(carol), "carol");
    IT_CHECK(e2e_secrets_count(&bob, "bob", "epoch.secret", room) >= 1,
             "bob holds no epoch secret of the room at all: the check below would prove nothing");

    for (size_t i = 0; i < bob.n; i++) {
        const e2e_secret *s = &bob.v[i];
        IT_CHECK(!(strcmp(s->room, room) == 0 && strncmp(s->what, "epoch.", 6) == 0 &&
                   s->epoch >= removal_epoch),
                 "removed bob holds %s of epoch %llu (he was removed at epoch %llu)", s->what,
                 (unsigned long long)s->epoch, (unsigned long long)removal_epoch);
        for (size_t j = 0; j < others.n; j++) {
            const e2e_secret *o = &others.v[j];
            bool later_secret = strcmp(o->room, room) == 0 && o->epoch >= removal_epoch;
            IT_CHECK(!(later_secret && o->len == s->len &&
                       sodium_memcmp(o->bytes, s->bytes, s->len) == 0),
                     "bob's %s equals %s's %s of epoch %llu", s->what, o->owner, o->what,
                     (unsigned long long)o->epoch);
        }
    }
    IT_CHECK(e2e_secrets_find(&others, "alice", "epoch.k", room, removal_epoch) != NULL,
             "alice holds no epoch.k of epoch %llu: the control below is impossible",
             (unsigned long long)removal_epoch);

    later_row rows[16];
    size_t n = load_later(p, rows, 16);
    IT_CHECK(n > 0, "no later rows");
    size_t tries = 0;
    for (size_t r = 0; r < n; r++) {
        later_row *row = &rows[r];
        IT_CHECK(row->epoch >= removal_epoch, "later message %s uses a data key of epoch %llu",
                 row->origin, (unsigned long long)row->epoch);
        char plain[256];
        /* Control: alice's epoch key unwraps the header and opens it. */
        const e2e_secret *ka = e2e_secrets_find(&others, "alice", "epoch.k", room, row->epoch);
        IT_CHECK(ka != NULL, "alice holds no epoch.k of epoch %llu", (unsigned long long)row->epoch);
        unsigned char pt[32];
        IT_CHECK(sr_e2e_header_unwrap(pt, ka->bytes, row->header) == SR_E2E_OK, "unwrap");
        int rc = try_open(row, pt, plain, sizeof plain);
        IT_CHECK(rc == SR_E2E_OK && strcmp(plain, row->text) == 0,
                 "control: alice's key does not open later message %s (%s)", row->origin,
                 sr_e2e_strerror(rc));
        /* bob: every scalar he holds as a would-be k_e, every 32-byte secret
         * as a would-be data key. */
        for (size_t i = 0; i < bob.n; i++) {
            const e2e_secret *s = &bob.v[i];
            if (s->len != 32) continue;
            if (sr_e2e_scalar_check(s->bytes) == SR_E2E_OK &&
                sr_e2e_header_unwrap(pt, s->bytes, row->header) == SR_E2E_OK) {
                rc = try_open(row, pt, plain, sizeof plain);
                IT_CHECK(rc != SR_E2E_OK, "bob's %s (epoch %llu) unwraps and opens later "
                                          "message %s",
                         s->what, (unsigned long long)s->epoch, row->origin);
                IT_CHECK(rc == SR_E2E_ERR_DECRYPT,
                         "bob's key fails on %s with %s, expected a decryption failure (the "
                         "signature is genuine)",
                         row->origin, sr_e2e_strerror(rc));
                tries++;
            }
            if (sr_e2e_point_check(s->bytes) == SR_E2E_OK) {
                rc = try_open(row, s->bytes, plain, sizeof plain);
                IT_CHECK(rc != SR_E2E_OK, "bob's %s opens later message %s directly", s->what,
                         row->origin);
                tries++;
            }
        }
        sodium_memzero(pt, sizeof pt);
        free(row->payload);
    }
    IT_CHECK(tries > 0, "bob had no key to try");
    it_log("core check: %zu attempts with bob's %zu secrets on %zu later messages all failed",
           tries, bob.n, n);
    e2e_secrets_free(&bob);
    e2e_secrets_free(&others);
}

int main(void)
{
    it_init("it_e2e_removal");
    e2e_lib *alice = e2e_connect("alice", true), *carol = e2e_connect("carol", true);
    it_lib_register(alice->l);
    it_lib_register(carol->l);
    proxy *p = proxy_new();
    uint32_t req = 0;
    IT_OK(sealroom_identity_register(p->ctx, &req));
    proxy_wait_ok(p, req, "identity registration");

    it_new_room(room, sizeof room, "e2eremoval");
    it_log("room %s", room);
    it_lib_create(alice->l, room);
    it_lib_add(alice->l, room, "bob", SEALROOM_ROLE_MEMBER);
    it_lib_add(alice->l, room, "carol", SEALROOM_ROLE_MEMBER);
    p->room_id = e2e_room_id(room);
    it_lib_join(alice->l, room, "alice");
    it_lib_join(carol->l, room, "carol");
    IT_OK(sealroom_room_join(p->ctx, &req, room, "bob"));
    proxy_wait_ok(p, req, "join");

    /* Before the removal: bob reads through the proxy (the control). */
    say(alice, "before: alice opens the meeting", false);
    say(carol, "before: carol brings the agenda", false);
    IT_OK(sealroom_room_send(p->ctx, &req, msgs[nmsgs].origin, sizeof msgs[nmsgs].origin, room,
                             (const unsigned char *)"before: bob says hello", 22));
    msgs[nmsgs].from = it_raw_bare(p->rc);
    snprintf(msgs[nmsgs].text, sizeof msgs[nmsgs].text, "before: bob says hello");
    nmsgs++;
    proxy_wait_ok(p, req, "send");
    for (int m = 0; m < 2; m++) {
        uint64_t end = it_mono_ms() + IT_TIMEOUT_MS;
        while (!it_lib_live_by_origin(p->rec->l, room, msgs[m].origin) && it_mono_ms() < end)
            pump(p, 20);
        const it_ev *e = it_lib_live_by_origin(p->rec->l, room, msgs[m].origin);
        IT_CHECK(e && e->payload_len == strlen(msgs[m].text) &&
                     memcmp(e->payload, msgs[m].text, e->payload_len) == 0,
                 "control: bob did not read message %d before his removal", m);
    }
    want_live wl = {msgs[2].origin};
    IT_CHECK(it_lib_until(alice->l, has_live, &wl, IT_TIMEOUT_MS), "alice did not get bob's message");
    uint64_t bob_epoch = 0;
    IT_CHECK(sealroom_room_epoch(p->ctx, &bob_epoch, room) == SEALROOM_OK,
             "bob holds no epoch of the room while a member");

    /* The removal: a new epoch bob is not sealed. */
    uint64_t before = e2e_epoch(alice, room);
    IT_OK(sealroom_room_remove_member(e2e_ctx(alice), &req, room, it_raw_bare(p->rc)));
    it_lib_wait_ok(alice->l, req, "removing bob");
    p->malicious = true;
    uint64_t removal_epoch = e2e_epoch(alice, room);
    IT_CHECK(removal_epoch == before + 1, "removal moved the room from epoch %llu to %llu",
             (unsigned long long)before, (unsigned long long)removal_epoch);
    it_log("bob removed: epoch %llu -> %llu", (unsigned long long)before,
           (unsigned long long)removal_epoch);
    uint64_t end = it_mono_ms() + IT_TIMEOUT_MS;
    while (e2e_find(p->rec, SEALROOM_EVENT_REMOVED, room, 0) < 0 && it_mono_ms() < end)
        pump(p, 20);
    IT_CHECK(e2e_find(p->rec, SEALROOM_EVENT_REMOVED, room, 0) >= 0,
             "bob's client was not told of its removal");

    say(alice, "later: alice reveals the secret plan", true);
    say(carol, "later: carol agrees to the secret plan", true);
    say(alice, "later: alice sets the date without bob", true);
    for (int m = 3; m < nmsgs; m++) {
        e2e_lib *reader = strcmp(msgs[m].from, alice->l->bare) == 0 ? carol : alice;
        want_live w = {msgs[m].origin};
        IT_CHECK(it_lib_until(reader->l, has_live, &w, IT_TIMEOUT_MS),
                 "%s did not get later message %d", reader->l->user, m);
        const it_ev *e = it_lib_live_by_origin(reader->l, room, msgs[m].origin);
        IT_CHECK(e->payload_len == strlen(msgs[m].text) &&
                     memcmp(e->payload, msgs[m].text, e->payload_len) == 0,
                 "%s decrypted later message %d wrongly", reader->l->user, m);
    }

    /* 1: whatever the real service sends bob. */
    pump(p, 1000);
    check_bob_blind(p, "from the service");
    /* 2: the later messages as live stanzas, and the keys bob then asks for. */
    inject_live(p);
    pump(p, 3000);
    check_bob_blind(p, "live stanzas from a malicious service");
    /* 3: the whole archive as history results. */
    int hrc = sealroom_room_history(p->ctx, &req, room, NULL, 0);
    if (hrc == SEALROOM_OK) {
        int rc = proxy_wait(p, req);
        it_log("bob's history request (answered by the malicious service): %d (%s) %s", rc,
               sealroom_strerror(rc), e2e_done_text(p->rec, req));
        IT_CHECK(p->forged_mam == 1, "bob's history query never reached the proxy");
    } else {
        it_log("bob's core refuses a history request after removal: %d (%s)", hrc,
               sealroom_strerror(hrc));
    }
    pump(p, 2000);
    check_bob_blind(p, "archive results from a malicious service");
    size_t rejected = count_rejected(p);
    it_log("bob: %zu of %d later messages reported as MESSAGE_REJECTED, none shown; forged "
           "answers: %u datakeys, %u epoch, %u chain, %u history",
           rejected, nmsgs - 3, p->forged_datakeys, p->forged_epoch, p->forged_chain,
           p->forged_mam);
    for (int m = 0; m < nmsgs; m++) {
        const it_ev *rj = msgs[m].later ? e2e_rejected(p->rec, room, msgs[m].origin) : NULL;
        IT_CHECK(!rj || rj->result != SEALROOM_OK, "MESSAGE_REJECTED without an error code");
    }
    uint64_t now_epoch = 0;
    if (sealroom_room_epoch(p->ctx, &now_epoch, room) == SEALROOM_OK)
        IT_CHECK(now_epoch < removal_epoch, "bob's core claims epoch %llu after his removal at %llu",
                 (unsigned long long)now_epoch, (unsigned long long)removal_epoch);

    crypto_checks(p, alice, carol, removal_epoch);

    proxy_free(p);
    e2e_lib_free(alice);
    e2e_lib_free(carol);
    it_log("passed");
    return 0;
}
