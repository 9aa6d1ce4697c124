/* Archive re-encryption tokens (DESIGN §6; xep/sealroom.xml "Archive
 * Re-encryption"): the member who made epoch f and held epoch e = f−1 hands
 * the component Δ = k_f·k_e⁻¹, which moves every header wrapped under e to
 * f without the component seeing a data key. A token is accepted only if it
 * carries the stored check header of epoch e onto that of epoch f (both
 * public: H_c = k·P_c), so a wrong token never touches the archive; for
 * epochs from before check headers, only from epoch f's maker, and stored
 * unverified: if a member's check later finds the chain wrong, tokenerase.c
 * revokes it and the sweep undoes what it moved. The room keeps its token
 * chain in memory for the lazy path (headers re-keyed as they are read) and
 * the sweep (sweep.c) moves the stored headers. */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rekey.h"
#include "service.h"
#include "stanza.h"
#include "sweep.h"

/* ---- the room's chain ---- */

void token_chain_free(room *rm)
{
    /* Tokens are erased once they have done their work (tokenerase.c):
     * none may linger in freed memory either. */
    if (rm->tokens) sodium_memzero(rm->tokens, rm->ntokens * 32);
    free(rm->tokens);
    free(rm->token_have);
    rm->tokens = NULL;
    rm->token_have = NULL;
    rm->token_first = 0;
    rm->ntokens = 0;
}

void token_chain_drop_below(room *rm, uint64_t e)
{
    if (rm->ntokens == 0 || e <= rm->token_first) return;
    if (e - rm->token_first >= rm->ntokens) {
        token_chain_free(rm);
        return;
    }
    size_t k = (size_t)(e - rm->token_first), n = rm->ntokens - k;
    memmove(rm->tokens, rm->tokens + k, n * 32);
    memmove(rm->token_have, rm->token_have + k, n * sizeof *rm->token_have);
    sodium_memzero(rm->tokens + n, k * 32);
    rm->ntokens = n;
    rm->token_first = e;
}

bool token_chain_put(room *rm, uint64_t from, const unsigned char delta[32])
{
    if (from == 0) return false;
    if (rm->ntokens == 0) {
        rm->token_first = from;
    } else if (from < rm->token_first) {
        /* Grow at the front (rare: tokens arrive in order). */
        size_t shift = (size_t)(rm->token_first - from), n = rm->ntokens + shift;
        unsigned char(*t)[32] = calloc(n, 32);
        bool *h = calloc(n, sizeof *h);
        if (!t || !h) {
            free(t);
            free(h);
            return false;
        }
        memcpy(t + shift, rm->tokens, rm->ntokens * 32);
        memcpy(h + shift, rm->token_have, rm->ntokens * sizeof *h);
        free(rm->tokens);
        free(rm->token_have);
        rm->tokens = t;
        rm->token_have = h;
        rm->ntokens = n;
        rm->token_first = from;
    }
    size_t i = (size_t)(from - rm->token_first);
    if (i >= rm->ntokens) {
        size_t n = i + 1;
        unsigned char(*t)[32] = realloc(rm->tokens, n * 32);
        if (!t) return false;
        rm->tokens = t;
        bool *h = realloc(rm->token_have, n * sizeof *h);
        if (!h) return false;
        rm->token_have = h;
        memset(h + rm->ntokens, 0, (n - rm->ntokens) * sizeof *h);
        rm->ntokens = n;
    }
    memcpy(rm->tokens[i], delta, 32);
    rm->token_have[i] = true;
    return true;
}

bool token_chain_delta(const room *rm, uint64_t a, uint64_t c, unsigned char out[32])
{
    if (a >= c || a < rm->token_first || c - rm->token_first > rm->ntokens) return false;
    for (uint64_t e = a; e < c; e++)
        if (!rm->token_have[e - rm->token_first]) return false;
    rk_chain chain = {rm->token_first, rm->ntokens, rm->tokens};
    return rk_chain_to(out, &chain, a, c);
}

