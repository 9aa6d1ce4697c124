/* Time-based renewal of the room key (issue 3: "a new epoch when the epoch
 * passes its maximum age"), live: sealroomd's epoch.max_age is lowered to
 * 2 s through a configuration reload. Then
 *   1. with both members idle in the room, sealroomd asks one of them for a
 *      new epoch (<rekey reason='max-age'/>), whose library starts one: both
 *      end up holding the next epoch without anyone sending;
 *   2. a message sealed under an epoch that expired meanwhile is refused by
 *      sealroomd (<stale-epoch/>), resealed by the library under a new epoch
 *      with the same origin-id, stored once, and read by the other member.
 * The maximum age is restored afterwards, also when the test fails. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "e2e_common.h"

#define MAX_AGE_S 2

static char restore_cmd[2048];

static void restore_max_age(void)
{
    if (restore_cmd[0] && system(restore_cmd) != 0)
        fprintf(stderr, "it_e2e_maxage: could not restore epoch.max_age (%s)\n", restore_cmd);
}

static void set_max_age(const char *set_config, int seconds)
{
    char cmd[2048], what[64];
    snprintf(cmd, sizeof cmd, "%s epoch.max_age %d", set_config, seconds);
    snprintf(what, sizeof what, "epoch.max_age = %d", seconds);
    it_run_command(what, cmd);
}

typedef struct want_epoch {
    const char *room;
    uint64_t at_least;
} want_epoch;

static bool holds_epoch(it_lib *l, const void *arg)
{
    const want_epoch *w = arg;
    uint64_t e = 0;
    return sealroom_room_epoch(it_lib_ctx(l), &e, w->room) == SEALROOM_OK && e >= w->at_least;
}

/* The epoch of the data key a stored message names (payload bytes 1..17). */
static long long stored_epoch_of(const char *room, const char *stanza_id)
{
    char rid[32];
    snprintf(rid, sizeof rid, "%lld", e2e_room_id(room));
    const char *p[2] = {rid, stanza_id};
    PGresult *res = e2e_pg_exec("SELECT d.epoch FROM messages m JOIN datakeys d "
                                "ON d.room_id = m.room_id AND d.dkid = substring(m.payload FROM 2 FOR 16) "
                                "WHERE m.room_id = $1::bigint AND m.seq = $2::bigint",
                                2, p, true);
    IT_CHECK(PQntuples(res) == 1, "message %s names no stored data key", stanza_id);
    long long e = e2e_pg_int8(res, 0, 0);
    PQclear(res);
    return e;
}

int main(void)
{
    const it_env *env = it_init("it_e2e_maxage");
    const char *set_config = getenv("SEALROOM_TEST_SET_CONFIG");
    IT_CHECK(set_config && *set_config, "SEALROOM_TEST_SET_CONFIG is not set");
    (void)env;

    it_lib *alice = it_lib_connect("alice");
    it_lib *bob = it_lib_connect("bob");
    it_lib_register(alice);
    it_lib_register(bob);
    char room[256];
    it_new_room(room, sizeof room, "maxage");
    it_log("room %s", room);
    it_lib_create(alice, room);
    it_lib_add(alice, room, "bob", SEALROOM_ROLE_MEMBER);
    it_lib_join(alice, room, "alice");
    it_lib_join(bob, room, "bob");
    unsigned char first[24];
    it_random(first, sizeof first);
    free(it_lib_say(alice, room, first, sizeof first, NULL));
    uint64_t e0 = 0;
    IT_OK(sealroom_room_epoch(it_lib_ctx(alice), &e0, room));
    it_log("epoch %llu before the maximum age is lowered", (unsigned long long)e0);

    snprintf(restore_cmd, sizeof restore_cmd, "%s epoch.max_age 86400", set_config);
    atexit(restore_max_age);

    /* 1. Idle members: the service's nudge makes one of them renew. */
    set_max_age(set_config, MAX_AGE_S);
    want_epoch w = {room, e0 + 1};
    uint64_t until = it_mono_ms() + 15000;
    while (!(holds_epoch(alice, &w) && holds_epoch(bob, &w)) && it_mono_ms() < until) {
        sealroom_client_run(alice->client, 20);
        sealroom_client_run(bob->client, 20);
    }
    /* Back to a day at once, or the room would renew every two seconds. */
    set_max_age(set_config, 86400);
    uint64_t ea = 0, eb = 0;
    IT_CHECK(holds_epoch(alice, &w) && holds_epoch(bob, &w),
             "no new epoch %u s after the maximum age passed (alice %llu, bob %llu)", 15,
             sealroom_room_epoch(it_lib_ctx(alice), &ea, room) == 0 ? (unsigned long long)ea : 0ull,
             sealroom_room_epoch(it_lib_ctx(bob), &eb, room) == 0 ? (unsigned long long)eb : 0ull);
    IT_OK(sealroom_room_epoch(it_lib_ctx(alice), &ea, room));
    it_log("idle room renewed: epoch %llu -> %llu", (unsigned long long)e0, (unsigned long long)ea);

    /* alice's data key of the new epoch, for the next step to reuse. */
    unsigned char warm[24];
    it_random(warm, sizeof warm);
    free(it_lib_say(alice, room, warm, sizeof warm, NULL));

    /* 2. A message sealed under an epoch that aged out on the way. Neither
     * client runs its loop while the epoch expires, so alice seals under
     * the old key, which the room refuses; her library renews and reseals. */
    set_max_age(set_config, MAX_AGE_S);
    /* sealroomd counts whole seconds: wait well past the limit. */
    it_sleep_ms((MAX_AGE_S + 2) * 1000);
    unsigned char late[40];
    it_random(late, sizeof late);
    char origin[SEALROOM_ORIGIN_ID_BYTES];
    uint32_t req = 0;
    IT_OK(sealroom_room_send(it_lib_ctx(alice), &req, origin, sizeof origin, room, late,
                             sizeof late));
    it_lib_wait_ok(alice, req, "message sent as the epoch expired");
    set_max_age(set_config, 86400);
    const it_ev *d = it_lib_done(alice, req);
    IT_CHECK(d && d->stanza_id, "no stanza-id for the late message");
    char alice_bare[256];
    it_bare(alice_bare, sizeof alice_bare, "alice");
    IT_CHECK(it_pg_count_origin(room, alice_bare, origin) == 1, "late message stored %ld times",
             it_pg_count_origin(room, alice_bare, origin));
    long long stored_epoch = stored_epoch_of(room, d->stanza_id);
    IT_CHECK(stored_epoch > (long long)ea,
             "the late message was stored under epoch %lld, not after the expired %llu",
             stored_epoch, (unsigned long long)ea);
    until = it_mono_ms() + IT_TIMEOUT_MS;
    const it_ev *got = NULL;
    while (!(got = it_lib_live_by_origin(bob, room, origin)) && it_mono_ms() < until)
        sealroom_client_run(bob->client, 20);
    IT_CHECK(got && got->payload_len == sizeof late && memcmp(got->payload, late, sizeof late) == 0,
             "bob did not read the resealed message");
    it_log("late message refused under epoch %llu, resealed and stored under epoch %lld",
           (unsigned long long)ea, stored_epoch);

    it_lib_free(alice);
    it_lib_free(bob);
    it_log("passed");
    return 0;
}
