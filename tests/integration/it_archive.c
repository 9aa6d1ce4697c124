/* Archive re-encryption through the real stack (issue 5). Scenarios (first
 * argument):
 *   late     a member added after N messages (default 10,000; argument 2
 *            changes it) reads every one of them at once: the member who
 *            made the new epoch sent its token, sealroomd re-keys each old
 *            header on its way out (the lazy path), and the newcomer holds
 *            only the new epoch's key;
 *   removal  after a removal and the sweep, no header stored in PostgreSQL
 *            opens under any epoch key the removed member held (read from
 *            its ctx through the test hook), while the current key opens
 *            every one of them to the data key its sender made;
 *   erase    after messages over two epoch changes, the sweep completes, a
 *            present member confirms the re-keyed check header and the
 *            room's tokens are deleted from PostgreSQL; every message still
 *            opens for a new session of a current member and for a member
 *            added afterwards, and the token of that addition is erased
 *            in turn.
 * Refused tokens and answers to a check are in it_archive_component.
 * It needs the dev stack's environment (contrib/sealroom-dev). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "e2e/archive.h"
#include "e2e_common.h"
#include "testhook.h"

#define WAIT_MS 120000u

static char room[256];

static uint64_t epoch_of(e2e_lib *w)
{
    uint64_t e = 0;
    return sealroom_room_epoch(e2e_ctx(w), &e, room) == SEALROOM_OK ? e : 0;
}

static long long pg_scalar(const char *sql, const char *a, const char *b)
{
    const char *p[2] = {a, b};
    PGresult *res = e2e_pg_exec(sql, b ? 2 : 1, p, false);
    long long v = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

static long long tokens_stored(void)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", e2e_room_id(room));
    return pg_scalar("SELECT count(*) FROM archive_tokens WHERE room_id = $1", id, NULL);
}

/* Send n messages from w, pipelined through the library's outbox. */
static void send_many(e2e_lib *w, int n, int tag)
{
    const int window = 200;
    uint32_t *req = calloc((size_t)n, sizeof *req);
    IT_CHECK(req != NULL, "out of memory");
    int sent = 0, done = 0;
    while (done < n) {
        while (sent < n && sent - done < window) {
            char text[64], origin[72];
            int len = snprintf(text, sizeof text, "m%d-%d", tag, sent);
            IT_OK(sealroom_room_send(e2e_ctx(w), &req[sent], origin, sizeof origin, room,
                                     (const unsigned char *)text, (size_t)len));
            sent++;
        }
        (void)sealroom_client_run(w->l->client, 2);
        it_lib_pump_others(w->l);
        while (done < sent && it_lib_done(w->l, req[done])) {
            IT_CHECK(it_lib_done(w->l, req[done])->result == SEALROOM_OK, "message %d failed",
                     done);
            done++;
        }
    }
    free(req);
}

static void scenario_late(int n)
{
    e2e_lib *alice = e2e_connect("alice", true), *bob = e2e_connect("bob", true),
            *carol = e2e_connect("carol", true);
    it_lib_register(alice->l);
    it_lib_register(bob->l);
    it_lib_register(carol->l);
    it_new_room(room, sizeof room, "archive-late");
    it_lib_create(alice->l, room);
    it_lib_add(alice->l, room, "bob", SEALROOM_ROLE_MEMBER);
    it_lib_join(alice->l, room, "alice");
    it_lib_join(bob->l, room, "bob");
    uint64_t t0 = it_mono_ms();
    send_many(alice, n / 2, 1);
    send_many(bob, n - n / 2, 2);
    it_log("%d messages stored in %llu ms", n, (unsigned long long)(it_mono_ms() - t0));
    uint64_t before = epoch_of(alice);
    it_lib_add(alice->l, room, "carol", SEALROOM_ROLE_MEMBER);
    uint64_t e = epoch_of(alice);
    IT_CHECK(e == before + 1, "adding carol made epoch %llu after %llu", (unsigned long long)e,
             (unsigned long long)before);
    /* The token of that epoch reaches the service. */
    uint64_t end = it_mono_ms() + WAIT_MS;
    while (tokens_stored() < 1) {
        IT_CHECK(it_mono_ms() < end, "no token stored for epoch %llu", (unsigned long long)e);
        it_lib_pump_others(NULL);
        it_sleep_ms(20);
    }
    it_lib_join(carol->l, room, "carol");
    t0 = it_mono_ms();
    int rc = e2e_read_history(carol, room);
    uint64_t ms = it_mono_ms() - t0;
    IT_CHECK(rc == SEALROOM_OK, "carol's history read failed: %d", rc);
    int got = 0, rejected = 0;
    for (size_t i = 0; i < carol->l->nev; i++) {
        const it_ev *ev = &carol->l->ev[i];
        if (!ev->history || !ev->room || strcmp(ev->room, room) != 0) continue;
        if (ev->type == SEALROOM_EVENT_MESSAGE) got++;
        if (ev->type == SEALROOM_EVENT_MESSAGE_REJECTED) rejected++;
    }
    IT_CHECK(got == n && rejected == 0,
             "carol, added after %d messages, read %d of them (%d refused)", n, got, rejected);
    /* carol holds no key of the earlier epochs: she read them through re-keyed headers. */
    uint64_t held = 0;
    IT_CHECK(sealroom_room_epoch(e2e_ctx(carol), &held, room) == SEALROOM_OK && held == e,
             "carol holds epoch %llu, expected %llu", (unsigned long long)held,
             (unsigned long long)e);
    it_log("carol, added after %d messages, read all of them in %llu ms", n,
           (unsigned long long)ms);
    e2e_lib_free(alice);
    e2e_lib_free(bob);
    e2e_lib_free(carol);
}

