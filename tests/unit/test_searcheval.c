/* Tests of component/searcheval.c against a real PostgreSQL, with an index
 * written the way members write it, by the library's own derivations
 * (libclient/src/search/ggm.h: roots, leaves, covers, labels, segment keys
 * and sealed blocks), never the component's.
 *
 * The main room is a generated corpus: four writers taking batches of
 * random length across two generations, skewed keyword frequencies, some
 * batches compacted into segments (a keyword's blocks padded to a power of
 * two), segments still building or already merged whose blocks name the
 * wrong messages (reading them would show), and retracted messages. Every
 * query — single keywords, conjunctions, one generation only, a hi in the
 * middle — is paged with before/max until complete and must give exactly
 * the plaintext truth. Then: forward privacy (a batch past hi is never
 * reached, an open batch at or below hi is sealed), retractions after a
 * search and retractions that empty a page, blocks that do not open or lie
 * about their seqs, a gap in a batch's counters, every reason a query is
 * refused, statements missing on the connection, a connection that dies,
 * and the time of a newest-50 page. Uses $SEALROOM_TEST_PG if set, otherwise a throwaway
 * cluster from tests/pg-scratch.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pgtest.h"
#include "db.h"
#include "log.h"
#include "search/ggm.h"
#include "searcheval.h"

#define NWORDS 32 /* w00..w29, "solo" (one message), "none" (no message) */
#define W_SOLO 30
#define W_NONE 31
#define MAXB 256
#define MAXS 8
#define NGEN 2

/* ---- environment (as in test_sweep.c) ---- */

static char g_src[1024];
static char g_scratch[256];
static char *g_admin_conninfo;
static char g_dbname[64];
static char *g_conninfo;
static PGconn *g_pg; /* the connection searches run on */
/* Every search runs three times: without a cache, with a roomy one and
 * with one so small it keeps evicting; all three must agree. */
static se_cache *g_cache, *g_tiny;
static uint64_t g_rng;

static PGconn *pg_connect(void)
{
    PGconn *c = PQconnectdb(g_conninfo);
    if (PQstatus(c) != CONNECTION_OK) fail_msg("connect: %s", PQerrorMessage(c));
    PQsetNoticeProcessor(c, pgt_quiet, NULL);
    return c;
}

static PGresult *exec(const char *sql, int n, const char *const *vals)
{
    PGresult *r = PQexecParams(g_pg, sql, n, NULL, vals, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    return r;
}

static void exec0(const char *sql, int n, const char *const *vals)
{
    PQclear(exec(sql, n, vals));
}

static int admin_exec(const char *sql)
{
    PGconn *c = PQconnectdb(g_admin_conninfo);
    PQsetNoticeProcessor(c, pgt_quiet, NULL);
    int rc = -1;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, sql);
        rc = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK ? 0 : -1;
        if (rc < 0) fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
        PQclear(r);
    } else {
        fprintf(stderr, "connect: %s", PQerrorMessage(c));
    }
    PQfinish(c);
    return rc;
}

static int group_setup(void **state)
{
    (void)state;
    if (sodium_init() < 0) return -1;
    log_set_level(LOG_LVL_ERROR);
    randombytes_buf(&g_rng, sizeof g_rng);
    g_rng |= 1;
    fprintf(stderr, "corpus seed %llu\n", (unsigned long long)g_rng);
    const char *src = getenv("SEALROOM_SOURCE_DIR");
    snprintf(g_src, sizeof g_src, "%s", src ? src : ".");
    g_admin_conninfo =
        pgt_admin_conninfo(g_src, "/tmp/sealroom-test-search-XXXXXX", g_scratch, sizeof g_scratch);
    if (!g_admin_conninfo) return -1;
    snprintf(g_dbname, sizeof g_dbname, "sealroom_search_%d", (int)getpid());
    char sql[160];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", g_dbname);
    if (admin_exec(sql) != 0) return -1;
    g_conninfo = pgt_conninfo_for(g_admin_conninfo, g_dbname);
    if (!g_conninfo) return -1;
    db *d = db_new(g_conninfo);
    char err[512], dir[1100];
    snprintf(dir, sizeof dir, "%s/sql", g_src);
    int rc = d && db_connect_blocking(d, 10000, err, sizeof err) == 0 &&
                     db_migrate(d, dir, err, sizeof err) == 0
                 ? 0
                 : -1;
    if (rc) fprintf(stderr, "migrate: %s\n", err);
    db_free(d);
    g_cache = se_cache_new(64u << 20);
    g_tiny = se_cache_new(4096);
    if (!g_cache || !g_tiny) rc = -1;
    if (rc == 0) {
        g_pg = PQconnectdb(g_conninfo);
        if (PQstatus(g_pg) != CONNECTION_OK) rc = -1;
        PQsetNoticeProcessor(g_pg, pgt_quiet, NULL);
    }
    return rc;
}

static int group_teardown(void **state)
{
    (void)state;
    se_cache_free(g_cache);
    se_cache_free(g_tiny);
    PQfinish(g_pg);
    char sql[160];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", g_dbname);
    admin_exec(sql);
    if (g_scratch[0]) {
        char cmd[2400];
        snprintf(cmd, sizeof cmd, "sh '%s/tests/pg-scratch.sh' stop '%s'", g_src, g_scratch);
        if (system(cmd) != 0) fprintf(stderr, "could not stop the cluster\n");
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_scratch);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_scratch);
    }
    free(g_admin_conninfo);
    free(g_conninfo);
    return 0;
}

/* xorshift64*: the corpus is reproducible from the seed printed above. */
static uint32_t rnd(uint32_t n)
{
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (uint32_t)((g_rng * 0x2545F4914F6CDD1Dull) >> 33) % n;
}

/* ---- growable text, for array literals ---- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_num(sbuf *b, uint64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%s%llu", b->len > 1 ? "," : "", (unsigned long long)v);
    sb_add(b, t, (size_t)n);
}

static void sb_hex(sbuf *b, const unsigned char *p, size_t n)
{
    char t[2 * SR_SSE_BLOCK_BYTES + 1];
    if (b->len > 1) sb_add(b, ",", 1);
    sb_add(b, "\\\\x", 3);
    sodium_bin2hex(t, sizeof t, p, n);
    sb_add(b, t, 2 * n);
}

static void sb_open(sbuf *b)
{
    b->len = 0;
    sb_add(b, "{", 1);
}

static const char *sb_close(sbuf *b)
{
    sb_add(b, "}", 1);
    return b->p;
}

/* ---- a room as members wrote it ---- */

typedef struct tbatch {
    uint32_t id, gen;
    int state; /* 0 open, 1 sealed, 2 compacted */
    int seg;   /* the segment it went into, -1 */
    uint32_t counter[NWORDS];
    bool have_tok[NWORDS];
    unsigned char tok[NWORDS][32];
} tbatch;

typedef struct tseg {
    uint64_t id;
    uint32_t gen;
    int state; /* 0 building, 1 live, 2 merged */
    uint32_t first, last;
    size_t nb;
    uint32_t b[16]; /* batch ids */
} tseg;

typedef struct troom {
    long long id;
    char idtext[24], name[64];
    size_t nmsg;
    uint32_t *mask;  /* words of message seq (index seq) */
    uint32_t *batch; /* batch of message seq */
    bool *retracted;
    tbatch b[MAXB + 1]; /* by id */
    uint32_t nb;
    tseg s[MAXS];
    size_t ns;
    unsigned char kg[NGEN + 1][32];
    bool have_root[NWORDS][NGEN + 1];
    unsigned char root[NWORDS][NGEN + 1][32];
    /* Entries to insert. */
    sbuf eb, el, es;
    size_t nentries;
} troom;

static char g_words[NWORDS][8];

static void init_words(void)
{
    for (int i = 0; i < 30; i++)
        snprintf(g_words[i], sizeof g_words[i], "w%02d", i);
    strcpy(g_words[W_SOLO], "solo");
    strcpy(g_words[W_NONE], "none");
}

static const unsigned char *root_of(troom *r, int w, uint32_t gen)
{
    if (!r->have_root[w][gen]) {
        assert_int_equal(
            sr_sse_root(r->root[w][gen], r->kg[gen], gen, g_words[w], strlen(g_words[w])),
            SR_E2E_OK);
        r->have_root[w][gen] = true;
    }
    return r->root[w][gen];
}

static const unsigned char *token(troom *r, int w, uint32_t b)
{
    tbatch *tb = &r->b[b];
    if (!tb->have_tok[w]) {
        sr_sse_leaf(tb->tok[w], root_of(r, w, tb->gen), b);
        tb->have_tok[w] = true;
    }
    return tb->tok[w];
}

static troom *room_new(const char *name, size_t nmsg)
{
    troom *r = calloc(1, sizeof *r);
    assert_non_null(r);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->nmsg = nmsg;
    r->mask = calloc(nmsg + 1, sizeof *r->mask);
    r->batch = calloc(nmsg + 1, sizeof *r->batch);
    r->retracted = calloc(nmsg + 1, sizeof *r->retracted);
    assert_true(r->mask && r->batch && r->retracted);
    for (int g = 1; g <= NGEN; g++)
        randombytes_buf(r->kg[g], 32);
    const char *vals[] = {name};
    PGresult *res = exec("INSERT INTO rooms(name, roster_version, roster_head, search_gen) "
                         "VALUES ($1, 0, decode(repeat('00', 32), 'hex'), 2) RETURNING room_id",
                         1, vals);
    r->id = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    snprintf(r->idtext, sizeof r->idtext, "%lld", r->id);
    char n[24];
    snprintf(n, sizeof n, "%zu", nmsg);
    const char *mv[] = {r->idtext, n};
    exec0("INSERT INTO messages(room_id, seq, sender, nick, payload) "
          "SELECT $1, g, 'alice@localhost', 'alice', '\\x00' FROM generate_series(1, $2::int8) g",
          2, mv);
    exec0("UPDATE rooms SET last_seq = $2 WHERE room_id = $1", 2, mv);
    return r;
}

