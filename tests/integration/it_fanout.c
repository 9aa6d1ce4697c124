/* Server-side fan-out (contrib/prosody/mod_sealroom_fanout.lua): only the
 * Sealroom component may use it — a user who sends XEP-0033 addresses to the
 * server is refused with <forbidden/> and nothing reaches the addressees —
 * and the copies occupants receive carry no address list (bcc), exactly one
 * each — also when a burst from several senders is fanned out in batches,
 * where each message must skip exactly its own sender. Prosody only: the
 * module is Prosody's; other servers are skipped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define NS_ADDRESS "http://jabber.org/protocol/address"

static bool match_body(xmpp_stanza_t *st, const void *arg)
{
    xmpp_stanza_t *body = xmpp_stanza_get_child_by_name(st, "body");
    char *t = body ? xmpp_stanza_get_text(body) : NULL;
    bool hit = t && strstr(t, (const char *)arg) != NULL;
    if (t) xmpp_free(xmpp_stanza_get_context(st), t);
    return hit;
}

/* Lua errors Prosody has logged so far (its log in the sealroom-dev run
 * directory): a handler that throws leaves a traceback there. */
static long prosody_tracebacks(const it_env *env)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/prosody/prosody.log", env->run_dir ? env->run_dir : ".");
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[4096];
    long n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "Traceback")) n++;
    fclose(f);
    return n;
}

