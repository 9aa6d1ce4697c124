/* Evaluation of an encrypted search (searcheval.h).
 *
 * Round trips. Everything goes through libpq's pipeline mode with
 * prepared statements, binary parameters (int8[] and bytea[] arrays) and
 * binary results, so one round trip carries all the probes of a round:
 *   1. seal ‖ BEGIN REPEATABLE READ ‖ list the live batches and segments;
 *   2.. one pipeline per round: entry labels of every (keyword, batch) still
 *      being probed, posting blocks of every (keyword, segment) still worth
 *      reading, and once the entries are all in, the liveness (message
 *      there, not retracted) of the page's candidates;
 *   last: the liveness of the candidates not yet checked ‖ COMMIT.
 * Entries are probed 16 counters per batch first, then only where the whole
 * chunk matched, doubling. Segment blocks are read in order (block 0 holds
 * the newest seqs), one block per segment first, doubling, and only while
 * the segment could still change the page: a segment whose unread seqs all
 * lie below the (max+1)-th known match, or where no other keyword could
 * match any more, is left alone.
 *
 * Sealing. The seal commits on its own, before the snapshot is taken: the
 * message path counts entries on the batch row in the transaction that
 * stores them, so an entry either committed before the seal (and is in the
 * snapshot) or meets a sealed batch and is refused. Inside a REPEATABLE
 * READ transaction the same update would fail with a serialization error
 * whenever a message had just touched the batch. A seal stays right even
 * if the evaluation then fails: the search did reach the batch.
 *
 * Snapshot. All reads share one snapshot, so a compaction committing in
 * between (batches' entries deleted, a segment made live) shows either
 * entirely or not at all. Liveness needs no snapshot (a retraction is for
 * good), so the last liveness checks ride with the COMMIT; should they
 * drop enough of the page that a segment has to be read further, the
 * evaluation starts again from the listing, keeping what it learnt about
 * retractions, and that second time checks liveness before committing.
 *
 * Correctness. Per keyword the matches are exactly the spec's: entry
 * counters 0.. until the first miss, blocks 0.. until a miss or a block
 * with fewer than 32 seqs (a block that does not open is logged, counted
 * and skipped). The page is the newest `max` of the intersection below
 * `before` with every member checked live, and it is final only when no
 * unread block could hold a seq above its (max+1)-th match. */
#include "searcheval.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define OID_BYTEA 17
#define OID_INT8 20
#define FIRST_CHUNK 16
#define MAX_CHUNK 8192
#define MAX_BLOCK_READ 256
/* While entries are still being probed the page is not known, so blocks
 * are read speculatively (saving a round trip when the batches alone do
 * not fill the page), but only from the newest few segments of a keyword. */
#define SPEC_SEGMENTS 4
#define LIVE_AHEAD (4 * SE_MAX_RESULTS)
#define SQLSTATE_NO_STATEMENT "26000"
#define SQLSTATE_DUP_STATEMENT "42P05"

/* $1 room, $2 hi. Seals only when hi is within the room's batches (a
 * refused search seals nothing); returns the room's last batch, no row for
 * no room. (A data-modifying WITH runs whether or not it is read.) */
/* Seals the open batches <= $2 that nobody is writing into right now and
 * returns the room's last batch with, one per row, the open batches it
 * skipped (NULL when none). It never waits for a row lock: a message being
 * stored holds its batch's row until its group commit ends, and that
 * commit may wait for another batch's row, so a statement that locked
 * several batches in its own order and waited could deadlock with it.
 * The skipped ones are then sealed one row per transaction (SQL_SEAL1). */
#define SQL_SEAL                                                                                   \
    "WITH r AS (SELECT search_last_batch AS last FROM rooms WHERE room_id = $1), "                 \
    "l AS (SELECT batch FROM search_batches WHERE room_id = $1 AND batch <= $2 AND state = 0 "     \
    "AND $2 <= (SELECT last FROM r) FOR UPDATE SKIP LOCKED), "                                     \
    "s AS (UPDATE search_batches b SET state = 1 FROM l WHERE b.room_id = $1 "                     \
    "AND b.batch = l.batch RETURNING b.batch) "                                                    \
    "SELECT r.last, o.batch FROM r LEFT JOIN (SELECT batch FROM search_batches WHERE room_id = $1 " \
    "AND batch <= $2 AND state = 0 AND $2 <= (SELECT last FROM r) "                                \
    "AND batch NOT IN (SELECT batch FROM s)) o ON true"
/* One busy batch, in its own transaction: waits for the message writing
 * into it, holding no other lock meanwhile. */
#define SQL_SEAL1                                                                                  \
    "UPDATE search_batches SET state = 1 WHERE room_id = $1 AND batch = $2 AND state = 0"
/* $1 room, $2 hi, $3 before (exclusive). Kind 0: batch, gen; kind 1:
 * segment, gen, first and last batch, min and max seq. */
#define SQL_LIST                                                                                   \
    "SELECT 0::int8, batch, gen::int8, 0::int8, 0::int8, 0::int8, 0::int8 FROM search_batches "    \
    "WHERE room_id = $1 AND batch <= $2 AND state <= 1 "                                           \
    "UNION ALL SELECT 1::int8, segment, gen::int8, first_batch, last_batch, min_seq, max_seq "     \
    "FROM search_segments WHERE room_id = $1 AND state = 1 AND last_batch <= $2 AND min_seq < $3"
/* Probes are primary-key lookups, one per pair, whatever the statistics
 * say: a lateral subquery with LIMIT is never flattened into a join, so
 * the planner cannot trade it for a scan of the room's rows (which it
 * does when the tables grew since their last ANALYZE). */
/* $1 room, $2 batches, $3 labels: the index (from 1) of each pair found. */
#define SQL_ENTRIES                                                                                \
    "SELECT p.i, e.seq FROM unnest($2::int8[], $3::bytea[]) WITH ORDINALITY AS p(batch, label, "   \
    "i) "                                                                                          \
    "CROSS JOIN LATERAL (SELECT seq FROM search_entries WHERE room_id = $1 AND batch = p.batch "   \
    "AND label = p.label LIMIT 1) e"
