"""Immich faults from the fake server, beyond tests/test_immich_sync.py (5xx bursts, 429,
resets, timeouts, a refused upload, two workers): answers lost after the upload was stored,
slow responses, the backoff's growth and jitter and Retry-After read from the request
timestamps, a permanent 4xx sent once, a key without upload permission, a wrong URL.
Every asset ends in Immich exactly once or in an explicit failed state with its reason."""

from __future__ import annotations

import itertools
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from fake_immich import FakeImmich
from faults import record
from support.immich_catalog import photos, rows, run_sync, seed, sync_once, write_config

Factory = Callable[..., FakeImmich]


def upload_requests(server: FakeImmich) -> list[Any]:
    return [r for r in server.requests if r.method == "POST" and r.path == "/api/assets"]


def by_asset(server: FakeImmich) -> dict[str, list[Any]]:
    """Upload requests per asset (the client sends its SHA-1 as x-immich-checksum)."""
    out: dict[str, list[Any]] = defaultdict(list)
    for r in upload_requests(server):
        out[r.headers["x-immich-checksum"]].append(r)
    return out


def assert_each_asset_once(server: FakeImmich, n: int) -> None:
    checksums = [a.checksum for a in server.assets.values()]
    assert len(checksums) == n and len(set(checksums)) == n


def test_lost_answers_and_slow_responses_end_exactly_once(
        dsn: str, library: Path, tmp_path: Path, fake_immich_factory: Factory,
        db: psycopg.Connection[Any]) -> None:
    started = time.monotonic()
    server = fake_immich_factory()
    key = server.create_api_key("alice")
    seed(dsn, library, photos(20, size=100_000))
    # stored, but the answer never arrives: the retry must not make a second asset
    server.faults.add(r"^/api/assets$", "lost_answer", count=3, method="POST")
    server.faults.add(r"^/api/assets$", "slow_body", count=3, method="POST", skip=4,
                      chunk_size=8, interval=0.05)
    server.faults.add(r"bulk-upload-check", "delay", count=1, seconds=1.0)
    server.faults.add(r"^/api/assets$", "reset", count=2, method="POST", skip=8,
                      after_bytes=50_000)
    config = write_config(tmp_path / "c.toml", dsn, library, server.url, key, timeout=5,
                          retries=4)
    s = sync_once(config, backoff_base=0.01)
    assert (s.failed, s.uploaded + s.duplicate) == (0, 20), s.as_json()
    assert len(server.faults) == 0                                   # every fault was hit
    assert_each_asset_once(server, 20)
    lost = [r for r in upload_requests(server) if "lost_answer" in r.extra]
    assert [r.extra["lost_answer"] for r in lost] == [201, 201, 201]
    state = rows(db)
    assert {r["state"] for r in state.values()} == {"done"}
    # the three whose answer was lost were found in Immich on the retry: duplicates
    assert sorted(r["result"] for r in state.values()).count("duplicate") == 3
    ids = {r["immich_id"] for r in state.values()}
    assert ids == set(server.assets)                     # each row names its one asset
    record("Immich: lost answers, slow answers, resets", 1,
           "1/1: 20/20 assets in Immich exactly once, 3 answers lost -> found as duplicates",
           started)


def test_backoff_grows_with_jitter_and_gives_up_with_a_reason(
        dsn: str, library: Path, tmp_path: Path, fake_immich_factory: Factory,
        db: psycopg.Connection[Any]) -> None:
    started = time.monotonic()
    server = fake_immich_factory()
    key = server.create_api_key("alice")
    seed(dsn, library, photos(8, size=4_000))
    # 502, not 503: a 503 is back-pressure, waited out like a 429 (tests/test_immich_client)
    server.faults.add(r"^/api/assets$", "status", count=None, method="POST", status=502)
    config = write_config(tmp_path / "c.toml", dsn, library, server.url, key, retries=3,
                          max_attempts=1, workers=8)
    s = sync_once(config, backoff_base=0.2)
    assert s.failed == 8
    gaps: dict[int, list[float]] = defaultdict(list)      # retry number -> waits seen
    for reqs in by_asset(server).values():
        times = sorted(r.started for r in reqs)
        assert len(times) == 4                            # first try + 3 retries, no more
        for k, (a, b) in enumerate(itertools.pairwise(times), 1):
            gaps[k].append(b - a)
    for k, waits in gaps.items():      # full jitter: uniform(0, 0.2 * 2**(k-1)) + latency
        assert max(waits) <= 0.2 * 2 ** (k - 1) + 0.3, (k, waits)
    # Spread, not lock-step: 8 draws from uniform(0, 0.8) span under 0.2 s once in ~2,600
    # runs; waits without jitter would differ by scheduling noise only. (Counting distinct
    # waits to the millisecond failed once: 8 draws share a millisecond 3 % of the time.)
    assert max(gaps[3]) - min(gaps[3]) >= 0.2, gaps[3]
    assert max(gaps[3]) > 0.2            # the third wait may exceed the first one's cap
    for r in rows(db).values():
        assert r["state"] == "failed"
        assert r["reason"].startswith("gave up after 1 attempt(s): uploadAsset: HTTP 502")
    record("Immich: persistent 502 (backoff)", 8,
           "8/8 assets failed with their reason after 4 requests each; waits within "
           "0.2*2^(k-1) s and all different (jitter)", started)


