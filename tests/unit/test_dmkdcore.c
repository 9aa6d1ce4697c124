/* Unit tests of component/dmkdcore.c, the component's own copy of the DMKD
 * arithmetic, against the library's e2e core (libclient/src/e2e/dmkd.c):
 * both are linked here, real runs of 2, 3 and 10 members with random
 * identities go through the library's member side, and the component's
 * run context, signature checks, sid and combine step must agree with the
 * library byte for byte — the members derive the epoch secret from the
 * component's k' and T'_i. Tampered rounds, invalid points, wrong revealed
 * k's, a broken ring and bad arguments are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dmkdcore.h"
#include "e2e/common.h"
#include "e2e/dmkd.h"

#define MAXN 10
#define JID_LEN 400

typedef const unsigned char (*rows)[32];

typedef struct run {
    size_t n;
    char room[800];
    uint64_t epoch;
    unsigned char roster_hash[32], run_id[16];
    sr_e2e_dmkd_ctx ctx;
    dk_ctx dctx;
    char jid[MAXN][JID_LEN];
    const char *jids[MAXN];
    unsigned char sign_pk[MAXN][32], sign_sk[MAXN][64];
    sr_e2e_dmkd_member m[MAXN];
    unsigned char R[MAXN][32], c[MAXN][32], sig1[MAXN][64];
    unsigned char sid[32];
    unsigned char T[MAXN][32], second[MAXN][32], sig2[MAXN][64];
    unsigned char k[MAXN][32]; /* revealed k_i; index 0 (the representative) unused */
    unsigned char k_server[32];
} run;

/* Random identities and DMKD seeds, a random run context (the room of a
 * long run longer than 255 bytes, so the u16 length's high byte counts, as
 * for the last member's JID), and round 1 by the library for everyone. */
static run *start_run(size_t n)
{
    run *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->n = n;
    if (n == MAXN) {
        memset(r->room, 'r', 700);
        strcpy(r->room + 700, "@rooms.example.org");
    } else {
        snprintf(r->room, sizeof r->room, "room%zu@rooms.example.org", n);
    }
    r->epoch = ((uint64_t)randombytes_random() << 32) | randombytes_random();
    randombytes_buf(r->roster_hash, sizeof r->roster_hash);
    randombytes_buf(r->run_id, sizeof r->run_id);
    r->ctx = (sr_e2e_dmkd_ctx){r->room, r->epoch, r->roster_hash, r->run_id};
    assert_true(dk_ctx_build(&r->dctx, r->room, r->epoch, r->roster_hash, r->run_id));
    for (size_t i = 0; i < n; i++) {
        unsigned char dmkd_a[32], dmkd_b[32];
        if (i == n - 1) {
            memset(r->jid[i], 'm', 300);
            strcpy(r->jid[i] + 300, "@example.org");
        } else {
            snprintf(r->jid[i], JID_LEN, "member%zu@example.org", i);
        }
        r->jids[i] = r->jid[i];
        crypto_sign_keypair(r->sign_pk[i], r->sign_sk[i]);
        randombytes_buf(dmkd_a, sizeof dmkd_a);
        randombytes_buf(dmkd_b, sizeof dmkd_b);
        assert_int_equal(
            sr_e2e_dmkd_round1(&r->m[i], &r->ctx, r->jid[i], dmkd_a, dmkd_b, NULL, NULL),
            SR_E2E_OK);
        memcpy(r->R[i], r->m[i].R, 32);
        memcpy(r->c[i], r->m[i].c, 32);
        assert_int_equal(sr_e2e_dmkd_round1_sign(r->sig1[i], &r->ctx, r->jid[i], r->R[i], r->c[i],
                                                 r->sign_sk[i]),
                         SR_E2E_OK);
        sodium_memzero(dmkd_a, sizeof dmkd_a);
        sodium_memzero(dmkd_b, sizeof dmkd_b);
    }
    return r;
}

