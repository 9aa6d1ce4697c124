/* Unit tests for the multi-cast key distribution core (e2e/dmkd.h): whole
 * runs of 2, 3, 10 and 100 simulated members agree on one epoch secret
 * that the component's view does not determine; every manipulation a
 * component could attempt (changed T'_i or T', substituted R, a round from
 * another run, a wrong revealed k) is detected; a fixed vector pins the
 * byte layouts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e/dmkd.h"
#include "e2e/identity.h"

#define ROOM "team@rooms.example.com"
#define MAXN 100

typedef struct run {
    size_t n;
    char jid[MAXN][64];
    const char *jids[MAXN];
    sr_e2e_identity id[MAXN];
    sr_e2e_dmkd_member m[MAXN];
    unsigned char R[MAXN][32], c[MAXN][32], sig1[MAXN][64];
    unsigned char sid[32];
    unsigned char T[MAXN][32], second[MAXN][32], sig2[MAXN][64];
    unsigned char k[MAXN][32]; /* revealed k_i (index 0 unused) */
    unsigned char k_prime[32], T_prime_i[MAXN][32], T_prime[32];
    unsigned char secret[MAXN][32];
    unsigned char roster_hash[32], run_id[16];
    sr_e2e_dmkd_ctx ctx;
} run;

static void setup_run(run *r, size_t n, unsigned char run_byte, bool fixed_es)
{
    memset(r, 0, sizeof *r);
    r->n = n;
    memset(r->roster_hash, 0x5a, sizeof r->roster_hash);
    memset(r->run_id, run_byte, sizeof r->run_id);
    r->ctx = (sr_e2e_dmkd_ctx){ROOM, 7, r->roster_hash, r->run_id};
    for (size_t i = 0; i < n; i++) {
        unsigned char root[32], es1[32], es2[32];
        snprintf(r->jid[i], sizeof r->jid[i], "user%03zu@example.com", i);
        r->jids[i] = r->jid[i];
        memset(root, (int)(i + 1), sizeof root);
        assert_int_equal(sr_e2e_identity_derive(&r->id[i], root), SR_E2E_OK);
        memset(es1, (int)(0x80 + i), sizeof es1);
        memset(es2, (int)(0x40 + i), sizeof es2);
        assert_int_equal(sr_e2e_dmkd_round1(&r->m[i], &r->ctx, r->jid[i], r->id[i].dmkd_a,
                                            r->id[i].dmkd_b, fixed_es ? es1 : NULL,
                                            fixed_es ? es2 : NULL),
                         SR_E2E_OK);
        memcpy(r->R[i], r->m[i].R, 32);
        memcpy(r->c[i], r->m[i].c, 32);
        assert_int_equal(sr_e2e_dmkd_round1_sign(r->sig1[i], &r->ctx, r->jid[i], r->R[i], r->c[i],
                                                 r->id[i].sign_sk),
                         SR_E2E_OK);
    }
}

/* Everything after round 1, as members and component would do it. */
static void finish_run(run *r)
{
    size_t n = r->n;
    unsigned char k_server[32];
    size_t bad = 99;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(sr_e2e_dmkd_round1_verify(r->sig1[i], &r->ctx, r->jid[i], r->R[i],
                                                   r->c[i], r->id[i].sign_pk),
                         SR_E2E_OK);
    assert_int_equal(sr_e2e_dmkd_sid(r->sid, &r->ctx, n, r->jids, (const unsigned char(*)[32])r->c,
                                     (const unsigned char(*)[32])r->R),
                     SR_E2E_OK);
    for (size_t i = 0; i < n; i++) {
        size_t left = (i + n - 1) % n, right = (i + 1) % n;
        assert_int_equal(sr_e2e_dmkd_round2(&r->m[i], r->T[i], r->second[i], r->sid, r->R[left],
                                            r->R[right], i == 0),
                         SR_E2E_OK);
        assert_int_equal(sr_e2e_dmkd_round2_sign(r->sig2[i], r->sid, r->jid[i], r->T[i],
                                                 r->second[i], r->id[i].sign_sk),
                         SR_E2E_OK);
        assert_int_equal(sr_e2e_dmkd_round2_verify(r->sig2[i], r->sid, r->jid[i], r->T[i],
                                                   r->second[i], r->id[i].sign_pk),
                         SR_E2E_OK);
        if (i > 0)
            memcpy(r->k[i], r->second[i], 32);
    }
    memcpy(r->T_prime, r->second[0], 32);
    memset(k_server, 0xc3, sizeof k_server);
    assert_int_equal(sr_e2e_dmkd_server(r->k_prime, r->T_prime_i, &bad, &r->ctx, n, r->jids,
                                        (const unsigned char(*)[32])r->c,
                                        (const unsigned char(*)[32])r->T,
                                        (const unsigned char(*)[32])r->k, k_server),
                     SR_E2E_OK);
}

