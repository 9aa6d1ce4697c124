/* Tests of component/sweep.c against a real PostgreSQL. Rooms are seeded
 * with real material from the library's e2e core (libclient/src/e2e/
 * archive.h): epoch keys k_e, tokens Δ(e→e+1) = k_{e+1}·k_e⁻¹ and data-key
 * headers k_a·P at random epochs a. After the sweep every header the
 * room's chain reaches must be exactly k_c·P at the current epoch c (a
 * token applied twice, or not at all, gives another point), every other one
 * untouched. Scenarios: the scan at start with complete, broken and missing
 * chains and a corrupted header, then kicks after new tokens and epochs; two
 * sweeps racing on one room; the workers' connections killed and the whole
 * server restarted mid-sweep; and a sweep in a child process SIGKILLed at
 * random points twenty times, every row consistent after each kill.
 *
 * The undo of revoked tokens: rooms whose chain holds wrong tokens (random
 * scalars) are swept through them, then the wrong steps are revoked as the
 * loop revokes them (SWEEP_SQL_REVOKE_*). Every header that went through a
 * revoked step must come back to the first such step s on its way as
 * exactly k_s·P, every other one stay exactly k_c·P, the undo records go,
 * the room is not reported while headers are behind, and a right token for
 * the step then moves them on to exactly k_c·P. Also: two revoked steps
 * with a right token between; a right token stored while the undo is
 * pending (it must wait for the undo); a revocation in the middle of the
 * sweep that applies the wrong token; connections killed and the server
 * restarted mid-undo; the undo SIGKILLed twenty times (every row either as
 * before the undo or exactly undone); and a header that cannot be undone
 * (not a point), which stays as it is and keeps the undo pending.
 * Uses $SEALROOM_TEST_PG if set, otherwise starts a throwaway cluster with
 * tests/pg-scratch.sh (the server restart only runs on that one). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pgtest.h"
#include "config.h"
#include "db.h"
#include "e2e/archive.h"
#include "log.h"
#include "sweep.h"

#define MAXE 16
#define WAIT_MS 90000

/* ---- environment (as in test_db.c) ---- */

static char g_src[1024];
static char g_scratch[256]; /* our cluster's directory, "" if none */
static char *g_admin_conninfo;
static char g_dbname[64];
static char *g_conninfo;

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static PGconn *pg(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) fail_msg("connect: %s", PQerrorMessage(c));
    PQsetNoticeProcessor(c, pgt_quiet, NULL);
    return c;
}

/* Run a statement with text parameters; fail the test unless it succeeds. */
static PGresult *exec(PGconn *c, const char *sql, int n, const char *const *vals)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    return r;
}

static int admin_exec(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    PQsetNoticeProcessor(c, pgt_quiet, NULL);
    int rc = -1;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, sql);
        rc = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK ? 0 : -1;
        if (rc < 0) fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
        PQclear(r);
    } else {
        fprintf(stderr, "connect: %s", PQerrorMessage(c));
    }
    PQfinish(c);
    return rc;
}

static int scratch(const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "sh '%s/tests/pg-scratch.sh' %s", g_src, args);
    return system(cmd);
}

static int group_setup(void **state)
{
    (void)state;
    if (sodium_init() < 0) return -1;
    log_set_level(LOG_LVL_ERROR);
    const char *src = getenv("SEALROOM_SOURCE_DIR");
    snprintf(g_src, sizeof g_src, "%s", src ? src : ".");
    g_admin_conninfo =
        pgt_admin_conninfo(g_src, "/tmp/sealroom-test-sweep-XXXXXX", g_scratch, sizeof g_scratch);
    if (!g_admin_conninfo) return -1;
    snprintf(g_dbname, sizeof g_dbname, "sealroom_sweep_%d", (int)getpid());
    char sql[160];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", g_dbname);
    if (admin_exec(g_admin_conninfo, sql) != 0) return -1;
    g_conninfo = pgt_conninfo_for(g_admin_conninfo, g_dbname);
    if (!g_conninfo) return -1;
    db *d = db_new(g_conninfo);
    char err[512], dir[1100];
    snprintf(dir, sizeof dir, "%s/sql", g_src);
    int rc = d && db_connect_blocking(d, 10000, err, sizeof err) == 0 &&
                     db_migrate(d, dir, err, sizeof err) == 0
                 ? 0
                 : -1;
    if (rc) fprintf(stderr, "migrate: %s\n", err);
    db_free(d);
    return rc;
}

static int group_teardown(void **state)
{
    (void)state;
    char sql[160];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", g_dbname);
    admin_exec(g_admin_conninfo, sql);
    if (g_scratch[0]) {
        char args[400];
        snprintf(args, sizeof args, "stop '%s'", g_scratch);
        scratch(args);
        snprintf(args, sizeof args, "rm -rf '%s'", g_scratch);
        if (system(args) != 0) fprintf(stderr, "could not remove %s\n", g_scratch);
    }
    free(g_admin_conninfo);
    free(g_conninfo);
    return 0;
}

/* ---- seeded rooms ---- */

typedef struct seeded {
    long long id;
    char idtext[24];
    uint64_t c;               /* current epoch */
    bool has_token[MAXE + 1]; /* Δ(e→e+1) stored */
    unsigned char k[MAXE + 1][32];
    size_t n;
    unsigned char (*dkid)[16];
    unsigned char (*p)[32];
    uint64_t *epoch; /* as seeded */
    unsigned char (*h)[32];
    bool *corrupt;              /* the header is not a point */
    unsigned char (*moved)[32]; /* k_e·P for e = moved_epoch[i] (0: not computed) */
    uint64_t *moved_epoch;
    size_t *order; /* indices sorted by dkid */
} seeded;