static void room_free(troom *r)
{
    sodium_memzero(r->kg, sizeof r->kg);
    sodium_memzero(r->root, sizeof r->root);
    sodium_memzero(r->b, sizeof r->b);
    free(r->mask);
    free(r->batch);
    free(r->retracted);
    free(r->eb.p);
    free(r->el.p);
    free(r->es.p);
    free(r);
}

static uint32_t take_batch(troom *r, uint32_t gen)
{
    assert_true(r->nb < MAXB);
    tbatch *b = &r->b[++r->nb];
    b->id = r->nb;
    b->gen = gen;
    b->state = 0;
    b->seg = -1;
    return b->id;
}

static void flush_entries(troom *r)
{
    if (r->nentries == 0) return;
    const char *vals[] = {r->idtext, sb_close(&r->eb), sb_close(&r->el), sb_close(&r->es)};
    /* As the message path stores them: one row per message (a message
     * cut by a flush makes two, which sealing packs the same). */
    exec0("INSERT INTO search_pending(room_id, batch, seq, labels) "
          "SELECT $1, b, s, string_agg(l, ''::bytea ORDER BY i) "
          "FROM unnest($2::int8[], $3::bytea[], $4::int8[]) WITH ORDINALITY AS u(b, l, s, i) "
          "GROUP BY b, s",
          4, vals);
    r->nentries = 0;
}

static void add_entry(troom *r, uint32_t b, const unsigned char label[16], uint64_t seq)
{
    if (r->nentries == 0) {
        sb_open(&r->eb);
        sb_open(&r->el);
        sb_open(&r->es);
    }
    sb_num(&r->eb, b);
    sb_hex(&r->el, label, 16);
    sb_num(&r->es, seq);
    if (++r->nentries == 4000) flush_entries(r);
}

/* Message seq goes into batch b with the words of mask: one real entry
 * per word (its counter in the batch), dummies to a multiple of 8. */
static void index_message(troom *r, uint64_t seq, uint32_t b, uint32_t mask)
{
    unsigned char label[16];
    size_t n = 0;
    r->mask[seq] = mask;
    r->batch[seq] = b;
    for (int w = 0; w < NWORDS; w++) {
        if (!(mask >> w & 1)) continue;
        sr_sse_label(label, token(r, w, b), r->b[b].counter[w]++);
        add_entry(r, b, label, seq);
        n++;
    }
    do {
        randombytes_buf(label, sizeof label);
        add_entry(r, b, label, seq);
    } while (++n % 8);
}

/* Stores the batches as they stand and the room's generation state. */
static void store_batches(troom *r)
{
    flush_entries(r);
    sbuf ids = {0}, gens = {0}, states = {0};
    sb_open(&ids);
    sb_open(&gens);
    sb_open(&states);
    for (uint32_t b = 1; b <= r->nb; b++) {
        sb_num(&ids, b);
        sb_num(&gens, r->b[b].gen);
        sb_num(&states, (uint64_t)r->b[b].state);
    }
    const char *vals[] = {r->idtext, sb_close(&ids), sb_close(&gens), sb_close(&states)};
    exec0("INSERT INTO search_batches(room_id, batch, gen, owner) "
          "SELECT $1, b, g, 'w@localhost/x' FROM unnest($2::int8[], $3::int4[]) AS u(b, g) "
          "ON CONFLICT (room_id, batch) DO NOTHING",
          3, vals);
    /* The running count the message path keeps (sealing sizes the
     * buckets by it; searcheval mirrors a sealed batch only when it has
     * them all), then the seals, which build the buckets (sql/009). */
    exec0("UPDATE search_batches b SET entries = (SELECT count(*) FROM search_entries e "
          "WHERE e.room_id = b.room_id AND e.batch = b.batch) WHERE room_id = $1 AND state = 0",
          1, vals);
    exec0("UPDATE search_batches b SET state = u.s FROM unnest($2::int8[], $3::int4[], $4::int2[]) "
          "AS u(b, g, s) WHERE b.room_id = $1 AND b.batch = u.b AND b.state <> u.s",
          4, vals);
    char last[24];
    snprintf(last, sizeof last, "%u", r->nb);
    const char *rv[] = {r->idtext, last};
    exec0("UPDATE rooms SET search_last_batch = $2 WHERE room_id = $1", 2, rv);
    free(ids.p);
    free(gens.p);
    free(states.p);
}

static void store_block(troom *r, uint64_t seg, const unsigned char s[32], uint32_t i,
                        const uint64_t *seqs, size_t n, sbuf *bl, sbuf *bb)
{
    unsigned char label[16], body[SR_SSE_BLOCK_BYTES];
    sr_sse_block_label(label, s, i);
    assert_int_equal(sr_sse_block_seal(body, s, seg, i, seqs, n), SR_E2E_OK);
    (void)r;
    sb_hex(bl, label, 16);
    sb_hex(bb, body, sizeof body);
}

/* A keyword's blocks in segment seg, keyed by t_last, the keyword's token
 * of the segment's last batch: seqs (descending) by 32, padded with empty
 * blocks to a power of two. */
static void store_postings(troom *r, uint64_t seg, const unsigned char t_last[32],
                           const uint64_t *seqs, size_t n, sbuf *bl, sbuf *bb)
{
    unsigned char s[32];
    sr_sse_segment_key(s, t_last, seg);
    size_t blocks = (n + SR_SSE_BLOCK_IDS - 1) / SR_SSE_BLOCK_IDS, padded = 1;
    while (padded < blocks)
        padded *= 2;
    for (size_t i = 0; i < padded; i++) {
        size_t from = i * SR_SSE_BLOCK_IDS;
        size_t cnt = from < n ? (n - from < SR_SSE_BLOCK_IDS ? n - from : SR_SSE_BLOCK_IDS) : 0;
        store_block(r, seg, s, (uint32_t)i, seqs + (cnt ? from : 0), cnt, bl, bb);
    }
    sodium_memzero(s, sizeof s);
}

/* Compacts batches ids[0..nb) (one generation) into a segment in state
 * `state`. A live segment holds the batches' postings and the batches
 * become compacted; a building or merged one (phantom) holds postings that
 * name, for each keyword, messages without it, and the batches are left
 * alone: a search that read it would return them. */
static void make_segment(troom *r, uint64_t id, int state, const uint32_t *ids, size_t nb)
{
    assert_true(r->ns < MAXS && nb <= 16 && nb > 0);
    tseg *sg = &r->s[r->ns];
    sg->id = id;
    sg->state = state;
    sg->gen = r->b[ids[0]].gen;
    sg->nb = nb;
    sg->first = UINT32_MAX;
    sg->last = 0;
    for (size_t i = 0; i < nb; i++) {
        sg->b[i] = ids[i];
        assert_int_equal(r->b[ids[i]].gen, sg->gen);
        if (ids[i] < sg->first) sg->first = ids[i];
        if (ids[i] > sg->last) sg->last = ids[i];
    }
    uint64_t *seqs = calloc(r->nmsg + 1, sizeof *seqs);
    sbuf all = {0}, bl = {0}, bb = {0};
    assert_non_null(seqs);
    sb_open(&all);
    sb_open(&bl);
    sb_open(&bb);
    uint64_t lo = UINT64_MAX, hi = 0;
    for (uint64_t q = 1; q <= r->nmsg; q++)
        for (size_t i = 0; i < nb; i++)
            if (r->batch[q] == ids[i]) {
                sb_num(&all, q);
                if (q < lo) lo = q;
                if (q > hi) hi = q;
            }
    assert_true(hi > 0);
    for (int w = 0; w < NWORDS; w++) {
        size_t n = 0;
        for (uint64_t q = r->nmsg; q >= 1; q--) {
            bool in = false;
            for (size_t i = 0; i < nb && !in; i++)
                in = r->batch[q] == ids[i];
            if (in && (state == 1) == ((r->mask[q] >> w & 1) != 0)) seqs[n++] = q;
        }
        if (n) store_postings(r, id, token(r, w, sg->last), seqs, n, &bl, &bb);
    }
    char sid[24], gen[16], st[8], first[16], last[16], mn[24], mx[24];
    snprintf(sid, sizeof sid, "%llu", (unsigned long long)id);
    snprintf(gen, sizeof gen, "%u", sg->gen);
    snprintf(st, sizeof st, "%d", state);
    snprintf(first, sizeof first, "%u", sg->first);
    snprintf(last, sizeof last, "%u", sg->last);
    snprintf(mn, sizeof mn, "%llu", (unsigned long long)lo);
    snprintf(mx, sizeof mx, "%llu", (unsigned long long)hi);
    const char *sv[] = {r->idtext, sid, gen, first, last, mn, mx, sb_close(&all), st};
    exec0("INSERT INTO search_segments(room_id, segment, gen, level, first_batch, last_batch, "
          "min_seq, max_seq, seqs, state) VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8, $9)",
          9, sv);
    if (bl.len > 1) {
        const char *bv[] = {r->idtext, sid, sb_close(&bl), sb_close(&bb)};
        exec0("INSERT INTO search_blocks(room_id, segment, label, body) "
              "SELECT $1, $2, l, b FROM unnest($3::bytea[], $4::bytea[]) AS u(l, b)",
              4, bv);
    }
    if (state == 1) {
        /* The compaction commit: the batches' entries go. */
        sbuf bs = {0};
        sb_open(&bs);
        for (size_t i = 0; i < nb; i++) {
            sb_num(&bs, ids[i]);
            r->b[ids[i]].state = 2;
            r->b[ids[i]].seg = (int)r->ns;
        }
        const char *dv[] = {r->idtext, sb_close(&bs)};
        exec0(
            "WITH d AS (DELETE FROM search_buckets WHERE room_id = $1 AND batch = ANY($2::int8[])) "
            "UPDATE search_batches SET state = 2 WHERE room_id = $1 AND batch = ANY($2::int8[])",
            2, dv);
        free(bs.p);
    }
    r->ns++;
    free(seqs);
    free(all.p);
    free(bl.p);
    free(bb.p);
}

