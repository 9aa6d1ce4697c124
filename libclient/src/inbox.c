/* The receive path of a room (xep/sealroom.xml "Receiving"): live and
 * archived messages queue in arrival order and leave the queue only once
 * they are verified and decrypted (MESSAGE) or refused
 * (MESSAGE_REJECTED). Missing keys are fetched on the way (data-key
 * headers in batches, epoch envelopes, roster versions), so a history page
 * completes only after every message in it was decided. */
#include "internal.h"
#include "sse.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e/message.h"
#include "proto/b64.h"
#include "proto/jid.h"

typedef enum { OPEN_DONE, OPEN_WAIT } open_status;

static void item_free(sr_inbox_item *it)
{
    if (!it)
        return;
    if (it->msg)
        xmpp_stanza_release(it->msg);
    if (it->fin)
        xmpp_stanza_release(it->fin);
    free(it->archive_id);
    sr_sse_filter_release(it->filter);
    sr_sse_compaction_release(it->sink);
    free(it);
}

static void push(sr_room *room, sr_inbox_item *it)
{
    if (!room->inbox_tail || !room->inbox)
        room->inbox_tail = &room->inbox;
    *room->inbox_tail = it;
    room->inbox_tail = &it->next;
}

void sr_inbox_push(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *msg, const char *archive_id,
                   int64_t ts, bool history)
{
    sr_inbox_item *it = calloc(1, sizeof *it);
    if (!it || !(it->msg = xmpp_stanza_copy(msg)) ||
        (archive_id && !(it->archive_id = sr_strdup(archive_id)))) {
        item_free(it);
        sr_log(ctx, SEALROOM_LOG_ERROR, "%s: out of memory; a message was dropped", room->jid);
        return;
    }
    it->ts = ts;
    it->history = history;
    push(room, it);
    sr_inbox_pump(ctx, room);
}

void sr_inbox_push_hit(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *msg, int64_t ts,
                       struct sr_sse_filter *filter)
{
    sr_inbox_item *it = calloc(1, sizeof *it);
    if (!it || !(it->msg = xmpp_stanza_copy(msg))) {
        sr_sse_filter_release(filter);
        item_free(it);
        sr_log(ctx, SEALROOM_LOG_ERROR, "%s: out of memory; a search hit was dropped", room->jid);
        return;
    }
    it->filter = filter;
    it->ts = ts;
    it->history = true;
    push(room, it);
    sr_inbox_pump(ctx, room);
}

void sr_inbox_push_sink(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *msg,
                        struct sr_sse_compaction *job)
{
    sr_inbox_item *it = calloc(1, sizeof *it);
    if (!it || !(it->msg = xmpp_stanza_copy(msg))) {
        sr_sse_compaction_unreadable(job);
        sr_sse_compaction_release(job);
        item_free(it);
        return;
    }
    it->sink = job;
    it->history = true;
    push(room, it);
    sr_inbox_pump(ctx, room);
}

void sr_inbox_push_fin(sealroom_ctx *ctx, sr_room *room, uint32_t request_id, xmpp_stanza_t *fin)
{
    sr_inbox_item *it = calloc(1, sizeof *it);
    if (!it || !(it->fin = xmpp_stanza_copy(fin))) {
        free(it);
        sr_request *r = sr_request_by_id(ctx, request_id);
        if (r)
            sr_request_done(ctx, r, SEALROOM_E_NOMEM, "out of memory", NULL);
        return;
    }
    it->fin_request = request_id;
    push(room, it);
    sr_inbox_pump(ctx, room);
}

void sr_inbox_free(sr_room *room)
{
    while (room->inbox) {
        sr_inbox_item *it = room->inbox;
        room->inbox = it->next;
        item_free(it);
    }
    room->inbox_tail = NULL;
    if (room->seen) {
        free(room->seen->slots);
        free(room->seen);
        room->seen = NULL;
    }
}

/* ---- replay: (sender, origin-id) → which archive id carried it ---- */

static unsigned char seen_key_secret[32];
static bool seen_key_ready;

