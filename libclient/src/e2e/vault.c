/* Passphrase vault: Argon2id key schedule, header, canonical plaintext and
 * the pin list (layouts in vault.h). */
#include "e2e/vault.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define VAULT_MAGIC "SRVL"
#define VAULT_AD_MAX (SR_E2E_VAULT_HEADER_BYTES + 2 + SR_E2E_JID_MAX)
#define OFF_OPS 6
#define OFF_MEM 10
#define OFF_SALT 18
#define OFF_NONCE 34
#define OFF_CHECK 58
#define PLAIN_FIXED (1 + SR_E2E_ROOT_BYTES + 4)
/* Refuse blobs no honest client could have made before touching them. */
#define VAULT_MAX_BYTES (SR_E2E_VAULT_HEADER_BYTES + PLAIN_FIXED + \
                         (size_t)SR_E2E_VAULT_MAX_PINS * (2 + SR_E2E_JID_MAX + SR_E2E_FPR_BYTES) + \
                         crypto_aead_xchacha20poly1305_ietf_ABYTES)

int sr_e2e_vault_data_new(sr_e2e_vault_data **out, const unsigned char root[SR_E2E_ROOT_BYTES])
{
    sr_e2e_vault_data *d;

    if (!out)
        return SR_E2E_ERR_INVALID;
    *out = NULL;
    if (!root)
        return SR_E2E_ERR_INVALID;
    if (sodium_init() < 0)
        return SR_E2E_ERR_NOMEM;
    d = sodium_malloc(sizeof *d);
    if (!d)
        return SR_E2E_ERR_NOMEM;
    memset(d, 0, sizeof *d);
    memcpy(d->root, root, SR_E2E_ROOT_BYTES);
    *out = d;
    return SR_E2E_OK;
}

void sr_e2e_vault_data_free(sr_e2e_vault_data *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->npins; i++)
        free(d->pins[i].jid);
    free(d->pins);
    sodium_free(d);
}

