/* Signed sealed envelopes carrying S_e to one member (envelope.h). */
#include "e2e/envelope.h"

#include <sodium.h>
#include <string.h>

int sr_e2e_envelope_message(unsigned char *buf, size_t cap, size_t *len,
                            const sr_e2e_envelope_ctx *ctx,
                            const unsigned char box[SR_E2E_ENVELOPE_BOX_BYTES])
{
    sr_e2e_writer w;

    if (!buf || !len || !ctx || !box || !ctx->roster_hash || !ctx->recipient_box_pk ||
        !sr_e2e_str_ok(ctx->room, SR_E2E_JID_MAX) || !sr_e2e_str_ok(ctx->sealer, SR_E2E_JID_MAX) ||
        !sr_e2e_str_ok(ctx->recipient, SR_E2E_JID_MAX))
        return SR_E2E_ERR_INVALID;
    sr_e2e_writer_init(&w, buf, cap);
    sr_e2e_put_lp8(&w, SR_E2E_LABEL_ENVELOPE);
    sr_e2e_put_u8(&w, SR_E2E_ENVELOPE_VERSION);
    sr_e2e_put_lp16(&w, ctx->room);
    sr_e2e_put_u64(&w, ctx->epoch);
    sr_e2e_put_bytes(&w, ctx->roster_hash, SR_E2E_ROSTER_HASH_BYTES);
    sr_e2e_put_lp16(&w, ctx->sealer);
    sr_e2e_put_lp16(&w, ctx->recipient);
    sr_e2e_put_bytes(&w, ctx->recipient_box_pk, 32);
    sr_e2e_put_bytes(&w, box, SR_E2E_ENVELOPE_BOX_BYTES);
    if (w.overflow)
        return SR_E2E_ERR_INVALID;
    *len = w.len;
    return SR_E2E_OK;
}

int sr_e2e_envelope_from_box(unsigned char out[SR_E2E_ENVELOPE_BYTES], const sr_e2e_envelope_ctx *ctx,
                             const unsigned char box[SR_E2E_ENVELOPE_BOX_BYTES],
                             const unsigned char sealer_sk[64])
{
    unsigned char msg[SR_E2E_ENVELOPE_MSG_MAX];
    size_t n = 0;
    int rc;

    if (!out || !sealer_sk)
        return SR_E2E_ERR_INVALID;
    if ((rc = sr_e2e_envelope_message(msg, sizeof msg, &n, ctx, box)) != SR_E2E_OK)
        goto out;
    out[0] = SR_E2E_ENVELOPE_VERSION;
    memmove(out + 1, box, SR_E2E_ENVELOPE_BOX_BYTES);
    rc = crypto_sign_detached(out + 1 + SR_E2E_ENVELOPE_BOX_BYTES, NULL, msg, n, sealer_sk) == 0
             ? SR_E2E_OK
             : SR_E2E_ERR_INVALID;
out:
    if (rc != SR_E2E_OK)
        sodium_memzero(out, SR_E2E_ENVELOPE_BYTES);
    return rc;
}

int sr_e2e_envelope_seal(unsigned char out[SR_E2E_ENVELOPE_BYTES], const sr_e2e_envelope_ctx *ctx,
                         const unsigned char secret[SR_E2E_EPOCH_SECRET_BYTES],
                         const unsigned char sealer_sk[64])
{
    unsigned char box[SR_E2E_ENVELOPE_BOX_BYTES];
    int rc = SR_E2E_ERR_INVALID;

    if (!out || !ctx || !ctx->recipient_box_pk || !secret || !sealer_sk)
        return SR_E2E_ERR_INVALID;
    if (sodium_init() < 0)
        return SR_E2E_ERR_NOMEM;
    if (crypto_box_seal(box, secret, SR_E2E_EPOCH_SECRET_BYTES, ctx->recipient_box_pk) != 0)
        goto out;
    rc = sr_e2e_envelope_from_box(out, ctx, box, sealer_sk);
out:
    sodium_memzero(box, sizeof box);
    return rc;
}

int sr_e2e_envelope_open(unsigned char secret[SR_E2E_EPOCH_SECRET_BYTES], const unsigned char *in,
                         size_t len, const sr_e2e_envelope_ctx *ctx,
                         const unsigned char sealer_pk[32], const unsigned char recipient_box_sk[32])
{
    unsigned char msg[SR_E2E_ENVELOPE_MSG_MAX];
    size_t n = 0;
    int rc = SR_E2E_ERR_INVALID;

    if (!secret)
        return SR_E2E_ERR_INVALID;
    if (!in || !ctx || !sealer_pk || !recipient_box_sk)
        goto out;
    rc = SR_E2E_ERR_MALFORMED;
    if (len != SR_E2E_ENVELOPE_BYTES)
        goto out;
    rc = SR_E2E_ERR_VERSION;
    if (in[0] != SR_E2E_ENVELOPE_VERSION)
        goto out;
    if ((rc = sr_e2e_envelope_message(msg, sizeof msg, &n, ctx, in + 1)) != SR_E2E_OK)
        goto out;
    rc = SR_E2E_ERR_SIGNATURE;
    if (crypto_sign_verify_detached(in + 1 + SR_E2E_ENVELOPE_BOX_BYTES, msg, n, sealer_pk) != 0)
        goto out;
    rc = SR_E2E_ERR_DECRYPT;
    if (crypto_box_seal_open(secret, in + 1, SR_E2E_ENVELOPE_BOX_BYTES, ctx->recipient_box_pk,
                             recipient_box_sk) != 0)
        goto out;
    rc = SR_E2E_OK;
out:
    if (rc != SR_E2E_OK)
        sodium_memzero(secret, SR_E2E_EPOCH_SECRET_BYTES);
    return rc;
}
