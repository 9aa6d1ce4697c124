/* The room archive: groupchat messages from occupants are stored (sealed
 * payload only — the component never decrypts) and, once committed,
 * reflected to the present occupants with an XEP-0359 stanza-id; members
 * page through history with XEP-0313 (MAM) and XEP-0059 (RSM). A resend with
 * the same origin-id stores nothing and is answered with the original
 * stanza-id, so a client that lost its link can resend blindly. Before
 * storing, the component reads the payload's clear framing (e2e message
 * format v1): it must name a data key the sender published for the room's
 * current epoch while that epoch is neither stale nor expired, and a roster
 * version that exists. A resend is recognised before that check, so a
 * message stored before a rotation is still acknowledged.
 *
 * Encrypted search (search-wire §4) rides here too: a message's <index/>
 * (entry labels for the sender's open batch) is stored in the message's own
 * statement, so a message and its entries commit together or not at all, and
 * a message whose batch is not open, not the sending session's or not of the
 * room's index generation is refused whole. Retractions (XEP-0424) empty a
 * message's payload, keep its row, and make MAM serve a tombstone. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2echeck.h"
#include "jid.h"
#include "log.h"
#include "service.h"
#include "ssecore.h"
#include "stanza.h"

#define ORIGIN_ID_MAX 128
#define LABEL_SQL SQL_NUMBER(SSE_LABEL_BYTES)

/* The one statement that stores a groupchat message ($1 room, $2 sender,
 * $3 nick, $4 origin-id, $5 payload, $6 epoch, $7 data-key id, and with an
 * <index/> $8 batch, $9 the sending session, $10 the labels; NULL without
 * one). Exported so that tests/bench/bench_search.c times exactly this. See
 * archive_handle_groupchat for what each part guards. It is sent as a
 * prepared statement (db_unit_add_prepared): parsing and planning this WITH
 * query cost the server about twice as much as running it. */
const char archive_store_sql[] =
    "WITH dup AS (SELECT seq, nick, payload FROM messages WHERE room_id = $1 "
    "AND sender = $2 AND origin_id = $4), "
    "b AS (SELECT gen FROM search_batches WHERE room_id = $1 AND batch = $8::bigint "
    "AND owner = $9::text AND state = 0 AND entries < " SQL_NUMBER(SEARCH_BATCH_ENTRIES) " "
    "AND NOT EXISTS (SELECT 1 FROM dup) FOR UPDATE), "
    "r AS (UPDATE rooms SET last_seq = last_seq + 1 WHERE room_id = $1 "
    "AND NOT EXISTS (SELECT 1 FROM dup) AND current_epoch = $6 "
    "AND EXISTS (SELECT 1 FROM datakeys WHERE room_id = $1 AND dkid = $7 "
    "AND sender = $2 AND created_epoch = $6) "
    "AND ($8::bigint IS NULL OR (NOT search_need_gen AND "
    "search_gen = (SELECT gen FROM b))) RETURNING last_seq), "
    "ins AS (INSERT INTO messages (room_id, seq, sender, nick, origin_id, payload) "
    "SELECT $1, r.last_seq, $2, $3, $4, $5 FROM r "
    "ON CONFLICT (room_id, sender, origin_id) WHERE origin_id IS NOT NULL "
    "DO NOTHING RETURNING seq), "
    "ent AS (INSERT INTO search_pending (room_id, batch, seq, labels) "
    "SELECT $1, $8::bigint, ins.seq, $10::bytea FROM ins WHERE $10::bytea IS NOT NULL), "
    /* Not state: naming it would make PostgreSQL prepare the WHEN
     * conditions of the batches' UPDATE OF state triggers in every store
     * (sql/011 says why that costs). A full batch is refused by b instead. */
    "bu AS (UPDATE search_batches SET entries = entries + length($10::bytea) / " LABEL_SQL " "
    "WHERE room_id = $1 AND batch = $8::bigint AND EXISTS (SELECT 1 FROM ins)), "
    /* Refused for another reason (epoch, data key): no later
     * entry of the batch may land behind this one's gap. */
    "sealref AS (UPDATE search_batches SET state = 1 WHERE room_id = $1 "
    "AND batch = $8::bigint AND owner = $9::text AND state = 0 "
    "AND NOT EXISTS (SELECT 1 FROM dup) AND NOT EXISTS (SELECT 1 FROM r) "
    "AND EXISTS (SELECT 1 FROM b, rooms x WHERE x.room_id = $1 "
    "AND x.search_gen = b.gen AND NOT x.search_need_gen)) "
    "SELECT seq, NULL::text, NULL::bytea, true, true FROM ins "
    "UNION ALL SELECT seq, nick, payload, false, true FROM dup "
    "UNION ALL SELECT NULL, NULL, NULL, NULL, $8::bigint IS NULL OR EXISTS "
    "(SELECT 1 FROM b, rooms x WHERE x.room_id = $1 AND x.search_gen = b.gen "
    "AND NOT x.search_need_gen) WHERE NOT EXISTS (SELECT 1 FROM dup) "
    "AND NOT EXISTS (SELECT 1 FROM r)";

