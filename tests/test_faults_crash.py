"""Crash anywhere: SIGKILL the ingester at random byte offsets, at each named crash point
(photo_ingest.faults: between link and catalog row, around the folder fsyncs ...) and at
random instants from outside; check after every kill, then resume and check every byte.

A trial is a fresh library and catalog, four kills across one multi-file copy, then a run
to completion. The CI runs 4 trials; the scorecard (FAULT_TRIALS=full) runs 15.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from faults import (
    assert_complete,
    assert_nothing_half_written,
    ingest_argv,
    record,
    run_ingest,
    session_states,
    trials,
    write_config,
)
from helpers import random_files, source_hashes
from psycopg.rows import dict_row
from support.pgserver import TempPostgres

from photo_ingest.faults import POINTS

TARGETED = [p for p in POINTS if p != "copy.bytes"]
DAY = 86400.0


@pytest.fixture(scope="module")
def crash_card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two folders, two days, name collisions, a duplicate, XMP sidecars: 15 MB in 16 files."""
    card = tmp_path_factory.mktemp("crash") / "card"
    first = random_files(card / "DCIM/100CANON", 8, 1_200_000, seed=11)
    random_files(card / "DCIM/101CANON", 3, 1_200_000, seed=12, mtime=1_717_200_000 + DAY)
    for i, f in enumerate(first[:3]):      # same names as in 100CANON, other bytes
        other = card / "DCIM/101CANON" / f.name
        other.write_bytes(random.Random(i).randbytes(900_000))
        os.utime(other, (1_717_200_000 + DAY,) * 2)
        f.with_suffix(".XMP").write_bytes(b"<x:xmpmeta>" + f.name.encode() + b"</x:xmpmeta>")
    (card / "DCIM/101CANON/COPY0001.JPG").write_bytes(first[5].read_bytes())  # same bytes
    return card


def test_sigkill_anywhere_then_resume(crash_card: Path, tmp_path: Path,
                                      pg: TempPostgres) -> None:
    started = time.monotonic()
    rng = random.Random(20250101)
    sources = source_hashes(crash_card)
    total = sum(p.stat().st_size for p in crash_card.rglob("*") if p.is_file())
    duration = _clean_run_seconds(crash_card, tmp_path, pg)
    n_trials = trials(4, 15)
    landed = {"copy.bytes": 0, "external": 0, **dict.fromkeys(TARGETED, 0)}
    targeted = iter(TARGETED * n_trials)
    for n in range(n_trials):
        library = tmp_path / f"library{n}"
        dsn = pg.create_database(f"crash_{os.getpid()}_{n}")
        config = write_config(tmp_path / f"crash{n}.toml", library, dsn)
        with psycopg.connect(dsn, row_factory=dict_row, autocommit=True) as db:
            kills = 0
            plan = [("copy.bytes", rng.randint(1, total)), (next(targeted), 0),
                    (next(targeted), 0), ("external", 0)]
            for point, offset in plan:
                if point == "external":
                    died = _kill_from_outside(config, crash_card, rng.uniform(0, duration))
                else:
                    nth = offset or rng.randint(1, 4)
                    result = run_ingest(config, crash_card, f"{point}:{nth}")
                    died = result.returncode == -9
                    assert died or result.returncode == 0, result.stderr
                if died:
                    landed[point] += 1
                    kills += 1
                assert_nothing_half_written(db, library, sources)
            final = run_ingest(config, crash_card)
            report = json.loads(final.stdout)
            assert (final.returncode, report["status"]) == (0, "completed"), final.stderr
            assert report["files"]["failed"] == 0
            assert_complete(db, library, sources)
            states = session_states(db)
            assert states[-1] == "completed"
            # a kill before the session began leaves no row; a fault that did not land
            # (its point never reached) let that run complete
            assert set(states) <= {"interrupted", "completed"}
            assert states.count("interrupted") <= kills
    count = sum(landed.values())
    figures = ", ".join(f"{k} {v}" for k, v in landed.items())
    assert all(landed[p] for p in TARGETED if n_trials >= 4), landed
    if n_trials >= 15:
        assert count >= 50, landed
    record("crash anywhere (SIGKILL)", count,
           f"{count}/{count} kills: every byte correct after resume ({figures})", started)


def _clean_run_seconds(card: Path, tmp_path: Path, pg: TempPostgres) -> float:
    config = write_config(tmp_path / "clean.toml", tmp_path / "clean",
                          pg.create_database(f"crash_clean_{os.getpid()}"))
    t = time.monotonic()
    assert run_ingest(config, card).returncode == 0
    return time.monotonic() - t


def _kill_from_outside(config: Path, card: Path, after: float) -> bool:
    """SIGKILL after AFTER seconds, wherever the process is; True if it was still running."""
    proc = subprocess.Popen(ingest_argv(config, card), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=after)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True