/* Retracts seqs [from, to] that pick() accepts (all if NULL). */
static void retract_range(troom *r, uint64_t from, uint64_t to, bool (*pick)(void))
{
    sbuf seqs = {0};
    sb_open(&seqs);
    for (uint64_t q = from; q <= to; q++)
        if (!pick || pick()) {
            sb_num(&seqs, q);
            r->retracted[q] = true;
        }
    const char *v[] = {r->idtext, sb_close(&seqs)};
    exec0("UPDATE messages SET retracted_at = now(), payload = '\\x' "
          "WHERE room_id = $1 AND seq = ANY($2::int8[])",
          2, v);
    free(seqs.p);
}

static void retract(troom *r, uint64_t seq)
{
    retract_range(r, seq, seq, NULL);
}

static bool three_percent(void)
{
    return rnd(100) < 3;
}

/* ---- queries ---- */

typedef struct tquery {
    int words[SE_MAX_KEYWORDS];
    size_t nw;
    uint64_t hi;
    unsigned gens; /* bit g: covers of generation g */
} tquery;

/* Would a search with hi reach message q (index-wise)? */
static bool reachable(const troom *r, const tquery *tq, uint64_t q)
{
    uint32_t b = r->batch[q];
    if (b == 0 || b > tq->hi || !(tq->gens >> r->b[b].gen & 1)) return false;
    if (r->b[b].state != 2) return true;
    const tseg *sg = &r->s[r->b[b].seg];
    return sg->state == 1 && sg->last <= tq->hi;
}

/* The plaintext truth, newest first. */
static size_t truth(const troom *r, const tquery *tq, uint64_t *out)
{
    uint32_t want = 0;
    size_t n = 0;
    for (size_t i = 0; i < tq->nw; i++)
        want |= 1u << tq->words[i];
    for (uint64_t q = r->nmsg; q >= 1; q--)
        if ((r->mask[q] & want) == want && !r->retracted[q] && reachable(r, tq, q)) out[n++] = q;
    return n;
}

typedef struct built {
    se_query q;
    se_cover covers[SE_MAX_KEYWORDS][NGEN];
} built;

/* The searcher's side: per keyword, the minimal cover of [1, hi] of each
 * generation asked for, by the library. */
static built *build(troom *r, const tquery *tq, uint64_t before, unsigned max)
{
    built *bq = calloc(1, sizeof *bq);
    assert_non_null(bq);
    bq->q.room_id = r->id;
    bq->q.room = r->name;
    bq->q.hi = tq->hi;
    bq->q.before = before;
    bq->q.max = max;
    bq->q.nkeywords = tq->nw;
    for (size_t k = 0; k < tq->nw; k++) {
        size_t nc = 0;
        for (uint32_t g = 1; g <= NGEN; g++) {
            if (!(tq->gens >> g & 1)) continue;
            sr_sse_node nodes[SR_SSE_COVER_MAX];
            size_t n = sr_sse_cover(nodes, SR_SSE_COVER_MAX, root_of(r, tq->words[k], g), 1,
                                    (uint32_t)tq->hi);
            assert_true(n > 0);
            se_cover *c = &bq->covers[k][nc++];
            c->gen = g;
            c->nnodes = n;
            for (size_t i = 0; i < n; i++) {
                c->nodes[i].depth = nodes[i].depth;
                c->nodes[i].prefix = nodes[i].prefix;
                memcpy(c->nodes[i].key, nodes[i].key, 32);
            }
            sodium_memzero(nodes, sizeof nodes);
        }
        bq->q.keywords[k] = (se_keyword){nc, bq->covers[k]};
    }
    return bq;
}

static void built_free(built *bq)
{
    for (size_t k = 0; k < SE_MAX_KEYWORDS; k++)
        for (size_t g = 0; g < NGEN; g++)
            se_cover_wipe(&bq->covers[k][g]);
    free(bq);
}

static void search_with(const se_query *q, se_cache *cache, se_result *res)
{
    char err[256];
    se_query cq = *q;
    cq.cache = cache;
    int rc = se_search(g_pg, &cq, res, err, sizeof err);
    if (rc != SE_OK) fail_msg("se_search: %d %s", rc, err);
    assert_int_equal(PQtransactionStatus(g_pg), PQTRANS_IDLE);
    assert_int_equal(PQpipelineStatus(g_pg), PQ_PIPELINE_OFF);
}

static unsigned long long g_cached_searches, g_cached_round_trips;

/* The search without a cache in *res; with the tiny and the roomy cache
 * it must give the same answer (the roomy one's round trips counted). */
static void search_ok(const se_query *q, se_result *res)
{
    se_result tiny, roomy;
    search_with(q, NULL, res);
    search_with(q, g_tiny, &tiny);
    search_with(q, g_cache, &roomy);
    g_cached_searches++;
    g_cached_round_trips += roomy.round_trips;
    for (const se_result *c = &tiny; c; c = c == &tiny ? &roomy : NULL) {
        assert_int_equal(c->n, res->n);
        assert_memory_equal(c->seqs, res->seqs, res->n * sizeof res->seqs[0]);
        assert_int_equal(c->complete, res->complete);
        assert_int_equal(c->last_batch, res->last_batch);
        assert_int_equal(c->corrupt_blocks, res->corrupt_blocks);
    }
}

static unsigned long long g_searches, g_round_trips;

/* Pages through the query with before/max until complete; the pages
 * together are exactly the truth, each full but the last, and complete
 * exactly on the last. Then a few random before values. */
static void check_query(troom *r, const tquery *tq, unsigned max)
{
    uint64_t *want = calloc(r->nmsg + 1, sizeof *want);
    assert_non_null(want);
    size_t nwant = truth(r, tq, want), pos = 0;
    uint64_t before = 0;
    se_result res;
    for (;;) {
        built *bq = build(r, tq, before, max);
        search_ok(&bq->q, &res);
        built_free(bq);
        g_searches++;
        g_round_trips += res.round_trips;
        assert_int_equal(res.last_batch, r->nb);
        assert_int_equal(res.corrupt_blocks, 0);
        assert_true(res.n <= max && pos + res.n <= nwant);
        for (size_t i = 0; i < res.n; i++)
            if (res.seqs[i] != want[pos + i])
                fail_msg("%s… hi %llu before %llu max %u: result %zu is %llu, want %llu",
                         g_words[tq->words[0]], (unsigned long long)tq->hi,
                         (unsigned long long)before, max, pos + i, (unsigned long long)res.seqs[i],
                         (unsigned long long)want[pos + i]);
        pos += res.n;
        assert_int_equal(res.complete, pos == nwant);
        if (res.complete) break;
        assert_int_equal(res.n, max);
        before = res.seqs[res.n - 1];
    }
    for (int i = 0; i < 3; i++) {
        before = 1 + rnd((uint32_t)r->nmsg + 1);
        built *bq = build(r, tq, before, max);
        search_ok(&bq->q, &res);
        built_free(bq);
        size_t from = 0;
        while (from < nwant && want[from] >= before)
            from++;
        size_t expect = nwant - from < max ? nwant - from : max;
        assert_int_equal(res.n, expect);
        for (size_t k = 0; k < expect; k++)
            assert_int_equal(res.seqs[k], want[from + k]);
        assert_int_equal(res.complete, from + expect == nwant);
    }
    free(want);
}

static int batch_state(troom *r, uint32_t b)
{
    char bt[16];
    snprintf(bt, sizeof bt, "%u", b);
    const char *v[] = {r->idtext, bt};
    PGresult *res =
        exec("SELECT state FROM search_batches WHERE room_id = $1 AND batch = $2", 2, v);
    assert_int_equal(PQntuples(res), 1);
    int st = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    return st;
}

/* ---- the generated corpus ---- */

static troom *build_corpus(void)
{
    enum { N = 3000, WRITERS = 4 };
    init_words();
    troom *r = room_new("corpus@rooms.localhost", N);
    uint32_t cur[WRITERS] = {0}, left[WRITERS] = {0}, gen = 1;
    for (uint64_t q = 1; q <= N; q++) {
        if (q == N * 3 / 5) {
            /* A new generation seals every open batch. */
            gen = 2;
            for (int w = 0; w < WRITERS; w++) {
                if (cur[w]) r->b[cur[w]].state = 1;
                cur[w] = 0;
            }
        }
        int w = (int)rnd(WRITERS);
        if (!cur[w] || left[w] == 0) {
            if (cur[w]) r->b[cur[w]].state = 1;
            cur[w] = take_batch(r, gen);
            left[w] = 20 + rnd(80);
        }
        left[w]--;
        /* w00 in about 60% of the messages, w29 in about 2%. */
        uint32_t mask = 0;
        for (int k = 0; k < 30; k++)
            if (rnd(1000) < 600u / (unsigned)(k + 1)) mask |= 1u << k;
        index_message(r, q, cur[w], mask);
    }
    /* One message holds "solo": add its entry with the next counter. */
    uint64_t solo = 1 + rnd(N);
    unsigned char label[16];
    uint32_t sb = r->batch[solo];
    sr_sse_label(label, token(r, W_SOLO, sb), r->b[sb].counter[W_SOLO]++);
    add_entry(r, sb, label, solo);
    r->mask[solo] |= 1u << W_SOLO;
    store_batches(r);

    /* Compaction: two live segments of generation 1, one of generation 2,
     * each of 8 sealed batches oldest first; one building and one merged
     * phantom over the first segment's batches. */
    uint32_t ids[3][8];
    size_t got[3] = {0};
    for (uint32_t b = 1; b <= r->nb; b++) {
        int which = r->b[b].gen == 1 ? (got[0] < 8 ? 0 : 1) : 2;
        if (r->b[b].state == 1 && got[which] < 8) ids[which][got[which]++] = b;
    }
    assert_int_equal(got[0], 8);
    assert_int_equal(got[1], 8);
    assert_true(got[2] >= 4);
    make_segment(r, 9000 + (uint64_t)r->id * 10 + 1, 0, ids[0], got[0]);
    make_segment(r, 9000 + (uint64_t)r->id * 10 + 2, 2, ids[0], got[0]);
    make_segment(r, 9000 + (uint64_t)r->id * 10 + 3, 1, ids[0], got[0]);
    make_segment(r, 9000 + (uint64_t)r->id * 10 + 4, 1, ids[1], got[1]);
    make_segment(r, 9000 + (uint64_t)r->id * 10 + 5, 1, ids[2], got[2]);
    retract_range(r, 1, N, three_percent);
    return r;
}

