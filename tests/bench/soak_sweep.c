/* The sweep's crash soak (issue 5): the real sealroomd binary over a
 * throwaway PostgreSQL (tests/pg-scratch.sh; no XMPP server: the sweep
 * starts before the link and runs without it) re-keys one room of N
 * headers (200,000 by default) seeded at epochs 1..3 with the tokens
 * 1→2→3→4, at epoch 4 (archive_common.h: real keys and headers).
 *
 *  1. sealroomd is SIGKILLed K times (20) and started again each time. Two
 *     kills in three come a random moment after the run has committed its
 *     first batch (spread so that the room is rarely finished before the
 *     last), the third a random moment from exec (start-up, scan,
 *     counting, first batches). After every kill each row must be either
 *     untouched or exactly k_c·P at the current epoch c; then a last run
 *     finishes and every row must be exactly k_c·P: none lost, none
 *     re-keyed twice (that would be another point), none left behind.
 *  2. A new epoch with its token puts every header behind again, sealroomd
 *     runs, and PostgreSQL is restarted M times (20) mid-sweep (a random
 *     moment after progress since the last restart). sealroomd must
 *     survive each restart; the rows are checked after each and exactly at
 *     the end, as above.
 * Should a room be finished before its kills or restarts are used up, the
 * soak gives it a new epoch (re-arms) and carries on; it fails unless at
 * least half of the kills and half of the restarts landed mid-sweep (the
 * run had re-keyed some headers and not all).
 *
 *   soak_sweep --sealroomd PATH [--headers N] [--kills K] [--pg-restarts M]
 *
 * $SEALROOM_SOURCE_DIR (or the source tree built from) gives
 * tests/pg-scratch.sh and sql/. It always starts its own cluster (it must
 * restart it). Exit 0 when every check passed, 1 otherwise, 2 on bad usage. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "archive_common.h"
#include "e2e/archive.h"
#include "log.h"

#ifndef BENCH_SOURCE_DIR
#define BENCH_SOURCE_DIR "."
#endif

#define PROGRESS_WAIT_MS 120000.0
#define FINISH_WAIT_MS 600000.0
#define EARLY_KILL_MS 150.0
#define POLL_MS 10.0
#define STOP_WAIT_MS 30000.0

static const char *g_sealroomd;
static char g_src[1024];
static char g_run[256]; /* config and log */
static char g_conf[300], g_log[300];
static ac_pg g_pg;
static PGconn *g_conn;
static pid_t g_child = -1;

/* ---- sealroomd ---- */

static int write_config(int batch)
{
    FILE *f = fopen(g_conf, "w");
    if (!f) return -1;
    fprintf(f, "[component]\njid = rooms.soak.invalid\nsecret = \"soak\"\n");
    /* Nothing listens there: the link retries now and then. */
    fprintf(f, "[xmpp]\nhost = 127.0.0.1\nport = 9\nreconnect_min_ms = 5000\n");
    fprintf(f, "[db]\nconninfo = \"");
    for (const char *p = g_pg.conninfo; *p; p++) {
        if (*p == '"' || *p == '\\') fputc('\\', f);
        fputc(*p, f);
    }
    fprintf(f, "\"\n[log]\nfile = -\nlevel = info\n");
    if (batch > 0) fprintf(f, "[archive]\nsweep_batch = %d\n", batch);
    return fclose(f) == 0 ? 0 : -1;
}

static int start_sealroomd(void)
{
    char sql[1100];
    snprintf(sql, sizeof sql, "%s/sql", g_src);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(g_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(g_sealroomd, "sealroomd", "-c", g_conf, "--sql-dir", sql, (char *)NULL);
        _exit(127);
    }
    g_child = pid;
    return 0;
}

static bool child_alive(void)
{
    int status;
    if (g_child < 0) return false;
    pid_t w = waitpid(g_child, &status, WNOHANG);
    if (w == 0) return true;
    fprintf(stderr, "sealroomd exited by itself (%s %d); see %s\n",
            WIFSIGNALED(status) ? "signal" : "status",
            WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), g_log);
    g_child = -1;
    return false;
}

