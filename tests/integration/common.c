/* Shared helpers of the integration tests (see common.h): environment,
 * assertions, deterministic identity keys, the raw libstrophe client, signed
 * roster versions and PostgreSQL checks. Needs no libsealroom. */
#include "common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <libpq-fe.h>
#include <sodium.h>

#include "b64.h"
#include "e2e/archive.h"
#include "e2e/envelope.h"
#include "e2e/epoch.h"
#include "e2e/identity.h"

static it_env env;
static const char *test_name = "integration";
static PGconn *pg;

/* ------------------------------------------------------------ environment */

static const char *need(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "%s: %s is not set (run through contrib/sealroom-dev test)\n", test_name,
                name);
        exit(1);
    }
    return v;
}

const it_env *it_init(const char *name)
{
    test_name = name;
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *server = getenv("SEALROOM_TEST_SERVER");
    if (!server || !*server) {
        printf("%s: SEALROOM_TEST_SERVER is not set: no stack to test against, skipping\n", name);
        exit(IT_SKIP);
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "%s: sodium_init failed\n", name);
        exit(1);
    }
    xmpp_initialize();
    env.server = server;
    env.host = need("SEALROOM_TEST_XMPP_HOST");
    env.port = (unsigned short)atoi(need("SEALROOM_TEST_C2S_PORT"));
    env.domain = need("SEALROOM_TEST_DOMAIN");
    env.service = need("SEALROOM_TEST_SERVICE");
    env.pg = need("SEALROOM_TEST_PG");
    env.password = need("SEALROOM_TEST_PASSWORD");
    env.sealroomd_restart = getenv("SEALROOM_TEST_SEALROOMD_RESTART");
    env.xmpp_restart = getenv("SEALROOM_TEST_XMPP_RESTART");
    env.sealroomd_log = getenv("SEALROOM_TEST_SEALROOMD_LOG");
    env.run_dir = getenv("SEALROOM_TEST_RUN_DIR");
    it_log("against %s at %s:%u, service %s", env.server, env.host, env.port, env.service);
    return &env;
}

const it_env *it_env_get(void)
{
    return &env;
}

bool it_is_ejabberd(void)
{
    return env.server && strcmp(env.server, "ejabberd") == 0;
}

/* ------------------------------------------------------------- assertions */

void it_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: FAILED at %s:%d: %s: ", test_name, file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (env.sealroomd_log)
        fprintf(stderr, "%s: (sealroomd log: %s)\n", test_name, env.sealroomd_log);
    exit(1);
}

