/* End-to-end encryption client-cost benchmark (issue 3, item 9): what the
 * e2e core (libclient/src/e2e/) costs a client per message, per envelope,
 * per header and per epoch, each figure beside the bare libsodium primitive
 * it is built on, measured in the same run. Every repetition runs every
 * block once (A B A B ...; the order flips on odd repetitions so neither
 * side always runs first), one warm-up repetition is discarded, and the
 * figures are medians over the repetitions. Output follows shared/BENCH.md:
 * machine, versions and parameters, a readable table, then RESULT lines and
 * the VERDICT line. The issue sets no numeric targets here, so every target
 * is "-" and the verdict counts 0/0.
 *
 *   bench_e2e            the full run (tests/bench/run-e2e.sh builds Release
 *                        and runs this)
 *   bench_e2e --quick    few iterations: the ctest smoke run, not timed
 *
 * Every timed call's result is checked, and outside the timed loops the
 * outputs are checked to round-trip, so a broken core fails the run instead
 * of timing an error path. Exit status: 0 when everything ran and checked,
 * 1 on any failure, 2 on bad usage. */
#include <getopt.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "e2e/archive.h"
#include "e2e/common.h"
#include "e2e/envelope.h"
#include "e2e/epoch.h"
#include "e2e/identity.h"
#include "e2e/message.h"

#ifndef BENCH_BUILD_TYPE
#define BENCH_BUILD_TYPE ""
#endif
#ifndef BENCH_SANITIZE
#define BENCH_SANITIZE 0
#endif

#define REPS_MAX 101
#define N_SIZES 2
#define N_GROUPS 3
#define MAX_MEMBERS 1000
#define BODY_MAX 4096

static const size_t body_sizes[N_SIZES] = {200, 4096};
static const char *const size_names[N_SIZES] = {"200b", "4kib"};
static const size_t group_sizes[N_GROUPS] = {10, 100, 1000};

#define ROOM "bench@rooms.example.org"
#define SENDER "alice@example.org"
/* An XEP-0359 origin-id is a UUID in practice; its length enters the AD. */
#define MESSAGE_ID "5f1d3c0e-9a57-4b1e-8f6a-2c4d9e7b1a30"
#define ROSTER_VERSION 42

/* Every timed figure; each holds one sample (ns per operation) per
 * repetition. */
enum {
    F_SEAL, F_AEAD_ENC, F_SIGN, F_OPEN, F_AEAD_DEC, F_VERIFY, /* per size */
    F_MSG_PER_SIZE
};
enum {
    F_MSG_BASE = 0,
    F_ENV_SEAL = F_MSG_BASE + F_MSG_PER_SIZE * N_SIZES, /* per group, ns per round */
    F_BOX_SEAL = F_ENV_SEAL + N_GROUPS,                 /* per group, ns per round */
    F_ENV_OPEN = F_BOX_SEAL + N_GROUPS,
    F_BOX_OPEN,
    F_WRAP,
    F_UNWRAP,
    F_REKEY,
    F_SCALARMULT,
    F_EPOCH,
    F_COUNT
};

#define F_MSG(size_idx, what) (F_MSG_BASE + (size_idx) * F_MSG_PER_SIZE + (what))

struct member {
    char jid[48];
    unsigned char box_pk[32];
};

struct bench {
    /* parameters */
    int reps;
    size_t msg_iters, env_target, point_iters, epoch_iters;

    /* message state; cur selects the body size */
    size_t cur;
    sr_e2e_identity *sender;
    unsigned char datakey[SR_E2E_POINT_BYTES];
    unsigned char datakey_id[SR_E2E_DATAKEY_ID_BYTES];
    sr_e2e_msg_meta meta;
    unsigned char body[BODY_MAX];
    unsigned char sealed_out[BODY_MAX + SR_E2E_MSG_OVERHEAD];
    unsigned char sealed[N_SIZES][BODY_MAX + SR_E2E_MSG_OVERHEAD];
    size_t sealed_len[N_SIZES];
    unsigned char opened[BODY_MAX];
    unsigned char aead_key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    unsigned char aead_nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    unsigned char aead_ref_nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    unsigned char aead_out[BODY_MAX + crypto_aead_xchacha20poly1305_ietf_ABYTES];
    unsigned char aead_ct[N_SIZES][BODY_MAX + crypto_aead_xchacha20poly1305_ietf_ABYTES];
    unsigned long long aead_ct_len[N_SIZES];
    unsigned char digest[64]; /* stands in for the 64-byte transcript T */
    unsigned char digest_sig[SR_E2E_SIG_BYTES];
    unsigned char sig_out[SR_E2E_SIG_BYTES];

