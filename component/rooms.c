/* The room service's front door: routes each stanza from the link to the
 * right handler, keeps the per-room cache (state loaded from PostgreSQL on
 * first use), and queues stanzas for a room while its state is loading or a
 * membership change is committing, so every room sees its stanzas in order. */
#include "rooms.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jid.h"
#include "log.h"
#include "service.h"
#include "stanza.h"

#define ROOM_IDLE_EVICT_MS (10 * 60 * 1000)

static unsigned long hash_name(const char *s)
{
    unsigned long h = 5381;
    while (*s) h = h * 33 + (unsigned char)*s++;
    return h;
}

const char *svc_jid(const rooms *r) { return r->cfg->component_jid; }

void svc_send(rooms *r, xmpp_stanza_t *stanza)
{
    if (!stanza) return;
    link_send(r->link, stanza);
    xmpp_stanza_release(stanza);
}

void svc_error(rooms *r, xmpp_stanza_t *req, const char *from, const char *etype,
               const char *cond, const char *app, const char *text)
{
    const char *type = xmpp_stanza_get_type(req);
    /* Never answer an error with an error: that is how loops start. */
    if (type && strcmp(type, "error") == 0) return;
    r->stats.requests_refused++;
    log_debug(xmpp_stanza_get_from(req), "refused: %s%s%s (%s)", cond, app ? "/" : "",
              app ? app : "", text ? text : "");
    svc_send(r, st_error(req, from, etype, cond, app, text));
}

bool svc_sender_bare(xmpp_stanza_t *stanza, char *out, size_t outlen)
{
    const char *from = xmpp_stanza_get_from(stanza);
    return from && sr_jid_normalise_bare(out, outlen, from);
}

bool svc_require_member(rooms *r, const room *rm, xmpp_stanza_t *iq, char *out, size_t outlen,
                        const char *why)
{
    if (svc_sender_bare(iq, out, outlen) && sr_roster_find(&rm->roster, out)) return true;
    svc_error(r, iq, rm->name, "auth", "forbidden", "not-member", why);
    return false;
}

bool svc_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || strlen(s) > 19) return false;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if ((s[0] == '0' && s[1]) || v > INT64_MAX) return false;
    *out = v;
    return true;
}

bool svc_is_admin(const rooms *r, const char *bare)
{
    const char *list = r->cfg->admins;
    size_t n = strlen(bare);
    if (!list || !n) return false;
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',') p++;
        const char *e = p;
        while (*e && *e != ' ' && *e != ',') e++;
        if ((size_t)(e - p) == n && strncmp(p, bare, n) == 0) return true;
        p = e;
    }
    return false;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