#define SQL_BLOCKS                                                                                 \
    "SELECT p.i, b.body FROM unnest($2::int8[], $3::bytea[]) WITH ORDINALITY AS p(seg, label, i) " \
    "CROSS JOIN LATERAL (SELECT body FROM search_blocks WHERE room_id = $1 AND segment = p.seg "   \
    "AND label = p.label LIMIT 1) b"
/* $1 room, $2 seqs: those that are messages and not retracted. */
#define SQL_LIVE                                                                                   \
    "SELECT u.seq FROM unnest($2::int8[]) AS u(seq) CROSS JOIN LATERAL (SELECT 1 FROM messages "   \
    "WHERE room_id = $1 AND seq = u.seq AND retracted_at IS NULL LIMIT 1) m"

static const struct {
    const char *name, *sql;
} STATEMENTS[] = {
    {"se_seal", SQL_SEAL},     {"se_seal1", SQL_SEAL1}, {"se_list", SQL_LIST}, {"se_entries", SQL_ENTRIES},
    {"se_blocks", SQL_BLOCKS}, {"se_live", SQL_LIVE},
};
#define NSTATEMENTS (sizeof STATEMENTS / sizeof STATEMENTS[0])

/* ---- small containers ---- */

typedef struct seqvec {
    uint64_t *v;
    size_t n, cap;
} seqvec;

typedef struct buf {
    unsigned char *p;
    size_t len, cap;
} buf;

typedef struct batch_row {
    uint64_t id;
    uint32_t gen;
} batch_row;

typedef struct seg_row {
    uint64_t id, first, last, min_seq, max_seq;
    uint32_t gen;
} seg_row;

/* The entries of one keyword in one batch: counters below next matched. */
typedef struct etask {
    unsigned kw;
    uint64_t batch;
    uint32_t next, chunk;
    bool done;
    size_t req; /* this round's first request (chunk of them) */
    unsigned char t[SSE_KEY_BYTES];
} etask;

/* The blocks of one keyword in one segment. Every unread seq of it is at
 * most frontier (0: nothing left to read). */
typedef struct stask {
    unsigned kw;
    const seg_row *seg;
    uint32_t next, nread;
    uint64_t frontier, last_seq;
    size_t req, nreq; /* this round's requests */
    unsigned char s[SSE_KEY_BYTES], bk[SSE_KEY_BYTES];
} stask;

typedef struct ereq {
    uint64_t batch;
    unsigned char label[SSE_LABEL_BYTES];
    uint64_t seq; /* 0: no such entry */
} ereq;

typedef struct breq {
    uint64_t seg;
    unsigned char label[SSE_LABEL_BYTES];
    const unsigned char *body; /* into this round's result; NULL: no such block */
} breq;

typedef struct eval {
    PGconn *pg;
    const se_query *q;
    se_result *out;
    char *err;
    size_t errlen;
    int code;       /* the first failure, SE_OK while none */
    bool no_stmt;   /* it was a missing prepared statement */
    uint64_t bound; /* results are below it */
    bool optimistic;
    bool in_tx;
    batch_row *batches;
    size_t nbatches;
    seg_row *segs;
    size_t nsegs;
    etask *et;
    size_t net;
    stask *st;
    size_t nst;
    /* What is known: per keyword the seqs found (below bound, sorted
     * descending once assessed) and the highest seq it may still have
     * unread (UINT64_MAX while entries are pending); the intersection
     * minus known-dead seqs, and its (max+1)-th element (0: fewer). */
    seqvec found[SE_MAX_KEYWORDS];
    uint64_t unknown[SE_MAX_KEYWORDS];
    bool pending;
    seqvec inter;
    uint64_t cstar;
    seqvec live, dead; /* liveness checked, sorted descending */
    /* This round's requests. */
    ereq *er;
    size_t ner, cer;
    breq *br;
    size_t nbr, cbr;
    seqvec lreq;
    buf pb[5];
} eval;

static void fail(eval *ev, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void fail(eval *ev, int code, const char *fmt, ...)
{
    if (ev->code != SE_OK) return;
    ev->code = code;
    if (ev->errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev->err, ev->errlen, fmt, ap);
    va_end(ap);
}

/* p grown to hold need elements of size bytes (p itself when it does);
 * NULL, p untouched, when memory ran out. */
static void *grow(eval *ev, void *p, size_t *cap, size_t need, size_t size)
{
    if (p && need <= *cap) return p;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *q = realloc(p, c * size);
    if (!q) {
        fail(ev, SE_ERR_NOMEM, "out of memory");
        return NULL;
    }
    *cap = c;
    return q;
}

static bool sv_push(eval *ev, seqvec *s, uint64_t x)
{
    uint64_t *v = grow(ev, s->v, &s->cap, s->n + 1, sizeof *v);
    if (!v) return false;
    s->v = v;
    s->v[s->n++] = x;
    return true;
}

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void sv_sort(seqvec *s)
{
    if (s->n < 2) return;
    qsort(s->v, s->n, sizeof *s->v, cmp_desc);
    size_t w = 1;
    for (size_t i = 1; i < s->n; i++)
        if (s->v[i] != s->v[w - 1]) s->v[w++] = s->v[i];
    s->n = w;
}

/* Index of the first element <= m of a descending vector (n if none). */
static size_t sv_first_le(const seqvec *s, uint64_t m)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->v[mid] > m)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool sv_has(const seqvec *s, uint64_t x)
{
    size_t i = sv_first_le(s, x);
    return i < s->n && s->v[i] == x;
}

static void sv_free(seqvec *s)
{
    free(s->v);
    memset(s, 0, sizeof *s);
}

static bool buf_put(eval *ev, buf *b, const void *p, size_t n)
{
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (n > cap - b->len)
            cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q) {
            fail(ev, SE_ERR_NOMEM, "out of memory");
            return false;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return true;
}

static void be32(unsigned char b[4], uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (24 - 8 * i));
}

static void be64(unsigned char b[8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (56 - 8 * i));
}

static uint64_t get64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