static const seeded *g_sorting;

static int cmp_dkid(const void *a, const void *b)
{
    return memcmp(g_sorting->dkid[*(const size_t *)a], g_sorting->dkid[*(const size_t *)b], 16);
}

static void random_scalar(unsigned char s[32])
{
    do
        crypto_core_ristretto255_scalar_random(s);
    while (sodium_is_zero(s, 32));
}

static void store_token(PGconn *c, seeded *s, uint64_t e)
{
    unsigned char d[32];
    char hex[65], from[24], to[24], lit[80];
    assert_int_equal(sr_e2e_token_make(d, s->k[e], s->k[e + 1]), SR_E2E_OK);
    sodium_bin2hex(hex, sizeof hex, d, 32);
    snprintf(from, sizeof from, "%llu", (unsigned long long)e);
    snprintf(to, sizeof to, "%llu", (unsigned long long)e + 1);
    snprintf(lit, sizeof lit, "\\x%s", hex);
    const char *vals[] = {s->idtext, from, to, lit};
    PQclear(exec(c,
                 "INSERT INTO archive_tokens(room_id, from_epoch, to_epoch, delta, verified) "
                 "VALUES ($1, $2, $3, $4, true)",
                 4, vals));
    s->has_token[e] = true;
}

static char *hex_array(const unsigned char *b, size_t each, size_t from, size_t to)
{
    char *out = malloc((to - from) * (each * 2 + 4) + 3), *p = out;
    assert_non_null(out);
    *p++ = '{';
    for (size_t i = from; i < to; i++) {
        if (i > from) *p++ = ',';
        memcpy(p, "\\\\x", 3);
        p += 3;
        sodium_bin2hex(p, each * 2 + 1, b + i * each, each);
        p += each * 2;
    }
    *p++ = '}';
    *p = '\0';
    return out;
}

/* A room at epoch c with n headers at random epochs 1..c; tokens for every
 * e→e+1 below c except `missing` (0: none missing; c: none at all).
 * ncorrupt headers (at epoch c−1) are not points. */
static seeded *seed_room(const char *name, uint64_t c, uint64_t missing, size_t n, size_t ncorrupt)
{
    assert_true(c <= MAXE);
    seeded *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->c = c;
    s->n = n;
    s->dkid = calloc(n, 16);
    s->p = calloc(n, 32);
    s->h = calloc(n, 32);
    s->epoch = calloc(n, sizeof *s->epoch);
    s->corrupt = calloc(n, sizeof *s->corrupt);
    s->order = calloc(n, sizeof *s->order);
    s->moved = calloc(n, 32);
    s->moved_epoch = calloc(n, sizeof *s->moved_epoch);
    assert_true(s->dkid && s->p && s->h && s->epoch && s->corrupt && s->order && s->moved &&
                s->moved_epoch);
    for (uint64_t e = 1; e <= c; e++)
        random_scalar(s->k[e]);

    PGconn *conn = pg(g_conninfo);
    char ce[24];
    snprintf(ce, sizeof ce, "%llu", (unsigned long long)c);
    const char *rv[] = {name, ce};
    PGresult *r = exec(conn,
                       "INSERT INTO rooms(name, roster_version, roster_head, current_epoch) "
                       "VALUES ($1, 0, decode(repeat('00', 32), 'hex'), $2) RETURNING room_id",
                       2, rv);
    s->id = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    snprintf(s->idtext, sizeof s->idtext, "%lld", s->id);
    for (uint64_t e = 1; e < c && missing != c; e++)
        if (e != missing) store_token(conn, s, e);

    for (size_t i = 0; i < n; i++) {
        sr_e2e_datakey_id_random(s->dkid[i]);
        assert_int_equal(sr_e2e_datakey_random(s->p[i]), SR_E2E_OK);
        if (i < ncorrupt) {
            s->epoch[i] = c > 1 ? c - 1 : c;
            memset(s->h[i], 0xff, 32);
            s->corrupt[i] = true;
        } else {
            s->epoch[i] = 1 + randombytes_uniform((uint32_t)c);
            assert_int_equal(sr_e2e_header_wrap(s->h[i], s->k[s->epoch[i]], s->p[i]), SR_E2E_OK);
        }
        s->order[i] = i;
    }
    g_sorting = s;
    qsort(s->order, n, sizeof *s->order, cmp_dkid);

    const size_t chunk = 2000;
    for (size_t from = 0; from < n; from += chunk) {
        size_t to = from + chunk < n ? from + chunk : n;
        char *dk = hex_array(&s->dkid[0][0], 16, from, to);
        char *hh = hex_array(&s->h[0][0], 32, from, to);
        char *ep = malloc((to - from) * 21 + 3), *p = ep;
        assert_non_null(ep);
        *p++ = '{';
        for (size_t i = from; i < to; i++)
            p += sprintf(p, "%s%llu", i > from ? "," : "", (unsigned long long)s->epoch[i]);
        strcpy(p, "}");
        const char *vals[] = {s->idtext, dk, ep, hh};
        PQclear(exec(conn,
                     "INSERT INTO datakeys(room_id, dkid, sender, epoch, created_epoch, header) "
                     "SELECT $1, d, 'alice@localhost', e, e, h "
                     "FROM unnest($2::bytea[], $3::bigint[], $4::bytea[]) AS u(d, e, h)",
                     4, vals));
        free(dk);
        free(hh);
        free(ep);
    }
    PQfinish(conn);
    return s;
}

