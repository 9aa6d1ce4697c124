/* Keyword normalisation for encrypted search, version NV = 1
 * (/work/notes/search-wire.md §1). A message's keywords become index
 * entries and segment postings; a query's keywords become GGM covers; both
 * sides must cut text into the same byte strings, so this file is the one
 * place that does it.
 *
 *   1. NFKC + full case folding + default-ignorables dropped
 *      (utf8proc STABLE|COMPAT|COMPOSE|CASEFOLD|IGNORE).
 *   2. Word chars are categories L*, M*, N*; everything else separates.
 *      A maximal run of non-CJK word chars is one keyword; a run of CJK
 *      chars (ranges in norm.c) of length 1 is one keyword, of length
 *      n >= 2 gives its n-1 overlapping bigrams.
 *   3. A keyword over SR_SSE_KEYWORD_MAX bytes is cut at the last code-point
 *      boundary <= SR_SSE_KEYWORD_MAX.
 *   4. Distinct keywords in first-occurrence order, at most a given cap.
 *
 * Keywords are message plaintext: the buffers are wiped when freed.
 * Thread-safety: pure functions; one thread at a time per structure. */
#ifndef SEALROOM_SEARCH_NORM_H
#define SEALROOM_SEARCH_NORM_H

#include "e2e/common.h"

#define SR_SSE_KEYWORD_MAX 64        /* bytes of one keyword (UTF-8) */
#define SR_SSE_MESSAGE_KEYWORDS 1024 /* cap per message (spec §1.4) */
#define SR_SSE_QUERY_KEYWORDS 8      /* a query has 1..8 keywords (spec §1.5) */

/* kw[i] is a NUL-terminated copy of keyword i (len[i] bytes, 1..64, no NUL
 * inside). n == 0 means kw and len are NULL. */
typedef struct sr_sse_keywords {
    size_t n;
    char **kw;
    size_t *len;
} sr_sse_keywords;

/* Normalises text[0..len) (UTF-8, need not be NUL-terminated; NUL is a
 * separator) and fills *out with its distinct keywords, first occurrence
 * first, at most max_keywords of them (pass SR_SSE_MESSAGE_KEYWORDS for a
 * message; for a query pass SR_SSE_QUERY_KEYWORDS + 1 and refuse n > 8).
 * *out is always initialised (empty on error); the caller frees it with
 * sr_sse_keywords_free. Text without word chars gives n == 0 and OK.
 * Errors: INVALID (NULL out, NULL text with len > 0, max_keywords == 0),
 * MALFORMED (text is not valid UTF-8: no keywords, the message is sent
 * unindexed), NOMEM. */
int sr_sse_keywords_from_text(sr_sse_keywords *out, const char *text, size_t len,
                              size_t max_keywords);

/* Wipes and frees the keywords and resets *k to empty; accepts NULL. */
void sr_sse_keywords_free(sr_sse_keywords *k);

/* True if kw[0..len) is one of k's keywords (exact bytes). Linear: a
 * message has at most 1,024 keywords and a query asks about at most 8. */
bool sr_sse_keywords_contains(const sr_sse_keywords *k, const char *kw, size_t len);

#endif
