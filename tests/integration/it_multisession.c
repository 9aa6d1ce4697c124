/* Two sessions of one user under one nick (XEP-0045 multi-session): the
 * other occupants see the nick leave only when its last session leaves, and
 * both sessions receive the room's messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static bool match_unavailable_from(xmpp_stanza_t *st, const void *arg)
{
    const char *type = xmpp_stanza_get_type(st);
    const char *from = xmpp_stanza_get_from(st);
    return strcmp(xmpp_stanza_get_name(st), "presence") == 0 && type &&
           strcmp(type, "unavailable") == 0 && from && strcmp(from, (const char *)arg) == 0;
}

int main(void)
{
    it_init("it_multisession");
    it_raw *desk = it_raw_connect("alice");
    it_raw *phone = it_raw_connect("alice");
    it_raw *bob = it_raw_connect("bob");
    it_raw_register(bob);
    it_room room;
    it_room_create(desk, &room, "multi");
    it_room_change(desk, &room, SR_OP_ADD, "bob", SR_ROLE_MEMBER);
    it_raw_join_ok(bob, room.jid, "bob");
    it_raw_join_ok(desk, room.jid, "alice");
    it_raw_join_ok(phone, room.jid, "alice");
    it_raw_e2e_ready(desk, &room, &bob, 1);
    it_raw_clear(bob);

    /* Both of alice's sessions get bob's message. */
    char origin[40];
    it_random_hex(origin, 16);
    unsigned char p[IT_PAYLOAD_MIN];
    it_random(p, sizeof p);
    it_raw_fill_payload(bob, room.jid, p, sizeof p);
    free(it_raw_say(bob, room.jid, p, sizeof p, origin));
    xmpp_stanza_release(it_raw_expect(desk, it_match_reflection, origin, IT_TIMEOUT_MS, "desk copy"));
    xmpp_stanza_release(it_raw_expect(phone, it_match_reflection, origin, IT_TIMEOUT_MS, "phone copy"));

    char occupant[300];
    snprintf(occupant, sizeof occupant, "%s/alice", room.jid);
    it_raw_clear(desk);
    it_raw_clear(phone);
    it_raw_clear(bob);
    it_raw_leave(phone, room.jid, "alice");
    IT_CHECK(!it_raw_seen(bob, match_unavailable_from, occupant, 1000),
             "the nick was announced gone while another session still holds it");
    it_raw_leave(desk, room.jid, "alice");
    xmpp_stanza_release(it_raw_expect(bob, match_unavailable_from, occupant, IT_TIMEOUT_MS,
                                      "the nick leaving with its last session"));
    it_room_free(&room);
    it_raw_free(desk);
    it_raw_free(phone);
    it_raw_free(bob);
    printf("it_multisession: ok\n");
    return 0;
}
