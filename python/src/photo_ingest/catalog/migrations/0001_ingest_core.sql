-- Ingest core: sessions, assets and the per-file outcome of every session.

CREATE TABLE ingest_sessions (
    id              bigserial PRIMARY KEY,
    source          text NOT NULL,
    host            text NOT NULL,
    pid             integer NOT NULL,
    device          text,
    card_uuid       text,
    card_label      text,
    card_serial     text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz NOT NULL DEFAULT now(),
    ended_at        timestamptz,
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'completed', 'partial', 'failed', 'interrupted')),
    files_seen      integer NOT NULL DEFAULT 0,
    files_copied    integer NOT NULL DEFAULT 0,
    files_duplicate integer NOT NULL DEFAULT 0,
    files_skipped   integer NOT NULL DEFAULT 0,
    files_failed    integer NOT NULL DEFAULT 0,
    bytes_total     bigint  NOT NULL DEFAULT 0,
    bytes_copied    bigint  NOT NULL DEFAULT 0,
    error           text
);
CREATE INDEX ingest_sessions_running ON ingest_sessions (host, pid) WHERE status = 'running';
CREATE INDEX ingest_sessions_card ON ingest_sessions (card_uuid);

CREATE TABLE assets (
    id               bigserial PRIMARY KEY,
    sha1             bytea NOT NULL UNIQUE CHECK (length(sha1) = 20),
    size             bigint NOT NULL CHECK (size >= 0),
    library_path     text NOT NULL UNIQUE,
    media_type       text NOT NULL CHECK (media_type IN ('photo', 'raw', 'video')),
    original_path    text NOT NULL,      -- relative to the source; undecodable bytes as \xNN
    original_name    text NOT NULL,
    captured_at      timestamptz,        -- the instant, when the offset is known or assumed
    captured_local   timestamp NOT NULL, -- the camera's wall clock: what the layout files by
    capture_offset   text,               -- '+02:00' when the file said so, NULL when assumed
    capture_source   text NOT NULL CHECK (capture_source IN
                     ('DateTimeOriginal', 'CreateDate', 'QuickTime:CreateDate', 'mtime')),
    camera_make      text,
    camera_model     text,
    session_id       bigint NOT NULL REFERENCES ingest_sessions (id),
    ingested_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX assets_captured_local ON assets (captured_local);
CREATE INDEX assets_size_name ON assets (size, original_name);
CREATE INDEX assets_session ON assets (session_id);

-- XMP/THM files travel with their primary asset, named after its library file.
CREATE TABLE sidecars (
    id            bigserial PRIMARY KEY,
    asset_id      bigint NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    sha1          bytea NOT NULL CHECK (length(sha1) = 20),
    size          bigint NOT NULL,
    library_path  text NOT NULL UNIQUE,
    original_path text NOT NULL,
    session_id    bigint NOT NULL REFERENCES ingest_sessions (id),
    ingested_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (asset_id, sha1)
);

CREATE TABLE session_files (
    session_id    bigint NOT NULL REFERENCES ingest_sessions (id) ON DELETE CASCADE,
    relpath       text NOT NULL,
    size          bigint,
    sha1          bytea,
    outcome       text NOT NULL CHECK (outcome IN ('copied', 'duplicate', 'skipped', 'failed')),
    reason        text,
    asset_id      bigint REFERENCES assets (id),
    sidecar_id    bigint REFERENCES sidecars (id),
    library_path  text,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, relpath),
    CHECK ((outcome IN ('skipped', 'failed')) = (reason IS NOT NULL))
);
CREATE INDEX session_files_failed ON session_files (session_id) WHERE outcome = 'failed';
