"""The fake server's data: users, API keys, assets, albums, libraries, request log.

Objects are plain dataclasses; the server mutates them under its lock and hands out
shallow copies of its collections, so a test reads a consistent snapshot of which objects
exist (attributes of a live object may still change while requests are in flight).
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def new_id() -> str:
    return str(uuid.uuid4())


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(value: dt.datetime) -> str:
    """JavaScript's ``Date.toISOString()``: UTC with milliseconds and ``Z``."""
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def from_checksum(value: str) -> bytes:
    """Immich's ``fromChecksum``: base64 when 28 characters long, else hex.

    Like Node's ``Buffer.from(value, 'hex')``, hex decoding stops at the first invalid
    pair instead of failing, so garbage simply matches nothing.
    """
    if len(value) == 28:
        try:
            return base64.b64decode(value)
        except ValueError:
            return b""
    out = bytearray()
    for i in range(0, len(value) - 1, 2):
        try:
            out.append(int(value[i:i + 2], 16))
        except ValueError:
            break
    return bytes(out)


@dataclass
class User:
    id: str
    name: str
    email: str
    is_admin: bool
    cluster_group_id: str
    created_at: dt.datetime = field(default_factory=now)


@dataclass
class ApiKey:
    id: str
    name: str
    secret: str
    user: User
    permissions: list[str]
    created_at: dt.datetime = field(default_factory=now)


@dataclass
class Asset:
    id: str
    owner: str  # user name
    owner_id: str
    checksum: str  # SHA-1, lower-case hex, computed by the fake from the received bytes
    filename: str  # originalFileName
    path: Path  # where the received bytes are stored
    size: int
    type: str  # IMAGE | VIDEO | OTHER
    file_created_at: str  # as the client sent it
    file_modified_at: str
    created_at: dt.datetime = field(default_factory=now)
    updated_at: dt.datetime = field(default_factory=now)
    deleted_at: dt.datetime | None = None
    live_photo_video_id: str | None = None
    sidecar_path: Path | None = None
    visibility: str = "timeline"
    is_favorite: bool = False
    duration: int | None = None
    header_checksum: str | None = None  # the x-immich-checksum header, if one was sent
    library_id: str | None = None
    fields: dict[str, str] = field(default_factory=dict)  # every multipart text field

    @property
    def is_trashed(self) -> bool:
        return self.deleted_at is not None

    @property
    def has_sidecar(self) -> bool:
        return self.sidecar_path is not None

    @property
    def checksum_base64(self) -> str:
        return base64.b64encode(bytes.fromhex(self.checksum)).decode()


@dataclass
class Album:
    id: str
    name: str
    owner: str
    owner_id: str
    description: str = ""
    asset_ids: list[str] = field(default_factory=list)  # in the order they were added
    thumbnail_asset_id: str | None = None
    created_at: dt.datetime = field(default_factory=now)
    updated_at: dt.datetime = field(default_factory=now)


@dataclass
class Library:
    id: str
    name: str
    owner_id: str
    import_paths: list[str]
    exclusion_patterns: list[str]
    created_at: dt.datetime = field(default_factory=now)
    updated_at: dt.datetime = field(default_factory=now)
    refreshed_at: dt.datetime | None = None
    scans: list[dt.datetime] = field(default_factory=list)  # one entry per POST .../scan


@dataclass
class RequestRecord:
    """One request as the fake saw it (API keys redacted)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    started: float
    operation_id: str | None = None
    user: str | None = None
    status: int | None = None  # None: no response (reset, timeout, client went away)
    fault: str | None = None
    body_bytes_read: int = 0  # request body bytes the fake consumed
    duration: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
