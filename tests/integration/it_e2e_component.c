/* The component's side of the end-to-end protocol (notes/e2e-spec.md §1-§6)
 * over raw stanzas: identity bundles, the vault (compare-and-swap and the
 * fetch rate limit), member bundles, epochs (every refusal, the headline,
 * fetching one's envelope), data keys and the message checks, including a
 * removal that makes the epoch stale, an old-epoch key refused while the
 * resend of a message stored under it is still answered, and the rekey
 * nudge. Every refusal is checked to change nothing in PostgreSQL. Real
 * envelopes and headers come from the library's e2e core. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common.h"
#include "e2e/envelope.h"
#include "e2e/epoch.h"
#include "e2e/identity.h"

static it_room room;
static it_raw *alice, *bob, *carol, *dave, *judy;
static char alice_bare[256], bob_bare[256], carol_bare[256], dave_bare[256];

typedef struct e2e_counts {
    long epochs, envelopes, datakeys, messages, members;
} e2e_counts;

static const char *attr(xmpp_stanza_t *st, const char *name)
{
    const char *v = st ? xmpp_stanza_get_attribute(st, name) : NULL;
    return v ? v : "";
}

static e2e_counts counts(void)
{
    e2e_counts c = {it_pg_count("epochs", room.jid), it_pg_count("envelopes", room.jid),
                    it_pg_count("datakeys", room.jid), it_pg_count("messages", room.jid),
                    it_pg_count("members", room.jid)};
    return c;
}

static void same_counts(e2e_counts before, const char *what)
{
    e2e_counts now = counts();
    IT_CHECK(memcmp(&now, &before, sizeof now) == 0,
             "%s changed the database: epochs %ld->%ld envelopes %ld->%ld datakeys %ld->%ld "
             "messages %ld->%ld",
             what, before.epochs, now.epochs, before.envelopes, now.envelopes, before.datakeys,
             now.datakeys, before.messages, now.messages);
}

/* An iq that must be refused as given, changing nothing. */
static void iq_refused(it_raw *rc, const char *what, const char *type, const char *to,
                       const char *xml, const char *etype, const char *cond, const char *app)
{
    e2e_counts before = counts();
    xmpp_stanza_t *st = it_raw_iq(rc, type, to, xml);
    it_check_error(st, etype, cond, app, what);
    xmpp_stanza_release(st);
    same_counts(before, what);
}

/* A groupchat message that must be refused (error with the message's id). */
static void msg_refused(it_raw *rc, const char *what, const unsigned char *p, size_t n,
                        const char *origin, const char *etype, const char *cond, const char *app)
{
    e2e_counts before = counts();
    char id[40];
    it_random_hex(id, 8);
    char *b64 = it_b64(p, n);
    it_raw_send_sealed(rc, room.jid, id, origin, b64);
    free(b64);
    xmpp_stanza_t *st = it_raw_expect(rc, it_match_id, id, IT_TIMEOUT_MS, what);
    it_check_error(st, etype, cond, app, what);
    xmpp_stanza_release(st);
    same_counts(before, what);
}

