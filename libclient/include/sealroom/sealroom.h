/* libsealroom public API: identities, the sans-I/O protocol core
 * (sealroom_ctx), events, and the blocking convenience client.
 *
 * Thread safety: the library keeps no global state. A sealroom_ctx, a
 * sealroom_client and everything reached through them may be used by one
 * thread at a time; different contexts may be used from different threads
 * concurrently. Callbacks run on the thread that called into the library.
 * sealroom_identity objects are immutable after creation and may be shared
 * read-only between threads.
 *
 * Encryption: every message payload is encrypted and signed end to end.
 * The service stores and routes only ciphertext. A user's identity (signing
 * key, sealing key, key-distribution seeds) lives in a vault on the service,
 * sealed under a key derived from the user's Sealroom passphrase, so a fresh
 * device needs only the XMPP password and that passphrase
 * (sealroom_account_create / sealroom_account_login); an app with secure
 * storage of its own can keep the identity there instead
 * (sealroom_ctx_set_key_store). Rooms move to a new key epoch whenever a
 * member is added or removed, when the epoch is older than the service's
 * maximum age, or on request; a removed member cannot read later epochs.
 * The members online at the time agree on the new epoch's key in a
 * key-distribution run the service coordinates but cannot read (the
 * library takes part by itself and checks every round against the
 * verified roster); a member alone in the room starts the epoch by
 * itself.
 * Every roster version is signed and the whole chain is verified before it
 * is trusted, and every received message is checked (sender's membership
 * at the roster version it names, signature, decryption, replay) before it
 * is delivered; a message failing any check is reported as
 * SEALROOM_EVENT_MESSAGE_REJECTED and never delivered.
 *
 * Conventions: functions return a sealroom_result (0 on success, a negative
 * SEALROOM_E_* code on failure) and write results through out-parameters,
 * which come first. Strings are NUL-terminated UTF-8. "Borrowed" means the
 * library keeps no reference after the call returns; "copied" means the
 * library copies what it needs. Constructors accept a pointer to a handle
 * and set it to NULL on failure; destructors accept NULL.
 */
#ifndef SEALROOM_SEALROOM_H
#define SEALROOM_SEALROOM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SEALROOM_BUILDING)
#define SEALROOM_API __attribute__((visibility("default")))
#else
#define SEALROOM_API
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SEALROOM_WARN_UNUSED __attribute__((warn_unused_result))
#else
#define SEALROOM_WARN_UNUSED
#endif

#define SEALROOM_VERSION_MAJOR 0
#define SEALROOM_VERSION_MINOR 5
#define SEALROOM_VERSION_PATCH 3
#define SEALROOM_VERSION_STRING "0.5.3"
/* (major << 16) | (minor << 8) | patch, comparable with sealroom_version_number(). */
#define SEALROOM_VERSION_NUMBER \
    ((SEALROOM_VERSION_MAJOR << 16) | (SEALROOM_VERSION_MINOR << 8) | SEALROOM_VERSION_PATCH)

/* The version of the library actually loaded, e.g. "0.1.0". Static string. */
SEALROOM_API const char *sealroom_version(void);
/* The loaded library's SEALROOM_VERSION_NUMBER. */
SEALROOM_API unsigned sealroom_version_number(void);

/* ---- Errors ---- */

/* Result codes. New codes are only ever appended. */
typedef enum sealroom_result {
    SEALROOM_OK = 0,
    SEALROOM_E_INVALID = -1,     /* bad argument (NULL, bad JID, bad length) */
    SEALROOM_E_NOMEM = -2,       /* allocation failed */
    SEALROOM_E_STATE = -3,       /* not allowed now (not joined, no identity, link down) */
    SEALROOM_E_PROTOCOL = -4,    /* the peer sent something that breaks the protocol */
    SEALROOM_E_REMOTE = -5,      /* the server refused, for a reason without its own code */
    SEALROOM_E_TIMEOUT = -6,     /* no answer in time */
    SEALROOM_E_VERIFY = -7,      /* a signature or the roster chain failed verification */
    SEALROOM_E_NETWORK = -8,     /* the link dropped or could not be established */
    SEALROOM_E_NOT_FOUND = -9,   /* no such user identity, room or request */
    SEALROOM_E_FORBIDDEN = -10,  /* not a member, or not allowed to do this */
    SEALROOM_E_CONFLICT = -11,   /* already exists (room, identity key, nickname) */
    SEALROOM_E_TOO_LARGE = -12,  /* payload over the service's limit */
    SEALROOM_E_STALE = -13,      /* someone changed the roster first; sync and retry */
    SEALROOM_E_UNAVAILABLE = -14,/* the service is down or unreachable */
    SEALROOM_E_PASSPHRASE = -15, /* the vault does not open with this passphrase */
    SEALROOM_E_RATE_LIMITED = -16,/* too many attempts; the error text says when to retry */
    SEALROOM_E_KEY_CHANGED = -17,/* a user's identity key differs from the pinned one */
    SEALROOM_E_DECRYPT = -18,    /* a message, header or envelope did not decrypt */
    SEALROOM_E_REPLAY = -19,     /* a message seen before under another archive id */
    SEALROOM_E_NO_KEY = -20      /* no room key yet for this epoch (not sealed to us) */
} sealroom_result;