def test_retry_after_holds_every_upload(dsn: str, library: Path, tmp_path: Path,
                                        fake_immich_factory: Factory) -> None:
    started = time.monotonic()
    server = fake_immich_factory()
    key = server.create_api_key("alice")
    seed(dsn, library, photos(4, size=4_000))
    server.faults.add(r"^/api/assets$", "rate_limit", count=1, method="POST", skip=1,
                      retry_after=2)
    config = write_config(tmp_path / "c.toml", dsn, library, server.url, key, workers=1)
    s = sync_once(config, backoff_base=0.01)
    assert (s.uploaded, s.failed) == (4, 0)
    reqs = upload_requests(server)
    limited = next(i for i, r in enumerate(reqs) if r.status == 429)
    assert reqs[limited + 1].started - reqs[limited].started >= 2.0
    assert_each_asset_once(server, 4)
    record("Immich: 429 with Retry-After: 2", 1,
           "1/1: next upload 2.0 s or more after the 429; 4/4 uploaded once", started)


def test_permanent_4xx_is_sent_once_and_not_again(dsn: str, library: Path, tmp_path: Path,
                                                  fake_immich_factory: Factory,
                                                  db: psycopg.Connection[Any]) -> None:
    started = time.monotonic()
    server = fake_immich_factory()
    key = server.create_api_key("alice")
    seed(dsn, library, photos(3, size=4_000))
    server.faults.add(r"^/api/assets$", "status", count=None, method="POST", status=413,
                      message="Payload Too Large")
    config = write_config(tmp_path / "c.toml", dsn, library, server.url, key, retries=5)
    s = sync_once(config, backoff_base=0.01)
    assert s.failed == 3
    assert all(len(reqs) == 1 for reqs in by_asset(server).values())
    assert len(upload_requests(server)) == 3
    for r in rows(db).values():
        assert r["state"] == "failed" and "HTTP 413: Payload Too Large" in r["reason"]
    sync_once(config, backoff_base=0.01)                  # the next pass leaves them be
    assert len(upload_requests(server)) == 3
    record("Immich: permanent 4xx (413)", 3,
           "3/3 assets: one request each, failed with 'HTTP 413: Payload Too Large', "
           "not sent again", started)


def test_key_without_upload_permission_and_wrong_url(
        dsn: str, library: Path, tmp_path: Path, fake_immich_factory: Factory,
        db: psycopg.Connection[Any]) -> None:
    started = time.monotonic()
    server = fake_immich_factory()
    seed(dsn, library, photos(2))
    key = server.create_api_key("carol", ["user.read", "album.read", "album.create",
                                          "albumAsset.create"], name="viewer")
    config = write_config(tmp_path / "perm.toml", dsn, library, server.url, key)
    result = run_sync(config, "--once", "--json")
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert "asset.upload" in error and "'viewer'" in error
    assert not upload_requests(server)
    assert rows(db) == {}                     # nothing marked failed: the assets still wait

    good = server.create_api_key("alice")
    wrong = write_config(tmp_path / "wrong.toml", dsn, library, server.url + "/photos/",
                         good)
    result = run_sync(wrong, "--once", "--json")
    assert result.returncode != 0
    assert json.loads(result.stdout)["status"] in ("failed", "unavailable")
    message = json.loads(result.stdout)["error"]
    assert "/photos" in message, message
    assert not upload_requests(server) and rows(db) == {}
    record("Immich: key without asset.upload; wrong URL", 2,
           "2/2: refused with the reason named, nothing uploaded, nothing marked failed",
           started, messages=[error, message])
