/* Unit tests of component/ssecore.c, the component's own copy of the
 * encrypted-search derivations, against the library's
 * libclient/src/search/ggm.c: both are linked here. Covers the library
 * computes for random ranges are walked down by the component to the very
 * batch tokens the library's writers use, labels and segment keys agree,
 * and blocks the library seals open here to the same seqs. Fixed vectors
 * (computed apart from both with Python's hashlib and the cryptography
 * package over a pure-Python HChaCha20) pin the bytes themselves. Tampered
 * blocks, blocks under another segment, index or key, authentic but
 * malformed blocks and nodes out of range are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sodium.h>
#include <string.h>

#include "search/ggm.h"
#include "ssecore.h"

#define SEGMENT_V 0x0102030405060708ull

static void fill(unsigned char *b, size_t n, unsigned start)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(start + i);
}

static void hex_equal(const unsigned char *got, const char *want_hex)
{
    unsigned char want[SSE_BLOCK_BYTES];
    size_t n = 0;
    assert_int_equal(sodium_hex2bin(want, sizeof want, want_hex, strlen(want_hex), NULL, &n, NULL),
                     0);
    assert_memory_equal(got, want, n);
}

static uint32_t random_u32_in(uint64_t lo, uint64_t hi)
{
    uint64_t span = hi - lo + 1;
    uint64_t r = ((uint64_t)randombytes_random() << 32 | randombytes_random()) % span;
    return (uint32_t)(lo + r);
}

static void test_vectors(void **state)
{
    (void)state;
    unsigned char node[32], out[32], label[16], s[32], bk[32], body[SSE_BLOCK_BYTES];
    uint64_t seqs[SSE_BLOCK_IDS];
    size_t n = 99;

    fill(node, 32, 0);
    sse_child(out, node, 0);
    hex_equal(out, "1bcbd1b7e454620e74f9a5b93ad5af5fb7d4ce685317e4d9552d2c4a6f60e54b");
    sse_child(out, node, 1);
    hex_equal(out, "7a91e793489ad66de60a0c20d5bf1c8488bd5f12858902e5eca93804ac1d914e");
    assert_true(sse_descend(out, 0, 0, node, 0xA5A5A5A5u));
    hex_equal(out, "f9d302f656c7c27e6a26b05e6687cd11565ce4ead71aa1e77c97efe3add0abaa");
    fill(node, 32, 0x20);
    assert_true(sse_descend(out, 20, 0x12345, node, 0x12345u << 12 | 0xabc));
    hex_equal(out, "d15e30f16feae19e478c4e6f42c32e24e15c5aae7c3d8e6dfe8d541a4de92c02");

    fill(node, 32, 0x40);
    sse_label(label, node, 7);
    hex_equal(label, "8856c64969ff970d236b57297cdc949e");
    sse_segment_key(out, node, SEGMENT_V);
    hex_equal(out, "82bcd870d3e52c3406bc6111020e6556348a7ddadbad67e39d398f068fccea1f");
    fill(s, 32, 0x80);
    sse_block_label(label, s, 3);
    hex_equal(label, "008d1fad39b0d12e59961efaa01c1628");
    sse_block_key(bk, s);
    hex_equal(bk, "f818b9f57ca3c4aedb2be73c9d5931375918f71162073a62c503dd43c6a6b5a4");

    /* Block 3 of segment SEGMENT_V under S = 0x80.., holding 1000, 999, 5. */
    const char *block =
        "74c929ceb762cb7f2ffc0dd317590c262c2831ee915d462dc84a261867f75156c141d52f73a824341a7027"
        "997b01ad0ff489b75374b87071f209f8dfa2412b2444a93ba638b3d4f26e22a7fc617b6bba38494a5e7a09"
        "4ad747a647a253910942f045aabad768b26bf0d47fc1cfdfe79333f00342a3bb49b8731942d3b16a1a307f"
        "698461fe3d76883d83738dfaeba47c8cb640cadce4835a5407145a518966c2055a44be4274a1b18351357b"
        "bb75850366f0b08ad62f78d130d8e8466306e71154acb0b97fad686123c56f4dc15f6cb409d9ad01678550"
        "569a4d2270085975db963a830bf2b96962c7a8f0aaad4539c3d3e6e74aa47e40decc6f5bd8472f3a7dd049"
        "92f509482641528b7b1b8d4b9bc41a34";
    assert_int_equal(strlen(block), 2 * SSE_BLOCK_BYTES);
    assert_int_equal(sodium_hex2bin(body, sizeof body, block, strlen(block), NULL, &n, NULL), 0);
    assert_int_equal(sse_block_open(seqs, &n, bk, SEGMENT_V, 3, body), SSE_OPEN_OK);
    assert_int_equal(n, 3);
    assert_int_equal(seqs[0], 1000);
    assert_int_equal(seqs[1], 999);
    assert_int_equal(seqs[2], 5);
    for (size_t k = 3; k < SSE_BLOCK_IDS; k++)
        assert_int_equal(seqs[k], 0);
}

