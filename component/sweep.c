/* The eager archive sweep (sweep.h): the table of rooms to sweep and its
 * queue, the worker threads with their own PostgreSQL connections and
 * back-off, the scan at start, and the walk of one slice of a room — load
 * the token chain and any pending undo, take the headers that went through
 * a revoked token back, select a batch behind the current epoch in
 * primary-key order, re-key it, write it back guarded by the epoch it was
 * read at and by the tokens it used.
 *
 * A room's headers are cut into slices by the first two bytes of the dkid
 * (random, so the slices are about equal), several per thread: both cores
 * work on one big room, and a thread that finishes early takes the next
 * slice. Each slice loads the room's epoch and chain itself, so slices need
 * no shared state beyond the counters. A sweep that ends with no header of
 * the room behind the epoch all its slices swept to goes on the done queue
 * for the loop (sweep_take_done), unless an undo is pending; a sweep that
 * saw one tries to end it (SQL_UNDO_FINISH). */
#include "sweep.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "rekey.h"

#define DKID_BYTES 16
#define SLICES_PER_THREAD 4
/* Cursor and bounds: a prefix of at most two bytes, or one byte more than a
 * dkid (above every dkid). */
#define BOUND_MAX (DKID_BYTES + 1)
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 30000
#define CONNECT_TIMEOUT_MS 10000
/* How often a worker blocked in a connect looks at the stop flag. */
#define CONNECT_POLL_MS 100
#define ROOM_BUCKETS 256

/* Statements prepared on every worker connection. The batch walks the
 * primary key (room_id, dkid) from the cursor; there is no index on epoch,
 * so the re-keying updates stay HOT (fillfactor 60). */
#define SQL_COUNT                                                                                  \
    "SELECT count(*) FROM datakeys WHERE room_id = $1 AND dkid > $2 AND dkid < $3 AND epoch < $4"
#define SQL_BATCH                                                                                  \
    "SELECT dkid, epoch, header FROM datakeys WHERE room_id = $1 AND dkid > $2 AND dkid < $3 "     \
    "AND epoch >= $4 AND epoch < $5 ORDER BY dkid LIMIT $6"
/* d.epoch = v.old: a row someone else moved on since we read it (the lazy
 * path, another instance, our own batch committed just before a crash) is
 * left alone, so no token is ever applied twice. And nothing is applied
 * unless every token the batch composed ($6, $7: steps and deltas) is
 * still stored as loaded: locked FOR KEY SHARE until the batch commits,
 * they make a revocation (which deletes them) wait for the batch, and a
 * batch that loaded its chain before a revocation applies nothing after it. */
#define SQL_UPDATE                                                                                 \
    "WITH used AS (SELECT 1 FROM archive_tokens t JOIN unnest($6::bigint[], $7::bytea[]) "         \
    "AS g(e, d) ON t.from_epoch = g.e AND t.delta = g.d WHERE t.room_id = $1 "                     \
    "FOR KEY SHARE OF t) "                                                                         \
    "UPDATE datakeys d SET header = v.h, epoch = $2 "                                              \
    "FROM unnest($3::bytea[], $4::bytea[], $5::bigint[]) AS v(dkid, h, old) "                      \
    "WHERE d.room_id = $1 AND d.dkid = v.dkid AND d.epoch = v.old "                                \
    "AND (SELECT count(*) FROM used) = cardinality($6::bigint[])"
/* The room's current epoch and its tokens below it, newest first: the
 * chain is the run of tokens reaching down from the current epoch. A step
 * with an undo record is a gap, even if a new token for it is stored: no
 * header may go through it again until its undo is over. */
#define SQL_CHAIN                                                                                  \
    "SELECT r.current_epoch, t.from_epoch, t.delta FROM rooms r "                                  \
    "LEFT JOIN archive_tokens t ON t.room_id = r.room_id AND t.from_epoch < r.current_epoch "      \
    "AND NOT EXISTS (SELECT 1 FROM archive_undo u WHERE u.room_id = t.room_id "                    \
    "AND u.from_epoch = t.from_epoch) "                                                            \
    "WHERE r.room_id = $1 ORDER BY t.from_epoch DESC NULLS LAST"
/* The room's pending undo: its revoked tokens (true) and the tokens stored
 * above the first of them (false), through which headers may have gone on
 * after a revoked one; no row when there is no undo. */
#define SQL_UNDO_LOAD                                                                              \
    "SELECT u.from_epoch, u.delta, true FROM archive_undo u WHERE u.room_id = $1 "                 \
    "UNION ALL SELECT t.from_epoch, t.delta, false FROM archive_tokens t WHERE t.room_id = $1 "    \
    "AND t.from_epoch > (SELECT min(m.from_epoch) FROM archive_undo m WHERE m.room_id = $1) "      \
    "AND NOT EXISTS (SELECT 1 FROM archive_undo x WHERE x.room_id = $1 "                           \
    "AND x.from_epoch = t.from_epoch) ORDER BY 1"
/* Headers that may have gone through a revoked step ($5 the first, $4 the
 * last): registered at or before the last, wrapped now after the first.
 * Walked in primary-key order like the re-keying. */
#define SQL_UNDO_BATCH                                                                             \
    "SELECT dkid, epoch, created_epoch, header FROM datakeys WHERE room_id = $1 AND dkid > $2 "    \
    "AND dkid < $3 AND created_epoch <= $4 AND epoch > $5 ORDER BY dkid LIMIT $6"
/* Each row back to its own epoch v.e where it still holds v.old, and only
 * while every revoked token ($6, $7) and stored token ($8, $9) the undo
 * loaded is stored unchanged, locked until the batch commits: the inverse
 * is that of the tokens the header went through, or nothing is written. */
#define SQL_UNDO_UPDATE                                                                            \
    "WITH rv AS (SELECT 1 FROM archive_undo u JOIN unnest($6::bigint[], $7::bytea[]) AS g(e, d) "  \
    "ON u.from_epoch = g.e AND u.delta = g.d WHERE u.room_id = $1 FOR KEY SHARE OF u), "           \
    "lv AS (SELECT 1 FROM archive_tokens t JOIN unnest($8::bigint[], $9::bytea[]) AS g(e, d) "     \
    "ON t.from_epoch = g.e AND t.delta = g.d WHERE t.room_id = $1 FOR KEY SHARE OF t) "            \
    "UPDATE datakeys d SET header = v.h, epoch = v.e "                                             \
    "FROM unnest($2::bytea[], $3::bytea[], $4::bigint[], $5::bigint[]) AS v(dkid, h, old, e) "     \
    "WHERE d.room_id = $1 AND d.dkid = v.dkid AND d.epoch = v.old "                                \
    "AND (SELECT count(*) FROM rv) = cardinality($6::bigint[]) "                                   \
    "AND (SELECT count(*) FROM lv) = cardinality($8::bigint[])"
