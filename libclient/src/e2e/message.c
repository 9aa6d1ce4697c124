/* Message sealing and opening: key derivation, associated data, wire format
 * and the sender's signature (layouts in message.h). */
#include "e2e/message.h"

#include <sodium.h>
#include <string.h>

int sr_e2e_message_key(unsigned char mk[32], const unsigned char p[SR_E2E_POINT_BYTES],
                       const unsigned char datakey_id[SR_E2E_DATAKEY_ID_BYTES], const char *message_id)
{
    unsigned char in[SR_E2E_DATAKEY_ID_BYTES + 2 + SR_E2E_MSGID_MAX];
    sr_e2e_writer w;

    if (!mk || !p || !datakey_id || !sr_e2e_str_ok(message_id, SR_E2E_MSGID_MAX))
        return SR_E2E_ERR_INVALID;
    sr_e2e_writer_init(&w, in, sizeof in);
    sr_e2e_put_bytes(&w, datakey_id, SR_E2E_DATAKEY_ID_BYTES);
    sr_e2e_put_lp16(&w, message_id);
    if (w.overflow)
        return SR_E2E_ERR_INVALID;
    return sr_e2e_kdf(mk, 32, p, SR_E2E_LABEL_MSG_KEY, in, w.len);
}

int sr_e2e_message_ad(unsigned char *ad, size_t cap, size_t *ad_len, const sr_e2e_msg_meta *meta)
{
    sr_e2e_writer w;

    if (!ad || !ad_len || !meta || !meta->datakey_id || !sr_e2e_str_ok(meta->room, SR_E2E_JID_MAX) ||
        !sr_e2e_str_ok(meta->sender, SR_E2E_JID_MAX) ||
        !sr_e2e_str_ok(meta->message_id, SR_E2E_MSGID_MAX))
        return SR_E2E_ERR_INVALID;
    sr_e2e_writer_init(&w, ad, cap);
    sr_e2e_put_lp8(&w, SR_E2E_LABEL_MSG_AD);
    sr_e2e_put_u8(&w, SR_E2E_MSG_VERSION);
    sr_e2e_put_lp16(&w, meta->room);
    sr_e2e_put_lp16(&w, meta->sender);
    sr_e2e_put_lp16(&w, meta->message_id);
    sr_e2e_put_bytes(&w, meta->datakey_id, SR_E2E_DATAKEY_ID_BYTES);
    sr_e2e_put_u64(&w, meta->roster_version);
    if (w.overflow)
        return SR_E2E_ERR_INVALID;
    *ad_len = w.len;
    return SR_E2E_OK;
}

/* T = BLAKE2b-512(lp8(label) ‖ u32 len(AD) ‖ AD ‖ nonce ‖ ct), message.h. */
static int sig_digest(unsigned char t[64], const unsigned char *ad, size_t ad_len,
                      const unsigned char *nonce, const unsigned char *ct, size_t ct_len)
{
    crypto_generichash_state st;
    unsigned char pre[1 + sizeof SR_E2E_LABEL_MSG_SIG + 4];
    sr_e2e_writer w;

    sr_e2e_writer_init(&w, pre, sizeof pre);
    sr_e2e_put_lp8(&w, SR_E2E_LABEL_MSG_SIG);
    sr_e2e_put_u32(&w, (uint32_t)ad_len);
    if (w.overflow || crypto_generichash_init(&st, NULL, 0, 64) != 0 ||
        crypto_generichash_update(&st, pre, w.len) != 0 ||
        crypto_generichash_update(&st, ad, ad_len) != 0 ||
        crypto_generichash_update(&st, nonce, SR_E2E_NONCE_BYTES) != 0 ||
        crypto_generichash_update(&st, ct, ct_len) != 0 || crypto_generichash_final(&st, t, 64) != 0)
        return SR_E2E_ERR_INVALID;
    return SR_E2E_OK;
}

