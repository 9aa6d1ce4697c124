/* Data-key headers (DESIGN §6): a member publishes H = k_e·P under a random
 * 16-byte id for the room's current epoch; members fetch headers by id to
 * open messages. The component checks only what it can without secrets (a
 * canonical ristretto255 point that is not the identity, an epoch that is
 * current and neither stale nor expired) and keeps the current epoch's ids
 * with their senders in memory, so every sealed message is checked against
 * them without a database read. A publication holds the room (busy) until
 * it commits, so a message sent right after it finds the key. */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2echeck.h"
#include "jid.h"
#include "log.h"
#include "rekey.h"
#include "service.h"
#include "stanza.h"

#define DATAKEYS_FETCH_MAX 100

static unsigned dk_bucket(const unsigned char dkid[16])
{
    /* The ids are random: their first bytes spread well enough. */
    return ((unsigned)dkid[0] << 8 | dkid[1]) % DK_BUCKETS;
}

const char *datakey_sender(const room *rm, const unsigned char dkid[16])
{
    for (const dk_entry *e = rm->datakeys[dk_bucket(dkid)]; e; e = e->next)
        if (memcmp(e->dkid, dkid, 16) == 0) return e->sender;
    return NULL;
}

bool datakey_cache_add(room *rm, const unsigned char dkid[16], const char *sender)
{
    if (datakey_sender(rm, dkid)) return true;
    dk_entry *e = calloc(1, sizeof *e);
    if (!e || !(e->sender = strdup(sender))) {
        free(e);
        return false;
    }
    memcpy(e->dkid, dkid, 16);
    unsigned b = dk_bucket(dkid);
    e->next = rm->datakeys[b];
    rm->datakeys[b] = e;
    return true;
}

void datakey_cache_clear(room *rm)
{
    for (unsigned b = 0; b < DK_BUCKETS; b++) {
        while (rm->datakeys[b]) {
            dk_entry *e = rm->datakeys[b];
            rm->datakeys[b] = e->next;
            free(e->sender);
            free(e);
        }
    }
}

typedef struct dk_op {
    rooms *r;
    room *rm;
    xmpp_stanza_t *iq;
    uint64_t epoch;
    unsigned char dkid[16];
    unsigned char header[32];
    char sender[SR_BARE_JID_MAX];
} dk_op;

static void dk_finish(dk_op *op)
{
    rooms *r = op->r;
    room *rm = op->rm;
    xmpp_stanza_release(op->iq);
    free(op);
    room_op_done(r, rm);
}

static void dk_stored(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    dk_op *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    r->writes_in_flight--;
    unsigned char header[32];
    if (!ok || nres != 2) {
        log_error(rm->name, "data key from %s not stored: %s", op->sender, err ? err : "?");
        svc_error(r, op->iq, rm->name, "wait", "internal-server-error", NULL,
                  "the data key could not be stored; try again");
    } else if (PQntuples(res[1]) == 0) {
        /* The guard saw another epoch: this cache is behind; read the room again. */
        rm->state = ROOM_LOADING;
        svc_error(r, op->iq, rm->name, "modify", "not-acceptable", "stale-epoch",
                  "the room has moved to another epoch; fetch the current epoch");
    } else if (strcmp(PQgetvalue(res[1], 0, 0), op->sender) != 0 ||
               strtoull(PQgetvalue(res[1], 0, 1), NULL, 10) != op->epoch ||
               svc_bytea(res[1], 0, 2, header, sizeof header) != (long)sizeof header ||
               memcmp(header, op->header, sizeof header) != 0) {
        svc_error(r, op->iq, rm->name, "cancel", "conflict", "datakey-conflict",
                  "another data key with this id exists; pick a fresh random id");
    } else if (!datakey_cache_add(rm, op->dkid, op->sender)) {
        rm->state = ROOM_LOADING; /* the reload fills the cache from the table */
        svc_send(r, st_iq_result(op->iq, rm->name));
    } else {
        r->stats.datakeys_stored++;
        svc_send(r, st_iq_result(op->iq, rm->name));
    }
    dk_finish(op);
}

