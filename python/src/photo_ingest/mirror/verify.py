"""`photo-ingest verify`: re-read stored copies and compare them with the catalog's SHA-1.

Bit rot, truncation and lost files are found here, not when the copy is finally needed.
A scrub only reports: it never rewrites a file (a "repair" that trusted the wrong copy
would make things worse); findings are recorded in the catalog and in the metrics.

`--sample N` checks the N files of a destination that were checked longest ago (never
checked first), so a nightly sample covers the whole library in turn.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from photo_ingest.config import Config
from photo_ingest.ingest.copy import HOST, hash_file
from photo_ingest.mirror.config import LIBRARY, MirrorConfig
from photo_ingest.mirror.destination import Unavailable, open_destination
from photo_ingest.mirror.store import Conn

log = logging.getLogger(__name__)

# Advisory lock namespace (two-key form): "veri" in ASCII; the other key is the name's hash.
VERIFY_LOCK = 0x76657269
COMMIT_EVERY = 2.0  # seconds between progress commits
MAX_FINDINGS_SHOWN = 50


@dataclass
class Scrub:
    """What one scrub of one destination found."""

    destination: str
    path: str
    status: str = "completed"   # completed | interrupted | unavailable | busy
    reason: str | None = None
    run: int | None = None
    checked: int = 0
    bytes: int = 0
    rot: int = 0
    missing: int = 0
    unreadable: int = 0
    duration_seconds: float = 0.0
    findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return self.rot + self.missing + self.unreadable

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


_FILES = """
    SELECT f.asset_id, f.sidecar_id, f.library_path, f.sha1, f.size FROM ({files}) f
    LEFT JOIN verify_checks c ON c.destination = %(d)s AND c.asset_id = f.asset_id
         AND c.sidecar_id IS NOT DISTINCT FROM f.sidecar_id
    ORDER BY c.checked_at NULLS FIRST, f.asset_id, f.sidecar_id NULLS FIRST LIMIT %(n)s
"""
_LIBRARY_FILES = ("SELECT id AS asset_id, NULL::bigint AS sidecar_id, library_path, sha1, size"
                  " FROM assets UNION ALL"
                  " SELECT asset_id, id, library_path, sha1, size FROM sidecars")
_MIRROR_FILES = ("SELECT m.asset_id, m.sidecar_id,"
                 " coalesce(s.library_path, a.library_path) AS library_path, m.sha1, m.size"
                 " FROM mirror_copies m JOIN assets a ON a.id = m.asset_id"
                 " LEFT JOIN sidecars s ON s.id = m.sidecar_id"
                 " WHERE m.destination = %(d)s AND m.state = 'copied'")


def scrub(cfg: Config, conn: Conn, destination: str, sample: int) -> Scrub:
    """Check SAMPLE files (0: all) of DESTINATION ('library' or a mirror's name)."""
    mirror = _mirror(cfg, destination)
    path = str(cfg.library.path if mirror is None else mirror.path)
    result = Scrub(destination, path)
    got = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS ok",
                       (VERIFY_LOCK, destination)).fetchone()
    if not got or not got["ok"]:
        result.status, result.reason = "busy", "another verify of this destination is running"
        return result
    try:
        return _Scrubber(cfg, conn, result, mirror, sample).run()
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (VERIFY_LOCK, destination))


def destinations(cfg: Config, only: str | None) -> list[str]:
    names = [LIBRARY, *(m.name for m in cfg.mirrors)]
    if only is not None and only not in names:
        from photo_ingest.config import ConfigError

        raise ConfigError(f"--destination: no mirror named {only!r} (known: "
                          f"{', '.join(names)})")
    return [only] if only else names


def _mirror(cfg: Config, name: str) -> MirrorConfig | None:
    return next((m for m in cfg.mirrors if m.name == name), None)


