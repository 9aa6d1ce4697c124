/* Shared pieces of the end-to-end cryptographic core (libclient/src/e2e/):
 * result codes, the one KDF every derivation uses, every domain-separation
 * label, and the length-prefixed encoder that builds associated data and
 * signature inputs. Pure code, no I/O, nothing exported (the library builds
 * with -fvisibility=hidden and these names are not SEALROOM_API).
 *
 * Conventions used by every layout in the e2e headers
 * -------------------------------------------
 *   u8, u16, u32, u64   unsigned integers, big-endian
 *   lp8(x)              u8 length ‖ x        (labels, at most 255 bytes)
 *   lp16(x)             u16 length ‖ x       (JIDs, message ids)
 *   ‖                   concatenation
 * JIDs are normalised bare JIDs (proto/jid.h) compared bytewise; 1..2047
 * bytes. Message ids are 1..255 bytes (in practice the XEP-0359 origin-id).
 *
 * The KDF
 * -------
 *   KDF(key, label, input, n) = BLAKE2b(digest_size = n, key = key,
 *                                       data = lp8(label) ‖ input)
 * with a 32-byte key and 16 <= n <= 64. It is libsodium's keyed
 * crypto_generichash (Python: hashlib.blake2b(data, digest_size=n, key=key)).
 * BLAKE2b binds n into its parameter block, so outputs of different lengths
 * never share a prefix. libsodium 1.0.18 has no HKDF; a keyed BLAKE2b is a PRF
 * and the label as the first bytes of input is the domain separation.
 * Every label is one of the SR_E2E_LABEL_* strings below, all distinct and
 * none a prefix of another's encoding (the lp8 length comes first). */
#ifndef SEALROOM_E2E_COMMON_H
#define SEALROOM_E2E_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Internal result codes: 0 for success, negatives for errors. The wiring
 * maps them onto sealroom_result; each names a distinct cause so tests can
 * check that the right check refused. */
typedef enum {
    SR_E2E_OK = 0,
    SR_E2E_ERR_INVALID = -1,     /* bad argument: NULL, wrong length, over a limit */
    SR_E2E_ERR_MALFORMED = -2,   /* untrusted bytes do not parse */
    SR_E2E_ERR_VERSION = -3,     /* unknown format version or algorithm */
    SR_E2E_ERR_SIGNATURE = -4,   /* Ed25519 signature does not verify */
    SR_E2E_ERR_DECRYPT = -5,     /* AEAD tag or sealed box failed */
    SR_E2E_ERR_PASSPHRASE = -6,  /* vault: wrong passphrase (or its header was altered) */
    SR_E2E_ERR_WEAK_PARAMS = -7, /* vault: Argon2id limits below the floor or above the ceiling */
    SR_E2E_ERR_POINT = -8,       /* not a valid ristretto255 encoding, or the identity */
    SR_E2E_ERR_SCALAR = -9,      /* scalar zero or not reduced mod l */
    SR_E2E_ERR_REPLAY = -10,     /* (room, sender, message id) seen before */
    SR_E2E_ERR_NOMEM = -11,      /* allocation failed (also Argon2id's memory) */
    SR_E2E_ERR_MISMATCH = -12    /* a value does not match what was expected (KC_e) */
} sr_e2e_err;

const char *sr_e2e_strerror(int err);

#define SR_E2E_KEY_BYTES 32
#define SR_E2E_SIG_BYTES 64
#define SR_E2E_JID_MAX 2047
#define SR_E2E_MSGID_MAX 255
#define SR_E2E_SCALAR_BYTES 32 /* ristretto255 scalar, little-endian, reduced mod l */
#define SR_E2E_POINT_BYTES 32  /* canonical ristretto255 encoding */