typedef struct store_op {
    rooms *r;
    room *rm;
    char *sender_full;
    char *sender_bare;
    char *nick;
    char *client_id;   /* the sender's message id, echoed back to it */
    char *origin_id;   /* NULL when the client sent none */
    char *payload_b64; /* as received, re-emitted verbatim after validation */
    uint64_t epoch;    /* the current epoch when the message was checked */
    const char *unusable; /* why that epoch takes no messages (static), or NULL */
    size_t entries;    /* index entries the message carries (0: none) */
    uint64_t batch;    /* the batch they are for (0: none) */
} store_op;

static void store_op_free(store_op *op)
{
    free(op->sender_full);
    free(op->sender_bare);
    free(op->nick);
    free(op->client_id);
    free(op->origin_id);
    free(op->payload_b64);
    free(op);
}

xmpp_stanza_t *archive_build_message(xmpp_ctx_t *ctx, const char *room_name, const char *nick,
                                     const char *sender_bare, const char *payload_b64,
                                     const char *retracted_stamp, const char *origin_id,
                                     const char *stanza_id, bool with_sid)
{
    char from[SR_JID_MAX + 2];
    snprintf(from, sizeof from, "%s/%s", room_name, nick);
    xmpp_stanza_t *m = st_new(ctx, "message", "groupchat", from, NULL, NULL);
    if (!m) return NULL;
    bool ok;
    if (payload_b64) {
        ok = st_add_text(m, "body", NULL, SEALROOM_FALLBACK_BODY) &&
             st_add_text(m, "sealed", NS_SEALROOM, payload_b64);
    } else {
        /* The tombstone of XEP-0424 §5: the retraction itself is not
         * archived, so the id is the retracted message's own. */
        xmpp_stanza_t *t = st_add(m, "retracted", NS_RETRACT);
        ok = t != NULL;
        if (t) {
            xmpp_stanza_set_attribute(t, "id", stanza_id);
            xmpp_stanza_set_attribute(t, "stamp", retracted_stamp);
        }
    }
    if (ok && origin_id) {
        xmpp_stanza_t *o = st_add(m, "origin-id", NS_SID);
        ok = o != NULL;
        if (o) xmpp_stanza_set_attribute(o, "id", origin_id);
    }
    if (ok && with_sid) {
        xmpp_stanza_t *s = st_add(m, "stanza-id", NS_SID);
        ok = s != NULL;
        if (s) {
            xmpp_stanza_set_attribute(s, "by", room_name);
            xmpp_stanza_set_attribute(s, "id", stanza_id);
        }
    }
    if (ok) {
        xmpp_stanza_t *x = st_add(m, "x", NS_MUC_USER);
        xmpp_stanza_t *item = x ? st_add(x, "item", NULL) : NULL;
        ok = item != NULL;
        if (item) xmpp_stanza_set_attribute(item, "jid", sender_bare);
    }
    if (!ok) {
        xmpp_stanza_release(m);
        return NULL;
    }
    return m;
}

/* Deliver a stored message to every occupant. The sender's copy carries its
 * own message id (it matches its reflection by id as well as origin-id) and
 * goes at once. With a fan-out service configured the others' copies are
 * queued for fanout.c, which hands the XMPP server each room's messages of
 * one loop turn as a single stanza; otherwise each copy goes now. */
static void reflect(rooms *r, room *rm, xmpp_stanza_t *m, const char *sender_full,
                    const char *client_id, const char *seq, size_t payload_len)
{
    bool use_fanout = r->cfg->fanout_jid && *r->cfg->fanout_jid;
    if (use_fanout) {
        /* The sender's copy rides in the batch too (with its own id), so
         * every session sees the room's messages in archive order. */
        xmpp_stanza_del_attribute(m, "to");
        xmpp_stanza_set_id(m, seq);
        fanout_queue(r, rm, m, sender_full, client_id ? client_id : seq, payload_len);
        return;
    }
    for (occupant *o = rm->occupants; o; o = o->next) {
        bool is_sender = strcmp(o->full_jid, sender_full) == 0;
        xmpp_stanza_set_to(m, o->full_jid);
        xmpp_stanza_set_id(m, is_sender && client_id ? client_id : seq);
        link_send(r->link, m);
    }
}

/* An error to the sender's session about its message (the request itself
 * is gone by now: rebuild enough of it to address the error). */
static void refuse_message(rooms *r, room *rm, const char *sender_full, const char *client_id,
                           const char *etype, const char *cond, const char *app, const char *text)
{
    xmpp_stanza_t *fake =
        st_new(link_ctx(r->link), "message", "groupchat", sender_full, rm->name, client_id);
    if (fake) {
        svc_error(r, fake, rm->name, etype, cond, app, text);
        xmpp_stanza_release(fake);
    }
}

static void refuse_later(rooms *r, room *rm, const store_op *op, const char *etype,
                         const char *cond, const char *app, const char *text)
{
    refuse_message(r, rm, op->sender_full, op->client_id, etype, cond, app, text);
}

static void seal_done(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    rooms *r = arg;
    (void)res;
    (void)nres;
    r->writes_in_flight--;
    if (!ok) log_warn(svc_jid(r), "a refused message's search batch not sealed: %s", err ? err : "?");
}

/* A message carrying entries of batch was refused before the store
 * statement: seal the batch (xep "Writing"). Probes stop at the first
 * missing counter, so a later message of the batch, already on its way,
 * must not be stored behind the gap this one leaves; it is refused with
 * <batch-sealed/> and indexed again under a new batch. Queued on the same
 * connection as the stores, so it runs before any later message's. */
