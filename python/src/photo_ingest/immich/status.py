"""The Immich part of `photo-ingest status`: backlog, outcomes, failures with their
reasons, and the last success — straight from the catalog, without asking Immich."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from photo_ingest.immich.config import ImmichConfig

STATES = ("uploaded", "duplicate", "scanned", "trashed", "skipped", "failed")


def status(conn: psycopg.Connection[Any], icfg: ImmichConfig | None = None,
           failures: int = 20) -> dict[str, Any]:
    """A JSON-able summary. `targets` has one entry per Immich account (and mode) ever
    synced to, the most recently used first; `backlog` counts catalogued assets that are
    not yet in the current one (all of them when none was used yet)."""
    configured = icfg is not None and icfg.enabled
    out: dict[str, Any] = {
        "configured": configured,
        "url": icfg.url if configured and icfg else None,
        "mode": icfg.mode if configured and icfg else None,
        "targets": [],
    }
    total_row = conn.execute("SELECT count(*) AS n FROM assets").fetchone()
    total = int(total_row["n"]) if total_row else 0
    targets = conn.execute(
        "SELECT id, user_id::text AS user_id, mode, url, user_email,"
        " library_id::text AS library_id, seen_at, last_success_at, last_scan_at,"
        " last_error, last_error_at FROM immich_targets ORDER BY seen_at DESC").fetchall()
    mode = out["mode"]
    for t in targets:
        counts = conn.execute(
            "SELECT count(*) AS enqueued,"
            " count(*) FILTER (WHERE state = 'done' AND result = 'uploaded') AS uploaded,"
            " count(*) FILTER (WHERE state = 'done' AND result = 'duplicate') AS duplicate,"
            " count(*) FILTER (WHERE state = 'done' AND result = 'scanned') AS scanned,"
            " count(*) FILTER (WHERE state = 'trashed') AS trashed,"
            " count(*) FILTER (WHERE state = 'skipped') AS skipped,"
            " count(*) FILTER (WHERE state = 'failed') AS failed,"
            " count(*) FILTER (WHERE state = 'pending') AS pending,"
            " count(*) FILTER (WHERE state = 'pending' AND attempts > 0) AS retrying,"
            " count(*) FILTER (WHERE state = 'pending' AND immich_id IS NOT NULL)"
            "   AS waiting_for_album,"
            " count(*) FILTER (WHERE state = 'pending' AND lease_expires_at > now())"
            "   AS in_progress,"
            " coalesce(sum(bytes_sent), 0)::bigint AS bytes_sent"
            " FROM immich_assets WHERE target_id = %s", (t["id"],)).fetchone()
        assert counts is not None
        problems = conn.execute(
            "SELECT a.library_path, i.state, i.reason, i.updated_at, i.immich_id::text"
            " AS immich_id FROM immich_assets i JOIN assets a ON a.id = i.asset_id"
            " WHERE i.target_id = %s AND i.state IN ('failed', 'trashed', 'skipped')"
            " ORDER BY (i.state = 'skipped'), i.updated_at DESC, a.library_path LIMIT %s",
            (t["id"], failures)).fetchall()
        retry = conn.execute(
            "SELECT a.library_path, i.last_error, i.attempts, i.next_attempt_at"
            " FROM immich_assets i JOIN assets a ON a.id = i.asset_id"
            " WHERE i.target_id = %s AND i.state = 'pending' AND i.attempts > 0"
            " ORDER BY i.next_attempt_at LIMIT %s", (t["id"], failures)).fetchall()
        backlog = int(counts["pending"]) + total - int(counts["enqueued"])
        out["targets"].append({
            "user": t["user_email"], "user_id": t["user_id"], "mode": t["mode"],
            "url": t["url"], "library_id": t["library_id"],
            "current": mode is not None and t["mode"] == mode and not any(
                x["mode"] == mode for x in out["targets"]),
            **{k: int(counts[k]) for k in STATES},
            "backlog": backlog, "retrying": int(counts["retrying"]),
            "waiting_for_album": int(counts["waiting_for_album"]),
            "in_progress": int(counts["in_progress"]),
            "bytes_sent": int(counts["bytes_sent"]),
            "last_success": t["last_success_at"], "last_scan": t["last_scan_at"],
            "last_error": t["last_error"], "last_error_at": t["last_error_at"],
            "seen": t["seen_at"], "problems": problems, "retries": retry,
        })
    current = [t for t in out["targets"] if t["current"]]
    out["backlog"] = current[0]["backlog"] if current else total
    return out


def format_status(data: dict[str, Any]) -> list[str]:
    """Lines for the human `status` output (no trailing newlines)."""
    if not data["configured"]:
        lines = ["immich: not configured (set immich.url and immich.api_key_file to sync)"]
        for t in data["targets"]:
            lines.append(f"  previously {t['mode']} to {t['url']} as {t['user']}: "
                         f"{t['uploaded'] + t['duplicate'] + t['scanned']} done")
        return lines
    targets = [t for t in data["targets"] if t["current"]]
    if not targets:
        return [f"immich: {data['mode']} to {data['url']}: not synced yet, "
                f"{data['backlog']} asset(s) waiting"]
    t = targets[0]
    done = (f"{t['scanned']} handed to Immich's library scan" if t["mode"] == "library"
            else f"{t['uploaded']} uploaded, {t['duplicate']} duplicate")
    waiting = f"{t['backlog']} waiting"
    extra = [f"{t['retrying']} retrying"] if t["retrying"] else []
    if t["waiting_for_album"]:
        extra.append(f"{t['waiting_for_album']} only need their album")
    if extra:
        waiting += f" ({', '.join(extra)})"
    lines = [f"immich: {t['mode']} to {t['url']} as {t['user']}: {done}, "
             f"{t['trashed']} in Immich's trash, {t['skipped']} skipped, {t['failed']} failed, "
             f"{waiting}; last success {_when(t['last_success'])}"]
    if t["last_error"]:
        lines.append(f"  last error {_when(t['last_error_at'])}: {t['last_error']}")
    for p in t["problems"]:
        lines.append(f"  {p['state']} {p['library_path']}: {p['reason']}")
    shown = len(t["problems"])
    hidden = t["failed"] + t["trashed"] + t["skipped"] - shown
    if hidden > 0:
        lines.append(f"  … and {hidden} more")
    if t["failed"] or t["trashed"]:
        lines.append("  (photo-ingest sync --retry-failed tries failed and trashed ones again)")
    for r in t["retries"][:5]:
        lines.append(f"  retrying {r['library_path']} (attempt {r['attempts'] + 1}, "
                     f"{_when(r['next_attempt_at'])}): {r['last_error']}")
    return lines


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else "never"
