/* Rooms as the client sees them (MUC-shaped, xep/sealroom.xml "Rooms"): join and
 * leave by presence, occupant tracking, the message outbox (sealed with
 * the room's current data key when keys allow, kept with its origin-id
 * until reflected), and the routing of incoming room messages to the
 * inbox (inbox.c) and of room headlines to keys.c. */
#include "internal.h"
#include "sse.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "e2e/message.h"
#include "proto/b64.h"
#include "proto/jid.h"

/* ---- room records ---- */

sr_room *sr_room_find(sealroom_ctx *ctx, const char *jid)
{
    for (sr_room *r = ctx->rooms; r; r = r->next)
        if (strcmp(r->jid, jid) == 0)
            return r;
    return NULL;
}

sr_room *sr_room_get(sealroom_ctx *ctx, const char *jid)
{
    sr_room *r = sr_room_find(ctx, jid);
    if (r)
        return r;
    r = calloc(1, sizeof *r);
    if (!r || !(r->jid = sr_strdup(jid))) {
        free(r);
        return NULL;
    }
    sr_roster_state_init(&r->roster);
    r->next = ctx->rooms;
    ctx->rooms = r;
    return r;
}

void sr_room_clear_occupants(sr_room *room)
{
    while (room->occupants) {
        sr_occupant *o = room->occupants;
        room->occupants = o->next;
        free(o->nick);
        free(o->jid);
        free(o);
    }
}

void sr_rooms_free(sealroom_ctx *ctx)
{
    while (ctx->rooms) {
        sr_room *r = ctx->rooms;
        ctx->rooms = r->next;
        sr_room_clear_occupants(r);
        sr_roster_state_free(&r->roster);
        sr_inbox_free(r);
        sr_room_keys_free(r);
        sr_sse_room_free(r);
        free(r->jid);
        free(r->nick);
        free(r);
    }
}

/* ---- verified roster queries ---- */

static const sr_room *known_room(const sealroom_ctx *ctx, const char *room_name)
{
    char room[SR_BARE_JID_MAX];
    if (!ctx || sr_room_jid((sealroom_ctx *)ctx, room, sizeof room, room_name) < 0)
        return NULL;
    const sr_room *r = sr_room_find((sealroom_ctx *)ctx, room);
    return r && r->roster_known ? r : NULL;
}

int sealroom_room_roster_version(const sealroom_ctx *ctx, uint64_t *version, const char *room)
{
    if (!ctx || !version)
        return SEALROOM_E_INVALID;
    const sr_room *r = known_room(ctx, room);
    if (!r)
        return SEALROOM_E_NOT_FOUND;
    *version = r->roster.version;
    return SEALROOM_OK;
}

size_t sealroom_room_member_count(const sealroom_ctx *ctx, const char *room)
{
    const sr_room *r = known_room(ctx, room);
    return r ? r->roster.nmembers : 0;
}

int sealroom_room_member(const sealroom_ctx *ctx, const char **jid, sealroom_role *role,
                         unsigned char *pk, const char *room, size_t index)
{
    const sr_room *r = known_room(ctx, room);
    if (!r || index >= r->roster.nmembers)
        return SEALROOM_E_NOT_FOUND;
    const sr_member *m = &r->roster.members[index];
    if (jid)
        *jid = m->jid;
    if (role)
        *role = (sealroom_role)m->role;
    if (pk)
        memcpy(pk, m->key, SR_KEY_BYTES);
    return SEALROOM_OK;
}

sealroom_role sealroom_room_member_role(const sealroom_ctx *ctx, const char *room,
                                        const char *jid)
{
    char bare[SR_BARE_JID_MAX];
    const sr_room *r = known_room(ctx, room);
    if (!r || !sr_jid_normalise_bare(bare, sizeof bare, jid))
        return SEALROOM_ROLE_NONE;
    const sr_member *m = sr_roster_find(&r->roster, bare);
    return m ? (sealroom_role)m->role : SEALROOM_ROLE_NONE;
}

/* ---- join, leave ---- */