/* Index of jid in the sorted pins, or where it would go (*found false). */
static size_t pin_find(const sr_e2e_vault_data *d, const char *jid, bool *found)
{
    size_t lo = 0, hi = d->npins;

    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(d->pins[mid].jid, jid);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int sr_e2e_vault_pin_set(sr_e2e_vault_data *d, const char *jid, const unsigned char fpr[SR_E2E_FPR_BYTES])
{
    bool found;
    size_t at;
    char *copy;

    if (!d || !fpr || !sr_e2e_str_ok(jid, SR_E2E_JID_MAX))
        return SR_E2E_ERR_INVALID;
    at = pin_find(d, jid, &found);
    if (found) {
        memcpy(d->pins[at].fpr, fpr, SR_E2E_FPR_BYTES);
        return SR_E2E_OK;
    }
    if (d->npins >= SR_E2E_VAULT_MAX_PINS)
        return SR_E2E_ERR_INVALID;
    if (d->npins == d->cap) {
        size_t ncap = d->cap ? d->cap * 2 : 8;
        sr_e2e_pin *np = realloc(d->pins, ncap * sizeof *np);
        if (!np)
            return SR_E2E_ERR_NOMEM;
        d->pins = np;
        d->cap = ncap;
    }
    copy = strdup(jid);
    if (!copy)
        return SR_E2E_ERR_NOMEM;
    memmove(d->pins + at + 1, d->pins + at, (d->npins - at) * sizeof *d->pins);
    d->pins[at].jid = copy;
    memcpy(d->pins[at].fpr, fpr, SR_E2E_FPR_BYTES);
    d->npins++;
    return SR_E2E_OK;
}

const unsigned char *sr_e2e_vault_pin_get(const sr_e2e_vault_data *d, const char *jid)
{
    bool found;
    size_t at;

    if (!d || !sr_e2e_str_ok(jid, SR_E2E_JID_MAX))
        return NULL;
    at = pin_find(d, jid, &found);
    return found ? d->pins[at].fpr : NULL;
}

static size_t plain_len(const sr_e2e_vault_data *d)
{
    size_t n = PLAIN_FIXED;
    for (size_t i = 0; i < d->npins; i++)
        n += 2 + strlen(d->pins[i].jid) + SR_E2E_FPR_BYTES;
    return n;
}

size_t sr_e2e_vault_sealed_len(const sr_e2e_vault_data *d)
{
    if (!d)
        return 0;
    return SR_E2E_VAULT_HEADER_BYTES + plain_len(d) + crypto_aead_xchacha20poly1305_ietf_ABYTES;
}

/* key and check from the passphrase and the header's salt and limits. */
static int vault_keys(unsigned char key[32], unsigned char check[SR_E2E_VAULT_CHECK_BYTES],
                      const char *pass, size_t pass_len, const unsigned char salt[SR_E2E_VAULT_SALT_BYTES],
                      unsigned long long ops, size_t mem)
{
    unsigned char master[32];
    int rc = SR_E2E_ERR_NOMEM;

    /* crypto_pwhash fails only when it cannot allocate memlimit bytes
     * (arguments were range-checked by the callers). */
    if (crypto_pwhash(master, sizeof master, pass, pass_len, salt, ops, mem,
                      crypto_pwhash_ALG_ARGON2ID13) != 0)
        goto out;
    if ((rc = sr_e2e_kdf(key, 32, master, SR_E2E_LABEL_VAULT_KEY, NULL, 0)) != SR_E2E_OK ||
        (rc = sr_e2e_kdf(check, SR_E2E_VAULT_CHECK_BYTES, master, SR_E2E_LABEL_VAULT_CHECK, NULL, 0)) !=
            SR_E2E_OK)
        goto out;
    rc = SR_E2E_OK;
out:
    sodium_memzero(master, sizeof master);
    return rc;
}

static int vault_ad(unsigned char *ad, size_t cap, size_t *ad_len, const unsigned char *header,
                    const char *owner)
{
    sr_e2e_writer w;

    sr_e2e_writer_init(&w, ad, cap);
    sr_e2e_put_bytes(&w, header, SR_E2E_VAULT_HEADER_BYTES);
    sr_e2e_put_lp16(&w, owner);
    if (w.overflow)
        return SR_E2E_ERR_INVALID;
    *ad_len = w.len;
    return SR_E2E_OK;
}

static bool passphrase_ok(const char *pass, size_t pass_len)
{
    return pass && pass_len > 0 && pass_len <= crypto_pwhash_PASSWD_MAX;
}

static bool limits_sane(unsigned long long ops, size_t mem)
{
    return ops >= crypto_pwhash_OPSLIMIT_MIN && ops <= UINT32_MAX &&
           mem >= crypto_pwhash_MEMLIMIT_MIN && mem <= crypto_pwhash_MEMLIMIT_MAX && mem % 1024u == 0;
}

/* The canonical plaintext of d into plain (exactly plain_len(d) bytes). */
static int write_plain(unsigned char *plain, size_t plen, const sr_e2e_vault_data *d)
{
    sr_e2e_writer w;

    sr_e2e_writer_init(&w, plain, plen);
    sr_e2e_put_u8(&w, SR_E2E_VAULT_VERSION);
    sr_e2e_put_bytes(&w, d->root, SR_E2E_ROOT_BYTES);
    sr_e2e_put_u32(&w, (uint32_t)d->npins);
    for (size_t i = 0; i < d->npins; i++) {
        sr_e2e_put_lp16(&w, d->pins[i].jid);
        sr_e2e_put_bytes(&w, d->pins[i].fpr, SR_E2E_FPR_BYTES);
    }
    return w.overflow || w.len != plen ? SR_E2E_ERR_INVALID : SR_E2E_OK;
}

/* Header ‖ AEAD(plaintext) under an already derived key. */
static int seal_core(unsigned char *out, size_t cap, size_t *out_len, const sr_e2e_vault_data *d,
                     const char *owner, const unsigned char key[32],
                     const unsigned char check[SR_E2E_VAULT_CHECK_BYTES],
                     const unsigned char salt[SR_E2E_VAULT_SALT_BYTES], uint32_t ops, uint64_t mem,
                     const unsigned char *nonce_in)
{
    unsigned char ad[VAULT_AD_MAX];
    unsigned char *plain = NULL;
    size_t plen, total, ad_len = 0;
    unsigned long long ct_len = 0;
    sr_e2e_writer w;
    int rc = SR_E2E_ERR_INVALID;

    plen = plain_len(d);
    total = SR_E2E_VAULT_HEADER_BYTES + plen + crypto_aead_xchacha20poly1305_ietf_ABYTES;
    if (cap < total)
        return SR_E2E_ERR_INVALID;
    sr_e2e_writer_init(&w, out, SR_E2E_VAULT_HEADER_BYTES);
    sr_e2e_put_bytes(&w, VAULT_MAGIC, 4);
    sr_e2e_put_u8(&w, SR_E2E_VAULT_VERSION);
    sr_e2e_put_u8(&w, SR_E2E_VAULT_ALG);
    sr_e2e_put_u32(&w, ops);
    sr_e2e_put_u64(&w, mem);
    sr_e2e_put_bytes(&w, salt, SR_E2E_VAULT_SALT_BYTES);
    if (nonce_in)
        sr_e2e_put_bytes(&w, nonce_in, 24);
    else if (!w.overflow && w.len + 24 <= w.cap) {
        randombytes_buf(out + w.len, 24);
        w.len += 24;
    }
    sr_e2e_put_bytes(&w, check, SR_E2E_VAULT_CHECK_BYTES);
    if (w.overflow || w.len != SR_E2E_VAULT_HEADER_BYTES)
        goto out;
    if ((rc = vault_ad(ad, sizeof ad, &ad_len, out, owner)) != SR_E2E_OK)
        goto out;
    rc = SR_E2E_ERR_NOMEM;
    plain = sodium_malloc(plen);
    if (!plain)
        goto out;
    if ((rc = write_plain(plain, plen, d)) != SR_E2E_OK)
        goto out;
    rc = SR_E2E_ERR_INVALID;
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(out + SR_E2E_VAULT_HEADER_BYTES, &ct_len, plain, plen,
                                                   ad, ad_len, NULL, out + OFF_NONCE, key) != 0 ||
        ct_len != plen + crypto_aead_xchacha20poly1305_ietf_ABYTES)
        goto out;
    *out_len = total;
    rc = SR_E2E_OK;
out:
    if (plain) {
        sodium_memzero(plain, plen);
        sodium_free(plain);
    }
    if (rc != SR_E2E_OK)
        sodium_memzero(out, total);
    return rc;
}

