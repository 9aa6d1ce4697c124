/* The sans-I/O core: context lifetime, the send path, stanza dispatch,
 * timeouts and link state. It never touches a socket; stanzas come in
 * through sealroom_ctx_receive_xml (or the adapter's direct path) and go out
 * through the send_xml callback (or xmpp_send when attached to a conn). */
#include "internal.h"
#include "sse.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/jid.h"

char *sr_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void sr_log(sealroom_ctx *ctx, sealroom_log_level level, const char *fmt, ...)
{
    if (!ctx->cb.log)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    ctx->cb.log(ctx->cb.user, level, buf);
}

int sr_fail(sealroom_ctx *ctx, int result, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->last_error, sizeof ctx->last_error, fmt, ap);
    va_end(ap);
    return result;
}

const char *sealroom_ctx_last_error(const sealroom_ctx *ctx)
{
    return ctx ? ctx->last_error : "no context";
}

void sr_emit(sealroom_ctx *ctx, sealroom_event *ev)
{
    if (ctx->cb.on_event)
        ctx->cb.on_event(ctx->cb.user, ev);
}

/* ---- stanza helpers ---- */

xmpp_stanza_t *sr_el(xmpp_ctx_t *xmpp, const char *name, const char *ns)
{
    xmpp_stanza_t *el = xmpp_stanza_new(xmpp);
    if (!el)
        return NULL;
    if (xmpp_stanza_set_name(el, name) != XMPP_EOK || (ns && xmpp_stanza_set_ns(el, ns) != XMPP_EOK)) {
        xmpp_stanza_release(el);
        return NULL;
    }
    return el;
}

bool sr_add_text_child(xmpp_ctx_t *xmpp, xmpp_stanza_t *parent, const char *name, const char *ns,
                       const char *text, size_t len)
{
    xmpp_stanza_t *el = sr_el(xmpp, name, ns);
    if (!el)
        return false;
    if (len) {
        xmpp_stanza_t *t = xmpp_stanza_new(xmpp);
        if (!t || xmpp_stanza_set_text_with_size(t, text, len) != XMPP_EOK ||
            xmpp_stanza_add_child_ex(el, t, 0) != XMPP_EOK) {
            if (t)
                xmpp_stanza_release(t);
            xmpp_stanza_release(el);
            return false;
        }
    }
    if (xmpp_stanza_add_child_ex(parent, el, 0) != XMPP_EOK) {
        xmpp_stanza_release(el);
        return false;
    }
    return true;
}

/* Direct child by name and namespace; either may be NULL to match any. */
xmpp_stanza_t *sr_child(xmpp_stanza_t *st, const char *name, const char *ns)
{
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(st); c; c = xmpp_stanza_get_next(c)) {
        if (!xmpp_stanza_is_tag(c))
            continue;
        const char *cn = xmpp_stanza_get_name(c), *cns = xmpp_stanza_get_ns(c);
        if (name && (!cn || strcmp(cn, name) != 0))
            continue;
        if (ns && (!cns || strcmp(cns, ns) != 0))
            continue;
        return c;
    }
    return NULL;
}

/* ---- send path ---- */

int sr_send(sealroom_ctx *ctx, xmpp_stanza_t *st)
{
    if (!ctx->link_up)
        return SEALROOM_E_NETWORK;
    if (ctx->conn) {
        xmpp_send(ctx->conn, st);
        return SEALROOM_OK;
    }
    char *buf = NULL;
    size_t len = 0;
    if (xmpp_stanza_to_text(st, &buf, &len) != XMPP_EOK || !buf)
        return SEALROOM_E_NOMEM;
    int rc = ctx->cb.send_xml(ctx->cb.user, buf, len);
    xmpp_free(ctx->xmpp, buf);
    return rc < 0 ? SEALROOM_E_NETWORK : SEALROOM_OK;
}

void sr_new_id(sealroom_ctx *ctx, char out[SR_ID_LEN])
{
    snprintf(out, SR_ID_LEN, "sr-%s-%llu", ctx->id_prefix, (unsigned long long)++ctx->next_iq);
}

