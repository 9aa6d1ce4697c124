-- Sealroom schema v9: index entries stored per message while a batch is
-- open and packed into buckets when it seals (issue 6's insert target).
--
-- Until now every entry was one row and one tuple of a btree over
-- (room, batch, label). Labels are PRF outputs, so each tuple went to a
-- random leaf: storing a message cost ~16 random index insertions and
-- dominated its cost (0.42x the plaintext + tsvector + GIN rate). Nothing
-- probes a batch while it is open (a search seals the batches it reaches
-- before evaluating, DESIGN §7), so an open batch needs no label index at
-- all:
--
--  * search_pending: one row per stored message with all its labels
--    concatenated as the client sent them; its only index is on
--    (room, batch), whose keys arrive nearly in order.
--  * search_buckets: built from a batch's pending rows in the transaction
--    that seals it (the triggers below, so every path that seals -- the
--    entry cap, a refused message, a new batch for the owner, a leaving
--    owner, a search -- builds). Entries are spread over 2^bucket_bits
--    buckets by the first 16 bits of their label (uniform: labels are
--    pseudorandom), about 16 to 32 per bucket, each bucket one row whose
--    body is the entries' (label 16 ‖ seq u64 big-endian) in no particular
--    order. A probe reads one bucket by primary key and scans it
--    (component/searcheval.c).
--
-- Sealing reads the pending rows with a snapshot taken after the seal
-- holds the batch row: an AFTER ROW trigger's statements run with a new
-- snapshot in READ COMMITTED and see the sealing statement's own changes,
-- and the store statement takes the batch row FOR UPDATE with state = 0,
-- so every message of the batch either committed before the build (and is
-- in it) or meets a sealed batch and is refused.
--
-- The view search_entries keeps the old shape (room, batch, label, seq)
-- for tools, tests and the compaction lease, which read it rarely.
--
-- Applied inside db_migrate's transaction: no BEGIN/COMMIT here.

ALTER TABLE search_batches ADD COLUMN bucket_bits smallint NOT NULL DEFAULT 0
    CHECK (bucket_bits BETWEEN 0 AND 16);

CREATE TABLE search_pending (
    room_id bigint NOT NULL,
    batch   bigint NOT NULL,
    seq     bigint NOT NULL CHECK (seq > 0),
    labels  bytea  NOT NULL CHECK (length(labels) > 0 AND length(labels) % 16 = 0)
);
CREATE INDEX search_pending_batch_idx ON search_pending (room_id, batch);

CREATE TABLE search_buckets (
    room_id bigint  NOT NULL,
    batch   bigint  NOT NULL,
    bucket  integer NOT NULL CHECK (bucket >= 0),
    body    bytea   NOT NULL CHECK (length(body) > 0 AND length(body) % 24 = 0),
    PRIMARY KEY (room_id, batch, bucket)
);

-- The fewest buckets (a power of two, at most 2^16) that hold at most 32
-- entries each on average; component/searcheval.c reads it from the row.
CREATE FUNCTION search_bucket_bits(entries bigint) RETURNS smallint
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT coalesce(min(b), 16)::smallint FROM generate_series(0, 16) AS b
    WHERE entries <= 32::bigint << b
$$;

-- The planner takes generate_series for 1,000 rows per message where
-- there are about 16: the build looked expensive enough for JIT
-- compilation (about 135 ms a batch, several times the build itself) and
-- for a sort spilled to disk. Neither is worth it here.
CREATE FUNCTION search_build_buckets(room bigint, b bigint, bits smallint) RETURNS void
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
    DELETE FROM search_pending WHERE room_id = room AND batch = b;
END
$$;

CREATE FUNCTION search_seal_bits() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.bucket_bits := search_bucket_bits(NEW.entries);
    RETURN NEW;
END
$$;

CREATE FUNCTION search_seal_build() RETURNS trigger
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM search_build_buckets(NEW.room_id, NEW.batch, NEW.bucket_bits);
    RETURN NULL;
END
$$;

CREATE TRIGGER search_batches_seal_bits BEFORE UPDATE OF state ON search_batches
    FOR EACH ROW WHEN (OLD.state = 0 AND NEW.state = 1) EXECUTE FUNCTION search_seal_bits();
CREATE TRIGGER search_batches_seal_build AFTER UPDATE OF state ON search_batches
    FOR EACH ROW WHEN (OLD.state = 0 AND NEW.state = 1) EXECUTE FUNCTION search_seal_build();

-- The stored entries move: open batches' per message, sealed ones'
-- into buckets. Compacted batches hold none.
INSERT INTO search_pending (room_id, batch, seq, labels)
SELECT e.room_id, e.batch, e.seq, string_agg(e.label, ''::bytea)
FROM search_entries e JOIN search_batches b USING (room_id, batch)
WHERE b.state < 2 GROUP BY e.room_id, e.batch, e.seq;
DROP TABLE search_entries;
UPDATE search_batches SET bucket_bits = search_bucket_bits(entries) WHERE state = 1;
SELECT search_build_buckets(room_id, batch, bucket_bits) FROM search_batches WHERE state = 1;

CREATE VIEW search_entries (room_id, batch, label, seq) AS
    SELECT room_id, batch, substring(labels FROM i * 16 + 1 FOR 16), seq
    FROM search_pending, generate_series(0, length(labels) / 16 - 1) AS i
    UNION ALL
    SELECT room_id, batch, substring(body FROM i * 24 + 1 FOR 16),
           ('x' || encode(substring(body FROM i * 24 + 17 FOR 8), 'hex'))::bit(64)::bigint
    FROM search_buckets, generate_series(0, length(body) / 24 - 1) AS i;
