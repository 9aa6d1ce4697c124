/* Encrypted search at sealroomd (urn:xmpp:sealroom:search:0), driven over
 * raw stanzas through the XMPP server, with real keys: the test holds the
 * generation keys and the plaintext of every message it sends, computes
 * entry labels, GGM covers and segment blocks with the library's core
 * (libclient/src/search), and checks every answer against that truth and
 * every refusal against PostgreSQL (nothing stored, nothing changed).
 *
 * In order: disco; non-members refused everywhere; keyring rules (none
 * before the first, stale epoch, bad blobs, generation rules, one per
 * epoch); batches (keyring-needed before one, a new batch seals the
 * session's previous one); messages with <index/> (stored with the message,
 * never reflected; malformed, oversized or bad-base64 indexes refused; a
 * sealed or foreign batch refuses the message whole; a resend is
 * acknowledged without new entries); searches (newest first, conjunction,
 * RSM paging and complete, the batch attribute; bad covers, hi past the
 * last batch, oversized searches refused without sealing anything);
 * forward privacy (a search with hi = H seals batch H: its owner's next
 * message into it is refused); leaving seals the session's batch; a
 * removal sets need-gen, which blocks batches and entries until a keyring
 * with generation g+1, which seals every open batch; a batch of the wrong
 * generation refuses entries; retraction (only by the sender; no longer
 * found; MAM tombstone); compaction (lease, fetch paging, staged parts,
 * commit atomically replacing batches by a segment, searches unchanged
 * before and after; an expired lease changes nothing; a segment of
 * messages without a keyword is one dummy block, committed like any; a
 * level-2 merge of four segments); nothing left to index (batches and
 * segments whose messages are all retracted are retired by the room
 * itself, with no lease and no segment); pages of large messages end
 * early, not complete; the
 * entry that fills a batch to 65,536 seals it; and a restart of sealroomd
 * that keeps everything. A serial test: it restarts sealroomd. */
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "common.h"
#include "e2e/epoch.h"
#include "search/ggm.h"
#include "search/keyring.h"
#include "search/norm.h"
#include "search/segment.h"

#define NS_SEARCH "urn:xmpp:sealroom:search:0"
#define NS_APP "urn:xmpp:sealroom:0" /* application error conditions */
#define NS_RETRACT "urn:xmpp:message-retract:1"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NODE_WIRE 37 /* u8 depth ‖ u32 prefix ‖ 32-byte node */
#define MAX_MSGS 128
#define MAX_GENS 3

static it_room room;
static unsigned char kg[MAX_GENS][32]; /* kg[g]: K_g, g = 1, 2 */
static PGconn *pg;

/* ---- the plaintext truth ---- */

typedef struct truth {
    long long seq;
    char *text;
    sr_sse_keywords kws;
    uint32_t gen, batch;
    bool retracted;
} truth;
static truth msgs[MAX_MSGS];
static size_t nmsgs;

/* Counter of each (keyword, batch) the test has written (search-wire §2). */
typedef struct counter {
    char kw[SR_SSE_KEYWORD_MAX + 1];
    uint32_t batch;
    uint32_t c;
} counter;
static counter counters[1024];
static size_t ncounters;

static counter *counter_of(const char *kw, uint32_t batch)
{
    for (size_t i = 0; i < ncounters; i++)
        if (counters[i].batch == batch && strcmp(counters[i].kw, kw) == 0) return &counters[i];
    IT_CHECK(ncounters < sizeof counters / sizeof counters[0], "too many counters");
    counter *c = &counters[ncounters++];
    snprintf(c->kw, sizeof c->kw, "%s", kw);
    c->batch = batch;
    c->c = 0;
    return c;
}

static void keywords(sr_sse_keywords *out, const char *text)
{
    IT_CHECK(sr_sse_keywords_from_text(out, text, strlen(text), SR_SSE_MESSAGE_KEYWORDS) ==
                 SR_E2E_OK,
             "keywords of '%s'", text);
}

/* ---- PostgreSQL ---- */

/* The first column of the first row of sql ($1 = the room's JID, $2 =
 * arg), as a number; -1 for no row or NULL. */
static long long pgv(const char *sql, const char *arg)
{
    if (!pg) {
        pg = PQconnectdb(it_env_get()->pg);
        IT_CHECK(PQstatus(pg) == CONNECTION_OK, "PostgreSQL: %s", PQerrorMessage(pg));
    }
    const char *p[2] = {room.jid, arg};
    PGresult *r = PQexecParams(pg, sql, arg ? 2 : 1, NULL, p, NULL, NULL, 0);
    IT_CHECK(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK,
             "%s: %s", sql, PQerrorMessage(pg));
    long long v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)
                      ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                      : -1;
    PQclear(r);
    return v;
}

#define ROOM_ID "(SELECT room_id FROM rooms WHERE name = $1)"

static long long room_col(const char *col)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT %s::bigint FROM rooms WHERE name = $1", col);
    return pgv(sql, NULL);
}

static long long count_where(const char *table, const char *cond)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE room_id = " ROOM_ID "%s%s", table,
             cond ? " AND " : "", cond ? cond : "");
    return pgv(sql, NULL);
}

/* Blocks stage where their segment will live (sql/013): staged are those
 * of a lease's segment; live, those of a live segment. Anything else waits
 * for the purge (sql/014), which nothing reads. */
#define STAGED "EXISTS (SELECT 1 FROM search_leases l WHERE l.room_id = " \
               "search_blocks.room_id AND l.segment = search_blocks.segment)"
#define LIVE_BLOCK "EXISTS (SELECT 1 FROM search_segments s WHERE s.room_id = " \
                   "search_blocks.room_id AND s.segment = search_blocks.segment AND s.state = 1)"

static long long staged_blocks(void)
{
    return count_where("search_blocks", STAGED);
}

/* The purge deletes retired rows after the commit that retired them, a
 * chunk at a time: wait until the count (with $2 arg) reaches 0. */
static void wait_purged_at(int line, const char *sql, const char *arg, const char *what)
{
    uint64_t until = it_mono_ms() + 20000;
    long long n;
    while ((n = pgv(sql, arg)) != 0) {
        IT_CHECK(it_mono_ms() < until, "line %d: %s: %lld rows left", line, what, n);
        it_sleep_ms(20);
    }
}
#define wait_purged(sql, arg, what) wait_purged_at(__LINE__, sql, arg, what)

static long long batch_state(uint32_t b)
{
    char n[16];
    snprintf(n, sizeof n, "%u", b);
    return pgv("SELECT state FROM search_batches WHERE room_id = " ROOM_ID " AND batch = $2", n);
}

/* What a refusal must leave as it was. */
typedef struct snapshot {
    long long messages, entries, batches, open, keyrings, gen, need, last_batch, leases, staged,
        segments, blocks, retracted;
} snapshot;

static snapshot snap(void)
{
    snapshot s = {
        .messages = count_where("messages", NULL),
        .entries = count_where("search_entries", NULL),
        .batches = count_where("search_batches", NULL),
        .open = count_where("search_batches", "state = 0"),
        .keyrings = count_where("search_keyrings", NULL),
        .gen = room_col("search_gen"),
        .need = room_col("search_need_gen::int"),
        .last_batch = room_col("search_last_batch"),
        .leases = count_where("search_leases", NULL),
        .staged = staged_blocks(),
        .segments = count_where("search_segments", "state = 1"),
        .blocks = count_where("search_blocks", LIVE_BLOCK),
        .retracted = count_where("messages", "retracted_at IS NOT NULL"),
    };
    return s;
}

static void same_at(int line, snapshot a, const char *what)
{
    snapshot b = snap();
    IT_CHECK(memcmp(&a, &b, sizeof a) == 0,
             "line %d, %s changed the database: messages %lld->%lld entries %lld->%lld "
             "batches %lld->%lld open %lld->%lld keyrings %lld->%lld gen %lld->%lld "
             "need %lld->%lld last %lld->%lld leases %lld->%lld staged %lld->%lld "
             "segments %lld->%lld blocks %lld->%lld retracted %lld->%lld",
             line, what, a.messages, b.messages, a.entries, b.entries, a.batches, b.batches, a.open,
             b.open, a.keyrings, b.keyrings, a.gen, b.gen, a.need, b.need, a.last_batch,
             b.last_batch, a.leases, b.leases, a.staged, b.staged, a.segments, b.segments,
             a.blocks, b.blocks, a.retracted, b.retracted);
}
#define same(a, what) same_at(__LINE__, a, what)

/* ---- stanzas ---- */

static const char *attr(xmpp_stanza_t *st, const char *name)
{
    const char *v = st ? xmpp_stanza_get_attribute(st, name) : NULL;
    return v ? v : "";
}

/* st is an error of type etype with condition cond and, if app, <app/> in
 * urn:xmpp:sealroom:0 like every Sealroom condition (none otherwise). */
static void check_search_error_at(int line, xmpp_stanza_t *st, const char *etype, const char *cond,
                                  const char *app, const char *what)
{
    IT_CHECK(st != NULL, "line %d, %s: no answer", line, what);
    char *x = it_stanza_xml(st);
    xmpp_stanza_t *err = xmpp_stanza_get_child_by_name(st, "error");
    IT_CHECK(strcmp(attr(st, "type"), "error") == 0 && err, "line %d, %s: expected an error, got %s",
             line, what, x);
    IT_CHECK(strcmp(attr(err, "type"), etype) == 0, "line %d, %s: error type not %s: %s", line,
             what, etype, x);
    IT_CHECK(xmpp_stanza_get_child_by_name_and_ns(err, cond, IT_NS_STANZAS) != NULL,
             "line %d, %s: condition not <%s/>: %s", line, what, cond, x);
    bool has_app = false;
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(err); c; c = xmpp_stanza_get_next(c)) {
        const char *ns = xmpp_stanza_is_tag(c) ? xmpp_stanza_get_ns(c) : NULL;
        if (ns && strcmp(ns, NS_APP) == 0) {
            IT_CHECK(app && strcmp(xmpp_stanza_get_name(c), app) == 0,
                     "line %d, %s: application condition <%s/>, expected %s: %s", line, what,
                     xmpp_stanza_get_name(c), app ? app : "none", x);
            has_app = true;
        }
    }
    IT_CHECK(!app || has_app, "line %d, %s: no <%s xmlns='%s'/>: %s", line, what, app, NS_APP, x);
    free(x);
}
#define check_search_error(st, etype, cond, app, what)                                             \
    check_search_error_at(__LINE__, st, etype, cond, app, what)