class _Scrubber:
    def __init__(self, cfg: Config, conn: Conn, result: Scrub, mirror: MirrorConfig | None,
                 sample: int) -> None:
        self.cfg = cfg
        self.conn = conn
        self.result = result
        self.mirror = mirror
        self.sample = sample
        self.checks: list[tuple[int, int | None, bool]] = []
        self.found: list[dict[str, Any]] = []

    def run(self) -> Scrub:
        started = time.monotonic()
        r = self.result
        with self.conn.transaction():
            row = self.conn.execute(
                "INSERT INTO verify_runs (destination, host, pid, sample) VALUES (%s, %s, %s,"
                " %s) RETURNING id", (r.destination, HOST, os.getpid(), self.sample)).fetchone()
        assert row is not None
        r.run = int(row["id"])
        try:
            self._check_all()
        except Unavailable as exc:
            r.status, r.reason = "unavailable", str(exc.strerror)
            log.warning("verify %s: %s", r.destination, r.reason)
        except BaseException as exc:
            r.status, r.reason = "interrupted", f"stopped by {exc or type(exc).__name__}"
            self._finish(started)
            raise
        self._finish(started)
        return r

    def _check_all(self) -> None:
        if self.mirror is None:
            root, files = os.fsencode(os.path.abspath(self.cfg.library.path)), _LIBRARY_FILES
            self._check(root, files)
            return
        handle = open_destination(self.mirror, create_marker=False)
        try:
            self._check(handle.root, _MIRROR_FILES)
        finally:
            handle.close()

    def _check(self, root: bytes, files: str) -> None:
        rows = self.conn.execute(_FILES.format(files=files), {
            "d": self.result.destination, "n": self.sample or None}).fetchall()
        log.info("verify %s: checking %d files", self.result.destination, len(rows))
        last = time.monotonic()
        for row in rows:
            self._one(root, row)
            if time.monotonic() - last >= COMMIT_EVERY:
                self._flush()
                last = time.monotonic()

    def _one(self, root: bytes, row: dict[str, Any]) -> None:
        r = self.result
        expected, size = bytes(row["sha1"]), int(row["size"])
        path = os.path.join(root, row["library_path"].encode())
        kind, found, found_size, detail = None, None, None, None
        try:
            found, found_size = hash_file(path, self.cfg.ingest.buffer_size, from_storage=True)
        except FileNotFoundError:
            kind, detail = "missing", "the file is gone"
        except OSError as exc:
            kind, detail = "unreadable", f"cannot be read: {exc.strerror}"
        else:
            r.bytes += found_size
            if found != expected or found_size != size:
                kind = "rot"
                detail = (f"SHA-1 {found.hex()} ({found_size} bytes), the catalog has "
                          f"{expected.hex()} ({size} bytes)")
        r.checked += 1
        self.checks.append((row["asset_id"], row["sidecar_id"], kind is None))
        if kind is None:
            return
        setattr(r, kind, getattr(r, kind) + 1)
        finding = {"library_path": row["library_path"], "kind": kind, "detail": detail,
                   "asset_id": row["asset_id"], "sidecar_id": row["sidecar_id"],
                   "expected_sha1": expected, "found_sha1": found, "found_size": found_size}
        self.found.append(finding)
        if len(r.findings) < MAX_FINDINGS_SHOWN:
            r.findings.append({"path": row["library_path"], "kind": kind, "detail": detail})
        log.error("verify %s: %s: %s: %s", r.destination, kind, row["library_path"], detail)

    def _flush(self) -> None:
        r = self.result
        with self.conn.transaction():
            for asset_id, sidecar_id, ok in self.checks:
                conflict = ("(destination, asset_id) WHERE sidecar_id IS NULL"
                            if sidecar_id is None else
                            "(destination, sidecar_id) WHERE sidecar_id IS NOT NULL")
                self.conn.execute(
                    "INSERT INTO verify_checks (destination, asset_id, sidecar_id, checked_at,"
                    f" ok) VALUES (%s, %s, %s, now(), %s) ON CONFLICT {conflict}"
                    " DO UPDATE SET checked_at = now(), ok = EXCLUDED.ok",
                    (r.destination, asset_id, sidecar_id, ok))
            for f in self.found:
                self.conn.execute(
                    "INSERT INTO verify_findings (run_id, destination, asset_id, sidecar_id,"
                    " library_path, kind, expected_sha1, found_sha1, found_size, detail)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (r.run, r.destination, f["asset_id"], f["sidecar_id"], f["library_path"],
                     f["kind"], f["expected_sha1"], f["found_sha1"], f["found_size"],
                     f["detail"]))
            self.conn.execute(
                "UPDATE verify_runs SET checked = %s, bytes = %s, rot = %s, missing = %s,"
                " unreadable = %s WHERE id = %s",
                (r.checked, r.bytes, r.rot, r.missing, r.unreadable, r.run))
        self.checks, self.found = [], []

    def _finish(self, started: float) -> None:
        r = self.result
        r.duration_seconds = round(time.monotonic() - started, 3)
        self._flush()
        with self.conn.transaction():
            self.conn.execute("UPDATE verify_runs SET status = %s, error = %s, ended_at = now()"
                              " WHERE id = %s", (r.status, r.reason, r.run))
