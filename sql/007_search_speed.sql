-- Sealroom schema v7: encrypted search reads the room's retracted messages once per
-- search (component/searcheval.c) instead of checking each candidate: this
-- partial index holds only those, so reading them costs nothing in a room
-- where nobody retracts.
CREATE INDEX messages_retracted_idx ON messages (room_id, seq) WHERE retracted_at IS NOT NULL;