static xmpp_stanza_t *occupant_presence(sealroom_ctx *ctx, sr_room *room, bool join)
{
    char to[SR_BARE_JID_MAX + 1024 + 2];
    snprintf(to, sizeof to, "%s/%s", room->jid, room->nick);
    xmpp_stanza_t *p = xmpp_presence_new(ctx->xmpp);
    if (!p)
        return NULL;
    bool ok = xmpp_stanza_set_to(p, to) == XMPP_EOK;
    if (ok && join) {
        xmpp_stanza_t *x = sr_el(ctx->xmpp, "x", SR_NS_MUC);
        ok = x && xmpp_stanza_add_child_ex(p, x, 0) == XMPP_EOK;
        if (!ok && x)
            xmpp_stanza_release(x);
        /* We take part in key-distribution runs (xep "Participants"). */
        xmpp_stanza_t *k = ok ? sr_el(ctx->xmpp, "keys", SR_NS_KEYS) : NULL;
        ok = k && xmpp_stanza_add_child_ex(p, k, 0) == XMPP_EOK;
        if (!ok && k)
            xmpp_stanza_release(k);
    }
    if (ok && !join)
        ok = xmpp_stanza_set_type(p, "unavailable") == XMPP_EOK;
    if (!ok) {
        xmpp_stanza_release(p);
        return NULL;
    }
    return p;
}

int sr_room_send_join(sealroom_ctx *ctx, sr_room *room)
{
    xmpp_stanza_t *p = occupant_presence(ctx, room, true);
    if (!p)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    int rc = sr_send(ctx, p);
    xmpp_stanza_release(p);
    return rc;
}

static sr_request *find_request(sealroom_ctx *ctx, sealroom_request_kind kind, const char *room)
{
    for (sr_request *r = ctx->requests; r; r = r->next)
        if (r->kind == kind && r->room && strcmp(r->room, room) == 0)
            return r;
    return NULL;
}

int sealroom_room_join(sealroom_ctx *ctx, uint32_t *request_id, const char *room_name,
                       const char *nick)
{
    char room[SR_BARE_JID_MAX], full[SR_BARE_JID_MAX + 1100];
    sr_jid check;
    if (!ctx)
        return SEALROOM_E_INVALID;
    int rc = sr_room_jid(ctx, room, sizeof room, room_name);
    if (rc < 0)
        return rc;
    if (!nick || !*nick || strlen(nick) > 1023)
        return sr_fail(ctx, SEALROOM_E_INVALID, "invalid nickname");
    snprintf(full, sizeof full, "%s/%s", room, nick);
    if (!sr_jid_parse(&check, full) || strcmp(check.resource, nick) != 0)
        return sr_fail(ctx, SEALROOM_E_INVALID, "invalid nickname");
    if (find_request(ctx, SEALROOM_REQ_JOIN, room))
        return sr_fail(ctx, SEALROOM_E_STATE, "a join of %s is already under way", room);
    sr_room *rm = sr_room_get(ctx, room);
    if (!rm)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    if (rm->joined && rm->nick && strcmp(rm->nick, nick) == 0)
        return sr_fail(ctx, SEALROOM_E_STATE, "already joined %s", room);
    char *n = sr_strdup(nick);
    sr_request *r = sr_request_new(ctx, SEALROOM_REQ_JOIN);
    if (!n || !r || !(r->room = sr_strdup(room))) {
        free(n);
        if (r) {
            sr_request_unlink(ctx, r);
            sr_request_free(r);
        }
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    }
    free(rm->nick);
    rm->nick = n;
    rm->want_joined = true;
    /* With the link down the join goes out on link_up. */
    rc = ctx->link_up ? sr_room_send_join(ctx, rm) : SEALROOM_OK;
    if (rc < 0)
        rm->want_joined = rm->joined;
    if (request_id && rc >= 0)
        *request_id = r->id;
    if (rc < 0) {
        sr_request_unlink(ctx, r);
        sr_request_free(r);
    }
    return rc;
}

