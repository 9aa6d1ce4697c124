/* libsealroom internals shared by the core (ctx.c, requests.c, rooms.c),
 * the roster XML codec, the libstrophe adapter and the blocking client.
 * Nothing here is exported. */
#ifndef SEALROOM_INTERNAL_H
#define SEALROOM_INTERNAL_H

#include <sealroom/sealroom.h>

#include <stdbool.h>
#include <stdint.h>
#include <strophe.h>

#include "e2e/archive.h"
#include "e2e/epoch.h"
#include "e2e/identity.h"
#include "e2e/replay.h"
#include "e2e/vault.h"
#include "proto/roster.h"

#define SR_NS "urn:xmpp:sealroom:0"
#define SR_NS_KEYS "urn:xmpp:sealroom:keys:0" /* key distribution runs (keyrun.c) */
#define SR_NS_ARCHIVE "urn:xmpp:sealroom:archive:0" /* archive re-encryption (archive.c) */
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
#define SR_DATAKEY_MAX_USES 1000u  /* messages per data key before a new one */
#define SR_REPLAY_WINDOW 65536u    /* (sender, origin-id) pairs remembered per room */
#define SR_DATAKEY_FETCH_MAX 100u  /* ids per <datakeys/> query */
#define SR_ROTATE_ATTEMPTS 4       /* new-epoch tries before giving up */
#define SR_SEND_RESEAL_MAX 3       /* re-seals of one message after <stale-epoch/> */
/* Re-indexings of one message after <batch-sealed/>: normal operation
 * (every search seals the batches messages in flight were written into),
 * so the bound only stops a service that refuses for ever. */
#define SR_SEND_REINDEX_MAX 32
#define SR_RUN_MAX_AGE_MS (5u * 60u * 1000u) /* run state older than this is dropped */
#define SR_RUN_WAIT_MS 60000u      /* after mode="run", no new <rekey/> ask before this */

/* pk/sk duplicate e2e.sign_pk/sign_sk for the roster code's benefit. */
struct sealroom_identity {
    unsigned char pk[SR_KEY_BYTES];
    unsigned char sk[64];
    sr_e2e_identity e2e;
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
    uint64_t epoch;
    const char *fingerprint, *previous_fingerprint;
};

/* Internal requests (no REQUEST_DONE event): the callback gets the answer
 * stanza (result or error; NULL on timeout, link loss or a local failure)
 * and the result code with its text. */
#define SR_REQ_INTERNAL ((sealroom_request_kind)100)
typedef void (*sr_iq_cb)(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                         const char *text);

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
    bool key_given;                  /* the app passed a key: compare with the pin */
    unsigned char given_key[SR_KEY_BYTES];
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
    /* internal requests */
    sr_iq_cb cb;
    void *cb_arg;
    void (*cb_free)(void *arg); /* frees cb_arg if cb never runs (ctx freed) */
    /* send: the plaintext until sealed (msg == NULL meanwhile) */
    unsigned char *plain;
    size_t plain_len;
    int reseals;
    int reindexes; /* times re-indexed after <batch-sealed/> */
    /* account requests */
    sr_e2e_vault_key *vkey;
    sr_e2e_vault_data *vdata;
    /* roster history gathered while verifying, committed with the state */
    struct sr_hist *hist;
    /* search (ssequery.c) */
    void *sse;
    /* send: the search batch whose entries the sealed message carries (0: none) */
    uint32_t sse_batch;
} sr_request;

typedef struct sr_occupant {
    struct sr_occupant *next;
    char *nick;
    char *jid; /* real bare JID or NULL */
} sr_occupant;

/* One roster op as verified, kept so membership at any version can be
 * answered (a message names the roster version its sender signed under). */
typedef struct sr_hist_op {
    uint64_t version;
    sr_op_kind kind;
    char *jid;
    unsigned char pk[SR_KEY_BYTES];
} sr_hist_op;

typedef struct sr_hist {
    sr_hist_op *ops;
    size_t nops, cap;
    unsigned char (*heads)[SR_ROSTER_HASH_BYTES]; /* head hash after version i */
    uint64_t first_version;                        /* version of heads[0] */
    size_t nheads, capheads;
} sr_hist;

/* An epoch we hold (sodium_malloc'd: it holds S_e). */
typedef struct sr_epoch {
    struct sr_epoch *next;
    uint64_t number, roster_version;
    unsigned char roster_hash[SR_E2E_ROSTER_HASH_BYTES];
    unsigned char secret[SR_E2E_EPOCH_SECRET_BYTES];
    sr_e2e_epoch_keys keys;
    /* We made it (started it alone, or represented the run that made it),
     * so the token from the epoch before is ours to give (archive.c). */
    bool ours;
    bool token_sent; /* that token was sent (or is in flight) */
} sr_epoch;