static uint32_t get32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Header of a one-dimensional binary array of n elements (array_send). */
static bool arr_begin(eval *ev, buf *b, uint32_t elem, size_t n)
{
    unsigned char h[20];
    b->len = 0;
    be32(h, n ? 1 : 0);
    be32(h + 4, 0); /* no NULLs */
    be32(h + 8, elem);
    be32(h + 12, (uint32_t)n);
    be32(h + 16, 1); /* lower bound */
    return buf_put(ev, b, h, n ? 20 : 12);
}

static bool arr_int8(eval *ev, buf *b, uint64_t v)
{
    unsigned char e[12];
    be32(e, 8);
    be64(e + 4, v);
    return buf_put(ev, b, e, sizeof e);
}

static bool arr_bytes(eval *ev, buf *b, const unsigned char *p, size_t n)
{
    unsigned char len[4];
    be32(len, (uint32_t)n);
    return buf_put(ev, b, len, 4) && buf_put(ev, b, p, n);
}

/* ---- the pipeline ---- */

/* One command of a pipeline: a prepared statement (binary in and out), a
 * plain command (sql), or a sync point (neither). */
typedef struct call {
    const char *stmt;
    const char *sql;
    int nparams;
    const char *vals[3];
    int lens[3];
} call;

static const call SYNC = {0};

static bool is_sync(const call *c)
{
    return !c->stmt && !c->sql;
}

static void result_failed(eval *ev, PGresult *r, const char *what)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (ev->code == SE_OK && state && strcmp(state, SQLSTATE_NO_STATEMENT) == 0) ev->no_stmt = true;
    fail(ev, SE_ERR_DB, "%s: %s", what,
         r && PQresultStatus(r) == PGRES_FATAL_ERROR ? PQresultErrorMessage(r)
                                                     : PQerrorMessage(ev->pg));
}

/* The next result of the pipeline and the NULL that ends a command's
 * results. NULL when the connection broke. */
static PGresult *next_result(PGconn *pg)
{
    PGresult *r = PQgetResult(pg);
    if (r && PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
        PGresult *extra;
        while ((extra = PQgetResult(pg)) != NULL)
            PQclear(extra);
    }
    return r;
}

/* Sends calls[0..n) and collects one result per command into res (NULL
 * for a command that failed or never ran); n must end with a sync. Every
 * result up to the last sync is consumed, unless the connection broke.
 * true if every command succeeded. allow_dup: a prepare that finds its
 * statement already there counts as success. */
static bool pipeline(eval *ev, const call *calls, size_t n, PGresult **res, bool allow_dup)
{
    static const int formats[3] = {1, 1, 1};
    size_t nres = 0;
    bool sent = true, ok = true;

    for (size_t i = 0; i < n && sent; i++) {
        const call *c = &calls[i];
        if (is_sync(c))
            sent = PQpipelineSync(ev->pg) == 1;
        else if (c->stmt && c->sql)
            sent = PQsendPrepare(ev->pg, c->stmt, c->sql, 0, NULL) == 1;
        else if (c->stmt)
            sent =
                PQsendQueryPrepared(ev->pg, c->stmt, c->nparams, c->vals, c->lens, formats, 1) == 1;
        else
            sent = PQsendQueryParams(ev->pg, c->sql, 0, NULL, NULL, NULL, NULL, 0) == 1;
    }
    if (!sent) {
        fail(ev, SE_ERR_DB, "cannot send: %s", PQerrorMessage(ev->pg));
        return false;
    }
    ev->out->round_trips++;
    for (size_t i = 0; i < n; i++) {
        const call *c = &calls[i];
        PGresult *r = next_result(ev->pg);
        if (!r) {
            fail(ev, SE_ERR_DB, "connection lost: %s", PQerrorMessage(ev->pg));
            return false;
        }
        ExecStatusType st = PQresultStatus(r);
        if (is_sync(c)) {
            if (st != PGRES_PIPELINE_SYNC) {
                result_failed(ev, r, "pipeline out of step");
                ok = false;
            }
            PQclear(r);
            continue;
        }
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ||
            (allow_dup && state && strcmp(state, SQLSTATE_DUP_STATEMENT) == 0)) {
            if (res)
                res[nres] = r;
            else
                PQclear(r);
        } else {
            result_failed(ev, r, c->stmt ? c->stmt : c->sql);
            PQclear(r);
            if (res) res[nres] = NULL;
            ok = false;
        }
        nres++;
    }
    return ok;
}

static void clear_results(PGresult **res, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        PQclear(res[i]);
        res[i] = NULL;
    }
}

/* After a failure inside the transaction: roll it back so the connection
 * is idle again. Nothing to do when it is gone. */
static void abandon(eval *ev)
{
    PGTransactionStatusType ts = PQtransactionStatus(ev->pg);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
        /* Its own failure would only repeat the first one: keep that. */
        const call calls[] = {{.sql = "ROLLBACK"}, SYNC};
        int code = ev->code;
        size_t errlen = ev->errlen;
        ev->code = SE_OK;
        ev->errlen = 0;
        pipeline(ev, calls, 2, NULL, false);
        ev->code = code;
        ev->errlen = errlen;
    }
    ev->in_tx = false;
}

static bool prepare_all(eval *ev)
{
    call calls[2 * NSTATEMENTS];
    for (size_t i = 0; i < NSTATEMENTS; i++) {
        calls[2 * i] = (call){.stmt = STATEMENTS[i].name, .sql = STATEMENTS[i].sql};
        calls[2 * i + 1] = SYNC;
    }
    return pipeline(ev, calls, 2 * NSTATEMENTS, NULL, true);
}

/* ---- the listing ---- */

static int cmp_batch(const void *a, const void *b)
{
    uint64_t x = ((const batch_row *)a)->id, y = ((const batch_row *)b)->id;
    return x < y ? -1 : x > y;
}

