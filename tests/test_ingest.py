"""`photo-ingest ingest` end to end: real exiftool-written media, real PostgreSQL, real CLI."""

from __future__ import annotations

import hashlib
import os
import random
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import run_cli
from helpers import (
    assert_catalog_matches_disk,
    incoming,
    ingest_json,
    library_files,
    random_files,
    sha1,
    source_hashes,
)
from support.samplecard import MediaSpec, build_card, sample_card

from photo_ingest.ingest import process

CLI = Callable[..., Any]


@pytest.fixture
def card(tmp_path: Path) -> Path:
    root = tmp_path / "card"
    sample_card(root)
    return root


def by_path(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["path"]: o for o in summary["outcomes"]}


def test_sample_card_is_filed_by_capture_date(card: Path, library: Path, cli: CLI,
                                              db: psycopg.Connection[Any]) -> None:
    result = cli("ingest", card, "--json")
    assert result.returncode == 0, result.stderr
    summary = ingest_json(result)
    out = by_path(summary)
    d = "DCIM/100CANON/"
    expected = {
        d + "IMG_0001.JPG": "2024/06/01/IMG_0001.JPG",
        d + "IMG_0002.JPG": "2024/06/01/IMG_0002.JPG",
        d + "IMG_0003.JPG": "2024/06/01/IMG_0003.JPG",
        d + "IMG_0004.JPG": "2024/06/02/IMG_0004.JPG",   # mtime 08:00 UTC = 10:00 Berlin
        d + "IMG_0007.CR2": "2024/06/02/IMG_0007.CR2",
        d + "IMG_0007.XMP": "2024/06/02/IMG_0007.XMP",   # sidecar follows its RAW
        d + "IMG_0008.DNG": "2024/06/02/IMG_0008.DNG",
        d + "MVI_0009.MP4": "2024/06/02/MVI_0009.MP4",
        d + "MVI_0010.MOV": "2024/06/03/MVI_0010.MOV",
        d + "MVI_0010.THM": "2024/06/03/MVI_0010.THM",
        d + "IMG_0011.PNG": "2024/06/03/IMG_0011.PNG",
        d + "Été 2024.JPG": "2024/07/14/Été 2024.JPG",
        "DCIM/101CANON/IMG_0001.JPG": "2024/06/04/IMG_0001.JPG",
    }
    for rel, lib in expected.items():
        assert out[rel]["outcome"] == "copied", out[rel]
        assert out[rel]["library_path"] == lib
        assert sha1(library / lib) == sha1(card / rel) == out[rel]["sha1"]
    assert out["DCIM/101CANON/IMG_0102.JPG"]["outcome"] == "duplicate"
    assert out["DCIM/101CANON/IMG_0102.JPG"]["library_path"] == "2024/06/01/IMG_0002.JPG"
    assert out["MISC/notes.txt"] == {**out["MISC/notes.txt"], "outcome": "skipped",
                                     "reason": "not a media file: extension .txt"}
    assert summary["status"] == "completed"
    assert summary["files"] == {"seen": 17, "copied": 15, "duplicate": 1, "skipped": 1,
                                "failed": 0}
    on_disk = set(assert_catalog_matches_disk(db, library))
    assert on_disk == {*expected.values(), "2024/06/02/IMG_0005.JPG", "2024/06/03/IMG_0006.JPG"}


def test_capture_times_and_their_sources(card: Path, cli: CLI,
                                         db: psycopg.Connection[Any]) -> None:
    assert cli("ingest", card).returncode == 0
    rows = {r["original_path"].removeprefix("DCIM/100CANON/"): r for r in db.execute(
        "SELECT original_path, captured_at, captured_local, capture_offset, capture_source,"
        " camera_make, camera_model, media_type FROM assets")}

    def check(name: str, local: str, utc: str, offset: str | None, source: str) -> None:
        row = rows[name]
        assert row["captured_local"] == datetime.fromisoformat(local), name
        assert row["captured_at"] == datetime.fromisoformat(utc).replace(tzinfo=UTC), name
        assert (row["capture_offset"], row["capture_source"]) == (offset, source), name

    check("IMG_0001.JPG", "2024-06-01 09:15:02", "2024-06-01 07:15:02", "+02:00",
          "DateTimeOriginal")
    check("IMG_0002.JPG", "2024-06-01 09:15:03.120", "2024-06-01 07:15:03.120", "+02:00",
          "DateTimeOriginal")
    # no offset on the card: the configured zone (Europe/Berlin, CEST) is assumed
    check("IMG_0003.JPG", "2024-06-01 21:47:30", "2024-06-01 19:47:30", None,
          "DateTimeOriginal")
    check("IMG_0004.JPG", "2024-06-02 10:00:00", "2024-06-02 08:00:00", None, "mtime")
    # QuickTime dates are UTC; the library files by Berlin wall-clock time
    check("MVI_0009.MP4", "2024-06-02 16:30:00", "2024-06-02 14:30:00", None,
          "QuickTime:CreateDate")
    check("IMG_0011.PNG", "2024-06-03 12:00:00", "2024-06-03 11:00:00", "+01:00",
          "DateTimeOriginal")
    check("IMG_0007.CR2", "2024-06-02 11:00:00", "2024-06-02 09:00:00", "+02:00",
          "DateTimeOriginal")
    assert rows["IMG_0001.JPG"]["camera_make"] == "Canon"
    assert rows["IMG_0001.JPG"]["camera_model"] == "Canon EOS R6"
    assert {r["media_type"] for r in rows.values()} == {"photo", "raw", "video"}


