#!/usr/bin/env python3
"""Benchmark `photo-ingest sync --once` against the official Immich CLI (3.2.2).

    python tests/bench/immich_bench.py [--files 1000] [--min-mb 1] [--max-mb 20]
        [--service-time 0.1] [--preseed 0.3] [--big 100000] [--workers 4]
        [--workdir DIR] [--warm] [--json] [--keep]

One set of FILES random (incompressible, distinct) files of MIN..MAX MB, laid out like a
card (DCIM/1xxCANON/IMG_nnnn.JPG), catalogued the way `photo-ingest ingest` catalogues
them (library = that folder; the SHA-1s are computed during setup, as the ingest does
during its copy). Every contender runs as a child process against a fresh fake Immich
(tests/fake_immich: real HTTP on loopback, bytes hashed and written to disk, plus a fixed
SERVICE-TIME per upload, OpenAPI validation off), from a cold page cache unless --warm:

  cli-default   immich upload --recursive DIR                    (concurrency max(1, CPUs-1))
  cli-c4        immich upload --recursive --concurrency 4 DIR
  sync-w4       photo-ingest sync --once --workers 4
  cli-c4-30     cli-c4 with PRESEED of the files already on the server
  sync-w4-30    sync-w4 likewise
  sync-rerun    sync-w4 again with nothing new (same server)
  cli-rerun     cli-c4 again with nothing new (it re-hashes every file)

and then, without files, BIG catalogued assets that are all on the server already:
  big-first     the first sync: bulk checks only, every asset recorded as duplicate
  big-rerun     the incremental re-run with nothing new (target: under 2 s)

After every run the server's state is checked (every file there exactly once), so no
contender can win by skipping work. Prints assets/s, MB/s and the ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from fake_immich import FakeImmich  # noqa: E402
from support.immich_cli import ensure_cli  # noqa: E402
from support.pgserver import TempPostgres  # noqa: E402

MB = 1e6
CHUNK = 1 << 20


@dataclass
class Result:
    name: str
    seconds: float
    assets: int            # assets the contender had to get onto the server
    uploaded: int          # assets actually sent
    bytes: int             # bytes of the uploaded assets
    note: str = ""

    @property
    def assets_per_s(self) -> float:
        return self.assets / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.seconds


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def make_files(root: Path, count: int, low: float, high: float, seed: int = 1,
               ) -> list[tuple[Path, int, bytes]]:
    """(path, size, sha1) of COUNT random files; reused when already there."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        size = int(rng.uniform(low, high) * MB)
        path = root / "DCIM" / f"{100 + i // 250}CANON" / f"IMG_{i:04d}.JPG"
        path.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha1()
        data_rng = random.Random(f"{seed}:{i}")
        if path.exists() and path.stat().st_size == size:
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
        else:
            with open(path, "wb") as fh:
                left = size
                while left:
                    chunk = data_rng.randbytes(min(left, CHUNK))
                    fh.write(chunk)
                    h.update(chunk)
                    left -= len(chunk)
        out.append((path, size, h.digest()))
    return out


def catalog(dsn: str, root: Path, files: list[tuple[Path, int, bytes]]) -> None:
    """The rows `photo-ingest ingest` writes for these files (library = ROOT)."""
    from photo_ingest import catalog as cat

    with cat.connect(dsn) as conn, conn.transaction():
        session = conn.execute(
            "INSERT INTO ingest_sessions (source, host, pid, card_label, status)"
            " VALUES (%s, 'bench', 1, 'BENCH', 'completed') RETURNING id",
            (str(root),)).fetchone()["id"]
        with conn.cursor().copy(
                "COPY assets (sha1, size, library_path, media_type, original_path,"
                " original_name, captured_at, captured_local, capture_offset, capture_source,"
                " session_id) FROM STDIN") as copy:
            for n, (path, size, sha1) in enumerate(files):
                rel = str(path.relative_to(root))
                local = f"2024-06-01 10:{n // 60 % 60:02d}:{n % 60:02d}"
                copy.write_row((sha1, size, rel, "photo", rel, path.name, local + "+02",
                                local, "+02:00", "DateTimeOriginal", session))


def big_catalog(dsn: str, count: int) -> list[bytes]:
    from photo_ingest import catalog as cat

    sha1s = [hashlib.sha1(f"big-{i}".encode()).digest() for i in range(count)]
    with cat.connect(dsn) as conn, conn.transaction():
        session = conn.execute(
            "INSERT INTO ingest_sessions (source, host, pid, status)"
            " VALUES ('/big', 'bench', 1, 'completed') RETURNING id").fetchone()["id"]
        with conn.cursor().copy(
                "COPY assets (sha1, size, library_path, media_type, original_path,"
                " original_name, captured_at, captured_local, capture_offset, capture_source,"
                " session_id) FROM STDIN") as copy:
            for i, sha1 in enumerate(sha1s):
                rel = f"{2000 + i // 50000}/{i // 1000 % 12 + 1:02d}/IMG_{i:06d}.JPG"
                copy.write_row((sha1, 1000, rel, "photo", rel, f"IMG_{i:06d}.JPG",
                                "2024-06-01 10:00:00+02", "2024-06-01 10:00:00", "+02:00",
                                "DateTimeOriginal", session))
    return sha1s


