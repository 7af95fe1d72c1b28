"""Card pulled or dying mid-copy, on the host: a FUSE card (tests/faults/cardfs.py) whose
reads fail with EIO after N bytes, or which disappears after N bytes (ENOTCONN, as a
pulled card). No partial file, a clear session state, and the same card read again
completes the rest without a duplicate. The VM scenario `pull` does the same with a real
USB device removed over QMP (docs/vm-test.md)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from faults import (
    assert_complete,
    assert_nothing_half_written,
    record,
    run_ingest,
    session_states,
    trials,
    write_config,
)
from helpers import random_files, source_hashes
from psycopg.rows import dict_row
from support.pgserver import TempPostgres

CARDFS = Path(__file__).parent / "faults" / "cardfs.py"


@contextmanager
def fuse_card(source: Path, mountpoint: Path, *options: str) -> Iterator[Path]:
    mountpoint.mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, str(CARDFS), str(source), str(mountpoint),
                             *options], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mountpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"FUSE is not available here: {proc.communicate()[1][-500:]}")
            time.sleep(0.05)
        yield mountpoint
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


@pytest.fixture(scope="module")
def card_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    card = tmp_path_factory.mktemp("fusecard") / "card"
    random_files(card / "DCIM/100CANON", 10, 700_000, seed=21)
    for f in list((card / "DCIM/100CANON").iterdir())[:2]:
        f.with_suffix(".XMP").write_bytes(b"<x:xmpmeta>" + f.name.encode() + b"</x:xmpmeta>")
    return card


@pytest.mark.parametrize("fault", ["fail-after", "vanish-after"])
def test_card_fails_mid_copy_then_a_good_read_completes(
        fault: str, card_source: Path, tmp_path: Path, pg: TempPostgres) -> None:
    started = time.monotonic()
    rng = random.Random(fault)
    sources = source_hashes(card_source)
    total = sum(p.stat().st_size for p in card_source.rglob("*") if p.is_file())
    n_trials = trials(2, 10)
    for n in range(n_trials):
        library = tmp_path / f"library{n}"
        dsn = pg.create_database(f"card_{fault[:4]}_{os.getpid()}_{n}")
        config = write_config(tmp_path / f"c{n}.toml", library, dsn)
        # the first vanishing card goes at once, while exiftool reads it (before any copy)
        after = 0 if (n, fault) == (0, "vanish-after") else rng.randint(0, total - 1)
        with fuse_card(card_source, tmp_path / f"mnt{n}", f"--{fault}", str(after)) as mnt:
            first = run_ingest(config, mnt)
        report = json.loads(first.stdout)
        assert first.returncode == 1, first.stderr
        with psycopg.connect(dsn, row_factory=dict_row, autocommit=True) as db:
            assert assert_nothing_half_written(db, library, sources) == {}
            failed = [o for o in report["outcomes"] if o["outcome"] == "failed"]
            if fault == "fail-after":
                # the card is there but unreadable: each file it could not read says so
                assert report["status"] == "partial" and failed
                assert all(o["reason"] == "reading the source failed: Input/output error"
                           for o in failed), failed
            else:
                assert report["status"] == "interrupted"
                assert report["error"] == ("stopped by the card's removal "
                                           "(the source disappeared)")
                assert all(o["reason"].startswith("not attempted: stopped by the card's")
                           for o in failed), failed
            row = db.execute("SELECT status, error FROM ingest_sessions").fetchone()
            assert row is not None and row["status"] == report["status"]
            with fuse_card(card_source, tmp_path / f"mnt{n}") as mnt:   # a good read
                again = run_ingest(config, mnt)
            summary = json.loads(again.stdout)
            assert (again.returncode, summary["status"]) == (0, "completed"), again.stderr
            assert summary["files"]["copied"] == len(failed)
            assert_complete(db, library, sources)
            assert session_states(db) == [report["status"], "completed"]
    record(f"card {'read errors' if fault == 'fail-after' else 'pulled'} (FUSE, host)",
           n_trials, f"{n_trials}/{n_trials} trials: no partial file, "
           f"{'failed files with the read error' if fault == 'fail-after' else 'interrupted'}"
           ", the rest completed without duplicates", started)
