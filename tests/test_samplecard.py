"""Tests for tests/support/samplecard.py (the camera-card generator)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import samplecard
from support.samplecard import MediaSpec, build_card, sample_card, write_media

pytestmark = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed")

DTO = "2024:06:01 10:11:12"
CREATE = "2024:06:01 08:11:12"
FULL: dict[str, Any] = {
    "datetime_original": DTO,
    "offset": "+02:00",
    "subsec": "123",
    "create_date": CREATE,
    "make": "Canon",
    "model": "Canon EOS R6",
}

PHOTO_KINDS = {"jpeg": "JPG", "png": "PNG", "thm": "THM", "cr2": "CR2", "nef": "NEF", "dng": "DNG"}
ALL_KINDS = {**PHOTO_KINDS, "mp4": "MP4", "mov": "MOV", "xmp": "XMP", "txt": "TXT"}
FILE_TYPES = {
    "jpeg": "JPEG",
    "png": "PNG",
    "thm": "THM",
    "cr2": "CR2",
    "nef": "NEF",
    "dng": "DNG",
    "mp4": "MP4",
    "mov": "MOV",
    "xmp": "XMP",
    "txt": "TXT",
}


def exiftool_json(paths: list[Path], *extra: str) -> dict[str, dict[str, Any]]:
    out = subprocess.run(
        ["exiftool", "-j", "-G", "-n", *extra, *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {Path(item["SourceFile"]).name: item for item in json.loads(out)}


def full_specs(**overrides: Any) -> list[MediaSpec]:
    return [
        MediaSpec(
            relpath=f"DCIM/100TEST/F_{kind}.{ext}", kind=kind, seed=7, **{**FULL, **overrides}
        )
        for kind, ext in ALL_KINDS.items()
    ]


@pytest.fixture(scope="module")
def full_card(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("full")
    paths = build_card(root, full_specs())
    return exiftool_json(paths, "-a", "-All")


@pytest.mark.parametrize("kind", sorted(PHOTO_KINDS))
def test_photo_tags_read_back_as_exif(full_card: dict[str, dict[str, Any]], kind: str) -> None:
    meta = full_card[f"F_{kind}.{PHOTO_KINDS[kind]}"]
    assert meta["File:FileType"] == FILE_TYPES[kind]
    assert meta["EXIF:DateTimeOriginal"] == DTO
    assert str(meta["EXIF:SubSecTimeOriginal"]) == "123"
    assert meta["EXIF:OffsetTimeOriginal"] == "+02:00"
    assert meta["EXIF:CreateDate"] == CREATE
    assert meta["EXIF:Make"] == "Canon"
    assert meta["EXIF:Model"] == "Canon EOS R6"
    assert "ExifTool:Warning" not in meta
    assert "ExifTool:Error" not in meta
    # PNG: only the eXIf chunk, no PNG text chunks duplicating the tags
    assert not [key for key in meta if key.startswith("PNG:") and "Date" in key]


@pytest.mark.parametrize("kind", ["mp4", "mov"])
def test_video_tags(full_card: dict[str, dict[str, Any]], kind: str) -> None:
    meta = full_card[f"F_{kind}.{ALL_KINDS[kind]}"]
    assert meta["File:FileType"] == FILE_TYPES[kind]
    assert meta["QuickTime:CreateDate"] == CREATE  # UTC, stored as given
    assert meta["QuickTime:TrackCreateDate"] == CREATE
    assert meta["QuickTime:MediaCreateDate"] == CREATE
    assert meta["QuickTime:CreationDate"] == f"{DTO}.123+02:00"  # Keys:CreationDate
    assert meta["QuickTime:Make"] == "Canon"
    assert meta["QuickTime:Model"] == "Canon EOS R6"
    assert "ExifTool:Warning" not in meta


def test_xmp_sidecar(full_card: dict[str, dict[str, Any]]) -> None:
    meta = full_card["F_xmp.XMP"]
    assert meta["File:FileType"] == "XMP"
    assert meta["XMP:DateTimeOriginal"] == f"{DTO}.123+02:00"
    assert meta["XMP:CreateDate"] == CREATE
    assert meta["XMP:Make"] == "Canon"
    assert meta["XMP:DocumentID"] == "samplecard:7"


def test_txt_is_plain_text(full_card: dict[str, dict[str, Any]]) -> None:
    assert full_card["F_txt.TXT"]["File:FileType"] == "TXT"


def test_fast2_reads_dates(tmp_path: Path) -> None:
    paths = build_card(tmp_path, full_specs(size=300_000))
    meta = exiftool_json(paths, "-fast2", "-DateTimeOriginal", "-CreateDate")
    for kind, ext in PHOTO_KINDS.items():
        assert meta[f"F_{kind}.{ext}"]["EXIF:DateTimeOriginal"] == DTO, kind
    for kind in ("mp4", "mov"):
        assert meta[f"F_{kind}.{ALL_KINDS[kind]}"]["QuickTime:CreateDate"] == CREATE


def test_bare_jpeg_has_no_exif(tmp_path: Path) -> None:
    path = tmp_path / "bare.jpg"
    write_media(path, MediaSpec(relpath="x", kind="jpeg", mtime=1_700_000_000.0))
    meta = exiftool_json([path])["bare.jpg"]
    assert meta["File:FileType"] == "JPEG"
    assert not [key for key in meta if key.startswith("EXIF:")]
    assert path.stat().st_mtime == 1_700_000_000.0


def test_same_spec_same_bytes_different_seed_different_bytes(tmp_path: Path) -> None:
    specs = full_specs()
    first = build_card(tmp_path / "a", specs)
    again = build_card(tmp_path / "b", specs)
    other = build_card(tmp_path / "c", [dataclasses.replace(s, seed=8) for s in specs])
    for one, two, three in zip(first, again, other, strict=True):
        assert one.read_bytes() == two.read_bytes(), one.name
        assert one.read_bytes() != three.read_bytes(), one.name


def test_seeds_unique_for_many_seeds(tmp_path: Path) -> None:
    specs = [
        MediaSpec(relpath=f"{kind}_{seed}", kind=kind, seed=seed, make="X")
        for kind in ("jpeg", "thm", "png", "cr2", "mp4")
        for seed in range(25)
    ]
    paths = build_card(tmp_path, specs)
    digests = {path.read_bytes() for path in paths}
    assert len(digests) == len(specs)


def test_video_create_date_with_zone_is_stored_as_utc(tmp_path: Path) -> None:
    path = tmp_path / "v.MOV"
    write_media(path, MediaSpec(relpath="x", kind="mov", create_date="2024:06:01 00:30:00+02:00"))
    assert exiftool_json([path])["v.MOV"]["QuickTime:CreateDate"] == "2024:05:31 22:30:00"


def test_rewrite_is_idempotent(tmp_path: Path) -> None:
    spec = MediaSpec(relpath="x", kind="xmp", datetime_original=DTO, seed=3)
    path = tmp_path / "s.xmp"
    write_media(path, spec)
    data = path.read_bytes()
    write_media(path, spec)  # existing file is replaced, not an exiftool -o error
    assert path.read_bytes() == data


@pytest.mark.parametrize("kind", sorted(ALL_KINDS))
def test_size_padding_keeps_tags(tmp_path: Path, kind: str) -> None:
    target = 3 * 1024 * 1024 + 123
    spec = MediaSpec(relpath="x", kind=kind, seed=5, size=target, mtime=1_600_000_000.5, **FULL)
    path = tmp_path / f"big.{ALL_KINDS[kind]}"
    write_media(path, spec)
    size = path.stat().st_size
    assert target <= size <= target + 16
    assert path.stat().st_mtime == 1_600_000_000.5
    meta = exiftool_json([path], "-a", "-All")[path.name]
    assert "ExifTool:Warning" not in meta
    assert "ExifTool:Error" not in meta
    if kind in PHOTO_KINDS:
        assert meta["EXIF:DateTimeOriginal"] == DTO
    elif kind in ("mp4", "mov"):
        assert meta["QuickTime:CreateDate"] == CREATE
        assert meta["QuickTime:MediaDataSize"] > target - 2000
    elif kind == "xmp":
        assert meta["XMP:DateTimeOriginal"].startswith(DTO)


def test_build_card_batches_exiftool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []
    real_popen = subprocess.Popen

    class CountingPopen(real_popen):  # type: ignore[misc,valid-type]
        def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
            started.append([str(a) for a in args])
            super().__init__(args, *rest, **kwargs)

    # every process started through the subprocess module goes through Popen
    monkeypatch.setattr(subprocess, "Popen", CountingPopen)
    before = samplecard.exiftool_runs
    specs = [
        MediaSpec(relpath=f"DCIM/100TEST/IMG_{i:04d}.{ALL_KINDS[kind]}", kind=kind, seed=i, **FULL)
        for i, kind in enumerate(sorted(ALL_KINDS) * 6)
    ]
    paths = build_card(tmp_path, specs)
    assert len(paths) == len(specs) == 60
    assert len(started) == 1
    assert Path(started[0][0]).name == "exiftool"
    assert samplecard.exiftool_runs == before + 1


def test_sample_card(tmp_path: Path) -> None:
    specs = sample_card(tmp_path)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    rels = {p.relative_to(tmp_path).as_posix() for p in files}
    assert rels == {s.relpath for s in specs}
    assert sum(p.stat().st_size for p in files) < 5 * 1024 * 1024

    by_rel = {s.relpath: s for s in specs}
    kinds = {s.kind for s in specs}
    assert {"jpeg", "png", "cr2", "dng", "mp4", "mov", "thm", "xmp", "txt"} <= kinds
    assert "DCIM/100CANON/Été 2024.JPG" in rels
    assert "MISC/notes.txt" in rels

    # name collision across folders with different content
    a = tmp_path / "DCIM/100CANON/IMG_0001.JPG"
    b = tmp_path / "DCIM/101CANON/IMG_0001.JPG"
    assert a.read_bytes() != b.read_bytes()
    # an exact duplicate under another name
    blobs: dict[bytes, list[str]] = {}
    for p in files:
        blobs.setdefault(p.read_bytes(), []).append(p.name)
    assert any(len(set(names)) > 1 for names in blobs.values())
    # sidecar + THM share the stem of their primary
    assert "DCIM/100CANON/IMG_0007.XMP" in rels and "DCIM/100CANON/IMG_0007.CR2" in rels
    assert "DCIM/100CANON/MVI_0010.THM" in rels and "DCIM/100CANON/MVI_0010.MOV" in rels

    # dates spread over >= 3 days; one photo with no date at all
    days = {s.datetime_original[:10] for s in specs if s.datetime_original}
    assert len(days) >= 3
    undated = [s for s in specs if s.kind == "jpeg" and not s.datetime_original]
    assert undated and all(s.mtime is not None for s in undated)
    assert any(s.subsec for s in specs)
    assert any(s.offset for s in specs) and any(
        s.kind == "jpeg" and not s.offset and s.datetime_original for s in specs
    )

    out = subprocess.run(
        ["exiftool", "-j", "-G", "-n", "-r", "-fast2", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    meta = {
        Path(item["SourceFile"]).as_posix().removeprefix("./"): item for item in json.loads(out)
    }
    assert set(meta) == rels
    for rel, m in meta.items():
        spec = by_rel[rel]
        assert (tmp_path / rel).stat().st_mtime == spec.mtime
        assert "ExifTool:Warning" not in m
        if spec.kind in PHOTO_KINDS:
            assert m.get("EXIF:DateTimeOriginal") == spec.datetime_original
            assert m.get("EXIF:OffsetTimeOriginal") == spec.offset
        elif spec.kind in ("mp4", "mov"):
            assert m["QuickTime:CreateDate"] == spec.create_date
        elif spec.kind == "xmp":
            assert m["XMP:DateTimeOriginal"] == f"{spec.datetime_original}{spec.offset}"
    assert "EXIF:SubSecTimeOriginal" in meta["DCIM/100CANON/IMG_0002.JPG"]


def test_rejects_heic_and_bad_relpath(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        build_card(tmp_path, [MediaSpec(relpath="a.HEIC", kind="heic")])
    with pytest.raises(ValueError):
        build_card(tmp_path, [MediaSpec(relpath="../a.JPG", kind="jpeg")])
    with pytest.raises(ValueError):
        build_card(
            tmp_path,
            [MediaSpec(relpath="a.JPG", kind="jpeg"), MediaSpec(relpath="a.JPG", kind="jpeg")],
        )


def test_exiftool_failure_is_reported(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exiftool"):
        write_media(
            tmp_path / "x.jpg", MediaSpec(relpath="x", kind="jpeg", datetime_original="nope")
        )


def test_no_exiftool_for_untagged_files(tmp_path: Path) -> None:
    before = samplecard.exiftool_runs
    build_card(
        tmp_path, [MediaSpec(relpath="a.txt", kind="txt"), MediaSpec(relpath="b.JPG", kind="jpeg")]
    )
    assert samplecard.exiftool_runs == before
    assert os.path.getsize(tmp_path / "a.txt") > 0
