"""Many workers, one database: four ingesters on overlapping cards and two sync services
at once. No file copied twice, no asset uploaded twice, no deadlock, all work done."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from fake_immich import FakeImmich
from faults import assert_complete, ingest_argv, record, trials
from helpers import random_files, source_hashes
from support.immich_catalog import rows, sync_argv, write_config
from support.pgserver import TempPostgres


def test_four_ingesters_and_two_sync_workers(tmp_path: Path, pg: TempPostgres,
                                             fake_immich_factory: Callable[..., FakeImmich],
                                             ) -> None:
    started = time.monotonic()
    n_trials = trials(1, 3)
    for n in range(n_trials):
        _one_trial(tmp_path / f"t{n}", pg, fake_immich_factory, seed=n)
    record("4 ingesters + 2 sync workers, overlapping cards", n_trials,
           f"{n_trials}/{n_trials}: 80 distinct files from 160 on the cards copied once, "
           "uploaded once; no deadlock", started)


def _one_trial(root: Path, pg: TempPostgres, make_server: Callable[..., FakeImmich],
               seed: int) -> None:
    rng = random.Random(seed)
    pool = random_files(root / "pool", 80, 150_000, seed=40 + seed)
    cards = []
    for c in range(4):         # each card: 40 of the 80, the same name wherever it appears
        card = root / f"card{c}" / "DCIM" / "100CANON"
        card.mkdir(parents=True)
        for f in rng.sample(pool, 40):
            shutil.copy2(f, card / f.name)
        cards.append(card.parent.parent)
    missing = set(pool) - {root / "pool" / p.name for c in cards for p in c.rglob("*.JPG")}
    for i, f in enumerate(sorted(missing)):          # every pool file is on some card
        shutil.copy2(f, cards[i % 4] / "DCIM/100CANON" / f.name)
    library = root / "library"
    server_log = Path(pg.dir) / "server.log"
    log_start = server_log.stat().st_size       # the shared server's log: this trial's part
    dsn = pg.create_database(f"load_{root.name}_{seed}")
    server = make_server(upload_service_time=0.02)
    config = write_config(root / "c.toml", dsn, library, server.url,
                          server.create_api_key("alice"), interval=2)
    syncers = [subprocess.Popen(sync_argv(config, "sync"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        ingesters = [subprocess.Popen(ingest_argv(config, card), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for card in cards]
        results = [p.communicate(timeout=300) for p in ingesters]
        assert [p.returncode for p in ingesters] == [0] * 4, [e for _, e in results]
        reports = [json.loads(out) for out, _ in results]
        copied = sum(r["files"]["copied"] for r in reports)
        seen = sum(r["files"]["seen"] for r in reports)
        assert copied == 80 and seen - copied == sum(r["files"]["duplicate"] for r in reports)
        with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row, autocommit=True) as db:
            sources: dict[str, str] = {}
            for card in cards:
                sources.update({f"{card.name}/{k}": v for k, v in source_hashes(card).items()})
            assert_complete(db, library, sources)
            deadline = time.monotonic() + 180
            while not _all_done(db, 80):
                assert time.monotonic() < deadline, "the sync workers did not finish"
                assert all(p.poll() is None for p in syncers), "a sync worker died"
                time.sleep(0.2)
    finally:
        outs = [_stop(p) for p in syncers]
    posts = [r for r in server.requests if r.method == "POST" and r.path == "/api/assets"]
    assert len(posts) == 80 and all(r.status == 201 for r in posts)
    assert len({a.checksum for a in server.assets.values()}) == len(server.assets) == 80
    assert all("deadlock" not in err for _, err in outs)
    with server_log.open("rb") as fh:
        fh.seek(log_start)
        assert b"deadlock detected" not in fh.read()


def _all_done(db: psycopg.Connection[Any], n: int) -> bool:
    states = [r["state"] for r in rows(db).values()]
    return len(states) == n and set(states) == {"done"}


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=60)
