#!/usr/bin/env python3
"""Benchmark photo-ingest's verified copy against `cp -r` and a by-hand sha1sum copy.

    python tests/bench/ingest_bench.py [--size-gib 2] [--big-gib 1] [--repeat 3]
                                       [--settle S] [--quiet-wait S] [--nice N]
                                       [--workdir DIR] [--json] [--keep]

It builds a card-like source tree of random (incompressible, pairwise distinct) files,
then runs four contenders, interleaved, each as a child process from a cold page cache
into a fresh empty destination on the same filesystem as the source:

  A  cp -r SRC DST && sync
  B  sha1sum every source file, cp -r SRC DST, sync, sha1sum -c the copies
     (the copies are still in the page cache, so that re-hash does not read the disk:
     it is what a user doing this by hand actually gets)
  C  photo-ingest ingest SRC with verify = "size" (fresh library and database)
  D  the same with verify = "full" (re-reads each copy from storage)

and checks after every run that each source file arrived exactly once, so no contender
can win by not copying. It reports median wall times, the ratios C/A and D/B and the peak
RSS of photo-ingest against the targets C <= 1.15 x A, D < B, RSS < 150 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[2]
GIB = 1 << 30
CHUNK = 1 << 20  # small, to keep this process's own peak RSS low (see run_child)
PF_KTHREAD = 0x00200000  # in /proc/PID/stat's flags
VIRTIO_BALLOON_F_REPORTING = 5  # free page reporting, a bit of the device's features
MB = 1e6  # figures are reported in decimal megabytes, as `cp`/file managers do
MTIME_BASE = 1_719_828_000  # 2024-07-01 10:00 UTC: spreads files over a few day folders

CONTENDERS = {
    "A": "cp -r + sync",
    "B": "sha1sum + cp -r + sync + sha1sum -c",
    "C": "photo-ingest, verify=size",
    "D": "photo-ingest, verify=full",
}

# The by-hand verified copy, as a user would type it. $1 SRC, $2 DST, $3 manifest file.
BY_HAND = ('cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha1sum > "$3"'
           ' && cp -r -- "$1" "$2" && sync && cd "$2" && sha1sum --quiet --strict -c "$3"')


class PgServer(Protocol):
    def create_database(self, name: str) -> str: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class SrcFile:
    rel: str
    size: int
    sha1: str


@dataclass
class Run:
    contender: str
    seconds: float
    maxrss_kib: int
    rss_floor_kib: int  # this process's peak when it spawned the child: see run_child
    user: float  # CPU seconds of the contender and all its children
    sys: float
    other_cpu: float  # CPU seconds of user processes not ours: others sharing the machine
    ingest_seconds: float | None = None  # photo-ingest's own figure: no interpreter startup


@dataclass
class Bench:
    work: Path
    src: Path
    files: list[SrcFile]
    dsn_for: Callable[[str], str]  # database name -> conninfo of a fresh database
    settle: float
    max_wait: float
    nice: int
    runs: list[Run] = field(default_factory=list)
    cold_cache_note: str | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


# --- the source tree --------------------------------------------------------------------

def build_source(root: Path, size_gib: float, big_gib: float, seed: int) -> list[SrcFile]:
    """5-30 MB photos (every 4th a raw) up to SIZE - BIG GiB, then one BIG GiB video."""
    rng = random.Random(seed)  # sizes are reproducible; contents come from os.urandom
    files: list[SrcFile] = []
    small_target = int((size_gib - big_gib) * GIB)
    n = 0
    while sum(f.size for f in files) < small_target:
        n += 1
        ext = "CR2" if n % 4 == 0 else "JPG"
        rel = f"DCIM/{100 + n // 1000}TEST/IMG_{n % 10000:04d}.{ext}"
        files.append(write_random(root, rel, rng.randint(5_000_000, 30_000_000), n))
    files.append(write_random(root, "DCIM/100TEST/MVI_0001.MP4", int(big_gib * GIB), n + 1))
    return files


def write_random(root: Path, rel: str, size: int, seq: int) -> SrcFile:
    """Random bytes (so no filesystem or dedup can shortcut them), hashed as written."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(usedforsecurity=False)
    with path.open("wb") as fh:
        left = size
        while left:
            chunk = os.urandom(min(CHUNK, left))
            digest.update(chunk)
            fh.write(chunk)
            left -= len(chunk)
    mtime = MTIME_BASE + seq * 3600  # no EXIF: photo-ingest files these by mtime
    os.utime(path, (mtime, mtime))
    return SrcFile(rel, size, digest.hexdigest())