/* ---- lifetime ---- */

int sr_ctx_create(sealroom_ctx **out, const char *own_jid, const char *service_jid,
                  const sealroom_callbacks *cb, xmpp_ctx_t *xmpp)
{
    char bare[SR_BARE_JID_MAX], svc[SR_BARE_JID_MAX];
    sr_jid parts;
    sealroom_ctx *ctx = NULL;
    int rc = SEALROOM_E_NOMEM;

    if (!out)
        return SEALROOM_E_INVALID;
    *out = NULL;
    if (!own_jid || !service_jid || !cb || cb->struct_size < offsetof(sealroom_callbacks, user))
        return SEALROOM_E_INVALID;
    if (!sr_jid_parse(&parts, own_jid) || !parts.local[0] || !sr_jid_bare(bare, sizeof bare, &parts))
        return SEALROOM_E_INVALID;
    if (!sr_jid_normalise_bare(svc, sizeof svc, service_jid) || strchr(svc, '@'))
        return SEALROOM_E_INVALID;
    if (sodium_init() < 0)
        return SEALROOM_E_NOMEM;

    ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return SEALROOM_E_NOMEM;
    /* Copy only the fields the caller's struct actually has. */
    size_t n = cb->struct_size < sizeof ctx->cb ? cb->struct_size : sizeof ctx->cb;
    memcpy(&ctx->cb, cb, n);
    ctx->cb.struct_size = sizeof ctx->cb;
    ctx->own_bare = sr_strdup(bare);
    ctx->own_full = sr_strdup(own_jid);
    ctx->service = sr_strdup(svc);
    if (!ctx->own_bare || !ctx->own_full || !ctx->service)
        goto out;
    if (xmpp) {
        ctx->xmpp = xmpp;
    } else {
        ctx->xmpp = xmpp_ctx_new(NULL, NULL);
        if (!ctx->xmpp)
            goto out;
        ctx->own_xmpp = true;
    }
    ctx->timeout_ms = SR_DEFAULT_TIMEOUT_MS;
    ctx->vault_ops = crypto_pwhash_OPSLIMIT_MODERATE;
    ctx->vault_mem = crypto_pwhash_MEMLIMIT_MODERATE;
    ctx->link_up = true;
    ctx->next_request = 0;
    unsigned char rnd[8];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(ctx->id_prefix, sizeof ctx->id_prefix, rnd, sizeof rnd);
    *out = ctx;
    ctx = NULL;
    rc = SEALROOM_OK;
out:
    sealroom_ctx_free(ctx);
    return rc;
}

int sealroom_ctx_new(sealroom_ctx **out, const char *own_jid, const char *service_jid,
                     const sealroom_callbacks *callbacks)
{
    if (!callbacks || callbacks->struct_size < offsetof(sealroom_callbacks, log) ||
        !callbacks->send_xml) {
        if (out)
            *out = NULL;
        return SEALROOM_E_INVALID;
    }
    return sr_ctx_create(out, own_jid, service_jid, callbacks, NULL);
}

void sealroom_ctx_free(sealroom_ctx *ctx)
{
    if (!ctx)
        return;
    while (ctx->requests) {
        sr_request *r = ctx->requests;
        ctx->requests = r->next;
        sr_request_free(r);
    }
    sr_rooms_free(ctx);
    while (ctx->keys) {
        sr_known_key *k = ctx->keys;
        ctx->keys = k->next;
        free(k->jid);
        free(k);
    }
    sealroom_identity_free(ctx->identity);
    sr_account_free(ctx);
    if (ctx->own_xmpp && ctx->xmpp)
        xmpp_ctx_free(ctx->xmpp);
    free(ctx->own_bare);
    free(ctx->own_full);
    free(ctx->service);
    free(ctx);
}