typedef enum {
    SR_DK_READY = 0,  /* p is the data key */
    SR_DK_FETCHING,   /* header asked for */
    SR_DK_NEED_EPOCH, /* header known (h, epoch), epoch key being fetched */
    SR_DK_FAILED,     /* cannot be had: fail_rc */
    SR_DK_REFETCH     /* failed for want of its epoch: ask for the header again */
} sr_dk_state;

/* A data key whose header named an epoch we do not hold is asked for again
 * (its header may since have been re-keyed to an epoch we hold, once the
 * epoch's maker handed the room its token), at most this often and this
 * many times. */
#define SR_DK_REFETCH_MS 2000
#define SR_DK_REFETCH_MAX 3

/* A data key (sodium_malloc'd: it holds P). */
typedef struct sr_datakey {
    struct sr_datakey *next;
    unsigned char id[SR_E2E_DATAKEY_ID_BYTES];
    unsigned char p[SR_E2E_POINT_BYTES];
    unsigned char h[SR_E2E_POINT_BYTES];
    uint64_t epoch;
    char *sender; /* bare JID (malloc'd) */
    sr_dk_state state;
    int fail_rc;
    uint64_t failed_ms;  /* when it failed with NO_KEY (0: not yet noted) */
    unsigned refetches;
} sr_datakey;

/* A received room message waiting for keys, or a history query's end. */
typedef struct sr_inbox_item {
    struct sr_inbox_item *next;
    xmpp_stanza_t *msg;  /* the groupchat message (copy) */
    char *archive_id;
    int64_t ts;
    bool history;
    uint32_t fin_request; /* nonzero: a marker completing this history request */
    xmpp_stanza_t *fin;   /* its answer IQ */
    bool synced;          /* a chain sync was made for this message already */
    struct sr_sse_filter *filter; /* a search hit: delivered only if it matches */
    struct sr_sse_compaction *sink; /* a compaction's message: handed to it, no event */
} sr_inbox_item;

typedef struct sr_room {
    struct sr_room *next;
    char *jid;      /* bare room JID */
    char *nick;     /* our nick, NULL when never joined */
    bool want_joined;  /* join requested and not left: rejoin on link_up */
    bool joined;       /* self-presence seen */
    sr_occupant *occupants;
    bool roster_known;
    sr_roster_state roster;
    sr_hist hist;
    uint64_t membership_version; /* latest verified version that added or removed */
    /* epochs */
    sr_epoch *epochs;
    uint64_t epoch_current;      /* the newest epoch we hold, 0 if none */
    bool epoch_checked;          /* the service's current epoch is known to be ours */
    bool epoch_fetching;         /* a fetch of the current epoch is in flight */
    bool epoch_refresh;          /* fetch again once the one in flight is done */
    bool epoch_rotate;           /* the service says the epoch is stale or expired */
    bool rotating;
    int rotate_attempts;
    uint64_t service_epoch;      /* the newest epoch number the service told us of */
    sr_epoch *rot_pending;       /* the epoch we are proposing */
    bool syncing;                /* an internal chain sync is in flight */
    uint64_t *epoch_inflight;    /* epoch numbers being fetched */
    size_t ninflight;
    uint32_t *rotate_waiters;    /* request ids completing with the rotation */
    size_t nwaiters;
    /* asking the room for a new epoch (keys.c) and taking part in its runs */
    struct sr_keyrun *run;       /* our part in the room's current run (keyrun.c) or NULL */
    bool rekey_asking;           /* a <rekey/> to the room is in flight */
    bool run_awaited;            /* the room answered mode="run": an epoch is coming */
    uint64_t run_awaited_at;     /* when it answered (ms, ctx->now_ms) */
    uint32_t *rekey_waiters;     /* request ids completing with the next epoch we install */
    size_t nrekey_waiters;
    /* data keys: ours and others' */
    sr_datakey *dks;
    sr_datakey *send_dk;         /* our current one (in dks) or NULL */
    unsigned send_dk_uses;
    bool send_dk_uploading;
    bool send_dk_ok;
    /* receiving */
    sr_inbox_item *inbox, **inbox_tail;
    bool inbox_busy;             /* a fetch for the head item is in flight */
    bool inbox_pumping;          /* sr_inbox_pump is on the stack */
    sr_e2e_replay *replay;
    /* replay tags: stanza-id hashes per (sender, origin-id) */
    struct sr_seen *seen;
    /* encrypted search (sse.h) */
    struct sr_sse_room *sse;
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
    /* vault and pins */
    sr_e2e_vault_data *vault;     /* root and pins (sodium_malloc'd) or NULL */
    sr_e2e_vault_key *vault_key;  /* to re-seal the vault, or NULL */
    uint64_t vault_version;       /* last stored version we know */
    bool vault_dirty, vault_saving;
    sealroom_key_store key_store;
    bool have_key_store;
    unsigned long long vault_ops;
    size_t vault_mem;
    struct sr_fpr_change *changes; /* fingerprint changes awaiting the app */
    int dmkd_stall;                /* testhook.h: ignore run rounds from this one on (0: off) */
    bool auto_compact_off;         /* sealroom_ctx_set_auto_compact(ctx, 0) (sseauto.c) */
};

