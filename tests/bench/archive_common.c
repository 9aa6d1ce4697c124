/* The PostgreSQL, seeding and checking helpers of the archive benchmark
 * and soak (archive_common.h). */
#include "pgtest.h"
#include "archive_common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "e2e/archive.h"

#define SEED_CHUNK 10000
#define SENDER_FMT "sender%03zu@bench.invalid"

double ac_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void ac_sleep_ms(double ms)
{
    if (ms <= 0) return;
    struct timespec ts = {(time_t)(ms / 1e3), (long)((ms - (double)(long)(ms / 1e3) * 1e3) * 1e6)};
    nanosleep(&ts, NULL);
}

PGconn *ac_connect(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, pgt_quiet, NULL);
    return c;
}

PGresult *ac_exec(PGconn *c, const char *sql, int n, const char *const *vals)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return r;
    fprintf(stderr, "%.120s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    return NULL;
}

bool ac_ok(PGconn *c, const char *sql, int n, const char *const *vals)
{
    PGresult *r = ac_exec(c, sql, n, vals);
    PQclear(r);
    return r != NULL;
}

static bool admin_ok(const char *conninfo, const char *sql)
{
    PGconn *c = ac_connect(conninfo);
    bool ok = c && ac_ok(c, sql, 0, NULL);
    PQfinish(c);
    return ok;
}

static int scratch(const ac_pg *pg, const char *verb)
{
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "sh '%s/tests/pg-scratch.sh' %s '%s'", pg->src, verb, pg->scratch);
    return system(cmd) == 0 ? 0 : -1;
}

int ac_pg_restart(const ac_pg *pg)
{
    return pg->scratch[0] ? scratch(pg, "restart") : -1;
}

int ac_pg_open(ac_pg *pg, const char *src, const char *prefix)
{
    memset(pg, 0, sizeof *pg);
    snprintf(pg->src, sizeof pg->src, "%s", src);
    char tmpl[128];
    snprintf(tmpl, sizeof tmpl, "/var/tmp/sealroom-%s-XXXXXX", prefix);
    pg->admin = pgt_admin_conninfo(src, tmpl, pg->scratch, sizeof pg->scratch);
    if (!pg->admin) {
        ac_pg_close(pg);
        return -1;
    }
    snprintf(pg->dbname, sizeof pg->dbname, "%s_%d", prefix, (int)getpid());
    char sql[160], err[512] = "", dir[1100];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", pg->dbname);
    if (!pg->admin || !admin_ok(pg->admin, sql)) {
        pg->dbname[0] = '\0';
        ac_pg_close(pg);
        return -1;
    }
    pg->conninfo = pgt_conninfo_for(pg->admin, pg->dbname);
    snprintf(dir, sizeof dir, "%s/sql", src);
    db *d = pg->conninfo ? db_new(pg->conninfo) : NULL;
    int rc = d && db_connect_blocking(d, 10000, err, sizeof err) == 0 &&
                     db_migrate(d, dir, err, sizeof err) == 0
                 ? 0
                 : -1;
    db_free(d);
    if (rc) {
        fprintf(stderr, "migrating %s: %s\n", pg->dbname, err);
        ac_pg_close(pg);
    }
    return rc;
}

void ac_pg_close(ac_pg *pg)
{
    if (pg->dbname[0] && pg->admin) {
        char sql[160];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", pg->dbname);
        admin_ok(pg->admin, sql);
    }
    pg->dbname[0] = '\0';
    if (pg->scratch[0]) {
        scratch(pg, "stop");
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", pg->scratch);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", pg->scratch);
        pg->scratch[0] = '\0';
    }
    free(pg->admin);
    free(pg->conninfo);
    pg->admin = pg->conninfo = NULL;
}

char *ac_pg_version(const ac_pg *pg)
{
    PGconn *c = ac_connect(pg->conninfo);
    PGresult *r = c ? ac_exec(c, "SELECT version()", 0, NULL) : NULL;
    char *v = r ? strdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    PQfinish(c);
    return v;
}

/* ---- multiplications on threads ---- */

typedef struct mul_job {
    unsigned char (*out)[AC_PT];
    const unsigned char *k;
    size_t k_stride;
    const unsigned char (*in)[AC_PT];
    size_t from, to, failed;
} mul_job;

static void *mul_range(void *arg)
{
    mul_job *j = arg;
    for (size_t i = j->from; i < j->to; i++)
        if (crypto_scalarmult_ristretto255(j->out[i], j->k + i * j->k_stride, j->in[i]) != 0)
            j->failed++;
    return NULL;
}

