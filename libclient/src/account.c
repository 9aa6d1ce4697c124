/* The user's account on the client (xep/sealroom.xml "The Vault"):
 * creating it (publish the identity, seal the vault or hand it to the
 * app's key store), logging in on a fresh device with the passphrase
 * alone, pinned fingerprints of other users (trust on first use, loud
 * change reports, explicit acceptance) and saving pin changes back to the
 * vault with compare-and-swap. */
#include "internal.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/b64.h"
#include "proto/jid.h"

#define VAULT_B64_MAX (4u * 1024u * 1024u)

/* ---- pins ---- */

static sr_fpr_change *change_find(sealroom_ctx *ctx, const char *jid, sr_fpr_change ***link)
{
    for (sr_fpr_change **pp = &ctx->changes; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->jid, jid) == 0) {
            if (link)
                *link = pp;
            return *pp;
        }
    return NULL;
}

int sr_pin_check(sealroom_ctx *ctx, const char *jid, const unsigned char ed[32],
                 const unsigned char x[32])
{
    unsigned char fpr[SR_E2E_FPR_BYTES];
    if (!ctx->vault || strcmp(jid, ctx->own_bare) == 0)
        return SEALROOM_OK;
    if (sr_e2e_fingerprint(fpr, ed, x) != SR_E2E_OK)
        return sr_fail(ctx, SEALROOM_E_INVALID, "cannot fingerprint the key of %s", jid);
    const unsigned char *pinned = sr_e2e_vault_pin_get(ctx->vault, jid);
    if (!pinned) {
        if (sr_e2e_vault_pin_set(ctx->vault, jid, fpr) != SR_E2E_OK)
            return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
        ctx->vault_dirty = true;
        return SEALROOM_OK;
    }
    if (sodium_memcmp(pinned, fpr, sizeof fpr) == 0)
        return SEALROOM_OK;
    sr_fpr_change *c = change_find(ctx, jid, NULL);
    bool known = c && sodium_memcmp(c->fpr, fpr, sizeof fpr) == 0;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c || !(c->jid = sr_strdup(jid))) {
            free(c);
            return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
        }
        c->next = ctx->changes;
        ctx->changes = c;
    }
    memcpy(c->fpr, fpr, sizeof fpr);
    if (!known) {
        char now[SEALROOM_FINGERPRINTBYTES], before[SEALROOM_FINGERPRINTBYTES];
        sr_fingerprint_text(now, fpr);
        sr_fingerprint_text(before, pinned);
        sr_log(ctx, SEALROOM_LOG_WARN, "the identity key of %s CHANGED: pinned %s, now %s", jid,
               before, now);
        sealroom_event ev = {0};
        ev.type = SEALROOM_EVENT_FINGERPRINT_CHANGED;
        ev.jid = jid;
        ev.pk = ed;
        ev.fingerprint = now;
        ev.previous_fingerprint = before;
        sr_emit(ctx, &ev);
    }
    return sr_fail(ctx, SEALROOM_E_KEY_CHANGED,
                   "the identity key of %s is not the pinned one (accept it first)", jid);
}

int sealroom_ctx_accept_fingerprint(sealroom_ctx *ctx, const char *jid)
{
    char bare[SR_BARE_JID_MAX];
    sr_fpr_change **link = NULL;
    if (!ctx || !jid || !sr_jid_normalise_bare(bare, sizeof bare, jid))
        return SEALROOM_E_INVALID;
    sr_fpr_change *c = change_find(ctx, bare, &link);
    if (!c || !ctx->vault)
        return sr_fail(ctx, SEALROOM_E_NOT_FOUND, "no changed key of %s is waiting", bare);
    if (sr_e2e_vault_pin_set(ctx->vault, bare, c->fpr) != SR_E2E_OK)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    *link = c->next;
    free(c->jid);
    free(c);
    ctx->vault_dirty = true;
    sr_vault_tick(ctx);
    return SEALROOM_OK;
}

