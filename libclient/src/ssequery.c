/* Searching a room's archive by keyword (xep "Searching"): the query's
 * keywords, normalised as the writers normalised theirs, become per
 * generation GGM covers of the batch range we know of, sent in one IQ;
 * the room answers with the matching archived messages, newest first,
 * which go through the inbox like history (decrypted, verified) and are
 * delivered only if their plaintext really contains every keyword: a
 * service returning other messages gains nothing. */
#include "internal.h"
#include "sse.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/b64.h"
#include "search/ggm.h"
#include "search/keyring.h"
#include "search/norm.h"

#define NODE_WIRE_BYTES 37 /* u8 depth ‖ u32 prefix ‖ 32-byte node */

struct sr_sse_filter {
    int refs;
    sr_sse_keywords kws;
};

static struct sr_sse_filter *filter_ref(struct sr_sse_filter *f)
{
    if (f)
        f->refs++;
    return f;
}

void sr_sse_filter_release(struct sr_sse_filter *f)
{
    if (!f || --f->refs > 0)
        return;
    sr_sse_keywords_free(&f->kws);
    free(f);
}

bool sr_sse_filter_match(const struct sr_sse_filter *f, const unsigned char *plain, size_t len)
{
    sr_sse_keywords have = {0};
    bool ok = sr_sse_keywords_from_text(&have, (const char *)plain, len, SR_SSE_MESSAGE_KEYWORDS) ==
              SR_E2E_OK;
    for (size_t i = 0; ok && i < f->kws.n; i++)
        ok = sr_sse_keywords_contains(&have, f->kws.kw[i], f->kws.len[i]);
    sr_sse_keywords_free(&have);
    return ok;
}

/* What a search request carries until it is sent and answered. */
typedef struct sr_sse_search {
    struct sr_sse_filter *filter;
    char *before;
    unsigned max;
    bool sent;
    uint64_t hi;
    int reissued; /* times sent again because batches beyond hi existed */
    bool refreshed; /* the room's state was fetched again for this search */
} sr_sse_search;

/* A page is asked again with the room's newer highest batch at most this
 * often (a room whose batches keep coming gets the page of the last ask). */
#define SEARCH_REISSUE_MAX 3

void sr_sse_search_free(void *p)
{
    sr_sse_search *q = p;
    if (!q)
        return;
    sr_sse_filter_release(q->filter);
    free(q->before);
    free(q);
}

/* One <cover gen=g/> of keyword kw: the nodes over batches [1, hi]. */
static xmpp_stanza_t *cover_element(sealroom_ctx *ctx, const unsigned char kg[32], uint32_t gen,
                                    const char *kw, size_t kwlen, uint32_t hi)
{
    unsigned char root[32];
    sr_sse_node nodes[SR_SSE_COVER_MAX];
    unsigned char wire[SR_SSE_COVER_MAX * NODE_WIRE_BYTES];
    char b64[sizeof wire * 4 / 3 + 8], num[16];
    xmpp_stanza_t *el = NULL, *t = NULL;
    size_t n = 0;
    if (sr_sse_root(root, kg, gen, kw, kwlen) == SR_E2E_OK)
        n = sr_sse_cover(nodes, SR_SSE_COVER_MAX, root, 1, hi);
    for (size_t i = 0; i < n; i++) {
        unsigned char *w = wire + i * NODE_WIRE_BYTES;
        w[0] = nodes[i].depth;
        w[1] = (unsigned char)(nodes[i].prefix >> 24);
        w[2] = (unsigned char)(nodes[i].prefix >> 16);
        w[3] = (unsigned char)(nodes[i].prefix >> 8);
        w[4] = (unsigned char)nodes[i].prefix;
        memcpy(w + 5, nodes[i].key, 32);
    }
    snprintf(num, sizeof num, "%" PRIu32, gen);
    if (n > 0 && sr_b64_encode(b64, sizeof b64, wire, n * NODE_WIRE_BYTES) &&
        (el = sr_el(ctx->xmpp, "cover", NULL)) && (t = xmpp_stanza_new(ctx->xmpp)) &&
        xmpp_stanza_set_attribute(el, "gen", num) == XMPP_EOK &&
        xmpp_stanza_set_text(t, b64) == XMPP_EOK && xmpp_stanza_add_child_ex(el, t, 0) == XMPP_EOK)
        t = NULL;
    else if (el) {
        xmpp_stanza_release(el);
        el = NULL;
    }
    if (t)
        xmpp_stanza_release(t);
    sodium_memzero(root, sizeof root);
    sodium_memzero(nodes, sizeof nodes);
    sodium_memzero(wire, sizeof wire);
    sodium_memzero(b64, sizeof b64);
    return el;
}

