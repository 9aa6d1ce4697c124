/* Multi-cast key distribution: the arithmetic of one run (layouts and
 * protocol in dmkd.h). */
#include "e2e/dmkd.h"

#include <sodium.h>
#include <string.h>

#include "e2e/archive.h"

#define CTX_MAX (2 + SR_E2E_JID_MAX + 8 + 32 + SR_E2E_DMKD_RUN_ID_BYTES)
/* label ‖ ctx ‖ jid ‖ two 32-byte values */
#define MSG_MAX (1 + 255 + CTX_MAX + 2 + SR_E2E_JID_MAX + 64)

void sr_e2e_dmkd_member_wipe(sr_e2e_dmkd_member *m)
{
    if (m)
        sodium_memzero(m, sizeof *m);
}

static size_t ctx_bytes(unsigned char *buf, size_t cap, const sr_e2e_dmkd_ctx *ctx)
{
    sr_e2e_writer w;
    if (!ctx || !sr_e2e_str_ok(ctx->room, SR_E2E_JID_MAX) || !ctx->roster_hash || !ctx->run_id)
        return 0;
    sr_e2e_writer_init(&w, buf, cap);
    sr_e2e_put_lp16(&w, ctx->room);
    sr_e2e_put_u64(&w, ctx->epoch);
    sr_e2e_put_bytes(&w, ctx->roster_hash, 32);
    sr_e2e_put_bytes(&w, ctx->run_id, SR_E2E_DMKD_RUN_ID_BYTES);
    return w.overflow ? 0 : w.len;
}

static void xor32(unsigned char *out, const unsigned char *a, const unsigned char *b)
{
    for (size_t i = 0; i < 32; i++)
        out[i] = a[i] ^ b[i];
}

int sr_e2e_dmkd_commit(unsigned char c[SR_E2E_DMKD_BYTES], const sr_e2e_dmkd_ctx *ctx,
                       const char *jid, const unsigned char k[SR_E2E_DMKD_BYTES])
{
    unsigned char buf[MSG_MAX];
    sr_e2e_writer w;
    size_t n;

    if (!c || !k || !sr_e2e_str_ok(jid, SR_E2E_JID_MAX))
        return SR_E2E_ERR_INVALID;
    sr_e2e_writer_init(&w, buf, sizeof buf);
    sr_e2e_put_lp8(&w, SR_E2E_LABEL_DMKD_COMMIT);
    n = ctx_bytes(buf + w.len, sizeof buf - w.len, ctx);
    if (n == 0 || w.overflow)
        return SR_E2E_ERR_INVALID;
    w.len += n;
    sr_e2e_put_lp16(&w, jid);
    sr_e2e_put_bytes(&w, k, SR_E2E_DMKD_BYTES);
    int rc = w.overflow || crypto_generichash(c, SR_E2E_DMKD_BYTES, buf, w.len, NULL, 0) != 0
                 ? SR_E2E_ERR_INVALID
                 : SR_E2E_OK;
    sodium_memzero(buf, sizeof buf);
    return rc;
}

/* KDF(key1, l1, x1 ‖ ctx, n) ⊕ KDF(key2, l2, x2 ‖ ctx, n): the twisted PRF. */
static int twisted(unsigned char *out, size_t n, const unsigned char key1[32], const char *l1,
                   const unsigned char x1[32], const unsigned char key2[32], const char *l2,
                   const unsigned char x2[32], const unsigned char *ctx, size_t ctx_len)
{
    unsigned char in[32 + CTX_MAX], a[64], b[64];
    int rc;

    memcpy(in, x1, 32);
    memcpy(in + 32, ctx, ctx_len);
    rc = sr_e2e_kdf(a, n, key1, l1, in, 32 + ctx_len);
    if (rc == SR_E2E_OK) {
        memcpy(in, x2, 32);
        rc = sr_e2e_kdf(b, n, key2, l2, in, 32 + ctx_len);
    }
    if (rc == SR_E2E_OK)
        for (size_t i = 0; i < n; i++)
            out[i] = a[i] ^ b[i];
    sodium_memzero(in, sizeof in);
    sodium_memzero(a, sizeof a);
    sodium_memzero(b, sizeof b);
    return rc;
}

