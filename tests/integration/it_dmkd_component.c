/* Multi-cast key distribution (urn:xmpp:sealroom:keys:0, notes/dmkd-wire.md),
 * the component's side over raw stanzas. Three members present are played
 * by this program with the library's e2e core (round messages and their
 * signatures, the derivation of S_e, KC_e, envelopes); a fourth is added
 * while away, and a second session of a member and an outsider send what
 * they may not. Each member checks what sealroomd sends it as a client
 * would (the run follows its verified chain, the neighbours' signatures,
 * the representative, the absent members it is asked to seal for), and the
 * test checks across members what no single one can see: the ring order,
 * the representative rule (the first member present by JID holding the
 * previous epoch), the session id over the announced ring.
 *
 * Scenarios, in one room whose first epoch its creator made alone:
 *   1-2  a run asked for with <rekey/>, with every refusal on the way
 *        (each changes nothing), committed: the epoch row, one envelope per
 *        member sealed by itself, no run rows left;
 *   3    a member revealing a k that does not open its commitment is
 *        dropped; a new run without it completes and seals to it;
 *   4    T's that do not cancel, then (in the retry) one member confirming
 *        another KC_e: key-mismatch both times, no epoch;
 *   5    the next retry is aborted by a participant: aborted, no epoch;
 *   6    in the next retry a member never answers round 1: dropped at the
 *        deadline, the run restarts without it and seals to it;
 *   7    a member added while away, during a run: the run fails
 *        (roster-changed); the next has a participant seal to the new
 *        member, whose envelope opens to the epoch;
 *   8    a drop that leaves one member present: it is nudged, makes the
 *        epoch alone, and that epoch ends the drop;
 *   9    a member with two sessions present: the stalled one is dropped,
 *        the other takes part in the next run.
 * The dev stack's timers (dmkd.coalesce_ms 300, round_timeout_ms 3000,
 * retry_ms 2000) keep the whole under half a minute. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <sodium.h>

#include "common.h"
#include "e2e/dmkd.h"
#include "e2e/envelope.h"
#include "e2e/epoch.h"
#include "e2e/identity.h"

#define NS_KEYS "urn:xmpp:sealroom:keys:0"
#define MAX_RING 3
#define MAX_SEALS 4
/* A round deadline (3 s) or a retry (2 s) of the dev stack, with room for a
 * loaded machine. */
#define WAIT_RUN_MS 10000u
/* How long a member that must get nothing listens. */
#define QUIET_MS 700u

/* A neighbour's signed round-1 values as round 2 announces them. */
typedef struct peer {
    char jid[256];
    unsigned char R[32], c[32], sig[64];
} peer;

/* A member present, played over a raw client, and its state in one run. */
typedef struct member {
    const char *user;
    char bare[256];
    it_raw *rc;
    sr_e2e_identity id;
    char run_b64[64];
    unsigned char run[SR_E2E_DMKD_RUN_ID_BYTES], rh[32];
    uint64_t epoch, rv;
    sr_e2e_dmkd_ctx ctx;
    sr_e2e_dmkd_member m;
    unsigned char sig1[64];
    size_t n, pos;
    unsigned char sid[32];
    peer left, right, rep;
    unsigned char T[32], second[32], sig2[64];
    unsigned char secret[32], kc[32];
    size_t nseal;
    char seal[MAX_SEALS][256];
    unsigned char seal_box[MAX_SEALS][32];
} member;

static it_room room;
static member alice = {.user = "alice"}, bob = {.user = "bob"}, carol = {.user = "carol"};
static it_raw *dave, *mallory, *alice2;
static char dave_bare[256];
static PGconn *pg;

/* ------------------------------------------------------------ small helpers */

static const char *attr(xmpp_stanza_t *st, const char *name)
{
    const char *v = st ? xmpp_stanza_get_attribute(st, name) : NULL;
    return v ? v : "";
}

static bool b64_exact(unsigned char *out, size_t n, const char *in)
{
    size_t got = 0;
    return in &&
           sodium_base642bin(out, n, in, strlen(in), NULL, &got, NULL,
                             sodium_base64_VARIANT_ORIGINAL) == 0 &&
           got == n;
}

static char *xml_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xml_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *out = malloc((size_t)n + 1);
    IT_CHECK(out != NULL, "out of memory");
    va_start(ap, fmt);
    vsnprintf(out, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return out;
}

/* The e2e identity of a test user (its deterministic keys); caller wipes. */
static void user_identity(const char *bare, sr_e2e_identity *id)
{
    unsigned char pk[32], sk[64];
    it_user_keys(bare, pk, sk);
    int rc = sr_e2e_identity_derive(id, sk);
    sodium_memzero(sk, sizeof sk);
    IT_CHECK(rc == SR_E2E_OK && memcmp(id->sign_pk, pk, 32) == 0, "identity of %s", bare);
}

/* ------------------------------------------------------------- PostgreSQL */

static PGresult *pgq(const char *sql, int n, const char *const *params)
{
    if (!pg || PQstatus(pg) != CONNECTION_OK) {
        if (pg) PQfinish(pg);
        pg = PQconnectdb(it_env_get()->pg);
        IT_CHECK(PQstatus(pg) == CONNECTION_OK, "PostgreSQL: %s", PQerrorMessage(pg));
    }
    PGresult *res = PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);
    IT_CHECK(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(pg));
    return res;
}

static long pg_count(const char *sql, const char *arg)
{
    const char *p[2] = {room.jid, arg};
    PGresult *res = pgq(sql, arg ? 2 : 1, p);
    long n = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    return n;
}

static long run_rows(void)
{
    return pg_count("SELECT count(*) FROM dmkd_runs d JOIN rooms r USING (room_id) "
                    "WHERE r.name = $1",
                    NULL) +
           pg_count("SELECT count(*) FROM dmkd_parts p JOIN rooms r USING (room_id) "
                    "WHERE r.name = $1",
                    NULL);
}

/* The component submits a run's writes before the headline or answer that
 * follows them, but they may land just after it: give them a moment. */
static void wait_run_rows(long want, const char *what)
{
    uint64_t end = it_mono_ms() + 5000;
    long n;
    while ((n = run_rows()) != want && it_mono_ms() < end)
        it_sleep_ms(50);
    IT_CHECK(n == want, "%s: %ld dmkd_runs/dmkd_parts rows for the room, expected %ld", what, n,
             want);
}

static const char RUN_ROW_SQL[] = "SELECT count(*) FROM dmkd_runs d JOIN rooms r USING (room_id) "
                                  "WHERE r.name = $1 AND d.run_id = decode($2, 'base64')";

/* The run's row is stored. Waited for while the run is alive: a run's
 * INSERT and the DELETE of its failure are separate writes, and under load
 * both can still be queued when the run fails. An absence seen then (before
 * the INSERT commits) says nothing about the DELETE, and the row showing up
 * right after it is no leftover. */