int sealroom_room_leave(sealroom_ctx *ctx, uint32_t *request_id, const char *room_name)
{
    char room[SR_BARE_JID_MAX];
    if (!ctx)
        return SEALROOM_E_INVALID;
    int rc = sr_room_jid(ctx, room, sizeof room, room_name);
    if (rc < 0)
        return rc;
    sr_room *rm = sr_room_find(ctx, room);
    if (!rm || !rm->want_joined || !rm->nick)
        return sr_fail(ctx, SEALROOM_E_STATE, "not in %s", room);
    if (!ctx->link_up)
        return sr_fail(ctx, SEALROOM_E_STATE, "the link to the server is down");
    sr_request *r = sr_request_new(ctx, SEALROOM_REQ_LEAVE);
    if (!r || !(r->room = sr_strdup(room))) {
        if (r) {
            sr_request_unlink(ctx, r);
            sr_request_free(r);
        }
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    }
    xmpp_stanza_t *p = occupant_presence(ctx, rm, false);
    rc = p ? sr_send(ctx, p) : sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    if (p)
        xmpp_stanza_release(p);
    if (rc < 0) {
        sr_request_unlink(ctx, r);
        sr_request_free(r);
        return rc;
    }
    rm->want_joined = false;
    sr_sse_auto_stop(ctx, rm);
    if (request_id)
        *request_id = r->id;
    return SEALROOM_OK;
}

/* ---- send and the outbox ---- */

int sealroom_room_send(sealroom_ctx *ctx, uint32_t *request_id, char *origin_id_out,
                       size_t origin_id_len, const char *room_name, const unsigned char *payload,
                       size_t payload_len)
{
    char room[SR_BARE_JID_MAX];
    if (!ctx)
        return SEALROOM_E_INVALID;
    int rc = sr_room_jid(ctx, room, sizeof room, room_name);
    if (rc < 0)
        return rc;
    if (!payload && payload_len)
        return sr_fail(ctx, SEALROOM_E_INVALID, "payload is NULL");
    if (payload_len > SR_E2E_MSG_MAX_PLAIN)
        return sr_fail(ctx, SEALROOM_E_TOO_LARGE, "payload of %zu bytes is over %u", payload_len,
                       (unsigned)SR_E2E_MSG_MAX_PLAIN);
    if (origin_id_out && origin_id_len < SR_ID_LEN)
        return sr_fail(ctx, SEALROOM_E_INVALID, "origin_id_out needs %d bytes", SR_ID_LEN);
    if (!ctx->identity)
        return sr_fail(ctx, SEALROOM_E_STATE, "no identity set");
    sr_room *rm = sr_room_find(ctx, room);
    if (!rm || !rm->want_joined)
        return sr_fail(ctx, SEALROOM_E_STATE, "not joined to %s", room);

    sr_request *r = sr_request_new(ctx, SEALROOM_REQ_SEND);
    if (!r)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    unsigned char rnd[16];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(r->origin_id, sizeof r->origin_id, rnd, sizeof rnd);
    r->plain = malloc(payload_len ? payload_len : 1);
    if (!r->plain || !(r->room = sr_strdup(room))) {
        sr_request_unlink(ctx, r);
        sr_request_free(r);
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    }
    if (payload_len)
        memcpy(r->plain, payload, payload_len);
    r->plain_len = payload_len;
    if (origin_id_out)
        snprintf(origin_id_out, origin_id_len, "%s", r->origin_id);
    if (request_id)
        *request_id = r->id;
    /* Sealed now if the keys are at hand, else once they are. */
    sr_outbox_pump(ctx, rm);
    return SEALROOM_OK;
}

void sr_outbox_fail(sealroom_ctx *ctx, sr_room *rm, int rc, const char *why)
{
    char copy[sizeof ctx->last_error];
    snprintf(copy, sizeof copy, "%s", why ? why : sealroom_strerror(rc));
    for (;;) {
        sr_request *hit = NULL;
        for (sr_request *r = ctx->requests; r; r = r->next)
            if (r->kind == SEALROOM_REQ_SEND && !r->msg && strcmp(r->room, rm->jid) == 0)
                hit = r;
        if (!hit)
            break;
        sr_request_done(ctx, hit, rc, copy, NULL);
    }
}

