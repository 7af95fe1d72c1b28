"""Immich sync end to end: the real `photo-ingest ingest` fills the catalog (real media,
real PostgreSQL), the sync command uploads to the fake Immich over loopback HTTP, and
the server's state, the catalog and the status report must all agree."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fake_immich import FakeImmich
from helpers import sha1
from support.immich_catalog import rows, run_sync, write_config
from support.samplecard import MediaSpec, build_card, sample_card

CLI = Callable[..., Any]


def summary(result: Any) -> dict[str, Any]:
    assert result.stdout, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.fixture
def card(tmp_path: Path) -> Path:
    root = tmp_path / "card"
    sample_card(root)
    return root


def test_sample_card_end_to_end(card: Path, cli: CLI, tmp_path: Path, dsn: str,
                                library: Path, fake_immich: FakeImmich, immich_key: str,
                                db: psycopg.Connection[Any]) -> None:
    assert cli("ingest", card).returncode == 0
    config = write_config(tmp_path / "immich.toml", dsn, library, fake_immich.url,
                          immich_key, album="{year}-{month}-{day}")
    result = run_sync(config, "--once", "--json")
    assert result.returncode == 0, result.stderr
    s = summary(result)
    assets = db.execute("SELECT id, library_path, encode(sha1, 'hex') AS sha1, captured_at,"
                        " captured_local, capture_offset FROM assets").fetchall()
    assert s["status"] == "completed"
    assert s["assets"]["uploaded"] == len(assets) == 13
    assert s["assets"]["failed"] == s["assets"]["duplicate"] == 0

    state = rows(db)
    server = fake_immich.assets
    for a in assets:
        row = state[a["library_path"]]
        assert (row["state"], row["result"]) == ("done", "uploaded"), row
        got = server[row["immich_id"]]
        assert got.checksum == a["sha1"] == sha1(library / a["library_path"])
        assert got.owner == "alice"
        # fileCreatedAt: the capture time with its offset, not the copy's mtime
        sent = datetime.fromisoformat(got.file_created_at)
        assert sent.utcoffset() is not None
        assert sent == a["captured_at"]
        assert sent.replace(tzinfo=None) == a["captured_local"]
        assert row["album"] == f"{a['captured_local']:%Y-%m-%d}"
        assert got.id in fake_immich.albums[row["album_id"]].asset_ids
    by_name = {a.filename: a for a in server.values()}
    assert by_name["IMG_0002.JPG"].file_created_at == "2024-06-01T09:15:03.120+02:00"
    assert by_name["IMG_0007.CR2"].has_sidecar            # the XMP went along
    assert not by_name["MVI_0010.MOV"].has_sidecar        # a THM is not a sidecar for Immich
    assert "Été 2024.JPG" in by_name                       # the original name, UTF-8
    assert all(a.header_checksum for a in server.values())
    names = sorted(a.name for a in fake_immich.albums.values())
    assert names == sorted({f"{a['captured_local']:%Y-%m-%d}" for a in assets})

    # Nothing new: a re-run sends no upload and no album request.
    before = len(fake_immich.requests)
    again = summary(run_sync(config, "--once", "--json"))
    assert again["status"] == "completed"
    assert sum(again["assets"].values()) == 0
    new = [r.operation_id for r in fake_immich.requests[before:]]
    assert "uploadAsset" not in new and "addAssetsToAlbum" not in new
    assert "checkBulkUpload" not in new


def test_live_photo_video_first_then_linked(tmp_path: Path, cli: CLI, dsn: str, library: Path,
                                            fake_immich: FakeImmich, immich_key: str,
                                            db: psycopg.Connection[Any]) -> None:
    card = tmp_path / "card"
    taken = {"datetime_original": "2024:06:01 10:11:12", "offset": "+02:00",
             "make": "Apple", "model": "iPhone 15"}
    build_card(card, [
        MediaSpec("DCIM/100APPLE/IMG_4001.JPG", "jpeg", seed=1, **taken),
        MediaSpec("DCIM/100APPLE/IMG_4001.MOV", "mov", seed=2,
                  create_date="2024:06:01 08:11:13"),
        MediaSpec("DCIM/100APPLE/IMG_4002.JPG", "jpeg", seed=3, **taken),
    ])
    assert cli("ingest", card).returncode == 0
    config = write_config(tmp_path / "immich.toml", dsn, library, fake_immich.url,
                          immich_key, album="Trip")
    result = run_sync(config, "--once", "--json", "--workers", "1")
    assert result.returncode == 0, result.stderr
    by_name = {a.filename: a for a in fake_immich.assets.values()}
    video, still = by_name["IMG_4001.MOV"], by_name["IMG_4001.JPG"]
    assert still.live_photo_video_id == video.id
    assert video.visibility == "hidden"
    assert by_name["IMG_4002.JPG"].live_photo_video_id is None
    album = fake_immich.albums_named("Trip")[0]
    assert video.id not in album.asset_ids           # Immich keeps motion parts out
    assert {still.id, by_name["IMG_4002.JPG"].id} <= set(album.asset_ids)