static void test_node_range(void **state)
{
    (void)state;
    uint64_t lo = 7, hi = 7;
    assert_true(sse_node_range(0, 0, &lo, &hi));
    assert_int_equal(lo, 0);
    assert_int_equal(hi, UINT32_MAX);
    assert_true(sse_node_range(32, UINT32_MAX, &lo, &hi));
    assert_int_equal(lo, UINT32_MAX);
    assert_int_equal(hi, UINT32_MAX);
    assert_true(sse_node_range(20, 0x12345, &lo, &hi));
    assert_int_equal(lo, 0x12345000u);
    assert_int_equal(hi, 0x12345fffu);
    assert_true(sse_node_range(1, 1, &lo, &hi));
    assert_int_equal(lo, 0x80000000u);
    assert_int_equal(hi, UINT32_MAX);
    lo = hi = 7;
    assert_false(sse_node_range(33, 0, &lo, &hi));
    assert_false(sse_node_range(255, 0, &lo, &hi));
    assert_false(sse_node_range(0, 1, &lo, &hi));
    assert_false(sse_node_range(31, 0x80000000u, &lo, &hi));
    assert_false(sse_node_range(1, 2, &lo, &hi));
    assert_int_equal(lo, 7);
    assert_int_equal(hi, 7);
}

static void test_child_matches_library(void **state)
{
    (void)state;
    unsigned char node[32], a[32], b[32];
    for (int i = 0; i < 200; i++) {
        randombytes_buf(node, sizeof node);
        for (unsigned bit = 0; bit < 2; bit++) {
            sse_child(a, node, bit);
            sr_sse_child(b, node, (int)bit);
            assert_memory_equal(a, b, 32);
        }
        /* In place, as the descent uses it. */
        memcpy(a, node, 32);
        sse_child(a, a, 1);
        assert_memory_equal(a, b, 32);
    }
}

/* The leaf b through node k of a library cover, by sse_descend and by a
 * walk, is the library's batch token. */
static void check_leaf(const unsigned char root[32], const sr_sse_node *k, sse_walk *w, uint32_t b)
{
    unsigned char want[32], got[32];
    sr_sse_leaf(want, root, b);
    assert_true(sse_descend(got, k->depth, k->prefix, k->key, b));
    assert_memory_equal(got, want, 32);
    assert_true(sse_walk_leaf(w, got, b));
    assert_memory_equal(got, want, 32);
}

