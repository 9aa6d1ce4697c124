/* The component's share of the multi-cast key distribution arithmetic
 * (DESIGN §5, xep/sealroom.xml "Multi-cast key distribution"): the run
 * context, verification of the members' signed round messages, the session
 * id over the ring, and the combine step (commitment checks, the T's
 * XORing to zero, k' and every T'_i). Rebuilt here from libsodium apart
 * from the library's e2e core (libclient/src/e2e/dmkd.c); a unit test holds
 * the two to the same bytes. Pure code: no I/O, no secrets of any member
 * (the component never learns k_1, so never the key). */
#ifndef SEALROOMD_DMKDCORE_H
#define SEALROOMD_DMKDCORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DK_BYTES 32
#define DK_SIG_BYTES 64
#define DK_RUN_ID_BYTES 16
/* lp16(room ≤ 2047) ‖ u64 ‖ 32 ‖ 16 */
#define DK_CTX_MAX (2 + 2047 + 8 + 32 + 16)

typedef struct dk_ctx {
    unsigned char b[DK_CTX_MAX];
    size_t len;
} dk_ctx;

/* ctx = lp16(room) ‖ u64 epoch ‖ roster_hash ‖ run_id; false if room is
 * empty or too long. */
bool dk_ctx_build(dk_ctx *ctx, const char *room, uint64_t epoch,
                  const unsigned char roster_hash[DK_BYTES],
                  const unsigned char run_id[DK_RUN_ID_BYTES]);

/* R is a valid ristretto255 point and sig an Ed25519 signature by pk over
 * lp8(DMKD_ROUND1) ‖ ctx ‖ lp16(jid) ‖ R ‖ c. */
bool dk_round1_ok(const unsigned char sig[DK_SIG_BYTES], const dk_ctx *ctx, const char *jid,
                  const unsigned char R[DK_BYTES], const unsigned char c[DK_BYTES],
                  const unsigned char pk[DK_BYTES]);

/* sid = BLAKE2b-256(lp8(DMKD_SID) ‖ ctx ‖ u32 n ‖ n × (lp16(jid_i) ‖ c_i ‖ R_i)).
 * false on n < 2 or a bad JID. */
bool dk_sid(unsigned char sid[DK_BYTES], const dk_ctx *ctx, size_t n, const char *const *jids,
            const unsigned char (*c)[DK_BYTES], const unsigned char (*R)[DK_BYTES]);

/* sig by pk over lp8(DMKD_ROUND2) ‖ sid ‖ lp16(jid) ‖ T ‖ second. */
bool dk_round2_ok(const unsigned char sig[DK_SIG_BYTES], const unsigned char sid[DK_BYTES],
                  const char *jid, const unsigned char T[DK_BYTES],
                  const unsigned char second[DK_BYTES], const unsigned char pk[DK_BYTES]);

/* The combine step over the ring (index 0 the representative, whose k[0]
 * is not read): every k[i] (i ≥ 1) opens c[i]; the T's XOR to zero; then
 * k' = k[1] ⊕ … ⊕ k[n−1] ⊕ k_server and T_prime[i] = T[0] ⊕ … ⊕ T[i−1]
 * (zero for i = 0). Returns DK_COMBINE_OK, DK_COMBINE_COMMITMENT with *bad
 * the index whose k does not open its commitment, DK_COMBINE_RING when the
 * T's do not XOR to zero (no single culprit), or DK_COMBINE_INVALID. */
enum { DK_COMBINE_OK = 0, DK_COMBINE_COMMITMENT = 1, DK_COMBINE_RING = 2, DK_COMBINE_INVALID = 3 };
int dk_combine(unsigned char k_prime[DK_BYTES], unsigned char (*T_prime)[DK_BYTES], size_t *bad,
               const dk_ctx *ctx, size_t n, const char *const *jids,
               const unsigned char (*c)[DK_BYTES], const unsigned char (*T)[DK_BYTES],
               const unsigned char (*k)[DK_BYTES], const unsigned char k_server[DK_BYTES]);

#endif