/* History messages of room w has events for: read, refused. */
static void count_history(const e2e_lib *w, int *got, int *rejected)
{
    *got = *rejected = 0;
    for (size_t i = 0; i < w->l->nev; i++) {
        const it_ev *ev = &w->l->ev[i];
        if (!ev->history || !ev->room || strcmp(ev->room, room) != 0) continue;
        if (ev->type == SEALROOM_EVENT_MESSAGE) (*got)++;
        if (ev->type == SEALROOM_EVENT_MESSAGE_REJECTED) (*rejected)++;
    }
}

/* Wait until the room has no header behind epoch c and no token stored,
 * pumping every client (one of them answers the room's check). */
static void wait_erased(uint64_t c)
{
    char id[24], ce[24];
    snprintf(id, sizeof id, "%lld", e2e_room_id(room));
    snprintf(ce, sizeof ce, "%llu", (unsigned long long)c);
    uint64_t end = it_mono_ms() + WAIT_MS;
    for (;;) {
        long long behind = pg_scalar(
                      "SELECT count(*) FROM datakeys WHERE room_id = $1 AND epoch < $2", id, ce),
                  left = tokens_stored();
        if (behind == 0 && left == 0) break;
        IT_CHECK(it_mono_ms() < end, "epoch %llu: %lld header(s) behind, %lld token(s) not erased",
                 (unsigned long long)c, behind, left);
        it_lib_pump_others(NULL);
        it_sleep_ms(20);
    }
}

/* w asks for a new epoch; every member in all[] holds it. */
static uint64_t rekey(e2e_lib *w, e2e_lib *const *all, size_t n)
{
    uint64_t before = epoch_of(w);
    uint32_t req = 0;
    IT_OK(sealroom_room_rekey(e2e_ctx(w), &req, room));
    it_lib_wait_ok(w->l, req, "rekey");
    uint64_t end = it_mono_ms() + WAIT_MS;
    for (size_t i = 0; i < n; i++)
        while (epoch_of(all[i]) != before + 1) {
            IT_CHECK(it_mono_ms() < end, "%s did not reach epoch %llu", all[i]->l->user,
                     (unsigned long long)(before + 1));
            it_lib_pump_others(NULL);
            it_sleep_ms(10);
        }
    return before + 1;
}

