/* Unit tests for the end-to-end cryptographic core (libclient/src/e2e/):
 * fixed test vectors for every derivation and wrap, round trips, and every
 * refusal (tampered bytes, wrong keys, wrong passphrase, downgraded vault
 * limits, invalid points, zero scalars, misaddressed envelopes, forged
 * senders, replays). The vectors' primitive-level values were checked
 * independently of this code with Python (hashlib.blake2b, the
 * "cryptography" package's Ed25519/X25519/ChaCha20-Poly1305, integer
 * arithmetic mod l, and a separate ristretto255 implementation), so they
 * are not only this code agreeing with itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sealroom/sealroom.h>

#include "e2e/archive.h"
#include "e2e/common.h"
#include "e2e/envelope.h"
#include "e2e/epoch.h"
#include "e2e/identity.h"
#include "e2e/message.h"
#include "e2e/replay.h"
#include "e2e/vault.h"

#define ROOM "team@rooms.example.com"
#define ALICE "alice@example.com"
#define BOB "bob@example.com"
#define CAROL "carol@example.com"
#define MSGID "msg-0001"
#define PLAIN "Hello, sealed world!"
#define PASS "correct horse battery staple"
#define SMALL_OPS 1ull
#define SMALL_MEM 65536u

/* ---- fixtures ------------------------------------------------------------ */

static void fill(unsigned char *b, size_t n, unsigned start)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(start + i);
}

/* Fixed inputs of the vectors: bytes counting up from a start value. */
static void root_alice(unsigned char r[32]) { fill(r, 32, 0x00); }
static void root_bob(unsigned char r[32]) { fill(r, 32, 0xa0); }
static void root_carol(unsigned char r[32]) { fill(r, 32, 0x70); }
static void secret_of(unsigned char s[32], int epoch) { fill(s, 32, 0x20u * (unsigned)epoch); }
static void roster_hash(unsigned char h[32]) { fill(h, 32, 0x80); }

static sr_e2e_identity *identity(void (*root)(unsigned char *))
{
    unsigned char r[32];
    sr_e2e_identity *id = NULL;
    root(r);
    assert_int_equal(sr_e2e_identity_new(&id, r), SR_E2E_OK);
    return id;
}

static void epoch_keys(sr_e2e_epoch_keys *k, int epoch)
{
    unsigned char s[32], rh[32];
    secret_of(s, epoch);
    roster_hash(rh);
    assert_int_equal(sr_e2e_epoch_derive(k, s, ROOM, (uint64_t)epoch, rh), SR_E2E_OK);
}

static void vector_point(unsigned char p[32])
{
    unsigned char h[64];
    fill(h, sizeof h, 0xc0);
    assert_int_equal(sr_e2e_datakey_from_hash(p, h), SR_E2E_OK);
}

static const unsigned char *vector_key_id(void)
{
    static unsigned char id[SR_E2E_DATAKEY_ID_BYTES];
    fill(id, sizeof id, 0xf0);
    return id;
}

/* Compares with the expected hex and prints the actual value on mismatch,
 * so a changed derivation shows every affected vector in one run. */
static int vector_failures;

static void expect_hex(const char *name, const unsigned char *got, size_t n, const char *hex)
{
    static char buf[2 * 4096 + 1];
    assert_true(n <= 4096);
    sodium_bin2hex(buf, sizeof buf, got, n);
    if (strcmp(buf, hex) != 0) {
        print_message("vector %s mismatch:\n  got  %s\n  want %s\n", name, buf, hex);
        vector_failures++;
    }
}

static void expect_vectors_ok(void)
{
    int n = vector_failures;
    vector_failures = 0;
    assert_int_equal(n, 0);
}

/* ---- common -------------------------------------------------------------- */

static void test_kdf(void **state)
{
    unsigned char key[32], out[64];
    fill(key, sizeof key, 0x00);
    /* KDF(key, "sealroom.e2e.v1.epoch.keyring", "abc", 32) */
    assert_int_equal(sr_e2e_kdf(out, 32, key, SR_E2E_LABEL_EPOCH_KEYRING, (const unsigned char *)"abc", 3),
                     SR_E2E_OK);
    expect_hex("kdf", out, 32,
               "30730b40e79967c8974b1a9519a2ae025e62caeb5f552d92b37c041146e5537d");
    assert_int_equal(sr_e2e_kdf(out, 15, key, "x", NULL, 0), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_e2e_kdf(out, 65, key, "x", NULL, 0), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_e2e_kdf(out, 32, key, "", NULL, 0), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_e2e_kdf(out, 32, key, "x", NULL, 1), SR_E2E_ERR_INVALID);
    assert_string_equal(sr_e2e_strerror(SR_E2E_ERR_PASSPHRASE), "wrong passphrase");
    expect_vectors_ok();
}

/* ---- identity ------------------------------------------------------------ */

static void test_identity_vectors(void **state)
{
    sr_e2e_identity *id = identity(root_alice);
    unsigned char fpr[32], sig[64];

    expect_hex("identity.ed25519_pk", id->sign_pk, 32,
               "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8");
    expect_hex("identity.x25519_sk", id->box_sk, 32,
               "228460aecdd6b5c363f2fc50a4069289c5ca54c1ab380e2356566a114f5165f5");
    expect_hex("identity.x25519_pk", id->box_pk, 32,
               "81d1ffa58759a89a4b9ae62cda1e47ad6e31f304af007cf0831408ac47deec4f");
    expect_hex("identity.dmkd_a", id->dmkd_a, 32,
               "a8eef347762cd0d1c7b2683f612d7c37769b174275f517d064cd0a314a11467a");
    expect_hex("identity.dmkd_b", id->dmkd_b, 32,
               "059823bc3502603c0c360866574da5bc3699575f508bbea69acbf6ae847744b4");
    assert_int_equal(sr_e2e_fingerprint(fpr, id->sign_pk, id->box_pk), SR_E2E_OK);
    expect_hex("identity.fingerprint", fpr, 32,
               "31091d3a329f621356d5c090d1115d6363b7adf3341fdb03abc1df75e2415a6f");
    assert_int_equal(sr_e2e_bundle_sign(sig, ALICE, id), SR_E2E_OK);
    expect_hex("identity.bundle_sig", sig, 64,
               "595bef4f5161bb867bb5c112822bfb9b5eef5538073aa1750219a241c48ee9d8"
               "06c129eb2e3251200deca8b77c29aae3e855c6fb6b47d0d494ae857dbb00e50a");
    sr_e2e_identity_free(id);
    expect_vectors_ok();
}

/* The root is the Ed25519 seed of identity.c, so registered keys stay. */
static void test_identity_compatible(void **state)
{
    unsigned char root[32], pk[32], exported[32];
    sealroom_identity *legacy = NULL;
    sr_e2e_identity *id;

    randombytes_buf(root, sizeof root);
    assert_int_equal(sealroom_identity_import(&legacy, root, sizeof root), SEALROOM_OK);
    assert_int_equal(sealroom_identity_public_key(pk, sizeof pk, legacy), SEALROOM_OK);
    assert_int_equal(sealroom_identity_export(exported, sizeof exported, legacy), SEALROOM_OK);
    assert_int_equal(sr_e2e_identity_new(&id, exported), SR_E2E_OK);
    assert_memory_equal(id->sign_pk, pk, 32);
    assert_memory_equal(id->root, root, 32);
    sr_e2e_identity_free(id);
    sealroom_identity_free(legacy);
}

