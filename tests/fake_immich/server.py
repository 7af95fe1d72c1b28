"""A fake Immich 3.2.x server for tests and benchmarks (aiohttp, in a background thread).

See ``README.md`` in this package for the behaviour it reproduces and where each rule was
checked.  Quick use::

    server = FakeImmich(service_time=0.0, upload_service_time=0.0)
    base_url = server.start()            # "http://127.0.0.1:PORT"; the API is under /api
    key = server.create_api_key(user="alice", permissions=["all"])
    ...
    server.stop()
    assert server.validation_errors == []
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from . import mediatypes
from .faults import Fault, Faults
from .state import (
    Album,
    ApiKey,
    Asset,
    Library,
    RequestRecord,
    User,
    from_checksum,
    iso,
    new_id,
    now,
    parse_iso,
)
from .validation import ImmichSpec, Operation, Problem, ValidationFailure, get_spec

VERSION = (3, 2, 2)
CHUNK = 1 << 20
MAX_FIELD_BYTES = 1 << 20
#: Immich's library defaults when a library is created without exclusion patterns.
DEFAULT_EXCLUSION_PATTERNS = ["**/@eaDir/**", "**/._*", "**/#recycle/**", "**/#snapshot/**"]

Json = dict[str, Any]
_CORRELATION_ID = web.RequestKey("correlation_id", str)
_RECORD = web.RequestKey("record", RequestRecord)
Handler = Callable[["_Call"], Awaitable[web.StreamResponse]]


class _Reject(Exception):
    def __init__(self, status: int, message: str, errors: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


class _Call:
    """Per-request context handed to the operation handlers."""

    def __init__(self, request: web.Request, record: RequestRecord, op: Operation) -> None:
        self.request = request
        self.record = record
        self.op = op
        self.params = op.path_params(request.path)
        self.user: User | None = None
        self.api_key: ApiKey | None = None
        self.body: Any = None
        self.raw_body: bytes | None = None


def error_response(status: int, message: str | list[str],
                   errors: list[Any] | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    """An Immich 3.x error: ``{"message": ...}`` (+ ``errors`` for validation)."""
    body: Json = {"message": message}
    if errors is not None:
        body["errors"] = errors
    return web.json_response(body, status=status, headers=headers)


class FakeImmich:
    """In-process fake of Immich 3.2.x's HTTP API (the parts photo-ingest and the official
    CLI use), with Immich's semantics, OpenAPI validation and fault injection."""

    def __init__(self, service_time: float = 0.0, upload_service_time: float = 0.0,
                 storage_dir: Path | None = None, *, validate: bool = True,
                 spec: ImmichSpec | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.service_time = service_time
        self.upload_service_time = upload_service_time
        self.validate = validate
        self.spec = spec or get_spec()
        self.host = host
        self.port = port
        self._own_storage = storage_dir is None
        self.storage_dir = Path(storage_dir) if storage_dir else Path(
            tempfile.mkdtemp(prefix="fake-immich-"))
        self.faults = Faults()
        self.validation_errors: list[ValidationFailure] = []

        self._lock = threading.RLock()
        self._users: dict[str, User] = {}  # by name
        self._keys: dict[str, ApiKey] = {}  # by secret
        self._assets: dict[str, Asset] = {}
        self._by_checksum: dict[tuple[str, bytes], str] = {}  # (owner id, sha1) -> asset
        self._albums: dict[str, Album] = {}
        self._libraries: dict[str, Library] = {}
        self._requests: list[RequestRecord] = []

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._startup_error: BaseException | None = None
        self.url = ""

        self._handlers: dict[str, Handler] = {
            "getServerVersion": self._get_server_version,
            "pingServer": self._ping_server,
            "getSupportedMediaTypes": self._get_media_types,
            "getMyUser": self._get_my_user,
            "getMyApiKey": self._get_my_api_key,
            "checkBulkUpload": self._check_bulk_upload,
            "uploadAsset": self._upload_asset,
            "getAssetInfo": self._get_asset_info,
            "deleteAssets": self._delete_assets,
            "getAllAlbums": self._get_all_albums,
            "createAlbum": self._create_album,
            "getAlbumInfo": self._get_album_info,
            "addAssetsToAlbum": self._add_assets_to_album,
            "getAllLibraries": self._get_all_libraries,
            "createLibrary": self._create_library,
            "getLibrary": self._get_library,
            "updateLibrary": self._update_library,
            "scanLibrary": self._scan_library,
        }

    # --- life cycle --------------------------------------------------------------------

    def start(self) -> str:
        """Serve in a background thread; return the base URL (without ``/api``)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._serve, name="fake-immich", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("fake Immich did not start within 30 s")
        if self._startup_error is not None:
            raise RuntimeError("fake Immich failed to start") from self._startup_error
        return self.url

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            loop.call_soon_threadsafe(self._begin_stop)
        thread.join(30)
        self._thread = None
        if self._own_storage:
            shutil.rmtree(self.storage_dir, ignore_errors=True)

    def __enter__(self) -> FakeImmich:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # reported to start()
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _startup(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._entry)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     shutdown_timeout=2.0, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.port = port
        self.url = f"http://{host}:{port}"

    def _begin_stop(self) -> None:
        assert self._loop is not None and self._stopping is not None
        self._stopping.set()
        self._loop.call_later(0.05, self._loop.stop)

    # --- test-side API -------------------------------------------------------------------

    def create_user(self, name: str, *, admin: bool = False) -> User:
        with self._lock:
            user = self._users.get(name)
            if user is None:
                user = User(id=new_id(), name=name, email=f"{name}@immich.test",
                            is_admin=admin, cluster_group_id=new_id())
                self._users[name] = user
            elif admin:
                user.is_admin = True
            return user

    def create_api_key(self, user: str = "alice", permissions: Iterable[str] = ("all",), *,
                       admin: bool | None = None, name: str | None = None) -> str:
        """A new API key of *user* (created on first use; ``admin=True`` makes the user an
        admin, which ``/api/libraries`` requires) with the given permissions."""
        allowed = set(self.spec.document["components"]["schemas"]["Permission"]["enum"])
        perms = list(permissions)
        unknown = [p for p in perms if p not in allowed]
        if unknown:
            raise ValueError(f"not Immich permissions: {unknown}")
        with self._lock:
            owner = self.create_user(user, admin=bool(admin))
            if admin is False:
                owner.is_admin = False
            secret = secrets.token_urlsafe(32)
            self._keys[secret] = ApiKey(id=new_id(), name=name or f"{user}-key",
                                        secret=secret, user=owner, permissions=perms)
            return secret

    @property
    def users(self) -> dict[str, User]:
        with self._lock:
            return dict(self._users)

    @property
    def api_keys(self) -> dict[str, ApiKey]:
        with self._lock:
            return dict(self._keys)

    @property
    def assets(self) -> dict[str, Asset]:
        with self._lock:
            return dict(self._assets)

    @property
    def albums(self) -> dict[str, Album]:
        with self._lock:
            return dict(self._albums)

    @property
    def libraries(self) -> dict[str, Library]:
        with self._lock:
            return dict(self._libraries)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def take_validation_errors(self) -> list[ValidationFailure]:
        """Return and forget the validation failures so far (for tests that provoke them)."""
        with self._lock:
            taken = list(self.validation_errors)
            self.validation_errors.clear()
            return taken

    def asset_by_checksum(self, checksum: str, user: str | None = None) -> Asset | None:
        """The asset with this SHA-1 (hex or base64), optionally of one user."""
        digest = from_checksum(checksum).hex()
        with self._lock:
            for asset in self._assets.values():
                if asset.checksum == digest and (user is None or asset.owner == user):
                    return asset
        return None

    def albums_named(self, name: str, user: str | None = None) -> list[Album]:
        with self._lock:
            return [a for a in self._albums.values()
                    if a.name == name and (user is None or a.owner == user)]

    def trash(self, asset_id: str) -> None:
        """Move an asset to the trash, as deleting it in the web UI does."""
        with self._lock:
            asset = self._assets[asset_id]
            asset.deleted_at = asset.updated_at = now()

    def seed_asset(self, user: str = "alice", *, data: bytes | None = None,
                   path: Path | None = None, checksum: str | None = None,
                   filename: str = "seed.jpg", file_created_at: str = "2024-01-01T00:00:00.000Z",
                   trashed: bool = False) -> Asset:
        """Put an asset on the server without an upload (e.g. "30 % already there").

        Give the bytes, a file (hashed in place, not copied) or just the SHA-1."""
        owner = self.create_user(user)
        if data is not None:
            digest = hashlib.sha1(data).hexdigest()
            stored = self.storage_dir / "seed" / f"{new_id()}{mediatypes.extension(filename)}"
            stored.parent.mkdir(parents=True, exist_ok=True)
            stored.write_bytes(data)
            size = len(data)
        elif path is not None:
            hasher = hashlib.sha1()
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    hasher.update(chunk)
            digest, stored, size = hasher.hexdigest(), Path(path), Path(path).stat().st_size
        elif checksum is not None:
            digest, stored, size = from_checksum(checksum).hex(), Path(os.devnull), 0
        else:
            raise TypeError("seed_asset needs data, path or checksum")
        if len(digest) != 40:
            raise ValueError(f"not a SHA-1: {checksum!r}")
        with self._lock:
            key = (owner.id, bytes.fromhex(digest))
            if key in self._by_checksum:
                raise ValueError(f"{user} already has an asset with SHA-1 {digest}")
            asset = Asset(id=new_id(), owner=user, owner_id=owner.id, checksum=digest,
                          filename=filename, path=stored, size=size,
                          type=mediatypes.asset_type(filename),
                          file_created_at=file_created_at, file_modified_at=file_created_at)
            if trashed:
                asset.deleted_at = now()
            self._assets[asset.id] = asset
            self._by_checksum[key] = asset.id
            return asset

    # --- request pipeline ----------------------------------------------------------------

    async def _entry(self, request: web.Request) -> web.StreamResponse:
        headers = {k.lower(): ("<redacted>" if k.lower() in ("x-api-key", "authorization",
                                                              "cookie") else v)
                   for k, v in request.headers.items()}
        record = RequestRecord(method=request.method, path=request.path,
                               query={k: ("<redacted>" if k == "apiKey" else v)
                                      for k, v in request.query.items()},
                               headers=headers, started=time.monotonic())
        with self._lock:
            self._requests.append(record)
        correlation = request.headers.get("X-Correlation-ID") or secrets.token_hex(4)
        request[_CORRELATION_ID] = correlation
        request[_RECORD] = record
        try:
            response = await self._process(request, record)
        except _Reject as reject:
            response = error_response(reject.status, reject.message, reject.errors)
        except (asyncio.CancelledError, ConnectionError):
            record.duration = time.monotonic() - record.started
            raise
        except Exception:
            response = error_response(500, "Internal server error")
            record.extra["exception"] = _format_exception()
        if not response.prepared:
            response.headers["X-Correlation-ID"] = correlation
            record.duration = time.monotonic() - record.started
        record.status = response.status
        return response

    async def _process(self, request: web.Request, record: RequestRecord) -> web.StreamResponse:
        fault = self.faults.take(request.method, request.path)
        slow: Fault | None = None
        if fault is not None:
            record.fault = fault.kind
            if fault.kind in ("slow_body", "lost_answer"):
                slow = fault
            else:
                early = await self._apply_fault(request, record, fault)
                if early is not None:
                    return early

        if request.path == "/.well-known/immich" and request.method == "GET":
            # Not in the OpenAPI document: the CLI's API discovery (before anything else).
            response: web.StreamResponse = web.json_response({"api": {"endpoint": "/api"}})
        elif request.path.startswith("/api/") or request.path == "/api":
            response = await self._api(request, record)
        else:
            response = error_response(404, f"Cannot {request.method} {request.path}")

        if slow is not None and slow.kind == "lost_answer":
            record.extra["lost_answer"] = response.status
            _reset(request)
            await asyncio.sleep(3600)  # cancelled when the connection is gone
            raise ConnectionResetError("fault: lost answer")
        if slow is not None and isinstance(response, web.Response):
            return await self._trickle(request, response, slow)
        return response

    async def _apply_fault(self, request: web.Request, record: RequestRecord,
                           fault: Fault) -> web.StreamResponse | None:
        params = fault.params
        if fault.kind in ("status", "rate_limit"):
            if params["drain"]:
                record.body_bytes_read += await _drain(request)
            status = 429 if fault.kind == "rate_limit" else int(params["status"])
            headers = {}
            if params.get("retry_after") is not None:
                headers["Retry-After"] = str(params["retry_after"])
            message = params.get("message") or _reason(status)
            return error_response(status, message, headers=headers)
        if fault.kind == "delay":
            await self._sleep(float(params["seconds"]))
            return None
        if fault.kind == "reset":
            wanted = int(params["after_bytes"])
            while record.body_bytes_read < wanted:
                chunk = await request.content.read(min(CHUNK, wanted - record.body_bytes_read))
                if not chunk:
                    break
                record.body_bytes_read += len(chunk)
            _reset(request)
            await asyncio.sleep(3600)  # cancelled when the connection is gone
            raise ConnectionResetError("fault: reset")
        if fault.kind == "timeout":
            seconds = params["seconds"]
            await self._sleep(float(seconds) if seconds is not None else None)
            if request.transport is not None:
                request.transport.close()
            await asyncio.sleep(3600)
            raise ConnectionResetError("fault: timeout")
        raise AssertionError(fault.kind)

    async def _sleep(self, seconds: float | None) -> None:
        """Sleep, but wake up when the server stops."""
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _trickle(self, request: web.Request, response: web.Response,
                       fault: Fault) -> web.StreamResponse:
        body = response.body if isinstance(response.body, bytes) else b""
        stream = web.StreamResponse(status=response.status, headers=response.headers)
        stream.headers["X-Correlation-ID"] = request[_CORRELATION_ID]
        stream.content_length = len(body)
        await stream.prepare(request)
        size, interval = int(fault.params["chunk_size"]), float(fault.params["interval"])
        for offset in range(0, len(body), size):
            if offset:
                await self._sleep(interval)
            await stream.write(body[offset:offset + size])
        await stream.write_eof()
        record = request[_RECORD]
        record.duration = time.monotonic() - record.started
        return stream

    async def _api(self, request: web.Request, record: RequestRecord) -> web.StreamResponse:
        op = self.spec.find_operation(request.method, request.path)
        if op is None:
            if self.validate:
                what = ("method not allowed" if self.spec.has_path(request.path)
                        else "path not in the OpenAPI document")
                self._fail("request", request, None, None, [Problem(what)])
            return error_response(404, f"Cannot {request.method} {request.path}")
        record.operation_id = op.operation_id
        handler = self._handlers.get(op.operation_id)
        if handler is None:
            if self.validate:
                self._fail("request", request, op, None, [Problem(
                    f"{op.operation_id} is in the document but not implemented by the fake")])
            return error_response(404, f"Cannot {request.method} {request.path}")

        if self.service_time:
            await self._sleep(self.service_time)

        call = _Call(request, record, op)
        problems: list[Problem] = []
        if op.operation_id != "uploadAsset":  # the upload streams its body: see there
            call.raw_body = await request.read()
            record.body_bytes_read += len(call.raw_body)
            problems = self._check_request(call, call.raw_body)

        denied = self._authenticate(call)
        if denied is not None:
            if op.operation_id == "uploadAsset":
                self._check_request(call, None, body_received=False)
            response: web.StreamResponse = denied
        elif any(p.blocking for p in problems):
            response = _validation_failed(problems)
        else:
            if call.raw_body and request.content_type == "application/json":
                call.body = json.loads(call.raw_body)
            try:
                response = await handler(call)
            except _Reject as reject:
                response = error_response(reject.status, reject.message, reject.errors)
        if isinstance(response, web.Response):
            self._check_response(call, response)
        return response

    def _authenticate(self, call: _Call) -> web.Response | None:
        """Immich's AuthGuard: 401 without a valid key, 403 for admin-only routes and
        missing permissions (``all`` grants everything)."""
        if not call.op.secured:
            return None
        request = call.request
        key = request.headers.get("x-api-key") or request.query.get("apiKey")
        if not key:
            if request.headers.get("authorization", "").lower().startswith("bearer ") or (
                    "immich_access_token" in request.cookies):
                return error_response(401, "Invalid user token")
            return error_response(401, "Authentication required")
        with self._lock:
            api_key = self._keys.get(key)
        if api_key is None:
            return error_response(401, "Invalid API key")
        call.user = api_key.user
        call.api_key = api_key
        call.record.user = api_key.user.name
        if call.op.admin_only and not api_key.user.is_admin:
            return error_response(403, "Forbidden")
        needed = call.op.permission
        if needed and "all" not in api_key.permissions and needed not in api_key.permissions:
            return error_response(403, f"Missing required permission: {needed}")
        call.record.extra["api_key"] = api_key.id
        return None

    # --- validation plumbing -------------------------------------------------------------

    def _check_request(self, call: _Call, body: bytes | None, *, body_received: bool = True,
                       content_type: str | None = None) -> list[Problem]:
        if not self.validate:
            return []
        request = call.request
        problems = self.spec.validate_request(
            self.url, request.method, request.path, request.query.items(),
            request.headers.items(),
            content_type if content_type is not None else request.headers.get(
                "Content-Type", ""),
            body, body_received=body_received)
        if problems:
            self._fail("request", request, call.op, None, problems)
        return problems

    def _check_response(self, call: _Call, response: web.Response) -> None:
        if not self.validate:
            return
        request = call.request
        body = response.body if isinstance(response.body, bytes) else None
        problems = self.spec.validate_response(
            self.url, request.method, request.path, request.query.items(),
            request.headers.items(), request.headers.get("Content-Type", ""),
            response.status, response.headers.get("Content-Type", ""),
            response.headers.items(), body)
        if problems:
            self._fail("response", request, call.op, response.status, problems)

    def _fail(self, direction: str, request: web.Request, op: Operation | None,
              status: int | None, problems: list[Problem]) -> None:
        with self._lock:
            self.validation_errors.append(ValidationFailure(
                direction, request.method, request.path,
                op.operation_id if op else None, status, problems))

    # --- public endpoints ----------------------------------------------------------------

    async def _get_server_version(self, call: _Call) -> web.StreamResponse:
        major, minor, patch = VERSION
        return web.json_response({"major": major, "minor": minor, "patch": patch,
                                  "prerelease": None})

    async def _ping_server(self, call: _Call) -> web.StreamResponse:
        return web.json_response({"res": "pong"})

    async def _get_media_types(self, call: _Call) -> web.StreamResponse:
        return web.json_response({"image": list(mediatypes.IMAGE),
                                  "video": list(mediatypes.VIDEO),
                                  "sidecar": list(mediatypes.SIDECAR)})

    # --- users and keys ------------------------------------------------------------------

    def _user_admin_dto(self, user: User) -> Json:
        with self._lock:
            usage = sum(a.size for a in self._assets.values() if a.owner_id == user.id)
        return {
            "avatarColor": "primary", "clusterGroupId": user.cluster_group_id,
            "createdAt": iso(user.created_at), "deletedAt": None, "email": user.email,
            "id": user.id, "isAdmin": user.is_admin, "license": None, "name": user.name,
            "oauthId": "", "profileChangedAt": iso(user.created_at), "profileImagePath": "",
            "quotaSizeInBytes": None, "quotaUsageInBytes": usage,
            "shouldChangePassword": False, "status": "active",
            "storageLabel": "admin" if user.is_admin else None,
            "updatedAt": iso(user.created_at),
        }

    @staticmethod
    def _user_dto(user: User) -> Json:
        return {"avatarColor": "primary", "email": user.email, "id": user.id,
                "name": user.name, "profileChangedAt": iso(user.created_at),
                "profileImagePath": ""}

    async def _get_my_user(self, call: _Call) -> web.StreamResponse:
        assert call.user is not None
        return web.json_response(self._user_admin_dto(call.user))

    async def _get_my_api_key(self, call: _Call) -> web.StreamResponse:
        api_key = call.api_key
        assert api_key is not None
        return web.json_response({"createdAt": iso(api_key.created_at), "id": api_key.id,
                                  "name": api_key.name, "permissions": api_key.permissions,
                                  "updatedAt": iso(api_key.created_at)})

    # --- assets --------------------------------------------------------------------------

    def _find_duplicate(self, user: User, digest: bytes) -> str | None:
        """The user's upload with this checksum, trashed ones included."""
        with self._lock:
            return self._by_checksum.get((user.id, digest))

    async def _check_bulk_upload(self, call: _Call) -> web.StreamResponse:
        assert call.user is not None
        results = []
        with self._lock:
            for item in call.body["assets"]:
                asset_id = self._by_checksum.get((call.user.id, from_checksum(item["checksum"])))
                if asset_id is None:
                    results.append({"id": item["id"], "action": "accept"})
                else:
                    results.append({"id": item["id"], "action": "reject",
                                    "reason": "duplicate", "assetId": asset_id,
                                    "isTrashed": self._assets[asset_id].is_trashed})
        return web.json_response({"results": results})

    async def _upload_asset(self, call: _Call) -> web.StreamResponse:
        """``POST /api/assets``: Immich's AssetUploadInterceptor answers a known
        ``x-immich-checksum`` with 200 before the body is read; otherwise the multipart body
        is streamed to disk (SHA-1 computed on the way), validated, and deduplicated by the
        computed checksum (trashed assets count)."""
        assert call.user is not None
        request, record, user = call.request, call.record, call.user
        header = request.headers.get("x-immich-checksum")
        if header:
            existing = self._find_duplicate(user, from_checksum(header))
            if existing is not None:
                record.extra["early_duplicate"] = True
                self._check_request(call, None, body_received=False)
                return web.json_response({"id": existing, "status": "duplicate"})

        incoming = self.storage_dir / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        fields: list[tuple[str, str]] = []
        files: dict[str, _Received] = {}
        try:
            try:
                await self._receive_multipart(call, incoming, fields, files)
            except _Reject as reject:
                return error_response(reject.status, reject.message, reject.errors)
            problems = self._check_upload_skeleton(call, fields, files)
            if any(p.blocking for p in problems):
                return _validation_failed(problems)
            if "assetData" not in files:
                return _validation_failed([Problem("Required", "assetData", "required")])
            if self.upload_service_time:
                await self._sleep(self.upload_service_time)
            return self._create_asset(call, dict(fields), files, header)
        finally:
            for received in files.values():
                received.path.unlink(missing_ok=True)

    async def _receive_multipart(self, call: _Call, incoming: Path,
                                 fields: list[tuple[str, str]],
                                 files: dict[str, _Received]) -> None:
        request, record = call.request, call.record
        if not request.content_type.startswith("multipart/"):
            return
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise _Reject(400, "Unexpected nested multipart")
            name = part.name or ""
            if part.filename is None:
                value = bytearray()
                while chunk := await part.read_chunk(CHUNK):
                    value += chunk
                    record.body_bytes_read += len(chunk)
                    if len(value) > MAX_FIELD_BYTES:
                        raise _Reject(413, "Field value too long")
                fields.append((name, value.decode("utf-8", errors="replace")))
                continue
            if name not in ("assetData", "sidecarData") or name in files:
                raise _Reject(400, "Unexpected field")  # multer's LIMIT_UNEXPECTED_FILE
            # Multer's file filter sees the fields received so far: Immich checks
            # `body.filename || originalName` against the part's allowed types.
            checked = dict(fields).get("filename") or part.filename
            ok = mediatypes.is_asset if name == "assetData" else mediatypes.is_sidecar
            if not ok(checked):
                raise _Reject(400, f"Unsupported file type {checked}")
            target = incoming / f"{new_id()}.part"
            received = files[name] = _Received(target, part.filename)
            with open(target, "wb") as out:
                while chunk := await part.read_chunk(CHUNK):
                    out.write(chunk)
                    received.sha1.update(chunk)
                    received.size += len(chunk)
                    record.body_bytes_read += len(chunk)

    def _check_upload_skeleton(self, call: _Call, fields: list[tuple[str, str]],
                               files: dict[str, _Received]) -> list[Problem]:
        """Validate the upload with file payloads left out (they were streamed to disk)."""
        if not self.validate:
            return []
        boundary = "fake-immich-skeleton"
        chunks: list[bytes] = []
        for name, value in fields:
            chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
                          f"\r\n\r\n{value}\r\n".encode())
        for name, received in files.items():
            filename = received.filename.replace('"', "%22")
            chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                          f'filename="{filename}"\r\nContent-Type: application/octet-stream'
                          "\r\n\r\n\r\n".encode())
        chunks.append(f"--{boundary}--\r\n".encode())
        content_type = call.request.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            content_type = f"multipart/form-data; boundary={boundary}"
        problems = self._check_request(call, b"".join(chunks), content_type=content_type)
        undeclared = self.spec.undeclared_fields(
            call.op, [n for n, _ in fields] + list(files))
        if undeclared:
            self._fail("request", call.request, call.op, None, undeclared)
        return problems + undeclared

    def _create_asset(self, call: _Call, fields: dict[str, str],
                      files: dict[str, _Received], header: str | None) -> web.Response:
        assert call.user is not None
        user = call.user
        data = files["assetData"]
        digest = data.sha1.digest()
        filename = fields.get("filename") or data.filename
        with self._lock:
            video_id = fields.get("livePhotoVideoId")
            if video_id:
                video = self._assets.get(video_id)
                if video is None:
                    return error_response(400, "Live photo video not found")
                if video.type != "VIDEO":
                    return error_response(400, "Live photo video must be a video")
                if video.owner_id != user.id:
                    return error_response(400, "Live photo video does not belong to the user")
            existing = self._by_checksum.get((user.id, digest))
            if existing is not None:
                return web.json_response({"id": existing, "status": "duplicate"}, status=200)
            asset_id = new_id()
            folder = self.storage_dir / "upload" / user.id
            folder.mkdir(parents=True, exist_ok=True)
            stored = folder / f"{asset_id}{mediatypes.extension(data.filename)}"
            os.replace(data.path, stored)
            sidecar_path = None
            if "sidecarData" in files:
                sidecar_path = folder / f"{asset_id}.xmp"
                os.replace(files["sidecarData"].path, sidecar_path)
            duration = fields.get("duration")
            asset = Asset(
                id=asset_id, owner=user.name, owner_id=user.id, checksum=digest.hex(),
                filename=filename, path=stored, size=data.size,
                type=mediatypes.asset_type(data.filename),
                file_created_at=fields["fileCreatedAt"],
                file_modified_at=fields["fileModifiedAt"],
                live_photo_video_id=video_id or None, sidecar_path=sidecar_path,
                visibility=fields.get("visibility") or "timeline",
                is_favorite=fields.get("isFavorite") == "true",
                duration=int(duration) if duration else None,
                header_checksum=header, fields=fields)
            self._assets[asset_id] = asset
            self._by_checksum[(user.id, digest)] = asset_id
            if video_id:
                self._assets[video_id].visibility = "hidden"
        return web.json_response({"id": asset_id, "status": "created"}, status=201)

    def _asset_dto(self, asset: Asset) -> Json:
        owner = next(u for u in self._users.values() if u.id == asset.owner_id)
        created = iso(parse_iso(asset.file_created_at))
        return {
            "checksum": asset.checksum_base64, "createdAt": iso(asset.created_at),
            "duration": asset.duration, "fileCreatedAt": created,
            "fileModifiedAt": iso(parse_iso(asset.file_modified_at)), "hasMetadata": False,
            "height": None, "id": asset.id, "isArchived": asset.visibility == "archive",
            "isEdited": False, "isFavorite": asset.is_favorite, "isOffline": False,
            "isTrashed": asset.is_trashed, "libraryId": asset.library_id,
            "livePhotoVideoId": asset.live_photo_video_id, "localDateTime": created,
            "originalFileName": asset.filename,
            "originalMimeType": _mime(asset.filename),
            "originalPath": f"/data/upload/{asset.owner_id}/{asset.path.name}",
            "owner": self._user_dto(owner), "ownerId": asset.owner_id, "thumbhash": None,
            "type": asset.type, "updatedAt": iso(asset.updated_at),
            "visibility": asset.visibility, "width": None,
        }

    async def _get_asset_info(self, call: _Call) -> web.StreamResponse:
        assert call.user is not None
        with self._lock:
            asset = self._assets.get(call.params["id"])
            if asset is None or asset.owner_id != call.user.id:
                return error_response(400, "Not found or no asset.read access")
            return web.json_response(self._asset_dto(asset))

    async def _delete_assets(self, call: _Call) -> web.StreamResponse:
        """Trash (or with ``force`` permanently delete) the caller's assets."""
        assert call.user is not None
        ids = list(dict.fromkeys(call.body["ids"]))
        with self._lock:
            if any(i not in self._assets or self._assets[i].owner_id != call.user.id
                   for i in ids):
                return error_response(400, "Not found or no asset.delete access")
            for asset_id in ids:
                asset = self._assets[asset_id]
                if call.body.get("force"):
                    del self._assets[asset_id]
                    self._by_checksum.pop((asset.owner_id, bytes.fromhex(asset.checksum)), None)
                    for album in self._albums.values():
                        if asset_id in album.asset_ids:
                            album.asset_ids.remove(asset_id)
                elif asset.deleted_at is None:
                    asset.deleted_at = asset.updated_at = now()
        return web.Response(status=204)

    # --- albums --------------------------------------------------------------------------

    def _album_dto(self, album: Album) -> Json:
        owner = next(u for u in self._users.values() if u.id == album.owner_id)
        live = [self._assets[i] for i in album.asset_ids
                if i in self._assets and not self._assets[i].is_trashed]
        dto: Json = {
            "albumName": album.name, "albumThumbnailAssetId": album.thumbnail_asset_id,
            "albumUsers": [{"role": "owner", "user": self._user_dto(owner)}],
            "assetCount": len(live), "createdAt": iso(album.created_at),
            "description": album.description, "hasSharedLink": False, "id": album.id,
            "isActivityEnabled": True, "order": "desc", "shared": False,
            "updatedAt": iso(album.updated_at),
        }
        if live:
            dates = sorted(parse_iso(a.file_created_at) for a in live)
            dto["startDate"], dto["endDate"] = iso(dates[0]), iso(dates[-1])
            dto["lastModifiedAssetTimestamp"] = iso(max(a.updated_at for a in live))
        return dto

    async def _get_all_albums(self, call: _Call) -> web.StreamResponse:
        """Albums the caller owns (sharing is not modelled), with the 3.2.2 filters
        ``name`` (exact), ``id``, ``assetId``, ``isOwned``, ``isShared``."""
        assert call.user is not None
        query = call.request.query
        with self._lock:
            albums = [a for a in self._albums.values() if a.owner_id == call.user.id]
            if "assetId" in query:
                albums = [a for a in albums if query["assetId"] in a.asset_ids]
            else:
                if "name" in query:
                    albums = [a for a in albums if a.name == query["name"]]
                if "id" in query:
                    albums = [a for a in albums if a.id == query["id"]]
                if query.get("isOwned") == "false" or query.get("isShared") == "true":
                    albums = []
            return web.json_response([self._album_dto(a) for a in albums])

    async def _create_album(self, call: _Call) -> web.StreamResponse:
        assert call.user is not None
        body = call.body
        with self._lock:
            for album_user in body.get("albumUsers") or []:
                if not any(u.id == album_user["userId"] for u in self._users.values()):
                    return error_response(400, "Invalid user")
            # Assets the caller may not share are silently left out (checkAccess).
            ids = [i for i in dict.fromkeys(body.get("assetIds") or [])
                   if i in self._assets and self._assets[i].owner_id == call.user.id]
            album = Album(id=new_id(), name=body["albumName"], owner=call.user.name,
                          owner_id=call.user.id, description=body.get("description") or "",
                          asset_ids=ids, thumbnail_asset_id=ids[0] if ids else None)
            self._albums[album.id] = album
            return web.json_response(self._album_dto(album), status=201)

    async def _get_album_info(self, call: _Call) -> web.StreamResponse:
        assert call.user is not None
        with self._lock:
            album = self._albums.get(call.params["id"])
            if album is None or album.owner_id != call.user.id:
                return error_response(400, "Not found or no album.read access")
            return web.json_response(self._album_dto(album))

    async def _add_assets_to_album(self, call: _Call) -> web.StreamResponse:
        """Per id: ``duplicate`` if already in the album, ``no_permission`` if the caller
        cannot share it (not theirs, or no such asset), else success."""
        assert call.user is not None
        with self._lock:
            album = self._albums.get(call.params["id"])
            if album is None:
                return error_response(400, "Album not found")
            if album.owner_id != call.user.id:
                return error_response(400, "Not found or no albumAsset.create access")
            results: list[Json] = []
            present = set(album.asset_ids)
            for asset_id in call.body["ids"]:
                asset = self._assets.get(asset_id)
                if asset_id in present:
                    results.append({"id": asset_id, "success": False, "error": "duplicate"})
                elif asset is None or asset.owner_id != call.user.id:
                    results.append({"id": asset_id, "success": False,
                                    "error": "no_permission"})
                else:
                    present.add(asset_id)
                    album.asset_ids.append(asset_id)
                    results.append({"id": asset_id, "success": True})
            if any(r["success"] for r in results):
                album.updated_at = now()
                if album.thumbnail_asset_id is None:
                    album.thumbnail_asset_id = next(r["id"] for r in results if r["success"])
            return web.json_response(results)

    # --- external libraries (admin only) ---------------------------------------------------

    @staticmethod
    def _library_dto(library: Library) -> Json:
        return {
            "assetCount": 0, "createdAt": iso(library.created_at),
            "exclusionPatterns": library.exclusion_patterns, "id": library.id,
            "importPaths": library.import_paths, "name": library.name,
            "ownerId": library.owner_id,
            "refreshedAt": iso(library.refreshed_at) if library.refreshed_at else None,
            "updatedAt": iso(library.updated_at),
        }

    async def _get_all_libraries(self, call: _Call) -> web.StreamResponse:
        with self._lock:
            return web.json_response([self._library_dto(x) for x in self._libraries.values()])

    async def _create_library(self, call: _Call) -> web.StreamResponse:
        body = call.body
        with self._lock:
            if not any(u.id == body["ownerId"] for u in self._users.values()):
                return error_response(400, "User not found")  # not verified against Immich
            library = Library(
                id=new_id(), name=body.get("name") or "New External Library",
                owner_id=body["ownerId"], import_paths=list(body.get("importPaths") or []),
                exclusion_patterns=list(body.get("exclusionPatterns",
                                                 DEFAULT_EXCLUSION_PATTERNS)))
            self._libraries[library.id] = library
            return web.json_response(self._library_dto(library), status=201)

    def _library_or_reject(self, library_id: str) -> Library:
        library = self._libraries.get(library_id)
        if library is None:
            raise _Reject(400, "Library not found")
        return library

    async def _get_library(self, call: _Call) -> web.StreamResponse:
        with self._lock:
            return web.json_response(self._library_dto(self._library_or_reject(
                call.params["id"])))

    async def _update_library(self, call: _Call) -> web.StreamResponse:
        body = call.body
        with self._lock:
            library = self._library_or_reject(call.params["id"])
            if "name" in body:
                library.name = body["name"]
            if "importPaths" in body:
                library.import_paths = list(body["importPaths"])
            if "exclusionPatterns" in body:
                library.exclusion_patterns = list(body["exclusionPatterns"])
            library.updated_at = now()
            return web.json_response(self._library_dto(library))

    async def _scan_library(self, call: _Call) -> web.StreamResponse:
        with self._lock:
            library = self._library_or_reject(call.params["id"])
            library.scans.append(now())
            library.refreshed_at = library.scans[-1]
        return web.Response(status=204)


class _Received:
    """A file part streamed to disk."""

    def __init__(self, path: Path, filename: str) -> None:
        self.path = path
        self.filename = filename
        self.size = 0
        self.sha1 = hashlib.sha1()


def _validation_failed(problems: list[Problem]) -> web.Response:
    errors = [{"code": p.keyword or "invalid", "path": [x for x in p.location.split(".") if x],
               "message": p.message} for p in problems if p.blocking]
    return error_response(400, "Validation failed", errors)


async def _drain(request: web.Request) -> int:
    total = 0
    with contextlib.suppress(ConnectionError):
        while chunk := await request.content.read(CHUNK):
            total += len(chunk)
    return total


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0), like a crashing proxy."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _mime(filename: str) -> str:
    ext = mediatypes.extension(filename)
    if ext in (".jpg", ".jpeg", ".jpe", ".insp", ".mpo"):
        return "image/jpeg"
    if ext == ".mov":
        return "video/quicktime"
    if mediatypes.is_image(filename):
        return f"image/{ext[1:]}"
    if mediatypes.is_video(filename):
        return f"video/{ext[1:]}"
    return "application/octet-stream"


def _format_exception() -> str:
    import traceback

    return traceback.format_exc()
