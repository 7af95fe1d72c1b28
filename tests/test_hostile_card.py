"""A card built to hurt (support/hostile_card.py), ingested end to end against PostgreSQL.

Every entry ends in the state it should, with a clear reason; nothing is written outside
the library; every library name is a valid, plain name; the catalog matches the disk; a
second run is a no-op; `extract` gives every asset a metadata state. Files that change while
they are copied fail with a reason and are copied whole by the next run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import run_cli
from helpers import assert_catalog_matches_disk, ingest_json, library_files, sha1
from support.hostile_card import Expect, build_hostile_card, read_entry

from photo_ingest import config as config_module
from photo_ingest.ingest import pipeline
from photo_ingest.ingest.publish import Outcome

TEMPLATE = "{year}/{month}/{day}/{make}/{model}/{filename}"


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Expect]]]:
    """The card on a tmpfs when we may mount one (it keeps mtimes past 9999), else a folder."""
    root = tmp_path / "card"
    root.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "hostile-card", str(root)],
        check=False).returncode == 0
    try:
        yield root, build_hostile_card(root)
    finally:
        if mounted:
            subprocess.run(["umount", str(root)], check=True)


def tree(root: Path, skip: set[Path]) -> dict[str, tuple[int, float]]:
    """Everything under ROOT outside SKIP: name -> (size, mtime)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for name in filenames + dirnames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime)
    return out


def assert_plain_library_names(library: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(os.fsencode(library)):
        dirnames[:] = [d for d in dirnames if d != b".incoming"]
        for name in dirnames + filenames:
            text = name.decode("utf-8")  # strict: valid UTF-8
            assert len(name) <= 255 and not text.startswith(".") and text.strip() == text
            assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in text), text
            assert "\\" not in text
            real = os.path.realpath(os.path.join(dirpath, name))
            assert real.startswith(os.path.realpath(os.fsencode(library)) + b"/")


def test_hostile_card_end_to_end(hostile: tuple[Path, dict[str, Expect]], tmp_path: Path,
                                 library: Path, make_config: Callable[..., Path],
                                 db: psycopg.Connection[Any]) -> None:
    card, expected = hostile
    config = make_config(f'layout = "{TEMPLATE}"', timezone="Europe/Berlin")
    around = tree(tmp_path, {card, library})
    result = run_cli(config, "ingest", card, "--json")
    assert "Traceback" not in result.stderr, result.stderr
    summary = ingest_json(result)
    out = {o["path"]: o for o in summary["outcomes"]}
    assert len(out) == len(summary["outcomes"])  # one state per entry

    # every entry ends in its state, with a reason where it was not ingested
    assert set(out) == set(expected), (set(out) ^ set(expected))
    for path, want in expected.items():
        got = out[path]
        assert got["outcome"] == want.outcome, (path, got)
        if want.outcome in ("skipped", "failed"):
            assert got["reason"] and want.reason in got["reason"], (path, got)
        if want.outcome == "copied":
            assert got["library_path"].startswith(want.folder + "/"), (path, got)
            assert hashlib.sha1(read_entry(card, want.path)).hexdigest() == got["sha1"]
            assert sha1(library / got["library_path"]) == got["sha1"]
    failed = sum(1 for e in expected.values() if e.outcome == "failed")
    assert summary["status"] == ("partial" if failed else "completed")
    assert summary["files"]["failed"] == failed

    # the values on the card steered nothing: traversal became plain names
    evil = out["DCIM/media/EVIL.JPG"]["library_path"]
    assert evil == "2024/06/05/_._.._.._.._tmp_evil/__/EVIL.JPG"
    same_name = [out[p]["library_path"] for p in
                 ("DCIM/100CANON/IMG_0001.JPG", "dcim/100CANON/IMG_0001.JPG")]
    assert same_name[0] == "2024/06/01/Unknown/Unknown/IMG_0001.JPG"
    assert same_name[1].startswith("2024/06/01/Unknown/Unknown/IMG_0001_")
    assert out["DCIM/100HOST/ .JPG"]["library_path"].endswith("/_.JPG")  # extension kept
    assert tree(tmp_path, {card, library}) == around  # nothing written outside the library
    assert_plain_library_names(library)
    on_disk = assert_catalog_matches_disk(db, library)
    assert len(on_disk) == sum(1 for e in expected.values() if e.outcome == "copied")

    # the capture times: absurd dates and offsets were passed over, never invented
    rows = {r["original_path"]: r for r in db.execute(
        "SELECT original_path, capture_source, capture_offset, captured_local FROM assets")}
    for name in ("DATE0000", "YEAR0001"):
        assert rows[f"DCIM/media/{name}.JPG"]["capture_source"] == "mtime"
    for name in ("OFF15", "OFFM13", "OFFGARB"):
        row = rows[f"DCIM/media/{name}.JPG"]
        assert (row["capture_source"], row["capture_offset"]) == ("DateTimeOriginal", None)
    assert rows["DCIM/media/FEB30.JPG"]["capture_source"] == "CreateDate"

    # a second run is a no-op: nothing copied, the same skips and failures, the same library
    again = ingest_json(run_cli(config, "ingest", card, "--json"))
    for o in again["outcomes"]:
        first = out[o["path"]]["outcome"]
        assert o["outcome"] == ("duplicate" if first == "copied" else first), o
    assert library_files(library) == on_disk
    assert_catalog_matches_disk(db, library)

    # metadata: every asset ends ok or failed with a reason, through exiftool, DuckDB, COPY
    extracted = run_cli(config, "extract")  # 1: some files failed (random bytes, no JPEG)
    assert extracted.returncode in (0, 1) and "Traceback" not in extracted.stderr
    states = db.execute("SELECT a.original_path, m.status, m.error, m.captured_at, m.warnings"
                        " FROM assets a LEFT JOIN asset_metadata m ON m.asset_id = a.id"
                        ).fetchall()
    assert len(states) == len(on_disk)
    for s in states:
        assert s["status"] in ("ok", "failed") and (s["status"] == "ok") == (s["error"] is None)
    meta = {s["original_path"]: s for s in states}
    assert meta["DCIM/media/HUGEXMP.JPG"]["status"] == "ok"
    assert meta["DCIM/media/HUGEEXIF.CR2"]["status"] == "ok"
    assert meta["DCIM/media/YEAR0001.JPG"]["captured_at"] is None  # before the calendar
    big = db.execute("SELECT length(raw->>'XMP:Description') AS n FROM asset_metadata m"
                     " JOIN assets a ON a.id = m.asset_id WHERE a.original_path = %s",
                     ("DCIM/media/HUGEXMP.JPG",)).fetchone()
    assert big == {"n": 2_000_000}