static void wait_run_stored(const char *run_b64)
{
    uint64_t end = it_mono_ms() + 5000;
    long n;
    while ((n = pg_count(RUN_ROW_SQL, run_b64)) != 1 && it_mono_ms() < end)
        it_sleep_ms(20);
    IT_CHECK(n == 1, "run %s: %ld dmkd_runs rows, expected 1", run_b64, n);
}

/* A failed run's row (and with it its ring) goes; the next run may already
 * have its own. The row was stored (start_run), so once gone it stays gone. */
static void wait_run_gone(const char *run_b64)
{
    uint64_t end = it_mono_ms() + 5000;
    long n;
    while ((n = pg_count(RUN_ROW_SQL, run_b64)) != 0 && it_mono_ms() < end)
        it_sleep_ms(50);
    IT_CHECK(n == 0, "the rows of the failed run %s are still stored", run_b64);
}

static bool holds_epoch(const char *bare, uint64_t epoch)
{
    char e[24];
    snprintf(e, sizeof e, "%" PRIu64, epoch);
    const char *p[3] = {room.jid, bare, e};
    PGresult *res = pgq("SELECT count(*) FROM envelopes v JOIN rooms r USING (room_id) "
                        "WHERE r.name = $1 AND v.recipient = $2 AND v.epoch = $3",
                        3, p);
    bool has = atol(PQgetvalue(res, 0, 0)) > 0;
    PQclear(res);
    return has;
}

/* Has bare's round 1 been stored for the room's current run? */
static bool round1_stored(const char *bare)
{
    return pg_count("SELECT count(*) FROM dmkd_parts p JOIN rooms r USING (room_id) "
                    "WHERE r.name = $1 AND p.jid = $2 AND p.r_point IS NOT NULL",
                    bare) > 0;
}

static void wait_round1_stored(const char *bare)
{
    uint64_t end = it_mono_ms() + 5000;
    while (!round1_stored(bare) && it_mono_ms() < end)
        it_sleep_ms(50);
    IT_CHECK(round1_stored(bare), "the accepted round 1 of %s is not stored", bare);
}

/* ------------------------------------------------------------ stanza level */

typedef struct want {
    const char *ns, *name;
    const char *run;     /* NULL: any */
    const char *not_run; /* NULL: any */
    const char *number;  /* <epoch/>: NULL any */
} want;

static bool match_headline(xmpp_stanza_t *st, const void *arg)
{
    const want *w = arg;
    if (strcmp(xmpp_stanza_get_name(st), "message") != 0 ||
        strcmp(attr(st, "type"), "headline") != 0 || strcmp(attr(st, "from"), room.jid) != 0)
        return false;
    xmpp_stanza_t *c = xmpp_stanza_get_child_by_name_and_ns(st, w->name, w->ns);
    return c && (!w->run || strcmp(attr(c, "run"), w->run) == 0) &&
           (!w->not_run || strcmp(attr(c, "run"), w->not_run) != 0) &&
           (!w->number || strcmp(attr(c, "number"), w->number) == 0);
}

static xmpp_stanza_t *expect_keys(member *m, const want *w, unsigned timeout_ms)
{
    char what[400];
    snprintf(what, sizeof what, "<%s/> headline (run %s) for %s", w->name, w->run ? w->run : "any",
             m->bare);
    xmpp_stanza_t *st = it_raw_expect(m->rc, match_headline, w, timeout_ms, what);
    IT_CHECK(strcmp(attr(st, "to"), it_raw_full(m->rc)) == 0, "%s went to %s", what,
             attr(st, "to"));
    return st;
}

static long epochs_now(void)
{
    return it_pg_count("epochs", room.jid);
}

/* An IQ from rc that must be refused as given and change nothing. */
static void refused(it_raw *rc, const char *what, const char *type, const char *xml,
                    const char *etype, const char *cond, const char *app)
{
    long epochs = epochs_now(), envelopes = it_pg_count("envelopes", room.jid);
    xmpp_stanza_t *st = it_raw_iq(rc, type, room.jid, xml);
    it_check_error(st, etype, cond, app, what);
    xmpp_stanza_release(st);
    IT_CHECK(epochs_now() == epochs && it_pg_count("envelopes", room.jid) == envelopes,
             "%s changed the room's epochs or envelopes", what);
}

static void accepted(member *m, const char *xml, const char *what)
{
    char w[400];
    snprintf(w, sizeof w, "%s by %s", what, m->bare);
    xmpp_stanza_release(it_raw_iq_ok(m->rc, "set", room.jid, xml, w));
}

/* <name run=.. a=.. b=.. sig=../> from raw base64 strings. */
static char *round_xml(const char *name, const char *run, const char *an, const char *a,
                       const char *bn, const char *b, const char *sig)
{
    return xml_printf("<%s xmlns='%s' run='%s' %s='%s' %s='%s' sig='%s'/>", name, NS_KEYS, run, an,
                      a, bn, b, sig);
}

static char *round_bytes(const char *name, const char *run, const char *an, const unsigned char *a,
                         const char *bn, const unsigned char *b, const unsigned char *sig)
{
    char *sa = it_b64(a, 32), *sb = it_b64(b, 32), *ss = it_b64(sig, 64);
    char *out = round_xml(name, run, an, sa, bn, sb, ss);
    free(sa);
    free(sb);
    free(ss);
    return out;
}

static char *round1_xml(const member *m)
{
    return round_bytes("round1", m->run_b64, "R", m->m.R, "c", m->m.c, m->sig1);
}

static char *round2_xml(const member *m)
{
    return round_bytes("round2", m->run_b64, "T", m->T, "second", m->second, m->sig2);
}

static void rekey(member *m, const char *mode)
{
    char xml[100];
    snprintf(xml, sizeof xml, "<rekey xmlns='%s'/>", NS_KEYS);
    xmpp_stanza_t *st = it_raw_iq_ok(m->rc, "set", room.jid, xml, "rekey request");
    xmpp_stanza_t *k = xmpp_stanza_get_child_by_name_and_ns(st, "rekey", NS_KEYS);
    char *x = it_stanza_xml(st);
    IT_CHECK(k && strcmp(attr(k, "mode"), mode) == 0, "rekey by %s should answer mode='%s': %s",
             m->bare, mode, x);
    free(x);
    xmpp_stanza_release(st);
}

/* ------------------------------------------------------- the member's side */

static const unsigned char *roster_key(const char *bare)
{
    const sr_member *sm = sr_roster_find(&room.state, bare);
    return sm ? sm->key : NULL;
}

/* Round 1 headline: it must follow the member's verified chain (the test's
 * room state) for the next epoch; compute and sign the member's values. */