static void kill_child(void)
{
    if (g_child < 0) return;
    kill(g_child, SIGKILL);
    waitpid(g_child, NULL, 0);
    g_child = -1;
}

/* Wait until the running sealroomd has connected to PostgreSQL: from then
 * on a SIGTERM is a graceful stop (before, it ends the start-up with a
 * failure status, or kills a process that has not blocked it yet). Its
 * log line "applying migrations" follows the connection. */
static int wait_started(void)
{
    char tag[32];
    snprintf(tag, sizeof tag, "-%d)", (int)g_child);
    double end = ac_now_ms() + STOP_WAIT_MS;
    while (ac_now_ms() < end && child_alive()) {
        FILE *f = fopen(g_log, "r");
        char line[1024];
        bool ours = false, ready = false;
        while (f && !ready && fgets(line, sizeof line, f)) {
            if (strstr(line, "starting (instance ")) ours = strstr(line, tag) != NULL;
            ready = ours && strstr(line, "applying migrations") != NULL;
        }
        if (f) fclose(f);
        if (ready) return 0;
        ac_sleep_ms(POLL_MS);
    }
    fprintf(stderr, "sealroomd did not start (no \"applying migrations\" in %s)\n", g_log);
    return -1;
}

/* SIGTERM once started, and wait: a graceful stop must exit 0. */
static int stop_sealroomd(void)
{
    if (wait_started() != 0) return -1;
    kill(g_child, SIGTERM);
    double end = ac_now_ms() + STOP_WAIT_MS;
    int status;
    pid_t w;
    while ((w = waitpid(g_child, &status, WNOHANG)) == 0 && ac_now_ms() < end)
        ac_sleep_ms(POLL_MS);
    if (w == 0) {
        fprintf(stderr, "sealroomd did not stop on SIGTERM\n");
        kill_child();
        return -1;
    }
    g_child = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "sealroomd stopped with status %d\n", status);
        return -1;
    }
    return 0;
}

/* ---- the room ---- */

static long long behind_now(const ac_room *r)
{
    if (PQstatus(g_conn) != CONNECTION_OK) PQreset(g_conn);
    return ac_count_behind(g_conn, r);
}

/* Wait until fewer than `than` rows are behind (the running sealroomd has
 * committed a batch), or until none is. */
static long long wait_progress(const ac_room *r, long long than, double timeout_ms)
{
    double end = ac_now_ms() + timeout_ms;
    for (;;) {
        long long b = behind_now(r);
        if (b < 0) return -1;
        if (b < than || b == 0) return b;
        if (!child_alive()) return -1;
        if (ac_now_ms() > end) {
            fprintf(stderr, "no progress within %.0f s (%lld behind); see %s\n", timeout_ms / 1e3,
                    b, g_log);
            return -1;
        }
        ac_sleep_ms(POLL_MS);
    }
}

/* All rows are at c (checked exactly): a new epoch puts them behind. The
 * headers wanted at the new epoch are computed now, before a sweep runs,
 * so that the checks do not take the sweep's cores. */
static int rearm(ac_room *r)
{
    size_t behind = 0;
    if (ac_room_check(g_conn, r, true, &behind) != 0 ||
        ac_room_advance(g_conn, r, true, true, NULL) != 0)
        return -1;
    return ac_room_want(r);
}

/* A random pause in which the sweep moves at most about a (slots + 1)th of
 * the `left` rows, at `rate` rows/ms (0: unknown yet), so that the room is
 * rarely finished before the last of `slots` interruptions. */
static double pause_ms(long long left, int slots, double rate)
{
    double most = rate > 0 ? (double)left / (slots + 1) / rate : 100;
    return (double)randombytes_uniform((uint32_t)most + 1);
}

