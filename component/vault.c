/* The vault (DESIGN §3): one sealed blob per user, stored and fetched only
 * by its owner (the sender's bare JID). Stores are compare-and-swap on a
 * version number, so two devices cannot overwrite each other's pins
 * unseen. Fetches are paced per user by a token bucket held in memory
 * (vault.fetch_burst, vault.fetch_per_hour): the blob resists guessing by
 * Argon2id, and the pace keeps someone who takes over an XMPP account from
 * pulling it over and over. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2echeck.h"
#include "jid.h"
#include "log.h"
#include "service.h"
#include "stanza.h"

#define VAULT_LIMIT_BUCKETS 1024

typedef struct vault_limit {
    char *jid;
    ec_bucket bucket;
    struct vault_limit *next;
} vault_limit;

struct vault_limits {
    vault_limit *b[VAULT_LIMIT_BUCKETS];
};

typedef struct vault_op {
    rooms *r;
    xmpp_stanza_t *iq;
    uint64_t version; /* store: the version the client read */
    char jid[SR_BARE_JID_MAX];
} vault_op;

static unsigned long hash_jid(const char *s)
{
    unsigned long h = 5381;
    while (*s) h = h * 33 + (unsigned char)*s++;
    return h % VAULT_LIMIT_BUCKETS;
}

/* The bucket of jid, created on first use; NULL when out of memory. */
static ec_bucket *limit_for(rooms *r, const char *jid)
{
    if (!r->vault_limits && !(r->vault_limits = calloc(1, sizeof *r->vault_limits))) return NULL;
    vault_limit **head = &r->vault_limits->b[hash_jid(jid)];
    for (vault_limit *l = *head; l; l = l->next)
        if (strcmp(l->jid, jid) == 0) return &l->bucket;
    vault_limit *l = calloc(1, sizeof *l);
    if (!l || !(l->jid = strdup(jid))) {
        free(l);
        return NULL;
    }
    l->next = *head;
    *head = l;
    return &l->bucket;
}

void vault_limits_sweep(rooms *r, long now_ms)
{
    if (!r->vault_limits) return;
    for (size_t i = 0; i < VAULT_LIMIT_BUCKETS; i++) {
        vault_limit **pp = &r->vault_limits->b[i];
        while (*pp) {
            vault_limit *l = *pp;
            if (ec_bucket_full(&l->bucket, now_ms, r->cfg->vault_fetch_burst,
                               r->cfg->vault_fetch_per_hour)) {
                *pp = l->next;
                free(l->jid);
                free(l);
                continue;
            }
            pp = &l->next;
        }
    }
}

void vault_limits_free(rooms *r)
{
    if (!r->vault_limits) return;
    for (size_t i = 0; i < VAULT_LIMIT_BUCKETS; i++) {
        while (r->vault_limits->b[i]) {
            vault_limit *l = r->vault_limits->b[i];
            r->vault_limits->b[i] = l->next;
            free(l->jid);
            free(l);
        }
    }
    free(r->vault_limits);
    r->vault_limits = NULL;
}

static void op_free(vault_op *op)
{
    if (op->iq) xmpp_stanza_release(op->iq);
    free(op);
}

static void stored(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    vault_op *op = arg;
    rooms *r = op->r;
    r->writes_in_flight--;
    if (!ok || nres != 1) {
        log_error(op->jid, "storing the vault failed: %s", err ? err : "?");
        svc_error(r, op->iq, svc_jid(r), "wait", "internal-server-error", NULL,
                  "the vault could not be stored; try again");
    } else if (PQntuples(res[0]) != 1) {
        char text[96];
        snprintf(text, sizeof text,
                 op->version == 0 ? "a vault already exists; fetch it and store with its version"
                                  : "the vault is no longer at version %" PRIu64
                                    "; fetch it again",
                 op->version);
        svc_error(r, op->iq, svc_jid(r), "cancel", "conflict", "vault-conflict", text);
    } else {
        xmpp_stanza_t *reply = st_iq_result(op->iq, svc_jid(r));
        xmpp_stanza_t *v = reply ? st_add(reply, "vault", NS_SEALROOM) : NULL;
        if (v) {
            xmpp_stanza_set_attribute(v, "version", PQgetvalue(res[0], 0, 0));
            r->stats.vaults_stored++;
            log_info(op->jid, "vault stored, version %s", PQgetvalue(res[0], 0, 0));
            svc_send(r, reply);
        } else {
            if (reply) xmpp_stanza_release(reply);
            svc_error(r, op->iq, svc_jid(r), "wait", "resource-constraint", NULL, "out of memory");
        }
    }
    op_free(op);
}

static void fetched(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    vault_op *op = arg;
    rooms *r = op->r;
    if (!ok || nres != 1) {
        log_error(op->jid, "reading the vault failed: %s", err ? err : "?");
        svc_error(r, op->iq, svc_jid(r), "wait", "internal-server-error", NULL,
                  "the vault could not be read; try again");
    } else if (PQntuples(res[0]) == 0) {
        svc_error(r, op->iq, svc_jid(r), "cancel", "item-not-found", "no-vault",
                  "no vault is stored for this JID");
    } else {
        size_t len = 0;
        unsigned char *blob = svc_bytea_dup(res[0], 0, 1, &len);
        char *b64 = blob ? st_b64_encode(blob, len) : NULL;
        xmpp_stanza_t *reply = b64 ? st_iq_result(op->iq, svc_jid(r)) : NULL;
        xmpp_stanza_t *v = reply ? st_add_text(reply, "vault", NS_SEALROOM, b64) : NULL;
        if (v) {
            xmpp_stanza_set_attribute(v, "version", PQgetvalue(res[0], 0, 0));
            svc_send(r, reply);
        } else {
            if (reply) xmpp_stanza_release(reply);
            svc_error(r, op->iq, svc_jid(r), "wait", "resource-constraint", NULL, "out of memory");
        }
        free(blob);
        free(b64);
    }
    op_free(op);
}

