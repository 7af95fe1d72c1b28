"""After a card session: copy its files to the mirrors, then say whether the card is safe
to format (and so may be ejected).

Safe means: the session completed (every photo and video is verified in the library or
was already there), and every `required = true` mirror holds a verified copy of every one
of them. A best-effort mirror that lags is reported but does not keep the card in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg

from photo_ingest import catalog
from photo_ingest.config import Config
from photo_ingest.ingest.stops import Stopped
from photo_ingest.mirror import store
from photo_ingest.mirror.run import Report, catch_up

log = logging.getLogger(__name__)


def after_session(cfg: Config, summary: dict[str, Any]) -> dict[str, Any]:
    """The session summary's additions: `mirrors`, `safe_to_format`, `safe_reason`."""
    reports: list[Report] = []
    if cfg.mirrors and summary["status"] in ("completed", "partial"):
        try:
            with catalog.connect(cfg.database.conninfo()) as conn:
                assets = store.session_assets(conn, summary["session"])
                reports = catch_up(cfg, conn, cfg.mirrors, assets)
        except (catalog.CatalogError, psycopg.Error, OSError, Stopped) as exc:
            # The library copy stands; the mirror timer finishes the job later.
            why = f"not finished: {exc or type(exc).__name__}"
            log.error("mirrors %s", why)
            reports = [_not_run(m.name, str(m.path), m.required, why) for m in cfg.mirrors]
    elif cfg.mirrors:
        reports = [_not_run(m.name, str(m.path), m.required,
                            f"not attempted: the session ended {summary['status']}")
                   for m in cfg.mirrors]
    safe, reason = verdict(summary, reports)
    return {"mirrors": [r.as_json() for r in reports], "safe_to_format": safe,
            "safe_reason": reason}


def _not_run(name: str, path: str, required: bool, why: str) -> Report:
    return Report(name, path, required, reason=why)  # complete: None, not known


def verdict(summary: dict[str, Any], mirrors: Sequence[Report]) -> tuple[bool, str]:
    status, files = summary["status"], summary["files"]
    if status == "interrupted":
        return False, f"the session was interrupted ({summary['error']})"
    if status == "failed":
        return False, f"the session failed: {summary['error']}"
    if files["failed"]:
        return False, f"{files['failed']} file(s) failed to copy"
    if status != "completed":
        return False, f"the session ended {status}"
    for m in mirrors:
        if m.required and m.complete is not True:
            return False, f"required mirror {m.name} does not hold {_lacking(m)}"
    where = "in the library"
    required = [m.name for m in mirrors if m.required]
    if required:
        where += " and on " + ", ".join(required)
    lagging = [f"best-effort mirror {m.name} lacks {_lacking(m)}" for m in mirrors
               if not m.required and m.complete is not True]
    return True, f"every file is verified {where}" + ("; " + "; ".join(lagging)
                                                        if lagging else "")


def _lacking(m: Report) -> str:
    n = sum((m.missing or {}).values())
    what = f"{n} file(s)" if n else "every file"
    return f"{what} ({m.reason})" if m.reason else what
