/* Asynchronous IQ requests of the core: identity registration and lookup,
 * room creation, roster updates and chain sync (verified with
 * proto/roster.c), history queries, and the mapping of error stanzas to
 * result codes. */
#include "internal.h"
#include "sse.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/b64.h"
#include "proto/jid.h"

/* ---- request bookkeeping ---- */

sr_request *sr_request_new(sealroom_ctx *ctx, sealroom_request_kind kind)
{
    sr_request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->kind = kind;
    r->id = ++ctx->next_request;
    if (r->id == 0) /* 0 is never a request id */
        r->id = ++ctx->next_request;
    r->next = ctx->requests;
    ctx->requests = r;
    return r;
}

void sr_request_free(sr_request *r)
{
    if (!r)
        return;
    free(r->iq_to);
    free(r->room);
    free(r->jid);
    free(r->pending);
    free(r->first);
    free(r->last);
    if (r->kind == SEALROOM_REQ_COMPACT)
        sr_sse_compaction_release(r->sse);
    else
        sr_sse_search_free(r->sse);
    if (r->scratch_live)
        sr_roster_state_free(&r->scratch);
    if (r->cb && r->cb_free)
        r->cb_free(r->cb_arg);
    if (r->msg)
        xmpp_stanza_release(r->msg);
    if (r->plain) {
        sodium_memzero(r->plain, r->plain_len);
        free(r->plain);
    }
    sr_e2e_vault_key_free(r->vkey);
    sr_e2e_vault_data_free(r->vdata);
    if (r->hist) {
        sr_hist_free(r->hist);
        free(r->hist);
    }
    free(r);
}

