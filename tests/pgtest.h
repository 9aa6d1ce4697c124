/* Helpers every test and benchmark that starts its own scratch PostgreSQL
 * (tests/pg-scratch.sh) needs: a free loopback port for the cluster, a
 * conninfo naming another database, and a notice processor that keeps
 * PostgreSQL's NOTICEs out of test output. Test code only. */
#ifndef SEALROOM_TESTS_PGTEST_H
#define SEALROOM_TESTS_PGTEST_H

#include <libpq-fe.h>

/* A TCP port on 127.0.0.1 that was free a moment ago, or -1. */
int pgt_free_port(void);

/* base (a libpq conninfo) with its dbname replaced by dbname; malloc'd,
 * NULL if base does not parse or memory runs out. */
char *pgt_conninfo_for(const char *base, const char *dbname);

/* The conninfo of a PostgreSQL the caller may create databases in:
 * SEALROOM_TEST_PG if set (scratch then ""), else a new scratch cluster
 * started with tests/pg-scratch.sh in a directory made from template (a
 * mkdtemp pattern) and written to scratch, which the caller stops and
 * removes with pg-scratch.sh when done. malloc'd; NULL on failure (scratch
 * names what was made, if anything). */
char *pgt_admin_conninfo(const char *src, const char *template, char *scratch, size_t scratch_len);

/* A PQsetNoticeProcessor callback that drops notices. */
void pgt_quiet(void *arg, const char *msg);

#endif