/* true if this (sender, origin-id) came before under another archive id. */
static bool seen_replayed(sr_room *room, const char *sender, const char *origin,
                          const char *archive_id)
{
    if (!seen_key_ready) {
        randombytes_buf(seen_key_secret, sizeof seen_key_secret);
        seen_key_ready = true;
    }
    sr_seen *s = room->seen;
    if (!s) {
        s = room->seen = calloc(1, sizeof *s);
        if (!s)
            return false;
        s->cap = SR_REPLAY_WINDOW;
        s->slots = calloc(s->cap, sizeof *s->slots);
        if (!s->slots) {
            free(s);
            room->seen = NULL;
            return false;
        }
    }
    unsigned char key[16], tagb[8];
    crypto_generichash_state st;
    crypto_generichash_init(&st, seen_key_secret, sizeof seen_key_secret, sizeof key);
    crypto_generichash_update(&st, (const unsigned char *)sender, strlen(sender) + 1);
    crypto_generichash_update(&st, (const unsigned char *)origin, strlen(origin) + 1);
    crypto_generichash_final(&st, key, sizeof key);
    crypto_generichash(tagb, sizeof tagb, (const unsigned char *)(archive_id ? archive_id : ""),
                       archive_id ? strlen(archive_id) : 0, seen_key_secret, sizeof seen_key_secret);
    uint64_t tag;
    memcpy(&tag, tagb, sizeof tag);
    uint64_t h;
    memcpy(&h, key, sizeof h);
    size_t i = (size_t)(h % s->cap);
    for (size_t probe = 0; probe < s->cap; probe++, i = (i + 1) % s->cap) {
        struct sr_seen_entry *e = &s->slots[i];
        if (!e->used)
            break;
        if (memcmp(e->key, key, sizeof key) == 0)
            return archive_id && e->tag != tag;
    }
    /* Over three quarters full: forget the window and start again, so
     * probing stays short. Older replays then pass this check; the
     * archive's own ordering still bounds what a server can re-inject. */
    if (s->n * 4 >= s->cap * 3) {
        memset(s->slots, 0, s->cap * sizeof *s->slots);
        s->n = 0;
        i = (size_t)(h % s->cap);
    }
    while (s->slots[i].used)
        i = (i + 1) % s->cap;
    memcpy(s->slots[i].key, key, sizeof key);
    s->slots[i].tag = tag;
    s->slots[i].used = true;
    s->n++;
    return false;
}

/* ---- fetching headers ---- */

static void datakeys_fetched(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                             const char *text)
{
    sr_room *room = arg;
    xmpp_stanza_t *list = answer && rc == SEALROOM_OK ? sr_child(answer, "datakeys", SR_NS) : NULL;
    for (xmpp_stanza_t *c = list ? xmpp_stanza_get_children(list) : NULL; c;
         c = xmpp_stanza_get_next(c)) {
        const char *name = xmpp_stanza_is_tag(c) ? xmpp_stanza_get_name(c) : NULL;
        unsigned char id[SR_E2E_DATAKEY_ID_BYTES], h[32];
        uint64_t epoch;
        char sender[SR_BARE_JID_MAX];
        if (!name || strcmp(name, "datakey") != 0 ||
            !sr_b64_decode_exact(id, sizeof id, xmpp_stanza_get_attribute(c, "id")) ||
            !sr_parse_u64(xmpp_stanza_get_attribute(c, "epoch"), &epoch) ||
            !sr_jid_normalise_bare(sender, sizeof sender, xmpp_stanza_get_attribute(c, "sender")))
            continue;
        sr_datakey *d = sr_dk_find(room, id);
        if (!d || d->state != SR_DK_FETCHING)
            continue;
        char *b64 = xmpp_stanza_get_text(c);
        bool ok = b64 && sr_b64_decode_exact(h, sizeof h, b64);
        if (b64)
            xmpp_free(ctx->xmpp, b64);
        free(d->sender);
        d->sender = sr_strdup(sender);
        if (!ok || !d->sender || sr_e2e_point_check(h) != SR_E2E_OK) {
            d->state = SR_DK_FAILED;
            d->fail_rc = SEALROOM_E_DECRYPT;
            continue;
        }
        memcpy(d->h, h, sizeof h);
        d->epoch = epoch;
        d->state = SR_DK_NEED_EPOCH;
        sr_epoch *e = sr_epoch_find(room, epoch);
        if (e) {
            if (sr_e2e_header_unwrap_inverse(d->p, e->keys.k_inv, d->h) == SR_E2E_OK) {
                d->state = SR_DK_READY;
            } else {
                d->state = SR_DK_FAILED;
                d->fail_rc = SEALROOM_E_DECRYPT;
            }
        }
    }
    /* Whatever is still outstanding was not answered: unknown, or lost. */
    for (sr_datakey *d = room->dks; d; d = d->next)
        if (d->state == SR_DK_FETCHING) {
            d->state = SR_DK_FAILED;
            d->fail_rc = rc < 0 ? rc : SEALROOM_E_NO_KEY;
        }
    if (rc < 0)
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: fetching data keys failed: %s", room->jid,
               text ? text : sealroom_strerror(rc));
    sr_inbox_pump(ctx, room);
}

