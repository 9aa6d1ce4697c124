/* Encrypted search at the component (urn:xmpp:sealroom:search:0;
 * /work/notes/search-wire.md §3-4): the IQs members send to a room about
 * its index — <state/>, <keyring/>, <batch/>, <search/>, <compact/>,
 * <fetch/>, <segment-part/> and <segment-commit/> — and the parsing of the
 * <index/> a groupchat message carries (archive.c stores it with the
 * message). The component never holds a key that opens the index: keyrings
 * are sealed under epoch keys, entries and blocks are PRF outputs and AEAD
 * boxes, and a search hands it only the GGM nodes of the batches a member
 * asked about. Its answers to <batch/>, <search/> and <state/> say
 * compact='due' when a <compact/> would find work, so that members compact
 * the index without being asked and live batches stay few.
 *
 * Everything here is a short database unit on the loop's connection except
 * <search/>, whose evaluation (sealing the batches it reaches, probing
 * entries, opening segment blocks) takes many round trips: it goes to the
 * search workers (searchpool.h), each with a blocking connection of its
 * own, and comes back through search_tick. Every request is checked
 * against the cached roster (members only) and every rule that depends on
 * stored state is checked inside the statement that writes, so two
 * instances or a racing request cannot break one. */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jid.h"
#include "log.h"
#include "searchpool.h"
#include "service.h"
#include "stanza.h"

/* Keyring blob: nonce ‖ AEAD(u8 1 ‖ u32 n ‖ n × (u32 g ‖ K_g)), 1 ≤ n ≤ 1024. */
#define KEYRING_FIXED (24 + 16 + 1 + 4)
#define KEYRING_PER_GEN (4 + 32)
#define KEYRING_GENS_MAX 1024
/* Batch ids are u32 and never 0. */
#define BATCH_MAX 4294967295
/* Entries per message come in groups of 8 (padding with dummies). */
#define INDEX_GROUP 8
/* <fetch/>: default and largest page. */
#define FETCH_DEFAULT 100
#define FETCH_MAX 200
/* <segment-part/>: label ‖ body per block, at most this many per part. */
#define PART_BLOCK_BYTES (SSE_LABEL_BYTES + SSE_BLOCK_BYTES)
#define PART_BLOCKS_MAX 512
#define LABEL_SQL SQL_NUMBER(SSE_LABEL_BYTES)
#define BODY_SQL SQL_NUMBER(SSE_BLOCK_BYTES)
#define PART_SQL SQL_NUMBER(PART_BLOCK_BYTES)
/* A reply with forwarded messages stops growing past this (the XMPP server
 * refuses a component's stanza over 512 KiB); at least one message always
 * goes, which max_payload_bytes keeps below that limit. The page then ends
 * early, not complete, and the requester pages on from <last/>. */
#define REPLY_BUDGET (256 * 1024)
/* Compaction's shape (XEP: Limits). A level-1 segment is made of 8 to 64
 * sealed batches; MERGE_SEGMENTS live segments of one level make one of
 * the next. Every search reads every live segment (a block lookup and the
 * derivation of its keys), and a level holds up to MERGE_SEGMENTS - 1 of
 * them: with 4, a room keeps 3 per level at most, about half the 7 that 8
 * allowed (the benchmark's 1,000,000 messages: 4 live segments instead of
 * 7), for each message's postings being rewritten once more every time
 * the room grows fourfold instead of eightfold: work done in the
 * background by members, against the latency of every search. */
#define COMPACT_MIN_BATCHES "8"
#define COMPACT_MAX_BATCHES "64"
#define MERGE_SEGMENTS "4"
/* The work a <compact/> lease would find in room $1, as CTEs: the sealed
 * batches (cb; SEALED is the SQL that says a batch is sealed) and live
 * segments (cs) that no unexpired lease holds; bg, the oldest generation
 * with at least COMPACT_MIN_BATCHES such batches, and sg, the oldest level
 * and generation with at least MERGE_SEGMENTS such segments. The lease
 * picks from these, and the compact='due' hint of the <batch/>, <search/>
 * and <state/> answers asks whether bg or sg has a row: one text, so a
 * member told that compaction is due gets a lease unless another member
 * took the work meanwhile or the work had nothing left to index (the lease
 * statement retires it). (The lease statement drops expired leases before,
 * which the hint's reading of 'expires' makes moot.) */
#define COMPACT_WORK_SQL(SEALED)                                                                  \
    "hb AS (SELECT unnest(batches) AS b FROM search_leases WHERE room_id = $1::bigint "           \
    "AND expires > now()), "                                                                      \
    "hs AS (SELECT unnest(merged_segments) AS s FROM search_leases "                              \
    "WHERE room_id = $1::bigint AND expires > now()), "                                           \
    "cb AS (SELECT batch, gen FROM search_batches WHERE room_id = $1::bigint AND " SEALED " "     \
    "AND batch NOT IN (SELECT b FROM hb)), "                                                      \
    "bg AS (SELECT gen FROM cb GROUP BY gen HAVING count(*) >= " COMPACT_MIN_BATCHES " "          \
    "ORDER BY min(batch) "                                                                        \
    "LIMIT 1), "                                                                                  \
    "cs AS (SELECT segment, gen, level, first_batch, last_batch, seqs FROM "                      \
    "search_segments WHERE room_id = $1::bigint AND state = 1 "                                   \
    "AND segment NOT IN (SELECT s FROM hs)), "                                                    \
    "sg AS (SELECT gen, level FROM cs GROUP BY gen, level "                                      \
    "HAVING count(*) >= " MERGE_SEGMENTS " "                                                      \
    "ORDER BY min(first_batch) LIMIT 1)"
#define COMPACT_SEALED "state = 1"
/* A search seals every open batch up to its 'hi' ($2) before it reads
 * (searcheval.h); its hint, read alongside, counts them as sealed. */
#define COMPACT_SEALED_BY_SEARCH "(state = 1 OR (state = 0 AND batch <= $2::bigint))"
/* One row, one boolean: compaction is due in room $1. Each CTE is read
 * once here, so PostgreSQL inlines them (no segment's seqs are read), and
 * the OR stops at the first that has a row. */
#define COMPACT_DUE_SQL(SEALED)                                                                   \
    "WITH " COMPACT_WORK_SQL(SEALED) " SELECT EXISTS (SELECT 1 FROM bg) OR "                      \
    "EXISTS (SELECT 1 FROM sg)"

const char search_nomem[] = "out of memory";

const char *search_parse_index(xmpp_stanza_t *el, int max_entries, uint64_t *batch,
                               unsigned char **labels, size_t *len)
{
    *labels = NULL;
    *len = 0;
    if (!svc_parse_u64(xmpp_stanza_get_attribute(el, "batch"), batch) || *batch == 0 ||
        *batch > BATCH_MAX)
        return "<index/> needs a batch id from 1 to 2^32-1";
    const char *b64 = st_text(el);
    size_t max = (size_t)max_entries / INDEX_GROUP * INDEX_GROUP * SSE_LABEL_BYTES;
    /* Base64 of max bytes is at most this long: anything longer is over. */
    if (strlen(b64) > (max + 2) / 3 * 4) return "<index/> holds more entries than allowed";
    unsigned char *buf = malloc(max + 3);
    if (!buf) return search_nomem;
    long n = st_b64_decode(buf, max + 2, b64);
    if (n < 0) {
        free(buf);
        return "<index/> is not base64";
    }
    if (n == 0 || (size_t)n % (INDEX_GROUP * SSE_LABEL_BYTES) != 0) {
        free(buf);
        return "<index/> must hold a non-zero multiple of 8 entries of 16 bytes";
    }
    if ((size_t)n > max) {
        free(buf);
        return "<index/> holds more entries than allowed";
    }
    *labels = buf;
    *len = (size_t)n;
    return NULL;
}

