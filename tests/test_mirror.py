"""Mirrors: every library file copied and verified on each [[mirror]], the marker rule, a
destination that goes away mid-run and comes back, two runs at once, and the scrub."""

from __future__ import annotations

import json
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
from conftest import run_cli
from helpers import assert_catalog_matches_disk, library_files, random_files
from prometheus_client.parser import text_string_to_metric_families
from support.samplecard import sample_card

MARKER = ".photo-ingest-mirror"


def mirror_config(make_config: Callable[..., Path], tmp_path: Path, *mirrors: str) -> Path:
    """MIRRORS: 'name=path[:besteffort]' entries."""
    config = make_config()
    text = config.read_text() + f'[metrics]\ntextfile_dir = "{tmp_path}/prom"\n'
    for spec in mirrors:
        name, _, rest = spec.partition("=")
        path, _, kind = rest.partition(":")
        text += (f'[[mirror]]\nname = "{name}"\npath = "{path}"\n'
                 f'required = {"false" if kind == "besteffort" else "true"}\n')
    config.write_text(text)
    return config


def as_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.stdout, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def mirror_files(root: Path) -> dict[str, str]:
    files = library_files(root)
    files.pop(MARKER, None)
    return files


def metrics(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(path.read_text())
            for s in family.samples}


def states(db: psycopg.Connection[Any], name: str) -> dict[str, int]:
    return {r["state"]: r["n"] for r in db.execute(
        "SELECT state, count(*) AS n FROM mirror_copies WHERE destination = %s GROUP BY 1",
        (name,))}


def test_mirror_copies_every_file_and_verify_finds_rot(
        tmp_path: Path, make_config: Callable[..., Path], library: Path,
        db: psycopg.Connection[Any]) -> None:
    nas = tmp_path / "nas"
    nas.mkdir()
    config = mirror_config(make_config, tmp_path, f"nas={nas}")
    sample_card(tmp_path / "card")
    assert run_cli(config, "ingest", tmp_path / "card").returncode == 1  # nas not initialised
    init = run_cli(config, "mirror", "--init", "--destination", "nas")
    assert init.returncode == 0, init.stderr
    assert (nas / MARKER).exists() and (nas / ".incoming").is_dir()

    result = run_cli(config, "mirror", "--json")
    assert result.returncode == 0, result.stderr
    report = as_json(result)["mirrors"][0]
    lib = assert_catalog_matches_disk(db, library)
    assert report["copied"] == len(lib) and report["failed"] == 0
    assert mirror_files(nas) == lib                       # same layout, same bytes
    assert os.listdir(nas / ".incoming") == []
    assert states(db, "nas") == {"copied": len(lib)}
    rows = db.execute("SELECT count(*) AS n FROM mirror_copies m JOIN assets a ON"
                      " a.id = m.asset_id WHERE m.sidecar_id IS NULL AND m.sha1 <> a.sha1"
                      ).fetchone()
    assert rows == {"n": 0}
    again = as_json(run_cli(config, "mirror", "--json"))["mirrors"][0]
    assert again["copied"] == again["adopted"] == 0        # only what is left: nothing

    status = as_json(run_cli(config, "status", "--json"))
    assert status["mirrors"][0] | {"problems": []} == status["mirrors"][0]
    assert (status["mirrors"][0]["copied"], status["mirrors"][0]["pending"]) == (len(lib), 0)
    prom = metrics(tmp_path / "prom/photo_ingest_mirror.prom")
    assert prom[("photo_ingest_mirror_files", (("destination", "nas"), ("state", "copied")))] \
        == len(lib)
    assert prom[("photo_ingest_mirror_available",
                 (("destination", "nas"), ("required", "true")))] == 1

    # Bit rot: one byte flipped in a library file and in a mirror file; a mirror file lost.
    paths = sorted(p for p in lib if p.endswith(".JPG") or p.endswith(".jpg"))
    rotten_lib, rotten_nas, lost = paths[0], paths[1], paths[2]
    for path in (library / rotten_lib, nas / rotten_nas):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    (nas / lost).unlink()
    before = {p: (library / p).read_bytes() for p in lib}
    result = run_cli(config, "verify", "--json")
    assert result.returncode == 1, result.stderr
    found = {d["destination"]: d for d in as_json(result)["destinations"]}
    assert found["library"]["checked"] == len(lib)
    assert [(f["kind"], f["path"]) for f in found["library"]["findings"]] == \
        [("rot", rotten_lib)]
    assert sorted((f["kind"], f["path"]) for f in found["nas"]["findings"]) == \
        sorted([("rot", rotten_nas), ("missing", lost)])
    assert {p: (library / p).read_bytes() for p in lib} == before  # reported, not "repaired"
    assert not (nas / lost).exists()
    rows = db.execute("SELECT destination, kind, library_path FROM verify_findings"
                      " ORDER BY destination, kind").fetchall()
    assert [tuple(r.values()) for r in rows] == [
        ("library", "rot", rotten_lib), ("nas", "missing", lost), ("nas", "rot", rotten_nas)]
    prom = metrics(tmp_path / "prom/photo_ingest_verify.prom")
    assert prom[("photo_ingest_verify_findings", (("destination", "nas"), ("kind", "rot")))] == 1
    assert prom[("photo_ingest_verify_findings",
                 (("destination", "nas"), ("kind", "missing")))] == 1
    assert prom[("photo_ingest_verify_findings",
                 (("destination", "library"), ("kind", "rot")))] == 1
    assert prom[("photo_ingest_verify_last_run_timestamp_seconds",
                 (("destination", "library"),))] > time.time() - 60
    text = run_cli(config, "status").stdout
    assert "verify nas" in text and "PROBLEMS FOUND" in text