static xmpp_stanza_t *iq(it_raw *rc, const char *type, const char *xml)
{
    return it_raw_iq(rc, type, room.jid, xml);
}

/* An IQ that must fail as given and change nothing. */
static void refused_iq_at(int line, it_raw *rc, const char *type, const char *xml,
                          const char *etype, const char *cond, const char *app, const char *what)
{
    snapshot before = snap();
    xmpp_stanza_t *st = iq(rc, type, xml);
    check_search_error_at(line, st, etype, cond, app, what);
    xmpp_stanza_release(st);
    same_at(line, before, what);
}
#define refused_iq(rc, type, xml, etype, cond, app, what)                                          \
    refused_iq_at(__LINE__, rc, type, xml, etype, cond, app, what)

static xmpp_stanza_t *child(xmpp_stanza_t *st, const char *name)
{
    xmpp_stanza_t *c = xmpp_stanza_get_child_by_name_and_ns(st, name, NS_SEARCH);
    char *x = c ? NULL : it_stanza_xml(st);
    IT_CHECK(c != NULL, "no <%s xmlns='%s'/> in %s", name, NS_SEARCH, x ? x : "");
    return c;
}

/* ---- keyrings and batches ---- */

static char *keyring_b64(uint64_t epoch, const unsigned char secret[32],
                         const unsigned char hash[32], uint32_t gens)
{
    sr_e2e_epoch_keys keys;
    IT_CHECK(sr_e2e_epoch_derive(&keys, secret, room.jid, epoch, hash) == SR_E2E_OK, "epoch keys");
    sr_sse_keyring k = {0};
    for (uint32_t g = 1; g <= gens; g++)
        IT_CHECK(sr_sse_keyring_put(&k, g, kg[g]) == SR_E2E_OK, "keyring put");
    unsigned char *blob = NULL;
    size_t len = 0;
    IT_CHECK(sr_sse_keyring_seal(&blob, &len, &k, keys.keyring, room.jid, epoch) == SR_E2E_OK,
             "keyring seal");
    char *b64 = it_b64(blob, len);
    sodium_memzero(&keys, sizeof keys);
    sr_sse_keyring_free(&k);
    free(blob);
    return b64;
}

static xmpp_stanza_t *send_keyring(it_raw *rc, uint64_t epoch, uint32_t gen, const char *b64)
{
    size_t n = strlen(b64) + 200;
    char *xml = malloc(n);
    snprintf(xml, n, "<keyring xmlns='%s' epoch='%" PRIu64 "' gen='%u'>%s</keyring>", NS_SEARCH,
             epoch, gen, b64);
    xmpp_stanza_t *st = iq(rc, "set", xml);
    free(xml);
    return st;
}

static uint32_t take_batch(it_raw *rc, uint32_t expect_gen)
{
    xmpp_stanza_t *st = iq(rc, "set", "<batch xmlns='" NS_SEARCH "'/>");
    it_check_result(st, "a batch");
    xmpp_stanza_t *b = child(st, "batch");
    uint32_t id = (uint32_t)strtoul(attr(b, "id"), NULL, 10);
    IT_CHECK(id > 0 && strtoul(attr(b, "gen"), NULL, 10) == expect_gen,
             "batch id '%s' gen '%s', expected gen %u", attr(b, "id"), attr(b, "gen"), expect_gen);
    xmpp_stanza_release(st);
    IT_CHECK(batch_state(id) == 0, "batch %u is not stored open", id);
    return id;
}

/* ---- messages ---- */

/* The labels of text for (gen, batch) with the counters as they are, and
 * dummies up to a multiple of 8 (base64, malloc'd); *n the entries. */
static char *labels_b64(const char *text, uint32_t gen, uint32_t batch, size_t *n)
{
    sr_sse_keywords k;
    keywords(&k, text);
    size_t total = (k.n + 7) / 8 * 8;
    if (total == 0) total = 8;
    unsigned char *buf = malloc(total * 16);
    IT_CHECK(buf != NULL, "out of memory");
    for (size_t i = 0; i < k.n; i++) {
        unsigned char root[32], t[32];
        IT_CHECK(sr_sse_root(root, kg[gen], gen, k.kw[i], k.len[i]) == SR_E2E_OK, "root");
        sr_sse_leaf(t, root, batch);
        sr_sse_label(buf + 16 * i, t, counter_of(k.kw[i], batch)->c);
        sodium_memzero(root, sizeof root);
        sodium_memzero(t, sizeof t);
    }
    randombytes_buf(buf + 16 * k.n, (total - k.n) * 16);
    char *b64 = it_b64(buf, total * 16);
    free(buf);
    sr_sse_keywords_free(&k);
    *n = total;
    return b64;
}

static bool match_message_id(xmpp_stanza_t *st, const void *arg)
{
    return strcmp(xmpp_stanza_get_name(st), "message") == 0 &&
           strcmp(attr(st, "id"), (const char *)arg) == 0;
}

/* Send a sealed message with origin-id origin and extra (an <index/>, or
 * ""); returns the answer to the sender: its reflection or an error. */
static size_t payload_len = IT_PAYLOAD_MIN + 16; /* of the messages sent */

static xmpp_stanza_t *send_message(it_raw *rc, const char *origin, const char *extra)
{
    unsigned char *payload = malloc(payload_len);
    IT_CHECK(payload != NULL, "out of memory");
    randombytes_buf(payload, payload_len);
    it_raw_fill_payload(rc, room.jid, payload, payload_len);
    char *b64 = it_b64(payload, payload_len);
    free(payload);
    it_raw_send(rc,
                "<message type='groupchat' to='%s' id='%s'><body>sealed</body>"
                "<sealed xmlns='%s'>%s</sealed><origin-id xmlns='%s' id='%s'/>%s</message>",
                room.jid, origin, IT_NS, b64, IT_NS_SID, origin, extra);
    free(b64);
    return it_raw_expect(rc, match_message_id, origin, IT_TIMEOUT_MS, "the answer to a message");
}

static char *index_xml(uint32_t batch, const char *b64)
{
    size_t n = strlen(b64) + 120;
    char *x = malloc(n);
    snprintf(x, n, "<index xmlns='%s' batch='%u'>%s</index>", NS_SEARCH, batch, b64);
    return x;
}

/* Send text indexed into (gen, batch); on success record it in the truth,
 * advance the counters and return its seq; on an error return -1 with the
 * error in *err (released by the caller) when err is not NULL. */
static long long say_indexed(it_raw *rc, const char *text, uint32_t gen, uint32_t batch,
                             xmpp_stanza_t **err)
{
    size_t n;
    char *b64 = labels_b64(text, gen, batch, &n), origin[40];
    char *x = index_xml(batch, b64);
    it_random_hex(origin, 12);
    long long entries_before = count_where("search_entries", NULL);
    xmpp_stanza_t *st = send_message(rc, origin, x);
    free(x);
    free(b64);
    if (strcmp(attr(st, "type"), "error") == 0) {
        IT_CHECK(err != NULL, "'%s' into batch %u refused: %s", text, batch, it_stanza_xml(st));
        *err = st;
        return -1;
    }
    char *xml = it_stanza_xml(st);
    IT_CHECK(!xmpp_stanza_get_child_by_name_and_ns(st, "index", NS_SEARCH),
             "the reflection carries the index: %s", xml);
    xmpp_stanza_t *sid = xmpp_stanza_get_child_by_name_and_ns(st, "stanza-id", IT_NS_SID);
    IT_CHECK(sid != NULL, "reflection without stanza-id: %s", xml);
    free(xml);
    long long seq = strtoll(attr(sid, "id"), NULL, 10);
    xmpp_stanza_release(st);
    IT_CHECK(nmsgs < MAX_MSGS, "too many messages");
    truth *t = &msgs[nmsgs++];
    t->seq = seq;
    t->text = strdup(text);
    keywords(&t->kws, text);
    t->gen = gen;
    t->batch = batch;
    t->retracted = false;
    for (size_t i = 0; i < t->kws.n; i++)
        counter_of(t->kws.kw[i], batch)->c++;
    /* Stored with the message: its entries, in its batch. */
    char q[24];
    snprintf(q, sizeof q, "%lld", seq);
    IT_CHECK(pgv("SELECT count(*) FROM search_entries WHERE room_id = " ROOM_ID " AND seq = $2",
                 q) == (long long)n,
             "message %lld does not have its %zu entries", seq, n);
    IT_CHECK(count_where("search_entries", NULL) == entries_before + (long long)n,
             "entries grew by other than %zu", n);
    if (err) *err = NULL;
    return seq;
}

/* A message into batch that must be refused with <batch-sealed/>, storing
 * nothing. */
static void refused_into_at(int line, it_raw *rc, const char *text, uint32_t gen, uint32_t batch,
                            const char *what)
{
    snapshot before = snap();
    xmpp_stanza_t *err = NULL;
    IT_CHECK(say_indexed(rc, text, gen, batch, &err) < 0, "line %d, %s: stored", line, what);
    check_search_error_at(line, err, "modify", "not-acceptable", "batch-sealed", what);
    xmpp_stanza_release(err);
    same_at(line, before, what);
}
#define refused_into(rc, text, gen, batch, what)                                                   \
    refused_into_at(__LINE__, rc, text, gen, batch, what)

/* A message with a malformed <index/> (extra as given): bad-request. */
static void bad_index_at(int line, it_raw *rc, const char *extra, const char *what)
{
    snapshot before = snap();
    char origin[40];
    it_random_hex(origin, 12);
    xmpp_stanza_t *st = send_message(rc, origin, extra);
    check_search_error_at(line, st, "modify", "bad-request", NULL, what);
    xmpp_stanza_release(st);
    same_at(line, before, what);
}
#define bad_index(rc, extra, what) bad_index_at(__LINE__, rc, extra, what)

