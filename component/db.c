/* PostgreSQL engine for sealroomd: one libpq connection in non-blocking
 * pipeline mode, driven by the event loop (see db.h).
 *
 * Why group commit. Every write that answers a client (a stored message, a
 * roster change) must be durable before it is acknowledged, and with
 * synchronous_commit on a commit costs one WAL flush: committing each unit
 * alone caps the daemon at a few hundred writes a second. So at most one
 * write transaction is in flight; units submitted meanwhile queue up and the
 * next transaction carries all of them (up to write_batch_max) as
 * BEGIN; stmts...; COMMIT; Sync, sent in one go. The flush cost is shared and
 * throughput grows with load while an idle server still commits at once.
 * Results are held until COMMIT has succeeded, so no caller acts on a write
 * that could still roll back.
 *
 * Why retry alone. Grouping makes units share fate: one unique violation
 * would abort the transaction of hundreds of unrelated units. When a group
 * fails nothing in it was committed, so units are re-run in their own
 * transactions (pipelined, one Sync each) and only the units that fail on
 * their own are reported as failed. Re-running every unit alone would cost
 * one WAL flush each (hundreds for one bad unit), so when the error can be
 * pinned on one unit's statement (the units before it ran fine, those after
 * it never ran), only that unit is re-run alone and the rest are grouped
 * again: those before it in one group, those after it in another. A group
 * whose COMMIT failed (no culprit), and any unit caught in
 * DB_GROUP_FAILS_ALONE failed groups (many bad units at once), is re-run
 * unit by unit. A unit in flight when the connection drops is different:
 * its COMMIT may or may not have happened, so it fails with "connection
 * lost" and the caller decides (messages carry origin-ids, so a client
 * resend is idempotent).
 *
 * Why retries keep the order. Callers submit dependent writes one after the
 * other and rely on them committing in that order (a run's row is inserted,
 * then updated, then deleted; of two units claiming one key the first must
 * win). So the units of a failed group are re-run before any write queued
 * behind them, in their own order: the culprit is not re-run ahead of the
 * units before it (it may have failed because of them); units run alone are
 * pipelined, but a re-run group is the last entry sent until it completes
 * (should it fail, nothing behind it may commit before its units are re-run
 * in turn). Units that come back unfinished (a failed group, entries
 * poisoned behind a failed block) were sent before anything still queued:
 * once no write is in flight they go back to the head of the retries, in
 * the order they were sent. The price: a bad unit in the middle of a group
 * costs one commit more (the units before it commit apart from those after).
 *
 * A subtlety of pipelining explicit transactions: after an error inside
 * BEGIN..COMMIT the Sync does not end the transaction, so everything already
 * pipelined behind it (reads, retries) fails with SQLSTATE 25P02 without
 * having run. We then send a ROLLBACK, hold back new reads until it is done,
 * and re-send those "poisoned" entries: they provably did not execute.
 *
 * Reads are each their own statements + Sync (an implicit transaction),
 * pipelined behind whatever is in flight. Results come back in send order on
 * the one connection, so a FIFO of sent entries tells whose each result is.
 *
 * Why prepared statements. Parsing and planning a statement costs the
 * server more than running it when the statement is a large WITH query
 * touching a few rows (the archive's store statement: about two thirds of
 * its time). A statement added with db_unit_add_prepared is prepared once
 * per connection, by its own Parse + Sync sent just before the first entry
 * that uses it (outside any transaction block, so a failed group cannot
 * take it down), and from then on only bound and executed. A write group
 * behind the Parse uses the name at once; if the Parse fails, so does the
 * group, which is retried as any failed group is, with the text now sent
 * unnamed as any other statement's. Reads use the name only once the Parse
 * has succeeded. A new connection starts with nothing prepared. */
#include "db.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define DB_BACKOFF_MIN_MS 250
#define DB_BACKOFF_MAX_MS 10000
#define DB_CONNECT_TIMEOUT_MS 10000
#define DB_DEFAULT_BATCH_MAX 512
#define DB_DEFAULT_UNAVAILABLE_MS 10000
#define DB_MAX_INFLIGHT_READS 1024
#define DB_MAX_PARAMS 65535
#define DB_ERRLEN 512
#define DB_OOM_SLOTS 64
#define DB_GROUP_FAILS_ALONE 4
/* Key of the advisory lock that serialises migrations across instances
 * ("sealroom" in ASCII, as a bigint). */
#define DB_MIGRATE_LOCK "7233174596149128557"
#define SQLSTATE_IN_FAILED_TRANSACTION "25P02"
/* Distinct statement texts prepared per connection; more run unnamed. */
#define DB_MAX_PREPARED 32

typedef struct db_stmt {
    char *sql;
    int nparams;
    char **values;
    int *lengths;
    int *formats;
    bool prepare; /* added with db_unit_add_prepared */
} db_stmt;

struct db_unit {
    db_unit *next;
    db_stmt *stmts;
    int nstmts, cap;
    const char *broken; /* why a db_unit_add failed: the unit fails on submit */
    bool binary_results;
    bool write;
    int failed_groups; /* groups this unit was in that failed */
    bool alone;        /* re-run in a transaction of its own */
    db_done_cb cb;
    void *arg;
    const char *fail_err; /* set when failed without results (static text) */
};

typedef enum { ENT_READ, ENT_WRITE, ENT_ROLLBACK, ENT_PREPARE } entry_kind;

/* A statement text prepared (or being prepared) on this connection under
 * the name "sr_ps<index>". */
typedef enum { PS_NONE, PS_SENT, PS_READY, PS_FAILED } ps_state;
typedef struct prepared {
    char *sql;
    int nparams;
    ps_state state;
} prepared;

/* Everything between two Syncs: one read, one write transaction (a group or
 * one retried unit), our own ROLLBACK or one statement's Parse. */