class Mutator:
    """A Reporter that changes the file being copied right after its first buffer."""

    def __init__(self, card: Path, actions: dict[str, Callable[[Path], None]]) -> None:
        self.card = card
        self.order = sorted(actions)
        self.actions = actions
        self.done = 0
        self.mutated: set[str] = set()

    def start(self, files: int, total_bytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        name = self.order[self.done]
        if name not in self.mutated:
            self.mutated.add(name)
            self.actions[name](self.card / name)

    def file_done(self, outcome: Outcome) -> None:
        self.done += 1


def _append(path: Path) -> None:
    with path.open("ab") as fh:
        fh.write(b"appended while read")


def _rewrite(path: Path) -> None:  # same size, new bytes behind the reader
    with path.open("r+b") as fh:
        fh.seek(path.stat().st_size - 4096)
        fh.write(os.urandom(4096))


def _shrink(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def test_files_that_change_while_read(tmp_path: Path, library: Path,
                                      make_config: Callable[..., Path],
                                      db: psycopg.Connection[Any]) -> None:
    card = tmp_path / "card"
    card.mkdir()
    actions: dict[str, Callable[[Path], None]] = {
        "GROW.JPG": _append, "REWRITE.JPG": _rewrite, "SHRINK.JPG": _shrink,
        "STABLE.JPG": lambda p: None}
    for i, name in enumerate(sorted(actions)):
        (card / name).write_bytes(os.urandom(2 << 20))
        os.utime(card / name, (1_717_200_000 + i, 1_717_200_000 + i))
    cfg = config_module.load(make_config(buffer_size=65536))
    summary = pipeline.ingest(cfg, str(card), Mutator(card, actions))
    out = {o.relpath: o for o in summary.outcomes}
    assert (out["GROW.JPG"].outcome, out["SHRINK.JPG"].outcome) == ("failed", "failed")
    assert "file changed size while being read" in (out["GROW.JPG"].reason or "")
    assert "file changed size while being read" in (out["SHRINK.JPG"].reason or "")
    assert out["REWRITE.JPG"].outcome == "failed"
    assert out["REWRITE.JPG"].reason == "file was modified while being read"
    assert out["STABLE.JPG"].outcome == "copied"
    assert summary.status == "partial"
    assert_catalog_matches_disk(db, library)  # no torn copy anywhere, no temp left

    # once the files hold still, the next run copies them whole, hashes and bytes agreeing
    again = pipeline.ingest(cfg, str(card), Mutator(card, dict.fromkeys(actions, lambda p: None)))
    states = {o.relpath: o.outcome for o in again.outcomes}
    assert states == {"GROW.JPG": "copied", "REWRITE.JPG": "copied", "SHRINK.JPG": "copied",
                      "STABLE.JPG": "duplicate"}
    on_disk = assert_catalog_matches_disk(db, library)
    for o in again.outcomes:
        assert on_disk[o.library_path or ""] == sha1(card / o.relpath) == (o.sha1 or b"").hex()
