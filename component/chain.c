/* The signed roster chain on the component side: room creation (version 0),
 * roster updates and chain fetches. The component refuses any version that
 * does not follow the rules of xep/sealroom.xml (checked by proto/roster.c, the
 * same code clients verify with), whose added keys are not the JIDs'
 * registered identities, or that arrives from anyone but its signer. A room
 * is marked busy while a version commits, so its stanzas wait and every
 * check sees the state the version will follow. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jid.h"
#include "log.h"
#include "service.h"
#include "stanza.h"

#define CHAIN_FETCH_MAX 100

typedef struct chain_op {
    rooms *r;
    room *rm;
    xmpp_stanza_t *iq;
    sr_roster_version *v;
    bool create;
    unsigned char hash[SR_ROSTER_HASH_BYTES];
} chain_op;

/* Every number parsed here ends up in a PostgreSQL bigint: one that does not
 * fit is a bad request, not a database error. */
static bool parse_u64(const char *s, uint64_t *out)
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

const char *chain_parse_roster(xmpp_stanza_t *el, const char *room_jid, sr_roster_version *v)
{
    memset(v, 0, sizeof *v);
    const char *ns = xmpp_stanza_get_ns(el);
    if (!ns || strcmp(ns, NS_SEALROOM) != 0) return "roster must be in urn:xmpp:sealroom:0";
    const char *room_attr = xmpp_stanza_get_attribute(el, "room");
    if (room_attr) {
        char norm[SR_BARE_JID_MAX];
        if (!sr_jid_normalise_bare(norm, sizeof norm, room_attr) || strcmp(norm, room_jid) != 0)
            return "the roster's room attribute names another room";
    }
    if (strlen(room_jid) >= sizeof v->room) return "room JID too long";
    strcpy(v->room, room_jid);
    if (!parse_u64(xmpp_stanza_get_attribute(el, "version"), &v->version))
        return "version must be a decimal integer";
    const char *prev = xmpp_stanza_get_attribute(el, "prev");
    if (prev) {
        if (!st_b64_decode_exact(v->prev, SR_ROSTER_HASH_BYTES, prev))
            return "prev must be 32 bytes of base64";
    } else if (v->version != 0) {
        return "prev is required after version 0";
    }
    const char *signer = xmpp_stanza_get_attribute(el, "signer");
    if (!signer || !sr_jid_normalise_bare(v->signer, sizeof v->signer, signer))
        return "signer must be a bare JID";
    if (!st_b64_decode_exact(v->sig, SR_SIG_BYTES, xmpp_stanza_get_attribute(el, "sig")))
        return "sig must be 64 bytes of base64";
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(el); c; c = xmpp_stanza_get_next(c)) {
        if (!xmpp_stanza_is_tag(c)) continue;
        const char *cns = xmpp_stanza_get_ns(c);
        if (cns && strcmp(cns, NS_SEALROOM) != 0) return "roster operation in a foreign namespace";
        if (v->nops >= SR_ROSTER_MAX_OPS) return "too many operations (at most 64)";
        sr_roster_op *op = &v->ops[v->nops];
        const char *name = xmpp_stanza_get_name(c);
        const char *jid = xmpp_stanza_get_attribute(c, "jid");
        if (!jid || !sr_jid_normalise_bare(op->jid, sizeof op->jid, jid))
            return "operation needs a bare jid";
        if (strcmp(name, "add") == 0) {
            op->kind = SR_OP_ADD;
            op->role = sr_role_parse(xmpp_stanza_get_attribute(c, "role"));
            if (op->role == SR_ROLE_NONE) return "add needs role member, admin or owner";
            if (!st_b64_decode_exact(op->key, SR_KEY_BYTES, xmpp_stanza_get_attribute(c, "key")))
                return "add needs key, 32 bytes of base64";
        } else if (strcmp(name, "remove") == 0) {
            op->kind = SR_OP_REMOVE;
        } else if (strcmp(name, "role") == 0) {
            op->kind = SR_OP_ROLE;
            op->role = sr_role_parse(xmpp_stanza_get_attribute(c, "role"));
            if (op->role == SR_ROLE_NONE) return "role needs role member, admin or owner";
        } else {
            return "unknown roster operation";
        }
        v->nops++;
    }
    if (v->nops == 0) return "a roster version needs at least one operation";
    return NULL;
}