int sealroom_ctx_pinned_fingerprint(const sealroom_ctx *ctx, char *out, size_t out_len,
                                    const char *jid)
{
    char bare[SR_BARE_JID_MAX];
    if (!ctx || !out || out_len < SEALROOM_FINGERPRINTBYTES || !jid ||
        !sr_jid_normalise_bare(bare, sizeof bare, jid))
        return SEALROOM_E_INVALID;
    const unsigned char *pinned = ctx->vault ? sr_e2e_vault_pin_get(ctx->vault, bare) : NULL;
    if (!pinned)
        return SEALROOM_E_NOT_FOUND;
    sr_fingerprint_text(out, pinned);
    return SEALROOM_OK;
}

/* ---- vault storage ---- */

static xmpp_stanza_t *vault_element(sealroom_ctx *ctx, uint64_t version, const char *b64)
{
    char ver[24];
    snprintf(ver, sizeof ver, "%" PRIu64, version);
    xmpp_stanza_t *el = sr_el(ctx->xmpp, "vault", SR_NS);
    if (!el)
        return NULL;
    bool ok = xmpp_stanza_set_attribute(el, "version", ver) == XMPP_EOK;
    if (ok && b64) {
        xmpp_stanza_t *t = xmpp_stanza_new(ctx->xmpp);
        ok = t && xmpp_stanza_set_text(t, b64) == XMPP_EOK &&
             xmpp_stanza_add_child_ex(el, t, 0) == XMPP_EOK;
        if (!ok && t)
            xmpp_stanza_release(t);
    }
    if (!ok) {
        xmpp_stanza_release(el);
        return NULL;
    }
    return el;
}

/* The vault sealed with key and base64-encoded (malloc'd), or NULL. */
static char *vault_sealed_b64(sealroom_ctx *ctx, const sr_e2e_vault_key *key)
{
    size_t cap = sr_e2e_vault_sealed_len(ctx->vault), len = 0;
    unsigned char *blob = malloc(cap);
    size_t b64cap = sr_b64_encoded_len(cap);
    char *b64 = malloc(b64cap);
    bool ok = blob && b64 &&
              sr_e2e_vault_seal_keyed(blob, cap, &len, ctx->vault, ctx->own_bare, key) ==
                  SR_E2E_OK &&
              sr_b64_encode(b64, b64cap, blob, len);
    free(blob);
    if (!ok) {
        free(b64);
        return NULL;
    }
    return b64;
}

static bool parse_vault_version(xmpp_stanza_t *answer, uint64_t *version)
{
    xmpp_stanza_t *v = answer ? sr_child(answer, "vault", SR_NS) : NULL;
    return v && sr_parse_u64(xmpp_stanza_get_attribute(v, "version"), version);
}

/* Decodes the <vault/> text of an answer into a malloc'd blob. */
static unsigned char *vault_blob(sealroom_ctx *ctx, xmpp_stanza_t *answer, size_t *len)
{
    xmpp_stanza_t *v = answer ? sr_child(answer, "vault", SR_NS) : NULL;
    char *b64 = v ? xmpp_stanza_get_text(v) : NULL;
    unsigned char *blob = NULL;
    size_t n = b64 ? strlen(b64) : 0;
    if (b64 && n > 0 && n <= VAULT_B64_MAX) {
        size_t cap = sr_b64_decoded_max(n);
        blob = malloc(cap);
        if (blob && !sr_b64_decode(blob, cap, len, b64, n)) {
            free(blob);
            blob = NULL;
        }
    }
    if (b64)
        xmpp_free(ctx->xmpp, b64);
    return blob;
}

static void vault_merge_fetched(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                                const char *text)
{
    (void)arg;
    uint64_t version;
    size_t len = 0;
    unsigned char *blob = rc == SEALROOM_OK ? vault_blob(ctx, answer, &len) : NULL;
    sr_e2e_vault_data *theirs = NULL;
    if (blob && parse_vault_version(answer, &version) && ctx->vault_key &&
        sr_e2e_vault_open_keyed(&theirs, blob, len, ctx->own_bare, ctx->vault_key) == SR_E2E_OK &&
        sodium_memcmp(theirs->root, ctx->vault->root, SR_E2E_ROOT_BYTES) == 0) {
        /* Another device pinned meanwhile: keep both (ours win a tie). */
        for (size_t i = 0; i < theirs->npins; i++)
            if (!sr_e2e_vault_pin_get(ctx->vault, theirs->pins[i].jid))
                sr_e2e_vault_pin_set(ctx->vault, theirs->pins[i].jid, theirs->pins[i].fpr);
        ctx->vault_version = version;
        ctx->vault_dirty = true;
    } else {
        sr_log(ctx, SEALROOM_LOG_WARN, "cannot merge the vault changed elsewhere: %s",
               text ? text : "it does not open with our key");
    }
    sr_e2e_vault_data_free(theirs);
    free(blob);
    ctx->vault_saving = false;
}

