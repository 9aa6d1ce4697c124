/* Admin commands (XEP-0050) on the service JID: the stack's admin.jids names
 * alice. She sees the "stats" command and its figures move with traffic; bob
 * sees no commands and is refused with <forbidden/> when he tries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define NS_COMMANDS "http://jabber.org/protocol/commands"

/* Value of field var in the stats form of a command result. */
static long long field(xmpp_stanza_t *res, const char *var)
{
    xmpp_stanza_t *cmd = xmpp_stanza_get_child_by_name_and_ns(res, "command", NS_COMMANDS);
    xmpp_stanza_t *x = cmd ? xmpp_stanza_get_child_by_name_and_ns(cmd, "x", "jabber:x:data") : NULL;
    for (xmpp_stanza_t *f = x ? xmpp_stanza_get_children(x) : NULL; f; f = xmpp_stanza_get_next(f)) {
        const char *v = xmpp_stanza_get_attribute(f, "var");
        if (!v || strcmp(v, var) != 0) continue;
        xmpp_stanza_t *value = xmpp_stanza_get_child_by_name(f, "value");
        char *t = value ? xmpp_stanza_get_text(value) : NULL;
        long long n = t ? strtoll(t, NULL, 10) : -1;
        if (t) xmpp_free(xmpp_stanza_get_context(res), t);
        return n;
    }
    return -1;
}

static bool has_text_field(xmpp_stanza_t *res, const char *var, const char *want)
{
    char *x = it_stanza_xml(res);
    char pattern[128];
    snprintf(pattern, sizeof pattern, "var=\"%s\"", var);
    char *at = strstr(x, pattern);
    bool ok = at && strstr(at, want) && strstr(at, want) < strstr(at, "</field>");
    free(x);
    return ok;
}

int main(void)
{
    const it_env *env = it_init("it_admin");
    it_raw *alice = it_raw_connect("alice");
    it_raw *bob = it_raw_connect("bob");

    xmpp_stanza_t *items = it_raw_iq_ok(
        alice, "get", env->service,
        "<query xmlns='http://jabber.org/protocol/disco#items' node='" NS_COMMANDS "'/>",
        "command list for the admin");
    char *x = it_stanza_xml(items);
    IT_CHECK(strstr(x, "node=\"stats\"") != NULL, "admin sees no stats command: %s", x);
    free(x);
    xmpp_stanza_release(items);

    items = it_raw_iq_ok(bob, "get", env->service,
                         "<query xmlns='http://jabber.org/protocol/disco#items' node='" NS_COMMANDS
                         "'/>",
                         "command list for a user");
    x = it_stanza_xml(items);
    IT_CHECK(strstr(x, "node=\"stats\"") == NULL, "a non-admin was shown the commands: %s", x);
    free(x);
    xmpp_stanza_release(items);

    const char *exec = "<command xmlns='" NS_COMMANDS "' node='stats' action='execute'/>";
    xmpp_stanza_t *refused = it_raw_iq(bob, "set", env->service, exec);
    it_check_error(refused, "auth", "forbidden", NULL, "stats from a non-admin");
    xmpp_stanza_release(refused);

    xmpp_stanza_t *unknown = it_raw_iq(alice, "set", env->service,
                                       "<command xmlns='" NS_COMMANDS "' node='nope' action='execute'/>");
    it_check_error(unknown, "cancel", "item-not-found", NULL, "unknown command");
    xmpp_stanza_release(unknown);

    xmpp_stanza_t *before = it_raw_iq_ok(alice, "set", env->service, exec, "stats");
    IT_CHECK(has_text_field(before, "link", "up"), "stats does not say the link is up");
    IT_CHECK(has_text_field(before, "database", "up"), "stats does not say the database is up");
    long long stored0 = field(before, "messages-stored");
    long long refused0 = field(before, "requests-refused");
    IT_CHECK(stored0 >= 0 && refused0 >= 1, "stats lacks counters (stored %lld, refused %lld)",
             stored0, refused0);
    xmpp_stanza_release(before);

    /* Two stored messages must show up in the next figures. */
    it_raw_register(bob);
    it_room room;
    it_room_create(alice, &room, "admin");
    it_raw_join_ok(alice, room.jid, "alice");
    it_raw_e2e_ready(alice, &room, &alice, 1);
    for (int i = 0; i < 2; i++) {
        char origin[40];
        it_random_hex(origin, 16);
        unsigned char p[IT_PAYLOAD_MIN];
        it_random(p, sizeof p);
        it_raw_fill_payload(alice, room.jid, p, sizeof p);
        free(it_raw_say(alice, room.jid, p, sizeof p, origin));
    }
    xmpp_stanza_t *after = it_raw_iq_ok(alice, "set", env->service, exec, "stats again");
    long long stored1 = field(after, "messages-stored");
    IT_CHECK(stored1 >= stored0 + 2, "messages-stored went from %lld to %lld after 2 messages",
             stored0, stored1);
    xmpp_stanza_release(after);
    it_room_free(&room);
    it_raw_free(alice);
    it_raw_free(bob);
    printf("it_admin: ok\n");
    return 0;
}