static xmpp_stanza_t *search_element(sealroom_ctx *ctx, const sr_sse_room *s,
                                     const sr_sse_search *q, uint32_t hi)
{
    char num[24];
    xmpp_stanza_t *el = sr_el(ctx->xmpp, "search", SR_NS_SEARCH);
    if (!el)
        return NULL;
    snprintf(num, sizeof num, "%" PRIu32, hi);
    bool ok = xmpp_stanza_set_attribute(el, "hi", num) == XMPP_EOK;
    snprintf(num, sizeof num, "%u", q->max);
    ok = ok && xmpp_stanza_set_attribute(el, "max", num) == XMPP_EOK;
    if (ok && q->before)
        ok = xmpp_stanza_set_attribute(el, "before", q->before) == XMPP_EOK;
    for (size_t k = 0; ok && k < q->filter->kws.n; k++) {
        xmpp_stanza_t *kw = sr_el(ctx->xmpp, "keyword", NULL);
        ok = kw != NULL;
        for (size_t g = 0; ok && g < s->keyring->n; g++) {
            xmpp_stanza_t *c = cover_element(ctx, s->keyring->key[g], s->keyring->gen[g],
                                             q->filter->kws.kw[k], q->filter->kws.len[k], hi);
            ok = c && xmpp_stanza_add_child_ex(kw, c, 0) == XMPP_EOK;
            if (!ok && c)
                xmpp_stanza_release(c);
        }
        if (ok)
            ok = xmpp_stanza_add_child_ex(el, kw, 0) == XMPP_EOK;
        else if (kw)
            xmpp_stanza_release(kw);
    }
    if (!ok) {
        xmpp_stanza_release(el);
        return NULL;
    }
    return el;
}

static void send_search(sealroom_ctx *ctx, sr_room *room, sr_request *r);

static void search_answered(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                            const char *text)
{
    uint32_t id = *(uint32_t *)arg;
    free(arg);
    sr_request *r = sr_request_by_id(ctx, id);
    if (!r)
        return;
    sr_sse_search *q = r->sse;
    sr_room *room = sr_room_find(ctx, r->room);
    if (rc < 0 || !room) {
        sr_request_done(ctx, r, rc < 0 ? rc : SEALROOM_E_STATE, text, NULL);
        return;
    }
    xmpp_stanza_t *res = answer ? sr_child(answer, "result", SR_NS_SEARCH) : NULL;
    if (!res) {
        sr_request_done(ctx, r, SEALROOM_E_PROTOCOL, "search answer without <result/>", NULL);
        return;
    }
    uint64_t batch;
    if (room->sse && sr_parse_u64(xmpp_stanza_get_attribute(res, "batch"), &batch) &&
        batch <= UINT32_MAX && batch > room->sse->last_batch)
        room->sse->last_batch = batch;
    sr_sse_auto_note(ctx, room, res);
    /* Batches were taken since the last we knew of (other writers): our
     * covers did not reach them, so this page may miss matches. Ask again
     * over the room's whole range, which the answer just told us. */
    if (room->sse && room->sse->last_batch > q->hi && q->reissued < SEARCH_REISSUE_MAX) {
        q->reissued++;
        send_search(ctx, room, r);
        return;
    }
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(res); c; c = xmpp_stanza_get_next(c)) {
        const char *name = xmpp_stanza_is_tag(c) ? xmpp_stanza_get_name(c) : NULL;
        const char *ns = xmpp_stanza_get_ns(c);
        if (!name || !ns || strcmp(name, "forwarded") != 0 || strcmp(ns, SR_NS_FORWARD) != 0)
            continue;
        xmpp_stanza_t *inner = sr_child(c, "message", NULL);
        if (!inner)
            continue;
        int64_t ts = ctx->have_time ? (int64_t)ctx->now_ms : 0;
        xmpp_stanza_t *delay = sr_child(c, "delay", SR_NS_DELAY);
        if (delay)
            sr_parse_stamp(xmpp_stanza_get_attribute(delay, "stamp"), &ts);
        sr_inbox_push_hit(ctx, room, inner, ts, filter_ref(q->filter));
    }
    sr_inbox_push_fin(ctx, room, r->id, res);
}