static void vault_saved(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                        const char *text)
{
    (void)arg;
    uint64_t version;
    if (rc == SEALROOM_OK && parse_vault_version(answer, &version)) {
        ctx->vault_version = version;
        ctx->vault_saving = false;
        return;
    }
    const char *app = sr_error_app(answer);
    if (app && strcmp(app, "vault-conflict") == 0) {
        xmpp_stanza_t *el = sr_el(ctx->xmpp, "vault", SR_NS);
        if (el && sr_iq_call(ctx, "get", ctx->service, el, vault_merge_fetched, NULL) == 0)
            return;
    }
    sr_log(ctx, SEALROOM_LOG_WARN, "saving the vault failed: %s",
           text ? text : sealroom_strerror(rc));
    ctx->vault_dirty = true;
    ctx->vault_saving = false;
}

void sr_vault_tick(sealroom_ctx *ctx)
{
    if (!ctx->vault_dirty || ctx->vault_saving || !ctx->vault)
        return;
    if (ctx->have_key_store) {
        unsigned char *plain = NULL;
        size_t len = 0;
        if (sr_e2e_vault_plain_encode(&plain, &len, ctx->vault) == SR_E2E_OK) {
            if (ctx->key_store.save(ctx->key_store.user, plain, len) == 0)
                ctx->vault_dirty = false;
            sodium_memzero(plain, len);
            sodium_free(plain);
        }
        return;
    }
    if (!ctx->vault_key) {
        /* No account on the service: pins live in memory only. */
        ctx->vault_dirty = false;
        return;
    }
    if (!ctx->link_up)
        return;
    char *b64 = vault_sealed_b64(ctx, ctx->vault_key);
    xmpp_stanza_t *el = b64 ? vault_element(ctx, ctx->vault_version, b64) : NULL;
    free(b64);
    if (!el)
        return;
    ctx->vault_dirty = false;
    ctx->vault_saving = true;
    if (sr_iq_call(ctx, "set", ctx->service, el, vault_saved, NULL) < 0) {
        ctx->vault_saving = false;
        ctx->vault_dirty = true;
    }
}

/* ---- identity and vault on the ctx ---- */

/* Uses root as our identity; keeps pins if the root is the one we had. */
static int adopt_root(sealroom_ctx *ctx, const unsigned char root[32], sr_e2e_vault_data *data)
{
    sealroom_identity *id = NULL;
    int rc = sealroom_identity_import(&id, root, 32);
    if (rc < 0)
        return sr_fail(ctx, rc, "cannot rebuild the identity");
    rc = sealroom_ctx_set_identity(ctx, id);
    sealroom_identity_free(id);
    if (rc < 0)
        return rc;
    if (data) {
        sr_e2e_vault_data_free(ctx->vault);
        ctx->vault = data;
    }
    return SEALROOM_OK;
}

void sr_account_free(sealroom_ctx *ctx)
{
    sr_e2e_vault_data_free(ctx->vault);
    ctx->vault = NULL;
    sr_e2e_vault_key_free(ctx->vault_key);
    ctx->vault_key = NULL;
    while (ctx->changes) {
        sr_fpr_change *c = ctx->changes;
        ctx->changes = c->next;
        free(c->jid);
        free(c);
    }
}

int sealroom_ctx_set_key_store(sealroom_ctx *ctx, const sealroom_key_store *ks)
{
    if (!ctx)
        return SEALROOM_E_INVALID;
    if (!ks) {
        ctx->have_key_store = false;
        memset(&ctx->key_store, 0, sizeof ctx->key_store);
        return SEALROOM_OK;
    }
    if (ks->struct_size < sizeof *ks || !ks->load || !ks->save)
        return sr_fail(ctx, SEALROOM_E_INVALID, "key store needs struct_size, load and save");
    ctx->key_store = *ks;
    ctx->have_key_store = true;
    return SEALROOM_OK;
}

