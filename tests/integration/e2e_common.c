/* The e2e integration-test helpers (see e2e_common.h): recording clients
 * that also keep the e2e event fields, secrets from the test hook, the
 * secret/word scanner and binary PostgreSQL access. */
#include "e2e_common.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "testhook.h"

/* ------------------------------------------------------------- clients */

void e2e_record(void *user, const sealroom_event *ev)
{
    e2e_lib *w = user;
    it_lib *l = w->l;
    it_lib_record(l, ev);
    const it_ev *e = &l->ev[l->nev - 1];
    if (e->type == SEALROOM_EVENT_MESSAGE_REJECTED || e->type == SEALROOM_EVENT_FINGERPRINT_CHANGED)
        it_log("%s: event %s in %s from %s origin %s: %d (%s) %s", l->user,
               e->type == SEALROOM_EVENT_MESSAGE_REJECTED ? "MESSAGE_REJECTED"
                                                          : "FINGERPRINT_CHANGED",
               e->room ? e->room : "-", e->jid ? e->jid : "-", e->origin_id ? e->origin_id : "-",
               e->result, sealroom_strerror(e->result), e->error_text ? e->error_text : "");
}

static e2e_lib *wrap_new(const char *user)
{
    e2e_lib *w = calloc(1, sizeof *w);
    it_lib *l = calloc(1, sizeof *l);
    IT_CHECK(w && l, "out of memory");
    w->l = l;
    snprintf(l->user, sizeof l->user, "%s", user);
    it_bare(l->bare, sizeof l->bare, user);
    return w;
}

e2e_lib *e2e_recorder_new(const char *user)
{
    return wrap_new(user);
}

e2e_lib *e2e_connect(const char *user, bool with_identity)
{
    e2e_lib *w = wrap_new(user);
    it_lib *l = w->l;
    char res[17], jid[300];
    it_random_hex(res, 8);
    snprintf(jid, sizeof jid, "%s/e2e-%s", l->bare, res);
    const it_env *e = it_env_get();
    int rc = sealroom_client_connect(&l->client, jid, e->password, e->host, e->port, e->service,
                                     IT_TIMEOUT_MS);
    IT_CHECK(rc == SEALROOM_OK && l->client, "libsealroom connect as %s: %d (%s)", jid, rc,
             sealroom_strerror(rc));
    if (with_identity) {
        l->id = it_user_identity(l->bare);
        IT_OK(sealroom_client_set_identity(l->client, l->id));
    }
    sealroom_client_set_event_handler(l->client, e2e_record, w);
    it_lib_track(l);
    /* Any vault this ctx seals (creation, saving pins) stays quick. */
    e2e_fast_vault(w);
    return w;
}

void e2e_lib_clear(e2e_lib *w)
{
    it_lib_clear(w->l);
}

void e2e_lib_free(e2e_lib *w)
{
    if (!w) return;
    it_lib_free(w->l);
    free(w);
}

sealroom_ctx *e2e_ctx(e2e_lib *w)
{
    return it_lib_ctx(w->l);
}

const e2e_ext *e2e_ext_of(const e2e_lib *w, size_t i)
{
    IT_CHECK(i < w->l->nev, "event index %zu of %zu", i, w->l->nev);
    return &w->l->ev[i];
}

long e2e_find(const e2e_lib *w, sealroom_event_type type, const char *room, size_t from)
{
    for (size_t i = from; i < w->l->nev; i++) {
        const it_ev *e = &w->l->ev[i];
        if (e->type == type && (!room || (e->room && strcmp(e->room, room) == 0)))
            return (long)i;
    }
    return -1;
}

void e2e_fast_vault(e2e_lib *w)
{
    IT_OK(sealroom_ctx_set_vault_limits(e2e_ctx(w), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                        crypto_pwhash_MEMLIMIT_INTERACTIVE));
}

int e2e_account_create(e2e_lib *w, const char *passphrase)
{
    uint32_t req = 0;
    IT_OK(sealroom_account_create(e2e_ctx(w), &req, passphrase,
                                  passphrase ? strlen(passphrase) : 0));
    return it_lib_wait(w->l, req);
}

int e2e_account_login(e2e_lib *w, const char *passphrase)
{
    uint32_t req = 0;
    IT_OK(sealroom_account_login(e2e_ctx(w), &req, passphrase,
                                 passphrase ? strlen(passphrase) : 0));
    return it_lib_wait(w->l, req);
}

