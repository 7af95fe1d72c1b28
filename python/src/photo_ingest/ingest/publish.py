"""Make a verified temp file a library asset: dedup, name, link into place, catalog.

All of it happens in one transaction holding an advisory lock on the content's SHA-1, so
two ingesters holding the same bytes (two cards, two stations) store them once. The file
is linked into place and its folder fsynced *before* the row is written; a crash between
the two leaves a complete file whose next ingest adopts it rather than copying it again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from photo_ingest import faults
from photo_ingest.ingest import layout, sessions
from photo_ingest.ingest.capture import Capture
from photo_ingest.ingest.copy import Copied, discard, ensure_dir, hash_file, link_into_place
from photo_ingest.ingest.scan import Sidecar, SourceFile

NOTIFY_CHANNEL = "photo_ingest_assets"


@dataclass(frozen=True)
class Outcome:
    relpath: str
    outcome: str  # copied | duplicate | skipped | failed
    reason: str | None = None
    size: int | None = None
    sha1: bytes | None = None
    library_path: str | None = None
    asset_id: int | None = None


@dataclass(frozen=True)
class Known:
    asset_id: int
    library_path: str


def known_by_size_and_name(conn: psycopg.Connection[Any], files: Sequence[SourceFile],
                           ) -> tuple[set[tuple[int, str]], dict[bytes, Known]]:
    """Catalogued assets that may be these files (same size and original name).

    A card that is inserted again is mostly old photos: for those we only hash, and skip
    writing a temp copy that would be thrown away. Returns the (size, name) pairs seen
    and the matching assets by SHA-1.
    """
    if not files:
        return set(), {}
    rows = conn.execute(
        "SELECT a.id, a.sha1, a.size, a.original_name, a.library_path FROM assets a"
        " JOIN unnest(%s::bigint[], %s::text[]) AS f(size, name)"
        " ON a.size = f.size AND a.original_name = f.name",
        ([f.size for f in files], [layout.display(f.name) for f in files]),
    ).fetchall()
    pairs = {(r["size"], r["original_name"]) for r in rows}
    return pairs, {bytes(r["sha1"]): Known(r["id"], r["library_path"]) for r in rows}


class Publisher:
    def __init__(self, conn: psycopg.Connection[Any], library: bytes, session: int,
                 template: str, card_label: str | None, buffer_size: int) -> None:
        self.conn = conn
        self.library = library
        self.session = session
        self.template = template
        self.card_label = card_label
        self.buffer_size = buffer_size

    def publish(self, f: SourceFile, copied: Copied, capture: Capture, seq: int,
                sidecars: Sequence[tuple[Sidecar, Copied]]) -> list[Outcome]:
        """Publish a primary file and its sidecars; returns one outcome per source file."""
        rel = layout.display(f.relpath)
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(copied.sha1),))
            row = self.conn.execute(
                "SELECT id, library_path FROM assets WHERE sha1 = %s", (copied.sha1,)
            ).fetchone()
            if row is not None:
                discard(copied.temp)
                outcomes = [self._record(rel, "duplicate", copied, row["library_path"],
                                         asset_id=row["id"])]
                outcomes += self._sidecars(row["id"], row["library_path"], f, sidecars)
                return outcomes
            wanted = layout.render(self.template, layout.values(
                captured=capture.local, name=f.name, media_type=f.media_type,
                make=capture.make, model=capture.model, card_label=self.card_label,
                session=self.session, seq=seq))
            final = self._place(copied, wanted)
            asset_id = self._insert_asset(f, copied, capture, final)
            outcomes = [self._record(rel, "copied", copied, final, asset_id=asset_id)]
            outcomes += self._sidecars(asset_id, final, f, sidecars)
            self.conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(asset_id)))
            faults.point("publish.inserted")
        faults.point("publish.committed")
        return outcomes

    def _place(self, copied: Copied, wanted: str) -> str:
        """Link the temp file at WANTED or, if another file holds that name, a suffixed one."""
        candidates = [wanted] + [layout.with_suffix(wanted, copied.sha1.hex()[:n])
                                 for n in (8, 16, 40)]
        for relpath in candidates:
            if self.conn.execute("SELECT 1 FROM assets WHERE library_path = %s UNION ALL"
                                 " SELECT 1 FROM sidecars WHERE library_path = %s",
                                 (relpath, relpath)).fetchone():
                continue
            target = os.path.join(self.library, relpath.encode())
            ensure_dir(self.library, os.path.dirname(relpath).encode())
            try:
                link_into_place(copied.temp, target)
                return relpath
            except FileExistsError:
                # Ours already, from a run that died before its catalog row: adopt it.
                if hash_file(target, self.buffer_size)[0] == copied.sha1:
                    discard(copied.temp)
                    return relpath
        raise RuntimeError(f"no free library name for {wanted}")

    def _insert_asset(self, f: SourceFile, copied: Copied, capture: Capture,
                      final: str) -> int:
        row = self.conn.execute(
            "INSERT INTO assets (sha1, size, library_path, media_type, original_path,"
            " original_name, captured_at, captured_local, capture_offset, capture_source,"
            " camera_make, camera_model, session_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (copied.sha1, copied.size, final, f.media_type, layout.display(f.relpath),
             layout.display(f.name), capture.instant, capture.local, capture.offset,
             capture.source, capture.make, capture.model, self.session),
        ).fetchone()
        assert row is not None
        return int(row["id"])

    def _sidecars(self, asset_id: int, primary_path: str, f: SourceFile,
                  sidecars: Sequence[tuple[Sidecar, Copied]]) -> list[Outcome]:
        outcomes = []
        for sc, copied in sidecars:
            rel = layout.display(sc.relpath)
            row = self.conn.execute(
                "SELECT library_path FROM sidecars WHERE asset_id = %s AND sha1 = %s",
                (asset_id, copied.sha1),
            ).fetchone()
            if row is not None:
                discard(copied.temp)
                outcomes.append(self._record(rel, "duplicate", copied, row["library_path"]))
                continue
            wanted = layout.sidecar_path(primary_path, f.name, os.path.basename(sc.relpath))
            final = self._place(copied, wanted)
            sc_row = self.conn.execute(
                "INSERT INTO sidecars (asset_id, sha1, size, library_path, original_path,"
                " session_id) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (asset_id, copied.sha1, copied.size, final, rel, self.session),
            ).fetchone()
            assert sc_row is not None
            outcomes.append(self._record(rel, "copied", copied, final, sidecar_id=sc_row["id"]))
        return outcomes

    def _record(self, rel: str, outcome: str, copied: Copied, library_path: str,
                asset_id: int | None = None, sidecar_id: int | None = None) -> Outcome:
        sessions.record_outcome(self.conn, self.session, rel, outcome, size=copied.size,
                                sha1=copied.sha1, asset_id=asset_id, sidecar_id=sidecar_id,
                                library_path=library_path)
        return Outcome(rel, outcome, None, copied.size, copied.sha1, library_path, asset_id)


def _lock_key(sha1: bytes) -> int:
    return int.from_bytes(sha1[:8], "big", signed=True)
