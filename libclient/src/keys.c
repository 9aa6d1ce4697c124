/* Room keys on the client (xep/sealroom.xml "Epochs", "Data Keys"): the
 * verified roster history (who was a member, with which key, at every
 * version), the epochs we hold (fetched envelopes checked against KC_e, or
 * the key our key agreement run derived), asking the room for a new epoch
 * (<rekey/> in urn:xmpp:sealroom:keys:0: the room runs a key agreement, or
 * tells us to start the epoch alone), starting one alone by sealing S_e to
 * every member, and the headlines by which the room announces epochs,
 * nudges us, or drives a run (keyrun.c). Every epoch carries its check
 * header H_c = k_e·P_c(room) (archive-wire.md): we send it with an epoch
 * we start and verify it on every epoch we install; the tokens and check
 * confirmations built on it are archive.c's. */
#include "internal.h"
#include "sse.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e/envelope.h"
#include "proto/b64.h"
#include "proto/jid.h"

/* ---- roster history ---- */

void sr_hist_free(sr_hist *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->nops; i++)
        free(h->ops[i].jid);
    free(h->ops);
    free(h->heads);
    memset(h, 0, sizeof *h);
}

int sr_hist_note(sr_hist **hp, const sr_roster_version *v, const unsigned char head[32])
{
    sr_hist *h = *hp;
    if (!h) {
        h = *hp = calloc(1, sizeof *h);
        if (!h)
            return SEALROOM_E_NOMEM;
        h->first_version = v->version;
    }
    if (h->nheads == h->capheads) {
        size_t cap = h->capheads ? h->capheads * 2 : 8;
        void *n = realloc(h->heads, cap * sizeof *h->heads);
        if (!n)
            return SEALROOM_E_NOMEM;
        h->heads = n;
        h->capheads = cap;
    }
    memcpy(h->heads[h->nheads++], head, SR_ROSTER_HASH_BYTES);
    for (unsigned i = 0; i < v->nops; i++) {
        if (h->nops == h->cap) {
            size_t cap = h->cap ? h->cap * 2 : 8;
            void *n = realloc(h->ops, cap * sizeof *h->ops);
            if (!n)
                return SEALROOM_E_NOMEM;
            h->ops = n;
            h->cap = cap;
        }
        sr_hist_op *op = &h->ops[h->nops];
        op->version = v->version;
        op->kind = v->ops[i].kind;
        memcpy(op->pk, v->ops[i].key, SR_KEY_BYTES);
        if (!(op->jid = sr_strdup(v->ops[i].jid)))
            return SEALROOM_E_NOMEM;
        h->nops++;
    }
    return SEALROOM_OK;
}

/* Appends h (consumed; the struct itself stays the caller's) to the room's
 * history; reset starts the history over (a fresh chain from version 0). */
void sr_room_hist_commit(sr_room *room, sr_hist *h, bool reset)
{
    sr_hist *rh = &room->hist;
    if (reset) {
        sr_hist_free(rh);
        room->membership_version = 0;
    }
    if (!h)
        return;
    if (rh->nheads == 0 && rh->nops == 0) {
        *rh = *h;
    } else {
        /* Only a continuation of what we hold is appended. */
        if (h->first_version != rh->first_version + rh->nheads) {
            sr_hist_free(h);
            return;
        }
        void *nh = realloc(rh->heads, (rh->nheads + h->nheads) * sizeof *rh->heads);
        void *no = realloc(rh->ops, (rh->nops + h->nops + 1) * sizeof *rh->ops);
        if (nh)
            rh->heads = nh;
        if (no)
            rh->ops = no;
        if (!nh || !no) {
            sr_hist_free(h);
            return;
        }
        memcpy(rh->heads + rh->nheads, h->heads, h->nheads * sizeof *h->heads);
        rh->nheads += h->nheads;
        rh->capheads = rh->nheads;
        memcpy(rh->ops + rh->nops, h->ops, h->nops * sizeof *h->ops);
        rh->nops += h->nops;
        rh->cap = rh->nops + 1;
        free(h->heads);
        free(h->ops);
    }
    memset(h, 0, sizeof *h);
    for (size_t i = 0; i < rh->nops; i++)
        if (rh->ops[i].kind != SR_OP_ROLE && rh->ops[i].version > room->membership_version)
            room->membership_version = rh->ops[i].version;
}

bool sr_member_at(const sr_room *room, const char *jid, uint64_t v, unsigned char pk[SR_KEY_BYTES])
{
    bool member = false;
    for (size_t i = 0; i < room->hist.nops; i++) {
        const sr_hist_op *op = &room->hist.ops[i];
        if (op->version > v)
            break;
        if (strcmp(op->jid, jid) != 0)
            continue;
        if (op->kind == SR_OP_ADD) {
            member = true;
            memcpy(pk, op->pk, SR_KEY_BYTES);
        } else if (op->kind == SR_OP_REMOVE) {
            member = false;
        }
    }
    return member && room->hist.nheads && v < room->hist.first_version + room->hist.nheads;
}

const unsigned char *sr_head_at(const sr_room *room, uint64_t v)
{
    if (v < room->hist.first_version || v - room->hist.first_version >= room->hist.nheads)
        return NULL;
    return room->hist.heads[v - room->hist.first_version];
}

/* ---- epochs held ---- */

sr_epoch *sr_epoch_find(const sr_room *room, uint64_t number)
{
    for (sr_epoch *e = room->epochs; e; e = e->next)
        if (e->number == number)
            return e;
    return NULL;
}