static void round1_take(member *m)
{
    char prev[64];
    snprintf(prev, sizeof prev, "%s", m->run_b64);
    want w = {NS_KEYS, "round1", NULL, *prev ? prev : NULL, NULL};
    xmpp_stanza_t *st = expect_keys(m, &w, WAIT_RUN_MS);
    xmpp_stanza_t *r1 = xmpp_stanza_get_child_by_name_and_ns(st, "round1", NS_KEYS);
    char *x = it_stanza_xml(st);
    snprintf(m->run_b64, sizeof m->run_b64, "%s", attr(r1, "run"));
    m->epoch = strtoull(attr(r1, "epoch"), NULL, 10);
    m->rv = strtoull(attr(r1, "roster-version"), NULL, 10);
    IT_CHECK(b64_exact(m->run, sizeof m->run, attr(r1, "run")) &&
                 b64_exact(m->rh, sizeof m->rh, attr(r1, "roster-hash")),
             "round 1 attributes: %s", x);
    IT_CHECK(m->epoch == room.epoch + 1 && m->rv == room.state.version &&
                 memcmp(m->rh, room.state.head, 32) == 0 && roster_key(m->bare),
             "round 1 for %s does not follow its verified chain (epoch %" PRIu64
             ", version %" PRIu64 "): %s",
             m->bare, room.epoch + 1, room.state.version, x);
    free(x);
    xmpp_stanza_release(st);
    m->ctx = (sr_e2e_dmkd_ctx){room.jid, m->epoch, m->rh, m->run};
    sr_e2e_dmkd_member_wipe(&m->m);
    IT_CHECK(sr_e2e_dmkd_round1(&m->m, &m->ctx, m->bare, m->id.dmkd_a, m->id.dmkd_b, NULL, NULL) ==
                     SR_E2E_OK &&
                 sr_e2e_dmkd_round1_sign(m->sig1, &m->ctx, m->bare, m->m.R, m->m.c,
                                         m->id.sign_sk) == SR_E2E_OK,
             "round 1 of %s", m->bare);
    m->n = m->pos = m->nseal = 0;
}

static void peer_take(const member *m, xmpp_stanza_t *r2, const char *name, peer *p, const char *x)
{
    xmpp_stanza_t *e = xmpp_stanza_get_child_by_name(r2, name);
    IT_CHECK(e && b64_exact(p->R, 32, attr(e, "R")) && b64_exact(p->c, 32, attr(e, "c")) &&
                 b64_exact(p->sig, 64, attr(e, "sig")),
             "round 2 for %s: <%s/> malformed: %s", m->bare, name, x);
    snprintf(p->jid, sizeof p->jid, "%s", attr(e, "jid"));
    const unsigned char *pk = roster_key(p->jid);
    IT_CHECK(pk != NULL, "round 2 for %s: <%s/> names %s, not a member at version %" PRIu64 ": %s",
             m->bare, name, p->jid, m->rv, x);
    int rc = sr_e2e_dmkd_round1_verify(p->sig, &m->ctx, p->jid, p->R, p->c, pk);
    IT_CHECK(rc == SR_E2E_OK, "round 2 for %s: %s's signed round 1 does not verify (%d): %s",
             m->bare, p->jid, rc, x);
}

/* Round 2 headline: the member's own checks, then its T and second. */
static void round2_take(member *m)
{
    want w = {NS_KEYS, "round2", m->run_b64, NULL, NULL};
    xmpp_stanza_t *st = expect_keys(m, &w, WAIT_RUN_MS);
    xmpp_stanza_t *r2 = xmpp_stanza_get_child_by_name_and_ns(st, "round2", NS_KEYS);
    char *x = it_stanza_xml(st);
    m->n = strtoul(attr(r2, "n"), NULL, 10);
    m->pos = strtoul(attr(r2, "position"), NULL, 10);
    IT_CHECK(strtoull(attr(r2, "epoch"), NULL, 10) == m->epoch &&
                 b64_exact(m->sid, 32, attr(r2, "sid")) && m->n >= 2 && m->pos >= 1 &&
                 m->pos <= m->n,
             "round 2 for %s: %s", m->bare, x);
    peer_take(m, r2, "left", &m->left, x);
    peer_take(m, r2, "right", &m->right, x);
    peer_take(m, r2, "representative", &m->rep, x);
    IT_CHECK(strcmp(m->left.jid, m->bare) != 0 && strcmp(m->right.jid, m->bare) != 0 &&
                 (strcmp(m->rep.jid, m->bare) == 0) == (m->pos == 1) &&
                 (m->n != 2 || strcmp(m->left.jid, m->right.jid) == 0),
             "round 2 for %s: neighbours or representative inconsistent: %s", m->bare, x);
    free(x);
    xmpp_stanza_release(st);
    IT_CHECK(sr_e2e_dmkd_round2(&m->m, m->T, m->second, m->sid, m->left.R, m->right.R,
                                m->pos == 1) == SR_E2E_OK &&
                 sr_e2e_dmkd_round2_sign(m->sig2, m->sid, m->bare, m->T, m->second,
                                         m->id.sign_sk) == SR_E2E_OK,
             "round 2 of %s", m->bare);
}

static bool peer_is(const peer *p, const member *m)
{
    return strcmp(p->jid, m->bare) == 0 && memcmp(p->R, m->m.R, 32) == 0 &&
           memcmp(p->c, m->m.c, 32) == 0 && memcmp(p->sig, m->sig1, 64) == 0;
}

/* Across the members: the positions form the ring, the representative is
 * the first participant by JID that holds the previous epoch, the rest are
 * in JID order, every member got the sid over that ring, and each got its
 * real neighbours' values. */
static void check_ring(member **p, size_t np)
{
    member *ring[MAX_RING] = {0};
    for (size_t i = 0; i < np; i++) {
        IT_CHECK(p[i]->n == np && p[i]->pos >= 1 && p[i]->pos <= np && !ring[p[i]->pos - 1],
                 "%s got n=%zu position=%zu in a ring of %zu", p[i]->bare, p[i]->n, p[i]->pos, np);
        ring[p[i]->pos - 1] = p[i];
    }
    IT_CHECK(holds_epoch(ring[0]->bare, room.epoch),
             "the representative %s does not hold epoch %" PRIu64, ring[0]->bare, room.epoch);
    for (size_t i = 0; i < np; i++)
        IT_CHECK(!holds_epoch(p[i]->bare, room.epoch) || strcmp(ring[0]->bare, p[i]->bare) <= 0,
                 "representative %s, but %s sorts first and holds epoch %" PRIu64, ring[0]->bare,
                 p[i]->bare, room.epoch);
    for (size_t i = 2; i < np; i++)
        IT_CHECK(strcmp(ring[i - 1]->bare, ring[i]->bare) < 0, "ring not in JID order: %s, %s",
                 ring[i - 1]->bare, ring[i]->bare);
    const char *jids[MAX_RING];
    unsigned char c[MAX_RING][32], R[MAX_RING][32], sid[32];
    for (size_t i = 0; i < np; i++) {
        jids[i] = ring[i]->bare;
        memcpy(c[i], ring[i]->m.c, 32);
        memcpy(R[i], ring[i]->m.R, 32);
    }
    IT_CHECK(sr_e2e_dmkd_sid(sid, &ring[0]->ctx, np, jids, (const unsigned char(*)[32])c,
                             (const unsigned char(*)[32])R) == SR_E2E_OK,
             "sid over the ring");
    for (size_t i = 0; i < np; i++) {
        IT_CHECK(memcmp(ring[i]->sid, sid, 32) == 0,
                 "%s got a sid that is not the one over the announced ring", ring[i]->bare);
        IT_CHECK(peer_is(&ring[i]->left, ring[(i + np - 1) % np]) &&
                     peer_is(&ring[i]->right, ring[(i + 1) % np]) &&
                     peer_is(&ring[i]->rep, ring[0]),
                 "%s (position %zu) got neighbours or representative other than the ring's",
                 ring[i]->bare, i + 1);
    }
}