static void derive_all(run *r)
{
    for (size_t i = 0; i < r->n; i++)
        assert_int_equal(sr_e2e_dmkd_derive(r->secret[i], &r->m[i], r->sid, &r->ctx, r->jid[0],
                                            r->c[0], r->k_prime, r->T_prime_i[i], r->T_prime),
                         SR_E2E_OK);
}

static void check_agreement(size_t n)
{
    run *r = malloc(sizeof *r);
    assert_non_null(r);
    setup_run(r, n, 1, false);
    finish_run(r);
    derive_all(r);
    for (size_t i = 1; i < n; i++)
        assert_memory_equal(r->secret[i], r->secret[0], 32);
    /* What the component saw does not give the secret: k' XOR the revealed
     * k's and the T's are public, k_1 is not among them. */
    unsigned char guess[32];
    memcpy(guess, r->k_prime, 32);
    assert_memory_not_equal(guess, r->secret[0], 32);
    for (size_t i = 0; i < n; i++)
        sr_e2e_dmkd_member_wipe(&r->m[i]);
    free(r);
}

static void test_agree_2(void **state) { (void)state; check_agreement(2); }
static void test_agree_3(void **state) { (void)state; check_agreement(3); }
static void test_agree_10(void **state) { (void)state; check_agreement(10); }
static void test_agree_100(void **state) { (void)state; check_agreement(100); }

static void test_fresh_each_run(void **state)
{
    (void)state;
    run *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    setup_run(a, 3, 1, false);
    setup_run(b, 3, 1, false);
    finish_run(a);
    finish_run(b);
    derive_all(a);
    derive_all(b);
    assert_memory_not_equal(a->secret[0], b->secret[0], 32);
    free(a);
    free(b);
}

/* A changed T'_i makes that member's check of c_1 fail; a changed T' makes
 * every member's fail; none derives a different key silently. */
static void test_tampered_broadcast(void **state)
{
    (void)state;
    run *r = malloc(sizeof *r);
    unsigned char s[32];
    assert_non_null(r);
    setup_run(r, 5, 2, false);
    finish_run(r);
    r->T_prime_i[3][7] ^= 0x01;
    assert_int_equal(sr_e2e_dmkd_derive(s, &r->m[3], r->sid, &r->ctx, r->jid[0], r->c[0],
                                        r->k_prime, r->T_prime_i[3], r->T_prime),
                     SR_E2E_ERR_MISMATCH);
    assert_true(sodium_is_zero(s, sizeof s));
    r->T_prime_i[3][7] ^= 0x01;
    r->T_prime[0] ^= 0x80;
    for (size_t i = 0; i < r->n; i++)
        assert_int_equal(sr_e2e_dmkd_derive(s, &r->m[i], r->sid, &r->ctx, r->jid[0], r->c[0],
                                            r->k_prime, r->T_prime_i[i], r->T_prime),
                         SR_E2E_ERR_MISMATCH);
    free(r);
}

/* The component swaps a member's R for one of its own: the swapped R
 * carries no valid signature, and a ring computed over inconsistent R's
 * does not cancel. */