typedef struct entry {
    struct entry *next;
    entry_kind kind;
    bool poisoned; /* pipelined behind a failed transaction block */
    db_unit *units;
    int nunits;
    int nq;         /* statements sent, BEGIN and COMMIT included */
    int qidx;       /* statement whose result is being received */
    bool have_cur;  /* got a result for qidx (a NULL then moves on) */
    int fail_idx;   /* first failed statement, -1 none */
    int ps;         /* ENT_PREPARE: the statement prepared (index into db.ps) */
    char fail_state[6];
    char err[DB_ERRLEN];
    PGresult **res;
} entry;

typedef struct unit_list {
    db_unit *head, *tail;
    unsigned n;
} unit_list;

typedef enum { ST_DOWN, ST_CONNECTING, ST_CONNECTED, ST_READY } db_state;

struct db {
    char *conninfo;
    PGconn *conn;
    db_state state;
    PostgresPollingStatusType poll_dir;
    bool want_flush;

    /* Times come from db_tick's now_ms; -1 means "stamp at the next tick". */
    long connect_started;
    long retry_at;        /* when retry_pending: retry_delay after the drop */
    int retry_delay;
    bool retry_pending;
    int backoff;
    long down_since;      /* -1: up (or not yet observed down) */
    bool ever_connected;

    unit_list wq;         /* writes waiting for the next group */
    unit_list retryq;     /* units of failed groups, in order, before wq */
    unit_list returned;   /* sent and back unfinished: go before retryq */
    unit_list rq;         /* reads not yet sent */
    unit_list rretryq;    /* poisoned reads to re-send first */
    unit_list failq;      /* failed without being sent; callbacks pending */

    entry *fifo_head, *fifo_tail;
    unsigned writes_inflight; /* write entries in the FIFO */
    unsigned reads_inflight;
    unsigned units_inflight;
    bool need_rollback;
    bool rollback_inflight;

    struct {
        db_done_cb cb;
        void *arg;
    } oom[DB_OOM_SLOTS]; /* callbacks owed for units we could not allocate */
    int noom;

    int batch_max;
    int unavailable_ms;
    db_stats stats;

    prepared ps[DB_MAX_PREPARED]; /* texts seen by db_unit_add_prepared */
    int nps;
};

static const char ERR_OOM[] = "out of memory";
static const char ERR_SHUTDOWN[] = "shutting down";
static const char ERR_UNAVAILABLE[] = "database unavailable";
static const char ERR_BAD_STMT[] = "invalid statement arguments";

/* ---- small helpers ---- */

static long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* libpq's messages span lines (with tab indents): make them one log line. */
static void one_line(char *s) {
    char *w = s;
    for (const char *r = s; *r; r++) {
        bool space = *r == '\n' || *r == '\r' || *r == '\t' || *r == ' ';
        if (space && (w == s || w[-1] == ' ')) continue;
        *w++ = space ? ' ' : *r;
    }
    while (w > s && w[-1] == ' ') w--;
    *w = '\0';
}

static void list_push(unit_list *l, db_unit *u) {
    u->next = NULL;
    if (l->tail)
        l->tail->next = u;
    else
        l->head = u;
    l->tail = u;
    l->n++;
}

static void list_push_front(unit_list *l, db_unit *u) {
    u->next = l->head;
    l->head = u;
    if (!l->tail) l->tail = u;
    l->n++;
}

static db_unit *list_pop(unit_list *l) {
    db_unit *u = l->head;
    if (!u) return NULL;
    l->head = u->next;
    if (!l->head) l->tail = NULL;
    l->n--;
    u->next = NULL;
    return u;
}

/* Move every unit of `front` to the head of `l`, in order. */
static void list_splice_front(unit_list *front, unit_list *l) {
    if (!front->head) return;
    front->tail->next = l->head;
    if (!l->tail) l->tail = front->tail;
    l->head = front->head;
    l->n += front->n;
    *front = (unit_list){0};
}

static void stmt_clear(db_stmt *s) {
    for (int i = 0; i < s->nparams; i++) free(s->values[i]);
    free(s->values);
    free(s->lengths);
    free(s->formats);
    free(s->sql);
}

/* ---- units ---- */

db_unit *db_unit_new(void) {
    return calloc(1, sizeof(db_unit));
}

void db_unit_free(db_unit *u) {
    if (!u) return;
    for (int i = 0; i < u->nstmts; i++) stmt_clear(&u->stmts[i]);
    free(u->stmts);
    free(u);
}

void db_unit_binary_results(db_unit *u, bool on) {
    if (u) u->binary_results = on;
}

static int unit_add(db_unit *u, const char *sql, int nparams, const char *const *values,
                    const int *lengths, const int *formats, bool prepare) {
    if (!u) return -1;
    if (!sql || nparams < 0 || nparams > DB_MAX_PARAMS || (nparams > 0 && !values)) {
        u->broken = ERR_BAD_STMT;
        return -1;
    }
    if (u->nstmts == u->cap) {
        int cap = u->cap ? u->cap * 2 : 2;
        db_stmt *n = realloc(u->stmts, (size_t)cap * sizeof *n);
        if (!n) goto oom;
        u->stmts = n;
        u->cap = cap;
    }
    db_stmt s = {0};
    s.prepare = prepare;
    s.sql = strdup(sql);
    if (!s.sql) goto oom;
    if (nparams > 0) {
        s.values = calloc((size_t)nparams, sizeof *s.values);
        s.lengths = calloc((size_t)nparams, sizeof *s.lengths);
        s.formats = calloc((size_t)nparams, sizeof *s.formats);
        if (!s.values || !s.lengths || !s.formats) goto oom_stmt;
        s.nparams = nparams;
        for (int i = 0; i < nparams; i++) {
            if (!values[i]) continue; /* SQL NULL */
            bool binary = formats && formats[i] == 1 && lengths && lengths[i] >= 0;
            size_t len = binary ? (size_t)lengths[i] : strlen(values[i]);
            /* One spare byte so a zero-length binary value is not a NULL pointer. */
            s.values[i] = malloc(len + 1);
            if (!s.values[i]) goto oom_stmt;
            memcpy(s.values[i], values[i], len);
            s.values[i][len] = '\0';
            s.lengths[i] = (int)len;
            s.formats[i] = binary ? 1 : 0;
        }
    }
    u->stmts[u->nstmts++] = s;
    return 0;
oom_stmt:
    stmt_clear(&s);
oom:
    u->broken = ERR_OOM;
    return -1;
}

