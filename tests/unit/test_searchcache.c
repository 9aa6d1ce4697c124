/* Unit tests of the search cache (component/searchcache.c): keys, the
 * byte bound and least-recently-used eviction, listings per room, known
 * absences, entries, mirrors of sealed batches and their directory,
 * dropping what searches read, and use from several threads at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "searchcache.h"

static void label_of(unsigned char l[SSE_LABEL_BYTES], unsigned i)
{
    memset(l, 0, SSE_LABEL_BYTES);
    memcpy(l, &i, sizeof i);
    l[SSE_LABEL_BYTES - 1] = 0x5a;
}

static void test_keys(void **state)
{
    (void)state;
    se_cache *c = se_cache_new(1u << 20);
    assert_non_null(c);
    unsigned char l[SSE_LABEL_BYTES], other[SSE_LABEL_BYTES];
    uint64_t seqs[SSE_BLOCK_IDS] = {30, 20, 10}, got[SSE_BLOCK_IDS];
    size_t n = 99;
    label_of(l, 1);
    label_of(other, 2);
    assert_int_equal(se_cache_block_get(c, 7, 100, l, got, &n), SE_CACHE_MISS);
    assert_int_equal(n, 0);
    se_cache_block_put(c, 7, 100, l, true, seqs, 3);
    se_cache_block_put(c, 7, 101, other, false, NULL, 0);
    assert_int_equal(se_cache_block_get(c, 7, 100, l, got, &n), SE_CACHE_BLOCK);
    assert_int_equal(n, 3);
    assert_memory_equal(got, seqs, 3 * sizeof seqs[0]);
    /* Another room, segment or label is another key. */
    assert_int_equal(se_cache_block_get(c, 8, 100, l, got, &n), SE_CACHE_MISS);
    assert_int_equal(se_cache_block_get(c, 7, 101, l, got, &n), SE_CACHE_MISS);
    assert_int_equal(se_cache_block_get(c, 7, 100, other, got, &n), SE_CACHE_MISS);
    assert_int_equal(se_cache_block_get(c, 7, 101, other, got, &n), SE_CACHE_NO_BLOCK);
    assert_int_equal(n, 0);
    /* An absence with seqs, or more than a block holds, is not filed. */
    se_cache_block_put(c, 9, 1, l, false, seqs, 1);
    uint64_t many[SSE_BLOCK_IDS + 1] = {0};
    se_cache_block_put(c, 9, 2, l, true, many, SSE_BLOCK_IDS + 1);
    assert_int_equal(se_cache_block_get(c, 9, 1, l, got, &n), SE_CACHE_MISS);
    assert_int_equal(se_cache_block_get(c, 9, 2, l, got, &n), SE_CACHE_MISS);
    /* Listings: one per room, for the hi it was read at. */
    uint64_t rows[4] = {1, 2, 3, 4}, rows2[2] = {5, 6};
    size_t len = 1;
    assert_null(se_cache_listing_get(c, 7, 10, &len));
    assert_int_equal(len, 0);
    se_cache_listing_put(c, 7, 10, rows, sizeof rows);
    uint64_t *back = se_cache_listing_get(c, 7, 10, &len);
    assert_non_null(back);
    assert_int_equal(len, sizeof rows);
    assert_memory_equal(back, rows, sizeof rows);
    free(back);
    assert_null(se_cache_listing_get(c, 7, 11, &len));
    assert_null(se_cache_listing_get(c, 8, 10, &len));
    se_cache_listing_put(c, 7, 11, rows2, sizeof rows2);
    assert_null(se_cache_listing_get(c, 7, 10, &len));
    back = se_cache_listing_get(c, 7, 11, &len);
    assert_non_null(back);
    assert_int_equal(len, sizeof rows2);
    free(back);
    /* An empty listing is a listing. */
    se_cache_listing_put(c, 8, 1, NULL, 0);
    back = se_cache_listing_get(c, 8, 1, &len);
    assert_non_null(back);
    assert_int_equal(len, 0);
    free(back);
    /* Entries: found or known missing; a block's key is not an entry's. */
    uint64_t seq = 1;
    assert_int_equal(se_cache_entry_get(c, 7, 100, l, &seq), SE_CACHE_MISS);
    assert_int_equal(seq, 0);
    se_cache_entry_put(c, 7, 100, other, 4242);
    se_cache_entry_put(c, 7, 101, other, 0);
    assert_int_equal(se_cache_entry_get(c, 7, 100, other, &seq), SE_CACHE_BLOCK);
    assert_int_equal(seq, 4242);
    assert_int_equal(se_cache_entry_get(c, 7, 101, other, &seq), SE_CACHE_NO_BLOCK);
    assert_int_equal(seq, 0);
    assert_int_equal(se_cache_block_get(c, 7, 100, other, got, &n), SE_CACHE_MISS);
    assert_int_equal(se_cache_entry_get(c, 7, 100, l, &seq), SE_CACHE_MISS);
    /* Dropping blocks and entries keeps listings. */
    se_cache_drop_reads(c);
    assert_int_equal(se_cache_entry_get(c, 7, 100, other, &seq), SE_CACHE_MISS);
    assert_int_equal(se_cache_block_get(c, 7, 100, l, got, &n), SE_CACHE_MISS);
    assert_int_equal(se_cache_block_get(c, 7, 101, other, got, &n), SE_CACHE_MISS);
    back = se_cache_listing_get(c, 7, 11, &len);
    assert_non_null(back);
    free(back);
    se_cache_stats st;
    se_cache_get_stats(c, &st);
    assert_int_equal(st.entries, 2);
    assert_true(st.hits > 0 && st.misses > 0);
    se_cache_free(c);
    assert_null(se_cache_new(0));
    se_cache_free(NULL);
}

