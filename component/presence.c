/* MUC-shaped presence (XEP-0045 subset): members join a room by presence to
 * room@service/nick and leave with unavailable presence; occupants see each
 * other come and go. Occupancy is written through to PostgreSQL (so another
 * instance or a restarted one knows who is present) without making the join
 * wait for the commit. Members removed from the roster are kicked (status
 * 321). A session that leaves has its open search batch sealed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jid.h"
#include "log.h"
#include "service.h"
#include "stanza.h"

occupant *occupant_by_full(room *rm, const char *full_jid)
{
    if (!full_jid) return NULL;
    for (occupant *o = rm->occupants; o; o = o->next)
        if (strcmp(o->full_jid, full_jid) == 0) return o;
    return NULL;
}

static occupant *occupant_by_nick(room *rm, const char *nick)
{
    for (occupant *o = rm->occupants; o; o = o->next)
        if (strcmp(o->nick, nick) == 0) return o;
    return NULL;
}

static void occupant_free(occupant *o)
{
    free(o->full_jid);
    free(o->bare_jid);
    free(o->nick);
    free(o);
}

void occupants_free(room *rm)
{
    while (rm->occupants) {
        occupant *o = rm->occupants;
        rm->occupants = o->next;
        occupant_free(o);
    }
}

static void write_done(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    rooms *r = arg;
    r->writes_in_flight--;
    if (!ok) log_warn(svc_jid(r), "occupancy not recorded: %s", err ? err : "?");
}

static void write_occupancy(rooms *r, room *rm, const occupant *o, bool present)
{
    db_unit *u = db_unit_new();
    if (!u) return;
    char id[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    int rc;
    if (present) {
        const char *p[6] = {id, o->full_jid, o->nick, o->bare_jid, r->instance,
                            o->dmkd ? "t" : "f"};
        rc = db_unit_add(u,
                         "INSERT INTO occupants (room_id, full_jid, nick, bare_jid, instance, "
                         "dmkd) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (room_id, full_jid) "
                         "DO UPDATE SET nick = EXCLUDED.nick, instance = EXCLUDED.instance, "
                         "dmkd = EXCLUDED.dmkd",
                         6, p, NULL, NULL);
    } else {
        const char *p[2] = {id, o->full_jid};
        rc = db_unit_add(u, "DELETE FROM occupants WHERE room_id = $1 AND full_jid = $2", 2, p,
                         NULL, NULL);
        /* Its open search batch takes no more entries (search-wire §4): a
         * session that comes back starts a new one. */
        if (rc == 0)
            rc = db_unit_add(u,
                             "UPDATE search_batches SET state = 1 WHERE room_id = $1 "
                             "AND owner = $2 AND state = 0",
                             2, p, NULL, NULL);
    }
    if (rc != 0) {
        db_unit_free(u);
        return;
    }
    r->writes_in_flight++;
    db_submit(r->db, u, true, write_done, r);
}

static const char *affiliation(room *rm, const char *bare)
{
    const sr_member *m = sr_roster_find(&rm->roster, bare);
    return m ? sr_role_name(m->role) : "none";
}

/* Presence of occupant `o` as seen by `to`, with optional status codes. */
static xmpp_stanza_t *occupant_presence(rooms *r, room *rm, const occupant *o, const char *to,
                                        bool unavailable, const char *code1, const char *code2)
{
    xmpp_ctx_t *ctx = link_ctx(r->link);
    char from[SR_JID_MAX + 2];
    snprintf(from, sizeof from, "%s/%s", rm->name, o->nick);
    xmpp_stanza_t *p = st_new(ctx, "presence", unavailable ? "unavailable" : NULL, from, to, NULL);
    xmpp_stanza_t *x = p ? st_add(p, "x", NS_MUC_USER) : NULL;
    xmpp_stanza_t *item = x ? st_add(x, "item", NULL) : NULL;
    if (!item) {
        if (p) xmpp_stanza_release(p);
        return NULL;
    }
    xmpp_stanza_set_attribute(item, "affiliation", unavailable && code2 && strcmp(code2, "321") == 0
                                                       ? "none"
                                                       : affiliation(rm, o->bare_jid));
    xmpp_stanza_set_attribute(item, "role", unavailable ? "none" : "participant");
    xmpp_stanza_set_attribute(item, "jid", o->full_jid);
    const char *codes[2] = {code1, code2};
    for (int i = 0; i < 2; i++) {
        if (!codes[i]) continue;
        xmpp_stanza_t *s = st_add(x, "status", NULL);
        if (s) xmpp_stanza_set_attribute(s, "code", codes[i]);
    }
    return p;
}

static void broadcast_presence(rooms *r, room *rm, const occupant *subject, bool unavailable,
                               const char *code)
{
    for (occupant *o = rm->occupants; o; o = o->next) {
        if (o == subject) continue;
        svc_send(r, occupant_presence(r, rm, subject, o->full_jid, unavailable, NULL, code));
    }
}

