/* The libsealroom half of the integration-test helpers (see common.h):
 * clients that connect with the library under the users' deterministic
 * identities and record every event they deliver, so tests can wait for and
 * inspect messages, presences and request completions. Kept apart from
 * common.c so the raw-stanza tests build without the library. */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

sealroom_identity *it_user_identity(const char *bare)
{
    unsigned char pk[SR_KEY_BYTES], sk[64];
    it_user_keys(bare, pk, sk);
    sealroom_identity *id = NULL;
    /* The library's secret is the Ed25519 seed, the first half of sk. */
    int rc = sealroom_identity_import(&id, sk, crypto_sign_SEEDBYTES);
    sodium_memzero(sk, sizeof sk);
    IT_CHECK(rc == SEALROOM_OK && id, "identity import for %s: %d", bare, rc);
    unsigned char got[SR_KEY_BYTES];
    IT_CHECK(sealroom_identity_public_key(got, sizeof got, id) == SEALROOM_OK &&
                 memcmp(got, pk, sizeof pk) == 0,
             "the library derives another public key from the same seed for %s", bare);
    return id;
}

/* ------------------------------------------------------ libsealroom client */

/* Every connected client. Waiting on one runs the others too, as real
 * clients run side by side: a key-distribution run needs every member
 * session present to answer its rounds. */
#define IT_LIB_MAX 256
static it_lib *live_libs[IT_LIB_MAX];

void it_lib_track(it_lib *l)
{
    for (size_t i = 0; i < IT_LIB_MAX; i++)
        if (!live_libs[i]) {
            live_libs[i] = l;
            return;
        }
    IT_CHECK(false, "more than %d library clients", IT_LIB_MAX);
}

static void untrack(const it_lib *l)
{
    for (size_t i = 0; i < IT_LIB_MAX; i++)
        if (live_libs[i] == l) live_libs[i] = NULL;
}

void it_lib_pump_others(const it_lib *self)
{
    for (size_t i = 0; i < IT_LIB_MAX; i++)
        if (live_libs[i] && live_libs[i] != self && live_libs[i]->client)
            (void)sealroom_client_run(live_libs[i]->client, 0);
}

static char *sdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

void it_lib_record(void *user, const sealroom_event *ev)
{
    it_lib *l = user;
    if (l->nev == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->ev = realloc(l->ev, l->cap * sizeof *l->ev);
        IT_CHECK(l->ev != NULL, "out of memory");
    }
    it_ev *e = &l->ev[l->nev++];
    memset(e, 0, sizeof *e);
    e->type = sealroom_event_get_type(ev);
    e->request_id = sealroom_event_request_id(ev);
    e->kind = sealroom_event_request_kind(ev);
    e->result = sealroom_event_result(ev);
    e->error_text = sdup(sealroom_event_error_text(ev));
    e->room = sdup(sealroom_event_room(ev));
    e->nick = sdup(sealroom_event_nick(ev));
    e->jid = sdup(sealroom_event_jid(ev));
    e->stanza_id = sdup(sealroom_event_stanza_id(ev));
    e->origin_id = sdup(sealroom_event_origin_id(ev));
    size_t n = 0;
    const unsigned char *p = sealroom_event_payload(ev, &n);
    if (p) {
        e->payload = malloc(n ? n : 1);
        IT_CHECK(e->payload != NULL, "out of memory");
        memcpy(e->payload, p, n);
        e->payload_len = n;
    }
    e->ts = sealroom_event_timestamp_ms(ev);
    e->history = sealroom_event_is_history(ev);
    e->self = sealroom_event_is_self(ev);
    e->first = sdup(sealroom_event_history_first(ev));
    e->last = sdup(sealroom_event_history_last(ev));
    e->complete = sealroom_event_history_complete(ev);
    e->roster_version = sealroom_event_roster_version(ev);
    e->epoch = sealroom_event_epoch(ev);
    const unsigned char *pk = sealroom_event_public_key(ev);
    if (pk) {
        e->has_pk = true;
        memcpy(e->pk, pk, sizeof e->pk);
    }
    const char *f = sealroom_event_fingerprint(ev), *pf = sealroom_event_previous_fingerprint(ev);
    snprintf(e->fpr, sizeof e->fpr, "%s", f ? f : "");
    snprintf(e->prev_fpr, sizeof e->prev_fpr, "%s", pf ? pf : "");
}

it_lib *it_lib_connect(const char *user)
{
    it_lib *l = calloc(1, sizeof *l);
    IT_CHECK(l != NULL, "out of memory");
    snprintf(l->user, sizeof l->user, "%s", user);
    it_bare(l->bare, sizeof l->bare, user);
    char res[17], jid[300];
    it_random_hex(res, 8);
    snprintf(jid, sizeof jid, "%s/lib-%s", l->bare, res);
    const it_env *e = it_env_get();
    int rc = sealroom_client_connect(&l->client, jid, e->password, e->host, e->port, e->service,
                                     IT_TIMEOUT_MS);
    IT_CHECK(rc == SEALROOM_OK && l->client, "libsealroom connect as %s: %d (%s)", jid, rc,
             sealroom_strerror(rc));
    l->id = it_user_identity(l->bare);
    IT_OK(sealroom_client_set_identity(l->client, l->id));
    sealroom_client_set_event_handler(l->client, it_lib_record, l);
    it_lib_track(l);
    return l;
}

static void ev_free(it_ev *e)
{
    free(e->error_text);
    free(e->room);
    free(e->nick);
    free(e->jid);
    free(e->stanza_id);
    free(e->origin_id);
    free(e->payload);
    free(e->first);
    free(e->last);
}