static void test_identity_bundle(void **state)
{
    sr_e2e_identity *a = NULL, *b = identity(root_bob);
    unsigned char sig[64], bundle[64], fa[32], fb[32];
    unsigned char box[crypto_box_SEALBYTES + 4], back[4];

    assert_int_equal(sr_e2e_identity_generate(&a), SR_E2E_OK);
    assert_int_equal(sr_e2e_bundle_sign(sig, ALICE, a), SR_E2E_OK);
    assert_int_equal(sr_e2e_bundle_verify(sig, ALICE, a->sign_pk, a->box_pk), SR_E2E_OK);
    assert_int_equal(sr_e2e_bundle_verify(sig, BOB, a->sign_pk, a->box_pk), SR_E2E_ERR_SIGNATURE);
    /* A server substituting a sealing key it knows is caught. */
    assert_int_equal(sr_e2e_bundle_verify(sig, ALICE, a->sign_pk, b->box_pk), SR_E2E_ERR_SIGNATURE);
    assert_int_equal(sr_e2e_bundle_verify(sig, ALICE, b->sign_pk, a->box_pk), SR_E2E_ERR_SIGNATURE);
    sig[10] ^= 1;
    assert_int_equal(sr_e2e_bundle_verify(sig, ALICE, a->sign_pk, a->box_pk), SR_E2E_ERR_SIGNATURE);
    assert_int_equal(sr_e2e_bundle_verify(sig, "", a->sign_pk, a->box_pk), SR_E2E_ERR_INVALID);

    sr_e2e_identity_bundle(bundle, a);
    assert_memory_equal(bundle, a->sign_pk, 32);
    assert_memory_equal(bundle + 32, a->box_pk, 32);
    assert_int_equal(sr_e2e_fingerprint(fa, a->sign_pk, a->box_pk), SR_E2E_OK);
    assert_int_equal(sr_e2e_fingerprint(fb, a->sign_pk, b->box_pk), SR_E2E_OK);
    assert_memory_not_equal(fa, fb, 32);

    /* The derived X25519 pair is a working crypto_box pair. */
    assert_int_equal(crypto_box_seal(box, (const unsigned char *)"ping", 4, a->box_pk), 0);
    assert_int_equal(crypto_box_seal_open(back, box, sizeof box, a->box_pk, a->box_sk), 0);
    assert_memory_equal(back, "ping", 4);
    assert_int_not_equal(crypto_box_seal_open(back, box, sizeof box, b->box_pk, b->box_sk), 0);

    /* Independent values from one root. */
    assert_memory_not_equal(a->dmkd_a, a->dmkd_b, 32);
    assert_memory_not_equal(a->dmkd_a, a->box_sk, 32);
    assert_int_equal(sr_e2e_identity_new(NULL, a->root), SR_E2E_ERR_INVALID);
    sr_e2e_identity_free(NULL);
    sr_e2e_identity_free(a);
    sr_e2e_identity_free(b);
}

/* ---- vault --------------------------------------------------------------- */

static sr_e2e_vault_data *vector_vault_data(void)
{
    sr_e2e_identity *b = identity(root_bob), *c = identity(root_carol);
    unsigned char root[32], fb[32], fc[32];
    sr_e2e_vault_data *d = NULL;

    root_alice(root);
    assert_int_equal(sr_e2e_vault_data_new(&d, root), SR_E2E_OK);
    assert_int_equal(sr_e2e_fingerprint(fb, b->sign_pk, b->box_pk), SR_E2E_OK);
    assert_int_equal(sr_e2e_fingerprint(fc, c->sign_pk, c->box_pk), SR_E2E_OK);
    /* Inserted out of order: the vault keeps them sorted. */
    assert_int_equal(sr_e2e_vault_pin_set(d, CAROL, fc), SR_E2E_OK);
    assert_int_equal(sr_e2e_vault_pin_set(d, BOB, fb), SR_E2E_OK);
    sr_e2e_identity_free(b);
    sr_e2e_identity_free(c);
    return d;
}

static unsigned char *vector_vault_blob(size_t *len)
{
    sr_e2e_vault_data *d = vector_vault_data();
    unsigned char salt[16], nonce[24];
    sr_e2e_vault_params p = {SMALL_OPS, SMALL_MEM, salt, nonce};
    size_t cap = sr_e2e_vault_sealed_len(d);
    unsigned char *blob = malloc(cap);

    assert_non_null(blob);
    fill(salt, sizeof salt, 0x10);
    fill(nonce, sizeof nonce, 0x50);
    assert_int_equal(sr_e2e_vault_seal_ex(blob, cap, len, d, ALICE, PASS, strlen(PASS), &p), SR_E2E_OK);
    assert_int_equal(*len, cap);
    sr_e2e_vault_data_free(d);
    return blob;
}

static int open_small(sr_e2e_vault_data **out, const unsigned char *blob, size_t len, const char *owner,
                      const char *pass)
{
    return sr_e2e_vault_open_ex(out, blob, len, owner, pass, strlen(pass), SMALL_OPS, SMALL_MEM);
}

static void test_vault_vector(void **state)
{
    size_t len = 0;
    unsigned char *blob = vector_vault_blob(&len);
    sr_e2e_vault_data *d = NULL;
    unsigned char root[32];

    expect_hex("vault.blob", blob, len,
               "5352564c0101000000010000000000010000101112131415161718191a1b1c1d"
               "1e1f505152535455565758595a5b5c5d5e5f60616263646566677ba60447afdb"
               "b3c71fec18aff9726451368b30a0add75e1ed0f6e28ddbfd77cf3820c4c9c75d"
               "a5ffda77e24626b0324ffe16837de2a10007cab87abda99335d4577957961965"
               "f136d276b7d310f9973b6eb473b9c919786f963d8125863a920abb8a9dc3f20e"
               "668f8ea6310d579f7a18659f125cc5833603d43772711d501688c2d3cf942a68"
               "fc7d8e4979933d150062bf18f9e77a7ac978a16c2dd0ddbe97376bcda7347b20"
               "736fe9");
    assert_int_equal(open_small(&d, blob, len, ALICE, PASS), SR_E2E_OK);
    root_alice(root);
    assert_memory_equal(d->root, root, 32);
    assert_int_equal(d->npins, 2);
    assert_string_equal(d->pins[0].jid, BOB);
    assert_string_equal(d->pins[1].jid, CAROL);
    assert_non_null(sr_e2e_vault_pin_get(d, CAROL));
    assert_null(sr_e2e_vault_pin_get(d, "dave@example.com"));
    sr_e2e_vault_data_free(d);
    free(blob);
    expect_vectors_ok();
}

static void test_vault_refusals(void **state)
{
    size_t len = 0;
    unsigned char *blob = vector_vault_blob(&len);
    sr_e2e_vault_data *d = NULL;

    assert_int_equal(open_small(&d, blob, len, ALICE, "correct horse battery stapler"),
                     SR_E2E_ERR_PASSPHRASE);
    assert_null(d);
    /* A vault served to the wrong user does not open. */
    assert_int_equal(open_small(&d, blob, len, BOB, PASS), SR_E2E_ERR_DECRYPT);

    /* Every byte of the header and the ciphertext is covered. */
    for (size_t i = 0; i < len; i++) {
        int rc;
        blob[i] ^= 0x01;
        rc = open_small(&d, blob, len, ALICE, PASS);
        blob[i] ^= 0x01;
        assert_null(d);
        if (i < 4)
            assert_int_equal(rc, SR_E2E_ERR_MALFORMED);          /* magic */
        else if (i < 6)
            assert_int_equal(rc, SR_E2E_ERR_VERSION);            /* version, algorithm */
        else if (i < 18)   /* limits: out of bounds, not whole KiB, or another key */
            assert_true(rc == SR_E2E_ERR_WEAK_PARAMS || rc == SR_E2E_ERR_MALFORMED ||
                        rc == SR_E2E_ERR_PASSPHRASE);
        else if (i < 34)
            assert_int_equal(rc, SR_E2E_ERR_PASSPHRASE);         /* salt */
        else if (i < 58)
            assert_int_equal(rc, SR_E2E_ERR_DECRYPT);            /* nonce */
        else if (i < 74)
            assert_int_equal(rc, SR_E2E_ERR_PASSPHRASE);         /* check */
        else
            assert_int_equal(rc, SR_E2E_ERR_DECRYPT);            /* ciphertext, tag */
    }
    assert_int_equal(open_small(&d, blob, len - 1, ALICE, PASS), SR_E2E_ERR_DECRYPT);
    assert_int_equal(open_small(&d, blob, 40, ALICE, PASS), SR_E2E_ERR_MALFORMED);
    assert_int_equal(open_small(&d, blob, 3, ALICE, PASS), SR_E2E_ERR_MALFORMED);
    assert_int_equal(open_small(&d, blob, len, ALICE, ""), SR_E2E_ERR_INVALID);

    /* The small test limits are refused by the production floor: this is
     * the downgrade a malicious server would try. */
    assert_int_equal(sr_e2e_vault_open(&d, blob, len, ALICE, PASS, strlen(PASS)),
                     SR_E2E_ERR_WEAK_PARAMS);
    /* And a ceiling, so a server cannot make a client allocate without bound. */
    {
        static const unsigned char two_gib[8] = {0, 0, 0, 0, 0x80, 0, 0, 0};
        static const unsigned char ops_11[4] = {0, 0, 0, 11};
        unsigned char saved[12];
        memcpy(saved, blob + 6, sizeof saved);
        memcpy(blob + 10, two_gib, 8);
        assert_int_equal(open_small(&d, blob, len, ALICE, PASS), SR_E2E_ERR_WEAK_PARAMS);
        memcpy(blob + 6, saved, sizeof saved);
        memcpy(blob + 6, ops_11, 4);
        assert_int_equal(open_small(&d, blob, len, ALICE, PASS), SR_E2E_ERR_WEAK_PARAMS);
        memcpy(blob + 6, saved, sizeof saved);
        blob[17] |= 1;     /* not a whole KiB */
        assert_int_equal(open_small(&d, blob, len, ALICE, PASS), SR_E2E_ERR_MALFORMED);
        memcpy(blob + 6, saved, sizeof saved);
        assert_int_equal(open_small(&d, blob, len, ALICE, PASS), SR_E2E_OK);
        sr_e2e_vault_data_free(d);
        d = NULL;
    }
    free(blob);
}

