/* The vault (DESIGN §3): the identity root seed and the user's pinned
 * fingerprints, sealed under a key from the Sealroom passphrase and stored
 * by the component. A fresh device needs only the passphrase to open it.
 *
 * Key schedule
 *   master = Argon2id v1.3 (crypto_pwhash, ALG_ARGON2ID13, 32 bytes)
 *            of the passphrase with the header's salt, opslimit, memlimit
 *   key    = KDF(master, SR_E2E_LABEL_VAULT_KEY, "", 32)
 *   check  = KDF(master, SR_E2E_LABEL_VAULT_CHECK, "", 16)
 * The check value is stored in the header so a wrong passphrase is told
 * apart from a damaged ciphertext. It gives an offline guesser nothing the
 * AEAD tag does not already give (either confirms a guess at the cost of
 * one Argon2id run). A server that alters the salt or limits also makes
 * the check fail: that reads as "wrong passphrase", the only honest answer
 * without the key.
 *
 * Header, version 1 (SR_E2E_VAULT_HEADER_BYTES = 74)
 *   offset size
 *   0      4   magic "SRVL"
 *   4      1   version = 0x01
 *   5      1   algorithm = 0x01 (Argon2id13 + XChaCha20-Poly1305-IETF)
 *   6      4   opslimit (u32)
 *   10     8   memlimit in bytes (u64, a multiple of 1024: Argon2id works
 *              in KiB, so any other value is refused as MALFORMED)
 *   18     16  salt
 *   34     24  nonce
 *   58     16  check
 * Blob = header ‖ XChaCha20-Poly1305-IETF(key, nonce, plaintext, AD)
 *   AD = header (74 bytes) ‖ lp16(owner bare JID)
 * so the limits, salt and check are authenticated, and a vault served to
 * the wrong user does not open.
 *
 * Plaintext, version 1
 *   u8 version = 0x01 ‖ root (32) ‖ u32 npins ‖ npins × (lp16(JID) ‖ fingerprint (32))
 * pins sorted by strictly increasing JID (strcmp order), so the encoding is
 * canonical and duplicates are malformed. At most SR_E2E_VAULT_MAX_PINS.
 *
 * Limits
 *   default   opslimit = crypto_pwhash_OPSLIMIT_MODERATE (3),
 *             memlimit = crypto_pwhash_MEMLIMIT_MODERATE (256 MiB).
 *             The blob lives on the component, the very party we do not
 *             trust with secrets, so offline guessing is the threat that
 *             matters; the vault is opened once per device login, where
 *             well under a second of work is acceptable.
 *   floor     open refuses opslimit < OPSLIMIT_INTERACTIVE (2) or
 *             memlimit < MEMLIMIT_INTERACTIVE (64 MiB): a malicious server
 *             must not be able to downgrade them (WEAK_PARAMS).
 *   ceiling   open refuses opslimit > SR_E2E_VAULT_OPS_MAX or memlimit >
 *             crypto_pwhash_MEMLIMIT_SENSITIVE (1 GiB): a server must not
 *             make a client exhaust memory or time either.
 * The _ex entry points take explicit limits, salt and nonce, and a lower
 * floor: they exist for test vectors and unit tests only.
 *
 * Thread-safety: pure functions; a vault data object is not shared. */
#ifndef SEALROOM_E2E_VAULT_H
#define SEALROOM_E2E_VAULT_H

#include "e2e/common.h"
#include "e2e/identity.h"

#define SR_E2E_VAULT_VERSION 1
#define SR_E2E_VAULT_ALG 1
#define SR_E2E_VAULT_SALT_BYTES 16
#define SR_E2E_VAULT_CHECK_BYTES 16
#define SR_E2E_VAULT_HEADER_BYTES (4 + 1 + 1 + 4 + 8 + SR_E2E_VAULT_SALT_BYTES + 24 + \
                                   SR_E2E_VAULT_CHECK_BYTES)
#define SR_E2E_VAULT_MAX_PINS 100000u
#define SR_E2E_VAULT_OPS_MAX 10u

typedef struct sr_e2e_pin {
    char *jid;                          /* malloc'd, normalised bare JID */
    unsigned char fpr[SR_E2E_FPR_BYTES];
} sr_e2e_pin;

/* sodium_malloc'd (it holds the root); pins are kept sorted by JID. */
typedef struct sr_e2e_vault_data {
    unsigned char root[SR_E2E_ROOT_BYTES];
    size_t npins, cap;
    sr_e2e_pin *pins;
} sr_e2e_vault_data;

/* Explicit parameters for seal_ex (tests and vectors only). */
typedef struct sr_e2e_vault_params {
    unsigned long long opslimit;
    size_t memlimit;
    const unsigned char *salt;   /* NULL: random */
    const unsigned char *nonce;  /* NULL: random */
} sr_e2e_vault_params;

