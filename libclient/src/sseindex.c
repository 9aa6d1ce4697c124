/* Our side of a room's encrypted search index (urn:xmpp:sealroom:search:0;
 * xep "Encrypted Search"): learning the room's search state, opening the
 * keyring of generation keys, keeping it going from epoch to epoch (the
 * member that made an epoch re-seals it, adding a generation after a
 * removal), taking a writer batch, and the <index/> entries every message
 * we send carries. The arithmetic is in search/ (sans-I/O); this file is
 * the wiring. Everything here lives in memory only: a session that ends
 * loses its counters, and its batch is sealed by the room. */
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
#include "search/writer.h"

static sr_sse_room *sse_of(sr_room *room)
{
    if (!room->sse && (room->sse = calloc(1, sizeof *room->sse)))
        room->sse->refresh_ms = SR_SSE_REFRESH_MS;
    return room->sse;
}

void sr_sse_room_free(sr_room *room)
{
    sr_sse_room *s = room->sse;
    if (!s)
        return;
    if (s->keyring) {
        sr_sse_keyring_free(s->keyring);
        free(s->keyring);
    }
    if (s->writer)
        sr_sse_writer_free(s->writer);
    if (s->blob) {
        sodium_memzero(s->blob, s->blob_len);
        free(s->blob);
    }
    free(s);
    room->sse = NULL;
}

static void drop_writer(sr_sse_room *s)
{
    if (s->writer) {
        sr_sse_writer_free(s->writer);
        s->writer = NULL;
    }
}

/* Forget what we know so that the next look fetches the state again. */
static void state_stale(sr_sse_room *s)
{
    s->state_known = false;
}

/* ---- the state: generation, need-gen, highest batch, latest keyring ---- */

static void take_blob(sealroom_ctx *ctx, sr_room *room, sr_sse_room *s, xmpp_stanza_t *kr)
{
    uint64_t epoch;
    char *b64 = kr ? xmpp_stanza_get_text(kr) : NULL;
    if (!kr || !sr_parse_u64(xmpp_stanza_get_attribute(kr, "epoch"), &epoch) || epoch == 0 ||
        !b64) {
        if (b64)
            xmpp_free(ctx->xmpp, b64);
        return;
    }
    if (epoch == s->keyring_epoch && s->keyring) {
        xmpp_free(ctx->xmpp, b64);
        return; /* the one we hold */
    }
    size_t len = strlen(b64), cap = sr_b64_decoded_max(len), n = 0;
    unsigned char *blob = malloc(cap ? cap : 1);
    if (blob && sr_b64_decode(blob, cap, &n, b64, len) && n > 0) {
        free(s->blob);
        s->blob = blob;
        s->blob_len = n;
        s->blob_epoch = epoch;
        blob = NULL;
    } else {
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: the room's search keyring is not base64", room->jid);
    }
    free(blob);
    xmpp_free(ctx->xmpp, b64);
}

static void state_answered(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                           const char *text)
{
    sr_room *room = arg;
    sr_sse_room *s = room->sse;
    if (!s)
        return;
    s->state_fetching = false;
    if (rc < 0) {
        xmpp_stanza_t *err = answer ? sr_child(answer, "error", NULL) : NULL;
        bool unsupported = err && (sr_child(err, "feature-not-implemented", SR_NS_STANZAS) ||
                                   sr_child(err, "service-unavailable", SR_NS_STANZAS));
        if (unsupported) {
            /* A service without search: send unindexed rather than wait. */
            s->disabled = true;
            sr_log(ctx, SEALROOM_LOG_INFO, "%s: the room has no encrypted search", room->jid);
        } else {
            sr_log(ctx, SEALROOM_LOG_WARN, "%s: no search state: %s", room->jid,
                   text ? text : sealroom_strerror(rc));
        }
        sr_sse_maintain(ctx, room);
        sr_outbox_pump(ctx, room);
        return;
    }
    xmpp_stanza_t *st = answer ? sr_child(answer, "state", SR_NS_SEARCH) : NULL;
    uint64_t gen, batch;
    const char *ng = st ? xmpp_stanza_get_attribute(st, "need-gen") : NULL;
    if (!st || !sr_parse_u64(xmpp_stanza_get_attribute(st, "gen"), &gen) || gen > UINT32_MAX ||
        !sr_parse_u64(xmpp_stanza_get_attribute(st, "batch"), &batch) || batch > UINT32_MAX) {
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: malformed search state", room->jid);
        return;
    }
    s->gen = (uint32_t)gen;
    s->need_gen = ng && strcmp(ng, "true") == 0;
    if (batch > s->last_batch)
        s->last_batch = batch;
    s->state_known = true;
    s->state_at_ms = ctx->have_time ? ctx->now_ms : 0;
    take_blob(ctx, room, s, sr_child(st, "keyring", NULL));
    if (s->writer && (s->need_gen || s->writer_gen != s->gen))
        drop_writer(s);
    sr_sse_maintain(ctx, room);
    sr_outbox_pump(ctx, room);
    sr_sse_auto_note(ctx, room, st);
}