static void vault_store(rooms *r, vault_op *op, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    if (!svc_parse_u64(xmpp_stanza_get_attribute(el, "version"), &op->version) ||
        op->version == INT64_MAX) {
        svc_error(r, iq, svc_jid(r), "modify", "bad-request", NULL,
                  "vault needs version, the decimal version read (0 to create)");
        op_free(op);
        return;
    }
    const char *b64 = st_text(el);
    /* Decode into room for one more quad than the limit, so an oversized
     * blob is told apart from bad base64. */
    size_t cap = EC_VAULT_MAX + 3;
    unsigned char *blob = strlen(b64) > (cap / 3) * 4 ? NULL : malloc(cap);
    long len = blob ? st_b64_decode(blob, cap, b64) : -1;
    if (strlen(b64) > (cap / 3) * 4 || len > EC_VAULT_MAX) {
        free(blob);
        svc_error(r, iq, svc_jid(r), "modify", "not-acceptable", "too-large",
                  "a vault holds at most 1048576 bytes");
        op_free(op);
        return;
    }
    if (!blob) {
        svc_error(r, iq, svc_jid(r), "wait", "resource-constraint", NULL, "out of memory");
        op_free(op);
        return;
    }
    if (len < 0) {
        free(blob);
        svc_error(r, iq, svc_jid(r), "modify", "bad-request", NULL,
                  "the vault must be base64 (standard alphabet, padded)");
        op_free(op);
        return;
    }
    if (!ec_vault_blob_ok(blob, (size_t)len)) {
        free(blob);
        svc_error(r, iq, svc_jid(r), "modify", "not-acceptable", "bad-vault",
                  "not a sealed vault: 74 bytes at least, starting SRVL and version 1");
        op_free(op);
        return;
    }
    char ver[24];
    snprintf(ver, sizeof ver, "%" PRIu64, op->version);
    const char *p[3] = {op->jid, ver, (const char *)blob};
    int l[3] = {-1, -1, (int)len}, f[3] = {0, 0, 1};
    db_unit *u = db_unit_new();
    int rc = u ? db_unit_add(u,
                             op->version == 0
                                 ? "INSERT INTO vaults (jid, version, blob) "
                                   "SELECT $1, $2::bigint + 1, $3 "
                                   "ON CONFLICT (jid) DO NOTHING RETURNING version"
                                 : "UPDATE vaults SET version = version + 1, blob = $3, "
                                   "updated_at = now() WHERE jid = $1 AND version = $2 "
                                   "RETURNING version",
                             3, p, l, f)
               : -1;
    free(blob);
    if (rc != 0 || !(op->iq = xmpp_stanza_copy(iq))) {
        db_unit_free(u);
        svc_error(r, iq, svc_jid(r), "wait", "resource-constraint", NULL, "out of memory");
        op_free(op);
        return;
    }
    r->writes_in_flight++;
    db_submit(r->db, u, true, stored, op);
}

static void vault_fetch(rooms *r, vault_op *op, xmpp_stanza_t *iq)
{
    ec_bucket *b = limit_for(r, op->jid);
    long long retry = 0;
    if (!b) {
        svc_error(r, iq, svc_jid(r), "wait", "resource-constraint", NULL, "out of memory");
        op_free(op);
        return;
    }
    if (!ec_bucket_take(b, r->now_ms, r->cfg->vault_fetch_burst, r->cfg->vault_fetch_per_hour,
                        &retry)) {
        char text[128];
        long long secs = (retry + 999) / 1000;
        snprintf(text, sizeof text, "too many vault fetches; retry in %lld s", secs);
        r->stats.vault_rate_limited++;
        log_warn(op->jid, "vault fetch refused by the rate limit (retry in %lld s)", secs);
        svc_error(r, iq, svc_jid(r), "wait", "resource-constraint", "rate-limited", text);
        op_free(op);
        return;
    }
    r->stats.vault_fetches++;
    if (!(op->iq = xmpp_stanza_copy(iq))) {
        svc_error(r, iq, svc_jid(r), "wait", "resource-constraint", NULL, "out of memory");
        op_free(op);
        return;
    }
    const char *p[1] = {op->jid};
    db_read1(r->db, "SELECT version, blob FROM vaults WHERE jid = $1", 1, p, NULL, NULL, fetched,
             op);
}

void vault_handle_iq(rooms *r, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    const char *type = xmpp_stanza_get_type(iq);
    vault_op *op = calloc(1, sizeof *op);
    if (!op) {
        svc_error(r, iq, svc_jid(r), "wait", "resource-constraint", NULL, "out of memory");
        return;
    }
    op->r = r;
    if (!svc_sender_bare(iq, op->jid, sizeof op->jid)) {
        svc_error(r, iq, svc_jid(r), "modify", "jid-malformed", NULL, "bad sender");
        op_free(op);
        return;
    }
    if (strcmp(type, "set") == 0)
        vault_store(r, op, iq, el);
    else
        vault_fetch(r, op, iq);
}
