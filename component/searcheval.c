/* Evaluation of an encrypted search (searcheval.h).
 *
 * Round trips. Everything goes through libpq's pipeline mode with
 * prepared statements, binary parameters (int8[] and bytea[] arrays) and
 * binary results. A round is ONE statement (SQL_ROUND) that reads, from
 * its own snapshot: the room's live batches and segments (the listing),
 * the entry labels of every (keyword, batch) still being probed, the
 * posting blocks of every (keyword, segment) still worth reading, in the
 * first round the room's retracted messages, and, only when those were
 * too many to fetch, the liveness of the page's candidates. The first
 * round rides in one pipeline with the seal, so a search whose answer the
 * first round settles costs one round trip.
 *
 * Guessing the listing. Probes need the listing (which batches and
 * segments, of which generation) before they can be made, and the listing
 * comes from the database. So each round probes with the listing it
 * believes in — for the first round the one the search cache kept from
 * the room's last search (searchcache.h), if any — and reads the listing
 * again in the same snapshot. The round's probes count only if the two
 * are the same; otherwise the evaluation starts over from the listing it
 * just read (counted in restarts). Batches at or below hi cannot appear
 * (their ids were handed out before the searcher learnt hi) and sealed
 * batches take no entries, so only a compaction commit can change the
 * listing between rounds: what the rounds read all comes from one state
 * of the index even though each round has its own snapshot.
 *
 * Sealing. The seal (SQL_SEAL) runs first in the first round's implicit
 * transaction, so the round's statement, taking its snapshot after it,
 * sees every entry that committed before the seal, and an entry that
 * comes later meets a sealed batch and is refused. A batch the seal found
 * locked by a message being stored is sealed on its own afterwards
 * (waiting for that message) and the round's probes are not used. The
 * seal is skipped when the listing the cache kept for this hi shows every
 * batch sealed (sealed batches never open again): the round then reads
 * the room's last batch itself, and the search costs one statement.
 * That listing is cached with the room's search_version and retractions
 * read in the same snapshot; a first round that finds the version
 * unchanged (sql/010: compactions and retractions bump it) reads neither
 * listing nor retractions again.
 *
 * Retractions. The first round fetches the room's retracted seqs (a
 * partial index keeps this cheap; retractions are rare); a
 * retraction that lands while the search runs may or may not count, as if
 * it came just after. Above RETRACTED_MAX of them the list is not used and
 * the page's candidates are checked one by one instead. A seq a segment
 * names that is no message at all (a lying compactor) is dropped when the
 * page's messages are read (searchpool.c).
 *
 * Cache. Blocks that opened (and labels known to have no block) and the
 * entries probed in sealed batches are filed in the search cache, so the
 * next page of the same search, or the same word searched again, reads
 * from memory what it read before; what the cache holds is taken before
 * any round, which then asks only for the rest. In a room with few live
 * batches (automatic compaction keeps it so) the sealed ones are mirrored
 * whole in the cache, and their entries are walked in memory; what a walk
 * found is filed under the token's first label, so a later page skips
 * the walk. A segment's cached blocks are taken lazily, the ones above
 * the page's bound and then one that reaches below it per pass, so that a
 * page does not take (and sort) the read-ahead of the pages before it.
 *
 * Entries. A sealed batch's entries are packed into buckets by the first
 * bits of their labels (sql/009, 16 to 32 entries a bucket); a probe asks
 * for the label's bucket, each bucket once a round, and scans it.
 *
 * Entries are probed 2 counters per batch first, then only where the
 * whole chunk matched, 4 times more each round. Segment blocks are read
 * in order (block 0 holds the newest seqs), one block per segment first,
 * doubling with every read (and, where the keyword fills blocks, as many
 * ahead as the segment has blocks before the first one missing), and only
 * while the segment could still change the page: a segment whose unread
 * seqs all lie below the (max+1)-th known match, or where no other
 * keyword could match any more, is left alone.
 *
 * Correctness. Per keyword the matches are exactly the spec's: entry
 * counters 0.. until the first miss, blocks 0.. until a miss or a block
 * with fewer than 32 seqs (a block that does not open is logged, counted
 * and skipped). The page is the newest `max` of the intersection below
 * `before` without retracted seqs, and it is final only when no unread
 * block could hold a seq above its (max+1)-th match. */
#include "searcheval.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "searchcache.h"

#define OID_BYTEA 17
#define OID_INT8 20
/* Entry counters probed per batch: 2 first (a word is absent from most
 * batches, and every live batch is probed), then 4 times more where a
 * whole chunk matched, so that a frequent word's batch takes few rounds
 * without probing far past its last entry. */
#define FIRST_CHUNK 2
#define CHUNK_GROWTH 4
#define MAX_CHUNK 8192
#define MAX_BLOCK_READ 256
#define READ_AHEAD 4
/* While entries are still being probed the page is not known, so blocks
 * are read speculatively, one per segment (saving a round trip when the
 * batches alone do not fill the page, as for every rare word), from the
 * newest SPEC_SEGMENTS segments of a keyword: log-structured levels keep
 * a room's segments well below that. */
#define SPEC_SEGMENTS 64
#define LIVE_AHEAD (4 * SE_MAX_RESULTS)
/* RETRACTED_LIMIT in SQL_ROUND: one more than is used, to tell "all". */
#define RETRACTED_LIMIT 1025
#define RETRACTED_MAX (RETRACTED_LIMIT - 1)
#define STR_(n) #n
#define STR(n) STR_(n)
/* Listing changes tolerated before giving up (each needs a compaction to
 * commit while the search runs). */
#define MAX_RESTARTS 8
#define SQLSTATE_NO_STATEMENT "26000"
#define SQLSTATE_DUP_STATEMENT "42P05"
#define ROUND_LIST 1
#define ROUND_RETRACTED 2
/* Rows the search cache keeps after a listing (never sent by SQL_ROUND):
 * the room's search_version it was read at, and whether the retracted
 * rows (kind 4) that follow are all the room's retractions then. */
#define KIND_VERSION 8
/* A room with at most this many live batches has its sealed batches
 * mirrored in the search cache (searchcache.h): automatic compaction keeps
 * a room there, and then probing entries costs no database read. A room
 * with more (compaction off or behind) is probed in the database. */
#define MIRROR_MAX_BATCHES 64

/* $1 room, $2 hi. Seals the open batches <= $2 that nobody is writing
 * into right now (only when hi is within the room's batches, so a
 * refused search seals nothing) and returns the room's last batch with,
 * one per row, the open batches it skipped (NULL when none); no row for
 * no room. It never waits for a row lock: a message being stored holds
 * its batch's row until its group commit ends, and that commit may wait
 * for another batch's row, so a statement that locked several batches in
 * its own order and waited could deadlock with it. The skipped ones are
 * then sealed one row per transaction (SQL_SEAL1). (A data-modifying WITH
 * runs whether or not it is read.) */
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
/* One round, rows (kind, a..f, body), all int8 but the body:
 *  0 batch: id, gen              (when $4 has ROUND_LIST)
 *  1 segment: id, gen, first and last batch, min and max seq   (idem)
 *  2 bucket found: index (from 1) into $5/$6, body
 *  3 block found: index (from 1) into $7/$8, body
 *  4 retracted seq below $3, newest first, RETRACTED_LIMIT at most
 *                                (when $4 has ROUND_RETRACTED)
 *  5 live seq of $9 (a message, not retracted)
 *  6 every entry of a batch of $10: id, count, count × (label ‖ u64 seq)
 *  7 the room's last batch and search_version (sql/010), always
 * (batch rows carry their entry count, state and bucket bits in c, d, e;
 * a bucket's body is entries (label ‖ u64 seq) in no order, sql/009).
 * Probes are index lookups, one per pair, whatever the statistics
 * say: a lateral subquery with LIMIT is never flattened into a join, so
 * the planner cannot trade it for a scan of the room's rows (which it
 * does when the tables grew since their last ANALYZE). Mirrors, too, are
 * read batch by batch through a lateral subquery: as `batch = ANY($10)`
 * the generic plan scanned the whole bucket table, even for no batch. */