static void test_substituted_R(void **state)
{
    (void)state;
    run *r = malloc(sizeof *r);
    unsigned char evil_r[32], evil_R[32], T[32], second[32];
    size_t bad = 0;
    assert_non_null(r);
    setup_run(r, 4, 3, false);
    crypto_core_ristretto255_scalar_random(evil_r);
    crypto_scalarmult_ristretto255_base(evil_R, evil_r);
    assert_int_equal(sr_e2e_dmkd_round1_verify(r->sig1[1], &r->ctx, r->jid[1], evil_R, r->c[1],
                                               r->id[1].sign_pk),
                     SR_E2E_ERR_SIGNATURE);
    finish_run(r);
    /* Member 2 computed against a different R_1 than member 0 saw. */
    sr_e2e_dmkd_member m2 = r->m[2];
    assert_int_equal(sr_e2e_dmkd_round1(&m2, &r->ctx, r->jid[2], r->id[2].dmkd_a,
                                        r->id[2].dmkd_b, NULL, NULL),
                     SR_E2E_OK);
    memcpy(m2.R, r->R[2], 32); /* keep what was announced */
    assert_int_equal(sr_e2e_dmkd_round2(&m2, T, second, r->sid, evil_R, r->R[3], false), SR_E2E_OK);
    memcpy(r->T[2], T, 32);
    assert_int_equal(sr_e2e_dmkd_server(r->k_prime, r->T_prime_i, &bad, &r->ctx, r->n, r->jids,
                                        (const unsigned char(*)[32])r->c,
                                        (const unsigned char(*)[32])r->T,
                                        (const unsigned char(*)[32])r->k, r->k_prime),
                     SR_E2E_ERR_MISMATCH);
    assert_int_equal(bad, r->n);
    sr_e2e_dmkd_member_wipe(&m2);
    free(r);
}

/* Round messages are bound to their run and ring. */
static void test_replayed_rounds(void **state)
{
    (void)state;
    run *old = malloc(sizeof *old), *now = malloc(sizeof *now);
    assert_non_null(old);
    assert_non_null(now);
    setup_run(old, 3, 4, false);
    setup_run(now, 3, 5, false);
    finish_run(old);
    /* A round 1 of the old run presented in the new one. */
    assert_int_equal(sr_e2e_dmkd_round1_verify(old->sig1[1], &now->ctx, old->jid[1], old->R[1],
                                               old->c[1], old->id[1].sign_pk),
                     SR_E2E_ERR_SIGNATURE);
    finish_run(now);
    /* A round 2 of the old run against the new sid. */
    assert_int_equal(sr_e2e_dmkd_round2_verify(old->sig2[1], now->sid, old->jid[1], old->T[1],
                                               old->second[1], old->id[1].sign_pk),
                     SR_E2E_ERR_SIGNATURE);
    /* A revealed k from the old run does not open the new commitment. */
    size_t bad = 0;
    memcpy(now->k[2], old->k[2], 32);
    assert_int_equal(sr_e2e_dmkd_server(now->k_prime, now->T_prime_i, &bad, &now->ctx, now->n,
                                        now->jids, (const unsigned char(*)[32])now->c,
                                        (const unsigned char(*)[32])now->T,
                                        (const unsigned char(*)[32])now->k, now->k_prime),
                     SR_E2E_ERR_MISMATCH);
    assert_int_equal(bad, 2);
    free(old);
    free(now);
}

/* The twisted PRF: the same ephemeral randomness under other long-term
 * seeds, or other ephemeral randomness under the same seeds, gives other
 * secrets; fixed inputs give fixed outputs. */
static void test_twisted_prf(void **state)
{
    (void)state;
    sr_e2e_dmkd_member a, b, c;
    unsigned char rh[32], rid[16], es1[32], es2[32], sa[32], sb[32];
    memset(rh, 1, sizeof rh);
    memset(rid, 2, sizeof rid);
    memset(es1, 3, sizeof es1);
    memset(es2, 4, sizeof es2);
    memset(sa, 5, sizeof sa);
    memset(sb, 6, sizeof sb);
    sr_e2e_dmkd_ctx ctx = {ROOM, 1, rh, rid};
    assert_int_equal(sr_e2e_dmkd_round1(&a, &ctx, "a@example.com", sa, sb, es1, es2), SR_E2E_OK);
    assert_int_equal(sr_e2e_dmkd_round1(&b, &ctx, "a@example.com", sa, sb, es1, es2), SR_E2E_OK);
    assert_memory_equal(a.r, b.r, 32);
    assert_memory_equal(a.k, b.k, 32);
    sb[0] ^= 1;
    assert_int_equal(sr_e2e_dmkd_round1(&c, &ctx, "a@example.com", sa, sb, es1, es2), SR_E2E_OK);
    assert_memory_not_equal(a.r, c.r, 32);
    assert_memory_not_equal(a.k, c.k, 32);
    sb[0] ^= 1;
    es2[0] ^= 1;
    assert_int_equal(sr_e2e_dmkd_round1(&c, &ctx, "a@example.com", sa, sb, es1, es2), SR_E2E_OK);
    assert_memory_not_equal(a.r, c.r, 32);
    sr_e2e_dmkd_member_wipe(&a);
    sr_e2e_dmkd_member_wipe(&b);
    sr_e2e_dmkd_member_wipe(&c);
}

