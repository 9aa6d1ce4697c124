/* The search cache (searchcache.h): a hash table of listings and opened
 * posting blocks with one least-recently-used list, bounded in bytes. */
#include "searchcache.h"

#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

enum { KIND_LISTING = 0, KIND_BLOCK = 1, KIND_ENTRY = 2, KIND_MIRROR = 3, KIND_WALK = 4 };

/* A mirrored entry; a mirror's rows are sorted by label. */
typedef struct mrow {
    unsigned char label[SSE_LABEL_BYTES];
    uint64_t seq;
} mrow;

/* A mirror is one allocation: this head, its n rows, then a directory of
 * 2^bits + 1 row indexes, dir[b] the first row whose label's top bits are
 * at least b. Labels are uniform (PRF outputs), so a bucket holds about
 * two rows and a probe touches a cache line or two, where a binary search
 * of the whole batch (tens of thousands of rows) took a cache miss per
 * step: the probes of a frequent word's walk, hundreds per page, spent
 * about a quarter of the component's time in them. Within its bucket a
 * probe still searches by halves, so rows a writer made share a prefix on
 * purpose cost it no more than before. */
typedef struct mhead {
    uint64_t n;
    uint32_t bits;
} mhead;

#define MIRROR_DIR_BITS_MAX 20

static mrow *mirror_rows(mhead *h)
{
    return (mrow *)(h + 1);
}

static uint32_t *mirror_dir(mhead *h)
{
    return (uint32_t *)(mirror_rows(h) + h->n);
}

static uint32_t label_top(const unsigned char label[SSE_LABEL_BYTES], uint32_t bits)
{
    uint32_t v = (uint32_t)label[0] << 24 | (uint32_t)label[1] << 16 | (uint32_t)label[2] << 8 |
                 (uint32_t)label[3];
    return bits ? v >> (32 - bits) : 0;
}

typedef struct entry {
    struct entry *hnext;         /* bucket chain */
    struct entry *older, *newer; /* LRU list */
    uint8_t kind;
    bool present;
    uint16_t n; /* seqs (block) */
    long long room;
    uint64_t segment; /* block: its segment; listing: hi */
    unsigned char label[SSE_LABEL_BYTES];
    size_t cost;
    size_t len;      /* listing bytes */
    void *rows;      /* listing */
    uint64_t seqs[]; /* block */
} entry;

struct se_cache {
    pthread_mutex_t mu;
    entry **buckets;
    size_t nbuckets, entries, mirrors, bytes, max_bytes;
    entry *oldest, *newest;
    uint64_t hits, misses, evictions;
};

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static size_t slot(const se_cache *c, int kind, long long room, uint64_t segment,
                   const unsigned char *label)
{
    uint64_t h = mix((uint64_t)room * 4 + (uint64_t)kind);
    if (kind == KIND_BLOCK || kind == KIND_ENTRY || kind == KIND_WALK) {
        uint64_t l;
        memcpy(&l, label, sizeof l);
        h = mix(h ^ mix(segment) ^ l);
    } else if (kind == KIND_MIRROR) {
        h = mix(h ^ mix(segment));
    }
    return (size_t)(h & (c->nbuckets - 1));
}

static bool same_key(const entry *e, int kind, long long room, uint64_t segment,
                     const unsigned char *label)
{
    if (e->kind != kind || e->room != room) return false;
    if (kind == KIND_LISTING) return true;
    if (kind == KIND_MIRROR) return e->segment == segment;
    return e->segment == segment && memcmp(e->label, label, SSE_LABEL_BYTES) == 0;
}

static entry **find(se_cache *c, int kind, long long room, uint64_t segment,
                    const unsigned char *label)
{
    entry **p = &c->buckets[slot(c, kind, room, segment, label)];
    while (*p && !same_key(*p, kind, room, segment, label))
        p = &(*p)->hnext;
    return p;
}

static void lru_unlink(se_cache *c, entry *e)
{
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    e->older = e->newer = NULL;
}

static void lru_push(se_cache *c, entry *e)
{
    e->older = c->newest;
    e->newer = NULL;
    if (c->newest)
        c->newest->newer = e;
    else
        c->oldest = e;
    c->newest = e;
}