def drop_caches(warm: bool) -> None:
    os.sync()
    if warm:
        return
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        log(f"WARNING: cannot drop the page cache ({exc.strerror}); runs are warm")
    time.sleep(1.0)


def server(work: Path, name: str, service_time: float) -> FakeImmich:
    s = FakeImmich(upload_service_time=service_time, storage_dir=work / f"server-{name}",
                   validate=False)
    s.start()
    return s


def stop_server(s: FakeImmich) -> None:
    s.stop()
    shutil.rmtree(s.storage_dir, ignore_errors=True)


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=7200)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
                           f"\n{proc.stdout[-2000:]}")
    return seconds, proc.stdout


def cli_run(s: FakeImmich, key: str, root: Path, concurrency: int | None) -> float:
    cli = ensure_cli()
    config = Path(tempfile.mkdtemp(prefix="immich-cli-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMMICH_")}
    env.update({"IMMICH_CONFIG_DIR": str(config), "NO_COLOR": "1",
                "IMMICH_INSTANCE_URL": s.api_url, "IMMICH_API_KEY": key})
    args = ["upload", "--recursive"]
    if concurrency:
        args += ["--concurrency", str(concurrency)]
    try:
        seconds, _ = timed(cli.argv(*args, str(root)), env)
    finally:
        shutil.rmtree(config, ignore_errors=True)
    return seconds


def sync_config(work: Path, dsn: str, library: Path, s: FakeImmich, key: str,
                workers: int) -> Path:
    key_file = work / "immich.key"
    key_file.write_text(key + "\n")
    config = work / "sync.toml"
    config.write_text(f"[library]\npath = {json.dumps(str(library))}\n"
                      f"[database]\nurl = {json.dumps(dsn)}\n"
                      f"[immich]\nurl = {json.dumps(s.url)}\n"
                      f"api_key_file = {json.dumps(str(key_file))}\n"
                      f'metrics_listen = ""\nworkers = {workers}\n')
    return config


def sync_run(config: Path) -> tuple[float, dict[str, Any]]:
    seconds, out = timed([sys.executable, "-m", "photo_ingest", "--config",
                          str(config), "sync", "--once", "--json"])
    return seconds, json.loads(out)


def reset_sync_state(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE immich_targets, immich_assets, immich_albums,"
                     " immich_live_pairs")


