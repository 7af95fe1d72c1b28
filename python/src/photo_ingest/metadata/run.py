"""`photo-ingest extract`: every asset without a current metadata record gets one.

Each worker is one exiftool process and two threads, so that exiftool never waits for the
database: the reader thread claims a batch and has exiftool read it, the loader thread
normalises the previous batch in DuckDB and loads it into PostgreSQL. A batch is one
transaction from claim to commit, on one of the worker's two connections; that also bounds
the batches in flight to two per worker.

Every claimed asset ends with a record, ok or failed, or its transaction is rolled back and
the run stops: nothing is claimed twice in a run, so a run always ends.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from photo_ingest import catalog
from photo_ingest.config import Config, ConfigError
from photo_ingest.metadata import backlog, load
from photo_ingest.metadata.backlog import EXTRACT, NORMALISE, Claimed, Retries, Versions
from photo_ingest.metadata.extractor import ExifReader, ExifToolUnavailable, Reading
from photo_ingest.metadata.normalise import Database, Document, Normaliser, Settings

log = logging.getLogger(__name__)

MAX_LISTED_FAILURES = 1000
MIN_TAIL_BATCH = 50  # smaller ones cost more in DuckDB's fixed time per batch than they save


class LibraryUnavailable(ExifToolUnavailable):
    """The library folder is missing; like a missing exiftool, the job cannot start."""


@dataclass(frozen=True)
class Options:
    workers: int
    batch_size: int
    limit: int | None = None        # at most this many assets in this run
    retry_failed: bool = False
    log_every: float = 10.0


@dataclass
class Summary:
    status: str = "completed"       # completed | stopped | failed
    pending_before: int = 0
    extracted: int = 0              # assets whose files exiftool read
    refreshed: int = 0              # records normalised again from their stored output
    ok: int = 0
    failed: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    pending_after: int | None = 0   # None: the catalog could not be asked at the end
    workers: int = 0
    batch_size: int = 0
    seconds: float = 0.0
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        done = self.extracted + self.refreshed
        return {"status": self.status, "pending_before": self.pending_before,
                "extracted": self.extracted, "refreshed": self.refreshed, "ok": self.ok,
                "failed": self.failed, "pending_after": self.pending_after,
                "workers": self.workers, "batch_size": self.batch_size,
                "duration_seconds": round(self.seconds, 3),
                "files_per_second": round(done / self.seconds, 1) if self.seconds else 0.0,
                "error": self.error, "failures": self.failures}


@dataclass
class _Job:
    conn: psycopg.Connection[Any]
    claimed: list[Claimed]
    facts: list[load.Fact]
    reading: Reading | None = None
    documents: list[Document] = field(default_factory=list)


@dataclass
class _Worker:
    reader: ExifReader
    conns: list[psycopg.Connection[Any]]
    pool: queue.Queue[psycopg.Connection[Any]]
    jobs: queue.Queue[_Job | None] = field(default_factory=queue.Queue)
    cursor: int = 0
    threads: list[threading.Thread] = field(default_factory=list)


class Extraction:
    """One run of the metadata job."""

    def __init__(self, cfg: Config, options: Options,
                 stop: threading.Event | None = None) -> None:
        self.cfg, self.options = cfg, options
        self.stop = stop or threading.Event()
        self.library = str(cfg.library.path)
        try:
            self.settings = Settings.from_config(cfg)
        except ValueError as exc:
            raise ConfigError(f"metadata.timezone: {exc}") from exc
        self.versions = Versions(self.settings.fingerprint())
        self.duckdb = Database(self.settings)  # created by the first loader that needs it
        self.summary = Summary(batch_size=options.batch_size)
        self._lock = threading.Lock()
        self._budget = options.limit
        self._retries = Retries()
        self._todo = self._claimed = 0
        self._workers = 1

    def run(self) -> Summary:
        started = time.monotonic()
        conninfo = self.cfg.database.conninfo()
        with catalog.connect(conninfo) as conn:
            self._retries = backlog.retries(conn, self.library,
                                            retry_all=self.options.retry_failed)
            todo = backlog.pending(conn, self.versions, self._retries)
            self.summary.pending_before = todo[EXTRACT] + todo[NORMALISE]
            if self.summary.pending_before and not self.stop.is_set():
                if not os.path.isdir(self.library):  # unmounted, or a wrong library.path:
                    raise LibraryUnavailable(        # not a reason to fail every asset
                        f"the library {self.library} is not there (not mounted?)")
                self._work(conninfo)
            self.summary.pending_after = self._pending_after(conn)
        self.summary.seconds = time.monotonic() - started
        if self.summary.status == "completed" and self.stop.is_set():
            self.summary.status = "stopped"
        return self.summary

    def _pending_after(self, conn: psycopg.Connection[Any]) -> int | None:
        try:
            return sum(backlog.pending(conn, self.versions).values())
        except psycopg.Error:  # the run already says what went wrong; this is a bonus
            return None

    # --- the workers --------------------------------------------------------------------

    def _work(self, conninfo: str) -> None:
        todo = min(self.summary.pending_before, self.options.limit or math.inf)
        workers = max(1, min(self.options.workers, math.ceil(todo / self.options.batch_size)))
        # small backlogs are spread over all workers rather than queued behind one
        self.batch_size = max(1, min(self.options.batch_size, math.ceil(todo / workers)))
        self.summary.workers, self.summary.batch_size = workers, self.batch_size
        self._todo, self._workers = int(todo), workers
        log.info("metadata: %d assets to do, %d %s, batches of %d", todo, workers,
                 "worker" if workers == 1 else "workers", self.batch_size)
        crew: list[_Worker] = []
        try:
            for _ in range(workers):  # each starts work while the next exiftool starts up
                w = self._worker(conninfo)
                crew.append(w)
                w.threads = [threading.Thread(target=self._guard, args=(f, w), daemon=True)
                             for f in (self._read_loop, self._load_loop)]
                for t in w.threads:
                    t.start()
            self._wait(crew, int(todo))
        finally:
            for w in crew:
                w.reader.close()
                for conn in w.conns:  # closing rolls back what a failed thread left open
                    conn.close()
            self.duckdb.close()

    def _worker(self, conninfo: str) -> _Worker:
        reader = ExifReader(self.cfg.ingest.exiftool, self.cfg.metadata.timeout).start()
        try:
            conns = [catalog.connect(conninfo, autocommit=False) for _ in range(2)]
        except BaseException:
            reader.close()
            raise
        pool: queue.Queue[psycopg.Connection[Any]] = queue.Queue()
        for conn in conns:
            pool.put(conn)
        return _Worker(reader, conns, pool)

    def _wait(self, crew: list[_Worker], todo: int) -> None:
        started = last = time.monotonic()
        while any(t.is_alive() for w in crew for t in w.threads):
            for w in crew:
                for t in w.threads:
                    t.join(timeout=0.2)
            now = time.monotonic()
            if now - last >= self.options.log_every:
                done = self.summary.extracted + self.summary.refreshed
                log.info("metadata: %d of %d done, %.0f files/s", done, todo,
                         done / (now - started))
                last = now

    def _guard(self, loop: Callable[[_Worker], None], w: _Worker) -> None:
        try:
            loop(w)
        except BaseException as exc:  # every thread's failure ends the run, and is told
            log.error("metadata: %s", exc, exc_info=not isinstance(exc, psycopg.Error))
            with self._lock:
                self.summary.status = "failed"
                self.summary.error = self.summary.error or str(exc).strip().splitlines()[0]
            self.stop.set()

    def _read_loop(self, w: _Worker) -> None:
        try:
            while not self.stop.is_set():
                conn = w.pool.get()
                job = self._next_job(w, conn)
                if job is None:
                    conn.rollback()
                    w.pool.put(conn)
                    return
                w.jobs.put(job)
        finally:
            w.jobs.put(None)

    def _next_job(self, w: _Worker, conn: psycopg.Connection[Any]) -> _Job | None:
        while not self.stop.is_set():
            size = self._take(self._size())
            if size == 0:
                return None
            after = w.cursor
            w.cursor, claimed = backlog.claim(conn, self.versions, self._retries,
                                              after=after, limit=size)
            self._take(len(claimed) - size)  # give back what was not claimed
            self._claimed_more(len(claimed))
            if claimed:
                return self._read(w, conn, claimed)
            if w.cursor == after:  # nothing left to lock (what others hold, they will do)
                return None
            # all it locked had been done by others meanwhile: claim again, further on
        return None

    def _size(self) -> int:
        """The next batch's size: full while much is left, then a worker's share of what is
        left (guided self-scheduling), so that the workers finish together and the last
        load, which nothing overlaps, is short."""
        with self._lock:
            left = self._todo - self._claimed
        return max(min(self.batch_size, MIN_TAIL_BATCH),
                   min(self.batch_size, math.ceil(left / self._workers)))

    def _take(self, n: int) -> int:
        """Up to N assets of the --limit budget (N < 0 gives back)."""
        with self._lock:
            if self._budget is None:
                return max(n, 0)
            granted = min(n, self._budget)
            self._budget -= granted
            return granted

    def _claimed_more(self, n: int) -> None:
        with self._lock:
            self._claimed += n

    def _read(self, w: _Worker, conn: psycopg.Connection[Any], claimed: list[Claimed]) -> _Job:
        """Stat the files, have exiftool read them; facts for everything else."""
        files: dict[str, tuple[int, bool, int]] = {}   # path -> asset id, sidecar?, seq
        seen = _Seen()
        for c in claimed:
            if c.work != EXTRACT:
                continue
            path = os.path.join(self.library, c.library_path)
            st, why = _stat(path)
            if st is None:
                seen.errors[c.asset_id] = f"cannot read the library file: {why}"
                continue
            seen.stats[c.asset_id] = st
            files[path] = (c.asset_id, False, 0)
            for seq, s in enumerate(c.sidecars, 1):
                side = os.path.join(self.library, s.library_path)
                if _stat(side)[0] is None:
                    seen.warn(c.asset_id, f"sidecar {s.library_path} is missing")
                else:
                    files[side] = (c.asset_id, True, seq)
        reading = w.reader.read(list(files)) if files else None
        for path, why in (reading.failures.items() if reading else ()):
            asset_id, sidecar, _ = files[path]
            if sidecar:
                seen.warn(asset_id, f"sidecar {os.path.relpath(path, self.library)}: {why}")
            else:
                seen.errors[asset_id] = why
        documents = [Document(name, *files[path])
                     for name, path in (reading.names.items() if reading else ())]
        return _Job(conn, claimed, seen.facts(claimed), reading, documents)

    def _load_loop(self, w: _Worker) -> None:
        normaliser = None
        try:
            normaliser = Normaliser(self.duckdb)
            while (job := w.jobs.get()) is not None:
                try:
                    if self.summary.status == "failed":
                        job.conn.rollback()  # the run is over: release the claim
                        continue
                    written = self._load(normaliser, job)
                    job.conn.commit()
                    self._account(job, written)
                except BaseException:
                    _rollback(job.conn)
                    raise
                finally:
                    w.pool.put(job.conn)  # the reader may be waiting for it
        except BaseException:
            self._drain(w)  # so that the reader, told to stop, is not left waiting
            raise
        finally:
            if normaliser is not None:
                normaliser.close()

    def _load(self, normaliser: Normaliser, job: _Job) -> list[load.Written]:
        if job.reading is not None:
            normaliser.add_read(job.reading, job.documents)
        normaliser.add_stored([(c.asset_id, *c.stored) for c in job.claimed
                               if c.work == NORMALISE and c.stored is not None])
        return load.load(job.conn, normaliser.write_csv(), job.facts, self.versions)

    def _drain(self, w: _Worker) -> None:
        """After the loader failed: release every batch still queued."""
        self.stop.set()
        while (job := w.jobs.get()) is not None:
            _rollback(job.conn)
            w.pool.put(job.conn)

    def _account(self, job: _Job, written: list[load.Written]) -> None:
        paths = {c.asset_id: c.library_path for c in job.claimed}
        work = {c.asset_id: c.work for c in job.claimed}
        with self._lock:
            s = self.summary
            for r in written:
                if work[r.asset_id] == EXTRACT:
                    s.extracted += 1
                else:
                    s.refreshed += 1
                if r.status == "ok":
                    s.ok += 1
                    continue
                s.failed += 1
                log.warning("metadata failed: %s: %s", paths[r.asset_id], r.error)
                if len(s.failures) < MAX_LISTED_FAILURES:
                    s.failures.append({"asset_id": r.asset_id,
                                       "library_path": paths[r.asset_id], "error": r.error})


@dataclass
class _Seen:
    """What the reader found out about a batch's files besides exiftool's output."""

    stats: dict[int, os.stat_result] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)     # the asset's own file
    warnings: dict[int, list[str]] = field(default_factory=dict)

    def warn(self, asset_id: int, text: str) -> None:
        self.warnings.setdefault(asset_id, []).append(text)

    def facts(self, claimed: list[Claimed]) -> list[load.Fact]:
        out = []
        for c in claimed:
            st = self.stats.get(c.asset_id)
            out.append(load.Fact(
                c.asset_id, c.work, self.errors.get(c.asset_id),
                "; ".join(self.warnings.get(c.asset_id, [])) or None,
                st.st_size if st else None, backlog.file_mtime(st) if st else None,
                sorted(s.id for s in c.sidecars)))
        return out


def _stat(path: str) -> tuple[os.stat_result | None, str]:
    try:
        st = os.stat(path)
    except OSError as exc:
        return None, exc.strerror or str(exc)
    if not stat.S_ISREG(st.st_mode):
        return None, "not a regular file"
    return st, ""


def _rollback(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):  # the connection is gone; so is its transaction
        conn.rollback()