bool chain_render_roster(xmpp_stanza_t *parent, const sr_roster_version *v)
{
    xmpp_stanza_t *el = st_add(parent, "roster", NS_SEALROOM);
    if (!el) return false;
    char num[24];
    snprintf(num, sizeof num, "%" PRIu64, v->version);
    char *prev = st_b64_encode(v->prev, sizeof v->prev);
    char *sig = st_b64_encode(v->sig, sizeof v->sig);
    bool ok = prev && sig;
    if (ok) {
        xmpp_stanza_set_attribute(el, "room", v->room);
        xmpp_stanza_set_attribute(el, "version", num);
        xmpp_stanza_set_attribute(el, "prev", prev);
        xmpp_stanza_set_attribute(el, "signer", v->signer);
        xmpp_stanza_set_attribute(el, "sig", sig);
    }
    for (unsigned i = 0; ok && i < v->nops; i++) {
        const sr_roster_op *op = &v->ops[i];
        const char *name = op->kind == SR_OP_ADD ? "add" : op->kind == SR_OP_REMOVE ? "remove" : "role";
        xmpp_stanza_t *c = st_add(el, name, NULL);
        if (!c) {
            ok = false;
            break;
        }
        xmpp_stanza_set_attribute(c, "jid", op->jid);
        if (op->kind != SR_OP_REMOVE) xmpp_stanza_set_attribute(c, "role", sr_role_name(op->role));
        if (op->kind == SR_OP_ADD) {
            char *key = st_b64_encode(op->key, sizeof op->key);
            if (!key) {
                ok = false;
                break;
            }
            xmpp_stanza_set_attribute(c, "key", key);
            free(key);
        }
    }
    free(prev);
    free(sig);
    return ok;
}

static void refuse_roster(rooms *r, room *rm, xmpp_stanza_t *iq, sr_roster_err e)
{
    const char *text = sr_roster_err_text(e);
    switch (e) {
    case SR_ROSTER_ERR_STALE:
        svc_error(r, iq, rm->name, "cancel", "conflict", "stale-version", text);
        break;
    case SR_ROSTER_ERR_CHAIN:
        svc_error(r, iq, rm->name, "modify", "not-acceptable", "bad-chain", text);
        break;
    case SR_ROSTER_ERR_SIGNER:
        svc_error(r, iq, rm->name, "auth", "forbidden", "bad-role", text);
        break;
    case SR_ROSTER_ERR_SIGNATURE:
        svc_error(r, iq, rm->name, "modify", "not-acceptable", "bad-signature", text);
        break;
    case SR_ROSTER_ERR_RULE:
        svc_error(r, iq, rm->name, "modify", "not-acceptable", NULL, text);
        break;
    case SR_ROSTER_ERR_NOMEM:
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, text);
        break;
    default:
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL, text);
        break;
    }
}

static void op_free(chain_op *op)
{
    if (!op) return;
    if (op->iq) xmpp_stanza_release(op->iq);
    free(op->v);
    free(op);
}

/* The op is over (committed or refused): let the room run again. */
static void op_finish(chain_op *op)
{
    rooms *r = op->r;
    room *rm = op->rm;
    op_free(op);
    room_op_done(r, rm);
}

