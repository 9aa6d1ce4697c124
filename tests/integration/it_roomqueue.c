/* A room's queue is bounded: while a roster version commits, stanzas to the
 * room wait, but no more than ROOM_QUEUE_MAX of them; the rest are refused at
 * once with <resource-constraint/> (type "wait"), and every waiting one is
 * answered exactly once when the commit ends. The commit is held up by a row
 * lock taken here, which stalls the component's whole database pipeline:
 * the test runs alone (RUN_SERIAL). */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* ROOM_QUEUE_MAX of component/service.h (its header drags in the daemon's types). */
#define ROOM_QUEUE_MAX 1000
#define EXTRA 20

int main(void)
{
    const it_env *env = it_init("it_roomqueue");
    it_raw *alice = it_raw_connect("alice");
    it_raw *bob = it_raw_connect("bob");
    it_raw_register(bob);
    it_room room;
    it_room_create(alice, &room, "queue");

    PGconn *pg = PQconnectdb(env->pg);
    IT_CHECK(PQstatus(pg) == CONNECTION_OK, "PostgreSQL: %s", PQerrorMessage(pg));
    PGresult *res = PQexec(pg, "BEGIN");
    IT_CHECK(PQresultStatus(res) == PGRES_COMMAND_OK, "BEGIN: %s", PQerrorMessage(pg));
    PQclear(res);
    const char *p[1] = {room.jid};
    res = PQexecParams(pg, "SELECT 1 FROM rooms WHERE name = $1 FOR UPDATE", 1, NULL, p, NULL,
                       NULL, 0);
    IT_CHECK(PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1, "row lock: %s",
             PQerrorMessage(pg));
    PQclear(res);

    it_log("a roster change that cannot commit yet");
    sr_roster_version *v = it_roster_new(&room, it_raw_bare(alice));
    char bob_bare[256];
    it_bare(bob_bare, sizeof bob_bare, "bob");
    it_roster_op(v, SR_OP_ADD, bob_bare, SR_ROLE_MEMBER, NULL);
    it_roster_sign(v);
    char *xml = it_roster_xml(v);
    it_raw_send(alice, "<iq type='set' to='%s' id='rq-change'>%s</iq>", room.jid, xml);
    free(xml);
    /* Let the component reach the write that waits for the lock. */
    it_raw_pump(alice, 500);

    const int n = ROOM_QUEUE_MAX + EXTRA;
    it_log("%d pings while it waits", n);
    for (int i = 0; i < n; i++)
        it_raw_send(alice, "<iq type='get' to='%s' id='rq-%d'><ping xmlns='urn:xmpp:ping'/></iq>",
                    room.jid, i);
    /* The refusals come while the lock is still held. */
    int refused = 0;
    for (int i = ROOM_QUEUE_MAX; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "rq-%d", i);
        xmpp_stanza_t *st = it_raw_expect(alice, it_match_id, id, IT_TIMEOUT_MS,
                                          "refusal of a ping beyond the queue");
        it_check_error(st, "wait", "resource-constraint", NULL, "ping beyond the queue");
        xmpp_stanza_release(st);
        refused++;
    }
    IT_CHECK(!it_raw_seen(alice, it_match_id, "rq-change", 200),
             "the roster change was answered while its row was locked");

    res = PQexec(pg, "COMMIT");
    IT_CHECK(PQresultStatus(res) == PGRES_COMMAND_OK, "COMMIT: %s", PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);

    xmpp_stanza_t *st = it_raw_expect(alice, it_match_id, "rq-change", IT_TIMEOUT_MS,
                                      "answer to the roster change");
    it_check_result(st, "roster change after the lock");
    xmpp_stanza_release(st);
    for (int i = 0; i < ROOM_QUEUE_MAX; i++) {
        char id[32];
        snprintf(id, sizeof id, "rq-%d", i);
        st = it_raw_expect(alice, it_match_id, id, IT_TIMEOUT_MS, "answer to a queued ping");
        it_check_result(st, "queued ping");
        xmpp_stanza_release(st);
    }
    IT_CHECK(!it_raw_seen(alice, it_match_id, "rq-0", 300), "a queued ping was answered twice");
    it_log("%d refused, %d answered after the commit", refused, ROOM_QUEUE_MAX);

    free(v);
    it_room_free(&room);
    it_raw_free(bob);
    it_raw_free(alice);
    printf("it_roomqueue: ok\n");
    return 0;
}
