/* When a member compacts a room's search index by itself (sseauto.c does
 * the wiring; xep "Compaction", compact='due'): the policy alone, without
 * I/O, so it can be tested on its own.
 *
 * The room says compaction is due in its answers to <batch/>, <search/>
 * and <state/>. Then one job at a time runs per room: a job is one lease
 * made into one segment. After a job that committed, the next one starts
 * at once, for as long as the room keeps granting leases; a lease refused
 * for want of work ends the run until the room says "due" again. A job
 * that fails otherwise (a message we cannot decrypt, a malformed answer,
 * a timeout) backs off, doubling from SR_SSE_AUTO_BACKOFF_MS up to
 * SR_SSE_AUTO_BACKOFF_MAX_MS, and only a "due" heard afterwards (or
 * during the wait) starts the next: a job that cannot succeed here (old
 * epochs this member never held) must not be retried in a loop, as each
 * try reads up to 64 batches of messages.
 *
 * Thread-safety: one thread at a time per state. */
#ifndef SEALROOM_SEARCH_AUTOCOMPACT_H
#define SEALROOM_SEARCH_AUTOCOMPACT_H

#include <stdbool.h>
#include <stdint.h>

#define SR_SSE_AUTO_BACKOFF_MS 10000u
#define SR_SSE_AUTO_BACKOFF_MAX_MS (15u * 60u * 1000u)

/* How a job ended. */
typedef enum sr_sse_auto_outcome {
    SR_SSE_AUTO_COMMITTED = 0, /* a segment was made: ask for the next lease */
    SR_SSE_AUTO_NOTHING,       /* the room had no work (item-not-found): stop */
    SR_SSE_AUTO_FAILED,        /* anything else: back off */
    SR_SSE_AUTO_CANCELLED      /* we stopped it (link lost, room left): no back-off */
} sr_sse_auto_outcome;

/* Zero-initialised it is idle (calloc is fine). */
typedef struct sr_sse_autocompact {
    bool running;       /* a job is in flight */
    bool pending;       /* "due" was heard and no job started for it yet */
    unsigned failures;  /* jobs failed in a row, counted while the back-off grows */
    uint64_t resume_ms; /* while backing off, no job before this time */
} sr_sse_autocompact;

/* The room said compaction is due, at now_ms. True: start a job now
 * (then call sr_sse_autocompact_started). Otherwise it is remembered for
 * after the running job or the back-off. */
bool sr_sse_autocompact_due(sr_sse_autocompact *a, uint64_t now_ms);

/* Time passed. True: a "due" waited out a back-off (or a moment when no
 * job could start): start one now. */
bool sr_sse_autocompact_tick(const sr_sse_autocompact *a, uint64_t now_ms);

/* A job was started. */
void sr_sse_autocompact_started(sr_sse_autocompact *a);

/* Forget a "due" not acted on yet (automatic compaction switched off). */
void sr_sse_autocompact_forget(sr_sse_autocompact *a);

/* The running job ended at now_ms. True: start the next job now. */
bool sr_sse_autocompact_done(sr_sse_autocompact *a, sr_sse_auto_outcome outcome, uint64_t now_ms);

#endif
