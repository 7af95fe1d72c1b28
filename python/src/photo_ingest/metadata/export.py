"""`photo-ingest export`: the metadata table as Parquet or CSV, written by DuckDB.

PostgreSQL streams the records out with COPY (no row ever becomes a Python object) into a
temporary CSV next to the destination; DuckDB reads it with the declared types and writes
the file. The result appears by an atomic rename: complete, or not at all.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import duckdb

from photo_ingest import catalog

# (column, PostgreSQL expression, DuckDB type)
_COLUMNS: list[tuple[str, str, str]] = [
    ("asset_id", "a.id", "BIGINT"),
    ("library_path", "a.library_path", "VARCHAR"),
    ("sha1", "encode(a.sha1, 'hex')", "VARCHAR"),
    ("size", "a.size", "BIGINT"),
    ("media_type", "a.media_type", "VARCHAR"),
    ("original_name", "a.original_name", "VARCHAR"),
    *((c, f"m.{c}", t) for c, t in [
        ("status", "VARCHAR"), ("error", "VARCHAR"), ("warnings", "VARCHAR"),
        ("extracted_at", "TIMESTAMPTZ"), ("exiftool_version", "VARCHAR"),
        ("file_type", "VARCHAR"), ("mime_type", "VARCHAR"),
        ("captured_at", "TIMESTAMPTZ"), ("captured_local", "TIMESTAMP"),
        ("capture_offset", "VARCHAR"), ("capture_source", "VARCHAR"),
        ("capture_offset_source", "VARCHAR"), ("camera_make", "VARCHAR"),
        ("camera_model", "VARCHAR"), ("camera", "VARCHAR"), ("camera_serial", "VARCHAR"),
        ("shutter_count", "BIGINT"), ("lens", "VARCHAR"), ("iso", "INTEGER"),
        ("f_number", "DOUBLE"), ("exposure_time", "DOUBLE"), ("exposure", "VARCHAR"),
        ("focal_length", "DOUBLE"), ("focal_length_35mm", "DOUBLE"), ("flash", "INTEGER"),
        ("flash_fired", "BOOLEAN"), ("width", "INTEGER"), ("height", "INTEGER"),
        ("orientation", "SMALLINT"), ("gps_latitude", "DOUBLE"), ("gps_longitude", "DOUBLE"),
        ("gps_altitude", "DOUBLE"), ("gps_time", "TIMESTAMPTZ"), ("duration", "DOUBLE"),
        ("video_codec", "VARCHAR"), ("frame_rate", "DOUBLE"), ("rating", "SMALLINT"),
        ("label", "VARCHAR")]),
    ("keywords", "to_json(m.keywords)", "JSON"),
]
_RAW = [("raw", "m.raw", "JSON"), ("raw_sidecars", "m.raw_sidecars", "JSON")]


class ExportError(RuntimeError):
    """The file could not be written; the message says why."""


def export(conninfo: str, path: Path, fmt: str, *, raw: bool = False) -> int:
    """Write every metadata record to PATH as FMT ('parquet' or 'csv'); returns the count."""
    columns = _COLUMNS + (_RAW if raw else [])
    folder = path.parent if str(path.parent) else Path()
    try:
        with tempfile.TemporaryDirectory(prefix=".photo-ingest-export-", dir=folder) as tmp:
            dump = Path(tmp) / "records.csv"
            rows = _dump(conninfo, columns, dump)
            part = Path(tmp) / ("out." + fmt)
            _write(dump, part, columns, fmt)
            os.replace(part, path)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except duckdb.Error as exc:
        raise ExportError(f"cannot write {path}: {exc}") from exc
    return rows


def _dump(conninfo: str, columns: list[tuple[str, str, str]], dump: Path) -> int:
    select = ", ".join(f"{expr} AS {name}" for name, expr, _ in columns)
    with catalog.connect(conninfo) as conn, dump.open("wb") as out:
        conn.execute("SET TIME ZONE 'UTC'")  # timestamps leave as UTC, '+00'
        cur = conn.cursor()
        with cur.copy(f"COPY (SELECT {select} FROM assets a JOIN asset_metadata m"
                      " ON m.asset_id = a.id ORDER BY a.id)"
                      " TO STDOUT (FORMAT csv, HEADER true)") as copy:
            for chunk in copy:
                out.write(chunk)
        return max(cur.rowcount, 0)


def _write(dump: Path, part: Path, columns: list[tuple[str, str, str]], fmt: str) -> None:
    types = ", ".join(f"'{name}': '{kind}'" for name, _, kind in columns)
    # keywords: a real list in Parquet; a JSON array in CSV, where "[a, b]" would be ambiguous
    keywords = ("CAST(keywords AS VARCHAR[]) AS keywords" if fmt == "parquet"
                else "CAST(keywords AS VARCHAR) AS keywords")
    select = ", ".join(keywords if name == "keywords" else name for name, _, _ in columns)
    options = "FORMAT parquet, COMPRESSION zstd" if fmt == "parquet" else "FORMAT csv, HEADER"
    con = duckdb.connect(config={"threads": 2})
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"COPY (SELECT {select} FROM read_csv({_quote(str(dump))}, header = true,"
                    f" columns = {{{types}}}, auto_detect = false))"
                    f" TO {_quote(str(part))} ({options})")
    finally:
        con.close()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"

