/* Encrypted search through the real stack with libsealroom (issue 6).
 * Scenarios (first argument):
 *   corpus   three writers send a generated corpus (Latin words with a
 *            skewed frequency, Japanese sentences) interleaved with
 *            searches (each search seals the open batches, so the corpus
 *            spreads over many batches); every query — single words, pairs,
 *            Japanese words — returns exactly the messages whose text holds
 *            its words (compared with the plaintext truth kept here), page
 *            by page; then members compact the index until nothing is left
 *            to compact, PostgreSQL shows live segments and compacted
 *            batches, and every query still returns exactly the truth; a
 *            member added afterwards searches the whole history too.
 *   removal  after a member is removed the room starts a new index
 *            generation; acting as a colluding service with the removed
 *            member's generation key (taken from its ctx through the test
 *            hook), the component's own evaluation finds none of the
 *            messages written after the removal, while a current member's
 *            key finds them; and a search token captured before a message
 *            was sent never reaches it (forward privacy).
 *   writers  ten members write at once while two others search; afterwards
 *            every query returns exactly the truth.
 * Refused stanzas (bad covers, foreign batches, non-members) are in
 * it_search_component. Needs the dev stack's environment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "e2e_common.h"
#include "searcheval.h"
#include "search/ggm.h"
#include "search/norm.h"
#include "testhook.h"

#define WAIT_MS 120000u
#define MAX_MSGS 4096

static char room[256];

/* The plaintext truth: every message sent, by origin-id. */
typedef struct sent_msg {
    char origin[72];
    char *text;
    char *stanza_id;
} sent_msg;

static sent_msg sent[MAX_MSGS];
static size_t nsent;

static void truth_reset(void)
{
    for (size_t i = 0; i < nsent; i++) {
        free(sent[i].text);
        free(sent[i].stanza_id);
    }
    nsent = 0;
}

static bool text_matches(const char *text, const char *query)
{
    sr_sse_keywords have = {0}, want = {0};
    bool ok = sr_sse_keywords_from_text(&have, text, strlen(text), SR_SSE_MESSAGE_KEYWORDS) ==
                  SR_E2E_OK &&
              sr_sse_keywords_from_text(&want, query, strlen(query), 64) == SR_E2E_OK;
    for (size_t i = 0; ok && i < want.n; i++)
        ok = sr_sse_keywords_contains(&have, want.kw[i], want.len[i]);
    sr_sse_keywords_free(&have);
    sr_sse_keywords_free(&want);
    return ok;
}

/* Send text from w and record it (pipelined by the caller's pumping). */
static uint32_t send_text(e2e_lib *w, const char *text)
{
    IT_CHECK(nsent < MAX_MSGS, "corpus too large");
    uint32_t req = 0;
    sent_msg *m = &sent[nsent++];
    IT_OK(sealroom_room_send(e2e_ctx(w), &req, m->origin, sizeof m->origin, room,
                             (const unsigned char *)text, strlen(text)));
    m->text = strdup(text);
    return req;
}

static void wait_sent(e2e_lib *w, const uint32_t *req, size_t n)
{
    for (size_t i = 0; i < n; i++)
        it_lib_wait_ok(w->l, req[i], "sending");
}

/* Search query in room as w, all pages of `page`; the origin-ids found, in
 * order (newest first). Checks paging (strictly older each page). */
static size_t search_all(e2e_lib *w, const char *query, unsigned page, char (*out)[72],
                         size_t cap)
{
    size_t n = 0;
    char before[32] = "";
    for (int pages = 0;; pages++) {
        IT_CHECK(pages < 10000, "search '%s' does not end", query);
        it_lib_clear(w->l);
        uint32_t req = 0;
        IT_OK(sealroom_room_search(e2e_ctx(w), &req, room, query, before[0] ? before : NULL,
                                   page));
        it_lib_wait_ok(w->l, req, "searching");
        const it_ev *done = it_lib_done(w->l, req);
        size_t got = 0;
        for (size_t i = 0; i < w->l->nev; i++) {
            const it_ev *ev = &w->l->ev[i];
            if (ev->type == SEALROOM_EVENT_MESSAGE_REJECTED && ev->room &&
                strcmp(ev->room, room) == 0)
                IT_CHECK(false, "search hit %s refused: %s", ev->stanza_id ? ev->stanza_id : "?",
                         ev->error_text ? ev->error_text : "");
            if (ev->type != SEALROOM_EVENT_MESSAGE || !ev->history || !ev->room ||
                strcmp(ev->room, room) != 0)
                continue;
            IT_CHECK(n < cap, "too many hits for '%s'", query);
            snprintf(out[n++], 72, "%s", ev->origin_id ? ev->origin_id : "");
            got++;
        }
        IT_CHECK(got <= page, "page of %zu hits for max %u", got, page);
        if (done->complete || got == 0)
            break;
        IT_CHECK(done->last && *done->last, "an incomplete page without <last/>");
        snprintf(before, sizeof before, "%s", done->last);
    }
    return n;
}

