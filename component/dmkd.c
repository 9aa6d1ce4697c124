/* Multi-cast key distribution runs (DESIGN §5; xep/sealroom.xml
 * "Multi-cast key distribution"), the component's side: deciding when a
 * room needs a run (membership changes folded over dmkd.coalesce_ms, an
 * aged or stale epoch, a member's <rekey/>), choosing the ring among the
 * member sessions present with the representative first, relaying the
 * rounds (headlines out, IQ sets in, each checked), the combine step
 * (dmkdcore.c), spreading the envelopes for absent members over the
 * participants, and committing the epoch once every participant confirmed
 * the same key. A session that does not answer in dmkd.round_timeout_ms is
 * dropped and the run restarts without it. The run and its ring live in
 * PostgreSQL (dmkd_runs, dmkd_parts) from start to commit, so a restarted
 * component resumes where its members were. The component never learns the
 * key: it sees every k_i but the representative's. */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dmkdcore.h"
#include "e2echeck.h"
#include "rekey.h"
#include "log.h"
#include "service.h"
#include "stanza.h"

typedef struct dmkd_part {
    char *bare, *full;
    unsigned char pk[DK_BYTES];  /* identity key (roster) */
    unsigned char box[DK_BYTES]; /* sealing key (bundle) */
    unsigned char R[DK_BYTES], c[DK_BYTES], sig1[DK_SIG_BYTES];
    unsigned char T[DK_BYTES], second[DK_BYTES], sig2[DK_SIG_BYTES];
    unsigned char kc[DK_BYTES];
    unsigned char check[DK_BYTES]; /* the epoch's check header as this member computed it */
    bool has_check;
    bool has[4];                 /* has[p]: answered phase p */
    size_t slice_from, slice_to; /* the absent members it seals to */
    unsigned char *env;          /* its confirmation: own envelope, then its slice */
    bool *seen;                  /* which of those it sealed */
} dmkd_part;

typedef struct dmkd_absent {
    char *jid;
    unsigned char box[DK_BYTES];
    unsigned char key[DK_BYTES];
    unsigned char sig[DK_SIG_BYTES];
} dmkd_absent;

typedef struct dmkd_run {
    rooms *r;
    room *rm;
    unsigned char id[DK_RUN_ID_BYTES];
    uint64_t epoch, roster_version;
    unsigned char roster_hash[DK_BYTES];
    dk_ctx ctx;
    int phase;        /* 0: not yet sent; 1..3: collecting that round; 4: committing */
    int resume_phase; /* loaded from the database: the round to resume */
    bool resumed;     /* loaded from the database: the ring is fixed already */
    bool reading;     /* the bundle read is in flight (it owns the run if orphaned) */
    bool orphan;      /* the room gave it up while the read was in flight */
    bool stored;      /* has rows in dmkd_runs */
    size_t n, answered;
    dmkd_part *parts; /* the ring; parts[0] is the representative */
    unsigned char sid[DK_BYTES], k_prime[DK_BYTES];
    dmkd_absent *absent;
    size_t nabsent;
    long deadline_ms;
} dmkd_run;

/* ---- small helpers ---- */

static void run_free(dmkd_run *run)
{
    if (!run) return;
    for (size_t i = 0; i < run->n; i++) {
        free(run->parts[i].bare);
        free(run->parts[i].full);
        free(run->parts[i].env);
        free(run->parts[i].seen);
    }
    free(run->parts);
    for (size_t i = 0; i < run->nabsent; i++) free(run->absent[i].jid);
    free(run->absent);
    sodium_memzero(run->k_prime, sizeof run->k_prime);
    free(run);
}

static bool is_dropped(const room *rm, const char *full)
{
    for (size_t i = 0; i < rm->nrun_dropped; i++)
        if (strcmp(rm->run_dropped[i], full) == 0) return true;
    return false;
}

static void drop_member(rooms *r, room *rm, const char *full)
{
    if (is_dropped(rm, full)) return;
    char **n = realloc(rm->run_dropped, (rm->nrun_dropped + 1) * sizeof *n);
    if (!n) return;
    rm->run_dropped = n;
    if (!(n[rm->nrun_dropped] = strdup(full))) return;
    rm->nrun_dropped++;
    r->stats.dmkd_members_dropped++;
}

void dmkd_epoch_committed(room *rm)
{
    for (size_t i = 0; i < rm->nrun_dropped; i++) free(rm->run_dropped[i]);
    free(rm->run_dropped);
    rm->run_dropped = NULL;
    rm->nrun_dropped = 0;
}

void dmkd_room_free(room *rm)
{
    if (rm->run) {
        /* A read in flight still points at it: it frees the run. */
        if (rm->run->reading) rm->run->orphan = true;
        else run_free(rm->run);
        rm->run = NULL;
    }
    dmkd_epoch_committed(rm);
}

static void b64_attr(xmpp_stanza_t *el, const char *name, const unsigned char *v, size_t n,
                     bool *ok)
{
    char *s = st_b64_encode(v, n);
    if (!s) {
        *ok = false;
        return;
    }
    xmpp_stanza_set_attribute(el, name, s);
    free(s);
}

static void u64_attr(xmpp_stanza_t *el, const char *name, uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    xmpp_stanza_set_attribute(el, name, buf);
}

/* A headline from the room to one participant holding one NS_KEYS child. */
static xmpp_stanza_t *headline(rooms *r, const dmkd_run *run, const char *to, const char *name,
                               xmpp_stanza_t **child)
{
    xmpp_stanza_t *m = st_new(link_ctx(r->link), "message", "headline", run->rm->name, to, NULL);
    xmpp_stanza_t *c = m ? st_add(m, name, NS_KEYS) : NULL;
    if (!c) {
        if (m) xmpp_stanza_release(m);
        return NULL;
    }
    bool ok = true;
    b64_attr(c, "run", run->id, sizeof run->id, &ok);
    u64_attr(c, "epoch", run->epoch);
    if (!ok) {
        xmpp_stanza_release(m);
        return NULL;
    }
    *child = c;
    return m;
}

static void write_done(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    rooms *r = arg;
    (void)res;
    (void)nres;
    r->writes_in_flight--;
    if (!ok) log_error(NULL, "key-distribution state not stored: %s", err ? err : "?");
}

static void submit(rooms *r, db_unit *u, int rc)
{
    if (rc != 0) {
        db_unit_free(u);
        log_error(NULL, "key-distribution state not stored: out of memory");
        return;
    }
    r->writes_in_flight++;
    db_submit(r->db, u, true, write_done, r);
}

static void forget_rows(rooms *r, const room *rm, const unsigned char id[DK_RUN_ID_BYTES])
{
    char rid[24];
    snprintf(rid, sizeof rid, "%lld", rm->id);
    db_unit *u = db_unit_new();
    if (!u) return;
    const char *p[2] = {rid, (const char *)id};
    int l[2] = {-1, DK_RUN_ID_BYTES}, f[2] = {0, 1};
    submit(r, u, db_unit_add(u, "DELETE FROM dmkd_runs WHERE room_id = $1 AND run_id = $2", 2, p, l, f));
}

