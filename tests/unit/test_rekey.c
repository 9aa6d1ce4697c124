/* Unit tests of component/rekey.c, the component's own archive re-keying
 * arithmetic, against the library's e2e core (libclient/src/e2e/archive.c):
 * chains of 1 to 5 tokens made by the library re-key a header wrapped under
 * any epoch a to exactly the library's wrap under any later epoch c, and
 * composition agrees byte for byte. A fixed vector on the ristretto255
 * generator (RFC 9496 A.1) pins the bytes independently of both. Invalid
 * points, non-canonical or zero scalars and chains that do not cover the
 * range asked are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "e2e/archive.h"
#include "rekey.h"

#define MAXT 5

static void hex32(unsigned char out[32], const char *hex)
{
    assert_int_equal(sodium_hex2bin(out, 32, hex, 64, NULL, NULL, NULL), 0);
}

static void scalar_small(unsigned char out[32], unsigned v)
{
    memset(out, 0, 32);
    out[0] = (unsigned char)v;
}

/* ℓ = 2^252 + 27742317777372353535851937790883648493, little-endian. */
static const char ELL_HEX[] = "edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010";

/* RFC 9496 A.1: multiples of the generator. */
static const char B1[] = "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76";
static const char B2[] = "6a493210f7499cd17fecb510ae0cea23a110e8d5b901f8acadd3095c73a3b919";
static const char B6[] = "f64746d3c92b13050ed8d80236a7f0007c3b3f962f5ba793d19a601ebb1df403";

static void test_vector_generator(void **state)
{
    (void)state;
    unsigned char b[32], two[32], three[32], want[32], out[32], d[32];
    hex32(b, B1);
    scalar_small(two, 2);
    scalar_small(three, 3);
    assert_true(rk_apply(out, two, b));
    hex32(want, B2);
    assert_memory_equal(out, want, 32);
    /* Chain 1→2 by 2, 2→3 by 3: Δ(1→3) = 6, and 6·B. */
    unsigned char toks[2][32];
    memcpy(toks[0], two, 32);
    memcpy(toks[1], three, 32);
    rk_chain chain = {.first = 1, .n = 2, .delta = toks};
    assert_true(rk_chain_to(d, &chain, 1, 3));
    unsigned char six[32];
    scalar_small(six, 6);
    assert_memory_equal(d, six, 32);
    assert_true(rk_apply(out, d, b));
    hex32(want, B6);
    assert_memory_equal(out, want, 32);
}

static void random_scalar(unsigned char s[32])
{
    do
        crypto_core_ristretto255_scalar_random(s);
    while (sodium_is_zero(s, 32));
}

/* For chains of 1..5 tokens starting at several first epochs: every a < c
 * composes like the library and re-keys k_a·P to the library's k_c·P. */
static void test_chains_match_library(void **state)
{
    (void)state;
    static const uint64_t firsts[] = {1, 7, 4000000000ull};
    for (size_t f = 0; f < sizeof firsts / sizeof firsts[0]; f++) {
        for (size_t n = 1; n <= MAXT; n++) {
            uint64_t first = firsts[f];
            unsigned char k[MAXT + 1][32], toks[MAXT][32], p[32], h[MAXT + 1][32];
            for (size_t i = 0; i <= n; i++)
                random_scalar(k[i]);
            for (size_t i = 0; i < n; i++)
                assert_int_equal(sr_e2e_token_make(toks[i], k[i], k[i + 1]), SR_E2E_OK);
            assert_int_equal(sr_e2e_datakey_random(p), SR_E2E_OK);
            for (size_t i = 0; i <= n; i++)
                assert_int_equal(sr_e2e_header_wrap(h[i], k[i], p), SR_E2E_OK);
            rk_chain chain = {.first = first, .n = n, .delta = toks};
            for (size_t a = 0; a < n; a++) {
                unsigned char lib[32];
                memcpy(lib, toks[a], 32);
                for (size_t c = a + 1; c <= n; c++) {
                    if (c > a + 1)
                        assert_int_equal(sr_e2e_token_compose(lib, toks[c - 1], lib), SR_E2E_OK);
                    unsigned char mine[32], out[32], libout[32];
                    assert_true(rk_chain_to(mine, &chain, first + a, first + c));
                    assert_memory_equal(mine, lib, 32);
                    assert_true(rk_apply(out, mine, h[a]));
                    assert_memory_equal(out, h[c], 32);
                    assert_int_equal(sr_e2e_header_rekey(libout, lib, h[a]), SR_E2E_OK);
                    assert_memory_equal(out, libout, 32);
                    /* In place, as the sweep's callers may do. */
                    memcpy(out, h[a], 32);
                    assert_true(rk_apply(out, mine, out));
                    assert_memory_equal(out, h[c], 32);
                }
            }
            sodium_memzero(k, sizeof k);
        }
    }
}