/* The lowest epoch from which the stored tokens reach c. */
static uint64_t chain_bottom(const seeded *s)
{
    uint64_t b = s->c;
    while (b > 1 && s->has_token[b - 1])
        b--;
    return b;
}

/* Would the sweep re-key header i to epoch c? */
static bool reachable(const seeded *s, size_t i)
{
    return !s->corrupt[i] && s->epoch[i] < s->c && s->epoch[i] >= chain_bottom(s);
}

static size_t count_reachable(const seeded *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += reachable(s, i);
    return n;
}

/* Headers behind c that the sweep cannot move. */
static size_t count_stuck(const seeded *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += s->epoch[i] < s->c && !reachable(s, i);
    return n;
}

/* A new epoch c+1 with its token (and, if fill, every missing token). */
static void advance(seeded *s, bool fill)
{
    assert_true(s->c + 1 <= MAXE);
    PGconn *conn = pg(g_conninfo);
    random_scalar(s->k[s->c + 1]);
    if (fill)
        for (uint64_t e = 1; e < s->c; e++)
            if (!s->has_token[e]) store_token(conn, s, e);
    store_token(conn, s, s->c);
    s->c++;
    char ce[24];
    snprintf(ce, sizeof ce, "%llu", (unsigned long long)s->c);
    const char *vals[] = {s->idtext, ce};
    PQclear(exec(conn, "UPDATE rooms SET current_epoch = $2 WHERE room_id = $1", 2, vals));
    PQfinish(conn);
}

/* Check every stored row. final: each header must be exactly where the
 * sweep leaves it (k_c·P at c if reachable, else as seeded). Otherwise
 * (mid-sweep) each must be one of the two. Returns how many are behind c. */
static size_t check_room(seeded *s, bool final)
{
    PGconn *conn = pg(g_conninfo);
    const char *vals[] = {s->idtext};
    PGresult *r = PQexecParams(conn,
                               "SELECT dkid, epoch, header FROM datakeys WHERE room_id = $1 "
                               "ORDER BY dkid",
                               1, NULL, vals, NULL, NULL, 1);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), (int)s->n);
    size_t behind = 0;
    for (size_t row = 0; row < s->n; row++) {
        size_t i = s->order[row];
        assert_int_equal(PQgetlength(r, (int)row, 0), 16);
        assert_memory_equal(PQgetvalue(r, (int)row, 0), s->dkid[i], 16);
        const unsigned char *b = (const unsigned char *)PQgetvalue(r, (int)row, 1);
        uint64_t e = 0;
        for (int k = 0; k < 8; k++)
            e = e << 8 | b[k];
        const char *h = PQgetvalue(r, (int)row, 2);
        if (e == s->epoch[i]) {
            /* Untouched; only allowed at the end if it cannot be moved. */
            assert_memory_equal(h, s->h[i], 32);
            if (final && reachable(s, i))
                fail_msg("row %zu (epoch %llu) was not re-keyed to %llu", row,
                         (unsigned long long)e, (unsigned long long)s->c);
        } else {
            /* Moved forward, never back, never past c. */
            assert_false(s->corrupt[i]);
            assert_true(e > s->epoch[i] && e <= s->c);
            if (final) assert_true(e == s->c);
            if (s->moved_epoch[i] != e) {
                assert_int_equal(sr_e2e_header_wrap(s->moved[i], s->k[e], s->p[i]), SR_E2E_OK);
                s->moved_epoch[i] = e;
            }
            if (memcmp(h, s->moved[i], 32) != 0)
                fail_msg("row %zu: header at epoch %llu is not k_%llu·P (seeded at %llu)", row,
                         (unsigned long long)e, (unsigned long long)e,
                         (unsigned long long)s->epoch[i]);
        }
        behind += e < s->c;
    }
    PQclear(r);
    PQfinish(conn);
    return behind;
}

static void seeded_free(seeded *s)
{
    if (!s) return;
    sodium_memzero(s->k, sizeof s->k);
    free(s->dkid);
    free(s->p);
    free(s->h);
    free(s->epoch);
    free(s->corrupt);
    free(s->order);
    free(s->moved);
    free(s->moved_epoch);
    free(s);
}

/* ---- driving the sweep ---- */

static config sweep_config(int threads, int batch)
{
    config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.db_conninfo = g_conninfo;
    cfg.sweep_threads = threads;
    cfg.sweep_batch = batch;
    return cfg;
}

static bool idle(sweep *s, sweep_stats *st)
{
    sweep_get_stats(s, st);
    return st->scan_done && st->rooms_pending == 0;
}

static void wait_idle(sweep *s, sweep_stats *st)
{
    long deadline = now_ms() + WAIT_MS;
    while (!idle(s, st)) {
        if (now_ms() > deadline) fail_msg("the sweep did not finish");
        sleep_ms(5);
    }
}

/* ---- tests ---- */

