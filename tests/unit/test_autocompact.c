/* Unit tests for automatic compaction: the policy alone
 * (search/autocompact.c: one job at a time, on while leases come, stop on
 * item-not-found, back-off after failures) and its wiring in a sans-I/O
 * core (sseauto.c) against a scripted room: the IQs it sends after a
 * compact='due' answer, a whole job to its commit and event, the back-off,
 * the switch, leaving, losing the link and freeing the ctx mid-job. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "internal.h"
#include "search/autocompact.h"
#include "search/keyring.h"
#include "sse.h"

/* ---- the policy ---- */

static void test_policy_one_at_a_time(void **state)
{
    (void)state;
    sr_sse_autocompact a = {0};
    assert_false(sr_sse_autocompact_tick(&a, 5));
    assert_true(sr_sse_autocompact_due(&a, 5));
    sr_sse_autocompact_started(&a);
    /* While the job runs, more "due" answers start nothing. */
    assert_false(sr_sse_autocompact_due(&a, 6));
    assert_false(sr_sse_autocompact_tick(&a, 7));
    /* A commit asks for the next lease at once, due heard or not. */
    assert_true(sr_sse_autocompact_done(&a, SR_SSE_AUTO_COMMITTED, 8));
    sr_sse_autocompact_started(&a);
    assert_true(sr_sse_autocompact_done(&a, SR_SSE_AUTO_COMMITTED, 9));
    sr_sse_autocompact_started(&a);
    assert_false(a.pending);
    assert_true(a.running);
}

static void test_policy_stops_on_nothing(void **state)
{
    (void)state;
    sr_sse_autocompact a = {0};
    assert_true(sr_sse_autocompact_due(&a, 1));
    sr_sse_autocompact_started(&a);
    assert_false(sr_sse_autocompact_due(&a, 2)); /* heard mid-job */
    assert_false(sr_sse_autocompact_done(&a, SR_SSE_AUTO_NOTHING, 3));
    /* The room's "nothing" is newer than the "due" heard before it. */
    assert_false(sr_sse_autocompact_tick(&a, 4));
    assert_false(sr_sse_autocompact_tick(&a, 1000000));
    assert_int_equal(a.failures, 0);
    /* A new "due" starts again at once. */
    assert_true(sr_sse_autocompact_due(&a, 5));
}

static void test_policy_backs_off(void **state)
{
    (void)state;
    sr_sse_autocompact a = {0};
    uint64_t t = 1000;
    uint64_t expect = SR_SSE_AUTO_BACKOFF_MS;
    for (int i = 0; i < 12; i++) {
        assert_true(sr_sse_autocompact_due(&a, t));
        sr_sse_autocompact_started(&a);
        assert_false(sr_sse_autocompact_done(&a, SR_SSE_AUTO_FAILED, t));
        assert_int_equal(a.resume_ms, t + expect);
        /* No retry by itself: not at the end of the back-off either. */
        assert_false(sr_sse_autocompact_tick(&a, t + expect));
        /* A "due" during the back-off waits for its end. */
        assert_false(sr_sse_autocompact_due(&a, t + 1));
        assert_false(sr_sse_autocompact_tick(&a, t + expect - 1));
        assert_true(sr_sse_autocompact_tick(&a, t + expect));
        t += expect;
        expect = expect * 2 > SR_SSE_AUTO_BACKOFF_MAX_MS ? SR_SSE_AUTO_BACKOFF_MAX_MS : expect * 2;
    }
    assert_int_equal(expect, SR_SSE_AUTO_BACKOFF_MAX_MS);
    /* A commit ends the back-off. */
    sr_sse_autocompact_started(&a);
    assert_true(sr_sse_autocompact_done(&a, SR_SSE_AUTO_COMMITTED, t));
    assert_int_equal(a.failures, 0);
    assert_int_equal(a.resume_ms, 0);
    sr_sse_autocompact_started(&a);
    assert_false(sr_sse_autocompact_done(&a, SR_SSE_AUTO_FAILED, t));
    assert_int_equal(a.resume_ms, t + SR_SSE_AUTO_BACKOFF_MS);
}

static void test_policy_cancel_and_forget(void **state)
{
    (void)state;
    sr_sse_autocompact a = {0};
    assert_true(sr_sse_autocompact_due(&a, 1));
    sr_sse_autocompact_started(&a);
    assert_false(sr_sse_autocompact_due(&a, 2));
    /* Cancelled (left, link lost): no back-off, nothing pending. */
    assert_false(sr_sse_autocompact_done(&a, SR_SSE_AUTO_CANCELLED, 3));
    assert_int_equal(a.resume_ms, 0);
    assert_false(sr_sse_autocompact_tick(&a, 4));
    /* Switched off: a "due" not acted on is forgotten. */
    a.running = true;
    assert_false(sr_sse_autocompact_due(&a, 5));
    sr_sse_autocompact_forget(&a);
    a.running = false;
    assert_false(sr_sse_autocompact_tick(&a, 6));
}

