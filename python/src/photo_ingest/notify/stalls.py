"""`photo-ingest backlog-check`: is work piling up with nothing getting done?

Every run samples each backlog - assets waiting for metadata, for Immich (when it is
configured), for each mirror - together with how much of that work was ever done. A
backlog is *stalled* when it is above zero and its done-count has not moved for
notify.stall_minutes (a growing backlog whose worker still makes progress is not a stall).
One notification is sent when a stall starts and one when it ends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from photo_ingest.config import Config
from photo_ingest.mirror import store
from photo_ingest.notify.message import Message

log = logging.getLogger(__name__)

STALL_LOCK = 0x7374616C6C2D636B  # "stall-ck": one check at a time
KEEP_DAYS = 7

HINTS = {
    "metadata": "check `systemctl status photo-ingest-metadata.timer "
                "photo-ingest-metadata.service`, or run `photo-ingest extract`",
    "immich": "check `systemctl status photo-ingest-immich-sync.service`; "
              "`photo-ingest check` says whether Immich can be reached",
}


@dataclass(frozen=True)
class Change:
    kind: str
    stalled: bool         # True: a stall began; False: it ended
    backlog: int
    done_since: int       # recovered: work done since the stall began
    since: datetime

    def message(self, minutes: int) -> Message:
        what = _what(self.kind)
        if self.stalled:
            return Message(
                "stall", f"photo-ingest: {what} stalled",
                f"{self.backlog} file(s) are waiting for {what} and none has been done for "
                f"{minutes}+ minutes (since {self.since:%Y-%m-%d %H:%M %Z}).\n"
                f"What to do: {_hint(self.kind)}.",
                priority=4, tags=("hourglass",),
                data={"backlog": self.kind, "waiting": self.backlog, "since": self.since})
        return Message(
            "recovered", f"photo-ingest: {what} moving again",
            f"{what}: {self.done_since} file(s) done since the stall began "
            f"({self.since:%Y-%m-%d %H:%M %Z}); {self.backlog} waiting.",
            priority=3, tags=("arrow_forward",),
            data={"backlog": self.kind, "waiting": self.backlog, "since": self.since})


def sample(cfg: Config, conn: store.Conn) -> dict[str, tuple[int, int]]:
    """kind -> (backlog, done) now."""
    out: dict[str, tuple[int, int]] = {}
    row = conn.execute(
        "SELECT (SELECT count(*) FROM assets a WHERE NOT EXISTS (SELECT 1 FROM asset_metadata"
        " m WHERE m.asset_id = a.id)) AS backlog, (SELECT count(*) FROM asset_metadata) AS done"
    ).fetchone()
    assert row is not None
    out["metadata"] = (int(row["backlog"]), int(row["done"]))
    if cfg.immich.enabled:
        from photo_ingest.immich.status import status as immich_status

        done = conn.execute("SELECT count(*) AS n FROM immich_assets WHERE state <> 'pending'"
                            ).fetchone()
        out["immich"] = (int(immich_status(conn, cfg.immich)["backlog"]),
                         int(done["n"]) if done else 0)
    totals = store.totals(conn)
    files = conn.execute("SELECT (SELECT count(*) FROM assets) + (SELECT count(*) FROM"
                         " sidecars) AS n").fetchone()
    for m in cfg.mirrors:
        t = totals.get(m.name)
        out[f"mirror:{m.name}"] = ((t["pending"], t["copied"] + t["failed"]) if t else
                                   (int(files["n"]) if files else 0, 0))
    return out


def check(cfg: Config, conn: store.Conn) -> tuple[dict[str, tuple[int, int]], list[Change]]:
    """Sample the backlogs, and return the stalls that began or ended since the last run."""
    minutes = cfg.notify.stall_minutes
    changes = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (STALL_LOCK,))
        now = sample(cfg, conn)
        for kind, (backlog, done) in now.items():
            conn.execute("INSERT INTO backlog_samples (kind, backlog, done) VALUES (%s, %s, %s)",
                         (kind, backlog, done))
            change = _update(conn, kind, backlog, done, minutes)
            if change is not None:
                changes.append(change)
        conn.execute("DELETE FROM backlog_samples WHERE sampled_at < now()"
                     " - make_interval(days => %s) - make_interval(mins => %s)",
                     (KEEP_DAYS, minutes))
    return now, changes


def _update(conn: store.Conn, kind: str, backlog: int, done: int, minutes: int
            ) -> Change | None:
    ref = conn.execute(
        "SELECT sampled_at, backlog, done FROM backlog_samples WHERE kind = %s"
        " AND sampled_at <= now() - make_interval(mins => %s)"
        " ORDER BY sampled_at DESC LIMIT 1", (kind, minutes)).fetchone()
    state = conn.execute("SELECT stalled, since, backlog, done FROM backlog_stalls"
                         " WHERE kind = %s", (kind,)).fetchone()
    stalled = (ref is not None and backlog > 0 and ref["backlog"] > 0
               and done == ref["done"])
    if state is not None and state["stalled"]:
        if done > state["done"] or backlog == 0:
            _set(conn, kind, False, backlog, done)
            log.info("%s moving again", kind)
            return Change(kind, False, backlog, done - state["done"], state["since"])
        return None
    if stalled and ref is not None:
        _set(conn, kind, True, backlog, done, ref["sampled_at"])
        log.warning("%s stalled: %d waiting, nothing done since %s", kind, backlog,
                    ref["sampled_at"])
        return Change(kind, True, backlog, 0, ref["sampled_at"])
    return None


def _set(conn: store.Conn, kind: str, stalled: bool, backlog: int, done: int,
         since: Any = None) -> None:
    conn.execute(
        "INSERT INTO backlog_stalls (kind, stalled, since, backlog, done)"
        " VALUES (%(k)s, %(s)s, coalesce(%(t)s, now()), %(b)s, %(d)s) ON CONFLICT (kind)"
        " DO UPDATE SET stalled = EXCLUDED.stalled, since = EXCLUDED.since,"
        " backlog = EXCLUDED.backlog, done = EXCLUDED.done",
        {"k": kind, "s": stalled, "t": since, "b": backlog, "d": done})


def _what(kind: str) -> str:
    if kind.startswith("mirror:"):
        return f"mirror {kind.partition(':')[2]} backlog"
    return {"metadata": "metadata backlog", "immich": "Immich upload backlog"}.get(
        kind, f"{kind} backlog")


def _hint(kind: str) -> str:
    if kind.startswith("mirror:"):
        name = kind.partition(":")[2]
        return (f"is mirror {name} mounted? `photo-ingest status` shows why it is not "
                "copied; `photo-ingest mirror` catches up")
    return HINTS.get(kind, "see `photo-ingest status`")