/* ---- ending a run ---- */

static void tell_failed(rooms *r, const dmkd_run *run, const char *reason)
{
    for (size_t i = 0; i < run->n; i++) {
        xmpp_stanza_t *c, *m = headline(r, run, run->parts[i].full, "failed", &c);
        if (!m) continue;
        xmpp_stanza_set_attribute(c, "reason", reason);
        svc_send(r, m);
    }
}

/* Give the run up. restart: start another at once (without whoever was
 * dropped); else wait dmkd.retry_ms. */
static void run_fail(rooms *r, room *rm, const char *reason, bool restart)
{
    dmkd_run *run = rm->run;
    if (!run) return;
    log_warn(rm->name, "key-distribution run for epoch %" PRIu64 " ended: %s%s", run->epoch,
             reason, restart ? " (restarting)" : "");
    r->stats.dmkd_runs_failed++;
    tell_failed(r, run, reason);
    if (run->stored) forget_rows(r, rm, run->id);
    if (run->reading) run->orphan = true;
    else run_free(run);
    rm->run = NULL;
    if (restart) {
        rm->run_due_ms = r->now_ms;
    } else {
        rm->run_not_before_ms = r->now_ms + r->cfg->dmkd_retry_ms;
        if (rm->run_due_ms < 0) rm->run_due_ms = rm->run_not_before_ms;
    }
}

/* ---- starting ---- */

size_t dmkd_candidates(const room *rm)
{
    size_t n = 0;
    for (const occupant *o = rm->occupants; o; o = o->next) {
        if (!o->dmkd || !sr_roster_find(&rm->roster, o->bare_jid) || is_dropped(rm, o->full_jid))
            continue;
        bool seen = false;
        for (const occupant *p = rm->occupants; p != o && !seen; p = p->next)
            seen = p->dmkd && strcmp(p->bare_jid, o->bare_jid) == 0 && !is_dropped(rm, p->full_jid);
        if (!seen) n++;
    }
    return n;
}

void dmkd_schedule(rooms *r, room *rm, long delay_ms)
{
    long due = r->now_ms + delay_ms;
    if (rm->run_due_ms < 0 || due < rm->run_due_ms) rm->run_due_ms = due;
}

/* One session per member: the lowest full JID among its sessions present. */
static const occupant *session_of(const room *rm, const char *bare)
{
    const occupant *pick = NULL;
    for (const occupant *o = rm->occupants; o; o = o->next)
        if (o->dmkd && strcmp(o->bare_jid, bare) == 0 && !is_dropped(rm, o->full_jid) &&
            (!pick || strcmp(o->full_jid, pick->full_jid) < 0))
            pick = o;
    return pick;
}

static void send_phase(rooms *r, dmkd_run *run, size_t i);

static void enter_phase(rooms *r, dmkd_run *run, int phase)
{
    run->phase = phase;
    run->answered = 0;
    for (size_t i = 0; i < run->n; i++)
        if (run->parts[i].has[phase]) run->answered++;
    run->deadline_ms = r->now_ms + r->cfg->dmkd_round_timeout_ms;
    for (size_t i = 0; i < run->n; i++)
        if (!run->parts[i].has[phase]) send_phase(r, run, i);
}

static void persist_start(rooms *r, const dmkd_run *run)
{
    const room *rm = run->rm;
    char rid[24], ep[24], rv[24];
    snprintf(rid, sizeof rid, "%lld", rm->id);
    snprintf(ep, sizeof ep, "%" PRIu64, run->epoch);
    snprintf(rv, sizeof rv, "%" PRIu64, run->roster_version);
    size_t len = 1;
    for (size_t i = 0; i < run->n; i++)
        len += strlen(run->parts[i].bare) + strlen(run->parts[i].full) + 2;
    char *bares = malloc(len), *fulls = malloc(len);
    db_unit *u = db_unit_new();
    int rc = bares && fulls && u ? 0 : -1;
    if (rc == 0) {
        size_t kb = 0, kf = 0;
        for (size_t i = 0; i < run->n; i++) {
            kb += (size_t)sprintf(bares + kb, "%s%s", i ? "\n" : "", run->parts[i].bare);
            kf += (size_t)sprintf(fulls + kf, "%s%s", i ? "\n" : "", run->parts[i].full);
        }
        const char *p1[1] = {rid};
        rc |= db_unit_add(u, "DELETE FROM dmkd_runs WHERE room_id = $1", 1, p1, NULL, NULL);
        const char *p2[5] = {rid, (const char *)run->id, ep, rv, (const char *)run->roster_hash};
        int l2[5] = {-1, DK_RUN_ID_BYTES, -1, -1, DK_BYTES}, f2[5] = {0, 1, 0, 0, 1};
        rc |= db_unit_add(u,
                          "INSERT INTO dmkd_runs (room_id, run_id, epoch, roster_version, "
                          "roster_hash, phase) VALUES ($1, $2, $3, $4, $5, 1)",
                          5, p2, l2, f2);
        const char *p3[3] = {rid, bares, fulls};
        rc |= db_unit_add(u,
                          "INSERT INTO dmkd_parts (room_id, position, jid, full_jid) "
                          "SELECT $1, u.i - 1, u.b, u.f FROM unnest(string_to_array($2, "
                          "chr(10)), string_to_array($3, chr(10))) WITH ORDINALITY AS u(b, f, i)",
                          3, p3, NULL, NULL);
    }
    free(bares);
    free(fulls);
    if (!u) return;
    submit(r, u, rc);
}

static void persist_phase(rooms *r, const dmkd_run *run)
{
    char rid[24], ph[4];
    snprintf(rid, sizeof rid, "%lld", run->rm->id);
    snprintf(ph, sizeof ph, "%d", run->phase);
    db_unit *u = db_unit_new();
    if (!u) return;
    const char *p[5] = {rid, (const char *)run->id, ph, (const char *)run->sid,
                        (const char *)run->k_prime};
    int l[5] = {-1, DK_RUN_ID_BYTES, -1, DK_BYTES, DK_BYTES}, f[5] = {0, 1, 0, 1, 1};
    /* k' is known to the component alone until round 3 is sent; storing it
     * reveals nothing the component does not already know. */
    submit(r, u,
           db_unit_add(u,
                       run->phase >= 3
                           ? "UPDATE dmkd_runs SET phase = $3, sid = $4, k_prime = $5 "
                             "WHERE room_id = $1 AND run_id = $2"
                           : "UPDATE dmkd_runs SET phase = $3, sid = $4 "
                             "WHERE room_id = $1 AND run_id = $2",
                       run->phase >= 3 ? 5 : 4, p, l, f));
}

