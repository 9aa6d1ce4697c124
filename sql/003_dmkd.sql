-- Sealroom schema v3: multi-cast key distribution runs (DESIGN §5,
-- xep/sealroom.xml "Multi-cast key distribution"). At most one run per room;
-- a run lives here from its start until its epoch commits (or it fails), so a
-- restarted component resumes it where its members left it. Nothing here is
-- secret: the component sees R_i, c_i, T_i and every k_i but the
-- representative's, and never the key.
--
-- Applied inside db_migrate's transaction: no BEGIN/COMMIT here.

CREATE TABLE dmkd_runs (
    room_id        bigint      PRIMARY KEY REFERENCES rooms ON DELETE CASCADE,
    run_id         bytea       NOT NULL CHECK (length(run_id) = 16),
    epoch          bigint      NOT NULL CHECK (epoch > 0),
    roster_version bigint      NOT NULL CHECK (roster_version >= 0),
    roster_hash    bytea       NOT NULL CHECK (length(roster_hash) = 32),
    -- 1: collecting round 1; 2: round 2; 3: confirmations.
    phase          smallint    NOT NULL CHECK (phase BETWEEN 1 AND 3),
    sid            bytea       CHECK (length(sid) = 32),
    k_prime        bytea       CHECK (length(k_prime) = 32),
    started_at     timestamptz NOT NULL DEFAULT now()
);

-- The ring: position 0 is the representative. Round values are NULL until
-- the member's answer arrives.
CREATE TABLE dmkd_parts (
    room_id    bigint NOT NULL REFERENCES dmkd_runs ON DELETE CASCADE,
    position   int    NOT NULL CHECK (position >= 0),
    jid        text   NOT NULL,
    full_jid   text   NOT NULL,
    r_point    bytea  CHECK (length(r_point) = 32),
    commitment bytea  CHECK (length(commitment) = 32),
    sig1       bytea  CHECK (length(sig1) = 64),
    t          bytea  CHECK (length(t) = 32),
    second     bytea  CHECK (length(second) = 32),
    sig2       bytea  CHECK (length(sig2) = 64),
    PRIMARY KEY (room_id, position)
);

-- Whether the occupant's join presence announced that it takes part in
-- runs (<keys xmlns='urn:xmpp:sealroom:keys:0'/>): only those are asked.
ALTER TABLE occupants ADD COLUMN dmkd boolean NOT NULL DEFAULT false;
