"""exiftool's JSON -> typed metadata records, in DuckDB (the SQL is normalise.sql).

One Normaliser (an in-memory DuckDB) per loader thread. A batch is fed either from exiftool's
output (files just read) or from the catalog's stored `raw` JSON (records whose normaliser
is out of date: they are refreshed without reading the files again). The result is written
as CSV for PostgreSQL's COPY: DuckDB formats every value, Python touches none of them.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from photo_ingest.config import MACHINE_ZONE, Config
from photo_ingest.metadata.extractor import Reading

if TYPE_CHECKING:
    import duckdb

# duckdb is imported where it is used: its 0.2 s import then happens in the loader threads,
# while exiftool reads the first batch, instead of before exiftool even starts.

# Bump whenever normalise.sql (or the built-in makes below) can produce a different record:
# `extract` then refreshes every record from its stored exiftool output.
NORMALISER_VERSION = 2

# The columns of the `normalised` view, in order: what the load stage COPYs.
COLUMNS = (
    "asset_id", "error", "warnings", "exiftool_version", "file_type", "mime_type",
    "captured_at", "captured_local", "capture_offset", "capture_source",
    "capture_offset_source", "camera_make", "camera_model", "camera_serial", "shutter_count",
    "lens", "iso", "f_number", "exposure_time", "exposure", "focal_length",
    "focal_length_35mm", "flash", "flash_fired", "width", "height", "orientation",
    "gps_latitude", "gps_longitude", "gps_altitude", "gps_time", "duration", "video_codec",
    "frame_rate", "rating", "label", "keywords", "raw", "raw_sidecars",
)

# Makes as cameras write them -> as people say them. Matched on the upper-cased make;
# [metadata.makes] in the config adds to and overrides this.
BUILTIN_MAKES = {
    "CANON": "Canon", "NIKON CORPORATION": "Nikon", "NIKON": "Nikon", "SONY": "Sony",
    "FUJIFILM": "FUJIFILM", "FUJI PHOTO FILM CO., LTD.": "FUJIFILM",
    "OLYMPUS IMAGING CORP.": "Olympus", "OLYMPUS CORPORATION": "Olympus",
    "OLYMPUS OPTICAL CO.,LTD": "Olympus", "OM DIGITAL SOLUTIONS": "OM System",
    "PANASONIC": "Panasonic", "LEICA CAMERA AG": "Leica", "LEICA": "Leica",
    "PENTAX CORPORATION": "Pentax", "PENTAX": "Pentax", "ASAHI OPTICAL CO.,LTD": "Pentax",
    "RICOH IMAGING COMPANY, LTD.": "Ricoh", "RICOH": "Ricoh",
    "EASTMAN KODAK COMPANY": "Kodak", "KODAK": "Kodak", "SAMSUNG": "Samsung",
    "SAMSUNG TECHWIN": "Samsung", "HUAWEI": "Huawei", "XIAOMI": "Xiaomi",
    "MOTOROLA": "Motorola", "SIGMA": "Sigma", "HASSELBLAD": "Hasselblad",
    "KONICA MINOLTA": "Konica Minolta", "KONICA MINOLTA CAMERA, INC.": "Konica Minolta",
    "MINOLTA CO.,LTD": "Minolta", "SEIKO EPSON CORP.": "Epson", "CASIO COMPUTER CO.,LTD.":
    "Casio", "APPLE": "Apple", "GOOGLE": "Google", "GOPRO": "GoPro", "DJI": "DJI",
}

_SQL = resources.files(__package__).joinpath("normalise.sql")
_DOCS = "CREATE TEMP TABLE docs (asset_id BIGINT, seq INTEGER, sidecar BOOLEAN, doc JSON)"


@dataclass(frozen=True)
class Settings:
    """What besides the code decides a record: changing any of it refreshes every record."""

    zone: str | None                      # IANA zone assumed for times without an offset
    makes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Config) -> Settings:
        zone = cfg.metadata.zone_name(cfg.ingest)
        if zone == MACHINE_ZONE:  # the zone ICU finds for this machine (TZ, /etc/localtime)
            import duckdb

            zone = str(_fetch_one(duckdb.connect(), "SELECT current_setting('TimeZone')"))
        return cls(zone, {**BUILTIN_MAKES, **cfg.metadata.makes})

    def fingerprint(self) -> str:
        text = json.dumps({"zone": self.zone, "makes": self.makes}, sort_keys=True)
        return f"zone={self.zone or 'none'};" + hashlib.sha1(
            text.encode(), usedforsecurity=False).hexdigest()[:12]


@dataclass(frozen=True)
class Document:
    """One file of an asset handed to exiftool: the asset's own file, or a sidecar."""

    name: str          # the name exiftool was given (Reading.names key)
    asset_id: int
    sidecar: bool
    seq: int           # order among the asset's sidecars


