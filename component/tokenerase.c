/* Erasing a room's re-encryption tokens once they have done their work,
 * and undoing them when they were wrong (xep/sealroom.xml "Erasing
 * tokens"; archive-wire.md). A token is needed only until every header has
 * moved past it, but kept tokens are what lets a wrong one be undone (with
 * their inverses), so they go only after a member's own key has confirmed
 * where the chain leads. When the sweep reports a room with no header
 * behind its epoch c (sweep_take_done), the component takes the check
 * header H_c(a) of the oldest epoch a of the room's chain of tokens into c,
 * re-keys it with Δ(a→c) as it re-keys data headers, and sends it in a
 * <confirm-check/> headline to one present member session; <check-ok/> for
 * c deletes the room's tokens into c and earlier.
 *
 * <check-failed/> for c means a token from a to c does not carry its epoch
 * to the next. The component checks each of them again against the stored
 * check headers; those that the headers do not prove (an epoch without a
 * check header, which is why such a token was stored unverified, or a
 * token or header that changed since) are the ones that can be wrong, and
 * it revokes them: in one transaction it keeps them in archive_undo and
 * deletes them from the chain (SWEEP_SQL_REVOKE_*), then forgets them in
 * the room's cached chain so that the lazy path no longer re-keys through
 * them, and kicks the sweep, which takes every header that went through
 * one of them back to the epoch it left (sweep.h). Tokens the headers
 * prove stay. A revoked step is a gap, as if its token never came, until
 * the sealer of its later epoch sends a token for it again. If every token
 * is proved, the fault is not a token's (a check header, or the member):
 * nothing is undone, and the operators are told.
 *
 * The rooms waiting live in rooms.erasing, keyed by room id, apart from the
 * room cache: a room may be evicted (nobody present) and come back while
 * its tokens wait. The state is not stored: after a restart the sweep's
 * scan reports the rooms again, and finds those with an undo pending, whose
 * records (archive_undo) are the state of the undo. */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rekey.h"
#include "service.h"
#include "stanza.h"
#include "sweep.h"

/* An ask nobody answered (a session that does not hold epoch c does not)
 * goes out again after this, to another session if there is one. */
#define ERASE_RETRY_MS (60 * 1000)
/* How often rooms waiting for a member session to be present are looked
 * at (a hash lookup each, no database). */
#define ERASE_SCAN_MS 1000
/* After a database failure. */
#define ERASE_DB_RETRY_MS (10 * 1000)

typedef enum {
    ER_LOAD,     /* its chain and check header are to be read (at next_ms) */
    ER_READING,  /* ... being read */
    ER_WAIT,     /* ready: ask at next_ms (again, once asked) */
    ER_DELETING, /* a member confirmed: the tokens are being deleted */
    ER_UNDOING,  /* a member found the check wrong: the tokens at fault are being revoked */
    ER_SETTLED,  /* nothing more for epoch c (its chain cannot be checked, or is not at fault) */
} er_state;

typedef struct erase_room {
    long long id;   /* rooms.room_id */
    uint64_t c;     /* the epoch the room's sweep completed at */
    uint64_t newer; /* a later completion, seen while the database works for c; 0: none */
    er_state state;
    char *name;                      /* bare room JID, once read */
    char *sealer;                    /* bare JID of epoch c's sealer, NULL if unknown */
    uint64_t a;                      /* oldest epoch of the chain of tokens into c */
    unsigned char check_a[RK_BYTES]; /* H_c(a), as stored (public) */
    bool asked;                      /* a <confirm-check/> for c went out: answers for c count */
    unsigned asks;                   /* how many: each goes to the next candidate session */
    long next_ms;
    struct erase_room *next;
} erase_room;

static erase_room *find(const rooms *r, long long id)
{
    erase_room *e = r->erasing;
    while (e && e->id != id)
        e = e->next;
    return e;
}

static void forget(rooms *r, erase_room *e)
{
    erase_room **pp = &r->erasing;
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    free(e->name);
    free(e->sealer);
    free(e);
}