void it_log(const char *fmt, ...)
{
    va_list ap;
    char stamp[32];
    it_format_stamp(stamp, it_wall_ms());
    printf("%s %s: ", stamp + 11, test_name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

int64_t it_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t it_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void it_sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void it_format_stamp(char out[32], int64_t unix_ms)
{
    time_t secs = (time_t)(unix_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, 32, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ", (unsigned)(tm.tm_year + 1900) % 10000u,
             (unsigned)(tm.tm_mon + 1) % 100u, (unsigned)tm.tm_mday % 100u,
             (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u, (unsigned)tm.tm_sec % 100u,
             (unsigned)(unix_ms % 1000) % 1000u);
}

void it_bare(char *out, size_t outlen, const char *user)
{
    snprintf(out, outlen, "%s@%s", user, env.domain);
}

void it_random(unsigned char *out, size_t n)
{
    randombytes_buf(out, n);
}

void it_random_hex(char *out, size_t nbytes)
{
    unsigned char buf[64];
    if (nbytes > sizeof buf) nbytes = sizeof buf;
    randombytes_buf(buf, nbytes);
    sodium_bin2hex(out, nbytes * 2 + 1, buf, nbytes);
}

void it_new_room(char *out, size_t outlen, const char *prefix)
{
    char hex[17];
    it_random_hex(hex, 8);
    snprintf(out, outlen, "%s-%s@%s", prefix, hex, env.service);
}

char *it_b64(const unsigned char *in, size_t len)
{
    size_t n = sr_b64_encoded_len(len);
    char *out = malloc(n);
    IT_CHECK(out && sr_b64_encode(out, n, in, len), "base64 of %zu bytes", len);
    return out;
}

void it_run_command(const char *what, const char *cmd)
{
    IT_CHECK(cmd && *cmd, "%s: no command in the environment", what);
    it_log("%s: %s", what, cmd);
    uint64_t t0 = it_mono_ms();
    int st = system(cmd);
    IT_CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s exited with status %d", what,
             st);
    it_log("%s done in %llu ms", what, (unsigned long long)(it_mono_ms() - t0));
}

/* ------------------------------------------------------------- identities */

void it_user_keys(const char *bare, unsigned char pk[SR_KEY_BYTES], unsigned char sk[64])
{
    static const char label[] = "sealroom-integration-test-identity-v0";
    unsigned char seed[crypto_sign_SEEDBYTES];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof seed);
    crypto_generichash_update(&st, (const unsigned char *)label, sizeof label);
    crypto_generichash_update(&st, (const unsigned char *)bare, strlen(bare));
    crypto_generichash_final(&st, seed, sizeof seed);
    crypto_sign_seed_keypair(pk, sk, seed);
    sodium_memzero(seed, sizeof seed);
}

/* ------------------------------------------------------------- raw client */

typedef struct qnode {
    xmpp_stanza_t *st;
    struct qnode *next;
} qnode;

#define IT_MAX_DATAKEYS 16

/* A data key a raw client published: what its payloads name. */
typedef struct it_dk {
    char room[256];
    unsigned char id[16];
    uint64_t roster_version;
} it_dk;

struct it_raw {
    it_dk dk[IT_MAX_DATAKEYS];
    size_t ndk;
    xmpp_ctx_t *ctx;
    xmpp_conn_t *conn;
    int state; /* 0 connecting, 1 up, -1 down */
    char user[64];
    char bare[256];
    char full[512];
    qnode *head, *tail;
};

static int on_stanza(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    (void)conn;
    it_raw *rc = ud;
    qnode *q = calloc(1, sizeof *q);
    if (!q) return 1;
    q->st = xmpp_stanza_copy(st);
    if (rc->tail)
        rc->tail->next = q;
    else
        rc->head = q;
    rc->tail = q;
    return 1;
}

static void on_conn(xmpp_conn_t *conn, xmpp_conn_event_t status, int error,
                    xmpp_stream_error_t *stream_error, void *ud)
{
    (void)error;
    (void)stream_error;
    it_raw *rc = ud;
    if (status == XMPP_CONN_CONNECT) {
        rc->state = 1;
        const char *bound = xmpp_conn_get_bound_jid(conn);
        if (bound) snprintf(rc->full, sizeof rc->full, "%s", bound);
        xmpp_handler_add(conn, on_stanza, NULL, NULL, NULL, rc);
        xmpp_send_raw_string(conn, "<presence/>");
    } else {
        rc->state = -1;
    }
}

static it_raw *raw_try_connect(const char *user, unsigned timeout_ms)
{
    it_raw *rc = calloc(1, sizeof *rc);
    IT_CHECK(rc != NULL, "out of memory");
    snprintf(rc->user, sizeof rc->user, "%s", user);
    it_bare(rc->bare, sizeof rc->bare, user);
    char res[17], jid[400];
    it_random_hex(res, 8);
    snprintf(jid, sizeof jid, "%s/raw-%s", rc->bare, res);
    snprintf(rc->full, sizeof rc->full, "%s", jid);
    rc->ctx = xmpp_ctx_new(
        NULL, getenv("SEALROOM_TEST_DEBUG") ? xmpp_get_default_logger(XMPP_LEVEL_DEBUG) : NULL);
    rc->conn = rc->ctx ? xmpp_conn_new(rc->ctx) : NULL;
    IT_CHECK(rc->conn != NULL, "libstrophe context");
    /* TLS is used when the stack offers it (SEALROOM_DEV_TLS=1, self-signed). */
    xmpp_conn_set_flags(rc->conn, XMPP_CONN_FLAG_TRUST_TLS);
    xmpp_conn_set_jid(rc->conn, jid);
    xmpp_conn_set_pass(rc->conn, env.password);
    if (xmpp_connect_client(rc->conn, env.host, env.port, on_conn, rc) != XMPP_EOK) {
        it_raw_free(rc);
        return NULL;
    }
    uint64_t end = it_mono_ms() + timeout_ms;
    while (rc->state == 0 && it_mono_ms() < end)
        xmpp_run_once(rc->ctx, 20);
    if (rc->state != 1) {
        it_raw_free(rc);
        return NULL;
    }
    /* Let the initial presence go out. */
    xmpp_run_once(rc->ctx, 1);
    return rc;
}

it_raw *it_raw_connect(const char *user)
{
    it_raw *rc = raw_try_connect(user, IT_TIMEOUT_MS);
    IT_CHECK(rc != NULL, "raw client %s could not connect to %s:%u", user, env.host, env.port);
    return rc;
}

void it_raw_clear(it_raw *rc)
{
    while (rc->head) {
        qnode *q = rc->head;
        rc->head = q->next;
        xmpp_stanza_release(q->st);
        free(q);
    }
    rc->tail = NULL;
}

void it_raw_free(it_raw *rc)
{
    if (!rc) return;
    if (rc->conn) {
        if (rc->state == 1) {
            xmpp_disconnect(rc->conn);
            uint64_t end = it_mono_ms() + 2000;
            while (rc->state == 1 && it_mono_ms() < end)
                xmpp_run_once(rc->ctx, 20);
        }
        xmpp_conn_release(rc->conn);
    }
    it_raw_clear(rc);
    if (rc->ctx) xmpp_ctx_free(rc->ctx);
    free(rc);
}

const char *it_raw_full(const it_raw *rc)
{
    return rc->full;
}
const char *it_raw_bare(const it_raw *rc)
{
    return rc->bare;
}
const char *it_raw_user(const it_raw *rc)
{
    return rc->user;
}
bool it_raw_connected(const it_raw *rc)
{
    return rc->state == 1;
}

void it_raw_send(it_raw *rc, const char *fmt, ...)
{
    IT_CHECK(rc->state == 1, "raw client %s is not connected", rc->full);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *buf = malloc((size_t)n + 1);
    IT_CHECK(buf != NULL, "out of memory");
    va_start(ap, fmt);
    vsnprintf(buf, (size_t)n + 1, fmt, ap);
    va_end(ap);
    xmpp_send_raw(rc->conn, buf, (size_t)n);
    free(buf);
    /* libstrophe writes queued data at the start of its next run. */
    xmpp_run_once(rc->ctx, 1);
}

void it_raw_pump(it_raw *rc, unsigned ms)
{
    uint64_t end = it_mono_ms() + ms;
    do {
        xmpp_run_once(rc->ctx, 10);
    } while (it_mono_ms() < end);
}

static xmpp_stanza_t *take_match(it_raw *rc, it_match_fn match, const void *arg)
{
    for (qnode **pp = &rc->head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
        qnode *q = *pp;
        if (!match(q->st, arg)) continue;
        *pp = q->next;
        if (rc->tail == q) rc->tail = prev;
        xmpp_stanza_t *st = q->st;
        free(q);
        return st;
    }
    return NULL;
}

xmpp_stanza_t *it_raw_wait(it_raw *rc, it_match_fn match, const void *arg, unsigned timeout_ms)
{
    uint64_t end = it_mono_ms() + timeout_ms;
    for (;;) {
        xmpp_stanza_t *st = take_match(rc, match, arg);
        if (st) return st;
        if (it_mono_ms() >= end || rc->state != 1) return NULL;
        xmpp_run_once(rc->ctx, 10);
    }
}

xmpp_stanza_t *it_raw_expect(it_raw *rc, it_match_fn match, const void *arg, unsigned timeout_ms,
                             const char *what)
{
    xmpp_stanza_t *st = it_raw_wait(rc, match, arg, timeout_ms);
    IT_CHECK(st != NULL, "%s: nothing arrived at %s within %u ms%s", what, rc->full, timeout_ms,
             rc->state == 1 ? "" : " (the stream is down)");
    return st;
}

bool it_raw_seen(it_raw *rc, it_match_fn match, const void *arg, unsigned ms)
{
    xmpp_stanza_t *st = it_raw_wait(rc, match, arg, ms);
    if (!st) return false;
    xmpp_stanza_release(st);
    return true;
}

static const char *attr(xmpp_stanza_t *st, const char *name)
{
    const char *v = st ? xmpp_stanza_get_attribute(st, name) : NULL;
    return v ? v : "";
}

bool it_match_id(xmpp_stanza_t *st, const void *arg)
{
    return strcmp(attr(st, "id"), (const char *)arg) == 0;
}

bool it_match_reflection(xmpp_stanza_t *st, const void *arg)
{
    if (strcmp(xmpp_stanza_get_name(st), "message") != 0 ||
        strcmp(attr(st, "type"), "groupchat") != 0)
        return false;
    xmpp_stanza_t *o = xmpp_stanza_get_child_by_name_and_ns(st, "origin-id", IT_NS_SID);
    return o && xmpp_stanza_get_child_by_name_and_ns(st, "stanza-id", IT_NS_SID) &&
           strcmp(attr(o, "id"), (const char *)arg) == 0;
}

bool it_match_presence_from(xmpp_stanza_t *st, const void *arg)
{
    return strcmp(xmpp_stanza_get_name(st), "presence") == 0 &&
           strcmp(attr(st, "from"), (const char *)arg) == 0;
}

bool it_match_subject(xmpp_stanza_t *st, const void *arg)
{
    return strcmp(xmpp_stanza_get_name(st), "message") == 0 &&
           strcmp(attr(st, "from"), (const char *)arg) == 0 &&
           xmpp_stanza_get_child_by_name(st, "subject") != NULL;
}

bool it_match_from(xmpp_stanza_t *st, const void *arg)
{
    return strcmp(attr(st, "from"), (const char *)arg) == 0;
}

static unsigned long iq_counter;

static void new_id(char out[40])
{
    char hex[9];
    it_random_hex(hex, 4);
    snprintf(out, 40, "it%lu-%s", ++iq_counter, hex);
}

xmpp_stanza_t *it_raw_iq(it_raw *rc, const char *type, const char *to, const char *payload_xml)
{
    char id[40];
    new_id(id);
    it_raw_send(rc, "<iq type='%s' to='%s' id='%s'>%s</iq>", type, to, id, payload_xml);
    char what[128];
    snprintf(what, sizeof what, "answer to iq %s to %s", id, to);
    return it_raw_expect(rc, it_match_id, id, IT_TIMEOUT_MS, what);
}

xmpp_stanza_t *it_raw_iq_ok(it_raw *rc, const char *type, const char *to, const char *payload_xml,
                            const char *what)
{
    xmpp_stanza_t *st = it_raw_iq(rc, type, to, payload_xml);
    it_check_result(st, what);
    return st;
}

char *it_stanza_xml(xmpp_stanza_t *st)
{
    char *buf = NULL;
    size_t len = 0;
    if (!st || xmpp_stanza_to_text(st, &buf, &len) != XMPP_EOK) return strdup("(none)");
    char *out = strdup(buf);
    xmpp_free(xmpp_stanza_get_context(st), buf);
    return out;
}

void it_check_result_at(const char *file, int line, xmpp_stanza_t *st, const char *what)
{
    if (!st) it_fail(file, line, what, "no answer");
    if (strcmp(attr(st, "type"), "result") != 0) {
        char *x = it_stanza_xml(st);
        it_fail(file, line, what, "expected a result, got %s", x);
    }
}

void it_check_error_at(const char *file, int line, xmpp_stanza_t *st, const char *etype,
                       const char *cond, const char *app, const char *what)
{
    if (!st) it_fail(file, line, what, "no answer (expected error %s)", cond);
    char *x = it_stanza_xml(st);
    xmpp_stanza_t *err = xmpp_stanza_get_child_by_name(st, "error");
    if (strcmp(attr(st, "type"), "error") != 0 || !err)
        it_fail(file, line, what, "expected error %s%s%s, got %s", cond, app ? "/" : "",
                app ? app : "", x);
    if (etype && strcmp(attr(err, "type"), etype) != 0)
        it_fail(file, line, what, "expected error type '%s', got %s", etype, x);
    if (!xmpp_stanza_get_child_by_name_and_ns(err, cond, IT_NS_STANZAS))
        it_fail(file, line, what, "expected condition <%s/>, got %s", cond, x);
    if (app && !xmpp_stanza_get_child_by_name_and_ns(err, app, IT_NS))
        it_fail(file, line, what, "expected application condition <%s xmlns='%s'/>, got %s", app,
                IT_NS, x);
    if (!app) {
        for (xmpp_stanza_t *c = xmpp_stanza_get_children(err); c; c = xmpp_stanza_get_next(c)) {
            const char *ns = xmpp_stanza_is_tag(c) ? xmpp_stanza_get_ns(c) : NULL;
            if (ns && strcmp(ns, IT_NS) == 0)
                it_fail(file, line, what, "expected no application condition, got %s", x);
        }
    }
    free(x);
}

/* ------------------------------------------------- Sealroom over raw client */

/* The e2e identity libsealroom derives from the same 32-byte seed (the
 * Ed25519 seed, the first half of it_user_keys' secret key). */
static void user_e2e(const char *bare, sr_e2e_identity *id)
{
    unsigned char pk[SR_KEY_BYTES], sk[64];
    it_user_keys(bare, pk, sk);
    int rc = sr_e2e_identity_derive(id, sk);
    sodium_memzero(sk, sizeof sk);
    IT_CHECK(rc == SR_E2E_OK && memcmp(id->sign_pk, pk, sizeof pk) == 0,
             "e2e identity of %s derives another key", bare);
}

void it_user_box_pk(const char *bare, unsigned char pk[32])
{
    sr_e2e_identity id;
    user_e2e(bare, &id);
    memcpy(pk, id.box_pk, 32);
    sodium_memzero(&id, sizeof id);
}

char *it_identity_xml(const char *bare)
{
    unsigned char sig[SR_SIG_BYTES], bsig[SR_SIG_BYTES];
    sr_e2e_identity id;
    user_e2e(bare, &id);
    bool ok = sr_identity_proof_sign(sig, bare, id.sign_pk, id.sign_sk) &&
              sr_e2e_bundle_sign(bsig, bare, &id) == SR_E2E_OK;
    IT_CHECK(ok, "identity proof and bundle signature for %s", bare);
    char *k = it_b64(id.sign_pk, 32), *s = it_b64(sig, sizeof sig), *b = it_b64(id.box_pk, 32),
         *bs = it_b64(bsig, sizeof bsig);
    sodium_memzero(&id, sizeof id);
    char *xml = malloc(1024);
    IT_CHECK(xml != NULL, "out of memory");
    snprintf(xml, 1024, "<identity xmlns='%s' key='%s' sig='%s' box-key='%s' bundle-sig='%s'/>",
             IT_NS, k, s, b, bs);
    free(k);
    free(s);
    free(b);
    free(bs);
    return xml;
}

void it_raw_register(it_raw *rc)
{
    char *xml = it_identity_xml(rc->bare);
    xmpp_stanza_t *st = it_raw_iq(rc, "set", env.service, xml);
    free(xml);
    if (strcmp(attr(st, "type"), "result") != 0) {
        char *x = it_stanza_xml(st);
        it_fail(
            __FILE__, __LINE__, "identity registration", "%s: %s%s", rc->bare, x,
            xmpp_stanza_get_child_by_name(xmpp_stanza_get_child_by_name(st, "error"), "conflict")
                ? " (another key is registered for this test user: is the database "
                  "shared with a run that used random identities, such as the demo?)"
                : "");
    }
    xmpp_stanza_release(st);
}

char *it_envelope_b64(const char *room_jid, uint64_t number, const unsigned char hash[32],
                      const char *sealer_bare, const char *recipient_bare,
                      const unsigned char secret[32])
{
    sr_e2e_identity sealer;
    unsigned char box_pk[32], env_bytes[SR_E2E_ENVELOPE_BYTES];
    user_e2e(sealer_bare, &sealer);
    it_user_box_pk(recipient_bare, box_pk);
    sr_e2e_envelope_ctx ctx = {room_jid, number, hash, sealer_bare, recipient_bare, box_pk};
    int rc = sr_e2e_envelope_seal(env_bytes, &ctx, secret, sealer.sign_sk);
    sodium_memzero(&sealer, sizeof sealer);
    IT_CHECK(rc == SR_E2E_OK, "sealing an envelope for %s: %d", recipient_bare, rc);
    return it_b64(env_bytes, sizeof env_bytes);
}

char *it_epoch_xml(const it_room *room, const char *sealer_bare, uint64_t number,
                   const unsigned char secret[32])
{
    sr_e2e_epoch_keys keys;
    IT_CHECK(sr_e2e_epoch_derive(&keys, secret, room->jid, number, room->state.head) == SR_E2E_OK,
             "epoch key schedule");
    char *kc = it_b64(keys.kc, sizeof keys.kc);
    /* The check header of archive re-encryption, as libsealroom sends it. */
    unsigned char hc[32];
    IT_CHECK(sr_e2e_check_header(hc, keys.k, room->jid) == SR_E2E_OK, "check header");
    char *check = it_b64(hc, sizeof hc);
    sodium_memzero(&keys, sizeof keys);
    size_t cap = 512 + room->state.nmembers * 600, len = 0;
    char *out = malloc(cap);
    IT_CHECK(out != NULL, "out of memory");
    len += (size_t)snprintf(out, cap,
                            "<epoch xmlns='%s' number='%llu' roster-version='%llu' kc='%s' "
                            "check='%s'>",
                            IT_NS, (unsigned long long)number,
                            (unsigned long long)room->state.version, kc, check);
    free(kc);
    free(check);
    for (size_t i = 0; i < room->state.nmembers; i++) {
        const char *to = room->state.members[i].jid;
        char *e = it_envelope_b64(room->jid, number, room->state.head, sealer_bare, to, secret);
        len += (size_t)snprintf(out + len, cap - len, "<envelope to='%s'>%s</envelope>", to, e);
        free(e);
    }
    snprintf(out + len, cap - len, "</epoch>");
    return out;
}

void it_raw_epoch(it_raw *rc, it_room *room)
{
    unsigned char secret[32];
    randombytes_buf(secret, sizeof secret);
    uint64_t number = room->epoch + 1;
    char *xml = it_epoch_xml(room, rc->bare, number, secret);
    xmpp_stanza_t *st = it_raw_iq(rc, "set", room->jid, xml);
    free(xml);
    char what[800];
    snprintf(what, sizeof what, "epoch %llu of %s by %s", (unsigned long long)number, room->jid,
             rc->bare);
    it_check_result(st, what);
    xmpp_stanza_release(st);
    room->epoch = number;
    room->epoch_roster_version = room->state.version;
    memcpy(room->epoch_secret, secret, sizeof secret);
    memcpy(room->epoch_hash, room->state.head, sizeof room->epoch_hash);
    sodium_memzero(secret, sizeof secret);
}

void it_raw_datakey(it_raw *rc, const it_room *room)
{
    IT_CHECK(room->epoch > 0, "a data key needs an epoch in %s", room->jid);
    sr_e2e_epoch_keys keys;
    unsigned char p[32], header[32], dkid[16];
    IT_CHECK(sr_e2e_epoch_derive(&keys, room->epoch_secret, room->jid, room->epoch,
                                 room->epoch_hash) == SR_E2E_OK &&
                 sr_e2e_datakey_random(p) == SR_E2E_OK &&
                 sr_e2e_header_wrap(header, keys.k, p) == SR_E2E_OK,
             "data key for %s", room->jid);
    sodium_memzero(&keys, sizeof keys);
    sodium_memzero(p, sizeof p);
    sr_e2e_datakey_id_random(dkid);
    char *id = it_b64(dkid, sizeof dkid), *h = it_b64(header, sizeof header);
    char xml[400];
    snprintf(xml, sizeof xml, "<datakey xmlns='%s' id='%s' epoch='%llu'>%s</datakey>", IT_NS, id,
             (unsigned long long)room->epoch, h);
    free(id);
    free(h);
    xmpp_stanza_t *st = it_raw_iq(rc, "set", room->jid, xml);
    char what[800];
    snprintf(what, sizeof what, "data key of %s in %s", rc->bare, room->jid);
    it_check_result(st, what);
    xmpp_stanza_release(st);
    it_dk *slot = NULL;
    for (size_t i = 0; i < rc->ndk && !slot; i++)
        if (strcmp(rc->dk[i].room, room->jid) == 0) slot = &rc->dk[i];
    if (!slot) {
        IT_CHECK(rc->ndk < IT_MAX_DATAKEYS, "too many rooms with data keys for one raw client");
        slot = &rc->dk[rc->ndk++];
    }
    snprintf(slot->room, sizeof slot->room, "%s", room->jid);
    memcpy(slot->id, dkid, sizeof dkid);
    slot->roster_version = room->epoch_roster_version;
}

static bool b64_exact(unsigned char *out, size_t n, const char *in)
{
    size_t got = 0;
    return in && sodium_base642bin(out, n, in, strlen(in), NULL, &got, NULL,
                                   sodium_base64_VARIANT_ORIGINAL) == 0 &&
           got == n;
}

void it_raw_fetch_epoch(it_raw *rc, it_room *room)
{
    char q[100];
    snprintf(q, sizeof q, "<epoch xmlns='%s'/>", IT_NS);
    xmpp_stanza_t *st = it_raw_iq_ok(rc, "get", room->jid, q, "current epoch fetch");
    xmpp_stanza_t *e = xmpp_stanza_get_child_by_name_and_ns(st, "epoch", IT_NS);
    xmpp_stanza_t *envel = e ? xmpp_stanza_get_child_by_name(e, "envelope") : NULL;
    char *x = it_stanza_xml(st);
    char *text = envel ? xmpp_stanza_get_text(envel) : NULL;
    unsigned char blob[SR_E2E_ENVELOPE_BYTES], hash[32], kc[32], secret[32], sealer_pk[32],
        sk[64];
    const char *sealer = attr(e, "sealer");
    IT_CHECK(text && b64_exact(blob, sizeof blob, text) &&
                 b64_exact(hash, sizeof hash, attr(e, "roster-hash")) &&
                 b64_exact(kc, sizeof kc, attr(e, "kc")) && *sealer,
             "epoch answer without an envelope for %s: %s", rc->bare, x);
    xmpp_free(rc->ctx, text);
    uint64_t number = strtoull(attr(e, "number"), NULL, 10);
    sr_e2e_identity me;
    user_e2e(rc->bare, &me);
    it_user_keys(sealer, sealer_pk, sk);
    sodium_memzero(sk, sizeof sk);
    sr_e2e_envelope_ctx ctx = {room->jid, number, hash, sealer, rc->bare, me.box_pk};
    int rc1 = sr_e2e_envelope_open(secret, blob, sizeof blob, &ctx, sealer_pk, me.box_sk);
    int rc2 = rc1 == SR_E2E_OK ? sr_e2e_epoch_confirm(kc, secret, room->jid, number, hash) : rc1;
    sodium_memzero(&me, sizeof me);
    IT_CHECK(rc1 == SR_E2E_OK && rc2 == SR_E2E_OK,
             "%s's envelope does not open (%d) or confirm (%d): %s", rc->bare, rc1, rc2, x);
    room->epoch = number;
    room->epoch_roster_version = strtoull(attr(e, "roster-version"), NULL, 10);
    memcpy(room->epoch_secret, secret, sizeof secret);
    memcpy(room->epoch_hash, hash, sizeof hash);
    sodium_memzero(secret, sizeof secret);
    free(x);
    xmpp_stanza_release(st);
}

const unsigned char *it_raw_datakey_id(const it_raw *rc, const char *room_jid)
{
    for (size_t i = 0; i < rc->ndk; i++)
        if (strcmp(rc->dk[i].room, room_jid) == 0) return rc->dk[i].id;
    it_fail(__FILE__, __LINE__, "data key", "%s has published no data key in %s", rc->bare,
            room_jid);
}

void it_raw_fill_payload(const it_raw *rc, const char *room_jid, unsigned char *buf, size_t len)
{
    IT_CHECK(len >= IT_PAYLOAD_MIN, "a payload needs at least %d bytes, not %zu", IT_PAYLOAD_MIN,
             len);
    const unsigned char *id = it_raw_datakey_id(rc, room_jid);
    uint64_t rv = 0;
    for (size_t i = 0; i < rc->ndk; i++)
        if (strcmp(rc->dk[i].room, room_jid) == 0) rv = rc->dk[i].roster_version;
    buf[0] = 1;
    memcpy(buf + 1, id, 16);
    for (int i = 0; i < 8; i++) buf[17 + i] = (unsigned char)(rv >> (56 - 8 * i));
}

void it_raw_e2e_ready(it_raw *owner, it_room *room, it_raw *const *senders, size_t nsenders)
{
    it_raw_epoch(owner, room);
    for (size_t i = 0; i < nsenders; i++) it_raw_datakey(senders[i], room);
}

void it_room_init(it_room *room, const char *jid)
{
    memset(room, 0, sizeof *room);
    snprintf(room->jid, sizeof room->jid, "%s", jid);
    sr_roster_state_init(&room->state);
}

void it_room_free(it_room *room)
{
    sr_roster_state_free(&room->state);
}

sr_roster_version *it_roster_new(const it_room *room, const char *signer_bare)
{
    sr_roster_version *v = calloc(1, sizeof *v);
    IT_CHECK(v != NULL, "out of memory");
    snprintf(v->room, sizeof v->room, "%s", room->jid);
    snprintf(v->signer, sizeof v->signer, "%s", signer_bare);
    if (room->state.exists) {
        v->version = room->state.version + 1;
        memcpy(v->prev, room->state.head, sizeof v->prev);
    }
    return v;
}

void it_roster_op(sr_roster_version *v, sr_op_kind kind, const char *jid_bare, sr_role role,
                  const unsigned char *key)
{
    IT_CHECK(v->nops < SR_ROSTER_MAX_OPS, "too many ops");
    sr_roster_op *op = &v->ops[v->nops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    snprintf(op->jid, sizeof op->jid, "%s", jid_bare);
    op->role = kind == SR_OP_REMOVE ? SR_ROLE_NONE : role;
    if (kind == SR_OP_ADD) {
        if (key) {
            memcpy(op->key, key, SR_KEY_BYTES);
        } else {
            unsigned char sk[64];
            it_user_keys(jid_bare, op->key, sk);
            sodium_memzero(sk, sizeof sk);
        }
    }
}

void it_roster_sign(sr_roster_version *v)
{
    unsigned char pk[SR_KEY_BYTES], sk[64];
    it_user_keys(v->signer, pk, sk);
    bool ok = sr_roster_sign(v, sk);
    sodium_memzero(sk, sizeof sk);
    IT_CHECK(ok, "signing roster version %llu", (unsigned long long)v->version);
}

char *it_roster_xml(const sr_roster_version *v)
{
    size_t cap = 1024 + (size_t)v->nops * 400, len = 0;
    char *out = malloc(cap);
    IT_CHECK(out != NULL, "out of memory");
    char *prev = it_b64(v->prev, sizeof v->prev), *sig = it_b64(v->sig, sizeof v->sig);
    len += (size_t)snprintf(out + len, cap - len,
                            "<roster xmlns='%s' room='%s' version='%llu' prev='%s' signer='%s' "
                            "sig='%s'>",
                            IT_NS, v->room, (unsigned long long)v->version, prev, v->signer, sig);
    free(prev);
    free(sig);
    for (unsigned i = 0; i < v->nops; i++) {
        const sr_roster_op *op = &v->ops[i];
        if (op->kind == SR_OP_ADD) {
            char *k = it_b64(op->key, sizeof op->key);
            len += (size_t)snprintf(out + len, cap - len, "<add jid='%s' role='%s' key='%s'/>",
                                    op->jid, sr_role_name(op->role), k);
            free(k);
        } else if (op->kind == SR_OP_REMOVE) {
            len += (size_t)snprintf(out + len, cap - len, "<remove jid='%s'/>", op->jid);
        } else {
            len += (size_t)snprintf(out + len, cap - len, "<role jid='%s' role='%s'/>", op->jid,
                                    sr_role_name(op->role));
        }
    }
    snprintf(out + len, cap - len, "</roster>");
    return out;
}

xmpp_stanza_t *it_roster_submit(it_raw *rc, const it_room *room, const sr_roster_version *v)
{
    char *xml = it_roster_xml(v);
    xmpp_stanza_t *st;
    if (v->version == 0) {
        size_t n = strlen(xml) + 64;
        char *wrapped = malloc(n);
        IT_CHECK(wrapped != NULL, "out of memory");
        snprintf(wrapped, n, "<create xmlns='%s'>%s</create>", IT_NS, xml);
        st = it_raw_iq(rc, "set", room->jid, wrapped);
        free(wrapped);
    } else {
        st = it_raw_iq(rc, "set", room->jid, xml);
    }
    free(xml);
    return st;
}

void it_room_apply(it_room *room, const sr_roster_version *v)
{
    sr_roster_err e = sr_roster_apply(&room->state, v);
    IT_CHECK(e == SR_ROSTER_OK, "applying accepted version %llu locally: %s",
             (unsigned long long)v->version, sr_roster_err_text(e));
}

/* A result must carry <roster-head version hash/> matching our own hash. */
static void check_roster_head(xmpp_stanza_t *st, const sr_roster_version *v)
{
    xmpp_stanza_t *head = xmpp_stanza_get_child_by_name_and_ns(st, "roster-head", IT_NS);
    char *x = it_stanza_xml(st);
    IT_CHECK(head != NULL, "roster result without <roster-head/>: %s", x);
    unsigned char hash[SR_ROSTER_HASH_BYTES];
    IT_CHECK(sr_roster_hash(hash, v), "hash");
    char *h = it_b64(hash, sizeof hash);
    char ver[24];
    snprintf(ver, sizeof ver, "%llu", (unsigned long long)v->version);
    IT_CHECK(strcmp(attr(head, "version"), ver) == 0 && strcmp(attr(head, "hash"), h) == 0,
             "roster-head should be version %s hash %s: %s", ver, h, x);
    free(h);
    free(x);
}

void it_room_create(it_raw *owner, it_room *room, const char *prefix)
{
    char jid[256];
    it_new_room(jid, sizeof jid, prefix);
    it_room_init(room, jid);
    it_raw_register(owner);
    sr_roster_version *v = it_roster_new(room, owner->bare);
    it_roster_op(v, SR_OP_ADD, owner->bare, SR_ROLE_OWNER, NULL);
    it_roster_sign(v);
    xmpp_stanza_t *st = it_roster_submit(owner, room, v);
    it_check_result(st, "room creation");
    check_roster_head(st, v);
    xmpp_stanza_release(st);
    it_room_apply(room, v);
    free(v);
}

void it_room_change(it_raw *rc, it_room *room, sr_op_kind kind, const char *user, sr_role role)
{
    char bare[256];
    it_bare(bare, sizeof bare, user);
    sr_roster_version *v = it_roster_new(room, rc->bare);
    it_roster_op(v, kind, bare, role, NULL);
    it_roster_sign(v);
    xmpp_stanza_t *st = it_roster_submit(rc, room, v);
    char what[600];
    snprintf(what, sizeof what, "roster op %d on %s by %s", (int)kind, bare, rc->bare);
    it_check_result(st, what);
    check_roster_head(st, v);
    xmpp_stanza_release(st);
    it_room_apply(room, v);
    free(v);
}

typedef struct join_match {
    char occupant[600];
} join_match;

/* Our own presence (status 110) or an error from room/nick. */
static bool match_join_answer(xmpp_stanza_t *st, const void *arg)
{
    const join_match *jm = arg;
    if (!it_match_presence_from(st, jm->occupant)) return false;
    if (strcmp(attr(st, "type"), "error") == 0) return true;
    xmpp_stanza_t *x = xmpp_stanza_get_child_by_name_and_ns(st, "x", IT_NS_MUC_USER);
    for (xmpp_stanza_t *c = x ? xmpp_stanza_get_children(x) : NULL; c; c = xmpp_stanza_get_next(c))
        if (xmpp_stanza_is_tag(c) && strcmp(xmpp_stanza_get_name(c), "status") == 0 &&
            strcmp(attr(c, "code"), "110") == 0)
            return true;
    return false;
}

static xmpp_stanza_t *join_as(it_raw *rc, const char *room, const char *nick, bool keys)
{
    join_match jm;
    snprintf(jm.occupant, sizeof jm.occupant, "%s/%s", room, nick);
    it_raw_send(rc, "<presence to='%s'><x xmlns='%s'/>%s</presence>", jm.occupant, IT_NS_MUC,
                keys ? "<keys xmlns='urn:xmpp:sealroom:keys:0'/>" : "");
    xmpp_stanza_t *st =
        it_raw_expect(rc, match_join_answer, &jm, IT_TIMEOUT_MS, "answer to a join");
    if (strcmp(attr(st, "type"), "error") != 0) {
        xmpp_stanza_t *subj =
            it_raw_expect(rc, it_match_subject, room, IT_TIMEOUT_MS, "subject after a join");
        xmpp_stanza_release(subj);
    }
    return st;
}

xmpp_stanza_t *it_raw_join(it_raw *rc, const char *room, const char *nick)
{
    return join_as(rc, room, nick, false);
}

static void join_ok(it_raw *rc, const char *room, const char *nick, bool keys)
{
    xmpp_stanza_t *st = join_as(rc, room, nick, keys);
    if (strcmp(attr(st, "type"), "error") == 0) {
        char *x = it_stanza_xml(st);
        it_fail(__FILE__, __LINE__, "join", "%s could not join %s as %s: %s", rc->full, room, nick,
                x);
    }
    xmpp_stanza_release(st);
}

void it_raw_join_ok(it_raw *rc, const char *room, const char *nick)
{
    join_ok(rc, room, nick, false);
}

void it_raw_join_keys_ok(it_raw *rc, const char *room, const char *nick)
{
    join_ok(rc, room, nick, true);
}

void it_raw_leave(it_raw *rc, const char *room, const char *nick)
{
    char occ[600];
    snprintf(occ, sizeof occ, "%s/%s", room, nick);
    it_raw_send(rc, "<presence type='unavailable' to='%s'/>", occ);
    xmpp_stanza_t *st = it_raw_expect(rc, it_match_presence_from, occ, IT_TIMEOUT_MS,
                                      "unavailable presence after leaving");
    IT_CHECK(strcmp(attr(st, "type"), "unavailable") == 0, "leave answered with type '%s'",
             attr(st, "type"));
    xmpp_stanza_release(st);
}

void it_raw_send_sealed(it_raw *rc, const char *room, const char *id, const char *origin,
                        const char *sealed_b64)
{
    char oid[300] = "";
    if (origin) snprintf(oid, sizeof oid, "<origin-id xmlns='%s' id='%s'/>", IT_NS_SID, origin);
    it_raw_send(rc,
                "<message type='groupchat' to='%s' id='%s'><body>sealed</body>"
                "<sealed xmlns='%s'>%s</sealed>%s</message>",
                room, id, IT_NS, sealed_b64, oid);
}

char *it_raw_say(it_raw *rc, const char *room, const unsigned char *payload, size_t len,
                 const char *origin)
{
    char gen[40];
    if (!origin) {
        new_id(gen);
        origin = gen;
    }
    char *b64 = it_b64(payload, len);
    it_raw_send_sealed(rc, room, origin, origin, b64);
    xmpp_stanza_t *st =
        it_raw_expect(rc, it_match_reflection, origin, IT_TIMEOUT_MS, "reflection of our message");
    xmpp_stanza_t *sid = xmpp_stanza_get_child_by_name_and_ns(st, "stanza-id", IT_NS_SID);
    xmpp_stanza_t *sealed = xmpp_stanza_get_child_by_name_and_ns(st, "sealed", IT_NS);
    char *text = sealed ? xmpp_stanza_get_text(sealed) : NULL;
    char *x = it_stanza_xml(st);
    IT_CHECK(strcmp(attr(sid, "by"), room) == 0 && *attr(sid, "id"), "stanza-id by the room: %s",
             x);
    IT_CHECK(text && strcmp(text, b64) == 0, "reflected payload differs: %s", x);
    char *out = strdup(attr(sid, "id"));
    xmpp_free(rc->ctx, text);
    free(x);
    free(b64);
    xmpp_stanza_release(st);
    return out;
}

static bool match_mam_result(xmpp_stanza_t *st, const void *arg)
{
    if (strcmp(xmpp_stanza_get_name(st), "message") != 0) return false;
    xmpp_stanza_t *r = xmpp_stanza_get_child_by_name_and_ns(st, "result", IT_NS_MAM);
    return r && strcmp(attr(r, "queryid"), (const char *)arg) == 0;
}

static char *dup_text(xmpp_stanza_t *el)
{
    if (!el) return NULL;
    char *t = xmpp_stanza_get_text(el);
    char *out = strdup(t ? t : "");
    if (t) xmpp_free(xmpp_stanza_get_context(el), t);
    return out;
}

void it_raw_mam(it_raw *rc, const char *room, const char *form_and_rsm, it_mam_page *page)
{
    memset(page, 0, sizeof *page);
    char id[40], *payload;
    new_id(id);
    size_t n = strlen(form_and_rsm) + 200;
    payload = malloc(n);
    IT_CHECK(payload != NULL, "out of memory");
    snprintf(payload, n,
             "<iq type='set' to='%s' id='%s'><query xmlns='%s' queryid='%s'>%s</query></iq>", room,
             id, IT_NS_MAM, id, form_and_rsm);
    it_raw_send(rc, "%s", payload);
    free(payload);
    page->answer = it_raw_expect(rc, it_match_id, id, IT_TIMEOUT_MS, "MAM answer");
    /* Results precede the answer on the stream, so all of them are queued. */
    xmpp_stanza_t *m;
    while ((m = take_match(rc, match_mam_result, id))) {
        page->items = realloc(page->items, (page->n + 1) * sizeof *page->items);
        IT_CHECK(page->items != NULL, "out of memory");
        it_mam_item *it = &page->items[page->n++];
        memset(it, 0, sizeof *it);
        xmpp_stanza_t *res = xmpp_stanza_get_child_by_name_and_ns(m, "result", IT_NS_MAM);
        xmpp_stanza_t *fwd = xmpp_stanza_get_child_by_name(res, "forwarded");
        xmpp_stanza_t *delay = fwd ? xmpp_stanza_get_child_by_name(fwd, "delay") : NULL;
        xmpp_stanza_t *inner = fwd ? xmpp_stanza_get_child_by_name(fwd, "message") : NULL;
        char *x = it_stanza_xml(m);
        IT_CHECK(strcmp(attr(m, "from"), room) == 0 && inner && delay,
                 "MAM result must come from the room with forwarded/delay/message: %s", x);
        free(x);
        it->id = strdup(attr(res, "id"));
        it->stamp = strdup(attr(delay, "stamp"));
        it->from = strdup(attr(inner, "from"));
        it->sealed = dup_text(xmpp_stanza_get_child_by_name_and_ns(inner, "sealed", IT_NS));
        xmpp_stanza_t *o = xmpp_stanza_get_child_by_name_and_ns(inner, "origin-id", IT_NS_SID);
        it->origin = o ? strdup(attr(o, "id")) : NULL;
        xmpp_stanza_release(m);
    }
    xmpp_stanza_t *fin = xmpp_stanza_get_child_by_name_and_ns(page->answer, "fin", IT_NS_MAM);
    if (fin) {
        page->complete = strcmp(attr(fin, "complete"), "true") == 0;
        xmpp_stanza_t *set = xmpp_stanza_get_child_by_name_and_ns(fin, "set", IT_NS_RSM);
        if (set) {
            page->first = dup_text(xmpp_stanza_get_child_by_name(set, "first"));
            page->last = dup_text(xmpp_stanza_get_child_by_name(set, "last"));
        }
    }
}

void it_mam_page_free(it_mam_page *page)
{
    for (size_t i = 0; i < page->n; i++) {
        free(page->items[i].id);
        free(page->items[i].stamp);
        free(page->items[i].from);
        free(page->items[i].sealed);
        free(page->items[i].origin);
    }
    free(page->items);
    free(page->first);
    free(page->last);
    if (page->answer) xmpp_stanza_release(page->answer);
    memset(page, 0, sizeof *page);
}

/* ------------------------------------------------------------- PostgreSQL */

static PGconn *pg_conn(void)
{
    if (pg && PQstatus(pg) == CONNECTION_OK) return pg;
    if (pg) PQfinish(pg);
    pg = PQconnectdb(env.pg);
    IT_CHECK(PQstatus(pg) == CONNECTION_OK, "PostgreSQL (%s): %s", env.pg, PQerrorMessage(pg));
    return pg;
}

static PGresult *pg_query(const char *sql, int n, const char *const *params)
{
    PGresult *res = PQexecParams(pg_conn(), sql, n, NULL, params, NULL, NULL, 0);
    IT_CHECK(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(pg));
    return res;
}

long it_pg_count(const char *table, const char *room_jid)
{
    static const char *const allowed[] = {"messages", "roster_versions", "members", "occupants",
                                          "epochs",   "envelopes",       "datakeys",
                                          "archive_tokens", NULL};
    bool ok = false;
    for (int i = 0; allowed[i]; i++)
        ok |= strcmp(allowed[i], table) == 0;
    IT_CHECK(ok, "unknown table %s", table);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM %s t JOIN rooms r USING (room_id) WHERE r.name = $1", table);
    const char *p[1] = {room_jid};
    PGresult *res = pg_query(sql, 1, p);
    long n = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    return n;
}

long it_pg_count_origin(const char *room_jid, const char *sender_bare, const char *origin)
{
    const char *p[3] = {room_jid, sender_bare, origin};
    PGresult *res = pg_query("SELECT count(*) FROM messages m JOIN rooms r USING (room_id) "
                             "WHERE r.name = $1 AND m.sender = $2 AND m.origin_id = $3",
                             3, p);
    long n = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    return n;
}

long long it_pg_seq_of_origin(const char *room_jid, const char *sender_bare, const char *origin)
{
    const char *p[3] = {room_jid, sender_bare, origin};
    PGresult *res = pg_query("SELECT m.seq FROM messages m JOIN rooms r USING (room_id) "
                             "WHERE r.name = $1 AND m.sender = $2 AND m.origin_id = $3",
                             3, p);
    long long seq = PQntuples(res) == 1 ? atoll(PQgetvalue(res, 0, 0)) : -1;
    PQclear(res);
    return seq;
}

unsigned char *it_pg_payload(const char *room_jid, long long seq, size_t *len)
{
    char s[24];
    snprintf(s, sizeof s, "%lld", seq);
    const char *p[2] = {room_jid, s};
    PGresult *res = pg_query("SELECT encode(m.payload, 'base64') FROM messages m JOIN rooms r "
                             "USING (room_id) WHERE r.name = $1 AND m.seq = $2",
                             2, p);
    unsigned char *out = NULL;
    if (PQntuples(res) == 1) {
        /* PostgreSQL wraps base64 output at 76 characters. */
        const char *b = PQgetvalue(res, 0, 0);
        char *clean = malloc(strlen(b) + 1);
        IT_CHECK(clean != NULL, "out of memory");
        size_t k = 0;
        for (const char *c = b; *c; c++)
            if (*c != '\n' && *c != '\r') clean[k++] = *c;
        clean[k] = 0;
        size_t max = sr_b64_decoded_max(k) + 1;
        out = malloc(max);
        IT_CHECK(out && sr_b64_decode(out, max, len, clean, k), "stored payload decode");
        free(clean);
    }
    PQclear(res);
    return out;
}

bool it_pg_has_identity(const char *bare)
{
    const char *p[1] = {bare};
    PGresult *res = pg_query("SELECT 1 FROM identities WHERE jid = $1", 1, p);
    bool has = PQntuples(res) == 1;
    PQclear(res);
    return has;
}

it_counts it_pg_counts(const char *room_jid)
{
    it_counts c = {it_pg_count("messages", room_jid), it_pg_count("roster_versions", room_jid),
                   it_pg_count("members", room_jid)};
    return c;
}

void it_check_counts_at(const char *file, int line, const char *room_jid, it_counts before,
                        const char *what)
{
    it_counts now = it_pg_counts(room_jid);
    if (now.messages != before.messages || now.roster_versions != before.roster_versions ||
        now.members != before.members)
        it_fail(file, line, what,
                "database changed for %s: messages %ld -> %ld, roster_versions %ld -> %ld, "
                "members %ld -> %ld",
                room_jid, before.messages, now.messages, before.roster_versions,
                now.roster_versions, before.members, now.members);
}

void it_wait_component(unsigned timeout_ms)
{
    uint64_t end = it_mono_ms() + timeout_ms;
    const char *user = "oscar";
    it_raw *rc = NULL;
    while (it_mono_ms() < end) {
        if (!rc || !it_raw_connected(rc)) {
            it_raw_free(rc);
            rc = raw_try_connect(user, 3000);
            if (!rc) {
                it_sleep_ms(200);
                continue;
            }
        }
        char id[40];
        new_id(id);
        it_raw_send(rc, "<iq type='get' to='%s' id='%s'><ping xmlns='urn:xmpp:ping'/></iq>",
                    env.service, id);
        xmpp_stanza_t *st = it_raw_wait(rc, it_match_id, id, 2000);
        bool up = st && strcmp(attr(st, "type"), "result") == 0;
        if (st) xmpp_stanza_release(st);
        if (up) {
            it_raw_free(rc);
            return;
        }
        it_sleep_ms(200);
    }
    it_raw_free(rc);
    it_fail(__FILE__, __LINE__, "component reachable", "%s did not answer a ping within %u ms",
            env.service, timeout_ms);
}
