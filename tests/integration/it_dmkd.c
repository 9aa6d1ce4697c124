/* Multi-cast key distribution through a real XMPP server (issue 4 item 4).
 * Live libsealroom sessions take part in runs that sealroomd drives; the
 * test reads what each ctx holds through the static library's test hook
 * and what the service stored straight from PostgreSQL. Scenarios (the
 * first argument):
 *   groups   rooms of 2, 3 and 10 members agree on one S_e in a run (every
 *            member seals its own envelope: one sealer per member), the
 *            service stores the same KC_e, and the run's rows are gone;
 *   removal  removing a member starts a run among the others (coalesced:
 *            two quick removals make one epoch); the removed members hold
 *            nothing of it and the service stored no envelope for them;
 *   stall    a member stops answering after round 1: it is dropped, the
 *            run restarts without it, it gets an envelope sealed by a
 *            participant and reads the room's new messages;
 *   restart  sealroomd restarts while a run waits for a stalled member in
 *            round 2: the run resumes from PostgreSQL and completes;
 *   hundred  100 members online agree on one S_e; prints the wall time from
 *            the request to the last member holding the new epoch.
 * It needs the dev stack's environment (contrib/sealroom-dev). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "e2e_common.h"
#include "testhook.h"

#define MAX_USERS 100
#define RUN_TIMEOUT_MS 60000u

static e2e_lib *u[MAX_USERS];
static char names[MAX_USERS][32];
static size_t nusers;
static char room[256];
static size_t nadmins; /* make_room makes u[1..nadmins] admins */

/* ---- helpers ---- */

static void pump_all(unsigned ms)
{
    uint64_t end = it_mono_ms() + ms;
    do {
        for (size_t i = 0; i < nusers; i++)
            if (u[i]) (void)sealroom_client_run(u[i]->l->client, 0);
        it_sleep_ms(1);
    } while (it_mono_ms() < end);
}

static uint64_t epoch_of(size_t i)
{
    uint64_t e = 0;
    return sealroom_room_epoch(e2e_ctx(u[i]), &e, room) == SEALROOM_OK ? e : 0;
}

/* Pump everyone until every listed member holds epoch >= want. */
static bool wait_epoch(const size_t *who, size_t n, uint64_t want, unsigned timeout_ms)
{
    uint64_t end = it_mono_ms() + timeout_ms;
    for (;;) {
        bool all = true;
        for (size_t k = 0; k < n && all; k++) all = epoch_of(who[k]) >= want;
        if (all) return true;
        if (it_mono_ms() >= end) return false;
        pump_all(5);
    }
}

typedef struct find_secret {
    const char *room;
    uint64_t epoch;
    unsigned char secret[32];
    bool found;
} find_secret;

static void on_secret(void *user, const char *what, const char *r, uint64_t epoch,
                      const unsigned char *secret, size_t len)
{
    find_secret *f = user;
    if (strcmp(what, "epoch.secret") == 0 && r && strcmp(r, f->room) == 0 &&
        epoch == f->epoch && len == 32) {
        memcpy(f->secret, secret, 32);
        f->found = true;
    }
}

static bool secret_of(size_t i, uint64_t epoch, unsigned char out[32])
{
    find_secret f = {.room = room, .epoch = epoch};
    sr_testhook_secrets(e2e_ctx(u[i]), on_secret, &f);
    bool found = f.found;
    memcpy(out, f.secret, 32);
    sodium_memzero(&f, sizeof f);
    return found;
}

/* Every listed member holds the same S_e for epoch. */
static void check_same_secret(const size_t *who, size_t n, uint64_t epoch)
{
    unsigned char first[32], other[32];
    IT_CHECK(secret_of(who[0], epoch, first), "%s holds no secret for epoch %llu",
             names[who[0]], (unsigned long long)epoch);
    for (size_t k = 1; k < n; k++) {
        IT_CHECK(secret_of(who[k], epoch, other), "%s holds no secret for epoch %llu",
                 names[who[k]], (unsigned long long)epoch);
        IT_CHECK(sodium_memcmp(first, other, 32) == 0,
                 "%s and %s hold different secrets for epoch %llu", names[who[0]],
                 names[who[k]], (unsigned long long)epoch);
    }
    sodium_memzero(first, sizeof first);
    sodium_memzero(other, sizeof other);
}

static long long pg_count(const char *sql, long long room_id, uint64_t epoch)
{
    char id[24], ep[24];
    snprintf(id, sizeof id, "%lld", room_id);
    snprintf(ep, sizeof ep, "%llu", (unsigned long long)epoch);
    const char *p[2] = {id, ep};
    PGresult *res = e2e_pg_exec(sql, 2, p, false);
    long long n = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return n;
}