static void test_scan_and_kicks(void **state)
{
    (void)state;
    /* A: complete chain. B: token 2→3 missing, and a corrupted header.
     * C: no tokens at all. */
    seeded *a = seed_room("a@rooms.localhost", 5, 0, 3000, 0);
    seeded *b = seed_room("b@rooms.localhost", 6, 2, 1000, 1);
    seeded *c = seed_room("c@rooms.localhost", 3, 3, 300, 0);
    size_t want = count_reachable(a) + count_reachable(b);
    assert_true(count_reachable(a) > 2000 && count_reachable(b) > 300 && count_stuck(b) > 100);

    config cfg = sweep_config(2, 100);
    sweep *s = sweep_start(&cfg);
    assert_non_null(s);
    assert_ptr_equal(sweep_running(), s);
    sweep_stats st;
    wait_idle(s, &st); /* nothing was kicked: the scan found A and B */
    assert_int_equal(check_room(a, true), 0);
    assert_int_equal(check_room(b, true), count_stuck(b));
    check_room(c, true);
    assert_int_equal(st.threads, 2);
    assert_int_equal(st.headers_rekeyed, want);
    assert_int_equal(st.rooms_done, 2);
    assert_int_equal(st.headers_behind, count_stuck(b));
    assert_true(st.batches >= want / 100);
    assert_int_equal(st.errors, 0);

    /* B gets its missing token and a new epoch, C its tokens; kicked. */
    advance(b, true);
    advance(c, true);
    sweep_kick(s, b->id);
    sweep_kick(s, c->id);
    wait_idle(s, &st);
    assert_int_equal(check_room(b, true), 1); /* the corrupted one */
    assert_int_equal(check_room(c, true), 0);
    assert_int_equal(check_room(a, true), 0);
    assert_int_equal(st.rooms_done, 4);
    assert_int_equal(st.headers_behind, 1);
    assert_int_equal(st.headers_rekeyed, want + count_reachable(b) + count_reachable(c));
    /* A kick for a room with nothing to do, and for no room at all. */
    sweep_kick(s, a->id);
    sweep_kick(s, 999999);
    wait_idle(s, &st);
    assert_int_equal(st.rooms_done, 6);
    assert_int_equal(st.headers_behind, 1);
    sweep_stop(s);
    assert_null(sweep_running());
    seeded_free(a);
    seeded_free(b);
    seeded_free(c);
}

/* Two sweeps (as two instances) on one room at once: each header is
 * re-keyed by exactly one of them. */
static void test_two_sweeps_race(void **state)
{
    (void)state;
    seeded *r = seed_room("race@rooms.localhost", 4, 0, 4000, 0);
    config cfg = sweep_config(2, 50);
    sweep *s1 = sweep_start(&cfg), *s2 = sweep_start(&cfg);
    assert_non_null(s1);
    assert_non_null(s2);
    sweep_stats st1, st2;
    wait_idle(s1, &st1);
    wait_idle(s2, &st2);
    assert_int_equal(check_room(r, true), 0);
    assert_int_equal(st1.headers_rekeyed + st2.headers_rekeyed, count_reachable(r));
    sweep_stop(s1);
    sweep_stop(s2);
    seeded_free(r);
}

static void wait_rekeyed(sweep *s, unsigned long long n)
{
    sweep_stats st;
    long deadline = now_ms() + WAIT_MS;
    do {
        if (now_ms() > deadline) fail_msg("the sweep made no progress");
        sleep_ms(1);
        sweep_get_stats(s, &st);
    } while (st.headers_rekeyed < n);
    assert_true(st.rooms_pending > 0); /* still under way */
}

/* The workers' sessions die mid-sweep: a whole server restart (our own
 * cluster only), then pg_terminate_backend. They reconnect and finish. */
static void test_connection_loss(void **state)
{
    (void)state;
    seeded *r = seed_room("loss@rooms.localhost", 3, 0, 16000, 0);
    size_t want = count_reachable(r);
    config cfg = sweep_config(2, 25);
    sweep *s = sweep_start(&cfg);
    assert_non_null(s);
    sweep_kick(s, r->id);
    unsigned long long expect_reconnects = 1;
    if (g_scratch[0]) {
        wait_rekeyed(s, 200);
        char args[400];
        snprintf(args, sizeof args, "restart '%s'", g_scratch);
        assert_int_equal(scratch(args), 0);
        expect_reconnects = 2;
    }
    sweep_stats st;
    sweep_get_stats(s, &st);
    wait_rekeyed(s, st.headers_rekeyed + 1000);
    assert_int_equal(admin_exec(g_admin_conninfo,
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE application_name = 'sealroomd-sweep'"),
                     0);
    wait_idle(s, &st);
    assert_int_equal(check_room(r, true), 0);
    assert_true(st.reconnects >= expect_reconnects);
    /* A batch whose commit was lost with its connection was written again
     * by nobody: the guard made the retry a no-op, so the count can only
     * fall short. */
    assert_true(st.headers_rekeyed <= want);
    assert_int_equal(st.errors, 0);
    sweep_stop(s);
    seeded_free(r);
}

static size_t count_behind(const seeded *s)
{
    PGconn *conn = pg(g_conninfo);
    char ce[24];
    snprintf(ce, sizeof ce, "%llu", (unsigned long long)s->c);
    const char *vals[] = {s->idtext, ce};
    PGresult *r =
        exec(conn, "SELECT count(*) FROM datakeys WHERE room_id = $1 AND epoch < $2", 2, vals);
    size_t n = (size_t)atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(conn);
    return n;
}

/* The sweep in a child process, SIGKILLed twenty times: every other kill
 * at a random moment from its start (connecting, scanning, counting,
 * between or inside batches), the others a random moment after it has
 * committed a batch, so that they land mid-room. Every row is consistent
 * after each kill, and a last run finishes the room. */
static void test_sigkill(void **state)
{
    (void)state;
    enum { KILLS = 20 };
    seeded *r = seed_room("kill@rooms.localhost", 8, 0, 20000, 0);
    size_t behind = check_room(r, false), mid = 0;
    config cfg = sweep_config(2, 100);
    for (int k = 0; k < KILLS && behind > 0; k++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            sweep *s = sweep_start(&cfg);
            sweep_stats st;
            while (s && !idle(s, &st))
                sleep_ms(2);
            _exit(s ? 0 : 1);
        }
        if (k % 2) {
            long deadline = now_ms() + WAIT_MS;
            while (count_behind(r) == behind && now_ms() < deadline)
                sleep_ms(1);
            sleep_ms((long)randombytes_uniform(30));
        } else {
            sleep_ms((long)randombytes_uniform(40));
        }
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        size_t now = check_room(r, false);
        assert_true(now <= behind);
        if (k % 2) assert_true(now < behind);
        if (now > 0 && now < behind) mid++;
        behind = now;
    }
    assert_true(mid >= KILLS / 2);
    sweep *s = sweep_start(&cfg);
    assert_non_null(s);
    sweep_stats st;
    wait_idle(s, &st);
    sweep_stop(s);
    assert_int_equal(check_room(r, true), 0);
    seeded_free(r);
}

