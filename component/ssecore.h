/* The component's share of the encrypted-search derivations
 * (/work/notes/search-wire.md §2): GGM children and the descent from a
 * cover node to a batch token, entry labels, segment keys, block labels
 * and the opening of a segment's posting blocks. Rebuilt here from
 * libsodium apart from the library's libclient/src/search/ggm.c, so the
 * component and the library stay separate programs; test_ssecore.c holds
 * both to the same bytes.
 *
 * KDF(key, label, input, n) = keyed BLAKE2b(digest n, key, lp8(label) ‖
 * input), integers big-endian, as libclient/src/e2e/common.h documents.
 * Everything here derives from secrets a searcher handed over (cover node
 * keys): callers sodium_memzero what they get back when done. Pure code,
 * thread-safe. */
#ifndef SEALROOMD_SSECORE_H
#define SEALROOMD_SSECORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SSE_KEY_BYTES 32
#define SSE_LABEL_BYTES 16
#define SSE_DEPTH 32        /* batch ids are u32; leaves sit at depth 32 */
#define SSE_BLOCK_IDS 32    /* seqs per posting block */
#define SSE_BLOCK_BYTES 274 /* u16 count ‖ 32 × u64, sealed (16-byte tag) */

/* A GGM node as a searcher sends it: depth, prefix (the top `depth` bits of
 * the batch ids below it) and the node key (secret). Not checked on
 * construction: sse_node_range says whether depth and prefix make sense. */
typedef struct sse_node {
    uint8_t depth;
    uint32_t prefix;
    unsigned char key[SSE_KEY_BYTES];
} sse_node;

/* The batch ids below (depth, prefix): [*lo, *hi] = [prefix·2^(32−depth),
 * (prefix+1)·2^(32−depth) − 1]. false (nothing written) when depth > 32
 * or prefix ≥ 2^depth. The range may include 0, which is no batch id. */
bool sse_node_range(unsigned depth, uint32_t prefix, uint64_t *lo, uint64_t *hi);

/* Left (bit 0) or right (bit 1) child: KDF(node, ggm.left|ggm.right, "", 32).
 * out may equal node. */
void sse_child(unsigned char out[SSE_KEY_BYTES], const unsigned char node[SSE_KEY_BYTES],
               unsigned bit);

/* The batch token t_{w,b}: the leaf b below the node (depth, prefix, key),
 * bits of b from the top. false (out zeroed) when the node is malformed
 * (sse_node_range) or b is not in its range. */
bool sse_descend(unsigned char out[SSE_KEY_BYTES], unsigned depth, uint32_t prefix,
                 const unsigned char key[SSE_KEY_BYTES], uint32_t b);

/* Many leaves below one node: the path of the last leaf is kept, so leaves
 * taken in increasing order (as batch ids are listed) cost only the steps
 * below where their paths part. Holds node keys: sse_walk_wipe when done. */
typedef struct sse_walk {
    unsigned depth;
    uint32_t prefix;
    uint32_t last;  /* the leaf path[] leads to */
    bool have_last; /* path[depth+1..32] are valid for `last` */
    unsigned char path[SSE_DEPTH + 1][SSE_KEY_BYTES];
} sse_walk;

/* false if the node is malformed (sse_node_range). */
bool sse_walk_init(sse_walk *w, unsigned depth, uint32_t prefix,
                   const unsigned char key[SSE_KEY_BYTES]);
/* As sse_descend with the walk's node; any order, increasing is cheapest. */
bool sse_walk_leaf(sse_walk *w, unsigned char out[SSE_KEY_BYTES], uint32_t b);
void sse_walk_wipe(sse_walk *w);

/* Entry label L(t, c) = KDF(t, label, u32 c, 16). */
void sse_label(unsigned char out[SSE_LABEL_BYTES], const unsigned char t[SSE_KEY_BYTES],
               uint32_t c);

/* S_{w,s} = KDF(t_{w,b_last}, segment, u64 s, 32), t_last the token of
 * the segment's last batch (so no token older than that batch opens it). */
void sse_segment_key(unsigned char out[SSE_KEY_BYTES], const unsigned char t_last[SSE_KEY_BYTES],
                     uint64_t segment);

/* BL(S, i) = KDF(S, block-label, u32 i, 16). */
void sse_block_label(unsigned char out[SSE_LABEL_BYTES], const unsigned char s[SSE_KEY_BYTES],
                     uint32_t i);

/* BK(S) = KDF(S, block-key, "", 32): derived once per segment, then every
 * block of it is opened with it. */
void sse_block_key(unsigned char out[SSE_KEY_BYTES], const unsigned char s[SSE_KEY_BYTES]);

/* Opens block i of segment `segment` with its block key: XChaCha20-Poly1305-
 * IETF, nonce 20 zero bytes ‖ u32 i, AD u64 segment ‖ u32 i. On success
 * seqs[0..*count) are the block's seqs, strictly descending and non-zero.
 * Errors: SSE_OPEN_DECRYPT (not authentic under this key, segment and
 * index), SSE_OPEN_MALFORMED (authentic but count > 32, seqs not strictly
 * descending or zero, or non-zero padding: a buggy or hostile writer). On
 * error *count = 0 and seqs is zeroed. */
enum { SSE_OPEN_OK = 0, SSE_OPEN_DECRYPT = -1, SSE_OPEN_MALFORMED = -2 };
int sse_block_open(uint64_t seqs[SSE_BLOCK_IDS], size_t *count,
                   const unsigned char block_key[SSE_KEY_BYTES], uint64_t segment, uint32_t i,
                   const unsigned char body[SSE_BLOCK_BYTES]);

#endif