size_t ac_mul_all(unsigned char (*out)[AC_PT], const unsigned char *k, size_t k_stride,
                  const unsigned char (*in)[AC_PT], size_t n, unsigned threads)
{
    enum { MAXT = 64 };
    if (threads < 1) threads = 1;
    if (threads > MAXT) threads = MAXT;
    mul_job jobs[MAXT];
    pthread_t th[MAXT];
    bool started[MAXT] = {false};
    for (unsigned t = 0; t < threads; t++) {
        jobs[t] = (mul_job){out, k, k_stride, in, n * t / threads, n * (t + 1) / threads, 0};
        started[t] = t > 0 && pthread_create(&th[t], NULL, mul_range, &jobs[t]) == 0;
        if (t > 0 && !started[t]) mul_range(&jobs[t]);
    }
    mul_range(&jobs[0]);
    size_t failed = jobs[0].failed;
    for (unsigned t = 1; t < threads; t++) {
        if (started[t]) pthread_join(th[t], NULL);
        failed += jobs[t].failed;
    }
    return failed;
}

/* ---- rooms ---- */

static int cmp_dkid(const void *a, const void *b)
{
    return memcmp(a, b, AC_DKID);
}

static void random_scalar(unsigned char s[32])
{
    do
        crypto_core_ristretto255_scalar_random(s);
    while (sodium_is_zero(s, 32));
}

static int grow_keys(ac_room *r, uint64_t upto)
{
    if (upto < r->kcap) return 0;
    size_t cap = (size_t)upto * 2 + 8;
    unsigned char(*k)[32] = sodium_malloc(cap * 32);
    if (!k) return -1;
    memset(k, 0, cap * 32);
    if (r->k) {
        memcpy(k, r->k, r->kcap * 32);
        sodium_free(r->k); /* wipes */
    }
    r->k = k;
    r->kcap = cap;
    return 0;
}

static void bytea_lit(char *out, size_t cap, const unsigned char *b, size_t len)
{
    snprintf(out, cap, "\\x");
    sodium_bin2hex(out + 2, cap - 2, b, len);
}

static int store_epoch(PGconn *conn, ac_room *r, uint64_t e)
{
    unsigned char hc[32];
    char ep[24], hcl[80];
    if (sr_e2e_check_header(hc, r->k[e], r->name) != SR_E2E_OK) return -1;
    snprintf(ep, sizeof ep, "%llu", (unsigned long long)e);
    bytea_lit(hcl, sizeof hcl, hc, 32);
    const char *v[] = {r->idtext, ep, hcl};
    return ac_ok(conn,
                 "INSERT INTO epochs(room_id, epoch, roster_version, roster_hash, kc, sealer, "
                 "check_header) VALUES ($1, $2, 0, decode(repeat('00', 32), 'hex'), "
                 "decode(repeat('00', 32), 'hex'), 'sender000@bench.invalid', $3)",
                 3, v)
               ? 0
               : -1;
}

static int store_token(PGconn *conn, ac_room *r, uint64_t e, unsigned char delta_out[32])
{
    unsigned char d[32];
    char from[24], to[24], lit[80];
    if (sr_e2e_token_make(d, r->k[e], r->k[e + 1]) != SR_E2E_OK) return -1;
    snprintf(from, sizeof from, "%llu", (unsigned long long)e);
    snprintf(to, sizeof to, "%llu", (unsigned long long)e + 1);
    bytea_lit(lit, sizeof lit, d, 32);
    if (delta_out) memcpy(delta_out, d, 32);
    sodium_memzero(d, sizeof d);
    const char *v[] = {r->idtext, from, to, lit};
    return ac_ok(conn,
                 "INSERT INTO archive_tokens(room_id, from_epoch, to_epoch, delta, verified) "
                 "VALUES ($1, $2, $3, $4, true)",
                 4, v)
               ? 0
               : -1;
}

static char *hex_array(const unsigned char *b, size_t each, size_t from, size_t to)
{
    char *out = malloc((to - from) * (each * 2 + 4) + 3), *p = out;
    if (!out) return NULL;
    *p++ = '{';
    for (size_t i = from; i < to; i++) {
        if (i > from) *p++ = ',';
        memcpy(p, "\\\\x", 3);
        p += 3;
        sodium_bin2hex(p, each * 2 + 1, b + i * each, each);
        p += each * 2;
    }
    *p++ = '}';
    *p = '\0';
    return out;
}