/* A new epoch's sweep while the tokens below its chain are erased (a
 * member confirmed the previous epoch): the batches that composed only the
 * newest token are not held up by the erasure, and everything still ends
 * at exactly k_c·P. */
static void test_erasure_mid_sweep(void **state)
{
    (void)state;
    seeded *s = seed_room("erase-mid@rooms.localhost", 3, 0, 16000, 0);
    config cfg = sweep_config(2, 25);
    sweep *sw = sweep_start(&cfg);
    assert_non_null(sw);
    sweep_kick(sw, s->id);
    sweep_stats st;
    wait_idle(sw, &st);
    assert_int_equal(check_room(s, true), 0);
    /* Every header is at 3: the rows keep their seeded epochs as where
     * they were registered, k_3·P is what the next token moves. */
    advance(s, false);
    unsigned long long base = st.headers_rekeyed;
    sweep_kick(sw, s->id);
    wait_rekeyed(sw, base + 1000);
    PGconn *conn = pg(g_conninfo);
    const char *vals[] = {s->idtext};
    PQclear(exec(conn, "DELETE FROM archive_tokens WHERE room_id = $1 AND to_epoch <= 3", 1, vals));
    PQfinish(conn);
    s->has_token[1] = s->has_token[2] = false;
    wait_idle(sw, &st);
    assert_int_equal(check_room(s, true), 0);
    assert_int_equal(st.headers_rekeyed - base, s->n);
    sweep_stop(sw);
    seeded_free(s);
}

/* ---- undoing revoked tokens ---- */

/* Store delta as the token e→e+1 (right or not). */
static void store_delta(PGconn *c, seeded *s, uint64_t e, const unsigned char d[32])
{
    char hex[65], from[24], to[24], lit[80];
    sodium_bin2hex(hex, sizeof hex, d, 32);
    snprintf(from, sizeof from, "%llu", (unsigned long long)e);
    snprintf(to, sizeof to, "%llu", (unsigned long long)e + 1);
    snprintf(lit, sizeof lit, "\\x%s", hex);
    const char *vals[] = {s->idtext, from, to, lit};
    PQclear(exec(c,
                 "INSERT INTO archive_tokens(room_id, from_epoch, to_epoch, delta, verified) "
                 "VALUES ($1, $2, $3, $4, false)",
                 4, vals));
    s->has_token[e] = true;
}

/* A room at epoch c with n headers at random epochs 1..c and a token for
 * every step, a random scalar for the steps in wrong (bit e: step e→e+1). */
static seeded *seed_wrong(const char *name, uint64_t c, unsigned wrong, size_t n)
{
    seeded *s = seed_room(name, c, c, n, 0);
    PGconn *conn = pg(g_conninfo);
    for (uint64_t e = 1; e < c; e++) {
        if (wrong & (1u << e)) {
            unsigned char d[32];
            random_scalar(d);
            store_delta(conn, s, e, d);
        } else {
            store_token(conn, s, e);
        }
    }
    PQfinish(conn);
    return s;
}

/* Revoke the steps in mask as tokenerase.c does: one transaction. */
static void revoke_steps(seeded *s, unsigned mask)
{
    char steps[128] = "{";
    for (uint64_t e = 1; e <= MAXE; e++)
        if (mask & (1u << e)) {
            size_t n = strlen(steps);
            snprintf(steps + n, sizeof steps - n, "%s%llu", n > 1 ? "," : "",
                     (unsigned long long)e);
            s->has_token[e] = false;
        }
    strcat(steps, "}");
    PGconn *conn = pg(g_conninfo);
    const char *vals[] = {s->idtext, steps};
    PQclear(exec(conn, "BEGIN", 0, NULL));
    PQclear(exec(conn, SWEEP_SQL_REVOKE_KEEP, 2, vals));
    PQclear(exec(conn, SWEEP_SQL_REVOKE_DROP, 2, vals));
    PQclear(exec(conn, "COMMIT", 0, NULL));
    PQfinish(conn);
}

/* Where header i belongs once the steps in mask are undone: the first
 * revoked step on its way from its epoch to c, else c. */
static uint64_t undone_epoch(const seeded *s, unsigned mask, size_t i)
{
    for (uint64_t e = s->epoch[i]; e < s->c; e++)
        if (mask & (1u << e)) return e;
    return s->c;
}

static long long room_count(const seeded *s, const char *table)
{
    PGconn *conn = pg(g_conninfo);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE room_id = $1", table);
    const char *vals[] = {s->idtext};
    PGresult *r = exec(conn, sql, 1, vals);
    long long n = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(conn);
    return n;
}

