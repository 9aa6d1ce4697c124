/* Archive re-encryption benchmark (issue 5, benchmarks a–c) against a
 * PostgreSQL of its own (tests/pg-scratch.sh, or $SEALROOM_TEST_PG) and no
 * XMPP server. The component's code is linked in and called as the daemon
 * calls it; the material is real (archive_common.h).
 *
 *  (a) The eager sweep (component/sweep.c with the product's defaults from
 *      the config table): one room of N headers (200,000; 1,000,000 with
 *      --full) at epoch e, then a token e→e+1, a kick, and the time until
 *      the sweep has re-keyed all N and is idle: headers per second. In the
 *      same run, interleaved (A B, then B A), the bare
 *      crypto_scalarmult_ristretto255 rate on 2 threads over the same N
 *      headers, the physical limit on the machine. Target ≥ 0.7×.
 *      Besides, where each sweep's time went: CPU of this process (the
 *      sweep's workers: multiplications, libpq), CPU of the PostgreSQL
 *      server's processes (from /proc, when the server is local), and what
 *      the rest of the machine did meanwhile (other processes, idle).
 *  (b) Removal to readable: 1,000,000 messages from 100 senders with a data
 *      key per SR_DATAKEY_MAX_USES messages (libclient) make 1,000 data-key
 *      headers, all at epoch e. A removal makes epoch f = e+1 (committed
 *      beforehand: that is the key-distribution run, issue 4's figure); the
 *      clock starts when its token reaches the component and stops when a
 *      member of f holds every header re-keyed to f. What the component
 *      does is modelled step by step with its own code: the token handler's
 *      lookup of both epochs' check headers, the check Δ·H_c(e) = H_c(f)
 *      (rk_apply), the INSERT, token_chain_put and the sweep kick (the sweep
 *      really runs and competes for the cores, as in the daemon); then the
 *      member's <datakeys/> reads, 100 ids each (SR_DATAKEY_FETCH_MAX), with
 *      datakey.c's SELECT, svc_bytea and the lazy path's token_chain_delta
 *      + rk_apply on every header still behind. Not modelled: the XMPP
 *      round trips and stanza encoding. Target < 100 ms.
 *  (c) The naive baseline, interleaved with (b): the member downloads every
 *      header with the same reads, unwraps each with k_e, wraps it again
 *      with k_f and uploads them, 100 per UPDATE (guarded by the epoch, one
 *      transaction each). The (b) line carries it as baseline and ratio.
 *
 * Every sweep and every read is checked afterwards: each stored and each
 * served header must be exactly k_f·P (a figure of a broken sweep is worth
 * nothing), and the run fails otherwise. Output: shared/BENCH.md.
 *
 *   bench_archive [--full] [--headers N] [--reps R] [--messages M]
 *                 [--senders S] [--threads T] [--batch B] [--quick]
 *
 * --threads and --batch override archive.sweep_threads and
 * archive.sweep_batch for experiments; --quick is the smoke run (small and
 * few, not timed). Exit status: 0 when everything ran and checked (whether
 * or not the targets were met), 1 on a failure, 2 on bad usage. */
#include <getopt.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "archive_common.h"
#include "config.h"
#include "e2e/archive.h"
#include "internal.h"
#include "log.h"
#include "rekey.h"
#include "service.h"
#include "sweep.h"

#ifndef BENCH_SOURCE_DIR
#define BENCH_SOURCE_DIR "."
#endif
#ifndef BENCH_BUILD_TYPE
#define BENCH_BUILD_TYPE ""
#endif

#define REPS_MAX 51
#define BASE_THREADS 2
#define TARGET_SWEEP_RATIO 0.7
#define TARGET_READABLE_MS 100.0
#define SWEEP_WAIT_MS (30.0 * 60 * 1000)

static int g_reps = 7;
static size_t g_headers = 200000;
static long long g_messages = 1000000;
static size_t g_senders = 100;
static int g_threads, g_batch; /* 0: the config table's default */
static bool g_quick;
static ac_pg g_pg;
static sweep *g_sweep;

typedef struct samples {
    double v[REPS_MAX];
    int n;
} samples;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const samples *s)
{
    double v[REPS_MAX];
    memcpy(v, s->v, (size_t)s->n * sizeof *v);
    qsort(v, (size_t)s->n, sizeof *v, cmp_double);
    return s->n % 2 ? v[s->n / 2] : (v[s->n / 2 - 1] + v[s->n / 2]) / 2;
}