/* Reads the data-key id of a queued message (false if it has none). */
static bool item_dkid(sealroom_ctx *ctx, const sr_inbox_item *it, unsigned char id[16])
{
    xmpp_stanza_t *sealed = it->msg ? sr_child(it->msg, "sealed", SR_NS) : NULL;
    char *b64 = sealed ? xmpp_stanza_get_text(sealed) : NULL;
    bool ok = false;
    if (b64) {
        /* Decode only the first 24 bytes: enough for version ‖ id. */
        size_t n = strlen(b64) < 32 ? strlen(b64) : 32;
        unsigned char buf[24];
        size_t len = 0;
        ok = n == 32 && sr_b64_decode(buf, sizeof buf, &len, b64, n) && len == 24 &&
             buf[0] == SR_E2E_MSG_VERSION;
        if (ok)
            memcpy(id, buf + 1, 16);
        xmpp_free(ctx->xmpp, b64);
    }
    return ok;
}

/* Asks for the headers of every unknown data key in the queue at once. */
static int fetch_datakeys(sealroom_ctx *ctx, sr_room *room)
{
    xmpp_stanza_t *list = sr_el(ctx->xmpp, "datakeys", SR_NS);
    if (!list)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    unsigned n = 0;
    for (sr_inbox_item *it = room->inbox; it && n < SR_DATAKEY_FETCH_MAX; it = it->next) {
        unsigned char id[16];
        if (it->fin_request || !item_dkid(ctx, it, id))
            continue;
        sr_datakey *d = sr_dk_find(room, id);
        if (d && d->state != SR_DK_REFETCH)
            continue;
        if (!d) {
            if (!(d = sodium_malloc(sizeof *d)))
                break;
            memset(d, 0, sizeof *d);
            memcpy(d->id, id, sizeof id);
            d->next = room->dks;
            room->dks = d;
        }
        d->state = SR_DK_FETCHING;
        char b64[32];
        sr_b64_encode(b64, sizeof b64, id, sizeof id);
        xmpp_stanza_t *c = sr_el(ctx->xmpp, "datakey", NULL);
        if (!c || xmpp_stanza_set_attribute(c, "id", b64) != XMPP_EOK ||
            xmpp_stanza_add_child_ex(list, c, 0) != XMPP_EOK) {
            if (c)
                xmpp_stanza_release(c);
            break;
        }
        n++;
    }
    int rc = sr_iq_call(ctx, "get", room->jid, list, datakeys_fetched, room);
    if (rc < 0)
        for (sr_datakey *d = room->dks; d; d = d->next)
            if (d->state == SR_DK_FETCHING) {
                d->state = SR_DK_FAILED;
                d->fail_rc = rc;
            }
    return rc;
}

static void inbox_synced(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                         const char *text)
{
    sr_room *room = arg;
    (void)answer;
    room->syncing = false;
    if (rc < 0)
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: roster sync failed: %s", room->jid,
               text ? text : sealroom_strerror(rc));
    room->inbox_busy = false;
    sr_keys_changed(ctx, room);
}

/* ---- deciding one message ---- */

static void reject(sealroom_ctx *ctx, sr_room *room, const sr_inbox_item *it, const char *nick,
                   const char *sender, const char *origin, const char *stanza_id, uint64_t rv,
                   int rc, const char *fmt, ...) __attribute__((format(printf, 10, 11)));