/* The epoch was agreed in a run: every participant sealed its own
 * envelope (a lone starter seals them all), the run's rows are gone. */
static void check_run_epoch(uint64_t epoch, long long participants, long long envelopes)
{
    long long id = e2e_room_id(room);
    long long env = pg_count("SELECT count(*) FROM envelopes WHERE room_id = $1 AND epoch = $2",
                             id, epoch);
    long long self = pg_count("SELECT count(*) FROM envelopes WHERE room_id = $1 AND epoch = $2 "
                              "AND sealer = recipient",
                              id, epoch);
    long long runs = pg_count("SELECT count(*) FROM dmkd_runs WHERE room_id = $1 AND $2 > 0",
                              id, epoch);
    IT_CHECK(env == envelopes, "epoch %llu has %lld envelopes, expected %lld",
             (unsigned long long)epoch, env, envelopes);
    IT_CHECK(self == participants,
             "epoch %llu: %lld members sealed their own envelope, expected %lld participants",
             (unsigned long long)epoch, self, participants);
    IT_CHECK(runs == 0, "the run's rows are still stored after its epoch");
}

static void connect_users(size_t n, const char *const *list)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "%s", list[i]);
        u[i] = e2e_connect(names[i], true);
        it_lib_register(u[i]->l);
    }
    nusers = n;
}

static void free_users(void)
{
    for (size_t i = 0; i < nusers; i++) {
        e2e_lib_free(u[i]);
        u[i] = NULL;
    }
    nusers = 0;
}

/* u[0] creates a fresh room, adds u[1..n-1]; everyone joins. */
static void make_room(const char *prefix)
{
    it_new_room(room, sizeof room, prefix);
    it_lib_create(u[0]->l, room);
    for (size_t i = 1; i < nusers; i++)
        it_lib_add(u[0]->l, room, names[i], i <= nadmins ? SEALROOM_ROLE_ADMIN : SEALROOM_ROLE_MEMBER);
    if (nusers > 20) it_log("%zu members added", nusers);
    for (size_t i = 0; i < nusers; i++) {
        uint32_t req = 0;
        IT_OK(sealroom_room_join(e2e_ctx(u[i]), &req, room, names[i]));
        uint64_t end = it_mono_ms() + IT_TIMEOUT_MS;
        while (!it_lib_done(u[i]->l, req)) {
            IT_CHECK(it_mono_ms() < end, "%s could not join", names[i]);
            pump_all(5);
        }
        IT_CHECK(it_lib_done(u[i]->l, req)->result == SEALROOM_OK, "%s: join failed",
                 names[i]);
    }
}

/* The newest epoch any member holds, after letting things settle. */
static uint64_t settled_epoch(void)
{
    pump_all(800);
    uint64_t e = 0;
    for (size_t i = 0; i < nusers; i++)
        if (epoch_of(i) > e) e = epoch_of(i);
    return e;
}

static uint64_t request_run(size_t who, uint64_t before)
{
    uint32_t req = 0;
    IT_OK(sealroom_room_rekey(e2e_ctx(u[who]), &req, room));
    size_t all[MAX_USERS];
    for (size_t i = 0; i < nusers; i++) all[i] = i;
    IT_CHECK(wait_epoch(all, nusers, before + 1, RUN_TIMEOUT_MS),
             "the members did not reach epoch %llu", (unsigned long long)(before + 1));
    return before + 1;
}

static void say_and_read(size_t from, const size_t *readers, size_t nreaders)
{
    unsigned char text[48];
    it_random(text, sizeof text);
    char origin[72];
    uint32_t req = 0;
    IT_OK(sealroom_room_send(e2e_ctx(u[from]), &req, origin, sizeof origin, room, text,
                             sizeof text));
    uint64_t end = it_mono_ms() + IT_TIMEOUT_MS;
    for (;;) {
        bool all = it_lib_done(u[from]->l, req) != NULL;
        for (size_t k = 0; k < nreaders && all; k++)
            all = e2e_any_msg(u[readers[k]], room, origin) != NULL;
        if (all) break;
        IT_CHECK(it_mono_ms() < end, "a message of %s did not reach every reader", names[from]);
        pump_all(5);
    }
    IT_CHECK(it_lib_done(u[from]->l, req)->result == SEALROOM_OK, "sending failed");
    for (size_t k = 0; k < nreaders; k++) {
        const it_ev *m = e2e_any_msg(u[readers[k]], room, origin);
        IT_CHECK(m->type == SEALROOM_EVENT_MESSAGE && m->payload_len == sizeof text &&
                     memcmp(m->payload, text, sizeof text) == 0,
                 "%s did not read %s's message as sent", names[readers[k]], names[from]);
    }
}