/* The groupchat stanza for r's plaintext under the room's data key. */
static xmpp_stanza_t *seal_message(sealroom_ctx *ctx, sr_room *rm, sr_request *r)
{
    sr_e2e_msg_meta meta = {rm->jid, ctx->own_bare, r->origin_id, rm->send_dk->id,
                            rm->roster.version};
    size_t cap = r->plain_len + SR_E2E_MSG_OVERHEAD, len = 0;
    unsigned char *sealed = malloc(cap);
    size_t b64len = sr_b64_encoded_len(cap);
    char *b64 = malloc(b64len);
    xmpp_stanza_t *m = NULL, *oid = NULL;
    bool ok = sealed && b64 &&
              sr_e2e_message_seal(sealed, cap, &len, r->plain, r->plain_len, &meta,
                                  rm->send_dk->p, ctx->identity->sk) == SR_E2E_OK &&
              sr_b64_encode(b64, b64len, sealed, len);
    if (ok) {
        m = xmpp_message_new(ctx->xmpp, "groupchat", rm->jid, r->origin_id);
        oid = sr_el(ctx->xmpp, "origin-id", SR_NS_SID);
        ok = m && oid &&
             sr_add_text_child(ctx->xmpp, m, "body", NULL, SR_FALLBACK_BODY,
                               strlen(SR_FALLBACK_BODY)) &&
             sr_add_text_child(ctx->xmpp, m, "sealed", SR_NS, b64, strlen(b64)) &&
             xmpp_stanza_set_attribute(oid, "id", r->origin_id) == XMPP_EOK &&
             xmpp_stanza_add_child_ex(m, oid, 0) == XMPP_EOK;
        if (ok)
            oid = NULL;
    }
    r->sse_batch = 0;
    if (ok) {
        xmpp_stanza_t *index = sr_sse_index_element(ctx, rm, r->plain, r->plain_len, &r->sse_batch);
        if (index && xmpp_stanza_add_child_ex(m, index, 0) != XMPP_EOK) {
            xmpp_stanza_release(index);
            /* Its counters moved: the batch must not take more entries. */
            sr_sse_message_refused(ctx, rm, r->sse_batch);
            r->sse_batch = 0;
        }
    }
    free(sealed);
    free(b64);
    if (oid)
        xmpp_stanza_release(oid);
    if (!ok && m) {
        xmpp_stanza_release(m);
        m = NULL;
    }
    return m;
}

static void datakey_stored(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                           const char *text)
{
    sr_room *rm = arg;
    rm->send_dk_uploading = false;
    if (rc == SEALROOM_OK) {
        rm->send_dk_ok = true;
    } else {
        const char *app = sr_error_app(answer);
        rm->send_dk = NULL;
        rm->send_dk_ok = false;
        if (app && strcmp(app, "stale-epoch") == 0) {
            /* The room moved on (or the epoch aged out): learn how, then
             * seal under whatever epoch is current. */
            rm->epoch_checked = false;
        } else if (!answer || rc == SEALROOM_E_NETWORK || rc == SEALROOM_E_TIMEOUT) {
            /* Lost with the link: the messages wait for a new key after
             * the rejoin, as unsent messages always do. */
            return;
        } else {
            char why[sizeof ctx->last_error];
            snprintf(why, sizeof why, "the room refused our data key: %s",
                     text ? text : sealroom_strerror(rc));
            sr_outbox_fail(ctx, rm, rc, why);
            return;
        }
    }
    sr_keys_changed(ctx, rm);
}

