/* Identity derivation from the 32-byte root, public bundle, fingerprint and
 * the bundle signature; layouts in identity.h. */
#include "e2e/identity.h"

#include <sodium.h>
#include <string.h>

/* The bundle signature input: label, JID and both keys (identity.h). */
#define BUNDLE_MSG_MAX (1 + sizeof SR_E2E_LABEL_ID_BUNDLE + 2 + SR_E2E_JID_MAX + 64)

int sr_e2e_identity_derive(sr_e2e_identity *out, const unsigned char root[SR_E2E_ROOT_BYTES])
{
    int rc = SR_E2E_ERR_INVALID;

    if (!out || !root)
        return SR_E2E_ERR_INVALID;
    if (sodium_init() < 0)
        return SR_E2E_ERR_NOMEM;
    memcpy(out->root, root, SR_E2E_ROOT_BYTES);
    if (crypto_sign_seed_keypair(out->sign_pk, out->sign_sk, root) != 0)
        goto out;
    if ((rc = sr_e2e_kdf(out->box_sk, 32, root, SR_E2E_LABEL_ID_X25519, NULL, 0)) != SR_E2E_OK)
        goto out;
    rc = SR_E2E_ERR_INVALID;
    if (crypto_scalarmult_base(out->box_pk, out->box_sk) != 0)
        goto out;
    if ((rc = sr_e2e_kdf(out->dmkd_a, 32, root, SR_E2E_LABEL_ID_DMKD_A, NULL, 0)) != SR_E2E_OK ||
        (rc = sr_e2e_kdf(out->dmkd_b, 32, root, SR_E2E_LABEL_ID_DMKD_B, NULL, 0)) != SR_E2E_OK)
        goto out;
    rc = SR_E2E_OK;
out:
    if (rc != SR_E2E_OK)
        sodium_memzero(out, sizeof *out);
    return rc;
}

int sr_e2e_identity_new(sr_e2e_identity **out, const unsigned char root[SR_E2E_ROOT_BYTES])
{
    sr_e2e_identity *id = NULL;
    int rc;

    if (!out)
        return SR_E2E_ERR_INVALID;
    *out = NULL;
    if (!root)
        return SR_E2E_ERR_INVALID;
    if (sodium_init() < 0)
        return SR_E2E_ERR_NOMEM;
    id = sodium_malloc(sizeof *id);
    if (!id)
        return SR_E2E_ERR_NOMEM;
    rc = sr_e2e_identity_derive(id, root);
    if (rc != SR_E2E_OK) {
        sodium_free(id);
        return rc;
    }
    sodium_mprotect_readonly(id);
    *out = id;
    return SR_E2E_OK;
}

int sr_e2e_identity_generate(sr_e2e_identity **out)
{
    unsigned char root[SR_E2E_ROOT_BYTES];
    int rc;

    if (!out)
        return SR_E2E_ERR_INVALID;
    if (sodium_init() < 0) {
        *out = NULL;
        return SR_E2E_ERR_NOMEM;
    }
    randombytes_buf(root, sizeof root);
    rc = sr_e2e_identity_new(out, root);
    sodium_memzero(root, sizeof root);
    return rc;
}

void sr_e2e_identity_free(sr_e2e_identity *id)
{
    /* sodium_free wipes the region (read-only or not) before unmapping. */
    if (id)
        sodium_free(id);
}

void sr_e2e_identity_bundle(unsigned char bundle[SR_E2E_BUNDLE_BYTES], const sr_e2e_identity *id)
{
    memcpy(bundle, id->sign_pk, 32);
    memcpy(bundle + 32, id->box_pk, 32);
}

int sr_e2e_fingerprint(unsigned char fpr[SR_E2E_FPR_BYTES], const unsigned char ed_pk[32],
                       const unsigned char x_pk[32])
{
    unsigned char buf[1 + sizeof SR_E2E_LABEL_ID_FPR + 64];
    sr_e2e_writer w;

    if (!fpr || !ed_pk || !x_pk)
        return SR_E2E_ERR_INVALID;
    sr_e2e_writer_init(&w, buf, sizeof buf);
    sr_e2e_put_lp8(&w, SR_E2E_LABEL_ID_FPR);
    sr_e2e_put_bytes(&w, ed_pk, 32);
    sr_e2e_put_bytes(&w, x_pk, 32);
    if (w.overflow || crypto_generichash(fpr, SR_E2E_FPR_BYTES, buf, w.len, NULL, 0) != 0)
        return SR_E2E_ERR_INVALID;
    return SR_E2E_OK;
}

/* Builds the bundle signature input into buf; returns its length or 0. */
static size_t bundle_message(unsigned char *buf, size_t cap, const char *bare_jid,
                             const unsigned char ed_pk[32], const unsigned char x_pk[32])
{
    sr_e2e_writer w;

    if (!sr_e2e_str_ok(bare_jid, SR_E2E_JID_MAX) || !ed_pk || !x_pk)
        return 0;
    sr_e2e_writer_init(&w, buf, cap);
    sr_e2e_put_lp8(&w, SR_E2E_LABEL_ID_BUNDLE);
    sr_e2e_put_lp16(&w, bare_jid);
    sr_e2e_put_bytes(&w, ed_pk, 32);
    sr_e2e_put_bytes(&w, x_pk, 32);
    return w.overflow ? 0 : w.len;
}

int sr_e2e_bundle_sign(unsigned char sig[SR_E2E_SIG_BYTES], const char *bare_jid,
                       const sr_e2e_identity *id)
{
    unsigned char msg[BUNDLE_MSG_MAX];
    size_t n;

    if (!sig || !id)
        return SR_E2E_ERR_INVALID;
    n = bundle_message(msg, sizeof msg, bare_jid, id->sign_pk, id->box_pk);
    if (n == 0 || crypto_sign_detached(sig, NULL, msg, n, id->sign_sk) != 0)
        return SR_E2E_ERR_INVALID;
    return SR_E2E_OK;
}

int sr_e2e_bundle_verify(const unsigned char sig[SR_E2E_SIG_BYTES], const char *bare_jid,
                         const unsigned char ed_pk[32], const unsigned char x_pk[32])
{
    unsigned char msg[BUNDLE_MSG_MAX];
    size_t n;

    if (!sig)
        return SR_E2E_ERR_INVALID;
    n = bundle_message(msg, sizeof msg, bare_jid, ed_pk, x_pk);
    if (n == 0)
        return SR_E2E_ERR_INVALID;
    return crypto_sign_verify_detached(sig, msg, n, ed_pk) == 0 ? SR_E2E_OK : SR_E2E_ERR_SIGNATURE;
}