static void add(samples *s, double v)
{
    if (s->n < REPS_MAX) s->v[s->n++] = v;
}

static void print_samples(const char *what, const samples *s, const char *unit)
{
    printf("  %-44s", what);
    for (int i = 0; i < s->n; i++)
        printf(" %.4g", s->v[i]);
    printf("  (median %.4g %s)\n", median(s), unit);
}

/* ---- where the time goes ---- */

static double self_cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

/* CPU ticks of a local process, -1 if unreadable. */
static long long proc_ticks(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* After the command name in parentheses: state is field 3, utime 14,
     * stime 15. */
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

/* The machine's CPU time (every core) in ms from /proc/stat: busy
 * (user, nice, system, irq, softirq), idle (idle, iowait) and steal (taken
 * by the hypervisor). False if unreadable. */
typedef struct sys_cpu {
    double busy, idle, steal;
} sys_cpu;

static bool sys_cpu_read(sys_cpu *c)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    int n = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                       &v[4], &v[5], &v[6], &v[7])
              : 0;
    if (f) fclose(f);
    if (n != 8) return false;
    double tick = 1e3 / (double)sysconf(_SC_CLK_TCK);
    c->busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) * tick;
    c->idle = (double)(v[3] + v[4]) * tick;
    c->steal = (double)v[7] * tick;
    return true;
}

/* The CPU of our PostgreSQL server: the postmaster and its children
 * (backends, walwriter, checkpointer, autovacuum workers that come and go),
 * polled during a sweep so that short-lived workers count too. ok is
 * false when the server is not a local process we can read. */
#define MAX_PG_PIDS 256
typedef struct pg_cpu {
    bool ok;
    int postmaster, n;
    int pid[MAX_PG_PIDS];
    long long start[MAX_PG_PIDS], last[MAX_PG_PIDS];
} pg_cpu;

static int parent_of(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    char buf[512];
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    int ppid = -1;
    if (!p || sscanf(p + 2, "%*c %d", &ppid) != 1) return -1;
    return ppid;
}

static void pg_cpu_note(pg_cpu *s, int pid, bool at_start)
{
    long long t = proc_ticks(pid);
    if (t < 0) return;
    for (int i = 0; i < s->n; i++)
        if (s->pid[i] == pid) {
            s->last[i] = t;
            return;
        }
    if (s->n == MAX_PG_PIDS) return;
    s->pid[s->n] = pid;
    /* A process born during the sweep spent all its time in it. */
    s->start[s->n] = at_start ? t : 0;
    s->last[s->n++] = t;
}

static void pg_cpu_poll(pg_cpu *s, bool at_start)
{
    if (!s || !s->ok) return;
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", s->postmaster, s->postmaster);
    FILE *f = fopen(path, "r");
    int pid;
    pg_cpu_note(s, s->postmaster, at_start);
    while (f && fscanf(f, "%d", &pid) == 1)
        pg_cpu_note(s, pid, at_start);
    if (f) fclose(f);
}

static void pg_cpu_begin(PGconn *c, pg_cpu *s)
{
    memset(s, 0, sizeof *s);
    s->postmaster = parent_of(PQbackendPID(c));
    s->ok = s->postmaster > 1 && proc_ticks(s->postmaster) >= 0;
    pg_cpu_poll(s, true);
}

static double pg_cpu_end_ms(pg_cpu *s)
{
    if (!s->ok) return -1;
    pg_cpu_poll(s, false);
    long long d = 0;
    for (int i = 0; i < s->n; i++)
        d += s->last[i] - s->start[i];
    return (double)d * 1e3 / (double)sysconf(_SC_CLK_TCK);
}

/* ---- the sweep ---- */

static int config_default(const char *key)
{
    size_t n = 0;
    const config_key_info *k = config_keys(&n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(k[i].name, key) == 0) return atoi(k[i].default_value);
    return 0;
}

/* Wait until the sweep has re-keyed `target` headers in all and is idle,
 * polling pc (may be NULL) now and then. */
static int wait_sweep(unsigned long long target, sweep_stats *st, pg_cpu *pc)
{
    double end = ac_now_ms() + SWEEP_WAIT_MS, poll = 0;
    for (;;) {
        if (ac_now_ms() >= poll) {
            pg_cpu_poll(pc, false);
            poll = ac_now_ms() + 100;
        }
        sweep_get_stats(g_sweep, st);
        if (st->headers_rekeyed >= target && st->rooms_pending == 0 && st->scan_done) return 0;
        if (st->errors) {
            fprintf(stderr, "the sweep gave up on %llu slice(s)\n", st->errors);
            return -1;
        }
        if (ac_now_ms() > end) {
            fprintf(stderr, "the sweep did not finish: %llu of %llu re-keyed\n",
                    st->headers_rekeyed, target);
            return -1;
        }
        ac_sleep_ms(1);
    }
}