int sealroom_ctx_set_vault_limits(sealroom_ctx *ctx, unsigned long long opslimit, size_t memlimit)
{
    if (!ctx)
        return SEALROOM_E_INVALID;
    if (opslimit < crypto_pwhash_OPSLIMIT_INTERACTIVE || opslimit > SR_E2E_VAULT_OPS_MAX ||
        memlimit < crypto_pwhash_MEMLIMIT_INTERACTIVE ||
        memlimit > crypto_pwhash_MEMLIMIT_SENSITIVE || memlimit % 1024u != 0)
        return sr_fail(ctx, SEALROOM_E_INVALID, "vault limits outside what clients accept");
    ctx->vault_ops = opslimit;
    ctx->vault_mem = memlimit;
    return SEALROOM_OK;
}

/* ---- account requests ---- */

#define REQ_ARG(r) ((void *)(uintptr_t)(r)->id)
#define ARG_REQ(ctx, a) sr_request_by_id((ctx), (uint32_t)(uintptr_t)(a))

static void check_own_identity(sealroom_ctx *ctx, sr_request *r);

static void account_vault_stored(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                                 const char *text)
{
    sr_request *r = ARG_REQ(ctx, arg);
    if (!r)
        return;
    uint64_t version = 1;
    if (rc == SEALROOM_OK) {
        parse_vault_version(answer, &version);
        sr_e2e_vault_key_free(ctx->vault_key);
        ctx->vault_key = r->vkey;
        r->vkey = NULL;
        ctx->vault_version = version;
        ctx->vault_dirty = false;
    }
    sr_request_done(ctx, r, rc, text, NULL);
}

static void account_registered(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                               const char *text)
{
    (void)answer;
    sr_request *r = ARG_REQ(ctx, arg);
    if (!r)
        return;
    if (rc < 0) {
        sr_request_done(ctx, r, rc, text, NULL);
        return;
    }
    if (r->kind == SEALROOM_REQ_ACCOUNT_LOGIN) {
        /* Login found no registration for the vault's identity: done now. */
        sr_request_done(ctx, r, SEALROOM_OK, NULL, NULL);
        return;
    }
    if (ctx->have_key_store) {
        ctx->vault_dirty = true;
        sr_vault_tick(ctx);
        sr_request_done(ctx, r, ctx->vault_dirty ? SEALROOM_E_STATE : SEALROOM_OK,
                        ctx->vault_dirty ? "the key store refused to save the identity" : NULL,
                        NULL);
        return;
    }
    char *b64 = vault_sealed_b64(ctx, r->vkey);
    xmpp_stanza_t *el = b64 ? vault_element(ctx, 0, b64) : NULL;
    free(b64);
    if (!el) {
        sr_request_done(ctx, r, SEALROOM_E_NOMEM, "cannot seal the vault", NULL);
        return;
    }
    if (sr_iq_call(ctx, "set", ctx->service, el, account_vault_stored, REQ_ARG(r)) < 0)
        sr_request_fail(ctx, r, SEALROOM_E_NETWORK);
}

static bool passphrase_usable(const char *p, size_t len)
{
    return p && len > 0 && len <= crypto_pwhash_PASSWD_MAX;
}

