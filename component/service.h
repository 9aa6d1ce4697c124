/* Internal state of the room service shared by its parts (rooms.c: cache
 * and dispatch; identity.c; chain.c: roster chain; presence.c; archive.c:
 * groupchat and MAM; disco.c). Not part of any public interface. */
#ifndef SEALROOMD_SERVICE_H
#define SEALROOMD_SERVICE_H

#include <stdbool.h>
#include <strophe.h>
#include <time.h>

#include "config.h"
#include "db.h"
#include "link.h"
#include "roster.h"
#include "rooms.h"

typedef struct occupant {
    char *full_jid;
    char *bare_jid;
    char *nick;
    bool dmkd; /* its join presence said it takes part in key-distribution runs */
    struct occupant *next;
} occupant;

typedef struct queued_stanza {
    xmpp_stanza_t *stanza;
    struct queued_stanza *next;
} queued_stanza;

/* A data key of the room's current epoch: who may name it in messages. */
typedef struct dk_entry {
    unsigned char dkid[16];
    char *sender; /* bare JID */
    struct dk_entry *next;
} dk_entry;

#define DK_BUCKETS 64

typedef enum {
    ROOM_LOADING,  /* a read of its state is in flight */
    ROOM_READY,    /* exists, state cached */
    ROOM_ABSENT,   /* does not exist (as of the last read) */
} room_state;

typedef struct room {
    char *name;          /* bare room JID */
    long long id;        /* rooms.room_id, 0 while absent */
    room_state state;
    bool busy;           /* a create or roster change is committing: queue everything */
    sr_roster_state roster;
    occupant *occupants;
    queued_stanza *queue, *queue_tail;
    unsigned queued;     /* stanzas on queue (at most ROOM_QUEUE_MAX) */
    unsigned refs;       /* callbacks in flight that point at this room */
    long last_used_ms;
    struct room *hnext;
    /* Reflections waiting for the fan-out service (fanout.c). */
    xmpp_stanza_t *fanout_batch;
    unsigned fanout_count;
    size_t fanout_bytes;
    bool fanout_listed; /* on rooms.fanout_pending (holds a ref) */
    struct room *fanout_next;
    /* End-to-end epochs (epoch.c). */
    uint64_t current_epoch;        /* 0: none yet */
    uint64_t epoch_roster_version; /* roster version the current epoch was agreed under */
    long long epoch_created;       /* unix seconds (wall clock) */
    uint64_t membership_version;   /* latest roster version with an add or remove */
    long stale_since_ms;           /* when the current epoch became stale; -1: it is not */
    long last_nudge_ms;            /* last <rekey/> sent; 0: never */
    dk_entry *datakeys[DK_BUCKETS]; /* the current epoch's data keys (datakey.c) */
    /* Multi-cast key distribution (dmkd.c). */
    struct dmkd_run *run;          /* the run under way, or NULL */
    long run_due_ms;               /* a run should start then; -1: none wanted */
    long run_not_before_ms;        /* after a failed run: wait until then */
    bool run_requested;            /* a member asked for a new epoch: run even if it is fresh */
    char **run_dropped;            /* bare JIDs dropped from runs since the last epoch */
    size_t nrun_dropped;
    /* Archive re-encryption tokens (token.c): tokens[i] maps epoch
     * token_first + i to the next one, when token_have[i]. */
    uint64_t token_first;
    size_t ntokens;
    unsigned char (*tokens)[32];
    bool *token_have;
} room;