/* Strict plaintext: pins out of order (as only a buggy or hostile writer
 * with the passphrase could produce) are refused as malformed. */
static void test_vault_noncanonical(void **state)
{
    sr_e2e_vault_data *d = vector_vault_data(), *back = NULL;
    sr_e2e_vault_params p = {SMALL_OPS, SMALL_MEM, NULL, NULL};
    sr_e2e_pin tmp;
    size_t cap = sr_e2e_vault_sealed_len(d), len = 0;
    unsigned char *blob = malloc(cap);

    assert_non_null(blob);
    tmp = d->pins[0];
    d->pins[0] = d->pins[1];
    d->pins[1] = tmp;
    assert_int_equal(sr_e2e_vault_seal_ex(blob, cap, &len, d, ALICE, PASS, strlen(PASS), &p), SR_E2E_OK);
    assert_int_equal(open_small(&back, blob, len, ALICE, PASS), SR_E2E_ERR_MALFORMED);
    assert_null(back);
    /* Replacing a pin keeps one entry. */
    d->pins[1] = d->pins[0];
    d->pins[0] = tmp;
    assert_int_equal(sr_e2e_vault_pin_set(d, BOB, d->pins[1].fpr), SR_E2E_OK);
    assert_int_equal(d->npins, 2);
    assert_memory_equal(sr_e2e_vault_pin_get(d, BOB), d->pins[1].fpr, 32);
    sr_e2e_vault_data_free(d);
    free(blob);
}

/* The defaults (OPSLIMIT/MEMLIMIT_MODERATE) round-trip through the
 * production entry points and are recorded in the header. */
static void test_vault_defaults(void **state)
{
    unsigned char root[32];
    sr_e2e_vault_data *d = NULL, *back = NULL;
    size_t cap, len = 0;
    unsigned char *blob;

    randombytes_buf(root, sizeof root);
    assert_int_equal(sr_e2e_vault_data_new(&d, root), SR_E2E_OK);
    cap = sr_e2e_vault_sealed_len(d);
    blob = malloc(cap);
    assert_non_null(blob);
    assert_int_equal(sr_e2e_vault_seal(blob, cap, &len, d, ALICE, PASS, strlen(PASS)), SR_E2E_OK);
    assert_int_equal(sr_e2e_get_u32(blob + 6), crypto_pwhash_OPSLIMIT_MODERATE);
    assert_int_equal(sr_e2e_get_u64(blob + 10), crypto_pwhash_MEMLIMIT_MODERATE);
    assert_int_equal(sr_e2e_vault_open(&back, blob, len, ALICE, PASS, strlen(PASS)), SR_E2E_OK);
    assert_memory_equal(back->root, root, 32);
    assert_int_equal(back->npins, 0);
    assert_int_equal(sr_e2e_vault_seal(blob, cap - 1, &len, d, ALICE, PASS, strlen(PASS)),
                     SR_E2E_ERR_INVALID);
    sr_e2e_vault_data_free(back);
    sr_e2e_vault_data_free(d);
    free(blob);
}

/* ---- epochs -------------------------------------------------------------- */

static void test_epoch_vectors(void **state)
{
    sr_e2e_epoch_keys k;

    epoch_keys(&k, 1);
    expect_hex("epoch1.k", k.k, 32,
               "eefc0bfe14323eb8c973408c7d23978ac0ff7bd6717fdcfcd0869b074936650f");
    expect_hex("epoch1.kc", k.kc, 32,
               "7ef650118f8fe6425688280ab5fae86ce8af8a3c96ebc6c2a1d22aa764357c4b");
    expect_hex("epoch1.keyring", k.keyring, 32,
               "f1359a7bc5d367d401a5226206c4f288df73248883daba2bd8d6227b7eba8c0a");
    epoch_keys(&k, 2);
    expect_hex("epoch2.k", k.k, 32,
               "9a7476aca011b03364bd10360e4f58654ad1eecdafced5f8a7d474d4415d0f01");
    epoch_keys(&k, 3);
    expect_hex("epoch3.k", k.k, 32,
               "86ae70175f382597e7a5f0544025776edd97022efd67f5ca52395c0f170ce909");
    sodium_memzero(&k, sizeof k);
    expect_vectors_ok();
}

/* The inverse kept with each epoch unwraps exactly as inverting per header. */
static void test_epoch_inverse_unwrap(void **state)
{
    sr_e2e_epoch_keys k;
    unsigned char p[32], h[32], a[32], b[32], one[32] = {1}, prod[32];
    (void)state;
    for (int e = 1; e <= 3; e++) {
        epoch_keys(&k, e);
        crypto_core_ristretto255_scalar_mul(prod, k.k, k.k_inv);
        assert_memory_equal(prod, one, 32);
        for (int i = 0; i < 20; i++) {
            assert_int_equal(sr_e2e_datakey_random(p), SR_E2E_OK);
            assert_int_equal(sr_e2e_header_wrap(h, k.k, p), SR_E2E_OK);
            assert_int_equal(sr_e2e_header_unwrap(a, k.k, h), SR_E2E_OK);
            assert_int_equal(sr_e2e_header_unwrap_inverse(b, k.k_inv, h), SR_E2E_OK);
            assert_memory_equal(a, p, 32);
            assert_memory_equal(b, p, 32);
        }
    }
    /* Refused like the per-header path: a zero scalar, a non-point header. */
    unsigned char zero[32] = {0}, junk[32];
    memset(junk, 0xff, sizeof junk);
    assert_int_not_equal(sr_e2e_header_unwrap_inverse(b, zero, h), SR_E2E_OK);
    assert_true(sodium_is_zero(b, 32));
    assert_int_not_equal(sr_e2e_header_unwrap_inverse(b, k.k_inv, junk), SR_E2E_OK);
    assert_true(sodium_is_zero(b, 32));
    sodium_memzero(&k, sizeof k);
}

