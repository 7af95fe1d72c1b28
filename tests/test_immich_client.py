"""The Immich client on its own, against the fake over loopback HTTP: discovery, the
start-up check, streamed uploads with the checksum header (and the early close on a
duplicate), retries, back-pressure, and the pure helpers."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fake_immich import FakeImmich

from photo_ingest.config import ConfigError
from photo_ingest.immich.client import (
    ApiError,
    ImmichClient,
    Throttle,
    TransientError,
    Unreachable,
    Upload,
    backoff,
    retry_after,
)
from photo_ingest.immich.config import ImmichConfig, parse_immich
from photo_ingest.immich.sync import capture_time

T = TypeVar("T")
CREATED = "2024-06-01T10:11:12.000+02:00"


def run(url: str, key: str, body: Callable[[ImmichClient], Awaitable[T]],
        **kwargs: Any) -> T:
    async def main() -> T:
        async with ImmichClient(url, key, **{"backoff_base": 0.01, **kwargs}) as client:
            return await body(client)
    return asyncio.run(main())


def upload_of(path: Path, **kwargs: Any) -> Upload:
    data = path.read_bytes()
    return Upload(path=path, sha1=hashlib.sha1(data).digest(), size=len(data),
                  filename=kwargs.pop("filename", path.name), created_at=CREATED,
                  modified_at=CREATED, **kwargs)


def random_file(path: Path, size: int, seed: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, 1 << 20)
            fh.write(rng.randbytes(n))
            left -= n
    return path


@pytest.mark.parametrize("suffix", ["", "/api", "/api/"])
def test_connect_discovers_the_api_and_reads_the_key(fake_immich: FakeImmich, suffix: str,
                                                     ) -> None:
    key = fake_immich.create_api_key("alice", ["user.read", "asset.upload"], name="sync")
    info = run(fake_immich.url + suffix, key, lambda c: c.connect())
    assert info.api_url == fake_immich.api_url
    assert info.version == "3.2.2"
    assert (info.user_email, info.key_name) == ("alice@immich.test", "sync")
    assert info.has("asset.upload") and not info.has("album.create")
    paths = [r.path for r in fake_immich.requests]
    assert ("/.well-known/immich" in paths) == (suffix == "")


def test_bad_key_and_missing_permission_are_permanent(fake_immich: FakeImmich) -> None:
    with pytest.raises(ApiError) as err:
        run(fake_immich.url, "not-a-key", lambda c: c.connect())
    assert err.value.status == 401 and err.value.auth
    assert "Invalid API key" in str(err.value)
    key = fake_immich.create_api_key("bob", ["user.read"])
    with pytest.raises(ApiError) as err:
        run(fake_immich.url, key, lambda c: c.bulk_check([("1", b"\0" * 20)]))
    assert err.value.status == 403 and "asset.upload" in err.value.message
    # A permanent error is not retried.
    assert sum(r.operation_id == "checkBulkUpload" for r in fake_immich.requests) == 1


def test_unreachable_server() -> None:
    with pytest.raises(Unreachable):
        run("http://127.0.0.1:9", "key", lambda c: c.connect(), retries=1)


def test_upload_streams_from_disk_with_checksum_and_sidecar(
        fake_immich: FakeImmich, immich_key: str, tmp_path: Path) -> None:
    path = random_file(tmp_path / "IMG 0001 é.JPG", 48 << 20)
    xmp = tmp_path / "IMG 0001 é.XMP"
    xmp.write_bytes(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    up = upload_of(path, sidecar=xmp, filename="IMG 0001 é.JPG")
    tracemalloc.start()
    try:
        result = run(fake_immich.url, immich_key, lambda c: c.upload(up))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.status == "created"
    assert result.bytes_sent == up.size + xmp.stat().st_size
    asset = fake_immich.assets[result.immich_id]
    assert asset.checksum == up.sha1.hex() and asset.size == up.size
    assert asset.filename == "IMG 0001 é.JPG"            # the `filename` field, UTF-8
    assert asset.has_sidecar and asset.sidecar_path is not None
    assert asset.sidecar_path.read_bytes() == xmp.read_bytes()
    assert asset.header_checksum == up.sha1.hex()
    assert asset.file_created_at == CREATED
    # 48 MiB went through this process (client and fake server) without being held.
    assert peak < 16 << 20, f"peak traced memory {peak / 1e6:.1f} MB"


def test_duplicate_is_answered_before_the_body_and_the_upload_stops(
        fake_immich: FakeImmich, immich_key: str, tmp_path: Path) -> None:
    path = random_file(tmp_path / "MVI_0001.MP4", 64 << 20)
    seeded = fake_immich.seed_asset("alice", path=path, filename="MVI_0001.MP4")
    started = time.monotonic()
    result = run(fake_immich.url, immich_key, lambda c: c.upload(upload_of(path)))
    assert (result.immich_id, result.status, result.bytes_sent) == (seeded.id, "duplicate", 0)
    record = [r for r in fake_immich.requests if r.operation_id == "uploadAsset"][-1]
    assert record.extra.get("early_duplicate")
    assert record.body_bytes_read < 8 << 20            # far less than the 64 MiB file
    assert time.monotonic() - started < 5


def test_trashed_duplicate_is_reported_by_the_bulk_check(fake_immich: FakeImmich,
                                                         immich_key: str) -> None:
    live = fake_immich.seed_asset("alice", data=b"live")
    gone = fake_immich.seed_asset("alice", data=b"trashed", trashed=True)
    items = [("a", hashlib.sha1(b"live").digest()), ("b", hashlib.sha1(b"trashed").digest()),
             ("c", hashlib.sha1(b"new").digest())]
    results = run(fake_immich.url, immich_key, lambda c: c.bulk_check(items))
    assert [r["id"] for r in results] == ["a", "b", "c"]
    assert results[0] == {"id": "a", "action": "reject", "reason": "duplicate",
                          "assetId": live.id, "isTrashed": False}
    assert results[1]["assetId"] == gone.id and results[1]["isTrashed"] is True
    assert results[2]["action"] == "accept"


def test_bulk_check_sends_at_most_5000_per_request(fake_immich: FakeImmich,
                                                   immich_key: str) -> None:
    items = [(str(i), hashlib.sha1(str(i).encode()).digest()) for i in range(12_001)]
    results = run(fake_immich.url, immich_key, lambda c: c.bulk_check(items))
    assert len(results) == 12_001 and all(r["action"] == "accept" for r in results)
    calls = [r for r in fake_immich.requests if r.operation_id == "checkBulkUpload"]
    assert len(calls) == 3


def test_5xx_timeouts_and_resets_are_retried(fake_immich_factory: Callable[..., FakeImmich],
                                             tmp_path: Path) -> None:
    server = fake_immich_factory()
    key = server.create_api_key("alice")
    path = random_file(tmp_path / "IMG_1.JPG", 3 << 20)
    server.faults.add(r"^/api/assets$", "status", count=2, method="POST", status=502)
    server.faults.add(r"^/api/assets$", "reset", count=1, method="POST", after_bytes=1 << 20)
    server.faults.add(r"^/api/assets$", "timeout", count=1, method="POST")
    # a 1 s answer timeout; the upload's own allowance (size / min_upload_rate) is tiny
    result = run(server.url, key, lambda c: c.upload(upload_of(path)), timeout=1.0,
                 retries=4, min_upload_rate=1 << 30)
    assert result.status == "created"
    outcomes = [r.status for r in server.requests if r.path == "/api/assets"]
    assert outcomes == [502, 502, None, None, 201]
    assert len(server.assets) == 1


def test_retries_run_out_as_transient_error(fake_immich: FakeImmich, immich_key: str) -> None:
    fake_immich.faults.add(r"bulk-upload-check", "status", count=None, status=500)
    with pytest.raises(TransientError) as err:
        run(fake_immich.url, immich_key,
            lambda c: c.bulk_check([("1", b"\1" * 20)]), retries=2)
    assert "HTTP 500" in str(err.value)
    assert sum(r.path.endswith("bulk-upload-check") for r in fake_immich.requests) == 3


def test_429_retry_after_is_honoured_and_halves_concurrency(
        fake_immich: FakeImmich, immich_key: str, tmp_path: Path) -> None:
    fake_immich.faults.add(r"^/api/assets$", "rate_limit", count=1, method="POST",
                           retry_after=1)
    paths = [random_file(tmp_path / f"IMG_{i}.JPG", 4096, seed=i) for i in range(4)]

    async def body(client: ImmichClient) -> tuple[float, int]:
        started = time.monotonic()
        await asyncio.gather(*(client.upload(upload_of(p)) for p in paths))
        return time.monotonic() - started, client.throttle.limit

    seconds, limit = run(fake_immich.url, immich_key, body, workers=4)
    assert seconds >= 1.0
    assert limit < 4
    assert len(fake_immich.assets) == 4
    # the rejected upload was sent again only after the Retry-After time
    times = [r.started for r in fake_immich.requests if r.path == "/api/assets"]
    assert len(times) == 5 and max(times) - min(times) >= 0.95


def test_throttle_limits_and_recovers() -> None:
    async def main() -> list[int]:
        t = Throttle(4)
        t.slow_down(0.0)
        seen = [t.limit]
        active = 0
        peak = 0

        async def job() -> None:
            nonlocal active, peak
            async with t.slot():
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(0.01)
                active -= 1
                t.succeeded()
        await asyncio.gather(*(job() for _ in range(40)))
        return [*seen, peak, t.limit]

    halved, peak, recovered = asyncio.run(main())
    assert halved == 2 and peak <= 4 and recovered == 4


def test_backoff_and_retry_after() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        delay = backoff(attempt, 0.5, 30.0, rng)
        assert 0 < delay <= min(30.0, 0.5 * 2 ** (attempt - 1))
    assert len({round(backoff(3, rng=rng), 6) for _ in range(20)}) > 10   # jitter
    assert retry_after("7") == 7.0
    now = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after("Sat, 01 Jun 2024 12:00:30 GMT", now) == 30.0
    assert retry_after("Sat, 01 Jun 2024 11:00:00 GMT", now) == 0.0
    assert retry_after("soon") is None and retry_after(None) is None


def test_capture_time_keeps_the_wall_clock_and_its_offset() -> None:
    local = datetime(2024, 6, 1, 9, 15, 3, 120000)
    stated = local.replace(tzinfo=None) - timedelta(hours=2)
    assert capture_time(stated.replace(tzinfo=UTC), local) == "2024-06-01T09:15:03.120+02:00"
    west = datetime(2024, 1, 5, 23, 0) + timedelta(hours=5, minutes=30)
    assert capture_time(west.replace(tzinfo=UTC), datetime(2024, 1, 5, 23, 0)) == \
        "2024-01-05T23:00:00.000-05:30"
    assert capture_time(None, local).startswith("2024-06-01T09:15:03.120")


def test_config_table(tmp_path: Path) -> None:
    assert not ImmichConfig().enabled
    c = parse_immich({"url": "https://photos.example.org/", "api_key_file": "key",
                      "album": "{year}-{month} {card_label}", "workers": 8}, tmp_path)
    assert c.enabled and c.url == "https://photos.example.org"
    assert c.api_key_file == tmp_path / "key" and c.workers == 8
    (tmp_path / "key").write_text("secret\n")
    assert c.api_key() == "secret"
    assert c.metrics_address() == ("127.0.0.1", 9467)
    bad = {
        "immich.url: must be an http": {"url": "photos.example.org", "api_key_file": "k"},
        "immich.api_key_file: required": {"url": "http://x"},
        "unknown key immich.key": {"key": "secret"},
        "immich.workers: must be between 1 and 64, got 0": {"workers": 0},
        "immich.album: unknown token {place}": {"album": "{place}"},
        "immich.mode: must be one of upload, library": {"mode": "copy"},
        "immich.timeout: must be a number of seconds": {"timeout": "1m"},
        "immich.metrics_listen: must be HOST:PORT": {"metrics_listen": "9467"},
        "immich.library_path: must be an absolute path": {"library_path": "photos"},
        "immich.url: must not contain credentials": {"url": "http://u:p@x", "api_key_file": "k"},
    }
    for message, table in bad.items():
        with pytest.raises(ConfigError) as err:
            parse_immich(table, tmp_path)
        assert str(err.value).startswith(message), (message, str(err.value))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        parse_immich({"url": "http://x", "api_key_file": str(empty)}).api_key()
