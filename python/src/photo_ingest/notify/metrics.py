"""Notification and stall figures from the catalog, for the `notify` textfile."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class NotifyCollector(Collector):
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def collect(self) -> Iterator[Metric]:
        sent = CounterMetricFamily("photo_ingest_notify_sent", "Notifications delivered, by "
                                   "event", labels=["event"])
        failed = CounterMetricFamily("photo_ingest_notify_failures", "Notifications that "
                                     "could not be delivered, by event", labels=["event"])
        for r in self.conn.execute(
            "SELECT event, count(*) FILTER (WHERE ok) AS ok,"
            " count(*) FILTER (WHERE NOT ok) AS failed FROM notify_log GROUP BY event"
            " ORDER BY event"
        ):
            sent.add_metric([r["event"]], r["ok"])
            failed.add_metric([r["event"]], r["failed"])
        yield sent
        yield failed
        stalled = GaugeMetricFamily("photo_ingest_notify_backlog_stalled", "1 while a backlog "
                                    "is stalled (as of the last backlog-check)",
                                    labels=["backlog"])
        waiting = GaugeMetricFamily("photo_ingest_notify_backlog_files", "Backlog size at the "
                                    "last backlog-check", labels=["backlog"])
        for r in self.conn.execute(
            "SELECT DISTINCT ON (b.kind) b.kind, b.backlog, coalesce(s.stalled, false)"
            " AS stalled FROM backlog_samples b LEFT JOIN backlog_stalls s ON s.kind = b.kind"
            " ORDER BY b.kind, b.sampled_at DESC"
        ):
            stalled.add_metric([r["kind"]], int(r["stalled"]))
            waiting.add_metric([r["kind"]], r["backlog"])
        yield stalled
        yield waiting
        last = self.conn.execute(
            "SELECT extract(epoch FROM max(sent_at))::float8 AS t FROM notify_log WHERE ok"
        ).fetchone()
        if last is not None and last["t"] is not None:
            yield GaugeMetricFamily("photo_ingest_notify_last_success_timestamp_seconds",
                                    "When a notification was last delivered", value=last["t"])
