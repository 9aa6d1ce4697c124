/* sealroomd: start-up (configuration, log, database and migrations, room
 * service, archive sweep, XMPP link), the single-threaded poll() loop that drives libstrophe
 * and libpq, signals handled inside that loop (SIGHUP reloads, SIGTERM and
 * SIGINT shut down gracefully), and orderly teardown. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "link.h"
#include "log.h"
#include "rooms.h"
#include "sweep.h"

/* Short enough that libstrophe's timers and the db/rooms ticks keep running
 * (XMPP-FACTS.md: single-threaded loop). */
#define LOOP_POLL_MS 50
/* How long start-up waits for PostgreSQL (it may still be starting). */
#define DB_START_WAIT_MS 30000
/* How long a graceful stop waits for writes in flight to commit. */
#define DRAIN_WAIT_MS 5000

typedef struct app {
    config cfg;
    const char *config_path;
    db *db;
    xmpp_link *link;
    rooms *rooms;
    sweep *sweep;
    int sigfd;
    bool stop;
} app;

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sealroomd [-c FILE] [--check-config] [--sql-dir DIR] [--pidfile PATH]\n"
            "                 [--help] [--version]\n"
            "\n"
            "  -c, --config FILE   configuration file (without it: defaults and SEALROOMD_*\n"
            "                      environment variables only)\n"
            "      --check-config  load and validate the configuration, then exit\n"
            "      --sql-dir DIR   migrations directory (default: $SEALROOM_SQL_DIR, else ./sql\n"
            "                      if present, else %s)\n"
            "      --pidfile PATH  write the process id to PATH while running\n"
            "  -h, --help          this text\n"
            "  -V, --version       print the version\n"
            "\n"
            "Signals: SIGHUP reloads the configuration and reopens the log; SIGTERM and\n"
            "SIGINT stop gracefully.\n",
            SEALROOM_SQL_DIR);
}

static const char *pick_sql_dir(const char *opt)
{
    struct stat st;
    if (opt) return opt;
    const char *env = getenv("SEALROOM_SQL_DIR");
    if (env && env[0]) return env;
    if (stat("sql", &st) == 0 && S_ISDIR(st.st_mode)) return "sql";
    return SEALROOM_SQL_DIR;
}

static void apply_log_level(const config *c)
{
    log_level lvl;
    if (log_level_parse(c->log_level, &lvl) == 0) log_set_level(lvl);
}

static int write_pidfile(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    int rc = write(fd, buf, (size_t)n) == n ? 0 : -1;
    if (close(fd) != 0) rc = -1;
    return rc;
}

static void on_stanza(void *arg, xmpp_stanza_t *stanza)
{
    app *a = arg;
    if (a->rooms) rooms_handle_stanza(a->rooms, stanza);
}

static void on_link_state(void *arg, bool up)
{
    app *a = arg;
    if (a->rooms) rooms_link_state(a->rooms, up);
}

static void reload(app *a)
{
    char err[512];
    log_info("main", "SIGHUP: reloading %s", a->config_path ? a->config_path : "(environment)");
    if (config_reload(&a->cfg, a->config_path, err, sizeof err) != 0) {
        log_error("main", "reload refused, keeping the running configuration: %s", err);
    } else {
        apply_log_level(&a->cfg);
        db_set_write_batch_max(a->db, a->cfg.write_batch_max);
    }
    /* Reopen even when the reload failed: logrotate sends SIGHUP too. */
    if (log_open(a->cfg.log_file) != 0)
        log_error("main", "cannot reopen log %s: %s; logging where it was", a->cfg.log_file,
                  strerror(errno));
    config_log(&a->cfg);
}

static void handle_signals(app *a)
{
    struct signalfd_siginfo si;
    while (read(a->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            reload(a);
        } else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            if (!a->stop) log_info("main", "%s: shutting down", strsignal((int)si.ssi_signo));
            a->stop = true;
        }
    }
}

/* One pass of the loop: poll the link, the database and the signal fd,
 * then let each part do its I/O and timers. */
static void loop_once(app *a)
{
    struct pollfd fds[4];
    int nfds = 0, db_i = -1;
    short ev;

    fds[nfds++] = (struct pollfd){.fd = a->sigfd, .events = POLLIN};
    int fd = link_pollfd(a->link, &ev);
    if (fd >= 0) fds[nfds++] = (struct pollfd){.fd = fd, .events = ev};
    fd = db_pollfd(a->db, &ev);
    if (fd >= 0) {
        db_i = nfds;
        fds[nfds++] = (struct pollfd){.fd = fd, .events = ev};
    }
    /* Finished searches: rooms_tick below takes them. */
    fd = rooms_pollfd(a->rooms);
    if (fd >= 0) fds[nfds++] = (struct pollfd){.fd = fd, .events = POLLIN};
    if (poll(fds, (nfds_t)nfds, LOOP_POLL_MS) < 0 && errno != EINTR) {
        log_error("main", "poll: %s", strerror(errno));
        return;
    }
    if (fds[0].revents & POLLIN) handle_signals(a);
    link_process(a->link);
    db_process(a->db, db_i >= 0 ? fds[db_i].revents : 0);
    long now = mono_ms();
    db_tick(a->db, now);
    rooms_tick(a->rooms, now);
}

