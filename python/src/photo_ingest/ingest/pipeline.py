"""The ingest of one source, stage by stage: scan, dates, copy + verify, publish, report.

Data flows one way. Each file ends in exactly one recorded state (copied, duplicate,
skipped, failed); a fatal problem (disk full, catalog gone, a signal) stops the session,
marks the files it did not reach, and leaves every byte already published in place.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

from photo_ingest import catalog
from photo_ingest.config import Config
from photo_ingest.ingest import sessions
from photo_ingest.ingest.capture import CaptureReader, NoCaptureTime, capture_of
from photo_ingest.ingest.card import identify
from photo_ingest.ingest.copy import (
    INCOMING,
    Copied,
    DestinationFull,
    SourceError,
    VerifyError,
    copy_to_temp,
    discard,
    hash_file,
    sweep_stale_temps,
)
from photo_ingest.ingest.layout import display
from photo_ingest.ingest.publish import Outcome, Publisher, known_by_size_and_name
from photo_ingest.ingest.scan import ScanResult, SourceFile, scan
from photo_ingest.ingest.sessions import Card, Counts

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0


class IngestError(RuntimeError):
    """The ingest could not start: say why, nothing was touched."""


class Stopped(BaseException):
    """A signal asked us to stop (SIGTERM when the card is pulled or the unit stops)."""


class Reporter(Protocol):
    def start(self, files: int, total_bytes: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def file_done(self, outcome: Outcome) -> None: ...


@dataclass
class Summary:
    session: int
    source: str
    library: str
    status: str
    error: str | None
    counts: Counts
    duration: float
    outcomes: list[Outcome] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        c = self.counts
        return {
            "session": self.session, "source": self.source, "library": self.library,
            "status": self.status, "error": self.error, "duration_seconds": round(self.duration, 3),
            "files": {"seen": c.seen, "copied": c.copied, "duplicate": c.duplicate,
                      "skipped": c.skipped, "failed": c.failed},
            "bytes": {"total": c.bytes_total, "copied": c.bytes_copied},
            "outcomes": [
                {"path": o.relpath, "outcome": o.outcome, "reason": o.reason, "size": o.size,
                 "sha1": o.sha1.hex() if o.sha1 else None, "library_path": o.library_path}
                for o in self.outcomes
            ],
        }


def ingest(cfg: Config, source: str, reporter: Reporter, card: Card | None = None) -> Summary:
    """Ingest SOURCE (a directory: a mounted card or any tree) into the library."""
    source = os.path.abspath(source)
    if not os.path.isdir(source):
        raise IngestError(f"source {source} is not a directory (or does not exist)")
    library = os.fsencode(os.path.abspath(cfg.library.path))
    incoming = os.path.join(library, INCOMING)
    try:
        os.makedirs(incoming, exist_ok=True)
    except OSError as exc:
        raise IngestError(f"cannot create the library at {cfg.library.path}: "
                          f"{exc.strerror}") from exc
    for stale in sweep_stale_temps(incoming):
        log.info("removed stale temp file %s", display(stale))
    conn = catalog.connect(cfg.database.conninfo())
    try:
        for sid in sessions.mark_interrupted(conn):
            log.warning("session %d had been interrupted; marked as such", sid)
        card = card or identify(source)
        session = sessions.start(conn, source, card)
        return _Run(cfg, conn, source, library, session, card, reporter).run()
    finally:
        conn.close()


class _Run:
    def __init__(self, cfg: Config, conn: psycopg.Connection[Any], source: str, library: bytes,
                 session: int, card: Card, reporter: Reporter) -> None:
        self.cfg = cfg
        self.conn = conn
        self.source = source
        self.library = library
        self.incoming = os.path.join(library, INCOMING)
        self.session = session
        self.reporter = reporter
        self.counts = Counts()
        self.outcomes: list[Outcome] = []
        self.publisher = Publisher(conn, library, session, cfg.library.layout, card.label,
                                   cfg.ingest.buffer_size)
        self.zone = cfg.ingest.zone()
        self.last_beat = 0.0

    def run(self) -> Summary:
        started = time.monotonic()
        status, error = "completed", None
        pending: Sequence[SourceFile] = []
        try:
            found = scan(self.source, self.cfg.ingest.extensions)
            pending = found.files
            self._record_skips(found)
            self.reporter.start(len(found.files) + sum(len(f.sidecars) for f in found.files),
                                found.total_bytes)
            with CaptureReader(self.cfg.ingest.exiftool) as reader:
                tags = reader.read(f.path for f in found.files)
            pairs, known = known_by_size_and_name(self.conn, found.files)
            for seq, f in enumerate(found.files, 1):
                self._one(f, seq, tags.get(f.path, {}), pairs, known)
                pending = found.files[seq:]
                self._beat()
        except DestinationFull as exc:
            status, error = "failed", self._full_message(exc, pending)
        except psycopg.Error as exc:
            status, error = "failed", f"catalog database error: {str(exc).strip()}"
        except (Stopped, KeyboardInterrupt) as exc:
            status, error = "interrupted", f"stopped by {exc or 'interrupt'}"
        except OSError as exc:  # the library itself is unusable (permissions, I/O error)
            status, error = "failed", f"library error: {exc.strerror or exc}"
        if error:
            log.error("session %d %s: %s", self.session, status, error)
        if status == "completed" and self.counts.failed:
            status = "partial"
        self._close(status, error, pending)
        return Summary(self.session, self.source, os.fsdecode(self.library), status, error,
                       self.counts, time.monotonic() - started, self.outcomes)

    def _one(self, f: SourceFile, seq: int, tags: dict[str, Any],
             pairs: set[tuple[int, str]], known: dict[bytes, Any]) -> None:
        try:
            capture = capture_of(tags, f.mtime, self.zone)
        except NoCaptureTime as exc:
            self._fail([f.relpath, *(sc.relpath for sc in f.sidecars)], str(exc))
            return
        copies: list[Copied] = []
        try:
            primary = None
            if (f.size, display(f.name)) in pairs:
                primary = self._known_copy(f, known)
            sidecars = []
            for sc in f.sidecars:
                copied = self._copy(sc.path, sc.size)
                copies.append(copied)
                sidecars.append((sc, copied))
            if primary is None:
                primary = self._copy(f.path, f.size, progress=True)
                copies.append(primary)
            outcomes = self.publisher.publish(f, primary, capture, seq, sidecars)
        except (SourceError, VerifyError) as exc:
            for c in copies:
                discard(c.temp)
            if isinstance(exc, SourceError) and not self._source_present():
                # The read error came before systemd's SIGTERM: the card is gone, so this
                # is an interruption to resume, not a file that failed.
                raise Stopped("the card's removal (the source disappeared)") from exc
            self._fail([f.relpath, *(sc.relpath for sc in f.sidecars)], str(exc.args[-1]))
            return
        except BaseException:
            for c in copies:
                discard(c.temp)
            raise
        for o in outcomes:
            self._count(o)
            if o.outcome == "copied":
                self.counts.bytes_copied += o.size or 0

    def _source_present(self) -> bool:
        """Is the source still there: its folder, and the block device it lives on?"""
        try:
            st = os.stat(self.source)
        except OSError:
            return False
        major, minor = os.major(st.st_dev), os.minor(st.st_dev)
        sys_dev = f"/sys/dev/block/{major}:{minor}"
        # Only block devices appear there; other filesystems (tmpfs, NFS) have no entry.
        return major == 0 or not os.path.exists("/sys/dev/block") or os.path.exists(sys_dev)

    def _known_copy(self, f: SourceFile, known: dict[bytes, Any]) -> Copied | None:
        """Hash a file that looks catalogued; a Copied without temp if it really is."""
        try:
            sha1, n = hash_file(f.path, self.cfg.ingest.buffer_size, self.reporter.advance)
        except OSError as exc:
            raise SourceError(exc.errno, f"reading the source failed: {exc.strerror}") from exc
        return Copied(b"", sha1, n) if n == f.size and sha1 in known else None

    def _copy(self, path: bytes, size: int, progress: bool = False) -> Copied:
        return copy_to_temp(path, self.incoming, expected_size=size,
                            buffer_size=self.cfg.ingest.buffer_size,
                            verify=self.cfg.ingest.verify,
                            progress=self.reporter.advance if progress else None)

    def _fail(self, relpaths: Sequence[bytes], reason: str) -> None:
        with self.conn.transaction():
            for rel in relpaths:
                sessions.record_outcome(self.conn, self.session, display(rel), "failed",
                                        reason=reason)
        for rel in relpaths:
            log.warning("failed: %s: %s", display(rel), reason)
            self._count(Outcome(display(rel), "failed", reason))

    def _record_skips(self, found: ScanResult) -> None:
        self.counts.seen = len(found.files) + sum(len(f.sidecars) for f in found.files)
        self.counts.seen += len(found.skipped)
        self.counts.bytes_total = found.total_bytes
        with self.conn.transaction():
            for s in found.skipped:
                sessions.record_outcome(self.conn, self.session, display(s.relpath), "skipped",
                                        reason=s.reason, size=s.size)
        for s in found.skipped:
            self._count(Outcome(display(s.relpath), "skipped", s.reason, s.size))

    def _count(self, outcome: Outcome) -> None:
        self.counts.add(outcome.outcome)
        self.outcomes.append(outcome)
        self.reporter.file_done(outcome)

    def _beat(self) -> None:
        if time.monotonic() - self.last_beat >= HEARTBEAT_SECONDS:
            sessions.heartbeat(self.conn, self.session, self.counts)
            self.last_beat = time.monotonic()

    def _full_message(self, exc: DestinationFull, pending: Sequence[SourceFile]) -> str:
        needed = sum(f.size + sum(s.size for s in f.sidecars) for f in pending)
        free = shutil.disk_usage(self.library).free
        return (f"{exc.strerror}: {len(pending)} files ({_mb(needed)}) still to copy, "
                f"{_mb(free)} free in {os.fsdecode(self.library)}; free at least "
                f"{_mb(max(needed - free, 0))} and run the ingest again")

    def _close(self, status: str, error: str | None, pending: Sequence[SourceFile]) -> None:
        """Record the files never reached and the session's end, if the catalog allows."""
        try:
            if pending and error:
                self._fail([rel for f in pending for rel in
                            (f.relpath, *(sc.relpath for sc in f.sidecars))],
                           f"not attempted: {error}")
            sessions.finish(self.conn, self.session, self.counts, status, error)
        except psycopg.Error as exc:
            log.error("could not record the end of session %d: %s", self.session, exc)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"
