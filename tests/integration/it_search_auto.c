/* Automatic compaction of the encrypted search index through the real
 * stack (sealroomd's compact='due' hint, libsealroom's background jobs).
 * Scenarios (first argument):
 *   on   first, batches with nothing to index: three rounds whose messages
 *        are all retracted before their batches seal, which the room
 *        retires by itself (compacted, no segment, no lease left), then
 *        three rounds of messages without a keyword, which a member
 *        compacts into a segment of one dummy block; neither leaves live
 *        batches behind. Then three writers send messages in rounds, a
 *        search after each round sealing the open batches, with automatic
 *        compaction on (the default) and now and then an explicit
 *        sealroom_room_compact alongside (OK or NOT_FOUND, never a
 *        failure); every search during the rounds returns exactly the
 *        plaintext truth. Afterwards, once
 *        the members are done, PostgreSQL shows segments made, few live
 *        batches, nothing a lease would find and no lease left; every
 *        segment is one INDEX_COMPACTED event or one explicit job; every
 *        query returns exactly the truth; and the room's answers to a
 *        member (raw <state/>) no longer say compaction is due.
 *   off  the same writing with automatic compaction switched off on every
 *        client: nothing gets compacted and no event comes, while the
 *        room's answers to <state/>, <batch/> and <search/> all say
 *        compact='due'; explicit jobs then compact until the room has
 *        nothing to lease, after which none of the answers says "due"
 *        (hint and lease agree), and searches stay exact.
 * Needs the dev stack's environment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "e2e_common.h"
#include "search/norm.h"

#define MAX_MSGS 2048
#define NS_S "urn:xmpp:sealroom:search:0"
#define SETTLE_MS 120000u

static char room[256];

/* ---- the plaintext truth ---- */

typedef struct sent_msg {
    char origin[72];
    char *text;
    bool retracted;
} sent_msg;

static sent_msg sent[MAX_MSGS];
static size_t nsent;

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

static const char *const words[] = {
    "invoice", "budget", "meeting", "release", "server", "deadline", "coffee", "audit",
    "zebra",   "ticket", "report",  "launch",  "delta",  "omega",    "sprint", "hotfix",
};

/* A deterministic message of 2..6 words, skewed towards the first ones. */
static void make_text(char *out, size_t cap, uint32_t *state, int serial)
{
    size_t len = (size_t)snprintf(out, cap, "m%d", serial);
    *state = *state * 1103515245u + 12345u;
    int n = 2 + (int)((*state >> 16) % 5);
    for (int i = 0; i < n; i++) {
        *state = *state * 1103515245u + 12345u;
        unsigned r = (*state >> 16) % 100;
        size_t k = r < 60 ? r % 4 : 4 + r % 12;
        len += (size_t)snprintf(out + len, cap - len, " %s", words[k]);
    }
}

static const char *const queries[] = {
    "invoice", "budget meeting", "zebra", "hotfix sprint", "release", "omega delta", "nosuchword",
};

/* ---- clients ---- */

static int events_compacted; /* INDEX_COMPACTED seen for the room, all clients */

/* Count w's INDEX_COMPACTED events for the room, then forget its events
 * (a search reads its hits from a clean list). */
static void tally(e2e_lib *w)
{
    for (size_t i = 0; i < w->l->nev; i++)
        if (w->l->ev[i].type == SEALROOM_EVENT_INDEX_COMPACTED) {
            IT_CHECK(w->l->ev[i].room && strcmp(w->l->ev[i].room, room) == 0,
                     "INDEX_COMPACTED for another room");
            events_compacted++;
        }
    it_lib_clear(w->l);
}

static uint32_t send_text(e2e_lib *w, const char *text)
{
    IT_CHECK(nsent < MAX_MSGS, "corpus too large");
    uint32_t req = 0;
    sent_msg *m = &sent[nsent++];
    IT_OK(sealroom_room_send(e2e_ctx(w), &req, m->origin, sizeof m->origin, room,
                             (const unsigned char *)text, strlen(text)));
    m->text = strdup(text);
    m->retracted = false;
    return req;
}

