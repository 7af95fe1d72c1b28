"""The watcher's SQL: its memory of source files (watch_files), and the two questions the
after-step asks the catalog — is this content in the library, and has Immich got it?"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import psycopg

from photo_ingest.ingest.copy import HOST

Conn = psycopg.Connection[Any]

# States whose file has been dealt with for good while it keeps its size and mtime.
SETTLED = ("skipped", "kept")
# States with after-step work left (Immich to wait for, a move cut short).
TODO = ("ingested", "archiving", "deleting")


@dataclass(frozen=True)
class Row:
    path: bytes
    watch_name: str
    size: int
    mtime_ns: int
    sha1: bytes | None
    state: str
    aside: bytes | None
    target: bytes | None


def _row(r: dict[str, Any]) -> Row:
    def b(v: Any) -> bytes | None:
        return None if v is None else bytes(v)

    return Row(bytes(r["path"]), r["watch_name"], r["size"], r["mtime_ns"], b(r["sha1"]),
               r["state"], b(r["aside"]), b(r["target"]))


_COLUMNS = "path, watch_name, size, mtime_ns, sha1, state, aside, target"


def get(conn: Conn, path: bytes) -> Row | None:
    r = conn.execute(f"SELECT {_COLUMNS} FROM watch_files WHERE host = %s AND path = %s",
                     (HOST, path)).fetchone()
    return _row(r) if r else None


def todo(conn: Conn, watch_name: str) -> list[Row]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM watch_files WHERE host = %s AND watch_name = %s"
        " AND state = ANY(%s) ORDER BY path", (HOST, watch_name, list(TODO))).fetchall()
    return [_row(r) for r in rows]


def remember(conn: Conn, path: bytes, watch_name: str, st: os.stat_result, state: str, *,
             sha1: bytes | None = None, session_id: int | None = None,
             reason: str | None = None) -> None:
    """What became of PATH (with the size and mtime it had when it was taken)."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO watch_files (host, path, watch_name, size, mtime_ns, sha1, session_id,"
            " state, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (host, path) DO UPDATE SET watch_name = EXCLUDED.watch_name,"
            " size = EXCLUDED.size, mtime_ns = EXCLUDED.mtime_ns, sha1 = EXCLUDED.sha1,"
            " session_id = EXCLUDED.session_id, state = EXCLUDED.state,"
            " reason = EXCLUDED.reason, aside = NULL, target = NULL, updated_at = now()",
            (HOST, path, watch_name, st.st_size, st.st_mtime_ns, sha1, session_id, state,
             reason))


def moving(conn: Conn, path: bytes, state: str, aside: bytes, target: bytes | None) -> None:
    """Intent, written before the rename: a crash after it is finished on restart."""
    with conn.transaction():
        conn.execute("UPDATE watch_files SET state = %s, aside = %s, target = %s,"
                     " updated_at = now() WHERE host = %s AND path = %s",
                     (state, aside, target, HOST, path))


def finished(conn: Conn, path: bytes, state: str, target: bytes | None = None) -> None:
    with conn.transaction():
        conn.execute("UPDATE watch_files SET state = %s, aside = NULL,"
                     " target = coalesce(%s, target), updated_at = now()"
                     " WHERE host = %s AND path = %s", (state, target, HOST, path))


def forget(conn: Conn, path: bytes) -> None:
    with conn.transaction():
        conn.execute("DELETE FROM watch_files WHERE host = %s AND path = %s", (HOST, path))


def library_copies(conn: Conn, sha1: bytes) -> list[tuple[str, int]]:
    """(library path, size) of every catalogued file with this content."""
    rows = conn.execute(
        "SELECT library_path, size FROM assets WHERE sha1 = %s UNION ALL"
        " SELECT library_path, size FROM sidecars WHERE sha1 = %s", (sha1, sha1)).fetchall()
    return [(r["library_path"], r["size"]) for r in rows]


def in_immich(conn: Conn, sha1: bytes) -> bool:
    """Immich acknowledged the asset (a sidecar: its asset): uploaded, or a duplicate."""
    row = conn.execute(
        "SELECT 1 FROM immich_assets i WHERE i.state = 'done'"
        " AND i.result IN ('uploaded', 'duplicate') AND i.asset_id IN ("
        "   SELECT id FROM assets WHERE sha1 = %s UNION"
        "   SELECT asset_id FROM sidecars WHERE sha1 = %s) LIMIT 1", (sha1, sha1)).fetchone()
    return row is not None


def counts(conn: Conn) -> dict[tuple[str, str], int]:
    """(watch name, state) -> files, for this host."""
    rows = conn.execute("SELECT watch_name, state, count(*) AS n FROM watch_files"
                        " WHERE host = %s GROUP BY 1, 2", (HOST,)).fetchall()
    return {(r["watch_name"], r["state"]): r["n"] for r in rows}