static void test_corpus_truth(void **state)
{
    (void)state;
    troom *r = build_corpus();
    /* The first search reaches up to the lowest open batch only: that one
     * is sealed, the open ones above it stay open. */
    uint32_t low_open = 0, open_above = 0;
    for (uint32_t b = r->nb; b >= 1; b--)
        if (r->b[b].state == 0) low_open = b;
    for (uint32_t b = low_open + 1; b <= r->nb; b++)
        open_above += r->b[b].state == 0;
    assert_true(low_open > 0 && open_above > 0);
    tquery first = {{0}, 1, low_open, 6};
    check_query(r, &first, 50);
    assert_int_equal(batch_state(r, low_open), 1);
    for (uint32_t b = low_open + 1; b <= r->nb; b++)
        assert_int_equal(batch_state(r, b), r->b[b].state);

    /* Every keyword at the full hi, both generations; small pages for the
     * rarer ones. */
    for (int w = 0; w < NWORDS; w++) {
        tquery tq = {{w}, 1, r->nb, 6};
        check_query(r, &tq, w >= 10 ? 7 : w % 2 ? 200 : 50);
    }
    for (uint32_t b = 1; b <= r->nb; b++)
        assert_int_equal(batch_state(r, b), r->b[b].state == 2 ? 2 : 1);
    /* Conjunctions: common with common, with rare, with solo and none;
     * repeated keywords; all eight. */
    const int conj[][SE_MAX_KEYWORDS] = {
        {0, 1},    {0, 29},     {5, 7},
        {0, 1, 2}, {1, W_SOLO}, {0, W_NONE},
        {3, 3},    {2, 0, 1},   {0, 1, 2, 3, 4, 5, 6, 7},
    };
    const size_t nconj[] = {2, 2, 2, 3, 2, 2, 2, 3, 8};
    for (size_t i = 0; i < sizeof nconj / sizeof nconj[0]; i++) {
        tquery tq = {{0}, nconj[i], r->nb, 6};
        memcpy(tq.words, conj[i], sizeof tq.words);
        check_query(r, &tq, i % 2 ? 7 : 50);
    }
    /* One generation only; a hi in the middle (segments past it are not
     * reached); a hi that leaves out only the newest batches. */
    tquery g1 = {{1}, 1, r->nb, 2}, g2 = {{0, 2}, 2, r->nb, 4};
    check_query(r, &g1, 50);
    check_query(r, &g2, 50);
    for (uint32_t hi = 3; hi < r->nb; hi += r->nb / 5) {
        tquery mid = {{0}, 1, hi, 6}, mid2 = {{1, 4}, 2, hi, 6};
        check_query(r, &mid, 50);
        check_query(r, &mid2, 20);
    }
    /* Retracting a message after it was found: never again. */
    tquery w0 = {{0}, 1, r->nb, 6};
    se_result res;
    built *bq = build(r, &w0, 0, 5);
    search_ok(&bq->q, &res);
    assert_int_equal(res.n, 5);
    retract(r, res.seqs[0]);
    retract(r, res.seqs[2]);
    se_result again;
    search_ok(&bq->q, &again);
    built_free(bq);
    for (size_t i = 0; i < again.n; i++)
        assert_true(again.seqs[i] != res.seqs[0] && again.seqs[i] != res.seqs[2]);
    check_query(r, &w0, 50);
    tquery w25 = {{25}, 1, r->nb, 6};
    check_query(r, &w25, 1);
    fprintf(stderr,
            "corpus: %u batches, %llu searches, %.2f round trips each (%.2f with the cache)\n",
            r->nb, g_searches, (double)g_round_trips / (double)g_searches,
            (double)g_cached_round_trips / (double)g_cached_searches);
    room_free(r);
}

/* Retracting most of what a page would hold makes the evaluation read
 * further. The first round brings the room's retractions, so the page's
 * candidates are known dead before anything is read: no second look. The
 * pages are still the truth. */
static void test_retracted_page(void **state)
{
    (void)state;
    init_words();
    troom *r = room_new("retract@rooms.localhost", 1200);
    uint32_t b1 = take_batch(r, 1), b2 = take_batch(r, 1);
    for (uint64_t q = 1; q <= 1200; q++)
        index_message(r, q, q <= 1000 ? b1 : b2, 1u);
    r->b[b1].state = r->b[b2].state = 1;
    store_batches(r);
    make_segment(r, 8000 + (uint64_t)r->id, 1, &b1, 1);
    /* The whole batch and the segment's newest 200. */
    retract_range(r, 801, 1200, NULL);
    tquery tq = {{0}, 1, 2, 2};
    /* The entries and the segment's first blocks would fill the page but
     * are all retracted: the segment is read further. */
    built *bq = build(r, &tq, 0, 50);
    se_result res;
    search_ok(&bq->q, &res);
    built_free(bq);
    assert_int_equal(res.n, 50);
    assert_int_equal(res.seqs[0], 800);
    assert_int_equal(res.seqs[49], 751);
    assert_false(res.complete);
    assert_int_equal(res.restarts, 0);
    check_query(r, &tq, 50);
    check_query(r, &tq, 200);
    room_free(r);
}

/* More retractions than the first round fetches: the page's candidates
 * are checked one by one instead, still exact. */
static void test_many_retractions(void **state)
{
    (void)state;
    init_words();
    troom *r = room_new("retract-many@rooms.localhost", 3000);
    uint32_t b1 = take_batch(r, 1), b2 = take_batch(r, 1);
    for (uint64_t q = 1; q <= 3000; q++)
        index_message(r, q, q <= 2000 ? b1 : b2, q % 3 ? 1u : 3u);
    r->b[b1].state = r->b[b2].state = 1;
    store_batches(r);
    make_segment(r, 8100 + (uint64_t)r->id, 1, &b1, 1);
    retract_range(r, 1801, 2990, NULL); /* 1,190 > RETRACTED_MAX */
    tquery tq = {{0}, 1, 2, 2}, both = {{0, 1}, 2, 2, 2};
    built *bq = build(r, &tq, 0, 50);
    se_result res;
    search_ok(&bq->q, &res);
    built_free(bq);
    assert_int_equal(res.n, 50);
    assert_int_equal(res.seqs[0], 3000);
    assert_int_equal(res.seqs[9], 2991);
    assert_int_equal(res.seqs[10], 1800);
    assert_int_equal(res.seqs[49], 1761);
    check_query(r, &tq, 50);
    check_query(r, &tq, 200);
    check_query(r, &both, 20);
    room_free(r);
}

/* A cached listing that a compaction has since changed: the first round's
 * probes are thrown away, the search is still exact, and it is no restart;
 * blocks cached from a segment later merged away are never used. */
static void test_cache_across_compaction(void **state)
{
    (void)state;
    init_words();
    troom *r = room_new("cache@rooms.localhost", 2400);
    uint32_t ids[6];
    for (uint64_t q = 1; q <= 2400; q++) {
        uint32_t b = (uint32_t)((q - 1) / 400) + 1;
        if (b > r->nb) ids[b - 1] = take_batch(r, 1);
        index_message(r, q, b, q % 4 ? 1u : 3u);
    }
    for (uint32_t b = 1; b <= r->nb; b++)
        r->b[b].state = 1;
    store_batches(r);
    make_segment(r, 8200 + (uint64_t)r->id, 1, ids, 2);
    se_cache *c = se_cache_new(1u << 20);
    assert_non_null(c);
    tquery tq = {{0}, 1, r->nb, 2}, both = {{0, 1}, 2, r->nb, 2};
    built *bq = build(r, &tq, 0, 50), *bb = build(r, &both, 0, 200);
    tquery none = {{5}, 1, r->nb, 2};
    built *bn = build(r, &none, 0, 50);
    se_result cold, warm, res, plain;
    /* Cold: the first round can only read the listing. Warm: it probes
     * with the listing the cache kept and blocks come from memory. */
    search_with(&bq->q, c, &cold);
    search_with(&bb->q, c, &warm);
    search_with(&bq->q, c, &warm);
    assert_true(warm.round_trips < cold.round_trips);
    assert_int_equal(warm.n, cold.n);
    assert_memory_equal(warm.seqs, cold.seqs, cold.n * sizeof cold.seqs[0]);
    /* A word in no message: one round trip settles it. */
    search_with(&bn->q, c, &warm);
    assert_int_equal(warm.round_trips, 1);
    assert_int_equal(warm.n, 0);
    built_free(bn);
    /* A compaction commits: batches 3 and 4 become a segment. */
    make_segment(r, 8300 + (uint64_t)r->id, 1, ids + 2, 2);
    search_with(&bq->q, c, &res);
    search_with(&bq->q, NULL, &plain);
    assert_int_equal(res.restarts, 0);
    assert_int_equal(res.n, plain.n);
    assert_memory_equal(res.seqs, plain.seqs, plain.n * sizeof plain.seqs[0]);
    check_query(r, &tq, 50);
    check_query(r, &both, 200);
    built_free(bq);
    built_free(bb);
    se_cache_stats st;
    se_cache_get_stats(c, &st);
    assert_true(st.hits > 0);
    /* The live batches were mirrored: a frequent word's newest page then
     * needs no entry read, and still comes out right. */
    assert_true(st.mirrors >= 2);
    built *bf = build(r, &tq, 0, 50);
    search_with(&bf->q, c, &warm);
    search_with(&bf->q, NULL, &plain);
    built_free(bf);
    assert_int_equal(warm.round_trips, 1);
    assert_int_equal(warm.n, plain.n);
    assert_memory_equal(warm.seqs, plain.seqs, plain.n * sizeof plain.seqs[0]);
    se_cache_free(c);
    room_free(r);
}

