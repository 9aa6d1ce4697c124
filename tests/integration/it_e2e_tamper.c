/* A malicious service tampering with what it stores (issue 3 item 6). For
 * each case a fresh room: alice (owner), bob and carol; two messages in
 * one epoch, a rekey, three in the next. Then the test edits PostgreSQL as
 * the service could: a bit of a stored data-key header, of a ciphertext, of
 * a signature; the associated data (origin-id, sender column); a sender
 * rewritten to another member (sender and nick); a message inserted from a
 * non-member that is otherwise perfectly sealed (it even uses the room's
 * real epoch key, taken from alice's ctx); carol's envelope replaced by her
 * envelope of the previous epoch, or by bob's; a roster version signed by
 * a plain member appended to the chain. A carol client that has never seen
 * the messages then reads the history: every tampered message must be
 * refused with the expected code (MESSAGE_REJECTED, or the roster sync
 * failing with VERIFY), nothing tampered is ever shown, and every other
 * message still shows, byte for byte. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "e2e/archive.h"
#include "e2e/message.h"
#include "e2e_common.h"

#define NMSG 5
#define MAX_CODES 3

typedef enum {
    T_HEADER,
    T_BODY,
    T_SIG,
    T_ORIGIN,
    T_SENDER,
    T_FORGED_SENDER,
    T_NON_MEMBER,
    T_ENVELOPE_OLD_EPOCH,
    T_ENVELOPE_SWAPPED,
    T_ROSTER_NON_ADMIN,
    T_COUNT
} tamper_kind;

typedef struct tcase {
    tamper_kind kind;
    const char *name;
    int codes[MAX_CODES]; /* acceptable MESSAGE_REJECTED codes (0 ends) */
} tcase;

static const tcase cases[T_COUNT] = {
    {T_HEADER, "datakey header bit flipped", {SEALROOM_E_DECRYPT}},
    {T_BODY, "ciphertext bit flipped", {SEALROOM_E_VERIFY}},
    {T_SIG, "signature bit flipped", {SEALROOM_E_VERIFY}},
    {T_ORIGIN, "origin-id (associated data) changed", {SEALROOM_E_VERIFY}},
    {T_SENDER, "sender column changed", {SEALROOM_E_VERIFY}},
    {T_FORGED_SENDER, "sender and nick rewritten to another member", {SEALROOM_E_VERIFY}},
    {T_NON_MEMBER, "message inserted from a non-member", {SEALROOM_E_FORBIDDEN}},
    /* The envelope fails its signature (VERIFY); the messages needing that
     * epoch then have no key (NO_KEY) or carry the envelope's failure. */
    {T_ENVELOPE_OLD_EPOCH, "envelope of the previous epoch", {SEALROOM_E_VERIFY, SEALROOM_E_NO_KEY}},
    {T_ENVELOPE_SWAPPED, "another member's envelope", {SEALROOM_E_VERIFY, SEALROOM_E_NO_KEY}},
    {T_ROSTER_NON_ADMIN, "roster version signed by a member", {0}},
};

typedef struct msg {
    e2e_lib *from;
    const char *nick;
    char origin[72];
    char text[320];
    bool victim;
} msg;

static e2e_lib *alice, *bob, *carol_reg;
static char room[256];
static long long room_id;
static char rid[24];
static msg msgs[NMSG + 1];
static int nmsgs;
static uint64_t old_epoch, cur_epoch;

static void say(e2e_lib *w, const char *nick, const char *label)
{
    msg *m = &msgs[nmsgs++];
    m->from = w;
    m->nick = nick;
    m->victim = false;
    snprintf(m->text, sizeof m->text, "%s from %s in %s", label, nick, room);
    free(it_lib_say(w->l, room, (const unsigned char *)m->text, strlen(m->text), m->origin));
}