/* e was found: it becomes the most recently used. */
static void hit(se_cache *c, entry *e)
{
    lru_unlink(c, e);
    lru_push(c, e);
    c->hits++;
}

static void entry_free(entry *e)
{
    if (e->rows) {
        sodium_memzero(e->rows, e->len);
        free(e->rows);
    }
    sodium_memzero(e, sizeof *e + (size_t)e->n * sizeof e->seqs[0]);
    free(e);
}

/* Takes e (found at *p) out of the table and frees it. */
static void drop(se_cache *c, entry **p)
{
    entry *e = *p;
    *p = e->hnext;
    lru_unlink(c, e);
    c->bytes -= e->cost;
    c->entries--;
    c->mirrors -= e->kind == KIND_MIRROR;
    entry_free(e);
}

static void evict_to(se_cache *c, size_t room_for)
{
    while (c->oldest && c->bytes + room_for > c->max_bytes) {
        entry *e = c->oldest;
        drop(c, find(c, e->kind, e->room, e->segment, e->label));
        c->evictions++;
    }
}

/* Doubles the buckets when the chains grow long; stays as it is when
 * memory runs out (lookups only get slower). */
static void maybe_grow(se_cache *c)
{
    if (c->entries < c->nbuckets) return;
    size_t n = c->nbuckets * 2;
    entry **b = calloc(n, sizeof *b);
    if (!b) return;
    entry **old = c->buckets;
    size_t oldn = c->nbuckets;
    c->buckets = b;
    c->nbuckets = n;
    for (size_t i = 0; i < oldn; i++)
        for (entry *e = old[i], *next; e; e = next) {
            next = e->hnext;
            size_t s = slot(c, e->kind, e->room, e->segment, e->label);
            e->hnext = b[s];
            b[s] = e;
        }
    free(old);
}

/* Files e under its key, replacing what was there. */
static void insert(se_cache *c, entry *e)
{
    entry **p = find(c, e->kind, e->room, e->segment, e->label);
    if (*p) drop(c, p);
    if (e->cost > c->max_bytes) {
        entry_free(e);
        return;
    }
    evict_to(c, e->cost);
    maybe_grow(c);
    p = &c->buckets[slot(c, e->kind, e->room, e->segment, e->label)];
    e->hnext = *p;
    *p = e;
    lru_push(c, e);
    c->bytes += e->cost;
    c->entries++;
    c->mirrors += e->kind == KIND_MIRROR;
}

se_cache *se_cache_new(size_t max_bytes)
{
    if (max_bytes == 0) return NULL;
    se_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->nbuckets = 1024;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    if (!c->buckets || pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c->buckets);
        free(c);
        return NULL;
    }
    c->max_bytes = max_bytes;
    return c;
}

