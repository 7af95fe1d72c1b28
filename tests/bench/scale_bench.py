#!/usr/bin/env python3
"""The catalog at scale: 100,000 assets, then a new 1,000-file card and `status`.

    python tests/bench/scale_bench.py [--assets 100000] [--files 1000] [--json]

It starts a private PostgreSQL (tests/support/pgserver.py), fills one catalog with ASSETS
assets (plus a session_files row each, a sidecar for every tenth, a current metadata
record and a done Immich row each) by COPY, and a second catalog stays empty. Then it runs
the real `photo-ingest ingest` of the same new card of FILES small files (4 KB: the copy
costs little, the catalog work shows) into each, and `photo-ingest status --json` against
each, and reports

* the wall time per file of each ingest and the difference: the per-file catalog cost
  that the 100,000 rows add (on a busy machine the difference is within the noise), and
  the server-side time of every statement of a 50-file ingest into the big catalog, per
  file;
* every statement the two commands ran against the big catalog, with its plan, by
  auto_explain (PGOPTIONS, ANALYZE on), and any Seq Scan on a big table among them.

docs/performance.md ("The catalog at scale") has the figures and the command.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "python" / "src"))

from support.pgserver import TempPostgres  # noqa: E402

from photo_ingest import catalog  # noqa: E402

BIG_TABLES = ("assets", "session_files", "sidecars", "asset_metadata", "immich_assets")
EXPLAIN = ("-c session_preload_libraries=auto_explain -c auto_explain.log_min_duration=0"
           " -c auto_explain.log_analyze=on -c auto_explain.log_nested_statements=on")


def fill(dsn: str, n: int) -> None:
    """N assets and their rows, by COPY: what years of ingests would have left."""
    from photo_ingest.config import Config
    from photo_ingest.metadata.backlog import Versions
    from photo_ingest.metadata.extractor import EXTRACTOR_VERSION
    from photo_ingest.metadata.normalise import NORMALISER_VERSION, Settings

    settings = Versions(Settings.from_config(Config()).fingerprint()).settings
    rng = random.Random(1)
    day0 = datetime(2015, 1, 1)
    with catalog.connect(dsn) as conn, conn.transaction():
        sid = conn.execute("INSERT INTO ingest_sessions (source, host, pid, status)"
                           " VALUES ('/old', 'old', 1, 'completed') RETURNING id"
                           ).fetchone()["id"]
        target = conn.execute("INSERT INTO immich_targets (user_id, mode, url) VALUES"
                              " (gen_random_uuid(), 'upload', 'http://immich') RETURNING id"
                              ).fetchone()["id"]
        assets, files, sidecars, meta, immich = (io.StringIO() for _ in range(5))
        now = datetime.now(UTC).isoformat()
        for i in range(1, n + 1):
            sha = hashlib.sha1(i.to_bytes(8, "big")).hexdigest()
            taken = day0 + timedelta(minutes=i * 5)
            path = f"{taken:%Y/%m/%d}/IMG_{i:06d}.JPG"
            size = rng.randint(2_000_000, 12_000_000)
            assets.write(f"{i}\t\\\\x{sha}\t{size}\t{path}\tphoto\tDCIM/IMG_{i:06d}.JPG\t"
                         f"IMG_{i:06d}.JPG\t{taken.isoformat()}\tmtime\t{sid}\n")
            files.write(f"{sid}\tDCIM/IMG_{i:06d}.JPG\t{size}\t\\\\x{sha}\tcopied\t{i}\t{path}\n")
            if i % 10 == 0:
                sidecars.write(f"{i}\t\\\\x{hashlib.sha1(sha.encode()).hexdigest()}\t900\t"
                               f"{path[:-4]}.XMP\tDCIM/IMG_{i:06d}.XMP\t{sid}\n")
            meta.write(f"{i}\tok\t{EXTRACTOR_VERSION}\t{NORMALISER_VERSION}\t{settings}\t"
                       f"{now}\t{now}\t\\\\x{sha}\t"
                       f"{'{' + str(i // 10) + '}' if i % 10 == 0 else '{}'}\n")
            immich.write(f"{target}\t{i}\tdone\tuploaded\t{now}\n")
        copies = [
            ("assets (id, sha1, size, library_path, media_type, original_path, original_name,"
             " captured_local, capture_source, session_id)", assets),
            ("session_files (session_id, relpath, size, sha1, outcome, asset_id, library_path)",
             files),
            ("sidecars (asset_id, sha1, size, library_path, original_path, session_id)",
             sidecars),
            ("asset_metadata (asset_id, status, extractor_version, normaliser_version,"
             " normaliser_settings, extracted_at, normalised_at, sha1, sidecar_ids)", meta),
            ("immich_assets (target_id, asset_id, state, result, updated_at)", immich),
        ]
        with conn.cursor() as cur:
            for table, data in copies:
                with cur.copy(f"COPY {table} FROM STDIN") as copy:
                    copy.write(data.getvalue())
        conn.execute("SELECT setval('assets_id_seq', %s)", (n,))
        conn.execute("SELECT setval('sidecars_id_seq', %s)", (n // 10,))
    with catalog.connect(dsn) as conn:
        conn.execute("VACUUM ANALYZE")


def card(root: Path, n: int) -> Path:
    rng = random.Random(2)
    folder = root / "card" / "DCIM" / "100CANON"
    folder.mkdir(parents=True)
    for i in range(n):
        f = folder / f"NEW_{i:05d}.JPG"
        f.write_bytes(rng.randbytes(4096))
        os.utime(f, (1_735_000_000 + i * 60,) * 2)
    return folder.parent.parent


def run(config: Path, *args: str, explain: bool = False) -> tuple[float, str]:
    env = dict(os.environ)
    if explain:
        env["PGOPTIONS"] = EXPLAIN
    t = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "photo_ingest", "--config", str(config), *args],
                         capture_output=True, text=True, env=env, check=True)
    return time.monotonic() - t, out.stdout


def plans(log: str) -> list[dict[str, Any]]:
    """auto_explain's entries: the statement, its time and its plan."""
    out = []
    for m in re.finditer(r"LOG:  duration: ([\d.]+) ms  plan:\n(.*?)(?=\n\S|\Z)", log, re.S):
        body = m.group(2)
        text = re.search(r"Query Text: (.*)", body)
        out.append({"ms": float(m.group(1)), "query": text.group(1).strip() if text else "",
                    "plan": body, "seq_scans": sorted(set(re.findall(
                        r"Seq Scan on (\w+)", body)) & set(BIG_TABLES))})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--assets", type=int, default=100_000)
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with TempPostgres() as pg, tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        root = Path(tmp)
        source = card(root, args.files)
        figures: dict[str, Any] = {"assets": args.assets, "files": args.files}
        t = time.monotonic()
        big = pg.create_database("big")
        fill(big, args.assets)
        figures["fill_seconds"] = round(time.monotonic() - t, 1)
        log_file = pg.dir / "server.log"
        for name, dsn in (("empty", pg.create_database("empty")), ("big", big)):
            config = root / f"{name}.toml"
            config.write_text(f'[library]\npath = "{root / name}"\n[database]\nurl = "{dsn}"\n'
                              '[ingest]\nverify = "size"\n')
            catalog.connect(dsn).close()
            start = log_file.stat().st_size
            seconds, _ = run(config, "ingest", str(source), "--json")
            figures[f"ingest_{name}_ms_per_file"] = round(seconds * 1000 / args.files, 2)
            seconds, _ = run(config, "status", "--json")
            figures[f"status_{name}_ms"] = round(seconds * 1000)
            if name == "big":   # again, with every statement's plan in the server log
                start = log_file.stat().st_size
                run(config, "ingest", str(card(root / "again", 50)), "--json", explain=True)
                middle = log_file.stat().st_size
                run(config, "status", "--json", explain=True)
                with log_file.open() as fh:
                    fh.seek(start)
                    ingest_plans = plans(fh.read(middle - start))
                    found = ingest_plans + plans(fh.read())
                # what the catalog's statements took, per file (ANALYZE's timing included)
                figures["ingest_statements_ms_per_file"] = round(
                    sum(e["ms"] for e in ingest_plans) / 50, 2)
        figures["catalog_overhead_ms_per_file"] = round(
            figures["ingest_big_ms_per_file"] - figures["ingest_empty_ms_per_file"], 2)
        unique: dict[str, dict[str, Any]] = {}
        for entry in found:
            q = re.sub(r"\s+", " ", entry["query"])[:160]
            if q not in unique or entry["ms"] > unique[q]["ms"]:
                unique[q] = {**entry, "query": q}
        figures["statements"] = sorted(unique.values(), key=lambda e: -e["ms"])
        figures["seq_scans"] = [e["query"] for e in unique.values() if e["seq_scans"]]
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
        return
    for k, v in figures.items():
        if k not in ("statements", "seq_scans"):
            print(f"{k:32} {v}")
    print("\nslowest statements (auto_explain, ANALYZE):")
    for e in figures["statements"][:12]:
        print(f"  {e['ms']:8.2f} ms  {', '.join(e['seq_scans']) or '-':14} {e['query'][:100]}")
    print("\nSeq Scan on a big table in:" if figures["seq_scans"] else "\nno Seq Scan on a big "
          "table")
    for q in figures["seq_scans"]:
        print(f"  {q}")


if __name__ == "__main__":
    main()
