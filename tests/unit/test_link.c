/* Unit tests for the XMPP link (component/link.c) against a fake XEP-0114
 * server in a thread: the libstrophe 0.12.2 component-mode workaround
 * (receive, xmpp_send, disconnect — the paths that crash without it), the
 * link's handshake, reconnect with back-off, handshake-error logging and
 * secret redaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "link.h"
#include "log.h"

#define SECRET "s3cret-for-test"
#define STREAM_ID "fake-stream-1"

typedef enum {
    SRV_REJECT,   /* not-authorized stream error after the handshake */
    SRV_DROP,     /* handshake, one message, wait for the echo, then cut the TCP link */
    SRV_GRACEFUL, /* handshake, one message, then wait for </stream:stream> */
} srv_mode;

typedef struct fake_server {
    int listen_fd;
    int port;
    srv_mode script[4];
    int nscript;
    pthread_t thread;
    /* written by the server thread, read after join */
    int handshakes_ok, handshakes_bad, connections;
    char transcript[16384];
    size_t transcript_len;
} fake_server;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void send_all(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

/* Read into buf until `needle` appears or the peer goes quiet for 5 s. */
static bool read_until(int fd, char *buf, size_t cap, size_t *len, const char *needle)
{
    while (!strstr(buf, needle)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) <= 0) return false;
        if (*len + 1 >= cap) return false;
        ssize_t r = recv(fd, buf + *len, cap - 1 - *len, 0);
        if (r <= 0) return false;
        *len += (size_t)r;
        buf[*len] = '\0';
    }
    return true;
}

static void record(fake_server *s, const char *buf)
{
    size_t n = strlen(buf);
    if (s->transcript_len + n + 1 > sizeof s->transcript) n = sizeof s->transcript - 1 - s->transcript_len;
    memcpy(s->transcript + s->transcript_len, buf, n);
    s->transcript_len += n;
    s->transcript[s->transcript_len] = '\0';
}

/* The text of <handshake ...>digest</handshake>, or NULL. */
static const char *handshake_digest(const char *buf)
{
    const char *hs = strstr(buf, "<handshake");
    if (!hs) return NULL;
    hs = strchr(hs, '>');
    return hs ? hs + 1 : NULL;
}

static void serve_one(fake_server *s, int fd, srv_mode mode)
{
    char buf[8192] = "";
    size_t len = 0;

    /* The client's stream header: wait for the '>' closing <stream:stream. */
    if (!read_until(fd, buf, sizeof buf, &len, "<stream:stream")) goto out;
    while (!strchr(strstr(buf, "<stream:stream"), '>')) {
        if (!read_until(fd, buf, sizeof buf, &len, ">")) goto out;
    }
    send_all(fd, "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/"
                 "streams' xmlns='jabber:component:accept' from='rooms.localhost' id='" STREAM_ID
                 "'>");
    if (!read_until(fd, buf, sizeof buf, &len, "</handshake>")) goto out;

    /* XEP-0114: hex(SHA-1(stream id ‖ secret)). */
    unsigned char digest[XMPP_SHA1_DIGEST_SIZE];
    char expected[2 * XMPP_SHA1_DIGEST_SIZE + 1];
    const char pre[] = STREAM_ID SECRET;
    xmpp_sha1_digest((const unsigned char *)pre, strlen(pre), digest);
    for (int i = 0; i < XMPP_SHA1_DIGEST_SIZE; i++)
        snprintf(expected + 2 * i, 3, "%02x", digest[i]);
    const char *hs = handshake_digest(buf);
    bool ok = hs && strncmp(hs, expected, strlen(expected)) == 0;
    if (ok)
        s->handshakes_ok++;
    else
        s->handshakes_bad++;

    if (mode == SRV_REJECT || !ok) {
        send_all(fd, "<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                     "</stream:error></stream:stream>");
        goto out;
    }
    send_all(fd, "<handshake/>");
    send_all(fd, "<message to='rooms.localhost' from='a@localhost/r' id='m1'><body>x</body>"
                 "</message>");
    if (mode == SRV_DROP) {
        read_until(fd, buf, sizeof buf, &len, "echo:x");
        goto out;
    }
    if (read_until(fd, buf, sizeof buf, &len, "</stream:stream>")) send_all(fd, "</stream:stream>");
out:
    record(s, buf);
    close(fd);
}

static void *server_main(void *arg)
{
    fake_server *s = arg;
    for (int i = 0; i < s->nscript; i++) {
        struct pollfd p = {.fd = s->listen_fd, .events = POLLIN};
        if (poll(&p, 1, 10000) <= 0) break;
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0) break;
        s->connections++;
        serve_one(s, fd, s->script[i]);
    }
    return NULL;
}

