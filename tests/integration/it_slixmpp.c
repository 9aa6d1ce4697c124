/* slixmpp as an independent peer: alice (libsealroom) creates a room and
 * adds oscar (identity registered over a raw connection, as a non-Sealroom
 * client cannot), then runs slixmpp_peer.py as oscar, a plain MUC client.
 * The script checks the service's disco#info, joins, and must see alice's
 * message with the component's fallback body, a sealed payload (stored
 * sealed, checked here) and a stanza-id by the room; a payload it sends
 * framed with oscar's data key but not genuinely sealed is stored by the
 * room, and alice's library refuses to display it (VERIFY); a plain-text
 * message from it is refused by the room; alice sees it join and leave.
 *
 * usage: it_slixmpp PYTHON SCRIPT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "stanza.h" /* SEALROOM_FALLBACK_BODY: the text the component puts in <body/> */

#define PEER_TIMEOUT_MS 60000u

typedef struct peer {
    pid_t pid;
    int fd;
    char buf[4096];
    size_t len;
} peer;

typedef struct want_nick {
    const char *room, *nick;
    sealroom_event_type type;
} want_nick;

static bool saw(it_lib *l, const void *arg)
{
    const want_nick *w = arg;
    for (size_t i = 0; i < l->nev; i++) {
        const it_ev *e = &l->ev[i];
        if (e->type == w->type && e->room && e->nick && strcmp(e->room, w->room) == 0 &&
            strcmp(e->nick, w->nick) == 0 && !e->self)
            return true;
    }
    return false;
}

/* Run alice's loop until the peer prints a whole line; copy it to out. */
static void next_line(peer *p, it_lib *alice, char *out, size_t outlen, const char *expect)
{
    uint64_t end = it_mono_ms() + PEER_TIMEOUT_MS;
    for (;;) {
        char *nl = memchr(p->buf, '\n', p->len);
        if (nl) {
            size_t n = (size_t)(nl - p->buf);
            snprintf(out, outlen, "%.*s", (int)n, p->buf);
            memmove(p->buf, nl + 1, p->len - n - 1);
            p->len -= n + 1;
            it_log("slixmpp: %s", out);
            IT_CHECK(strncmp(out, "FAIL", 4) != 0, "slixmpp peer failed (waiting for %s): %s",
                     expect, out);
            IT_CHECK(strncmp(out, expect, strlen(expect)) == 0, "slixmpp said '%s', expected %s",
                     out, expect);
            return;
        }
        IT_CHECK(it_mono_ms() < end, "slixmpp peer said nothing within %u ms (waiting for %s)",
                 PEER_TIMEOUT_MS, expect);
        IT_CHECK(p->len < sizeof p->buf - 1, "overlong line from the peer");
        ssize_t got = read(p->fd, p->buf + p->len, sizeof p->buf - 1 - p->len);
        if (got > 0) {
            p->len += (size_t)got;
            continue;
        }
        IT_CHECK(got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK),
                 "slixmpp peer exited (waiting for %s)", expect);
        sealroom_client_run(alice->client, 20);
    }
}