/* Every domain-separation label (ASCII, used through lp8). */
#define SR_E2E_LABEL_ID_X25519 "sealroom.e2e.v1.identity.x25519"
#define SR_E2E_LABEL_ID_DMKD_A "sealroom.e2e.v1.identity.dmkd-a"
#define SR_E2E_LABEL_ID_DMKD_B "sealroom.e2e.v1.identity.dmkd-b"
#define SR_E2E_LABEL_ID_FPR "sealroom.e2e.v1.identity.fingerprint"
#define SR_E2E_LABEL_ID_BUNDLE "sealroom.e2e.v1.identity.bundle"
#define SR_E2E_LABEL_VAULT_KEY "sealroom.e2e.v1.vault.key"
#define SR_E2E_LABEL_VAULT_CHECK "sealroom.e2e.v1.vault.check"
#define SR_E2E_LABEL_EPOCH_SCALAR "sealroom.e2e.v1.epoch.archive-scalar"
#define SR_E2E_LABEL_EPOCH_KC "sealroom.e2e.v1.epoch.key-confirmation"
#define SR_E2E_LABEL_EPOCH_KEYRING "sealroom.e2e.v1.epoch.keyring"
#define SR_E2E_LABEL_CHECK_POINT "sealroom.e2e.v1.archive.check-point"
#define SR_E2E_LABEL_MSG_KEY "sealroom.e2e.v1.message.key"
#define SR_E2E_LABEL_MSG_AD "sealroom.e2e.v1.message.ad"
#define SR_E2E_LABEL_MSG_SIG "sealroom.e2e.v1.message.sig"
#define SR_E2E_LABEL_ENVELOPE "sealroom.e2e.v1.envelope"
#define SR_E2E_LABEL_REPLAY "sealroom.e2e.v1.replay"
#define SR_E2E_LABEL_DMKD_R_LONG "sealroom.dmkd.v1.r.long-term"
#define SR_E2E_LABEL_DMKD_R_EPH "sealroom.dmkd.v1.r.ephemeral"
#define SR_E2E_LABEL_DMKD_K_LONG "sealroom.dmkd.v1.k.long-term"
#define SR_E2E_LABEL_DMKD_K_EPH "sealroom.dmkd.v1.k.ephemeral"
#define SR_E2E_LABEL_DMKD_COMMIT "sealroom.dmkd.v1.commitment"
#define SR_E2E_LABEL_DMKD_ROUND1 "sealroom.dmkd.v1.round1"
#define SR_E2E_LABEL_DMKD_SID "sealroom.dmkd.v1.sid"
#define SR_E2E_LABEL_DMKD_EDGE "sealroom.dmkd.v1.edge"
#define SR_E2E_LABEL_DMKD_ROUND2 "sealroom.dmkd.v1.round2"
#define SR_E2E_LABEL_DMKD_SECRET "sealroom.dmkd.v1.epoch-secret"

/* KDF(key, label, in, outlen) as above; outlen 16..64. Returns SR_E2E_OK or
 * SR_E2E_ERR_INVALID. */
int sr_e2e_kdf(unsigned char *out, size_t outlen, const unsigned char key[SR_E2E_KEY_BYTES],
               const char *label, const unsigned char *in, size_t inlen);

/* Length-prefixed encoder over a caller buffer. Writing past cap sets
 * overflow and stops writing, so callers check once at the end. */
typedef struct sr_e2e_writer {
    unsigned char *buf;
    size_t cap, len;
    bool overflow;
} sr_e2e_writer;

void sr_e2e_writer_init(sr_e2e_writer *w, unsigned char *buf, size_t cap);
void sr_e2e_put_u8(sr_e2e_writer *w, uint8_t v);
void sr_e2e_put_u16(sr_e2e_writer *w, uint16_t v);
void sr_e2e_put_u32(sr_e2e_writer *w, uint32_t v);
void sr_e2e_put_u64(sr_e2e_writer *w, uint64_t v);
void sr_e2e_put_bytes(sr_e2e_writer *w, const void *p, size_t n);
void sr_e2e_put_lp8(sr_e2e_writer *w, const char *s);   /* labels */
void sr_e2e_put_lp16(sr_e2e_writer *w, const char *s);  /* JIDs, message ids */

uint16_t sr_e2e_get_u16(const unsigned char *p);
uint32_t sr_e2e_get_u32(const unsigned char *p);
uint64_t sr_e2e_get_u64(const unsigned char *p);

/* True if s is a non-NULL string of 1..max bytes. */
bool sr_e2e_str_ok(const char *s, size_t max);

#endif