static void test_bad_input(void **state)
{
    (void)state;
    run *r = malloc(sizeof *r);
    unsigned char T[32], second[32], zero[32] = {0};
    size_t bad;
    assert_non_null(r);
    setup_run(r, 2, 6, false);
    /* One member is no ring. */
    assert_int_equal(sr_e2e_dmkd_sid(r->sid, &r->ctx, 1, r->jids, (const unsigned char(*)[32])r->c,
                                     (const unsigned char(*)[32])r->R),
                     SR_E2E_ERR_INVALID);
    assert_int_equal(sr_e2e_dmkd_server(r->k_prime, r->T_prime_i, &bad, &r->ctx, 1, r->jids,
                                        (const unsigned char(*)[32])r->c,
                                        (const unsigned char(*)[32])r->T,
                                        (const unsigned char(*)[32])r->k, zero),
                     SR_E2E_ERR_INVALID);
    /* The identity point as a neighbour's R. */
    assert_int_equal(sr_e2e_dmkd_round2(&r->m[0], T, second, r->sid, zero, r->R[1], true),
                     SR_E2E_ERR_POINT);
    assert_int_equal(sr_e2e_dmkd_round1_verify(r->sig1[0], &r->ctx, r->jid[0], zero, r->c[0],
                                               r->id[0].sign_pk),
                     SR_E2E_ERR_POINT);
    free(r);
}

static void expect_hex(const char *name, const unsigned char *got, const char *want)
{
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, got, 32);
    if (strcmp(hex, want) != 0)
        fail_msg("%s: got %s, want %s", name, hex, want);
}

/* Fixed seeds and fixed ephemeral randomness for three members (roots
 * 32 × 0x01/0x02/0x03, es1 32 × 0x80+i, es2 32 × 0x40+i, roster hash
 * 32 × 0x5a, run id 16 × 0x09, epoch 7, k_S 32 × 0xc3): the values pin
 * every layout (ctx, twisted PRF, commitment, sid, edge keys, S_e), and
 * tests/unit/e2e_vectors_check.py recomputes them independently. */
static void test_vector_three(void **state)
{
    (void)state;
    run *r = malloc(sizeof *r);
    assert_non_null(r);
    setup_run(r, 3, 9, true);
    finish_run(r);
    derive_all(r);
    assert_memory_equal(r->secret[1], r->secret[0], 32);
    assert_memory_equal(r->secret[2], r->secret[0], 32);
    expect_hex("dmkd.c0", r->c[0], "58acf84b51aeaea36770c2a3a1c5f502736916ddbc247e57b0b1fd9a0a00f2d0");
    expect_hex("dmkd.R0", r->R[0], "d84d497e59522d376da0822cb3e632305756ef6e6c3527886b953a6e6e27692a");
    expect_hex("dmkd.sid", r->sid, "e9df15d729c59e52105a4066aaa80fe119d1bba7000d7c302d7e9dbe22b88556");
    expect_hex("dmkd.T0", r->T[0], "7b1f6dee0b4d2062ec967f3d6a8594e6b4d77818cb0c3080e48d4cb36f6d05e6");
    expect_hex("dmkd.k_prime", r->k_prime, "164cbc5af2944145401e53d0117b7a986c89a71785d404ec5fc310a8d4ef00eb");
    expect_hex("dmkd.secret", r->secret[0], "8c899efd1e402dd04c3f9f8e803749b24fab6a3a24d938935476846cfbec1455");
    free(r);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agree_2),          cmocka_unit_test(test_agree_3),
        cmocka_unit_test(test_agree_10),         cmocka_unit_test(test_agree_100),
        cmocka_unit_test(test_fresh_each_run),   cmocka_unit_test(test_tampered_broadcast),
        cmocka_unit_test(test_substituted_R),    cmocka_unit_test(test_replayed_rounds),
        cmocka_unit_test(test_twisted_prf),      cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_vector_three),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
