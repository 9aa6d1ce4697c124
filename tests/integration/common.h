/* Shared helpers of the integration tests, which drive the real stack
 * (PostgreSQL + Prosody or ejabberd + sealroomd) that contrib/sealroom-dev
 * starts: the SEALROOM_TEST_* environment, assertions, deterministic test
 * identities, a raw libstrophe client for exact stanzas (including broken
 * ones), signed roster versions built with the shared protocol code, checks
 * of what PostgreSQL holds, and libsealroom clients that record events.
 *
 * Every test is a program that exits 0 on success, 1 on failure and 77 when
 * the environment names no stack (ctest SKIP_RETURN_CODE). A failed check
 * prints file, line and detail and exits at once: the stack is shared, but
 * everything a test creates lives in rooms with random names, so nothing
 * needs undoing. */
#ifndef SEALROOM_IT_COMMON_H
#define SEALROOM_IT_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sealroom/sealroom.h>
#include <strophe.h>

#include "roster.h"

#define IT_SKIP 77
#define IT_TIMEOUT_MS 15000u /* one request or one expected stanza */
#define IT_NS "urn:xmpp:sealroom:0"
#define IT_NS_SID "urn:xmpp:sid:0"
#define IT_NS_MAM "urn:xmpp:mam:2"
#define IT_NS_RSM "http://jabber.org/protocol/rsm"
#define IT_NS_MUC "http://jabber.org/protocol/muc"
#define IT_NS_MUC_USER "http://jabber.org/protocol/muc#user"
#define IT_NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

/* ---- environment ---- */

typedef struct it_env {
    const char *server; /* prosody | ejabberd */
    const char *host;
    unsigned short port;
    const char *domain;
    const char *service;
    const char *pg;
    const char *password;
    const char *sealroomd_restart;
    const char *xmpp_restart;
    const char *sealroomd_log;
    const char *run_dir;
} it_env;

/* Read the environment; exits 77 when SEALROOM_TEST_SERVER is unset, 1 when
 * another variable a test needs is missing. Call first in main(). */
const it_env *it_init(const char *test_name);
const it_env *it_env_get(void);
bool it_is_ejabberd(void);

/* ---- assertions and logging ---- */

__attribute__((noreturn, format(printf, 4, 5))) void
it_fail(const char *file, int line, const char *cond, const char *fmt, ...);
#define IT_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) it_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                              \
    } while (0)
/* A libsealroom call that must succeed. */
#define IT_OK(expr)                                                                                \
    do {                                                                                           \
        int it_rc_ = (expr);                                                                       \
        if (it_rc_ != SEALROOM_OK)                                                                 \
            it_fail(__FILE__, __LINE__, #expr, "returned %d (%s)", it_rc_,                         \
                    sealroom_strerror(it_rc_));                                                    \
    } while (0)

__attribute__((format(printf, 1, 2))) void it_log(const char *fmt, ...);

/* Wall clock (the server's clock too: one machine) and monotonic ms. */
int64_t it_wall_ms(void);
uint64_t it_mono_ms(void);
void it_sleep_ms(unsigned ms);
/* XEP-0082 "YYYY-MM-DDTHH:MM:SS.mmmZ". */
void it_format_stamp(char out[32], int64_t unix_ms);

/* "user@domain" for a user name; out should hold 256 bytes. */
void it_bare(char *out, size_t outlen, const char *user);
/* A fresh room JID "prefix-<random>@service" (out >= 256 bytes). */
void it_new_room(char *out, size_t outlen, const char *prefix);
/* n random bytes; a random lowercase hex id of 2n characters. */
void it_random(unsigned char *out, size_t n);
void it_random_hex(char *out, size_t nbytes);
/* Base64 (malloc'd, caller frees). */
char *it_b64(const unsigned char *in, size_t len);

/* Run a shell command from the environment (restart helpers); fails the
 * test when it does not exit 0. */
void it_run_command(const char *what, const char *cmd);

/* ---- deterministic identities ----
 * Every test derives a user's identity key from its bare JID, so the keys
 * registered by different tests (and by re-runs against the same database)
 * agree: the component allows one key per JID. */
void it_user_keys(const char *bare, unsigned char pk[SR_KEY_BYTES], unsigned char sk[64]);
sealroom_identity *it_user_identity(const char *bare);

/* ---- the raw client ---- */

typedef struct it_raw it_raw;

/* Connect user (a name from SEALROOM_TEST_USERS) with a random resource and
 * send initial presence. Fails the test on error. */
it_raw *it_raw_connect(const char *user);
void it_raw_free(it_raw *rc);
const char *it_raw_full(const it_raw *rc); /* bound full JID */
const char *it_raw_bare(const it_raw *rc);
const char *it_raw_user(const it_raw *rc);
bool it_raw_connected(const it_raw *rc);