/* The undo is over when no header of the room goes through a revoked step
 * any more; checked by the statement that ends it. After it a step's new
 * token, if one came, re-keys the headers taken back. */
#define SQL_UNDO_FINISH                                                                            \
    "DELETE FROM archive_undo WHERE room_id = $1 AND NOT EXISTS (SELECT 1 FROM datakeys d "        \
    "JOIN archive_undo u ON u.room_id = d.room_id AND u.from_epoch >= d.created_epoch "            \
    "AND u.from_epoch < d.epoch WHERE d.room_id = $1)"
#define SQL_UNDO_PENDING "SELECT 1 FROM archive_undo WHERE room_id = $1 LIMIT 1"
/* Rooms with a token into their current epoch: those with headers to
 * re-key, and those with none left behind, whose completed sweep tells the
 * loop that their tokens may be erased (they are kept until a member
 * confirms, across restarts). A gap in the chain can still make one a room
 * with nothing to do; its sweep finds that out cheaply. And rooms with an
 * undo pending, which a restart interrupted. Once per start, in a worker;
 * after an erasure a room has no such token until its next epoch's. */
#define SQL_SCAN                                                                                   \
    "SELECT r.room_id FROM rooms r WHERE EXISTS (SELECT 1 FROM archive_tokens t "                  \
    "WHERE t.room_id = r.room_id AND t.to_epoch = r.current_epoch) "                               \
    "OR EXISTS (SELECT 1 FROM archive_undo u WHERE u.room_id = r.room_id) ORDER BY r.room_id"

/* A room the sweep knows of. A sweep of it hands out slices 0..nslices-1
 * from the queue; kicked while under way, it is swept again afterwards. */
typedef struct sweep_room {
    long long id;
    unsigned next_slice; /* next slice to hand out; nslices once all are out */
    unsigned running;    /* slices workers are on */
    bool queued;         /* on the queue */
    bool again;          /* kicked after its sweep began */
    /* This sweep so far: the epoch its slices swept to (0 before the first
     * ends), and whether every slice ended done at that one epoch. */
    uint64_t pass_epoch;
    bool pass_ok;
    /* Its undo: a slice loaded one (undo_seen) or loaded none (undo_missed:
     * it ran before a revocation, or after the undo ended); headers taken
     * back, headers that could not be, and batches that wrote fewer rows
     * than they computed (a guard saw the undo change). */
    bool undo_seen, undo_missed, undo_short;
    unsigned long long undone, stuck;
    long long *behind; /* per slice: as last counted, less re-keyed since */
    struct sweep_room *hnext, *qnext;
} sweep_room;

struct sweep {
    char *conninfo;
    struct worker *workers;
    unsigned nthreads, nslices;
    int batch;
    pthread_t *threads;
    unsigned nstarted;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* queue, scan or stop changed; back-off waits on it too */
    atomic_bool stop;
    /* Under mu: */
    bool scan_wanted, scan_done;
    sweep_room *qhead, *qtail;
    sweep_room *rooms[ROOM_BUCKETS];
    struct sweep_done *done_head, *done_tail; /* for sweep_take_done */
    unsigned long long pending;               /* rooms queued or with slices running */
    unsigned long long behind;                /* sum of every room's behind[] */
    /* Bumped by the workers without the lock: */
    atomic_ullong rooms_done, rekeyed, batches, reconnects, errors, undone, undos_finished;
};

/* A completed sweep that left nothing behind, for the loop. */
typedef struct sweep_done {
    long long id;
    uint64_t epoch;
    struct sweep_done *next;
} sweep_done;

/* A step of a pending undo, as loaded: unknown (no token), revoked or
 * stored, and STEP_BAD when its token is not a scalar (a damaged row). */
enum { STEP_UNKNOWN, STEP_REVOKED, STEP_STORED, STEP_BAD = 4 };

/* A room's pending undo as a slice loaded it (SQL_UNDO_LOAD): the steps
 * lo .. lo+n-1 (lo the first revoked one), each revoked (its token kept in
 * archive_undo), stored (in archive_tokens) or unknown, with the inverse of
 * its token; and what was loaded as array literals, for the guard of the
 * batches. nrev == 0: no undo pending. */
typedef struct undo_view {
    uint64_t lo, rmax; /* the first and the last revoked step */
    size_t n, nrev;
    unsigned char (*inv)[RK_BYTES]; /* inv[i] = Δ(lo+i → lo+i+1)⁻¹ */
    unsigned char *kind;            /* STEP_* per step */
    char *rev_e, *rev_d, *live_e, *live_d;
} undo_view;

/* What a worker does for one slice; kept across a lost connection, so the
 * walk resumes at its cursor. */
typedef struct slice_run {
    sweep_room *room; /* held: running counts it */
    unsigned slice;
    bool loaded, counted;
    uint64_t c;                      /* the room's current epoch */
    uint64_t ntok;                   /* chain length: epochs c-ntok .. c-1 can be re-keyed */
    unsigned char (*to_c)[RK_BYTES]; /* to_c[k] = Δ(c-1-k → c) */
    unsigned char (*raw)[RK_BYTES];  /* raw[k] = Δ(c-1-k → c-k), for the guard */
    char *g_e, *g_d;                 /* a batch's guard: room for ntok tokens */
    unsigned char cursor[BOUND_MAX], hi[BOUND_MAX];
    int cursor_len, hi_len;
    undo_view undo;
    unsigned char ucursor[BOUND_MAX]; /* the undo's walk */
    int ucursor_len;
    bool undo_walked, undo_short;
    unsigned long long undone, stuck;
} slice_run;

/* What the worker that ended a room's sweep does next, outside the lock. */
typedef struct pass_end {
    enum { END_NONE, END_DONE, END_UNDO } what;
    long long id;
    uint64_t epoch;           /* END_DONE: the epoch it swept to */
    bool again;               /* END_UNDO: sweep again if the undo cannot end yet */
    unsigned long long stuck; /* END_UNDO: headers that could not be taken back */
} pass_end;

typedef struct worker {
    sweep *s;
    unsigned index;
    PGconn *conn;
    bool connected_before;
    bool outage_logged;
    int backoff_ms;
    /* Text arrays of one batch's update. */
    char *arr_dkid, *arr_header, *arr_old, *arr_new;
} worker;

enum { RUN_DONE, RUN_RETRY, RUN_FAILED, RUN_STOPPED };

static sweep *g_running; /* sweep_running(): the loop thread only */

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool stopping(const sweep *s)
{
    return atomic_load(&s->stop);
}

/* ---- the room table and queue (all under mu) ---- */

static sweep_room **room_slot(sweep *s, long long id)
{
    sweep_room **p = &s->rooms[(unsigned long long)id % ROOM_BUCKETS];
    while (*p && (*p)->id != id)
        p = &(*p)->hnext;
    return p;
}