typedef struct tally {
    int mid;      /* landed with some of the room re-keyed by that run, not all */
    int startup;  /* (kills) before the run had re-keyed anything */
    int finished; /* the room was done when it landed */
    int rearms;
} tally;

static void classify(tally *t, long long before, long long after)
{
    if (after == 0)
        t->finished++;
    else if (after < before)
        t->mid++;
    else
        t->startup++;
}

/* ---- phase 1: SIGKILL ---- */

static int phase_kill(ac_room *r, int kills, tally *t)
{
    double rate = 0;
    for (int k = 0; k < kills; k++) {
        long long b0 = behind_now(r);
        if (b0 < 0) return -1;
        if (b0 == 0) {
            if (rearm(r) != 0) return -1;
            t->rearms++;
            b0 = (long long)r->n;
        }
        if (start_sealroomd() != 0) return -1;
        bool early = k % 3 == 2;
        double tp = 0;
        long long bp = b0;
        if (early) {
            /* Start-up (connecting, the scan, counting) and a little more. */
            ac_sleep_ms(EARLY_KILL_MS * randombytes_uniform(1001) / 1000.0 +
                        pause_ms(b0, kills - k, rate));
        } else {
            if ((bp = wait_progress(r, b0, PROGRESS_WAIT_MS)) < 0) return -1;
            tp = ac_now_ms();
            ac_sleep_ms(pause_ms(bp, kills - k, rate));
        }
        if (!child_alive()) return -1;
        double tk = ac_now_ms();
        kill_child();
        size_t after = 0;
        if (ac_room_check(g_conn, r, false, &after) != 0) {
            fprintf(stderr, "after kill %d the rows are not consistent\n", k + 1);
            return -1;
        }
        if (!early && tk - tp > 20 && bp > (long long)after)
            rate = (double)(bp - (long long)after) / (tk - tp);
        classify(t, b0, (long long)after);
        printf("  kill %2d: %s, %lld -> %zu behind\n", k + 1,
               early ? "at a random moment from exec" : "after progress", b0, after);
        fflush(stdout);
    }
    /* A last run finishes the room. */
    if (start_sealroomd() != 0 || wait_progress(r, 1, FINISH_WAIT_MS) != 0 || stop_sealroomd() != 0)
        return -1;
    size_t behind = 0;
    return ac_room_check(g_conn, r, true, &behind);
}

/* ---- phase 2: PostgreSQL restarts ---- */

static int phase_restart(ac_room *r, int restarts, tally *t)
{
    double rate = 0;
    if (rearm(r) != 0 || start_sealroomd() != 0) return -1;
    for (int m = 0; m < restarts; m++) {
        long long b0 = behind_now(r);
        if (b0 < 0) return -1;
        if (b0 == 0) {
            /* A running sealroomd only hears of a new token from a member;
             * restart it so its scan at start finds the room again. */
            if (stop_sealroomd() != 0 || rearm(r) != 0 || start_sealroomd() != 0) return -1;
            t->rearms++;
            b0 = (long long)r->n;
        }
        long long bp = wait_progress(r, b0, PROGRESS_WAIT_MS);
        if (bp < 0) return -1;
        double tp = ac_now_ms();
        ac_sleep_ms(pause_ms(bp, restarts - m, rate));
        long long bk = behind_now(r);
        double tk = ac_now_ms();
        if (bk < 0 || ac_pg_restart(&g_pg) != 0) {
            fprintf(stderr, "restarting PostgreSQL failed\n");
            return -1;
        }
        double tr = ac_now_ms();
        PQreset(g_conn);
        /* Long enough for sealroomd to notice the restart. */
        ac_sleep_ms(200);
        if (!child_alive()) {
            fprintf(stderr, "sealroomd did not survive PostgreSQL restart %d\n", m + 1);
            return -1;
        }
        size_t after = 0;
        if (ac_room_check(g_conn, r, false, &after) != 0) {
            fprintf(stderr, "after PostgreSQL restart %d the rows are not consistent\n", m + 1);
            return -1;
        }
        if (tk - tp > 20 && bp > bk) rate = (double)(bp - bk) / (tk - tp);
        classify(t, b0, bk);
        printf("  restart %2d: %lld -> %lld behind at the restart (which took %.0f ms)\n", m + 1,
               b0, bk, tr - tk);
        fflush(stdout);
    }
    if (wait_progress(r, 1, FINISH_WAIT_MS) != 0 || stop_sealroomd() != 0) return -1;
    size_t behind = 0;
    return ac_room_check(g_conn, r, true, &behind);
}