/* A static English description of a result code; never NULL. */
SEALROOM_API const char *sealroom_strerror(int result);

/* ---- Identity ---- */

#define SEALROOM_PUBLICKEYBYTES 32
#define SEALROOM_SECRETKEYBYTES 32   /* the exported secret is the Ed25519 seed */
#define SEALROOM_FINGERPRINTBYTES 72 /* textual fingerprint incl. NUL */
SEALROOM_API size_t sealroom_publickeybytes(void);
SEALROOM_API size_t sealroom_secretkeybytes(void);
SEALROOM_API size_t sealroom_fingerprintbytes(void);

/* An Ed25519 identity key pair, held in guarded, locked memory. */
typedef struct sealroom_identity sealroom_identity;

/* Create a fresh random identity. *out is set (NULL on failure); free it
 * with sealroom_identity_free. Errors: INVALID, NOMEM. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_identity_generate(sealroom_identity **out);

/* Rebuild an identity from the secret exported by sealroom_identity_export
 * (secret borrowed; wipe your copy afterwards). Errors: INVALID (wrong
 * length), NOMEM. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_identity_import(sealroom_identity **out,
                                                               const unsigned char *secret,
                                                               size_t secret_len);

/* Copy the secret (SEALROOM_SECRETKEYBYTES) into out for an application key
 * store. The caller must protect and wipe it. Errors: INVALID (NULL or
 * out_len too small). */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_identity_export(unsigned char *out, size_t out_len,
                                                               const sealroom_identity *id);

/* Copy the public key (SEALROOM_PUBLICKEYBYTES) into pk. Errors: INVALID. */
SEALROOM_API int sealroom_identity_public_key(unsigned char *pk, size_t pk_len,
                                              const sealroom_identity *id);

/* Write the fingerprint of a public key: hex of BLAKE2b-256(pk) in eight
 * groups of eight, separated by spaces (71 characters plus NUL). out must
 * hold SEALROOM_FINGERPRINTBYTES. Errors: INVALID. */
SEALROOM_API int sealroom_fingerprint(char *out, size_t out_len, const unsigned char *pk,
                                      size_t pk_len);

/* Fingerprint of an identity's public key (as sealroom_fingerprint). */
SEALROOM_API int sealroom_identity_fingerprint(char *out, size_t out_len,
                                               const sealroom_identity *id);

/* Wipe and free an identity. NULL is allowed. */
SEALROOM_API void sealroom_identity_free(sealroom_identity *id);

/* ---- Events ---- */

typedef enum sealroom_event_type {
    SEALROOM_EVENT_REQUEST_DONE = 1,   /* an asynchronous request completed */
    SEALROOM_EVENT_MESSAGE = 2,        /* a room message (live or from history) */
    SEALROOM_EVENT_OCCUPANT_JOINED = 3,/* someone (maybe us) is present in a room */
    SEALROOM_EVENT_OCCUPANT_LEFT = 4,  /* someone left a room */
    SEALROOM_EVENT_REMOVED = 5,        /* we were kicked or removed from a room */
    SEALROOM_EVENT_ROSTER_CHANGED = 6, /* the verified roster of a room advanced */
    SEALROOM_EVENT_MESSAGE_REJECTED = 7,   /* a room message failed a check: not shown */
    SEALROOM_EVENT_FINGERPRINT_CHANGED = 8,/* a user's identity key is not the pinned one */
    SEALROOM_EVENT_EPOCH_CHANGED = 9,      /* a room moved to a new key epoch we hold */
    SEALROOM_EVENT_KEY_AGREEMENT_FAILED = 10,/* our part in a room's key agreement run
                                              * stopped on a failed check */
    SEALROOM_EVENT_MESSAGE_RETRACTED = 11, /* a message was retracted by its sender
                                            * (stanza_id: the retracted message's id;
                                            * is_history for a tombstone in history) */
    SEALROOM_EVENT_INDEX_COMPACTED = 12    /* the library compacted part of a room's
                                            * search index by itself (one segment; see
                                            * sealroom_ctx_set_auto_compact) */
} sealroom_event_type;