static void send_search(sealroom_ctx *ctx, sr_room *room, sr_request *r)
{
    sr_sse_search *q = r->sse;
    sr_sse_room *s = room->sse;
    if (s->last_batch == 0 && !q->refreshed) {
        /* We knew of no batch when we last looked; writers may have taken
         * some since. Ask the room once before concluding nothing is
         * indexed (the answer resumes this search). */
        q->refreshed = true;
        s->state_known = false;
        sr_sse_maintain(ctx, room);
        return;
    }
    q->sent = true;
    if (s->last_batch == 0) {
        /* No batch was ever taken: nothing is indexed. */
        sealroom_event ev = {0};
        ev.complete = 1;
        sr_request_done(ctx, r, SEALROOM_OK, NULL, &ev);
        return;
    }
    q->hi = s->last_batch;
    xmpp_stanza_t *el = search_element(ctx, s, q, (uint32_t)q->hi);
    uint32_t *arg = malloc(sizeof *arg);
    if (!el || !arg) {
        if (el)
            xmpp_stanza_release(el);
        free(arg);
        sr_request_done(ctx, r, SEALROOM_E_NOMEM, "out of memory", NULL);
        return;
    }
    *arg = r->id;
    if (sr_iq_call_owned(ctx, "get", room->jid, el, search_answered, arg, free) < 0) {
        free(arg);
        sr_request_done(ctx, r, SEALROOM_E_NETWORK, "could not send the search", NULL);
    }
}

void sr_sse_search_resume(sealroom_ctx *ctx, sr_room *room)
{
    sr_sse_room *s = room->sse;
    for (;;) {
        sr_request *hit = NULL;
        for (sr_request *r = ctx->requests; r && !hit; r = r->next)
            if (((r->kind == SEALROOM_REQ_SEARCH && r->sse && !((sr_sse_search *)r->sse)->sent) ||
                 (r->kind == SEALROOM_REQ_COMPACT && r->sse &&
                  !sr_sse_compaction_started(r->sse))) &&
                strcmp(r->room, room->jid) == 0)
                hit = r;
        if (!hit)
            return;
        if (s && s->disabled) {
            sr_request_done(ctx, hit, SEALROOM_E_UNAVAILABLE, "the room has no encrypted search",
                            NULL);
            continue;
        }
        if (!s || !s->state_known || !s->keyring)
            return; /* the upkeep calls again when it has them */
        if (hit->kind == SEALROOM_REQ_COMPACT)
            sr_sse_compaction_start(ctx, hit);
        else
            send_search(ctx, room, hit);
    }
}

int sealroom_room_search(sealroom_ctx *ctx, uint32_t *request_id, const char *room_name,
                         const char *query, const char *before_id, unsigned max)
{
    char room[SR_BARE_JID_MAX];
    uint64_t before;
    if (!ctx || !query)
        return SEALROOM_E_INVALID;
    int rc = sr_room_jid(ctx, room, sizeof room, room_name);
    if (rc < 0)
        return rc;
    if (max > SR_SSE_PAGE_MAX)
        return sr_fail(ctx, SEALROOM_E_INVALID, "at most %u results per page", SR_SSE_PAGE_MAX);
    if (before_id && (!sr_parse_u64(before_id, &before) || before == 0))
        return sr_fail(ctx, SEALROOM_E_INVALID, "before_id is not an archive id of the room");
    if (!ctx->identity)
        return sr_fail(ctx, SEALROOM_E_STATE, "no identity set");
    if (!ctx->link_up)
        return sr_fail(ctx, SEALROOM_E_STATE, "the link to the server is down");
    sr_room *rm = sr_room_find(ctx, room);
    if (!rm || !rm->want_joined)
        return sr_fail(ctx, SEALROOM_E_STATE, "not joined to %s", room);
    sr_sse_search *q = calloc(1, sizeof *q);
    if (!q || !(q->filter = calloc(1, sizeof *q->filter))) {
        free(q);
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    }
    q->filter->refs = 1;
    q->max = max ? max : SR_SSE_PAGE_DEFAULT;
    int erc = sr_sse_keywords_from_text(&q->filter->kws, query, strlen(query),
                                        SR_SSE_QUERY_KEYWORDS + 1);
    if (erc != SR_E2E_OK || q->filter->kws.n == 0 || q->filter->kws.n > SR_SSE_QUERY_KEYWORDS) {
        bool many = erc == SR_E2E_OK && q->filter->kws.n > SR_SSE_QUERY_KEYWORDS;
        sr_sse_search_free(q);
        return sr_fail(ctx, SEALROOM_E_INVALID,
                       many ? "a query has at most %u keywords"
                            : "the query has no keyword (or is not UTF-8); at most %u keywords",
                       SR_SSE_QUERY_KEYWORDS);
    }
    if (before_id && !(q->before = sr_strdup(before_id))) {
        sr_sse_search_free(q);
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    }
    sr_request *r = sr_request_new(ctx, SEALROOM_REQ_SEARCH);
    if (!r || !(r->room = sr_strdup(room))) {
        if (r) {
            sr_request_unlink(ctx, r);
            sr_request_free(r);
        }
        sr_sse_search_free(q);
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    }
    r->sse = q;
    if (request_id)
        *request_id = r->id;
    /* Sent now if the keyring is at hand, else once the upkeep has it. */
    sr_sse_maintain(ctx, rm);
    sr_sse_search_resume(ctx, rm);
    return SEALROOM_OK;
}