/* Start over for epoch c: nothing asked yet. */
static void restart(erase_room *e, uint64_t c, long now_ms)
{
    e->c = c;
    e->newer = 0;
    e->state = ER_LOAD;
    e->asked = false;
    e->asks = 0;
    e->next_ms = now_ms;
}

/* Drop the room's cached token from epoch `from` if it is `delta`, so that
 * the lazy path no longer re-keys through a revoked token (the chain of
 * token.c, laid out as service.h says). A token stored for the step since,
 * which nothing has applied, stays. */
static void cache_forget(room *rm, uint64_t from, const unsigned char delta[RK_BYTES])
{
    if (from < rm->token_first || from - rm->token_first >= rm->ntokens) return;
    size_t i = (size_t)(from - rm->token_first);
    if (!rm->token_have[i] || sodium_memcmp(rm->tokens[i], delta, RK_BYTES) != 0) return;
    rm->token_have[i] = false;
    sodium_memzero(rm->tokens[i], RK_BYTES);
}

/* The revoked tokens in res (from_epoch, delta; an undo pending for room
 * id) out of its cached chain, if it is loaded: a revocation whose answer
 * was lost, or another instance's. */
static void cache_forget_all(rooms *r, const char *name, long long id, const PGresult *res)
{
    room *rm = name ? room_lookup(r, name) : NULL;
    if (!rm || rm->id != id) return;
    for (int i = 0; i < PQntuples(res); i++) {
        unsigned char d[RK_BYTES];
        if (svc_bytea(res, i, 1, d, sizeof d) == RK_BYTES)
            cache_forget(rm, strtoull(PQgetvalue(res, i, 0), NULL, 10), d);
        sodium_memzero(d, sizeof d);
    }
}

/* ---- asking a member ---- */

/* Rank of a session as the one to ask, -1 if it may not be asked (not a
 * member of the current roster). The sealer of epoch c made it and holds
 * it, and is the one who just sent the token; a session that announced
 * <keys/> (a current client) is likelier to hold c than one that did not. */
static int rank(const room *rm, const erase_room *e, const occupant *o)
{
    if (!sr_roster_find(&rm->roster, o->bare_jid)) return -1;
    bool sealer = e->sealer && strcmp(o->bare_jid, e->sealer) == 0;
    return (sealer ? 0 : 2) + (o->dmkd ? 0 : 1);
}

/* The session to ask: the (asks mod n)-th of the n sessions that may be
 * asked, best ranked first, so that asking again asks the next one. */
static occupant *candidate(const room *rm, const erase_room *e)
{
    size_t n = 0;
    for (occupant *o = rm->occupants; o; o = o->next)
        if (rank(rm, e, o) >= 0) n++;
    if (n == 0) return NULL;
    size_t want = e->asks % n, i = 0;
    for (int tier = 0; tier < 4; tier++)
        for (occupant *o = rm->occupants; o; o = o->next)
            if (rank(rm, e, o) == tier && i++ == want) return o;
    return NULL;
}