int sr_e2e_dmkd_round1(sr_e2e_dmkd_member *m, const sr_e2e_dmkd_ctx *ctx, const char *jid,
                       const unsigned char dmkd_a[32], const unsigned char dmkd_b[32],
                       const unsigned char *es1, const unsigned char *es2)
{
    unsigned char c[CTX_MAX], e1[32], e2[32], wide[64];
    size_t n;
    int rc = SR_E2E_ERR_INVALID;

    if (!m || !dmkd_a || !dmkd_b || !sr_e2e_str_ok(jid, SR_E2E_JID_MAX))
        return SR_E2E_ERR_INVALID;
    if (sodium_init() < 0)
        return SR_E2E_ERR_NOMEM;
    sodium_memzero(m, sizeof *m);
    n = ctx_bytes(c, sizeof c, ctx);
    if (n == 0)
        return SR_E2E_ERR_INVALID;
    if (es1)
        memcpy(e1, es1, 32);
    else
        randombytes_buf(e1, 32);
    if (es2)
        memcpy(e2, es2, 32);
    else
        randombytes_buf(e2, 32);
    if ((rc = twisted(wide, 64, dmkd_a, SR_E2E_LABEL_DMKD_R_LONG, e1, e2, SR_E2E_LABEL_DMKD_R_EPH,
                      dmkd_b, c, n)) != SR_E2E_OK ||
        (rc = twisted(m->k, 32, dmkd_a, SR_E2E_LABEL_DMKD_K_LONG, e1, e2, SR_E2E_LABEL_DMKD_K_EPH,
                      dmkd_b, c, n)) != SR_E2E_OK)
        goto out;
    crypto_core_ristretto255_scalar_reduce(m->r, wide);
    rc = SR_E2E_ERR_SCALAR;
    if (sodium_is_zero(m->r, sizeof m->r) || crypto_scalarmult_ristretto255_base(m->R, m->r) != 0)
        goto out;
    rc = sr_e2e_dmkd_commit(m->c, ctx, jid, m->k);
out:
    sodium_memzero(e1, sizeof e1);
    sodium_memzero(e2, sizeof e2);
    sodium_memzero(wide, sizeof wide);
    if (rc != SR_E2E_OK)
        sr_e2e_dmkd_member_wipe(m);
    return rc;
}

/* lp8(label) ‖ ctx-or-sid ‖ lp16(jid) ‖ a ‖ b into buf. */
static size_t signed_msg(unsigned char *buf, size_t cap, const char *label,
                         const sr_e2e_dmkd_ctx *ctx, const unsigned char *sid, const char *jid,
                         const unsigned char a[32], const unsigned char b[32])
{
    sr_e2e_writer w;
    if (!a || !b || !sr_e2e_str_ok(jid, SR_E2E_JID_MAX))
        return 0;
    sr_e2e_writer_init(&w, buf, cap);
    sr_e2e_put_lp8(&w, label);
    if (ctx) {
        size_t n = w.overflow ? 0 : ctx_bytes(buf + w.len, cap - w.len, ctx);
        if (n == 0)
            return 0;
        w.len += n;
    } else {
        if (!sid)
            return 0;
        sr_e2e_put_bytes(&w, sid, 32);
    }
    sr_e2e_put_lp16(&w, jid);
    sr_e2e_put_bytes(&w, a, 32);
    sr_e2e_put_bytes(&w, b, 32);
    return w.overflow ? 0 : w.len;
}

static int sign_msg(unsigned char sig[SR_E2E_SIG_BYTES], const unsigned char *msg, size_t n,
                    const unsigned char sk[64])
{
    if (n == 0 || !sig || !sk)
        return SR_E2E_ERR_INVALID;
    crypto_sign_detached(sig, NULL, msg, n, sk);
    return SR_E2E_OK;
}

static int verify_msg(const unsigned char sig[SR_E2E_SIG_BYTES], const unsigned char *msg, size_t n,
                      const unsigned char pk[32])
{
    if (n == 0 || !sig || !pk)
        return SR_E2E_ERR_INVALID;
    return crypto_sign_verify_detached(sig, msg, n, pk) == 0 ? SR_E2E_OK : SR_E2E_ERR_SIGNATURE;
}

int sr_e2e_dmkd_round1_sign(unsigned char sig[SR_E2E_SIG_BYTES], const sr_e2e_dmkd_ctx *ctx,
                            const char *jid, const unsigned char R[32], const unsigned char c[32],
                            const unsigned char sign_sk[64])
{
    unsigned char buf[MSG_MAX];
    size_t n = signed_msg(buf, sizeof buf, SR_E2E_LABEL_DMKD_ROUND1, ctx, NULL, jid, R, c);
    if (!ctx)
        return SR_E2E_ERR_INVALID;
    return sign_msg(sig, buf, n, sign_sk);
}

