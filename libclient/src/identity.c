/* Identities: the 32-byte root seed and everything derived from it
 * (Ed25519 signing key, X25519 sealing key, key-distribution seeds; see
 * e2e/identity.h) in sodium_malloc'd memory (guard pages, mlock, read-only
 * once built), export/import of the root, fingerprints. */
#include "internal.h"

#include <sodium.h>
#include <string.h>

size_t sealroom_publickeybytes(void)
{
    return SEALROOM_PUBLICKEYBYTES;
}

size_t sealroom_secretkeybytes(void)
{
    return SEALROOM_SECRETKEYBYTES;
}

size_t sealroom_fingerprintbytes(void)
{
    return SEALROOM_FINGERPRINTBYTES;
}

/* Builds an identity from a seed; the seed is the caller's to wipe. */
static int identity_from_seed(sealroom_identity **out, const unsigned char seed[32])
{
    if (sodium_init() < 0)
        return SEALROOM_E_NOMEM;
    sealroom_identity *id = sodium_malloc(sizeof *id);
    if (!id)
        return SEALROOM_E_NOMEM;
    if (sr_e2e_identity_derive(&id->e2e, seed) != SR_E2E_OK) {
        sodium_free(id);
        return SEALROOM_E_INVALID;
    }
    memcpy(id->pk, id->e2e.sign_pk, sizeof id->pk);
    memcpy(id->sk, id->e2e.sign_sk, sizeof id->sk);
    sodium_mprotect_readonly(id);
    *out = id;
    return SEALROOM_OK;
}

int sealroom_identity_generate(sealroom_identity **out)
{
    unsigned char seed[32];
    int rc;
    if (!out)
        return SEALROOM_E_INVALID;
    *out = NULL;
    if (sodium_init() < 0)
        return SEALROOM_E_NOMEM;
    randombytes_buf(seed, sizeof seed);
    rc = identity_from_seed(out, seed);
    sodium_memzero(seed, sizeof seed);
    return rc;
}

int sealroom_identity_import(sealroom_identity **out, const unsigned char *secret,
                             size_t secret_len)
{
    if (!out)
        return SEALROOM_E_INVALID;
    *out = NULL;
    if (!secret || secret_len != SEALROOM_SECRETKEYBYTES)
        return SEALROOM_E_INVALID;
    return identity_from_seed(out, secret);
}

int sealroom_identity_export(unsigned char *out, size_t out_len, const sealroom_identity *id)
{
    if (!out || !id || out_len < SEALROOM_SECRETKEYBYTES)
        return SEALROOM_E_INVALID;
    memcpy(out, id->e2e.root, SEALROOM_SECRETKEYBYTES);
    return SEALROOM_OK;
}

int sealroom_identity_public_key(unsigned char *pk, size_t pk_len, const sealroom_identity *id)
{
    if (!pk || !id || pk_len < SEALROOM_PUBLICKEYBYTES)
        return SEALROOM_E_INVALID;
    memcpy(pk, id->pk, SEALROOM_PUBLICKEYBYTES);
    return SEALROOM_OK;
}

void sr_fingerprint_text(char out[SEALROOM_FINGERPRINTBYTES], const unsigned char h[32])
{
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, h, 32);
    char *p = out;
    for (int g = 0; g < 8; g++) {
        if (g)
            *p++ = ' ';
        memcpy(p, hex + g * 8, 8);
        p += 8;
    }
    *p = '\0';
}

int sealroom_fingerprint(char *out, size_t out_len, const unsigned char *pk, size_t pk_len)
{
    unsigned char h[32];
    if (!out || !pk || pk_len != SEALROOM_PUBLICKEYBYTES || out_len < SEALROOM_FINGERPRINTBYTES)
        return SEALROOM_E_INVALID;
    crypto_generichash(h, sizeof h, pk, pk_len, NULL, 0);
    sr_fingerprint_text(out, h);
    return SEALROOM_OK;
}

int sealroom_identity_fingerprint(char *out, size_t out_len, const sealroom_identity *id)
{
    if (!id)
        return SEALROOM_E_INVALID;
    return sealroom_fingerprint(out, out_len, id->pk, sizeof id->pk);
}

void sealroom_identity_free(sealroom_identity *id)
{
    /* sodium_free wipes the region before unmapping it. */
    if (id)
        sodium_free(id);
}