/* The library's sid, then round 2 by the library for everyone. */
static void round2(run *r)
{
    size_t n = r->n;
    assert_int_equal(sr_e2e_dmkd_sid(r->sid, &r->ctx, n, r->jids, (rows)r->c, (rows)r->R),
                     SR_E2E_OK);
    for (size_t i = 0; i < n; i++) {
        size_t left = (i + n - 1) % n, right = (i + 1) % n;
        assert_int_equal(sr_e2e_dmkd_round2(&r->m[i], r->T[i], r->second[i], r->sid, r->R[left],
                                            r->R[right], i == 0),
                         SR_E2E_OK);
        assert_int_equal(sr_e2e_dmkd_round2_sign(r->sig2[i], r->sid, r->jid[i], r->T[i],
                                                 r->second[i], r->sign_sk[i]),
                         SR_E2E_OK);
        if (i > 0) memcpy(r->k[i], r->second[i], 32);
    }
    randombytes_buf(r->k_server, sizeof r->k_server);
}

static void end_run(run *r)
{
    for (size_t i = 0; i < r->n; i++)
        sr_e2e_dmkd_member_wipe(&r->m[i]);
    sodium_memzero(r, sizeof *r);
    free(r);
}

static int combine(run *r, unsigned char k_prime[32], unsigned char (*T_prime)[32], size_t *bad)
{
    return dk_combine(k_prime, T_prime, bad, &r->dctx, r->n, r->jids, (rows)r->c, (rows)r->T,
                      (rows)r->k, r->k_server);
}

static void test_ctx_bytes(void **state)
{
    (void)state;
    unsigned char hash[32], id[16], want[DK_CTX_MAX];
    char room[2049];
    dk_ctx ctx;
    randombytes_buf(hash, sizeof hash);
    randombytes_buf(id, sizeof id);
    /* Lengths across the u16 byte boundary up to the longest JID. */
    const size_t lens[] = {1, 22, 255, 256, 1000, 2047};
    const uint64_t epochs[] = {0, 1, 0x0102030405060708u, UINT64_MAX};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        memset(room, 'a' + (int)li, lens[li]);
        room[lens[li]] = '\0';
        for (size_t ei = 0; ei < sizeof epochs / sizeof epochs[0]; ei++) {
            sr_e2e_writer w;
            sr_e2e_writer_init(&w, want, sizeof want);
            sr_e2e_put_lp16(&w, room);
            sr_e2e_put_u64(&w, epochs[ei]);
            sr_e2e_put_bytes(&w, hash, 32);
            sr_e2e_put_bytes(&w, id, 16);
            assert_false(w.overflow);
            assert_true(dk_ctx_build(&ctx, room, epochs[ei], hash, id));
            assert_int_equal(ctx.len, w.len);
            assert_memory_equal(ctx.b, want, w.len);
        }
    }
    assert_int_equal(ctx.len, DK_CTX_MAX);
    /* Refusals leave no context that could be used. */
    memset(room, 'a', 2048);
    room[2048] = '\0';
    assert_false(dk_ctx_build(&ctx, room, 1, hash, id));
    assert_int_equal(ctx.len, 0);
    assert_false(dk_ctx_build(&ctx, "", 1, hash, id));
    assert_false(dk_ctx_build(&ctx, NULL, 1, hash, id));
    assert_false(dk_ctx_build(&ctx, "r@x", 1, NULL, id));
    assert_false(dk_ctx_build(&ctx, "r@x", 1, hash, NULL));
    assert_int_equal(ctx.len, 0);
    assert_false(dk_ctx_build(NULL, "r@x", 1, hash, id));
}

/* Round 1 of member i as the library signed it is accepted, and no part of
 * the signed message can change unnoticed. */
