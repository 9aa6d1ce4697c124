/* The search workers (searchpool.h): a queue of jobs under one mutex, the
 * threads that take them, each with a blocking PostgreSQL connection kept
 * across searches and re-established after a loss, and the done list the
 * loop polls. A job whose connection broke under it runs once more on a
 * fresh connection (se_search is read-only apart from sealing batches,
 * which is idempotent); any other failure goes back to the requester. */
#include "searchpool.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Searches waiting beyond this are refused (wait and retry): a backlog
 * that long means the database cannot keep up, and holding more would only
 * make every searcher wait longer. */
#define QUEUE_MAX 256
#define CONNECT_TIMEOUT_MS 10000
#define CONNECT_POLL_MS 100

/* The matches' archived rows, newest first, in binary form. */
#define SQL_MESSAGES                                                                               \
    "SELECT seq, sender, nick, origin_id, (extract(epoch FROM stamp) * 1000)::bigint, payload "   \
    "FROM messages WHERE room_id = $1 AND seq = ANY ($2::bigint[]) AND retracted_at IS NULL "     \
    "ORDER BY seq DESC"

struct searchpool {
    char *conninfo;
    unsigned nthreads, nstarted;
    pthread_t *threads;
    struct worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_bool stop;
    /* Under mu: */
    sp_job *qhead, *qtail;
    size_t queued;
    sp_job *done_head, *done_tail;
    unsigned long long running;
    /* Shared by the workers (thread-safe itself); NULL when off. */
    se_cache *cache;
    /* Readable while finished jobs wait (an eventfd), so the loop that
     * takes them back wakes at once instead of at its next timeout. */
    int wakefd;
    /* Bumped without the lock: */
    atomic_ullong evaluated, failed, reconnects;
};

typedef struct worker {
    searchpool *p;
    unsigned index;
    PGconn *conn;
    bool connected_before, outage_logged;
} worker;

sp_job *sp_job_new(size_t ncovers)
{
    sp_job *job = calloc(1, sizeof *job);
    if (!job) return NULL;
    job->covers = calloc(ncovers ? ncovers : 1, sizeof *job->covers);
    if (!job->covers) {
        free(job);
        return NULL;
    }
    job->ncovers = ncovers;
    return job;
}

static void msgs_free(sp_job *job)
{
    for (size_t i = 0; i < job->nmsgs; i++) {
        free(job->msgs[i].sender);
        free(job->msgs[i].nick);
        free(job->msgs[i].origin);
        free(job->msgs[i].payload);
    }
    free(job->msgs);
    job->msgs = NULL;
    job->nmsgs = 0;
}

void sp_job_free(sp_job *job)
{
    if (!job) return;
    for (size_t i = 0; i < job->ncovers; i++)
        se_cover_wipe(&job->covers[i]);
    free(job->covers);
    msgs_free(job);
    free(job);
}

static bool stopping(searchpool *p)
{
    return atomic_load(&p->stop);
}

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the connection ---- */

static void quiet_notices(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* Connect without blocking a stop for longer than CONNECT_POLL_MS. */
static PGconn *connect_polled(worker *w)
{
    static const char *const keys[] = {"application_name", "dbname", NULL};
    const char *vals[] = {"sealroomd-search", w->p->conninfo, NULL};
    PGconn *c = PQconnectStartParams(keys, vals, 1);
    if (!c || PQstatus(c) == CONNECTION_BAD) return c;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    long deadline = mono_ms() + CONNECT_TIMEOUT_MS;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        if (stopping(w->p) || mono_ms() >= deadline) {
            PQfinish(c);
            return NULL;
        }
        struct pollfd pfd = {.fd = PQsocket(c),
                             .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        int n = poll(&pfd, 1, CONNECT_POLL_MS);
        if (n < 0 && errno != EINTR) break;
        if (n > 0) st = PQconnectPoll(c);
    }
    return c;
}

/* 0 with w->conn usable, -1 when PostgreSQL cannot be reached now. */
static int ensure_conn(worker *w)
{
    if (w->conn && PQstatus(w->conn) == CONNECTION_OK) return 0;
    PQfinish(w->conn);
    w->conn = NULL;
    PGconn *c = connect_polled(w);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        if (!w->outage_logged && !stopping(w->p)) {
            log_warn("search", "worker %u cannot connect to PostgreSQL: %s", w->index,
                     c ? PQerrorMessage(c) : "timed out or out of memory");
            w->outage_logged = true;
        }
        PQfinish(c);
        return -1;
    }
    PQsetNoticeProcessor(c, quiet_notices, NULL);
    w->conn = c;
    if (w->connected_before) {
        atomic_fetch_add(&w->p->reconnects, 1);
        log_info("search", "worker %u reconnected to PostgreSQL", w->index);
    }
    w->connected_before = true;
    w->outage_logged = false;
    return 0;
}

/* ---- one search ---- */

