/* The blocking convenience client (libcurl-easy style): one libstrophe
 * context and connection, the adapter on top, and loops that run until a
 * request completes. Meant for small programs and the integration tests. */
#include "internal.h"

#include <sealroom/strophe.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COMPLETED_MAX 1024
#define SLICE_MS 20

typedef enum { LINK_IDLE, LINK_CONNECTING, LINK_UP, LINK_FAILED } link_state;

typedef struct completed {
    uint32_t id;
    int result;
} completed;

struct sealroom_client {
    xmpp_ctx_t *xmpp;
    xmpp_conn_t *conn;
    sealroom_ctx *ctx;
    link_state state;
    char *host;
    unsigned short port;
    void (*on_event)(void *user, const sealroom_event *ev);
    void *event_user;
    void (*on_log)(void *user, sealroom_log_level level, const char *msg);
    void *log_user;
    completed *done;
    size_t ndone, capdone;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void record_done(sealroom_client *c, uint32_t id, int result)
{
    if (c->ndone == COMPLETED_MAX) {
        /* Nobody waited for the oldest ones: forget them. */
        memmove(c->done, c->done + 1, (c->ndone - 1) * sizeof *c->done);
        c->ndone--;
    }
    if (c->ndone == c->capdone) {
        size_t cap = c->capdone ? c->capdone * 2 : 16;
        completed *d = realloc(c->done, cap * sizeof *d);
        if (!d)
            return;
        c->done = d;
        c->capdone = cap;
    }
    c->done[c->ndone].id = id;
    c->done[c->ndone].result = result;
    c->ndone++;
}

static bool take_done(sealroom_client *c, uint32_t id, int *result)
{
    for (size_t i = 0; i < c->ndone; i++)
        if (c->done[i].id == id) {
            *result = c->done[i].result;
            memmove(c->done + i, c->done + i + 1, (c->ndone - i - 1) * sizeof *c->done);
            c->ndone--;
            return true;
        }
    return false;
}

static void client_event(void *user, const sealroom_event *ev)
{
    sealroom_client *c = user;
    if (ev->type == SEALROOM_EVENT_REQUEST_DONE)
        record_done(c, ev->request_id, ev->result);
    if (c->on_event)
        c->on_event(c->event_user, ev);
}

static void client_log(void *user, sealroom_log_level level, const char *msg)
{
    sealroom_client *c = user;
    if (c->on_log)
        c->on_log(c->log_user, level, msg);
}

static void conn_handler(xmpp_conn_t *conn, xmpp_conn_event_t status, int error,
                         xmpp_stream_error_t *stream_error, void *userdata)
{
    sealroom_client *c = userdata;
    (void)error;
    (void)stream_error;
    if (status == XMPP_CONN_CONNECT) {
        xmpp_stanza_t *p = xmpp_presence_new(c->xmpp);
        if (p) {
            xmpp_send(conn, p);
            xmpp_stanza_release(p);
        }
        c->state = LINK_UP;
        return;
    }
    bool was_up = c->state == LINK_UP;
    c->state = LINK_FAILED;
    if (was_up && c->ctx)
        sealroom_ctx_link_down(c->ctx);
}

static bool is_loopback(const char *host)
{
    return host && (strcmp(host, "127.0.0.1") == 0 || strcmp(host, "::1") == 0 ||
                    strcmp(host, "localhost") == 0);
}

/* libstrophe writes with send(..., 0): a server that goes away would kill
 * the whole program with SIGPIPE. As libcurl does, block SIGPIPE in this
 * thread while the loop runs and swallow one raised meanwhile, leaving the
 * application's own signal disposition alone; the write error itself
 * reaches libstrophe as EPIPE and drops the link. Every loop turn of this
 * client goes through here, connecting and disconnecting included. */
static void run_once(xmpp_ctx_t *xmpp, unsigned long ms)
{
    sigset_t pipe_set, old_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    bool blocked = pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set) == 0;
    sigset_t pending;
    bool was_pending = blocked && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
    xmpp_run_once(xmpp, ms);
    if (blocked) {
        if (!was_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
            const struct timespec zero = {0, 0};
            int saved = errno;
            while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
                ;
            errno = saved;
        }
        pthread_sigmask(SIG_SETMASK, &old_set, NULL);
    }
}

static void pump(sealroom_client *c, unsigned long ms)
{
    run_once(c->xmpp, ms);
    sealroom_ctx_tick(c->ctx, now_ms());
}

