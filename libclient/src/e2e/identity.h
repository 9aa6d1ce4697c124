/* End-to-end identity material (DESIGN §3): everything a user's devices
 * share, derived from one 32-byte root seed so that the identity serialises
 * (and sits in the vault) as those 32 bytes.
 *
 * Derivation from root (32 bytes, secret)
 * ---------------------------------------
 *   Ed25519 key pair   crypto_sign_seed_keypair(seed = root)
 *                      The root IS the Ed25519 seed, as in identity.c's
 *                      sealroom_identity_import/export, so identities already
 *                      registered and the integration tests' fixed keys keep
 *                      their public keys.
 *   X25519 secret      x_sk = KDF(root, SR_E2E_LABEL_ID_X25519, "", 32)
 *   X25519 public      x_pk = crypto_scalarmult_base(x_sk)   (clamped as
 *                      crypto_box does; usable with crypto_box_seal)
 *   DMKD seeds         dmkd_a = KDF(root, SR_E2E_LABEL_ID_DMKD_A, "", 32)
 *                      dmkd_b = KDF(root, SR_E2E_LABEL_ID_DMKD_B, "", 32)
 * The labels make the four values independent; the Ed25519 key is derived
 * by SHA-512 inside libsodium, a different function from the BLAKE2b KDF.
 *
 * Public bundle and fingerprint
 * -----------------------------
 *   bundle      = ed_pk (32) ‖ x_pk (32)
 *   fingerprint = BLAKE2b-256 (unkeyed) of lp8(SR_E2E_LABEL_ID_FPR) ‖ ed_pk ‖ x_pk
 * The fingerprint is what the vault pins per JID.
 *
 * Bundle signature (binds the sealing key to the roster's Ed25519 key, so a
 * server cannot substitute an X25519 key it knows):
 *   signed message = lp8(SR_E2E_LABEL_ID_BUNDLE) ‖ lp16(bare JID) ‖ ed_pk ‖ x_pk
 *   sig            = Ed25519(ed_sk, signed message)   (64 bytes)
 *
 * Thread-safety: all functions are pure; an sr_e2e_identity may be read from
 * several threads. */
#ifndef SEALROOM_E2E_IDENTITY_H
#define SEALROOM_E2E_IDENTITY_H

#include "e2e/common.h"

#define SR_E2E_ROOT_BYTES 32
#define SR_E2E_FPR_BYTES 32
#define SR_E2E_BUNDLE_BYTES 64

typedef struct sr_e2e_identity {
    unsigned char root[SR_E2E_ROOT_BYTES];
    unsigned char sign_pk[32];
    unsigned char sign_sk[64];   /* libsodium layout: seed ‖ pk */
    unsigned char box_pk[32];
    unsigned char box_sk[32];
    unsigned char dmkd_a[32];
    unsigned char dmkd_b[32];
} sr_e2e_identity;

/* Fills *out from root. Both are the caller's; the caller wipes *out
 * (sodium_memzero) or uses sr_e2e_identity_new. Errors: INVALID. */
int sr_e2e_identity_derive(sr_e2e_identity *out, const unsigned char root[SR_E2E_ROOT_BYTES]);

/* Derives into sodium_malloc'd memory (guard pages, mlock) made read-only.
 * *out is NULL on error. Free with sr_e2e_identity_free. Errors: INVALID,
 * NOMEM. */
int sr_e2e_identity_new(sr_e2e_identity **out, const unsigned char root[SR_E2E_ROOT_BYTES]);

/* Same, from a fresh random root. */
int sr_e2e_identity_generate(sr_e2e_identity **out);

/* Wipes and frees; accepts NULL. */
void sr_e2e_identity_free(sr_e2e_identity *id);

/* bundle = ed_pk ‖ x_pk. */
void sr_e2e_identity_bundle(unsigned char bundle[SR_E2E_BUNDLE_BYTES], const sr_e2e_identity *id);

/* Fingerprint of a public bundle (see above). Errors: INVALID. */
int sr_e2e_fingerprint(unsigned char fpr[SR_E2E_FPR_BYTES], const unsigned char ed_pk[32],
                       const unsigned char x_pk[32]);

/* Signs / verifies the bundle for bare_jid. verify returns SR_E2E_OK or
 * SIGNATURE (INVALID for bad arguments). */
int sr_e2e_bundle_sign(unsigned char sig[SR_E2E_SIG_BYTES], const char *bare_jid,
                       const sr_e2e_identity *id);
int sr_e2e_bundle_verify(const unsigned char sig[SR_E2E_SIG_BYTES], const char *bare_jid,
                         const unsigned char ed_pk[32], const unsigned char x_pk[32]);

#endif
