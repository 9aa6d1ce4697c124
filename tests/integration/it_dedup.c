/* Nothing twice: a groupchat message resent with the same origin-id (as a
 * client does after losing its link before the reflection arrived) is
 * answered with the original stanza-id and the original payload, is not
 * shown again to the other occupants, and is stored once — also when the
 * resend comes from another session of the same user, and when several
 * copies race each other. Dedup is per sender: another user's equal
 * origin-id is a new message. Checked over raw stanzas and in PostgreSQL. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const char *attr(xmpp_stanza_t *st, const char *name)
{
    const char *v = st ? xmpp_stanza_get_attribute(st, name) : NULL;
    return v ? v : "";
}

static char *stanza_id_of(xmpp_stanza_t *st)
{
    xmpp_stanza_t *sid = xmpp_stanza_get_child_by_name_and_ns(st, "stanza-id", IT_NS_SID);
    return strdup(attr(sid, "id"));
}

static char *sealed_of(xmpp_stanza_t *st)
{
    xmpp_stanza_t *s = xmpp_stanza_get_child_by_name_and_ns(st, "sealed", IT_NS);
    char *t = s ? xmpp_stanza_get_text(s) : NULL;
    char *out = strdup(t ? t : "");
    if (t) xmpp_free(xmpp_stanza_get_context(st), t);
    return out;
}

static bool match_groupchat(xmpp_stanza_t *st, const void *arg)
{
    (void)arg;
    return strcmp(xmpp_stanza_get_name(st), "message") == 0 &&
           strcmp(attr(st, "type"), "groupchat") == 0 &&
           xmpp_stanza_get_child_by_name_and_ns(st, "stanza-id", IT_NS_SID) != NULL;
}

/* The next groupchat message the observer gets must carry origin. */
static char *next_seen_is(it_raw *observer, const char *origin, const char *what)
{
    xmpp_stanza_t *st = it_raw_expect(observer, match_groupchat, NULL, IT_TIMEOUT_MS, what);
    xmpp_stanza_t *o = xmpp_stanza_get_child_by_name_and_ns(st, "origin-id", IT_NS_SID);
    char *x = it_stanza_xml(st);
    IT_CHECK(strcmp(attr(o, "id"), origin) == 0, "%s: expected origin-id %s next, got %s", what,
             origin, x);
    free(x);
    char *sid = stanza_id_of(st);
    xmpp_stanza_release(st);
    return sid;
}