int sr_e2e_message_seal_with_nonce(unsigned char *out, size_t cap, size_t *out_len,
                                   const unsigned char *plain, size_t plain_len,
                                   const sr_e2e_msg_meta *meta, const unsigned char p[SR_E2E_POINT_BYTES],
                                   const unsigned char sign_sk[64],
                                   const unsigned char nonce[SR_E2E_NONCE_BYTES])
{
    unsigned char ad[SR_E2E_MSG_AD_MAX];
    unsigned char mk[32];
    unsigned char t[64];
    size_t ad_len = 0, total = 0;
    unsigned long long ct_len = 0;
    sr_e2e_writer w;
    int rc = SR_E2E_ERR_INVALID;

    if (!out || !out_len || (!plain && plain_len) || !sign_sk || !nonce)
        return SR_E2E_ERR_INVALID;
    *out_len = 0;
    if (plain_len > SR_E2E_MSG_MAX_PLAIN)
        goto out;
    total = plain_len + SR_E2E_MSG_OVERHEAD;
    if (cap < total)
        goto out;
    if ((rc = sr_e2e_point_check(p)) != SR_E2E_OK ||
        (rc = sr_e2e_message_ad(ad, sizeof ad, &ad_len, meta)) != SR_E2E_OK ||
        (rc = sr_e2e_message_key(mk, p, meta->datakey_id, meta->message_id)) != SR_E2E_OK)
        goto out;
    rc = SR_E2E_ERR_INVALID;
    sr_e2e_writer_init(&w, out, cap);
    sr_e2e_put_u8(&w, SR_E2E_MSG_VERSION);
    sr_e2e_put_bytes(&w, meta->datakey_id, SR_E2E_DATAKEY_ID_BYTES);
    sr_e2e_put_u64(&w, meta->roster_version);
    sr_e2e_put_bytes(&w, nonce, SR_E2E_NONCE_BYTES);
    if (w.overflow)
        goto out;
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(out + SR_E2E_MSG_HEADER_BYTES, &ct_len, plain,
                                                   plain_len, ad, ad_len, NULL, nonce, mk) != 0 ||
        ct_len != plain_len + SR_E2E_TAG_BYTES)
        goto out;
    if ((rc = sig_digest(t, ad, ad_len, nonce, out + SR_E2E_MSG_HEADER_BYTES, (size_t)ct_len)) !=
        SR_E2E_OK)
        goto out;
    rc = SR_E2E_ERR_INVALID;
    if (crypto_sign_detached(out + SR_E2E_MSG_HEADER_BYTES + ct_len, NULL, t, sizeof t, sign_sk) != 0)
        goto out;
    *out_len = total;
    rc = SR_E2E_OK;
out:
    sodium_memzero(mk, sizeof mk);
    sodium_memzero(t, sizeof t);
    /* A failed seal leaves no half-built payload behind. */
    if (rc != SR_E2E_OK && total && cap >= total)
        sodium_memzero(out, total);
    return rc;
}

int sr_e2e_message_seal(unsigned char *out, size_t cap, size_t *out_len, const unsigned char *plain,
                        size_t plain_len, const sr_e2e_msg_meta *meta,
                        const unsigned char p[SR_E2E_POINT_BYTES], const unsigned char sign_sk[64])
{
    unsigned char nonce[SR_E2E_NONCE_BYTES];

    if (sodium_init() < 0)
        return SR_E2E_ERR_NOMEM;
    randombytes_buf(nonce, sizeof nonce);
    return sr_e2e_message_seal_with_nonce(out, cap, out_len, plain, plain_len, meta, p, sign_sk, nonce);
}

