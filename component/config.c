/* sealroomd configuration: the key table, the INI-style file parser, the
 * SEALROOMD_* environment overrides, validation with file:line errors,
 * reload (only reloadable keys may change) and redacted logging. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"

typedef const char *(*value_check)(const char *value);

static const char *check_level(const char *v);
static const char *check_domain(const char *v);
static const char *check_nonempty(const char *v);
static const char *check_admins(const char *v);
static const char *check_optional_domain(const char *v);

/* The one list of keys; expanded into the public info table and the
 * private metadata table so the two can never drift apart.
 * X(field, name, type, default, min, max, reloadable, secret, check, help)
 * A NULL default means "required" unless the key is computed (instance.name). */
#define CONFIG_KEYS(X)                                                                             \
    X(component_jid, "component.jid", CFG_STRING, "rooms.localhost", 0, 0, false, false,           \
      check_domain, "Component JID (domain) the XMPP server routes to sealroomd.")                 \
    X(component_secret, "component.secret", CFG_STRING, NULL, 0, 0, false, true, check_nonempty,   \
      "Shared secret of the XEP-0114 handshake; must match the server. Required.")                 \
    X(xmpp_host, "xmpp.host", CFG_STRING, "127.0.0.1", 0, 0, false, false, check_nonempty,         \
      "Host of the XMPP server's component port. Component streams are not encrypted: keep it "    \
      "on loopback or a private link.")                                                            \
    X(xmpp_port, "xmpp.port", CFG_INT, "5347", 1, 65535, false, false, NULL,                       \
      "Port of the XMPP server's component listener.")                                             \
    X(reconnect_min_ms, "xmpp.reconnect_min_ms", CFG_INT, "250", 1, 3600000, false, false, NULL,   \
      "First reconnect delay after the link drops (ms); doubles up to reconnect_max_ms.")          \
    X(reconnect_max_ms, "xmpp.reconnect_max_ms", CFG_INT, "30000", 1, 3600000, false, false, NULL, \
      "Longest reconnect delay (ms).")                                                             \
    X(fanout_jid, "xmpp.fanout_jid", CFG_STRING, "", 0, 0, true, false, check_optional_domain,    \
      "Server-side fan-out service (XEP-0033 addressing) that copies one reflected message to "    \
      "every occupant, e.g. the Prosody host with contrib/prosody/mod_sealroom_fanout.lua. "       \
      "Empty: sealroomd sends one copy per occupant itself.")                                     \
    X(db_conninfo, "db.conninfo", CFG_STRING, "dbname=sealroom", 0, 0, false, true, NULL,          \
      "libpq connection string; may hold a password, so it is never logged.")                     \
    X(write_batch_max, "db.write_batch_max", CFG_INT, "512", 1, 65536, true, false, NULL,          \
      "Most write units grouped into one commit.")                                                 \
    X(log_file, "log.file", CFG_STRING, "-", 0, 0, true, false, NULL,                              \
      "Log file, or - for stderr. Reopened on SIGHUP.")                                            \
    X(log_level, "log.level", CFG_STRING, "info", 0, 0, true, false, check_level,                  \
      "One of error, warn, info, debug.")                                                          \
    X(admins, "admin.jids", CFG_STRING, "", 0, 0, true, false, check_admins,                       \
      "Space-separated bare JIDs allowed to run admin commands.")                                  \
    X(max_payload_bytes, "limits.max_payload_bytes", CFG_INT, "65536", 1, 262144, true, false,     \
      NULL, "Largest protocol payload accepted in one stanza (bytes).")                            \
    X(mam_default_page, "limits.mam_default_page", CFG_INT, "50", 1, 10000, true, false, NULL,     \
      "History page size when a query asks for none.")                                             \
    X(mam_max_page, "limits.mam_max_page", CFG_INT, "250", 1, 10000, true, false, NULL,            \
      "Largest history page served.")                                                              \
    X(instance_name, "instance.name", CFG_STRING, NULL, 0, 0, false, false, NULL,                  \
      "Name of this instance among several sharing one database; default hostname-pid.")          \
    X(epoch_max_age, "epoch.max_age", CFG_INT, "86400", 1, 31536000, true, false, NULL,          \
      "Age (seconds) after which a room's epoch is expired: data keys are refused for it and a "  \
      "present member is asked to start a new one.")                                               \
    X(epoch_max_members, "epoch.max_members", CFG_INT, "10000", 1, 1000000, true, false, NULL,    \
      "Most envelopes (members) one new epoch may carry.")                                         \
    X(vault_fetch_burst, "vault.fetch_burst", CFG_INT, "5", 1, 100000, true, false, NULL,         \
      "Vault fetches a user may make in a row before the rate limit applies (token bucket "       \
      "size). It limits load and online probing through a stolen XMPP password; offline "          \
      "guessing needs only one fetched vault, and only Argon2id resists that.")                   \
    X(vault_fetch_per_hour, "vault.fetch_per_hour", CFG_INT, "30", 1, 3600000, true, false, NULL, \
      "Vault fetches per hour a user regains after the burst (token refill rate).")               \
    X(dmkd_coalesce_ms, "dmkd.coalesce_ms", CFG_INT, "2000", 0, 600000, true, false, NULL,       \
      "Milliseconds a key-distribution run waits after a membership change, so that changes "     \
      "arriving together make one run and one epoch.")                                             \
    X(dmkd_round_timeout_ms, "dmkd.round_timeout_ms", CFG_INT, "10000", 100, 600000, true,       \
      false, NULL,                                                                                 \
      "Milliseconds a member session has to answer a round of a key-distribution run before "    \
      "it is dropped and the run restarts without it.")                                            \
    X(dmkd_retry_ms, "dmkd.retry_ms", CFG_INT, "30000", 0, 3600000, true, false, NULL,            \
      "Milliseconds before a room tries another run after one failed (a member aborted it or "    \
      "the members' key confirmations differed).")                                                  \
    X(sweep_threads, "archive.sweep_threads", CFG_INT, "2", 1, 64, false, false, NULL,            \
      "Worker threads re-keying archived data-key headers to their room's current epoch, each "   \
      "with its own database connection; they share even one big room.")                          \
    X(sweep_batch, "archive.sweep_batch", CFG_INT, "1000", 1, 100000, false, false, NULL,         \
      "Headers re-keyed per transaction by a sweep worker.")                                     \
    X(search_threads, "search.threads", CFG_INT, "2", 1, 64, false, false, NULL,                  \
      "Worker threads evaluating encrypted searches, each with its own database connection.")    \
    X(search_cache_mb, "search.cache_mb", CFG_INT, "64", 0, 65536, false, false, NULL,             \
      "Megabytes the search workers keep of what searches read (room listings, entries of "     \
      "sealed batches, posting blocks opened), so that the next page or the same word again reads from memory; 0 turns it "     \
      "off. What is kept is the searches' access pattern, never a key.")                        \
    X(search_lease_ms, "search.lease_ms", CFG_INT, "60000", 1000, 3600000, true, false, NULL,     \
      "Milliseconds a member has to build and commit a search-index segment it leased "          \
      "(<compact/>); after that the lease is void and its staged blocks are deleted.")            \
    X(search_max_entries, "search.max_entries", CFG_INT, "8192", 8, 8192, true, false, NULL,      \
      "Most search-index entries one message may carry (its <index/>; counts are multiples "     \
      "of 8).")

