"""The sync: every catalogued asset into Immich exactly once, in its album, with its
Immich id recorded — as a one-off drain (`sync --once`) or a long-running service.

A pass (upload mode):

1. enqueue   a pending `immich_assets` row for every asset that has none (+ Live pairs)
2. check     lease pending rows 5,000 at a time; files whose type the server does not
             take (GET /server/media-types) are *skipped*; the rest go through
             POST /assets/bulk-upload-check: a duplicate is recorded with Immich's id
             (or as *trashed* when it sits in Immich's trash), "accept" marks it checked
3. upload    checked rows are leased a few at a time by a producer and streamed by
             `workers` consumers (POST /assets with x-immich-checksum); Live Photo videos
             go before their stills, which are then linked to them
4. albums    uploaded and duplicate assets are added to their album in batches; an
             asset is *done* only once it is in its album

External-library mode replaces 2-4 by one debounced POST /libraries/{id}/scan.

Failures: transient ones (timeouts, resets, 5xx after the client's own retries) put
the asset back with an exponentially growing delay, up to `max_attempts`, then *failed*;
permanent 4xx answers fail the asset at once with Immich's message; a bad key or a
missing permission stops the pass (nothing else would work either); an unreachable
server releases everything untouched and the service waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from photo_ingest.catalog import CatalogError
from photo_ingest.config import Config, ConfigError
from photo_ingest.immich import store as store_mod
from photo_ingest.immich.albums import Albums, album_name, oldest
from photo_ingest.immich.client import (
    BULK_CHECK_MAX,
    ApiError,
    ImmichClient,
    ImmichError,
    MediaTypes,
    ServerInfo,
    TransientError,
    Unreachable,
    Upload,
    backoff,
    extension,
)
from photo_ingest.immich.config import ImmichConfig
from photo_ingest.immich.metrics import SyncMetrics
from photo_ingest.immich.store import Item, Store
from photo_ingest.sdnotify import Notifier

log = logging.getLogger("photo_ingest.immich")

NOTIFY_CHANNEL = "photo_ingest_assets"   # photo_ingest.ingest.publish sends on it
ALBUM_FLUSH = 1000                       # ids per album add
ALBUM_FLUSH_SECONDS = 2.0
DEFER_SECONDS = 2.0                      # a still waiting for its Live Photo video
NOTIFY_SETTLE = 0.25                     # let a burst of NOTIFYs from one card arrive
FAILURES_KEPT = 50
#: Immich's default exclusion patterns, plus the ingest's folder of partial files
LIBRARY_EXCLUSIONS = ("**/@eaDir/**", "**/._*", "**/#recycle/**", "**/#snapshot/**",
                      "**/.incoming/**")


class SyncError(ImmichError):
    """The sync cannot go on with this server and key (permissions, key, library path)."""


@dataclass
class Summary:
    mode: str
    started: float = field(default_factory=time.monotonic)
    status: str = "completed"        # completed | stopped | failed | unavailable
    uploaded: int = 0
    duplicate: int = 0
    scanned: int = 0
    trashed: int = 0
    skipped: int = 0
    failed: int = 0
    retries: int = 0                 # transient failures put back in the queue
    retrying: int | None = None      # assets still waiting for a retry at the end
    album_added: int = 0
    bytes_uploaded: int = 0
    albums_created: list[str] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    server: dict[str, Any] = field(default_factory=dict)
    pending_after: int | None = None
    failed_total: int | None = None

    def problem(self, item: Item | None, state: str, reason: str, path: str = "") -> None:
        if len(self.problems) < FAILURES_KEPT:
            self.problems.append({"library_path": item.library_path if item else path,
                                  "state": state, "reason": reason})

    def as_json(self) -> dict[str, Any]:
        seconds = time.monotonic() - self.started
        done = self.uploaded + self.duplicate + self.scanned
        return {
            "status": self.status, "mode": self.mode, "server": self.server,
            "duration_seconds": round(seconds, 3),
            "assets": {"uploaded": self.uploaded, "duplicate": self.duplicate,
                       "scanned": self.scanned, "trashed": self.trashed,
                       "skipped": self.skipped, "failed": self.failed,
                       "retrying": self.retrying or 0, "retries": self.retries},
            "album_added": self.album_added, "albums_created": self.albums_created,
            "bytes_uploaded": self.bytes_uploaded,
            "assets_per_second": round(done / seconds, 2) if seconds > 0 else 0.0,
            "mb_per_second": round(self.bytes_uploaded / 1e6 / seconds, 2) if seconds else 0.0,
            "pending_after": self.pending_after, "failed_total": self.failed_total,
            "problems": self.problems, "error": self.error,
        }


def capture_time(captured_at: datetime | None, captured_local: datetime) -> str:
    """ISO 8601 with an offset for Immich's fileCreatedAt: the camera's wall clock with
    the offset the catalog knows (stated by the file, or assumed in ingest.timezone)."""
    if captured_at is not None:
        utc = captured_at.astimezone(UTC).replace(tzinfo=None)
        offset = captured_local - utc
        if abs(offset) <= timedelta(hours=18) and offset.total_seconds() % 60 == 0:
            from datetime import timezone
            return captured_local.replace(tzinfo=timezone(offset)).isoformat(
                timespec="milliseconds")
        return captured_at.astimezone(UTC).isoformat(timespec="milliseconds")
    return captured_local.astimezone().isoformat(timespec="milliseconds")


def required_permissions(icfg: ImmichConfig) -> dict[str, str]:
    """Permission -> why it is needed, for this configuration."""
    need = {"user.read": "to identify the Immich account (GET /api/users/me)"}
    if icfg.mode == "library":
        need |= {"library.read": "to find the external library",
                 "library.create": "to create the external library",
                 "library.update": "to set its import path and start scans"}
    else:
        need["asset.upload"] = "to check for duplicates and upload"
        if icfg.album:
            need |= {"album.read": "to find albums named by immich.album",
                     "album.create": "to create albums named by immich.album",
                     "albumAsset.create": "to add assets to albums"}
    return need


def permission_problems(info: ServerInfo, icfg: ImmichConfig) -> list[str]:
    """What the key lacks for this configuration, one readable line each."""
    problems = [f"{perm} ({why})" for perm, why in required_permissions(icfg).items()
                if not info.has(perm)]
    if icfg.mode == "library" and info.user_id is not None and not info.is_admin:
        problems.append("an admin user's key (Immich lets only admins manage external "
                        "libraries)")
    return problems


def permission_message(info: ServerInfo, icfg: ImmichConfig, problems: Sequence[str]) -> str:
    who = info.user_email or "its user"
    return (f"the Immich API key {info.key_name!r} of {who} is missing: "
            + "; ".join(problems)
            + ". Give the key these permissions in Immich (Account Settings > API Keys), "
              "or make a new key with them.")


class Syncer:
    def __init__(self, cfg: Config, icfg: ImmichConfig, *, workers: int | None = None,
                 retry_failed: bool = False, metrics: SyncMetrics | None = None,
                 notifier: Notifier | None = None, api_key: str | None = None,
                 backoff_base: float | None = None) -> None:
        if not icfg.enabled:
            raise ConfigError("immich.url: not set, so there is nothing to sync to")
        self.cfg = cfg
        self.icfg = icfg
        self.workers = workers or icfg.workers
        self.retry_failed = retry_failed
        self.metrics = metrics or SyncMetrics()
        self.notifier = notifier or Notifier({})
        self._api_key = api_key
        self._backoff_base = backoff_base
        self.summary = Summary(icfg.mode)
        self.library = Path(cfg.library.path)
        self.stopping = False
        self.store: Store | None = None
        # One lease owner for the life of the process: after a lost catalog connection the
        # new connection can hand back the leases the old one held (see _connect).
        self._owner = store_mod.worker_id()
        self._leases_orphaned = False
        self.client: ImmichClient | None = None
        self.info: ServerInfo | None = None
        self.media: MediaTypes | None = None
        self.library_id: str | None = None
        self._albums: Albums | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._notified_at = 0.0
        self._first_unscanned = 0.0
        self._uploads: set[asyncio.Task[Any]] = set()
        self._videos: dict[int, asyncio.Future[str | None]] = {}
        self._links: dict[int, str | None] = {}
        self._abort: BaseException | None = None
        self._room = asyncio.Event()
        self.metrics_server: Any = None
        self.metrics_port: int | None = None
        self._once_mode = False

    # --- entry points ----------------------------------------------------------------------

    async def run_once(self) -> Summary:
        """Drain the backlog and return (`sync --once`)."""
        return await self._run(self._once)

    async def serve(self, on_ready: Callable[[], None] | None = None) -> Summary:
        """Run until SIGTERM/SIGINT or `request_stop()` (`sync`, the service)."""
        async def body() -> None:
            await self._serve(on_ready)
        return await self._run(body)

    def request_stop(self, reason: str = "stop requested") -> None:
        loop = asyncio.get_running_loop()
        if self.stopping:
            log.warning("%s again: abandoning uploads in flight", reason)
            self._cancel_uploads()
            return
        log.info("%s: finishing uploads in flight (at most %.0fs), then stopping", reason,
                 self.icfg.stop_timeout)
        self.stopping = True
        self._stop.set()
        self._wake.set()
        self._room.set()
        self.notifier.stopping("stopping: finishing uploads in flight")
        loop.call_later(self.icfg.stop_timeout, self._cancel_uploads)

    def _cancel_uploads(self) -> None:
        for task in list(self._uploads):
            task.cancel()

    async def _run(self, body: Callable[[], Awaitable[None]]) -> Summary:
        loop = asyncio.get_running_loop()
        handled: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
                handled.append(sig)
            except (RuntimeError, ValueError):   # not the main thread
                pass
        api_key = self._api_key or self.icfg.api_key()
        self.client = ImmichClient(
            self.icfg.url or "", api_key, workers=self.workers, timeout=self.icfg.timeout,
            min_upload_rate=self.icfg.min_upload_rate, retries=self.icfg.retries,
            ca_file=self.icfg.ca_file, observer=self.metrics.observer(),
            **({"backoff_base": self._backoff_base} if self._backoff_base is not None else {}))
        self.metrics.concurrency.set(self.workers)
        try:
            async with self.client:
                await body()
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
            if self.store is not None:
                with contextlib.suppress(psycopg.Error):
                    await self.store.release()
                    counts = await self.store.counts()
                    self.summary.pending_after = counts.get("pending", 0)
                    self.summary.failed_total = counts.get("failed", 0)
                    self.summary.retrying = counts.get("retrying", 0)
                await self.store.close()
                self.store = None
        if self.stopping and self.summary.status == "completed":
            self.summary.status = "stopped"
        if self._once_mode and self.summary.status == "completed" and (
                self.summary.failed or self.summary.retrying):
            self.summary.status = "failed"     # not drained: failures, or retries due later
        return self.summary

    async def _open_store(self) -> Store:
        if self.store is None:
            conn = await store_mod.connect(self.cfg.database.conninfo())
            self.store = Store(conn, owner=self._owner, lease=self.icfg.lease)
        return self.store

    async def _connect(self) -> None:
        """The start-up check, then the account's target row (and library)."""
        assert self.client is not None
        store = await self._open_store()
        try:
            info = await self.client.connect()
        except ApiError as exc:
            if exc.status == 401:
                raise SyncError(f"Immich does not accept the API key in "
                                f"{self.icfg.api_key_file} ({exc.message})") from exc
            raise
        problems = permission_problems(info, self.icfg)
        if problems:
            raise SyncError(permission_message(info, self.icfg, problems))
        assert info.user_id is not None
        self.info = info
        self.summary.server = {"url": info.api_url, "version": info.version,
                               "user": info.user_email, "key": info.key_name}
        await store.register_target(info.user_id, self.icfg.mode, info.api_url,
                                    info.user_email)
        if self._leases_orphaned:   # claimed before the catalog went away: claimable again
            released = await store.release()
            self._leases_orphaned = False
            if released:
                log.info("the catalog is back: %d asset(s) claimed before are free again",
                         released)
        self._albums = Albums(self.client, store)
        if self.icfg.mode == "library":
            await self._ensure_library(info)
        else:
            self.media = await self.client.media_types()
        self.metrics.up.set(1)
        log.info("Immich %s at %s: %s, key %r (%s mode)", info.version, info.api_url,
                 info.user_email, info.key_name, self.icfg.mode)

    # --- the two ways to run ------------------------------------------------------------------

    async def _once(self) -> None:
        try:
            await self._connect()
            heartbeat = asyncio.create_task(self._heartbeat())
            try:
                await self._drain(wait_for_due=5.0)
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
        except Unreachable as exc:
            self.summary.status, self.summary.error = "unavailable", str(exc)
            await self._note_error(str(exc))
        except (SyncError, ApiError, TransientError) as exc:
            self.summary.status, self.summary.error = "failed", str(exc)
            await self._note_error(str(exc))
        self._once_mode = True

    async def _serve(self, on_ready: Callable[[], None] | None) -> None:
        address = self.icfg.metrics_address()
        if address is not None:
            self.metrics_server = self.metrics.serve(address)
            self.metrics_port = self.metrics_server.port
        tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._watchdog()),
                 asyncio.create_task(self._heartbeat())]
        try:
            await self._open_store()
            self.notifier.ready("connecting to Immich")
            if on_ready is not None:
                on_ready()
            connected = False
            failures = 0
            while not self.stopping:
                delay: float | None = self.icfg.interval
                try:
                    if not connected:
                        await self._connect()
                        connected = True
                        failures = 0
                    await self._debounce()
                    self._wake.clear()
                    await self._drain(wait_for_due=0.0)
                    if self._abort is None:
                        assert self.store is not None
                        await self.store.pass_ok()
                        self.metrics.last_pass.set(time.time())
                        due = await self.store.next_due()
                        if due is not None:
                            delay = min(self.icfg.interval, due + 0.05)
                    self._abort = None
                except (Unreachable, TransientError, psycopg.OperationalError,
                        CatalogError) as exc:
                    # CatalogError: the database is still away when we connect again
                    connected = False
                    failures += 1
                    delay = min(self.icfg.interval, backoff(failures, 5.0, 300.0) + 1.0)
                    log.warning("sync paused: %s (trying again in %.0fs)", exc, delay)
                    await self._note_error(str(exc))
                    self.notifier.status(f"waiting for Immich: {exc}")
                    if isinstance(exc, psycopg.OperationalError | CatalogError):
                        await self._reset_store()
                except (SyncError, ApiError) as exc:
                    connected = False
                    failures += 1
                    delay = max(60.0, min(self.icfg.interval, 600.0))
                    log.error("sync stopped until the problem is fixed: %s", exc)
                    await self._note_error(str(exc))
                    self.notifier.status(f"error: {exc}")
                self._abort = None
                await self._update_gauges()
                if not self.stopping:
                    await self._sleep(delay)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self.metrics_server is not None:
                await asyncio.to_thread(self.metrics_server.shutdown)

    async def _sleep(self, seconds: float | None) -> None:
        if self._wake.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _debounce(self) -> None:
        """Let a burst of NOTIFYs arrive; in library mode wait for `scan_delay` quiet
        seconds (at most 10 x scan_delay after the first new asset) before a scan."""
        if not self._notified_at:
            return
        quiet = self.icfg.scan_delay if self.icfg.mode == "library" else NOTIFY_SETTLE
        limit = self._first_unscanned + max(10 * quiet, quiet)
        while not self.stopping:
            wait = min(self._notified_at + quiet, limit) - time.monotonic()
            if wait <= 0:
                break
            await self._sleep_or_stop(wait)
        self._notified_at = 0.0
        self._first_unscanned = 0.0

    def _notified(self) -> None:
        now = time.monotonic()
        if not self._notified_at:
            self._first_unscanned = now
        self._notified_at = now
        self._wake.set()

    async def _listen(self) -> None:
        """LISTEN for new assets on a connection of its own; reconnects when it drops."""
        failures = 0
        while not self.stopping:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.cfg.database.conninfo(), autocommit=True,
                    application_name="photo-ingest sync (listen)")
                async with conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    failures = 0
                    async for _ in conn.notifies():
                        self._notified()
            except psycopg.Error as exc:
                failures += 1
                delay = backoff(failures, 2.0, 60.0) + 1.0
                log.warning("catalog notifications lost (%s); listening again in %.0fs "
                            "(the periodic pass still runs)", exc, delay)
                await asyncio.sleep(delay)

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_seconds
        if not interval:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval / 2)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.icfg.lease / 3)
            if self.store is not None and self.store.target_id:
                try:
                    await self.store.renew()
                except psycopg.Error as exc:
                    log.warning("could not renew leases: %s", exc)

    async def _reset_store(self) -> None:
        self._leases_orphaned = True
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.close()
            self.store = None

    async def _note_error(self, text: str) -> None:
        self.metrics.up.set(0)
        if self.store is not None:
            with contextlib.suppress(psycopg.Error):
                await self.store.pass_failed(text)

    async def _update_gauges(self) -> None:
        if self.store is None or not self.store.target_id:
            return
        try:
            counts = await self.store.counts()
        except psycopg.Error:
            return
        self.metrics.backlog.set(counts.get("pending", 0))
        for state in ("trashed", "skipped", "failed"):
            self.metrics.problems.labels(state).set(counts.get(state, 0))
        waiting = counts.get("pending", 0)
        self.notifier.status(f"idle: {counts.get('done', 0)} in Immich, {waiting} waiting, "
                             f"{counts.get('failed', 0)} failed, "
                             f"{counts.get('trashed', 0)} in Immich's trash")

    # --- passes -------------------------------------------------------------------------------

    async def _drain(self, wait_for_due: float) -> None:
        """Passes until nothing is claimable (and, for --once, nothing is due within
        WAIT_FOR_DUE seconds, such as a still waiting for its Live Photo video)."""
        assert self.store is not None
        first = True
        while not self.stopping:
            if first and self.retry_failed:
                n = await self.store.retry_failed()
                log.info("retrying %d failed, trashed or skipped asset(s)", n)
                self.retry_failed = False
            first = False
            worked = await self._pass()
            if self._abort is not None:
                raise self._abort
            if worked:
                continue
            due = await self.store.next_due()
            if due is None or due > wait_for_due:
                return
            await self._sleep_or_stop(due + 0.05)

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _pass(self) -> bool:
        """One pass; True when it claimed anything."""
        assert self.store is not None
        started = time.monotonic()
        before = self._counters()
        new = await self.store.enqueue()
        if new:
            log.info("%d new asset(s) to sync", new)
        self.notifier.status("syncing")
        if self.icfg.mode == "library":
            worked = await self._library_pass()
        else:
            adder = AlbumQueue(self)
            worked = await self._check_phase(adder)
            worked = await self._upload_phase(adder) or worked
            worked = await self._album_phase(adder) or worked
        # Nothing of this pass is in flight any more: a lease still held now would only
        # keep its asset from everyone (this worker included) until it ran out.
        if await self.store.release():
            log.warning("released assets this pass left claimed")
        if worked:
            after = self._counters()
            delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
            log.info("sync pass in %.1fs: %s", time.monotonic() - started,
                     ", ".join(f"{v} {k}" for k, v in delta.items()) or "nothing changed")
        return worked

    def _counters(self) -> dict[str, int]:
        s = self.summary
        return {"uploaded": s.uploaded, "duplicate": s.duplicate, "scanned": s.scanned,
                "trashed": s.trashed, "skipped": s.skipped, "failed": s.failed,
                "retried later": s.retries, "added to albums": s.album_added}

    def _album_for(self, it: Item) -> str | None:
        template = self.icfg.album
        if template is None or it.live_photo_id is not None:
            return None   # a Live Photo's video is hidden in Immich and kept out of albums
        return album_name(template, captured_local=it.captured_local,
                          original_name=it.original_name, media_type=it.media_type,
                          make=it.camera_make, model=it.camera_model,
                          card_label=it.card_label, session=it.session_id)

    # --- check ---------------------------------------------------------------------------------

    async def _check_phase(self, adder: AlbumQueue) -> bool:
        assert self.store is not None and self.client is not None and self.media is not None
        worked = False
        while not self.stopping and self._abort is None:
            items = await self.store.claim("check", BULK_CHECK_MAX)
            if not items:
                break
            worked = True
            problems: list[tuple[int, str, str, str | None]] = []
            rest: list[Item] = []
            for it in items:
                if self.media.supports(it.library_path):
                    rest.append(it)
                    continue
                ext = extension(it.library_path) or "(no extension)"
                reason = (f"unsupported-format: Immich {self.info.version if self.info else ''}"
                          f" does not take {ext} files (its /api/server/media-types)")
                problems.append((it.asset_id, "skipped", reason, None))
                self._count(it, "skipped", "unsupported_format", reason)
            try:
                results = await self.client.bulk_check([(str(it.asset_id), it.sha1)
                                                        for it in rest]) if rest else []
            except ImmichError as exc:
                await self.store.record_problem(problems)
                await self._batch_failed(rest, exc)
                continue
            found: list[tuple[int, str, str, str | None, int | None]] = []
            accepted: list[int] = []
            for it, r in zip(rest, results, strict=True):
                if r.get("action") == "accept":
                    accepted.append(it.asset_id)
                elif r.get("reason") == "duplicate" and r.get("assetId"):
                    if r.get("isTrashed"):
                        reason = _trashed_reason(str(r["assetId"]))
                        problems.append((it.asset_id, "trashed", reason, str(r["assetId"])))
                        self._count(it, "trashed", "in_trash", reason)
                    else:
                        album = self._album_for(it)
                        found.append((it.asset_id, "duplicate", str(r["assetId"]), album, None))
                        self._count(it, "duplicate")
                elif r.get("reason") == "unsupported-format":
                    reason = "unsupported-format: Immich's bulk upload check rejected it"
                    problems.append((it.asset_id, "skipped", reason, None))
                    self._count(it, "skipped", "unsupported_format", reason)
                else:
                    reason = f"Immich's bulk upload check rejected it: {r.get('reason')}"
                    problems.append((it.asset_id, "failed", reason, None))
                    self._count(it, "failed", "rejected", reason)
            await self.store.record_problem(problems)
            await self.store.record_found(found)
            await self.store.mark_checked(accepted)
            for asset_id, _, immich_id, album, _ in found:
                if album is not None:
                    await adder.put(album, asset_id, immich_id)
        return worked

    # --- upload --------------------------------------------------------------------------------

    async def _upload_phase(self, adder: AlbumQueue) -> bool:
        assert self.store is not None
        queue: asyncio.Queue[Item | None] = asyncio.Queue()
        worked = False
        claim_size = max(2 * self.workers, 8)

        async def producer() -> None:
            nonlocal worked
            try:
                while not self.stopping and self._abort is None:
                    if queue.qsize() >= self.workers:
                        self._room.clear()
                        await self._room.wait()
                        continue
                    assert self.store is not None
                    items = await self.store.claim("upload", claim_size)
                    if not items:
                        break
                    worked = True
                    for it in await self._order(items):
                        queue.put_nowait(it)
            finally:
                for _ in range(self.workers):
                    queue.put_nowait(None)

        async def consumer() -> None:
            while (it := await queue.get()) is not None:
                self._room.set()
                try:
                    if self.stopping or self._abort is not None:
                        assert self.store is not None
                        await self.store.release([it.asset_id])
                    else:
                        await self._upload_one(it, adder)
                finally:
                    fut = self._videos.pop(it.asset_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)

        done = asyncio.Event()
        flusher = asyncio.create_task(adder.run_periodically(done))
        try:
            await asyncio.gather(producer(), *(consumer() for _ in range(self.workers)))
        finally:
            done.set()          # never cancelled mid-flush: its batch would be lost
            await flusher
            for fut in self._videos.values():
                if not fut.done():
                    fut.set_result(None)
            self._videos.clear()
            self._links.clear()
        return worked

    async def _order(self, items: list[Item]) -> list[Item]:
        """Videos of Live Photos first, their stills after them (linked once the video
        has its Immich id); a still whose video someone else is busy with waits."""
        assert self.store is not None
        claimed = {it.asset_id for it in items}
        wanted = {it.live_video_id for it in items if it.live_video_id is not None}
        partners = await self.store.partners(wanted - claimed - set(self._videos))
        extra: list[Item] = []
        deferred: list[int] = []
        link: dict[int, str | None] = {}
        for it in items:
            vid = it.live_video_id
            if vid is None or vid in claimed or vid in self._videos:
                continue
            p = partners.get(vid)
            if p is None or p.state not in ("pending", "done"):
                link[it.asset_id] = None          # failed/skipped/trashed video: no link
            elif p.immich_id is not None:
                link[it.asset_id] = p.immich_id
            elif p.checked and p.leased_by is None:
                got = await self.store.claim("upload", 1, ids=[vid])
                if got:
                    extra += got
                    claimed.add(vid)
                else:
                    deferred.append(it.asset_id)
            else:
                deferred.append(it.asset_id)      # still being checked or uploaded elsewhere
        if deferred:
            await self.store.release(deferred, delay=DEFER_SECONDS)
        loop = asyncio.get_running_loop()
        ordered: list[Item] = []
        for it in sorted(extra + items, key=lambda i: (i.live_photo_id is None, i.asset_id)):
            if it.asset_id in deferred:
                continue
            if it.live_photo_id is not None:
                self._videos[it.asset_id] = loop.create_future()
            if it.asset_id in link:
                self._links[it.asset_id] = link[it.asset_id]
            ordered.append(it)
        return ordered

    async def _live_link(self, it: Item) -> str | None:
        if it.live_video_id is None:
            return None
        if it.asset_id in self._links:
            return self._links.pop(it.asset_id)
        fut = self._videos.get(it.live_video_id)
        if fut is not None:
            return await fut
        assert self.store is not None
        p = (await self.store.partners([it.live_video_id])).get(it.live_video_id)
        return p.immich_id if p is not None and p.state in ("pending", "done") else None

    async def _upload_one(self, it: Item, adder: AlbumQueue) -> None:
        assert self.store is not None and self.client is not None
        path = self.library / it.library_path
        try:
            size = path.stat().st_size
        except OSError as exc:
            reason = f"cannot read the library file {path}: {exc.strerror}"
            await self._fail(it, reason, "file_missing")
            return
        if size != it.size:
            await self._fail(it, f"the library file {path} has {size} bytes, the catalog "
                             f"says {it.size}: not uploading a changed file", "file_changed")
            return
        sidecar = self.library / it.xmp if it.xmp else None
        if sidecar is not None and not sidecar.is_file():
            log.warning("XMP sidecar %s is missing; uploading %s without it", sidecar, path)
            sidecar = None
        link = await self._live_link(it)
        created = capture_time(it.captured_at, it.captured_local)
        up = Upload(path=path, sha1=it.sha1, size=it.size, filename=it.original_name,
                    created_at=created, modified_at=created, sidecar=sidecar,
                    live_photo_video_id=link)
        try:
            try:
                result = await self._send(up)
            except ApiError as exc:
                if link is None or exc.status != 400 or "live photo" not in \
                        exc.message.lower():
                    raise
                log.warning("%s: Immich would not link it to its Live Photo video (%s); "
                            "uploading it unlinked", it.library_path, exc.message)
                result = await self._send(Upload(**{**up.__dict__,
                                                    "live_photo_video_id": None}))
        except asyncio.CancelledError:
            if self.stopping:   # stop_timeout passed: give the asset back untouched
                await self.store.release([it.asset_id])
                log.info("%s: upload abandoned at stop; it stays pending", it.library_path)
                return
            raise
        except ApiError as exc:
            reason = f"Immich refused the upload: HTTP {exc.status}: {exc.message}"
            await self._fail(it, reason, f"http_{exc.status}")
            if exc.auth:
                self._abort = SyncError(f"{exc} (stopping: the key cannot upload)")
            return
        except TransientError as exc:
            await self._retry([it], str(exc))
            return
        except Unreachable as exc:
            await self.store.release([it.asset_id])
            self._abort = exc
            return
        state = "uploaded" if result.status == "created" else "duplicate"
        if state == "duplicate" and await self._is_trashed(it, result.immich_id):
            return
        album = self._album_for(it)
        await self.store.record_found([(it.asset_id, state, result.immich_id, album,
                                        result.bytes_sent)])
        self._count(it, state)
        self.summary.bytes_uploaded += result.bytes_sent
        fut = self._videos.get(it.asset_id)
        if fut is not None and not fut.done():
            fut.set_result(result.immich_id)
        if album is not None:
            await adder.put(album, it.asset_id, result.immich_id)

    async def _send(self, up: Upload) -> Any:
        assert self.client is not None
        task = asyncio.ensure_future(self.client.upload(up))
        self._uploads.add(task)
        try:
            return await task
        finally:
            self._uploads.discard(task)

    async def _is_trashed(self, it: Item, immich_id: str) -> bool:
        """An upload answered "duplicate" (it reached Immich since the bulk check): is
        that copy in the trash? Then say so rather than count it as done."""
        assert self.client is not None and self.store is not None
        try:
            r = (await self.client.bulk_check([(str(it.asset_id), it.sha1)]))[0]
        except ImmichError:
            return False
        if r.get("action") == "reject" and r.get("isTrashed"):
            reason = _trashed_reason(immich_id)
            await self.store.record_problem([(it.asset_id, "trashed", reason, immich_id)])
            self._count(it, "trashed", "in_trash", reason)
            return True
        return False

    # --- albums -----------------------------------------------------------------------------

    async def _album_phase(self, adder: AlbumQueue) -> bool:
        """Assets with an Immich id still waiting for their album (an earlier run stopped,
        or the album add failed transiently)."""
        assert self.store is not None
        worked = False
        await adder.flush_all()
        while not self.stopping and self._abort is None:
            items = await self.store.claim("album", ALBUM_FLUSH)
            if not items:
                break
            worked = True
            for it in items:
                assert it.immich_id is not None
                if it.album is None:
                    await self.store.record_found([(it.asset_id, it.result or "uploaded",
                                                    it.immich_id, None, None)])
                else:
                    await adder.put(it.album, it.asset_id, it.immich_id)
            await adder.flush_all()
        return worked

    # --- library mode ---------------------------------------------------------------------

    async def _ensure_library(self, info: ServerInfo) -> None:
        assert self.client is not None and self.store is not None and info.user_id
        path = self.icfg.library_path or str(self.library)
        libraries = await self.client.libraries()
        mine = [lib for lib in libraries if lib.get("ownerId") == info.user_id]
        with_path = [lib for lib in mine if path in (lib.get("importPaths") or [])]
        if with_path:
            lib = oldest(with_path)
        else:
            named = [lib for lib in mine if lib.get("name") == self.icfg.library_name]
            if named:
                lib = oldest(named)
                paths = [*(lib.get("importPaths") or []), path]
                await self.client.update_library(str(lib["id"]), paths)
                log.info("added %s to the import paths of Immich library %r", path,
                         lib.get("name"))
            else:
                lib = await self.client.create_library(info.user_id, self.icfg.library_name,
                                                       [path], LIBRARY_EXCLUSIONS)
                log.info("created Immich external library %r for %s", lib.get("name"), path)
        self.library_id = str(lib["id"])
        await self.store.set_library(self.library_id)

    async def _library_pass(self) -> bool:
        assert self.store is not None and self.client is not None and self.library_id
        ids = await self.store.claim_library(1_000_000)
        if not ids:
            return False
        try:
            await self.client.scan_library(self.library_id)
        except Unreachable:
            await self.store.release(ids)
            raise
        except ImmichError as exc:
            await self.store.release(ids)
            raise SyncError(f"library scan failed: {exc}") from exc
        await self.store.mark_scanned(ids)
        self.summary.scanned += len(ids)
        self.metrics.counted("scanned", "", len(ids))
        self.metrics.last_success.set(time.time())
        log.info("asked Immich to scan library %s for %d new asset(s)", self.library_id,
                 len(ids))
        return True

    # --- outcomes -------------------------------------------------------------------------------

    def _count(self, it: Item | None, result: str, reason_class: str = "",
               reason: str = "") -> None:
        setattr(self.summary, result, getattr(self.summary, result) + 1)
        self.metrics.counted(result, reason_class)
        if result in ("uploaded", "duplicate"):
            self.metrics.last_success.set(time.time())
        if reason:
            self.summary.problem(it, result, reason)
            log.warning("%s: %s: %s", it.library_path if it else "?", result, reason)

    async def _fail(self, it: Item, reason: str, reason_class: str) -> None:
        assert self.store is not None
        await self.store.record_problem([(it.asset_id, "failed", reason, None)])
        self._count(it, "failed", reason_class, reason)

    async def _retry(self, items: Sequence[Item] | dict[int, str], error: str) -> None:
        """Transient failure of ITEMS (or {asset id: label}): back to the queue, or failed
        once max_attempts are used up."""
        assert self.store is not None
        labels = items if isinstance(items, dict) else {
            it.asset_id: it.library_path for it in items}
        for asset_id, state, attempts in await self.store.record_retry(
                list(labels), error, self.icfg.max_attempts, self.icfg.retry_delay):
            label = labels[asset_id]
            if state == "failed":
                reason = f"gave up after {attempts} attempt(s): {error}"
                self.summary.failed += 1
                self.metrics.counted("failed", "gave_up")
                self.summary.problem(None, "failed", reason, path=label)
                log.warning("%s: failed: %s", label, reason)
            else:
                self.summary.retries += 1
                self.metrics.retries.inc()
                log.warning("%s: will try again (attempt %d of %d failed): %s",
                            label, attempts, self.icfg.max_attempts, error)

    async def _batch_failed(self, items: Sequence[Item], exc: ImmichError) -> None:
        assert self.store is not None
        if isinstance(exc, Unreachable):
            await self.store.release([it.asset_id for it in items])
            self._abort = exc
        elif isinstance(exc, TransientError):
            await self._retry(items, str(exc))
        elif isinstance(exc, ApiError) and exc.auth:
            await self.store.release([it.asset_id for it in items])
            self._abort = SyncError(str(exc))
        else:
            for it in items:
                await self._fail(it, str(exc), "http_" + str(getattr(exc, "status", "")))


