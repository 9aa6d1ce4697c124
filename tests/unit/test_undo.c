/* Unit tests of the arithmetic of undoing re-encryption tokens
 * (component/rekey.c: rk_invert, rk_token_proved), against the library's
 * e2e core (libclient/src/e2e/archive.c): the inverse is the library's
 * byte for byte, and a header carried through a chain of tokens one of
 * which is wrong comes back, with the product of the inverses of the tokens
 * it went through, to exactly the header it had before the wrong one (the
 * sweep's undo, sweep.c). A token is proved by the check headers of its two
 * epochs only if it is the right one; invalid scalars and check headers are
 * refused. The undo itself against PostgreSQL is in test_sweep. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sodium.h>
#include <string.h>

#include "e2e/archive.h"
#include "rekey.h"

#define ROOM "undo@rooms.example.com"

/* ℓ = 2^252 + 27742317777372353535851937790883648493, little-endian. */
static const char ELL_HEX[] = "edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010";

static void random_scalar(unsigned char s[32])
{
    do
        crypto_core_ristretto255_scalar_random(s);
    while (sodium_is_zero(s, 32));
}

static void test_invert(void **state)
{
    (void)state;
    unsigned char k1[32], k2[32], d[32], mine[32], lib[32], one[32] = {1}, t[32];
    for (int i = 0; i < 32; i++) {
        random_scalar(k1);
        random_scalar(k2);
        assert_int_equal(sr_e2e_token_make(d, k1, k2), SR_E2E_OK);
        assert_true(rk_invert(mine, d));
        assert_int_equal(sr_e2e_token_invert(lib, d), SR_E2E_OK);
        assert_memory_equal(mine, lib, 32);
        rk_compose(t, mine, d);
        assert_memory_equal(t, one, 32);
        /* In place. */
        memcpy(t, d, 32);
        assert_true(rk_invert(t, t));
        assert_memory_equal(t, lib, 32);
    }
    unsigned char zero[32] = {0}, ell[32];
    assert_int_equal(sodium_hex2bin(ell, 32, ELL_HEX, 64, NULL, NULL, NULL), 0);
    memset(t, 0x55, sizeof t);
    assert_false(rk_invert(t, zero));
    assert_true(sodium_is_zero(t, 32));
    assert_false(rk_invert(t, ell)); /* ℓ itself: not reduced */
    assert_true(sodium_is_zero(t, 32));
}

/* Headers registered in epoch 1 go through the tokens 1→2, 2→3 (wrong)
 * and 3→4 (right, as made from k_3); the undo to epoch 2 multiplies by the
 * inverses of the two tokens they went through from there and gives
 * exactly k_2·P, which k_2 opens to P; the wrong step's own inverse alone
 * would not. */
static void test_undo_through_wrong_token(void **state)
{
    (void)state;
    unsigned char k[5][32], d12[32], wrong[32], d34[32], p[32], h[32], want[32];
    for (int e = 1; e <= 4; e++)
        random_scalar(k[e]);
    assert_int_equal(sr_e2e_token_make(d12, k[1], k[2]), SR_E2E_OK);
    random_scalar(wrong);
    assert_int_equal(sr_e2e_token_make(d34, k[3], k[4]), SR_E2E_OK);
    for (int i = 0; i < 16; i++) {
        assert_int_equal(sr_e2e_datakey_random(p), SR_E2E_OK);
        assert_int_equal(sr_e2e_header_wrap(h, k[1], p), SR_E2E_OK);
        unsigned char moved[32], chain[32], inv[32], inv2[32], back[32], opened[32];
        rk_compose(chain, wrong, d12);
        rk_compose(chain, d34, chain);
        assert_true(rk_apply(moved, chain, h)); /* at epoch 4, through the wrong token */
        assert_true(sr_e2e_header_unwrap(opened, k[4], moved) == SR_E2E_OK);
        assert_memory_not_equal(opened, p, 32);
        /* Δ(2→4)⁻¹ = Δ(2→3)⁻¹·Δ(3→4)⁻¹, as the sweep composes it. */
        assert_true(rk_invert(inv, wrong));
        assert_true(rk_invert(inv2, d34));
        rk_compose(inv, inv, inv2);
        assert_true(rk_apply(back, inv, moved));
        assert_int_equal(sr_e2e_header_wrap(want, k[2], p), SR_E2E_OK);
        assert_memory_equal(back, want, 32);
        assert_true(sr_e2e_header_unwrap(opened, k[2], back) == SR_E2E_OK);
        assert_memory_equal(opened, p, 32);
        /* Only the revoked token's inverse: not the header of any epoch. */
        assert_true(rk_invert(inv, wrong));
        assert_true(rk_apply(back, inv, moved));
        assert_memory_not_equal(back, want, 32);
    }
}

static void test_token_proved(void **state)
{
    (void)state;
    unsigned char k1[32], k2[32], d[32], wrong[32], hc1[32], hc2[32], bad[32];
    random_scalar(k1);
    random_scalar(k2);
    assert_int_equal(sr_e2e_token_make(d, k1, k2), SR_E2E_OK);
    assert_int_equal(sr_e2e_check_header(hc1, k1, ROOM), SR_E2E_OK);
    assert_int_equal(sr_e2e_check_header(hc2, k2, ROOM), SR_E2E_OK);
    assert_true(rk_token_proved(d, hc1, hc2));
    random_scalar(wrong);
    assert_false(rk_token_proved(wrong, hc1, hc2));
    assert_false(rk_token_proved(d, hc2, hc1)); /* the other way round */
    unsigned char inv[32];
    assert_true(rk_invert(inv, d));
    assert_true(rk_token_proved(inv, hc2, hc1)); /* the undo is proved the other way */
    unsigned char zero[32] = {0};
    assert_false(rk_token_proved(zero, hc1, hc2));
    memcpy(bad, hc2, 32);
    bad[31] |= 0x80; /* a second encoding of the same point */
    assert_false(rk_token_proved(d, hc1, bad));
    assert_false(rk_token_proved(d, zero, hc2)); /* the identity */
    memset(bad, 0xff, sizeof bad);
    assert_false(rk_token_proved(d, bad, hc2));
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invert),
        cmocka_unit_test(test_undo_through_wrong_token),
        cmocka_unit_test(test_token_proved),
    };
    return cmocka_run_group_tests_name("undo", tests, NULL, NULL);
}
