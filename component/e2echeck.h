/* What the component can check of the end-to-end material without holding
 * any secret: bundle and envelope signatures (their signed byte strings are
 * rebuilt here, apart from the library's e2e core, and a unit test holds the
 * two encoders to the same bytes), the framing of sealed message payloads
 * and vault blobs, and the token bucket that paces vault fetches. Pure code:
 * no I/O, no state beyond what the caller passes in. */
#ifndef SEALROOMD_E2ECHECK_H
#define SEALROOMD_E2ECHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EC_KEY_BYTES 32
#define EC_SIG_BYTES 64
#define EC_HASH_BYTES 32
#define EC_DKID_BYTES 16
#define EC_ENVELOPE_VERSION 1
#define EC_ENVELOPE_BOX_BYTES 80
#define EC_ENVELOPE_BYTES (1 + EC_ENVELOPE_BOX_BYTES + EC_SIG_BYTES) /* 145 */
#define EC_PAYLOAD_VERSION 1
#define EC_PAYLOAD_MIN 129 /* 1 + dkid 16 + u64 + nonce 24 + tag 16 + sig 64 */
#define EC_VAULT_MIN 74    /* the vault header alone */
#define EC_VAULT_MAX (1024 * 1024)
#define EC_JID_MAX 2047

/* Signed bytes of an envelope (libclient/src/e2e/envelope.h):
 *   lp8("sealroom.e2e.v1.envelope") ‖ u8 1 ‖ lp16(room) ‖ u64 epoch
 *   ‖ roster_hash 32 ‖ lp16(sealer) ‖ lp16(recipient) ‖ recipient x_pk 32 ‖ box 80
 * Returns the length written to buf, or 0 when a JID is empty or longer than
 * EC_JID_MAX or cap is too small. */
size_t ec_envelope_message(unsigned char *buf, size_t cap, const char *room, uint64_t epoch,
                           const unsigned char roster_hash[EC_HASH_BYTES], const char *sealer,
                           const char *recipient, const unsigned char recipient_x_pk[EC_KEY_BYTES],
                           const unsigned char box[EC_ENVELOPE_BOX_BYTES]);
/* Upper bound of that length for JIDs of these lengths. */
size_t ec_envelope_message_len(size_t room_len, size_t sealer_len, size_t recipient_len);

/* An envelope as stored: exactly EC_ENVELOPE_BYTES, version byte 1, and the
 * sealer's Ed25519 signature over the bytes above. */
bool ec_envelope_verify(const unsigned char *env, size_t len, const char *room, uint64_t epoch,
                        const unsigned char roster_hash[EC_HASH_BYTES], const char *sealer,
                        const char *recipient, const unsigned char recipient_x_pk[EC_KEY_BYTES],
                        const unsigned char sealer_pk[EC_KEY_BYTES]);

/* Bundle signature: Ed25519(ed key) over
 *   lp8("sealroom.e2e.v1.identity.bundle") ‖ lp16(bare JID) ‖ ed_pk ‖ x_pk */
bool ec_bundle_verify(const unsigned char sig[EC_SIG_BYTES], const char *bare_jid,
                      const unsigned char ed_pk[EC_KEY_BYTES],
                      const unsigned char x_pk[EC_KEY_BYTES]);

/* Framing of a sealed message payload, wire format v1: at least
 * EC_PAYLOAD_MIN bytes, version byte 1; gives the data-key id (bytes 1..17)
 * and the roster version (u64 big-endian, bytes 17..25). */
bool ec_payload_parse(const unsigned char *p, size_t len, unsigned char dkid[EC_DKID_BYTES],
                      uint64_t *roster_version);

/* Vault blob framing: EC_VAULT_MIN..EC_VAULT_MAX bytes, "SRVL", version 1. */
bool ec_vault_blob_ok(const unsigned char *blob, size_t len);

/* A token bucket: `burst` tokens, refilled at per_hour tokens an hour. */
typedef struct ec_bucket {
    double tokens;
    long long last_ms; /* when tokens was last brought up to date */
    bool started;      /* false: a fresh, full bucket */
} ec_bucket;

/* Take one token at now_ms (any monotonic clock). True if there was one;
 * otherwise *retry_ms (may be NULL) says how long until there is. */
bool ec_bucket_take(ec_bucket *b, long long now_ms, int burst, int per_hour, long long *retry_ms);
/* True when the bucket has refilled completely (it may be forgotten). */
bool ec_bucket_full(const ec_bucket *b, long long now_ms, int burst, int per_hour);

#endif
