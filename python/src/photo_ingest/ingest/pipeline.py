"""The ingest of one source, stage by stage: scan, dates, copy + verify, publish, report.

Data flows one way. Each file ends in exactly one recorded state (copied, duplicate,
skipped, failed); a fatal problem (disk full, catalog gone, a signal) stops the session,
marks the files it did not reach, and leaves every byte already published in place.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

from photo_ingest import catalog
from photo_ingest.config import Config
from photo_ingest.ingest import sessions
from photo_ingest.ingest.capture import CaptureReader, NoCaptureTime, ReadAhead, capture_of
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
from photo_ingest.ingest.scan import ScanResult, SourceFile, scan, scan_files
from photo_ingest.ingest.sessions import Card, Counts
from photo_ingest.ingest.stops import Stopped, stops_deferred

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
# Errors that say the source's filesystem is gone, not one file: a FUSE or network mount
# whose other end went away (its folder may still stat from the attribute cache), a device
# that left.
SOURCE_GONE = frozenset({errno.ENOTCONN, errno.ENODEV, errno.ENXIO, errno.ESHUTDOWN})
RECONNECT_SECONDS = 2.0


class IngestError(RuntimeError):
    """The ingest could not start: say why, nothing was touched."""


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
    library = _prepare_library(cfg)
    conn = catalog.connect(cfg.database.conninfo())
    try:
        card = card or identify(source)
        session = _start(conn, source, card)
        return _Run(cfg, conn, source, library, session, card, reporter).run()
    finally:
        conn.close()


class FileSession:
    """A session over chosen files of one folder, fed batch by batch (the watcher's).

    The same stages as `ingest` (dedup, copy, verify, publish, outcomes); only the files
    come from the caller instead of a scan of the whole folder. `close` ends the session.
    A fatal problem (catalog gone, library full) ends it at once: `add` then returns the
    batch's outcomes so far and `ended` holds the session's summary.
    """

    def __init__(self, cfg: Config, source: str, card: Card, reporter: Reporter) -> None:
        self.source = os.path.abspath(source)
        library = _prepare_library(cfg)
        self.conn = catalog.connect(cfg.database.conninfo())
        try:
            session = _start(self.conn, self.source, card)
        except BaseException:
            self.conn.close()
            raise
        self.run = _Run(cfg, self.conn, self.source, library, session, card, reporter)
        self.run.files_only = True
        self.started = time.monotonic()
        self.ended: Summary | None = None

    @property
    def id(self) -> int:
        return self.run.session

    def add(self, paths: Sequence[bytes]) -> list[Outcome]:
        """Ingest PATHS (below the source) in this session; their outcomes."""
        if self.ended is not None:
            raise IngestError(f"session {self.id} has ended")
        first = len(self.run.outcomes)
        extensions = self.run.cfg.ingest.extensions
        status, error = self.run.attempt(lambda: scan_files(self.source, paths, extensions))
        if error is not None:
            self.ended = self.run.end(status, error, self.started)
            self.conn.close()
        else:
            sessions.heartbeat(self.conn, self.run.session, self.run.counts)
        return self.run.outcomes[first:]

    def close(self) -> Summary:
        if self.ended is None:
            try:
                self.ended = self.run.end("completed", None, self.started)
            finally:
                self.conn.close()
        return self.ended


def _prepare_library(cfg: Config) -> bytes:
    """The library's path, its incoming folder made and swept of dead runs' temp files."""
    library = os.fsencode(os.path.abspath(cfg.library.path))
    incoming = os.path.join(library, INCOMING)
    try:
        os.makedirs(incoming, exist_ok=True)
    except OSError as exc:
        raise IngestError(f"cannot create the library at {cfg.library.path}: "
                          f"{exc.strerror}") from exc
    for stale in sweep_stale_temps(incoming):
        log.info("removed stale temp file %s", display(stale))
    return library


def _start(conn: psycopg.Connection[Any], source: str, card: Card) -> int:
    for sid in sessions.mark_interrupted(conn):
        log.warning("session %d had been interrupted; marked as such", sid)
    return sessions.start(conn, source, card)


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
        self.seq = 0  # position in the session, over every batch
        self.pending: Sequence[SourceFile] = []
        self.files_only = False  # a chosen list: a file gone before its copy is no failure

    def run(self) -> Summary:
        started = time.monotonic()
        status, error = self.attempt(lambda: scan(self.source, self.cfg.ingest.extensions))
        return self.end(status, error, started)

    def attempt(self, find: Callable[[], ScanResult]) -> tuple[str, str | None]:
        """Ingest what FIND returns; ("completed", None), or the fatal status and error."""
        self.pending = []
        found: ScanResult | None = None
        try:
            found = find()
            self.pending = found.files
            self._record_skips(found)
            self.reporter.start(len(found.files) + sum(len(f.sidecars) for f in found.files),
                                found.total_bytes)
            pairs, known = known_by_size_and_name(self.conn, found.files)
            with CaptureReader(self.cfg.ingest.exiftool) as reader, \
                    ReadAhead(reader, [f.path for f in found.files]) as dates:
                for i, f in enumerate(found.files, 1):
                    self.seq += 1
                    self._with_catalog(functools.partial(
                        self._one, f, self.seq, dates.tags(f.path), pairs, known))
                    self.pending = found.files[i:]
                    self._with_catalog(self._beat)
        except DestinationFull as exc:
            return "failed", self._full_message(exc, self.pending)
        except psycopg.Error as exc:
            error = f"catalog database error: {str(exc).strip()}"
            if self.conn.broken and self.cfg.ingest.catalog_wait:
                error += f" (it did not come back within {self.cfg.ingest.catalog_wait} s)"
            return "failed", error
        except (Stopped, KeyboardInterrupt) as exc:
            return "interrupted", f"stopped by {exc or 'interrupt'}"
        except OSError as exc:  # the library itself is unusable (permissions, I/O error)
            return "failed", f"library error: {exc.strerror or exc}"
        finally:
            if found is not None:
                found.close()
        return "completed", None

    def end(self, status: str, error: str | None, started: float) -> Summary:
        if status == "completed" and self.counts.failed:
            status = "partial"
        # The log line too: systemd's SIGTERM for a pulled card, landing in it, left the
        # session `running` (seen in the VM's pull scenario).
        with stops_deferred(honoured=status == "interrupted"):
            if error:
                log.error("session %d %s: %s", self.session, status, error)
            self._close(status, error, self.pending)
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
            if isinstance(exc, SourceError) and (exc.errno in SOURCE_GONE
                                                 or not self._source_present()):
                # The read error came before systemd's SIGTERM: the card is gone, so this
                # is an interruption to resume, not a file that failed.
                raise Stopped("the card's removal (the source disappeared)") from exc
            moved = self._moved_on(f) if isinstance(exc, SourceError) else None
            if moved:
                self._skip([f.relpath, *(sc.relpath for sc in f.sidecars)], moved)
                return
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

    def _with_catalog(self, step: Callable[[], None]) -> None:
        """Run STEP; if the catalog connection was lost (the database restarted, the
        network dropped), wait for the database to come back and run STEP again.

        A file interrupted this way is copied again from the start: its temp file was
        discarded, and a library file it had already linked is adopted by the retry.
        """
        deadline = time.monotonic() + self.cfg.ingest.catalog_wait
        while True:
            try:
                return step()
            except psycopg.OperationalError as exc:
                if not self.conn.broken or time.monotonic() >= deadline:
                    raise
                log.warning("session %d: lost the catalog database (%s); waiting up to %ds "
                            "for it to come back", self.session, str(exc).strip(),
                            deadline - time.monotonic())
                self._reconnect(deadline, exc)

    def _reconnect(self, deadline: float, lost: psycopg.OperationalError) -> None:
        while True:
            time.sleep(RECONNECT_SECONDS)
            try:
                conn = catalog.connect(self.cfg.database.conninfo())
            except (catalog.CatalogError, psycopg.Error) as exc:
                if time.monotonic() >= deadline:
                    raise lost from exc
                continue
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = self.publisher.conn = conn
            log.warning("session %d: the catalog database is back; continuing", self.session)
            return

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

    def _moved_on(self, f: SourceFile) -> str | None:
        """Why a chosen file (a watcher's) that could not be read is no failure, if it is
        none: it was deleted or renamed, or written again, since it was chosen."""
        if not self.files_only:
            return None
        try:
            st = os.lstat(f.path)
        except FileNotFoundError:
            return "vanished: deleted or renamed before it was copied"
        except OSError:
            return None
        if (st.st_size, st.st_mtime) != (f.size, f.mtime):
            return "changed while being copied: taken again once it is stable"
        return None

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

    def _skip(self, relpaths: Sequence[bytes], reason: str) -> None:
        with self.conn.transaction():
            for rel in relpaths:
                sessions.record_outcome(self.conn, self.session, display(rel), "skipped",
                                        reason=reason)
        for rel in relpaths:
            log.info("skipped: %s: %s", display(rel), reason)
            self._count(Outcome(display(rel), "skipped", reason))

    def _record_skips(self, found: ScanResult) -> None:
        self.counts.seen += len(found.files) + sum(len(f.sidecars) for f in found.files)
        self.counts.seen += len(found.skipped)
        self.counts.bytes_total += found.total_bytes
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
            self._with_catalog(lambda: sessions.finish(self.conn, self.session, self.counts,
                                                       status, error))
        except psycopg.Error as exc:
            log.error("could not record the end of session %d: %s", self.session, exc)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"
