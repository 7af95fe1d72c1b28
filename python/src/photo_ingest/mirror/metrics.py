"""Mirror and scrub figures from the catalog, for the `mirror` and `verify` textfiles."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from photo_ingest.mirror import store

KINDS = ("rot", "missing", "unreadable")


class MirrorCollector(Collector):
    """Per mirror: files by state, bytes held, available at the last check, last copy."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def collect(self) -> Iterator[Metric]:
        files = GaugeMetricFamily("photo_ingest_mirror_files", "Library files per mirror, by "
                                  "state (pending includes files not queued yet)",
                                  labels=["destination", "state"])
        size = GaugeMetricFamily("photo_ingest_mirror_bytes", "Bytes verified on each mirror",
                                 labels=["destination"])
        up = GaugeMetricFamily("photo_ingest_mirror_available", "1 if the mirror passed the "
                               "marker check at its last use, else 0",
                               labels=["destination", "required"])
        last = GaugeMetricFamily("photo_ingest_mirror_last_copy_timestamp_seconds",
                                 "When a file was last copied to each mirror",
                                 labels=["destination"])
        for name, t in store.totals(self.conn).items():
            for state in ("copied", "pending", "failed"):
                files.add_metric([name, state], t[state])
            size.add_metric([name], t["bytes"])
            up.add_metric([name, str(t["required"]).lower()], int(bool(t["available"])))
            if t["last_copied_at"] is not None:
                last.add_metric([name], t["last_copied_at"].timestamp())
        yield from (files, size, up, last)


class VerifyCollector(Collector):
    """Per destination: the last finished scrub, what it checked and what it found."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def collect(self) -> Iterator[Metric]:
        when = GaugeMetricFamily("photo_ingest_verify_last_run_timestamp_seconds",
                                 "When the last completed scrub of each destination ended",
                                 labels=["destination"])
        checked = GaugeMetricFamily("photo_ingest_verify_checked_files", "Files checked by "
                                    "the last completed scrub", labels=["destination"])
        findings = GaugeMetricFamily("photo_ingest_verify_findings", "Problems found by the "
                                     "last completed scrub, by kind",
                                     labels=["destination", "kind"])
        duration = GaugeMetricFamily("photo_ingest_verify_last_run_duration_seconds",
                                     "Duration of the last completed scrub",
                                     labels=["destination"])
        for r in self.conn.execute(
            "SELECT DISTINCT ON (destination) destination, checked, rot, missing, unreadable,"
            " extract(epoch FROM ended_at)::float8 AS ended,"
            " extract(epoch FROM ended_at - started_at)::float8 AS duration"
            " FROM verify_runs WHERE status = 'completed'"
            " ORDER BY destination, ended_at DESC"
        ):
            d = r["destination"]
            when.add_metric([d], r["ended"])
            checked.add_metric([d], r["checked"])
            duration.add_metric([d], r["duration"])
            for kind in KINDS:
                findings.add_metric([d, kind], r[kind])
        yield from (when, checked, findings, duration)