struct rooms {
    const config *cfg;
    db *db;
    xmpp_link *link;
    room **buckets;
    size_t nbuckets, nrooms;
    unsigned writes_in_flight;
    long now_ms;
    long last_evict_ms;
    time_t started;
    room *fanout_pending; /* rooms with a fan-out batch to send */
    unsigned long long fanout_stanzas;
    struct {
        unsigned long long messages_stored, messages_deduplicated, requests_refused,
            admin_sessions, epochs_created, datakeys_stored, vaults_stored, vault_fetches,
            vault_rate_limited, rekey_nudges, dmkd_runs_started, dmkd_runs_committed,
            dmkd_runs_failed, dmkd_members_dropped, tokens_stored, headers_rekeyed_lazily,
            checks_asked, checks_failed, tokens_erased;
        /* search.c and the <index/> and retractions of archive.c */
        unsigned long long search_keyrings, search_batches, search_entries, searches,
            searches_failed, search_leases, search_segments, retractions, search_rows_purged;
    } stats;
    struct searchpool *search; /* searchpool.h: the workers that evaluate searches */
    struct vault_limits *vault_limits; /* vault.c: per-user fetch buckets */
    long last_nudge_scan_ms;
    bool dmkd_resume_scanned; /* unfinished runs looked up after start-up */
    long last_dmkd_tick_ms;
    bool purge_in_flight, purge_due; /* searchpurge.c */
    long last_purge_ms;
    struct erase_room *erasing; /* tokenerase.c: rooms whose tokens wait for a check */
    long last_erase_ms;
    char instance[256];
};

/* rooms.c */
room *room_lookup(rooms *r, const char *name);
/* Stanzas a room holds while it loads or a roster change commits: far more
 * than the few milliseconds of a healthy commit see; past it the database is
 * stuck, and holding more would only grow memory. */
#define ROOM_QUEUE_MAX 1000
/* Copy stanza onto the room's queue; false when it is full or out of memory. */
bool room_enqueue(room *rm, xmpp_stanza_t *stanza);
/* Handle whatever queued while the room was loading or busy. */
void room_drain(rooms *r, room *rm);
void room_release(rooms *r, room *rm);
/* A write that held the room busy (roster version, epoch, data key) is
 * over: let the room run again and handle what queued meanwhile. The
 * caller has freed its own state; rm stays valid through the drain. */
void room_op_done(rooms *r, room *rm);
const char *svc_jid(const rooms *r);
void svc_send(rooms *r, xmpp_stanza_t *stanza); /* sends and releases */
void svc_error(rooms *r, xmpp_stanza_t *req, const char *from, const char *etype,
               const char *cond, const char *app, const char *text);
/* Bare JID of a stanza's sender into out; false if absent or invalid. */
bool svc_sender_bare(xmpp_stanza_t *stanza, char *out, size_t outlen);
/* The sender's bare JID into out if it is a member of rm's roster; else
 * answers forbidden/<not-member/> with why and returns false. */
bool svc_require_member(rooms *r, const room *rm, xmpp_stanza_t *iq, char *out, size_t outlen,
                        const char *why);
bool svc_is_admin(const rooms *r, const char *bare);
/* Results come back in text format: bytea columns are hex ("\\x..").
 * Decode column (row, col) into out; returns the length, or -1 if it is not
 * a bytea of at most outlen bytes. */
long svc_bytea(const PGresult *res, int row, int col, unsigned char *out, size_t outlen);
/* Same, allocating (caller frees with free()). */
unsigned char *svc_bytea_dup(const PGresult *res, int row, int col, size_t *len);

/* identity.c */
void identity_handle_iq(rooms *r, xmpp_stanza_t *iq, xmpp_stanza_t *payload);

/* chain.c */
void chain_handle_create(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *create);
void chain_handle_update(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *roster);
void chain_handle_fetch(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *chain);
/* Parse a <roster/> element into v (heap). Returns NULL on success or an
 * English reason. Exposed for unit tests and the fuzz target. */
const char *chain_parse_roster(xmpp_stanza_t *el, const char *room_jid, sr_roster_version *v);
/* Render version v (with sig) as a <roster/> child of parent. */
bool chain_render_roster(xmpp_stanza_t *parent, const sr_roster_version *v);

/* presence.c */
void presence_handle(rooms *r, room *rm, xmpp_stanza_t *presence, const char *nick);
occupant *occupant_by_full(room *rm, const char *full_jid);
void presence_remove_occupant(rooms *r, room *rm, occupant *o, const char *status_code);
/* After a roster change: kick occupants no longer members, refresh others. */
void presence_roster_changed(rooms *r, room *rm, const sr_roster_state *before);
void occupants_free(room *rm);