#define X_INFO(field, name, type, def, min, max, rel, sec, check, help)                            \
    {name, type, def, rel, sec, help},
static const config_key_info key_info[] = {CONFIG_KEYS(X_INFO)};

typedef struct key_meta {
    size_t offset;
    int min, max;
    value_check check;
} key_meta;

#define X_META(field, name, type, def, min, max, rel, sec, check, help)                            \
    {offsetof(config, field), min, max, check},
static const key_meta key_meta_tab[] = {CONFIG_KEYS(X_META)};

#define NKEYS (sizeof key_info / sizeof key_info[0])
_Static_assert(sizeof key_meta_tab / sizeof key_meta_tab[0] == NKEYS, "key tables differ");

/* Where each key's value came from, so an error can point at it. */
enum { SRC_DEFAULT = 0, SRC_ENV = -1 };

typedef struct load_state {
    const char *path;
    int src[NKEYS]; /* SRC_DEFAULT, SRC_ENV, or the file line */
    char *err;
    size_t errlen;
} load_state;

static char **str_slot(config *c, size_t i)
{
    return (char **)((char *)c + key_meta_tab[i].offset);
}

static int *int_slot(config *c, size_t i)
{
    return (int *)((char *)c + key_meta_tab[i].offset);
}

static const char *str_get(const config *c, size_t i)
{
    return *(char *const *)((const char *)c + key_meta_tab[i].offset);
}