static void ask(rooms *r, erase_room *e, long now_ms)
{
    room *rm = room_lookup(r, e->name);
    occupant *o = rm && rm->state == ROOM_READY && rm->id == e->id ? candidate(rm, e) : NULL;
    e->next_ms = now_ms + ERASE_SCAN_MS;
    if (!o) return; /* nobody to ask yet (the room is not even loaded without occupants) */
    unsigned char delta[RK_BYTES], check[RK_BYTES];
    char num[24], *b64 = NULL;
    xmpp_stanza_t *m = NULL;
    /* Δ(a→c) from the room's cached chain and applied exactly as the lazy
     * path and the sweep apply it to data headers. */
    if (!token_chain_delta(rm, e->a, e->c, delta) || !rk_apply(check, delta, e->check_a)) {
        log_error(rm->name,
                  "the tokens from epoch %" PRIu64 " to %" PRIu64
                  " do not re-key its check header: they stay",
                  e->a, e->c);
        e->state = ER_SETTLED;
        goto out;
    }
    snprintf(num, sizeof num, "%" PRIu64, e->c);
    b64 = st_b64_encode(check, sizeof check);
    m = st_new(link_ctx(r->link), "message", "headline", rm->name, o->full_jid, NULL);
    xmpp_stanza_t *el = m && b64 ? st_add(m, "confirm-check", NS_ARCHIVE) : NULL;
    if (!el || xmpp_stanza_set_attribute(el, "epoch", num) != XMPP_EOK ||
        xmpp_stanza_set_attribute(el, "check", b64) != XMPP_EOK) {
        log_warn(rm->name, "out of memory asking to confirm epoch %" PRIu64, e->c);
        goto out;
    }
    e->asked = true;
    e->asks++;
    e->next_ms = now_ms + ERASE_RETRY_MS;
    r->stats.checks_asked++;
    log_info(rm->name,
             "the sweep to epoch %" PRIu64 " is complete: asked %s to confirm the check header "
             "of epoch %" PRIu64 " re-keyed to it",
             e->c, o->full_jid, e->a);
    svc_send(r, m);
    m = NULL;
out:
    if (m) xmpp_stanza_release(m);
    free(b64);
    sodium_memzero(delta, sizeof delta);
    sodium_memzero(check, sizeof check);
}

/* ---- reading the chain into c ---- */

typedef struct read_op {
    rooms *r;
    long long id;
    uint64_t c;
} read_op;

static void load(rooms *r, erase_room *e, long now_ms);

static void loaded(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    read_op *op = arg;
    rooms *r = op->r;
    erase_room *e = find(r, op->id);
    long now_ms = r->now_ms;
    uint64_t c = op->c;
    free(op);
    if (!e || e->state != ER_READING || e->c != c) return;
    if (e->newer) {
        /* What was read is for an epoch already behind. */
        restart(e, e->newer, now_ms);
        load(r, e, now_ms);
        return;
    }
    if (!ok || nres != 4) {
        log_warn(NULL, "room %lld: reading its tokens for erasure failed: %s", e->id,
                 err ? err : "?");
        e->state = ER_LOAD;
        e->next_ms = now_ms + ERASE_DB_RETRY_MS;
        return;
    }
    if (PQntuples(res[0]) != 1) { /* the room is gone */
        forget(r, e);
        return;
    }
    if (PQntuples(res[3]) > 0) {
        /* An undo is under way (a sweep that ended before the revocation
         * reported the room): its headers will be behind again. The sweep
         * reports the room once the undo is over and nothing is behind. */
        cache_forget_all(r, PQgetvalue(res[0], 0, 0), e->id, res[3]);
        log_debug(PQgetvalue(res[0], 0, 0), "an undo is pending: no check of epoch %" PRIu64, c);
        forget(r, e);
        return;
    }
    free(e->sealer);
    e->sealer = PQntuples(res[2]) == 1 ? strdup(PQgetvalue(res[2], 0, 0)) : NULL;
    if (!e->name && !(e->name = strdup(PQgetvalue(res[0], 0, 0)))) {
        e->state = ER_LOAD;
        e->next_ms = now_ms + ERASE_DB_RETRY_MS;
        return;
    }
    /* res[1]: tokens into c and earlier, newest first, each with the check
     * header of the epoch it leaves. The chain is the run reaching down from
     * c: anything below a gap moved no header that is still behind (there
     * is none), and goes with the rest. */
    int n = PQntuples(res[1]), run = 0;
    while (run < n && strtoull(PQgetvalue(res[1], run, 0), NULL, 10) == c - 1 - (uint64_t)run)
        run++;
    if (run == 0) {
        log_debug(e->name, "the sweep to epoch %" PRIu64 " is complete; no token into it", c);
        forget(r, e);
        return;
    }
    e->a = c - (uint64_t)run;
    if (svc_bytea(res[1], run - 1, 1, e->check_a, sizeof e->check_a) != RK_BYTES) {
        /* An epoch from before check headers (or a damaged row): nothing a
         * member could confirm; its tokens stay. */
        log_warn(e->name,
                 "epoch %" PRIu64 ", where the chain of tokens into epoch %" PRIu64
                 " starts, has no check header: those tokens cannot be confirmed and stay",
                 e->a, c);
        e->state = ER_SETTLED;
        return;
    }
    e->state = ER_WAIT;
    ask(r, e, now_ms);
}

