"""Memory stays flat: the ingest's resident memory (its exiftool child included) does not
grow with the number of files on a card or with the size of a file.

The ingest runs as a user runs it (`photo-ingest ingest PATH`); a thread samples VmRSS of
the process and all its descendants from /proc every 20 ms and keeps the largest sum, and
each process's VmHWM (its own peak, which no sampling can miss) at the last sample.
Figures: docs/performance.md#memory, docs/reliability.md's scorecard.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faults import record, trials
from helpers import random_files

pytestmark = pytest.mark.slow

MB = 1 << 20
GROWTH_LIMIT = 20 * MB      # the big card vs the small one: the peak may differ by this
PEAK_LIMIT = 250 * MB       # any run, exiftool included: three 8 MiB buffers, Python, Perl
VIDEO_SIZE = 4 << 30


@dataclass
class Memory:
    peak_rss: int = 0                                    # largest sum over the tree
    hwm: dict[int, int] = field(default_factory=dict)    # pid -> VmHWM at its last sample
    names: dict[int, str] = field(default_factory=dict)
    samples: int = 0

    def summary(self) -> str:
        hwm = ", ".join(f"{self.names[p]} {v / MB:.0f} MB" for p, v in sorted(self.hwm.items()))
        return f"peak RSS {self.peak_rss / MB:.1f} MB (VmHWM: {hwm}; {self.samples} samples)"


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def _sample(proc: subprocess.Popen[str], memory: Memory, stop: threading.Event) -> None:
    while not stop.is_set() and proc.poll() is None:
        total = 0
        for pid in _tree(proc.pid):
            try:
                st = _status(pid)
            except OSError:  # gone between the listing and the read
                continue
            if "VmRSS" not in st:  # a zombie
                continue
            total += int(st["VmRSS"].split()[0]) * 1024
            memory.hwm[pid] = int(st["VmHWM"].split()[0]) * 1024
            memory.names[pid] = st["Name"]
        memory.peak_rss = max(memory.peak_rss, total)
        memory.samples += 1
        stop.wait(0.02)


def ingest_measured(config: Path, source: Path) -> tuple[dict[str, object], Memory, float]:
    argv = [sys.executable, "-m", "photo_ingest", "--config", str(config), "ingest",
            str(source), "--json"]
    memory, stop = Memory(), threading.Event()
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = threading.Thread(target=_sample, args=(proc, memory, stop))
    sampler.start()
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        stop.set()
        sampler.join()
    assert proc.returncode == 0, err
    return json.loads(out), memory, time.monotonic() - started


def _card(root: Path, count: int, seed: int) -> Path:
    per_folder = 500  # cameras put at most 9999 files in a folder; spread them like one
    for start in range(0, count, per_folder):
        random_files(root / f"DCIM/{100 + start // per_folder}TEST",
                     min(per_folder, count - start), 2048, seed=seed + start,
                     prefix=f"I{start // per_folder:03d}_")
    return root


def test_memory_is_flat_in_file_count_and_file_size(
        tmp_path: Path, library: Path, make_config: object) -> None:
    free = shutil.disk_usage(tmp_path).free
    if free < 3 * VIDEO_SIZE:
        pytest.skip(f"{free / MB:.0f} MB free here; the 4 GiB video needs 12 GiB")
    started = time.monotonic()
    # ~15 ms per small file here: the CI's count keeps the test near 2 minutes, the
    # scorecard's (FAULT_TRIALS=full) is the 1,000 vs 10,000.
    few, many = trials(500, 1_000), trials(5_000, 10_000)
    config = make_config()  # type: ignore[operator]
    small, small_mem, small_s = ingest_measured(config, _card(tmp_path / "c1", few, 1))
    big, big_mem, big_s = ingest_measured(config, _card(tmp_path / "c10", many, 50_000))
    assert small["files"]["copied"] == few and big["files"]["copied"] == many  # type: ignore[index]

    video = tmp_path / "v/DCIM/100VIDEO/MVI_0001.MP4"
    video.parent.mkdir(parents=True)
    with open(video, "wb") as f:  # sparse: read from the page cache's zeros, written in full
        f.truncate(VIDEO_SIZE)
    try:
        vid, vid_mem, vid_s = ingest_measured(config, tmp_path / "v")
        assert vid["files"]["copied"] == 1 and vid["bytes"]["copied"] == VIDEO_SIZE  # type: ignore[index]
    finally:  # pytest keeps tmp folders: leave no 4 GiB copy behind
        shutil.rmtree(tmp_path / "v")
        shutil.rmtree(library, ignore_errors=True)

    growth = big_mem.peak_rss - small_mem.peak_rss
    figures = (f"{few:,} files: {small_mem.summary()}, {small_s:.0f} s; {many:,} files: "
               f"{big_mem.summary()}, {big_s:.0f} s; 4 GiB video: {vid_mem.summary()}, "
               f"{vid_s:.0f} s")
    print(figures)
    assert growth < GROWTH_LIMIT, f"the peak grew by {growth / MB:.1f} MB: {figures}"
    for mem in (small_mem, big_mem, vid_mem):
        assert 0 < mem.peak_rss < PEAK_LIMIT, figures
        assert len(mem.hwm) >= 2, f"exiftool was not seen: {figures}"
    record(f"memory: {many:,}-file card, 4 GiB video", 3,
           f"peak RSS (ingest + exiftool) {small_mem.peak_rss / MB:.0f} MB for {few:,} files, "
           f"{big_mem.peak_rss / MB:.0f} MB for {many:,} ({growth / MB:+.1f} MB, "
           f"{growth / (many - few):.0f} bytes per file), "
           f"{vid_mem.peak_rss / MB:.0f} MB for a 4 GiB video; limits: growth < "
           f"{GROWTH_LIMIT // MB} MB, peak < {PEAK_LIMIT // MB} MB", started)
