"""The mirror stage's SQL: destinations, the per-file queue, claims and results.

A copy is claimed with `FOR UPDATE SKIP LOCKED` inside a transaction that stays open
while that one file is copied, and its result is written in the same transaction. Two
processes (the timer's run, a card session, a second station) therefore never copy the
same file at once, and a process that dies mid-copy releases its claim with its
connection: the row is simply pending again, with no lease to expire.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from photo_ingest.mirror.config import MirrorConfig

Conn = psycopg.Connection[dict[str, Any]]

# Transient destination errors on one file before it is failed (a bad sector, say).
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Job:
    id: int
    asset_id: int
    sidecar_id: int | None
    library_path: str
    sha1: bytes
    size: int
    attempts: int


def register(conn: Conn, mirror: MirrorConfig) -> None:
    conn.execute(
        "INSERT INTO mirror_destinations (name, path, required) VALUES (%s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET path = EXCLUDED.path, required = EXCLUDED.required",
        (mirror.name, str(mirror.path), mirror.required))


def seen(conn: Conn, name: str, available: bool, error: str | None) -> None:
    """Record the outcome of an availability check (and when it first went away)."""
    conn.execute(
        "UPDATE mirror_destinations SET checked_at = now(), available = %(a)s,"
        " last_error = %(e)s,"
        " unavailable_since = CASE WHEN %(a)s THEN NULL"
        "   ELSE coalesce(unavailable_since, now()) END WHERE name = %(n)s",
        {"a": available, "e": error, "n": name})


def enqueue(conn: Conn, name: str) -> int:
    """A pending row for every library file (asset or sidecar) without one here."""
    row = conn.execute(
        """
        WITH a AS (
            INSERT INTO mirror_copies (destination, asset_id)
            SELECT %(d)s, a.id FROM assets a WHERE NOT EXISTS (
                SELECT 1 FROM mirror_copies m
                WHERE m.destination = %(d)s AND m.asset_id = a.id AND m.sidecar_id IS NULL)
            ON CONFLICT (destination, asset_id) WHERE sidecar_id IS NULL DO NOTHING
            RETURNING 1
        ), s AS (
            INSERT INTO mirror_copies (destination, asset_id, sidecar_id)
            SELECT %(d)s, s.asset_id, s.id FROM sidecars s WHERE NOT EXISTS (
                SELECT 1 FROM mirror_copies m
                WHERE m.destination = %(d)s AND m.sidecar_id = s.id)
            ON CONFLICT (destination, sidecar_id) WHERE sidecar_id IS NOT NULL DO NOTHING
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM a) + (SELECT count(*) FROM s) AS n
        """, {"d": name}).fetchone()
    return int(row["n"]) if row else 0


def claim(conn: Conn, name: str, exclude: Sequence[int], assets: Sequence[int] | None,
          *, wait: bool = False) -> Job | None:
    """Lock one pending row (call inside a transaction). Rows other processes hold are
    skipped, or with WAIT waited for (and then skipped if they were done meanwhile)."""
    only = "AND m.asset_id = ANY(%(assets)s)" if assets is not None else ""
    row = conn.execute(
        f"""
        SELECT m.id, m.asset_id, m.sidecar_id, m.attempts,
               coalesce(s.library_path, a.library_path) AS library_path,
               coalesce(s.sha1, a.sha1) AS sha1, coalesce(s.size, a.size) AS size
        FROM mirror_copies m JOIN assets a ON a.id = m.asset_id
             LEFT JOIN sidecars s ON s.id = m.sidecar_id
        WHERE m.destination = %(d)s AND m.state = 'pending' AND m.id <> ALL(%(x)s) {only}
        ORDER BY m.asset_id, m.sidecar_id NULLS FIRST LIMIT 1
        FOR UPDATE OF m {'' if wait else 'SKIP LOCKED'}
        """, {"d": name, "x": list(exclude), "assets": list(assets or ())}).fetchone()
    if row is None:
        return None
    return Job(row["id"], row["asset_id"], row["sidecar_id"], row["library_path"],
               bytes(row["sha1"]), int(row["size"]), int(row["attempts"]))


def done(conn: Conn, job: Job, result: str) -> None:
    conn.execute(
        "UPDATE mirror_copies SET state = 'copied', result = %s, sha1 = %s, size = %s,"
        " copied_at = now(), error = NULL, updated_at = now() WHERE id = %s",
        (result, job.sha1, job.size, job.id))


def failed(conn: Conn, job: Job, error: str) -> None:
    conn.execute("UPDATE mirror_copies SET state = 'failed', error = %s,"
                 " attempts = attempts + 1, updated_at = now() WHERE id = %s",
                 (error[:2000], job.id))


def retry_later(conn: Conn, job: Job, error: str, *, count: bool) -> None:
    conn.execute("UPDATE mirror_copies SET error = %s, attempts = attempts + %s,"
                 " updated_at = now() WHERE id = %s", (error[:2000], int(count), job.id))


def retry_failed(conn: Conn, name: str) -> int:
    row = conn.execute(
        "WITH r AS (UPDATE mirror_copies SET state = 'pending', attempts = 0, error = NULL,"
        " updated_at = now() WHERE destination = %s AND state = 'failed' RETURNING 1)"
        " SELECT count(*) AS n FROM r", (name,)).fetchone()
    return int(row["n"]) if row else 0


def copied_now(conn: Conn, name: str) -> None:
    conn.execute("UPDATE mirror_destinations SET last_copied_at = now() WHERE name = %s",
                 (name,))


def session_assets(conn: Conn, session: int) -> list[int]:
    """The assets a session saw: the ones it copied and the duplicates it recognised."""
    return [r["asset_id"] for r in conn.execute(
        "SELECT DISTINCT asset_id FROM session_files WHERE session_id = %s"
        " AND asset_id IS NOT NULL ORDER BY asset_id", (session,))]


def missing(conn: Conn, name: str, assets: Sequence[int]) -> dict[str, int]:
    """Files of ASSETS (and their sidecars) that NAME does not hold, by state."""
    rows = conn.execute(
        """
        WITH files AS (
            SELECT id AS asset_id, NULL::bigint AS sidecar_id FROM assets WHERE id = ANY(%(a)s)
            UNION ALL
            SELECT asset_id, id FROM sidecars WHERE asset_id = ANY(%(a)s)
        )
        SELECT coalesce(m.state, 'pending') AS state, count(*) AS n FROM files f
        LEFT JOIN mirror_copies m ON m.destination = %(d)s AND m.asset_id = f.asset_id
             AND m.sidecar_id IS NOT DISTINCT FROM f.sidecar_id
        WHERE m.state IS DISTINCT FROM 'copied' GROUP BY 1
        """, {"a": list(assets), "d": name}).fetchall()
    return {r["state"]: int(r["n"]) for r in rows}


def totals(conn: Conn) -> dict[str, dict[str, Any]]:
    """Per destination ever used: files by state (pending includes files never queued)."""
    rows = conn.execute(
        """
        WITH lib AS (
            SELECT (SELECT count(*) FROM assets) + (SELECT count(*) FROM sidecars) AS files,
                   (SELECT coalesce(sum(size), 0) FROM assets)
                   + (SELECT coalesce(sum(size), 0) FROM sidecars) AS bytes
        )
        SELECT d.name, d.path, d.required, d.available, d.checked_at, d.unavailable_since,
               d.last_error, d.last_copied_at,
               count(m.id) FILTER (WHERE m.state = 'copied') AS copied,
               count(m.id) FILTER (WHERE m.state = 'failed') AS failed,
               coalesce(sum(m.size) FILTER (WHERE m.state = 'copied'), 0)::bigint AS bytes,
               lib.files, lib.bytes AS library_bytes
        FROM mirror_destinations d CROSS JOIN lib
        LEFT JOIN mirror_copies m ON m.destination = d.name
        GROUP BY d.name, lib.files, lib.bytes ORDER BY d.name
        """).fetchall()
    out = {}
    for r in rows:
        pending = int(r["files"]) - int(r["copied"]) - int(r["failed"])
        out[r["name"]] = {**{k: r[k] for k in (
            "path", "required", "available", "checked_at", "unavailable_since", "last_error",
            "last_copied_at")}, "copied": int(r["copied"]), "failed": int(r["failed"]),
            "pending": max(pending, 0), "bytes": int(r["bytes"])}
    return out


def failures(conn: Conn, name: str, limit: int = 20) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT coalesce(s.library_path, a.library_path) AS library_path, m.state, m.error,"
        " m.attempts, m.updated_at FROM mirror_copies m JOIN assets a ON a.id = m.asset_id"
        " LEFT JOIN sidecars s ON s.id = m.sidecar_id WHERE m.destination = %s"
        " AND (m.state = 'failed' OR (m.state = 'pending' AND m.error IS NOT NULL))"
        " ORDER BY (m.state = 'pending'), m.updated_at DESC LIMIT %s", (name, limit)).fetchall()
