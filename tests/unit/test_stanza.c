/* Unit tests for the component's stanza helpers and request parsers:
 * base64 strictness, XEP-0082 timestamps, error replies, the <roster/>
 * parser and the MAM query parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "service.h"
#include "stanza.h"

static xmpp_ctx_t *ctx;

static xmpp_stanza_t *parse(const char *xml)
{
    xmpp_stanza_t *s = xmpp_stanza_new_from_string(ctx, xml);
    assert_non_null(s);
    return s;
}

static void test_b64_strict(void **state)
{
    (void)state;
    unsigned char out[8];
    assert_int_equal(st_b64_decode(out, sizeof out, "aGVsbG8="), 5);
    assert_memory_equal(out, "hello", 5);
    assert_int_equal(st_b64_decode(out, sizeof out, "aGVsbG8"), -1);     /* unpadded */
    assert_int_equal(st_b64_decode(out, sizeof out, "aGVs bG8="), -1);   /* whitespace */
    assert_int_equal(st_b64_decode(out, sizeof out, "aGVsbG8-"), -1);    /* URL alphabet */
    assert_int_equal(st_b64_decode(out, 4, "aGVsbG8="), -1);             /* too long for out */
    assert_int_equal(st_b64_decode(out, sizeof out, ""), 0);
    assert_false(st_b64_decode_exact(out, 4, "aGVsbG8="));
    assert_true(st_b64_decode_exact(out, 5, "aGVsbG8="));
    char *enc = st_b64_encode((const unsigned char *)"hello", 5);
    assert_string_equal(enc, "aGVsbG8=");
    free(enc);
}

static void test_stamps(void **state)
{
    (void)state;
    long long ms;
    assert_true(st_parse_stamp("1970-01-01T00:00:00Z", &ms));
    assert_int_equal(ms, 0);
    assert_true(st_parse_stamp("2026-11-22T01:02:03.456Z", &ms));
    char out[32];
    st_format_stamp(out, ms);
    assert_string_equal(out, "2026-11-22T01:02:03.456Z");
    assert_true(st_parse_stamp("2026-11-22T02:02:03.456+01:00", &ms));
    st_format_stamp(out, ms);
    assert_string_equal(out, "2026-11-22T01:02:03.456Z");
    assert_true(st_parse_stamp("2000-02-29T23:59:59Z", &ms));
    assert_int_equal(ms, 951868799000LL);
    assert_false(st_parse_stamp("2026-11-22", &ms));
    assert_false(st_parse_stamp("2026-13-01T00:00:00Z", &ms));
    assert_false(st_parse_stamp("2026-11-22T01:02:03", &ms));
    assert_false(st_parse_stamp("2026-11-22T01:02:03Zjunk", &ms));
    assert_false(st_parse_stamp("2026-11-22T01:02:03.Z", &ms));
    assert_false(st_parse_stamp(NULL, &ms));
}

static void test_error_reply(void **state)
{
    (void)state;
    xmpp_stanza_t *iq =
        parse("<iq type='set' id='x1' from='a@localhost/r' to='room@rooms.localhost'><q/></iq>");
    xmpp_stanza_t *err = st_error(iq, "room@rooms.localhost", "modify", "bad-request",
                                  "bad-chain", "why not");
    char *buf;
    size_t len;
    assert_int_equal(xmpp_stanza_to_text(err, &buf, &len), XMPP_EOK);
    assert_non_null(strstr(buf, "type=\"error\""));
    assert_non_null(strstr(buf, "id=\"x1\""));
    assert_non_null(strstr(buf, "to=\"a@localhost/r\""));
    assert_non_null(strstr(buf, "from=\"room@rooms.localhost\""));
    assert_non_null(strstr(buf, "<bad-request xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/>"));
    assert_non_null(strstr(buf, "<bad-chain xmlns=\"urn:xmpp:sealroom:0\"/>"));
    assert_non_null(strstr(buf, ">why not</text>"));
    assert_null(strstr(buf, "<q"));
    xmpp_free(ctx, buf);
    xmpp_stanza_release(err);
    xmpp_stanza_release(iq);
}

static sr_roster_version *signed_v0(unsigned char sk[64], unsigned char pk[32])
{
    unsigned char seed[32];
    memset(seed, 7, sizeof seed);
    crypto_sign_seed_keypair(pk, sk, seed);
    sr_roster_version *v = calloc(1, sizeof *v);
    strcpy(v->room, "team@rooms.localhost");
    strcpy(v->signer, "alice@localhost");
    v->nops = 1;
    v->ops[0].kind = SR_OP_ADD;
    v->ops[0].role = SR_ROLE_OWNER;
    strcpy(v->ops[0].jid, "alice@localhost");
    memcpy(v->ops[0].key, pk, 32);
    assert_true(sr_roster_sign(v, sk));
    return v;
}

static void test_roster_render_parse_roundtrip(void **state)
{
    (void)state;
    unsigned char sk[64], pk[32];
    sr_roster_version *v = signed_v0(sk, pk);
    xmpp_stanza_t *holder = parse("<iq/>");
    assert_true(chain_render_roster(holder, v));
    xmpp_stanza_t *el = st_child(holder, "roster", NS_SEALROOM);
    assert_non_null(el);
    sr_roster_version *back = malloc(sizeof *back);
    assert_null(chain_parse_roster(el, "team@rooms.localhost", back));
    assert_int_equal(back->nops, 1);
    assert_string_equal(back->ops[0].jid, "alice@localhost");
    assert_memory_equal(back->sig, v->sig, 64);
    sr_roster_state st;
    sr_roster_state_init(&st);
    assert_int_equal(sr_roster_apply(&st, back), SR_ROSTER_OK);
    sr_roster_state_free(&st);
    /* Another room's name must not be accepted for this room. */
    assert_non_null(chain_parse_roster(el, "other@rooms.localhost", back));
    free(back);
    free(v);
    xmpp_stanza_release(holder);
}