/* ---- the wiring, against a scripted room ---- */

#define ROOM "team@rooms.localhost"
#define ME "alice@localhost/t"
#define NS_S "urn:xmpp:sealroom:search:0"
#define MAX_OUT 64

typedef struct fixture {
    sealroom_ctx *ctx;
    sr_room *room;
    xmpp_ctx_t *x;          /* parses what the core sends */
    char *out[MAX_OUT];     /* stanzas sent, oldest first */
    size_t nout;
    int compacted;          /* INDEX_COMPACTED events for ROOM */
    uint64_t now;
} fixture;

static int send_cb(void *user, const char *xml, size_t len)
{
    fixture *f = user;
    assert_true(f->nout < MAX_OUT);
    f->out[f->nout] = malloc(len + 1);
    assert_non_null(f->out[f->nout]);
    memcpy(f->out[f->nout], xml, len + 1);
    f->nout++;
    return 0;
}

static void event_cb(void *user, const sealroom_event *ev)
{
    fixture *f = user;
    if (sealroom_event_get_type(ev) == SEALROOM_EVENT_INDEX_COMPACTED) {
        assert_string_equal(sealroom_event_room(ev), ROOM);
        f->compacted++;
    }
    /* An auto job never completes as a request of the application. */
    if (sealroom_event_get_type(ev) == SEALROOM_EVENT_REQUEST_DONE)
        assert_int_not_equal(sealroom_event_request_kind(ev), SEALROOM_REQ_COMPACT);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    sealroom_callbacks cb = {0};
    cb.struct_size = sizeof cb;
    cb.send_xml = send_cb;
    cb.on_event = event_cb;
    cb.user = f;
    assert_int_equal(sealroom_ctx_new(&f->ctx, ME, "rooms.localhost", &cb), SEALROOM_OK);
    sealroom_identity *id = NULL;
    assert_int_equal(sealroom_identity_generate(&id), SEALROOM_OK);
    assert_int_equal(sealroom_ctx_set_identity(f->ctx, id), SEALROOM_OK);
    sealroom_identity_free(id);
    f->x = xmpp_ctx_new(NULL, NULL);
    assert_non_null(f->x);
    /* A room we are in, whose search state and keyring we know. */
    f->room = sr_room_get(f->ctx, ROOM);
    assert_non_null(f->room);
    f->room->want_joined = f->room->joined = true;
    f->room->nick = sr_strdup("alice");
    sr_sse_room *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->state_known = true;
    s->gen = 1;
    s->last_batch = 8;
    s->keyring = calloc(1, sizeof *s->keyring);
    assert_non_null(s->keyring);
    unsigned char kg[32];
    randombytes_buf(kg, sizeof kg);
    assert_int_equal(sr_sse_keyring_put(s->keyring, 1, kg), SR_E2E_OK);
    sodium_memzero(kg, sizeof kg);
    f->room->sse = s;
    f->now = 1000;
    sealroom_ctx_tick(f->ctx, f->now);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    sealroom_ctx_free(f->ctx);
    for (size_t i = 0; i < f->nout; i++)
        free(f->out[i]);
    xmpp_ctx_free(f->x);
    free(f);
    return 0;
}

/* The newest IQ sent whose child is `child`, parsed (caller releases),
 * and how many such IQs were sent in all. */
static xmpp_stanza_t *sent_iq(fixture *f, const char *child, int *count)
{
    xmpp_stanza_t *last = NULL;
    *count = 0;
    for (size_t i = 0; i < f->nout; i++) {
        xmpp_stanza_t *st = xmpp_stanza_new_from_string(f->x, f->out[i]);
        xmpp_stanza_t *c = st && strcmp(xmpp_stanza_get_name(st), "iq") == 0
                               ? xmpp_stanza_get_child_by_name_and_ns(st, child, NS_S)
                               : NULL;
        if (c) {
            ++*count;
            if (last)
                xmpp_stanza_release(last);
            last = st;
        } else if (st) {
            xmpp_stanza_release(st);
        }
    }
    return last;
}

static int count_iqs(fixture *f, const char *child)
{
    int n;
    xmpp_stanza_t *st = sent_iq(f, child, &n);
    if (st)
        xmpp_stanza_release(st);
    return n;
}

/* Answer the newest IQ with child `child` with body (a result's child, or
 * an <error/>: type error). */
static void answer(fixture *f, const char *child, const char *type, const char *body)
{
    int n;
    xmpp_stanza_t *st = sent_iq(f, child, &n);
    assert_non_null(st);
    assert_string_equal(xmpp_stanza_get_to(st), ROOM);
    char xml[2048];
    snprintf(xml, sizeof xml, "<iq type='%s' id='%s' from='" ROOM "' to='" ME "'>%s</iq>", type,
             xmpp_stanza_get_id(st), body);
    xmpp_stanza_release(st);
    assert_int_equal(sealroom_ctx_receive_xml(f->ctx, xml, strlen(xml)), 1);
}