/* ---- the <token/> request ---- */

typedef struct token_op {
    rooms *r;
    room *rm;
    xmpp_stanza_t *iq;
    char sender[SR_BARE_JID_MAX];
    uint64_t from, to;
    unsigned char delta[32];
    bool verified;
} token_op;

static void op_free(token_op *op)
{
    room_release(op->r, op->rm);
    xmpp_stanza_release(op->iq);
    sodium_memzero(op->delta, sizeof op->delta);
    free(op);
}

static void stored(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    token_op *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    (void)res;
    (void)nres;
    r->writes_in_flight--;
    if (!ok) {
        log_error(rm->name, "token %" PRIu64 "->%" PRIu64 " not stored: %s", op->from, op->to,
                  err ? err : "?");
        svc_error(r, op->iq, rm->name, "wait", "internal-server-error", NULL,
                  "the token could not be stored; try again");
        op_free(op);
        return;
    }
    if (!token_chain_put(rm, op->from, op->delta))
        log_error(rm->name, "out of memory caching token %" PRIu64, op->from);
    r->stats.tokens_stored++;
    log_info(rm->name, "token for epoch %" PRIu64 " -> %" PRIu64 " from %s%s", op->from, op->to,
             op->sender, op->verified ? "" : " (unverified: the older epoch has no check header)");
    svc_send(r, st_iq_result(op->iq, rm->name));
    sweep_kick(sweep_running(), rm->id);
    op_free(op);
}