/* ---- forward privacy ---- */

static void test_forward_privacy(void **state)
{
    (void)state;
    init_words();
    troom *r = room_new("fwd@rooms.localhost", 20);
    uint32_t b1 = take_batch(r, 1);
    for (uint64_t q = 1; q <= 5; q++)
        index_message(r, q, b1, 1u << 3);
    store_batches(r);
    assert_int_equal(batch_state(r, b1), 0);
    tquery tq = {{3}, 1, 1, 2};
    built *bq = build(r, &tq, 0, 50);
    se_result res;
    search_ok(&bq->q, &res);
    assert_int_equal(res.n, 5);
    assert_true(res.complete);
    assert_int_equal(res.last_batch, 1);
    /* Reached, so sealed: the stanza layer refuses further entries. */
    assert_int_equal(batch_state(r, b1), 1);
    r->b[b1].state = 1;

    /* A new batch 2 with more messages holding the keyword. */
    uint32_t b2 = take_batch(r, 1);
    for (uint64_t q = 6; q <= 9; q++)
        index_message(r, q, b2, 1u << 3);
    store_batches(r);
    /* The same search (hi = 1) does not reach batch 2 nor seal it, and
     * says a newer batch exists. */
    search_ok(&bq->q, &res);
    built_free(bq);
    assert_int_equal(res.n, 5);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(res.seqs[i], 5 - i);
    assert_int_equal(res.last_batch, 2);
    assert_int_equal(batch_state(r, b2), 0);
    /* Even nodes reaching past hi are refused, so batch 2's tokens are
     * never derived for a search with hi = 1. */
    tq.hi = 2;
    bq = build(r, &tq, 0, 50);
    bq->q.hi = 1;
    char err[128];
    assert_int_equal(se_search(g_pg, &bq->q, &res, err, sizeof err), SE_ERR_BAD_QUERY);
    assert_int_equal(batch_state(r, b2), 0);
    bq->q.hi = 2;
    search_ok(&bq->q, &res);
    built_free(bq);
    assert_int_equal(res.n, 9);
    assert_int_equal(batch_state(r, b2), 1);
    room_free(r);
}

/* A search whose cached listing shows every batch <= hi sealed skips
 * the seal; one that cannot know seals, and neither reaches past hi. */
static void test_seal_skipped(void **state)
{
    (void)state;
    init_words();
    troom *r = room_new("skip@rooms.localhost", 20);
    uint32_t b1 = take_batch(r, 1);
    for (uint64_t q = 1; q <= 5; q++)
        index_message(r, q, b1, 1u << 4);
    store_batches(r);
    se_cache *c = se_cache_new(1u << 20);
    assert_non_null(c);
    tquery tq = {{4}, 1, 1, 2};
    built *bq = build(r, &tq, 0, 50);
    se_result res;
    search_with(&bq->q, c, &res);
    assert_false(res.seal_skipped);
    assert_int_equal(res.n, 5);
    assert_int_equal(batch_state(r, b1), 1);
    r->b[b1].state = 1;
    /* Batch 2, open, with more of the word: hi = 1 still reaches only
     * batch 1, sealed, so the seal is skipped, and the room's last batch
     * comes from the round. */
    uint32_t b2 = take_batch(r, 1);
    for (uint64_t q = 6; q <= 9; q++)
        index_message(r, q, b2, 1u << 4);
    store_batches(r);
    search_with(&bq->q, c, &res);
    assert_true(res.seal_skipped);
    assert_true(res.listing_trusted);
    assert_int_equal(res.round_trips, 1);
    assert_int_equal(res.last_batch, 2);
    assert_int_equal(res.n, 5);
    assert_int_equal(batch_state(r, b2), 0);
    /* A retraction bumps the room's search version (sql/010): the next
     * search may not trust the cached list of retractions, reads it again
     * and drops the message; the one after trusts the new list. */
    retract(r, 3);
    search_with(&bq->q, c, &res);
    assert_false(res.listing_trusted);
    assert_int_equal(res.n, 4);
    for (size_t i = 0; i < res.n; i++)
        assert_int_not_equal(res.seqs[i], 3);
    search_with(&bq->q, c, &res);
    assert_true(res.listing_trusted);
    assert_int_equal(res.round_trips, 1);
    assert_int_equal(res.n, 4);
    built_free(bq);
    /* hi = 2: no listing for it yet, so it seals batch 2 and finds all. */
    tq.hi = 2;
    bq = build(r, &tq, 0, 50);
    search_with(&bq->q, c, &res);
    assert_false(res.seal_skipped);
    assert_int_equal(res.n, 8);
    assert_int_equal(batch_state(r, b2), 1);
    r->b[b2].state = 1;
    search_with(&bq->q, c, &res);
    assert_true(res.seal_skipped);
    assert_true(res.listing_trusted);
    assert_int_equal(res.n, 8);
    /* A compaction commit bumps the version too: batch 1 becomes a
     * segment, which the next search must see, not the batch it lists. */
    make_segment(r, 8400 + (uint64_t)r->id, 1, &b1, 1);
    search_with(&bq->q, c, &res);
    assert_false(res.listing_trusted);
    assert_int_equal(res.n, 8);
    search_with(&bq->q, c, &res);
    assert_true(res.listing_trusted);
    assert_int_equal(res.n, 8);
    check_query(r, &tq, 50);
    /* Without a cache nothing proves the batches sealed. */
    search_with(&bq->q, NULL, &res);
    assert_false(res.seal_skipped);
    assert_int_equal(res.n, 8);
    built_free(bq);
    se_cache_free(c);
    room_free(r);
}

/* ---- blocks that do not open, or lie ---- */

static void test_corrupt_blocks(void **state)
{
    (void)state;
    init_words();
    troom *r = room_new("corrupt@rooms.localhost", 200);
    uint32_t b1 = take_batch(r, 1), b2 = take_batch(r, 1);
    for (uint64_t q = 1; q <= 200; q++) {
        /* w02 in 151..160 of batch 2, its counter skipping 5: the entries
         * after the gap are not the keyword's (spec: until a miss). */
        if (q == 156) r->b[b2].counter[2]++;
        index_message(r, q, q <= 150 ? b1 : b2, 1u | 2u | (q > 150 && q <= 160 ? 4u : 0));
    }
    r->b[b1].state = r->b[b2].state = 1;
    store_batches(r);
    uint64_t seg = 7000 + (uint64_t)r->id;
    make_segment(r, seg, 1, &b1, 1);
    /* w00: 150 postings in 5 blocks (8 with padding). Flip a bit of block
     * 1 (seqs 118..87). */
    unsigned char s[32], label[16];
    sr_sse_segment_key(s, token(r, 0, b1), seg);
    sr_sse_block_label(label, s, 1);
    char lhex[40], segt[24];
    sodium_bin2hex(lhex + 2, sizeof lhex - 2, label, 16);
    lhex[0] = '\\';
    lhex[1] = 'x';
    snprintf(segt, sizeof segt, "%llu", (unsigned long long)seg);
    const char *v[] = {r->idtext, segt, lhex};
    exec0("UPDATE search_blocks SET body = set_byte(body, 100, get_byte(body, 100) # 1) "
          "WHERE room_id = $1 AND segment = $2 AND label = $3",
          3, v);
    /* w01: block 0 replaced by an authentic block whose seqs lie above
     * the segment's max_seq (as a hostile member could write). */
    unsigned char body[SR_SSE_BLOCK_BYTES], s1[32];
    uint64_t lies[3] = {190, 180, 170};
    sr_sse_segment_key(s1, token(r, 1, b1), seg);
    sr_sse_block_label(label, s1, 0);
    assert_int_equal(sr_sse_block_seal(body, s1, seg, 0, lies, 3), SR_E2E_OK);
    char bhex[2 * SR_SSE_BLOCK_BYTES + 3];
    sodium_bin2hex(lhex + 2, sizeof lhex - 2, label, 16);
    sodium_bin2hex(bhex + 2, sizeof bhex - 2, body, sizeof body);
    bhex[0] = '\\';
    bhex[1] = 'x';
    const char *v1[] = {r->idtext, segt, lhex, bhex};
    exec0("UPDATE search_blocks SET body = $4 WHERE room_id = $1 AND segment = $2 AND label = $3",
          4, v1);
    sodium_memzero(s, sizeof s);
    sodium_memzero(s1, sizeof s1);

    tquery gap = {{2}, 1, 2, 2};
    built *gq = build(r, &gap, 0, 50);
    se_result gres;
    search_ok(&gq->q, &gres);
    built_free(gq);
    assert_int_equal(gres.n, 5);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(gres.seqs[i], 155 - i);
    assert_true(gres.complete);

    for (int w = 0; w < 2; w++) {
        tquery tq = {{w}, 1, 2, 2};
        built *bq = build(r, &tq, 0, 200);
        se_result res;
        search_ok(&bq->q, &res);
        built_free(bq);
        assert_int_equal(res.corrupt_blocks, 1);
        assert_true(res.complete);
        /* Batch 2's 50, then the segment less the bad block's 32. */
        size_t k = 0;
        for (uint64_t q = 200; q >= 1; q--) {
            bool bad = w == 0 ? q >= 87 && q <= 118 : q >= 119 && q <= 150;
            if (bad) continue;
            assert_true(k < res.n);
            assert_int_equal(res.seqs[k], q);
            k++;
        }
        assert_int_equal(k, res.n);
    }
    room_free(r);
}

