/* Sealed messages (DESIGN §6): XChaCha20-Poly1305 under a per-message key
 * derived from the sender's data key P, then an Ed25519 signature by the
 * sender. This is the byte string carried base64-encoded in <sealed/>.
 *
 * Message key
 *   mk = KDF(P, SR_E2E_LABEL_MSG_KEY, datakey_id (16) ‖ lp16(message id), 32)
 *
 * Associated data (never sent; both sides rebuild it)
 *   AD = lp8(SR_E2E_LABEL_MSG_AD) ‖ u8 version ‖ lp16(room) ‖ lp16(sender)
 *        ‖ lp16(message id) ‖ datakey_id (16) ‖ u64 roster_version
 *   room and sender are bare JIDs, message id the XEP-0359 origin-id. The
 *   epoch is deliberately absent: re-keying the archive changes the epoch
 *   of a header but must not invalidate the bodies.
 *
 * Wire format, version 1 (SR_E2E_MSG_OVERHEAD = 129 bytes + plaintext)
 *   offset  size  field
 *   0       1     version = 0x01
 *   1       16    datakey_id
 *   17      8     roster_version (u64, the roster the sender was a member of)
 *   25      24    nonce (random)
 *   49      n+16  ciphertext ‖ Poly1305 tag   (XChaCha20-Poly1305-IETF, key mk, AD above)
 *   49+n+16 64    signature
 * The roster version travels in the payload because the receiver must
 * check the sender's membership at exactly that version (wiring).
 *
 * Signature
 *   T   = BLAKE2b-512(lp8(SR_E2E_LABEL_MSG_SIG) ‖ u32 len(AD) ‖ AD ‖ nonce ‖ ciphertext‖tag)
 *   sig = Ed25519(sender ed_sk, T)          (T is the 64-byte signed message)
 * So every payload byte but the signature, and every AD field, is signed.
 * Hashing first keeps the transcript out of a contiguous buffer.
 *
 * Opening: parse with exact length checks, verify the signature, then
 * derive mk and decrypt. Plaintext is written only after both succeed.
 *
 * Thread-safety: pure functions. */
#ifndef SEALROOM_E2E_MESSAGE_H
#define SEALROOM_E2E_MESSAGE_H

#include "e2e/archive.h"
#include "e2e/common.h"

#define SR_E2E_MSG_VERSION 1
#define SR_E2E_NONCE_BYTES 24
#define SR_E2E_TAG_BYTES 16
#define SR_E2E_MSG_HEADER_BYTES (1 + SR_E2E_DATAKEY_ID_BYTES + 8 + SR_E2E_NONCE_BYTES)
#define SR_E2E_MSG_OVERHEAD (SR_E2E_MSG_HEADER_BYTES + SR_E2E_TAG_BYTES + SR_E2E_SIG_BYTES)
#define SR_E2E_MSG_MAX_BYTES 65536 /* the service's payload limit */
#define SR_E2E_MSG_MAX_PLAIN (SR_E2E_MSG_MAX_BYTES - SR_E2E_MSG_OVERHEAD)
#define SR_E2E_MSG_AD_MAX (1 + 255 + 1 + 2 * (2 + SR_E2E_JID_MAX) + 2 + SR_E2E_MSGID_MAX + \
                           SR_E2E_DATAKEY_ID_BYTES + 8)

/* What a message is bound to; all borrowed. */
typedef struct sr_e2e_msg_meta {
    const char *room;        /* bare room JID */
    const char *sender;      /* sender's bare JID */
    const char *message_id;  /* origin-id, 1..255 bytes */
    const unsigned char *datakey_id; /* SR_E2E_DATAKEY_ID_BYTES */
    uint64_t roster_version;
} sr_e2e_msg_meta;

/* A parsed payload; pointers borrow the input buffer. */
typedef struct sr_e2e_sealed_view {
    uint8_t version;
    const unsigned char *datakey_id;
    uint64_t roster_version;
    const unsigned char *nonce;
    const unsigned char *ct;  /* ciphertext ‖ tag */
    size_t ct_len;            /* plaintext length + SR_E2E_TAG_BYTES */
    const unsigned char *sig;
} sr_e2e_sealed_view;

/* mk for (P, datakey_id, message_id); the caller wipes mk. Errors: INVALID. */
int sr_e2e_message_key(unsigned char mk[32], const unsigned char p[SR_E2E_POINT_BYTES],
                       const unsigned char datakey_id[SR_E2E_DATAKEY_ID_BYTES], const char *message_id);

/* Writes AD into ad (cap bytes; SR_E2E_MSG_AD_MAX always suffices) and its
 * length into *ad_len. Errors: INVALID. */
int sr_e2e_message_ad(unsigned char *ad, size_t cap, size_t *ad_len, const sr_e2e_msg_meta *meta);

/* Seals plain (0..SR_E2E_MSG_MAX_PLAIN bytes) into out (cap at least
 * plain_len + SR_E2E_MSG_OVERHEAD); *out_len gets the length. p is the data
 * key, sign_sk the sender's 64-byte Ed25519 secret key. Errors: INVALID,
 * POINT. */
int sr_e2e_message_seal(unsigned char *out, size_t cap, size_t *out_len, const unsigned char *plain,
                        size_t plain_len, const sr_e2e_msg_meta *meta,
                        const unsigned char p[SR_E2E_POINT_BYTES], const unsigned char sign_sk[64]);

/* Same with a caller-chosen nonce. For test vectors only: a repeated
 * (key, nonce) pair breaks XChaCha20-Poly1305. */
int sr_e2e_message_seal_with_nonce(unsigned char *out, size_t cap, size_t *out_len,
                                   const unsigned char *plain, size_t plain_len,
                                   const sr_e2e_msg_meta *meta, const unsigned char p[SR_E2E_POINT_BYTES],
                                   const unsigned char sign_sk[64],
                                   const unsigned char nonce[SR_E2E_NONCE_BYTES]);

/* Strict parse of untrusted bytes. Errors: INVALID, MALFORMED (length),
 * VERSION. */
int sr_e2e_message_parse(sr_e2e_sealed_view *v, const unsigned char *in, size_t len);

/* Verifies the signature of a parsed payload for (room, sender, message_id)
 * and the sender's Ed25519 public key from the roster at v->roster_version.
 * Errors: INVALID, SIGNATURE. */
int sr_e2e_message_verify(const sr_e2e_sealed_view *v, const char *room, const char *sender,
                          const char *message_id, const unsigned char sender_pk[32]);

/* Verify, then decrypt with data key p (unwrapped from the header named by
 * v->datakey_id). plain needs v->ct_len - SR_E2E_TAG_BYTES bytes. On any
 * error nothing is written to plain (it is zeroed) and *plain_len is 0.
 * Errors: INVALID, SIGNATURE, DECRYPT, POINT. */
int sr_e2e_message_open(unsigned char *plain, size_t cap, size_t *plain_len,
                        const sr_e2e_sealed_view *v, const char *room, const char *sender,
                        const char *message_id, const unsigned char sender_pk[32],
                        const unsigned char p[SR_E2E_POINT_BYTES]);

#endif