/* What a request was; sealroom_event_request_kind() on REQUEST_DONE. */
typedef enum sealroom_request_kind {
    SEALROOM_REQ_IDENTITY_REGISTER = 1,
    SEALROOM_REQ_IDENTITY_FETCH = 2,
    SEALROOM_REQ_ROOM_CREATE = 3,
    SEALROOM_REQ_ROSTER_UPDATE = 4, /* add member, remove member, set role */
    SEALROOM_REQ_ROSTER_SYNC = 5,
    SEALROOM_REQ_JOIN = 6,
    SEALROOM_REQ_LEAVE = 7,
    SEALROOM_REQ_SEND = 8,
    SEALROOM_REQ_HISTORY = 9,
    SEALROOM_REQ_ACCOUNT_CREATE = 10,
    SEALROOM_REQ_ACCOUNT_LOGIN = 11,
    SEALROOM_REQ_REKEY = 12,
    SEALROOM_REQ_SEARCH = 13,
    SEALROOM_REQ_COMPACT = 14,
    SEALROOM_REQ_RETRACT = 15
} sealroom_request_kind;

/* Roles in a room's roster. */
typedef enum sealroom_role {
    SEALROOM_ROLE_NONE = 0,
    SEALROOM_ROLE_MEMBER = 1,
    SEALROOM_ROLE_ADMIN = 2,
    SEALROOM_ROLE_OWNER = 3
} sealroom_role;

/* An event handed to the on_event callback. It and every pointer read from
 * it are borrowed and valid only during the callback: copy what you keep.
 * Accessors return NULL / 0 for fields the event type does not carry. */
typedef struct sealroom_event sealroom_event;

SEALROOM_API sealroom_event_type sealroom_event_get_type(const sealroom_event *ev);
/* REQUEST_DONE: the id filled in when the request was made, its kind, and
 * its result (SEALROOM_OK or a negative code). KEY_AGREEMENT_FAILED: the
 * result is the check that failed: VERIFY (a signature, a roster version
 * or hash that is not our verified chain's or predates its last
 * membership change, a non-member in the ring or as us, an epoch the room
 * made from another key than the one we agreed on), DECRYPT (the agreed
 * key does not open the representative's commitment: a round was
 * altered), PROTOCOL (a ring whose structure is impossible, rounds of the
 * run repeated with other values, a round of another run, a run for an
 * epoch we hold), or the code of a local failure (NOMEM). */
SEALROOM_API uint32_t sealroom_event_request_id(const sealroom_event *ev);
SEALROOM_API int sealroom_event_request_kind(const sealroom_event *ev);
SEALROOM_API int sealroom_event_result(const sealroom_event *ev);
/* REQUEST_DONE on failure: "condition[/app-condition]: server text" or a
 * local explanation. REMOVED: the reason given by the room, if any.
 * KEY_AGREEMENT_FAILED: what failed, in English. */
SEALROOM_API const char *sealroom_event_error_text(const sealroom_event *ev);
/* Bare room JID (all types except identity requests). */
SEALROOM_API const char *sealroom_event_room(const sealroom_event *ev);
/* MESSAGE, OCCUPANT_*, REMOVED: the occupant's nickname. */
SEALROOM_API const char *sealroom_event_nick(const sealroom_event *ev);
/* MESSAGE, OCCUPANT_*: the occupant's real bare JID when the room disclosed
 * it. REQUEST_DONE of IDENTITY_FETCH, ROSTER_UPDATE: the user concerned. */
SEALROOM_API const char *sealroom_event_jid(const sealroom_event *ev);
/* MESSAGE and REQUEST_DONE of SEND: the room archive id (XEP-0359 stanza-id);
 * MESSAGE_RETRACTED and REQUEST_DONE of RETRACT: the retracted message's. */
SEALROOM_API const char *sealroom_event_stanza_id(const sealroom_event *ev);
/* MESSAGE and REQUEST_DONE of SEND: the sender's origin-id. */
SEALROOM_API const char *sealroom_event_origin_id(const sealroom_event *ev);
/* MESSAGE: the decrypted, verified payload bytes and their length. */
SEALROOM_API const unsigned char *sealroom_event_payload(const sealroom_event *ev, size_t *len);
/* MESSAGE: milliseconds since the Unix epoch: the archive's delay stamp
 * when present, else the time last given to sealroom_ctx_tick. */
SEALROOM_API int64_t sealroom_event_timestamp_ms(const sealroom_event *ev);
/* MESSAGE: 1 if it came from a history query, 0 if live. */
SEALROOM_API int sealroom_event_is_history(const sealroom_event *ev);
/* MESSAGE, OCCUPANT_*: 1 if it concerns our own occupant. */
SEALROOM_API int sealroom_event_is_self(const sealroom_event *ev);
/* REQUEST_DONE of HISTORY: archive ids of the first and last result (NULL
 * when the page is empty) and whether the page reached the end. */
