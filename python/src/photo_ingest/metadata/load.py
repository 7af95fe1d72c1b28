"""Writing a batch's records into PostgreSQL: COPY into staging tables, then one upsert.

It runs inside the batch's transaction, the one that claimed the assets, so the records
appear together with the release of the claim, or not at all. Two staging tables (temporary,
emptied on commit) meet in the upsert:

* `metadata_stage`: the normalised records, COPYed from DuckDB's CSV as they are;
* `metadata_facts`: one row per claimed asset, from the worker: what was done to it, the
  file's size and mtime when read, its sidecars, or why it could not be read at all. An
  asset with facts but no record is a failure: exiftool printed nothing for it.

If PostgreSQL rejects the batch's records (a value no normaliser foresaw), each record is
loaded on its own and the rejected ones become failures, so one file never sinks a batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from photo_ingest.metadata.backlog import Versions
from photo_ingest.metadata.normalise import COLUMNS

log = logging.getLogger(__name__)

_TYPED = [c for c in COLUMNS if c not in ("asset_id", "error", "warnings")]
_FACTS = ("asset_id", "work", "error", "warnings", "file_size", "file_mtime", "sidecar_ids")

_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS metadata_stage ON COMMIT DELETE ROWS AS
    SELECT {', '.join(COLUMNS)} FROM asset_metadata WITH NO DATA;
CREATE TEMP TABLE IF NOT EXISTS metadata_facts (
    asset_id bigint PRIMARY KEY, work text NOT NULL, error text, warnings text,
    file_size bigint, file_mtime timestamptz, sidecar_ids bigint[] NOT NULL
) ON COMMIT DELETE ROWS"""

_WRITTEN = ["status", "error", "warnings", "extractor_version", "normaliser_version",
            "normaliser_settings", "extracted_at", "normalised_at", "file_size", "file_mtime",
            "sha1", "sidecar_ids", *_TYPED]

_UPSERT = f"""
INSERT INTO asset_metadata AS m (asset_id, {', '.join(_WRITTEN)})
SELECT f.asset_id,
    CASE WHEN s.asset_id IS NOT NULL AND f.error IS NULL AND s.error IS NULL
         THEN 'ok' ELSE 'failed' END,
    CASE WHEN s.asset_id IS NULL THEN coalesce(f.error, 'exiftool printed nothing for it')
         ELSE coalesce(f.error, s.error) END,
    nullif(concat_ws('; ', s.warnings, f.warnings), ''),
    %(extractor)s, %(normaliser)s, %(settings)s,
    -- a refresh from the stored output keeps what describes the reading of the file
    CASE WHEN f.work = 'normalise' THEN old.extracted_at ELSE now() END,
    now(),
    CASE WHEN f.work = 'normalise' THEN old.file_size ELSE f.file_size END,
    CASE WHEN f.work = 'normalise' THEN old.file_mtime ELSE f.file_mtime END,
    CASE WHEN f.work = 'normalise' THEN old.sha1 ELSE a.sha1 END,
    CASE WHEN f.work = 'normalise' THEN old.sidecar_ids ELSE f.sidecar_ids END,
    {', '.join("coalesce(s.keywords, '{}')" if c == "keywords" else f"s.{c}"
               for c in _TYPED)}
FROM metadata_facts f
JOIN assets a ON a.id = f.asset_id
LEFT JOIN metadata_stage s ON s.asset_id = f.asset_id
LEFT JOIN asset_metadata old ON old.asset_id = f.asset_id
ON CONFLICT (asset_id) DO UPDATE SET ({', '.join(_WRITTEN)})
    = ROW({', '.join(f'EXCLUDED.{c}' for c in _WRITTEN)})
RETURNING m.asset_id, m.status, m.error"""


@dataclass(frozen=True)
class Fact:
    """What the worker knows about one claimed asset."""

    asset_id: int
    work: str
    error: str | None = None        # could not be read at all (missing, exiftool crashed)
    warnings: str | None = None
    file_size: int | None = None
    file_mtime: datetime | None = None
    sidecar_ids: Sequence[int] = ()


@dataclass(frozen=True)
class Written:
    asset_id: int
    status: str
    error: str | None


def load(conn: psycopg.Connection[Any], csv: Path, facts: Sequence[Fact],
         versions: Versions) -> list[Written]:
    """Stage and upsert one batch in CONN's open transaction (the caller commits)."""
    conn.execute(_STAGE)
    _copy_facts(conn, facts)
    data = csv.read_bytes()
    try:
        with conn.transaction():  # a savepoint: a rejected batch leaves the facts staged
            _copy_records(conn, data)
    except psycopg.DataError as exc:
        log.warning("the catalog rejected a batch of records (%s); loading them one by one",
                    str(exc).splitlines()[0])
        _copy_singly(conn, data, facts)
    rows = conn.execute(_UPSERT, {"extractor": versions.extractor,
                                  "normaliser": versions.normaliser,
                                  "settings": versions.settings}).fetchall()
    return sorted((Written(r["asset_id"], r["status"], r["error"]) for r in rows),
                  key=lambda w: w.asset_id)


def _copy_facts(conn: psycopg.Connection[Any], facts: Sequence[Fact]) -> None:
    with conn.cursor().copy(f"COPY metadata_facts ({', '.join(_FACTS)}) FROM STDIN") as copy:
        for f in facts:
            copy.write_row((f.asset_id, f.work, f.error, f.warnings, f.file_size,
                            f.file_mtime, list(f.sidecar_ids)))


def _copy_records(conn: psycopg.Connection[Any], data: bytes) -> None:
    with conn.cursor().copy(
            f"COPY metadata_stage ({', '.join(COLUMNS)}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(data)


def _copy_singly(conn: psycopg.Connection[Any], data: bytes, facts: Sequence[Fact]) -> None:
    """Each CSV record on its own; a rejected one turns into its asset's failure."""
    for asset_id, record in _records(data):
        try:
            with conn.transaction():
                _copy_records(conn, record)
        except psycopg.DataError as exc:
            reason = "the catalog rejected the record: " + str(exc).splitlines()[0]
            conn.execute("UPDATE metadata_facts SET error = %s WHERE asset_id = %s",
                         (reason, asset_id))


def _records(data: bytes) -> list[tuple[int, bytes]]:
    """Split headerless CSV into records: a newline ends one only outside quotes (a quote
    inside a field is doubled, so an even count of quotes so far means outside)."""
    out: list[tuple[int, bytes]] = []
    start = quotes = 0
    for i, byte in enumerate(data):
        if byte == 0x22:
            quotes += 1
        elif byte == 0x0A and quotes % 2 == 0:
            record = data[start:i + 1]
            out.append((int(record.split(b",", 1)[0]), record))
            start, quotes = i + 1, 0
    return out
