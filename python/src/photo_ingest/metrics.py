"""Prometheus metrics for the oneshot jobs, written as node-exporter textfiles.

A oneshot has no process to scrape, so after each run it writes its metrics to the
textfile collector's folder, atomically (write a temp file, rename). The figures come from
the catalog, not from the run: counters stay monotonic across runs and hosts, and a
textfile written by any station tells the whole truth.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from photo_ingest.config import Config
from photo_ingest.ingest.sessions import failure_class

log = logging.getLogger(__name__)


class IngestCollector(Collector):
    """Ingest figures from the catalog: files by outcome, bytes, sessions, last success."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def collect(self) -> Iterator[Metric]:
        yield from self._files()
        yield from self._sessions()
        yield from self._cards()
        yield from self._library()

    def _files(self) -> Iterator[Metric]:
        files = CounterMetricFamily("photo_ingest_ingest_files", "Files seen by ingest "
                                    "sessions, by outcome", labels=["outcome"])
        for row in self.conn.execute(
            "SELECT outcome, count(*) AS n FROM session_files GROUP BY outcome"
        ):
            files.add_metric([row["outcome"]], row["n"])
        yield files
        failed = CounterMetricFamily("photo_ingest_ingest_failed_files", "Files that failed "
                                     "to ingest, by reason class", labels=["reason"])
        by_class: dict[str, int] = {}
        for row in self.conn.execute(
            "SELECT reason, count(*) AS n FROM session_files WHERE outcome = 'failed'"
            " GROUP BY reason"
        ):
            key = failure_class(row["reason"])
            by_class[key] = by_class.get(key, 0) + row["n"]
        for reason, n in sorted(by_class.items()):
            failed.add_metric([reason], n)
        yield failed
        skipped = CounterMetricFamily("photo_ingest_ingest_skipped_files", "Files skipped by "
                                      "ingest, by reason", labels=["reason"])
        for row in self.conn.execute(
            "SELECT split_part(reason, ':', 1) AS reason, count(*) AS n FROM session_files"
            " WHERE outcome = 'skipped' GROUP BY 1 ORDER BY 1"
        ):
            skipped.add_metric([row["reason"]], row["n"])
        yield skipped

    def _sessions(self) -> Iterator[Metric]:
        row = self.conn.execute(
            "SELECT coalesce(sum(bytes_copied), 0)::bigint AS bytes FROM ingest_sessions"
        ).fetchone()
        assert row is not None
        yield CounterMetricFamily("photo_ingest_ingest_bytes", "Bytes copied into the "
                                  "library", value=row["bytes"])
        sessions = CounterMetricFamily("photo_ingest_ingest_sessions", "Ingest sessions by "
                                       "final status", labels=["status"])
        for r in self.conn.execute(
            "SELECT status, count(*) AS n FROM ingest_sessions GROUP BY status ORDER BY status"
        ):
            sessions.add_metric([r["status"]], r["n"])
        yield sessions
        last = self.conn.execute(
            "SELECT extract(epoch FROM ended_at)::float8 AS ended,"
            " extract(epoch FROM ended_at - started_at)::float8 AS duration, bytes_copied"
            " FROM ingest_sessions WHERE status = 'completed' ORDER BY ended_at DESC LIMIT 1"
        ).fetchone()
        if last is not None:
            yield GaugeMetricFamily("photo_ingest_ingest_last_success_timestamp_seconds",
                                    "When the last completed ingest session ended",
                                    value=last["ended"])
            yield GaugeMetricFamily("photo_ingest_ingest_last_session_duration_seconds",
                                    "Duration of the last completed ingest session",
                                    value=last["duration"])
            rate = last["bytes_copied"] / last["duration"] if last["duration"] else 0.0
            yield GaugeMetricFamily("photo_ingest_ingest_last_session_throughput_bytes_per_"
                                    "second", "Bytes copied per second by the last completed"
                                    " ingest session", value=rate)

    def _cards(self) -> Iterator[Metric]:
        """Per card (label, else UUID): sessions, files copied, when last seen."""
        sessions = CounterMetricFamily("photo_ingest_ingest_card_sessions", "Ingest sessions "
                                       "per card", labels=["card"])
        copied = CounterMetricFamily("photo_ingest_ingest_card_files", "Files copied from "
                                     "each card", labels=["card"])
        seen = GaugeMetricFamily("photo_ingest_ingest_card_last_session_timestamp_seconds",
                                 "When each card's last session started", labels=["card"])
        for r in self.conn.execute(
            "SELECT coalesce(card_label, card_uuid) AS card, count(*) AS n,"
            " sum(files_copied)::bigint AS copied,"
            " extract(epoch FROM max(started_at))::float8 AS last"
            " FROM ingest_sessions WHERE coalesce(card_label, card_uuid) IS NOT NULL"
            " GROUP BY 1 ORDER BY 1"
        ):
            sessions.add_metric([r["card"]], r["n"])
            copied.add_metric([r["card"]], r["copied"])
            seen.add_metric([r["card"]], r["last"])
        yield sessions
        yield copied
        yield seen

    def _library(self) -> Iterator[Metric]:
        assets = GaugeMetricFamily("photo_ingest_library_assets", "Assets in the library",
                                   labels=["media_type"])
        size = GaugeMetricFamily("photo_ingest_library_bytes", "Bytes of assets in the "
                                 "library", labels=["media_type"])
        for r in self.conn.execute(
            "SELECT media_type, count(*) AS n, coalesce(sum(size), 0)::bigint AS bytes"
            " FROM assets GROUP BY media_type ORDER BY media_type"
        ):
            assets.add_metric([r["media_type"]], r["n"])
            size.add_metric([r["media_type"]], r["bytes"])
        yield assets
        yield size