/* Round 3 headline: the absent members to seal for, checked as fetched
 * bundles are; derive S_e and KC_e. */
static void round3_take(member *m)
{
    want w = {NS_KEYS, "round3", m->run_b64, NULL, NULL};
    xmpp_stanza_t *st = expect_keys(m, &w, WAIT_RUN_MS);
    xmpp_stanza_t *r3 = xmpp_stanza_get_child_by_name_and_ns(st, "round3", NS_KEYS);
    char *x = it_stanza_xml(st);
    unsigned char kp[32], tpi[32], tp[32];
    IT_CHECK(strtoull(attr(r3, "epoch"), NULL, 10) == m->epoch &&
                 b64_exact(kp, 32, attr(r3, "k-prime")) &&
                 b64_exact(tpi, 32, attr(r3, "t-prime-i")) &&
                 b64_exact(tp, 32, attr(r3, "t-prime")),
             "round 3 for %s: %s", m->bare, x);
    m->nseal = 0;
    for (xmpp_stanza_t *e = xmpp_stanza_get_children(r3); e; e = xmpp_stanza_get_next(e)) {
        if (!xmpp_stanza_is_tag(e)) continue;
        IT_CHECK(strcmp(xmpp_stanza_get_name(e), "seal") == 0 && m->nseal < MAX_SEALS,
                 "round 3 for %s: unexpected child: %s", m->bare, x);
        const char *jid = attr(e, "jid");
        unsigned char key[32], box[32], sig[64], pinned[32];
        const unsigned char *rk = roster_key(jid);
        IT_CHECK(rk && b64_exact(key, 32, attr(e, "key")) &&
                     b64_exact(box, 32, attr(e, "box-key")) &&
                     b64_exact(sig, 64, attr(e, "bundle-sig")),
                 "round 3 for %s: <seal/> of a non-member or malformed: %s", m->bare, x);
        it_user_box_pk(jid, pinned);
        IT_CHECK(memcmp(key, rk, 32) == 0 &&
                     sr_e2e_bundle_verify(sig, jid, key, box) == SR_E2E_OK &&
                     memcmp(box, pinned, 32) == 0,
                 "round 3 for %s: the bundle of %s does not check: %s", m->bare, jid, x);
        snprintf(m->seal[m->nseal], sizeof m->seal[0], "%s", jid);
        memcpy(m->seal_box[m->nseal], box, 32);
        m->nseal++;
    }
    int rc =
        sr_e2e_dmkd_derive(m->secret, &m->m, m->sid, &m->ctx, m->rep.jid, m->rep.c, kp, tpi, tp);
    IT_CHECK(rc == SR_E2E_OK, "%s cannot derive S_e (%d): %s", m->bare, rc, x);
    sr_e2e_epoch_keys keys;
    IT_CHECK(sr_e2e_epoch_derive(&keys, m->secret, room.jid, m->epoch, m->rh) == SR_E2E_OK,
             "epoch keys of %s", m->bare);
    memcpy(m->kc, keys.kc, 32);
    sodium_memzero(&keys, sizeof keys);
    free(x);
    xmpp_stanza_release(st);
}

static char *envelope_b64(const member *m, const char *sealer_bare, const unsigned char *sealer_sk,
                          const char *to, const unsigned char box[32])
{
    unsigned char env[SR_E2E_ENVELOPE_BYTES];
    sr_e2e_envelope_ctx ctx = {room.jid, m->epoch, m->rh, sealer_bare, to, box};
    IT_CHECK(sr_e2e_envelope_seal(env, &ctx, m->secret, sealer_sk) == SR_E2E_OK, "envelope for %s",
             to);
    return it_b64(env, sizeof env);
}

typedef struct confirm_opts {
    bool no_envelopes;
    const member *own_sealed_by; /* the own envelope signed by another member */
    const unsigned char *kc;     /* another kc */
} confirm_opts;

static char *confirm_xml(const member *m, const confirm_opts *o)
{
    char *kc = it_b64(o && o->kc ? o->kc : m->kc, 32);
    size_t cap = 512 + (1 + m->nseal) * 600, len = 0;
    char *out = malloc(cap);
    IT_CHECK(out != NULL, "out of memory");
    len += (size_t)snprintf(out, cap, "<confirm xmlns='%s' run='%s' kc='%s'>", NS_KEYS, m->run_b64,
                            kc);
    free(kc);
    if (!o || !o->no_envelopes) {
        const member *s = o && o->own_sealed_by ? o->own_sealed_by : m;
        char *e = envelope_b64(m, s->bare, s->id.sign_sk, m->bare, m->id.box_pk);
        len +=
            (size_t)snprintf(out + len, cap - len, "<envelope to='%s'>%s</envelope>", m->bare, e);
        free(e);
        for (size_t k = 0; k < m->nseal; k++) {
            e = envelope_b64(m, m->bare, m->id.sign_sk, m->seal[k], m->seal_box[k]);
            len += (size_t)snprintf(out + len, cap - len, "<envelope to='%s'>%s</envelope>",
                                    m->seal[k], e);
            free(e);
        }
    }
    snprintf(out + len, cap - len, "</confirm>");
    return out;
}

static void send_round1(member *m)
{
    char *x = round1_xml(m);
    accepted(m, x, "round 1");
    free(x);
}

static void send_round2(member *m)
{
    char *x = round2_xml(m);
    accepted(m, x, "round 2");
    free(x);
}

static void send_confirm(member *m, const confirm_opts *o)
{
    char *x = confirm_xml(m, o);
    accepted(m, x, "confirmation");
    free(x);
}

static void expect_failed(member *m, const char *run_b64, const char *reason)
{
    want w = {NS_KEYS, "failed", run_b64, NULL, NULL};
    xmpp_stanza_t *st = expect_keys(m, &w, WAIT_RUN_MS);
    xmpp_stanza_t *f = xmpp_stanza_get_child_by_name_and_ns(st, "failed", NS_KEYS);
    char *x = it_stanza_xml(st);
    IT_CHECK(strcmp(attr(f, "reason"), reason) == 0, "%s: expected reason='%s': %s", m->bare,
             reason, x);
    free(x);
    xmpp_stanza_release(st);
}

/* Nothing of another run reaches a session left out of it. */
static void expect_no_round1(it_raw *rc, const char *old_run)
{
    want w = {NS_KEYS, "round1", NULL, old_run, NULL};
    IT_CHECK(!it_raw_seen(rc, match_headline, &w, QUIET_MS),
             "%s was left out of the run but got a round 1", it_raw_full(rc));
}

