/* Unit tests for sealroomd's configuration (component/config.c): defaults,
 * the file syntax, every error path with its file:line, environment
 * overrides, reload rules and redaction of secrets in the log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

static char path[64];

static const char *write_conf(const char *text)
{
    snprintf(path, sizeof path, "/tmp/sealroomd-test-conf-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static int teardown_file(void **state)
{
    if (path[0]) unlink(path);
    path[0] = '\0';
    unsetenv("SEALROOMD_COMPONENT_SECRET");
    unsetenv("SEALROOMD_DB_CONNINFO");
    unsetenv("SEALROOMD_XMPP_PORT");
    return 0;
}

static void test_table_is_complete(void **state)
{
    size_t n;
    const config_key_info *k = config_keys(&n);
    assert_int_equal(n, 29); /* one per field of struct config */
    for (size_t i = 0; i < n; i++) {
        assert_non_null(k[i].name);
        assert_non_null(k[i].help);
        assert_true(strchr(k[i].name, '.') != NULL);
        for (size_t j = i + 1; j < n; j++) assert_string_not_equal(k[i].name, k[j].name);
    }
}

static void test_defaults(void **state)
{
    config c;
    char err[256];
    setenv("SEALROOMD_COMPONENT_SECRET", "envsecret", 1);
    assert_int_equal(config_load(&c, NULL, err, sizeof err), 0);
    assert_string_equal(c.component_jid, "rooms.localhost");
    assert_string_equal(c.component_secret, "envsecret");
    assert_string_equal(c.xmpp_host, "127.0.0.1");
    assert_int_equal(c.xmpp_port, 5347);
    assert_int_equal(c.reconnect_min_ms, 250);
    assert_int_equal(c.reconnect_max_ms, 30000);
    assert_string_equal(c.log_file, "-");
    assert_string_equal(c.log_level, "info");
    assert_string_equal(c.admins, "");
    assert_string_equal(c.fanout_jid, "");
    assert_int_equal(c.max_payload_bytes, 65536);
    assert_int_equal(c.mam_default_page, 50);
    assert_int_equal(c.mam_max_page, 250);
    assert_int_equal(c.write_batch_max, 512);
    assert_int_equal(c.epoch_max_age, 86400);
    assert_int_equal(c.epoch_max_members, 10000);
    assert_int_equal(c.vault_fetch_burst, 5);
    assert_int_equal(c.vault_fetch_per_hour, 30);
    /* hostname-pid */
    char pid[32];
    snprintf(pid, sizeof pid, "-%ld", (long)getpid());
    assert_non_null(c.instance_name);
    assert_non_null(strstr(c.instance_name, pid));
    config_free(&c);
}

static void test_secret_required(void **state)
{
    config c;
    char err[256];
    assert_int_equal(config_load(&c, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "component.secret is required"));
    write_conf("[xmpp]\nport = 5348\n");
    assert_int_equal(config_load(&c, path, err, sizeof err), -1);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "component.secret is required"));
}

static void test_file_syntax(void **state)
{
    config c;
    char err[256];
    write_conf("# a comment\n"
               "; another comment\n"
               "\n"
               "component.jid = chat.example.org\n"
               "   [ component ]   \n"
               "secret = \"with \\\"quotes\\\" and \\\\ and # and ; inside\"\n"
               "[xmpp]\n"
               "host=::1\n"
               "port   =   5400\r\n"
               "reconnect_min_ms = \"100\"\n"
               "[db]\n"
               "conninfo = host=/run/postgresql dbname=x password=pw\n"
               "write_batch_max = 64\n"
               "[log]\n"
               "file = /tmp/x.log\n"
               "level = DEBUG\n"
               "[admin]\n"
               "jids = a@example.org b@example.org\n"
               "[limits]\n"
               "max_payload_bytes = 1000\n"
               "mam_default_page = 10\n"
               "mam_max_page = 20\n"
               "[instance]\n"
               "name = \"\"\n"
               "[xmpp]\n"
               "reconnect_max_ms = 1000\n");
    assert_int_equal(config_load(&c, path, err, sizeof err), 0);
    assert_string_equal(c.component_jid, "chat.example.org");
    assert_string_equal(c.component_secret, "with \"quotes\" and \\ and # and ; inside");
    assert_string_equal(c.xmpp_host, "::1");
    assert_int_equal(c.xmpp_port, 5400);
    assert_int_equal(c.reconnect_min_ms, 100);
    assert_int_equal(c.reconnect_max_ms, 1000);
    assert_string_equal(c.db_conninfo, "host=/run/postgresql dbname=x password=pw");
    assert_int_equal(c.write_batch_max, 64);
    assert_string_equal(c.log_file, "/tmp/x.log");
    assert_string_equal(c.log_level, "DEBUG");
    assert_string_equal(c.admins, "a@example.org b@example.org");
    assert_int_equal(c.max_payload_bytes, 1000);
    assert_int_equal(c.mam_default_page, 10);
    assert_int_equal(c.mam_max_page, 20);
    /* Empty name: the computed default. */
    assert_true(strlen(c.instance_name) > 2);
    config_free(&c);
}