/* Walks are filed under (room, batch, label of counter 0), copied out
 * whole, and forgotten with the other reads. */
static void test_walks(void **state)
{
    (void)state;
    se_cache *c = se_cache_new(1u << 20);
    assert_non_null(c);
    unsigned char l0[SSE_LABEL_BYTES], l1[SSE_LABEL_BYTES];
    memset(l0, 0x11, sizeof l0);
    memset(l1, 0x22, sizeof l1);
    const uint64_t seqs[3] = {9, 4, 2};
    uint64_t *got = NULL;
    size_t n = 99;
    assert_false(se_cache_walk_get(c, 1, 5, l0, &got, &n));
    assert_null(got);
    assert_int_equal(n, 0);
    se_cache_walk_put(c, 1, 5, l0, seqs, 3);
    se_cache_walk_put(c, 1, 5, l1, NULL, 0); /* a word the batch lacks */
    assert_true(se_cache_walk_get(c, 1, 5, l0, &got, &n));
    assert_int_equal(n, 3);
    assert_memory_equal(got, seqs, sizeof seqs);
    free(got);
    assert_true(se_cache_walk_get(c, 1, 5, l1, &got, &n));
    assert_int_equal(n, 0);
    free(got);
    assert_false(se_cache_walk_get(c, 1, 6, l0, &got, &n)); /* other batch */
    assert_false(se_cache_walk_get(c, 2, 5, l0, &got, &n)); /* other room */
    se_cache_drop_reads(c);
    assert_false(se_cache_walk_get(c, 1, 5, l0, &got, &n));
    se_cache_free(c);
}