static void load(rooms *r, erase_room *e, long now_ms)
{
    read_op *op = malloc(sizeof *op);
    db_unit *u = db_unit_new();
    char id[24], c[24];
    snprintf(id, sizeof id, "%lld", e->id);
    snprintf(c, sizeof c, "%" PRIu64, e->c);
    const char *p[2] = {id, c};
    if (!op || !u ||
        db_unit_add(u, "SELECT name FROM rooms WHERE room_id = $1", 1, p, NULL, NULL) ||
        db_unit_add(u,
                    "SELECT t.from_epoch, e.check_header FROM archive_tokens t LEFT JOIN epochs e "
                    "ON e.room_id = t.room_id AND e.epoch = t.from_epoch "
                    "WHERE t.room_id = $1 AND t.to_epoch <= $2 ORDER BY t.from_epoch DESC",
                    2, p, NULL, NULL) ||
        db_unit_add(u, "SELECT sealer FROM epochs WHERE room_id = $1 AND epoch = $2", 2, p, NULL,
                    NULL) ||
        db_unit_add(u, "SELECT from_epoch, delta FROM archive_undo WHERE room_id = $1", 1, p, NULL,
                    NULL)) {
        free(op);
        if (u) db_unit_free(u);
        e->next_ms = now_ms + ERASE_DB_RETRY_MS;
        return;
    }
    op->r = r;
    op->id = e->id;
    op->c = e->c;
    e->state = ER_READING;
    db_submit(r->db, u, false, loaded, op);
}

/* The sweep completed room id at epoch c. */
static void completed(rooms *r, long long id, uint64_t c, long now_ms)
{
    erase_room *e = find(r, id);
    if (!e) {
        if (!(e = calloc(1, sizeof *e))) {
            log_error(NULL, "room %lld: out of memory: its tokens stay", id);
            return;
        }
        e->id = id;
        e->next = r->erasing;
        r->erasing = e;
        restart(e, c, now_ms);
    } else if (c <= e->c || c <= e->newer) {
        return; /* a repeat: already on it */
    } else if (e->state == ER_READING || e->state == ER_DELETING || e->state == ER_UNDOING) {
        e->newer = c;
        return;
    } else {
        restart(e, c, now_ms);
    }
    load(r, e, now_ms);
}

void tokenerase_tick(rooms *r, long now_ms)
{
    long long id;
    uint64_t c;
    while (sweep_take_done(sweep_running(), &id, &c))
        completed(r, id, c, now_ms);
    if (now_ms - r->last_erase_ms < ERASE_SCAN_MS) return;
    r->last_erase_ms = now_ms;
    for (erase_room *e = r->erasing; e; e = e->next) {
        if (e->next_ms > now_ms) continue;
        if (e->state == ER_LOAD)
            load(r, e, now_ms);
        else if (e->state == ER_WAIT)
            ask(r, e, now_ms);
    }
}

void tokenerase_free(rooms *r)
{
    while (r->erasing)
        forget(r, r->erasing);
}

/* ---- the member's answer ---- */

typedef struct delete_op {
    rooms *r;
    room *rm;
    xmpp_stanza_t *iq;
    uint64_t c;
    char sender[SR_BARE_JID_MAX];
} delete_op;

