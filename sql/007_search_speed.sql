-- Sealroom schema v7: indexes for encrypted search's hot reads.
-- A search reads the room's retracted messages once (component/searcheval.c)
-- instead of checking each candidate: this partial index holds only those,
-- so reading them costs nothing in a room where nobody retracts.
CREATE INDEX messages_retracted_idx ON messages (room_id, seq) WHERE retracted_at IS NOT NULL;
-- Every search round, compaction lease and compact='due' hint lists the
-- room's live segments; merged ones (state 2) pile up over a room's life.
CREATE INDEX search_segments_live_idx ON search_segments (room_id) WHERE state = 1;