/* ---- (a) sweep vs bare multiplications ---- */

typedef struct fig_a {
    samples sweep, bare;             /* headers per second */
    samples wall_ms, self_ms, pg_ms; /* per sweep */
    samples bare_cpu_us;             /* CPU per bare multiplication */
    /* The rest of the machine during each sweep and each bare run (ms):
     * other processes, idle cores, steal. */
    samples other_ms, idle_ms, steal_ms, bare_other_ms;
    unsigned long long batches;
} fig_a;

static int sweep_arm(PGconn *conn, ac_room *r, fig_a *f, bool keep)
{
    /* The same start for every repetition: updated pages cleaned up, no
     * checkpoint due. */
    if (!ac_ok(conn, "VACUUM datakeys", 0, NULL) || !ac_ok(conn, "CHECKPOINT", 0, NULL) ||
        ac_room_advance(conn, r, true, false, NULL) != 0)
        return -1;
    sweep_stats st;
    sweep_get_stats(g_sweep, &st);
    unsigned long long before = st.headers_rekeyed, batches = st.batches;
    pg_cpu pc;
    pg_cpu_begin(conn, &pc);
    sys_cpu m0, m1;
    bool sys_ok = sys_cpu_read(&m0);
    double cpu0 = self_cpu_ms(), t0 = ac_now_ms();
    sweep_kick(g_sweep, r->id);
    if (wait_sweep(before + r->n, &st, &pc) != 0) return -1;
    double ms = ac_now_ms() - t0, cpu = self_cpu_ms() - cpu0, pgms = pg_cpu_end_ms(&pc);
    sys_ok = sys_ok && sys_cpu_read(&m1) && pgms >= 0;
    if (st.headers_rekeyed != before + r->n) {
        fprintf(stderr, "the sweep re-keyed %llu headers, not %zu\n", st.headers_rekeyed - before,
                r->n);
        return -1;
    }
    if (keep) {
        add(&f->sweep, (double)r->n / (ms / 1e3));
        add(&f->wall_ms, ms);
        add(&f->self_ms, cpu);
        add(&f->pg_ms, pgms);
        f->batches = st.batches - batches;
        if (sys_ok) {
            add(&f->other_ms, m1.busy - m0.busy - cpu - pgms);
            add(&f->idle_ms, m1.idle - m0.idle);
            add(&f->steal_ms, m1.steal - m0.steal);
        }
    }
    return 0;
}

static int bare_arm(const ac_room *r, unsigned char (*tmp)[AC_PT], fig_a *f, bool keep)
{
    unsigned char s[32];
    do
        crypto_core_ristretto255_scalar_random(s);
    while (sodium_is_zero(s, 32));
    sys_cpu m0, m1;
    bool sys_ok = sys_cpu_read(&m0);
    double cpu0 = self_cpu_ms(), t0 = ac_now_ms();
    size_t bad = ac_mul_all(tmp, s, 0, (const unsigned char(*)[AC_PT])r->hfrom, r->n, BASE_THREADS);
    double ms = ac_now_ms() - t0, cpu = self_cpu_ms() - cpu0;
    sys_ok = sys_ok && sys_cpu_read(&m1);
    sodium_memzero(s, sizeof s);
    if (bad) {
        fprintf(stderr, "%zu bare multiplications failed\n", bad);
        return -1;
    }
    if (keep) {
        add(&f->bare, (double)r->n / (ms / 1e3));
        add(&f->bare_cpu_us, cpu * 1e3 / (double)r->n);
        if (sys_ok) add(&f->bare_other_ms, m1.busy - m0.busy - cpu);
    }
    return 0;
}

