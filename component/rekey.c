/* Archive re-keying arithmetic on ristretto255 (rekey.h): token and header
 * checks, token composition, inversion and proof against check headers, and
 * header re-keying, on libsodium alone. */
#include "rekey.h"

#include <sodium.h>
#include <string.h>

bool rk_scalar_ok(const unsigned char s[RK_BYTES])
{
    unsigned char wide[64] = {0};
    unsigned char red[RK_BYTES];

    memcpy(wide, s, RK_BYTES);
    crypto_core_ristretto255_scalar_reduce(red, wide);
    /* Canonical: reducing changes nothing. Tokens are not the epoch keys,
     * but they are erased once used, so compare and wipe as for secrets. */
    bool ok = !sodium_is_zero(s, RK_BYTES) && sodium_memcmp(red, s, RK_BYTES) == 0;
    sodium_memzero(wide, sizeof wide);
    sodium_memzero(red, sizeof red);
    return ok;
}

bool rk_point_ok(const unsigned char p[RK_BYTES])
{
    /* libsodium 1.0.18 ignores the top bit, so it accepts two encodings of
     * each point; RFC 9496 allows only the canonical one, and a second
     * encoding would let the same header be stored twice looking different.
     * It also accepts the identity, which would wrap nothing. */
    return !(p[RK_BYTES - 1] & 0x80) && crypto_core_ristretto255_is_valid_point(p) == 1 &&
           !sodium_is_zero(p, RK_BYTES);
}

void rk_compose(unsigned char out[RK_BYTES], const unsigned char a[RK_BYTES],
                const unsigned char b[RK_BYTES])
{
    /* Through a temporary so that out may alias an input whatever
     * libsodium's internals do. */
    unsigned char t[RK_BYTES];
    crypto_core_ristretto255_scalar_mul(t, a, b);
    memcpy(out, t, RK_BYTES);
    sodium_memzero(t, sizeof t);
}

bool rk_invert(unsigned char out[RK_BYTES], const unsigned char s[RK_BYTES])
{
    unsigned char t[RK_BYTES];
    bool ok = rk_scalar_ok(s) && crypto_core_ristretto255_scalar_invert(t, s) == 0;
    if (ok)
        memcpy(out, t, RK_BYTES);
    else
        sodium_memzero(out, RK_BYTES);
    sodium_memzero(t, sizeof t);
    return ok;
}

bool rk_token_proved(const unsigned char delta[RK_BYTES], const unsigned char hc_from[RK_BYTES],
                     const unsigned char hc_to[RK_BYTES])
{
    unsigned char moved[RK_BYTES];
    /* Public values, but compared as the token handler always did. */
    bool ok = rk_point_ok(hc_from) && rk_point_ok(hc_to) && rk_apply(moved, delta, hc_from) &&
              sodium_memcmp(moved, hc_to, RK_BYTES) == 0;
    sodium_memzero(moved, sizeof moved);
    return ok;
}

bool rk_apply(unsigned char h_out[RK_BYTES], const unsigned char delta[RK_BYTES],
              const unsigned char h_in[RK_BYTES])
{
    unsigned char t[RK_BYTES];
    /* crypto_scalarmult_ristretto255 clears the scalar's top bit rather than
     * reducing it, so a non-canonical Δ would silently be another token.
     * It decodes h_in as rk_point_ok does except for the top bit, and
     * returns -1 for an invalid encoding and for an identity product (which
     * an identity h_in gives): checking the top bit here makes it
     * rk_point_ok without decoding twice, about 7% of the sweep's time per
     * header. test_rekey holds the two to the same answers. */
    bool ok = rk_scalar_ok(delta) && !(h_in[RK_BYTES - 1] & 0x80) &&
              crypto_scalarmult_ristretto255(t, delta, h_in) == 0;
    if (ok)
        memcpy(h_out, t, RK_BYTES);
    else
        sodium_memzero(h_out, RK_BYTES);
    sodium_memzero(t, sizeof t);
    return ok;
}

bool rk_chain_to(unsigned char out[RK_BYTES], const rk_chain *chain, uint64_t a, uint64_t c)
{
    unsigned char acc[RK_BYTES];
    bool ok = false;

    if (!chain || !chain->delta || a >= c || a < chain->first || c - chain->first > chain->n)
        goto out;
    for (uint64_t e = a; e < c; e++) {
        const unsigned char *d = chain->delta[e - chain->first];
        if (!rk_scalar_ok(d)) goto out;
        if (e == a)
            memcpy(acc, d, RK_BYTES);
        else
            rk_compose(acc, d, acc); /* Δ(a→e+1) = Δ(e→e+1)·Δ(a→e) */
    }
    memcpy(out, acc, RK_BYTES);
    ok = true;
out:
    if (!ok) sodium_memzero(out, RK_BYTES);
    sodium_memzero(acc, sizeof acc);
    return ok;
}
