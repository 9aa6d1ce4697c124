/* Ristretto255 data keys, header wrap/unwrap and re-encryption tokens
 * (archive.h). Every input is validated, because headers come from the
 * component and tokens from another member. */
#include "e2e/archive.h"

#include <sodium.h>
#include <string.h>

int sr_e2e_scalar_check(const unsigned char s[SR_E2E_SCALAR_BYTES])
{
    unsigned char wide[64] = {0};
    unsigned char red[SR_E2E_SCALAR_BYTES];
    int rc = SR_E2E_ERR_SCALAR;

    if (!s)
        return SR_E2E_ERR_INVALID;
    if (sodium_is_zero(s, SR_E2E_SCALAR_BYTES))
        goto out;
    memcpy(wide, s, SR_E2E_SCALAR_BYTES);
    crypto_core_ristretto255_scalar_reduce(red, wide);
    if (sodium_memcmp(red, s, SR_E2E_SCALAR_BYTES) != 0)
        goto out;
    rc = SR_E2E_OK;
out:
    sodium_memzero(wide, sizeof wide);
    sodium_memzero(red, sizeof red);
    return rc;
}

int sr_e2e_point_check(const unsigned char p[SR_E2E_POINT_BYTES])
{
    if (!p)
        return SR_E2E_ERR_INVALID;
    /* libsodium accepts the identity (all zeros) as valid; a data key or
     * header that is the identity would wrap nothing, so refuse it too.
     * libsodium 1.0.18 also ignores the top bit, so it accepts two
     * encodings of each point; RFC 9496 requires the canonical one, and a
     * malleable header would let the component alter stored rows unseen. */
    if ((p[SR_E2E_POINT_BYTES - 1] & 0x80) || crypto_core_ristretto255_is_valid_point(p) != 1 ||
        sodium_is_zero(p, SR_E2E_POINT_BYTES))
        return SR_E2E_ERR_POINT;
    return SR_E2E_OK;
}

int sr_e2e_datakey_random(unsigned char p[SR_E2E_POINT_BYTES])
{
    if (!p)
        return SR_E2E_ERR_INVALID;
    if (sodium_init() < 0)
        return SR_E2E_ERR_NOMEM;
    do
        crypto_core_ristretto255_random(p);
    while (sodium_is_zero(p, SR_E2E_POINT_BYTES));
    return SR_E2E_OK;
}

void sr_e2e_datakey_id_random(unsigned char id[SR_E2E_DATAKEY_ID_BYTES])
{
    randombytes_buf(id, SR_E2E_DATAKEY_ID_BYTES);
}

int sr_e2e_datakey_from_hash(unsigned char p[SR_E2E_POINT_BYTES],
                             const unsigned char h[SR_E2E_HASH_TO_POINT_BYTES])
{
    if (!p || !h)
        return SR_E2E_ERR_INVALID;
    if (crypto_core_ristretto255_from_hash(p, h) != 0 || sodium_is_zero(p, SR_E2E_POINT_BYTES)) {
        sodium_memzero(p, SR_E2E_POINT_BYTES);
        return SR_E2E_ERR_POINT;
    }
    return SR_E2E_OK;
}

/* out = s·q with both checked; out is zeroed on failure. */
static int checked_mul(unsigned char out[SR_E2E_POINT_BYTES], const unsigned char s[SR_E2E_SCALAR_BYTES],
                       const unsigned char q[SR_E2E_POINT_BYTES])
{
    int rc;

    if (!out)
        return SR_E2E_ERR_INVALID;
    if ((rc = sr_e2e_scalar_check(s)) != SR_E2E_OK || (rc = sr_e2e_point_check(q)) != SR_E2E_OK)
        goto out;
    /* Returns -1 when the product is the identity. */
    rc = crypto_scalarmult_ristretto255(out, s, q) == 0 ? SR_E2E_OK : SR_E2E_ERR_POINT;
out:
    if (rc != SR_E2E_OK)
        sodium_memzero(out, SR_E2E_POINT_BYTES);
    return rc;
}

int sr_e2e_header_wrap(unsigned char h[SR_E2E_POINT_BYTES], const unsigned char k[SR_E2E_SCALAR_BYTES],
                       const unsigned char p[SR_E2E_POINT_BYTES])
{
    return checked_mul(h, k, p);
}

int sr_e2e_header_unwrap(unsigned char p[SR_E2E_POINT_BYTES], const unsigned char k[SR_E2E_SCALAR_BYTES],
                         const unsigned char h[SR_E2E_POINT_BYTES])
{
    unsigned char kinv[SR_E2E_SCALAR_BYTES];
    int rc;

    if (!p)
        return SR_E2E_ERR_INVALID;
    if ((rc = sr_e2e_scalar_check(k)) != SR_E2E_OK)
        goto out;
    if (crypto_core_ristretto255_scalar_invert(kinv, k) != 0) {
        rc = SR_E2E_ERR_SCALAR;
        goto out;
    }
    rc = checked_mul(p, kinv, h);
out:
    sodium_memzero(kinv, sizeof kinv);
    if (rc != SR_E2E_OK)
        sodium_memzero(p, SR_E2E_POINT_BYTES);
    return rc;
}

int sr_e2e_header_unwrap_inverse(unsigned char p[SR_E2E_POINT_BYTES],
                                 const unsigned char k_inv[SR_E2E_SCALAR_BYTES],
                                 const unsigned char h[SR_E2E_POINT_BYTES])
{
    if (!p)
        return SR_E2E_ERR_INVALID;
    int rc = sr_e2e_scalar_check(k_inv);
    if (rc == SR_E2E_OK)
        rc = checked_mul(p, k_inv, h);
    if (rc != SR_E2E_OK)
        sodium_memzero(p, SR_E2E_POINT_BYTES);
    return rc;
}