static void check_round1(run *r, size_t i)
{
    unsigned char sig[64], R[32], c[32];
    char jid[JID_LEN];
    dk_ctx other;
    unsigned char other_id[16];

    assert_true(dk_round1_ok(r->sig1[i], &r->dctx, r->jid[i], r->R[i], r->c[i], r->sign_pk[i]));
    memcpy(sig, r->sig1[i], 64);
    sig[i % 64] ^= 0x01;
    assert_false(dk_round1_ok(sig, &r->dctx, r->jid[i], r->R[i], r->c[i], r->sign_pk[i]));
    memcpy(R, r->R[i], 32);
    R[3] ^= 0x10;
    assert_false(dk_round1_ok(r->sig1[i], &r->dctx, r->jid[i], R, r->c[i], r->sign_pk[i]));
    memcpy(c, r->c[i], 32);
    c[31] ^= 0x80;
    assert_false(dk_round1_ok(r->sig1[i], &r->dctx, r->jid[i], r->R[i], c, r->sign_pk[i]));
    strcpy(jid, r->jid[i]);
    jid[0] ^= 0x01;
    assert_false(dk_round1_ok(r->sig1[i], &r->dctx, jid, r->R[i], r->c[i], r->sign_pk[i]));
    /* The same round presented in another run of the same room and epoch. */
    memcpy(other_id, r->run_id, 16);
    other_id[15] ^= 0x01;
    assert_true(dk_ctx_build(&other, r->room, r->epoch, r->roster_hash, other_id));
    assert_false(dk_round1_ok(r->sig1[i], &other, r->jid[i], r->R[i], r->c[i], r->sign_pk[i]));
    /* Signed by someone, but not by the member named. */
    assert_false(dk_round1_ok(r->sig1[i], &r->dctx, r->jid[i], r->R[i], r->c[i],
                              r->sign_pk[(i + 1) % r->n]));
}

/* Round 2 of member i likewise. */
static void check_round2(run *r, size_t i)
{
    unsigned char sig[64], sid[32], T[32], second[32];
    char jid[JID_LEN];

    assert_true(dk_round2_ok(r->sig2[i], r->sid, r->jid[i], r->T[i], r->second[i], r->sign_pk[i]));
    memcpy(sig, r->sig2[i], 64);
    sig[63 - i % 64] ^= 0x40;
    assert_false(dk_round2_ok(sig, r->sid, r->jid[i], r->T[i], r->second[i], r->sign_pk[i]));
    memcpy(sid, r->sid, 32);
    sid[i % 32] ^= 0x01;
    assert_false(dk_round2_ok(r->sig2[i], sid, r->jid[i], r->T[i], r->second[i], r->sign_pk[i]));
    memcpy(T, r->T[i], 32);
    T[5] ^= 0x02;
    assert_false(dk_round2_ok(r->sig2[i], r->sid, r->jid[i], T, r->second[i], r->sign_pk[i]));
    memcpy(second, r->second[i], 32);
    second[17] ^= 0x04;
    assert_false(dk_round2_ok(r->sig2[i], r->sid, r->jid[i], r->T[i], second, r->sign_pk[i]));
    strcpy(jid, r->jid[i]);
    jid[strlen(jid) - 1] ^= 0x20;
    assert_false(dk_round2_ok(r->sig2[i], r->sid, jid, r->T[i], r->second[i], r->sign_pk[i]));
    assert_false(dk_round2_ok(r->sig2[i], r->sid, r->jid[i], r->T[i], r->second[i],
                              r->sign_pk[(i + 1) % r->n]));
}

/* A whole run: the component's checks accept every honest round, its sid
 * is the library's, its k' and T'_i are the library's, and the members
 * derive one secret from them. */