int db_unit_add(db_unit *u, const char *sql, int nparams, const char *const *values,
                const int *lengths, const int *formats) {
    return unit_add(u, sql, nparams, values, lengths, formats, false);
}

int db_unit_add_prepared(db_unit *u, const char *sql, int nparams, const char *const *values,
                         const int *lengths, const int *formats) {
    return unit_add(u, sql, nparams, values, lengths, formats, true);
}

/* ---- completion ---- */

static void call_done(db *d, db_unit *u, bool ok, PGresult *const *results, int nresults,
                      const char *err) {
    if (u->write) {
        if (ok)
            d->stats.units_committed++;
        else
            d->stats.units_failed++;
    } else {
        d->stats.reads++;
    }
    db_done_cb cb = u->cb;
    void *arg = u->arg;
    db_unit_free(u);
    if (cb) cb(arg, ok, ok ? results : NULL, ok ? nresults : 0, ok ? NULL : err);
}

static void fail_later(db *d, db_unit *u, const char *err) {
    u->fail_err = err;
    list_push(&d->failq, u);
}

/* Deliver failures that were decided outside db_process/db_tick. */
static void run_failq(db *d) {
    while (d->noom > 0) {
        d->noom--;
        db_done_cb cb = d->oom[d->noom].cb;
        void *arg = d->oom[d->noom].arg;
        d->stats.reads++;
        if (cb) cb(arg, false, NULL, 0, ERR_OOM);
    }
    db_unit *u;
    while ((u = list_pop(&d->failq))) call_done(d, u, false, NULL, 0, u->fail_err);
}

static void fail_list(db *d, unit_list *l, const char *err) {
    db_unit *u;
    while ((u = list_pop(l))) call_done(d, u, false, NULL, 0, err);
}

static void entry_free(entry *e) {
    if (!e) return;
    if (e->res) {
        for (int i = 0; i < e->nq; i++) PQclear(e->res[i]);
        free(e->res);
    }
    free(e);
}

/* ---- connection management ---- */

static void notice_receiver(void *arg, const PGresult *res) {
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (sev && strcmp(sev, "WARNING") == 0)
        log_warn("db", "server warning: %s", msg ? msg : "?");
    else
        log_debug("db", "server %s: %s", sev ? sev : "notice", msg ? msg : "?");
}

static void schedule_retry(db *d) {
    d->state = ST_DOWN;
    d->retry_pending = true;
    d->retry_delay = d->backoff;
    d->retry_at = -1; /* counted from the next db_tick, the only clock we have */
    d->backoff = d->backoff * 2 > DB_BACKOFF_MAX_MS ? DB_BACKOFF_MAX_MS : d->backoff * 2;
}

static void start_connect(db *d) {
    const char *const keys[] = {"dbname", "fallback_application_name", NULL};
    const char *const vals[] = {d->conninfo, "sealroomd", NULL};
    d->retry_pending = false;
    d->conn = PQconnectStartParams(keys, vals, 1);
    if (!d->conn || PQstatus(d->conn) == CONNECTION_BAD) {
        log_warn("db", "cannot start connecting: %s",
                 d->conn ? PQerrorMessage(d->conn) : "out of memory");
        PQfinish(d->conn);
        d->conn = NULL;
        schedule_retry(d);
        return;
    }
    PQsetNoticeReceiver(d->conn, notice_receiver, d);
    d->state = ST_CONNECTING;
    d->poll_dir = PGRES_POLLING_WRITING;
    d->connect_started = -1;
}

static void connect_failed(db *d) {
    char msg[DB_ERRLEN];
    snprintf(msg, sizeof msg, "%s", d->conn ? PQerrorMessage(d->conn) : "?");
    one_line(msg);
    log_warn("db", "connection attempt failed (next in %d ms): %s", d->backoff, msg);
    PQfinish(d->conn);
    d->conn = NULL;
    schedule_retry(d);
}

static void connected(db *d) {
    d->state = ST_CONNECTED;
    d->backoff = DB_BACKOFF_MIN_MS;
    if (d->ever_connected) d->stats.reconnects++;
    d->ever_connected = true;
    log_info("db", "connected (server %d, backend pid %d)", PQserverVersion(d->conn),
             PQbackendPID(d->conn));
}

/* One step of the asynchronous connect. */
static void connect_step(db *d) {
    d->poll_dir = PQconnectPoll(d->conn);
    if (d->poll_dir == PGRES_POLLING_FAILED)
        connect_failed(d);
    else if (d->poll_dir == PGRES_POLLING_OK)
        connected(d);
}

/* Fail every unit that was sent and is still awaiting its results. */
static void fail_sent(db *d, const char *err)
{
    entry *e = d->fifo_head;
    d->fifo_head = d->fifo_tail = NULL;
    while (e) {
        entry *next = e->next;
        db_unit *u = e->units;
        e->units = NULL;
        entry_free(e);
        while (u) {
            db_unit *un = u->next;
            call_done(d, u, false, NULL, 0, err);
            u = un;
        }
        e = next;
    }
}

static void conn_lost(db *d, const char *why) {
    char err[DB_ERRLEN];
    char detail[DB_ERRLEN];
    snprintf(detail, sizeof detail, "%s", why ? why : (d->conn ? PQerrorMessage(d->conn) : ""));
    one_line(detail);
    snprintf(err, sizeof err, "connection lost%s%.480s", detail[0] ? ": " : "", detail);
    log_warn("db", "%s (%u units in flight fail; reconnecting)", err, d->units_inflight);
    PQfinish(d->conn);
    d->conn = NULL;
    d->want_flush = false;
    d->need_rollback = false;
    d->rollback_inflight = false;
    /* Prepared statements died with the session (a failed Parse is tried
     * again on the next one, too). */
    for (int i = 0; i < d->nps; i++) d->ps[i].state = PS_NONE;
    schedule_retry(d);

    d->writes_inflight = d->reads_inflight = d->units_inflight = 0;
    fail_sent(d, err);
    /* Units to be re-run alone were in a group that failed, maybe because
     * of them: as for units in flight, the caller decides. The other units
     * waiting to be re-run did not commit and stay queued, as do units never
     * sent; the retries still go first on the next connection. */
    list_splice_front(&d->returned, &d->retryq);
    unit_list keep = {0};
    db_unit *u;
    while ((u = list_pop(&d->retryq))) {
        if (u->alone)
            call_done(d, u, false, NULL, 0, err);
        else
            list_push(&keep, u);
    }
    d->retryq = keep;
}

