/* Unit tests for the multi-cast key distribution core (e2e/dmkd.h): whole
 * runs of 2, 3, 10 and 100 simulated members agree on one epoch secret
 * that the component's view does not determine; every manipulation a
 * component could attempt (changed T'_i or T', substituted R, a round from
 * another run, a wrong revealed k) is detected; a fixed vector pins the
 * byte layouts and every value of the XEP's example run. */
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
#include "e2e/envelope.h"
#include "e2e/epoch.h"
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

/* Compares with the expected hex and prints the actual value on mismatch,
 * so a changed derivation shows every affected vector in one run. */
static int vector_failures;

static void expect_hex(const char *name, const unsigned char *got, size_t n, const char *want)
{
    char hex[2 * 64 + 1];
    assert_true(n <= 64);
    sodium_bin2hex(hex, sizeof hex, got, n);
    if (strcmp(hex, want) != 0) {
        print_message("vector %s mismatch:\n  got  %s\n  want %s\n", name, hex, want);
        vector_failures++;
    }
}

/* The run context exactly as the XEP prints it: it must reproduce the
 * representative's commitment c_1 = BLAKE2b-256(lp8(DMKD_COMMIT) ‖ ctx ‖
 * lp16(jid) ‖ k_1). */
static void expect_ctx(const char *hex, const char *jid, const unsigned char k[32],
                       const unsigned char c[32])
{
    unsigned char ctx[128], buf[512], out[32];
    size_t ctx_len, n = 0, jl = strlen(jid), ll = strlen(SR_E2E_LABEL_DMKD_COMMIT);
    assert_int_equal(sodium_hex2bin(ctx, sizeof ctx, hex, strlen(hex), NULL, &ctx_len, NULL), 0);
    buf[n++] = (unsigned char)ll;
    memcpy(buf + n, SR_E2E_LABEL_DMKD_COMMIT, ll);
    n += ll;
    memcpy(buf + n, ctx, ctx_len);
    n += ctx_len;
    buf[n++] = (unsigned char)(jl >> 8);
    buf[n++] = (unsigned char)jl;
    memcpy(buf + n, jid, jl);
    n += jl;
    memcpy(buf + n, k, 32);
    n += 32;
    assert_int_equal(crypto_generichash(out, sizeof out, buf, n, NULL, 0), 0);
    sodium_memzero(buf, sizeof buf);
    if (sodium_memcmp(out, c, 32) != 0) {
        print_message("vector dmkd.ctx does not reproduce c_1\n");
        vector_failures++;
    }
}

/* The example's envelopes (sealing is randomised, so they are fixed here
 * as printed in the XEP's confirm example): each must verify under its
 * sealer and open to the vector's S_e with its recipient's key. */
static void expect_envelope(const char *b64, const sr_e2e_identity *sealer, const char *sealer_jid,
                            const sr_e2e_identity *to, const char *to_jid,
                            const unsigned char roster_hash[32], const unsigned char secret[32])
{
    unsigned char env[SR_E2E_ENVELOPE_BYTES + 1], opened[32];
    size_t len = 0;
    sr_e2e_envelope_ctx ectx = {ROOM, 7, roster_hash, sealer_jid, to_jid, to->box_pk};
    assert_int_equal(sodium_base642bin(env, sizeof env, b64, strlen(b64), NULL, &len, NULL,
                                       sodium_base64_VARIANT_ORIGINAL),
                     0);
    assert_int_equal(len, SR_E2E_ENVELOPE_BYTES);
    assert_int_equal(sr_e2e_envelope_open(opened, env, len, &ectx, sealer->sign_pk, to->box_sk),
                     SR_E2E_OK);
    assert_memory_equal(opened, secret, 32);
}

