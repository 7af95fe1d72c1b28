"""Shared parts of the fault-injection scenarios (tests/test_faults_*.py).

Trial counts: each scenario has a quick count for CI and a full one for the scorecard;
`FAULT_TRIALS=full` (set by tests/faults/scorecard.py) selects the full counts.
Every scenario appends one line of JSON to $FAULT_SCORECARD, when set: the figures that
docs/reliability.md publishes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from helpers import catalogued, incoming, library_files


def trials(quick: int, full: int) -> int:
    return full if os.environ.get("FAULT_TRIALS") == "full" else quick


def record(scenario: str, trials: int, result: str, started: float, **extra: Any) -> None:
    """One scorecard line for this scenario (when the scorecard runner asked for it)."""
    out = os.environ.get("FAULT_SCORECARD")
    if not out:
        return
    test = "tests/" + os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    line = {"scenario": scenario, "trials": trials, "result": result,
            "seconds": round(time.monotonic() - started, 1), "test": test, **extra}
    with open(out, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def write_config(path: Path, library: Path, dsn: str, extra: str = "") -> Path:
    path.write_text(f'[library]\npath = "{library}"\n[database]\nurl = "{dsn}"\n{extra}')
    return path


def ingest_argv(config: Path, source: Path) -> list[str]:
    return [sys.executable, "-m", "photo_ingest", "--config", str(config), "ingest",
            str(source), "--json"]


def run_ingest(config: Path, source: Path, fault: str | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The real CLI; with FAULT (see photo_ingest.faults) it kills itself at that point."""
    env = dict(os.environ)
    env.pop("PHOTO_INGEST_FAULT", None)
    if fault:
        env["PHOTO_INGEST_FAULT"] = fault
    return subprocess.run(ingest_argv(config, source), capture_output=True, text=True,
                          env=env, timeout=timeout)


def assert_nothing_half_written(db: psycopg.Connection[Any], library: Path,
                                sources: dict[str, str]) -> dict[str, str]:
    """What must hold at *any* instant, even right after a crash.

    Every file visible in the library is a complete copy of a source file; every catalog
    row names a file that is there with those bytes; the incoming folder holds only temp
    files. A file may be on disk without its row yet (linked, then the crash): the next
    run adopts it. Returns the published files that have no row.
    """
    on_disk = library_files(library)
    wanted = set(sources.values())
    partial = {p: h for p, h in on_disk.items() if h not in wanted}
    assert not partial, f"files in the library that match no source file: {partial}"
    rows = catalogued(db)
    missing = {p: h for p, h in rows.items() if on_disk.get(p) != h}
    assert not missing, f"catalog rows without their bytes on disk: {missing}"
    assert all(n.endswith(".part") for n in incoming(library)), incoming(library)
    return {p: h for p, h in on_disk.items() if p not in rows}


def assert_complete(db: psycopg.Connection[Any], library: Path,
                    sources: dict[str, str]) -> None:
    """After the final run: every source file in the library exactly once, with its SHA-1;
    the catalog describes exactly the files on disk; no temp file left."""
    on_disk = library_files(library)
    assert catalogued(db) == on_disk
    assert incoming(library) == []
    # library_files hashed every file just now: the bytes, not the catalog's word
    assert sorted(on_disk.values()) == sorted(set(sources.values())), "lost or doubled"


def session_states(db: psycopg.Connection[Any]) -> list[str]:
    return [r["status"] for r in db.execute("SELECT status FROM ingest_sessions ORDER BY id")]