/* ---- sending ---- */

static void fifo_push(db *d, entry *e) {
    e->next = NULL;
    if (d->fifo_tail)
        d->fifo_tail->next = e;
    else
        d->fifo_head = e;
    d->fifo_tail = e;
    d->units_inflight += (unsigned)e->nunits;
    if (e->kind == ENT_WRITE) d->writes_inflight++;
    if (e->kind == ENT_READ) d->reads_inflight++;
}

static entry *entry_new(entry_kind kind, db_unit *units, int nunits) {
    int nq = kind == ENT_WRITE ? 2 : kind == ENT_ROLLBACK || kind == ENT_PREPARE ? 1 : 0;
    for (db_unit *u = units; u; u = u->next) nq += u->nstmts;
    entry *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->res = calloc((size_t)(nq > 0 ? nq : 1), sizeof *e->res);
    if (!e->res) {
        free(e);
        return NULL;
    }
    e->kind = kind;
    e->units = units;
    e->nunits = nunits;
    e->nq = nq;
    e->fail_idx = -1;
    return e;
}

static bool send_plain(db *d, const char *sql) {
    return PQsendQueryParams(d->conn, sql, 0, NULL, NULL, NULL, NULL, 0) == 1;
}

/* The slot of a statement added with db_unit_add_prepared (taken now if
 * there is room), or -1: run it unnamed. */
static int ps_slot(db *d, const db_stmt *s) {
    if (!s->prepare) return -1;
    for (int i = 0; i < d->nps; i++)
        if (d->ps[i].nparams == s->nparams && strcmp(d->ps[i].sql, s->sql) == 0) return i;
    if (d->nps == DB_MAX_PREPARED) return -1;
    char *sql = strdup(s->sql);
    if (!sql) return -1;
    d->ps[d->nps] = (prepared){sql, s->nparams, PS_NONE};
    return d->nps++;
}

static void ps_name(int i, char *out, size_t cap) {
    snprintf(out, cap, "sr_ps%d", i);
}

/* A prepared statement's name is used once its Parse has succeeded and, by
 * a write, already while its Parse is on its way (sent just before it). */
static bool send_unit(db *d, const db_unit *u, bool write) {
    for (int i = 0; i < u->nstmts; i++) {
        const db_stmt *s = &u->stmts[i];
        int k = ps_slot(d, s);
        bool named = k >= 0 && (d->ps[k].state == PS_READY || (write && d->ps[k].state == PS_SENT));
        int fmt = u->binary_results ? 1 : 0;
        if (named) {
            char name[16];
            ps_name(k, name, sizeof name);
            if (!PQsendQueryPrepared(d->conn, name, s->nparams, (const char *const *)s->values,
                                     s->lengths, s->formats, fmt))
                return false;
        } else if (!PQsendQueryParams(d->conn, s->sql, s->nparams, NULL,
                                      (const char *const *)s->values, s->lengths, s->formats,
                                      fmt)) {
            return false;
        }
    }
    return true;
}

/* Queue one entry's statements and its Sync. The entry goes into the FIFO
 * first, so a send failure fails its units along with everything else in
 * flight. Returns false when the connection was lost. */
static bool send_entry(db *d, entry *e) {
    fifo_push(d, e);
    bool ok = true;
    if (e->kind == ENT_ROLLBACK) {
        ok = send_plain(d, "ROLLBACK");
    } else if (e->kind == ENT_PREPARE) {
        char name[16];
        ps_name(e->ps, name, sizeof name);
        ok = PQsendPrepare(d->conn, name, d->ps[e->ps].sql, d->ps[e->ps].nparams, NULL) == 1;
    } else if (e->kind == ENT_WRITE) {
        ok = send_plain(d, "BEGIN");
        for (db_unit *u = e->units; ok && u; u = u->next) ok = send_unit(d, u, true);
        ok = ok && send_plain(d, "COMMIT");
    } else {
        ok = send_unit(d, e->units, false);
    }
    ok = ok && PQpipelineSync(d->conn) == 1;
    if (!ok) {
        conn_lost(d, NULL);
        return false;
    }
    d->want_flush = true;
    return true;
}

/* Unlink up to `max` units from the head of `l`, as a NULL-terminated chain. */
static db_unit *take_units(unit_list *l, int max, int *taken) {
    db_unit *head = NULL, *tail = NULL;
    int n = 0;
    while (n < max && l->head) {
        db_unit *u = list_pop(l);
        if (tail)
            tail->next = u;
        else
            head = u;
        tail = u;
        n++;
    }
    *taken = n;
    return head;
}

/* Put a chain of units back at the head of `l`, in order. */
static void requeue_front(unit_list *l, db_unit *chain) {
    db_unit *rev = NULL;
    while (chain) {
        db_unit *n = chain->next;
        chain->next = rev;
        rev = chain;
        chain = n;
    }
    while (rev) {
        db_unit *n = rev->next;
        list_push_front(l, rev);
        rev = n;
    }
}

/* Before the unit is sent: a Parse (with its own Sync) for each of its
 * statements to prepare that this connection has not got yet. Returns
 * false when the connection was lost (the unit itself is not touched). */
static bool send_prepares(db *d, const db_unit *u) {
    for (int i = 0; i < u->nstmts; i++) {
        int k = ps_slot(d, &u->stmts[i]);
        if (k < 0 || d->ps[k].state != PS_NONE) continue;
        entry *e = entry_new(ENT_PREPARE, NULL, 0);
        if (!e) continue; /* unnamed this time */
        e->ps = k;
        d->ps[k].state = PS_SENT;
        if (!send_entry(d, e)) return false;
    }
    return true;
}

