"""`photo-ingest ingest /dev/…`: a real filesystem on a loop device, mounted read-only in a
private namespace, ingested as an unprivileged library user, left alone when it should be."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import run_cli
from faults import record
from helpers import assert_catalog_matches_disk, ingest_json, random_files, sha1, source_hashes


def _loop_device(image: Path) -> str:
    out = subprocess.run(["losetup", "--find", "--show", image], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip(f"no loop devices here: {out.stderr.strip()}")
    return out.stdout.strip()


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A folder of its own, open to the library user (nobody). Not under pytest's base
    folder: each pytest session resets that to root-only, so another session starting on
    the same machine would lock nobody out mid-test."""
    folder = Path(tempfile.mkdtemp(prefix="photo-ingest-card-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


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


def _mirror(tmp_path: Path, config: Path, name: str, required: bool, *,
            present: bool = True) -> Path:
    """A [[mirror]] folder owned by the library user, marked as the mirror by root."""
    path = tmp_path / name
    if present:
        path.mkdir()
        nobody = pwd.getpwnam("nobody")
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    config.write_text(config.read_text() + f'[[mirror]]\nname = "{name}"\npath = "{path}"\n'
                      f"required = {str(required).lower()}\n")
    if present:
        result = run_cli(config, "mirror", "--init", "--destination", name)
        assert result.returncode == 0, result.stderr
    return path


def test_card_is_ejected_when_every_required_mirror_holds_it(
        tmp_path: Path, card_device: Callable[..., str], library_user_config: Path,
        library: Path, db: psycopg.Connection[Any]) -> None:
    content = tmp_path / "content"
    random_files(content / "DCIM/100TEST", 4, 200_000, seed=11)
    device = card_device(content)
    nas = _mirror(tmp_path, library_user_config, "nas", required=True)
    _mirror(tmp_path, library_user_config, "usb", required=False, present=False)
    result = run_cli(library_user_config, "ingest", device, "--json")
    assert result.returncode == 0, result.stderr
    summary = ingest_json(result)
    assert summary["safe_to_format"] is True
    assert summary["safe_reason"].startswith("every file is verified in the library and on "
                                             "nas; best-effort mirror usb lacks 4 file(s) (")
    assert summary["ejected"] == f"{os.path.basename(device)} is unmounted and safe to remove"
    mirrors = {m["name"]: m for m in summary["mirrors"]}
    assert (mirrors["nas"]["copied"], mirrors["nas"]["complete"]) == (4, True)
    assert (mirrors["usb"]["available"], mirrors["usb"]["complete"]) == (False, False)
    files = assert_catalog_matches_disk(db, library)
    assert {p: sha1(nas / p) for p in files} == files  # verified copies, same layout
    nobody = pwd.getpwnam("nobody").pw_uid
    assert {(nas / p).stat().st_uid for p in files} == {nobody}
    rows = db.execute("SELECT destination, state, count(*) AS n FROM mirror_copies"
                      " GROUP BY 1, 2 ORDER BY 1").fetchall()
    assert [tuple(r.values()) for r in rows] == [("nas", "copied", 4), ("usb", "pending", 4)]


def test_card_stays_in_until_the_required_mirror_has_it(
        tmp_path: Path, card_device: Callable[..., str], library_user_config: Path,
        library: Path, db: psycopg.Connection[Any]) -> None:
    content = tmp_path / "content"
    random_files(content / "DCIM/100TEST", 3, 100_000, seed=12)
    device = card_device(content)
    nas = _mirror(tmp_path, library_user_config, "nas", required=True, present=False)
    result = run_cli(library_user_config, "ingest", device, "--json")
    assert result.returncode == 1
    summary = ingest_json(result)
    assert summary["status"] == "completed" and summary["files"]["copied"] == 3
    assert summary["ejected"] is None and summary["safe_to_format"] is False
    assert summary["left_alone"] == ("not safe to format: required mirror nas does not hold "
                                     f"3 file(s) ({nas} does not exist (not mounted?))")
    # The share is back: the same card again is all duplicates, now mirrored, then ejected.
    nas.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(nas, nobody.pw_uid, nobody.pw_gid)
    assert run_cli(library_user_config, "mirror", "--init", "--destination", "nas"
                   ).returncode == 0
    result = run_cli(library_user_config, "ingest", device, "--json")
    assert result.returncode == 0, result.stderr
    summary = ingest_json(result)
    assert summary["files"]["duplicate"] == 3 and summary["safe_to_format"] is True
    assert summary["mirrors"][0]["copied"] == 3
    assert summary["ejected"] is not None
    files = assert_catalog_matches_disk(db, library)
    assert {p: sha1(nas / p) for p in files} == files


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"),
                         [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)],
                         ids=["umask0022", "umask0027"])
def test_library_files_have_the_library_users_owner_and_mode(
        tmp_path: Path, card_device: Callable[..., str], library_user_config: Path,
        library: Path, db: psycopg.Connection[Any], umask: int, file_mode: int,
        dir_mode: int) -> None:
    """docs/configuration.md: files 0644 and folders 0755 less the umask (the card unit's
    UMask=0022), owned by card.user; a temp file in .incoming/ is the library file before
    its link, with the same owner and mode: never more readable than the library."""
    started = time.monotonic()
    content = tmp_path / "content"
    random_files(content / "DCIM/100TEST", 4, 100_000, seed=6)
    device = card_device(content)
    nobody = pwd.getpwnam("nobody").pw_uid

    def owners_and_modes() -> dict[str, tuple[int, int]]:
        found = {}
        for dirpath, dirnames, filenames in os.walk(library):
            for name in dirnames + filenames:
                st = (Path(dirpath) / name).lstat()
                found[str((Path(dirpath) / name).relative_to(library))] = \
                    (st.st_uid, st.st_mode & 0o7777)
        return found

    def expected(rel: str) -> tuple[int, int]:
        return nobody, (dir_mode if (library / rel).is_dir() else file_mode)

    # Killed once its third temp file is fsynced: two files published, a temp file left.
    crashed = run_cli(library_user_config, "ingest", device, umask=umask,
                      env={**os.environ, "PHOTO_INGEST_FAULT": "copy.fsynced:3"})
    assert crashed.returncode != 0
    seen = owners_and_modes()
    temps = [p for p in seen if p.startswith(".incoming/")]
    assert len(temps) == 1 and len([p for p in seen if Path(p).suffix == ".JPG"]) == 2, seen
    assert seen == {p: expected(p) for p in seen}

    done = run_cli(library_user_config, "ingest", device, "--json", umask=umask)
    assert done.returncode == 0, done.stderr
    files = assert_catalog_matches_disk(db, library)
    assert len(files) == 4
    seen = owners_and_modes()
    assert seen == {p: expected(p) for p in seen}
    assert ".incoming" in seen and "2024" in seen
    record(f"security: library owner and mode (umask {umask:04o})", 1,
           f"{len(seen)} files and folders, a crash's temp file included: owner nobody "
           f"(card.user), files {file_mode:04o}, folders {dir_mode:04o}", started)