static int int_get(const config *c, size_t i)
{
    return *(const int *)((const char *)c + key_meta_tab[i].offset);
}

/* Every string may have passed through a secret's hands (values are
 * swapped around during parsing): wipe them all, it costs nothing. */
static void str_wipe_free(char *s)
{
    if (!s) return;
    sodium_memzero(s, strlen(s));
    free(s);
}

/* SEALROOMD_ + the key upper-cased with dots as underscores. */
static void env_name(char *out, size_t outlen, size_t key)
{
    size_t n = (size_t)snprintf(out, outlen, "SEALROOMD_");
    for (const char *p = key_info[key].name; *p && n + 1 < outlen; p++)
        out[n++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

static void set_err(load_state *st, size_t key, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* line: >0 a file line, SRC_ENV the key's environment variable, 0 the file
 * as a whole (or "configuration" when there is no file). */
static void set_err(load_state *st, size_t key, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!st->err || st->errlen == 0) return;
    if (line > 0) {
        snprintf(st->err, st->errlen, "%s:%d: %s", st->path, line, msg);
    } else if (line == SRC_ENV && key < NKEYS) {
        char env[128];
        env_name(env, sizeof env, key);
        snprintf(st->err, st->errlen, "environment %s: %s", env, msg);
    } else {
        snprintf(st->err, st->errlen, "%s: %s", st->path ? st->path : "configuration", msg);
    }
}

static const char *check_level(const char *v)
{
    log_level l;
    return log_level_parse(v, &l) == 0 ? NULL : "must be one of error, warn, info, debug";
}

static const char *check_nonempty(const char *v)
{
    return v[0] ? NULL : "must not be empty";
}

static const char *check_optional_domain(const char *v)
{
    return v[0] ? check_domain(v) : NULL;
}

static const char *check_domain(const char *v)
{
    if (!v[0]) return "must not be empty";
    for (const char *p = v; *p; p++) {
        if (*p == '@' || *p == '/' || isspace((unsigned char)*p))
            return "must be a bare domain (no '@', '/' or spaces)";
    }
    return NULL;
}

static const char *check_admins(const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '/') return "must be bare JIDs (no resource)";
    }
    return NULL;
}

static int parse_int(const char *s, long *out)
{
    char *end;
    if (!s[0] || isspace((unsigned char)s[0])) return -1;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

/* Store one value (copied) for key i; the error names the key and the
 * place the value came from. */
static int set_value(config *c, load_state *st, size_t i, const char *value, int src)
{
    const config_key_info *k = &key_info[i];
    const key_meta *m = &key_meta_tab[i];

    if (k->type == CFG_INT) {
        long v;
        if (parse_int(value, &v) != 0) {
            set_err(st, i, src, "%s: not an integer: \"%s\"", k->name, value);
            return -1;
        }
        if (v < m->min || v > m->max) {
            set_err(st, i, src, "%s: %ld is out of range (%d..%d)", k->name, v, m->min, m->max);
            return -1;
        }
        *int_slot(c, i) = (int)v;
    } else {
        const char *why = m->check ? m->check(value) : NULL;
        if (why) {
            if (k->secret)
                set_err(st, i, src, "%s: %s", k->name, why);
            else
                set_err(st, i, src, "%s: %s: \"%s\"", k->name, why, value);
            return -1;
        }
        char *copy = strdup(value);
        if (!copy) {
            set_err(st, i, src, "%s: out of memory", k->name);
            return -1;
        }
        str_wipe_free(*str_slot(c, i));
        *str_slot(c, i) = copy;
    }
    st->src[i] = src;
    return 0;
}

static size_t find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcasecmp(key_info[i].name, name) == 0) return i;
    }
    return NKEYS;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    return s;
}

static bool valid_name(const char *s)
{
    if (!s[0]) return false;
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '.' && *s != '-') return false;
    }
    return true;
}