int sealroom_account_create(sealroom_ctx *ctx, uint32_t *request_id, const char *passphrase,
                            size_t passphrase_len)
{
    if (!ctx)
        return SEALROOM_E_INVALID;
    if (!ctx->have_key_store && !passphrase_usable(passphrase, passphrase_len))
        return sr_fail(ctx, SEALROOM_E_INVALID, "a passphrase is needed for the vault");
    if (!ctx->link_up)
        return sr_fail(ctx, SEALROOM_E_STATE, "the link to the server is down");
    if (!ctx->identity) {
        sealroom_identity *id = NULL;
        int rc = sealroom_identity_generate(&id);
        if (rc < 0)
            return sr_fail(ctx, rc, "cannot generate an identity");
        rc = sealroom_ctx_set_identity(ctx, id);
        sealroom_identity_free(id);
        if (rc < 0)
            return rc;
    }
    sr_request *r = sr_request_new(ctx, SEALROOM_REQ_ACCOUNT_CREATE);
    if (!r)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    int rc = SEALROOM_OK;
    if (!ctx->have_key_store) {
        sr_e2e_vault_params p = {ctx->vault_ops, ctx->vault_mem, NULL, NULL};
        int erc = sr_e2e_vault_key_new(&r->vkey, passphrase, passphrase_len, &p);
        if (erc != SR_E2E_OK)
            rc = sr_fail(ctx, erc == SR_E2E_ERR_NOMEM ? SEALROOM_E_NOMEM : SEALROOM_E_INVALID,
                         "cannot derive the vault key: %s", sr_e2e_strerror(erc));
    }
    if (rc == SEALROOM_OK) {
        xmpp_stanza_t *el = sr_identity_element(ctx);
        rc = el ? sr_iq_call(ctx, "set", ctx->service, el, account_registered, REQ_ARG(r))
                : sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    }
    if (rc < 0) {
        sr_request_unlink(ctx, r);
        sr_request_free(r);
        return rc;
    }
    if (request_id)
        *request_id = r->id;
    return SEALROOM_OK;
}

static void own_identity_fetched(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                                 const char *text)
{
    sr_request *r = ARG_REQ(ctx, arg);
    if (!r)
        return;
    if (rc == SEALROOM_E_NOT_FOUND) {
        /* Vault without a published identity (first publish failed):
         * publish it now. */
        xmpp_stanza_t *el = sr_identity_element(ctx);
        if (!el || sr_iq_call(ctx, "set", ctx->service, el, account_registered, REQ_ARG(r)) < 0)
            sr_request_fail(ctx, r, SEALROOM_E_NETWORK);
        return;
    }
    if (rc < 0) {
        sr_request_done(ctx, r, rc, text, NULL);
        return;
    }
    xmpp_stanza_t *el = answer ? sr_child(answer, "identity", SR_NS) : NULL;
    unsigned char pk[SR_KEY_BYTES];
    if (!el || !sr_b64_decode_exact(pk, sizeof pk, xmpp_stanza_get_attribute(el, "key"))) {
        sr_request_done(ctx, r, SEALROOM_E_PROTOCOL, "malformed identity answer", NULL);
        return;
    }
    if (sodium_memcmp(pk, ctx->identity->pk, sizeof pk) != 0) {
        sr_request_done(ctx, r, SEALROOM_E_VERIFY,
                        "the service publishes another identity key for us than the vault's",
                        NULL);
        return;
    }
    sr_request_done(ctx, r, SEALROOM_OK, NULL, NULL);
}

static void check_own_identity(sealroom_ctx *ctx, sr_request *r)
{
    xmpp_stanza_t *el = sr_el(ctx->xmpp, "identity", SR_NS);
    if (!el || xmpp_stanza_set_attribute(el, "jid", ctx->own_bare) != XMPP_EOK) {
        if (el)
            xmpp_stanza_release(el);
        sr_request_done(ctx, r, SEALROOM_E_NOMEM, "out of memory", NULL);
        return;
    }
    if (sr_iq_call(ctx, "get", ctx->service, el, own_identity_fetched, REQ_ARG(r)) < 0)
        sr_request_fail(ctx, r, SEALROOM_E_NETWORK);
}