static const char *const base_users[] = {"alice", "bob",   "carol", "dave",  "eve",  "frank",
                                         "grace", "heidi", "ivan",  "judy", "mallory", "oscar"};

/* ---- scenarios ---- */

static void scenario_groups(void)
{
    const size_t sizes[3] = {2, 3, 10};
    for (int s = 0; s < 3; s++) {
        size_t n = sizes[s];
        connect_users(n, base_users);
        make_room("dmkd-group");
        uint64_t before = settled_epoch();
        uint64_t e = request_run(n - 1, before);
        size_t all[MAX_USERS];
        for (size_t i = 0; i < n; i++) all[i] = i;
        check_same_secret(all, n, e);
        check_run_epoch(e, (long long)n, (long long)n);
        say_and_read(0, all, n);
        it_log("%zu members agreed on epoch %llu in one run", n, (unsigned long long)e);
        free_users();
    }
}

static void scenario_removal(void)
{
    connect_users(5, base_users);
    nadmins = 1;
    make_room("dmkd-removal");
    nadmins = 0;
    uint64_t before = settled_epoch();
    /* Two removals in quick succession: one run, one epoch. */
    uint32_t r1 = 0, r2 = 0;
    IT_OK(sealroom_room_remove_member(e2e_ctx(u[0]), &r1, room, u[3]->l->bare));
    IT_OK(sealroom_room_remove_member(e2e_ctx(u[1]), &r2, room, u[4]->l->bare));
    it_lib_wait_ok(u[0]->l, r1, "removing dave");
    it_lib_wait_ok(u[1]->l, r2, "removing eve");
    size_t stay[3] = {0, 1, 2};
    IT_CHECK(wait_epoch(stay, 3, before + 1, RUN_TIMEOUT_MS), "no epoch after the removals");
    pump_all(1500); /* a second run would have made another epoch by now */
    uint64_t e = epoch_of(0);
    IT_CHECK(e == before + 1, "two quick removals made %llu epochs, expected one (coalesced)",
             (unsigned long long)(e - before));
    check_same_secret(stay, 3, e);
    check_run_epoch(e, 3, 3);
    /* The removed members hold nothing of the new epoch and nothing was sealed to them. */
    for (size_t i = 3; i < 5; i++) {
        unsigned char s[32];
        IT_CHECK(!secret_of(i, e, s), "removed %s holds the secret of epoch %llu", names[i],
                 (unsigned long long)e);
        IT_CHECK(epoch_of(i) < e, "removed %s reports epoch %llu", names[i],
                 (unsigned long long)epoch_of(i));
        char id[24], ep[24];
        snprintf(id, sizeof id, "%lld", e2e_room_id(room));
        snprintf(ep, sizeof ep, "%llu", (unsigned long long)e);
        const char *p[3] = {id, ep, u[i]->l->bare};
        PGresult *res = e2e_pg_exec("SELECT count(*) FROM envelopes WHERE room_id = $1 AND "
                                    "epoch = $2 AND recipient = $3",
                                    3, p, false);
        IT_CHECK(atoll(PQgetvalue(res, 0, 0)) == 0, "an envelope of epoch %s was sealed to %s",
                 ep, names[i]);
        PQclear(res);
    }
    say_and_read(1, stay, 3);
    free_users();
}

static void scenario_stall(void)
{
    connect_users(3, base_users + 5); /* frank, grace, heidi */
    make_room("dmkd-stall");
    uint64_t before = settled_epoch();
    sr_testhook_dmkd_stall(e2e_ctx(u[2]), 2); /* heidi stops after round 1 */
    uint32_t req = 0;
    IT_OK(sealroom_room_rekey(e2e_ctx(u[0]), &req, room));
    size_t two[2] = {0, 1};
    IT_CHECK(wait_epoch(two, 2, before + 1, RUN_TIMEOUT_MS),
             "the run did not complete without the stalled member");
    uint64_t e = before + 1;
    /* Two participants; the third envelope was sealed for the dropped one
     * (who may already have fetched it: it still gets the epoch headline). */
    check_run_epoch(e, 2, 3);
    sr_testhook_dmkd_stall(e2e_ctx(u[2]), 0);
    size_t all[3] = {0, 1, 2};
    say_and_read(0, all, 3);
    IT_CHECK(epoch_of(2) == e, "the dropped member did not move to epoch %llu",
             (unsigned long long)e);
    check_same_secret(all, 3, e);
    free_users();
}