static void check_run(size_t n)
{
    run *r = start_run(n);
    unsigned char sid[32], other_sid[32], other_id[16];
    unsigned char k_lib[32], k_dk[32], Tp_lib[MAXN][32], Tp_dk[MAXN][32], secret[MAXN][32];
    sr_e2e_dmkd_ctx other_ctx = r->ctx;
    dk_ctx other;
    size_t bad_lib = 99, bad_dk = 99;

    for (size_t i = 0; i < n; i++)
        check_round1(r, i);
    round2(r);
    assert_true(dk_sid(sid, &r->dctx, n, r->jids, (rows)r->c, (rows)r->R));
    assert_memory_equal(sid, r->sid, 32);
    /* Another run's sid over the same ring differs, and the rounds of this
     * run do not verify under it. */
    memcpy(other_id, r->run_id, 16);
    other_id[0] ^= 0x80;
    other_ctx.run_id = other_id;
    assert_int_equal(sr_e2e_dmkd_sid(other_sid, &other_ctx, n, r->jids, (rows)r->c, (rows)r->R),
                     SR_E2E_OK);
    assert_true(dk_ctx_build(&other, r->room, r->epoch, r->roster_hash, other_id));
    assert_true(dk_sid(sid, &other, n, r->jids, (rows)r->c, (rows)r->R));
    assert_memory_equal(sid, other_sid, 32);
    assert_memory_not_equal(sid, r->sid, 32);
    for (size_t i = 0; i < n; i++) {
        check_round2(r, i);
        assert_false(
            dk_round2_ok(r->sig2[i], sid, r->jid[i], r->T[i], r->second[i], r->sign_pk[i]));
    }

    assert_int_equal(sr_e2e_dmkd_server(k_lib, Tp_lib, &bad_lib, &r->ctx, n, r->jids, (rows)r->c,
                                        (rows)r->T, (rows)r->k, r->k_server),
                     SR_E2E_OK);
    /* The representative's k is never revealed: whatever is in its slot is
     * not read. */
    randombytes_buf(r->k[0], 32);
    assert_int_equal(combine(r, k_dk, Tp_dk, &bad_dk), DK_COMBINE_OK);
    assert_memory_equal(k_dk, k_lib, 32);
    assert_memory_equal(Tp_dk, Tp_lib, n * 32);
    assert_true(sodium_is_zero(Tp_dk[0], 32));
    for (size_t i = 0; i < n; i++)
        assert_int_equal(sr_e2e_dmkd_derive(secret[i], &r->m[i], r->sid, &r->ctx, r->jid[0],
                                            r->c[0], k_dk, Tp_dk[i], r->second[0]),
                         SR_E2E_OK);
    for (size_t i = 1; i < n; i++)
        assert_memory_equal(secret[i], secret[0], 32);
    sodium_memzero(secret, sizeof secret);
    end_run(r);
}

static void test_run_2(void **state)
{
    (void)state;
    check_run(2);
}

static void test_run_3(void **state)
{
    (void)state;
    check_run(3);
}

static void test_run_10(void **state)
{
    (void)state;
    check_run(MAXN);
}

/* A valid signature over an R that is no usable point is still refused:
 * the library signs whatever it is given, so these sigs are genuine. */
static void test_round1_invalid_point(void **state)
{
    (void)state;
    run *r = start_run(2);
    unsigned char bad[5][32], sig[64];
    memset(bad[0], 0xff, 32);
    memset(bad[1], 0xff, 32);
    bad[1][31] = 0x7f; /* a field element above p */
    memset(bad[2], 0x00, 32);
    bad[2][0] = 0x01;         /* a negative field element */
    memset(bad[3], 0x00, 32); /* the identity: its edge keys would be public */
    memcpy(bad[4], r->R[0], 32);
    bad[4][31] |= 0x80; /* a non-canonical encoding of a valid point */
    for (size_t b = 0; b < 5; b++) {
        assert_int_equal(
            sr_e2e_dmkd_round1_sign(sig, &r->ctx, r->jid[0], bad[b], r->c[0], r->sign_sk[0]),
            SR_E2E_OK);
        assert_false(dk_round1_ok(sig, &r->dctx, r->jid[0], bad[b], r->c[0], r->sign_pk[0]));
        assert_int_not_equal(
            sr_e2e_dmkd_round1_verify(sig, &r->ctx, r->jid[0], bad[b], r->c[0], r->sign_pk[0]),
            SR_E2E_OK);
    }
    end_run(r);
}