static void committed(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    chain_op *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    r->writes_in_flight--;
    if (!ok) {
        bool dup = db_err_sqlstate_is(err, "23505");
        log_warn(rm->name, "roster version %" PRIu64 " not stored: %s", op->v->version,
                 err ? err : "?");
        if (dup)
            svc_error(r, op->iq, rm->name, "cancel", "conflict",
                      op->create ? NULL : "stale-version",
                      op->create ? "the room already exists"
                                 : "another roster version was stored first");
        else
            svc_error(r, op->iq, rm->name, "wait", "internal-server-error", NULL,
                      "the roster version could not be stored; try again");
        /* Another instance may have moved the room on: reload before the next stanza. */
        rm->state = ROOM_LOADING;
        op_finish(op);
        return;
    }
    sr_roster_state before;
    sr_roster_state_init(&before);
    if (!op->create && sr_roster_state_copy(&before, &rm->roster) != SR_ROSTER_OK)
        sr_roster_state_init(&before);
    if (op->create) {
        rm->id = nres > 0 && PQntuples(res[0]) == 1 ? strtoll(PQgetvalue(res[0], 0, 0), NULL, 10) : 0;
        sr_roster_state_free(&rm->roster);
        sr_roster_state_init(&rm->roster);
    }
    sr_roster_err e = sr_roster_apply(&rm->roster, op->v);
    if (e != SR_ROSTER_OK || rm->id <= 0) {
        /* Checked before the write, so this means the cache was wrong: reload. */
        log_error(rm->name, "cache disagrees with a committed roster version; reloading");
        rm->state = ROOM_LOADING;
    } else {
        rm->state = ROOM_READY;
    }
    log_info(rm->name, "roster version %" PRIu64 " by %s (%u ops)", op->v->version, op->v->signer,
             op->v->nops);
    xmpp_stanza_t *reply = st_iq_result(op->iq, rm->name);
    xmpp_stanza_t *head = reply ? st_add(reply, "roster-head", NS_SEALROOM) : NULL;
    char *h = st_b64_encode(op->hash, sizeof op->hash);
    if (head && h) {
        char num[24];
        snprintf(num, sizeof num, "%" PRIu64, op->v->version);
        xmpp_stanza_set_attribute(head, "version", num);
        xmpp_stanza_set_attribute(head, "hash", h);
    }
    free(h);
    svc_send(r, reply);
    if (rm->state == ROOM_READY) epoch_roster_changed(r, rm, op->v);
    if (!op->create && rm->state == ROOM_READY) presence_roster_changed(r, rm, &before);
    sr_roster_state_free(&before);
    op_finish(op);
}