static const struct {
    const char *text;
    int line; /* 0: the error names the file but no line */
    const char *msg;
} bad_files[] = {
    {"component.secret = s\nxmpp.fanout_jid = room@localhost\n", 2, "bare domain"},
    {"component.secret = s\nbogus = 1\n", 2, "unknown key \"bogus\""},
    {"component.secret = s\n[xmpp]\nhots = x\n", 3, "unknown key \"xmpp.hots\""},
    {"component.secret = s\nxmpp.port = 53x\n", 2, "not an integer"},
    {"component.secret = s\nxmpp.port =\n", 2, "not an integer"},
    {"component.secret = s\nxmpp.port = 0\n", 2, "out of range"},
    {"component.secret = s\n\n\nxmpp.port = 65536\n", 4, "out of range"},
    {"component.secret = s\nxmpp.port = 99999999999999999999\n", 2, "not an integer"},
    {"component.secret = s\nlimits.mam_max_page = -5\n", 2, "out of range"},
    {"component.secret = s\ndb.write_batch_max = 0\n", 2, "out of range"},
    {"component.secret = s\nlimits.max_payload_bytes = 1000000\n", 2, "out of range"},
    {"component.secret = s\njust some words\n", 2, "expected 'key = value'"},
    {"component.secret = s\n[db\n", 2, "without closing ']'"},
    {"component.secret = s\n[d b]\n", 2, "bad section name"},
    {"component.secret = s\n= value\n", 2, "bad key name"},
    {"component.secret = \"unterminated\n", 1, "unterminated quoted value"},
    {"component.secret = s\nxmpp.host = \"a\" # comment\n", 2, "text after the closing quote"},
    {"component.secret = s\nxmpp.host = \"a\\n\"\n", 2, "bad escape"},
    {"component.secret = s\nxmpp.port = 1\n[xmpp]\nport = 2\n", 4, "set twice (first on line 2)"},
    {"component.secret = s\nlog.level = loud\n", 2, "must be one of"},
    {"component.secret = s\ncomponent.jid = rooms@localhost\n", 2, "bare domain"},
    {"component.secret = s\nadmin.jids = a@b/res\n", 2, "bare JIDs"},
    {"component.secret = \"\"\n", 1, "component.secret: must not be empty"},
    {"component.secret = s\nxmpp.host =\n", 2, "must not be empty"},
    {"component.secret = s\nxmpp.reconnect_min_ms = 500\nxmpp.reconnect_max_ms = 400\n", 3,
     "below xmpp.reconnect_min_ms"},
    {"component.secret = s\nlimits.mam_default_page = 300\n", 2, "exceeds limits.mam_max_page"},
    {"[component]\njid = rooms.localhost\n", 0, "component.secret is required"},
};

static void test_errors_name_file_and_line(void **state)
{
    for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
        config c;
        char err[512], want[128];
        write_conf(bad_files[i].text);
        int rc = config_load(&c, path, err, sizeof err);
        if (rc != -1) fail_msg("case %zu loaded: %s", i, bad_files[i].text);
        if (bad_files[i].line)
            snprintf(want, sizeof want, "%s:%d: ", path, bad_files[i].line);
        else
            snprintf(want, sizeof want, "%s: ", path);
        if (strncmp(err, want, strlen(want)) != 0 || !strstr(err, bad_files[i].msg))
            fail_msg("case %zu: got \"%s\", want prefix \"%s\" and \"%s\"", i, err, want,
                     bad_files[i].msg);
        unlink(path);
        path[0] = '\0';
    }
}

