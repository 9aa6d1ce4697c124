/* The authorization matrix: an outsider, a removed member, a member, an
 * admin (and the owner where it matters) each try every request type —
 * identity fetch, create of an existing room, roster add/remove/role, chain
 * fetch, join, groupchat send, MAM query and room disco#info — over raw
 * stanzas, and each answer is checked for the exact XMPP error (defined
 * condition, error type and Sealroom application condition from
 * xep/sealroom.xml) or for success. Every refusal must leave the room's rows in
 * PostgreSQL untouched. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common.h"

typedef struct actor {
    const char *label;
    it_raw *rc;
    const char *nick;
    bool member; /* may read and talk */
} actor;

static it_room room;
static it_raw *owner;

static const char *attr(xmpp_stanza_t *st, const char *name)
{
    const char *v = st ? xmpp_stanza_get_attribute(st, name) : NULL;
    return v ? v : "";
}

static void what(char *out, size_t n, const actor *a, const char *req)
{
    snprintf(out, n, "%s (%s): %s", a->label, it_raw_bare(a->rc), req);
}

/* Anyone may fetch a registered identity: it is public by design. */
static void try_identity_fetch(const actor *a, const char *target_bare)
{
    char xml[400], w[200];
    what(w, sizeof w, a, "identity fetch");
    snprintf(xml, sizeof xml, "<identity xmlns='%s' jid='%s'/>", IT_NS, target_bare);
    xmpp_stanza_t *st = it_raw_iq_ok(a->rc, "get", it_env_get()->service, xml, w);
    xmpp_stanza_t *id = xmpp_stanza_get_child_by_name_and_ns(st, "identity", IT_NS);
    unsigned char pk[SR_KEY_BYTES], sk[64];
    it_user_keys(target_bare, pk, sk);
    sodium_memzero(sk, sizeof sk);
    char *want = it_b64(pk, sizeof pk);
    IT_CHECK(id && strcmp(attr(id, "key"), want) == 0 && strcmp(attr(id, "jid"), target_bare) == 0,
             "%s: identity of %s should carry key %s", w, target_bare, want);
    free(want);
    xmpp_stanza_release(st);
}

/* Creating a room that exists: conflict for everyone, the owner included. */
static void try_create_existing(it_raw *rc, const char *label)
{
    it_room fresh;
    it_room_init(&fresh, room.jid);
    sr_roster_version *v = it_roster_new(&fresh, it_raw_bare(rc));
    it_roster_op(v, SR_OP_ADD, it_raw_bare(rc), SR_ROLE_OWNER, NULL);
    it_roster_sign(v);
    xmpp_stanza_t *st = it_roster_submit(rc, &fresh, v);
    char w[200];
    snprintf(w, sizeof w, "%s: create of an existing room", label);
    it_check_error(st, "cancel", "conflict", NULL, w);
    xmpp_stanza_release(st);
    free(v);
    it_room_free(&fresh);
}

/* A correctly chained version signed by rc with one op; NULL app means the
 * version must be accepted (and is applied to the tracked state). */
static void try_roster(it_raw *rc, const char *label, sr_op_kind kind, const char *target_user,
                       sr_role role, const char *cond, const char *app)
{
    char bare[256], w[300];
    it_bare(bare, sizeof bare, target_user);
    snprintf(w, sizeof w, "%s: roster %s %s%s%s", label,
             kind == SR_OP_ADD      ? "add"
             : kind == SR_OP_REMOVE ? "remove"
                                    : "role",
             bare, kind == SR_OP_REMOVE ? "" : " as ",
             kind == SR_OP_REMOVE ? "" : sr_role_name(role));
    it_counts before = it_pg_counts(room.jid);
    sr_roster_version *v = it_roster_new(&room, it_raw_bare(rc));
    it_roster_op(v, kind, bare, role, NULL);
    it_roster_sign(v);
    xmpp_stanza_t *st = it_roster_submit(rc, &room, v);
    if (!cond) {
        it_check_result(st, w);
        it_room_apply(&room, v);
    } else {
        it_check_error(st, "auth", cond, app, w);
        it_check_counts(room.jid, before, w);
    }
    xmpp_stanza_release(st);
    free(v);
}