int sealroom_ctx_set_identity(sealroom_ctx *ctx, const sealroom_identity *id)
{
    if (!ctx || !id)
        return SEALROOM_E_INVALID;
    sealroom_identity *copy = sodium_malloc(sizeof *copy);
    if (!copy)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "cannot allocate secure memory");
    memcpy(copy, id, sizeof *copy);
    sodium_mprotect_readonly(copy);
    /* Pins belong to an identity: a different root starts without them. */
    if (!ctx->vault || sodium_memcmp(ctx->vault->root, id->e2e.root, SR_E2E_ROOT_BYTES) != 0) {
        sr_e2e_vault_data *v = NULL;
        if (sr_e2e_vault_data_new(&v, id->e2e.root) != SR_E2E_OK) {
            sodium_free(copy);
            return sr_fail(ctx, SEALROOM_E_NOMEM, "cannot allocate secure memory");
        }
        sr_e2e_vault_data_free(ctx->vault);
        ctx->vault = v;
        sr_e2e_vault_key_free(ctx->vault_key);
        ctx->vault_key = NULL;
    }
    sealroom_identity_free(ctx->identity);
    ctx->identity = copy;
    return SEALROOM_OK;
}

void sealroom_ctx_set_timeout(sealroom_ctx *ctx, uint32_t timeout_ms)
{
    if (ctx)
        ctx->timeout_ms = timeout_ms;
}

int sealroom_ctx_known_key(const sealroom_ctx *ctx, unsigned char *pk, size_t pk_len,
                           const char *jid)
{
    char bare[SR_BARE_JID_MAX];
    if (!ctx || !pk || pk_len < SR_KEY_BYTES || !sr_jid_normalise_bare(bare, sizeof bare, jid))
        return SEALROOM_E_INVALID;
    for (const sr_known_key *k = ctx->keys; k; k = k->next)
        if (strcmp(k->jid, bare) == 0) {
            memcpy(pk, k->pk, SR_KEY_BYTES);
            return SEALROOM_OK;
        }
    return SEALROOM_E_NOT_FOUND;
}

bool sr_request_pending(const sealroom_ctx *ctx, uint32_t id)
{
    for (const sr_request *r = ctx->requests; r; r = r->next)
        if (r->id == id)
            return true;
    return false;
}

size_t sealroom_ctx_outbox_size(const sealroom_ctx *ctx)
{
    size_t n = 0;
    if (ctx)
        for (const sr_request *r = ctx->requests; r; r = r->next)
            n += r->kind == SEALROOM_REQ_SEND;
    return n;
}

/* ---- input ---- */

static bool from_service(sealroom_ctx *ctx, const char *from)
{
    sr_jid j;
    return from && sr_jid_parse(&j, from) && strcmp(j.domain, ctx->service) == 0;
}

int sr_receive_stanza(sealroom_ctx *ctx, xmpp_stanza_t *st)
{
    const char *name = xmpp_stanza_get_name(st);
    if (!name || !xmpp_stanza_is_tag(st))
        return 0;
    /* IQ answers are matched by id and expected sender (sr_handle_iq);
     * everything else must come from the service's domain. */
    if (strcmp(name, "iq") == 0)
        return sr_handle_iq(ctx, st);
    if (!from_service(ctx, xmpp_stanza_get_from(st)))
        return 0;
    if (strcmp(name, "presence") == 0)
        return sr_handle_presence(ctx, st);
    if (strcmp(name, "message") == 0)
        return sr_handle_message(ctx, st);
    return 0;
}

int sealroom_ctx_receive_xml(sealroom_ctx *ctx, const char *xml, size_t len)
{
    if (!ctx || !xml)
        return SEALROOM_E_INVALID;
    if (len > SR_MAX_XML_IN)
        return sr_fail(ctx, SEALROOM_E_TOO_LARGE, "stanza of %zu bytes refused", len);
    if (memchr(xml, '\0', len))
        return sr_fail(ctx, SEALROOM_E_INVALID, "stanza contains a NUL byte");
    char *copy = malloc(len + 1);
    if (!copy)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    memcpy(copy, xml, len);
    copy[len] = '\0';
    xmpp_stanza_t *st = xmpp_stanza_new_from_string(ctx->xmpp, copy);
    free(copy);
    if (!st)
        return sr_fail(ctx, SEALROOM_E_INVALID, "unparseable stanza");
    int rc = sr_receive_stanza(ctx, st);
    xmpp_stanza_release(st);
    return rc;
}