/* ---- refusals and the connection ---- */

static void test_parse_and_validate(void **state)
{
    (void)state;
    unsigned char wire[SE_NODE_WIRE * (SE_MAX_NODES + 1)];
    se_cover c;
    randombytes_buf(wire, sizeof wire);
    wire[0] = 7;
    wire[1] = 0x01;
    wire[2] = 0x02;
    wire[3] = 0x03;
    wire[4] = 0x04;
    assert_true(se_parse_cover(wire, SE_NODE_WIRE, &c));
    assert_int_equal(c.nnodes, 1);
    assert_int_equal(c.nodes[0].depth, 7);
    assert_int_equal(c.nodes[0].prefix, 0x01020304);
    assert_memory_equal(c.nodes[0].key, wire + 5, 32);
    assert_true(se_parse_cover(wire, SE_NODE_WIRE * SE_MAX_NODES, &c));
    assert_int_equal(c.nnodes, SE_MAX_NODES);
    assert_memory_equal(c.nodes[63].key, wire + 63 * SE_NODE_WIRE + 5, 32);
    assert_false(se_parse_cover(wire, 0, &c));
    assert_int_equal(c.nnodes, 0);
    assert_false(se_parse_cover(wire, SE_NODE_WIRE - 1, &c));
    assert_false(se_parse_cover(wire, SE_NODE_WIRE + 1, &c));
    assert_false(se_parse_cover(wire, SE_NODE_WIRE * (SE_MAX_NODES + 1), &c));
    assert_false(se_parse_cover(NULL, SE_NODE_WIRE, &c));
    se_cover_wipe(&c);
    assert_true(sodium_is_zero((const unsigned char *)&c, sizeof c));

    /* A good query: [1, 100] as the library covers it, and each way to
     * spoil it. */
    unsigned char root[32];
    sr_sse_node nodes[SR_SSE_COVER_MAX];
    randombytes_buf(root, sizeof root);
    size_t n = sr_sse_cover(nodes, SR_SSE_COVER_MAX, root, 1, 100);
    se_cover covers[SE_MAX_COVERS + 1];
    memset(covers, 0, sizeof covers);
    for (size_t i = 0; i <= SE_MAX_COVERS; i++) {
        covers[i].gen = 1;
        covers[i].nnodes = n;
        for (size_t j = 0; j < n; j++) {
            covers[i].nodes[j].depth = nodes[j].depth;
            covers[i].nodes[j].prefix = nodes[j].prefix;
            memcpy(covers[i].nodes[j].key, nodes[j].key, 32);
        }
    }
    sodium_memzero(nodes, sizeof nodes);
    se_query q = {.room_id = 1, .hi = 100, .max = 50, .nkeywords = 1};
    q.keywords[0] = (se_keyword){1, covers};
    assert_null(se_validate(&q, 100));
    assert_null(se_validate(&q, 1000));
    q.nkeywords = SE_MAX_KEYWORDS;
    for (size_t k = 0; k < SE_MAX_KEYWORDS; k++)
        q.keywords[k] = (se_keyword){SE_MAX_COVERS, covers};
    assert_null(se_validate(&q, 100));

#define REFUSED(expr, want)                                                                        \
    do {                                                                                           \
        se_query b = q;                                                                            \
        se_cover *bc = &covers[SE_MAX_COVERS];                                                     \
        se_cover saved = *bc;                                                                      \
        b.keywords[0] = (se_keyword){1, bc};                                                       \
        expr;                                                                                      \
        const char *why = se_validate(&b, 100);                                                    \
        assert_non_null(why);                                                                      \
        assert_string_equal(why, want);                                                            \
        *bc = saved;                                                                               \
    } while (0)
    REFUSED(b.nkeywords = 0, "a search has 1 to 8 keywords");
    REFUSED(b.nkeywords = SE_MAX_KEYWORDS + 1, "a search has 1 to 8 keywords");
    REFUSED(b.max = 0, "max must be 1 to 200");
    REFUSED(b.max = SE_MAX_RESULTS + 1, "max must be 1 to 200");
    REFUSED(b.hi = 0, "hi must be at least 1");
    REFUSED(b.hi = 0x100000000ull, "hi is beyond every batch id");
    REFUSED(b.hi = 101, "hi is beyond the room's last batch");
    REFUSED(b.keywords[0].ncovers = 0, "a keyword has 1 to 64 covers");
    REFUSED(b.keywords[0] = ((se_keyword){SE_MAX_COVERS + 1, covers}),
            "a keyword has 1 to 64 covers");
    REFUSED(b.keywords[0].covers = NULL, "a keyword has 1 to 64 covers");
    REFUSED(bc->nnodes = 0, "a cover has 1 to 64 nodes");
    REFUSED(bc->nnodes = SE_MAX_NODES + 1, "a cover has 1 to 64 nodes");
    REFUSED(bc->nodes[0].depth = 33, "a node is deeper than 32");
    REFUSED((bc->nodes[0].depth = 3, bc->nodes[0].prefix = 8),
            "a node's prefix does not fit its depth");
    REFUSED((bc->nodes[0].depth = 0, bc->nodes[0].prefix = 0), "a node reaches outside [1, hi]");
    REFUSED((bc->nodes[0].depth = 32, bc->nodes[0].prefix = 0), "a node reaches outside [1, hi]");
    REFUSED((bc->nodes[n - 1].depth = 32, bc->nodes[n - 1].prefix = 101),
            "a node reaches outside [1, hi]");
    REFUSED((bc->nodes[n - 1].depth = 26, bc->nodes[n - 1].prefix = 1),
            "a node reaches outside [1, hi]"); /* [64, 127] */
#undef REFUSED
    assert_non_null(se_validate(NULL, 100));
    for (size_t i = 0; i <= SE_MAX_COVERS; i++)
        se_cover_wipe(&covers[i]);
}

static void test_refusals_on_the_database(void **state)
{
    (void)state;
    init_words();
    troom *r = room_new("refuse@rooms.localhost", 10);
    uint32_t b1 = take_batch(r, 1);
    for (uint64_t q = 1; q <= 10; q++)
        index_message(r, q, b1, 1u);
    store_batches(r);
    tquery tq = {{0}, 1, 1, 2};
    built *bq = build(r, &tq, 0, 50);
    se_result res;
    char err[256];

    /* hi past the room's last batch: refused (the cover itself is fine
     * against a hi of 2) and nothing sealed. */
    bq->q.hi = 2;
    assert_int_equal(se_search(g_pg, &bq->q, &res, err, sizeof err), SE_ERR_BAD_QUERY);
    assert_string_equal(err, "hi is beyond the room's last batch");
    assert_int_equal(batch_state(r, b1), 0);
    assert_int_equal(PQtransactionStatus(g_pg), PQTRANS_IDLE);
    assert_int_equal(PQpipelineStatus(g_pg), PQ_PIPELINE_OFF);
    /* No such room. */
    bq->q.hi = 1;
    bq->q.room_id = r->id + 1000;
    assert_int_equal(se_search(g_pg, &bq->q, &res, err, sizeof err), SE_ERR_NO_ROOM);
    assert_int_equal(PQtransactionStatus(g_pg), PQTRANS_IDLE);
    bq->q.room_id = r->id;
    /* A bad query never reaches the database. */
    bq->q.max = 0;
    assert_int_equal(se_search(g_pg, &bq->q, &res, err, sizeof err), SE_ERR_BAD_QUERY);
    assert_string_equal(err, "max must be 1 to 200");
    bq->q.max = 50;

    /* Statements dropped from the connection (DISCARD, a pooler): prepared
     * again. A new connection: prepared the first time. */
    search_ok(&bq->q, &res);
    assert_int_equal(res.n, 10);
    PQclear(PQexec(g_pg, "DEALLOCATE ALL"));
    search_ok(&bq->q, &res);
    assert_int_equal(res.n, 10);
    PGconn *fresh = pg_connect();
    assert_int_equal(se_search(fresh, &bq->q, &res, err, sizeof err), SE_OK);
    assert_int_equal(res.n, 10);
    /* Not idle: refused, untouched. */
    PQclear(PQexec(fresh, "BEGIN"));
    assert_int_equal(se_search(fresh, &bq->q, &res, err, sizeof err), SE_ERR_DB);
    assert_int_equal(PQtransactionStatus(fresh), PQTRANS_INTRANS);
    PQclear(PQexec(fresh, "ROLLBACK"));
    /* The connection dies under it: a database error, no crash. */
    PGresult *pid = PQexec(fresh, "SELECT pg_backend_pid()");
    char kill[96];
    snprintf(kill, sizeof kill, "SELECT pg_terminate_backend(%s)", PQgetvalue(pid, 0, 0));
    PQclear(pid);
    assert_int_equal(admin_exec(kill), 0);
    assert_int_equal(se_search(fresh, &bq->q, &res, err, sizeof err), SE_ERR_DB);
    PQfinish(fresh);
    built_free(bq);
    room_free(r);
}

