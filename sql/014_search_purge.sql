-- Sealroom schema v14: what compaction retires is deleted afterwards, a
-- chunk at a time, instead of inside the transaction that retires it.
--
-- A segment commit compacts its batches and retires the segments it
-- merges; both lose their rows at once until now, in the commit's one
-- transaction on the component's write connection, during which no message
-- of any room is stored. Measured at the benchmark's sizes: the buckets of
-- 64 batches (131,000 rows) took 0.23 s to delete at every level-1 commit,
-- the blocks of 8 level-1 segments (976,000 rows) 2.2 s at every level-2
-- merge, and a level-3 merge would delete eight times that. Nothing reads
-- those rows once their batch or segment has state 2 (searches and leases
-- list only sealed batches and live segments), so the commit now only
-- queues them here, and component/searchpurge.c deletes them a few
-- thousand rows per transaction, each transaction a short unit among the
-- stores. The queue is a table so that a restart finishes what it started.
--
-- Applied inside db_migrate's transaction: no BEGIN/COMMIT here.

CREATE TABLE search_purge (
    room_id bigint   NOT NULL REFERENCES rooms ON DELETE CASCADE,
    kind    smallint NOT NULL CHECK (kind IN (0, 1)), -- 0: a batch's buckets, 1: a segment's blocks
    id      bigint   NOT NULL,
    PRIMARY KEY (room_id, kind, id)
);

-- The entries of compacted batches are gone as soon as they are compacted,
-- whether or not their buckets have been deleted yet.
CREATE OR REPLACE VIEW search_entries (room_id, batch, label, seq) AS
    SELECT room_id, batch::bigint, substring(labels FROM i * 16 + 1 FOR 16), seq::bigint
    FROM search_pending, generate_series(0, length(labels) / 16 - 1) AS i
    UNION ALL
    SELECT k.room_id, k.batch, substring(k.body FROM i * 24 + 1 FOR 16),
           ('x' || encode(substring(k.body FROM i * 24 + 17 FOR 8), 'hex'))::bit(64)::bigint
    FROM search_buckets k JOIN search_batches b ON b.room_id = k.room_id AND b.batch = k.batch,
         generate_series(0, length(k.body) / 24 - 1) AS i
    WHERE b.state < 2;