static bool match_nudge(xmpp_stanza_t *st, const void *arg)
{
    (void)arg;
    return strcmp(xmpp_stanza_get_name(st), "message") == 0 &&
           strcmp(attr(st, "type"), "headline") == 0 && strcmp(attr(st, "from"), room.jid) == 0 &&
           xmpp_stanza_get_child_by_name_and_ns(st, "rekey", IT_NS) != NULL;
}

/* --------------------------------------------------------- whole runs */

static void start_run(member **p, size_t np)
{
    for (size_t i = 0; i < np; i++)
        round1_take(p[i]);
    for (size_t i = 1; i < np; i++)
        IT_CHECK(strcmp(p[i]->run_b64, p[0]->run_b64) == 0, "%s and %s got different runs",
                 p[0]->bare, p[i]->bare);
    it_log("run %s for epoch %" PRIu64 " with %zu present", p[0]->run_b64, p[0]->epoch, np);
    wait_run_stored(p[0]->run_b64);
}

static void rounds_2_and_3(member **p, size_t np, const char *const *absent, size_t na)
{
    for (size_t i = 0; i < np; i++)
        round2_take(p[i]);
    check_ring(p, np);
    for (size_t i = 0; i < np; i++)
        send_round2(p[i]);
    for (size_t i = 0; i < np; i++)
        round3_take(p[i]);
    size_t seals = 0;
    for (size_t i = 0; i < np; i++) {
        IT_CHECK(memcmp(p[i]->kc, p[0]->kc, 32) == 0 &&
                     sodium_memcmp(p[i]->secret, p[0]->secret, 32) == 0,
                 "%s and %s derived different keys", p[0]->bare, p[i]->bare);
        seals += p[i]->nseal;
    }
    /* Every absent member is sealed to by exactly one participant. */
    IT_CHECK(seals == na, "%zu <seal/> children for %zu absent members", seals, na);
    for (size_t a = 0; a < na; a++) {
        size_t found = 0;
        for (size_t i = 0; i < np; i++)
            for (size_t k = 0; k < p[i]->nseal; k++)
                found += strcmp(p[i]->seal[k], absent[a]) == 0;
        IT_CHECK(found == 1, "%s is to be sealed to %zu times", absent[a], found);
    }
}

static member *representative(member **p, size_t np)
{
    for (size_t i = 0; i < np; i++)
        if (p[i]->pos == 1) return p[i];
    it_fail(__FILE__, __LINE__, "representative", "no member at position 1");
}

/* After the epoch headline: the epoch row as the members derived it, one
 * envelope per member present sealed by itself, one per absent member
 * sealed by a participant, each opening to S_e, and no run rows. */
static void check_committed(member **p, size_t np, const char *const *absent, size_t na)
{
    const member *m0 = p[0];
    char e[24];
    snprintf(e, sizeof e, "%" PRIu64, m0->epoch);
    const char *params[2] = {room.jid, e};
    PGresult *res = pgq("SELECT encode(x.kc, 'hex'), x.sealer, x.roster_version, "
                        "encode(x.roster_hash, 'hex') FROM epochs x JOIN rooms r "
                        "USING (room_id) WHERE r.name = $1 AND x.epoch = $2",
                        2, params);
    IT_CHECK(PQntuples(res) == 1, "no epoch %s stored", e);
    unsigned char kc[32], rh[32];
    IT_CHECK(sodium_hex2bin(kc, 32, PQgetvalue(res, 0, 0), 64, NULL, NULL, NULL) == 0 &&
                 sodium_hex2bin(rh, 32, PQgetvalue(res, 0, 3), 64, NULL, NULL, NULL) == 0,
             "epoch row");
    IT_CHECK(memcmp(kc, m0->kc, 32) == 0, "stored kc is not the members' KC_e");
    IT_CHECK(memcmp(rh, m0->rh, 32) == 0 && strtoull(PQgetvalue(res, 0, 2), NULL, 10) == m0->rv,
             "epoch stored at another roster");
    IT_CHECK(strcmp(PQgetvalue(res, 0, 1), representative(p, np)->bare) == 0,
             "epoch sealer %s, not the representative %s", PQgetvalue(res, 0, 1),
             representative(p, np)->bare);
    PQclear(res);

    res = pgq("SELECT v.recipient, v.sealer, encode(v.blob, 'hex') FROM envelopes v JOIN rooms r "
              "USING (room_id) WHERE r.name = $1 AND v.epoch = $2 ORDER BY v.recipient",
              2, params);
    IT_CHECK((size_t)PQntuples(res) == np + na, "%d envelopes of epoch %s, expected %zu",
             PQntuples(res), e, np + na);
    for (int row = 0; row < PQntuples(res); row++) {
        const char *to = PQgetvalue(res, row, 0), *by = PQgetvalue(res, row, 1);
        bool to_present = false, by_present = false, to_absent = false;
        for (size_t i = 0; i < np; i++) {
            to_present |= strcmp(p[i]->bare, to) == 0;
            by_present |= strcmp(p[i]->bare, by) == 0;
        }
        for (size_t a = 0; a < na; a++)
            to_absent |= strcmp(absent[a], to) == 0;
        IT_CHECK(to_present ? strcmp(to, by) == 0 : to_absent && by_present,
                 "envelope for %s sealed by %s", to, by);
        unsigned char blob[SR_E2E_ENVELOPE_BYTES], secret[32];
        IT_CHECK(sodium_hex2bin(blob, sizeof blob, PQgetvalue(res, row, 2),
                                strlen(PQgetvalue(res, row, 2)), NULL, NULL, NULL) == 0,
                 "envelope blob of %s", to);
        sr_e2e_identity rid;
        user_identity(to, &rid);
        sr_e2e_envelope_ctx ctx = {room.jid, m0->epoch, m0->rh, by, to, rid.box_pk};
        int rc1 = sr_e2e_envelope_open(secret, blob, sizeof blob, &ctx, roster_key(by), rid.box_sk);
        int rc2 =
            rc1 == SR_E2E_OK ? sr_e2e_epoch_confirm(kc, secret, room.jid, m0->epoch, m0->rh) : rc1;
        bool same = sodium_memcmp(secret, m0->secret, 32) == 0;
        sodium_memzero(&rid, sizeof rid);
        sodium_memzero(secret, sizeof secret);
        IT_CHECK(rc1 == SR_E2E_OK && rc2 == SR_E2E_OK && same,
                 "%s's envelope (sealed by %s) does not open (%d) or confirm (%d) to S_e", to, by,
                 rc1, rc2);
    }
    PQclear(res);
    IT_CHECK(run_rows() == 0, "run rows left after the commit of epoch %s", e);
    room.epoch = m0->epoch;
    room.epoch_roster_version = m0->rv;
    memcpy(room.epoch_secret, m0->secret, 32);
    memcpy(room.epoch_hash, m0->rh, 32);
}