sr_datakey *sr_dk_find(const sr_room *room, const unsigned char id[SR_E2E_DATAKEY_ID_BYTES])
{
    for (sr_datakey *d = room->dks; d; d = d->next)
        if (sodium_memcmp(d->id, id, SR_E2E_DATAKEY_ID_BYTES) == 0)
            return d;
    return NULL;
}

static void epoch_free(sr_epoch *e)
{
    if (e)
        sodium_free(e); /* wipes */
}

void sr_room_keys_free(sr_room *room)
{
    while (room->epochs) {
        sr_epoch *e = room->epochs;
        room->epochs = e->next;
        epoch_free(e);
    }
    epoch_free(room->rot_pending);
    room->rot_pending = NULL;
    while (room->dks) {
        sr_datakey *d = room->dks;
        room->dks = d->next;
        free(d->sender);
        sodium_free(d);
    }
    room->send_dk = NULL;
    free(room->rotate_waiters);
    room->rotate_waiters = NULL;
    room->nwaiters = 0;
    free(room->rekey_waiters);
    room->rekey_waiters = NULL;
    room->nrekey_waiters = 0;
    sr_keyrun_free(room);
    free(room->epoch_inflight);
    room->epoch_inflight = NULL;
    room->ninflight = 0;
    sr_hist_free(&room->hist);
}

/* Derives an epoch's keys from its secret into a new record. */
static sr_epoch *epoch_new(const sr_room *room, uint64_t number, uint64_t roster_version,
                           const unsigned char hash[32], const unsigned char secret[32])
{
    sr_epoch *e = sodium_malloc(sizeof *e);
    if (!e)
        return NULL;
    memset(e, 0, sizeof *e);
    e->number = number;
    e->roster_version = roster_version;
    memcpy(e->roster_hash, hash, sizeof e->roster_hash);
    memcpy(e->secret, secret, sizeof e->secret);
    if (sr_e2e_epoch_derive(&e->keys, secret, room->jid, number, hash) != SR_E2E_OK) {
        epoch_free(e);
        return NULL;
    }
    return e;
}

/* Takes e into the room (replacing a record of the same number, whose
 * token bookkeeping carries over: a fetch again of an epoch we made does
 * not make it ours any less, nor its token unsent). */
static void epoch_install(sealroom_ctx *ctx, sr_room *room, sr_epoch *e)
{
    for (sr_epoch **pp = &room->epochs; *pp; pp = &(*pp)->next)
        if ((*pp)->number == e->number) {
            sr_epoch *old = *pp;
            *pp = old->next;
            e->ours = e->ours || old->ours;
            e->token_sent = e->token_sent || old->token_sent;
            epoch_free(old);
            break;
        }
    e->next = room->epochs;
    room->epochs = e;
    if (e->number > room->service_epoch)
        room->service_epoch = e->number;
    bool newer = e->number > room->epoch_current;
    if (newer) {
        room->epoch_current = e->number;
        sealroom_event ev = {0};
        ev.type = SEALROOM_EVENT_EPOCH_CHANGED;
        ev.room = room->jid;
        ev.epoch = e->number;
        ev.roster_version = e->roster_version;
        sr_log(ctx, SEALROOM_LOG_INFO, "%s: now in epoch %" PRIu64, room->jid, e->number);
        sr_emit(ctx, &ev);
    }
    /* Headers of this epoch waiting for its key can be unwrapped now. */
    for (sr_datakey *d = room->dks; d; d = d->next) {
        if (d->state != SR_DK_NEED_EPOCH || d->epoch != e->number)
            continue;
        if (sr_e2e_header_unwrap_inverse(d->p, e->keys.k_inv, d->h) == SR_E2E_OK) {
            d->state = SR_DK_READY;
        } else {
            d->state = SR_DK_FAILED;
            d->fail_rc = SEALROOM_E_DECRYPT;
        }
    }
    /* Whoever asked for a new epoch has one now. */
    if (newer)
        sr_rekey_waiters_done(ctx, room, SEALROOM_OK, NULL);
    /* An epoch we made, or the one before it, is here: the archive can
     * follow to it. */
    sr_archive_tokens(ctx, room);
    /* And the search keyring, sealed per epoch. */
    sr_sse_epoch_installed(ctx, room);
}

/* ---- fetching an epoch ---- */

typedef struct epoch_fetch {
    sr_room *room;
    uint64_t number; /* 0: the current one */
    bool synced;     /* the roster was synced for it already */
} epoch_fetch;

static void inflight_del(sr_room *room, uint64_t number)
{
    for (size_t i = 0; i < room->ninflight; i++)
        if (room->epoch_inflight[i] == number) {
            room->epoch_inflight[i] = room->epoch_inflight[--room->ninflight];
            return;
        }
}

static bool inflight_has(const sr_room *room, uint64_t number)
{
    for (size_t i = 0; i < room->ninflight; i++)
        if (room->epoch_inflight[i] == number)
            return true;
    return false;
}

static void epoch_fetched(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                          const char *text);
static int epoch_fetch_send(sealroom_ctx *ctx, epoch_fetch *f);

/* The fetch of f->number failed: headers waiting for it fail too. */
static void epoch_fetch_failed(sealroom_ctx *ctx, epoch_fetch *f, int rc)
{
    sr_room *room = f->room;
    if (f->number) {
        for (sr_datakey *d = room->dks; d; d = d->next)
            if (d->state == SR_DK_NEED_EPOCH && d->epoch == f->number) {
                d->state = SR_DK_FAILED;
                d->fail_rc = rc;
            }
    }
    (void)ctx;
}

