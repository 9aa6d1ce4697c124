/* Removal to readable through a real stack (issue 5 benchmark b, end to
 * end): Prosody, sealroomd and PostgreSQL as contrib/sealroom-dev starts
 * them. alice, bob and carol are members of one room, online with
 * libsealroom (they take part in key-distribution runs); the archive of
 * M messages from S senders, a data key per SR_DATAKEY_MAX_USES messages,
 * is seeded as its data-key headers (1,000 for the 1,000,000 and
 * 100) straight into PostgreSQL at the current epoch e, wrapped with the
 * room's real k_e. Repetitions of
 *   A  alice removes bob (sealroom_room_remove_member): the run makes
 *      epoch f, the epoch's maker sends its token, and carol — over a
 *      second, raw session — reads every header with <datakeys/> queries
 *      of 100 (all sent at once) until each comes back at f and exactly
 *      k_f·P; timed from the removal request, with the moments the request
 *      completed and the token was stored;
 *   B  the same reads with nothing pending (every header already at the
 *      current epoch): what reading the archive's keys costs anyway;
 * A B A B …; bob is added back between them (untimed, the sweep left to
 * finish). A removal's time includes sealroomd's wait before the run that
 * follows a membership change (dmkd.coalesce_ms, printed) and the run.
 * Medians; output in the shape of shared/BENCH.md. Target (the issue's):
 * removal to readable < 100 ms.
 *
 *   bench_archive_live [--reps R] [--messages M] [--senders S]
 *
 * Needs the dev stack's environment (see run-archive-live.sh). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "e2e/archive.h"
#include "e2e_common.h"
#include "internal.h"

#define TARGET_MS 100.0
#define WAIT_MS 120000u
#define REPS_MAX 51

static e2e_lib *alice, *bob, *carol;
static it_raw *reader;
static char room[256];
static char room_id[24];
static size_t nh;
static unsigned char (*dkid)[16], (*pk)[32];

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int k)
{
    double s[REPS_MAX];
    memcpy(s, v, (size_t)k * sizeof *s);
    qsort(s, (size_t)k, sizeof *s, cmp_double);
    return k % 2 ? s[k / 2] : (s[k / 2 - 1] + s[k / 2]) / 2;
}

static void pump(void)
{
    (void)sealroom_client_run(alice->l->client, 0);
    (void)sealroom_client_run(bob->l->client, 0);
    (void)sealroom_client_run(carol->l->client, 0);
}

static uint64_t epoch_of(e2e_lib *w)
{
    uint64_t e = 0;
    return sealroom_room_epoch(e2e_ctx(w), &e, room) == SEALROOM_OK ? e : 0;
}

static long long pg_count(const char *sql, const char *arg)
{
    const char *p[2] = {room_id, arg};
    PGresult *res = e2e_pg_exec(sql, arg ? 2 : 1, p, false);
    long long v = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

static bool token_stored(uint64_t from)
{
    char f[24];
    snprintf(f, sizeof f, "%llu", (unsigned long long)from);
    return pg_count("SELECT count(*) FROM archive_tokens WHERE room_id = $1 AND from_epoch = $2",
                    f) > 0;
}

static long long behind(uint64_t c)
{
    char ce[24];
    snprintf(ce, sizeof ce, "%llu", (unsigned long long)c);
    return pg_count("SELECT count(*) FROM datakeys WHERE room_id = $1 AND epoch < $2", ce);
}

/* k_e as w's ctx holds it, once it does (pumping the sessions). */
static void key_of(e2e_lib *w, uint64_t e, unsigned char k[32])
{
    double end = now_ms() + WAIT_MS;
    while (epoch_of(w) < e) {
        IT_CHECK(now_ms() < end, "%s never held epoch %llu", w->l->bare, (unsigned long long)e);
        pump();
    }
    e2e_secrets s = {0};
    e2e_secrets_collect(&s, e2e_ctx(w), w->l->bare);
    const e2e_secret *x = e2e_secrets_find(&s, w->l->bare, "epoch.k", room, e);
    IT_CHECK(x && x->len == 32, "%s holds no key for epoch %llu", w->l->bare,
             (unsigned long long)e);
    memcpy(k, x->bytes, 32);
    e2e_secrets_free(&s);
}