long svc_bytea(const PGresult *res, int row, int col, unsigned char *out, size_t outlen)
{
    const char *v = PQgetvalue(res, row, col);
    size_t n = (size_t)PQgetlength(res, row, col);
    if (n < 2 || v[0] != '\\' || v[1] != 'x' || (n - 2) % 2 != 0 || (n - 2) / 2 > outlen)
        return -1;
    for (size_t i = 0; i < (n - 2) / 2; i++) {
        int hi = hexval(v[2 + 2 * i]), lo = hexval(v[3 + 2 * i]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return (long)((n - 2) / 2);
}

unsigned char *svc_bytea_dup(const PGresult *res, int row, int col, size_t *len)
{
    size_t n = (size_t)PQgetlength(res, row, col);
    unsigned char *out = malloc(n / 2 + 1);
    if (!out) return NULL;
    long got = svc_bytea(res, row, col, out, n / 2 + 1);
    if (got < 0) {
        free(out);
        return NULL;
    }
    *len = (size_t)got;
    return out;
}

rooms *rooms_new(const config *cfg, db *d, xmpp_link *l)
{
    rooms *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->cfg = cfg;
    r->db = d;
    r->link = l;
    r->nbuckets = 1024;
    r->started = time(NULL);
    r->buckets = calloc(r->nbuckets, sizeof *r->buckets);
    if (!r->buckets) {
        free(r);
        return NULL;
    }
    if (!search_start(r)) {
        free(r->buckets);
        free(r);
        return NULL;
    }
    if (cfg->instance_name && *cfg->instance_name) {
        snprintf(r->instance, sizeof r->instance, "%s", cfg->instance_name);
    } else {
        char host[128] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(r->instance, sizeof r->instance, "%s-%ld", host, (long)getpid());
    }
    return r;
}

static void queue_free(room *rm)
{
    while (rm->queue) {
        queued_stanza *q = rm->queue;
        rm->queue = q->next;
        xmpp_stanza_release(q->stanza);
        free(q);
    }
    rm->queue_tail = NULL;
    rm->queued = 0;
}

static void room_free(room *rm)
{
    fanout_discard(rm);
    datakey_cache_clear(rm);
    dmkd_room_free(rm);
    token_chain_free(rm);
    queue_free(rm);
    occupants_free(rm);
    sr_roster_state_free(&rm->roster);
    free(rm->name);
    free(rm);
}

void rooms_free(rooms *r)
{
    if (!r) return;
    /* Its unfinished searches hold references to rooms. */
    search_stop(r);
    for (size_t i = 0; i < r->nbuckets; i++) {
        room *rm = r->buckets[i];
        while (rm) {
            room *next = rm->hnext;
            room_free(rm);
            rm = next;
        }
    }
    free(r->buckets);
    vault_limits_free(r);
    tokenerase_free(r);
    free(r);
}

room *room_lookup(rooms *r, const char *name)
{
    size_t b = hash_name(name) % r->nbuckets;
    for (room *rm = r->buckets[b]; rm; rm = rm->hnext)
        if (strcmp(rm->name, name) == 0) return rm;
    return NULL;
}

bool room_enqueue(room *rm, xmpp_stanza_t *stanza)
{
    if (rm->queued >= ROOM_QUEUE_MAX) return false;
    queued_stanza *q = calloc(1, sizeof *q);
    if (!q) return false;
    q->stanza = xmpp_stanza_copy(stanza);
    if (!q->stanza) {
        free(q);
        return false;
    }
    if (rm->queue_tail)
        rm->queue_tail->next = q;
    else
        rm->queue = q;
    rm->queue_tail = q;
    rm->queued++;
    return true;
}

void room_op_done(rooms *r, room *rm)
{
    rm->busy = false;
    room_release(r, rm);
    room_drain(r, rm);
}

void room_release(rooms *r, room *rm)
{
    (void)r;
    if (rm->refs) rm->refs--;
}

static int cmp_member(const void *a, const void *b)
{
    return strcmp(((const sr_member *)a)->jid, ((const sr_member *)b)->jid);
}

static void add_loaded_occupant(room *rm, const char *full, const char *bare, const char *nick,
                                bool dmkd)
{
    occupant *o = calloc(1, sizeof *o);
    if (!o) return;
    o->full_jid = strdup(full);
    o->bare_jid = strdup(bare);
    o->nick = strdup(nick);
    if (!o->full_jid || !o->bare_jid || !o->nick) {
        free(o->full_jid);
        free(o->bare_jid);
        free(o->nick);
        free(o);
        return;
    }
    o->dmkd = dmkd;
    o->next = rm->occupants;
    rm->occupants = o;
}

/* Fill the cache from the three reads of room_load. */
static bool room_fill(room *rm, PGresult *const *res)
{
    if (PQntuples(res[0]) == 0) {
        rm->state = ROOM_ABSENT;
        rm->id = 0;
        return true;
    }
    rm->id = strtoll(PQgetvalue(res[0], 0, 0), NULL, 10);
    rm->current_epoch = strtoull(PQgetvalue(res[0], 0, 3), NULL, 10);
    rm->membership_version = strtoull(PQgetvalue(res[0], 0, 4), NULL, 10);
    rm->epoch_roster_version =
        PQgetisnull(res[0], 0, 5) ? 0 : strtoull(PQgetvalue(res[0], 0, 5), NULL, 10);
    rm->epoch_created = PQgetisnull(res[0], 0, 6) ? 0 : strtoll(PQgetvalue(res[0], 0, 6), NULL, 10);
    /* How long it has been stale is not stored: count from now. */
    rm->stale_since_ms = rm->current_epoch > 0 && rm->epoch_roster_version < rm->membership_version
                             ? rm->last_used_ms
                             : -1;
    datakey_cache_clear(rm);
    token_chain_free(rm);
    for (int i = 0; i < PQntuples(res[6]); i++) {
        unsigned char delta[32];
        bool ok = svc_bytea(res[6], i, 1, delta, sizeof delta) == (long)sizeof delta &&
                  token_chain_put(rm, strtoull(PQgetvalue(res[6], i, 0), NULL, 10), delta);
        sodium_memzero(delta, sizeof delta);
        if (!ok) return false;
    }
    for (int i = 0; i < PQntuples(res[3]); i++) {
        unsigned char dkid[16];
        if (svc_bytea(res[3], i, 0, dkid, sizeof dkid) != (long)sizeof dkid ||
            !datakey_cache_add(rm, dkid, PQgetvalue(res[3], i, 1)))
            return false;
    }
    sr_roster_state_free(&rm->roster);
    sr_roster_state_init(&rm->roster);
    rm->roster.exists = true;
    rm->roster.version = strtoull(PQgetvalue(res[0], 0, 1), NULL, 10);
    if (svc_bytea(res[0], 0, 2, rm->roster.head, SR_ROSTER_HASH_BYTES) != SR_ROSTER_HASH_BYTES)
        return false;
    int n = PQntuples(res[1]);
    if (n > 0) {
        rm->roster.members = calloc((size_t)n, sizeof(sr_member));
        if (!rm->roster.members) return false;
        rm->roster.cap = (size_t)n;
    }
    for (int i = 0; i < n; i++) {
        sr_member *m = &rm->roster.members[i];
        snprintf(m->jid, sizeof m->jid, "%s", PQgetvalue(res[1], i, 0));
        m->role = (sr_role)atoi(PQgetvalue(res[1], i, 1));
        if (svc_bytea(res[1], i, 2, m->key, SR_KEY_BYTES) != SR_KEY_BYTES) return false;
    }
    rm->roster.nmembers = (size_t)n;
    qsort(rm->roster.members, rm->roster.nmembers, sizeof(sr_member), cmp_member);
    occupants_free(rm);
    for (int i = 0; i < PQntuples(res[2]); i++)
        add_loaded_occupant(rm, PQgetvalue(res[2], i, 0), PQgetvalue(res[2], i, 2),
                            PQgetvalue(res[2], i, 1), strcmp(PQgetvalue(res[2], i, 3), "t") == 0);
    rm->state = ROOM_READY;
    return true;
}

typedef struct load_ctx {
    rooms *r;
    room *rm;
} load_ctx;

static void dispatch_room(rooms *r, room *rm, xmpp_stanza_t *stanza, const char *nick);

static void room_loaded(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    load_ctx *lc = arg;
    rooms *r = lc->r;
    room *rm = lc->rm;
    free(lc);
    room_release(r, rm);
    rm->busy = false;
    if (!ok || nres != 7 || !room_fill(rm, res)) {
        log_error(rm->name, "loading room state failed: %s", ok ? "bad row" : err);
        /* Answer what waited with a temporary error; the next stanza retries the load. */
        rm->state = ROOM_ABSENT;
        while (rm->queue) {
            queued_stanza *q = rm->queue;
            rm->queue = q->next;
            svc_error(r, q->stanza, rm->name, "wait", "internal-server-error", NULL,
                      "the archive database is unavailable; try again");
            xmpp_stanza_release(q->stanza);
            free(q);
        }
        rm->queue_tail = NULL;
        rm->queued = 0;
        rm->state = ROOM_LOADING; /* forces a reload on next use */
        rm->id = -1;
        return;
    }
    if (rm->state == ROOM_READY) dmkd_loaded(r, rm, res[4], res[5]);
    room_drain(r, rm);
}

static void room_load(rooms *r, room *rm)
{
    load_ctx *lc = malloc(sizeof *lc);
    db_unit *u = db_unit_new();
    if (!lc || !u) {
        free(lc);
        db_unit_free(u);
        return;
    }
    const char *p[1] = {rm->name};
    db_unit_add(u,
                "SELECT r.room_id, r.roster_version, r.roster_head, r.current_epoch, "
                "r.membership_version, e.roster_version, extract(epoch FROM e.created_at)::bigint "
                "FROM rooms r LEFT JOIN epochs e ON e.room_id = r.room_id AND "
                "e.epoch = r.current_epoch WHERE r.name = $1",
                1, p, NULL, NULL);
    db_unit_add(u,
                "SELECT m.jid, m.role, m.sign_pk FROM members m JOIN rooms r USING (room_id) "
                "WHERE r.name = $1",
                1, p, NULL, NULL);
    db_unit_add(u,
                "SELECT o.full_jid, o.nick, o.bare_jid, o.dmkd FROM occupants o JOIN rooms r USING "
                "(room_id) WHERE r.name = $1",
                1, p, NULL, NULL);
    db_unit_add(u,
                "SELECT d.dkid, d.sender FROM datakeys d JOIN rooms r ON d.room_id = r.room_id "
                "AND d.created_epoch = r.current_epoch WHERE r.name = $1",
                1, p, NULL, NULL);
    db_unit_add(u,
                "SELECT d.run_id, d.epoch, d.roster_version, d.roster_hash, d.phase, d.sid, "
                "d.k_prime FROM dmkd_runs d JOIN rooms r USING (room_id) WHERE r.name = $1",
                1, p, NULL, NULL);
    db_unit_add(u,
                "SELECT p.position, p.jid, p.full_jid, p.r_point, p.commitment, p.sig1, p.t, "
                "p.second, p.sig2 FROM dmkd_parts p JOIN rooms r USING (room_id) "
                "WHERE r.name = $1 ORDER BY p.position",
                1, p, NULL, NULL);
    db_unit_add(u,
                "SELECT t.from_epoch, t.delta FROM archive_tokens t JOIN rooms r USING (room_id) "
                "WHERE r.name = $1 ORDER BY t.from_epoch",
                1, p, NULL, NULL);
    lc->r = r;
    lc->rm = rm;
    rm->refs++;
    rm->state = ROOM_LOADING;
    rm->busy = true;
    db_submit(r->db, u, false, room_loaded, lc);
}

static room *room_get_or_load(rooms *r, const char *name)
{
    room *rm = room_lookup(r, name);
    if (rm) {
        rm->last_used_ms = r->now_ms;
        if (rm->state == ROOM_LOADING && !rm->busy) room_load(r, rm);
        return rm;
    }
    rm = calloc(1, sizeof *rm);
    if (!rm) return NULL;
    rm->name = strdup(name);
    if (!rm->name) {
        free(rm);
        return NULL;
    }
    sr_roster_state_init(&rm->roster);
    rm->last_used_ms = r->now_ms;
    rm->stale_since_ms = -1;
    rm->run_due_ms = -1;
    size_t b = hash_name(name) % r->nbuckets;
    rm->hnext = r->buckets[b];
    r->buckets[b] = rm;
    r->nrooms++;
    room_load(r, rm);
    return rm;
}

void room_drain(rooms *r, room *rm)
{
    /* A write that failed leaves the room's state unknown: read it again now
     * for the stanzas that waited, which no later stanza may come to do. */
    if (rm->queue && !rm->busy && rm->state == ROOM_LOADING) {
        room_load(r, rm);
        return;
    }
    while (rm->queue && !rm->busy && rm->state != ROOM_LOADING) {
        queued_stanza *q = rm->queue;
        rm->queue = q->next;
        if (!rm->queue) rm->queue_tail = NULL;
        rm->queued--;
        sr_jid to;
        const char *t = xmpp_stanza_get_to(q->stanza);
        if (t && sr_jid_parse(&to, t)) dispatch_room(r, rm, q->stanza, to.resource);
        xmpp_stanza_release(q->stanza);
        free(q);
    }
}

static void handle_service_iq(rooms *r, xmpp_stanza_t *iq)
{
    const char *type = xmpp_stanza_get_type(iq);
    xmpp_stanza_t *payload = NULL;
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(iq); c; c = xmpp_stanza_get_next(c))
        if (xmpp_stanza_is_tag(c)) {
            payload = c;
            break;
        }
    if (!payload) {
        svc_error(r, iq, svc_jid(r), "modify", "bad-request", NULL, "empty iq");
        return;
    }
    const char *ns = xmpp_stanza_get_ns(payload), *name = xmpp_stanza_get_name(payload);
    ns = ns ? ns : "";
    if (strcmp(ns, NS_SEALROOM) == 0 && strcmp(name, "identity") == 0) {
        identity_handle_iq(r, iq, payload);
    } else if (strcmp(ns, NS_SEALROOM) == 0 && strcmp(name, "vault") == 0) {
        vault_handle_iq(r, iq, payload);
    } else if (strcmp(ns, NS_DISCO_INFO) == 0 || strcmp(ns, NS_DISCO_ITEMS) == 0) {
        disco_handle(r, NULL, iq, payload);
    } else if (strcmp(ns, NS_PING) == 0 && strcmp(type, "get") == 0) {
        svc_send(r, st_iq_result(iq, svc_jid(r)));
    } else if (strcmp(ns, NS_COMMANDS) == 0 && strcmp(name, "command") == 0) {
        admin_handle_command(r, iq, payload);
    } else {
        svc_error(r, iq, svc_jid(r), "cancel", "service-unavailable", NULL,
                  "this service does not handle that request");
    }
}

static void handle_room_iq(rooms *r, room *rm, xmpp_stanza_t *iq)
{
    const char *type = xmpp_stanza_get_type(iq);
    xmpp_stanza_t *payload = NULL;
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(iq); c; c = xmpp_stanza_get_next(c))
        if (xmpp_stanza_is_tag(c)) {
            payload = c;
            break;
        }
    if (!payload) {
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL, "empty iq");
        return;
    }
    const char *ns = xmpp_stanza_get_ns(payload), *name = xmpp_stanza_get_name(payload);
    ns = ns ? ns : "";
    bool set = strcmp(type, "set") == 0, get = strcmp(type, "get") == 0;
    if (strcmp(ns, NS_SEALROOM) == 0 && set && strcmp(name, "create") == 0)
        chain_handle_create(r, rm, iq, payload);
    else if (strcmp(ns, NS_SEALROOM) == 0 && set && strcmp(name, "roster") == 0)
        chain_handle_update(r, rm, iq, payload);
    else if (strcmp(ns, NS_SEALROOM) == 0 && get && strcmp(name, "chain") == 0)
        chain_handle_fetch(r, rm, iq, payload);
    else if (strcmp(ns, NS_SEALROOM) == 0 && set && strcmp(name, "epoch") == 0)
        epoch_handle_set(r, rm, iq, payload);
    else if (strcmp(ns, NS_SEALROOM) == 0 && get && strcmp(name, "epoch") == 0)
        epoch_handle_get(r, rm, iq, payload);
    else if (strcmp(ns, NS_SEALROOM) == 0 && get && strcmp(name, "bundles") == 0)
        bundles_handle_get(r, rm, iq, payload);
    else if (strcmp(ns, NS_SEALROOM) == 0 && set && strcmp(name, "datakey") == 0)
        datakey_handle_set(r, rm, iq, payload);
    else if (strcmp(ns, NS_SEALROOM) == 0 && get && strcmp(name, "datakeys") == 0)
        datakey_handle_get(r, rm, iq, payload);
    else if (strcmp(ns, NS_KEYS) == 0)
        dmkd_handle_iq(r, rm, iq, payload);
    else if (strcmp(ns, NS_ARCHIVE) == 0 && set && strcmp(name, "token") == 0)
        token_handle_set(r, rm, iq, payload);
    else if (strcmp(ns, NS_ARCHIVE) == 0 && set &&
             (strcmp(name, "check-ok") == 0 || strcmp(name, "check-failed") == 0))
        tokenerase_handle_answer(r, rm, iq, payload);
    else if (strcmp(ns, NS_SEARCH) == 0)
        search_handle_iq(r, rm, iq, payload);
    else if (strcmp(ns, NS_MAM) == 0 && strcmp(name, "query") == 0)
        archive_handle_mam(r, rm, iq, payload);
    else if ((strcmp(ns, NS_DISCO_INFO) == 0 || strcmp(ns, NS_DISCO_ITEMS) == 0) && get)
        disco_handle(r, rm, iq, payload);
    else if (strcmp(ns, NS_PING) == 0 && get)
        svc_send(r, st_iq_result(iq, xmpp_stanza_get_to(iq)));
    else
        svc_error(r, iq, rm->name, "cancel", "service-unavailable", NULL,
                  "rooms do not handle that request");
}