/* ---- the checker's own test ---- */

static bool set_row(const ac_room *r, size_t i, uint64_t epoch, const unsigned char h[AC_PT])
{
    char ep[24], hex[2 * AC_PT + 3], dk[2 * AC_DKID + 3];
    snprintf(ep, sizeof ep, "%llu", (unsigned long long)epoch);
    strcpy(hex, "\\x");
    sodium_bin2hex(hex + 2, sizeof hex - 2, h, AC_PT);
    strcpy(dk, "\\x");
    sodium_bin2hex(dk + 2, sizeof dk - 2, r->dkid[i], AC_DKID);
    const char *v[] = {r->idtext, dk, ep, hex};
    return ac_ok(g_conn,
                 "INSERT INTO datakeys(room_id, dkid, sender, epoch, created_epoch, header) "
                 "VALUES ($1, $2, 'sender000@bench.invalid', $3, 1, $4) ON CONFLICT (room_id, "
                 "dkid) DO UPDATE SET epoch = excluded.epoch, header = excluded.header",
                 4, v);
}

static bool delete_row(const ac_room *r, size_t i)
{
    char dk[2 * AC_DKID + 3];
    strcpy(dk, "\\x");
    sodium_bin2hex(dk + 2, sizeof dk - 2, r->dkid[i], AC_DKID);
    const char *v[] = {r->idtext, dk};
    return ac_ok(g_conn, "DELETE FROM datakeys WHERE room_id = $1 AND dkid = $2", 2, v);
}

/* The checks below would be worth nothing if they passed anyway: a header
 * re-keyed twice (Δ(c-1→c) applied to k_c·P) and a lost row must each make
 * the check fail; the room is restored afterwards. */
static int checker_selftest(ac_room *r)
{
    unsigned char d[32], twice[AC_PT];
    size_t behind = 0;
    int rc = -1;
    printf("soak: checker self-test (the two failures reported next are expected)\n");
    fflush(stdout);
    if (ac_room_want(r) != 0 || sr_e2e_token_make(d, r->k[r->c - 1], r->k[r->c]) != SR_E2E_OK ||
        sr_e2e_header_rekey(twice, d, r->want[0]) != SR_E2E_OK)
        goto out;
    if (!set_row(r, 0, r->c, twice) || ac_room_check(g_conn, r, false, &behind) == 0) goto caught;
    if (!set_row(r, 0, r->from[0], r->hfrom[0]) || !delete_row(r, 1) ||
        ac_room_check(g_conn, r, false, &behind) == 0)
        goto caught;
    if (!set_row(r, 1, r->from[1], r->hfrom[1]) || ac_room_check(g_conn, r, false, &behind) != 0 ||
        behind != r->n)
        goto out;
    printf("soak: checker self-test ok: a header re-keyed twice and a lost row are both caught\n");
    rc = 0;
    goto out;
caught:
    fprintf(stderr, "soak: the checker missed a tampered room\n");
out:
    sodium_memzero(d, sizeof d);
    return rc;
}

/* ---- main ---- */

