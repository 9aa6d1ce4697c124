/* What searches keep between evaluations (searchcache.c): per room the
 * last listing of its live batches and segments, mirrors of the entries
 * of its sealed live batches and what walking them found per token, the
 * entries probed in sealed batches and the posting blocks already opened,
 * so that the next page of a search, or the
 * next search of a popular word, neither waits for the listing before
 * probing nor reads the same things again.
 *
 * Why it is safe to keep. Everything here is something the service holds
 * or learnt while answering a search: the listing and the entries are
 * what its database stores anyway, and an opened block is the access
 * pattern of that search (which messages a keyword token matched), which
 * the scheme leaks anyway. Keys are never kept: a
 * block is filed under its label, a pseudorandom function of the token,
 * so only a search holding the same token finds it again.
 *
 * Why it cannot go stale. A segment's blocks never change once it is
 * live: a merge makes a new segment and deletes the old one's blocks,
 * and a search reads only segments its listing shows live, in the
 * snapshot it reads them from. Entries are filed only from batches the
 * search had sealed, which take no entry any more, found or missing; a
 * compaction deletes them with the batch, which then leaves the listing. A cached listing is only a
 * guess: the evaluation probes with it and keeps the answers only if the listing it reads in the
 * same snapshot is the same, or, when the listing was filed with the room's search_version (and
 * its retractions), if the version it reads in the same snapshot is (sql/010).
 *
 * Thread-safety: every function may be called from any thread; one mutex
 * guards the lot (lookups are a hash probe and a copy). */
#ifndef SEALROOMD_SEARCHCACHE_H
#define SEALROOMD_SEARCHCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ssecore.h"

typedef struct se_cache se_cache;

/* A cache holding at most max_bytes of blocks and listings (counted with
 * their bookkeeping). NULL when out of memory or max_bytes is 0. */
se_cache *se_cache_new(size_t max_bytes);

/* Wipes and frees everything. NULL is a no-op. */
void se_cache_free(se_cache *c);

/* The room's listing for hi as put, copied into a malloc'd buffer the
 * caller frees (*len bytes); NULL when there is none. */
void *se_cache_listing_get(se_cache *c, long long room, uint64_t hi, size_t *len);

/* Files (a copy of) the room's listing for hi, replacing the room's last. */
void se_cache_listing_put(se_cache *c, long long room, uint64_t hi, const void *rows, size_t len);

enum { SE_CACHE_MISS = 0, SE_CACHE_BLOCK = 1, SE_CACHE_NO_BLOCK = 2 };

/* A block of a live segment by its label: SE_CACHE_BLOCK with its n seqs
 * (as opened, before any check) in seqs; SE_CACHE_NO_BLOCK when the
 * segment is known to have no such block; SE_CACHE_MISS otherwise. */
int se_cache_block_get(se_cache *c, long long room, uint64_t segment,
                       const unsigned char label[SSE_LABEL_BYTES], uint64_t seqs[SSE_BLOCK_IDS],
                       size_t *n);

/* Files a block that opened (present) with its n ≤ 32 seqs, or the
 * absence of one (!present). */
void se_cache_block_put(se_cache *c, long long room, uint64_t segment,
                        const unsigned char label[SSE_LABEL_BYTES], bool present,
                        const uint64_t *seqs, size_t n);

/* An entry of a sealed batch by its label: SE_CACHE_BLOCK with its seq,
 * SE_CACHE_NO_BLOCK when the batch has no such entry, SE_CACHE_MISS when
 * not known. */
int se_cache_entry_get(se_cache *c, long long room, uint64_t batch,
                       const unsigned char label[SSE_LABEL_BYTES], uint64_t *seq);

/* Files an entry of a sealed batch (seq), or its absence (seq 0). */
void se_cache_entry_put(se_cache *c, long long room, uint64_t batch,
                        const unsigned char label[SSE_LABEL_BYTES], uint64_t seq);

/* Mirrors: every entry of a sealed batch, so that probing it costs no
 * database read at all (a room's live batches are probed by every search
 * until compaction takes them). A mirror counts only for the number of
 * entries it was made with: the listing says how many the batch has. */

/* SE_CACHE_BLOCK with the entry's seq, SE_CACHE_NO_BLOCK when the batch
 * has no such entry, SE_CACHE_MISS when the batch has no mirror of
 * `count` entries. */
int se_cache_mirror_probe(se_cache *c, long long room, uint64_t batch, uint64_t count,
                          const unsigned char label[SSE_LABEL_BYTES], uint64_t *seq);

/* Files the mirror of a batch: n entries, labels[i] (16 bytes each, n of
 * them back to back) with seqs[i]. Not filed if it would take more than a
 * quarter of the cache. */
void se_cache_mirror_put(se_cache *c, long long room, uint64_t batch,
                         const unsigned char *labels, const uint64_t *seqs, size_t n);

/* Walks: what walking a mirror found for one keyword's token, filed
 * under the label of its counter 0 (so only a search holding the same
 * token finds it): every seq from counter 0 up to the first miss, so that
 * the next page of the search, or the same word again, does not derive
 * and probe every label again. */

/* true with a malloc'd copy of the seqs (*n of them; the caller frees). */
bool se_cache_walk_get(se_cache *c, long long room, uint64_t batch,
                       const unsigned char label0[SSE_LABEL_BYTES], uint64_t **seqs, size_t *n);

void se_cache_walk_put(se_cache *c, long long room, uint64_t batch,
                       const unsigned char label0[SSE_LABEL_BYTES], const uint64_t *seqs, size_t n);

/* Forgets every block, entry and walk (listings and mirrors stay): what a
 * search costs when the word was not searched before (benchmarks). */
void se_cache_drop_reads(se_cache *c);

typedef struct se_cache_stats {
    uint64_t hits, misses, evictions;
    size_t bytes, entries, mirrors;
} se_cache_stats;

void se_cache_get_stats(se_cache *c, se_cache_stats *out);

#endif
