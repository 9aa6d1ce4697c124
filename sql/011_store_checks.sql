-- Sealroom schema v11: the checks on the two search tables every message
-- store writes (issue 6's insert target) move from table CHECK constraints
-- to domains.
--
-- PostgreSQL reads a table's CHECK constraints from their stored text and
-- prepares them again in every statement that inserts or updates one of
-- its rows, all of them whatever columns change: the store statement
-- (component/archive.c) inserts a search_pending row and updates its
-- batch's count, and re-reading those seven constraints was the largest
-- single part of what the index adds to a store (about a quarter, measured
-- with perf under pgbench). A domain's check is kept parsed in the type
-- cache and only runs when a value is assigned to a column of that type.
-- The rules are the same as before; only where they are kept changes.
--
-- Columns used by a trigger's WHEN or by a view cannot change type, so the
-- batches' triggers (sql/009, sql/010) and the search_entries view
-- (sql/009) are dropped and made again, unchanged.
--
-- Applied inside db_migrate's transaction: no BEGIN/COMMIT here.

CREATE DOMAIN sr_batch_id AS bigint CHECK (VALUE > 0 AND VALUE < 4294967296);
CREATE DOMAIN sr_gen AS integer CHECK (VALUE > 0);
CREATE DOMAIN sr_batch_state AS smallint CHECK (VALUE BETWEEN 0 AND 2);
CREATE DOMAIN sr_entry_count AS integer CHECK (VALUE >= 0);
CREATE DOMAIN sr_bucket_bits AS smallint CHECK (VALUE BETWEEN 0 AND 16);
CREATE DOMAIN sr_seq AS bigint CHECK (VALUE > 0);
CREATE DOMAIN sr_labels AS bytea
    CHECK (length(VALUE) > 0 AND length(VALUE) % 16 = 0);

DROP VIEW search_entries;
DROP TRIGGER search_batches_seal_bits ON search_batches;
DROP TRIGGER search_batches_seal_build ON search_batches;
DROP TRIGGER search_batches_version ON search_batches;

ALTER TABLE search_batches
    DROP CONSTRAINT search_batches_batch_check,
    DROP CONSTRAINT search_batches_gen_check,
    DROP CONSTRAINT search_batches_state_check,
    DROP CONSTRAINT search_batches_entries_check,
    DROP CONSTRAINT search_batches_bucket_bits_check,
    ALTER COLUMN batch TYPE sr_batch_id,
    ALTER COLUMN gen TYPE sr_gen,
    ALTER COLUMN state TYPE sr_batch_state,
    ALTER COLUMN entries TYPE sr_entry_count,
    ALTER COLUMN bucket_bits TYPE sr_bucket_bits;

ALTER TABLE search_pending
    DROP CONSTRAINT search_pending_seq_check,
    DROP CONSTRAINT search_pending_labels_check,
    ALTER COLUMN seq TYPE sr_seq,
    ALTER COLUMN labels TYPE sr_labels;

CREATE TRIGGER search_batches_seal_bits BEFORE UPDATE OF state ON search_batches
    FOR EACH ROW WHEN (OLD.state = 0 AND NEW.state = 1) EXECUTE FUNCTION search_seal_bits();
CREATE TRIGGER search_batches_seal_build AFTER UPDATE OF state ON search_batches
    FOR EACH ROW WHEN (OLD.state = 0 AND NEW.state = 1) EXECUTE FUNCTION search_seal_build();
CREATE TRIGGER search_batches_version AFTER UPDATE OF state ON search_batches
    FOR EACH ROW WHEN (NEW.state = 2 AND OLD.state <> 2)
    EXECUTE FUNCTION search_version_bump();

CREATE VIEW search_entries (room_id, batch, label, seq) AS
    SELECT room_id, batch::bigint, substring(labels FROM i * 16 + 1 FOR 16), seq::bigint
    FROM search_pending, generate_series(0, length(labels) / 16 - 1) AS i
    UNION ALL
    SELECT room_id, batch, substring(body FROM i * 24 + 1 FOR 16),
           ('x' || encode(substring(body FROM i * 24 + 17 FOR 8), 'hex'))::bit(64)::bigint
    FROM search_buckets, generate_series(0, length(body) / 24 - 1) AS i;