/* The archive: nh headers at epoch e from nsenders senders. */
static void seed(uint64_t e, size_t nsenders)
{
    unsigned char k[32];
    key_of(alice, e, k);
    size_t cap = nh * 70 + 16;
    char *adk = malloc(cap), *ah = malloc(cap), *as = malloc(nh * 32 + 16);
    IT_CHECK(adk && ah && as && dkid && pk, "out of memory");
    char *pd = adk, *ph = ah, *ps = as;
    *pd++ = *ph++ = *ps++ = '{';
    for (size_t i = 0; i < nh; i++) {
        unsigned char h[32];
        sr_e2e_datakey_id_random(dkid[i]);
        IT_CHECK(sr_e2e_datakey_random(pk[i]) == SR_E2E_OK &&
                     sr_e2e_header_wrap(h, k, pk[i]) == SR_E2E_OK,
                 "making data key %zu", i);
        if (i) *pd++ = *ph++ = *ps++ = ',';
        pd += sprintf(pd, "\\\\x");
        sodium_bin2hex(pd, 33, dkid[i], 16);
        pd += 32;
        ph += sprintf(ph, "\\\\x");
        sodium_bin2hex(ph, 65, h, 32);
        ph += 64;
        ps += sprintf(ps, "sender%03zu@bench.invalid", i % nsenders);
    }
    strcpy(pd, "}");
    strcpy(ph, "}");
    strcpy(ps, "}");
    char ep[24];
    snprintf(ep, sizeof ep, "%llu", (unsigned long long)e);
    const char *p[5] = {room_id, adk, ep, ah, as};
    PQclear(e2e_pg_exec("INSERT INTO datakeys(room_id, dkid, sender, epoch, created_epoch, header) "
                        "SELECT $1, d, s, $3, $3, h FROM unnest($2::bytea[], $4::bytea[], "
                        "$5::text[]) AS u(d, h, s)",
                        5, p, false));
    sodium_memzero(k, sizeof k);
    free(adk);
    free(ah);
    free(as);
}

/* carol's raw session reads every header: all queries sent, then every
 * answer collected. Each must be at epoch want_epoch; the headers are
 * returned in got (checked by the caller, outside the clock). */
static void read_all(uint64_t want_epoch, unsigned char (*got)[32])
{
    size_t nq = (nh + SR_DATAKEY_FETCH_MAX - 1) / SR_DATAKEY_FETCH_MAX;
    char(*ids)[40] = calloc(nq, sizeof *ids);
    char *xml = malloc(SR_DATAKEY_FETCH_MAX * 64 + 128);
    IT_CHECK(ids && xml, "out of memory");
    for (size_t q = 0; q < nq; q++) {
        size_t from = q * SR_DATAKEY_FETCH_MAX,
               to = from + SR_DATAKEY_FETCH_MAX < nh ? from + SR_DATAKEY_FETCH_MAX : nh;
        char *p = xml + sprintf(xml, "<datakeys xmlns='%s'>", IT_NS);
        for (size_t i = from; i < to; i++) {
            char *b = it_b64(dkid[i], 16);
            p += sprintf(p, "<datakey id='%s'/>", b);
            free(b);
        }
        strcpy(p, "</datakeys>");
        it_random_hex(ids[q], 8);
        it_raw_send(reader, "<iq type='get' to='%s' id='%s'>%s</iq>", room, ids[q], xml);
    }
    for (size_t q = 0; q < nq; q++) {
        xmpp_stanza_t *res = it_raw_expect(reader, it_match_id, ids[q], IT_TIMEOUT_MS, "datakeys");
        const char *type = xmpp_stanza_get_type(res);
        IT_CHECK(type && strcmp(type, "result") == 0, "datakeys query %zu refused", q);
        xmpp_stanza_t *list = xmpp_stanza_get_child_by_name(res, "datakeys");
        size_t seen = 0;
        for (xmpp_stanza_t *c = list ? xmpp_stanza_get_children(list) : NULL; c;
             c = xmpp_stanza_get_next(c)) {
            if (!xmpp_stanza_is_tag(c)) continue;
            const char *id = xmpp_stanza_get_attribute(c, "id"),
                       *ep = xmpp_stanza_get_attribute(c, "epoch");
            char *text = xmpp_stanza_get_text(c);
            unsigned char raw[16], h[32];
            size_t len = 0;
            IT_CHECK(id && ep && text &&
                         sodium_base642bin(raw, 16, id, strlen(id), NULL, &len, NULL,
                                           sodium_base64_VARIANT_ORIGINAL) == 0 &&
                         len == 16,
                     "a bad <datakey/> in answer %zu", q);
            IT_CHECK(strtoull(ep, NULL, 10) == want_epoch, "a header came at epoch %s, not %llu",
                     ep, (unsigned long long)want_epoch);
            IT_CHECK(sodium_base642bin(h, 32, text, strlen(text), NULL, &len, NULL,
                                       sodium_base64_VARIANT_ORIGINAL) == 0 &&
                         len == 32,
                     "a header that is not 32 bytes");
            xmpp_free(xmpp_stanza_get_context(c), text);
            size_t from = q * SR_DATAKEY_FETCH_MAX;
            bool placed = false;
            for (size_t i = from; i < from + SR_DATAKEY_FETCH_MAX && i < nh && !placed; i++)
                if (memcmp(dkid[i], raw, 16) == 0) {
                    memcpy(got[i], h, 32);
                    placed = true;
                }
            IT_CHECK(placed, "an answer named a data key not asked for");
            seen++;
        }
        size_t want = q + 1 < nq ? SR_DATAKEY_FETCH_MAX : nh - q * SR_DATAKEY_FETCH_MAX;
        IT_CHECK(seen == want, "answer %zu holds %zu headers, not %zu", q, seen, want);
        xmpp_stanza_release(res);
    }
    free(ids);
    free(xml);
}

