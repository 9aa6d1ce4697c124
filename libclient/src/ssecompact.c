/* Compacting a room's search index (xep "Compaction"): under a lease from
 * the room, read the messages of the sealed batches (or segments) it
 * names, decrypt them like history, rebuild their keywords, and upload the
 * static segment that replaces them, in parts, then commit. Until the
 * commit nothing changes for searches, so a session that dies midway
 * loses nothing: the lease expires and the batches stay. A message we
 * cannot read (a header under an epoch we do not hold) abandons the job:
 * leaving it out would drop it from every later search. */
#include "internal.h"
#include "sse.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/b64.h"
#include "search/keyring.h"
#include "search/norm.h"
#include "search/segment.h"

#define FETCH_PAGE 100
#define PART_BLOCKS 512 /* blocks per <segment-part/> */
#define BLOCK_WIRE (16 + SR_SSE_BLOCK_BYTES)

typedef enum { JOB_LEASE = 0, JOB_FETCH, JOB_UPLOAD, JOB_COMMIT } job_step;

struct sr_sse_compaction {
    int refs;
    uint32_t request_id;
    job_step step;
    bool started, leased;
    char lease[24];
    uint64_t segment;
    uint32_t gen, last_batch;
    uint64_t expected; /* messages the lease names */
    char *after;       /* fetch cursor */
    sr_sse_doc *docs;
    size_t ndocs, capdocs;
    size_t unreadable;
    unsigned char *blocks; /* nblocks × BLOCK_WIRE */
    size_t nblocks, sent;
};

static void job_free(struct sr_sse_compaction *j)
{
    for (size_t i = 0; i < j->ndocs; i++)
        sr_sse_keywords_free(&j->docs[i].kws);
    free(j->docs);
    free(j->after);
    free(j->blocks);
    free(j);
}

void sr_sse_compaction_release(struct sr_sse_compaction *j)
{
    if (j && --j->refs == 0)
        job_free(j);
}

bool sr_sse_compaction_started(const struct sr_sse_compaction *j)
{
    return j->started;
}

/* ---- the inbox hands us each message of the lease ---- */

void sr_sse_compaction_take(sealroom_ctx *ctx, struct sr_sse_compaction *j, const char *stanza_id,
                            const unsigned char *plain, size_t len)
{
    uint64_t seq;
    if (!stanza_id || !sr_parse_u64(stanza_id, &seq) || seq == 0) {
        j->unreadable++;
        return;
    }
    if (j->ndocs == j->capdocs) {
        size_t cap = j->capdocs ? j->capdocs * 2 : 256;
        sr_sse_doc *d = realloc(j->docs, cap * sizeof *d);
        if (!d) {
            j->unreadable++;
            return;
        }
        j->docs = d;
        j->capdocs = cap;
    }
    sr_sse_doc *d = &j->docs[j->ndocs];
    memset(d, 0, sizeof *d);
    d->seq = seq;
    /* The writer's rule: text that is not UTF-8 has no keywords. */
    if (sr_sse_keywords_from_text(&d->kws, (const char *)plain, len, SR_SSE_MESSAGE_KEYWORDS) !=
        SR_E2E_OK)
        sr_sse_keywords_free(&d->kws);
    j->ndocs++;
    (void)ctx;
}

void sr_sse_compaction_unreadable(struct sr_sse_compaction *j)
{
    j->unreadable++;
}

/* ---- the steps ---- */

static void step_answered(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                          const char *text);

/* Sends child for job j of request r; the answer continues the job. */
static void job_call(sealroom_ctx *ctx, sr_request *r, const char *type, xmpp_stanza_t *child)
{
    struct sr_sse_compaction *j = r->sse;
    uint32_t *arg = malloc(sizeof *arg);
    if (!child || !arg) {
        if (child)
            xmpp_stanza_release(child);
        free(arg);
        sr_request_done(ctx, r, SEALROOM_E_NOMEM, "out of memory", NULL);
        return;
    }
    *arg = j->request_id;
    if (sr_iq_call_owned(ctx, type, r->room, child, step_answered, arg, free) < 0) {
        free(arg);
        sr_request_done(ctx, r, SEALROOM_E_NETWORK, "could not reach the room", NULL);
    }
}

static void send_fetch(sealroom_ctx *ctx, sr_request *r)
{
    struct sr_sse_compaction *j = r->sse;
    char max[16];
    j->step = JOB_FETCH;
    xmpp_stanza_t *el = sr_el(ctx->xmpp, "fetch", SR_NS_SEARCH);
    snprintf(max, sizeof max, "%d", FETCH_PAGE);
    if (el && (xmpp_stanza_set_attribute(el, "lease", j->lease) != XMPP_EOK ||
               xmpp_stanza_set_attribute(el, "max", max) != XMPP_EOK ||
               (j->after && xmpp_stanza_set_attribute(el, "after", j->after) != XMPP_EOK))) {
        xmpp_stanza_release(el);
        el = NULL;
    }
    job_call(ctx, r, "get", el);
}