static void expect_roster_refused(const char *xml)
{
    xmpp_stanza_t *el = parse(xml);
    sr_roster_version *v = malloc(sizeof *v);
    assert_non_null(chain_parse_roster(el, "team@rooms.localhost", v));
    free(v);
    xmpp_stanza_release(el);
}

#define K32 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
#define S64 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="

static void test_roster_parse_rejects(void **state)
{
    (void)state;
    expect_roster_refused("<roster xmlns='urn:other' version='0' signer='a@b' sig='" S64
                          "'><add jid='a@b' role='owner' key='" K32 "'/></roster>");
    expect_roster_refused("<roster xmlns='urn:xmpp:sealroom:0' version='x' signer='a@b' sig='" S64
                          "'><add jid='a@b' role='owner' key='" K32 "'/></roster>");
    expect_roster_refused("<roster xmlns='urn:xmpp:sealroom:0' version='01' signer='a@b' sig='" S64
                          "'><add jid='a@b' role='owner' key='" K32 "'/></roster>");
    expect_roster_refused("<roster xmlns='urn:xmpp:sealroom:0' version='1' signer='a@b' sig='" S64
                          "'><remove jid='a@b'/></roster>"); /* no prev */
    expect_roster_refused("<roster xmlns='urn:xmpp:sealroom:0' version='0' signer='a@b' sig='AAAA'>"
                          "<add jid='a@b' role='owner' key='" K32 "'/></roster>");
    expect_roster_refused("<roster xmlns='urn:xmpp:sealroom:0' version='0' signer='a@b' sig='" S64
                          "'><add jid='a@b' role='king' key='" K32 "'/></roster>");
    expect_roster_refused("<roster xmlns='urn:xmpp:sealroom:0' version='0' signer='a@b' sig='" S64
                          "'><add jid='a@b' role='owner' key='AAAA'/></roster>");
    expect_roster_refused("<roster xmlns='urn:xmpp:sealroom:0' version='0' signer='a@b' sig='" S64
                          "'><frobnicate jid='a@b'/></roster>");
    expect_roster_refused("<roster xmlns='urn:xmpp:sealroom:0' version='0' signer='a@b' sig='" S64
                          "'></roster>");
    expect_roster_refused("<roster xmlns='urn:xmpp:sealroom:0' version='0' sig='" S64
                          "'><add jid='a@b' role='owner' key='" K32 "'/></roster>");
    expect_roster_refused("<roster xmlns='urn:xmpp:sealroom:0' version='0' signer='a@b' sig='" S64
                          "'><add role='owner' key='" K32 "'/></roster>");
}

static void test_mam_parse(void **state)
{
    (void)state;
    mam_query q;
    xmpp_stanza_t *el = parse(
        "<query xmlns='urn:xmpp:mam:2' queryid='f'><x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>"
        "<field var='start'><value>2026-01-01T00:00:00Z</value></field></x>"
        "<set xmlns='http://jabber.org/protocol/rsm'><max>500</max><before/></set></query>");
    assert_null(archive_parse_mam(el, 50, 250, &q));
    assert_int_equal(q.max, 250);
    assert_true(q.before_empty);
    assert_true(q.has_start && q.start_ms > 0);
    assert_false(q.has_end);
    xmpp_stanza_release(el);

    /* A date before 1970 is a real bound, not "absent". */
    el = parse("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>"
               "<field var='end'><value>1969-12-31T23:59:59Z</value></field></x></query>");
    assert_null(archive_parse_mam(el, 50, 250, &q));
    assert_true(q.has_end);
    assert_int_equal(q.end_ms, -1000);
    xmpp_stanza_release(el);

    el = parse("<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>"
               "<after>41</after></set></query>");
    assert_null(archive_parse_mam(el, 50, 250, &q));
    assert_int_equal(q.after, 41);
    assert_int_equal(q.max, 50);
    xmpp_stanza_release(el);

    const char *bad[] = {
        "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>-1</max></set></query>",
        "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><after>x</after></set></query>",
        "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><after>1</after><before>3</before></set></query>",
        "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'><field var='with'><value>a@b</value></field></x></query>",
        "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'><field var='start'><value>yesterday</value></field></x></query>",
        "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'><field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x></query>",
        NULL};
    for (int i = 0; bad[i]; i++) {
        el = parse(bad[i]);
        assert_non_null(archive_parse_mam(el, 50, 250, &q));
        xmpp_stanza_release(el);
    }
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    xmpp_initialize();
    ctx = xmpp_ctx_new(NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64_strict),
        cmocka_unit_test(test_stamps),
        cmocka_unit_test(test_error_reply),
        cmocka_unit_test(test_roster_render_parse_roundtrip),
        cmocka_unit_test(test_roster_parse_rejects),
        cmocka_unit_test(test_mam_parse),
    };
    int rc = cmocka_run_group_tests_name("stanza", tests, NULL, NULL);
    xmpp_ctx_free(ctx);
    xmpp_shutdown();
    return rc;
}