/* ---- searches ---- */

typedef struct page {
    long long seqs[MAX_MSGS];
    size_t n;
    bool complete;
    long long batch;
    char first[24], last[24];
} page;

/* <cover gen='g'> of [1, hi] for kw. */
static void append_cover(char **buf, size_t *len, const char *kw, uint32_t gen, uint32_t hi)
{
    unsigned char root[32], wire[SR_SSE_COVER_MAX * NODE_WIRE];
    sr_sse_node nodes[SR_SSE_COVER_MAX];
    IT_CHECK(sr_sse_root(root, kg[gen], gen, kw, strlen(kw)) == SR_E2E_OK, "root of %s", kw);
    size_t k = sr_sse_cover(nodes, SR_SSE_COVER_MAX, root, 1, hi);
    IT_CHECK(k > 0, "cover of [1, %u]", hi);
    for (size_t i = 0; i < k; i++) {
        unsigned char *w = wire + i * NODE_WIRE;
        w[0] = nodes[i].depth;
        w[1] = (unsigned char)(nodes[i].prefix >> 24);
        w[2] = (unsigned char)(nodes[i].prefix >> 16);
        w[3] = (unsigned char)(nodes[i].prefix >> 8);
        w[4] = (unsigned char)nodes[i].prefix;
        memcpy(w + 5, nodes[i].key, 32);
    }
    char *b64 = it_b64(wire, k * NODE_WIRE);
    size_t need = *len + strlen(b64) + 64;
    *buf = realloc(*buf, need);
    *len += (size_t)sprintf(*buf + *len, "<cover gen='%u'>%s</cover>", gen, b64);
    free(b64);
    sodium_memzero(root, sizeof root);
    sodium_memzero(nodes, sizeof nodes);
    sodium_memzero(wire, sizeof wire);
}