static void seal_refused_batch(rooms *r, room *rm, const char *sender_full, uint64_t batch)
{
    if (batch == 0) return;
    char id[24], b[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(b, sizeof b, "%" PRIu64, batch);
    const char *p[3] = {id, b, sender_full};
    db_unit *u = db_unit_new();
    if (!u || db_unit_add(u,
                          "UPDATE search_batches SET state = 1 WHERE room_id = $1 "
                          "AND batch = $2::bigint AND owner = $3 AND state = 0",
                          3, p, NULL, NULL) != 0) {
        db_unit_free(u);
        log_warn(rm->name, "out of memory: batch %" PRIu64 " of a refused message not sealed",
                 batch);
        return;
    }
    r->writes_in_flight++;
    db_submit(r->db, u, true, seal_done, r);
}

/* row 0 of res: seq, nick, payload, fresh — the stored message or, for a
 * resend, the original. */
static void deliver(rooms *r, room *rm, store_op *op, const PGresult *res)
{
    xmpp_ctx_t *ctx = link_ctx(r->link);
    bool fresh = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
    const char *seq = PQgetvalue(res, 0, 0), *nick = op->nick;
    char *payload = op->payload_b64;
    char *stored_payload = NULL;
    if (!fresh) {
        nick = PQgetvalue(res, 0, 1);
        size_t len = 0;
        unsigned char *raw = svc_bytea_dup(res, 0, 2, &len);
        stored_payload = raw ? st_b64_encode(raw, len) : NULL;
        free(raw);
        if (stored_payload) payload = stored_payload;
    }
    xmpp_stanza_t *m = archive_build_message(ctx, rm->name, nick, op->sender_bare, payload, NULL,
                                             op->origin_id, seq, true);
    if (m) {
        if (fresh) {
            r->stats.messages_stored++;
            r->stats.search_entries += op->entries;
            reflect(r, rm, m, op->sender_full, op->client_id, seq, strlen(payload));
        } else {
            r->stats.messages_deduplicated++;
            log_debug(rm->name, "duplicate origin-id from %s answered with %s", op->sender_bare,
                      seq);
            xmpp_stanza_set_to(m, op->sender_full);
            if (op->client_id) xmpp_stanza_set_id(m, op->client_id);
            link_send(r->link, m);
        }
        xmpp_stanza_release(m);
    }
    free(stored_payload);
}

static void stored(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    store_op *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    r->writes_in_flight--;
    room_release(r, rm);
    xmpp_ctx_t *ctx = link_ctx(r->link);
    if (ok && nres >= 1 && PQntuples(res[0]) == 1 && PQgetisnull(res[0], 0, 3) &&
        strcmp(PQgetvalue(res[0], 0, 4), "t") != 0) {
        /* Its batch takes no entries (any more): the sender takes a new
         * batch and sends the message again with the same origin-id. */
        refuse_message(r, rm, op->sender_full, op->client_id, "modify", "not-acceptable",
                       "batch-sealed",
                       "the index batch is not open for this session in the room's current "
                       "generation: take a new batch and send the message again");
        store_op_free(op);
        return;
    }
    if (ok && nres >= 1 && PQntuples(res[0]) == 1 && PQgetisnull(res[0], 0, 3)) {
        /* The table disagrees with the cache about the epoch or the key
         * (another instance rotated it): refuse, and read the room again. */
        rm->state = ROOM_LOADING;
        refuse_later(r, rm, op, "modify", "not-acceptable", "stale-epoch",
                     "the room has moved to another epoch; fetch it and publish a new data key");
        store_op_free(op);
        return;
    }
    if (!ok || nres < 1) {
        log_error(rm->name, "message from %s not stored: %s", op->sender_bare, err ? err : "?");
        /* Tell the sender that nobody received it, so it can send it again. */
        xmpp_stanza_t *fake = st_new(ctx, "message", "groupchat", op->sender_full, rm->name,
                                     op->client_id);
        if (fake) {
            svc_error(r, fake, rm->name, "wait", "internal-server-error", NULL,
                      "the message could not be stored; it was not delivered; try again");
            xmpp_stanza_release(fake);
        }
        store_op_free(op);
        return;
    }
    /* One row: either the fresh insert (fresh = t) or the earlier message with
     * the same origin-id (fresh = f). None: a concurrent duplicate won the race;
     * the sender's retry will find it. */
    if (PQntuples(res[0]) != 1) {
        xmpp_stanza_t *fake = st_new(ctx, "message", "groupchat", op->sender_full, rm->name,
                                     op->client_id);
        if (fake) {
            svc_error(r, fake, rm->name, "wait", "internal-server-error", NULL,
                      "the message raced with its own resend; try again");
            xmpp_stanza_release(fake);
        }
        store_op_free(op);
        return;
    }
    deliver(r, rm, op, res[0]);
    store_op_free(op);
}

/* A message whose data key is not usable now: answer a resend of a stored
 * message with the original, refuse anything else saying why. res[0]: the
 * earlier copy by origin-id (maybe none); res[1]: the data key's row. */
static void checked(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    store_op *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    room_release(r, rm);
    /* Refused (not a resend): the batch it carried entries for is sealed. */
    if (!(ok && nres == 2 && PQntuples(res[0]) == 1))
        seal_refused_batch(r, rm, op->sender_full, op->batch);
    if (!ok || nres != 2) {
        log_error(rm->name, "message check for %s failed: %s", op->sender_bare, err ? err : "?");
        refuse_later(r, rm, op, "wait", "internal-server-error", NULL,
                     "the message could not be checked; it was not delivered; try again");
    } else if (PQntuples(res[0]) == 1) {
        deliver(r, rm, op, res[0]);
    } else {
        char text[200];
        bool known = PQntuples(res[1]) == 1;
        uint64_t key_epoch = known ? strtoull(PQgetvalue(res[1], 0, 0), NULL, 10) : 0;
        if (!known || strcmp(PQgetvalue(res[1], 0, 1), op->sender_bare) != 0)
            snprintf(text, sizeof text,
                     "unknown data key: publish it (<datakey/>) for epoch %" PRIu64 " first",
                     op->epoch);
        else if (key_epoch != op->epoch)
            snprintf(text, sizeof text,
                     "old data key: it belongs to epoch %" PRIu64 ", the room is at epoch %" PRIu64
                     "; publish a new one",
                     key_epoch, op->epoch);
        else
            snprintf(text, sizeof text, "the current epoch %" PRIu64 " is %s: start a new epoch",
                     op->epoch, op->unusable ? op->unusable : "unusable");
        refuse_later(r, rm, op, "modify", "not-acceptable", "stale-epoch", text);
    }
    store_op_free(op);
}

/* ---- retraction (XEP-0424 v1) ---- */

typedef struct retract_op {
    rooms *r;
    room *rm;
    char *sender_full, *sender_bare, *nick, *client_id, *origin_id;
    char seq[24];
} retract_op;

static void retract_op_free(retract_op *op)
{
    free(op->sender_full);
    free(op->sender_bare);
    free(op->nick);
    free(op->client_id);
    free(op->origin_id);
    free(op);
}

/* res[0]: the message's sender (NULL: no such message), whether it was
 * retracted now or before. */
static void retracted(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    retract_op *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    r->writes_in_flight--;
    room_release(r, rm);
    if (!ok || nres != 1 || PQntuples(res[0]) != 1) {
        log_error(rm->name, "retraction by %s failed: %s", op->sender_bare, err ? err : "?");
        refuse_message(r, rm, op->sender_full, op->client_id, "wait", "internal-server-error",
                       NULL, "the message could not be retracted; try again");
    } else if (PQgetisnull(res[0], 0, 0)) {
        refuse_message(r, rm, op->sender_full, op->client_id, "cancel", "item-not-found", NULL,
                       "no message with that stanza-id in this room");
    } else if (strcmp(PQgetvalue(res[0], 0, 1), "t") != 0) {
        refuse_message(r, rm, op->sender_full, op->client_id, "auth", "forbidden", NULL,
                       "only the sender of a message may retract it");
    } else {
        /* Everyone present learns of it (a repeat too: its sender may have
         * missed the first reflection). */
        xmpp_ctx_t *ctx = link_ctx(r->link);
        char from[SR_JID_MAX + 2], id[40];
        snprintf(from, sizeof from, "%s/%s", rm->name, op->nick);
        snprintf(id, sizeof id, "retract-%s", op->seq);
        xmpp_stanza_t *m = st_new(ctx, "message", "groupchat", from, NULL, NULL);
        xmpp_stanza_t *re = m ? st_add(m, "retract", NS_RETRACT) : NULL;
        xmpp_stanza_t *fb = re ? st_add(m, "fallback", "urn:xmpp:fallback:0") : NULL;
        xmpp_stanza_t *oid = fb && op->origin_id ? st_add(m, "origin-id", NS_SID) : NULL;
        xmpp_stanza_t *x = fb && (oid || !op->origin_id) ? st_add(m, "x", NS_MUC_USER) : NULL;
        xmpp_stanza_t *item = x ? st_add(x, "item", NULL) : NULL;
        if (item && st_add_text(m, "body", NULL,
                                "/me retracted a previous message, but it's unsupported by your "
                                "client.")) {
            xmpp_stanza_set_attribute(re, "id", op->seq);
            xmpp_stanza_set_attribute(fb, "for", NS_RETRACT);
            if (oid) xmpp_stanza_set_attribute(oid, "id", op->origin_id);
            xmpp_stanza_set_attribute(item, "jid", op->sender_bare);
            r->stats.retractions++;
            log_debug(rm->name, "%s retracted message %s", op->sender_bare, op->seq);
            reflect(r, rm, m, op->sender_full, op->client_id, id, 0);
        } else {
            log_error(rm->name, "message %s retracted, but out of memory reflecting it", op->seq);
        }
        if (m) xmpp_stanza_release(m);
    }
    retract_op_free(op);
}

/* <retract id='stanza-id'/>: from the message's own sender (bare JID),
 * whose payload then becomes zero bytes; the row and its sequence number
 * stay, and search evaluation skips it from now on. */
static void retract_message(rooms *r, room *rm, xmpp_stanza_t *msg, const occupant *o,
                            xmpp_stanza_t *el)
{
    const char *to = xmpp_stanza_get_to(msg);
    uint64_t seq;
    if (!svc_parse_u64(xmpp_stanza_get_attribute(el, "id"), &seq) || seq == 0) {
        svc_error(r, msg, to, "modify", "bad-request", NULL,
                  "retract needs the id this room gave the message (its stanza-id)");
        return;
    }
    xmpp_stanza_t *oid = st_child(msg, "origin-id", NS_SID);
    const char *origin = oid ? xmpp_stanza_get_attribute(oid, "id") : NULL;
    if (origin && (!*origin || strlen(origin) > ORIGIN_ID_MAX)) origin = NULL;
    const char *cid = xmpp_stanza_get_id(msg);
    retract_op *op = calloc(1, sizeof *op);
    db_unit *u = db_unit_new();
    if (!op || !u || !(op->sender_full = strdup(o->full_jid)) ||
        !(op->sender_bare = strdup(o->bare_jid)) || !(op->nick = strdup(o->nick)) ||
        (cid && !(op->client_id = strdup(cid))) || (origin && !(op->origin_id = strdup(origin))))
        goto oom;
    op->r = r;
    op->rm = rm;
    snprintf(op->seq, sizeof op->seq, "%" PRIu64, seq);
    char id[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    const char *p[3] = {id, op->seq, o->bare_jid};
    if (db_unit_add(u,
                    "WITH m AS (SELECT sender FROM messages WHERE room_id = $1 AND seq = $2), "
                    "u AS (UPDATE messages SET retracted_at = coalesce(retracted_at, now()), "
                    "payload = ''::bytea WHERE room_id = $1 AND seq = $2 AND sender = $3 "
                    "RETURNING 1) "
                    "SELECT (SELECT sender FROM m), EXISTS (SELECT 1 FROM u)",
                    3, p, NULL, NULL) != 0)
        goto oom;
    rm->refs++;
    r->writes_in_flight++;
    db_submit(r->db, u, true, retracted, op);
    return;
oom:
    db_unit_free(u);
    if (op) retract_op_free(op);
    svc_error(r, msg, to, "wait", "resource-constraint", NULL, "out of memory");
}

void archive_handle_groupchat(rooms *r, room *rm, xmpp_stanza_t *msg)
{
    const char *from = xmpp_stanza_get_from(msg);
    const char *to = xmpp_stanza_get_to(msg);
    occupant *o = occupant_by_full(rm, from);
    if (!o) {
        svc_error(r, msg, to, "modify", "not-acceptable", NULL,
                  "only occupants may send to the room; join it first");
        return;
    }
    if (!sr_roster_find(&rm->roster, o->bare_jid)) {
        svc_error(r, msg, to, "auth", "forbidden", "not-member", "you are not a member");
        return;
    }
    xmpp_stanza_t *retract = st_child(msg, "retract", NS_RETRACT);
    if (retract) {
        retract_message(r, rm, msg, o, retract);
        return;
    }
    xmpp_stanza_t *sealed = st_child(msg, "sealed", NS_SEALROOM);
    if (!sealed) {
        svc_error(r, msg, to, "modify", "not-acceptable", "sealed-required",
                  st_child(msg, "sealed", NULL)
                      ? "<sealed/> must be in namespace urn:xmpp:sealroom:0"
                      : "this room accepts only sealed (encrypted) payloads");
        return;
    }
    const char *b64 = st_text(sealed);
    size_t limit = (size_t)r->cfg->max_payload_bytes;
    size_t b64len = strlen(b64);
    /* The length check alone cannot tell limit+1 or limit+2 decoded bytes
     * from limit (same number of base64 quads): decode into room for a whole
     * last quad and compare the decoded size too. */
    size_t cap = (limit + 2) / 3 * 3;
    unsigned char *raw = b64len > (limit + 2) / 3 * 4 ? NULL : malloc(cap + 1);
    long rawlen = raw ? st_b64_decode(raw, cap, b64) : -1;
    if (b64len > (limit + 2) / 3 * 4 || rawlen > (long)limit) {
        char text[96];
        free(raw);
        snprintf(text, sizeof text, "sealed payload larger than %zu bytes", limit);
        svc_error(r, msg, to, "modify", "policy-violation", "too-large", text);
        return;
    }
    if (rawlen <= 0) {
        free(raw);
        if (raw)
            svc_error(r, msg, to, "modify", "bad-request", NULL,
                      "sealed payload must be non-empty base64");
        else
            svc_error(r, msg, to, "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    const char *origin = NULL;
    xmpp_stanza_t *oid = st_child(msg, "origin-id", NS_SID);
    if (oid) {
        origin = xmpp_stanza_get_attribute(oid, "id");
        if (!origin || !*origin || strlen(origin) > ORIGIN_ID_MAX) {
            free(raw);
            svc_error(r, msg, to, "modify", "bad-request", NULL,
                      "origin-id needs an id of 1 to 128 characters");
            return;
        }
    }
    /* The index is checked before anything is stored: a bad one refuses
     * the message, which its sender can then send again without it. */
    uint64_t batch = 0;
    unsigned char *labels = NULL;
    size_t labels_len = 0;
    xmpp_stanza_t *index = st_child(msg, "index", NS_SEARCH);
    if (index) {
        const char *why =
            search_parse_index(index, r->cfg->search_max_entries, &batch, &labels, &labels_len);
        if (why) {
            free(raw);
            if (why == search_nomem)
                svc_error(r, msg, to, "wait", "resource-constraint", NULL, why);
            else
                svc_error(r, msg, to, "modify", "bad-request", NULL, why);
            return;
        }
    }
    unsigned char dkid[EC_DKID_BYTES];
    uint64_t payload_rv = 0;
    if (!ec_payload_parse(raw, (size_t)rawlen, dkid, &payload_rv)) {
        free(raw);
        free(labels);
        seal_refused_batch(r, rm, from, batch);
        svc_error(r, msg, to, "modify", "bad-request", "bad-payload",
                  "the sealed payload is not e2e message format v1 (version byte 1, at least "
                  "129 bytes)");
        return;
    }
    if (payload_rv > rm->roster.version) {
        char text[128];
        free(raw);
        free(labels);
        seal_refused_batch(r, rm, from, batch);
        snprintf(text, sizeof text,
                 "the payload names roster version %" PRIu64 "; the roster is at %" PRIu64,
                 payload_rv, rm->roster.version);
        svc_error(r, msg, to, "modify", "bad-request", "bad-payload", text);
        return;
    }
    const char *unusable = epoch_unusable(r, rm);
    const char *owner = datakey_sender(rm, dkid);
    bool key_ok = !unusable && owner && strcmp(owner, o->bare_jid) == 0;
    store_op *op = calloc(1, sizeof *op);
    db_unit *u = db_unit_new();
    const char *cid = xmpp_stanza_get_id(msg);
    if (!op || !u || !(op->sender_full = strdup(from)) || !(op->sender_bare = strdup(o->bare_jid)) ||
        !(op->nick = strdup(o->nick)) || !(op->payload_b64 = strdup(b64)) ||
        (cid && !(op->client_id = strdup(cid))) || (origin && !(op->origin_id = strdup(origin))))
        goto oom;
    char id[24], epoch[24], batch_s[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(epoch, sizeof epoch, "%" PRIu64, rm->current_epoch);
    snprintf(batch_s, sizeof batch_s, "%" PRIu64, batch);
    op->epoch = rm->current_epoch;
    op->entries = labels_len / SSE_LABEL_BYTES;
    op->batch = batch;
    op->unusable = unusable;
    op->r = r;
    op->rm = rm;
    if (!key_ok) {
        /* Not storable now; one read tells a resend (answered as always)
         * from a refusal, and why the key does not do. */
        const char *p[3] = {id, o->bare_jid, origin};
        const char *q[2] = {id, (const char *)dkid};
        int ql[2] = {-1, EC_DKID_BYTES}, qf[2] = {0, 1};
        if (db_unit_add(u,
                        "SELECT seq, nick, payload, false FROM messages WHERE room_id = $1 AND "
                        "sender = $2 AND origin_id = $3",
                        3, p, NULL, NULL) != 0 ||
            db_unit_add(u, "SELECT created_epoch, sender FROM datakeys WHERE room_id = $1 AND dkid = $2",
                        2, q, ql, qf) != 0)
            goto oom;
        free(raw);
        free(labels);
        rm->refs++;
        db_submit(r->db, u, false, checked, op);
        return;
    }
    const char *p[10] = {id,
                         o->bare_jid,
                         o->nick,
                         origin,
                         (const char *)raw,
                         epoch,
                         (const char *)dkid,
                         index ? batch_s : NULL,
                         index ? from : NULL,
                         index ? (const char *)labels : NULL};
    int l[10] = {-1, -1, -1, -1, (int)rawlen, -1, EC_DKID_BYTES, -1, -1, (int)labels_len};
    int f[10] = {0, 0, 0, 0, 1, 0, 1, 0, 0, 1};
    /* One statement stores the message or, for a resend, returns the original:
     * the sequence number is only taken when there is no earlier copy, and
     * only while the table agrees that the data key is the sender's in the
     * current epoch (else one row with fresh NULL: refused).
     *
     * With an index ($8 batch, $9 the sending session, $10 the labels), the
     * message is stored only if that batch is open, the session's, not full
     * (SEARCH_BATCH_ENTRIES) and of the room's generation while no new one
     * is needed; b locks the batch row, so a search or a new keyring
     * sealing it concurrently either waits for this message's entries or
     * has sealed it before they could go in (READ COMMITTED re-checks state
     * on the locked row). The last column of a refusal says whether the
     * batch was the reason. A resend never touches entries. The entries go in as one search_pending row
     * (sql/009), packed into buckets when the batch seals; a label sent
     * twice (by a misbehaving writer only: real labels are PRF outputs of
     * distinct counters, dummies 16 random bytes) is packed twice, and a
     * probe takes the first it finds, so it cannot fail a group commit. */
    if (db_unit_add_prepared(u, archive_store_sql, 10, p, l, f) != 0)
        goto oom;
    free(raw);
    free(labels);
    rm->refs++;
    r->writes_in_flight++;
    db_submit(r->db, u, true, stored, op);
    return;
oom:
    free(raw);
    free(labels);
    db_unit_free(u);
    if (op) store_op_free(op);
    svc_error(r, msg, to, "wait", "resource-constraint", NULL, "out of memory");
}

static bool parse_i64(const char *s, long long *out)
{
    if (!s || !*s || strlen(s) > 18) return false;
    long long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return true;
}

const char *archive_parse_mam(xmpp_stanza_t *query, int default_max, int cap, mam_query *q)
{
    q->start_ms = q->end_ms = 0;
    q->has_start = q->has_end = false;
    q->after = q->before = -1;
    q->before_empty = false;
    q->max = default_max;
    xmpp_stanza_t *form = st_child(query, "x", NS_DATA);
    if (form) {
        for (xmpp_stanza_t *f = xmpp_stanza_get_children(form); f; f = xmpp_stanza_get_next(f)) {
            if (!xmpp_stanza_is_tag(f) || strcmp(xmpp_stanza_get_name(f), "field") != 0) continue;
            const char *var = xmpp_stanza_get_attribute(f, "var");
            xmpp_stanza_t *value = st_child(f, "value", NULL);
            const char *text = value ? st_text(value) : "";
            if (!var) return "form field without var";
            if (strcmp(var, "FORM_TYPE") == 0) {
                if (strcmp(text, NS_MAM) != 0) return "FORM_TYPE must be urn:xmpp:mam:2";
            } else if (strcmp(var, "start") == 0) {
                if (!st_parse_stamp(text, &q->start_ms)) return "start is not an XEP-0082 date-time";
                q->has_start = true;
            } else if (strcmp(var, "end") == 0) {
                if (!st_parse_stamp(text, &q->end_ms)) return "end is not an XEP-0082 date-time";
                q->has_end = true;
            } else {
                return "unsupported filter field (supported: start, end)";
            }
        }
    }
    xmpp_stanza_t *set = st_child(query, "set", NS_RSM);
    if (set) {
        xmpp_stanza_t *max = st_child(set, "max", NULL);
        xmpp_stanza_t *after = st_child(set, "after", NULL);
        xmpp_stanza_t *before = st_child(set, "before", NULL);
        long long v;
        if (max) {
            if (!parse_i64(st_text(max), &v)) return "RSM max must be a non-negative integer";
            q->max = v > cap ? cap : (int)v;
        }
        if (after && !parse_i64(st_text(after), &q->after)) return "RSM after is not an id here";
        if (before) {
            const char *t = st_text(before);
            if (!*t)
                q->before_empty = true;
            else if (!parse_i64(t, &q->before))
                return "RSM before is not an id here";
        }
        if (after && before) return "RSM after and before together are not supported";
    }
    return NULL;
}

typedef struct mam_op {
    rooms *r;
    room *rm;
    xmpp_stanza_t *iq;
    char *queryid;
    mam_query q;
    bool descending;
} mam_op;

static void mam_done(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    mam_op *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    xmpp_ctx_t *ctx = link_ctx(r->link);
    const char *requester = xmpp_stanza_get_from(op->iq);
    if (!ok || nres != 1) {
        log_error(rm->name, "history query failed: %s", err ? err : "?");
        svc_error(r, op->iq, rm->name, "wait", "internal-server-error", NULL,
                  "the archive could not be read; try again");
        goto out;
    }
    int n = PQntuples(res[0]);
    bool complete = n <= op->q.max;
    int shown = complete ? n : op->q.max;
    /* Rows come newest first for a <before/> page; results go out oldest first. */
    const char *first = NULL, *last = NULL;
    for (int k = 0; k < shown; k++) {
        int i = op->descending ? shown - 1 - k : k;
        const char *seq = PQgetvalue(res[0], i, 0);
        bool retracted = !PQgetisnull(res[0], i, 6);
        char *b64 = NULL, tomb[32] = "";
        if (retracted) {
            st_format_stamp(tomb, strtoll(PQgetvalue(res[0], i, 6), NULL, 10));
        } else {
            size_t len = 0;
            unsigned char *raw = svc_bytea_dup(res[0], i, 5, &len);
            b64 = raw ? st_b64_encode(raw, len) : NULL;
            free(raw);
        }
        const char *origin = PQgetisnull(res[0], i, 3) ? NULL : PQgetvalue(res[0], i, 3);
        xmpp_stanza_t *inner =
            b64 || retracted
                ? archive_build_message(ctx, rm->name, PQgetvalue(res[0], i, 2),
                                        PQgetvalue(res[0], i, 1), b64, tomb, origin, seq, false)
                : NULL;
        free(b64);
        xmpp_stanza_t *outer = st_new(ctx, "message", NULL, rm->name, requester, NULL);
        xmpp_stanza_t *result = outer ? st_add(outer, "result", NS_MAM) : NULL;
        xmpp_stanza_t *fwd = result ? st_add(result, "forwarded", NS_FORWARD) : NULL;
        xmpp_stanza_t *delay = fwd ? st_add(fwd, "delay", NS_DELAY) : NULL;
        if (!inner || !delay || xmpp_stanza_add_child_ex(fwd, inner, 0) != XMPP_EOK) {
            if (inner) xmpp_stanza_release(inner);
            if (outer) xmpp_stanza_release(outer);
            svc_error(r, op->iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
            goto out;
        }
        char stamp[32];
        st_format_stamp(stamp, strtoll(PQgetvalue(res[0], i, 4), NULL, 10));
        xmpp_stanza_set_attribute(delay, "stamp", stamp);
        if (op->queryid) xmpp_stanza_set_attribute(result, "queryid", op->queryid);
        xmpp_stanza_set_attribute(result, "id", seq);
        svc_send(r, outer);
        if (!first) first = seq;
        last = seq;
    }
    xmpp_stanza_t *reply = st_iq_result(op->iq, rm->name);
    xmpp_stanza_t *fin = reply ? st_add(reply, "fin", NS_MAM) : NULL;
    xmpp_stanza_t *set = fin ? st_add(fin, "set", NS_RSM) : NULL;
    if (!set) {
        if (reply) xmpp_stanza_release(reply);
        svc_error(r, op->iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        goto out;
    }
    xmpp_stanza_set_attribute(fin, "complete", complete ? "true" : "false");
    if (op->queryid) xmpp_stanza_set_attribute(fin, "queryid", op->queryid);
    if (first) {
        xmpp_stanza_t *fe = st_add_text(set, "first", NULL, first);
        if (fe) xmpp_stanza_set_attribute(fe, "index", "0");
        st_add_text(set, "last", NULL, last);
    }
    svc_send(r, reply);
out:
    room_release(r, rm);
    xmpp_stanza_release(op->iq);
    free(op->queryid);
    free(op);
}

static void mam_form(rooms *r, room *rm, xmpp_stanza_t *iq)
{
    xmpp_stanza_t *reply = st_iq_result(iq, rm->name);
    xmpp_stanza_t *query = reply ? st_add(reply, "query", NS_MAM) : NULL;
    xmpp_stanza_t *x = query ? st_add(query, "x", NS_DATA) : NULL;
    if (!x) {
        if (reply) xmpp_stanza_release(reply);
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    xmpp_stanza_set_attribute(x, "type", "form");
    const char *vars[3] = {"FORM_TYPE", "start", "end"};
    const char *types[3] = {"hidden", "text-single", "text-single"};
    for (int i = 0; i < 3; i++) {
        xmpp_stanza_t *f = st_add(x, "field", NULL);
        if (!f) break;
        xmpp_stanza_set_attribute(f, "var", vars[i]);
        xmpp_stanza_set_attribute(f, "type", types[i]);
        if (i == 0) st_add_text(f, "value", NULL, NS_MAM);
    }
    svc_send(r, reply);
}

void archive_handle_mam(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *query)
{
    char sender[SR_BARE_JID_MAX];
    if (!svc_require_member(r, rm, iq, sender, sizeof sender,
                            "only members may read the room's history")) {
        return;
    }
    if (strcmp(xmpp_stanza_get_type(iq), "get") == 0) {
        mam_form(r, rm, iq);
        return;
    }
    mam_op *op = calloc(1, sizeof *op);
    if (!op) {
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    const char *why = archive_parse_mam(query, r->cfg->mam_default_page, r->cfg->mam_max_page, &op->q);
    if (why) {
        free(op);
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL, why);
        return;
    }
    const char *qid = xmpp_stanza_get_attribute(query, "queryid");
    op->iq = xmpp_stanza_copy(iq);
    if (!op->iq || (qid && !(op->queryid = strdup(qid)))) {
        if (op->iq) xmpp_stanza_release(op->iq);
        free(op);
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    op->r = r;
    op->rm = rm;
    op->descending = op->q.before_empty || op->q.before >= 0;
    rm->refs++;
    char id[24], after[24], before[24], start[24], end[24], limit[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(after, sizeof after, "%lld", op->q.after);
    snprintf(before, sizeof before, "%lld", op->q.before);
    snprintf(start, sizeof start, "%lld", op->q.start_ms);
    snprintf(end, sizeof end, "%lld", op->q.end_ms);
    snprintf(limit, sizeof limit, "%d", op->q.max + 1);
    const char *p[6] = {id,
                        op->q.after >= 0 ? after : NULL,
                        op->q.before >= 0 ? before : NULL,
                        op->q.has_start ? start : NULL,
                        op->q.has_end ? end : NULL,
                        limit};
    const char *sql =
        op->descending
            ? "SELECT seq, sender, nick, origin_id, (extract(epoch FROM stamp) * 1000)::bigint, "
              "payload, (extract(epoch FROM retracted_at) * 1000)::bigint FROM messages WHERE "
              "room_id = $1 AND ($2::bigint IS NULL OR seq > $2) AND "
              "($3::bigint IS NULL OR seq < $3) AND ($4::bigint IS NULL OR stamp >= "
              "to_timestamp($4::bigint / 1000.0)) AND ($5::bigint IS NULL OR stamp <= "
              "to_timestamp($5::bigint / 1000.0)) ORDER BY seq DESC LIMIT $6"
            : "SELECT seq, sender, nick, origin_id, (extract(epoch FROM stamp) * 1000)::bigint, "
              "payload, (extract(epoch FROM retracted_at) * 1000)::bigint FROM messages WHERE "
              "room_id = $1 AND ($2::bigint IS NULL OR seq > $2) AND "
              "($3::bigint IS NULL OR seq < $3) AND ($4::bigint IS NULL OR stamp >= "
              "to_timestamp($4::bigint / 1000.0)) AND ($5::bigint IS NULL OR stamp <= "
              "to_timestamp($5::bigint / 1000.0)) ORDER BY seq ASC LIMIT $6";
    db_read1(r->db, sql, 6, p, NULL, NULL, mam_done, op);
}
