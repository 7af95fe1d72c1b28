-- Mirrors, the bit-rot scrub, notifications and backlog samples (photo_ingest.mirror,
-- photo_ingest.notify). Every column is described in docs/mirror.md and
-- docs/notifications.md.

-- A configured mirror, as last seen by a run: is it there, and since when not.
CREATE TABLE mirror_destinations (
    name              text PRIMARY KEY,
    path              text NOT NULL,
    required          boolean NOT NULL,
    first_seen_at     timestamptz NOT NULL DEFAULT now(),
    checked_at        timestamptz NOT NULL DEFAULT now(),
    available         boolean NOT NULL DEFAULT false,
    unavailable_since timestamptz,
    last_error        text,          -- why it was unavailable (or full) at the last check
    last_copied_at    timestamptz
);

-- One row per (library file, mirror): the asset itself (sidecar_id NULL) or one of its
-- sidecars. `pending` rows are work; `copied` rows hold the SHA-1 verified on the mirror.
CREATE TABLE mirror_copies (
    id           bigserial PRIMARY KEY,
    destination  text NOT NULL REFERENCES mirror_destinations (name) ON DELETE CASCADE,
    asset_id     bigint NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    sidecar_id   bigint REFERENCES sidecars (id) ON DELETE CASCADE,
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'copied', 'failed')),
    result       text CHECK (result IN ('copied', 'adopted')),  -- adopted: found in place
    sha1         bytea CHECK (length(sha1) = 20),  -- as verified on the mirror
    size         bigint,
    copied_at    timestamptz,
    attempts     integer NOT NULL DEFAULT 0,
    error        text,           -- failed: why; pending: the last transient error
    enqueued_at  timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'copied') = (sha1 IS NOT NULL AND copied_at IS NOT NULL)),
    CHECK (state <> 'failed' OR error IS NOT NULL)
);
CREATE UNIQUE INDEX mirror_copies_asset ON mirror_copies (destination, asset_id)
    WHERE sidecar_id IS NULL;
CREATE UNIQUE INDEX mirror_copies_sidecar ON mirror_copies (destination, sidecar_id)
    WHERE sidecar_id IS NOT NULL;
CREATE INDEX mirror_copies_pending ON mirror_copies (destination, asset_id)
    WHERE state = 'pending';
CREATE INDEX mirror_copies_asset_id ON mirror_copies (asset_id);

-- One run of `photo-ingest verify` over one destination ('library' or a mirror's name).
CREATE TABLE verify_runs (
    id           bigserial PRIMARY KEY,
    destination  text NOT NULL,
    host         text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    ended_at     timestamptz,
    status       text NOT NULL DEFAULT 'running'
                 CHECK (status IN ('running', 'completed', 'interrupted', 'unavailable')),
    sample       integer NOT NULL,   -- files asked for (0: all)
    checked      integer NOT NULL DEFAULT 0,
    bytes        bigint NOT NULL DEFAULT 0,
    rot          integer NOT NULL DEFAULT 0,
    missing      integer NOT NULL DEFAULT 0,
    unreadable   integer NOT NULL DEFAULT 0,
    error        text
);
CREATE INDEX verify_runs_destination ON verify_runs (destination, ended_at);

-- What a scrub found: a file whose bytes differ from the catalog's SHA-1 (rot), that is
-- gone (missing), or that cannot be read (unreadable). Never repaired silently.
CREATE TABLE verify_findings (
    id            bigserial PRIMARY KEY,
    run_id        bigint NOT NULL REFERENCES verify_runs (id) ON DELETE CASCADE,
    destination   text NOT NULL,
    asset_id      bigint NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    sidecar_id    bigint REFERENCES sidecars (id) ON DELETE CASCADE,
    library_path  text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('rot', 'missing', 'unreadable')),
    expected_sha1 bytea NOT NULL,
    found_sha1    bytea,
    found_size    bigint,
    detail        text,
    found_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX verify_findings_run ON verify_findings (run_id);

-- When each file was last scrubbed where: `verify --sample N` takes the N checked longest
-- ago, so nightly samples cover everything in turn.
CREATE TABLE verify_checks (
    destination  text NOT NULL,
    asset_id     bigint NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    sidecar_id   bigint REFERENCES sidecars (id) ON DELETE CASCADE,
    checked_at   timestamptz NOT NULL,
    ok           boolean NOT NULL
);
CREATE UNIQUE INDEX verify_checks_asset ON verify_checks (destination, asset_id)
    WHERE sidecar_id IS NULL;
CREATE UNIQUE INDEX verify_checks_sidecar ON verify_checks (destination, sidecar_id)
    WHERE sidecar_id IS NOT NULL;

-- Every notification attempted, delivered or not (the notify metrics count these).
CREATE TABLE notify_log (
    id          bigserial PRIMARY KEY,
    event       text NOT NULL,       -- success | partial | failure | stall | recovered | test
    title       text NOT NULL,
    host        text NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    ok          boolean NOT NULL,
    attempts    integer NOT NULL,
    status_code integer,             -- the last HTTP status, if any answer came
    error       text
);
CREATE INDEX notify_log_sent ON notify_log (sent_at);

-- `photo-ingest backlog-check`: the size of each backlog and how much of it was ever done,
-- sampled every run; a backlog > 0 whose `done` does not move for notify.stall_minutes is
-- a stall. kind: metadata | immich | mirror:NAME.
CREATE TABLE backlog_samples (
    kind        text NOT NULL,
    sampled_at  timestamptz NOT NULL DEFAULT now(),
    backlog     bigint NOT NULL,
    done        bigint NOT NULL,
    PRIMARY KEY (kind, sampled_at)
);

-- A stall is notified once when it starts and once when it ends.
CREATE TABLE backlog_stalls (
    kind         text PRIMARY KEY,
    stalled      boolean NOT NULL,
    since        timestamptz NOT NULL,   -- stalled: the last sample before it stopped moving
    backlog      bigint NOT NULL,        -- at the change
    done         bigint NOT NULL         -- at the change: a stall ends when this moves
);