static void test_compose_matches_library(void **state)
{
    (void)state;
    for (int i = 0; i < 50; i++) {
        unsigned char a[32], b[32], mine[32], lib[32];
        random_scalar(a);
        random_scalar(b);
        rk_compose(mine, a, b);
        assert_int_equal(sr_e2e_token_compose(lib, a, b), SR_E2E_OK);
        assert_memory_equal(mine, lib, 32);
        assert_true(rk_scalar_ok(mine));
        /* out aliasing either input */
        unsigned char x[32];
        memcpy(x, a, 32);
        rk_compose(x, x, b);
        assert_memory_equal(x, lib, 32);
        memcpy(x, b, 32);
        rk_compose(x, a, x);
        assert_memory_equal(x, lib, 32);
    }
}

static void test_scalars(void **state)
{
    (void)state;
    unsigned char s[32], ell[32];
    hex32(ell, ELL_HEX);
    scalar_small(s, 1);
    assert_true(rk_scalar_ok(s));
    memcpy(s, ell, 32);
    s[0]--; /* ℓ − 1 */
    assert_true(rk_scalar_ok(s));
    assert_int_equal(sr_e2e_scalar_check(s), SR_E2E_OK);

    memset(s, 0, 32);
    assert_false(rk_scalar_ok(s));
    assert_false(rk_scalar_ok(ell)); /* ℓ ≡ 0 */
    memcpy(s, ell, 32);
    s[0]++; /* ℓ + 1 ≡ 1, not canonical */
    assert_false(rk_scalar_ok(s));
    memset(s, 0xff, 32);
    assert_false(rk_scalar_ok(s));
    /* A non-canonical scalar below 2^255 that crypto_scalarmult_ristretto255
     * would happily use as some other token. */
    memcpy(s, ell, 32);
    s[31] |= 0x40;
    assert_false(rk_scalar_ok(s));
    /* Random 32-byte strings: agree with the library on every one. */
    for (int i = 0; i < 2000; i++) {
        randombytes_buf(s, 32);
        if (i % 2) s[31] &= 0x1f; /* about half below ℓ's top limb */
        assert_int_equal(rk_scalar_ok(s), sr_e2e_scalar_check(s) == SR_E2E_OK);
    }
}

static void test_points(void **state)
{
    (void)state;
    unsigned char p[32];
    hex32(p, B1);
    assert_true(rk_point_ok(p));
    memset(p, 0, 32); /* the identity */
    assert_false(rk_point_ok(p));
    /* The generator with the top bit set: libsodium 1.0.18 decodes it. */
    hex32(p, B1);
    p[31] |= 0x80;
    assert_false(rk_point_ok(p));
    /* 2^255 − 17 = p + 2: not a reduced field element. */
    memset(p, 0xff, 32);
    p[31] = 0x7f;
    p[0] = 0xef;
    assert_false(rk_point_ok(p));
    /* Negative (odd) encodings are refused by ristretto255. */
    hex32(p, B1);
    p[0] ^= 1;
    assert_false(rk_point_ok(p));
    int valid = 0;
    for (int i = 0; i < 4000; i++) {
        if (i % 2) {
            crypto_core_ristretto255_random(p);
        } else {
            randombytes_buf(p, 32);
        }
        bool ok = rk_point_ok(p);
        valid += ok;
        assert_int_equal(ok, sr_e2e_point_check(p) == SR_E2E_OK);
        /* rk_apply takes exactly the points rk_point_ok takes. */
        unsigned char d[32], out[32];
        random_scalar(d);
        assert_int_equal(rk_apply(out, d, p), ok);
        p[31] |= 0x80;
        assert_false(rk_apply(out, d, p));
        assert_false(rk_point_ok(p));
    }
    assert_true(valid >= 2000); /* the random points, at least */
}

