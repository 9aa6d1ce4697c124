/* Two or three users (argv[1]) through libsealroom, the real XMPP server and
 * PostgreSQL: register identities, create a room, add the others with signed
 * roster versions, verify the chain from each member's side, join, talk
 * (every member sends while the others are present, interleaved), and
 * check that each receives every other member's payload byte for byte with
 * the room's stanza-id, in one order for all, stored once in PostgreSQL;
 * then everyone leaves and the others see it. */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define ROUNDS 4

static const char *const names[3] = {"alice", "bob", "carol"};

typedef struct sent {
    int from;
    char origin[72];
    char *stanza_id;
    unsigned char *payload;
    size_t len;
} sent;

typedef struct want_count {
    const char *room;
    size_t n;
} want_count;

/* Live messages from other occupants (our own reflections may be events too). */
static size_t live_from_others(const it_lib *l, const char *room)
{
    size_t n = 0;
    for (size_t k = 0; k < it_lib_live_count(l, room); k++)
        n += !it_lib_live(l, room, k)->self;
    return n;
}

static bool has_live(it_lib *l, const void *arg)
{
    const want_count *w = arg;
    return live_from_others(l, w->room) >= w->n;
}

typedef struct want_nick {
    const char *room, *nick;
    bool joined;
} want_nick;