/* The rules on the tables every store writes (sql/011 keeps them as
 * domains rather than CHECK constraints): each bad value is refused with
 * check_violation, and the row it aimed at is unchanged. */
static void test_store_table_rules(void **state)
{
    (void)state;
    troom *r = room_new("rules@rooms.localhost", 3);
    const char *v[] = {r->idtext};
    exec0("INSERT INTO search_batches (room_id, batch, gen, owner) VALUES ($1, 1, 1, 'a@x/r')", 1,
          v);
    static const char *const bad[] = {
        "INSERT INTO search_batches (room_id, batch, gen, owner) VALUES ($1, 0, 1, 'a@x/r')",
        "INSERT INTO search_batches (room_id, batch, gen, owner) VALUES ($1, 4294967296, 1, 'a')",
        "INSERT INTO search_batches (room_id, batch, gen, owner) VALUES ($1, 2, 0, 'a@x/r')",
        "UPDATE search_batches SET state = 3 WHERE room_id = $1 AND batch = 1",
        "UPDATE search_batches SET state = -1 WHERE room_id = $1 AND batch = 1",
        "UPDATE search_batches SET entries = entries - 1 WHERE room_id = $1 AND batch = 1",
        "UPDATE search_batches SET bucket_bits = 17 WHERE room_id = $1 AND batch = 1",
        "INSERT INTO search_pending (room_id, batch, seq, labels) "
        "VALUES ($1, 1, 0, decode(repeat('ab', 16), 'hex'))",
        "INSERT INTO search_pending (room_id, batch, seq, labels) "
        "VALUES ($1, 1, 1, decode(repeat('ab', 15), 'hex'))",
        "INSERT INTO search_pending (room_id, batch, seq, labels) VALUES ($1, 1, 1, ''::bytea)",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        PGresult *res = PQexecParams(g_pg, bad[i], 1, NULL, v, NULL, NULL, 0);
        const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (!code || strcmp(code, "23514") != 0)
            fail_msg("not refused as a check violation (%s): %s", code ? code : "accepted", bad[i]);
        PQclear(res);
    }
    PGresult *res = exec("SELECT state, entries, bucket_bits, "
                         "(SELECT count(*) FROM search_pending WHERE room_id = $1) "
                         "FROM search_batches WHERE room_id = $1",
                         1, v);
    assert_int_equal(PQntuples(res), 1);
    for (int f = 0; f < 4; f++)
        assert_string_equal(PQgetvalue(res, 0, f), "0");
    PQclear(res);
    /* What the store statement writes still goes in. */
    exec0("INSERT INTO search_pending (room_id, batch, seq, labels) "
          "VALUES ($1, 1, 1, decode(repeat('ab', 32), 'hex'))",
          1, v);
    exec0("UPDATE search_batches SET entries = entries + 2 WHERE room_id = $1 AND batch = 1", 1, v);
    room_free(r);
}

/* ---- the seqs a sealed batch keeps (sql/012) ---- */

/* Batch b's kept seqs as PostgreSQL prints them ("" for NULL), and the
 * same from its entries (the view unpacks the buckets). */
static void batch_seqs(const char *idtext, uint32_t b, char *kept, char *from_entries, size_t cap)
{
    char bt[16];
    snprintf(bt, sizeof bt, "%u", b);
    const char *v[] = {idtext, bt};
    PGresult *res = exec("SELECT seqs::text, (SELECT array_agg(DISTINCT e.seq ORDER BY e.seq)::text "
                         "FROM search_entries e WHERE e.room_id = $1 AND e.batch = $2) "
                         "FROM search_batches WHERE room_id = $1 AND batch = $2",
                         2, v);
    assert_int_equal(PQntuples(res), 1);
    snprintf(kept, cap, "%s", PQgetvalue(res, 0, 0));
    snprintf(from_entries, cap, "%s", PQgetvalue(res, 0, 1));
    PQclear(res);
}

static void test_sealed_batch_keeps_seqs(void **state)
{
    (void)state;
    init_words();
    enum { N = 600 };
    troom *r = room_new("seqs@rooms.localhost", N);
    uint32_t b[3];
    for (int i = 0; i < 3; i++)
        b[i] = take_batch(r, 2);
    /* Interleaved writers; 8 entries or more a message, and more than
     * one flush, so some messages span two pending rows. */
    for (uint64_t q = 1; q <= N; q++)
        index_message(r, q, b[q * 7 % 3], (uint32_t)(q * 2654435761u) & 0x3ff);
    r->b[b[0]].state = 1;
    r->b[b[1]].state = 1;
    store_batches(r);
    static char kept[8192], want[8192], from_entries[8192];
    for (int i = 0; i < 3; i++) {
        size_t n = 0;
        n += (size_t)snprintf(want + n, sizeof want - n, "{");
        for (uint64_t q = 1; q <= N; q++)
            if (r->batch[q] == b[i])
                n += (size_t)snprintf(want + n, sizeof want - n, "%s%llu", n > 1 ? "," : "",
                                      (unsigned long long)q);
        snprintf(want + n, sizeof want - n, "}");
        batch_seqs(r->idtext, b[i], kept, from_entries, sizeof kept);
        assert_string_equal(from_entries, want);
        /* Sealed: kept in order; open: nothing kept yet. */
        assert_string_equal(kept, i < 2 ? want : "");
    }
    room_free(r);
}

/* ---- deleting what compaction retired (component/searchpurge.c) ---- */

extern const char search_purge_sql[];

/* One purge chunk: whether an item was queued, rows deleted. */
static void purge_once(long *queued, long *deleted)
{
    PGresult *res = exec(search_purge_sql, 0, NULL);
    assert_int_equal(PQntuples(res), 1);
    *queued = atol(PQgetvalue(res, 0, 0));
    *deleted = atol(PQgetvalue(res, 0, 1));
    PQclear(res);
}

static void test_purge_chunks(void **state)
{
    (void)state;
    troom *r = room_new("purge@rooms.localhost", 1);
    const char *v[] = {r->idtext};
    /* Segment 900 retired with 4,500 blocks, batch 800 compacted with
     * 1,500 buckets; segment 901 and batch 801 live, which must stay. */
    exec0("INSERT INTO search_blocks (room_id, segment, label, body) "
          "SELECT $1, s, decode(md5(s || '-' || g), 'hex'), decode(repeat('00', 274), 'hex') "
          "FROM generate_series(900, 901) s, generate_series(1, 4500) g",
          1, v);
    exec0("INSERT INTO search_buckets (room_id, batch, bucket, body) "
          "SELECT $1, b, k, decode(repeat('00', 24), 'hex') "
          "FROM generate_series(800, 801) b, generate_series(0, 1499) k",
          1, v);
    exec0("INSERT INTO search_purge (room_id, kind, id) VALUES ($1, 1, 900), ($1, 0, 800)", 1, v);
    /* Buckets first (kind 0 sorts first), a chunk at a time, then the
     * item leaves the queue with a chunk that found nothing; blocks the
     * same; then the queue is empty. */
    static const long want[][2] = {{1, 1000}, {1, 500}, {1, 0}, {1, 2000},
                                   {1, 2000}, {1, 500}, {1, 0}, {0, 0}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        long queued, deleted;
        purge_once(&queued, &deleted);
        if (queued != want[i][0] || deleted != want[i][1])
            fail_msg("chunk %zu: queued %ld deleted %ld, wanted %ld %ld", i, queued, deleted,
                     want[i][0], want[i][1]);
    }
    PGresult *res = exec("SELECT (SELECT count(*) FROM search_blocks WHERE room_id = $1 AND "
                         "segment = 901), (SELECT count(*) FROM search_blocks WHERE room_id = $1), "
                         "(SELECT count(*) FROM search_buckets WHERE room_id = $1 AND batch = 801), "
                         "(SELECT count(*) FROM search_buckets WHERE room_id = $1), "
                         "(SELECT count(*) FROM search_purge)",
                         1, v);
    assert_string_equal(PQgetvalue(res, 0, 0), "4500");
    assert_string_equal(PQgetvalue(res, 0, 1), "4500");
    assert_string_equal(PQgetvalue(res, 0, 2), "1500");
    assert_string_equal(PQgetvalue(res, 0, 3), "1500");
    assert_string_equal(PQgetvalue(res, 0, 4), "0");
    PQclear(res);
    room_free(r);
}

/* ---- migrations of the search tables ---- */

typedef struct olddb {
    char name[80], dir[40];
    char *conninfo;
    size_t nfiles;
    db *d;
    PGconn *c;
} olddb;

static const char *const g_migrations[] = {
    "001_init.sql",    "002_e2e.sql",          "003_dmkd.sql",         "004_archive.sql",
    "005_search.sql",  "006_undo.sql",         "007_search_speed.sql", "008_insert.sql",
    "009_buckets.sql", "010_search_version.sql", "011_store_checks.sql", "012_batch_seqs.sql",
    "013_stage_in_blocks.sql"};

/* A new database at schema version `version` (the first that many
 * migrations of sql/, linked into a directory of their own). */