def test_create_date_and_quicktime_midnight(tmp_path: Path, cli: CLI,
                                            db: psycopg.Connection[Any]) -> None:
    card = tmp_path / "card"
    build_card(card, [
        MediaSpec("DCIM/A.JPG", "jpeg", create_date="2023:12:31 23:59:58", seed=1),
        # 23:30 UTC on New Year's Eve is already 00:30 on 1 January in Berlin
        MediaSpec("DCIM/B.MP4", "mp4", create_date="2023:12:31 23:30:00", seed=2),
        MediaSpec("DCIM/C.JPG", "jpeg", mtime=1_700_000_000.0, seed=3),
    ])
    summary = ingest_json(cli("ingest", card, "--json"))
    out = by_path(summary)
    assert out["DCIM/A.JPG"]["library_path"] == "2023/12/31/A.JPG"
    assert out["DCIM/B.MP4"]["library_path"] == "2024/01/01/B.MP4"
    assert out["DCIM/C.JPG"]["library_path"] == "2023/11/14/C.JPG"  # no date -> mtime
    sources = {r["original_name"]: r["capture_source"]
               for r in db.execute("SELECT original_name, capture_source FROM assets")}
    assert sources == {"A.JPG": "CreateDate", "B.MP4": "QuickTime:CreateDate",
                       "C.JPG": "mtime"}


def test_reinserting_a_card_copies_nothing(card: Path, library: Path, cli: CLI,
                                           db: psycopg.Connection[Any]) -> None:
    assert cli("ingest", card).returncode == 0
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in library.rglob("*")}
    summary = ingest_json(cli("ingest", card, "--json"))
    assert summary["status"] == "completed"
    assert summary["files"] == {"seen": 17, "copied": 0, "duplicate": 16, "skipped": 1,
                                "failed": 0}
    assert summary["bytes"]["copied"] == 0
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in library.rglob("*")
             if ".incoming" not in p.parts}
    assert after == {p: v for p, v in before.items() if ".incoming" not in p.parts}
    assert db.execute("SELECT count(*) AS n FROM assets").fetchone() == {"n": 13}