int sr_e2e_vault_seal_ex(unsigned char *out, size_t cap, size_t *out_len, const sr_e2e_vault_data *d,
                         const char *owner, const char *passphrase, size_t passphrase_len,
                         const sr_e2e_vault_params *params)
{
    unsigned char key[32];
    unsigned char check[SR_E2E_VAULT_CHECK_BYTES];
    unsigned char salt[SR_E2E_VAULT_SALT_BYTES];
    int rc;

    if (!out || !out_len || !d || !params || !sr_e2e_str_ok(owner, SR_E2E_JID_MAX) ||
        !passphrase_ok(passphrase, passphrase_len))
        return SR_E2E_ERR_INVALID;
    *out_len = 0;
    if (sodium_init() < 0)
        return SR_E2E_ERR_NOMEM;
    if (!limits_sane(params->opslimit, params->memlimit) || cap < sr_e2e_vault_sealed_len(d))
        return SR_E2E_ERR_INVALID;
    if (params->salt)
        memcpy(salt, params->salt, sizeof salt);
    else
        randombytes_buf(salt, sizeof salt);
    rc = vault_keys(key, check, passphrase, passphrase_len, salt, params->opslimit, params->memlimit);
    if (rc == SR_E2E_OK)
        rc = seal_core(out, cap, out_len, d, owner, key, check, salt, (uint32_t)params->opslimit,
                       (uint64_t)params->memlimit, params->nonce);
    sodium_memzero(key, sizeof key);
    sodium_memzero(check, sizeof check);
    return rc;
}

int sr_e2e_vault_seal(unsigned char *out, size_t cap, size_t *out_len, const sr_e2e_vault_data *d,
                      const char *owner, const char *passphrase, size_t passphrase_len)
{
    sr_e2e_vault_params p = {crypto_pwhash_OPSLIMIT_MODERATE, crypto_pwhash_MEMLIMIT_MODERATE, NULL, NULL};
    return sr_e2e_vault_seal_ex(out, cap, out_len, d, owner, passphrase, passphrase_len, &p);
}