/* The query's hits equal the truth (as sets; and newest first by archive
 * order of sending, which is the order we sent when one writer at a time). */
static void check_query(e2e_lib *w, const char *query, unsigned page)
{
    static char hits[MAX_MSGS][72];
    size_t n = search_all(w, query, page, hits, MAX_MSGS);
    size_t want = 0;
    for (size_t i = 0; i < nsent; i++) {
        if (!text_matches(sent[i].text, query))
            continue;
        want++;
        bool found = false;
        for (size_t k = 0; k < n && !found; k++)
            found = strcmp(hits[k], sent[i].origin) == 0;
        IT_CHECK(found, "'%s': message '%s' not found", query, sent[i].text);
    }
    for (size_t k = 0; k < n; k++)
        for (size_t j = k + 1; j < n; j++)
            IT_CHECK(strcmp(hits[k], hits[j]) != 0, "'%s': a hit returned twice", query);
    IT_CHECK(n == want, "'%s': %zu hits, truth %zu", query, n, want);
}

static const char *const latin[] = {
    "invoice",  "budget", "meeting", "release", "server",  "deadline", "coffee", "résumé",
    "straße",   "Quartz", "zebra",   "ticket",  "report",  "launch",   "audit",  "pomegranate",
    "Kyoto",    "delta",  "omega",   "payload", "roadmap", "sprint",   "merge",  "hotfix",
};
static const char *const japanese[] = {
    "東京都に行きました", "京都の会議は明日です", "新しい予算を確認してください",
    "東京の天気は晴れ", "サーバーを再起動しました",
};

/* A deterministic message: 3..8 words, skewed towards the first ones. */
static void make_text(char *out, size_t cap, uint32_t *state, int serial)
{
    size_t len = (size_t)snprintf(out, cap, "m%d", serial);
    *state = *state * 1103515245u + 12345u;
    if ((*state >> 16) % 7 == 0) {
        snprintf(out + len, cap - len, " %s", japanese[(*state >> 8) % 5]);
        return;
    }
    int words = 3 + (int)((*state >> 16) % 6);
    for (int i = 0; i < words; i++) {
        *state = *state * 1103515245u + 12345u;
        unsigned r = (*state >> 16) % 1000;
        size_t k = r < 500 ? r % 4 : r < 800 ? 4 + r % 8 : 12 + r % 12;
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i % 3 == 2 ? ", " : " ", latin[k]);
    }
}

static const char *const queries[] = {
    "invoice", "BUDGET", "straße", "STRASSE", "résumé", "pomegranate", "Kyoto", "zebra",
    "invoice meeting", "server release", "hotfix merge sprint", "東京", "京都", "予算",
    "サーバー", "東京都", "nosuchword",
};

static void check_all(e2e_lib *w, unsigned page)
{
    for (size_t q = 0; q < sizeof queries / sizeof *queries; q++)
        check_query(w, queries[q], page);
}

static long long pg_count(const char *sql)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", e2e_room_id(room));
    const char *p[1] = {id};
    PGresult *res = e2e_pg_exec(sql, 1, p, false);
    long long v = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

