/* The KDF, result texts and the length-prefixed encoder shared by the e2e
 * core; see common.h for the definitions they implement. */
#include "e2e/common.h"

#include <sodium.h>
#include <string.h>

const char *sr_e2e_strerror(int err)
{
    switch (err) {
    case SR_E2E_OK: return "ok";
    case SR_E2E_ERR_INVALID: return "invalid argument";
    case SR_E2E_ERR_MALFORMED: return "malformed input";
    case SR_E2E_ERR_VERSION: return "unsupported format version";
    case SR_E2E_ERR_SIGNATURE: return "signature does not verify";
    case SR_E2E_ERR_DECRYPT: return "decryption failed";
    case SR_E2E_ERR_PASSPHRASE: return "wrong passphrase";
    case SR_E2E_ERR_WEAK_PARAMS: return "key-derivation limits out of bounds";
    case SR_E2E_ERR_POINT: return "invalid group element";
    case SR_E2E_ERR_SCALAR: return "invalid scalar";
    case SR_E2E_ERR_REPLAY: return "replayed message";
    case SR_E2E_ERR_NOMEM: return "out of memory";
    case SR_E2E_ERR_MISMATCH: return "value does not match";
    default: return "unknown error";
    }
}

int sr_e2e_kdf(unsigned char *out, size_t outlen, const unsigned char key[SR_E2E_KEY_BYTES],
               const char *label, const unsigned char *in, size_t inlen)
{
    crypto_generichash_state st;
    size_t label_len;
    unsigned char l8;
    int rc = SR_E2E_ERR_INVALID;

    if (!out || !key || !label || (!in && inlen) || outlen < crypto_generichash_BYTES_MIN ||
        outlen > crypto_generichash_BYTES_MAX)
        goto out;
    label_len = strlen(label);
    if (label_len == 0 || label_len > 255)
        goto out;
    l8 = (unsigned char)label_len;
    if (crypto_generichash_init(&st, key, SR_E2E_KEY_BYTES, outlen) != 0 ||
        crypto_generichash_update(&st, &l8, 1) != 0 ||
        crypto_generichash_update(&st, (const unsigned char *)label, label_len) != 0 ||
        (inlen && crypto_generichash_update(&st, in, inlen) != 0) ||
        crypto_generichash_final(&st, out, outlen) != 0)
        goto out;
    rc = SR_E2E_OK;
out:
    /* The state holds the keyed chaining value. */
    sodium_memzero(&st, sizeof st);
    return rc;
}

void sr_e2e_writer_init(sr_e2e_writer *w, unsigned char *buf, size_t cap)
{
    w->buf = buf;
    w->cap = cap;
    w->len = 0;
    w->overflow = false;
}

void sr_e2e_put_bytes(sr_e2e_writer *w, const void *p, size_t n)
{
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = true;
        return;
    }
    if (n)
        memcpy(w->buf + w->len, p, n);
    w->len += n;
}

void sr_e2e_put_u8(sr_e2e_writer *w, uint8_t v)
{
    sr_e2e_put_bytes(w, &v, 1);
}

void sr_e2e_put_u16(sr_e2e_writer *w, uint16_t v)
{
    unsigned char b[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    sr_e2e_put_bytes(w, b, sizeof b);
}

void sr_e2e_put_u32(sr_e2e_writer *w, uint32_t v)
{
    unsigned char b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (24 - 8 * i));
    sr_e2e_put_bytes(w, b, sizeof b);
}

void sr_e2e_put_u64(sr_e2e_writer *w, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (56 - 8 * i));
    sr_e2e_put_bytes(w, b, sizeof b);
}

void sr_e2e_put_lp8(sr_e2e_writer *w, const char *s)
{
    size_t n = strlen(s);
    if (n > UINT8_MAX) {
        w->overflow = true;
        return;
    }
    sr_e2e_put_u8(w, (uint8_t)n);
    sr_e2e_put_bytes(w, s, n);
}

void sr_e2e_put_lp16(sr_e2e_writer *w, const char *s)
{
    size_t n = strlen(s);
    if (n > UINT16_MAX) {
        w->overflow = true;
        return;
    }
    sr_e2e_put_u16(w, (uint16_t)n);
    sr_e2e_put_bytes(w, s, n);
}

uint16_t sr_e2e_get_u16(const unsigned char *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

uint32_t sr_e2e_get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint64_t sr_e2e_get_u64(const unsigned char *p)
{
    return (uint64_t)sr_e2e_get_u32(p) << 32 | sr_e2e_get_u32(p + 4);
}

bool sr_e2e_str_ok(const char *s, size_t max)
{
    if (!s)
        return false;
    size_t n = strnlen(s, max + 1);
    return n >= 1 && n <= max;
}
