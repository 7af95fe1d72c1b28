-- Metadata: one row per asset, written by `photo-ingest extract` (photo_ingest.metadata).
-- Typed columns answer the usual questions; `raw` keeps exiftool's complete output.
-- Every column is described in docs/metadata.md.

CREATE TABLE asset_metadata (
    asset_id              bigint PRIMARY KEY REFERENCES assets (id) ON DELETE CASCADE,
    status                text NOT NULL CHECK (status IN ('ok', 'failed')),
    error                 text,
    warnings              text,

    -- provenance: which code read the file, and the file as it was then
    extractor_version     integer NOT NULL,
    normaliser_version    integer NOT NULL,
    normaliser_settings   text NOT NULL,
    exiftool_version      text,
    extracted_at          timestamptz NOT NULL,
    normalised_at         timestamptz NOT NULL,
    file_size             bigint,
    file_mtime            timestamptz,
    sha1                  bytea NOT NULL,
    sidecar_ids           bigint[] NOT NULL DEFAULT '{}',

    file_type             text,
    mime_type             text,

    captured_at           timestamptz,
    captured_local        timestamp,
    capture_offset        text,
    capture_source        text,
    capture_offset_source text,

    camera_make           text,
    camera_model          text,
    camera                text GENERATED ALWAYS AS (
                              nullif(trim(coalesce(camera_make, '') || ' '
                                          || coalesce(camera_model, '')), '')) STORED,
    camera_serial         text,
    shutter_count         bigint,
    lens                  text,

    iso                   integer,
    f_number              double precision,
    exposure_time         double precision,
    exposure              text,
    focal_length          double precision,
    focal_length_35mm     double precision,
    flash                 integer,
    flash_fired           boolean,

    width                 integer,
    height                integer,
    orientation           smallint,

    gps_latitude          double precision CHECK (gps_latitude BETWEEN -90 AND 90),
    gps_longitude         double precision CHECK (gps_longitude BETWEEN -180 AND 180),
    gps_altitude          double precision,
    gps_time              timestamptz,

    duration              double precision,
    video_codec           text,
    frame_rate            double precision,

    rating                smallint,
    label                 text,
    keywords              text[] NOT NULL DEFAULT '{}',

    raw                   jsonb,
    raw_sidecars          jsonb,

    CHECK ((status = 'failed') = (error IS NOT NULL))
);

CREATE INDEX asset_metadata_captured_at ON asset_metadata (captured_at);
CREATE INDEX asset_metadata_captured_local ON asset_metadata (captured_local);
CREATE INDEX asset_metadata_camera ON asset_metadata (camera_make, camera_model);
CREATE INDEX asset_metadata_lens ON asset_metadata (lens);
CREATE INDEX asset_metadata_gps ON asset_metadata (gps_latitude, gps_longitude)
    WHERE gps_latitude IS NOT NULL;
CREATE INDEX asset_metadata_keywords ON asset_metadata USING gin (keywords);
CREATE INDEX asset_metadata_failed ON asset_metadata (asset_id) WHERE status = 'failed';