static uint64_t be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | (unsigned char)p[i];
    return v;
}

static char *dup_field(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col)) return NULL;
    size_t n = (size_t)PQgetlength(r, row, col);
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, PQgetvalue(r, row, col), n);
        s[n] = '\0';
    }
    return s;
}

/* Read the matched messages into job->msgs. SE_OK or SE_ERR_DB/NOMEM. */
static int read_messages(worker *w, sp_job *job)
{
    if (job->res.n == 0) return SE_OK;
    /* "{1,2,3}": at most SE_MAX_RESULTS numbers of 20 digits. */
    char arr[SE_MAX_RESULTS * 21 + 3], id[24];
    size_t k = 0;
    arr[k++] = '{';
    for (size_t i = 0; i < job->res.n; i++)
        k += (size_t)snprintf(arr + k, sizeof arr - k, "%s%llu", i ? "," : "",
                              (unsigned long long)job->res.seqs[i]);
    arr[k++] = '}';
    arr[k] = '\0';
    snprintf(id, sizeof id, "%lld", job->q.room_id);
    const char *vals[2] = {id, arr};
    PGresult *r = PQexecParams(w->conn, SQL_MESSAGES, 2, NULL, vals, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(job->err, sizeof job->err, "reading the matches: %s",
                 r ? PQresultErrorMessage(r) : PQerrorMessage(w->conn));
        PQclear(r);
        return SE_ERR_DB;
    }
    int n = PQntuples(r);
    job->msgs = n ? calloc((size_t)n, sizeof *job->msgs) : NULL;
    if (n && !job->msgs) {
        PQclear(r);
        return SE_ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) {
        sp_msg *m = &job->msgs[job->nmsgs];
        if (PQgetlength(r, i, 0) != 8 || PQgetlength(r, i, 4) != 8) {
            PQclear(r);
            snprintf(job->err, sizeof job->err, "unexpected row shape reading the matches");
            return SE_ERR_DB;
        }
        m->seq = be64(PQgetvalue(r, i, 0));
        m->stamp_ms = (long long)be64(PQgetvalue(r, i, 4));
        m->len = (size_t)PQgetlength(r, i, 5);
        m->sender = dup_field(r, i, 1);
        m->nick = dup_field(r, i, 2);
        m->origin = dup_field(r, i, 3);
        m->payload = malloc(m->len ? m->len : 1);
        job->nmsgs++;
        if (!m->sender || !m->nick || (!PQgetisnull(r, i, 3) && !m->origin) || !m->payload) {
            PQclear(r);
            return SE_ERR_NOMEM;
        }
        memcpy(m->payload, PQgetvalue(r, i, 5), m->len);
    }
    PQclear(r);
    return SE_OK;
}

static int run_once(worker *w, sp_job *job)
{
    if (ensure_conn(w) != 0) {
        snprintf(job->err, sizeof job->err, "the database is unavailable");
        return SE_ERR_DB;
    }
    msgs_free(job);
    job->err[0] = '\0';
    job->q.cache = w->p->cache;
    int rc = se_search(w->conn, &job->q, &job->res, job->err, sizeof job->err);
    if (rc == SE_OK) rc = read_messages(w, job);
    return rc;
}

static void run_job(worker *w, sp_job *job)
{
    int rc = run_once(w, job);
    /* A connection lost under the search (PostgreSQL restarted, a network
     * blip): once more on a new one before giving up. */
    if (rc == SE_ERR_DB && w->conn && PQstatus(w->conn) != CONNECTION_OK && !stopping(w->p))
        rc = run_once(w, job);
    job->rc = rc;
    if (rc == SE_OK)
        atomic_fetch_add(&w->p->evaluated, 1);
    else if (rc == SE_ERR_DB)
        atomic_fetch_add(&w->p->failed, 1);
    if (rc == SE_ERR_DB && w->conn && PQstatus(w->conn) != CONNECTION_OK) {
        PQfinish(w->conn);
        w->conn = NULL;
    }
}

/* ---- the workers ---- */

static void push_done(searchpool *p, sp_job *job)
{
    job->next = NULL;
    if (p->done_tail)
        p->done_tail->next = job;
    else
        p->done_head = job;
    p->done_tail = job;
    if (p->wakefd >= 0) {
        uint64_t one = 1;
        /* EAGAIN: the counter is full, so the fd is readable anyway. */
        if (write(p->wakefd, &one, sizeof one) < 0 && errno != EAGAIN)
            log_warn("search", "cannot wake the loop: %s", strerror(errno));
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    searchpool *p = w->p;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!stopping(p) && !p->qhead)
            pthread_cond_wait(&p->cv, &p->mu);
        if (stopping(p)) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        sp_job *job = p->qhead;
        p->qhead = job->next;
        if (!p->qhead) p->qtail = NULL;
        p->queued--;
        p->running++;
        pthread_mutex_unlock(&p->mu);

        run_job(w, job);

        pthread_mutex_lock(&p->mu);
        p->running--;
        push_done(p, job);
        pthread_mutex_unlock(&p->mu);
    }
    PQfinish(w->conn);
    w->conn = NULL;
    return NULL;
}