void it_lib_clear(it_lib *l)
{
    for (size_t i = 0; i < l->nev; i++)
        ev_free(&l->ev[i]);
    l->nev = 0;
}

void it_lib_free(it_lib *l)
{
    if (!l) return;
    untrack(l);
    sealroom_client_free(l->client);
    sealroom_identity_free(l->id);
    it_lib_clear(l);
    free(l->ev);
    free(l);
}

sealroom_ctx *it_lib_ctx(it_lib *l)
{
    return sealroom_client_ctx(l->client);
}

int it_lib_wait(it_lib *l, uint32_t req)
{
    uint64_t end = it_mono_ms() + IT_TIMEOUT_MS;
    for (;;) {
        const it_ev *d = it_lib_done(l, req);
        if (d) return d->result;
        if (it_mono_ms() >= end) return SEALROOM_E_TIMEOUT;
        if (sealroom_client_run(l->client, 2) != SEALROOM_OK) {
            d = it_lib_done(l, req);
            return d ? d->result : SEALROOM_E_NETWORK;
        }
        it_lib_pump_others(l);
    }
}

void it_lib_wait_ok_at(const char *file, int line, it_lib *l, uint32_t req, const char *what)
{
    int rc = it_lib_wait(l, req);
    if (rc != SEALROOM_OK) {
        const it_ev *d = it_lib_done(l, req);
        it_fail(file, line, what, "%s: request %u failed: %d (%s): %s", l->bare, req, rc,
                sealroom_strerror(rc),
                d && d->error_text ? d->error_text : sealroom_ctx_last_error(it_lib_ctx(l)));
    }
}

const it_ev *it_lib_done(const it_lib *l, uint32_t req)
{
    for (size_t i = 0; i < l->nev; i++)
        if (l->ev[i].type == SEALROOM_EVENT_REQUEST_DONE && l->ev[i].request_id == req)
            return &l->ev[i];
    return NULL;
}

bool it_lib_until(it_lib *l, bool (*pred)(it_lib *l, const void *arg), const void *arg,
                  unsigned timeout_ms)
{
    uint64_t end = it_mono_ms() + timeout_ms;
    for (;;) {
        if (pred(l, arg)) return true;
        if (it_mono_ms() >= end) return false;
        sealroom_client_run(l->client, 5);
        it_lib_pump_others(l);
    }
}

static bool live_in(const it_ev *e, const char *room)
{
    return e->type == SEALROOM_EVENT_MESSAGE && !e->history && e->room &&
           strcmp(e->room, room) == 0;
}

size_t it_lib_live_count(const it_lib *l, const char *room)
{
    size_t n = 0;
    for (size_t i = 0; i < l->nev; i++)
        n += live_in(&l->ev[i], room);
    return n;
}

const it_ev *it_lib_live(const it_lib *l, const char *room, size_t index)
{
    for (size_t i = 0; i < l->nev; i++)
        if (live_in(&l->ev[i], room) && index-- == 0) return &l->ev[i];
    return NULL;
}

const it_ev *it_lib_live_by_origin(const it_lib *l, const char *room, const char *origin)
{
    for (size_t i = 0; i < l->nev; i++)
        if (live_in(&l->ev[i], room) && l->ev[i].origin_id &&
            strcmp(l->ev[i].origin_id, origin) == 0)
            return &l->ev[i];
    return NULL;
}

bool it_lib_saw_join(const it_lib *l, const char *room, const char *nick)
{
    for (size_t i = 0; i < l->nev; i++) {
        const it_ev *e = &l->ev[i];
        if (e->type == SEALROOM_EVENT_OCCUPANT_JOINED && !e->self && e->room && e->nick &&
            strcmp(e->room, room) == 0 && strcmp(e->nick, nick) == 0)
            return true;
    }
    return false;
}

void it_lib_register(it_lib *l)
{
    uint32_t req = 0;
    IT_OK(sealroom_identity_register(it_lib_ctx(l), &req));
    it_lib_wait_ok(l, req, "identity registration");
}

void it_lib_create(it_lib *l, const char *room)
{
    uint32_t req = 0;
    IT_OK(sealroom_room_create(it_lib_ctx(l), &req, room));
    it_lib_wait_ok(l, req, "room creation");
}

void it_lib_add(it_lib *l, const char *room, const char *user, sealroom_role role)
{
    char bare[256];
    it_bare(bare, sizeof bare, user);
    uint32_t req = 0;
    IT_OK(sealroom_room_add_member(it_lib_ctx(l), &req, room, bare, role, NULL));
    it_lib_wait_ok(l, req, "adding a member");
}

void it_lib_join(it_lib *l, const char *room, const char *nick)
{
    uint32_t req = 0;
    IT_OK(sealroom_room_join(it_lib_ctx(l), &req, room, nick));
    it_lib_wait_ok(l, req, "joining");
}

char *it_lib_say(it_lib *l, const char *room, const unsigned char *p, size_t n, char *origin_out)
{
    uint32_t req = 0;
    char origin[72];
    IT_OK(sealroom_room_send(it_lib_ctx(l), &req, origin, sizeof origin, room, p, n));
    it_lib_wait_ok(l, req, "sending");
    const it_ev *d = it_lib_done(l, req);
    IT_CHECK(d && d->stanza_id && *d->stanza_id, "send completion without a stanza-id");
    IT_CHECK(d->origin_id && strcmp(d->origin_id, origin) == 0,
             "send completion carries origin-id '%s', the call returned '%s'",
             d->origin_id ? d->origin_id : "(null)", origin);
    if (origin_out) strcpy(origin_out, origin);
    return strdup(d->stanza_id);
}
