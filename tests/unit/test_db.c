/* Tests for component/db.c against a real PostgreSQL: migrations, group
 * commit, per-unit failure isolation that keeps the order of writes, pipelined
 * reads, deferred callbacks and reconnects. Uses $SEALROOM_TEST_PG if set,
 * otherwise starts a throwaway cluster with tests/pg-scratch.sh. Each run
 * works in a database of its own, dropped at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
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
#include "db.h"
#include "log.h"

/* ---- environment ---- */

static char g_src[1024];          /* source tree */
static char g_scratch[256];       /* our cluster's directory, "" if none */
static char *g_admin_conninfo;    /* the server's maintenance database */
static char g_dbname[64];         /* this run's database */
static char *g_conninfo;          /* conninfo for g_dbname */
static int g_extra_dbs;

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int admin_exec(const char *conninfo, const char *sql) {
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

/* A fresh database; returns its conninfo (caller frees). */
static char *new_database(const char *suffix) {
    char name[96], sql[160];
    snprintf(name, sizeof name, "%s%s", g_dbname, suffix);
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", name);
    admin_exec(g_admin_conninfo, sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    if (admin_exec(g_admin_conninfo, sql) < 0) return NULL;
    if (suffix[0]) g_extra_dbs++;
    return pgt_conninfo_for(g_admin_conninfo, name);
}

/* One value of a one-row query on the test database, as a long. */
static long query_long(const char *conninfo, const char *sql) {
    PGconn *c = PQconnectdb(conninfo);
    long v = -1;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
            v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
        else
            fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
        PQclear(r);
    }
    PQfinish(c);
    return v;
}

static int scratch(const char *args) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "sh '%s/tests/pg-scratch.sh' %s", g_src, args);
    return system(cmd);
}