static void olddb_open(olddb *o, size_t version)
{
    char sql[200], from[1200], to[1200], err[512];
    assert_true(version <= sizeof g_migrations / sizeof g_migrations[0]);
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "%s_v%zu", g_dbname, version);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", o->name);
    assert_int_equal(admin_exec(sql), 0);
    o->conninfo = pgt_conninfo_for(g_admin_conninfo, o->name);
    assert_non_null(o->conninfo);
    snprintf(o->dir, sizeof o->dir, "/tmp/sealroom-sql-XXXXXX");
    assert_non_null(mkdtemp(o->dir));
    for (o->nfiles = 0; o->nfiles < version; o->nfiles++) {
        snprintf(from, sizeof from, "%s/sql/%s", g_src, g_migrations[o->nfiles]);
        snprintf(to, sizeof to, "%s/%s", o->dir, g_migrations[o->nfiles]);
        assert_int_equal(symlink(from, to), 0);
    }
    o->d = db_new(o->conninfo);
    assert_non_null(o->d);
    assert_int_equal(db_connect_blocking(o->d, 10000, err, sizeof err), 0);
    if (db_migrate(o->d, o->dir, err, sizeof err) != 0) fail_msg("migrate: %s", err);
    o->c = PQconnectdb(o->conninfo);
    assert_int_equal(PQstatus(o->c), CONNECTION_OK);
    PQsetNoticeProcessor(o->c, pgt_quiet, NULL);
}

static void olddb_exec(olddb *o, const char *const *stmts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        PGresult *res = PQexec(o->c, stmts[i]);
        if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
            fail_msg("%s: %s", stmts[i], PQerrorMessage(o->c));
        PQclear(res);
    }
}

/* To the current version, with every migration of sql/. */
static void olddb_migrate(olddb *o)
{
    char dir[1100], err[512];
    snprintf(dir, sizeof dir, "%s/sql", g_src);
    if (db_migrate(o->d, dir, err, sizeof err) != 0) fail_msg("migrate: %s", err);
}

static void olddb_close(olddb *o)
{
    char sql[200], to[1200];
    PQfinish(o->c);
    db_free(o->d);
    for (size_t i = 0; i < o->nfiles; i++) {
        snprintf(to, sizeof to, "%s/%s", o->dir, g_migrations[i]);
        unlink(to);
    }
    rmdir(o->dir);
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", o->name);
    admin_exec(sql);
    free(o->conninfo);
}

static const char OLD_ROOM[] =
    "INSERT INTO rooms (room_id, name, roster_version, roster_head, search_gen) OVERRIDING "
    "SYSTEM VALUE VALUES (1, 'old@rooms.localhost', 0, decode(repeat('00', 32), 'hex'), 1)";

/* A database sealed under v11 gets its batches' seqs from v12. */
static void test_batch_seqs_migration(void **state)
{
    (void)state;
    olddb o;
    olddb_open(&o, 11);
    static const char *const setup[] = {
        OLD_ROOM,
        "INSERT INTO messages (room_id, seq, sender, nick, payload) "
        "SELECT 1, g, 'a@localhost', 'a', '\\x00' FROM generate_series(1, 9) g",
        "INSERT INTO search_batches (room_id, batch, gen, owner) VALUES (1, 1, 1, 'a@x/r'), "
        "(1, 2, 1, 'a@x/r')",
        "INSERT INTO search_pending (room_id, batch, seq, labels) "
        "SELECT 1, 1 + g % 2, g, decode(repeat(md5(g::text), 8), 'hex') "
        "FROM generate_series(1, 9) g",
        "UPDATE search_batches SET entries = 40 WHERE batch = 1",
        "UPDATE search_batches SET state = 1 WHERE batch = 1"};
    olddb_exec(&o, setup, sizeof setup / sizeof setup[0]);
    olddb_migrate(&o);
    PGresult *res = PQexec(o.c, "SELECT batch, state, seqs::text FROM search_batches ORDER BY batch");
    assert_int_equal(PQntuples(res), 2);
    assert_string_equal(PQgetvalue(res, 0, 2), "{2,4,6,8}");
    assert_string_equal(PQgetvalue(res, 1, 1), "0");
    assert_true(PQgetisnull(res, 1, 2));
    PQclear(res);
    /* And the open batch, sealed now, keeps its own. */
    res = PQexec(o.c, "UPDATE search_batches SET state = 1 WHERE batch = 2");
    PQclear(res);
    res = PQexec(o.c, "SELECT seqs::text FROM search_batches WHERE batch = 2");
    assert_string_equal(PQgetvalue(res, 0, 0), "{1,3,5,7,9}");
    PQclear(res);
    olddb_close(&o);
}

/* Blocks staged under v12 wait under their lease's segment after v13. */
static void test_staged_blocks_migration(void **state)
{
    (void)state;
    olddb o;
    olddb_open(&o, 12);
    static const char *const setup[] = {
        OLD_ROOM,
        "INSERT INTO search_leases (room_id, lease, segment, gen, level, holder, expires, "
        "first_batch, last_batch, batches, merged_segments, seqs) VALUES "
        "(1, 5, 77, 1, 1, 'a@x/r', now() + interval '1 hour', 1, 8, '{1,2,3,4,5,6,7,8}', "
        "'{}', '{1,2}')",
        "INSERT INTO search_blocks (room_id, segment, label, body) "
        "SELECT 1, 3, decode(md5('live' || g), 'hex'), decode(repeat('00', 274), 'hex') "
        "FROM generate_series(1, 4) g",
        "INSERT INTO search_staged (room_id, lease, label, body) "
        "SELECT 1, 5, decode(md5('staged' || g), 'hex'), decode(repeat('11', 274), 'hex') "
        "FROM generate_series(1, 6) g",
        /* A lease gone before the migration: its staging goes too. */
        "INSERT INTO search_staged (room_id, lease, label, body) "
        "SELECT 1, 6, decode(md5('orphan' || g), 'hex'), decode(repeat('22', 274), 'hex') "
        "FROM generate_series(1, 2) g"};
    olddb_exec(&o, setup, sizeof setup / sizeof setup[0]);
    olddb_migrate(&o);
    PGresult *res = PQexec(o.c, "SELECT segment, count(*), min(get_byte(body, 0)), "
                                "max(get_byte(body, 0)) FROM search_blocks GROUP BY segment "
                                "ORDER BY segment");
    assert_int_equal(PQntuples(res), 2);
    assert_string_equal(PQgetvalue(res, 0, 0), "3");
    assert_string_equal(PQgetvalue(res, 0, 1), "4");
    assert_string_equal(PQgetvalue(res, 1, 0), "77");
    assert_string_equal(PQgetvalue(res, 1, 1), "6");
    assert_string_equal(PQgetvalue(res, 1, 2), "17");
    assert_string_equal(PQgetvalue(res, 1, 3), "17");
    PQclear(res);
    res = PQexec(o.c, "SELECT to_regclass('search_staged') IS NULL");
    assert_string_equal(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    olddb_close(&o);
}

/* ---- speed of the common page ---- */

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static long clock_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Five live batches of 200 messages (the keyword in every fifth)
 * above a segment of older ones: the newest 50 for one keyword. */
static void test_newest_page_speed(void **state)
{
    (void)state;
    enum { RUNS = 200 };
    init_words();
    troom *r = room_new("speed@rooms.localhost", 1400);
    uint32_t old[2];
    for (uint64_t q = 1; q <= 1400; q++) {
        uint32_t b = (uint32_t)((q - 1) / 200) + 1;
        if (b > r->nb) take_batch(r, 1);
        index_message(r, q, b, (q % 5 == 0 ? 1u : 0) | 2u);
    }
    for (uint32_t b = 1; b <= r->nb; b++)
        r->b[b].state = 1;
    store_batches(r);
    old[0] = 1;
    old[1] = 2;
    make_segment(r, 6000 + (uint64_t)r->id, 1, old, 2);
    tquery tq = {{0}, 1, r->nb, 2};
    built *bq = build(r, &tq, 0, 50);
    se_result res;
    long t[RUNS];
    search_ok(&bq->q, &res); /* prepares the statements */
    long cpu = clock_us(CLOCK_PROCESS_CPUTIME_ID);
    for (int i = 0; i < RUNS; i++) {
        long t0 = clock_us(CLOCK_MONOTONIC);
        search_ok(&bq->q, &res);
        t[i] = clock_us(CLOCK_MONOTONIC) - t0;
    }
    cpu = (clock_us(CLOCK_PROCESS_CPUTIME_ID) - cpu) / RUNS;
    built_free(bq);
    qsort(t, RUNS, sizeof t[0], cmp_long);
    fprintf(stderr,
            "newest 50 of one keyword over %u batches and a segment: median %ld us, "
            "p90 %ld us (of which %ld us in this process), %u round trips\n",
            r->nb - 2, t[RUNS / 2], t[RUNS * 9 / 10], cpu, res.round_trips);
    uint64_t want[1401];
    size_t nwant = truth(r, &tq, want);
    assert_int_equal(res.n, 50);
    assert_memory_equal(res.seqs, want, 50 * sizeof want[0]);
    assert_false(res.complete);
    assert_true(nwant > 50);
    /* List, two rounds of entries (16 then 32 counters per batch), the
     * liveness with the commit. */
    assert_true(res.round_trips <= 4);
    room_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_validate), cmocka_unit_test(test_corpus_truth),
        cmocka_unit_test(test_retracted_page),     cmocka_unit_test(test_forward_privacy),
        cmocka_unit_test(test_corrupt_blocks),     cmocka_unit_test(test_refusals_on_the_database),
        cmocka_unit_test(test_newest_page_speed),  cmocka_unit_test(test_many_retractions),
        cmocka_unit_test(test_cache_across_compaction), cmocka_unit_test(test_seal_skipped),
        cmocka_unit_test(test_store_table_rules), cmocka_unit_test(test_sealed_batch_keeps_seqs),
        cmocka_unit_test(test_batch_seqs_migration), cmocka_unit_test(test_staged_blocks_migration),
        cmocka_unit_test(test_purge_chunks),
    };
    return cmocka_run_group_tests_name("searcheval", tests, group_setup, group_teardown);
}