/* A fresh data key for the current epoch, announced to the room. */
static void new_datakey(sealroom_ctx *ctx, sr_room *rm, const sr_epoch *e)
{
    sr_datakey *d = sodium_malloc(sizeof *d);
    if (!d)
        return;
    memset(d, 0, sizeof *d);
    sr_e2e_datakey_id_random(d->id);
    if (sr_e2e_datakey_random(d->p) != SR_E2E_OK ||
        sr_e2e_header_wrap(d->h, e->keys.k, d->p) != SR_E2E_OK ||
        !(d->sender = sr_strdup(ctx->own_bare))) {
        free(d->sender);
        sodium_free(d);
        return;
    }
    d->epoch = e->number;
    d->state = SR_DK_READY;
    d->next = rm->dks;
    rm->dks = d;
    rm->send_dk = d;
    rm->send_dk_uses = 0;
    rm->send_dk_ok = false;
    char id[32], h[64], num[24];
    sr_b64_encode(id, sizeof id, d->id, sizeof d->id);
    sr_b64_encode(h, sizeof h, d->h, sizeof d->h);
    snprintf(num, sizeof num, "%" PRIu64, e->number);
    xmpp_stanza_t *el = sr_el(ctx->xmpp, "datakey", SR_NS);
    xmpp_stanza_t *t = xmpp_stanza_new(ctx->xmpp);
    bool ok = el && t && xmpp_stanza_set_attribute(el, "id", id) == XMPP_EOK &&
              xmpp_stanza_set_attribute(el, "epoch", num) == XMPP_EOK &&
              xmpp_stanza_set_text(t, h) == XMPP_EOK && xmpp_stanza_add_child_ex(el, t, 0) == XMPP_EOK;
    if (!ok) {
        if (t)
            xmpp_stanza_release(t);
        if (el)
            xmpp_stanza_release(el);
        rm->send_dk = NULL;
        return;
    }
    rm->send_dk_uploading = true;
    if (sr_iq_call(ctx, "set", rm->jid, el, datakey_stored, rm) < 0) {
        rm->send_dk_uploading = false;
        rm->send_dk = NULL;
    }
}

void sr_outbox_pump(sealroom_ctx *ctx, sr_room *rm)
{
    /* Oldest first: requests are kept newest first. */
    size_t n = 0;
    for (sr_request *r = ctx->requests; r; r = r->next)
        if (r->kind == SEALROOM_REQ_SEND && !r->msg && strcmp(r->room, rm->jid) == 0)
            n++;
    if (n == 0 || !ctx->identity)
        return;
    sr_epoch *cur = sr_epoch_find(rm, rm->epoch_current);
    bool epoch_ok = rm->roster_known && rm->epoch_checked && !rm->epoch_rotate && !rm->rotating &&
                    cur && cur->roster_version >= rm->membership_version;
    if (!epoch_ok) {
        sr_keys_ensure(ctx, rm);
        return;
    }
    if (rm->send_dk_uploading)
        return;
    if (!rm->send_dk || rm->send_dk->epoch != cur->number ||
        rm->send_dk_uses >= SR_DATAKEY_MAX_USES) {
        if (ctx->link_up)
            new_datakey(ctx, rm, cur);
        return;
    }
    if (!rm->send_dk_ok)
        return;
    /* Messages carry their search index entries; wait (briefly) for a
     * batch of the room's index. */
    if (sr_sse_outbox_ready(ctx, rm) == 0)
        return;
    uint32_t *ids = malloc(n * sizeof *ids);
    if (!ids)
        return;
    size_t k = n;
    for (sr_request *r = ctx->requests; r && k; r = r->next)
        if (r->kind == SEALROOM_REQ_SEND && !r->msg && strcmp(r->room, rm->jid) == 0)
            ids[--k] = r->id;
    for (size_t i = 0; i < n; i++) {
        sr_request *r = sr_request_by_id(ctx, ids[i]);
        if (!r || r->msg)
            continue;
        if (rm->send_dk_uses >= SR_DATAKEY_MAX_USES) {
            new_datakey(ctx, rm, cur);
            break;
        }
        r->msg = seal_message(ctx, rm, r);
        if (!r->msg) {
            sr_request_done(ctx, r, SEALROOM_E_NOMEM, "cannot seal the message", NULL);
            continue;
        }
        rm->send_dk_uses++;
        /* Until our presence is confirmed (or while the link is down) the
         * message waits in the outbox and goes out after the (re)join. */
        r->resend = true;
        if (rm->joined && ctx->link_up && sr_send(ctx, r->msg) >= 0)
            r->resend = false;
    }
    free(ids);
}

/* Sends every queued message of room once we are (back) in it. */
static void flush_outbox(sealroom_ctx *ctx, const char *room)
{
    for (sr_request *r = ctx->requests; r; r = r->next) {
        if (r->kind != SEALROOM_REQ_SEND || !r->resend || !r->msg || strcmp(r->room, room) != 0)
            continue;
        if (sr_send(ctx, r->msg) < 0)
            return;
        r->resend = false;
        sr_log(ctx, SEALROOM_LOG_DEBUG, "sent queued message %s to %s", r->origin_id, room);
    }
}

