"""Read-only questions about the catalog, asked by `status` and `sessions`."""

from __future__ import annotations

from typing import Any

import psycopg

SESSION_COLUMNS = (
    "id, source, host, device, card_uuid, card_label, card_serial, started_at, ended_at,"
    " status, files_seen, files_copied, files_duplicate, files_skipped, files_failed,"
    " bytes_total, bytes_copied, error"
)


def sessions(conn: psycopg.Connection[Any], limit: int) -> list[dict[str, Any]]:
    return conn.execute(
        f"SELECT {SESSION_COLUMNS} FROM ingest_sessions ORDER BY id DESC LIMIT %s", (limit,)
    ).fetchall()


def session(conn: psycopg.Connection[Any], session_id: int) -> dict[str, Any] | None:
    return conn.execute(
        f"SELECT {SESSION_COLUMNS} FROM ingest_sessions WHERE id = %s", (session_id,)
    ).fetchone()


def session_files(conn: psycopg.Connection[Any], session_id: int,
                  outcome: str | None = None) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT relpath, outcome, reason, size, encode(sha1, 'hex') AS sha1, library_path"
        " FROM session_files WHERE session_id = %s AND (%s::text IS NULL OR outcome = %s)"
        " ORDER BY relpath",
        (session_id, outcome, outcome),
    ).fetchall()


def status(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Library totals, per media type, the running and the last sessions."""
    totals = conn.execute(
        "SELECT count(*) AS assets, coalesce(sum(size), 0)::bigint AS bytes FROM assets"
    ).fetchone()
    by_type = conn.execute(
        "SELECT media_type, count(*) AS assets, sum(size)::bigint AS bytes FROM assets"
        " GROUP BY media_type ORDER BY media_type"
    ).fetchall()
    sidecars = conn.execute("SELECT count(*) AS n FROM sidecars").fetchone()
    by_status = conn.execute(
        "SELECT status, count(*) AS n FROM ingest_sessions GROUP BY status ORDER BY status"
    ).fetchall()
    running = conn.execute(
        f"SELECT {SESSION_COLUMNS} FROM ingest_sessions WHERE status = 'running' ORDER BY id"
    ).fetchall()
    last = conn.execute(
        f"SELECT {SESSION_COLUMNS} FROM ingest_sessions WHERE status <> 'running'"
        " ORDER BY id DESC LIMIT 1"
    ).fetchone()
    failed = conn.execute(
        "SELECT f.session_id, f.relpath, f.reason FROM session_files f"
        " WHERE f.outcome = 'failed' AND f.session_id = (SELECT max(id) FROM ingest_sessions"
        "   WHERE status <> 'running') ORDER BY f.relpath LIMIT 20"
    ).fetchall()
    assert totals is not None and sidecars is not None
    return {
        "assets": totals["assets"], "bytes": totals["bytes"], "sidecars": sidecars["n"],
        "by_media_type": {r["media_type"]: {"assets": r["assets"], "bytes": r["bytes"]}
                          for r in by_type},
        "sessions": {r["status"]: r["n"] for r in by_status},
        "running": running, "last_session": last, "last_session_failures": failed,
    }