static void submit_write(chain_op *op)
{
    rooms *r = op->r;
    room *rm = op->rm;
    sr_roster_version *v = op->v;
    size_t clen = sr_roster_canonical_len(v);
    unsigned char *canon = malloc(clen);
    db_unit *u = db_unit_new();
    char ver[24], prevver[24], id[24];
    snprintf(ver, sizeof ver, "%" PRIu64, v->version);
    snprintf(prevver, sizeof prevver, "%" PRIu64, v->version ? v->version - 1 : 0);
    snprintf(id, sizeof id, "%lld", rm->id);
    if (!canon || !u || sr_roster_canonical(canon, clen, v) != clen) goto oom;
    int rc = 0;
    if (op->create) {
        const char *p[3] = {rm->name, ver, (const char *)op->hash};
        int l[3] = {-1, -1, SR_ROSTER_HASH_BYTES}, f[3] = {0, 0, 1};
        rc |= db_unit_add(u,
                          "INSERT INTO rooms (name, roster_version, roster_head) VALUES ($1, $2, $3) "
                          "RETURNING room_id",
                          3, p, l, f);
    } else {
        const char *p[4] = {id, ver, (const char *)op->hash, prevver};
        int l[4] = {-1, -1, SR_ROSTER_HASH_BYTES, -1}, f[4] = {0, 0, 1, 0};
        rc |= db_unit_add(u,
                          "UPDATE rooms SET roster_version = $2, roster_head = $3 "
                          "WHERE room_id = $1 AND roster_version = $4",
                          4, p, l, f);
    }
    /* The room id comes from the name so one statement list serves create and update. */
    const char *room_sel = "(SELECT room_id FROM rooms WHERE name = $1)";
    char sql[512];
    {
        snprintf(sql, sizeof sql,
                 "INSERT INTO roster_versions (room_id, version, prev, hash, signer, canonical, "
                 "sig) VALUES (%s, $2, $3, $4, $5, $6, $7)",
                 room_sel);
        const char *p[7] = {rm->name, ver, (const char *)v->prev, (const char *)op->hash,
                            v->signer, (const char *)canon, (const char *)v->sig};
        int l[7] = {-1, -1, SR_ROSTER_HASH_BYTES, SR_ROSTER_HASH_BYTES, -1, (int)clen, SR_SIG_BYTES};
        int f[7] = {0, 0, 1, 1, 0, 1, 1};
        rc |= db_unit_add(u, sql, 7, p, l, f);
    }
    bool membership = false, removal = false;
    for (unsigned i = 0; i < v->nops; i++) {
        const sr_roster_op *o = &v->ops[i];
        membership |= o->kind == SR_OP_ADD || o->kind == SR_OP_REMOVE;
        removal |= o->kind == SR_OP_REMOVE;
        char role[4];
        snprintf(role, sizeof role, "%d", (int)o->role);
        if (o->kind == SR_OP_ADD) {
            snprintf(sql, sizeof sql,
                     "INSERT INTO members (room_id, jid, role, sign_pk, since_version) "
                     "VALUES (%s, $2, $3, $4, $5)",
                     room_sel);
            const char *p[5] = {rm->name, o->jid, role, (const char *)o->key, ver};
            int l[5] = {-1, -1, -1, SR_KEY_BYTES, -1}, f[5] = {0, 0, 0, 1, 0};
            rc |= db_unit_add(u, sql, 5, p, l, f);
        } else if (o->kind == SR_OP_REMOVE) {
            snprintf(sql, sizeof sql, "DELETE FROM members WHERE room_id = %s AND jid = $2",
                     room_sel);
            const char *p[2] = {rm->name, o->jid};
            rc |= db_unit_add(u, sql, 2, p, NULL, NULL);
            snprintf(sql, sizeof sql, "DELETE FROM occupants WHERE room_id = %s AND bare_jid = $2",
                     room_sel);
            rc |= db_unit_add(u, sql, 2, p, NULL, NULL);
        } else {
            snprintf(sql, sizeof sql,
                     "UPDATE members SET role = $3 WHERE room_id = %s AND jid = $2", room_sel);
            const char *p[3] = {rm->name, o->jid, role};
            rc |= db_unit_add(u, sql, 3, p, NULL, NULL);
        }
    }
    if (membership && !op->create) {
        /* Epochs agreed before this version are stale from now on (epoch.c). */
        const char *p[2] = {rm->name, ver};
        rc |= db_unit_add(u, "UPDATE rooms SET membership_version = $2 WHERE name = $1", 2, p, NULL,
                          NULL);
    }
    if (removal && !op->create) {
        /* The removed member holds the search index's generation key: no
         * batch may be taken or written until a keyring brings a new
         * generation (search-wire §3). Nothing to renew without a keyring. */
        const char *p[1] = {rm->name};
        rc |= db_unit_add(u,
                          "UPDATE rooms SET search_need_gen = true WHERE name = $1 "
                          "AND search_gen > 0",
                          1, p, NULL, NULL);
    }
    free(canon);
    canon = NULL;
    if (rc != 0) goto oom;
    r->writes_in_flight++;
    db_submit(r->db, u, true, committed, op);
    return;
oom:
    free(canon);
    db_unit_free(u);
    svc_error(r, op->iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
    op_finish(op);
}

/* Every added key must be the JID's registered identity: read them, then write. */
static void identities_read(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    chain_op *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    if (!ok) {
        log_error(rm->name, "identity lookup failed: %s", err ? err : "?");
        svc_error(r, op->iq, rm->name, "wait", "internal-server-error", NULL,
                  "identity lookup failed; try again");
        op_finish(op);
        return;
    }
    int k = 0;
    for (unsigned i = 0; i < op->v->nops; i++) {
        const sr_roster_op *o = &op->v->ops[i];
        if (o->kind != SR_OP_ADD) continue;
        unsigned char pk[SR_KEY_BYTES];
        char text[SR_BARE_JID_MAX + 80];
        if (k >= nres || PQntuples(res[k]) != 1 ||
            svc_bytea(res[k], 0, 0, pk, sizeof pk) != SR_KEY_BYTES) {
            snprintf(text, sizeof text, "%s has no registered identity key", o->jid);
            svc_error(r, op->iq, rm->name, "modify", "not-acceptable", "unknown-identity", text);
            op_finish(op);
            return;
        }
        if (memcmp(pk, o->key, SR_KEY_BYTES) != 0) {
            snprintf(text, sizeof text, "the key given for %s is not its registered identity key",
                     o->jid);
            svc_error(r, op->iq, rm->name, "modify", "not-acceptable", "unknown-identity", text);
            op_finish(op);
            return;
        }
        k++;
    }
    submit_write(op);
}

static void start_op(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *roster_el, bool create)
{
    chain_op *op = calloc(1, sizeof *op);
    sr_roster_version *v = malloc(sizeof *v);
    if (!op || !v) {
        free(op);
        free(v);
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    op->v = v;
    const char *why = chain_parse_roster(roster_el, rm->name, v);
    if (why) {
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL, why);
        op_free(op);
        return;
    }
    char sender[SR_BARE_JID_MAX];
    if (!svc_sender_bare(iq, sender, sizeof sender) || strcmp(sender, v->signer) != 0) {
        svc_error(r, iq, rm->name, "auth", "forbidden", NULL,
                  "a roster version must be submitted by its signer");
        op_free(op);
        return;
    }
    if (create && v->version != 0) {
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL, "a room starts at version 0");
        op_free(op);
        return;
    }
    sr_roster_state empty;
    sr_roster_state_init(&empty);
    sr_roster_err e = sr_roster_check(create ? &empty : &rm->roster, v);
    if (e != SR_ROSTER_OK) {
        refuse_roster(r, rm, iq, e);
        op_free(op);
        return;
    }
    if (!sr_roster_hash(op->hash, v)) {
        svc_error(r, iq, rm->name, "wait", "internal-server-error", NULL, "hash failed");
        op_free(op);
        return;
    }
    op->iq = xmpp_stanza_copy(iq);
    db_unit *u = db_unit_new();
    if (!op->iq || !u) {
        db_unit_free(u);
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        op_free(op);
        return;
    }
    op->r = r;
    op->rm = rm;
    op->create = create;
    rm->refs++;
    rm->busy = true;
    int adds = 0;
    for (unsigned i = 0; i < v->nops; i++) {
        if (v->ops[i].kind != SR_OP_ADD) continue;
        const char *p[1] = {v->ops[i].jid};
        if (db_unit_add(u, "SELECT sign_pk FROM identities WHERE jid = $1", 1, p, NULL, NULL) != 0) {
            db_unit_free(u);
            svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
            op_finish(op);
            return;
        }
        adds++;
    }
    if (adds == 0) {
        db_unit_free(u);
        submit_write(op);
        return;
    }
    db_submit(r->db, u, false, identities_read, op);
}