static void room_enqueue(sweep *s, sweep_room *rm)
{
    rm->next_slice = 0;
    rm->pass_epoch = 0;
    rm->pass_ok = true;
    rm->undo_seen = rm->undo_missed = rm->undo_short = false;
    rm->undone = rm->stuck = 0;
    rm->queued = true;
    rm->qnext = NULL;
    if (s->qtail)
        s->qtail->qnext = rm;
    else
        s->qhead = rm;
    s->qtail = rm;
    s->pending++;
    pthread_cond_broadcast(&s->cv);
}

static long long room_behind(const sweep *s, const sweep_room *rm)
{
    long long n = 0;
    for (unsigned i = 0; i < s->nslices; i++)
        n += rm->behind[i];
    return n;
}

static void room_set_behind(sweep *s, sweep_room *rm, unsigned slice, long long n)
{
    if (n < 0) n = 0;
    s->behind = s->behind - (unsigned long long)rm->behind[slice] + (unsigned long long)n;
    rm->behind[slice] = n;
}

static void room_free(sweep_room *rm)
{
    if (!rm) return;
    free(rm->behind);
    free(rm);
}

static void kick_locked(sweep *s, long long id)
{
    sweep_room **slot = room_slot(s, id);
    sweep_room *rm = *slot;
    if (!rm) {
        rm = calloc(1, sizeof *rm);
        long long *behind = rm ? calloc(s->nslices, sizeof *behind) : NULL;
        if (!behind) {
            free(rm);
            log_error("sweep", "out of memory: room %lld not queued", id);
            return;
        }
        rm->id = id;
        rm->behind = behind;
        *slot = rm;
        room_enqueue(s, rm);
    } else if (rm->queued && rm->next_slice == 0) {
        /* Queued and untouched: it will read what is stored now anyway. */
    } else if (rm->queued || rm->running) {
        rm->again = true;
    } else {
        room_enqueue(s, rm);
    }
}

/* Take the next slice off the queue (there is one). */
static void take_slice(sweep *s, slice_run *sr)
{
    sweep_room *rm = s->qhead;
    memset(sr, 0, sizeof *sr);
    sr->room = rm;
    sr->slice = rm->next_slice++;
    rm->running++;
    if (rm->next_slice == s->nslices) {
        rm->queued = false;
        s->qhead = rm->qnext;
        if (!s->qhead) s->qtail = NULL;
    }
}

/* Tell the loop that room id has nothing behind epoch (sweep_take_done). */
static void done_push(sweep *s, long long id, uint64_t epoch)
{
    sweep_done *d = malloc(sizeof *d);
    if (!d) {
        /* Its tokens stay until the room's next sweep reports it. */
        log_error("sweep", "out of memory: room %lld swept, not reported", id);
        return;
    }
    d->id = id;
    d->epoch = epoch;
    d->next = NULL;
    if (s->done_tail)
        s->done_tail->next = d;
    else
        s->done_head = d;
    s->done_tail = d;
}

/* A worker is done with a slice (complete: it ran to its end), or gives it
 * up. When that ends the room's sweep, *end says what is left to do. */
static void finish_slice(sweep *s, slice_run *sr, bool complete, pass_end *end)
{
    sweep_room *rm = sr->room;
    end->what = END_NONE;
    rm->running--;
    if (!complete || !sr->loaded || (rm->pass_epoch && rm->pass_epoch != sr->c))
        rm->pass_ok = false;
    else
        rm->pass_epoch = sr->c;
    if (sr->loaded) {
        if (sr->undo.nrev)
            rm->undo_seen = true;
        else
            rm->undo_missed = true;
    }
    rm->undo_short |= sr->undo_short;
    rm->undone += sr->undone;
    rm->stuck += sr->stuck;
    if (rm->queued || rm->running) return;
    atomic_fetch_add(&s->rooms_done, 1);
    end->id = rm->id;
    if (rm->undo_seen) {
        /* Headers taken back are behind: nothing for the loop to erase. */
        end->what = END_UNDO;
        end->again = rm->undo_missed || rm->undo_short || rm->undone > 0;
        end->stuck = rm->stuck;
    } else if (!rm->again && rm->pass_ok && rm->pass_epoch > 0 && room_behind(s, rm) == 0) {
        /* Only a pass that is not to be redone speaks for the room; and
         * only if no revocation came after its slices loaded (looked up
         * once the lock is released). */
        end->what = END_DONE;
        end->epoch = rm->pass_epoch;
    }
    /* With something left to do the room stays pending until the worker
     * has done it, so that an idle sweep has nothing in hand. */
    if (end->what == END_NONE) s->pending--;
    if (rm->again) {
        rm->again = false;
        room_enqueue(s, rm);
    } else if (room_behind(s, rm) == 0) {
        /* Forget it; rooms still behind (waiting for a token) stay listed
         * so their headers count in headers_behind. */
        sweep_room **slot = room_slot(s, rm->id);
        *slot = rm->hnext;
        room_free(rm);
    }
}

/* ---- the database connection ---- */

/* Decoded from a binary result. */
static uint64_t be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | (unsigned char)p[i];
    return v;
}

/* A failure worth retrying after a reconnect or a pause: the connection is
 * gone, the server is shutting down or starting, out of resources, or the
 * update lost a deadlock or serialization race. Anything else (the schema is
 * not what we expect) would fail again. */
static bool transient(PGconn *c, const PGresult *r)
{
    if (PQstatus(c) != CONNECTION_OK) return true;
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!st) return true; /* libpq's own failure (out of memory, lost socket) */
    return strncmp(st, "08", 2) == 0 || strncmp(st, "53", 2) == 0 || strncmp(st, "57P", 3) == 0 ||
           strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0;
}