SEALROOM_API const char *sealroom_event_history_first(const sealroom_event *ev);
SEALROOM_API const char *sealroom_event_history_last(const sealroom_event *ev);
SEALROOM_API int sealroom_event_history_complete(const sealroom_event *ev);
/* REQUEST_DONE of IDENTITY_FETCH: the verified public key (32 bytes). */
SEALROOM_API const unsigned char *sealroom_event_public_key(const sealroom_event *ev);
/* ROSTER_CHANGED and REQUEST_DONE of CREATE/ROSTER_*: the verified version.
 * MESSAGE and MESSAGE_REJECTED: the roster version the message names.
 * EPOCH_CHANGED: the roster version the epoch was made under. */
SEALROOM_API uint64_t sealroom_event_roster_version(const sealroom_event *ev);
/* EPOCH_CHANGED, REQUEST_DONE of REKEY/CREATE/ROSTER_UPDATE, MESSAGE: the
 * key epoch (1 for a new room; 0 when unknown). KEY_AGREEMENT_FAILED: the
 * epoch the failed run was to make. */
SEALROOM_API uint64_t sealroom_event_epoch(const sealroom_event *ev);
/* FINGERPRINT_CHANGED: jid names the user, sealroom_event_public_key gives
 * the new signing key, and these give the new and the pinned fingerprint
 * of the user's whole identity (signing and sealing key; the format of
 * sealroom_fingerprint). Until the app calls
 * sealroom_ctx_accept_fingerprint, the new key is refused with
 * SEALROOM_E_KEY_CHANGED wherever it would be used (and no room key is
 * sealed to it). */
SEALROOM_API const char *sealroom_event_fingerprint(const sealroom_event *ev);
SEALROOM_API const char *sealroom_event_previous_fingerprint(const sealroom_event *ev);
/* KEY_AGREEMENT_FAILED: room names the room. The library wiped its state
 * of the run, installed nothing and told the room to abort the run
 * (unless the room had made its epoch already, which we then refuse); the
 * room keeps its current epoch until a later run (or a member alone)
 * makes a new one. Repeated failures mean the service, or a member, is
 * misbehaving: tell the user.
 * MESSAGE_REJECTED: why (sealroom_event_result gives the code, e.g. VERIFY,
 * DECRYPT, FORBIDDEN for a sender who was not a member, REPLAY, PROTOCOL;
 * sealroom_event_error_text the detail); room, nick, jid (the claimed
 * sender), stanza_id, origin_id and is_history are set as for MESSAGE. */

/* ---- The sans-I/O core ---- */

typedef enum sealroom_log_level {
    SEALROOM_LOG_DEBUG = 0,
    SEALROOM_LOG_INFO = 1,
    SEALROOM_LOG_WARN = 2,
    SEALROOM_LOG_ERROR = 3
} sealroom_log_level;

/* How the core reaches the outside world. Set struct_size to
 * sizeof(sealroom_callbacks) so the library can grow the struct. All
 * function pointers may be NULL except send_xml for sealroom_ctx_new. */
typedef struct sealroom_callbacks {
    size_t struct_size;
    /* Send one complete stanza (xml[0..len), NUL-terminated as well). The
     * buffer is borrowed. Return 0 on success, negative if it could not be
     * queued (the core treats that like a lost stanza). */
    int (*send_xml)(void *user, const char *xml, size_t len);
    /* A log line without a trailing newline; never contains secrets. */
    void (*log)(void *user, sealroom_log_level level, const char *msg);
    /* Every event; see sealroom_event. Do not free or keep ev. You may call
     * request functions of the same ctx from here, but not sealroom_ctx_free. */
    void (*on_event)(void *user, const sealroom_event *ev);
    void *user;
} sealroom_callbacks;

typedef struct sealroom_ctx sealroom_ctx;

/* Create a core for the user own_jid (full or bare JID, copied) talking to
 * the Sealroom service service_jid (e.g. "rooms.example.com", copied).
 * callbacks is copied. The link starts "up". Errors: INVALID, NOMEM. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_ctx_new(sealroom_ctx **out, const char *own_jid,
                                                       const char *service_jid,
                                                       const sealroom_callbacks *callbacks);

/* Optional key store: an app with secure local storage keeps the identity
 * (and its pinned fingerprints) there instead of in the vault on the
 * service. The library hands save() an opaque blob of secrets to store
 * (and wipes its copy afterwards); load() copies the last saved blob into
 * buf (cap bytes) and sets *len, returning 0, or returns 1 if nothing is
 * stored, or negative on failure. Set struct_size to
 * sizeof(sealroom_key_store). */
typedef struct sealroom_key_store {
    size_t struct_size;
    int (*load)(void *user, unsigned char *buf, size_t cap, size_t *len);
    int (*save)(void *user, const unsigned char *blob, size_t len);
    void *user;
} sealroom_key_store;

/* Free the core. Pending requests are dropped without events. NULL allowed. */
SEALROOM_API void sealroom_ctx_free(sealroom_ctx *ctx);

