-- Sealroom schema v4: archive re-encryption (DESIGN §6, xep/sealroom.xml
-- "Archive Re-encryption"). Every epoch gets its public check header
-- H_c = k_e·P_c(room); the member who made an epoch and held the one before
-- hands the component the token Δ = k_f·k_e⁻¹, kept here until the sweep has
-- moved every header past it and a member has confirmed a re-keyed check
-- header. Tokens are not secrets of the messages (the component could not
-- read anything with them) but they are erased once they are no longer
-- needed, so that a later leak of the database holds as few as possible.
--
-- Applied inside db_migrate's transaction: no BEGIN/COMMIT here.

-- NULL only for epochs stored before this version.
ALTER TABLE epochs ADD COLUMN check_header bytea CHECK (length(check_header) = 32);

CREATE TABLE archive_tokens (
    room_id    bigint      NOT NULL REFERENCES rooms ON DELETE CASCADE,
    from_epoch bigint      NOT NULL CHECK (from_epoch > 0),
    to_epoch   bigint      NOT NULL CHECK (to_epoch = from_epoch + 1),
    delta      bytea       NOT NULL CHECK (length(delta) = 32),
    -- false when epoch from_epoch had no check header to verify it against
    verified   boolean     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, from_epoch)
);

-- datakeys.epoch is the epoch a header is wrapped under now: re-keying moves
-- it forward. created_epoch is the epoch the data key was published in and
-- never changes: a message may name only a data key its sender published in
-- the current epoch, so that keys known to a removed member are not reused.
ALTER TABLE datakeys ADD COLUMN created_epoch bigint;
UPDATE datakeys SET created_epoch = epoch;
ALTER TABLE datakeys ALTER COLUMN created_epoch SET NOT NULL,
    ADD CONSTRAINT datakeys_created_epoch_check CHECK (created_epoch > 0 AND created_epoch <= epoch);

-- No index on datakeys.epoch: the sweep walks each room's headers in
-- primary-key order (room_id, dkid), and an index on epoch would make every
-- re-keying update a non-HOT one.