/* Newest segments first: the order blocks are worth reading in. */
static int cmp_seg(const void *a, const void *b)
{
    const seg_row *x = a, *y = b;
    if (x->max_seq != y->max_seq) return x->max_seq < y->max_seq ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static bool take_listing(eval *ev, const PGresult *r)
{
    int rows = PQntuples(r);
    if (PQnfields(r) != 7) {
        fail(ev, SE_ERR_DB, "listing: unexpected shape");
        return false;
    }
    ev->batches = calloc((size_t)rows + 1, sizeof *ev->batches);
    ev->segs = calloc((size_t)rows + 1, sizeof *ev->segs);
    if (!ev->batches || !ev->segs) {
        fail(ev, SE_ERR_NOMEM, "out of memory");
        return false;
    }
    for (int i = 0; i < rows; i++) {
        uint64_t v[7];
        for (int f = 0; f < 7; f++) {
            if (PQgetlength(r, i, f) != 8) {
                fail(ev, SE_ERR_DB, "listing: unexpected field");
                return false;
            }
            v[f] = get64((const unsigned char *)PQgetvalue(r, i, f));
        }
        /* gen is a positive int4 (CHECK gen > 0). */
        if (v[0] == 0)
            ev->batches[ev->nbatches++] = (batch_row){v[1], (uint32_t)v[2]};
        else
            ev->segs[ev->nsegs++] = (seg_row){v[1], v[3], v[4], v[5], v[6], (uint32_t)v[2]};
    }
    qsort(ev->batches, ev->nbatches, sizeof *ev->batches, cmp_batch);
    qsort(ev->segs, ev->nsegs, sizeof *ev->segs, cmp_seg);
    return true;
}

/* Batches a message was being written into when the seal skipped them
 * (rows of the seal's answer): roll the listing back, seal each in a
 * transaction of its own (waiting for its writer, then sealing it), and
 * list again from a snapshot taken after every seal. */
static bool seal_busy(eval *ev, PGresult *seal, size_t nbusy)
{
    size_t ncalls = 2 + 2 * nbusy + 3, k = 0;
    call *calls = calloc(ncalls, sizeof *calls);
    unsigned char(*ids)[8] = calloc(nbusy, sizeof *ids);
    PGresult **res = calloc(ncalls, sizeof *res);
    unsigned char room[8], hi[8], bound[8];
    bool ok = false;
    if (!calls || !ids || !res) {
        fail(ev, SE_ERR_NOMEM, "out of memory");
        goto out;
    }
    be64(room, (uint64_t)ev->q->room_id);
    be64(hi, ev->q->hi);
    be64(bound, ev->bound > INT64_MAX ? (uint64_t)INT64_MAX : ev->bound);
    calls[k++] = (call){.sql = "ROLLBACK"};
    calls[k++] = SYNC;
    for (int i = 0, j = 0; i < PQntuples(seal); i++) {
        if (PQgetisnull(seal, i, 1) || PQgetlength(seal, i, 1) != 8) continue;
        memcpy(ids[j], PQgetvalue(seal, i, 1), 8);
        calls[k++] = (call){.stmt = "se_seal1",
                            .nparams = 2,
                            .vals = {(const char *)room, (const char *)ids[j]},
                            .lens = {8, 8}};
        calls[k++] = SYNC;
        j++;
    }
    calls[k++] = (call){.sql = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"};
    calls[k++] = (call){.stmt = "se_list",
                        .nparams = 3,
                        .vals = {(const char *)room, (const char *)hi, (const char *)bound},
                        .lens = {8, 8, 8}};
    calls[k++] = SYNC;
    ev->in_tx = false;
    ok = pipeline(ev, calls, k, res, false);
    ev->in_tx = true;
    /* Results: ROLLBACK, one per seal, BEGIN, the listing. */
    if (ok) ok = take_listing(ev, res[1 + nbusy + 1]);
out:
    if (res) clear_results(res, ncalls);
    free(res);
    free(ids);
    free(calls);
    return ok;
}

/* Seal ‖ BEGIN ‖ list. Prepares the statements if the connection lacks
 * them and tries once more. */
static bool start(eval *ev)
{
    unsigned char room[8], hi[8], bound[8];
    be64(room, (uint64_t)ev->q->room_id);
    be64(hi, ev->q->hi);
    be64(bound, ev->bound > INT64_MAX ? (uint64_t)INT64_MAX : ev->bound);
    const call calls[] = {
        {.stmt = "se_seal",
         .nparams = 2,
         .vals = {(const char *)room, (const char *)hi},
         .lens = {8, 8}},
        SYNC,
        {.sql = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"},
        {.stmt = "se_list",
         .nparams = 3,
         .vals = {(const char *)room, (const char *)hi, (const char *)bound},
         .lens = {8, 8, 8}},
        SYNC,
    };
    PGresult *res[3] = {0};
    bool ok = false;

    for (int attempt = 0; attempt < 2; attempt++) {
        ev->no_stmt = false;
        ok = pipeline(ev, calls, sizeof calls / sizeof calls[0], res, false);
        ev->in_tx = true;
        if (ok || !ev->no_stmt || attempt > 0) break;
        clear_results(res, 3);
        abandon(ev);
        ev->code = SE_OK;
        if (ev->errlen) ev->err[0] = '\0';
        if (!prepare_all(ev)) return false;
    }
    if (!ok) goto out;
    ok = false;
    if (PQntuples(res[0]) < 1 || PQgetlength(res[0], 0, 0) != 8) {
        fail(ev, SE_ERR_NO_ROOM, "no such room");
        goto out;
    }
    ev->out->last_batch = get64((const unsigned char *)PQgetvalue(res[0], 0, 0));
    if (ev->q->hi > ev->out->last_batch) {
        fail(ev, SE_ERR_BAD_QUERY, "hi is beyond the room's last batch");
        goto out;
    }
    size_t nbusy = 0;
    for (int i = 0; i < PQntuples(res[0]); i++)
        nbusy += !PQgetisnull(res[0], i, 1) && PQgetlength(res[0], i, 1) == 8;
    if (nbusy == 0) {
        ok = take_listing(ev, res[2]);
        goto out;
    }
    ok = seal_busy(ev, res[0], nbusy);
out:
    clear_results(res, 3);
    return ok;
}

/* ---- tasks: the searcher's nodes walked down to batch tokens ---- */

/* First batch with id >= lo. */
static size_t batch_from(const eval *ev, uint64_t lo)
{
    size_t a = 0, b = ev->nbatches;
    while (a < b) {
        size_t mid = a + (b - a) / 2;
        if (ev->batches[mid].id < lo)
            a = mid + 1;
        else
            b = mid;
    }
    return a;
}

static void new_etask(eval *ev, unsigned kw, uint64_t batch, const unsigned char t[SSE_KEY_BYTES])
{
    etask *e = &ev->et[ev->net++];
    e->kw = kw;
    e->batch = batch;
    e->next = 0;
    e->chunk = FIRST_CHUNK;
    e->done = false;
    memcpy(e->t, t, SSE_KEY_BYTES);
}

static void new_stask(eval *ev, unsigned kw, const seg_row *seg,
                      const unsigned char t_first[SSE_KEY_BYTES])
{
    stask *s = &ev->st[ev->nst++];
    s->kw = kw;
    s->seg = seg;
    s->next = 0;
    s->nread = 1;
    s->last_seq = 0;
    s->frontier = seg->max_seq < ev->bound ? seg->max_seq : ev->bound - 1;
    if (s->frontier < seg->min_seq) s->frontier = 0;
    sse_segment_key(s->s, t_first, seg->id);
    sse_block_key(s->bk, s->s);
}

static int cmp_stask(const void *a, const void *b)
{
    const stask *x = a, *y = b;
    if (x->kw != y->kw) return x->kw < y->kw ? -1 : 1;
    return cmp_seg(x->seg, y->seg);
}

/* Per keyword, each batch and segment (its first batch) of a cover's
 * generation inside one of the cover's nodes becomes a task, the first
 * cover that reaches it winning, so overlapping covers cost nothing
 * more. */
static bool make_tasks(eval *ev)
{
    size_t nk = ev->q->nkeywords;
    bool *taken_b = calloc(ev->nbatches + 1, sizeof *taken_b);
    bool *taken_s = calloc(ev->nsegs + 1, sizeof *taken_s);
    ev->et = calloc(nk * ev->nbatches + 1, sizeof *ev->et);
    ev->st = calloc(nk * ev->nsegs + 1, sizeof *ev->st);
    if (!taken_b || !taken_s || !ev->et || !ev->st) {
        free(taken_b);
        free(taken_s);
        fail(ev, SE_ERR_NOMEM, "out of memory");
        return false;
    }
    unsigned char t[SSE_KEY_BYTES];
    sse_walk w;
    for (unsigned k = 0; k < nk; k++) {
        const se_keyword *kw = &ev->q->keywords[k];
        memset(taken_b, 0, ev->nbatches * sizeof *taken_b);
        memset(taken_s, 0, ev->nsegs * sizeof *taken_s);
        for (size_t c = 0; c < kw->ncovers; c++) {
            const se_cover *cv = &kw->covers[c];
            for (size_t j = 0; j < cv->nnodes; j++) {
                const sse_node *nd = &cv->nodes[j];
                uint64_t lo, hi;
                /* Validated: well-formed and inside [1, hi]. */
                if (!sse_node_range(nd->depth, nd->prefix, &lo, &hi) ||
                    !sse_walk_init(&w, nd->depth, nd->prefix, nd->key))
                    continue;
                for (size_t i = batch_from(ev, lo); i < ev->nbatches && ev->batches[i].id <= hi;
                     i++) {
                    if (taken_b[i] || ev->batches[i].gen != cv->gen) continue;
                    taken_b[i] = true;
                    sse_walk_leaf(&w, t, (uint32_t)ev->batches[i].id);
                    new_etask(ev, k, ev->batches[i].id, t);
                }
                for (size_t i = 0; i < ev->nsegs; i++) {
                    const seg_row *sg = &ev->segs[i];
                    if (taken_s[i] || sg->gen != cv->gen || sg->first < lo || sg->first > hi)
                        continue;
                    taken_s[i] = true;
                    sse_walk_leaf(&w, t, (uint32_t)sg->first);
                    new_stask(ev, k, sg, t);
                }
                sse_walk_wipe(&w);
            }
        }
    }
    sodium_memzero(t, sizeof t);
    free(taken_b);
    free(taken_s);
    qsort(ev->st, ev->nst, sizeof *ev->st, cmp_stask);
    return true;
}

static void drop_tasks(eval *ev)
{
    if (ev->et) sodium_memzero(ev->et, ev->net * sizeof *ev->et);
    if (ev->st) sodium_memzero(ev->st, ev->nst * sizeof *ev->st);
    free(ev->et);
    free(ev->st);
    free(ev->batches);
    free(ev->segs);
    ev->et = NULL;
    ev->st = NULL;
    ev->batches = NULL;
    ev->segs = NULL;
    ev->net = ev->nst = ev->nbatches = ev->nsegs = 0;
    for (size_t k = 0; k < SE_MAX_KEYWORDS; k++)
        ev->found[k].n = 0;
}

/* ---- what is known, and what is still worth reading ---- */

static bool assess(eval *ev)
{
    size_t nk = ev->q->nkeywords;
    ev->pending = false;
    for (size_t k = 0; k < nk; k++) {
        sv_sort(&ev->found[k]);
        ev->unknown[k] = 0;
    }
    for (size_t i = 0; i < ev->net; i++)
        if (!ev->et[i].done) {
            ev->unknown[ev->et[i].kw] = UINT64_MAX;
            ev->pending = true;
        }
    for (size_t i = 0; i < ev->nst; i++) {
        unsigned k = ev->st[i].kw;
        if (ev->st[i].frontier > ev->unknown[k]) ev->unknown[k] = ev->st[i].frontier;
    }
    /* The intersection, from the smallest keyword's seqs. */
    size_t small = 0;
    for (size_t k = 1; k < nk; k++)
        if (ev->found[k].n < ev->found[small].n) small = k;
    ev->inter.n = 0;
    uint64_t *v = grow(ev, ev->inter.v, &ev->inter.cap, ev->found[small].n, sizeof *v);
    if (!v) return false;
    ev->inter.v = v;
    for (size_t i = 0; i < ev->found[small].n; i++) {
        uint64_t x = ev->found[small].v[i];
        bool all = !sv_has(&ev->dead, x);
        for (size_t k = 0; k < nk && all; k++)
            all = k == small || sv_has(&ev->found[k], x);
        if (all) ev->inter.v[ev->inter.n++] = x;
    }
    ev->cstar = ev->inter.n > ev->q->max ? ev->inter.v[ev->q->max] : 0;
    return true;
}

/* The highest seq y <= m that every keyword other than kw may still hold
 * (found, or not yet ruled out: at most its unknown bound) and that is
 * not known dead; 0 if none. A block of kw can only matter up there. */
static uint64_t highest_possible(const eval *ev, unsigned kw, uint64_t m)
{
    size_t nk = ev->q->nkeywords, j0 = nk;
    uint64_t v = UINT64_MAX;
    for (size_t j = 0; j < nk; j++)
        if (j != kw && ev->unknown[j] < v) {
            v = ev->unknown[j];
            j0 = j;
        }
    if (j0 == nk || m <= v) return m;
    /* Above v, keyword j0 holds only what was found. */
    const seqvec *f = &ev->found[j0];
    for (size_t i = sv_first_le(f, m); i < f->n && f->v[i] > v; i++) {
        uint64_t x = f->v[i];
        bool ok = !sv_has(&ev->dead, x);
        for (size_t j = 0; j < nk && ok; j++)
            if (j != kw && j != j0 && x > ev->unknown[j]) ok = sv_has(&ev->found[j], x);
        if (ok) return x;
    }
    return v;
}

static bool worth_reading(const eval *ev, const stask *s)
{
    return s->frontier > ev->cstar && highest_possible(ev, s->kw, s->frontier) > ev->cstar;
}

/* ---- a round ---- */

/* Fills this round's requests from the assessed state. */
static bool plan(eval *ev)
{
    ev->ner = ev->nbr = 0;
    ev->lreq.n = 0;
    for (size_t i = 0; i < ev->net; i++) {
        etask *e = &ev->et[i];
        if (e->done) continue;
        ereq *er = grow(ev, ev->er, &ev->cer, ev->ner + e->chunk, sizeof *er);
        if (!er) return false;
        ev->er = er;
        e->req = ev->ner;
        for (uint32_t c = 0; c < e->chunk; c++) {
            ereq *r = &ev->er[ev->ner++];
            r->batch = e->batch;
            r->seq = 0;
            sse_label(r->label, e->t, e->next + c);
        }
    }
    size_t spec[SE_MAX_KEYWORDS] = {0};
    for (size_t i = 0; i < ev->nst; i++) {
        stask *s = &ev->st[i];
        s->nreq = 0;
        if (!worth_reading(ev, s)) continue;
        if (ev->pending && spec[s->kw]++ >= SPEC_SEGMENTS) continue;
        breq *br = grow(ev, ev->br, &ev->cbr, ev->nbr + s->nread, sizeof *br);
        if (!br) return false;
        ev->br = br;
        s->req = ev->nbr;
        s->nreq = s->nread;
        for (uint32_t b = 0; b < s->nread; b++) {
            breq *r = &ev->br[ev->nbr++];
            r->seg = s->seg->id;
            r->body = NULL;
            sse_block_label(r->label, s->s, s->next + b);
        }
    }
    /* Liveness of the page's candidates once the entries are in (before,
     * the page still moves); looking further ahead the more retractions
     * have turned up. */
    size_t top =
        ev->pending ? 0 : ev->q->max + 1 + (ev->dead.n < LIVE_AHEAD ? ev->dead.n : LIVE_AHEAD);
    if (top > ev->inter.n) top = ev->inter.n;
    for (size_t i = 0; i < top; i++)
        if (!sv_has(&ev->live, ev->inter.v[i]) && !sv_push(ev, &ev->lreq, ev->inter.v[i]))
            return false;
    return true;
}

static bool take_entries(eval *ev, const PGresult *r)
{
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetlength(r, i, 0) != 8 || PQgetlength(r, i, 1) != 8) goto bad;
        uint64_t idx = get64((const unsigned char *)PQgetvalue(r, i, 0));
        uint64_t seq = get64((const unsigned char *)PQgetvalue(r, i, 1));
        if (idx < 1 || idx > ev->ner || seq == 0) goto bad;
        ev->er[idx - 1].seq = seq;
    }
    for (size_t i = 0; i < ev->net; i++) {
        etask *e = &ev->et[i];
        if (e->done) continue;
        /* Counters count up from 0 until the first miss; anything after
         * a miss is not the keyword's (spec §4). */
        uint32_t run = 0;
        while (run < e->chunk && ev->er[e->req + run].seq != 0) {
            uint64_t seq = ev->er[e->req + run].seq;
            if (seq < ev->bound && !sv_push(ev, &ev->found[e->kw], seq)) return false;
            run++;
        }
        if (run < e->chunk || (uint64_t)e->next + e->chunk > UINT32_MAX) {
            e->done = true;
        } else {
            e->next += e->chunk;
            uint64_t room = (uint64_t)UINT32_MAX - e->next;
            uint32_t chunk = e->chunk < MAX_CHUNK ? 2 * e->chunk : MAX_CHUNK;
            e->chunk = chunk < room ? chunk : (uint32_t)room;
            if (e->chunk == 0) e->done = true;
        }
    }
    return true;
bad:
    fail(ev, SE_ERR_DB, "entries: unexpected row");
    return false;
}

static void corrupt(eval *ev, const stask *s, uint32_t idx, const char *why)
{
    ev->out->corrupt_blocks++;
    log_error(ev->q->room, "search: block %" PRIu32 " of segment %" PRIu64 " %s; skipped", idx,
              s->seg->id, why);
}

/* Blocks of one segment in order: a miss or a short block ends it. */
static bool read_blocks(eval *ev, stask *s)
{
    uint64_t seqs[SSE_BLOCK_IDS];
    size_t n;
    bool ok = true;
    for (uint32_t b = 0; b < s->nreq && s->frontier; b++) {
        const breq *r = &ev->br[s->req + b];
        uint32_t idx = s->next + b;
        if (!r->body) {
            s->frontier = 0;
            break;
        }
        if (sse_block_open(seqs, &n, s->bk, s->seg->id, idx, r->body) != SSE_OPEN_OK) {
            corrupt(ev, s, idx, "does not open");
            continue;
        }
        /* Authentic, but the seqs must lie in the segment and below the
         * blocks before: the order is what lets a search stop early. */
        if (n > 0 && (seqs[n - 1] < s->seg->min_seq || seqs[0] > s->seg->max_seq ||
                      (s->last_seq && seqs[0] >= s->last_seq))) {
            corrupt(ev, s, idx, "is out of order");
            continue;
        }
        for (size_t i = 0; i < n && ok; i++)
            if (seqs[i] < ev->bound) ok = sv_push(ev, &ev->found[s->kw], seqs[i]);
        if (n > 0) {
            s->last_seq = seqs[n - 1];
            if (s->frontier >= s->last_seq) s->frontier = s->last_seq - 1;
        }
        if (n < SSE_BLOCK_IDS || s->frontier < s->seg->min_seq) s->frontier = 0;
    }
    sodium_memzero(seqs, sizeof seqs);
    if (s->frontier) {
        s->next += s->nreq;
        if (s->nread < MAX_BLOCK_READ) s->nread *= 2;
        if ((uint64_t)s->next + s->nread > UINT32_MAX) s->frontier = 0;
    }
    return ok;
}

static bool take_blocks(eval *ev, const PGresult *r)
{
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetlength(r, i, 0) != 8) goto bad;
        uint64_t idx = get64((const unsigned char *)PQgetvalue(r, i, 0));
        if (idx < 1 || idx > ev->nbr || PQgetlength(r, i, 1) != SSE_BLOCK_BYTES) goto bad;
        ev->br[idx - 1].body = (const unsigned char *)PQgetvalue(r, i, 1);
    }
    for (size_t i = 0; i < ev->nst; i++)
        if (ev->st[i].nreq && !read_blocks(ev, &ev->st[i])) return false;
    return true;
