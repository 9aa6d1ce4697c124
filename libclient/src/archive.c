/* Our part in re-encrypting a room's archive (archive-wire.md,
 * urn:xmpp:sealroom:archive:0; the arithmetic is e2e/archive.h): the
 * member who made epoch f and holds k_e of the epoch before gives the room
 * the token Δ = k_f·k_e⁻¹, with which the component re-keys the data-key
 * headers of epoch e to epoch f without learning a key; and when the
 * component wants to erase tokens, a member confirms that the check header
 * it carried along the same way is k_c·P_c, i.e. that the tokens it
 * applied were right. Every answer of the room here is only logged: a
 * refused token leaves the archive where it was, nothing else. */
#include "internal.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/b64.h"

/* Which token an answer is about. */
typedef struct token_ref {
    sr_room *room;
    uint64_t to;
} token_ref;

static void token_answered(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                           const char *text)
{
    token_ref *ref = arg;
    sr_room *room = ref->room;
    if (rc < 0) {
        sr_log(ctx, SEALROOM_LOG_WARN,
               "%s: the room did not take our token %" PRIu64 "->%" PRIu64 ": %s", room->jid,
               ref->to - 1, ref->to, text ? text : sealroom_strerror(rc));
        /* Without an answer it may never have arrived: the next pass sends
         * it again (the room takes the same token twice). A refusal is
         * final. */
        sr_epoch *f = answer ? NULL : sr_epoch_find(room, ref->to);
        if (f)
            f->token_sent = false;
    } else {
        sr_log(ctx, SEALROOM_LOG_DEBUG, "%s: token %" PRIu64 "->%" PRIu64 " stored", room->jid,
               ref->to - 1, ref->to);
    }
    free(ref);
}

/* <token from=e to=f delta=b64(k_f·k_e⁻¹)/> to the room. */
static void token_send(sealroom_ctx *ctx, sr_room *room, const sr_epoch *e, sr_epoch *f)
{
    unsigned char delta[SR_E2E_SCALAR_BYTES];
    char b64[64], from[24], to[24];
    xmpp_stanza_t *el = NULL;
    token_ref *ref = NULL;
    int erc = sr_e2e_token_make(delta, e->keys.k, f->keys.k);
    if (erc != SR_E2E_OK) {
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: no token %" PRIu64 "->%" PRIu64 ": %s", room->jid,
               e->number, f->number, sr_e2e_strerror(erc));
        goto out;
    }
    snprintf(from, sizeof from, "%" PRIu64, e->number);
    snprintf(to, sizeof to, "%" PRIu64, f->number);
    el = sr_el(ctx->xmpp, "token", SR_NS_ARCHIVE);
    ref = malloc(sizeof *ref);
    if (!el || !ref || !sr_b64_encode(b64, sizeof b64, delta, sizeof delta) ||
        xmpp_stanza_set_attribute(el, "from", from) != XMPP_EOK ||
        xmpp_stanza_set_attribute(el, "to", to) != XMPP_EOK ||
        xmpp_stanza_set_attribute(el, "delta", b64) != XMPP_EOK) {
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: out of memory for token %" PRIu64 "->%" PRIu64,
               room->jid, e->number, f->number);
        goto out;
    }
    ref->room = room;
    ref->to = f->number;
    xmpp_stanza_t *child = el;
    el = NULL; /* sr_iq_call takes it */
    if (sr_iq_call_owned(ctx, "set", room->jid, child, token_answered, ref, free) < 0) {
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: could not send token %" PRIu64 "->%" PRIu64 ": %s",
               room->jid, e->number, f->number, ctx->last_error);
        goto out;
    }
    ref = NULL;
    f->token_sent = true;
    sr_log(ctx, SEALROOM_LOG_INFO, "%s: token %" PRIu64 "->%" PRIu64 " sent", room->jid,
           e->number, f->number);
out:
    if (el)
        xmpp_stanza_release(el);
    free(ref);
    sodium_memzero(delta, sizeof delta);
    sodium_memzero(b64, sizeof b64);
}

void sr_archive_tokens(sealroom_ctx *ctx, sr_room *room)
{
    if (!ctx->link_up)
        return; /* the next epoch we install tries again */
    for (sr_epoch *f = room->epochs; f; f = f->next) {
        if (!f->ours || f->token_sent || f->number < 2)
            continue;
        const sr_epoch *e = sr_epoch_find(room, f->number - 1);
        if (e)
            token_send(ctx, room, e, f);
    }
}

/* ---- confirming a check header ---- */

static void check_answered(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                           const char *text)
{
    const sr_room *room = arg;
    (void)answer;
    if (rc < 0)
        sr_log(ctx, SEALROOM_LOG_INFO, "%s: the room did not take our check answer: %s",
               room->jid, text ? text : sealroom_strerror(rc));
}

/* <confirm-check epoch=c check=b64/>: the component re-keyed the oldest
 * check header it keeps tokens for up to epoch c and asks whether that is
 * k_c·P_c before it erases those tokens. Answered only for an epoch we
 * hold; a check that is not even a point is no k_c·P_c either. */
static void confirm_check(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *el)
{
    uint64_t c;
    unsigned char hc[SR_E2E_POINT_BYTES];
    char num[24];
    if (!sr_parse_u64(xmpp_stanza_get_attribute(el, "epoch"), &c) || c == 0) {
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: <confirm-check/> without a valid epoch ignored",
               room->jid);
        return;
    }
    const sr_epoch *e = sr_epoch_find(room, c);
    if (!e) {
        sr_log(ctx, SEALROOM_LOG_INFO,
               "%s: asked to confirm the check header of epoch %" PRIu64 ", which we do not hold",
               room->jid, c);
        return;
    }
    bool ok = sr_b64_decode_exact(hc, sizeof hc, xmpp_stanza_get_attribute(el, "check")) &&
              sr_e2e_check_header_verify(hc, e->keys.k, room->jid) == SR_E2E_OK;
    if (ok)
        sr_log(ctx, SEALROOM_LOG_INFO, "%s: the re-keyed check header of epoch %" PRIu64 " is right",
               room->jid, c);
    else
        sr_log(ctx, SEALROOM_LOG_WARN,
               "%s: the re-keyed check header of epoch %" PRIu64
               " is wrong: a token the room applied does not carry its epoch to the next",
               room->jid, c);
    snprintf(num, sizeof num, "%" PRIu64, c);
    xmpp_stanza_t *ans = sr_el(ctx->xmpp, ok ? "check-ok" : "check-failed", SR_NS_ARCHIVE);
    if (ans && xmpp_stanza_set_attribute(ans, "epoch", num) != XMPP_EOK) {
        xmpp_stanza_release(ans);
        ans = NULL;
    }
    if (!ans || sr_iq_call(ctx, "set", room->jid, ans, check_answered, room) < 0)
        sr_log(ctx, SEALROOM_LOG_WARN, "%s: could not answer the check of epoch %" PRIu64,
               room->jid, c);
}

void sr_archive_headline(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *el)
{
    const char *name = xmpp_stanza_get_name(el);
    if (!ctx->identity || !name)
        return;
    if (strcmp(name, "confirm-check") == 0)
        confirm_check(ctx, room, el);
    else
        sr_log(ctx, SEALROOM_LOG_DEBUG, "%s: <%s/> in the archive namespace ignored", room->jid,
               name);
}