int sr_e2e_vault_key_new(sr_e2e_vault_key **out, const char *passphrase, size_t passphrase_len,
                         const sr_e2e_vault_params *params)
{
    sr_e2e_vault_key *k;
    int rc;

    if (!out)
        return SR_E2E_ERR_INVALID;
    *out = NULL;
    if (!params || !passphrase_ok(passphrase, passphrase_len))
        return SR_E2E_ERR_INVALID;
    if (sodium_init() < 0)
        return SR_E2E_ERR_NOMEM;
    if (!limits_sane(params->opslimit, params->memlimit))
        return SR_E2E_ERR_INVALID;
    /* A vault no client would open is worse than an error now. */
    if (params->opslimit < crypto_pwhash_OPSLIMIT_INTERACTIVE ||
        params->memlimit < crypto_pwhash_MEMLIMIT_INTERACTIVE ||
        params->opslimit > SR_E2E_VAULT_OPS_MAX || params->memlimit > crypto_pwhash_MEMLIMIT_SENSITIVE)
        return SR_E2E_ERR_WEAK_PARAMS;
    k = sodium_malloc(sizeof *k);
    if (!k)
        return SR_E2E_ERR_NOMEM;
    if (params->salt)
        memcpy(k->salt, params->salt, sizeof k->salt);
    else
        randombytes_buf(k->salt, sizeof k->salt);
    k->opslimit = (uint32_t)params->opslimit;
    k->memlimit = (uint64_t)params->memlimit;
    rc = vault_keys(k->key, k->check, passphrase, passphrase_len, k->salt, params->opslimit,
                    params->memlimit);
    if (rc != SR_E2E_OK) {
        sr_e2e_vault_key_free(k);
        return rc;
    }
    *out = k;
    return SR_E2E_OK;
}

void sr_e2e_vault_key_free(sr_e2e_vault_key *k)
{
    if (k)
        sodium_free(k); /* wipes */
}

int sr_e2e_vault_seal_keyed(unsigned char *out, size_t cap, size_t *out_len,
                            const sr_e2e_vault_data *d, const char *owner, const sr_e2e_vault_key *k)
{
    if (!out || !out_len || !d || !k || !sr_e2e_str_ok(owner, SR_E2E_JID_MAX))
        return SR_E2E_ERR_INVALID;
    *out_len = 0;
    return seal_core(out, cap, out_len, d, owner, k->key, k->check, k->salt, k->opslimit,
                     k->memlimit, NULL);
}

/* Canonical plaintext → vault data; strict: exact length, sorted pins. */
static int parse_plain(sr_e2e_vault_data **out, const unsigned char *p, size_t len)
{
    sr_e2e_vault_data *d = NULL;
    char jid[SR_E2E_JID_MAX + 1];
    char prev[SR_E2E_JID_MAX + 1] = "";
    uint32_t npins;
    size_t off;
    int rc = SR_E2E_ERR_MALFORMED;

    if (len < PLAIN_FIXED)
        goto out;
    if (p[0] != SR_E2E_VAULT_VERSION) {
        rc = SR_E2E_ERR_VERSION;
        goto out;
    }
    npins = sr_e2e_get_u32(p + 1 + SR_E2E_ROOT_BYTES);
    if (npins > SR_E2E_VAULT_MAX_PINS)
        goto out;
    if ((rc = sr_e2e_vault_data_new(&d, p + 1)) != SR_E2E_OK)
        goto out;
    rc = SR_E2E_ERR_MALFORMED;
    off = PLAIN_FIXED;
    for (uint32_t i = 0; i < npins; i++) {
        size_t jl;
        if (len - off < 2)
            goto out;
        jl = sr_e2e_get_u16(p + off);
        off += 2;
        if (jl == 0 || jl > SR_E2E_JID_MAX || len - off < jl + SR_E2E_FPR_BYTES ||
            memchr(p + off, '\0', jl))
            goto out;
        memcpy(jid, p + off, jl);
        jid[jl] = '\0';
        off += jl;
        if (i > 0 && strcmp(prev, jid) >= 0)
            goto out;
        if ((rc = sr_e2e_vault_pin_set(d, jid, p + off)) != SR_E2E_OK)
            goto out;
        rc = SR_E2E_ERR_MALFORMED;
        off += SR_E2E_FPR_BYTES;
        memcpy(prev, jid, jl + 1);
    }
    if (off != len)
        goto out;
    *out = d;
    d = NULL;
    rc = SR_E2E_OK;
out:
    sr_e2e_vault_data_free(d);
    return rc;
}