static void test_round_bad_args(void **state)
{
    (void)state;
    run *r = start_run(2);
    dk_ctx empty = {.len = 0};
    char long_jid[2049];
    memset(long_jid, 'j', 2048);
    long_jid[2048] = '\0';
    round2(r);
    assert_false(dk_round1_ok(NULL, &r->dctx, r->jid[0], r->R[0], r->c[0], r->sign_pk[0]));
    assert_false(dk_round1_ok(r->sig1[0], NULL, r->jid[0], r->R[0], r->c[0], r->sign_pk[0]));
    assert_false(dk_round1_ok(r->sig1[0], &empty, r->jid[0], r->R[0], r->c[0], r->sign_pk[0]));
    assert_false(dk_round1_ok(r->sig1[0], &r->dctx, NULL, r->R[0], r->c[0], r->sign_pk[0]));
    assert_false(dk_round1_ok(r->sig1[0], &r->dctx, "", r->R[0], r->c[0], r->sign_pk[0]));
    assert_false(dk_round1_ok(r->sig1[0], &r->dctx, long_jid, r->R[0], r->c[0], r->sign_pk[0]));
    assert_false(dk_round1_ok(r->sig1[0], &r->dctx, r->jid[0], NULL, r->c[0], r->sign_pk[0]));
    assert_false(dk_round1_ok(r->sig1[0], &r->dctx, r->jid[0], r->R[0], NULL, r->sign_pk[0]));
    assert_false(dk_round1_ok(r->sig1[0], &r->dctx, r->jid[0], r->R[0], r->c[0], NULL));
    assert_false(dk_round2_ok(NULL, r->sid, r->jid[1], r->T[1], r->second[1], r->sign_pk[1]));
    assert_false(dk_round2_ok(r->sig2[1], NULL, r->jid[1], r->T[1], r->second[1], r->sign_pk[1]));
    assert_false(dk_round2_ok(r->sig2[1], r->sid, NULL, r->T[1], r->second[1], r->sign_pk[1]));
    assert_false(dk_round2_ok(r->sig2[1], r->sid, "", r->T[1], r->second[1], r->sign_pk[1]));
    assert_false(dk_round2_ok(r->sig2[1], r->sid, long_jid, r->T[1], r->second[1], r->sign_pk[1]));
    assert_false(dk_round2_ok(r->sig2[1], r->sid, r->jid[1], NULL, r->second[1], r->sign_pk[1]));
    assert_false(dk_round2_ok(r->sig2[1], r->sid, r->jid[1], r->T[1], NULL, r->sign_pk[1]));
    assert_false(dk_round2_ok(r->sig2[1], r->sid, r->jid[1], r->T[1], r->second[1], NULL));
    /* The longest JID the library signs is accepted; one byte more is
     * refused even under a genuine signature over the same layout. */
    unsigned char sig[64], msg[2200];
    sr_e2e_writer w;
    long_jid[2047] = '\0';
    assert_int_equal(
        sr_e2e_dmkd_round2_sign(sig, r->sid, long_jid, r->T[1], r->second[1], r->sign_sk[1]),
        SR_E2E_OK);
    assert_true(dk_round2_ok(sig, r->sid, long_jid, r->T[1], r->second[1], r->sign_pk[1]));
    long_jid[2047] = 'j';
    sr_e2e_writer_init(&w, msg, sizeof msg);
    sr_e2e_put_lp8(&w, SR_E2E_LABEL_DMKD_ROUND2);
    sr_e2e_put_bytes(&w, r->sid, 32);
    sr_e2e_put_lp16(&w, long_jid);
    sr_e2e_put_bytes(&w, r->T[1], 32);
    sr_e2e_put_bytes(&w, r->second[1], 32);
    assert_false(w.overflow);
    crypto_sign_detached(sig, NULL, msg, w.len, r->sign_sk[1]);
    assert_int_equal(crypto_sign_verify_detached(sig, msg, w.len, r->sign_pk[1]), 0);
    assert_false(dk_round2_ok(sig, r->sid, long_jid, r->T[1], r->second[1], r->sign_pk[1]));
    end_run(r);
}

