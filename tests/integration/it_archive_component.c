/* Re-encryption tokens at sealroomd, with raw clients that make their own
 * epochs and tokens through the library's e2e core (issue 5): every bad
 * token is refused with its error and stores nothing (a non-member, a
 * member who did not make the epoch, epochs that are not consecutive or do
 * not exist, malformed, zero and non-canonical scalars, a scalar that does
 * not carry the check header of the older epoch to the newer one); the
 * right token is stored once (the same again is accepted, another one is
 * a conflict); and a data-key header wrapped under the older epoch is then
 * served re-keyed to the current one, exactly Δ·H.
 *
 * Then a wrong token and its undo: epoch 3 has no check header (a client
 * before 0.3), so its maker's wrong token 2 -> 3 is stored unverified, and
 * the sweep moves the headers of epochs 1 and 2 through it. Once the sweep
 * is complete a member who joins is asked to confirm the oldest check
 * header re-keyed to epoch 3, which does not open under k_3; answers nobody
 * asked for, for another epoch, malformed or from a non-member are refused
 * and change nothing; the member's <check-failed/> revokes the token the
 * check headers do not prove (2 -> 3, not 1 -> 2), and every header that
 * went through it comes back to epoch 2, byte for byte what it was before
 * (PostgreSQL read directly), served at epoch 2 and opening there; the
 * header of epoch 3 is untouched; the room asks nothing while headers are
 * behind. The maker's right token then re-keys them to epoch 3, the room
 * asks again, and <check-ok/> erases every token while every header opens
 * under k_3. In another room a member answers <check-failed/> to a chain
 * the check headers prove: nothing is undone and the tokens stay.
 * With the argument "restart" (a serial test): tokens wait for a member to
 * be present across a restart of sealroomd, whose sweep finds the room
 * again, and a member who joins then is asked and erases them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
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
    IT_CHECK(text &&
                 sodium_base642bin(buf, sizeof buf, text, strlen(text), NULL, &n, NULL,
                                   sodium_base64_VARIANT_ORIGINAL) == 0 &&
                 n == 32,
             "header is not 32 bytes of base64");
    memcpy(h, buf, 32);
    uint64_t e = strtoull(xmpp_stanza_get_attribute(el, "epoch"), NULL, 10);
    xmpp_free(xmpp_stanza_get_context(st), text);
    xmpp_stanza_release(st);
    return e;
}

/* ---- what PostgreSQL holds ---- */

static PGconn *g_pg;

static PGconn *pgc(void)
{
    if (!g_pg) {
        g_pg = PQconnectdb(it_env_get()->pg);
        IT_CHECK(PQstatus(g_pg) == CONNECTION_OK, "connect: %s", PQerrorMessage(g_pg));
    }
    return g_pg;
}

/* The epoch and header dkid is stored under. */
static uint64_t stored(const unsigned char dkid[16], unsigned char h[32])
{
    const char *p[2] = {room.jid, (const char *)dkid};
    const int l[2] = {0, 16}, f[2] = {0, 1};
    PGresult *r = PQexecParams(pgc(),
                               "SELECT d.epoch::text, d.header FROM datakeys d JOIN rooms r USING "
                               "(room_id) WHERE r.name = $1 AND d.dkid = $2",
                               2, NULL, p, l, f, 1);
    IT_CHECK(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
                 PQgetlength(r, 0, 1) == 32,
             "reading a data key: %s", PQerrorMessage(pgc()));
    uint64_t e = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    memcpy(h, PQgetvalue(r, 0, 1), 32);
    PQclear(r);
    return e;
}

/* Rows of the room in archive_undo: an undo under way. */
static long undo_rows(void)
{
    const char *p[1] = {room.jid};
    PGresult *r = PQexecParams(pgc(),
                               "SELECT count(*) FROM archive_undo u JOIN rooms r USING (room_id) "
                               "WHERE r.name = $1",
                               1, NULL, p, NULL, NULL, 0);
    IT_CHECK(PQresultStatus(r) == PGRES_TUPLES_OK, "counting undo rows: %s", PQerrorMessage(pgc()));
    long n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n;
}