static void finish_run(member **p, size_t np, const char *const *absent, size_t na)
{
    long epochs = epochs_now();
    for (size_t i = 0; i < np; i++)
        send_confirm(p[i], NULL);
    char num[24], rv[24];
    snprintf(num, sizeof num, "%" PRIu64, p[0]->epoch);
    snprintf(rv, sizeof rv, "%" PRIu64, p[0]->rv);
    for (size_t i = 0; i < np; i++) {
        want w = {IT_NS, "epoch", NULL, NULL, num};
        xmpp_stanza_t *st = expect_keys(p[i], &w, WAIT_RUN_MS);
        xmpp_stanza_t *ep = xmpp_stanza_get_child_by_name_and_ns(st, "epoch", IT_NS);
        IT_CHECK(strcmp(attr(ep, "roster-version"), rv) == 0, "epoch headline at roster %s",
                 attr(ep, "roster-version"));
        xmpp_stanza_release(st);
    }
    IT_CHECK(epochs_now() == epochs + 1, "one epoch more");
    check_committed(p, np, absent, na);
    it_log("epoch %s committed", num);
}

/* An absent member fetches the new epoch as a client does: its envelope,
 * named with the participant that sealed it, opens to S_e and KC_e. */
static void fetch_as(it_raw *rc)
{
    it_room copy;
    it_room_init(&copy, room.jid);
    it_raw_fetch_epoch(rc, &copy);
    IT_CHECK(copy.epoch == room.epoch &&
                 sodium_memcmp(copy.epoch_secret, room.epoch_secret, 32) == 0,
             "%s fetched epoch %" PRIu64 ", not the one agreed", it_raw_bare(rc), copy.epoch);
    it_room_free(&copy);
}

/* A run that must complete as the component starts it. */
static void whole_run(member **p, size_t np, const char *const *absent, size_t na)
{
    start_run(p, np);
    for (size_t i = 0; i < np; i++)
        send_round1(p[i]);
    rounds_2_and_3(p, np, absent, na);
    finish_run(p, np, absent, na);
}

/* -------------------------------------------------------------- scenarios */

static void phase1_refusals(void)
{
    it_log("round 1 refusals");
    char *x;
    unsigned char bad[64], other_run[16], c2[32];
    char *rb;
    /* An outsider, a second session of a participant, another run. */
    x = round1_xml(&bob);
    refused(mallory, "round 1 by a non-member", "set", x, "auth", "forbidden", "not-member");
    refused(bob.rc, "round 1 as an iq get", "get", x, "modify", "bad-request", NULL);
    free(x);
    x = round1_xml(&alice);
    refused(alice2, "round 1 from another session of a participant", "set", x, "cancel",
            "not-acceptable", "unknown-run");
    free(x);
    randombytes_buf(other_run, sizeof other_run);
    rb = it_b64(other_run, sizeof other_run);
    x = round_bytes("round1", rb, "R", bob.m.R, "c", bob.m.c, bob.sig1);
    refused(bob.rc, "round 1 of an unknown run", "set", x, "cancel", "conflict", "unknown-run");
    free(x);
    free(rb);
    x = round_bytes("round1", "AAAA", "R", bob.m.R, "c", bob.m.c, bob.sig1);
    refused(bob.rc, "round 1 with a 3-byte run id", "set", x, "modify", "not-acceptable",
            "bad-round");
    free(x);
    /* Bad values from bob, who takes part. */
    memcpy(bad, bob.sig1, 64);
    bad[10] ^= 0x01;
    x = round_bytes("round1", bob.run_b64, "R", bob.m.R, "c", bob.m.c, bad);
    refused(bob.rc, "round 1 with a bad signature", "set", x, "modify", "not-acceptable",
            "bad-round");
    free(x);
    /* Invalid points, properly signed: only the point check can refuse. */
    for (int k = 0; k < 2; k++) {
        unsigned char R[32], sig[64];
        memset(R, k == 0 ? 0xff : 0x00, sizeof R);
        IT_CHECK(sr_e2e_dmkd_round1_sign(sig, &bob.ctx, bob.bare, R, bob.m.c, bob.id.sign_sk) ==
                     SR_E2E_OK,
                 "signing");
        x = round_bytes("round1", bob.run_b64, "R", R, "c", bob.m.c, sig);
        refused(bob.rc, k == 0 ? "round 1 with R = 32 x 0xff" : "round 1 with R the identity",
                "set", x, "modify", "not-acceptable", "bad-round");
        free(x);
    }
    char *sc = it_b64(bob.m.c, 32), *ss = it_b64(bob.sig1, 64);
    x = round_xml("round1", bob.run_b64, "R", "%%%not-base64%%%", "c", sc, ss);
    refused(bob.rc, "round 1 with R in bad base64", "set", x, "modify", "not-acceptable",
            "bad-round");
    free(x);
    x = xml_printf("<round1 xmlns='%s' run='%s' c='%s' sig='%s'/>", NS_KEYS, bob.run_b64, sc, ss);
    refused(bob.rc, "round 1 without R", "set", x, "modify", "not-acceptable", "bad-round");
    free(x);
    free(sc);
    free(ss);

    /* carol and alice answer; alice again (same: fine; other: refused). */
    send_round1(&carol);
    send_round1(&alice);
    x = round1_xml(&alice);
    accepted(&alice, x, "the same round 1 again");
    free(x);
    randombytes_buf(c2, sizeof c2);
    IT_CHECK(sr_e2e_dmkd_round1_sign(bad, &alice.ctx, alice.bare, alice.m.R, c2,
                                     alice.id.sign_sk) == SR_E2E_OK,
             "signing");
    x = round_bytes("round1", alice.run_b64, "R", alice.m.R, "c", c2, bad);
    refused(alice.rc, "a different round 1 after one was taken", "set", x, "modify",
            "not-acceptable", "bad-round");
    free(x);
    /* Round 2 while round 1 still waits for bob. */
    unsigned char T[32], s2[32];
    randombytes_buf(T, sizeof T);
    randombytes_buf(s2, sizeof s2);
    randombytes_buf(bad, sizeof bad);
    x = round_bytes("round2", alice.run_b64, "T", T, "second", s2, bad);
    refused(alice.rc, "round 2 before round 1 is complete", "set", x, "cancel", "conflict",
            "unknown-run");
    free(x);
    wait_round1_stored(alice.bare);
    wait_round1_stored(carol.bare);
    IT_CHECK(!round1_stored(bob.bare), "a refused round 1 of bob was stored");
}

static void confirm_refusals(void)
{
    it_log("confirmation refusals");
    confirm_opts none = {.no_envelopes = true}, wrong = {.own_sealed_by = &alice};
    char *x = confirm_xml(&bob, &none);
    refused(bob.rc, "confirmation without envelopes", "set", x, "modify", "not-acceptable",
            "bad-envelope");
    free(x);
    x = confirm_xml(&bob, &wrong);
    refused(bob.rc, "confirmation with an envelope signed by another member", "set", x, "modify",
            "not-acceptable", "bad-envelope");
    free(x);
    x = xml_printf("<confirm xmlns='%s' run='%s' kc='AAAA'/>", NS_KEYS, bob.run_b64);
    refused(bob.rc, "confirmation with a 3-byte kc", "set", x, "modify", "not-acceptable",
            "bad-envelope");
    free(x);
    x = confirm_xml(&bob, NULL);
    refused(bob.rc, "confirmation as an iq get", "get", x, "modify", "bad-request", NULL);
    free(x);
}