/* A key that did not match its pin, until the app accepts it. */
typedef struct sr_fpr_change {
    struct sr_fpr_change *next;
    char *jid;
    unsigned char fpr[SR_E2E_FPR_BYTES];
} sr_fpr_change;

/* (sender, origin-id) → stanza-id tag, to tell a replay under a new
 * archive id from a re-read of the same archived message. */
typedef struct sr_seen {
    size_t cap, n;
    struct sr_seen_entry {
        unsigned char key[16];
        uint64_t tag;
        bool used;
    } *slots;
} sr_seen;

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


/* requests.c: internal IQs */
/* Sends an internal IQ (child ownership taken); cb runs exactly once unless
 * the ctx is freed first. Returns 0 or a negative code (cb not called). */
int sr_iq_call(sealroom_ctx *ctx, const char *type, const char *to, xmpp_stanza_t *child,
               sr_iq_cb cb, void *arg);
/* As sr_iq_call; arg is heap memory that arg_free releases if the ctx is
 * freed before cb runs. */
int sr_iq_call_owned(sealroom_ctx *ctx, const char *type, const char *to, xmpp_stanza_t *child,
                     sr_iq_cb cb, void *arg, void (*arg_free)(void *));
/* An internal chain sync of room; cb gets rc (answer NULL). */
int sr_sync_call(sealroom_ctx *ctx, const char *room, sr_iq_cb cb, void *arg);
sr_request *sr_request_by_id(sealroom_ctx *ctx, uint32_t id);
/* The Sealroom application condition of an error stanza, or NULL. */
const char *sr_error_app(xmpp_stanza_t *st);
bool sr_parse_u64(const char *s, uint64_t *out);
/* Finish a user request from an internal step (text from last_error if NULL). */
void sr_request_fail(sealroom_ctx *ctx, sr_request *r, int rc);

xmpp_stanza_t *sr_identity_element(sealroom_ctx *ctx);
/* identity.c: 32 bytes as eight space-separated groups of hex (the
 * fingerprint text format), NUL-terminated. */
void sr_fingerprint_text(char out[SEALROOM_FINGERPRINTBYTES], const unsigned char h[32]);

/* hist (keys.c) */
void sr_hist_free(sr_hist *h);
int sr_hist_note(sr_hist **h, const sr_roster_version *v, const unsigned char head[32]);
void sr_room_hist_commit(sr_room *room, sr_hist *h, bool reset);
/* The key jid held at roster version v, if jid was a member then. */
bool sr_member_at(const sr_room *room, const char *jid, uint64_t v, unsigned char pk[SR_KEY_BYTES]);
/* The chain head hash after version v, if verified. */
const unsigned char *sr_head_at(const sr_room *room, uint64_t v);

/* keys.c: epochs and data keys */
sr_epoch *sr_epoch_find(const sr_room *room, uint64_t number);
void sr_room_keys_free(sr_room *room);
/* Make sure we hold the service's current epoch and that it is fresh;
 * fetch or start a new one as needed. Calls sr_keys_changed when done. */
void sr_keys_ensure(sealroom_ctx *ctx, sr_room *room);
/* Start a new epoch alone (the envelope path); request_id (0: none)
 * completes with it. Only for a new room, the room's <rekey/> nudge and
 * a <rekey/> answered mode="solo". */
int sr_rotate(sealroom_ctx *ctx, sr_room *room, uint32_t request_id);
/* Ask the room for a new epoch and complete request_id when one is
 * installed (or made by us when the room says we are alone). */
int sr_rekey_wait(sealroom_ctx *ctx, sr_room *room, uint32_t request_id);
/* Finish every request waiting for room's next epoch with rc (an epoch
 * installed or a failed run) and stop waiting for a run. */
void sr_rekey_waiters_done(sealroom_ctx *ctx, sr_room *room, int rc, const char *text);
/* Fetch epoch number (0: current) and install it. */
int sr_epoch_fetch(sealroom_ctx *ctx, sr_room *room, uint64_t number);
/* A headline from the room: <epoch/>, <rekey/>, a run's round in SR_NS_KEYS,
 * or <confirm-check/> in SR_NS_ARCHIVE. */