static void epoch_synced(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                         const char *text)
{
    epoch_fetch *f = arg;
    (void)answer;
    f->room->syncing = false;
    if (rc == SEALROOM_OK && epoch_fetch_send(ctx, f) == SEALROOM_OK)
        return;
    sr_log(ctx, SEALROOM_LOG_WARN, "%s: roster sync for an epoch failed: %s", f->room->jid,
           text ? text : sealroom_strerror(rc));
    sr_room *room = f->room;
    if (f->number == 0)
        room->epoch_fetching = false;
    else
        inflight_del(room, f->number);
    epoch_fetch_failed(ctx, f, rc < 0 ? rc : SEALROOM_E_VERIFY);
    free(f);
    sr_keys_changed(ctx, room);
}

/* Parses and opens an <epoch/> answer; returns OK with *out (or NULL when
 * the answer holds no envelope for us), or a negative code. */
static int epoch_open(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *el, uint64_t number,
                      uint64_t roster_version, sr_epoch **out)
{
    unsigned char hash[32], kc[32], pk[SR_KEY_BYTES], secret[32], check[SR_E2E_POINT_BYTES];
    unsigned char env[SR_E2E_ENVELOPE_BYTES];
    char sealer[SR_BARE_JID_MAX];
    *out = NULL;
    /* Epochs from before check headers have none; one that is there must
     * be well-formed. */
    const char *check_b64 = xmpp_stanza_get_attribute(el, "check");
    if (!sr_b64_decode_exact(hash, sizeof hash, xmpp_stanza_get_attribute(el, "roster-hash")) ||
        !sr_b64_decode_exact(kc, sizeof kc, xmpp_stanza_get_attribute(el, "kc")) ||
        !sr_jid_normalise_bare(sealer, sizeof sealer, xmpp_stanza_get_attribute(el, "sealer")) ||
        (check_b64 && !sr_b64_decode_exact(check, sizeof check, check_b64)))
        return sr_fail(ctx, SEALROOM_E_PROTOCOL, "malformed <epoch/> from %s", room->jid);
    const unsigned char *head = sr_head_at(room, roster_version);
    if (!head || sodium_memcmp(head, hash, sizeof hash) != 0)
        return sr_fail(ctx, SEALROOM_E_VERIFY,
                       "epoch %" PRIu64 " names a roster hash that is not our verified chain's",
                       number);
    /* The epoch of a run we confirmed comes from the key we derived, once
     * the room's KC_e (and check header) shows it is that key (our
     * envelope is not needed). */
    bool represented = false;
    int took = sr_keyrun_take(ctx, room, number, roster_version, hash, kc,
                              check_b64 ? check : NULL, secret, &represented);
    if (took < 0)
        return took;
    if (took > 0) {
        *out = epoch_new(room, number, roster_version, hash, secret);
        sodium_memzero(secret, sizeof secret);
        if (!*out)
            return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
        (*out)->ours = represented;
        return SEALROOM_OK;
    }
    xmpp_stanza_t *envel = NULL;
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(el); c; c = xmpp_stanza_get_next(c)) {
        const char *name = xmpp_stanza_is_tag(c) ? xmpp_stanza_get_name(c) : NULL;
        char to[SR_BARE_JID_MAX];
        if (name && strcmp(name, "envelope") == 0 &&
            sr_jid_normalise_bare(to, sizeof to, xmpp_stanza_get_attribute(c, "to")) &&
            strcmp(to, ctx->own_bare) == 0)
            envel = c;
    }
    if (!envel)
        return SEALROOM_OK;
    if (!sr_member_at(room, sealer, roster_version, pk))
        return sr_fail(ctx, SEALROOM_E_VERIFY, "epoch %" PRIu64 " sealed by %s, not a member",
                       number, sealer);
    char *b64 = xmpp_stanza_get_text(envel);
    bool ok = b64 && sr_b64_decode_exact(env, sizeof env, b64);
    if (b64)
        xmpp_free(ctx->xmpp, b64);
    if (!ok)
        return sr_fail(ctx, SEALROOM_E_PROTOCOL, "malformed envelope for epoch %" PRIu64, number);
    sr_e2e_envelope_ctx ectx = {room->jid, number, hash, sealer, ctx->own_bare,
                                ctx->identity->e2e.box_pk};
    int erc = sr_e2e_envelope_open(secret, env, sizeof env, &ectx, pk, ctx->identity->e2e.box_sk);
    if (erc != SR_E2E_OK)
        return sr_fail(ctx, erc == SR_E2E_ERR_DECRYPT ? SEALROOM_E_DECRYPT : SEALROOM_E_VERIFY,
                       "envelope for epoch %" PRIu64 " refused: %s", number, sr_e2e_strerror(erc));
    erc = sr_e2e_epoch_confirm(kc, secret, room->jid, number, hash);
    if (erc != SR_E2E_OK) {
        sodium_memzero(secret, sizeof secret);
        return sr_fail(ctx, SEALROOM_E_VERIFY,
                       "epoch %" PRIu64 ": the key does not match its confirmation value", number);
    }
    *out = epoch_new(room, number, roster_version, hash, secret);
    sodium_memzero(secret, sizeof secret);
    if (!*out)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    /* A check header that is not k_e·P_c would have the archive re-keyed
     * along a wrong chain: refused as a wrong KC is. */
    if (check_b64 && sr_e2e_check_header_verify(check, (*out)->keys.k, room->jid) != SR_E2E_OK) {
        epoch_free(*out);
        *out = NULL;
        return sr_fail(ctx, SEALROOM_E_VERIFY,
                       "epoch %" PRIu64 ": the check header is not the key's", number);
    }
    /* Sealed by us: an epoch we started alone (here before an answer got
     * lost, or on another of our devices). */
    (*out)->ours = strcmp(sealer, ctx->own_bare) == 0;
    return SEALROOM_OK;
}