/* Wait until dkid is stored at epoch e (the sweep's work), its header into h. */
static void wait_stored(const unsigned char dkid[16], uint64_t e, unsigned char h[32],
                        const char *what)
{
    uint64_t end = it_mono_ms() + IT_TIMEOUT_MS, got;
    while ((got = stored(dkid, h)) != e && it_mono_ms() < end)
        it_sleep_ms(20);
    IT_CHECK(got == e, "%s: the header is at epoch %llu, not %llu", what, (unsigned long long)got,
             (unsigned long long)e);
}

/* A member answers check-failed to a chain the check headers prove (1 -> 2,
 * both epochs with check headers): the fault is not a token's, so nothing
 * is undone, the token stays and the room stops asking about that epoch. */
static void scenario_proved_chain(it_raw *alice, it_raw *bob)
{
    it_room_create(alice, &room, "archive-proved");
    it_room_change(alice, &room, SR_OP_ADD, "bob", SR_ROLE_MEMBER);
    it_raw_epoch(alice, &room);
    unsigned char s1[32], h1[32], k1[32], k2[32], delta[32], hd[32], want[32], hc[32];
    memcpy(s1, room.epoch_secret, 32);
    memcpy(h1, room.epoch_hash, 32);
    uint64_t e1 = room.epoch;
    it_raw_datakey(bob, &room);
    unsigned char dkid[16];
    memcpy(dkid, it_raw_datakey_id(bob, room.jid), 16);
    IT_CHECK(stored(dkid, hd) == e1, "the header is not at epoch 1");
    it_raw_epoch(alice, &room);
    k_of(k1, e1, s1, h1);
    k_of(k2, room.epoch, room.epoch_secret, room.epoch_hash);
    IT_CHECK(sr_e2e_token_make(delta, k1, k2) == SR_E2E_OK, "token");
    char *t12 = it_b64(delta, 32), f1[24], f2[24];
    snprintf(f1, sizeof f1, "%llu", (unsigned long long)e1);
    snprintf(f2, sizeof f2, "%llu", (unsigned long long)room.epoch);
    xmpp_stanza_t *st = send_token(alice, f1, f2, t12);
    it_check_result(st, "the token 1 -> 2");
    xmpp_stanza_release(st);
    IT_CHECK(sr_e2e_header_rekey(want, delta, hd) == SR_E2E_OK, "rekey");
    wait_stored(dkid, room.epoch, hd, "the sweep of the proved chain");
    IT_CHECK(memcmp(hd, want, 32) == 0, "the stored header is not delta times the old one");
    it_raw_join_keys_ok(alice, room.jid, "alice");
    expect_confirm(alice, room.epoch, hc);
    IT_CHECK(sr_e2e_check_header_verify(hc, k2, room.jid) == SR_E2E_OK, "the check is right");
    st = answer(bob, "check-failed", f2);
    it_check_result(st, "a check-failed against a proved chain");
    xmpp_stanza_release(st);
    IT_CHECK(tokens() == 1, "%ld tokens after the check-failed", tokens());
    IT_CHECK(undo_rows() == 0, "an undo was started for a proved token");
    it_sleep_ms(1000);
    IT_CHECK(stored(dkid, hd) == room.epoch && memcmp(hd, want, 32) == 0,
             "the header moved after a check-failed against a proved chain");
    answer_refused(alice, "check-ok", f2, "cancel", "unexpected-request", NULL,
                   "a check-ok after the room stopped asking");
    IT_CHECK(!it_raw_seen(alice, match_confirm, NULL, 1500), "asked again about epoch 2");
    free(t12);
    sodium_memzero(k1, sizeof k1);
    sodium_memzero(k2, sizeof k2);
    sodium_memzero(s1, sizeof s1);
    sodium_memzero(delta, sizeof delta);
    it_room_free(&room);
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
    /* and one under epoch 2. */
    it_raw_datakey(bob, &room);
    unsigned char dkid2[16], hd2[32];
    memcpy(dkid2, it_raw_datakey_id(bob, room.jid), 16);
    IT_CHECK(stored(dkid2, hd2) == e2, "the second header is not at epoch 2");
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
    refused(alice, f1, f2, noncanon, "modify", "bad-request", "bad-token",
            "a non-canonical scalar");
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
    room.epoch = e3;
    memcpy(room.epoch_secret, s3, 32);
    memcpy(room.epoch_hash, room.state.head, 32);
    /* alice publishes a data key under epoch 3: no token moves it. */
    it_raw_datakey(alice, &room);
    unsigned char dkid3[16], hd3[32];
    memcpy(dkid3, it_raw_datakey_id(alice, room.jid), 16);
    IT_CHECK(stored(dkid3, hd3) == e3, "the third header is not at epoch 3");
    unsigned char k3[32], d23[32], wrong23[32];
    k_of(k3, e3, s3, room.state.head);
    IT_CHECK(sr_e2e_token_make(d23, k2, k3) == SR_E2E_OK, "token 2 -> 3");
    crypto_core_ristretto255_scalar_random(wrong23);
    char *t23 = it_b64(d23, 32), *w23 = it_b64(wrong23, 32);
    snprintf(f3, sizeof f3, "%llu", (unsigned long long)e3);
    refused(bob, f2, f3, t23, "auth", "forbidden", "not-sealer",
            "an unverifiable token from a member who did not make the epoch");

    /* ---- a wrong token, the check, the undo ---- */
    /* The maker's token is wrong (a buggy client): nothing can tell before
     * a member checks, so it is stored and the sweep applies it. */
    st = send_token(alice, f2, f3, w23);
    it_check_result(st, "the maker's wrong, unverifiable token");
    xmpp_stanza_release(st);
    IT_CHECK(tokens() == 2, "%ld tokens stored", tokens());
    /* What the headers are before the wrong token, at epoch 2: k_2·P. */
    unsigned char at2_1[32], at2_2[32], moved[32];
    IT_CHECK(sr_e2e_header_rekey(at2_1, delta, hd1) == SR_E2E_OK, "rekey");
    memcpy(at2_2, hd2, 32);
    wait_stored(dkid, e3, moved, "the sweep through the wrong token");
    wait_stored(dkid2, e3, moved, "the sweep through the wrong token");
    IT_CHECK(fetch_header(bob, dkid, got) == e3, "the header is not served at epoch 3");
    IT_CHECK(sr_e2e_header_unwrap(p2, k3, got) == SR_E2E_OK && memcmp(p1, p2, 32) != 0,
             "the header moved through a wrong token opens under k_3");

    /* Nobody is present for the room to ask (nor has it asked anybody). */
    answer_refused(alice, "check-ok", f3, "cancel", "unexpected-request", NULL,
                   "a check-ok nobody asked for");
    answer_refused(mallory, "check-ok", f3, "auth", "forbidden", "not-member",
                   "a non-member's check-ok");
    /* alice is present: the room asks her about epoch 3, with H_c(1)
     * carried by both tokens, which does not open under k_3. */
    it_raw_join_keys_ok(alice, room.jid, "alice");
    unsigned char hc[32];
    expect_confirm(alice, e3, hc);
    IT_CHECK(sr_e2e_check_header_verify(hc, k3, room.jid) != SR_E2E_OK,
             "the check header carried through the wrong token is k_3 times P_c");
    answer_refused(alice, "check-ok", f2, "cancel", "unexpected-request", NULL,
                   "a check-ok for another epoch");
    answer_refused(alice, "check-ok", "x3", "modify", "bad-request", NULL,
                   "a check-ok with a malformed epoch");
    answer_refused(mallory, "check-ok", f3, "auth", "forbidden", "not-member",
                   "a non-member's check-ok for the epoch asked");
    answer_refused(mallory, "check-failed", f3, "auth", "forbidden", "not-member",
                   "a non-member's check-failed");
    IT_CHECK(tokens() == 2 && undo_rows() == 0, "a refused answer changed the tokens");
    /* alice's key finds it wrong: the token the check headers do not prove
     * (2 -> 3; 1 -> 2 is proved) is revoked, and its headers come back. */
    st = answer(alice, "check-failed", f3);
    it_check_result(st, "check-failed");
    xmpp_stanza_release(st);
    IT_CHECK(tokens() == 1, "%ld tokens after the revocation, expected 1 -> 2 alone", tokens());
    uint64_t end = it_mono_ms() + IT_TIMEOUT_MS;
    while (undo_rows() > 0 && it_mono_ms() < end)
        it_sleep_ms(20);
    IT_CHECK(undo_rows() == 0, "the undo did not end");
    unsigned char now[32];
    IT_CHECK(stored(dkid, now) == e2 && memcmp(now, at2_1, 32) == 0,
             "the header of epoch 1 is not back at epoch 2 as it was");
    IT_CHECK(stored(dkid2, now) == e2 && memcmp(now, at2_2, 32) == 0,
             "the header of epoch 2 is not back as it was registered");
    IT_CHECK(stored(dkid3, now) == e3 && memcmp(now, hd3, 32) == 0,
             "the header of epoch 3 changed");
    /* Served where it is, and opening there: epoch 2 is a gap now. */
    IT_CHECK(fetch_header(bob, dkid, got) == e2 && memcmp(got, at2_1, 32) == 0,
             "the undone header is not served at epoch 2");
    IT_CHECK(sr_e2e_header_unwrap(p2, k2, got) == SR_E2E_OK && memcmp(p1, p2, 32) == 0,
             "the undone header does not open to its data key under k_2");
    answer_refused(alice, "check-ok", f3, "cancel", "unexpected-request", NULL,
                   "a check-ok after a failed check");
    IT_CHECK(!it_raw_seen(alice, match_confirm, NULL, 1500),
             "asked again while headers are behind");

    /* The maker's right token: the chain resumes, everything moves to
     * epoch 3, the room asks, and check-ok erases every token. */
    st = send_token(alice, f2, f3, t23);
    it_check_result(st, "the maker's right token after the undo");
    xmpp_stanza_release(st);
    IT_CHECK(tokens() == 2, "%ld tokens stored", tokens());
    expect_confirm(alice, e3, hc);
    IT_CHECK(sr_e2e_check_header_verify(hc, k3, room.jid) == SR_E2E_OK,
             "the re-keyed check header is not k_3 times P_c");
    IT_CHECK(sr_e2e_check_header_verify(hc, k1, room.jid) != SR_E2E_OK,
             "the check header was not re-keyed");
    unsigned char want3[32];
    IT_CHECK(sr_e2e_header_rekey(want3, d23, at2_1) == SR_E2E_OK, "rekey");
    IT_CHECK(stored(dkid, now) == e3 && memcmp(now, want3, 32) == 0,
             "the header of epoch 1 is not k_3 times P");
    IT_CHECK(sr_e2e_header_rekey(want3, d23, at2_2) == SR_E2E_OK, "rekey");
    IT_CHECK(stored(dkid2, now) == e3 && memcmp(now, want3, 32) == 0,
             "the header of epoch 2 is not k_3 times P");
    st = answer(alice, "check-ok", f3);
    it_check_result(st, "check-ok for epoch 3");
    xmpp_stanza_release(st);
    IT_CHECK(tokens() == 0, "%ld tokens left after check-ok", tokens());
    answer_refused(alice, "check-ok", f3, "cancel", "unexpected-request", NULL,
                   "a check-ok after the erasure");
    /* The archive did not need them any more: every header opens under k_3. */
    IT_CHECK(fetch_header(bob, dkid, got) == e3, "the header is not at epoch 3");
    IT_CHECK(sr_e2e_header_unwrap(p2, k3, got) == SR_E2E_OK && memcmp(p1, p2, 32) == 0,
             "after the erasure the header does not open to its data key under k_3");
    unsigned char q2[32];
    IT_CHECK(sr_e2e_header_unwrap(p2, k2, at2_2) == SR_E2E_OK &&
                 fetch_header(bob, dkid2, got) == e3 &&
                 sr_e2e_header_unwrap(q2, k3, got) == SR_E2E_OK && memcmp(p2, q2, 32) == 0,
             "the header of epoch 2 does not open to its data key under k_3");
    it_room_free(&room);
    scenario_proved_chain(alice, bob);
    free(t23);
    free(w23);
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
    PQfinish(g_pg);
    it_log("passed");
    return 0;
}
