/* Logging for sealroomd: one line per event, UTC timestamp with
 * milliseconds, level, optional [subject], to a file or stderr. Reopened on
 * SIGHUP so logrotate can move the file away. */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

log_level log_current_level = LOG_LVL_INFO;

/* Worker threads (the rekey sweep) log too, and a reopen swaps the stream
 * under them: one lock covers both. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *log_stream; /* NULL means stderr */

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

int log_open(const char *path)
{
    FILE *f = NULL;

    if (path && path[0] && strcmp(path, "-") != 0) {
        f = fopen(path, "ae");
        if (!f) return -1;
        /* Line buffering: a crash loses at most the line being written, and
         * tail -f sees lines as they happen. */
        setvbuf(f, NULL, _IOLBF, 0);
    }
    pthread_mutex_lock(&log_lock);
    FILE *old = log_stream;
    log_stream = f;
    pthread_mutex_unlock(&log_lock);
    if (old) fclose(old);
    return 0;
}

void log_set_level(log_level level)
{
    if (level > LOG_LVL_DEBUG) level = LOG_LVL_DEBUG;
    log_current_level = level;
}

int log_level_parse(const char *name, log_level *out)
{
    static const struct {
        const char *name;
        log_level level;
    } names[] = {
        {"error", LOG_LVL_ERROR}, {"warn", LOG_LVL_WARN}, {"warning", LOG_LVL_WARN},
        {"info", LOG_LVL_INFO},   {"debug", LOG_LVL_DEBUG},
    };
    if (!name) return -1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(name, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return -1;
}

void log_close(void)
{
    pthread_mutex_lock(&log_lock);
    FILE *old = log_stream;
    log_stream = NULL;
    pthread_mutex_unlock(&log_lock);
    if (old) fclose(old);
}

/* Message text and subjects can carry peer-controlled bytes (JIDs, error
 * texts from the server): control characters are escaped so no one can
 * forge a log line. */
static size_t escape_into(char *dst, size_t cap, size_t pos, const char *src)
{
    static const char hex[] = "0123456789abcdef";
    for (; *src && pos + 5 < cap; src++) {
        unsigned char c = (unsigned char)*src;
        if (c < 0x20 || c == 0x7f) {
            dst[pos++] = '\\';
            dst[pos++] = 'x';
            dst[pos++] = hex[c >> 4];
            dst[pos++] = hex[c & 0xf];
        } else {
            dst[pos++] = (char)c;
        }
    }
    if (*src && pos + 4 < cap) {
        memcpy(dst + pos, "...", 3);
        pos += 3;
    }
    return pos;
}

void log_write(log_level level, const char *subject, const char *fmt, ...)
{
    char msg[4096];
    char line[8192];
    struct timespec ts;
    struct tm tm;
    va_list ap;

    if (level > LOG_LVL_DEBUG) level = LOG_LVL_DEBUG;
    int saved_errno = errno;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000L, level_names[level]);
    size_t pos = n > 0 ? (size_t)n : 0;
    if (subject && subject[0]) {
        line[pos++] = '[';
        pos = escape_into(line, sizeof line - 3, pos, subject);
        line[pos++] = ']';
        line[pos++] = ' ';
    }
    pos = escape_into(line, sizeof line - 1, pos, msg);
    line[pos++] = '\n';

    pthread_mutex_lock(&log_lock);
    FILE *out = log_stream ? log_stream : stderr;
    fwrite(line, 1, pos, out);
    pthread_mutex_unlock(&log_lock);
    errno = saved_errno;
}