void se_cache_free(se_cache *c)
{
    if (!c) return;
    while (c->oldest) {
        entry *e = c->oldest;
        drop(c, find(c, e->kind, e->room, e->segment, e->label));
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* A copy of e's rows (*len bytes), counted as a hit; NULL, counted as a
 * miss, when e is NULL or memory ran out. Called with the lock held. */
static void *copy_rows(se_cache *c, entry *e, size_t *len)
{
    void *out = e ? malloc(e->len ? e->len : 1) : NULL;
    *len = 0;
    if (!out) {
        c->misses++;
        return NULL;
    }
    memcpy(out, e->rows, e->len);
    *len = e->len;
    hit(c, e);
    return out;
}

void *se_cache_listing_get(se_cache *c, long long room, uint64_t hi, size_t *len)
{
    *len = 0;
    if (!c) return NULL;
    pthread_mutex_lock(&c->mu);
    entry *e = *find(c, KIND_LISTING, room, 0, NULL);
    void *out = copy_rows(c, e && e->segment == hi ? e : NULL, len);
    pthread_mutex_unlock(&c->mu);
    return out;
}

/* Files rows (len bytes, malloc'd, taken over: freed if not filed) as a
 * listing or a mirror. */
/* Files rows (malloc'd, taken over) under (kind, room, key) and, for the
 * kinds filed by label, label (NULL for the others). */
static void put_rows(se_cache *c, int kind, long long room, uint64_t key,
                     const unsigned char *label, void *rows, size_t len)
{
    entry *e = calloc(1, sizeof *e);
    if (!e) {
        free(rows);
        return;
    }
    e->kind = (uint8_t)kind;
    e->room = room;
    e->segment = key;
    if (label) memcpy(e->label, label, SSE_LABEL_BYTES);
    e->rows = rows;
    e->len = len;
    e->cost = sizeof *e + len;
    pthread_mutex_lock(&c->mu);
    insert(c, e);
    pthread_mutex_unlock(&c->mu);
}

void se_cache_listing_put(se_cache *c, long long room, uint64_t hi, const void *rows, size_t len)
{
    if (!c) return;
    void *copy = malloc(len ? len : 1);
    if (!copy) return;
    if (len) memcpy(copy, rows, len);
    put_rows(c, KIND_LISTING, room, hi, NULL, copy, len);
}

static int seqs_get(se_cache *c, int kind, long long room, uint64_t segment,
                    const unsigned char label[SSE_LABEL_BYTES], uint64_t *seqs, size_t *n)
{
    int rc = SE_CACHE_MISS;
    *n = 0;
    if (!c) return rc;
    pthread_mutex_lock(&c->mu);
    entry *e = *find(c, kind, room, segment, label);
    if (e) {
        rc = e->present ? SE_CACHE_BLOCK : SE_CACHE_NO_BLOCK;
        memcpy(seqs, e->seqs, e->n * sizeof *seqs);
        *n = e->n;
        hit(c, e);
    } else {
        c->misses++;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static void seqs_put(se_cache *c, int kind, long long room, uint64_t segment,
                     const unsigned char label[SSE_LABEL_BYTES], bool present, const uint64_t *seqs,
                     size_t n)
{
    if (!c || n > SSE_BLOCK_IDS || (!present && n)) return;
    entry *e = calloc(1, sizeof *e + n * sizeof e->seqs[0]);
    if (!e) return;
    e->kind = (uint8_t)kind;
    e->present = present;
    e->n = (uint16_t)n;
    e->room = room;
    e->segment = segment;
    memcpy(e->label, label, SSE_LABEL_BYTES);
    if (n) memcpy(e->seqs, seqs, n * sizeof *seqs);
    e->cost = sizeof *e + n * sizeof e->seqs[0];
    pthread_mutex_lock(&c->mu);
    insert(c, e);
    pthread_mutex_unlock(&c->mu);
}

int se_cache_block_get(se_cache *c, long long room, uint64_t segment,
                       const unsigned char label[SSE_LABEL_BYTES], uint64_t seqs[SSE_BLOCK_IDS],
                       size_t *n)
{
    return seqs_get(c, KIND_BLOCK, room, segment, label, seqs, n);
}

void se_cache_block_put(se_cache *c, long long room, uint64_t segment,
                        const unsigned char label[SSE_LABEL_BYTES], bool present,
                        const uint64_t *seqs, size_t n)
{
    seqs_put(c, KIND_BLOCK, room, segment, label, present, seqs, n);
}

int se_cache_entry_get(se_cache *c, long long room, uint64_t batch,
                       const unsigned char label[SSE_LABEL_BYTES], uint64_t *seq)
{
    size_t n;
    uint64_t v[1] = {0};
    int rc = seqs_get(c, KIND_ENTRY, room, batch, label, v, &n);
    *seq = rc == SE_CACHE_BLOCK && n == 1 ? v[0] : 0;
    return rc == SE_CACHE_BLOCK && n != 1 ? SE_CACHE_MISS : rc;
}

void se_cache_entry_put(se_cache *c, long long room, uint64_t batch,
                        const unsigned char label[SSE_LABEL_BYTES], uint64_t seq)
{
    seqs_put(c, KIND_ENTRY, room, batch, label, seq != 0, &seq, seq != 0);
}

static int cmp_mrow(const void *a, const void *b)
{
    return memcmp(((const mrow *)a)->label, ((const mrow *)b)->label, SSE_LABEL_BYTES);
}

int se_cache_mirror_probe(se_cache *c, long long room, uint64_t batch, uint64_t count,
                          const unsigned char label[SSE_LABEL_BYTES], uint64_t *seq)
{
    int rc = SE_CACHE_MISS;
    *seq = 0;
    if (!c) return rc;
    pthread_mutex_lock(&c->mu);
    entry *e = *find(c, KIND_MIRROR, room, batch, NULL);
    mhead *h = e ? e->rows : NULL;
    if (h && h->n == count) {
        const mrow *rows = mirror_rows(h);
        const uint32_t *dir = mirror_dir(h);
        uint32_t b = label_top(label, h->bits);
        size_t lo = dir[b], hi = dir[b + 1];
        rc = SE_CACHE_NO_BLOCK;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            int d = memcmp(rows[mid].label, label, SSE_LABEL_BYTES);
            if (d == 0) {
                *seq = rows[mid].seq;
                rc = SE_CACHE_BLOCK;
                break;
            }
            if (d < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        hit(c, e);
    } else {
        c->misses++;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

void se_cache_mirror_put(se_cache *c, long long room, uint64_t batch,
                         const unsigned char *labels, const uint64_t *seqs, size_t n)
{
    if (!c || n > c->max_bytes / 4 / sizeof(mrow) || n > UINT32_MAX) return;
    uint32_t bits = 0;
    while (bits < MIRROR_DIR_BITS_MAX && ((size_t)2 << bits) <= n / 2)
        bits++;
    size_t len = sizeof(mhead) + n * sizeof(mrow) + (((size_t)1 << bits) + 1) * sizeof(uint32_t);
    mhead *h = malloc(len);
    if (!h) return;
    h->n = n;
    h->bits = bits;
    mrow *rows = mirror_rows(h);
    for (size_t i = 0; i < n; i++) {
        memcpy(rows[i].label, labels + i * SSE_LABEL_BYTES, SSE_LABEL_BYTES);
        rows[i].seq = seqs[i];
    }
    qsort(rows, n, sizeof *rows, cmp_mrow);
    uint32_t *dir = mirror_dir(h);
    size_t i = 0;
    for (uint32_t b = 0; b < (uint32_t)1 << bits; b++) {
        while (i < n && label_top(rows[i].label, bits) < b)
            i++;
        dir[b] = (uint32_t)i;
    }
    dir[(size_t)1 << bits] = (uint32_t)n;
    put_rows(c, KIND_MIRROR, room, batch, NULL, h, len);
}

bool se_cache_walk_get(se_cache *c, long long room, uint64_t batch,
                       const unsigned char label0[SSE_LABEL_BYTES], uint64_t **seqs, size_t *n)
{
    *seqs = NULL;
    *n = 0;
    if (!c) return false;
    size_t len;
    pthread_mutex_lock(&c->mu);
    *seqs = copy_rows(c, *find(c, KIND_WALK, room, batch, label0), &len);
    pthread_mutex_unlock(&c->mu);
    *n = len / sizeof **seqs;
    return *seqs != NULL;
}

void se_cache_walk_put(se_cache *c, long long room, uint64_t batch,
                       const unsigned char label0[SSE_LABEL_BYTES], const uint64_t *seqs, size_t n)
{
    if (!c) return;
    uint64_t *rows = malloc(n ? n * sizeof *rows : 1);
    if (!rows) return;
    if (n) memcpy(rows, seqs, n * sizeof *rows);
    put_rows(c, KIND_WALK, room, batch, label0, rows, n * sizeof *rows);
}

void se_cache_drop_reads(se_cache *c)
{
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    for (entry *e = c->oldest, *next; e; e = next) {
        next = e->newer;
        if (e->kind == KIND_BLOCK || e->kind == KIND_ENTRY || e->kind == KIND_WALK)
            drop(c, find(c, e->kind, e->room, e->segment, e->label));
    }
    pthread_mutex_unlock(&c->mu);
}

void se_cache_get_stats(se_cache *c, se_cache_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    out->hits = c->hits;
    out->misses = c->misses;
    out->evictions = c->evictions;
    out->bytes = c->bytes;
    out->entries = c->entries;
    out->mirrors = c->mirrors;
    pthread_mutex_unlock(&c->mu);
}