# --- running one contender ---------------------------------------------------------------

def drop_caches() -> str | None:
    """Write back dirty pages and empty the page cache; the reason if that is not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        return f"could not drop the page cache ({exc.strerror}): runs are NOT cold-cache"
    return None


def settle(seconds: float, max_wait: float) -> float:
    """Let the machine reach the same state before every run; returns the time waited.

    Under a hypervisor with free page reporting, memory the guest frees (the dropped
    cache, the last run's copy) goes back to the host a few seconds later, and touching
    it again costs a host page fault. A run started at once would find some of it still
    backed, depending on what the previous contender left; after a pause none is.
    Then, up to MAX_WAIT, wait for other programs to go quiet: on a shared machine they
    would take CPU and disk from whichever contender they happen to overlap.
    """
    start = time.monotonic()
    time.sleep(seconds)
    while time.monotonic() - start < max_wait:
        before = machine_cpu()
        time.sleep(QUIET_WINDOW)
        if machine_cpu() - before < QUIET_CPU:
            break
    return time.monotonic() - start


def run_child(key: str, argv: list[str], out: Path, err: Path) -> Run:
    """Time ARGV and take its peak RSS; raises with its stderr if it fails.

    Linux carries a process's peak RSS across exec, and a child spawned by vfork or fork
    starts from its parent's peak: ru_maxrss is max(our peak at spawn, the child's real
    peak). So it is exact only when above that floor, which is kept to check.
    """
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu_before = machine_cpu()
    with out.open("wb") as fout, err.open("wb") as ferr:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr)
        # wait4 rather than Popen.wait: it hands back the child's own rusage (ru_maxrss).
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - start
    other = machine_cpu() - cpu_before - usage.ru_utime - usage.ru_stime
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, tell Popen
    if proc.returncode != 0:
        tail = err.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{argv[:4]}... exited {proc.returncode}:\n{tail}")
    return Run(key, seconds, usage.ru_maxrss, floor, usage.ru_utime, usage.ru_stime,
               max(other, 0.0))


def machine_cpu() -> float:
    """CPU seconds spent so far by all user processes, machine-wide.

    Busy time from /proc/stat less the kernel threads' (writeback and the like, which
    also work for the contender), so that what the contender did not use itself is the
    CPU of other programs competing with it.
    """
    user, nice, system = Path("/proc/stat").read_text().split(maxsplit=4)[1:4]
    busy = int(user) + int(nice) + int(system)  # not irq time: no process is charged it
    return (busy - kernel_thread_ticks()) / os.sysconf("SC_CLK_TCK")


def kernel_thread_ticks() -> int:
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[6]) & PF_KTHREAD:
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def contender_argv(bench: Bench, key: str, run_dir: Path, seq: int) -> list[str]:
    if key == "A":
        return ["sh", "-c", 'cp -r -- "$1" "$2" && sync', "sh", str(bench.src),
                str(run_dir / "copy")]
    if key == "B":
        return ["sh", "-c", BY_HAND, "sh", str(bench.src), str(run_dir / "copy"),
                str(run_dir / "manifest.sha1")]
    config = run_dir / "config.toml"
    verify = "size" if key == "C" else "full"
    # Created before the cache is dropped: only the ingest itself is timed.
    write_config(config, run_dir / "library", bench.dsn_for(f"bench{seq}"), verify)
    # The interpreter this package is installed in (the photo-ingest console script
    # does exactly this; going direct avoids a pyenv-style shim in the timing).
    return [sys.executable, "-m", "photo_ingest", "--config", str(config), "ingest",
            str(bench.src), "--json"]


def write_config(path: Path, library: Path, dsn: str, verify: str) -> None:
    # json.dumps gives a valid TOML basic string for any path.
    path.write_text(f"[library]\npath = {json.dumps(str(library))}\n"
                    f"[database]\nurl = {json.dumps(dsn)}\n"
                    f"[ingest]\nverify = {json.dumps(verify)}\n")


def run_one(bench: Bench, key: str, seq: int) -> Run:
    run_dir = bench.work / f"run{seq:02d}-{key}"
    run_dir.mkdir()
    argv = contender_argv(bench, key, run_dir, seq)
    if bench.nice:  # the same for every contender and all its children
        argv = ["nice", "-n", str(bench.nice), *argv]
    note = drop_caches()
    if note and not bench.cold_cache_note:
        bench.cold_cache_note = note
        log(f"WARNING: {note}")
    waited = settle(bench.settle, bench.max_wait)
    if waited > bench.settle + 2 * QUIET_WINDOW:
        log(f"  waited {waited:.0f} s for other programs to go quiet")
    run = run_child(key, argv, run_dir / "stdout", run_dir / "stderr")
    if key in "AB":
        check_copy(run_dir / "copy", bench.files)
    else:
        summary = json.loads((run_dir / "stdout").read_text())
        run.ingest_seconds = summary["duration_seconds"]
        check_library(run_dir / "library", bench.files, summary)
    shutil.rmtree(run_dir)  # keeps the disk footprint at source + one copy
    return run


# --- correctness: nobody wins by not copying -----------------------------------------------

def check_copy(dst: Path, files: list[SrcFile]) -> None:
    found = {str(p.relative_to(dst)): p.stat().st_size for p in walk_files(dst)}
    want = {f.rel: f.size for f in files}
    if found != want:
        raise RuntimeError(f"{dst}: copy differs from the source (files or sizes)")


def check_library(lib: Path, files: list[SrcFile], summary: dict[str, Any]) -> None:
    """Every source file is in the library exactly once, with the source's SHA-1."""
    n = len(files)
    counts = summary["files"]
    if summary["status"] != "completed" or counts["copied"] != n or counts["seen"] != n:
        raise RuntimeError(f"ingest did not copy all {n} files: {summary['status']} {counts}")
    by_rel = {f.rel: f for f in files}
    placed: dict[Path, SrcFile] = {}
    for o in summary["outcomes"]:
        src = by_rel[o["path"]]
        if o["sha1"] != src.sha1 or o["size"] != src.size:
            raise RuntimeError(f"{o['path']}: ingest reports {o['sha1']}, source is {src.sha1}")
        placed[lib / o["library_path"]] = src
    on_disk = {p for p in walk_files(lib) if ".incoming" not in p.relative_to(lib).parts}
    leftovers = list(walk_files(lib / ".incoming"))
    if on_disk != set(placed) or leftovers:
        raise RuntimeError(f"{lib}: {len(on_disk)} files for {n} sources, "
                           f"{len(leftovers)} temp files left")
    for path, src in sample(placed):
        if path.stat().st_size != src.size or sha1_of(path) != src.sha1:
            raise RuntimeError(f"{path}: content differs from {src.rel}")