static void fetch_state(sealroom_ctx *ctx, sr_room *room, sr_sse_room *s)
{
    xmpp_stanza_t *el = sr_el(ctx->xmpp, "state", SR_NS_SEARCH);
    if (!el)
        return;
    s->state_fetching = true;
    if (sr_iq_call(ctx, "get", room->jid, el, state_answered, room) < 0)
        s->state_fetching = false;
}

/* ---- the keyring ---- */

/* Opens the fetched blob if we hold its epoch (fetching that epoch if the
 * room may give it to us). */
static void open_blob(sealroom_ctx *ctx, sr_room *room, sr_sse_room *s)
{
    if (!s->blob)
        return;
    const sr_epoch *e = sr_epoch_find(room, s->blob_epoch);
    if (!e) {
        if (!s->blob_asked) {
            s->blob_asked = true; /* once: a member added later cannot have it */
            sr_epoch_fetch(ctx, room, s->blob_epoch);
        }
        return;
    }
    sr_sse_keyring *kr = calloc(1, sizeof *kr);
    int erc = kr ? sr_sse_keyring_open(kr, s->blob, s->blob_len, e->keys.keyring, room->jid,
                                       s->blob_epoch)
                 : SR_E2E_ERR_NOMEM;
    if (erc == SR_E2E_OK) {
        if (s->keyring) {
            sr_sse_keyring_free(s->keyring);
            free(s->keyring);
        }
        s->keyring = kr;
        s->keyring_epoch = s->blob_epoch;
        s->refresh_ms = SR_SSE_REFRESH_MS;
        kr = NULL;
    } else {
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: the search keyring of epoch %" PRIu64
               " does not open: %s", room->jid, s->blob_epoch, sr_e2e_strerror(erc));
    }
    free(kr);
    sodium_memzero(s->blob, s->blob_len);
    free(s->blob);
    s->blob = NULL;
    s->blob_asked = false;
}

/* True if the verified roster removed a member in (from, to]. */
static bool removal_between(const sr_room *room, uint64_t from, uint64_t to)
{
    for (size_t i = 0; i < room->hist.nops; i++) {
        const sr_hist_op *op = &room->hist.ops[i];
        if (op->kind == SR_OP_REMOVE && op->version > from && op->version <= to)
            return true;
    }
    return false;
}

typedef struct upload_ref {
    sr_room *room;
    sr_sse_keyring *kr; /* what we stored, adopted on success */
    uint64_t epoch;
} upload_ref;

static void upload_ref_free(void *p)
{
    upload_ref *u = p;
    if (!u)
        return;
    if (u->kr) {
        sr_sse_keyring_free(u->kr);
        free(u->kr);
    }
    free(u);
}

static void keyring_stored(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                           const char *text)
{
    upload_ref *u = arg;
    sr_room *room = u->room;
    sr_sse_room *s = room->sse;
    if (s) {
        s->uploading = false;
        if (rc == SEALROOM_OK) {
            uint32_t top = u->kr->gen[u->kr->n - 1];
            if (s->keyring) {
                sr_sse_keyring_free(s->keyring);
                free(s->keyring);
            }
            s->keyring = u->kr;
            u->kr = NULL;
            s->keyring_epoch = u->epoch;
            if (top != s->gen)
                drop_writer(s);
            s->gen = top;
            s->need_gen = false;
            sr_log(ctx, SEALROOM_LOG_INFO, "%s: search keyring of epoch %" PRIu64
                   " stored (generation %" PRIu32 ")", room->jid, u->epoch, top);
        } else {
            /* Someone stored it first, or the room moved on: look again. */
            sr_log(ctx, answer ? SEALROOM_LOG_INFO : SEALROOM_LOG_WARN,
                   "%s: the room did not take our search keyring: %s", room->jid,
                   text ? text : sealroom_strerror(rc));
            state_stale(s);
            s->upload_failed_epoch = u->epoch;
        }
    }
    upload_ref_free(u);
    if (s)
        sr_sse_maintain(ctx, room);
}