static int part_a(PGconn *conn, fig_a *f)
{
    printf("\n(a) sweep of %zu headers at epoch e with a token e->e+1, beside bare "
           "crypto_scalarmult_ristretto255 on %d threads (A B / B A, first repetition "
           "discarded)\n",
           g_headers, BASE_THREADS);
    fflush(stdout);
    double t0 = ac_now_ms();
    ac_room *r = ac_room_seed(conn, "sweep@rooms.bench.invalid", g_headers, g_senders, 1, 1, 1,
                              false, false, BASE_THREADS);
    unsigned char(*tmp)[AC_PT] = malloc(g_headers * AC_PT);
    int rc = -1;
    if (!r || !tmp) goto out;
    printf("  seeded in %.1f s\n", (ac_now_ms() - t0) / 1e3);
    fflush(stdout);
    for (int rep = 0; rep <= g_reps; rep++) {
        bool keep = rep > 0;
        if (rep % 2 == 0) {
            if (sweep_arm(conn, r, f, keep) != 0 || bare_arm(r, tmp, f, keep) != 0) goto out;
        } else {
            if (bare_arm(r, tmp, f, keep) != 0 || sweep_arm(conn, r, f, keep) != 0) goto out;
        }
    }
    size_t behind = 0;
    if (ac_room_check(conn, r, true, &behind) != 0) goto out;
    printf("  checked: all %zu stored headers are k_c*P at epoch %" PRIu64 "\n", r->n, r->c);
    print_samples("sweep, headers/s:", &f->sweep, "/s");
    print_samples("bare scalarmult on 2 threads, per s:", &f->bare, "/s");
    print_samples("sweep wall time, ms:", &f->wall_ms, "ms");
    print_samples("sweep process CPU (workers), ms:", &f->self_ms, "ms");
    if (median(&f->pg_ms) >= 0)
        print_samples("PostgreSQL processes CPU, ms:", &f->pg_ms, "ms");
    else
        printf("  PostgreSQL CPU: not readable from here (server not local)\n");
    print_samples("bare multiplication CPU, us each:", &f->bare_cpu_us, "us");
    samples ratio = {.n = 0};
    for (int i = 0; i < f->sweep.n; i++)
        add(&ratio, f->sweep.v[i] / f->bare.v[i]);
    print_samples("ratio of each repetition's pair:", &ratio, "x");
    /* Per header, beside the bare arm's CPU per multiplication; the rest
     * of the machine tells a slow sweep that waited from one that shared
     * its cores with other work. */
    double self = median(&f->self_ms), pgms = median(&f->pg_ms), n = (double)r->n;
    printf("  where a sweep's time goes (medians), per header: sweep workers %.1f us CPU (a bare "
           "multiplication alone: %.1f us), PostgreSQL %.1f us CPU\n",
           self * 1e3 / n, median(&f->bare_cpu_us), pgms >= 0 ? pgms * 1e3 / n : -1);
    if (f->other_ms.n) {
        printf("    meanwhile on the machine, per header: other processes %.1f us CPU, idle "
               "%.1f us, stolen by the hypervisor %.1f us; %llu batches per sweep\n",
               median(&f->other_ms) * 1e3 / n, median(&f->idle_ms) * 1e3 / n,
               median(&f->steal_ms) * 1e3 / n, f->batches);
        print_samples("other processes' CPU during each sweep, ms:", &f->other_ms, "ms");
        print_samples("other processes' CPU during each bare run, ms:", &f->bare_other_ms, "ms");
    }
    rc = 0;
out:
    free(tmp);
    ac_room_free(r);
    return rc;
}

/* ---- (b)/(c) removal to readable, lazy path vs naive member ---- */

#define SQL_FETCH                                                                                  \
    "SELECT dkid, epoch, sender, header FROM datakeys WHERE room_id = $1 AND dkid IN "             \
    "(SELECT substring($2::bytea FROM i * 16 + 1 FOR 16) "                                         \
    "FROM generate_series(0, $3::int - 1) AS i) ORDER BY dkid"
#define SQL_TOKEN_LOOKUP_EPOCHS                                                                    \
    "SELECT epoch, sealer, check_header FROM epochs WHERE room_id = $1 AND "                       \
    "epoch IN ($2::bigint, $3::bigint)"
#define SQL_TOKEN_LOOKUP_STORED                                                                    \
    "SELECT delta FROM archive_tokens WHERE room_id = $1 AND from_epoch = $2"
#define SQL_TOKEN_INSERT                                                                           \
    "INSERT INTO archive_tokens (room_id, from_epoch, to_epoch, delta, verified) "                 \
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, from_epoch) DO NOTHING"
#define SQL_UPLOAD                                                                                 \
    "UPDATE datakeys d SET header = v.h, epoch = $2 "                                              \
    "FROM unnest($3::bytea[], $4::bytea[]) AS v(dkid, h) "                                         \
    "WHERE d.room_id = $1 AND d.dkid = v.dkid AND d.epoch = $5"