    /* envelope state; members[0] is the one whose envelope is opened */
    struct member *members;
    sr_e2e_identity recipient0;
    size_t group_n;
    unsigned char epoch_secret[SR_E2E_EPOCH_SECRET_BYTES];
    unsigned char roster_hash[SR_E2E_ROSTER_HASH_BYTES];
    sr_e2e_envelope_ctx env_ctx;
    unsigned char env_out[SR_E2E_ENVELOPE_BYTES];
    unsigned char env_ref[SR_E2E_ENVELOPE_BYTES];
    unsigned char box_out[SR_E2E_ENVELOPE_BOX_BYTES];
    unsigned char box_ref[SR_E2E_ENVELOPE_BOX_BYTES];
    unsigned char secret_out[SR_E2E_EPOCH_SECRET_BYTES];

    /* header and epoch state */
    sr_e2e_epoch_keys ek, fk;
    unsigned char delta[SR_E2E_SCALAR_BYTES];
    unsigned char header[SR_E2E_POINT_BYTES];
    unsigned char point_out[SR_E2E_POINT_BYTES];

    double samples[F_COUNT][REPS_MAX];
};

typedef int (*bench_op)(struct bench *b, size_t i);

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "bench_e2e: %s failed: %s (%d)\n", what, sr_e2e_strerror(rc), rc);
    return -1;
}

/* ---- the timed operations (one call each; i is the iteration) ---- */

static int op_seal(struct bench *b, size_t i)
{
    size_t len = 0;
    int rc = sr_e2e_message_seal(b->sealed_out, sizeof b->sealed_out, &len, b->body,
                                 body_sizes[b->cur], &b->meta, b->datakey, b->sender->sign_sk);

    return rc == SR_E2E_OK ? 0 : fail("sr_e2e_message_seal", rc);
}

/* The baseline gets a fresh nonce per message as any real use must;
 * incrementing costs nanoseconds, drawing a random one would add a
 * getrandom call the seal pays and the bare cipher does not have to. */
static int op_aead_enc(struct bench *b, size_t i)
{
    unsigned long long len = 0;

    sodium_increment(b->aead_nonce, sizeof b->aead_nonce);
    if (crypto_aead_xchacha20poly1305_ietf_encrypt(b->aead_out, &len, b->body, body_sizes[b->cur],
                                                   NULL, 0, NULL, b->aead_nonce, b->aead_key) != 0)
        return fail("crypto_aead_xchacha20poly1305_ietf_encrypt", SR_E2E_ERR_INVALID);
    return 0;
}

static int op_sign(struct bench *b, size_t i)
{
    if (crypto_sign_detached(b->sig_out, NULL, b->digest, sizeof b->digest, b->sender->sign_sk) != 0)
        return fail("crypto_sign_detached", SR_E2E_ERR_INVALID);
    return 0;
}

/* What a receiver does with a payload: parse, then open (which verifies the
 * signature before it decrypts). */
static int op_open(struct bench *b, size_t i)
{
    sr_e2e_sealed_view v;
    size_t len = 0;
    int rc = sr_e2e_message_parse(&v, b->sealed[b->cur], b->sealed_len[b->cur]);

    if (rc != SR_E2E_OK)
        return fail("sr_e2e_message_parse", rc);
    rc = sr_e2e_message_open(b->opened, sizeof b->opened, &len, &v, ROOM, SENDER, MESSAGE_ID,
                             b->sender->sign_pk, b->datakey);
    if (rc != SR_E2E_OK)
        return fail("sr_e2e_message_open", rc);
    return len == body_sizes[b->cur] ? 0 : fail("sr_e2e_message_open length", SR_E2E_ERR_MISMATCH);
}

