/* The XEP-0114 link to the XMPP server over libstrophe 0.12.2: the
 * component-mode crash workaround, handshake error reporting, reconnect with
 * jittered exponential back-off, the socket the event loop polls, and a
 * bridge from libstrophe's logger to ours. Loop thread only. */
#include "link.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>

#include "config.h"
#include "log.h"

/* How often the reconnect timer looks at the clock. */
#define LINK_TIMER_MS 50
/* libstrophe forces a close 2 s after </stream:stream>; wait a bit longer. */
#define LINK_STOP_WAIT_MS 3000

struct link {
    const config *cfg;
    xmpp_ctx_t *ctx;
    xmpp_conn_t *conn;
    xmpp_log_t strophe_log; /* must outlive ctx */
    link_stanza_cb on_stanza;
    link_state_cb on_state;
    void *arg;

    int fd;              /* captured by the sockopt callback; -1 when closed */
    bool up;             /* handshake done */
    bool started;        /* link_start called: keep reconnecting */
    bool draining;       /* link_quiesce called: received stanzas are dropped */
    bool stopping;       /* link_stop called: no more reconnects */
    bool quiet;          /* link_free: no callbacks into a half-freed owner */
    bool retry_pending;  /* a reconnect is scheduled at retry_at_ms */
    bool timer_added;
    long long retry_at_ms;
    int backoff_ms;      /* next un-jittered delay */
    unsigned failures;   /* consecutive failed attempts, for the log */

    struct link *next_registered;
};

/* libstrophe's sockopt callback gets only the conn: find our link by it. */
static struct link *registry;

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct link *link_of_conn(const xmpp_conn_t *conn)
{
    for (struct link *l = registry; l; l = l->next_registered) {
        if (l->conn == conn) return l;
    }
    return NULL;
}

/* libstrophe's chatter goes to our debug level only; its warnings and errors
 * keep their level. The component handshake carries SHA-1(id ‖ secret),
 * enough to brute-force a weak secret offline, and libstrophe logs it twice
 * (the "Digest:" line and the raw SEND): never let either out. */
static void strophe_logger(void *userdata, xmpp_log_level_t level, const char *area,
                           const char *msg)
{
    log_level ours = level == XMPP_LEVEL_ERROR  ? LOG_LVL_ERROR
                     : level == XMPP_LEVEL_WARN ? LOG_LVL_WARN
                                                : LOG_LVL_DEBUG;
    if (ours > log_current_level) return;
    if (strstr(msg, "<handshake") || strstr(msg, "Digest")) {
        log_write(ours, "strophe", "%s: (component handshake, redacted)", area);
        return;
    }
    log_write(ours, "strophe", "%s: %s", area, msg);
}

static int refuse_socket(xmpp_conn_t *conn, void *sock)
{
    return -1;
}

static void ignore_conn_event(xmpp_conn_t *conn, xmpp_conn_event_t event, int error,
                              xmpp_stream_error_t *stream_error, void *userdata)
{
}

/* xmpp_connect_component() never allocates the conn's stream-management
 * state, and receiving a stanza, xmpp_send() and disconnecting all
 * dereference it (SIGSEGV in 0.12.2, still so upstream). xmpp_connect_client()
 * allocates it before it creates a socket, and the state then lives as long
 * as the conn; refusing that socket from the sockopt callback makes the
 * client connect fail with XMPP_EINT and leaves the conn disconnected and
 * reusable. See XMPP-FACTS.md. */
int link_prepare_component_conn(xmpp_conn_t *conn)
{
    if (!conn || !xmpp_conn_get_jid(conn) || !xmpp_conn_is_disconnected(conn)) return -1;
    xmpp_conn_set_sockopt_callback(conn, refuse_socket);
    int rc = xmpp_connect_client(conn, "127.0.0.1", 1, ignore_conn_event, NULL);
    xmpp_conn_set_sockopt_callback(conn, NULL);
    if (rc == XMPP_EOK) {
        /* Cannot happen with the socket refused; never leave it half-open. */
        xmpp_disconnect(conn);
        return -1;
    }
    if (rc != XMPP_EINT || !xmpp_conn_is_disconnected(conn)) return -1;
    return 0;
}

/* Runs for every socket libstrophe creates (every reconnect): remember the
 * fd for poll() and keep a dead peer from hanging the link for hours. */
static int capture_socket(xmpp_conn_t *conn, void *sock)
{
    int fd = *(int *)sock;
    struct link *l = link_of_conn(conn);
    int on = 1, idle = 60, intvl = 10, cnt = 3;

    /* libstrophe watches its sockets with select(). */
    if (fd >= FD_SETSIZE) {
        log_error("xmpp", "socket %d is beyond select()'s FD_SETSIZE; refusing it", fd);
        return -1;
    }
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt) != 0)
        log_warn("xmpp", "cannot set TCP keepalive: %s", strerror(errno));
    /* Stanzas are small and latency matters more than packet count. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    if (l) l->fd = fd;
    return 0;
}

/* One handler for the three stanza kinds: libstrophe refuses to register
 * the same function twice, even with different filters. */