typedef struct fig_b {
    samples lazy, naive, unwrap; /* ms */
    size_t headers;
} fig_b;

/* One <datakeys/> read of ids [from, to): the component's SELECT. */
static PGresult *fetch(PGconn *conn, const ac_room *r, size_t from, size_t to)
{
    char cnt[16];
    snprintf(cnt, sizeof cnt, "%zu", to - from);
    const char *p[3] = {r->idtext, (const char *)r->dkid[from], cnt};
    int l[3] = {0, (int)((to - from) * AC_DKID), 0}, fm[3] = {0, 1, 0};
    PGresult *res = PQexecParams(conn, SQL_FETCH, 3, NULL, p, l, fm, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || (size_t)PQntuples(res) != to - from) {
        fprintf(stderr, "fetch: %s (%d rows)\n", PQresultErrorMessage(res), PQntuples(res));
        PQclear(res);
        return NULL;
    }
    return res;
}

/* The token reaches the component: token.c's looked_up and stored. */
static int token_arrives(PGconn *conn, ac_room *r, room *rm, const unsigned char delta[32])
{
    uint64_t from = r->c - 1, to = r->c;
    char f[24], t[24];
    snprintf(f, sizeof f, "%" PRIu64, from);
    snprintf(t, sizeof t, "%" PRIu64, to);
    const char *p[3] = {r->idtext, f, t};
    PGresult *ep = ac_exec(conn, SQL_TOKEN_LOOKUP_EPOCHS, 3, p);
    PGresult *tk = ac_exec(conn, SQL_TOKEN_LOOKUP_STORED, 2, p);
    int rc = -1;
    unsigned char hc_from[32], hc_to[32], moved[32];
    bool have_from = false, have_to = false;
    for (int i = 0; ep && i < PQntuples(ep); i++) {
        uint64_t e = strtoull(PQgetvalue(ep, i, 0), NULL, 10);
        if (e == from) have_from = svc_bytea(ep, i, 2, hc_from, 32) == 32;
        if (e == to) have_to = svc_bytea(ep, i, 2, hc_to, 32) == 32;
    }
    if (!ep || !tk || PQntuples(tk) != 0 || !have_from || !have_to ||
        !rk_apply(moved, delta, hc_from) || sodium_memcmp(moved, hc_to, 32) != 0) {
        fprintf(stderr, "the token did not check out against the check headers\n");
        goto out;
    }
    const char *ip[5] = {r->idtext, f, t, (const char *)delta, "t"};
    int il[5] = {0, 0, 0, 32, 0}, ifm[5] = {0, 0, 0, 1, 0};
    PGresult *ins = PQexecParams(conn, SQL_TOKEN_INSERT, 5, NULL, ip, il, ifm, 0);
    bool ok = PQresultStatus(ins) == PGRES_COMMAND_OK;
    if (!ok) fprintf(stderr, "token insert: %s", PQresultErrorMessage(ins));
    PQclear(ins);
    if (!ok || !token_chain_put(rm, from, delta)) goto out;
    sweep_kick(g_sweep, r->id);
    rc = 0;
out:
    PQclear(ep);
    PQclear(tk);
    return rc;
}

/* The lazy arm: token, then every header read through the lazy path.
 * served/served_epoch receive what the member got (checked afterwards). */
static int lazy_arm(PGconn *conn, ac_room *r, room *rm, unsigned char (*served)[AC_PT],
                    uint64_t *served_epoch, double *ms)
{
    unsigned char delta[32];
    if (ac_room_advance(conn, r, false, true, NULL) != 0 ||
        sr_e2e_token_make(delta, r->k[r->c - 1], r->k[r->c]) != SR_E2E_OK)
        return -1;
    rm->current_epoch = r->c;
    double t0 = ac_now_ms();
    int rc = token_arrives(conn, r, rm, delta);
    sodium_memzero(delta, sizeof delta);
    for (size_t from = 0; rc == 0 && from < r->n; from += SR_DATAKEY_FETCH_MAX) {
        size_t to = from + SR_DATAKEY_FETCH_MAX < r->n ? from + SR_DATAKEY_FETCH_MAX : r->n;
        PGresult *res = fetch(conn, r, from, to);
        if (!res) return -1;
        for (size_t i = from; i < to; i++) {
            int row = (int)(i - from);
            unsigned char h[32], d[32], moved[32];
            uint64_t e = strtoull(PQgetvalue(res, row, 1), NULL, 10), c = rm->current_epoch;
            if (svc_bytea(res, row, 3, h, 32) != 32) rc = -1;
            if (e < c && token_chain_delta(rm, e, c, d) && rk_apply(moved, d, h)) {
                memcpy(h, moved, 32);
                e = c;
            }
            sodium_memzero(d, sizeof d);
            memcpy(served[i], h, 32);
            served_epoch[i] = e;
        }
        PQclear(res);
    }
    *ms = ac_now_ms() - t0;
    return rc;
}