static void persist_answer(rooms *r, const dmkd_run *run, size_t i, int phase)
{
    const dmkd_part *pt = &run->parts[i];
    char rid[24], pos[24];
    snprintf(rid, sizeof rid, "%lld", run->rm->id);
    snprintf(pos, sizeof pos, "%zu", i);
    db_unit *u = db_unit_new();
    if (!u) return;
    const unsigned char *a = phase == 1 ? pt->R : pt->T, *b = phase == 1 ? pt->c : pt->second,
                        *s = phase == 1 ? pt->sig1 : pt->sig2;
    const char *p[6] = {rid, pos, (const char *)run->id, (const char *)a, (const char *)b,
                        (const char *)s};
    int l[6] = {-1, -1, DK_RUN_ID_BYTES, DK_BYTES, DK_BYTES, DK_SIG_BYTES};
    int f[6] = {0, 0, 1, 1, 1, 1};
    submit(r, u,
           db_unit_add(u,
                       phase == 1 ? "UPDATE dmkd_parts SET r_point = $4, commitment = $5, sig1 = $6 "
                                    "WHERE room_id = $1 AND position = $2 AND EXISTS (SELECT 1 "
                                    "FROM dmkd_runs WHERE room_id = $1 AND run_id = $3)"
                                  : "UPDATE dmkd_parts SET t = $4, second = $5, sig2 = $6 "
                                    "WHERE room_id = $1 AND position = $2 AND EXISTS (SELECT 1 "
                                    "FROM dmkd_runs WHERE room_id = $1 AND run_id = $3)",
                       6, p, l, f));
}

static int cmp_part(const void *a, const void *b)
{
    return strcmp(((const dmkd_part *)a)->bare, ((const dmkd_part *)b)->bare);
}

typedef struct start_read {
    rooms *r;
    room *rm;
    dmkd_run *run;
} start_read;

/* The bundles of every member (and who held the current epoch): choose the
 * ring, or for a resumed run rebuild what was not stored; then send. */
static void bundles_apply(rooms *r, room *rm, dmkd_run *run, bool ok, PGresult *const *res,
                          int nres, const char *err)
{
    if (!ok || nres != 1) {
        log_error(rm->name, "key-distribution run not started: %s", err ? err : "?");
        rm->run = NULL;
        run_free(run);
        rm->run_not_before_ms = r->now_ms + r->cfg->dmkd_retry_ms;
        rm->run_due_ms = rm->run_not_before_ms;
        return;
    }
    if (rm->roster.version != run->roster_version || rm->current_epoch + 1 != run->epoch) {
        /* The room moved on while we read; start over from where it is. */
        run_fail(r, rm, "roster-changed", true);
        return;
    }
    const PGresult *b = res[0];
    int rows = PQntuples(b);
    if (!run->resumed) {
        /* Participants: members present, not dropped, with a bundle. */
        dmkd_part *parts = calloc((size_t)rows + 1, sizeof *parts);
        size_t n = 0, rep = SIZE_MAX;
        if (!parts) goto oom;
        run->parts = parts;
        for (int i = 0; i < rows; i++) {
            const char *jid = PQgetvalue(b, i, 0);
            const sr_member *m = sr_roster_find(&rm->roster, jid);
            const occupant *o = m ? session_of(rm, jid) : NULL;
            if (!o || svc_bytea(b, i, 1, parts[n].box, DK_BYTES) != DK_BYTES) continue;
            if (!(parts[n].bare = strdup(jid)) || !(parts[n].full = strdup(o->full_jid))) {
                run->n = n + 1;
                goto oom;
            }
            memcpy(parts[n].pk, m->key, DK_BYTES);
            if (rep == SIZE_MAX && strcmp(PQgetvalue(b, i, 3), "t") == 0) rep = n;
            n++;
        }
        run->n = n;
        if (n < 2) {
            rm->run = NULL;
            run_free(run);
            rm->run_not_before_ms = r->now_ms + r->cfg->dmkd_retry_ms;
            if ((rm->run_requested || epoch_unusable(r, rm)) &&
                (rm->last_nudge_ms == 0 || r->now_ms - rm->last_nudge_ms >= 60000))
                epoch_nudge_room(r, rm, rm->current_epoch == 0 ? "none" : "membership", r->now_ms);
            return;
        }
        /* The representative held the epoch before (it will have to re-key
         * the archive); the rest of the ring in JID order. */
        if (rep == SIZE_MAX) rep = 0;
        if (rep != 0) {
            dmkd_part t = parts[0];
            parts[0] = parts[rep];
            parts[rep] = t;
        }
        qsort(parts + 1, n - 1, sizeof *parts, cmp_part);
    } else {
        for (size_t i = 0; i < run->n; i++) {
            bool found = false;
            for (int k = 0; k < rows && !found; k++)
                if (strcmp(PQgetvalue(b, k, 0), run->parts[i].bare) == 0)
                    found = svc_bytea(b, k, 1, run->parts[i].box, DK_BYTES) == DK_BYTES;
            const sr_member *m = sr_roster_find(&rm->roster, run->parts[i].bare);
            if (!found || !m) {
                run_fail(r, rm, "roster-changed", true);
                return;
            }
            memcpy(run->parts[i].pk, m->key, DK_BYTES);
        }
    }
    /* Absent members: every other member with a bundle. */
    run->absent = calloc((size_t)rows + 1, sizeof *run->absent);
    if (!run->absent) goto oom;
    for (int i = 0; i < rows; i++) {
        const char *jid = PQgetvalue(b, i, 0);
        bool in = false;
        for (size_t k = 0; k < run->n && !in; k++) in = strcmp(run->parts[k].bare, jid) == 0;
        if (in || !sr_roster_find(&rm->roster, jid)) continue;
        dmkd_absent *a = &run->absent[run->nabsent];
        if (svc_bytea(b, i, 1, a->box, DK_BYTES) != DK_BYTES ||
            svc_bytea(b, i, 2, a->sig, DK_SIG_BYTES) != DK_SIG_BYTES ||
            svc_bytea(b, i, 4, a->key, DK_BYTES) != DK_BYTES)
            continue;
        if (!(a->jid = strdup(jid))) goto oom;
        run->nabsent++;
    }
    /* About absent/online seals each, in contiguous slices. */
    for (size_t i = 0; i < run->n; i++) {
        run->parts[i].slice_from = i * run->nabsent / run->n;
        run->parts[i].slice_to = (i + 1) * run->nabsent / run->n;
    }
    if (!run->resumed) {
        if (!dk_ctx_build(&run->ctx, rm->name, run->epoch, run->roster_hash, run->id)) goto oom;
        r->stats.dmkd_runs_started++;
        log_info(rm->name,
                 "key-distribution run for epoch %" PRIu64 ": %zu members present, %zu absent, "
                 "representative %s",
                 run->epoch, run->n, run->nabsent, run->parts[0].bare);
        run->stored = true;
        persist_start(r, run);
        enter_phase(r, run, 1);
    } else {
        int phase = run->resume_phase;
        log_info(rm->name, "key-distribution run for epoch %" PRIu64 " resumed in round %d",
                 run->epoch, phase);
        if (phase == 3) {
            /* Confirmations are not stored: ask everyone again. */
            for (size_t i = 0; i < run->n; i++) run->parts[i].has[3] = false;
        }
        enter_phase(r, run, phase);
    }
    return;
oom:
    log_error(rm->name, "key-distribution run not started: out of memory");
    run_fail(r, rm, "aborted", false);
}