/* ---- one request in flight ---- */

typedef struct sop {
    rooms *r;
    room *rm;
    xmpp_stanza_t *iq;
    char *full; /* the requesting session */
    uint64_t a, b; /* request numbers (epoch and gen; lease) */
    int max;
    /* <search/>: the evaluation and the compact='due' hint run at once;
     * the answer waits here for whichever comes last. */
    int waits;            /* of the two, those not done yet */
    bool due;             /* the hint said compaction is due */
    xmpp_stanza_t *reply; /* the answer, once the evaluation is done */
} sop;

static sop *sop_new(rooms *r, room *rm, xmpp_stanza_t *iq)
{
    sop *op = calloc(1, sizeof *op);
    if (!op) return NULL;
    op->iq = xmpp_stanza_copy(iq);
    op->full = strdup(xmpp_stanza_get_from(iq));
    if (!op->iq || !op->full) {
        if (op->iq) xmpp_stanza_release(op->iq);
        free(op->full);
        free(op);
        return NULL;
    }
    op->r = r;
    op->rm = rm;
    rm->refs++;
    return op;
}

static void sop_free(sop *op)
{
    room_release(op->r, op->rm);
    if (op->reply) xmpp_stanza_release(op->reply);
    xmpp_stanza_release(op->iq);
    free(op->full);
    free(op);
}

static void oom(rooms *r, room *rm, xmpp_stanza_t *iq)
{
    svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL, "out of memory");
}

static void db_failed(sop *op, const char *what, const char *err)
{
    log_error(op->rm->name, "%s failed: %s", what, err ? err : "?");
    svc_error(op->r, op->iq, op->rm->name, "wait", "internal-server-error", NULL,
              "the search index could not be read or written; try again");
}

/* Submit u for op: a write (group-committed) or a read. */
static void submit(sop *op, db_unit *u, bool write, db_done_cb cb)
{
    if (write) op->r->writes_in_flight++;
    db_submit(op->r->db, u, write, cb, op);
}

static bool is_true(const PGresult *res, int row, int col)
{
    return !PQgetisnull(res, row, col) && strcmp(PQgetvalue(res, row, col), "t") == 0;
}

/* One archived message as <forwarded/> into parent; adds its size to
 * *bytes. stamp_ms: when it was stored. */
static bool add_forwarded(rooms *r, room *rm, xmpp_stanza_t *parent, const char *seq,
                          const char *sender, const char *nick, const char *origin,
                          long long stamp_ms, const unsigned char *payload, size_t len,
                          size_t *bytes)
{
    xmpp_ctx_t *ctx = link_ctx(r->link);
    char *b64 = st_b64_encode(payload, len);
    xmpp_stanza_t *inner =
        b64 ? archive_build_message(ctx, rm->name, nick, sender, b64, NULL, origin, seq, true)
            : NULL;
    xmpp_stanza_t *fwd = inner ? st_add(parent, "forwarded", NS_FORWARD) : NULL;
    xmpp_stanza_t *delay = fwd ? st_add(fwd, "delay", NS_DELAY) : NULL;
    bool ok = delay && xmpp_stanza_add_child_ex(fwd, inner, 0) == XMPP_EOK;
    if (ok) {
        char stamp[32];
        st_format_stamp(stamp, stamp_ms);
        xmpp_stanza_set_attribute(delay, "stamp", stamp);
        /* The payload dominates; the rest is a few hundred bytes. */
        *bytes += strlen(b64) + strlen(rm->name) + strlen(nick) + strlen(sender) +
                  (origin ? strlen(origin) : 0) + 512;
    } else if (inner) {
        xmpp_stanza_release(inner);
    }
    free(b64);
    return ok;
}

/* el answers a member: tell it compaction is due when the hint statement's
 * one boolean (res) says so. Only a hint: a member may ignore it, and
 * another may take the work first (its <compact/> then finds nothing). */
static void mark_due(xmpp_stanza_t *el, const PGresult *res)
{
    if (PQntuples(res) == 1 && is_true(res, 0, 0)) xmpp_stanza_set_attribute(el, "compact", "due");
}

static void add_rsm(xmpp_stanza_t *parent, const char *first, const char *last)
{
    xmpp_stanza_t *set = st_add(parent, "set", NS_RSM);
    if (set && first) {
        st_add_text(set, "first", NULL, first);
        st_add_text(set, "last", NULL, last);
    }
}

/* ---- <state/> ---- */

static void state_read(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    sop *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    if (!ok || nres != 3 || PQntuples(res[0]) != 1) {
        db_failed(op, "reading the search state", ok ? "no room row" : err);
        sop_free(op);
        return;
    }
    xmpp_stanza_t *reply = st_iq_result(op->iq, rm->name);
    xmpp_stanza_t *state = reply ? st_add(reply, "state", NS_SEARCH) : NULL;
    bool good = state != NULL;
    if (good) {
        xmpp_stanza_set_attribute(state, "gen", PQgetvalue(res[0], 0, 0));
        xmpp_stanza_set_attribute(state, "need-gen", is_true(res[0], 0, 1) ? "true" : "false");
        xmpp_stanza_set_attribute(state, "batch", PQgetvalue(res[0], 0, 2));
        mark_due(state, res[2]);
    }
    if (good && PQntuples(res[1]) == 1) {
        size_t len = 0;
        unsigned char *blob = svc_bytea_dup(res[1], 0, 1, &len);
        char *b64 = blob ? st_b64_encode(blob, len) : NULL;
        xmpp_stanza_t *k = b64 ? st_add_text(state, "keyring", NULL, b64) : NULL;
        if (k) xmpp_stanza_set_attribute(k, "epoch", PQgetvalue(res[1], 0, 0));
        good = k != NULL;
        free(blob);
        free(b64);
    }
    if (good) {
        svc_send(r, reply);
    } else {
        if (reply) xmpp_stanza_release(reply);
        oom(r, rm, op->iq);
    }
    sop_free(op);
}