/* Re-seals the keyring we hold (or starts one) for the current epoch,
 * with a new generation when a member was removed since, or the room has
 * none. */
static void upload_keyring(sealroom_ctx *ctx, sr_room *room, sr_sse_room *s, const sr_epoch *cur)
{
    upload_ref *u = calloc(1, sizeof *u);
    if (!u || !(u->kr = calloc(1, sizeof *u->kr)))
        goto fail;
    u->room = room;
    u->epoch = cur->number;
    if (s->keyring) {
        for (size_t i = 0; i < s->keyring->n; i++)
            if (sr_sse_keyring_put(u->kr, s->keyring->gen[i], s->keyring->key[i]) != SR_E2E_OK)
                goto fail;
    }
    const sr_epoch *held = s->keyring ? sr_epoch_find(room, s->keyring_epoch) : NULL;
    bool fresh = s->gen == 0 || s->need_gen || !s->keyring ||
                 (held && removal_between(room, held->roster_version, cur->roster_version));
    uint32_t top = s->keyring && s->keyring->n ? s->keyring->gen[s->keyring->n - 1] : 0;
    if (top < s->gen)
        top = s->gen;
    if (fresh && sr_sse_keyring_add_generation(u->kr, top + 1) != SR_E2E_OK)
        goto fail;
    unsigned char *blob = NULL;
    size_t len = 0;
    if (sr_sse_keyring_seal(&blob, &len, u->kr, cur->keys.keyring, room->jid, cur->number) !=
        SR_E2E_OK)
        goto fail;
    size_t b64cap = sr_b64_encoded_len(len);
    char *b64 = malloc(b64cap), num[24], gen[16];
    xmpp_stanza_t *el = sr_el(ctx->xmpp, "keyring", SR_NS_SEARCH);
    xmpp_stanza_t *t = xmpp_stanza_new(ctx->xmpp);
    snprintf(num, sizeof num, "%" PRIu64, cur->number);
    snprintf(gen, sizeof gen, "%" PRIu32, u->kr->gen[u->kr->n - 1]);
    bool ok = b64 && el && t && sr_b64_encode(b64, b64cap, blob, len) &&
              xmpp_stanza_set_attribute(el, "epoch", num) == XMPP_EOK &&
              xmpp_stanza_set_attribute(el, "gen", gen) == XMPP_EOK &&
              xmpp_stanza_set_text(t, b64) == XMPP_EOK && xmpp_stanza_add_child_ex(el, t, 0) == XMPP_EOK;
    free(blob);
    free(b64);
    if (!ok) {
        if (t)
            xmpp_stanza_release(t);
        if (el)
            xmpp_stanza_release(el);
        goto fail;
    }
    s->uploading = true;
    if (sr_iq_call_owned(ctx, "set", room->jid, el, keyring_stored, u, upload_ref_free) < 0) {
        s->uploading = false; /* el was taken; u was not */
        upload_ref_free(u);
    }
    return;
fail:
    upload_ref_free(u);
    sr_log(ctx, SEALROOM_LOG_WARN, "%s: could not make the search keyring", room->jid);
}

/* ---- the writer batch ---- */

static void batch_answered(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                           const char *text)
{
    sr_room *room = arg;
    sr_sse_room *s = room->sse;
    if (!s)
        return;
    s->batch_asking = false;
    xmpp_stanza_t *b = answer && rc == SEALROOM_OK ? sr_child(answer, "batch", SR_NS_SEARCH) : NULL;
    uint64_t id, gen;
    if (!b || !sr_parse_u64(xmpp_stanza_get_attribute(b, "id"), &id) || id == 0 ||
        id > UINT32_MAX || !sr_parse_u64(xmpp_stanza_get_attribute(b, "gen"), &gen)) {
        sr_log(ctx, SEALROOM_LOG_INFO, "%s: no search batch: %s", room->jid,
               text ? text : "malformed answer");
        /* keyring-needed and the like: the state tells what is missing. */
        state_stale(s);
        s->batch_failed_ms = ctx->have_time ? ctx->now_ms : 1;
        sr_sse_maintain(ctx, room);
        return;
    }
    const unsigned char *kg = s->keyring ? sr_sse_keyring_key(s->keyring, (uint32_t)gen) : NULL;
    if (!kg) {
        sr_log(ctx, SEALROOM_LOG_INFO, "%s: batch of generation %" PRIu64 " we have no key for",
               room->jid, gen);
        state_stale(s);
        sr_sse_maintain(ctx, room);
        return;
    }
    drop_writer(s);
    s->writer = sr_sse_writer_new(kg, (uint32_t)gen, (uint32_t)id);
    s->writer_gen = (uint32_t)gen;
    s->refresh_ms = SR_SSE_REFRESH_MS;
    if (id > s->last_batch)
        s->last_batch = id;
    if (s->writer)
        sr_outbox_pump(ctx, room);
    sr_sse_auto_note(ctx, room, b);
}