static void bundles_read(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    start_read *sr = arg;
    rooms *r = sr->r;
    room *rm = sr->rm;
    dmkd_run *run = sr->run;
    free(sr);
    room_release(r, rm);
    run->reading = false;
    if (run->orphan || rm->run != run) {
        run_free(run);
        return;
    }
    if (!run->resumed) {
        bundles_apply(r, rm, run, ok, res, nres, err);
        return;
    }
    /* The room waited (busy) so that answers to the resumed run find it. */
    bundles_apply(r, rm, run, ok, res, nres, err);
    room_op_done(r, rm);
}

static void read_bundles(rooms *r, room *rm, dmkd_run *run)
{
    start_read *sr = malloc(sizeof *sr);
    size_t len = 1;
    for (size_t i = 0; i < rm->roster.nmembers; i++) len += strlen(rm->roster.members[i].jid) + 1;
    char *list = malloc(len);
    if (!sr || !list) {
        free(sr);
        free(list);
        rm->run = NULL;
        run_free(run);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < rm->roster.nmembers; i++)
        k += (size_t)sprintf(list + k, "%s%s", i ? "\n" : "", rm->roster.members[i].jid);
    char rid[24], cur[24];
    snprintf(rid, sizeof rid, "%lld", rm->id);
    snprintf(cur, sizeof cur, "%" PRIu64, rm->current_epoch);
    sr->r = r;
    sr->rm = rm;
    sr->run = run;
    run->reading = true;
    rm->refs++;
    const char *p[3] = {list, rid, cur};
    db_read1(r->db,
             "SELECT i.jid, i.box_pk, i.bundle_sig, "
             "EXISTS (SELECT 1 FROM envelopes e WHERE e.room_id = $2 AND e.epoch = $3 "
             "AND e.recipient = i.jid), i.sign_pk FROM identities i "
             "WHERE i.jid = ANY(string_to_array($1, chr(10))) AND i.box_pk IS NOT NULL "
             "ORDER BY i.jid",
             3, p, NULL, NULL, bundles_read, sr);
    free(list);
}

static void run_start(rooms *r, room *rm)
{
    rm->run_due_ms = -1;
    /* Changes folded into an epoch made meanwhile (maybe by a lone member)
     * need no run; an explicit request always gets one. */
    if (!rm->run_requested && !epoch_unusable(r, rm)) return;
    if (dmkd_candidates(rm) < 2) {
        if ((rm->run_requested || epoch_unusable(r, rm)) && rm->current_epoch > 0 &&
            (rm->last_nudge_ms == 0 || r->now_ms - rm->last_nudge_ms >= 60000))
            epoch_nudge_room(r, rm, "membership", r->now_ms);
        return;
    }
    dmkd_run *run = calloc(1, sizeof *run);
    if (!run) return;
    run->r = r;
    run->rm = rm;
    randombytes_buf(run->id, sizeof run->id);
    run->epoch = rm->current_epoch + 1;
    run->roster_version = rm->roster.version;
    memcpy(run->roster_hash, rm->roster.head, DK_BYTES);
    rm->run = run;
    read_bundles(r, rm, run);
}

/* ---- the rounds ---- */

static void send_phase(rooms *r, dmkd_run *run, size_t i)
{
    const dmkd_part *pt = &run->parts[i];
    xmpp_stanza_t *c = NULL, *m = NULL;
    bool ok = true;
    if (run->phase == 1) {
        m = headline(r, run, pt->full, "round1", &c);
        if (!m) goto oom;
        u64_attr(c, "roster-version", run->roster_version);
        b64_attr(c, "roster-hash", run->roster_hash, DK_BYTES, &ok);
    } else if (run->phase == 2) {
        m = headline(r, run, pt->full, "round2", &c);
        if (!m) goto oom;
        b64_attr(c, "sid", run->sid, DK_BYTES, &ok);
        u64_attr(c, "n", run->n);
        u64_attr(c, "position", i + 1);
        const char *names[3] = {"left", "right", "representative"};
        size_t idx[3] = {(i + run->n - 1) % run->n, (i + 1) % run->n, 0};
        for (int k = 0; k < 3 && ok; k++) {
            const dmkd_part *q = &run->parts[idx[k]];
            xmpp_stanza_t *e = st_add(c, names[k], NULL);
            if (!e) goto oom;
            xmpp_stanza_set_attribute(e, "jid", q->bare);
            b64_attr(e, "R", q->R, DK_BYTES, &ok);
            b64_attr(e, "c", q->c, DK_BYTES, &ok);
            b64_attr(e, "sig", q->sig1, DK_SIG_BYTES, &ok);
        }
    } else if (run->phase == 3) {
        m = headline(r, run, pt->full, "round3", &c);
        if (!m) goto oom;
        unsigned char tp[DK_BYTES] = {0};
        for (size_t k = 0; k < i; k++)
            for (size_t b = 0; b < DK_BYTES; b++) tp[b] ^= run->parts[k].T[b];
        b64_attr(c, "k-prime", run->k_prime, DK_BYTES, &ok);
        b64_attr(c, "t-prime-i", tp, DK_BYTES, &ok);
        b64_attr(c, "t-prime", run->parts[0].second, DK_BYTES, &ok);
        for (size_t k = pt->slice_from; k < pt->slice_to && ok; k++) {
            const dmkd_absent *a = &run->absent[k];
            xmpp_stanza_t *e = st_add(c, "seal", NULL);
            if (!e) goto oom;
            xmpp_stanza_set_attribute(e, "jid", a->jid);
            b64_attr(e, "key", a->key, DK_BYTES, &ok);
            b64_attr(e, "box-key", a->box, DK_BYTES, &ok);
            b64_attr(e, "bundle-sig", a->sig, DK_SIG_BYTES, &ok);
        }
    } else {
        return;
    }
    if (!ok) goto oom;
    svc_send(r, m);
    return;
oom:
    if (m) xmpp_stanza_release(m);
    log_error(run->rm->name, "out of memory sending round %d to %s", run->phase, pt->full);
}

static void commit(rooms *r, room *rm);