static int op_aead_dec(struct bench *b, size_t i)
{
    unsigned long long len = 0;

    if (crypto_aead_xchacha20poly1305_ietf_decrypt(b->opened, &len, NULL, b->aead_ct[b->cur],
                                                   b->aead_ct_len[b->cur], NULL, 0,
                                                   b->aead_ref_nonce, b->aead_key) != 0 ||
        len != body_sizes[b->cur])
        return fail("crypto_aead_xchacha20poly1305_ietf_decrypt", SR_E2E_ERR_DECRYPT);
    return 0;
}

static int op_verify(struct bench *b, size_t i)
{
    if (crypto_sign_verify_detached(b->digest_sig, b->digest, sizeof b->digest,
                                    b->sender->sign_pk) != 0)
        return fail("crypto_sign_verify_detached", SR_E2E_ERR_SIGNATURE);
    return 0;
}

/* One envelope to member i mod (n - 1), so group_n - 1 iterations are one
 * sealer's whole epoch change. */
static int op_env_seal(struct bench *b, size_t i)
{
    const struct member *m = &b->members[i % (b->group_n - 1)];
    sr_e2e_envelope_ctx ctx = b->env_ctx;
    int rc;

    ctx.recipient = m->jid;
    ctx.recipient_box_pk = m->box_pk;
    rc = sr_e2e_envelope_seal(b->env_out, &ctx, b->epoch_secret, b->sender->sign_sk);
    return rc == SR_E2E_OK ? 0 : fail("sr_e2e_envelope_seal", rc);
}

static int op_box_seal(struct bench *b, size_t i)
{
    const struct member *m = &b->members[i % (b->group_n - 1)];

    if (crypto_box_seal(b->box_out, b->epoch_secret, sizeof b->epoch_secret, m->box_pk) != 0)
        return fail("crypto_box_seal", SR_E2E_ERR_INVALID);
    return 0;
}

static int op_env_open(struct bench *b, size_t i)
{
    int rc = sr_e2e_envelope_open(b->secret_out, b->env_ref, sizeof b->env_ref, &b->env_ctx,
                                  b->sender->sign_pk, b->recipient0.box_sk);

    return rc == SR_E2E_OK ? 0 : fail("sr_e2e_envelope_open", rc);
}

static int op_box_open(struct bench *b, size_t i)
{
    if (crypto_box_seal_open(b->secret_out, b->box_ref, sizeof b->box_ref, b->recipient0.box_pk,
                             b->recipient0.box_sk) != 0)
        return fail("crypto_box_seal_open", SR_E2E_ERR_DECRYPT);
    return 0;
}

static int op_wrap(struct bench *b, size_t i)
{
    int rc = sr_e2e_header_wrap(b->point_out, b->ek.k, b->datakey);

    return rc == SR_E2E_OK ? 0 : fail("sr_e2e_header_wrap", rc);
}

static int op_unwrap(struct bench *b, size_t i)
{
    int rc = sr_e2e_header_unwrap(b->point_out, b->ek.k, b->header);

    return rc == SR_E2E_OK ? 0 : fail("sr_e2e_header_unwrap", rc);
}

static int op_rekey(struct bench *b, size_t i)
{
    int rc = sr_e2e_header_rekey(b->point_out, b->delta, b->header);

    return rc == SR_E2E_OK ? 0 : fail("sr_e2e_header_rekey", rc);
}

static int op_scalarmult(struct bench *b, size_t i)
{
    if (crypto_scalarmult_ristretto255(b->point_out, b->ek.k, b->datakey) != 0)
        return fail("crypto_scalarmult_ristretto255", SR_E2E_ERR_POINT);
    return 0;
}

/* A different epoch number each time, as successive epochs are. */
static int op_epoch(struct bench *b, size_t i)
{
    sr_e2e_epoch_keys k;
    int rc = sr_e2e_epoch_derive(&k, b->epoch_secret, ROOM, 1000 + i, b->roster_hash);

    sodium_memzero(&k, sizeof k);
    return rc == SR_E2E_OK ? 0 : fail("sr_e2e_epoch_derive", rc);
}

/* ns per operation over iters calls, into *out. */
static int time_op(double *out, bench_op op, struct bench *b, size_t iters)
{
    uint64_t t0 = now_ns();

    for (size_t i = 0; i < iters; i++)
        if (op(b, i) != 0)
            return -1;
    *out = (double)(now_ns() - t0) / (double)iters;
    return 0;
}

/* ---- setup and round-trip checks (outside the timed loops) ---- */