#define SQL_ROUND                                                                                  \
    "SELECT 0::int8, batch, gen::int8, entries::int8, state::int8, bucket_bits::int8, 0::int8, "   \
    "NULL::bytea "                                                                                 \
    "FROM search_batches WHERE room_id = $1 AND batch <= $2 AND state <= 1 "                       \
    "AND ($4::int8 & 1) <> 0 "                                                                     \
    "UNION ALL SELECT 1, segment, gen::int8, first_batch, last_batch, min_seq, max_seq, NULL "     \
    "FROM search_segments WHERE room_id = $1 AND state = 1 AND last_batch <= $2 "                  \
    "AND ($4::int8 & 1) <> 0 "                                                                     \
    "UNION ALL SELECT 2, p.i, 0, 0, 0, 0, 0, e.body "                                              \
    "FROM unnest($5::int8[], $6::int8[]) WITH ORDINALITY AS p(batch, bucket, i) "                  \
    "CROSS JOIN LATERAL (SELECT body FROM search_buckets WHERE room_id = $1 AND batch = p.batch "  \
    "AND bucket = p.bucket LIMIT 1) e "                                                            \
    "UNION ALL SELECT 3, p.i, 0, 0, 0, 0, 0, b.body "                                              \
    "FROM unnest($7::int8[], $8::bytea[]) WITH ORDINALITY AS p(seg, label, i) "                    \
    "CROSS JOIN LATERAL (SELECT body FROM search_blocks WHERE room_id = $1 AND segment = p.seg "   \
    "AND label = p.label LIMIT 1) b "                                                              \
    "UNION ALL (SELECT 4, seq, 0, 0, 0, 0, 0, NULL FROM messages WHERE room_id = $1 "              \
    "AND retracted_at IS NOT NULL AND seq < $3 AND ($4::int8 & 2) <> 0 "                           \
    "ORDER BY seq DESC LIMIT " STR(RETRACTED_LIMIT) ") "                                           \
    "UNION ALL SELECT 5, u.seq, 0, 0, 0, 0, 0, NULL FROM unnest($9::int8[]) AS u(seq) "            \
    "CROSS JOIN LATERAL (SELECT 1 FROM messages WHERE room_id = $1 AND seq = u.seq "               \
    "AND retracted_at IS NULL LIMIT 1) m "                                                         \
    "UNION ALL SELECT 6, m.batch, x.n, 0, 0, 0, 0, x.body "                                        \
    "FROM unnest($10::int8[]) AS m(batch) CROSS JOIN LATERAL (SELECT "                             \
    "sum(length(body))::int8 / 24 AS n, string_agg(body, ''::bytea) AS body "                      \
    "FROM search_buckets WHERE room_id = $1 "                                                      \
    "AND batch = m.batch) x WHERE x.n IS NOT NULL "                                                \
    "UNION ALL SELECT 7, search_last_batch, search_version, 0, 0, 0, 0, NULL FROM rooms "          \
    "WHERE room_id = $1"

/* The round a first round that trusts its cached listing sends when it
 * needs nothing but blocks ($2, $3 as $7, $8 above): kinds 3 and 7 only.
 * Every branch of SQL_ROUND costs executor start-up even when it returns
 * nothing, and this is the round a rare word's page is made of. */
#define SQL_ROUND_BLOCKS                                                                           \
    "SELECT 3::int8, p.i, 0::int8, 0::int8, 0::int8, 0::int8, 0::int8, b.body "                    \
    "FROM unnest($2::int8[], $3::bytea[]) WITH ORDINALITY AS p(seg, label, i) "                    \
    "CROSS JOIN LATERAL (SELECT body FROM search_blocks WHERE room_id = $1 AND segment = p.seg "   \
    "AND label = p.label LIMIT 1) b "                                                              \
    "UNION ALL SELECT 7, search_last_batch, search_version, 0, 0, 0, 0, NULL FROM rooms "          \
    "WHERE room_id = $1"

static const struct {
    const char *name, *sql;
} STATEMENTS[] = {
    {"se_seal", SQL_SEAL},
    {"se_seal1", SQL_SEAL1},
    {"se_round", SQL_ROUND},
    {"se_round_blocks", SQL_ROUND_BLOCKS},
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
    uint64_t entries; /* as the listing counts them */
    unsigned bits;    /* its 2^bits buckets (sql/009) */
    bool sealed;
    bool asked; /* its mirror was asked for in this evaluation */
} batch_row;

typedef struct seg_row {
    uint64_t id, first, last, min_seq, max_seq;
    uint32_t gen;
} seg_row;

/* The entries of one keyword in one batch: counters below next matched. */
typedef struct etask {
    unsigned kw;
    uint64_t batch;
    uint64_t count; /* the batch's entries, for its mirror */
    unsigned bits;
    bool sealed;
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
    /* Derived when first needed: the block key only once a block has come
     * from the database to be opened (a rare word has none in most
     * segments), and the label of the last block index asked for, which
     * the look in the cache and then the round's request both need. */
    bool have_bk, have_label;
    uint32_t label_index;
    unsigned char label[SSE_LABEL_BYTES];
} stask;

typedef struct ereq {
    uint64_t batch;
    uint32_t bucket;
    unsigned char label[SSE_LABEL_BYTES];
    uint64_t seq; /* 0: no such entry */
    int cached;   /* SE_CACHE_*: MISS when it has to be probed */
    size_t bq;    /* when MISS: its bucket's request */
} ereq;

/* An entry probed in the database, to sort by bucket. */
typedef struct bkey {
    uint64_t batch;
    uint32_t bucket;
    size_t er;
} bkey;

/* A bucket read this round, for the entries probed in it. */
typedef struct bqreq {
    uint64_t batch;
    uint32_t bucket;
    const unsigned char *body; /* into this round's result; NULL: none */
    size_t len;
} bqreq;

typedef struct breq {
    uint64_t seg;
    unsigned char label[SSE_LABEL_BYTES];
    const unsigned char *body; /* into this round's result; NULL: no such block */
    int cached;                /* SE_CACHE_*: MISS when it has to be read */
    size_t ncached;
    uint64_t seqs[SSE_BLOCK_IDS]; /* as the cache had them */
} breq;

/* A listing row as SQL_ROUND returns it (kind 0 or 1, then a..f). */
typedef struct lrow {
    uint64_t v[7];
} lrow;

