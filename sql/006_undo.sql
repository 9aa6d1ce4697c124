-- Sealroom schema v6: undoing re-encryption tokens (xep/sealroom.xml
-- "Erasing tokens"). When a member finds the check header re-keyed along a
-- room's chain of tokens wrong (<check-failed/>), the tokens of that chain
-- that the stored check headers do not prove are revoked: moved here out of
-- archive_tokens in one transaction, so that neither the lazy path nor the
-- sweep re-keys through them again, and kept exactly as they were applied
-- until the sweep has carried every header that went through one of them
-- back to the epoch the token left (with the inverse of the tokens on its
-- way). These rows are what lets a restart finish an interrupted undo; the
-- sweep deletes them once no header has gone through a revoked token.
--
-- Applied inside db_migrate's transaction: no BEGIN/COMMIT here.

CREATE TABLE archive_undo (
    room_id    bigint      NOT NULL REFERENCES rooms ON DELETE CASCADE,
    -- the revoked token Δ(from_epoch → from_epoch + 1), as it was applied
    from_epoch bigint      NOT NULL CHECK (from_epoch > 0),
    delta      bytea       NOT NULL CHECK (length(delta) = 32),
    revoked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, from_epoch)
);
