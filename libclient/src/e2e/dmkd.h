/* Multi-cast key distribution (DESIGN §5; issue 4), the arithmetic of
 * one run: a Burmester–Desmedt ring laid over the star, after Yoneyama et
 * al., "Multi-cast Key Distribution: Scalable, Dynamic and Provably Secure
 * Construction" (ProvSec 2016). Pure functions, no I/O: the wiring into
 * urn:xmpp:sealroom:keys:0 comes separately. The component's part (the
 * XORs and commitment checks) is here too as a reference for tests and
 * benchmarks; sealroomd carries its own copy checked against this one.
 *
 * Run context (every value below is bound to it)
 *   ctx = lp16(room) ‖ u64 epoch ‖ roster_hash (32) ‖ run_id (16)
 * run_id is the component's name for the run, so a round of an older run
 * never fits a newer one.
 *
 * Member U_i's secrets, a twisted PRF of fresh and long-term randomness
 * (exposing either the ephemeral es1, es2 or the identity's DMKD seeds
 * alone reveals neither r_i nor k_i):
 *   r_i = scalar_reduce(KDF(dmkd_a, DMKD_R_LONG, es1 ‖ ctx, 64)
 *                       ⊕ KDF(es2, DMKD_R_EPH, dmkd_b ‖ ctx, 64))
 *   k_i = KDF(dmkd_a, DMKD_K_LONG, es1 ‖ ctx, 32) ⊕ KDF(es2, DMKD_K_EPH, dmkd_b ‖ ctx, 32)
 *
 * Round 1 (U_i → server)
 *   R_i   = r_i·G                                   (ristretto255)
 *   c_i   = BLAKE2b-256(lp8(DMKD_COMMIT) ‖ ctx ‖ lp16(jid_i) ‖ k_i)
 *   sig   = Ed25519(sk_i, lp8(DMKD_ROUND1) ‖ ctx ‖ lp16(jid_i) ‖ R_i ‖ c_i)
 * Session id, once the component has fixed the ring U_1..U_n (U_1 the
 * representative):
 *   sid   = BLAKE2b-256(lp8(DMKD_SID) ‖ ctx ‖ u32 n ‖ n × (lp16(jid_i) ‖ c_i ‖ R_i))
 * Round 2 (neighbours cyclic: U_0 = U_n, U_{n+1} = U_1)
 *   edge(i, j) = KDF(sid, DMKD_EDGE, r_i·R_j, 32)   (= edge(j, i))
 *   K^l_i = edge(i, i−1),  K^r_i = edge(i, i+1),  T_i = K^l_i ⊕ K^r_i
 *   U_i (i ≥ 2) sends (T_i, k_i); U_1 sends (T_1, T' = K^l_1 ⊕ k_1);
 *   sig   = Ed25519(sk_i, lp8(DMKD_ROUND2) ‖ sid ‖ lp16(jid_i) ‖ T_i ‖ k_i or T')
 * The component checks each revealed k_i against c_i and that
 * T_1 ⊕ … ⊕ T_n = 0 (every edge key appears twice), then sends every U_i
 *   k'    = k_2 ⊕ … ⊕ k_n ⊕ k_S         (k_S its own fresh 32 bytes)
 *   T'_i  = T_1 ⊕ … ⊕ T_{i−1}           (zero for U_1)   and T'.
 * Derivation by U_i
 *   K^l_1 = T'_i ⊕ K^l_i   (the XOR telescopes to K^l_1 ⊕ K^l_i)
 *   k_1   = T' ⊕ K^l_1;    check c_1 (else MISMATCH: a changed T'_i, T' or R)
 *   S_e   = KDF(k' ⊕ k_1, DMKD_SECRET, sid ‖ ctx, 32)
 * The component knows k' and every k_i but k_1, which only the holders of
 * an edge key of the ring can unmask. A run needs n ≥ 2.
 *
 * Thread-safety: pure functions. sr_e2e_dmkd_member holds secrets: wipe it
 * (sr_e2e_dmkd_member_wipe) on every path. */
#ifndef SEALROOM_E2E_DMKD_H
#define SEALROOM_E2E_DMKD_H

#include <stdbool.h>

#include "e2e/common.h"

#define SR_E2E_DMKD_RUN_ID_BYTES 16
#define SR_E2E_DMKD_BYTES 32
#define SR_E2E_DMKD_MAX_MEMBERS 100000u

typedef struct sr_e2e_dmkd_ctx {
    const char *room;                 /* bare room JID */
    uint64_t epoch;                   /* the epoch being agreed */
    const unsigned char *roster_hash; /* 32 */
    const unsigned char *run_id;      /* SR_E2E_DMKD_RUN_ID_BYTES */
} sr_e2e_dmkd_ctx;

