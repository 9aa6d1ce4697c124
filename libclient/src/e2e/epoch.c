/* Epoch key schedule: k_e, KC_e and the keyring key from S_e (epoch.h). */
#include "e2e/epoch.h"

#include <sodium.h>
#include <string.h>

#define CTX_MAX (2 + SR_E2E_JID_MAX + 8 + SR_E2E_ROSTER_HASH_BYTES)

static size_t epoch_ctx(unsigned char *buf, size_t cap, const char *room, uint64_t epoch,
                        const unsigned char roster_hash[SR_E2E_ROSTER_HASH_BYTES])
{
    sr_e2e_writer w;

    if (!sr_e2e_str_ok(room, SR_E2E_JID_MAX) || !roster_hash)
        return 0;
    sr_e2e_writer_init(&w, buf, cap);
    sr_e2e_put_lp16(&w, room);
    sr_e2e_put_u64(&w, epoch);
    sr_e2e_put_bytes(&w, roster_hash, SR_E2E_ROSTER_HASH_BYTES);
    return w.overflow ? 0 : w.len;
}

int sr_e2e_epoch_derive(sr_e2e_epoch_keys *out, const unsigned char secret[SR_E2E_EPOCH_SECRET_BYTES],
                        const char *room, uint64_t epoch,
                        const unsigned char roster_hash[SR_E2E_ROSTER_HASH_BYTES])
{
    unsigned char ctx[CTX_MAX];
    unsigned char wide[64];
    size_t n;
    int rc = SR_E2E_ERR_INVALID;

    if (!out || !secret)
        return SR_E2E_ERR_INVALID;
    if (sodium_init() < 0)
        return SR_E2E_ERR_NOMEM;
    n = epoch_ctx(ctx, sizeof ctx, room, epoch, roster_hash);
    if (n == 0)
        goto out;
    if ((rc = sr_e2e_kdf(wide, sizeof wide, secret, SR_E2E_LABEL_EPOCH_SCALAR, ctx, n)) != SR_E2E_OK)
        goto out;
    crypto_core_ristretto255_scalar_reduce(out->k, wide);
    if (sodium_is_zero(out->k, sizeof out->k) ||
        crypto_core_ristretto255_scalar_invert(out->k_inv, out->k) != 0) {
        rc = SR_E2E_ERR_SCALAR;
        goto out;
    }
    if ((rc = sr_e2e_kdf(out->kc, sizeof out->kc, secret, SR_E2E_LABEL_EPOCH_KC, ctx, n)) != SR_E2E_OK ||
        (rc = sr_e2e_kdf(out->keyring, sizeof out->keyring, secret, SR_E2E_LABEL_EPOCH_KEYRING, ctx,
                         n)) != SR_E2E_OK)
        goto out;
    rc = SR_E2E_OK;
out:
    sodium_memzero(wide, sizeof wide);
    if (rc != SR_E2E_OK)
        sodium_memzero(out, sizeof *out);
    return rc;
}

int sr_e2e_epoch_confirm(const unsigned char kc[SR_E2E_KC_BYTES],
                         const unsigned char secret[SR_E2E_EPOCH_SECRET_BYTES], const char *room,
                         uint64_t epoch, const unsigned char roster_hash[SR_E2E_ROSTER_HASH_BYTES])
{
    unsigned char ctx[CTX_MAX];
    unsigned char mine[SR_E2E_KC_BYTES];
    size_t n;
    int rc = SR_E2E_ERR_INVALID;

    if (!kc || !secret)
        return SR_E2E_ERR_INVALID;
    n = epoch_ctx(ctx, sizeof ctx, room, epoch, roster_hash);
    if (n == 0)
        goto out;
    if ((rc = sr_e2e_kdf(mine, sizeof mine, secret, SR_E2E_LABEL_EPOCH_KC, ctx, n)) != SR_E2E_OK)
        goto out;
    rc = crypto_verify_32(mine, kc) == 0 ? SR_E2E_OK : SR_E2E_ERR_MISMATCH;
out:
    sodium_memzero(mine, sizeof mine);
    return rc;
}
