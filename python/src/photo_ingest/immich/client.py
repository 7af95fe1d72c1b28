"""An Immich 3.x API client on aiohttp: one session, pooled keep-alive connections,
timeouts scaled to the size of what is sent, uploads streamed from disk.

Errors come in three kinds, because the sync loop treats them differently:

* `ApiError`     the server answered with a 4xx that retrying cannot fix (bad key,
                 missing permission, unsupported file, validation): no retry.
* `TransientError`  timeouts, connection resets, 5xx — retried here with exponential
                 backoff and full jitter, raised only when the retries are used up.
* `Unreachable`  no connection could be made at all: the server (or the network) is
                 down, which says nothing about the asset being sent.

429 and 503 are back-pressure, not failures: the shared `Throttle` halves the number of
concurrent uploads and holds every new request until the server's Retry-After has
passed, then the request is sent again (these waits do not use up retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

import aiohttp
import aiohttp.payload

log = logging.getLogger("photo_ingest.immich")

BULK_CHECK_MAX = 5000          # Immich's CLI sends at most this many checksums per request
ALBUM_ADD_MAX = 1000           # ids per PUT /albums/{id}/assets
MAX_THROTTLED = 30             # 429/503 answers one request may wait out before giving up
MAX_RETRY_AFTER = 600.0        # seconds; a longer Retry-After is capped (and logged)
BACKOFF_BASE = 0.5             # seconds: first retry after up to 0.5 s, then 1, 2, 4 …
BACKOFF_CAP = 30.0
READ_CHUNK = 1 << 20           # bytes read from disk per step of an upload
USER_AGENT = "photo-ingest (+immich sync)"


class ImmichError(Exception):
    """Something went wrong talking to Immich; str() is fit for a log line and status."""


class ApiError(ImmichError):
    """A 4xx answer that retrying does not fix."""

    def __init__(self, operation: str, status: int, message: str) -> None:
        super().__init__(f"{operation}: HTTP {status}: {message}")
        self.operation = operation
        self.status = status
        self.message = message

    @property
    def auth(self) -> bool:
        """Bad or revoked key, missing permission: nothing else will work either."""
        return self.status in (401, 403)


class TransientError(ImmichError):
    """Timeouts, resets and 5xx that outlasted the retries."""


class Unreachable(ImmichError):
    """No connection to the server could be made."""


@dataclass(frozen=True)
class MediaTypes:
    image: frozenset[str]
    video: frozenset[str]
    sidecar: frozenset[str]

    def supports(self, filename: str) -> bool:
        ext = extension(filename)
        return ext in self.image or ext in self.video


@dataclass(frozen=True)
class ServerInfo:
    api_url: str
    version: str
    key_name: str
    key_id: str
    permissions: tuple[str, ...]
    user_id: str | None = None
    user_email: str | None = None
    user_name: str | None = None
    is_admin: bool = False

    def has(self, permission: str) -> bool:
        return "all" in self.permissions or permission in self.permissions


@dataclass(frozen=True)
class Upload:
    """One asset to send. `created_at` must carry an offset (ISO 8601)."""

    path: Path
    sha1: bytes
    size: int
    filename: str                  # original name, sent as the `filename` field
    created_at: str
    modified_at: str
    sidecar: Path | None = None    # an XMP file
    live_photo_video_id: str | None = None


@dataclass(frozen=True)
class UploadResult:
    immich_id: str
    status: str                    # created | duplicate
    bytes_sent: int


@dataclass
class Observer:
    """Hooks for metrics; all optional."""

    request: Callable[[str, str, float], None] = lambda op, outcome, seconds: None
    throttled: Callable[[int], None] = lambda status: None
    concurrency: Callable[[int], None] = lambda limit: None
    bytes_sent: Callable[[int], None] = lambda n: None


class Throttle:
    """Concurrency limit for uploads that shrinks under back-pressure (429/503) and grows
    back slowly (AIMD), plus a gate that holds every request until Retry-After passed."""

    def __init__(self, limit: int, observer: Observer | None = None) -> None:
        self.max_limit = limit
        self.limit = limit
        self.active = 0
        self.resume_at = 0.0
        self._ok = 0
        self._last_cut = -1e9
        self._waiters: list[asyncio.Future[None]] = []
        self._observer = observer or Observer()

    async def gate(self) -> None:
        while (delay := self.resume_at - time.monotonic()) > 0:
            await asyncio.sleep(delay)

    async def acquire(self) -> None:
        while True:
            await self.gate()
            if self.active < self.limit:
                self.active += 1
                return
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)

    def release(self) -> None:
        self.active -= 1
        self._wake()

    @contextlib.asynccontextmanager
    async def slot(self) -> Any:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def slow_down(self, delay: float) -> None:
        now = time.monotonic()
        self.resume_at = max(self.resume_at, now + delay)
        if now - self._last_cut > max(delay, 1.0):   # one cut per burst of rejections
            self._last_cut = now
            self.limit = max(1, self.limit // 2)
            self._ok = 0
            self._observer.concurrency(self.limit)
            log.warning("Immich asks to slow down: %d concurrent upload(s), pausing %.1fs",
                        self.limit, delay)

    def succeeded(self) -> None:
        if self.limit >= self.max_limit:
            return
        self._ok += 1
        if self._ok >= 4 * self.limit:
            self._ok = 0
            self.limit += 1
            self._observer.concurrency(self.limit)
            self._wake()

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)


def backoff(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP,
            rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**(attempt-1)))."""
    high = min(cap, base * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(high / 10, high)


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def extension(filename: str) -> str:
    dot = filename.rfind(".")
    return filename[dot:].lower() if dot > filename.rfind("/") else ""


class ImmichClient:
    """`async with ImmichClient(url, key) as client: info = await client.connect()`."""

    def __init__(self, url: str, api_key: str, *, workers: int = 4, timeout: float = 60.0,
                 min_upload_rate: int = 256 * 1024, retries: int = 4,
                 ca_file: Path | None = None, observer: Observer | None = None,
                 backoff_base: float = BACKOFF_BASE) -> None:
        self.url = url.rstrip("/")
        self._key = api_key
        self.timeout = timeout
        self.min_upload_rate = min_upload_rate
        self.retries = retries
        self.backoff_base = backoff_base
        self.observer = observer or Observer()
        self.throttle = Throttle(workers, self.observer)
        self._ca_file = ca_file
        self._workers = workers
        self._session: aiohttp.ClientSession | None = None
        self.api_url = self.url if _ends_with_api(self.url) else ""

    async def __aenter__(self) -> ImmichClient:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def open(self) -> None:
        if self._session is not None:
            return
        ssl_ctx: ssl.SSLContext | bool = True
        if self._ca_file is not None:
            ssl_ctx = ssl.create_default_context(cafile=str(self._ca_file))
        # Uploads, a bulk check and an album call may be in flight together.
        connector = aiohttp.TCPConnector(limit=self._workers + 4, ssl=ssl_ctx,
                                         keepalive_timeout=30, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=min(self.timeout, 15)),
            raise_for_status=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("ImmichClient is not open")
        return self._session

    # --- discovery and identity ---------------------------------------------------------

    async def discover(self) -> str:
        """The API base URL: the configured URL if it ends in /api, else what
        `/.well-known/immich` names, else URL + /api."""
        if self.api_url:
            return self.api_url
        found = f"{self.url}/api"
        try:
            async with self.session.get(f"{self.url}/.well-known/immich",
                                        timeout=aiohttp.ClientTimeout(total=self.timeout)) as r:
                if r.status == 200:
                    data = await r.json(content_type=None)
                    endpoint = data.get("api", {}).get("endpoint") if isinstance(data, dict) \
                        else None
                    if isinstance(endpoint, str) and endpoint:
                        found = urljoin(self.url + "/", endpoint).rstrip("/")
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(f"cannot connect to Immich at {self.url}: {_describe(exc)}") \
                from exc
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.debug("no /.well-known/immich at %s (%s); using %s", self.url, exc, found)
        self.api_url = found
        return found

    async def connect(self) -> ServerInfo:
        """Discover the API, then check the server and the key (the start-up check)."""
        api = await self.discover()
        version = await self.get("getServerVersion", "/server/version")
        key = await self.get("getMyApiKey", "/api-keys/me")
        permissions = tuple(key.get("permissions") or ())
        info = ServerInfo(
            api_url=api,
            version=f"{version['major']}.{version['minor']}.{version['patch']}",
            key_name=str(key.get("name", "")), key_id=str(key.get("id", "")),
            permissions=permissions)
        if info.has("user.read"):
            me = await self.get("getMyUser", "/users/me")
            info = ServerInfo(**{**info.__dict__, "user_id": me["id"],
                                 "user_email": me.get("email"), "user_name": me.get("name"),
                                 "is_admin": bool(me.get("isAdmin"))})
        return info

    async def media_types(self) -> MediaTypes:
        data = await self.get("getSupportedMediaTypes", "/server/media-types")
        return MediaTypes(*(frozenset(e.lower() for e in data.get(k, ()))
                            for k in ("image", "video", "sidecar")))

    # --- assets ---------------------------------------------------------------------------

    async def bulk_check(self, items: Sequence[tuple[str, bytes]]) -> list[dict[str, Any]]:
        """`[(client id, sha1)]` -> Immich's results in the same order (≤ 5,000 per call)."""
        results: list[dict[str, Any]] = []
        for start in range(0, len(items), BULK_CHECK_MAX):
            chunk = items[start:start + BULK_CHECK_MAX]
            body = {"assets": [{"id": i, "checksum": sha1.hex()} for i, sha1 in chunk]}
            data = await self.request("checkBulkUpload", "POST", "/assets/bulk-upload-check",
                                      json_body=body)
            got = {r["id"]: r for r in data["results"]}
            missing = [i for i, _ in chunk if i not in got]
            if missing:
                raise TransientError(f"checkBulkUpload: no result for {len(missing)} of "
                                     f"{len(chunk)} assets")
            results += [got[i] for i, _ in chunk]
        return results

    async def upload(self, up: Upload) -> UploadResult:
        """POST /assets, the file streamed from disk, with `x-immich-checksum` so Immich
        can answer "duplicate" before the body; then the connection is dropped at once."""
        if not self.api_url:
            await self.discover()
        # Generous: the file at the slowest acceptable rate, plus the usual answer time.
        total = self.timeout + (up.size + (_size(up.sidecar) or 0)) / self.min_upload_rate
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=min(self.timeout, 15))
        headers = {"x-api-key": self._key, "x-immich-checksum": up.sha1.hex()}

        async def attempt() -> tuple[int, Any, bytes]:
            with open(up.path, "rb") as asset, _maybe_open(up.sidecar) as sidecar:
                form = _form(up, asset, sidecar)
                async with self.throttle.slot():
                    resp = await self.session.post(self._api("/assets"), data=form,
                                                   headers=headers, timeout=timeout)
                    try:
                        body = await resp.read()
                    finally:
                        if resp.status == 201:
                            resp.release()      # body fully sent: keep the connection
                        else:
                            resp.close()        # stop sending (early duplicate, 4xx)
                    return resp.status, resp.headers, body

        status, body = await self._retrying("uploadAsset", attempt, expect=(200, 201))
        data = _json(body)
        sent = up.size + (_size(up.sidecar) or 0) if status == 201 else 0
        if sent:
            self.observer.bytes_sent(sent)
        return UploadResult(str(data["id"]), str(data["status"]), sent)

    # --- albums -----------------------------------------------------------------------------

    async def albums_named(self, name: str) -> list[dict[str, Any]]:
        data = await self.get("getAllAlbums", "/albums", params={"name": name})
        # Older servers ignore ?name=: filter here too.
        return [a for a in data if a.get("albumName") == name]

    async def create_album(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = await self.request("createAlbum", "POST", "/albums",
                                                  json_body={"albumName": name},
                                                  expect=(201, 200))
        return data

    async def add_to_album(self, album_id: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for start in range(0, len(ids), ALBUM_ADD_MAX):
            chunk = list(ids[start:start + ALBUM_ADD_MAX])
            results += await self.request("addAssetsToAlbum", "PUT",
                                          f"/albums/{album_id}/assets", json_body={"ids": chunk})
        return results

    # --- external libraries (admin) -----------------------------------------------------------

    async def libraries(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = await self.get("getAllLibraries", "/libraries")
        return data

    async def create_library(self, owner_id: str, name: str, import_paths: Iterable[str],
                             exclusion_patterns: Iterable[str]) -> dict[str, Any]:
        data: dict[str, Any] = await self.request(
            "createLibrary", "POST", "/libraries", expect=(201, 200),
            json_body={"ownerId": owner_id, "name": name, "importPaths": list(import_paths),
                       "exclusionPatterns": list(exclusion_patterns)})
        return data

    async def update_library(self, library_id: str, import_paths: Iterable[str]) -> None:
        await self.request("updateLibrary", "PUT", f"/libraries/{library_id}",
                           json_body={"importPaths": list(import_paths)})

    async def scan_library(self, library_id: str) -> None:
        await self.request("scanLibrary", "POST", f"/libraries/{library_id}/scan",
                           expect=(204, 200, 201))

    # --- plumbing -------------------------------------------------------------------------------

    async def get(self, operation: str, path: str, params: dict[str, str] | None = None) -> Any:
        return await self.request(operation, "GET", path, params=params)

    async def request(self, operation: str, method: str, path: str, *,
                      json_body: Any = None, params: dict[str, str] | None = None,
                      expect: tuple[int, ...] = (200,)) -> Any:
        if not self.api_url:
            await self.discover()
        url = self._api(path)
        headers = {"x-api-key": self._key}

        async def attempt() -> tuple[int, Any, bytes]:
            await self.throttle.gate()
            async with self.session.request(method, url, json=json_body, params=params,
                                            headers=headers) as resp:
                return resp.status, resp.headers, await resp.read()

        status, body = await self._retrying(operation, attempt, expect=expect)
        return None if status == 204 or not body else _json(body)

    def _api(self, path: str) -> str:
        return f"{self.api_url}{path}"

    async def _retrying(self, operation: str,
                        attempt: Callable[[], Awaitable[tuple[int, Any, bytes]]], *,
                        expect: tuple[int, ...]) -> tuple[int, bytes]:
        """Run ATTEMPT until it gives an expected status; see the module docstring."""
        failures = 0
        throttled = 0
        while True:
            started = time.monotonic()
            error: ImmichError
            try:
                status, headers, body = await attempt()
            except aiohttp.ClientConnectorError as exc:
                self.observer.request(operation, "unreachable", time.monotonic() - started)
                error = Unreachable(f"cannot connect to Immich at {self.url}: "
                                    f"{_describe(exc)}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.observer.request(operation, "error", time.monotonic() - started)
                error = TransientError(f"{operation}: {_describe(exc)}")
            else:
                self.observer.request(operation, str(status), time.monotonic() - started)
                if status in expect:
                    self.throttle.succeeded()
                    return status, body
                message = _message(body, status)
                if status in (429, 503) and throttled < MAX_THROTTLED:
                    throttled += 1
                    delay = retry_after(headers.get("Retry-After"))
                    if delay is None:
                        delay = backoff(throttled, self.backoff_base)
                    elif delay > MAX_RETRY_AFTER:
                        log.warning("%s: Retry-After %.0fs capped to %.0fs", operation, delay,
                                    MAX_RETRY_AFTER)
                        delay = MAX_RETRY_AFTER
                    self.observer.throttled(status)
                    self.throttle.slow_down(delay)
                    continue
                if status >= 500 or status in (408, 429):
                    error = TransientError(f"{operation}: HTTP {status}: {message}")
                else:
                    raise ApiError(operation, status, message)
            failures += 1
            if failures > self.retries:
                raise error
            delay = backoff(failures, self.backoff_base)
            log.debug("%s; retry %d/%d in %.2fs", error, failures, self.retries, delay)
            await asyncio.sleep(delay)


def _ends_with_api(url: str) -> bool:
    return urlsplit(url).path.rstrip("/").endswith("/api")


def _size(path: Path | None) -> int | None:
    return path.stat().st_size if path is not None else None


@contextlib.contextmanager
def _maybe_open(path: Path | None) -> Any:
    if path is None:
        yield None
    else:
        with open(path, "rb") as fh:
            yield fh


def _part_name(path: Path, fallback: str) -> str:
    """A file part's name: the file's own if plain ASCII, else FALLBACK + its extension.
    Immich only looks at its extension (the `filename` field carries the real name)."""
    name = path.name
    if name.isascii() and name.isprintable() and not any(c in name for c in '"\\'):
        return name
    ext = extension(name)
    return fallback + (ext if ext.isascii() and ext.isprintable() else "")


class FilePayload(aiohttp.payload.Payload):
    """An open file sent in READ_CHUNK pieces read in a worker thread: never more than
    one chunk per upload in memory, and a quarter of the thread hand-offs of aiohttp's
    own 256 KiB file payload. The size is fixed up front (Content-Length)."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        super().__init__(fh, content_type="application/octet-stream")
        self._fh = fh
        self._size = self._length = size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a file payload is binary")

    async def write(self, writer: Any) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        loop = asyncio.get_running_loop()
        left = self._length if content_length is None else min(self._length, content_length)
        while left > 0:
            chunk = await loop.run_in_executor(None, self._fh.read, min(READ_CHUNK, left))
            if not chunk:
                raise OSError(f"{getattr(self._fh, 'name', 'file')} shrank while it was sent")
            await writer.write(chunk)
            left -= len(chunk)


def _form(up: Upload, asset: BinaryIO, sidecar: BinaryIO | None) -> aiohttp.MultipartWriter:
    """File parts first: Immich checks a file part's type against a `filename` field
    received before it, so that field must come after the sidecar."""
    form = aiohttp.MultipartWriter("form-data")
    part = form.append_payload(FilePayload(asset, up.size))
    part.set_content_disposition("form-data", quote_fields=False, name="assetData",
                                 filename=_part_name(up.path, "asset"))
    if sidecar is not None and up.sidecar is not None:
        part = form.append_payload(FilePayload(sidecar, os.fstat(sidecar.fileno()).st_size))
        part.set_content_disposition("form-data", quote_fields=False, name="sidecarData",
                                     filename=_part_name(up.sidecar, "sidecar"))
    fields = [("fileCreatedAt", up.created_at), ("fileModifiedAt", up.modified_at),
              ("filename", up.filename)]
    if up.live_photo_video_id:
        fields.append(("livePhotoVideoId", up.live_photo_video_id))
    for name, value in fields:
        part = form.append(value, {"Content-Type": "text/plain; charset=utf-8"})
        part.set_content_disposition("form-data", name=name)
    return form


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise TransientError(f"not JSON from Immich: {body[:200]!r}") from exc


def _message(body: bytes, status: int) -> str:
    """Immich 3.x error bodies are {"message": "..."} (or a list of messages)."""
    try:
        data = json.loads(body)
    except ValueError:
        text = body[:200].decode("utf-8", "replace").strip()
        return text or _phrase(status)
    if isinstance(data, dict):
        message = data.get("message")
        if isinstance(message, list):
            return "; ".join(str(m) for m in message)
        if message:
            return str(message)
    return _phrase(status)


def _phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = [
    "ALBUM_ADD_MAX", "BULK_CHECK_MAX", "ApiError", "ImmichClient", "ImmichError",
    "MediaTypes", "Observer", "ServerInfo", "Throttle", "TransientError", "Unreachable",
    "Upload", "UploadResult", "backoff", "retry_after",
]
