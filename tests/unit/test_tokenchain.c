/* Unit tests of a room's cached token chain (component/token.c) as the
 * erasure of tokens trims it (tokenerase.c): after dropping the tokens
 * into epoch e and earlier, Δ(a→c) is refused for every a below e and is
 * unchanged for every a from e on; tokens stored later still extend the
 * chain; dropping below the first epoch changes nothing; dropping past the
 * end empties it. Tokens are small scalars, so every Δ is known exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sodium.h>
#include <string.h>

#include "rekey.h"
#include "service.h"

static void scalar_small(unsigned char out[32], unsigned v)
{
    memset(out, 0, 32);
    out[0] = (unsigned char)v;
}

/* Token e→e+1 is the scalar e + 1: small and non-zero, so every Δ is exact. */
static void put(room *rm, uint64_t e)
{
    unsigned char d[32];
    scalar_small(d, (unsigned)e + 1);
    assert_true(token_chain_put(rm, e, d));
}

/* Δ(a→c) is the product (a+1)·…·c. */
static void expect_delta(const room *rm, uint64_t a, uint64_t c)
{
    unsigned char got[32], want[32], t[32];
    scalar_small(want, 1);
    for (uint64_t e = a; e < c; e++) {
        scalar_small(t, (unsigned)e + 1);
        rk_compose(want, t, want);
    }
    assert_true(token_chain_delta(rm, a, c, got));
    assert_memory_equal(got, want, 32);
}

static void test_drop_below(void **state)
{
    (void)state;
    room rm;
    memset(&rm, 0, sizeof rm);
    unsigned char out[32];
    for (uint64_t e = 3; e < 8; e++)
        put(&rm, e); /* 3→4 … 7→8 */
    expect_delta(&rm, 3, 8);

    token_chain_drop_below(&rm, 2); /* below the first: nothing */
    expect_delta(&rm, 3, 8);
    token_chain_drop_below(&rm, 3);
    expect_delta(&rm, 3, 8);

    token_chain_drop_below(&rm, 5); /* the tokens into 5 and earlier */
    assert_int_equal(rm.token_first, 5);
    assert_int_equal(rm.ntokens, 3);
    assert_false(token_chain_delta(&rm, 3, 8, out));
    assert_false(token_chain_delta(&rm, 4, 6, out));
    expect_delta(&rm, 5, 8);
    expect_delta(&rm, 6, 8);
    expect_delta(&rm, 7, 8);

    put(&rm, 8); /* stored after the erasure */
    expect_delta(&rm, 5, 9);

    token_chain_drop_below(&rm, 20); /* past the end */
    assert_int_equal(rm.ntokens, 0);
    assert_null(rm.tokens);
    assert_false(token_chain_delta(&rm, 8, 9, out));
    put(&rm, 9);
    expect_delta(&rm, 9, 10);
    token_chain_free(&rm);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drop_below),
    };
    return cmocka_run_group_tests_name("tokenchain", tests, NULL, NULL);
}