/* Use this identity for registering, creating rooms and signing roster
 * changes. The key is copied (you may free yours). Errors: INVALID, NOMEM. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_ctx_set_identity(sealroom_ctx *ctx,
                                                                const sealroom_identity *id);

/* Keep the identity in the app's key store (copied) instead of the
 * service's vault; NULL restores the vault. Set it before
 * sealroom_account_create / _login. Errors: INVALID. */
SEALROOM_API int sealroom_ctx_set_key_store(sealroom_ctx *ctx, const sealroom_key_store *ks);

/* Argon2id limits for vaults this ctx seals from now on (default:
 * crypto_pwhash OPSLIMIT_MODERATE / MEMLIMIT_MODERATE = 3, 256 MiB).
 * Values below INTERACTIVE (2, 64 MiB) or above SENSITIVE are refused,
 * because every client refuses to open such a vault. Errors: INVALID. */
SEALROOM_API int sealroom_ctx_set_vault_limits(sealroom_ctx *ctx, unsigned long long opslimit,
                                               size_t memlimit);

/* Trust jid's current identity key after a FINGERPRINT_CHANGED: re-pin
 * it (and save the vault). Errors: NOT_FOUND (no changed key pending). */
SEALROOM_API int sealroom_ctx_accept_fingerprint(sealroom_ctx *ctx, const char *jid);

/* The pinned fingerprint of jid's identity (signing and sealing key,
 * formatted as sealroom_fingerprint's) into out
 * (SEALROOM_FINGERPRINTBYTES). Errors: NOT_FOUND, INVALID. */
SEALROOM_API int sealroom_ctx_pinned_fingerprint(const sealroom_ctx *ctx, char *out,
                                                 size_t out_len, const char *jid);

/* Timeout for requests in milliseconds (default 30000; 0 = never). */
SEALROOM_API void sealroom_ctx_set_timeout(sealroom_ctx *ctx, uint32_t timeout_ms);

/* Automatic compaction of the search index of joined rooms (default on).
 * When a room says compaction is due (in its answers to our searches,
 * batch requests and state queries), the library does the jobs of
 * sealroom_room_compact by itself, in the background, one at a time per
 * room, for as long as the room has work, and emits
 * SEALROOM_EVENT_INDEX_COMPACTED (with the room) for each segment made.
 * A job that fails (e.g. DECRYPT: a message under an epoch we do not
 * hold; or not done within its lease or the request timeout) is not
 * repeated at once: the next waits 10 s, doubling after each failure up to
 * 15 min, and for the room to say "due" again. Leaving the room or losing
 * the link ends a job. Searches and sealroom_room_compact work alongside
 * (the room leases disjoint work, so an explicit job may then find
 * nothing: NOT_FOUND). enabled = 0 starts no further job (a running one
 * ends by itself); any other value turns it back on. NULL ctx: no-op. */
SEALROOM_API void sealroom_ctx_set_auto_compact(sealroom_ctx *ctx, int enabled);

/* The detail behind the last failure in this ctx (a failed call or a failed
 * request): borrowed, valid until the next call into ctx. Never NULL. */
SEALROOM_API const char *sealroom_ctx_last_error(const sealroom_ctx *ctx);

/* Feed one received stanza (xml[0..len), borrowed). Returns 1 if it
 * belonged to Sealroom and was consumed, 0 if it was not ours (pass it on
 * to the rest of your client), or a negative code (INVALID for
 * unparseable XML). Events are delivered before this returns. */
SEALROOM_API int sealroom_ctx_receive_xml(sealroom_ctx *ctx, const char *xml, size_t len);

/* Tell the core the current time (monotonic or wall clock milliseconds,
 * but always the same clock): requests past their timeout complete with
 * SEALROOM_E_TIMEOUT. Call it at least every second or so. */
SEALROOM_API void sealroom_ctx_tick(sealroom_ctx *ctx, uint64_t now_ms);

/* The stream to the server dropped. IQ requests in flight complete with
 * SEALROOM_E_NETWORK; joins and unconfirmed messages are kept. */
SEALROOM_API void sealroom_ctx_link_down(sealroom_ctx *ctx);

/* The stream is back (after authentication and initial presence): the core
 * rejoins every room that was joined and resends every message still in
 * the outbox with its original origin-id, so the service can drop
 * duplicates. Errors: the first send failure. */
SEALROOM_API int sealroom_ctx_link_up(sealroom_ctx *ctx);

/* Number of messages sent but not yet confirmed by their reflection. */
SEALROOM_API size_t sealroom_ctx_outbox_size(const sealroom_ctx *ctx);

/* ---- Requests ----
 * Each request function returns SEALROOM_OK once the request is under way
 * and sets *request_id (never 0); the outcome arrives later as a
 * SEALROOM_EVENT_REQUEST_DONE carrying that id. A negative return means
 * nothing was sent and no event will follow. request_id may be NULL.
 * JID arguments are copied. A room may be given as a bare JID or as a bare
 * localpart, which is taken to live at the service. */