int sr_handle_headline(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *st);
/* Something keys depend on changed: pump the outbox and the inbox. */
void sr_keys_changed(sealroom_ctx *ctx, sr_room *room);
sr_datakey *sr_dk_find(const sr_room *room, const unsigned char id[SR_E2E_DATAKEY_ID_BYTES]);

/* keyrun.c: our part in the room's multi-cast key distribution runs
 * (urn:xmpp:sealroom:keys:0) */
/* A headline child in SR_NS_KEYS: round1, round2, round3 or failed. */
void sr_keyrun_headline(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *el);
/* Go on with a round 1 that waited for a roster sync (after any sync). */
void sr_keyrun_resume(sealroom_ctx *ctx, sr_room *room);
/* True while we take part in a run of room (state past its age is dropped). */
bool sr_keyrun_active(sealroom_ctx *ctx, sr_room *room);
/* The room announced epoch number: drop run state it makes moot. */
void sr_keyrun_epoch_seen(sealroom_ctx *ctx, sr_room *room, uint64_t number);
/* The room's <epoch/> of number as fetched (rv, hash, kc verified against
 * the chain by the caller; check its check header, NULL when it has none).
 * 1: it is the epoch of the run we confirmed, its secret is in secret,
 * *represented says whether we were the run's representative, and the run
 * is over; 0: not ours (use the envelope); negative: it is our run's epoch
 * but not the key (or check header) we agreed (KEY_AGREEMENT_FAILED
 * emitted, nothing to install). */
int sr_keyrun_take(sealroom_ctx *ctx, sr_room *room, uint64_t number, uint64_t rv,
                   const unsigned char hash[32], const unsigned char kc[32],
                   const unsigned char *check, unsigned char secret[32], bool *represented);
/* Wipe and free room's run state. */
void sr_keyrun_free(sr_room *room);

/* archive.c: re-encryption of the archive (urn:xmpp:sealroom:archive:0) */
/* Send the token e→f for every epoch f of room that we made, whose
 * predecessor e we hold, and whose token is not sent yet. */
void sr_archive_tokens(sealroom_ctx *ctx, sr_room *room);
/* A headline child in SR_NS_ARCHIVE: <confirm-check/>. */
void sr_archive_headline(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *el);

/* outbox (rooms.c): seal waiting messages when keys allow */
void sr_outbox_pump(sealroom_ctx *ctx, sr_room *room);
/* Fail every message of room still waiting for keys: the keys cannot be
 * had (a refused epoch or key), so waiting would only ask again and again. */
void sr_outbox_fail(sealroom_ctx *ctx, sr_room *room, int rc, const char *why);

/* inbox.c */
void sr_inbox_push(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *msg, const char *archive_id,
                   int64_t ts, bool history);
/* A search hit: delivered only if its plaintext matches filter (taken). */
void sr_inbox_push_hit(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *msg, int64_t ts,
                       struct sr_sse_filter *filter);
/* A message a compaction job reads (a reference to job is taken). */
void sr_inbox_push_sink(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *msg,
                        struct sr_sse_compaction *job);
void sr_inbox_push_fin(sealroom_ctx *ctx, sr_room *room, uint32_t request_id, xmpp_stanza_t *fin);
void sr_inbox_pump(sealroom_ctx *ctx, sr_room *room);
void sr_inbox_free(sr_room *room);
void sr_history_fin(sealroom_ctx *ctx, sr_request *r, xmpp_stanza_t *iq);
/* Completes a paged request (history, search) from the element carrying
 * 'complete' and the RSM <set/> with <first/> and <last/>. */
void sr_page_done(sealroom_ctx *ctx, sr_request *r, xmpp_stanza_t *fin);

/* retract.c (XEP-0424) */
/* A groupchat message carrying <retract/>: handled (event, our request). */
bool sr_retract_reflected(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *msg, int64_t ts);
/* An error answering one of our retractions: handled. */
bool sr_retract_refused(sealroom_ctx *ctx, const char *room, xmpp_stanza_t *err_msg);
/* A history message that is a tombstone: handled (event emitted). */
bool sr_retract_tombstone(sealroom_ctx *ctx, sr_room *room, xmpp_stanza_t *msg,
                          const char *archive_id, int64_t ts, bool history);

/* account.c: pins */
/* Check (ed, x) of jid against the pin: OK (pinned now if new),
 * KEY_CHANGED (event emitted). */
int sr_pin_check(sealroom_ctx *ctx, const char *jid, const unsigned char ed[32],
                 const unsigned char x[32]);
void sr_vault_tick(sealroom_ctx *ctx);
void sr_account_free(sealroom_ctx *ctx);

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