/* <search/> for the keywords (space-separated) over generations 1..gens. */
static char *search_xml(const char *words, uint32_t gens, uint32_t hi, int max, long long before)
{
    size_t len = 0;
    char *buf = malloc(256);
    len += (size_t)sprintf(buf, "<search xmlns='%s' hi='%u'", NS_SEARCH, hi);
    if (max > 0) len += (size_t)sprintf(buf + len, " max='%d'", max);
    if (before > 0) len += (size_t)sprintf(buf + len, " before='%lld'", before);
    len += (size_t)sprintf(buf + len, ">");
    char *copy = strdup(words), *save = NULL;
    for (char *w = strtok_r(copy, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        buf = realloc(buf, len + 32);
        len += (size_t)sprintf(buf + len, "<keyword>");
        for (uint32_t g = 1; g <= gens; g++) append_cover(&buf, &len, w, g, hi);
        buf = realloc(buf, len + 32);
        len += (size_t)sprintf(buf + len, "</keyword>");
    }
    free(copy);
    buf = realloc(buf, len + 16);
    sprintf(buf + len, "</search>");
    return buf;
}

static void search_page(it_raw *rc, const char *words, uint32_t gens, uint32_t hi, int max,
                        long long before, page *out)
{
    memset(out, 0, sizeof *out);
    char *xml = search_xml(words, gens, hi, max, before);
    xmpp_stanza_t *st = iq(rc, "get", xml);
    free(xml);
    it_check_result(st, "a search");
    xmpp_stanza_t *res = child(st, "result");
    out->complete = strcmp(attr(res, "complete"), "true") == 0;
    out->batch = strtoll(attr(res, "batch"), NULL, 10);
    char *x = it_stanza_xml(st);
    for (xmpp_stanza_t *f = xmpp_stanza_get_children(res); f; f = xmpp_stanza_get_next(f)) {
        if (!xmpp_stanza_is_tag(f) || strcmp(xmpp_stanza_get_name(f), "forwarded") != 0) continue;
        xmpp_stanza_t *delay = xmpp_stanza_get_child_by_name(f, "delay");
        xmpp_stanza_t *m = xmpp_stanza_get_child_by_name(f, "message");
        xmpp_stanza_t *sid = m ? xmpp_stanza_get_child_by_name_and_ns(m, "stanza-id", IT_NS_SID)
                               : NULL;
        IT_CHECK(delay && *attr(delay, "stamp") && sid &&
                     strcmp(attr(sid, "by"), room.jid) == 0 &&
                     xmpp_stanza_get_child_by_name_and_ns(m, "sealed", IT_NS) &&
                     !xmpp_stanza_get_child_by_name_and_ns(m, "index", NS_SEARCH),
                 "a result is not an archived message with delay and stanza-id: %s", x);
        out->seqs[out->n++] = strtoll(attr(sid, "id"), NULL, 10);
    }
    xmpp_stanza_t *set = xmpp_stanza_get_child_by_name_and_ns(res, "set", IT_NS_RSM);
    IT_CHECK(set != NULL, "no rsm set: %s", x);
    xmpp_stanza_t *fe = xmpp_stanza_get_child_by_name(set, "first"),
                  *le = xmpp_stanza_get_child_by_name(set, "last");
    if (out->n) {
        char *f = fe ? xmpp_stanza_get_text(fe) : NULL, *l = le ? xmpp_stanza_get_text(le) : NULL;
        IT_CHECK(f && l && strtoll(f, NULL, 10) == out->seqs[0] &&
                     strtoll(l, NULL, 10) == out->seqs[out->n - 1],
                 "rsm first/last do not name the page's ends: %s", x);
        snprintf(out->first, sizeof out->first, "%s", f);
        snprintf(out->last, sizeof out->last, "%s", l);
        xmpp_free(xmpp_stanza_get_context(st), f);
        xmpp_free(xmpp_stanza_get_context(st), l);
    }
    free(x);
    xmpp_stanza_release(st);
}

/* What the truth says: live messages of generations 1..gens in batches
 * <= hi holding every keyword, below before, newest first. */
static size_t expected(const char *words, uint32_t gens, uint32_t hi, long long before,
                       long long *out)
{
    size_t n = 0;
    for (size_t i = nmsgs; i-- > 0;) {
        const truth *t = &msgs[i];
        if (t->retracted || t->gen > gens || t->batch > hi || (before > 0 && t->seq >= before))
            continue;
        bool all = true;
        char *copy = strdup(words), *save = NULL;
        for (char *w = strtok_r(copy, " ", &save); w && all; w = strtok_r(NULL, " ", &save))
            all = sr_sse_keywords_contains(&t->kws, w, strlen(w));
        free(copy);
        if (all) out[n++] = t->seq;
    }
    /* Messages are recorded in seq order, so this is newest first. */
    return n;
}

/* Every page of a search equals the truth, newest first, the last one
 * complete. */
static void search_all_at(int line, it_raw *rc, const char *words, uint32_t gens, uint32_t hi,
                          int max)
{
    long long want[MAX_MSGS];
    size_t nwant = expected(words, gens, hi, 0, want), got = 0;
    long long before = 0;
    for (int pages = 0;; pages++) {
        IT_CHECK(pages < MAX_MSGS, "line %d: search '%s' never completes", line, words);
        page p;
        search_page(rc, words, gens, hi, max, before, &p);
        IT_CHECK(p.n <= (size_t)max, "line %d: page of %zu > max %d", line, p.n, max);
        for (size_t i = 0; i < p.n; i++) {
            IT_CHECK(got < nwant && p.seqs[i] == want[got],
                     "line %d: search '%s' result %zu is %lld, expected %lld (of %zu)", line,
                     words, got, p.seqs[i], got < nwant ? want[got] : -1LL, nwant);
            got++;
        }
        if (p.complete) break;
        IT_CHECK(p.n > 0, "line %d: an empty page that is not complete", line);
        before = p.seqs[p.n - 1];
    }
    IT_CHECK(got == nwant, "line %d: search '%s' found %zu of %zu", line, words, got, nwant);
}
#define search_all(rc, words, gens, hi, max) search_all_at(__LINE__, rc, words, gens, hi, max)

static void bad_search_at(int line, it_raw *rc, const char *xml, const char *what)
{
    refused_iq_at(line, rc, "get", xml, "modify", "bad-request", "bad-cover", what);
}
#define bad_search(rc, xml, what) bad_search_at(__LINE__, rc, xml, what)

/* A search of nkw keywords × ncov covers × nodes nodes, each node the
 * leaf of batch 1 (depth 32, prefix 1) with a random key: valid, matching
 * nothing. */
static char *bulky_search(size_t nkw, size_t ncov, size_t nodes)
{
    unsigned char wire[8 * NODE_WIRE];
    size_t cap = 256 + nkw * (32 + ncov * (64 + nodes * 60)), len = 0;
    char *buf = malloc(cap);
    len += (size_t)sprintf(buf, "<search xmlns='%s' hi='1'>", NS_SEARCH);
    for (size_t k = 0; k < nkw; k++) {
        len += (size_t)sprintf(buf + len, "<keyword>");
        for (size_t c = 0; c < ncov; c++) {
            for (size_t i = 0; i < nodes; i++) {
                unsigned char *w = wire + i * NODE_WIRE;
                w[0] = 32;
                w[1] = w[2] = w[3] = 0;
                w[4] = 1;
                randombytes_buf(w + 5, 32);
            }
            char *b64 = it_b64(wire, nodes * NODE_WIRE);
            len += (size_t)sprintf(buf + len, "<cover gen='1'>%s</cover>", b64);
            free(b64);
        }
        len += (size_t)sprintf(buf + len, "</keyword>");
    }
    sprintf(buf + len, "</search>");
    return buf;
}

/* A cover (base64 of the raw nodes given) in a one-keyword search. */
static char *one_cover_search(uint32_t hi, const unsigned char *wire, size_t len, uint32_t gen)
{
    char *b64 = it_b64(wire, len);
    size_t n = strlen(b64) + 200;
    char *x = malloc(n);
    snprintf(x, n, "<search xmlns='%s' hi='%u'><keyword><cover gen='%u'>%s</cover></keyword></search>",
             NS_SEARCH, hi, gen, b64);
    free(b64);
    return x;
}

/* ---- retraction ---- */

static xmpp_stanza_t *retract(it_raw *rc, long long seq)
{
    char id[40];
    it_random_hex(id, 12);
    it_raw_send(rc,
                "<message type='groupchat' to='%s' id='%s'><retract xmlns='%s' id='%lld'/>"
                "<body>/me retracted a message</body></message>",
                room.jid, id, NS_RETRACT, seq);
    return it_raw_expect(rc, match_message_id, id, IT_TIMEOUT_MS, "the answer to a retraction");
}

static bool match_retract_of(xmpp_stanza_t *st, const void *arg)
{
    xmpp_stanza_t *r = strcmp(xmpp_stanza_get_name(st), "message") == 0
                           ? xmpp_stanza_get_child_by_name_and_ns(st, "retract", NS_RETRACT)
                           : NULL;
    return r && strcmp(attr(r, "id"), (const char *)arg) == 0;
}

static bool match_mam_of(xmpp_stanza_t *st, const void *arg)
{
    xmpp_stanza_t *r = strcmp(xmpp_stanza_get_name(st), "message") == 0
                           ? xmpp_stanza_get_child_by_name_and_ns(st, "result", IT_NS_MAM)
                           : NULL;
    return r && strcmp(attr(r, "queryid"), (const char *)arg) == 0;
}

/* The archived message seq as MAM serves it (the inner <message/>, kept
 * alive through the returned outer stanza in *outer). */
static xmpp_stanza_t *mam_one(it_raw *rc, long long seq, xmpp_stanza_t **outer)
{
    char qid[40], xml[512];
    it_random_hex(qid, 8);
    snprintf(xml, sizeof xml,
             "<query xmlns='%s' queryid='%s'><set xmlns='%s'><after>%lld</after><max>1</max>"
             "</set></query>",
             IT_NS_MAM, qid, IT_NS_RSM, seq - 1);
    xmpp_stanza_t *fin = iq(rc, "set", xml);
    it_check_result(fin, "MAM query");
    xmpp_stanza_release(fin);
    *outer = it_raw_expect(rc, match_mam_of, qid, IT_TIMEOUT_MS, "the MAM result");
    xmpp_stanza_t *res = xmpp_stanza_get_child_by_name_and_ns(*outer, "result", IT_NS_MAM);
    IT_CHECK(strtoll(attr(res, "id"), NULL, 10) == seq, "MAM returned %s, not %lld",
             attr(res, "id"), seq);
    xmpp_stanza_t *fwd = xmpp_stanza_get_child_by_name_and_ns(res, "forwarded", NS_FORWARD);
    return fwd ? xmpp_stanza_get_child_by_name(fwd, "message") : NULL;
}

static truth *truth_of(long long seq)
{
    for (size_t i = 0; i < nmsgs; i++)
        if (msgs[i].seq == seq) return &msgs[i];
    return NULL;
}

/* ---- compaction ---- */

typedef struct lease {
    char id[24];
    uint64_t segment;
    uint32_t gen, first, last;
    long count;
    int64_t expires_ms;
} lease;

static void compact(it_raw *rc, lease *out)
{
    xmpp_stanza_t *st = iq(rc, "set", "<compact xmlns='" NS_SEARCH "'/>");
    it_check_result(st, "a compaction lease");
    xmpp_stanza_t *l = child(st, "lease");
    snprintf(out->id, sizeof out->id, "%s", attr(l, "id"));
    out->segment = strtoull(attr(l, "segment"), NULL, 10);
    out->gen = (uint32_t)strtoul(attr(l, "gen"), NULL, 10);
    out->first = (uint32_t)strtoul(attr(l, "first"), NULL, 10);
    out->last = (uint32_t)strtoul(attr(l, "last"), NULL, 10);
    out->count = strtol(attr(l, "count"), NULL, 10);
    char *x = it_stanza_xml(st);
    IT_CHECK(*out->id && out->segment > 0 && out->gen > 0 && out->first > 0 &&
                 out->last >= out->first && *attr(l, "count"),
             "malformed lease: %s", x);
    /* XEP-0082 UTC: the seconds are close enough. */
    struct tm tm = {0};
    IT_CHECK(sscanf(attr(l, "expires"), "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon,
                    &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) == 6,
             "expires: %s", x);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    out->expires_ms = (int64_t)timegm(&tm) * 1000;
    free(x);
    xmpp_stanza_release(st);
}

/* Every message of the lease through <fetch/> pages of max (ascending,
 * complete at the end): their seqs into seqs. */
static size_t fetch_all(it_raw *rc, const lease *l, int max, long long *seqs)
{
    size_t n = 0;
    long long after = 0;
    for (int pages = 0;; pages++) {
        IT_CHECK(pages < MAX_MSGS, "fetch never completes");
        char xml[256];
        snprintf(xml, sizeof xml, "<fetch xmlns='%s' lease='%s' after='%lld' max='%d'/>",
                 NS_SEARCH, l->id, after, max);
        xmpp_stanza_t *st = iq(rc, "get", xml);
        it_check_result(st, "a fetch");
        xmpp_stanza_t *res = child(st, "result");
        size_t k = 0;
        char *x = it_stanza_xml(st);
        for (xmpp_stanza_t *f = xmpp_stanza_get_children(res); f; f = xmpp_stanza_get_next(f)) {
            if (!xmpp_stanza_is_tag(f) || strcmp(xmpp_stanza_get_name(f), "forwarded") != 0)
                continue;
            xmpp_stanza_t *m = xmpp_stanza_get_child_by_name(f, "message");
            xmpp_stanza_t *sid =
                m ? xmpp_stanza_get_child_by_name_and_ns(m, "stanza-id", IT_NS_SID) : NULL;
            IT_CHECK(sid && xmpp_stanza_get_child_by_name_and_ns(m, "sealed", IT_NS),
                     "fetched item is not an archived message: %s", x);
            long long seq = strtoll(attr(sid, "id"), NULL, 10);
            IT_CHECK(seq > after, "fetch not ascending: %s", x);
            after = seq;
            seqs[n++] = seq;
            k++;
        }
        IT_CHECK(k <= (size_t)max, "fetch page over max: %s", x);
        bool complete = strcmp(attr(res, "complete"), "true") == 0;
        free(x);
        xmpp_stanza_release(st);
        if (complete) break;
        IT_CHECK(k > 0, "an empty fetch page that is not complete");
    }
    return n;
}

/* The segment's blocks from the truth of seqs, keyed by the lease's last
 * batch. */
static unsigned char *build_blocks(const lease *l, const long long *seqs, size_t n,
                                   size_t *nblocks)
{
    sr_sse_doc *docs = calloc(n ? n : 1, sizeof *docs);
    for (size_t i = 0; i < n; i++) {
        truth *t = truth_of(seqs[i]);
        IT_CHECK(t != NULL && !t->retracted, "fetched message %lld is not a live one of ours",
                 seqs[i]);
        docs[i].seq = (uint64_t)seqs[i];
        docs[i].kws = t->kws;
    }
    unsigned char *blocks = NULL;
    IT_CHECK(sr_sse_segment_build(kg[l->gen], l->gen, l->last, l->segment, docs, n, &blocks,
                                  nblocks) == SR_E2E_OK,
             "segment build");
    free(docs);
    return blocks;
}

static xmpp_stanza_t *send_part(it_raw *rc, const char *lease_id, const unsigned char *blocks,
                                size_t nblocks)
{
    char *b64 = it_b64(blocks, nblocks * SR_SSE_SEGMENT_BLOCK_BYTES);
    size_t n = strlen(b64) + 200;
    char *xml = malloc(n);
    snprintf(xml, n, "<segment-part xmlns='%s' lease='%s'>%s</segment-part>", NS_SEARCH, lease_id,
             b64);
    xmpp_stanza_t *st = iq(rc, "set", xml);
    free(xml);
    free(b64);
    return st;
}

static xmpp_stanza_t *send_commit(it_raw *rc, const char *lease_id)
{
    char xml[200];
    snprintf(xml, sizeof xml, "<segment-commit xmlns='%s' lease='%s'/>", NS_SEARCH, lease_id);
    return iq(rc, "set", xml);
}

/* Lease, fetch, build, upload (in two parts if it has 2+ blocks) and
 * commit; checks what the commit did. Returns the lease. */
static lease compact_all(it_raw *rc, long expect_count)
{
    lease l;
    compact(rc, &l);
    if (expect_count >= 0)
        IT_CHECK(l.count == expect_count, "lease counts %ld messages, expected %ld", l.count,
                 expect_count);
    long long seqs[MAX_MSGS];
    size_t n = fetch_all(rc, &l, 3, seqs);
    IT_CHECK((long)n == l.count, "fetched %zu of %ld", n, l.count);
    size_t nblocks = 0;
    unsigned char *blocks = build_blocks(&l, seqs, n, &nblocks);
    size_t half = nblocks / 2;
    if (half) {
        xmpp_stanza_t *st = send_part(rc, l.id, blocks, half);
        it_check_result(st, "segment part 1");
        xmpp_stanza_release(st);
    }
    if (nblocks - half) {
        xmpp_stanza_t *st = send_part(rc, l.id, blocks + half * SR_SSE_SEGMENT_BLOCK_BYTES,
                                      nblocks - half);
        it_check_result(st, "segment part 2");
        xmpp_stanza_release(st);
    }
    IT_CHECK(pgv("SELECT count(*) FROM search_blocks b JOIN search_leases x ON x.room_id = "
                 "b.room_id AND x.segment = b.segment WHERE b.room_id = " ROOM_ID
                 " AND x.lease = $2",
                 l.id) == (long long)nblocks,
             "staged blocks are not the %zu uploaded", nblocks);
    snapshot before = snap();
    xmpp_stanza_t *st = send_commit(rc, l.id);
    it_check_result(st, "segment commit");
    xmpp_stanza_release(st);
    char seg[24];
    snprintf(seg, sizeof seg, "%" PRIu64, l.segment);
    IT_CHECK(pgv("SELECT count(*) FROM search_blocks WHERE room_id = " ROOM_ID " AND segment = $2",
                 seg) == (long long)nblocks,
             "segment %s does not hold its %zu blocks", seg, nblocks);
    IT_CHECK(pgv("SELECT state FROM search_segments WHERE room_id = " ROOM_ID " AND segment = $2",
                 seg) == 1,
             "segment %s is not live", seg);
    IT_CHECK(pgv("SELECT cardinality(seqs) FROM search_segments WHERE room_id = " ROOM_ID
                 " AND segment = $2",
                 seg) == l.count,
             "segment %s does not list its messages", seg);
    IT_CHECK(staged_blocks() == 0 && count_where("search_leases", NULL) == 0,
             "the commit left staging or the lease behind");
    IT_CHECK(count_where("search_entries", NULL) <= before.entries,
             "the commit added entries");
    free(blocks);
    return l;
}

/* ---- the scenario ---- */

int main(void)
{
    const it_env *env = it_init("it_search_component");
    if (sodium_init() < 0) return 1;
    for (int g = 1; g < MAX_GENS; g++) randombytes_buf(kg[g], 32);
    it_raw *alice = it_raw_connect("alice"), *bob = it_raw_connect("bob"),
           *carol = it_raw_connect("carol"), *mallory = it_raw_connect("mallory");
    it_raw_register(alice);
    it_raw_register(bob);
    it_raw_register(carol);
    it_room_create(alice, &room, "search");
    it_room_change(alice, &room, SR_OP_ADD, "bob", SR_ROLE_MEMBER);
    it_room_change(alice, &room, SR_OP_ADD, "carol", SR_ROLE_MEMBER);
    it_raw *senders[2] = {alice, bob};
    it_raw_e2e_ready(alice, &room, senders, 2);
    it_raw_join_ok(alice, room.jid, "alice");
    it_raw_join_ok(bob, room.jid, "bob");

    /* ---- disco ---- */
    xmpp_stanza_t *st = iq(alice, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>");
    it_check_result(st, "disco#info");
    int features = 0;
    xmpp_stanza_t *q = xmpp_stanza_get_child_by_name(st, "query");
    for (xmpp_stanza_t *f = q ? xmpp_stanza_get_children(q) : NULL; f; f = xmpp_stanza_get_next(f))
        if (xmpp_stanza_is_tag(f) && strcmp(xmpp_stanza_get_name(f), "feature") == 0)
            features += strcmp(attr(f, "var"), NS_SEARCH) == 0 ||
                        strcmp(attr(f, "var"), NS_RETRACT) == 0;
    IT_CHECK(features == 2, "the room does not advertise search and retraction");
    xmpp_stanza_release(st);
    char *x;

    /* ---- non-members ---- */
    static const struct {
        const char *type, *xml;
    } requests[] = {
        {"get", "<state xmlns='" NS_SEARCH "'/>"},
        {"set", "<keyring xmlns='" NS_SEARCH "' epoch='1' gen='1'>AAAA</keyring>"},
        {"set", "<batch xmlns='" NS_SEARCH "'/>"},
        {"get", "<search xmlns='" NS_SEARCH "' hi='1'><keyword><cover gen='1'>AAAA</cover>"
                "</keyword></search>"},
        {"set", "<compact xmlns='" NS_SEARCH "'/>"},
        {"get", "<fetch xmlns='" NS_SEARCH "' lease='1'/>"},
        {"set", "<segment-part xmlns='" NS_SEARCH "' lease='1'>AAAA</segment-part>"},
        {"set", "<segment-commit xmlns='" NS_SEARCH "' lease='1'/>"},
    };
    for (size_t i = 0; i < sizeof requests / sizeof requests[0]; i++) {
        snapshot before = snap();
        st = iq(mallory, requests[i].type, requests[i].xml);
        it_check_error(st, "auth", "forbidden", "not-member", requests[i].xml);
        xmpp_stanza_release(st);
        same(before, requests[i].xml);
    }

    /* ---- state, keyring ---- */
    st = iq(alice, "get", "<state xmlns='" NS_SEARCH "'/>");
    it_check_result(st, "state");
    xmpp_stanza_t *s = child(st, "state");
    IT_CHECK(strcmp(attr(s, "gen"), "0") == 0 && strcmp(attr(s, "need-gen"), "false") == 0 &&
                 strcmp(attr(s, "batch"), "0") == 0 && !xmpp_stanza_get_child_by_name(s, "keyring"),
             "a new room's search state");
    xmpp_stanza_release(st);
    refused_iq(alice, "set", "<batch xmlns='" NS_SEARCH "'/>", "wait", "unexpected-request",
               "keyring-needed", "a batch before any keyring");

    uint64_t e1 = room.epoch;
    char *ring1 = keyring_b64(e1, room.epoch_secret, room.epoch_hash, 1);
    char xml[1024];
    snprintf(xml, sizeof xml, "<keyring xmlns='%s' epoch='%" PRIu64 "' gen='1'>%s</keyring>",
             NS_SEARCH, e1 + 1, ring1);
    refused_iq(alice, "set", xml, "modify", "not-acceptable", "stale-keyring",
               "a keyring for an epoch that is not current");
    snprintf(xml, sizeof xml, "<keyring xmlns='%s' epoch='%" PRIu64 "' gen='2'>%s</keyring>",
             NS_SEARCH, e1, ring1);
    refused_iq(alice, "set", xml, "modify", "bad-request", NULL, "generation 2 with none before");
    snprintf(xml, sizeof xml, "<keyring xmlns='%s' epoch='%" PRIu64 "' gen='1'>AAAA</keyring>",
             NS_SEARCH, e1);
    refused_iq(alice, "set", xml, "modify", "bad-request", NULL, "a keyring too short");
    snprintf(xml, sizeof xml, "<keyring xmlns='%s' epoch='%" PRIu64 "' gen='1'>%s*</keyring>",
             NS_SEARCH, e1, ring1);
    refused_iq(alice, "set", xml, "modify", "bad-request", NULL, "a keyring in bad base64");
    st = send_keyring(bob, e1, 1, ring1);
    it_check_result(st, "the first keyring (by bob)");
    xmpp_stanza_release(st);
    IT_CHECK(room_col("search_gen") == 1 && count_where("search_keyrings", NULL) == 1,
             "the keyring is not stored");
    snapshot before = snap();
    st = send_keyring(alice, e1, 1, ring1);
    it_check_error(st, "cancel", "conflict", NULL, "a second keyring for the epoch");
    xmpp_stanza_release(st);
    same(before, "a second keyring");
    st = iq(alice, "get", "<state xmlns='" NS_SEARCH "'/>");
    s = child(st, "state");
    xmpp_stanza_t *kr = xmpp_stanza_get_child_by_name(s, "keyring");
    char *krt = kr ? xmpp_stanza_get_text(kr) : NULL;
    IT_CHECK(strcmp(attr(s, "gen"), "1") == 0 && kr && strtoull(attr(kr, "epoch"), NULL, 10) == e1 &&
                 krt && strcmp(krt, ring1) == 0,
             "state does not return the keyring");
    xmpp_free(xmpp_stanza_get_context(st), krt);
    xmpp_stanza_release(st);

    /* ---- batches and indexed messages ---- */
    uint32_t b1 = take_batch(alice, 1);
    uint32_t b2 = take_batch(alice, 1);
    IT_CHECK(b2 == b1 + 1 && batch_state(b1) == 1, "a new batch does not seal the previous one");
    uint32_t b3 = take_batch(bob, 1);
    say_indexed(alice, "apple banana", 1, b2, NULL);
    say_indexed(alice, "Apple cherry", 1, b2, NULL);
    say_indexed(alice, "banana cherry", 1, b2, NULL);
    say_indexed(bob, "apple durian", 1, b3, NULL);
    say_indexed(alice, "apple banana cherry", 1, b2, NULL);
    say_indexed(bob, "banana", 1, b3, NULL);
    say_indexed(alice, "nothing in common", 1, b2, NULL);

    refused_into(alice, "apple", 1, b1, "entries into a sealed batch");
    refused_into(alice, "apple", 1, b3, "entries into another session's batch");
    refused_into(alice, "apple", 1, b3 + 5, "entries into no batch");
    unsigned char junk[16 * 9000];
    randombytes_buf(junk, sizeof junk);
    char *b64 = it_b64(junk, 16 * 7);
    char *ix = index_xml(b2, b64);
    bad_index(alice, ix, "7 entries");
    free(ix);
    free(b64);
    b64 = it_b64(junk, 16 * 8 + 5);
    ix = index_xml(b2, b64);
    bad_index(alice, ix, "entries of 16 bytes and 5 more");
    free(ix);
    free(b64);
    b64 = it_b64(junk, 16 * 8200);
    ix = index_xml(b2, b64);
    bad_index(alice, ix, "8200 entries");
    free(ix);
    free(b64);
    bad_index(alice, "<index xmlns='" NS_SEARCH "' batch='2'>not base64!</index>", "bad base64");
    bad_index(alice, "<index xmlns='" NS_SEARCH "' batch='0'>AAAA</index>", "batch 0");
    b64 = it_b64(junk, 16 * 8);
    snprintf(xml, sizeof xml, "<index xmlns='%s' batch='4294967296'>%s</index>", NS_SEARCH, b64);
    bad_index(alice, xml, "batch 2^32");
    free(b64);
    /* The largest index is taken. */
    b64 = it_b64(junk, 16 * 8192);
    ix = index_xml(b2, b64);
    {
        char origin[40];
        it_random_hex(origin, 12);
        long long entries = count_where("search_entries", NULL);
        st = send_message(alice, origin, ix);
        IT_CHECK(strcmp(attr(st, "type"), "groupchat") == 0, "a message with 8192 entries: %s",
                 it_stanza_xml(st));
        xmpp_stanza_release(st);
        IT_CHECK(count_where("search_entries", NULL) == entries + 8192, "8192 entries not stored");
        /* A resend of it (same origin-id), its batch sealed meanwhile by a
         * new one: acknowledged, nothing added. */
        uint32_t b = take_batch(alice, 1);
        snapshot pre = snap();
        st = send_message(alice, origin, ix);
        x = it_stanza_xml(st);
        IT_CHECK(strcmp(attr(st, "type"), "groupchat") == 0, "a resend was refused: %s", x);
        free(x);
        xmpp_stanza_release(st);
        same(pre, "a resend");
        /* Random labels keep the truth's counters as they are; b is the
         * writer's batch from now on. */
        b2 = b;
    }
    free(ix);
    free(b64);
    say_indexed(alice, "apple fig", 1, b2, NULL);

    /* ---- searches ---- */
    uint32_t last = (uint32_t)room_col("search_last_batch");
    search_all(alice, "apple", 1, last, 50);
    search_all(bob, "banana cherry", 1, last, 50);
    search_all(alice, "apple", 1, last, 2);
    search_all(alice, "cherry", 1, last, 1);
    search_all(alice, "durian fig", 1, last, 50);
    {
        page p;
        search_page(alice, "apple", 1, last, 50, 0, &p);
        IT_CHECK(p.complete && p.batch == last && p.n > 0, "search attributes");
        search_page(alice, "zebra", 1, last, 50, 0, &p);
        IT_CHECK(p.complete && p.n == 0, "a keyword nobody wrote");
    }
    /* Forward privacy: those searches reached every batch, so alice's
     * open one is sealed and her next message into it refused. */
    IT_CHECK(batch_state(b2) == 1 && batch_state(b3) == 1, "a search did not seal its batches");
    refused_into(alice, "apple late", 1, b2, "entries into a batch a search reached");
    uint32_t b4 = take_batch(alice, 1);
    say_indexed(alice, "apple elderberry", 1, b4, NULL);
    /* Bad searches change nothing: b4 stays open. */
    bad_search(alice, "<search xmlns='" NS_SEARCH "' hi='1'/>", "no keywords");
    x = search_xml("apple", 1, b4 + 1, 0, 0);
    bad_search(alice, x, "hi past the last batch");
    free(x);
    {
        unsigned char w[NODE_WIRE] = {33, 0, 0, 0, 1};
        randombytes_buf(w + 5, 32);
        x = one_cover_search(b4, w, sizeof w, 1);
        bad_search(alice, x, "depth 33");
        free(x);
        w[0] = 2;
        w[4] = 4;
        x = one_cover_search(b4, w, sizeof w, 1);
        bad_search(alice, x, "prefix 4 at depth 2");
        free(x);
        w[0] = 31;
        w[4] = 0; /* batches 0 and 1: 0 is outside [1, hi] */
        x = one_cover_search(b4, w, sizeof w, 1);
        bad_search(alice, x, "a node reaching batch 0");
        free(x);
        w[0] = 32;
        w[4] = (unsigned char)(b4 + 1);
        x = one_cover_search(b4, w, sizeof w, 1);
        bad_search(alice, x, "a node past hi");
        free(x);
        x = one_cover_search(b4, w, sizeof w - 1, 1);
        bad_search(alice, x, "a node of 36 bytes");
        free(x);
        w[4] = 1;
        x = one_cover_search(b4, w, sizeof w, 0);
        bad_search(alice, x, "generation 0");
        free(x);
    }
    bad_search(alice,
               "<search xmlns='" NS_SEARCH "' hi='1'><keyword><cover gen='1'>***</cover>"
               "</keyword></search>",
               "a cover in bad base64");
    x = search_xml("a b c d e f g h i", 1, b4, 0, 0);
    bad_search(alice, x, "9 keywords");
    free(x);
    x = search_xml("apple", 1, b4, 201, 0);
    bad_search(alice, x, "max 201");
    free(x);
    x = bulky_search(1, 65, 1);
    bad_search(alice, x, "65 covers");
    free(x);
    x = bulky_search(8, 64, 3);
    IT_CHECK(strlen(x) > 65536, "the bulky search is only %zu bytes", strlen(x));
    bad_search(alice, x, "a search over 64 KiB");
    free(x);
    x = bulky_search(8, 64, 1);
    IT_CHECK(strlen(x) < 65536, "the largest search is %zu bytes", strlen(x));
    st = iq(alice, "get", x);
    it_check_result(st, "8 keywords of 64 covers under 64 KiB");
    xmpp_stanza_release(st);
    free(x);
    IT_CHECK(batch_state(b4) == 0, "a search of batch 1 sealed batch %u", b4);

    /* ---- leaving seals the session's batch ---- */
    uint32_t b5 = take_batch(bob, 1);
    it_raw_leave(bob, room.jid, "bob");
    for (int i = 0; i < 100 && batch_state(b5) != 1; i++) it_sleep_ms(50);
    IT_CHECK(batch_state(b5) == 1, "leaving did not seal batch %u", b5);
    it_raw_join_ok(bob, room.jid, "bob");
    refused_into(bob, "banana", 1, b5, "entries into a batch its owner left");
    uint32_t b6 = take_batch(bob, 1);
    say_indexed(bob, "cherry fig", 1, b6, NULL);

    /* ---- a removal: need-gen ---- */
    it_room_change(alice, &room, SR_OP_REMOVE, "carol", SR_ROLE_MEMBER);
    st = iq(alice, "get", "<state xmlns='" NS_SEARCH "'/>");
    IT_CHECK(strcmp(attr(child(st, "state"), "need-gen"), "true") == 0,
             "a removal does not set need-gen");
    xmpp_stanza_release(st);
    refused_iq(bob, "set", "<batch xmlns='" NS_SEARCH "'/>", "wait", "unexpected-request",
               "keyring-needed", "a batch while need-gen");
    /* Entries need a fresh epoch's data key first; then the old batch
     * refuses them while the room needs a generation. */
    uint64_t e_old = room.epoch;
    unsigned char s_old[32], h_old[32];
    memcpy(s_old, room.epoch_secret, 32);
    memcpy(h_old, room.epoch_hash, 32);
    it_raw_epoch(alice, &room);
    it_raw_datakey(alice, &room);
    it_raw_datakey(bob, &room);
    refused_into(bob, "cherry", 1, b6, "entries while need-gen");
    char *ring_old = keyring_b64(e_old, s_old, h_old, 2);
    st = send_keyring(alice, e_old, 2, ring_old);
    check_search_error(st, "modify", "not-acceptable", "stale-keyring", "the old epoch's keyring");
    xmpp_stanza_release(st);
    free(ring_old);
    char *ring_same = keyring_b64(room.epoch, room.epoch_secret, room.epoch_hash, 1);
    before = snap();
    st = send_keyring(alice, room.epoch, 1, ring_same);
    check_search_error(st, "modify", "not-acceptable", "keyring-needed",
                       "the same generation after a removal");
    xmpp_stanza_release(st);
    same(before, "the same generation after a removal");
    free(ring_same);
    IT_CHECK(batch_state(b4) == 0 && batch_state(b6) == 0, "open batches before the new keyring");
    char *ring2 = keyring_b64(room.epoch, room.epoch_secret, room.epoch_hash, 2);
    st = send_keyring(alice, room.epoch, 2, ring2);
    it_check_result(st, "the keyring with generation 2");
    xmpp_stanza_release(st);
    free(ring2);
    IT_CHECK(room_col("search_gen") == 2 && room_col("search_need_gen::int") == 0 &&
                 count_where("search_batches", "state = 0") == 0,
             "generation 2 did not clear need-gen and seal every open batch");
    refused_into(alice, "apple", 1, b4, "entries into a batch sealed by a new generation");

    /* ---- generation 2 ---- */
    uint32_t g2[9];
    static const char *const g2text[9] = {
        "apple grape one", "grape two",         "apple grape three", "banana grape four",
        "apple five",      "grape apple six",   "cherry seven",      "apple grape eight",
        "apple grape nine"};
    for (int i = 0; i < 9; i++) {
        g2[i] = take_batch(alice, 2);
        say_indexed(alice, g2text[i], 2, g2[i], NULL);
    }
    /* A batch of an older generation refuses entries even when open. */
    char bn[16];
    snprintf(bn, sizeof bn, "%u", b4);
    pgv("UPDATE search_batches SET state = 0 WHERE room_id = " ROOM_ID " AND batch = $2", bn);
    refused_into(alice, "apple", 1, b4, "entries into an open batch of generation 1");
    pgv("UPDATE search_batches SET state = 1 WHERE room_id = " ROOM_ID " AND batch = $2", bn);
    last = (uint32_t)room_col("search_last_batch");
    search_all(alice, "apple", 2, last, 4);
    search_all(bob, "apple grape", 2, last, 50);
    search_all(bob, "banana", 2, last, 50);

    /* ---- retraction ---- */
    truth *tv = NULL;
    for (size_t i = 0; i < nmsgs; i++)
        if (strcmp(msgs[i].text, "grape apple six") == 0) tv = &msgs[i];
    IT_CHECK(tv != NULL, "no victim");
    long long victim = tv->seq;
    st = retract(bob, victim);
    it_check_error(st, "auth", "forbidden", NULL, "bob retracting alice's message");
    xmpp_stanza_release(st);
    IT_CHECK(count_where("messages", "retracted_at IS NOT NULL") == 0, "bob retracted something");
    st = retract(alice, 999999);
    it_check_error(st, "cancel", "item-not-found", NULL, "retracting no message");
    xmpp_stanza_release(st);
    char vs[24];
    snprintf(vs, sizeof vs, "%lld", victim);
    it_raw_clear(bob);
    st = retract(alice, victim);
    x = it_stanza_xml(st);
    IT_CHECK(strcmp(attr(st, "type"), "groupchat") == 0 &&
                 xmpp_stanza_get_child_by_name_and_ns(st, "retract", NS_RETRACT),
             "the retraction is not reflected to its sender: %s", x);
    free(x);
    xmpp_stanza_release(st);
    st = it_raw_expect(bob, match_retract_of, vs, IT_TIMEOUT_MS, "the retraction at bob");
    xmpp_stanza_release(st);
    tv->retracted = true;
    IT_CHECK(pgv("SELECT length(payload) FROM messages WHERE room_id = " ROOM_ID " AND seq = $2",
                 vs) == 0 &&
                 count_where("messages", "retracted_at IS NOT NULL") == 1,
             "the retracted message keeps its payload");
    search_all(alice, "apple", 2, last, 50);
    search_all(alice, "grape", 2, last, 3);
    xmpp_stanza_t *outer = NULL, *inner = mam_one(alice, victim, &outer);
    xmpp_stanza_t *tomb =
        inner ? xmpp_stanza_get_child_by_name_and_ns(inner, "retracted", NS_RETRACT) : NULL;
    x = it_stanza_xml(outer);
    IT_CHECK(tomb && strcmp(attr(tomb, "id"), vs) == 0 && *attr(tomb, "stamp") &&
                 !xmpp_stanza_get_child_by_name_and_ns(inner, "sealed", IT_NS),
             "MAM does not show a tombstone: %s", x);
    free(x);
    xmpp_stanza_release(outer);

    /* ---- compaction ---- */
    refused_iq(alice, "set", "<segment-commit xmlns='" NS_SEARCH "' lease='424242'/>", "cancel",
               "item-not-found", "lease-expired", "committing no lease");
    /* Generation 2 has 9 sealed batches (the searches sealed the last);
     * generation 1 only 7: the lease takes g2[0..8], one message of them
     * retracted. */
    lease l1;
    compact(alice, &l1);
    IT_CHECK(l1.gen == 2 && l1.first == g2[0] && l1.last == g2[8] && l1.count == 8,
             "lease gen %u batches %u-%u count %ld", l1.gen, l1.first, l1.last, l1.count);
    IT_CHECK(l1.expires_ms > it_wall_ms() + 50000 && l1.expires_ms < it_wall_ms() + 70000,
             "the lease does not last 60 s");
    refused_iq(alice, "set", "<compact xmlns='" NS_SEARCH "'/>", "cancel", "item-not-found", NULL,
               "a second lease with nothing free");
    snprintf(xml, sizeof xml, "<fetch xmlns='%s' lease='%s'/>", NS_SEARCH, l1.id);
    refused_iq(bob, "get", xml, "cancel", "item-not-found", "lease-expired",
               "fetching another member's lease");
    long long seqs[MAX_MSGS];
    size_t nf = fetch_all(alice, &l1, 3, seqs);
    IT_CHECK((long)nf == l1.count, "fetched %zu of %ld", nf, l1.count);
    size_t nblocks = 0;
    unsigned char *blocks = build_blocks(&l1, seqs, nf, &nblocks);
    IT_CHECK(nblocks >= 2, "only %zu blocks", nblocks);
    before = snap();
    st = send_part(bob, l1.id, blocks, 1);
    check_search_error(st, "cancel", "item-not-found", "lease-expired", "bob's part");
    xmpp_stanza_release(st);
    same(before, "bob's part");
    snprintf(xml, sizeof xml, "<segment-part xmlns='%s' lease='%s'>AAAA</segment-part>", NS_SEARCH,
             l1.id);
    refused_iq(alice, "set", xml, "modify", "bad-request", NULL, "a part of 3 bytes");
    st = send_part(alice, l1.id, blocks, 1);
    it_check_result(st, "part 1");
    xmpp_stanza_release(st);
    st = send_part(alice, l1.id, blocks, 1);
    it_check_result(st, "part 1 again");
    xmpp_stanza_release(st);
    st = send_part(alice, l1.id, blocks + SR_SSE_SEGMENT_BLOCK_BYTES, nblocks - 1);
    it_check_result(st, "part 2");
    xmpp_stanza_release(st);
    IT_CHECK(staged_blocks() == (long long)nblocks, "staged %lld of %zu",
             staged_blocks(), nblocks);
    /* Staged blocks change no search. */
    search_all(alice, "apple grape", 2, last, 50);
    before = snap();
    st = send_commit(bob, l1.id);
    check_search_error(st, "cancel", "item-not-found", "lease-expired", "bob's commit");
    xmpp_stanza_release(st);
    same(before, "bob's commit");
    long long entries_before = count_where("search_entries", NULL);
    char range[96];
    snprintf(range, sizeof range, "batch BETWEEN %u AND %u", l1.first, l1.last);
    long long moved = count_where("search_entries", range);
    st = send_commit(alice, l1.id);
    it_check_result(st, "the commit");
    xmpp_stanza_release(st);
    IT_CHECK(count_where("search_entries", NULL) == entries_before - moved &&
                 count_where("search_entries", range) == 0,
             "the commit did not delete the batches' entries");
    snprintf(range, sizeof range, "batch BETWEEN %u AND %u AND state = 2", l1.first, l1.last);
    IT_CHECK(count_where("search_batches", range) == 9, "the batches are not compacted");
    IT_CHECK(count_where("search_segments", "state = 1 AND level = 1") == 1 &&
                 count_where("search_blocks", NULL) == (long long)nblocks &&
                 staged_blocks() == 0 && count_where("search_leases", NULL) == 0,
             "the segment is not live with its blocks");
    free(blocks);
    search_all(alice, "apple", 2, last, 50);
    search_all(bob, "apple grape", 2, last, 2);
    search_all(bob, "grape", 2, last, 50);
    search_all(bob, "cherry", 2, last, 50);
    st = send_commit(alice, l1.id);
    check_search_error(st, "cancel", "item-not-found", "lease-expired", "a commit again");
    xmpp_stanza_release(st);

    /* An expired lease: its part and commit are refused, its staging goes,
     * nothing else changes; a new lease takes the same batches. */
    uint32_t more[9];
    for (int i = 0; i < 9; i++) {
        more[i] = take_batch(alice, 2);
        if (i == 0) say_indexed(alice, "apple kiwi", 2, more[0], NULL);
    }
    lease l2;
    compact(alice, &l2);
    IT_CHECK(l2.first == more[0] && l2.last == more[7] && l2.count == 1, "lease 2: %u-%u count %ld",
             l2.first, l2.last, l2.count);
    nf = fetch_all(alice, &l2, 100, seqs);
    blocks = build_blocks(&l2, seqs, nf, &nblocks);
    st = send_part(alice, l2.id, blocks, nblocks);
    it_check_result(st, "lease 2's part");
    xmpp_stanza_release(st);
    IT_CHECK(staged_blocks() == (long long)nblocks, "lease 2 staged nothing");
    pgv("UPDATE search_leases SET expires = now() - interval '1 second' WHERE room_id = " ROOM_ID
        " AND lease = $2",
        l2.id);
    snapshot pre = snap();
    st = send_commit(alice, l2.id);
    check_search_error(st, "cancel", "item-not-found", "lease-expired", "an expired commit");
    xmpp_stanza_release(st);
    snapshot post = snap();
    IT_CHECK(post.staged == 0 && post.leases == 0, "the expired lease left its staging");
    post.staged = pre.staged;
    post.leases = pre.leases;
    IT_CHECK(memcmp(&pre, &post, sizeof pre) == 0, "an expired commit changed the index");
    st = send_part(alice, l2.id, blocks, nblocks);
    check_search_error(st, "cancel", "item-not-found", "lease-expired", "an expired part");
    xmpp_stanza_release(st);
    IT_CHECK(staged_blocks() == 0, "an expired part staged blocks");
    free(blocks);
    last = (uint32_t)room_col("search_last_batch");
    search_all(alice, "apple", 2, last, 50);
    /* That search sealed more[8] too. */
    lease l3 = compact_all(alice, 1);
    IT_CHECK(l3.first == l2.first && l3.last == more[8], "the new lease takes other batches");
    search_all(alice, "apple", 2, last, 50);

    /* Two more level-1 segments, of one message in 9 batches (8 or 9
     * sealed) each; the first message has no keyword, so its segment is
     * the builder's one dummy block, which the room stages and commits
     * like any. Then four segments of level 1 merge into one of level 2. */
    uint32_t top = 0;
    char seg_id[24];
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 9; i++) {
            uint32_t b = take_batch(alice, 2);
            if (i == 0) say_indexed(alice, k == 0 ? ":-) !!! ..." : "fig tree", 2, b, NULL);
        }
        lease lk = compact_all(alice, 1);
        snprintf(seg_id, sizeof seg_id, "%" PRIu64, lk.segment);
        IT_CHECK(k > 0 || pgv("SELECT count(*) FROM search_blocks WHERE room_id = " ROOM_ID
                              " AND segment = $2",
                              seg_id) == 1,
                 "the segment of a message without keywords is not one block");
        top = lk.last;
    }
    IT_CHECK(count_where("search_segments", "state = 1 AND level = 1") == 4,
             "four live level-1 segments");
    /* No batches are due (the last one is open): the four segments alone
     * make compaction due. */
    st = iq(alice, "get", "<state xmlns='" NS_SEARCH "'/>");
    IT_CHECK(strcmp(attr(child(st, "state"), "compact"), "due") == 0,
             "four live level-1 segments are not due for a merge");
    xmpp_stanza_release(st);
    long long live_msgs = 0;
    for (size_t i = 0; i < nmsgs; i++)
        live_msgs += msgs[i].gen == 2 && !msgs[i].retracted && msgs[i].batch <= top;
    lease l4 = compact_all(alice, live_msgs);
    IT_CHECK(l4.first == g2[0], "the merged segment starts at batch %u, not %u", l4.first, g2[0]);
    IT_CHECK(count_where("search_segments", "state = 1") == 1 &&
                 count_where("search_segments", "state = 1 AND level = 2") == 1 &&
                 count_where("search_segments", "state = 2") == 4,
             "the merge did not retire four segments for one of level 2");
    snprintf(seg_id, sizeof seg_id, "%" PRIu64, l4.segment);
    IT_CHECK(count_where("search_blocks", LIVE_BLOCK) ==
                 pgv("SELECT count(*) FROM search_blocks WHERE room_id = " ROOM_ID
                     " AND segment = $2",
                     seg_id),
             "a merged segment's blocks are still live");
    wait_purged("SELECT count(*) FROM search_blocks WHERE room_id = " ROOM_ID " AND segment <> $2",
                seg_id, "the merged segments' blocks");
    wait_purged("SELECT count(*) FROM search_buckets k JOIN search_batches b USING (room_id, batch) "
                "WHERE k.room_id = " ROOM_ID " AND b.state = 2",
                NULL, "the compacted batches' buckets");
    wait_purged("SELECT count(*) FROM search_purge WHERE room_id = " ROOM_ID, NULL,
                "the purge queue");
    last = (uint32_t)room_col("search_last_batch");
    search_all(alice, "apple", 2, last, 50);
    search_all(alice, "grape", 2, last, 2);
    search_all(bob, "apple kiwi", 2, last, 50);
    search_all(bob, "banana", 2, last, 50);
    search_all(bob, "fig", 2, last, 50);

    /* ---- nothing left to index: the room retires it, leasing nothing ---- */
    /* Eight level-1 segments of one message each, then nine batches, eight
     * of one message each, sealed by a search; all those messages are
     * retracted. One <compact/> retires the batches (they
     * become compacted and lose their entries), picks again and retires
     * the segments (with their blocks), makes no lease and no segment,
     * and answers item-not-found: no member has to build (and every
     * search then list) a segment of nothing. */
    long long plum[16];
    uint64_t plum_seg[8];
    for (int k = 0; k < 8; k++) {
        for (int i = 0; i < 9; i++) {
            uint32_t b = take_batch(alice, 2);
            if (i == 0) plum[k] = say_indexed(alice, "plum segment", 2, b, NULL);
        }
        plum_seg[k] = compact_all(alice, 1).segment;
    }
    uint32_t plum_b[9];
    for (int i = 0; i < 9; i++) {
        plum_b[i] = take_batch(alice, 2);
        if (i < 8) plum[8 + i] = say_indexed(alice, "plum batch", 2, plum_b[i], NULL);
    }
    last = (uint32_t)room_col("search_last_batch");
    search_all(bob, "plum", 2, last, 5);
    for (int i = 0; i < 16; i++) {
        st = retract(alice, plum[i]);
        IT_CHECK(strcmp(attr(st, "type"), "groupchat") == 0, "retracting plum %d refused", i);
        xmpp_stanza_release(st);
        truth_of(plum[i])->retracted = true;
    }
    char in_b[96], in_s[128], cond[160];
    snprintf(in_b, sizeof in_b, "batch BETWEEN %u AND %u", plum_b[0], plum_b[8]);
    snprintf(in_s, sizeof in_s, "segment BETWEEN %" PRIu64 " AND %" PRIu64, plum_seg[0],
             plum_seg[7]);
    snprintf(cond, sizeof cond, "%s AND state = 1", in_b);
    IT_CHECK(count_where("search_batches", cond) == 9 &&
                 count_where("search_entries", in_b) == 8 * 8,
             "the batches of retracted messages are not sealed with their entries");
    snprintf(cond, sizeof cond, "%s AND state = 1 AND level = 1", in_s);
    /* Two keywords of one message each: two blocks per segment. */
    IT_CHECK(count_where("search_segments", cond) == 8 && count_where("search_blocks", in_s) == 16,
             "the segments of retracted messages are not live with their blocks: %lld, %lld",
             count_where("search_segments", cond), count_where("search_blocks", in_s));
    snapshot pre_void = snap();
    long long made = count_where("search_segments", NULL);
    st = iq(alice, "set", "<compact xmlns='" NS_SEARCH "'/>");
    check_search_error(st, "cancel", "item-not-found", NULL, "compacting nothing left to index");
    xmpp_stanza_release(st);
    snprintf(cond, sizeof cond, "%s AND state = 2", in_b);
    IT_CHECK(count_where("search_batches", cond) == 9 && count_where("search_entries", in_b) == 0,
             "the batches of retracted messages were not retired with their entries");
    snprintf(cond, sizeof cond, "%s AND state = 2", in_s);
    IT_CHECK(count_where("search_segments", cond) == 8, "the segments of retracted messages "
             "were not retired");
    {
        char retired_sql[256];
        snprintf(retired_sql, sizeof retired_sql,
                 "SELECT count(*) FROM search_blocks WHERE room_id = " ROOM_ID " AND %s", in_s);
        wait_purged(retired_sql, NULL, "the blocks of the retired segments");
    }
    IT_CHECK(count_where("search_segments", NULL) == made &&
                 count_where("search_leases", NULL) == 0 &&
                 staged_blocks() == 0,
             "retiring made a lease or a segment");
    snapshot post_void = snap();
    IT_CHECK(post_void.messages == pre_void.messages &&
                 post_void.retracted == pre_void.retracted &&
                 post_void.segments == pre_void.segments - 8 && post_void.open == pre_void.open,
             "retiring changed more than the index");
    st = iq(bob, "get", "<state xmlns='" NS_SEARCH "'/>");
    IT_CHECK(!xmpp_stanza_get_attribute(child(st, "state"), "compact"),
             "compaction is still due after the retirement");
    xmpp_stanza_release(st);
    search_all(bob, "plum", 2, last, 5);
    search_all(alice, "apple", 2, last, 50);
    search_all(bob, "fig", 2, last, 50);

    /* ---- a page stops short of the XMPP server's stanza limit ---- */
    uint32_t big = take_batch(alice, 2);
    payload_len = 60000;
    for (int i = 0; i < 6; i++) say_indexed(alice, "huge payload", 2, big, NULL);
    payload_len = IT_PAYLOAD_MIN + 16;
    last = (uint32_t)room_col("search_last_batch");
    {
        page p;
        search_page(alice, "huge", 2, last, 50, 0, &p);
        IT_CHECK(p.n >= 1 && p.n < 6 && !p.complete,
                 "a page of six 60 kB messages has %zu (complete %d)", p.n, (int)p.complete);
    }
    search_all(alice, "huge", 2, last, 50);

    /* ---- a batch is full at 65,536 entries ---- */
    uint32_t full = take_batch(alice, 2);
    snprintf(bn, sizeof bn, "%u", full);
    pgv("UPDATE search_batches SET entries = 65530 WHERE room_id = " ROOM_ID " AND batch = $2", bn);
    /* Below the cap, it takes a message even one that carries it past. */
    say_indexed(alice, "apple last", 2, full, NULL);
    IT_CHECK(pgv("SELECT entries FROM search_batches WHERE room_id = " ROOM_ID " AND batch = $2",
                 bn) == 65538,
             "the message that filled batch %u was not counted", full);
    /* Full: refused, and left as it was (same() counts the open batches). */
    refused_into(alice, "apple later", 2, full, "entries into a full batch");
    refused_into(alice, "apple", 2, full, "a small message into a full batch");
    IT_CHECK(batch_state(full) == 0, "refusing a message sealed full batch %u", full);
    /* What the client does on <batch-sealed/>: a new batch, which seals it. */
    uint32_t after_full = take_batch(alice, 2);
    IT_CHECK(batch_state(full) == 1, "taking batch %u left full batch %u open", after_full, full);
    say_indexed(alice, "apple after full", 2, after_full, NULL);

    /* ---- a message refused for another reason seals its batch ---- */
    {
        /* Probes stop at the first missing counter: had the batch stayed
         * open, a later message could be stored behind this one's gap. */
        uint32_t gap = take_batch(alice, 2);
        size_t n;
        char *gap_b64 = labels_b64("apple gap", 2, gap, &n), origin[40];
        char *gap_x = index_xml(gap, gap_b64);
        it_random_hex(origin, 12);
        unsigned char *bad = malloc(payload_len);
        IT_CHECK(bad != NULL, "out of memory");
        randombytes_buf(bad, payload_len);
        it_raw_fill_payload(alice, room.jid, bad, payload_len);
        bad[0] = 2; /* no such format version: bad-payload */
        char *bad_b64 = it_b64(bad, payload_len);
        free(bad);
        it_raw_send(alice,
                    "<message type='groupchat' to='%s' id='%s'><body>sealed</body>"
                    "<sealed xmlns='%s'>%s</sealed><origin-id xmlns='%s' id='%s'/>%s</message>",
                    room.jid, origin, IT_NS, bad_b64, IT_NS_SID, origin, gap_x);
        free(bad_b64);
        xmpp_stanza_t *err = it_raw_expect(alice, match_message_id, origin, IT_TIMEOUT_MS,
                                           "the answer to a malformed indexed message");
        check_search_error(err, "modify", "bad-request", "bad-payload",
                           "an indexed message with a malformed payload");
        xmpp_stanza_release(err);
        free(gap_x);
        free(gap_b64);
        uint64_t until = it_mono_ms() + 5000;
        while (batch_state(gap) != 1) {
            IT_CHECK(it_mono_ms() < until, "batch %u of a refused message was not sealed", gap);
            it_sleep_ms(10);
        }
        refused_into(alice, "apple after gap", 2, gap,
                     "entries into the batch of a refused message");
    }
    last = (uint32_t)room_col("search_last_batch");
    search_all(alice, "apple", 2, last, 50);

    /* ---- a restart keeps everything ---- */
    snapshot kept = snap();
    it_run_command("restart sealroomd", env->sealroomd_restart);
    it_wait_component(30000);
    same(kept, "a restart");
    search_all(alice, "apple", 2, last, 3);
    search_all(bob, "banana cherry", 2, last, 50);
    st = iq(alice, "get", "<state xmlns='" NS_SEARCH "'/>");
    s = child(st, "state");
    IT_CHECK(strcmp(attr(s, "gen"), "2") == 0 && strcmp(attr(s, "need-gen"), "false") == 0 &&
                 strtoul(attr(s, "batch"), NULL, 10) == last &&
                 strtoull(attr(xmpp_stanza_get_child_by_name(s, "keyring"), "epoch"), NULL, 10) ==
                     room.epoch,
             "the state after a restart");
    xmpp_stanza_release(st);

    for (size_t i = 0; i < nmsgs; i++) {
        free(msgs[i].text);
        sr_sse_keywords_free(&msgs[i].kws);
    }
    sodium_memzero(kg, sizeof kg);
    sodium_memzero(s_old, sizeof s_old);
    free(ring1);
    PQfinish(pg);
    it_raw_free(alice);
    it_raw_free(bob);
    it_raw_free(carol);
    it_raw_free(mallory);
    it_room_free(&room);
    it_log("passed");
    return 0;
}