static void handle_state(rooms *r, room *rm, xmpp_stanza_t *iq)
{
    sop *op = sop_new(r, rm, iq);
    db_unit *u = db_unit_new();
    char id[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    const char *p[1] = {id};
    if (!op || !u ||
        db_unit_add(u,
                    "SELECT search_gen, search_need_gen, search_last_batch FROM rooms "
                    "WHERE room_id = $1",
                    1, p, NULL, NULL) != 0 ||
        db_unit_add(u,
                    "SELECT epoch, blob FROM search_keyrings WHERE room_id = $1 "
                    "ORDER BY epoch DESC LIMIT 1",
                    1, p, NULL, NULL) != 0 ||
        db_unit_add(u, COMPACT_DUE_SQL(COMPACT_SEALED), 1, p, NULL, NULL) != 0) {
        db_unit_free(u);
        if (op) sop_free(op);
        oom(r, rm, iq);
        return;
    }
    submit(op, u, false, state_read);
}

/* ---- <keyring/> ---- */

/* res[0]: current_epoch, search_gen, search_need_gen, a keyring exists for
 * the epoch, stored (0/1), batches sealed. */
static void keyring_stored(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    sop *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    r->writes_in_flight--;
    if (!ok || nres != 1) {
        db_failed(op, "storing a keyring", err);
        sop_free(op);
        return;
    }
    const PGresult *q = res[0];
    if (PQntuples(q) != 1) {
        svc_error(r, op->iq, rm->name, "cancel", "item-not-found", NULL, "no such room");
        sop_free(op);
        return;
    }
    uint64_t current = strtoull(PQgetvalue(q, 0, 0), NULL, 10);
    uint64_t gen = strtoull(PQgetvalue(q, 0, 1), NULL, 10);
    bool need = is_true(q, 0, 2), exists = is_true(q, 0, 3);
    char text[160];
    if (strcmp(PQgetvalue(q, 0, 4), "1") == 0) {
        r->stats.search_keyrings++;
        log_info(rm->name, "search keyring for epoch %" PRIu64 " (generation %" PRIu64
                 ") by %s; %s batches sealed",
                 op->a, op->b, op->full, PQgetvalue(q, 0, 5));
        svc_send(r, st_iq_result(op->iq, rm->name));
    } else if (current != op->a) {
        snprintf(text, sizeof text,
                 "epoch %" PRIu64 " is not the room's current epoch %" PRIu64, op->a, current);
        svc_error(r, op->iq, rm->name, "modify", "not-acceptable", "stale-keyring", text);
    } else if (exists) {
        snprintf(text, sizeof text, "epoch %" PRIu64 " has its keyring already", op->a);
        svc_error(r, op->iq, rm->name, "cancel", "conflict", NULL, text);
    } else if (op->b == gen && need) {
        snprintf(text, sizeof text,
                 "a member was removed: the keyring must add generation %" PRIu64, gen + 1);
        svc_error(r, op->iq, rm->name, "modify", "not-acceptable", "keyring-needed", text);
    } else {
        snprintf(text, sizeof text, "the keyring's generation must be %" PRIu64 " or %" PRIu64,
                 gen, gen + 1);
        svc_error(r, op->iq, rm->name, "modify", "bad-request", NULL, text);
    }
    sop_free(op);
}

static void handle_keyring(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    uint64_t epoch, gen;
    if (!svc_parse_u64(xmpp_stanza_get_attribute(el, "epoch"), &epoch) || epoch == 0 ||
        !svc_parse_u64(xmpp_stanza_get_attribute(el, "gen"), &gen) || gen == 0 ||
        gen > INT32_MAX) {
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                  "keyring needs epoch and gen, positive decimal integers");
        return;
    }
    const size_t cap = KEYRING_FIXED + KEYRING_PER_GEN * KEYRING_GENS_MAX;
    const char *b64 = st_text(el);
    unsigned char *blob = strlen(b64) <= (cap + 2) / 3 * 4 ? malloc(cap + 3) : NULL;
    long n = blob ? st_b64_decode(blob, cap + 2, b64) : -1;
    /* The blob is opaque, but its length is fixed by the number of
     * generations it holds: at least one, at most gen of them (ascending,
     * the highest is gen). */
    size_t gens = n > KEYRING_FIXED ? ((size_t)n - KEYRING_FIXED) / KEYRING_PER_GEN : 0;
    if (n < 0 || (size_t)n > cap || gens == 0 ||
        (size_t)n != KEYRING_FIXED + gens * KEYRING_PER_GEN || gens > gen) {
        free(blob);
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                  "the keyring must be base64 of a sealed list of 1 to 1024 generation keys, "
                  "at most gen of them");
        return;
    }
    sop *op = sop_new(r, rm, iq);
    db_unit *u = db_unit_new();
    char id[24], es[24], gs[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(es, sizeof es, "%" PRIu64, epoch);
    snprintf(gs, sizeof gs, "%" PRIu64, gen);
    const char *p[4] = {id, es, gs, (const char *)blob};
    int l[4] = {-1, -1, -1, (int)n}, f[4] = {0, 0, 0, 1};
    /* Stored only for the current epoch, once, with gen = search_gen (while
     * no new generation is needed) or search_gen + 1; a new generation
     * becomes the room's, clears need-gen and seals every open batch (their
     * writers hold the old generation's tokens). */
    if (!op || !u ||
        db_unit_add(
            u,
            "WITH rm AS (SELECT current_epoch, search_gen, search_need_gen FROM rooms "
            "WHERE room_id = $1::bigint), "
            "ex AS (SELECT 1 FROM search_keyrings WHERE room_id = $1::bigint AND epoch = $2::bigint), "
            "ok AS (SELECT 1 FROM rm WHERE current_epoch = $2::bigint AND NOT EXISTS "
            "(SELECT 1 FROM ex) AND ($3::integer = search_gen + 1 OR ($3::integer = search_gen "
            "AND NOT search_need_gen))), "
            "ins AS (INSERT INTO search_keyrings (room_id, epoch, gen, blob) "
            "SELECT $1::bigint, $2::bigint, $3::integer, $4::bytea FROM ok "
            "ON CONFLICT DO NOTHING RETURNING gen), "
            "up AS (UPDATE rooms SET search_gen = $3::integer, search_need_gen = false "
            "WHERE room_id = $1::bigint AND search_gen + 1 = $3::integer "
            "AND EXISTS (SELECT 1 FROM ins) RETURNING 1), "
            "seal AS (UPDATE search_batches SET state = 1 WHERE room_id = $1::bigint "
            "AND state = 0 AND EXISTS (SELECT 1 FROM up) RETURNING 1) "
            "SELECT current_epoch, search_gen, search_need_gen, EXISTS (SELECT 1 FROM ex), "
            "(SELECT count(*) FROM ins), (SELECT count(*) FROM seal) FROM rm",
            4, p, l, f) != 0) {
        free(blob);
        db_unit_free(u);
        if (op) sop_free(op);
        oom(r, rm, iq);
        return;
    }
    free(blob);
    op->a = epoch;
    op->b = gen;
    submit(op, u, true, keyring_stored);
}

/* ---- <batch/> ---- */

/* res[0]: new batch, its gen (NULL: none taken), search_gen,
 * search_need_gen, search_last_batch; res[1]: compaction is due. */