def _trashed_reason(immich_id: str) -> str:
    return (f"already in Immich as asset {immich_id}, which is in Immich's trash: restore it"
            " there (or empty the trash to upload it again), then run "
            "`photo-ingest sync --retry-failed`")


class AlbumQueue:
    """Album adds gathered per album name and sent in batches."""

    def __init__(self, syncer: Syncer) -> None:
        self.syncer = syncer
        self.pending: dict[str, list[tuple[int, str]]] = {}

    async def put(self, name: str, asset_id: int, immich_id: str) -> None:
        self.pending.setdefault(name, []).append((asset_id, immich_id))
        if len(self.pending[name]) >= ALBUM_FLUSH:
            await self.flush(name)

    async def run_periodically(self, done: asyncio.Event) -> None:
        """Flush every ALBUM_FLUSH_SECONDS until DONE is set (the rest is flushed by the
        album phase)."""
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), ALBUM_FLUSH_SECONDS)
            if not done.is_set():
                await self.flush_all()

    async def flush_all(self) -> None:
        for name in list(self.pending):
            await self.flush(name)

    async def flush(self, name: str) -> None:
        members = self.pending.pop(name, [])
        if not members:
            return
        s = self.syncer
        assert s.store is not None and s._albums is not None
        try:
            result = await s._albums.add(name, members)
        except Unreachable as exc:
            await s.store.release([m[0] for m in members])
            s._abort = exc
            return
        except TransientError as exc:
            await s._retry({a: f"asset {a} (album {name!r})" for a, _ in members},
                           f"album {name!r}: {exc}")
            return
        except ApiError as exc:
            reason = f"album {name!r}: {exc}"
            await s.store.record_problem([(a, "failed", reason, None) for a, _ in members])
            for _ in members:
                s._count(None, "failed", f"album_http_{exc.status}")
            s.summary.problem(None, "failed", reason, path=f"{len(members)} asset(s)")
            if exc.auth:
                s._abort = SyncError(str(exc))
            return
        except TimeoutError as exc:
            await s.store.release([m[0] for m in members], delay=DEFER_SECONDS)
            log.warning("%s", exc)
            return
        album_id = await s._albums.ensure(name)
        await s.store.album_done(result.done, album_id)
        s.summary.album_added += len(result.done)
        if result.done:
            s.metrics.last_success.set(time.time())
        await s.store.record_problem([(a, "failed", why, None) for a, why in result.failed])
        for _, why in result.failed:
            s._count(None, "failed", "album_rejected", why)
        s.summary.albums_created += [n for n in s._albums.created
                                     if n not in s.summary.albums_created]


async def run(cfg: Config, icfg: ImmichConfig, *, once: bool, workers: int | None = None,
              retry_failed: bool = False, notifier: Notifier | None = None) -> Summary:
    syncer = Syncer(cfg, icfg, workers=workers, retry_failed=retry_failed,
                    notifier=notifier or Notifier())
    return await (syncer.run_once() if once else syncer.serve())