/* The XEP's example run: three participants U_1..U_3 =
 * user000..user002@example.com (roots 32 × 0x01/0x02/0x03, es1 32 × 0x80+i,
 * es2 32 × 0x40+i) in team@rooms.example.com, epoch 7, roster hash
 * 32 × 0x5a, run id 16 × 0x09, k_S 32 × 0xc3; two offline members
 * user003/user004@example.com (roots 32 × 0x04/0x05) whose bundles the
 * component hands to U_1 and U_2 to seal to. Every value printed in the
 * XEP's DMKD test vectors and examples is asserted here, and
 * tests/unit/e2e_vectors_check.py recomputes them independently and checks
 * the XEP's text against them. */
static void test_vector_three(void **state)
{
    (void)state;
    run *r = malloc(sizeof *r);
    sr_e2e_identity off[2];
    sr_e2e_epoch_keys ek;
    unsigned char bsig[64], root[32], r1[3][32], k1[32];
    assert_non_null(r);
    setup_run(r, 3, 9, true);
    for (size_t i = 0; i < 3; i++)
        memcpy(r1[i], r->m[i].r, 32); /* round 2 wipes r */
    memcpy(k1, r->m[0].k, 32);
    finish_run(r);
    derive_all(r);
    assert_memory_equal(r->secret[1], r->secret[0], 32);
    assert_memory_equal(r->secret[2], r->secret[0], 32);
    assert_int_equal(sr_e2e_epoch_derive(&ek, r->secret[0], ROOM, 7, r->roster_hash), SR_E2E_OK);

    expect_ctx("00167465616d40726f6f6d732e6578616d706c652e636f6d0000000000000007"
               "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
               "09090909090909090909090909090909",
               r->jid[0], k1, r->c[0]);

    /* U_1 = user000@example.com, the representative */
    expect_hex("dmkd.U1.ed_pk", r->id[0].sign_pk, 32,
               "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c");
    expect_hex("dmkd.U1.dmkd_a", r->id[0].dmkd_a, 32,
               "3510dd4768fb07d444d1c03c193d354dc94487febabac3661bc635345a9240d4");
    expect_hex("dmkd.U1.dmkd_b", r->id[0].dmkd_b, 32,
               "62ed86d00d3b644c65b598c8630a017ae107de88fbba3ab34d52d59d5368f2d2");
    expect_hex("dmkd.U1.r", r1[0], 32,
               "2902221f0db7c31457a416cb610638ef831972b62f263a5bc7ff868b65b1620c");
    expect_hex("dmkd.U1.k", k1, 32,
               "0f2123631009d1f784d36b201f2e69eab71788e16f393721bf4719c429317e6a");
    expect_hex("dmkd.U1.R", r->R[0], 32,
               "d84d497e59522d376da0822cb3e632305756ef6e6c3527886b953a6e6e27692a");
    expect_hex("dmkd.U1.c", r->c[0], 32,
               "58acf84b51aeaea36770c2a3a1c5f502736916ddbc247e57b0b1fd9a0a00f2d0");
    expect_hex("dmkd.U1.sig1", r->sig1[0], 64,
               "547a5d50f3fd6e5798c69ba8780761f5e8bcb2b5959bc83e11953bba9e94ed0e"
               "253c72abeb68591bcf75bbc2df223bcdad4e9f1bf9ae55b9c850bb398d5ab506");
    expect_hex("dmkd.U1.Kl", r->m[0].kl, 32,
               "799d1e0eb7117c49a7fd81cdfa6e8b2138a9cddc1054762afd65e55ce0699c87");
    expect_hex("dmkd.U1.T", r->T[0], 32,
               "7b1f6dee0b4d2062ec967f3d6a8594e6b4d77818cb0c3080e48d4cb36f6d05e6");
    expect_hex("dmkd.U1.second", r->second[0], 32,
               "76bc3d6da718adbe232eeaede540e2cb8fbe453d7f6d410b4222fc98c958e2ed");
    expect_hex("dmkd.U1.sig2", r->sig2[0], 64,
               "4c7ef8da5f9a1949c5dd3f0b0b78c98b809a173638faf1d1ed495bd8f5e430db"
               "d965b312b9d3203b93a2570188f2c3c74e02941296f594790619c928930dd00c");
    expect_hex("dmkd.U1.T_prime_i", r->T_prime_i[0], 32,
               "0000000000000000000000000000000000000000000000000000000000000000");

    /* U_2 = user001@example.com */
    expect_hex("dmkd.U2.ed_pk", r->id[1].sign_pk, 32,
               "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394");
    expect_hex("dmkd.U2.dmkd_a", r->id[1].dmkd_a, 32,
               "0f7bc6c372a06dc6b4bedac49f7620fbe34a48a4acdcb158bb2293bd735fac75");
    expect_hex("dmkd.U2.dmkd_b", r->id[1].dmkd_b, 32,
               "4d88ffe15f26c38e4aad2fca33c42e8ea14fc96a37ddfd959c49305f499ac47f");
    expect_hex("dmkd.U2.r", r1[1], 32,
               "fc092b88953aeb2c96d28d8252a7adff0a24cc5975ec42ec50c04c0085ada007");
    expect_hex("dmkd.U2.R", r->R[1], 32,
               "18fd83a15fe5892695ec2a78a4b014927fd612868def3ed6e0e5182e5dff1807");
    expect_hex("dmkd.U2.c", r->c[1], 32,
               "6c418d11df1337cbe3efd48a320ee2bc22c16542de162b6186344b05dedbb982");
    expect_hex("dmkd.U2.sig1", r->sig1[1], 64,
               "05a16231a7c2ff128b029a9f92b0e73f0bf98fde843778504f990965f114021f"
               "1d897b82b73735b409d7f409345dd844b69a7bbf1e3d211c6ca015e86c059701");
    expect_hex("dmkd.U2.Kl", r->m[1].kl, 32,
               "028273e0bc5c5c2b4b6bfef090eb1fc78c7eb5c4db5846aa19e8a9ef8f049961");
    expect_hex("dmkd.U2.T", r->T[1], 32,
               "33846081034bf7e92895db52ad04265c620e3608e641735f2a670efb2cf900c9");
    expect_hex("dmkd.U2.second", r->second[1], 32,
               "e2819abafb6a2b13118ff1f8a82c42251659988f9b263b16c4c1740c0b983753");
    expect_hex("dmkd.U2.sig2", r->sig2[1], 64,
               "6700602c2f32ab926479f9b5254f9579efaed89de76a7d3c5287c2df45f5641d"
               "eeb43d852615588c27efab707a4aeb408258e3b9edead8635500fff2be920802");
    expect_hex("dmkd.U2.T_prime_i", r->T_prime_i[1], 32,
               "7b1f6dee0b4d2062ec967f3d6a8594e6b4d77818cb0c3080e48d4cb36f6d05e6");

    /* U_3 = user002@example.com */
    expect_hex("dmkd.U3.ed_pk", r->id[2].sign_pk, 32,
               "ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1");
    expect_hex("dmkd.U3.dmkd_a", r->id[2].dmkd_a, 32,
               "818a254c8d95c1bd8733184595c0edfd8b77829b13c02abcd2d092958dacab6f");
    expect_hex("dmkd.U3.dmkd_b", r->id[2].dmkd_b, 32,
               "90913b335c31d847cef1769c6eaa414982384af3a1e6bc28c67335bb607302b4");
    expect_hex("dmkd.U3.r", r1[2], 32,
               "b64803d5b77dd85999cf9dd47fcd1491a42ee769e0a3cfa947b4617139e53f08");
    expect_hex("dmkd.U3.R", r->R[2], 32,
               "489871bc0539ebfc165276f40c606ffe9659b523f5011d6dedf9bab05bb0a158");
    expect_hex("dmkd.U3.c", r->c[2], 32,
               "abbe072687e533865a1188dd00f065451a97895c9b30975dea1bad4ae1117947");
    expect_hex("dmkd.U3.sig1", r->sig1[2], 64,
               "97e48d6bea97f16480c5f2d62bde0239958c8b87c678df787d5532569778bf78"
               "dbed8cb18e4e39a40ee752e9255f6fd28b828a92dd916be8774647dac026d00b");
    expect_hex("dmkd.U3.Kl", r->m[2].kl, 32,
               "31061361bf17abc263fe25a23def399bee7083cc3d1935f5338fa714a3fd99a8");
    expect_hex("dmkd.U3.T", r->T[2], 32,
               "489b0d6f0806d78bc403a46fc781b2bad6d94e102d4d43dfceea42484394052f");
    expect_hex("dmkd.U3.second", r->second[2], 32,
               "370ee523ca3da995925261eb7a94fb7eb913fc5bdd31fc3958c1a7671cb4f47b");
    expect_hex("dmkd.U3.sig2", r->sig2[2], 64,
               "033405d362ec28fc0d3b7629f0832b7168d356429873be90d0413f551779467c"
               "776daa6c7a5c0d8c57803240310935467de59de07b302bc2b997b5055cc55b07");
    expect_hex("dmkd.U3.T_prime_i", r->T_prime_i[2], 32,
               "489b0d6f0806d78bc403a46fc781b2bad6d94e102d4d43dfceea42484394052f");

    /* The run */
    expect_hex("dmkd.sid", r->sid, 32,
               "e9df15d729c59e52105a4066aaa80fe119d1bba7000d7c302d7e9dbe22b88556");
    expect_hex("dmkd.k_prime", r->k_prime, 32,
               "164cbc5af2944145401e53d0117b7a986c89a71785d404ec5fc310a8d4ef00eb");
    expect_hex("dmkd.T_prime", r->T_prime, 32,
               "76bc3d6da718adbe232eeaede540e2cb8fbe453d7f6d410b4222fc98c958e2ed");
    expect_hex("dmkd.secret", r->secret[0], 32,
               "8c899efd1e402dd04c3f9f8e803749b24fab6a3a24d938935476846cfbec1455");
    expect_hex("dmkd.kc", ek.kc, 32,
               "200012b6e35d85e7495da2690e463ba91a040eeb2d65ae12944ff82c59f21787");
    expect_hex("dmkd.k_e", ek.k, 32,
               "213cd66317ba381f1b0a709c53765e8295e5994e22bb0be4a7158ea4df810601");

    /* The offline members' bundles in the round-3 <seal/>s */
    for (size_t i = 0; i < 2; i++) {
        memset(root, (int)(4 + i), sizeof root);
        assert_int_equal(sr_e2e_identity_derive(&off[i], root), SR_E2E_OK);
    }
    expect_hex("dmkd.off1.ed_pk", off[0].sign_pk, 32,
               "ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c");
    expect_hex("dmkd.off1.x_pk", off[0].box_pk, 32,
               "0eb9e41428086879746a4be15ca14be9ddd90bb236d85382faa6affb69b7405c");
    assert_int_equal(sr_e2e_bundle_sign(bsig, "user003@example.com", &off[0]), SR_E2E_OK);
    expect_hex("dmkd.off1.bundle_sig", bsig, 64,
               "029eabfb1445fb044d0dbebfd6c7269ee42ca7685da2e0f31679d38ac14ddc05"
               "4c735247bc1a54950b527f4527bc455409d6289d8ba909e9a1415653d3d5dc0a");
    expect_hex("dmkd.off2.ed_pk", off[1].sign_pk, 32,
               "6e7a1cdd29b0b78fd13af4c5598feff4ef2a97166e3ca6f2e4fbfccd80505bf1");
    expect_hex("dmkd.off2.x_pk", off[1].box_pk, 32,
               "cd9c80a03cf856dd94fa4c6836d9e6f01b5f43b35e5cd47fea26361f17a5eb22");
    assert_int_equal(sr_e2e_bundle_sign(bsig, "user004@example.com", &off[1]), SR_E2E_OK);
    expect_hex("dmkd.off2.bundle_sig", bsig, 64,
               "b2b87dac44697e60838433258f6f1b5c0e81e2c08c312658f86c0c4a3bb2ce91"
               "cfcb07cffc25421dc3e0652b7a3ffd6417fd6a69fbcb9f633169eed96d85ef04");

    /* The confirms' envelopes: each participant's own, and U_1 to user003,
     * U_2 to user004. */
    expect_envelope("AX8wDY5dOoM1uDXizgNXRk1l4hHYyxXgJxLdsQ5uSIFNcf9nrCMQ9OWiuLndVcJDm5sWSq0Vwl2+"
                    "8J9NYZ87gpJwiuTnDGmW/a+OhxKFJeuTD7LqztfOz43RfbcnI/UYKnWnobmYlKtq0oHFYGmZlEHD"
                    "jxPIwFDmaBir1/myPPYoZ0oNhcGZlNMs/ReTn/P2BA==",
                    &r->id[0], r->jid[0], &r->id[0], r->jid[0], r->roster_hash, r->secret[0]);
    expect_envelope("ASlsUYvjy7MYOhgySoVTjtqg6xZ8kNYM3o93OyS1nmhAhZshdMu28JAAY/Gpv4trsh6Y3UbvbTVx"
                    "JneM2K4U1N1vHuxmhf6XNO874uHDV44RaC+nxx7NeeDYfhmyGA/dLkZRMpHnTgHRiDPQw+m0Zuwe"
                    "dj/JOFZcIDdvg1MRYQcHYaNScXIrDwEK2c0LRr7lDw==",
                    &r->id[0], r->jid[0], &off[0], "user003@example.com", r->roster_hash,
                    r->secret[0]);
    expect_envelope("AbCKLEStuQYK81uQ93cJW8Wrpgpz4LOoNnodwkQ6swlmzU6m37D9P5Zy1jlP3KRHcJns9o5mlmfC"
                    "JSN5dLagx3LPPo4rGsfJOLYVSi0EkdNnmGkEo39k53iYAbWdDtkZ3EvTRBqMa5E1/8yg2Axspykb"
                    "lSSDjf7eY89hnVYH3oEGzUO0SkrAkTTV5BBndjk/DA==",
                    &r->id[1], r->jid[1], &r->id[1], r->jid[1], r->roster_hash, r->secret[0]);
    expect_envelope("ASXzyCI96wO0XEZRgqTzVN3rw342ZvcDg1vIAcmjRSt0MsDQxLgOQ41ci/rrqYzXAFtt8J4DFn6Q"
                    "rzbJ6QkE8QOJGu/hu/kcmKgUE8gl6dvnOMeZJKVc/q+2J1bysCczzlEtoc8wAZiQKh6dCxUwcMrx"
                    "UZSw2xGbP+I3cmhMOWPP0cp6FxzWqHixg+1HVFIoCw==",
                    &r->id[1], r->jid[1], &off[1], "user004@example.com", r->roster_hash,
                    r->secret[0]);
    expect_envelope("AWlTPE3sWvbhsg63yPHeJsXvEDyzu7LGMkhGG6wBbbgQENlQcofplFUGMtnaJNKkHjdyr7Wu6cxg"
                    "ch9TntJOyuR7r0xpaFtFvqVsFV2sbPqZmSQqd5vHiCc5foskEzINRM/LRuYNwPPFIuzsdkg3xgZH"
                    "KYAnFmAvvPUc3VTlRHXyBU6tOA8GbCSDrRdChgilBg==",
                    &r->id[2], r->jid[2], &r->id[2], r->jid[2], r->roster_hash, r->secret[0]);

    int failures = vector_failures;
    vector_failures = 0;
    sodium_memzero(&ek, sizeof ek);
    sodium_memzero(off, sizeof off);
    sodium_memzero(r1, sizeof r1);
    sodium_memzero(k1, sizeof k1);
    for (size_t i = 0; i < r->n; i++)
        sr_e2e_dmkd_member_wipe(&r->m[i]);
    free(r);
    assert_int_equal(failures, 0);
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