static void quiet_notices(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* Connect without blocking the stop for longer than CONNECT_POLL_MS. */
static PGconn *connect_polled(worker *w)
{
    /* Defaults first: the configured conninfo (expanded from dbname)
     * overrides them. */
    static const char *const keys[] = {"application_name", "dbname", NULL};
    const char *vals[] = {"sealroomd-sweep", w->s->conninfo, NULL};
    PGconn *c = PQconnectStartParams(keys, vals, 1);
    if (!c || PQstatus(c) == CONNECTION_BAD) return c;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    long deadline = mono_ms() + CONNECT_TIMEOUT_MS;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        if (stopping(w->s) || mono_ms() >= deadline) {
            PQfinish(c);
            return NULL;
        }
        struct pollfd p = {.fd = PQsocket(c),
                           .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        int n = poll(&p, 1, CONNECT_POLL_MS);
        if (n < 0 && errno != EINTR) break;
        if (n > 0) st = PQconnectPoll(c);
    }
    return c;
}

static bool exec_ok(PGconn *c, PGresult *r)
{
    bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        log_error("sweep", "preparing the connection: %s",
                  r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    PQclear(r);
    return ok;
}

static void disconnect(worker *w)
{
    PQfinish(w->conn);
    w->conn = NULL;
}

/* 0 with w->conn ready (statements prepared), -1 to retry later. */
static int ensure_conn(worker *w)
{
    if (w->conn && PQstatus(w->conn) == CONNECTION_OK) return 0;
    disconnect(w);
    PGconn *c = connect_polled(w);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        if (!w->outage_logged && !stopping(w->s)) {
            log_warn("sweep", "worker %u cannot connect to PostgreSQL: %s; retrying", w->index,
                     c ? PQerrorMessage(c) : "timed out or out of memory");
            w->outage_logged = true;
        }
        PQfinish(c);
        return -1;
    }
    PQsetNoticeProcessor(c, quiet_notices, NULL);
    /* A commit lost in a server crash only leaves its rows at their old
     * epoch, still consistent, for the next pass: no need to wait for the
     * disk on every batch. */
    if (!exec_ok(c, PQexec(c, "SET synchronous_commit = off")) ||
        !exec_ok(c, PQprepare(c, "sweep_count", SQL_COUNT, 0, NULL)) ||
        !exec_ok(c, PQprepare(c, "sweep_batch", SQL_BATCH, 0, NULL)) ||
        !exec_ok(c, PQprepare(c, "sweep_update", SQL_UPDATE, 0, NULL)) ||
        !exec_ok(c, PQprepare(c, "undo_batch", SQL_UNDO_BATCH, 0, NULL)) ||
        !exec_ok(c, PQprepare(c, "undo_update", SQL_UNDO_UPDATE, 0, NULL))) {
        PQfinish(c);
        return -1;
    }
    w->conn = c;
    if (w->connected_before) {
        atomic_fetch_add(&w->s->reconnects, 1);
        log_info("sweep", "worker %u reconnected to PostgreSQL", w->index);
    }
    w->connected_before = true;
    w->outage_logged = false;
    return 0;
}

/* After a failed statement: RUN_RETRY (reconnecting if the connection is
 * gone) or RUN_FAILED. Clears r. */
static int failed(worker *w, PGresult *r, const char *what, long long room)
{
    bool again = transient(w->conn, r);
    if (again) {
        if (!w->outage_logged)
            log_warn("sweep", "room %lld: %s: %s", room, what,
                     r ? PQresultErrorMessage(r) : PQerrorMessage(w->conn));
        w->outage_logged = true;
        if (PQstatus(w->conn) != CONNECTION_OK) disconnect(w);
    } else {
        log_error("sweep", "room %lld: %s: %s", room, what,
                  r ? PQresultErrorMessage(r) : PQerrorMessage(w->conn));
    }
    PQclear(r);
    return again ? RUN_RETRY : RUN_FAILED;
}

/* Wait (interruptibly) for the back-off, then double it. */
static void backoff(worker *w)
{
    sweep *s = w->s;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    /* Jitter, so that the workers do not reconnect in step. */
    long ms = w->backoff_ms / 2 + (long)randombytes_uniform((uint32_t)w->backoff_ms / 2 + 1);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    while (!stopping(s) && pthread_cond_timedwait(&s->cv, &s->mu, &until) != ETIMEDOUT) {
    }
    pthread_mutex_unlock(&s->mu);
    w->backoff_ms = w->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : w->backoff_ms * 2;
}

/* ---- the scan at start ---- */

static int scan(worker *w)
{
    sweep *s = w->s;
    if (ensure_conn(w) != 0) return RUN_RETRY;
    PGresult *r = PQexecParams(w->conn, SQL_SCAN, 0, NULL, NULL, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) return failed(w, r, "scan", 0);
    int n = PQntuples(r);
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < n; i++)
        if (PQgetlength(r, i, 0) == 8) kick_locked(s, (long long)be64(PQgetvalue(r, i, 0)));
    s->scan_done = true;
    pthread_mutex_unlock(&s->mu);
    PQclear(r);
    if (n) log_info("sweep", "%d room(s) have tokens into their current epoch", n);
    return RUN_DONE;
}

/* ---- one slice ---- */

static void slice_bounds(const sweep *s, slice_run *sr)
{
    unsigned lo = (unsigned)(((unsigned long)sr->slice << 16) / s->nslices);
    unsigned hi = (unsigned)(((unsigned long)(sr->slice + 1) << 16) / s->nslices);
    /* "dkid > lo" with lo a two-byte prefix admits every dkid starting with
     * lo; "dkid < hi" excludes every dkid starting with hi (a longer string
     * with the same prefix sorts after it). The first slice starts below
     * everything (empty), the last ends above every 16-byte dkid. */
    sr->cursor_len = sr->slice == 0 ? 0 : 2;
    sr->cursor[0] = (unsigned char)(lo >> 8);
    sr->cursor[1] = (unsigned char)lo;
    if (sr->slice + 1 == s->nslices) {
        memset(sr->hi, 0xff, BOUND_MAX);
        sr->hi_len = BOUND_MAX;
    } else {
        sr->hi[0] = (unsigned char)(hi >> 8);
        sr->hi[1] = (unsigned char)hi;
        sr->hi_len = 2;
    }
    memcpy(sr->ucursor, sr->cursor, BOUND_MAX);
    sr->ucursor_len = sr->cursor_len;
}

/* Tokens are erased once they have done their work: no copy of one (nor
 * of its inverse) lingers in freed memory. */
static void free_wiped(void *p, size_t len)
{
    if (!p) return;
    sodium_memzero(p, len);
    free(p);
}

static void free_text_wiped(char *p)
{
    if (p) free_wiped(p, strlen(p));
}

static void slice_clear(slice_run *sr)
{
    free_wiped(sr->to_c, (size_t)sr->ntok * RK_BYTES);
    sr->to_c = NULL;
    free_wiped(sr->raw, (size_t)sr->ntok * RK_BYTES);
    sr->raw = NULL;
    free_text_wiped(sr->g_e);
    free_text_wiped(sr->g_d);
    sr->g_e = sr->g_d = NULL;
    undo_view *u = &sr->undo;
    free_wiped(u->inv, u->n * RK_BYTES);
    free(u->kind);
    free_text_wiped(u->rev_e);
    free_text_wiped(u->rev_d);
    free_text_wiped(u->live_e);
    free_text_wiped(u->live_d);
    memset(u, 0, sizeof *u);
}

/* An array literal under construction in buf: '{', elements, '}'. A
 * buffer for count elements of at most each characters needs
 * count·(each + 1) + 3 bytes: a number takes 20, bytes 3 + 2·len. */
typedef struct lit {
    char *buf, *p;
    size_t n; /* elements so far */
} lit;

static void lit_start(lit *l, char *buf)
{
    l->buf = l->p = buf;
    l->n = 0;
    *l->p++ = '{';
}