static int setup(struct bench *b)
{
    unsigned char root[SR_E2E_ROOT_BYTES];
    sr_e2e_identity tmp;
    sr_e2e_sealed_view v;
    size_t len = 0;
    int rc;

    if ((rc = sr_e2e_identity_generate(&b->sender)) != SR_E2E_OK)
        return fail("sr_e2e_identity_generate", rc);
    if ((rc = sr_e2e_datakey_random(b->datakey)) != SR_E2E_OK)
        return fail("sr_e2e_datakey_random", rc);
    sr_e2e_datakey_id_random(b->datakey_id);
    b->meta = (sr_e2e_msg_meta){.room = ROOM, .sender = SENDER, .message_id = MESSAGE_ID,
                                .datakey_id = b->datakey_id, .roster_version = ROSTER_VERSION};
    randombytes_buf(b->body, sizeof b->body);
    crypto_aead_xchacha20poly1305_ietf_keygen(b->aead_key);
    randombytes_buf(b->aead_nonce, sizeof b->aead_nonce);
    randombytes_buf(b->aead_ref_nonce, sizeof b->aead_ref_nonce);
    randombytes_buf(b->digest, sizeof b->digest);
    if (crypto_sign_detached(b->digest_sig, NULL, b->digest, sizeof b->digest, b->sender->sign_sk) != 0)
        return fail("crypto_sign_detached", SR_E2E_ERR_INVALID);

    for (size_t s = 0; s < N_SIZES; s++) {
        if ((rc = sr_e2e_message_seal(b->sealed[s], sizeof b->sealed[s], &b->sealed_len[s], b->body,
                                      body_sizes[s], &b->meta, b->datakey, b->sender->sign_sk)) !=
            SR_E2E_OK)
            return fail("sr_e2e_message_seal", rc);
        if (b->sealed_len[s] != body_sizes[s] + SR_E2E_MSG_OVERHEAD)
            return fail("sealed length", SR_E2E_ERR_MISMATCH);
        if ((rc = sr_e2e_message_parse(&v, b->sealed[s], b->sealed_len[s])) != SR_E2E_OK ||
            (rc = sr_e2e_message_open(b->opened, sizeof b->opened, &len, &v, ROOM, SENDER,
                                      MESSAGE_ID, b->sender->sign_pk, b->datakey)) != SR_E2E_OK)
            return fail("message round trip", rc);
        if (len != body_sizes[s] || memcmp(b->opened, b->body, len) != 0)
            return fail("message round trip content", SR_E2E_ERR_MISMATCH);
        if (crypto_aead_xchacha20poly1305_ietf_encrypt(b->aead_ct[s], &b->aead_ct_len[s], b->body,
                                                       body_sizes[s], NULL, 0, NULL,
                                                       b->aead_ref_nonce, b->aead_key) != 0)
            return fail("crypto_aead_xchacha20poly1305_ietf_encrypt", SR_E2E_ERR_INVALID);
    }

    b->members = calloc(MAX_MEMBERS, sizeof *b->members);
    if (!b->members)
        return fail("calloc", SR_E2E_ERR_NOMEM);
    for (size_t m = 0; m < MAX_MEMBERS; m++) {
        randombytes_buf(root, sizeof root);
        rc = sr_e2e_identity_derive(&tmp, root);
        sodium_memzero(root, sizeof root);
        if (rc != SR_E2E_OK) {
            sodium_memzero(&tmp, sizeof tmp);
            return fail("sr_e2e_identity_derive", rc);
        }
        snprintf(b->members[m].jid, sizeof b->members[m].jid, "member%04zu@example.org", m);
        memcpy(b->members[m].box_pk, tmp.box_pk, sizeof tmp.box_pk);
        if (m == 0)
            b->recipient0 = tmp;
        sodium_memzero(&tmp, sizeof tmp);
    }

    randombytes_buf(b->epoch_secret, sizeof b->epoch_secret);
    randombytes_buf(b->roster_hash, sizeof b->roster_hash);
    b->env_ctx = (sr_e2e_envelope_ctx){.room = ROOM, .epoch = 7, .roster_hash = b->roster_hash,
                                       .sealer = SENDER, .recipient = b->members[0].jid,
                                       .recipient_box_pk = b->members[0].box_pk};
    if ((rc = sr_e2e_envelope_seal(b->env_ref, &b->env_ctx, b->epoch_secret, b->sender->sign_sk)) !=
            SR_E2E_OK ||
        (rc = sr_e2e_envelope_open(b->secret_out, b->env_ref, sizeof b->env_ref, &b->env_ctx,
                                   b->sender->sign_pk, b->recipient0.box_sk)) != SR_E2E_OK)
        return fail("envelope round trip", rc);
    if (sodium_memcmp(b->secret_out, b->epoch_secret, sizeof b->epoch_secret) != 0)
        return fail("envelope round trip content", SR_E2E_ERR_MISMATCH);
    if (crypto_box_seal(b->box_ref, b->epoch_secret, sizeof b->epoch_secret,
                        b->recipient0.box_pk) != 0)
        return fail("crypto_box_seal", SR_E2E_ERR_INVALID);

    if ((rc = sr_e2e_epoch_derive(&b->ek, b->epoch_secret, ROOM, 7, b->roster_hash)) != SR_E2E_OK ||
        (rc = sr_e2e_epoch_derive(&b->fk, b->epoch_secret, ROOM, 8, b->roster_hash)) != SR_E2E_OK ||
        (rc = sr_e2e_token_make(b->delta, b->ek.k, b->fk.k)) != SR_E2E_OK ||
        (rc = sr_e2e_header_wrap(b->header, b->ek.k, b->datakey)) != SR_E2E_OK)
        return fail("epoch keys and header", rc);
    if ((rc = sr_e2e_header_unwrap(b->point_out, b->ek.k, b->header)) != SR_E2E_OK)
        return fail("sr_e2e_header_unwrap", rc);
    if (sodium_memcmp(b->point_out, b->datakey, sizeof b->datakey) != 0)
        return fail("header round trip", SR_E2E_ERR_MISMATCH);
    /* The re-keyed header must unwrap under the next epoch's scalar. */
    if ((rc = sr_e2e_header_rekey(b->point_out, b->delta, b->header)) != SR_E2E_OK ||
        (rc = sr_e2e_header_unwrap(b->point_out, b->fk.k, b->point_out)) != SR_E2E_OK)
        return fail("header re-key", rc);
    if (sodium_memcmp(b->point_out, b->datakey, sizeof b->datakey) != 0)
        return fail("header re-key round trip", SR_E2E_ERR_MISMATCH);
    return 0;
}

