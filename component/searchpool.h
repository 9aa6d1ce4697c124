/* The search workers: threads, each with its own blocking PostgreSQL
 * connection, that evaluate encrypted searches (se_search, searcheval.h)
 * and read the archived form of the messages they match, so the event
 * loop never waits for the many round trips one search takes. The loop
 * submits a job and later takes it back finished (searchpool_take_done,
 * polled every loop turn, as the sweep's completions are); a worker never
 * touches the loop's db or XMPP objects.
 *
 * Thread-safety: searchpool_submit, searchpool_take_done and
 * searchpool_get_stats may be called from any thread; searchpool_start and
 * searchpool_stop from one (the loop's). */
#ifndef SEALROOMD_SEARCHPOOL_H
#define SEALROOMD_SEARCHPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "searcheval.h"

typedef struct searchpool searchpool;

/* One matched message as the archive holds it. */
typedef struct sp_msg {
    uint64_t seq;
    char *sender;  /* bare JID */
    char *nick;
    char *origin;  /* origin-id, NULL if none */
    long long stamp_ms;
    unsigned char *payload;
    size_t len;
} sp_msg;

/* A search. The submitter fills q (q.keywords[i].covers pointing into
 * covers[0..ncovers), which the job owns) and user; the worker fills the
 * rest. */
typedef struct sp_job {
    se_query q;
    se_cover *covers;
    size_t ncovers;
    void *user;
    /* Results: rc is SE_OK or an SE_ERR_* code with err saying why. On
     * SE_OK, res as se_search gave it and msgs[0..nmsgs) the matches
     * newest first (fewer than res.n if some were retracted since). */
    int rc;
    char err[256];
    se_result res;
    sp_msg *msgs;
    size_t nmsgs;
    struct sp_job *next;
} sp_job;

/* A job with room for ncovers covers (zeroed), or NULL. */
sp_job *sp_job_new(size_t ncovers);
/* Wipes the covers (node keys are secrets) and frees everything but user.
 * NULL is a no-op. */
void sp_job_free(sp_job *job);

/* Start `threads` workers on conninfo (copied), sharing a search cache of
 * cache_bytes (0: none; searchcache.h). Connecting happens in the
 * workers, with back-off while PostgreSQL is down. NULL if memory or
 * threads ran out. */
searchpool *searchpool_start(const char *conninfo, unsigned threads, size_t cache_bytes);

/* Stop the workers after the search each is in, join them, and move the
 * jobs nobody ran onto the done list failed (SE_ERR_DB, "shutting down"),
 * so the caller takes every job back with searchpool_take_done before
 * searchpool_free. */
void searchpool_stop(searchpool *p);
void searchpool_free(searchpool *p); /* after stop; frees jobs not taken back */

/* Queue job (ownership passes to the pool until it comes back). false
 * (the caller keeps it) when the queue is full or the pool stopping. */
bool searchpool_submit(searchpool *p, sp_job *job);

/* A finished job (ownership back to the caller), or NULL. */
sp_job *searchpool_take_done(searchpool *p);

/* A file descriptor that polls readable while finished jobs wait to be
 * taken (searchpool_take_done clears it); -1 when there is none (the
 * caller then finds jobs on its timer). */
int searchpool_wakefd(const searchpool *p);

typedef struct searchpool_stats {
    unsigned threads;
    unsigned long long queued;     /* waiting for a worker now */
    unsigned long long running;    /* being evaluated now */
    unsigned long long evaluated;  /* searches that ran to a result */
    unsigned long long failed;     /* searches that failed on the database */
    unsigned long long reconnects; /* connections re-established after a loss */
    unsigned long long cache_hits, cache_misses; /* search cache lookups */
    size_t cache_bytes;                          /* held by the search cache now */
} searchpool_stats;

void searchpool_get_stats(searchpool *p, searchpool_stats *out);

#endif