int main(int argc, char **argv)
{
    const it_env *env = it_init("it_slixmpp");
    IT_CHECK(argc == 3, "usage: it_slixmpp PYTHON SCRIPT");
    IT_CHECK(access(argv[1], X_OK) == 0, "no %s (Debian's python3 with python3-slixmpp)", argv[1]);

    it_raw *oscar_raw = it_raw_connect("oscar");
    it_raw_register(oscar_raw);
    it_raw_free(oscar_raw);
    it_lib *alice = it_lib_connect("alice");
    it_lib_register(alice);
    char room[256];
    it_new_room(room, sizeof room, "slixmpp");
    it_log("room %s", room);
    it_lib_create(alice, room);
    it_lib_add(alice, room, "oscar", SEALROOM_ROLE_MEMBER);
    it_lib_join(alice, room, "alice");

    /* slixmpp does no Sealroom cryptography: oscar's raw session publishes a
     * data key in the epoch alice's library made, and slixmpp sends a payload
     * framed with it (accepted by the room) but not genuinely sealed, which
     * alice's library must refuse to display. */
    it_raw *oscar_keys = it_raw_connect("oscar");
    it_room keyed;
    it_room_init(&keyed, room);
    it_raw_fetch_epoch(oscar_keys, &keyed);
    it_raw_datakey(oscar_keys, &keyed);
    unsigned char to_peer[300], from_peer[200];
    it_random(to_peer, sizeof to_peer);
    it_random(from_peer, sizeof from_peer);
    it_raw_fill_payload(oscar_keys, room, from_peer, sizeof from_peer);
    char *to_b64 = strdup("*"), *from_b64 = it_b64(from_peer, sizeof from_peer);
    char jid[300], port[16];
    snprintf(jid, sizeof jid, "oscar@%s/slixmpp", env->domain);
    snprintf(port, sizeof port, "%u", env->port);

    int fds[2];
    IT_CHECK(pipe(fds) == 0, "pipe");
    fflush(NULL);
    peer p = {.fd = fds[0]};
    p.pid = fork();
    IT_CHECK(p.pid >= 0, "fork");
    if (p.pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl(argv[1], argv[1], argv[2], jid, env->password, env->host, port, env->service, room,
              "oscar", to_b64, SEALROOM_FALLBACK_BODY, from_b64, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    IT_CHECK(fcntl(p.fd, F_SETFL, O_NONBLOCK) == 0, "non-blocking pipe");

    char line[512];
    next_line(&p, alice, line, sizeof line, "JOINED");
    want_nick joined = {room, "oscar", SEALROOM_EVENT_OCCUPANT_JOINED};
    IT_CHECK(it_lib_until(alice, saw, &joined, IT_TIMEOUT_MS), "alice did not see oscar join");

    char *sid = it_lib_say(alice, room, to_peer, sizeof to_peer, NULL);
    next_line(&p, alice, line, sizeof line, "GOT ");
    IT_CHECK(strcmp(line + 4, sid) == 0, "slixmpp got stanza-id %s, alice was told %s", line + 4,
             sid);
    size_t stored_len = 0;
    unsigned char *stored = it_pg_payload(room, atoll(sid), &stored_len);
    IT_CHECK(stored && stored_len == sizeof to_peer + 129 && stored[0] == 1,
             "alice's message is not stored sealed (%zu bytes)", stored_len);
    free(stored);

    next_line(&p, alice, line, sizeof line, "SENT ");
    char peer_sid[64] = "", peer_origin[128] = "";
    IT_CHECK(sscanf(line, "SENT %63s %127s", peer_sid, peer_origin) == 2, "bad line %s", line);
    const it_ev *e = NULL;
    uint64_t end = it_mono_ms() + IT_TIMEOUT_MS;
    for (;;) {
        for (size_t i = 0; i < alice->nev && !e; i++)
            if (alice->ev[i].type == SEALROOM_EVENT_MESSAGE_REJECTED && alice->ev[i].origin_id &&
                strcmp(alice->ev[i].origin_id, peer_origin) == 0)
                e = &alice->ev[i];
        if (e || it_mono_ms() >= end) break;
        sealroom_client_run(alice->client, 20);
    }
    IT_CHECK(e != NULL, "alice's library never reported slixmpp's unverifiable message");
    IT_CHECK(!it_lib_live_by_origin(alice, room, peer_origin),
             "alice's library displayed a message nobody signed");
    IT_CHECK(e->result == SEALROOM_E_VERIFY, "refused with %d (%s), expected VERIFY", e->result,
             e->error_text ? e->error_text : "");
    IT_CHECK(e->stanza_id && strcmp(e->stanza_id, peer_sid) == 0,
             "alice got slixmpp's message as %s, slixmpp was told %s",
             e->stanza_id ? e->stanza_id : "(none)", peer_sid);
    IT_CHECK(e->nick && strcmp(e->nick, "oscar") == 0, "from nick %s", e->nick ? e->nick : "-");
    char oscar[256];
    it_bare(oscar, sizeof oscar, "oscar");
    IT_CHECK(it_pg_count_origin(room, oscar, peer_origin) == 1,
             "slixmpp's message stored %ld times", it_pg_count_origin(room, oscar, peer_origin));

    next_line(&p, alice, line, sizeof line, "REFUSED");
    next_line(&p, alice, line, sizeof line, "LEFT");
    want_nick left = {room, "oscar", SEALROOM_EVENT_OCCUPANT_LEFT};
    IT_CHECK(it_lib_until(alice, saw, &left, IT_TIMEOUT_MS), "alice did not see oscar leave");
    next_line(&p, alice, line, sizeof line, "OK");
    int status = 0;
    IT_CHECK(waitpid(p.pid, &status, 0) == p.pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
             "slixmpp peer exited with status %d", status);
    close(p.fd);
    /* alice's message and slixmpp's, nothing from the refused plain one. */
    IT_CHECK(it_pg_count("messages", room) == 2, "room holds %ld messages",
             it_pg_count("messages", room));

    free(sid);
    it_room_free(&keyed);
    it_raw_free(oscar_keys);
    free(to_b64);
    free(from_b64);
    it_lib_free(alice);
    it_log("passed");
    return 0;
}