static int stanza_handler(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
    struct link *l = userdata;
    const char *name = xmpp_stanza_get_name(stanza);
    if (!name || (strcmp(name, "message") != 0 && strcmp(name, "presence") != 0 &&
                  strcmp(name, "iq") != 0))
        return 1;
    if (l->on_stanza && !l->draining && !l->stopping && !l->quiet) l->on_stanza(l->arg, stanza);
    return 1;
}

static void schedule_retry(struct link *l)
{
    int base = l->backoff_ms;
    if (base < l->cfg->reconnect_min_ms) base = l->cfg->reconnect_min_ms;
    if (base > l->cfg->reconnect_max_ms) base = l->cfg->reconnect_max_ms;
    /* Equal jitter: half fixed, half random, so several instances that lost
     * the server together do not come back in lockstep. */
    int half = base / 2;
    int delay = base - half + (half > 0 ? (int)randombytes_uniform((uint32_t)half + 1) : 0);
    l->retry_at_ms = mono_ms() + delay;
    l->retry_pending = true;
    l->backoff_ms = base > l->cfg->reconnect_max_ms / 2 ? l->cfg->reconnect_max_ms : base * 2;
    log_info("xmpp", "reconnecting to %s:%d in %d ms (failed attempts in a row: %u)",
             l->cfg->xmpp_host, l->cfg->xmpp_port, delay, l->failures);
}

static void log_disconnect(struct link *l, bool was_up, int error,
                           const xmpp_stream_error_t *se)
{
    const char *jid = l->cfg->component_jid;
    if (se && se->type == XMPP_SE_NOT_AUTHORIZED) {
        log_error(jid,
                  "server refused the component handshake (not-authorized): component.secret "
                  "does not match the server's secret for this component");
    } else if (se && se->type == XMPP_SE_CONFLICT) {
        log_error(jid,
                  "server refused the stream (conflict): another connection is already attached "
                  "as this component (Prosody allows only one)");
    } else if (se && se->type == XMPP_SE_HOST_UNKNOWN) {
        log_error(jid, "server does not know this component domain (host-unknown): check "
                       "component.jid against the server's configuration");
    } else if (se) {
        log_error(jid, "stream error from server: %s", se->text ? se->text : "(no text)");
    } else if (!was_up && error) {
        log_warn(jid, "cannot connect to %s:%d: %s", l->cfg->xmpp_host, l->cfg->xmpp_port,
                 strerror(error));
    } else if (!was_up) {
        /* libstrophe reports a refused TCP connect with no error code. */
        log_warn(jid, "no component stream with %s:%d (connection refused, or closed during "
                      "the handshake)",
                 l->cfg->xmpp_host, l->cfg->xmpp_port);
    } else {
        log_warn(jid, "link to %s:%d lost%s%s", l->cfg->xmpp_host, l->cfg->xmpp_port,
                 error ? ": " : "", error ? strerror(error) : "");
    }
}

static void conn_handler(xmpp_conn_t *conn, xmpp_conn_event_t event, int error,
                         xmpp_stream_error_t *stream_error, void *userdata)
{
    struct link *l = userdata;

    if (event == XMPP_CONN_CONNECT) {
        l->up = true;
        l->failures = 0;
        l->backoff_ms = l->cfg->reconnect_min_ms;
        log_info(l->cfg->component_jid, "component link up (%s:%d)", l->cfg->xmpp_host,
                 l->cfg->xmpp_port);
        if (l->on_state && !l->quiet) l->on_state(l->arg, true);
        return;
    }
    if (event != XMPP_CONN_DISCONNECT && event != XMPP_CONN_FAIL) return;

    bool was_up = l->up;
    l->up = false;
    l->fd = -1;
    if (l->quiet) return;
    if (l->stopping) {
        log_info(l->cfg->component_jid, "component link closed");
    } else {
        l->failures++;
        log_disconnect(l, was_up, error, stream_error);
    }
    if (was_up && l->on_state) l->on_state(l->arg, false);
    if (l->started && !l->stopping) schedule_retry(l);
}

static void try_connect(struct link *l)
{
    l->retry_pending = false;
    if (!xmpp_conn_is_disconnected(l->conn)) return;
    int rc = xmpp_connect_component(l->conn, l->cfg->xmpp_host,
                                    (unsigned short)l->cfg->xmpp_port, conn_handler, l);
    if (rc != XMPP_EOK) {
        l->failures++;
        log_warn(l->cfg->component_jid, "cannot connect to %s:%d (libstrophe error %d)",
                 l->cfg->xmpp_host, l->cfg->xmpp_port, rc);
        schedule_retry(l);
    }
}

