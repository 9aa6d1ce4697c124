/* The scripted demo run by `contrib/sealroom-dev up`: three users log in to
 * their Sealroom accounts with a passphrase (creating them on the first
 * run: the identity goes into a vault on the service, so the demo keeps no
 * key files), alice creates a room and adds bob and carol (a new epoch for
 * each change), all join and talk end-to-end encrypted, and bob pages back
 * through the history, decrypting it. Then alice removes carol: alice and
 * bob, the members online, agree on the next epoch's key in a multi-cast
 * key distribution run through sealroomd (which never learns it), alice
 * hands sealroomd the re-encryption token, sealroomd re-keys the stored
 * data-key headers to the new epoch, and bob reads the whole history again
 * with the new key alone. Then bob searches the room by keyword (Latin and
 * Japanese): the service answers from its encrypted index. The script then
 * prints what the server holds: ciphertext, headers re-keyed to the current
 * epoch, index labels and a sealed keyring, no key.
 *
 * Environment: SEALROOM_DEMO_HOST (127.0.0.1), SEALROOM_DEMO_PORT (5222),
 * SEALROOM_DEMO_DOMAIN (localhost), SEALROOM_DEMO_SERVICE (rooms.localhost),
 * SEALROOM_DEMO_PASSWORD (secret: the XMPP password),
 * SEALROOM_DEMO_PASSPHRASE (the Sealroom passphrase of both demo users),
 * SEALROOM_DEMO_USERS ("alice bob carol": the three accounts to use). */
#include <sealroom/sealroom.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TIMEOUT_MS 15000

typedef struct user {
    char name[64];
    char jid[256];
    sealroom_client *client;
    char history_first[64]; /* from the last history page's completion */
    int searching;          /* history events are search hits */
    int history_complete;
} user;

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

static int fail(const char *what, sealroom_client *c, int rc)
{
    fprintf(stderr, "demo: %s failed: %s (%s)\n", what, sealroom_strerror(rc),
            c ? sealroom_ctx_last_error(sealroom_client_ctx(c)) : "");
    return 1;
}

static void on_event(void *arg, const sealroom_event *ev)
{
    user *u = arg;
    if (sealroom_event_get_type(ev) == SEALROOM_EVENT_REQUEST_DONE &&
        sealroom_event_request_kind(ev) == SEALROOM_REQ_HISTORY) {
        const char *first = sealroom_event_history_first(ev);
        snprintf(u->history_first, sizeof u->history_first, "%s", first ? first : "");
        u->history_complete = sealroom_event_history_complete(ev);
        return;
    }
    if (sealroom_event_get_type(ev) == SEALROOM_EVENT_EPOCH_CHANGED) {
        printf("  %-5s now holds the key of epoch %llu\n", u->name,
               (unsigned long long)sealroom_event_epoch(ev));
        return;
    }
    if (sealroom_event_get_type(ev) == SEALROOM_EVENT_MESSAGE_REJECTED) {
        printf("  %-5s REFUSED a message: %s\n", u->name, sealroom_event_error_text(ev));
        return;
    }
    if (sealroom_event_get_type(ev) != SEALROOM_EVENT_MESSAGE) return;
    size_t len = 0;
    const unsigned char *p = sealroom_event_payload(ev, &len);
    printf("  %-5s %s <%s> %.*s   [stanza-id %s]\n", u->name,
           u->searching                  ? "found  "
           : sealroom_event_is_history(ev) ? "history"
                                           : "live   ",
           sealroom_event_nick(ev),
           (int)len, (const char *)p, sealroom_event_stanza_id(ev));
}

static int connect_user(user *u)
{
    const char *domain = env_or("SEALROOM_DEMO_DOMAIN", "localhost");
    snprintf(u->jid, sizeof u->jid, "%s@%s/demo", u->name, domain);
    int rc = sealroom_client_connect(&u->client, u->jid, env_or("SEALROOM_DEMO_PASSWORD", "secret"),
                                 env_or("SEALROOM_DEMO_HOST", "127.0.0.1"),
                                 (unsigned short)atoi(env_or("SEALROOM_DEMO_PORT", "5222")),
                                 env_or("SEALROOM_DEMO_SERVICE", "rooms.localhost"), TIMEOUT_MS);
    if (rc != SEALROOM_OK) return fail("connecting", NULL, rc);
    sealroom_client_set_event_handler(u->client, on_event, u);
    uint32_t req;
    sealroom_ctx *ctx = sealroom_client_ctx(u->client);
    const char *pass = env_or("SEALROOM_DEMO_PASSPHRASE", "demo passphrase, not for real use");
    /* A returning user opens the vault; a new one creates the account. */
    rc = sealroom_account_login(ctx, &req, pass, strlen(pass));
    if (rc == SEALROOM_OK) rc = sealroom_client_wait(u->client, req, TIMEOUT_MS);
    const char *how = "logged in: identity from the vault";
    if (rc == SEALROOM_E_NOT_FOUND) {
        how = "new account: identity sealed into a vault on the service";
        rc = sealroom_account_create(ctx, &req, pass, strlen(pass));
        if (rc == SEALROOM_OK) rc = sealroom_client_wait(u->client, req, TIMEOUT_MS);
    }
    if (rc != SEALROOM_OK) return fail("opening the account", u->client, rc);
    unsigned char pk[32];
    char fp[128];
    snprintf(fp, sizeof fp, "?");
    char bare[300];
    snprintf(bare, sizeof bare, "%s@%s", u->name, domain);
    if (sealroom_identity_fetch(ctx, &req, bare) == SEALROOM_OK &&
        sealroom_client_wait(u->client, req, TIMEOUT_MS) == SEALROOM_OK &&
        sealroom_ctx_known_key(ctx, pk, sizeof pk, bare) == SEALROOM_OK)
        sealroom_fingerprint(fp, sizeof fp, pk, sizeof pk);
    printf("%s: %s; key %s\n", u->name, how, fp);
    return 0;
}