static void try_chain(const actor *a)
{
    char w[200], xml[200];
    what(w, sizeof w, a, "chain fetch");
    snprintf(xml, sizeof xml, "<chain xmlns='%s' from='0' max='50'/>", IT_NS);
    xmpp_stanza_t *st = it_raw_iq(a->rc, "get", room.jid, xml);
    if (!a->member) {
        it_check_error(st, "auth", "forbidden", "not-member", w);
    } else {
        it_check_result(st, w);
        xmpp_stanza_t *chain = xmpp_stanza_get_child_by_name_and_ns(st, "chain", IT_NS);
        char head[24];
        snprintf(head, sizeof head, "%llu", (unsigned long long)room.state.version);
        IT_CHECK(chain && strcmp(attr(chain, "head"), head) == 0 &&
                     strcmp(attr(chain, "complete"), "true") == 0,
                 "%s: chain head should be %s and complete", w, head);
        unsigned n = 0;
        for (xmpp_stanza_t *c = xmpp_stanza_get_children(chain); c; c = xmpp_stanza_get_next(c))
            n += xmpp_stanza_is_tag(c) && strcmp(xmpp_stanza_get_name(c), "roster") == 0;
        IT_CHECK(n == room.state.version + 1, "%s: %u versions, expected %llu", w, n,
                 (unsigned long long)room.state.version + 1);
    }
    xmpp_stanza_release(st);
}

static void try_join(const actor *a)
{
    char w[200];
    what(w, sizeof w, a, "join");
    it_counts before = it_pg_counts(room.jid);
    xmpp_stanza_t *st = it_raw_join(a->rc, room.jid, a->nick);
    if (!a->member) {
        it_check_error(st, "auth", "registration-required", "not-member", w);
        it_check_counts(room.jid, before, w);
    } else {
        IT_CHECK(strcmp(attr(st, "type"), "error") != 0, "%s refused", w);
    }
    xmpp_stanza_release(st);
}

static void try_send(const actor *a)
{
    char w[200], origin[40], id[48];
    what(w, sizeof w, a, "groupchat send");
    it_random_hex(origin, 8);
    snprintf(id, sizeof id, "m-%s", origin);
    unsigned char payload[IT_PAYLOAD_MIN + 11];
    it_random(payload, sizeof payload);
    if (a->member) it_raw_fill_payload(a->rc, room.jid, payload, sizeof payload);
    if (!a->member) {
        it_counts before = it_pg_counts(room.jid);
        char *b64 = it_b64(payload, sizeof payload);
        it_raw_send_sealed(a->rc, room.jid, id, origin, b64);
        free(b64);
        xmpp_stanza_t *st = it_raw_expect(a->rc, it_match_id, id, IT_TIMEOUT_MS, w);
        it_check_error(st, "modify", "not-acceptable", NULL, w);
        xmpp_stanza_release(st);
        it_check_counts(room.jid, before, w);
        IT_CHECK(it_pg_count_origin(room.jid, it_raw_bare(a->rc), origin) == 0, "%s stored", w);
    } else {
        char *sid = it_raw_say(a->rc, room.jid, payload, sizeof payload, origin);
        long long seq = it_pg_seq_of_origin(room.jid, it_raw_bare(a->rc), origin);
        IT_CHECK(seq > 0 && seq == atoll(sid), "%s: stanza-id %s, database seq %lld", w, sid, seq);
        size_t len = 0;
        unsigned char *stored = it_pg_payload(room.jid, seq, &len);
        IT_CHECK(stored && len == sizeof payload && memcmp(stored, payload, len) == 0,
                 "%s: stored payload differs", w);
        free(stored);
        free(sid);
    }
}

static void try_mam(const actor *a)
{
    char w[200];
    what(w, sizeof w, a, "MAM query");
    it_mam_page page;
    it_raw_mam(a->rc, room.jid, "<set xmlns='http://jabber.org/protocol/rsm'><max>10</max></set>",
               &page);
    if (!a->member) {
        it_check_error(page.answer, "auth", "forbidden", "not-member", w);
        IT_CHECK(page.n == 0, "%s: %zu results leaked before the error", w, page.n);
    } else {
        it_check_result(page.answer, w);
        IT_CHECK(page.n > 0, "%s: no messages in the archive", w);
    }
    it_mam_page_free(&page);
}