/* A global handler, not a connection one: libstrophe fires connection
 * timers only while the connection is up, and this one must fire while it
 * is down. It stays installed for the link's life and link_free removes it
 * (xmpp_ctx_free would leak it). */
static int retry_timer(xmpp_ctx_t *ctx, void *userdata)
{
    struct link *l = userdata;
    if (l->retry_pending && !l->stopping && mono_ms() >= l->retry_at_ms) try_connect(l);
    return 1;
}

xmpp_link *link_new(const struct config *cfg, link_stanza_cb on_stanza, link_state_cb on_state,
               void *arg)
{
    struct link *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->cfg = cfg;
    l->on_stanza = on_stanza;
    l->on_state = on_state;
    l->arg = arg;
    l->fd = -1;
    l->backoff_ms = cfg->reconnect_min_ms;
    l->strophe_log.handler = strophe_logger;
    l->strophe_log.userdata = l;

    xmpp_initialize();
    l->ctx = xmpp_ctx_new(NULL, &l->strophe_log);
    if (!l->ctx) goto fail;
    l->conn = xmpp_conn_new(l->ctx);
    if (!l->conn) goto fail;
    xmpp_conn_set_jid(l->conn, cfg->component_jid);
    xmpp_conn_set_pass(l->conn, cfg->component_secret);
    if (!xmpp_conn_get_jid(l->conn) || !xmpp_conn_get_pass(l->conn)) goto fail;
    l->next_registered = registry;
    registry = l;
    if (link_prepare_component_conn(l->conn) != 0) {
        log_error("xmpp", "cannot prepare the libstrophe connection (component-mode workaround)");
        goto fail;
    }
    xmpp_conn_set_sockopt_callback(l->conn, capture_socket);
    xmpp_handler_add(l->conn, stanza_handler, NULL, NULL, NULL, l);
    return l;
fail:
    link_free(l);
    return NULL;
}

void link_free(xmpp_link *l)
{
    if (!l) return;
    l->quiet = true;
    for (struct link **p = &registry; *p; p = &(*p)->next_registered) {
        if (*p == l) {
            *p = l->next_registered;
            break;
        }
    }
    if (l->ctx && l->timer_added) xmpp_global_timed_handler_delete(l->ctx, retry_timer);
    if (l->conn) {
        /* libstrophe frees its copy of the secret without wiping it. */
        const char *pass = xmpp_conn_get_pass(l->conn);
        if (pass) sodium_memzero((char *)pass, strlen(pass));
        xmpp_conn_release(l->conn);
    }
    if (l->ctx) xmpp_ctx_free(l->ctx);
    xmpp_shutdown();
    free(l);
}

int link_start(xmpp_link *l)
{
    if (l->started) return -1;
    l->started = true;
    l->stopping = false;
    xmpp_global_timed_handler_add(l->ctx, retry_timer, LINK_TIMER_MS, l);
    l->timer_added = true;
    log_info(l->cfg->component_jid, "connecting to %s:%d", l->cfg->xmpp_host, l->cfg->xmpp_port);
    try_connect(l);
    return 0;
}

bool link_send(xmpp_link *l, xmpp_stanza_t *stanza)
{
    if (!l->up || l->stopping) return false;
    xmpp_send(l->conn, stanza);
    return true;
}

bool link_is_up(const xmpp_link *l)
{
    return l->up;
}

xmpp_ctx_t *link_ctx(xmpp_link *l)
{
    return l->ctx;
}

const char *link_jid(const xmpp_link *l)
{
    return l->cfg->component_jid;
}

void link_quiesce(xmpp_link *l)
{
    l->draining = true;
}

int link_pollfd(xmpp_link *l, short *events)
{
    *events = 0;
    if (l->fd < 0 || xmpp_conn_is_disconnected(l->conn)) return -1;
    *events = POLLIN;
    if (xmpp_conn_is_connecting(l->conn) || xmpp_conn_send_queue_len(l->conn) > 0)
        *events |= POLLOUT;
    return l->fd;
}

void link_process(xmpp_link *l)
{
    /* The first run reads and dispatches; replies queued by the handlers are
     * written at the start of the second. */
    xmpp_run_once(l->ctx, 0);
    xmpp_run_once(l->ctx, 0);
}

void link_stop(xmpp_link *l)
{
    l->stopping = true;
    l->retry_pending = false;
    /* Still connecting or handshaking: there is no stream to close politely;
     * link_free closes the socket. */
    if (xmpp_conn_is_disconnected(l->conn) || !l->up) return;
    xmpp_disconnect(l->conn);
    long long deadline = mono_ms() + LINK_STOP_WAIT_MS;
    while (!xmpp_conn_is_disconnected(l->conn) && mono_ms() < deadline)
        xmpp_run_once(l->ctx, 50);
    if (!xmpp_conn_is_disconnected(l->conn))
        log_warn(l->cfg->component_jid, "link did not close within %d ms", LINK_STOP_WAIT_MS);
}