static void send_part_or_commit(sealroom_ctx *ctx, sr_request *r)
{
    struct sr_sse_compaction *j = r->sse;
    xmpp_stanza_t *el;
    if (j->sent < j->nblocks) {
        size_t k = j->nblocks - j->sent < PART_BLOCKS ? j->nblocks - j->sent : PART_BLOCKS;
        size_t cap = sr_b64_encoded_len(k * BLOCK_WIRE);
        char *b64 = malloc(cap);
        xmpp_stanza_t *t = xmpp_stanza_new(ctx->xmpp);
        el = sr_el(ctx->xmpp, "segment-part", SR_NS_SEARCH);
        bool ok = b64 && t && el &&
                  sr_b64_encode(b64, cap, j->blocks + j->sent * BLOCK_WIRE, k * BLOCK_WIRE) &&
                  xmpp_stanza_set_attribute(el, "lease", j->lease) == XMPP_EOK &&
                  xmpp_stanza_set_text(t, b64) == XMPP_EOK &&
                  xmpp_stanza_add_child_ex(el, t, 0) == XMPP_EOK;
        free(b64);
        if (!ok) {
            if (t)
                xmpp_stanza_release(t);
            if (el)
                xmpp_stanza_release(el);
            el = NULL;
        }
        j->step = JOB_UPLOAD;
        j->sent += k;
    } else {
        el = sr_el(ctx->xmpp, "segment-commit", SR_NS_SEARCH);
        if (el && xmpp_stanza_set_attribute(el, "lease", j->lease) != XMPP_EOK) {
            xmpp_stanza_release(el);
            el = NULL;
        }
        j->step = JOB_COMMIT;
    }
    job_call(ctx, r, "set", el);
}

/* Every message of the lease is in: build the segment. */
static void build_and_upload(sealroom_ctx *ctx, sr_request *r)
{
    struct sr_sse_compaction *j = r->sse;
    sr_room *room = sr_room_find(ctx, r->room);
    sr_sse_room *s = room ? room->sse : NULL;
    const unsigned char *kg = s && s->keyring ? sr_sse_keyring_key(s->keyring, j->gen) : NULL;
    char why[160];
    if (j->unreadable) {
        snprintf(why, sizeof why,
                 "%zu message(s) of the lease could not be read; compaction abandoned",
                 j->unreadable);
        sr_request_done(ctx, r, SEALROOM_E_DECRYPT, why, NULL);
        return;
    }
    if (j->ndocs != j->expected) {
        snprintf(why, sizeof why, "the room named %" PRIu64 " messages but sent %zu", j->expected,
                 j->ndocs);
        sr_request_done(ctx, r, SEALROOM_E_PROTOCOL, why, NULL);
        return;
    }
    if (!kg) {
        sr_request_done(ctx, r, SEALROOM_E_NO_KEY, "no key for the lease's generation", NULL);
        return;
    }
    int erc = sr_sse_segment_build(kg, j->gen, j->last_batch, j->segment, j->docs, j->ndocs,
                                   &j->blocks, &j->nblocks);
    if (erc != SR_E2E_OK) {
        sr_request_done(ctx, r, SEALROOM_E_NOMEM, "cannot build the segment", NULL);
        return;
    }
    j->sent = 0;
    send_part_or_commit(ctx, r);
}

void sr_sse_compaction_fin(sealroom_ctx *ctx, sr_request *r, xmpp_stanza_t *fin)
{
    struct sr_sse_compaction *j = r->sse;
    const char *complete = xmpp_stanza_get_attribute(fin, "complete");
    xmpp_stanza_t *set = sr_child(fin, "set", SR_NS_RSM);
    xmpp_stanza_t *last = set ? sr_child(set, "last", NULL) : NULL;
    char *l = last ? xmpp_stanza_get_text(last) : NULL;
    bool done = complete && strcmp(complete, "true") == 0;
    if (l) {
        free(j->after);
        j->after = sr_strdup(l);
        xmpp_free(ctx->xmpp, l);
    } else if (!done) {
        sr_request_done(ctx, r, SEALROOM_E_PROTOCOL, "fetch page without <last/>", NULL);
        return;
    }
    if (done)
        build_and_upload(ctx, r);
    else
        send_fetch(ctx, r);
}

static bool parse_lease(struct sr_sse_compaction *j, xmpp_stanza_t *lease)
{
    const char *id = lease ? xmpp_stanza_get_attribute(lease, "id") : NULL;
    uint64_t v, gen, last, count;
    if (!id || !sr_parse_u64(id, &v) || v == 0 || strlen(id) >= sizeof j->lease ||
        !sr_parse_u64(xmpp_stanza_get_attribute(lease, "segment"), &j->segment) ||
        j->segment == 0 || !sr_parse_u64(xmpp_stanza_get_attribute(lease, "gen"), &gen) ||
        gen == 0 || gen > UINT32_MAX ||
        !sr_parse_u64(xmpp_stanza_get_attribute(lease, "last"), &last) || last == 0 ||
        last > UINT32_MAX || !sr_parse_u64(xmpp_stanza_get_attribute(lease, "count"), &count))
        return false;
    snprintf(j->lease, sizeof j->lease, "%s", id);
    j->gen = (uint32_t)gen;
    j->last_batch = (uint32_t)last;
    j->expected = count;
    return true;
}