static void note_due(fixture *f, const char *value)
{
    xmpp_stanza_t *el = xmpp_stanza_new(f->x);
    xmpp_stanza_set_name(el, "result");
    xmpp_stanza_set_ns(el, NS_S);
    xmpp_stanza_set_attribute(el, "batch", "8");
    if (value)
        xmpp_stanza_set_attribute(el, "compact", value);
    sr_sse_auto_note(f->ctx, f->room, el);
    xmpp_stanza_release(el);
}

static void tick(fixture *f, uint64_t ms)
{
    f->now += ms;
    sealroom_ctx_tick(f->ctx, f->now);
}

#define LEASE(count)                                                                          \
    "<lease xmlns='" NS_S "' id='7' segment='3' gen='1' first='1' last='8' "               \
    "expires='2030-01-01T00:00:00.000Z' count='" count "'/>"
#define NOT_FOUND_ERR                                                                         \
    "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"     \
    "</error>"

/* A whole job to its commit, the event, the next lease asked for at once,
 * and item-not-found ending the run. */
static void test_wiring_runs_until_nothing(void **state)
{
    fixture *f = *state;
    sr_sse_room *s = f->room->sse;
    note_due(f, NULL);
    note_due(f, "later");
    assert_int_equal(count_iqs(f, "compact"), 0);
    note_due(f, "due");
    assert_int_equal(count_iqs(f, "compact"), 1);
    assert_true(s->auto_request != 0);
    /* One at a time. */
    note_due(f, "due");
    tick(f, 100);
    assert_int_equal(count_iqs(f, "compact"), 1);

    answer(f, "compact", "result", LEASE("1"));
    int n;
    xmpp_stanza_t *fetch = sent_iq(f, "fetch", &n);
    assert_int_equal(n, 1);
    assert_string_equal(
        xmpp_stanza_get_attribute(xmpp_stanza_get_child_by_name_and_ns(fetch, "fetch", NS_S),
                                  "lease"),
        "7");
    xmpp_stanza_release(fetch);
    /* The inbox's part (decrypting the lease's one message) done by hand. */
    sr_request *r = sr_request_by_id(f->ctx, s->auto_request);
    assert_non_null(r);
    assert_int_equal(r->kind, SEALROOM_REQ_COMPACT);
    sr_sse_compaction_take(f->ctx, r->sse, "42", (const unsigned char *)"invoice paid", 12);
    answer(f, "fetch", "result",
           "<result xmlns='" NS_S "' lease='7' complete='true'>"
           "<set xmlns='http://jabber.org/protocol/rsm'/></result>");
    assert_int_equal(count_iqs(f, "segment-part"), 1);
    answer(f, "segment-part", "result", "");
    assert_int_equal(count_iqs(f, "segment-commit"), 1);
    assert_int_equal(f->compacted, 0);
    answer(f, "segment-commit", "result", "");
    assert_int_equal(f->compacted, 1);
    /* The next lease is asked for without another "due". */
    assert_int_equal(count_iqs(f, "compact"), 2);
    answer(f, "compact", "error", NOT_FOUND_ERR);
    assert_int_equal(s->auto_request, 0);
    assert_false(s->autoc.running);
    assert_int_equal(s->autoc.failures, 0);
    tick(f, 60000);
    assert_int_equal(count_iqs(f, "compact"), 2);
    assert_int_equal(sealroom_ctx_outbox_size(f->ctx), 0);
}

/* A failure (a malformed lease; a lease that expired mid-job) backs off,
 * and the next job waits for the room's word and the back-off's end. */
static void test_wiring_backs_off(void **state)
{
    fixture *f = *state;
    sr_sse_room *s = f->room->sse;
    note_due(f, "due");
    answer(f, "compact", "result", "<lease xmlns='" NS_S "' id='7'/>");
    assert_int_equal(s->auto_request, 0);
    assert_int_equal(s->autoc.failures, 1);
    assert_int_equal(s->autoc.resume_ms, f->now + SR_SSE_AUTO_BACKOFF_MS);
    tick(f, SR_SSE_AUTO_BACKOFF_MS);
    assert_int_equal(count_iqs(f, "compact"), 1); /* nobody said "due" */
    note_due(f, "due");
    assert_int_equal(count_iqs(f, "compact"), 2); /* the back-off is over */
    answer(f, "compact", "result", LEASE("1"));
    uint64_t t = f->now;
    answer(f, "fetch", "error",
           "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
           "<lease-expired xmlns='urn:xmpp:sealroom:0'/></error>");
    /* item-not-found after the lease: it expired, the work is still there. */
    assert_int_equal(s->autoc.failures, 2);
    assert_int_equal(s->autoc.resume_ms, t + 2 * SR_SSE_AUTO_BACKOFF_MS);
    note_due(f, "due");
    tick(f, 2 * SR_SSE_AUTO_BACKOFF_MS - 1000);
    assert_int_equal(count_iqs(f, "compact"), 2);
    tick(f, 1000);
    assert_int_equal(count_iqs(f, "compact"), 3);
    assert_int_equal(f->compacted, 0);
}

