/* Room epochs (DESIGN §4): a member starts epoch E+1 by handing the
 * component one signed catch-up envelope per member with a registered
 * bundle, bound to the current roster head; the component checks what it can
 * without the epoch secret (membership, roster version, numbering, that the
 * envelopes cover exactly the members, and every envelope's signature by
 * the sealer), stores the epoch atomically, and tells the present
 * occupants. Members fetch their envelope of any epoch they belonged to,
 * and the member bundles that envelopes are sealed to. On its tick the
 * component asks one present member to start a new epoch when the current
 * one is too old or predates the last membership change. The room is busy
 * while an epoch is checked and committed, so two proposals for the same
 * number are decided in order and every check sees the state it follows. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2echeck.h"
#include "jid.h"
#include "rekey.h"
#include "log.h"
#include "service.h"
#include "stanza.h"

/* A stale epoch gets this long for its members to rekey on their own (the
 * one who changed the roster usually does at once) before the nudge. */
#define EPOCH_STALE_GRACE_MS 30000
#define EPOCH_NUDGE_INTERVAL_MS 60000

typedef struct ep_env {
    char *to;
    unsigned char blob[EC_ENVELOPE_BYTES];
} ep_env;

typedef struct epoch_op {
    rooms *r;
    room *rm;
    xmpp_stanza_t *iq;
    uint64_t number, roster_version;
    unsigned char kc[32];
    unsigned char check[32]; /* the epoch's check header H_c (archive re-encryption) */
    bool has_check;
    unsigned char hash[SR_ROSTER_HASH_BYTES];
    char sealer[SR_BARE_JID_MAX];
    size_t n;
    ep_env *env; /* sorted by recipient */
} epoch_op;

const char *epoch_unusable(const rooms *r, const room *rm)
{
    if (rm->current_epoch == 0) return "none";
    if (rm->epoch_roster_version < rm->membership_version) return "stale";
    if ((long long)time(NULL) - rm->epoch_created > r->cfg->epoch_max_age) return "expired";
    return NULL;
}

void epoch_roster_changed(rooms *r, room *rm, const sr_roster_version *v)
{
    bool membership = false;
    for (unsigned i = 0; i < v->nops; i++)
        membership |= v->ops[i].kind == SR_OP_ADD || v->ops[i].kind == SR_OP_REMOVE;
    if (membership) {
        rm->membership_version = v->version;
        if (rm->current_epoch > 0 && rm->epoch_roster_version < rm->membership_version &&
            rm->stale_since_ms < 0)
            rm->stale_since_ms = r->now_ms;
    }
    dmkd_roster_changed(r, rm, membership);
}

static void op_free(epoch_op *op)
{
    if (!op) return;
    for (size_t i = 0; i < op->n; i++) free(op->env[i].to);
    free(op->env);
    if (op->iq) xmpp_stanza_release(op->iq);
    free(op);
}

/* The op is over (committed or refused): let the room run again. */
static void op_finish(epoch_op *op)
{
    rooms *r = op->r;
    room *rm = op->rm;
    op_free(op);
    room_op_done(r, rm);
}

static int cmp_env(const void *a, const void *b)
{
    return strcmp(((const ep_env *)a)->to, ((const ep_env *)b)->to);
}

static ep_env *find_env(const epoch_op *op, const char *jid)
{
    ep_env key = {(char *)jid, {0}};
    return op->n ? bsearch(&key, op->env, op->n, sizeof *op->env, cmp_env) : NULL;
}

static void refuse_envelope(rooms *r, room *rm, xmpp_stanza_t *req, const char *jid,
                            const char *why)
{
    char text[SR_BARE_JID_MAX + 128];
    snprintf(text, sizeof text, "envelope for %s: %s", jid, why);
    svc_error(r, req, rm->name, "modify", "not-acceptable", "bad-envelope", text);
}

