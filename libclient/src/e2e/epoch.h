/* Epoch key schedule (DESIGN §4): everything a room derives from the 32-byte
 * epoch secret S_e, bound to the room, the epoch number and the hash of the
 * roster version the epoch was agreed under.
 *
 * Layouts
 * -------
 *   ctx     = lp16(room bare JID) ‖ u64 epoch ‖ roster_hash (32)
 *   k_e     = ristretto255 scalar_reduce(KDF(S_e, SR_E2E_LABEL_EPOCH_SCALAR, ctx, 64))
 *             the archive wrapping scalar (32 bytes, little-endian mod l).
 *             Zero happens with probability 2^-252; it is refused (SCALAR),
 *             never used.
 *   KC_e    = KDF(S_e, SR_E2E_LABEL_EPOCH_KC, ctx, 32)
 *             public key-confirmation value: the component stores it and a
 *             client that derives the same KC_e holds the same S_e for the
 *             same (room, epoch, roster). Keyed BLAKE2b is a PRF, so KC_e
 *             reveals nothing about S_e or the other two values.
 *   keyring = KDF(S_e, SR_E2E_LABEL_EPOCH_KEYRING, ctx, 32)
 *             the key that seals the room's search keyring (DESIGN §7).
 *   k_inv   = k_e⁻¹ mod l, kept beside k_e: a member unwraps every header of
 *             the epoch with it, and an inversion costs a third of the
 *             scalar multiplication it would precede each time.
 *
 * Thread-safety: pure functions. */
#ifndef SEALROOM_E2E_EPOCH_H
#define SEALROOM_E2E_EPOCH_H

#include "e2e/common.h"

#define SR_E2E_EPOCH_SECRET_BYTES 32
#define SR_E2E_ROSTER_HASH_BYTES 32
#define SR_E2E_KC_BYTES 32

typedef struct sr_e2e_epoch_keys {
    unsigned char k[SR_E2E_SCALAR_BYTES];   /* secret */
    unsigned char kc[SR_E2E_KC_BYTES];      /* public */
    unsigned char keyring[32];              /* secret */
    unsigned char k_inv[SR_E2E_SCALAR_BYTES]; /* secret: k⁻¹ */
} sr_e2e_epoch_keys;

/* Derives all four. The caller owns *out and wipes it (sodium_memzero) when
 * done; on error *out is zeroed. Errors: INVALID (NULL, bad room), SCALAR. */
int sr_e2e_epoch_derive(sr_e2e_epoch_keys *out, const unsigned char secret[SR_E2E_EPOCH_SECRET_BYTES],
                        const char *room, uint64_t epoch,
                        const unsigned char roster_hash[SR_E2E_ROSTER_HASH_BYTES]);

/* Recomputes KC_e from S_e and compares in constant time with kc (as the
 * component published it). Errors: INVALID, MISMATCH. */
int sr_e2e_epoch_confirm(const unsigned char kc[SR_E2E_KC_BYTES],
                         const unsigned char secret[SR_E2E_EPOCH_SECRET_BYTES], const char *room,
                         uint64_t epoch, const unsigned char roster_hash[SR_E2E_ROSTER_HASH_BYTES]);

#endif
