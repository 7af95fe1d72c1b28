-- Immich sync (photo_ingest.immich): which asset is where in which Immich account.
-- Every column is described in docs/immich.md.

-- An Immich account synced to, in one mode. Immich user ids are random UUIDs, so they
-- identify the account across URL changes (a new host name, http -> https).
CREATE TABLE immich_targets (
    id               serial PRIMARY KEY,
    user_id          uuid NOT NULL,
    mode             text NOT NULL CHECK (mode IN ('upload', 'library')),
    url              text NOT NULL,          -- the API URL last used
    user_email       text,
    library_id       uuid,                   -- library mode: the external library
    created_at       timestamptz NOT NULL DEFAULT now(),
    seen_at          timestamptz NOT NULL DEFAULT now(),
    last_success_at  timestamptz,            -- last time an asset reached a done state
    last_scan_at     timestamptz,            -- library mode: last scan requested
    last_error       text,                   -- last pass-level problem (server down, key)
    last_error_at    timestamptz,
    UNIQUE (user_id, mode)
);

-- One row per (account, asset), created for every catalogued asset when a sync pass
-- starts. `pending` rows are work; the others are final until `sync --retry-failed`.
CREATE TABLE immich_assets (
    target_id        integer NOT NULL REFERENCES immich_targets (id) ON DELETE CASCADE,
    asset_id         bigint NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'done', 'trashed', 'skipped', 'failed')),
    result           text CHECK (result IN ('uploaded', 'duplicate', 'scanned')),
    immich_id        uuid,                   -- the Immich asset (uploaded or the duplicate)
    album            text,                   -- the album it belongs in (NULL: none)
    album_id         uuid,                   -- set once it is in that album
    checked_at       timestamptz,            -- bulk-upload-check answered "accept"
    reason           text,                   -- why trashed / skipped / failed
    last_error       text,                   -- pending: the last transient error
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,                   -- host:pid:nonce of the worker holding it
    lease_expires_at timestamptz,            -- a dead worker's lease runs out
    bytes_sent       bigint,
    enqueued_at      timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_id, asset_id),
    CHECK ((state IN ('trashed', 'skipped', 'failed')) = (reason IS NOT NULL)),
    CHECK (state <> 'done' OR result IS NOT NULL),
    CHECK (state <> 'trashed' OR immich_id IS NOT NULL)
);
CREATE INDEX immich_assets_pending ON immich_assets (target_id, asset_id)
    WHERE state = 'pending';
CREATE INDEX immich_assets_problems ON immich_assets (target_id, updated_at)
    WHERE state IN ('trashed', 'skipped', 'failed');
CREATE INDEX immich_assets_asset ON immich_assets (asset_id);

-- Album name -> Immich album, so each name is looked up (and created) once.
CREATE TABLE immich_albums (
    target_id   integer NOT NULL REFERENCES immich_targets (id) ON DELETE CASCADE,
    name        text NOT NULL,
    album_id    uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_id, name)
);

-- Live Photo pairs: a still (HEIC/HEIF/JPEG) and a video (MOV/MP4) from the same folder
-- of the same card session, with the same name stem, captured within 3 seconds. Found
-- when their rows are first enqueued; the video is uploaded first and linked.
CREATE TABLE immich_live_pairs (
    photo_id  bigint PRIMARY KEY REFERENCES assets (id) ON DELETE CASCADE,
    video_id  bigint NOT NULL UNIQUE REFERENCES assets (id) ON DELETE CASCADE
);
