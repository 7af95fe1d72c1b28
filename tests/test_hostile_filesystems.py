"""Cards on the filesystems cameras use, through FUSE: a damaged FAT16 and an exFAT.

The kernel here has neither vfat nor exfat, so the images are mounted read-only with
fusefat and exfat-fuse (tests/bootstrap.sh installs them), as a card reader would present
them. Every file ends in an explicit state, readable ones with the card's exact bytes;
damage gives a failure or skip with a reason, never a copy whose SHA-1 is not its bytes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import run_cli
from helpers import assert_catalog_matches_disk, ingest_json, sha1
from support import fat_cards
from support.samplecard import MediaSpec, write_media

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="FUSE mounts and loop devices need root"),
    pytest.mark.skipif(bool(fat_cards.missing_tools()),
                       reason=f"missing: {', '.join(fat_cards.missing_tools())}"),
]


def jpeg(tmp_path: Path, date: str, seed: int) -> bytes:
    path = tmp_path / f"src{seed}.jpg"
    write_media(path, MediaSpec("x.jpg", "jpeg", datetime_original=date, seed=seed))
    return path.read_bytes()


def ingest_twice(config: Path, card: Path, db: psycopg.Connection[Any], library: Path,
                 ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Both runs' outcomes by path, after checking what holds for every file on any card."""
    runs = []
    for _ in range(2):
        summary = ingest_json(run_cli(config, "ingest", card, "--json"))
        for o in summary["outcomes"]:
            assert o["outcome"] in ("copied", "duplicate", "skipped", "failed"), o
            assert o["outcome"] in ("copied", "duplicate") or o["reason"], o
            if o["outcome"] == "copied":  # whatever the card gave, the catalog has its SHA-1
                assert sha1(library / o["library_path"]) == o["sha1"]
        assert_catalog_matches_disk(db, library)
        runs.append({o["path"]: o for o in summary["outcomes"]})
    first, again = runs
    assert set(first) == set(again)
    for path, o in first.items():  # the second run redoes only what the first did not do
        if o["outcome"] in ("copied", "duplicate"):
            assert again[path]["outcome"] == "duplicate", again[path]
        elif o["outcome"] == "skipped":
            assert again[path] == o
    return first, again


def test_fat_with_errors(tmp_path: Path, library: Path, config: Path,
                         db: psycopg.Connection[Any]) -> None:
    files = {
        "DCIM/100CANON/GOOD.JPG": jpeg(tmp_path, "2024:06:01 10:00:00", 1),
        "DCIM/100CANON/Été long name.JPG": jpeg(tmp_path, "2024:06:02 10:00:00", 2),
        "DCIM/100CANON/BROKEN.JPG": os.urandom(100_000),
        "DCIM/100CANON/LONGER.JPG": os.urandom(100_000),
        "DCIM/100CANON/CROSS.JPG": os.urandom(10),
    }
    image = tmp_path / "fat.img"
    fat_cards.fat_with_errors(image, files, tmp_path)
    assert "FATs differ" in fat_cards.fsck_errors(image)
    with fat_cards.fusefat_ro(image, tmp_path / "mnt") as card:
        out, again = ingest_twice(config, card, db, library)
    assert out["DCIM/100CANON/Été long name.JPG"]["library_path"] == \
        "2024/06/02/Été long name.JPG"
    for name in ("GOOD.JPG", "Été long name.JPG"):  # the card's exact bytes
        rel = f"DCIM/100CANON/{name}"
        assert out[rel]["sha1"] == _sha1(files[rel])
    broken = out["DCIM/100CANON/BROKEN.JPG"]
    assert (broken["outcome"], broken["reason"]) == (
        "failed", "reading the source failed: Operation not permitted")
    # CROSS.JPG has GOOD.JPG's clusters, so its content: stored once (CROSS comes first)
    assert out["DCIM/100CANON/CROSS.JPG"]["library_path"] == "2024/06/01/CROSS.JPG"
    good = out["DCIM/100CANON/GOOD.JPG"]
    assert (good["outcome"], good["library_path"]) == ("duplicate", "2024/06/01/CROSS.JPG")
    # LONGER.JPG: 10 MB by its directory entry, 100 kB by its chain: fusefat says 10 MB,
    # reads 100 kB, then (usually: not on every run of a loaded machine) says 100 kB. The
    # first run fails it; the second copies what is there, or fails it again for a size or
    # mtime that moved while it was read.
    longer = out["DCIM/100CANON/LONGER.JPG"]
    assert longer["outcome"] == "failed" and "while being read" in longer["reason"], longer
    second = again["DCIM/100CANON/LONGER.JPG"]
    assert second["outcome"] == "copied" or (
        second["outcome"] == "failed" and "while being read" in second["reason"]), second
    bad = out["DCIM/101BAD"]  # the kernel refuses to list a name holding '/'
    assert (bad["outcome"], bad["reason"]) == ("skipped", "unreadable folder: Input/output error")
    # fusefat shows the volume label as an empty file in the root
    assert out["HOSTILE"]["reason"] == "not a media file: extension (none)"
    assert len(out) == 7, sorted(out)


def test_exfat(tmp_path: Path, library: Path, config: Path,
               db: psycopg.Connection[Any]) -> None:
    files = {
        "DCIM/100CANON/IMG_0001.JPG": (jpeg(tmp_path, "2024:06:01 10:00:00", 3), 1.7e9),
        "DCIM/100CANON/Été.JPG": (jpeg(tmp_path, "2024:06:02 10:00:00", 4), 1.7e9),
        # 2107-12-31 12:00 UTC: the last year exFAT (and FAT) can store
        "DCIM/100CANON/FAR.MP4": (os.urandom(50_000), 4354776000.0),
        "DCIM/100CANON/EMPTY.JPG": (b"", 1.7e9),
        # (no 'dcim/' beside 'DCIM/': exFAT names are case-insensitive, it is the same folder)
    }
    image = tmp_path / "exfat.img"
    image.write_bytes(b"")
    os.truncate(image, 16 << 20)
    with fat_cards.loop_device(image) as dev:
        fat_cards.exfat(dev, files, tmp_path)
        with fat_cards.exfat_mount(dev, tmp_path / "mnt", read_only=True) as card:
            out, _ = ingest_twice(config, card, db, library)
    states = {p: (o["outcome"], o["library_path"]) for p, o in out.items()}
    assert states["DCIM/100CANON/IMG_0001.JPG"] == ("copied", "2024/06/01/IMG_0001.JPG")
    assert states["DCIM/100CANON/Été.JPG"] == ("copied", "2024/06/02/Été.JPG")
    assert states["DCIM/100CANON/FAR.MP4"] == ("copied", "2107/12/31/FAR.MP4")
    assert states["DCIM/100CANON/EMPTY.JPG"] == ("skipped", None)
    for rel, (data, _) in files.items():
        if data:
            assert out[rel]["sha1"] == _sha1(data)


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()
