/* Index entries of one batch, as its writer attaches them to outgoing
 * messages (/work/notes/search-wire.md §2 "Entry label", "Dummy entry
 * labels"; §5 "Writing").
 *
 * A writer lives in memory only, for one (K_g, generation, batch). Each
 * keyword has a counter c = 0, 1, ... in the batch; a message gets one
 * real label L(t_{w,b}, c) per keyword, then random dummies up to the next
 * multiple of 8 (8 when it has no keywords), shuffled, so the component
 * learns only a rounded keyword count.
 *
 * Refused messages and counter gaps. The component probes L(t, 0),
 * L(t, 1), ... and stops at the first missing label, so a label that was
 * handed out but never stored would hide every later message with that
 * keyword. Hence entries are two-phase:
 *   sr_sse_writer_entries()  reserves the counters and returns the labels;
 *   sr_sse_writer_commit()   once the component stored the message (or
 *                            acknowledged a resend of it);
 *   sr_sse_writer_abort()    once it refused the message for good: the
 *                            counters go back, so the next message reuses
 *                            them and no gap is left.
 * Only one message may be pending: a second sr_sse_writer_entries() before
 * commit/abort is refused. That is what makes abort exact (no later label
 * was built on the reserved counters), so the caller sends indexed
 * messages of one batch one at a time and queues the rest (a resend of the
 * pending message reuses its labels). On <batch-sealed/> the whole writer
 * is dropped and the message gets labels from a new batch's writer.
 *
 * Thread-safety: one thread at a time per writer. */
#ifndef SEALROOM_SEARCH_WRITER_H
#define SEALROOM_SEARCH_WRITER_H

#include "search/norm.h"

#define SR_SSE_BATCH_ENTRIES 65536  /* the component seals a batch at this many */
#define SR_SSE_MESSAGE_ENTRIES 8192 /* entries of one message, a multiple of 8 */

typedef struct sr_sse_writer sr_sse_writer;

/* A writer for `batch` (>= 1) of generation gen (>= 1) under K_g (copied
 * into guarded memory). NULL on bad arguments or out of memory. */
sr_sse_writer *sr_sse_writer_new(const unsigned char kg[32], uint32_t gen, uint32_t batch);

/* Wipes (K_g, cached batch tokens, keywords, counters) and frees; accepts
 * NULL. */
void sr_sse_writer_free(sr_sse_writer *w);

uint32_t sr_sse_writer_batch(const sr_sse_writer *w);

/* The <index/> payload of one message with keywords kws (normally from
 * sr_sse_keywords_from_text; at most SR_SSE_MESSAGE_ENTRIES): *labels
 * receives *n × 16 bytes (caller frees with free()), n a multiple of 8 in
 * 8..8192. Each keyword's batch token is derived once per batch and
 * cached. The message is pending until commit or abort.
 * Errors: INVALID (NULL, a keyword of bad length, too many keywords, a
 * message already pending, or the batch would pass SR_SSE_BATCH_ENTRIES:
 * take a new batch), NOMEM. On error nothing is reserved and *labels is
 * NULL, *n 0. */
int sr_sse_writer_entries(sr_sse_writer *w, const sr_sse_keywords *kws, unsigned char **labels,
                          size_t *n);

/* The pending message was stored: its counters stay used. No-op if none. */
void sr_sse_writer_commit(sr_sse_writer *w);

/* The pending message was refused and will not be resent with these
 * labels: its counters and entry count are returned. No-op if none. */
void sr_sse_writer_abort(sr_sse_writer *w);

#endif