static void epoch_fetched(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                          const char *text)
{
    epoch_fetch *f = arg;
    sr_room *room = f->room;
    bool current = f->number == 0;
    xmpp_stanza_t *el = answer && rc == SEALROOM_OK ? sr_child(answer, "epoch", SR_NS) : NULL;
    uint64_t number = 0, rv = 0;
    if (rc == SEALROOM_OK &&
        (!el || !sr_parse_u64(xmpp_stanza_get_attribute(el, "number"), &number) || number == 0 ||
         (!current && number != f->number) ||
         !sr_parse_u64(xmpp_stanza_get_attribute(el, "roster-version"), &rv)))
        rc = sr_fail(ctx, SEALROOM_E_PROTOCOL, "malformed <epoch/> answer from %s", room->jid);
    if (rc == SEALROOM_OK && (!room->roster_known || rv > room->roster.version) && !f->synced) {
        /* Made under a roster we have not verified yet: catch up first. */
        f->synced = true;
        if (room->syncing) {
            /* Another sync is under way; when it completes, keys are
             * looked at again (sr_keys_changed) and this fetch repeated. */
            if (current)
                room->epoch_fetching = false;
            else
                inflight_del(room, f->number);
            free(f);
            return;
        }
        if (sr_sync_call(ctx, room->jid, epoch_synced, f) == SEALROOM_OK) {
            room->syncing = true;
            return;
        }
        rc = sr_fail(ctx, SEALROOM_E_VERIFY, "cannot verify the roster of epoch %" PRIu64, number);
    }
    if (current)
        room->epoch_fetching = false;
    else
        inflight_del(room, f->number);

    if (rc == SEALROOM_OK) {
        sr_epoch *e = NULL;
        if (number > room->service_epoch)
            room->service_epoch = number;
        rc = epoch_open(ctx, room, el, number, rv, &e);
        if (rc == SEALROOM_OK && e)
            epoch_install(ctx, room, e);
        if (current) {
            const char *stale = xmpp_stanza_get_attribute(el, "stale");
            const char *expired = xmpp_stanza_get_attribute(el, "expired");
            room->epoch_checked = true;
            /* Stale or expired epochs, and epochs nobody sealed to us,
             * are replaced by the next sender (keys.c sr_keys_ensure). */
            room->epoch_rotate = (stale && strcmp(stale, "true") == 0) ||
                                 (expired && strcmp(expired, "true") == 0) || !e ||
                                 rv < room->membership_version;
        } else if (!e && rc == SEALROOM_OK) {
            rc = sr_fail(ctx, SEALROOM_E_NO_KEY, "no envelope for us in epoch %" PRIu64, number);
        }
        if (rc < 0) {
            sr_log(ctx, SEALROOM_LOG_WARN, "%s: %s", room->jid, ctx->last_error);
            if (current)
                room->epoch_rotate = true;
        }
    } else if (current && answer) {
        const char *app = sr_error_app(answer);
        if (app && strcmp(app, "no-epoch") == 0) {
            /* No epoch yet (a room made before encryption): make one. */
            room->epoch_checked = true;
            room->epoch_rotate = true;
            rc = SEALROOM_OK;
        }
    }
    if (rc < 0) {
        if (!current)
            epoch_fetch_failed(ctx, f, rc);
        sr_log(ctx, SEALROOM_LOG_INFO, "%s: epoch fetch failed: %s", room->jid,
               text ? text : ctx->last_error);
        /* The room refused (not a member, say): messages waiting for its
         * epoch fail now rather than ask again on every turn. */
        const char *atype = answer ? xmpp_stanza_get_type(answer) : NULL;
        if (current && atype && strcmp(atype, "error") == 0 && !room->epoch_checked)
            sr_outbox_fail(ctx, room, rc, text ? text : ctx->last_error);
    }
    bool again = current && room->epoch_refresh;
    room->epoch_refresh = false;
    free(f);
    if (again)
        sr_epoch_fetch(ctx, room, 0);
    sr_keys_changed(ctx, room);
}

static int epoch_fetch_send(sealroom_ctx *ctx, epoch_fetch *f)
{
    char num[24];
    xmpp_stanza_t *el = sr_el(ctx->xmpp, "epoch", SR_NS);
    if (el && f->number) {
        snprintf(num, sizeof num, "%" PRIu64, f->number);
        if (xmpp_stanza_set_attribute(el, "number", num) != XMPP_EOK) {
            xmpp_stanza_release(el);
            el = NULL;
        }
    }
    if (!el)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    return sr_iq_call_owned(ctx, "get", f->room->jid, el, epoch_fetched, f, free);
}

int sr_epoch_fetch(sealroom_ctx *ctx, sr_room *room, uint64_t number)
{
    if (!ctx->identity)
        return sr_fail(ctx, SEALROOM_E_STATE, "no identity set");
    if (number == 0 && room->epoch_fetching) {
        room->epoch_refresh = true;
        return SEALROOM_OK;
    }
    if (number && inflight_has(room, number))
        return SEALROOM_OK;
    epoch_fetch *f = calloc(1, sizeof *f);
    if (!f)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    f->room = room;
    f->number = number;
    if (number) {
        uint64_t *n = realloc(room->epoch_inflight, (room->ninflight + 1) * sizeof *n);
        if (!n) {
            free(f);
            return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
        }
        room->epoch_inflight = n;
        n[room->ninflight++] = number;
    } else {
        room->epoch_fetching = true;
    }
    int rc = epoch_fetch_send(ctx, f);
    if (rc < 0) {
        if (number)
            inflight_del(room, number);
        else
            room->epoch_fetching = false;
        free(f);
    }
    return rc;
}

