"""Kill -9 mid-copy, SIGTERM, two ingesters at once, a full disk, racing migrations (the
SIGKILL-anywhere trials are tests/test_faults_crash.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import run_cli
from faults import record
from helpers import (
    assert_catalog_matches_disk,
    catalogued,
    incoming,
    ingest_json,
    library_files,
    random_files,
    source_hashes,
)
from psycopg.rows import dict_row

from photo_ingest import catalog
from photo_ingest.catalog.migrate import available


def start_ingest(config: Path, source: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "photo_ingest", "--config", str(config),
                             "ingest", str(source), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def part_file_growing(library: Path) -> bool:
    folder = library / ".incoming"
    try:
        return any(e.stat().st_size > 0 for e in os.scandir(folder))
    except FileNotFoundError:
        return False


def assert_every_source_file_once(db: psycopg.Connection[Any], library: Path,
                                  sources: dict[str, str]) -> None:
    on_disk = assert_catalog_matches_disk(db, library)
    assert sorted(on_disk.values()) == sorted(set(sources.values()))


@pytest.fixture
def big_card(tmp_path: Path) -> Path:
    card = tmp_path / "card"
    random_files(card / "DCIM/100TEST", 12, 4_000_000, seed=1)
    for jpg in list((card / "DCIM/100TEST").iterdir())[:3]:
        jpg.with_suffix(".XMP").write_bytes(b"<x:xmpmeta>" + jpg.name.encode() + b"</x>")
    return card


def write_config(path: Path, library: Path, dsn: str) -> Path:
    path.write_text(f'[library]\npath = "{library}"\n[database]\nurl = "{dsn}"\n')
    return path


def test_kill_9_mid_copy_leaves_no_partial_file(big_card: Path, library: Path, config: Path,
                                                db: psycopg.Connection[Any]) -> None:
    proc = start_ingest(config, big_card)
    wait_for(lambda: part_file_growing(library))
    proc.kill()
    proc.communicate()
    # at most the one temp file being written, in the incoming folder; published = catalogued
    assert len(incoming(library)) <= 1 and all(n.endswith(".part") for n in incoming(library))
    assert catalogued(db) == library_files(library)
    final = ingest_json(run_cli(config, "ingest", big_card, "--json"))
    assert final["status"] == "completed"
    assert_every_source_file_once(db, library, source_hashes(big_card))
    statuses = [r["status"] for r in db.execute("SELECT status FROM ingest_sessions ORDER BY id")]
    assert statuses == ["interrupted", "completed"]


def test_sigterm_mid_copy_stops_cleanly(big_card: Path, library: Path, config: Path,
                                        db: psycopg.Connection[Any]) -> None:
    proc = start_ingest(config, big_card)
    wait_for(lambda: part_file_growing(library))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    summary = ingest_json(subprocess.CompletedProcess([], 1, out, err))
    assert summary["status"] == "interrupted"
    assert summary["error"] == "stopped by SIGTERM"
    assert incoming(library) == []
    not_reached = [o for o in summary["outcomes"] if o["outcome"] == "failed"]
    assert not_reached and all(o["reason"] == "not attempted: stopped by SIGTERM"
                               for o in not_reached)
    assert_catalog_matches_disk(db, library)
    row = db.execute("SELECT status, error FROM ingest_sessions").fetchone()
    assert row == {"status": "interrupted", "error": "stopped by SIGTERM"}
    final = ingest_json(run_cli(config, "ingest", big_card, "--json"))
    assert final["status"] == "completed"
    assert_every_source_file_once(db, library, source_hashes(big_card))


def test_two_ingesters_at_once_store_shared_files_once(tmp_path: Path, library: Path,
                                                       config: Path,
                                                       db: psycopg.Connection[Any]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    shared = random_files(a / "DCIM/100A", 20, 200_000, seed=7)
    for f in shared:  # the same bytes, under the same names, on a second card
        (b / "DCIM/100B").mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, b / "DCIM/100B" / f.name)
    random_files(a / "DCIM/100A", 5, 200_000, seed=8)
    random_files(b / "DCIM/100B", 5, 200_000, seed=9)
    procs = [start_ingest(config, a), start_ingest(config, b)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1] for r in results]
    summaries = [ingest_json(subprocess.CompletedProcess([], 0, o, e)) for o, e in results]
    copied = sum(s["files"]["copied"] for s in summaries)
    duplicate = sum(s["files"]["duplicate"] for s in summaries)
    assert (copied, duplicate) == (30, 20)
    assert_every_source_file_once(db, library, {**source_hashes(a), **source_hashes(b)})


def test_concurrent_first_starts_migrate_once(dsn: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            catalog.connect(dsn).close()
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with psycopg.connect(dsn) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == [v for v, _, _ in available()]


# XFS cannot be made smaller than 300 MB; ext4 can.
FILESYSTEMS = {"ext4": (["mkfs.ext4", "-q", "-m", "0"], "64M"),
               "xfs": (["mkfs.xfs", "-q", "-f"], "300M")}


@pytest.fixture(params=sorted(FILESYSTEMS))
def small_library(request: pytest.FixtureRequest,
                  tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A small ext4 or XFS filesystem on a loop device, mounted where the library goes."""
    mkfs, size = FILESYSTEMS[request.param]
    if not shutil.which(mkfs[0]):
        pytest.skip(f"{mkfs[0]} is not installed (tests/bootstrap.sh installs it)")
    image, mount = tmp_path / "lib.img", tmp_path / "library"
    mount.mkdir()
    subprocess.run(["truncate", "-s", size, image], check=True)
    subprocess.run([*mkfs, image], check=True)
    if subprocess.run(["mount", "-o", "loop", image, mount], capture_output=True).returncode:
        pytest.skip("loop mounts are not available here")
    try:
        yield image, mount
    finally:
        subprocess.run(["umount", "-l", mount], check=False)