/* Every page of query as w: the hits equal the truth, each once. */
static void check_query(e2e_lib *w, const char *query, unsigned page)
{
    static char hits[MAX_MSGS][72];
    size_t n = 0;
    char before[32] = "";
    for (int pages = 0;; pages++) {
        IT_CHECK(pages < 1000, "search '%s' does not end", query);
        tally(w);
        uint32_t req = 0;
        IT_OK(sealroom_room_search(e2e_ctx(w), &req, room, query, before[0] ? before : NULL,
                                   page));
        it_lib_wait_ok(w->l, req, "searching");
        const it_ev *done = it_lib_done(w->l, req);
        size_t got = 0;
        for (size_t i = 0; i < w->l->nev; i++) {
            const it_ev *ev = &w->l->ev[i];
            IT_CHECK(ev->type != SEALROOM_EVENT_MESSAGE_REJECTED, "search hit %s refused: %s",
                     ev->stanza_id ? ev->stanza_id : "?", ev->error_text ? ev->error_text : "");
            if (ev->type != SEALROOM_EVENT_MESSAGE || !ev->history || !ev->room ||
                strcmp(ev->room, room) != 0)
                continue;
            IT_CHECK(n < MAX_MSGS, "too many hits for '%s'", query);
            snprintf(hits[n++], 72, "%s", ev->origin_id ? ev->origin_id : "");
            got++;
        }
        IT_CHECK(got <= page, "page of %zu hits for max %u", got, page);
        if (done->complete || got == 0)
            break;
        IT_CHECK(done->last && *done->last, "an incomplete page without <last/>");
        snprintf(before, sizeof before, "%s", done->last);
    }
    size_t want = 0;
    for (size_t i = 0; i < nsent; i++) {
        if (sent[i].retracted || !text_matches(sent[i].text, query))
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

static void check_all(e2e_lib *w, unsigned page)
{
    for (size_t q = 0; q < sizeof queries / sizeof *queries; q++)
        check_query(w, queries[q], page);
}

/* ---- PostgreSQL ---- */

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

/* Work a <compact/> lease could take, written here from the protocol
 * (xep "Compaction") rather than taken from the component: a generation
 * with 8 sealed batches, or a level and generation with 4 live segments,
 * outside unexpired leases. */
static long long pg_work(void)
{
    return pg_count(
        "SELECT (SELECT count(*) FROM (SELECT gen FROM search_batches WHERE room_id = $1 "
        "AND state = 1 AND batch NOT IN (SELECT unnest(batches) FROM search_leases "
        "WHERE room_id = $1 AND expires > now()) GROUP BY gen HAVING count(*) >= 8) b) + "
        "(SELECT count(*) FROM (SELECT gen, level FROM search_segments WHERE room_id = $1 "
        "AND state = 1 AND segment NOT IN (SELECT unnest(merged_segments) FROM search_leases "
        "WHERE room_id = $1 AND expires > now()) GROUP BY gen, level HAVING count(*) >= 4) s)");
}

static long long pg_leases(void)
{
    return pg_count("SELECT count(*) FROM search_leases WHERE room_id = $1 AND expires > now()");
}

/* ---- the room's answers, as a member reads them on the wire ---- */

/* The 'compact' attribute of the answer to a raw IQ (child `name` of the
 * result), "" when absent. */
static void raw_hint(it_raw *rc, const char *type, const char *payload, const char *name,
                     char *out, size_t cap)
{
    xmpp_stanza_t *st = it_raw_iq(rc, type, room, payload);
    it_check_result(st, payload);
    xmpp_stanza_t *el = xmpp_stanza_get_child_by_name_and_ns(st, name, NS_S);
    IT_CHECK(el, "no <%s/> in the answer to %s", name, payload);
    const char *v = xmpp_stanza_get_attribute(el, "compact");
    snprintf(out, cap, "%s", v ? v : "");
    xmpp_stanza_release(st);
}

/* A <search/> the room accepts: one keyword, one cover of batch 1 with a
 * random node (it matches nothing; only the answer's hint matters). */
static void raw_search_hint(it_raw *rc, char *out, size_t cap)
{
    unsigned char node[37] = {32, 0, 0, 0, 1};
    randombytes_buf(node + 5, 32);
    char *b64 = it_b64(node, sizeof node);
    char xml[512];
    snprintf(xml, sizeof xml,
             "<search xmlns='" NS_S "' hi='1'><keyword><cover gen='1'>%s</cover></keyword>"
             "</search>",
             b64);
    free(b64);
    raw_hint(rc, "get", xml, "result", out, cap);
}

/* ---- the scenarios ---- */

typedef struct setup {
    e2e_lib *w[3];
    it_raw *dave; /* a member that only speaks raw stanzas */
} setup;

static void start(setup *s, const char *prefix)
{
    s->w[0] = e2e_connect("alice", true);
    s->w[1] = e2e_connect("bob", true);
    s->w[2] = e2e_connect("carol", true);
    s->dave = it_raw_connect("dave");
    it_raw_register(s->dave);
    for (int i = 0; i < 3; i++)
        it_lib_register(s->w[i]->l);
    it_new_room(room, sizeof room, prefix);
    it_lib_create(s->w[0]->l, room);
    it_lib_add(s->w[0]->l, room, "bob", SEALROOM_ROLE_MEMBER);
    it_lib_add(s->w[0]->l, room, "carol", SEALROOM_ROLE_MEMBER);
    it_lib_add(s->w[0]->l, room, "dave", SEALROOM_ROLE_MEMBER);
    it_lib_join(s->w[0]->l, room, "alice");
    it_lib_join(s->w[1]->l, room, "bob");
    it_lib_join(s->w[2]->l, room, "carol");
}

static void finish(setup *s)
{
    for (int i = 0; i < 3; i++)
        e2e_lib_free(s->w[i]);
    it_raw_free(s->dave);
    for (size_t i = 0; i < nsent; i++)
        free(sent[i].text);
    nsent = 0;
}

typedef enum { ROUND_WORDS, ROUND_RETRACTED, ROUND_NO_KEYWORDS } round_kind;

/* Texts with no letter, mark or digit: no keyword (search-wire §1). */
static const char *const wordless[] = {":-) !!!", "... ?? --", "+++ ***", "(( ))"};

/* One round: each writer sends `per` messages (each writer's first takes
 * a new batch, the last search having sealed its previous one) of the
 * kind asked for, retracting them all when asked, then a search by one
 * of them, exact, which seals every open batch. */
static void round_of(setup *s, int r, int per, uint32_t *state, round_kind kind)
{
    for (int k = 0; k < 3; k++) {
        uint32_t req[16];
        size_t first = nsent;
        for (int i = 0; i < per; i++) {
            char text[256];
            if (kind == ROUND_NO_KEYWORDS)
                snprintf(text, sizeof text, "%s", wordless[nsent % 4]);
            else
                make_text(text, sizeof text, state, (int)nsent);
            req[i] = send_text(s->w[k], text);
        }
        for (int i = 0; i < per && kind == ROUND_RETRACTED; i++) {
            it_lib_wait_ok(s->w[k]->l, req[i], "sending");
            const it_ev *done = it_lib_done(s->w[k]->l, req[i]);
            IT_CHECK(done && done->stanza_id, "no stanza-id for a message to retract");
            IT_OK(sealroom_room_retract(e2e_ctx(s->w[k]), &req[i], room, done->stanza_id));
            sent[first + (size_t)i].retracted = true;
        }
        for (int i = 0; i < per; i++)
            it_lib_wait_ok(s->w[k]->l, req[i], kind == ROUND_RETRACTED ? "retracting" : "sending");
    }
    check_query(s->w[r % 3], queries[r % 6], 50);
}

/* Waits until the room has nothing a lease would take and no lease. */
static void settle(const char *what)
{
    uint64_t until = it_mono_ms() + SETTLE_MS;
    while (pg_work() > 0 || pg_leases() > 0) {
        IT_CHECK(it_mono_ms() < until,
                 "compaction did not settle (%s): %lld kinds of work, %lld leases", what,
                 pg_work(), pg_leases());
        it_lib_pump_others(NULL);
        it_sleep_ms(20);
    }
}

static long long last_batch(void)
{
    return pg_count("SELECT search_last_batch FROM rooms WHERE room_id = $1");
}

/* Batches with nothing to index (search-wire §4 compact): three rounds
 * whose messages are all retracted before their batches seal, which the
 * room retires without a lease, then three rounds of messages without a
 * keyword, which a member compacts into one segment of dummy blocks (it
 * lists the messages and opens to nothing). Either way no batch stays
 * live, so no job fails and comes back on the back-off. */
/* The room's batches up to b not compacted. */
static long long live_upto(long long b)
{
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM search_batches WHERE room_id = $1 AND batch <= %lld "
             "AND state < 2",
             b);
    return pg_count(sql);
}

static void empty_batches(setup *s, uint32_t *state)
{
    for (int r = 0; r < 3; r++)
        round_of(s, r, 2, state, ROUND_RETRACTED);
    settle("retracted batches");
    long long b1 = last_batch();
    IT_CHECK(b1 >= 9 && live_upto(b1) == 0, "%lld of the %lld retracted batches still live",
             live_upto(b1), b1);
    IT_CHECK(pg_count("SELECT count(*) FROM search_segments WHERE room_id = $1") == 0,
             "a segment was made for batches whose messages are all retracted");
    for (int r = 3; r < 6; r++)
        round_of(s, r, 2, state, ROUND_NO_KEYWORDS);
    settle("batches without keywords");
    long long b2 = last_batch();
    IT_CHECK(live_upto(b2) == 0, "%lld batches without keywords still live", live_upto(b2));
    IT_CHECK(pg_count("SELECT count(*) FROM search_segments WHERE room_id = $1 AND state = 1 "
                      "AND cardinality(seqs) = 18") == 1,
             "no live segment lists the 18 messages without keywords");
    long long blocks = pg_count("SELECT count(*) FROM search_blocks b JOIN search_segments s "
                                "USING (room_id, segment) WHERE room_id = $1");
    IT_CHECK(blocks >= 1, "the segment of messages without keywords has no block");
    it_log("batches 1-%lld (all retracted) retired without a segment; batches %lld-%lld (no "
           "keywords) compacted into a segment of %lld dummy block(s)",
           b1, b1 + 1, b2, blocks);
}

static void scenario_on(void)
{
    setup s;
    start(&s, "search-auto-on");
    uint32_t state = 11;
    const int rounds = 32, per = 3;
    int explicit_ok = 0, explicit_none = 0;
    empty_batches(&s, &state);
    for (int r = 0; r < rounds; r++) {
        round_of(&s, r, per, &state, ROUND_WORDS);
        if (r % 8 == 7) {
            /* An explicit job alongside the automatic ones. */
            tally(s.w[2]);
            uint32_t req = 0;
            IT_OK(sealroom_room_compact(e2e_ctx(s.w[2]), &req, room));
            int rc = it_lib_wait(s.w[2]->l, req);
            IT_CHECK(rc == SEALROOM_OK || rc == SEALROOM_E_NOT_FOUND,
                     "an explicit compaction beside the automatic ones failed: %d (%s)", rc,
                     e2e_done_text(s.w[2], req));
            rc == SEALROOM_OK ? explicit_ok++ : explicit_none++;
        }
    }
    /* Let the members finish what the room still has for them. */
    settle("after the rounds");
    for (int i = 0; i < 3; i++)
        tally(s.w[i]);
    long long batches = pg_count("SELECT count(*) FROM search_batches WHERE room_id = $1"),
              live = pg_count(
                  "SELECT count(*) FROM search_batches WHERE room_id = $1 AND state < 2"),
              compacted = pg_count(
                  "SELECT count(*) FROM search_batches WHERE room_id = $1 AND state = 2"),
              made = pg_count("SELECT count(*) FROM search_segments WHERE room_id = $1"),
              segs = pg_count(
                  "SELECT count(*) FROM search_segments WHERE room_id = $1 AND state = 1"),
              merged = pg_count(
                  "SELECT count(*) FROM search_segments WHERE room_id = $1 AND state = 2"),
              top = pg_count("SELECT coalesce(max(level), 0) FROM search_segments "
                             "WHERE room_id = $1");
    IT_CHECK(batches >= 3 * rounds, "only %lld batches for %d rounds of 3 writers", batches,
             rounds);
    /* Fewer than 8 sealed (else a lease would take them) and no open one
     * (the last search sealed them all). */
    IT_CHECK(live < 8, "%lld live batches of %lld after compaction", live, batches);
    IT_CHECK(segs >= 1 && segs < 16, "%lld live segments", segs);
    /* Four live segments of one level would be merged. */
    long long fullest = pg_count("SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM "
                                 "search_segments WHERE room_id = $1 AND state = 1 "
                                 "GROUP BY gen, level) l");
    IT_CHECK(fullest < 4, "%lld live segments of one level after compaction", fullest);
    IT_CHECK(events_compacted >= 1, "no INDEX_COMPACTED event");
    IT_CHECK(events_compacted + explicit_ok == made,
             "%d INDEX_COMPACTED events and %d explicit jobs, but %lld segments made",
             events_compacted, explicit_ok, made);
    it_log("%zu messages in %lld batches: %lld compacted into %lld segments (%lld merged, top "
           "level %lld) by %d automatic and %d explicit jobs (%d explicit found nothing); "
           "%lld batches live",
           nsent, batches, compacted, made, merged, top, events_compacted, explicit_ok,
           explicit_none, live);
    char hint[16];
    raw_hint(s.dave, "get", "<state xmlns='" NS_S "'/>", "state", hint, sizeof hint);
    IT_CHECK(hint[0] == '\0', "the state says compact='%s' with nothing to compact", hint);
    check_all(s.w[0], 50);
    check_all(s.w[1], 7);
    it_log("every query still exact; the room no longer says compaction is due");
    finish(&s);
}

static void scenario_off(void)
{
    setup s;
    start(&s, "search-auto-off");
    for (int i = 0; i < 3; i++)
        sealroom_ctx_set_auto_compact(e2e_ctx(s.w[i]), 0);
    uint32_t state = 23;
    const int rounds = 12, per = 3;
    for (int r = 0; r < rounds; r++)
        round_of(&s, r, per, &state, ROUND_WORDS);
    /* Time for anything that would have started by itself. */
    uint64_t until = it_mono_ms() + 3000;
    while (it_mono_ms() < until) {
        it_lib_pump_others(NULL);
        it_sleep_ms(20);
    }
    for (int i = 0; i < 3; i++)
        tally(s.w[i]);
    long long batches = pg_count("SELECT count(*) FROM search_batches WHERE room_id = $1"),
              sealed = pg_count(
                  "SELECT count(*) FROM search_batches WHERE room_id = $1 AND state = 1");
    IT_CHECK(pg_count("SELECT count(*) FROM search_segments WHERE room_id = $1") == 0,
             "a segment was made with automatic compaction off");
    IT_CHECK(pg_count("SELECT count(*) FROM search_batches WHERE room_id = $1 AND state = 2") ==
                 0,
             "a batch was compacted with automatic compaction off");
    IT_CHECK(pg_count("SELECT count(*) FROM search_leases WHERE room_id = $1") == 0,
             "a lease was taken with automatic compaction off");
    IT_CHECK(events_compacted == 0, "%d INDEX_COMPACTED events with it off", events_compacted);
    IT_CHECK(sealed >= 24 && pg_work() > 0, "%lld sealed batches of %lld, nothing to lease?",
             sealed, batches);

    /* The room tells a member, in each of its three answers. */
    char st[16], bt[16], se[16];
    raw_hint(s.dave, "get", "<state xmlns='" NS_S "'/>", "state", st, sizeof st);
    raw_hint(s.dave, "set", "<batch xmlns='" NS_S "'/>", "batch", bt, sizeof bt);
    raw_search_hint(s.dave, se, sizeof se);
    IT_CHECK(strcmp(st, "due") == 0 && strcmp(bt, "due") == 0 && strcmp(se, "due") == 0,
             "with %lld sealed batches: state compact='%s', batch '%s', search '%s'", sealed, st,
             bt, se);
    it_log("%zu messages in %lld batches, %lld sealed, none compacted with it off; the room "
           "says compact='due' in <state/>, <batch/> and <search/>",
           nsent, batches, sealed);

    /* Explicit jobs until the room has nothing to lease: then it says so. */
    int jobs = 0;
    for (;;) {
        uint32_t req = 0;
        IT_OK(sealroom_room_compact(e2e_ctx(s.w[0]), &req, room));
        int rc = it_lib_wait(s.w[0]->l, req);
        if (rc == SEALROOM_E_NOT_FOUND)
            break;
        IT_CHECK(rc == SEALROOM_OK, "compaction job %d failed: %d (%s)", jobs, rc,
                 e2e_done_text(s.w[0], req));
        IT_CHECK(++jobs < 100, "compaction does not end");
    }
    IT_CHECK(jobs >= 1 && pg_work() == 0, "%d jobs and still work", jobs);
    raw_hint(s.dave, "get", "<state xmlns='" NS_S "'/>", "state", st, sizeof st);
    raw_hint(s.dave, "set", "<batch xmlns='" NS_S "'/>", "batch", bt, sizeof bt);
    raw_search_hint(s.dave, se, sizeof se);
    IT_CHECK(!st[0] && !bt[0] && !se[0],
             "nothing to lease, yet state compact='%s', batch '%s', search '%s'", st, bt, se);
    for (int i = 0; i < 3; i++)
        tally(s.w[i]);
    IT_CHECK(events_compacted == 0, "INDEX_COMPACTED for explicit jobs");
    check_all(s.w[2], 50);
    it_log("%d explicit jobs left nothing to lease and no answer says \"due\"; every query exact",
           jobs);
    finish(&s);
}

int main(int argc, char **argv)
{
    it_init("it_search_auto");
    if (sodium_init() < 0)
        return 1;
    const char *what = argc > 1 ? argv[1] : "on";
    if (strcmp(what, "on") == 0)
        scenario_on();
    else if (strcmp(what, "off") == 0)
        scenario_off();
    else {
        fprintf(stderr, "usage: it_search_auto on|off\n");
        return 2;
    }
    it_log("it_search_auto %s: ok", what);
    return 0;
}
