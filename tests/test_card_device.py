"""`photo-ingest ingest /dev/…`: a real filesystem on a loop device, mounted read-only in a
private namespace, ingested as an unprivileged library user, left alone when it should be."""

from __future__ import annotations

import os
import pwd
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import run_cli
from helpers import assert_catalog_matches_disk, ingest_json, random_files, sha1, source_hashes


def _loop_device(image: Path) -> str:
    out = subprocess.run(["losetup", "--find", "--show", image], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip(f"no loop devices here: {out.stderr.strip()}")
    return out.stdout.strip()


@pytest.fixture
def card_device(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """make(content_dir, label) -> /dev/loopN holding an ext4 filesystem with that content."""
    if os.geteuid() != 0:
        pytest.skip("mounting a card needs root")
    devices: list[str] = []

    def make(content: Path, label: str = "EOS_DIGITAL") -> str:
        image = tmp_path / f"card{len(devices)}.img"
        subprocess.run(["truncate", "-s", "24M", image], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-L", label, "-d", content, image], check=True)
        devices.append(_loop_device(image))
        return devices[-1]

    yield make
    for device in devices:
        subprocess.run(["losetup", "-d", device], check=False)


@pytest.fixture
def library_user_config(tmp_path: Path, make_config: Callable[..., Path],
                        library: Path) -> Path:
    library.mkdir()
    for folder in (tmp_path.parent.parent, tmp_path.parent, tmp_path):
        folder.chmod(0o755)  # pytest's folders are root's alone; nobody must reach the library
    nobody = pwd.getpwnam("nobody")
    (tmp_path / "prom").mkdir()
    for folder in (library, tmp_path / "prom"):  # both written by the library user
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    config = make_config()
    config.write_text(config.read_text() + '[card]\nuser = "nobody"\n'
                      f'deny = ["label:BACKUP"]\n[metrics]\ntextfile_dir = "{tmp_path}/prom"\n')
    return config


def _mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


def test_card_is_ingested_read_only_privately_as_the_library_user(
        tmp_path: Path, card_device: Callable[..., str], library_user_config: Path,
        library: Path, db: psycopg.Connection[Any]) -> None:
    content = tmp_path / "content"
    random_files(content / "DCIM/100TEST", 6, 1_000_000, seed=4)
    device = card_device(content)
    image_before = sha1(tmp_path / "card0.img")
    seen_outside: list[str] = []
    done = threading.Event()

    def watch() -> None:  # the card's mount must never appear in our (the host's) namespace
        while not done.is_set():
            if device in _mounts() or "/run/photo-ingest/cards" in _mounts():
                seen_outside.append(_mounts())
            done.wait(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run_cli(library_user_config, "ingest", device, "--json")
    finally:
        done.set()
        watcher.join()
    assert result.returncode == 0, result.stderr
    summary = ingest_json(result)
    assert summary["status"] == "completed" and summary["files"]["copied"] == 6
    assert summary["card"]["label"] == "EOS_DIGITAL"
    assert summary["ejected"] == f"{os.path.basename(device)} is unmounted and safe to remove"
    assert seen_outside == []
    assert sha1(tmp_path / "card0.img") == image_before  # not a byte written to the card
    files = assert_catalog_matches_disk(db, library)
    assert sorted(files.values()) == sorted(source_hashes(content).values())
    nobody = pwd.getpwnam("nobody").pw_uid
    assert {(library / p).stat().st_uid for p in files} == {nobody}
    session = db.execute("SELECT card_label, device FROM ingest_sessions").fetchone()
    assert session == {"card_label": "EOS_DIGITAL", "device": device}
    prom = (tmp_path / "prom/photo_ingest_ingest.prom").read_text()
    assert 'photo_ingest_ingest_files_total{outcome="copied"} 6.0' in prom


def test_the_library_user_gets_secrets_only_root_can_read(
        tmp_path: Path, card_device: Callable[..., str], library_user_config: Path,
        library: Path, db: psycopg.Connection[Any]) -> None:
    # As under systemd: LoadCredential= files in a folder only the unit's user (root) reads.
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    (creds / "db-password").write_text("not-checked-by-the-test-server\n")
    text = library_user_config.read_text().replace(
        "[database]\n", '[database]\npassword_file = "$CREDENTIALS_DIRECTORY/db-password"\n')
    assert "password_file" in text
    library_user_config.write_text(text)
    content = tmp_path / "content"
    random_files(content / "DCIM/100TEST", 2, 10_000, seed=5)
    result = run_cli(library_user_config, "ingest", card_device(content), "--json",
                     env={**os.environ, "CREDENTIALS_DIRECTORY": str(creds)})
    assert result.returncode == 0, result.stderr
    assert ingest_json(result)["files"]["copied"] == 2
    assert len(assert_catalog_matches_disk(db, library)) == 2


def test_denied_and_non_camera_media_are_left_alone(
        tmp_path: Path, card_device: Callable[..., str], library_user_config: Path,
        library: Path, db: psycopg.Connection[Any]) -> None:
    camera = tmp_path / "camera"
    random_files(camera / "DCIM/100TEST", 1, 1000, seed=5)
    stick = tmp_path / "stick"
    random_files(stick / "Documents", 1, 1000, seed=6)
    for device, reason in [(card_device(camera, label="BACKUP"),
                            "card matches card.deny entry 'label:BACKUP'"),
                           (card_device(stick, label="STICK"),
                            "no DCIM folder: not a camera card")]:
        result = run_cli(library_user_config, "ingest", device, "--json")
        assert result.returncode == 0, result.stderr
        assert ingest_json(result)["left_alone"] == reason
    tables = db.execute("SELECT to_regclass('ingest_sessions') AS t").fetchone()
    assert tables == {"t": None}  # the catalog was not even opened: no session at all
    assert not [p for p in library.iterdir() if p.name != ".incoming"]


def test_block_device_without_root_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from photo_ingest.config import Config
    from photo_ingest.ingest import device

    monkeypatch.setattr(device.os, "geteuid", lambda: 1000)
    with pytest.raises(device.DeviceError, match="needs root"):
        device.ingest_card(Config(), "/dev/sdz1", lambda where, card: {})