const char *e2e_done_text(const e2e_lib *w, uint32_t req)
{
    const it_ev *d = it_lib_done(w->l, req);
    return d && d->error_text ? d->error_text : "";
}

uint64_t e2e_epoch(e2e_lib *w, const char *room)
{
    uint64_t epoch = 0;
    int rc = sealroom_room_epoch(e2e_ctx(w), &epoch, room);
    IT_CHECK(rc == SEALROOM_OK, "%s holds no key epoch for %s: %d (%s)", w->l->user, room, rc,
             sealroom_strerror(rc));
    return epoch;
}

int e2e_read_history(e2e_lib *w, const char *room)
{
    char *before = NULL;
    int rc = SEALROOM_OK;
    /* The service's largest page (limits.mam_max_page), so big rooms read quickly. */
    for (int page = 0; page < 100000; page++) {
        uint32_t req = 0;
        IT_OK(sealroom_room_history(e2e_ctx(w), &req, room, before, 250));
        rc = it_lib_wait(w->l, req);
        free(before);
        before = NULL;
        if (rc != SEALROOM_OK) {
            it_log("%s: history of %s failed: %d (%s) %s", w->l->user, room, rc,
                   sealroom_strerror(rc), e2e_done_text(w, req));
            return rc;
        }
        const it_ev *d = it_lib_done(w->l, req);
        if (!d || d->complete || !d->first) break;
        before = strdup(d->first);
    }
    free(before);
    return rc;
}

static const it_ev *find_msg(const e2e_lib *w, sealroom_event_type type, const char *room,
                             const char *origin, int history)
{
    for (size_t i = 0; i < w->l->nev; i++) {
        const it_ev *e = &w->l->ev[i];
        if (e->type == type && (history < 0 || e->history == history) && e->room &&
            strcmp(e->room, room) == 0 && e->origin_id && strcmp(e->origin_id, origin) == 0)
            return e;
    }
    return NULL;
}

const it_ev *e2e_history_msg(const e2e_lib *w, const char *room, const char *origin)
{
    return find_msg(w, SEALROOM_EVENT_MESSAGE, room, origin, 1);
}

const it_ev *e2e_rejected(const e2e_lib *w, const char *room, const char *origin)
{
    return find_msg(w, SEALROOM_EVENT_MESSAGE_REJECTED, room, origin, -1);
}

const it_ev *e2e_any_msg(const e2e_lib *w, const char *room, const char *origin)
{
    return find_msg(w, SEALROOM_EVENT_MESSAGE, room, origin, -1);
}

/* ------------------------------------------------------------- secrets */

void e2e_secrets_add(e2e_secrets *s, const char *owner, const char *what, const char *room,
                     uint64_t epoch, const unsigned char *bytes, size_t len)
{
    IT_CHECK(bytes && len > 0, "empty secret %s of %s", what, owner);
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].len == len && strcmp(s->v[i].owner, owner) == 0 &&
            strcmp(s->v[i].what, what) == 0 && sodium_memcmp(s->v[i].bytes, bytes, len) == 0)
            return;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        IT_CHECK(s->v != NULL, "out of memory");
    }
    e2e_secret *e = &s->v[s->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->owner, sizeof e->owner, "%s", owner);
    snprintf(e->what, sizeof e->what, "%s", what);
    snprintf(e->room, sizeof e->room, "%s", room ? room : "");
    e->epoch = epoch;
    e->bytes = sodium_malloc(len);
    IT_CHECK(e->bytes != NULL, "out of memory");
    memcpy(e->bytes, bytes, len);
    e->len = len;
}

typedef struct collect_arg {
    e2e_secrets *s;
    const char *owner;
    size_t seen;
} collect_arg;

static void on_secret(void *user, const char *what, const char *room, uint64_t epoch,
                      const unsigned char *secret, size_t len)
{
    collect_arg *a = user;
    a->seen++;
    IT_CHECK(what != NULL, "test hook reported a secret without a name");
    e2e_secrets_add(a->s, a->owner, what, room, epoch, secret, len);
}