def sample(placed: dict[Path, SrcFile]) -> list[tuple[Path, SrcFile]]:
    """The biggest file plus three others: a re-hash of everything would double the run."""
    items = sorted(placed.items(), key=lambda kv: kv[1].size)
    return [items[-1], *random.sample(items[:-1], min(3, len(items) - 1))]


def walk_files(root: Path) -> Iterator[Path]:
    for folder, _, names in os.walk(root):
        for name in names:
            yield Path(folder, name)


def sha1_of(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- results ----------------------------------------------------------------------------

def summarise(bench: Bench) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for key, label in CONTENDERS.items():
        runs = [r for r in bench.runs if r.contender == key]
        median = statistics.median(r.seconds for r in runs)
        inside = [r.ingest_seconds for r in runs if r.ingest_seconds is not None]
        per[key] = {
            "label": label, "seconds": [round(r.seconds, 2) for r in runs],
            "median_seconds": round(median, 2),
            "mb_per_s": round(bench.total_bytes / MB / median, 1),
            # CPU used is far less disturbed than wall time by others sharing the machine.
            "median_user_seconds": round(statistics.median(r.user for r in runs), 2),
            "median_sys_seconds": round(statistics.median(r.sys for r in runs), 2),
            "peak_rss_mb": round(max(r.maxrss_kib for r in runs) * 1024 / MB, 1),
            # A peak at or below the floor only says "at most this much" (see run_child).
            "rss_floor_mb": round(max(r.rss_floor_kib for r in runs) * 1024 / MB, 1),
            "other_cpu_seconds": [round(r.other_cpu, 1) for r in runs],
            "ingest_reported_seconds": [round(s, 2) for s in inside] or None,
        }
    return {"machine": machine(bench.work), "cold_cache": bench.cold_cache_note or "dropped",
            "settle_seconds": bench.settle, "nice": bench.nice,
            "source": {"files": len(bench.files), "bytes": bench.total_bytes,
                       "largest_bytes": max(f.size for f in bench.files)},
            "contenders": per, "targets": targets(per)}


def targets(per: dict[str, Any]) -> list[dict[str, Any]]:
    def med(key: str) -> float:
        return float(per[key]["median_seconds"])

    c_a, d_b = med("C") / med("A"), med("D") / med("B")
    rss_c, rss_d = per["C"]["peak_rss_mb"], per["D"]["peak_rss_mb"]
    return [
        {"target": "C <= 1.15 x A", "measured": f"C/A = {c_a:.2f}", "met": c_a <= 1.15},
        {"target": "D < B", "measured": f"D/B = {d_b:.2f}", "met": d_b < 1.0},
        {"target": "peak RSS C < 150 MB", "measured": f"{rss_c:.0f} MB", "met": rss_c < 150},
        {"target": "peak RSS D < 150 MB", "measured": f"{rss_d:.0f} MB", "met": rss_d < 150},
    ]


def machine(work: Path) -> dict[str, Any]:
    fstype = subprocess.run(["df", "--output=fstype", str(work)], capture_output=True,
                            text=True, check=False).stdout.split()[-1:]
    meminfo = Path("/proc/meminfo").read_text().split()
    mem_kib = int(meminfo[meminfo.index("MemTotal:") + 1])
    return {"cpus": os.cpu_count(), "memory_gib": round(mem_kib / (1 << 20), 1),
            "filesystem": fstype[0] if fstype else "unknown", "kernel": platform.release(),
            "python": platform.python_version()}


def print_table(result: dict[str, Any]) -> None:
    m, s = result["machine"], result["source"]
    print(f"\nsource: {s['files']} files, {s['bytes'] / MB:,.0f} MB (largest "
          f"{s['largest_bytes'] / MB:,.0f} MB); {m['cpus']} CPUs, {m['memory_gib']} GiB RAM, "
          f"{m['filesystem']}; page cache: {result['cold_cache']}, then "
          f"{result['settle_seconds']:g} s pause\n")
    print(f"{'contender':<42} {'median s':>8} {'MB/s':>6} {'user s':>6} {'sys s':>6} "
          f"{'peak RSS MB':>11}  runs (s)")
    for key, c in result["contenders"].items():
        runs = " ".join(f"{x:.1f}" for x in c["seconds"])
        rss = rss_text(c["peak_rss_mb"], c["rss_floor_mb"])
        print(f"{key}  {c['label']:<39} {c['median_seconds']:>8.1f} {c['mb_per_s']:>6.0f} "
              f"{c['median_user_seconds']:>6.1f} {c['median_sys_seconds']:>6.1f} "
              f"{rss:>11}  {runs}")
    busy = max(x for c in result["contenders"].values() for x in c["other_cpu_seconds"])
    if busy > OTHER_CPU_WARN:
        print(f"\nWARNING: other programs used up to {busy:.1f} CPU seconds during a run: "
              "the machine was shared, figures are unreliable")
    print(f"\n{'target':<22} {'measured':<12} result")
    for t in result["targets"]:
        print(f"{t['target']:<22} {t['measured']:<12} {'PASS' if t['met'] else 'MISS'}")


OTHER_CPU_WARN = 1.0  # seconds; an idle machine shows ~0.1
QUIET_WINDOW, QUIET_CPU = 3.0, 0.2  # quiet: others used < 0.2 CPU-seconds in 3 s


def rss_text(peak: float, floor: float) -> str:
    # At or below the floor, ru_maxrss is our own inherited peak, not the child's.
    return f"{peak:.0f}" if peak > floor else f"<= {floor:.0f}"


# --- driver ------------------------------------------------------------------------------

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_workdir(parent: Path | None) -> Path:
    """A fresh folder; by default in $TMPDIR if that is the repo's filesystem (not tmpfs)."""
    if parent is None:
        tmp = Path(tempfile.gettempdir())
        same = tmp.stat().st_dev == REPO.stat().st_dev
        parent = tmp if same else REPO
    return Path(tempfile.mkdtemp(prefix=".ingest-bench-", dir=parent))


def check_space(work: Path, size_gib: float) -> None:
    # The source plus one destination at a time, with some slack.
    need = 2.2 * size_gib * GIB
    free = shutil.disk_usage(work).free
    if free < need:
        raise SystemExit(f"{work}: {free / GIB:.1f} GiB free, the benchmark needs "
                         f"{need / GIB:.1f} GiB")


def benchmark(args: argparse.Namespace, work: Path, dsn_for: Callable[[str], str]) -> Bench:
    log(f"building a {args.size_gib} GiB source tree in {work} ...")
    src = work / "card"
    files = build_source(src, args.size_gib, args.big_gib, args.seed)
    bench = Bench(work, src, files, dsn_for, args.settle, args.settle + args.quiet_wait,
                  args.nice)
    order = [k for _ in range(args.repeat) for k in CONTENDERS]  # interleaved: A B C D A ...
    for seq, key in enumerate(order, 1):
        log(f"run {seq}/{len(order)}: {key} {CONTENDERS[key]} ...")
        run = run_one(bench, key, seq)
        bench.runs.append(run)
        log(f"  {run.seconds:.1f} s (CPU {run.user:.1f} user {run.sys:.1f} sys), peak RSS "
            f"{run.maxrss_kib * 1024 / MB:.0f} MB, other programs' CPU {run.other_cpu:.1f} s")
    return bench


def start_postgres() -> PgServer:
    sys.path.insert(0, str(REPO / "tests"))
    from support.pgserver import TempPostgres

    server: PgServer = TempPostgres().start()
    return server


def default_settle() -> float:
    """20 s where the guest hands freed memory back to the host (see settle), else 0."""
    for dev in Path("/sys/bus/virtio/drivers/virtio_balloon").glob("virtio*"):
        features = (dev / "features").read_text()
        if features[VIRTIO_BALLOON_F_REPORTING:][:1] == "1":
            return 20.0
    return 0.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-gib", type=float, default=2.0, help="source tree size (default 2)")
    p.add_argument("--big-gib", type=float, default=1.0, help="size of the one big video "
                   "file, part of --size-gib (default 1)")
    p.add_argument("--repeat", type=int, default=3, help="runs per contender (default 3)")
    p.add_argument("--workdir", type=Path, help="make the work folder here (default: $TMPDIR "
                   "if on the repo's filesystem, else the repo); it is removed at the end")
    p.add_argument("--settle", type=float, default=default_settle(),
                   help="pause after dropping the cache, before each run (default: 20 s "
                   "under a hypervisor that takes freed memory back, else 0)")
    p.add_argument("--quiet-wait", type=float, default=300, help="then wait up to this "
                   "long for other programs to be idle (default 300 s)")
    p.add_argument("--nice", type=int, default=0, help="run the contenders at this nice "
                   "level: -20 (as root) shields them from other programs on a shared "
                   "machine (default 0: unchanged)")
    p.add_argument("--seed", type=int, default=1, help="seed for the file sizes")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    if not 0 < args.big_gib < args.size_gib or args.repeat < 1:
        p.error("need 0 < --big-gib < --size-gib and --repeat >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = make_workdir(args.workdir)
    pg = None
    try:
        check_space(work, args.size_gib)
        pg = start_postgres()
        result = summarise(benchmark(args, work, pg.create_database))
    finally:
        if pg is not None:
            pg.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