/* archive.c */
/* The statement storing a message (and its index entries); archive.c. */
extern const char archive_store_sql[];
void archive_handle_groupchat(rooms *r, room *rm, xmpp_stanza_t *msg);
/* The archived form of a message (as MAM and search results carry it):
 * from room/nick, the fallback body and <sealed/> (payload_b64), or, for a
 * retracted message (payload_b64 NULL), the XEP-0424 tombstone
 * <retracted id=stanza_id stamp=retracted_stamp/>; origin-id if any,
 * <stanza-id/> when with_sid, and the sender's bare JID. Caller releases. */
xmpp_stanza_t *archive_build_message(xmpp_ctx_t *ctx, const char *room_name, const char *nick,
                                     const char *sender_bare, const char *payload_b64,
                                     const char *retracted_stamp, const char *origin_id,
                                     const char *stanza_id, bool with_sid);
void archive_handle_mam(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *query);
/* Parse the MAM query (form + RSM). Exposed for tests and fuzzing. */
typedef struct mam_query {
    long long start_ms, end_ms; /* valid when has_start / has_end (may be before 1970) */
    bool has_start, has_end;
    long long after, before;    /* -1 when absent */
    bool before_empty;          /* <before/>: the newest page */
    int max;
} mam_query;
const char *archive_parse_mam(xmpp_stanza_t *query, int default_max, int cap, mam_query *out);

/* admin.c (XEP-0050, for admin.jids) */
void admin_list_commands(rooms *r, xmpp_stanza_t *iq);
void admin_handle_command(rooms *r, xmpp_stanza_t *iq, xmpp_stanza_t *cmd);

/* fanout.c */
/* Queue message m (borrowed: copied; no 'to') for every occupant through
 * the fan-out service; sender_full gets its copy with id sender_id. */
void fanout_queue(rooms *r, room *rm, xmpp_stanza_t *m, const char *sender_full,
                  const char *sender_id, size_t payload_len);
/* Send every queued batch; called once per loop turn. */
void fanout_flush(rooms *r);

/* Drop a room's queued batch (the room is being freed). */
void fanout_discard(room *rm);

/* vault.c (service IQ <vault/>) */
void vault_handle_iq(rooms *r, xmpp_stanza_t *iq, xmpp_stanza_t *el);
/* Forget full buckets (periodic) and everything (shutdown). */
void vault_limits_sweep(rooms *r, long now_ms);
void vault_limits_free(rooms *r);

/* epoch.c */
void epoch_handle_set(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el);
void epoch_handle_get(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el);
void bundles_handle_get(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el);
/* Why the current epoch cannot take data keys or messages: NULL when it
 * can, else "none", "stale" or "expired". */
const char *epoch_unusable(const rooms *r, const room *rm);
/* After a committed roster version (the cache already updated). */
void epoch_roster_changed(rooms *r, room *rm, const sr_roster_version *v);
/* The periodic look for rooms needing a new epoch (rooms_tick): a
 * key-distribution run where two or more member sessions are present, else
 * a <rekey/> nudge to the one. */
void epoch_nudge(rooms *r, long now_ms);
/* Ask one present member session of rm to start a new epoch alone. */
void epoch_nudge_room(rooms *r, room *rm, const char *reason, long now_ms);
/* A new epoch is stored: update the cache and tell every present session.
 * created is the stored creation time (unix seconds). */
void epoch_committed(rooms *r, room *rm, uint64_t number, uint64_t roster_version,
                     long long created, const char *by, size_t envelopes);

/* dmkd.c (multi-cast key distribution runs, urn:xmpp:sealroom:keys:0) */
#define NS_KEYS "urn:xmpp:sealroom:keys:0"
/* IQ set from a member to a room in NS_KEYS. */
void dmkd_handle_iq(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el);
/* A roster version committed (membership: it added or removed someone). */
void dmkd_roster_changed(rooms *r, room *rm, bool membership);
/* Want a run in delay_ms (keeps an earlier wish). */
void dmkd_schedule(rooms *r, room *rm, long delay_ms);
/* Member sessions present that could take part (one per member). */
size_t dmkd_candidates(const room *rm);
/* Deadlines and scheduled starts (rooms_tick). */
void dmkd_tick(rooms *r, long now_ms);
/* The room was read from the database; res holds its run and ring rows
 * (maybe none): resume that run. */