class Database:
    """One in-memory DuckDB holding the normaliser's macros and views, made on first use
    and shared by every loader thread (each through its own connection)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None

    def connect(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._con is None:
                self._con = self._create()
            cursor = self._con.cursor()
        cursor.execute("SET TimeZone = 'UTC'")  # how TIMESTAMPTZ values are written out
        cursor.execute(_DOCS)
        return cursor

    def close(self) -> None:
        if self._con is not None:
            self._con.close()

    def _create(self) -> duckdb.DuckDBPyConnection:
        import duckdb

        con = duckdb.connect(config={"threads": 1})  # small batches; the cores are exiftool's
        con.execute(_DOCS)
        con.execute(_SQL.read_text(encoding="utf-8"))
        con.execute("INSERT INTO settings VALUES (?)", [self.settings.zone])
        con.execute("INSERT INTO makes SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[])",
                    [[k.upper() for k in self.settings.makes],
                     list(self.settings.makes.values())])
        _check_zone(con, self.settings.zone)
        return con


class Normaliser:
    """One loader thread's use of the DuckDB: feed a batch, write its records."""

    def __init__(self, source: Settings | Database) -> None:
        self._owns_db = not isinstance(source, Database)  # a database of its own, unshared
        self._db = source if isinstance(source, Database) else Database(source)
        self._con = self._db.connect()
        self._tmp = tempfile.TemporaryDirectory(prefix="photo-ingest-normalise-")
        self.csv_path = Path(self._tmp.name) / "batch.csv"

    def close(self) -> None:
        self._con.close()
        if self._owns_db:
            self._db.close()
        self._tmp.cleanup()

    def add_read(self, reading: Reading, documents: Sequence[Document]) -> None:
        """Files exiftool just read; objects are matched to assets by their SourceFile."""
        self._con.execute(
            "INSERT INTO docs SELECT m.asset_id, m.seq, m.sidecar, j.value"
            " FROM json_each(CAST(? AS JSON)) AS j"
            " JOIN (SELECT unnest(?::VARCHAR[]) AS name, unnest(?::BIGINT[]) AS asset_id,"
            "              unnest(?::BOOLEAN[]) AS sidecar, unnest(?::INTEGER[]) AS seq) AS m"
            " ON m.name = j.value ->> 'SourceFile'",
            [reading.json_text.strip() or "[]", [d.name for d in documents],
             [d.asset_id for d in documents], [d.sidecar for d in documents],
             [d.seq for d in documents]])

    def add_stored(self, rows: Sequence[tuple[int, str, str | None]]) -> None:
        """Stored exiftool output: (asset id, raw JSON text, raw_sidecars JSON text)."""
        if not rows:
            return
        # Spliced as text: each part is already JSON, parsing it in Python would be waste.
        text = "[" + ",".join(f'{{"a":{asset_id},"f":{raw},"s":{sidecars or "null"}}}'
                              for asset_id, raw, sidecars in rows) + "]"
        self._con.execute(
            "INSERT INTO docs"
            " SELECT CAST(e.value ->> 'a' AS BIGINT), 0, false, e.value -> 'f'"
            " FROM json_each(CAST($1 AS JSON)) AS e"
            " UNION ALL"
            " SELECT CAST(e.value ->> 'a' AS BIGINT), CAST(s.key AS INTEGER) + 1, true, s.value"
            " FROM json_each(CAST($1 AS JSON)) AS e, json_each(e.value -> 's') AS s"
            " WHERE json_type(s.value) = 'OBJECT'", [text])

    def write_csv(self) -> Path:
        """The batch's records as headerless CSV (PostgreSQL's COPY dialect); empties docs.

        Should a value the SQL did not foresee make DuckDB fail the batch, each asset is
        normalised on its own and the ones that still fail become records with an error
        (and their exiftool output, for a later normaliser): one file never sinks a batch."""
        import duckdb

        try:
            self._copy(self.csv_path, "normalised")
        except duckdb.Error:
            self._write_singly()
        finally:
            self._con.execute("DELETE FROM docs")
        return self.csv_path

    def _copy(self, target: Path, source: str) -> None:
        path = str(target).replace("'", "''")
        self._con.execute(f"COPY (SELECT {', '.join(COLUMNS)} FROM {source}"
                          f" ORDER BY asset_id) TO '{path}' (FORMAT csv, HEADER false)")

    def _write_singly(self) -> None:
        import duckdb

        self._con.execute("CREATE OR REPLACE TEMP TABLE batch AS SELECT * FROM docs")
        ids = [r[0] for r in self._con.execute(
            "SELECT DISTINCT asset_id FROM batch ORDER BY asset_id").fetchall()]
        one = self.csv_path.with_name("one.csv")
        with self.csv_path.open("wb") as out:
            for asset_id in ids:
                self._con.execute("DELETE FROM docs")
                self._con.execute("INSERT INTO docs SELECT * FROM batch WHERE asset_id = ?",
                                  [asset_id])
                try:
                    self._copy(one, "normalised")
                except duckdb.Error as exc:
                    reason = "the normaliser failed on this file's metadata: " + \
                        str(exc).splitlines()[0]
                    self._con.execute("CREATE OR REPLACE TEMP TABLE failed AS SELECT "
                                      + ", ".join(_FAILED.get(c, f"NULL AS {c}")
                                                  for c in COLUMNS)
                                      + " FROM docs WHERE NOT sidecar", [reason])
                    self._copy(one, "failed")
                out.write(one.read_bytes())
        self._con.execute("DROP TABLE batch")

    def records(self) -> list[dict[str, object]]:
        """The batch's records as Python values (for tests and debugging); empties docs."""
        cols = ", ".join(f"CAST({c} AS VARCHAR) AS {c}" if c in _TIMESTAMPS else c
                         for c in COLUMNS)
        cur = self._con.execute(f"SELECT {cols} FROM normalised ORDER BY asset_id")
        names = [d[0] for d in cur.description or ()]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        self._con.execute("DELETE FROM docs")
        return rows

_TIMESTAMPS = {"captured_at", "captured_local", "gps_time"}
# The record of a file the normaliser failed on: its error and its exiftool output.
_FAILED = {"asset_id": "asset_id", "error": "CAST(? AS VARCHAR) AS error",
           "keywords": "'{}' AS keywords", "raw": "doc AS raw"}


def _check_zone(con: duckdb.DuckDBPyConnection, zone: str | None) -> None:
    import duckdb

    if zone is None:
        return
    try:
        con.execute("SELECT timezone(?, TIMESTAMP '2000-01-01')", [zone])
    except duckdb.Error as exc:
        raise ValueError(f"time zone {zone!r} is unknown to DuckDB: {exc}") from exc


def _fetch_one(con: duckdb.DuckDBPyConnection, sql: str) -> object:
    try:
        row = con.execute(sql).fetchone()
        return row[0] if row else None
    finally:
        con.close()
