/* Search keyring: generation keys sealed per epoch (keyring.h). */
#include "search/keyring.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define TAG_BYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
#define ENTRY_BYTES (4 + 32)
#define PLAIN_BYTES(n) (1 + 4 + (n) * ENTRY_BYTES)

void sr_sse_keyring_free(sr_sse_keyring *k)
{
    if (!k)
        return;
    free(k->gen);
    sodium_free(k->key); /* wipes */
    memset(k, 0, sizeof *k);
}

/* Binds the blob to its room and epoch, so the component cannot serve one
 * room's or one epoch's keyring as another's. */
static int build_ad(unsigned char *ad, size_t cap, size_t *adlen, const char *room,
                    uint64_t epoch)
{
    sr_e2e_writer w;
    if (!sr_e2e_str_ok(room, SR_E2E_JID_MAX))
        return SR_E2E_ERR_INVALID;
    sr_e2e_writer_init(&w, ad, cap);
    sr_e2e_put_lp8(&w, SR_SSE_LABEL_KEYRING);
    sr_e2e_put_lp16(&w, room);
    sr_e2e_put_u64(&w, epoch);
    if (w.overflow)
        return SR_E2E_ERR_INVALID;
    *adlen = w.len;
    return SR_E2E_OK;
}

#define AD_MAX (1 + sizeof SR_SSE_LABEL_KEYRING + 2 + SR_E2E_JID_MAX + 8)

/* Generations ascending from 1: what seal writes and open accepts. */
static bool gens_ok(const uint32_t *gen, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (gen[i] == 0 || (i && gen[i] <= gen[i - 1]))
            return false;
    return true;
}

/* Replaces k's arrays by ones with room for n >= k->n entries, keeping
 * the present ones. Copy-and-free rather than realloc, so no copy of the
 * keys is left behind unwiped. */
static int resize(sr_sse_keyring *k, size_t n)
{
    uint32_t *gen = malloc(n * sizeof *gen);
    unsigned char (*key)[32] = sodium_malloc(n * sizeof *key);

    if (!gen || !key) {
        free(gen);
        sodium_free(key);
        return SR_E2E_ERR_NOMEM;
    }
    if (k->n) {
        memcpy(gen, k->gen, k->n * sizeof *gen);
        memcpy(key, k->key, k->n * sizeof *key);
    }
    free(k->gen);
    sodium_free(k->key);
    k->gen = gen;
    k->key = key;
    return SR_E2E_OK;
}

int sr_sse_keyring_put(sr_sse_keyring *k, uint32_t gen, const unsigned char key[32])
{
    int rc;

    if (!k || !key || gen == 0 || k->n >= SR_SSE_KEYRING_MAX ||
        (k->n && gen <= k->gen[k->n - 1]) || sodium_init() < 0)
        return SR_E2E_ERR_INVALID;
    if ((rc = resize(k, k->n + 1)) != SR_E2E_OK)
        return rc;
    k->gen[k->n] = gen;
    memcpy(k->key[k->n], key, 32);
    k->n++;
    return SR_E2E_OK;
}

int sr_sse_keyring_add_generation(sr_sse_keyring *k, uint32_t gen)
{
    unsigned char key[32];
    int rc;

    randombytes_buf(key, sizeof key);
    rc = sr_sse_keyring_put(k, gen, key);
    sodium_memzero(key, sizeof key);
    return rc;
}