static int insert_rows(PGconn *conn, ac_room *r, size_t nsenders)
{
    for (size_t from = 0; from < r->n; from += SEED_CHUNK) {
        size_t to = from + SEED_CHUNK < r->n ? from + SEED_CHUNK : r->n;
        char *dk = hex_array(&r->dkid[0][0], AC_DKID, from, to);
        char *hh = hex_array(&r->hfrom[0][0], AC_PT, from, to);
        char *ep = malloc((to - from) * 21 + 3), *snd = malloc((to - from) * 32 + 3);
        bool ok = dk && hh && ep && snd;
        if (ok) {
            char *p = ep, *q = snd;
            *p++ = '{';
            *q++ = '{';
            for (size_t i = from; i < to; i++) {
                p += sprintf(p, "%s%llu", i > from ? "," : "", (unsigned long long)r->from[i]);
                q += sprintf(q, "%s" SENDER_FMT, i > from ? "," : "", i % nsenders);
            }
            strcpy(p, "}");
            strcpy(q, "}");
            const char *v[] = {r->idtext, dk, ep, hh, snd};
            ok = ac_ok(conn,
                       "INSERT INTO datakeys(room_id, dkid, sender, epoch, created_epoch, header) "
                       "SELECT $1, d, s, e, e, h FROM unnest($2::bytea[], $3::bigint[], "
                       "$4::bytea[], $5::text[]) AS u(d, e, h, s)",
                       5, v);
        }
        free(dk);
        free(hh);
        free(ep);
        free(snd);
        if (!ok) return -1;
    }
    return 0;
}

ac_room *ac_room_seed(PGconn *conn, const char *name, size_t n, size_t nsenders, uint64_t c,
                      uint64_t lo, uint64_t hi, bool tokens, bool epochs, unsigned threads)
{
    if (n == 0 || nsenders == 0 || lo < 1 || lo > hi || hi > c) return NULL;
    ac_room *r = calloc(1, sizeof *r);
    unsigned char(*ks)[32] = NULL;
    if (!r) return NULL;
    snprintf(r->name, sizeof r->name, "%s", name);
    r->c = c;
    r->n = n;
    r->threads = threads;
    r->tracked = true;
    r->dkid = malloc(n * AC_DKID);
    r->p = malloc(n * AC_PT);
    r->from = malloc(n * sizeof *r->from);
    r->hfrom = malloc(n * AC_PT);
    r->want = malloc(n * AC_PT);
    ks = sodium_malloc(n * 32);
    if (!r->dkid || !r->p || !r->from || !r->hfrom || !r->want || !ks || grow_keys(r, c) != 0)
        goto fail;
    for (uint64_t e = 1; e <= c; e++)
        random_scalar(r->k[e]);
    for (size_t i = 0; i < n; i++)
        sr_e2e_datakey_id_random(r->dkid[i]);
    qsort(r->dkid, n, AC_DKID, cmp_dkid);
    for (size_t i = 0; i < n; i++) {
        if (sr_e2e_datakey_random(r->p[i]) != SR_E2E_OK) goto fail;
        r->from[i] = lo + randombytes_uniform((uint32_t)(hi - lo + 1));
        memcpy(ks[i], r->k[r->from[i]], 32);
    }
    if (ac_mul_all(r->hfrom, &ks[0][0], 32, (const unsigned char(*)[AC_PT])r->p, n, threads) != 0)
        goto fail;
    sodium_free(ks);
    ks = NULL;

    char ce[24];
    snprintf(ce, sizeof ce, "%llu", (unsigned long long)c);
    const char *rv[] = {name, ce};
    PGresult *res = ac_exec(conn,
                            "INSERT INTO rooms(name, roster_version, roster_head, current_epoch) "
                            "VALUES ($1, 0, decode(repeat('00', 32), 'hex'), $2) RETURNING room_id",
                            2, rv);
    if (!res) goto fail;
    r->id = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    snprintf(r->idtext, sizeof r->idtext, "%lld", r->id);
    for (uint64_t e = 1; epochs && e <= c; e++)
        if (store_epoch(conn, r, e) != 0) goto fail;
    for (uint64_t e = lo; tokens && e < c; e++)
        if (store_token(conn, r, e, NULL) != 0) goto fail;
    if (insert_rows(conn, r, nsenders) != 0) goto fail;
    return r;
fail:
    fprintf(stderr, "seeding %s failed\n", name);
    if (ks) sodium_free(ks);
    ac_room_free(r);
    return NULL;
}

void ac_room_free(ac_room *r)
{
    if (!r) return;
    if (r->k) sodium_free(r->k);
    if (r->p) sodium_memzero(r->p, r->n * AC_PT);
    free(r->dkid);
    free(r->p);
    free(r->from);
    free(r->hfrom);
    free(r->want);
    free(r);
}