/* ---- a new epoch ---- */

static void rotate_finish(sealroom_ctx *ctx, sr_room *room, int rc, const char *text)
{
    room->rotating = false;
    epoch_free(room->rot_pending);
    room->rot_pending = NULL;
    uint32_t *w = room->rotate_waiters;
    size_t n = room->nwaiters;
    room->rotate_waiters = NULL;
    room->nwaiters = 0;
    char copy[sizeof ctx->last_error];
    snprintf(copy, sizeof copy, "%s", text ? text : "");
    if (rc < 0) {
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: new epoch failed: %s", room->jid,
               text ? text : sealroom_strerror(rc));
        /* Messages waiting for that epoch would only start another attempt
         * at once; a lost link is the exception (they wait for link_up). */
        if (rc != SEALROOM_E_NETWORK && rc != SEALROOM_E_TIMEOUT && ctx->link_up)
            sr_outbox_fail(ctx, room, rc, copy);
    }
    for (size_t i = 0; i < n; i++) {
        sr_request *r = sr_request_by_id(ctx, w[i]);
        if (!r)
            continue;
        sealroom_event ev = {0};
        ev.epoch = room->epoch_current;
        ev.roster_version = room->roster.version;
        sr_request_done(ctx, r, rc, rc < 0 ? copy : NULL, &ev);
    }
    free(w);
    sr_keys_changed(ctx, room);
}

static void rotate_step(sealroom_ctx *ctx, sr_room *room);

static void rotate_retry(sealroom_ctx *ctx, sr_room *room, int rc, const char *text)
{
    if (++room->rotate_attempts >= SR_ROTATE_ATTEMPTS) {
        rotate_finish(ctx, room, rc, text);
        return;
    }
    sr_log(ctx, SEALROOM_LOG_INFO, "%s: new epoch raced (%s); trying again", room->jid,
           text ? text : sealroom_strerror(rc));
    rotate_step(ctx, room);
}

/* After an epoch-conflict: the service's current number, then try again. */
static void rotate_learned(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                           const char *text)
{
    sr_room *room = arg;
    xmpp_stanza_t *el = answer && rc == SEALROOM_OK ? sr_child(answer, "epoch", SR_NS) : NULL;
    uint64_t number;
    if (!el || !sr_parse_u64(xmpp_stanza_get_attribute(el, "number"), &number)) {
        rotate_finish(ctx, room, rc < 0 ? rc : SEALROOM_E_PROTOCOL,
                      text ? text : "malformed <epoch/> answer");
        return;
    }
    if (number > room->service_epoch)
        room->service_epoch = number;
    rotate_retry(ctx, room, SEALROOM_E_CONFLICT, "conflict/epoch-conflict");
}

static void rotate_set_done(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                            const char *text)
{
    sr_room *room = arg;
    if (rc == SEALROOM_OK) {
        sr_epoch *e = room->rot_pending;
        room->rot_pending = NULL;
        e->ours = true;
        epoch_install(ctx, room, e);
        room->epoch_checked = true;
        room->epoch_rotate = false;
        room->send_dk = NULL;
        rotate_finish(ctx, room, SEALROOM_OK, NULL);
        return;
    }
    const char *app = sr_error_app(answer);
    if (app && strcmp(app, "epoch-conflict") == 0) {
        /* Someone else made this number: learn the current one first. */
        xmpp_stanza_t *el = sr_el(ctx->xmpp, "epoch", SR_NS);
        if (!el || sr_iq_call(ctx, "get", room->jid, el, rotate_learned, room) < 0)
            rotate_finish(ctx, room, rc, text);
    } else if (app && strcmp(app, "stale-roster") == 0) {
        rotate_retry(ctx, room, rc, text);
    } else {
        rotate_finish(ctx, room, rc, text);
    }
}

/* Finds <bundle jid=.../> in the answer. */
static xmpp_stanza_t *find_bundle(xmpp_stanza_t *bundles, const char *jid)
{
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(bundles); c; c = xmpp_stanza_get_next(c)) {
        const char *name = xmpp_stanza_is_tag(c) ? xmpp_stanza_get_name(c) : NULL;
        char bare[SR_BARE_JID_MAX];
        if (name && strcmp(name, "bundle") == 0 &&
            sr_jid_normalise_bare(bare, sizeof bare, xmpp_stanza_get_attribute(c, "jid")) &&
            strcmp(bare, jid) == 0)
            return c;
    }
    return NULL;
}

