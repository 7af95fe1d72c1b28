"""Ingest sessions in the catalog: one row per run of `ingest`, with its counts and fate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from photo_ingest.ingest.copy import HOST
from photo_ingest.ingest.process import Identity

# A session on another host that has not beaten its heart for this long is presumed dead.
STALE_AFTER = "15 minutes"


@dataclass
class Card:
    """What identifies the source medium, as far as it is known."""

    device: str | None = None
    uuid: str | None = None
    label: str | None = None
    serial: str | None = None


@dataclass
class Counts:
    seen: int = 0
    copied: int = 0
    duplicate: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_total: int = 0
    bytes_copied: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


def start(conn: psycopg.Connection[Any], source: str, card: Card) -> int:
    me = Identity.mine()
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO ingest_sessions (source, host, pid, boot_id, pid_started, device,"
            " card_uuid, card_label, card_serial) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING id",
            (source, HOST, me.pid, me.boot, me.started, card.device, card.uuid, card.label,
             card.serial),
        ).fetchone()
    assert row is not None
    return int(row["id"])


def mark_interrupted(conn: psycopg.Connection[Any]) -> list[int]:
    """Sessions whose process is gone: dead ones on this host (a PID now used by another
    process, or recorded before a reboot, counts as dead), silent ones elsewhere."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, host, pid, boot_id, pid_started FROM ingest_sessions"
            " WHERE status = 'running' FOR UPDATE SKIP LOCKED"
        ).fetchall()
        dead = [r["id"] for r in rows if r["host"] == HOST
                and not Identity(r["pid"], r["boot_id"], r["pid_started"]).alive()]
        conn.execute(
            "UPDATE ingest_sessions SET status = 'interrupted', ended_at = heartbeat_at,"
            " error = coalesce(error, 'the ingest process ended without finishing"
            " (killed, crashed or the machine lost power)')"
            " WHERE status = 'running' AND (id = ANY(%s) OR (host <> %s"
            "   AND heartbeat_at < now() - %s::interval))",
            (dead, HOST, STALE_AFTER),
        )
    return dead


def heartbeat(conn: psycopg.Connection[Any], session: int, counts: Counts) -> None:
    with conn.transaction():
        conn.execute(
            "UPDATE ingest_sessions SET heartbeat_at = now(), files_seen = %s,"
            " files_copied = %s, files_duplicate = %s, files_skipped = %s, files_failed = %s,"
            " bytes_total = %s, bytes_copied = %s WHERE id = %s",
            (counts.seen, counts.copied, counts.duplicate, counts.skipped, counts.failed,
             counts.bytes_total, counts.bytes_copied, session),
        )


def finish(conn: psycopg.Connection[Any], session: int, counts: Counts, status: str,
           error: str | None) -> None:
    heartbeat(conn, session, counts)
    with conn.transaction():
        conn.execute(
            "UPDATE ingest_sessions SET status = %s, ended_at = now(), error = %s WHERE id = %s",
            (status, error, session),
        )


def record_outcome(conn: psycopg.Connection[Any], session: int, relpath: str, outcome: str,
                   *, reason: str | None = None, size: int | None = None,
                   sha1: bytes | None = None, asset_id: int | None = None,
                   sidecar_id: int | None = None, library_path: str | None = None) -> None:
    """One file's fate in this session (called inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO session_files (session_id, relpath, size, sha1, outcome, reason, asset_id,"
        " sidecar_id, library_path) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (session_id, relpath) DO UPDATE SET outcome = EXCLUDED.outcome,"
        " reason = EXCLUDED.reason, sha1 = EXCLUDED.sha1, asset_id = EXCLUDED.asset_id,"
        " sidecar_id = EXCLUDED.sidecar_id, library_path = EXCLUDED.library_path",
        (session, relpath, size, sha1, outcome, reason, asset_id, sidecar_id, library_path),
    )


# Failure reasons are free text for people; metrics need a small, stable set of labels.
_FAILURE_CLASSES = (
    ("not attempted", "not_attempted"),
    ("filesystem is full", "disk_full"),
    ("verify failed", "verify_mismatch"),
    ("size on storage", "verify_mismatch"),
    ("changed size", "source_changed"),
    ("modified while being read", "source_changed"),
    ("no usable capture time", "no_capture_time"),
    ("source", "read_error"),
)


def failure_class(reason: str | None) -> str:
    text = (reason or "").lower()
    return next((label for needle, label in _FAILURE_CLASSES if needle in text), "other")