static void usage(FILE *o)
{
    fprintf(o, "usage: soak_sweep --sealroomd PATH [--headers N] [--kills K] [--pg-restarts M] "
               "[--batch B]\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"sealroomd", required_argument, NULL, 'd'},
        {"headers", required_argument, NULL, 'n'},
        {"kills", required_argument, NULL, 'k'},
        {"pg-restarts", required_argument, NULL, 'm'},
        {"batch", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    size_t n = 200000;
    int kills = 20, restarts = 20, batch = 0, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            g_sealroomd = optarg;
            break;
        case 'n':
            n = strtoull(optarg, NULL, 10);
            break;
        case 'k':
            kills = atoi(optarg);
            break;
        case 'm':
            restarts = atoi(optarg);
            break;
        case 'b':
            batch = atoi(optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || !g_sealroomd || n < 1 || kills < 0 || restarts < 0) {
        usage(stderr);
        return 2;
    }
    if (sodium_init() < 0) return 1;
    log_set_level(LOG_LVL_WARN);
    const char *src = getenv("SEALROOM_SOURCE_DIR");
    snprintf(g_src, sizeof g_src, "%s", src && src[0] ? src : BENCH_SOURCE_DIR);
    unsetenv("SEALROOM_TEST_PG");
    snprintf(g_run, sizeof g_run, "/var/tmp/sealroom-soak-run-XXXXXX");
    if (!mkdtemp(g_run)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(g_conf, sizeof g_conf, "%s/sealroomd.conf", g_run);
    snprintf(g_log, sizeof g_log, "%s/sealroomd.log", g_run);
    int rc = 1;
    ac_room *r = NULL;
    tally tk = {0}, tr = {0};
    double t0 = ac_now_ms();
    if (ac_pg_open(&g_pg, g_src, "sealroom_soak") != 0 || write_config(batch) != 0 ||
        !(g_conn = ac_connect(g_pg.conninfo)))
        goto out;
    r = ac_room_seed(g_conn, "soak@rooms.soak.invalid", n, 100, 4, 1, 3, true, false, 2);
    if (!r) goto out;
    printf("soak: %zu headers at epochs 1..3, room at epoch 4 with tokens 1->2->3->4 "
           "(seeded in %.1f s); sealroomd %s\n",
           n, (ac_now_ms() - t0) / 1e3, g_sealroomd);
    if (checker_selftest(r) != 0) goto out;
    printf("soak: phase 1, %d SIGKILLs of sealroomd\n", kills);
    fflush(stdout);
    if (phase_kill(r, kills, &tk) != 0) goto out;
    printf("soak: phase 1 ok: %d kill(s) mid-sweep, %d before the run re-keyed anything, %d with "
           "the room done, %d re-arm(s); all %zu headers exactly k_c*P at epoch %llu\n",
           tk.mid, tk.startup, tk.finished, tk.rearms, r->n, (unsigned long long)r->c);
    printf("soak: phase 2, %d PostgreSQL restarts under a running sealroomd\n", restarts);
    fflush(stdout);
    if (phase_restart(r, restarts, &tr) != 0) goto out;
    printf("soak: phase 2 ok: %d restart(s) mid-sweep, %d with nothing re-keyed since the last, %d "
           "with the room done, %d re-arm(s); all %zu headers exactly k_c*P at epoch %llu\n",
           tr.mid, tr.startup, tr.finished, tr.rearms, r->n, (unsigned long long)r->c);
    if (tk.mid * 2 < kills || tr.mid * 2 < restarts) {
        fprintf(stderr,
                "too few interruptions landed mid-sweep (%d of %d kills, %d of %d "
                "restarts): the soak did not test what it claims\n",
                tk.mid, kills, tr.mid, restarts);
        goto out;
    }
    printf("soak: OK in %.0f s\n", (ac_now_ms() - t0) / 1e3);
    rc = 0;
out:
    kill_child();
    PQfinish(g_conn);
    ac_room_free(r);
    ac_pg_close(&g_pg);
    if (rc) {
        fprintf(stderr, "soak: FAILED; sealroomd's log kept in %s\n", g_log);
    } else {
        unlink(g_conf);
        unlink(g_log);
        rmdir(g_run);
    }
    return rc;
}
