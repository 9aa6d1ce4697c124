/* The room's search keyring (/work/notes/search-wire.md §2 "Keyring
 * blob"): every generation key K_g, sealed per epoch under that epoch's
 * keyring key (e2e/epoch.h keys.keyring) so that exactly the members of
 * the epoch can search and index. A new generation is added when a member
 * leaves, so a departed member's K_g opens nothing written after.
 *
 *   blob = nonce(24, random) ‖ XChaCha20-Poly1305-IETF(keyring key,
 *          AD = lp8("sealroom.sse.v1.keyring") ‖ lp16(room) ‖ u64 epoch,
 *          plaintext = u8 1 ‖ u32 n ‖ n × (u32 g ‖ K_g))
 * generations strictly ascending, each >= 1, 1 <= n <= 1,024.
 *
 * Thread-safety: one thread at a time per keyring. */
#ifndef SEALROOM_SEARCH_KEYRING_H
#define SEALROOM_SEARCH_KEYRING_H

#include "e2e/common.h"

#define SR_SSE_LABEL_KEYRING "sealroom.sse.v1.keyring"
#define SR_SSE_KEYRING_VERSION 1
#define SR_SSE_KEYRING_MAX 1024 /* generations */
#define SR_SSE_KEYRING_BLOB_MAX (24 + 1 + 4 + SR_SSE_KEYRING_MAX * 36 + 16)

/* gen[0..n) strictly ascending; key[i] is K_{gen[i]}, in sodium_malloc'd
 * memory. { 0 } is a valid empty keyring. */
typedef struct sr_sse_keyring {
    size_t n;
    uint32_t *gen;
    unsigned char (*key)[32];
} sr_sse_keyring;

/* Seals k for (room, epoch) under keyring_key: *blob receives *len bytes
 * (caller frees with free()). Errors: INVALID (NULL, empty keyring, more
 * than 1,024 generations, generations not ascending from >= 1, room not
 * 1..2047 bytes), NOMEM. */
int sr_sse_keyring_seal(unsigned char **blob, size_t *len, const sr_sse_keyring *k,
                        const unsigned char keyring_key[32], const char *room, uint64_t epoch);

/* Opens a blob sealed for (room, epoch) into *out (initialised empty
 * first; free it with sr_sse_keyring_free). Errors: INVALID (NULL, bad
 * room), MALFORMED (bad length, or authentic contents that break the
 * layout rules), DECRYPT (wrong key, room or epoch, or tampered), VERSION
 * (unknown plaintext version), NOMEM. */
int sr_sse_keyring_open(sr_sse_keyring *out, const unsigned char *blob, size_t len,
                        const unsigned char keyring_key[32], const char *room, uint64_t epoch);

/* Appends generation gen with a copy of key (to carry an opened keyring's
 * generations into the next epoch's); gen must be above every generation
 * present (and >= 1). Errors: INVALID (also when full), NOMEM; k is
 * unchanged on error. */
int sr_sse_keyring_put(sr_sse_keyring *k, uint32_t gen, const unsigned char key[32]);

/* As sr_sse_keyring_put with a fresh random key: a new generation. */
int sr_sse_keyring_add_generation(sr_sse_keyring *k, uint32_t gen);

/* K_gen, or NULL if the keyring lacks gen. Borrowed until the keyring
 * changes or is freed. */
const unsigned char *sr_sse_keyring_key(const sr_sse_keyring *k, uint32_t gen);

/* Wipes and frees the keys and resets *k to empty; accepts NULL. */
void sr_sse_keyring_free(sr_sse_keyring *k);

#endif