def test_sample_checks_the_files_checked_longest_ago(
        tmp_path: Path, make_config: Callable[..., Path], db: psycopg.Connection[Any]) -> None:
    config = mirror_config(make_config, tmp_path)
    random_files(tmp_path / "card/DCIM", 5, 1000, seed=7)
    assert run_cli(config, "ingest", tmp_path / "card").returncode == 0
    seen: list[str] = []
    for _ in range(3):
        result = run_cli(config, "verify", "--destination", "library", "--sample", "2")
        assert result.returncode == 0, result.stderr
    rows = db.execute("SELECT checked FROM verify_runs ORDER BY id").fetchall()
    assert [r["checked"] for r in rows] == [2, 2, 2]
    checks = db.execute("SELECT count(*) AS n FROM verify_checks").fetchone()
    assert checks == {"n": 5}  # 2 + 2 + 1 never checked before, then the oldest
    del seen


def test_a_bare_folder_without_marker_is_never_written(
        tmp_path: Path, make_config: Callable[..., Path], db: psycopg.Connection[Any]) -> None:
    bare = tmp_path / "mnt"
    bare.mkdir()
    config = mirror_config(make_config, tmp_path, f"usb={bare}", f"gone={tmp_path}/absent")
    random_files(tmp_path / "card/DCIM", 3, 1000, seed=8)
    assert run_cli(config, "ingest", tmp_path / "card").returncode == 1
    result = run_cli(config, "mirror", "--json")
    assert result.returncode == 3, result.stderr
    reports = {r["name"]: r for r in as_json(result)["mirrors"]}
    assert not reports["usb"]["available"] and "no .photo-ingest-mirror marker" in \
        reports["usb"]["reason"]
    assert reports["gone"]["reason"].endswith("does not exist (not mounted?)")
    assert os.listdir(bare) == []
    assert states(db, "usb") == {"pending": 3}
    status = run_cli(config, "status").stdout
    assert "mirror usb (required" in status and "UNAVAILABLE since" in status