static void test_apply_refuses(void **state)
{
    (void)state;
    unsigned char d[32], h[32], out[32], ell[32];
    random_scalar(d);
    assert_int_equal(sr_e2e_datakey_random(h), SR_E2E_OK);
    assert_true(rk_apply(out, d, h));

    unsigned char bad[32];
    memset(bad, 0, 32);
    memset(out, 0xaa, 32);
    assert_false(rk_apply(out, d, bad)); /* identity header */
    assert_true(sodium_is_zero(out, 32));
    memcpy(bad, h, 32);
    bad[31] |= 0x80;
    memset(out, 0xaa, 32);
    assert_false(rk_apply(out, d, bad)); /* non-canonical header */
    assert_true(sodium_is_zero(out, 32));
    memset(bad, 0, 32);
    memset(out, 0xaa, 32);
    assert_false(rk_apply(out, bad, h)); /* zero token */
    assert_true(sodium_is_zero(out, 32));
    hex32(ell, ELL_HEX);
    memcpy(bad, ell, 32);
    bad[0]++; /* ℓ + 1 */
    memset(out, 0xaa, 32);
    assert_false(rk_apply(out, bad, h));
    assert_true(sodium_is_zero(out, 32));
    /* A refused in-place re-key leaves no half-result either. */
    memcpy(out, h, 32);
    assert_false(rk_apply(out, bad, out));
    assert_true(sodium_is_zero(out, 32));
}

static void test_chain_bounds(void **state)
{
    (void)state;
    unsigned char toks[3][32], out[32];
    for (int i = 0; i < 3; i++)
        random_scalar(toks[i]);
    rk_chain chain = {.first = 5, .n = 3, .delta = toks}; /* 5→6→7→8 */
    assert_true(rk_chain_to(out, &chain, 5, 8));
    assert_true(rk_chain_to(out, &chain, 7, 8));
    assert_true(rk_chain_to(out, &chain, 5, 6));
    assert_memory_equal(out, toks[0], 32);

    static const uint64_t bad[][2] = {
        {4, 8}, {5, 9}, {6, 6}, {7, 6}, {0, 1}, {8, 9}, {UINT64_MAX - 1, UINT64_MAX}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(out, 0xaa, 32);
        assert_false(rk_chain_to(out, &chain, bad[i][0], bad[i][1]));
        assert_true(sodium_is_zero(out, 32));
    }
    assert_false(rk_chain_to(out, NULL, 5, 6));
    rk_chain empty = {.first = 5, .n = 0, .delta = toks};
    assert_false(rk_chain_to(out, &empty, 5, 6));
    rk_chain nodelta = {.first = 5, .n = 3, .delta = NULL};
    assert_false(rk_chain_to(out, &nodelta, 5, 6));

    /* A bad token in the middle breaks only the ranges crossing it. */
    memset(toks[1], 0, 32);
    assert_false(rk_chain_to(out, &chain, 5, 8));
    assert_false(rk_chain_to(out, &chain, 6, 7));
    assert_true(rk_chain_to(out, &chain, 5, 6));
    assert_true(rk_chain_to(out, &chain, 7, 8));
    hex32(toks[1], ELL_HEX);
    assert_false(rk_chain_to(out, &chain, 5, 7));
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_generator),
        cmocka_unit_test(test_chains_match_library),
        cmocka_unit_test(test_compose_matches_library),
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_points),
        cmocka_unit_test(test_apply_refuses),
        cmocka_unit_test(test_chain_bounds),
    };
    return cmocka_run_group_tests_name("rekey", tests, NULL, NULL);
}
