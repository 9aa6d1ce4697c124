/* Shared by bench_archive and soak_sweep (issue 5): a PostgreSQL to work
 * on (the server $SEALROOM_TEST_PG names, or a throwaway cluster started
 * with tests/pg-scratch.sh), a fresh database migrated with the component's
 * own migrations, rooms seeded with real archive material from the
 * library's e2e core (epoch keys k_e, tokens Δ(e→e+1) = k_{e+1}·k_e⁻¹,
 * data-key headers k_a·P), and the check of every stored row against what
 * it may be: untouched, or exactly k_c·P at the current epoch c (a token
 * applied twice, or to the wrong epoch, gives another point).
 *
 * Every failure prints why on stderr and is returned, never fatal: the
 * callers clean their cluster up. Not thread-safe except ac_mul_all, which
 * runs its own threads. */
#ifndef SEALROOM_BENCH_ARCHIVE_COMMON_H
#define SEALROOM_BENCH_ARCHIVE_COMMON_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AC_DKID 16
#define AC_PT 32

typedef struct ac_pg {
    char scratch[256]; /* our cluster's directory, "" when $SEALROOM_TEST_PG is used */
    char src[1024];    /* the source tree (tests/pg-scratch.sh, sql/) */
    char *admin;       /* conninfo of the server's postgres database */
    char dbname[64];
    char *conninfo; /* of our database */
} ac_pg;

/* Start (or reach) the server, create database <prefix>_<pid> and migrate
 * it with src/sql. 0 on success; on failure what was made is undone. */
int ac_pg_open(ac_pg *pg, const char *src, const char *prefix);
/* Drop the database and stop and remove our cluster. Safe to call twice. */
void ac_pg_close(ac_pg *pg);
/* Fast restart of our cluster (every session dies); -1 without one. */
int ac_pg_restart(const ac_pg *pg);
/* The server's version string (malloc'd) or NULL. */
char *ac_pg_version(const ac_pg *pg);

PGconn *ac_connect(const char *conninfo);
/* A statement with text parameters and text results; NULL (message
 * printed) unless it succeeds. */
PGresult *ac_exec(PGconn *c, const char *sql, int n, const char *const *vals);
bool ac_ok(PGconn *c, const char *sql, int n, const char *const *vals);

/* A seeded room. Rows are kept in dkid order, the order of the checks. */
typedef struct ac_room {
    long long id;
    char idtext[24];
    char name[128];
    uint64_t c;             /* current epoch */
    unsigned char (*k)[32]; /* k[e], 1 <= e <= c */
    size_t kcap;
    size_t n;
    unsigned char (*dkid)[AC_DKID];
    unsigned char (*p)[AC_PT]; /* the data keys (secret in real life) */
    /* What a row may still hold besides (c, want): its epoch and header
     * before the sweep under test (valid while `tracked`). */
    bool tracked;
    uint64_t *from;
    unsigned char (*hfrom)[AC_PT];
    /* k_c·P, computed when first needed for this c. */
    unsigned char (*want)[AC_PT];
    uint64_t want_epoch;
    unsigned threads; /* for the multiplications */
} ac_room;

/* Room `name` at epoch c holding n headers from nsenders senders, each at
 * an epoch drawn uniformly from lo..hi (1 <= lo <= hi <= c). With tokens,
 * Δ(e→e+1) is stored for lo <= e < c; with epochs, an epochs row with its
 * check header k_e·P_c(room) for every 1 <= e <= c. NULL on failure. */
ac_room *ac_room_seed(PGconn *conn, const char *name, size_t n, size_t nsenders, uint64_t c,
                      uint64_t lo, uint64_t hi, bool tokens, bool epochs, unsigned threads);
void ac_room_free(ac_room *r); /* wipes the keys */

/* A new epoch c+1 (with its epochs row when the room has them): stores its
 * token Δ(c→c+1) if token, then moves rooms.current_epoch. With track, the
 * rows must all be at c now (checked before by the caller): each may then
 * be either there or at c+1. delta_out (may be NULL) receives the token. */
int ac_room_advance(PGconn *conn, ac_room *r, bool token, bool track, unsigned char delta_out[32]);

/* The wanted headers k_c·P for the current c (computed once per c). */
int ac_room_want(ac_room *r);

/* Read every row and check it. final: each must be exactly (c, k_c·P).
 * Otherwise each may also still be (from, hfrom) if tracked. Sets *behind
 * to the rows behind c. 0, or -1 with the first difference printed. */
int ac_room_check(PGconn *conn, ac_room *r, bool final, size_t *behind);

/* Rows behind the current epoch, by count(*); -1 on error. */
long long ac_count_behind(PGconn *conn, const ac_room *r);

/* out[i] = k[i]·in[i] (k_stride 0: one scalar for all) on `threads`
 * threads. Returns how many multiplications failed (0 when all are valid). */
size_t ac_mul_all(unsigned char (*out)[AC_PT], const unsigned char *k, size_t k_stride,
                  const unsigned char (*in)[AC_PT], size_t n, unsigned threads);

/* Monotonic clock and sleep. */
double ac_now_ms(void);
void ac_sleep_ms(double ms);

#endif