void datakey_handle_set(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    dk_op *op = calloc(1, sizeof *op);
    if (!op) {
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    if (!svc_require_member(r, rm, iq, op->sender, sizeof op->sender,
                            "only members may publish data keys")) {
        goto drop;
    }
    if (!svc_parse_u64(xmpp_stanza_get_attribute(el, "epoch"), &op->epoch)) {
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                  "datakey needs epoch, a decimal epoch number");
        goto drop;
    }
    const char *why = epoch_unusable(r, rm);
    if (op->epoch != rm->current_epoch || why) {
        char text[160];
        if (op->epoch != rm->current_epoch)
            snprintf(text, sizeof text, "epoch %" PRIu64 " is not the current epoch (%" PRIu64 ")",
                     op->epoch, rm->current_epoch);
        else
            snprintf(text, sizeof text, "the current epoch %" PRIu64 " is %s: start a new epoch",
                     op->epoch, strcmp(why, "none") == 0 ? "missing" : why);
        svc_error(r, iq, rm->name, "modify", "not-acceptable", "stale-epoch", text);
        goto drop;
    }
    if (!st_b64_decode_exact(op->header, sizeof op->header, st_text(el)) ||
        !crypto_core_ristretto255_is_valid_point(op->header) ||
        sodium_is_zero(op->header, sizeof op->header)) {
        svc_error(r, iq, rm->name, "modify", "bad-request", "bad-point",
                  "the header must be a canonical ristretto255 point (32 bytes of base64), not "
                  "the identity");
        goto drop;
    }
    if (!st_b64_decode_exact(op->dkid, sizeof op->dkid, xmpp_stanza_get_attribute(el, "id"))) {
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                  "datakey needs id, 16 bytes of base64");
        goto drop;
    }
    db_unit *u = db_unit_new();
    op->iq = xmpp_stanza_copy(iq);
    char id[24], ep[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(ep, sizeof ep, "%" PRIu64, op->epoch);
    const char *p[5] = {id, (const char *)op->dkid, op->sender, ep, (const char *)op->header};
    int l[5] = {-1, 16, -1, -1, 32}, f[5] = {0, 1, 0, 0, 1};
    const char *q[2] = {id, (const char *)op->dkid};
    int ql[2] = {-1, 16}, qf[2] = {0, 1};
    /* Stored only while the epoch is still current in the table (another
     * instance may have moved it on); then the row for the id tells a fresh
     * insert or an idempotent resend from a clash. */
    if (!u || !op->iq ||
        db_unit_add(u,
                    "INSERT INTO datakeys (room_id, dkid, sender, epoch, created_epoch, header) "
                    "SELECT $1, $2, $3, $4, $4, $5 FROM rooms WHERE room_id = $1 AND current_epoch = $4 "
                    "ON CONFLICT (room_id, dkid) DO NOTHING",
                    5, p, l, f) != 0 ||
        db_unit_add(u,
                    "SELECT sender, created_epoch, header FROM datakeys WHERE room_id = $1 AND dkid = $2",
                    2, q, ql, qf) != 0) {
        db_unit_free(u);
        if (op->iq) xmpp_stanza_release(op->iq);
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        free(op);
        return;
    }
    op->r = r;
    op->rm = rm;
    rm->refs++;
    rm->busy = true;
    r->writes_in_flight++;
    db_submit(r->db, u, true, dk_stored, op);
    return;
drop:
    free(op);
}

typedef struct dk_fetch {
    rooms *r;
    room *rm;
    xmpp_stanza_t *iq;
} dk_fetch;