static int group_setup(void **state) {
    (void)state;
    log_set_level(LOG_LVL_WARN);
    const char *src = getenv("SEALROOM_SOURCE_DIR");
    snprintf(g_src, sizeof g_src, "%s", src ? src : ".");
    g_admin_conninfo =
        pgt_admin_conninfo(g_src, "/tmp/sealroom-test-db-XXXXXX", g_scratch, sizeof g_scratch);
    if (!g_admin_conninfo) return -1;
    snprintf(g_dbname, sizeof g_dbname, "sealroom_test_%d", (int)getpid());
    g_conninfo = new_database("");
    return g_conninfo ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    char sql[160];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", g_dbname);
    admin_exec(g_admin_conninfo, sql);
    for (int i = 1; i <= g_extra_dbs; i++) {
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s_%d WITH (FORCE)", g_dbname, i);
        admin_exec(g_admin_conninfo, sql);
    }
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

/* ---- the event-loop driver and callback bookkeeping ---- */

static bool g_in_submit;

static void submit(db *d, db_unit *u, bool write, db_done_cb cb, void *arg) {
    g_in_submit = true;
    db_submit(d, u, write, cb, arg);
    g_in_submit = false;
}

static void loop_once(db *d, int wait_ms) {
    short ev;
    int fd = db_pollfd(d, &ev);
    short rev = 0;
    if (fd >= 0) {
        struct pollfd p = {fd, ev, 0};
        if (poll(&p, 1, wait_ms) > 0) rev = p.revents;
    } else {
        struct timespec ts = {0, (long)wait_ms * 1000000L};
        nanosleep(&ts, NULL);
    }
    db_process(d, rev);
    db_tick(d, now_ms());
}

/* Run the loop until *counter reaches target; false on timeout. */
static bool run_until(db *d, const int *counter, int target, int timeout_ms) {
    long deadline = now_ms() + timeout_ms;
    while (*counter < target) {
        if (now_ms() > deadline) return false;
        loop_once(d, 10);
    }
    return true;
}

/* What one callback saw. */
typedef struct outcome {
    int calls;
    bool ok;
    int order; /* completion order, from g_completed */
    char err[256];
    int nresults;
    ExecStatusType status[4];
    int ntuples[4];
    char val[4][64];  /* first value of each result, text */
    int *counter;     /* incremented on completion */
} outcome;

static int g_completed;

static void record(void *arg, bool ok, PGresult *const *results, int nresults, const char *err) {
    assert_false(g_in_submit); /* never from inside db_submit */
    outcome *o = arg;
    o->calls++;
    o->ok = ok;
    o->order = g_completed++;
    o->nresults = nresults;
    if (ok) {
        assert_non_null(results);
        assert_null(err);
        for (int i = 0; i < nresults && i < 4; i++) {
            o->status[i] = PQresultStatus(results[i]);
            o->ntuples[i] = PQntuples(results[i]);
            if (o->ntuples[i] > 0 && PQnfields(results[i]) > 0)
                snprintf(o->val[i], sizeof o->val[i], "%s", PQgetvalue(results[i], 0, 0));
        }
    } else {
        assert_null(results);
        assert_non_null(err);
        snprintf(o->err, sizeof o->err, "%s", err);
    }
    if (o->counter) (*o->counter)++;
}

static db *connect_migrated(const char *conninfo) {
    db *d = db_new(conninfo);
    assert_non_null(d);
    char err[512], dir[1100];
    assert_int_equal(db_connect_blocking(d, 10000, err, sizeof err), 0);
    snprintf(dir, sizeof dir, "%s/sql", g_src);
    if (db_migrate(d, dir, err, sizeof err) != 0) fail_msg("migrate: %s", err);
    return d;
}

static long make_room(const char *name) {
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO rooms(name, roster_version, roster_head) VALUES ('%s', 0, "
             "decode(repeat('00', 32), 'hex')) RETURNING room_id",
             name);
    return query_long(g_conninfo, sql);
}

static const char INSERT_MESSAGE[] =
    "WITH r AS (UPDATE rooms SET last_seq = last_seq + 1 WHERE room_id = $1 RETURNING last_seq) "
    "INSERT INTO messages(room_id, seq, sender, nick, origin_id, payload) "
    "SELECT $1, r.last_seq, $2, $3, $4, $5 FROM r "
    "ON CONFLICT (room_id, sender, origin_id) WHERE origin_id IS NOT NULL DO NOTHING "
    "RETURNING seq, stamp";

/* A unit storing one message; the payload is binary and mutated after the
 * add, to check that parameters are copied. prepared: added with
 * db_unit_add_prepared. */
static db_unit *message_unit_as(long room, int i, const char *origin, bool prepared) {
    char rbuf[24], sender[64], nick[32];
    unsigned char payload[40];
    snprintf(rbuf, sizeof rbuf, "%ld", room);
    snprintf(sender, sizeof sender, "user%d@localhost", i % 7);
    snprintf(nick, sizeof nick, "nick%d", i % 7);
    for (size_t k = 0; k < sizeof payload; k++) payload[k] = (unsigned char)(i * 31 + k);
    payload[3] = 0; /* binary-safe */
    const char *vals[] = {rbuf, sender, nick, origin, (const char *)payload};
    const int lens[] = {-1, -1, -1, -1, (int)sizeof payload};
    const int fmts[] = {0, 0, 0, 0, 1};
    db_unit *u = db_unit_new();
    assert_non_null(u);
    assert_int_equal((prepared ? db_unit_add_prepared : db_unit_add)(u, INSERT_MESSAGE, 5, vals,
                                                                     lens, fmts),
                     0);
    memset(payload, 0xEE, sizeof payload);
    memset(sender, 'x', 5);
    return u;
}

static db_unit *message_unit(long room, int i, const char *origin) {
    return message_unit_as(room, i, origin, false);
}

/* ---- tests ---- */

static int count_sql_files(const char *dir) {
    DIR *dh = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (dh && (de = readdir(dh))) {
        size_t len = strlen(de->d_name);
        if (len > 4 && strcmp(de->d_name + len - 4, ".sql") == 0) n++;
    }
    if (dh) closedir(dh);
    return n;
}

static void write_file(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_migrate_applies_once(void **state) {
    (void)state;
    char dir[1100], err[512];
    snprintf(dir, sizeof dir, "%s/sql", g_src);
    int nfiles = count_sql_files(dir);
    assert_true(nfiles >= 1);

    db *d = connect_migrated(g_conninfo);
    assert_int_equal(query_long(g_conninfo, "SELECT count(*) FROM schema_version"), nfiles);
    long stamp = query_long(g_conninfo,
                            "SELECT extract(epoch FROM max(applied_at)) * 1e6 FROM schema_version");
    assert_int_equal(query_long(g_conninfo, "SELECT count(*) FROM pg_tables WHERE tablename IN "
                                            "('identities','rooms','roster_versions','members',"
                                            "'messages','occupants')"),
                     6);
    /* Again on the same and on a new connection: nothing changes. */
    assert_int_equal(db_migrate(d, dir, err, sizeof err), 0);
    db_free(d);
    d = connect_migrated(g_conninfo);
    db_free(d);
    assert_int_equal(query_long(g_conninfo, "SELECT count(*) FROM schema_version"), nfiles);
    assert_int_equal(query_long(g_conninfo, "SELECT extract(epoch FROM max(applied_at)) * 1e6 "
                                            "FROM schema_version"),
                     stamp);
    assert_int_equal(query_long(g_conninfo, "SELECT min(version) FROM schema_version"), 1);
}

static void test_migrate_error_is_atomic(void **state) {
    (void)state;
    char *ci = new_database("_1");
    assert_non_null(ci);
    char dir[] = "/tmp/sealroom-mig-XXXXXX", err[512];
    assert_non_null(mkdtemp(dir));
    write_file(dir, "001_a.sql", "CREATE TABLE a (room_id bigint PRIMARY KEY);\n");
    write_file(dir, "002_b.sql", "CREATE TABLE b (room_id bigint PRIMARY KEY;\n");

    db *d = db_new(ci);
    assert_int_equal(db_connect_blocking(d, 10000, err, sizeof err), 0);
    assert_int_equal(db_migrate(d, dir, err, sizeof err), -1);
    assert_non_null(strstr(err, "002_b.sql"));
    assert_non_null(strstr(err, "syntax error"));
    /* Nothing of the run survived, not even schema_version. */
    assert_int_equal(query_long(ci, "SELECT count(*) FROM pg_tables WHERE tablename IN "
                                    "('a','schema_version')"),
                     0);

    write_file(dir, "002_b.sql", "CREATE TABLE b (room_id bigint PRIMARY KEY);\n");
    assert_int_equal(db_migrate(d, dir, err, sizeof err), 0);
    assert_int_equal(query_long(ci, "SELECT count(*) FROM schema_version"), 2);
    write_file(dir, "003_c.sql", "CREATE TABLE c (room_id bigint PRIMARY KEY);\n");
    assert_int_equal(db_migrate(d, dir, err, sizeof err), 0);
    assert_int_equal(query_long(ci, "SELECT max(version) FROM schema_version"), 3);

    /* A name that is not NNN_name.sql is refused rather than skipped. */
    write_file(dir, "x.sql", "SELECT 1;\n");
    assert_int_equal(db_migrate(d, dir, err, sizeof err), -1);
    assert_non_null(strstr(err, "x.sql"));
    db_free(d);

    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
    assert_int_equal(system(rm), 0);
    free(ci);
}

/* Two instances starting together: the advisory lock makes the second wait
 * and then find the (slow) migration recorded. Without it both would run
 * the CREATE TABLE and one would fail. */
static void test_migrate_concurrent_instances(void **state) {
    (void)state;
    char *ci = new_database("_2");
    assert_non_null(ci);
    char dir[] = "/tmp/sealroom-mig-XXXXXX", err[512];
    assert_non_null(mkdtemp(dir));
    write_file(dir, "001_slow.sql",
               "SELECT pg_sleep(0.5);\nCREATE TABLE slow (room_id bigint PRIMARY KEY);\n");
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        db *d = db_new(ci);
        int rc = db_connect_blocking(d, 10000, err, sizeof err) == 0 &&
                         db_migrate(d, dir, err, sizeof err) == 0
                     ? 0
                     : 1;
        if (rc) fprintf(stderr, "child: %s\n", err);
        db_free(d);
        _exit(rc);
    }
    db *d = db_new(ci);
    int rc = db_connect_blocking(d, 10000, err, sizeof err);
    if (rc == 0) rc = db_migrate(d, dir, err, sizeof err);
    if (rc) fprintf(stderr, "parent: %s\n", err);
    db_free(d);
    int status = 0;
    pid_t waited = waitpid(pid, &status, 0);
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
    assert_int_equal(system(rm), 0);
    assert_int_equal(waited, pid);
    assert_int_equal(rc, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(query_long(ci, "SELECT count(*) FROM schema_version"), 1);
    free(ci);
}

#define NWRITES 2000

static void test_group_commit(void **state) {
    (void)state;
    db *d = connect_migrated(g_conninfo);
    long room = make_room("group@rooms.localhost");
    assert_true(room > 0);

    outcome *o = calloc(NWRITES + 1, sizeof *o);
    int done = 0;
    int next = 0;
    long deadline = now_ms() + 60000;
    /* Submit a trickle per loop iteration, as a busy daemon would. */
    while (done < NWRITES) {
        for (int k = 0; k < 25 && next < NWRITES; k++, next++) {
            char origin[32];
            snprintf(origin, sizeof origin, "o%d", next);
            o[next].counter = &done;
            submit(d, message_unit(room, next, origin), true, record, &o[next]);
        }
        loop_once(d, 1);
        assert_true(now_ms() < deadline);
    }
    db_stats st;
    db_get_stats(d, &st);
    assert_int_equal(st.units_committed, NWRITES);
    assert_int_equal(st.units_failed, 0);
    assert_true(st.commits >= 1);
    assert_true(st.commits <= NWRITES / 10); /* grouped, not one per unit */
    assert_int_equal(st.queued_units, 0);
    assert_int_equal(st.inflight_units, 0);
    print_message("%d units in %llu commits\n", NWRITES, st.commits);

    /* Every unit got its own seq back, all distinct, 1..N. */
    char *seen = calloc(NWRITES + 1, 1);
    for (int i = 0; i < NWRITES; i++) {
        assert_int_equal(o[i].calls, 1);
        assert_true(o[i].ok);
        assert_int_equal(o[i].nresults, 1);
        assert_int_equal(o[i].status[0], PGRES_TUPLES_OK);
        assert_int_equal(o[i].ntuples[0], 1);
        long seq = strtol(o[i].val[0], NULL, 10);
        assert_true(seq >= 1 && seq <= NWRITES);
        assert_false(seen[seq]);
        seen[seq] = 1;
    }
    free(seen);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM messages WHERE room_id = %ld", room);
    assert_int_equal(query_long(g_conninfo, sql), NWRITES);
    snprintf(sql, sizeof sql, "SELECT last_seq FROM rooms WHERE room_id = %ld", room);
    assert_int_equal(query_long(g_conninfo, sql), NWRITES);

    /* Parameters were copied at add time: the stored payload and sender are
     * what was added, not what the buffers held later. */
    int i = 1234;
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM messages WHERE room_id = %ld AND origin_id = 'o%d' AND "
             "sender = 'user%d@localhost' AND length(payload) = 40 AND get_byte(payload, 3) = 0 "
             "AND get_byte(payload, 39) = %d",
             room, i, i % 7, (i * 31 + 39) & 0xff);
    assert_int_equal(query_long(g_conninfo, sql), 1);

    /* A resend of an origin-id stores nothing and still succeeds. */
    outcome dup = {0};
    dup.counter = &done;
    submit(d, message_unit(room, 5, "o5"), true, record, &dup);
    assert_true(run_until(d, &done, NWRITES + 1, 10000));
    assert_true(dup.ok);
    assert_int_equal(dup.ntuples[0], 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM messages WHERE room_id = %ld", room);
    assert_int_equal(query_long(g_conninfo, sql), NWRITES);

    /* Binary results: read one payload back byte for byte. */
    char rbuf[24];
    snprintf(rbuf, sizeof rbuf, "%ld", room);
    const char *vals[] = {rbuf, "o7"};
    db_unit *u = db_unit_new();
    db_unit_binary_results(u, true);
    assert_int_equal(db_unit_add(u, "SELECT payload FROM messages WHERE room_id = $1 AND "
                                    "origin_id = $2",
                                 2, vals, NULL, NULL),
                     0);
    outcome rd = {0};
    rd.counter = &done;
    submit(d, u, false, record, &rd);
    assert_true(run_until(d, &done, NWRITES + 2, 10000));
    assert_true(rd.ok);
    assert_int_equal(rd.ntuples[0], 1);
    assert_int_equal((unsigned char)rd.val[0][0], (7 * 31) & 0xff);
    assert_int_equal((unsigned char)rd.val[0][1], (7 * 31 + 1) & 0xff);
    db_free(d);
    free(o);
}

#define NGROUP 20

static void test_bad_unit_fails_alone(void **state) {
    (void)state;
    db *d = connect_migrated(g_conninfo);
    long room = make_room("bad@rooms.localhost");
    assert_int_equal(admin_exec(g_conninfo, "INSERT INTO identities(jid, sign_pk, proof) VALUES "
                                            "('taken@localhost', decode(repeat('11', 32), 'hex'), "
                                            "decode(repeat('22', 64), 'hex'))"),
                     0);
    outcome o[NGROUP] = {0};
    outcome rd[10] = {0};
    int done = 0;
    /* All submitted before the loop runs, so they share one transaction;
     * the reads are pipelined right behind it. */
    for (int i = 0; i < NGROUP; i++) {
        o[i].counter = &done;
        db_unit *u;
        if (i == 5) {
            u = db_unit_new();
            assert_int_equal(db_unit_add(u, "INSRT INTO messages VALUES (1)", 0, NULL, NULL, NULL),
                             0);
        } else if (i == 12) {
            u = db_unit_new();
            assert_int_equal(
                db_unit_add(u,
                            "INSERT INTO identities(jid, sign_pk, proof) VALUES ('taken@localhost',"
                            " decode(repeat('33', 32), 'hex'), decode(repeat('44', 64), 'hex'))",
                            0, NULL, NULL, NULL),
                0);
        } else if (i == 15) {
            /* First statement fine, second violates a CHECK: the unit is
             * atomic, so its first statement must not commit either. */
            u = message_unit(room, i, "o15");
            assert_int_equal(db_unit_add(u,
                                         "INSERT INTO identities(jid, sign_pk, proof) VALUES "
                                         "('short@localhost', '\\x0102', "
                                         "decode(repeat('44', 64), 'hex'))",
                                         0, NULL, NULL, NULL),
                             0);
        } else {
            char origin[16];
            snprintf(origin, sizeof origin, "o%d", i);
            u = message_unit(room, i, origin);
        }
        submit(d, u, true, record, &o[i]);
    }
    for (int i = 0; i < 10; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        const char *vals[] = {v};
        rd[i].counter = &done;
        g_in_submit = true;
        db_read1(d, "SELECT $1::int + 100", 1, vals, NULL, NULL, record, &rd[i]);
        g_in_submit = false;
    }
    assert_int_equal(done, 0);
    assert_true(run_until(d, &done, NGROUP + 10, 20000));

    for (int i = 0; i < NGROUP; i++) {
        assert_int_equal(o[i].calls, 1);
        if (i == 5) {
            assert_false(o[i].ok);
            assert_true(db_err_sqlstate_is(o[i].err, "42601"));
            assert_non_null(strstr(o[i].err, "syntax error"));
        } else if (i == 12) {
            assert_false(o[i].ok);
            assert_true(db_err_sqlstate_is(o[i].err, "23505"));
        } else if (i == 15) {
            assert_false(o[i].ok);
            assert_true(db_err_sqlstate_is(o[i].err, "23514"));
        } else {
            assert_true(o[i].ok);
            assert_int_equal(o[i].ntuples[0], 1);
        }
    }
    /* The reads sat behind the failed transaction block and still answer. */
    for (int i = 0; i < 10; i++) {
        assert_true(rd[i].ok);
        assert_int_equal(strtol(rd[i].val[0], NULL, 10), i + 100);
    }
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM messages WHERE room_id = %ld", room);
    assert_int_equal(query_long(g_conninfo, sql), NGROUP - 3);
    assert_int_equal(query_long(g_conninfo, "SELECT count(*) FROM identities WHERE jid = "
                                            "'short@localhost'"),
                     0);
    db_stats st;
    db_get_stats(d, &st);
    assert_int_equal(st.units_failed, 3);
    assert_int_equal(st.units_committed, NGROUP - 3);
    /* Each bad unit was re-run alone and the others regrouped in order,
     * those before it apart from those after it: a commit for each of
     * 0-4, 6-11, 13-14 and 16-19. */
    assert_int_equal(st.commits, 4);

    /* The session is clean afterwards: a new group commits at once. */
    outcome after[3] = {0};
    for (int i = 0; i < 3; i++) {
        char origin[16];
        snprintf(origin, sizeof origin, "after%d", i);
        after[i].counter = &done;
        submit(d, message_unit(room, 100 + i, origin), true, record, &after[i]);
    }
    assert_true(run_until(d, &done, NGROUP + 13, 10000));
    for (int i = 0; i < 3; i++) assert_true(after[i].ok);
    db_get_stats(d, &st);
    assert_int_equal(st.commits, 5);
    db_free(d);
}

static db_unit *defer_unit(int id) {
    char v[16];
    snprintf(v, sizeof v, "%d", id);
    const char *vals[] = {v};
    db_unit *u = db_unit_new();
    assert_int_equal(db_unit_add(u, "INSERT INTO defer_t(room_id, id) VALUES (1, $1)", 1, vals,
                                 NULL, NULL),
                     0);
    return u;
}

/* A group whose COMMIT fails (a deferred constraint) has no culprit: every
 * unit is re-run alone. And a group with many bad units still sorts out. */
static void test_commit_failure_and_many_bad_units(void **state) {
    (void)state;
    db *d = connect_migrated(g_conninfo);
    assert_int_equal(admin_exec(g_conninfo, "CREATE TABLE defer_t (room_id bigint, id int, "
                                            "CONSTRAINT defer_u UNIQUE (room_id, id) "
                                            "DEFERRABLE INITIALLY DEFERRED)"),
                     0);
    static const int ids[] = {1, 2, 3, 2, 4, 5};
    outcome o[6] = {0};
    int done = 0;
    for (int i = 0; i < 6; i++) {
        o[i].counter = &done;
        submit(d, defer_unit(ids[i]), true, record, &o[i]);
    }
    assert_true(run_until(d, &done, 6, 20000));
    for (int i = 0; i < 6; i++) {
        if (i == 3) {
            assert_false(o[i].ok);
            assert_true(db_err_sqlstate_is(o[i].err, "23505"));
        } else {
            assert_true(o[i].ok);
        }
    }
    db_stats st;
    db_get_stats(d, &st);
    assert_int_equal(st.commits, 5);
    assert_int_equal(st.units_failed, 1);
    assert_int_equal(query_long(g_conninfo, "SELECT count(*) FROM defer_t"), 5);

    /* Every other unit bad: more failures than one group is split for. */
    outcome m[12] = {0};
    for (int i = 0; i < 12; i++) {
        m[i].counter = &done;
        db_unit *u = defer_unit(100 + i);
        if (i % 2) assert_int_equal(db_unit_add(u, "SELEC 1", 0, NULL, NULL, NULL), 0);
        submit(d, u, true, record, &m[i]);
    }
    assert_true(run_until(d, &done, 6 + 12, 20000));
    for (int i = 0; i < 12; i++) {
        assert_int_equal(m[i].calls, 1);
        assert_true(m[i].ok == !(i % 2));
        if (i % 2) assert_true(db_err_sqlstate_is(m[i].err, "42601"));
    }
    assert_int_equal(query_long(g_conninfo, "SELECT count(*) FROM defer_t WHERE id >= 100"), 6);
    assert_int_equal(
        query_long(g_conninfo, "SELECT count(*) FROM defer_t WHERE id >= 100 AND id % 2 = 1"), 0);
    db_free(d);
}

/* One unit of order_t: an INSERT of (k, who), or with who NULL a DELETE of k. */
static db_unit *order_unit(int k, const char *who) {
    char kbuf[16];
    snprintf(kbuf, sizeof kbuf, "%d", k);
    const char *vals[] = {kbuf, who};
    db_unit *u = db_unit_new();
    assert_int_equal(who ? db_unit_add(u, "INSERT INTO order_t(k, who) VALUES ($1, $2)", 2, vals,
                                       NULL, NULL)
                         : db_unit_add(u, "DELETE FROM order_t WHERE k = $1", 1, vals, NULL, NULL),
                     0);
    return u;
}

/* Retries keep the order of submission. In one group: A inserts key 1, B
 * key 2, C key 1 again (it fails: A has it), D deletes key 2. The culprit C
 * must not be re-run ahead of A (it would take key 1 and fail A), and D
 * must still delete what B inserted. */
static void test_retry_keeps_order(void **state) {
    (void)state;
    db *d = connect_migrated(g_conninfo);
    assert_int_equal(admin_exec(g_conninfo, "CREATE TABLE order_t (k int PRIMARY KEY, who text)"),
                     0);
    outcome o[4] = {0};
    int done = 0;
    db_unit *u[4] = {order_unit(1, "A"), order_unit(2, "B"), order_unit(1, "C"),
                     order_unit(2, NULL)};
    for (int i = 0; i < 4; i++) {
        o[i].counter = &done;
        submit(d, u[i], true, record, &o[i]);
    }
    assert_true(run_until(d, &done, 4, 20000));
    assert_true(o[0].ok);
    assert_true(o[1].ok);
    assert_false(o[2].ok);
    assert_true(db_err_sqlstate_is(o[2].err, "23505"));
    assert_true(o[3].ok);
    assert_int_equal(query_long(g_conninfo, "SELECT count(*) FROM order_t WHERE k = 1 AND "
                                            "who = 'A'"),
                     1);
    assert_int_equal(query_long(g_conninfo, "SELECT count(*) FROM order_t"), 1);

    /* A retried group failing again must not let units behind it commit
     * first. P1 takes key 7; P2 and P3 insert key 20 into a table whose key
     * is checked only at COMMIT; C takes key 7 too (it fails: P1 has it); S
     * deletes key 20. The group fails on C; P1-P3 re-run as a group fail at
     * COMMIT (no culprit), so each runs alone: P3 fails. C must then still
     * find key 7 taken by P1, and S must come after P2. */
    assert_int_equal(admin_exec(g_conninfo, "CREATE TABLE order_d (k int, who text, "
                                            "CONSTRAINT order_d_k UNIQUE (k) "
                                            "DEFERRABLE INITIALLY DEFERRED)"),
                     0);
    static const char *const sqls[5] = {
        "INSERT INTO order_t VALUES (7, 'P1')", "INSERT INTO order_d VALUES (20, 'P2')",
        "INSERT INTO order_d VALUES (20, 'P3')", "INSERT INTO order_t VALUES (7, 'C')",
        "DELETE FROM order_d WHERE k = 20"};
    outcome g[5] = {0};
    for (int i = 0; i < 5; i++) {
        db_unit *x = db_unit_new();
        assert_int_equal(db_unit_add(x, sqls[i], 0, NULL, NULL, NULL), 0);
        g[i].counter = &done;
        submit(d, x, true, record, &g[i]);
    }
    assert_true(run_until(d, &done, 4 + 5, 20000));
    for (int i = 0; i < 5; i++) assert_int_equal(g[i].calls, 1);
    assert_true(g[0].ok);
    assert_true(g[1].ok);
    assert_false(g[2].ok);
    assert_true(db_err_sqlstate_is(g[2].err, "23505"));
    assert_false(g[3].ok);
    assert_true(db_err_sqlstate_is(g[3].err, "23505"));
    assert_true(g[4].ok);
    assert_int_equal(query_long(g_conninfo, "SELECT count(*) FROM order_t WHERE k = 7 AND "
                                            "who = 'P1'"),
                     1);
    assert_int_equal(query_long(g_conninfo, "SELECT count(*) FROM order_d"), 0);
    db_free(d);
}

static void test_reads_pipelined_with_writes(void **state) {
    (void)state;
    db *d = connect_migrated(g_conninfo);
    long room = make_room("reads@rooms.localhost");
    enum { NW = 50, NR = 200 };
    outcome w[NW] = {0};
    outcome r[NR] = {0};
    outcome multi = {0}, bad = {0}, after_bad = {0};
    int done = 0;
    for (int i = 0; i < NR; i++) {
        if (i < NW) {
            char origin[16];
            snprintf(origin, sizeof origin, "r%d", i);
            w[i].counter = &done;
            submit(d, message_unit(room, i, origin), true, record, &w[i]);
        }
        char a[16], b[16];
        snprintf(a, sizeof a, "%d", i);
        snprintf(b, sizeof b, "s%d", i);
        const char *vals[] = {a, b};
        db_unit *u = db_unit_new();
        assert_int_equal(db_unit_add(u, "SELECT $1::int * 2, $2::text", 2, vals, NULL, NULL), 0);
        r[i].counter = &done;
        submit(d, u, false, record, &r[i]);
        if (i == 100) {
            db_unit *m = db_unit_new();
            assert_int_equal(db_unit_add(m, "SELECT 41 + 1", 0, NULL, NULL, NULL), 0);
            assert_int_equal(db_unit_add(m, "SELECT NULL::text", 0, NULL, NULL, NULL), 0);
            assert_int_equal(db_unit_add(m, "SELECT 'third'", 0, NULL, NULL, NULL), 0);
            multi.counter = &done;
            submit(d, m, false, record, &multi);
            bad.counter = &done;
            g_in_submit = true;
            db_read1(d, "SELECT 1 / 0", 0, NULL, NULL, NULL, record, &bad);
            g_in_submit = false;
            after_bad.counter = &done;
            g_in_submit = true;
            db_read1(d, "SELECT 'fine'", 0, NULL, NULL, NULL, record, &after_bad);
            g_in_submit = false;
        }
    }
    assert_int_equal(done, 0);
    db_tick(d, now_ms()); /* sends the group and every read */
    db_stats st;
    db_get_stats(d, &st);
    assert_int_equal(st.inflight_units, NW + NR + 3);
    assert_int_equal(st.queued_units, 0);
    assert_int_equal(done, 0);
    assert_true(run_until(d, &done, NW + NR + 3, 20000));

    for (int i = 0; i < NR; i++) {
        assert_true(r[i].ok);
        assert_int_equal(r[i].nresults, 1);
        assert_int_equal(strtol(r[i].val[0], NULL, 10), 2 * i);
        /* Results came back in send order, behind the write group. */
        if (i > 0) assert_true(r[i].order > r[i - 1].order);
        assert_true(r[i].order > w[NW - 1].order);
    }
    for (int i = 0; i < NW; i++) assert_true(w[i].ok);
    assert_true(multi.ok);
    assert_int_equal(multi.nresults, 3);
    assert_string_equal(multi.val[0], "42");
    assert_int_equal(multi.ntuples[1], 1);
    assert_string_equal(multi.val[2], "third");
    assert_false(bad.ok);
    assert_true(db_err_sqlstate_is(bad.err, "22012"));
    assert_true(after_bad.ok);
    assert_string_equal(after_bad.val[0], "fine");
    db_get_stats(d, &st);
    assert_int_equal(st.reads, NR + 3);
    assert_int_equal(st.commits, 1);
    db_free(d);
}

/* With nothing listening, units wait for the database, then fail; callbacks
 * come from the loop, and db_free owes every remaining unit its callback. */
static void test_unavailable_and_shutdown(void **state) {
    (void)state;
    char ci[128];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=nobody dbname=none connect_timeout=2",
             pgt_free_port());
    db *d = db_new(ci);
    assert_non_null(d);
    db_set_unavailable_timeout_ms(d, 300);
    int done = 0;
    outcome w = {0}, r = {0}, broken = {0};
    w.counter = r.counter = broken.counter = &done;
    submit(d, message_unit(1, 1, "x"), true, record, &w);
    g_in_submit = true;
    db_read1(d, "SELECT 1", 0, NULL, NULL, NULL, record, &r);
    g_in_submit = false;
    db_unit *b = db_unit_new();
    assert_int_equal(db_unit_add(b, "SELECT 1", -1, NULL, NULL, NULL), -1);
    submit(d, b, true, record, &broken);
    assert_int_equal(done, 0);
    assert_false(db_is_ready(d));
    long t0 = now_ms();
    assert_true(run_until(d, &done, 3, 5000));
    assert_false(broken.ok);
    assert_false(w.ok);
    assert_false(r.ok);
    assert_string_equal(w.err, "database unavailable");
    assert_string_equal(r.err, "database unavailable");
    assert_true(now_ms() - t0 >= 250);

    char err[256];
    assert_int_equal(db_connect_blocking(d, 300, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot connect"));

    outcome q1 = {0}, q2 = {0};
    q1.counter = q2.counter = &done;
    submit(d, message_unit(1, 2, "y"), true, record, &q1);
    submit(d, message_unit(1, 3, "z"), false, record, &q2);
    db_free(d);
    assert_int_equal(done, 5);
    assert_string_equal(q1.err, "shutting down");
    assert_string_equal(q2.err, "shutting down");
}

static long backend_pid(db *d) {
    return PQbackendPID(db_pgconn(d));
}

static void wait_ready(db *d, int timeout_ms) {
    long deadline = now_ms() + timeout_ms;
    while (!db_is_ready(d) && now_ms() < deadline) loop_once(d, 10);
    assert_true(db_is_ready(d));
}

/* Submit a slow write and a slow read and run until both are in flight. */
static void start_slow(db *d, long room, outcome *w, outcome *r, int *done) {
    db_unit *u = message_unit(room, 9, NULL);
    assert_int_equal(db_unit_add(u, "SELECT pg_sleep(5)", 0, NULL, NULL, NULL), 0);
    w->counter = r->counter = done;
    submit(d, u, true, record, w);
    g_in_submit = true;
    db_read1(d, "SELECT pg_sleep(5)", 0, NULL, NULL, NULL, record, r);
    g_in_submit = false;
    db_stats st;
    long deadline = now_ms() + 5000;
    do {
        loop_once(d, 10);
        db_get_stats(d, &st);
    } while (st.inflight_units < 2 && now_ms() < deadline);
    assert_int_equal(st.inflight_units, 2);
}

static void check_works(db *d, long room, int *done, const char *origin) {
    outcome w = {0}, r = {0};
    int target = *done + 2;
    w.counter = r.counter = done;
    submit(d, message_unit(room, 1, origin), true, record, &w);
    g_in_submit = true;
    db_read1(d, "SELECT 'again'", 0, NULL, NULL, NULL, record, &r);
    g_in_submit = false;
    assert_true(run_until(d, done, target, 10000));
    assert_true(w.ok);
    assert_true(r.ok);
    assert_string_equal(r.val[0], "again");
}

static void test_reconnect(void **state) {
    (void)state;
    db *d = connect_migrated(g_conninfo);
    long room = make_room("reconnect@rooms.localhost");
    int done = 0;
    wait_ready(d, 5000);
    check_works(d, room, &done, "before");

    /* The backend is killed under two statements in flight. */
    outcome w = {0}, r = {0};
    start_slow(d, room, &w, &r, &done);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%ld)", backend_pid(d));
    assert_int_equal(admin_exec(g_admin_conninfo, sql), 0);
    long t0 = now_ms();
    assert_true(run_until(d, &done, 4, 10000));
    assert_false(w.ok);
    assert_false(r.ok);
    assert_non_null(strstr(w.err, "connection lost"));
    assert_non_null(strstr(r.err, "connection lost"));
    assert_int_equal(w.calls, 1);
    assert_int_equal(r.calls, 1);
    /* Units queued while the connection is down wait for the reconnect. */
    outcome queued = {0};
    queued.counter = &done;
    submit(d, message_unit(room, 2, "queued"), true, record, &queued);
    wait_ready(d, 10000);
    assert_true(now_ms() - t0 >= 200); /* back-off, not a tight loop */
    assert_true(run_until(d, &done, 5, 10000));
    assert_true(queued.ok);
    check_works(d, room, &done, "after-kill");
    db_stats st;
    db_get_stats(d, &st);
    assert_int_equal(st.reconnects, 1);
    /* The killed transaction did not commit (its unit had origin NULL). */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM messages WHERE room_id = %ld AND origin_id IS NULL", room);
    assert_int_equal(query_long(g_conninfo, sql), 0);

    if (g_scratch[0]) {
        /* A whole server restart under load. */
        outcome w2 = {0}, r2 = {0};
        int target = done + 2;
        start_slow(d, room, &w2, &r2, &done);
        char args[400];
        snprintf(args, sizeof args, "restart '%s'", g_scratch);
        assert_int_equal(scratch(args), 0);
        assert_true(run_until(d, &done, target, 10000));
        assert_false(w2.ok);
        assert_false(r2.ok);
        assert_non_null(strstr(w2.err, "connection lost"));
        wait_ready(d, 15000);
        check_works(d, room, &done, "after-restart");
        db_get_stats(d, &st);
        assert_int_equal(st.reconnects, 2);
    }
    db_free(d);
}

/* Statements prepared on the db's own session, read through that session. */
static long prepared_on_session(db *d, int *done) {
    outcome o = {0};
    int target = *done + 1;
    o.counter = done;
    g_in_submit = true;
    db_read1(d, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'sr_ps%'", 0, NULL,
             NULL, NULL, record, &o);
    g_in_submit = false;
    assert_true(run_until(d, done, target, 10000));
    assert_true(o.ok);
    return strtol(o.val[0], NULL, 10);
}

/* A read of $1 + 1 with its statement added by db_unit_add_prepared. */
static void prepared_read(db *d, int v, int *done) {
    char in[16];
    snprintf(in, sizeof in, "%d", v);
    const char *vals[] = {in};
    db_unit *u = db_unit_new();
    assert_int_equal(db_unit_add_prepared(u, "SELECT $1::int + 1", 1, vals, NULL, NULL), 0);
    outcome o = {0};
    int target = *done + 1;
    o.counter = done;
    submit(d, u, false, record, &o);
    assert_true(run_until(d, done, target, 10000));
    assert_true(o.ok);
    assert_int_equal(strtol(o.val[0], NULL, 10), v + 1);
}

/* db_unit_add_prepared: the same results as unnamed statements, one Parse
 * per text and connection (later groups reuse it), a text whose Parse fails
 * costs its own unit only (which then runs unnamed and fails alone, as any
 * bad unit), and a new connection prepares again. */
static void test_prepared_statements(void **state) {
    (void)state;
    db *d = connect_migrated(g_conninfo);
    long room = make_room("prepared@rooms.localhost");
    outcome o[NGROUP] = {0};
    int done = 0;
    for (int i = 0; i < NGROUP; i++) {
        o[i].counter = &done;
        db_unit *u;
        if (i == 7) {
            const char *vals[] = {"1"};
            u = db_unit_new();
            assert_int_equal(
                db_unit_add_prepared(u, "INSRT INTO messages VALUES ($1)", 1, vals, NULL, NULL), 0);
        } else {
            char origin[16];
            snprintf(origin, sizeof origin, "p%d", i);
            u = message_unit_as(room, i, origin, true);
        }
        submit(d, u, true, record, &o[i]);
    }
    assert_true(run_until(d, &done, NGROUP, 20000));
    char *seen = calloc(NGROUP + 1, 1);
    for (int i = 0; i < NGROUP; i++) {
        assert_int_equal(o[i].calls, 1);
        if (i == 7) {
            assert_false(o[i].ok);
            assert_true(db_err_sqlstate_is(o[i].err, "42601"));
            continue;
        }
        assert_true(o[i].ok);
        assert_int_equal(o[i].ntuples[0], 1);
        long seq = strtol(o[i].val[0], NULL, 10);
        assert_true(seq >= 1 && seq <= NGROUP);
        assert_false(seen[seq]);
        seen[seq] = 1;
    }
    free(seen);
    db_stats st;
    db_get_stats(d, &st);
    assert_int_equal(st.units_failed, 1);
    assert_int_equal(st.units_committed, NGROUP - 1);
    assert_int_equal(st.commits, 2); /* the bad unit alone between 0-6 and 8-19 */
    assert_int_equal(prepared_on_session(d, &done), 1); /* the good text only */

    /* A second group binds the same statement: no second Parse. And a read
     * gets prepared too (its first run goes unnamed, while its Parse is on
     * the way). */
    outcome more[5] = {0};
    int target = done + 5;
    for (int i = 0; i < 5; i++) {
        char origin[16];
        snprintf(origin, sizeof origin, "q%d", i);
        more[i].counter = &done;
        submit(d, message_unit_as(room, 100 + i, origin, true), true, record, &more[i]);
    }
    assert_true(run_until(d, &done, target, 10000));
    for (int i = 0; i < 5; i++) assert_true(more[i].ok);
    prepared_read(d, 41, &done);
    prepared_read(d, 42, &done);
    assert_int_equal(prepared_on_session(d, &done), 2);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM messages WHERE room_id = %ld", room);
    assert_int_equal(query_long(g_conninfo, sql), NGROUP - 1 + 5);

    /* The session dies: the next one prepares again on first use. */
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%ld)", backend_pid(d));
    assert_int_equal(admin_exec(g_admin_conninfo, sql), 0);
    outcome after = {0};
    after.counter = &done;
    target = done + 1;
    submit(d, message_unit_as(room, 200, "after-kill", true), true, record, &after);
    assert_true(run_until(d, &done, target, 15000));
    if (!after.ok) {
        /* In flight when the kill was noticed: the caller's resend. */
        assert_non_null(strstr(after.err, "connection lost"));
        wait_ready(d, 15000);
        outcome again = {0};
        again.counter = &done;
        target = done + 1;
        submit(d, message_unit_as(room, 200, "after-kill", true), true, record, &again);
        assert_true(run_until(d, &done, target, 10000));
        assert_true(again.ok);
    }
    assert_int_equal(prepared_on_session(d, &done), 1);
    prepared_read(d, 7, &done);
    db_free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrate_applies_once),
        cmocka_unit_test(test_migrate_error_is_atomic),
        cmocka_unit_test(test_migrate_concurrent_instances),
        cmocka_unit_test(test_group_commit),
        cmocka_unit_test(test_bad_unit_fails_alone),
        cmocka_unit_test(test_commit_failure_and_many_bad_units),
        cmocka_unit_test(test_retry_keeps_order),
        cmocka_unit_test(test_reads_pipelined_with_writes),
        cmocka_unit_test(test_unavailable_and_shutdown),
        cmocka_unit_test(test_reconnect),
        cmocka_unit_test(test_prepared_statements),
    };
    return cmocka_run_group_tests_name("db", tests, group_setup, group_teardown);
}
