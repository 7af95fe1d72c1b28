-- DuckDB: exiftool's JSON (-json -n -G) -> one typed metadata record per asset.
--
-- Loaded once per DuckDB database by photo_ingest.metadata.normalise. Each loader thread
-- has its own connection with its own temporary `docs` table (created before this file
-- runs: one row per file read, the asset's own file and its sidecars); each batch fills it
-- and reads the view `normalised`, which binds `docs` to the reading connection's table. Which tags feed which column is documented in docs/metadata.md; keep the two
-- in step, and bump NORMALISER_VERSION in normalise.py when a result can change.

CREATE TABLE settings (zone VARCHAR);          -- zone assumed for times without an offset
CREATE TABLE makes (key VARCHAR PRIMARY KEY, name VARCHAR);  -- upper(make) -> display name

-- ---- scalar helpers ----------------------------------------------------------------------
-- (Each macro uses its arguments once, or only on plain columns: DuckDB inlines macros, and
-- nesting ones that repeat their arguments multiplies the work of every batch.)

-- trimmed, inner runs of white space collapsed, empty -> NULL
CREATE MACRO pi_clean(v) AS nullif(trim(regexp_replace(v, '\s+', ' ', 'g')), '');

-- '+02:00' / '-0530' / 'Z' (already extracted) -> minutes east of UTC; NULL if impossible:
-- minutes 60 and up, or beyond the offsets in use on Earth (-12:00 .. +14:00)
CREATE MACRO pi_minutes(s) AS CASE
    WHEN s = 'Z' THEN 0
    WHEN TRY_CAST(right(s, 2) AS INTEGER) < 60
         AND TRY_CAST(substr(s, 2, 2) AS INTEGER) * 60 + TRY_CAST(right(s, 2) AS INTEGER)
             <= CASE WHEN starts_with(s, '-') THEN 720 ELSE 840 END
        THEN CASE WHEN starts_with(s, '-') THEN -1 ELSE 1 END
             * (TRY_CAST(substr(s, 2, 2) AS INTEGER) * 60 + TRY_CAST(right(s, 2) AS INTEGER))
END;

CREATE MACRO pi_offset_label(m) AS
    printf('%s%02d:%02d', CASE WHEN m < 0 THEN '-' ELSE '+' END, abs(m) // 60, abs(m) % 60);

-- one date tag of a file, a candidate for the capture time (kind 'capture') or the GPS
-- clock (kind 'gps'): its value, sub-second tag, and up to two offset tags by preference.
-- UTC marks QuickTime dates, which are UTC by specification.
CREATE MACRO pi_date(n, kind, src, v, subsec, off_a, off_a_src, off_b, off_b_src, utc) AS {
    'n': n, 'kind': kind, 'src': src, 'v': v, 'subsec': subsec, 'off_a': off_a,
    'off_a_src': off_a_src, 'off_b': off_b, 'off_b_src': off_b_src, 'utc': utc};

-- a JSON value that is a list or a single item -> list of trimmed, non-empty text (objects
-- and nested lists are not keywords)
CREATE MACRO pi_list(j) AS list_filter(list_transform(list_filter(
    CASE WHEN j IS NULL THEN [] WHEN json_type(j) = 'ARRAY' THEN json_extract(j, '$[*]')
         ELSE [j] END,
    lambda x: json_type(x) NOT IN ('OBJECT', 'ARRAY', 'NULL')),
    lambda x: pi_clean(json_extract_string(x, '$'))), lambda x: x IS NOT NULL);
-- without repeats, in order
CREATE MACRO pi_distinct(l) AS list_filter(l, lambda x, i: list_position(l, x) = i);

-- the first number of a value ('3200', '100 100', '[3200]'); nothing out of an object
CREATE MACRO pi_number(v) AS TRY_CAST(regexp_extract(CAST(v AS VARCHAR),
                                                     '^\[?\s*(-?\d+(?:\.\d+)?)', 1) AS DOUBLE);
-- a measure: positive and finite (exiftool writes 'inf' for a rational over zero)
CREATE MACRO pi_positive(v) AS CASE WHEN v > 0 AND isfinite(v) THEN v END;
-- a whole number within a column's type, or NULL (never a failed cast: that sinks a batch)
CREATE MACRO pi_whole(v, lo, hi) AS CASE WHEN v BETWEEN lo AND hi AND v = floor(v)
                                         THEN TRY_CAST(v AS BIGINT) END;
-- a moment Python and PostgreSQL both hold: years 1 to 9999
-- width and height, both whole pixels that fit an integer column, or nothing
CREATE MACRO pi_size(w, h) AS CASE WHEN pi_whole(w, 1, 2147483647) IS NOT NULL
                                        AND pi_whole(h, 1, 2147483647) IS NOT NULL
                                   THEN {'w': w, 'h': h} END;
-- (compared, not by year(): that says 1 for 1 BC; TIMESTAMPTZ compares in UTC, the setting)
CREATE MACRO pi_in_calendar(ts) AS CASE WHEN ts >= TIMESTAMP '0001-01-01'
                                             AND ts < TIMESTAMP '10000-01-01' THEN ts END;

-- exposure time for people: exiftool's own rule, '1/250' up to a quarter second, else '0.5', '2'
CREATE MACRO pi_exposure(t) AS CASE
    WHEN t <= 0 THEN NULL
    WHEN t < 0.25001 THEN '1/' || TRY_CAST(round(1 / t) AS BIGINT)
    ELSE regexp_replace(printf('%.1f', t), '\.0$', '')
END;

-- lens names that say nothing ('----', '0.0 mm f/0.0', 'Unknown (-1)', 'N/A')
CREATE MACRO pi_lens_ok(v) AS v IS NOT NULL AND NOT regexp_matches(
    v, '^(-+|0+|n/?a|none|unknown.*|0(\.0+)? ?mm( f/?0(\.0+)?)?)$', 'i');

-- video codec identifiers (QuickTime fourcc, Matroska codec id, AVI fourcc, M2TS stream
-- type) -> the names people use; unknown ones are kept as they are
CREATE MACRO pi_codec(id) AS coalesce(MAP {
    'avc1': 'H.264', 'avc3': 'H.264', 'h264': 'H.264', 'v_mpeg4/iso/avc': 'H.264', '27': 'H.264',
    'hvc1': 'H.265', 'hev1': 'H.265', 'dvh1': 'H.265', 'dvhe': 'H.265',
    'v_mpegh/iso/hevc': 'H.265', '36': 'H.265',
    'apch': 'ProRes', 'apcn': 'ProRes', 'apcs': 'ProRes', 'apco': 'ProRes', 'ap4h': 'ProRes',
    'ap4x': 'ProRes', 'jpeg': 'Motion JPEG', 'mjpg': 'Motion JPEG', 'mjpa': 'Motion JPEG',
    'mp4v': 'MPEG-4 Visual', '2': 'MPEG-2', 'mpg2': 'MPEG-2',
    'av01': 'AV1', 'v_av1': 'AV1', 'vp09': 'VP9', 'v_vp9': 'VP9'
}[lower(trim(id))], pi_clean(id));

-- MODEL without a leading PREFIX word(s), if something is left
CREATE MACRO pi_strip(model, prefix) AS CASE
    WHEN prefix <> '' AND starts_with(lower(model), lower(prefix) || ' ')
        THEN nullif(trim(substr(model, length(prefix) + 2)), '')
END;

-- a PostgreSQL array literal, for COPY
CREATE MACRO pi_pg_array(l) AS '{' || array_to_string(list_transform(l, lambda x:
    '"' || replace(replace(x, '\', '\\'), '"', '\"') || '"'), ',') || '}';

-- ---- per file: the tags this normaliser reads, typed -------------------------------------
-- json_transform parses each document once; a value of the wrong type becomes NULL.

CREATE VIEW tags AS
SELECT asset_id, seq, sidecar, doc, json_transform(doc, '{
    "ExifTool:Error": "VARCHAR", "ExifTool:Warning": "VARCHAR",
    "ExifTool:ExifToolVersion": "VARCHAR",
    "File:FileType": "VARCHAR", "File:MIMEType": "VARCHAR",
    "File:ImageWidth": "DOUBLE", "File:ImageHeight": "DOUBLE",

    "EXIF:DateTimeOriginal": "VARCHAR", "EXIF:SubSecTimeOriginal": "VARCHAR",
    "EXIF:OffsetTimeOriginal": "VARCHAR", "EXIF:OffsetTime": "VARCHAR",
    "EXIF:CreateDate": "VARCHAR", "EXIF:SubSecTimeDigitized": "VARCHAR",
    "EXIF:OffsetTimeDigitized": "VARCHAR",
    "XMP:DateTimeOriginal": "VARCHAR", "XMP:CreateDate": "VARCHAR",
    "XMP:DateCreated": "VARCHAR",
    "QuickTime:CreationDate": "VARCHAR", "QuickTime:CreateDate": "VARCHAR",
    "H264:DateTimeOriginal": "VARCHAR", "RIFF:DateTimeOriginal": "VARCHAR",
    "Composite:GPSDateTime": "VARCHAR",

    "EXIF:Make": "VARCHAR", "EXIF:Model": "VARCHAR",
    "QuickTime:Make": "VARCHAR", "QuickTime:Model": "VARCHAR",
    "XMP:Make": "VARCHAR", "XMP:Model": "VARCHAR",
    "EXIF:SerialNumber": "VARCHAR", "MakerNotes:SerialNumber": "VARCHAR",
    "MakerNotes:InternalSerialNumber": "VARCHAR", "XMP:SerialNumber": "VARCHAR",
    "MakerNotes:ShutterCount": "DOUBLE", "MakerNotes:ImageCount": "DOUBLE",
    "XMP:ImageNumber": "DOUBLE",

    "EXIF:LensModel": "VARCHAR", "Composite:PhotoIngestLens": "VARCHAR",
    "MakerNotes:LensModel": "VARCHAR", "XMP:LensModel": "VARCHAR", "XMP:Lens": "VARCHAR",
    "MakerNotes:Lens": "VARCHAR",

    "EXIF:ISO": "VARCHAR", "XMP:ISO": "VARCHAR", "MakerNotes:ISO": "VARCHAR",
    "Composite:ISO": "VARCHAR",
    "EXIF:RecommendedExposureIndex": "DOUBLE", "EXIF:ISOSpeed": "DOUBLE",
    "EXIF:FNumber": "DOUBLE", "Composite:Aperture": "DOUBLE", "XMP:FNumber": "DOUBLE",
    "EXIF:ExposureTime": "DOUBLE", "Composite:ShutterSpeed": "DOUBLE",
    "XMP:ExposureTime": "DOUBLE",
    "EXIF:FocalLength": "DOUBLE", "XMP:FocalLength": "DOUBLE",
    "EXIF:FocalLengthIn35mmFormat": "DOUBLE", "XMP:FocalLengthIn35mmFormat": "DOUBLE",
    "Composite:FocalLength35efl": "DOUBLE",
    "EXIF:Flash": "DOUBLE", "XMP:FlashFired": "VARCHAR",

    "Composite:ImageSize": "VARCHAR",
    "EXIF:ExifImageWidth": "DOUBLE", "EXIF:ExifImageHeight": "DOUBLE",
    "EXIF:ImageWidth": "DOUBLE", "EXIF:ImageHeight": "DOUBLE",
    "QuickTime:ImageWidth": "DOUBLE", "QuickTime:ImageHeight": "DOUBLE",
    "PNG:ImageWidth": "DOUBLE", "PNG:ImageHeight": "DOUBLE",
    "EXIF:Orientation": "DOUBLE", "XMP:Orientation": "DOUBLE", "Composite:Rotation": "DOUBLE",

    "Composite:GPSLatitude": "DOUBLE", "Composite:GPSLongitude": "DOUBLE",
    "Composite:GPSAltitude": "DOUBLE",
    "XMP:GPSLatitude": "DOUBLE", "XMP:GPSLongitude": "DOUBLE",
    "XMP:GPSAltitude": "DOUBLE", "XMP:GPSAltitudeRef": "DOUBLE",

    "QuickTime:Duration": "DOUBLE", "M2TS:Duration": "DOUBLE", "RIFF:Duration": "DOUBLE",
    "Matroska:Duration": "DOUBLE",
    "QuickTime:CompressorID": "VARCHAR", "Matroska:VideoCodecID": "VARCHAR",
    "RIFF:VideoCodec": "VARCHAR", "M2TS:VideoStreamType": "VARCHAR",
    "QuickTime:VideoFrameRate": "DOUBLE", "RIFF:VideoFrameRate": "DOUBLE",
    "RIFF:FrameRate": "DOUBLE", "Matroska:VideoFrameRate": "DOUBLE",

    "XMP:Rating": "DOUBLE", "EXIF:Rating": "DOUBLE", "XMP:Label": "VARCHAR",
    "XMP:Subject": "JSON", "IPTC:Keywords": "JSON"
}') AS t
FROM docs;

-- ---- dates: every date tag of every file, one row each, parsed once ---------------------

CREATE VIEW date_tags AS
SELECT asset_id, seq, unnest([
    pi_date(1, 'capture', 'EXIF:DateTimeOriginal', t."EXIF:DateTimeOriginal",
            t."EXIF:SubSecTimeOriginal", t."EXIF:OffsetTimeOriginal",
            'EXIF:OffsetTimeOriginal', t."EXIF:OffsetTime", 'EXIF:OffsetTime', false),
    pi_date(2, 'capture', 'XMP:DateTimeOriginal', t."XMP:DateTimeOriginal",
            NULL, NULL, NULL, NULL, NULL, false),
    pi_date(3, 'capture', 'QuickTime:CreationDate', t."QuickTime:CreationDate",
            NULL, NULL, NULL, NULL, NULL, false),
    pi_date(4, 'capture', 'H264:DateTimeOriginal', t."H264:DateTimeOriginal",
            NULL, NULL, NULL, NULL, NULL, false),
    pi_date(5, 'capture', 'RIFF:DateTimeOriginal', t."RIFF:DateTimeOriginal",
            NULL, NULL, NULL, NULL, NULL, false),
    pi_date(6, 'capture', 'EXIF:CreateDate', t."EXIF:CreateDate",
            t."EXIF:SubSecTimeDigitized", t."EXIF:OffsetTimeDigitized",
            'EXIF:OffsetTimeDigitized', t."EXIF:OffsetTime", 'EXIF:OffsetTime', false),
    pi_date(7, 'capture', 'XMP:CreateDate', t."XMP:CreateDate",
            NULL, NULL, NULL, NULL, NULL, false),
    pi_date(8, 'capture', 'XMP:DateCreated', t."XMP:DateCreated",
            NULL, NULL, NULL, NULL, NULL, false),
    pi_date(9, 'capture', 'QuickTime:CreateDate', t."QuickTime:CreateDate",
            NULL, NULL, NULL, NULL, NULL, true),
    pi_date(10, 'gps', 'Composite:GPSDateTime', t."Composite:GPSDateTime",
            NULL, NULL, NULL, NULL, NULL, true)
], recursive := true)
FROM tags;

CREATE VIEW date_parts AS
SELECT *,
    regexp_extract(v, '^\s*(\d{4}:\d\d:\d\d[ T]\d\d:\d\d:\d\d)', 1) AS wall_text,
    coalesce(nullif(regexp_extract(v, '^\s*\S+[ T]\d\d:\d\d:\d\d\.(\d+)', 1), ''),
             regexp_extract(trim(subsec), '^(\d+)$', 1)) AS fraction,
    regexp_extract(v, '^\s*\S+[ T]\d\d:\d\d:\d\d(?:\.\d+)?\s*(Z|[+-]\d\d:?\d\d)\s*$', 1)
        AS inline_text,
    regexp_extract(trim(off_a), '^(Z|[+-]\d\d:?\d\d)$', 1) AS a_text,
    regexp_extract(trim(off_b), '^(Z|[+-]\d\d:?\d\d)$', 1) AS b_text
FROM date_tags
WHERE v IS NOT NULL;

CREATE VIEW date_values AS
SELECT asset_id, seq, n, kind, src, off_a_src, off_b_src, utc,
    -- year 0000 parses (as 1 BC) but is no date a camera means
    pi_in_calendar(try_strptime(replace(wall_text, 'T', ' '), '%Y:%m:%d %H:%M:%S')
        + to_microseconds(coalesce(TRY_CAST(rpad(left(fraction, 6), 6, '0') AS BIGINT), 0)))
        AS wall,
    pi_minutes(inline_text) AS inline_m,
    pi_minutes(a_text) AS a_m,
    pi_minutes(b_text) AS b_m
FROM date_parts;

-- per file: the first capture candidate that parses (by n), and the GPS clock
CREATE VIEW doc_dates AS
SELECT asset_id, seq,
    arg_min({
        'source': src,
        'local': wall,
        'off': coalesce(inline_m, a_m, b_m),
        'off_source': CASE WHEN inline_m IS NOT NULL THEN src
                           WHEN a_m IS NOT NULL THEN off_a_src
                           WHEN b_m IS NOT NULL THEN off_b_src END,
        'utc': utc
    }, n) FILTER (WHERE kind = 'capture' AND wall IS NOT NULL) AS cap,
    arg_min(wall, n) FILTER (WHERE kind = 'gps' AND wall IS NOT NULL) AS gps_utc
FROM date_values
GROUP BY asset_id, seq;

CREATE VIEW per_file AS
SELECT
    asset_id, sidecar, doc,
    -- which document wins a column: the file itself, then XMP sidecars, then the others
    -- (THM); for rating, label and keywords an XMP sidecar (the editor's) beats the file
    CASE WHEN NOT sidecar THEN 0 WHEN t."File:FileType" = 'XMP' THEN 1 ELSE 2 END * 1000000
        + seq AS rank,
    CASE WHEN sidecar AND t."File:FileType" = 'XMP' THEN 0 WHEN NOT sidecar THEN 1 ELSE 2 END
        * 1000000 + seq AS rank_xmp,
    pi_clean(t."ExifTool:Error") AS error,
    pi_clean(t."ExifTool:Warning") AS warning,
    t."ExifTool:ExifToolVersion" AS exiftool_version,
    pi_clean(t."File:FileType") AS file_type,
    pi_clean(t."File:MIMEType") AS mime_type,
    d.cap,
    d.gps_utc,
    CASE WHEN coalesce(t."EXIF:Make", t."QuickTime:Make", t."XMP:Make",
                       t."EXIF:Model", t."QuickTime:Model", t."XMP:Model") IS NOT NULL THEN {
        'make': pi_clean(coalesce(t."EXIF:Make", t."QuickTime:Make", t."XMP:Make")),
        'model': pi_clean(coalesce(t."EXIF:Model", t."QuickTime:Model", t."XMP:Model"))
    } END AS camera,
    pi_clean(coalesce(t."EXIF:SerialNumber", t."MakerNotes:SerialNumber",
                      t."MakerNotes:InternalSerialNumber", t."XMP:SerialNumber")) AS serial,
    TRY_CAST(round(coalesce(t."MakerNotes:ShutterCount", t."MakerNotes:ImageCount",
                            t."XMP:ImageNumber")) AS BIGINT) AS shutter_count,
    list_filter([pi_clean(t."EXIF:LensModel"), pi_clean(t."Composite:PhotoIngestLens"),
                 pi_clean(t."MakerNotes:LensModel"), pi_clean(t."XMP:LensModel"),
                 pi_clean(t."XMP:Lens"), pi_clean(t."MakerNotes:Lens")],
                lambda x: pi_lens_ok(x))[1] AS lens,
    pi_number(coalesce(t."EXIF:ISO", t."XMP:ISO", t."MakerNotes:ISO", t."Composite:ISO"))
        AS iso_raw,
    pi_positive(coalesce(t."EXIF:RecommendedExposureIndex", t."EXIF:ISOSpeed")) AS iso_rei,
    pi_positive(coalesce(t."EXIF:FNumber", t."Composite:Aperture", t."XMP:FNumber"))
        AS f_number,
    pi_positive(coalesce(t."EXIF:ExposureTime", t."Composite:ShutterSpeed",
                         t."XMP:ExposureTime")) AS exposure_time,
    pi_positive(coalesce(t."EXIF:FocalLength", t."XMP:FocalLength")) AS focal_length,
    pi_positive(coalesce(pi_positive(t."EXIF:FocalLengthIn35mmFormat"),
                         pi_positive(t."XMP:FocalLengthIn35mmFormat"),
                         t."Composite:FocalLength35efl")) AS focal_length_35mm,
    pi_whole(t."EXIF:Flash", 0, 65535) AS flash,  -- a 16-bit field of flags
    CASE WHEN t."EXIF:Flash" IS NOT NULL THEN pi_whole(t."EXIF:Flash", 0, 65535) % 2 = 1
         ELSE TRY_CAST(t."XMP:FlashFired" AS BOOLEAN) END AS flash_fired,
    coalesce(
        pi_size(TRY_CAST(regexp_extract(t."Composite:ImageSize", '^(\d+)[ x]\d+$', 1) AS DOUBLE),
                TRY_CAST(regexp_extract(t."Composite:ImageSize", '^\d+[ x](\d+)$', 1) AS DOUBLE)),
        pi_size(t."File:ImageWidth", t."File:ImageHeight"),
        pi_size(t."EXIF:ExifImageWidth", t."EXIF:ExifImageHeight"),
        pi_size(t."QuickTime:ImageWidth", t."QuickTime:ImageHeight"),
        pi_size(t."PNG:ImageWidth", t."PNG:ImageHeight"),
        pi_size(t."EXIF:ImageWidth", t."EXIF:ImageHeight")
    ) AS size,
    coalesce(
        pi_whole(coalesce(t."EXIF:Orientation", t."XMP:Orientation"), 1, 8),
        -- a video's rotation matrix, as the EXIF orientation that displays it the same way
        CASE TRY_CAST(t."Composite:Rotation" AS INTEGER)
            WHEN 0 THEN 1 WHEN 90 THEN 6 WHEN 180 THEN 3 WHEN 270 THEN 8 END
    ) AS orientation,
    CASE WHEN lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180
              AND NOT (lat = 0 AND lon = 0) THEN  -- 0,0: a receiver without a fix
        {'lat': lat, 'lon': lon, 'alt': CASE WHEN isfinite(alt) THEN alt END} END AS gps,
    pi_positive(coalesce(t."QuickTime:Duration", t."M2TS:Duration", t."RIFF:Duration",
                         t."Matroska:Duration")) AS duration,
    pi_codec(codec_id) AS video_codec,
    pi_positive(coalesce(t."QuickTime:VideoFrameRate", t."RIFF:VideoFrameRate",
                         t."RIFF:FrameRate", t."Matroska:VideoFrameRate")) AS frame_rate,
    pi_whole(coalesce(t."XMP:Rating", t."EXIF:Rating"), -1, 5) AS rating,
    pi_clean(t."XMP:Label") AS label,
    nullif(coalesce(nullif(pi_list(t."XMP:Subject"), []), pi_list(t."IPTC:Keywords")), [])
        AS keywords
FROM (
    SELECT *,
        coalesce(t."Composite:GPSLatitude", t."XMP:GPSLatitude") AS lat,
        coalesce(t."Composite:GPSLongitude", t."XMP:GPSLongitude") AS lon,
        coalesce(t."Composite:GPSAltitude",
                 CASE WHEN t."XMP:GPSAltitudeRef" = 1 THEN -t."XMP:GPSAltitude"
                      ELSE t."XMP:GPSAltitude" END) AS alt,
        coalesce(t."QuickTime:CompressorID", t."Matroska:VideoCodecID", t."RIFF:VideoCodec",
                 t."M2TS:VideoStreamType") AS codec_id
    FROM tags
) AS f
LEFT JOIN doc_dates AS d USING (asset_id, seq);

-- ---- per asset: the best document for each column ----------------------------------------
-- An unreadable sidecar contributes nothing but a warning.

CREATE VIEW per_asset AS
SELECT
    asset_id,
    arg_min(error, rank) FILTER (WHERE NOT sidecar) AS error,
    nullif(concat_ws('; ',
        string_agg(warning, '; ' ORDER BY rank) FILTER (WHERE NOT sidecar),
        string_agg('sidecar ' || coalesce(file_type, '?') || ': '
                   || coalesce(error, warning), '; ' ORDER BY rank)
            FILTER (WHERE sidecar AND coalesce(error, warning) IS NOT NULL),
        arg_min('content is ' || coalesce(file_type, 'unknown') || ' ('
                || coalesce(mime_type, '?') || '), not an image or video', rank)
            FILTER (WHERE NOT sidecar AND error IS NULL
                    AND NOT regexp_full_match(coalesce(mime_type, ''), '(image|video)/.*'))
    ), '') AS warnings,
    arg_min(exiftool_version, rank) AS exiftool_version,
    arg_min(file_type, rank) FILTER (WHERE NOT sidecar) AS file_type,
    arg_min(mime_type, rank) FILTER (WHERE NOT sidecar) AS mime_type,
    arg_min(cap, rank) FILTER (WHERE cap IS NOT NULL) AS cap,
    arg_min(CASE WHEN sidecar THEN 'sidecar ' ELSE '' END, rank)
        FILTER (WHERE cap IS NOT NULL) AS cap_from,
    arg_min(gps_utc, rank) FILTER (WHERE gps_utc IS NOT NULL) AS gps_utc,
    arg_min(camera, rank) FILTER (WHERE camera IS NOT NULL) AS camera,
    arg_min(serial, rank) FILTER (WHERE serial IS NOT NULL) AS serial,
    arg_min(shutter_count, rank) FILTER (WHERE shutter_count >= 0) AS shutter_count,
    arg_min(lens, rank) FILTER (WHERE lens IS NOT NULL) AS lens,
    arg_min(CASE WHEN iso_raw = 65535 AND iso_rei IS NOT NULL THEN iso_rei ELSE iso_raw END,
            rank) FILTER (WHERE iso_raw > 0) AS iso,
    arg_min(f_number, rank) FILTER (WHERE f_number IS NOT NULL) AS f_number,
    arg_min(exposure_time, rank) FILTER (WHERE exposure_time IS NOT NULL) AS exposure_time,
    arg_min(focal_length, rank) FILTER (WHERE focal_length IS NOT NULL) AS focal_length,
    arg_min(focal_length_35mm, rank)
        FILTER (WHERE focal_length_35mm IS NOT NULL) AS focal_length_35mm,
    arg_min(flash, rank) FILTER (WHERE flash IS NOT NULL) AS flash,
    arg_min(flash_fired, rank) FILTER (WHERE flash_fired IS NOT NULL) AS flash_fired,
    arg_min(size, rank) FILTER (WHERE size IS NOT NULL) AS size,
    arg_min(orientation, rank) FILTER (WHERE orientation IS NOT NULL) AS orientation,
    arg_min(gps, rank) FILTER (WHERE gps IS NOT NULL) AS gps,
    arg_min(duration, rank) FILTER (WHERE duration IS NOT NULL) AS duration,
    arg_min(video_codec, rank) FILTER (WHERE video_codec IS NOT NULL) AS video_codec,
    arg_min(frame_rate, rank) FILTER (WHERE frame_rate IS NOT NULL) AS frame_rate,
    arg_min(rating, rank_xmp) FILTER (WHERE rating IS NOT NULL) AS rating,
    arg_min(label, rank_xmp) FILTER (WHERE label IS NOT NULL) AS label,
    arg_min(keywords, rank_xmp) FILTER (WHERE keywords IS NOT NULL) AS keywords,
    arg_min(doc, rank) FILTER (WHERE NOT sidecar) AS raw,
    to_json(list(doc ORDER BY rank) FILTER (WHERE sidecar)) AS raw_sidecars
FROM per_file
GROUP BY asset_id;

-- ---- the record ------------------------------------------------------------------------

CREATE VIEW timed AS
SELECT *,
    -- no offset in the file, but a GPS clock (UTC): the offset is the difference, if it is
    -- a whole quarter hour to within two minutes (a stale fix gives no offset at all)
    CASE WHEN cap.off IS NULL AND NOT cap.utc AND gps_utc IS NOT NULL
              AND abs(gps_diff - round(gps_diff / 15) * 15) <= 2
              AND abs(gps_diff) <= 14 * 60
         THEN CAST(round(gps_diff / 15) * 15 AS INTEGER) END AS gps_offset
FROM (SELECT *, datediff('second', gps_utc, cap.local) / 60.0 AS gps_diff
      FROM per_asset, settings);

CREATE VIEW normalised AS
SELECT
    asset_id,
    error,
    warnings,
    exiftool_version,
    file_type,
    mime_type,
    pi_in_calendar(CASE
        WHEN coalesce(cap.off, gps_offset) IS NOT NULL THEN
            timezone('UTC', cap.local - to_minutes(CAST(coalesce(cap.off, gps_offset) AS BIGINT)))
        WHEN cap.utc THEN timezone('UTC', cap.local)
        WHEN zone IS NOT NULL THEN timezone(zone, cap.local)
    END) AS captured_at,
    pi_in_calendar(CASE
        WHEN cap.utc AND cap.off IS NULL THEN
            CASE WHEN zone IS NOT NULL THEN timezone(zone, timezone('UTC', cap.local)) END
        ELSE cap.local
    END) AS captured_local,
    pi_offset_label(coalesce(cap.off, gps_offset)) AS capture_offset,
    cap_from || cap.source AS capture_source,
    CASE
        WHEN cap IS NULL THEN NULL
        WHEN cap.off IS NOT NULL THEN cap.off_source
        WHEN gps_offset IS NOT NULL THEN 'GPS'
        WHEN cap.utc THEN 'UTC'
        WHEN zone IS NOT NULL THEN 'assumed'
    END AS capture_offset_source,
    coalesce(makes.name, camera.make) AS camera_make,
    -- no make repeated inside the model: 'Canon EOS R6' -> 'EOS R6', 'NIKON D850' -> 'D850'
    coalesce(pi_strip(camera.model, camera.make), pi_strip(camera.model, makes.name),
             pi_strip(camera.model, split_part(camera.make, ' ', 1)),
             camera.model) AS camera_model,
    serial AS camera_serial,
    shutter_count,
    lens,
    TRY_CAST(round(iso) AS INTEGER) AS iso,
    pi_positive(round(f_number, 2)) AS f_number,  -- 0.004 would round to 0
    exposure_time,
    pi_exposure(exposure_time) AS exposure,
    pi_positive(round(focal_length, 2)) AS focal_length,  -- 0.004 would round to 0
    pi_positive(round(focal_length_35mm, 2)) AS focal_length_35mm,  -- 0.004 would round to 0
    flash,
    flash_fired,
    -- width and height as displayed: orientations 5-8 turn the picture by 90 degrees
    TRY_CAST(CASE WHEN orientation BETWEEN 5 AND 8 THEN size.h ELSE size.w END AS INTEGER)
        AS width,
    TRY_CAST(CASE WHEN orientation BETWEEN 5 AND 8 THEN size.w ELSE size.h END AS INTEGER)
        AS height,
    orientation,
    gps.lat AS gps_latitude,
    gps.lon AS gps_longitude,
    gps.alt AS gps_altitude,
    timezone('UTC', gps_utc) AS gps_time,
    duration,
    video_codec,
    frame_rate,
    rating,
    label,
    pi_pg_array(pi_distinct(coalesce(keywords, []))) AS keywords,
    raw,
    CASE WHEN json_array_length(raw_sidecars) > 0 THEN raw_sidecars END AS raw_sidecars
FROM timed
LEFT JOIN makes ON makes.key = upper(camera.make);