static void scenario_corpus(void)
{
    e2e_lib *alice = e2e_connect("alice", true), *bob = e2e_connect("bob", true),
            *carol = e2e_connect("carol", true);
    it_lib_register(alice->l);
    it_lib_register(bob->l);
    it_lib_register(carol->l);
    it_new_room(room, sizeof room, "search-corpus");
    it_lib_create(alice->l, room);
    it_lib_add(alice->l, room, "bob", SEALROOM_ROLE_MEMBER);
    it_lib_add(alice->l, room, "carol", SEALROOM_ROLE_MEMBER);
    it_lib_join(alice->l, room, "alice");
    it_lib_join(bob->l, room, "bob");
    it_lib_join(carol->l, room, "carol");
    e2e_lib *w[3] = {alice, bob, carol};
    /* Compaction here is the explicit kind (it_search_auto has the
     * automatic one): members leave the batches alone until asked. */
    for (int k = 0; k < 3; k++)
        sealroom_ctx_set_auto_compact(e2e_ctx(w[k]), 0);
    uint32_t state = 7;
    const int rounds = 12, per = 12;
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 3; k++) {
            uint32_t req[64];
            for (int i = 0; i < per; i++) {
                char text[512];
                make_text(text, sizeof text, &state, (int)nsent);
                req[i] = send_text(w[k], text);
            }
            wait_sent(w[k], req, (size_t)per);
        }
        /* Seals every open batch: the writers take new ones next round. */
        check_query(w[r % 3], latin[r % 24], 50);
    }
    long long batches = pg_count("SELECT count(*) FROM search_batches WHERE room_id = $1");
    IT_CHECK(batches >= 24, "only %lld batches for %d rounds of 3 writers", batches, rounds);
    check_all(bob, 7);
    it_log("%zu messages in %lld batches: %zu queries return exactly the truth (pages of 7)",
           nsent, batches, sizeof queries / sizeof *queries);

    /* Compaction until the room has nothing left to do. */
    int jobs = 0;
    for (;;) {
        uint32_t req = 0;
        IT_OK(sealroom_room_compact(e2e_ctx(carol), &req, room));
        int rc = it_lib_wait(carol->l, req);
        if (rc == SEALROOM_E_NOT_FOUND)
            break;
        IT_CHECK(rc == SEALROOM_OK, "compaction job %d failed: %d (%s)", jobs, rc,
                 e2e_done_text(carol, req));
        IT_CHECK(++jobs < 100, "compaction does not end");
    }
    long long segments = pg_count(
                  "SELECT count(*) FROM search_segments WHERE room_id = $1 AND state = 1"),
              compacted = pg_count(
                  "SELECT count(*) FROM search_batches WHERE room_id = $1 AND state = 2"),
              live = pg_count(
                  "SELECT count(*) FROM search_batches WHERE room_id = $1 AND state < 2");
    IT_CHECK(jobs >= 1 && segments >= 1 && compacted >= 8,
             "%d compaction jobs: %lld live segments, %lld compacted batches", jobs, segments,
             compacted);
    check_all(alice, 50);
    check_all(bob, 3);
    it_log("%d compaction jobs: %lld segments, %lld batches compacted, %lld live; "
           "every query still exact", jobs, segments, compacted, live);

    /* Retraction: the message stops matching, occupants are told, and
     * history shows a tombstone in its place. */
    uint32_t rq = send_text(alice, "invoice to retract, zebra");
    wait_sent(alice, &rq, 1);
    const it_ev *sd = it_lib_done(alice->l, rq);
    IT_CHECK(sd && sd->stanza_id, "no stanza-id for the message to retract");
    char victim[32];
    snprintf(victim, sizeof victim, "%s", sd->stanza_id);
    check_query(bob, "invoice zebra", 50);
    it_lib_clear(bob->l);
    uint32_t rr = 0;
    IT_OK(sealroom_room_retract(e2e_ctx(alice), &rr, room, victim));
    it_lib_wait_ok(alice->l, rr, "retracting");
    uint64_t until = it_mono_ms() + WAIT_MS;
    for (;;) {
        bool told = false;
        for (size_t i = 0; i < bob->l->nev && !told; i++)
            told = bob->l->ev[i].type == SEALROOM_EVENT_MESSAGE_RETRACTED &&
                   bob->l->ev[i].stanza_id && strcmp(bob->l->ev[i].stanza_id, victim) == 0 &&
                   !bob->l->ev[i].history;
        if (told)
            break;
        IT_CHECK(it_mono_ms() < until, "bob was not told of the retraction of %s", victim);
        it_lib_pump_others(NULL);
        it_sleep_ms(10);
    }
    free(sent[nsent - 1].text);
    sent[nsent - 1].text = strdup(""); /* matches nothing now */
    check_query(bob, "invoice zebra", 50);
    check_query(carol, "invoice", 50);
    uint32_t rbad = 0;
    IT_OK(sealroom_room_retract(e2e_ctx(bob), &rbad, room, victim));
    IT_CHECK(it_lib_wait(bob->l, rbad) == SEALROOM_E_FORBIDDEN,
             "bob retracted alice's message, or got another error");
    it_lib_clear(carol->l);
    IT_CHECK(e2e_read_history(carol, room) == SEALROOM_OK, "carol's history read failed");
    bool tomb = false;
    for (size_t i = 0; i < carol->l->nev && !tomb; i++)
        tomb = carol->l->ev[i].type == SEALROOM_EVENT_MESSAGE_RETRACTED &&
               carol->l->ev[i].history && carol->l->ev[i].stanza_id &&
               strcmp(carol->l->ev[i].stanza_id, victim) == 0;
    IT_CHECK(tomb, "history has no tombstone for %s", victim);
    it_log("message %s retracted: occupants told, no search returns it, history shows a tombstone",
           victim);

    /* A member added now searches the whole history. */
    e2e_lib *dave = e2e_connect("dave", true);
    it_lib_register(dave->l);
    it_lib_add(alice->l, room, "dave", SEALROOM_ROLE_MEMBER);
    it_lib_join(dave->l, room, "dave");
    check_all(dave, 50);
    it_log("dave, added after %zu messages, finds every one of them", nsent);
    e2e_lib_free(alice);
    e2e_lib_free(bob);
    e2e_lib_free(carol);
    e2e_lib_free(dave);
    truth_reset();
}

