-- Watch folders (photo_ingest.watch): what the watcher knows of each source file it has
-- handled, so that a restart neither ingests nor hashes an unchanged file again, and an
-- archive or delete cut short by a crash is finished exactly once. See docs/watch.md.
CREATE TABLE watch_files (
    host        text NOT NULL,
    path        bytea NOT NULL,          -- the source file's absolute path (bytes as named)
    watch_name  text NOT NULL,
    size        bigint NOT NULL,         -- size and mtime when it was ingested: a file that
    mtime_ns    bigint NOT NULL,         -- still has both is not taken again
    sha1        bytea CHECK (length(sha1) = 20),
    session_id  bigint REFERENCES ingest_sessions (id) ON DELETE SET NULL,
    state       text NOT NULL CHECK (state IN ('skipped', 'failed', 'kept', 'ingested',
                                               'archiving', 'archived', 'deleting', 'deleted')),
    reason      text,                    -- skipped / failed: why
    aside       bytea,                   -- archiving / deleting: its hidden name meanwhile
    target      bytea,                   -- archiving / archived: where it goes / went
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, path),
    CHECK (state NOT IN ('kept', 'ingested', 'archiving', 'archived', 'deleting', 'deleted')
           OR sha1 IS NOT NULL),
    CHECK (state NOT IN ('archiving', 'deleting') OR aside IS NOT NULL),
    CHECK (state NOT IN ('archiving', 'archived') OR target IS NOT NULL)
);
-- The after-step's work: ingested files waiting (for Immich) and interrupted moves.
CREATE INDEX watch_files_todo ON watch_files (host, watch_name)
    WHERE state IN ('ingested', 'archiving', 'deleting');