/* The naive arm: the member re-wraps every header and uploads it. */
static int naive_arm(PGconn *conn, ac_room *r, double *ms)
{
    if (ac_room_advance(conn, r, false, true, NULL) != 0) return -1;
    const unsigned char *ke = r->k[r->c - 1], *kf = r->k[r->c];
    char ce[24], ee[24];
    snprintf(ce, sizeof ce, "%" PRIu64, r->c);
    snprintf(ee, sizeof ee, "%" PRIu64, r->c - 1);
    /* Text arrays of one upload. */
    char *adk = malloc(SR_DATAKEY_FETCH_MAX * (4 + 2 * AC_DKID) + 3),
         *ah = malloc(SR_DATAKEY_FETCH_MAX * (4 + 2 * AC_PT) + 3);
    int rc = adk && ah ? 0 : -1;
    double t0 = ac_now_ms();
    for (size_t from = 0; rc == 0 && from < r->n; from += SR_DATAKEY_FETCH_MAX) {
        size_t to = from + SR_DATAKEY_FETCH_MAX < r->n ? from + SR_DATAKEY_FETCH_MAX : r->n;
        PGresult *res = fetch(conn, r, from, to);
        if (!res) {
            rc = -1;
            break;
        }
        char *pd = adk, *ph = ah;
        *pd++ = '{';
        *ph++ = '{';
        for (size_t i = from; i < to && rc == 0; i++) {
            int row = (int)(i - from);
            unsigned char dkid[AC_DKID], h[32], p[32], hf[32];
            if (svc_bytea(res, row, 0, dkid, AC_DKID) != AC_DKID ||
                svc_bytea(res, row, 3, h, 32) != 32 ||
                sr_e2e_header_unwrap(p, ke, h) != SR_E2E_OK ||
                sr_e2e_header_wrap(hf, kf, p) != SR_E2E_OK) {
                fprintf(stderr, "naive: header %zu does not open under k_e\n", i);
                rc = -1;
            }
            sodium_memzero(p, sizeof p);
            if (i > from) {
                *pd++ = ',';
                *ph++ = ',';
            }
            memcpy(pd, "\\\\x", 3);
            sodium_bin2hex(pd + 3, 2 * AC_DKID + 1, dkid, AC_DKID);
            pd += 3 + 2 * AC_DKID;
            memcpy(ph, "\\\\x", 3);
            sodium_bin2hex(ph + 3, 2 * AC_PT + 1, hf, AC_PT);
            ph += 3 + 2 * AC_PT;
        }
        PQclear(res);
        strcpy(pd, "}");
        strcpy(ph, "}");
        const char *up[5] = {r->idtext, ce, adk, ah, ee};
        PGresult *u = rc == 0 ? ac_exec(conn, SQL_UPLOAD, 5, up) : NULL;
        if (u && strtoull(PQcmdTuples(u), NULL, 10) != to - from) {
            fprintf(stderr, "naive: an upload updated %s of %zu rows\n", PQcmdTuples(u), to - from);
            rc = -1;
        }
        if (!u) rc = -1;
        PQclear(u);
    }
    *ms = ac_now_ms() - t0;
    free(adk);
    free(ah);
    return rc;
}

/* What a member of f then spends opening every header it got. */
static double unwrap_all_ms(const ac_room *r, const unsigned char (*served)[AC_PT])
{
    unsigned char p[32];
    double t0 = ac_now_ms();
    for (size_t i = 0; i < r->n; i++)
        if (sr_e2e_header_unwrap(p, r->k[r->c], served[i]) != SR_E2E_OK ||
            memcmp(p, r->p[i], 32) != 0)
            return -1;
    double ms = ac_now_ms() - t0;
    sodium_memzero(p, sizeof p);
    return ms;
}