/* Create the user's Sealroom account: use the identity set on ctx, or
 * generate one; publish it (signing key with proof of possession, sealing
 * key with its signature); store it in a new vault sealed under passphrase
 * (or in the key store, where passphrase may be NULL). Runs Argon2id once
 * (about a second at the default limits). Completion: CONFLICT if a vault
 * or another identity already exists for the user. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_account_create(sealroom_ctx *ctx,
                                                              uint32_t *request_id,
                                                              const char *passphrase,
                                                              size_t passphrase_len);

/* Log in on this device: fetch the vault, open it with passphrase and use
 * the identity and pins it holds (or load them from the key store). The
 * passphrase is never sent. Completion: NOT_FOUND (no account),
 * PASSPHRASE (wrong passphrase, or the stored vault was altered),
 * RATE_LIMITED (the service limits vault fetches per user), VERIFY (the
 * vault's identity is not the one the service publishes for us). */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_account_login(sealroom_ctx *ctx,
                                                             uint32_t *request_id,
                                                             const char *passphrase,
                                                             size_t passphrase_len);

/* Publish our identity key with its proof of possession. Errors: STATE (no
 * identity set). Completion: CONFLICT if another key is registered. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_identity_register(sealroom_ctx *ctx,
                                                                 uint32_t *request_id);

/* Fetch and verify another user's registered identity key; the result
 * carries it (sealroom_event_public_key) and the core remembers it for
 * sealroom_room_add_member. Completion: NOT_FOUND, VERIFY (bad proof). */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_identity_fetch(sealroom_ctx *ctx,
                                                              uint32_t *request_id,
                                                              const char *jid);

/* The public key of jid as last fetched and verified, copied into pk
 * (32 bytes). Errors: NOT_FOUND, INVALID. */
SEALROOM_API int sealroom_ctx_known_key(const sealroom_ctx *ctx, unsigned char *pk, size_t pk_len,
                                        const char *jid);

/* Create a room with us as its only owner (roster version 0, signed).
 * Completion: CONFLICT if it exists. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_room_create(sealroom_ctx *ctx,
                                                           uint32_t *request_id,
                                                           const char *room);

/* Add jid with role (MEMBER, ADMIN or OWNER). pk is the member's identity
 * key (32 bytes, borrowed) or NULL to fetch the registered one first. The
 * core syncs the roster first if it has none for this room and, if someone
 * else changed it meanwhile (STALE), syncs and retries once. The room
 * then makes a new epoch for the new membership (a key agreement run among
 * the members online, changes close together folded into one, or our own
 * epoch if we are alone); the request completes when we hold that epoch
 * (its number in the completion, after EPOCH_CHANGED). The same holds for
 * sealroom_room_remove_member: once it completes, the removed member can
 * read nothing sent later. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_room_add_member(sealroom_ctx *ctx,
                                                               uint32_t *request_id,
                                                               const char *room, const char *jid,
                                                               sealroom_role role,
                                                               const unsigned char *pk);

/* Remove jid (may be ourselves: leaving the membership). As add_member. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_room_remove_member(sealroom_ctx *ctx,
                                                                  uint32_t *request_id,
                                                                  const char *room,
                                                                  const char *jid);

/* Change the role of member jid. As add_member. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_room_set_role(sealroom_ctx *ctx,
                                                             uint32_t *request_id,
                                                             const char *room, const char *jid,
                                                             sealroom_role role);

/* Fetch the room's roster chain from our verified head onward and verify
 * every version. Completion: VERIFY if any version fails (the previously
 * verified state is kept), FORBIDDEN if we are not a member. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_room_sync(sealroom_ctx *ctx, uint32_t *request_id,
                                                         const char *room);

/* The verified roster version of room. Errors: NOT_FOUND (never synced). */
SEALROOM_API int sealroom_room_roster_version(const sealroom_ctx *ctx, uint64_t *version,
                                              const char *room);

/* Number of members in the verified roster (0 if unknown). */
SEALROOM_API size_t sealroom_room_member_count(const sealroom_ctx *ctx, const char *room);

/* Member number index (sorted by JID) of the verified roster: *jid is
 * borrowed until the roster changes; role and pk (32 bytes) may be NULL.
 * Errors: NOT_FOUND. */
SEALROOM_API int sealroom_room_member(const sealroom_ctx *ctx, const char **jid,
                                      sealroom_role *role, unsigned char *pk, const char *room,
                                      size_t index);

/* Role of jid in the verified roster, SEALROOM_ROLE_NONE if absent. */
SEALROOM_API sealroom_role sealroom_room_member_role(const sealroom_ctx *ctx, const char *room,
                                                     const char *jid);