static void login_vault_fetched(sealroom_ctx *ctx, void *arg, xmpp_stanza_t *answer, int rc,
                                const char *text)
{
    sr_request *r = ARG_REQ(ctx, arg);
    if (!r)
        return;
    if (rc < 0) {
        sr_request_done(ctx, r, rc, text, NULL);
        return;
    }
    uint64_t version = 0;
    size_t len = 0;
    unsigned char *blob = vault_blob(ctx, answer, &len);
    if (!blob || !parse_vault_version(answer, &version)) {
        free(blob);
        sr_request_done(ctx, r, SEALROOM_E_PROTOCOL, "malformed vault answer", NULL);
        return;
    }
    sr_e2e_vault_data *data = NULL;
    sr_e2e_vault_key *key = NULL;
    int erc = sr_e2e_vault_open_keep(&data, &key, blob, len, ctx->own_bare, (const char *)r->plain,
                                     r->plain_len);
    free(blob);
    /* The passphrase is not needed any more. */
    sodium_memzero(r->plain, r->plain_len);
    if (erc != SR_E2E_OK) {
        int code = SEALROOM_E_PROTOCOL;
        const char *why = sr_e2e_strerror(erc);
        if (erc == SR_E2E_ERR_PASSPHRASE || erc == SR_E2E_ERR_DECRYPT) {
            code = SEALROOM_E_PASSPHRASE;
            why = "the vault does not open with this passphrase";
        } else if (erc == SR_E2E_ERR_WEAK_PARAMS) {
            code = SEALROOM_E_VERIFY;
            why = "the stored vault has key-derivation limits no client accepts";
        } else if (erc == SR_E2E_ERR_NOMEM) {
            code = SEALROOM_E_NOMEM;
        }
        sr_request_done(ctx, r, code, why, NULL);
        return;
    }
    unsigned char root[SR_E2E_ROOT_BYTES];
    memcpy(root, data->root, sizeof root);
    rc = adopt_root(ctx, root, data);
    sodium_memzero(root, sizeof root);
    if (rc < 0) {
        sr_e2e_vault_data_free(data);
        sr_e2e_vault_key_free(key);
        sr_request_fail(ctx, r, rc);
        return;
    }
    sr_e2e_vault_key_free(ctx->vault_key);
    ctx->vault_key = key;
    ctx->vault_version = version;
    ctx->vault_dirty = false;
    check_own_identity(ctx, r);
}

int sealroom_account_login(sealroom_ctx *ctx, uint32_t *request_id, const char *passphrase,
                           size_t passphrase_len)
{
    if (!ctx)
        return SEALROOM_E_INVALID;
    if (!ctx->have_key_store && !passphrase_usable(passphrase, passphrase_len))
        return sr_fail(ctx, SEALROOM_E_INVALID, "a passphrase is needed for the vault");
    if (!ctx->link_up)
        return sr_fail(ctx, SEALROOM_E_STATE, "the link to the server is down");
    sr_request *r = sr_request_new(ctx, SEALROOM_REQ_ACCOUNT_LOGIN);
    if (!r)
        return sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
    int rc = SEALROOM_OK;
    if (ctx->have_key_store) {
        size_t cap = 1u << 22, len = 0;
        unsigned char *buf = sodium_malloc(cap);
        sr_e2e_vault_data *data = NULL;
        int lrc = buf ? ctx->key_store.load(ctx->key_store.user, buf, cap, &len) : -1;
        if (lrc == 1)
            rc = sr_fail(ctx, SEALROOM_E_NOT_FOUND, "the key store holds no identity");
        else if (lrc != 0 || len > cap)
            rc = sr_fail(ctx, SEALROOM_E_STATE, "the key store could not load the identity");
        else if (sr_e2e_vault_plain_decode(&data, buf, len) != SR_E2E_OK)
            rc = sr_fail(ctx, SEALROOM_E_PROTOCOL, "the key store's identity is damaged");
        else {
            unsigned char root[SR_E2E_ROOT_BYTES];
            memcpy(root, data->root, sizeof root);
            rc = adopt_root(ctx, root, data);
            sodium_memzero(root, sizeof root);
            if (rc < 0)
                sr_e2e_vault_data_free(data);
        }
        if (buf)
            sodium_free(buf);
        if (rc == SEALROOM_OK) {
            if (request_id)
                *request_id = r->id;
            check_own_identity(ctx, r);
            return SEALROOM_OK;
        }
    } else {
        xmpp_stanza_t *el = sr_el(ctx->xmpp, "vault", SR_NS);
        r->plain = malloc(passphrase_len);
        if (!el || !r->plain) {
            if (el)
                xmpp_stanza_release(el);
            rc = sr_fail(ctx, SEALROOM_E_NOMEM, "out of memory");
        } else {
            memcpy(r->plain, passphrase, passphrase_len);
            r->plain_len = passphrase_len;
            rc = sr_iq_call(ctx, "get", ctx->service, el, login_vault_fetched, REQ_ARG(r));
        }
    }
    if (rc < 0) {
        sr_request_unlink(ctx, r);
        sr_request_free(r);
        return rc;
    }
    if (request_id)
        *request_id = r->id;
    return SEALROOM_OK;
}