void dmkd_loaded(rooms *r, room *rm, const PGresult *run, const PGresult *parts);
/* Forget everything of rm's runs (the room is freed). */
void dmkd_room_free(room *rm);
/* An epoch was committed (by a run or by one member): the series of runs
 * is over, so sessions dropped from it take part again. */
void dmkd_epoch_committed(room *rm);

/* token.c (urn:xmpp:sealroom:archive:0 <token/>) */
#define NS_ARCHIVE "urn:xmpp:sealroom:archive:0"
void token_handle_set(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el);
/* The room's cached chain: add the token from → from + 1; Δ(a → c) into
 * out when every token between is known. */
bool token_chain_put(room *rm, uint64_t from, const unsigned char delta[32]);
bool token_chain_delta(const room *rm, uint64_t a, uint64_t c, unsigned char out[32]);
void token_chain_free(room *rm);
/* Forget (and wipe) the cached tokens from epochs below e, i.e. those into
 * e and earlier: they were erased from the database. */
void token_chain_drop_below(room *rm, uint64_t e);

/* tokenerase.c (erasing tokens: <confirm-check/>, <check-ok/>, <check-failed/>) */
/* Rooms the sweep completed: ask a present member to confirm, and ask
 * again when unanswered (rooms_tick, every turn). */
void tokenerase_tick(rooms *r, long now_ms);
/* IQ set <check-ok/> or <check-failed/> in NS_ARCHIVE from a member. */
void tokenerase_handle_answer(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el);
/* Forget every waiting room (shutdown). */
void tokenerase_free(rooms *r);

/* datakey.c */
void datakey_handle_set(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el);
void datakey_handle_get(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el);
/* Sender of dkid in the current epoch's cache, or NULL. */
const char *datakey_sender(const room *rm, const unsigned char dkid[16]);
bool datakey_cache_add(room *rm, const unsigned char dkid[16], const char *sender);
void datakey_cache_clear(room *rm);

/* Shared by the e2e handlers: decimal u64 that fits a PostgreSQL bigint. */
bool svc_parse_u64(const char *s, uint64_t *out);

/* search.c (urn:xmpp:sealroom:search:0, search-wire §3-4) */
#define NS_SEARCH "urn:xmpp:sealroom:search:0"
#define NS_RETRACT "urn:xmpp:message-retract:1"
/* IQ to a room in NS_SEARCH. */
void search_handle_iq(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el);
/* A numeric macro spelled as an SQL literal. */
#define SQL_NUMBER_(n) #n
#define SQL_NUMBER(n) SQL_NUMBER_(n)
/* A batch takes messages while it holds fewer entries than this, so the
 * message that reaches it is its last (a batch holds less than this plus
 * search.max_entries). Once one message is refused for it, every later one
 * is too (entries only grow), so none lands behind the refused one's
 * counters; the batch seals as open batches do (its owner's next batch, a
 * search). */
#define SEARCH_BATCH_ENTRIES 65536
/* A message's <index batch='N'>: the batch into *batch and the n × 16 label
 * bytes into *labels (malloc'd, caller frees) and *len. NULL on success,
 * search_nomem when memory ran out, else an English reason (a bad-request).
 * Exposed for tests and fuzzing. */
extern const char search_nomem[];
const char *search_parse_index(xmpp_stanza_t *el, int max_entries, uint64_t *batch,
                               unsigned char **labels, size_t *len);
/* Start the search workers (rooms_new), stop them (rooms_free), and hand
 * finished searches back to their requesters (rooms_tick, every turn). */
bool search_start(rooms *r);
void search_stop(rooms *r);
void search_tick(rooms *r);
int search_pollfd(const rooms *r);
/* searchpurge.c: delete what compaction retired (sql/014), a chunk at a
 * time. kick: something was queued; tick: from rooms_tick. */
extern const char search_purge_sql[];
void search_purge_kick(rooms *r);
void search_purge_tick(rooms *r, long now_ms);

/* disco.c */
void disco_handle(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *query);

#endif