static void teardown(struct bench *b)
{
    sr_e2e_identity_free(b->sender);
    b->sender = NULL;
    free(b->members);
    b->members = NULL;
    sodium_memzero(&b->recipient0, sizeof b->recipient0);
    sodium_memzero(b->datakey, sizeof b->datakey);
    sodium_memzero(b->aead_key, sizeof b->aead_key);
    sodium_memzero(b->epoch_secret, sizeof b->epoch_secret);
    sodium_memzero(b->secret_out, sizeof b->secret_out);
    sodium_memzero(&b->ek, sizeof b->ek);
    sodium_memzero(&b->fk, sizeof b->fk);
    sodium_memzero(b->delta, sizeof b->delta);
    sodium_memzero(b->point_out, sizeof b->point_out);
    sodium_memzero(b->opened, sizeof b->opened);
}

/* ---- one repetition: every block once ---- */

struct block {
    int fig;
    bench_op op;
    size_t iters;
    size_t cur;     /* body size index, for message blocks */
    size_t group_n; /* members, for envelope-sealing blocks */
    double scale;   /* stored sample = ns per op * scale */
};

static size_t build_blocks(struct block *bl, const struct bench *b)
{
    size_t n = 0;

    for (size_t s = 0; s < N_SIZES; s++) {
        static const bench_op ops[F_MSG_PER_SIZE] = {op_seal, op_aead_enc, op_sign,
                                                     op_open, op_aead_dec, op_verify};
        for (int w = 0; w < F_MSG_PER_SIZE; w++)
            bl[n++] = (struct block){F_MSG(s, w), ops[w], b->msg_iters, s, 0, 1.0};
    }
    for (size_t g = 0; g < N_GROUPS; g++) {
        size_t per_round = group_sizes[g] - 1;
        size_t rounds = (b->env_target + per_round - 1) / per_round;

        /* Whole rounds only, so a sample is exactly rounds × (n − 1) seals;
         * stored as ns per round (one sealer's whole epoch change). */
        bl[n++] = (struct block){F_ENV_SEAL + (int)g, op_env_seal, rounds * per_round, 0,
                                 group_sizes[g], (double)per_round};
        bl[n++] = (struct block){F_BOX_SEAL + (int)g, op_box_seal, rounds * per_round, 0,
                                 group_sizes[g], (double)per_round};
    }
    bl[n++] = (struct block){F_ENV_OPEN, op_env_open, b->msg_iters, 0, 0, 1.0};
    bl[n++] = (struct block){F_BOX_OPEN, op_box_open, b->msg_iters, 0, 0, 1.0};
    bl[n++] = (struct block){F_WRAP, op_wrap, b->point_iters, 0, 0, 1.0};
    bl[n++] = (struct block){F_SCALARMULT, op_scalarmult, b->point_iters, 0, 0, 1.0};
    bl[n++] = (struct block){F_UNWRAP, op_unwrap, b->point_iters, 0, 0, 1.0};
    bl[n++] = (struct block){F_REKEY, op_rekey, b->point_iters, 0, 0, 1.0};
    bl[n++] = (struct block){F_EPOCH, op_epoch, b->epoch_iters, 0, 0, 1.0};
    return n;
}