static void test_sid_bad_args(void **state)
{
    (void)state;
    run *r = start_run(3);
    unsigned char sid[32], before[32];
    dk_ctx empty = {.len = 0};
    randombytes_buf(sid, sizeof sid);
    memcpy(before, sid, 32);
    assert_false(dk_sid(sid, &r->dctx, 1, r->jids, (rows)r->c, (rows)r->R));
    assert_false(dk_sid(sid, &r->dctx, 0, r->jids, (rows)r->c, (rows)r->R));
    assert_false(dk_sid(NULL, &r->dctx, 3, r->jids, (rows)r->c, (rows)r->R));
    assert_false(dk_sid(sid, NULL, 3, r->jids, (rows)r->c, (rows)r->R));
    assert_false(dk_sid(sid, &empty, 3, r->jids, (rows)r->c, (rows)r->R));
    assert_false(dk_sid(sid, &r->dctx, 3, NULL, (rows)r->c, (rows)r->R));
    assert_false(dk_sid(sid, &r->dctx, 3, r->jids, NULL, (rows)r->R));
    assert_false(dk_sid(sid, &r->dctx, 3, r->jids, (rows)r->c, NULL));
    r->jids[2] = NULL;
    assert_false(dk_sid(sid, &r->dctx, 3, r->jids, (rows)r->c, (rows)r->R));
    r->jids[2] = "";
    assert_false(dk_sid(sid, &r->dctx, 3, r->jids, (rows)r->c, (rows)r->R));
    char long_jid[2049];
    memset(long_jid, 'j', 2048);
    long_jid[2048] = '\0';
    r->jids[2] = long_jid;
    assert_false(dk_sid(sid, &r->dctx, 3, r->jids, (rows)r->c, (rows)r->R));
    assert_memory_equal(sid, before, 32);
    end_run(r);
}

/* A revealed k that does not open its commitment names its member. */
static void test_combine_commitment(void **state)
{
    (void)state;
    run *r = start_run(5);
    unsigned char k_prime[32], T_prime[5][32];
    size_t bad;
    round2(r);
    for (size_t i = 1; i < r->n; i++) {
        unsigned char keep[32];
        memcpy(keep, r->k[i], 32);
        r->k[i][i] ^= 0x01;
        memset(k_prime, 0xaa, sizeof k_prime);
        bad = 99;
        assert_int_equal(combine(r, k_prime, T_prime, &bad), DK_COMBINE_COMMITMENT);
        assert_int_equal(bad, i);
        assert_true(sodium_is_zero(k_prime, sizeof k_prime));
        memcpy(r->k[i], keep, 32);
    }
    /* Right k, other member's name: the commitment binds the JID. */
    r->jids[3] = r->jid[4];
    assert_int_equal(combine(r, k_prime, T_prime, &bad), DK_COMBINE_COMMITMENT);
    assert_int_equal(bad, 3);
    r->jids[3] = r->jid[3];
    /* A k of the same member from another run does not open this one. */
    run *old = start_run(5);
    round2(old);
    memcpy(r->k[2], old->k[2], 32);
    assert_int_equal(combine(r, k_prime, T_prime, &bad), DK_COMBINE_COMMITMENT);
    assert_int_equal(bad, 2);
    end_run(old);
    end_run(r);
}

/* T's that do not cancel: no k' and no T'_i come out. */
static void test_combine_ring(void **state)
{
    (void)state;
    run *r = start_run(4);
    unsigned char k_prime[32], T_prime[4][32], T_before[4][32];
    size_t bad = 99;
    round2(r);
    for (size_t i = 0; i < r->n; i++) {
        r->T[i][31 - i] ^= 0x08;
        memset(k_prime, 0xaa, sizeof k_prime);
        memset(T_prime, 0x55, sizeof T_prime);
        memcpy(T_before, T_prime, sizeof T_prime);
        assert_int_equal(combine(r, k_prime, T_prime, &bad), DK_COMBINE_RING);
        assert_true(sodium_is_zero(k_prime, sizeof k_prime));
        assert_memory_equal(T_prime, T_before, sizeof T_prime);
        r->T[i][31 - i] ^= 0x08;
    }
    /* Restored, the ring closes again. */
    assert_int_equal(combine(r, k_prime, T_prime, &bad), DK_COMBINE_OK);
    end_run(r);
}