/* Runs xmpp_connect_client and the loop until the stream is up. */
static int do_connect(sealroom_client *c, uint32_t timeout_ms)
{
    c->state = LINK_CONNECTING;
    if (xmpp_connect_client(c->conn, c->host, c->port, conn_handler, c) != XMPP_EOK) {
        c->state = LINK_FAILED;
        return sr_fail(c->ctx, SEALROOM_E_NETWORK, "cannot start connecting");
    }
    uint64_t deadline = now_ms() + (timeout_ms ? timeout_ms : SR_DEFAULT_TIMEOUT_MS);
    while (c->state == LINK_CONNECTING && now_ms() < deadline)
        run_once(c->xmpp, SLICE_MS);
    if (c->state == LINK_UP) {
        /* Flush the initial presence before anything else goes out. */
        run_once(c->xmpp, 1);
        return SEALROOM_OK;
    }
    if (c->state == LINK_CONNECTING) {
        xmpp_disconnect(c->conn);
        for (int i = 0; i < 50 && c->state == LINK_CONNECTING; i++)
            run_once(c->xmpp, SLICE_MS);
        c->state = LINK_FAILED;
        return sr_fail(c->ctx, SEALROOM_E_TIMEOUT, "connecting timed out");
    }
    return sr_fail(c->ctx, SEALROOM_E_NETWORK,
                   "connection or authentication failed");
}

int sealroom_client_connect_ex(sealroom_client **out, const sealroom_client_options *o)
{
    if (!out)
        return SEALROOM_E_INVALID;
    *out = NULL;
    if (!o || o->struct_size < offsetof(sealroom_client_options, flags) + sizeof o->flags ||
        !o->jid || !o->password || !o->service_jid)
        return SEALROOM_E_INVALID;
    if (sodium_init() < 0)
        return SEALROOM_E_NOMEM;
    sealroom_client *c = calloc(1, sizeof *c);
    if (!c)
        return SEALROOM_E_NOMEM;
    int rc = SEALROOM_E_NOMEM;
    xmpp_initialize();
    c->xmpp = xmpp_ctx_new(NULL, NULL);
    c->conn = c->xmpp ? xmpp_conn_new(c->xmpp) : NULL;
    if (!c->conn || (o->host && !(c->host = sr_strdup(o->host))))
        goto fail;
    c->port = o->port;
    long flags = 0;
    const char *where = o->host;
    char domain[1024] = "";
    if (!where) {
        const char *at = strchr(o->jid, '@');
        snprintf(domain, sizeof domain, "%s", at ? at + 1 : o->jid);
        domain[strcspn(domain, "/")] = '\0';
        where = domain;
    }
    if (o->flags & SEALROOM_CLIENT_TLS_DISABLE)
        flags |= XMPP_CONN_FLAG_DISABLE_TLS;
    if (o->flags & SEALROOM_CLIENT_TLS_REQUIRE)
        flags |= XMPP_CONN_FLAG_MANDATORY_TLS;
    if ((o->flags & SEALROOM_CLIENT_TLS_TRUST) ||
        (is_loopback(where) && !(o->flags & SEALROOM_CLIENT_TLS_VERIFY)))
        flags |= XMPP_CONN_FLAG_TRUST_TLS;
    xmpp_conn_set_flags(c->conn, flags);
    xmpp_conn_set_jid(c->conn, o->jid);
    /* libstrophe keeps its own copy of the password for SASL and reconnects. */
    xmpp_conn_set_pass(c->conn, o->password);

    sealroom_callbacks cb = {0};
    cb.struct_size = sizeof cb;
    cb.on_event = client_event;
    cb.log = client_log;
    cb.user = c;
    rc = sealroom_strophe_attach(&c->ctx, c->conn, o->service_jid, &cb);
    if (rc < 0)
        goto fail;
    if (o->timeout_ms)
        sealroom_ctx_set_timeout(c->ctx, o->timeout_ms);
    rc = do_connect(c, o->timeout_ms);
    if (rc < 0)
        goto fail;
    sealroom_ctx_tick(c->ctx, now_ms());
    *out = c;
    return SEALROOM_OK;
fail:
    sealroom_client_free(c);
    return rc;
}

int sealroom_client_connect(sealroom_client **out, const char *jid, const char *password,
                            const char *host, unsigned short port, const char *service_jid,
                            uint32_t timeout_ms)
{
    sealroom_client_options o = {0};
    o.struct_size = sizeof o;
    o.jid = jid;
    o.password = password;
    o.host = host;
    o.port = port;
    o.service_jid = service_jid;
    o.timeout_ms = timeout_ms;
    return sealroom_client_connect_ex(out, &o);
}