/* ---- acting as the service: the component's own evaluation ---- */

typedef struct kg_find {
    const char *room;
    uint32_t gen;
    unsigned char key[32];
    bool found;
} kg_find;

static void kg_cb(void *user, const char *what, const char *rm, uint64_t epoch,
                  const unsigned char *secret, size_t len)
{
    kg_find *f = user;
    if (strcmp(what, "search.kg") == 0 && rm && strcmp(rm, f->room) == 0 && epoch == f->gen &&
        len == 32) {
        memcpy(f->key, secret, 32);
        f->found = true;
    }
}

static bool generation_key(e2e_lib *w, uint32_t gen, unsigned char key[32])
{
    kg_find f = {room, gen, {0}, false};
    sr_testhook_secrets(e2e_ctx(w), kg_cb, &f);
    memcpy(key, f.key, 32);
    sodium_memzero(f.key, sizeof f.key);
    return f.found;
}

/* Seqs matching word in generation gen under key kg, evaluated by the
 * component's code over batches [1, hi]. */
static size_t service_search(const unsigned char kg[32], uint32_t gen, const char *word,
                             uint64_t hi, uint64_t *seqs, size_t cap)
{
    unsigned char root[32];
    sr_sse_node nodes[SR_SSE_COVER_MAX];
    IT_CHECK(sr_sse_root(root, kg, gen, word, strlen(word)) == SR_E2E_OK, "root");
    size_t n = sr_sse_cover(nodes, SR_SSE_COVER_MAX, root, 1, (uint32_t)hi);
    IT_CHECK(n > 0, "cover of [1, %llu]", (unsigned long long)hi);
    se_cover cover = {0};
    cover.gen = gen;
    cover.nnodes = n;
    for (size_t i = 0; i < n; i++) {
        cover.nodes[i].depth = nodes[i].depth;
        cover.nodes[i].prefix = nodes[i].prefix;
        memcpy(cover.nodes[i].key, nodes[i].key, 32);
    }
    se_query q = {0};
    q.room_id = e2e_room_id(room);
    q.room = room;
    q.hi = hi;
    q.max = 200;
    q.nkeywords = 1;
    q.keywords[0].ncovers = 1;
    q.keywords[0].covers = &cover;
    se_result res;
    char err[256];
    PGconn *pg = PQconnectdb(it_env_get()->pg);
    IT_CHECK(PQstatus(pg) == CONNECTION_OK, "connect: %s", PQerrorMessage(pg));
    int rc = se_search(pg, &q, &res, err, sizeof err);
    PQfinish(pg);
    se_cover_wipe(&cover);
    sodium_memzero(nodes, sizeof nodes);
    sodium_memzero(root, sizeof root);
    IT_CHECK(rc == SE_OK, "se_search: %d %s", rc, err);
    size_t k = res.n < cap ? res.n : cap;
    memcpy(seqs, res.seqs, k * sizeof *seqs);
    return k;
}

