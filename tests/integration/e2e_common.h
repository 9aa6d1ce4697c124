/* Helpers shared by the end-to-end encryption integration tests
 * (it_e2e_*.c, issue 3): libsealroom clients that record the e2e fields of
 * events as well (epoch, keys of FINGERPRINT_CHANGED) and may start without
 * an identity (a fresh device), the secrets a ctx holds (through the
 * static library's test hook), a scanner that looks for secrets and
 * plaintext words in raw, hex and base64 text, direct PostgreSQL access in
 * binary (to read and tamper with rows as a malicious server would) and a
 * dump of every table. Built on common.h; links the static library. */
#ifndef SEALROOM_IT_E2E_COMMON_H
#define SEALROOM_IT_E2E_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "common.h"

/* ---- clients ---- */

/* The e2e fields (epoch, keys, fingerprints) are in it_ev itself. */
typedef it_ev e2e_ext;

typedef struct e2e_lib {
    it_lib *l; /* the common client: it_lib_wait, it_lib_done... work on it */
} e2e_lib;

/* Connect user with the library; with_identity sets the user's
 * deterministic identity (it_user_identity), else the ctx starts with none,
 * as on a fresh device. Every event is recorded. Vaults it seals use
 * Argon2id at INTERACTIVE (e2e_fast_vault). */
e2e_lib *e2e_connect(const char *user, bool with_identity);
/* A recorder without a client, for a ctx the test drives itself (pass
 * e2e_record and the result as on_event and user). */
e2e_lib *e2e_recorder_new(const char *user);
void e2e_record(void *user, const sealroom_event *ev);
void e2e_lib_clear(e2e_lib *w);
void e2e_lib_free(e2e_lib *w);
sealroom_ctx *e2e_ctx(e2e_lib *w);

/* The extra fields of l->ev[i]. */
const e2e_ext *e2e_ext_of(const e2e_lib *w, size_t i);
/* Index of the first event of type (in room, if room is non-NULL) at or
 * after from, or -1. */
long e2e_find(const e2e_lib *w, sealroom_event_type type, const char *room, size_t from);

/* Argon2id at INTERACTIVE (the floor) so tests stay fast. */
void e2e_fast_vault(e2e_lib *w);
/* sealroom_account_create / _login; return the completion's result code. */
int e2e_account_create(e2e_lib *w, const char *passphrase);
int e2e_account_login(e2e_lib *w, const char *passphrase);
/* The text of request req's failure, "" if none. */
const char *e2e_done_text(const e2e_lib *w, uint32_t req);

/* The key epoch the ctx holds for room (fails the test if none). */
uint64_t e2e_epoch(e2e_lib *w, const char *room);
/* Page through room's whole history (newest page first, then `before`
 * pages) so every archived message yields a MESSAGE or MESSAGE_REJECTED
 * event; returns the last completion's result. */
int e2e_read_history(e2e_lib *w, const char *room);
/* History MESSAGE / MESSAGE_REJECTED event for origin in room, or NULL. */
const it_ev *e2e_history_msg(const e2e_lib *w, const char *room, const char *origin);
const it_ev *e2e_rejected(const e2e_lib *w, const char *room, const char *origin);
/* Any MESSAGE event (live or history) with this origin in room. */
const it_ev *e2e_any_msg(const e2e_lib *w, const char *room, const char *origin);

/* ---- secrets (libclient/src/testhook.h) ---- */

typedef struct e2e_secret {
    char owner[64];   /* user whose ctx held it */
    char what[32];    /* testhook name, e.g. "epoch.secret" */
    char room[256];   /* "" when none */
    uint64_t epoch;
    unsigned char *bytes; /* sodium_malloc'd */
    size_t len;
} e2e_secret;

typedef struct e2e_secrets {
    e2e_secret *v;
    size_t n, cap;
} e2e_secrets;

/* Add every secret ctx holds now; the same bytes under the same owner and
 * name are kept once. Returns how many the hook reported. */
size_t e2e_secrets_collect(e2e_secrets *s, const sealroom_ctx *ctx, const char *owner);
/* Add one secret by hand (e.g. a key the test derived). */
void e2e_secrets_add(e2e_secrets *s, const char *owner, const char *what, const char *room,
                     uint64_t epoch, const unsigned char *bytes, size_t len);
/* Number of secrets named what (owner NULL: any; room NULL: any). */
size_t e2e_secrets_count(const e2e_secrets *s, const char *owner, const char *what,
                         const char *room);
/* The first secret matching, or NULL. */
const e2e_secret *e2e_secrets_find(const e2e_secrets *s, const char *owner, const char *what,
                                   const char *room, uint64_t epoch);
void e2e_secrets_free(e2e_secrets *s); /* wipes */

/* ---- the scanner ---- */

/* Look for every secret (all bytes; only secrets of at least 16 bytes)
 * and every word (ASCII, case-insensitive) in hay: as raw bytes, in every
 * run of hex digits (32+ characters, with or without a \x prefix, both
 * nibble alignments) decoded, and in every base64 run (16+ characters, all
 * four alignments) decoded. Returns true on a hit and describes the first
 * one in why (what, whose, where). */
bool e2e_scan(const unsigned char *hay, size_t len, const e2e_secrets *s,
              const char *const *words, size_t nwords, const char *where, char *why,
              size_t whylen);
/* Plant a secret in hex and in base64 in scratch text and check the
 * scanner finds both, and finds nothing in text without it. Fails the
 * test otherwise. */
void e2e_scan_selfcheck(void);

/* ---- PostgreSQL ---- */

PGconn *e2e_pg(void);
/* Run sql with text parameters (NULL entries are SQL NULL); the result must
 * be COMMAND_OK or TUPLES_OK. Results come back in binary when binary is
 * set (bytea as raw bytes). Caller PQclear()s. */
PGresult *e2e_pg_exec(const char *sql, int n, const char *const *params, bool binary);
/* As e2e_pg_exec with some parameters binary: lens[i] > 0 marks params[i]
 * as lens[i] raw bytes. */
PGresult *e2e_pg_exec_bin(const char *sql, int n, const char *const *params, const int *lens,
                          bool binary);
/* Copy of a binary-result bytea field (malloc'd; *len set), NULL if SQL NULL. */
unsigned char *e2e_pg_bytea(const PGresult *res, int row, int col, size_t *len);
/* Decimal of a binary-result int8 field. */
long long e2e_pg_int8(const PGresult *res, int row, int col);
/* rooms.room_id of room (text), failing if it does not exist. */
long long e2e_room_id(const char *room);
/* Delete user's vault row (a previous run's); returns rows deleted. */
long e2e_pg_delete_vault(const char *bare);
/* Rows of vaults for bare. */
long e2e_pg_vault_rows(const char *bare);

/* COPY every base table of the public schema (listed from the catalog) to
 * text, concatenated (each preceded by a "-- table" line); *ntables gets
 * how many. malloc'd. */
char *e2e_pg_dump(size_t *len, size_t *ntables);

/* The whole file at path (malloc'd, NUL-terminated), NULL if unreadable. */
char *e2e_read_file(const char *path, size_t *len);

/* A 32-byte fingerprint in sealroom_fingerprint's text form (eight groups
 * of eight hex digits); out holds SEALROOM_FINGERPRINTBYTES. */
void e2e_format_fpr(char *out, const unsigned char fpr[32]);

/* Lowercase hex of bytes (malloc'd). */
char *e2e_hex(const unsigned char *p, size_t n);

#endif
