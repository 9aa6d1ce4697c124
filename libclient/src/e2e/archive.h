/* Data keys, wrapped headers and re-encryption tokens (DESIGN §6) on
 * ristretto255 (libsodium crypto_core_ristretto255 / crypto_scalarmult_ristretto255).
 *
 * Values and layouts (all 32 bytes)
 * ---------------------------------
 *   data key P      canonical ristretto255 encoding of a random point, never
 *                   the identity (all-zero encoding). P is secret.
 *   data-key id     16 random bytes naming P; it never changes, so messages
 *                   bind it in their associated data (message.h).
 *   scalar          little-endian integer, reduced mod l (canonical) and
 *                   non-zero: k_e (epoch.h) and tokens.
 *   header          H = k_e·P, what the component stores for P.
 *   unwrap          P = k_e⁻¹·H.
 *   token           Δ(e→f) = k_f·k_e⁻¹ mod l; H_f = Δ·H_e.
 *   composition     Δ(e→g) = Δ(f→g)·Δ(e→f) mod l, so a header any number of
 *                   epochs behind is re-keyed by one multiplication.
 *   undo            Δ⁻¹ maps H_f back to H_e (a wrong token is reversible).
 *   check point     P_c(room) = from_hash(BLAKE2b-512(lp8(SR_E2E_LABEL_CHECK_POINT) ‖ lp16(room)))
 *                   public; the check header H_c = k_e·P_c lets a member
 *                   confirm, after a re-key, that H_c' = k_f·P_c, i.e. that
 *                   the token the component applied was right.
 * Every input point is checked with crypto_core_ristretto255_is_valid_point
 * and refused if it is the identity; every input scalar is refused if zero
 * or not canonical; a result equal to the identity is refused (POINT).
 *
 * Thread-safety: pure functions. */
#ifndef SEALROOM_E2E_ARCHIVE_H
#define SEALROOM_E2E_ARCHIVE_H

#include "e2e/common.h"

#define SR_E2E_HASH_TO_POINT_BYTES 64
#define SR_E2E_DATAKEY_ID_BYTES 16

/* OK, or SCALAR if s is zero or not reduced mod l. */
int sr_e2e_scalar_check(const unsigned char s[SR_E2E_SCALAR_BYTES]);
/* OK, or POINT if p is not a canonical encoding or is the identity. */
int sr_e2e_point_check(const unsigned char p[SR_E2E_POINT_BYTES]);

/* A fresh data key and id. */
int sr_e2e_datakey_random(unsigned char p[SR_E2E_POINT_BYTES]);
void sr_e2e_datakey_id_random(unsigned char id[SR_E2E_DATAKEY_ID_BYTES]);
/* Deterministic data key from 64 uniform bytes (test vectors, and any
 * caller that derives P from a secret). Errors: INVALID, POINT. */
int sr_e2e_datakey_from_hash(unsigned char p[SR_E2E_POINT_BYTES],
                             const unsigned char h[SR_E2E_HASH_TO_POINT_BYTES]);

/* H = k·P. Errors: INVALID, SCALAR, POINT. */
int sr_e2e_header_wrap(unsigned char h[SR_E2E_POINT_BYTES], const unsigned char k[SR_E2E_SCALAR_BYTES],
                       const unsigned char p[SR_E2E_POINT_BYTES]);
/* P = k⁻¹·H. Errors: INVALID, SCALAR, POINT. p is zeroed on error. */
int sr_e2e_header_unwrap(unsigned char p[SR_E2E_POINT_BYTES], const unsigned char k[SR_E2E_SCALAR_BYTES],
                         const unsigned char h[SR_E2E_POINT_BYTES]);
/* P = k_inv·H with k_inv = k⁻¹ computed once per epoch (epoch.h): the same
 * result as sr_e2e_header_unwrap without an inversion per header.
 * Errors: INVALID, SCALAR, POINT. p is zeroed on error. */
int sr_e2e_header_unwrap_inverse(unsigned char p[SR_E2E_POINT_BYTES],
                                 const unsigned char k_inv[SR_E2E_SCALAR_BYTES],
                                 const unsigned char h[SR_E2E_POINT_BYTES]);
/* Δ = k_new·k_old⁻¹. Errors: INVALID, SCALAR. */
int sr_e2e_token_make(unsigned char delta[SR_E2E_SCALAR_BYTES],
                      const unsigned char k_old[SR_E2E_SCALAR_BYTES],
                      const unsigned char k_new[SR_E2E_SCALAR_BYTES]);
/* Δ(e→g) = Δ(f→g)·Δ(e→f); the argument order follows the formula. */
int sr_e2e_token_compose(unsigned char delta_eg[SR_E2E_SCALAR_BYTES],
                         const unsigned char delta_fg[SR_E2E_SCALAR_BYTES],
                         const unsigned char delta_ef[SR_E2E_SCALAR_BYTES]);
/* Δ⁻¹, to undo a token. */
int sr_e2e_token_invert(unsigned char inv[SR_E2E_SCALAR_BYTES],
                        const unsigned char delta[SR_E2E_SCALAR_BYTES]);
/* H' = Δ·H (what the component's sweep does). Errors: INVALID, SCALAR, POINT. */
int sr_e2e_header_rekey(unsigned char h_out[SR_E2E_POINT_BYTES],
                        const unsigned char delta[SR_E2E_SCALAR_BYTES],
                        const unsigned char h_in[SR_E2E_POINT_BYTES]);

/* P_c(room) and H_c = k·P_c; verify recomputes H_c and compares (MISMATCH). */
int sr_e2e_check_point(unsigned char pc[SR_E2E_POINT_BYTES], const char *room);
int sr_e2e_check_header(unsigned char hc[SR_E2E_POINT_BYTES], const unsigned char k[SR_E2E_SCALAR_BYTES],
                        const char *room);
int sr_e2e_check_header_verify(const unsigned char hc[SR_E2E_POINT_BYTES],
                               const unsigned char k[SR_E2E_SCALAR_BYTES], const char *room);

#endif