static void server_start(fake_server *s, const srv_mode *script, int n)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int one = 1;

    memset(s, 0, sizeof *s);
    memcpy(s->script, script, (size_t)n * sizeof *script);
    s->nscript = n;
    s->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->listen_fd >= 0);
    setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    assert_int_equal(bind(s->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->listen_fd, 4), 0);
    assert_int_equal(getsockname(s->listen_fd, (struct sockaddr *)&a, &alen), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_join(fake_server *s)
{
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
}

/* ---- the workaround on a bare libstrophe connection ---- */

typedef struct raw_state {
    bool connected, disconnected;
    int messages;
    char body[64];
} raw_state;

static int raw_message(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    raw_state *rs = ud;
    xmpp_ctx_t *ctx = xmpp_conn_get_context(conn);
    char *body = xmpp_message_get_body(st);
    rs->messages++;
    snprintf(rs->body, sizeof rs->body, "%s", body ? body : "");
    xmpp_free(ctx, body);

    xmpp_stanza_t *reply = xmpp_message_new(ctx, "chat", xmpp_stanza_get_from(st), "r1");
    xmpp_stanza_set_from(reply, "rooms.localhost");
    xmpp_message_set_body(reply, "echo:x");
    xmpp_send(conn, reply); /* crashes in component mode without the workaround */
    xmpp_stanza_release(reply);
    return 1;
}

static void raw_conn_handler(xmpp_conn_t *conn, xmpp_conn_event_t ev, int err,
                             xmpp_stream_error_t *se, void *ud)
{
    raw_state *rs = ud;
    if (ev == XMPP_CONN_CONNECT)
        rs->connected = true;
    else
        rs->disconnected = true;
}

static void test_prepare_refuses_bad_conn(void **state)
{
    xmpp_initialize();
    xmpp_ctx_t *ctx = xmpp_ctx_new(NULL, NULL);
    xmpp_conn_t *conn = xmpp_conn_new(ctx);
    /* No JID: xmpp_connect_client cannot run, so neither can the workaround. */
    assert_int_equal(link_prepare_component_conn(conn), -1);
    assert_int_equal(link_prepare_component_conn(NULL), -1);
    xmpp_conn_set_jid(conn, "rooms.localhost");
    assert_int_equal(link_prepare_component_conn(conn), 0);
    assert_true(xmpp_conn_is_disconnected(conn));
    /* Idempotent: a second call keeps the state it allocated. */
    assert_int_equal(link_prepare_component_conn(conn), 0);
    xmpp_conn_release(conn);
    xmpp_ctx_free(ctx);
    xmpp_shutdown();
}

static void test_workaround_component_roundtrip(void **state)
{
    fake_server srv;
    const srv_mode script[] = {SRV_GRACEFUL};
    raw_state rs = {0};

    server_start(&srv, script, 1);
    xmpp_initialize();
    xmpp_ctx_t *ctx = xmpp_ctx_new(NULL, NULL);
    xmpp_conn_t *conn = xmpp_conn_new(ctx);
    xmpp_conn_set_jid(conn, "rooms.localhost");
    xmpp_conn_set_pass(conn, SECRET);
    assert_int_equal(link_prepare_component_conn(conn), 0);
    xmpp_handler_add(conn, raw_message, NULL, "message", NULL, &rs);
    assert_int_equal(
        xmpp_connect_component(conn, "127.0.0.1", (unsigned short)srv.port, raw_conn_handler, &rs),
        XMPP_EOK);

    long long deadline = now_ms() + 5000;
    while (rs.messages == 0 && !rs.disconnected && now_ms() < deadline) xmpp_run_once(ctx, 10);
    assert_true(rs.connected);
    assert_int_equal(rs.messages, 1);
    assert_string_equal(rs.body, "x");

    xmpp_disconnect(conn);
    deadline = now_ms() + 5000;
    while (!rs.disconnected && now_ms() < deadline) xmpp_run_once(ctx, 10);
    assert_true(rs.disconnected);
    xmpp_conn_release(conn);
    xmpp_ctx_free(ctx);
    xmpp_shutdown();

    server_join(&srv);
    assert_int_equal(srv.handshakes_ok, 1);
    assert_non_null(strstr(srv.transcript, "echo:x"));
    assert_non_null(strstr(srv.transcript, "</stream:stream>"));
}

/* ---- the link ---- */

typedef struct link_state {
    xmpp_link *l;
    int ups, downs, stanzas;
    char last_from[128];
} link_state;

static void on_stanza(void *arg, xmpp_stanza_t *st)
{
    link_state *ls = arg;
    ls->stanzas++;
    const char *from = xmpp_stanza_get_from(st);
    snprintf(ls->last_from, sizeof ls->last_from, "%s", from ? from : "");
    xmpp_ctx_t *ctx = link_ctx(ls->l);
    xmpp_stanza_t *reply = xmpp_message_new(ctx, "chat", from, "r1");
    xmpp_stanza_set_from(reply, link_jid(ls->l));
    xmpp_message_set_body(reply, "echo:x");
    assert_true(link_send(ls->l, reply));
    xmpp_stanza_release(reply);
}

static void on_state(void *arg, bool up)
{
    link_state *ls = arg;
    if (up)
        ls->ups++;
    else
        ls->downs++;
}

static void test_config(config *c, int port)
{
    memset(c, 0, sizeof *c);
    c->component_jid = "rooms.localhost";
    c->component_secret = SECRET;
    c->xmpp_host = "127.0.0.1";
    c->xmpp_port = port;
    c->reconnect_min_ms = 20;
    c->reconnect_max_ms = 200;
}

/* Drive the link the way main.c does: poll on its fd, then process. */
static void pump_until(link_state *ls, bool (*done)(const link_state *), int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    while (!done(ls) && now_ms() < deadline) {
        short ev;
        int fd = link_pollfd(ls->l, &ev);
        struct pollfd p = {.fd = fd, .events = ev};
        poll(fd >= 0 ? &p : NULL, fd >= 0 ? 1 : 0, 20);
        link_process(ls->l);
    }
}

static bool got_one_stanza(const link_state *ls)
{
    return ls->stanzas >= 1;
}

static bool got_two_stanzas(const link_state *ls)
{
    return ls->stanzas >= 2;
}

static void test_link_roundtrip(void **state)
{
    fake_server srv;
    const srv_mode script[] = {SRV_GRACEFUL};
    link_state ls = {0};
    config cfg;
    short ev;

    server_start(&srv, script, 1);
    test_config(&cfg, srv.port);
    ls.l = link_new(&cfg, on_stanza, on_state, &ls);
    assert_non_null(ls.l);
    assert_int_equal(link_pollfd(ls.l, &ev), -1);
    assert_false(link_is_up(ls.l));
    assert_string_equal(link_jid(ls.l), "rooms.localhost");
    assert_int_equal(link_start(ls.l), 0);
    assert_int_equal(link_start(ls.l), -1);

    pump_until(&ls, got_one_stanza, 5000);
    assert_int_equal(ls.ups, 1);
    assert_int_equal(ls.stanzas, 1);
    assert_string_equal(ls.last_from, "a@localhost/r");
    assert_true(link_is_up(ls.l));
    int fd = link_pollfd(ls.l, &ev);
    assert_true(fd >= 0);
    assert_true(ev & POLLIN);

    link_stop(ls.l);
    assert_false(link_is_up(ls.l));
    assert_int_equal(ls.downs, 1);
    assert_int_equal(link_pollfd(ls.l, &ev), -1);
    xmpp_stanza_t *late = xmpp_message_new(link_ctx(ls.l), "chat", "a@localhost", "late");
    assert_false(link_send(ls.l, late));
    xmpp_stanza_release(late);
    link_free(ls.l);

    server_join(&srv);
    assert_int_equal(srv.handshakes_ok, 1);
    assert_non_null(strstr(srv.transcript, "echo:x"));
    assert_non_null(strstr(srv.transcript, "</stream:stream>"));
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Wrong secret first (logged as such), then a link that the server cuts,
 * then a good one: the link must come back by itself each time and keep
 * delivering stanzas on the same libstrophe conn. */
static void test_link_reconnects_and_redacts(void **state)
{
    fake_server srv;
    const srv_mode script[] = {SRV_REJECT, SRV_DROP, SRV_GRACEFUL};
    link_state ls = {0};
    config cfg;
    char logpath[] = "/tmp/sealroom-test-link-XXXXXX";
    int lfd = mkstemp(logpath);
    assert_true(lfd >= 0);
    close(lfd);
    assert_int_equal(log_open(logpath), 0);
    log_set_level(LOG_LVL_DEBUG);

    server_start(&srv, script, 3);
    test_config(&cfg, srv.port);
    ls.l = link_new(&cfg, on_stanza, on_state, &ls);
    assert_non_null(ls.l);
    assert_int_equal(link_start(ls.l), 0);
    pump_until(&ls, got_two_stanzas, 8000);
    assert_int_equal(ls.stanzas, 2);
    assert_int_equal(ls.ups, 2);
    assert_int_equal(ls.downs, 1);
    link_stop(ls.l);
    assert_int_equal(ls.downs, 2);
    link_free(ls.l);
    server_join(&srv);
    log_set_level(LOG_LVL_INFO);
    log_close();

    assert_int_equal(srv.connections, 3);
    const char *log = slurp(logpath);
    assert_non_null(strstr(log, "not-authorized"));
    assert_non_null(strstr(log, "reconnecting to 127.0.0.1"));
    assert_non_null(strstr(log, "[rooms.localhost] component link up"));
    /* Debug level logs libstrophe's traffic, but never the secret nor the
     * handshake digest derived from it. */
    assert_non_null(strstr(log, "[strophe]"));
    assert_null(strstr(log, SECRET));
    const char *hs = handshake_digest(srv.transcript);
    assert_non_null(hs);
    char digest[41];
    memcpy(digest, hs, 40);
    digest[40] = '\0';
    if (strstr(log, digest)) fprintf(stderr, "%s", log);
    assert_null(strstr(log, digest));
    unlink(logpath);
}

/* Nothing listens: the link keeps retrying, with growing delays, and stops
 * cleanly while down. */
static void test_link_retries_when_refused(void **state)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &alen), 0);
    close(s); /* the port is now very likely closed */

    char logpath[] = "/tmp/sealroom-test-link-XXXXXX";
    int lfd = mkstemp(logpath);
    close(lfd);
    assert_int_equal(log_open(logpath), 0);

    link_state ls = {0};
    config cfg;
    test_config(&cfg, ntohs(a.sin_port));
    ls.l = link_new(&cfg, on_stanza, on_state, &ls);
    assert_int_equal(link_start(ls.l), 0);
    long long deadline = now_ms() + 600;
    while (now_ms() < deadline) {
        short ev;
        int fd = link_pollfd(ls.l, &ev);
        struct pollfd p = {.fd = fd, .events = ev};
        poll(fd >= 0 ? &p : NULL, fd >= 0 ? 1 : 0, 20);
        link_process(ls.l);
    }
    assert_int_equal(ls.ups, 0);
    link_stop(ls.l);
    link_free(ls.l);
    log_close();

    const char *log = slurp(logpath);
    int attempts = 0;
    for (const char *p = log; (p = strstr(p, "reconnecting to")); p++) attempts++;
    /* 20 ms doubling to 200 ms, jittered, within 600 ms: several, not dozens. */
    assert_true(attempts >= 3);
    assert_true(attempts <= 15);
    unlink(logpath);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prepare_refuses_bad_conn),
        cmocka_unit_test(test_workaround_component_roundtrip),
        cmocka_unit_test(test_link_roundtrip),
        cmocka_unit_test(test_link_reconnects_and_redacts),
        cmocka_unit_test(test_link_retries_when_refused),
    };
    return cmocka_run_group_tests_name("link", tests, NULL, NULL);
}