/* Enter room under nick. Completes when the room confirms our presence
 * (status 110); FORBIDDEN if not a member, CONFLICT if the nick is taken.
 * Joined rooms are rejoined automatically by sealroom_ctx_link_up. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_room_join(sealroom_ctx *ctx, uint32_t *request_id,
                                                         const char *room, const char *nick);

/* Leave a joined room. Errors: STATE if not joined. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_room_leave(sealroom_ctx *ctx, uint32_t *request_id,
                                                          const char *room);

/* Send payload (borrowed, copied into the outbox) to a joined room. The
 * message stays in the outbox until the room reflects it; completion
 * carries the archive stanza-id. A message unconfirmed when the link drops
 * is resent by sealroom_ctx_link_up with the same origin-id, and one the
 * room refuses for now (error type "wait": not stored) is resent after a
 * second, until the request timeout. origin_id_out
 * (may be NULL, else at least SEALROOM_ORIGIN_ID_BYTES) receives the
 * origin-id.
 * Errors: STATE (not joined), TOO_LARGE (over 1 MiB locally). */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_room_send(sealroom_ctx *ctx, uint32_t *request_id,
                                                         char *origin_id_out,
                                                         size_t origin_id_len, const char *room,
                                                         const unsigned char *payload,
                                                         size_t payload_len);

/* Query the room archive: the page of at most max messages (0 = server
 * default) before archive id before_id, or the newest page if before_id is
 * NULL. Each result is a MESSAGE event with is_history set, oldest first;
 * then the REQUEST_DONE with first/last ids and the complete flag. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_room_history(sealroom_ctx *ctx,
                                                            uint32_t *request_id,
                                                            const char *room,
                                                            const char *before_id, unsigned max);

/* Search the room's archive for the messages that contain every word of
 * query (at most 8 words after normalisation: Unicode NFKC, case folded;
 * Japanese, Chinese and Korean text by overlapping pairs of characters).
 * The room answers from its encrypted index without learning the words.
 * Each match is a MESSAGE event with is_history set, newest first, then
 * the REQUEST_DONE carries the archive ids of the newest and oldest match
 * of the page (sealroom_event_history_first/last) and whether no older
 * match exists (history_complete); pass the last id as before_id for the
 * next page. max is 1..200 (0: 50). Matches are decrypted and verified
 * like history, and delivered only if the plaintext really contains the
 * words. Messages are indexed when sent with this library, if their
 * payload is UTF-8 text. Errors: INVALID (no word, over 8 words, bad
 * before_id), STATE (not joined, link down), UNAVAILABLE (the room has no
 * encrypted search), TIMEOUT (no keyring we can open came in time). */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_room_search(sealroom_ctx *ctx, uint32_t *request_id,
                                                           const char *room, const char *query,
                                                           const char *before_id, unsigned max);

/* Retract one of our own messages (XEP-0424) by its archive id (the
 * stanza-id of its MESSAGE event or send completion): the room erases the
 * stored payload, every occupant gets SEALROOM_EVENT_MESSAGE_RETRACTED,
 * history shows a tombstone (the same event with is_history) and searches
 * never return it again. Completes when the room has done it. Errors:
 * INVALID (not an archive id), STATE (not joined, link down), FORBIDDEN
 * (not our message), NOT_FOUND (no such message). */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_room_retract(sealroom_ctx *ctx, uint32_t *request_id,
                                                            const char *room,
                                                            const char *stanza_id);

/* Do one compaction job of the room's search index, if the room has one:
 * take a lease, read and decrypt the messages of the sealed batches (or
 * small segments) it names, and replace them with one static segment that
 * searches read with fewer probes. Nothing changes for searches until the
 * job commits; a job that stops midway leaves the index as it was. Any
 * member may do it; the library does it by itself when the room says it
 * is due (sealroom_ctx_set_auto_compact). Errors: NOT_FOUND
 * (nothing to compact now), DECRYPT (a message of the job could not be
 * read: the job is abandoned rather than drop it from the index), STATE,
 * UNAVAILABLE (no encrypted search). */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_room_compact(sealroom_ctx *ctx,
                                                            uint32_t *request_id,
                                                            const char *room);

/* Ask the room for a new key epoch now (a member may ask at any time,
 * e.g. after suspecting a device was compromised). The room answers that
 * it runs a key agreement among the members online (the request then
 * completes when the library holds the epoch that run makes), or, when we
 * are the only member online, the library starts the epoch itself and
 * seals it to every member. The library asks by itself before sending
 * when the epoch is older than the service's maximum age or older than
 * the latest membership change, and starts epoch 1 of a room it creates;
 * adding or removing a member does not start an epoch on this device (the
 * room runs a key agreement for it). Completion carries the new epoch
 * (sealroom_event_epoch); it fails with the run's code if our part in the
 * run fails a check (see SEALROOM_EVENT_KEY_AGREEMENT_FAILED), FORBIDDEN
 * if we are not a member, TIMEOUT if no epoch came in time. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_room_rekey(sealroom_ctx *ctx, uint32_t *request_id,
                                                          const char *room);

/* The key epoch we hold for room. Errors: NOT_FOUND (none yet). */
SEALROOM_API int sealroom_room_epoch(const sealroom_ctx *ctx, uint64_t *epoch, const char *room);