/* Every row of s as stored now (in dkid order), for the crash tests. */
typedef struct snapshot {
    uint64_t *epoch;
    unsigned char (*h)[32];
} snapshot;

static uint64_t be64_of(const char *p)
{
    uint64_t e = 0;
    for (int k = 0; k < 8; k++)
        e = e << 8 | (unsigned char)p[k];
    return e;
}

static PGresult *read_rows(const seeded *s, PGconn **conn)
{
    *conn = pg(g_conninfo);
    const char *vals[] = {s->idtext};
    PGresult *r = PQexecParams(*conn,
                               "SELECT dkid, epoch, header FROM datakeys WHERE room_id = $1 "
                               "ORDER BY dkid",
                               1, NULL, vals, NULL, NULL, 1);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), (int)s->n);
    return r;
}

static snapshot take_snapshot(const seeded *s)
{
    snapshot sn = {calloc(s->n, sizeof *sn.epoch), calloc(s->n, 32)};
    assert_true(sn.epoch && sn.h);
    PGconn *conn;
    PGresult *r = read_rows(s, &conn);
    for (size_t row = 0; row < s->n; row++) {
        sn.epoch[row] = be64_of(PQgetvalue(r, (int)row, 1));
        memcpy(sn.h[row], PQgetvalue(r, (int)row, 2), 32);
    }
    PQclear(r);
    PQfinish(conn);
    return sn;
}

/* After undoing mask: every row is exactly k_E·P at the epoch E where the
 * undo leaves it (final), or, mid-undo, either that or as in before (if
 * given); with unmoved, a row may also be untouched where it was
 * registered (the sweep had not reached it when the steps were revoked).
 * Returns the rows not yet undone. */
static size_t check_undo_at(seeded *s, unsigned mask, const snapshot *before, bool final,
                            bool unmoved)
{
    PGconn *conn;
    PGresult *r = read_rows(s, &conn);
    size_t left = 0;
    for (size_t row = 0; row < s->n; row++) {
        size_t i = s->order[row];
        assert_memory_equal(PQgetvalue(r, (int)row, 0), s->dkid[i], 16);
        uint64_t e = be64_of(PQgetvalue(r, (int)row, 1)), want = undone_epoch(s, mask, i);
        const char *h = PQgetvalue(r, (int)row, 2);
        if (before && !final && e == before->epoch[row] && memcmp(h, before->h[row], 32) == 0 &&
            e != want) {
            left++; /* not reached yet */
            continue;
        }
        if (unmoved && e == s->epoch[i]) {
            assert_memory_equal(h, s->h[i], 32);
            continue;
        }
        if (e != want)
            fail_msg("row %zu (registered in %llu) is at epoch %llu, expected %llu", row,
                     (unsigned long long)s->epoch[i], (unsigned long long)e,
                     (unsigned long long)want);
        if (s->moved_epoch[i] != e) {
            assert_int_equal(sr_e2e_header_wrap(s->moved[i], s->k[e], s->p[i]), SR_E2E_OK);
            s->moved_epoch[i] = e;
        }
        if (memcmp(h, s->moved[i], 32) != 0)
            fail_msg("row %zu: header at epoch %llu is not k_%llu·P (registered in %llu)", row,
                     (unsigned long long)e, (unsigned long long)e, (unsigned long long)s->epoch[i]);
    }
    PQclear(r);
    PQfinish(conn);
    return left;
}

static size_t check_undo(seeded *s, unsigned mask, const snapshot *before, bool final)
{
    return check_undo_at(s, mask, before, final, false);
}

static size_t count_undone(const seeded *s, unsigned mask)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += undone_epoch(s, mask, i) < s->c;
    return n;
}

/* Which of rooms (bit i for rooms[i]) were reported done at their current
 * epoch. Takes every report. */
static unsigned reported(sweep *sw, seeded *const *rooms, size_t n)
{
    long long got;
    uint64_t e;
    unsigned seen = 0;
    while (sweep_take_done(sw, &got, &e))
        for (size_t i = 0; i < n; i++)
            if (got == rooms[i]->id && e == rooms[i]->c) seen |= 1u << i;
    return seen;
}

/* Forward through wrong tokens, then the undo, then right tokens: one room
 * with a wrong step 3→4, another with wrong steps 2→3 and 5→6 around a
 * right 3→4 (a header from epoch 3 goes back to 5, not 2). */