/* Switched off: nothing starts, and a "due" heard before is forgotten. */
static void test_wiring_switch(void **state)
{
    fixture *f = *state;
    sealroom_ctx_set_auto_compact(NULL, 0);
    sealroom_ctx_set_auto_compact(f->ctx, 0);
    note_due(f, "due");
    tick(f, 1000);
    assert_int_equal(count_iqs(f, "compact"), 0);
    /* Off with a "due" waiting (it came while we could not run a job). */
    sealroom_ctx_set_auto_compact(f->ctx, 1);
    f->room->joined = false;
    note_due(f, "due");
    sealroom_ctx_set_auto_compact(f->ctx, 0);
    f->room->joined = true;
    sealroom_ctx_set_auto_compact(f->ctx, 1);
    tick(f, 1000);
    assert_int_equal(count_iqs(f, "compact"), 0);
    /* Not joined yet: the "due" waits for the room. */
    f->room->joined = false;
    note_due(f, "due");
    tick(f, 1000);
    assert_int_equal(count_iqs(f, "compact"), 0);
    f->room->joined = true;
    tick(f, 1000);
    assert_int_equal(count_iqs(f, "compact"), 1);
}

/* Leaving ends the job (its late answers go nowhere), with no back-off;
 * so does losing the link; freeing the ctx mid-job leaks nothing (ASan). */
static void test_wiring_leave_link_free(void **state)
{
    fixture *f = *state;
    sr_sse_room *s = f->room->sse;
    note_due(f, "due");
    answer(f, "compact", "result", LEASE("1"));
    assert_int_equal(count_iqs(f, "fetch"), 1);
    uint32_t req = 0;
    assert_int_equal(sealroom_room_leave(f->ctx, &req, ROOM), SEALROOM_OK);
    assert_int_equal(s->auto_request, 0);
    assert_false(s->autoc.running);
    assert_int_equal(s->autoc.resume_ms, 0);
    answer(f, "fetch", "result",
           "<result xmlns='" NS_S "' lease='7' complete='true'>"
           "<set xmlns='http://jabber.org/protocol/rsm'/></result>");
    assert_int_equal(count_iqs(f, "segment-part") + count_iqs(f, "segment-commit"), 0);
    note_due(f, "due");
    assert_int_equal(count_iqs(f, "compact"), 1);
    const char *gone = "<presence from='" ROOM "/alice' to='" ME "' type='unavailable'>"
                       "<x xmlns='http://jabber.org/protocol/muc#user'><status code='110'/></x>"
                       "</presence>";
    assert_int_equal(sealroom_ctx_receive_xml(f->ctx, gone, strlen(gone)), 1);
    assert_false(f->room->joined);

    /* Back in: the link drops mid-job. */
    f->room->want_joined = f->room->joined = true;
    note_due(f, "due");
    assert_int_equal(count_iqs(f, "compact"), 2);
    sealroom_ctx_link_down(f->ctx);
    assert_int_equal(s->auto_request, 0);
    assert_int_equal(s->autoc.resume_ms, 0);
    assert_int_equal(sealroom_ctx_link_up(f->ctx), SEALROOM_OK);
    f->room->joined = true;    /* the rejoin, as the room would confirm it */
    s->state_known = true;     /* the state, as fetched again */

    /* Removed without leaving: the next tick ends the job. */
    note_due(f, "due");
    assert_int_equal(count_iqs(f, "compact"), 3);
    f->room->want_joined = false;
    tick(f, 1000);
    assert_int_equal(s->auto_request, 0);

    /* Freed with a job in flight. */
    f->room->want_joined = true;
    note_due(f, "due");
    assert_int_equal(count_iqs(f, "compact"), 4);
    answer(f, "compact", "result", LEASE("2"));
    assert_true(s->auto_request != 0);
    assert_int_equal(f->compacted, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_one_at_a_time),
        cmocka_unit_test(test_policy_stops_on_nothing),
        cmocka_unit_test(test_policy_backs_off),
        cmocka_unit_test(test_policy_cancel_and_forget),
        cmocka_unit_test_setup_teardown(test_wiring_runs_until_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wiring_backs_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wiring_switch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wiring_leave_link_free, setup, teardown),
    };
    return cmocka_run_group_tests_name("autocompact", tests, NULL, NULL);
}
