/* Re-encryption tokens at sealroomd, with raw clients that make their own
 * epochs and tokens through the library's e2e core (issue 5): every bad
 * token is refused with its error and stores nothing (a non-member, a
 * member who did not make the epoch, epochs that are not consecutive or do
 * not exist, malformed, zero and non-canonical scalars, a scalar that does
 * not carry the check header of the older epoch to the newer one); the
 * right token is stored once (the same again is accepted, another one is
 * a conflict); and a data-key header wrapped under the older epoch is then
 * served re-keyed to the current one, exactly Δ·H. Then erasing tokens:
 * once the sweep is complete, a member who joins is asked to confirm the
 * oldest check header re-keyed to the current epoch (it opens under that
 * epoch's key, not under the old one's); answers nobody asked for, for
 * another epoch, malformed or from a non-member are refused and erase
 * nothing; <check-failed/> erases nothing and ends the asking for that
 * epoch; after the next epoch and its token the room asks again, and
 * <check-ok/> erases every token while the header still opens.
 * With the argument "restart" (a serial test): tokens wait for a member to
 * be present across a restart of sealroomd, whose sweep finds the room
 * again, and a member who joins then is asked and erases them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common.h"
#include "e2e/archive.h"
#include "e2e/epoch.h"

static it_room room;

static long tokens(void)
{
    return it_pg_count("archive_tokens", room.jid);
}

static xmpp_stanza_t *send_token(it_raw *rc, const char *from, const char *to, const char *delta)
{
    char xml[512];
    snprintf(xml, sizeof xml,
             "<token xmlns='urn:xmpp:sealroom:archive:0' from='%s' to='%s' delta='%s'/>", from, to,
             delta);
    return it_raw_iq(rc, "set", room.jid, xml);
}

static void refused(it_raw *rc, const char *from, const char *to, const char *delta,
                    const char *etype, const char *cond, const char *app, const char *what)
{
    long before = tokens();
    xmpp_stanza_t *st = send_token(rc, from, to, delta);
    it_check_error(st, etype, cond, app, what);
    xmpp_stanza_release(st);
    IT_CHECK(tokens() == before, "%s stored a token", what);
}

static void k_of(unsigned char k[32], uint64_t number, const unsigned char secret[32],
                 const unsigned char hash[32])
{
    sr_e2e_epoch_keys keys;
    IT_CHECK(sr_e2e_epoch_derive(&keys, secret, room.jid, number, hash) == SR_E2E_OK, "derive");
    memcpy(k, keys.k, 32);
    sodium_memzero(&keys, sizeof keys);
}

/* An answer to a check, <check-ok/> or <check-failed/>, for epoch. */
static xmpp_stanza_t *answer(it_raw *rc, const char *name, const char *epoch)
{
    char xml[256];
    snprintf(xml, sizeof xml, "<%s xmlns='urn:xmpp:sealroom:archive:0' epoch='%s'/>", name, epoch);
    return it_raw_iq(rc, "set", room.jid, xml);
}

static void answer_refused(it_raw *rc, const char *name, const char *epoch, const char *etype,
                           const char *cond, const char *app, const char *what)
{
    long before = tokens();
    xmpp_stanza_t *st = answer(rc, name, epoch);
    it_check_error(st, etype, cond, app, what);
    xmpp_stanza_release(st);
    IT_CHECK(tokens() == before, "%s erased tokens", what);
}

/* The room's <confirm-check/> headline. */
static bool match_confirm(xmpp_stanza_t *st, const void *arg)
{
    (void)arg;
    const char *type = xmpp_stanza_get_type(st);
    return strcmp(xmpp_stanza_get_name(st), "message") == 0 && type &&
           strcmp(type, "headline") == 0 &&
           xmpp_stanza_get_child_by_name_and_ns(st, "confirm-check",
                                                "urn:xmpp:sealroom:archive:0") != NULL;
}

/* Wait for the room to ask rc to confirm epoch e; the check header it
 * sends into hc. */
