"""`photo-ingest extract` end to end: real files with tags written by exiftool, the real
ingest, the real CLI, a real PostgreSQL. Every typed column is checked against what was
written into the files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import run_cli
from support.samplecard import MediaSpec, build_card, sample_card

CLI = Callable[..., subprocess.CompletedProcess[str]]
SUPPORT = Path(__file__).parent / "support"


def ingest(cli: CLI, card: Path) -> None:
    result = cli("ingest", card)
    assert result.returncode == 0, result.stdout + result.stderr


def extract(cli: CLI, *args: str, code: int = 0) -> dict[str, Any]:
    result = cli("extract", "--json", *args)
    assert result.returncode == code, result.stdout + result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def records(db: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """Metadata records by the asset's original file name."""
    return {r["original_name"]: r for r in db.execute(
        "SELECT a.original_name, a.library_path, a.sha1 AS asset_sha1, m.*"
        " FROM asset_metadata m JOIN assets a ON a.id = m.asset_id")}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def subset(row: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in expected}


# --- every column, on a card with a bit of everything ------------------------------------

FULL = MediaSpec(
    "DCIM/100TEST/A_FULL.JPG", "jpeg", datetime_original="2024:06:01 09:15:02",
    subsec="120", offset="+02:00", create_date="2024:06:01 09:15:02",
    make="NIKON CORPORATION", model="NIKON Z 6_2", gps=(-33.8568, -70.6693, -12.5),
    gps_time="2024:06:01 07:15:02", lens="NIKKOR Z 35mm f/1.8 S", iso=3200, f_number=1.8,
    exposure_time=0.004, focal_length=35.0, focal_length_35mm=52, flash=25, orientation=6,
    serial="012345", rating=4, label="Red", keywords=("beach", "2024"),
    tags=(("XMP-aux:ImageNumber", "4321"),), seed=1)

RICH_CARD = [
    FULL,
    # no offset (the configured Europe/Berlin is assumed), and nothing else but the camera
    MediaSpec("DCIM/100TEST/B_BARE.JPG", "jpeg", datetime_original="2024:01:15 21:47:30",
              make="Canon", model="Canon EOS R6", seed=2),
    # no offset, but a GPS clock 5 h 30 min behind: the camera was in India
    MediaSpec("DCIM/100TEST/C_GPS.PNG", "png", datetime_original="2024:06:01 15:45:03",
              gps=(48.1372, 11.5756, 519.0), gps_time="2024:06:01 10:15:00", iso=100,
              orientation=1, seed=3),
    MediaSpec("DCIM/100TEST/D_WEST.DNG", "dng", datetime_original="2024:06:01 09:15:02",
              offset="-05:00", make="Canon", model="Canon EOS R6", exposure_time=2.0,
              f_number=11.0, focal_length=16.0, flash=16, seed=4),
    # a RAW with the editor's XMP sidecar: the sidecar's rating, label and keywords win
    MediaSpec("DCIM/100TEST/E_RAW.CR2", "cr2", datetime_original="2024:06:02 11:00:00",
              offset="+02:00", make="Canon", model="Canon EOS R6", rating=1, seed=5),
    MediaSpec("DCIM/100TEST/E_RAW.XMP", "xmp", rating=5, label="Green",
              keywords=("edited", "keeper"), gps=(59.3293, 18.0686, 28.0), seed=5),
    # videos: QuickTime CreateDate is UTC; Apple's CreationDate carries its offset
    MediaSpec("DCIM/100TEST/F_CLIP.MP4", "mp4", create_date="2024:06:02 14:30:00",
              gps=(40.7128, -74.006, 10.0), make="Canon", model="Canon EOS R6", seed=6),
    MediaSpec("DCIM/100TEST/G_PHONE.MOV", "mov", create_date="2024:06:02 14:30:05",
              datetime_original="2024:06:02 10:30:05", offset="-04:00", make="Apple",
              model="iPhone 15 Pro", rating=3, seed=7),
    MediaSpec("DCIM/100TEST/H_NEF.NEF", "nef", datetime_original="2024:06:03 08:00:00",
              make="NIKON CORPORATION", model="NIKON D850", iso=64, seed=8),
]