static void test_epoch_binding(void **state)
{
    unsigned char s[32], rh[32], other[32];
    sr_e2e_epoch_keys a, b;

    secret_of(s, 1);
    roster_hash(rh);
    epoch_keys(&a, 1);
    assert_int_equal(sr_e2e_scalar_check(a.k), SR_E2E_OK);
    assert_int_equal(sr_e2e_epoch_confirm(a.kc, s, ROOM, 1, rh), SR_E2E_OK);
    assert_int_equal(sr_e2e_epoch_confirm(a.kc, s, ROOM, 2, rh), SR_E2E_ERR_MISMATCH);
    assert_int_equal(sr_e2e_epoch_confirm(a.kc, s, "other@rooms.example.com", 1, rh),
                     SR_E2E_ERR_MISMATCH);
    memcpy(other, rh, 32);
    other[0] ^= 1;
    assert_int_equal(sr_e2e_epoch_confirm(a.kc, s, ROOM, 1, other), SR_E2E_ERR_MISMATCH);
    s[31] ^= 1;
    assert_int_equal(sr_e2e_epoch_confirm(a.kc, s, ROOM, 1, rh), SR_E2E_ERR_MISMATCH);
    s[31] ^= 1;

    /* Each binding changes every value. */
    assert_int_equal(sr_e2e_epoch_derive(&b, s, ROOM, 1, other), SR_E2E_OK);
    assert_memory_not_equal(a.k, b.k, 32);
    assert_memory_not_equal(a.kc, b.kc, 32);
    assert_memory_not_equal(a.keyring, b.keyring, 32);
    assert_int_equal(sr_e2e_epoch_derive(&b, s, "other@rooms.example.com", 1, rh), SR_E2E_OK);
    assert_memory_not_equal(a.k, b.k, 32);
    assert_memory_not_equal(a.kc, a.keyring, 32);

    assert_int_equal(sr_e2e_epoch_derive(&b, s, "", 1, rh), SR_E2E_ERR_INVALID);
    assert_true(sodium_is_zero((unsigned char *)&b, sizeof b));
    assert_int_equal(sr_e2e_epoch_derive(&b, s, ROOM, 1, NULL), SR_E2E_ERR_INVALID);
    sodium_memzero(&a, sizeof a);
}

/* ---- archive: data keys, headers, tokens ---------------------------------- */

static void test_header_vectors(void **state)
{
    sr_e2e_epoch_keys k1, k2, k3;
    unsigned char p[32], h1[32], h2[32], h3[32], d12[32], d23[32], d13[32], back[32], pc[32], hc[32];
    unsigned char hc2[32], hc3[32], moved[32], inv[32];

    epoch_keys(&k1, 1);
    epoch_keys(&k2, 2);
    epoch_keys(&k3, 3);
    vector_point(p);
    expect_hex("archive.P", p, 32,
               "14b416b589bde0b0fc2143a4cdaea65b10b7f264bdef0103aa3750c24df1ed6d");
    assert_int_equal(sr_e2e_header_wrap(h1, k1.k, p), SR_E2E_OK);
    expect_hex("archive.H1", h1, 32,
               "7895b6bcfcf948ab90c4fb8c4bdc04e3629915e1d5f6374f56a221d48ced5f74");
    assert_int_equal(sr_e2e_token_make(d12, k1.k, k2.k), SR_E2E_OK);
    expect_hex("archive.delta12", d12, 32,
               "104988399afb15c459877dfcf020931e2345b8103ffb42c01bdb7322c164d803");
    assert_int_equal(sr_e2e_token_make(d23, k2.k, k3.k), SR_E2E_OK);
    expect_hex("archive.delta23", d23, 32,
               "f42129f9863e37331b95b6ec4e610dc437f638a9f629bdfa0fc56013aaa1890d");
    assert_int_equal(sr_e2e_token_compose(d13, d23, d12), SR_E2E_OK);
    expect_hex("archive.delta13", d13, 32,
               "a7b5b0764758bb7ebaf0b1dcf550132c4147eb4cabe16476d99106b29b20580f");
    assert_int_equal(sr_e2e_header_rekey(h2, d12, h1), SR_E2E_OK);
    expect_hex("archive.H2", h2, 32,
               "6c3fce4d4d58e34d8c25d2b45ff6b178f6f4e63d965e279476a977acdb1ea700");
    assert_int_equal(sr_e2e_header_rekey(h3, d13, h1), SR_E2E_OK);
    expect_hex("archive.H3", h3, 32,
               "625b13b9c4a91a994a88d96dd506dfe47b2e696f93f4786fc18168bb774cbf7d");
    assert_int_equal(sr_e2e_header_unwrap(back, k3.k, h3), SR_E2E_OK);
    assert_memory_equal(back, p, 32);
    assert_int_equal(sr_e2e_check_point(pc, ROOM), SR_E2E_OK);
    expect_hex("archive.check_point", pc, 32,
               "201132e7a041e1e5762ea834e9bad1c749ae23579405f0f3ff3b8f289e70937a");
    assert_int_equal(sr_e2e_check_header(hc, k1.k, ROOM), SR_E2E_OK);
    expect_hex("archive.check_header1", hc, 32,
               "123cc16a7a1d0c34c5e33dd0baf6e9846c89ba3075a514a46b9808a686e34628");
    assert_int_equal(sr_e2e_check_header(hc2, k2.k, ROOM), SR_E2E_OK);
    expect_hex("archive.check_header2", hc2, 32,
               "d21d8e7fd70eaaa7c28b3a67dc8eff9b0a1c2cedddd2147e96a826cdc1fd7d4b");
    assert_int_equal(sr_e2e_check_header(hc3, k3.k, ROOM), SR_E2E_OK);
    expect_hex("archive.check_header3", hc3, 32,
               "56f411c740c65acf03ac4df3517d06e8e3d3b632d14d89267f8e868daba1b560");
    /* The service's token check (Δ(1→2)·H_c(1) = H_c(2)) and the re-keyed
     * check header a member confirms before tokens are erased
     * (Δ(1→3)·H_c(1) = H_c(3)). */
    assert_int_equal(sr_e2e_header_rekey(moved, d12, hc), SR_E2E_OK);
    assert_memory_equal(moved, hc2, 32);
    assert_int_equal(sr_e2e_header_rekey(moved, d13, hc), SR_E2E_OK);
    assert_memory_equal(moved, hc3, 32);
    /* Undo: Δ(1→2)⁻¹ moves H2 back to H1. */
    assert_int_equal(sr_e2e_token_invert(inv, d12), SR_E2E_OK);
    expect_hex("archive.delta12_inv", inv, 32,
               "7348542036b43fd309c1c6e58ed17de5c8498cd972834788023ea9b5e7909900");
    assert_int_equal(sr_e2e_header_rekey(moved, inv, h2), SR_E2E_OK);
    assert_memory_equal(moved, h1, 32);
    sodium_memzero(&k1, sizeof k1);
    sodium_memzero(&k2, sizeof k2);
    sodium_memzero(&k3, sizeof k3);
    expect_vectors_ok();
}

/* Check headers of the XEP's examples from fixed archive scalars: epoch 7
 * of the multi-cast key distribution vectors (test_dmkd.c, same room), and
 * epoch 2 of team@rooms.localhost, whose k_2 the XEP's example envelope to
 * bob@localhost yields (opened with his public test key). */
static void test_check_header_vectors(void **state)
{
    unsigned char k[32], pc[32], hc[32];

    assert_int_equal(sodium_hex2bin(k, sizeof k,
                                    "213cd66317ba381f1b0a709c53765e8295e5994e22bb0be4a7158ea4df810601",
                                    64, NULL, NULL, NULL),
                     0);
    assert_int_equal(sr_e2e_check_header(hc, k, ROOM), SR_E2E_OK);
    expect_hex("archive.check_header7", hc, 32,
               "1c00e52de3b4613951b0084354adb2fa784127a185c26b2df89b31547aab6d2f");
    assert_int_equal(sr_e2e_check_header_verify(hc, k, ROOM), SR_E2E_OK);

    assert_int_equal(sodium_hex2bin(k, sizeof k,
                                    "0655fcd344f981c25382fafeba4379f391f993b5fbbb1550c79bf3515c91fa0f",
                                    64, NULL, NULL, NULL),
                     0);
    assert_int_equal(sr_e2e_check_point(pc, "team@rooms.localhost"), SR_E2E_OK);
    expect_hex("archive.check_point_localhost", pc, 32,
               "c8b551dc7e91346f3ca9066707b522a2724ff8d324097731836b6494b3d18e0b");
    assert_int_equal(sr_e2e_check_header(hc, k, "team@rooms.localhost"), SR_E2E_OK);
    expect_hex("archive.check_header_localhost2", hc, 32,
               "2819d3fb7c905b3b653c34750149a6d52deb826ebd3a90df0d939428e21e9957");
    /* The same scalar in the other room gives another check header. */
    assert_int_equal(sr_e2e_check_header_verify(hc, k, ROOM), SR_E2E_ERR_MISMATCH);
    sodium_memzero(k, sizeof k);
    expect_vectors_ok();
}