size_t e2e_secrets_collect(e2e_secrets *s, const sealroom_ctx *ctx, const char *owner)
{
    collect_arg a = {s, owner, 0};
    sr_testhook_secrets(ctx, on_secret, &a);
    return a.seen;
}

static bool secret_matches(const e2e_secret *e, const char *owner, const char *what,
                           const char *room)
{
    return (!owner || strcmp(e->owner, owner) == 0) && (!what || strcmp(e->what, what) == 0) &&
           (!room || strcmp(e->room, room) == 0);
}

size_t e2e_secrets_count(const e2e_secrets *s, const char *owner, const char *what,
                         const char *room)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += secret_matches(&s->v[i], owner, what, room);
    return n;
}

const e2e_secret *e2e_secrets_find(const e2e_secrets *s, const char *owner, const char *what,
                                   const char *room, uint64_t epoch)
{
    for (size_t i = 0; i < s->n; i++)
        if (secret_matches(&s->v[i], owner, what, room) && s->v[i].epoch == epoch)
            return &s->v[i];
    return NULL;
}

void e2e_secrets_free(e2e_secrets *s)
{
    for (size_t i = 0; i < s->n; i++)
        sodium_free(s->v[i].bytes); /* sodium_free wipes */
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------- scanner */

#define MIN_SECRET 16
#define MIN_HEX_RUN 32
#define MIN_B64_RUN 16

/* The needles, indexed so one pass over a buffer checks them all: secrets
 * by their first 8 bytes (open addressing), words by their first letter.
 * A dump of a shared database can be large; one memmem per secret over it
 * would not be. */
typedef struct needles {
    const e2e_secrets *s;
    const char *const *words;
    size_t nwords;
    size_t *slot; /* secret index + 1, 0 = empty */
    size_t mask;
    bool first[256];
} needles;

static uint64_t prefix8(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static size_t slot_of(uint64_t v, size_t mask)
{
    return (size_t)((v * 0x9E3779B97F4A7C15ull) >> 17) & mask;
}

static void needles_init(needles *nd, const e2e_secrets *s, const char *const *words,
                         size_t nwords)
{
    memset(nd, 0, sizeof *nd);
    nd->s = s;
    nd->words = words;
    nd->nwords = nwords;
    size_t size = 64;
    while (s && size < 4 * s->n)
        size *= 2;
    nd->slot = calloc(size, sizeof *nd->slot);
    IT_CHECK(nd->slot != NULL, "out of memory");
    nd->mask = size - 1;
    for (size_t i = 0; s && i < s->n; i++) {
        if (s->v[i].len < MIN_SECRET) continue;
        size_t k = slot_of(prefix8(s->v[i].bytes), nd->mask);
        while (nd->slot[k])
            k = (k + 1) & nd->mask;
        nd->slot[k] = i + 1;
    }
    for (size_t i = 0; i < nwords; i++) {
        IT_CHECK(words[i][0] != 0, "empty word");
        unsigned char c = (unsigned char)words[i][0];
        nd->first[tolower(c)] = nd->first[toupper(c)] = true;
    }
}

static void needles_free(needles *nd)
{
    free(nd->slot);
}

static bool word_at(const unsigned char *p, size_t left, const char *word)
{
    size_t n = strlen(word);
    if (n > left) return false;
    for (size_t k = 0; k < n; k++)
        if (tolower(p[k]) != tolower((unsigned char)word[k])) return false;
    return true;
}

/* Look for every needle in one buffer (raw or decoded). */
static bool scan_buf(const needles *nd, const unsigned char *buf, size_t len, const char *where,
                     const char *how, size_t at, char *why, size_t whylen)
{
    for (size_t i = 0; i < len; i++) {
        if (len - i >= MIN_SECRET) {
            uint64_t v = prefix8(buf + i);
            for (size_t k = slot_of(v, nd->mask); nd->slot[k]; k = (k + 1) & nd->mask) {
                const e2e_secret *e = &nd->s->v[nd->slot[k] - 1];
                if (e->len <= len - i && memcmp(buf + i, e->bytes, e->len) == 0) {
                    snprintf(why, whylen,
                             "%s: secret %s of %s (room %s, epoch %llu, %zu bytes) found %s at "
                             "offset %zu",
                             where, e->what, e->owner, e->room[0] ? e->room : "-",
                             (unsigned long long)e->epoch, e->len, how, at + i);
                    return true;
                }
            }
        }
        if (!nd->first[buf[i]]) continue;
        for (size_t w = 0; w < nd->nwords; w++)
            if (word_at(buf + i, len - i, nd->words[w])) {
                snprintf(why, whylen, "%s: word '%s' found %s at offset %zu", where,
                         nd->words[w], how, at + i);
                return true;
            }
    }
    return false;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool is_b64(unsigned char c)
{
    return isalnum(c) || c == '+' || c == '/' || c == '-' || c == '_';
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62; /* the URL-safe alphabet too */
    if (c == '/' || c == '_') return 63;
    return -1;
}

bool e2e_scan(const unsigned char *hay, size_t len, const e2e_secrets *s,
              const char *const *words, size_t nwords, const char *where, char *why,
              size_t whylen)
{
    needles nd;
    needles_init(&nd, s, words, nwords);
    bool hit = scan_buf(&nd, hay, len, where, "as raw bytes", 0, why, whylen);
    unsigned char *dec = malloc(len + 4); /* base64 decodes to 3/4 */
    IT_CHECK(dec != NULL, "out of memory");
    /* Hex runs (bytea is \x..., logs may print hex), both nibble phases. */
    for (size_t i = 0; i < len && !hit;) {
        if (hexval(hay[i]) < 0) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < len && hexval(hay[j]) >= 0)
            j++;
        if (j - i >= MIN_HEX_RUN) {
            for (size_t phase = 0; phase < 2 && !hit; phase++) {
                size_t n = 0;
                for (size_t k = i + phase; k + 1 < j; k += 2)
                    dec[n++] = (unsigned char)(hexval(hay[k]) << 4 | hexval(hay[k + 1]));
                hit = scan_buf(&nd, dec, n, where, "in a decoded hex run", i, why, whylen);
            }
        }
        i = j;
    }
    /* Base64 runs: a secret may start anywhere in a larger encoded blob,
     * so decode from each of the four offsets of a quantum. */
    for (size_t i = 0; i < len && !hit;) {
        if (!is_b64(hay[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < len && is_b64(hay[j]))
            j++;
        if (j - i >= MIN_B64_RUN) {
            for (size_t phase = 0; phase < 4 && !hit; phase++) {
                size_t n = 0;
                for (size_t k = i + phase; k + 4 <= j; k += 4) {
                    int a = b64val(hay[k]), b = b64val(hay[k + 1]), c = b64val(hay[k + 2]),
                        d = b64val(hay[k + 3]);
                    dec[n++] = (unsigned char)(a << 2 | b >> 4);
                    dec[n++] = (unsigned char)((b & 15) << 4 | c >> 2);
                    dec[n++] = (unsigned char)((c & 3) << 6 | d);
                }
                /* The last partial quantum (before '=' padding or the end). */
                size_t rest = (j - i - phase) % 4;
                size_t k = j - rest;
                if (rest >= 2) dec[n++] = (unsigned char)(b64val(hay[k]) << 2 | b64val(hay[k + 1]) >> 4);
                if (rest == 3)
                    dec[n++] =
                        (unsigned char)((b64val(hay[k + 1]) & 15) << 4 | b64val(hay[k + 2]) >> 2);
                hit = scan_buf(&nd, dec, n, where, "in a decoded base64 run", i, why, whylen);
            }
        }
        i = j;
    }
    free(dec);
    needles_free(&nd);
    return hit;
}

void e2e_scan_selfcheck(void)
{
    e2e_secrets s = {0};
    unsigned char key[32];
    it_random(key, sizeof key);
    e2e_secrets_add(&s, "selfcheck", "planted", NULL, 0, key, sizeof key);
    static const char *const words[] = {"quokka-selfcheck"};
    char why[512];

    /* Embedded inside longer values, as a dump would hold it. */
    unsigned char blob[7 + 32 + 5];
    it_random(blob, sizeof blob);
    memcpy(blob + 7, key, sizeof key);
    char *hex = e2e_hex(blob, sizeof blob);
    char *b64 = it_b64(blob, sizeof blob);
    size_t cap = strlen(hex) + strlen(b64) + 256;
    char *text = malloc(cap);
    IT_CHECK(text != NULL, "out of memory");

    snprintf(text, cap, "1\t42\tsome text\t\\\\x%s\t2024-01-01\n", hex);
    IT_CHECK(e2e_scan((unsigned char *)text, strlen(text), &s, NULL, 0, "selfcheck", why,
                      sizeof why),
             "scanner self-check: a secret planted in hex was not found");
    it_log("scanner self-check (hex): %s", why);
    for (char *c = hex; *c; c++)
        *c = (char)toupper((unsigned char)*c);
    snprintf(text, cap, "log line: value=%s end\n", hex);
    IT_CHECK(e2e_scan((unsigned char *)text, strlen(text), &s, NULL, 0, "selfcheck", why,
                      sizeof why),
             "scanner self-check: a secret planted in upper-case hex was not found");

    snprintf(text, cap, "<sealed xmlns='urn:xmpp:sealroom:0'>%s</sealed>", b64);
    IT_CHECK(e2e_scan((unsigned char *)text, strlen(text), &s, NULL, 0, "selfcheck", why,
                      sizeof why),
             "scanner self-check: a secret planted in base64 was not found");
    it_log("scanner self-check (base64): %s", why);

    /* Shifted by one to three bytes, so every base64 alignment is used. */
    for (size_t shift = 1; shift < 4; shift++) {
        char *b = it_b64(blob + shift, sizeof blob - shift);
        snprintf(text, cap, "x %s y", b);
        free(b);
        IT_CHECK(e2e_scan((unsigned char *)text, strlen(text), &s, NULL, 0, "selfcheck", why,
                          sizeof why),
                 "scanner self-check: base64 shifted by %zu bytes was not found", shift);
    }

    snprintf(text, cap, "plain %s and \\x%s", "QUOKKA-SelfCheck", "00ff");
    IT_CHECK(e2e_scan((unsigned char *)text, strlen(text), &s, words, 1, "selfcheck", why,
                      sizeof why),
             "scanner self-check: a word in other case was not found");
    unsigned char wbytes[] = "\x01\x02quokka-selfcheck\x03";
    char *wb64 = it_b64(wbytes, sizeof wbytes - 1);
    snprintf(text, cap, "payload %s", wb64);
    free(wb64);
    IT_CHECK(e2e_scan((unsigned char *)text, strlen(text), &s, words, 1, "selfcheck", why,
                      sizeof why),
             "scanner self-check: a word inside base64 was not found");

    /* And nothing where there is nothing. */
    unsigned char other[64];
    it_random(other, sizeof other);
    char *ohex = e2e_hex(other, sizeof other), *ob64 = it_b64(other, sizeof other);
    snprintf(text, cap, "\\\\x%s %s quokka-other", ohex, ob64);
    IT_CHECK(!e2e_scan((unsigned char *)text, strlen(text), &s, words, 1, "selfcheck", why,
                       sizeof why),
             "scanner self-check: false positive: %s", why);
    free(ohex);
    free(ob64);
    free(hex);
    free(b64);
    free(text);
    sodium_memzero(key, sizeof key);
    sodium_memzero(blob, sizeof blob);
    e2e_secrets_free(&s);
}

/* ---------------------------------------------------------- PostgreSQL */

static PGconn *pg;

PGconn *e2e_pg(void)
{
    if (pg && PQstatus(pg) == CONNECTION_OK) return pg;
    if (pg) PQfinish(pg);
    pg = PQconnectdb(it_env_get()->pg);
    IT_CHECK(PQstatus(pg) == CONNECTION_OK, "PostgreSQL: %s", PQerrorMessage(pg));
    return pg;
}

PGresult *e2e_pg_exec_bin(const char *sql, int n, const char *const *params, const int *lens,
                          bool binary)
{
    int formats[16] = {0}, lengths[16] = {0};
    IT_CHECK(n <= 16, "too many parameters");
    for (int i = 0; lens && i < n; i++) {
        formats[i] = lens[i] > 0;
        lengths[i] = lens[i];
    }
    PGresult *res = PQexecParams(e2e_pg(), sql, n, NULL, params, lengths, formats, binary ? 1 : 0);
    ExecStatusType st = PQresultStatus(res);
    IT_CHECK(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "SQL %s: %s", sql,
             PQerrorMessage(pg));
    return res;
}

PGresult *e2e_pg_exec(const char *sql, int n, const char *const *params, bool binary)
{
    return e2e_pg_exec_bin(sql, n, params, NULL, binary);
}

unsigned char *e2e_pg_bytea(const PGresult *res, int row, int col, size_t *len)
{
    if (PQgetisnull(res, row, col)) return NULL;
    *len = (size_t)PQgetlength(res, row, col);
    unsigned char *out = malloc(*len ? *len : 1);
    IT_CHECK(out != NULL, "out of memory");
    memcpy(out, PQgetvalue(res, row, col), *len);
    return out;
}

long long e2e_pg_int8(const PGresult *res, int row, int col)
{
    IT_CHECK(PQfformat(res, col) == 1 && PQgetlength(res, row, col) == 8,
             "column %d is not a binary int8", col);
    const unsigned char *p = (const unsigned char *)PQgetvalue(res, row, col);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return (long long)v;
}

long long e2e_room_id(const char *room)
{
    const char *p[1] = {room};
    PGresult *res = e2e_pg_exec("SELECT room_id FROM rooms WHERE name = $1", 1, p, false);
    IT_CHECK(PQntuples(res) == 1, "room %s is not in the database", room);
    long long id = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return id;
}

long e2e_pg_delete_vault(const char *bare)
{
    const char *p[1] = {bare};
    PGresult *res = e2e_pg_exec("DELETE FROM vaults WHERE jid = $1", 1, p, false);
    long n = atol(PQcmdTuples(res));
    PQclear(res);
    return n;
}

long e2e_pg_vault_rows(const char *bare)
{
    const char *p[1] = {bare};
    PGresult *res = e2e_pg_exec("SELECT count(*) FROM vaults WHERE jid = $1", 1, p, false);
    long n = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    return n;
}

typedef struct growbuf {
    char *p;
    size_t len, cap;
} growbuf;

static void gb_put(growbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 1 << 20;
        b->p = realloc(b->p, b->cap);
        IT_CHECK(b->p != NULL, "out of memory (%zu bytes of dump)", b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

char *e2e_pg_dump(size_t *len, size_t *ntables)
{
    PGresult *tables =
        e2e_pg_exec("SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) "
                    "FROM information_schema.tables WHERE table_schema = 'public' AND "
                    "table_type = 'BASE TABLE' ORDER BY table_name",
                    0, NULL, false);
    growbuf b = {0};
    int nt = PQntuples(tables);
    for (int t = 0; t < nt; t++) {
        const char *name = PQgetvalue(tables, t, 0);
        char head[300], sql[300];
        snprintf(head, sizeof head, "-- table %s\n", name);
        gb_put(&b, head, strlen(head));
        snprintf(sql, sizeof sql, "COPY %s TO STDOUT", name);
        PGresult *res = PQexec(e2e_pg(), sql);
        IT_CHECK(PQresultStatus(res) == PGRES_COPY_OUT, "%s: %s", sql, PQerrorMessage(pg));
        PQclear(res);
        char *row = NULL;
        int n;
        while ((n = PQgetCopyData(pg, &row, 0)) > 0) {
            gb_put(&b, row, (size_t)n);
            PQfreemem(row);
        }
        IT_CHECK(n == -1, "%s: %s", sql, PQerrorMessage(pg));
        res = PQgetResult(pg);
        IT_CHECK(PQresultStatus(res) == PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(pg));
        PQclear(res);
        while ((res = PQgetResult(pg)) != NULL)
            PQclear(res);
    }
    PQclear(tables);
    if (!b.p) gb_put(&b, "", 0);
    *len = b.len;
    *ntables = (size_t)nt;
    return b.p;
}

char *e2e_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    growbuf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        gb_put(&b, chunk, n);
    fclose(f);
    if (!b.p) gb_put(&b, "", 0);
    *len = b.len;
    return b.p;
}

void e2e_format_fpr(char *out, const unsigned char fpr[32])
{
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, fpr, 32);
    size_t k = 0;
    for (int g = 0; g < 8; g++) {
        if (g) out[k++] = ' ';
        memcpy(out + k, hex + g * 8, 8);
        k += 8;
    }
    out[k] = 0;
}

char *e2e_hex(const unsigned char *p, size_t n)
{
    char *out = malloc(n * 2 + 1);
    IT_CHECK(out != NULL, "out of memory");
    sodium_bin2hex(out, n * 2 + 1, p, n);
    return out;
}