static bool send_writes(db *d) {
    if (d->writes_inflight > 0) return true;
    list_splice_front(&d->returned, &d->retryq);
    if (d->retryq.head) {
        /* In order: each unit to run alone in its own transaction, a run of
         * the others as one group. Pipelined, but nothing after a group: if
         * it fails, its units are re-run before anything behind them. */
        while (d->retryq.head) {
            int want = 0;
            for (const db_unit *u = d->retryq.head;
                 u && want < d->batch_max && (want == 0 || !u->alone); u = u->next) {
                if (!send_prepares(d, u)) return false;
                want++;
                if (u->alone) break;
            }
            int n;
            db_unit *units = take_units(&d->retryq, want, &n);
            entry *e = entry_new(ENT_WRITE, units, n);
            if (!e) {
                while (units) {
                    db_unit *next = units->next;
                    fail_later(d, units, ERR_OOM);
                    units = next;
                }
                continue;
            }
            if (!send_entry(d, e)) return false;
            if (n > 1) break;
        }
        return true;
    }
    if (!d->wq.head) return true;
    int n;
    db_unit *units = take_units(&d->wq, d->batch_max, &n);
    for (const db_unit *u = units; u; u = u->next)
        if (!send_prepares(d, u)) {
            requeue_front(&d->wq, units); /* not sent: queued as before */
            return false;
        }
    entry *e = entry_new(ENT_WRITE, units, n);
    if (!e) {
        requeue_front(&d->wq, units);
        return true; /* try again at the next tick */
    }
    return send_entry(d, e);
}

static bool send_reads(db *d) {
    if (d->need_rollback || d->rollback_inflight) return true;
    while (d->reads_inflight < DB_MAX_INFLIGHT_READS && (d->rretryq.head || d->rq.head)) {
        unit_list *l = d->rretryq.head ? &d->rretryq : &d->rq;
        if (!send_prepares(d, l->head)) return false;
        db_unit *u = list_pop(l);
        entry *e = entry_new(ENT_READ, u, 1);
        if (!e) {
            fail_later(d, u, ERR_OOM);
            continue;
        }
        if (!send_entry(d, e)) return false;
    }
    return true;
}

static void flush_out(db *d) {
    if (d->state != ST_READY || !d->want_flush) return;
    int r = PQflush(d->conn);
    if (r < 0)
        conn_lost(d, NULL);
    else
        d->want_flush = r == 1;
}

static bool enter_pipeline(db *d) {
    if (PQsetnonblocking(d->conn, 1) != 0 || PQenterPipelineMode(d->conn) != 1) {
        conn_lost(d, NULL);
        return false;
    }
    d->state = ST_READY;
    d->down_since = -1;
    return true;
}

/* Send whatever may go now: a pending ROLLBACK first (it must precede any
 * retry), then writes, then reads. */
static void pump(db *d) {
    if (d->state == ST_CONNECTED && !enter_pipeline(d)) return;
    if (d->state != ST_READY) return;
    if (d->need_rollback) {
        entry *e = entry_new(ENT_ROLLBACK, NULL, 0);
        if (!e) return; /* try again at the next tick */
        d->need_rollback = false;
        d->rollback_inflight = true;
        if (!send_entry(d, e)) return;
    }
    if (!send_writes(d)) return;
    if (!send_reads(d)) return;
    flush_out(d);
}

/* ---- receiving ---- */