/* The new epoch's headline to every present session, one stanza each. */
static void announce(rooms *r, room *rm, uint64_t number, uint64_t roster_version)
{
    xmpp_ctx_t *ctx = link_ctx(r->link);
    char num[24], rv[24];
    snprintf(num, sizeof num, "%" PRIu64, number);
    snprintf(rv, sizeof rv, "%" PRIu64, roster_version);
    for (occupant *o = rm->occupants; o; o = o->next) {
        xmpp_stanza_t *m = st_new(ctx, "message", "headline", rm->name, o->full_jid, NULL);
        xmpp_stanza_t *e = m ? st_add(m, "epoch", NS_SEALROOM) : NULL;
        if (!e) {
            if (m) xmpp_stanza_release(m);
            log_error(rm->name, "out of memory announcing epoch %s", num);
            return;
        }
        xmpp_stanza_set_attribute(e, "number", num);
        xmpp_stanza_set_attribute(e, "roster-version", rv);
        svc_send(r, m);
    }
}

static void committed(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    epoch_op *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    r->writes_in_flight--;
    bool clash = !ok && (db_err_sqlstate_is(err, "23505") || db_err_sqlstate_is(err, "23503"));
    if (clash || (ok && (nres < 2 || PQntuples(res[1]) != 1))) {
        /* Another instance moved the room on: read it again before the next stanza. */
        log_warn(rm->name, "epoch %" PRIu64 " not stored: %s", op->number,
                 err ? err : "the room is not at the epoch before it");
        rm->state = ROOM_LOADING;
        svc_error(r, op->iq, rm->name, "cancel", "conflict", "epoch-conflict",
                  "another epoch with this number was stored first; fetch the current epoch");
        op_finish(op);
        return;
    }
    if (!ok) {
        log_error(rm->name, "epoch %" PRIu64 " not stored: %s", op->number, err ? err : "?");
        rm->state = ROOM_LOADING;
        svc_error(r, op->iq, rm->name, "wait", "internal-server-error", NULL,
                  "the epoch could not be stored; try again");
        op_finish(op);
        return;
    }
    svc_send(r, st_iq_result(op->iq, rm->name));
    epoch_committed(r, rm, op->number, op->roster_version,
                    strtoll(PQgetvalue(res[1], 0, 0), NULL, 10), op->sealer, op->n);
    op_finish(op);
}

void epoch_committed(rooms *r, room *rm, uint64_t number, uint64_t roster_version,
                     long long created, const char *by, size_t envelopes)
{
    rm->current_epoch = number;
    rm->epoch_roster_version = roster_version;
    rm->epoch_created = created;
    rm->stale_since_ms = -1;
    rm->run_requested = false;
    dmkd_epoch_committed(rm);
    datakey_cache_clear(rm);
    r->stats.epochs_created++;
    log_info(rm->name, "epoch %" PRIu64 " at roster version %" PRIu64 " by %s (%zu envelopes)",
             number, roster_version, by, envelopes);
    announce(r, rm, number, roster_version);
}

