-- Sealroom schema v13: a compaction's blocks are staged where they will
-- live, so that committing a segment copies nothing.
--
-- Until now <segment-part/> put blocks in search_staged and
-- <segment-commit/> copied them into search_blocks in its one transaction:
-- about 122,000 blocks (35 MB) for a level-1 segment of 64 batches of
-- 2,400 messages, 0.73 s of INSERT plus 0.06 s of DELETE on the component's
-- write connection, during which no message of any room was stored. A
-- lease already names the id its segment will have (search_leases.segment,
-- from a sequence, never used for anything else), and searches read blocks
-- only of the segments they list, which are those in search_segments in
-- state 1. So a part now inserts its blocks under that id straight away;
-- they stay unread until the commit inserts the segment row, and a lease
-- that expires loses them as it lost its staged rows (its segment id is
-- never used again). The cost of writing the blocks is spread over the
-- parts, 512 blocks at a time.
--
-- Applied inside db_migrate's transaction: no BEGIN/COMMIT here.

INSERT INTO search_blocks (room_id, segment, label, body)
SELECT s.room_id, l.segment, s.label, s.body
FROM search_staged s JOIN search_leases l ON l.room_id = s.room_id AND l.lease = s.lease
ON CONFLICT DO NOTHING;
DROP TABLE search_staged;