static bool status_ok(ExecStatusType st) {
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* Called on the first failed statement of an entry (the head of the FIFO). */
static void first_error(db *d, entry *e, const PGresult *r) {
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    snprintf(e->fail_state, sizeof e->fail_state, "%s", state ? state : "");
    if (PQresultStatus(r) == PGRES_PIPELINE_ABORTED)
        snprintf(e->err, sizeof e->err, "pipeline aborted");
    else if (msg)
        snprintf(e->err, sizeof e->err, "%s: %s", state ? state : "?????", msg);
    else {
        snprintf(e->err, sizeof e->err, "%s", PQresultErrorMessage(r));
        one_line(e->err);
    }

    bool in_failed = strcmp(e->fail_state, SQLSTATE_IN_FAILED_TRANSACTION) == 0;
    if (e->poisoned && in_failed) return; /* did not run; re-sent later */
    /* Does this error leave the session inside an aborted transaction? A
     * failure of a write's own statements does (the COMMIT is skipped); a
     * failed COMMIT ends the transaction; a read is an implicit transaction
     * the Sync rolls back, unless something left a block open (25P02). */
    bool aborted_block = (e->kind == ENT_WRITE && e->qidx < e->nq - 1) || in_failed;
    if (!aborted_block) return;
    if (e->kind == ENT_ROLLBACK) return; /* handled when the entry completes */
    d->need_rollback = true;
    for (entry *p = e->next; p; p = p->next) p->poisoned = true;
}

static void finish_read(db *d, entry *e) {
    db_unit *u = e->units;
    e->units = NULL;
    d->reads_inflight--;
    d->units_inflight--;
    bool ok = e->fail_idx < 0 && e->qidx == e->nq;
    if (!ok && e->poisoned && strcmp(e->fail_state, SQLSTATE_IN_FAILED_TRANSACTION) == 0) {
        list_push(&d->rretryq, u);
        return;
    }
    if (!ok && !e->err[0]) snprintf(e->err, sizeof e->err, "missing results");
    call_done(d, u, ok, e->res, e->nq, e->err);
}

static void finish_write(db *d, entry *e) {
    d->writes_inflight--;
    d->units_inflight -= (unsigned)e->nunits;
    db_unit *units = e->units;
    e->units = NULL;
    PGresult *commit = e->qidx == e->nq ? e->res[e->nq - 1] : NULL;
    bool ok = e->fail_idx < 0 && commit && strcmp(PQcmdStatus(commit), "COMMIT") == 0;
    if (ok) {
        d->stats.commits++;
        int off = 1;
        while (units) {
            db_unit *next = units->next;
            int n = units->nstmts;
            call_done(d, units, true, e->res + off, n, NULL);
            off += n;
            units = next;
        }
        return;
    }
    if (!e->err[0]) snprintf(e->err, sizeof e->err, "transaction did not commit");
    /* Entries complete in the order they were sent, and no write sent after
     * this one commits (nothing follows a group; the rest are poisoned). */
    if (e->poisoned && e->fail_idx == 0 &&
        strcmp(e->fail_state, SQLSTATE_IN_FAILED_TRANSACTION) == 0) {
        /* Never ran: send again as it was. */
        while (units) {
            db_unit *next = units->next;
            list_push(&d->returned, units);
            units = next;
        }
        return;
    }
    if (e->nunits > 1) {
        /* Which unit's statement failed? None when it was BEGIN or COMMIT. */
        db_unit *culprit = NULL;
        int off = 1;
        for (db_unit *u = units; u && e->fail_idx < e->nq - 1; u = u->next) {
            if (e->fail_idx >= off && e->fail_idx < off + u->nstmts) culprit = u;
            off += u->nstmts;
        }
        log_debug("db", "group of %d units failed (%s); retrying %s", e->nunits, e->err,
                  culprit ? "the failed unit alone" : "each unit alone");
        while (units) {
            db_unit *next = units->next;
            if (!culprit || units == culprit || ++units->failed_groups >= DB_GROUP_FAILS_ALONE)
                units->alone = true;
            list_push(&d->returned, units);
            units = next;
        }
        return;
    }
    call_done(d, units, false, NULL, 0, e->err);
}

/* Returns false when the entry's completion dropped the connection. */
static bool finish_entry(db *d, entry *e) {
    switch (e->kind) {
    case ENT_READ:
        finish_read(d, e);
        break;
    case ENT_WRITE:
        finish_write(d, e);
        break;
    case ENT_PREPARE: {
        prepared *p = &d->ps[e->ps];
        if (e->fail_idx < 0 && e->qidx == e->nq) {
            p->state = PS_READY;
        } else if (e->poisoned && strcmp(e->fail_state, SQLSTATE_IN_FAILED_TRANSACTION) == 0) {
            p->state = PS_NONE; /* never ran: again with the next group */
        } else {
            p->state = PS_FAILED;
            log_warn("db", "statement not prepared (it runs unprepared from now on): %s", e->err);
        }
        break;
    }
    case ENT_ROLLBACK:
        d->rollback_inflight = false;
        if (e->fail_idx >= 0) {
            /* The session may still be in an aborted block: start afresh. */
            char why[DB_ERRLEN];
            snprintf(why, sizeof why, "ROLLBACK failed: %.480s", e->err);
            entry_free(e);
            conn_lost(d, why);
            return false;
        }
        break;
    }
    entry_free(e);
    return true;
}

/* Take every result libpq has ready and hand completed entries over. */
static void drain(db *d) {
    while (d->state == ST_READY && d->fifo_head) {
        if (PQisBusy(d->conn)) break;
        PGresult *r = PQgetResult(d->conn);
        entry *e = d->fifo_head;
        if (!r) {
            /* NULL ends one statement's results; a second NULL means
             * nothing more has arrived yet. */
            if (!e->have_cur) break;
            e->have_cur = false;
            e->qidx++;
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            d->fifo_head = e->next;
            if (!d->fifo_head) d->fifo_tail = NULL;
            if (e->have_cur) e->qidx++;
            if (!finish_entry(d, e)) return;
            continue;
        }
        if (e->qidx >= e->nq) {
            /* More results than statements sent: our accounting is off and
             * nothing on this connection can be trusted. */
            PQclear(r);
            conn_lost(d, "unexpected result from server");
            return;
        }
        PQclear(e->res[e->qidx]);
        e->res[e->qidx] = r;
        e->have_cur = true;
        if (!status_ok(st) && e->fail_idx < 0) {
            e->fail_idx = e->qidx;
            first_error(d, e, r);
        }
    }
    if (d->state == ST_READY && PQstatus(d->conn) == CONNECTION_BAD) conn_lost(d, NULL);
}

/* ---- public API ---- */

db *db_new(const char *conninfo) {
    db *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->conninfo = strdup(conninfo ? conninfo : "");
    if (!d->conninfo) {
        free(d);
        return NULL;
    }
    d->backoff = DB_BACKOFF_MIN_MS;
    d->batch_max = DB_DEFAULT_BATCH_MAX;
    d->unavailable_ms = DB_DEFAULT_UNAVAILABLE_MS;
    d->down_since = -1;
    d->retry_at = -1;
    d->connect_started = -1;
    start_connect(d);
    return d;
}

void db_free(db *d) {
    if (!d) return;
    fail_sent(d, ERR_SHUTDOWN);
    run_failq(d);
    fail_list(d, &d->returned, ERR_SHUTDOWN);
    fail_list(d, &d->retryq, ERR_SHUTDOWN);
    fail_list(d, &d->wq, ERR_SHUTDOWN);
    fail_list(d, &d->rretryq, ERR_SHUTDOWN);
    fail_list(d, &d->rq, ERR_SHUTDOWN);
    PQfinish(d->conn);
    for (int i = 0; i < d->nps; i++) free(d->ps[i].sql);
    free(d->conninfo);
    free(d);
}

void db_set_write_batch_max(db *d, int max) {
    if (d) d->batch_max = max < 1 ? 1 : max;
}

void db_set_unavailable_timeout_ms(db *d, int ms) {
    if (d) d->unavailable_ms = ms < 0 ? 0 : ms;
}

int db_connect_blocking(db *d, int timeout_ms, char *err, size_t errlen) {
    long deadline = mono_ms() + timeout_ms;
    char last[DB_ERRLEN] = "timed out";
    for (;;) {
        if (d->state == ST_CONNECTED || d->state == ST_READY) return 0;
        long now = mono_ms();
        if (now >= deadline) break;
        if (d->state == ST_DOWN) {
            start_connect(d);
            if (d->state != ST_CONNECTING) {
                /* Could not even start: wait out the back-off. */
                long wait = d->retry_delay < deadline - now ? d->retry_delay : deadline - now;
                struct timespec ts = {wait / 1000, (wait % 1000) * 1000000L};
                nanosleep(&ts, NULL);
                continue;
            }
        }
        struct pollfd p = {PQsocket(d->conn),
                           d->poll_dir == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};
        int r = poll(&p, 1, (int)(deadline - now));
        if (r < 0 && errno != EINTR) {
            snprintf(last, sizeof last, "poll: %s", strerror(errno));
            break;
        }
        if (r <= 0) continue;
        d->poll_dir = PQconnectPoll(d->conn);
        if (d->poll_dir == PGRES_POLLING_OK) {
            connected(d);
        } else if (d->poll_dir == PGRES_POLLING_FAILED) {
            snprintf(last, sizeof last, "%s", PQerrorMessage(d->conn));
            one_line(last);
            long wait = d->backoff;
            connect_failed(d);
            now = mono_ms();
            if (wait > deadline - now) wait = deadline - now;
            if (wait > 0) {
                struct timespec ts = {wait / 1000, (wait % 1000) * 1000000L};
                nanosleep(&ts, NULL);
            }
        }
    }
    snprintf(err, errlen, "cannot connect to PostgreSQL: %s", last);
    return -1;
}

PGconn *db_pgconn(db *d) {
    return d ? d->conn : NULL;
}

void db_submit(db *d, db_unit *u, bool write, db_done_cb cb, void *arg) {
    u->write = write;
    u->cb = cb;
    u->arg = arg;
    if (u->broken) {
        fail_later(d, u, u->broken);
        return;
    }
    list_push(write ? &d->wq : &d->rq, u);
}

void db_read1(db *d, const char *sql, int nparams, const char *const *values, const int *lengths,
              const int *formats, db_done_cb cb, void *arg) {
    db_unit *u = db_unit_new();
    if (!u) {
        if (d->noom == DB_OOM_SLOTS) {
            /* Cannot even remember whom to tell: the promise of exactly one
             * callback cannot be kept. */
            log_error("db", "out of memory with %d failures pending", d->noom);
            abort();
        }
        d->oom[d->noom].cb = cb;
        d->oom[d->noom].arg = arg;
        d->noom++;
        return;
    }
    db_unit_add(u, sql, nparams, values, lengths, formats);
    db_submit(d, u, false, cb, arg);
}

int db_pollfd(db *d, short *events) {
    *events = 0;
    if (!d->conn) return -1;
    switch (d->state) {
    case ST_CONNECTING:
        *events = d->poll_dir == PGRES_POLLING_READING ? POLLIN : POLLOUT;
        break;
    case ST_CONNECTED:
    case ST_READY:
        *events = POLLIN | (d->want_flush ? POLLOUT : 0);
        break;
    case ST_DOWN:
        return -1;
    }
    return PQsocket(d->conn);
}

void db_process(db *d, short revents) {
    if (d->state == ST_CONNECTING && revents) connect_step(d);
    if (d->state == ST_READY) {
        if (!PQconsumeInput(d->conn))
            conn_lost(d, NULL);
        else
            drain(d);
    }
    pump(d);
    run_failq(d);
}

void db_tick(db *d, long now_ms) {
    if (d->state == ST_CONNECTING) {
        if (d->connect_started < 0) d->connect_started = now_ms;
        if (now_ms - d->connect_started >= DB_CONNECT_TIMEOUT_MS) {
            log_warn("db", "connect timed out after %d ms", DB_CONNECT_TIMEOUT_MS);
            PQfinish(d->conn);
            d->conn = NULL;
            schedule_retry(d);
        }
    }
    if (d->state == ST_DOWN && d->retry_pending) {
        if (d->retry_at < 0) d->retry_at = now_ms + d->retry_delay;
        if (now_ms >= d->retry_at) start_connect(d);
    }
    if (d->state == ST_READY || d->state == ST_CONNECTED) {
        d->down_since = -1;
    } else {
        if (d->down_since < 0) d->down_since = now_ms;
        if (now_ms - d->down_since >= d->unavailable_ms) {
            /* Do not let requests hang while the database is away. */
            fail_list(d, &d->wq, ERR_UNAVAILABLE);
            fail_list(d, &d->rretryq, ERR_UNAVAILABLE);
            fail_list(d, &d->rq, ERR_UNAVAILABLE);
        }
    }
    pump(d);
    run_failq(d);
}

void db_get_stats(const db *d, db_stats *out) {
    *out = d->stats;
    out->queued_units = d->wq.n + d->returned.n + d->retryq.n + d->rq.n + d->rretryq.n;
    out->inflight_units = d->units_inflight;
}

bool db_is_ready(const db *d) {
    return d->state == ST_READY || d->state == ST_CONNECTED;
}

bool db_err_sqlstate_is(const char *err, const char *sqlstate) {
    return err && sqlstate && strlen(sqlstate) == 5 && strncmp(err, sqlstate, 5) == 0 &&
           err[5] == ':';
}

/* ---- migrations ---- */

typedef struct migration {
    long version;
    char *name;
} migration;

static int cmp_migration(const void *a, const void *b) {
    return strcmp(((const migration *)a)->name, ((const migration *)b)->name);
}

static void free_migrations(migration *m, size_t n) {
    for (size_t i = 0; i < n; i++) free(m[i].name);
    free(m);
}

/* NNN_name.sql: leading digits, an underscore, a non-empty name. */
static bool parse_migration_name(const char *name, long *version) {
    size_t len = strlen(name);
    if (len < 5 || strcmp(name + len - 4, ".sql") != 0) return false;
    size_t i = 0;
    while (name[i] >= '0' && name[i] <= '9') i++;
    if (i == 0 || i > 9 || name[i] != '_' || i + 1 >= len - 4) return false;
    *version = strtol(name, NULL, 10);
    return true;
}

static int list_migrations(const char *dir, migration **out, size_t *count, char *err,
                           size_t errlen) {
    DIR *dh = opendir(dir);
    if (!dh) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    migration *m = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(dh))) {
        size_t len = strlen(de->d_name);
        if (len < 4 || strcmp(de->d_name + len - 4, ".sql") != 0) continue;
        long version;
        if (!parse_migration_name(de->d_name, &version)) {
            snprintf(err, errlen, "%s/%s: migration files must be named NNN_name.sql", dir,
                     de->d_name);
            goto fail;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            migration *nm = realloc(m, ncap * sizeof *nm);
            if (!nm) goto oom;
            m = nm;
            cap = ncap;
        }
        m[n].name = strdup(de->d_name);
        if (!m[n].name) goto oom;
        m[n].version = version;
        n++;
    }
    closedir(dh);
    if (n > 0) qsort(m, n, sizeof *m, cmp_migration);
    for (size_t i = 1; i < n; i++) {
        if (m[i].version == m[i - 1].version) {
            snprintf(err, errlen, "%s: %s and %s have the same version", dir, m[i - 1].name,
                     m[i].name);
            free_migrations(m, n);
            return -1;
        }
    }
    *out = m;
    *count = n;
    return 0;
