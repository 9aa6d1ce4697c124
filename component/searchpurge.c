/* Deleting what compaction retired (sql/014). A segment commit, a pick
 * retired without a segment and an expired lease only queue their dead
 * rows in search_purge (a compacted batch's buckets, a retired segment's
 * blocks, an abandoned lease's staged blocks); deleting them there, in the
 * transaction that retires them, held the write connection, and with it
 * every message store, for up to seconds. Here they go a chunk at a time:
 * one short unit among the stores, then the next once it has committed,
 * until the queue is empty. Nothing reads those rows any more (searches
 * list only sealed batches and live segments; a lease's segment id is
 * never used again), so how long this takes changes no answer. The queue
 * is a table: a restart carries on where the last run stopped. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "service.h"

/* Rows a chunk deletes at most: about 5 ms of the write connection. */
#define PURGE_CHUNK_BLOCKS 2000
#define PURGE_CHUNK_BUCKETS 1000
/* How often an idle component looks at the queue (a kick looks at once). */
#define PURGE_IDLE_MS 30000

/* The first queued item loses up to a chunk of its rows; an item with
 * none left leaves the queue. Rows: an item was queued (0/1), rows
 * deleted. Exported for test_searcheval. */
const char search_purge_sql[] =
    "WITH q AS (SELECT room_id, kind, id FROM search_purge ORDER BY room_id, kind, id LIMIT 1), "
    "kb AS (DELETE FROM search_blocks WHERE ctid = ANY (ARRAY(SELECT x.ctid FROM search_blocks x, "
    "q WHERE q.kind = 1 AND x.room_id = q.room_id AND x.segment = q.id "
    "LIMIT " SQL_NUMBER(PURGE_CHUNK_BLOCKS) ")) RETURNING 1), "
    "kk AS (DELETE FROM search_buckets WHERE ctid = ANY (ARRAY(SELECT y.ctid "
    "FROM search_buckets y, q WHERE q.kind = 0 AND y.room_id = q.room_id AND y.batch = q.id "
    "LIMIT " SQL_NUMBER(PURGE_CHUNK_BUCKETS) ")) RETURNING 1), "
    "done AS (DELETE FROM search_purge p USING q WHERE p.room_id = q.room_id "
    "AND p.kind = q.kind AND p.id = q.id AND NOT EXISTS (SELECT 1 FROM kb) "
    "AND NOT EXISTS (SELECT 1 FROM kk)) "
    "SELECT (SELECT count(*) FROM q), (SELECT count(*) FROM kb) + (SELECT count(*) FROM kk)";

static void purge_submit(rooms *r);

static void purged(void *arg, bool ok, PGresult *const *res, int nres, const char *err)
{
    rooms *r = arg;
    r->purge_in_flight = false;
    if (!ok || nres != 1 || PQntuples(res[0]) != 1) {
        log_warn(svc_jid(r), "deleting retired index rows: %s (tried again later)",
                 err ? err : "no result");
        return;
    }
    r->stats.search_rows_purged += strtoull(PQgetvalue(res[0], 0, 1), NULL, 10);
    /* An item was there: there may be more (of it or after it). */
    if (strcmp(PQgetvalue(res[0], 0, 0), "0") != 0) purge_submit(r);
}

static void purge_submit(rooms *r)
{
    db_unit *u = db_unit_new();
    if (!u || db_unit_add(u, search_purge_sql, 0, NULL, NULL, NULL) != 0) {
        db_unit_free(u);
        return; /* out of memory: the next tick tries again */
    }
    /* Not counted in writes_in_flight: stopping need not wait for it, the
     * queue keeps what is left. */
    r->purge_in_flight = true;
    db_submit(r->db, u, true, purged, r);
}

void search_purge_kick(rooms *r)
{
    r->purge_due = true;
}

void search_purge_tick(rooms *r, long now_ms)
{
    if (r->purge_in_flight || !db_is_ready(r->db)) return;
    if (!r->purge_due && r->last_purge_ms && now_ms - r->last_purge_ms < PURGE_IDLE_MS) return;
    r->purge_due = false;
    r->last_purge_ms = now_ms;
    purge_submit(r);
}