/* Header checks shared by every open: magic, version, lengths, limits. */
static int check_header(const unsigned char *in, size_t len, unsigned long long ops_floor,
                        size_t mem_floor, unsigned long long *ops, uint64_t *mem)
{
    if (len < 6 || memcmp(in, VAULT_MAGIC, 4) != 0)
        return SR_E2E_ERR_MALFORMED;
    if (in[4] != SR_E2E_VAULT_VERSION || in[5] != SR_E2E_VAULT_ALG)
        return SR_E2E_ERR_VERSION;
    if (len < SR_E2E_VAULT_HEADER_BYTES + PLAIN_FIXED + crypto_aead_xchacha20poly1305_ietf_ABYTES ||
        len > VAULT_MAX_BYTES)
        return SR_E2E_ERR_MALFORMED;
    *ops = sr_e2e_get_u32(in + OFF_OPS);
    *mem = sr_e2e_get_u64(in + OFF_MEM);
    /* Argon2id counts memory in KiB and ignores the rest, so a limit that
     * is not a whole number of KiB would give one key for several headers. */
    if (*mem % 1024u != 0)
        return SR_E2E_ERR_MALFORMED;
    if (*ops < ops_floor || *mem < mem_floor || *ops < crypto_pwhash_OPSLIMIT_MIN ||
        *mem < crypto_pwhash_MEMLIMIT_MIN || *ops > SR_E2E_VAULT_OPS_MAX ||
        *mem > crypto_pwhash_MEMLIMIT_SENSITIVE)
        return SR_E2E_ERR_WEAK_PARAMS;
    return SR_E2E_OK;
}

/* Check value, then AEAD, then the plaintext parse. */
static int open_core(sr_e2e_vault_data **out, const unsigned char *in, size_t len, const char *owner,
                     const unsigned char key[32], const unsigned char check[SR_E2E_VAULT_CHECK_BYTES])
{
    unsigned char ad[VAULT_AD_MAX];
    unsigned char *plain = NULL;
    unsigned long long m_len = 0;
    size_t plen = 0, ad_len = 0;
    int rc;

    if (crypto_verify_16(check, in + OFF_CHECK) != 0)
        return SR_E2E_ERR_PASSPHRASE;
    if ((rc = vault_ad(ad, sizeof ad, &ad_len, in, owner)) != SR_E2E_OK)
        return rc;
    plen = len - SR_E2E_VAULT_HEADER_BYTES - crypto_aead_xchacha20poly1305_ietf_ABYTES;
    plain = sodium_malloc(plen);
    if (!plain)
        return SR_E2E_ERR_NOMEM;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, &m_len, NULL, in + SR_E2E_VAULT_HEADER_BYTES,
                                                   len - SR_E2E_VAULT_HEADER_BYTES, ad, ad_len,
                                                   in + OFF_NONCE, key) != 0 ||
        m_len != plen)
        rc = SR_E2E_ERR_DECRYPT;
    else
        rc = parse_plain(out, plain, plen);
    sodium_memzero(plain, plen);
    sodium_free(plain);
    return rc;
}