typedef struct eval {
    PGconn *pg;
    const se_query *q;
    se_result *out;
    char *err;
    size_t errlen;
    int code;       /* the first failure, SE_OK while none */
    bool no_stmt;   /* it was a missing prepared statement */
    uint64_t bound; /* results are below it */
    se_cache *cache;
    bool sealed;    /* the first round (with the seal) has been */
    bool all_sealed; /* the guessed listing shows every batch <= hi sealed */
    /* The guessed listing came with the room's search_version it was read
     * at and all the room's retractions then (cached_dead): if a round
     * reads the same version, neither needs reading again. */
    bool trusted;
    uint64_t version;
    seqvec cached_dead;
    bool need_retracted; /* no round has brought the room's retractions yet */
    bool moved;     /* plan took blocks from the cache: assess again */
    bool retracted; /* dead holds every retracted seq below bound */
    /* The listing the tasks were made from, sorted; NULL before any. */
    lrow *rows;
    size_t nrows;
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
    /* This round's requests; ner_db of the entries and nbr_db of the
     * blocks are not in the cache. */
    ereq *er;
    size_t ner, cer, ner_db;
    bqreq *bq; /* the buckets those are in, each once */
    size_t nbq, cbq;
    bkey *bkeys; /* scratch: the entries probed, by bucket */
    size_t cbkeys;
    seqvec mreq; /* batches whose entries this round reads whole, to mirror */
    breq *br;
    size_t nbr, cbr, nbr_db;
    size_t *bmap; /* the blocks read from the database: their index in br */
    size_t cbmap;
    seqvec lreq;
    buf pb[6];
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

/* Descending without duplicates. A vector is sorted again after every
 * batch of finds (assess runs once per pass over the cache, and a long
 * result's later pages pass over thousands of seqs), so only the tail
 * past its sorted prefix is sorted and then merged in: sorting the whole
 * of it each time was most of a full result set's time. false only when
 * memory for the merge ran out. */
static bool sv_sort(eval *ev, seqvec *s)
{
    size_t head = 1;
    while (head < s->n && s->v[head] < s->v[head - 1])
        head++;
    if (head >= s->n) return true;
    uint64_t *tail = s->v + head;
    size_t nt = s->n - head;
    qsort(tail, nt, sizeof *tail, cmp_desc);
    uint64_t *merged = malloc(s->n * sizeof *merged);
    if (!merged) {
        fail(ev, SE_ERR_NOMEM, "out of memory");
        return false;
    }
    size_t i = 0, j = 0, w = 0;
    while (i < head || j < nt) {
        uint64_t x = j == nt || (i < head && s->v[i] >= tail[j]) ? s->v[i++] : tail[j++];
        if (w == 0 || merged[w - 1] != x) merged[w++] = x;
    }
    memcpy(s->v, merged, w * sizeof *merged);
    free(merged);
    s->n = w;
    return true;
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
    const char *vals[10];
    int lens[10];
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
static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static bool pipeline(eval *ev, const call *calls, size_t n, PGresult **res, bool allow_dup)
{
    double t0 = now_ms();
    static const int formats[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
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
    ev->out->db_ms += now_ms() - t0;
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
}

/* Prepares the statements. Every part of a round is a lookup by key
 * whatever its parameters, so the connection keeps one generic plan per
 * statement: planning a custom plan of the round's many branches on every
 * execution would cost more than running it. */
static bool prepare_all(eval *ev)
{
    call calls[2 * NSTATEMENTS + 2];
    size_t n = 0;
    calls[n++] = (call){.sql = "SET plan_cache_mode = force_generic_plan"};
    calls[n++] = SYNC;
    for (size_t i = 0; i < NSTATEMENTS; i++) {
        calls[n++] = (call){.stmt = STATEMENTS[i].name, .sql = STATEMENTS[i].sql};
        calls[n++] = SYNC;
    }
    return pipeline(ev, calls, n, NULL, true);
}

static int cmp_seg(const void *a, const void *b);

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

/* ---- buckets of sealed batches (sql/009) ---- */

#define BUCKET_ENTRY (SSE_LABEL_BYTES + 8)

/* The bucket of a batch with 2^bits of them that a label lies in: its
 * first bits (labels are pseudorandom). */
static uint32_t bucket_of(const unsigned char label[SSE_LABEL_BYTES], unsigned bits)
{
    uint32_t top = (uint32_t)label[0] << 8 | label[1];
    return bits ? top >> (16 - bits) : 0;
}

/* The seq a bucket holds for label; 0 for none. Entries are in no order;
 * a bucket holds 16 to 32 on average. */
static uint64_t bucket_find(const bqreq *b, const unsigned char label[SSE_LABEL_BYTES])
{
    for (size_t off = 0; b->body && off + BUCKET_ENTRY <= b->len; off += BUCKET_ENTRY)
        if (memcmp(b->body + off, label, SSE_LABEL_BYTES) == 0)
            return get64(b->body + off + SSE_LABEL_BYTES);
    return 0;
}

static int cmp_bkey(const void *a, const void *b)
{
    const bkey *x = a, *y = b;
    if (x->batch != y->batch) return x->batch < y->batch ? -1 : 1;
    if (x->bucket != y->bucket) return x->bucket < y->bucket ? -1 : 1;
    return 0;
}

static void new_etask(eval *ev, unsigned kw, const batch_row *b,
                      const unsigned char t[SSE_KEY_BYTES])
{
    etask *e = &ev->et[ev->net++];
    e->kw = kw;
    e->batch = b->id;
    e->count = b->entries;
    e->bits = b->bits;
    e->sealed = b->sealed;
    e->next = 0;
    e->chunk = FIRST_CHUNK;
    e->done = false;
    memcpy(e->t, t, SSE_KEY_BYTES);
}

static void new_stask(eval *ev, unsigned kw, const seg_row *seg,
                      const unsigned char t_last[SSE_KEY_BYTES])
{
    stask *s = &ev->st[ev->nst++];
    s->kw = kw;
    s->seg = seg;
    s->next = 0;
    s->nread = 1;
    s->last_seq = 0;
    s->frontier = seg->max_seq < ev->bound ? seg->max_seq : ev->bound - 1;
    if (s->frontier < seg->min_seq) s->frontier = 0;
    s->have_bk = s->have_label = false;
    sse_segment_key(s->s, t_last, seg->id);
}

static void block_label(stask *s, uint32_t i, unsigned char out[SSE_LABEL_BYTES])
{
    if (!s->have_label || s->label_index != i) {
        sse_block_label(s->label, s->s, i);
        s->label_index = i;
        s->have_label = true;
    }
    memcpy(out, s->label, SSE_LABEL_BYTES);
}

static const unsigned char *block_key(stask *s)
{
    if (!s->have_bk) {
        sse_block_key(s->bk, s->s);
        s->have_bk = true;
    }
    return s->bk;
}

static int cmp_stask(const void *a, const void *b)
{
    const stask *x = a, *y = b;
    if (x->kw != y->kw) return x->kw < y->kw ? -1 : 1;
    return cmp_seg(x->seg, y->seg);
}

/* Per keyword, each batch and segment (its last batch) of a cover's
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
                    new_etask(ev, k, &ev->batches[i], t);
                }
                for (size_t i = 0; i < ev->nsegs; i++) {
                    const seg_row *sg = &ev->segs[i];
                    /* Keyed by the last batch: a token issued before
                     * that batch existed cannot open the segment. */
                    if (taken_s[i] || sg->gen != cv->gen || sg->last < lo || sg->last > hi)
                        continue;
                    taken_s[i] = true;
                    sse_walk_leaf(&w, t, (uint32_t)sg->last);
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

static int cmp_lrow(const void *a, const void *b)
{
    const lrow *x = a, *y = b;
    for (int f = 0; f < 2; f++)
        if (x->v[f] != y->v[f]) return x->v[f] < y->v[f] ? -1 : 1;
    return 0;
}

static bool same_listing(const lrow *a, size_t na, const lrow *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

/* Makes rows (n of them, sorted, taken over) the listing: batches, and
 * the segments that can hold seqs below bound, for make_tasks. */
static bool adopt_listing(eval *ev, lrow *rows, size_t n)
{
    drop_tasks(ev);
    free(ev->rows);
    ev->rows = rows;
    ev->nrows = n;
    ev->batches = calloc(n + 1, sizeof *ev->batches);
    ev->segs = calloc(n + 1, sizeof *ev->segs);
    if (!ev->batches || !ev->segs) {
        fail(ev, SE_ERR_NOMEM, "out of memory");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const uint64_t *v = rows[i].v;
        /* gen is a positive int4 (CHECK gen > 0). */
        if (v[0] == 0 && v[5] > 16) {
            fail(ev, SE_ERR_DB, "search round: batch %" PRIu64 " has %" PRIu64 " bucket bits",
                 v[1], v[5]);
            return false;
        }
        if (v[0] == 0)
            ev->batches[ev->nbatches++] =
                (batch_row){v[1], (uint32_t)v[2], v[3], (unsigned)v[5], v[4] == 1, false};
        else if (v[5] < ev->bound)
            ev->segs[ev->nsegs++] = (seg_row){v[1], v[3], v[4], v[5], v[6], (uint32_t)v[2]};
    }
    qsort(ev->batches, ev->nbatches, sizeof *ev->batches, cmp_batch);
    qsort(ev->segs, ev->nsegs, sizeof *ev->segs, cmp_seg);
    return make_tasks(ev);
}

/* The listing guessed from the room's last search, if the cache kept one
 * for this hi. */
static bool guess_listing(eval *ev)
{
    size_t len = 0;
    lrow *rows = se_cache_listing_get(ev->cache, ev->q->room_id, ev->q->hi, &len);
    if (!rows) return true;
    if (len % sizeof *rows != 0) {
        free(rows);
        return true;
    }
    /* The listing's rows come first, then what cache_listing added. */
    size_t n = len / sizeof *rows, nl = 0;
    while (nl < n && rows[nl].v[0] <= 1)
        nl++;
    ev->trusted = false;
    ev->cached_dead.n = 0;
    if (nl < n && rows[nl].v[0] == KIND_VERSION && rows[nl].v[2] == 1) {
        ev->trusted = true;
        ev->version = rows[nl].v[1];
        for (size_t i = nl + 1; i < n && ev->trusted; i++)
            if (rows[i].v[0] != 4 || !sv_push(ev, &ev->cached_dead, rows[i].v[1]))
                ev->trusted = false;
        if (ev->code != SE_OK) {
            free(rows);
            return false;
        }
    }
    /* That listing holds every batch <= hi not compacted, as one snapshot
     * saw them; a sealed batch never opens again and a compacted one was
     * sealed first. */
    ev->all_sealed = true;
    for (size_t i = 0; i < nl; i++)
        if (rows[i].v[0] == 0 && rows[i].v[4] != 1) ev->all_sealed = false;
    return adopt_listing(ev, rows, nl);
}

/* Files the listing for later searches of the room at this hi; with the
 * room's search_version and all its retractions when the same snapshot
 * read them (dead NULL: it did not), so that a search that finds the
 * version unchanged may skip reading both. */
static void cache_listing(eval *ev, const lrow *rows, size_t n, uint64_t version,
                          const seqvec *dead)
{
    if (!ev->cache) return;
    size_t extra = dead ? 1 + dead->n : 0;
    lrow *all = malloc((n + extra + 1) * sizeof *all);
    if (!all) return; /* the cache is an optimisation: nothing is lost */
    if (n) memcpy(all, rows, n * sizeof *all);
    if (dead) {
        all[n] = (lrow){{KIND_VERSION, version, 1, 0, 0, 0, 0}};
        for (size_t i = 0; i < dead->n; i++)
            all[n + 1 + i] = (lrow){{4, dead->v[i], 0, 0, 0, 0, 0}};
    }
    se_cache_listing_put(ev->cache, ev->q->room_id, ev->q->hi, all, (n + extra) * sizeof *all);
    free(all);
}

/* ---- what is known, and what is still worth reading ---- */

static bool assess(eval *ev)
{
    size_t nk = ev->q->nkeywords;
    ev->pending = false;
    for (size_t k = 0; k < nk; k++) {
        if (!sv_sort(ev, &ev->found[k])) return false;
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

/* Entries of batches the cache mirrors: walked in memory, counter by
 * counter until the first miss, so those tasks are done without a read. */
static bool walk_mirrors(eval *ev)
{
    if (!ev->cache) return true;
    unsigned char label[SSE_LABEL_BYTES], label0[SSE_LABEL_BYTES];
    bool ok = true;
    seqvec walked = {0};
    for (size_t i = 0; i < ev->net && ok; i++) {
        etask *e = &ev->et[i];
        if (e->done || !e->sealed) continue;
        uint64_t seq, *got = NULL;
        size_t ngot = 0;
        bool from0 = e->next == 0;
        sse_label(label, e->t, e->next);
        if (from0 && se_cache_walk_get(ev->cache, ev->q->room_id, e->batch, label, &got, &ngot)) {
            /* Walked before (an earlier page, or the same word). */
            for (size_t j = 0; j < ngot && ok; j++)
                if (got[j] < ev->bound) ok = sv_push(ev, &ev->found[e->kw], got[j]);
            free(got);
            e->done = true;
            continue;
        }
        memcpy(label0, label, sizeof label0);
        walked.n = 0;
        int rc = se_cache_mirror_probe(ev->cache, ev->q->room_id, e->batch, e->count, label, &seq);
        if (rc == SE_CACHE_MISS) continue;
        bool whole = true;
        while (rc == SE_CACHE_BLOCK && ok) {
            if (seq < ev->bound) ok = sv_push(ev, &ev->found[e->kw], seq);
            ok = ok && sv_push(ev, &walked, seq);
            if (e->next == UINT32_MAX) {
                whole = false;
                break;
            }
            e->next++;
            sse_label(label, e->t, e->next);
            rc = se_cache_mirror_probe(ev->cache, ev->q->room_id, e->batch, e->count, label, &seq);
        }
        /* A mirror evicted by another search halfway: the rest of the
         * counters are probed in the database, from where the walk got. */
        if (rc == SE_CACHE_MISS) continue;
        e->done = true;
        if (ok && from0 && whole)
            se_cache_walk_put(ev->cache, ev->q->room_id, e->batch, label0, walked.v, walked.n);
    }
    sv_free(&walked);
    sodium_memzero(label, sizeof label);
    sodium_memzero(label0, sizeof label0);
    return ok;
}

/* The sealed batches worth mirroring that still have entries to probe
 * (once per evaluation each): their entries come whole with the round. */
static bool plan_mirrors(eval *ev)
{
    ev->mreq.n = 0;
    if (!ev->cache || ev->nbatches > MIRROR_MAX_BATCHES) return true;
    for (size_t i = 0; i < ev->net; i++) {
        const etask *e = &ev->et[i];
        if (e->done || !e->sealed || e->count == 0) continue;
        size_t b = batch_from(ev, e->batch);
        if (b >= ev->nbatches || ev->batches[b].asked) continue;
        ev->batches[b].asked = true;
        if (!sv_push(ev, &ev->mreq, e->batch)) return false;
    }
    return true;
}

static bool take_cached_blocks(eval *ev, stask *s);

/* Fills this round's requests from the assessed state, taking from the
 * cache the blocks it holds. */
static bool plan(eval *ev)
{
    ev->ner = ev->nbr = ev->nbr_db = ev->ner_db = 0;
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
            sse_label(r->label, e->t, e->next + c);
            r->bucket = bucket_of(r->label, e->bits);
            r->cached = se_cache_entry_get(ev->cache, ev->q->room_id, r->batch, r->label, &r->seq);
            if (r->cached == SE_CACHE_MISS) ev->ner_db++;
        }
    }
    size_t spec[SE_MAX_KEYWORDS] = {0};
    for (size_t i = 0; i < ev->nst; i++) {
        stask *s = &ev->st[i];
        s->nreq = 0;
        if (!take_cached_blocks(ev, s)) return false;
        if (!s->frontier || !worth_reading(ev, s)) continue;
        if (ev->pending && spec[s->kw]++ >= SPEC_SEGMENTS) continue;
        breq *br = grow(ev, ev->br, &ev->cbr, ev->nbr + s->nread + MAX_BLOCK_READ, sizeof *br);
        if (!br) return false;
        ev->br = br;
        s->req = ev->nbr;
        uint32_t want = s->nread;
        bool missed = false;
        for (uint32_t b = 0; b < want; b++) {
            breq *r = &ev->br[ev->nbr++];
            r->seg = s->seg->id;
            r->body = NULL;
            block_label(s, s->next + b, r->label);
            r->cached = se_cache_block_get(ev->cache, ev->q->room_id, r->seg, r->label, r->seqs,
                                           &r->ncached);
            if (r->cached != SE_CACHE_MISS) continue;
            ev->nbr_db++;
            /* Past a full block the keyword is frequent here: going to the
             * database anyway, read ahead of the first block the cache
             * lacks, as many blocks as come before it (at least
             * READ_AHEAD, at most MAX_BLOCK_READ), so that the pages of a
             * long result read a segment in a few rounds, at most twice
             * what they used. (The cache's blocks are taken lazily, see
             * take_cached_blocks, so reading ahead costs a page nothing.) */
            uint32_t depth = s->next + b;
            uint32_t ahead = depth < READ_AHEAD       ? READ_AHEAD
                             : depth < MAX_BLOCK_READ ? depth
                                                      : MAX_BLOCK_READ;
            if (!missed && depth > 0 && b + ahead > want && (uint64_t)depth + ahead < UINT32_MAX)
                want = b + ahead;
            missed = true;
        }
        s->nreq = want;
    }
    /* Without the room's list of retractions: the liveness of the page's
     * candidates once the entries are in (before, the page still moves),
     * looking further ahead the more retractions have turned up. Not in
     * the first round, which brings the list (and only above RETRACTED_MAX
     * retractions will a later round need to ask). */
    size_t top = ev->retracted || ev->pending || !ev->sealed
                     ? 0
                     : ev->q->max + 1 + (ev->dead.n < LIVE_AHEAD ? ev->dead.n : LIVE_AHEAD);
    if (top > ev->inter.n) top = ev->inter.n;
    for (size_t i = 0; i < top; i++)
        if (!sv_has(&ev->live, ev->inter.v[i]) && !sv_has(&ev->dead, ev->inter.v[i]) &&
            !sv_push(ev, &ev->lreq, ev->inter.v[i]))
            return false;
    return true;
}

/* Entries found this round: counters count up from 0 until the first
 * miss; anything after a miss is not the keyword's (spec §4). What the
 * database answered goes into the cache, found or not: every batch
 * probed is sealed. */
static bool take_entries(eval *ev)
{
    for (size_t i = 0; i < ev->ner; i++)
        if (ev->er[i].cached == SE_CACHE_MISS)
            se_cache_entry_put(ev->cache, ev->q->room_id, ev->er[i].batch, ev->er[i].label,
                               ev->er[i].seq);
    for (size_t i = 0; i < ev->net; i++) {
        etask *e = &ev->et[i];
        if (e->done) continue;
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
            uint32_t chunk =
                e->chunk < MAX_CHUNK / CHUNK_GROWTH ? CHUNK_GROWTH * e->chunk : MAX_CHUNK;
            e->chunk = chunk < room ? chunk : (uint32_t)room;
            if (e->chunk == 0) e->done = true;
        }
    }
    return true;
}

static void corrupt(eval *ev, const stask *s, uint32_t idx, const char *why)
{
    ev->out->corrupt_blocks++;
    log_error(ev->q->room, "search: block %" PRIu32 " of segment %" PRIu64 " %s; skipped", idx,
              s->seg->id, why);
}

/* Block idx of s, opened (n seqs): checked, its seqs found, the frontier
 * moved. false only when memory ran out. */
static bool add_block(eval *ev, stask *s, uint32_t idx, const uint64_t *seqs, size_t n)
{
    /* Authentic, but the seqs must lie in the segment and below the blocks
     * before: the order is what lets a search stop early. */
    if (n > 0 && (seqs[n - 1] < s->seg->min_seq || seqs[0] > s->seg->max_seq ||
                  (s->last_seq && seqs[0] >= s->last_seq))) {
        corrupt(ev, s, idx, "is out of order");
        return true;
    }
    for (size_t i = 0; i < n; i++)
        if (seqs[i] < ev->bound && !sv_push(ev, &ev->found[s->kw], seqs[i])) return false;
    if (n > 0) {
        s->last_seq = seqs[n - 1];
        if (s->frontier >= s->last_seq) s->frontier = s->last_seq - 1;
    }
    if (n < SSE_BLOCK_IDS || s->frontier < s->seg->min_seq) s->frontier = 0;
    return true;
}

/* Takes the blocks of s the cache holds, from s->next on, while they
 * could still change the page, so that a round asks only for what comes
 * after them: the blocks above the page's bound (a later page passes
 * over them) and then one that holds seqs below it. Taking more would
 * take the read-ahead of earlier pages, thousands of seqs far below this
 * page, before assess could tell (each pass of evaluate assesses anew). */
static bool take_cached_blocks(eval *ev, stask *s)
{
    unsigned char label[SSE_LABEL_BYTES];
    uint64_t seqs[SSE_BLOCK_IDS];
    size_t n;
    bool ok = true, added = false;
    while (ok && !added && ev->cache && s->frontier && worth_reading(ev, s) &&
           s->next < UINT32_MAX - 1) {
        block_label(s, s->next, label);
        int rc = se_cache_block_get(ev->cache, ev->q->room_id, s->seg->id, label, seqs, &n);
        if (rc == SE_CACHE_MISS) break;
        if (rc == SE_CACHE_NO_BLOCK) {
            s->frontier = 0;
        } else {
            ok = add_block(ev, s, s->next, seqs, n);
            added = n > 0 && seqs[n - 1] < ev->bound;
        }
        s->next++;
        ev->moved = true;
    }
    sodium_memzero(seqs, sizeof seqs);
    return ok;
}

/* Blocks of one segment in order: a miss or a short block ends it. What
 * the database answered goes into the cache as it opened. */
static bool read_blocks(eval *ev, stask *s)
{
    uint64_t seqs[SSE_BLOCK_IDS];
    size_t n;
    bool ok = true, read = false;
    for (uint32_t b = 0; b < s->nreq && s->frontier && ok; b++) {
        const breq *r = &ev->br[s->req + b];
        uint32_t idx = s->next + b;
        if (r->cached == SE_CACHE_NO_BLOCK || (r->cached == SE_CACHE_MISS && !r->body)) {
            if (r->cached == SE_CACHE_MISS)
                se_cache_block_put(ev->cache, ev->q->room_id, r->seg, r->label, false, NULL, 0);
            s->frontier = 0;
            break;
        }
        read = read || r->cached == SE_CACHE_MISS;
        if (r->cached == SE_CACHE_BLOCK) {
            n = r->ncached;
            memcpy(seqs, r->seqs, n * sizeof *seqs);
        } else if (sse_block_open(seqs, &n, block_key(s), s->seg->id, idx, r->body) == SSE_OPEN_OK) {
            se_cache_block_put(ev->cache, ev->q->room_id, r->seg, r->label, true, seqs, n);
        } else {
            corrupt(ev, s, idx, "does not open");
            continue;
        }
        ok = add_block(ev, s, idx, seqs, n);
    }
    sodium_memzero(seqs, sizeof seqs);
    if (s->frontier) {
        s->next += s->nreq;
        /* More per round saves round trips; blocks the cache had cost
         * none, and taking more of them only takes seqs the page may not
         * need. */
        if (read && s->nread < MAX_BLOCK_READ) s->nread *= 2;
        if ((uint64_t)s->next + s->nread > UINT32_MAX) s->frontier = 0;
    }
    return ok;
}

static bool take_blocks(eval *ev)
{
    for (size_t i = 0; i < ev->nst; i++)
        if (ev->st[i].nreq && !read_blocks(ev, &ev->st[i])) return false;
    return true;
}

/* Liveness answers: the candidates asked about that came back are live,
 * the others dead. */
static bool take_live(eval *ev, const seqvec *got)
{
    bool ok = true;
    for (size_t i = 0; i < ev->lreq.n && ok; i++) {
        uint64_t x = ev->lreq.v[i];
        ok = sv_push(ev, sv_has(got, x) ? &ev->live : &ev->dead, x);
    }
    return ok && sv_sort(ev, &ev->live) && sv_sort(ev, &ev->dead);
}

/* The parts of a round's rows, checked for shape. */
typedef struct round_rows {
    lrow *listing;
    size_t nlisting;
    seqvec retracted, live;
    bool has_last;
    uint64_t last, version; /* kind 7 */
    int *mirrors; /* rows of kind 6 */
    size_t nmirrors;
} round_rows;

static void round_rows_free(round_rows *rr)
{
    free(rr->mirrors);
    free(rr->listing);
    sv_free(&rr->retracted);
    sv_free(&rr->live);
}

/* Splits the round's result: the listing and retractions into rr, entry
 * and block answers straight into this round's requests (used only if the
 * round counts). */
static bool split_round(eval *ev, const PGresult *r, round_rows *rr)
{
    int rows = PQntuples(r);
    if (PQnfields(r) != 8) goto bad;
    rr->listing = calloc((size_t)rows + 1, sizeof *rr->listing);
    rr->mirrors = calloc((size_t)rows + 1, sizeof *rr->mirrors);
    if (!rr->listing || !rr->mirrors) {
        fail(ev, SE_ERR_NOMEM, "out of memory");
        return false;
    }
    for (int i = 0; i < rows; i++) {
        uint64_t v[7];
        for (int f = 0; f < 7; f++) {
            if (PQgetlength(r, i, f) != 8) goto bad;
            v[f] = get64((const unsigned char *)PQgetvalue(r, i, f));
        }
        switch (v[0]) {
        case 0:
        case 1:
            memcpy(rr->listing[rr->nlisting++].v, v, sizeof v);
            break;
        case 2: {
            int len = PQgetlength(r, i, 7);
            if (v[1] < 1 || v[1] > ev->nbq || len <= 0 || len % BUCKET_ENTRY != 0) goto bad;
            ev->bq[v[1] - 1].body = (const unsigned char *)PQgetvalue(r, i, 7);
            ev->bq[v[1] - 1].len = (size_t)len;
            break;
        }
        case 3:
            if (v[1] < 1 || v[1] > ev->nbr_db || PQgetlength(r, i, 7) != SSE_BLOCK_BYTES) goto bad;
            ev->br[ev->bmap[v[1] - 1]].body = (const unsigned char *)PQgetvalue(r, i, 7);
            break;
        case 4:
            if (!sv_push(ev, &rr->retracted, v[1])) return false;
            break;
        case 5:
            if (!sv_push(ev, &rr->live, v[1])) return false;
            break;
        case 6:
            if (v[2] > (uint64_t)INT32_MAX / BUCKET_ENTRY ||
                PQgetlength(r, i, 7) != (int)(v[2] * BUCKET_ENTRY))
                goto bad;
            rr->mirrors[rr->nmirrors++] = i;
            break;
        case 7:
            rr->has_last = true;
            rr->last = v[1];
            rr->version = v[2];
            break;
        default:
            goto bad;
        }
    }
    qsort(rr->listing, rr->nlisting, sizeof *rr->listing, cmp_lrow);
    for (size_t i = 0; i < ev->ner; i++)
        if (ev->er[i].cached == SE_CACHE_MISS)
            ev->er[i].seq = bucket_find(&ev->bq[ev->er[i].bq], ev->er[i].label);
    return sv_sort(ev, &rr->retracted) && sv_sort(ev, &rr->live);
bad:
    fail(ev, SE_ERR_DB, "search round: unexpected row");
    return false;
}

/* Mirrors read whole this round, filed when they hold every entry the
 * listing counts for their sealed batch (the same snapshot). */
static bool take_mirrors(eval *ev, const PGresult *r, const round_rows *rr)
{
    for (size_t m = 0; m < rr->nmirrors; m++) {
        int row = rr->mirrors[m];
        uint64_t batch = get64((const unsigned char *)PQgetvalue(r, row, 1));
        uint64_t n = get64((const unsigned char *)PQgetvalue(r, row, 2));
        size_t b = batch_from(ev, batch);
        if (b >= ev->nbatches || ev->batches[b].id != batch || !ev->batches[b].sealed ||
            ev->batches[b].entries != n)
            continue;
        const unsigned char *p = (const unsigned char *)PQgetvalue(r, row, 7);
        unsigned char *labels = malloc(n ? n * SSE_LABEL_BYTES : 1);
        uint64_t *seqs = malloc(n ? n * sizeof *seqs : 1);
        if (!labels || !seqs) {
            free(labels);
            free(seqs);
            fail(ev, SE_ERR_NOMEM, "out of memory");
            return false;
        }
        for (uint64_t i = 0; i < n; i++) {
            memcpy(labels + i * SSE_LABEL_BYTES, p + i * BUCKET_ENTRY, SSE_LABEL_BYTES);
            seqs[i] = get64(p + i * BUCKET_ENTRY + SSE_LABEL_BYTES);
        }
        se_cache_mirror_put(ev->cache, ev->q->room_id, batch, labels, seqs, (size_t)n);
        free(labels);
        free(seqs);
    }
    return true;
}

/* The room's last batch, read by a first round that did not seal. */
static bool take_last(eval *ev, const round_rows *rr)
{
    if (!rr->has_last) {
        fail(ev, SE_ERR_NO_ROOM, "no such room");
        return false;
    }
    ev->out->last_batch = rr->last;
    ev->out->seal_skipped = true;
    if (ev->q->hi > rr->last) {
        fail(ev, SE_ERR_BAD_QUERY, "hi is beyond the room's last batch");
        return false;
    }
    return true;
}

/* The first round's seal answer: the room's last batch and the batches
 * the seal had to skip, which are then sealed one by one. *busy: some
 * were, so the round's snapshot may predate entries now in them. */
static bool take_seal(eval *ev, const PGresult *seal, bool *busy)
{
    *busy = false;
    if (PQntuples(seal) < 1 || PQgetlength(seal, 0, 0) != 8) {
        fail(ev, SE_ERR_NO_ROOM, "no such room");
        return false;
    }
    ev->out->last_batch = get64((const unsigned char *)PQgetvalue(seal, 0, 0));
    if (ev->q->hi > ev->out->last_batch) {
        fail(ev, SE_ERR_BAD_QUERY, "hi is beyond the room's last batch");
        return false;
    }
    size_t nbusy = 0;
    for (int i = 0; i < PQntuples(seal); i++)
        nbusy += !PQgetisnull(seal, i, 1) && PQgetlength(seal, i, 1) == 8;
    if (nbusy == 0) return true;
    *busy = true;
    call *calls = calloc(2 * nbusy, sizeof *calls);
    unsigned char(*ids)[8] = calloc(nbusy, sizeof *ids);
    unsigned char room[8];
    bool ok = false;
    if (!calls || !ids) {
        fail(ev, SE_ERR_NOMEM, "out of memory");
        goto out;
    }
    be64(room, (uint64_t)ev->q->room_id);
    size_t k = 0;
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
    ok = pipeline(ev, calls, k, NULL, false);
out:
    free(ids);
    free(calls);
    return ok;
}

/* The buckets the entries not in the cache lie in, each asked once. */
static bool plan_buckets(eval *ev)
{
    bkey *keys = grow(ev, ev->bkeys, &ev->cbkeys, ev->ner_db + 1, sizeof *keys);
    if (!keys) return false;
    ev->bkeys = keys;
    bqreq *bq = grow(ev, ev->bq, &ev->cbq, ev->ner_db + 1, sizeof *bq);
    if (!bq) return false;
    ev->bq = bq;
    size_t k = 0;
    for (size_t i = 0; i < ev->ner; i++)
        if (ev->er[i].cached == SE_CACHE_MISS)
            keys[k++] = (bkey){ev->er[i].batch, ev->er[i].bucket, i};
    qsort(keys, k, sizeof *keys, cmp_bkey);
    ev->nbq = 0;
    for (size_t j = 0; j < k; j++) {
        ereq *r = &ev->er[keys[j].er];
        r->seq = 0;
        if (ev->nbq == 0 || bq[ev->nbq - 1].batch != r->batch ||
            bq[ev->nbq - 1].bucket != r->bucket)
            bq[ev->nbq++] = (bqreq){.batch = r->batch, .bucket = r->bucket};
        r->bq = ev->nbq - 1;
    }
    return true;
}

/* The probes' parameters: the buckets (pb 0, 1) and blocks (pb 2, 3; bmap)
 * not in the cache, liveness (pb 4), mirrors (pb 5). */
static bool round_params(eval *ev)
{
    bool ok = plan_buckets(ev) && arr_begin(ev, &ev->pb[0], OID_INT8, ev->nbq) &&
              arr_begin(ev, &ev->pb[1], OID_INT8, ev->nbq);
    for (size_t i = 0; i < ev->nbq && ok; i++)
        ok = arr_int8(ev, &ev->pb[0], ev->bq[i].batch) &&
             arr_int8(ev, &ev->pb[1], ev->bq[i].bucket);
    size_t *map = ok ? grow(ev, ev->bmap, &ev->cbmap, ev->nbr_db + 1, sizeof *map) : NULL;
    if (!map) return false;
    ev->bmap = map;
    ok = arr_begin(ev, &ev->pb[2], OID_INT8, ev->nbr_db) &&
         arr_begin(ev, &ev->pb[3], OID_BYTEA, ev->nbr_db);
    for (size_t i = 0, k = 0; i < ev->nbr && ok; i++) {
        if (ev->br[i].cached != SE_CACHE_MISS) continue;
        ev->bmap[k++] = i;
        ok = arr_int8(ev, &ev->pb[2], ev->br[i].seg) &&
             arr_bytes(ev, &ev->pb[3], ev->br[i].label, SSE_LABEL_BYTES);
    }
    ok = ok && arr_begin(ev, &ev->pb[4], OID_INT8, ev->lreq.n);
    for (size_t i = 0; i < ev->lreq.n && ok; i++)
        ok = arr_int8(ev, &ev->pb[4], ev->lreq.v[i]);
    ok = ok && arr_begin(ev, &ev->pb[5], OID_INT8, ev->mreq.n);
    for (size_t i = 0; i < ev->mreq.n && ok; i++)
        ok = arr_int8(ev, &ev->pb[5], ev->mreq.v[i]);
    return ok;
}

/* Sends this round (with the seal, the first time) as one pipeline and
 * takes in what came back: the round's answers if the listing it read is
 * the one its probes were made from, else that listing, to start over
 * from. */
static bool send_round(eval *ev)
{
    bool first = !ev->sealed, busy = false, ok;
    /* Sealing is for forward privacy: when every batch <= hi is sealed
     * already, it would change nothing, and the round reads the room's
     * last batch instead. If the cache also knows the room's version and
     * retractions with that listing, the round reads only the version. */
    bool seal = first && !ev->all_sealed;
    bool trust = first && ev->all_sealed && ev->trusted && ev->rows;
    bool want_dead = ev->need_retracted && !trust;
    unsigned char room[8], hi[8], bound[8], flags[8];
    be64(room, (uint64_t)ev->q->room_id);
    be64(hi, ev->q->hi);
    /* All of them, whatever this search's bound: the cache keeps the list
     * for later searches (a seq at or above the bound is never a match). */
    be64(bound, (uint64_t)INT64_MAX);
    be64(flags, (trust ? 0 : ROUND_LIST) | (want_dead ? ROUND_RETRACTED : 0));
    if (!round_params(ev)) return false;
    call calls[3];
    size_t n = 0;
    if (seal)
        calls[n++] = (call){.stmt = "se_seal",
                            .nparams = 2,
                            .vals = {(const char *)room, (const char *)hi},
                            .lens = {8, 8}};
    if (trust && ev->nbq == 0 && ev->lreq.n == 0 && ev->mreq.n == 0)
        calls[n++] = (call){
            .stmt = "se_round_blocks",
            .nparams = 3,
            .vals = {(const char *)room, (const char *)ev->pb[2].p, (const char *)ev->pb[3].p},
            .lens = {8, (int)ev->pb[2].len, (int)ev->pb[3].len}};
    else
        calls[n++] = (call){
            .stmt = "se_round",
            .nparams = 10,
            .vals = {(const char *)room, (const char *)hi, (const char *)bound, (const char *)flags,
                     (const char *)ev->pb[0].p, (const char *)ev->pb[1].p,
                     (const char *)ev->pb[2].p, (const char *)ev->pb[3].p,
                     (const char *)ev->pb[4].p, (const char *)ev->pb[5].p},
            .lens = {8, 8, 8, 8, (int)ev->pb[0].len, (int)ev->pb[1].len, (int)ev->pb[2].len,
                     (int)ev->pb[3].len, (int)ev->pb[4].len, (int)ev->pb[5].len}};
    calls[n++] = SYNC;
    PGresult *res[2] = {0};
    round_rows rr = {0};
    ok = pipeline(ev, calls, n, res, false);
    if (ok && seal) ok = take_seal(ev, res[0], &busy);
    ev->sealed = true;
    ok = ok && split_round(ev, res[seal ? 1 : 0], &rr);
    if (ok && first && !seal) ok = take_last(ev, &rr);
    bool dead_complete = false;
    if (ok && want_dead) {
        /* Retractions are for good, so the list stays right for the rest
         * of the search whatever the listing does. */
        ev->need_retracted = false;
        if (rr.retracted.n <= RETRACTED_MAX) {
            dead_complete = true;
            ev->retracted = true;
            sv_free(&ev->dead);
            ev->dead = rr.retracted;
            memset(&rr.retracted, 0, sizeof rr.retracted);
        }
    }
    if (ok && trust) {
        ev->trusted = false;
        if (rr.version == ev->version) {
            /* Nothing the listing or the retractions show has changed
             * since the cache took them (sql/010). */
            ev->out->listing_trusted = true;
            ev->retracted = true;
            sv_free(&ev->dead);
            ev->dead = ev->cached_dead;
            memset(&ev->cached_dead, 0, sizeof ev->cached_dead);
            ok = take_entries(ev) && take_blocks(ev) && take_live(ev, &rr.live) &&
                 take_mirrors(ev, res[seal ? 1 : 0], &rr);
        } else {
            /* Changed: the probes are void and the next round reads the
             * listing and the retractions (no restart: a guess was wrong). */
            drop_tasks(ev);
            free(ev->rows);
            ev->rows = NULL;
            ev->nrows = 0;
            ev->need_retracted = true;
        }
    } else if (ok && !busy && ev->rows &&
               same_listing(ev->rows, ev->nrows, rr.listing, rr.nlisting)) {
        if (dead_complete)
            cache_listing(ev, rr.listing, rr.nlisting, rr.version, &ev->dead);
        ok = take_entries(ev) && take_blocks(ev) && take_live(ev, &rr.live) &&
             take_mirrors(ev, res[seal ? 1 : 0], &rr);
    } else if (ok) {
        /* A listing of this evaluation changed under it: a compaction
         * committed. (A guess from the cache that was wrong is no
         * restart.) */
        if (ev->rows && !first && ++ev->out->restarts > MAX_RESTARTS) {
            fail(ev, SE_ERR_DB, "the room's index kept changing during the search");
            ok = false;
        } else {
            cache_listing(ev, rr.listing, rr.nlisting, rr.version,
                          dead_complete && !busy ? &ev->dead : NULL);
            ok = adopt_listing(ev, rr.listing, rr.nlisting);
            rr.listing = NULL;
        }
    }
    round_rows_free(&rr);
    clear_results(res, 2);
    return ok;
}

/* The evaluation: rounds until nothing left could change the page. */
static bool evaluate(eval *ev)
{
    if (!guess_listing(ev)) return false;
    for (;;) {
        ev->moved = false;
        if (ev->rows) {
            if (!walk_mirrors(ev) || !assess(ev) || !plan(ev) || !plan_mirrors(ev)) return false;
        } else {
            ev->ner = ev->nbr = ev->nbr_db = ev->ner_db = 0;
            ev->lreq.n = ev->mreq.n = 0;
        }
        if (!ev->ner_db && !ev->nbr_db && !ev->lreq.n && (ev->ner || ev->nbr)) {
            /* Everything this round wants is in the cache: take it and go
             * on, before the first round too, so that it asks for what the
             * cache lacks (what was taken on a guessed listing goes if the
             * round shows the listing otherwise). */
            if (!take_entries(ev) || !take_blocks(ev)) return false;
            continue;
        }
        if (!ev->ner_db && !ev->nbr_db && !ev->lreq.n && ev->moved) continue;
        if (ev->sealed && ev->rows && !ev->ner_db && !ev->nbr_db && !ev->lreq.n) return true;
        if (!send_round(ev)) return false;
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
    eval ev = {.pg = pg, .q = q, .out = out, .err = err, .errlen = errlen};
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
    ev.cache = q->cache;
    ev.bound = q->before ? q->before : UINT64_MAX;
    ev.need_retracted = true;
    if (PQenterPipelineMode(pg) != 1) {
        fail(&ev, SE_ERR_DB, "cannot enter pipeline mode: %s", PQerrorMessage(pg));
        return ev.code;
    }
    bool done = false;
    /* A connection without the statements (new, or reconnected) fails the
     * first round before anything ran: prepare them and begin again. */
    for (int attempt = 0; attempt < 2 && !done; attempt++) {
        done = evaluate(&ev);
        if (done || !ev.no_stmt || attempt > 0) break;
        abandon(&ev);
        ev.code = SE_OK;
        ev.no_stmt = false;
        ev.sealed = false;
        ev.retracted = false;
        ev.need_retracted = true;
        ev.dead.n = ev.live.n = 0;
        if (errlen) err[0] = '\0';
        if (!prepare_all(&ev)) break;
    }
    if (ev.code == SE_OK && !done) fail(&ev, SE_ERR_DB, "evaluation did not settle");
    if (ev.code == SE_OK) {
        out->n = ev.inter.n < q->max ? ev.inter.n : q->max;
        memcpy(out->seqs, ev.inter.v, out->n * sizeof *out->seqs);
        out->complete = ev.inter.n <= q->max;
    }
    if (ev.code != SE_OK) abandon(&ev);
    PQexitPipelineMode(pg);
    drop_tasks(&ev);
    free(ev.rows);
    for (size_t k = 0; k < SE_MAX_KEYWORDS; k++)
        sv_free(&ev.found[k]);
    sv_free(&ev.inter);
    sv_free(&ev.live);
    sv_free(&ev.dead);
    sv_free(&ev.cached_dead);
    sv_free(&ev.lreq);
    sv_free(&ev.mreq);
    free(ev.er);
    free(ev.br);
    free(ev.bmap);
    free(ev.bkeys);
    free(ev.bq);
    for (size_t i = 0; i < sizeof ev.pb / sizeof ev.pb[0]; i++)
        free(ev.pb[i].p);
    return ev.code;
}