@pytest.fixture
def rich_card(tmp_path: Path) -> Path:
    card = tmp_path / "card"
    build_card(card, RICH_CARD)
    # (not random bytes: one random file in a hundred looks like an MP3 to exiftool)
    (card / "DCIM/100TEST/X_CORRUPT.JPG").write_bytes(bytes(range(256)) * 12)
    whole = (card / FULL.relpath).read_bytes()
    (card / "DCIM/100TEST/Y_TRUNCATED.JPG").write_bytes(whole[:len(whole) // 3])
    return card


def test_every_column_from_real_files(rich_card: Path, cli: CLI, library: Path,
                                      db: psycopg.Connection[Any]) -> None:
    ingest(cli, rich_card)
    summary = extract(cli, code=1)  # the corrupt file fails: exit 1
    assert (summary["extracted"], summary["ok"], summary["failed"]) == (10, 9, 1)
    assert summary["status"] == "completed" and summary["pending_after"] == 0
    assert [f["library_path"].split("/")[-1] for f in summary["failures"]] == ["X_CORRUPT.JPG"]
    rows = records(db)
    assert len(rows) == 10

    full = rows["A_FULL.JPG"]
    path = library / full["library_path"]
    version = subprocess.run(["exiftool", "-ver"], capture_output=True, text=True).stdout
    typed = {
        "status": "ok", "error": None, "warnings": None, "file_type": "JPEG",
        "mime_type": "image/jpeg", "exiftool_version": version.strip(),
        "captured_at": utc("2024-06-01 07:15:02.120"),
        "captured_local": datetime(2024, 6, 1, 9, 15, 2, 120000), "capture_offset": "+02:00",
        "capture_source": "EXIF:DateTimeOriginal",
        "capture_offset_source": "EXIF:OffsetTimeOriginal",
        "camera_make": "Nikon", "camera_model": "Z 6_2", "camera": "Nikon Z 6_2",
        "camera_serial": "012345", "shutter_count": 4321, "lens": "NIKKOR Z 35mm f/1.8 S",
        "iso": 3200, "f_number": 1.8, "exposure_time": 0.004, "exposure": "1/250",
        "focal_length": 35.0, "focal_length_35mm": 52.0, "flash": 25, "flash_fired": True,
        "width": 48, "height": 64, "orientation": 6,  # a 64x48 picture turned upright
        "gps_latitude": -33.8568, "gps_longitude": -70.6693, "gps_altitude": -12.5,
        "gps_time": utc("2024-06-01 07:15:02"), "duration": None, "video_codec": None,
        "frame_rate": None, "rating": 4, "label": "Red", "keywords": ["beach", "2024"],
        "raw_sidecars": None, "sidecar_ids": [],
        "file_size": path.stat().st_size, "sha1": full["asset_sha1"],
        "file_mtime": datetime.fromtimestamp(path.stat().st_mtime_ns // 1000 / 1e6, UTC),
    }
    assert subset(full, typed) == typed
    # every column of the table is either checked above or is bookkeeping checked here
    bookkeeping = {"asset_id", "extractor_version", "normaliser_version", "normaliser_settings",
                   "extracted_at", "normalised_at", "raw"}
    columns = {c for c in full if c not in ("original_name", "library_path", "asset_sha1")}
    assert columns == set(typed) | bookkeeping
    assert full["raw"]["EXIF:Make"] == "NIKON CORPORATION"  # exiftool's output, complete
    assert full["raw"]["EXIF:GPSLatitudeRef"] == "S" and full["raw"]["XMP:Rating"] == 4
    assert full["raw"]["SourceFile"] == str(path)
    assert full["normaliser_settings"].startswith("zone=Europe/Berlin;")

    bare = rows["B_BARE.JPG"]
    assumed = {"captured_at": utc("2024-01-15 20:47:30"), "capture_offset": None,
               "captured_local": datetime(2024, 1, 15, 21, 47, 30),
               "capture_offset_source": "assumed", "camera": "Canon EOS R6", "width": 64,
               "height": 48, "keywords": []}
    assert subset(bare, assumed) == assumed
    missing = ["lens", "iso", "f_number", "exposure_time", "exposure", "focal_length",
               "focal_length_35mm", "flash", "flash_fired", "orientation", "gps_latitude",
               "gps_longitude", "gps_altitude", "gps_time", "duration", "video_codec",
               "frame_rate", "rating", "label", "camera_serial", "shutter_count"]
    assert {k: bare[k] for k in missing} == dict.fromkeys(missing)

    india = {"captured_at": utc("2024-06-01 10:15:03"), "capture_offset": "+05:30",
             "capture_offset_source": "GPS", "gps_latitude": 48.1372,
             "gps_longitude": 11.5756, "gps_altitude": 519.0, "iso": 100, "file_type": "PNG",
             "width": 64, "height": 48, "orientation": 1, "camera": None}
    assert subset(rows["C_GPS.PNG"], india) == india

    west = {"captured_at": utc("2024-06-01 14:15:02"), "capture_offset": "-05:00",
            "exposure_time": 2.0, "exposure": "2", "f_number": 11.0, "focal_length": 16.0,
            "flash": 16, "flash_fired": False, "file_type": "DNG",
            "mime_type": "image/x-adobe-dng", "camera_model": "EOS R6"}
    assert subset(rows["D_WEST.DNG"], west) == west

    raw = rows["E_RAW.CR2"]
    sidecar = {"rating": 5, "label": "Green", "keywords": ["edited", "keeper"],
               "gps_latitude": 59.3293, "gps_longitude": 18.0686, "gps_altitude": 28.0,
               "captured_at": utc("2024-06-02 09:00:00"), "file_type": "CR2"}
    assert subset(raw, sidecar) == sidecar
    sidecar_ids = [r["id"] for r in db.execute(
        "SELECT id FROM sidecars WHERE asset_id = %s", (raw["asset_id"],))]
    assert raw["sidecar_ids"] == sidecar_ids and len(sidecar_ids) == 1
    assert [d["XMP:Rating"] for d in raw["raw_sidecars"]] == [5]

    clip = {"captured_at": utc("2024-06-02 14:30:00"),
            "captured_local": datetime(2024, 6, 2, 16, 30), "capture_offset": None,
            "capture_source": "QuickTime:CreateDate", "capture_offset_source": "UTC",
            "duration": 1.0, "video_codec": "H.264", "width": 64, "height": 48,
            "orientation": 1, "gps_latitude": 40.7128, "gps_longitude": -74.006,
            "gps_altitude": 10.0, "mime_type": "video/mp4", "camera": "Canon EOS R6"}
    assert subset(rows["F_CLIP.MP4"], clip) == clip
    phone = {"captured_at": utc("2024-06-02 14:30:05"),
             "captured_local": datetime(2024, 6, 2, 10, 30, 5), "capture_offset": "-04:00",
             "capture_source": "QuickTime:CreationDate", "camera": "Apple iPhone 15 Pro",
             "rating": 3, "video_codec": "H.264", "file_type": "MOV"}
    assert subset(rows["G_PHONE.MOV"], phone) == phone
    nef = {"camera_make": "Nikon", "camera_model": "D850", "iso": 64, "file_type": "NEF",
           "capture_offset_source": "assumed", "captured_at": utc("2024-06-03 06:00:00")}
    assert subset(rows["H_NEF.NEF"], nef) == nef

    corrupt = rows["X_CORRUPT.JPG"]
    failed = {"status": "failed", "error": "File format error", "lens": None, "keywords": []}
    assert subset(corrupt, failed) == failed
    assert corrupt["raw"]["ExifTool:Error"] == "File format error"
    truncated = rows["Y_TRUNCATED.JPG"]
    assert truncated["status"] == "ok" and "format error" in truncated["warnings"].lower()


def test_sample_card_end_to_end(tmp_path: Path, cli: CLI,
                                db: psycopg.Connection[Any]) -> None:
    """The README's sample card: what the timer's job does after an ingest."""
    sample_card(tmp_path / "card")
    ingest(cli, tmp_path / "card")
    summary = extract(cli)
    assert (summary["extracted"], summary["ok"], summary["failed"]) == (13, 13, 0)
    rows = records(db)
    assets = {r["original_name"]: r for r in db.execute("SELECT * FROM assets")}
    for name, row in rows.items():  # both stages agree on the capture time
        if row["capture_source"] is not None:
            assert row["captured_at"] == assets[name]["captured_at"], name
    assert rows["IMG_0004.JPG"]["capture_source"] is None  # no date in the file at all
    assert rows["MVI_0010.MOV"]["raw_sidecars"][0]["File:FileType"] == "THM"
    assert rows["IMG_0007.CR2"]["raw_sidecars"][0]["File:FileType"] == "XMP"


# --- idempotence, refreshes -----------------------------------------------------------------

@pytest.fixture
def small_card(tmp_path: Path) -> Path:
    card = tmp_path / "small"
    build_card(card, [
        MediaSpec(f"DCIM/IMG_{i}.JPG", "jpeg", datetime_original=f"2024:06:0{i} 12:00:00",
                  lens="RF50mm F1.8 STM", make="Canon", model="Canon EOS R6", seed=10 + i)
        for i in range(1, 5)])
    return card


def test_rerun_does_nothing_and_changes_nothing(small_card: Path, cli: CLI,
                                                db: psycopg.Connection[Any]) -> None:
    ingest(cli, small_card)
    assert extract(cli)["extracted"] == 4
    before = records(db)
    again = extract(cli)
    assert (again["extracted"], again["refreshed"], again["pending_before"]) == (0, 0, 0)
    assert records(db) == before


def test_newer_normaliser_refreshes_from_stored_output(small_card: Path, cli: CLI,
                                                       db: psycopg.Connection[Any]) -> None:
    ingest(cli, small_card)
    extract(cli)
    # records as an older normaliser left them: a stale value, an older version number
    db.execute("UPDATE asset_metadata SET normaliser_version = normaliser_version - 1,"
               " lens = 'stale', captured_at = NULL")
    before = records(db)
    meta = json.loads(cli("status", "--json").stdout)["metadata"]
    assert (meta["pending"], meta["to_extract"], meta["to_refresh"]) == (4, 0, 4)
    assert "4 waiting (4 to refresh from stored output)" in cli("status").stdout
    summary = extract(cli)
    assert (summary["extracted"], summary["refreshed"]) == (0, 4)  # no file was read again
    after = records(db)
    for name, row in after.items():
        assert row["lens"] == "RF50mm F1.8 STM" and row["captured_at"] is not None
        assert row["extracted_at"] == before[name]["extracted_at"]
        assert row["normalised_at"] > before[name]["normalised_at"]
        assert row["raw"] == before[name]["raw"]


def test_newer_extractor_reads_the_files_again(small_card: Path, cli: CLI,
                                               db: psycopg.Connection[Any]) -> None:
    ingest(cli, small_card)
    extract(cli)
    db.execute("UPDATE asset_metadata SET extractor_version = 0 WHERE asset_id IN"
               " (SELECT min(asset_id) FROM asset_metadata)")
    assert (extract(cli)["extracted"], extract(cli)["extracted"]) == (1, 0)


def test_changed_settings_refresh_the_records(small_card: Path, cli: CLI,
                                              make_config: Callable[..., Path],
                                              db: psycopg.Connection[Any]) -> None:
    ingest(cli, small_card)
    extract(cli)
    berlin = records(db)["IMG_1.JPG"]["captured_at"]
    config = make_config(extra='[metadata]\ntimezone = "America/New_York"',
                         timezone="Europe/Berlin")
    result = run_cli(config, "extract", "--json")
    assert json.loads(result.stdout)["refreshed"] == 4, result.stderr
    assert records(db)["IMG_1.JPG"]["captured_at"] - berlin == timedelta(hours=6)
    config = make_config(extra='[metadata]\ntimezone = "none"', timezone="Europe/Berlin")
    run_cli(config, "extract")
    row = records(db)["IMG_1.JPG"]
    assert (row["captured_at"], row["captured_local"]) == (None, datetime(2024, 6, 1, 12))


def test_a_sidecar_arriving_later_updates_the_record(tmp_path: Path, cli: CLI,
                                                     db: psycopg.Connection[Any]) -> None:
    raw = MediaSpec("DCIM/IMG_1.CR2", "cr2", datetime_original="2024:06:01 10:00:00", seed=1)
    build_card(tmp_path / "first", [raw])
    build_card(tmp_path / "second", [raw, MediaSpec("DCIM/IMG_1.XMP", "xmp", rating=5,
                                                    keywords=("picked",), seed=1)])
    ingest(cli, tmp_path / "first")
    extract(cli)
    assert records(db)["IMG_1.CR2"]["rating"] is None
    ingest(cli, tmp_path / "second")  # the RAW is a duplicate, its new sidecar is kept
    assert extract(cli)["extracted"] == 1
    row = records(db)["IMG_1.CR2"]
    assert (row["rating"], row["keywords"], len(row["sidecar_ids"])) == (5, ["picked"], 1)


# --- failures ---------------------------------------------------------------------------------

def test_failures_are_recorded_and_retried_only_when_asked_or_changed(
        small_card: Path, cli: CLI, library: Path, db: psycopg.Connection[Any]) -> None:
    (small_card / "DCIM/BROKEN.JPG").write_bytes(b"\xff\xd8 not really a JPEG" * 50)
    ingest(cli, small_card)
    first = extract(cli, code=1)
    assert (first["ok"], first["failed"]) == (4, 1)
    broken = next(r for r in records(db).values() if r["status"] == "failed")
    assert broken["error"] == "File format error"

    # not retried: the timer's next runs are quiet and succeed
    for _ in range(2):
        again = extract(cli)
        assert (again["extracted"], again["failed"], again["pending_before"]) == (0, 0, 0)
    status = json.loads(cli("status", "--json").stdout)["metadata"]
    assert (status["ok"], status["failed"], status["pending"]) == (4, 1, 0)
    assert status["failures"][0]["error"] == "File format error"
    assert "File format error" in cli("status").stdout

    # on request: tried once more, still failing, recorded anew
    retried = extract(cli, "--retry-failed", code=1)
    assert (retried["extracted"], retried["failed"]) == (1, 1)
    assert records(db)["BROKEN.JPG"]["extracted_at"] > broken["extracted_at"]

    # the file changes (here: repaired in place): retried by the next plain run
    path = library / broken["library_path"]
    shutil.copyfile(library / records(db)["IMG_1.JPG"]["library_path"], path)
    fixed = extract(cli)
    assert (fixed["extracted"], fixed["ok"]) == (1, 1)
    assert records(db)["BROKEN.JPG"]["status"] == "ok"


def test_a_missing_library_file_fails_until_it_is_back(small_card: Path, cli: CLI,
                                                       library: Path,
                                                       db: psycopg.Connection[Any]) -> None:
    ingest(cli, small_card)
    lib_path = next(library.rglob("IMG_2.JPG"))
    hidden = lib_path.with_name("elsewhere")
    lib_path.rename(hidden)
    summary = extract(cli, code=1)
    assert summary["failures"][0]["error"] == ("cannot read the library file:"
                                               " No such file or directory")
    assert extract(cli)["extracted"] == 0  # still missing: nothing to retry
    hidden.rename(lib_path)
    assert extract(cli)["ok"] == 1


def test_a_hanging_or_crashing_exiftool_fails_only_its_file(
        tmp_path: Path, cli: CLI, make_config: Callable[..., Path],
        db: psycopg.Connection[Any]) -> None:
    card = tmp_path / "card"
    build_card(card, [MediaSpec(f"DCIM/{name}.JPG", "jpeg", make="Canon", seed=i)
                      for i, name in enumerate(["A", "B_HANG", "C", "D_CRASH", "E"])])
    ingest(cli, card)
    wrapper = tmp_path / "exiftool"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{SUPPORT / "fake_exiftool.py"}"'
                       ' "$@"\n')
    wrapper.chmod(0o755)
    config = make_config(extra="[metadata]\ntimeout = 1", exiftool=str(wrapper),
                         timezone="Europe/Berlin")
    result = run_cli(config, "extract", "--json", "--workers", "1")
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["ok"], summary["failed"]) == (3, 2)
    errors = {n: r["error"] for n, r in records(db).items()}
    assert errors == {"A.JPG": None, "C.JPG": None, "E.JPG": None,
                      "B_HANG.JPG": "exiftool printed nothing for 1 s reading this file",
                      "D_CRASH.JPG": "exiftool crashed reading this file"}


def test_no_exiftool_means_cannot_start(small_card: Path, cli: CLI,
                                        make_config: Callable[..., Path]) -> None:
    ingest(cli, small_card)
    config = make_config(exiftool="/nonexistent/exiftool", timezone="Europe/Berlin")
    result = run_cli(config, "extract")
    assert result.returncode == 3, result.stderr
    assert "cannot start exiftool (/nonexistent/exiftool)" in result.stderr


def test_a_missing_library_means_cannot_start(small_card: Path, cli: CLI, library: Path,
                                              db: psycopg.Connection[Any]) -> None:
    ingest(cli, small_card)
    library.rename(library.with_name("unmounted"))
    result = cli("extract")
    assert result.returncode == 3 and "not mounted?" in result.stderr
    assert db.execute("SELECT count(*) AS n FROM asset_metadata").fetchone() == {"n": 0}


def test_a_record_the_catalog_rejects_fails_alone(small_card: Path, cli: CLI, dsn: str,
                                                  tmp_path: Path,
                                                  db: psycopg.Connection[Any]) -> None:
    """The load's fallback: COPY of the batch fails, each record is tried on its own."""
    import csv

    from photo_ingest.metadata import load
    from photo_ingest.metadata.backlog import Versions
    from photo_ingest.metadata.normalise import COLUMNS

    ingest(cli, small_card)
    ids = [r["id"] for r in db.execute("SELECT id FROM assets ORDER BY id")]
    path = tmp_path / "batch.csv"
    with path.open("w", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        for n, asset_id in enumerate(ids):
            row = dict.fromkeys(COLUMNS, "")
            row.update(asset_id=asset_id, warnings='two\nlines, "quoted"', keywords="{}",
                       raw='{"a": 1}', captured_at="2024-06-01 10:00:00+00")
            if n == 2:
                row["captured_at"] = "the day before yesterday"  # PostgreSQL says no
            out.writerow(row.values())
    facts = [load.Fact(asset_id, "extract") for asset_id in ids]
    with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row) as conn:
        written = load.load(conn, path, facts, Versions("test"))
        conn.commit()
    assert [w.status for w in written] == ["ok", "ok", "failed", "ok"]
    assert written[2].error is not None and written[2].error.startswith(
        "the catalog rejected the record: invalid input syntax for type timestamp")
    assert records(db)["IMG_1.JPG"]["warnings"] == 'two\nlines, "quoted"'


def test_the_reader_gives_up_on_a_dead_or_silent_exiftool() -> None:
    from photo_ingest.metadata import extractor

    r, w = os.pipe()
    os.write(w, b'[{"SourceFile": "a"')  # half an answer, then the process is gone
    os.close(w)
    with pytest.raises(extractor._Died):
        extractor._read_until(r, b"{ready}", 4096)
    os.close(r)
    r, w = os.pipe()
    extractor._limits.timeout = 0.2
    try:
        with pytest.raises(extractor._Silent):
            extractor._read_until(r, b"{ready}", 4096)
    finally:
        extractor._limits.timeout = None
        os.close(r)
        os.close(w)


def test_nul_escapes_are_dropped_from_exiftool_output() -> None:
    from photo_ingest.metadata.extractor import without_nul

    assert without_nul(r'{"a": "x\u0000y", "b": "\\u0000", "c": "\\\u0000"}') == \
        r'{"a": "xy", "b": "\\u0000", "c": "\\"}'
    assert json.loads(without_nul(json.dumps({"t": "nul\0here"}))) == {"t": "nulhere"}


# --- many workers, many processes ---------------------------------------------------------------

BIG = 200


@pytest.fixture(scope="module")
def big_card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    card = tmp_path_factory.mktemp("big")
    build_card(card, [MediaSpec(f"DCIM/{100 + i // 100}TEST/IMG_{i:04d}.JPG", "jpeg",
                                datetime_original="2024:06:01 12:00:00", iso=100 + i,
                                seed=1000 + i) for i in range(BIG)])
    return card


AUDIT = """
CREATE TABLE audit (asset_id bigint, pid integer);
CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit VALUES (NEW.asset_id, pg_backend_pid()); RETURN NEW; END $$;
CREATE TRIGGER audit AFTER INSERT OR UPDATE ON asset_metadata
    FOR EACH ROW EXECUTE FUNCTION audit();
"""


def test_two_extractors_never_do_the_same_asset(big_card: Path, cli: CLI, config: Path,
                                                db: psycopg.Connection[Any]) -> None:
    ingest(cli, big_card)
    db.execute(AUDIT)
    argv = [sys.executable, "-m", "photo_ingest", "--config", str(config), "extract",
            "--json", "--batch-size", "10", "--workers"]
    first = subprocess.Popen([*argv, "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    # the second starts once the first is under way, so that they surely overlap
    while not db.execute("SELECT count(*) AS n FROM audit").fetchone()["n"]:  # type: ignore[index]
        assert first.poll() is None, first.communicate()
    second = subprocess.Popen([*argv, "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    done = [json.loads(out)["extracted"] for out, _ in outs]
    assert sum(done) == BIG and min(done) > 0, done  # both worked, together did all once
    writes = db.execute("SELECT asset_id, count(*) AS n FROM audit GROUP BY asset_id"
                        " HAVING count(*) <> 1").fetchall()
    assert writes == []
    assert db.execute("SELECT count(DISTINCT asset_id) AS n FROM audit").fetchone() == {
        "n": BIG}
    assert db.execute("SELECT count(*) AS n FROM asset_metadata WHERE status = 'ok'"
                      ).fetchone() == {"n": BIG}


def test_limit_then_sigterm_then_resume(big_card: Path, cli: CLI, config: Path,
                                        db: psycopg.Connection[Any]) -> None:
    ingest(cli, big_card)
    assert extract(cli, "--limit", "10", "--batch-size", "3")["extracted"] == 10
    proc = subprocess.Popen([sys.executable, "-m", "photo_ingest", "--config", str(config),
                             "extract", "--json", "--workers", "1", "--batch-size", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while db.execute("SELECT count(*) AS n FROM asset_metadata").fetchone() == {"n": 10}:
        assert proc.poll() is None, proc.communicate()
    proc.terminate()
    out, err = proc.communicate(timeout=60)
    stopped = json.loads(out)
    assert proc.returncode == 1 and stopped["status"] == "stopped", err
    done = db.execute("SELECT count(*) AS n FROM asset_metadata").fetchone()
    assert done == {"n": 10 + stopped["extracted"]} and done["n"] < BIG  # type: ignore[index]
    rest = extract(cli)
    assert rest["extracted"] == BIG - done["n"]  # type: ignore[index]
    assert db.execute("SELECT count(*) AS n FROM asset_metadata WHERE status = 'ok'"
                      ).fetchone() == {"n": BIG}


# --- status and export ---------------------------------------------------------------------------

def test_status_shows_the_backlog(small_card: Path, cli: CLI) -> None:
    ingest(cli, small_card)
    meta = json.loads(cli("status", "--json").stdout)["metadata"]
    assert (meta["ok"], meta["failed"], meta["pending"], meta["to_extract"]) == (0, 0, 4, 4)
    assert "metadata: 0 ok, 0 failed, 4 waiting" in cli("status").stdout
    extract(cli)
    assert "metadata: 4 ok, 0 failed, 0 waiting" in cli("status").stdout


def test_export_parquet_and_csv(small_card: Path, cli: CLI, tmp_path: Path,
                                db: psycopg.Connection[Any]) -> None:
    import duckdb

    ingest(cli, small_card)
    extract(cli)
    db.execute("UPDATE asset_metadata SET keywords = '{\"a, b\",c}'")
    out = tmp_path / "meta.parquet"
    assert cli("export", out).returncode == 0
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rows = con.execute(f"SELECT library_path, sha1, lens, keywords, CAST(captured_at AS"
                       f" VARCHAR), captured_local FROM '{out}' ORDER BY asset_id").fetchall()
    assert len(rows) == 4
    assert rows[0][2:] == ("RF50mm F1.8 STM", ["a, b", "c"], "2024-06-01 10:00:00+00",
                           datetime(2024, 6, 1, 12))
    names = [d[0] for d in con.execute(f"DESCRIBE SELECT * FROM '{out}'").fetchall()]
    assert "raw" not in names and "camera" in names and "gps_latitude" in names
    assert cli("export", tmp_path / "raw.parquet", "--raw").returncode == 0
    raw = con.execute(f"SELECT raw FROM '{tmp_path / 'raw.parquet'}' LIMIT 1").fetchone()
    assert raw is not None and json.loads(raw[0])["EXIF:LensModel"] == "RF50mm F1.8 STM"

    csv = tmp_path / "meta.csv"
    assert cli("export", "--format", "csv", csv).returncode == 0
    text = csv.read_text()
    assert text.splitlines()[0].startswith("asset_id,library_path,sha1,")
    assert '"[""a, b"",""c""]"' in text  # keywords: a JSON array in CSV
    assert len(text.splitlines()) == 5


def test_export_errors(cli: CLI, tmp_path: Path) -> None:
    result = cli("export", tmp_path / "missing" / "x.parquet")
    assert result.returncode == 1 and "cannot write" in result.stderr
    result = cli("export", tmp_path / "x.json")
    assert result.returncode == 2 and "--format" in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "config.toml"]  # nothing half-written


def test_an_empty_library_is_quick_and_quiet(cli: CLI) -> None:
    summary = extract(cli)
    assert (summary["pending_before"], summary["extracted"], summary["workers"]) == (0, 0, 0)

