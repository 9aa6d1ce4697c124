/* Room history (XEP-0313 MAM with XEP-0059 paging) end to end: three batches
 * of messages from two members, separated in time; then a member pages
 * backwards from the newest with libsealroom (several pages, `before`
 * paging, the complete flag on the last page) and gets every message once,
 * byte for byte, in order, with the live stanza-ids and plausible
 * timestamps; and the same archive is queried over raw stanzas with the
 * start/end time filters, forward `after` paging and the empty `<before/>`
 * (newest page), checking exactly which messages each window returns. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define BATCH 5
#define PAGE 4

typedef struct msg {
    char origin[72];
    char *stanza_id;
    unsigned char payload[64];
    size_t len;
    const char *nick;
    int64_t sent_ms;
} msg;

static msg msgs[3 * BATCH];

static void send_batch(it_lib *l, const char *room, const char *nick, int first)
{
    for (int i = first; i < first + BATCH; i++) {
        msg *m = &msgs[i];
        m->len = 16 + (size_t)i;
        it_random(m->payload, m->len);
        m->nick = nick;
        m->sent_ms = it_wall_ms();
        m->stanza_id = it_lib_say(l, room, m->payload, m->len, m->origin);
    }
}

/* The history MESSAGE events recorded since the last clear, in order. */
static size_t history_events(const it_lib *l, const it_ev **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < l->nev && n < max; i++)
        if (l->ev[i].type == SEALROOM_EVENT_MESSAGE && l->ev[i].history) out[n++] = &l->ev[i];
    return n;
}

static int index_of_sid(const char *sid)
{
    for (int i = 0; i < 3 * BATCH; i++)
        if (sid && strcmp(msgs[i].stanza_id, sid) == 0) return i;
    return -1;
}

/* A raw MAM page must hold exactly msgs[first..last] in order. */
static void check_window(it_raw *rc, const char *room, const char *query, int first, int last,
                         bool complete, const char *what)
{
    it_mam_page page;
    it_raw_mam(rc, room, query, &page);
    it_check_result(page.answer, what);
    size_t want = last >= first ? (size_t)(last - first + 1) : 0;
    IT_CHECK(page.n == want, "%s: %zu results, expected %zu", what, page.n, want);
    for (size_t k = 0; k < page.n; k++) {
        const msg *m = &msgs[first + (int)k];
        /* The archive hands out exactly the sealed bytes it stored. */
        size_t slen = 0;
        unsigned char *stored = it_pg_payload(room, atoll(m->stanza_id), &slen);
        IT_CHECK(stored && slen == m->len + 129, "%s: message %d not stored sealed", what,
                 first + (int)k);
        char *b64 = it_b64(stored, slen);
        free(stored);
        IT_CHECK(strcmp(page.items[k].id, m->stanza_id) == 0 &&
                     strcmp(page.items[k].sealed, b64) == 0 && page.items[k].origin &&
                     strcmp(page.items[k].origin, m->origin) == 0,
                 "%s: result %zu is %s, expected message %d (%s)", what, k, page.items[k].id,
                 first + (int)k, m->stanza_id);
        free(b64);
    }
    IT_CHECK(page.complete == complete, "%s: complete=%d, expected %d", what, page.complete,
             complete);
    if (want) {
        IT_CHECK(page.first && page.last && strcmp(page.first, msgs[first].stanza_id) == 0 &&
                     strcmp(page.last, msgs[last].stanza_id) == 0,
                 "%s: RSM first/last are %s/%s", what, page.first ? page.first : "-",
                 page.last ? page.last : "-");
    }
    it_mam_page_free(&page);
}

static const char *form(char *out, size_t n, const char *start, const char *end, const char *rsm)
{
    int k = snprintf(out, n,
                     "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' "
                     "type='hidden'><value>urn:xmpp:mam:2</value></field>");
    if (start)
        k +=
            snprintf(out + k, n - (size_t)k, "<field var='start'><value>%s</value></field>", start);
    if (end)
        k += snprintf(out + k, n - (size_t)k, "<field var='end'><value>%s</value></field>", end);
    snprintf(out + k, n - (size_t)k, "</x>%s", rsm ? rsm : "");
    return out;
}