static void test_missing_file(void **state)
{
    config c;
    char err[256];
    assert_int_equal(config_load(&c, "/nonexistent/sealroomd.conf", err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/sealroomd.conf: cannot open"));
}

static void test_secret_not_echoed_in_errors(void **state)
{
    config c;
    char err[256];
    /* A secret in the wrong place (a typo'd key) must not appear either. */
    write_conf("component.secret = topsecret-value\nxmpp.port = nope\n");
    assert_int_equal(config_load(&c, path, err, sizeof err), -1);
    assert_null(strstr(err, "topsecret-value"));
}

static void test_env_override(void **state)
{
    config c;
    char err[256];
    write_conf("component.secret = s\n[db]\nconninfo = dbname=fromfile\n[xmpp]\nport = 6000\n");
    setenv("SEALROOMD_DB_CONNINFO", "dbname=fromenv", 1);
    setenv("SEALROOMD_XMPP_PORT", "6001", 1);
    assert_int_equal(config_load(&c, path, err, sizeof err), 0);
    assert_string_equal(c.db_conninfo, "dbname=fromenv");
    assert_int_equal(c.xmpp_port, 6001);
    config_free(&c);

    setenv("SEALROOMD_XMPP_PORT", "70000", 1);
    assert_int_equal(config_load(&c, path, err, sizeof err), -1);
    assert_non_null(strstr(err, "environment SEALROOMD_XMPP_PORT: "));
    assert_non_null(strstr(err, "out of range"));
}

static void test_reload(void **state)
{
    config live;
    char err[256];
    write_conf("component.secret = s1\nlog.level = info\nlimits.mam_max_page = 100\n"
               "admin.jids = a@x\n");
    assert_int_equal(config_load(&live, path, err, sizeof err), 0);
    const char *jid_before = live.component_jid;
    const char *secret_before = live.component_secret;
    unlink(path);

    /* A broken file: the old configuration stays, the error says where. */
    write_conf("component.secret = s1\nlog.level = info\nlimits.mam_max_page = lots\n");
    assert_int_equal(config_reload(&live, path, err, sizeof err), -1);
    assert_non_null(strstr(err, ":3: "));
    assert_int_equal(live.mam_max_page, 100);
    unlink(path);

    /* A non-reloadable key changed: refused, and the key is named. */
    write_conf("component.secret = s1\nxmpp.port = 5348\nlimits.mam_max_page = 70\n");
    assert_int_equal(config_reload(&live, path, err, sizeof err), -1);
    assert_non_null(strstr(err, "xmpp.port"));
    assert_int_equal(live.mam_max_page, 100);
    assert_int_equal(live.xmpp_port, 5347);
    unlink(path);

    /* The secret is not reloadable either, and its value is not echoed. */
    write_conf("component.secret = new-secret-zz\n");
    assert_int_equal(config_reload(&live, path, err, sizeof err), -1);
    assert_non_null(strstr(err, "component.secret"));
    assert_null(strstr(err, "new-secret-zz"));
    unlink(path);

    /* Only reloadable keys changed: applied. */
    write_conf("component.secret = s1\nlog.level = debug\nlimits.mam_max_page = 120\n"
               "admin.jids = b@x c@x\nlog.file = /tmp/other.log\n");
    assert_int_equal(config_reload(&live, path, err, sizeof err), 0);
    assert_string_equal(live.log_level, "debug");
    assert_int_equal(live.mam_max_page, 120);
    assert_string_equal(live.admins, "b@x c@x");
    assert_string_equal(live.log_file, "/tmp/other.log");
    /* Non-reloadable strings keep their storage across a reload. */
    assert_ptr_equal(live.component_jid, jid_before);
    assert_ptr_equal(live.component_secret, secret_before);
    config_free(&live);
}

static void test_config_log_redacts(void **state)
{
    config c;
    char err[256];
    char logpath[] = "/tmp/sealroomd-test-log-XXXXXX";
    int fd = mkstemp(logpath);
    assert_true(fd >= 0);
    close(fd);

    write_conf("component.secret = hunter2-component\n"
               "db.conninfo = host=db user=sr password=hunter2-db\n"
               "admin.jids = boss@example.org\n");
    assert_int_equal(config_load(&c, path, err, sizeof err), 0);
    assert_int_equal(log_open(logpath), 0);
    config_log(&c);
    log_close();
    config_free(&c);

    FILE *f = fopen(logpath, "r");
    assert_non_null(f);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(logpath);

    assert_non_null(strstr(buf, "[config] component.secret = (redacted)"));
    assert_non_null(strstr(buf, "[config] db.conninfo = (redacted)"));
    assert_non_null(strstr(buf, "admin.jids = \"boss@example.org\""));
    assert_non_null(strstr(buf, "xmpp.port = 5347"));
    assert_null(strstr(buf, "hunter2"));
}

/* The shipped example must load, document every key, and show the real
 * defaults (only the secret placeholder differs). */
static void test_example_file(void **state)
{
    const char *src = getenv("SEALROOM_SOURCE_DIR");
    char example[512], err[256];
    snprintf(example, sizeof example, "%s/contrib/sealroomd.conf.example", src ? src : ".");
    config ex, def;
    if (config_load(&ex, example, err, sizeof err) != 0) fail_msg("%s", err);
    setenv("SEALROOMD_COMPONENT_SECRET", ex.component_secret, 1);
    assert_int_equal(config_load(&def, NULL, err, sizeof err), 0);

    FILE *f = fopen(example, "r");
    assert_non_null(f);
    static char text[32768];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);

    size_t nkeys;
    const config_key_info *k = config_keys(&nkeys);
    for (size_t i = 0; i < nkeys; i++) {
        const char *dot = strchr(k[i].name, '.');
        char section[64], line[96];
        snprintf(section, sizeof section, "[%.*s]", (int)(dot - k[i].name), k[i].name);
        snprintf(line, sizeof line, "\n%s =", dot + 1);
        const char *sec = strstr(text, section);
        if (!sec || !strstr(sec, line)) fail_msg("example does not document %s", k[i].name);
    }
    assert_string_equal(ex.component_jid, def.component_jid);
    assert_string_equal(ex.xmpp_host, def.xmpp_host);
    assert_int_equal(ex.xmpp_port, def.xmpp_port);
    assert_int_equal(ex.reconnect_min_ms, def.reconnect_min_ms);
    assert_int_equal(ex.reconnect_max_ms, def.reconnect_max_ms);
    assert_string_equal(ex.db_conninfo, def.db_conninfo);
    assert_int_equal(ex.write_batch_max, def.write_batch_max);
    assert_string_equal(ex.log_file, def.log_file);
    assert_string_equal(ex.log_level, def.log_level);
    assert_string_equal(ex.admins, def.admins);
    assert_int_equal(ex.max_payload_bytes, def.max_payload_bytes);
    assert_int_equal(ex.mam_default_page, def.mam_default_page);
    assert_int_equal(ex.mam_max_page, def.mam_max_page);
    assert_string_equal(ex.instance_name, def.instance_name);
    config_free(&ex);
    config_free(&def);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_table_is_complete, teardown_file),
        cmocka_unit_test_teardown(test_defaults, teardown_file),
        cmocka_unit_test_teardown(test_secret_required, teardown_file),
        cmocka_unit_test_teardown(test_file_syntax, teardown_file),
        cmocka_unit_test_teardown(test_errors_name_file_and_line, teardown_file),
        cmocka_unit_test_teardown(test_missing_file, teardown_file),
        cmocka_unit_test_teardown(test_secret_not_echoed_in_errors, teardown_file),
        cmocka_unit_test_teardown(test_env_override, teardown_file),
        cmocka_unit_test_teardown(test_reload, teardown_file),
        cmocka_unit_test_teardown(test_config_log_redacts, teardown_file),
        cmocka_unit_test_teardown(test_example_file, teardown_file),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