static void reject(sealroom_ctx *ctx, sr_room *room, const sr_inbox_item *it, const char *nick,
                   const char *sender, const char *origin, const char *stanza_id, uint64_t rv,
                   int rc, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    if (it->sink) {
        /* A compaction's own read: the job is abandoned, the app not told. */
        sr_sse_compaction_unreadable(it->sink);
        sr_log(ctx, SEALROOM_LOG_INFO, "%s: compaction cannot read message %s (%s)", room->jid,
               stanza_id ? stanza_id : "?", sealroom_strerror(rc));
        return;
    }
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    sealroom_event ev = {0};
    ev.type = SEALROOM_EVENT_MESSAGE_REJECTED;
    ev.room = room->jid;
    ev.nick = nick;
    ev.jid = sender;
    ev.origin_id = origin;
    ev.stanza_id = stanza_id;
    ev.history = it->history;
    ev.timestamp_ms = it->ts;
    ev.roster_version = rv;
    ev.result = rc;
    ev.error_text = text;
    sr_log(ctx, SEALROOM_LOG_WARN, "%s: message %s from %s refused: %s", room->jid,
           stanza_id ? stanza_id : "(no id)", sender ? sender : nick ? nick : "?", text);
    sr_emit(ctx, &ev);
}

/* The archive id the room stamped on a live message. */
static const char *room_stanza_id(xmpp_stanza_t *msg, const char *room)
{
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(msg); c; c = xmpp_stanza_get_next(c)) {
        const char *name = xmpp_stanza_is_tag(c) ? xmpp_stanza_get_name(c) : NULL;
        const char *ns = xmpp_stanza_get_ns(c), *by = xmpp_stanza_get_attribute(c, "by");
        if (name && ns && by && strcmp(name, "stanza-id") == 0 && strcmp(ns, SR_NS_SID) == 0 &&
            strcmp(by, room) == 0)
            return xmpp_stanza_get_attribute(c, "id");
    }
    return NULL;
}

static void confirm_own(sealroom_ctx *ctx, const char *room, const char *origin,
                        const char *stanza_id)
{
    for (sr_request *r = ctx->requests; r; r = r->next)
        if (r->kind == SEALROOM_REQ_SEND && strcmp(r->origin_id, origin) == 0 &&
            strcmp(r->room, room) == 0 && r->msg) {
            sealroom_event dev = {0};
            dev.stanza_id = stanza_id;
            dev.origin_id = origin;
            sr_request_done(ctx, r, stanza_id ? SEALROOM_OK : SEALROOM_E_PROTOCOL,
                            stanza_id ? NULL : "reflection without a stanza-id", &dev);
            return;
        }
}

