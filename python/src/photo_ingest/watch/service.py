"""The watcher: one process for every watched folder.

Events come from watchdog's inotify observer (recursive; new subfolders are watched as
they appear) through a queue; the main thread keeps each folder's candidates (stability.py),
ingests the ready ones in batches through the ingest pipeline's FileSession, and runs the
after-step (after.py). It sleeps until an event arrives or the next candidate may be ready
— no polling of the folders. A session stays open while files keep arriving and is closed
after SESSION_QUIET seconds without any, so 500 photos from a phone make a few sessions,
not 500, and never one that lasts for ever.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

from photo_ingest import catalog
from photo_ingest.config import Config
from photo_ingest.ingest.layout import display
from photo_ingest.ingest.pipeline import FileSession, Summary
from photo_ingest.ingest.sessions import Card
from photo_ingest.ingest.stops import Stopped
from photo_ingest.notify.send import Notifications
from photo_ingest.notify.session import folder_message
from photo_ingest.report import IngestReporter
from photo_ingest.sdnotify import Notifier
from photo_ingest.watch import store
from photo_ingest.watch.after import After
from photo_ingest.watch.config import WatchConfig
from photo_ingest.watch.metrics import WatchMetrics
from photo_ingest.watch.stability import Tracker, ignored, open_for_writing

log = logging.getLogger(__name__)

SESSION_QUIET = 60.0     # close a folder's session after this long without new files
BATCH_WAIT = 30.0        # ingest ready files after this long even if others still arrive
BATCH_MAX = 500          # … or once this many are ready
IMMICH_RECHECK = 15.0    # wait_for_immich: ask the catalog again this often
RETRY_AFTER = 60.0       # an after-step that must wait (library check failed): again then


# watchdog warns when a new subfolder's watch is set twice (a race it resolves itself).
warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)

_WAKE = FileSystemEvent("")  # put on the queue to end a wait early


class WatchError(RuntimeError):
    """The watcher cannot start: say why."""


@dataclass
class Folder:
    watch: WatchConfig
    root: bytes
    archive: bytes | None
    tracker: Tracker
    after: After
    batch: list[bytes] = field(default_factory=list)
    batch_since: float | None = None
    session: FileSession | None = None
    last_activity: float = 0.0
    after_due: float | None = 0.0  # the after-step's next run (None: nothing to do)

    def wants(self, path: bytes) -> bool:
        """Is PATH one of this folder's possible candidates?"""
        if path != self.root and not path.startswith(self.root + b"/"):
            return False
        if self.archive is not None and (path == self.archive or
                                         path.startswith(self.archive + b"/")):
            return False
        return not ignored(os.path.relpath(path, self.root))


class _Handler(FileSystemEventHandler):
    def __init__(self, events: queue.Queue[FileSystemEvent]) -> None:
        self.events = events

    def dispatch(self, event: FileSystemEvent) -> None:
        self.events.put(event)