static void rotate_bundles(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                           const char *text)
{
    sr_room *room = arg;
    if (rc < 0) {
        rotate_finish(ctx, room, rc, text);
        return;
    }
    xmpp_stanza_t *bundles = answer ? sr_child(answer, "bundles", SR_NS) : NULL;
    if (!bundles) {
        rotate_finish(ctx, room, SEALROOM_E_PROTOCOL, "bundles answer without <bundles/>");
        return;
    }
    const unsigned char *head = room->roster.head;
    unsigned char secret[SR_E2E_EPOCH_SECRET_BYTES];
    uint64_t number = (room->service_epoch > room->epoch_current ? room->service_epoch
                                                                  : room->epoch_current) + 1;
    randombytes_buf(secret, sizeof secret);
    epoch_free(room->rot_pending);
    room->rot_pending = epoch_new(room, number, room->roster.version, head, secret);
    sodium_memzero(secret, sizeof secret);
    if (!room->rot_pending) {
        rotate_finish(ctx, room, SEALROOM_E_NOMEM, "out of memory");
        return;
    }
    char num[24], ver[24], kc[64], check[64], envb64[256];
    unsigned char hc[SR_E2E_POINT_BYTES];
    snprintf(num, sizeof num, "%" PRIu64, number);
    snprintf(ver, sizeof ver, "%" PRIu64, room->roster.version);
    sr_b64_encode(kc, sizeof kc, room->rot_pending->keys.kc, sizeof room->rot_pending->keys.kc);
    bool ok = sr_e2e_check_header(hc, room->rot_pending->keys.k, room->jid) == SR_E2E_OK &&
              sr_b64_encode(check, sizeof check, hc, sizeof hc);
    xmpp_stanza_t *el = ok ? sr_el(ctx->xmpp, "epoch", SR_NS) : NULL;
    ok = el && xmpp_stanza_set_attribute(el, "number", num) == XMPP_EOK &&
         xmpp_stanza_set_attribute(el, "roster-version", ver) == XMPP_EOK &&
         xmpp_stanza_set_attribute(el, "kc", kc) == XMPP_EOK &&
         xmpp_stanza_set_attribute(el, "check", check) == XMPP_EOK;
    size_t sealed = 0, skipped = 0;
    for (size_t i = 0; ok && i < room->roster.nmembers; i++) {
        const sr_member *m = &room->roster.members[i];
        xmpp_stanza_t *b = find_bundle(bundles, m->jid);
        unsigned char ed[32], box[32], bsig[SR_SIG_BYTES];
        if (!b || !sr_b64_decode_exact(ed, sizeof ed, xmpp_stanza_get_attribute(b, "key")) ||
            !sr_b64_decode_exact(box, sizeof box, xmpp_stanza_get_attribute(b, "box-key")) ||
            !sr_b64_decode_exact(bsig, sizeof bsig, xmpp_stanza_get_attribute(b, "bundle-sig"))) {
            sr_log(ctx, SEALROOM_LOG_WARN, "%s: no usable sealing key for %s; not sealing to it",
                   room->jid, m->jid);
            skipped++;
            continue;
        }
        /* The sealing key must belong to the key the signed roster names. */
        if (sodium_memcmp(ed, m->key, 32) != 0 ||
            sr_e2e_bundle_verify(bsig, m->jid, ed, box) != SR_E2E_OK) {
            sr_log(ctx, SEALROOM_LOG_WARN, "%s: sealing key of %s fails verification; skipped",
                   room->jid, m->jid);
            skipped++;
            continue;
        }
        if (sr_pin_check(ctx, m->jid, ed, box) < 0) {
            sr_log(ctx, SEALROOM_LOG_WARN, "%s: %s has a changed key; not sealing to it",
                   room->jid, m->jid);
            skipped++;
            continue;
        }
        unsigned char env[SR_E2E_ENVELOPE_BYTES];
        sr_e2e_envelope_ctx ectx = {room->jid, number, head, ctx->own_bare, m->jid, box};
        if (sr_e2e_envelope_seal(env, &ectx, room->rot_pending->secret, ctx->identity->sk) !=
            SR_E2E_OK) {
            skipped++;
            continue;
        }
        sr_b64_encode(envb64, sizeof envb64, env, sizeof env);
        xmpp_stanza_t *ee = sr_el(ctx->xmpp, "envelope", SR_NS);
        ok = ee && xmpp_stanza_set_attribute(ee, "to", m->jid) == XMPP_EOK;
        if (ok) {
            xmpp_stanza_t *t = xmpp_stanza_new(ctx->xmpp);
            ok = t && xmpp_stanza_set_text(t, envb64) == XMPP_EOK &&
                 xmpp_stanza_add_child_ex(ee, t, 0) == XMPP_EOK;
            if (!ok && t)
                xmpp_stanza_release(t);
        }
        if (ok && xmpp_stanza_add_child_ex(el, ee, 0) == XMPP_EOK)
            sealed++;
        else {
            if (ee)
                xmpp_stanza_release(ee);
            ok = false;
        }
    }
    if (!ok) {
        if (el)
            xmpp_stanza_release(el);
        rotate_finish(ctx, room, SEALROOM_E_NOMEM, "out of memory");
        return;
    }
    sr_log(ctx, SEALROOM_LOG_INFO, "%s: proposing epoch %" PRIu64 " sealed to %zu members (%zu skipped)",
           room->jid, number, sealed, skipped);
    if (sr_iq_call(ctx, "set", room->jid, el, rotate_set_done, room) < 0)
        rotate_finish(ctx, room, SEALROOM_E_NETWORK, ctx->last_error);
}

static void rotate_synced(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                          const char *text)
{
    sr_room *room = arg;
    (void)answer;
    room->syncing = false;
    if (rc < 0) {
        rotate_finish(ctx, room, rc, text);
        return;
    }
    if (!sr_roster_find(&room->roster, ctx->own_bare)) {
        rotate_finish(ctx, room, SEALROOM_E_FORBIDDEN, "we are not a member of this room");
        return;
    }
    xmpp_stanza_t *el = sr_el(ctx->xmpp, "bundles", SR_NS);
    if (!el || sr_iq_call(ctx, "get", room->jid, el, rotate_bundles, room) < 0)
        rotate_finish(ctx, room, SEALROOM_E_NETWORK, ctx->last_error);
}

static void rotate_step(sealroom_ctx *ctx, sr_room *room)
{
    /* Always at the chain's head: envelopes must cover today's members. */
    if (sr_sync_call(ctx, room->jid, rotate_synced, room) < 0) {
        rotate_finish(ctx, room, SEALROOM_E_NETWORK, ctx->last_error);
        return;
    }
    room->syncing = true;
}