static void test_combine_invalid(void **state)
{
    (void)state;
    run *r = start_run(3);
    unsigned char k_prime[32], T_prime[3][32];
    dk_ctx empty = {.len = 0};
    size_t bad;
    round2(r);
    const unsigned char(*c)[32] = (rows)r->c, (*T)[32] = (rows)r->T, (*k)[32] = (rows)r->k;
    assert_int_equal(dk_combine(k_prime, T_prime, &bad, &r->dctx, 1, r->jids, c, T, k, r->k_server),
                     DK_COMBINE_INVALID);
    assert_int_equal(dk_combine(k_prime, T_prime, &bad, &r->dctx, 0, r->jids, c, T, k, r->k_server),
                     DK_COMBINE_INVALID);
    assert_int_equal(dk_combine(NULL, T_prime, &bad, &r->dctx, 3, r->jids, c, T, k, r->k_server),
                     DK_COMBINE_INVALID);
    assert_int_equal(dk_combine(k_prime, NULL, &bad, &r->dctx, 3, r->jids, c, T, k, r->k_server),
                     DK_COMBINE_INVALID);
    assert_int_equal(dk_combine(k_prime, T_prime, NULL, &r->dctx, 3, r->jids, c, T, k, r->k_server),
                     DK_COMBINE_INVALID);
    assert_int_equal(dk_combine(k_prime, T_prime, &bad, NULL, 3, r->jids, c, T, k, r->k_server),
                     DK_COMBINE_INVALID);
    assert_int_equal(dk_combine(k_prime, T_prime, &bad, &empty, 3, r->jids, c, T, k, r->k_server),
                     DK_COMBINE_INVALID);
    assert_int_equal(dk_combine(k_prime, T_prime, &bad, &r->dctx, 3, NULL, c, T, k, r->k_server),
                     DK_COMBINE_INVALID);
    assert_int_equal(
        dk_combine(k_prime, T_prime, &bad, &r->dctx, 3, r->jids, NULL, T, k, r->k_server),
        DK_COMBINE_INVALID);
    assert_int_equal(
        dk_combine(k_prime, T_prime, &bad, &r->dctx, 3, r->jids, c, NULL, k, r->k_server),
        DK_COMBINE_INVALID);
    assert_int_equal(
        dk_combine(k_prime, T_prime, &bad, &r->dctx, 3, r->jids, c, T, NULL, r->k_server),
        DK_COMBINE_INVALID);
    assert_int_equal(dk_combine(k_prime, T_prime, &bad, &r->dctx, 3, r->jids, c, T, k, NULL),
                     DK_COMBINE_INVALID);
    r->jids[2] = NULL;
    assert_int_equal(combine(r, k_prime, T_prime, &bad), DK_COMBINE_INVALID);
    r->jids[2] = "";
    assert_int_equal(combine(r, k_prime, T_prime, &bad), DK_COMBINE_INVALID);
    assert_true(sodium_is_zero(k_prime, sizeof k_prime));
    r->jids[2] = r->jid[2];
    assert_int_equal(combine(r, k_prime, T_prime, &bad), DK_COMBINE_OK);
    end_run(r);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctx_bytes),
        cmocka_unit_test(test_run_2),
        cmocka_unit_test(test_run_3),
        cmocka_unit_test(test_run_10),
        cmocka_unit_test(test_round1_invalid_point),
        cmocka_unit_test(test_round_bad_args),
        cmocka_unit_test(test_sid_bad_args),
        cmocka_unit_test(test_combine_commitment),
        cmocka_unit_test(test_combine_ring),
        cmocka_unit_test(test_combine_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