/* Every header read must be exactly k_e·P. */
static void check_read(uint64_t e, const unsigned char (*got)[32])
{
    unsigned char k[32], want[32];
    key_of(carol, e, k);
    for (size_t i = 0; i < nh; i++) {
        IT_CHECK(sr_e2e_header_wrap(want, k, pk[i]) == SR_E2E_OK, "wrap");
        IT_CHECK(memcmp(want, got[i], 32) == 0, "header %zu read is not k_%llu·P", i,
                 (unsigned long long)e);
    }
    sodium_memzero(k, sizeof k);
}

/* Pump the sessions until the room is quiet: alice and carol hold the
 * same epoch (bob, re-added, may take it only when he needs it), every header is at it, and that
 * has held for a second (no run is pending). Returns that epoch. Tokens are erased once a member
 * confirms a finished sweep, so they are not waited for. */
static uint64_t settle(void)
{
    double end = now_ms() + WAIT_MS, quiet_since = -1;
    uint64_t c = 0;
    for (;;) {
        uint64_t e = epoch_of(alice);
        bool same = e > 0 && epoch_of(carol) == e && behind(e) == 0;
        if (!same || e != c)
            quiet_since = -1;
        else if (quiet_since < 0)
            quiet_since = now_ms();
        c = e;
        if (quiet_since >= 0 && now_ms() - quiet_since >= 1000) return c;
        IT_CHECK(now_ms() < end,
                 "the room did not settle (epochs alice %llu, bob %llu, carol %llu; %lld headers "
                 "behind)",
                 (unsigned long long)e, (unsigned long long)epoch_of(bob),
                 (unsigned long long)epoch_of(carol), behind(e));
        for (int i = 0; i < 10; i++)
            pump();
        it_sleep_ms(5);
    }
}

static uint64_t add_bob(void)
{
    it_lib_add(alice->l, room, "bob", SEALROOM_ROLE_MEMBER);
    it_lib_join(bob->l, room, "bob");
    return settle();
}

