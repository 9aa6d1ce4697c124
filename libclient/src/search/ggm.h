/* Key derivations of encrypted search (/work/notes/search-wire.md §2):
 * keyword roots, the GGM tree over batch ids, its range covers, entry
 * labels, segment keys, and the sealed posting blocks of a segment.
 *
 * Why a GGM tree: a searcher must let the component probe every batch in
 * [lo, hi] for a keyword without handing it the keyword's root (which
 * would also open future batches). A node of the tree derives exactly the
 * batch tokens below it, so the minimal cover of [lo, hi] gives the
 * component those batches and nothing else.
 *
 * All derivations are sr_e2e_kdf (keyed BLAKE2b, e2e/common.h) with the
 * SR_SSE_LABEL_* labels below; big-endian integers. Sizes: keys and nodes
 * 32 bytes, labels 16 bytes. Pure functions, thread-safe. */
#ifndef SEALROOM_SEARCH_GGM_H
#define SEALROOM_SEARCH_GGM_H

#include "e2e/common.h"
#include "search/norm.h"

#define SR_SSE_NV 1          /* normalisation version, bound into every root */
#define SR_SSE_COVER_MAX 64  /* nodes per cover on the wire (a minimal cover has <= 62) */
#define SR_SSE_DEPTH 32      /* batch ids are u32 */
#define SR_SSE_LABEL_BYTES 16
#define SR_SSE_BLOCK_IDS 32  /* seqs per posting block */
#define SR_SSE_BLOCK_PLAIN (2 + 8 * SR_SSE_BLOCK_IDS)
#define SR_SSE_BLOCK_BYTES 274 /* SR_SSE_BLOCK_PLAIN + 16-byte tag */

#define SR_SSE_LABEL_ROOT "sealroom.sse.v1.root"
#define SR_SSE_LABEL_GGM_LEFT "sealroom.sse.v1.ggm.left"
#define SR_SSE_LABEL_GGM_RIGHT "sealroom.sse.v1.ggm.right"
#define SR_SSE_LABEL_ENTRY "sealroom.sse.v1.label"
#define SR_SSE_LABEL_SEGMENT "sealroom.sse.v1.segment"
#define SR_SSE_LABEL_BLOCK_LABEL "sealroom.sse.v1.block-label"
#define SR_SSE_LABEL_BLOCK_KEY "sealroom.sse.v1.block-key"

/* A GGM node: depth 0..32 and prefix < 2^depth (the top `depth` bits of
 * the batch ids below it); it covers [prefix·2^(32−depth),
 * (prefix+1)·2^(32−depth) − 1]. key is secret. */
typedef struct sr_sse_node {
    uint8_t depth;
    uint32_t prefix;
    unsigned char key[32];
} sr_sse_node;

/* R_{w,g} = KDF(K_g, root, u8 NV ‖ u32 g ‖ u8 len(w) ‖ w, 32).
 * kw is a normalised keyword (1..SR_SSE_KEYWORD_MAX bytes), gen >= 1.
 * Errors: INVALID. */
int sr_sse_root(unsigned char out[32], const unsigned char kg[32], uint32_t gen, const char *kw,
                size_t kwlen);

/* Left (bit 0) or right (bit != 0) child of a node. out may equal node. */
void sr_sse_child(unsigned char out[32], const unsigned char node[32], int bit);

/* The leaf of `batch` below a keyword root: the batch token t_{w,b}
 * (32 child steps, top bit first). out may equal root. */
void sr_sse_leaf(unsigned char out[32], const unsigned char root[32], uint32_t batch);

/* Fills out[0..count) with the minimal cover of [lo, hi] below root, in
 * increasing range order, keys derived; returns count (1..62). Returns 0,
 * writing nothing, if lo == 0, lo > hi, out is NULL or cap < count. The
 * caller wipes the node keys (sodium_memzero) when done with them. */
size_t sr_sse_cover(sr_sse_node *out, size_t cap, const unsigned char root[32], uint32_t lo,
                    uint32_t hi);

/* Entry label L(t, c) = KDF(t, label, u32 c, 16) of a batch token. */
void sr_sse_label(unsigned char out[16], const unsigned char t[32], uint32_t counter);

/* S_{w,s} = KDF(t_{w,b_last}, segment, u64 s, 32), t_last the token of
 * the segment's last batch (so no token older than that batch opens it). */
void sr_sse_segment_key(unsigned char out[32], const unsigned char t_last[32], uint64_t segment);

/* BL(S, i) = KDF(S, block-label, u32 i, 16). */
void sr_sse_block_label(unsigned char out[16], const unsigned char s[32], uint32_t i);

/* Seals posting block i of a segment: XChaCha20-Poly1305-IETF under
 * BK(S) = KDF(S, block-key, "", 32), nonce 20 zero bytes ‖ u32 i,
 * AD u64 segment ‖ u32 i, plaintext u16 n ‖ n × u64 seq ‖ zeros to 32 ids.
 * seqs[0..n) strictly descending, n <= 32 (0 for a padding block).
 * The nonce is fixed per (S, i): a segment id must never be sealed twice
 * with different postings. Errors: INVALID. */
int sr_sse_block_seal(unsigned char out[SR_SSE_BLOCK_BYTES], const unsigned char s[32],
                      uint64_t segment, uint32_t i, const uint64_t *seqs, size_t n);

/* Opens what sr_sse_block_seal made: seqs[0..*n) strictly descending.
 * Errors: INVALID (NULL), DECRYPT (wrong key, segment, index or tampered),
 * MALFORMED (authentic but count > 32, not strictly descending, or non-zero
 * padding). On error *n = 0 and seqs is zeroed. */
int sr_sse_block_open(uint64_t seqs[SR_SSE_BLOCK_IDS], size_t *n, const unsigned char s[32],
                      uint64_t segment, uint32_t i, const unsigned char body[SR_SSE_BLOCK_BYTES]);

#endif