static void batch_taken(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    sop *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    r->writes_in_flight--;
    if (!ok || nres != 2 || PQntuples(res[0]) != 1) {
        db_failed(op, "taking a batch", ok ? "no room row" : err);
        sop_free(op);
        return;
    }
    const PGresult *q = res[0];
    if (!PQgetisnull(q, 0, 0)) {
        xmpp_stanza_t *reply = st_iq_result(op->iq, rm->name);
        xmpp_stanza_t *b = reply ? st_add(reply, "batch", NS_SEARCH) : NULL;
        if (b) {
            xmpp_stanza_set_attribute(b, "id", PQgetvalue(q, 0, 0));
            xmpp_stanza_set_attribute(b, "gen", PQgetvalue(q, 0, 1));
            mark_due(b, res[1]);
            r->stats.search_batches++;
            svc_send(r, reply);
        } else {
            if (reply) xmpp_stanza_release(reply);
            oom(r, rm, op->iq);
        }
    } else if (strcmp(PQgetvalue(q, 0, 2), "0") == 0) {
        svc_error(r, op->iq, rm->name, "wait", "unexpected-request", "keyring-needed",
                     "the room has no search keyring yet: upload one for the current epoch");
    } else if (is_true(q, 0, 3)) {
        svc_error(r, op->iq, rm->name, "wait", "unexpected-request", "keyring-needed",
                     "a member was removed: upload a keyring with a new generation first");
    } else {
        svc_error(r, op->iq, rm->name, "cancel", "resource-constraint", NULL,
                  "the room has used every batch id");
    }
    sop_free(op);
}