static open_status open_item(sealroom_ctx *ctx, sr_room *room, sr_inbox_item *it)
{
    sr_jid from;
    char sender[SR_BARE_JID_MAX];
    xmpp_stanza_t *msg = it->msg;
    const char *nick = NULL, *sender_p = NULL;
    if (sr_jid_parse(&from, xmpp_stanza_get_from(msg)) && from.resource[0])
        nick = from.resource;
    xmpp_stanza_t *oid = sr_child(msg, "origin-id", SR_NS_SID);
    const char *origin = oid ? xmpp_stanza_get_attribute(oid, "id") : NULL;
    const char *stanza_id = it->archive_id ? it->archive_id : room_stanza_id(msg, room->jid);
    xmpp_stanza_t *x = sr_child(msg, "x", SR_NS_MUC_USER);
    xmpp_stanza_t *item = x ? sr_child(x, "item", NULL) : NULL;
    const char *item_jid = item ? xmpp_stanza_get_attribute(item, "jid") : NULL;
    if (item_jid && sr_jid_normalise_bare(sender, sizeof sender, item_jid))
        sender_p = sender;

    if (!nick) {
        reject(ctx, room, it, NULL, sender_p, origin, stanza_id, 0, SEALROOM_E_PROTOCOL,
               "message without an occupant nickname");
        return OPEN_DONE;
    }
    /* A retracted message's tombstone: nothing to open. A search or a
     * compaction never wants one (the room leaves them out). */
    if (sr_child(msg, "retracted", "urn:xmpp:message-retract:1")) {
        if (it->sink)
            sr_sse_compaction_unreadable(it->sink);
        else if (!it->filter)
            sr_retract_tombstone(ctx, room, msg, stanza_id, it->ts, it->history);
        return OPEN_DONE;
    }
    if (!sender_p || !origin || !*origin) {
        reject(ctx, room, it, nick, sender_p, origin, stanza_id, 0, SEALROOM_E_PROTOCOL,
               "message without the sender's JID or an origin-id: it cannot be verified");
        return OPEN_DONE;
    }
    xmpp_stanza_t *sealed = sr_child(msg, "sealed", SR_NS);
    char *b64 = sealed ? xmpp_stanza_get_text(sealed) : NULL;
    size_t b64len = b64 ? strlen(b64) : 0;
    size_t cap = sr_b64_decoded_max(b64len);
    unsigned char *payload = malloc(cap ? cap : 1);
    unsigned char *plain = NULL;
    size_t plen = 0, plain_len = 0;
    open_status st = OPEN_DONE;
    sr_e2e_sealed_view v;
    unsigned char pk[SR_KEY_BYTES];
    if (!sealed || !payload || !sr_b64_decode(payload, cap, &plen, b64 ? b64 : "", b64len)) {
        reject(ctx, room, it, nick, sender_p, origin, stanza_id, 0, SEALROOM_E_PROTOCOL,
               "message without a well-formed <sealed/> payload");
        goto out;
    }
    int erc = sr_e2e_message_parse(&v, payload, plen);
    if (erc != SR_E2E_OK) {
        reject(ctx, room, it, nick, sender_p, origin, stanza_id, 0, SEALROOM_E_PROTOCOL,
               "sealed payload refused: %s", sr_e2e_strerror(erc));
        goto out;
    }
    if (!room->roster_known || v.roster_version > room->roster.version) {
        /* The sender names a roster version we have not verified: catch
         * up once, then judge. */
        if (!it->synced && !room->inbox_busy && !room->syncing && ctx->link_up) {
            if (sr_sync_call(ctx, room->jid, inbox_synced, room) == SEALROOM_OK) {
                it->synced = true;
                room->syncing = true;
                room->inbox_busy = true;
                st = OPEN_WAIT;
                goto out;
            }
        }
        if (room->syncing) {
            st = OPEN_WAIT;
            goto out;
        }
        reject(ctx, room, it, nick, sender_p, origin, stanza_id, v.roster_version,
               SEALROOM_E_VERIFY, "names roster version %" PRIu64 ", beyond the verified chain",
               v.roster_version);
        goto out;
    }
    if (!sr_member_at(room, sender_p, v.roster_version, pk)) {
        reject(ctx, room, it, nick, sender_p, origin, stanza_id, v.roster_version,
               SEALROOM_E_FORBIDDEN, "%s was not a member at roster version %" PRIu64, sender_p,
               v.roster_version);
        goto out;
    }
    /* Signature first: a forgery must not make us fetch keys for it. */
    erc = sr_e2e_message_verify(&v, room->jid, sender_p, origin, pk);
    if (erc != SR_E2E_OK) {
        reject(ctx, room, it, nick, sender_p, origin, stanza_id, v.roster_version,
               SEALROOM_E_VERIFY, "signature does not verify for %s", sender_p);
        goto out;
    }
    sr_datakey *d = sr_dk_find(room, v.datakey_id);
    if (!d) {
        if (fetch_datakeys(ctx, room) == SEALROOM_OK) {
            st = OPEN_WAIT;
            goto out;
        }
        d = sr_dk_find(room, v.datakey_id);
    }
    if (d && d->state == SR_DK_NEED_EPOCH && !sr_epoch_find(room, d->epoch)) {
        if (sr_epoch_fetch(ctx, room, d->epoch) == SEALROOM_OK && d->state == SR_DK_NEED_EPOCH) {
            st = OPEN_WAIT;
            goto out;
        }
    }
    if (d && d->state == SR_DK_FETCHING) {
        st = OPEN_WAIT;
        goto out;
    }
    if (d && d->state == SR_DK_FAILED && d->fail_rc == SEALROOM_E_NO_KEY &&
        d->refetches < SR_DK_REFETCH_MAX && ctx->have_time) {
        if (d->failed_ms == 0) {
            d->failed_ms = ctx->now_ms ? ctx->now_ms : 1;
        } else if (ctx->now_ms >= d->failed_ms + SR_DK_REFETCH_MS) {
            d->refetches++;
            d->failed_ms = 0;
            d->state = SR_DK_REFETCH;
            if (fetch_datakeys(ctx, room) == SEALROOM_OK) {
                st = OPEN_WAIT;
                goto out;
            }
        }
    }
    if (!d || d->state != SR_DK_READY) {
        int rc = d && d->state == SR_DK_FAILED ? d->fail_rc : SEALROOM_E_NO_KEY;
        reject(ctx, room, it, nick, sender_p, origin, stanza_id, v.roster_version, rc,
               "no key for this message's data key (%s)", sealroom_strerror(rc));
        goto out;
    }
    if (!d->sender || strcmp(d->sender, sender_p) != 0) {
        reject(ctx, room, it, nick, sender_p, origin, stanza_id, v.roster_version,
               SEALROOM_E_VERIFY, "the data key belongs to another sender");
        goto out;
    }
    plain = malloc(v.ct_len > SR_E2E_TAG_BYTES ? v.ct_len - SR_E2E_TAG_BYTES : 1);
    if (!plain) {
        reject(ctx, room, it, nick, sender_p, origin, stanza_id, v.roster_version,
               SEALROOM_E_NOMEM, "out of memory");
        goto out;
    }
    erc = sr_e2e_message_open(plain, v.ct_len - SR_E2E_TAG_BYTES, &plain_len, &v, room->jid,
                              sender_p, origin, pk, d->p);
    if (erc != SR_E2E_OK) {
        reject(ctx, room, it, nick, sender_p, origin, stanza_id, v.roster_version,
               erc == SR_E2E_ERR_SIGNATURE ? SEALROOM_E_VERIFY : SEALROOM_E_DECRYPT,
               "cannot open the message: %s", sr_e2e_strerror(erc));
        goto out;
    }
    if (seen_replayed(room, sender_p, origin, stanza_id)) {
        reject(ctx, room, it, nick, sender_p, origin, stanza_id, v.roster_version,
               SEALROOM_E_REPLAY, "%s's message %s seen before under another archive id",
               sender_p, origin);
        goto out;
    }
    if (it->sink) {
        sr_sse_compaction_take(ctx, it->sink, stanza_id, plain, plain_len);
        goto out;
    }
    if (it->filter && !sr_sse_filter_match(it->filter, plain, plain_len)) {
        /* The room returned a message without the words: a service that
         * errs or lies gains nothing by it. */
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: search hit %s does not contain the query's words; dropped",
               room->jid, stanza_id ? stanza_id : "?");
        goto out;
    }
    sealroom_event ev = {0};
    ev.type = SEALROOM_EVENT_MESSAGE;
    ev.room = room->jid;
    ev.nick = nick;
    ev.jid = sender_p;
    ev.stanza_id = stanza_id;
    ev.origin_id = origin;
    ev.payload = plain;
    ev.payload_len = plain_len;
    ev.timestamp_ms = it->ts;
    ev.history = it->history;
    ev.roster_version = v.roster_version;
    ev.epoch = d->epoch;
    ev.self = strcmp(sender_p, ctx->own_bare) == 0;
    sr_emit(ctx, &ev);
    if (!it->history && ev.self)
        confirm_own(ctx, room->jid, origin, stanza_id);