void sr_retry_sends(sealroom_ctx *ctx, uint64_t now_ms)
{
    for (sr_request *r = ctx->requests; r; r = r->next) {
        if (r->kind != SEALROOM_REQ_SEND || r->retry_at == 0 || r->retry_at > now_ms || !r->msg)
            continue;
        sr_room *rm = sr_room_find(ctx, r->room);
        r->retry_at = 0;
        /* Not in the room now: the rejoin flushes it like any queued message. */
        if (!rm || !rm->joined || !ctx->link_up || sr_send(ctx, r->msg) < 0) r->resend = true;
    }
}

/* Fails everything queued for a room we can no longer be in. */
static void fail_room_requests(sealroom_ctx *ctx, const char *room, int rc, const char *text)
{
    for (;;) {
        sr_request *hit = NULL;
        for (sr_request *r = ctx->requests; r && !hit; r = r->next)
            if ((r->kind == SEALROOM_REQ_SEND || r->kind == SEALROOM_REQ_JOIN) && r->room &&
                strcmp(r->room, room) == 0)
                hit = r;
        if (!hit)
            return;
        sr_request_done(ctx, hit, rc, text, NULL);
    }
}

/* ---- incoming presence ---- */

static bool has_status(xmpp_stanza_t *x, const char *code)
{
    if (!x)
        return false;
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(x); c; c = xmpp_stanza_get_next(c)) {
        const char *name = xmpp_stanza_is_tag(c) ? xmpp_stanza_get_name(c) : NULL;
        const char *v = name && strcmp(name, "status") == 0 ? xmpp_stanza_get_attribute(c, "code") : NULL;
        if (v && strcmp(v, code) == 0)
            return true;
    }
    return false;
}

static sr_occupant *find_occupant(sr_room *room, const char *nick, sr_occupant ***link)
{
    for (sr_occupant **pp = &room->occupants; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->nick, nick) == 0) {
            if (link)
                *link = pp;
            return *pp;
        }
    return NULL;
}