static int open_with_passphrase(sr_e2e_vault_data **out, sr_e2e_vault_key **key_out,
                                const unsigned char *in, size_t len, const char *owner,
                                const char *passphrase, size_t passphrase_len,
                                unsigned long long ops_floor, size_t mem_floor)
{
    sr_e2e_vault_key *k = NULL;
    unsigned long long ops = 0;
    uint64_t mem = 0;
    int rc;

    if (!out)
        return SR_E2E_ERR_INVALID;
    *out = NULL;
    if (key_out)
        *key_out = NULL;
    if (!in || !sr_e2e_str_ok(owner, SR_E2E_JID_MAX) || !passphrase_ok(passphrase, passphrase_len))
        return SR_E2E_ERR_INVALID;
    if (sodium_init() < 0)
        return SR_E2E_ERR_NOMEM;
    if ((rc = check_header(in, len, ops_floor, mem_floor, &ops, &mem)) != SR_E2E_OK)
        return rc;
    k = sodium_malloc(sizeof *k);
    if (!k)
        return SR_E2E_ERR_NOMEM;
    memcpy(k->salt, in + OFF_SALT, sizeof k->salt);
    k->opslimit = (uint32_t)ops;
    k->memlimit = mem;
    rc = vault_keys(k->key, k->check, passphrase, passphrase_len, k->salt, ops, (size_t)mem);
    if (rc == SR_E2E_OK)
        rc = open_core(out, in, len, owner, k->key, k->check);
    if (rc == SR_E2E_OK && key_out) {
        *key_out = k;
        k = NULL;
    }
    sr_e2e_vault_key_free(k);
    return rc;
}

int sr_e2e_vault_open_ex(sr_e2e_vault_data **out, const unsigned char *in, size_t len,
                         const char *owner, const char *passphrase, size_t passphrase_len,
                         unsigned long long ops_floor, size_t mem_floor)
{
    return open_with_passphrase(out, NULL, in, len, owner, passphrase, passphrase_len, ops_floor,
                                mem_floor);
}

int sr_e2e_vault_open(sr_e2e_vault_data **out, const unsigned char *in, size_t len, const char *owner,
                      const char *passphrase, size_t passphrase_len)
{
    return sr_e2e_vault_open_ex(out, in, len, owner, passphrase, passphrase_len,
                                crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE);
}

int sr_e2e_vault_open_keep(sr_e2e_vault_data **out, sr_e2e_vault_key **key_out,
                           const unsigned char *in, size_t len, const char *owner,
                           const char *passphrase, size_t passphrase_len)
{
    return open_with_passphrase(out, key_out, in, len, owner, passphrase, passphrase_len,
                                crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE);
}

int sr_e2e_vault_open_keyed(sr_e2e_vault_data **out, const unsigned char *in, size_t len,
                            const char *owner, const sr_e2e_vault_key *k)
{
    unsigned long long ops = 0;
    uint64_t mem = 0;
    int rc;

    if (!out)
        return SR_E2E_ERR_INVALID;
    *out = NULL;
    if (!in || !k || !sr_e2e_str_ok(owner, SR_E2E_JID_MAX))
        return SR_E2E_ERR_INVALID;
    if ((rc = check_header(in, len, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                           crypto_pwhash_MEMLIMIT_INTERACTIVE, &ops, &mem)) != SR_E2E_OK)
        return rc;
    if (ops != k->opslimit || mem != k->memlimit ||
        sodium_memcmp(in + OFF_SALT, k->salt, sizeof k->salt) != 0)
        return SR_E2E_ERR_PASSPHRASE;
    return open_core(out, in, len, owner, k->key, k->check);
}

int sr_e2e_vault_plain_encode(unsigned char **out, size_t *out_len, const sr_e2e_vault_data *d)
{
    unsigned char *buf;
    size_t n;
    int rc;

    if (!out || !out_len || !d)
        return SR_E2E_ERR_INVALID;
    *out = NULL;
    *out_len = 0;
    n = plain_len(d);
    buf = sodium_malloc(n);
    if (!buf)
        return SR_E2E_ERR_NOMEM;
    if ((rc = write_plain(buf, n, d)) != SR_E2E_OK) {
        sodium_free(buf);
        return rc;
    }
    *out = buf;
    *out_len = n;
    return SR_E2E_OK;
}

int sr_e2e_vault_plain_decode(sr_e2e_vault_data **out, const unsigned char *in, size_t len)
{
    if (!out)
        return SR_E2E_ERR_INVALID;
    *out = NULL;
    if (!in)
        return SR_E2E_ERR_INVALID;
    return parse_plain(out, in, len);
}
