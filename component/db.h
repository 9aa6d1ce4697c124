/* PostgreSQL access for sealroomd: one non-blocking libpq connection in
 * pipeline mode, driven by the event loop. Reads are pipelined; writes are
 * grouped into "units" (statements that must commit together) and every unit
 * queued while a commit is in flight goes into the next single transaction —
 * group commit. If a grouped transaction fails, the unit that failed is
 * retried in a transaction of its own and the others are grouped again (every
 * unit alone when the failure cannot be pinned on one), so one bad unit cannot
 * sink the others. Writes commit in the order they were submitted, retries
 * included (a unit that fails simply does not commit). Callbacks run on the
 * loop thread, and only after COMMIT has succeeded (writes). A unit that is
 * expected to fail now and then is better written not to (ON CONFLICT DO
 * NOTHING, conditional UPDATE and a row count): each failure costs its group
 * an extra round trip. */
#ifndef SEALROOMD_DB_H
#define SEALROOMD_DB_H

#include <libpq-fe.h>
#include <stdbool.h>

typedef struct db db;
typedef struct db_unit db_unit;

/* Completion of a unit or read. ok=false: err says why, results are NULL.
 * ok=true: results[i] is the result of the i-th statement, in order; they
 * are owned by the db and freed after the callback returns. */
typedef void (*db_done_cb)(void *arg, bool ok, PGresult *const *results, int nresults,
                           const char *err);

/* Connect (asynchronously; the loop completes it), retrying with back-off
 * forever while the server is down. */
db *db_new(const char *conninfo);
void db_free(db *d); /* fails every queued unit with "shutting down" */

/* Blocking helpers for start-up only (migrations): run before the loop. */
int db_connect_blocking(db *d, int timeout_ms, char *err, size_t errlen);
PGconn *db_pgconn(db *d);

/* Build a unit of statements. Parameters are text unless lengths[i] is
 * non-negative and formats[i]==1 (binary); pass NULL arrays for all-text.
 * Values are copied at add time. */
db_unit *db_unit_new(void);
int db_unit_add(db_unit *u, const char *sql, int nparams, const char *const *values,
                const int *lengths, const int *formats);
/* The same for a statement whose text is run again and again (a constant):
 * the db prepares it once per connection and then only binds and executes
 * it, so the server does not parse and plan it for every execution. Up to
 * 32 distinct texts per db are prepared; further ones run as with
 * db_unit_add. Plans are PostgreSQL's plan cache's: custom plans for the
 * first executions, then a generic one unless it looks costlier. */
int db_unit_add_prepared(db_unit *u, const char *sql, int nparams, const char *const *values,
                         const int *lengths, const int *formats);
void db_unit_free(db_unit *u); /* only for a unit never submitted */
/* Ask for binary-format results for every statement of the unit (default
 * text). A db_unit_add that fails (bad arguments, out of memory) returns -1
 * and marks the unit, which then fails on submit (callback, ok=false). */
void db_unit_binary_results(db_unit *u, bool on);
/* A unit must not contain transaction control (BEGIN/COMMIT/ROLLBACK): the
 * db wraps writes in its own transaction and reads in an implicit one. */

/* Submit; ownership of u passes to the db. write=true: part of the next
 * group-committed transaction; write=false: a read, run in its own implicit
 * transaction, pipelined. The callback is always called exactly once (maybe
 * with ok=false), never from inside this call. */
void db_submit(db *d, db_unit *u, bool write, db_done_cb cb, void *arg);

/* Convenience: a one-statement read. */
void db_read1(db *d, const char *sql, int nparams, const char *const *values, const int *lengths,
              const int *formats, db_done_cb cb, void *arg);

/* Event loop integration. db_pollfd returns the socket (or -1 when not
 * connected) and the poll events wanted. db_process is called with the
 * revents (0 on timeouts) and does all I/O and callbacks; db_tick once per
 * loop iteration flushes queued writes and handles reconnect timers. */
int db_pollfd(db *d, short *events);
void db_process(db *d, short revents);
void db_tick(db *d, long now_ms);

/* Statistics for the admin command and the benchmark. */
typedef struct db_stats {
    unsigned long long commits, units_committed, units_failed, reads, reconnects;
    unsigned queued_units, inflight_units;
} db_stats;
void db_get_stats(const db *d, db_stats *out);
bool db_is_ready(const db *d);

/* Tuning (both may be called at any time, e.g. on a config reload).
 * Units per group-committed transaction (config db.write_batch_max; default
 * 512, minimum 1). */
void db_set_write_batch_max(db *d, int max);
/* While the database has been unreachable for this long, queued units fail
 * with "database unavailable" instead of waiting (default 10000 ms). Units
 * in flight when the connection drops fail at once with "connection lost…". */
void db_set_unavailable_timeout_ms(db *d, int ms);

/* When a statement failed, err is "SQLSTATE: primary message", e.g.
 * "23505: duplicate key value violates unique constraint …". True when err
 * is such a message with the given five-character SQLSTATE. */
bool db_err_sqlstate_is(const char *err, const char *sqlstate);

/* Apply sql/NNN_*.sql migrations from `dir` inside one transaction with a
 * schema_version table; idempotent. Blocking; start-up only. */
int db_migrate(db *d, const char *dir, char *err, size_t errlen);

#endif
