/* Unit tests of component/e2echeck.c: the component's own encoders of the
 * signed envelope and bundle messages must produce the very bytes the
 * library's e2e core signs (both are linked here, so they cannot drift),
 * real envelopes and bundles verify and tampered ones do not, payload and
 * vault framing, and the vault-fetch token bucket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e/envelope.h"
#include "e2e/identity.h"
#include "e2e/message.h"
#include "e2e/vault.h"
#include "e2echeck.h"

static const char ROOM[] = "room-x@rooms.localhost";
static const char SEALER[] = "alice@localhost";
static const char RECIPIENT[] = "bob@localhost";

static void identity_of(sr_e2e_identity *id, unsigned char seed_byte)
{
    unsigned char root[32];
    memset(root, seed_byte, sizeof root);
    assert_int_equal(sr_e2e_identity_derive(id, root), SR_E2E_OK);
}

static void test_envelope_message_matches_library(void **state)
{
    (void)state;
    unsigned char hash[32], xpk[32], box[80];
    for (int round = 0; round < 20; round++) {
        randombytes_buf(hash, sizeof hash);
        randombytes_buf(xpk, sizeof xpk);
        randombytes_buf(box, sizeof box);
        uint64_t epoch = round == 0 ? 1 : round == 1 ? UINT64_MAX : randombytes_random();
        char recipient[64];
        snprintf(recipient, sizeof recipient, "user%d@host%d.example", round, round * 7);
        sr_e2e_envelope_ctx ctx = {ROOM, epoch, hash, SEALER, recipient, xpk};
        unsigned char lib[SR_E2E_ENVELOPE_MSG_MAX], ours[SR_E2E_ENVELOPE_MSG_MAX];
        size_t lib_len = 0;
        assert_int_equal(sr_e2e_envelope_message(lib, sizeof lib, &lib_len, &ctx, box), SR_E2E_OK);
        size_t n = ec_envelope_message(ours, sizeof ours, ROOM, epoch, hash, SEALER, recipient, xpk,
                                       box);
        assert_int_equal(n, lib_len);
        assert_memory_equal(ours, lib, n);
        assert_int_equal(n, ec_envelope_message_len(strlen(ROOM), strlen(SEALER), strlen(recipient)));
        /* One byte short of room: refused, not truncated. */
        assert_int_equal(ec_envelope_message(ours, n - 1, ROOM, epoch, hash, SEALER, recipient, xpk,
                                             box),
                         0);
    }
    unsigned char buf[SR_E2E_ENVELOPE_MSG_MAX];
    assert_int_equal(ec_envelope_message(buf, sizeof buf, "", 1, hash, SEALER, RECIPIENT, xpk, box),
                     0);
}