int main(int argc, char **argv)
{
    int reps = 5;
    long long messages = 1000000;
    size_t senders = 100;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--messages") == 0 && i + 1 < argc)
            messages = atoll(argv[++i]);
        else if (strcmp(argv[i], "--senders") == 0 && i + 1 < argc)
            senders = (size_t)atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_archive_live [--reps R] [--messages M] [--senders S]\n");
            return 2;
        }
    }
    if (reps < 1 || reps >= REPS_MAX || messages < 1 || senders < 1) {
        fprintf(stderr, "bench_archive_live: 1 <= reps < %d, messages and senders >= 1\n",
                REPS_MAX);
        return 2;
    }
    it_init("bench_archive_live");
    if (sodium_init() < 0) return 1;
    size_t per = (size_t)((messages + (long long)senders * SR_DATAKEY_MAX_USES - 1) /
                          ((long long)senders * SR_DATAKEY_MAX_USES));
    nh = per * senders;
    dkid = malloc(nh * 16);
    pk = malloc(nh * 32);
    unsigned char(*got)[32] = malloc(nh * 32);
    double *a = calloc((size_t)reps, sizeof *a), *b = calloc((size_t)reps, sizeof *b),
           *a_done = calloc((size_t)reps, sizeof *a), *a_token = calloc((size_t)reps, sizeof *a);
    IT_CHECK(dkid && pk && got && a && b && a_done && a_token, "out of memory");
    printf("machine: %ld cores\n", sysconf(_SC_NPROCESSORS_ONLN));
    printf("libsodium %s; server %s\n", sodium_version_string(), it_env_get()->server);
    /* The run after a membership change waits this long (changes arriving
     * together make one run): part of every removal's time. */
    char conf[1200], line[256];
    snprintf(conf, sizeof conf, "%s/sealroomd.conf", it_env_get()->run_dir);
    FILE *cf = fopen(conf, "r");
    while (cf && fgets(line, sizeof line, cf))
        if (strncmp(line, "dmkd.coalesce_ms", 16) == 0) printf("sealroomd: %s", line);
    if (cf) fclose(cf);
    printf("parameters: %lld messages from %zu senders, a data key per %u messages = %zu "
           "headers; %zu queries of %u; 3 members online; %d repetitions + 1 discarded\n",
           messages, senders, SR_DATAKEY_MAX_USES, nh,
           (nh + SR_DATAKEY_FETCH_MAX - 1) / SR_DATAKEY_FETCH_MAX, SR_DATAKEY_FETCH_MAX, reps);

    alice = e2e_connect("alice", true);
    bob = e2e_connect("bob", true);
    carol = e2e_connect("carol", true);
    it_lib_register(alice->l);
    it_lib_register(bob->l);
    it_lib_register(carol->l);
    it_new_room(room, sizeof room, "bench-archive");
    it_lib_create(alice->l, room);
    it_lib_add(alice->l, room, "carol", SEALROOM_ROLE_MEMBER);
    it_lib_join(alice->l, room, "alice");
    it_lib_join(carol->l, room, "carol");
    snprintf(room_id, sizeof room_id, "%lld", e2e_room_id(room));
    reader = it_raw_connect("carol");
    uint64_t c = add_bob();
    seed(c, senders);
    printf("setup: room %s at epoch %llu, %zu headers seeded\n", room, (unsigned long long)c, nh);
    fflush(stdout);

    for (int rep = 0; rep <= reps; rep++) {
        /* A: removal to readable. */
        uint32_t req = 0;
        double t0 = now_ms();
        IT_OK(sealroom_room_remove_member(e2e_ctx(alice), &req, room, bob->l->bare));
        it_lib_wait_ok(alice->l, req, "removing bob");
        double t_done = now_ms();
        uint64_t f = epoch_of(alice);
        IT_CHECK(f > c, "the removal made no epoch after %llu", (unsigned long long)c);
        /* Stored, or already used by a finished sweep and erased. */
        while (!token_stored(f - 1) && behind(f) > 0) {
            IT_CHECK(now_ms() - t0 < WAIT_MS, "no token %llu->%llu", (unsigned long long)c,
                     (unsigned long long)f);
            pump();
        }
        double t_token = now_ms();
        read_all(f, got);
        double t_end = now_ms();
        check_read(f, (const unsigned char(*)[32])got);
        IT_CHECK(settle() == f, "another epoch after %llu", (unsigned long long)f);
        /* B: the same reads with nothing pending. */
        double t1 = now_ms();
        read_all(f, got);
        double t2 = now_ms();
        check_read(f, (const unsigned char(*)[32])got);
        printf("rep %d: removal request done %.1f ms, token stored %.1f ms, all %zu headers read "
               "at epoch %llu %.1f ms; plain read %.1f ms%s\n",
               rep, t_done - t0, t_token - t0, nh, (unsigned long long)f, t_end - t0, t2 - t1,
               rep ? "" : " (discarded)");
        fflush(stdout);
        if (rep) {
            a[rep - 1] = t_end - t0;
            a_done[rep - 1] = t_done - t0;
            a_token[rep - 1] = t_end - t_token;
            b[rep - 1] = t2 - t1;
        }
        c = add_bob();
    }
    double ma = median(a, reps), mb = median(b, reps);
    printf("medians: removal request done %.1f ms; token stored to all read %.1f ms\n",
           median(a_done, reps), median(a_token, reps));
    if (ma >= TARGET_MS)
        printf("NOT MET: removal to readable takes %.1f ms end to end, not under %.0f ms\n", ma,
               TARGET_MS);
    printf("RESULT archive.live.removal_to_readable.h%zu.ms %.1f ms baseline "
           "archive.live.read_all.h%zu.ms %.1f ms ratio %.2f target <%.0f\n",
           nh, ma, nh, mb, ma / mb, TARGET_MS);
    printf("RESULT archive.live.token_to_readable.h%zu.ms %.1f ms baseline "
           "archive.live.read_all.h%zu.ms %.1f ms ratio %.2f target -\n",
           nh, median(a_token, reps), nh, mb, median(a_token, reps) / mb);
    printf("VERDICT met %d/1\n", ma < TARGET_MS);
    it_raw_free(reader);
    sodium_memzero(pk, nh * 32);
    e2e_lib_free(alice);
    e2e_lib_free(bob);
    e2e_lib_free(carol);
    free(dkid);
    free(pk);
    free(got);
    free(a);
    free(b);
    free(a_done);
    free(a_token);
    return 0;
}