out:
    if (plain) {
        sodium_memzero(plain, plain_len);
        free(plain);
    }
    free(payload);
    if (b64)
        xmpp_free(ctx->xmpp, b64);
    return st;
}

static void pop(sr_room *room)
{
    sr_inbox_item *it = room->inbox;
    room->inbox = it->next;
    if (!room->inbox)
        room->inbox_tail = NULL;
    item_free(it);
}

void sr_inbox_pump(sealroom_ctx *ctx, sr_room *room)
{
    /* Events run user code, which may feed more stanzas in: those queue
     * behind the head and the outer loop reaches them in order. */
    if (room->inbox_pumping)
        return;
    room->inbox_pumping = true;
    while (room->inbox) {
        sr_inbox_item *it = room->inbox;
        if (it->fin_request) {
            uint32_t id = it->fin_request;
            xmpp_stanza_t *fin = it->fin;
            it->fin = NULL;
            pop(room);
            sr_request *r = sr_request_by_id(ctx, id);
            if (r && r->kind == SEALROOM_REQ_SEARCH)
                sr_page_done(ctx, r, fin); /* <result/>: 'complete' and the RSM set */
            else if (r && r->kind == SEALROOM_REQ_COMPACT)
                sr_sse_compaction_fin(ctx, r, fin);
            else if (r)
                sr_history_fin(ctx, r, fin);
            xmpp_stanza_release(fin);
            continue;
        }
        if (room->inbox_busy || open_item(ctx, room, it) == OPEN_WAIT)
            break;
        pop(room);
    }
    room->inbox_pumping = false;
}