/* Send a string as is (it may be a deliberately broken stanza). */
__attribute__((format(printf, 2, 3))) void it_raw_send(it_raw *rc, const char *fmt, ...);
/* Pump the connection for ms milliseconds (stanzas are queued). */
void it_raw_pump(it_raw *rc, unsigned ms);

typedef bool (*it_match_fn)(xmpp_stanza_t *st, const void *arg);
/* First queued or arriving stanza that matches, removed from the queue
 * (caller releases), or NULL after timeout_ms. */
xmpp_stanza_t *it_raw_wait(it_raw *rc, it_match_fn match, const void *arg, unsigned timeout_ms);
/* As it_raw_wait, failing the test on timeout with `what` in the message. */
xmpp_stanza_t *it_raw_expect(it_raw *rc, it_match_fn match, const void *arg, unsigned timeout_ms,
                             const char *what);
/* True if a matching stanza is queued or arrives within ms (it is removed). */
bool it_raw_seen(it_raw *rc, it_match_fn match, const void *arg, unsigned ms);
/* Drop everything queued. */
void it_raw_clear(it_raw *rc);

/* Matchers. it_match_id: iq/message/presence with this id (arg: const char *). */
bool it_match_id(xmpp_stanza_t *st, const void *arg);
/* <message type=groupchat> carrying <stanza-id/> whose <origin-id/> is arg. */
bool it_match_reflection(xmpp_stanza_t *st, const void *arg);
/* Any presence from the full occupant JID arg. */
bool it_match_presence_from(xmpp_stanza_t *st, const void *arg);
/* The room's subject message from the bare room JID arg (end of a join). */
bool it_match_subject(xmpp_stanza_t *st, const void *arg);
/* Any stanza from JID arg. */
bool it_match_from(xmpp_stanza_t *st, const void *arg);

/* Send an iq with a fresh id (payload_xml is inserted as its child) and wait
 * for the answer with that id (result or error; caller releases). */
xmpp_stanza_t *it_raw_iq(it_raw *rc, const char *type, const char *to, const char *payload_xml);
/* it_raw_iq that must return type='result'. */
xmpp_stanza_t *it_raw_iq_ok(it_raw *rc, const char *type, const char *to, const char *payload_xml,
                            const char *what);

/* Text of a stanza for diagnostics (malloc'd). */
char *it_stanza_xml(xmpp_stanza_t *st);
/* Assert st is type='error' with <error type=etype> holding the defined
 * condition cond and, if app is non-NULL, <app xmlns=urn:xmpp:sealroom:0/>;
 * if app is NULL, no Sealroom application condition may be present. A NULL
 * etype is not checked. Releases nothing. */
void it_check_error_at(const char *file, int line, xmpp_stanza_t *st, const char *etype,
                       const char *cond, const char *app, const char *what);
#define it_check_error(st, etype, cond, app, what)                                                 \
    it_check_error_at(__FILE__, __LINE__, st, etype, cond, app, what)
void it_check_result_at(const char *file, int line, xmpp_stanza_t *st, const char *what);
#define it_check_result(st, what) it_check_result_at(__FILE__, __LINE__, st, what)

/* ---- Sealroom over the raw client ---- */

/* Register the user's deterministic identity with its bundle (the X25519
 * key derived from the same seed as libsealroom does, and the bundle
 * signature); must succeed. */
void it_raw_register(it_raw *rc);
/* The <identity/> registration element for bare (its deterministic keys),
 * for tests that tamper with it (malloc'd). */
char *it_identity_xml(const char *bare);
/* The user's X25519 box key (what the bundle publishes). */
void it_user_box_pk(const char *bare, unsigned char pk[32]);

/* A room as the tests track it: its JID, the verified roster state the
 * next version must follow, and the epoch the tests last started in it. */
typedef struct it_room {
    char jid[256];
    sr_roster_state state;
    uint64_t epoch;                 /* 0: none started */
    uint64_t epoch_roster_version;  /* the roster version it was started at */
    unsigned char epoch_secret[32]; /* S_e, to derive k_e for data-key headers */
    unsigned char epoch_hash[32];   /* the roster head it was bound to */
} it_room;

void it_room_init(it_room *room, const char *jid);
void it_room_free(it_room *room);

/* A new (heap) version following room's state, signed later by signer. */
sr_roster_version *it_roster_new(const it_room *room, const char *signer_bare);
/* Append an op; for add, key NULL means the JID's deterministic key. */
void it_roster_op(sr_roster_version *v, sr_op_kind kind, const char *jid_bare, sr_role role,
                  const unsigned char *key);
/* Sign with the deterministic key of v->signer. */
void it_roster_sign(sr_roster_version *v);
/* <roster xmlns=NS .../> (malloc'd). */
char *it_roster_xml(const sr_roster_version *v);
/* Submit v (create when v->version == 0) from rc; returns the answer. */
xmpp_stanza_t *it_roster_submit(it_raw *rc, const it_room *room, const sr_roster_version *v);
/* Apply a version the component accepted to the tracked state. */
void it_room_apply(it_room *room, const sr_roster_version *v);