bad:
    fail(ev, SE_ERR_DB, "blocks: unexpected row");
    return false;
}

static bool take_live(eval *ev, const PGresult *r)
{
    seqvec got = {0};
    bool ok = true;
    for (int i = 0; i < PQntuples(r) && ok; i++) {
        if (PQgetlength(r, i, 0) != 8) {
            fail(ev, SE_ERR_DB, "liveness: unexpected row");
            ok = false;
            break;
        }
        ok = sv_push(ev, &got, get64((const unsigned char *)PQgetvalue(r, i, 0)));
    }
    sv_sort(&got);
    for (size_t i = 0; i < ev->lreq.n && ok; i++) {
        uint64_t x = ev->lreq.v[i];
        ok = sv_push(ev, sv_has(&got, x) ? &ev->live : &ev->dead, x);
    }
    sv_free(&got);
    sv_sort(&ev->live);
    sv_sort(&ev->dead);
    return ok;
}

/* Sends this round's requests (and COMMIT when `commit`) as one pipeline
 * and takes in what came back. */
static bool send_round(eval *ev, bool commit)
{
    unsigned char room[8];
    call calls[5];
    size_t n = 0;
    int which[3]; /* 0 entries, 1 blocks, 2 liveness, per result */
    size_t nres = 0;
    PGresult *res[4] = {0};
    bool ok = true;

    be64(room, (uint64_t)ev->q->room_id);
    if (ev->ner) {
        ok = arr_begin(ev, &ev->pb[0], OID_INT8, ev->ner) &&
             arr_begin(ev, &ev->pb[1], OID_BYTEA, ev->ner);
        for (size_t i = 0; i < ev->ner && ok; i++)
            ok = arr_int8(ev, &ev->pb[0], ev->er[i].batch) &&
                 arr_bytes(ev, &ev->pb[1], ev->er[i].label, SSE_LABEL_BYTES);
        calls[n++] = (call){
            .stmt = "se_entries",
            .nparams = 3,
            .vals = {(const char *)room, (const char *)ev->pb[0].p, (const char *)ev->pb[1].p},
            .lens = {8, (int)ev->pb[0].len, (int)ev->pb[1].len}};
        which[nres++] = 0;
    }
    if (ev->nbr && ok) {
        ok = arr_begin(ev, &ev->pb[2], OID_INT8, ev->nbr) &&
             arr_begin(ev, &ev->pb[3], OID_BYTEA, ev->nbr);
        for (size_t i = 0; i < ev->nbr && ok; i++)
            ok = arr_int8(ev, &ev->pb[2], ev->br[i].seg) &&
                 arr_bytes(ev, &ev->pb[3], ev->br[i].label, SSE_LABEL_BYTES);
        calls[n++] = (call){
            .stmt = "se_blocks",
            .nparams = 3,
            .vals = {(const char *)room, (const char *)ev->pb[2].p, (const char *)ev->pb[3].p},
            .lens = {8, (int)ev->pb[2].len, (int)ev->pb[3].len}};
        which[nres++] = 1;
    }
    if (ev->lreq.n && ok) {
        ok = arr_begin(ev, &ev->pb[4], OID_INT8, ev->lreq.n);
        for (size_t i = 0; i < ev->lreq.n && ok; i++)
            ok = arr_int8(ev, &ev->pb[4], ev->lreq.v[i]);
        calls[n++] = (call){.stmt = "se_live",
                            .nparams = 2,
                            .vals = {(const char *)room, (const char *)ev->pb[4].p},
                            .lens = {8, (int)ev->pb[4].len}};
        which[nres++] = 2;
    }
    if (!ok) return false;
    if (commit) calls[n++] = (call){.sql = "COMMIT"};
    calls[n++] = SYNC;
    ok = pipeline(ev, calls, n, res, false);
    if (ok && commit) ev->in_tx = false;
    for (size_t i = 0; i < nres && ok; i++) {
        if (which[i] == 0)
            ok = take_entries(ev, res[i]);
        else if (which[i] == 1)
            ok = take_blocks(ev, res[i]);
        else
            ok = take_live(ev, res[i]);
    }
    clear_results(res, sizeof res / sizeof res[0]);
    return ok;
}

