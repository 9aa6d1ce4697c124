-- Sealroom schema v1: identities, rooms, the signed roster chain, current
-- members, the message archive and live occupants (xep/WIRE.md).
--
-- Applied by sealroomd's db_migrate inside one transaction, so this file must
-- not contain BEGIN/COMMIT. Later changes go into new sql/NNN_*.sql files;
-- never edit an applied migration.
--
-- Distribution (DESIGN §8): every per-room table has room_id as the first
-- primary-key column and every query filters by it, so each can become a
-- Citus distributed table on room_id, co-located with rooms. Nothing stored
-- here opens a message: payloads are sealed by clients.

-- One row per user. Keyed by bare JID, not by room: an identity is shared by
-- all of a user's rooms and read (rarely written) from any room's queries, so
-- it is a reference table (Citus create_reference_table: replicated to every
-- node), which is why it is the one table without room_id.
CREATE TABLE identities (
    jid           text        PRIMARY KEY,
    sign_pk       bytea       NOT NULL CHECK (length(sign_pk) = 32),
    proof         bytea       NOT NULL CHECK (length(proof) = 64),
    registered_at timestamptz NOT NULL DEFAULT now()
);

-- The room row is the per-room sequence (last_seq) and the roster head. It is
-- updated on every stored message, so leave room on each page for HOT
-- updates (none of the updated columns is indexed): the update then never
-- touches an index and the row's old versions are pruned in-page.
CREATE TABLE rooms (
    room_id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text        NOT NULL UNIQUE, -- bare room JID, lowercased
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_seq       bigint      NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    roster_version bigint      NOT NULL CHECK (roster_version >= 0),
    roster_head    bytea       NOT NULL CHECK (length(roster_head) = 32)
) WITH (fillfactor = 50);

-- The signed roster chain, kept whole: members fetch it to verify every
-- version from 0 (WIRE.md "Fetch the chain"), which is a primary-key range
-- scan. canonical is the exact signed byte string, so the component serves
-- what was signed rather than a re-encoding of it.
CREATE TABLE roster_versions (
    room_id    bigint      NOT NULL REFERENCES rooms ON DELETE CASCADE,
    version    bigint      NOT NULL CHECK (version >= 0),
    prev       bytea       NOT NULL CHECK (length(prev) = 32),
    hash       bytea       NOT NULL CHECK (length(hash) = 32),
    signer     text        NOT NULL,
    canonical  bytea       NOT NULL,
    sig        bytea       NOT NULL CHECK (length(sig) = 64),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, version)
);

-- The membership state after the head roster version: what access checks
-- read on every join, message and MAM query.
CREATE TABLE members (
    room_id       bigint   NOT NULL REFERENCES rooms ON DELETE CASCADE,
    jid           text     NOT NULL,
    role          smallint NOT NULL CHECK (role BETWEEN 1 AND 3), -- 1 member, 2 admin, 3 owner
    sign_pk       bytea    NOT NULL CHECK (length(sign_pk) = 32),
    since_version bigint   NOT NULL CHECK (since_version >= 0),
    PRIMARY KEY (room_id, jid)
);

-- disco#items lists the rooms a user belongs to: the one lookup of members
-- by JID across rooms.
CREATE INDEX members_jid_idx ON members (jid);

-- The archive. seq is the room's archive sequence (the stanza-id and MAM id),
-- taken from rooms.last_seq in the same statement that inserts the row.
-- Rows are only ever inserted, so the default fillfactor (100) is right.
CREATE TABLE messages (
    room_id   bigint      NOT NULL REFERENCES rooms ON DELETE CASCADE,
    seq       bigint      NOT NULL CHECK (seq > 0),
    sender    text        NOT NULL, -- bare JID
    nick      text        NOT NULL,
    origin_id text,
    stamp     timestamptz NOT NULL DEFAULT now(),
    payload   bytea       NOT NULL,
    PRIMARY KEY (room_id, seq)
);

-- Payloads are ciphertext: compressing them costs CPU and saves nothing.
-- EXTERNAL keeps large values out of line (so scans of the narrow columns
-- stay small) without trying pglz on them.
ALTER TABLE messages ALTER COLUMN payload SET STORAGE EXTERNAL;

-- XEP-0359 origin-id deduplication: (room, sender, origin-id) is unique, so a
-- resend stores nothing (INSERT ... ON CONFLICT (room_id, sender, origin_id)
-- WHERE origin_id IS NOT NULL DO NOTHING); the same index finds the original
-- stanza-id to reflect.
CREATE UNIQUE INDEX messages_origin_idx ON messages (room_id, sender, origin_id)
    WHERE origin_id IS NOT NULL;

-- MAM start/end filters: find the seq bounds of a time window without
-- touching the heap (index-only scan); the page itself is then a primary-key
-- range scan on (room_id, seq). stamp is the inserting transaction's start
-- time, so within one room it grows with seq up to the spread of concurrent
-- commits.
CREATE INDEX messages_stamp_idx ON messages (room_id, stamp) INCLUDE (seq);

-- Who is in each room right now, and which sealroomd instance holds the
-- session (several instances may share this database).
CREATE TABLE occupants (
    room_id   bigint      NOT NULL REFERENCES rooms ON DELETE CASCADE,
    full_jid  text        NOT NULL,
    nick      text        NOT NULL,
    bare_jid  text        NOT NULL,
    instance  text        NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, full_jid)
);

-- Join checks whether a nick is held by another bare JID.
CREATE INDEX occupants_nick_idx ON occupants (room_id, nick);
-- Roster removals kick every session of a bare JID.
CREATE INDEX occupants_bare_idx ON occupants (room_id, bare_jid);
-- The one cross-room query: an instance that restarts drops the occupants it
-- held before (their sessions died with it).
CREATE INDEX occupants_instance_idx ON occupants (instance);