/* 1 and 2: carol asks; every refusal on the way changes nothing and the run
 * still completes. carol alone holds epoch 1, so she is the representative
 * though alice and bob sort before her. */
static void happy_run(void)
{
    it_log("1-2: a run asked for with <rekey/>, refusals on the way");
    member *p[3] = {&alice, &bob, &carol};
    char xml[100];
    snprintf(xml, sizeof xml, "<rekey xmlns='%s'/>", NS_KEYS);
    refused(mallory, "rekey by a non-member", "set", xml, "auth", "forbidden", "not-member");
    rekey(&carol, "run");
    start_run(p, 3);
    wait_run_rows(4, "the run and its ring of 3");
    phase1_refusals();
    send_round1(&bob);
    for (size_t i = 0; i < 3; i++)
        round2_take(p[i]);
    check_ring(p, 3);
    IT_CHECK(representative(p, 3) == &carol, "carol holds epoch 1 alone but is not position 1");
    /* Round 2 refusals, then an old round 1 answered as before. */
    unsigned char bad[64];
    memcpy(bad, bob.sig2, 64);
    bad[0] ^= 0x80;
    char *x = round_bytes("round2", bob.run_b64, "T", bob.T, "second", bob.second, bad);
    refused(bob.rc, "round 2 with a bad signature", "set", x, "modify", "not-acceptable",
            "bad-round");
    free(x);
    x = round1_xml(&bob);
    accepted(&bob, x, "round 1 resent in round 2");
    free(x);
    for (size_t i = 0; i < 3; i++)
        send_round2(p[i]);
    for (size_t i = 0; i < 3; i++)
        round3_take(p[i]);
    for (size_t i = 0; i < 3; i++)
        IT_CHECK(memcmp(p[i]->kc, carol.kc, 32) == 0 && p[i]->nseal == 0,
                 "%s: another key or something to seal", p[i]->bare);
    confirm_refusals();
    finish_run(p, 3, NULL, 0);
}

/* 3: bob reveals a k that does not open his commitment (properly signed). */
static void dropped_commitment(void)
{
    it_log("3: a k that does not open its commitment");
    member *p[3] = {&alice, &bob, &carol}, *rest[2] = {&alice, &carol};
    rekey(&alice, "run");
    start_run(p, 3);
    for (size_t i = 0; i < 3; i++)
        send_round1(p[i]);
    for (size_t i = 0; i < 3; i++)
        round2_take(p[i]);
    check_ring(p, 3);
    IT_CHECK(bob.pos != 1, "bob is the representative: his k is never revealed");
    randombytes_buf(bob.second, sizeof bob.second);
    IT_CHECK(sr_e2e_dmkd_round2_sign(bob.sig2, bob.sid, bob.bare, bob.T, bob.second,
                                     bob.id.sign_sk) == SR_E2E_OK,
             "signing");
    char old[64];
    snprintf(old, sizeof old, "%s", alice.run_b64);
    for (size_t i = 0; i < 3; i++)
        send_round2(p[i]);
    expect_failed(&alice, old, "member-dropped");
    expect_failed(&carol, old, "member-dropped");
    wait_run_gone(old);
    IT_CHECK(!holds_epoch(alice.bare, room.epoch + 1), "an epoch was stored");
    const char *absent[1] = {bob.bare};
    start_run(rest, 2);
    expect_no_round1(bob.rc, old);
    for (size_t i = 0; i < 2; i++)
        send_round1(rest[i]);
    rounds_2_and_3(rest, 2, absent, 1);
    finish_run(rest, 2, absent, 1);
    fetch_as(bob.rc);
}

/* 4: first T's that do not cancel (bob's, properly signed): nobody can be
 * blamed, so key-mismatch and a retry after dmkd.retry_ms; in the retry
 * bob confirms another KC_e: key-mismatch again. No epoch either time. */
static void key_mismatch(void)
{
    it_log("4: T's that do not cancel, then a member confirming another key");
    member *p[3] = {&alice, &bob, &carol};
    long epochs = epochs_now();
    rekey(&bob, "run");
    start_run(p, 3);
    for (size_t i = 0; i < 3; i++)
        send_round1(p[i]);
    for (size_t i = 0; i < 3; i++)
        round2_take(p[i]);
    check_ring(p, 3);
    randombytes_buf(bob.T, sizeof bob.T);
    IT_CHECK(sr_e2e_dmkd_round2_sign(bob.sig2, bob.sid, bob.bare, bob.T, bob.second,
                                     bob.id.sign_sk) == SR_E2E_OK,
             "signing");
    for (size_t i = 0; i < 3; i++)
        send_round2(p[i]);
    for (size_t i = 0; i < 3; i++)
        expect_failed(p[i], p[i]->run_b64, "key-mismatch");
    wait_run_gone(bob.run_b64);
    IT_CHECK(epochs_now() == epochs, "an epoch was stored from a ring that does not cancel");

    uint64_t t0 = it_mono_ms();
    start_run(p, 3);
    IT_CHECK(it_mono_ms() - t0 >= 1000, "the retry came %" PRIu64 " ms after the failure",
             it_mono_ms() - t0);
    for (size_t i = 0; i < 3; i++)
        send_round1(p[i]);
    rounds_2_and_3(p, 3, NULL, 0);
    unsigned char other[32];
    randombytes_buf(other, sizeof other);
    confirm_opts o = {.kc = other};
    send_confirm(&alice, NULL);
    send_confirm(&bob, &o);
    send_confirm(&carol, NULL);
    for (size_t i = 0; i < 3; i++)
        expect_failed(p[i], p[i]->run_b64, "key-mismatch");
    wait_run_gone(bob.run_b64);
    IT_CHECK(epochs_now() == epochs, "an epoch was stored after a key mismatch");
}

/* 5: the retry after 4, aborted by carol in round 2. */
static void aborted(void)
{
    it_log("5: a participant aborts the retried run");
    member *p[3] = {&alice, &bob, &carol};
    long epochs = epochs_now();
    uint64_t t0 = it_mono_ms();
    start_run(p, 3);
    IT_CHECK(it_mono_ms() - t0 >= 1000, "the retry came %" PRIu64 " ms after the failure",
             it_mono_ms() - t0);
    for (size_t i = 0; i < 3; i++)
        send_round1(p[i]);
    for (size_t i = 0; i < 3; i++)
        round2_take(p[i]);
    check_ring(p, 3);
    send_round2(&alice);
    char *x = xml_printf("<abort xmlns='%s' run='%s' reason='test: the ring looks wrong'/>",
                         NS_KEYS, carol.run_b64);
    refused(mallory, "abort by a non-member", "set", x, "auth", "forbidden", "not-member");
    accepted(&carol, x, "abort");
    free(x);
    for (size_t i = 0; i < 3; i++)
        expect_failed(p[i], p[i]->run_b64, "aborted");
    x = round2_xml(&bob);
    refused(bob.rc, "round 2 of the aborted run", "set", x, "cancel", "conflict", "unknown-run");
    free(x);
    wait_run_gone(bob.run_b64);
    IT_CHECK(epochs_now() == epochs, "an epoch was stored after an abort");
}