/* One evaluation from the listing on. Returns true when the page is
 * final, false with ev->code set on failure or SE_OK when it has to begin
 * again (a retraction found after the commit moved the page). */
static bool evaluate(eval *ev)
{
    if (!start(ev) || !make_tasks(ev)) return false;
    for (;;) {
        if (!assess(ev) || !plan(ev)) return false;
        bool reads = ev->ner || ev->nbr;
        if (!reads && (ev->optimistic || ev->lreq.n == 0)) break;
        if (!send_round(ev, false)) return false;
    }
    /* Nothing left to read: the liveness still unknown rides with the
     * COMMIT when optimistic. */
    if (!send_round(ev, true)) return false;
    for (;;) {
        if (!assess(ev) || !plan(ev)) return false;
        if (ev->ner || ev->nbr) return false; /* retractions moved the page: begin again */
        if (ev->lreq.n == 0) return true;
        if (!send_round(ev, false)) return false;
    }
}

/* ---- the API ---- */

bool se_parse_cover(const unsigned char *bytes, size_t len, se_cover *out)
{
    out->nnodes = 0;
    if (!bytes || len == 0 || len % SE_NODE_WIRE != 0 || len / SE_NODE_WIRE > SE_MAX_NODES)
        return false;
    size_t k = len / SE_NODE_WIRE;
    for (size_t i = 0; i < k; i++) {
        const unsigned char *p = bytes + i * SE_NODE_WIRE;
        out->nodes[i].depth = p[0];
        out->nodes[i].prefix = get32(p + 1);
        memcpy(out->nodes[i].key, p + 5, SSE_KEY_BYTES);
    }
    out->nnodes = k;
    return true;
}

