/* Building a segment during compaction (/work/notes/search-wire.md §2
 * "Segment key", §4 compact/part): the compacting member decrypts the
 * leased messages, normalises each one's text, and turns the postings
 * (keyword -> messages) into sealed blocks that replace the batches'
 * per-message entries.
 *
 * Per keyword w: S = S_{w,s} from the token of the segment's last batch,
 * so a search token of [1, H] with H before that batch, which must not
 * reach the segment's messages after H, cannot derive S (forward
 * privacy). Its seqs strictly descending (newest first) in blocks of 32,
 * block i stored under BL(S, i) with body sr_sse_block_seal(S, s, i, ...);
 * the block count padded up to a power of two with count-0 blocks, which
 * look like any other block, so the component learns the posting-list
 * size of a keyword only to within a factor of two.
 *
 * A segment without postings (its messages have no keyword: only dummy
 * entries stood for them) is one dummy block, a count-0 block under a
 * random segment key that no cover reaches: a segment of zero blocks
 * would tell the component that none of its messages has a keyword,
 * which their entries (8 or more per message) did not.
 *
 * The output is sorted by label: blocks of one keyword are not adjacent,
 * so neither the upload order nor the split into parts says which blocks
 * belong together. Thread-safety: no shared state (the dummy block draws
 * from libsodium's generator). */
#ifndef SEALROOM_SEARCH_SEGMENT_H
#define SEALROOM_SEARCH_SEGMENT_H

#include "search/ggm.h"
#include "search/norm.h"

/* One stored block as uploaded in <segment-part/>: label ‖ body. */
#define SR_SSE_SEGMENT_BLOCK_BYTES (SR_SSE_LABEL_BYTES + SR_SSE_BLOCK_BYTES)

/* One message to index: its archive seq and its keywords (borrowed; from
 * sr_sse_keywords_from_text on the decrypted text). */
typedef struct sr_sse_doc {
    uint64_t seq;
    sr_sse_keywords kws;
} sr_sse_doc;

/* Builds segment `segment` (last batch last_batch >= 1, generation
 * gen >= 1, key K_g) over docs[0..ndocs) in any order. *blocks receives
 * *nblocks (at least 1) blocks of SR_SSE_SEGMENT_BLOCK_BYTES bytes each,
 * sorted by label (caller frees with free()); no docs or no keywords
 * gives the one dummy block.
 * Seqs should be distinct; a (keyword, seq) posting listed twice (a seq
 * repeated, or a keyword repeated in a doc) is refused. Memory: about 16
 * bytes per posting plus the output; time: dominated by 35 KDFs per
 * distinct keyword plus one AEAD per block.
 * Errors: INVALID (bad arguments, a repeated posting, a keyword of bad
 * length), NOMEM. On error *blocks is NULL and *nblocks 0. */
int sr_sse_segment_build(const unsigned char kg[32], uint32_t gen, uint32_t last_batch,
                         uint64_t segment, const sr_sse_doc *docs, size_t ndocs,
                         unsigned char **blocks, size_t *nblocks);

#endif