#define SEALROOM_ORIGIN_ID_BYTES 40

/* ---- The blocking client ----
 * A simple, blocking client on top of libstrophe and the adapter in
 * sealroom/strophe.h: for small programs and tests. It owns its own
 * libstrophe context and connection. */

typedef struct sealroom_client sealroom_client;

/* Connection flags for sealroom_client_options.flags. */
#define SEALROOM_CLIENT_TLS_DISABLE 0x1u  /* never use TLS (loopback tests) */
#define SEALROOM_CLIENT_TLS_REQUIRE 0x2u  /* fail unless TLS is used */
#define SEALROOM_CLIENT_TLS_TRUST 0x4u    /* accept any certificate */
#define SEALROOM_CLIENT_TLS_VERIFY 0x8u   /* verify even on loopback */

typedef struct sealroom_client_options {
    size_t struct_size;       /* sizeof(sealroom_client_options) */
    const char *jid;          /* user JID; a resource is optional */
    const char *password;
    const char *host;         /* NULL: from DNS SRV / the JID's domain */
    unsigned short port;      /* 0: default */
    const char *service_jid;  /* the Sealroom service, e.g. "rooms.example.com" */
    uint32_t timeout_ms;      /* connect timeout, and default request timeout */
    unsigned flags;           /* SEALROOM_CLIENT_* */
} sealroom_client_options;

/* Connect, authenticate and send initial presence; blocks up to
 * timeout_ms. TLS is used when the server offers it; certificates are
 * verified unless host is a loopback address (127.0.0.1, ::1, localhost),
 * where self-signed test certificates are accepted. All strings are
 * copied; libstrophe keeps its own copy of the password for reconnects.
 * Errors: INVALID, NOMEM, NETWORK (connection or authentication failed),
 * TIMEOUT. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_client_connect(sealroom_client **out,
                                                              const char *jid,
                                                              const char *password,
                                                              const char *host,
                                                              unsigned short port,
                                                              const char *service_jid,
                                                              uint32_t timeout_ms);

/* As sealroom_client_connect, with options (opts borrowed). */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_client_connect_ex(sealroom_client **out,
                                                                 const sealroom_client_options *opts);

/* The client's core, for the request functions above. Borrowed: valid until
 * sealroom_client_free. */
SEALROOM_API sealroom_ctx *sealroom_client_ctx(sealroom_client *client);

/* As sealroom_ctx_set_identity on the client's core. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_client_set_identity(sealroom_client *client,
                                                                   const sealroom_identity *id);

/* Receive every event of the client's core (events are also recorded for
 * sealroom_client_wait). fn may be NULL to stop. */
SEALROOM_API void sealroom_client_set_event_handler(sealroom_client *client,
                                                    void (*fn)(void *user,
                                                               const sealroom_event *ev),
                                                    void *user);

/* Receive the core's log lines (see sealroom_callbacks.log). fn may be NULL. */
SEALROOM_API void sealroom_client_set_log_handler(sealroom_client *client,
                                                  void (*fn)(void *user, sealroom_log_level level,
                                                             const char *msg),
                                                  void *user);

/* Run the loop until request_id completes, and return its result
 * (SEALROOM_OK or negative; ctx_last_error has the detail). TIMEOUT if
 * it did not complete within timeout_ms, NETWORK if the link dropped,
 * NOT_FOUND if no such request is known. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_client_wait(sealroom_client *client,
                                                           uint32_t request_id,
                                                           uint32_t timeout_ms);

/* Run the loop for timeout_ms, delivering events; 0 handles what is ready
 * without waiting (to drive many clients from one thread). Returns OK, or
 * NETWORK if the link is down. */
SEALROOM_API int sealroom_client_run(sealroom_client *client, uint32_t timeout_ms);

/* 1 while the stream is up, else 0. */
SEALROOM_API int sealroom_client_is_connected(const sealroom_client *client);

/* Drop the stream without freeing anything (as a lost link would; for
 * tests and for apps going offline). The core's link_down runs. */
SEALROOM_API void sealroom_client_disconnect(sealroom_client *client);

/* Reconnect after the link was lost, then sealroom_ctx_link_up: rooms are
 * rejoined and the outbox resent. Blocks up to timeout_ms. Errors as
 * sealroom_client_connect; STATE if already connected. */
SEALROOM_API SEALROOM_WARN_UNUSED int sealroom_client_reconnect(sealroom_client *client,
                                                                uint32_t timeout_ms);

/* Disconnect and free everything. NULL allowed. */
SEALROOM_API void sealroom_client_free(sealroom_client *client);

#ifdef __cplusplus
}
#endif

#endif