static void test_tokens(void **state)
{
    sr_e2e_epoch_keys k1, k2, k3;
    unsigned char p[32], h1[32], h2[32], h3a[32], h3b[32], d12[32], d23[32], d13[32], direct[32];
    unsigned char inv[32], back[32], hc[32], hc2[32];

    epoch_keys(&k1, 1);
    epoch_keys(&k2, 2);
    epoch_keys(&k3, 3);
    assert_int_equal(sr_e2e_datakey_random(p), SR_E2E_OK);
    assert_int_equal(sr_e2e_point_check(p), SR_E2E_OK);
    assert_int_equal(sr_e2e_header_wrap(h1, k1.k, p), SR_E2E_OK);
    assert_memory_not_equal(h1, p, 32);
    assert_int_equal(sr_e2e_header_unwrap(back, k1.k, h1), SR_E2E_OK);
    assert_memory_equal(back, p, 32);

    assert_int_equal(sr_e2e_token_make(d12, k1.k, k2.k), SR_E2E_OK);
    assert_int_equal(sr_e2e_token_make(d23, k2.k, k3.k), SR_E2E_OK);
    assert_int_equal(sr_e2e_token_compose(d13, d23, d12), SR_E2E_OK);
    assert_int_equal(sr_e2e_token_make(direct, k1.k, k3.k), SR_E2E_OK);
    assert_memory_equal(d13, direct, 32);   /* Δ1→3 = Δ2→3·Δ1→2 */

    /* Re-keyed twice = re-keyed once with the composed token = wrapped under k3. */
    assert_int_equal(sr_e2e_header_rekey(h2, d12, h1), SR_E2E_OK);
    assert_int_equal(sr_e2e_header_rekey(h3a, d23, h2), SR_E2E_OK);
    assert_int_equal(sr_e2e_header_rekey(h3b, d13, h1), SR_E2E_OK);
    assert_memory_equal(h3a, h3b, 32);
    assert_int_equal(sr_e2e_header_wrap(direct, k3.k, p), SR_E2E_OK);
    assert_memory_equal(h3a, direct, 32);
    assert_int_equal(sr_e2e_header_unwrap(back, k3.k, h3a), SR_E2E_OK);
    assert_memory_equal(back, p, 32);
    /* The old key opens nothing re-keyed. */
    assert_int_equal(sr_e2e_header_unwrap(back, k1.k, h3a), SR_E2E_OK);
    assert_memory_not_equal(back, p, 32);

    /* A wrong token is detected with the check header and undone. */
    assert_int_equal(sr_e2e_check_header(hc, k1.k, ROOM), SR_E2E_OK);
    assert_int_equal(sr_e2e_header_rekey(hc2, d23, hc), SR_E2E_OK);  /* wrong: Δ2→3 on epoch 1 */
    assert_int_equal(sr_e2e_check_header_verify(hc2, k2.k, ROOM), SR_E2E_ERR_MISMATCH);
    assert_int_equal(sr_e2e_token_invert(inv, d23), SR_E2E_OK);
    assert_int_equal(sr_e2e_header_rekey(back, inv, hc2), SR_E2E_OK);
    assert_memory_equal(back, hc, 32);
    assert_int_equal(sr_e2e_header_rekey(hc2, d12, hc), SR_E2E_OK);
    assert_int_equal(sr_e2e_check_header_verify(hc2, k2.k, ROOM), SR_E2E_OK);
    assert_int_equal(sr_e2e_check_header_verify(hc2, k2.k, "other@rooms.example.com"),
                     SR_E2E_ERR_MISMATCH);

    sodium_memzero(&k1, sizeof k1);
    sodium_memzero(&k2, sizeof k2);
    sodium_memzero(&k3, sizeof k3);
}

static void test_invalid_points_scalars(void **state)
{
    sr_e2e_epoch_keys k1;
    unsigned char p[32], out[32], bad[32], zero[32] = {0}, ell[32], big[32], h[64];
    /* l = 2^252 + 27742317777372353535851937790883648493, little-endian */
    static const unsigned char l_le[32] = {0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58,
                                           0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
                                           0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10};

    epoch_keys(&k1, 1);
    vector_point(p);
    memset(bad, 0xff, sizeof bad);        /* not a field element */
    memcpy(ell, l_le, 32);
    memset(big, 0xff, sizeof big);

    /* Invalid encodings and the identity, as header, data key or token target. */
    const unsigned char *points[] = {bad, zero};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(sr_e2e_point_check(points[i]), SR_E2E_ERR_POINT);
        assert_int_equal(sr_e2e_header_wrap(out, k1.k, points[i]), SR_E2E_ERR_POINT);
        assert_true(sodium_is_zero(out, 32));
        assert_int_equal(sr_e2e_header_unwrap(out, k1.k, points[i]), SR_E2E_ERR_POINT);
        assert_int_equal(sr_e2e_header_rekey(out, k1.k, points[i]), SR_E2E_ERR_POINT);
    }
    /* A non-canonical encoding of a valid point (the sign bit set). */
    memcpy(out, p, 32);
    out[31] |= 0x80;
    assert_int_equal(sr_e2e_point_check(out), SR_E2E_ERR_POINT);
    /* An odd ("negative") field element is not a canonical ristretto encoding. */
    memcpy(out, p, 32);
    out[0] ^= 1;
    assert_int_equal(sr_e2e_point_check(out), SR_E2E_ERR_POINT);

    /* Zero and unreduced scalars. */
    const unsigned char *scalars[] = {zero, ell, big};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(sr_e2e_scalar_check(scalars[i]), SR_E2E_ERR_SCALAR);
        assert_int_equal(sr_e2e_header_wrap(out, scalars[i], p), SR_E2E_ERR_SCALAR);
        assert_int_equal(sr_e2e_header_unwrap(out, scalars[i], p), SR_E2E_ERR_SCALAR);
        assert_true(sodium_is_zero(out, 32));
        assert_int_equal(sr_e2e_header_rekey(out, scalars[i], p), SR_E2E_ERR_SCALAR);
        assert_int_equal(sr_e2e_token_make(out, scalars[i], k1.k), SR_E2E_ERR_SCALAR);
        assert_int_equal(sr_e2e_token_make(out, k1.k, scalars[i]), SR_E2E_ERR_SCALAR);
        assert_int_equal(sr_e2e_token_compose(out, scalars[i], k1.k), SR_E2E_ERR_SCALAR);
        assert_int_equal(sr_e2e_token_invert(out, scalars[i]), SR_E2E_ERR_SCALAR);
    }
    /* from_hash never yields the identity for the fixed input, and
     * NULLs are refused everywhere. */
    fill(h, sizeof h, 0xc0);
    assert_int_equal(sr_e2e_datakey_from_hash(out, h), SR_E2E_OK);
    assert_int_equal(sr_e2e_datakey_from_hash(NULL, h), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_e2e_header_wrap(NULL, k1.k, p), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_e2e_check_point(out, ""), SR_E2E_ERR_INVALID);
    sodium_memzero(&k1, sizeof k1);
}

/* ---- messages ------------------------------------------------------------ */

static sr_e2e_msg_meta vector_meta(void)
{
    sr_e2e_msg_meta m = {ROOM, ALICE, MSGID, vector_key_id(), 7};
    return m;
}