sr_request *sr_request_by_id(sealroom_ctx *ctx, uint32_t id)
{
    for (sr_request *r = ctx->requests; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

void sr_request_unlink(sealroom_ctx *ctx, sr_request *r)
{
    for (sr_request **pp = &ctx->requests; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            r->next = NULL;
            return;
        }
}

void sr_request_done(sealroom_ctx *ctx, sr_request *r, int result, const char *text,
                     sealroom_event *extra)
{
    sealroom_event ev;
    if (extra)
        ev = *extra;
    else
        memset(&ev, 0, sizeof ev);
    sr_request_unlink(ctx, r);
    if (r->cb) {
        sr_iq_cb cb = r->cb;
        r->cb = NULL;
        cb(ctx, r->cb_arg, NULL, result, result == SEALROOM_OK ? NULL : text);
        sr_request_free(r);
        return;
    }
    ev.type = SEALROOM_EVENT_REQUEST_DONE;
    ev.request_id = r->id;
    ev.kind = (int)r->kind;
    ev.result = result;
    if (!ev.room)
        ev.room = r->room;
    if (!ev.jid)
        ev.jid = r->jid;
    if (result != SEALROOM_OK) {
        if (!text)
            text = sealroom_strerror(result);
        snprintf(ctx->last_error, sizeof ctx->last_error, "%s", text);
        ev.error_text = ctx->last_error;
        sr_log(ctx, SEALROOM_LOG_INFO, "request %" PRIu32 " failed: %s", r->id, text);
    }
    sr_emit(ctx, &ev);
    sr_request_free(r);
}

/* Fails a request from within a handler, using ctx->last_error as text. */
void sr_request_fail(sealroom_ctx *ctx, sr_request *r, int rc)
{
    char text[sizeof ctx->last_error];
    snprintf(text, sizeof text, "%s", ctx->last_error[0] ? ctx->last_error : sealroom_strerror(rc));
    sr_request_done(ctx, r, rc, text, NULL);
}

static void fail_with_last(sealroom_ctx *ctx, sr_request *r, int rc)
{
    char text[sizeof ctx->last_error];
    snprintf(text, sizeof text, "%s", ctx->last_error[0] ? ctx->last_error : sealroom_strerror(rc));
    sr_request_done(ctx, r, rc, text, NULL);
}

/* ---- error stanzas ---- */

static const struct {
    const char *cond;
    int result;
} std_conditions[] = {
    {"item-not-found", SEALROOM_E_NOT_FOUND},
    {"recipient-unavailable", SEALROOM_E_NOT_FOUND},
    {"forbidden", SEALROOM_E_FORBIDDEN},
    {"not-authorized", SEALROOM_E_FORBIDDEN},
    {"registration-required", SEALROOM_E_FORBIDDEN},
    {"not-allowed", SEALROOM_E_FORBIDDEN},
    {"not-acceptable", SEALROOM_E_FORBIDDEN},
    {"subscription-required", SEALROOM_E_FORBIDDEN},
    {"conflict", SEALROOM_E_CONFLICT},
    {"bad-request", SEALROOM_E_PROTOCOL},
    {"feature-not-implemented", SEALROOM_E_PROTOCOL},
    {"service-unavailable", SEALROOM_E_UNAVAILABLE},
    {"remote-server-timeout", SEALROOM_E_UNAVAILABLE},
    {"remote-server-not-found", SEALROOM_E_UNAVAILABLE},
    {"resource-constraint", SEALROOM_E_UNAVAILABLE},
};

static const struct {
    const char *cond;
    int result;
} app_conditions[] = {
    {"stale-version", SEALROOM_E_STALE},     {"too-large", SEALROOM_E_TOO_LARGE},
    {"bad-signature", SEALROOM_E_VERIFY},    {"bad-chain", SEALROOM_E_VERIFY},
    {"unknown-identity", SEALROOM_E_NOT_FOUND}, {"not-member", SEALROOM_E_FORBIDDEN},
    {"bad-role", SEALROOM_E_FORBIDDEN},      {"sealed-required", SEALROOM_E_PROTOCOL},
    {"vault-conflict", SEALROOM_E_CONFLICT}, {"no-vault", SEALROOM_E_NOT_FOUND},
    {"rate-limited", SEALROOM_E_RATE_LIMITED}, {"bad-vault", SEALROOM_E_PROTOCOL},
    {"stale-roster", SEALROOM_E_STALE},      {"epoch-conflict", SEALROOM_E_CONFLICT},
    {"bad-envelope", SEALROOM_E_VERIFY},     {"no-epoch", SEALROOM_E_NO_KEY},
    {"stale-epoch", SEALROOM_E_STALE},       {"bad-point", SEALROOM_E_PROTOCOL},
    {"datakey-conflict", SEALROOM_E_CONFLICT}, {"bad-payload", SEALROOM_E_PROTOCOL},
    {"unknown-run", SEALROOM_E_CONFLICT},    {"bad-round", SEALROOM_E_PROTOCOL},
    {"batch-sealed", SEALROOM_E_STALE},      {"bad-cover", SEALROOM_E_PROTOCOL},
    {"keyring-needed", SEALROOM_E_UNAVAILABLE}, {"stale-keyring", SEALROOM_E_STALE},
    {"lease-expired", SEALROOM_E_NOT_FOUND},
};

const char *sr_error_app(xmpp_stanza_t *st)
{
    xmpp_stanza_t *err = st ? sr_child(st, "error", NULL) : NULL;
    for (xmpp_stanza_t *c = err ? xmpp_stanza_get_children(err) : NULL; c;
         c = xmpp_stanza_get_next(c)) {
        const char *ns = xmpp_stanza_get_ns(c);
        if (xmpp_stanza_is_tag(c) && ns && strcmp(ns, SR_NS) == 0)
            return xmpp_stanza_get_name(c);
    }
    return NULL;
}

int sr_error_from_stanza(xmpp_stanza_t *st, char *text, size_t textlen)
{
    xmpp_stanza_t *err = sr_child(st, "error", NULL);
    const char *cond = NULL, *app = NULL;
    char *msg = NULL;
    int rc = SEALROOM_E_REMOTE;

    if (err) {
        for (xmpp_stanza_t *c = xmpp_stanza_get_children(err); c; c = xmpp_stanza_get_next(c)) {
            const char *name = xmpp_stanza_is_tag(c) ? xmpp_stanza_get_name(c) : NULL;
            const char *ns = xmpp_stanza_get_ns(c);
            if (!name || !ns)
                continue;
            if (strcmp(ns, SR_NS_STANZAS) == 0) {
                if (strcmp(name, "text") == 0) {
                    if (!msg)
                        msg = xmpp_stanza_get_text(c);
                } else if (!cond) {
                    cond = name;
                }
            } else if (strcmp(ns, SR_NS) == 0 && !app) {
                app = name;
            }
        }
    }
    if (cond)
        for (size_t i = 0; i < sizeof std_conditions / sizeof *std_conditions; i++)
            if (strcmp(cond, std_conditions[i].cond) == 0)
                rc = std_conditions[i].result;
    if (app)
        for (size_t i = 0; i < sizeof app_conditions / sizeof *app_conditions; i++)
            if (strcmp(app, app_conditions[i].cond) == 0)
                rc = app_conditions[i].result;
    if (text && textlen) {
        snprintf(text, textlen, "%s%s%s%s%s", cond ? cond : "undefined-condition", app ? "/" : "",
                 app ? app : "", msg ? ": " : "", msg ? msg : "");
    }
    if (msg)
        xmpp_free(xmpp_stanza_get_context(st), msg);
    return rc;
}

/* ---- helpers ---- */

bool sr_parse_u64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9' || (s[0] == '0' && s[1]))
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* Sends an IQ whose single child is child (ownership taken) and records
 * it as r's outstanding IQ. */
static int send_iq(sealroom_ctx *ctx, sr_request *r, const char *type, const char *to,
                   xmpp_stanza_t *child)
{
    int rc = SEALROOM_E_NOMEM;
    sr_new_id(ctx, r->iq_id);
    xmpp_stanza_t *iq = xmpp_iq_new(ctx->xmpp, type, r->iq_id);
    if (!child || !iq)
        goto out;
    free(r->iq_to);
    r->iq_to = sr_strdup(to);
    if (!r->iq_to || xmpp_stanza_set_to(iq, to) != XMPP_EOK ||
        xmpp_stanza_add_child_ex(iq, child, 0) != XMPP_EOK)
        goto out;
    child = NULL;
    rc = sr_send(ctx, iq);
    if (rc < 0)
        sr_fail(ctx, rc, "could not send the request");
out:
    if (child)
        xmpp_stanza_release(child);
    if (iq)
        xmpp_stanza_release(iq);
    if (rc == SEALROOM_E_NOMEM)
        sr_fail(ctx, rc, "out of memory");
    return rc;
}

static int need_link(sealroom_ctx *ctx)
{
    if (!ctx->link_up)
        return sr_fail(ctx, SEALROOM_E_STATE, "the link to the server is down");
    return SEALROOM_OK;
}

int sr_iq_call_owned(sealroom_ctx *ctx, const char *type, const char *to, xmpp_stanza_t *child,
                     sr_iq_cb cb, void *arg, void (*arg_free)(void *))
{
    int rc = sr_iq_call(ctx, type, to, child, cb, arg);
    if (rc == SEALROOM_OK)
        ctx->requests->cb_free = arg_free; /* sr_request_new links it first */
    return rc;
}

int sr_iq_call(sealroom_ctx *ctx, const char *type, const char *to, xmpp_stanza_t *child,
               sr_iq_cb cb, void *arg)
{
    if (!ctx->link_up) {
        if (child)
            xmpp_stanza_release(child);
        return sr_fail(ctx, SEALROOM_E_STATE, "the link to the server is down");
    }
    sr_request *r = sr_request_new(ctx, SR_REQ_INTERNAL);
    if (!r) {
        if (child)
            xmpp_stanza_release(child);
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    }
    r->cb = cb;
    r->cb_arg = arg;
    int rc = send_iq(ctx, r, type, to, child);
    if (rc < 0) {
        sr_request_unlink(ctx, r);
        r->cb = NULL;
        sr_request_free(r);
    }
    return rc;
}

/* Starts a request: on a local failure nothing is emitted and the request
 * disappears, so the caller sees the error code directly. */
static int start_or_drop(sealroom_ctx *ctx, sr_request *r, int rc, uint32_t *request_id)
{
    if (rc < 0) {
        sr_request_unlink(ctx, r);
        sr_request_free(r);
        return rc;
    }
    if (request_id)
        *request_id = r->id;
    return SEALROOM_OK;
}

static void remember_key(sealroom_ctx *ctx, const char *jid, const unsigned char pk[SR_KEY_BYTES])
{
    for (sr_known_key *k = ctx->keys; k; k = k->next)
        if (strcmp(k->jid, jid) == 0) {
            memcpy(k->pk, pk, SR_KEY_BYTES);
            return;
        }
    sr_known_key *k = calloc(1, sizeof *k);
    if (!k || !(k->jid = sr_strdup(jid))) {
        free(k);
        return;
    }
    memcpy(k->pk, pk, SR_KEY_BYTES);
    k->next = ctx->keys;
    ctx->keys = k;
}

/* ---- identity ---- */

/* <identity key sig box-key bundle-sig/> for our identity, or NULL. */
xmpp_stanza_t *sr_identity_element(sealroom_ctx *ctx)
{
    char key[64], sig[128], box[64], bsig[128];
    unsigned char sigbin[SR_SIG_BYTES], bsigbin[SR_SIG_BYTES];
    const sealroom_identity *id = ctx->identity;
    if (!sr_identity_proof_sign(sigbin, ctx->own_bare, id->pk, id->sk) ||
        sr_e2e_bundle_sign(bsigbin, ctx->own_bare, &id->e2e) != SR_E2E_OK)
        return NULL;
    sr_b64_encode(key, sizeof key, id->pk, SR_KEY_BYTES);
    sr_b64_encode(sig, sizeof sig, sigbin, SR_SIG_BYTES);
    sr_b64_encode(box, sizeof box, id->e2e.box_pk, 32);
    sr_b64_encode(bsig, sizeof bsig, bsigbin, SR_SIG_BYTES);
    xmpp_stanza_t *el = sr_el(ctx->xmpp, "identity", SR_NS);
    if (el && (xmpp_stanza_set_attribute(el, "key", key) != XMPP_EOK ||
               xmpp_stanza_set_attribute(el, "sig", sig) != XMPP_EOK ||
               xmpp_stanza_set_attribute(el, "box-key", box) != XMPP_EOK ||
               xmpp_stanza_set_attribute(el, "bundle-sig", bsig) != XMPP_EOK)) {
        xmpp_stanza_release(el);
        el = NULL;
    }
    return el;
}

int sealroom_identity_register(sealroom_ctx *ctx, uint32_t *request_id)
{
    if (!ctx)
        return SEALROOM_E_INVALID;
    if (!ctx->identity)
        return sr_fail(ctx, SEALROOM_E_STATE, "no identity set");
    int rc = need_link(ctx);
    if (rc < 0)
        return rc;
    sr_request *r = sr_request_new(ctx, SEALROOM_REQ_IDENTITY_REGISTER);
    if (!r)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    rc = send_iq(ctx, r, "set", ctx->service, sr_identity_element(ctx));
    return start_or_drop(ctx, r, rc, request_id);
}

static int send_identity_fetch(sealroom_ctx *ctx, sr_request *r)
{
    xmpp_stanza_t *el = sr_el(ctx->xmpp, "identity", SR_NS);
    if (el && xmpp_stanza_set_attribute(el, "jid", r->jid) != XMPP_EOK) {
        xmpp_stanza_release(el);
        el = NULL;
    }
    return send_iq(ctx, r, "get", ctx->service, el);
}

int sealroom_identity_fetch(sealroom_ctx *ctx, uint32_t *request_id, const char *jid)
{
    char bare[SR_BARE_JID_MAX];
    if (!ctx)
        return SEALROOM_E_INVALID;
    if (!jid || !sr_jid_normalise_bare(bare, sizeof bare, jid) || !strchr(bare, '@'))
        return sr_fail(ctx, SEALROOM_E_INVALID, "invalid JID");
    int rc = need_link(ctx);
    if (rc < 0)
        return rc;
    sr_request *r = sr_request_new(ctx, SEALROOM_REQ_IDENTITY_FETCH);
    if (!r || !(r->jid = sr_strdup(bare))) {
        if (r) {
            sr_request_unlink(ctx, r);
            sr_request_free(r);
        }
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    }
    rc = send_identity_fetch(ctx, r);
    return start_or_drop(ctx, r, rc, request_id);
}

/* Verifies an <identity/> answer for r->jid (proof, bundle, pin); fills pk. */
static int parse_identity(sealroom_ctx *ctx, sr_request *r, xmpp_stanza_t *iq,
                          unsigned char pk[SR_KEY_BYTES])
{
    unsigned char sig[SR_SIG_BYTES], box[32], bsig[SR_SIG_BYTES];
    char bare[SR_BARE_JID_MAX];
    xmpp_stanza_t *el = sr_child(iq, "identity", SR_NS);
    if (!el)
        return sr_fail(ctx, SEALROOM_E_PROTOCOL, "identity answer without <identity/>");
    const char *jid = xmpp_stanza_get_attribute(el, "jid");
    if (jid && (!sr_jid_normalise_bare(bare, sizeof bare, jid) || strcmp(bare, r->jid) != 0))
        return sr_fail(ctx, SEALROOM_E_PROTOCOL, "identity answer for another JID");
    if (!sr_b64_decode_exact(pk, SR_KEY_BYTES, xmpp_stanza_get_attribute(el, "key")) ||
        !sr_b64_decode_exact(sig, SR_SIG_BYTES, xmpp_stanza_get_attribute(el, "sig")))
        return sr_fail(ctx, SEALROOM_E_PROTOCOL, "identity answer with a malformed key or sig");
    if (!sr_identity_proof_verify(sig, r->jid, pk))
        return sr_fail(ctx, SEALROOM_E_VERIFY, "identity proof of %s does not verify", r->jid);
    if (!sr_b64_decode_exact(box, sizeof box, xmpp_stanza_get_attribute(el, "box-key")) ||
        !sr_b64_decode_exact(bsig, sizeof bsig, xmpp_stanza_get_attribute(el, "bundle-sig")))
        return sr_fail(ctx, SEALROOM_E_PROTOCOL, "identity of %s without a sealing key", r->jid);
    if (sr_e2e_bundle_verify(bsig, r->jid, pk, box) != SR_E2E_OK)
        return sr_fail(ctx, SEALROOM_E_VERIFY, "sealing key of %s is not signed by its identity",
                       r->jid);
    int rc = sr_pin_check(ctx, r->jid, pk, box);
    if (rc < 0)
        return rc;
    remember_key(ctx, r->jid, pk);
    return SEALROOM_OK;
}

/* ---- roster: create, update, sync ---- */

int sr_room_jid(sealroom_ctx *ctx, char *out, size_t outlen, const char *room)
{
    char tmp[SR_BARE_JID_MAX];
    sr_jid j;
    if (!room || !*room)
        return SEALROOM_E_INVALID;
    if (!strchr(room, '@')) {
        if ((size_t)snprintf(tmp, sizeof tmp, "%s@%s", room, ctx->service) >= sizeof tmp)
            return SEALROOM_E_INVALID;
        room = tmp;
    }
    if (!sr_jid_parse(&j, room) || !j.local[0] || j.resource[0] ||
        strcmp(j.domain, ctx->service) != 0 || !sr_jid_bare(out, outlen, &j))
        return sr_fail(ctx, SEALROOM_E_INVALID, "invalid room JID (must be a room at %s)",
                       ctx->service);
    return SEALROOM_OK;
}

static void emit_roster_changed(sealroom_ctx *ctx, sr_room *room)
{
    sealroom_event ev = {0};
    ev.type = SEALROOM_EVENT_ROSTER_CHANGED;
    ev.room = room->jid;
    ev.roster_version = room->roster.version;
    sr_emit(ctx, &ev);
}

static int map_roster_err(sealroom_ctx *ctx, sr_roster_err err)
{
    const char *why = sr_roster_err_text(err);
    switch (err) {
    case SR_ROSTER_OK: return SEALROOM_OK;
    case SR_ROSTER_ERR_NOMEM: return sr_fail(ctx, SEALROOM_E_NOMEM, "%s", why);
    case SR_ROSTER_ERR_SIGNER:
    case SR_ROSTER_ERR_RULE: return sr_fail(ctx, SEALROOM_E_FORBIDDEN, "%s", why);
    case SR_ROSTER_ERR_SIGNATURE:
        return sr_fail(ctx, SEALROOM_E_VERIFY, "our identity key is not the one in the roster");
    case SR_ROSTER_ERR_STALE:
    case SR_ROSTER_ERR_CHAIN: return sr_fail(ctx, SEALROOM_E_STALE, "%s", why);
    case SR_ROSTER_ERR_MALFORMED: break;
    }
    return sr_fail(ctx, SEALROOM_E_INVALID, "%s", why);
}

int sealroom_room_create(sealroom_ctx *ctx, uint32_t *request_id, const char *room_name)
{
    char room[SR_BARE_JID_MAX];
    if (!ctx)
        return SEALROOM_E_INVALID;
    int rc = sr_room_jid(ctx, room, sizeof room, room_name);
    if (rc < 0)
        return rc;
    if (!ctx->identity)
        return sr_fail(ctx, SEALROOM_E_STATE, "no identity set");
    if ((rc = need_link(ctx)) < 0)
        return rc;
    sr_request *r = sr_request_new(ctx, SEALROOM_REQ_ROOM_CREATE);
    if (!r)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    rc = SEALROOM_E_NOMEM;
    sr_roster_version *v = r->pending = calloc(1, sizeof *v);
    if (!v || !(r->room = sr_strdup(room)))
        goto out;
    snprintf(v->room, sizeof v->room, "%s", room);
    snprintf(v->signer, sizeof v->signer, "%s", ctx->own_bare);
    v->nops = 1;
    v->ops[0].kind = SR_OP_ADD;
    snprintf(v->ops[0].jid, sizeof v->ops[0].jid, "%s", ctx->own_bare);
    v->ops[0].role = SR_ROLE_OWNER;
    memcpy(v->ops[0].key, ctx->identity->pk, SR_KEY_BYTES);
    if (!sr_roster_sign(v, ctx->identity->sk))
        goto out;
    sr_roster_state empty;
    sr_roster_state_init(&empty);
    if ((rc = map_roster_err(ctx, sr_roster_check(&empty, v))) < 0)
        goto out;
    xmpp_stanza_t *create = sr_el(ctx->xmpp, "create", SR_NS);
    xmpp_stanza_t *roster = sr_roster_to_xml(ctx->xmpp, v);
    rc = SEALROOM_E_NOMEM;
    if (!create || !roster || xmpp_stanza_add_child_ex(create, roster, 0) != XMPP_EOK) {
        if (create)
            xmpp_stanza_release(create);
        if (roster)
            xmpp_stanza_release(roster);
        sr_fail(ctx, rc, "out of memory");
        goto out;
    }
    rc = send_iq(ctx, r, "set", room, create);
out:
    if (rc == SEALROOM_E_NOMEM)
        sr_fail(ctx, rc, "out of memory");
    return start_or_drop(ctx, r, rc, request_id);
}

static int send_chain_query(sealroom_ctx *ctx, sr_request *r)
{
    char from[24], max[8];
    uint64_t next = r->scratch.exists ? r->scratch.version + 1 : 0;
    snprintf(from, sizeof from, "%" PRIu64, next);
    snprintf(max, sizeof max, "%d", SR_CHAIN_PAGE);
    xmpp_stanza_t *el = sr_el(ctx->xmpp, "chain", SR_NS);
    if (el && (xmpp_stanza_set_attribute(el, "from", from) != XMPP_EOK ||
               xmpp_stanza_set_attribute(el, "max", max) != XMPP_EOK)) {
        xmpp_stanza_release(el);
        el = NULL;
    }
    return send_iq(ctx, r, "get", r->room, el);
}

/* Begins verifying the chain from our verified head (or from scratch). */
static int start_sync(sealroom_ctx *ctx, sr_request *r)
{
    sr_room *room = sr_room_get(ctx, r->room);
    if (!room)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    if (r->scratch_live)
        sr_roster_state_free(&r->scratch);
    r->scratch_live = false;
    if (room->roster_known) {
        if (sr_roster_state_copy(&r->scratch, &room->roster) != SR_ROSTER_OK)
            return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    } else {
        sr_roster_state_init(&r->scratch);
    }
    r->scratch_live = true;
    if (r->hist) {
        sr_hist_free(r->hist);
        free(r->hist);
        r->hist = NULL;
    }
    r->step = SR_STEP_SYNC;
    return send_chain_query(ctx, r);
}

int sr_sync_call(sealroom_ctx *ctx, const char *room, sr_iq_cb cb, void *arg)
{
    if (!ctx->link_up)
        return sr_fail(ctx, SEALROOM_E_STATE, "the link to the server is down");
    sr_request *r = sr_request_new(ctx, SR_REQ_INTERNAL);
    if (!r)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    r->cb = cb;
    r->cb_arg = arg;
    int rc = (r->room = sr_strdup(room)) ? start_sync(ctx, r)
                                          : sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    if (rc < 0) {
        sr_request_unlink(ctx, r);
        r->cb = NULL;
        sr_request_free(r);
    }
    return rc;
}

/* Next step of a roster update: key lookup, sync, then the signed version. */
static int roster_advance(sealroom_ctx *ctx, sr_request *r, bool force_sync)
{
    /* Refuse what the verified roster already rules out before any
     * round trip (the key check below is one). */
    const sr_room *known = sr_room_find(ctx, r->room);
    if (!force_sync && r->op == SR_OP_ADD && known && known->roster_known &&
        sr_roster_find(&known->roster, r->jid))
        return sr_fail(ctx, SEALROOM_E_CONFLICT, "%s is already a member", r->jid);
    if (r->op == SR_OP_ADD && !r->have_key) {
        /* Always the registered key as of now, checked against the pin: a
         * cached key could hide a change. */
        r->step = SR_STEP_FETCH_KEY;
        return send_identity_fetch(ctx, r);
    }
    sr_room *room = sr_room_get(ctx, r->room);
    if (!room)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    if (!room->roster_known || force_sync) {
        r->then_submit = true;
        return start_sync(ctx, r);
    }

    const sr_member *m = sr_roster_find(&room->roster, r->jid);
    if (r->op == SR_OP_ADD && m)
        return sr_fail(ctx, SEALROOM_E_CONFLICT, "%s is already a member", r->jid);
    if (r->op != SR_OP_ADD && !m)
        return sr_fail(ctx, SEALROOM_E_NOT_FOUND, "%s is not a member", r->jid);

    free(r->pending);
    sr_roster_version *v = r->pending = calloc(1, sizeof *v);
    if (!v)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    snprintf(v->room, sizeof v->room, "%s", r->room);
    snprintf(v->signer, sizeof v->signer, "%s", ctx->own_bare);
    v->version = room->roster.version + 1;
    memcpy(v->prev, room->roster.head, SR_ROSTER_HASH_BYTES);
    v->nops = 1;
    v->ops[0].kind = r->op;
    snprintf(v->ops[0].jid, sizeof v->ops[0].jid, "%s", r->jid);
    v->ops[0].role = r->op == SR_OP_REMOVE ? SR_ROLE_NONE : r->role;
    if (r->op == SR_OP_ADD)
        memcpy(v->ops[0].key, r->key, SR_KEY_BYTES);
    if (!sr_roster_sign(v, ctx->identity->sk))
        return sr_fail(ctx, SEALROOM_E_NOMEM, "cannot sign the roster version");
    int rc = map_roster_err(ctx, sr_roster_check(&room->roster, v));
    if (rc < 0)
        return rc;
    xmpp_stanza_t *el = sr_roster_to_xml(ctx->xmpp, v);
    r->step = SR_STEP_SUBMIT;
    return send_iq(ctx, r, "set", r->room, el);
}

static int roster_update(sealroom_ctx *ctx, uint32_t *request_id, const char *room_name,
                         const char *jid, sr_op_kind op, sealroom_role role,
                         const unsigned char *pk)
{
    char room[SR_BARE_JID_MAX], bare[SR_BARE_JID_MAX];
    if (!ctx)
        return SEALROOM_E_INVALID;
    int rc = sr_room_jid(ctx, room, sizeof room, room_name);
    if (rc < 0)
        return rc;
    if (!jid || !sr_jid_normalise_bare(bare, sizeof bare, jid) || !strchr(bare, '@'))
        return sr_fail(ctx, SEALROOM_E_INVALID, "invalid member JID");
    if (op != SR_OP_REMOVE && (role < SEALROOM_ROLE_MEMBER || role > SEALROOM_ROLE_OWNER))
        return sr_fail(ctx, SEALROOM_E_INVALID, "invalid role");
    if (!ctx->identity)
        return sr_fail(ctx, SEALROOM_E_STATE, "no identity set");
    if ((rc = need_link(ctx)) < 0)
        return rc;
    sr_request *r = sr_request_new(ctx, SEALROOM_REQ_ROSTER_UPDATE);
    if (!r)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    r->op = op;
    r->role = (sr_role)role;
    if (pk) {
        memcpy(r->key, pk, SR_KEY_BYTES);
        memcpy(r->given_key, pk, SR_KEY_BYTES);
        /* A key the app hands over for a user we have pinned is checked
         * against the registered, pinned identity before we sign it. */
        char bare_pk[SR_BARE_JID_MAX];
        r->key_given = true;
        r->have_key = !(ctx->vault && sr_jid_normalise_bare(bare_pk, sizeof bare_pk, jid) &&
                        sr_e2e_vault_pin_get(ctx->vault, bare_pk));
    }
    if (!(r->room = sr_strdup(room)) || !(r->jid = sr_strdup(bare)))
        rc = sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    else
        rc = roster_advance(ctx, r, false);
    return start_or_drop(ctx, r, rc, request_id);
}

int sealroom_room_add_member(sealroom_ctx *ctx, uint32_t *request_id, const char *room,
                             const char *jid, sealroom_role role, const unsigned char *pk)
{
    return roster_update(ctx, request_id, room, jid, SR_OP_ADD, role, pk);
}

int sealroom_room_remove_member(sealroom_ctx *ctx, uint32_t *request_id, const char *room,
                                const char *jid)
{
    return roster_update(ctx, request_id, room, jid, SR_OP_REMOVE, SEALROOM_ROLE_NONE, NULL);
}

int sealroom_room_set_role(sealroom_ctx *ctx, uint32_t *request_id, const char *room,
                           const char *jid, sealroom_role role)
{
    return roster_update(ctx, request_id, room, jid, SR_OP_ROLE, role, NULL);
}

int sealroom_room_sync(sealroom_ctx *ctx, uint32_t *request_id, const char *room_name)
{
    char room[SR_BARE_JID_MAX];
    if (!ctx)
        return SEALROOM_E_INVALID;
    int rc = sr_room_jid(ctx, room, sizeof room, room_name);
    if (rc < 0)
        return rc;
    if ((rc = need_link(ctx)) < 0)
        return rc;
    sr_request *r = sr_request_new(ctx, SEALROOM_REQ_ROSTER_SYNC);
    if (!r)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    if (!(r->room = sr_strdup(room)))
        rc = sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    else
        rc = start_sync(ctx, r);
    return start_or_drop(ctx, r, rc, request_id);
}

/* Commits a verified version we submitted (create or update). */
static int commit_own(sealroom_ctx *ctx, sr_request *r, xmpp_stanza_t *iq)
{
    sr_room *room = sr_room_get(ctx, r->room);
    if (!room)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    bool reset = r->kind == SEALROOM_REQ_ROOM_CREATE;
    if (reset) {
        if (room->roster_known)
            sr_roster_state_free(&room->roster);
        sr_roster_state_init(&room->roster);
        room->roster_known = false;
    }
    sr_roster_state next;
    if (room->roster_known) {
        if (sr_roster_state_copy(&next, &room->roster) != SR_ROSTER_OK)
            return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    } else {
        sr_roster_state_init(&next);
    }
    sr_roster_err err = sr_roster_apply(&next, r->pending);
    if (err) {
        sr_roster_state_free(&next);
        return sr_fail(ctx, SEALROOM_E_VERIFY, "own roster version no longer applies: %s",
                       sr_roster_err_text(err));
    }
    /* The service's view of the head must be the version we signed. */
    xmpp_stanza_t *head = sr_child(iq, "roster-head", SR_NS);
    if (head) {
        unsigned char h[SR_ROSTER_HASH_BYTES];
        uint64_t ver;
        if (!sr_parse_u64(xmpp_stanza_get_attribute(head, "version"), &ver) ||
            ver != next.version ||
            !sr_b64_decode_exact(h, sizeof h, xmpp_stanza_get_attribute(head, "hash")) ||
            sodium_memcmp(h, next.head, sizeof h) != 0) {
            sr_roster_state_free(&next);
            return sr_fail(ctx, SEALROOM_E_VERIFY, "service reports a different roster head");
        }
    }
    sr_hist *h = NULL;
    if (sr_hist_note(&h, r->pending, next.head) < 0) {
        sr_roster_state_free(&next);
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    }
    if (room->roster_known)
        sr_roster_state_free(&room->roster);
    room->roster = next;
    room->roster_known = true;
    sr_room_hist_commit(room, h, reset);
    free(h);
    emit_roster_changed(ctx, room);
    return SEALROOM_OK;
}

/* One page of <chain/>: verify every version into r->scratch. */
static int sync_page(sealroom_ctx *ctx, sr_request *r, xmpp_stanza_t *iq, bool *finished)
{
    *finished = false;
    xmpp_stanza_t *chain = sr_child(iq, "chain", SR_NS);
    if (!chain)
        return sr_fail(ctx, SEALROOM_E_PROTOCOL, "chain answer without <chain/>");
    uint64_t head = 0;
    const char *head_s = xmpp_stanza_get_attribute(chain, "head");
    bool have_head = head_s && sr_parse_u64(head_s, &head);
    if (head_s && !have_head)
        return sr_fail(ctx, SEALROOM_E_PROTOCOL, "bad chain head '%s'", head_s);
    const char *complete_s = xmpp_stanza_get_attribute(chain, "complete");
    bool complete = complete_s && (strcmp(complete_s, "true") == 0 || strcmp(complete_s, "1") == 0);

    sr_roster_version *v = malloc(sizeof *v);
    if (!v)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    unsigned count = 0;
    int rc = SEALROOM_OK;
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(chain); c; c = xmpp_stanza_get_next(c)) {
        const char *name = xmpp_stanza_is_tag(c) ? xmpp_stanza_get_name(c) : NULL;
        if (!name || strcmp(name, "roster") != 0)
            continue;
        const char *why = NULL;
        uint64_t expect = r->scratch.exists ? r->scratch.version + 1 : 0;
        if (!sr_roster_from_xml(v, c, &why)) {
            rc = sr_fail(ctx, SEALROOM_E_VERIFY, "roster version %" PRIu64 " malformed: %s",
                         expect, why);
            break;
        }
        if (strcmp(v->room, r->room) != 0) {
            rc = sr_fail(ctx, SEALROOM_E_VERIFY, "chain contains a version of another room");
            break;
        }
        sr_roster_err err = sr_roster_apply(&r->scratch, v);
        if (err == SR_ROSTER_ERR_NOMEM) {
            rc = sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
            break;
        }
        if (err) {
            rc = sr_fail(ctx, SEALROOM_E_VERIFY, "roster version %" PRIu64 " rejected: %s",
                         v->version, sr_roster_err_text(err));
            break;
        }
        if (sr_hist_note(&r->hist, v, r->scratch.head) < 0) {
            rc = sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
            break;
        }
        count++;
    }
    free(v);
    if (rc < 0)
        return rc;
    if (!complete) {
        if (count == 0)
            return sr_fail(ctx, SEALROOM_E_PROTOCOL, "incomplete chain page without versions");
        return send_chain_query(ctx, r);
    }
    if (!r->scratch.exists)
        return sr_fail(ctx, SEALROOM_E_VERIFY, "the service returned an empty roster chain");
    if (have_head && head != r->scratch.version)
        return sr_fail(ctx, SEALROOM_E_VERIFY,
                       "service claims head %" PRIu64 " but the verified chain ends at %" PRIu64,
                       head, r->scratch.version);

    sr_room *room = sr_room_get(ctx, r->room);
    if (!room)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    bool changed = !room->roster_known || room->roster.version != r->scratch.version;
    bool reset = !room->roster_known;
    if (room->roster_known)
        sr_roster_state_free(&room->roster);
    room->roster = r->scratch;
    room->roster_known = true;
    r->scratch_live = false;
    if (r->hist) {
        sr_room_hist_commit(room, r->hist, reset);
        free(r->hist);
        r->hist = NULL;
    }
    if (changed)
        emit_roster_changed(ctx, room);
    *finished = true;
    return SEALROOM_OK;
}

/* ---- history ---- */

int sealroom_room_history(sealroom_ctx *ctx, uint32_t *request_id, const char *room_name,
                          const char *before_id, unsigned max)
{
    char room[SR_BARE_JID_MAX], maxs[16];
    if (!ctx)
        return SEALROOM_E_INVALID;
    int rc = sr_room_jid(ctx, room, sizeof room, room_name);
    if (rc < 0)
        return rc;
    if ((rc = need_link(ctx)) < 0)
        return rc;
    sr_request *r = sr_request_new(ctx, SEALROOM_REQ_HISTORY);
    if (!r)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    sr_new_id(ctx, r->queryid);
    xmpp_stanza_t *query = sr_el(ctx->xmpp, "query", SR_NS_MAM);
    xmpp_stanza_t *set = sr_el(ctx->xmpp, "set", SR_NS_RSM);
    bool ok = query && set && (r->room = sr_strdup(room)) &&
              xmpp_stanza_set_attribute(query, "queryid", r->queryid) == XMPP_EOK;
    if (ok && max) {
        snprintf(maxs, sizeof maxs, "%u", max);
        ok = sr_add_text_child(ctx->xmpp, set, "max", NULL, maxs, strlen(maxs));
    }
    if (ok)
        ok = sr_add_text_child(ctx->xmpp, set, "before", NULL, before_id ? before_id : "",
                               before_id ? strlen(before_id) : 0);
    if (ok && xmpp_stanza_add_child_ex(query, set, 0) == XMPP_EOK)
        set = NULL;
    else
        ok = false;
    if (set)
        xmpp_stanza_release(set);
    if (!ok) {
        if (query)
            xmpp_stanza_release(query);
        rc = sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    } else {
        rc = send_iq(ctx, r, "set", room, query);
    }
    return start_or_drop(ctx, r, rc, request_id);
}

void sr_history_fin(sealroom_ctx *ctx, sr_request *r, xmpp_stanza_t *iq)
{
    xmpp_stanza_t *fin = sr_child(iq, "fin", SR_NS_MAM);
    if (!fin) {
        sr_request_done(ctx, r, SEALROOM_E_PROTOCOL, "history answer without <fin/>", NULL);
        return;
    }
    sr_page_done(ctx, r, fin);
}

void sr_page_done(sealroom_ctx *ctx, sr_request *r, xmpp_stanza_t *fin)
{
    sealroom_event ev = {0};
    const char *complete = xmpp_stanza_get_attribute(fin, "complete");
    ev.complete = complete && (strcmp(complete, "true") == 0 || strcmp(complete, "1") == 0);
    xmpp_stanza_t *set = sr_child(fin, "set", SR_NS_RSM);
    xmpp_stanza_t *first = set ? sr_child(set, "first", NULL) : NULL;
    xmpp_stanza_t *last = set ? sr_child(set, "last", NULL) : NULL;
    char *f = first ? xmpp_stanza_get_text(first) : NULL;
    char *l = last ? xmpp_stanza_get_text(last) : NULL;
    r->first = sr_strdup(f);
    r->last = sr_strdup(l);
    if (f)
        xmpp_free(ctx->xmpp, f);
    if (l)
        xmpp_free(ctx->xmpp, l);
    ev.first = r->first;
    ev.last = r->last;
    sr_request_done(ctx, r, SEALROOM_OK, NULL, &ev);
}

int sr_handle_mam_result(sealroom_ctx *ctx, xmpp_stanza_t *st, xmpp_stanza_t *result)
{
    const char *qid = xmpp_stanza_get_attribute(result, "queryid");
    char from[SR_BARE_JID_MAX];
    if (!qid || !sr_jid_normalise_bare(from, sizeof from, xmpp_stanza_get_from(st)))
        return 0;
    for (sr_request *r = ctx->requests; r; r = r->next) {
        if (r->kind != SEALROOM_REQ_HISTORY || strcmp(r->queryid, qid) != 0)
            continue;
        /* Only the queried room may feed results into this query. */
        if (strcmp(r->room, from) != 0)
            return 0;
        xmpp_stanza_t *fwd = sr_child(result, "forwarded", SR_NS_FORWARD);
        xmpp_stanza_t *inner = fwd ? sr_child(fwd, "message", NULL) : NULL;
        if (!inner) {
            sr_log(ctx, SEALROOM_LOG_WARN, "history result without a forwarded message");
            return 1;
        }
        int64_t ts = ctx->have_time ? (int64_t)ctx->now_ms : 0;
        xmpp_stanza_t *delay = sr_child(fwd, "delay", SR_NS_DELAY);
        if (delay)
            sr_parse_stamp(xmpp_stanza_get_attribute(delay, "stamp"), &ts);
        sr_room *room = sr_room_get(ctx, r->room);
        if (room)
            sr_inbox_push(ctx, room, inner, xmpp_stanza_get_attribute(result, "id"), ts, true);
        return 1;
    }
    return 0;
}

/* ---- IQ answers ---- */

int sr_handle_iq(sealroom_ctx *ctx, xmpp_stanza_t *st)
{
    const char *type = xmpp_stanza_get_type(st), *id = xmpp_stanza_get_id(st);
    if (!type || !id || (strcmp(type, "result") != 0 && strcmp(type, "error") != 0))
        return 0;
    sr_request *r = ctx->requests;
    while (r && (!r->iq_id[0] || strcmp(r->iq_id, id) != 0))
        r = r->next;
    if (!r)
        return 0;
    /* An answer must come from whom we asked; anything else is not ours. */
    char from[SR_BARE_JID_MAX];
    if (!sr_jid_normalise_bare(from, sizeof from, xmpp_stanza_get_from(st)) ||
        strcmp(from, r->iq_to) != 0)
        return 0;
    r->iq_id[0] = '\0';

    if (r->cb && r->step != SR_STEP_SYNC) {
        char text[sizeof ctx->last_error];
        int rc = SEALROOM_OK;
        if (strcmp(type, "error") == 0)
            rc = sr_error_from_stanza(st, text, sizeof text);
        sr_request_unlink(ctx, r);
        sr_iq_cb cb = r->cb;
        r->cb = NULL;
        cb(ctx, r->cb_arg, st, rc, rc == SEALROOM_OK ? NULL : text);
        sr_request_free(r);
        return 1;
    }

    if (strcmp(type, "error") == 0) {
        char text[sizeof ctx->last_error];
        int rc = sr_error_from_stanza(st, text, sizeof text);
        if (r->step == SR_STEP_SUBMIT && rc == SEALROOM_E_STALE && r->retries == 0) {
            r->retries++;
            sr_log(ctx, SEALROOM_LOG_INFO, "roster of %s changed meanwhile; syncing and retrying",
                   r->room);
            int arc = roster_advance(ctx, r, true);
            if (arc < 0)
                fail_with_last(ctx, r, arc);
            return 1;
        }
        if (r->step == SR_STEP_FETCH_KEY && rc == SEALROOM_E_NOT_FOUND)
            snprintf(text + strlen(text), sizeof text - strlen(text),
                     " (no identity key registered for %s)", r->jid);
        sr_request_done(ctx, r, rc, text, NULL);
        return 1;
    }

    ctx->last_error[0] = '\0';
    int rc = SEALROOM_OK;
    sealroom_event ev = {0};
    switch ((int)r->kind) {
    case SEALROOM_REQ_IDENTITY_REGISTER:
        sr_request_done(ctx, r, SEALROOM_OK, NULL, NULL);
        return 1;
    case SEALROOM_REQ_IDENTITY_FETCH: {
        unsigned char pk[SR_KEY_BYTES];
        rc = parse_identity(ctx, r, st, pk);
        if (rc < 0)
            break;
        ev.pk = pk;
        sr_request_done(ctx, r, SEALROOM_OK, NULL, &ev);
        return 1;
    }
    case SEALROOM_REQ_ROOM_CREATE:
        rc = commit_own(ctx, r, st);
        if (rc < 0)
            break;
        /* A room is usable once it has its first epoch. */
        rc = sr_rotate(ctx, sr_room_get(ctx, r->room), r->id);
        break;
    case SR_REQ_INTERNAL: {
        bool finished;
        rc = sync_page(ctx, r, st, &finished);
        if (rc >= 0 && finished)
            sr_request_done(ctx, r, SEALROOM_OK, NULL, NULL);
        break;
    }
    case SEALROOM_REQ_ROSTER_SYNC: {
        bool finished;
        rc = sync_page(ctx, r, st, &finished);
        if (rc < 0 || !finished)
            break;
        sr_room *room = sr_room_find(ctx, r->room);
        ev.roster_version = room ? room->roster.version : 0;
        sr_request_done(ctx, r, SEALROOM_OK, NULL, &ev);
        return 1;
    }
    case SEALROOM_REQ_ROSTER_UPDATE:
        if (r->step == SR_STEP_FETCH_KEY) {
            rc = parse_identity(ctx, r, st, r->key);
            if (rc < 0)
                break;
            if (r->key_given && sodium_memcmp(r->key, r->given_key, SR_KEY_BYTES) != 0) {
                rc = sr_fail(ctx, SEALROOM_E_KEY_CHANGED,
                             "the key given for %s is not its pinned, registered identity", r->jid);
                break;
            }
            r->have_key = true;
            rc = roster_advance(ctx, r, false);
        } else if (r->step == SR_STEP_SYNC) {
            bool finished;
            rc = sync_page(ctx, r, st, &finished);
            if (rc >= 0 && finished)
                rc = roster_advance(ctx, r, false);
        } else {
            rc = commit_own(ctx, r, st);
            if (rc < 0)
                break;
            /* An added or removed member gets its new epoch from the
             * room's key agreement run among the members online (keyrun.c),
             * or from us when we are alone. The change is done when that
             * epoch is: a removed member reads nothing sent after it. */
            bool membership = false;
            for (unsigned i = 0; i < r->pending->nops; i++)
                membership |= r->pending->ops[i].kind == SR_OP_ADD ||
                              r->pending->ops[i].kind == SR_OP_REMOVE;
            sr_room *room = sr_room_find(ctx, r->room);
            if (membership && room && sr_rekey_wait(ctx, room, r->id) == SEALROOM_OK)
                return 1;
            ev.roster_version = r->pending->version;
            ev.epoch = room ? room->epoch_current : 0;
            sr_request_done(ctx, r, SEALROOM_OK, NULL, &ev);
            return 1;
        }
        break;
    case SEALROOM_REQ_HISTORY: {
        /* Complete only after every result before it was decrypted. */
        sr_room *room = sr_room_get(ctx, r->room);
        if (!room) {
            rc = sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
            break;
        }
        sr_inbox_push_fin(ctx, room, r->id, st);
        return 1;
    }
    default:
        rc = sr_fail(ctx, SEALROOM_E_PROTOCOL, "unexpected IQ answer");
        break;
    }
    if (rc < 0)
        fail_with_last(ctx, r, rc);
    return 1;
}