static bool lit_open(lit *l, size_t count, size_t each)
{
    char *buf = malloc(count * (each + 1) + 3);
    if (buf) lit_start(l, buf);
    return buf != NULL;
}

static void lit_u64(lit *l, uint64_t v)
{
    l->p += sprintf(l->p, "%s%llu", l->n++ ? "," : "", (unsigned long long)v);
}

static void lit_bytes(lit *l, const unsigned char *b, size_t len)
{
    if (l->n++) *l->p++ = ',';
    /* \\x...: the array literal's backslash escapes bytea's. */
    *l->p++ = '\\';
    *l->p++ = '\\';
    *l->p++ = 'x';
    sodium_bin2hex(l->p, len * 2 + 1, b, len);
    l->p += len * 2;
}

static char *lit_close(lit *l)
{
    *l->p++ = '}';
    *l->p = '\0';
    return l->buf;
}

/* Load c and the composed Δ(a→c) for every a the chain reaches, and each
 * token for the guard of the batches. */
static int load_chain(worker *w, slice_run *sr)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", sr->room->id);
    const char *vals[] = {id};
    PGresult *r = PQexecParams(w->conn, SQL_CHAIN, 1, NULL, vals, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return failed(w, r, "loading the chain", sr->room->id);
    int n = PQntuples(r);
    slice_clear(sr);
    sr->c = n > 0 && PQgetlength(r, 0, 0) == 8 ? be64(PQgetvalue(r, 0, 0)) : 0;
    sr->ntok = 0;
    if (n > 0 && !PQgetisnull(r, 0, 1)) {
        sr->to_c = malloc((size_t)n * RK_BYTES);
        sr->raw = malloc((size_t)n * RK_BYTES);
        sr->g_e = malloc((size_t)n * 21 + 3);
        sr->g_d = malloc((size_t)n * (4 + 2 * RK_BYTES) + 3);
        if (sr->g_e) sr->g_e[0] = '\0';
        if (sr->g_d) sr->g_d[0] = '\0';
        if (!sr->to_c || !sr->raw || !sr->g_e || !sr->g_d) {
            PQclear(r);
            log_error("sweep", "room %lld: out of memory for its chain", sr->room->id);
            return RUN_FAILED;
        }
    }
    for (int i = 0; sr->to_c && i < n; i++) {
        const unsigned char *d = (const unsigned char *)PQgetvalue(r, i, 2);
        /* Rows come newest first: the chain ends at the first gap (or at a
         * token that is not a scalar, which the token handler never stores). */
        if (PQgetisnull(r, i, 1) || PQgetlength(r, i, 1) != 8 ||
            be64(PQgetvalue(r, i, 1)) != sr->c - 1 - (uint64_t)i ||
            PQgetlength(r, i, 2) != RK_BYTES || !rk_scalar_ok(d))
            break;
        /* Δ(c-1-i → c) = Δ(c-i → c)·Δ(c-1-i → c-i) */
        if (i == 0)
            memcpy(sr->to_c[0], d, RK_BYTES);
        else
            rk_compose(sr->to_c[i], sr->to_c[i - 1], d);
        memcpy(sr->raw[i], d, RK_BYTES);
        sr->ntok++;
    }
    PQclear(r);
    return RUN_DONE;
}

/* Load the room's pending undo, if any, into sr->undo. */
static int load_undo(worker *w, slice_run *sr)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", sr->room->id);
    const char *vals[] = {id};
    PGresult *r = PQexecParams(w->conn, SQL_UNDO_LOAD, 1, NULL, vals, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) return failed(w, r, "loading its undo", sr->room->id);
    int n = PQntuples(r);
    undo_view *u = &sr->undo;
    for (int i = 0; i < n; i++)
        if (PQgetlength(r, i, 0) != 8 || PQgetlength(r, i, 1) != RK_BYTES ||
            PQgetlength(r, i, 2) != 1) {
            PQclear(r);
            log_error("sweep", "room %lld: a malformed undo row", sr->room->id);
            return RUN_FAILED;
        }
    if (n == 0 || !PQgetvalue(r, 0, 2)[0]) { /* rows start at the first revoked step */
        PQclear(r);
        return RUN_DONE;
    }
    u->lo = be64(PQgetvalue(r, 0, 0));
    u->n = (size_t)(be64(PQgetvalue(r, n - 1, 0)) - u->lo + 1);
    lit re = {0}, rd = {0}, se = {0}, sd = {0};
    u->inv = calloc(u->n, RK_BYTES);
    u->kind = calloc(u->n, 1);
    if (!u->inv || !u->kind || !lit_open(&re, (size_t)n, 20) ||
        !lit_open(&rd, (size_t)n, 3 + 2 * RK_BYTES) || !lit_open(&se, (size_t)n, 20) ||
        !lit_open(&sd, (size_t)n, 3 + 2 * RK_BYTES)) {
        free(re.buf);
        free(rd.buf);
        free(se.buf);
        free(sd.buf);
        PQclear(r);
        log_error("sweep", "room %lld: out of memory for its undo", sr->room->id);
        return RUN_FAILED;
    }
    for (int i = 0; i < n; i++) {
        uint64_t e = be64(PQgetvalue(r, i, 0));
        const unsigned char *d = (const unsigned char *)PQgetvalue(r, i, 1);
        bool revoked = PQgetvalue(r, i, 2)[0] != 0;
        size_t k = (size_t)(e - u->lo);
        /* Through a token that is no scalar nothing can be inverted: the
         * headers that went through it stay, counted as stuck. */
        u->kind[k] = (unsigned char)((revoked ? STEP_REVOKED : STEP_STORED) |
                                     (rk_invert(u->inv[k], d) ? 0 : STEP_BAD));
        lit_u64(revoked ? &re : &se, e);
        lit_bytes(revoked ? &rd : &sd, d, RK_BYTES);
        if (revoked) {
            u->rmax = e;
            u->nrev++;
        }
    }
    PQclear(r);
    u->rev_e = lit_close(&re);
    u->rev_d = lit_close(&rd);
    u->live_e = lit_close(&se);
    u->live_d = lit_close(&sd);
    return RUN_DONE;
}

/* Count the slice's headers behind c into the room's tally. */
static int count_behind(worker *w, slice_run *sr)
{
    sweep *s = w->s;
    char id[24], c[24];
    snprintf(id, sizeof id, "%lld", sr->room->id);
    snprintf(c, sizeof c, "%llu", (unsigned long long)sr->c);
    /* From the start of the slice, whatever the cursor. */
    slice_run whole = {.slice = sr->slice};
    slice_bounds(s, &whole);
    const char *vals[] = {id, (const char *)whole.cursor, (const char *)whole.hi, c};
    const int lens[] = {0, whole.cursor_len, whole.hi_len, 0};
    const int fmts[] = {0, 1, 1, 0};
    PGresult *r = PQexecPrepared(w->conn, "sweep_count", 4, vals, lens, fmts, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 || PQgetlength(r, 0, 0) != 8)
        return failed(w, r, "counting headers", sr->room->id);
    long long n = (long long)be64(PQgetvalue(r, 0, 0));
    PQclear(r);
    pthread_mutex_lock(&s->mu);
    room_set_behind(s, sr->room, sr->slice, n);
    pthread_mutex_unlock(&s->mu);
    return RUN_DONE;
}