static void setup_room(const tcase *c)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "e2etamper%d", (int)c->kind);
    it_new_room(room, sizeof room, prefix);
    it_lib_create(alice->l, room);
    it_lib_add(alice->l, room, "bob", SEALROOM_ROLE_MEMBER);
    it_lib_add(alice->l, room, "carol", SEALROOM_ROLE_MEMBER);
    room_id = e2e_room_id(room);
    snprintf(rid, sizeof rid, "%lld", room_id);
    it_lib_join(alice->l, room, "alice");
    it_lib_join(bob->l, room, "bob");
    nmsgs = 0;
    say(alice, "alice", "old one");
    say(bob, "bob", "old two");
    old_epoch = e2e_epoch(alice, room);
    uint32_t req = 0;
    IT_OK(sealroom_room_rekey(e2e_ctx(alice), &req, room));
    it_lib_wait_ok(alice->l, req, "rekey");
    cur_epoch = e2e_epoch(alice, room);
    IT_CHECK(cur_epoch == old_epoch + 1, "rekey: epoch %llu -> %llu",
             (unsigned long long)old_epoch, (unsigned long long)cur_epoch);
    /* The epoch's maker hands over its re-encryption token: from then on
     * the old messages' headers are served (and swept) under the new key. */
    uint64_t end = it_mono_ms() + IT_TIMEOUT_MS;
    while (it_pg_count("archive_tokens", room) < 1) {
        IT_CHECK(it_mono_ms() < end, "no re-encryption token for epoch %llu",
                 (unsigned long long)cur_epoch);
        it_lib_pump_others(NULL);
        it_sleep_ms(10);
    }
    say(alice, "alice", "victim");
    say(alice, "alice", "second");
    say(bob, "bob", "third");
}

/* Stored payload of message m (binary result). */
static unsigned char *stored_payload(const msg *m, size_t *len)
{
    const char *p[3] = {rid, m->from->l->bare, m->origin};
    PGresult *res = e2e_pg_exec("SELECT payload FROM messages WHERE room_id = $1 AND sender = $2 "
                                "AND origin_id = $3",
                                3, p, true);
    IT_CHECK(PQntuples(res) == 1, "message %s not stored once", m->origin);
    unsigned char *out = e2e_pg_bytea(res, 0, 0, len);
    PQclear(res);
    return out;
}

static void set_payload(const msg *m, const unsigned char *payload, size_t len)
{
    const char *p[4] = {rid, m->from->l->bare, m->origin, (const char *)payload};
    int lens[4] = {0, 0, 0, (int)len};
    PGresult *res = e2e_pg_exec_bin("UPDATE messages SET payload = $4 WHERE room_id = $1 AND "
                                    "sender = $2 AND origin_id = $3",
                                    4, p, lens, false);
    IT_CHECK(atoi(PQcmdTuples(res)) == 1, "payload update touched %s rows", PQcmdTuples(res));
    PQclear(res);
}

static void flip_payload_bit(msg *m, size_t offset_from_start, bool from_end)
{
    size_t len = 0;
    unsigned char *p = stored_payload(m, &len);
    IT_CHECK(len > 129, "payload of %zu bytes", len);
    size_t at = from_end ? len - 1 - offset_from_start : offset_from_start;
    p[at] ^= 0x04;
    set_payload(m, p, len);
    free(p);
    m->victim = true;
}

