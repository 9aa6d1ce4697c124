/* Unit tests for the client-side core of encrypted search
 * (libclient/src/search/): keyword normalisation, the GGM tree and its
 * covers (checked against brute force), labels and posting blocks, the
 * per-batch writer, segment building and the keyring blob.
 *
 * The fixed vectors (expect_hex) and the normalisation table below are
 * recomputed without this code by tests/unit/search_vectors_check.py
 * (hashlib.blake2b, the "cryptography" package's ChaCha20-Poly1305 with a
 * pure-Python HChaCha20, unicodedata), so they are not only this code
 * agreeing with itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "e2e/common.h"
#include "search/ggm.h"
#include "search/keyring.h"
#include "search/norm.h"
#include "search/segment.h"
#include "search/writer.h"

#define ROOM "team@rooms.example.com"

/* ---- fixtures ------------------------------------------------------------ */

static void fill(unsigned char *b, size_t n, unsigned start)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(start + i);
}

/* The generation key of the vectors. */
static void vector_kg(unsigned char kg[32]) { fill(kg, 32, 0x40); }

/* Deterministic xorshift64*, so a failing random case can be replayed. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static int vector_failures;

/* Compares with the expected hex and prints the actual value on mismatch,
 * so a changed derivation shows every affected vector in one run. */
static void expect_hex(const char *name, const unsigned char *got, size_t n, const char *hex)
{
    static char buf[2 * 4096 + 1];
    assert_true(n <= 4096);
    sodium_bin2hex(buf, sizeof buf, got, n);
    if (strcmp(buf, hex) != 0) {
        print_message("vector %s mismatch:\n  got  %s\n  want %s\n", name, buf, hex);
        vector_failures++;
    }
}

static void expect_vectors_ok(void)
{
    int n = vector_failures;
    vector_failures = 0;
    assert_int_equal(n, 0);
}

static void keywords(sr_sse_keywords *k, const char *text)
{
    assert_int_equal(sr_sse_keywords_from_text(k, text, strlen(text), SR_SSE_MESSAGE_KEYWORDS),
                     SR_E2E_OK);
}

/* Keyword set built by hand (not normalised), for writer and segment
 * tests that need exact control. */
static void manual_keywords(sr_sse_keywords *k, size_t n, const char *prefix, size_t base)
{
    k->n = n;
    k->kw = n ? calloc(n, sizeof *k->kw) : NULL;
    k->len = n ? calloc(n, sizeof *k->len) : NULL;
    for (size_t i = 0; i < n; i++) {
        char buf[SR_SSE_KEYWORD_MAX + 1];
        int len = snprintf(buf, sizeof buf, "%s%zu", prefix, base + i);
        assert_true(len > 0 && len <= SR_SSE_KEYWORD_MAX);
        k->kw[i] = strdup(buf);
        k->len[i] = (size_t)len;
    }
}

static void token(unsigned char t[32], const unsigned char kg[32], uint32_t gen, const char *kw,
                  uint32_t batch)
{
    unsigned char root[32];
    assert_int_equal(sr_sse_root(root, kg, gen, kw, strlen(kw)), SR_E2E_OK);
    sr_sse_leaf(t, root, batch);
}

/* ---- normalisation --------------------------------------------------------
 * Each case: name, text, expected keywords joined by '|' ("" none, "!"
 * MALFORMED). search_vectors_check.py parses the lines between the BEGIN
 * and END markers (one case per line) and recomputes them. */

struct norm_case {
    const char *name, *text, *expect;
};