/* ---- time and link ---- */

void sealroom_ctx_tick(sealroom_ctx *ctx, uint64_t now_ms)
{
    if (!ctx)
        return;
    ctx->now_ms = now_ms;
    ctx->have_time = true;
    if (!ctx->link_up)
        return;
    sr_vault_tick(ctx);
    for (sr_room *room = ctx->rooms; room; room = room->next)
        sr_sse_tick(ctx, room, now_ms);
    if (ctx->timeout_ms == 0)
        return;
    sr_retry_sends(ctx, now_ms);
    /* Completing a request runs user code that may add or finish others:
     * restart the scan after each completion. */
    for (;;) {
        sr_request *expired = NULL;
        for (sr_request *r = ctx->requests; r; r = r->next) {
            if (r->deadline == 0)
                r->deadline = now_ms + ctx->timeout_ms;
            else if (r->deadline <= now_ms && !expired)
                expired = r;
        }
        if (!expired)
            break;
        if (expired->kind == SEALROOM_REQ_JOIN && expired->room) {
            sr_room *room = sr_room_find(ctx, expired->room);
            if (room && !room->joined)
                room->want_joined = false;
        }
        sr_request_done(ctx, expired, SEALROOM_E_TIMEOUT, "no answer from the service in time",
                        NULL);
    }
}

void sealroom_ctx_link_down(sealroom_ctx *ctx)
{
    if (!ctx || !ctx->link_up)
        return;
    ctx->link_up = false;
    sr_log(ctx, SEALROOM_LOG_INFO, "link down");
    for (sr_room *room = ctx->rooms; room; room = room->next) {
        room->joined = false;
        sr_room_clear_occupants(room);
        sr_sse_link_down(room);
    }
    /* IQs in flight are lost with the stream and are not idempotent in
     * general (a create would conflict): fail them. Joins and messages are
     * replayed on link_up. */
    for (;;) {
        sr_request *lost = NULL;
        for (sr_request *r = ctx->requests; r; r = r->next) {
            if (r->kind == SEALROOM_REQ_SEND) {
                r->resend = true;
                r->deadline = 0;
            } else if (r->kind == SEALROOM_REQ_JOIN) {
                r->deadline = 0;
            } else if (!lost) {
                lost = r;
            }
        }
        if (!lost)
            break;
        if (lost->kind == SEALROOM_REQ_LEAVE) {
            /* Losing the stream takes us out of the room anyway. */
            sr_room *room = lost->room ? sr_room_find(ctx, lost->room) : NULL;
            if (room)
                room->want_joined = false;
            sr_request_done(ctx, lost, SEALROOM_OK, NULL, NULL);
        } else {
            sr_request_done(ctx, lost, SEALROOM_E_NETWORK, "link to the server lost", NULL);
        }
    }
}

int sealroom_ctx_link_up(sealroom_ctx *ctx)
{
    if (!ctx)
        return SEALROOM_E_INVALID;
    ctx->link_up = true;
    sr_log(ctx, SEALROOM_LOG_INFO, "link up");
    int rc = SEALROOM_OK;
    for (sr_room *room = ctx->rooms; room; room = room->next) {
        if (!room->want_joined)
            continue;
        int r = sr_room_send_join(ctx, room);
        if (r < 0 && rc == SEALROOM_OK)
            rc = r;
    }
    /* Messages whose room is not being rejoined cannot be delivered. */
    for (;;) {
        sr_request *orphan = NULL;
        for (sr_request *r = ctx->requests; r && !orphan; r = r->next) {
            if (r->kind != SEALROOM_REQ_SEND || !r->resend)
                continue;
            sr_room *room = sr_room_find(ctx, r->room);
            if (!room || !room->want_joined)
                orphan = r;
        }
        if (!orphan)
            break;
        sr_request_done(ctx, orphan, SEALROOM_E_STATE, "room was left before delivery", NULL);
    }
    return rc;
}
