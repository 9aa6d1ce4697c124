/* Nothing lost, nothing twice, across a restart of the XMPP server
 * (SEALROOM_TEST_XMPP_RESTART) in the middle of a conversation: alice's
 * libsealroom client has messages acknowledged, keeps sending while the
 * server shuts down (so some messages are lost on the way, some are stored
 * but their acknowledgement is lost, some are acknowledged) and sends more
 * while the link is down. After
 * sealroom_client_reconnect the library rejoins and resends its outbox with
 * the original origin-ids; then every message the app sent is acknowledged,
 * each is in PostgreSQL exactly once under the stanza-id the app was told,
 * and bob (who also reconnects) never sees one twice and finds all of them
 * in the archive. A first phase kills only alice's link right after sending,
 * so her messages are stored but their acknowledgements lost: the resent
 * outbox must be deduplicated to the stored stanza-ids. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define BEFORE 4         /* acknowledged before the restart */
#define MAX_INFLIGHT 400 /* sent while the server goes down, one per 10 ms at most */
#define OFFLINE 3        /* sent while the link is down */
#define UNACKED 5        /* stored, acknowledgement lost with the client's link */
#define MAX_MSGS (UNACKED + BEFORE + MAX_INFLIGHT + OFFLINE)
#define RESTART_TIMEOUT_MS 60000u

typedef struct msg {
    uint32_t req;
    char origin[72];
    unsigned char payload[200];
    size_t len;
    char *stanza_id;
} msg;

static msg msgs[MAX_MSGS];
static int total;

static void start_send(it_lib *l, const char *room, int i)
{
    msg *m = &msgs[i];
    /* Sizes vary, within the payload buffer. */
    m->len = 50 + (size_t)(i % 16) * 10;
    it_random(m->payload, m->len);
    IT_OK(sealroom_room_send(it_lib_ctx(l), &m->req, m->origin, sizeof m->origin, room, m->payload,
                             m->len));
}

static bool link_dropped(it_lib *l, const void *arg)
{
    (void)arg;
    return !sealroom_client_is_connected(l->client);
}

static bool all_done(it_lib *l, const void *arg)
{
    (void)arg;
    for (int i = 0; i < total; i++)
        if (!it_lib_done(l, msgs[i].req)) return false;
    return true;
}

/* Reconnect, retrying while the server is still coming up. */
static void reconnect(it_lib *l)
{
    uint64_t end = it_mono_ms() + RESTART_TIMEOUT_MS;
    int rc;
    do {
        rc = sealroom_client_reconnect(l->client, IT_TIMEOUT_MS);
        if (rc == SEALROOM_OK) return;
        it_log("%s: reconnect returned %d (%s), retrying", l->bare, rc, sealroom_strerror(rc));
        it_sleep_ms(250);
    } while (it_mono_ms() < end);
    IT_CHECK(rc == SEALROOM_OK, "%s could not reconnect: %d", l->bare, rc);
}