static void test_envelope_verify(void **state)
{
    (void)state;
    sr_e2e_identity sealer, recipient;
    identity_of(&sealer, 1);
    identity_of(&recipient, 2);
    unsigned char hash[32], secret[32], env[SR_E2E_ENVELOPE_BYTES];
    randombytes_buf(hash, sizeof hash);
    randombytes_buf(secret, sizeof secret);
    sr_e2e_envelope_ctx ctx = {ROOM, 7, hash, SEALER, RECIPIENT, recipient.box_pk};
    assert_int_equal(sr_e2e_envelope_seal(env, &ctx, secret, sealer.sign_sk), SR_E2E_OK);
    assert_int_equal(sizeof env, EC_ENVELOPE_BYTES);
    assert_true(ec_envelope_verify(env, sizeof env, ROOM, 7, hash, SEALER, RECIPIENT,
                                   recipient.box_pk, sealer.sign_pk));
    /* Every binding matters. */
    assert_false(ec_envelope_verify(env, sizeof env, ROOM, 8, hash, SEALER, RECIPIENT,
                                    recipient.box_pk, sealer.sign_pk));
    assert_false(ec_envelope_verify(env, sizeof env, "other@rooms.localhost", 7, hash, SEALER,
                                    RECIPIENT, recipient.box_pk, sealer.sign_pk));
    assert_false(ec_envelope_verify(env, sizeof env, ROOM, 7, hash, SEALER, "carol@localhost",
                                    recipient.box_pk, sealer.sign_pk));
    assert_false(ec_envelope_verify(env, sizeof env, ROOM, 7, hash, SEALER, RECIPIENT,
                                    sealer.box_pk, sealer.sign_pk));
    assert_false(ec_envelope_verify(env, sizeof env, ROOM, 7, hash, SEALER, RECIPIENT,
                                    recipient.box_pk, recipient.sign_pk));
    unsigned char other_hash[32];
    memcpy(other_hash, hash, 32);
    other_hash[31] ^= 1;
    assert_false(ec_envelope_verify(env, sizeof env, ROOM, 7, other_hash, SEALER, RECIPIENT,
                                    recipient.box_pk, sealer.sign_pk));
    for (size_t i = 0; i < sizeof env; i += 13) {
        env[i] ^= 0x20;
        assert_false(ec_envelope_verify(env, sizeof env, ROOM, 7, hash, SEALER, RECIPIENT,
                                        recipient.box_pk, sealer.sign_pk));
        env[i] ^= 0x20;
    }
    assert_false(ec_envelope_verify(env, sizeof env - 1, ROOM, 7, hash, SEALER, RECIPIENT,
                                    recipient.box_pk, sealer.sign_pk));
    sodium_memzero(&sealer, sizeof sealer);
    sodium_memzero(&recipient, sizeof recipient);
    sodium_memzero(secret, sizeof secret);
}

static void test_bundle_verify(void **state)
{
    (void)state;
    sr_e2e_identity id;
    identity_of(&id, 3);
    unsigned char sig[64];
    assert_int_equal(sr_e2e_bundle_sign(sig, SEALER, &id), SR_E2E_OK);
    assert_true(ec_bundle_verify(sig, SEALER, id.sign_pk, id.box_pk));
    assert_false(ec_bundle_verify(sig, RECIPIENT, id.sign_pk, id.box_pk));
    unsigned char other[32];
    memcpy(other, id.box_pk, 32);
    other[0] ^= 1;
    assert_false(ec_bundle_verify(sig, SEALER, id.sign_pk, other));
    sig[10] ^= 1;
    assert_false(ec_bundle_verify(sig, SEALER, id.sign_pk, id.box_pk));
    assert_false(ec_bundle_verify(sig, "", id.sign_pk, id.box_pk));
    sodium_memzero(&id, sizeof id);
}

static void test_payload_parse(void **state)
{
    (void)state;
    sr_e2e_identity id;
    identity_of(&id, 4);
    unsigned char p[32], dkid[16], out[SR_E2E_MSG_OVERHEAD + 10];
    assert_int_equal(sr_e2e_datakey_random(p), SR_E2E_OK);
    sr_e2e_datakey_id_random(dkid);
    sr_e2e_msg_meta meta = {ROOM, SEALER, "origin-1", dkid, 0x0102030405060708ull};
    size_t n = 0;
    assert_int_equal(sr_e2e_message_seal(out, sizeof out, &n, (const unsigned char *)"hello", 5,
                                         &meta, p, id.sign_sk),
                     SR_E2E_OK);
    unsigned char got[16];
    uint64_t rv = 0;
    assert_true(ec_payload_parse(out, n, got, &rv));
    assert_memory_equal(got, dkid, 16);
    assert_int_equal(rv, 0x0102030405060708ull);
    /* The smallest payload: an empty plaintext. */
    assert_int_equal(sr_e2e_message_seal(out, sizeof out, &n, NULL, 0, &meta, p, id.sign_sk),
                     SR_E2E_OK);
    assert_int_equal(n, EC_PAYLOAD_MIN);
    assert_true(ec_payload_parse(out, n, got, &rv));
    assert_false(ec_payload_parse(out, n - 1, got, &rv));
    out[0] = 2;
    assert_false(ec_payload_parse(out, n, got, &rv));
    sodium_memzero(&id, sizeof id);
    sodium_memzero(p, sizeof p);
}