/* Create a fresh room owned by owner's user (rc), registering rc's identity. */
void it_room_create(it_raw *owner, it_room *room, const char *prefix);
/* One op signed by rc's user that must be accepted (identity of the target
 * must be registered for add). */
void it_room_change(it_raw *rc, it_room *room, sr_op_kind kind, const char *user, sr_role role);

/* ---- end-to-end setup over the raw client (e2e spec §4-§6) ----
 * The component stores only payloads that name a data key the sender
 * published for the room's current, fresh epoch. */

/* One envelope (base64, malloc'd): secret sealed to recipient's box key and
 * signed by sealer for room, epoch number and roster hash. */
char *it_envelope_b64(const char *room_jid, uint64_t number, const unsigned char hash[32],
                      const char *sealer_bare, const char *recipient_bare,
                      const unsigned char secret[32]);
/* <epoch number roster-version kc><envelope/>…</epoch> for every member of
 * room->state, sealed by sealer_bare, bound to room->state's head
 * (malloc'd). kc is derived from secret. */
char *it_epoch_xml(const it_room *room, const char *sealer_bare, uint64_t number,
                   const unsigned char secret[32]);
/* Start epoch room->epoch + 1 as rc's user (every member must have
 * registered its bundle); must succeed; updates room. */
void it_raw_epoch(it_raw *rc, it_room *room);
/* Fetch room's current epoch as rc's user, open its envelope (the sealer's
 * key is the sealer's deterministic test key) and check KC_e; sets
 * room->epoch and its secret. For rooms whose epochs libsealroom starts. */
void it_raw_fetch_epoch(it_raw *rc, it_room *room);
/* Publish a fresh data key of rc's user for room's current epoch; must
 * succeed. rc remembers it for it_raw_fill_payload. */
void it_raw_datakey(it_raw *rc, const it_room *room);
/* The id of rc's current data key for room (fails the test if none). */
const unsigned char *it_raw_datakey_id(const it_raw *rc, const char *room_jid);
/* Overwrite the first 25 bytes of buf (len >= IT_PAYLOAD_MIN) with the e2e
 * message header naming rc's data key in room: 01 ‖ dkid ‖ roster version. */
#define IT_PAYLOAD_MIN 129
void it_raw_fill_payload(const it_raw *rc, const char *room_jid, unsigned char *buf, size_t len);
/* Epoch by owner, then a data key for each sender. */
void it_raw_e2e_ready(it_raw *owner, it_room *room, it_raw *const *senders, size_t nsenders);

/* Join room as nick: returns the answer to the join (self presence with
 * status 110, or the error), after the subject when it succeeded. */
xmpp_stanza_t *it_raw_join(it_raw *rc, const char *room, const char *nick);
void it_raw_join_ok(it_raw *rc, const char *room, const char *nick);
/* Join announcing that this session takes part in key-distribution runs
 * (<keys xmlns='urn:xmpp:sealroom:keys:0'/>), as libsealroom does. */
void it_raw_join_keys_ok(it_raw *rc, const char *room, const char *nick);
void it_raw_leave(it_raw *rc, const char *room, const char *nick);
/* Send a groupchat message with a sealed payload (b64 text as given) and
 * origin-id (NULL: none). */
void it_raw_send_sealed(it_raw *rc, const char *room, const char *id, const char *origin,
                        const char *sealed_b64);
/* Send payload bytes and wait for the reflection; returns its stanza-id
 * (malloc'd). */
char *it_raw_say(it_raw *rc, const char *room, const unsigned char *payload, size_t len,
                 const char *origin);

/* One MAM page as received over the raw client. */
typedef struct it_mam_item {
    char *id;     /* <result id/>, the archive id */
    char *stamp;  /* <delay stamp/> */
    char *from;   /* the inner message's from (room/nick) */
    char *sealed; /* the inner <sealed/> text (base64) */
    char *origin; /* the inner origin-id or NULL */
} it_mam_item;

typedef struct it_mam_page {
    xmpp_stanza_t *answer; /* the iq result or error */
    size_t n;
    it_mam_item *items;
    char *first, *last; /* from <fin><set/>, NULL when absent */
    bool complete;
} it_mam_page;

/* Query room's archive; form_and_rsm is inserted into <query/> as is. */
void it_raw_mam(it_raw *rc, const char *room, const char *form_and_rsm, it_mam_page *page);
void it_mam_page_free(it_mam_page *page);

/* ---- PostgreSQL ---- */

/* Rows of table (messages, roster_versions, members, occupants, epochs,
 * envelopes, datakeys) for the room
 * named room_jid; 0 when the room does not exist. */