static bool saw_occupant(it_lib *l, const void *arg)
{
    const want_nick *w = arg;
    sealroom_event_type t =
        w->joined ? SEALROOM_EVENT_OCCUPANT_JOINED : SEALROOM_EVENT_OCCUPANT_LEFT;
    for (size_t i = 0; i < l->nev; i++) {
        const it_ev *e = &l->ev[i];
        if (e->type == t && !e->self && e->room && e->nick && strcmp(e->room, w->room) == 0 &&
            strcmp(e->nick, w->nick) == 0)
            return true;
    }
    return false;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2;
    char name[32];
    snprintf(name, sizeof name, "it_talk_%d", n);
    it_init(name);
    IT_CHECK(n == 2 || n == 3, "user count %d", n);

    it_lib *u[3] = {0};
    for (int i = 0; i < n; i++) {
        u[i] = it_lib_connect(names[i]);
        it_lib_register(u[i]);
    }
    char room[256];
    it_new_room(room, sizeof room, n == 2 ? "talk2" : "talk3");
    it_log("room %s", room);
    it_lib_create(u[0], room);
    for (int i = 1; i < n; i++)
        it_lib_add(u[0], room, names[i], SEALROOM_ROLE_MEMBER);

    /* Every member verifies the whole chain and sees the same roster. */
    for (int i = 0; i < n; i++) {
        uint32_t req = 0;
        IT_OK(sealroom_room_sync(it_lib_ctx(u[i]), &req, room));
        it_lib_wait_ok(u[i], req, "roster sync");
        uint64_t version = 0;
        IT_OK(sealroom_room_roster_version(it_lib_ctx(u[i]), &version, room));
        IT_CHECK(version == (uint64_t)(n - 1), "%s verified version %llu, expected %d", names[i],
                 (unsigned long long)version, n - 1);
        IT_CHECK(sealroom_room_member_count(it_lib_ctx(u[i]), room) == (size_t)n,
                 "%s sees %zu members", names[i],
                 sealroom_room_member_count(it_lib_ctx(u[i]), room));
        IT_CHECK(sealroom_room_member_role(it_lib_ctx(u[i]), room, u[0]->bare) ==
                     SEALROOM_ROLE_OWNER,
                 "%s does not see alice as owner", names[i]);
        for (int k = 1; k < n; k++)
            IT_CHECK(sealroom_room_member_role(it_lib_ctx(u[i]), room, u[k]->bare) ==
                         SEALROOM_ROLE_MEMBER,
                     "%s does not see %s as member", names[i], names[k]);
    }
    IT_CHECK(it_pg_count("members", room) == n && it_pg_count("roster_versions", room) == n,
             "database roster rows");

    for (int i = 0; i < n; i++)
        it_lib_join(u[i], room, names[i]);
    /* Earlier occupants are told about later ones. */
    for (int i = 0; i < n; i++)
        for (int k = i + 1; k < n; k++) {
            want_nick w = {room, names[k], true};
            IT_CHECK(it_lib_until(u[i], saw_occupant, &w, IT_TIMEOUT_MS), "%s did not see %s join",
                     names[i], names[k]);
        }

    /* Interleaved rounds: everyone sends, then everyone waits for its own
     * completions, so the room sees the members' messages mixed. */
    sent msgs[3 * ROUNDS];
    int nmsgs = 0;
    static const size_t sizes[ROUNDS] = {1, 777, 4096, 30000};
    for (int round = 0; round < ROUNDS; round++) {
        uint32_t req[3];
        int idx[3];
        for (int i = 0; i < n; i++) {
            sent *s = &msgs[nmsgs];
            idx[i] = nmsgs++;
            s->from = i;
            s->len = sizes[round] + (size_t)i;
            s->payload = malloc(s->len);
            IT_CHECK(s->payload != NULL, "out of memory");
            it_random(s->payload, s->len);
            s->payload[0] = 0; /* binary, with NUL bytes */
            IT_OK(sealroom_room_send(it_lib_ctx(u[i]), &req[i], s->origin, sizeof s->origin, room,
                                     s->payload, s->len));
        }
        for (int i = 0; i < n; i++) {
            it_lib_wait_ok(u[i], req[i], "send");
            const it_ev *d = it_lib_done(u[i], req[i]);
            IT_CHECK(d && d->stanza_id && d->origin_id &&
                         strcmp(d->origin_id, msgs[idx[i]].origin) == 0,
                     "send completion of %s lacks stanza-id or origin-id", names[i]);
            msgs[idx[i]].stanza_id = strdup(d->stanza_id);
        }
    }
    it_log("%d messages sent", nmsgs);
    for (int a = 0; a < nmsgs; a++)
        for (int b = a + 1; b < nmsgs; b++)
            IT_CHECK(strcmp(msgs[a].stanza_id, msgs[b].stanza_id) != 0, "stanza-id %s given twice",
                     msgs[a].stanza_id);

    /* Each member receives every other member's messages, exactly. */
    for (int i = 0; i < n; i++) {
        size_t others = 0;
        for (int m = 0; m < nmsgs; m++)
            others += msgs[m].from != i;
        want_count w = {room, others};
        it_lib_until(u[i], has_live, &w, IT_TIMEOUT_MS);
        size_t got_others = 0;
        long long last_seq = 0;
        for (size_t k = 0; k < it_lib_live_count(u[i], room); k++) {
            const it_ev *e = it_lib_live(u[i], room, k);
            long long seq = atoll(e->stanza_id ? e->stanza_id : "0");
            IT_CHECK(seq > last_seq, "%s received stanza-id %s after %lld: not in archive order",
                     names[i], e->stanza_id ? e->stanza_id : "(none)", last_seq);
            last_seq = seq;
            if (!e->self) got_others++;
        }
        IT_CHECK(got_others == others, "%s received %zu messages from others, expected %zu",
                 names[i], got_others, others);
        for (int m = 0; m < nmsgs; m++) {
            if (msgs[m].from == i) continue;
            const it_ev *e = it_lib_live_by_origin(u[i], room, msgs[m].origin);
            IT_CHECK(e != NULL, "%s never got %s's message %s", names[i], names[msgs[m].from],
                     msgs[m].origin);
            IT_CHECK(!e->self && e->nick && strcmp(e->nick, names[msgs[m].from]) == 0,
                     "%s: message %s from nick '%s', expected %s", names[i], msgs[m].origin,
                     e->nick ? e->nick : "(null)", names[msgs[m].from]);
            IT_CHECK(e->jid && strcmp(e->jid, u[msgs[m].from]->bare) == 0,
                     "%s: real JID of the sender is '%s'", names[i], e->jid ? e->jid : "(null)");
            IT_CHECK(e->stanza_id && strcmp(e->stanza_id, msgs[m].stanza_id) == 0,
                     "%s: stanza-id %s, the sender was told %s", names[i],
                     e->stanza_id ? e->stanza_id : "(null)", msgs[m].stanza_id);
            IT_CHECK(e->payload_len == msgs[m].len &&
                         memcmp(e->payload, msgs[m].payload, msgs[m].len) == 0,
                     "%s: payload of %s differs (%zu bytes, sent %zu)", names[i], msgs[m].origin,
                     e->payload_len, msgs[m].len);
        }
    }

    /* PostgreSQL holds each message once, sealed, under its stanza-id. */
    IT_CHECK(it_pg_count("messages", room) == nmsgs, "messages rows %ld, sent %d",
             it_pg_count("messages", room), nmsgs);
    for (int m = 0; m < nmsgs; m++) {
        IT_CHECK(it_pg_count_origin(room, u[msgs[m].from]->bare, msgs[m].origin) == 1,
                 "message %s stored %ld times", msgs[m].origin,
                 it_pg_count_origin(room, u[msgs[m].from]->bare, msgs[m].origin));
        long long seq = it_pg_seq_of_origin(room, u[msgs[m].from]->bare, msgs[m].origin);
        IT_CHECK(seq == atoll(msgs[m].stanza_id), "stored seq %lld, stanza-id %s", seq,
                 msgs[m].stanza_id);
        size_t len = 0;
        unsigned char *p = it_pg_payload(room, seq, &len);
        /* Sealed: version 1, 129 bytes of overhead, and not the plaintext. */
        IT_CHECK(p && len == msgs[m].len + 129 && p[0] == 1 &&
                     (msgs[m].len < 8 || !memmem(p, len, msgs[m].payload, msgs[m].len)),
                 "stored payload of %s is not the sealed form (%zu bytes)", msgs[m].origin, len);
        free(p);
    }

    /* Leaving: the last joiner leaves first, the others see it. */
    for (int i = n - 1; i >= 1; i--) {
        uint32_t req = 0;
        IT_OK(sealroom_room_leave(it_lib_ctx(u[i]), &req, room));
        it_lib_wait_ok(u[i], req, "leave");
        for (int k = 0; k < i; k++) {
            want_nick w = {room, names[i], false};
            IT_CHECK(it_lib_until(u[k], saw_occupant, &w, IT_TIMEOUT_MS), "%s did not see %s leave",
                     names[k], names[i]);
        }
        /* A member who left cannot send until it joins again. */
        uint32_t r2 = 0;
        int rc =
            sealroom_room_send(it_lib_ctx(u[i]), &r2, NULL, 0, room, (const unsigned char *)"x", 1);
        IT_CHECK(rc == SEALROOM_E_STATE, "send after leaving returned %d", rc);
    }

    for (int m = 0; m < nmsgs; m++) {
        free(msgs[m].payload);
        free(msgs[m].stanza_id);
    }
    for (int i = 0; i < n; i++)
        it_lib_free(u[i]);
    it_log("passed");
    return 0;
}