static void try_disco(const actor *a)
{
    char w[200];
    what(w, sizeof w, a, "room disco#info");
    xmpp_stanza_t *st =
        it_raw_iq(a->rc, "get", room.jid, "<query xmlns='http://jabber.org/protocol/disco#info'/>");
    if (!a->member) {
        it_check_error(st, "auth", "forbidden", "not-member", w);
    } else {
        it_check_result(st, w);
        xmpp_stanza_t *q = xmpp_stanza_get_child_by_name_and_ns(
            st, "query", "http://jabber.org/protocol/disco#info");
        xmpp_stanza_t *ident = q ? xmpp_stanza_get_child_by_name(q, "identity") : NULL;
        bool sealroom = false, membersonly = false;
        for (xmpp_stanza_t *c = q ? xmpp_stanza_get_children(q) : NULL; c;
             c = xmpp_stanza_get_next(c)) {
            if (!xmpp_stanza_is_tag(c) || strcmp(xmpp_stanza_get_name(c), "feature") != 0) continue;
            sealroom |= strcmp(attr(c, "var"), IT_NS) == 0;
            membersonly |= strcmp(attr(c, "var"), "muc_membersonly") == 0;
        }
        IT_CHECK(ident && strcmp(attr(ident, "category"), "conference") == 0 && sealroom &&
                     membersonly,
                 "%s: disco#info lacks conference identity or features", w);
    }
    xmpp_stanza_release(st);
}

/* Roster changes an actor without the right role must not make. */
static void try_roster_refused(const actor *a)
{
    try_roster(a->rc, a->label, SR_OP_ADD, "frank", SR_ROLE_MEMBER, "forbidden", "bad-role");
    try_roster(a->rc, a->label, SR_OP_REMOVE, "grace", SR_ROLE_NONE, "forbidden", "bad-role");
    try_roster(a->rc, a->label, SR_OP_ROLE, "grace", SR_ROLE_ADMIN, "forbidden", "bad-role");
}

static void run_matrix(const actor *a)
{
    it_log("matrix row: %s (%s)", a->label, it_raw_bare(a->rc));
    char frank[256];
    it_bare(frank, sizeof frank, "frank");
    try_identity_fetch(a, frank);
    try_create_existing(a->rc, a->label);
    if (strcmp(a->label, "admin") != 0) try_roster_refused(a);
    try_chain(a);
    try_join(a);
    try_send(a);
    try_mam(a);
    try_disco(a);
}