/* A room must exist for everything except <create/>. */
static bool room_exists_or_refuse(rooms *r, room *rm, xmpp_stanza_t *stanza)
{
    if (rm->state == ROOM_READY) return true;
    const char *name = xmpp_stanza_get_name(stanza);
    if (strcmp(name, "presence") == 0) {
        const char *type = xmpp_stanza_get_type(stanza);
        if (type && strcmp(type, "unavailable") == 0) return false;
    }
    svc_error(r, stanza, xmpp_stanza_get_to(stanza), "cancel", "item-not-found", NULL,
              "no such room");
    return false;
}

static void dispatch_room(rooms *r, room *rm, xmpp_stanza_t *stanza, const char *nick)
{
    if (rm->busy || rm->state == ROOM_LOADING) {
        if (!room_enqueue(rm, stanza))
            svc_error(r, stanza, xmpp_stanza_get_to(stanza), "wait", "resource-constraint", NULL,
                      "too many requests wait for this room; try again");
        return;
    }
    const char *name = xmpp_stanza_get_name(stanza);
    const char *type = xmpp_stanza_get_type(stanza);
    if (strcmp(name, "iq") == 0) {
        if (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0)) return;
        xmpp_stanza_t *create = st_child(stanza, "create", NS_SEALROOM);
        if (create && strcmp(type, "set") == 0) {
            chain_handle_create(r, rm, stanza, create);
            return;
        }
        if (!room_exists_or_refuse(r, rm, stanza)) return;
        handle_room_iq(r, rm, stanza);
    } else if (strcmp(name, "presence") == 0) {
        if (type && strcmp(type, "error") == 0) {
            occupant *o = occupant_by_full(rm, xmpp_stanza_get_from(stanza));
            if (o) presence_remove_occupant(r, rm, o, NULL);
            return;
        }
        if (!room_exists_or_refuse(r, rm, stanza)) return;
        presence_handle(r, rm, stanza, nick);
    } else if (strcmp(name, "message") == 0) {
        if (type && strcmp(type, "error") == 0 && r->cfg->fanout_jid &&
            strcmp(xmpp_stanza_get_from(stanza), r->cfg->fanout_jid) == 0) {
            log_error(rm->name, "the fan-out service %s refused a batch: is "
                      "mod_sealroom_fanout loaded there and this component trusted?",
                      r->cfg->fanout_jid);
            return;
        }
        if (type && strcmp(type, "error") == 0) {
            /* A bounce from an occupant's session means it is gone (XEP-0045 §7.2.x practice). */
            occupant *o = rm->state == ROOM_READY ? occupant_by_full(rm, xmpp_stanza_get_from(stanza)) : NULL;
            if (o) presence_remove_occupant(r, rm, o, NULL);
            return;
        }
        if (!room_exists_or_refuse(r, rm, stanza)) return;
        if (type && strcmp(type, "groupchat") == 0 && !*nick)
            archive_handle_groupchat(r, rm, stanza);
        else
            svc_error(r, stanza, xmpp_stanza_get_to(stanza), "modify", "bad-request", NULL,
                      "only groupchat messages to the room's bare JID are accepted");
    }
}