/* New vault data holding root (copied). Free with sr_e2e_vault_data_free.
 * Errors: INVALID, NOMEM. */
int sr_e2e_vault_data_new(sr_e2e_vault_data **out, const unsigned char root[SR_E2E_ROOT_BYTES]);
/* Wipes and frees; accepts NULL. */
void sr_e2e_vault_data_free(sr_e2e_vault_data *d);

/* Adds or replaces the pin for jid (copied). Errors: INVALID, NOMEM. */
int sr_e2e_vault_pin_set(sr_e2e_vault_data *d, const char *jid, const unsigned char fpr[SR_E2E_FPR_BYTES]);
/* The pinned fingerprint for jid (borrowed from d), or NULL. */
const unsigned char *sr_e2e_vault_pin_get(const sr_e2e_vault_data *d, const char *jid);

/* Size of the sealed blob for d. */
size_t sr_e2e_vault_sealed_len(const sr_e2e_vault_data *d);

/* Seals d for owner under passphrase with the default limits into out (cap
 * at least sr_e2e_vault_sealed_len(d)). Errors: INVALID, NOMEM. */
int sr_e2e_vault_seal(unsigned char *out, size_t cap, size_t *out_len, const sr_e2e_vault_data *d,
                      const char *owner, const char *passphrase, size_t passphrase_len);
/* Tests and vectors only: explicit limits (not checked against the floor),
 * salt and nonce. */
int sr_e2e_vault_seal_ex(unsigned char *out, size_t cap, size_t *out_len, const sr_e2e_vault_data *d,
                         const char *owner, const char *passphrase, size_t passphrase_len,
                         const sr_e2e_vault_params *params);

/* Opens a blob from the component. *out is NULL on error. Errors: INVALID,
 * MALFORMED, VERSION, WEAK_PARAMS, PASSPHRASE, DECRYPT (tampered ciphertext
 * or wrong owner), NOMEM. */
int sr_e2e_vault_open(sr_e2e_vault_data **out, const unsigned char *in, size_t len, const char *owner,
                      const char *passphrase, size_t passphrase_len);
/* Tests only: open with a lower floor. */
int sr_e2e_vault_open_ex(sr_e2e_vault_data **out, const unsigned char *in, size_t len,
                         const char *owner, const char *passphrase, size_t passphrase_len,
                         unsigned long long ops_floor, size_t mem_floor);

/* A derived vault key kept for the session (sodium_malloc'd), so a device
 * that opened or created the vault can re-seal it (new pins) without the
 * passphrase and without another Argon2id run. It holds the header fields
 * the key was derived under; re-sealing keeps them and draws a new nonce. */
typedef struct sr_e2e_vault_key {
    unsigned char key[32];
    unsigned char check[SR_E2E_VAULT_CHECK_BYTES];
    unsigned char salt[SR_E2E_VAULT_SALT_BYTES];
    uint32_t opslimit;
    uint64_t memlimit;
} sr_e2e_vault_key;

/* Runs Argon2id for a new vault (random salt unless params->salt) and
 * returns the key. Limits are checked against the floor and ceiling.
 * Errors: INVALID, WEAK_PARAMS, NOMEM. */
int sr_e2e_vault_key_new(sr_e2e_vault_key **out, const char *passphrase, size_t passphrase_len,
                         const sr_e2e_vault_params *params);
void sr_e2e_vault_key_free(sr_e2e_vault_key *k);

/* Seals d under a kept key (random nonce). Errors: INVALID. */
int sr_e2e_vault_seal_keyed(unsigned char *out, size_t cap, size_t *out_len,
                            const sr_e2e_vault_data *d, const char *owner,
                            const sr_e2e_vault_key *k);

/* As sr_e2e_vault_open, and also returns the derived key in *key_out (may
 * be NULL) for later re-sealing. */
int sr_e2e_vault_open_keep(sr_e2e_vault_data **out, sr_e2e_vault_key **key_out,
                           const unsigned char *in, size_t len, const char *owner,
                           const char *passphrase, size_t passphrase_len);

/* Opens with a kept key (a re-fetched vault sealed by another device of the
 * same user with the same key). Errors as open; PASSPHRASE if the vault was
 * re-keyed under other header fields. */
int sr_e2e_vault_open_keyed(sr_e2e_vault_data **out, const unsigned char *in, size_t len,
                            const char *owner, const sr_e2e_vault_key *k);

/* The canonical plaintext (see above) for an app's key store, and back.
 * encode writes into a sodium_malloc'd buffer the caller wipes and frees
 * with sodium_free. Errors: INVALID, NOMEM / MALFORMED, VERSION. */
int sr_e2e_vault_plain_encode(unsigned char **out, size_t *out_len, const sr_e2e_vault_data *d);
int sr_e2e_vault_plain_decode(sr_e2e_vault_data **out, const unsigned char *in, size_t len);

#endif