/* Every T and k is in: check and combine, or drop the culprit. */
static void combine(rooms *r, room *rm)
{
    dmkd_run *run = rm->run;
    size_t n = run->n;
    const char **jids = calloc(n, sizeof *jids);
    unsigned char(*c)[DK_BYTES] = calloc(n, DK_BYTES), (*T)[DK_BYTES] = calloc(n, DK_BYTES),
                  (*k)[DK_BYTES] = calloc(n, DK_BYTES), (*tp)[DK_BYTES] = calloc(n, DK_BYTES);
    unsigned char ks[DK_BYTES];
    int rc = DK_COMBINE_INVALID;
    size_t bad = 0;
    if (jids && c && T && k && tp) {
        for (size_t i = 0; i < n; i++) {
            jids[i] = run->parts[i].bare;
            memcpy(c[i], run->parts[i].c, DK_BYTES);
            memcpy(T[i], run->parts[i].T, DK_BYTES);
            memcpy(k[i], run->parts[i].second, DK_BYTES);
        }
        randombytes_buf(ks, sizeof ks);
        rc = dk_combine(run->k_prime, tp, &bad, &run->ctx, n, jids, c, T, k, ks);
        sodium_memzero(ks, sizeof ks);
    }
    free(jids);
    free(c);
    free(T);
    if (k) sodium_memzero(k, n * DK_BYTES);
    free(k);
    free(tp);
    if (rc == DK_COMBINE_COMMITMENT) {
        log_warn(rm->name, "%s revealed a k that does not open its commitment: dropped",
                 run->parts[bad].bare);
        drop_member(r, rm, run->parts[bad].full);
        run_fail(r, rm, "member-dropped", true);
        return;
    }
    if (rc != DK_COMBINE_OK) {
        run_fail(r, rm, rc == DK_COMBINE_RING ? "key-mismatch" : "aborted", false);
        return;
    }
    run->phase = 3;
    persist_phase(r, run);
    enter_phase(r, run, 3);
}

static dmkd_part *answering_part(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el,
                                 int phase, size_t *index)
{
    char bare[SR_BARE_JID_MAX];
    if (!svc_require_member(r, rm, iq, bare, sizeof bare, "only members take part in runs"))
        return NULL;
    dmkd_run *run = rm->run;
    unsigned char id[DK_RUN_ID_BYTES];
    if (!st_b64_decode_exact(id, sizeof id, xmpp_stanza_get_attribute(el, "run"))) {
        svc_error(r, iq, rm->name, "modify", "not-acceptable", "bad-round",
                  "'run' must be the base64 of 16 bytes");
        return NULL;
    }
    if (!run || run->phase == 0 || sodium_memcmp(id, run->id, sizeof id) != 0) {
        svc_error(r, iq, rm->name, "cancel", "conflict", "unknown-run",
                  "no such key-distribution run now: it ended or was replaced");
        return NULL;
    }
    const char *from = xmpp_stanza_get_from(iq);
    for (size_t i = 0; i < run->n; i++) {
        dmkd_part *pt = &run->parts[i];
        if (strcmp(pt->bare, bare) != 0) continue;
        if (!from || strcmp(pt->full, from) != 0) {
            svc_error(r, iq, rm->name, "cancel", "not-acceptable", "unknown-run",
                      "another session of this member takes part in the run");
            return NULL;
        }
        if (run->phase != phase && !(run->phase > phase && pt->has[phase])) {
            char text[96];
            snprintf(text, sizeof text, "the run is collecting round %d, not %d", run->phase,
                     phase);
            svc_error(r, iq, rm->name, "cancel", "conflict", "unknown-run", text);
            return NULL;
        }
        *index = i;
        return pt;
    }
    svc_error(r, iq, rm->name, "cancel", "conflict", "unknown-run",
              "this member does not take part in the run");
    return NULL;
}

static bool decode_all(xmpp_stanza_t *el, const char *const *names, unsigned char *const *outs,
                       const size_t *lens, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (!st_b64_decode_exact(outs[i], lens[i], xmpp_stanza_get_attribute(el, names[i])))
            return false;
    return true;
}

static void handle_round1(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    size_t i;
    dmkd_part *pt = answering_part(r, rm, iq, el, 1, &i);
    if (!pt) return;
    dmkd_run *run = rm->run;
    unsigned char R[DK_BYTES], c[DK_BYTES], sig[DK_SIG_BYTES];
    const char *names[3] = {"R", "c", "sig"};
    unsigned char *outs[3] = {R, c, sig};
    size_t lens[3] = {DK_BYTES, DK_BYTES, DK_SIG_BYTES};
    if (!decode_all(el, names, outs, lens, 3)) {
        svc_error(r, iq, rm->name, "modify", "not-acceptable", "bad-round",
                  "round 1 needs R (32 bytes), c (32 bytes) and sig (64 bytes) in base64");
        return;
    }
    if (pt->has[1]) {
        bool same = memcmp(R, pt->R, DK_BYTES) == 0 && memcmp(c, pt->c, DK_BYTES) == 0 &&
                    memcmp(sig, pt->sig1, DK_SIG_BYTES) == 0;
        if (same) svc_send(r, st_iq_result(iq, rm->name));
        else svc_error(r, iq, rm->name, "modify", "not-acceptable", "bad-round",
                       "a different round 1 of this member was received already");
        return;
    }
    if (!dk_round1_ok(sig, &run->ctx, pt->bare, R, c, pt->pk)) {
        svc_error(r, iq, rm->name, "modify", "not-acceptable", "bad-round",
                  "round 1 does not verify: R must be a ristretto255 point and sig the "
                  "member's signature over this run");
        return;
    }
    memcpy(pt->R, R, DK_BYTES);
    memcpy(pt->c, c, DK_BYTES);
    memcpy(pt->sig1, sig, DK_SIG_BYTES);
    pt->has[1] = true;
    persist_answer(r, run, i, 1);
    svc_send(r, st_iq_result(iq, rm->name));
    if (++run->answered < run->n) return;
    /* Ring complete: the session id binds every commitment and point. */
    const char **jids = calloc(run->n, sizeof *jids);
    unsigned char(*cs)[DK_BYTES] = calloc(run->n, DK_BYTES), (*Rs)[DK_BYTES] = calloc(run->n, DK_BYTES);
    bool ok = jids && cs && Rs;
    for (size_t k = 0; ok && k < run->n; k++) {
        jids[k] = run->parts[k].bare;
        memcpy(cs[k], run->parts[k].c, DK_BYTES);
        memcpy(Rs[k], run->parts[k].R, DK_BYTES);
    }
    ok = ok && dk_sid(run->sid, &run->ctx, run->n, jids, cs, Rs);
    free(jids);
    free(cs);
    free(Rs);
    if (!ok) {
        run_fail(r, rm, "aborted", false);
        return;
    }
    run->phase = 2;
    persist_phase(r, run);
    enter_phase(r, run, 2);
}