int main(void)
{
    it_init("it_history");
    it_lib *alice = it_lib_connect("alice");
    it_lib *bob = it_lib_connect("bob");
    it_lib_register(alice);
    it_lib_register(bob);
    char room[256];
    it_new_room(room, sizeof room, "history");
    it_log("room %s", room);
    it_lib_create(alice, room);
    it_lib_add(alice, room, "bob", SEALROOM_ROLE_MEMBER);
    it_lib_join(alice, room, "alice");
    it_lib_join(bob, room, "bob");

    /* Batches A (alice), B (bob), C (alice), with clock gaps around the
     * boundaries t1 and t2 so the archive's stamps fall clearly on one side
     * (the server stamps with the same clock, at millisecond precision). */
    send_batch(alice, room, "alice", 0);
    it_sleep_ms(5);
    int64_t t1 = it_wall_ms();
    it_sleep_ms(5);
    send_batch(bob, room, "bob", BATCH);
    it_sleep_ms(5);
    int64_t t2 = it_wall_ms();
    it_sleep_ms(5);
    send_batch(alice, room, "alice", 2 * BATCH);
    IT_CHECK(it_pg_count("messages", room) == 3 * BATCH, "messages stored: %ld",
             it_pg_count("messages", room));

    /* libsealroom: newest page first, then `before` the first of each page. */
    it_log("paging back from the newest, %d per page", PAGE);
    int expect_last = 3 * BATCH - 1;
    char *before = NULL;
    int pages = 0;
    for (;;) {
        it_lib_clear(bob);
        uint32_t req = 0;
        IT_OK(sealroom_room_history(it_lib_ctx(bob), &req, room, before, PAGE));
        it_lib_wait_ok(bob, req, "history page");
        pages++;
        const it_ev *done = it_lib_done(bob, req);
        const it_ev *ev[PAGE + 4];
        size_t n = history_events(bob, ev, PAGE + 4);
        int expect_first = expect_last - PAGE + 1 < 0 ? 0 : expect_last - PAGE + 1;
        IT_CHECK(n == (size_t)(expect_last - expect_first + 1),
                 "page %d: %zu messages, expected %d", pages, n, expect_last - expect_first + 1);
        for (size_t k = 0; k < n; k++) {
            int i = expect_first + (int)k;
            const msg *m = &msgs[i];
            IT_CHECK(ev[k]->stanza_id && strcmp(ev[k]->stanza_id, m->stanza_id) == 0,
                     "page %d item %zu: stanza-id %s, expected %s", pages, k,
                     ev[k]->stanza_id ? ev[k]->stanza_id : "(null)", m->stanza_id);
            IT_CHECK(ev[k]->payload_len == m->len &&
                         memcmp(ev[k]->payload, m->payload, m->len) == 0,
                     "page %d: payload of %s differs", pages, m->stanza_id);
            IT_CHECK(ev[k]->nick && strcmp(ev[k]->nick, m->nick) == 0 && ev[k]->origin_id &&
                         strcmp(ev[k]->origin_id, m->origin) == 0,
                     "page %d: %s from '%s' origin '%s'", pages, m->stanza_id,
                     ev[k]->nick ? ev[k]->nick : "", ev[k]->origin_id ? ev[k]->origin_id : "");
            IT_CHECK(ev[k]->ts >= m->sent_ms - 1 && ev[k]->ts <= it_wall_ms() + 1,
                     "page %d: %s stamped %lld, sent at %lld", pages, m->stanza_id,
                     (long long)ev[k]->ts, (long long)m->sent_ms);
            IT_CHECK(i >= BATCH || ev[k]->ts < t1, "batch A message stamped after t1");
            IT_CHECK(i < BATCH || ev[k]->ts >= t1, "a later message stamped before t1");
        }
        IT_CHECK(done->first && done->last &&
                     strcmp(done->first, msgs[expect_first].stanza_id) == 0 &&
                     strcmp(done->last, msgs[expect_last].stanza_id) == 0,
                 "page %d: first/last %s/%s", pages, done->first ? done->first : "-",
                 done->last ? done->last : "-");
        bool last_page = expect_first == 0;
        IT_CHECK(done->complete == (last_page ? 1 : 0), "page %d: complete=%d", pages,
                 done->complete);
        free(before);
        before = strdup(done->first);
        if (last_page) break;
        expect_last = expect_first - 1;
    }
    free(before);
    IT_CHECK(pages == (3 * BATCH + PAGE - 1) / PAGE, "%d pages", pages);

    /* One request with the server's default page size returns everything. */
    {
        it_lib_clear(bob);
        uint32_t req = 0;
        IT_OK(sealroom_room_history(it_lib_ctx(bob), &req, room, NULL, 0));
        it_lib_wait_ok(bob, req, "history with the default page size");
        const it_ev *ev[3 * BATCH + 4];
        size_t n = history_events(bob, ev, 3 * BATCH + 4);
        IT_CHECK(n == 3 * BATCH && it_lib_done(bob, req)->complete, "default page: %zu messages",
                 n);
        for (size_t k = 0; k < n; k++)
            IT_CHECK(index_of_sid(ev[k]->stanza_id) == (int)k, "default page out of order");
    }

    /* Raw MAM: time windows and forward paging. */
    it_log("time filters and forward paging");
    it_raw *raw = it_raw_connect("bob");
    char s1[32], s2[32], q[1024];
    it_format_stamp(s1, t1);
    it_format_stamp(s2, t2);
    check_window(raw, room, form(q, sizeof q, s1, s2, NULL), BATCH, 2 * BATCH - 1, true,
                 "start=t1 end=t2: batch B");
    check_window(raw, room, form(q, sizeof q, s1, NULL, NULL), BATCH, 3 * BATCH - 1, true,
                 "start=t1: batches B and C");
    check_window(raw, room, form(q, sizeof q, NULL, s1, NULL), 0, BATCH - 1, true,
                 "end=t1: batch A");
    {
        char future[32];
        it_format_stamp(future, it_wall_ms() + 3600 * 1000);
        check_window(raw, room, form(q, sizeof q, future, NULL, NULL), 1, 0, true,
                     "start in the future: nothing");
        /* A bound before 1970 is a bound, not "no bound". */
        check_window(raw, room, form(q, sizeof q, NULL, "1969-12-31T23:59:59Z", NULL), 1, 0, true,
                     "end before 1970: nothing");
    }
    /* Forward through B+C three at a time with <after/>. */
    {
        int first = BATCH;
        char after[64] = "";
        while (first < 3 * BATCH) {
            char rsm[200];
            int last = first + 2 < 3 * BATCH - 1 ? first + 2 : 3 * BATCH - 1;
            snprintf(rsm, sizeof rsm,
                     "<set xmlns='http://jabber.org/protocol/rsm'><max>3</max>%s%s%s</set>",
                     *after ? "<after>" : "", after, *after ? "</after>" : "");
            char what[64];
            snprintf(what, sizeof what, "start=t1, forward page from %d", first);
            check_window(raw, room, form(q, sizeof q, s1, NULL, rsm), first, last,
                         last == 3 * BATCH - 1, what);
            snprintf(after, sizeof after, "%s", msgs[last].stanza_id);
            first = last + 1;
        }
    }
    /* The newest page of a window: <before/> empty, within end=t2. */
    check_window(raw, room,
                 form(q, sizeof q, NULL, s2,
                      "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max><before/></set>"),
                 2 * BATCH - 2, 2 * BATCH - 1, false, "end=t2, newest two");
    /* Paging backwards inside a window stops at its start. */
    {
        char rsm[200];
        snprintf(
            rsm, sizeof rsm,
            "<set xmlns='http://jabber.org/protocol/rsm'><max>10</max><before>%s</before></set>",
            msgs[BATCH + 2].stanza_id);
        check_window(raw, room, form(q, sizeof q, s1, s2, rsm), BATCH, BATCH + 1, true,
                     "start=t1 end=t2 before the third of B");
    }
    it_raw_free(raw);

    for (int i = 0; i < 3 * BATCH; i++)
        free(msgs[i].stanza_id);
    it_lib_free(alice);
    it_lib_free(bob);
    it_log("passed");
    return 0;
}