int main(void)
{
    it_init("it_authz");
    owner = it_raw_connect("alice");
    it_raw *member = it_raw_connect("bob");
    it_raw *admin = it_raw_connect("carol");
    it_raw *removed = it_raw_connect("dave");
    it_raw *outsider = it_raw_connect("eve");
    it_raw *targets[3] = {it_raw_connect("frank"), it_raw_connect("grace"), it_raw_connect("ivan")};
    it_raw *all[] = {member, admin, removed, outsider, targets[0], targets[1], targets[2]};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        it_raw_register(all[i]);

    it_room_create(owner, &room, "authz");
    it_log("room %s", room.jid);
    it_raw_join_ok(owner, room.jid, "alice");
    it_room_change(owner, &room, SR_OP_ADD, "bob", SR_ROLE_MEMBER);
    it_room_change(owner, &room, SR_OP_ADD, "carol", SR_ROLE_ADMIN);
    it_room_change(owner, &room, SR_OP_ADD, "dave", SR_ROLE_MEMBER);
    it_room_change(owner, &room, SR_OP_ADD, "grace", SR_ROLE_MEMBER);
    it_raw_e2e_ready(owner, &room, &owner, 1);
    unsigned char hello[IT_PAYLOAD_MIN] = "..........................seed message for the archive";
    it_raw_fill_payload(owner, room.jid, hello, sizeof hello);
    free(it_raw_say(owner, room.jid, hello, sizeof hello, NULL));

    /* The member-to-be-removed is present when removed: it is kicked (321)
     * and everyone else sees it go. */
    it_raw_join_ok(removed, room.jid, "dave");
    char dave_occ[300];
    snprintf(dave_occ, sizeof dave_occ, "%s/dave", room.jid);
    xmpp_stanza_t *arrived = it_raw_expect(owner, it_match_presence_from, dave_occ, IT_TIMEOUT_MS,
                                           "others see the member arrive");
    IT_CHECK(strcmp(attr(arrived, "type"), "") == 0, "arrival presence has type '%s'",
             attr(arrived, "type"));
    xmpp_stanza_release(arrived);
    it_room_change(owner, &room, SR_OP_REMOVE, "dave", SR_ROLE_NONE);
    xmpp_stanza_t *kick = it_raw_expect(removed, it_match_presence_from, dave_occ, IT_TIMEOUT_MS,
                                        "kick of the removed member");
    char *kx = it_stanza_xml(kick);
    IT_CHECK(strcmp(attr(kick, "type"), "unavailable") == 0 && strstr(kx, "code=\"321\"") &&
                 strstr(kx, "code=\"110\""),
             "removed member should get its own unavailable presence with 110 and 321: %s", kx);
    free(kx);
    xmpp_stanza_release(kick);
    xmpp_stanza_t *seen = it_raw_expect(owner, it_match_presence_from, dave_occ, IT_TIMEOUT_MS,
                                        "others see the kick");
    kx = it_stanza_xml(seen);
    IT_CHECK(strcmp(attr(seen, "type"), "unavailable") == 0 && strstr(kx, "code=\"321\""),
             "owner should see the removed member leave with 321: %s", kx);
    free(kx);
    xmpp_stanza_release(seen);
    IT_CHECK(it_pg_count("occupants", room.jid) == 1, "only the owner is present now (%ld)",
             it_pg_count("occupants", room.jid));

    /* The removal made the epoch stale: a new one, and keys of the writers. */
    it_raw *writers[2] = {member, admin};
    it_raw_e2e_ready(owner, &room, writers, 2);

    actor rows[] = {
        {"outsider", outsider, "eve", false},
        {"removed member", removed, "dave", false},
        {"member", member, "bob", true},
        {"admin", admin, "carol", true},
    };
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
        run_matrix(&rows[i]);

    /* What an admin may and may not do to the roster. */
    it_log("admin roster rights");
    try_roster(admin, "admin", SR_OP_ADD, "frank", SR_ROLE_MEMBER, NULL, NULL);
    try_roster(admin, "admin", SR_OP_REMOVE, "frank", SR_ROLE_NONE, NULL, NULL);
    try_roster(admin, "admin", SR_OP_ADD, "frank", SR_ROLE_ADMIN, "forbidden", "bad-role");
    try_roster(admin, "admin", SR_OP_ADD, "frank", SR_ROLE_OWNER, "forbidden", "bad-role");
    try_roster(admin, "admin", SR_OP_ROLE, "grace", SR_ROLE_ADMIN, "forbidden", "bad-role");
    try_roster(admin, "admin", SR_OP_REMOVE, "alice", SR_ROLE_NONE, "forbidden", "bad-role");
    try_roster(admin, "admin", SR_OP_ROLE, "alice", SR_ROLE_MEMBER, "forbidden", "bad-role");
    try_roster(admin, "admin", SR_OP_REMOVE, "grace", SR_ROLE_NONE, NULL, NULL);

    /* The owner may promote and demote; a member may always leave. */
    it_log("owner rights and self-removal");
    try_roster(owner, "owner", SR_OP_ROLE, "bob", SR_ROLE_ADMIN, NULL, NULL);
    try_roster(owner, "owner", SR_OP_ROLE, "bob", SR_ROLE_MEMBER, NULL, NULL);
    try_roster(owner, "owner", SR_OP_ADD, "ivan", SR_ROLE_MEMBER, NULL, NULL);
    try_roster(targets[2], "member leaving", SR_OP_REMOVE, "ivan", SR_ROLE_NONE, NULL, NULL);
    /* The last owner cannot remove itself (not-acceptable, a rule). */
    {
        it_counts before = it_pg_counts(room.jid);
        sr_roster_version *v = it_roster_new(&room, it_raw_bare(owner));
        it_roster_op(v, SR_OP_REMOVE, it_raw_bare(owner), SR_ROLE_NONE, NULL);
        it_roster_sign(v);
        xmpp_stanza_t *st = it_roster_submit(owner, &room, v);
        it_check_error(st, "modify", "not-acceptable", NULL, "last owner leaving");
        xmpp_stanza_release(st);
        free(v);
        it_check_counts(room.jid, before, "last owner leaving");
    }

    /* The database holds exactly the roster the component accepted. */
    long members = it_pg_count("members", room.jid);
    IT_CHECK(members == (long)room.state.nmembers, "members rows %ld, roster has %zu", members,
             room.state.nmembers);
    IT_CHECK(it_pg_count("roster_versions", room.jid) == (long)room.state.version + 1,
             "roster_versions rows %ld, head version %llu",
             it_pg_count("roster_versions", room.jid), (unsigned long long)room.state.version);

    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        it_raw_free(all[i]);
    it_raw_free(owner);
    it_room_free(&room);
    it_log("passed");
    return 0;
}
