/* Unit tests for sealroomd's log (component/log.c): line format, level
 * filtering, escaping of peer-controlled control characters, and reopen
 * after the file was moved away (logrotate + SIGHUP). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static char logpath[64];

static int setup(void **state)
{
    snprintf(logpath, sizeof logpath, "/tmp/sealroomd-test-log-XXXXXX");
    int fd = mkstemp(logpath);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(log_open(logpath), 0);
    log_set_level(LOG_LVL_INFO);
    return 0;
}

static int teardown(void **state)
{
    log_close();
    log_set_level(LOG_LVL_INFO);
    unlink(logpath);
    return 0;
}

static char *slurp(const char *path)
{
    static char buf[16384];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_format(void **state)
{
    log_info("room@rooms.example", "joined by %s", "alice");
    log_warn(NULL, "no subject");
    const char *text = slurp(logpath);
    regex_t re;
    assert_int_equal(regcomp(&re,
                             "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
                             "INFO  \\[room@rooms\\.example\\] joined by alice\n"
                             "[0-9-]{10}T[0-9:.]{12}Z WARN  no subject\n$",
                             REG_EXTENDED),
                     0);
    int rc = regexec(&re, text, 0, NULL, 0);
    regfree(&re);
    if (rc != 0) fail_msg("unexpected log text:\n%s", text);
}

static void test_levels(void **state)
{
    log_level l;
    assert_int_equal(log_level_parse("DEBUG", &l), 0);
    assert_int_equal(l, LOG_LVL_DEBUG);
    assert_int_equal(log_level_parse("warning", &l), 0);
    assert_int_equal(l, LOG_LVL_WARN);
    assert_int_equal(log_level_parse("verbose", &l), -1);
    assert_int_equal(log_level_parse(NULL, &l), -1);

    log_set_level(LOG_LVL_WARN);
    log_info("s", "hidden-info");
    log_debug("s", "hidden-debug");
    log_error("s", "shown-error");
    log_set_level(LOG_LVL_DEBUG);
    log_debug("s", "shown-debug");
    const char *text = slurp(logpath);
    assert_null(strstr(text, "hidden"));
    assert_non_null(strstr(text, "ERROR [s] shown-error"));
    assert_non_null(strstr(text, "DEBUG [s] shown-debug"));
}

static void test_escapes_control_characters(void **state)
{
    log_info("eve@x\n2026-01-01T00:00:00.000Z ERROR forged", "text\r\nERROR forged too\x1b[31m");
    const char *text = slurp(logpath);
    /* One line only, control characters visible as escapes. */
    assert_non_null(strchr(text, '\n'));
    assert_ptr_equal(strchr(text, '\n'), text + strlen(text) - 1);
    assert_non_null(strstr(text, "[eve@x\\x0a2026"));
    assert_non_null(strstr(text, "text\\x0d\\x0aERROR forged too\\x1b[31m"));
}

static void test_long_line_truncated(void **state)
{
    char big[10000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    log_info("s", "%s", big);
    const char *text = slurp(logpath);
    assert_true(strlen(text) < 8192);
    assert_int_equal(text[strlen(text) - 1], '\n');
}

static void test_reopen_after_rotation(void **state)
{
    char rotated[80];
    snprintf(rotated, sizeof rotated, "%s.1", logpath);
    log_info("s", "before rotation");
    assert_int_equal(rename(logpath, rotated), 0);
    log_info("s", "still to the old file");
    assert_int_equal(log_open(logpath), 0);
    log_info("s", "after reopen");
    const char *old = slurp(rotated);
    assert_non_null(strstr(old, "before rotation"));
    assert_non_null(strstr(old, "still to the old file"));
    assert_null(strstr(old, "after reopen"));
    const char *cur = slurp(logpath);
    assert_non_null(strstr(cur, "after reopen"));
    unlink(rotated);

    /* A path that cannot be opened leaves the current log in place. */
    assert_int_equal(log_open("/nonexistent-dir/x.log"), -1);
    log_info("s", "kept");
    assert_non_null(strstr(slurp(logpath), "kept"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_levels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escapes_control_characters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_line_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_after_rotation, setup, teardown),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