sealroom_ctx *sealroom_client_ctx(sealroom_client *client)
{
    return client ? client->ctx : NULL;
}

int sealroom_client_set_identity(sealroom_client *client, const sealroom_identity *id)
{
    if (!client)
        return SEALROOM_E_INVALID;
    return sealroom_ctx_set_identity(client->ctx, id);
}

void sealroom_client_set_event_handler(sealroom_client *client,
                                       void (*fn)(void *user, const sealroom_event *ev),
                                       void *user)
{
    if (!client)
        return;
    client->on_event = fn;
    client->event_user = user;
}

void sealroom_client_set_log_handler(sealroom_client *client,
                                     void (*fn)(void *user, sealroom_log_level level,
                                                const char *msg),
                                     void *user)
{
    if (!client)
        return;
    client->on_log = fn;
    client->log_user = user;
}

int sealroom_client_wait(sealroom_client *client, uint32_t request_id, uint32_t timeout_ms)
{
    int result;
    if (!client)
        return SEALROOM_E_INVALID;
    uint64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        if (take_done(client, request_id, &result))
            return result;
        if (!sr_request_pending(client->ctx, request_id))
            return sr_fail(client->ctx, SEALROOM_E_NOT_FOUND, "no such request");
        if (client->state != LINK_UP)
            return sr_fail(client->ctx, SEALROOM_E_NETWORK, "the link to the server is down");
        if (now_ms() >= deadline)
            return sr_fail(client->ctx, SEALROOM_E_TIMEOUT, "request still pending");
        pump(client, SLICE_MS);
    }
}

int sealroom_client_run(sealroom_client *client, uint32_t timeout_ms)
{
    if (!client)
        return SEALROOM_E_INVALID;
    uint64_t deadline = now_ms() + timeout_ms;
    do {
        if (client->state != LINK_UP)
            return SEALROOM_E_NETWORK;
        /* Never wait past the deadline: a caller driving many clients
         * passes 0 to handle what is ready and move on. */
        uint64_t now = now_ms();
        uint64_t left = deadline > now ? deadline - now : 0;
        pump(client, left < SLICE_MS ? (unsigned long)left : SLICE_MS);
    } while (now_ms() < deadline);
    return client->state == LINK_UP ? SEALROOM_OK : SEALROOM_E_NETWORK;
}

int sealroom_client_is_connected(const sealroom_client *client)
{
    return client && client->state == LINK_UP;
}

void sealroom_client_disconnect(sealroom_client *client)
{
    if (!client || client->state != LINK_UP)
        return;
    xmpp_disconnect(client->conn);
    for (int i = 0; i < 100 && client->state == LINK_UP; i++)
        run_once(client->xmpp, SLICE_MS);
    if (client->state == LINK_UP) {
        client->state = LINK_FAILED;
        sealroom_ctx_link_down(client->ctx);
    }
}

int sealroom_client_reconnect(sealroom_client *client, uint32_t timeout_ms)
{
    if (!client)
        return SEALROOM_E_INVALID;
    if (client->state == LINK_UP)
        return sr_fail(client->ctx, SEALROOM_E_STATE, "already connected");
    sealroom_ctx_link_down(client->ctx);
    int rc = do_connect(client, timeout_ms);
    if (rc < 0)
        return rc;
    rc = sealroom_ctx_link_up(client->ctx);
    run_once(client->xmpp, 1);
    sealroom_ctx_tick(client->ctx, now_ms());
    return rc;
}

void sealroom_client_free(sealroom_client *client)
{
    if (!client)
        return;
    if (client->conn && client->state == LINK_UP) {
        xmpp_disconnect(client->conn);
        for (int i = 0; i < 50 && client->state == LINK_UP; i++)
            run_once(client->xmpp, SLICE_MS);
    }
    sealroom_strophe_detach(client->ctx);
    client->ctx = NULL;
    if (client->conn) {
        /* libstrophe frees its copy of the password without wiping it. */
        const char *pass = xmpp_conn_get_pass(client->conn);
        if (pass)
            sodium_memzero((char *)pass, strlen(pass));
        xmpp_conn_release(client->conn);
    }
    if (client->xmpp)
        xmpp_ctx_free(client->xmpp);
    free(client->host);
    free(client->done);
    free(client);
}
