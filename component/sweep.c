/* The eager archive sweep (sweep.h): the table of rooms to sweep and its
 * queue, the worker threads with their own PostgreSQL connections and
 * back-off, the scan at start, and the walk of one slice of a room — load
 * the token chain, select a batch behind the current epoch in primary-key
 * order, re-key it, write it back guarded by the epoch it was read at.
 *
 * A room's headers are cut into slices by the first two bytes of the dkid
 * (random, so the slices are about equal), several per thread: both cores
 * work on one big room, and a thread that finishes early takes the next
 * slice. Each slice loads the room's epoch and chain itself, so slices need
 * no shared state beyond the counters. A sweep that ends with no header of
 * the room behind the epoch all its slices swept to goes on the done queue
 * for the loop (sweep_take_done). */
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
 * left alone, so no token is ever applied twice. */
#define SQL_UPDATE                                                                                 \
    "UPDATE datakeys d SET header = v.h, epoch = $2 "                                              \
    "FROM unnest($3::bytea[], $4::bytea[], $5::bigint[]) AS v(dkid, h, old) "                      \
    "WHERE d.room_id = $1 AND d.dkid = v.dkid AND d.epoch = v.old"
/* The room's current epoch and its tokens below it, newest first: the
 * chain is the run of tokens reaching down from the current epoch. */
#define SQL_CHAIN                                                                                  \
    "SELECT r.current_epoch, t.from_epoch, t.delta FROM rooms r "                                  \
    "LEFT JOIN archive_tokens t ON t.room_id = r.room_id AND t.from_epoch < r.current_epoch "      \
    "WHERE r.room_id = $1 ORDER BY t.from_epoch DESC NULLS LAST"
/* Rooms with a token into their current epoch: those with headers to
 * re-key, and those with none left behind, whose completed sweep tells the
 * loop that their tokens may be erased (they are kept until a member
 * confirms, across restarts). A gap in the chain can still make one a room
 * with nothing to do; its sweep finds that out cheaply. Once per start, in
 * a worker; after an erasure a room has no such token until its next
 * epoch's. */
#define SQL_SCAN                                                                                   \
    "SELECT r.room_id FROM rooms r WHERE EXISTS (SELECT 1 FROM archive_tokens t "                  \
    "WHERE t.room_id = r.room_id AND t.to_epoch = r.current_epoch) ORDER BY r.room_id"

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
    atomic_ullong rooms_done, rekeyed, batches, reconnects, errors;
};

/* A completed sweep that left nothing behind, for the loop. */
typedef struct sweep_done {
    long long id;
    uint64_t epoch;
    struct sweep_done *next;
} sweep_done;

/* What a worker does for one slice; kept across a lost connection, so the
 * walk resumes at its cursor. */
typedef struct slice_run {
    sweep_room *room; /* held: running counts it */
    unsigned slice;
    bool loaded, counted;
    uint64_t c;                      /* the room's current epoch */
    uint64_t ntok;                   /* chain length: epochs c-ntok .. c-1 can be re-keyed */
    unsigned char (*to_c)[RK_BYTES]; /* to_c[k] = Δ(c-1-k → c) */
    unsigned char cursor[BOUND_MAX], hi[BOUND_MAX];
    int cursor_len, hi_len;
} slice_run;

