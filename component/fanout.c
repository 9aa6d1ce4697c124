/* Server-side fan-out of reflected messages. Sending one copy per occupant
 * over the component link makes the XMPP server parse every copy; instead,
 * the messages a room stored in one loop turn (one group commit, under load
 * many) go to the fan-out service (xmpp.fanout_jid, e.g. Prosody with
 * contrib/prosody/mod_sealroom_fanout.lua) as one stanza: XEP-0033 bcc
 * addresses for the occupants and a <batch/> of the messages, each marked
 * with the occupant that must not get it (its sender, who already has its
 * own copy). The server parses the list once and writes each occupant's
 * messages together. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "service.h"
#include "stanza.h"

#define NS_ADDRESS "http://jabber.org/protocol/address"
#define NS_FANOUT "urn:xmpp:sealroom:fanout:0"
/* Addresses per stanza, and how much a batch may carry before it is sent
 * early: Prosody's component stanza limit is 512 KiB. */
#define FANOUT_MAX_ADDRESSES 256
#define FANOUT_MAX_MESSAGES 64
#define FANOUT_MAX_BYTES (128 * 1024)
/* Per message in a batch, besides the base64 payload (ids, body, JIDs). */
#define FANOUT_MESSAGE_OVERHEAD 600

static void flush_room(rooms *r, room *rm)
{
    xmpp_stanza_t *batch = rm->fanout_batch;
    rm->fanout_batch = NULL;
    rm->fanout_count = 0;
    rm->fanout_bytes = 0;
    if (!batch) return;
    const char *fanout = r->cfg->fanout_jid;
    char id[48];
    occupant *o = rm->occupants;
    size_t left = 0;
    for (occupant *c = o; c; c = c->next) left++;
    while (o && fanout && *fanout) {
        xmpp_stanza_t *outer =
            st_new(link_ctx(r->link), "message", NULL, rm->name, fanout, NULL);
        xmpp_stanza_t *addresses = outer ? st_add(outer, "addresses", NS_ADDRESS) : NULL;
        /* A stanza per FANOUT_MAX_ADDRESSES occupants; each needs its own copy
         * of the batch (a libstrophe element has one parent). */
        bool last = left <= FANOUT_MAX_ADDRESSES;
        xmpp_stanza_t *body = !addresses ? NULL : last ? batch : xmpp_stanza_copy(batch);
        if (!addresses || !body || xmpp_stanza_add_child_ex(outer, body, 0) != XMPP_EOK) {
            if (body && body != batch) xmpp_stanza_release(body);
            if (outer) xmpp_stanza_release(outer);
            log_error(rm->name, "out of memory: reflections to the fan-out service dropped");
            break;
        }
        if (body == batch) batch = NULL; /* now owned by outer */
        snprintf(id, sizeof id, "fanout-%llu", ++r->fanout_stanzas);
        xmpp_stanza_set_id(outer, id);
        for (int n = 0; o && n < FANOUT_MAX_ADDRESSES; o = o->next, n++, left--) {
            xmpp_stanza_t *a = st_add(addresses, "address", NULL);
            if (!a) break;
            xmpp_stanza_set_attribute(a, "type", "bcc");
            xmpp_stanza_set_attribute(a, "jid", o->full_jid);
        }
        link_send(r->link, outer);
        xmpp_stanza_release(outer);
    }
    if (batch) xmpp_stanza_release(batch);
}

void fanout_queue(rooms *r, room *rm, xmpp_stanza_t *m, const char *sender_full,
                  const char *sender_id, size_t payload_len)
{
    if (!rm->fanout_listed) {
        rm->fanout_listed = true;
        rm->refs++;
        rm->fanout_next = r->fanout_pending;
        r->fanout_pending = rm;
    }
    if (!rm->fanout_batch) {
        rm->fanout_batch = xmpp_stanza_new(link_ctx(r->link));
        if (!rm->fanout_batch) return;
        xmpp_stanza_set_name(rm->fanout_batch, "batch");
        xmpp_stanza_set_ns(rm->fanout_batch, NS_FANOUT);
    }
    xmpp_stanza_t *item = st_add(rm->fanout_batch, "item", NULL);
    xmpp_stanza_t *copy = item ? xmpp_stanza_copy(m) : NULL;
    if (!copy || xmpp_stanza_add_child_ex(item, copy, 0) != XMPP_EOK) {
        if (copy) xmpp_stanza_release(copy);
        log_error(rm->name, "out of memory: a reflection to the fan-out service was dropped");
        return;
    }
    xmpp_stanza_set_attribute(item, "except", sender_full);
    xmpp_stanza_set_attribute(item, "self-id", sender_id);
    /* The messages are delivered as they are: they must be in the client namespace. */
    xmpp_stanza_set_ns(copy, "jabber:client");
    rm->fanout_count++;
    rm->fanout_bytes += payload_len + FANOUT_MESSAGE_OVERHEAD;
    if (rm->fanout_count >= FANOUT_MAX_MESSAGES || rm->fanout_bytes >= FANOUT_MAX_BYTES)
        flush_room(r, rm);
}

void fanout_flush(rooms *r)
{
    room *rm = r->fanout_pending;
    r->fanout_pending = NULL;
    while (rm) {
        room *next = rm->fanout_next;
        rm->fanout_next = NULL;
        rm->fanout_listed = false;
        flush_room(r, rm);
        room_release(r, rm);
        rm = next;
    }
}

void fanout_discard(room *rm)
{
    if (rm->fanout_batch) xmpp_stanza_release(rm->fanout_batch);
    rm->fanout_batch = NULL;
}