static void handle_round2(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    size_t i;
    dmkd_part *pt = answering_part(r, rm, iq, el, 2, &i);
    if (!pt) return;
    dmkd_run *run = rm->run;
    unsigned char T[DK_BYTES], second[DK_BYTES], sig[DK_SIG_BYTES];
    const char *names[3] = {"T", "second", "sig"};
    unsigned char *outs[3] = {T, second, sig};
    size_t lens[3] = {DK_BYTES, DK_BYTES, DK_SIG_BYTES};
    if (!decode_all(el, names, outs, lens, 3)) {
        svc_error(r, iq, rm->name, "modify", "not-acceptable", "bad-round",
                  "round 2 needs T, second (32 bytes each) and sig (64 bytes) in base64");
        return;
    }
    if (pt->has[2]) {
        bool same = memcmp(T, pt->T, DK_BYTES) == 0 && memcmp(second, pt->second, DK_BYTES) == 0 &&
                    memcmp(sig, pt->sig2, DK_SIG_BYTES) == 0;
        if (same) svc_send(r, st_iq_result(iq, rm->name));
        else svc_error(r, iq, rm->name, "modify", "not-acceptable", "bad-round",
                       "a different round 2 of this member was received already");
        return;
    }
    if (!dk_round2_ok(sig, run->sid, pt->bare, T, second, pt->pk)) {
        svc_error(r, iq, rm->name, "modify", "not-acceptable", "bad-round",
                  "round 2 does not verify: sig must be the member's signature over this "
                  "run's session id, T and second");
        return;
    }
    memcpy(pt->T, T, DK_BYTES);
    memcpy(pt->second, second, DK_BYTES);
    memcpy(pt->sig2, sig, DK_SIG_BYTES);
    pt->has[2] = true;
    persist_answer(r, run, i, 2);
    svc_send(r, st_iq_result(iq, rm->name));
    if (++run->answered == run->n) combine(r, rm);
}

static void handle_confirm(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    size_t i;
    dmkd_part *pt = answering_part(r, rm, iq, el, 3, &i);
    if (!pt) return;
    dmkd_run *run = rm->run;
    if (pt->has[3]) {
        svc_send(r, st_iq_result(iq, rm->name));
        return;
    }
    unsigned char kc[DK_BYTES], check[DK_BYTES];
    if (!st_b64_decode_exact(kc, sizeof kc, xmpp_stanza_get_attribute(el, "kc"))) {
        svc_error(r, iq, rm->name, "modify", "not-acceptable", "bad-envelope",
                  "'kc' must be the base64 of 32 bytes");
        return;
    }
    /* The check header of archive re-encryption (absent from clients
     * before 0.3: the epoch then has none). */
    const char *chk = xmpp_stanza_get_attribute(el, "check");
    if (chk && (!st_b64_decode_exact(check, sizeof check, chk) || !rk_point_ok(check))) {
        svc_error(r, iq, rm->name, "modify", "not-acceptable", "bad-envelope",
                  "'check' must be the base64 of a ristretto255 point");
        return;
    }
    size_t want = 1 + pt->slice_to - pt->slice_from;
    unsigned char *env = calloc(want, EC_ENVELOPE_BYTES);
    bool *seen = calloc(want, sizeof *seen);
    char text[SR_BARE_JID_MAX + 96];
    const char *bad = NULL;
    if (!env || !seen) {
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        goto out;
    }
    size_t got = 0;
    for (xmpp_stanza_t *e = xmpp_stanza_get_children(el); e && !bad; e = xmpp_stanza_get_next(e)) {
        if (!xmpp_stanza_is_tag(e)) continue;
        const char *to = xmpp_stanza_get_attribute(e, "to");
        if (strcmp(xmpp_stanza_get_name(e), "envelope") != 0 || !to) {
            bad = "every child must be an <envelope/> with 'to'";
            break;
        }
        size_t slot = SIZE_MAX;
        const unsigned char *box = NULL;
        if (strcmp(to, pt->bare) == 0) {
            slot = 0;
            box = pt->box;
        } else {
            for (size_t k = pt->slice_from; k < pt->slice_to; k++)
                if (strcmp(run->absent[k].jid, to) == 0) {
                    slot = 1 + k - pt->slice_from;
                    box = run->absent[k].box;
                }
        }
        snprintf(text, sizeof text, "envelope for %s: ", to);
        if (slot == SIZE_MAX) {
            bad = "not one this member was asked to seal";
        } else if (seen[slot]) {
            bad = "twice";
        } else {
            unsigned char *blob = env + slot * EC_ENVELOPE_BYTES;
            const char *t = st_text(e);
            if (!t || !st_b64_decode_exact(blob, EC_ENVELOPE_BYTES, t))
                bad = "not the base64 of 145 bytes";
            else if (!ec_envelope_verify(blob, EC_ENVELOPE_BYTES, rm->name, run->epoch,
                                         run->roster_hash, pt->bare, to, box, pt->pk))
                bad = "the signature does not verify for this room, epoch, roster, sealer and "
                      "recipient";
            else {
                seen[slot] = true;
                got++;
            }
        }
    }
    if (!bad && !seen[0]) {
        snprintf(text, sizeof text, "envelope for %s: ", pt->bare);
        bad = "missing: every participant seals its own";
    }
    if (bad) {
        size_t l = strlen(text);
        snprintf(text + l, sizeof text - l, "%s", bad);
        svc_error(r, iq, rm->name, "modify", "not-acceptable", "bad-envelope", text);
        goto out;
    }
    /* An absent member's bundle that the participant refused (its checks
     * failed) gets no envelope, as a member without a bundle gets none: the
     * member is told when it next fetches. */
    if (got < want)
        log_warn(rm->name, "%s sealed %zu of the %zu envelopes asked of it", pt->bare, got - 1,
                 want - 1);
    memcpy(pt->kc, kc, DK_BYTES);
    pt->has_check = chk != NULL;
    if (chk) memcpy(pt->check, check, DK_BYTES);
    pt->env = env;
    pt->seen = seen;
    env = NULL;
    seen = NULL;
    pt->has[3] = true;
    svc_send(r, st_iq_result(iq, rm->name));
    if (++run->answered == run->n) commit(r, rm);
out:
    free(env);
    free(seen);
}

/* ---- commit ---- */

typedef struct commit_op {
    rooms *r;
    room *rm;
    dmkd_run *run;
    size_t nenv;
} commit_op;

static void committed(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    commit_op *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    dmkd_run *run = op->run;
    r->writes_in_flight--;
    rm->run = NULL;
    if (!ok || nres < 2 || PQntuples(res[1]) != 1) {
        log_warn(rm->name, "epoch %" PRIu64 " of the run not stored: %s", run->epoch,
                 err ? err : "the room is not at the epoch and roster the run began at");
        tell_failed(r, run, "roster-changed");
        forget_rows(r, rm, run->id);
        r->stats.dmkd_runs_failed++;
        rm->state = ROOM_LOADING; /* read the room again before the next stanza */
        rm->run_due_ms = r->now_ms + r->cfg->dmkd_coalesce_ms;
    } else {
        r->stats.dmkd_runs_committed++;
        epoch_committed(r, rm, run->epoch, run->roster_version,
                        strtoll(PQgetvalue(res[1], 0, 0), NULL, 10), run->parts[0].bare,
                        op->nenv);
    }
    run_free(run);
    free(op);
    room_op_done(r, rm);
}