def test_full_disk_stops_cleanly_and_resumes_when_space_is_freed(
        tmp_path: Path, small_library: tuple[Path, Path], make_config: Callable[..., Path],
        dsn: str) -> None:
    started = time.monotonic()
    _, library = small_library
    config = make_config()
    config.write_text(config.read_text().replace(str(tmp_path / "library"), str(library)))
    ballast = library / "someone-elses-files.bin"  # leaves about 20 MB free
    subprocess.run(["fallocate", "-l", str(shutil.disk_usage(library).free - 20_000_000),
                    ballast], check=True)
    card = tmp_path / "card"
    random_files(card / "DCIM", 8, 4_000_000, seed=3)  # 32 MB into ~20 MB free
    result = run_cli(config, "ingest", card, "--json")
    assert result.returncode == 1
    summary = ingest_json(result)
    assert summary["status"] == "failed"
    assert "library filesystem is full" in summary["error"]
    assert "still to copy" in summary["error"] and "free at least" in summary["error"]
    assert 0 < summary["files"]["copied"] < 8
    assert summary["files"]["copied"] + summary["files"]["failed"] == 8
    left = summary["files"]["failed"]   # the message names what is left and what it needs
    assert f"{left} files ({left * 4.0:.1f} MB) still to copy" in summary["error"]
    shortfall = float(summary["error"].split("free at least ")[1].split(" MB")[0])
    assert 0 < shortfall <= left * 4.0
    with psycopg.connect(dsn, row_factory=dict_row, autocommit=True) as db:
        session = db.execute("SELECT status, error FROM ingest_sessions").fetchone()
        assert session == {"status": "failed", "error": summary["error"]}
        ballast.unlink()  # the user frees space
        assert_catalog_matches_disk(db, library)  # nothing partial, nothing uncatalogued
        again = ingest_json(run_cli(config, "ingest", card, "--json"))
        assert again["status"] == "completed"
        assert again["files"]["copied"] == 8 - summary["files"]["copied"]
        assert_every_source_file_once(db, library, source_hashes(card))
    fstype = library_fstype(library)
    record(f"disk full ({fstype} on a loop device)", 1,
           f"1/1: stopped with {left} files left and the space they need named, no partial "
           "file, resumed after space was freed", started)


def library_fstype(path: Path) -> str:
    return subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(path)],
                          capture_output=True, text=True).stdout.strip()