@pytest.fixture
def loop_disk(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An ext4 filesystem on a loop device, mounted at tmp_path/mnt: (device, mount point)."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    image = tmp_path / "disk.img"
    subprocess.run(["truncate", "-s", "64M", image], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-L", "MIRROR", image], check=True)
    out = subprocess.run(["losetup", "--find", "--show", image], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"no loop devices here: {out.stderr.strip()}")
    device, mnt = out.stdout.strip(), tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", device, mnt], check=True)
    yield device, mnt
    subprocess.run(["umount", mnt], check=False)
    subprocess.run(["losetup", "-d", device], check=False)


def test_destination_unmounted_mid_run_comes_back(
        tmp_path: Path, make_config: Callable[..., Path], library: Path,
        loop_disk: tuple[str, Path], db: psycopg.Connection[Any]) -> None:
    device, mnt = loop_disk
    random_files(tmp_path / "card/DCIM", 60, 300_000, seed=9)
    assert run_cli(make_config(), "ingest", tmp_path / "card").returncode == 0
    config = mirror_config(make_config, tmp_path, f"usb={mnt}")  # a mirror added later
    lib = library_files(library)

    proc = subprocess.Popen([sys.executable, "-m", "photo_ingest", "--config", str(config),
                             "mirror", "--json"], stdout=subprocess.PIPE, text=True)
    while (states(db, "usb").get("copied", 0) < 3) and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGSTOP)
    subprocess.run(["umount", "-l", mnt], check=True)    # the share goes away mid-run
    os.kill(proc.pid, signal.SIGCONT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3
    report = json.loads(out)["mirrors"][0]
    assert not report["available"] and "marker" in report["reason"]
    first = states(db, "usb")
    assert first["copied"] >= 3 and first["pending"] == len(lib) - first["copied"]
    assert os.listdir(mnt) == []                         # nothing in the bare mount point

    subprocess.run(["mount", device, mnt], check=True)   # it comes back
    result = run_cli(config, "mirror", "--json")
    assert result.returncode == 0, result.stderr
    again = as_json(result)["mirrors"][0]
    assert again["copied"] + again["adopted"] == first["pending"]
    assert states(db, "usb") == {"copied": len(lib)}
    assert mirror_files(mnt) == lib                      # every file once, none twice
    assert os.listdir(mnt / ".incoming") == []


def test_two_mirror_runs_at_once_copy_each_file_once(
        tmp_path: Path, make_config: Callable[..., Path], library: Path,
        db: psycopg.Connection[Any]) -> None:
    nas = tmp_path / "nas"
    nas.mkdir()
    random_files(tmp_path / "card/DCIM", 80, 50_000, seed=10)
    assert run_cli(make_config(), "ingest", tmp_path / "card").returncode == 0
    config = mirror_config(make_config, tmp_path, f"nas={nas}")
    assert run_cli(config, "mirror", "--init", "--destination", "nas").returncode == 0
    argv = [sys.executable, "-m", "photo_ingest", "--config", str(config), "mirror", "--json"]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    while states(db, "nas").get("copied", 0) < 1 and first.poll() is None:
        time.sleep(0.005)
    # Frozen, most likely in the middle of a file (holding its row): the second run must
    # pass it by, do the rest, and the first must then finish without copying anything twice.
    os.kill(first.pid, signal.SIGSTOP)
    second = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    while states(db, "nas").get("pending", 0) > 1 and second.poll() is None:
        time.sleep(0.005)
    os.kill(first.pid, signal.SIGCONT)
    procs = [first, second]
    reports = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        reports.append(json.loads(out)["mirrors"][0])
    assert sum(r["copied"] for r in reports) == 80
    assert all(r["adopted"] == 0 for r in reports)       # no file was written by both
    assert all(r["copied"] > 0 for r in reports), reports  # both did work
    assert mirror_files(nas) == library_files(library)
    assert os.listdir(nas / ".incoming") == []
    assert states(db, "nas") == {"copied": 80}