static void test_message_vectors(void **state)
{
    sr_e2e_identity *a = identity(root_alice);
    sr_e2e_msg_meta meta = vector_meta();
    unsigned char p[32], mk[32], nonce[24], ad[SR_E2E_MSG_AD_MAX];
    unsigned char out[sizeof PLAIN - 1 + SR_E2E_MSG_OVERHEAD], plain[64];
    size_t ad_len = 0, len = 0, plen = 0;
    sr_e2e_sealed_view v;

    vector_point(p);
    fill(nonce, sizeof nonce, 0x40);
    assert_int_equal(sr_e2e_message_key(mk, p, meta.datakey_id, MSGID), SR_E2E_OK);
    expect_hex("message.key", mk, 32,
               "99fd1652b2d2c17dc9219e8a061f1d089bd4dc1a90c2949525194745332e2fae");
    assert_int_equal(sr_e2e_message_ad(ad, sizeof ad, &ad_len, &meta), SR_E2E_OK);
    expect_hex("message.ad", ad, ad_len,
               "1a7365616c726f6f6d2e6532652e76312e6d6573736167652e61640100167465"
               "616d40726f6f6d732e6578616d706c652e636f6d0011616c696365406578616d"
               "706c652e636f6d00086d73672d30303031f0f1f2f3f4f5f6f7f8f9fafbfcfdfe"
               "ff0000000000000007");
    assert_int_equal(sr_e2e_message_seal_with_nonce(out, sizeof out, &len, (const unsigned char *)PLAIN,
                                                    strlen(PLAIN), &meta, p, a->sign_sk, nonce),
                     SR_E2E_OK);
    assert_int_equal(len, sizeof out);
    expect_hex("message.sealed", out, len,
               "01f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000000000000000740414243444546"
               "4748494a4b4c4d4e4f50515253545556575680d77d5c8c8c79ebb993285c130a"
               "7ce8582cd316ec212b5591f6243ccabb33a807984481930d7a5e4a90139a6c34"
               "a13fad20029f1f4b6dd197359e43014b03e01681cb7e2d221a60c5fa23f9a87a"
               "b6d88fe12dea3be3d1705f4b2122c10d92bc3cfa06");

    assert_int_equal(sr_e2e_message_parse(&v, out, len), SR_E2E_OK);
    assert_int_equal(v.roster_version, 7);
    assert_memory_equal(v.datakey_id, meta.datakey_id, 16);
    assert_int_equal(v.ct_len, strlen(PLAIN) + 16);
    assert_int_equal(sr_e2e_message_open(plain, sizeof plain, &plen, &v, ROOM, ALICE, MSGID, a->sign_pk, p),
                     SR_E2E_OK);
    assert_int_equal(plen, strlen(PLAIN));
    assert_memory_equal(plain, PLAIN, plen);
    sodium_memzero(mk, sizeof mk);
    sr_e2e_identity_free(a);
    expect_vectors_ok();
}

/* Opens with the receiver's view; returns the code and checks that a
 * failure leaves nothing in the plaintext buffer. */
static int try_open(const unsigned char *in, size_t len, const char *room, const char *sender,
                    const char *msgid, const unsigned char *pk, const unsigned char *p)
{
    unsigned char plain[256];
    size_t plen = 99;
    sr_e2e_sealed_view v;
    int rc;

    memset(plain, 0xaa, sizeof plain);
    rc = sr_e2e_message_parse(&v, in, len);
    if (rc != SR_E2E_OK)
        return rc;
    rc = sr_e2e_message_open(plain, sizeof plain, &plen, &v, room, sender, msgid, pk, p);
    if (rc != SR_E2E_OK) {
        assert_int_equal(plen, 0);
        for (size_t i = 0; i < v.ct_len - SR_E2E_TAG_BYTES; i++)
            assert_int_equal(plain[i], 0);
    }
    return rc;
}

static void test_message_refusals(void **state)
{
    sr_e2e_identity *a = identity(root_alice), *m = identity(root_carol);
    sr_e2e_msg_meta meta = vector_meta();
    unsigned char p[32], p2[32], out[sizeof PLAIN - 1 + SR_E2E_MSG_OVERHEAD];
    unsigned char forged[sizeof out], bad[32];
    size_t len = 0, flen = 0;

    vector_point(p);
    assert_int_equal(sr_e2e_datakey_random(p2), SR_E2E_OK);
    assert_int_equal(sr_e2e_message_seal(out, sizeof out, &len, (const unsigned char *)PLAIN, strlen(PLAIN),
                                         &meta, p, a->sign_sk),
                     SR_E2E_OK);
    assert_int_equal(try_open(out, len, ROOM, ALICE, MSGID, a->sign_pk, p), SR_E2E_OK);

    /* A flipped bit anywhere (version, key id, roster version, nonce, body,
     * tag, signature) is refused before any plaintext is produced. */
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit += 7) {
            out[i] ^= (unsigned char)(1u << bit);
            int rc = try_open(out, len, ROOM, ALICE, MSGID, a->sign_pk, p);
            out[i] ^= (unsigned char)(1u << bit);
            if (i == 0)
                assert_int_equal(rc, SR_E2E_ERR_VERSION);
            else
                assert_int_equal(rc, SR_E2E_ERR_SIGNATURE);
        }
    }
    /* Associated data the receiver supplies: room, sender, message id. */
    assert_int_equal(try_open(out, len, "other@rooms.example.com", ALICE, MSGID, a->sign_pk, p),
                     SR_E2E_ERR_SIGNATURE);
    assert_int_equal(try_open(out, len, ROOM, BOB, MSGID, a->sign_pk, p), SR_E2E_ERR_SIGNATURE);
    assert_int_equal(try_open(out, len, ROOM, ALICE, "msg-0002", a->sign_pk, p), SR_E2E_ERR_SIGNATURE);
    /* Wrong data key: the signature holds, the AEAD refuses. */
    assert_int_equal(try_open(out, len, ROOM, ALICE, MSGID, a->sign_pk, p2), SR_E2E_ERR_DECRYPT);
    memset(bad, 0xff, sizeof bad);
    assert_int_equal(try_open(out, len, ROOM, ALICE, MSGID, a->sign_pk, bad), SR_E2E_ERR_POINT);

    /* Forged sender: Mallory (carol's key) claims to be Alice. Knowing the
     * data key does not help her: Alice's key does not verify it. */
    assert_int_equal(sr_e2e_message_seal(forged, sizeof forged, &flen, (const unsigned char *)"pay mallory",
                                         11, &meta, p, m->sign_sk),
                     SR_E2E_OK);
    assert_int_equal(try_open(forged, flen, ROOM, ALICE, MSGID, a->sign_pk, p), SR_E2E_ERR_SIGNATURE);
    /* Mallory re-signing Alice's ciphertext is caught too. */
    memcpy(forged, out, len);
    {
        sr_e2e_sealed_view v;
        assert_int_equal(sr_e2e_message_parse(&v, forged, len), SR_E2E_OK);
        assert_int_equal(sr_e2e_message_verify(&v, ROOM, ALICE, MSGID, m->sign_pk), SR_E2E_ERR_SIGNATURE);
        assert_int_equal(sr_e2e_message_verify(&v, ROOM, ALICE, MSGID, a->sign_pk), SR_E2E_OK);
    }

    /* Strict lengths and versions. */
    assert_int_equal(try_open(out, 0, ROOM, ALICE, MSGID, a->sign_pk, p), SR_E2E_ERR_MALFORMED);
    assert_int_equal(try_open(out, SR_E2E_MSG_OVERHEAD - 1, ROOM, ALICE, MSGID, a->sign_pk, p),
                     SR_E2E_ERR_MALFORMED);
    assert_int_equal(try_open(out, len - 1, ROOM, ALICE, MSGID, a->sign_pk, p), SR_E2E_ERR_SIGNATURE);
    out[0] = 2;
    assert_int_equal(try_open(out, len, ROOM, ALICE, MSGID, a->sign_pk, p), SR_E2E_ERR_VERSION);
    sr_e2e_identity_free(a);
    sr_e2e_identity_free(m);
}