static void check_cover(const unsigned char root[32], uint32_t lo, uint32_t hi)
{
    sr_sse_node cover[SR_SSE_COVER_MAX];
    size_t n = sr_sse_cover(cover, SR_SSE_COVER_MAX, root, lo, hi);
    assert_true(n >= 1 && n <= 62);
    uint64_t next = lo;
    for (size_t i = 0; i < n; i++) {
        uint64_t nlo, nhi;
        sse_walk w;
        unsigned char got[32];
        assert_true(sse_node_range(cover[i].depth, cover[i].prefix, &nlo, &nhi));
        /* The library's covers partition [lo, hi] in order. */
        assert_int_equal(nlo, next);
        assert_true(nhi <= hi);
        next = nhi + 1;
        assert_true(sse_walk_init(&w, cover[i].depth, cover[i].prefix, cover[i].key));
        /* Ends, increasing random leaves, then random order, then ends again. */
        check_leaf(root, &cover[i], &w, (uint32_t)nlo);
        uint32_t b = (uint32_t)nlo;
        for (int j = 0; j < 12 && b < nhi; j++) {
            b = random_u32_in(b + 1, b + 1 + (nhi - b - 1) / 4);
            check_leaf(root, &cover[i], &w, b);
        }
        for (int j = 0; j < 8; j++)
            check_leaf(root, &cover[i], &w, random_u32_in(nlo, nhi));
        check_leaf(root, &cover[i], &w, (uint32_t)nhi);
        check_leaf(root, &cover[i], &w, (uint32_t)nlo);
        /* Leaves outside the node are refused and nothing leaks. */
        if (nlo > 0) {
            memset(got, 0xaa, sizeof got);
            assert_false(
                sse_descend(got, cover[i].depth, cover[i].prefix, cover[i].key, (uint32_t)nlo - 1));
            assert_true(sodium_is_zero(got, sizeof got));
            memset(got, 0xaa, sizeof got);
            assert_false(sse_walk_leaf(&w, got, (uint32_t)nlo - 1));
            assert_true(sodium_is_zero(got, sizeof got));
        }
        if (nhi < UINT32_MAX) {
            memset(got, 0xaa, sizeof got);
            assert_false(
                sse_descend(got, cover[i].depth, cover[i].prefix, cover[i].key, (uint32_t)nhi + 1));
            assert_true(sodium_is_zero(got, sizeof got));
            assert_false(sse_walk_leaf(&w, got, (uint32_t)nhi + 1));
        }
        /* A refusal leaves the walk usable. */
        check_leaf(root, &cover[i], &w, (uint32_t)nhi);
        sse_walk_wipe(&w);
        assert_true(sodium_is_zero((const unsigned char *)&w, sizeof w));
    }
    assert_int_equal(next, (uint64_t)hi + 1);
    sodium_memzero(cover, sizeof cover);
}

static void test_leaves_match_library(void **state)
{
    (void)state;
    unsigned char root[32];
    randombytes_buf(root, sizeof root);
    check_cover(root, 1, 1);
    check_cover(root, 1, 2);
    check_cover(root, 1, 100);
    check_cover(root, 1, UINT32_MAX);
    check_cover(root, UINT32_MAX, UINT32_MAX);
    check_cover(root, 2, UINT32_MAX - 1);
    check_cover(root, 0x80000000u, 0x80000000u);
    for (int i = 0; i < 40; i++) {
        randombytes_buf(root, sizeof root);
        uint32_t a = random_u32_in(1, i % 2 ? 5000 : UINT32_MAX);
        uint32_t b = random_u32_in(1, i % 2 ? 5000 : UINT32_MAX);
        check_cover(root, a < b ? a : b, a < b ? b : a);
    }
    /* The root itself as a node (depth 0) reaches every batch. */
    sse_walk w;
    sr_sse_node whole = {0, 0, {0}};
    memcpy(whole.key, root, 32);
    assert_true(sse_walk_init(&w, 0, 0, root));
    check_leaf(root, &whole, &w, 1);
    check_leaf(root, &whole, &w, UINT32_MAX);
    check_leaf(root, &whole, &w, 0x7fffffffu);
    sse_walk_wipe(&w);
    /* Malformed nodes. */
    unsigned char out[32];
    assert_false(sse_walk_init(&w, 33, 0, root));
    assert_false(sse_walk_init(&w, 3, 8, root));
    assert_false(sse_descend(out, 33, 0, root, 1));
    assert_false(sse_descend(out, 3, 8, root, 1));
}