static void commit(rooms *r, room *rm)
{
    dmkd_run *run = rm->run;
    for (size_t i = 1; i < run->n; i++)
        if (sodium_memcmp(run->parts[i].kc, run->parts[0].kc, DK_BYTES) != 0 ||
            run->parts[i].has_check != run->parts[0].has_check ||
            (run->parts[0].has_check &&
             memcmp(run->parts[i].check, run->parts[0].check, DK_BYTES) != 0)) {
            log_error(rm->name, "key confirmations differ (%s and %s): the members do not hold "
                      "one key", run->parts[0].bare, run->parts[i].bare);
            run_fail(r, rm, "key-mismatch", false);
            return;
        }
    if (rm->roster.version != run->roster_version || rm->current_epoch + 1 != run->epoch) {
        run_fail(r, rm, "roster-changed", true);
        return;
    }
    commit_op *op = calloc(1, sizeof *op);
    size_t nenv = run->n + run->nabsent, tolen = 1;
    for (size_t i = 0; i < run->n; i++) tolen += strlen(run->parts[i].bare) + 1;
    for (size_t i = 0; i < run->nabsent; i++) tolen += strlen(run->absent[i].jid) + 1;
    size_t sealers_len = 1;
    for (size_t i = 0; i < run->n; i++)
        sealers_len += (strlen(run->parts[i].bare) + 1) *
                       (1 + run->parts[i].slice_to - run->parts[i].slice_from);
    char *tos = malloc(tolen), *sealers = malloc(sealers_len);
    unsigned char *blobs = malloc(nenv * EC_ENVELOPE_BYTES);
    db_unit *u = db_unit_new();
    int rc = op && tos && sealers && blobs && u ? 0 : -1;
    if (rc == 0) {
        size_t kt = 0, ks = 0, e = 0;
        for (size_t i = 0; i < run->n; i++) {
            const dmkd_part *pt = &run->parts[i];
            size_t cnt = 1 + pt->slice_to - pt->slice_from;
            for (size_t k = 0; k < cnt; k++) {
                if (!pt->seen[k]) continue;
                const char *to = k == 0 ? pt->bare : run->absent[pt->slice_from + k - 1].jid;
                kt += (size_t)sprintf(tos + kt, "%s%s", e ? "\n" : "", to);
                ks += (size_t)sprintf(sealers + ks, "%s%s", e ? "\n" : "", pt->bare);
                memcpy(blobs + e * EC_ENVELOPE_BYTES, pt->env + k * EC_ENVELOPE_BYTES,
                       EC_ENVELOPE_BYTES);
                e++;
            }
        }
        nenv = e;
        char id[24], num[24], prev[24], rv[24];
        snprintf(id, sizeof id, "%lld", rm->id);
        snprintf(num, sizeof num, "%" PRIu64, run->epoch);
        snprintf(prev, sizeof prev, "%" PRIu64, run->epoch - 1);
        snprintf(rv, sizeof rv, "%" PRIu64, run->roster_version);
        const char *p1[4] = {id, num, prev, rv};
        rc |= db_unit_add(u,
                          "UPDATE rooms SET current_epoch = $2 WHERE room_id = $1 AND "
                          "current_epoch = $3 AND roster_version = $4",
                          4, p1, NULL, NULL);
        const char *p2[7] = {id, num, rv, (const char *)run->roster_hash,
                             (const char *)run->parts[0].kc, run->parts[0].bare,
                             run->parts[0].has_check ? (const char *)run->parts[0].check : NULL};
        int l2[7] = {-1, -1, -1, DK_BYTES, DK_BYTES, -1, DK_BYTES};
        int f2[7] = {0, 0, 0, 1, 1, 0, 1};
        rc |= db_unit_add(u,
                          "INSERT INTO epochs (room_id, epoch, roster_version, roster_hash, kc, "
                          "sealer, check_header) SELECT $1, $2, $3, $4, $5, $6, $7 FROM rooms "
                          "WHERE room_id = $1 AND current_epoch = $2 AND roster_version = $3 "
                          "RETURNING extract(epoch FROM created_at)::bigint",
                          7, p2, l2, f2);
        const char *p3[5] = {id, num, tos, sealers, (const char *)blobs};
        int l3[5] = {-1, -1, -1, -1, (int)(nenv * EC_ENVELOPE_BYTES)}, f3[5] = {0, 0, 0, 0, 1};
        rc |= db_unit_add(u,
                          "INSERT INTO envelopes (room_id, epoch, recipient, sealer, blob) "
                          "SELECT $1, $2, u.r, u.s, substring($5::bytea FROM "
                          "(u.i - 1)::int * 145 + 1 FOR 145) FROM unnest(string_to_array($3, "
                          "chr(10)), string_to_array($4, chr(10))) WITH ORDINALITY AS u(r, s, i) "
                          "WHERE EXISTS (SELECT 1 FROM epochs WHERE room_id = $1 AND epoch = $2)",
                          5, p3, l3, f3);
        const char *p4[2] = {id, (const char *)run->id};
        int l4[2] = {-1, DK_RUN_ID_BYTES}, f4[2] = {0, 1};
        rc |= db_unit_add(u, "DELETE FROM dmkd_runs WHERE room_id = $1 AND run_id = $2", 2, p4,
                          l4, f4);
    }
    free(tos);
    free(sealers);
    free(blobs);
    if (rc != 0) {
        if (u) db_unit_free(u);
        free(op);
        run_fail(r, rm, "aborted", false);
        return;
    }
    op->r = r;
    op->rm = rm;
    op->run = run;
    op->nenv = nenv;
    run->phase = 4;
    rm->busy = true;
    rm->refs++;
    r->writes_in_flight++;
    db_submit(r->db, u, true, committed, op);
}

/* ---- requests ---- */

