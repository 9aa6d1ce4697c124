/* Wall-clock time to a new epoch with every member online through a real
 * XMPP server (issue 4 item 6 c): N libsealroom sessions (default 100) in
 * one room; A B A B … repetitions of
 *   A  a multi-cast key distribution run: one member asks the room for a
 *      new epoch (sealroom_room_rekey), sealroomd runs the two rounds and
 *      the confirmation with every session, commits, announces;
 *   B  the envelope baseline of the previous issue: one member fetches the
 *      bundles, seals S_e to every member and stores the epoch (the
 *      library's lone-member path, called directly);
 * each timed from the request to the moment the last member holds the new
 * epoch, with sealroomd's CPU time over the same span (from /proc). Prints
 * medians in the shape of shared/BENCH.md. Needs the dev stack's
 * environment and the users PREFIX001..PREFIXnnn registered (see
 * run-dmkd-live.sh). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "e2e_common.h"
#include "internal.h"

#define MAX_MEMBERS 1000

static e2e_lib *u[MAX_MEMBERS];
static size_t n = 100;
static char room[256];

static void pump_all(void)
{
    for (size_t i = 0; i < n; i++) (void)sealroom_client_run(u[i]->l->client, 0);
}

static uint64_t epoch_of(size_t i)
{
    uint64_t e = 0;
    return sealroom_room_epoch(e2e_ctx(u[i]), &e, room) == SEALROOM_OK ? e : 0;
}

static bool all_at(uint64_t want)
{
    for (size_t i = 0; i < n; i++)
        if (epoch_of(i) < want) return false;
    return true;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* utime + stime of pid in milliseconds, or -1. */
static double cpu_ms(long pid)
{
    if (pid <= 0) return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long ut = 0, st = 0;
    /* Fields after the command: state is 3rd; utime 14th, stime 15th. */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int k)
{
    qsort(v, (size_t)k, sizeof *v, cmp_double);
    return k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
}

/* One new epoch by either path; returns wall ms, sealroomd CPU ms in *cpu. */
static double one_epoch(bool run, size_t starter, long pid, double *cpu)
{
    uint64_t before = epoch_of(starter);
    for (size_t i = 0; i < n; i++)
        if (epoch_of(i) > before) before = epoch_of(i);
    double c0 = cpu_ms(pid), t0 = now_ms();
    if (run) {
        uint32_t req = 0;
        IT_OK(sealroom_room_rekey(e2e_ctx(u[starter]), &req, room));
    } else {
        sealroom_ctx *ctx = e2e_ctx(u[starter]);
        sr_room *rm = sr_room_find(ctx, room);
        IT_CHECK(rm != NULL, "the starter has no room state");
        IT_OK(sr_rotate(ctx, rm, 0));
    }
    while (!all_at(before + 1)) {
        IT_CHECK(now_ms() - t0 < 120000, "no new epoch within two minutes (%s)",
                 run ? "run" : "envelopes");
        pump_all();
    }
    double t1 = now_ms();
    *cpu = pid > 0 ? cpu_ms(pid) - c0 : -1;
    return t1 - t0;
}

int main(int argc, char **argv)
{
    const char *prefix = "dk";
    int reps = 5;
    long pid = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--members") == 0 && i + 1 < argc) n = (size_t)atoi(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--prefix") == 0 && i + 1 < argc) prefix = argv[++i];
        else if (strcmp(argv[i], "--pid-sealroomd") == 0 && i + 1 < argc) pid = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_dmkd_live [--members N] [--reps R] [--prefix P] "
                            "[--pid-sealroomd PID]\n");
            return 2;
        }
    }
    if (n < 2 || n > MAX_MEMBERS || reps < 1 || reps > 100) {
        fprintf(stderr, "bench_dmkd_live: 2 <= members <= %d, 1 <= reps <= 100\n", MAX_MEMBERS);
        return 2;
    }
    it_init("bench_dmkd_live");
    if (sodium_init() < 0) return 1;
    printf("machine: %ld cores\n", sysconf(_SC_NPROCESSORS_ONLN));
    printf("libsodium %s; members %zu; repetitions %d (A B A B …, medians)\n",
           sodium_version_string(), n, reps);
    double t_setup = now_ms();
    for (size_t i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s%03zu", prefix, i + 1);
        u[i] = e2e_connect(name, true);
        it_lib_register(u[i]->l);
    }
    it_new_room(room, sizeof room, "bench-dmkd");
    it_lib_create(u[0]->l, room);
    for (size_t i = 1; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s%03zu", prefix, i + 1);
        it_lib_add(u[0]->l, room, name, SEALROOM_ROLE_MEMBER);
    }
    for (size_t i = 0; i < n; i++) {
        char nick[64];
        snprintf(nick, sizeof nick, "m%03zu", i + 1);
        uint32_t req = 0;
        IT_OK(sealroom_room_join(e2e_ctx(u[i]), &req, room, nick));
        while (!it_lib_done(u[i]->l, req)) pump_all();
        IT_CHECK(it_lib_done(u[i]->l, req)->result == SEALROOM_OK, "join %zu failed", i);
    }
    /* Let the joins' presence storm and any pending epoch settle. */
    for (double t = now_ms(); now_ms() - t < 2000;) pump_all();
    printf("setup: %zu members connected, registered and joined in %.1f s\n", n,
           (now_ms() - t_setup) / 1000);
    /* Warm-up: one of each, not counted. */
    double cpu;
    one_epoch(true, 1, pid, &cpu);
    one_epoch(false, 1, pid, &cpu);
    double *run_ms = calloc((size_t)reps, sizeof *run_ms), *env_ms = calloc((size_t)reps, sizeof *env_ms);
    double *run_cpu = calloc((size_t)reps, sizeof *run_cpu), *env_cpu = calloc((size_t)reps, sizeof *env_cpu);
    IT_CHECK(run_ms && env_ms && run_cpu && env_cpu, "out of memory");
    for (int r = 0; r < reps; r++) {
        size_t starter = (size_t)(r * 7 + 3) % n;
        run_ms[r] = one_epoch(true, starter, pid, &run_cpu[r]);
        env_ms[r] = one_epoch(false, starter, pid, &env_cpu[r]);
        printf("rep %d: run %.0f ms (sealroomd %.0f ms CPU), envelopes %.0f ms (sealroomd %.0f ms "
               "CPU)\n",
               r + 1, run_ms[r], run_cpu[r], env_ms[r], env_cpu[r]);
        fflush(stdout);
    }
    double a = median(run_ms, reps), b = median(env_ms, reps);
    double ac = median(run_cpu, reps), bc = median(env_cpu, reps);
    printf("RESULT dmkd.live.n%zu.epoch_wall_ms %.0f ms baseline envelopes.live.n%zu %.0f ms "
           "ratio %.2f target none\n",
           n, a, n, b, a / b);
    if (pid > 0)
        printf("RESULT dmkd.live.n%zu.sealroomd_cpu_ms %.0f ms baseline envelopes.live.n%zu %.0f "
               "ms ratio %.2f target none\n",
               n, ac, n, bc, bc > 0 ? ac / bc : 0);
    printf("VERDICT met 0/0\n");
    for (size_t i = 0; i < n; i++) e2e_lib_free(u[i]);
    free(run_ms);
    free(env_ms);
    free(run_cpu);
    free(env_cpu);
    return 0;
}
