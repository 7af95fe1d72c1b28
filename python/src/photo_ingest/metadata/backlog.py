"""Which assets need metadata work, and claiming them so no two workers do the same one.

An asset needs work when it has no metadata record, or its record is out of date:

* **extract** (exiftool reads the file again): no record; the record was made by an older
  extractor (EXTRACTOR_VERSION); the asset's SHA-1 or its set of sidecars changed; or it is
  a failure this run retries (the file changed on disk, or `--retry-failed`).
* **normalise** (the stored exiftool output is normalised again, no file is read): the
  record was made by an older normaliser (NORMALISER_VERSION) or other normaliser settings.

Claims take `FOR NO KEY UPDATE ... SKIP LOCKED` row locks on the assets, held by the batch's
transaction until its records are committed: concurrent workers, in this process or any
other on any host, skip each other's assets instead of waiting, so they never deadlock. The
lock strength does not conflict with the KEY SHARE locks that ingest's foreign keys take.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from photo_ingest.metadata.extractor import EXTRACTOR_VERSION
from photo_ingest.metadata.normalise import NORMALISER_VERSION

EXTRACT, NORMALISE = "extract", "normalise"


@dataclass(frozen=True)
class Versions:
    """What a current record was made with."""

    settings: str
    extractor: int = EXTRACTOR_VERSION
    normaliser: int = NORMALISER_VERSION


@dataclass(frozen=True)
class Retries:
    """Failed records this run tries again, each identified by when it was recorded: a
    record rewritten since (by another worker) is not retried again."""

    ids: list[int] = field(default_factory=list)
    recorded: list[datetime] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Sidecar:
    id: int
    library_path: str


@dataclass(frozen=True)
class Claimed:
    asset_id: int
    library_path: str
    work: str                              # EXTRACT or NORMALISE
    sidecars: list[Sidecar] = field(default_factory=list)
    stored: tuple[str, str | None] | None = None   # NORMALISE: raw and raw_sidecars JSON


# $1-style placeholders are psycopg's %(name)s; the predicate is shared by the claim, the
# re-check, and the backlog count, so that all three agree on what "needs work" means.
_SIDECAR_IDS = "ARRAY(SELECT s.id FROM sidecars s WHERE s.asset_id = a.id ORDER BY s.id)"
_NEEDS_EXTRACT = f"""(m.asset_id IS NULL
    OR m.extractor_version <> %(extractor)s
    OR m.sha1 <> a.sha1
    OR m.sidecar_ids <> {_SIDECAR_IDS}
    OR (m.status = 'failed' AND (m.asset_id, m.extracted_at) IN
        (SELECT * FROM unnest(%(retry_ids)s::bigint[], %(retry_at)s::timestamptz[]))))"""
_NEEDS_NORMALISE = """(m.raw IS NOT NULL
    AND (m.normaliser_version <> %(normaliser)s OR m.normaliser_settings <> %(settings)s))"""
_WORK = f"CASE WHEN {_NEEDS_EXTRACT} THEN 'extract' ELSE 'normalise' END"
_FROM = "FROM assets a LEFT JOIN asset_metadata m ON m.asset_id = a.id"
_NEEDS = f"({_NEEDS_EXTRACT} OR {_NEEDS_NORMALISE})"


def _params(versions: Versions, retries: Retries, **more: Any) -> dict[str, Any]:
    return {"extractor": versions.extractor, "normaliser": versions.normaliser,
            "settings": versions.settings, "retry_ids": retries.ids,
            "retry_at": retries.recorded, **more}


def claim(conn: psycopg.Connection[Any], versions: Versions, retries: Retries, *,
          after: int, limit: int) -> tuple[int, list[Claimed]]:
    """Lock up to LIMIT assets with id > AFTER that need work, in the connection's open
    transaction. Returns the highest id locked (where the next claim starts; AFTER when
    none was) and the locked assets that still need work, with their sidecars or stored
    output."""
    ids = [r["id"] for r in conn.execute(
        f"SELECT a.id {_FROM} WHERE a.id > %(after)s AND {_NEEDS}"
        " ORDER BY a.id LIMIT %(limit)s FOR NO KEY UPDATE OF a SKIP LOCKED",
        _params(versions, retries, after=after, limit=limit)).fetchall()]
    if not ids:
        return after, []
    # Asked again in a new statement, hence a new snapshot: a row locked just after another
    # worker committed its record was chosen by the old snapshot, but is done already.
    rows = conn.execute(
        f"SELECT a.id, a.library_path, {_WORK} AS work {_FROM}"
        f" WHERE a.id = ANY(%(ids)s) AND {_NEEDS} ORDER BY a.id",
        _params(versions, retries, ids=ids)).fetchall()
    sidecars = _sidecars(conn, [r["id"] for r in rows if r["work"] == EXTRACT])
    stored = _stored(conn, [r["id"] for r in rows if r["work"] == NORMALISE])
    return max(ids), [Claimed(r["id"], r["library_path"], r["work"],
                              sidecars.get(r["id"], []), stored.get(r["id"])) for r in rows]


def _sidecars(conn: psycopg.Connection[Any], ids: list[int]) -> dict[int, list[Sidecar]]:
    out: dict[int, list[Sidecar]] = {}
    if ids:
        # newest first: a sidecar written later (an edit) wins over an older one
        for r in conn.execute("SELECT id, asset_id, library_path FROM sidecars"
                              " WHERE asset_id = ANY(%s) ORDER BY asset_id, id DESC", (ids,)):
            out.setdefault(r["asset_id"], []).append(Sidecar(r["id"], r["library_path"]))
    return out


def _stored(conn: psycopg.Connection[Any], ids: list[int]) -> dict[int, tuple[str, str | None]]:
    if not ids:
        return {}
    return {r["asset_id"]: (r["raw"], r["raw_sidecars"]) for r in conn.execute(
        "SELECT asset_id, raw::text AS raw, raw_sidecars::text AS raw_sidecars"
        " FROM asset_metadata WHERE asset_id = ANY(%s)", (ids,))}


def retries(conn: psycopg.Connection[Any], library: str, *, retry_all: bool) -> Retries:
    """The failures to try again: all of them with RETRY_ALL, else those whose file changed
    (size or mtime) since the failure was recorded."""
    rows = conn.execute(
        "SELECT m.asset_id, m.extracted_at, m.file_size, m.file_mtime, a.library_path"
        " FROM asset_metadata m JOIN assets a ON a.id = m.asset_id"
        " WHERE m.status = 'failed' ORDER BY m.asset_id").fetchall()
    chosen = [r for r in rows if retry_all or _changed(os.path.join(library, r["library_path"]),
                                                       r["file_size"], r["file_mtime"])]
    return Retries([r["asset_id"] for r in chosen], [r["extracted_at"] for r in chosen])


def _changed(path: str, size: int | None, mtime: datetime | None) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return size is not None  # gone since it was read (or still missing: no change)
    return size != st.st_size or mtime != file_mtime(st)


def file_mtime(st: os.stat_result) -> datetime:
    """An mtime as PostgreSQL keeps it (microseconds), so that it compares equal later."""
    micros = st.st_mtime_ns // 1000
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(
        microsecond=micros % 1_000_000)


def pending(conn: psycopg.Connection[Any], versions: Versions,
            retries: Retries = Retries()) -> dict[str, int]:
    """How many assets need each kind of work (the backlog)."""
    # Each asset's predicate once (its sidecar subquery is the cost: 100,000 assets, 0.4 s)
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE w = 'extract') AS extract,"
        " count(*) FILTER (WHERE w = 'normalise') AS normalise FROM ("
        f" SELECT CASE WHEN {_NEEDS_EXTRACT} THEN 'extract' WHEN {_NEEDS_NORMALISE}"
        f" THEN 'normalise' END AS w {_FROM}) AS work", _params(versions, retries)).fetchone()
    assert row is not None
    return {EXTRACT: row["extract"], NORMALISE: row["normalise"]}


def status(conn: psycopg.Connection[Any], versions: Versions,
           failures_limit: int = 20) -> dict[str, Any]:
    """Records per status, the backlog, the latest failures: for `photo-ingest status`."""
    counts = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'ok') AS ok,"
        " count(*) FILTER (WHERE status = 'failed') AS failed,"
        " max(normalised_at) AS last_written FROM asset_metadata").fetchone()
    failures = conn.execute(
        "SELECT m.asset_id, a.library_path, m.error, m.extracted_at FROM asset_metadata m"
        " JOIN assets a ON a.id = m.asset_id WHERE m.status = 'failed'"
        " ORDER BY m.extracted_at DESC, m.asset_id LIMIT %s", (failures_limit,)).fetchall()
    assert counts is not None
    todo = pending(conn, versions)
    return {"ok": counts["ok"], "failed": counts["failed"],
            "pending": todo[EXTRACT] + todo[NORMALISE], "to_extract": todo[EXTRACT],
            "to_refresh": todo[NORMALISE], "last_written": counts["last_written"],
            "failures": failures}
