-- Which process runs a session, exactly: a PID can be reused after a crash and a reboot (or
-- a wrap of the PID counter), and the session would then look `running` for as long as the
-- new owner of the number lives. The boot id and the process's start time tell them apart
-- (photo_ingest.ingest.process). NULL in rows from before, and where /proc hides them.
ALTER TABLE ingest_sessions
    ADD COLUMN boot_id     text,
    ADD COLUMN pid_started bigint;   -- start time of the process, clock ticks after boot