/* out = a·b mod l with both checked, refusing a zero product. */
static int scalar_product(unsigned char out[SR_E2E_SCALAR_BYTES], const unsigned char a[SR_E2E_SCALAR_BYTES],
                          const unsigned char b[SR_E2E_SCALAR_BYTES])
{
    int rc;

    if (!out)
        return SR_E2E_ERR_INVALID;
    if ((rc = sr_e2e_scalar_check(a)) != SR_E2E_OK || (rc = sr_e2e_scalar_check(b)) != SR_E2E_OK)
        goto out;
    crypto_core_ristretto255_scalar_mul(out, a, b);
    rc = sodium_is_zero(out, SR_E2E_SCALAR_BYTES) ? SR_E2E_ERR_SCALAR : SR_E2E_OK;
out:
    if (rc != SR_E2E_OK)
        sodium_memzero(out, SR_E2E_SCALAR_BYTES);
    return rc;
}

int sr_e2e_token_invert(unsigned char inv[SR_E2E_SCALAR_BYTES],
                        const unsigned char delta[SR_E2E_SCALAR_BYTES])
{
    int rc;

    if (!inv)
        return SR_E2E_ERR_INVALID;
    if ((rc = sr_e2e_scalar_check(delta)) != SR_E2E_OK)
        goto out;
    rc = crypto_core_ristretto255_scalar_invert(inv, delta) == 0 ? SR_E2E_OK : SR_E2E_ERR_SCALAR;
out:
    if (rc != SR_E2E_OK)
        sodium_memzero(inv, SR_E2E_SCALAR_BYTES);
    return rc;
}

int sr_e2e_token_make(unsigned char delta[SR_E2E_SCALAR_BYTES],
                      const unsigned char k_old[SR_E2E_SCALAR_BYTES],
                      const unsigned char k_new[SR_E2E_SCALAR_BYTES])
{
    unsigned char inv[SR_E2E_SCALAR_BYTES];
    int rc;

    if (!delta)
        return SR_E2E_ERR_INVALID;
    if ((rc = sr_e2e_token_invert(inv, k_old)) != SR_E2E_OK)
        goto out;
    rc = scalar_product(delta, k_new, inv);
out:
    sodium_memzero(inv, sizeof inv);
    if (rc != SR_E2E_OK)
        sodium_memzero(delta, SR_E2E_SCALAR_BYTES);
    return rc;
}

int sr_e2e_token_compose(unsigned char delta_eg[SR_E2E_SCALAR_BYTES],
                         const unsigned char delta_fg[SR_E2E_SCALAR_BYTES],
                         const unsigned char delta_ef[SR_E2E_SCALAR_BYTES])
{
    return scalar_product(delta_eg, delta_fg, delta_ef);
}

int sr_e2e_header_rekey(unsigned char h_out[SR_E2E_POINT_BYTES],
                        const unsigned char delta[SR_E2E_SCALAR_BYTES],
                        const unsigned char h_in[SR_E2E_POINT_BYTES])
{
    return checked_mul(h_out, delta, h_in);
}

int sr_e2e_check_point(unsigned char pc[SR_E2E_POINT_BYTES], const char *room)
{
    unsigned char buf[1 + sizeof SR_E2E_LABEL_CHECK_POINT + 2 + SR_E2E_JID_MAX];
    unsigned char wide[SR_E2E_HASH_TO_POINT_BYTES];
    sr_e2e_writer w;

    if (!pc || !sr_e2e_str_ok(room, SR_E2E_JID_MAX))
        return SR_E2E_ERR_INVALID;
    sr_e2e_writer_init(&w, buf, sizeof buf);
    sr_e2e_put_lp8(&w, SR_E2E_LABEL_CHECK_POINT);
    sr_e2e_put_lp16(&w, room);
    if (w.overflow || crypto_generichash(wide, sizeof wide, buf, w.len, NULL, 0) != 0)
        return SR_E2E_ERR_INVALID;
    return sr_e2e_datakey_from_hash(pc, wide);
}

int sr_e2e_check_header(unsigned char hc[SR_E2E_POINT_BYTES], const unsigned char k[SR_E2E_SCALAR_BYTES],
                        const char *room)
{
    unsigned char pc[SR_E2E_POINT_BYTES];
    int rc;

    if (!hc)
        return SR_E2E_ERR_INVALID;
    if ((rc = sr_e2e_check_point(pc, room)) != SR_E2E_OK) {
        sodium_memzero(hc, SR_E2E_POINT_BYTES);
        return rc;
    }
    return sr_e2e_header_wrap(hc, k, pc);
}

int sr_e2e_check_header_verify(const unsigned char hc[SR_E2E_POINT_BYTES],
                               const unsigned char k[SR_E2E_SCALAR_BYTES], const char *room)
{
    unsigned char mine[SR_E2E_POINT_BYTES];
    int rc;

    if (!hc)
        return SR_E2E_ERR_INVALID;
    if ((rc = sr_e2e_check_header(mine, k, room)) == SR_E2E_OK)
        rc = sodium_memcmp(mine, hc, SR_E2E_POINT_BYTES) == 0 ? SR_E2E_OK : SR_E2E_ERR_MISMATCH;
    sodium_memzero(mine, sizeof mine);
    return rc;
}