static void test_message_sizes(void **state)
{
    sr_e2e_identity *a = identity(root_alice);
    sr_e2e_msg_meta meta = vector_meta();
    unsigned char p[32], *buf, *plain, *back;
    size_t len = 0, plen = 0;
    sr_e2e_sealed_view v;

    assert_int_equal(sr_e2e_datakey_random(p), SR_E2E_OK);
    buf = malloc(SR_E2E_MSG_MAX_BYTES + 1);
    plain = malloc(SR_E2E_MSG_MAX_PLAIN + 1);
    back = malloc(SR_E2E_MSG_MAX_PLAIN);
    assert_non_null(buf);
    assert_non_null(plain);
    assert_non_null(back);
    randombytes_buf(plain, SR_E2E_MSG_MAX_PLAIN + 1);

    /* Empty and maximum bodies round-trip. */
    assert_int_equal(sr_e2e_message_seal(buf, SR_E2E_MSG_MAX_BYTES, &len, NULL, 0, &meta, p, a->sign_sk),
                     SR_E2E_OK);
    assert_int_equal(len, SR_E2E_MSG_OVERHEAD);
    assert_int_equal(sr_e2e_message_parse(&v, buf, len), SR_E2E_OK);
    assert_int_equal(sr_e2e_message_open(back, 0, &plen, &v, ROOM, ALICE, MSGID, a->sign_pk, p), SR_E2E_OK);
    assert_int_equal(plen, 0);
    assert_int_equal(sr_e2e_message_seal(buf, SR_E2E_MSG_MAX_BYTES, &len, plain, SR_E2E_MSG_MAX_PLAIN, &meta,
                                         p, a->sign_sk),
                     SR_E2E_OK);
    assert_int_equal(len, SR_E2E_MSG_MAX_BYTES);
    assert_int_equal(sr_e2e_message_parse(&v, buf, len), SR_E2E_OK);
    assert_int_equal(sr_e2e_message_open(back, SR_E2E_MSG_MAX_PLAIN - 1, &plen, &v, ROOM, ALICE, MSGID,
                                         a->sign_pk, p),
                     SR_E2E_ERR_INVALID);
    assert_int_equal(sr_e2e_message_open(back, SR_E2E_MSG_MAX_PLAIN, &plen, &v, ROOM, ALICE, MSGID,
                                         a->sign_pk, p),
                     SR_E2E_OK);
    assert_memory_equal(back, plain, SR_E2E_MSG_MAX_PLAIN);
    /* One byte more is refused, as is a payload over the limit. */
    assert_int_equal(sr_e2e_message_seal(buf, SR_E2E_MSG_MAX_BYTES + 1, &len, plain, SR_E2E_MSG_MAX_PLAIN + 1,
                                         &meta, p, a->sign_sk),
                     SR_E2E_ERR_INVALID);
    assert_int_equal(sr_e2e_message_parse(&v, buf, SR_E2E_MSG_MAX_BYTES + 1), SR_E2E_ERR_MALFORMED);
    /* Too small an output buffer, bad metadata, invalid data key. */
    assert_int_equal(sr_e2e_message_seal(buf, SR_E2E_MSG_OVERHEAD + 9, &len, plain, 10, &meta, p, a->sign_sk),
                     SR_E2E_ERR_INVALID);
    meta.message_id = "";
    assert_int_equal(sr_e2e_message_seal(buf, 4096, &len, plain, 10, &meta, p, a->sign_sk),
                     SR_E2E_ERR_INVALID);
    meta = vector_meta();
    memset(p, 0, sizeof p);
    assert_int_equal(sr_e2e_message_seal(buf, 4096, &len, plain, 10, &meta, p, a->sign_sk), SR_E2E_ERR_POINT);
    free(buf);
    free(plain);
    free(back);
    sr_e2e_identity_free(a);
}

/* ---- envelopes ----------------------------------------------------------- */

/* crypto_box_seal is randomized, so the vector fixes one sealed box of
 * S_1 to Bob's derived X25519 key, made once with libsodium. */
static const char vector_box_hex[] =
    "958117f30493953fc51d770e7abf6b05fe8b0edb0d132b9b29d1cd18aea72e5b"
    "4964f2c492a6c307bc69f6bf8f3082902cc649fc62ebd92c851f3e49854b1d74"
    "66f701f1c6771a809be048a4c4df2b3a";

static sr_e2e_envelope_ctx envelope_ctx(const sr_e2e_identity *bob, const unsigned char *rh)
{
    sr_e2e_envelope_ctx c = {ROOM, 1, rh, ALICE, BOB, bob->box_pk};
    return c;
}

static void test_envelope_vectors(void **state)
{
    sr_e2e_identity *a = identity(root_alice), *b = identity(root_bob);
    unsigned char rh[32], box[SR_E2E_ENVELOPE_BOX_BYTES], msg[SR_E2E_ENVELOPE_MSG_MAX];
    unsigned char env[SR_E2E_ENVELOPE_BYTES], s[32], want[32];
    size_t n = 0;

    roster_hash(rh);
    sr_e2e_envelope_ctx ctx = envelope_ctx(b, rh);
    assert_int_equal(sodium_hex2bin(box, sizeof box, vector_box_hex, strlen(vector_box_hex), NULL, &n, NULL),
                     0);
    assert_int_equal(n, sizeof box);
    assert_int_equal(sr_e2e_envelope_message(msg, sizeof msg, &n, &ctx, box), SR_E2E_OK);
    expect_hex("envelope.signed_message", msg, n,
               "187365616c726f6f6d2e6532652e76312e656e76656c6f70650100167465616d"
               "40726f6f6d732e6578616d706c652e636f6d0000000000000001808182838485"
               "868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f0011616c6963"
               "65406578616d706c652e636f6d000f626f62406578616d706c652e636f6df79a"
               "22a05ba916623adb20d03eaad08cf29f29a4050447fec1fdf0d83a20aa149581"
               "17f30493953fc51d770e7abf6b05fe8b0edb0d132b9b29d1cd18aea72e5b4964"
               "f2c492a6c307bc69f6bf8f3082902cc649fc62ebd92c851f3e49854b1d7466f7"
               "01f1c6771a809be048a4c4df2b3a");
    assert_int_equal(sr_e2e_envelope_from_box(env, &ctx, box, a->sign_sk), SR_E2E_OK);
    expect_hex("envelope.bytes", env, sizeof env,
               "01958117f30493953fc51d770e7abf6b05fe8b0edb0d132b9b29d1cd18aea72e"
               "5b4964f2c492a6c307bc69f6bf8f3082902cc649fc62ebd92c851f3e49854b1d"
               "7466f701f1c6771a809be048a4c4df2b3a5e537d7868c922e8d71d803b63aff8"
               "a6ed0347e694fd4bf025efddc645b50f0491f019762a7d40db183e3414703b75"
               "ac205d518043153bfec85ccff3d17aa308");
    assert_int_equal(sr_e2e_envelope_open(s, env, sizeof env, &ctx, a->sign_pk, b->box_sk), SR_E2E_OK);
    secret_of(want, 1);
    assert_memory_equal(s, want, 32);
    sodium_memzero(s, sizeof s);
    sr_e2e_identity_free(a);
    sr_e2e_identity_free(b);
    expect_vectors_ok();
}