static void set_config(const char *key, const char *value)
{
    const char *cmd = getenv("SEALROOM_TEST_SET_CONFIG");
    IT_CHECK(cmd && *cmd, "SEALROOM_TEST_SET_CONFIG is not set");
    char line[1024];
    snprintf(line, sizeof line, "%s %s %s", cmd, key, value);
    it_run_command("set-config", line);
}

static void scenario_restart(void)
{
    const char *restart = getenv("SEALROOM_TEST_SEALROOMD_RESTART");
    IT_CHECK(restart && *restart, "SEALROOM_TEST_SEALROOMD_RESTART is not set");
    set_config("dmkd.round_timeout_ms", "30000");
    connect_users(3, base_users + 8); /* ivan, judy, mallory */
    make_room("dmkd-restart");
    uint64_t before = settled_epoch();
    sr_testhook_dmkd_stall(e2e_ctx(u[2]), 2);
    uint32_t req = 0;
    IT_OK(sealroom_room_rekey(e2e_ctx(u[0]), &req, room));
    /* Wait until the others answered round 2 (their answers are stored). */
    long long id = e2e_room_id(room);
    uint64_t end = it_mono_ms() + RUN_TIMEOUT_MS;
    for (;;) {
        long long t = pg_count("SELECT count(*) FROM dmkd_parts WHERE room_id = $1 AND t IS NOT "
                               "NULL AND $2 > 0",
                               id, 1);
        if (t == 2) break;
        IT_CHECK(it_mono_ms() < end, "the run never reached round 2 (%lld answers stored)", t);
        pump_all(20);
    }
    it_log("two round-2 answers stored; restarting sealroomd");
    it_run_command("restart sealroomd", restart);
    sr_testhook_dmkd_stall(e2e_ctx(u[2]), 0);
    size_t all[3] = {0, 1, 2};
    IT_CHECK(wait_epoch(all, 3, before + 1, RUN_TIMEOUT_MS),
             "the run did not complete after the restart");
    uint64_t e = before + 1;
    check_same_secret(all, 3, e);
    check_run_epoch(e, 3, 3);
    set_config("dmkd.round_timeout_ms", "3000");
    say_and_read(2, all, 3);
    free_users();
}

static void scenario_hundred(void)
{
    static char list[MAX_USERS][32];
    const char *ptrs[MAX_USERS];
    char cmd[8192];
    const char *reg = getenv("SEALROOM_TEST_REGISTER_USERS");
    IT_CHECK(reg && *reg, "SEALROOM_TEST_REGISTER_USERS is not set");
    size_t k = (size_t)snprintf(cmd, sizeof cmd, "%s", reg);
    for (size_t i = 0; i < MAX_USERS; i++) {
        snprintf(list[i], sizeof list[i], "dk%03zu", i + 1);
        ptrs[i] = list[i];
        k += (size_t)snprintf(cmd + k, sizeof cmd - k, " %s", list[i]);
    }
    it_run_command("register 100 users", cmd);
    connect_users(MAX_USERS, ptrs);
    it_log("100 sessions connected");
    make_room("dmkd-hundred");
    it_log("100 members joined");
    uint64_t before = settled_epoch();
    uint64_t t0 = it_mono_ms();
    uint64_t e = request_run(MAX_USERS / 2, before);
    uint64_t ms = it_mono_ms() - t0;
    size_t all[MAX_USERS];
    for (size_t i = 0; i < MAX_USERS; i++) all[i] = i;
    check_same_secret(all, MAX_USERS, e);
    check_run_epoch(e, MAX_USERS, MAX_USERS);
    it_log("100 members agreed on epoch %llu: %llu ms from the request to the last member",
           (unsigned long long)e, (unsigned long long)ms);
    free_users();
}

int main(int argc, char **argv)
{
    it_init("it_dmkd");
    if (sodium_init() < 0) return 1;
    const char *what = argc > 1 ? argv[1] : "groups";
    if (strcmp(what, "groups") == 0) scenario_groups();
    else if (strcmp(what, "removal") == 0) scenario_removal();
    else if (strcmp(what, "stall") == 0) scenario_stall();
    else if (strcmp(what, "restart") == 0) scenario_restart();
    else if (strcmp(what, "hundred") == 0) scenario_hundred();
    else {
        fprintf(stderr, "usage: it_dmkd groups|removal|stall|restart|hundred\n");
        return 2;
    }
    it_log("it_dmkd %s: ok", what);
    return 0;
}