int sr_handle_presence(sealroom_ctx *ctx, xmpp_stanza_t *st)
{
    sr_jid from;
    char room_jid[SR_BARE_JID_MAX], real[SR_BARE_JID_MAX];
    if (!sr_jid_parse(&from, xmpp_stanza_get_from(st)) || !from.local[0] ||
        !sr_jid_bare(room_jid, sizeof room_jid, &from))
        return 0;
    sr_room *room = sr_room_find(ctx, room_jid);
    if (!room)
        return 0;
    const char *type = xmpp_stanza_get_type(st);
    const char *nick = from.resource;
    xmpp_stanza_t *x = sr_child(st, "x", SR_NS_MUC_USER);
    xmpp_stanza_t *item = x ? sr_child(x, "item", NULL) : NULL;
    const char *item_jid = item ? xmpp_stanza_get_attribute(item, "jid") : NULL;
    bool have_real = item_jid && sr_jid_normalise_bare(real, sizeof real, item_jid);
    bool self = has_status(x, "110") ||
                (room->nick && strcmp(nick, room->nick) == 0 && have_real &&
                 strcmp(real, ctx->own_bare) == 0);

    if (type && strcmp(type, "error") == 0) {
        char text[sizeof ctx->last_error];
        int rc = sr_error_from_stanza(st, text, sizeof text);
        sr_request *join = find_request(ctx, SEALROOM_REQ_JOIN, room->jid);
        if (join && (!nick[0] || (room->nick && strcmp(nick, room->nick) == 0))) {
            room->want_joined = false;
            room->joined = false;
            sr_request_done(ctx, join, rc, text, NULL);
            fail_room_requests(ctx, room->jid, rc, text);
        } else {
            sr_log(ctx, SEALROOM_LOG_WARN, "presence error from %s: %s", room->jid, text);
        }
        return 1;
    }

    sealroom_event ev = {0};
    ev.room = room->jid;
    ev.nick = nick;
    ev.jid = have_real ? real : NULL;
    ev.self = self;

    if (type && strcmp(type, "unavailable") == 0) {
        sr_occupant **link = NULL;
        sr_occupant *o = nick[0] ? find_occupant(room, nick, &link) : NULL;
        if (!self) {
            if (o) {
                *link = o->next;
                ev.type = SEALROOM_EVENT_OCCUPANT_LEFT;
                if (!ev.jid)
                    ev.jid = o->jid;
                sr_emit(ctx, &ev);
                free(o->nick);
                free(o->jid);
                free(o);
            }
            return 1;
        }
        room->joined = false;
        sr_room_clear_occupants(room);
        sr_request *leave = find_request(ctx, SEALROOM_REQ_LEAVE, room->jid);
        bool kicked = has_status(x, "321") || has_status(x, "307") || has_status(x, "301");
        if (leave && !kicked) {
            sr_request_done(ctx, leave, SEALROOM_OK, NULL, NULL);
            return 1;
        }
        /* Out of the room without asking: removed from the roster (321),
         * kicked, or the room went away. */
        room->want_joined = false;
        xmpp_stanza_t *reason = item ? sr_child(item, "reason", NULL) : NULL;
        char *why = reason ? xmpp_stanza_get_text(reason) : NULL;
        ev.type = SEALROOM_EVENT_REMOVED;
        ev.error_text = why ? why : has_status(x, "321") ? "removed from the room's roster" : "removed from the room";
        sr_emit(ctx, &ev);
        if (leave)
            sr_request_done(ctx, leave, SEALROOM_OK, NULL, NULL);
        fail_room_requests(ctx, room->jid, SEALROOM_E_FORBIDDEN, ev.error_text);
        if (why)
            xmpp_free(ctx->xmpp, why);
        return 1;
    }
    if (type) /* subscription types and the like are not room presence */
        return 1;

    if (self) {
        bool was_joined = room->joined;
        room->joined = true;
        if (!was_joined) {
            ev.type = SEALROOM_EVENT_OCCUPANT_JOINED;
            sr_emit(ctx, &ev);
        }
        sr_request *join = find_request(ctx, SEALROOM_REQ_JOIN, room->jid);
        if (join)
            sr_request_done(ctx, join, SEALROOM_OK, NULL, NULL);
        flush_outbox(ctx, room->jid);
        sr_outbox_pump(ctx, room);
        /* Members pick up their envelope for the current epoch on entry. */
        if (!was_joined && ctx->identity && !room->epoch_checked && !room->epoch_fetching)
            sr_epoch_fetch(ctx, room, 0);
        /* Have the search batch ready before the first message needs it. */
        sr_sse_maintain(ctx, room);
        return 1;
    }
    if (!nick[0])
        return 1;
    sr_occupant *o = find_occupant(room, nick, NULL);
    if (o) {
        /* A presence update of someone already here, or another session of
         * the same user: no new event. */
        return 1;
    }
    o = calloc(1, sizeof *o);
    if (!o || !(o->nick = sr_strdup(nick)) || (have_real && !(o->jid = sr_strdup(real)))) {
        if (o)
            free(o->nick);
        free(o);
        sr_log(ctx, SEALROOM_LOG_ERROR, "out of memory tracking occupants of %s", room->jid);
        return 1;
    }
    o->next = room->occupants;
    room->occupants = o;
    ev.type = SEALROOM_EVENT_OCCUPANT_JOINED;
    sr_emit(ctx, &ev);
    return 1;
}

/* ---- incoming messages ---- */

bool sr_parse_stamp(const char *stamp, int64_t *ms)
{
    int y, mo, d, h, mi, s, n = 0;
    if (!stamp || sscanf(stamp, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s, &n) != 6 ||
        n != 19)
        return false;
    const char *p = stamp + n;
    int frac_ms = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
        if (digits == 0)
            return false;
        for (; digits < 3; digits++)
            frac_ms *= 10;
    }
    int offset = 0;
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (sscanf(p + 1, "%2d:%2d", &oh, &om) != 2 || strlen(p) != 6)
            return false;
        offset = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return false;
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60)
        return false;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    time_t t = timegm(&tm);
    *ms = ((int64_t)t - offset) * 1000 + frac_ms;
    return true;
}