static char *replace(const char *s, const char *from, const char *to)
{
    const char *at = strstr(s, from);
    IT_CHECK(at != NULL, "'%s' not found to replace", from);
    size_t n = strlen(s) - strlen(from) + strlen(to) + 1;
    char *out = malloc(n);
    IT_CHECK(out != NULL, "out of memory");
    snprintf(out, n, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
    return out;
}

/* Cut the <envelope to='jid'>…</envelope> element out of an epoch's XML. */
static char *drop_envelope(const char *xml, const char *jid, char **cut)
{
    char open[300];
    snprintf(open, sizeof open, "<envelope to='%s'>", jid);
    const char *a = strstr(xml, open);
    IT_CHECK(a != NULL, "no envelope for %s", jid);
    const char *b = strstr(a, "</envelope>") + strlen("</envelope>");
    if (cut) {
        *cut = malloc((size_t)(b - a) + 1);
        IT_CHECK(*cut != NULL, "out of memory");
        snprintf(*cut, (size_t)(b - a) + 1, "%.*s", (int)(b - a), a);
    }
    size_t n = strlen(xml) + 1;
    char *out = malloc(n);
    IT_CHECK(out != NULL, "out of memory");
    snprintf(out, n, "%.*s%s", (int)(a - xml), xml, b);
    return out;
}

static char *add_before_close(const char *xml, const char *extra)
{
    return replace(xml, "</epoch>", extra) /* then close again */;
}

static bool match_headline_epoch(xmpp_stanza_t *st, const void *arg)
{
    const char *number = arg;
    if (strcmp(xmpp_stanza_get_name(st), "message") != 0 ||
        strcmp(attr(st, "type"), "headline") != 0 || strcmp(attr(st, "from"), room.jid) != 0)
        return false;
    xmpp_stanza_t *e = xmpp_stanza_get_child_by_name_and_ns(st, "epoch", IT_NS);
    return e && strcmp(attr(e, "number"), number) == 0;
}

static bool match_rekey(xmpp_stanza_t *st, const void *arg)
{
    (void)arg;
    return strcmp(xmpp_stanza_get_name(st), "message") == 0 &&
           strcmp(attr(st, "type"), "headline") == 0 && strcmp(attr(st, "from"), room.jid) == 0 &&
           xmpp_stanza_get_child_by_name_and_ns(st, "rekey", IT_NS) != NULL;
}

static void bundle_sign_any(unsigned char sig[64], const char *bare, const unsigned char box[32])
{
    unsigned char pk[32], sk[64];
    it_user_keys(bare, pk, sk);
    static const char label[] = "sealroom.e2e.v1.identity.bundle";
    unsigned char msg[600];
    size_t n = 0, jl = strlen(bare);
    msg[n++] = (unsigned char)(sizeof label - 1);
    memcpy(msg + n, label, sizeof label - 1);
    n += sizeof label - 1;
    msg[n++] = (unsigned char)(jl >> 8);
    msg[n++] = (unsigned char)jl;
    memcpy(msg + n, bare, jl);
    n += jl;
    memcpy(msg + n, pk, 32);
    n += 32;
    memcpy(msg + n, box, 32);
    n += 32;
    crypto_sign_detached(sig, NULL, msg, n, sk);
    sodium_memzero(sk, sizeof sk);
}

/* ------------------------------------------------------------ identities */

static void identity_cases(void)
{
    it_log("identity bundles");
    const char *svc = it_env_get()->service;
    char *good = it_identity_xml(bob_bare);
    /* Registering the same bundle again is fine. */
    xmpp_stanza_t *st = it_raw_iq_ok(bob, "set", svc, good, "idempotent registration");
    xmpp_stanza_release(st);
    char *xml = replace(good, " box-key='", " x-box-key='");
    iq_refused(bob, "identity without box-key", "set", svc, xml, "modify", "bad-request", NULL);
    free(xml);
    xml = replace(good, " bundle-sig='", " x-bundle-sig='");
    iq_refused(bob, "identity without bundle-sig", "set", svc, xml, "modify", "bad-request", NULL);
    free(xml);
    xml = replace(good, " box-key='", " box-key='%%%");
    iq_refused(bob, "box-key in bad base64", "set", svc, xml, "modify", "bad-request", NULL);
    free(xml);
    xml = replace(good, " bundle-sig='", " bundle-sig='AAAA");
    iq_refused(bob, "bundle-sig of the wrong length", "set", svc, xml, "modify", "bad-request",
               NULL);
    free(xml);
    /* A bundle signature made for another box key. */
    unsigned char other_box[32], sig[64];
    randombytes_buf(other_box, sizeof other_box);
    bundle_sign_any(sig, bob_bare, other_box);
    {
        char *s = it_b64(sig, sizeof sig), attrs[200];
        const char *at = strstr(good, " bundle-sig='") + strlen(" bundle-sig='");
        char old[120];
        snprintf(old, sizeof old, "%.88s", at);
        snprintf(attrs, sizeof attrs, "%s", s);
        xml = replace(good, old, attrs);
        iq_refused(bob, "bundle signature over another box key", "set", svc, xml, "modify",
                   "not-acceptable", "bad-signature");
        free(xml);
        /* A valid bundle for another box key: the registered one stays. */
        char *b = it_b64(other_box, sizeof other_box), oldbox[60];
        const char *bat = strstr(good, " box-key='") + strlen(" box-key='");
        snprintf(oldbox, sizeof oldbox, "%.44s", bat);
        char *x1 = replace(good, oldbox, b);
        xml = replace(x1, old, s);
        iq_refused(bob, "replacing the registered box key", "set", svc, xml, "cancel", "conflict",
                   NULL);
        free(x1);
        free(xml);
        free(b);
        free(s);
    }
    /* The fetch gives all four, and they verify. */
    char q[400];
    snprintf(q, sizeof q, "<identity xmlns='%s' jid='%s'/>", IT_NS, bob_bare);
    st = it_raw_iq_ok(alice, "get", svc, q, "identity fetch");
    xmpp_stanza_t *id = xmpp_stanza_get_child_by_name_and_ns(st, "identity", IT_NS);
    unsigned char pk[32], sk[64], box[32], bsig[64], want_box[32];
    it_user_keys(bob_bare, pk, sk);
    sodium_memzero(sk, sizeof sk);
    it_user_box_pk(bob_bare, want_box);
    char *x = it_stanza_xml(st);
    size_t n = 0;
    IT_CHECK(id && sodium_base642bin(box, sizeof box, attr(id, "box-key"), strlen(attr(id, "box-key")),
                                     NULL, &n, NULL, sodium_base64_VARIANT_ORIGINAL) == 0 &&
                 n == 32 && memcmp(box, want_box, 32) == 0,
             "fetched box-key differs: %s", x);
    IT_CHECK(sodium_base642bin(bsig, sizeof bsig, attr(id, "bundle-sig"),
                               strlen(attr(id, "bundle-sig")), NULL, &n, NULL,
                               sodium_base64_VARIANT_ORIGINAL) == 0 &&
                 n == 64 && sr_e2e_bundle_verify(bsig, bob_bare, pk, box) == SR_E2E_OK,
             "fetched bundle-sig does not verify: %s", x);
    free(x);
    xmpp_stanza_release(st);
    free(good);
}

/* ----------------------------------------------------------------- vault */

static char *vault_blob_b64(unsigned char fill, size_t len)
{
    unsigned char *b = malloc(len);
    IT_CHECK(b != NULL, "out of memory");
    memset(b, fill, len);
    memcpy(b, "SRVL\x01\x01", 6);
    char *out = it_b64(b, len);
    free(b);
    return out;
}

/* Fetch judy's vault: 1 = got it (version, text), 0 = none, -1 = rate limited. */
static int vault_fetch(uint64_t *version, char **text, char *err_text, size_t errlen)
{
    char xml[100];
    snprintf(xml, sizeof xml, "<vault xmlns='%s'/>", IT_NS);
    xmpp_stanza_t *st = it_raw_iq(judy, "get", it_env_get()->service, xml);
    int rc;
    if (strcmp(attr(st, "type"), "result") == 0) {
        xmpp_stanza_t *v = xmpp_stanza_get_child_by_name_and_ns(st, "vault", IT_NS);
        IT_CHECK(v != NULL, "vault result without <vault/>");
        *version = strtoull(attr(v, "version"), NULL, 10);
        char *t = xmpp_stanza_get_text(v);
        *text = strdup(t ? t : "");
        if (t) xmpp_free(xmpp_stanza_get_context(v), t);
        rc = 1;
    } else {
        xmpp_stanza_t *e = xmpp_stanza_get_child_by_name(st, "error");
        if (e && xmpp_stanza_get_child_by_name_and_ns(e, "no-vault", IT_NS)) {
            it_check_error(st, "cancel", "item-not-found", "no-vault", "fetch of no vault");
            rc = 0;
        } else {
            it_check_error(st, "wait", "resource-constraint", "rate-limited", "vault fetch");
            xmpp_stanza_t *t = xmpp_stanza_get_child_by_name(e, "text");
            char *tt = t ? xmpp_stanza_get_text(t) : NULL;
            snprintf(err_text, errlen, "%s", tt ? tt : "");
            if (tt) xmpp_free(xmpp_stanza_get_context(t), tt);
            rc = -1;
        }
    }
    xmpp_stanza_release(st);
    return rc;
}

static uint64_t vault_store_ok(uint64_t version, const char *b64)
{
    size_t n = strlen(b64) + 200;
    char *xml = malloc(n);
    IT_CHECK(xml != NULL, "out of memory");
    snprintf(xml, n, "<vault xmlns='%s' version='%" PRIu64 "'>%s</vault>", IT_NS, version, b64);
    xmpp_stanza_t *st = it_raw_iq_ok(judy, "set", it_env_get()->service, xml, "vault store");
    xmpp_stanza_t *v = xmpp_stanza_get_child_by_name_and_ns(st, "vault", IT_NS);
    uint64_t got = v ? strtoull(attr(v, "version"), NULL, 10) : 0;
    IT_CHECK(got == version + 1, "stored version %" PRIu64 ", expected %" PRIu64, got, version + 1);
    xmpp_stanza_release(st);
    free(xml);
    return got;
}

static void vault_refused(const char *what, const char *version, const char *b64,
                          const char *etype, const char *cond, const char *app)
{
    size_t n = strlen(b64) + 200;
    char *xml = malloc(n);
    IT_CHECK(xml != NULL, "out of memory");
    if (version)
        snprintf(xml, n, "<vault xmlns='%s' version='%s'>%s</vault>", IT_NS, version, b64);
    else
        snprintf(xml, n, "<vault xmlns='%s'>%s</vault>", IT_NS, b64);
    xmpp_stanza_t *st = it_raw_iq(judy, "set", it_env_get()->service, xml);
    it_check_error(st, etype, cond, app, what);
    xmpp_stanza_release(st);
    free(xml);
}

static void vault_cases(void)
{
    it_log("vault");
    char err[256] = "";
    uint64_t version = 0;
    char *text = NULL;
    /* Earlier runs may have drained the bucket: it refills one a second here. */
    int got;
    uint64_t end = it_mono_ms() + 10000;
    while ((got = vault_fetch(&version, &text, err, sizeof err)) < 0 && it_mono_ms() < end)
        it_sleep_ms(500);
    IT_CHECK(got >= 0, "the vault fetch stayed rate limited: %s", err);
    char *blob_a = vault_blob_b64('a', 200), *blob_b = vault_blob_b64('b', 300);
    if (got == 0) {
        version = vault_store_ok(0, blob_a);
    } else {
        free(text);
        text = NULL;
    }
    vault_refused("creating a vault that exists", "0", blob_a, "cancel", "conflict",
                  "vault-conflict");
    char stale[24];
    snprintf(stale, sizeof stale, "%" PRIu64, version + 5);
    vault_refused("store with a version not read", stale, blob_a, "cancel", "conflict",
                  "vault-conflict");
    snprintf(stale, sizeof stale, "%" PRIu64, version);
    vault_refused("vault in bad base64", stale, "@@@", "modify", "bad-request", NULL);
    vault_refused("vault without version", NULL, blob_a, "modify", "bad-request", NULL);
    vault_refused("vault with a bad version", "-1", blob_a, "modify", "bad-request", NULL);
    {
        char *short_blob = vault_blob_b64('s', 73);
        vault_refused("vault shorter than its header", stale, short_blob, "modify",
                      "not-acceptable", "bad-vault");
        free(short_blob);
        unsigned char b[100];
        memset(b, 0, sizeof b);
        memcpy(b, "SRVX\x01", 5);
        char *bad = it_b64(b, sizeof b);
        vault_refused("vault without the SRVL magic", stale, bad, "modify", "not-acceptable",
                      "bad-vault");
        free(bad);
        memcpy(b, "SRVL\x02", 5);
        bad = it_b64(b, sizeof b);
        vault_refused("vault of version 2", stale, bad, "modify", "not-acceptable", "bad-vault");
        free(bad);
    }
    /* Compare-and-swap: the version read wins once. */
    uint64_t v2 = vault_store_ok(version, blob_b);
    vault_refused("a second store from the same version", stale, blob_a, "cancel", "conflict",
                  "vault-conflict");

    /* Fetch until the rate limit answers; stores still work meanwhile. */
    int limited_after = -1;
    for (int i = 0; i < 10 && limited_after < 0; i++) {
        uint64_t v = 0;
        char *t = NULL;
        int rc = vault_fetch(&v, &t, err, sizeof err);
        if (rc < 0) {
            limited_after = i;
            break;
        }
        IT_CHECK(rc == 1 && v == v2 && strcmp(t, blob_b) == 0,
                 "fetched vault: version %" PRIu64 " (want %" PRIu64 "), blob %s", v, v2,
                 t && strcmp(t, blob_b) == 0 ? "same" : "differs");
        free(t);
    }
    IT_CHECK(limited_after >= 0 && limited_after <= 4,
             "the fetch limit (burst 4 in the test stack) never applied (%d)", limited_after);
    IT_CHECK(strstr(err, "retry in") != NULL, "rate-limit text says when to retry: '%s'", err);
    it_log("rate limited after %d more fetches: %s", limited_after, err);
    uint64_t v3 = vault_store_ok(v2, blob_a);
    it_sleep_ms(1500);
    IT_CHECK(vault_fetch(&version, &text, err, sizeof err) == 1 && version == v3 &&
                 strcmp(text, blob_a) == 0,
             "the fetch after the refill sees the last store");
    free(text);
    /* Another user's vault is another row. */
    char xml[100];
    snprintf(xml, sizeof xml, "<vault xmlns='%s'/>", IT_NS);
    xmpp_stanza_t *st = it_raw_iq(dave, "get", it_env_get()->service, xml);
    char *x = it_stanza_xml(st);
    IT_CHECK(strstr(x, blob_a) == NULL && strstr(x, blob_b) == NULL,
             "another user was served judy's vault: %s", x);
    free(x);
    xmpp_stanza_release(st);
    free(blob_a);
    free(blob_b);
}

/* ----------------------------------------------------------------- epochs */

static void bundles_cases(void)
{
    it_log("member bundles");
    char xml[100];
    snprintf(xml, sizeof xml, "<bundles xmlns='%s'/>", IT_NS);
    iq_refused(dave, "bundles by a non-member", "get", room.jid, xml, "auth", "forbidden",
               "not-member");
    xmpp_stanza_t *st = it_raw_iq_ok(bob, "get", room.jid, xml, "bundles");
    xmpp_stanza_t *list = xmpp_stanza_get_child_by_name_and_ns(st, "bundles", IT_NS);
    size_t n = 0;
    for (xmpp_stanza_t *b = list ? xmpp_stanza_get_children(list) : NULL; b;
         b = xmpp_stanza_get_next(b)) {
        if (!xmpp_stanza_is_tag(b)) continue;
        const sr_member *m = sr_roster_find(&room.state, attr(b, "jid"));
        IT_CHECK(m != NULL, "bundle of a non-member %s", attr(b, "jid"));
        unsigned char key[32], box[32], sig[64];
        size_t kl = 0, bl = 0, sl = 0;
        sodium_base642bin(key, 32, attr(b, "key"), strlen(attr(b, "key")), NULL, &kl, NULL,
                          sodium_base64_VARIANT_ORIGINAL);
        sodium_base642bin(box, 32, attr(b, "box-key"), strlen(attr(b, "box-key")), NULL, &bl,
                          NULL, sodium_base64_VARIANT_ORIGINAL);
        sodium_base642bin(sig, 64, attr(b, "bundle-sig"), strlen(attr(b, "bundle-sig")), NULL,
                          &sl, NULL, sodium_base64_VARIANT_ORIGINAL);
        IT_CHECK(kl == 32 && bl == 32 && sl == 64 && memcmp(key, m->key, 32) == 0 &&
                     sr_e2e_bundle_verify(sig, m->jid, key, box) == SR_E2E_OK,
                 "bundle of %s does not match the roster or verify", m->jid);
        n++;
    }
    IT_CHECK(n == room.state.nmembers, "%zu bundles for %zu members", n, room.state.nmembers);
    xmpp_stanza_release(st);
}

static void epoch_cases(void)
{
    it_log("epochs");
    unsigned char secret[32];
    randombytes_buf(secret, sizeof secret);
    char q[100];
    snprintf(q, sizeof q, "<epoch xmlns='%s'/>", IT_NS);
    iq_refused(bob, "fetching an epoch before the first", "get", room.jid, q, "cancel",
               "item-not-found", "no-epoch");
    uint64_t next = room.epoch + 1;
    char *good = it_epoch_xml(&room, alice_bare, next, secret);
    char *xml, num[24], rv[24];
    snprintf(num, sizeof num, "number='%" PRIu64 "'", next);
    snprintf(rv, sizeof rv, "roster-version='%" PRIu64 "'", room.state.version);

    iq_refused(dave, "epoch by a non-member", "set", room.jid, good, "auth", "forbidden",
               "not-member");
    xml = replace(good, num, "number='x1'");
    iq_refused(alice, "epoch number not a number", "set", room.jid, xml, "modify", "bad-request",
               NULL);
    free(xml);
    {
        char old[40];
        snprintf(old, sizeof old, "roster-version='%" PRIu64 "'", room.state.version - 1);
        xml = replace(good, rv, old);
        iq_refused(alice, "epoch at an old roster version", "set", room.jid, xml, "wait",
                   "conflict", "stale-roster");
        free(xml);
    }
    {
        char later[40];
        snprintf(later, sizeof later, "number='%" PRIu64 "'", next + 1);
        xml = replace(good, num, later);
        iq_refused(alice, "epoch number skipping one", "set", room.jid, xml, "cancel", "conflict",
                   "epoch-conflict");
        free(xml);
        xml = replace(good, num, "number='0'");
        iq_refused(alice, "epoch number 0", "set", room.jid, xml, "cancel", "conflict",
                   "epoch-conflict");
        free(xml);
    }
    xml = replace(good, " kc='", " kc='AAAA");
    iq_refused(alice, "kc of the wrong length", "set", room.jid, xml, "modify", "bad-request",
               NULL);
    free(xml);
    xml = replace(good, " kc='", " kc='%%");
    iq_refused(alice, "kc in bad base64", "set", room.jid, xml, "modify", "bad-request", NULL);
    free(xml);
    xml = drop_envelope(good, bob_bare, NULL);
    iq_refused(alice, "an envelope missing", "set", room.jid, xml, "modify", "not-acceptable",
               "bad-envelope");
    free(xml);
    {
        char *env = it_envelope_b64(room.jid, next, room.state.head, alice_bare, dave_bare, secret);
        char extra[400];
        snprintf(extra, sizeof extra, "<envelope to='%s'>%s</envelope></epoch>", dave_bare, env);
        xml = add_before_close(good, extra);
        iq_refused(alice, "an envelope for a non-member", "set", room.jid, xml, "modify",
                   "not-acceptable", "bad-envelope");
        free(xml);
        free(env);
        char *cut = NULL;
        char *without = drop_envelope(good, bob_bare, &cut);
        char twice[800];
        snprintf(twice, sizeof twice, "%s%s</epoch>", cut, cut);
        xml = add_before_close(without, twice);
        iq_refused(alice, "a duplicate envelope", "set", room.jid, xml, "modify", "not-acceptable",
                   "bad-envelope");
        free(xml);
        /* Bob's envelope signed for another epoch number. */
        char *wrong = it_envelope_b64(room.jid, next + 1, room.state.head, alice_bare, bob_bare,
                                      secret);
        snprintf(twice, sizeof twice, "<envelope to='%s'>%s</envelope></epoch>", bob_bare, wrong);
        xml = add_before_close(without, twice);
        iq_refused(alice, "an envelope with a bad signature", "set", room.jid, xml, "modify",
                   "not-acceptable", "bad-envelope");
        free(xml);
        free(wrong);
        /* Bob's envelope sealed by bob but proposed by alice. */
        wrong = it_envelope_b64(room.jid, next, room.state.head, bob_bare, bob_bare, secret);
        snprintf(twice, sizeof twice, "<envelope to='%s'>%s</envelope></epoch>", bob_bare, wrong);
        xml = add_before_close(without, twice);
        iq_refused(alice, "an envelope signed by another member", "set", room.jid, xml, "modify",
                   "not-acceptable", "bad-envelope");
        free(xml);
        free(wrong);
        snprintf(twice, sizeof twice, "<envelope to='%s'>AAAA</envelope></epoch>", bob_bare);
        xml = add_before_close(without, twice);
        iq_refused(alice, "an envelope of the wrong length", "set", room.jid, xml, "modify",
                   "not-acceptable", "bad-envelope");
        free(xml);
        unsigned char v2[145];
        memset(v2, 0, sizeof v2);
        v2[0] = 2;
        char *b = it_b64(v2, sizeof v2);
        snprintf(twice, sizeof twice, "<envelope to='%s'>%s</envelope></epoch>", bob_bare, b);
        xml = add_before_close(without, twice);
        iq_refused(alice, "an envelope of version 2", "set", room.jid, xml, "modify",
                   "not-acceptable", "bad-envelope");
        free(xml);
        free(b);
        xml = add_before_close(good, "<junk/></epoch>");
        iq_refused(alice, "a foreign child", "set", room.jid, xml, "modify", "bad-request", NULL);
        free(xml);
        free(without);
        free(cut);
    }

    /* The real thing: stored, answered, announced to every occupant. */
    e2e_counts before = counts();
    xmpp_stanza_t *st = it_raw_iq_ok(alice, "set", room.jid, good, "epoch");
    xmpp_stanza_release(st);
    room.epoch = next;
    room.epoch_roster_version = room.state.version;
    memcpy(room.epoch_secret, secret, 32);
    memcpy(room.epoch_hash, room.state.head, 32);
    e2e_counts after = counts();
    IT_CHECK(after.epochs == before.epochs + 1 &&
                 after.envelopes == before.envelopes + (long)room.state.nmembers,
             "epoch rows %ld->%ld, envelopes %ld->%ld", before.epochs, after.epochs,
             before.envelopes, after.envelopes);
    char n[24];
    snprintf(n, sizeof n, "%" PRIu64, next);
    it_raw *present[2] = {alice, bob};
    for (int i = 0; i < 2; i++) {
        xmpp_stanza_t *h = it_raw_expect(present[i], match_headline_epoch, n, IT_TIMEOUT_MS,
                                         "epoch headline");
        xmpp_stanza_t *e = xmpp_stanza_get_child_by_name_and_ns(h, "epoch", IT_NS);
        char want[24];
        snprintf(want, sizeof want, "%" PRIu64, room.state.version);
        IT_CHECK(strcmp(attr(e, "roster-version"), want) == 0 &&
                     strcmp(attr(h, "to"), it_raw_full(present[i])) == 0,
                 "headline roster-version %s to %s", attr(e, "roster-version"), attr(h, "to"));
        xmpp_stanza_release(h);
    }
    iq_refused(alice, "the same epoch again", "set", room.jid, good, "cancel", "conflict",
               "epoch-conflict");
    free(good);
    sodium_memzero(secret, sizeof secret);

    /* Fetch: the requester's own envelope opens to the secret and KC_e holds. */
    iq_refused(dave, "epoch fetch by a non-member", "get", room.jid, q, "auth", "forbidden",
               "not-member");
    snprintf(q, sizeof q, "<epoch xmlns='%s' number='abc'/>", IT_NS);
    iq_refused(bob, "epoch fetch with a bad number", "get", room.jid, q, "modify", "bad-request",
               NULL);
    snprintf(q, sizeof q, "<epoch xmlns='%s' number='999'/>", IT_NS);
    iq_refused(bob, "fetch of an unknown epoch", "get", room.jid, q, "cancel", "item-not-found",
               "no-epoch");
    snprintf(q, sizeof q, "<epoch xmlns='%s'/>", IT_NS);
    st = it_raw_iq_ok(carol, "get", room.jid, q, "epoch fetch");
    xmpp_stanza_t *e = xmpp_stanza_get_child_by_name_and_ns(st, "epoch", IT_NS);
    xmpp_stanza_t *env = e ? xmpp_stanza_get_child_by_name(e, "envelope") : NULL;
    char *x = it_stanza_xml(st);
    IT_CHECK(env && strcmp(attr(e, "number"), n) == 0 && strcmp(attr(e, "sealer"), alice_bare) == 0 &&
                 strcmp(attr(env, "to"), carol_bare) == 0 && *attr(e, "created") &&
                 strcmp(attr(e, "max-age"), "86400") == 0 && !*attr(e, "stale") &&
                 !*attr(e, "expired"),
             "epoch answer: %s", x);
    char *envtext = xmpp_stanza_get_text(env);
    unsigned char blob[SR_E2E_ENVELOPE_BYTES], opened[32], kc[32], pk[32], sk[64];
    size_t bl = 0, kl = 0;
    sodium_base642bin(blob, sizeof blob, envtext, strlen(envtext), NULL, &bl, NULL,
                      sodium_base64_VARIANT_ORIGINAL);
    sodium_base642bin(kc, sizeof kc, attr(e, "kc"), strlen(attr(e, "kc")), NULL, &kl, NULL,
                      sodium_base64_VARIANT_ORIGINAL);
    xmpp_free(xmpp_stanza_get_context(env), envtext);
    sr_e2e_identity carol_id;
    it_user_keys(carol_bare, pk, sk);
    IT_CHECK(sr_e2e_identity_derive(&carol_id, sk) == SR_E2E_OK, "carol's identity");
    sodium_memzero(sk, sizeof sk);
    it_user_keys(alice_bare, pk, sk);
    sodium_memzero(sk, sizeof sk);
    sr_e2e_envelope_ctx ctx = {room.jid, next, room.epoch_hash, alice_bare, carol_bare,
                               carol_id.box_pk};
    IT_CHECK(bl == sizeof blob &&
                 sr_e2e_envelope_open(opened, blob, bl, &ctx, pk, carol_id.box_sk) == SR_E2E_OK &&
                 memcmp(opened, room.epoch_secret, 32) == 0 &&
                 sr_e2e_epoch_confirm(kc, opened, room.jid, next, room.epoch_hash) == SR_E2E_OK,
             "carol's envelope does not open to the epoch secret: %s", x);
    sodium_memzero(&carol_id, sizeof carol_id);
    sodium_memzero(opened, sizeof opened);
    free(x);
    xmpp_stanza_release(st);
}

/* ---------------------------------------------------- data keys, messages */

static char *datakey_xml(const unsigned char id[16], uint64_t epoch, const unsigned char h[32],
                         size_t idlen)
{
    char *i = it_b64(id, idlen), *hh = it_b64(h, 32);
    char *out = malloc(400);
    IT_CHECK(out != NULL, "out of memory");
    snprintf(out, 400, "<datakey xmlns='%s' id='%s' epoch='%" PRIu64 "'>%s</datakey>", IT_NS, i,
             epoch, hh);
    free(i);
    free(hh);
    return out;
}

static void datakey_cases(void)
{
    it_log("data keys");
    unsigned char id[16], h[32], bad[32];
    randombytes_buf(id, sizeof id);
    /* A valid header: some point (its discrete log does not matter here). */
    unsigned char r[64];
    randombytes_buf(r, sizeof r);
    crypto_core_ristretto255_from_hash(h, r);
    char *xml = datakey_xml(id, room.epoch, h, 16);
    iq_refused(dave, "data key by a non-member", "set", room.jid, xml, "auth", "forbidden",
               "not-member");
    free(xml);
    xml = datakey_xml(id, room.epoch + 1, h, 16);
    iq_refused(bob, "data key for a future epoch", "set", room.jid, xml, "modify",
               "not-acceptable", "stale-epoch");
    free(xml);
    memset(bad, 0xff, sizeof bad);
    xml = datakey_xml(id, room.epoch, bad, 16);
    iq_refused(bob, "header not a canonical point", "set", room.jid, xml, "modify", "bad-request",
               "bad-point");
    free(xml);
    memset(bad, 0, sizeof bad);
    xml = datakey_xml(id, room.epoch, bad, 16);
    iq_refused(bob, "header the identity point", "set", room.jid, xml, "modify", "bad-request",
               "bad-point");
    free(xml);
    xml = datakey_xml(id, room.epoch, h, 15);
    iq_refused(bob, "data-key id of 15 bytes", "set", room.jid, xml, "modify", "bad-request",
               NULL);
    free(xml);
    xml = datakey_xml(id, room.epoch, h, 16);
    char *noepoch = strdup(xml);
    char *p = strstr(noepoch, " epoch=");
    memcpy(p, " xpoch=", 7);
    iq_refused(bob, "data key without epoch", "set", room.jid, noepoch, "modify", "bad-request",
               NULL);
    free(noepoch);
    xmpp_stanza_t *st = it_raw_iq_ok(bob, "set", room.jid, xml, "data key");
    xmpp_stanza_release(st);
    st = it_raw_iq_ok(bob, "set", room.jid, xml, "the same data key again");
    xmpp_stanza_release(st);
    iq_refused(carol, "bob's data-key id by carol", "set", room.jid, xml, "cancel", "conflict",
               "datakey-conflict");
    free(xml);
    unsigned char h2[32];
    randombytes_buf(r, sizeof r);
    crypto_core_ristretto255_from_hash(h2, r);
    xml = datakey_xml(id, room.epoch, h2, 16);
    iq_refused(bob, "the same id with another header", "set", room.jid, xml, "cancel", "conflict",
               "datakey-conflict");
    free(xml);

    /* Fetch: known ids answered, unknown ones absent. */
    unsigned char unknown[16];
    randombytes_buf(unknown, sizeof unknown);
    char *a = it_b64(id, 16), *u = it_b64(unknown, 16), q[600];
    snprintf(q, sizeof q, "<datakeys xmlns='%s'><datakey id='%s'/><datakey id='%s'/></datakeys>",
             IT_NS, u, a);
    iq_refused(dave, "data-key fetch by a non-member", "get", room.jid, q, "auth", "forbidden",
               "not-member");
    st = it_raw_iq_ok(carol, "get", room.jid, q, "data-key fetch");
    xmpp_stanza_t *list = xmpp_stanza_get_child_by_name_and_ns(st, "datakeys", IT_NS);
    xmpp_stanza_t *k = list ? xmpp_stanza_get_child_by_name(list, "datakey") : NULL;
    char *x = it_stanza_xml(st);
    char *text = k ? xmpp_stanza_get_text(k) : NULL;
    char *hb = it_b64(h, 32), ep[24];
    snprintf(ep, sizeof ep, "%" PRIu64, room.epoch);
    IT_CHECK(k && !xmpp_stanza_get_next(k) && strcmp(attr(k, "id"), a) == 0 &&
                 strcmp(attr(k, "epoch"), ep) == 0 && strcmp(attr(k, "sender"), bob_bare) == 0 &&
                 text && strcmp(text, hb) == 0,
             "data-key answer: %s", x);
    if (text) xmpp_free(xmpp_stanza_get_context(k), text);
    free(x);
    free(hb);
    xmpp_stanza_release(st);
    snprintf(q, sizeof q, "<datakeys xmlns='%s'><datakey id='AAAA'/></datakeys>", IT_NS);
    iq_refused(carol, "data-key fetch with a bad id", "get", room.jid, q, "modify", "bad-request",
               NULL);
    {
        size_t n = 101 * 60 + 100;
        char *many = malloc(n);
        size_t len = (size_t)snprintf(many, n, "<datakeys xmlns='%s'>", IT_NS);
        for (int i = 0; i < 101; i++)
            len += (size_t)snprintf(many + len, n - len, "<datakey id='%s'/>", a);
        snprintf(many + len, n - len, "</datakeys>");
        iq_refused(carol, "fetch of 101 data keys", "get", room.jid, many, "modify", "bad-request",
                   NULL);
        free(many);
    }
    free(a);
    free(u);
    /* The helper's own keys for the writers. */
    it_raw_datakey(alice, &room);
    it_raw_datakey(bob, &room);
}

static void message_cases(char *origin_out)
{
    it_log("message checks");
    unsigned char p[IT_PAYLOAD_MIN + 30];
    char origin[40];
    it_random(p, sizeof p);
    it_raw_fill_payload(bob, room.jid, p, sizeof p);
    it_random_hex(origin, 8);
    msg_refused(bob, "payload of 128 bytes", p, IT_PAYLOAD_MIN - 1, origin, "modify",
                "bad-request", "bad-payload");
    p[0] = 2;
    msg_refused(bob, "payload of version 2", p, sizeof p, origin, "modify", "bad-request",
                "bad-payload");
    p[0] = 1;
    p[17] = 0x7f; /* roster version far ahead */
    msg_refused(bob, "payload naming a future roster version", p, sizeof p, origin, "modify",
                "bad-request", "bad-payload");
    it_raw_fill_payload(bob, room.jid, p, sizeof p);
    randombytes_buf(p + 1, 16);
    msg_refused(bob, "payload naming an unknown data key", p, sizeof p, origin, "modify",
                "not-acceptable", "stale-epoch");
    it_raw_fill_payload(alice, room.jid, p, sizeof p);
    msg_refused(bob, "payload naming another member's data key", p, sizeof p, origin, "modify",
                "not-acceptable", "stale-epoch");
    it_raw_fill_payload(bob, room.jid, p, sizeof p);
    char *sid = it_raw_say(bob, room.jid, p, sizeof p, origin);
    IT_CHECK(it_pg_count_origin(room.jid, bob_bare, origin) == 1, "stored once");
    free(sid);
    snprintf(origin_out, 40, "%s", origin);
}

/* After carol's removal: the epoch is stale until a new one. */
static void rotation_cases(const char *stored_origin)
{
    it_log("removal, stale epoch, rotation");
    long long seq = it_pg_seq_of_origin(room.jid, bob_bare, stored_origin);
    size_t len = 0;
    unsigned char *orig = it_pg_payload(room.jid, seq, &len);
    IT_CHECK(orig != NULL, "the stored message");
    it_room_change(alice, &room, SR_OP_REMOVE, "carol", SR_ROLE_NONE);
    uint64_t old_epoch = room.epoch;

    unsigned char id[16], h[32], r[64];
    randombytes_buf(id, sizeof id);
    randombytes_buf(r, sizeof r);
    crypto_core_ristretto255_from_hash(h, r);
    char *xml = datakey_xml(id, room.epoch, h, 16);
    iq_refused(bob, "data key for the stale epoch", "set", room.jid, xml, "modify",
               "not-acceptable", "stale-epoch");
    free(xml);
    unsigned char p[IT_PAYLOAD_MIN + 5];
    it_random(p, sizeof p);
    it_raw_fill_payload(bob, room.jid, p, sizeof p);
    char o[40];
    it_random_hex(o, 8);
    msg_refused(bob, "a message in the stale epoch", p, sizeof p, o, "modify", "not-acceptable",
                "stale-epoch");
    /* The resend of the stored message is answered, not refused. */
    char *b64 = it_b64(orig, len);
    it_raw_send_sealed(bob, room.jid, "resend-stale", stored_origin, b64);
    xmpp_stanza_t *st = it_raw_expect(bob, it_match_reflection, stored_origin, IT_TIMEOUT_MS,
                                      "resend in a stale epoch");
    xmpp_stanza_t *s = xmpp_stanza_get_child_by_name_and_ns(st, "stanza-id", IT_NS_SID);
    char want[24];
    snprintf(want, sizeof want, "%lld", seq);
    IT_CHECK(s && strcmp(attr(s, "id"), want) == 0, "resend answered with %s, not %s",
             attr(s, "id"), want);
    xmpp_stanza_release(st);

    /* carol is out: she gets no new envelope, may not read epochs. */
    it_raw_epoch(alice, &room);
    {
        it_room copy;
        it_room_init(&copy, room.jid);
        it_raw_fetch_epoch(bob, &copy);
        IT_CHECK(copy.epoch == room.epoch && copy.epoch_roster_version == room.state.version &&
                     memcmp(copy.epoch_secret, room.epoch_secret, 32) == 0,
                 "bob's fetched epoch %" PRIu64 " differs from the one alice made", copy.epoch);
        it_room_free(&copy);
    }
    char q[100];
    snprintf(q, sizeof q, "<epoch xmlns='%s'/>", IT_NS);
    iq_refused(carol, "epoch fetch by the removed member", "get", room.jid, q, "auth", "forbidden",
               "not-member");
    /* bob still reads his envelope of the old epoch. */
    snprintf(q, sizeof q, "<epoch xmlns='%s' number='%" PRIu64 "'/>", IT_NS, old_epoch);
    st = it_raw_iq_ok(bob, "get", room.jid, q, "old epoch fetch");
    xmpp_stanza_t *e = xmpp_stanza_get_child_by_name_and_ns(st, "epoch", IT_NS);
    char *x = it_stanza_xml(st);
    IT_CHECK(e && xmpp_stanza_get_child_by_name(e, "envelope") &&
                 strcmp(attr(e, "stale"), "true") == 0,
             "old epoch answer: %s", x);
    free(x);
    xmpp_stanza_release(st);

    /* bob's key of the old epoch is refused; the resend still answers. */
    it_random_hex(o, 8);
    msg_refused(bob, "a message naming an old-epoch data key", p, sizeof p, o, "modify",
                "not-acceptable", "stale-epoch");
    it_raw_send_sealed(bob, room.jid, "resend-old", stored_origin, b64);
    st = it_raw_expect(bob, it_match_reflection, stored_origin, IT_TIMEOUT_MS,
                       "resend after the rotation");
    s = xmpp_stanza_get_child_by_name_and_ns(st, "stanza-id", IT_NS_SID);
    IT_CHECK(s && strcmp(attr(s, "id"), want) == 0, "resend answered with %s, not %s",
             attr(s, "id"), want);
    xmpp_stanza_release(st);
    IT_CHECK(it_pg_count_origin(room.jid, bob_bare, stored_origin) == 1, "still stored once");
    free(b64);
    free(orig);
    /* A new key in the new epoch works. */
    it_raw_datakey(bob, &room);
    it_raw_fill_payload(bob, room.jid, p, sizeof p);
    free(it_raw_say(bob, room.jid, p, sizeof p, NULL));
}

static void nudge_case(void)
{
    it_log("rekey nudge (waits about 30 s)");
    it_raw_register(dave);
    it_room_change(alice, &room, SR_OP_ADD, "dave", SR_ROLE_MEMBER);
    it_raw_clear(alice);
    it_raw_clear(bob);
    /* alice sorts first among the present members' nicks. */
    xmpp_stanza_t *st = it_raw_expect(alice, match_rekey, NULL, 45000, "rekey nudge");
    xmpp_stanza_t *k = xmpp_stanza_get_child_by_name_and_ns(st, "rekey", IT_NS);
    IT_CHECK(strcmp(attr(k, "reason"), "membership") == 0 &&
                 strcmp(attr(st, "to"), it_raw_full(alice)) == 0,
             "rekey reason '%s' to %s", attr(k, "reason"), attr(st, "to"));
    xmpp_stanza_release(st);
    IT_CHECK(!it_raw_seen(bob, match_rekey, NULL, 500), "the nudge went to more than one");
    IT_CHECK(!it_raw_seen(alice, match_rekey, NULL, 2000), "nudged twice within a minute");
    it_raw_epoch(alice, &room);
}

int main(void)
{
    it_init("it_e2e_component");
    alice = it_raw_connect("alice");
    bob = it_raw_connect("bob");
    carol = it_raw_connect("carol");
    dave = it_raw_connect("dave");
    judy = it_raw_connect("judy");
    it_bare(alice_bare, sizeof alice_bare, "alice");
    it_bare(bob_bare, sizeof bob_bare, "bob");
    it_bare(carol_bare, sizeof carol_bare, "carol");
    it_bare(dave_bare, sizeof dave_bare, "dave");
    it_raw_register(bob);
    it_raw_register(carol);
    it_raw_register(dave);
    it_raw_register(judy);
    identity_cases();
    vault_cases();

    it_room_create(alice, &room, "e2e");
    it_log("room %s", room.jid);
    it_room_change(alice, &room, SR_OP_ADD, "bob", SR_ROLE_MEMBER);
    it_room_change(alice, &room, SR_OP_ADD, "carol", SR_ROLE_MEMBER);
    it_raw_join_ok(alice, room.jid, "alice");
    it_raw_join_ok(bob, room.jid, "bob");

    bundles_cases();
    epoch_cases();
    datakey_cases();
    char stored_origin[40];
    message_cases(stored_origin);
    rotation_cases(stored_origin);
    nudge_case();

    it_raw_free(alice);
    it_raw_free(bob);
    it_raw_free(carol);
    it_raw_free(dave);
    it_raw_free(judy);
    it_room_free(&room);
    it_log("passed");
    return 0;
}