int sr_e2e_dmkd_round1_verify(const unsigned char sig[SR_E2E_SIG_BYTES], const sr_e2e_dmkd_ctx *ctx,
                              const char *jid, const unsigned char R[32], const unsigned char c[32],
                              const unsigned char sign_pk[32])
{
    unsigned char buf[MSG_MAX];
    if (!ctx || !R)
        return SR_E2E_ERR_INVALID;
    if (sr_e2e_point_check(R) != SR_E2E_OK)
        return SR_E2E_ERR_POINT;
    size_t n = signed_msg(buf, sizeof buf, SR_E2E_LABEL_DMKD_ROUND1, ctx, NULL, jid, R, c);
    return verify_msg(sig, buf, n, sign_pk);
}

int sr_e2e_dmkd_sid(unsigned char sid[SR_E2E_DMKD_BYTES], const sr_e2e_dmkd_ctx *ctx, size_t n,
                    const char *const *jids, const unsigned char (*c)[32],
                    const unsigned char (*R)[32])
{
    unsigned char head[1 + 255 + CTX_MAX + 4];
    crypto_generichash_state st;
    sr_e2e_writer w;
    size_t cn;

    if (!sid || !jids || !c || !R || n < 2 || n > SR_E2E_DMKD_MAX_MEMBERS)
        return SR_E2E_ERR_INVALID;
    sr_e2e_writer_init(&w, head, sizeof head);
    sr_e2e_put_lp8(&w, SR_E2E_LABEL_DMKD_SID);
    cn = w.overflow ? 0 : ctx_bytes(head + w.len, sizeof head - w.len, ctx);
    if (cn == 0)
        return SR_E2E_ERR_INVALID;
    w.len += cn;
    sr_e2e_put_u32(&w, (uint32_t)n);
    if (w.overflow)
        return SR_E2E_ERR_INVALID;
    crypto_generichash_init(&st, NULL, 0, SR_E2E_DMKD_BYTES);
    crypto_generichash_update(&st, head, w.len);
    for (size_t i = 0; i < n; i++) {
        unsigned char item[2 + SR_E2E_JID_MAX + 64];
        if (!sr_e2e_str_ok(jids[i], SR_E2E_JID_MAX))
            return SR_E2E_ERR_INVALID;
        sr_e2e_writer_init(&w, item, sizeof item);
        sr_e2e_put_lp16(&w, jids[i]);
        sr_e2e_put_bytes(&w, c[i], 32);
        sr_e2e_put_bytes(&w, R[i], 32);
        if (w.overflow)
            return SR_E2E_ERR_INVALID;
        crypto_generichash_update(&st, item, w.len);
    }
    crypto_generichash_final(&st, sid, SR_E2E_DMKD_BYTES);
    return SR_E2E_OK;
}

/* KDF(sid, DMKD_EDGE, r·R). */
static int edge_key(unsigned char out[32], const unsigned char sid[32], const unsigned char r[32],
                    const unsigned char R[32])
{
    unsigned char p[32];
    int rc;
    if (sr_e2e_point_check(R) != SR_E2E_OK)
        return SR_E2E_ERR_POINT;
    if (crypto_scalarmult_ristretto255(p, r, R) != 0)
        return SR_E2E_ERR_POINT;
    rc = sr_e2e_kdf(out, 32, sid, SR_E2E_LABEL_DMKD_EDGE, p, sizeof p);
    sodium_memzero(p, sizeof p);
    return rc;
}

int sr_e2e_dmkd_round2(sr_e2e_dmkd_member *m, unsigned char T[SR_E2E_DMKD_BYTES],
                       unsigned char out_second[SR_E2E_DMKD_BYTES],
                       const unsigned char sid[SR_E2E_DMKD_BYTES], const unsigned char R_left[32],
                       const unsigned char R_right[32], bool representative)
{
    unsigned char kr[32];
    int rc;

    if (!m || !T || !out_second || !sid || !R_left || !R_right)
        return SR_E2E_ERR_INVALID;
    if ((rc = edge_key(m->kl, sid, m->r, R_left)) != SR_E2E_OK ||
        (rc = edge_key(kr, sid, m->r, R_right)) != SR_E2E_OK) {
        sodium_memzero(m->kl, sizeof m->kl);
        sodium_memzero(kr, sizeof kr);
        return rc;
    }
    xor32(T, m->kl, kr);
    if (representative)
        xor32(out_second, m->kl, m->k);
    else
        memcpy(out_second, m->k, 32);
    /* r has done its work: forward secrecy of this run's key needs it gone. */
    sodium_memzero(m->r, sizeof m->r);
    sodium_memzero(kr, sizeof kr);
    return SR_E2E_OK;
}

