/* Message retraction (XEP-0424, urn:xmpp:message-retract:1; xep
 * "Retraction"): a member asks the room to retract one of its own
 * messages by archive id; the room erases the stored payload, tells the
 * occupants, serves a tombstone in history and never returns the message
 * from a search again. Here: the request, the room's reflection of it
 * (ours completes the request; anyone's becomes
 * SEALROOM_EVENT_MESSAGE_RETRACTED), and tombstones met in history. The
 * room is trusted for this as for storing at all: it could drop a message
 * without saying so, and a retraction reveals nothing. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/jid.h"

#define SR_NS_RETRACT "urn:xmpp:message-retract:1"
#define SR_NS_FALLBACK "urn:xmpp:fallback:0"

int sealroom_room_retract(sealroom_ctx *ctx, uint32_t *request_id, const char *room_name,
                          const char *stanza_id)
{
    char room[SR_BARE_JID_MAX];
    uint64_t seq;
    if (!ctx)
        return SEALROOM_E_INVALID;
    int rc = sr_room_jid(ctx, room, sizeof room, room_name);
    if (rc < 0)
        return rc;
    if (!stanza_id || !sr_parse_u64(stanza_id, &seq) || seq == 0)
        return sr_fail(ctx, SEALROOM_E_INVALID, "stanza_id is not an archive id of the room");
    if (!ctx->link_up)
        return sr_fail(ctx, SEALROOM_E_STATE, "the link to the server is down");
    sr_room *rm = sr_room_find(ctx, room);
    if (!rm || !rm->joined)
        return sr_fail(ctx, SEALROOM_E_STATE, "not joined to %s", room);
    sr_request *r = sr_request_new(ctx, SEALROOM_REQ_RETRACT);
    if (!r || !(r->room = sr_strdup(room)) || !(r->first = sr_strdup(stanza_id))) {
        if (r) {
            sr_request_unlink(ctx, r);
            sr_request_free(r);
        }
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    }
    sr_new_id(ctx, r->origin_id);
    xmpp_stanza_t *m = xmpp_message_new(ctx->xmpp, "groupchat", room, r->origin_id);
    xmpp_stanza_t *re = sr_el(ctx->xmpp, "retract", SR_NS_RETRACT);
    xmpp_stanza_t *fb = sr_el(ctx->xmpp, "fallback", SR_NS_FALLBACK);
    bool ok = m && re && fb && xmpp_stanza_set_attribute(re, "id", stanza_id) == XMPP_EOK &&
              xmpp_stanza_set_attribute(fb, "for", SR_NS_RETRACT) == XMPP_EOK &&
              xmpp_stanza_add_child_ex(m, re, 0) == XMPP_EOK;
    if (ok)
        re = NULL;
    ok = ok && xmpp_stanza_add_child_ex(m, fb, 0) == XMPP_EOK;
    if (ok)
        fb = NULL;
    ok = ok && sr_add_text_child(ctx->xmpp, m, "body", NULL,
                                 "/me retracted a previous message, but it's unsupported by your "
                                 "client.",
                                 strlen("/me retracted a previous message, but it's unsupported "
                                        "by your client."));
    if (re)
        xmpp_stanza_release(re);
    if (fb)
        xmpp_stanza_release(fb);
    rc = ok ? sr_send(ctx, m) : sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    if (m)
        xmpp_stanza_release(m);
    if (rc < 0) {
        sr_request_unlink(ctx, r);
        sr_request_free(r);
        return rc;
    }
    if (request_id)
        *request_id = r->id;
    return SEALROOM_OK;
}

/* The event for a retraction or tombstone msg: who (the occupant's nick
 * and the real JID the room states) retracted which message. */
static void emit_retracted(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *msg,
                           const char *retracted_id, int64_t ts, bool history)
{
    sr_jid from;
    const char *nick = sr_jid_parse(&from, xmpp_stanza_get_from(msg)) ? from.resource : NULL;
    xmpp_stanza_t *x = sr_child(msg, "x", SR_NS_MUC_USER);
    xmpp_stanza_t *item = x ? sr_child(x, "item", NULL) : NULL;
    char real[SR_BARE_JID_MAX];
    const char *item_jid = item ? xmpp_stanza_get_attribute(item, "jid") : NULL;
    const char *jid = item_jid && sr_jid_normalise_bare(real, sizeof real, item_jid) ? real : NULL;
    sealroom_event ev = {0};
    ev.type = SEALROOM_EVENT_MESSAGE_RETRACTED;
    ev.room = room->jid;
    ev.nick = nick;
    ev.jid = jid;
    ev.stanza_id = retracted_id;
    ev.timestamp_ms = ts;
    ev.history = history;
    ev.self = jid && strcmp(jid, ctx->own_bare) == 0;
    sr_emit(ctx, &ev);
}

bool sr_retract_reflected(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *msg, int64_t ts)
{
    xmpp_stanza_t *re = sr_child(msg, "retract", SR_NS_RETRACT);
    if (!re)
        return false;
    const char *id = xmpp_stanza_get_attribute(re, "id");
    uint64_t seq;
    if (!id || !sr_parse_u64(id, &seq) || seq == 0) {
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: a retraction without an archive id ignored",
               room->jid);
        return true;
    }
    emit_retracted(ctx, room, msg, id, ts, false);
    /* Ours: the room echoes our message id to the sending session. */
    const char *mid = xmpp_stanza_get_id(msg);
    for (sr_request *r = ctx->requests; r && mid; r = r->next)
        if (r->kind == SEALROOM_REQ_RETRACT && strcmp(r->origin_id, mid) == 0 &&
            strcmp(r->room, room->jid) == 0) {
            sealroom_event done = {0};
            done.stanza_id = id;
            sr_request_done(ctx, r, SEALROOM_OK, NULL, &done);
            break;
        }
    return true;
}

bool sr_retract_refused(sealroom_ctx *ctx, const char *room, xmpp_stanza_t *err_msg)
{
    const char *id = xmpp_stanza_get_id(err_msg);
    for (sr_request *r = ctx->requests; r && id; r = r->next) {
        if (r->kind != SEALROOM_REQ_RETRACT || strcmp(r->origin_id, id) != 0 ||
            strcmp(r->room, room) != 0)
            continue;
        char text[sizeof ctx->last_error];
        int rc = sr_error_from_stanza(err_msg, text, sizeof text);
        sr_request_done(ctx, r, rc, text, NULL);
        return true;
    }
    return false;
}

bool sr_retract_tombstone(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *msg,
                          const char *archive_id, int64_t ts, bool history)
{
    xmpp_stanza_t *t = sr_child(msg, "retracted", SR_NS_RETRACT);
    if (!t)
        return false;
    const char *id = archive_id ? archive_id : xmpp_stanza_get_attribute(t, "id");
    emit_retracted(ctx, room, msg, id, ts, history);
    return true;
}