def write_textfile(directory: Path, job: str, *collectors: Collector) -> Path:
    """Write JOB's metrics to DIRECTORY/photo_ingest_JOB.prom, atomically."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"photo_ingest_{job}.prom"
    # node_exporter runs as another user: the file must be world-readable even under a
    # unit's UMask=0077, and already so when the rename makes it visible.
    old_umask = os.umask(0o022)
    try:
        write_to_textfile(os.fspath(path), registry)
    finally:
        os.umask(old_umask)
    return path


class MetadataCollector(Collector):
    """The metadata job from the catalog: records by status, backlog, last success."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def collect(self) -> Iterator[Metric]:
        row = self.conn.execute(
            "SELECT count(*) FILTER (WHERE m.asset_id IS NULL) AS backlog,"
            " count(*) FILTER (WHERE m.status = 'ok') AS ok,"
            " count(*) FILTER (WHERE m.status = 'failed') AS failed,"
            " extract(epoch FROM max(m.extracted_at) FILTER (WHERE m.status = 'ok'))::float8"
            "   AS last FROM assets a LEFT JOIN asset_metadata m ON m.asset_id = a.id"
        ).fetchone()
        assert row is not None
        yield GaugeMetricFamily("photo_ingest_metadata_backlog_assets", "Assets without a "
                                "metadata record", value=row["backlog"])
        records = GaugeMetricFamily("photo_ingest_metadata_assets", "Assets with a metadata "
                                    "record, by status", labels=["status"])
        records.add_metric(["ok"], row["ok"])
        records.add_metric(["failed"], row["failed"])
        yield records
        if row["last"] is not None:
            yield GaugeMetricFamily("photo_ingest_metadata_last_success_timestamp_seconds",
                                    "When an asset's metadata was last extracted",
                                    value=row["last"])


def refresh_textfile(cfg: Config, job: str) -> None:
    """Refresh JOB's node-exporter textfile from the catalog, if configured; a failure here
    is only logged (metrics never fail the job they describe)."""
    if cfg.metrics.textfile_dir is None:
        return
    from photo_ingest import catalog
    from photo_ingest.mirror.metrics import MirrorCollector, VerifyCollector
    from photo_ingest.notify.metrics import NotifyCollector

    collectors: dict[str, Callable[[Any], Collector]] = {
        "ingest": IngestCollector, "metadata": MetadataCollector, "mirror": MirrorCollector,
        "verify": VerifyCollector, "notify": NotifyCollector}
    try:
        with catalog.connect(cfg.database.conninfo()) as conn:
            write_textfile(cfg.metrics.textfile_dir, job, collectors[job](conn))
    except (OSError, catalog.CatalogError) as exc:
        log.warning("could not write metrics to %s: %s", cfg.metrics.textfile_dir, exc)