static void test_undo(void **state)
{
    (void)state;
    seeded *a = seed_wrong("undo-a@rooms.localhost", 6, 1u << 3, 3000);
    seeded *b = seed_wrong("undo-b@rooms.localhost", 7, 1u << 2 | 1u << 5, 3000);
    seeded *ab[] = {a, b};
    config cfg = sweep_config(2, 100);
    sweep *sw = sweep_start(&cfg);
    assert_non_null(sw);
    sweep_stats st;
    wait_idle(sw, &st); /* the scan found both: everything at c, through the wrong tokens */
    assert_int_equal(count_behind(a) + count_behind(b), 0);
    assert_int_equal(reported(sw, ab, 2), 3);

    revoke_steps(a, 1u << 3);
    revoke_steps(b, 1u << 2 | 1u << 5);
    assert_int_equal(room_count(a, "archive_undo"), 1);
    assert_int_equal(room_count(b, "archive_undo"), 2);
    sweep_kick(sw, a->id);
    sweep_kick(sw, b->id);
    wait_idle(sw, &st);
    size_t ua = count_undone(a, 1u << 3), ub = count_undone(b, 1u << 2 | 1u << 5);
    assert_true(ua > 1000 && ub > 1500);
    assert_int_equal(check_undo(a, 1u << 3, NULL, true), 0);
    assert_int_equal(check_undo(b, 1u << 2 | 1u << 5, NULL, true), 0);
    assert_int_equal(st.headers_undone, ua + ub);
    assert_int_equal(st.undos_finished, 2);
    assert_int_equal(st.errors, 0);
    assert_int_equal(room_count(a, "archive_undo") + room_count(b, "archive_undo"), 0);
    assert_int_equal(room_count(a, "archive_tokens"), 4);
    assert_int_equal(room_count(b, "archive_tokens"), 4);
    /* Headers are behind: neither room is reported, nor while undoing. */
    assert_int_equal(reported(sw, ab, 2), 0);
    assert_int_equal(count_behind(a), ua);

    /* The right tokens arrive: everything moves on to exactly k_c·P. */
    PGconn *conn = pg(g_conninfo);
    store_token(conn, a, 3);
    store_token(conn, b, 2);
    store_token(conn, b, 5);
    PQfinish(conn);
    sweep_kick(sw, a->id);
    sweep_kick(sw, b->id);
    wait_idle(sw, &st);
    assert_int_equal(check_undo(a, 0, NULL, true), 0);
    assert_int_equal(check_undo(b, 0, NULL, true), 0);
    assert_int_equal(reported(sw, ab, 2), 3);
    assert_int_equal(st.headers_undone, ua + ub);
    sweep_stop(sw);
    seeded_free(a);
    seeded_free(b);
}

/* A right token for the revoked step stored before the undo has run (the
 * sweep is down meanwhile): the re-keying must not use it until every
 * header that went through the wrong one is back, else the undo would
 * invert the wrong token on headers moved by the right one. The scan at
 * start finds the room by its undo records. */
static void test_undo_new_token_waits(void **state)
{
    (void)state;
    seeded *s = seed_wrong("undo-wait@rooms.localhost", 5, 1u << 2, 3000);
    config cfg = sweep_config(2, 50);
    sweep *sw = sweep_start(&cfg);
    sweep_stats st;
    wait_idle(sw, &st);
    sweep_stop(sw);
    assert_int_equal(count_behind(s), 0);
    revoke_steps(s, 1u << 2);
    PGconn *conn = pg(g_conninfo);
    store_token(conn, s, 2);
    PQfinish(conn);
    sw = sweep_start(&cfg);
    wait_idle(sw, &st);
    assert_int_equal(check_undo(s, 0, NULL, true), 0);
    assert_int_equal(st.headers_undone, count_undone(s, 1u << 2));
    assert_int_equal(st.undos_finished, 1);
    assert_int_equal(room_count(s, "archive_undo"), 0);
    assert_int_equal(reported(sw, &s, 1), 1);
    sweep_stop(sw);
    seeded_free(s);
}

/* The revocation commits while two sweeps (as two instances) are applying
 * the wrong token: slices that loaded the chain before it write nothing
 * through it after it (their batches wait for it, then find the token
 * gone), the undo catches every header they moved before, and whichever
 * instance ends the undo, the other one's batches apply nothing stale. */
static void test_undo_revoked_mid_sweep(void **state)
{
    (void)state;
    seeded *s = seed_wrong("undo-mid@rooms.localhost", 4, 1u << 2, 16000);
    config cfg = sweep_config(2, 25);
    sweep *s1 = sweep_start(&cfg), *s2 = sweep_start(&cfg);
    assert_non_null(s1);
    assert_non_null(s2);
    sweep_kick(s1, s->id);
    sweep_kick(s2, s->id);
    wait_rekeyed(s1, 1000);
    revoke_steps(s, 1u << 2);
    sweep_kick(s1, s->id);
    sweep_kick(s2, s->id);
    sweep_stats st1, st2;
    wait_idle(s1, &st1);
    wait_idle(s2, &st2);
    /* Headers from epoch 1 the sweeps had not reached stay there. */
    assert_int_equal(check_undo_at(s, 1u << 2, NULL, true, true), 0);
    assert_true(count_behind(s) >= count_undone(s, 1u << 2));
    assert_int_equal(room_count(s, "archive_undo"), 0);
    assert_int_equal(st1.errors + st2.errors, 0);
    assert_int_equal(reported(s1, &s, 1) | reported(s2, &s, 1), 0);
    sweep_stop(s1);
    sweep_stop(s2);
    seeded_free(s);
}

/* Mid-undo the server restarts (our own cluster only) and the workers'
 * sessions are killed: they reconnect and finish, exactly. */