int main(void)
{
    const it_env *env = it_init("it_fanout");
    if (it_is_ejabberd()) {
        printf("it_fanout: skipped, the fan-out module is Prosody's\n");
        return 77;
    }
    it_raw *mallory = it_raw_connect("mallory");
    it_raw *bob = it_raw_connect("bob");

    /* A user may not use the component's fan-out as a spam amplifier. */
    char spam[64];
    it_random_hex(spam, 8);
    it_raw_send(mallory,
                "<message to='%s' type='groupchat' id='fan1'><body>spam %s</body>"
                "<addresses xmlns='" NS_ADDRESS "'><address type='bcc' jid='%s'/>"
                "<address type='to' jid='%s'/></addresses></message>",
                env->domain, spam, it_raw_full(bob), it_raw_bare(bob));
    xmpp_stanza_t *err = it_raw_expect(mallory, it_match_id, "fan1", IT_TIMEOUT_MS,
                                       "answer to a user's fan-out attempt");
    it_check_error(err, "auth", "forbidden", NULL, "fan-out from a user");
    xmpp_stanza_release(err);
    IT_CHECK(!it_raw_seen(bob, match_body, spam, 1500), "bob received the user's fan-out");
    /* An error is never answered with an error (RFC 6120 8.3.1): two
     * entities doing so would bounce stanzas between them forever. Prosody's
     * error_reply throws on one, so the handler must not even try. */
    long tracebacks = prosody_tracebacks(env);
    it_raw_send(mallory,
                "<message to='%s' type='error' id='fan2'><body>spam %s</body>"
                "<addresses xmlns='" NS_ADDRESS "'><address type='bcc' jid='%s'/></addresses>"
                "<error type='cancel'><undefined-condition xmlns='" IT_NS_STANZAS "'/></error>"
                "</message>",
                env->domain, spam, it_raw_full(bob));
    IT_CHECK(!it_raw_seen(mallory, it_match_id, "fan2", 1500),
             "a user's error stanza with addresses was answered");
    IT_CHECK(!it_raw_seen(bob, match_body, spam, 500), "bob received the user's error stanza");
    IT_CHECK(tracebacks < 0 || prosody_tracebacks(env) == tracebacks,
             "a user's error stanza with addresses made the fan-out module throw");

    /* Three occupants: each other occupant gets one copy without addresses. */
    it_raw *alice = it_raw_connect("alice");
    it_raw *carol = it_raw_connect("carol");
    it_raw_register(bob);
    it_raw_register(carol);
    it_room room;
    it_room_create(alice, &room, "fanout");
    it_room_change(alice, &room, SR_OP_ADD, "bob", SR_ROLE_MEMBER);
    it_room_change(alice, &room, SR_OP_ADD, "carol", SR_ROLE_MEMBER);
    it_raw_join_ok(alice, room.jid, "alice");
    it_raw_join_ok(bob, room.jid, "bob");
    it_raw_join_ok(carol, room.jid, "carol");
    it_raw *writers[3] = {alice, bob, carol};
    it_raw_e2e_ready(alice, &room, writers, 3);
    it_raw_clear(alice);
    it_raw_clear(bob);
    it_raw_clear(carol);

    char origin[40];
    it_random_hex(origin, 16);
    unsigned char payload[IT_PAYLOAD_MIN + 20];
    it_random(payload, sizeof payload);
    it_raw_fill_payload(alice, room.jid, payload, sizeof payload);
    char *sid = it_raw_say(alice, room.jid, payload, sizeof payload, origin);
    it_raw *others[2] = {bob, carol};
    for (int i = 0; i < 2; i++) {
        xmpp_stanza_t *m = it_raw_expect(others[i], it_match_reflection, origin, IT_TIMEOUT_MS,
                                         "the reflection");
        char *x = it_stanza_xml(m);
        IT_CHECK(xmpp_stanza_get_child_by_name_and_ns(m, "addresses", NS_ADDRESS) == NULL,
                 "the address list reached an occupant: %s", x);
        IT_CHECK(strcmp(xmpp_stanza_get_to(m), it_raw_full(others[i])) == 0,
                 "copy addressed to %s, not the occupant", xmpp_stanza_get_to(m));
        xmpp_stanza_t *s = xmpp_stanza_get_child_by_name_and_ns(m, "stanza-id", IT_NS_SID);
        IT_CHECK(s && strcmp(xmpp_stanza_get_attribute(s, "id"), sid) == 0,
                 "stanza-id differs from the sender's: %s", x);
        free(x);
        xmpp_stanza_release(m);
        IT_CHECK(!it_raw_seen(others[i], it_match_reflection, origin, 1000),
                 "an occupant received the message twice");
    }
    free(sid);

    /* A burst from two senders without waiting: stored in shared group
     * commits and fanned out in batches. Everybody gets every message once;
     * a sender gets its own once, with its own id. */
    enum { BURST = 15 };
    char origins[2][BURST][40];
    it_raw *senders[2] = {bob, carol};
    for (int k = 0; k < BURST; k++)
        for (int s_ = 0; s_ < 2; s_++) {
            it_random_hex(origins[s_][k], 16);
            unsigned char p[IT_PAYLOAD_MIN];
            it_random(p, sizeof p);
            it_raw_fill_payload(senders[s_], room.jid, p, sizeof p);
            char *b64 = it_b64(p, sizeof p);
            it_raw_send_sealed(senders[s_], room.jid, origins[s_][k], origins[s_][k], b64);
            free(b64);
        }
    it_raw *all[3] = {alice, bob, carol};
    for (int who = 0; who < 3; who++)
        for (int s_ = 0; s_ < 2; s_++)
            for (int k = 0; k < BURST; k++) {
                xmpp_stanza_t *m = it_raw_expect(all[who], it_match_reflection, origins[s_][k],
                                                 IT_TIMEOUT_MS, "a burst message");
                bool own = all[who] == senders[s_];
                const char *id = xmpp_stanza_get_id(m);
                IT_CHECK(!own || (id && strcmp(id, origins[s_][k]) == 0),
                         "a sender's own copy lacks its message id (%s)", id ? id : "none");
                xmpp_stanza_release(m);
            }
    for (int who = 0; who < 3; who++)
        for (int s_ = 0; s_ < 2; s_++)
            for (int k = 0; k < BURST; k++)
                IT_CHECK(!it_raw_seen(all[who], it_match_reflection, origins[s_][k], k ? 0 : 500),
                         "occupant %d received burst message %d of sender %d twice", who, k, s_);
    it_room_free(&room);
    it_raw_free(alice);
    it_raw_free(bob);
    it_raw_free(carol);
    it_raw_free(mallory);
    printf("it_fanout: ok\n");
    return 0;
}