static void tamper_header(void)
{
    msg *m = &msgs[2];
    size_t len = 0;
    unsigned char *payload = stored_payload(m, &len);
    const char *p[2] = {rid, (const char *)(payload + 1)};
    int lens[2] = {0, SR_E2E_DATAKEY_ID_BYTES};
    PGresult *res = e2e_pg_exec_bin("SELECT header FROM datakeys WHERE room_id = $1 AND dkid = $2",
                                    2, p, lens, true);
    IT_CHECK(PQntuples(res) == 1, "no header stored for alice's data key");
    size_t hl = 0;
    unsigned char *h = e2e_pg_bytea(res, 0, 0, &hl);
    PQclear(res);
    IT_CHECK(h && hl == 32, "header of %zu bytes", hl);
    /* A flip that still decodes, so the header reaches the unwrap and the
     * failure is the decryption, not the point check. */
    bool flipped = false;
    for (int bit = 8; bit < 256 && !flipped; bit++) {
        h[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        if (sr_e2e_point_check(h) == SR_E2E_OK)
            flipped = true;
        else
            h[bit / 8] ^= (unsigned char)(1u << (bit % 8));
    }
    IT_CHECK(flipped, "no single bit flip of the header is a valid point");
    const char *u[3] = {rid, (const char *)(payload + 1), (const char *)h};
    int ulens[3] = {0, SR_E2E_DATAKEY_ID_BYTES, 32};
    res = e2e_pg_exec_bin("UPDATE datakeys SET header = $3 WHERE room_id = $1 AND dkid = $2", 3, u,
                          ulens, false);
    IT_CHECK(atoi(PQcmdTuples(res)) == 1, "header update");
    PQclear(res);
    /* Every message under that data key is affected. */
    for (int i = 0; i < nmsgs; i++) {
        size_t l2 = 0;
        unsigned char *q = stored_payload(&msgs[i], &l2);
        if (memcmp(q + 1, payload + 1, SR_E2E_DATAKEY_ID_BYTES) == 0) msgs[i].victim = true;
        free(q);
    }
    IT_CHECK(!msgs[4].victim, "bob's message shares alice's data key");
    free(h);
    free(payload);
}

static void tamper_row(const char *set_sql, int nextra, const char *const *extra)
{
    msg *m = &msgs[2];
    const char *p[6] = {rid, m->from->l->bare, m->origin, NULL, NULL, NULL};
    for (int i = 0; i < nextra; i++)
        p[3 + i] = extra[i];
    char sql[512];
    snprintf(sql, sizeof sql,
             "UPDATE messages SET %s WHERE room_id = $1 AND sender = $2 AND origin_id = $3",
             set_sql);
    PGresult *res = e2e_pg_exec(sql, 3 + nextra, p, false);
    IT_CHECK(atoi(PQcmdTuples(res)) == 1, "%s touched %s rows", sql, PQcmdTuples(res));
    PQclear(res);
    m->victim = true;
}

/* mallory, never a member, seals a message as well as anyone could: with
 * the room's current epoch key (from alice's ctx, as if leaked), a data
 * key wrapped under it and stored, her own signature. */
static void insert_non_member(void)
{
    char mallory[256];
    it_bare(mallory, sizeof mallory, "mallory");
    e2e_secrets s = {0};
    e2e_secrets_collect(&s, e2e_ctx(alice), "alice");
    const e2e_secret *k = e2e_secrets_find(&s, "alice", "epoch.k", room, cur_epoch);
    IT_CHECK(k && k->len == 32, "alice's ctx holds no epoch.k for epoch %llu",
             (unsigned long long)cur_epoch);
    unsigned char pt[32], h[32], dkid[SR_E2E_DATAKEY_ID_BYTES];
    IT_CHECK(sr_e2e_datakey_random(pt) == SR_E2E_OK, "data key");
    sr_e2e_datakey_id_random(dkid);
    IT_CHECK(sr_e2e_header_wrap(h, k->bytes, pt) == SR_E2E_OK, "wrap");

    const char *rp[1] = {rid};
    PGresult *res = e2e_pg_exec("SELECT roster_version FROM rooms WHERE room_id = $1", 1, rp, false);
    uint64_t rv = (uint64_t)atoll(PQgetvalue(res, 0, 0));
    PQclear(res);

    msg *m = &msgs[nmsgs++];
    m->from = NULL;
    m->nick = "mallory";
    m->victim = true;
    it_random_hex(m->origin, 16);
    snprintf(m->text, sizeof m->text, "mallory was never invited to %s", room);
    unsigned char pk[32], sk[64];
    it_user_keys(mallory, pk, sk);
    sr_e2e_msg_meta meta = {room, mallory, m->origin, dkid, rv};
    unsigned char payload[512];
    size_t plen = 0;
    IT_CHECK(sr_e2e_message_seal(payload, sizeof payload, &plen, (const unsigned char *)m->text,
                                 strlen(m->text), &meta, pt, sk) == SR_E2E_OK,
             "sealing mallory's message");
    sodium_memzero(sk, sizeof sk);
    /* Self-check: it opens with the right key, so only membership is wrong. */
    sr_e2e_sealed_view v;
    unsigned char plain[256];
    size_t pl = 0;
    IT_CHECK(sr_e2e_message_parse(&v, payload, plen) == SR_E2E_OK &&
                 sr_e2e_message_open(plain, sizeof plain, &pl, &v, room, mallory, m->origin, pk,
                                     pt) == SR_E2E_OK,
             "mallory's forged message does not even open with its own key");

    char es[24];
    snprintf(es, sizeof es, "%llu", (unsigned long long)cur_epoch);
    const char *dp[5] = {rid, (const char *)dkid, mallory, es, (const char *)h};
    int dl[5] = {0, SR_E2E_DATAKEY_ID_BYTES, 0, 0, 32};
    PQclear(e2e_pg_exec_bin("INSERT INTO datakeys (room_id, dkid, sender, epoch, "
                            "created_epoch, header) VALUES ($1, $2, $3, $4::bigint, "
                            "$4::bigint, $5)",
                            5, dp, dl, false));
    const char *mp[5] = {rid, mallory, "mallory", m->origin, (const char *)payload};
    int ml[5] = {0, 0, 0, 0, (int)plen};
    PQclear(e2e_pg_exec_bin("WITH s AS (UPDATE rooms SET last_seq = last_seq + 1 "
                            "WHERE room_id = $1 RETURNING last_seq) "
                            "INSERT INTO messages (room_id, seq, sender, nick, origin_id, payload) "
                            "SELECT $1, s.last_seq, $2, $3, $4, $5 FROM s",
                            5, mp, ml, false));
    sodium_memzero(pt, sizeof pt);
    e2e_secrets_free(&s);
}

/* carol's envelope of the current epoch := src_epoch/src_recipient's. */
static void replace_envelope(uint64_t src_epoch, const char *src_recipient)
{
    char carol[256], se[24], ce[24];
    it_bare(carol, sizeof carol, "carol");
    snprintf(se, sizeof se, "%llu", (unsigned long long)src_epoch);
    snprintf(ce, sizeof ce, "%llu", (unsigned long long)cur_epoch);
    const char *p[5] = {rid, ce, carol, se, src_recipient};
    PGresult *res = e2e_pg_exec(
        "UPDATE envelopes SET blob = (SELECT blob FROM envelopes WHERE room_id = $1 AND "
        "epoch = $4::bigint AND recipient = $5) WHERE room_id = $1 AND epoch = $2::bigint AND "
        "recipient = $3 AND blob <> (SELECT blob FROM envelopes WHERE room_id = $1 AND "
        "epoch = $4::bigint AND recipient = $5)",
        5, p, false);
    IT_CHECK(atoi(PQcmdTuples(res)) == 1, "envelope replacement touched %s rows (epoch %s->%s)",
             PQcmdTuples(res), se, ce);
    PQclear(res);
    /* Every header, the old ones re-keyed, needs the current epoch's key. */
    for (int i = 0; i < nmsgs; i++)
        msgs[i].victim = true;
}

/* A version adding mallory, well formed and correctly chained, but signed
 * by bob, who is a plain member. */
static void append_roster_by_member(void)
{
    it_room r;
    it_room_init(&r, room);
    const char *p[1] = {rid};
    PGresult *res = e2e_pg_exec("SELECT canonical, sig FROM roster_versions WHERE room_id = $1 "
                                "ORDER BY version",
                                1, p, true);
    sr_roster_version *v = malloc(sizeof *v);
    IT_CHECK(v != NULL, "out of memory");
    for (int i = 0; i < PQntuples(res); i++) {
        size_t cl = 0, sl = 0;
        unsigned char *c = e2e_pg_bytea(res, i, 0, &cl), *s = e2e_pg_bytea(res, i, 1, &sl);
        IT_CHECK(c && s && sl == SR_SIG_BYTES && sr_roster_from_canonical(v, c, cl),
                 "stored version %d", i);
        memcpy(v->sig, s, SR_SIG_BYTES);
        it_room_apply(&r, v);
        free(c);
        free(s);
    }
    PQclear(res);
    free(v);
    char mallory[256];
    it_bare(mallory, sizeof mallory, "mallory");
    sr_roster_version *f = it_roster_new(&r, bob->l->bare);
    it_roster_op(f, SR_OP_ADD, mallory, SR_ROLE_MEMBER, NULL);
    it_roster_sign(f);
    sr_roster_err e = sr_roster_check(&r.state, f);
    IT_CHECK(e == SR_ROSTER_ERR_SIGNER, "the forged version should fail only on its signer, got %s",
             sr_roster_err_text(e));
    size_t clen = sr_roster_canonical_len(f);
    unsigned char *canon = malloc(clen);
    unsigned char hash[SR_ROSTER_HASH_BYTES];
    IT_CHECK(canon && sr_roster_canonical(canon, clen, f) == clen && sr_roster_hash(hash, f),
             "encoding the forged version");
    char ver[24];
    snprintf(ver, sizeof ver, "%llu", (unsigned long long)f->version);
    const char *ip[7] = {rid, ver, (const char *)f->prev, (const char *)hash, f->signer,
                         (const char *)canon, (const char *)f->sig};
    int il[7] = {0, 0, SR_ROSTER_HASH_BYTES, SR_ROSTER_HASH_BYTES, 0, (int)clen, SR_SIG_BYTES};
    PQclear(e2e_pg_exec_bin("INSERT INTO roster_versions (room_id, version, prev, hash, signer, "
                            "canonical, sig) VALUES ($1, $2::bigint, $3, $4, $5, $6, $7)",
                            7, ip, il, false));
    free(canon);
    free(f);
    it_room_free(&r);
}

static bool code_ok(const tcase *c, int code)
{
    for (int i = 0; i < MAX_CODES && c->codes[i]; i++)
        if (c->codes[i] == code) return true;
    return false;
}

static void read_and_check(const tcase *c, e2e_lib *reader)
{
    int rc = e2e_read_history(reader, room);
    IT_CHECK(rc == SEALROOM_OK, "[%s] the history request itself failed: %d (%s)", c->name, rc,
             sealroom_strerror(rc));
    for (int i = 0; i < nmsgs; i++) {
        const msg *m = &msgs[i];
        const it_ev *shown = e2e_any_msg(reader, room, m->origin);
        if (!m->victim) {
            IT_CHECK(shown != NULL, "[%s] untouched message %d ('%s') is not shown (%s)", c->name,
                     i, m->text,
                     e2e_rejected(reader, room, m->origin)
                         ? sealroom_strerror(e2e_rejected(reader, room, m->origin)->result)
                         : "no event at all");
            IT_CHECK(shown->payload_len == strlen(m->text) &&
                         memcmp(shown->payload, m->text, shown->payload_len) == 0,
                     "[%s] untouched message %d shown with other bytes", c->name, i);
            continue;
        }
        IT_CHECK(shown == NULL, "[%s] tampered message %d was shown (%zu bytes)", c->name, i,
                 shown->payload_len);
        const it_ev *rj = e2e_rejected(reader, room, m->origin);
        IT_CHECK(rj != NULL, "[%s] tampered message %d: no MESSAGE_REJECTED", c->name, i);
        IT_CHECK(code_ok(c, rj->result), "[%s] tampered message %d rejected with %d (%s): %s",
                 c->name, i, rj->result, sealroom_strerror(rj->result),
                 rj->error_text ? rj->error_text : "");
        IT_CHECK(rj->error_text && *rj->error_text, "[%s] rejection without a text", c->name);
    }
    /* No event may carry any victim's plaintext, under any origin. */
    for (size_t k = 0; k < reader->l->nev; k++) {
        const it_ev *e = &reader->l->ev[k];
        if (e->type != SEALROOM_EVENT_MESSAGE) continue;
        bool known = false;
        for (int i = 0; i < nmsgs; i++)
            known |= !msgs[i].victim && e->payload_len == strlen(msgs[i].text) &&
                     memcmp(e->payload, msgs[i].text, e->payload_len) == 0;
        IT_CHECK(known, "[%s] a MESSAGE event (origin %s) carries a payload that is not an "
                        "untouched message",
                 c->name, e->origin_id ? e->origin_id : "(none)");
    }
}

static void run_case(const tcase *c)
{
    setup_room(c);
    e2e_lib *reader = NULL;
    uint32_t req = 0;
    uint64_t head = 0;
    if (c->kind == T_ROSTER_NON_ADMIN) {
        /* A reader that verified the chain before: a fresh one has no
         * verified state to keep when the chain fails. */
        reader = e2e_connect("carol", true);
        IT_OK(sealroom_room_sync(e2e_ctx(reader), &req, room));
        it_lib_wait_ok(reader->l, req, "sync before tampering");
        IT_OK(sealroom_room_roster_version(e2e_ctx(reader), &head, room));
    }
    long before = it_pg_count("messages", room);
    switch (c->kind) {
    case T_HEADER: tamper_header(); break;
    case T_BODY: flip_payload_bit(&msgs[2], SR_E2E_MSG_HEADER_BYTES + 1, false); break;
    case T_SIG: flip_payload_bit(&msgs[2], 10, true); break;
    case T_ORIGIN: {
        char fresh[33];
        it_random_hex(fresh, 16);
        const char *x[1] = {fresh};
        tamper_row("origin_id = $4", 1, x);
        snprintf(msgs[2].origin, sizeof msgs[2].origin, "%s", fresh);
        break;
    }
    case T_SENDER: {
        const char *x[1] = {bob->l->bare};
        tamper_row("sender = $4", 1, x);
        break;
    }
    case T_FORGED_SENDER: {
        const char *x[2] = {bob->l->bare, "bob"};
        tamper_row("sender = $4, nick = $5", 2, x);
        break;
    }
    case T_NON_MEMBER: insert_non_member(); break;
    case T_ENVELOPE_OLD_EPOCH: {
        char carol[256];
        it_bare(carol, sizeof carol, "carol");
        replace_envelope(old_epoch, carol);
        break;
    }
    case T_ENVELOPE_SWAPPED: replace_envelope(cur_epoch, bob->l->bare); break;
    case T_ROSTER_NON_ADMIN: append_roster_by_member(); break;
    case T_COUNT: break;
    }

    if (!reader) reader = e2e_connect("carol", true);
    if (c->kind == T_ROSTER_NON_ADMIN) {
        IT_OK(sealroom_room_sync(e2e_ctx(reader), &req, room));
        int rc = it_lib_wait(reader->l, req);
        IT_CHECK(rc == SEALROOM_E_VERIFY, "[%s] sync returned %d (%s), expected VERIFY: %s",
                 c->name, rc, sealroom_strerror(rc), e2e_done_text(reader, req));
        uint64_t now = 0;
        IT_OK(sealroom_room_roster_version(e2e_ctx(reader), &now, room));
        IT_CHECK(now == head, "[%s] verified roster moved from %llu to %llu", c->name,
                 (unsigned long long)head, (unsigned long long)now);
        char mallory[256];
        it_bare(mallory, sizeof mallory, "mallory");
        IT_CHECK(sealroom_room_member_role(e2e_ctx(reader), room, mallory) == SEALROOM_ROLE_NONE,
                 "[%s] mallory became a member in carol's view", c->name);
    } else {
        IT_OK(sealroom_room_sync(e2e_ctx(reader), &req, room));
        it_lib_wait_ok(reader->l, req, "sync");
    }
    it_lib_join(reader->l, room, "carol");
    read_and_check(c, reader);
    long after = it_pg_count("messages", room);
    IT_CHECK(after == before + (c->kind == T_NON_MEMBER),
             "[%s] reading changed the archive: %ld rows, %ld before", c->name, after, before);
    size_t rejected = 0;
    for (int i = 0; i < nmsgs; i++)
        rejected += msgs[i].victim;
    it_log("[%s] %s: %zu refused, %d shown", room, c->name, rejected, nmsgs - (int)rejected);
    e2e_lib_free(reader);
}

int main(int argc, char **argv)
{
    it_init("it_e2e_tamper");
    alice = e2e_connect("alice", true);
    bob = e2e_connect("bob", true);
    carol_reg = e2e_connect("carol", true);
    it_lib_register(alice->l);
    it_lib_register(bob->l);
    it_lib_register(carol_reg->l);
    /* argv[1] may name one case (its number) for debugging. */
    int only = argc > 1 ? atoi(argv[1]) : -1;
    for (int k = 0; k < T_COUNT; k++)
        if (only < 0 || only == k) run_case(&cases[k]);
    e2e_lib_free(carol_reg);
    e2e_lib_free(bob);
    e2e_lib_free(alice);
    it_log("passed");
    return 0;
}