const unsigned char *sr_sse_keyring_key(const sr_sse_keyring *k, uint32_t gen)
{
    size_t lo = 0, hi;

    if (!k)
        return NULL;
    /* Binary search: generations are strictly ascending. */
    for (hi = k->n; lo < hi;) {
        size_t mid = lo + (hi - lo) / 2;
        if (k->gen[mid] == gen)
            return k->key[mid];
        if (k->gen[mid] < gen)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int sr_sse_keyring_seal(unsigned char **blob, size_t *len, const sr_sse_keyring *k,
                        const unsigned char keyring_key[32], const char *room, uint64_t epoch)
{
    unsigned char ad[AD_MAX], *pt = NULL, *out = NULL;
    size_t adlen, ptlen, outlen;
    sr_e2e_writer w;
    int rc = SR_E2E_ERR_INVALID;

    if (blob)
        *blob = NULL;
    if (len)
        *len = 0;
    if (!blob || !len || !k || !keyring_key || k->n == 0 || k->n > SR_SSE_KEYRING_MAX ||
        !k->gen || !k->key || !gens_ok(k->gen, k->n) ||
        build_ad(ad, sizeof ad, &adlen, room, epoch) != SR_E2E_OK)
        return SR_E2E_ERR_INVALID;
    ptlen = PLAIN_BYTES(k->n);
    outlen = NONCE_BYTES + ptlen + TAG_BYTES;
    rc = SR_E2E_ERR_NOMEM;
    if (sodium_init() < 0 || !(pt = sodium_malloc(ptlen)) || !(out = malloc(outlen)))
        goto out;
    sr_e2e_writer_init(&w, pt, ptlen);
    sr_e2e_put_u8(&w, SR_SSE_KEYRING_VERSION);
    sr_e2e_put_u32(&w, (uint32_t)k->n);
    for (size_t i = 0; i < k->n; i++) {
        sr_e2e_put_u32(&w, k->gen[i]);
        sr_e2e_put_bytes(&w, k->key[i], 32);
    }
    rc = SR_E2E_ERR_INVALID;
    if (w.overflow || w.len != ptlen)
        goto out;
    /* Random nonce: the same epoch's keyring may be sealed more than once
     * (a retry, or a new generation added before the upload). */
    randombytes_buf(out, NONCE_BYTES);
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(out + NONCE_BYTES, NULL, pt, ptlen, ad, adlen,
                                                   NULL, out, keyring_key) != 0)
        goto out;
    *blob = out;
    *len = outlen;
    out = NULL;
    rc = SR_E2E_OK;
out:
    sodium_free(pt); /* wipes the generation keys */
    free(out);
    return rc;
}

int sr_sse_keyring_open(sr_sse_keyring *out, const unsigned char *blob, size_t len,
                        const unsigned char keyring_key[32], const char *room, uint64_t epoch)
{
    unsigned char ad[AD_MAX], *pt = NULL;
    size_t adlen, ptlen = 0, n;
    int rc;

    if (!out)
        return SR_E2E_ERR_INVALID;
    memset(out, 0, sizeof *out);
    if (!blob || !keyring_key || build_ad(ad, sizeof ad, &adlen, room, epoch) != SR_E2E_OK)
        return SR_E2E_ERR_INVALID;
    if (len < NONCE_BYTES + PLAIN_BYTES(1) + TAG_BYTES || len > SR_SSE_KEYRING_BLOB_MAX)
        return SR_E2E_ERR_MALFORMED;
    ptlen = len - NONCE_BYTES - TAG_BYTES;
    rc = SR_E2E_ERR_NOMEM;
    if (sodium_init() < 0 || !(pt = sodium_malloc(ptlen)))
        goto out;
    rc = SR_E2E_ERR_DECRYPT;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, NULL, NULL, blob + NONCE_BYTES,
                                                   len - NONCE_BYTES, ad, adlen, blob,
                                                   keyring_key) != 0)
        goto out;
    rc = SR_E2E_ERR_VERSION;
    if (pt[0] != SR_SSE_KEYRING_VERSION)
        goto out;
    rc = SR_E2E_ERR_MALFORMED;
    n = sr_e2e_get_u32(pt + 1);
    if (n == 0 || n > SR_SSE_KEYRING_MAX || ptlen != PLAIN_BYTES(n))
        goto out;
    if ((rc = resize(out, n)) != SR_E2E_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        out->gen[i] = sr_e2e_get_u32(pt + 5 + i * ENTRY_BYTES);
        memcpy(out->key[i], pt + 5 + i * ENTRY_BYTES + 4, 32);
    }
    out->n = n;
    rc = gens_ok(out->gen, n) ? SR_E2E_OK : SR_E2E_ERR_MALFORMED;
out:
    sodium_free(pt);
    if (rc != SR_E2E_OK)
        sr_sse_keyring_free(out);
    return rc;
}
