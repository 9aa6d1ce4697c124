-- Sealroom schema v2: end-to-end encryption (notes/e2e-spec.md §7).
-- Identities gain the sealing key of their bundle; users get a vault; rooms
-- get epochs (with one catch-up envelope per member) and data-key headers.
--
-- Applied inside db_migrate's transaction: no BEGIN/COMMIT here. As in
-- 001_init.sql every per-room table has room_id first in its primary key.

-- The X25519 sealing key and the Ed25519 signature binding it to the JID and
-- the identity key (e2e/identity.h). NULL only for rows registered before
-- this version; such users must register again (same key) to be sealed to.
ALTER TABLE identities
    ADD COLUMN box_pk     bytea CHECK (length(box_pk) = 32),
    ADD COLUMN bundle_sig bytea CHECK (length(bundle_sig) = 64),
    ADD CONSTRAINT identities_bundle_whole CHECK ((box_pk IS NULL) = (bundle_sig IS NULL));

-- One sealed vault per user (e2e/vault.h), replaced by compare-and-swap on
-- version. Like identities, keyed by bare JID: a reference table.
CREATE TABLE vaults (
    jid        text        PRIMARY KEY,
    version    bigint      NOT NULL CHECK (version > 0),
    blob       bytea       NOT NULL CHECK (length(blob) BETWEEN 74 AND 1048576),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Sealed bytes do not compress.
ALTER TABLE vaults ALTER COLUMN blob SET STORAGE EXTERNAL;

-- current_epoch: 0 until the first epoch. membership_version: the latest
-- roster version holding an add or remove; an epoch agreed under an older
-- roster version is stale. Neither column is indexed, so updates stay HOT.
ALTER TABLE rooms
    ADD COLUMN current_epoch      bigint NOT NULL DEFAULT 0 CHECK (current_epoch >= 0),
    ADD COLUMN membership_version bigint NOT NULL DEFAULT 0 CHECK (membership_version >= 0);

-- Backfill membership_version from the stored canonical versions (layout in
-- libclient/src/proto/roster.c): label 18 ‖ lp16 room ‖ u64 version ‖ prev 32
-- ‖ lp16 signer ‖ u16 nops ‖ nops × (u8 kind ‖ lp16 jid ‖ u8 role ‖ key 32);
-- kind 1 is add, 2 remove.
CREATE FUNCTION pg_temp.sr_changes_membership(c bytea) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    p int := 18;
    n int;
    k int;
BEGIN
    p := p + 2 + (get_byte(c, p) << 8 | get_byte(c, p + 1)) + 8 + 32;
    p := p + 2 + (get_byte(c, p) << 8 | get_byte(c, p + 1));
    n := get_byte(c, p) << 8 | get_byte(c, p + 1);
    p := p + 2;
    FOR i IN 1..n LOOP
        k := get_byte(c, p);
        IF k = 1 OR k = 2 THEN
            RETURN true;
        END IF;
        p := p + 1 + 2 + (get_byte(c, p + 1) << 8 | get_byte(c, p + 2)) + 1 + 32;
    END LOOP;
    RETURN false;
END
$$;

UPDATE rooms r SET membership_version = m.v
FROM (SELECT room_id, max(version) AS v FROM roster_versions
      WHERE pg_temp.sr_changes_membership(canonical) GROUP BY room_id) m
WHERE m.room_id = r.room_id;

DROP FUNCTION pg_temp.sr_changes_membership(bytea);

-- One row per epoch of a room. roster_hash is the chain head at
-- roster_version (what envelopes and KC_e are bound to); kc the public
-- key-confirmation value; sealer the member who sealed the envelopes.
CREATE TABLE epochs (
    room_id        bigint      NOT NULL REFERENCES rooms ON DELETE CASCADE,
    epoch          bigint      NOT NULL CHECK (epoch > 0),
    roster_version bigint      NOT NULL CHECK (roster_version >= 0),
    roster_hash    bytea       NOT NULL CHECK (length(roster_hash) = 32),
    kc             bytea       NOT NULL CHECK (length(kc) = 32),
    sealer         text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, epoch)
);

-- The epoch secret sealed to each member of the epoch (e2e/envelope.h).
CREATE TABLE envelopes (
    room_id   bigint NOT NULL,
    epoch     bigint NOT NULL,
    recipient text   NOT NULL,
    sealer    text   NOT NULL,
    blob      bytea  NOT NULL CHECK (length(blob) = 145),
    PRIMARY KEY (room_id, epoch, recipient),
    FOREIGN KEY (room_id, epoch) REFERENCES epochs ON DELETE CASCADE
);

-- Data-key headers H = k_e·P (e2e/archive.h). The archive re-keying of the
-- next issue rewrites header and epoch in place, so leave room on each page
-- for HOT updates.
CREATE TABLE datakeys (
    room_id    bigint      NOT NULL REFERENCES rooms ON DELETE CASCADE,
    dkid       bytea       NOT NULL CHECK (length(dkid) = 16),
    sender     text        NOT NULL,
    epoch      bigint      NOT NULL CHECK (epoch > 0),
    header     bytea       NOT NULL CHECK (length(header) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, dkid)
) WITH (fillfactor = 60);
