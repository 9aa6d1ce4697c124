/* Logging for sealroomd: levels checked before any formatting, every line
 * prefixed with the subject (room or JID) it is about. Never pass secrets. */
#ifndef SEALROOMD_LOG_H
#define SEALROOMD_LOG_H

#include <stdarg.h>

typedef enum { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG } log_level;

extern log_level log_current_level;

/* Open the log: path NULL or "" or "-" means stderr. Safe to call again
 * (SIGHUP reopens, for logrotate). Returns 0 or -1. */
int log_open(const char *path);
void log_set_level(log_level level);
int log_level_parse(const char *name, log_level *out); /* 0 ok, -1 unknown */
void log_close(void);

void log_write(log_level level, const char *subject, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_at(lvl, subject, ...)                                                                  \
    do {                                                                                           \
        if ((lvl) <= log_current_level) log_write((lvl), (subject), __VA_ARGS__);                  \
    } while (0)
#define log_error(subject, ...) log_at(LOG_LVL_ERROR, subject, __VA_ARGS__)
#define log_warn(subject, ...) log_at(LOG_LVL_WARN, subject, __VA_ARGS__)
#define log_info(subject, ...) log_at(LOG_LVL_INFO, subject, __VA_ARGS__)
#define log_debug(subject, ...) log_at(LOG_LVL_DEBUG, subject, __VA_ARGS__)

#endif
