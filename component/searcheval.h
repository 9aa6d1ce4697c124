/* Evaluation of an encrypted search (/work/notes/search-wire.md §4
 * "search") on a blocking PostgreSQL connection: seal the open batches the
 * search reaches, walk the searcher's cover nodes down to the batch tokens
 * of the room's live batches and segments, probe entry labels and read
 * posting blocks in as few round trips as it can, intersect the keywords,
 * drop retracted messages and return one newest-first page of seqs.
 *
 * What the component learns here is inherent to the scheme: which stored
 * entries and blocks match each keyword of this search, and the result.
 * Batches past the searcher's hi are never touched, and every open batch
 * at or below hi is sealed before anything is read, so no entry written
 * after the search can be linked to the tokens it revealed.
 *
 * Thread-safety: these functions keep no state of their own (what they
 * keep between searches goes to the caller's se_cache, which is
 * thread-safe); one connection is used by one thread at a time, as libpq
 * requires. */
#ifndef SEALROOMD_SEARCHEVAL_H
#define SEALROOMD_SEARCHEVAL_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "searchcache.h"
#include "ssecore.h"

#define SE_MAX_KEYWORDS 8
#define SE_MAX_COVERS 64                     /* per keyword */
#define SE_MAX_NODES 64                      /* per cover */
#define SE_MAX_RESULTS 200                   /* the largest max */
#define SE_NODE_WIRE (1 + 4 + SSE_KEY_BYTES) /* u8 depth ‖ u32 prefix ‖ node */

/* One <cover gen='g'> element: the nodes of one generation's GGM tree.
 * Node keys are secrets of the searcher: se_cover_wipe when done. */
typedef struct se_cover {
    uint32_t gen;
    size_t nnodes;
    sse_node nodes[SE_MAX_NODES];
} se_cover;

/* One <keyword>: its covers (borrowed, ncovers of them). */
typedef struct se_keyword {
    size_t ncovers;
    const se_cover *covers;
} se_keyword;

typedef struct se_query {
    long long room_id; /* rooms.room_id */
    const char *room;  /* the room's JID, for log lines (may be NULL) */
    uint64_t hi;       /* the highest batch the searcher's covers may reach */
    uint64_t before;   /* only seqs below this; 0 = from the newest */
    unsigned max;      /* page size, 1..SE_MAX_RESULTS */
    size_t nkeywords;  /* 1..SE_MAX_KEYWORDS, a conjunction */
    se_keyword keywords[SE_MAX_KEYWORDS];
    se_cache *cache; /* listings and opened blocks kept between searches; NULL: none */
} se_query;

typedef struct se_result {
    size_t n;                      /* seqs[0..n), n <= max */
    uint64_t seqs[SE_MAX_RESULTS]; /* the matches, newest first */
    bool complete;                 /* no match older than seqs[n-1] (or none at all) */
    uint64_t last_batch;           /* the room's search_last_batch */
    /* For logs and tests: */
    unsigned corrupt_blocks; /* blocks that did not open (logged, skipped) */
    unsigned round_trips;    /* pipelines sent to PostgreSQL */
    double db_ms;            /* time spent waiting for their answers */
    unsigned restarts;       /* evaluations begun again (a compaction changed the listing) */
    bool seal_skipped;       /* the cache proved every batch <= hi sealed already */
    bool listing_trusted;    /* and the room's search_version unchanged since (sql/010) */
} se_result;

/* Parses a cover's wire form, k × (u8 depth ‖ u32 prefix ‖ 32-byte node)
 * with 1 ≤ k ≤ SE_MAX_NODES, into out->nodes and out->nnodes; out->gen is
 * left for the caller (it comes from the gen attribute). Depth and prefix
 * are only copied: se_validate judges them. false (out->nnodes = 0) on a
 * length that is not such a list. */
bool se_parse_cover(const unsigned char *bytes, size_t len, se_cover *out);

/* Zeroes the node keys (and everything else) of a cover. NULL is a no-op. */
void se_cover_wipe(se_cover *c);

/* Why the query must be refused (bad-request + <bad-cover/>), or NULL if it
 * may be evaluated in a room whose search_last_batch is last_batch: 1..8
 * keywords, 1..64 covers each, 1..64 nodes per cover, max 1..200,
 * 1 ≤ hi ≤ last_batch, and every node with depth ≤ 32, prefix < 2^depth
 * and its batch range inside [1, hi]. The reason is a static string. */
const char *se_validate(const se_query *q, uint64_t last_batch);

enum {
    SE_OK = 0,
    SE_ERR_DB = -1,        /* PostgreSQL failed or the connection broke; err says why */
    SE_ERR_BAD_QUERY = -2, /* refused as se_validate would (err the reason): <bad-cover/> */
    SE_ERR_NO_ROOM = -3,   /* no such room */
    SE_ERR_NOMEM = -4
};

/* Evaluates q on pg, an idle blocking connection outside any transaction
 * and out of pipeline mode that this thread owns (else SE_ERR_DB, the
 * connection untouched). The statements it uses are prepared on the
 * connection the first time (found missing, prepared, begun again), so a
 * new or reconnected connection needs nothing beforehand; preparing them
 * sets the connection's plan_cache_mode to force_generic_plan. First every
 * open batch of the room with id ≤ q->hi is sealed (after checking hi
 * against the room's last batch), ahead of any read; then rounds of one
 * statement each probe the index, every round reading the room's listing
 * again so that what they read comes from one state of the index even if
 * a compaction commits meanwhile (searcheval.c). With q->cache, the
 * first round probes with the listing the room's last search read, so a
 * search the first round settles takes one round trip. On success fills *out (not NULL) and
 * returns SE_OK; otherwise one of the SE_ERR_* codes with a message in err
 * (errlen bytes, may be 0) and *out unspecified. The connection is left
 * idle, outside any transaction and out of pipeline mode, unless it
 * broke. A block that does not open is logged under q->room and skipped.
 * Every key derived from q is wiped before returning; q stays the
 * caller's. */
int se_search(PGconn *pg, const se_query *q, se_result *out, char *err, size_t errlen);

#endif