int sr_e2e_dmkd_round2_sign(unsigned char sig[SR_E2E_SIG_BYTES], const unsigned char sid[32],
                            const char *jid, const unsigned char T[32],
                            const unsigned char second[32], const unsigned char sign_sk[64])
{
    unsigned char buf[MSG_MAX];
    size_t n = signed_msg(buf, sizeof buf, SR_E2E_LABEL_DMKD_ROUND2, NULL, sid, jid, T, second);
    return sign_msg(sig, buf, n, sign_sk);
}

int sr_e2e_dmkd_round2_verify(const unsigned char sig[SR_E2E_SIG_BYTES], const unsigned char sid[32],
                              const char *jid, const unsigned char T[32],
                              const unsigned char second[32], const unsigned char sign_pk[32])
{
    unsigned char buf[MSG_MAX];
    size_t n = signed_msg(buf, sizeof buf, SR_E2E_LABEL_DMKD_ROUND2, NULL, sid, jid, T, second);
    return verify_msg(sig, buf, n, sign_pk);
}

int sr_e2e_dmkd_server(unsigned char k_prime[SR_E2E_DMKD_BYTES], unsigned char (*T_prime)[32],
                       size_t *bad, const sr_e2e_dmkd_ctx *ctx, size_t n,
                       const char *const *jids, const unsigned char (*c)[32],
                       const unsigned char (*T)[32], const unsigned char (*k)[32],
                       const unsigned char k_server[SR_E2E_DMKD_BYTES])
{
    unsigned char acc[32], cc[32];

    if (!k_prime || !T_prime || !bad || !jids || !c || !T || !k || !k_server || n < 2 ||
        n > SR_E2E_DMKD_MAX_MEMBERS)
        return SR_E2E_ERR_INVALID;
    *bad = 0;
    memcpy(k_prime, k_server, 32);
    for (size_t i = 1; i < n; i++) {
        int rc = sr_e2e_dmkd_commit(cc, ctx, jids[i], k[i]);
        if (rc != SR_E2E_OK)
            return rc;
        if (sodium_memcmp(cc, c[i], 32) != 0) {
            *bad = i;
            return SR_E2E_ERR_MISMATCH;
        }
        xor32(k_prime, k_prime, k[i]);
    }
    memset(acc, 0, sizeof acc);
    for (size_t i = 0; i < n; i++) {
        memcpy(T_prime[i], acc, 32);
        xor32(acc, acc, T[i]);
    }
    /* Every edge key enters twice: a ring whose T's do not cancel was not
     * computed over one consistent set of R's. */
    if (!sodium_is_zero(acc, sizeof acc)) {
        *bad = n;
        return SR_E2E_ERR_MISMATCH;
    }
    return SR_E2E_OK;
}

int sr_e2e_dmkd_derive(unsigned char secret[SR_E2E_DMKD_BYTES], const sr_e2e_dmkd_member *m,
                       const unsigned char sid[32], const sr_e2e_dmkd_ctx *ctx,
                       const char *rep_jid, const unsigned char c_rep[32],
                       const unsigned char k_prime[32], const unsigned char T_prime_i[32],
                       const unsigned char T_prime[32])
{
    unsigned char kl1[32], k1[32], cc[32], key[32], in[32 + CTX_MAX];
    size_t n;
    int rc;

    if (!secret || !m || !sid || !c_rep || !k_prime || !T_prime_i || !T_prime)
        return SR_E2E_ERR_INVALID;
    n = ctx_bytes(in + 32, sizeof in - 32, ctx);
    if (n == 0)
        return SR_E2E_ERR_INVALID;
    xor32(kl1, T_prime_i, m->kl);
    xor32(k1, T_prime, kl1);
    rc = sr_e2e_dmkd_commit(cc, ctx, rep_jid, k1);
    if (rc == SR_E2E_OK && sodium_memcmp(cc, c_rep, 32) != 0)
        rc = SR_E2E_ERR_MISMATCH;
    if (rc == SR_E2E_OK) {
        xor32(key, k_prime, k1);
        memcpy(in, sid, 32);
        rc = sr_e2e_kdf(secret, 32, key, SR_E2E_LABEL_DMKD_SECRET, in, 32 + n);
    }
    if (rc != SR_E2E_OK)
        sodium_memzero(secret, 32);
    sodium_memzero(kl1, sizeof kl1);
    sodium_memzero(k1, sizeof k1);
    sodium_memzero(key, sizeof key);
    return rc;
}
