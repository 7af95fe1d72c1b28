"""The mirror and scrub part of `photo-ingest status`, straight from the catalog."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from photo_ingest.config import Config
from photo_ingest.mirror import store
from photo_ingest.mirror.config import LIBRARY
from photo_ingest.report import human_bytes


def status(conn: psycopg.Connection[Any], cfg: Config) -> dict[str, Any]:
    """`mirrors`: one entry per configured mirror (files by state, availability, problems);
    `verify`: the last scrub of each destination."""
    totals = store.totals(conn)
    files = conn.execute("SELECT (SELECT count(*) FROM assets) + (SELECT count(*) FROM"
                         " sidecars) AS n").fetchone()
    mirrors = []
    for m in cfg.mirrors:
        t = totals.get(m.name) or {"copied": 0, "failed": 0, "bytes": 0,
                                   "pending": int(files["n"]) if files else 0,
                                   "available": None, "checked_at": None,
                                   "unavailable_since": None, "last_error": None,
                                   "last_copied_at": None}
        mirrors.append({"name": m.name, "path": str(m.path), "required": m.required,
                        **{k: t[k] for k in ("copied", "pending", "failed", "bytes",
                                             "available", "checked_at", "unavailable_since",
                                             "last_error", "last_copied_at")},
                        "problems": store.failures(conn, m.name, 10)})
    runs = conn.execute(
        "SELECT DISTINCT ON (destination) destination, status, started_at, ended_at, checked,"
        " rot, missing, unreadable, error FROM verify_runs WHERE status <> 'running'"
        " ORDER BY destination, started_at DESC").fetchall()
    return {"mirrors": mirrors, "verify": runs}


def format_status(data: dict[str, Any]) -> list[str]:
    lines = []
    for m in data["mirrors"]:
        kind = "required" if m["required"] else "best effort"
        if m["available"] is None:
            seen = "not used yet"
        elif m["available"]:
            seen = f"available at {_when(m['checked_at'])}"
        else:
            seen = (f"UNAVAILABLE since {_when(m['unavailable_since'])}: {m['last_error']}")
        lines.append(f"mirror {m['name']} ({kind}, {m['path']}): {m['copied']} copied "
                     f"({human_bytes(m['bytes'])}), {m['pending']} pending, {m['failed']} "
                     f"failed; {seen}; last copy {_when(m['last_copied_at'])}")
        for p in m["problems"]:
            lines.append(f"  {p['state']} {p['library_path']}: {p['error']}")
        if m["failed"]:
            lines.append("  (photo-ingest mirror --retry-failed tries failed files again)")
    for v in data["verify"]:
        found = v["rot"] + v["missing"] + v["unreadable"]
        what = (f"{v['checked']} checked, {v['rot']} rotten, {v['missing']} missing, "
                f"{v['unreadable']} unreadable" if v["status"] == "completed"
                else f"{v['status']}: {v['error']}")
        flag = " - PROBLEMS FOUND (photo-ingest verify lists them)" if found else ""
        name = v["destination"] + (" (the library)" if v["destination"] == LIBRARY else "")
        lines.append(f"verify {name}: last scrub {_when(v['ended_at'])}: {what}{flag}")
    return lines


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else "never"