/* Unquote a "..." value in place; \" and \\ are the only escapes. */
static const char *unquote(char *v)
{
    char *w = v;
    const char *r = v + 1;
    for (;;) {
        if (*r == '\0') return "unterminated quoted value";
        if (*r == '"') break;
        if (*r == '\\') {
            r++;
            if (*r != '"' && *r != '\\') return "bad escape in quoted value (only \\\" and \\\\)";
        }
        *w++ = *r++;
    }
    r++;
    while (isspace((unsigned char)*r)) r++;
    if (*r) return "text after the closing quote (comments go on their own line)";
    *w = '\0';
    return NULL;
}

static int parse_line(config *c, load_state *st, char *raw, int lineno, char *section,
                      size_t seclen)
{
    char *s = trim(raw);
    if (!s[0] || s[0] == '#' || s[0] == ';') return 0;

    if (s[0] == '[') {
        size_t n = strlen(s);
        if (s[n - 1] != ']') {
            set_err(st, NKEYS, lineno, "section header without closing ']'");
            return -1;
        }
        s[n - 1] = '\0';
        char *name = trim(s + 1);
        if (!valid_name(name) || strlen(name) + 1 >= seclen) {
            set_err(st, NKEYS, lineno, "bad section name \"%s\"", name);
            return -1;
        }
        snprintf(section, seclen, "%s", name);
        return 0;
    }

    char *eq = strchr(s, '=');
    if (!eq) {
        set_err(st, NKEYS, lineno, "expected 'key = value'");
        return -1;
    }
    *eq = '\0';
    char *key = trim(s);
    char *value = trim(eq + 1);
    if (!valid_name(key)) {
        set_err(st, NKEYS, lineno, "bad key name \"%s\"", key);
        return -1;
    }
    char full[256];
    int n = section[0] ? snprintf(full, sizeof full, "%s.%s", section, key)
                       : snprintf(full, sizeof full, "%s", key);
    if (n < 0 || (size_t)n >= sizeof full) {
        set_err(st, NKEYS, lineno, "key name too long");
        return -1;
    }
    size_t i = find_key(full);
    if (i == NKEYS) {
        set_err(st, NKEYS, lineno, "unknown key \"%s\"", full);
        return -1;
    }
    if (st->src[i] > 0) {
        set_err(st, i, lineno, "%s set twice (first on line %d)", key_info[i].name, st->src[i]);
        return -1;
    }
    if (value[0] == '"') {
        const char *why = unquote(value);
        if (why) {
            set_err(st, i, lineno, "%s: %s", key_info[i].name, why);
            return -1;
        }
    }
    return set_value(c, st, i, value, lineno);
}

static int parse_file(config *c, load_state *st)
{
    FILE *f = fopen(st->path, "re");
    if (!f) {
        set_err(st, NKEYS, 0, "cannot open: %s", strerror(errno));
        return -1;
    }
    char section[128] = "";
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (strlen(line) != (size_t)len) {
            set_err(st, NKEYS, lineno, "NUL byte in line");
            rc = -1;
            break;
        }
        if (parse_line(c, st, line, lineno, section, sizeof section) != 0) {
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        set_err(st, NKEYS, 0, "read error: %s", strerror(errno));
        rc = -1;
    }
    /* The buffer held the secret's line. */
    if (line) sodium_memzero(line, cap);
    free(line);
    fclose(f);
    return rc;
}

extern char **environ;

static int apply_env(config *c, load_state *st)
{
    for (size_t i = 0; i < NKEYS; i++) {
        char env[128];
        env_name(env, sizeof env, i);
        const char *v = getenv(env);
        if (v && set_value(c, st, i, v, SRC_ENV) != 0) return -1;
    }
    /* A misspelt override would otherwise be silently ignored. */
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "SEALROOMD_", 10) != 0) continue;
        size_t namelen = strcspn(*e, "=");
        bool known = false;
        for (size_t i = 0; i < NKEYS && !known; i++) {
            char env[128];
            env_name(env, sizeof env, i);
            known = strlen(env) == namelen && strncmp(env, *e, namelen) == 0;
        }
        if (!known) log_warn("config", "ignoring unknown variable %.*s", (int)namelen, *e);
    }
    return 0;
}

static size_t key_index(const char *name)
{
    size_t i = find_key(name);
    if (i == NKEYS) abort(); /* a typo in this file, not in the input */
    return i;
}

