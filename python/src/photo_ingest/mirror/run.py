"""Copy library files to the mirrors: the same temp file, fsync, verify and no-replace
publish as the library itself (photo_ingest.ingest.copy), with the library's verified copy
as the source - the card is read once, by the ingest.

Each file's SHA-1 is computed while it is read from the library and must equal the
catalog's: a library file that rotted is reported, never spread to the mirrors.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

from photo_ingest.config import Config
from photo_ingest.ingest.copy import (
    DestinationFull,
    SourceError,
    VerifyError,
    copy_to_temp,
    discard,
    ensure_dir,
    hash_file,
    link_into_place,
)
from photo_ingest.mirror import store
from photo_ingest.mirror.config import MirrorConfig
from photo_ingest.mirror.destination import Handle, Unavailable, open_destination

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 10.0
MAX_ERRORS_SHOWN = 20


@dataclass
class Report:
    """What one run did on one destination."""

    name: str
    path: str
    required: bool
    available: bool = True
    reason: str | None = None     # why it was unavailable, or why the run stopped early
    copied: int = 0               # files written and verified by this run
    adopted: int = 0              # files found already in place with the right SHA-1
    bytes: int = 0
    failed: int = 0               # files failed for good by this run
    deferred: int = 0             # files left pending after a transient error
    errors: list[str] = field(default_factory=list)
    missing: dict[str, int] | None = None  # session mode: files not (yet) on the mirror

    @property
    def complete(self) -> bool | None:
        """Session mode: does the mirror hold every file of the session?"""
        return None if self.missing is None else not any(self.missing.values())

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}


class _StopDestination(Exception):
    """This destination cannot take more files in this run (unavailable, full)."""


def catch_up(cfg: Config, conn: store.Conn, mirrors: Sequence[MirrorConfig],
             assets: Sequence[int] | None = None, *, retry_failed: bool = False
             ) -> list[Report]:
    """Copy every pending file (of ASSETS only, when given) to each of MIRRORS."""
    return [_Destination(cfg, conn, m, assets).run(retry_failed) for m in mirrors]


class _Destination:
    def __init__(self, cfg: Config, conn: store.Conn, mirror: MirrorConfig,
                 assets: Sequence[int] | None) -> None:
        self.cfg = cfg
        self.conn = conn
        self.mirror = mirror
        self.assets = assets
        self.library = os.fsencode(os.path.abspath(cfg.library.path))
        self.report = Report(mirror.name, str(mirror.path), mirror.required)
        self.tried: list[int] = []  # rows left pending by this run: not tried twice
        self.last_log = time.monotonic()

    def run(self, retry_failed: bool) -> Report:
        with self.conn.transaction():
            store.register(self.conn, self.mirror)
            if retry_failed:
                store.retry_failed(self.conn, self.mirror.name)
            store.enqueue(self.conn, self.mirror.name)
        try:
            open_destination(self.mirror).close()  # the marker rule; first use creates it
        except Unavailable as exc:
            self._unavailable(exc)
            return self._end()
        with self.conn.transaction():
            store.seen(self.conn, self.mirror.name, True, None)
        # A card session must know, so it also waits for files other processes are copying.
        for wait in (False, True) if self.assets is not None else (False,):
            if not self._drain(wait):
                break
        if self.report.copied:
            with self.conn.transaction():
                store.copied_now(self.conn, self.mirror.name)
        return self._end()

    def _end(self) -> Report:
        if self.assets is not None:
            self.report.missing = store.missing(self.conn, self.mirror.name, self.assets)
        self._log_end()
        return self.report

    def _drain(self, wait: bool) -> bool:
        """Copy claimable files one by one; False when the destination stopped taking them."""
        while True:
            stopped = False
            with self.conn.transaction():
                job = store.claim(self.conn, self.mirror.name, self.tried, self.assets,
                                  wait=wait)
                if job is None:
                    return True
                try:
                    self._one(job)
                except _StopDestination:
                    stopped = True  # leave the block normally: its row updates commit
            if stopped:
                return False
            self._progress()

    def _one(self, job: store.Job) -> None:
        """Copy one file; its row is updated in the caller's (claiming) transaction."""
        try:
            handle = open_destination(self.mirror, create_marker=False)
        except Unavailable as exc:
            self._stop_unavailable(job, exc)
        try:
            result = self._copy(handle, job)
        except SourceError as exc:
            self._fail(job, f"the library's copy cannot be read: {exc.strerror or exc}")
            return
        except DestinationFull as exc:
            self._later(job, str(exc.strerror), count=False)
            self.report.deferred += 1
            self.report.reason = f"destination full: {exc.strerror}"
            raise _StopDestination from exc
        except (OSError, VerifyError) as exc:
            self._transient(job, exc)
            return
        finally:
            handle.close()
        if result in ("copied", "adopted"):
            store.done(self.conn, job, result)
            setattr(self.report, result, getattr(self.report, result) + 1)
            self.report.bytes += job.size if result == "copied" else 0
        else:
            self._fail(job, result)

    def _copy(self, handle: Handle, job: store.Job) -> str:
        """'copied', 'adopted', or the reason the file cannot be mirrored."""
        target = handle.path(job.library_path)
        if os.path.lexists(target):  # from a run that died before its row was written
            return self._adopt(target, job)
        source = os.path.join(self.library, job.library_path.encode())
        copied = copy_to_temp(source, handle.incoming, expected_size=job.size,
                              buffer_size=self.cfg.ingest.buffer_size,
                              verify=self.mirror.verify)
        if copied.sha1 != job.sha1:
            discard(copied.temp)
            return ("the library's copy does not match its catalogued SHA-1 (bit rot?); not "
                    "mirrored - run `photo-ingest verify --destination library`")
        try:
            ensure_dir(handle.root, os.path.dirname(job.library_path).encode())
            link_into_place(copied.temp, target)
        except FileExistsError:
            discard(copied.temp)
            return self._adopt(target, job)
        except BaseException:
            discard(copied.temp)
            raise
        return "copied"

    def _adopt(self, target: bytes, job: store.Job) -> str:
        sha1, size = hash_file(target, self.cfg.ingest.buffer_size)
        if sha1 == job.sha1 and size == job.size:
            return "adopted"
        return (f"{self.mirror.path}/{job.library_path} already holds a different file; "
                "left alone (move it away, then `photo-ingest mirror --retry-failed`)")

    def _transient(self, job: store.Job, exc: Exception) -> None:
        """A destination error on one file: gone (stop), or a bad file (count it)."""
        try:
            open_destination(self.mirror, create_marker=False).close()
        except Unavailable as gone:
            self._stop_unavailable(job, gone)
        text = str(exc) if isinstance(exc, VerifyError) else \
            f"writing to the mirror failed: {getattr(exc, 'strerror', None) or exc}"
        if job.attempts + 1 >= store.MAX_ATTEMPTS:
            self._fail(job, f"{text} (after {job.attempts + 1} attempts)")
        else:
            self._later(job, text, count=True)
            self.report.deferred += 1
            self._note(job, text)

    def _later(self, job: store.Job, error: str, *, count: bool) -> None:
        store.retry_later(self.conn, job, error, count=count)
        self.tried.append(job.id)

    def _fail(self, job: store.Job, reason: str) -> None:
        store.failed(self.conn, job, reason)
        self.report.failed += 1
        self._note(job, reason)
        log.warning("mirror %s: failed: %s: %s", self.mirror.name, job.library_path, reason)

    def _note(self, job: store.Job, text: str) -> None:
        if len(self.report.errors) < MAX_ERRORS_SHOWN:
            self.report.errors.append(f"{job.library_path}: {text}")

    def _stop_unavailable(self, job: store.Job, exc: Unavailable) -> NoReturn:
        self._later(job, f"destination unavailable: {exc.strerror}", count=False)
        self._unavailable(exc)
        raise _StopDestination from exc

    def _unavailable(self, exc: Unavailable) -> None:
        self.report.available = False
        self.report.reason = str(exc.strerror)
        with self.conn.transaction():
            store.seen(self.conn, self.mirror.name, False, self.report.reason)
        log.warning("mirror %s unavailable: %s; its files stay pending", self.mirror.name,
                    self.report.reason)

    def _progress(self) -> None:
        if time.monotonic() - self.last_log >= PROGRESS_SECONDS:
            r = self.report
            log.info("mirror %s: %d copied, %d already there, %d failed so far", r.name,
                     r.copied, r.adopted, r.failed)
            self.last_log = time.monotonic()

    def _log_end(self) -> None:
        r = self.report
        log.info("mirror %s: %d copied (%d bytes), %d already there, %d failed, %d retried "
                 "later%s", r.name, r.copied, r.bytes, r.adopted, r.failed, r.deferred,
                 f"; stopped: {r.reason}" if r.reason else "")