oom:
    snprintf(err, errlen, "%s: out of memory", dir);
fail:
    closedir(dh);
    free_migrations(m, n);
    return -1;
}

static char *read_file(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 4096) {
            size_t ncap = cap ? cap * 2 : 16384;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                snprintf(err, errlen, "%s: out of memory", path);
                goto fail;
            }
            buf = nb;
            cap = ncap;
        }
        size_t r = fread(buf + len, 1, cap - len - 1, f);
        len += r;
        if (r == 0) break;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        goto fail;
    }
    fclose(f);
    buf[len] = '\0';
    if (strlen(buf) != len) {
        snprintf(err, errlen, "%s: contains a NUL byte", path);
        free(buf);
        return NULL;
    }
    return buf;
fail:
    fclose(f);
    free(buf);
    return NULL;
}

/* Run one command; on failure write "<what>: <server message>" into err. */
static int exec_ok(PGconn *c, const char *sql, const char *what, char *err, size_t errlen) {
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(r);
        return 0;
    }
    snprintf(err, errlen, "%s: %s", what, r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    one_line(err);
    PQclear(r);
    return -1;
}

int db_migrate(db *d, const char *dir, char *err, size_t errlen) {
    if (d->state == ST_READY) {
        if (d->fifo_head || PQexitPipelineMode(d->conn) != 1 || PQsetnonblocking(d->conn, 0) != 0) {
            snprintf(err, errlen, "migrations: the connection is busy");
            return -1;
        }
        d->state = ST_CONNECTED;
    }
    if (d->state != ST_CONNECTED) {
        snprintf(err, errlen, "migrations: not connected to PostgreSQL");
        return -1;
    }
    migration *m = NULL;
    size_t n = 0;
    if (list_migrations(dir, &m, &n, err, errlen) < 0) return -1;

    PGconn *c = d->conn;
    int rc = -1;
    bool in_tx = false;
    size_t applied = 0;
    if (exec_ok(c, "BEGIN", "migrations", err, errlen) < 0) goto out;
    in_tx = true;
    /* Lock before creating the table: two instances starting together would
     * otherwise race on CREATE TABLE IF NOT EXISTS and on applying files. */
    if (exec_ok(c, "SELECT pg_advisory_xact_lock(" DB_MIGRATE_LOCK ")", "migrations", err,
                errlen) < 0)
        goto out;
    /* Bookkeeping of this database itself, not room data: the one table
     * besides identities without room_id (a Citus reference table). */
    if (exec_ok(c,
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version int PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())",
                "migrations: schema_version", err, errlen) < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        char vbuf[24];
        snprintf(vbuf, sizeof vbuf, "%ld", m[i].version);
        const char *p1[] = {vbuf};
        PGresult *r = PQexecParams(c, "SELECT 1 FROM schema_version WHERE version = $1", 1, NULL,
                                   p1, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(err, errlen, "%s: %s", m[i].name, PQresultErrorMessage(r));
            one_line(err);
            PQclear(r);
            goto out;
        }
        bool done = PQntuples(r) > 0;
        PQclear(r);
        if (done) continue;

        size_t plen = strlen(dir) + strlen(m[i].name) + 2;
        char *path = malloc(plen);
        if (!path) {
            snprintf(err, errlen, "%s: out of memory", m[i].name);
            goto out;
        }
        snprintf(path, plen, "%s/%s", dir, m[i].name);
        char *sql = read_file(path, err, errlen);
        free(path);
        if (!sql) goto out;
        int x = exec_ok(c, sql, m[i].name, err, errlen);
        free(sql);
        if (x < 0) goto out;
        if (PQtransactionStatus(c) != PQTRANS_INTRANS) {
            snprintf(err, errlen, "%s: must not end the transaction (no BEGIN/COMMIT here)",
                     m[i].name);
            goto out;
        }
        const char *p2[] = {vbuf, m[i].name};
        r = PQexecParams(c, "INSERT INTO schema_version(version, name) VALUES ($1, $2)", 2, NULL,
                         p2, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            snprintf(err, errlen, "%s: %s", m[i].name, PQresultErrorMessage(r));
            one_line(err);
            PQclear(r);
            goto out;
        }
        PQclear(r);
        applied++;
    }
    if (exec_ok(c, "COMMIT", "migrations: COMMIT", err, errlen) < 0) goto out;
    in_tx = false;
    if (applied > 0) log_info("db", "applied %zu migration(s) from %s", applied, dir);
    rc = 0;
out:
    if (in_tx) {
        PGresult *r = PQexec(c, "ROLLBACK");
        PQclear(r);
    }
    if (rc < 0 && PQstatus(c) == CONNECTION_BAD) {
        PQfinish(d->conn);
        d->conn = NULL;
        schedule_retry(d);
    }
    free_migrations(m, n);
    return rc;
}
