/* libsealroom internals shared by the core (ctx.c, requests.c, rooms.c),
 * the roster XML codec, the libstrophe adapter and the blocking client.
 * Nothing here is exported. */
#ifndef SEALROOM_INTERNAL_H
#define SEALROOM_INTERNAL_H

#include <sealroom/sealroom.h>

#include <stdbool.h>
#include <stdint.h>
#include <strophe.h>

#include "proto/roster.h"

#define SR_NS "urn:xmpp:sealroom:0"
#define SR_NS_SID "urn:xmpp:sid:0"
#define SR_NS_MUC "http://jabber.org/protocol/muc"
#define SR_NS_MUC_USER "http://jabber.org/protocol/muc#user"
#define SR_NS_MAM "urn:xmpp:mam:2"
#define SR_NS_RSM "http://jabber.org/protocol/rsm"
#define SR_NS_FORWARD "urn:xmpp:forward:0"
#define SR_NS_DELAY "urn:xmpp:delay"
#define SR_NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

#define SR_FALLBACK_BODY "[This message is encrypted with Sealroom; your client cannot display it.]"
#define SR_MAX_PAYLOAD (1024u * 1024u)
#define SR_MAX_XML_IN (4u * 1024u * 1024u)
#define SR_ID_LEN SEALROOM_ORIGIN_ID_BYTES /* our generated ids and origin-ids */
#define SR_SEND_RETRY_MS 1000 /* after a temporary ("wait") refusal of a message */
#define SR_CHAIN_PAGE 100
#define SR_DEFAULT_TIMEOUT_MS 30000u

struct sealroom_identity {
    unsigned char pk[SR_KEY_BYTES];
    unsigned char sk[64];
};

struct sealroom_event {
    sealroom_event_type type;
    uint32_t request_id;
    int kind;
    int result;
    const char *error_text;
    const char *room, *nick, *jid, *stanza_id, *origin_id;
    const unsigned char *payload;
    size_t payload_len;
    int64_t timestamp_ms;
    int history, self;
    const char *first, *last;
    int complete;
    const unsigned char *pk;
    uint64_t roster_version;
};

/* Steps of a multi-stage request (roster updates chain several IQs). */
typedef enum {
    SR_STEP_NONE = 0,
    SR_STEP_FETCH_KEY, /* identity fetch for an add without a key */
    SR_STEP_SYNC,      /* chain pages */
    SR_STEP_SUBMIT     /* the roster version itself */
} sr_step;

typedef struct sr_request {
    struct sr_request *next;
    uint32_t id;
    sealroom_request_kind kind;
    sr_step step;
    char iq_id[SR_ID_LEN];   /* outstanding IQ, "" if none */
    char *iq_to;             /* who must answer iq_id */
    char *room;              /* bare room JID, when the request has one */
    char *jid;               /* the other user (fetch, roster ops) */
    uint64_t deadline;       /* 0: schedule at the next tick */
    /* roster updates */
    sr_op_kind op;
    sr_role role;
    unsigned char key[SR_KEY_BYTES];
    bool have_key;
    int retries;
    bool then_submit;        /* after a sync, continue with SR_STEP_SUBMIT */
    sr_roster_version *pending; /* the version we submitted */
    /* sync */
    sr_roster_state scratch;
    bool scratch_live;
    /* send */
    char origin_id[SR_ID_LEN];
    xmpp_stanza_t *msg;      /* kept for resending */
    bool resend;             /* waiting for the rejoin before resending */
    uint64_t retry_at;       /* a temporary refusal: resend at this time (0: none) */
    /* history */
    char queryid[SR_ID_LEN];
    char *first, *last;
} sr_request;

typedef struct sr_occupant {
    struct sr_occupant *next;
    char *nick;
    char *jid; /* real bare JID or NULL */
} sr_occupant;

typedef struct sr_room {
    struct sr_room *next;
    char *jid;      /* bare room JID */
    char *nick;     /* our nick, NULL when never joined */
    bool want_joined;  /* join requested and not left: rejoin on link_up */
    bool joined;       /* self-presence seen */
    sr_occupant *occupants;
    bool roster_known;
    sr_roster_state roster;
} sr_room;

typedef struct sr_known_key {
    struct sr_known_key *next;
    char *jid;
    unsigned char pk[SR_KEY_BYTES];
} sr_known_key;