/* 6: the next retry; carol never answers round 1. */
static void timeout_drop(void)
{
    it_log("6: a member that never answers round 1");
    member *p[3] = {&alice, &bob, &carol}, *rest[2] = {&alice, &bob};
    start_run(p, 3);
    char old[64];
    snprintf(old, sizeof old, "%s", carol.run_b64);
    send_round1(&alice);
    send_round1(&bob);
    for (size_t i = 0; i < 3; i++)
        expect_failed(p[i], old, "timeout");
    const char *absent[1] = {carol.bare};
    start_run(rest, 2);
    expect_no_round1(carol.rc, old);
    for (size_t i = 0; i < 2; i++)
        send_round1(rest[i]);
    rounds_2_and_3(rest, 2, absent, 1);
    finish_run(rest, 2, absent, 1);
    fetch_as(carol.rc);
}

/* 7: dave, not present, is added during a run alice asked for: the run
 * fails (its roster hash is no longer the head), and the one the change
 * schedules has one participant seal to dave; his envelope opens with his
 * box key to S_e. */
static void offline_member(void)
{
    it_log("7: a member added while away, during a run");
    member *p[3] = {&alice, &bob, &carol};
    rekey(&alice, "run");
    start_run(p, 3);
    char old[64];
    snprintf(old, sizeof old, "%s", alice.run_b64);
    send_round1(&alice);
    it_room_change(carol.rc, &room, SR_OP_ADD, "dave", SR_ROLE_MEMBER);
    for (size_t i = 0; i < 3; i++)
        expect_failed(p[i], old, "roster-changed");
    char *x = round1_xml(&bob);
    refused(bob.rc, "round 1 of the run the roster change ended", "set", x, "cancel", "conflict",
            "unknown-run");
    free(x);
    wait_run_gone(old);
    const char *absent[1] = {dave_bare};
    whole_run(p, 3, absent, 1);
    fetch_as(dave);
}

/* 8: carol leaves; bob never answers the run alice asks for. alice, left
 * alone, is nudged to make the epoch herself; once she has, the series of
 * runs is over and bob is no longer dropped: the next run has both. */
static void alone_after_drop(void)
{
    it_log("8: a drop leaves one participant");
    member *p[2] = {&alice, &bob};
    it_raw_leave(carol.rc, room.jid, "carol");
    rekey(&alice, "run");
    start_run(p, 2);
    char old[64];
    snprintf(old, sizeof old, "%s", alice.run_b64);
    send_round1(&alice);
    expect_failed(&alice, old, "timeout");
    xmpp_stanza_t *st = it_raw_wait(alice.rc, match_nudge, NULL, WAIT_RUN_MS);
    IT_CHECK(st != NULL, "alice, left alone by bob's drop, was not nudged to make the epoch");
    xmpp_stanza_release(st);
    it_raw_epoch(alice.rc, &room);
    it_log("epoch %" PRIu64 " made by alice alone", room.epoch);
    rekey(&alice, "run");
    const char *absent[2] = {carol.bare, dave_bare};
    whole_run(p, 2, absent, 2);
}

/* 9: alice present with two sessions; the one taking part (the first by
 * full JID) never answers. That session is dropped, not alice: the next
 * run takes her other session, and she is no offline member of it. */
static void session_drop(void)
{
    it_log("9: a session is dropped, the member's other session takes part");
    it_raw *main_rc = alice.rc;
    it_raw_join_keys_ok(alice2, room.jid, "alice");
    bool main_first = strcmp(it_raw_full(main_rc), it_raw_full(alice2)) < 0;
    it_raw *stalled = main_first ? main_rc : alice2, *other = main_first ? alice2 : main_rc;
    member *p[2] = {&alice, &bob};
    alice.rc = stalled;
    rekey(&bob, "run");
    start_run(p, 2);
    char old[64];
    snprintf(old, sizeof old, "%s", bob.run_b64);
    send_round1(&bob);
    expect_failed(&bob, old, "timeout");
    alice.rc = other;
    const char *absent[2] = {carol.bare, dave_bare};
    start_run(p, 2);
    expect_no_round1(stalled, old);
    for (size_t i = 0; i < 2; i++)
        send_round1(p[i]);
    rounds_2_and_3(p, 2, absent, 2);
    finish_run(p, 2, absent, 2);
    alice.rc = main_rc;
}

int main(void)
{
    it_init("it_dmkd_component");
    member *all[3] = {&alice, &bob, &carol};
    for (size_t i = 0; i < 3; i++) {
        all[i]->rc = it_raw_connect(all[i]->user);
        it_bare(all[i]->bare, sizeof all[i]->bare, all[i]->user);
        user_identity(all[i]->bare, &all[i]->id);
    }
    dave = it_raw_connect("dave");
    mallory = it_raw_connect("mallory");
    alice2 = it_raw_connect("alice");
    it_bare(dave_bare, sizeof dave_bare, "dave");
    it_raw_register(alice.rc);
    it_raw_register(bob.rc);
    it_raw_register(dave);

    /* carol makes the room and epoch 1 alone, then adds alice and bob. */
    it_room_create(carol.rc, &room, "dmkd");
    it_log("room %s", room.jid);
    it_raw_epoch(carol.rc, &room);
    it_room_change(carol.rc, &room, SR_OP_ADD, "alice", SR_ROLE_MEMBER);
    it_room_change(carol.rc, &room, SR_OP_ADD, "bob", SR_ROLE_MEMBER);
    /* The run those changes schedule (after dmkd.coalesce_ms) finds nobody
     * present and gives up; only then do the members come. */
    it_sleep_ms(1000);
    it_raw_join_keys_ok(carol.rc, room.jid, "carol");
    rekey(&carol, "solo");
    it_raw_join_keys_ok(alice.rc, room.jid, "alice");
    it_raw_join_keys_ok(bob.rc, room.jid, "bob");

    happy_run();
    dropped_commitment();
    key_mismatch();
    aborted();
    timeout_drop();
    offline_member();
    alone_after_drop();
    session_drop();

    for (size_t i = 0; i < 3; i++) {
        sr_e2e_dmkd_member_wipe(&all[i]->m);
        sodium_memzero(all[i]->secret, sizeof all[i]->secret);
        sodium_memzero(&all[i]->id, sizeof all[i]->id);
        it_raw_free(all[i]->rc);
    }
    it_raw_free(dave);
    it_raw_free(mallory);
    it_raw_free(alice2);
    sodium_memzero(room.epoch_secret, sizeof room.epoch_secret);
    it_room_free(&room);
    if (pg) PQfinish(pg);
    it_log("passed");
    return 0;
}