/* Waits for PostgreSQL while still honouring SIGTERM/SIGINT. */
static int connect_db(app *a, const sigset_t *sigs)
{
    char err[512];
    long deadline = mono_ms() + DB_START_WAIT_MS;
    for (;;) {
        long left = deadline - mono_ms();
        if (left < 1) left = 1;
        if (db_connect_blocking(a->db, left > 2000 ? 2000 : (int)left, err, sizeof err) == 0)
            return 0;
        if (mono_ms() >= deadline) {
            log_error("db", "cannot connect to PostgreSQL within %d s: %s", DB_START_WAIT_MS / 1000,
                      err);
            return -1;
        }
        log_info("db", "waiting for PostgreSQL: %s", err);
        struct timespec zero = {0, 0};
        int sig = sigtimedwait(sigs, NULL, &zero);
        if (sig == SIGTERM || sig == SIGINT) {
            log_info("main", "%s during start-up: exiting", strsignal(sig));
            return -1;
        }
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'C'},
        {"sql-dir", required_argument, NULL, 'S'},
        {"pidfile", required_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    app a = {.sigfd = -1};
    const char *sql_dir_opt = NULL, *pidfile = NULL;
    bool check_only = false, pidfile_written = false;
    char err[512];
    int status = EXIT_FAILURE, c;

    /* Signals are read from a signalfd inside the loop. Block them before
     * anything else, so that threads started later (the sweep's workers)
     * inherit the mask and a SIGTERM arriving during start-up is handled as
     * a clean stop rather than killing the process. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c': a.config_path = optarg; break;
        case 'C': check_only = true; break;
        case 'S': sql_dir_opt = optarg; break;
        case 'P': pidfile = optarg; break;
        case 'h': usage(stdout); return EXIT_SUCCESS;
        case 'V': printf("sealroomd %s\n", SEALROOM_VERSION); return EXIT_SUCCESS;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    if (config_load(&a.cfg, a.config_path, err, sizeof err) != 0) {
        fprintf(stderr, "sealroomd: %s\n", err);
        return EXIT_FAILURE;
    }
    if (check_only) {
        printf("%s: configuration OK\n", a.config_path ? a.config_path : "(environment)");
        config_free(&a.cfg);
        return EXIT_SUCCESS;
    }

    apply_log_level(&a.cfg);
    if (log_open(a.cfg.log_file) != 0) {
        fprintf(stderr, "sealroomd: cannot open log %s: %s\n", a.cfg.log_file, strerror(errno));
        goto out;
    }
    log_info("main", "sealroomd %s starting (instance %s)", SEALROOM_VERSION, a.cfg.instance_name);
    config_log(&a.cfg);

    a.sigfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    if (a.sigfd < 0) {
        log_error("main", "signalfd: %s", strerror(errno));
        goto out;
    }
    if (pidfile) {
        if (write_pidfile(pidfile) != 0) {
            log_error("main", "cannot write pidfile %s: %s", pidfile, strerror(errno));
            goto out;
        }
        pidfile_written = true;
    }

    a.db = db_new(a.cfg.db_conninfo);
    if (!a.db) {
        log_error("db", "cannot create the database handle");
        goto out;
    }
    db_set_write_batch_max(a.db, a.cfg.write_batch_max);
    if (connect_db(&a, &sigs) != 0) goto out;
    const char *sql_dir = pick_sql_dir(sql_dir_opt);
    log_info("db", "applying migrations from %s", sql_dir);
    if (db_migrate(a.db, sql_dir, err, sizeof err) != 0) {
        log_error("db", "migrations failed: %s", err);
        goto out;
    }
    /* Before the room service, which kicks it through sweep_running(). */
    a.sweep = sweep_start(&a.cfg);
    if (!a.sweep) {
        log_error("main", "cannot start the archive sweep");
        goto out;
    }

    /* The link exists before the room service (which borrows it), but
     * delivers nothing until link_start. */
    a.link = link_new(&a.cfg, on_stanza, on_link_state, &a);
    if (!a.link) {
        log_error("main", "cannot create the XMPP link");
        goto out;
    }
    a.rooms = rooms_new(&a.cfg, a.db, a.link);
    if (!a.rooms) {
        log_error("main", "cannot create the room service");
        goto out;
    }
    if (link_start(a.link) != 0) goto out;

    while (!a.stop) loop_once(&a);

    /* Graceful stop: take no new stanzas, let committed work reply. A second
     * SIGTERM stops waiting. */
    link_quiesce(a.link);
    long deadline = mono_ms() + DRAIN_WAIT_MS;
    a.stop = false;
    while (rooms_busy(a.rooms) && mono_ms() < deadline && !a.stop) loop_once(&a);
    if (rooms_busy(a.rooms)) log_warn("main", "stopping with writes still in flight");
    link_stop(a.link);
    status = EXIT_SUCCESS;
    log_info("main", "stopped");

out:
    /* Its workers finish the batch they are in. */
    sweep_stop(a.sweep);
    /* The db fails what is still queued through callbacks into the room
     * service: free it while the rooms are alive, then the rooms, then the
     * link they borrow. */
    db_free(a.db);
    rooms_free(a.rooms);
    link_free(a.link);
    if (a.sigfd >= 0) close(a.sigfd);
    if (pidfile_written) unlink(pidfile);
    config_free(&a.cfg);
    log_close();
    return status;
}