static int part_b(PGconn *conn, fig_b *f)
{
    size_t per_sender = (size_t)((g_messages + (long long)g_senders * SR_DATAKEY_MAX_USES - 1) /
                                 ((long long)g_senders * SR_DATAKEY_MAX_USES));
    size_t n = per_sender * g_senders;
    f->headers = n;
    printf("\n(b)/(c) removal to readable: %lld messages from %zu senders, a data key per %u "
           "messages (SR_DATAKEY_MAX_USES) = %zu headers at epoch e;\n"
           "  lazy path (token, then %zu reads of %u) vs naive member re-wrap, interleaved, "
           "first repetition discarded\n",
           g_messages, g_senders, SR_DATAKEY_MAX_USES, n,
           (n + SR_DATAKEY_FETCH_MAX - 1) / SR_DATAKEY_FETCH_MAX, SR_DATAKEY_FETCH_MAX);
    fflush(stdout);
    const uint64_t e0 = 10; /* some history: the room is at its tenth epoch */
    ac_room *r = ac_room_seed(conn, "archive@rooms.bench.invalid", n, g_senders, e0, e0, e0, true,
                              true, BASE_THREADS);
    unsigned char(*served)[AC_PT] = malloc(n * AC_PT);
    uint64_t *served_epoch = malloc(n * sizeof *served_epoch);
    room rm;
    memset(&rm, 0, sizeof rm);
    int rc = -1;
    if (!r || !served || !served_epoch) goto out;
    rm.id = r->id;
    rm.name = r->name;
    rm.current_epoch = r->c;
    for (int rep = 0; rep <= g_reps; rep++) {
        bool keep = rep > 0;
        for (int arm = 0; arm < 2; arm++) {
            bool lazy = (arm == 0) == (rep % 2 == 0);
            double ms = 0;
            if (!ac_ok(conn, "CHECKPOINT", 0, NULL)) goto out;
            if (lazy) {
                if (lazy_arm(conn, r, &rm, served, served_epoch, &ms) != 0 || ac_room_want(r) != 0)
                    goto out;
                for (size_t i = 0; i < n; i++)
                    if (served_epoch[i] != r->c || memcmp(served[i], r->want[i], 32) != 0) {
                        fprintf(stderr, "lazy: header %zu served wrong (epoch %" PRIu64 ")\n", i,
                                served_epoch[i]);
                        goto out;
                    }
                double um = unwrap_all_ms(r, (const unsigned char(*)[AC_PT])served);
                if (um < 0) {
                    fprintf(stderr, "lazy: a served header does not open to its data key\n");
                    goto out;
                }
                /* Let the sweep the token kicked finish: the next arm starts
                 * with every header at the current epoch. */
                sweep_stats st;
                sweep_get_stats(g_sweep, &st);
                if (wait_sweep(0, &st, NULL) != 0) goto out;
                if (keep) {
                    add(&f->lazy, ms);
                    add(&f->unwrap, um);
                }
            } else {
                if (naive_arm(conn, r, &ms) != 0) goto out;
                if (keep) add(&f->naive, ms);
            }
            size_t behind = 0;
            if (ac_room_check(conn, r, true, &behind) != 0) {
                fprintf(stderr, "after the %s arm the stored headers are wrong\n",
                        lazy ? "lazy" : "naive");
                goto out;
            }
        }
    }
    printf("  checked: every served header was k_f*P at f, every stored one too after each arm\n");
    print_samples("lazy: token arrives -> all served at f, ms:", &f->lazy, "ms");
    print_samples("naive: download, unwrap, re-wrap, upload, ms:", &f->naive, "ms");
    print_samples("member then unwraps all (both worlds), ms:", &f->unwrap, "ms");
    rc = 0;
out:
    token_chain_free(&rm);
    free(served);
    free(served_epoch);
    ac_room_free(r);
    return rc;
}

/* ---- main ---- */

static void usage(FILE *o)
{
    fprintf(o, "usage: bench_archive [--full] [--headers N] [--reps R] [--messages M] "
               "[--senders S] [--threads T] [--batch B] [--quick]\n");
}

