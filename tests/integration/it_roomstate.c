/* The component's room state after requests that fail: a roster write that
 * the database refuses must not strand the stanzas that queued behind it
 * while it was committing (they are answered once the room's state has been
 * read again), and a chain fetch whose 'from' no PostgreSQL bigint can hold
 * is a bad request, not a database error. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* A room row made behind the component's back, as another instance sharing
 * the database would make it. */
static void insert_room_row(const it_env *env, const char *room_jid)
{
    PGconn *pg = PQconnectdb(env->pg);
    IT_CHECK(PQstatus(pg) == CONNECTION_OK, "PostgreSQL: %s", PQerrorMessage(pg));
    const char *p[1] = {room_jid};
    PGresult *res = PQexecParams(pg,
                                 "INSERT INTO rooms (name, roster_version, roster_head) "
                                 "VALUES ($1, 0, decode(repeat('00', 32), 'hex'))",
                                 1, NULL, p, NULL, NULL, 0);
    IT_CHECK(PQresultStatus(res) == PGRES_COMMAND_OK, "inserting the room row: %s",
             PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
}

int main(void)
{
    const it_env *env = it_init("it_roomstate");
    it_raw *alice = it_raw_connect("alice");
    it_raw_register(alice);

    it_log("chain fetch from beyond the bigint range");
    it_room room;
    it_room_create(alice, &room, "state");
    xmpp_stanza_t *st =
        it_raw_iq(alice, "get", room.jid, "<chain xmlns='" IT_NS "' from='18446744073709551615'/>");
    it_check_error(st, "modify", "bad-request", NULL, "chain from 2^64-1");
    xmpp_stanza_release(st);
    st = it_raw_iq(alice, "get", room.jid, "<chain xmlns='" IT_NS "' from='9223372036854775808'/>");
    it_check_error(st, "modify", "bad-request", NULL, "chain from 2^63");
    xmpp_stanza_release(st);

    it_log("a create the database refuses, with a ping queued behind it");
    char name[256];
    it_new_room(name, sizeof name, "behind");
    /* The component learns the room does not exist... */
    st = it_raw_iq(alice, "get", name, "<ping xmlns='urn:xmpp:ping'/>");
    it_check_error(st, "cancel", "item-not-found", NULL, "ping to a room that does not exist");
    xmpp_stanza_release(st);
    /* ...then it comes to exist elsewhere, so the create fails on commit. */
    insert_room_row(env, name);
    it_room other;
    it_room_init(&other, name);
    sr_roster_version *v = it_roster_new(&other, it_raw_bare(alice));
    it_roster_op(v, SR_OP_ADD, it_raw_bare(alice), SR_ROLE_OWNER, NULL);
    it_roster_sign(v);
    char *xml = it_roster_xml(v);
    /* Sent back to back: the ping arrives while the create is committing. */
    it_raw_send(alice, "<iq type='set' to='%s' id='rs-create'><create xmlns='" IT_NS "'>%s</create></iq>"
                       "<iq type='get' to='%s' id='rs-ping'><ping xmlns='urn:xmpp:ping'/></iq>",
                name, xml, name);
    free(xml);
    free(v);
    st = it_raw_expect(alice, it_match_id, "rs-create", IT_TIMEOUT_MS, "answer to the create");
    it_check_error(st, "cancel", "conflict", NULL, "create of a room stored meanwhile");
    xmpp_stanza_release(st);
    st = it_raw_expect(alice, it_match_id, "rs-ping", 5000,
                       "answer to the ping queued behind the failed create");
    it_check_result(st, "ping queued behind the failed create");
    xmpp_stanza_release(st);
    IT_CHECK(!it_raw_seen(alice, it_match_id, "rs-ping", 500), "the ping was answered twice");

    it_room_free(&other);
    it_room_free(&room);
    it_raw_free(alice);
    printf("it_roomstate: ok\n");
    return 0;
}
