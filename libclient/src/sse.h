/* The wiring of encrypted search in libsealroom (sseindex.c: state,
 * keyring, writer batch, message entries; ssequery.c: searching;
 * ssecompact.c: compaction; sseauto.c: compaction the library starts by
 * itself). The arithmetic is in search/. Per-room state
 * is memory only: nothing about the index is ever written to the
 * terminal. */
#ifndef SEALROOM_SSE_H
#define SEALROOM_SSE_H

#include "internal.h"
#include "search/autocompact.h"

#define SR_NS_SEARCH "urn:xmpp:sealroom:search:0"

/* How long the outbox holds messages for the index before sending them
 * unindexed (the keyring cannot be opened or extended by anyone online). */
#define SR_SSE_WAIT_MS 5000u
/* While stuck (no writer, no keyring), look at the room's state after this
 * long, doubling up to the maximum while nothing changes. */
#define SR_SSE_REFRESH_MS 3000u
#define SR_SSE_REFRESH_MAX_MS 60000u
/* After a refused batch request, ask again no sooner than this. */
#define SR_SSE_RETRY_MS 1000u
/* The page bounds of the service's search answers. */
#define SR_SSE_PAGE_DEFAULT 50u
#define SR_SSE_PAGE_MAX 200u

struct sr_sse_keyring;
struct sr_sse_writer;

typedef struct sr_sse_room {
    bool disabled;           /* the service has no search: send unindexed */
    bool state_known, state_fetching;
    uint64_t state_at_ms;    /* when the state was learnt */
    uint64_t refresh_ms;     /* the next look after being stuck this long */
    uint32_t gen;            /* the room's generation (0: no keyring yet) */
    bool need_gen;           /* a removal happened: a new generation is due */
    uint64_t last_batch;     /* the highest batch id we know of */
    /* the latest keyring the room holds, until we can open it */
    unsigned char *blob;
    size_t blob_len;
    uint64_t blob_epoch;
    bool blob_asked;         /* we asked for its epoch once */
    struct sr_sse_keyring *keyring; /* opened (generation keys), or NULL */
    uint64_t keyring_epoch;  /* the epoch it was sealed for */
    bool uploading;
    uint64_t upload_failed_epoch; /* do not retry an upload for this epoch */
    struct sr_sse_writer *writer; /* our open batch, or NULL */
    uint32_t writer_gen;          /* its generation */
    bool batch_asking;
    uint64_t batch_failed_ms;
    uint64_t wait_since_ms;  /* the outbox has waited for a writer since */
    bool warned;
    sr_sse_autocompact autoc; /* automatic compaction (sseauto.c) */
    uint32_t auto_request;    /* its running job's request id, 0 if none */
} sr_sse_room;

/* sseindex.c */
void sr_sse_room_free(sr_room *room);
/* Learn the state, open or extend the keyring, take a batch: whatever is
 * due next. Called whenever keys, the link or the room change. */
void sr_sse_maintain(sealroom_ctx *ctx, sr_room *room);
/* An epoch was installed: a keyring sealed for it may open now, and if
 * we made it, it is ours to re-seal. */
void sr_sse_epoch_installed(sealroom_ctx *ctx, sr_room *room);
void sr_sse_link_down(sr_room *room);
/* Time passed: retry a refused batch request, give up waiting for the
 * index (the outbox then sends unindexed). */
void sr_sse_tick(sealroom_ctx *ctx, sr_room *room, uint64_t now_ms);
/* 1: messages can carry entries now; 0: wait (upkeep started); -1: send
 * without entries (no search at this room, or waited too long). */
int sr_sse_outbox_ready(sealroom_ctx *ctx, sr_room *room);
/* The <index/> element for a message with this plaintext, and its batch;
 * NULL when there is no writer (send unindexed). */
xmpp_stanza_t *sr_sse_index_element(sealroom_ctx *ctx, sr_room *room, const unsigned char *plain,
                                    size_t plain_len, uint32_t *batch_out);
/* The room refused (stored nothing of) a message carrying entries of batch. */
void sr_sse_message_refused(sealroom_ctx *ctx, sr_room *room, uint32_t batch);

/* ssequery.c */
/* Frees a search request's state (sr_request.sse). */
void sr_sse_search_free(void *search);
/* Send the searches that waited for the keyring. */
void sr_sse_search_resume(sealroom_ctx *ctx, sr_room *room);
/* Whether a decrypted hit really contains the query's keywords. */
struct sr_sse_filter;
bool sr_sse_filter_match(const struct sr_sse_filter *f, const unsigned char *plain, size_t len);
void sr_sse_filter_release(struct sr_sse_filter *f);

/* ssecompact.c */
struct sr_sse_compaction;
void sr_sse_compaction_release(struct sr_sse_compaction *job);
bool sr_sse_compaction_started(const struct sr_sse_compaction *job);
/* Lease a job (the keyring is at hand). */
void sr_sse_compaction_start(sealroom_ctx *ctx, sr_request *r);
/* The inbox opened a message of the lease / could not. */
void sr_sse_compaction_take(sealroom_ctx *ctx, struct sr_sse_compaction *job,
                            const char *stanza_id, const unsigned char *plain, size_t len);
void sr_sse_compaction_unreadable(struct sr_sse_compaction *job);
/* A fetched page's end reached the inbox head: fetch more or build. */
void sr_sse_compaction_fin(sealroom_ctx *ctx, sr_request *r, xmpp_stanza_t *fin);
/* Gives r, a COMPACT request made by the library (its cb gets the
 * outcome), a job, and returns it with a reference for the caller
 * (sr_sse_compaction_release); NULL when out of memory. */
struct sr_sse_compaction *sr_sse_compaction_attach(sr_request *r);
/* The room granted the job its lease (a later NOT_FOUND is the lease
 * expiring, not a room without work). */
bool sr_sse_compaction_leased(const struct sr_sse_compaction *job);

/* sseauto.c */
/* el, an answer of the room (<batch/>, <result/> of a search, <state/>),
 * may say compaction is due: run jobs if the ctx lets us. */
void sr_sse_auto_note(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *el);
/* Time passed: a job may start after a back-off. */
void sr_sse_auto_tick(sealroom_ctx *ctx, sr_room *room, uint64_t now_ms);
/* We left room: end its running job (the lease just expires). */
void sr_sse_auto_stop(sealroom_ctx *ctx, sr_room *room);

#endif