def check_server(s: FakeImmich, files: list[tuple[Path, int, bytes]]) -> None:
    have = sorted(a.checksum for a in s.assets.values())
    want = sorted(sha1.hex() for _, _, sha1 in files)
    if have != want:
        raise AssertionError(f"server has {len(have)} assets, expected {len(want)} "
                             "(or different content)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--min-mb", type=float, default=1.0)
    p.add_argument("--max-mb", type=float, default=20.0)
    p.add_argument("--service-time", type=float, default=0.1,
                   help="seconds the fake adds to every upload (default 0.1)")
    p.add_argument("--preseed", type=float, default=0.3)
    p.add_argument("--big", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of each CLI/sync pair, interleaved; medians are reported")
    p.add_argument("--workdir", type=Path)
    p.add_argument("--warm", action="store_true", help="do not drop the page cache")
    p.add_argument("--skip-cli", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="immich-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / "card"
    runs: dict[str, list[Result]] = {}
    w = args.workers
    pg = TempPostgres().start()
    try:
        log(f"making {args.files} files of {args.min_mb:g}-{args.max_mb:g} MB in {root}")
        files = make_files(root, args.files, args.min_mb, args.max_mb)
        total = sum(size for _, size, _ in files)
        log(f"  {total / MB:.0f} MB in all")
        dsn = pg.create_database("bench")
        catalog(dsn, root, files)
        rng = random.Random(7)
        pre_set = set(rng.sample(range(len(files)), int(len(files) * args.preseed)))
        pre = sorted(pre_set)
        rest_bytes = sum(size for i, (_, size, _) in enumerate(files) if i not in pre_set)
        cpus = os.cpu_count() or 1

        def fresh(name: str, preseed: bool) -> tuple[FakeImmich, str]:
            s = server(work, name, args.service_time)
            key = s.create_api_key("alice")
            if preseed:
                for i in pre:
                    s.seed_asset("alice", path=files[i][0], filename=files[i][0].name)
            return s, key

        def record(result: Result) -> None:
            runs.setdefault(result.name, []).append(result)
            log(f"  {result.name}: {result.seconds:.2f} s")

        def cli(name: str, conc: int | None, preseed: bool, rerun: bool = False) -> None:
            s, key = fresh(name, preseed)
            try:
                drop_caches(args.warm)
                secs = cli_run(s, key, root, conc)
                check_server(s, files)
                sent = len(files) - (len(pre) if preseed else 0)
                record(Result(name, secs, len(files), sent,
                              rest_bytes if preseed else total))
                if rerun:
                    drop_caches(args.warm)
                    secs = cli_run(s, key, root, conc)
                    record(Result("cli-rerun", secs, 0, 0, 0, "re-hashes every file"))
            finally:
                stop_server(s)

        def sync(name: str, preseed: bool, rerun: bool = False) -> None:
            reset_sync_state(dsn)
            s, key = fresh(name, preseed)
            try:
                config = sync_config(work, dsn, root, s, key, w)
                drop_caches(args.warm)
                secs, out = sync_run(config)
                check_server(s, files)
                sent = len(files) - (len(pre) if preseed else 0)
                assert out["assets"]["uploaded"] == sent, out
                record(Result(name, secs, len(files), sent, rest_bytes if preseed else total))
                if rerun:
                    drop_caches(args.warm)
                    secs, out = sync_run(config)
                    assert sum(out["assets"].values()) == 0, out
                    record(Result("sync-rerun", secs, 0, 0, 0,
                                  f"{len(files)} catalogued, nothing new"))
            finally:
                stop_server(s)

        if not args.skip_cli:
            ensure_cli()
            log(f"cli-default: immich upload --recursive (concurrency {max(1, cpus - 1)})")
            cli("cli-default", None, False)
        for rep in range(args.repeat):
            log(f"round {rep + 1} of {args.repeat}")
            pairs: list[tuple[str, Any]] = [
                (f"sync-w{w}", lambda first=rep == 0: sync(f"sync-w{w}", False, first))]
            if not args.skip_cli:
                pairs.append((f"cli-c{w}", lambda first=rep == 0: cli(f"cli-c{w}", w, False,
                                                                       first)))
            if args.preseed:
                pairs.append((f"sync-w{w}-30", lambda: sync(f"sync-w{w}-30", True)))
                if not args.skip_cli:
                    pairs.append((f"cli-c{w}-30", lambda: cli(f"cli-c{w}-30", w, True)))
            if rep % 2:
                pairs.reverse()           # neither side always runs first
            for _, run in pairs:
                run()

        if args.big:
            big = pg.create_database("big")
            log(f"big: {args.big} catalogued assets, all already on the server")
            sha1s = big_catalog(big, args.big)
            s = server(work, "big", args.service_time)
            key = s.create_api_key("alice")
            for sha1 in sha1s:
                s.seed_asset("alice", checksum=sha1.hex())
            config = sync_config(work, big, root, s, key, w)
            secs, out = sync_run(config)
            assert out["assets"]["duplicate"] == args.big, out
            record(Result("big-first", secs, args.big, 0, 0,
                          "bulk checks only: every asset a duplicate"))
            for _ in range(3):
                secs, out = sync_run(config)
                assert sum(out["assets"].values()) == 0, out
                record(Result("big-rerun", secs, 0, 0, 0,
                              f"{args.big} catalogued, nothing new"))
            stop_server(s)
    finally:
        pg.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    report(runs, args, cpus=os.cpu_count() or 1)
    return 0


def median(results: list[Result]) -> Result:
    ordered = sorted(results, key=lambda r: r.seconds)
    return ordered[(len(ordered) - 1) // 2]


def report(runs: dict[str, list[Result]], args: argparse.Namespace, cpus: int) -> None:
    by = {name: median(rs) for name, rs in runs.items()}
    w = args.workers
    ratios = {}
    for ours, theirs in ((f"sync-w{w}", f"cli-c{w}"), (f"sync-w{w}", "cli-default"),
                         (f"sync-w{w}-30", f"cli-c{w}-30")):
        if ours in by and theirs in by:
            ratios[f"{ours} vs {theirs}"] = round(by[theirs].seconds / by[ours].seconds, 2)
    if args.json:
        json.dump({"machine": {"cpus": cpus, "python": platform.python_version(),
                               "kernel": platform.release()},
                   "settings": {k: str(v) if isinstance(v, Path) else v
                                for k, v in vars(args).items()},
                   "results": {name: {**asdict(r), "runs": [x.seconds for x in runs[name]],
                                      "assets_per_s": round(r.assets_per_s, 2),
                                      "mb_per_s": round(r.mb_per_s, 1)}
                               for name, r in by.items()},
                   "speedups": ratios}, sys.stdout, indent=2)
        print()
        return
    print(f"{args.files} files of {args.min_mb:g}-{args.max_mb:g} MB, upload service time "
          f"{args.service_time:g} s, {cpus} CPUs, "
          f"{'warm' if args.warm else 'cold'} page cache; median of the runs listed")
    print(f"{'run':<13} {'seconds':>8} {'assets/s':>9} {'MB/s':>7}  runs (s)  note")
    for name, r in by.items():
        times = ", ".join(f"{x.seconds:.1f}" for x in runs[name])
        print(f"{name:<13} {r.seconds:>8.2f} {r.assets_per_s:>9.1f} {r.mb_per_s:>7.1f}  "
              f"[{times}]  {r.note}")
    for name, ratio in ratios.items():
        print(f"throughput {name}: {ratio:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
