"""Watch folders with real inotify on real directories: files written slowly, renamed into
place, deleted mid-write, new subfolders, catch-up on start, the after-step policies with
duplicates, wait_for_immich against the fake Immich, kill -9 between the after-step's
steps, and a file rewritten between its ingest and its delete. Every test checks bytes on
disk and catalog rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import assert_catalog_matches_disk, sha1

REPO = Path(__file__).resolve().parents[1]
STABLE = 1.0


def payload(n: int, size: int = 64 * 1024) -> bytes:
    """Distinct content per N (random-looking, no EXIF: dated by mtime)."""
    import random

    return random.Random(n).randbytes(size)


def write_config(path: Path, dsn: str, library: Path, watches: list[dict[str, Any]],
                 extra: str = "") -> Path:
    lines = [f'[library]\npath = "{library}"', f'[database]\nurl = "{dsn}"',
             '[ingest]\ntimezone = "Europe/Berlin"', extra]
    for w in watches:
        lines.append("[[watch]]")
        w = {"stable_seconds": STABLE, **w}
        for k, v in w.items():
            value = f'"{v}"' if isinstance(v, str | Path) else str(v).lower()
            lines.append(f"{k} = {value}")
    path.write_text("\n".join(lines) + "\n")
    return path


def argv(config: Path, *args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "photo_ingest", "--config", str(config), "watch",
            *map(os.fspath, args)]


def run_once(config: Path, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv(config, "--once", *args), capture_output=True, text=True,
                            timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result


class Running:
    """A watcher in a child process, stopped with SIGTERM."""

    def __init__(self, config: Path, log: Path, *args: str) -> None:
        self.log = log
        with open(log, "wb") as err:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(argv(config, *args), stdout=subprocess.PIPE,
                                         stderr=err)
        wait_for(lambda: "watching" in self.stderr(), what="the watcher to start")

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        assert "Traceback" not in self.stderr(), self.stderr()
        return code


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(config: Path, *args: str) -> Running:
        w = Running(config, tmp_path / f"watch{len(started)}.log", *args)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or cond}")


def assets(db: psycopg.Connection[Any]) -> dict[str, str]:
    """original path -> SHA-1 hex of every asset."""
    rows = db.execute("SELECT original_path, encode(sha1, 'hex') AS sha1 FROM assets")
    return {r["original_path"]: r["sha1"] for r in rows}


def outcomes(db: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    rows = db.execute("SELECT relpath, outcome FROM session_files ORDER BY relpath")
    return [(r["relpath"], r["outcome"]) for r in rows]


def watch_rows(db: psycopg.Connection[Any]) -> dict[str, str]:
    rows = db.execute("SELECT convert_from(path, 'UTF8') AS path, state FROM watch_files")
    return {r["path"]: r["state"] for r in rows}


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


def test_a_file_written_slowly_is_ingested_only_once_complete(
        tmp_path: Path, dsn: str, library: Path, inbox: Path, watcher: Callable[..., Running],
        db: psycopg.Connection[Any]) -> None:
    config = write_config(tmp_path / "c.toml", dsn, library, [{"path": inbox}])
    w = watcher(config)
    data = payload(1, 512 * 1024)
    target = inbox / "VID_0001.MP4"
    with open(target, "wb") as fh:
        for i in range(8):
            fh.write(data[i * 64 * 1024:(i + 1) * 64 * 1024])
            fh.flush()
            # a stall longer than stable_seconds, the file open for writing all along
            time.sleep(STABLE * 1.6 if i == 3 else 0.3)
            assert assets(db) == {}, f"ingested after {i + 1} of 8 chunks"
    row = wait_for(lambda: assets(db).get("VID_0001.MP4"), what="the ingest")
    assert row == sha1(target)
    on_disk = assert_catalog_matches_disk(db, library)
    assert list(on_disk.values()) == [sha1(target)]
    assert outcomes(db) == [("VID_0001.MP4", "copied")]
    assert target.read_bytes() == data                       # after = leave
    assert watch_rows(db) == {str(target): "kept"}
    session = db.execute("SELECT source, card_label, status FROM ingest_sessions").fetchall()
    assert w.stop() == 0
    session = db.execute("SELECT source, card_label, status FROM ingest_sessions").fetchall()
    assert session == [{"source": str(inbox), "card_label": "inbox", "status": "completed"}]
