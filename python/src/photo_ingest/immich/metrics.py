"""Prometheus metrics of the sync service, served on /metrics (prometheus-client).

Every metric lives in the service's own registry, so tests can build several services in
one process and nothing of the client library's process defaults leaks in by accident.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from photo_ingest.immich.client import Observer

log = logging.getLogger("photo_ingest.immich")

# Upload latency spans milliseconds (an early duplicate) to minutes (a large video).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
           120.0, 300.0, 600.0)


class SyncMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.assets = Counter(
            "photo_ingest_immich_assets", "Assets that reached a state in Immich, by result "
            "(uploaded, duplicate, scanned, trashed, skipped, failed) and reason class",
            ["result", "reason"], registry=r)
        self.bytes = Counter("photo_ingest_immich_upload_bytes",
                             "Bytes of assets and sidecars uploaded to Immich", registry=r)
        self.requests = Histogram(
            "photo_ingest_immich_request_duration_seconds",
            "Immich API requests by operation and outcome (HTTP status, error, unreachable)",
            ["operation", "outcome"], buckets=BUCKETS, registry=r)
        self.throttled = Counter("photo_ingest_immich_throttled",
                                 "Back-pressure answers (429, 503) from Immich", ["status"],
                                 registry=r)
        self.retries = Counter("photo_ingest_immich_asset_retries",
                               "Assets put back for a later attempt after a transient error",
                               registry=r)
        self.concurrency = Gauge("photo_ingest_immich_upload_concurrency",
                                 "Current limit of concurrent uploads (lowered by "
                                 "back-pressure)", registry=r)
        self.backlog = Gauge("photo_ingest_immich_backlog_assets",
                             "Catalogued assets not yet in Immich (pending, incl. retries)",
                             registry=r)
        self.problems = Gauge("photo_ingest_immich_problem_assets",
                              "Assets in a final state that is not done", ["state"],
                              registry=r)
        self.last_success = Gauge("photo_ingest_immich_last_success_timestamp_seconds",
                                  "Unix time an asset last reached Immich", registry=r)
        self.last_pass = Gauge("photo_ingest_immich_last_pass_timestamp_seconds",
                               "Unix time the last sync pass ended without a pass-level error",
                               registry=r)
        self.up = Gauge("photo_ingest_immich_up",
                        "1 when the last contact with Immich worked, else 0", registry=r)
        for state in ("trashed", "skipped", "failed"):
            self.problems.labels(state)

    def observer(self) -> Observer:
        return Observer(
            request=lambda op, outcome, s: self.requests.labels(op, outcome).observe(s),
            throttled=lambda status: self.throttled.labels(str(status)).inc(),
            concurrency=self.concurrency.set,
            bytes_sent=self.bytes.inc,
        )

    def counted(self, result: str, reason: str = "", n: int = 1) -> None:
        if n:
            self.assets.labels(result, reason).inc(n)

    def serve(self, address: tuple[str, int]) -> Any:
        """Start the /metrics HTTP server in a thread; returns an object with shutdown()."""
        server, thread = start_http_server(address[1], address[0], registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", address[0], server.server_port)
        return _Server(server, thread)


class _Server:
    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