int sr_e2e_message_parse(sr_e2e_sealed_view *v, const unsigned char *in, size_t len)
{
    if (!v)
        return SR_E2E_ERR_INVALID;
    memset(v, 0, sizeof *v);
    if (!in)
        return SR_E2E_ERR_INVALID;
    if (len < 1)
        return SR_E2E_ERR_MALFORMED;
    if (in[0] != SR_E2E_MSG_VERSION)
        return SR_E2E_ERR_VERSION;
    if (len < SR_E2E_MSG_OVERHEAD || len > SR_E2E_MSG_MAX_BYTES)
        return SR_E2E_ERR_MALFORMED;
    v->version = in[0];
    v->datakey_id = in + 1;
    v->roster_version = sr_e2e_get_u64(in + 1 + SR_E2E_DATAKEY_ID_BYTES);
    v->nonce = in + 1 + SR_E2E_DATAKEY_ID_BYTES + 8;
    v->ct = in + SR_E2E_MSG_HEADER_BYTES;
    v->ct_len = len - SR_E2E_MSG_HEADER_BYTES - SR_E2E_SIG_BYTES;
    v->sig = in + len - SR_E2E_SIG_BYTES;
    return SR_E2E_OK;
}

/* Rebuilds AD for a parsed payload and the receiver's context. */
static int view_ad(unsigned char *ad, size_t cap, size_t *ad_len, const sr_e2e_sealed_view *v,
                   const char *room, const char *sender, const char *message_id)
{
    sr_e2e_msg_meta meta = {room, sender, message_id, v->datakey_id, v->roster_version};

    if (v->version != SR_E2E_MSG_VERSION || !v->datakey_id || !v->nonce || !v->ct || !v->sig ||
        v->ct_len < SR_E2E_TAG_BYTES)
        return SR_E2E_ERR_INVALID;
    return sr_e2e_message_ad(ad, cap, ad_len, &meta);
}

int sr_e2e_message_verify(const sr_e2e_sealed_view *v, const char *room, const char *sender,
                          const char *message_id, const unsigned char sender_pk[32])
{
    unsigned char ad[SR_E2E_MSG_AD_MAX];
    unsigned char t[64];
    size_t ad_len = 0;
    int rc;

    if (!v || !sender_pk)
        return SR_E2E_ERR_INVALID;
    if ((rc = view_ad(ad, sizeof ad, &ad_len, v, room, sender, message_id)) != SR_E2E_OK ||
        (rc = sig_digest(t, ad, ad_len, v->nonce, v->ct, v->ct_len)) != SR_E2E_OK)
        goto out;
    rc = crypto_sign_verify_detached(v->sig, t, sizeof t, sender_pk) == 0 ? SR_E2E_OK
                                                                          : SR_E2E_ERR_SIGNATURE;
out:
    return rc;
}

int sr_e2e_message_open(unsigned char *plain, size_t cap, size_t *plain_len,
                        const sr_e2e_sealed_view *v, const char *room, const char *sender,
                        const char *message_id, const unsigned char sender_pk[32],
                        const unsigned char p[SR_E2E_POINT_BYTES])
{
    unsigned char ad[SR_E2E_MSG_AD_MAX];
    unsigned char mk[32];
    unsigned long long m_len = 0;
    size_t ad_len = 0, want = 0;
    int rc = SR_E2E_ERR_INVALID;

    if (!plain || !plain_len || !v)
        return SR_E2E_ERR_INVALID;
    *plain_len = 0;
    if (v->ct_len < SR_E2E_TAG_BYTES)
        goto out;
    want = v->ct_len - SR_E2E_TAG_BYTES;
    if (cap < want) {
        want = 0;
        goto out;
    }
    if ((rc = sr_e2e_message_verify(v, room, sender, message_id, sender_pk)) != SR_E2E_OK ||
        (rc = sr_e2e_point_check(p)) != SR_E2E_OK ||
        (rc = view_ad(ad, sizeof ad, &ad_len, v, room, sender, message_id)) != SR_E2E_OK ||
        (rc = sr_e2e_message_key(mk, p, v->datakey_id, message_id)) != SR_E2E_OK)
        goto out;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, &m_len, NULL, v->ct, v->ct_len, ad, ad_len,
                                                   v->nonce, mk) != 0 ||
        m_len != want) {
        rc = SR_E2E_ERR_DECRYPT;
        goto out;
    }
    *plain_len = want;
    rc = SR_E2E_OK;
out:
    sodium_memzero(mk, sizeof mk);
    if (rc != SR_E2E_OK && want)
        sodium_memzero(plain, want);
    return rc;
}