void se_cover_wipe(se_cover *c)
{
    if (c) sodium_memzero(c, sizeof *c);
}

const char *se_validate(const se_query *q, uint64_t last_batch)
{
    if (!q) return "no query";
    if (q->nkeywords < 1 || q->nkeywords > SE_MAX_KEYWORDS) return "a search has 1 to 8 keywords";
    if (q->max < 1 || q->max > SE_MAX_RESULTS) return "max must be 1 to 200";
    if (q->hi < 1) return "hi must be at least 1";
    if (q->hi > UINT32_MAX) return "hi is beyond every batch id";
    if (q->hi > last_batch) return "hi is beyond the room's last batch";
    for (size_t k = 0; k < q->nkeywords; k++) {
        const se_keyword *kw = &q->keywords[k];
        if (kw->ncovers < 1 || kw->ncovers > SE_MAX_COVERS || !kw->covers)
            return "a keyword has 1 to 64 covers";
        for (size_t c = 0; c < kw->ncovers; c++) {
            const se_cover *cv = &kw->covers[c];
            if (cv->nnodes < 1 || cv->nnodes > SE_MAX_NODES) return "a cover has 1 to 64 nodes";
            for (size_t j = 0; j < cv->nnodes; j++) {
                uint64_t lo, hi;
                if (cv->nodes[j].depth > SSE_DEPTH) return "a node is deeper than 32";
                if (!sse_node_range(cv->nodes[j].depth, cv->nodes[j].prefix, &lo, &hi))
                    return "a node's prefix does not fit its depth";
                if (lo < 1 || hi > q->hi) return "a node reaches outside [1, hi]";
            }
        }
    }
    return NULL;
}