static void scenario_erase(void)
{
    const int per = 20; /* messages per member and epoch */
    e2e_lib *grace = e2e_connect("grace", true), *heidi = e2e_connect("heidi", true),
            *ivan = e2e_connect("ivan", true);
    it_lib_register(grace->l);
    it_lib_register(heidi->l);
    it_lib_register(ivan->l);
    it_new_room(room, sizeof room, "archive-erase");
    it_lib_create(grace->l, room);
    it_lib_add(grace->l, room, "heidi", SEALROOM_ROLE_MEMBER);
    it_lib_join(grace->l, room, "grace");
    it_lib_join(heidi->l, room, "heidi");
    e2e_lib *both[2] = {grace, heidi};
    uint64_t first = epoch_of(grace);
    send_many(grace, per, 1);
    send_many(heidi, per, 2);
    rekey(grace, both, 2);
    send_many(grace, per, 3);
    send_many(heidi, per, 4);
    uint64_t c = rekey(heidi, both, 2);
    send_many(grace, per, 5);
    send_many(heidi, per, 6);
    IT_CHECK(c == first + 2, "epochs %llu to %llu", (unsigned long long)first,
             (unsigned long long)c);
    wait_erased(c);
    /* Headers registered in the two earlier epochs are at epoch c now: the
     * tokens were there and did their work before they went. */
    char id[24], ce[24];
    snprintf(id, sizeof id, "%lld", e2e_room_id(room));
    snprintf(ce, sizeof ce, "%llu", (unsigned long long)c);
    long long older = pg_scalar("SELECT count(DISTINCT created_epoch) FROM datakeys "
                                "WHERE room_id = $1 AND created_epoch < $2 AND epoch = $2",
                                id, ce);
    IT_CHECK(older == 2, "headers of %lld earlier epoch(s) moved to epoch %llu, expected 2", older,
             (unsigned long long)c);
    it_log("the sweep to epoch %llu is complete and the room's tokens are erased",
           (unsigned long long)c);

    /* A new session of a current member reads every message. */
    e2e_lib_free(heidi);
    heidi = e2e_connect("heidi", true);
    it_lib_join(heidi->l, room, "heidi");
    int got, rejected, rc = e2e_read_history(heidi, room);
    IT_CHECK(rc == SEALROOM_OK, "heidi's history read failed: %d", rc);
    count_history(heidi, &got, &rejected);
    IT_CHECK(got == 6 * per && rejected == 0, "heidi read %d of %d messages (%d refused)", got,
             6 * per, rejected);

    /* So does a member added afterwards, holding only the epoch of the
     * addition: the headers reach it with the one token made since. */
    it_lib_add(grace->l, room, "ivan", SEALROOM_ROLE_MEMBER);
    uint64_t end = it_mono_ms() + WAIT_MS;
    while (epoch_of(grace) != c + 1) {
        IT_CHECK(it_mono_ms() < end, "adding ivan made no epoch %llu", (unsigned long long)(c + 1));
        it_lib_pump_others(NULL);
        it_sleep_ms(10);
    }
    it_lib_join(ivan->l, room, "ivan");
    rc = e2e_read_history(ivan, room);
    IT_CHECK(rc == SEALROOM_OK, "ivan's history read failed: %d", rc);
    count_history(ivan, &got, &rejected);
    IT_CHECK(got == 6 * per && rejected == 0, "ivan read %d of %d messages (%d refused)", got,
             6 * per, rejected);
    uint64_t held = 0;
    IT_CHECK(sealroom_room_epoch(e2e_ctx(ivan), &held, room) == SEALROOM_OK && held == c + 1,
             "ivan holds epoch %llu, expected %llu", (unsigned long long)held,
             (unsigned long long)(c + 1));
    /* The token of that epoch goes the same way. */
    wait_erased(c + 1);
    it_log("%d messages over epochs %llu..%llu read by a new session of heidi and by ivan; "
           "the tokens into epoch %llu erased too",
           6 * per, (unsigned long long)first, (unsigned long long)c, (unsigned long long)(c + 1));
    e2e_lib_free(grace);
    e2e_lib_free(heidi);
    e2e_lib_free(ivan);
}

typedef struct keys {
    const char *what; /* testhook name collected */
    unsigned char (*k)[32];
    uint64_t *epoch;
    size_t n;
} keys;

static void collect(void *user, const char *what, const char *r, uint64_t epoch,
                    const unsigned char *secret, size_t len)
{
    keys *ks = user;
    if (strcmp(what, ks->what) != 0 || !r || strcmp(r, room) != 0 || len != 32) return;
    ks->k = realloc(ks->k, (ks->n + 1) * 32);
    ks->epoch = realloc(ks->epoch, (ks->n + 1) * sizeof *ks->epoch);
    IT_CHECK(ks->k && ks->epoch, "out of memory");
    memcpy(ks->k[ks->n], secret, 32);
    ks->epoch[ks->n++] = epoch;
}

static void keys_free(keys *ks)
{
    if (ks->k) sodium_memzero(ks->k, ks->n * 32);
    free(ks->k);
    free(ks->epoch);
}