/* Re-key one batch from the cursor. *more: the batch was full. */
static int one_batch(worker *w, slice_run *sr, bool *more)
{
    sweep *s = w->s;
    char id[24], first[24], c[24], lim[24];
    uint64_t lowest = sr->c - sr->ntok;
    snprintf(id, sizeof id, "%lld", sr->room->id);
    snprintf(first, sizeof first, "%llu", (unsigned long long)lowest);
    snprintf(c, sizeof c, "%llu", (unsigned long long)sr->c);
    snprintf(lim, sizeof lim, "%d", s->batch);
    unsigned char before[BOUND_MAX];
    int before_len = sr->cursor_len;
    memcpy(before, sr->cursor, BOUND_MAX);
    const char *vals[] = {id, (const char *)sr->cursor, (const char *)sr->hi, first, c, lim};
    const int lens[] = {0, sr->cursor_len, sr->hi_len, 0, 0, 0};
    const int fmts[] = {0, 1, 1, 0, 0, 0};
    PGresult *r = PQexecPrepared(w->conn, "sweep_batch", 6, vals, lens, fmts, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) return failed(w, r, "reading a batch", sr->room->id);
    int n = PQntuples(r);
    *more = n == s->batch;

    lit ld, lh, lo;
    lit_start(&ld, w->arr_dkid);
    lit_start(&lh, w->arr_header);
    lit_start(&lo, w->arr_old);
    int bad = 0;
    uint64_t oldest = sr->c;
    unsigned char h[RK_BYTES];
    for (int i = 0; i < n; i++) {
        const unsigned char *dkid = (const unsigned char *)PQgetvalue(r, i, 0);
        uint64_t a = PQgetlength(r, i, 1) == 8 ? be64(PQgetvalue(r, i, 1)) : 0;
        const unsigned char *hin = (const unsigned char *)PQgetvalue(r, i, 2);
        if (PQgetlength(r, i, 0) != DKID_BYTES || PQgetlength(r, i, 2) != RK_BYTES || a < lowest ||
            a >= sr->c || !rk_apply(h, sr->to_c[sr->c - 1 - a], hin)) {
            /* Not a point (the data-key handler checks them, so only a
             * corrupted row): it stays where it is, counted as behind. */
            bad++;
            continue;
        }
        lit_bytes(&ld, dkid, DKID_BYTES);
        lit_bytes(&lh, h, RK_BYTES);
        lit_u64(&lo, a);
        if (a < oldest) oldest = a;
    }
    sodium_memzero(h, sizeof h);
    if (n > 0 && PQgetlength(r, n - 1, 0) == DKID_BYTES) {
        memcpy(sr->cursor, PQgetvalue(r, n - 1, 0), DKID_BYTES);
        sr->cursor_len = DKID_BYTES;
    }
    PQclear(r);
    if (bad)
        log_warn("sweep", "room %lld: %d stored header(s) are not valid points", sr->room->id, bad);
    if (ld.n == 0) return RUN_DONE;
    lit_close(&ld);
    lit_close(&lh);
    lit_close(&lo);
    /* The guard: the tokens this batch composed, from its oldest header's
     * epoch to c, and no others (tokens below, erased once nothing needs
     * them, must not hold the batch up). */
    lit ge, gd;
    lit_start(&ge, sr->g_e);
    lit_start(&gd, sr->g_d);
    for (uint64_t k = 0; k < sr->c - oldest; k++) {
        lit_u64(&ge, sr->c - 1 - k);
        lit_bytes(&gd, sr->raw[k], RK_BYTES);
    }
    lit_close(&ge);
    lit_close(&gd);

    const char *uvals[] = {id, c, w->arr_dkid, w->arr_header, w->arr_old, sr->g_e, sr->g_d};
    r = PQexecPrepared(w->conn, "sweep_update", 7, uvals, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        /* Read the batch again: what the statement did write (a commit
         * whose answer was lost with the connection) is no longer behind. */
        memcpy(sr->cursor, before, BOUND_MAX);
        sr->cursor_len = before_len;
        return failed(w, r, "writing a batch", sr->room->id);
    }
    long long done = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    atomic_fetch_add(&s->rekeyed, (unsigned long long)done);
    atomic_fetch_add(&s->batches, 1);
    pthread_mutex_lock(&s->mu);
    room_set_behind(s, sr->room, sr->slice, sr->room->behind[sr->slice] - done);
    pthread_mutex_unlock(&s->mu);
    return RUN_DONE;
}

/* The epoch a header registered in p and wrapped under q goes back to: the
 * first revoked step on its way (p ≤ s < q), 0 if none. */
static uint64_t undo_target(const undo_view *u, uint64_t p, uint64_t q)
{
    uint64_t from = p > u->lo ? p : u->lo, to = q - 1 < u->rmax ? q - 1 : u->rmax;
    for (uint64_t e = from; e <= to; e++)
        if ((u->kind[e - u->lo] & ~STEP_BAD) == STEP_REVOKED) return e;
    return 0;
}

/* inv = Δ(t→q)⁻¹, the product of the inverses of the tokens the header
 * went through from t to q; false if one of them is unknown. */
static bool undo_inverse(unsigned char inv[RK_BYTES], const undo_view *u, uint64_t t, uint64_t q)
{
    if (q - u->lo > u->n) return false;
    for (uint64_t e = t; e < q; e++) {
        unsigned char k = u->kind[e - u->lo];
        if (k == STEP_UNKNOWN || (k & STEP_BAD)) return false;
        if (e == t)
            memcpy(inv, u->inv[e - u->lo], RK_BYTES);
        else
            rk_compose(inv, inv, u->inv[e - u->lo]);
    }
    return true;
}

/* Take one batch of the slice's headers that went through a revoked step
 * back to the first such step on their way. *more: the batch was full. */