static void expect_confirm(it_raw *rc, uint64_t e, unsigned char hc[32])
{
    xmpp_stanza_t *st = it_raw_expect(rc, match_confirm, NULL, 15000, "a <confirm-check/>");
    xmpp_stanza_t *el =
        xmpp_stanza_get_child_by_name_and_ns(st, "confirm-check", "urn:xmpp:sealroom:archive:0");
    const char *from = xmpp_stanza_get_from(st), *ep = xmpp_stanza_get_attribute(el, "epoch"),
               *check = xmpp_stanza_get_attribute(el, "check");
    IT_CHECK(from && strcmp(from, room.jid) == 0, "the headline comes from %s", from ? from : "?");
    IT_CHECK(ep && strtoull(ep, NULL, 10) == e, "asked to confirm epoch %s, expected %llu",
             ep ? ep : "(none)", (unsigned long long)e);
    unsigned char buf[64];
    size_t n = 0;
    IT_CHECK(check &&
                 sodium_base642bin(buf, sizeof buf, check, strlen(check), NULL, &n, NULL,
                                   sodium_base64_VARIANT_ORIGINAL) == 0 &&
                 n == 32,
             "the check is not 32 bytes of base64");
    memcpy(hc, buf, 32);
    xmpp_stanza_release(st);
}

/* The header of dkid as the service serves it, and the epoch it names. */
static uint64_t fetch_header(it_raw *rc, const unsigned char dkid[16], unsigned char h[32])
{
    char *id = it_b64(dkid, 16), xml[256];
    snprintf(xml, sizeof xml, "<datakeys xmlns='%s'><datakey id='%s'/></datakeys>", IT_NS, id);
    free(id);
    xmpp_stanza_t *st = it_raw_iq(rc, "get", room.jid, xml);
    it_check_result(st, "datakeys fetch");
    xmpp_stanza_t *list = xmpp_stanza_get_child_by_name_and_ns(st, "datakeys", IT_NS);
    xmpp_stanza_t *el = list ? xmpp_stanza_get_child_by_name(list, "datakey") : NULL;
    IT_CHECK(el != NULL, "no datakey in the answer");
    char *text = xmpp_stanza_get_text(el);
    unsigned char buf[64];
    size_t n = 0;
    IT_CHECK(text && sodium_base642bin(buf, sizeof buf, text, strlen(text), NULL, &n, NULL,
                                       sodium_base64_VARIANT_ORIGINAL) == 0 &&
                 n == 32,
             "header is not 32 bytes of base64");
    memcpy(h, buf, 32);
    uint64_t e = strtoull(xmpp_stanza_get_attribute(el, "epoch"), NULL, 10);
    xmpp_free(xmpp_stanza_get_context(st), text);
    xmpp_stanza_release(st);
    return e;
}

/* Tokens 1 -> 2 stored while nobody is present; sealroomd restarts; alice
 * joins and is asked about epoch 2; her check-ok erases the token. */
