"""Prometheus metrics of the watcher, written as a node-exporter textfile
(photo_ingest_watch.prom in metrics.textfile_dir) while it runs.

The totals count what this process did (a restart starts them again, which Prometheus'
rate() and increase() handle); the gauges are the present state.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)

WRITE_EVERY = 5.0  # seconds: the textfile is rewritten at most this often


class WatchMetrics:
    def __init__(self, textfile_dir: Path | None = None) -> None:
        self.textfile_dir = textfile_dir
        self.registry = r = CollectorRegistry()
        self.seen = Counter("photo_ingest_watch_files_seen", "Files found complete in a "
                            "watched folder and handed to the ingest", ["watch"], registry=r)
        self.ingested = Counter("photo_ingest_watch_files_ingested", "Watched files by "
                                "ingest outcome (copied, duplicate, skipped, failed)",
                                ["watch", "outcome"], registry=r)
        self.archived = Counter("photo_ingest_watch_files_archived", "Source files moved to "
                                "the archive folder after a verified ingest", ["watch"],
                                registry=r)
        self.deleted = Counter("photo_ingest_watch_files_deleted", "Source files deleted "
                               "after a verified ingest", ["watch"], registry=r)
        self.pending = Gauge("photo_ingest_watch_files_pending", "Files waiting to become "
                             "stable (still being written, or not quiet long enough)",
                             ["watch"], registry=r)
        self.waiting = Gauge("photo_ingest_watch_files_waiting", "Ingested files whose "
                             "archive or delete is still to do (e.g. waiting for Immich)",
                             ["watch"], registry=r)
        self.folders = Gauge("photo_ingest_watch_folders", "Folders being watched",
                             registry=r)
        self.last_ingest = Gauge("photo_ingest_watch_last_ingest_timestamp_seconds",
                                 "When a watched folder's last batch was ingested", ["watch"],
                                 registry=r)
        self.up = Gauge("photo_ingest_watch_up", "1 while the watcher runs", registry=r)
        self._written = 0.0
        self._dirty = True

    def add_watch(self, name: str) -> None:
        """Make every series of NAME exist from the start (at 0)."""
        for family in (self.seen, self.archived, self.deleted, self.pending, self.waiting):
            family.labels(name)
        for outcome in ("copied", "duplicate", "skipped", "failed"):
            self.ingested.labels(name, outcome)

    def changed(self) -> None:
        self._dirty = True

    def write(self, force: bool = False) -> None:
        """Refresh the textfile, if configured and due; a failure is only logged."""
        if self.textfile_dir is None or not (self._dirty or force):
            return
        if not force and time.monotonic() - self._written < WRITE_EVERY:
            return
        from photo_ingest.metrics import write_textfile

        try:
            write_textfile(self.textfile_dir, "watch", self.registry)
        except OSError as exc:
            log.warning("could not write metrics to %s: %s", self.textfile_dir, exc)
        self._written = time.monotonic()
        self._dirty = False