void rooms_handle_stanza(rooms *r, xmpp_stanza_t *stanza)
{
    const char *name = xmpp_stanza_get_name(stanza);
    const char *to = xmpp_stanza_get_to(stanza);
    const char *from = xmpp_stanza_get_from(stanza);
    if (!name || !to || !from) return;
    bool is_iq = strcmp(name, "iq") == 0;
    if (is_iq) {
        const char *type = xmpp_stanza_get_type(stanza);
        if (!type || !xmpp_stanza_get_id(stanza)) {
            if (type && (strcmp(type, "get") == 0 || strcmp(type, "set") == 0))
                svc_error(r, stanza, to, "modify", "bad-request", NULL, "iq without id");
            return;
        }
        if (strcmp(type, "result") == 0 || strcmp(type, "error") == 0) return;
    }
    sr_jid dest;
    sr_jid sender;
    if (!sr_jid_parse(&dest, to) || strcmp(dest.domain, svc_jid(r)) != 0) return;
    if (!sr_jid_parse(&sender, from)) {
        svc_error(r, stanza, to, "modify", "jid-malformed", NULL, "malformed sender JID");
        return;
    }
    if (!*dest.local) {
        if (is_iq) handle_service_iq(r, stanza);
        return;
    }
    char bare[SR_BARE_JID_MAX];
    if (!sr_jid_bare(bare, sizeof bare, &dest)) return;
    room *rm = room_get_or_load(r, bare);
    if (!rm) {
        svc_error(r, stanza, to, "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    dispatch_room(r, rm, stanza, dest.resource);
}

void rooms_link_state(rooms *r, bool up)
{
    log_info(svc_jid(r), "link %s", up ? "up" : "down");
}

/* After a start-up: load the rooms with an unfinished run, which resume it. */
static void runs_found(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    rooms *r = arg;
    if (!ok || nres != 1) {
        log_error(NULL, "looking up unfinished key-distribution runs failed: %s", err ? err : "?");
        r->dmkd_resume_scanned = false;
        return;
    }
    for (int i = 0; i < PQntuples(res[0]); i++) room_get_or_load(r, PQgetvalue(res[0], i, 0));
}

int rooms_pollfd(const rooms *r)
{
    return search_pollfd(r);
}

void rooms_tick(rooms *r, long now_ms)
{
    r->now_ms = now_ms;
    fanout_flush(r);
    tokenerase_tick(r, now_ms);
    search_tick(r);
    search_purge_tick(r, now_ms);
    if (!r->dmkd_resume_scanned && db_is_ready(r->db)) {
        r->dmkd_resume_scanned = true;
        db_read1(r->db, "SELECT r.name FROM dmkd_runs d JOIN rooms r USING (room_id)", 0, NULL,
                 NULL, NULL, runs_found, r);
    }
    if (now_ms - r->last_dmkd_tick_ms >= 100) {
        r->last_dmkd_tick_ms = now_ms;
        dmkd_tick(r, now_ms);
    }
    if (now_ms - r->last_nudge_scan_ms >= 1000) {
        r->last_nudge_scan_ms = now_ms;
        epoch_nudge(r, now_ms);
        vault_limits_sweep(r, now_ms);
    }
    if (now_ms - r->last_evict_ms < 10000) return;
    r->last_evict_ms = now_ms;
    for (size_t i = 0; i < r->nbuckets; i++) {
        room **pp = &r->buckets[i];
        while (*pp) {
            room *rm = *pp;
            /* A read in flight keeps the room busy; one that is LOADING but
             * not busy only waits to be read again and may go too. */
            if (!rm->refs && !rm->busy && !rm->queue && !rm->occupants && !rm->run &&
                rm->run_due_ms < 0 &&
                now_ms - rm->last_used_ms > ROOM_IDLE_EVICT_MS) {
                *pp = rm->hnext;
                room_free(rm);
                r->nrooms--;
                continue;
            }
            pp = &rm->hnext;
        }
    }
}

bool rooms_busy(const rooms *r) { return r->writes_in_flight > 0; }
