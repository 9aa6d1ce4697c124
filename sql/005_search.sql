-- Sealroom schema v5: encrypted keyword search (DESIGN §7, xep/sealroom.xml
-- "Encrypted Search"). The component stores an index it cannot read: entry
-- labels are PRF outputs of per-keyword batch tokens it never sees until a
-- member searches, segment blocks are AEAD-sealed under keys derived from
-- those tokens, and the keyring of generation keys is sealed under the
-- epoch's keyring key. What it learns is the access pattern of searches, the
-- number of entries per message (padded to a multiple of 8) and, at search
-- time, which stored messages match.
--
-- Applied inside db_migrate's transaction: no BEGIN/COMMIT here.

-- search_gen: the room's current index generation (0 = no keyring yet).
-- search_need_gen: a member was removed since that generation began, so no
-- batch may be taken until a keyring with generation search_gen + 1 exists.
-- search_last_batch: the per-room batch sequence. None is indexed, so
-- updates stay HOT like last_seq's.
ALTER TABLE rooms ADD COLUMN search_gen integer NOT NULL DEFAULT 0 CHECK (search_gen >= 0),
    ADD COLUMN search_need_gen boolean NOT NULL DEFAULT false,
    ADD COLUMN search_last_batch bigint NOT NULL DEFAULT 0 CHECK (search_last_batch >= 0);

-- A retracted message (XEP-0424) keeps its row (sequence numbers never
-- move) but loses its payload and never matches a search again.
ALTER TABLE messages ADD COLUMN retracted_at timestamptz;

-- One sealed keyring per epoch, written by a member; never rewritten.
CREATE TABLE search_keyrings (
    room_id    bigint      NOT NULL REFERENCES rooms ON DELETE CASCADE,
    epoch      bigint      NOT NULL CHECK (epoch > 0),
    gen        integer     NOT NULL CHECK (gen > 0),
    blob       bytea       NOT NULL CHECK (length(blob) BETWEEN 40 AND 65536),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, epoch)
);

-- Writer batches. state: 0 open (takes entries from its owner), 1 sealed
-- (searchable, takes nothing), 2 compacted (its entries moved into a
-- segment and deleted). entries is the running count, to seal at the cap.
CREATE TABLE search_batches (
    room_id    bigint      NOT NULL REFERENCES rooms ON DELETE CASCADE,
    batch      bigint      NOT NULL CHECK (batch > 0 AND batch < 4294967296),
    gen        integer     NOT NULL CHECK (gen > 0),
    owner      text        NOT NULL,
    state      smallint    NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 2),
    entries    integer     NOT NULL DEFAULT 0 CHECK (entries >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, batch)
) WITH (fillfactor = 70);
-- Searches and compaction list a room's batches that still hold entries;
-- compacted ones pile up and must not be walked every time.
CREATE INDEX search_batches_live_idx ON search_batches (room_id, batch) WHERE state < 2;

-- Entries: probed by (room, batch, label), deleted by batch after a
-- compaction, so the primary key is the only index (one btree per insert);
-- it carries seq so that probes can be index-only scans. No foreign key:
-- a check per entry would cost every stored message 8 or more lookups, and
-- rooms are never deleted while they hold entries (the service has no
-- room deletion; whoever adds it deletes the search rows first).
CREATE TABLE search_entries (
    room_id bigint NOT NULL,
    batch   bigint NOT NULL,
    label   bytea  NOT NULL CHECK (length(label) = 16),
    seq     bigint NOT NULL CHECK (seq > 0),
    PRIMARY KEY (room_id, batch, label) INCLUDE (seq)
);

-- Static segments made by compaction. seqs are the messages the segment
-- indexes (the component knew them from the entries it replaced); min/max
-- order segments for newest-first paging.
CREATE TABLE search_segments (
    room_id     bigint      NOT NULL REFERENCES rooms ON DELETE CASCADE,
    segment     bigint      NOT NULL CHECK (segment > 0),
    gen         integer     NOT NULL CHECK (gen > 0),
    level       smallint    NOT NULL CHECK (level > 0),
    first_batch bigint      NOT NULL,
    last_batch  bigint      NOT NULL CHECK (last_batch >= first_batch),
    min_seq     bigint      NOT NULL,
    max_seq     bigint      NOT NULL CHECK (max_seq >= min_seq),
    seqs        bigint[]    NOT NULL,
    state       smallint    NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 2), -- 0 building, 1 live, 2 merged
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, segment)
);
CREATE SEQUENCE search_segment_ids;

CREATE TABLE search_blocks (
    room_id bigint NOT NULL,
    segment bigint NOT NULL,
    label   bytea  NOT NULL CHECK (length(label) = 16),
    body    bytea  NOT NULL CHECK (length(body) = 274),
    PRIMARY KEY (room_id, segment, label)
);

-- Compaction leases: one member builds segment `segment` from `batches` and
-- `merged_segments`; until it commits (before `expires`) nothing changes for
-- searches. Staged blocks wait in search_staged.
CREATE TABLE search_leases (
    room_id         bigint      NOT NULL REFERENCES rooms ON DELETE CASCADE,
    lease           bigint      NOT NULL CHECK (lease > 0),
    segment         bigint      NOT NULL,
    gen             integer     NOT NULL,
    level           smallint    NOT NULL,
    holder          text        NOT NULL,
    expires         timestamptz NOT NULL,
    first_batch     bigint      NOT NULL,
    last_batch      bigint      NOT NULL,
    batches         bigint[]    NOT NULL,
    merged_segments bigint[]    NOT NULL,
    seqs            bigint[]    NOT NULL,
    PRIMARY KEY (room_id, lease)
);
CREATE SEQUENCE search_lease_ids;

CREATE TABLE search_staged (
    room_id bigint NOT NULL,
    lease   bigint NOT NULL,
    label   bytea  NOT NULL CHECK (length(label) = 16),
    body    bytea  NOT NULL CHECK (length(body) = 274),
    PRIMARY KEY (room_id, lease, label)
);
