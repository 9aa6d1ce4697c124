/* Service discovery (XEP-0030): the service says it is a Sealroom MUC
 * service and lists the rooms the asker is a member of (never others');
 * each room describes itself as a members-only, persistent, non-anonymous
 * room with MAM, the Sealroom protocol, encrypted search and message
 * retraction. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "service.h"
#include "stanza.h"

static const char *const service_features[] = {
    NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC,  NS_MAM,  NS_SID,      NS_SEALROOM, NS_KEYS,
    NS_ARCHIVE,    NS_SEARCH,      NS_RETRACT, NS_PING, NS_COMMANDS, NULL};
static const char *const room_features[] = {
    NS_DISCO_INFO, NS_MUC,           "muc_membersonly", "muc_persistent", "muc_hidden",
    "muc_nonanonymous", "muc_unmoderated", NS_MAM, NS_SID, NS_SEALROOM, NS_KEYS, NS_ARCHIVE,
    NS_SEARCH, NS_RETRACT, NULL};

static void send_info(rooms *r, xmpp_stanza_t *iq, const char *from, const char *name,
                      const char *const *features)
{
    xmpp_stanza_t *reply = st_iq_result(iq, from);
    xmpp_stanza_t *q = reply ? st_add(reply, "query", NS_DISCO_INFO) : NULL;
    xmpp_stanza_t *id = q ? st_add(q, "identity", NULL) : NULL;
    if (!id) {
        if (reply) xmpp_stanza_release(reply);
        svc_error(r, iq, from, "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    xmpp_stanza_set_attribute(id, "category", "conference");
    xmpp_stanza_set_attribute(id, "type", "text");
    xmpp_stanza_set_attribute(id, "name", name);
    for (int i = 0; features[i]; i++) {
        xmpp_stanza_t *f = st_add(q, "feature", NULL);
        if (f) xmpp_stanza_set_attribute(f, "var", features[i]);
    }
    svc_send(r, reply);
}

typedef struct items_op {
    rooms *r;
    xmpp_stanza_t *iq;
} items_op;

static void items_read(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    items_op *op = arg;
    rooms *r = op->r;
    if (!ok || nres != 1) {
        log_error(svc_jid(r), "room listing failed: %s", err ? err : "?");
        svc_error(r, op->iq, svc_jid(r), "wait", "internal-server-error", NULL,
                  "rooms could not be listed; try again");
    } else {
        xmpp_stanza_t *reply = st_iq_result(op->iq, svc_jid(r));
        xmpp_stanza_t *q = reply ? st_add(reply, "query", NS_DISCO_ITEMS) : NULL;
        for (int i = 0; q && i < PQntuples(res[0]); i++) {
            xmpp_stanza_t *item = st_add(q, "item", NULL);
            if (item) xmpp_stanza_set_attribute(item, "jid", PQgetvalue(res[0], i, 0));
        }
        if (q) {
            svc_send(r, reply);
        } else {
            if (reply) xmpp_stanza_release(reply);
            svc_error(r, op->iq, svc_jid(r), "wait", "resource-constraint", NULL, "out of memory");
        }
    }
    xmpp_stanza_release(op->iq);
    free(op);
}

void disco_handle(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *query)
{
    const char *type = xmpp_stanza_get_type(iq);
    const char *ns = xmpp_stanza_get_ns(query);
    if (strcmp(type, "get") != 0 || strcmp(xmpp_stanza_get_name(query), "query") != 0) {
        svc_error(r, iq, rm ? rm->name : svc_jid(r), "cancel", "bad-request", NULL,
                  "disco is a get of <query/>");
        return;
    }
    bool info = strcmp(ns, NS_DISCO_INFO) == 0;
    if (rm) {
        char sender[SR_BARE_JID_MAX];
        /* Room details are for members; others learn only that it exists. */
        if (!svc_require_member(r, rm, iq, sender, sizeof sender,
                                "room details are for members only")) {
            return;
        }
        if (info) {
            send_info(r, iq, rm->name, rm->name, room_features);
        } else {
            xmpp_stanza_t *reply = st_iq_result(iq, rm->name);
            if (reply && st_add(reply, "query", NS_DISCO_ITEMS)) {
                svc_send(r, reply);
            } else {
                if (reply) xmpp_stanza_release(reply);
                svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
            }
        }
        return;
    }
    if (info) {
        send_info(r, iq, svc_jid(r), "Sealroom", service_features);
        return;
    }
    const char *node = xmpp_stanza_get_attribute(query, "node");
    if (node && strcmp(node, NS_COMMANDS) == 0) {
        admin_list_commands(r, iq);
        return;
    }
    items_op *op = calloc(1, sizeof *op);
    char sender[SR_BARE_JID_MAX];
    if (!op || !svc_sender_bare(iq, sender, sizeof sender) || !(op->iq = xmpp_stanza_copy(iq))) {
        free(op);
        svc_error(r, iq, svc_jid(r), "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    op->r = r;
    const char *p[1] = {sender};
    db_read1(r->db,
             "SELECT r.name FROM members m JOIN rooms r USING (room_id) WHERE m.jid = $1 "
             "ORDER BY r.name LIMIT 1000",
             1, p, NULL, NULL, items_read, op);
}