static void print_machine(void)
{
    char model[256] = "unknown", line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0) {
            char *p = strchr(line, ':');
            if (p) snprintf(model, sizeof model, "%s", p + 2);
            model[strcspn(model, "\n")] = '\0';
            break;
        }
    if (f) fclose(f);
    char *pgv = ac_pg_version(&g_pg);
    printf("machine: %ld cores, %s\n", sysconf(_SC_NPROCESSORS_ONLN), model);
    printf("postgresql: %s (%s)\n", pgv ? pgv : "unknown",
           g_pg.scratch[0] ? "scratch cluster, tests/pg-scratch.sh" : "$SEALROOM_TEST_PG");
    printf("xmpp server: none (the sweep and the lazy path run without one)\n");
    printf("libsodium: %s\n", sodium_version_string());
    printf("build: %s\n", BENCH_BUILD_TYPE);
    printf("parameters: (a) %zu headers, sweep_threads %d, sweep_batch %d; (b)/(c) %lld "
           "messages, %zu senders; %d repetitions + 1 discarded\n",
           g_headers, g_threads, g_batch, g_messages, g_senders, g_reps);
    free(pgv);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"full", no_argument, NULL, 'f'},          {"headers", required_argument, NULL, 'n'},
        {"reps", required_argument, NULL, 'r'},    {"messages", required_argument, NULL, 'm'},
        {"senders", required_argument, NULL, 's'}, {"threads", required_argument, NULL, 't'},
        {"batch", required_argument, NULL, 'b'},   {"quick", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            g_headers = 1000000;
            break;
        case 'n':
            g_headers = strtoull(optarg, NULL, 10);
            break;
        case 'r':
            g_reps = atoi(optarg);
            break;
        case 'm':
            g_messages = atoll(optarg);
            break;
        case 's':
            g_senders = strtoull(optarg, NULL, 10);
            break;
        case 't':
            g_threads = atoi(optarg);
            break;
        case 'b':
            g_batch = atoi(optarg);
            break;
        case 'q':
            g_quick = true;
            g_headers = 2000;
            g_reps = 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || g_headers < 1 || g_reps < 1 || g_reps >= REPS_MAX || g_messages < 1 ||
        g_senders < 1) {
        usage(stderr);
        return 2;
    }
    if (sodium_init() < 0) return 1;
    log_set_level(LOG_LVL_WARN);
    if (!g_threads) g_threads = config_default("archive.sweep_threads");
    if (!g_batch) g_batch = config_default("archive.sweep_batch");
    const char *src = getenv("SEALROOM_SOURCE_DIR");
    if (ac_pg_open(&g_pg, src && src[0] ? src : BENCH_SOURCE_DIR, "sealroom_bench_archive") != 0)
        return 1;
    print_machine();
    PGconn *conn = ac_connect(g_pg.conninfo);
    config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.db_conninfo = g_pg.conninfo;
    cfg.sweep_threads = g_threads;
    cfg.sweep_batch = g_batch;
    fig_a fa;
    fig_b fb;
    memset(&fa, 0, sizeof fa);
    memset(&fb, 0, sizeof fb);
    int rc = 1;
    sweep_stats st;
    if (!conn || !(g_sweep = sweep_start(&cfg)) || wait_sweep(0, &st, NULL) != 0) goto out;
    if (part_a(conn, &fa) != 0 || part_b(conn, &fb) != 0) goto out;

    double sw = median(&fa.sweep), bare = median(&fa.bare), lazy = median(&fb.lazy),
           naive = median(&fb.naive), ratio_a = sw / bare;
    int met = (ratio_a >= TARGET_SWEEP_RATIO) + (lazy < TARGET_READABLE_MS);
    printf("\n");
    if (ratio_a < TARGET_SWEEP_RATIO)
        printf("NOT MET: the sweep reaches %.2fx the bare rate, below the target of %.1fx\n",
               ratio_a, TARGET_SWEEP_RATIO);
    if (lazy >= TARGET_READABLE_MS)
        printf("NOT MET: removal to readable takes %.1f ms, not under %.0f ms\n", lazy,
               TARGET_READABLE_MS);
    printf("RESULT archive.sweep.n%zu.headers_per_s %.0f headers/s baseline "
           "scalarmult.2threads.headers_per_s %.0f headers/s ratio %.2f target >=%.1f\n",
           g_headers, sw, bare, ratio_a, TARGET_SWEEP_RATIO);
    printf("RESULT archive.removal_to_readable.m%lld.s%zu.lazy.ms %.1f ms baseline "
           "archive.removal_to_readable.naive_member_rewrap.ms %.1f ms ratio %.3f target <%.0f\n",
           g_messages, g_senders, lazy, naive, lazy / naive, TARGET_READABLE_MS);
    printf("RESULT archive.member_unwrap_all.h%zu.ms %.1f ms baseline none - - ratio - target -\n",
           fb.headers, median(&fb.unwrap));
    printf("VERDICT met %d/2\n", met);
    rc = 0;
out:
    sweep_stop(g_sweep);
    PQfinish(conn);
    ac_pg_close(&g_pg);
    if (rc) fprintf(stderr, "bench_archive: FAILED\n");
    return rc;
}