/* Wait for u's request while the other users' clients run too: a key
 * distribution run needs every member online to answer. */
static int wait_all(user *u, uint32_t req, user *const *all, size_t n)
{
    for (int i = 0; i < TIMEOUT_MS / 5; i++) {
        int rc = sealroom_client_wait(u->client, req, 5);
        if (rc != SEALROOM_E_TIMEOUT) return rc;
        for (size_t k = 0; k < n; k++)
            if (all[k] != u && all[k]->client) (void)sealroom_client_run(all[k]->client, 0);
    }
    return SEALROOM_E_TIMEOUT;
}

static int say(user *u, const char *room, const char *text)
{
    uint32_t req;
    int rc = sealroom_room_send(sealroom_client_ctx(u->client), &req, NULL, 0, room,
                                (const unsigned char *)text, strlen(text));
    if (rc == SEALROOM_OK) rc = sealroom_client_wait(u->client, req, TIMEOUT_MS);
    return rc == SEALROOM_OK ? 0 : fail("sending", u->client, rc);
}

static int read_history(user *u, const char *room)
{
    char before[64] = "";
    uint32_t req;
    int rc;
    for (int page = 1;; page++) {
        printf(" page %d\n", page);
        if ((rc = sealroom_room_history(sealroom_client_ctx(u->client), &req, room,
                                        *before ? before : NULL, 2)) != SEALROOM_OK ||
            (rc = sealroom_client_wait(u->client, req, TIMEOUT_MS)) != SEALROOM_OK)
            return fail("fetching history", u->client, rc);
        if (u->history_complete || !*u->history_first) return 0;
        snprintf(before, sizeof before, "%s", u->history_first);
    }
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    user alice = {0}, bob = {0}, carol = {0};
    user *const all[3] = {&alice, &bob, &carol};
    if (sscanf(env_or("SEALROOM_DEMO_USERS", "alice bob carol"), "%63s %63s %63s", alice.name,
               bob.name, carol.name) != 3) {
        fprintf(stderr, "demo: SEALROOM_DEMO_USERS must name three users\n");
        return 2;
    }
    int status = 1;
    uint32_t req;
    int rc;
    char room[128];
    unsigned char rnd[4];
    randombytes_buf(rnd, sizeof rnd);
    snprintf(room, sizeof room, "demo-%02x%02x%02x%02x@%s", rnd[0], rnd[1], rnd[2], rnd[3],
             env_or("SEALROOM_DEMO_SERVICE", "rooms.localhost"));

    if (connect_user(&alice) || connect_user(&bob) || connect_user(&carol)) goto out;
    sealroom_ctx *a = sealroom_client_ctx(alice.client), *b = sealroom_client_ctx(bob.client),
                 *c = sealroom_client_ctx(carol.client);

    char bob_bare[320], carol_bare[320];
    const char *domain = env_or("SEALROOM_DEMO_DOMAIN", "localhost");
    snprintf(bob_bare, sizeof bob_bare, "%s@%s", bob.name, domain);
    snprintf(carol_bare, sizeof carol_bare, "%s@%s", carol.name, domain);
    printf("%s: creating %s and adding %s and %s (signed roster versions 0 to 2, a new epoch "
           "for each)\n",
           alice.name, room, bob.name, carol.name);
    if ((rc = sealroom_room_create(a, &req, room)) != SEALROOM_OK ||
        (rc = sealroom_client_wait(alice.client, req, TIMEOUT_MS)) != SEALROOM_OK) {
        fail("creating the room", alice.client, rc);
        goto out;
    }
    if ((rc = sealroom_room_add_member(a, &req, room, bob_bare, SEALROOM_ROLE_MEMBER, NULL)) !=
            SEALROOM_OK ||
        (rc = sealroom_client_wait(alice.client, req, TIMEOUT_MS)) != SEALROOM_OK ||
        (rc = sealroom_room_add_member(a, &req, room, carol_bare, SEALROOM_ROLE_MEMBER, NULL)) !=
            SEALROOM_OK ||
        (rc = sealroom_client_wait(alice.client, req, TIMEOUT_MS)) != SEALROOM_OK) {
        fail("adding the other users", alice.client, rc);
        goto out;
    }
    if ((rc = sealroom_room_sync(b, &req, room)) != SEALROOM_OK ||
        (rc = sealroom_client_wait(bob.client, req, TIMEOUT_MS)) != SEALROOM_OK) {
        fail("verifying the roster chain", bob.client, rc);
        goto out;
    }
    uint64_t version = 0;
    if (sealroom_room_roster_version(b, &version, room) == SEALROOM_OK)
        printf("%s: verified the roster chain up to version %llu, %zu members\n", bob.name,
               (unsigned long long)version, sealroom_room_member_count(b, room));
    if ((rc = sealroom_room_join(a, &req, room, alice.name)) != SEALROOM_OK ||
        (rc = sealroom_client_wait(alice.client, req, TIMEOUT_MS)) != SEALROOM_OK ||
        (rc = sealroom_room_join(b, &req, room, bob.name)) != SEALROOM_OK ||
        (rc = sealroom_client_wait(bob.client, req, TIMEOUT_MS)) != SEALROOM_OK ||
        (rc = sealroom_room_join(c, &req, room, carol.name)) != SEALROOM_OK ||
        (rc = sealroom_client_wait(carol.client, req, TIMEOUT_MS)) != SEALROOM_OK) {
        fail("joining", NULL, rc);
        goto out;
    }
    printf("all joined; talking:\n");
    const char *lines[][2] = {{"a", "Hello, the quarterly numbers are in."},
                              {"b", "Thanks. Where do I find them later?"},
                              {"c", "I only need them until Friday."},
                              {"a", "In the room archive: page back through the history."},
                              {"c", "東京のチームにも数字を共有します。"},
                              {"b", "And the server cannot read any of this."}};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        user *u = lines[i][0][0] == 'a' ? &alice : lines[i][0][0] == 'b' ? &bob : &carol;
        if (say(u, room, lines[i][1])) goto out;
        for (size_t k = 0; k < 3; k++) sealroom_client_run(all[k]->client, 50);
    }
    printf("%s: fetching history, two messages a page, newest first:\n", bob.name);
    if (read_history(&bob, room)) goto out;

    printf("%s: removing %s; %s and %s, the members online, agree on the next epoch's key in a "
           "key-distribution run through the service, and %s hands the service the token that "
           "re-keys the stored data-key headers\n",
           alice.name, carol.name, alice.name, bob.name, alice.name);
    if ((rc = sealroom_room_remove_member(a, &req, room, carol_bare)) != SEALROOM_OK ||
        (rc = wait_all(&alice, req, all, 3)) != SEALROOM_OK) {
        fail("removing the third user", alice.client, rc);
        goto out;
    }
    uint64_t epoch = 0;
    if (sealroom_room_epoch(a, &epoch, room) == SEALROOM_OK)
        printf("%s: removal done; the room is at epoch %llu\n", alice.name,
               (unsigned long long)epoch);
    /* Give the token and the service's sweep a moment. */
    for (int i = 0; i < 20; i++)
        for (size_t k = 0; k < 3; k++) sealroom_client_run(all[k]->client, 25);
    sealroom_client_free(bob.client);
    bob.client = NULL;
    memset(bob.history_first, 0, sizeof bob.history_first);
    bob.history_complete = 0;
    printf("%s: a fresh session pages through the whole history again (every header now "
           "opens with the current epoch's key):\n",
           bob.name);
    if (connect_user(&bob)) goto out;
    if (read_history(&bob, room)) goto out;

    /* Search: the words become tokens only bob can make; the service
     * answers from its encrypted index without learning them. */
    if ((rc = sealroom_room_join(sealroom_client_ctx(bob.client), &req, room, bob.name)) !=
            SEALROOM_OK ||
        (rc = sealroom_client_wait(bob.client, req, TIMEOUT_MS)) != SEALROOM_OK) {
        fail("joining again", bob.client, rc);
        goto out;
    }
    const char *searches[] = {"NUMBERS", "history archive", "東京"};
    bob.searching = 1;
    for (size_t i = 0; i < sizeof searches / sizeof searches[0]; i++) {
        printf("%s: searching the encrypted index for \"%s\":\n", bob.name, searches[i]);
        if ((rc = sealroom_room_search(sealroom_client_ctx(bob.client), &req, room, searches[i],
                                       NULL, 0)) != SEALROOM_OK ||
            (rc = sealroom_client_wait(bob.client, req, TIMEOUT_MS)) != SEALROOM_OK) {
            fail("searching", bob.client, rc);
            goto out;
        }
    }
    bob.searching = 0;
    status = 0;
    printf("demo done: room %s\n", room);
out:
    sealroom_client_free(alice.client);
    sealroom_client_free(bob.client);
    sealroom_client_free(carol.client);
    return status;
}