static void scenario_removal(void)
{
    e2e_lib *dave = e2e_connect("dave", true), *eve = e2e_connect("eve", true),
            *frank = e2e_connect("frank", true);
    it_lib_register(dave->l);
    it_lib_register(eve->l);
    it_lib_register(frank->l);
    it_new_room(room, sizeof room, "archive-removal");
    it_lib_create(dave->l, room);
    it_lib_add(dave->l, room, "eve", SEALROOM_ROLE_MEMBER);
    it_lib_add(dave->l, room, "frank", SEALROOM_ROLE_MEMBER);
    it_lib_join(dave->l, room, "dave");
    it_lib_join(eve->l, room, "eve");
    it_lib_join(frank->l, room, "frank");
    send_many(dave, 50, 1);
    send_many(eve, 50, 2);
    send_many(frank, 50, 3);
    /* Every epoch key eve's ctx ever held for the room. */
    keys evek = {.what = "epoch.k"};
    sr_testhook_secrets(e2e_ctx(eve), collect, &evek);
    IT_CHECK(evek.n >= 1, "eve holds no epoch key");
    uint32_t req = 0;
    IT_OK(sealroom_room_remove_member(e2e_ctx(dave), &req, room, eve->l->bare));
    it_lib_wait_ok(dave->l, req, "removing eve");
    uint64_t c = epoch_of(dave);
    char id[24], ce[24];
    snprintf(id, sizeof id, "%lld", e2e_room_id(room));
    snprintf(ce, sizeof ce, "%llu", (unsigned long long)c);
    /* Wait for the sweep: no header behind the current epoch. */
    uint64_t end = it_mono_ms() + WAIT_MS;
    while (pg_scalar("SELECT count(*) FROM datakeys WHERE room_id = $1 AND epoch < $2", id, ce)) {
        IT_CHECK(it_mono_ms() < end, "the sweep did not re-key the room's headers");
        it_lib_pump_others(NULL);
        it_sleep_ms(50);
    }
    /* dave's key of epoch c, and the data keys dave made himself. */
    keys dk = {.what = "epoch.k"}, dp = {.what = "datakey.p"};
    sr_testhook_secrets(e2e_ctx(dave), collect, &dk);
    sr_testhook_secrets(e2e_ctx(dave), collect, &dp);
    const unsigned char *kc = NULL;
    for (size_t i = 0; i < dk.n; i++)
        if (dk.epoch[i] == c) kc = dk.k[i];
    IT_CHECK(kc != NULL, "dave holds no key for epoch %llu", (unsigned long long)c);
    for (size_t k = 0; k < evek.n; k++)
        IT_CHECK(sodium_memcmp(evek.k[k], kc, 32) != 0, "eve held the key of epoch %llu",
                 (unsigned long long)c);
    const char *p[1] = {id};
    PGresult *res = e2e_pg_exec("SELECT header, sender FROM datakeys WHERE room_id = $1", 1, p, true);
    int rows = PQntuples(res), daves = 0;
    IT_CHECK(rows >= 3, "only %d headers stored", rows);
    for (int row = 0; row < rows; row++) {
        size_t len = 0;
        unsigned char *h = e2e_pg_bytea(res, row, 0, &len);
        IT_CHECK(h && len == 32, "header %d damaged", row);
        unsigned char p_true[32], p_eve[32];
        IT_CHECK(sr_e2e_header_unwrap(p_true, kc, h) == SR_E2E_OK, "header %d: no point", row);
        /* The control: dave's own headers open under k_c to the data keys he made. */
        if (strcmp(PQgetvalue(res, row, 1), dave->l->bare) == 0) {
            bool mine = false;
            for (size_t i = 0; i < dp.n && !mine; i++) mine = memcmp(dp.k[i], p_true, 32) == 0;
            IT_CHECK(mine, "a header of dave's opens under k_%llu to no data key of his",
                     (unsigned long long)c);
            daves++;
        }
        for (size_t k = 0; k < evek.n; k++)
            IT_CHECK(sr_e2e_header_unwrap(p_eve, evek.k[k], h) != SR_E2E_OK ||
                         sodium_memcmp(p_eve, p_true, 32) != 0,
                     "eve's key of epoch %llu opens a stored header",
                     (unsigned long long)evek.epoch[k]);
        sodium_memzero(p_true, sizeof p_true);
        free(h);
    }
    IT_CHECK(daves >= 1, "no header of dave's stored");
    it_log("%d headers at epoch %llu; none opens under any of eve's %zu epoch keys", rows,
           (unsigned long long)c, evek.n);
    PQclear(res);
    keys_free(&evek);
    keys_free(&dk);
    keys_free(&dp);
    e2e_lib_free(dave);
    e2e_lib_free(eve);
    e2e_lib_free(frank);
}

int main(int argc, char **argv)
{
    it_init("it_archive");
    if (sodium_init() < 0) return 1;
    const char *what = argc > 1 ? argv[1] : "late";
    if (strcmp(what, "late") == 0) scenario_late(argc > 2 ? atoi(argv[2]) : 10000);
    else if (strcmp(what, "removal") == 0) scenario_removal();
    else if (strcmp(what, "erase") == 0) scenario_erase();
    else {
        fprintf(stderr, "usage: it_archive late [N]|removal|erase\n");
        return 2;
    }
    it_log("it_archive %s: ok", what);
    return 0;
}
