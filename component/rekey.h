/* The component's archive re-keying arithmetic (DESIGN §6, archive-wire
 * "Tokens"): checking tokens and headers, composing a room's token chain
 * Δ(a→c), applying it to a stored header, proving a token against the
 * check headers and inverting it to undo it. Rebuilt here on libsodium,
 * apart from the library's e2e core (libclient/src/e2e/archive.c); a unit
 * test holds the two to the same bytes.
 *
 * Scalars are 32-byte little-endian integers mod ℓ; points are canonical
 * ristretto255 encodings. The component never holds an epoch key: a token
 * Δ(e→f) = k_f·k_e⁻¹ only moves a header H = k_e·P to k_f·P.
 *
 * Thread-safety: pure functions (the sweep's worker threads call them). */
#ifndef SEALROOMD_REKEY_H
#define SEALROOMD_REKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RK_BYTES 32

/* True when s is canonical (reduced mod ℓ) and non-zero: what a token must
 * be before it is stored or used. */
bool rk_scalar_ok(const unsigned char s[RK_BYTES]);

/* True when p is the canonical encoding of a ristretto255 point other than
 * the identity (check headers, data-key headers). */
bool rk_point_ok(const unsigned char p[RK_BYTES]);

/* out = a·b mod ℓ. Composition: Δ(e→g) = Δ(f→g)·Δ(e→f). out may alias a
 * or b. The inputs are not checked: compose only checked tokens (the
 * product of two non-zero scalars mod the prime ℓ is non-zero). */
void rk_compose(unsigned char out[RK_BYTES], const unsigned char a[RK_BYTES],
                const unsigned char b[RK_BYTES]);

/* out = s⁻¹ mod ℓ, the token that undoes s: Δ(e→f)⁻¹ = k_e·k_f⁻¹. False
 * (out zeroed) if s is not a canonical non-zero scalar. out may alias s. */
bool rk_invert(unsigned char out[RK_BYTES], const unsigned char s[RK_BYTES]);

/* True when the stored check headers prove token Δ(e→f): Δ·hc_from is
 * hc_to. Since the check point has prime order, exactly one scalar passes,
 * k_f·k_e⁻¹. False for a Δ or a header that is not valid. */
bool rk_token_proved(const unsigned char delta[RK_BYTES], const unsigned char hc_from[RK_BYTES],
                     const unsigned char hc_to[RK_BYTES]);

/* h_out = Δ·h_in. False (h_out zeroed) if Δ is not a canonical non-zero
 * scalar, h_in is not a valid non-identity point, or the result is the
 * identity. h_out may alias h_in. */
bool rk_apply(unsigned char h_out[RK_BYTES], const unsigned char delta[RK_BYTES],
              const unsigned char h_in[RK_BYTES]);

/* A room's token chain: delta[i] = Δ(first+i → first+i+1), i < n. Borrowed
 * by the functions below. */
typedef struct rk_chain {
    uint64_t first;
    size_t n;
    unsigned char (*delta)[RK_BYTES];
} rk_chain;

/* out = Δ(a→c) = Δ(c−1→c)·…·Δ(a→a+1) for first ≤ a < c ≤ first+n. False
 * (out zeroed) if the chain does not cover a→c or a token on the way is not
 * a canonical non-zero scalar. */
bool rk_chain_to(unsigned char out[RK_BYTES], const rk_chain *chain, uint64_t a, uint64_t c);

#endif