static int undo_batch(worker *w, slice_run *sr, bool *more)
{
    sweep *s = w->s;
    const undo_view *u = &sr->undo;
    char id[24], last[24], first[24], lim[24];
    snprintf(id, sizeof id, "%lld", sr->room->id);
    snprintf(last, sizeof last, "%llu", (unsigned long long)u->rmax);
    snprintf(first, sizeof first, "%llu", (unsigned long long)u->lo);
    snprintf(lim, sizeof lim, "%d", s->batch);
    unsigned char before[BOUND_MAX];
    int before_len = sr->ucursor_len;
    memcpy(before, sr->ucursor, BOUND_MAX);
    const char *vals[] = {id, (const char *)sr->ucursor, (const char *)sr->hi, last, first, lim};
    const int lens[] = {0, sr->ucursor_len, sr->hi_len, 0, 0, 0};
    const int fmts[] = {0, 1, 1, 0, 0, 0};
    PGresult *r = PQexecPrepared(w->conn, "undo_batch", 6, vals, lens, fmts, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return failed(w, r, "reading a batch to undo", sr->room->id);
    int n = PQntuples(r);
    *more = n == s->batch;

    lit ld, lh, lo, le;
    lit_start(&ld, w->arr_dkid);
    lit_start(&lh, w->arr_header);
    lit_start(&lo, w->arr_old);
    lit_start(&le, w->arr_new);
    unsigned char inv[RK_BYTES], h[RK_BYTES];
    for (int i = 0; i < n; i++) {
        if (PQgetlength(r, i, 0) != DKID_BYTES || PQgetlength(r, i, 1) != 8 ||
            PQgetlength(r, i, 2) != 8 || PQgetlength(r, i, 3) != RK_BYTES)
            continue;
        uint64_t q = be64(PQgetvalue(r, i, 1)), p = be64(PQgetvalue(r, i, 2));
        uint64_t t = undo_target(u, p, q);
        if (t == 0) continue; /* its way crosses no revoked step */
        if (!undo_inverse(inv, u, t, q) ||
            !rk_apply(h, inv, (const unsigned char *)PQgetvalue(r, i, 3))) {
            sr->stuck++;
            continue;
        }
        lit_bytes(&ld, (const unsigned char *)PQgetvalue(r, i, 0), DKID_BYTES);
        lit_bytes(&lh, h, RK_BYTES);
        lit_u64(&lo, q);
        lit_u64(&le, t);
    }
    sodium_memzero(inv, sizeof inv);
    sodium_memzero(h, sizeof h);
    if (n > 0 && PQgetlength(r, n - 1, 0) == DKID_BYTES) {
        memcpy(sr->ucursor, PQgetvalue(r, n - 1, 0), DKID_BYTES);
        sr->ucursor_len = DKID_BYTES;
    }
    PQclear(r);
    size_t m = ld.n;
    if (m == 0) return RUN_DONE;
    lit_close(&ld);
    lit_close(&lh);
    lit_close(&lo);
    lit_close(&le);

    const char *uvals[] = {id,       w->arr_dkid, w->arr_header, w->arr_old, w->arr_new,
                           u->rev_e, u->rev_d,    u->live_e,     u->live_d};
    r = PQexecPrepared(w->conn, "undo_update", 9, uvals, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        memcpy(sr->ucursor, before, BOUND_MAX);
        sr->ucursor_len = before_len;
        return failed(w, r, "writing a batch back", sr->room->id);
    }
    long long done = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    /* Fewer rows than computed: moved by someone else meanwhile, or the
     * undo changed under the batch (its guard held): look again. */
    if ((size_t)done < m) sr->undo_short = true;
    sr->undone += (unsigned long long)done;
    atomic_fetch_add(&s->undone, (unsigned long long)done);
    return RUN_DONE;
}

/* Run (or resume) a slice. */
static int run_slice(worker *w, slice_run *sr)
{
    int rc;
    if (ensure_conn(w) != 0) return RUN_RETRY;
    if (!sr->loaded) {
        if ((rc = load_chain(w, sr)) != RUN_DONE || (rc = load_undo(w, sr)) != RUN_DONE) return rc;
        slice_bounds(w->s, sr);
        sr->loaded = true;
    }
    if (!sr->counted) {
        if ((rc = count_behind(w, sr)) != RUN_DONE) return rc;
        sr->counted = true;
    }
    /* The undo first: the headers it takes back land in a gap, where the
     * re-keying below leaves them. */
    bool more = sr->undo.nrev > 0 && !sr->undo_walked;
    while (more) {
        if (stopping(w->s)) return RUN_STOPPED;
        if ((rc = undo_batch(w, sr, &more)) != RUN_DONE) return rc;
    }
    sr->undo_walked = true;
    more = sr->ntok > 0;
    while (more) {
        if (stopping(w->s)) return RUN_STOPPED;
        if ((rc = one_batch(w, sr, &more)) != RUN_DONE) return rc;
    }
    /* What is left behind: headers older than the chain reaches (or not
     * points), and those taken back. */
    return sr->ntok > 0 || sr->undone > 0 ? count_behind(w, sr) : RUN_DONE;
}

/* ---- the end of a room's sweep ---- */

/* END_DONE: report the room to the loop unless an undo is pending (a
 * revocation committed after the slices loaded): then sweep it again. */
static int end_done(worker *w, const pass_end *end)
{
    sweep *s = w->s;
    if (ensure_conn(w) != 0) return RUN_RETRY;
    char id[24];
    snprintf(id, sizeof id, "%lld", end->id);
    const char *vals[] = {id};
    PGresult *r = PQexecParams(w->conn, SQL_UNDO_PENDING, 1, NULL, vals, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) return failed(w, r, "looking for an undo", end->id);
    bool pending = PQntuples(r) > 0;
    PQclear(r);
    pthread_mutex_lock(&s->mu);
    if (pending)
        kick_locked(s, end->id);
    else
        done_push(s, end->id, end->epoch);
    pthread_mutex_unlock(&s->mu);
    return RUN_DONE;
}

/* END_UNDO: end the undo if no header goes through a revoked step any
 * more; else sweep again if this sweep got anywhere. */
static int end_undo(worker *w, const pass_end *end)
{
    sweep *s = w->s;
    if (ensure_conn(w) != 0) return RUN_RETRY;
    char id[24];
    snprintf(id, sizeof id, "%lld", end->id);
    const char *vals[] = {id};
    PGresult *r = PQexecParams(w->conn, SQL_UNDO_FINISH, 1, NULL, vals, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) return failed(w, r, "ending its undo", end->id);
    long long gone = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    if (gone > 0) {
        atomic_fetch_add(&s->undos_finished, 1);
        log_info("sweep",
                 "room %lld: every header that went through a revoked token is back; "
                 "%lld revoked token(s) dropped",
                 end->id, gone);
    } else if (end->stuck > 0 && !end->again) {
        log_error("sweep",
                  "room %lld: %llu header(s) that went through a revoked token cannot be taken "
                  "back (not points, or a token on their way is missing): the undo stays pending",
                  end->id, end->stuck);
    }
    /* After the end, a normal sweep: it reports the room, or moves what
     * was taken back with a step's new token. */
    if (gone > 0 || end->again) {
        pthread_mutex_lock(&s->mu);
        kick_locked(s, end->id);
        pthread_mutex_unlock(&s->mu);
    }
    return RUN_DONE;
}

/* ---- the workers ---- */

static void *worker_main(void *arg)
{
    worker *w = arg;
    sweep *s = w->s;
    slice_run sr = {0};
    w->backoff_ms = BACKOFF_MIN_MS;
    for (;;) {
        bool do_scan = false;
        pthread_mutex_lock(&s->mu);
        while (!stopping(s) && !s->scan_wanted && !s->qhead)
            pthread_cond_wait(&s->cv, &s->mu);
        if (stopping(s)) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        if (s->scan_wanted) {
            s->scan_wanted = false;
            do_scan = true;
        } else {
            take_slice(s, &sr);
        }
        pthread_mutex_unlock(&s->mu);

        int rc;
        pass_end end = {.what = END_NONE};
        while ((rc = do_scan ? scan(w) : run_slice(w, &sr)) == RUN_RETRY && !stopping(s))
            backoff(w);
        if (rc == RUN_DONE) {
            w->backoff_ms = BACKOFF_MIN_MS;
            w->outage_logged = false;
        }
        if (rc == RUN_FAILED) atomic_fetch_add(&s->errors, 1);
        pthread_mutex_lock(&s->mu);
        if (do_scan && rc != RUN_DONE) {
            /* Retrying a query that fails for good would spin: kicks
             * still bring rooms in. */
            s->scan_done = rc == RUN_FAILED;
            s->scan_wanted = rc != RUN_FAILED;
        } else if (!do_scan) {
            finish_slice(s, &sr, rc == RUN_DONE, &end);
        }
        pthread_mutex_unlock(&s->mu);
        if (!do_scan) slice_clear(&sr);
        /* Stopped meanwhile: nothing is lost, the scan at the next start
         * finds the room again. */
        if (end.what != END_NONE) {
            int (*step)(worker *, const pass_end *) = end.what == END_DONE ? end_done : end_undo;
            while ((rc = step(w, &end)) == RUN_RETRY && !stopping(s))
                backoff(w);
            if (rc == RUN_FAILED) atomic_fetch_add(&s->errors, 1);
            pthread_mutex_lock(&s->mu);
            s->pending--; /* after any kick it made: never idle in between */
            pthread_mutex_unlock(&s->mu);
        }
    }
    disconnect(w);
    return NULL;
}

/* ---- public ---- */

static void sweep_free(sweep *s)
{
    if (!s) return;
    while (s->done_head) {
        sweep_done *d = s->done_head;
        s->done_head = d->next;
        free(d);
    }
    for (size_t i = 0; i < ROOM_BUCKETS; i++)
        while (s->rooms[i]) {
            sweep_room *rm = s->rooms[i];
            s->rooms[i] = rm->hnext;
            room_free(rm);
        }
    if (s->conninfo) {
        /* It may hold a password. */
        sodium_memzero(s->conninfo, strlen(s->conninfo));
        free(s->conninfo);
    }
    free(s->threads);
    free(s);
}

sweep *sweep_start(const config *cfg)
{
    if (sodium_init() < 0) return NULL;
    sweep *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->nthreads = cfg->sweep_threads > 0 ? (unsigned)cfg->sweep_threads : 1;
    s->nslices = s->nthreads == 1 ? 1 : s->nthreads * SLICES_PER_THREAD;
    s->batch = cfg->sweep_batch > 0 ? cfg->sweep_batch : 1;
    s->conninfo = strdup(cfg->db_conninfo);
    s->threads = calloc(s->nthreads, sizeof *s->threads);
    worker *ws = calloc(s->nthreads, sizeof *ws);
    pthread_condattr_t ca;
    bool sync_ok = false;
    if (!s->conninfo || !s->threads || !ws || pthread_condattr_init(&ca) != 0) goto fail;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    sync_ok = pthread_mutex_init(&s->mu, NULL) == 0;
    if (sync_ok && pthread_cond_init(&s->cv, &ca) != 0) {
        pthread_mutex_destroy(&s->mu);
        sync_ok = false;
    }
    pthread_condattr_destroy(&ca);
    if (!sync_ok) goto fail;
    s->scan_wanted = true;
    size_t b = (size_t)s->batch;
    for (unsigned i = 0; i < s->nthreads; i++) {
        worker *w = &ws[i];
        w->s = s;
        w->index = i;
        w->arr_dkid = malloc(b * (4 + 2 * DKID_BYTES) + 3);
        w->arr_header = malloc(b * (4 + 2 * RK_BYTES) + 3);
        w->arr_old = malloc(b * 21 + 3);
        w->arr_new = malloc(b * 21 + 3);
        if (!w->arr_dkid || !w->arr_header || !w->arr_old || !w->arr_new) break;
        if (pthread_create(&s->threads[i], NULL, worker_main, w) != 0) break;
        s->nstarted++;
    }
    s->workers = ws;
    if (s->nstarted < s->nthreads) {
        log_error("sweep", "cannot start worker thread %u", s->nstarted);
        sweep_stop(s);
        return NULL;
    }
    log_info("sweep", "%u worker(s), %u slice(s) per room, %d headers per batch", s->nthreads,
             s->nslices, s->batch);
    g_running = s;
    return s;
fail:
    free(ws);
    sweep_free(s);
    return NULL;
}

void sweep_stop(sweep *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->stop, true);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 0; i < s->nstarted; i++)
        pthread_join(s->threads[i], NULL);
    for (unsigned i = 0; i < s->nthreads; i++) {
        free(s->workers[i].arr_dkid);
        free(s->workers[i].arr_header);
        free(s->workers[i].arr_old);
        free(s->workers[i].arr_new);
    }
    free(s->workers);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    if (g_running == s) g_running = NULL;
    sweep_free(s);
}