static void ask_batch(sealroom_ctx *ctx, sr_room *room, sr_sse_room *s)
{
    xmpp_stanza_t *el = sr_el(ctx->xmpp, "batch", SR_NS_SEARCH);
    if (!el)
        return;
    s->batch_asking = true;
    if (sr_iq_call(ctx, "set", room->jid, el, batch_answered, room) < 0)
        s->batch_asking = false;
}

/* ---- upkeep ---- */

void sr_sse_maintain(sealroom_ctx *ctx, sr_room *room)
{
    sr_sse_room *s = sse_of(room);
    if (!s || s->disabled || !ctx->link_up || !ctx->identity || !room->roster_known)
        return;
    if (!s->state_known) {
        if (!s->state_fetching)
            fetch_state(ctx, room, s);
        return;
    }
    open_blob(ctx, room, s);
    const sr_epoch *cur = sr_epoch_find(room, room->epoch_current);
    /* The keyring follows the epochs: its maker re-seals it, and anyone
     * does when the room has none or needs a generation. */
    if (cur && room->epoch_checked && !s->uploading && s->keyring_epoch < cur->number &&
        s->upload_failed_epoch != cur->number &&
        (cur->ours || s->gen == 0 || s->need_gen) && (s->keyring || s->gen == 0)) {
        upload_keyring(ctx, room, s, cur);
        return;
    }
    /* A batch only when a message waits for one: every batch costs each
     * later search a probe until it is compacted. */
    if (!s->writer && !s->batch_asking && s->wait_since_ms && s->gen > 0 && !s->need_gen &&
        s->keyring && sr_sse_keyring_key(s->keyring, s->gen) && room->joined) {
        uint64_t now = ctx->have_time ? ctx->now_ms : 0;
        if (!s->batch_failed_ms || now >= s->batch_failed_ms + SR_SSE_RETRY_MS)
            ask_batch(ctx, room, s);
    }
    sr_sse_search_resume(ctx, room);
}

void sr_sse_epoch_installed(sealroom_ctx *ctx, sr_room *room)
{
    sr_sse_room *s = sse_of(room);
    if (s && s->blob && !s->keyring)
        s->blob_asked = false;
    sr_sse_maintain(ctx, room);
}

void sr_sse_tick(sealroom_ctx *ctx, sr_room *room, uint64_t now_ms)
{
    sr_sse_room *s = room->sse;
    if (!s || s->disabled)
        return;
    if (s->wait_since_ms == 1) /* started waiting before the clock was known */
        s->wait_since_ms = now_ms ? now_ms : 1;
    bool gave_up = s->wait_since_ms && now_ms >= s->wait_since_ms + SR_SSE_WAIT_MS;
    bool retry = !s->writer && s->batch_failed_ms && now_ms >= s->batch_failed_ms + SR_SSE_RETRY_MS;
    /* Stuck without a writer or a keyring we can open: someone else may
     * have stored what we lack (a keyring for an epoch we hold). */
    bool refresh = s->state_known && !s->state_fetching &&
                   (!s->keyring || (s->wait_since_ms && !s->writer)) &&
                   room->joined && now_ms >= s->state_at_ms + s->refresh_ms;
    if (refresh) {
        /* Back off while nothing changes: a room whose keyring nobody
         * online can open must not be polled every few seconds forever. */
        s->refresh_ms = s->refresh_ms * 2 > SR_SSE_REFRESH_MAX_MS ? SR_SSE_REFRESH_MAX_MS
                                                                   : s->refresh_ms * 2;
        state_stale(s);
    }
    if (retry)
        s->batch_failed_ms = 0;
    if (retry || refresh)
        sr_sse_maintain(ctx, room);
    if (gave_up)
        sr_outbox_pump(ctx, room);
    sr_sse_auto_tick(ctx, room, now_ms);
}

