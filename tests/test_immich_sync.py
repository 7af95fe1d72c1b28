"""The sync's behaviour against the fake Immich and a real catalog: dedup on both sides,
trashed duplicates, unsupported formats, albums and their races, permissions, every fault
ending in the right state, two workers, and the retry of failures.

Catalogs are seeded with real library files and the rows an ingest writes
(support.immich_catalog.seed); test_immich.py runs the real ingest end to end."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fake_immich import FakeImmich
from support.immich_catalog import (
    Spec,
    load,
    photos,
    rows,
    run_command,
    run_sync,
    seed,
    sync_argv,
    sync_once,
    write_config,
)

from photo_ingest.immich.status import format_status, status
from photo_ingest.immich.sync import Syncer

Make = Callable[..., Path]


@pytest.fixture
def immich_config(tmp_path: Path, dsn: str, library: Path, fake_immich: FakeImmich,
                  immich_key: str) -> Make:
    def make(server: FakeImmich | None = None, key: str | None = None,
             **settings: Any) -> Path:
        return write_config(tmp_path / "immich.toml", dsn, library,
                            (server or fake_immich).url, key or immich_key, **settings)
    return make


def uploads(server: FakeImmich) -> list[Any]:
    """Every POST /api/assets, faulted ones included."""
    return [r for r in server.requests if r.method == "POST" and r.path == "/api/assets"]


def test_server_side_duplicates_and_trash(dsn: str, library: Path, fake_immich: FakeImmich,
                                          immich_config: Make,
                                          db: psycopg.Connection[Any]) -> None:
    specs = photos(6)
    seed(dsn, library, specs)
    there = fake_immich.seed_asset("alice", path=library / specs[0].path)
    trashed = fake_immich.seed_asset("alice", path=library / specs[1].path, trashed=True)
    fake_immich.seed_asset("bob", path=library / specs[2].path)      # another user's copy
    config = immich_config(album="Card")
    s = sync_once(config)
    assert (s.uploaded, s.duplicate, s.trashed, s.failed) == (4, 1, 1, 0)
    assert s.status == "completed"
    state = rows(db)
    assert state[specs[0].path] | {} == {**state[specs[0].path], "state": "done",
                                         "result": "duplicate", "immich_id": there.id}
    t = state[specs[1].path]
    assert (t["state"], t["immich_id"]) == ("trashed", trashed.id)
    assert "in Immich's trash" in t["reason"] and "--retry-failed" in t["reason"]
    album = fake_immich.albums_named("Card")[0]
    assert there.id in album.asset_ids                 # duplicates go in the album too
    assert trashed.id not in album.asset_ids
    assert len(album.asset_ids) == 5
    assert len(uploads(fake_immich)) == 4              # no bytes for the duplicates

    # status says so
    with psycopg.connect(dsn, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        report = status(conn, load(config)[1])
    t0 = report["targets"][0]
    assert (t0["uploaded"], t0["duplicate"], t0["trashed"], t0["backlog"]) == (4, 1, 1, 0)
    text = "\n".join(format_status(report))
    assert "1 in Immich's trash" in text and specs[1].path in text
    assert "last success 2" in text

    # The user empties the trash; --retry-failed uploads it again.
    asyncio.run(_delete_for_good(fake_immich, trashed.id))
    s = sync_once(config, retry_failed=True)
    assert (s.uploaded, s.trashed) == (1, 0)
    assert rows(db)[specs[1].path]["state"] == "done"
    assert len(fake_immich.albums_named("Card")[0].asset_ids) == 6


async def _delete_for_good(server: FakeImmich, asset_id: str) -> None:
    import aiohttp

    key = server.create_api_key("alice")
    async with aiohttp.ClientSession() as session, session.delete(
            f"{server.api_url}/assets", json={"ids": [asset_id], "force": True},
            headers={"x-api-key": key}) as resp:
        assert resp.status == 204


def test_unsupported_formats_are_skipped_with_the_reason(
        dsn: str, library: Path, fake_immich: FakeImmich, immich_config: Make,
        db: psycopg.Connection[Any]) -> None:
    seed(dsn, library, [Spec("2024/06/01/IMG_0001.MEF"), Spec("2024/06/01/IMG_0002.JPG")])
    s = sync_once(immich_config())
    assert (s.uploaded, s.skipped) == (1, 1)
    row = rows(db)["2024/06/01/IMG_0001.MEF"]
    assert row["state"] == "skipped" and ".mef" in row["reason"]
    assert "media-types" in row["reason"]
    checked = [r for r in fake_immich.requests if r.operation_id == "checkBulkUpload"]
    assert len(checked) == 1


def test_albums_reuse_the_oldest_and_survive_a_race(
        dsn: str, library: Path, fake_immich: FakeImmich, immich_key: str,
        immich_config: Make, db: psycopg.Connection[Any]) -> None:
    import aiohttp

    async def create(name: str) -> str:
        async with aiohttp.ClientSession() as session, session.post(
                f"{fake_immich.api_url}/albums", json={"albumName": name},
                headers={"x-api-key": immich_key}) as resp:
            return str((await resp.json())["id"])

    # Two albums of one name exist already (made elsewhere): both workers must pick the
    # oldest; "2024-06-02" does not exist and two workers race to create it.
    first = asyncio.run(create("2024-06-01"))
    asyncio.run(create("2024-06-01"))
    seed(dsn, library, photos(30, day=1) + photos(30, day=2))
    cfg, icfg = load(immich_config(album="{date}"))

    async def two() -> list[Any]:
        return list(await asyncio.gather(Syncer(cfg, icfg, workers=3).run_once(),
                                         Syncer(cfg, icfg, workers=3).run_once()))

    summaries = asyncio.run(two())
    assert sum(s.uploaded for s in summaries) == 60
    assert len(fake_immich.albums_named("2024-06-02")) == 1
    assert len(fake_immich.albums_named("2024-06-01")[0].asset_ids) == 30
    assert fake_immich.albums[first].asset_ids == fake_immich.albums_named("2024-06-01")[0]\
        .asset_ids
    assert {r["album_id"] for r in rows(db).values()} == {
        first, fake_immich.albums_named("2024-06-02")[0].id}
    assert len(uploads(fake_immich)) == 60               # no asset sent twice


def test_album_deleted_in_immich_is_made_again(dsn: str, library: Path,
                                               fake_immich: FakeImmich, immich_config: Make,
                                               db: psycopg.Connection[Any]) -> None:
    config = immich_config(album="Holiday")
    seed(dsn, library, photos(2))
    sync_once(config)
    old = fake_immich.albums_named("Holiday")[0]
    with fake_immich._lock:                                  # deleted by hand in Immich
        del fake_immich._albums[old.id]
    seed(dsn, library, photos(2, start=10), salt=1)
    s = sync_once(config)
    assert s.uploaded == 2 and s.failed == 0
    new = fake_immich.albums_named("Holiday")[0]
    assert new.id != old.id and len(new.asset_ids) == 2


def test_missing_permissions_are_named(dsn: str, library: Path, fake_immich: FakeImmich,
                                       immich_config: Make,
                                       db: psycopg.Connection[Any]) -> None:
    seed(dsn, library, photos(2))
    key = fake_immich.create_api_key("carol", ["user.read", "asset.upload", "album.read"],
                                     name="uploader")
    config = immich_config(key=key, album="{date}")
    check = run_command(config, "check")
    assert check.returncode == 1
    assert "MISSING" in check.stdout
    assert "album.create (to create albums" in check.stdout
    assert "albumAsset.create (to add assets to albums)" in check.stdout
    assert "album.read" not in check.stdout.split("MISSING")[1]
    result = run_sync(config, "--once", "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["status"] == "failed" and "album.create" in data["error"]
    assert "'uploader'" in data["error"]
    assert not uploads(fake_immich)
    # nothing is marked failed for a key problem: the assets are simply still waiting
    assert rows(db) == {}
    with psycopg.connect(dsn, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        assert status(conn, load(config)[1])["backlog"] == 2

    bad = immich_config(key="wrong")
    check = run_command(bad, "check")
    assert check.returncode == 1 and "does not accept the API key" in check.stdout
    good = immich_config(album="{date}")
    check = run_command(good, "check", "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["ok"] is True


def test_unconfigured_sync_says_so(tmp_path: Path, dsn: str, library: Path) -> None:
    config = tmp_path / "plain.toml"
    config.write_text(f'[library]\npath = "{library}"\n[database]\nurl = "{dsn}"\n')
    result = run_sync(config, "--once")
    assert result.returncode == 2
    assert "Immich sync is not configured" in result.stderr


def test_faults_end_in_the_right_state(dsn: str, library: Path,
                                       fake_immich_factory: Callable[..., FakeImmich],
                                       immich_config: Make,
                                       db: psycopg.Connection[Any]) -> None:
    server = fake_immich_factory()
    key = server.create_api_key("alice")
    specs = photos(12, size=300_000)
    seed(dsn, library, specs)
    server.faults.add(r"^/api/assets$", "status", count=3, method="POST", status=503)
    server.faults.add(r"^/api/assets$", "rate_limit", count=2, method="POST", retry_after=1)
    server.faults.add(r"^/api/assets$", "reset", count=2, method="POST", after_bytes=65536)
    server.faults.add(r"^/api/assets$", "status", count=1, method="POST", status=500,
                      skip=6)
    server.faults.add(r"bulk-upload-check", "timeout", count=1, method="POST")
    # one file Immich refuses for good (a proxy's body limit, say)
    server.faults.add(r"^/api/assets$", "status", count=1, method="POST", status=413,
                      skip=10, message="Payload Too Large")
    config = immich_config(server=server, key=key, timeout=2, retries=4)
    s = sync_once(config, backoff_base=0.01)
    assert s.uploaded == 11 and s.failed == 1, s.as_json()
    failed = [r for r in rows(db).values() if r["state"] == "failed"]
    assert len(failed) == 1 and "HTTP 413: Payload Too Large" in failed[0]["reason"]
    assert s.status == "failed"
    assert len(server.assets) == 11
    assert len(server.faults) == 0                      # every fault was hit

    # --retry-failed tries it again; now it goes through
    s = sync_once(config, retry_failed=True)
    assert (s.uploaded, s.failed, s.status) == (1, 0, "completed")
    assert {r["state"] for r in rows(db).values()} == {"done"}


def test_persistent_5xx_gives_up_after_max_attempts(dsn: str, library: Path,
                                                    fake_immich: FakeImmich,
                                                    immich_config: Make,
                                                    db: psycopg.Connection[Any]) -> None:
    seed(dsn, library, photos(2))
    fake_immich.faults.add(r"^/api/assets$", "status", count=None, method="POST",
                           status=502)
    s = sync_once(immich_config(retries=1, max_attempts=3), backoff_base=0.01)
    assert s.failed == 2 and s.retries == 4 and s.retrying == 0
    for r in rows(db).values():
        assert r["state"] == "failed" and r["attempts"] == 3
        assert r["reason"].startswith("gave up after 3 attempt(s): uploadAsset: HTTP 502")
    assert len(uploads(fake_immich)) == 2 * 3 * 2      # assets x attempts x requests


def test_an_asset_put_back_and_then_uploaded_is_a_clean_run(
        dsn: str, library: Path, fake_immich: FakeImmich, immich_config: Make,
        db: psycopg.Connection[Any]) -> None:
    seed(dsn, library, photos(1))
    fake_immich.faults.add(r"^/api/assets$", "status", count=2, method="POST", status=500)
    s = sync_once(immich_config(retries=1, max_attempts=3), backoff_base=0.01)
    assert (s.uploaded, s.failed, s.retries, s.retrying) == (1, 0, 1, 0)
    assert s.status == "completed"
    (row,) = rows(db).values()
    assert (row["state"], row["attempts"]) == ("done", 1)


def test_unreachable_server_leaves_everything_pending(dsn: str, library: Path,
                                                      immich_config: Make, tmp_path: Path,
                                                      db: psycopg.Connection[Any]) -> None:
    seed(dsn, library, photos(2))
    config = write_config(tmp_path / "down.toml", dsn, library, "http://127.0.0.1:9", "k",
                          retries=1)
    result = run_sync(config, "--once", "--json")
    assert result.returncode == 3
    assert "cannot connect to Immich" in json.loads(result.stdout)["error"]


def test_two_workers_never_upload_the_same_asset(
        dsn: str, library: Path, fake_immich_factory: Callable[..., FakeImmich],
        immich_config: Make, db: psycopg.Connection[Any]) -> None:
    server = fake_immich_factory(upload_service_time=0.05)
    key = server.create_api_key("alice")
    seed(dsn, library, photos(150, size=20_000))
    config = immich_config(server=server, key=key, album="{date}")
    procs = []
    for _ in range(2):      # the second starts while the first is uploading
        procs.append(subprocess.Popen(sync_argv(config, "sync", "--once", "--json"),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
        deadline = time.monotonic() + 30
        while not uploads(server) and time.monotonic() < deadline:
            time.sleep(0.02)
    outs = [p.communicate(timeout=120) for p in procs]
    results = [json.loads(out) for out, _ in outs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert sum(r["assets"]["uploaded"] for r in results) == 150
    assert all(r["assets"]["uploaded"] > 0 for r in results)      # both did work
    assert len(uploads(server)) == 150
    assert all(r.status == 201 for r in uploads(server))
    assert len(server.assets) == 150
    assert {r["state"] for r in rows(db).values()} == {"done"}