static uint64_t stanza_seq(e2e_lib *w, uint32_t req)
{
    const it_ev *d = it_lib_done(w->l, req);
    IT_CHECK(d && d->stanza_id, "no stanza-id");
    return strtoull(d->stanza_id, NULL, 10);
}

static bool has_seq(const uint64_t *s, size_t n, uint64_t v)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == v)
            return true;
    return false;
}

static void scenario_removal(void)
{
    e2e_lib *frank = e2e_connect("frank", true), *grace = e2e_connect("grace", true),
            *mallory = e2e_connect("mallory", true);
    it_lib_register(frank->l);
    it_lib_register(grace->l);
    it_lib_register(mallory->l);
    it_new_room(room, sizeof room, "search-removal");
    it_lib_create(frank->l, room);
    it_lib_add(frank->l, room, "grace", SEALROOM_ROLE_MEMBER);
    it_lib_add(frank->l, room, "mallory", SEALROOM_ROLE_MEMBER);
    it_lib_join(frank->l, room, "frank");
    it_lib_join(grace->l, room, "grace");
    it_lib_join(mallory->l, room, "mallory");
    uint32_t r0 = send_text(grace, "the pomegranate plan, first draft");
    wait_sent(grace, &r0, 1);
    uint64_t seq0 = stanza_seq(grace, r0);
    check_query(mallory, "pomegranate", 50); /* mallory holds generation 1 now */
    unsigned char k_mallory[32], k_new[32];
    IT_CHECK(generation_key(mallory, 1, k_mallory), "mallory holds no generation 1 key");
    long long gen1 = pg_count("SELECT search_gen FROM rooms WHERE room_id = $1");
    IT_CHECK(gen1 == 1, "room generation %lld before the removal", gen1);

    /* Forward privacy: a token for batches up to H, captured now. */
    long long h_before = pg_count("SELECT search_last_batch FROM rooms WHERE room_id = $1");

    uint32_t req = 0;
    IT_OK(sealroom_room_remove_member(e2e_ctx(frank), &req, room, mallory->l->bare));
    it_lib_wait_ok(frank->l, req, "removing mallory");
    uint32_t r1 = send_text(grace, "pomegranate, final numbers after the change");
    wait_sent(grace, &r1, 1);
    uint64_t seq1 = stanza_seq(grace, r1);
    long long gen2 = pg_count("SELECT search_gen FROM rooms WHERE room_id = $1");
    IT_CHECK(gen2 == 2, "room generation %lld after the removal", gen2);
    check_query(grace, "pomegranate", 50);
    IT_CHECK(generation_key(grace, 2, k_new), "grace holds no generation 2 key");
    unsigned char k_grace1[32];
    IT_CHECK(generation_key(grace, 1, k_grace1) && sodium_memcmp(k_grace1, k_mallory, 32) == 0,
             "generation 1 differs between members");
    long long hi = pg_count("SELECT search_last_batch FROM rooms WHERE room_id = $1");
    uint64_t seqs[256];
    size_t n = service_search(k_mallory, 1, "pomegranate", (uint64_t)hi, seqs, 256);
    IT_CHECK(has_seq(seqs, n, seq0) && !has_seq(seqs, n, seq1),
             "mallory's generation key reaches the message written after her removal "
             "(or not the one before)");
    n = service_search(k_mallory, 2, "pomegranate", (uint64_t)hi, seqs, 256);
    IT_CHECK(!has_seq(seqs, n, seq1), "a guessed generation 2 token with mallory's key matched");
    n = service_search(k_new, 2, "pomegranate", (uint64_t)hi, seqs, 256);
    IT_CHECK(has_seq(seqs, n, seq1), "the current generation key does not find the new message");
    it_log("after mallory's removal the room is at generation 2: her key finds seq %llu, "
           "not seq %llu; the current key finds it",
           (unsigned long long)seq0, (unsigned long long)seq1);

    /* Forward privacy: a search over batches ≤ H made before a message
     * was sent never reaches it, however it is replayed. */
    long long h_now = pg_count("SELECT search_last_batch FROM rooms WHERE room_id = $1");
    n = service_search(k_new, 2, "pomegranate", (uint64_t)h_now, seqs, 256);
    size_t before_n = n;
    uint32_t r2 = send_text(frank, "pomegranate again, later");
    wait_sent(frank, &r2, 1);
    uint64_t seq2 = stanza_seq(frank, r2);
    n = service_search(k_new, 2, "pomegranate", (uint64_t)h_now, seqs, 256);
    IT_CHECK(!has_seq(seqs, n, seq2) && n == before_n,
             "a token over batches <= %lld reached a message sent after it", h_now);
    long long h_after = pg_count("SELECT search_last_batch FROM rooms WHERE room_id = $1");
    IT_CHECK(h_after > h_now, "the writer wrote into a batch the search had reached");
    n = service_search(k_new, 2, "pomegranate", (uint64_t)h_after, seqs, 256);
    IT_CHECK(has_seq(seqs, n, seq2), "a fresh search misses the new message");
    (void)h_before;
    it_log("a token over batches <= %lld misses seq %llu written after it; a fresh one finds it",
           h_now, (unsigned long long)seq2);
    sodium_memzero(k_mallory, sizeof k_mallory);
    sodium_memzero(k_new, sizeof k_new);
    sodium_memzero(k_grace1, sizeof k_grace1);
    e2e_lib_free(frank);
    e2e_lib_free(grace);
    e2e_lib_free(mallory);
    truth_reset();
}