class Watcher:
    def __init__(self, cfg: Config, watches: tuple[WatchConfig, ...], *, once: bool = False,
                 notifier: Notifier | None = None, metrics: WatchMetrics | None = None) -> None:
        if not watches:
            raise WatchError("nothing to watch: give folders, or configure [[watch]] tables")
        self.cfg = cfg
        self.once = once
        self.notifier = notifier or Notifier({})
        self.metrics = metrics or WatchMetrics(cfg.metrics.textfile_dir)
        self.library = os.fsencode(os.path.abspath(cfg.library.path))
        self.conn = catalog.connect(cfg.database.conninfo())
        self.folders = [self._folder(w) for w in watches]
        self.events: queue.Queue[FileSystemEvent] = queue.Queue()
        self.stopping = False
        self.in_batch = False
        self.summaries: list[Summary] = []
        self.reporter = IngestReporter(status=self._progress)
        # Read now, like the card unit does: the URL is a credential of the unit.
        self.notes = Notifications.from_config(cfg)

    def _folder(self, w: WatchConfig) -> Folder:
        if not w.path.is_dir():
            raise WatchError(f"watch {w.name}: {w.path} is not a folder (or does not exist)")
        archive = os.fsencode(w.archive_dir) if w.archive_dir is not None else None
        if w.archive_dir is not None:
            try:
                w.archive_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise WatchError(f"watch {w.name}: cannot create the archive folder "
                                 f"{w.archive_dir}: {exc.strerror} (under systemd, create "
                                 "it before the unit starts)") from exc
        self.metrics.add_watch(w.name)
        return Folder(w, os.fsencode(w.path), archive, Tracker(w.stable_seconds),
                      After(self.conn, w, self.library, self.cfg.ingest.buffer_size))

    # --- the loop -------------------------------------------------------------------

    def run(self) -> list[Summary]:
        observer = InotifyObserver()
        handler = _Handler(self.events)
        for f in self.folders:
            observer.schedule(handler, os.fsdecode(f.root), recursive=True)
        observer.start()  # before the catch-up scan: nothing can fall between the two
        started = time.monotonic()
        try:
            for f in self.folders:
                self._after(f)      # finish what a previous run left half done
                self._scan(f, f.root)
            self.metrics.folders.set(len(self.folders))
            self.metrics.up.set(1)
            names = ", ".join(f.watch.name for f in self.folders)
            log.info("watching %d folders (%s)", len(self.folders), names)
            self.notifier.ready(self._status())
            while not self.stopping:
                wake = self._step()
                if self.once and self._caught_up(wake, started):
                    break
                self._wait(wake)
        except Stopped:
            log.info("stopped during an ingest; the rest is taken on the next start")
        finally:
            self.notifier.stopping("stopping")
            observer.stop()
            for f in self.folders:
                self._close_session(f)
            self.metrics.up.set(0)
            self.metrics.write(force=True)
            observer.join(10)
            self.conn.close()
        return self.summaries

    def stop(self) -> None:
        """From a signal handler: finish the current step, then leave. An ingest in
        progress is interrupted (its session says so; the files are taken again)."""
        self.stopping = True
        if self.in_batch:
            raise Stopped("SIGTERM")
        # Wake the loop from its wait on the queue. From a thread: the handler runs in the
        # main thread, which may hold the queue's lock at this very instant.
        threading.Thread(target=self.events.put, args=(_WAKE,), daemon=True).start()

    def _wait(self, wake: float | None) -> None:
        """Sleep until an event arrives or WAKE (monotonic), then take every queued event."""
        timeout = 3600.0 if wake is None else max(0.0, wake - time.monotonic())
        if self.notifier.watchdog_seconds:
            timeout = min(timeout, self.notifier.watchdog_seconds / 3)
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        self._apply(event)
        while True:
            try:
                self._apply(self.events.get_nowait())
            except queue.Empty:
                return

    def _step(self) -> float | None:
        """Route ready files, ingest due batches, run due after-steps; the next wake-up."""
        self.notifier.watchdog()
        now = time.monotonic()
        wakes: list[float] = []
        for f in self.folders:
            ready, due = f.tracker.ready(now)
            writing = open_for_writing(ready) if ready else set()
            for path in ready:
                if path in writing:
                    f.tracker.postpone(path, now)
                    wakes.append(now + f.watch.stable_seconds)
                else:
                    f.tracker.forget(path)
                    self._route(f, path, now)
            if due is not None:
                wakes.append(due)
            if f.batch:
                # --once: files that only an event can make ready (empty, open) are left
                # for the next run; the ready ones need not wait BATCH_WAIT for them
                if (not f.tracker.pending() or len(f.batch) >= BATCH_MAX or self.stopping
                        or (self.once and due is None and not writing)
                        or now - (f.batch_since or now) >= BATCH_WAIT):
                    self._ingest(f)
                    now = time.monotonic()
                else:
                    wakes.append((f.batch_since or now) + BATCH_WAIT)
            if f.after_due is not None and f.after_due <= now and not self.stopping:
                self._after(f)
            if f.after_due is not None:
                wakes.append(f.after_due)
            if f.session is not None:
                if now - f.last_activity >= SESSION_QUIET:
                    self._close_session(f)
                else:
                    wakes.append(f.last_activity + SESSION_QUIET)
            self.metrics.pending.labels(f.watch.name).set(f.tracker.pending())
        self.metrics.write()
        return min(wakes) if wakes else None

    def _caught_up(self, wake: float | None, started: float) -> bool:
        """--once: nothing left that may become ready soon (or waited long enough)."""
        limit = 2 * max(f.watch.stable_seconds for f in self.folders) + 10
        if any(f.batch for f in self.folders):
            return False
        soon = any(f.tracker.ready()[1] is not None for f in self.folders)
        if soon and time.monotonic() - started < limit:
            return False
        left = sum(f.tracker.pending() for f in self.folders)
        if left:
            log.info("%d %s still being written or not quiet yet; left for the next run",
                     left, "file is" if left == 1 else "files are")
        return True

    # --- events ---------------------------------------------------------------------

    def _apply(self, event: FileSystemEvent) -> None:
        if event is _WAKE:
            return
        kind = event.event_type
        src = os.fsencode(event.src_path)
        dest = os.fsencode(event.dest_path) if event.dest_path else b""
        if event.is_directory:
            if kind in ("created", "moved"):
                folder = self._owner(dest or src)
                if folder is not None:
                    self._scan(folder, dest or src)  # files made before its watch was set
            if kind in ("deleted", "moved"):
                for f in self.folders:
                    for path in [p for p in f.tracker.files if p.startswith(src + b"/")]:
                        f.tracker.forget(path)
            return
        if kind == "moved":
            self._on(src, "deleted")
            self._on(dest, "created")
        else:
            self._on(src, kind)

    def _on(self, path: bytes, kind: str) -> None:
        f = self._owner(path)
        if f is None:
            return
        if kind == "opened":
            f.tracker.opened(path)
        elif kind in ("closed", "closed_no_write"):
            f.tracker.closed(path)
        elif kind == "deleted":
            f.tracker.forget(path)
        else:
            f.tracker.touch(path)

    def _owner(self, path: bytes) -> Folder | None:
        return next((f for f in self.folders if f.wants(path)), None)

    def _scan(self, f: Folder, top: bytes) -> None:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if f.wants(os.path.join(dirpath, d)))
            for name in filenames:
                path = os.path.join(dirpath, name)
                if f.wants(path):
                    f.tracker.touch(path)

    # --- ingest ---------------------------------------------------------------------

    def _route(self, f: Folder, path: bytes, now: float) -> None:
        """A ready file: into the batch, unless the catalog says it is dealt with."""
        try:
            st = os.lstat(path)
        except OSError:
            return
        row = store.get(self.conn, path)
        if row is not None and (row.size, row.mtime_ns) == (st.st_size, st.st_mtime_ns):
            if row.state == "kept" and f.watch.after != "leave":  # the policy changed since
                store.finished(self.conn, path, "ingested")
                row = store.get(self.conn, path)
            if row is not None and row.state in store.SETTLED:
                return
            if row is not None and row.state in store.TODO:
                f.after_due = now
                return
        f.batch.append(path)
        f.batch_since = f.batch_since or now
        self.metrics.seen.labels(f.watch.name).inc()

    def _ingest(self, f: Folder) -> None:
        paths, f.batch, f.batch_since = f.batch, [], None
        stats = {}
        for p in paths:
            try:
                stats[p] = os.lstat(p)
            except OSError:
                continue
        if not stats:
            return
        if f.session is None:
            f.session = FileSession(self.cfg, os.fsdecode(f.root), Card(label=f.watch.name),
                                    self.reporter)
            log.info("watch %s: session %d started", f.watch.name, f.session.id)
        session = f.session
        self.in_batch = True
        try:
            outcomes = session.add(list(stats))
        finally:
            self.in_batch = False
        f.last_activity = time.monotonic()
        by_rel = {display(os.path.relpath(p, f.root)): p for p in stats}
        for o in outcomes:
            path = by_rel.get(o.relpath)
            if path is not None:
                self._remember(f, path, stats[path], o.outcome, o.reason, o.sha1, session.id)
        self.metrics.last_ingest.labels(f.watch.name).set(time.time())
        self.metrics.changed()
        if session.ended is not None:  # a fatal problem ended it; the next batch starts anew
            self._ended(f, session.ended)
            f.session = None
            if session.ended.status == "interrupted":
                raise Stopped("SIGTERM")

    def _remember(self, f: Folder, path: bytes, st: os.stat_result, outcome: str,
                  reason: str | None, sha1: bytes | None, session: int) -> None:
        name = f.watch.name
        self.metrics.ingested.labels(name, outcome).inc()
        if outcome in ("copied", "duplicate"):
            state = "kept" if f.watch.after == "leave" else "ingested"
            store.remember(self.conn, path, name, st, state, sha1=sha1, session_id=session)
            if state == "ingested":
                f.after_due = time.monotonic()
        elif outcome == "skipped" and reason and reason.startswith(("vanished", "changed")):
            store.forget(self.conn, path)
            f.tracker.touch(path)  # a changed file is a candidate again
        else:
            store.remember(self.conn, path, name, st, outcome, reason=reason,
                           session_id=session)

    def _close_session(self, f: Folder) -> None:
        if f.session is None:
            return
        summary = f.session.close()
        f.session = None
        self._ended(f, summary)
        c = summary.counts
        log.info("watch %s: session %d %s: %d copied, %d duplicate, %d skipped, %d failed",
                 f.watch.name, summary.session, summary.status, c.copied, c.duplicate,
                 c.skipped, c.failed)

    def _ended(self, f: Folder, summary: Summary) -> None:
        self.summaries.append(summary)
        if self.notes.enabled:
            self.notes.send(folder_message(summary.as_json(), f.watch.name, f.watch.after))

    # --- after-step -----------------------------------------------------------------

    def _after(self, f: Folder) -> None:
        """Archive or delete the ingested files of F that may go now."""
        f.after_due = None
        waiting = 0
        for row in store.todo(self.conn, f.watch.name):
            if self.stopping:
                break
            before = (f.after.archived, f.after.deleted)
            try:
                state = f.after.step(row)
            except OSError as exc:  # a permission, a full disk: stays, tried again later
                log.error("%s: %s %s failed: %s", f.watch.name, f.watch.after,
                          display(row.path), exc.strerror or exc)
                state = "ingested"
            self.metrics.archived.labels(f.watch.name).inc(f.after.archived - before[0])
            self.metrics.deleted.labels(f.watch.name).inc(f.after.deleted - before[1])
            if state == "ingested":
                waiting += 1
        self.metrics.waiting.labels(f.watch.name).set(waiting)
        self.metrics.changed()
        if waiting and not self.once:
            f.after_due = time.monotonic() + (IMMICH_RECHECK if f.watch.wait_for_immich
                                              else RETRY_AFTER)

    # --- systemd ----------------------------------------------------------------------

    def _status(self) -> str:
        pending = sum(f.tracker.pending() for f in self.folders)
        done = sum(s.counts.copied + s.counts.duplicate for s in self.summaries)
        return (f"watching {len(self.folders)} folders: {pending} files pending, "
                f"{done} ingested since start")

    def _progress(self, line: str) -> None:
        self.notifier.send(f"STATUS={line}", "WATCHDOG=1")

    def report(self) -> dict[str, Any]:
        return {"folders": [{"name": f.watch.name, "path": str(f.watch.path),
                             "after": f.watch.after, "pending": f.tracker.pending()}
                            for f in self.folders],
                "sessions": [s.as_json() for s in self.summaries]}