long it_pg_count(const char *table, const char *room_jid);
/* Rows of messages of room with this sender bare JID and origin-id. */
long it_pg_count_origin(const char *room_jid, const char *sender_bare, const char *origin);
/* The seq of that message, or -1. */
long long it_pg_seq_of_origin(const char *room_jid, const char *sender_bare, const char *origin);
/* The stored payload of seq in room (malloc'd, *len set), NULL if absent. */
unsigned char *it_pg_payload(const char *room_jid, long long seq, size_t *len);
/* Does the identities table hold a key for bare? */
bool it_pg_has_identity(const char *bare);

typedef struct it_counts {
    long messages, roster_versions, members;
} it_counts;
it_counts it_pg_counts(const char *room_jid);
void it_check_counts_at(const char *file, int line, const char *room_jid, it_counts before,
                        const char *what);
/* The room's message, roster and member row counts are as in before. */
#define it_check_counts(room, before, what)                                                        \
    it_check_counts_at(__FILE__, __LINE__, room, before, what)

/* Ping the service until it answers (the component is attached), failing
 * after timeout_ms. */
void it_wait_component(unsigned timeout_ms);

/* ---- libsealroom clients ---- */

typedef struct it_ev {
    sealroom_event_type type;
    uint32_t request_id;
    int kind, result;
    char *error_text, *room, *nick, *jid, *stanza_id, *origin_id;
    unsigned char *payload;
    size_t payload_len;
    int64_t ts;
    int history, self;
    char *first, *last;
    int complete;
    uint64_t roster_version;
    uint64_t epoch;
    bool has_pk;
    unsigned char pk[32];                     /* sealroom_event_public_key */
    char fpr[SEALROOM_FINGERPRINTBYTES];      /* sealroom_event_fingerprint, "" if none */
    char prev_fpr[SEALROOM_FINGERPRINTBYTES]; /* sealroom_event_previous_fingerprint */
} it_ev;

typedef struct it_lib {
    sealroom_client *client;
    sealroom_identity *id;
    char user[64];
    char bare[256];
    it_ev *ev;
    size_t nev, cap;
} it_lib;

/* Connect user with the library, its deterministic identity set. */
it_lib *it_lib_connect(const char *user);
void it_lib_free(it_lib *l);
sealroom_ctx *it_lib_ctx(it_lib *l);
/* Wait for request id (started with an IT_OK'ed request call); returns its
 * result code. */
int it_lib_wait(it_lib *l, uint32_t req);
/* Wait, failing unless the request succeeded. */
void it_lib_wait_ok_at(const char *file, int line, it_lib *l, uint32_t req, const char *what);
#define it_lib_wait_ok(l, req, what) it_lib_wait_ok_at(__FILE__, __LINE__, l, req, what)
/* The REQUEST_DONE event of req, or NULL. */
const it_ev *it_lib_done(const it_lib *l, uint32_t req);
/* Run the loop until pred(l, arg) holds; false on timeout. */
bool it_lib_until(it_lib *l, bool (*pred)(it_lib *l, const void *arg), const void *arg,
                  unsigned timeout_ms);
/* Live (non-history) MESSAGE events in room, in arrival order. */
size_t it_lib_live_count(const it_lib *l, const char *room);
const it_ev *it_lib_live(const it_lib *l, const char *room, size_t index);
/* The live MESSAGE event with this origin-id in room, or NULL. */
const it_ev *it_lib_live_by_origin(const it_lib *l, const char *room, const char *origin);
/* Clients made by it_lib_connect and e2e_connect are tracked: while a test
 * waits on one (it_lib_wait, it_lib_until) the others run too, as real
 * clients would. it_lib_track adds a client made otherwise. */
void it_lib_track(it_lib *l);
void it_lib_pump_others(const it_lib *self);
/* Record one libsealroom event into l (user = the it_lib): the on_event
 * handler it_lib_connect installs, for tests that drive a ctx themselves. */
void it_lib_record(void *user, const sealroom_event *ev);
/* Forget all recorded events. */
void it_lib_clear(it_lib *l);
/* OCCUPANT_JOINED seen for nick in room (not self)? */
bool it_lib_saw_join(const it_lib *l, const char *room, const char *nick);

/* Register identity, and (the owner) create room; each must succeed. */
void it_lib_register(it_lib *l);
void it_lib_create(it_lib *l, const char *room);
void it_lib_add(it_lib *l, const char *room, const char *user, sealroom_role role);
void it_lib_join(it_lib *l, const char *room, const char *nick);
/* Send and wait for the completion; returns the stanza-id (malloc'd).
 * origin_out (NULL or 72 bytes) receives the message's origin-id. */
char *it_lib_say(it_lib *l, const char *room, const unsigned char *p, size_t n, char *origin_out);

#endif