def test_same_name_different_content_gets_hash_suffix(tmp_path: Path, library: Path,
                                                      cli: CLI,
                                                      db: psycopg.Connection[Any]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    build_card(a, [MediaSpec("DCIM/100A/IMG_0001.JPG", "jpeg",
                             datetime_original="2024:05:05 10:00:00", seed=1)])
    build_card(b, [MediaSpec("DCIM/100B/IMG_0001.JPG", "jpeg",
                             datetime_original="2024:05:05 11:00:00", seed=2)])
    assert cli("ingest", a).returncode == 0
    summary = ingest_json(cli("ingest", b, "--json"))
    second = summary["outcomes"][0]
    assert second["outcome"] == "copied"
    digest = sha1(b / "DCIM/100B/IMG_0001.JPG")
    assert second["library_path"] == f"2024/05/05/IMG_0001_{digest[:8]}.JPG"
    files = assert_catalog_matches_disk(db, library)
    assert sorted(files) == ["2024/05/05/IMG_0001.JPG", f"2024/05/05/IMG_0001_{digest[:8]}.JPG"]


def test_hostile_names_are_kept_and_sanitised(tmp_path: Path, library: Path, cli: CLI,
                                              db: psycopg.Connection[Any]) -> None:
    card = os.fsencode(tmp_path / "card" / "DCIM")
    os.makedirs(card)
    names = [b"caf\xe9.JPG", b"new\nline.JPG", b".hidden.JPG", b"-rf --x.JPG",
             ("é" * 125).encode() + b".JPG", b"$(reboot).JPG"]
    for i, name in enumerate(names):
        with open(os.path.join(card, name), "wb") as fh:
            fh.write(os.urandom(1000 + i))
        os.utime(os.path.join(card, name), (1_717_200_000, 1_717_200_000))
    summary = ingest_json(cli("ingest", tmp_path / "card", "--json"))
    assert summary["files"]["copied"] == len(names), summary
    paths = sorted(o["library_path"] for o in summary["outcomes"])
    assert "2024/06/01/caf_.JPG" in paths and "2024/06/01/new_line.JPG" in paths
    assert "2024/06/01/_hidden.JPG" in paths and "2024/06/01/$(reboot).JPG" in paths
    assert all(len(os.path.basename(p).encode()) <= 255 for p in paths)
    originals = {r["original_path"] for r in db.execute("SELECT original_path FROM assets")}
    assert "DCIM/caf\\xe9.JPG" in originals and "DCIM/new\nline.JPG" in originals
    assert_catalog_matches_disk(db, library)


def test_custom_layout_template(tmp_path: Path, card: Path, make_config: Callable[..., Path],
                                library: Path) -> None:
    config = make_config(extra='layout = "{camera}/{date}/{seq:03}-{stem}.{ext}"',
                         timezone="Europe/Berlin")
    result = run_cli(config, "ingest", card, "--json")
    assert result.returncode == 0, result.stderr
    out = by_path(ingest_json(result))
    assert out["DCIM/100CANON/IMG_0001.JPG"]["library_path"] == \
        "Canon EOS R6/2024-06-01/001-IMG_0001.JPG"
    assert out["DCIM/100CANON/IMG_0004.JPG"]["library_path"] == \
        "Unknown/2024-06-02/004-IMG_0004.JPG"


def test_new_assets_are_notified(card: Path, cli: CLI, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN photo_ingest_assets")
        assert cli("ingest", card).returncode == 0
        ids = {int(n.payload) for n in listener.notifies(timeout=2, stop_after=13)}
        assets = {r[0] for r in listener.execute("SELECT id FROM assets")}
    assert ids == assets and len(ids) == 13


def test_crash_between_link_and_catalog_row_is_adopted(tmp_path: Path, library: Path,
                                                       cli: CLI,
                                                       db: psycopg.Connection[Any]) -> None:
    card = tmp_path / "card"
    (src,) = random_files(card / "DCIM", 1, 50_000, seed=1)
    # What a crash right after the link leaves: the complete file, no row, a temp link.
    target = library / "2024/06/01" / src.name
    target.parent.mkdir(parents=True)
    target.write_bytes(src.read_bytes())
    (library / ".incoming").mkdir()
    (library / ".incoming" / f"{socket.gethostname()}~999999999~dead.part").write_bytes(b"x")
    summary = ingest_json(cli("ingest", card, "--json"))
    assert summary["outcomes"][0]["outcome"] == "copied"
    assert summary["outcomes"][0]["library_path"] == f"2024/06/01/{src.name}"
    assert assert_catalog_matches_disk(db, library) == {f"2024/06/01/{src.name}": sha1(src)}


def test_stale_temps_of_live_processes_are_kept(tmp_path: Path, library: Path,
                                                cli: CLI) -> None:
    random_files(tmp_path / "card", 1, 1000, seed=1)
    (library / ".incoming").mkdir(parents=True)
    me = process.Identity.mine()
    names = {"live": f"{me.pid}.{me.started}", "older version": f"{me.pid}",
             "reused pid": f"{me.pid}.{(me.started or 0) + 1}"}
    for what, owner in names.items():
        temp = library / ".incoming" / f"{socket.gethostname()}~{owner}~{what}.part"
        temp.write_bytes(b"someone else is writing this")
    assert cli("ingest", tmp_path / "card").returncode == 0
    # a temp file of a process that runs is kept; of one whose PID another process now
    # has (another start time), removed
    assert sorted(incoming(library)) == sorted(
        f"{socket.gethostname()}~{names[w]}~{w}.part" for w in ("live", "older version"))


def test_sessions_and_status_report_the_catalog(card: Path, cli: CLI) -> None:
    assert cli("ingest", card, "--label", "EOS_DIGITAL").returncode == 0
    sessions = ingest_json(cli("sessions", "--json"))
    assert len(sessions) == 1
    s = sessions[0]
    assert (s["status"], s["card_label"], s["files_copied"], s["files_duplicate"],
            s["files_skipped"], s["files_failed"]) == ("completed", "EOS_DIGITAL", 15, 1, 1, 0)
    detail = ingest_json(cli("sessions", str(s["id"]), "--json"))
    assert {f["relpath"]: f["outcome"] for f in detail["files"]}["MISC/notes.txt"] == "skipped"
    assert len(detail["files"]) == 17
    text = cli("sessions", str(s["id"])).stdout
    assert "skipped   MISC/notes.txt  not a media file: extension .txt" in text
    status = ingest_json(cli("status", "--json"))
    assert status["assets"] == 13 and status["sidecars"] == 2
    assert status["by_media_type"]["video"]["assets"] == 2
    assert status["last_session"]["id"] == s["id"]
    assert "13 assets" in cli("status").stdout


def test_exit_codes(tmp_path: Path, cli: CLI, make_config: Callable[..., Path]) -> None:
    missing = cli("ingest", tmp_path / "nope")
    assert missing.returncode == 3 and "does not exist" in missing.stderr
    cfg = tmp_path / "down.toml"
    cfg.write_text(f'[library]\npath = "{tmp_path}/lib"\n[database]\n'
                   f'url = "host={tmp_path} port=1 dbname=x connect_timeout=2"\n')
    (tmp_path / "card").mkdir()
    down = run_cli(cfg, "ingest", tmp_path / "card")
    assert down.returncode == 3
    assert "cannot connect to the catalog database" in down.stderr
    assert "Traceback" not in down.stderr
    assert run_cli(None, "--help").returncode == 0
    assert "ingest" in run_cli(None, "--help").stdout


def test_verify_catches_a_corrupted_write(tmp_path: Path, library: Path, config: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str],
                                          db: psycopg.Connection[Any]) -> None:
    """A write that silently changes a byte on its way to storage is caught by verify."""
    from photo_ingest import cli as cli_module
    from photo_ingest.ingest import copy

    card = tmp_path / "card"
    good, bad = random_files(card / "DCIM", 2, 300_000, seed=5)
    real_write = copy._write_all

    def flaky_write(fd: int, data: memoryview) -> None:
        if source_is_open(bad):  # flip one bit of what reaches storage for this file only
            corrupted = bytearray(data)
            corrupted[len(corrupted) // 2] ^= 0x01
            data = memoryview(bytes(corrupted))
        real_write(fd, data)

    def source_is_open(path: Path) -> bool:
        fds = Path("/proc/self/fd")
        return any(os.path.realpath(fd) == str(path) for fd in fds.iterdir())

    monkeypatch.setattr(copy, "_write_all", flaky_write)
    rc = cli_module.main(["--config", str(config), "ingest", str(card), "--json"])
    summary = __import__("json").loads(capsys.readouterr().out)
    assert rc == 1
    assert summary["status"] == "partial"
    out = by_path(summary)
    assert out[f"DCIM/{bad.name}"]["outcome"] == "failed"
    assert out[f"DCIM/{bad.name}"]["reason"].startswith("verify failed: the copy on storage")
    assert out[f"DCIM/{good.name}"]["outcome"] == "copied"
    assert list(library_files(library)) == [f"2024/06/01/{good.name}"]
    assert_catalog_matches_disk(db, library)
    failed = db.execute("SELECT relpath, reason FROM session_files WHERE outcome = 'failed'")
    assert [r["relpath"] for r in failed] == [f"DCIM/{bad.name}"]


def test_source_files_are_never_modified(card: Path, cli: CLI) -> None:
    before = {p: (sha1(p), p.stat().st_mtime_ns) for p in card.rglob("*") if p.is_file()}
    assert cli("ingest", card).returncode == 0
    after = {p: (sha1(p), p.stat().st_mtime_ns) for p in card.rglob("*") if p.is_file()}
    assert after == before
    assert source_hashes(card)  # the card is still all there


@pytest.mark.parametrize(("buffer_size", "direct"), [(65536, True), (65536 + 512, False)],
                         ids=["O_DIRECT", "page-cache"])
def test_reading_back_from_storage(tmp_path: Path, buffer_size: int, direct: bool) -> None:
    """verify = "full" reads each copy back from storage: with O_DIRECT when the buffer can
    be block-aligned (seen in the open file's flags), else through a dropped page cache;
    either way the SHA-1 and length of every size, block-aligned or not."""
    from photo_ingest.ingest.copy import hash_file

    flags: list[int] = []

    def open_flags(_n: int) -> None:
        for fd in Path("/proc/self/fd").iterdir():
            if os.path.realpath(fd) == str(path):
                info = (Path("/proc/self/fdinfo") / fd.name).read_text()
                flags.append(int(info.split("flags:")[1].split()[0], 8))

    for size in (0, 1, 4095, 4097, buffer_size, 3 * buffer_size + 1):
        path = tmp_path / f"f{size}"
        data = random.Random(size).randbytes(size)
        path.write_bytes(data)
        found = hash_file(os.fsencode(path), buffer_size, open_flags, from_storage=True)
        assert found == (hashlib.sha1(data).digest(), size)
    assert flags and all(bool(f & os.O_DIRECT) == direct for f in flags)