static void test_envelope_refusals(void **state)
{
    sr_e2e_identity *a = identity(root_alice), *b = identity(root_bob), *c = identity(root_carol);
    unsigned char rh[32], rh2[32], env[SR_E2E_ENVELOPE_BYTES], s1[32], s[32];
    sr_e2e_envelope_ctx ctx, other;

    roster_hash(rh);
    memcpy(rh2, rh, 32);
    rh2[5] ^= 1;
    secret_of(s1, 1);
    ctx = envelope_ctx(b, rh);
    assert_int_equal(sr_e2e_envelope_seal(env, &ctx, s1, a->sign_sk), SR_E2E_OK);
    assert_int_equal(sr_e2e_envelope_open(s, env, sizeof env, &ctx, a->sign_pk, b->box_sk), SR_E2E_OK);
    assert_memory_equal(s, s1, 32);

    /* Wrong epoch, room, roster, sealer, recipient: the signature binds them. */
    other = ctx;
    other.epoch = 2;
    assert_int_equal(sr_e2e_envelope_open(s, env, sizeof env, &other, a->sign_pk, b->box_sk),
                     SR_E2E_ERR_SIGNATURE);
    assert_true(sodium_is_zero(s, 32));
    other = ctx;
    other.room = "other@rooms.example.com";
    assert_int_equal(sr_e2e_envelope_open(s, env, sizeof env, &other, a->sign_pk, b->box_sk),
                     SR_E2E_ERR_SIGNATURE);
    other = ctx;
    other.roster_hash = rh2;
    assert_int_equal(sr_e2e_envelope_open(s, env, sizeof env, &other, a->sign_pk, b->box_sk),
                     SR_E2E_ERR_SIGNATURE);
    other = ctx;
    other.sealer = CAROL;
    assert_int_equal(sr_e2e_envelope_open(s, env, sizeof env, &other, c->sign_pk, b->box_sk),
                     SR_E2E_ERR_SIGNATURE);
    /* Carol cannot take Bob's envelope as hers ... */
    other = ctx;
    other.recipient = CAROL;
    other.recipient_box_pk = c->box_pk;
    assert_int_equal(sr_e2e_envelope_open(s, env, sizeof env, &other, a->sign_pk, c->box_sk),
                     SR_E2E_ERR_SIGNATURE);
    /* ... nor open it with her key even when she names Bob. */
    assert_int_equal(sr_e2e_envelope_open(s, env, sizeof env, &ctx, a->sign_pk, c->box_sk),
                     SR_E2E_ERR_DECRYPT);
    assert_true(sodium_is_zero(s, 32));
    /* The component sealing a secret of its own and signing with a key
     * that is not the claimed sealer's. */
    assert_int_equal(sr_e2e_envelope_seal(env, &ctx, s1, c->sign_sk), SR_E2E_OK);
    assert_int_equal(sr_e2e_envelope_open(s, env, sizeof env, &ctx, a->sign_pk, b->box_sk),
                     SR_E2E_ERR_SIGNATURE);

    /* Every byte is covered. */
    assert_int_equal(sr_e2e_envelope_seal(env, &ctx, s1, a->sign_sk), SR_E2E_OK);
    for (size_t i = 0; i < sizeof env; i++) {
        env[i] ^= 0x20;
        int rc = sr_e2e_envelope_open(s, env, sizeof env, &ctx, a->sign_pk, b->box_sk);
        env[i] ^= 0x20;
        assert_int_equal(rc, i == 0 ? SR_E2E_ERR_VERSION : SR_E2E_ERR_SIGNATURE);
    }
    assert_int_equal(sr_e2e_envelope_open(s, env, sizeof env - 1, &ctx, a->sign_pk, b->box_sk),
                     SR_E2E_ERR_MALFORMED);
    assert_int_equal(sr_e2e_envelope_open(s, env, sizeof env, NULL, a->sign_pk, b->box_sk),
                     SR_E2E_ERR_INVALID);
    sodium_memzero(s1, sizeof s1);
    sr_e2e_identity_free(a);
    sr_e2e_identity_free(b);
    sr_e2e_identity_free(c);
}

/* ---- replay -------------------------------------------------------------- */

static void test_replay_basic(void **state)
{
    sr_e2e_replay *r = NULL;

    assert_int_equal(sr_e2e_replay_new(&r, 0), SR_E2E_ERR_INVALID);
    assert_int_equal(sr_e2e_replay_new(&r, 4), SR_E2E_OK);
    assert_int_equal(sr_e2e_replay_check_add(r, ROOM, ALICE, "m1"), SR_E2E_OK);
    assert_int_equal(sr_e2e_replay_check_add(r, ROOM, ALICE, "m1"), SR_E2E_ERR_REPLAY);
    assert_int_equal(sr_e2e_replay_seen(r, ROOM, ALICE, "m1"), SR_E2E_ERR_REPLAY);
    /* Same id from another sender or in another room is a different message. */
    assert_int_equal(sr_e2e_replay_check_add(r, ROOM, BOB, "m1"), SR_E2E_OK);
    assert_int_equal(sr_e2e_replay_check_add(r, "other@rooms.example.com", ALICE, "m1"), SR_E2E_OK);
    /* Length prefixes keep ("ab","c") and ("a","bc") apart. */
    assert_int_equal(sr_e2e_replay_check_add(r, ROOM, "ab", "c"), SR_E2E_OK);
    assert_int_equal(sr_e2e_replay_seen(r, ROOM, "a", "bc"), SR_E2E_OK);
    /* Full (4): the next one evicts the oldest ("m1" from Alice). */
    assert_int_equal(sr_e2e_replay_check_add(r, ROOM, ALICE, "m2"), SR_E2E_OK);
    assert_int_equal(sr_e2e_replay_seen(r, ROOM, ALICE, "m1"), SR_E2E_OK);
    assert_int_equal(sr_e2e_replay_seen(r, ROOM, BOB, "m1"), SR_E2E_ERR_REPLAY);
    assert_int_equal(sr_e2e_replay_check_add(r, ROOM, ALICE, ""), SR_E2E_ERR_INVALID);
    sr_e2e_replay_free(r);
    sr_e2e_replay_free(NULL);
}

/* Many insertions through a small window: exactly the last `cap` ids are
 * remembered, which exercises eviction and probe-run repair. */
static void test_replay_window(void **state)
{
    enum { CAP = 97, TOTAL = 5000 };
    sr_e2e_replay *r = NULL;
    char id[32];

    assert_int_equal(sr_e2e_replay_new(&r, CAP), SR_E2E_OK);
    for (int i = 0; i < TOTAL; i++) {
        snprintf(id, sizeof id, "id-%d", i);
        assert_int_equal(sr_e2e_replay_check_add(r, ROOM, ALICE, id), SR_E2E_OK);
        if (i % 500 == 499) {
            for (int j = 0; j <= i; j++) {
                snprintf(id, sizeof id, "id-%d", j);
                assert_int_equal(sr_e2e_replay_seen(r, ROOM, ALICE, id),
                                 j > i - CAP ? SR_E2E_ERR_REPLAY : SR_E2E_OK);
            }
        }
    }
    sr_e2e_replay_free(r);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest common[] = {
        cmocka_unit_test(test_kdf),
    };
    const struct CMUnitTest ident[] = {
        cmocka_unit_test(test_identity_vectors),
        cmocka_unit_test(test_identity_compatible),
        cmocka_unit_test(test_identity_bundle),
    };
    const struct CMUnitTest vault[] = {
        cmocka_unit_test(test_vault_vector),
        cmocka_unit_test(test_vault_refusals),
        cmocka_unit_test(test_vault_noncanonical),
        cmocka_unit_test(test_vault_defaults),
    };
    const struct CMUnitTest epoch[] = {
        cmocka_unit_test(test_epoch_vectors),
        cmocka_unit_test(test_epoch_inverse_unwrap),
        cmocka_unit_test(test_epoch_binding),
    };
    const struct CMUnitTest archive[] = {
        cmocka_unit_test(test_header_vectors),
        cmocka_unit_test(test_check_header_vectors),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_invalid_points_scalars),
    };
    const struct CMUnitTest message[] = {
        cmocka_unit_test(test_message_vectors),
        cmocka_unit_test(test_message_refusals),
        cmocka_unit_test(test_message_sizes),
    };
    const struct CMUnitTest envelope[] = {
        cmocka_unit_test(test_envelope_vectors),
        cmocka_unit_test(test_envelope_refusals),
    };
    const struct CMUnitTest replay[] = {
        cmocka_unit_test(test_replay_basic),
        cmocka_unit_test(test_replay_window),
    };
    int failed = 0;
    failed += cmocka_run_group_tests_name("e2e_common", common, NULL, NULL);
    failed += cmocka_run_group_tests_name("e2e_identity", ident, NULL, NULL);
    failed += cmocka_run_group_tests_name("e2e_vault", vault, NULL, NULL);
    failed += cmocka_run_group_tests_name("e2e_epoch", epoch, NULL, NULL);
    failed += cmocka_run_group_tests_name("e2e_archive", archive, NULL, NULL);
    failed += cmocka_run_group_tests_name("e2e_message", message, NULL, NULL);
    failed += cmocka_run_group_tests_name("e2e_envelope", envelope, NULL, NULL);
    failed += cmocka_run_group_tests_name("e2e_replay", replay, NULL, NULL);
    return failed ? 1 : 0;
}
