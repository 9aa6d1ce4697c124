-- Sealroom schema v12: a sealed batch keeps the list of its messages, so
-- that a compaction lease does not unpack every bucket to find them.
--
-- A <compact/> lease hands a member the messages of up to 64 sealed
-- batches. Until now the lease read them through the search_entries view:
-- every entry of every bucket (about 16 per message) cut out of its bucket
-- body and decoded, then each one looked up in messages for retraction.
-- At 2,400 messages a batch that was 0.3 to 3 s of one statement on the
-- component's write connection, during which no message of any room was
-- stored (64 such batches, 1% retracted: 1.7-3.1 s; 0.13-0.14 s this way).
-- The build that seals a batch reads its pending rows anyway; it now also
-- keeps their seqs, in order, on the batch row (about 3 bytes a message
-- once PostgreSQL compresses the array; compaction clears them with the
-- buckets), and retracted seqs are taken out by hashing the room's few
-- retracted rows.
--
-- Applied inside db_migrate's transaction: no BEGIN/COMMIT here.

ALTER TABLE search_batches ADD COLUMN seqs bigint[];

CREATE OR REPLACE FUNCTION search_build_buckets(room bigint, b bigint, bits smallint) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT SET jit = off SET work_mem = '32MB' AS $$
BEGIN
    INSERT INTO search_buckets (room_id, batch, bucket, body)
    SELECT room, b, e.k, string_agg(e.label || int8send(e.seq), ''::bytea)
    FROM (SELECT p.seq, substring(p.labels FROM i * 16 + 1 FOR 16) AS label,
                 ((get_byte(p.labels, i * 16) << 8) | get_byte(p.labels, i * 16 + 1))
                     >> (16 - bits) AS k
          FROM search_pending p, generate_series(0, length(p.labels) / 16 - 1) AS i
          WHERE p.room_id = room AND p.batch = b) AS e
    GROUP BY e.k;
    -- Not naming state: the batches' UPDATE OF state triggers stay quiet.
    UPDATE search_batches SET seqs = ARRAY(SELECT DISTINCT p.seq FROM search_pending p
                                           WHERE p.room_id = room AND p.batch = b
                                           ORDER BY p.seq)
    WHERE room_id = room AND batch = b;
    DELETE FROM search_pending WHERE room_id = room AND batch = b;
END
$$;

-- Batches sealed before this version: from their buckets, once.
UPDATE search_batches s SET seqs = ARRAY(SELECT DISTINCT e.seq FROM search_entries e
                                         WHERE e.room_id = s.room_id AND e.batch = s.batch
                                         ORDER BY e.seq)
WHERE s.state = 1;
