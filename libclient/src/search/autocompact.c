/* The automatic compaction policy (autocompact.h): one job at a time per
 * room, on while the room grants leases, backing off after failures. */
#include "search/autocompact.h"

/* Doublings of the back-off before it stays at its maximum. */
#define BACKOFF_DOUBLINGS 7u

bool sr_sse_autocompact_due(sr_sse_autocompact *a, uint64_t now_ms)
{
    a->pending = true;
    return sr_sse_autocompact_tick(a, now_ms);
}

bool sr_sse_autocompact_tick(const sr_sse_autocompact *a, uint64_t now_ms)
{
    return a->pending && !a->running && now_ms >= a->resume_ms;
}

void sr_sse_autocompact_started(sr_sse_autocompact *a)
{
    a->running = true;
    a->pending = false;
}

void sr_sse_autocompact_forget(sr_sse_autocompact *a)
{
    a->pending = false;
}

bool sr_sse_autocompact_done(sr_sse_autocompact *a, sr_sse_auto_outcome outcome, uint64_t now_ms)
{
    a->running = false;
    switch (outcome) {
    case SR_SSE_AUTO_COMMITTED:
        a->failures = 0;
        a->resume_ms = 0;
        return true;
    case SR_SSE_AUTO_NOTHING:
        /* The room's latest word: nothing to lease. A "due" heard while
         * the job ran predates it. */
        a->failures = 0;
        a->resume_ms = 0;
        a->pending = false;
        return false;
    case SR_SSE_AUTO_CANCELLED:
        a->pending = false;
        a->resume_ms = 0;
        return false;
    case SR_SSE_AUTO_FAILED:
        break;
    }
    unsigned shift = a->failures < BACKOFF_DOUBLINGS ? a->failures : BACKOFF_DOUBLINGS;
    uint64_t wait = (uint64_t)SR_SSE_AUTO_BACKOFF_MS << shift;
    if (wait > SR_SSE_AUTO_BACKOFF_MAX_MS)
        wait = SR_SSE_AUTO_BACKOFF_MAX_MS;
    if (a->failures < BACKOFF_DOUBLINGS)
        a->failures++;
    a->resume_ms = now_ms + wait;
    return false;
}