static void handle_batch(rooms *r, room *rm, xmpp_stanza_t *iq)
{
    sop *op = sop_new(r, rm, iq);
    db_unit *u = db_unit_new();
    char id[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    const char *p[2] = {id, op ? op->full : NULL};
    /* The sender's previous open batch is sealed: a session writes into
     * one batch at a time, and a new one means it lost its counters. The
     * hint runs after, in the same transaction, so it counts that batch. */
    if (!op || !u ||
        db_unit_add(u,
                    "WITH up AS (UPDATE rooms SET search_last_batch = search_last_batch + 1 "
                    "WHERE room_id = $1::bigint AND search_gen > 0 AND NOT search_need_gen "
                    "AND search_last_batch < " SQL_NUMBER(BATCH_MAX) " "
                    "RETURNING search_last_batch, search_gen), "
                    "seal AS (UPDATE search_batches SET state = 1 WHERE room_id = $1::bigint "
                    "AND owner = $2::text AND state = 0 AND EXISTS (SELECT 1 FROM up)), "
                    "ins AS (INSERT INTO search_batches (room_id, batch, gen, owner) "
                    "SELECT $1::bigint, search_last_batch, search_gen, $2::text FROM up "
                    "RETURNING batch, gen) "
                    "SELECT (SELECT batch FROM ins), (SELECT gen FROM ins), search_gen, "
                    "search_need_gen, search_last_batch FROM rooms WHERE room_id = $1::bigint",
                    2, p, NULL, NULL) != 0 ||
        db_unit_add(u, COMPACT_DUE_SQL(COMPACT_SEALED), 1, p, NULL, NULL) != 0) {
        db_unit_free(u);
        if (op) sop_free(op);
        oom(r, rm, iq);
        return;
    }
    submit(op, u, true, batch_taken);
}

/* ---- <compact/> ---- */

static void lease_submit(sop *op);

/* res[2]: lease, segment, gen, first, last, expires (unix ms), count —
 * all NULL when no lease was made — and the batches and segments retired
 * for having nothing to index; no work at all leaves every column NULL or
 * 0. */
static void lease_made(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    sop *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    r->writes_in_flight--;
    if (!ok || nres != 3 || PQntuples(res[2]) != 1) {
        db_failed(op, "leasing a compaction", err);
        sop_free(op);
        return;
    }
    /* Expired leases' staging and anything retired wait in search_purge. */
    search_purge_kick(r);
    const PGresult *q = res[2];
    const char *retired_b = PQgetvalue(q, 0, 7), *retired_s = PQgetvalue(q, 0, 8);
    bool retired = strcmp(retired_b, "0") != 0 || strcmp(retired_s, "0") != 0;
    if (retired)
        log_info(rm->name, "compaction: %s batches and %s segments with nothing left to index "
                 "(every message retracted, or none) retired without a segment",
                 retired_b, retired_s);
    if (PQgetisnull(q, 0, 0)) {
        /* What was retired may have hidden work behind it: pick again.
         * Each pass retires 4 or more sealed batches or live segments,
         * which never come back, so this ends. */
        if (retired) {
            lease_submit(op);
            return;
        }
        svc_error(r, op->iq, rm->name, "cancel", "item-not-found", NULL,
                  "nothing to compact: fewer than " COMPACT_MIN_BATCHES " sealed batches of "
                  "one generation, and fewer than " MERGE_SEGMENTS " live segments of one level "
                  "of one generation, are free");
        sop_free(op);
        return;
    }
    xmpp_stanza_t *reply = st_iq_result(op->iq, rm->name);
    xmpp_stanza_t *l = reply ? st_add(reply, "lease", NS_SEARCH) : NULL;
    if (!l) {
        if (reply) xmpp_stanza_release(reply);
        oom(r, rm, op->iq);
        sop_free(op);
        return;
    }
    char stamp[32];
    st_format_stamp(stamp, strtoll(PQgetvalue(q, 0, 5), NULL, 10));
    xmpp_stanza_set_attribute(l, "id", PQgetvalue(q, 0, 0));
    xmpp_stanza_set_attribute(l, "segment", PQgetvalue(q, 0, 1));
    xmpp_stanza_set_attribute(l, "gen", PQgetvalue(q, 0, 2));
    xmpp_stanza_set_attribute(l, "first", PQgetvalue(q, 0, 3));
    xmpp_stanza_set_attribute(l, "last", PQgetvalue(q, 0, 4));
    xmpp_stanza_set_attribute(l, "expires", stamp);
    xmpp_stanza_set_attribute(l, "count", PQgetvalue(q, 0, 6));
    r->stats.search_leases++;
    log_info(rm->name, "compaction lease %s (segment %s, batches %s-%s) to %s",
             PQgetvalue(q, 0, 0), PQgetvalue(q, 0, 1), PQgetvalue(q, 0, 3), PQgetvalue(q, 0, 4),
             op->full);
    svc_send(r, reply);
    sop_free(op);
}

/* Expired leases go first (with what they staged), so what they held is
 * free again. Then, log-structured: the oldest 8 to 64 sealed batches of
 * one generation make a level-1 segment; failing that, the oldest 4 live
 * segments of one level and generation (MERGE_SEGMENTS) make one of the
 * next level.
 * Nothing held by a live lease is picked twice. The seqs to index are the
 * messages those batches (the list their sealing kept, sql/012) or
 * segments name, less the retracted.
 *
 * When there are none (every message retracted, or the batches hold no
 * entries at all) no member has anything to build and no search can ever
 * match there: the statement retires the pick itself, as a commit would
 * (batches compacted, segments retired, and their buckets and blocks
 * queued for the purge, searchpurge.c), and leases nothing. Retracted messages stay
 * retracted and a sealed batch takes no entry, so the pick cannot become
 * non-empty later; handing it out instead would cost a member a round of
 * IQs for an empty segment that every later search would list. */
static void lease_submit(sop *op)
{
    rooms *r = op->r;
    room *rm = op->rm;
    db_unit *u = db_unit_new();
    char id[24], ms[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(ms, sizeof ms, "%d", r->cfg->search_lease_ms);
    const char *p1[1] = {id};
    const char *p3[3] = {id, op->full, ms};
    if (!u ||
        db_unit_add(u,
                    "INSERT INTO search_purge (room_id, kind, id) SELECT $1, 1, segment "
                    "FROM search_leases WHERE room_id = $1 AND expires <= now() "
                    "ON CONFLICT DO NOTHING",
                    1, p1, NULL, NULL) != 0 ||
        db_unit_add(u, "DELETE FROM search_leases WHERE room_id = $1 AND expires <= now()", 1,
                    p1, NULL, NULL) != 0 ||
        db_unit_add(
            u,
            "WITH " COMPACT_WORK_SQL(COMPACT_SEALED) ", "
            "bsel AS (SELECT batch FROM cb WHERE gen = (SELECT gen FROM bg) ORDER BY batch "
            "LIMIT " COMPACT_MAX_BATCHES "), "
            /* Retracted messages, few: taken out of the pick's seqs by
             * hashing, not by a lookup in messages for every seq. */
            "rt AS (SELECT seq FROM messages WHERE room_id = $1::bigint "
            "AND retracted_at IS NOT NULL), "
            "ssel AS (SELECT cs.* FROM cs JOIN sg USING (gen, level) ORDER BY first_batch "
            "LIMIT " MERGE_SEGMENTS "), "
            "pick AS (SELECT (SELECT gen FROM bg) AS gen, 1 AS level, min(batch) AS first_batch, "
            "max(batch) AS last_batch, array_agg(batch ORDER BY batch) AS batches, "
            "'{}'::bigint[] AS merged, ARRAY(SELECT x.seq FROM (SELECT u.seq "
            "FROM search_batches b, unnest(coalesce(b.seqs, ARRAY(SELECT e.seq "
            "FROM search_entries e WHERE e.room_id = $1::bigint AND e.batch = b.batch))) "
            "AS u(seq) WHERE b.room_id = $1::bigint AND b.batch IN (SELECT batch FROM bsel) "
            "EXCEPT SELECT seq FROM rt) AS x ORDER BY x.seq) AS seqs FROM bsel "
            "HAVING count(*) > 0 "
            "UNION ALL SELECT min(gen), min(level) + 1, min(first_batch), max(last_batch), "
            "'{}'::bigint[], array_agg(segment ORDER BY segment), ARRAY(SELECT x.seq "
            "FROM (SELECT u.seq FROM ssel, unnest(ssel.seqs) AS u(seq) "
            "EXCEPT SELECT seq FROM rt) AS x ORDER BY x.seq) FROM ssel "
            "HAVING count(*) > 0 AND NOT EXISTS (SELECT 1 FROM bsel)), "
            "ins AS (INSERT INTO search_leases (room_id, lease, segment, gen, level, holder, "
            "expires, first_batch, last_batch, batches, merged_segments, seqs) "
            "SELECT $1::bigint, nextval('search_lease_ids'), nextval('search_segment_ids'), gen, "
            "level, $2::text, now() + $3::integer * interval '1 millisecond', first_batch, "
            "last_batch, batches, merged, seqs FROM pick WHERE cardinality(seqs) > 0 "
            "RETURNING lease, segment, gen, first_batch, last_batch, "
            "(extract(epoch FROM expires) * 1000)::bigint AS expires_ms, "
            "cardinality(seqs) AS count), "
            "bare AS (SELECT batches, merged FROM pick WHERE cardinality(seqs) = 0), "
            "rb AS (UPDATE search_batches SET state = 2, seqs = NULL WHERE room_id = $1::bigint "
            "AND batch = ANY ((SELECT batches FROM bare)::bigint[]) AND state = 1 "
            "RETURNING batch), "
            "rbe AS (INSERT INTO search_purge (room_id, kind, id) "
            "SELECT $1::bigint, 0, batch FROM rb ON CONFLICT DO NOTHING), "
            "rs AS (UPDATE search_segments SET state = 2 WHERE room_id = $1::bigint "
            "AND segment = ANY ((SELECT merged FROM bare)::bigint[]) AND state = 1 "
            "RETURNING segment), "
            "rsb AS (INSERT INTO search_purge (room_id, kind, id) "
            "SELECT $1::bigint, 1, segment FROM rs ON CONFLICT DO NOTHING) "
            "SELECT ins.lease, ins.segment, ins.gen, ins.first_batch, ins.last_batch, "
            "ins.expires_ms, ins.count, (SELECT count(*) FROM rb), (SELECT count(*) FROM rs) "
            "FROM (SELECT 1) AS one LEFT JOIN ins ON true",
            3, p3, NULL, NULL) != 0) {
        db_unit_free(u);
        oom(r, rm, op->iq);
        sop_free(op);
        return;
    }
    submit(op, u, true, lease_made);
}

static void handle_compact(rooms *r, room *rm, xmpp_stanza_t *iq)
{
    sop *op = sop_new(r, rm, iq);
    if (!op) {
        oom(r, rm, iq);
        return;
    }
    lease_submit(op);
}

/* ---- <fetch/> ---- */

/* A lease that is gone, expired or someone else's: all look alike. */
static void lease_expired(sop *op)
{
    svc_error(op->r, op->iq, op->rm->name, "cancel", "item-not-found", "lease-expired",
                 "no such lease of yours, or it has expired: ask for a new one");
}

/* res[0]: the lease is valid (one row) or not; res[1]: seq, sender, nick,
 * origin_id, stamp (ms), payload of up to max + 1 of its messages. */
static void fetched(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    sop *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    if (!ok || nres != 2) {
        db_failed(op, "fetching a lease's messages", err);
        sop_free(op);
        return;
    }
    if (PQntuples(res[0]) != 1) {
        lease_expired(op);
        sop_free(op);
        return;
    }
    const PGresult *q = res[1];
    int n = PQntuples(q);
    bool complete = n <= op->max;
    int shown = complete ? n : op->max;
    xmpp_stanza_t *reply = st_iq_result(op->iq, rm->name);
    xmpp_stanza_t *result = reply ? st_add(reply, "result", NS_SEARCH) : NULL;
    const char *first = NULL, *last = NULL;
    size_t bytes = 0;
    bool good = result != NULL;
    for (int i = 0; good && i < shown; i++) {
        if (i > 0 && bytes >= REPLY_BUDGET) {
            complete = false;
            break;
        }
        size_t len = 0;
        unsigned char *payload = svc_bytea_dup(q, i, 5, &len);
        good = payload && add_forwarded(r, rm, result, PQgetvalue(q, i, 0), PQgetvalue(q, i, 1),
                                        PQgetvalue(q, i, 2),
                                        PQgetisnull(q, i, 3) ? NULL : PQgetvalue(q, i, 3),
                                        strtoll(PQgetvalue(q, i, 4), NULL, 10), payload, len,
                                        &bytes);
        free(payload);
        if (!first) first = PQgetvalue(q, i, 0);
        last = PQgetvalue(q, i, 0);
    }
    if (good) {
        char lease[24];
        snprintf(lease, sizeof lease, "%" PRIu64, op->a);
        xmpp_stanza_set_attribute(result, "lease", lease);
        if (complete) xmpp_stanza_set_attribute(result, "complete", "true");
        add_rsm(result, first, last);
        svc_send(r, reply);
    } else {
        if (reply) xmpp_stanza_release(reply);
        oom(r, rm, op->iq);
    }
    sop_free(op);
}

static void handle_fetch(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    uint64_t lease, after = 0, max = FETCH_DEFAULT;
    const char *as = xmpp_stanza_get_attribute(el, "after"),
               *ms = xmpp_stanza_get_attribute(el, "max");
    if (!svc_parse_u64(xmpp_stanza_get_attribute(el, "lease"), &lease) ||
        (as && !svc_parse_u64(as, &after)) || (ms && (!svc_parse_u64(ms, &max) || max == 0))) {
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                  "fetch needs a lease id; after and max are decimal integers, max at least 1");
        return;
    }
    if (max > FETCH_MAX) max = FETCH_MAX;
    sop *op = sop_new(r, rm, iq);
    db_unit *u = db_unit_new();
    char id[24], ls[24], af[24], lim[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(ls, sizeof ls, "%" PRIu64, lease);
    snprintf(af, sizeof af, "%" PRIu64, after);
    snprintf(lim, sizeof lim, "%" PRIu64, max + 1);
    const char *p[5] = {id, ls, op ? op->full : NULL, af, lim};
    if (!op || !u ||
        db_unit_add(u,
                    "SELECT 1 FROM search_leases WHERE room_id = $1 AND lease = $2 AND holder = $3 "
                    "AND expires > now()",
                    3, p, NULL, NULL) != 0 ||
        db_unit_add(u,
                    "SELECT m.seq, m.sender, m.nick, m.origin_id, "
                    "(extract(epoch FROM m.stamp) * 1000)::bigint, m.payload "
                    "FROM search_leases l JOIN messages m ON m.room_id = l.room_id "
                    "AND m.seq = ANY (l.seqs) WHERE l.room_id = $1 AND l.lease = $2 "
                    "AND l.holder = $3 AND l.expires > now() AND m.seq > $4 "
                    "AND m.retracted_at IS NULL ORDER BY m.seq LIMIT $5",
                    5, p, NULL, NULL) != 0) {
        db_unit_free(u);
        if (op) sop_free(op);
        oom(r, rm, iq);
        return;
    }
    op->a = lease;
    op->max = (int)max;
    submit(op, u, false, fetched);
}

/* ---- <segment-part/> ---- */

/* res[0]: the lease is valid (one row); res[1]: blocks staged. */
static void part_staged(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    sop *op = arg;
    rooms *r = op->r;
    r->writes_in_flight--;
    if (!ok || nres != 4) {
        db_failed(op, "staging segment blocks", err);
    } else if (PQntuples(res[0]) != 1) {
        search_purge_kick(r); /* its staging, if it had expired */
        lease_expired(op);
    } else {
        svc_send(r, st_iq_result(op->iq, op->rm->name));
    }
    sop_free(op);
}

static void handle_part(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    uint64_t lease;
    if (!svc_parse_u64(xmpp_stanza_get_attribute(el, "lease"), &lease)) {
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL, "segment-part needs a lease id");
        return;
    }
    const size_t cap = (size_t)PART_BLOCKS_MAX * PART_BLOCK_BYTES;
    const char *b64 = st_text(el);
    unsigned char *buf = strlen(b64) <= (cap + 2) / 3 * 4 ? malloc(cap + 3) : NULL;
    long n = buf ? st_b64_decode(buf, cap + 2, b64) : -1;
    if (n <= 0 || (size_t)n > cap || (size_t)n % PART_BLOCK_BYTES != 0) {
        free(buf);
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                  "segment-part must be base64 of 1 to 512 blocks of a 16-byte label and a "
                  "274-byte body");
        return;
    }
    sop *op = sop_new(r, rm, iq);
    db_unit *u = db_unit_new();
    char id[24], ls[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(ls, sizeof ls, "%" PRIu64, lease);
    const char *p[4] = {id, ls, op ? op->full : NULL, (const char *)buf};
    int l[4] = {-1, -1, -1, (int)n}, f[4] = {0, 0, 0, 1};
    /* Staged where the segment will live (sql/013): under the lease's
     * segment id, which no search lists before the commit. A block sent
     * again (a part resent after a lost answer) stays as it was. A lease
     * that has expired loses what it staged. */
    if (!op || !u ||
        db_unit_add(u,
                    "SELECT 1 FROM search_leases WHERE room_id = $1 AND lease = $2 AND holder = $3 "
                    "AND expires > now()",
                    3, p, NULL, NULL) != 0 ||
        db_unit_add(u,
                    "INSERT INTO search_blocks (room_id, segment, label, body) "
                    "SELECT $1::bigint, x.segment, substring($4::bytea FROM i * " PART_SQL
                    " + 1 FOR " LABEL_SQL "), substring($4::bytea FROM i * " PART_SQL " + 1 + "
                    LABEL_SQL " FOR " BODY_SQL ") "
                    "FROM search_leases x, "
                    "generate_series(0, length($4::bytea) / " PART_SQL " - 1) AS i "
                    "WHERE x.room_id = $1::bigint AND x.lease = $2::bigint "
                    "AND x.holder = $3::text AND x.expires > now() "
                    "ON CONFLICT DO NOTHING",
                    4, p, l, f) != 0 ||
        db_unit_add(u,
                    "INSERT INTO search_purge (room_id, kind, id) SELECT $1, 1, segment "
                    "FROM search_leases WHERE room_id = $1 AND lease = $2 AND expires <= now() "
                    "ON CONFLICT DO NOTHING",
                    2, p, NULL, NULL) != 0 ||
        db_unit_add(u,
                    "DELETE FROM search_leases WHERE room_id = $1 AND lease = $2 "
                    "AND expires <= now()",
                    2, p, NULL, NULL) != 0) {
        free(buf);
        db_unit_free(u);
        if (op) sop_free(op);
        oom(r, rm, iq);
        return;
    }
    free(buf);
    submit(op, u, true, part_staged);
}

/* ---- <segment-commit/> ---- */

/* res[1]: the lease was consumed (1) or not (0), batches and segments
 * merged, the segment. (Its blocks are not counted: that would read them
 * all, and they were written part by part, sql/013.) */
static void committed(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    sop *op = arg;
    rooms *r = op->r;
    room *rm = op->rm;
    r->writes_in_flight--;
    if (ok) search_purge_kick(r); /* what it compacted and retired, or its staging */
    if (!ok || nres != 2 || PQntuples(res[1]) != 1) {
        db_failed(op, "committing a segment", err);
    } else if (strcmp(PQgetvalue(res[1], 0, 0), "1") != 0) {
        lease_expired(op);
    } else {
        r->stats.search_segments++;
        log_info(rm->name, "segment %s committed by %s: %s batches and %s segments merged",
                 PQgetvalue(res[1], 0, 3), op->full, PQgetvalue(res[1], 0, 1),
                 PQgetvalue(res[1], 0, 2));
        svc_send(r, st_iq_result(op->iq, rm->name));
    }
    sop_free(op);
}

static void handle_commit(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    uint64_t lease;
    if (!svc_parse_u64(xmpp_stanza_get_attribute(el, "lease"), &lease)) {
        svc_error(r, iq, rm->name, "modify", "bad-request", NULL,
                  "segment-commit needs a lease id");
        return;
    }
    sop *op = sop_new(r, rm, iq);
    db_unit *u = db_unit_new();
    char id[24], ls[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(ls, sizeof ls, "%" PRIu64, lease);
    const char *p[3] = {id, ls, op ? op->full : NULL};
    /* One transaction: the lease (valid, the requester's, and what it took
     * still as it was) is consumed; its staged blocks, already under the
     * segment's id (sql/013), become the live segment with its row; the
     * batches it replaces are compacted and the segments it merges
     * retired, their buckets and blocks queued for the purge (sql/014).
     * Until this commits, searches see the old batches and segments. An
     * expired lease is dropped, its staging queued for the purge, and
     * changes nothing else. */
    if (!op || !u ||
        db_unit_add(u,
                    "INSERT INTO search_purge (room_id, kind, id) SELECT $1, 1, segment "
                    "FROM search_leases WHERE room_id = $1 AND lease = $2 AND expires <= now() "
                    "ON CONFLICT DO NOTHING",
                    2, p, NULL, NULL) != 0 ||
        db_unit_add(
            u,
            "WITH l AS (DELETE FROM search_leases x WHERE room_id = $1::bigint "
            "AND lease = $2::bigint AND holder = $3::text AND expires > now() "
            "AND NOT EXISTS (SELECT 1 FROM search_batches b WHERE b.room_id = $1::bigint "
            "AND b.batch = ANY (x.batches) AND b.state <> 1) "
            "AND NOT EXISTS (SELECT 1 FROM search_segments s WHERE s.room_id = $1::bigint "
            "AND s.segment = ANY (x.merged_segments) AND s.state <> 1) RETURNING *), "
            "gone AS (DELETE FROM search_leases WHERE room_id = $1::bigint "
            "AND lease = $2::bigint AND expires <= now()), "
            "seg AS (INSERT INTO search_segments (room_id, segment, gen, level, first_batch, "
            "last_batch, min_seq, max_seq, seqs, state) SELECT $1::bigint, segment, gen, level, "
            "first_batch, last_batch, coalesce(seqs[1], 0), coalesce(seqs[cardinality(seqs)], 0), "
            "seqs, 1 FROM l RETURNING segment), "

            "bat AS (UPDATE search_batches SET state = 2, seqs = NULL WHERE room_id = $1::bigint "
            "AND batch = ANY ((SELECT batches FROM l)::bigint[]) AND state = 1 RETURNING batch), "
            "ent AS (INSERT INTO search_purge (room_id, kind, id) "
            "SELECT $1::bigint, 0, batch FROM bat ON CONFLICT DO NOTHING), "
            "ms AS (UPDATE search_segments SET state = 2 WHERE room_id = $1::bigint "
            "AND segment = ANY ((SELECT merged_segments FROM l)::bigint[]) AND state = 1 "
            "RETURNING segment), "
            "mb AS (INSERT INTO search_purge (room_id, kind, id) "
            "SELECT $1::bigint, 1, segment FROM ms ON CONFLICT DO NOTHING) "
            "SELECT (SELECT count(*) FROM l), (SELECT count(*) FROM bat), "
            "(SELECT count(*) FROM ms), (SELECT segment FROM seg)",
            3, p, NULL, NULL) != 0) {
        db_unit_free(u);
        if (op) sop_free(op);
        oom(r, rm, iq);
        return;
    }
    submit(op, u, true, committed);
}

/* ---- <search/> ---- */

/* The wire form of a cover, decoded (node keys: wiped after parsing). */
#define COVER_WIRE_MAX (SE_MAX_NODES * SE_NODE_WIRE)
/* The largest <search/> element taken, serialised. */
#define SEARCH_PAYLOAD_MAX 65536

static void bad_cover(rooms *r, room *rm, xmpp_stanza_t *iq, const char *why)
{
    svc_error(r, iq, rm->name, "modify", "bad-request", "bad-cover", why);
}

static bool is_el(xmpp_stanza_t *c, const char *name)
{
    return xmpp_stanza_is_tag(c) && strcmp(xmpp_stanza_get_name(c), name) == 0;
}

/* Parse el into job (covers decoded, keywords pointing at them). NULL or
 * the reason for <bad-cover/>. */
static const char *parse_search(xmpp_stanza_t *el, sp_job *job)
{
    se_query *q = &job->q;
    size_t k = 0, c = 0;
    unsigned char wire[COVER_WIRE_MAX + 3];
    const char *why = NULL;
    for (xmpp_stanza_t *kw = xmpp_stanza_get_children(el); kw && !why;
         kw = xmpp_stanza_get_next(kw)) {
        if (!is_el(kw, "keyword")) continue;
        se_keyword *sk = &q->keywords[k++];
        sk->covers = &job->covers[c];
        for (xmpp_stanza_t *cv = xmpp_stanza_get_children(kw); cv && !why;
             cv = xmpp_stanza_get_next(cv)) {
            if (!is_el(cv, "cover")) continue;
            se_cover *out = &job->covers[c++];
            uint64_t gen;
            long n = st_b64_decode(wire, COVER_WIRE_MAX + 2, st_text(cv));
            if (!svc_parse_u64(xmpp_stanza_get_attribute(cv, "gen"), &gen) || gen == 0 ||
                gen > UINT32_MAX)
                why = "every cover needs a generation from 1 to 2^32-1";
            else if (n <= 0 || !se_parse_cover(wire, (size_t)n, out))
                why = "a cover must be base64 of 1 to 64 nodes of 37 bytes";
            else
                out->gen = (uint32_t)gen;
            sk->ncovers++;
        }
    }
    sodium_memzero(wire, sizeof wire);
    return why;
}

/* Count keywords and covers, so the job can be sized: false when over the
 * limits (and then the counts are not needed). */
static bool count_search(xmpp_stanza_t *el, size_t *nkw, size_t *ncovers)
{
    *nkw = *ncovers = 0;
    for (xmpp_stanza_t *kw = xmpp_stanza_get_children(el); kw; kw = xmpp_stanza_get_next(kw)) {
        if (!is_el(kw, "keyword")) continue;
        size_t n = 0;
        for (xmpp_stanza_t *cv = xmpp_stanza_get_children(kw); cv; cv = xmpp_stanza_get_next(cv))
            if (is_el(cv, "cover")) n++;
        if (++*nkw > SE_MAX_KEYWORDS || n == 0 || n > SE_MAX_COVERS) return false;
        *ncovers += n;
    }
    return *nkw > 0;
}

/* One of a search's two parts is done: the last sends the answer (if the
 * evaluation made one; an error went out at once), with the hint. */
static void search_part_done(sop *op)
{
    if (--op->waits > 0) return;
    if (op->reply) {
        xmpp_stanza_t *result = st_child(op->reply, "result", NS_SEARCH);
        if (op->due && result) xmpp_stanza_set_attribute(result, "compact", "due");
        svc_send(op->r, op->reply);
        op->reply = NULL;
    }
    sop_free(op);
}

static void search_hinted(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    sop *op = arg;
    if (ok && nres == 1)
        op->due = PQntuples(res[0]) == 1 && is_true(res[0], 0, 0);
    else
        log_debug(op->rm->name, "no compaction hint for a search: %s",
                  ok ? "unexpected results" : err ? err : "?");
    search_part_done(op);
}

static void handle_search(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    char *text = NULL;
    size_t tlen = 0;
    if (xmpp_stanza_to_text(el, &text, &tlen) != XMPP_EOK) {
        oom(r, rm, iq);
        return;
    }
    /* The text holds the searcher's node keys. */
    sodium_memzero(text, tlen);
    xmpp_free(link_ctx(r->link), text);
    if (tlen > SEARCH_PAYLOAD_MAX) {
        bad_cover(r, rm, iq, "the search is larger than 64 KiB");
        return;
    }
    uint64_t hi, max = 50, before = 0;
    const char *ms = xmpp_stanza_get_attribute(el, "max"),
               *bs = xmpp_stanza_get_attribute(el, "before");
    if (!svc_parse_u64(xmpp_stanza_get_attribute(el, "hi"), &hi) || hi == 0 || hi > BATCH_MAX ||
        (ms && (!svc_parse_u64(ms, &max) || max == 0 || max > SE_MAX_RESULTS)) ||
        (bs && (!svc_parse_u64(bs, &before) || before == 0))) {
        bad_cover(r, rm, iq,
                  "search needs hi (a batch id); max is 1 to 200 and before a message id");
        return;
    }
    size_t nkw, ncovers;
    if (!count_search(el, &nkw, &ncovers)) {
        bad_cover(r, rm, iq, "a search has 1 to 8 keywords of 1 to 64 covers each");
        return;
    }
    sp_job *job = sp_job_new(ncovers);
    sop *op = job ? sop_new(r, rm, iq) : NULL;
    if (!op) {
        sp_job_free(job);
        oom(r, rm, iq);
        return;
    }
    job->q.room_id = rm->id;
    job->q.room = rm->name;
    job->q.hi = hi;
    job->q.before = before;
    job->q.max = (unsigned)max;
    job->q.nkeywords = nkw;
    job->user = op;
    const char *why = parse_search(el, job);
    /* Everything but hi against the room's last batch, which only the
     * evaluation reads. */
    if (!why) why = se_validate(&job->q, BATCH_MAX);
    if (why) {
        bad_cover(r, rm, iq, why);
        sp_job_free(job);
        sop_free(op);
        return;
    }
    if (!searchpool_submit(r->search, job)) {
        svc_error(r, iq, rm->name, "wait", "resource-constraint", NULL,
                  "too many searches are waiting; try again");
        sp_job_free(job);
        sop_free(op);
        return;
    }
    /* The hint, read on the loop's connection while a worker evaluates:
     * it costs the answer no time. Without it the answer just says
     * nothing about compaction. */
    op->waits = 1;
    db_unit *u = db_unit_new();
    char id[24], hs[24];
    snprintf(id, sizeof id, "%lld", rm->id);
    snprintf(hs, sizeof hs, "%" PRIu64, hi);
    const char *p[2] = {id, hs};
    if (u && db_unit_add(u, COMPACT_DUE_SQL(COMPACT_SEALED_BY_SEARCH), 2, p, NULL, NULL) == 0) {
        op->waits = 2;
        submit(op, u, false, search_hinted);
    } else {
        db_unit_free(u);
    }
}

/* A finished search: its page, or why it failed. */
static void search_done(rooms *r, sp_job *job)
{
    sop *op = job->user;
    room *rm = op->rm;
    switch (job->rc) {
    case SE_OK: break;
    case SE_ERR_BAD_QUERY: bad_cover(r, rm, op->iq, job->err); goto out;
    case SE_ERR_NO_ROOM:
        svc_error(r, op->iq, rm->name, "cancel", "item-not-found", NULL, "no such room");
        goto out;
    case SE_ERR_NOMEM: oom(r, rm, op->iq); goto out;
    default:
        r->stats.searches_failed++;
        db_failed(op, "a search", job->err);
        goto out;
    }
    r->stats.searches++;
    if (job->res.corrupt_blocks)
        log_warn(rm->name, "a search met %u segment block(s) that do not open",
                 job->res.corrupt_blocks);
    xmpp_stanza_t *reply = st_iq_result(op->iq, rm->name);
    xmpp_stanza_t *result = reply ? st_add(reply, "result", NS_SEARCH) : NULL;
    bool good = result != NULL, complete = job->res.complete;
    char first[24] = "", last[24] = "", seq[24];
    size_t bytes = 0;
    for (size_t i = 0; good && i < job->nmsgs; i++) {
        const sp_msg *m = &job->msgs[i];
        if (i > 0 && bytes >= REPLY_BUDGET) {
            complete = false;
            break;
        }
        snprintf(seq, sizeof seq, "%" PRIu64, m->seq);
        good = add_forwarded(r, rm, result, seq, m->sender, m->nick, m->origin, m->stamp_ms,
                             m->payload, m->len, &bytes);
        if (!*first) memcpy(first, seq, sizeof seq);
        memcpy(last, seq, sizeof seq);
    }
    if (good) {
        char batch[24];
        snprintf(batch, sizeof batch, "%" PRIu64, job->res.last_batch);
        xmpp_stanza_set_attribute(result, "batch", batch);
        if (complete) xmpp_stanza_set_attribute(result, "complete", "true");
        add_rsm(result, *first ? first : NULL, last);
        op->reply = reply;
    } else {
        if (reply) xmpp_stanza_release(reply);
        oom(r, rm, op->iq);
    }
out:
    search_part_done(op);
    sp_job_free(job);
}

bool search_start(rooms *r)
{
    r->search = searchpool_start(r->cfg->db_conninfo, (unsigned)r->cfg->search_threads,
                                 (size_t)r->cfg->search_cache_mb << 20);
    return r->search != NULL;
}

void search_stop(rooms *r)
{
    if (!r->search) return;
    searchpool_stop(r->search);
    /* The requesters get no answer: the link is going down too. */
    sp_job *job;
    while ((job = searchpool_take_done(r->search))) {
        search_part_done(job->user);
        sp_job_free(job);
    }
    searchpool_free(r->search);
    r->search = NULL;
}

int search_pollfd(const rooms *r)
{
    return searchpool_wakefd(r->search);
}

void search_tick(rooms *r)
{
    sp_job *job;
    while ((job = searchpool_take_done(r->search)))
        search_done(r, job);
}

/* ---- dispatch ---- */

void search_handle_iq(rooms *r, room *rm, xmpp_stanza_t *iq, xmpp_stanza_t *el)
{
    char sender[SR_BARE_JID_MAX];
    if (!svc_require_member(r, rm, iq, sender, sizeof sender,
                            "only members may use the room's search index"))
        return;
    const char *name = xmpp_stanza_get_name(el);
    bool set = strcmp(xmpp_stanza_get_type(iq), "set") == 0;
    if (!set && strcmp(name, "state") == 0)
        handle_state(r, rm, iq);
    else if (set && strcmp(name, "keyring") == 0)
        handle_keyring(r, rm, iq, el);
    else if (set && strcmp(name, "batch") == 0)
        handle_batch(r, rm, iq);
    else if (!set && strcmp(name, "search") == 0)
        handle_search(r, rm, iq, el);
    else if (set && strcmp(name, "compact") == 0)
        handle_compact(r, rm, iq);
    else if (!set && strcmp(name, "fetch") == 0)
        handle_fetch(r, rm, iq, el);
    else if (set && strcmp(name, "segment-part") == 0)
        handle_part(r, rm, iq, el);
    else if (set && strcmp(name, "segment-commit") == 0)
        handle_commit(r, rm, iq, el);
    else
        svc_error(r, iq, rm->name, "cancel", "feature-not-implemented", NULL,
                  "no such search request (or not with this iq type)");
}