static int scenario_restart(void)
{
    const it_env *env = it_init("it_archive_component restart");
    if (sodium_init() < 0) return 1;
    it_raw *alice = it_raw_connect("alice"), *bob = it_raw_connect("bob");
    it_raw_register(alice);
    it_raw_register(bob);
    it_room_create(alice, &room, "archive-restart");
    it_room_change(alice, &room, SR_OP_ADD, "bob", SR_ROLE_MEMBER);
    it_raw_epoch(alice, &room);
    it_raw_datakey(bob, &room);
    unsigned char k1[32], k2[32], delta[32], hc[32];
    k_of(k1, room.epoch, room.epoch_secret, room.epoch_hash);
    it_raw_epoch(alice, &room);
    k_of(k2, room.epoch, room.epoch_secret, room.epoch_hash);
    IT_CHECK(sr_e2e_token_make(delta, k1, k2) == SR_E2E_OK, "token");
    char *t12 = it_b64(delta, 32), f1[24], f2[24];
    snprintf(f1, sizeof f1, "%llu", (unsigned long long)room.epoch - 1);
    snprintf(f2, sizeof f2, "%llu", (unsigned long long)room.epoch);
    xmpp_stanza_t *st = send_token(alice, f1, f2, t12);
    it_check_result(st, "the token");
    xmpp_stanza_release(st);
    IT_CHECK(tokens() == 1, "%ld tokens stored", tokens());
    /* Nobody could be asked: the token stays over the restart. */
    it_run_command("restart sealroomd", env->sealroomd_restart);
    it_wait_component(30000);
    IT_CHECK(tokens() == 1, "%ld tokens after the restart", tokens());
    it_raw_join_keys_ok(alice, room.jid, "alice");
    expect_confirm(alice, room.epoch, hc);
    IT_CHECK(sr_e2e_check_header_verify(hc, k2, room.jid) == SR_E2E_OK,
             "the re-keyed check header is not k_2 times P_c");
    st = answer(alice, "check-ok", f2);
    it_check_result(st, "check-ok after the restart");
    xmpp_stanza_release(st);
    IT_CHECK(tokens() == 0, "%ld tokens left after check-ok", tokens());
    free(t12);
    sodium_memzero(k1, sizeof k1);
    sodium_memzero(k2, sizeof k2);
    sodium_memzero(delta, sizeof delta);
    it_raw_free(alice);
    it_raw_free(bob);
    it_room_free(&room);
    it_log("passed");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "restart") == 0) return scenario_restart();
    it_init("it_archive_component");
    if (sodium_init() < 0) return 1;
    it_raw *alice = it_raw_connect("alice"), *bob = it_raw_connect("bob"),
           *mallory = it_raw_connect("mallory");
    it_raw_register(alice);
    it_raw_register(bob);
    it_room_create(alice, &room, "archive-tokens");
    it_room_change(alice, &room, SR_OP_ADD, "bob", SR_ROLE_MEMBER);
    it_raw_epoch(alice, &room); /* epoch 1, by alice */
    unsigned char s1[32], h1[32];
    memcpy(s1, room.epoch_secret, 32);
    memcpy(h1, room.epoch_hash, 32);
    uint64_t e1 = room.epoch;
    /* bob publishes a data key under epoch 1. */
    it_raw_datakey(bob, &room);
    unsigned char dkid[16], hd1[32];
    memcpy(dkid, it_raw_datakey_id(bob, room.jid), 16);
    IT_CHECK(fetch_header(bob, dkid, hd1) == e1, "the header is not at epoch 1");
    it_raw_epoch(alice, &room); /* epoch 2, by alice */
    uint64_t e2 = room.epoch;
    IT_CHECK(e2 == e1 + 1, "epochs %llu, %llu", (unsigned long long)e1, (unsigned long long)e2);
    unsigned char k1[32], k2[32], delta[32], wrong[32];
    k_of(k1, e1, s1, h1);
    k_of(k2, e2, room.epoch_secret, room.epoch_hash);
    IT_CHECK(sr_e2e_token_make(delta, k1, k2) == SR_E2E_OK, "token");
    crypto_core_ristretto255_scalar_random(wrong);
    char f1[24], f2[24], f3[24];
    snprintf(f1, sizeof f1, "%llu", (unsigned long long)e1);
    snprintf(f2, sizeof f2, "%llu", (unsigned long long)e2);
    snprintf(f3, sizeof f3, "%llu", (unsigned long long)(e2 + 1));
    char *good = it_b64(delta, 32), *bad = it_b64(wrong, 32);
    unsigned char ff[32], zero[32] = {0};
    memset(ff, 0xff, sizeof ff);
    char *noncanon = it_b64(ff, 32), *zeros = it_b64(zero, 32);

    refused(mallory, f1, f2, good, "auth", "forbidden", "not-member", "a non-member's token");
    refused(bob, f1, f2, bad, "modify", "not-acceptable", "bad-token",
            "a wrong token from a member who did not make the epoch");
    refused(alice, f1, f3, good, "modify", "bad-request", "bad-token", "epochs 1 -> 3");
    refused(alice, f2, f3, good, "cancel", "item-not-found", "no-epoch", "a token to no epoch");
    refused(alice, "0", f1, good, "modify", "bad-request", "bad-token", "a token from epoch 0");
    refused(alice, f1, f2, noncanon, "modify", "bad-request", "bad-token", "a non-canonical scalar");
    refused(alice, f1, f2, zeros, "modify", "bad-request", "bad-token", "a zero scalar");
    refused(alice, f1, f2, "not*base64", "modify", "bad-request", "bad-token", "bad base64");
    refused(alice, f1, f2, bad, "modify", "not-acceptable", "bad-token",
            "a token that does not carry check header 1 to check header 2");
    /* Before any token, the header is served as stored. */
    unsigned char got[32], want[32];
    IT_CHECK(fetch_header(bob, dkid, got) == e1 && memcmp(got, hd1, 32) == 0,
             "the header changed without a token");

    xmpp_stanza_t *st = send_token(alice, f1, f2, good);
    it_check_result(st, "the right token");
    xmpp_stanza_release(st);
    IT_CHECK(tokens() == 1, "%ld tokens stored", tokens());
    st = send_token(alice, f1, f2, good);
    it_check_result(st, "the same token again");
    xmpp_stanza_release(st);
    refused(alice, f1, f2, bad, "cancel", "conflict", "bad-token", "another token for 1 -> 2");
    /* The check headers prove it: the right token is accepted from any member. */
    st = send_token(bob, f1, f2, good);
    it_check_result(st, "the right token from another member");
    xmpp_stanza_release(st);
    IT_CHECK(tokens() == 1, "%ld tokens stored", tokens());

    /* The lazy path: served re-keyed to epoch 2, exactly Δ·H. */
    IT_CHECK(sr_e2e_header_rekey(want, delta, hd1) == SR_E2E_OK, "rekey");
    IT_CHECK(fetch_header(bob, dkid, got) == e2, "the header is not served at epoch 2");
    IT_CHECK(memcmp(got, want, 32) == 0, "the served header is not delta times the stored one");
    unsigned char p1[32], p2[32];
    IT_CHECK(sr_e2e_header_unwrap(p1, k1, hd1) == SR_E2E_OK &&
                 sr_e2e_header_unwrap(p2, k2, got) == SR_E2E_OK && memcmp(p1, p2, 32) == 0,
             "the re-keyed header does not open to the same data key under k_2");

    /* An epoch without a check header (a client before 0.3): its token
     * cannot be verified, so only the epoch's maker may send it. */
    unsigned char s3[32];
    randombytes_buf(s3, sizeof s3);
    uint64_t e3 = e2 + 1;
    char *xml = it_epoch_xml(&room, it_raw_bare(alice), e3, s3);
    char *c = strstr(xml, " check='");
    IT_CHECK(c != NULL, "no check attribute to strip");
    char *q = strchr(c + 8, '\'');
    memmove(c, q + 1, strlen(q + 1) + 1);
    st = it_raw_iq(alice, "set", room.jid, xml);
    it_check_result(st, "an epoch without a check header");
    xmpp_stanza_release(st);
    free(xml);
    unsigned char k3[32], d23[32];
    k_of(k3, e3, s3, room.state.head);
    IT_CHECK(sr_e2e_token_make(d23, k2, k3) == SR_E2E_OK, "token 2 -> 3");
    char *t23 = it_b64(d23, 32);
    snprintf(f3, sizeof f3, "%llu", (unsigned long long)e3);
    refused(bob, f2, f3, t23, "auth", "forbidden", "not-sealer",
            "an unverifiable token from a member who did not make the epoch");
    st = send_token(alice, f2, f3, t23);
    it_check_result(st, "the maker's unverifiable token");
    xmpp_stanza_release(st);
    IT_CHECK(tokens() == 2, "%ld tokens stored", tokens());
    free(t23);

    /* ---- erasing tokens ---- */
    /* Nobody is present for the room to ask (nor has it asked anybody). */
    answer_refused(alice, "check-ok", f3, "cancel", "unexpected-request", NULL,
                   "a check-ok nobody asked for");
    answer_refused(mallory, "check-ok", f3, "auth", "forbidden", "not-member",
                   "a non-member's check-ok");
    /* alice is present: the room asks her about epoch 3, with H_c(1)
     * carried by both tokens, which opens under k_3 and not under k_1. */
    it_raw_join_keys_ok(alice, room.jid, "alice");
    unsigned char hc[32];
    expect_confirm(alice, e3, hc);
    IT_CHECK(sr_e2e_check_header_verify(hc, k3, room.jid) == SR_E2E_OK,
             "the re-keyed check header is not k_3 times P_c");
    IT_CHECK(sr_e2e_check_header_verify(hc, k1, room.jid) != SR_E2E_OK,
             "the check header was not re-keyed");
    answer_refused(alice, "check-ok", f2, "cancel", "unexpected-request", NULL,
                   "a check-ok for another epoch");
    answer_refused(alice, "check-ok", "x3", "modify", "bad-request", NULL,
                   "a check-ok with a malformed epoch");
    answer_refused(mallory, "check-ok", f3, "auth", "forbidden", "not-member",
                   "a non-member's check-ok for the epoch asked");
    answer_refused(mallory, "check-failed", f3, "auth", "forbidden", "not-member",
                   "a non-member's check-failed");
    /* A member reports a wrong check header: nothing is erased, and the
     * room no longer takes an answer for epoch 3. */
    st = answer(bob, "check-failed", f3);
    it_check_result(st, "check-failed");
    xmpp_stanza_release(st);
    IT_CHECK(tokens() == 2, "check-failed erased tokens");
    answer_refused(alice, "check-ok", f3, "cancel", "unexpected-request", NULL,
                   "a check-ok after a failed check");
    IT_CHECK(!it_raw_seen(alice, match_confirm, NULL, 1500), "asked again about epoch 3");
    /* Epoch 4 and its token (unverified: epoch 3 has no check header): the
     * room asks about epoch 4, and check-ok erases every token. */
    room.epoch = e3;
    memcpy(room.epoch_secret, s3, 32);
    memcpy(room.epoch_hash, room.state.head, 32);
    it_raw_epoch(alice, &room);
    uint64_t e4 = room.epoch;
    unsigned char k4[32], d34[32];
    k_of(k4, e4, room.epoch_secret, room.epoch_hash);
    IT_CHECK(sr_e2e_token_make(d34, k3, k4) == SR_E2E_OK, "token 3 -> 4");
    char *t34 = it_b64(d34, 32), f4[24];
    snprintf(f4, sizeof f4, "%llu", (unsigned long long)e4);
    st = send_token(alice, f3, f4, t34);
    it_check_result(st, "the token 3 -> 4");
    xmpp_stanza_release(st);
    IT_CHECK(tokens() == 3, "%ld tokens stored", tokens());
    expect_confirm(alice, e4, hc);
    IT_CHECK(sr_e2e_check_header_verify(hc, k4, room.jid) == SR_E2E_OK,
             "the check header re-keyed to epoch 4 is not k_4 times P_c");
    st = answer(alice, "check-ok", f4);
    it_check_result(st, "check-ok for epoch 4");
    xmpp_stanza_release(st);
    IT_CHECK(tokens() == 0, "%ld tokens left after check-ok", tokens());
    answer_refused(alice, "check-ok", f4, "cancel", "unexpected-request", NULL,
                   "a check-ok after the erasure");
    /* The archive did not need them any more: the header opens under k_4. */
    IT_CHECK(fetch_header(bob, dkid, got) == e4, "the header is not at epoch 4");
    IT_CHECK(sr_e2e_header_unwrap(p2, k4, got) == SR_E2E_OK && memcmp(p1, p2, 32) == 0,
             "after the erasure the header does not open to its data key under k_4");
    free(t34);
    sodium_memzero(k4, sizeof k4);
    sodium_memzero(d34, sizeof d34);
    sodium_memzero(k3, sizeof k3);
    sodium_memzero(s3, sizeof s3);
    sodium_memzero(d23, sizeof d23);
    sodium_memzero(k1, sizeof k1);
    sodium_memzero(k2, sizeof k2);
    sodium_memzero(delta, sizeof delta);
    sodium_memzero(s1, sizeof s1);
    free(good);
    free(bad);
    free(noncanon);
    free(zeros);
    it_raw_free(alice);
    it_raw_free(bob);
    it_raw_free(mallory);
    it_room_free(&room);
    it_log("passed");
    return 0;
}