/* NORM_CASES_BEGIN */
/* clang-format off */
static const struct norm_case norm_cases[] = {
    {"ascii", "Hello, World! hello again", "hello|world|again"},
    {"case_fold_sharp_s", "STRASSE Straße straße", "strasse"},
    {"case_fold_turkish", "İstanbul ISTANBUL ıstanbul", "i\u0307stanbul|istanbul|ıstanbul"},
    {"case_fold_final_sigma", "ΟΔΟΣ οδος", "οδοσ"},
    {"nfkc_fullwidth", "ＡＢＣ１２３ ｈｅｌｌｏ", "abc123|hello"},
    {"nfkc_ligature", "ﬁnance ﬂow Ⅻ", "finance|flow|xii"},
    {"nfkc_superscript", "x² H₂O", "x2|h2o"},
    {"accents_kept", "Café CAFÉ cafe\u0301 cafe naïve", "café|cafe|naïve"},
    {"numbers", "Room 101, 3.14 and 2024-01-15", "room|101|3|14|and|2024|01|15"},
    {"punctuation", "don't stop—e-mail me@example.com (now)!", "don|t|stop|e|mail|me|example|com|now"},
    {"emoji_separates", "fish🐟chips", "fish|chips"},
    {"ignorables_dropped", "co\u00ADoperate zero\u200Bwidth", "cooperate|zerowidth"},
    {"japanese", "東京都に行きました", "東京|京都|都に|に行|行き|きま|まし|した"},
    {"mixed_latin_kana", "iPhoneを買った", "iphone|を買|買っ|った"},
    {"cjk_then_digits", "東京2024年", "東京|2024|年"},
    {"korean", "안녕하세요 세계", "안녕|녕하|하세|세요|세계"},
    {"hangul_jamo_composed", "\u1112\u1161\u11AB", "한"},
    {"halfwidth_katakana", "ｶﾀｶﾅ", "カタ|タカ|カナ"},
    {"single_cjk", "猫 と 犬", "猫|と|犬"},
    {"cjk_extension_b", "𠀋𠀋", "𠀋𠀋"},
    {"cjk_dedup", "東京 東京都", "東京|京都"},
    {"empty", "", ""},
    {"no_word_chars", "... !!! --- 🐟", ""},
    {"cut_64_ascii", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaabc", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
    {"cut_64_boundary", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaé", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
    {"cut_64_cjk_boundary", "東東東東東東東東東東東東東東東東東東東東東東", "東東"},
    {"cut_then_dedup", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
    {"cut_64_latin_boundary", "ééééééééééééééééééééééééééééééééé", "éééééééééééééééééééééééééééééééé"},
    {"invalid_byte", "abc\xff", "!"},
    {"invalid_overlong", "\xc0\xafx", "!"},
    {"invalid_surrogate", "\xed\xa0\x80", "!"},
    {"invalid_truncated", "caf\xc3", "!"},
};
/* clang-format on */
/* NORM_CASES_END */

static void test_norm_cases(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof norm_cases / sizeof norm_cases[0]; c++) {
        const struct norm_case *nc = &norm_cases[c];
        sr_sse_keywords k;
        char got[2048] = "";
        int rc = sr_sse_keywords_from_text(&k, nc->text, strlen(nc->text), SR_SSE_MESSAGE_KEYWORDS);
        if (rc == SR_E2E_ERR_MALFORMED) {
            assert_int_equal(k.n, 0);
            strcpy(got, "!");
        } else {
            assert_int_equal(rc, SR_E2E_OK);
            for (size_t i = 0; i < k.n; i++) {
                assert_true(k.len[i] >= 1 && k.len[i] <= SR_SSE_KEYWORD_MAX);
                assert_int_equal(strlen(k.kw[i]), k.len[i]);
                if (i)
                    strcat(got, "|");
                strncat(got, k.kw[i], k.len[i]);
            }
        }
        if (strcmp(got, nc->expect) != 0)
            print_message("norm case %s:\n  got  %s\n  want %s\n", nc->name, got, nc->expect);
        assert_string_equal(got, nc->expect);
        sr_sse_keywords_free(&k);
        assert_int_equal(k.n, 0);
        assert_null(k.kw);
    }
}

static void test_norm_edges(void **state)
{
    sr_sse_keywords k;
    (void)state;

    /* NUL separates (the text is length-delimited, not a C string). */
    assert_int_equal(sr_sse_keywords_from_text(&k, "ab\0cd", 5, 10), SR_E2E_OK);
    assert_int_equal(k.n, 2);
    assert_true(sr_sse_keywords_contains(&k, "ab", 2));
    assert_true(sr_sse_keywords_contains(&k, "cd", 2));
    assert_false(sr_sse_keywords_contains(&k, "a", 1));
    assert_false(sr_sse_keywords_contains(&k, "abc", 3));
    sr_sse_keywords_free(&k);

    /* Empty text and NULL with length 0 are fine and give nothing. */
    assert_int_equal(sr_sse_keywords_from_text(&k, NULL, 0, 10), SR_E2E_OK);
    assert_int_equal(k.n, 0);
    assert_false(sr_sse_keywords_contains(&k, "a", 1));
    sr_sse_keywords_free(&k);

    /* Misuse. */
    assert_int_equal(sr_sse_keywords_from_text(NULL, "a", 1, 10), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_sse_keywords_from_text(&k, NULL, 1, 10), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_sse_keywords_from_text(&k, "a", 1, 0), SR_E2E_ERR_INVALID);
    assert_int_equal(k.n, 0);
    sr_sse_keywords_free(NULL);

    /* Dedup keeps the first occurrence order; the cap counts distinct
     * keywords; a query asks for 9 and refuses more than 8. */
    const char *q = "b a b c a d e f g h i j";
    assert_int_equal(sr_sse_keywords_from_text(&k, q, strlen(q), 3), SR_E2E_OK);
    assert_int_equal(k.n, 3);
    assert_string_equal(k.kw[0], "b");
    assert_string_equal(k.kw[1], "a");
    assert_string_equal(k.kw[2], "c");
    sr_sse_keywords_free(&k);
    assert_int_equal(sr_sse_keywords_from_text(&k, q, strlen(q), SR_SSE_QUERY_KEYWORDS + 1),
                     SR_E2E_OK);
    assert_int_equal(k.n, SR_SSE_QUERY_KEYWORDS + 1);
    sr_sse_keywords_free(&k);

    /* The cap stops bigram generation part-way through a CJK run. */
    assert_int_equal(sr_sse_keywords_from_text(&k, "東京都に", strlen("東京都に"), 2), SR_E2E_OK);
    assert_int_equal(k.n, 2);
    assert_string_equal(k.kw[1], "京都");
    sr_sse_keywords_free(&k);

    /* A very long word costs one 64-byte keyword. */
    size_t big = 200000;
    char *text = malloc(big);
    memset(text, 'z', big);
    assert_int_equal(sr_sse_keywords_from_text(&k, text, big, 10), SR_E2E_OK);
    assert_int_equal(k.n, 1);
    assert_int_equal(k.len[0], SR_SSE_KEYWORD_MAX);
    sr_sse_keywords_free(&k);
    free(text);

    /* Invalid UTF-8 after valid words still yields no keywords at all. */
    assert_int_equal(sr_sse_keywords_from_text(&k, "good words \xfe", 12, 10),
                     SR_E2E_ERR_MALFORMED);
    assert_int_equal(k.n, 0);
    assert_null(k.kw);
}

static void test_norm_cap(void **state)
{
    (void)state;
    /* 2,000 distinct words plus repeats: exactly the first 1,024 distinct
     * ones, in order. */
    size_t cap = 2000 * 12, len = 0;
    char *text = malloc(cap);
    for (size_t i = 0; i < 2000; i++)
        len += (size_t)snprintf(text + len, cap - len, "w%zu w0 ", i);
    sr_sse_keywords k;
    assert_int_equal(sr_sse_keywords_from_text(&k, text, len, SR_SSE_MESSAGE_KEYWORDS), SR_E2E_OK);
    assert_int_equal(k.n, SR_SSE_MESSAGE_KEYWORDS);
    for (size_t i = 0; i < k.n; i++) {
        char want[32];
        snprintf(want, sizeof want, "w%zu", i);
        assert_string_equal(k.kw[i], want);
    }
    assert_false(sr_sse_keywords_contains(&k, "w1024", 5));
    sr_sse_keywords_free(&k);
    free(text);
}

/* ---- GGM ----------------------------------------------------------------- */

static uint64_t node_lo(const sr_sse_node *n)
{
    return (uint64_t)n->prefix << (32 - n->depth);
}

static uint64_t node_hi(const sr_sse_node *n)
{
    return (((uint64_t)n->prefix + 1) << (32 - n->depth)) - 1;
}

/* Independent minimal cover: top-down, keep a node fully inside, drop a
 * disjoint one, split the rest. Nodes come out in increasing order. */
static void ref_cover(unsigned depth, uint64_t prefix, uint64_t lo, uint64_t hi, uint8_t *d,
                      uint32_t *p, size_t *n)
{
    uint64_t a = prefix << (32 - depth), b = ((prefix + 1) << (32 - depth)) - 1;
    if (b < lo || a > hi)
        return;
    if (lo <= a && b <= hi) {
        d[*n] = (uint8_t)depth;
        p[*n] = (uint32_t)prefix;
        (*n)++;
        return;
    }
    ref_cover(depth + 1, 2 * prefix, lo, hi, d, p, n);
    ref_cover(depth + 1, 2 * prefix + 1, lo, hi, d, p, n);
}

/* Brute force over every partition of [lo, hi] into tree nodes (aligned
 * power-of-two blocks): the fewest nodes any cover can have. */
static size_t brute_min(uint32_t lo, uint32_t hi)
{
    size_t len = (size_t)hi - lo + 1;
    size_t *best = malloc((len + 1) * sizeof *best);
    best[len] = 0;
    for (size_t off = len; off-- > 0;) {
        uint64_t x = (uint64_t)lo + off;
        best[off] = SIZE_MAX;
        for (unsigned k = 0; k <= 32; k++) {
            uint64_t size = (uint64_t)1 << k;
            if (x % size != 0 || x + size - 1 > hi)
                break;
            size_t cand = 1 + best[off + size];
            if (cand < best[off])
                best[off] = cand;
        }
    }
    size_t r = best[0];
    free(best);
    return r;
}

/* The leaf of b derived through the cover: exactly one node contains it
 * (or none, for b outside [lo, hi]); returns how many contain it. */
static size_t leaf_via_cover(unsigned char out[32], const sr_sse_node *nodes, size_t n, uint64_t b)
{
    size_t hits = 0;
    for (size_t i = 0; i < n; i++) {
        if (b < node_lo(&nodes[i]) || b > node_hi(&nodes[i]))
            continue;
        hits++;
        memcpy(out, nodes[i].key, 32);
        for (unsigned j = nodes[i].depth; j < 32; j++)
            sr_sse_child(out, out, (int)((b >> (31 - j)) & 1));
    }
    return hits;
}

static void check_leaf(const unsigned char root[32], const sr_sse_node *nodes, size_t n,
                       uint32_t lo, uint32_t hi, uint64_t b)
{
    unsigned char via[32], direct[32];
    if (b > UINT32_MAX)
        return;
    size_t hits = leaf_via_cover(via, nodes, n, b);
    if (b < lo || b > hi) {
        assert_int_equal(hits, 0);
        return;
    }
    assert_int_equal(hits, 1);
    sr_sse_leaf(direct, root, (uint32_t)b);
    assert_memory_equal(via, direct, 32);
}

/* The node (depth, prefix) derived on its own, child by child from the
 * root, sharing nothing with any other node. */
static void naive_node(unsigned char out[32], const unsigned char root[32], unsigned depth,
                       uint32_t prefix)
{
    memcpy(out, root, 32);
    for (unsigned j = 0; j < depth; j++)
        sr_sse_child(out, out, (int)((prefix >> (depth - 1 - j)) & 1));
}

/* One range: equal to the reference cover, a partition of [lo, hi] in
 * increasing order, every node key equal to its naive derivation from the
 * root, keys that derive the right leaves; brute-force minimality and
 * every leaf when the range is small. */
static void check_cover(const unsigned char root[32], uint32_t lo, uint32_t hi, bool every_leaf)
{
    sr_sse_node nodes[SR_SSE_COVER_MAX];
    uint8_t d[SR_SSE_COVER_MAX];
    uint32_t p[SR_SSE_COVER_MAX];
    unsigned char naive[32];
    size_t rn = 0;
    size_t n = sr_sse_cover(nodes, SR_SSE_COVER_MAX, root, lo, hi);

    ref_cover(0, 0, lo, hi, d, p, &rn);
    assert_true(n >= 1 && n <= 62);
    assert_int_equal(n, rn);
    uint64_t next = lo;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(nodes[i].depth, d[i]);
        assert_int_equal(nodes[i].prefix, p[i]);
        assert_true(nodes[i].depth <= 32);
        assert_true(nodes[i].depth == 32 || (uint64_t)nodes[i].prefix >> nodes[i].depth == 0);
        assert_true(node_lo(&nodes[i]) == next);
        next = node_hi(&nodes[i]) + 1;
        naive_node(naive, root, nodes[i].depth, nodes[i].prefix);
        assert_memory_equal(nodes[i].key, naive, 32);
    }
    assert_true(next == (uint64_t)hi + 1);
    if ((uint64_t)hi - lo < 4096)
        assert_int_equal(n, brute_min(lo, hi));
    /* The cover is exact when it is one short: the same range with fewer
     * slots is refused outright rather than cut. */
    assert_int_equal(sr_sse_cover(nodes, n - 1, root, lo, hi), 0);
    n = sr_sse_cover(nodes, n, root, lo, hi);
    assert_int_equal(n, rn);

    if (every_leaf) {
        for (uint64_t b = lo > 1 ? lo - 2 : 0; b <= (uint64_t)hi + 2; b++)
            check_leaf(root, nodes, n, lo, hi, b);
    } else {
        check_leaf(root, nodes, n, lo, hi, (uint64_t)lo - 1);
        check_leaf(root, nodes, n, lo, hi, (uint64_t)hi + 1);
        for (size_t i = 0; i < n; i++) {
            check_leaf(root, nodes, n, lo, hi, node_lo(&nodes[i]));
            check_leaf(root, nodes, n, lo, hi, node_hi(&nodes[i]));
        }
        for (int s = 0; s < 4; s++)
            check_leaf(root, nodes, n, lo, hi, lo + rnd() % ((uint64_t)hi - lo + 1));
    }
    sodium_memzero(nodes, sizeof nodes);
    sodium_memzero(naive, sizeof naive);
}

static void test_ggm_cover(void **state)
{
    unsigned char kg[32], root[32];
    sr_sse_node nodes[SR_SSE_COVER_MAX];
    (void)state;
    vector_kg(kg);
    assert_int_equal(sr_sse_root(root, kg, 1, "cover", 5), SR_E2E_OK);

    /* Edges, and the worst case: 62 nodes. */
    check_cover(root, 1, 1, true);
    check_cover(root, 1, 2, true);
    check_cover(root, 1, 1000, true);
    check_cover(root, UINT32_MAX, UINT32_MAX, true);
    check_cover(root, UINT32_MAX - 300, UINT32_MAX, true);
    check_cover(root, 0x80000000u, 0x80000000u, true);
    check_cover(root, 1, UINT32_MAX, false);
    assert_int_equal(sr_sse_cover(nodes, SR_SSE_COVER_MAX, root, 1, UINT32_MAX), 32);
    check_cover(root, 1, UINT32_MAX - 1, false);
    assert_int_equal(sr_sse_cover(nodes, SR_SSE_COVER_MAX, root, 1, UINT32_MAX - 1), 62);
    /* Refusals. */
    assert_int_equal(sr_sse_cover(nodes, SR_SSE_COVER_MAX, root, 0, 5), 0);
    assert_int_equal(sr_sse_cover(nodes, SR_SSE_COVER_MAX, root, 6, 5), 0);
    assert_int_equal(sr_sse_cover(NULL, SR_SSE_COVER_MAX, root, 1, 5), 0);
    assert_int_equal(sr_sse_cover(nodes, 0, root, 1, 1), 0);

    /* Random small ranges at random places (every leaf, brute-force
     * minimum), random mid-size ranges (brute-force minimum), random
     * ranges anywhere. */
    for (int i = 0; i < 40; i++) {
        uint32_t lo = (uint32_t)(1 + rnd() % (UINT32_MAX - 300));
        check_cover(root, lo, lo + (uint32_t)(rnd() % 257), true);
    }
    for (int i = 0; i < 150; i++) {
        uint32_t lo = (uint32_t)(1 + rnd() % (UINT32_MAX - 5000));
        check_cover(root, lo, lo + (uint32_t)(rnd() % 4000), false);
    }
    for (int i = 0; i < 150; i++) {
        uint32_t a = (uint32_t)(1 + rnd() % UINT32_MAX), b = (uint32_t)(1 + rnd() % UINT32_MAX);
        check_cover(root, a < b ? a : b, a < b ? b : a, false);
    }
    /* Single batches, and ranges from batch 1 or up to the last batch id
     * (one side of the cover only), under fresh roots too. */
    for (int i = 0; i < 40; i++) {
        uint32_t a = (uint32_t)(1 + rnd() % UINT32_MAX);
        if (i % 2)
            randombytes_buf(root, sizeof root);
        check_cover(root, a, a, true);
        check_cover(root, 1, a, false);
        check_cover(root, a, UINT32_MAX, false);
    }
    sodium_memzero(root, sizeof root);
}

static void test_ggm_misuse(void **state)
{
    unsigned char kg[32], out[32], t[32];
    char long_kw[SR_SSE_KEYWORD_MAX + 1];
    (void)state;
    vector_kg(kg);
    memset(long_kw, 'a', sizeof long_kw);
    assert_int_equal(sr_sse_root(out, kg, 0, "a", 1), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_sse_root(out, kg, 1, "a", 0), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_sse_root(out, kg, 1, long_kw, sizeof long_kw), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_sse_root(out, kg, 1, long_kw, SR_SSE_KEYWORD_MAX), SR_E2E_OK);
    assert_int_equal(sr_sse_root(out, NULL, 1, "a", 1), SR_E2E_ERR_INVALID);

    /* Different generation, keyword or batch: different token. */
    unsigned char a[32], b[32];
    token(a, kg, 1, "tokyo", 5);
    token(b, kg, 2, "tokyo", 5);
    assert_memory_not_equal(a, b, 32);
    token(b, kg, 1, "tokyp", 5);
    assert_memory_not_equal(a, b, 32);
    token(b, kg, 1, "tokyo", 4);
    assert_memory_not_equal(a, b, 32);

    /* Blocks: more than 32 ids, or not strictly descending. */
    uint64_t seqs[SR_SSE_BLOCK_IDS + 1];
    unsigned char body[SR_SSE_BLOCK_BYTES];
    for (size_t i = 0; i <= SR_SSE_BLOCK_IDS; i++)
        seqs[i] = 1000 - i;
    fill(t, 32, 0x11);
    assert_int_equal(sr_sse_block_seal(body, t, 1, 0, seqs, SR_SSE_BLOCK_IDS + 1),
                     SR_E2E_ERR_INVALID);
    assert_int_equal(sr_sse_block_seal(body, t, 1, 0, seqs, SR_SSE_BLOCK_IDS), SR_E2E_OK);
    seqs[3] = seqs[2];
    assert_int_equal(sr_sse_block_seal(body, t, 1, 0, seqs, 5), SR_E2E_ERR_INVALID);
    seqs[3] = seqs[2] + 1;
    assert_int_equal(sr_sse_block_seal(body, t, 1, 0, seqs, 5), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_sse_block_seal(body, t, 1, 0, NULL, 1), SR_E2E_ERR_INVALID);
}

/* Seals a block by hand with an arbitrary plaintext, as a buggy or hostile
 * member could, to reach the checks behind the authentication. */
static void seal_raw(unsigned char body[SR_SSE_BLOCK_BYTES], const unsigned char s[32],
                     uint64_t segment, uint32_t i, const unsigned char pt[SR_SSE_BLOCK_PLAIN])
{
    unsigned char bk[32], nonce[24] = {0}, ad[12];
    sr_e2e_writer w;
    assert_int_equal(sr_e2e_kdf(bk, 32, s, "sealroom.sse.v1.block-key", NULL, 0), SR_E2E_OK);
    sr_e2e_writer_init(&w, nonce + 20, 4);
    sr_e2e_put_u32(&w, i);
    sr_e2e_writer_init(&w, ad, sizeof ad);
    sr_e2e_put_u64(&w, segment);
    sr_e2e_put_u32(&w, i);
    assert_int_equal(crypto_aead_xchacha20poly1305_ietf_encrypt(body, NULL, pt, SR_SSE_BLOCK_PLAIN,
                                                                ad, sizeof ad, NULL, nonce, bk),
                     0);
}

static void test_blocks(void **state)
{
    unsigned char s[32], body[SR_SSE_BLOCK_BYTES], pt[SR_SSE_BLOCK_PLAIN];
    uint64_t in[3] = {300, 200, 100}, out[SR_SSE_BLOCK_IDS];
    size_t n;
    (void)state;
    fill(s, 32, 0x22);

    assert_int_equal(sr_sse_block_seal(body, s, 7, 1, in, 3), SR_E2E_OK);
    assert_int_equal(sr_sse_block_open(out, &n, s, 7, 1, body), SR_E2E_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(out, in, sizeof in);
    /* Bound to the segment id, the index and the key. */
    assert_int_equal(sr_sse_block_open(out, &n, s, 8, 1, body), SR_E2E_ERR_DECRYPT);
    assert_int_equal(n, 0);
    assert_int_equal(sr_sse_block_open(out, &n, s, 7, 2, body), SR_E2E_ERR_DECRYPT);
    s[0] ^= 1;
    assert_int_equal(sr_sse_block_open(out, &n, s, 7, 1, body), SR_E2E_ERR_DECRYPT);
    s[0] ^= 1;
    body[100] ^= 0x80;
    assert_int_equal(sr_sse_block_open(out, &n, s, 7, 1, body), SR_E2E_ERR_DECRYPT);
    body[100] ^= 0x80;
    assert_int_equal(sr_sse_block_open(out, &n, s, 7, 1, body), SR_E2E_OK);

    /* A padding block opens to count 0. */
    assert_int_equal(sr_sse_block_seal(body, s, 7, 2, NULL, 0), SR_E2E_OK);
    assert_int_equal(sr_sse_block_open(out, &n, s, 7, 2, body), SR_E2E_OK);
    assert_int_equal(n, 0);

    /* Authentic but malformed: count 33, equal seqs, non-zero padding. */
    memset(pt, 0, sizeof pt);
    pt[1] = 33;
    seal_raw(body, s, 7, 3, pt);
    assert_int_equal(sr_sse_block_open(out, &n, s, 7, 3, body), SR_E2E_ERR_MALFORMED);
    memset(pt, 0, sizeof pt);
    pt[1] = 2;
    pt[2 + 7] = 5;
    pt[2 + 8 + 7] = 5;
    seal_raw(body, s, 7, 3, pt);
    assert_int_equal(sr_sse_block_open(out, &n, s, 7, 3, body), SR_E2E_ERR_MALFORMED);
    pt[2 + 8 + 7] = 4;
    seal_raw(body, s, 7, 3, pt);
    assert_int_equal(sr_sse_block_open(out, &n, s, 7, 3, body), SR_E2E_OK);
    assert_int_equal(n, 2);
    pt[sizeof pt - 1] = 1;
    seal_raw(body, s, 7, 3, pt);
    assert_int_equal(sr_sse_block_open(out, &n, s, 7, 3, body), SR_E2E_ERR_MALFORMED);
    assert_int_equal(n, 0);
    assert_int_equal(out[0], 0);
}

/* ---- vectors --------------------------------------------------------------
 * Inputs: K_g = 40 41 .. 5f, generation 1, keyword "tokyo", batch 5,
 * counter 3, segment 7, block 1 with seqs {300, 200, 100}. */

static void node_bytes(unsigned char *out, const sr_sse_node *nodes, size_t n)
{
    sr_e2e_writer w;
    sr_e2e_writer_init(&w, out, n * 37);
    for (size_t i = 0; i < n; i++) {
        sr_e2e_put_u8(&w, nodes[i].depth);
        sr_e2e_put_u32(&w, nodes[i].prefix);
        sr_e2e_put_bytes(&w, nodes[i].key, 32);
    }
    assert_false(w.overflow);
}

static void test_vectors(void **state)
{
    unsigned char kg[32], root[32], node[32], t[32], s[32], label[16], body[SR_SSE_BLOCK_BYTES];
    sr_sse_node nodes[SR_SSE_COVER_MAX];
    unsigned char wire[SR_SSE_COVER_MAX * 37];
    const uint64_t seqs[3] = {300, 200, 100};
    (void)state;
    vector_kg(kg);

    assert_int_equal(sr_sse_root(root, kg, 1, "tokyo", 5), SR_E2E_OK);
    expect_hex("sse.root", root, 32,
               "dbcf2d4ac0150671d0b22539c5955cf7f3cde5d6aca36632734fef70d343460f");
    assert_int_equal(sr_sse_root(node, kg, 2, "東京", strlen("東京")), SR_E2E_OK);
    expect_hex("sse.root_gen2_cjk", node, 32,
               "77bfc4132469d7ca96324453c5581be7787e122840a867f70e4c8c09b44f2b86");
    sr_sse_child(node, root, 0);
    expect_hex("sse.left", node, 32,
               "1ddba4f9a60a0f5f8388937a90ead3fe7be1256707b292f27b80a946593a588a");
    sr_sse_child(node, root, 1);
    expect_hex("sse.right", node, 32,
               "b3312f8895b7983da3bb52d372f334053ca120fe64ea6e3cb524871445426b7d");
    sr_sse_leaf(t, root, 5);
    expect_hex("sse.leaf", t, 32,
               "3f975adc9f922494bbb81dbd2c41a044e7edc3851d48dfc1b9307420ae35b216");
    sr_sse_leaf(node, root, UINT32_MAX);
    expect_hex("sse.leaf_max", node, 32,
               "e1e65a38d3ffd12c8a538a38f16f54b0638335623546c4397cd3308fe64dfea6");
    sr_sse_label(label, t, 3);
    expect_hex("sse.label", label, 16, "8c4c7a4603d84e8e7401f98a4c88e121");
    sr_sse_segment_key(s, t, 7);
    expect_hex("sse.segment_key", s, 32,
               "f151fb625eaefc5b0b6849c75a8feaa2f734a2f8b2334a22cd7ea9e25d590a71");
    sr_sse_block_label(label, s, 1);
    expect_hex("sse.block_label", label, 16, "433e3efc38c7aa2198a6d39c2d229789");
    assert_int_equal(sr_sse_block_seal(body, s, 7, 1, seqs, 3), SR_E2E_OK);
    expect_hex("sse.block_body", body, sizeof body,
               "0b26dddf69de85b5e5cd7c8963ff89986d49c4df88732c6951543d8424988b6c"
               "71c7c3a54dfcc802404a7c01dc53b832babe879aa86133a7e59fe1690d742844"
               "1623f07f175e58ce55546f4fc00da3d175f3f04e9889283ed0ea6db6c6ab7c4d"
               "399a35b7d8158486245b6e2083457606c7175d13a98ffd29c571337361f807d2"
               "53d9ef3529a0678b90cb48c6e107a25f6d584dd1babc7acb7dc5d3dab9c77cde"
               "7c3b8121dab5c4b49f6a71b07c481a00a7179749b2d8d50779d74fec51d583b2"
               "bdbfa45d0c310956731e854ce655c0d3e7f12b16d46f041a3618f8a0f8b5d2bd"
               "b408cdf637414c3c1f3b88fc9aa4bfee1cd7936247bac5358e39974ceea3167c"
               "9d986f9489234cd7e8ef278a3c07ac9996e4");
    assert_int_equal(sr_sse_block_seal(body, s, 7, 2, NULL, 0), SR_E2E_OK);
    expect_hex("sse.block_body_empty", body, sizeof body,
               "ce227f06801feebc0320a015164d6eea320ded8006704d285a44f1f14296f53e"
               "7d049da2399e4275a8d8410718213eca894deb3c8e4f2bb3d4b7d6981eda2be5"
               "df9745cc1bdcb6a03d888dcd34e69beb1eeafc1bc2aa7a73187bc5b4d8c79673"
               "b235879a919987102eb76a36a812ab98be9a950234ceebed39eaa634fca4f2ec"
               "1e23d1567c073074de58df5c7a62faf4db362cd6f1821d9ae1528e41da205103"
               "b1b0372f86f6637afa6eff6c5efa31005b52ae22ad6887dbbd3d2105f266ef7e"
               "4963c589fc81077fa5c785816c45a202f2b4fd5b8a13e200f1eda3c9bd6cd51b"
               "0406951b3a2f9fa34135c8a74ef3f93e8d22bbbf811aa5c985ccd83a1c983508"
               "426ec47004ca1751af3abc7df82eba2f027e");
    size_t n = sr_sse_cover(nodes, SR_SSE_COVER_MAX, root, 5, 12);
    assert_int_equal(n, 4);
    node_bytes(wire, nodes, n);
    expect_hex("sse.cover_5_12", wire, n * 37,
               "20000000053f975adc9f922494bbb81dbd2c41a044e7edc3851d48dfc1b93074"
               "20ae35b2161f00000003ee323ef8ab3de5b499ec4c2498ce512940a49f947d2f"
               "e1bbbe33a34184cf72a61e000000029d871eee2578ed57209a135b80794567d0"
               "e44c73b80e060d74f338ee4bb94745200000000c994ace113d90ef41499d0d11"
               "30b4add14fdbed6f7c6e2d892eb21d518e729f13");
    expect_vectors_ok();
}

/* ---- writer ---------------------------------------------------------------- */

/* How many of the n labels equal want. */
static size_t count_label(const unsigned char *labels, size_t n, const unsigned char want[16])
{
    size_t hits = 0;
    for (size_t i = 0; i < n; i++)
        hits += memcmp(labels + 16 * i, want, 16) == 0;
    return hits;
}

static void expect_label(const unsigned char *labels, size_t n, const unsigned char kg[32],
                         const char *kw, uint32_t batch, uint32_t c)
{
    unsigned char t[32], l[16];
    token(t, kg, 1, kw, batch);
    sr_sse_label(l, t, c);
    assert_int_equal(count_label(labels, n, l), 1);
}

static void test_writer_counters(void **state)
{
    unsigned char kg[32], *labels;
    size_t n;
    sr_sse_keywords k;
    (void)state;
    vector_kg(kg);
    assert_null(sr_sse_writer_new(kg, 0, 1));
    assert_null(sr_sse_writer_new(kg, 1, 0));
    assert_null(sr_sse_writer_new(NULL, 1, 1));
    sr_sse_writer *w = sr_sse_writer_new(kg, 1, 9);
    assert_non_null(w);
    assert_int_equal(sr_sse_writer_batch(w), 9);

    keywords(&k, "alpha beta gamma alpha");
    assert_int_equal(sr_sse_writer_entries(w, &k, &labels, &n), SR_E2E_OK);
    assert_int_equal(n, 8);
    expect_label(labels, n, kg, "alpha", 9, 0);
    expect_label(labels, n, kg, "beta", 9, 0);
    expect_label(labels, n, kg, "gamma", 9, 0);
    /* Nothing is issued twice within one message. */
    for (size_t i = 0; i < n; i++)
        assert_int_equal(count_label(labels, n, labels + 16 * i), 1);
    free(labels);
    sr_sse_keywords_free(&k);

    /* One message pending at a time. */
    keywords(&k, "alpha delta");
    assert_int_equal(sr_sse_writer_entries(w, &k, &labels, &n), SR_E2E_ERR_INVALID);
    assert_null(labels);
    assert_int_equal(n, 0);
    sr_sse_writer_commit(w);
    assert_int_equal(sr_sse_writer_entries(w, &k, &labels, &n), SR_E2E_OK);
    expect_label(labels, n, kg, "alpha", 9, 1);
    expect_label(labels, n, kg, "delta", 9, 0);
    free(labels);
    sr_sse_writer_commit(w);
    sr_sse_keywords_free(&k);

    /* A refused message gives its counters back: the next one reuses them,
     * so the probe sequence 0, 1, 2, ... stays gapless. */
    keywords(&k, "alpha epsilon");
    assert_int_equal(sr_sse_writer_entries(w, &k, &labels, &n), SR_E2E_OK);
    expect_label(labels, n, kg, "alpha", 9, 2);
    expect_label(labels, n, kg, "epsilon", 9, 0);
    free(labels);
    sr_sse_writer_abort(w);
    sr_sse_writer_abort(w); /* no-op when nothing is pending */
    assert_int_equal(sr_sse_writer_entries(w, &k, &labels, &n), SR_E2E_OK);
    expect_label(labels, n, kg, "alpha", 9, 2);
    expect_label(labels, n, kg, "epsilon", 9, 0);
    free(labels);
    sr_sse_writer_commit(w);
    sr_sse_keywords_free(&k);

    /* A keyword of bad length (hand-built set) is refused and rolls back
     * the counters already taken for the same message. */
    manual_keywords(&k, 2, "alpha", 0);
    k.len[1] = 0;
    assert_int_equal(sr_sse_writer_entries(w, &k, &labels, &n), SR_E2E_ERR_INVALID);
    sr_sse_keywords_free(&k);
    keywords(&k, "alpha0");
    assert_int_equal(sr_sse_writer_entries(w, &k, &labels, &n), SR_E2E_OK);
    expect_label(labels, n, kg, "alpha0", 9, 0);
    free(labels);
    sr_sse_writer_commit(w);
    sr_sse_keywords_free(&k);

    sr_sse_writer_free(w);
    sr_sse_writer_free(NULL);
}

static void test_writer_padding(void **state)
{
    unsigned char kg[32], *labels;
    size_t n;
    sr_sse_keywords k;
    static const size_t sizes[][2] = {{0, 8}, {1, 8}, {7, 8}, {8, 8}, {9, 16}, {1023, 1024},
                                      {1024, 1024}, {1025, 1032}, {8192, 8192}};
    (void)state;
    vector_kg(kg);
    sr_sse_writer *w = sr_sse_writer_new(kg, 1, 1);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        manual_keywords(&k, sizes[i][0], "k", 100000 * (i + 1));
        assert_int_equal(sr_sse_writer_entries(w, &k, &labels, &n), SR_E2E_OK);
        assert_int_equal(n, sizes[i][1]);
        free(labels);
        sr_sse_writer_commit(w);
        sr_sse_keywords_free(&k);
    }
    manual_keywords(&k, SR_SSE_MESSAGE_ENTRIES + 1, "k", 0);
    assert_int_equal(sr_sse_writer_entries(w, &k, &labels, &n), SR_E2E_ERR_INVALID);
    sr_sse_keywords_free(&k);
    sr_sse_writer_free(w);

    /* The shuffle: over 64 one-keyword messages the real label does not
     * always sit in the same place (a fixed place would fail with
     * probability 8^-63). */
    w = sr_sse_writer_new(kg, 1, 2);
    unsigned seen = 0;
    for (uint32_t c = 0; c < 64; c++) {
        unsigned char t[32], l[16];
        keywords(&k, "same");
        assert_int_equal(sr_sse_writer_entries(w, &k, &labels, &n), SR_E2E_OK);
        sr_sse_writer_commit(w);
        token(t, kg, 1, "same", 2);
        sr_sse_label(l, t, c);
        for (size_t i = 0; i < n; i++)
            if (memcmp(labels + 16 * i, l, 16) == 0)
                seen |= 1u << i;
        free(labels);
        sr_sse_keywords_free(&k);
    }
    assert_true(seen != 0 && (seen & (seen - 1)) != 0);
    sr_sse_writer_free(w);
}

static void test_writer_batch_full(void **state)
{
    unsigned char kg[32], *labels;
    size_t n;
    sr_sse_keywords empty = {0}, k;
    (void)state;
    vector_kg(kg);
    sr_sse_writer *w = sr_sse_writer_new(kg, 1, 3);
    /* 8,191 empty messages use 65,528 entries: one more fits, and then
     * nothing does. */
    for (size_t i = 0; i < SR_SSE_BATCH_ENTRIES / 8 - 1; i++) {
        assert_int_equal(sr_sse_writer_entries(w, &empty, &labels, &n), SR_E2E_OK);
        free(labels);
        sr_sse_writer_commit(w);
    }
    manual_keywords(&k, 9, "k", 0);
    assert_int_equal(sr_sse_writer_entries(w, &k, &labels, &n), SR_E2E_ERR_INVALID);
    sr_sse_keywords_free(&k);
    /* Abort gives the room back. */
    assert_int_equal(sr_sse_writer_entries(w, &empty, &labels, &n), SR_E2E_OK);
    free(labels);
    sr_sse_writer_abort(w);
    assert_int_equal(sr_sse_writer_entries(w, &empty, &labels, &n), SR_E2E_OK);
    free(labels);
    sr_sse_writer_commit(w);
    assert_int_equal(sr_sse_writer_entries(w, &empty, &labels, &n), SR_E2E_ERR_INVALID);
    sr_sse_writer_free(w);
}

/* ---- segments ---------------------------------------------------------------- */

static int cmp_label(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

/* The block stored under label, or NULL (the component's lookup). */
static const unsigned char *find_block(const unsigned char *blocks, size_t n,
                                       const unsigned char label[16])
{
    return bsearch(label, blocks, n, SR_SSE_SEGMENT_BLOCK_BYTES, cmp_label);
}

/* Reads keyword kw's postings from a segment whose last batch is
 * last_batch the way a search does (until a miss or a block with fewer
 * than 32 ids); also returns the number of blocks stored for it (until the
 * first missing label). */
static size_t read_postings(uint64_t *out, size_t *stored, const unsigned char *blocks, size_t n,
                            const unsigned char kg[32], uint32_t last_batch, uint64_t segment,
                            const char *kw)
{
    unsigned char t[32], s[32], l[16];
    size_t got = 0;
    bool reading = true;
    token(t, kg, 1, kw, last_batch);
    sr_sse_segment_key(s, t, segment);
    *stored = 0;
    for (uint32_t i = 0;; i++) {
        uint64_t seqs[SR_SSE_BLOCK_IDS];
        size_t cnt;
        sr_sse_block_label(l, s, i);
        const unsigned char *b = find_block(blocks, n, l);
        if (!b)
            break;
        (*stored)++;
        assert_int_equal(sr_sse_block_open(seqs, &cnt, s, segment, i, b + 16), SR_E2E_OK);
        if (!reading) {
            assert_int_equal(cnt, 0); /* padding after the last real block */
            continue;
        }
        memcpy(out + got, seqs, cnt * sizeof *seqs);
        got += cnt;
        if (cnt < SR_SSE_BLOCK_IDS)
            reading = false;
    }
    return got;
}

static size_t pow2(size_t m)
{
    size_t p = 1;
    while (p < m)
        p <<= 1;
    return p;
}

static void test_segment_roundtrip(void **state)
{
    enum { NDOCS = 400, NWORDS = 60 };
    unsigned char kg[32], *blocks;
    size_t nblocks;
    sr_sse_doc *docs = calloc(NDOCS, sizeof *docs);
    /* want[w] = seqs containing word w, descending. */
    static uint64_t want[NWORDS][NDOCS];
    size_t nwant[NWORDS] = {0};
    (void)state;
    vector_kg(kg);

    /* Docs in a shuffled seq order; word w in doc d with a probability
     * falling with w, so posting lists span 0 .. 400 (block counts 1, 2,
     * 3 -> 4, ...). Words 0..2 are in exactly 32, 33 and 65 docs. */
    for (size_t d = 0; d < NDOCS; d++) {
        char text[NWORDS * 8] = "";
        uint64_t seq = 1000 + ((d * 7919) % NDOCS) * 3;
        docs[d].seq = seq;
        for (size_t w = 0; w < NWORDS; w++) {
            bool in = w == 0 ? d < 32 : w == 1 ? d < 33 : w == 2 ? d < 65
                    : rnd() % NWORDS < NWORDS - w;
            if (in) {
                char one[32];
                snprintf(one, sizeof one, "w%zu ", w);
                strcat(text, one);
            }
        }
        keywords(&docs[d].kws, text);
    }
    for (size_t w = 0; w < NWORDS; w++) {
        char kw[32];
        snprintf(kw, sizeof kw, "w%zu", w);
        for (uint64_t seq = 1000 + 3 * (NDOCS - 1) + 1; seq-- > 1000;)
            for (size_t d = 0; d < NDOCS; d++)
                if (docs[d].seq == seq && sr_sse_keywords_contains(&docs[d].kws, kw, strlen(kw)))
                    want[w][nwant[w]++] = seq;
    }
    assert_int_equal(nwant[0], 32);
    assert_int_equal(nwant[1], 33);
    assert_int_equal(nwant[2], 65);

    assert_int_equal(sr_sse_segment_build(kg, 1, 17, 4242, docs, NDOCS, &blocks, &nblocks),
                     SR_E2E_OK);
    for (size_t i = 1; i < nblocks; i++)
        assert_true(memcmp(blocks + (i - 1) * SR_SSE_SEGMENT_BLOCK_BYTES,
                           blocks + i * SR_SSE_SEGMENT_BLOCK_BYTES, 16) < 0);
    size_t total = 0;
    uint64_t got[NDOCS];
    for (size_t w = 0; w < NWORDS; w++) {
        char kw[32];
        size_t stored;
        snprintf(kw, sizeof kw, "w%zu", w);
        size_t n = read_postings(got, &stored, blocks, nblocks, kg, 17, 4242, kw);
        assert_int_equal(n, nwant[w]);
        assert_memory_equal(got, want[w], n * sizeof *got);
        size_t expect_blocks = nwant[w] ? pow2((nwant[w] + 31) / 32) : 0;
        assert_int_equal(stored, expect_blocks);
        total += stored;
    }
    assert_int_equal(total, nblocks);
    /* 32 ids fill one block exactly, 33 take 2, 65 take 3 padded to 4. */
    size_t stored;
    read_postings(got, &stored, blocks, nblocks, kg, 17, 4242, "w0");
    assert_int_equal(stored, 1);
    read_postings(got, &stored, blocks, nblocks, kg, 17, 4242, "w2");
    assert_int_equal(stored, 4);
    /* Another segment id or last batch finds nothing. */
    assert_int_equal(read_postings(got, &stored, blocks, nblocks, kg, 17, 4243, "w5"), 0);
    assert_int_equal(read_postings(got, &stored, blocks, nblocks, kg, 18, 4242, "w5"), 0);
    free(blocks);

    /* A posting listed twice is refused. */
    docs[1].seq = docs[0].seq;
    assert_int_equal(sr_sse_segment_build(kg, 1, 17, 4242, docs, NDOCS, &blocks, &nblocks),
                     SR_E2E_ERR_INVALID);
    assert_null(blocks);
    assert_int_equal(nblocks, 0);
    sr_sse_doc bare = {.seq = 5};
    assert_int_equal(sr_sse_segment_build(kg, 0, 17, 4242, &bare, 1, &blocks, &nblocks),
                     SR_E2E_ERR_INVALID);
    assert_int_equal(sr_sse_segment_build(kg, 1, 0, 4242, &bare, 1, &blocks, &nblocks),
                     SR_E2E_ERR_INVALID);
    for (size_t d = 0; d < NDOCS; d++)
        sr_sse_keywords_free(&docs[d].kws);
    free(docs);
}

/* A segment without postings (messages whose text has no keyword, or no
 * messages) is one dummy block, not none: zero blocks would tell the
 * component that none of the messages has a keyword. The block is fresh
 * each time (a random key, not one the component could derive or
 * recognise), and a search for any word reaches nothing in it. */
static void test_segment_no_postings(void **state)
{
    unsigned char kg[32], *blocks[2];
    size_t nblocks[2];
    uint64_t got[4];
    size_t stored;
    sr_sse_doc docs[3] = {{.seq = 9}, {.seq = 7}, {.seq = 5}};
    (void)state;
    vector_kg(kg);
    keywords(&docs[1].kws, ":-) !!! ... --");
    assert_int_equal(docs[1].kws.n, 0);

    for (int k = 0; k < 2; k++) {
        assert_int_equal(sr_sse_segment_build(kg, 1, 17, 4242, docs, 3, &blocks[k], &nblocks[k]),
                         SR_E2E_OK);
        assert_non_null(blocks[k]);
        assert_int_equal(nblocks[k], 1);
    }
    assert_memory_not_equal(blocks[0], blocks[1], SR_SSE_LABEL_BYTES);
    assert_memory_not_equal(blocks[0] + SR_SSE_LABEL_BYTES, blocks[1] + SR_SSE_LABEL_BYTES,
                            SR_SSE_BLOCK_BYTES);
    const char *words[] = {"a", "tokyo", "w0", "0"};
    for (size_t w = 0; w < sizeof words / sizeof *words; w++) {
        assert_int_equal(read_postings(got, &stored, blocks[0], 1, kg, 17, 4242, words[w]), 0);
        assert_int_equal(stored, 0);
    }
    free(blocks[0]);
    free(blocks[1]);

    /* No messages at all: the same one dummy block. */
    assert_int_equal(sr_sse_segment_build(kg, 1, 17, 4242, NULL, 0, &blocks[0], &nblocks[0]),
                     SR_E2E_OK);
    assert_non_null(blocks[0]);
    assert_int_equal(nblocks[0], 1);
    free(blocks[0]);
    sr_sse_keywords_free(&docs[1].kws);
}

/* Everything a holder of nodes[0..n), the cover of [1, hi] of a keyword,
 * can do with a segment's blocks: walk the nodes down to every leaf b of
 * [1, hi], derive S = S_{w,s} from t_{w,b}, and for every block index i
 * look for the block labelled BL(S, i) and try BK(S) on every block.
 * Returns how many blocks were found or opened; *nseqs counts the seqs of
 * those that opened. */
static size_t blocks_reached(size_t *nseqs, const sr_sse_node *nodes, size_t n, uint32_t hi,
                             uint64_t segment, const unsigned char *blocks, size_t nblocks)
{
    unsigned char t[32], s[32], l[16];
    uint64_t seqs[SR_SSE_BLOCK_IDS];
    size_t reached = 0, cnt;

    *nseqs = 0;
    for (size_t j = 0; j < nblocks; j++) {
        const unsigned char *blk = blocks + j * SR_SSE_SEGMENT_BLOCK_BYTES;
        bool found = false;
        for (uint32_t b = 1; b <= hi && !found; b++) {
            assert_int_equal(leaf_via_cover(t, nodes, n, b), 1);
            sr_sse_segment_key(s, t, segment);
            for (uint32_t i = 0; i < nblocks && !found; i++) {
                sr_sse_block_label(l, s, i);
                if (sr_sse_block_open(seqs, &cnt, s, segment, i, blk + SR_SSE_LABEL_BYTES) ==
                    SR_E2E_OK) {
                    found = true;
                    *nseqs += cnt;
                } else {
                    found = memcmp(l, blk, SR_SSE_LABEL_BYTES) == 0;
                }
            }
        }
        reached += found;
    }
    sodium_memzero(t, sizeof t);
    sodium_memzero(s, sizeof s);
    return reached;
}

/* Forward privacy of segments: a segment merging batches 1..5 is keyed by
 * its last batch, so a cover of [1, 3], a token issued when batch 3 was
 * the newest and kept by the server, derives no key that finds or opens
 * any of its blocks, although they also list messages of batches 1..3
 * (which that token still finds in batches not yet compacted). Keyed by
 * the first batch, that cover would reach t_{w,1} and read the messages
 * of batches 4 and 5, written after the token. The cover of [1, 5] opens
 * every block. */
static void test_segment_forward_privacy(void **state)
{
    enum { LAST = 5, OLD_HI = 3, PER_BATCH = 8, SEGMENT = 99 };
    unsigned char kg[32], root[32], *blocks;
    size_t nblocks, nseqs, n;
    sr_sse_doc docs[LAST * PER_BATCH];
    sr_sse_node nodes[SR_SSE_COVER_MAX];
    (void)state;
    vector_kg(kg);

    /* 8 messages in each of batches 1..5, each saying "paid": 40 postings,
     * blocks of 32 and 8. The builder needs only the last batch. */
    for (size_t d = 0; d < LAST * PER_BATCH; d++) {
        docs[d].seq = 100 + d;
        keywords(&docs[d].kws, "paid");
    }
    assert_int_equal(
        sr_sse_segment_build(kg, 1, LAST, SEGMENT, docs, LAST * PER_BATCH, &blocks, &nblocks),
        SR_E2E_OK);
    assert_int_equal(nblocks, 2);
    assert_int_equal(sr_sse_root(root, kg, 1, "paid", 4), SR_E2E_OK);

    n = sr_sse_cover(nodes, SR_SSE_COVER_MAX, root, 1, OLD_HI);
    assert_true(n > 0);
    assert_int_equal(blocks_reached(&nseqs, nodes, n, OLD_HI, SEGMENT, blocks, nblocks), 0);
    assert_int_equal(nseqs, 0);

    n = sr_sse_cover(nodes, SR_SSE_COVER_MAX, root, 1, LAST);
    assert_true(n > 0);
    assert_int_equal(blocks_reached(&nseqs, nodes, n, LAST, SEGMENT, blocks, nblocks), nblocks);
    assert_int_equal(nseqs, LAST * PER_BATCH);

    sodium_memzero(nodes, sizeof nodes);
    sodium_memzero(root, sizeof root);
    free(blocks);
    for (size_t d = 0; d < LAST * PER_BATCH; d++)
        sr_sse_keywords_free(&docs[d].kws);
}

/* A segment as large as a compaction of 8 full batches produces: 100,000
 * postings over 5,000 messages and 3,000 words (Zipf-like reuse). */
static void test_segment_large(void **state)
{
    enum { NDOCS = 5000, PER = 20, VOCAB = 3000 };
    unsigned char kg[32], *blocks;
    size_t nblocks;
    sr_sse_doc *docs = calloc(NDOCS, sizeof *docs);
    (void)state;
    vector_kg(kg);
    for (size_t d = 0; d < NDOCS; d++) {
        docs[d].seq = d + 1;
        sr_sse_keywords *k = &docs[d].kws;
        k->kw = calloc(PER, sizeof *k->kw);
        k->len = calloc(PER, sizeof *k->len);
        for (size_t i = 0; i < PER; i++) {
            /* Slot i draws from its own 150 words, so a doc's words are
             * distinct; low words of each slot are the frequent ones. */
            uint64_t spread = rnd() % (VOCAB / PER) + 1;
            size_t w = i * (VOCAB / PER) + (size_t)(rnd() % spread);
            char buf[32];
            snprintf(buf, sizeof buf, "v%zu", w);
            k->kw[i] = strdup(buf);
            k->len[i] = strlen(buf);
            k->n = i + 1;
        }
    }
    clock_t t0 = clock();
    assert_int_equal(sr_sse_segment_build(kg, 1, 1, 1, docs, NDOCS, &blocks, &nblocks), SR_E2E_OK);
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    print_message("segment of %d postings: %zu blocks in %.2f s\n", NDOCS * PER, nblocks, secs);
    size_t stored;
    uint64_t *got = malloc(NDOCS * sizeof *got);
    size_t n = read_postings(got, &stored, blocks, nblocks, kg, 1, 1, "v0");
    assert_true(n > 0);
    for (size_t i = 1; i < n; i++)
        assert_true(got[i] < got[i - 1]);
    free(got);
    free(blocks);
    for (size_t d = 0; d < NDOCS; d++)
        sr_sse_keywords_free(&docs[d].kws);
    free(docs);
}

static void test_segment_vector(void **state)
{
    unsigned char kg[32], *blocks;
    size_t nblocks;
    sr_sse_doc docs[2] = {{.seq = 10}, {.seq = 11}};
    (void)state;
    vector_kg(kg);
    keywords(&docs[0].kws, "alpha beta");
    keywords(&docs[1].kws, "Beta");
    assert_int_equal(sr_sse_segment_build(kg, 1, 5, 7, docs, 2, &blocks, &nblocks), SR_E2E_OK);
    assert_int_equal(nblocks, 2);
    expect_hex("sse.segment", blocks, nblocks * SR_SSE_SEGMENT_BLOCK_BYTES,
               "0bea92e314558c8f8c270f146aed23a25983c3f3bb356f63622b9a5aedad33a0"
               "94f6e341e0f1c4d584b7063ba43d0e3bf8c3e519675f4ccce8db1f3b49399984"
               "209e2dbef097b801767112905b9f99a00577c244a1de75742fed2ed0f8832e87"
               "65a09f0a8bfe8156c6b5f38ea379293c0e31abc85fad25d8d382bc9d9c087b7a"
               "6617674c3831af954b834bb9e212d316f3dc43b64cc400abae868e0658a23cc7"
               "e2cd9a0282b6768aefa11f368754f4f64eb0f30641622aecea9e8a9bcc27f814"
               "f8931eddd1137a85680da4f7e68586dac3f3ab35b94f604ef54df0129a926588"
               "e0a6b24eea0a7177dd7343fe2723df405a0b804c1bc27aff14ea9d635c2cc395"
               "62b743edf980270960cd0f95f289e19bfc5854a890def08c49fbf857222bc028"
               "86955ae5e2da90eee715786fe40af4b873d9ec84721c7600e412335c95a86a9b"
               "f20788374ad4291b9e79443fa4d57e6eb0543c3e8ade1bcc3b250334c48a251f"
               "89242d4ecbf30711712e8483548d188086eebc363de3705f04b4fcbb70b8dbef"
               "a4f1eb2db1bd65ffdd02d2ce24afd66abc70e2aa57ef0e2dae9f7dfe956aef21"
               "2fc39d9869cf46a24d0d1ff896cbb7e2e3458cab8eb430ebd7e8a55fcf3cf963"
               "65d786500e7e6dfcf934a3e75fab42b5ac93ec285267f69f66108b41216d5d2b"
               "a923ec1bcd03b7e139d40a977fa15f8db3e11afc09d1325bd5174cf89877c1bd"
               "c18ae60087b6df10c1781a3502af27e5b2d0bbe7f45248eeebb891a2263372fa"
               "0f5156159cfeb875ee0b3585dbba4339a04fc277651c71cfeda82cfd391b7449"
               "cc17e1db");
    expect_vectors_ok();
    free(blocks);
    sr_sse_keywords_free(&docs[0].kws);
    sr_sse_keywords_free(&docs[1].kws);
}

/* ---- keyring ------------------------------------------------------------------- */

static void test_keyring_roundtrip(void **state)
{
    sr_sse_keyring k = {0}, o;
    unsigned char kk[32], *blob;
    size_t len;
    (void)state;
    fill(kk, 32, 0x60);

    assert_int_equal(sr_sse_keyring_seal(&blob, &len, &k, kk, ROOM, 3), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_sse_keyring_add_generation(&k, 0), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_sse_keyring_add_generation(&k, 1), SR_E2E_OK);
    assert_int_equal(sr_sse_keyring_add_generation(&k, 1), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_sse_keyring_add_generation(&k, 3), SR_E2E_OK);
    assert_int_equal(sr_sse_keyring_add_generation(&k, 2), SR_E2E_ERR_INVALID);
    assert_int_equal(k.n, 2);
    assert_non_null(sr_sse_keyring_key(&k, 1));
    assert_non_null(sr_sse_keyring_key(&k, 3));
    assert_null(sr_sse_keyring_key(&k, 2));
    assert_null(sr_sse_keyring_key(&k, 4));
    assert_memory_not_equal(sr_sse_keyring_key(&k, 1), sr_sse_keyring_key(&k, 3), 32);

    assert_int_equal(sr_sse_keyring_seal(&blob, &len, &k, kk, ROOM, 3), SR_E2E_OK);
    assert_int_equal(len, 24 + 1 + 4 + 2 * 36 + 16);
    assert_int_equal(sr_sse_keyring_open(&o, blob, len, kk, ROOM, 3), SR_E2E_OK);
    assert_int_equal(o.n, 2);
    assert_int_equal(o.gen[0], 1);
    assert_int_equal(o.gen[1], 3);
    assert_memory_equal(o.key[0], k.key[0], 32);
    assert_memory_equal(o.key[1], k.key[1], 32);

    /* Carrying generations into a new keyring with put. */
    sr_sse_keyring c = {0};
    for (size_t i = 0; i < o.n; i++)
        assert_int_equal(sr_sse_keyring_put(&c, o.gen[i], o.key[i]), SR_E2E_OK);
    assert_int_equal(sr_sse_keyring_put(&c, 3, o.key[0]), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_sse_keyring_add_generation(&c, 4), SR_E2E_OK);
    assert_memory_equal(sr_sse_keyring_key(&c, 3), k.key[1], 32);
    sr_sse_keyring_free(&c);
    sr_sse_keyring_free(&o);
    assert_int_equal(o.n, 0);
    assert_null(o.key);

    /* Wrong key, room, epoch; tampering; truncation. */
    kk[0] ^= 1;
    assert_int_equal(sr_sse_keyring_open(&o, blob, len, kk, ROOM, 3), SR_E2E_ERR_DECRYPT);
    kk[0] ^= 1;
    assert_int_equal(sr_sse_keyring_open(&o, blob, len, kk, "other@rooms.example.com", 3),
                     SR_E2E_ERR_DECRYPT);
    assert_int_equal(sr_sse_keyring_open(&o, blob, len, kk, ROOM, 4), SR_E2E_ERR_DECRYPT);
    assert_int_equal(o.n, 0);
    for (size_t i = 0; i < len; i += 17) {
        blob[i] ^= 4;
        assert_int_equal(sr_sse_keyring_open(&o, blob, len, kk, ROOM, 3), SR_E2E_ERR_DECRYPT);
        blob[i] ^= 4;
    }
    assert_int_equal(sr_sse_keyring_open(&o, blob, len - 36, kk, ROOM, 3), SR_E2E_ERR_DECRYPT);
    assert_int_equal(sr_sse_keyring_open(&o, blob, 24 + 16, kk, ROOM, 3), SR_E2E_ERR_MALFORMED);
    assert_int_equal(sr_sse_keyring_open(&o, blob, len, kk, "", 3), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_sse_keyring_open(&o, blob, len, kk, ROOM, 3), SR_E2E_OK);
    sr_sse_keyring_free(&o);
    free(blob);
    sr_sse_keyring_free(&k);
    sr_sse_keyring_free(NULL);
}

static void test_keyring_limits(void **state)
{
    sr_sse_keyring k = {0}, o;
    unsigned char kk[32], *blob;
    size_t len;
    (void)state;
    fill(kk, 32, 0x60);
    for (uint32_t g = 1; g <= SR_SSE_KEYRING_MAX; g++)
        assert_int_equal(sr_sse_keyring_add_generation(&k, g * 2), SR_E2E_OK);
    assert_int_equal(sr_sse_keyring_add_generation(&k, 100000), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_sse_keyring_seal(&blob, &len, &k, kk, ROOM, 9), SR_E2E_OK);
    assert_true(len <= 65536);
    assert_int_equal(len, SR_SSE_KEYRING_BLOB_MAX);
    assert_int_equal(sr_sse_keyring_open(&o, blob, len, kk, ROOM, 9), SR_E2E_OK);
    assert_int_equal(o.n, SR_SSE_KEYRING_MAX);
    assert_memory_equal(sr_sse_keyring_key(&o, 2 * 777), sr_sse_keyring_key(&k, 2 * 777), 32);
    assert_null(sr_sse_keyring_key(&o, 777));
    sr_sse_keyring_free(&o);
    free(blob);
    sr_sse_keyring_free(&k);
}

/* Sealed by search_vectors_check.py itself (nonce 90 91 .. a7, keyring key
 * 60 61 .. 7f, room ROOM, epoch 3, generations 1: 10 11 .. 2f and
 * 4: 30 31 .. 4f): this opener against an independent sealer. */
static const char keyring_blob_hex[] =
    "909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7c3c4c668f493a303"
    "d1a94989c3b667796d9af8e013d44134780753b1b85afd8391faed7e92fac6ec"
    "deac335f503d4d77195deb9533fc5fb28a1c9176f53924062f6b39dc2b3efba9"
    "dcb98e00d6dfc253142d45a3afca0caba9603ce52a";

static void test_keyring_vector(void **state)
{
    unsigned char blob[256], kk[32], k1[32], k4[32];
    size_t len;
    sr_sse_keyring o;
    (void)state;
    fill(kk, 32, 0x60);
    fill(k1, 32, 0x10);
    fill(k4, 32, 0x30);
    assert_int_equal(sodium_hex2bin(blob, sizeof blob, keyring_blob_hex, strlen(keyring_blob_hex),
                                    NULL, &len, NULL),
                     0);
    assert_int_equal(sr_sse_keyring_open(&o, blob, len, kk, ROOM, 3), SR_E2E_OK);
    assert_int_equal(o.n, 2);
    assert_int_equal(o.gen[0], 1);
    assert_int_equal(o.gen[1], 4);
    assert_memory_equal(o.key[0], k1, 32);
    assert_memory_equal(o.key[1], k4, 32);
    sr_sse_keyring_free(&o);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest norm[] = {
        cmocka_unit_test(test_norm_cases),
        cmocka_unit_test(test_norm_edges),
        cmocka_unit_test(test_norm_cap),
    };
    const struct CMUnitTest ggm[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_ggm_cover),
        cmocka_unit_test(test_ggm_misuse),
        cmocka_unit_test(test_blocks),
    };
    const struct CMUnitTest writer[] = {
        cmocka_unit_test(test_writer_counters),
        cmocka_unit_test(test_writer_padding),
        cmocka_unit_test(test_writer_batch_full),
    };
    const struct CMUnitTest segment[] = {
        cmocka_unit_test(test_segment_vector),
        cmocka_unit_test(test_segment_roundtrip),
        cmocka_unit_test(test_segment_no_postings),
        cmocka_unit_test(test_segment_forward_privacy),
        cmocka_unit_test(test_segment_large),
    };
    const struct CMUnitTest keyring[] = {
        cmocka_unit_test(test_keyring_vector),
        cmocka_unit_test(test_keyring_roundtrip),
        cmocka_unit_test(test_keyring_limits),
    };
    int failed = 0;
    failed += cmocka_run_group_tests_name("search_norm", norm, NULL, NULL);
    failed += cmocka_run_group_tests_name("search_ggm", ggm, NULL, NULL);
    failed += cmocka_run_group_tests_name("search_writer", writer, NULL, NULL);
    failed += cmocka_run_group_tests_name("search_segment", segment, NULL, NULL);
    failed += cmocka_run_group_tests_name("search_keyring", keyring, NULL, NULL);
    return failed ? 1 : 0;
}