int ac_room_want(ac_room *r)
{
    if (r->want_epoch == r->c) return 0;
    if (ac_mul_all(r->want, r->k[r->c], 0, (const unsigned char(*)[AC_PT])r->p, r->n, r->threads) !=
        0)
        return -1;
    r->want_epoch = r->c;
    return 0;
}

int ac_room_advance(PGconn *conn, ac_room *r, bool token, bool track, unsigned char delta_out[32])
{
    if (track) {
        if (ac_room_want(r) != 0) return -1;
        memcpy(r->hfrom, r->want, r->n * AC_PT);
        for (size_t i = 0; i < r->n; i++)
            r->from[i] = r->c;
    }
    r->tracked = track;
    if (grow_keys(r, r->c + 1) != 0) return -1;
    random_scalar(r->k[r->c + 1]);
    /* An epochs row only where the room keeps them (epoch 1 has one). */
    char ce[24];
    const char *v1[] = {r->idtext};
    PGresult *res = ac_exec(conn, "SELECT count(*) FROM epochs WHERE room_id = $1", 1, v1);
    if (!res) return -1;
    bool epochs = atoll(PQgetvalue(res, 0, 0)) > 0;
    PQclear(res);
    if (epochs && store_epoch(conn, r, r->c + 1) != 0) return -1;
    if (token && store_token(conn, r, r->c, delta_out) != 0) return -1;
    snprintf(ce, sizeof ce, "%llu", (unsigned long long)r->c + 1);
    const char *v[] = {r->idtext, ce};
    if (!ac_ok(conn, "UPDATE rooms SET current_epoch = $2 WHERE room_id = $1", 2, v)) return -1;
    r->c++;
    return 0;
}

static uint64_t be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | (unsigned char)p[i];
    return v;
}

int ac_room_check(PGconn *conn, ac_room *r, bool final, size_t *behind)
{
    if (ac_room_want(r) != 0) return -1;
    const char *vals[] = {r->idtext};
    PGresult *res = PQexecParams(conn,
                                 "SELECT dkid, epoch, header FROM datakeys WHERE room_id = $1 "
                                 "ORDER BY dkid",
                                 1, NULL, vals, NULL, NULL, 1);
    int rc = -1;
    size_t late = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "check: %s", PQresultErrorMessage(res));
        goto out;
    }
    if ((size_t)PQntuples(res) != r->n) {
        fprintf(stderr, "check: %d rows stored, %zu seeded (rows lost)\n", PQntuples(res), r->n);
        goto out;
    }
    for (size_t i = 0; i < r->n; i++) {
        int row = (int)i;
        if (PQgetlength(res, row, 0) != AC_DKID || PQgetlength(res, row, 1) != 8 ||
            PQgetlength(res, row, 2) != AC_PT ||
            memcmp(PQgetvalue(res, row, 0), r->dkid[i], AC_DKID) != 0) {
            fprintf(stderr, "check: row %zu is not the data key seeded there\n", i);
            goto out;
        }
        uint64_t e = be64(PQgetvalue(res, row, 1));
        const char *h = PQgetvalue(res, row, 2);
        bool at_c = e == r->c && memcmp(h, r->want[i], AC_PT) == 0;
        bool before = !final && r->tracked && e == r->from[i] && memcmp(h, r->hfrom[i], AC_PT) == 0;
        if (!at_c && !before) {
            fprintf(stderr,
                    "check: row %zu at epoch %llu is %s (it was at %llu%s; current epoch %llu)\n",
                    i, (unsigned long long)e,
                    e == r->c ? "not k_c·P: a token applied twice or wrongly"
                    : final   ? "still behind"
                              : "neither its old header nor k_c·P",
                    r->tracked ? (unsigned long long)r->from[i] : 0ULL,
                    r->tracked ? "" : " or earlier", (unsigned long long)r->c);
            goto out;
        }
        late += !at_c;
    }
    if (behind) *behind = late;
    rc = 0;
out:
    PQclear(res);
    return rc;
}

long long ac_count_behind(PGconn *conn, const ac_room *r)
{
    char ce[24];
    snprintf(ce, sizeof ce, "%llu", (unsigned long long)r->c);
    const char *v[] = {r->idtext, ce};
    PGresult *res =
        ac_exec(conn, "SELECT count(*) FROM datakeys WHERE room_id = $1 AND epoch < $2", 2, v);
    long long n = res ? atoll(PQgetvalue(res, 0, 0)) : -1;
    PQclear(res);
    return n;
}