static void step_answered(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                          const char *text)
{
    uint32_t id = *(uint32_t *)arg;
    free(arg);
    sr_request *r = sr_request_by_id(ctx, id);
    if (!r)
        return;
    struct sr_sse_compaction *j = r->sse;
    sr_room *room = sr_room_find(ctx, r->room);
    if (rc < 0 || !room) {
        sr_request_done(ctx, r, rc < 0 ? rc : SEALROOM_E_STATE, text, NULL);
        return;
    }
    switch (j->step) {
    case JOB_LEASE:
        if (!parse_lease(j, answer ? sr_child(answer, "lease", SR_NS_SEARCH) : NULL)) {
            sr_request_done(ctx, r, SEALROOM_E_PROTOCOL, "malformed compaction lease", NULL);
            return;
        }
        j->leased = true;
        sr_log(ctx, SEALROOM_LOG_INFO, "%s: compaction lease %s: segment %" PRIu64
               ", %" PRIu64 " messages", room->jid, j->lease, j->segment, j->expected);
        send_fetch(ctx, r);
        return;
    case JOB_FETCH: {
        xmpp_stanza_t *res = answer ? sr_child(answer, "result", SR_NS_SEARCH) : NULL;
        if (!res) {
            sr_request_done(ctx, r, SEALROOM_E_PROTOCOL, "fetch answer without <result/>", NULL);
            return;
        }
        for (xmpp_stanza_t *c = xmpp_stanza_get_children(res); c; c = xmpp_stanza_get_next(c)) {
            const char *name = xmpp_stanza_is_tag(c) ? xmpp_stanza_get_name(c) : NULL;
            const char *ns = xmpp_stanza_get_ns(c);
            xmpp_stanza_t *inner = name && ns && strcmp(name, "forwarded") == 0 &&
                                           strcmp(ns, SR_NS_FORWARD) == 0
                                       ? sr_child(c, "message", NULL)
                                       : NULL;
            if (!inner)
                continue;
            j->refs++;
            sr_inbox_push_sink(ctx, room, inner, j);
        }
        /* Continues once the inbox has opened every message before it. */
        sr_inbox_push_fin(ctx, room, r->id, res);
        return;
    }
    case JOB_UPLOAD:
        send_part_or_commit(ctx, r);
        return;
    case JOB_COMMIT:
        sr_log(ctx, SEALROOM_LOG_INFO, "%s: segment %" PRIu64 " committed (%zu messages, %zu blocks)",
               room->jid, j->segment, j->ndocs, j->nblocks);
        sr_request_done(ctx, r, SEALROOM_OK, NULL, NULL);
        return;
    }
}

void sr_sse_compaction_start(sealroom_ctx *ctx, sr_request *r)
{
    struct sr_sse_compaction *j = r->sse;
    j->step = JOB_LEASE;
    j->started = true;
    job_call(ctx, r, "set", sr_el(ctx->xmpp, "compact", SR_NS_SEARCH));
}

struct sr_sse_compaction *sr_sse_compaction_attach(sr_request *r)
{
    struct sr_sse_compaction *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->refs = 2; /* r's and the caller's */
    j->request_id = r->id;
    r->sse = j;
    return j;
}

bool sr_sse_compaction_leased(const struct sr_sse_compaction *j)
{
    return j->leased;
}

int sealroom_room_compact(sealroom_ctx *ctx, uint32_t *request_id, const char *room_name)
{
    char room[SR_BARE_JID_MAX];
    if (!ctx)
        return SEALROOM_E_INVALID;
    int rc = sr_room_jid(ctx, room, sizeof room, room_name);
    if (rc < 0)
        return rc;
    if (!ctx->identity)
        return sr_fail(ctx, SEALROOM_E_STATE, "no identity set");
    if (!ctx->link_up)
        return sr_fail(ctx, SEALROOM_E_STATE, "the link to the server is down");
    sr_room *rm = sr_room_find(ctx, room);
    if (!rm || !rm->want_joined)
        return sr_fail(ctx, SEALROOM_E_STATE, "not joined to %s", room);
    struct sr_sse_compaction *j = calloc(1, sizeof *j);
    sr_request *r = j ? sr_request_new(ctx, SEALROOM_REQ_COMPACT) : NULL;
    if (!r || !(r->room = sr_strdup(room))) {
        if (r) {
            sr_request_unlink(ctx, r);
            sr_request_free(r);
        }
        free(j);
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    }
    j->refs = 1;
    j->request_id = r->id;
    r->sse = j;
    if (request_id)
        *request_id = r->id;
    /* Leased once the keyring is at hand (sr_sse_search_resume). */
    sr_sse_maintain(ctx, rm);
    sr_sse_search_resume(ctx, rm);
    return SEALROOM_OK;
}