void sweep_kick(sweep *s, long long room_id)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    kick_locked(s, room_id);
    pthread_mutex_unlock(&s->mu);
}

bool sweep_take_done(sweep *s, long long *room_id, uint64_t *epoch)
{
    if (!s) return false;
    pthread_mutex_lock(&s->mu);
    sweep_done *d = s->done_head;
    if (d) {
        s->done_head = d->next;
        if (!s->done_head) s->done_tail = NULL;
        *room_id = d->id;
        *epoch = d->epoch;
    }
    pthread_mutex_unlock(&s->mu);
    bool got = d != NULL;
    free(d);
    return got;
}

void sweep_get_stats(sweep *s, sweep_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    out->threads = s->nthreads;
    out->scan_done = s->scan_done;
    out->rooms_pending = s->pending;
    out->headers_behind = s->behind;
    out->rooms_done = atomic_load(&s->rooms_done);
    out->headers_rekeyed = atomic_load(&s->rekeyed);
    out->batches = atomic_load(&s->batches);
    out->headers_undone = atomic_load(&s->undone);
    out->undos_finished = atomic_load(&s->undos_finished);
    out->reconnects = atomic_load(&s->reconnects);
    out->errors = atomic_load(&s->errors);
    pthread_mutex_unlock(&s->mu);
}

sweep *sweep_running(void)
{
    return g_running;
}