int sr_rotate(sealroom_ctx *ctx, sr_room *room, uint32_t request_id)
{
    if (!room)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    if (!ctx->identity)
        return sr_fail(ctx, SEALROOM_E_STATE, "no identity set");
    if (!ctx->link_up)
        return sr_fail(ctx, SEALROOM_E_STATE, "the link to the server is down");
    if (request_id) {
        uint32_t *w = realloc(room->rotate_waiters, (room->nwaiters + 1) * sizeof *w);
        if (!w)
            return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
        room->rotate_waiters = w;
        w[room->nwaiters++] = request_id;
    }
    if (room->rotating)
        return SEALROOM_OK;
    room->rotating = true;
    room->rotate_attempts = 0;
    rotate_step(ctx, room);
    return SEALROOM_OK;
}

/* ---- asking the room for a new epoch ---- */

void sr_rekey_waiters_done(sealroom_ctx *ctx, sr_room *room, int rc, const char *text)
{
    uint32_t *w = room->rekey_waiters;
    size_t n = room->nrekey_waiters;
    room->rekey_waiters = NULL;
    room->nrekey_waiters = 0;
    room->run_awaited = false;
    char copy[sizeof ctx->last_error];
    snprintf(copy, sizeof copy, "%s", text ? text : "");
    for (size_t i = 0; i < n; i++) {
        sr_request *r = sr_request_by_id(ctx, w[i]);
        if (!r)
            continue;
        sealroom_event ev = {0};
        ev.epoch = room->epoch_current;
        ev.roster_version = room->roster.version;
        sr_request_done(ctx, r, rc, rc < 0 ? copy : NULL, &ev);
    }
    free(w);
}

/* The room said we are the only member online: the epoch is ours to
 * start, for every request that asked. */
static void rekey_solo(sealroom_ctx *ctx, sr_room *room)
{
    uint32_t *w = room->rekey_waiters;
    size_t n = room->nrekey_waiters;
    room->rekey_waiters = NULL;
    room->nrekey_waiters = 0;
    room->run_awaited = false;
    sr_log(ctx, SEALROOM_LOG_INFO, "%s: no other member online; starting the new epoch alone",
           room->jid);
    if (n == 0 && sr_rotate(ctx, room, 0) < 0)
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: new epoch not started: %s", room->jid,
               ctx->last_error);
    for (size_t i = 0; i < n; i++) {
        sr_request *r = sr_request_by_id(ctx, w[i]);
        int rc = r ? sr_rotate(ctx, room, w[i]) : SEALROOM_OK;
        if (rc < 0)
            sr_request_fail(ctx, r, rc);
    }
    free(w);
}

static void rekey_answered(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                           const char *text)
{
    sr_room *room = arg;
    room->rekey_asking = false;
    xmpp_stanza_t *el = answer && rc == SEALROOM_OK ? sr_child(answer, "rekey", SR_NS_KEYS) : NULL;
    const char *mode = el ? xmpp_stanza_get_attribute(el, "mode") : NULL;
    if (mode && strcmp(mode, "solo") == 0) {
        rekey_solo(ctx, room);
        return;
    }
    if (mode && strcmp(mode, "run") == 0) {
        /* The room's run brings the epoch (EPOCH_CHANGED); until then, or
         * SR_RUN_WAIT_MS, nobody here asks again. */
        room->run_awaited = true;
        room->run_awaited_at = ctx->now_ms;
        sr_log(ctx, SEALROOM_LOG_INFO, "%s: the room runs a key agreement for a new epoch",
               room->jid);
        return;
    }
    char copy[sizeof ctx->last_error];
    if (rc == SEALROOM_OK)
        rc = sr_fail(ctx, SEALROOM_E_PROTOCOL, "malformed <rekey/> answer");
    else if (text)
        snprintf(ctx->last_error, sizeof ctx->last_error, "%s", text);
    snprintf(copy, sizeof copy, "%s", ctx->last_error);
    sr_log(ctx, SEALROOM_LOG_WARN, "%s: asking for a new epoch failed: %s", room->jid, copy);
    sr_rekey_waiters_done(ctx, room, rc, copy);
    /* As with a failed rotation: messages waiting for the epoch would only
     * ask again at once; a lost link is the exception. */
    if (rc != SEALROOM_E_NETWORK && rc != SEALROOM_E_TIMEOUT && ctx->link_up)
        sr_outbox_fail(ctx, room, rc, copy);
    sr_keys_changed(ctx, room);
}

/* <rekey xmlns=SR_NS_KEYS/> to the room, unless one is in flight. */
static int rekey_ask(sealroom_ctx *ctx, sr_room *room)
{
    if (room->rekey_asking)
        return SEALROOM_OK;
    xmpp_stanza_t *el = sr_el(ctx->xmpp, "rekey", SR_NS_KEYS);
    if (!el)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    int rc = sr_iq_call(ctx, "set", room->jid, el, rekey_answered, room);
    if (rc == SEALROOM_OK)
        room->rekey_asking = true;
    return rc;
}

/* The room said mode="run" recently enough that its epoch is still due. */
static bool run_awaited(const sealroom_ctx *ctx, const sr_room *room)
{
    return room->run_awaited &&
           !(ctx->have_time && ctx->now_ms >= room->run_awaited_at &&
             ctx->now_ms - room->run_awaited_at >= SR_RUN_WAIT_MS);
}

int sr_rekey_wait(sealroom_ctx *ctx, sr_room *room, uint32_t request_id)
{
    uint32_t *w = realloc(room->rekey_waiters, (room->nrekey_waiters + 1) * sizeof *w);
    if (!w)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    room->rekey_waiters = w;
    w[room->nrekey_waiters++] = request_id;
    int rc = rekey_ask(ctx, room);
    if (rc < 0)
        room->nrekey_waiters--;
    return rc;
}