void chain_handle_create(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *create)
{
    if (rm->state == ROOM_READY) {
        svc_error(r, iq, rm->name, "cancel", "conflict", NULL, "the room already exists");
        return;
    }
    xmpp_stanza_t *roster_el = st_child(create, "roster", NS_SEALROOM);
    if (!roster_el) {
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                  "create needs a <roster/> version 0 in urn:xmpp:sealroom:0");
        return;
    }
    start_op(r, rm, iq, roster_el, true);
}

void chain_handle_update(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *roster_el)
{
    start_op(r, rm, iq, roster_el, false);
}

typedef struct fetch_op {
    rooms *r;
    room *rm;
    xmpp_stanza_t *iq;
    uint64_t head;
    uint64_t from;
} fetch_op;

static void fetched(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    fetch_op *f = arg;
    rooms *r = f->r;
    room *rm = f->rm;
    sr_roster_version *v = malloc(sizeof *v);
    xmpp_stanza_t *reply = NULL;
    if (!ok || nres != 1 || !v) {
        log_error(rm->name, "chain fetch failed: %s", err ? err : "out of memory");
        svc_error(r, f->iq, rm->name, "wait", "internal-server-error", NULL,
                  "the roster chain could not be read; try again");
        goto out;
    }
    reply = st_iq_result(f->iq, rm->name);
    xmpp_stanza_t *chain = reply ? st_add(reply, "chain", NS_SEALROOM) : NULL;
    if (!chain) goto oom;
    uint64_t last = 0;
    int n = PQntuples(res[0]);
    for (int i = 0; i < n; i++) {
        size_t clen = 0;
        unsigned char *canon = svc_bytea_dup(res[0], i, 1, &clen);
        bool good = canon && sr_roster_from_canonical(v, canon, clen) &&
                    svc_bytea(res[0], i, 2, v->sig, SR_SIG_BYTES) == SR_SIG_BYTES;
        free(canon);
        if (!good) {
            log_error(rm->name, "stored roster version %s does not decode", PQgetvalue(res[0], i, 0));
            svc_error(r, f->iq, rm->name, "wait", "internal-server-error", NULL,
                      "a stored roster version is damaged");
            goto out;
        }
        if (!chain_render_roster(chain, v)) goto oom;
        last = v->version;
    }
    char num[24];
    snprintf(num, sizeof num, "%" PRIu64, f->head);
    xmpp_stanza_set_attribute(chain, "head", num);
    /* A page starting past the head is empty and complete: the asker is up to date. */
    bool complete = n > 0 ? last == f->head : f->from > f->head;
    xmpp_stanza_set_attribute(chain, "complete", complete ? "true" : "false");
    svc_send(r, reply);
    reply = NULL;
    goto out;
oom:
    svc_error(r, f->iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
out:
    if (reply) xmpp_stanza_release(reply);
    free(v);
    room_release(r, rm);
    xmpp_stanza_release(f->iq);
    free(f);
}

void chain_handle_fetch(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    char sender[SR_BARE_JID_MAX];
    if (!svc_require_member(r, rm, iq, sender, sizeof sender,
                            "only members may read the roster chain")) {
        return;
    }
    uint64_t from = 0, max = 50;
    const char *fa = xmpp_stanza_get_attribute(el, "from");
    const char *ma = xmpp_stanza_get_attribute(el, "max");
    if ((fa && !parse_u64(fa, &from)) || (ma && (!parse_u64(ma, &max) || max == 0))) {
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                  "from and max must be decimal integers, max at least 1");
        return;
    }
    if (max > CHAIN_FETCH_MAX) max = CHAIN_FETCH_MAX;
    fetch_op *f = calloc(1, sizeof *f);
    if (!f || !(f->iq = xmpp_stanza_copy(iq))) {
        free(f);
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    f->r = r;
    f->rm = rm;
    f->head = rm->roster.version;
    f->from = from;
    rm->refs++;
    char id[24], fs[24], ms[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(fs, sizeof fs, "%" PRIu64, from);
    snprintf(ms, sizeof ms, "%" PRIu64, max);
    const char *p[3] = {id, fs, ms};
    db_read1(r->db,
             "SELECT version, canonical, sig FROM roster_versions WHERE room_id = $1 AND "
             "version >= $2 ORDER BY version LIMIT $3",
             3, p, NULL, NULL, fetched, f);
}