int se_search(PGconn *pg, const se_query *q, se_result *out, char *err, size_t errlen)
{
    eval ev = {.pg = pg, .q = q, .out = out, .err = err, .errlen = errlen, .optimistic = true};
    if (errlen) err[0] = '\0';
    memset(out, 0, sizeof *out);
    const char *why = se_validate(q, q ? q->hi : 0);
    if (why) {
        fail(&ev, SE_ERR_BAD_QUERY, "%s", why);
        return ev.code;
    }
    if (!pg || PQstatus(pg) != CONNECTION_OK || PQtransactionStatus(pg) != PQTRANS_IDLE ||
        PQpipelineStatus(pg) != PQ_PIPELINE_OFF || PQisnonblocking(pg)) {
        fail(&ev, SE_ERR_DB, "connection not idle, or not blocking");
        return ev.code;
    }
    ev.bound = q->before ? q->before : UINT64_MAX;
    if (PQenterPipelineMode(pg) != 1) {
        fail(&ev, SE_ERR_DB, "cannot enter pipeline mode: %s", PQerrorMessage(pg));
        return ev.code;
    }
    bool done = false;
    for (int attempt = 0; attempt < 2 && !done && ev.code == SE_OK; attempt++) {
        ev.optimistic = attempt == 0;
        if (attempt) out->restarts++;
        drop_tasks(&ev);
        done = evaluate(&ev);
    }
    if (ev.code == SE_OK && !done) fail(&ev, SE_ERR_DB, "evaluation did not settle");
    if (ev.code == SE_OK) {
        out->n = ev.inter.n < q->max ? ev.inter.n : q->max;
        memcpy(out->seqs, ev.inter.v, out->n * sizeof *out->seqs);
        out->complete = ev.inter.n <= q->max;
    }
    if (ev.in_tx || ev.code != SE_OK) abandon(&ev);
    PQexitPipelineMode(pg);
    drop_tasks(&ev);
    for (size_t k = 0; k < SE_MAX_KEYWORDS; k++)
        sv_free(&ev.found[k]);
    sv_free(&ev.inter);
    sv_free(&ev.live);
    sv_free(&ev.dead);
    sv_free(&ev.lreq);
    free(ev.er);
    free(ev.br);
    for (size_t i = 0; i < sizeof ev.pb / sizeof ev.pb[0]; i++)
        free(ev.pb[i].p);
    return ev.code;
}