void presence_remove_occupant(rooms *r, room *rm, occupant *o, const char *status_code)
{
    for (occupant **pp = &rm->occupants; *pp; pp = &(*pp)->next) {
        if (*pp != o) continue;
        *pp = o->next;
        break;
    }
    /* With several sessions under one nick, the nick leaves with the last. */
    if (!occupant_by_nick(rm, o->nick)) broadcast_presence(r, rm, o, true, status_code);
    if (status_code)
        svc_send(r, occupant_presence(r, rm, o, o->full_jid, true, "110", status_code));
    log_debug(rm->name, "%s left (%s)", o->full_jid, status_code ? status_code : "gone");
    write_occupancy(r, rm, o, false);
    occupant_free(o);
}

static void send_join_state(rooms *r, room *rm, occupant *joiner)
{
    xmpp_ctx_t *ctx = link_ctx(r->link);
    for (occupant *o = rm->occupants; o; o = o->next) {
        if (o == joiner) continue;
        svc_send(r, occupant_presence(r, rm, o, joiner->full_jid, false, NULL, NULL));
    }
    /* 100: the room is non-anonymous; 110: this is you. */
    svc_send(r, occupant_presence(r, rm, joiner, joiner->full_jid, false, "100", "110"));
    xmpp_stanza_t *subject = st_new(ctx, "message", "groupchat", rm->name, joiner->full_jid, NULL);
    if (subject && st_add(subject, "subject", NULL))
        svc_send(r, subject);
    else if (subject)
        xmpp_stanza_release(subject);
}

void presence_handle(rooms *r, room *rm, xmpp_stanza_t *pres, const char *nick)
{
    const char *type = xmpp_stanza_get_type(pres);
    const char *from = xmpp_stanza_get_from(pres);
    char bare[SR_BARE_JID_MAX];
    if (!svc_sender_bare(pres, bare, sizeof bare)) return;
    occupant *self = occupant_by_full(rm, from);
    if (type && strcmp(type, "unavailable") == 0) {
        if (!self) return;
        svc_send(r, occupant_presence(r, rm, self, self->full_jid, true, "110", NULL));
        presence_remove_occupant(r, rm, self, NULL);
        return;
    }
    if (type) return; /* probes and subscriptions mean nothing to a room */
    if (!*nick) {
        svc_error(r, pres, xmpp_stanza_get_to(pres), "modify", "jid-malformed", NULL,
                  "join with a nickname: room@service/nick");
        return;
    }
    if (!sr_roster_find(&rm->roster, bare)) {
        svc_error(r, pres, xmpp_stanza_get_to(pres), "auth", "registration-required", "not-member",
                  "this room is members-only and you are not on its roster");
        return;
    }
    occupant *holder = occupant_by_nick(rm, nick);
    if (holder && strcmp(holder->bare_jid, bare) != 0) {
        svc_error(r, pres, xmpp_stanza_get_to(pres), "cancel", "conflict", NULL,
                  "that nickname is in use by another member");
        return;
    }
    if (self) {
        if (strcmp(self->nick, nick) != 0) {
            svc_error(r, pres, xmpp_stanza_get_to(pres), "modify", "not-acceptable", NULL,
                      "nickname changes are not supported; leave and join again");
            return;
        }
        /* A rejoin (e.g. after the client's link dropped): resend the room state. */
        if (st_child(pres, "x", NS_MUC)) send_join_state(r, rm, self);
        return;
    }
    occupant *o = calloc(1, sizeof *o);
    if (!o || !(o->full_jid = strdup(from)) || !(o->bare_jid = strdup(bare)) ||
        !(o->nick = strdup(nick))) {
        if (o) occupant_free(o);
        svc_error(r, pres, xmpp_stanza_get_to(pres), "wait", "resource-constraint", NULL,
                  "out of memory");
        return;
    }
    /* Only sessions that say so are asked into key-distribution runs:
     * others (older clients, plain XMPP clients) would be timed out of every
     * run. */
    o->dmkd = st_child(pres, "keys", NS_KEYS) != NULL;
    o->next = rm->occupants;
    rm->occupants = o;
    write_occupancy(r, rm, o, true);
    log_debug(rm->name, "%s joined as %s", from, nick);
    broadcast_presence(r, rm, o, false, NULL);
    send_join_state(r, rm, o);
}

void presence_roster_changed(rooms *r, room *rm, const sr_roster_state *before)
{
    occupant *o = rm->occupants;
    while (o) {
        occupant *next = o->next;
        const sr_member *now = sr_roster_find(&rm->roster, o->bare_jid);
        const sr_member *was = sr_roster_find(before, o->bare_jid);
        if (!now) {
            presence_remove_occupant(r, rm, o, "321");
        } else if (!was || was->role != now->role) {
            broadcast_presence(r, rm, o, false, NULL);
            svc_send(r, occupant_presence(r, rm, o, o->full_jid, false, "110", NULL));
        }
        o = next;
    }
}
