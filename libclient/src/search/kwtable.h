/* Keyword -> dense id table shared by normalisation (dedup), the batch
 * writer (per-keyword counters and cached batch tokens) and the segment
 * builder (postings per keyword). Ids are 0, 1, 2, ... in insertion order,
 * so callers keep their per-keyword data in plain arrays indexed by id.
 *
 * The keywords come from other members' messages (compaction indexes
 * everyone's text), so the hash is SipHash under a random per-table key:
 * nobody can choose words that pile into one probe chain. Stored keywords
 * are message plaintext and are wiped on growth and on free.
 *
 * Thread-safety: one thread at a time per table. */
#ifndef SEALROOM_SEARCH_KWTABLE_H
#define SEALROOM_SEARCH_KWTABLE_H

#include <sodium.h>

#include "search/norm.h"

typedef struct sr_sse_kwentry {
    uint64_t hash;
    uint8_t len;
    unsigned char kw[SR_SSE_KEYWORD_MAX];
} sr_sse_kwentry;

typedef struct sr_sse_kwtable {
    unsigned char hkey[crypto_shorthash_KEYBYTES];
    sr_sse_kwentry *ent; /* ent[0..n) in id order */
    size_t n, cap;
    uint32_t *slots;     /* id + 1, 0 = empty; a power of two, load <= 1/2 */
    size_t mask;
} sr_sse_kwtable;

/* Empty table with a fresh hash key; allocates nothing until the first
 * insert. */
void sr_sse_kwtable_init(sr_sse_kwtable *t);

/* Looks kw[0..len) up and inserts it if absent. *id receives its id,
 * *added whether it was new. Errors: INVALID (len 0 or over
 * SR_SSE_KEYWORD_MAX, NULL pointers, more than UINT32_MAX - 1 keywords),
 * NOMEM; the table is unchanged on error. */
int sr_sse_kwtable_intern(sr_sse_kwtable *t, const char *kw, size_t len, size_t *id,
                          bool *added);

/* Wipes and frees; the table is empty afterwards (init it again to reuse). */
void sr_sse_kwtable_free(sr_sse_kwtable *t);

#endif