static void submit_write(epoch_op *op)
{
    rooms *r = op->r;
    room *rm = op->rm;
    char id[24], num[24], prev[24], rv[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(num, sizeof num, "%" PRIu64, op->number);
    snprintf(prev, sizeof prev, "%" PRIu64, op->number - 1);
    snprintf(rv, sizeof rv, "%" PRIu64, op->roster_version);
    size_t tolen = 0;
    for (size_t i = 0; i < op->n; i++) tolen += strlen(op->env[i].to) + 1;
    char *tos = malloc(tolen + 1);
    unsigned char *blobs = malloc(op->n * EC_ENVELOPE_BYTES + 1);
    db_unit *u = db_unit_new();
    int rc = tos && blobs && u ? 0 : -1;
    if (rc == 0) {
        size_t k = 0;
        for (size_t i = 0; i < op->n; i++) {
            size_t len = strlen(op->env[i].to);
            memcpy(tos + k, op->env[i].to, len);
            k += len;
            if (i + 1 < op->n) tos[k++] = '\n';
            memcpy(blobs + i * EC_ENVELOPE_BYTES, op->env[i].blob, EC_ENVELOPE_BYTES);
        }
        tos[k] = '\0';
        /* The guard: the room must still be at E-1 and at the roster the
         * envelopes are bound to. If it is not, the epoch insert finds no
         * row (nothing is stored; the callback sees zero rows) or clashes
         * with the epoch another instance stored. */
        const char *p1[4] = {id, num, prev, rv};
        rc |= db_unit_add(u,
                          "UPDATE rooms SET current_epoch = $2 WHERE room_id = $1 AND "
                          "current_epoch = $3 AND roster_version = $4",
                          4, p1, NULL, NULL);
        const char *p2[7] = {id, num, rv, (const char *)op->hash, (const char *)op->kc, op->sealer,
                             op->has_check ? (const char *)op->check : NULL};
        int l2[7] = {-1, -1, -1, SR_ROSTER_HASH_BYTES, 32, -1, 32}, f2[7] = {0, 0, 0, 1, 1, 0, 1};
        rc |= db_unit_add(u,
                          "INSERT INTO epochs (room_id, epoch, roster_version, roster_hash, kc, "
                          "sealer, check_header) SELECT $1, $2, $3, $4, $5, $6, $7 FROM rooms "
                          "WHERE room_id = $1 AND current_epoch = $2 AND roster_version = $3 "
                          "RETURNING extract(epoch FROM created_at)::bigint",
                          7, p2, l2, f2);
        if (op->n > 0) {
            const char *p3[5] = {id, num, op->sealer, tos, (const char *)blobs};
            int l3[5] = {-1, -1, -1, -1, (int)(op->n * EC_ENVELOPE_BYTES)};
            int f3[5] = {0, 0, 0, 0, 1};
            rc |= db_unit_add(u,
                              "INSERT INTO envelopes (room_id, epoch, recipient, sealer, blob) "
                              "SELECT $1, $2, u.r, $3, substring($5::bytea FROM "
                              "(u.i - 1)::int * 145 + 1 FOR 145) "
                              "FROM unnest(string_to_array($4, chr(10))) WITH ORDINALITY AS u(r, i)",
                              5, p3, l3, f3);
        }
    }
    free(tos);
    free(blobs);
    if (rc != 0) {
        db_unit_free(u);
        svc_error(r, op->iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        op_finish(op);
        return;
    }
    r->writes_in_flight++;
    db_submit(r->db, u, true, committed, op);
}

/* The registered bundles of the members: check envelopes against them. */
static void bundles_read(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    epoch_op *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    if (!ok || nres != 1) {
        log_error(rm->name, "bundle lookup failed: %s", err ? err : "?");
        svc_error(r, op->iq, rm->name, "wait", "internal-server-error", NULL,
                  "member bundles could not be read; try again");
        op_finish(op);
        return;
    }
    const sr_member *sealer = sr_roster_find(&rm->roster, op->sealer);
    if (!sealer) { /* cannot happen while busy; be safe */
        svc_error(r, op->iq, rm->name, "auth", "forbidden", "not-member",
                  "only members may start an epoch");
        op_finish(op);
        return;
    }
    int rows = PQntuples(res[0]);
    size_t covered = 0;
    for (int i = 0; i < rows; i++) {
        const char *jid = PQgetvalue(res[0], i, 0);
        unsigned char box[SR_KEY_BYTES];
        ep_env *e = find_env(op, jid);
        if (!e) {
            refuse_envelope(r, rm, op->iq, jid, "missing: every member with a bundle needs one");
            op_finish(op);
            return;
        }
        if (svc_bytea(res[0], i, 1, box, sizeof box) != (long)sizeof box) {
            refuse_envelope(r, rm, op->iq, jid, "the member's stored box key is damaged");
            op_finish(op);
            return;
        }
        if (!ec_envelope_verify(e->blob, sizeof e->blob, rm->name, op->number, op->hash,
                                op->sealer, jid, box, sealer->key)) {
            refuse_envelope(r, rm, op->iq, jid,
                            "the signature does not verify for this room, epoch, roster head, "
                            "sealer and recipient box key");
            op_finish(op);
            return;
        }
        covered++;
    }
    if (covered != op->n) {
        /* Some envelope names a member without a registered bundle. */
        for (size_t i = 0; i < op->n; i++) {
            bool found = false;
            for (int k = 0; k < rows && !found; k++)
                found = strcmp(PQgetvalue(res[0], k, 0), op->env[i].to) == 0;
            if (!found) {
                refuse_envelope(r, rm, op->iq, op->env[i].to,
                                "extra: that member has no registered bundle");
                op_finish(op);
                return;
            }
        }
    }
    submit_write(op);
}

void epoch_handle_set(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    epoch_op *op = calloc(1, sizeof *op);
    if (!op) {
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    op->r = r;
    op->rm = rm;
    char text[SR_BARE_JID_MAX + 160];
    if (!svc_require_member(r, rm, iq, op->sealer, sizeof op->sealer,
                            "only members may start an epoch")) {
        goto drop;
    }
    if (!svc_parse_u64(xmpp_stanza_get_attribute(el, "number"), &op->number) ||
        !svc_parse_u64(xmpp_stanza_get_attribute(el, "roster-version"), &op->roster_version)) {
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                  "epoch needs number and roster-version, decimal integers");
        goto drop;
    }
    if (op->roster_version != rm->roster.version) {
        snprintf(text, sizeof text,
                 "the roster is at version %" PRIu64 ", not %" PRIu64 ": sync it and retry",
                 rm->roster.version, op->roster_version);
        svc_error(r, iq, rm->name, "wait", "conflict", "stale-roster", text);
        goto drop;
    }
    if (op->number != rm->current_epoch + 1) {
        snprintf(text, sizeof text,
                 "the current epoch is %" PRIu64 "; the next one is %" PRIu64, rm->current_epoch,
                 rm->current_epoch + 1);
        svc_error(r, iq, rm->name, "cancel", "conflict", "epoch-conflict", text);
        goto drop;
    }
    if (!st_b64_decode_exact(op->kc, sizeof op->kc, xmpp_stanza_get_attribute(el, "kc"))) {
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                  "epoch needs kc, 32 bytes of base64");
        goto drop;
    }
    /* Clients before 0.3 send no check header; their epochs' tokens are
     * then stored unverified. */
    const char *check = xmpp_stanza_get_attribute(el, "check");
    if (check && (!st_b64_decode_exact(op->check, sizeof op->check, check) ||
                  !rk_point_ok(op->check))) {
        svc_error(r, iq, rm->name, "modify", "bad-request", "bad-token",
                  "check must be the base64 of a ristretto255 point (the epoch's check header)");
        goto drop;
    }
    op->has_check = check != NULL;
    size_t count = 0;
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(el); c; c = xmpp_stanza_get_next(c)) {
        if (!xmpp_stanza_is_tag(c)) continue;
        if (strcmp(xmpp_stanza_get_name(c), "envelope") != 0) {
            svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                      "epoch holds only <envelope to=''/> children");
            goto drop;
        }
        count++;
    }
    if (count > (size_t)r->cfg->epoch_max_members) {
        snprintf(text, sizeof text, "at most %d envelopes per epoch", r->cfg->epoch_max_members);
        svc_error(r, iq, rm->name, "modify", "policy-violation", "too-large", text);
        goto drop;
    }
    op->env = calloc(count ? count : 1, sizeof *op->env);
    if (!op->env) goto oom;
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(el); c; c = xmpp_stanza_get_next(c)) {
        if (!xmpp_stanza_is_tag(c)) continue;
        ep_env *e = &op->env[op->n];
        const char *to = xmpp_stanza_get_attribute(c, "to");
        char bare[SR_BARE_JID_MAX];
        if (!to || !sr_jid_normalise_bare(bare, sizeof bare, to)) {
            svc_error(r, iq, rm->name, "modify", "not-acceptable", "bad-envelope",
                      "an envelope needs to, a bare JID");
            goto drop;
        }
        if (!(e->to = strdup(bare))) goto oom;
        op->n++;
        if (!sr_roster_find(&rm->roster, bare)) {
            refuse_envelope(r, rm, iq, bare, "extra: not a member of the room");
            goto drop;
        }
        if (!st_b64_decode_exact(e->blob, sizeof e->blob, st_text(c)) ||
            e->blob[0] != EC_ENVELOPE_VERSION) {
            refuse_envelope(r, rm, iq, bare, "must be 145 bytes of base64, version 1");
            goto drop;
        }
    }
    qsort(op->env, op->n, sizeof *op->env, cmp_env);
    for (size_t i = 1; i < op->n; i++) {
        if (strcmp(op->env[i - 1].to, op->env[i].to) == 0) {
            refuse_envelope(r, rm, iq, op->env[i].to, "duplicate");
            goto drop;
        }
    }
    memcpy(op->hash, rm->roster.head, sizeof op->hash);
    /* Which members have a bundle decides which envelopes are due. */
    size_t len = 1;
    for (size_t i = 0; i < rm->roster.nmembers; i++) len += strlen(rm->roster.members[i].jid) + 1;
    char *list = malloc(len);
    if (!list || !(op->iq = xmpp_stanza_copy(iq))) {
        free(list);
        goto oom;
    }
    size_t k = 0;
    for (size_t i = 0; i < rm->roster.nmembers; i++) {
        size_t n = strlen(rm->roster.members[i].jid);
        memcpy(list + k, rm->roster.members[i].jid, n);
        k += n;
        if (i + 1 < rm->roster.nmembers) list[k++] = '\n';
    }
    list[k] = '\0';
    rm->refs++;
    rm->busy = true;
    const char *p[1] = {list};
    db_read1(r->db,
             "SELECT jid, box_pk FROM identities WHERE jid = ANY(string_to_array($1, chr(10))) "
             "AND box_pk IS NOT NULL ORDER BY jid",
             1, p, NULL, NULL, bundles_read, op);
    free(list);
    return;