int sr_handle_message(sealroom_ctx *ctx, xmpp_stanza_t *st)
{
    sr_jid from;
    char room_jid[SR_BARE_JID_MAX];
    if (!sr_jid_parse(&from, xmpp_stanza_get_from(st)) || !from.local[0] ||
        !sr_jid_bare(room_jid, sizeof room_jid, &from))
        return 0;
    xmpp_stanza_t *result = sr_child(st, "result", SR_NS_MAM);
    if (result)
        return sr_handle_mam_result(ctx, st, result);
    const char *type = xmpp_stanza_get_type(st);
    if (type && strcmp(type, "error") == 0) {
        const char *id = xmpp_stanza_get_id(st);
        for (sr_request *r = ctx->requests; r && id; r = r->next) {
            if (r->kind != SEALROOM_REQ_SEND || strcmp(r->origin_id, id) != 0 ||
                strcmp(r->room, room_jid) != 0)
                continue;
            /* A temporary refusal (type "wait": the room could not store it)
             * stored nothing: keep the message and send it again, with the
             * same origin-id, until the request's own timeout. */
            xmpp_stanza_t *err = sr_child(st, "error", NULL);
            const char *etype = err ? xmpp_stanza_get_attribute(err, "type") : NULL;
            const char *app = sr_error_app(st);
            sr_room *erm = sr_room_find(ctx, room_jid);
            /* Nothing was stored, so the room sealed the batch the
             * entries were for: the next seal takes a new one. */
            if (erm && r->sse_batch)
                sr_sse_message_refused(ctx, erm, r->sse_batch);
            if (app && strcmp(app, "batch-sealed") == 0 && erm &&
                r->reindexes < SR_SEND_REINDEX_MAX) {
                r->reindexes++;
                xmpp_stanza_release(r->msg);
                r->msg = NULL;
                r->resend = false;
                sr_log(ctx, SEALROOM_LOG_INFO, "%s: %s was for a sealed search batch; re-indexing",
                       room_jid, r->origin_id);
                sr_outbox_pump(ctx, erm);
                return 1;
            }
            if (app && strcmp(app, "stale-epoch") == 0 && erm && r->reseals < SR_SEND_RESEAL_MAX) {
                /* Sealed under a key the room no longer takes (a new epoch
                 * came first): seal it again under the current one. */
                r->reseals++;
                xmpp_stanza_release(r->msg);
                r->msg = NULL;
                r->resend = false;
                erm->epoch_checked = false;
                erm->send_dk = NULL;
                sr_log(ctx, SEALROOM_LOG_INFO, "%s: %s needs a newer key; resealing", room_jid,
                       r->origin_id);
                sr_outbox_pump(ctx, erm);
                return 1;
            }
            if (etype && strcmp(etype, "wait") == 0 && ctx->timeout_ms != 0) {
                r->retry_at = (ctx->have_time ? ctx->now_ms : 0) + SR_SEND_RETRY_MS;
                sr_log(ctx, SEALROOM_LOG_INFO, "%s refused %s for now; resending", room_jid,
                       r->origin_id);
                return 1;
            }
            char text[sizeof ctx->last_error];
            int rc = sr_error_from_stanza(st, text, sizeof text);
            sr_request_done(ctx, r, rc, text, NULL);
            return 1;
        }
        if (sr_retract_refused(ctx, room_jid, st))
            return 1;
        return sr_room_find(ctx, room_jid) ? 1 : 0;
    }
    sr_room *rm = sr_room_find(ctx, room_jid);
    if (rm && type && strcmp(type, "headline") == 0 && !from.resource[0])
        return sr_handle_headline(ctx, rm, st);
    if (!rm || !type || strcmp(type, "groupchat") != 0)
        return rm ? 1 : 0;
    if (!from.resource[0]) /* subject and room notices */
        return 1;
    int64_t ts = ctx->have_time ? (int64_t)ctx->now_ms : 0;
    xmpp_stanza_t *delay = sr_child(st, "delay", SR_NS_DELAY);
    if (delay)
        sr_parse_stamp(xmpp_stanza_get_attribute(delay, "stamp"), &ts);
    if (sr_retract_reflected(ctx, rm, st, ts))
        return 1;
    sr_inbox_push(ctx, rm, st, NULL, ts, false);
    return 1;
}