static void deleted(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    delete_op *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    erase_room *e = find(r, rm->id);
    r->writes_in_flight--;
    if (!ok || nres != 1) {
        log_error(rm->name, "tokens into epoch %" PRIu64 " not erased: %s", op->c, err ? err : "?");
        svc_error(r, op->iq, rm->name, "wait", "internal-server-error", NULL,
                  "the tokens could not be erased; the room will ask again");
        if (e && e->state == ER_DELETING) {
            e->state = ER_WAIT;
            e->next_ms = r->now_ms + ERASE_DB_RETRY_MS;
        }
    } else {
        /* The cache follows: its tokens into c and earlier are gone, later
         * ones (stored meanwhile) stay for the lazy path. Nothing is erased
         * while an undo is pending: the headers it takes back need the
         * tokens above the revoked ones to move on. */
        unsigned long long n = strtoull(PQcmdTuples(res[0]), NULL, 10);
        if (n > 0) token_chain_drop_below(rm, op->c);
        r->stats.tokens_erased += n;
        log_info(rm->name,
                 "%s confirmed the check header of epoch %" PRIu64 ": %llu token(s) into it "
                 "and earlier erased%s",
                 op->sender, op->c, n, n ? "" : " (an undo is pending, or they were already)");
        svc_send(r, st_iq_result(op->iq, rm->name));
        if (e && e->state == ER_DELETING && e->c == op->c) {
            if (e->newer) {
                restart(e, e->newer, r->now_ms);
                load(r, e, r->now_ms);
            } else {
                forget(r, e);
            }
        }
    }
    room_release(r, rm);
    xmpp_stanza_release(op->iq);
    free(op);
}