static void scenario_writers(void)
{
    static const char *const users[] = {"alice", "bob",   "carol", "dave",    "eve",  "frank",
                                        "grace", "heidi", "ivan",  "judy",    "mallory", "oscar"};
    enum { NW = 10, NU = 12, PER = 15 };
    e2e_lib *w[NU];
    for (int i = 0; i < NU; i++) {
        w[i] = e2e_connect(users[i], true);
        it_lib_register(w[i]->l);
    }
    it_new_room(room, sizeof room, "search-writers");
    it_lib_create(w[0]->l, room);
    for (int i = 1; i < NU; i++)
        it_lib_add(w[0]->l, room, users[i], SEALROOM_ROLE_MEMBER);
    for (int i = 0; i < NU; i++)
        it_lib_join(w[i]->l, room, users[i]);
    uint32_t state = 99;
    uint32_t req[NW][PER];
    /* Ten writers, their messages in flight together; two readers search
     * meanwhile (sealing batches under the writers' feet). */
    for (int k = 0; k < PER; k++) {
        for (int i = 0; i < NW; i++) {
            char text[512];
            make_text(text, sizeof text, &state, (int)nsent);
            req[i][k] = send_text(w[i], text);
        }
        if (k % 5 == 4) {
            uint32_t s1 = 0, s2 = 0;
            IT_OK(sealroom_room_search(e2e_ctx(w[10]), &s1, room, "invoice", NULL, 50));
            IT_OK(sealroom_room_search(e2e_ctx(w[11]), &s2, room, "budget meeting", NULL, 50));
            it_lib_wait_ok(w[10]->l, s1, "concurrent search");
            it_lib_wait_ok(w[11]->l, s2, "concurrent search");
        }
    }
    for (int i = 0; i < NW; i++)
        wait_sent(w[i], req[i], PER);
    check_all(w[10], 50);
    check_all(w[11], 9);
    it_log("%d writers, %zu messages with searches in between: every query exact", NW, nsent);
    for (int i = 0; i < NU; i++)
        e2e_lib_free(w[i]);
    truth_reset();
}

int main(int argc, char **argv)
{
    it_init("it_search");
    if (sodium_init() < 0)
        return 1;
    const char *what = argc > 1 ? argv[1] : "corpus";
    if (strcmp(what, "corpus") == 0)
        scenario_corpus();
    else if (strcmp(what, "removal") == 0)
        scenario_removal();
    else if (strcmp(what, "writers") == 0)
        scenario_writers();
    else {
        fprintf(stderr, "usage: it_search corpus|removal|writers\n");
        return 2;
    }
    it_log("it_search %s: ok", what);
    return 0;
}
