"""The catalog database stopped (fast shutdown: every connection cut) and started again
while an ingest, an extract or the sync service works. Nothing is lost, the errors say what
happened, and the work goes on once the database is back. These tests run their own
PostgreSQL, since they stop it."""

from __future__ import annotations

import io
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fake_immich import FakeImmich
from faults import (
    assert_complete,
    ingest_argv,
    record,
    run_ingest,
    session_states,
    trials,
    write_config,
)
from helpers import library_files, random_files, source_hashes
from psycopg.rows import dict_row
from support.immich_catalog import Spec, photos, rows, seed, sync_argv
from support.immich_catalog import write_config as immich_config
from support.pgserver import TempPostgres


@pytest.fixture(scope="module")
def own_pg() -> Iterator[TempPostgres]:
    server = TempPostgres().start()
    yield server
    server.stop()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := check():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _wait_quietly(check: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.1)
    return False


def connect(dsn: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(dsn, row_factory=dict_row, autocommit=True)


def outage(pg: TempPostgres, seconds: float) -> None:
    pg.pause()
    try:
        time.sleep(seconds)
    finally:
        pg.resume()


def test_ingest_waits_for_the_catalog_and_completes(tmp_path: Path,
                                                    own_pg: TempPostgres) -> None:
    started = time.monotonic()
    rng = random.Random(7)
    card = tmp_path / "card"
    random_files(card / "DCIM/100CANON", 14, 2_000_000, seed=31)
    sources = source_hashes(card)
    n_trials = trials(1, 5)
    for n in range(n_trials):
        library = tmp_path / f"library{n}"
        dsn = own_pg.create_database(f"ingest_down_{n}")
        config = write_config(tmp_path / f"i{n}.toml", library, dsn,
                              "[ingest]\ncatalog_wait = 60\n")
        proc = subprocess.Popen(ingest_argv(config, card), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        k = rng.randint(1, 10)
        wait_for(f"{k} files published", lambda lib=library, k=k:  # type: ignore[misc]
                 len(library_files(lib)) >= k)
        outage(own_pg, rng.uniform(1.0, 4.0))
        out, err = proc.communicate(timeout=180)
        report = json.loads(out)
        assert (proc.returncode, report["status"]) == (0, "completed"), err
        assert "lost the catalog database" in err and "is back; continuing" in err
        with connect(dsn) as db:
            assert_complete(db, library, sources)
            assert session_states(db) == ["completed"]
    record("database restarted during ingest", n_trials,
           f"{n_trials}/{n_trials}: the ingest waited, then completed; every byte correct",
           started)


def test_ingest_gives_up_when_the_catalog_stays_away(tmp_path: Path,
                                                     own_pg: TempPostgres) -> None:
    card = tmp_path / "card"
    random_files(card / "DCIM/100CANON", 10, 2_000_000, seed=32)
    library = tmp_path / "library"
    dsn = own_pg.create_database("ingest_gone")
    config = write_config(tmp_path / "i.toml", library, dsn, "[ingest]\ncatalog_wait = 3\n")
    proc = subprocess.Popen(ingest_argv(config, card), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for("a file published", lambda: library_files(library))
    own_pg.pause()
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        own_pg.resume()
    report = json.loads(out)
    assert proc.returncode == 1
    assert "lost the catalog database" in err
    assert report["status"] == "failed"
    assert report["error"].startswith("catalog database error:")
    assert report["error"].endswith("(it did not come back within 3 s)")
    again = run_ingest(config, card)            # the database is back: a rerun resumes
    assert json.loads(again.stdout)["status"] == "completed", again.stderr
    with connect(dsn) as db:
        assert_complete(db, library, source_hashes(card))
        assert session_states(db) == ["interrupted", "completed"]


def tiny_jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(out, "JPEG")
    return out.getvalue()


def test_extract_survives_a_database_restart(tmp_path: Path, own_pg: TempPostgres) -> None:
    started = time.monotonic()
    jpeg = tiny_jpeg()
    library = tmp_path / "library"
    dsn = own_pg.create_database("extract_down")
    # valid JPEGs, each unique by the bytes after its end-of-image marker
    seed(dsn, library, [Spec(f"2024/06/01/IMG_{i:04d}.JPG", data=jpeg + i.to_bytes(4, "big"))
                        for i in range(400)])
    config = write_config(tmp_path / "x.toml", library, dsn,
                          "[metadata]\nbatch_size = 5\nworkers = 1\n")
    argv = [sys.executable, "-m", "photo_ingest", "--config", str(config), "extract", "--json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def extracted() -> int:
        try:
            with connect(dsn) as db:
                row = db.execute("SELECT count(*) AS n FROM asset_metadata").fetchone()
                return int(row["n"]) if row else 0
        except psycopg.OperationalError:
            return 0

    wait_for("some metadata", lambda: extracted() >= 20)
    own_pg.pause()
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        own_pg.resume()
    first = int(extracted())
    assert proc.returncode != 0, out
    assert "metadata:" in err and ("terminating connection" in err or "server closed" in err
                                   or "connection" in err), err
    again = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["status"] == "completed"
    with connect(dsn) as db:
        states = db.execute("SELECT status, count(*) AS n FROM asset_metadata"
                            " GROUP BY status").fetchall()
        assert states == [{"status": "ok", "n": 400}]
    record("database stopped during extract", 1,
           f"1/1: extract stopped with the connection error after {first} of 400; the "
           "rerun did the rest, 400/400 ok", started)


def test_sync_service_pauses_and_resumes_without_double_uploads(
        tmp_path: Path, own_pg: TempPostgres,
        fake_immich_factory: Callable[..., FakeImmich]) -> None:
    started = time.monotonic()
    server = fake_immich_factory(upload_service_time=0.05)
    key = server.create_api_key("alice")
    library = tmp_path / "library"
    dsn = own_pg.create_database("sync_down")
    seed(dsn, library, photos(60, size=20_000))
    config = immich_config(tmp_path / "s.toml", dsn, library, server.url, key, interval=2)
    proc = subprocess.Popen(sync_argv(config, "sync"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for("uploads under way", lambda: len(server.assets) >= 15)
        outage(own_pg, 3.0)

        def done() -> bool:
            try:
                with connect(dsn) as db:
                    states = [r["state"] for r in rows(db).values()]
            except psycopg.OperationalError:
                return False
            return len(states) == 60 and set(states) == {"done"}

        finished = _wait_quietly(done, timeout=90)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert finished, err[-3000:]
    assert "sync paused" in err, err
    posts = [r for r in server.requests if r.method == "POST" and r.path == "/api/assets"]
    created = [r for r in posts if r.status == 201]
    assert len(created) == 60 and len(server.assets) == 60, (len(created), len(posts))
    assert len({a.checksum for a in server.assets.values()}) == 60
    with connect(dsn) as db:
        results = {r["result"] for r in rows(db).values()}
    assert results <= {"uploaded", "duplicate"}
    record("database restarted during the sync service", 1,
           "1/1: the service paused, resumed; 60/60 assets in Immich exactly once", started,
           posts=len(posts))