/* xorshift: labels that look like a PRF's, the same in every run. */
static uint64_t next_rand(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Files a mirror of n entries (labels in, seqs 1000 + i) and checks that
 * every label is found with its seq, that labels it lacks are known absent
 * (each of `absent`, and one just past each of its labels), and that
 * another entry count is a miss. */
static void check_mirror(se_cache *c, uint64_t batch, const unsigned char *labels, size_t n,
                         const unsigned char *absent, size_t nabsent)
{
    uint64_t *seqs = malloc((n ? n : 1) * sizeof *seqs), seq;
    assert_non_null(seqs);
    for (size_t i = 0; i < n; i++)
        seqs[i] = 1000 + i;
    se_cache_mirror_put(c, 1, batch, labels, seqs, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(se_cache_mirror_probe(c, 1, batch, n, labels + i * SSE_LABEL_BYTES, &seq),
                         SE_CACHE_BLOCK);
        assert_int_equal(seq, 1000 + i);
        unsigned char past[SSE_LABEL_BYTES];
        memcpy(past, labels + i * SSE_LABEL_BYTES, SSE_LABEL_BYTES);
        past[SSE_LABEL_BYTES - 1] ^= 0x01; /* the labels below never differ in bit 0 alone */
        assert_int_equal(se_cache_mirror_probe(c, 1, batch, n, past, &seq), SE_CACHE_NO_BLOCK);
        assert_int_equal(seq, 0);
    }
    for (size_t i = 0; i < nabsent; i++)
        assert_int_equal(
            se_cache_mirror_probe(c, 1, batch, n, absent + i * SSE_LABEL_BYTES, &seq),
            SE_CACHE_NO_BLOCK);
    unsigned char any[SSE_LABEL_BYTES] = {0};
    assert_int_equal(se_cache_mirror_probe(c, 1, batch, n + 1, any, &seq), SE_CACHE_MISS);
    free(seqs);
}

/* Mirrors of every size find each entry and no other, with the first and
 * last possible labels among them, and when the entries' labels all share
 * their first bytes (which a writer can do on purpose). */
static void test_mirrors(void **state)
{
    (void)state;
    se_cache *c = se_cache_new(64u << 20);
    assert_non_null(c);
    enum { MAX = 70000, ABSENT = 2000 };
    unsigned char *labels = malloc((size_t)MAX * SSE_LABEL_BYTES);
    unsigned char *absent = malloc((size_t)ABSENT * SSE_LABEL_BYTES);
    assert_non_null(labels);
    assert_non_null(absent);
    uint64_t x = 88172645463325252ULL;
    /* Bit 0 of the last byte is always 0, so flipping it makes a label no
     * entry has; absent labels have it set. */
    for (size_t i = 0; i < (size_t)MAX * SSE_LABEL_BYTES; i += 8) {
        uint64_t v = next_rand(&x);
        memcpy(labels + i, &v, 8);
    }
    for (size_t i = 0; i < MAX; i++)
        labels[i * SSE_LABEL_BYTES + SSE_LABEL_BYTES - 1] &= 0xfe;
    for (size_t i = 0; i < (size_t)ABSENT * SSE_LABEL_BYTES; i += 8) {
        uint64_t v = next_rand(&x);
        memcpy(absent + i, &v, 8);
    }
    for (size_t i = 0; i < ABSENT; i++)
        absent[i * SSE_LABEL_BYTES + SSE_LABEL_BYTES - 1] |= 0x01;
    memset(absent, 0x00, SSE_LABEL_BYTES);                   /* below every entry */
    memset(absent + SSE_LABEL_BYTES, 0xff, SSE_LABEL_BYTES); /* above every entry */
    static const size_t sizes[] = {0, 1, 2, 3, 4, 5, 7, 8, 100, 1023, 1024, 1025, 65536, MAX};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
        check_mirror(c, 10 + k, labels, sizes[k], absent, ABSENT);
    /* The lowest and the highest labels an entry can have. */
    memset(labels, 0x00, SSE_LABEL_BYTES);
    memset(labels + SSE_LABEL_BYTES, 0xff, SSE_LABEL_BYTES);
    labels[2 * SSE_LABEL_BYTES - 1] = 0xfe;
    check_mirror(c, 100, labels, 5000, absent + 2 * SSE_LABEL_BYTES, ABSENT - 2);
    /* Every label in one bucket of the directory. */
    for (size_t i = 0; i < 5000; i++)
        memset(labels + i * SSE_LABEL_BYTES, 0x42, 6);
    check_mirror(c, 101, labels, 5000, absent, ABSENT);
    free(labels);
    free(absent);
    se_cache_free(c);
}

/* The bound holds, and what goes is what was used longest ago. */
static void test_eviction(void **state)
{
    (void)state;
    const size_t bound = 64u << 10;
    se_cache *c = se_cache_new(bound);
    assert_non_null(c);
    unsigned char l[SSE_LABEL_BYTES];
    uint64_t seqs[SSE_BLOCK_IDS], got[SSE_BLOCK_IDS];
    size_t n;
    for (unsigned i = 0; i < SSE_BLOCK_IDS; i++)
        seqs[i] = 1000 - i;
    label_of(l, 0);
    se_cache_block_put(c, 1, 1, l, true, seqs, SSE_BLOCK_IDS);
    unsigned put = 1;
    se_cache_stats st;
    for (unsigned i = 1; i < 5000; i++) {
        label_of(l, i);
        se_cache_block_put(c, 1, 1, l, true, seqs, SSE_BLOCK_IDS);
        put++;
        /* Block 0 stays in use, so it is never the oldest. */
        label_of(l, 0);
        assert_int_equal(se_cache_block_get(c, 1, 1, l, got, &n), SE_CACHE_BLOCK);
        se_cache_get_stats(c, &st);
        assert_true(st.bytes <= bound);
    }
    se_cache_get_stats(c, &st);
    assert_true(st.evictions > 0);
    assert_true(st.entries < put);
    /* The newest are there, the oldest (but 0) are gone. */
    label_of(l, 4999);
    assert_int_equal(se_cache_block_get(c, 1, 1, l, got, &n), SE_CACHE_BLOCK);
    label_of(l, 1);
    assert_int_equal(se_cache_block_get(c, 1, 1, l, got, &n), SE_CACHE_MISS);
    /* Something bigger than the whole cache is not kept, and evicts
     * nothing for its sake. */
    static uint64_t huge[(64u << 10) / sizeof(uint64_t) + 1];
    se_cache_get_stats(c, &st);
    size_t before = st.entries, len;
    se_cache_listing_put(c, 2, 1, huge, sizeof huge);
    assert_null(se_cache_listing_get(c, 2, 1, &len));
    se_cache_get_stats(c, &st);
    assert_int_equal(st.entries, before);
    se_cache_free(c);
}

static se_cache *g_shared;

static void *hammer(void *arg)
{
    unsigned base = (unsigned)(uintptr_t)arg;
    unsigned char l[SSE_LABEL_BYTES];
    uint64_t seqs[SSE_BLOCK_IDS], got[SSE_BLOCK_IDS];
    size_t n;
    for (unsigned i = 0; i < 20000; i++) {
        unsigned k = base + i % 3000;
        label_of(l, k);
        int rc = se_cache_block_get(g_shared, 1, 5, l, got, &n);
        if (rc == SE_CACHE_BLOCK && (n != 1 || got[0] != k)) return (void *)1;
        seqs[0] = k;
        if (rc == SE_CACHE_MISS) se_cache_block_put(g_shared, 1, 5, l, true, seqs, 1);
        if (i % 5000 == 0) se_cache_drop_reads(g_shared);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    g_shared = se_cache_new(256u << 10);
    assert_non_null(g_shared);
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, (void *)(i * 1000)), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        assert_int_equal(pthread_join(t[i], &r), 0);
        assert_null(r);
    }
    se_cache_free(g_shared);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_walks),
        cmocka_unit_test(test_mirrors),
        cmocka_unit_test(test_eviction),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests_name("searchcache", tests, NULL, NULL);
}