oom:
    svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
drop:
    op_free(op);
}

typedef struct read_op {
    rooms *r;
    room *rm;
    xmpp_stanza_t *iq;
    char requester[SR_BARE_JID_MAX];
} read_op;

static void read_finish(read_op *q)
{
    room_release(q->r, q->rm);
    xmpp_stanza_release(q->iq);
    free(q);
}

static void epoch_fetched(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    read_op *q = arg;
    rooms *r = q->r;
    room *rm = q->rm;
    if (!ok || nres != 1) {
        log_error(rm->name, "epoch fetch failed: %s", err ? err : "?");
        svc_error(r, q->iq, rm->name, "wait", "internal-server-error", NULL,
                  "the epoch could not be read; try again");
        read_finish(q);
        return;
    }
    if (PQntuples(res[0]) == 0) {
        svc_error(r, q->iq, rm->name, "cancel", "item-not-found", "no-epoch",
                  "no such epoch in this room");
        read_finish(q);
        return;
    }
    unsigned char hash[32], kc[32], env[EC_ENVELOPE_BYTES];
    bool has_env = !PQgetisnull(res[0], 0, 6);
    char *h = NULL, *k = NULL, *e = NULL;
    xmpp_stanza_t *reply = NULL;
    if (svc_bytea(res[0], 0, 2, hash, sizeof hash) != (long)sizeof hash ||
        svc_bytea(res[0], 0, 3, kc, sizeof kc) != (long)sizeof kc ||
        (has_env && svc_bytea(res[0], 0, 6, env, sizeof env) != (long)sizeof env)) {
        log_error(rm->name, "stored epoch %s is damaged", PQgetvalue(res[0], 0, 0));
        svc_error(r, q->iq, rm->name, "wait", "internal-server-error", NULL,
                  "the stored epoch is damaged");
        read_finish(q);
        return;
    }
    h = st_b64_encode(hash, sizeof hash);
    k = st_b64_encode(kc, sizeof kc);
    e = has_env ? st_b64_encode(env, sizeof env) : NULL;
    reply = h && k && (!has_env || e) ? st_iq_result(q->iq, rm->name) : NULL;
    xmpp_stanza_t *ep = reply ? st_add(reply, "epoch", NS_SEALROOM) : NULL;
    xmpp_stanza_t *ev = ep && has_env ? st_add_text(ep, "envelope", NULL, e) : NULL;
    if (!ep || (has_env && !ev)) {
        if (reply) xmpp_stanza_release(reply);
        svc_error(r, q->iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
    } else {
        uint64_t rv = strtoull(PQgetvalue(res[0], 0, 1), NULL, 10);
        long long created_ms = strtoll(PQgetvalue(res[0], 0, 5), NULL, 10);
        char stamp[32], maxage[24];
        st_format_stamp(stamp, created_ms);
        snprintf(maxage, sizeof maxage, "%d", r->cfg->epoch_max_age);
        xmpp_stanza_set_attribute(ep, "number", PQgetvalue(res[0], 0, 0));
        xmpp_stanza_set_attribute(ep, "roster-version", PQgetvalue(res[0], 0, 1));
        xmpp_stanza_set_attribute(ep, "roster-hash", h);
        xmpp_stanza_set_attribute(ep, "kc", k);
        xmpp_stanza_set_attribute(ep, "sealer", PQgetvalue(res[0], 0, 4));
        xmpp_stanza_set_attribute(ep, "created", stamp);
        xmpp_stanza_set_attribute(ep, "max-age", maxage);
        if (rv < rm->membership_version) xmpp_stanza_set_attribute(ep, "stale", "true");
        if ((long long)time(NULL) - created_ms / 1000 > r->cfg->epoch_max_age)
            xmpp_stanza_set_attribute(ep, "expired", "true");
        if (ev) xmpp_stanza_set_attribute(ev, "to", q->requester);
        unsigned char check[32];
        char *c = !PQgetisnull(res[0], 0, 7) &&
                          svc_bytea(res[0], 0, 7, check, sizeof check) == (long)sizeof check
                      ? st_b64_encode(check, sizeof check)
                      : NULL;
        if (c) xmpp_stanza_set_attribute(ep, "check", c);
        free(c);
        svc_send(r, reply);
    }
    free(h);
    free(k);
    free(e);
    read_finish(q);
}

static read_op *read_op_new(rooms *r, room *rm, xmpp_stanza_t *iq, const char *what)
{
    read_op *q = calloc(1, sizeof *q);
    if (!q) {
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        return NULL;
    }
    if (!svc_require_member(r, rm, iq, q->requester, sizeof q->requester, what)) {
        free(q);
        return NULL;
    }
    if (!(q->iq = xmpp_stanza_copy(iq))) {
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        free(q);
        return NULL;
    }
    q->r = r;
    q->rm = rm;
    rm->refs++;
    return q;
}

void epoch_handle_get(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    uint64_t number = 0;
    const char *na = xmpp_stanza_get_attribute(el, "number");
    if (na && (!svc_parse_u64(na, &number) || number == 0)) {
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                  "number must be a positive decimal integer");
        return;
    }
    read_op *q = read_op_new(r, rm, iq, "only members may read epochs");
    if (!q) return;
    char id[24], num[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(num, sizeof num, "%" PRIu64, number);
    const char *p[3] = {id, na ? num : NULL, q->requester};
    db_read1(r->db,
             /* Envelopes of a run have one sealer each: name the one that
             * sealed the requester's, or the epoch's when it has none. */
             "SELECT e.epoch, e.roster_version, e.roster_hash, e.kc, COALESCE(v.sealer, "
             "e.sealer), "
             "(extract(epoch FROM e.created_at) * 1000)::bigint, v.blob, e.check_header FROM epochs e "
             "LEFT JOIN envelopes v ON v.room_id = e.room_id AND v.epoch = e.epoch AND "
             "v.recipient = $3 WHERE e.room_id = $1 AND e.epoch = COALESCE($2::bigint, "
             "(SELECT current_epoch FROM rooms WHERE room_id = $1))",
             3, p, NULL, NULL, epoch_fetched, q);
}

static void bundles_fetched(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    read_op *q = arg;
    rooms *r = q->r;
    room *rm = q->rm;
    xmpp_stanza_t *reply = NULL;
    if (!ok || nres != 1) {
        log_error(rm->name, "bundle fetch failed: %s", err ? err : "?");
        svc_error(r, q->iq, rm->name, "wait", "internal-server-error", NULL,
                  "member bundles could not be read; try again");
        goto out;
    }
    reply = st_iq_result(q->iq, rm->name);
    xmpp_stanza_t *list = reply ? st_add(reply, "bundles", NS_SEALROOM) : NULL;
    if (!list) goto oom;
    for (int i = 0; i < PQntuples(res[0]); i++) {
        unsigned char pk[32], box[32], sig[64];
        if (svc_bytea(res[0], i, 1, pk, sizeof pk) != (long)sizeof pk ||
            svc_bytea(res[0], i, 2, box, sizeof box) != (long)sizeof box ||
            svc_bytea(res[0], i, 3, sig, sizeof sig) != (long)sizeof sig)
            continue;
        char *a = st_b64_encode(pk, sizeof pk), *b = st_b64_encode(box, sizeof box),
             *c = st_b64_encode(sig, sizeof sig);
        xmpp_stanza_t *el = a && b && c ? st_add(list, "bundle", NULL) : NULL;
        if (el) {
            xmpp_stanza_set_attribute(el, "jid", PQgetvalue(res[0], i, 0));
            xmpp_stanza_set_attribute(el, "key", a);
            xmpp_stanza_set_attribute(el, "box-key", b);
            xmpp_stanza_set_attribute(el, "bundle-sig", c);
        }
        free(a);
        free(b);
        free(c);
        if (!el) goto oom;
    }
    svc_send(r, reply);
    reply = NULL;
    goto out;
oom:
    svc_error(r, q->iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
out:
    if (reply) xmpp_stanza_release(reply);
    read_finish(q);
}

void bundles_handle_get(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    (void)el;
    read_op *q = read_op_new(r, rm, iq, "only members may read member bundles");
    if (!q) return;
    size_t len = 1;
    for (size_t i = 0; i < rm->roster.nmembers; i++) len += strlen(rm->roster.members[i].jid) + 1;
    char *list = malloc(len);
    if (!list) {
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        read_finish(q);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < rm->roster.nmembers; i++) {
        size_t n = strlen(rm->roster.members[i].jid);
        memcpy(list + k, rm->roster.members[i].jid, n);
        k += n;
        if (i + 1 < rm->roster.nmembers) list[k++] = '\n';
    }
    list[k] = '\0';
    const char *p[1] = {list};
    db_read1(r->db,
             "SELECT jid, sign_pk, box_pk, bundle_sig FROM identities "
             "WHERE jid = ANY(string_to_array($1, chr(10))) AND box_pk IS NOT NULL ORDER BY jid",
             1, p, NULL, NULL, bundles_fetched, q);
    free(list);
}

void epoch_nudge_room(rooms *r, room *rm, const char *reason, long now_ms)
{
    occupant *pick = NULL;
    for (occupant *o = rm->occupants; o; o = o->next)
        if (sr_roster_find(&rm->roster, o->bare_jid) &&
            (!pick || strcmp(o->nick, pick->nick) < 0 ||
             (strcmp(o->nick, pick->nick) == 0 && strcmp(o->full_jid, pick->full_jid) < 0)))
            pick = o;
    if (!pick) return;
    xmpp_stanza_t *m =
        st_new(link_ctx(r->link), "message", "headline", rm->name, pick->full_jid, NULL);
    xmpp_stanza_t *k = m ? st_add(m, "rekey", NS_SEALROOM) : NULL;
    if (!k) {
        if (m) xmpp_stanza_release(m);
        return;
    }
    xmpp_stanza_set_attribute(k, "reason", reason);
    rm->last_nudge_ms = now_ms;
    r->stats.rekey_nudges++;
    log_info(rm->name, "asked %s for a new epoch (%s)", pick->full_jid, reason);
    svc_send(r, m);
}

void epoch_nudge(rooms *r, long now_ms)
{
    long long now = (long long)time(NULL);
    for (size_t i = 0; i < r->nbuckets; i++) {
        for (room *rm = r->buckets[i]; rm; rm = rm->hnext) {
            if (rm->state != ROOM_READY || rm->busy || !rm->occupants || rm->current_epoch == 0 ||
                rm->run)
                continue;
            const char *reason = NULL;
            if (rm->epoch_roster_version < rm->membership_version && rm->stale_since_ms >= 0 &&
                now_ms - rm->stale_since_ms > EPOCH_STALE_GRACE_MS)
                reason = "membership";
            else if (now - rm->epoch_created > r->cfg->epoch_max_age)
                reason = "max-age";
            if (!reason) continue;
            /* Two or more members present agree on the key among themselves. */
            if (dmkd_candidates(rm) >= 2) {
                dmkd_schedule(r, rm, 0);
                continue;
            }
            if (rm->last_nudge_ms != 0 && now_ms - rm->last_nudge_ms < EPOCH_NUDGE_INTERVAL_MS)
                continue;
            epoch_nudge_room(r, rm, reason, now_ms);
        }
    }
}