/* One member's state through a run. */
typedef struct sr_e2e_dmkd_member {
    unsigned char r[SR_E2E_SCALAR_BYTES]; /* secret */
    unsigned char k[SR_E2E_DMKD_BYTES];   /* secret until revealed in round 2 */
    unsigned char R[SR_E2E_POINT_BYTES];  /* public */
    unsigned char c[SR_E2E_DMKD_BYTES];   /* public */
    unsigned char kl[SR_E2E_DMKD_BYTES];  /* secret: edge key with the left neighbour */
} sr_e2e_dmkd_member;

void sr_e2e_dmkd_member_wipe(sr_e2e_dmkd_member *m);

/* c = commitment to k for jid in ctx. Errors: INVALID. */
int sr_e2e_dmkd_commit(unsigned char c[SR_E2E_DMKD_BYTES], const sr_e2e_dmkd_ctx *ctx,
                       const char *jid, const unsigned char k[SR_E2E_DMKD_BYTES]);

/* Round 1: r, k (from es1, es2 — NULL for fresh randomness — and the
 * identity's DMKD seeds), R and c into *m. Errors: INVALID, SCALAR. */
int sr_e2e_dmkd_round1(sr_e2e_dmkd_member *m, const sr_e2e_dmkd_ctx *ctx, const char *jid,
                       const unsigned char dmkd_a[32], const unsigned char dmkd_b[32],
                       const unsigned char *es1, const unsigned char *es2);
int sr_e2e_dmkd_round1_sign(unsigned char sig[SR_E2E_SIG_BYTES], const sr_e2e_dmkd_ctx *ctx,
                            const char *jid, const unsigned char R[32], const unsigned char c[32],
                            const unsigned char sign_sk[64]);
/* OK or SIGNATURE (POINT if R is not a valid point). */
int sr_e2e_dmkd_round1_verify(const unsigned char sig[SR_E2E_SIG_BYTES], const sr_e2e_dmkd_ctx *ctx,
                              const char *jid, const unsigned char R[32], const unsigned char c[32],
                              const unsigned char sign_pk[32]);

/* sid over the ring in the component's order. Errors: INVALID. */
int sr_e2e_dmkd_sid(unsigned char sid[SR_E2E_DMKD_BYTES], const sr_e2e_dmkd_ctx *ctx, size_t n,
                    const char *const *jids, const unsigned char (*c)[32],
                    const unsigned char (*R)[32]);

/* Round 2 for a member between R_left and R_right: T, and for the
 * representative T' (out_second) — for the others out_second gets k.
 * Keeps K^l in m. Errors: INVALID, POINT. */
int sr_e2e_dmkd_round2(sr_e2e_dmkd_member *m, unsigned char T[SR_E2E_DMKD_BYTES],
                       unsigned char out_second[SR_E2E_DMKD_BYTES],
                       const unsigned char sid[SR_E2E_DMKD_BYTES], const unsigned char R_left[32],
                       const unsigned char R_right[32], bool representative);
int sr_e2e_dmkd_round2_sign(unsigned char sig[SR_E2E_SIG_BYTES], const unsigned char sid[32],
                            const char *jid, const unsigned char T[32],
                            const unsigned char second[32], const unsigned char sign_sk[64]);
int sr_e2e_dmkd_round2_verify(const unsigned char sig[SR_E2E_SIG_BYTES], const unsigned char sid[32],
                              const char *jid, const unsigned char T[32],
                              const unsigned char second[32], const unsigned char sign_pk[32]);

/* The component's step: check k[i] against c[i] for i = 1..n−1 (index 0 is
 * the representative, whose k is not revealed) and that the T's XOR to
 * zero; then k' and T'_i for every i. *bad gets the first index that
 * failed. Errors: INVALID, MISMATCH. */
int sr_e2e_dmkd_server(unsigned char k_prime[SR_E2E_DMKD_BYTES], unsigned char (*T_prime)[32],
                       size_t *bad, const sr_e2e_dmkd_ctx *ctx, size_t n,
                       const char *const *jids, const unsigned char (*c)[32],
                       const unsigned char (*T)[32], const unsigned char (*k)[32],
                       const unsigned char k_server[SR_E2E_DMKD_BYTES]);

/* The member's derivation of S_e (m after round 2). rep_jid and c_rep name
 * the representative and its round-1 commitment. Errors: INVALID,
 * MISMATCH (the representative's k does not open its commitment). */
int sr_e2e_dmkd_derive(unsigned char secret[SR_E2E_DMKD_BYTES], const sr_e2e_dmkd_member *m,
                       const unsigned char sid[32], const sr_e2e_dmkd_ctx *ctx,
                       const char *rep_jid, const unsigned char c_rep[32],
                       const unsigned char k_prime[32], const unsigned char T_prime_i[32],
                       const unsigned char T_prime[32]);

#endif