static void test_labels_match_library(void **state)
{
    (void)state;
    unsigned char t[32], a[32], b[32];
    const uint32_t counters[] = {0, 1, 15, 16, 255, 256, 65535, 65536, UINT32_MAX};
    const uint64_t segments[] = {1, 2, 255, 256, 0x100000000ull, UINT64_MAX};
    for (int round = 0; round < 20; round++) {
        randombytes_buf(t, sizeof t);
        for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++) {
            sse_label(a, t, counters[i]);
            sr_sse_label(b, t, counters[i]);
            assert_memory_equal(a, b, SSE_LABEL_BYTES);
            sse_block_label(a, t, counters[i]);
            sr_sse_block_label(b, t, counters[i]);
            assert_memory_equal(a, b, SSE_LABEL_BYTES);
        }
        for (size_t i = 0; i < sizeof segments / sizeof segments[0]; i++) {
            sse_segment_key(a, t, segments[i]);
            sr_sse_segment_key(b, t, segments[i]);
            assert_memory_equal(a, b, 32);
        }
    }
    /* Entry labels and block labels are different derivations. */
    sse_label(a, t, 0);
    sse_block_label(b, t, 0);
    assert_memory_not_equal(a, b, SSE_LABEL_BYTES);
}

/* n random strictly descending seqs, all >= 1. */
static void random_seqs(uint64_t *seqs, size_t n)
{
    uint64_t next = 1 + randombytes_uniform(1000);
    for (size_t k = n; k-- > 0;) {
        seqs[k] = next;
        next += 1 + randombytes_uniform(k % 3 ? 3 : 100000);
    }
}

static void test_block_open_library_blocks(void **state)
{
    (void)state;
    unsigned char s[32], bk[32], other[32], body[SSE_BLOCK_BYTES];
    uint64_t want[SSE_BLOCK_IDS], got[SSE_BLOCK_IDS];
    size_t n;
    for (size_t count = 0; count <= SSE_BLOCK_IDS; count++) {
        randombytes_buf(s, sizeof s);
        uint64_t seg = count % 2 ? 1 + randombytes_uniform(1000) : UINT64_MAX - count;
        uint32_t idx = count % 3 ? (uint32_t)count : UINT32_MAX;
        random_seqs(want, count);
        if (count == 1) want[0] = UINT64_MAX; /* the full u64 survives */
        assert_int_equal(sr_sse_block_seal(body, s, seg, idx, want, count), SR_E2E_OK);
        sse_block_key(bk, s);
        n = 99;
        assert_int_equal(sse_block_open(got, &n, bk, seg, idx, body), SSE_OPEN_OK);
        assert_int_equal(n, count);
        for (size_t k = 0; k < count; k++)
            assert_int_equal(got[k], want[k]);
        for (size_t k = count; k < SSE_BLOCK_IDS; k++)
            assert_int_equal(got[k], 0);

        /* Another segment, index or key. */
        n = 99;
        assert_int_equal(sse_block_open(got, &n, bk, seg ^ 1, idx, body), SSE_OPEN_DECRYPT);
        assert_int_equal(n, 0);
        assert_int_equal(sse_block_open(got, &n, bk, seg, idx ^ 1, body), SSE_OPEN_DECRYPT);
        memcpy(other, bk, 32);
        other[count % 32] ^= 0x01;
        assert_int_equal(sse_block_open(got, &n, other, seg, idx, body), SSE_OPEN_DECRYPT);
        /* The segment key itself is not the block key. */
        assert_int_equal(sse_block_open(got, &n, s, seg, idx, body), SSE_OPEN_DECRYPT);
        for (size_t k = 0; k < SSE_BLOCK_IDS; k++)
            assert_int_equal(got[k], 0);
    }
    /* Every bit of a block matters. */
    random_seqs(want, 20);
    assert_int_equal(sr_sse_block_seal(body, s, 9, 4, want, 20), SR_E2E_OK);
    sse_block_key(bk, s);
    for (size_t i = 0; i < SSE_BLOCK_BYTES; i++) {
        unsigned char bit = (unsigned char)(1u << (i % 8));
        body[i] ^= bit;
        n = 99;
        assert_int_equal(sse_block_open(got, &n, bk, 9, 4, body), SSE_OPEN_DECRYPT);
        assert_int_equal(n, 0);
        body[i] ^= bit;
    }
    assert_int_equal(sse_block_open(got, &n, bk, 9, 4, body), SSE_OPEN_OK);
    assert_int_equal(n, 20);
}

