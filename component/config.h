/* sealroomd configuration: a table of keys (type, default, reloadable,
 * secret) read from an INI-style file, overridden by SEALROOMD_* environment
 * variables. A bad first load is fatal with file and line; a bad reload keeps
 * the old configuration. Secrets are never logged. */
#ifndef SEALROOMD_CONFIG_H
#define SEALROOMD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

/* The live configuration. Strings are owned by the config (heap). */
typedef struct config {
    char *component_jid;       /* component.jid        e.g. rooms.localhost */
    char *component_secret;    /* component.secret     (secret) */
    char *xmpp_host;           /* xmpp.host            127.0.0.1 */
    int xmpp_port;             /* xmpp.port            5347 */
    int reconnect_min_ms;      /* xmpp.reconnect_min_ms 250 */
    int reconnect_max_ms;      /* xmpp.reconnect_max_ms 30000 */
    char *fanout_jid;          /* xmpp.fanout_jid      "" (reloadable): XEP-0033 fan-out service */
    char *db_conninfo;         /* db.conninfo          (secret: may hold a password) */
    char *log_file;            /* log.file             "-" = stderr (reloadable) */
    char *log_level;           /* log.level            info (reloadable) */
    char *admins;              /* admin.jids           space-separated bare JIDs (reloadable) */
    int max_payload_bytes;     /* limits.max_payload_bytes 65536 (reloadable) */
    int mam_default_page;      /* limits.mam_default_page 50 (reloadable) */
    int mam_max_page;          /* limits.mam_max_page   250 (reloadable) */
    int write_batch_max;       /* db.write_batch_max   512 (reloadable): units per group commit */
    char *instance_name;       /* instance.name        hostname-pid default */
    int epoch_max_age;         /* epoch.max_age        86400 s (reloadable): then a rekey is due */
    int epoch_max_members;     /* epoch.max_members    10000 (reloadable): envelopes per epoch */
    int vault_fetch_burst;     /* vault.fetch_burst    5 (reloadable): vault fetches in a row */
    int vault_fetch_per_hour;  /* vault.fetch_per_hour 30 (reloadable): sustained fetch rate */
    int dmkd_coalesce_ms;      /* dmkd.coalesce_ms     2000 (reloadable): fold membership changes */
    int dmkd_round_timeout_ms; /* dmkd.round_timeout_ms 10000 (reloadable): then drop and restart */
    int dmkd_retry_ms;         /* dmkd.retry_ms        30000 (reloadable): after a failed run */
    int sweep_threads;         /* archive.sweep_threads 2: archive re-keying worker threads */
    int sweep_batch;           /* archive.sweep_batch  1000: headers re-keyed per transaction */
    int search_threads;        /* search.threads       2: encrypted-search worker threads */
    int search_cache_mb;       /* search.cache_mb      64: search cache (listings, blocks) */
    int search_lease_ms;       /* search.lease_ms      60000 (reloadable): compaction lease */
    int search_max_entries;    /* search.max_entries   8192 (reloadable): index entries per message */
} config;

/* Load from `path` (may be NULL: defaults + environment only). On failure
 * writes a message naming file and line into err and returns -1. */
int config_load(config *out, const char *path, char *err, size_t errlen);

/* Re-read `path` into a candidate; if valid and only reloadable keys
 * changed, swap it into *live and return 0. Otherwise *live is untouched,
 * err says why, returns -1. */
int config_reload(config *live, const char *path, char *err, size_t errlen);
/* After a successful reload, pointers to non-reloadable strings (the JID,
 * the secret, the conninfo) are unchanged; reloadable strings are replaced,
 * so read them from the config at use and do not keep them. */

void config_free(config *c);

/* Write every key and value to the info log, secrets as "(redacted)". */
void config_log(const config *c);

/* For the unit tests and for `sealroomd --help-config`: iterate the key table. */
typedef enum { CFG_STRING, CFG_INT } config_type;
typedef struct config_key_info {
    const char *name;
    config_type type;
    const char *default_value;
    bool reloadable;
    bool secret;
    const char *help;
} config_key_info;
const config_key_info *config_keys(size_t *count);

#endif
