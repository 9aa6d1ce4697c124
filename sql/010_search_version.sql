-- Sealroom schema v10: a per-room version of what a search must read
-- again before it may trust what an earlier search read.
--
-- A search's first round reads the room's listing (live batches and
-- segments) and its retracted messages, to check the probes it made from
-- the listing the search cache kept. Once every batch a search reaches is
-- sealed, only three things change either: a compaction commit (batches
-- compacted, segments made and retired), a pick retired without a segment,
-- and a retraction. Each bumps rooms.search_version in its own
-- transaction, from triggers, so no path can forget to; a round that reads
-- the same version as the cached listing's, in its own snapshot, may use
-- that listing and list of retractions instead of reading them
-- (component/searcheval.c). Sealing does not bump it: a listing is only
-- reused when it shows every batch sealed, and sealed batches never change.
--
-- Applied inside db_migrate's transaction: no BEGIN/COMMIT here.

-- Once per transaction is enough (a search's snapshot sees all of one or
-- none of it), and more is harmful: a compaction commit changes up to 64
-- batches and 8 segments, and each new version of the room's row is one
-- more for every message store after it to step over until a vacuum (a
-- benchmark run that bumped per row stored messages at a third of the
-- rate). search_version_xact remembers the transaction that bumped last.
ALTER TABLE rooms ADD COLUMN search_version bigint NOT NULL DEFAULT 0,
    ADD COLUMN search_version_xact xid8;

CREATE FUNCTION search_version_bump() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rooms SET search_version = search_version + 1,
                     search_version_xact = pg_current_xact_id()
    WHERE room_id = NEW.room_id
      AND search_version_xact IS DISTINCT FROM pg_current_xact_id();
    RETURN NULL;
END
$$;

CREATE TRIGGER search_batches_version AFTER UPDATE OF state ON search_batches
    FOR EACH ROW WHEN (NEW.state = 2 AND OLD.state <> 2)
    EXECUTE FUNCTION search_version_bump();
CREATE TRIGGER search_segments_version_new AFTER INSERT ON search_segments
    FOR EACH ROW EXECUTE FUNCTION search_version_bump();
CREATE TRIGGER search_segments_version AFTER UPDATE OF state ON search_segments
    FOR EACH ROW WHEN (NEW.state IS DISTINCT FROM OLD.state)
    EXECUTE FUNCTION search_version_bump();
CREATE TRIGGER messages_retracted_version AFTER UPDATE OF retracted_at ON messages
    FOR EACH ROW WHEN (OLD.retracted_at IS NULL AND NEW.retracted_at IS NOT NULL)
    EXECUTE FUNCTION search_version_bump();