static void test_undo_connection_loss(void **state)
{
    (void)state;
    seeded *s = seed_wrong("undo-loss@rooms.localhost", 3, 1u << 1, 16000);
    config cfg = sweep_config(2, 25);
    sweep *sw = sweep_start(&cfg);
    sweep_stats st;
    wait_idle(sw, &st);
    revoke_steps(s, 1u << 1);
    unsigned long long base = st.headers_undone;
    sweep_kick(sw, s->id);
    long deadline = now_ms() + WAIT_MS;
    if (g_scratch[0]) {
        do {
            if (now_ms() > deadline) fail_msg("the undo made no progress");
            sleep_ms(1);
            sweep_get_stats(sw, &st);
        } while (st.headers_undone < base + 200);
        char args[400];
        snprintf(args, sizeof args, "restart '%s'", g_scratch);
        assert_int_equal(scratch(args), 0);
    }
    do {
        if (now_ms() > deadline) fail_msg("the undo made no progress");
        sleep_ms(1);
        sweep_get_stats(sw, &st);
    } while (st.headers_undone < base + 1000);
    assert_int_equal(admin_exec(g_admin_conninfo,
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE application_name = 'sealroomd-sweep'"),
                     0);
    wait_idle(sw, &st);
    assert_int_equal(check_undo(s, 1u << 1, NULL, true), 0);
    assert_int_equal(room_count(s, "archive_undo"), 0);
    assert_true(st.headers_undone - base <= count_undone(s, 1u << 1));
    assert_int_equal(st.errors, 0);
    sweep_stop(sw);
    seeded_free(s);
}

/* The undo in a child process SIGKILLed twenty times, at random moments
 * or after it has written: every row is either as before the undo or
 * exactly undone after each kill, the records stay until the end, and a
 * last run finishes the room. */
static void test_undo_sigkill(void **state)
{
    (void)state;
    enum { KILLS = 20 };
    seeded *s = seed_wrong("undo-kill@rooms.localhost", 5, 1u << 2, 20000);
    config cfg = sweep_config(2, 100);
    sweep *sw = sweep_start(&cfg);
    sweep_stats st;
    wait_idle(sw, &st);
    sweep_stop(sw);
    snapshot before = take_snapshot(s);
    revoke_steps(s, 1u << 2);
    size_t left = check_undo(s, 1u << 2, &before, false), mid = 0;
    assert_int_equal(left, count_undone(s, 1u << 2));
    for (int k = 0; k < KILLS && left > 0; k++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            sweep *child = sweep_start(&cfg);
            sweep_stats cst;
            while (child && !idle(child, &cst))
                sleep_ms(2);
            _exit(child ? 0 : 1);
        }
        if (k % 2) {
            long deadline = now_ms() + WAIT_MS;
            while (count_behind(s) == count_undone(s, 1u << 2) - left && now_ms() < deadline)
                sleep_ms(1);
            sleep_ms((long)randombytes_uniform(30));
        } else {
            sleep_ms((long)randombytes_uniform(40));
        }
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        size_t now = check_undo(s, 1u << 2, &before, false);
        assert_true(now <= left);
        if (now > 0) assert_int_equal(room_count(s, "archive_undo"), 1);
        if (now > 0 && now < left) mid++;
        left = now;
    }
    assert_true(mid >= KILLS / 4);
    sw = sweep_start(&cfg);
    wait_idle(sw, &st);
    sweep_stop(sw);
    assert_int_equal(check_undo(s, 1u << 2, NULL, true), 0);
    assert_int_equal(room_count(s, "archive_undo"), 0);
    free(before.epoch);
    free(before.h);
    seeded_free(s);
}

/* A header that went through the wrong token and is no point any more (a
 * damaged row): it cannot be inverted, so it stays exactly as it is, every
 * other header is undone, and the undo stays pending (the revoked token is
 * still kept, the room not reported). */
static void test_undo_stuck(void **state)
{
    (void)state;
    seeded *s = seed_wrong("undo-stuck@rooms.localhost", 4, 1u << 1, 500);
    config cfg = sweep_config(2, 50);
    sweep *sw = sweep_start(&cfg);
    sweep_stats st;
    wait_idle(sw, &st);
    assert_int_equal(reported(sw, &s, 1), 1);
    size_t victim = 0;
    while (s->epoch[victim] != 1)
        victim++;
    char hex[33], lit[40];
    sodium_bin2hex(hex, sizeof hex, s->dkid[victim], 16);
    snprintf(lit, sizeof lit, "\\x%s", hex);
    PGconn *conn = pg(g_conninfo);
    const char *vals[] = {s->idtext, lit};
    PQclear(exec(conn,
                 "UPDATE datakeys SET header = decode(repeat('ff', 32), 'hex') "
                 "WHERE room_id = $1 AND dkid = $2",
                 2, vals));
    PQfinish(conn);
    revoke_steps(s, 1u << 1);
    sweep_kick(sw, s->id);
    wait_idle(sw, &st);
    PGresult *r = read_rows(s, &conn);
    for (size_t row = 0; row < s->n; row++) {
        size_t i = s->order[row];
        uint64_t e = be64_of(PQgetvalue(r, (int)row, 1));
        if (i == victim) {
            unsigned char ff[32];
            memset(ff, 0xff, sizeof ff);
            assert_int_equal(e, 4);
            assert_memory_equal(PQgetvalue(r, (int)row, 2), ff, 32);
        } else {
            assert_int_equal(e, undone_epoch(s, 1u << 1, i));
        }
    }
    PQclear(r);
    PQfinish(conn);
    assert_int_equal(st.headers_undone, count_undone(s, 1u << 1) - 1);
    assert_int_equal(st.undos_finished, 0);
    assert_int_equal(room_count(s, "archive_undo"), 1);
    assert_int_equal(reported(sw, &s, 1), 0);
    sweep_stop(sw);
    seeded_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_and_kicks),       cmocka_unit_test(test_two_sweeps_race),
        cmocka_unit_test(test_connection_loss),      cmocka_unit_test(test_sigkill),
        cmocka_unit_test(test_erasure_mid_sweep),    cmocka_unit_test(test_undo),
        cmocka_unit_test(test_undo_new_token_waits), cmocka_unit_test(test_undo_revoked_mid_sweep),
        cmocka_unit_test(test_undo_connection_loss), cmocka_unit_test(test_undo_sigkill),
        cmocka_unit_test(test_undo_stuck),
    };
    return cmocka_run_group_tests_name("sweep", tests, group_setup, group_teardown);
}