/* rep < 0 is the warm-up: run, discard. Odd repetitions run the blocks in
 * reverse so that each pair's order alternates. */
static int run_rep(struct bench *b, const struct block *bl, size_t nbl, int rep)
{
    for (size_t k = 0; k < nbl; k++) {
        const struct block *x = &bl[(rep > 0 && rep % 2) ? nbl - 1 - k : k];
        double ns = 0;

        b->cur = x->cur;
        b->group_n = x->group_n;
        if (time_op(&ns, x->op, b, x->iters) != 0)
            return -1;
        if (rep >= 0)
            b->samples[x->fig][rep] = ns * x->scale;
    }
    return 0;
}

/* ---- reporting ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

struct stat3 {
    double med, min, max;
};

static struct stat3 stats(const struct bench *b, int fig)
{
    double v[REPS_MAX];
    int n = b->reps;

    memcpy(v, b->samples[fig], (size_t)n * sizeof v[0]);
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return (struct stat3){n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2, v[0], v[n - 1]};
}

static double med_us(const struct bench *b, int fig)
{
    return stats(b, fig).med / 1e3;
}

static void result(const char *name, double value, const char *unit, const char *base_name,
                   double base, int decimals)
{
    printf("RESULT %s %.*f %s baseline %s %.*f %s ratio %.3f target -\n", name, decimals, value,
           unit, base_name, decimals, base, unit, value / base);
}

static void print_machine(const struct bench *b, bool quick)
{
    char line[256], model[256] = "unknown", load[128] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");

    if (f) {
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "model name", 10) == 0) {
                const char *c = strchr(line, ':');
                if (c) {
                    snprintf(model, sizeof model, "%s", c + 2);
                    model[strcspn(model, "\n")] = '\0';
                }
                break;
            }
        fclose(f);
    }
    f = fopen("/proc/loadavg", "r");
    if (f) {
        double l1, l5, l15;
        if (fscanf(f, "%lf %lf %lf", &l1, &l5, &l15) == 3)
            snprintf(load, sizeof load, "%.2f %.2f %.2f", l1, l5, l15);
        fclose(f);
    }
    printf("# bench_e2e: client cost of end-to-end encryption (issue 3, item 9)\n");
    printf("machine: %ld cores, %s; load average (1/5/15 min) at start %s\n", sysconf(_SC_NPROCESSORS_ONLN),
           model, load);
    printf("libsodium: %s (runtime), built against %s\n", sodium_version_string(),
           SODIUM_VERSION_STRING);
    printf("build: %s%s\n", BENCH_BUILD_TYPE[0] ? BENCH_BUILD_TYPE : "(no CMAKE_BUILD_TYPE)",
           BENCH_SANITIZE ? ", ASan+UBSan (figures not representative)" : "");
    printf("parameters: %s run; %d repetitions + 1 warm-up (discarded), every block once per "
           "repetition, order reversed on odd repetitions (A B A B), medians [min..max]\n",
           quick ? "QUICK (smoke, not a measurement)" : "full", b->reps);
    printf("parameters: messages: bodies 200 and 4096 bytes, %zu calls per block; room JID %zu B, "
           "sender JID %zu B, message id %zu B\n",
           b->msg_iters, strlen(ROOM), strlen(SENDER), strlen(MESSAGE_ID));
    printf("parameters: envelopes: groups of 10, 100, 1000 members, one sealer sealing S_e to the "
           "n-1 others, whole rounds of at least %zu envelopes per block; open: %zu calls per "
           "block\n",
           b->env_target, b->msg_iters);
    printf("parameters: headers: %zu calls per block; epoch derivation: %zu calls per block\n",
           b->point_iters, b->epoch_iters);
    printf("baselines: seal vs crypto_aead_xchacha20poly1305_ietf_encrypt, parse+open vs _decrypt "
           "(same body, no AD); Ed25519 sign/verify of a 64-byte digest (the size of the signed "
           "transcript T); envelopes vs crypto_box_seal/_open of the 32-byte S_e to the same "
           "keys; headers vs crypto_scalarmult_ristretto255\n");
}

static void report(const struct bench *b)
{
    printf("\nper message, microseconds (median [min..max])\n");
    for (size_t s = 0; s < N_SIZES; s++) {
        static const char *const what[F_MSG_PER_SIZE] = {
            "seal (encrypt + sign)", "bare xchacha20poly1305 encrypt", "ed25519 sign, 64 B",
            "parse + open (verify + decrypt)", "bare xchacha20poly1305 decrypt",
            "ed25519 verify, 64 B"};
        printf("  body %zu B\n", body_sizes[s]);
        for (int w = 0; w < F_MSG_PER_SIZE; w++) {
            struct stat3 st = stats(b, F_MSG(s, w));
            printf("    %-34s %9.2f [%.2f..%.2f]\n", what[w], st.med / 1e3, st.min / 1e3,
                   st.max / 1e3);
        }
    }
    printf("\nenvelopes (one sealer, n-1 recipients), milliseconds per epoch change\n");
    for (size_t g = 0; g < N_GROUPS; g++) {
        struct stat3 e = stats(b, F_ENV_SEAL + (int)g), x = stats(b, F_BOX_SEAL + (int)g);
        printf("  n=%-5zu sr_e2e_envelope_seal %9.3f [%.3f..%.3f]   bare crypto_box_seal %9.3f "
               "[%.3f..%.3f]\n",
               group_sizes[g], e.med / 1e6, e.min / 1e6, e.max / 1e6, x.med / 1e6, x.min / 1e6,
               x.max / 1e6);
    }
    printf("\nsignature share of the per-message cost\n");
    for (size_t s = 0; s < N_SIZES; s++) {
        double seal = med_us(b, F_MSG(s, F_SEAL)), sign = med_us(b, F_MSG(s, F_SIGN));
        double open = med_us(b, F_MSG(s, F_OPEN)), ver = med_us(b, F_MSG(s, F_VERIFY));
        double ss = sign / seal, vs = ver / open;
        printf("  %zu B: Ed25519 sign is %.0f%% of seal (%s); Ed25519 verify is %.0f%% of "
               "parse+open (%s)\n",
               body_sizes[s], 100 * ss, ss > 0.5 ? "dominates" : "does NOT dominate", 100 * vs,
               vs > 0.5 ? "dominates" : "does NOT dominate");
    }
    printf("(\"dominates\" = more than half of the median per-message cost)\n\n");

    char name[96];
    for (size_t s = 0; s < N_SIZES; s++) {
        snprintf(name, sizeof name, "e2e.seal.%s.us_per_msg", size_names[s]);
        result(name, med_us(b, F_MSG(s, F_SEAL)), "us", "xchacha20poly1305.encrypt",
               med_us(b, F_MSG(s, F_AEAD_ENC)), 2);
        snprintf(name, sizeof name, "e2e.open.%s.us_per_msg", size_names[s]);
        result(name, med_us(b, F_MSG(s, F_OPEN)), "us", "xchacha20poly1305.decrypt",
               med_us(b, F_MSG(s, F_AEAD_DEC)), 2);
    }
    for (size_t s = 0; s < N_SIZES; s++) {
        char base[64];
        snprintf(name, sizeof name, "e2e.seal.%s.ed25519_sign.us_per_msg", size_names[s]);
        snprintf(base, sizeof base, "e2e.seal.%s", size_names[s]);
        result(name, med_us(b, F_MSG(s, F_SIGN)), "us", base, med_us(b, F_MSG(s, F_SEAL)), 2);
        snprintf(name, sizeof name, "e2e.open.%s.ed25519_verify.us_per_msg", size_names[s]);
        snprintf(base, sizeof base, "e2e.open.%s", size_names[s]);
        result(name, med_us(b, F_MSG(s, F_VERIFY)), "us", base, med_us(b, F_MSG(s, F_OPEN)), 2);
    }
    for (size_t g = 0; g < N_GROUPS; g++) {
        double per_round = (double)(group_sizes[g] - 1);
        double env = stats(b, F_ENV_SEAL + (int)g).med, box = stats(b, F_BOX_SEAL + (int)g).med;

        snprintf(name, sizeof name, "e2e.envelope.seal.n%zu.ms", group_sizes[g]);
        result(name, env / 1e6, "ms", "crypto_box_seal", box / 1e6, 3);
        snprintf(name, sizeof name, "e2e.envelope.seal.n%zu.us_per_envelope", group_sizes[g]);
        result(name, env / per_round / 1e3, "us", "crypto_box_seal", box / per_round / 1e3, 2);
    }
    result("e2e.envelope.open.us", med_us(b, F_ENV_OPEN), "us", "crypto_box_seal_open",
           med_us(b, F_BOX_OPEN), 2);
    result("e2e.header.wrap.us", med_us(b, F_WRAP), "us", "ristretto255.scalarmult",
           med_us(b, F_SCALARMULT), 2);
    result("e2e.header.unwrap.us", med_us(b, F_UNWRAP), "us", "ristretto255.scalarmult",
           med_us(b, F_SCALARMULT), 2);
    result("e2e.header.rekey.us", med_us(b, F_REKEY), "us", "ristretto255.scalarmult",
           med_us(b, F_SCALARMULT), 2);
    printf("RESULT e2e.epoch.derive.us %.2f us baseline none - - ratio - target -\n",
           med_us(b, F_EPOCH));
    printf("VERDICT met 0/0\n");
}

static int parse_count(const char *arg, size_t min, size_t max, size_t *out)
{
    char *end = NULL;
    unsigned long long v = strtoull(arg, &end, 10);

    if (!*arg || *end || v < min || v > max)
        return -1;
    *out = (size_t)v;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_e2e [--quick] [--reps N] [--iters N]\n"
               "  --quick     few iterations (smoke run; figures not meaningful)\n"
               "  --reps N    repetitions, odd preferred (default 11, quick 3; max %d)\n"
               "  --iters N   calls per message/open/header block (default 1000, quick 10);\n"
               "              envelope blocks seal at least N envelopes, epoch blocks 5N calls\n",
               REPS_MAX);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"quick", no_argument, NULL, 'q'},
                                         {"reps", required_argument, NULL, 'r'},
                                         {"iters", required_argument, NULL, 'i'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    static struct bench b; /* large (sample arrays, buffers): not on the stack */
    struct block blocks[F_COUNT];
    size_t reps = 0, iters = 0, nbl;
    bool quick = false;
    int c, status = 1;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'q':
            quick = true;
            break;
        case 'r':
            if (parse_count(optarg, 1, REPS_MAX, &reps) != 0) {
                usage(stderr);
                return 2;
            }
            break;
        case 'i':
            if (parse_count(optarg, 1, 1000000, &iters) != 0) {
                usage(stderr);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "bench_e2e: sodium_init failed\n");
        return 1;
    }
    b.reps = (int)(reps ? reps : quick ? 3 : 11);
    b.msg_iters = iters ? iters : quick ? 10 : 1000;
    b.env_target = b.msg_iters;
    b.point_iters = b.msg_iters;
    b.epoch_iters = 5 * b.msg_iters;

    if (setup(&b) != 0)
        goto out;
    print_machine(&b, quick);
    fflush(stdout);
    nbl = build_blocks(blocks, &b);
    for (int rep = -1; rep < b.reps; rep++)
        if (run_rep(&b, blocks, nbl, rep) != 0)
            goto out;
    report(&b);
    status = 0;
out:
    teardown(&b);
    return status;
}