void sr_sse_link_down(sr_room *room)
{
    sr_sse_room *s = room->sse;
    if (!s)
        return;
    /* The room seals a batch whose owner left; the state may have moved. */
    drop_writer(s);
    s->state_known = false;
    s->state_fetching = false;
    s->batch_asking = false;
    s->uploading = false;
}

/* ---- entries for a message ---- */

int sr_sse_outbox_ready(sealroom_ctx *ctx, sr_room *room)
{
    sr_sse_room *s = sse_of(room);
    if (!s || s->disabled)
        return -1;
    if (s->writer)
        return 1;
    uint64_t now = ctx->have_time ? ctx->now_ms : 0;
    if (!s->wait_since_ms)
        s->wait_since_ms = now ? now : 1;
    if (now && now >= s->wait_since_ms + SR_SSE_WAIT_MS) {
        /* The index is not to be had in time (no keyring we can open, a
         * generation nobody online can start): messages must still flow. */
        if (!s->warned) {
            sr_log(ctx, SEALROOM_LOG_WARN,
                   "%s: search index not ready after %u ms: sending without index entries",
                   room->jid, (unsigned)SR_SSE_WAIT_MS);
            s->warned = true;
        }
        return -1;
    }
    sr_sse_maintain(ctx, room);
    return 0;
}

xmpp_stanza_t *sr_sse_index_element(sealroom_ctx *ctx, sr_room *room, const unsigned char *plain,
                                    size_t plain_len, uint32_t *batch_out)
{
    sr_sse_room *s = room->sse;
    *batch_out = 0;
    if (!s || !s->writer)
        return NULL;
    s->wait_since_ms = 0;
    s->warned = false;
    sr_sse_keywords kws = {0};
    /* Not text: no keywords, but still the 8 dummies every message has. */
    if (sr_sse_keywords_from_text(&kws, (const char *)plain, plain_len, SR_SSE_MESSAGE_KEYWORDS) !=
        SR_E2E_OK)
        sr_sse_keywords_free(&kws);
    unsigned char *labels = NULL;
    size_t n = 0;
    int erc = sr_sse_writer_entries(s->writer, &kws, &labels, &n);
    sr_sse_keywords_free(&kws);
    /* Messages go out pipelined, so the counters are kept at once: if the
     * room refuses this message it seals the batch (no later entry can
     * land behind the gap) and we drop the writer (sr_sse_message_refused). */
    if (erc == SR_E2E_OK)
        sr_sse_writer_commit(s->writer);
    if (erc != SR_E2E_OK) {
        /* The batch is full: the next message takes a new one. */
        drop_writer(s);
        sr_sse_maintain(ctx, room);
        return NULL;
    }
    size_t cap = sr_b64_encoded_len(n * 16);
    char *b64 = malloc(cap), num[16];
    xmpp_stanza_t *el = sr_el(ctx->xmpp, "index", SR_NS_SEARCH);
    xmpp_stanza_t *t = xmpp_stanza_new(ctx->xmpp);
    uint32_t batch = sr_sse_writer_batch(s->writer);
    snprintf(num, sizeof num, "%" PRIu32, batch);
    bool ok = b64 && el && t && sr_b64_encode(b64, cap, labels, n * 16) &&
              xmpp_stanza_set_attribute(el, "batch", num) == XMPP_EOK &&
              xmpp_stanza_set_text(t, b64) == XMPP_EOK && xmpp_stanza_add_child_ex(el, t, 0) == XMPP_EOK;
    free(labels);
    free(b64);
    if (!ok) {
        if (t)
            xmpp_stanza_release(t);
        if (el)
            xmpp_stanza_release(el);
        /* Counters moved for a message that carries no entries: a probe
         * would stop at the gap, so this batch is done. */
        drop_writer(s);
        return NULL;
    }
    *batch_out = batch;
    return el;
}

void sr_sse_message_refused(sealroom_ctx *ctx, sr_room *room, uint32_t batch)
{
    sr_sse_room *s = room->sse;
    /* The room seals a batch when it refuses one of its messages (a gap
     * would hide later entries from probes): take a new one. */
    if (s && s->writer && batch && sr_sse_writer_batch(s->writer) == batch) {
        drop_writer(s);
        sr_sse_maintain(ctx, room);
    }
}