int main(void)
{
    it_init("it_dedup");
    it_raw *alice = it_raw_connect("alice");
    it_raw *bob = it_raw_connect("bob");
    it_raw *bob2 = it_raw_connect("bob");
    it_raw_register(bob);
    it_room room;
    it_room_create(alice, &room, "dedup");
    it_log("room %s", room.jid);
    it_room_change(alice, &room, SR_OP_ADD, "bob", SR_ROLE_MEMBER);
    it_raw_join_ok(alice, room.jid, "alice");
    it_raw_join_ok(bob, room.jid, "bob");
    it_raw_join_ok(bob2, room.jid, "bob");
    it_raw *senders[2] = {alice, bob};
    it_raw_e2e_ready(alice, &room, senders, 2);
    it_raw_clear(alice);
    it_raw_clear(bob2);

    /* The original. */
    char o1[40];
    it_random_hex(o1, 8);
    unsigned char p1[160], p1b[160], pa[160];
    it_random(p1, sizeof p1);
    it_random(p1b, sizeof p1b);
    it_raw_fill_payload(bob, room.jid, p1, sizeof p1);
    it_raw_fill_payload(bob, room.jid, p1b, sizeof p1b);
    memcpy(pa, p1, sizeof pa);
    it_raw_fill_payload(alice, room.jid, pa, sizeof pa);
    char *b64 = it_b64(p1, sizeof p1);
    it_raw_send_sealed(bob, room.jid, "first-try", o1, b64);
    xmpp_stanza_t *r1 = it_raw_expect(bob, it_match_reflection, o1, IT_TIMEOUT_MS, "reflection");
    IT_CHECK(strcmp(attr(r1, "id"), "first-try") == 0,
             "the sender's reflection keeps its message id (got '%s')", attr(r1, "id"));
    char *s1 = stanza_id_of(r1);
    xmpp_stanza_release(r1);
    char *seen = next_seen_is(alice, o1, "alice gets the original");
    IT_CHECK(strcmp(seen, s1) == 0, "alice saw stanza-id %s, bob %s", seen, s1);
    free(seen);
    free(next_seen_is(bob2, o1, "bob's other session gets the original"));
    IT_CHECK(it_pg_count_origin(room.jid, it_raw_bare(bob), o1) == 1, "stored once");

    /* A resend, with a different payload even: the stored one wins. */
    char *b64b = it_b64(p1b, sizeof p1b);
    it_raw_send_sealed(bob, room.jid, "second-try", o1, b64b);
    xmpp_stanza_t *r2 = it_raw_expect(bob, it_match_reflection, o1, IT_TIMEOUT_MS, "resend answer");
    char *s2 = stanza_id_of(r2), *body2 = sealed_of(r2);
    IT_CHECK(strcmp(s2, s1) == 0, "resend got stanza-id %s, original %s", s2, s1);
    IT_CHECK(strcmp(body2, b64) == 0, "resend answer must carry the stored payload");
    IT_CHECK(strcmp(attr(r2, "id"), "second-try") == 0, "resend answer keeps the resend's id");
    xmpp_stanza_release(r2);
    free(s2);
    free(body2);

    /* The same origin-id from bob's other session is still bob's message. */
    it_raw_send_sealed(bob2, room.jid, "third-try", o1, b64);
    xmpp_stanza_t *r3 =
        it_raw_expect(bob2, it_match_reflection, o1, IT_TIMEOUT_MS, "resend from another session");
    char *s3 = stanza_id_of(r3);
    IT_CHECK(strcmp(s3, s1) == 0, "other session's resend got %s, original %s", s3, s1);
    xmpp_stanza_release(r3);
    free(s3);

    /* alice's equal origin-id is her own, new message. */
    char *sa = it_raw_say(alice, room.jid, pa, sizeof pa, o1);
    IT_CHECK(strcmp(sa, s1) != 0, "another sender's origin-id must not be deduplicated");
    IT_CHECK(it_pg_count_origin(room.jid, it_raw_bare(alice), o1) == 1, "alice's stored once");

    /* Racing copies: three sends before any answer. */
    char o3[40];
    it_random_hex(o3, 8);
    for (int i = 0; i < 3; i++)
        it_raw_send_sealed(bob, room.jid, "race", o3, b64);
    char *first = NULL;
    for (int i = 0; i < 3; i++) {
        xmpp_stanza_t *r =
            it_raw_expect(bob, it_match_reflection, o3, IT_TIMEOUT_MS, "race answer");
        char *s = stanza_id_of(r);
        if (!first)
            first = s;
        else {
            IT_CHECK(strcmp(first, s) == 0, "racing copies got stanza-ids %s and %s", first, s);
            free(s);
        }
        xmpp_stanza_release(r);
    }
    IT_CHECK(it_pg_count_origin(room.jid, it_raw_bare(bob), o3) == 1, "racing copies stored %ld",
             it_pg_count_origin(room.jid, it_raw_bare(bob), o3));

    /* Other occupants saw each message once: after the original of o1 (and
     * alice's own o1, taken by it_raw_say), one o3, then the marker. */
    char marker[40];
    it_random_hex(marker, 8);
    unsigned char m[IT_PAYLOAD_MIN] = "........................marker";
    it_raw_fill_payload(bob, room.jid, m, sizeof m);
    free(it_raw_say(bob, room.jid, m, sizeof m, marker));
    free(next_seen_is(alice, o3, "one copy of the raced message"));
    free(next_seen_is(alice, marker, "no duplicate before the marker"));

    /* Without origin-id there is nothing to deduplicate on: two messages. */
    long before = it_pg_count("messages", room.jid);
    char *n1 = it_raw_say(bob, room.jid, m, sizeof m, NULL);
    char *n2 = it_raw_say(bob, room.jid, m, sizeof m, NULL);
    IT_CHECK(strcmp(n1, n2) != 0 && it_pg_count("messages", room.jid) == before + 2,
             "distinct messages without shared origin-id");

    /* The archive agrees: o1 once, in bob's name, with the first payload. */
    it_mam_page page;
    it_raw_mam(alice, room.jid, "<set xmlns='http://jabber.org/protocol/rsm'><max>50</max></set>",
               &page);
    it_check_result(page.answer, "MAM");
    int count_o1_bob = 0;
    char bob_occ[300];
    snprintf(bob_occ, sizeof bob_occ, "%s/bob", room.jid);
    for (size_t i = 0; i < page.n; i++)
        if (page.items[i].origin && strcmp(page.items[i].origin, o1) == 0 &&
            strcmp(page.items[i].from, bob_occ) == 0) {
            count_o1_bob++;
            IT_CHECK(strcmp(page.items[i].id, s1) == 0 && strcmp(page.items[i].sealed, b64) == 0,
                     "archived original differs");
        }
    IT_CHECK(count_o1_bob == 1, "archive holds bob's o1 %d times", count_o1_bob);
    it_mam_page_free(&page);

    free(n1);
    free(n2);
    free(first);
    free(sa);
    free(s1);
    free(b64);
    free(b64b);
    it_raw_free(alice);
    it_raw_free(bob);
    it_raw_free(bob2);
    it_room_free(&room);
    it_log("passed");
    return 0;
}
