/* The scripted demo run by `contrib/sealroom-dev up`: two users log in to
 * their Sealroom accounts with a passphrase (creating them on the first
 * run: the identity goes into a vault on the service, so the demo keeps no
 * key files), alice creates a room (epoch 1) and adds bob (epoch 2: a new
 * room key sealed to both), both join, they talk end-to-end encrypted,
 * and bob pages back through the history, decrypting it. The script then
 * prints what the server holds: ciphertext only.
 *
 * Environment: SEALROOM_DEMO_HOST (127.0.0.1), SEALROOM_DEMO_PORT (5222),
 * SEALROOM_DEMO_DOMAIN (localhost), SEALROOM_DEMO_SERVICE (rooms.localhost),
 * SEALROOM_DEMO_PASSWORD (secret: the XMPP password),
 * SEALROOM_DEMO_PASSPHRASE (the Sealroom passphrase of both demo users),
 * SEALROOM_DEMO_USERS ("alice bob": the two accounts to use). */
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
           sealroom_event_is_history(ev) ? "history" : "live   ", sealroom_event_nick(ev),
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

static int say(user *u, const char *room, const char *text)
{
    uint32_t req;
    int rc = sealroom_room_send(sealroom_client_ctx(u->client), &req, NULL, 0, room,
                                (const unsigned char *)text, strlen(text));
    if (rc == SEALROOM_OK) rc = sealroom_client_wait(u->client, req, TIMEOUT_MS);
    return rc == SEALROOM_OK ? 0 : fail("sending", u->client, rc);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    user alice = {0}, bob = {0};
    if (sscanf(env_or("SEALROOM_DEMO_USERS", "alice bob"), "%63s %63s", alice.name, bob.name) != 2) {
        fprintf(stderr, "demo: SEALROOM_DEMO_USERS must name two users\n");
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

    if (connect_user(&alice) || connect_user(&bob)) goto out;
    sealroom_ctx *a = sealroom_client_ctx(alice.client), *b = sealroom_client_ctx(bob.client);

    char bob_bare[320];
    snprintf(bob_bare, sizeof bob_bare, "%s@%s", bob.name, env_or("SEALROOM_DEMO_DOMAIN", "localhost"));
    printf("%s: creating %s and adding %s (signed roster versions 0 and 1, epochs 1 and 2)\n",
           alice.name, room, bob.name);
    if ((rc = sealroom_room_create(a, &req, room)) != SEALROOM_OK ||
        (rc = sealroom_client_wait(alice.client, req, TIMEOUT_MS)) != SEALROOM_OK) {
        fail("creating the room", alice.client, rc);
        goto out;
    }
    if ((rc = sealroom_room_add_member(a, &req, room, bob_bare, SEALROOM_ROLE_MEMBER, NULL)) !=
            SEALROOM_OK ||
        (rc = sealroom_client_wait(alice.client, req, TIMEOUT_MS)) != SEALROOM_OK) {
        fail("adding the second user", alice.client, rc);
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
        (rc = sealroom_client_wait(bob.client, req, TIMEOUT_MS)) != SEALROOM_OK) {
        fail("joining", NULL, rc);
        goto out;
    }
    printf("both joined; talking:\n");
    const char *lines[][2] = {{"a", "Hello, the quarterly numbers are in."},
                              {"b", "Thanks. Where do I find them later?"},
                              {"a", "In the room archive: page back through the history."},
                              {"b", "And the server cannot read any of this."}};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        user *u = lines[i][0][0] == 'a' ? &alice : &bob;
        if (say(u, room, lines[i][1])) goto out;
        sealroom_client_run(alice.client, 100);
        sealroom_client_run(bob.client, 100);
    }
    printf("%s: fetching history, two messages a page, newest first:\n", bob.name);
    char before[64] = "";
    for (int page = 1;; page++) {
        printf(" page %d\n", page);
        if ((rc = sealroom_room_history(b, &req, room, *before ? before : NULL, 2)) != SEALROOM_OK ||
            (rc = sealroom_client_wait(bob.client, req, TIMEOUT_MS)) != SEALROOM_OK) {
            fail("fetching history", bob.client, rc);
            goto out;
        }
        if (bob.history_complete || !*bob.history_first) break;
        snprintf(before, sizeof before, "%s", bob.history_first);
    }
    status = 0;
    printf("demo done: room %s\n", room);
out:
    sealroom_client_free(alice.client);
    sealroom_client_free(bob.client);
    return status;
}