def test_card_identity_from_a_labelled_filesystem(tmp_path: Path,
                                                  make_config: Callable[..., Path],
                                                  db: psycopg.Connection[Any]) -> None:
    """A real filesystem with a label, mounted read-only: the session knows the card."""
    image, mount = tmp_path / "card.img", tmp_path / "card"
    mount.mkdir()
    subprocess.run(["truncate", "-s", "16M", image], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-L", "EOS_DIGITAL", "-d", _populated(tmp_path),
                    image], check=True)
    if subprocess.run(["mount", "-o", "loop,ro", image, mount],
                      capture_output=True).returncode:
        pytest.skip("loop mounts are not available here")
    try:
        config = make_config(extra='layout = "{card_label}/{filename}"')
        summary = ingest_json(run_cli(config, "ingest", mount, "--json"))
    finally:
        subprocess.run(["umount", "-l", mount], check=False)
    uuid = subprocess.run(["blkid", "-o", "value", "-s", "UUID", image], capture_output=True,
                          text=True).stdout.strip()
    copied = [o["library_path"] for o in summary["outcomes"] if o["outcome"] == "copied"]
    assert copied == ["EOS_DIGITAL/IMG_001_0000.JPG"]
    row = db.execute("SELECT card_label, card_uuid, device FROM ingest_sessions").fetchone()
    assert row is not None
    assert (row["card_label"], row["card_uuid"]) == ("EOS_DIGITAL", uuid)
    assert row["device"].startswith("/dev/loop")


def _populated(tmp_path: Path) -> str:
    root = tmp_path / "card-content"
    random_files(root / "DCIM/100TEST", 1, 10_000, seed=1)
    return str(root)


def test_read_error_on_a_vanished_source_is_an_interruption(
        tmp_path: Path, config: Path, library: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]) -> None:
    """A card pulled mid-read may fail a read before systemd's SIGTERM arrives: the
    session is interrupted (to be resumed), not a list of failed files."""
    import json

    from photo_ingest import cli as cli_module
    from photo_ingest.ingest import copy, pipeline

    card = tmp_path / "card"
    random_files(card / "DCIM", 3, 10_000, seed=9)
    real = copy.copy_to_temp
    calls = []

    def pulled(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # the card goes away during the second file
            shutil.rmtree(card)
            raise copy.SourceError(5, "reading the source failed: Input/output error")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "copy_to_temp", pulled)
    rc = cli_module.main(["--config", str(config), "ingest", str(card), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert summary["status"] == "interrupted"
    assert summary["error"] == "stopped by the card's removal (the source disappeared)"
    assert summary["files"]["copied"] == 1
    assert_catalog_matches_disk(db, library)


def test_systemds_sigterm_while_the_pulled_cards_session_ends_is_held(
        tmp_path: Path, config: Path, library: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], db: psycopg.Connection[Any]) -> None:
    """The read error ends the session; systemd's SIGTERM for the pulled card lands while
    the end is logged. The session must still be recorded interrupted (the VM's pull
    scenario once found it left `running`)."""
    import json

    from photo_ingest import cli as cli_module
    from photo_ingest.ingest import copy, pipeline

    card = tmp_path / "card"
    random_files(card / "DCIM", 3, 10_000, seed=9)

    def pulled(*args: Any, **kwargs: Any) -> Any:
        shutil.rmtree(card)
        raise copy.SourceError(5, "reading the source failed: Input/output error")

    real_error = pipeline.log.error

    def error_then_sigterm(*args: Any, **kwargs: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        real_error(*args, **kwargs)

    monkeypatch.setattr(pipeline, "copy_to_temp", pulled)
    monkeypatch.setattr(pipeline.log, "error", error_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    try:
        rc = cli_module.main(["--config", str(config), "ingest", str(card), "--json"])
    finally:
        signal.signal(signal.SIGTERM, before)
    summary = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert summary["status"] == "interrupted"
    rows = db.execute("SELECT status FROM ingest_sessions").fetchall()
    assert [r["status"] for r in rows] == ["interrupted"]


def test_a_stop_signal_while_the_session_ends_is_held_until_it_is_recorded() -> None:
    """A pulled card: the read error ends the session (interrupted), and systemd's SIGTERM
    arrives while that end is being written. It must not cut the write short; once the end
    is recorded, a stop the session did not already honour is handed on."""
    from photo_ingest.ingest.stops import Stopped, stops_deferred

    def stop(signum: int, _frame: object) -> None:
        raise Stopped(signal.Signals(signum).name)

    before = signal.signal(signal.SIGTERM, stop)
    written = []
    try:
        with stops_deferred(honoured=True):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            written.append("end of an interrupted session")
        with pytest.raises(Stopped, match="SIGTERM"), stops_deferred(honoured=False):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            written.append("end of a completed session")
    finally:
        signal.signal(signal.SIGTERM, before)
    assert written == ["end of an interrupted session", "end of a completed session"]