typedef struct worker {
    sweep *s;
    unsigned index;
    PGconn *conn;
    bool connected_before;
    bool outage_logged;
    int backoff_ms;
    /* Text arrays of one batch's update. */
    char *arr_dkid, *arr_header, *arr_old;
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
 * up. */
static void finish_slice(sweep *s, slice_run *sr, bool complete)
{
    sweep_room *rm = sr->room;
    rm->running--;
    if (!complete || !sr->loaded || (rm->pass_epoch && rm->pass_epoch != sr->c))
        rm->pass_ok = false;
    else
        rm->pass_epoch = sr->c;
    if (rm->queued || rm->running) return;
    atomic_fetch_add(&s->rooms_done, 1);
    s->pending--;
    /* Only a pass that is not to be redone speaks for the room. */
    if (!rm->again && rm->pass_ok && rm->pass_epoch > 0 && room_behind(s, rm) == 0)
        done_push(s, rm->id, rm->pass_epoch);
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
        !exec_ok(c, PQprepare(c, "sweep_update", SQL_UPDATE, 0, NULL))) {
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
}

static void slice_clear(slice_run *sr)
{
    if (sr->to_c) {
        sodium_memzero(sr->to_c, (size_t)sr->ntok * RK_BYTES);
        free(sr->to_c);
    }
    sr->to_c = NULL;
}

/* Load c and the composed Δ(a→c) for every a the chain reaches. */
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
        if (!sr->to_c) {
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
        sr->ntok++;
    }
    PQclear(r);
    sr->loaded = true;
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

static char *put_hex_elem(char *p, const unsigned char *b, size_t len)
{
    /* \\x...: the array literal's backslash escapes bytea's. */
    *p++ = '\\';
    *p++ = '\\';
    *p++ = 'x';
    sodium_bin2hex(p, len * 2 + 1, b, len);
    return p + len * 2;
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

    char *pd = w->arr_dkid, *ph = w->arr_header, *po = w->arr_old;
    *pd++ = '{';
    *ph++ = '{';
    *po++ = '{';
    int m = 0, bad = 0;
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
        if (m) {
            *pd++ = ',';
            *ph++ = ',';
            *po++ = ',';
        }
        pd = put_hex_elem(pd, dkid, DKID_BYTES);
        ph = put_hex_elem(ph, h, RK_BYTES);
        po += sprintf(po, "%llu", (unsigned long long)a);
        m++;
    }
    sodium_memzero(h, sizeof h);
    if (n > 0 && PQgetlength(r, n - 1, 0) == DKID_BYTES) {
        memcpy(sr->cursor, PQgetvalue(r, n - 1, 0), DKID_BYTES);
        sr->cursor_len = DKID_BYTES;
    }
    PQclear(r);
    if (bad)
        log_warn("sweep", "room %lld: %d stored header(s) are not valid points", sr->room->id, bad);
    if (m == 0) return RUN_DONE;
    *pd++ = '}';
    *ph++ = '}';
    *po++ = '}';
    *pd = *ph = *po = '\0';

    const char *uvals[] = {id, c, w->arr_dkid, w->arr_header, w->arr_old};
    r = PQexecPrepared(w->conn, "sweep_update", 5, uvals, NULL, NULL, 1);
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

/* Run (or resume) a slice. */
static int run_slice(worker *w, slice_run *sr)
{
    int rc;
    if (ensure_conn(w) != 0) return RUN_RETRY;
    if (!sr->loaded) {
        if ((rc = load_chain(w, sr)) != RUN_DONE) return rc;
        slice_bounds(w->s, sr);
    }
    if (!sr->counted) {
        if ((rc = count_behind(w, sr)) != RUN_DONE) return rc;
        sr->counted = true;
    }
    bool more = sr->ntok > 0;
    while (more) {
        if (stopping(w->s)) return RUN_STOPPED;
        if ((rc = one_batch(w, sr, &more)) != RUN_DONE) return rc;
    }
    /* What is left behind: headers older than the chain reaches (or not
     * points). */
    return sr->ntok > 0 ? count_behind(w, sr) : RUN_DONE;
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
            finish_slice(s, &sr, rc == RUN_DONE);
        }
        pthread_mutex_unlock(&s->mu);
        if (!do_scan) slice_clear(&sr);
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
        if (!w->arr_dkid || !w->arr_header || !w->arr_old) break;
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
    out->reconnects = atomic_load(&s->reconnects);
    out->errors = atomic_load(&s->errors);
    pthread_mutex_unlock(&s->mu);
}

sweep *sweep_running(void)
{
    return g_running;
}
