/* Catch-up envelopes (DESIGN §4): the epoch secret S_e sealed to one
 * member's X25519 key and signed by the member who sealed it.
 *
 * Sealed box
 *   box = crypto_box_seal(S_e, recipient x_pk)     80 bytes
 *         (ephemeral X25519 pk 32 ‖ XSalsa20-Poly1305 of the 32-byte S_e, 48)
 *
 * Signed message
 *   E = lp8(SR_E2E_LABEL_ENVELOPE) ‖ u8 version ‖ lp16(room) ‖ u64 epoch
 *       ‖ roster_hash (32) ‖ lp16(sealer bare JID) ‖ lp16(recipient bare JID)
 *       ‖ recipient x_pk (32) ‖ box (80)
 *   sig = Ed25519(sealer ed_sk, E)
 * crypto_box_seal is anonymous, so without the signature anyone (the
 * component included) could seal a secret of its choosing to a member; the
 * signature names who vouches for it and for which room, epoch, roster and
 * recipient, so an envelope replayed for another epoch or member is refused.
 *
 * Wire format, version 1 (SR_E2E_ENVELOPE_BYTES = 145)
 *   offset 0   1   version = 0x01
 *   offset 1   80  box
 *   offset 81  64  sig
 * Room, epoch, roster hash and both JIDs travel in the stanza around it and
 * are supplied by the opener from what it has verified.
 *
 * Opening: exact length, version, verify sig with the sealer's key from the
 * roster, then crypto_box_seal_open. The caller then checks KC_e
 * (sr_e2e_epoch_confirm) before using S_e.
 *
 * Thread-safety: pure functions. */
#ifndef SEALROOM_E2E_ENVELOPE_H
#define SEALROOM_E2E_ENVELOPE_H

#include "e2e/common.h"
#include "e2e/epoch.h"

#define SR_E2E_ENVELOPE_VERSION 1
#define SR_E2E_ENVELOPE_BOX_BYTES (32 + 16 + SR_E2E_EPOCH_SECRET_BYTES)
#define SR_E2E_ENVELOPE_BYTES (1 + SR_E2E_ENVELOPE_BOX_BYTES + SR_E2E_SIG_BYTES)
#define SR_E2E_ENVELOPE_MSG_MAX (1 + 255 + 1 + 3 * (2 + SR_E2E_JID_MAX) + 8 + \
                                 SR_E2E_ROSTER_HASH_BYTES + 32 + SR_E2E_ENVELOPE_BOX_BYTES)

/* What an envelope is bound to; all borrowed. */
typedef struct sr_e2e_envelope_ctx {
    const char *room;
    uint64_t epoch;
    const unsigned char *roster_hash;       /* 32 */
    const char *sealer;                     /* bare JID of the signing member */
    const char *recipient;                  /* bare JID */
    const unsigned char *recipient_box_pk;  /* 32, from the recipient's signed bundle */
} sr_e2e_envelope_ctx;

/* Builds E for ctx and box into buf (SR_E2E_ENVELOPE_MSG_MAX suffices).
 * Errors: INVALID. */
int sr_e2e_envelope_message(unsigned char *buf, size_t cap, size_t *len,
                            const sr_e2e_envelope_ctx *ctx,
                            const unsigned char box[SR_E2E_ENVELOPE_BOX_BYTES]);

/* Seals secret to ctx->recipient_box_pk and signs. Errors: INVALID (also a
 * recipient key crypto_box refuses). */
int sr_e2e_envelope_seal(unsigned char out[SR_E2E_ENVELOPE_BYTES], const sr_e2e_envelope_ctx *ctx,
                         const unsigned char secret[SR_E2E_EPOCH_SECRET_BYTES],
                         const unsigned char sealer_sk[64]);

/* The deterministic half of seal: sign a given box (test vectors). */
int sr_e2e_envelope_from_box(unsigned char out[SR_E2E_ENVELOPE_BYTES], const sr_e2e_envelope_ctx *ctx,
                             const unsigned char box[SR_E2E_ENVELOPE_BOX_BYTES],
                             const unsigned char sealer_sk[64]);

/* Opens an envelope addressed to ctx->recipient (whose key pair is
 * ctx->recipient_box_pk / recipient_box_sk). secret is zeroed on error.
 * Errors: INVALID, MALFORMED (length), VERSION, SIGNATURE, DECRYPT. */
int sr_e2e_envelope_open(unsigned char secret[SR_E2E_EPOCH_SECRET_BYTES], const unsigned char *in,
                         size_t len, const sr_e2e_envelope_ctx *ctx,
                         const unsigned char sealer_pk[32], const unsigned char recipient_box_sk[32]);

#endif