static void erase_tokens(rooms *r, room *rm, erase_room *e, xmpp_stanza_t *iq, const char *sender)
{
    delete_op *op = calloc(1, sizeof *op);
    db_unit *u = db_unit_new();
    char id[24], c[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(c, sizeof c, "%" PRIu64, e->c);
    const char *p[2] = {id, c};
    if (!op || !u || !(op->iq = xmpp_stanza_copy(iq)) ||
        db_unit_add(u,
                    "DELETE FROM archive_tokens WHERE room_id = $1 AND to_epoch <= $2 AND NOT "
                    "EXISTS (SELECT 1 FROM archive_undo u WHERE u.room_id = $1)",
                    2, p, NULL, NULL)) {
        if (op && op->iq) xmpp_stanza_release(op->iq);
        free(op);
        if (u) db_unit_free(u);
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    op->r = r;
    op->rm = rm;
    op->c = e->c;
    snprintf(op->sender, sizeof op->sender, "%s", sender);
    rm->refs++;
    e->state = ER_DELETING;
    r->writes_in_flight++;
    db_submit(r->db, u, true, deleted, op);
}

/* ---- undoing: the member found the check wrong ---- */

typedef struct undo_op {
    rooms *r;
    room *rm;
    xmpp_stanza_t *iq;
    long long id;
    uint64_t a, c;
    char sender[SR_BARE_JID_MAX];
    size_t n;                         /* tokens revoked */
    uint64_t *from;                   /* their steps */
    unsigned char (*delta)[RK_BYTES]; /* and tokens, for the cache */
} undo_op;

static void undo_free(undo_op *op)
{
    room_release(op->r, op->rm);
    xmpp_stanza_release(op->iq);
    if (op->delta) sodium_memzero(op->delta, op->n * RK_BYTES);
    free(op->delta);
    free(op->from);
    free(op);
}

/* The revocation failed, or could not start: the member's answer is lost
 * and the room asks again (after reading its state anew). */
static void undo_failed(rooms *r, undo_op *op, const char *why)
{
    erase_room *e = find(r, op->id);
    log_error(op->rm->name, "the tokens into epoch %" PRIu64 " were not revoked: %s", op->c, why);
    svc_error(r, op->iq, op->rm->name, "wait", "internal-server-error", NULL,
              "the failed check could not be acted on; the room will ask again");
    if (e && e->state == ER_UNDOING) {
        e->state = ER_LOAD;
        e->next_ms = r->now_ms + ERASE_DB_RETRY_MS;
    }
    undo_free(op);
}

static void undo_recorded(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    undo_op *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    (void)res;
    r->writes_in_flight--;
    if (!ok || nres != 2) {
        undo_failed(r, op, err ? err : "?");
        return;
    }
    if (rm->id == op->id)
        for (size_t k = 0; k < op->n; k++)
            cache_forget(rm, op->from[k], op->delta[k]);
    char steps[160];
    size_t len = 0;
    size_t i = 0;
    for (; i < op->n && len + 48 < sizeof steps; i++)
        len += (size_t)snprintf(steps + len, sizeof steps - len, "%s%" PRIu64 "->%" PRIu64,
                                i ? ", " : "", op->from[i], op->from[i] + 1);
    if (i < op->n) snprintf(steps + len, sizeof steps - len, ", ...");
    log_error(rm->name,
              "%s found the check header of epoch %" PRIu64 " re-keyed to epoch %" PRIu64
              " wrong: revoked %zu token(s) the check headers do not prove (%s); the sweep takes "
              "every header that went through them back",
              op->sender, op->a, op->c, op->n, steps);
    sweep_kick(sweep_running(), op->id);
    svc_send(r, st_iq_result(op->iq, rm->name));
    /* Nothing more for c: the sweep reports the room again once the
     * headers taken back have moved on, with a new token for each step. */
    erase_room *e = find(r, op->id);
    if (e && e->state == ER_UNDOING && e->c == op->c) forget(r, e);
    undo_free(op);
}

/* res[0]: the tokens from a to c with the check headers of the epochs each
 * joins; res[1]: revoked tokens still kept (an undo under way). */
static void undo_read(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    undo_op *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    erase_room *e = find(r, op->id);
    if (!ok || nres != 2) {
        undo_failed(r, op, err ? err : "?");
        return;
    }
    if (PQntuples(res[1]) > 0) {
        /* A revocation came first (ours, whose answer was lost, or another
         * instance's): the room asks again once that undo is over. */
        cache_forget_all(r, rm->name, op->id, res[1]);
        log_info(rm->name, "%s found the check of epoch %" PRIu64 " wrong; an undo is pending",
                 op->sender, op->c);
        svc_send(r, st_iq_result(op->iq, rm->name));
        if (e && e->state == ER_UNDOING) forget(r, e);
        undo_free(op);
        return;
    }
    int rows = PQntuples(res[0]);
    op->from = calloc(rows ? (size_t)rows : 1, sizeof *op->from);
    op->delta = calloc(rows ? (size_t)rows : 1, RK_BYTES);
    char *list = malloc((size_t)rows * 21 + 3), *p = list;
    if (!op->from || !op->delta || !list) {
        free(list);
        undo_failed(r, op, "out of memory");
        return;
    }
    *p++ = '{';
    for (int i = 0; i < rows; i++) {
        unsigned char hc_from[RK_BYTES], hc_to[RK_BYTES], *d = op->delta[op->n];
        bool proved = svc_bytea(res[0], i, 1, d, RK_BYTES) == RK_BYTES &&
                      svc_bytea(res[0], i, 2, hc_from, sizeof hc_from) == RK_BYTES &&
                      svc_bytea(res[0], i, 3, hc_to, sizeof hc_to) == RK_BYTES &&
                      rk_token_proved(d, hc_from, hc_to);
        if (proved) {
            sodium_memzero(d, RK_BYTES);
            continue;
        }
        /* Unverified when stored, or no longer matching its check headers:
         * this one can be the wrong one. */
        op->from[op->n] = strtoull(PQgetvalue(res[0], i, 0), NULL, 10);
        p += sprintf(p, "%s%" PRIu64, op->n ? "," : "", op->from[op->n]);
        op->n++;
    }
    strcpy(p, "}");
    if (op->n == 0) {
        free(list);
        log_error(rm->name,
                  "%s found the check header of epoch %" PRIu64 " re-keyed to epoch %" PRIu64
                  " wrong, but %s: nothing is undone and the tokens stay",
                  op->sender, op->a, op->c,
                  rows ? "the stored check headers prove every token between, so it is not a "
                         "token's fault (a check header, or the member's answer)"
                       : "no token between is stored any more");
        if (e && e->state == ER_UNDOING) e->state = ER_SETTLED;
        svc_send(r, st_iq_result(op->iq, rm->name));
        undo_free(op);
        return;
    }
    db_unit *u = db_unit_new();
    char id[24];
    snprintf(id, sizeof id, "%lld", op->id);
    const char *v[2] = {id, list};
    bool added = u && db_unit_add(u, SWEEP_SQL_REVOKE_KEEP, 2, v, NULL, NULL) == 0 &&
                 db_unit_add(u, SWEEP_SQL_REVOKE_DROP, 2, v, NULL, NULL) == 0;
    free(list);
    if (!added) {
        if (u) db_unit_free(u);
        undo_failed(r, op, "out of memory");
        return;
    }
    r->writes_in_flight++;
    db_submit(r->db, u, true, undo_recorded, op);
}

static void undo_start(rooms *r, room *rm, erase_room *e, xmpp_stanza_t *iq, const char *sender)
{
    undo_op *op = calloc(1, sizeof *op);
    db_unit *u = db_unit_new();
    char id[24], a[24], c[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(a, sizeof a, "%" PRIu64, e->a);
    snprintf(c, sizeof c, "%" PRIu64, e->c);
    const char *p[3] = {id, a, c};
    if (!op || !u || !(op->iq = xmpp_stanza_copy(iq)) ||
        db_unit_add(u,
                    "SELECT t.from_epoch, t.delta, ef.check_header, et.check_header "
                    "FROM archive_tokens t LEFT JOIN epochs ef ON ef.room_id = t.room_id AND "
                    "ef.epoch = t.from_epoch LEFT JOIN epochs et ON et.room_id = t.room_id AND "
                    "et.epoch = t.to_epoch WHERE t.room_id = $1 AND t.from_epoch >= $2 AND "
                    "t.to_epoch <= $3 ORDER BY t.from_epoch",
                    3, p, NULL, NULL) ||
        db_unit_add(u, "SELECT from_epoch, delta FROM archive_undo WHERE room_id = $1", 1, p, NULL,
                    NULL)) {
        if (op && op->iq) xmpp_stanza_release(op->iq);
        free(op);
        if (u) db_unit_free(u);
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    op->r = r;
    op->rm = rm;
    op->id = rm->id;
    op->a = e->a;
    op->c = e->c;
    snprintf(op->sender, sizeof op->sender, "%s", sender);
    rm->refs++;
    e->state = ER_UNDOING;
    db_submit(r->db, u, false, undo_read, op);
}

void tokenerase_handle_answer(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    char sender[SR_BARE_JID_MAX], text[128];
    uint64_t c;
    if (!svc_require_member(r, rm, iq, sender, sizeof sender,
                            "only members may answer a check of the room's tokens"))
        return;
    if (!svc_parse_u64(xmpp_stanza_get_attribute(el, "epoch"), &c) || c == 0) {
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                  "'epoch' must be the decimal number of the epoch asked about");
        return;
    }
    bool ok = strcmp(xmpp_stanza_get_name(el), "check-ok") == 0;
    erase_room *e = find(r, rm->id);
    /* Only the epoch asked about, while the room waits for the answer or
     * acts on the first one. */
    if (!e || e->c != c || !e->asked ||
        (e->state != ER_WAIT && e->state != ER_DELETING && e->state != ER_UNDOING)) {
        snprintf(text, sizeof text, "the room is not asking to confirm epoch %" PRIu64, c);
        svc_error(r, iq, rm->name, "cancel", "unexpected-request", NULL, text);
        return;
    }
    if (!ok) r->stats.checks_failed++;
    if (e->state != ER_WAIT) {
        /* The first answer decides; a second one changes nothing, but two
         * members who disagree about the same check are worth a look. */
        if (ok != (e->state == ER_DELETING))
            log_warn(rm->name,
                     "%s answers %s for epoch %" PRIu64 " after another member answered the "
                     "opposite: the first answer stands",
                     sender, ok ? "check-ok" : "check-failed", c);
        svc_send(r, st_iq_result(iq, rm->name));
        return;
    }
    if (ok)
        erase_tokens(r, rm, e, iq, sender);
    else
        undo_start(r, rm, e, iq, sender);
}