static void test_vault_blob(void **state)
{
    (void)state;
    unsigned char root[32] = {5};
    sr_e2e_vault_data *d = NULL;
    assert_int_equal(sr_e2e_vault_data_new(&d, root), SR_E2E_OK);
    size_t cap = sr_e2e_vault_sealed_len(d), n = 0;
    unsigned char *blob = malloc(cap);
    assert_non_null(blob);
    sr_e2e_vault_params params = {1, 8192, NULL, NULL};
    assert_int_equal(sr_e2e_vault_seal_ex(blob, cap, &n, d, SEALER, "pass", 4, &params),
                     SR_E2E_OK);
    assert_true(ec_vault_blob_ok(blob, n));
    assert_false(ec_vault_blob_ok(blob, EC_VAULT_MIN - 1));
    assert_true(ec_vault_blob_ok(blob, EC_VAULT_MIN));
    blob[4] = 2;
    assert_false(ec_vault_blob_ok(blob, n));
    blob[4] = 1;
    blob[0] = 'X';
    assert_false(ec_vault_blob_ok(blob, n));
    free(blob);
    sr_e2e_vault_data_free(d);
    unsigned char *big = calloc(1, EC_VAULT_MAX + 1);
    assert_non_null(big);
    memcpy(big, "SRVL\x01", 5);
    assert_true(ec_vault_blob_ok(big, EC_VAULT_MAX));
    assert_false(ec_vault_blob_ok(big, EC_VAULT_MAX + 1));
    free(big);
}

static void test_bucket(void **state)
{
    (void)state;
    ec_bucket b = {0};
    long long retry = 0;
    long long t = 1000000;
    assert_true(ec_bucket_full(&b, t, 5, 30));
    for (int i = 0; i < 5; i++) assert_true(ec_bucket_take(&b, t, 5, 30, &retry));
    assert_false(ec_bucket_full(&b, t, 5, 30));
    assert_false(ec_bucket_take(&b, t, 5, 30, &retry));
    /* 30 an hour: one token every 120 s. */
    assert_in_range(retry, 119000, 120001);
    assert_false(ec_bucket_take(&b, t + 119000, 5, 30, &retry));
    assert_in_range(retry, 999, 1001);
    assert_true(ec_bucket_take(&b, t + 120000, 5, 30, &retry));
    assert_false(ec_bucket_take(&b, t + 120000, 5, 30, &retry));
    /* Refill stops at the burst. */
    t += 10LL * 3600 * 1000;
    assert_true(ec_bucket_full(&b, t, 5, 30));
    for (int i = 0; i < 5; i++) assert_true(ec_bucket_take(&b, t, 5, 30, NULL));
    assert_false(ec_bucket_take(&b, t, 5, 30, NULL));
    /* A clock that goes back gives nothing. */
    assert_false(ec_bucket_take(&b, t - 100000, 5, 30, NULL));
    /* A lower burst after a reload applies at once. */
    ec_bucket c = {0};
    assert_true(ec_bucket_take(&c, 0, 10, 3600, NULL));
    assert_true(ec_bucket_take(&c, 0, 2, 3600, NULL));
    assert_true(ec_bucket_take(&c, 0, 2, 3600, NULL));
    assert_false(ec_bucket_take(&c, 0, 2, 3600, NULL));
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_envelope_message_matches_library),
        cmocka_unit_test(test_envelope_verify),
        cmocka_unit_test(test_bundle_verify),
        cmocka_unit_test(test_payload_parse),
        cmocka_unit_test(test_vault_blob),
        cmocka_unit_test(test_bucket),
    };
    return cmocka_run_group_tests_name("e2echeck", tests, NULL, NULL);
}