static void dk_fetched(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    dk_fetch *f = arg;
    rooms *r = f->r;
    room *rm = f->rm;
    xmpp_stanza_t *reply = NULL;
    if (!ok || nres != 1) {
        log_error(rm->name, "data key fetch failed: %s", err ? err : "?");
        svc_error(r, f->iq, rm->name, "wait", "internal-server-error", NULL,
                  "data keys could not be read; try again");
        goto out;
    }
    reply = st_iq_result(f->iq, rm->name);
    xmpp_stanza_t *list = reply ? st_add(reply, "datakeys", NS_SEALROOM) : NULL;
    if (!list) goto oom;
    for (int i = 0; i < PQntuples(res[0]); i++) {
        unsigned char dkid[16], header[32];
        if (svc_bytea(res[0], i, 0, dkid, sizeof dkid) != (long)sizeof dkid ||
            svc_bytea(res[0], i, 3, header, sizeof header) != (long)sizeof header)
            continue;
        /* The lazy path: a header behind the current epoch leaves re-keyed
         * to it when the room holds every token between, so members of the
         * current epoch read the whole archive before any sweep. */
        uint64_t epoch = strtoull(PQgetvalue(res[0], i, 1), NULL, 10), c = rm->current_epoch;
        char ep[24];
        snprintf(ep, sizeof ep, "%" PRIu64, epoch);
        if (epoch < c) {
            unsigned char delta[32], moved[32];
            if (token_chain_delta(rm, epoch, c, delta) && rk_apply(moved, delta, header)) {
                memcpy(header, moved, sizeof header);
                snprintf(ep, sizeof ep, "%" PRIu64, c);
                r->stats.headers_rekeyed_lazily++;
            }
            sodium_memzero(delta, sizeof delta);
        }
        char *id = st_b64_encode(dkid, sizeof dkid), *h = st_b64_encode(header, sizeof header);
        xmpp_stanza_t *el = id && h ? st_add_text(list, "datakey", NULL, h) : NULL;
        if (el) {
            xmpp_stanza_set_attribute(el, "id", id);
            xmpp_stanza_set_attribute(el, "epoch", ep);
            xmpp_stanza_set_attribute(el, "sender", PQgetvalue(res[0], i, 2));
        }
        free(id);
        free(h);
        if (!el) goto oom;
    }
    svc_send(r, reply);
    reply = NULL;
    goto out;
oom:
    svc_error(r, f->iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
out:
    if (reply) xmpp_stanza_release(reply);
    room_release(r, rm);
    xmpp_stanza_release(f->iq);
    free(f);
}

void datakey_handle_get(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    char sender[SR_BARE_JID_MAX];
    if (!svc_require_member(r, rm, iq, sender, sizeof sender, "only members may read data keys")) {
        return;
    }
    unsigned char ids[DATAKEYS_FETCH_MAX * 16];
    int n = 0;
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(el); c; c = xmpp_stanza_get_next(c)) {
        if (!xmpp_stanza_is_tag(c)) continue;
        if (strcmp(xmpp_stanza_get_name(c), "datakey") != 0) {
            svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                      "datakeys holds only <datakey id=''/> children");
            return;
        }
        if (n == DATAKEYS_FETCH_MAX) {
            svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                      "at most 100 data keys per request");
            return;
        }
        if (!st_b64_decode_exact(ids + 16 * n, 16, xmpp_stanza_get_attribute(c, "id"))) {
            svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                      "each datakey needs id, 16 bytes of base64");
            return;
        }
        n++;
    }
    dk_fetch *f = calloc(1, sizeof *f);
    if (!f || !(f->iq = xmpp_stanza_copy(iq))) {
        free(f);
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    f->r = r;
    f->rm = rm;
    rm->refs++;
    char id[24], cnt[16];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(cnt, sizeof cnt, "%d", n);
    const char *p[3] = {id, (const char *)ids, cnt};
    int l[3] = {-1, 16 * n, -1}, fm[3] = {0, 1, 0};
    db_read1(r->db,
             "SELECT dkid, epoch, sender, header FROM datakeys WHERE room_id = $1 AND dkid IN "
             "(SELECT substring($2::bytea FROM i * 16 + 1 FOR 16) "
             "FROM generate_series(0, $3::int - 1) AS i) ORDER BY dkid",
             3, p, l, fm, dk_fetched, f);
}
