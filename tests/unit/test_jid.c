/* Unit tests for proto/jid.c: splitting, normalisation and every refusal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "proto/jid.h"

static void test_split_full(void **state)
{
    sr_jid j;
    assert_true(sr_jid_parse(&j, "Alice@LocalHost/Phone Home"));
    assert_string_equal(j.local, "alice");
    assert_string_equal(j.domain, "localhost");
    assert_string_equal(j.resource, "Phone Home");
}

static void test_split_forms(void **state)
{
    sr_jid j;
    assert_true(sr_jid_parse(&j, "rooms.localhost"));
    assert_string_equal(j.local, "");
    assert_string_equal(j.domain, "rooms.localhost");
    assert_string_equal(j.resource, "");

    assert_true(sr_jid_parse(&j, "rooms.localhost/res"));
    assert_string_equal(j.local, "");
    assert_string_equal(j.resource, "res");

    /* The resource begins at the first slash and may hold '@' and '/'. */
    assert_true(sr_jid_parse(&j, "team@rooms.localhost/a@b/c"));
    assert_string_equal(j.local, "team");
    assert_string_equal(j.domain, "rooms.localhost");
    assert_string_equal(j.resource, "a@b/c");

    /* Trailing dot on the domain names the same domain. */
    assert_true(sr_jid_parse(&j, "bob@example.com."));
    assert_string_equal(j.domain, "example.com");

    /* Non-ASCII is kept bytewise, only ASCII is lowercased. */
    assert_true(sr_jid_parse(&j, "J\xc3\xbcRGEN@Example.COM"));
    assert_string_equal(j.local, "j\xc3\xbcrgen");
    assert_string_equal(j.domain, "example.com");
}

static void test_bare(void **state)
{
    char out[64];
    sr_jid j;
    assert_true(sr_jid_normalise_bare(out, sizeof out, "Bob@LOCALHOST/x"));
    assert_string_equal(out, "bob@localhost");
    assert_true(sr_jid_normalise_bare(out, sizeof out, "Rooms.Localhost/x"));
    assert_string_equal(out, "rooms.localhost");
    assert_true(sr_jid_parse(&j, "bob@localhost"));
    assert_false(sr_jid_bare(out, 5, &j));
    assert_string_equal(out, "");
    assert_true(sr_jid_bare(out, 14, &j));
    assert_false(sr_jid_normalise_bare(out, sizeof out, "@localhost"));
}

static void test_rejects(void **state)
{
    sr_jid j;
    static const char *bad[] = {
        "", "@", "alice@", "@localhost", "alice@localhost/", "/res", "alice@/res",
        "al ice@localhost", "alice@local host", "al\x01ice@localhost", "alice@localhost/r\x7f",
        "a\"b@localhost", "a&b@localhost", "a'b@localhost", "a:b@localhost", "a<b@localhost",
        "a>b@localhost", "alice@host@other", "\xff@localhost", "a\xc0\x80@localhost",
        "alice@localhost/\xed\xa0\x80",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (sr_jid_parse(&j, bad[i]))
            fail_msg("accepted invalid JID #%zu", i);
        assert_string_equal(j.domain, "");
    }
}

static void test_lengths(void **state)
{
    char buf[1100 + 20];
    sr_jid j;
    memset(buf, 'a', 1023);
    strcpy(buf + 1023, "@localhost");
    assert_true(sr_jid_parse(&j, buf));
    assert_int_equal(strlen(j.local), 1023);
    memset(buf, 'a', 1024);
    strcpy(buf + 1024, "@localhost");
    assert_false(sr_jid_parse(&j, buf));

    strcpy(buf, "a@");
    memset(buf + 2, 'd', 1024);
    buf[2 + 1024] = '\0';
    assert_false(sr_jid_parse(&j, buf));
    buf[2 + 1023] = '\0';
    assert_true(sr_jid_parse(&j, buf));

    strcpy(buf, "a@b/");
    memset(buf + 4, 'r', 1024);
    buf[4 + 1024] = '\0';
    assert_false(sr_jid_parse(&j, buf));
    buf[4 + 1023] = '\0';
    assert_true(sr_jid_parse(&j, buf));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_full), cmocka_unit_test(test_split_forms),
        cmocka_unit_test(test_bare),       cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_lengths),
    };
    return cmocka_run_group_tests_name("jid", tests, NULL, NULL);
}