/* ---- public ---- */

searchpool *searchpool_start(const char *conninfo, unsigned threads, size_t cache_bytes)
{
    if (sodium_init() < 0) return NULL;
    searchpool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->nthreads = threads ? threads : 1;
    p->conninfo = strdup(conninfo);
    p->threads = calloc(p->nthreads, sizeof *p->threads);
    p->workers = calloc(p->nthreads, sizeof *p->workers);
    p->cache = cache_bytes ? se_cache_new(cache_bytes) : NULL;
    p->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->wakefd < 0)
        log_warn("search", "no eventfd (%s): finished searches wait for the loop's timeout",
                 strerror(errno));
    bool sync_ok = false;
    if (cache_bytes && !p->cache) log_warn("search", "no memory for the search cache; searching without");
    if (p->conninfo && p->threads && p->workers && pthread_mutex_init(&p->mu, NULL) == 0) {
        sync_ok = pthread_cond_init(&p->cv, NULL) == 0;
        if (!sync_ok) pthread_mutex_destroy(&p->mu);
    }
    if (!sync_ok) {
        se_cache_free(p->cache);
        if (p->wakefd >= 0) close(p->wakefd);
        free(p->threads);
        free(p->workers);
        if (p->conninfo) sodium_memzero(p->conninfo, strlen(p->conninfo));
        free(p->conninfo);
        free(p);
        return NULL;
    }
    for (unsigned i = 0; i < p->nthreads; i++) {
        p->workers[i].p = p;
        p->workers[i].index = i;
        if (pthread_create(&p->threads[i], NULL, worker_main, &p->workers[i]) != 0) break;
        p->nstarted++;
    }
    if (p->nstarted < p->nthreads) {
        log_error("search", "cannot start worker thread %u", p->nstarted);
        searchpool_stop(p);
        searchpool_free(p);
        return NULL;
    }
    log_info("search", "%u search worker(s)", p->nthreads);
    return p;
}

void searchpool_stop(searchpool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nstarted; i++)
        pthread_join(p->threads[i], NULL);
    p->nstarted = 0;
    /* Nobody runs them now: they go back failed. */
    while (p->qhead) {
        sp_job *job = p->qhead;
        p->qhead = job->next;
        job->rc = SE_ERR_DB;
        snprintf(job->err, sizeof job->err, "shutting down");
        push_done(p, job);
    }
    p->qtail = NULL;
    p->queued = 0;
}

void searchpool_free(searchpool *p)
{
    if (!p) return;
    while (p->done_head) {
        sp_job *job = p->done_head;
        p->done_head = job->next;
        sp_job_free(job);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    /* It may hold a password. */
    sodium_memzero(p->conninfo, strlen(p->conninfo));
    free(p->conninfo);
    free(p->threads);
    free(p->workers);
    se_cache_free(p->cache);
    if (p->wakefd >= 0) close(p->wakefd);
    free(p);
}

bool searchpool_submit(searchpool *p, sp_job *job)
{
    if (!p) return false;
    bool ok = false;
    pthread_mutex_lock(&p->mu);
    if (!stopping(p) && p->queued < QUEUE_MAX) {
        job->next = NULL;
        if (p->qtail)
            p->qtail->next = job;
        else
            p->qhead = job;
        p->qtail = job;
        p->queued++;
        pthread_cond_signal(&p->cv);
        ok = true;
    }
    pthread_mutex_unlock(&p->mu);
    return ok;
}

int searchpool_wakefd(const searchpool *p)
{
    return p ? p->wakefd : -1;
}

sp_job *searchpool_take_done(searchpool *p)
{
    if (!p) return NULL;
    pthread_mutex_lock(&p->mu);
    if (p->wakefd >= 0) {
        /* Emptied under the lock, before the list: a job pushed after
         * this wakes the loop again. */
        uint64_t n;
        while (read(p->wakefd, &n, sizeof n) > 0)
            ;
    }
    sp_job *job = p->done_head;
    if (job) {
        p->done_head = job->next;
        if (!p->done_head) p->done_tail = NULL;
        job->next = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    return job;
}

void searchpool_get_stats(searchpool *p, searchpool_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    out->threads = p->nthreads;
    out->queued = p->queued;
    out->running = p->running;
    pthread_mutex_unlock(&p->mu);
    out->evaluated = atomic_load(&p->evaluated);
    out->failed = atomic_load(&p->failed);
    out->reconnects = atomic_load(&p->reconnects);
    se_cache_stats cs;
    se_cache_get_stats(p->cache, &cs);
    out->cache_hits = cs.hits;
    out->cache_misses = cs.misses;
    out->cache_bytes = cs.bytes;
}