static void looked_up(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    token_op *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    char text[SR_BARE_JID_MAX + 160];
    if (!ok || nres != 2) {
        log_error(rm->name, "token lookup failed: %s", err ? err : "?");
        svc_error(r, op->iq, rm->name, "wait", "internal-server-error", NULL,
                  "the epochs could not be read; try again");
        goto done;
    }
    /* res[0]: epochs from and to (epoch, sealer, check_header); res[1]: a stored token. */
    int row_from = -1, row_to = -1;
    for (int i = 0; i < PQntuples(res[0]); i++) {
        uint64_t e = strtoull(PQgetvalue(res[0], i, 0), NULL, 10);
        if (e == op->from) row_from = i;
        if (e == op->to) row_to = i;
    }
    if (row_to < 0 || row_from < 0) {
        snprintf(text, sizeof text, "epoch %" PRIu64 " does not exist in this room",
                 row_to < 0 ? op->to : op->from);
        svc_error(r, op->iq, rm->name, "cancel", "item-not-found", "no-epoch", text);
        goto done;
    }
    unsigned char hc_from[32], hc_to[32];
    bool have_from = svc_bytea(res[0], row_from, 2, hc_from, 32) == 32,
         have_to = svc_bytea(res[0], row_to, 2, hc_to, 32) == 32;
    /* With both check headers stored the check below proves the token
     * right, whoever sends it (so a maker who vanished does not strand the
     * archive); without them only the epoch's maker is trusted with it. */
    if (!(have_from && have_to) && strcmp(PQgetvalue(res[0], row_to, 1), op->sender) != 0) {
        snprintf(text, sizeof text,
                 "epoch %" PRIu64 " or %" PRIu64 " has no check header: only the member who "
                 "made epoch %" PRIu64 " (its sealer) may send its token",
                 op->from, op->to, op->to);
        svc_error(r, op->iq, rm->name, "auth", "forbidden", "not-sealer", text);
        goto done;
    }
    if (PQntuples(res[1]) == 1) {
        unsigned char have[32];
        bool same = svc_bytea(res[1], 0, 0, have, sizeof have) == (long)sizeof have &&
                    sodium_memcmp(have, op->delta, 32) == 0;
        if (same) svc_send(r, st_iq_result(op->iq, rm->name));
        else svc_error(r, op->iq, rm->name, "cancel", "conflict", "bad-token",
                       "another token for these epochs is stored");
        goto done;
    }
    if (have_to && have_from) {
        if (!rk_token_proved(op->delta, hc_from, hc_to)) {
            snprintf(text, sizeof text,
                     "the token does not carry the check header of epoch %" PRIu64
                     " to that of epoch %" PRIu64,
                     op->from, op->to);
            svc_error(r, op->iq, rm->name, "modify", "not-acceptable", "bad-token", text);
            goto done;
        }
        op->verified = true;
    }
    /* Else an epoch predates check headers: nothing to verify against. */
    db_unit *u = db_unit_new();
    char id[24], from[24], to[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(from, sizeof from, "%" PRIu64, op->from);
    snprintf(to, sizeof to, "%" PRIu64, op->to);
    const char *p[5] = {id, from, to, (const char *)op->delta, op->verified ? "t" : "f"};
    int l[5] = {-1, -1, -1, 32, -1}, f[5] = {0, 0, 0, 1, 0};
    if (!u || db_unit_add(u,
                          "INSERT INTO archive_tokens (room_id, from_epoch, to_epoch, delta, "
                          "verified) VALUES ($1, $2, $3, $4, $5) "
                          "ON CONFLICT (room_id, from_epoch) DO NOTHING",
                          5, p, l, f) != 0) {
        if (u) db_unit_free(u);
        svc_error(r, op->iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        goto done;
    }
    r->writes_in_flight++;
    db_submit(r->db, u, true, stored, op);
    return;
done:
    op_free(op);
}

void token_handle_set(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    token_op *op = calloc(1, sizeof *op);
    if (!op) {
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    if (!svc_require_member(r, rm, iq, op->sender, sizeof op->sender,
                            "only members may send re-encryption tokens")) {
        free(op);
        return;
    }
    if (!svc_parse_u64(xmpp_stanza_get_attribute(el, "from"), &op->from) ||
        !svc_parse_u64(xmpp_stanza_get_attribute(el, "to"), &op->to) || op->from == 0 ||
        op->to != op->from + 1) {
        svc_error(r, iq, rm->name, "modify", "bad-request", "bad-token",
                  "a token needs from and to, epochs with to = from + 1");
        free(op);
        return;
    }
    if (!st_b64_decode_exact(op->delta, sizeof op->delta, xmpp_stanza_get_attribute(el, "delta")) ||
        !rk_scalar_ok(op->delta)) {
        sodium_memzero(op->delta, sizeof op->delta);
        svc_error(r, iq, rm->name, "modify", "bad-request", "bad-token",
                  "delta must be the base64 of a canonical, non-zero scalar mod l");
        free(op);
        return;
    }
    if (op->to > rm->current_epoch) {
        sodium_memzero(op->delta, sizeof op->delta);
        char text[96];
        snprintf(text, sizeof text, "epoch %" PRIu64 " does not exist in this room", op->to);
        svc_error(r, iq, rm->name, "cancel", "item-not-found", "no-epoch", text);
        free(op);
        return;
    }
    if (!(op->iq = xmpp_stanza_copy(iq))) {
        free(op);
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    op->r = r;
    op->rm = rm;
    rm->refs++;
    db_unit *u = db_unit_new();
    char id[24], from[24], to[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(from, sizeof from, "%" PRIu64, op->from);
    snprintf(to, sizeof to, "%" PRIu64, op->to);
    const char *p[3] = {id, from, to};
    if (!u ||
        db_unit_add(u,
                    "SELECT epoch, sealer, check_header FROM epochs WHERE room_id = $1 AND "
                    "epoch IN ($2::bigint, $3::bigint)",
                    3, p, NULL, NULL) != 0 ||
        db_unit_add(u, "SELECT delta FROM archive_tokens WHERE room_id = $1 AND from_epoch = $2",
                    2, p, NULL, NULL) != 0) {
        if (u) db_unit_free(u);
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
        op_free(op);
        return;
    }
    db_submit(r->db, u, false, looked_up, op);
}