int sealroom_room_rekey(sealroom_ctx *ctx, uint32_t *request_id, const char *room_name)
{
    char jid[SR_BARE_JID_MAX];
    if (!ctx)
        return SEALROOM_E_INVALID;
    int rc = sr_room_jid(ctx, jid, sizeof jid, room_name);
    if (rc < 0)
        return rc;
    if (!ctx->identity)
        return sr_fail(ctx, SEALROOM_E_STATE, "no identity set");
    if (!ctx->link_up)
        return sr_fail(ctx, SEALROOM_E_STATE, "the link to the server is down");
    sr_room *room = sr_room_get(ctx, jid);
    sr_request *r = room ? sr_request_new(ctx, SEALROOM_REQ_REKEY) : NULL;
    uint32_t *w = r ? realloc(room->rekey_waiters, (room->nrekey_waiters + 1) * sizeof *w) : NULL;
    if (w)
        room->rekey_waiters = w;
    if (!w || !(r->room = sr_strdup(jid))) {
        if (r) {
            sr_request_unlink(ctx, r);
            sr_request_free(r);
        }
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    }
    w[room->nrekey_waiters++] = r->id;
    /* Asked afresh even while a run is awaited: that run may have begun
     * before this request and not renew what the caller wants renewed. */
    rc = rekey_ask(ctx, room);
    if (rc < 0) {
        room->nrekey_waiters--;
        sr_request_unlink(ctx, r);
        sr_request_free(r);
        return rc;
    }
    if (request_id)
        *request_id = r->id;
    return SEALROOM_OK;
}

int sealroom_room_epoch(const sealroom_ctx *ctx, uint64_t *epoch, const char *room_name)
{
    char jid[SR_BARE_JID_MAX];
    if (!ctx || !epoch || sr_room_jid((sealroom_ctx *)ctx, jid, sizeof jid, room_name) < 0)
        return SEALROOM_E_INVALID;
    for (const sr_room *r = ctx->rooms; r; r = r->next)
        if (strcmp(r->jid, jid) == 0 && r->epoch_current) {
            *epoch = r->epoch_current;
            return SEALROOM_OK;
        }
    return SEALROOM_E_NOT_FOUND;
}

/* ---- keeping keys fresh ---- */

static void ensure_synced(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                          const char *text)
{
    sr_room *room = arg;
    (void)answer;
    room->syncing = false;
    if (rc < 0)
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: roster sync failed: %s", room->jid,
               text ? text : sealroom_strerror(rc));
    sr_keys_changed(ctx, room);
}

void sr_keys_ensure(sealroom_ctx *ctx, sr_room *room)
{
    if (!ctx->link_up || !ctx->identity || room->rotating || room->syncing || room->rekey_asking)
        return;
    if (!room->roster_known) {
        if (sr_sync_call(ctx, room->jid, ensure_synced, room) == SEALROOM_OK)
            room->syncing = true;
        return;
    }
    if (!room->epoch_checked) {
        sr_epoch_fetch(ctx, room, 0);
        return;
    }
    if (room->epoch_fetching)
        return;
    sr_epoch *cur = sr_epoch_find(room, room->epoch_current);
    if (!room->epoch_rotate && cur && cur->roster_version >= room->membership_version)
        return;
    /* A run we take part in, or one the room promised, brings the epoch;
     * otherwise the room decides whether a run or we alone make it. */
    if (sr_keyrun_active(ctx, room) || run_awaited(ctx, room))
        return;
    if (rekey_ask(ctx, room) < 0)
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: cannot ask for a new epoch: %s", room->jid,
               ctx->last_error);
}

void sr_keys_changed(sealroom_ctx *ctx, sr_room *room)
{
    sr_keyrun_resume(ctx, room);
    sr_outbox_pump(ctx, room);
    sr_inbox_pump(ctx, room);
    sr_sse_maintain(ctx, room);
}

/* ---- headlines from the room ---- */

int sr_handle_headline(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *st)
{
    xmpp_stanza_t *ep = sr_child(st, "epoch", SR_NS);
    xmpp_stanza_t *rk = sr_child(st, "rekey", SR_NS);
    xmpp_stanza_t *run = sr_child(st, NULL, SR_NS_KEYS);
    xmpp_stanza_t *archive = sr_child(st, NULL, SR_NS_ARCHIVE);
    if (run) {
        sr_keyrun_headline(ctx, room, run);
        return 1;
    }
    if (archive) {
        sr_archive_headline(ctx, room, archive);
        return 1;
    }
    if (ep) {
        uint64_t number;
        if (!sr_parse_u64(xmpp_stanza_get_attribute(ep, "number"), &number) || number == 0)
            return 1;
        if (number > room->service_epoch)
            room->service_epoch = number;
        sr_keyrun_epoch_seen(ctx, room, number);
        /* A new epoch supersedes our data key and any stale verdict. */
        if (number > room->epoch_current && ctx->identity) {
            room->epoch_checked = false;
            sr_epoch_fetch(ctx, room, 0);
        }
        return 1;
    }
    if (rk && ctx->identity) {
        /* The room's nudge: we are the one member online, so we start the
         * epoch alone (the envelope path). */
        const char *reason = xmpp_stanza_get_attribute(rk, "reason");
        sr_log(ctx, SEALROOM_LOG_INFO, "%s asks for a new epoch (%s)", room->jid,
               reason ? reason : "no reason given");
        sr_rotate(ctx, room, 0);
        return 1;
    }
    return 1;
}