struct sealroom_ctx {
    sealroom_callbacks cb;
    xmpp_ctx_t *xmpp;       /* builds and parses stanzas */
    bool own_xmpp;          /* xmpp was created by us */
    xmpp_conn_t *conn;      /* set by the libstrophe adapter */
    char *own_bare;
    char *own_full;
    char *service;
    struct sealroom_identity *identity;
    uint32_t timeout_ms;
    uint64_t now_ms;
    bool have_time;
    bool link_up;
    uint32_t next_request;
    uint64_t next_iq;
    char id_prefix[17];
    sr_request *requests;
    sr_room *rooms;
    sr_known_key *keys;
    char last_error[512];
};

/* ctx.c */
void sr_log(sealroom_ctx *ctx, sealroom_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int sr_fail(sealroom_ctx *ctx, int result, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sr_emit(sealroom_ctx *ctx, sealroom_event *ev);
int sr_send(sealroom_ctx *ctx, xmpp_stanza_t *st);
/* Resend messages whose temporary refusal has waited long enough (tick). */
void sr_retry_sends(sealroom_ctx *ctx, uint64_t now_ms);
void sr_new_id(sealroom_ctx *ctx, char out[SR_ID_LEN]);
int sr_receive_stanza(sealroom_ctx *ctx, xmpp_stanza_t *st);
int sr_ctx_create(sealroom_ctx **out, const char *own_jid, const char *service_jid,
                  const sealroom_callbacks *cb, xmpp_ctx_t *xmpp);
bool sr_request_pending(const sealroom_ctx *ctx, uint32_t id);

/* requests.c */
sr_request *sr_request_new(sealroom_ctx *ctx, sealroom_request_kind kind);
void sr_request_free(sr_request *r);
void sr_request_unlink(sealroom_ctx *ctx, sr_request *r);
/* Finish r: unlink it, emit REQUEST_DONE (with extra fields from ev if
 * given), free it. text may be NULL. */
void sr_request_done(sealroom_ctx *ctx, sr_request *r, int result, const char *text,
                     sealroom_event *ev);
int sr_handle_iq(sealroom_ctx *ctx, xmpp_stanza_t *st);
int sr_handle_mam_result(sealroom_ctx *ctx, xmpp_stanza_t *st, xmpp_stanza_t *result);
/* Maps an error stanza to a result code and "cond[/app]: text". */
int sr_error_from_stanza(xmpp_stanza_t *st, char *text, size_t textlen);

/* rooms.c */
sr_room *sr_room_find(sealroom_ctx *ctx, const char *room);
sr_room *sr_room_get(sealroom_ctx *ctx, const char *room);
void sr_room_clear_occupants(sr_room *room);
void sr_rooms_free(sealroom_ctx *ctx);
int sr_room_send_join(sealroom_ctx *ctx, sr_room *room);
int sr_handle_presence(sealroom_ctx *ctx, xmpp_stanza_t *st);
int sr_handle_message(sealroom_ctx *ctx, xmpp_stanza_t *st);
int sr_room_jid(sealroom_ctx *ctx, char *out, size_t outlen, const char *room);
bool sr_parse_stamp(const char *stamp, int64_t *ms);
/* Emits a MESSAGE event for a groupchat message of room (live or archived). */
void sr_deliver_message(sealroom_ctx *ctx, const char *room, xmpp_stanza_t *msg,
                        const char *archive_id, int64_t ts, bool history);

/* rosterxml.c */
xmpp_stanza_t *sr_roster_to_xml(xmpp_ctx_t *xmpp, const sr_roster_version *v);
/* Parses a <roster/> element into v (heap). False with a reason in why. */
bool sr_roster_from_xml(sr_roster_version *v, xmpp_stanza_t *el, const char **why);

/* stanza helpers (ctx.c) */
xmpp_stanza_t *sr_el(xmpp_ctx_t *xmpp, const char *name, const char *ns);
bool sr_add_text_child(xmpp_ctx_t *xmpp, xmpp_stanza_t *parent, const char *name,
                       const char *ns, const char *text, size_t len);
xmpp_stanza_t *sr_child(xmpp_stanza_t *st, const char *name, const char *ns);
char *sr_strdup(const char *s);

#endif