static int finish(config *c, load_state *st)
{
    if (!c->instance_name || !c->instance_name[0]) {
        char host[256] = "sealroomd";
        if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "sealroomd");
        host[sizeof host - 1] = '\0';
        char name[300];
        snprintf(name, sizeof name, "%s-%ld", host, (long)getpid());
        char *copy = strdup(name);
        if (!copy) {
            set_err(st, NKEYS, 0, "out of memory");
            return -1;
        }
        str_wipe_free(c->instance_name);
        c->instance_name = copy;
    }
    for (size_t i = 0; i < NKEYS; i++) {
        if (key_info[i].type == CFG_STRING && !*str_slot(c, i)) {
            set_err(st, i, 0, "%s is required (no default): set it in the file or in the environment",
                    key_info[i].name);
            return -1;
        }
    }
    if (c->reconnect_max_ms < c->reconnect_min_ms) {
        size_t i = key_index("xmpp.reconnect_max_ms");
        set_err(st, i, st->src[i], "xmpp.reconnect_max_ms (%d) is below xmpp.reconnect_min_ms (%d)",
                c->reconnect_max_ms, c->reconnect_min_ms);
        return -1;
    }
    if (c->mam_default_page > c->mam_max_page) {
        size_t i = key_index("limits.mam_default_page");
        set_err(st, i, st->src[i], "limits.mam_default_page (%d) exceeds limits.mam_max_page (%d)",
                c->mam_default_page, c->mam_max_page);
        return -1;
    }
    return 0;
}

int config_load(config *out, const char *path, char *err, size_t errlen)
{
    config c;
    load_state st = {.path = path, .err = err, .errlen = errlen};

    memset(&c, 0, sizeof c);
    if (err && errlen) err[0] = '\0';
    for (size_t i = 0; i < NKEYS; i++) {
        if (key_info[i].default_value && set_value(&c, &st, i, key_info[i].default_value, 0) != 0)
            goto fail;
    }
    if (path && parse_file(&c, &st) != 0) goto fail;
    if (apply_env(&c, &st) != 0) goto fail;
    if (finish(&c, &st) != 0) goto fail;
    *out = c;
    return 0;
fail:
    config_free(&c);
    return -1;
}

static bool same_value(const config *a, const config *b, size_t i)
{
    if (key_info[i].type == CFG_INT) return int_get(a, i) == int_get(b, i);
    const char *x = str_get(a, i), *y = str_get(b, i);
    if (!x || !y) return x == y;
    size_t n = strlen(x);
    if (n != strlen(y)) return false;
    return key_info[i].secret ? sodium_memcmp(x, y, n) == 0 : memcmp(x, y, n) == 0;
}

int config_reload(config *live, const char *path, char *err, size_t errlen)
{
    config cand;
    if (config_load(&cand, path, err, errlen) != 0) return -1;

    for (size_t i = 0; i < NKEYS; i++) {
        if (!key_info[i].reloadable && !same_value(live, &cand, i)) {
            if (err && errlen)
                snprintf(err, errlen, "%s: %s changed but is not reloadable; restart to apply it",
                         path ? path : "configuration", key_info[i].name);
            config_free(&cand);
            return -1;
        }
    }
    /* Non-reloadable strings are equal: keep the live pointers so anyone
     * holding them (the link's JID) stays valid; take the new reloadable
     * ones. */
    for (size_t i = 0; i < NKEYS; i++) {
        if (key_info[i].type == CFG_INT) {
            *int_slot(live, i) = *int_slot(&cand, i);
        } else if (key_info[i].reloadable) {
            str_wipe_free(*str_slot(live, i));
            *str_slot(live, i) = *str_slot(&cand, i);
            *str_slot(&cand, i) = NULL;
        }
    }
    config_free(&cand);
    return 0;
}

void config_free(config *c)
{
    if (!c) return;
    for (size_t i = 0; i < NKEYS; i++) {
        if (key_info[i].type == CFG_STRING) {
            str_wipe_free(*str_slot(c, i));
            *str_slot(c, i) = NULL;
        }
    }
}

void config_log(const config *c)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const config_key_info *k = &key_info[i];
        if (k->secret) {
            log_info("config", "%s = (redacted)", k->name);
        } else if (k->type == CFG_INT) {
            log_info("config", "%s = %d", k->name, int_get(c, i));
        } else {
            const char *v = str_get(c, i);
            log_info("config", "%s = \"%s\"", k->name, v ? v : "");
        }
    }
}

const config_key_info *config_keys(size_t *count)
{
    if (count) *count = NKEYS;
    return key_info;
}