static void handle_rekey(rooms *r, room *rm, xmpp_stanza_t *iq)
{
    char bare[SR_BARE_JID_MAX];
    if (!svc_require_member(r, rm, iq, bare, sizeof bare, "only members may ask for a new epoch"))
        return;
    bool run = rm->run || dmkd_candidates(rm) >= 2;
    if (run && !rm->run) {
        rm->run_requested = true;
        /* A run already due (a membership change being folded) keeps its
         * time: the member who made the change asks right after it. */
        if (rm->run_due_ms < 0) dmkd_schedule(r, rm, 0);
    }
    xmpp_stanza_t *res = st_iq_result(iq, rm->name);
    xmpp_stanza_t *el = res ? st_add(res, "rekey", NS_KEYS) : NULL;
    if (!el) {
        if (res) xmpp_stanza_release(res);
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    xmpp_stanza_set_attribute(el, "mode", run ? "run" : "solo");
    log_info(rm->name, "%s asked for a new epoch: %s", bare, run ? "run" : "solo");
    svc_send(r, res);
    /* Due now: start without waiting for the next tick. */
    if (!rm->run && rm->run_due_ms >= 0 && rm->run_due_ms <= r->now_ms &&
        r->now_ms >= rm->run_not_before_ms)
        run_start(r, rm);
}

static void handle_abort(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    size_t i;
    dmkd_run *run = rm->run;
    int phase = run ? run->phase : 1;
    dmkd_part *pt = run && phase >= 1 && phase <= 3 ? answering_part(r, rm, iq, el, phase, &i)
                                                    : answering_part(r, rm, iq, el, 1, &i);
    if (!pt) return;
    const char *why = xmpp_stanza_get_attribute(el, "reason");
    log_warn(rm->name, "%s aborted the run: %.200s", pt->bare, why ? why : "no reason given");
    svc_send(r, st_iq_result(iq, rm->name));
    run_fail(r, rm, "aborted", false);
}

void dmkd_handle_iq(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    const char *type = xmpp_stanza_get_type(iq), *name = xmpp_stanza_get_name(el);
    if (!type || strcmp(type, "set") != 0) {
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                  "key-distribution requests are IQ sets");
        return;
    }
    if (rm->run && rm->run->phase == 4) {
        /* Committing: the room is busy, so this cannot happen; be safe. */
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "try again");
        return;
    }
    if (strcmp(name, "rekey") == 0) handle_rekey(r, rm, iq);
    else if (strcmp(name, "round1") == 0) handle_round1(r, rm, iq, el);
    else if (strcmp(name, "round2") == 0) handle_round2(r, rm, iq, el);
    else if (strcmp(name, "confirm") == 0) handle_confirm(r, rm, iq, el);
    else if (strcmp(name, "abort") == 0) handle_abort(r, rm, iq, el);
    else
        svc_error(r, iq, rm->name, "cancel", "feature-not-implemented", NULL,
                  "unknown key-distribution request");
}

/* ---- triggers, deadlines, resumption ---- */

void dmkd_roster_changed(rooms *r, room *rm, bool membership)
{
    if (rm->run) {
        /* The run's roster hash is no longer the head: its epoch could not
         * be stored. Fold this change into the next run. */
        run_fail(r, rm, "roster-changed", false);
        rm->run_not_before_ms = 0;
        rm->run_due_ms = r->now_ms + r->cfg->dmkd_coalesce_ms;
        return;
    }
    if (membership && rm->current_epoch > 0) {
        /* Push back: changes arriving together make one run. */
        rm->run_due_ms = r->now_ms + r->cfg->dmkd_coalesce_ms;
    }
}

void dmkd_tick(rooms *r, long now_ms)
{
    for (size_t b = 0; b < r->nbuckets; b++) {
        for (room *rm = r->buckets[b]; rm; rm = rm->hnext) {
            if (rm->state != ROOM_READY || rm->busy) continue;
            dmkd_run *run = rm->run;
            if (run && run->phase >= 1 && run->phase <= 3 && now_ms > run->deadline_ms) {
                size_t late = 0;
                for (size_t i = 0; i < run->n; i++)
                    if (!run->parts[i].has[run->phase]) {
                        log_warn(rm->name, "%s did not answer round %d in time: dropped",
                                 run->parts[i].full, run->phase);
                        drop_member(r, rm, run->parts[i].full);
                        late++;
                    }
                run_fail(r, rm, "timeout", late > 0);
                continue;
            }
            if (!run && rm->run_due_ms >= 0 && now_ms >= rm->run_due_ms &&
                now_ms >= rm->run_not_before_ms && rm->id > 0)
                run_start(r, rm);
        }
    }
}

void dmkd_loaded(rooms *r, room *rm, const PGresult *runres, const PGresult *parts)
{
    if (rm->run || !runres || PQntuples(runres) != 1) return;
    dmkd_run *run = calloc(1, sizeof *run);
    int n = parts ? PQntuples(parts) : 0;
    if (!run) return;
    run->r = r;
    run->rm = rm;
    run->resumed = true;
    bool ok = svc_bytea(runres, 0, 0, run->id, DK_RUN_ID_BYTES) == DK_RUN_ID_BYTES &&
              svc_bytea(runres, 0, 3, run->roster_hash, DK_BYTES) == DK_BYTES && n >= 2;
    run->epoch = strtoull(PQgetvalue(runres, 0, 1), NULL, 10);
    run->roster_version = strtoull(PQgetvalue(runres, 0, 2), NULL, 10);
    run->phase = atoi(PQgetvalue(runres, 0, 4));
    if (run->phase >= 2) ok = ok && svc_bytea(runres, 0, 5, run->sid, DK_BYTES) == DK_BYTES;
    if (run->phase >= 3) ok = ok && svc_bytea(runres, 0, 6, run->k_prime, DK_BYTES) == DK_BYTES;
    ok = ok && (run->parts = calloc((size_t)n, sizeof *run->parts));
    for (int i = 0; ok && i < n; i++) {
        dmkd_part *pt = &run->parts[i];
        run->n = (size_t)i + 1;
        ok = atoi(PQgetvalue(parts, i, 0)) == i && (pt->bare = strdup(PQgetvalue(parts, i, 1))) &&
             (pt->full = strdup(PQgetvalue(parts, i, 2)));
        if (!ok) break;
        pt->has[1] = !PQgetisnull(parts, i, 3);
        if (pt->has[1])
            ok = svc_bytea(parts, i, 3, pt->R, DK_BYTES) == DK_BYTES &&
                 svc_bytea(parts, i, 4, pt->c, DK_BYTES) == DK_BYTES &&
                 svc_bytea(parts, i, 5, pt->sig1, DK_SIG_BYTES) == DK_SIG_BYTES;
        pt->has[2] = ok && !PQgetisnull(parts, i, 6);
        if (pt->has[2])
            ok = svc_bytea(parts, i, 6, pt->T, DK_BYTES) == DK_BYTES &&
                 svc_bytea(parts, i, 7, pt->second, DK_BYTES) == DK_BYTES &&
                 svc_bytea(parts, i, 8, pt->sig2, DK_SIG_BYTES) == DK_SIG_BYTES;
    }
    ok = ok && run->phase >= 1 && run->phase <= 3 &&
         dk_ctx_build(&run->ctx, rm->name, run->epoch, run->roster_hash, run->id);
    if (!ok || run->epoch != rm->current_epoch + 1 || run->roster_version != rm->roster.version) {
        /* Damaged or overtaken: start afresh. */
        log_info(rm->name, "stored key-distribution run discarded: %s",
                 ok ? "the room moved on" : "unreadable");
        forget_rows(r, rm, run->id);
        run_free(run);
        dmkd_schedule(r, rm, 0);
        return;
    }
    rm->run = run;
    run->stored = true;
    run->resume_phase = run->phase;
    run->phase = 0; /* until the bundles are read */
    rm->busy = true;
    rm->refs++;
    read_bundles(r, rm, run);
    if (rm->run != run) room_op_done(r, rm); /* the read could not be sent */
}