int main(void)
{
    const it_env *env = it_init("it_outbox_xmpp_restart");
    IT_CHECK(env->xmpp_restart && *env->xmpp_restart, "SEALROOM_TEST_XMPP_RESTART is not set");
    it_lib *alice = it_lib_connect("alice");
    it_lib *bob = it_lib_connect("bob");
    it_lib_register(alice);
    it_lib_register(bob);
    char room[256];
    it_new_room(room, sizeof room, "outbox");
    it_log("room %s", room);
    it_lib_create(alice, room);
    it_lib_add(alice, room, "bob", SEALROOM_ROLE_MEMBER);
    it_lib_join(alice, room, "alice");
    it_lib_join(bob, room, "bob");

    /* The first message of an epoch waits until its data key is stored;
     * one message first (not counted below) so the next ones leave at once. */
    unsigned char warm[16];
    char warm_origin[SEALROOM_ORIGIN_ID_BYTES];
    it_random(warm, sizeof warm);
    it_lib_say(alice, room, warm, sizeof warm, warm_origin);
    const long base = 1;

    /* Phase 1: alice's own link dies right after she sends. */
    for (int i = 0; i < UNACKED; i++)
        start_send(alice, room, total++);
    sealroom_client_disconnect(alice->client);
    int acked = 0;
    for (int i = 0; i < UNACKED; i++)
        acked += it_lib_done(alice, msgs[i].req) != NULL;
    uint64_t until = it_mono_ms() + IT_TIMEOUT_MS;
    long stored = 0;
    while ((stored = it_pg_count("messages", room) - base) < UNACKED && it_mono_ms() < until)
        sealroom_client_run(bob->client, 20);
    it_log("link killed after sending %d: %d acknowledged, %ld stored", UNACKED, acked, stored);
    IT_CHECK(stored == UNACKED, "the messages sent before the link died were not all stored");
    long long seq_before[UNACKED];
    for (int i = 0; i < UNACKED; i++)
        seq_before[i] = it_pg_seq_of_origin(room, alice->bare, msgs[i].origin);
    IT_CHECK(sealroom_ctx_outbox_size(it_lib_ctx(alice)) == (size_t)(UNACKED - acked),
             "outbox %zu, unacknowledged %d", sealroom_ctx_outbox_size(it_lib_ctx(alice)),
             UNACKED - acked);
    reconnect(alice);
    for (int i = 0; i < UNACKED; i++) {
        it_lib_wait_ok(alice, msgs[i].req, "resent message");
        const it_ev *d = it_lib_done(alice, msgs[i].req);
        IT_CHECK(atoll(d->stanza_id) == seq_before[i],
                 "resent message %d acknowledged as %s, stored before as %lld", i, d->stanza_id,
                 seq_before[i]);
    }
    IT_CHECK(it_pg_count("messages", room) - base == UNACKED, "the resend stored duplicates");
    IT_CHECK(sealroom_ctx_outbox_size(it_lib_ctx(alice)) == 0, "outbox not empty after resend");

    /* Phase 2: the XMPP server restarts mid-conversation. */
    for (int i = 0; i < BEFORE; i++) {
        int k = total++;
        start_send(alice, room, k);
        it_lib_wait_ok(alice, msgs[k].req, "send before the restart");
    }

    /* The restart runs in a child while alice keeps talking. */
    it_log("XMPP server restart: %s", env->xmpp_restart);
    fflush(NULL);
    pid_t child = fork();
    IT_CHECK(child >= 0, "fork failed");
    if (child == 0) {
        execl("/bin/sh", "sh", "-c", env->xmpp_restart, (char *)NULL);
        _exit(127);
    }
    uint64_t t0 = it_mono_ms();
    while (sealroom_client_is_connected(alice->client) && total < UNACKED + BEFORE + MAX_INFLIGHT &&
           it_mono_ms() - t0 < RESTART_TIMEOUT_MS) {
        start_send(alice, room, total++);
        sealroom_client_run(alice->client, 10);
        sealroom_client_run(bob->client, 0);
    }
    int inflight = total - BEFORE - UNACKED;
    IT_CHECK(!sealroom_client_is_connected(alice->client),
             "alice's client did not notice the server going down");
    IT_CHECK(it_lib_until(bob, link_dropped, NULL, IT_TIMEOUT_MS),
             "bob's client did not notice the server restart");
    int status = 0;
    IT_CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
             "the restart command failed (status %d)", status);
    it_log("restart done in %llu ms; %d messages sent meanwhile",
           (unsigned long long)(it_mono_ms() - t0), inflight);

    for (int i = 0; i < OFFLINE; i++)
        start_send(alice, room, total++);
    size_t queued = sealroom_ctx_outbox_size(it_lib_ctx(alice));
    size_t unacked = 0, stored_unacked = 0;
    for (int i = 0; i < total; i++) {
        if (it_lib_done(alice, msgs[i].req)) continue;
        unacked++;
        stored_unacked += it_pg_count_origin(room, alice->bare, msgs[i].origin) == 1;
    }
    it_log("offline: outbox %zu, unacknowledged %zu (of which already stored: %zu)", queued,
           unacked, stored_unacked);
    IT_CHECK(queued == unacked && queued >= OFFLINE,
             "the outbox (%zu) must hold every unacknowledged message (%zu)", queued, unacked);

    /* sealroomd reattaches to the new server on its own back-off. */
    it_wait_component(RESTART_TIMEOUT_MS);
    reconnect(bob);
    reconnect(alice);
    IT_CHECK(it_lib_until(alice, all_done, NULL, IT_TIMEOUT_MS),
             "not every send completed after the reconnect (outbox %zu)",
             sealroom_ctx_outbox_size(it_lib_ctx(alice)));
    IT_CHECK(sealroom_ctx_outbox_size(it_lib_ctx(alice)) == 0, "outbox not empty: %zu",
             sealroom_ctx_outbox_size(it_lib_ctx(alice)));

    /* Every message acknowledged, stored once, under the id the app got. */
    for (int i = 0; i < total; i++) {
        const it_ev *d = it_lib_done(alice, msgs[i].req);
        IT_CHECK(d->result == SEALROOM_OK && d->stanza_id, "message %d (%s) completed with %d: %s",
                 i, msgs[i].origin, d->result, d->error_text ? d->error_text : "");
        msgs[i].stanza_id = strdup(d->stanza_id);
        long n = it_pg_count_origin(room, alice->bare, msgs[i].origin);
        IT_CHECK(n == 1, "message %d (%s) stored %ld times", i, msgs[i].origin, n);
        long long seq = it_pg_seq_of_origin(room, alice->bare, msgs[i].origin);
        IT_CHECK(seq == atoll(d->stanza_id), "message %d: stored as %lld, acknowledged as %s", i,
                 seq, d->stanza_id);
        size_t len = 0;
        unsigned char *p = it_pg_payload(room, seq, &len);
        IT_CHECK(p && len == msgs[i].len + 129 && p[0] == 1,
                 "message %d not stored in its sealed form", i);
        free(p);
    }
    IT_CHECK(it_pg_count("messages", room) - base == total, "room holds %ld messages, sent %d",
             it_pg_count("messages", room) - base, total);

    /* bob: live copies never twice; the archive has all, once, in order. */
    sealroom_client_run(bob->client, 200);
    for (int i = 0; i < total; i++) {
        int seen = 0;
        for (size_t k = 0; k < it_lib_live_count(bob, room); k++) {
            const it_ev *e = it_lib_live(bob, room, k);
            if (e->origin_id && strcmp(e->origin_id, msgs[i].origin) == 0) seen++;
        }
        IT_CHECK(seen <= 1, "bob saw message %d live %d times", i, seen);
    }
    /* Page backwards through the whole archive, 100 at a time. */
    size_t k = 0;
    static int in_history[MAX_MSGS];
    char *before = NULL;
    for (bool complete = false; !complete;) {
        it_lib_clear(bob);
        uint32_t req = 0;
        IT_OK(sealroom_room_history(it_lib_ctx(bob), &req, room, before, 100));
        it_lib_wait_ok(bob, req, "bob's history");
        const it_ev *done = it_lib_done(bob, req);
        complete = done->complete;
        free(before);
        before = done->first ? strdup(done->first) : NULL;
        IT_CHECK(complete || before, "an incomplete history page without a first id");
        for (size_t e = 0; e < bob->nev; e++) {
            const it_ev *ev = &bob->ev[e];
            if (ev->type != SEALROOM_EVENT_MESSAGE || !ev->history) continue;
            if (ev->origin_id && strcmp(ev->origin_id, warm_origin) == 0) continue;
            IT_CHECK(k < (size_t)total, "history holds more than %d messages", total);
            /* Archive order is acknowledgement order, which may differ from
             * send order for resent messages: find each by origin. */
            int i = -1;
            for (int m = 0; m < total; m++)
                if (ev->origin_id && strcmp(ev->origin_id, msgs[m].origin) == 0) i = m;
            IT_CHECK(i >= 0, "history holds an unknown message %s", ev->stanza_id);
            IT_CHECK(strcmp(ev->stanza_id, msgs[i].stanza_id) == 0 &&
                         ev->payload_len == msgs[i].len &&
                         memcmp(ev->payload, msgs[i].payload, msgs[i].len) == 0,
                     "history copy of message %d differs", i);
            IT_CHECK(++in_history[i] == 1, "message %d is in the history twice", i);
            k++;
        }
    }
    free(before);
    IT_CHECK(k == (size_t)total, "history holds %zu messages, sent %d", k, total);

    for (int i = 0; i < total; i++)
        free(msgs[i].stanza_id);
    it_lib_free(alice);
    it_lib_free(bob);
    it_log("passed");
    return 0;
}