/* An authentic block with any plaintext, sealed as the library would. */
static void seal_raw(unsigned char body[SSE_BLOCK_BYTES], const unsigned char bk[32], uint64_t seg,
                     uint32_t idx, const unsigned char pt[2 + 8 * SSE_BLOCK_IDS])
{
    unsigned char nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES] = {0}, ad[12];
    unsigned long long clen;
    for (int k = 0; k < 4; k++)
        nonce[sizeof nonce - 4 + k] = (unsigned char)(idx >> (24 - 8 * k));
    for (int k = 0; k < 8; k++)
        ad[k] = (unsigned char)(seg >> (56 - 8 * k));
    memcpy(ad + 8, nonce + sizeof nonce - 4, 4);
    assert_int_equal(crypto_aead_xchacha20poly1305_ietf_encrypt(
                         body, &clen, pt, 2 + 8 * SSE_BLOCK_IDS, ad, sizeof ad, NULL, nonce, bk),
                     0);
    assert_int_equal(clen, SSE_BLOCK_BYTES);
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        p[k] = (unsigned char)(v >> (56 - 8 * k));
}

/* Refused by both implementations: lib_too is false for the one check
 * only the component makes (seq 0). */
static void check_malformed(const unsigned char pt[2 + 8 * SSE_BLOCK_IDS], bool lib_too)
{
    unsigned char s[32], bk[32], body[SSE_BLOCK_BYTES];
    uint64_t got[SSE_BLOCK_IDS];
    size_t n = 99;
    randombytes_buf(s, sizeof s);
    sse_block_key(bk, s);
    seal_raw(body, bk, 77, 2, pt);
    assert_int_equal(sse_block_open(got, &n, bk, 77, 2, body), SSE_OPEN_MALFORMED);
    assert_int_equal(n, 0);
    for (size_t k = 0; k < SSE_BLOCK_IDS; k++)
        assert_int_equal(got[k], 0);
    if (lib_too) assert_int_equal(sr_sse_block_open(got, &n, s, 77, 2, body), SR_E2E_ERR_MALFORMED);
}

static void test_block_open_malformed(void **state)
{
    (void)state;
    unsigned char pt[2 + 8 * SSE_BLOCK_IDS], s[32], bk[32], body[SSE_BLOCK_BYTES];
    uint64_t got[SSE_BLOCK_IDS];
    size_t n;

    /* The raw sealer is right: a well-formed plaintext opens. */
    memset(pt, 0, sizeof pt);
    pt[1] = 2;
    put64(pt + 2, 50);
    put64(pt + 10, 49);
    randombytes_buf(s, sizeof s);
    sse_block_key(bk, s);
    seal_raw(body, bk, 77, 2, pt);
    assert_int_equal(sse_block_open(got, &n, bk, 77, 2, body), SSE_OPEN_OK);
    assert_int_equal(n, 2);
    assert_int_equal(sr_sse_block_open(got, &n, s, 77, 2, body), SR_E2E_OK);

    /* Equal neighbours, then ascending. */
    put64(pt + 10, 50);
    check_malformed(pt, true);
    put64(pt + 10, 51);
    check_malformed(pt, true);
    /* A count over 32 (33, and one whose high byte only is set). */
    put64(pt + 10, 49);
    pt[1] = 33;
    check_malformed(pt, true);
    pt[0] = 1;
    pt[1] = 2;
    check_malformed(pt, true);
    pt[0] = 0;
    /* Non-zero padding, right after the last seq and at the very end. */
    pt[18] = 1;
    check_malformed(pt, true);
    pt[18] = 0;
    pt[sizeof pt - 1] = 0x80;
    check_malformed(pt, true);
    pt[sizeof pt - 1] = 0;
    /* A padding block (count 0) with a stray seq. */
    pt[1] = 0;
    check_malformed(pt, true);
    /* Seq 0 is no message. */
    pt[1] = 2;
    put64(pt + 10, 0);
    check_malformed(pt, false);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_node_range),
        cmocka_unit_test(test_child_matches_library),
        cmocka_unit_test(test_leaves_match_library),
        cmocka_unit_test(test_labels_match_library),
        cmocka_unit_test(test_block_open_library_blocks),
        cmocka_unit_test(test_block_open_malformed),
    };
    return cmocka_run_group_tests_name("ssecore", tests, NULL, NULL);
}
