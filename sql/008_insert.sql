-- Sealroom schema v8: a cheaper insert path for index entries (issue 6's
-- insert target). Every stored message carries 8 or more entries (typically
-- 16), each one heap row and one index tuple of search_entries, and they
-- dominated the cost of storing a message: a unique index made the store
-- statement insert them with ON CONFLICT DO NOTHING (so that a repeated
-- label could not fail the whole group commit), which is a speculative
-- insertion per entry, about a third of the statement's time.
--
-- The probe index is therefore no longer unique. Nothing needs uniqueness:
-- probes read one row per (room, batch, label) with LIMIT 1, compaction
-- deletes by (room, batch), and a label can only repeat within a batch
-- whose owner sent it twice, which a conforming writer never does (labels
-- are PRF outputs of distinct counters, dummies random); a repeated label
-- is stored twice and answers probes as one did. Same columns and order,
-- INCLUDE (seq) kept, so probes stay index-only lookups and
-- component/searcheval.c needs no change.
--
-- Applied inside db_migrate's transaction: no BEGIN/COMMIT here.
ALTER TABLE search_entries DROP CONSTRAINT search_entries_pkey;
CREATE INDEX search_entries_probe_idx ON search_entries (room_id, batch, label) INCLUDE (seq);
