"""The DuckDB normaliser on its own: exiftool-shaped JSON in, typed records out.

The end-to-end tests (test_metadata.py) feed it real exiftool output of real files; these
cover what generated files cannot carry (maker notes, odd values cameras write) and the
precedence rules, one rule at a time.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from photo_ingest.metadata.extractor import Reading
from photo_ingest.metadata.normalise import (
    BUILTIN_MAKES,
    COLUMNS,
    Document,
    Normaliser,
    Settings,
)

BASE = {"ExifTool:ExifToolVersion": 12.57, "File:FileType": "JPEG",
        "File:MIMEType": "image/jpeg"}


@pytest.fixture(scope="module")
def berlin() -> Normaliser:
    return Normaliser(Settings("Europe/Berlin", {**BUILTIN_MAKES, "ACME OPTICS": "Acme"}))


def normalise(n: Normaliser, *docs: dict[str, Any],
              sidecars: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """One asset made of DOCS[0] (its file) and SIDECARS; its record."""
    objs = [{"SourceFile": "/lib/a", **BASE, **docs[0]}]
    objs += [{"SourceFile": f"/lib/s{i}", **s} for i, s in enumerate(sidecars)]
    documents = [Document("/lib/a", 1, False, 0)]
    documents += [Document(f"/lib/s{i}", 1, True, i + 1) for i in range(len(sidecars))]
    n.add_read(Reading(json.dumps(objs), {d.name: d.name for d in documents}), documents)
    (record,) = n.records()
    return record


def capture(rec: dict[str, Any]) -> tuple[Any, ...]:
    return (rec["captured_at"], rec["captured_local"], rec["capture_offset"],
            rec["capture_source"], rec["capture_offset_source"])


def test_columns_are_the_view(berlin: Normaliser) -> None:
    assert tuple(normalise(berlin, {})) == COLUMNS


@pytest.mark.parametrize(("tags", "expected"), [
    # offset tags, in order of preference; sub-seconds from SubSecTimeOriginal
    ({"EXIF:DateTimeOriginal": "2024:06:01 09:15:03", "EXIF:SubSecTimeOriginal": 5,
      "EXIF:OffsetTimeOriginal": "-05:30", "EXIF:OffsetTime": "+01:00"},
     ("2024-06-01 14:45:03.5+00", "2024-06-01 09:15:03.5", "-05:30",
      "EXIF:DateTimeOriginal", "EXIF:OffsetTimeOriginal")),
    ({"EXIF:DateTimeOriginal": "2024:06:01 09:15:03", "EXIF:SubSecTimeOriginal": "007",
      "EXIF:OffsetTime": "+01:00"},
     ("2024-06-01 08:15:03.007+00", "2024-06-01 09:15:03.007", "+01:00",
      "EXIF:DateTimeOriginal", "EXIF:OffsetTime")),
    # no offset: the configured zone (CEST in June, CET in January) is assumed
    ({"EXIF:DateTimeOriginal": "2024:06:01 09:15:03"},
     ("2024-06-01 07:15:03+00", "2024-06-01 09:15:03", None, "EXIF:DateTimeOriginal",
      "assumed")),
    ({"EXIF:DateTimeOriginal": "2024:01:15 09:15:03"},
     ("2024-01-15 08:15:03+00", "2024-01-15 09:15:03", None, "EXIF:DateTimeOriginal",
      "assumed")),
    # an impossible date is skipped for the next candidate; garbage offsets are ignored
    ({"EXIF:DateTimeOriginal": "0000:00:00 00:00:00", "EXIF:CreateDate": "2024:06:01 10:00:00",
      "EXIF:OffsetTimeDigitized": "+99:00"},
     ("2024-06-01 08:00:00+00", "2024-06-01 10:00:00", None, "EXIF:CreateDate", "assumed")),
    # XMP and Apple's QuickTime CreationDate carry their offset inline; 'Z' is UTC
    ({"XMP:DateTimeOriginal": "2024:06:01 09:15:03.25+02:00"},
     ("2024-06-01 07:15:03.25+00", "2024-06-01 09:15:03.25", "+02:00",
      "XMP:DateTimeOriginal", "XMP:DateTimeOriginal")),
    ({"QuickTime:CreationDate": "2024:06:01 09:15:03Z"},
     ("2024-06-01 09:15:03+00", "2024-06-01 09:15:03", "+00:00", "QuickTime:CreationDate",
      "QuickTime:CreationDate")),
    # QuickTime CreateDate is UTC: the wall clock is the configured zone's
    ({"QuickTime:CreateDate": "2024:12:31 23:30:00"},
     ("2024-12-31 23:30:00+00", "2025-01-01 00:30:00", None, "QuickTime:CreateDate", "UTC")),
    # no offset, but a GPS clock: the difference, rounded to the quarter hour, is the offset
    ({"EXIF:DateTimeOriginal": "2024:06:01 15:45:03",
      "Composite:GPSDateTime": "2024:06:01 10:14:05Z"},
     ("2024-06-01 10:15:03+00", "2024-06-01 15:45:03", "+05:30", "EXIF:DateTimeOriginal",
      "GPS")),
    # ... unless the fix is stale (not near a quarter hour): then the zone is assumed
    ({"EXIF:DateTimeOriginal": "2024:06:01 15:45:03",
      "Composite:GPSDateTime": "2024:06:01 10:07:00Z"},
     ("2024-06-01 13:45:03+00", "2024-06-01 15:45:03", None, "EXIF:DateTimeOriginal",
      "assumed")),
    ({}, (None, None, None, None, None)),
])
def test_capture_time(berlin: Normaliser, tags: dict[str, Any],
                      expected: tuple[Any, ...]) -> None:
    assert capture(normalise(berlin, tags)) == expected


def test_without_a_zone_offsetless_times_stay_local() -> None:
    n = Normaliser(Settings(None))
    try:
        rec = normalise(n, {"EXIF:DateTimeOriginal": "2024:06:01 09:15:03"})
        assert capture(rec) == (None, "2024-06-01 09:15:03", None, "EXIF:DateTimeOriginal",
                                None)
        rec = normalise(n, {"QuickTime:CreateDate": "2024:06:01 09:15:03"})
        assert capture(rec) == ("2024-06-01 09:15:03+00", None, None, "QuickTime:CreateDate",
                                "UTC")
    finally:
        n.close()


@pytest.mark.parametrize(("make", "model", "expected"), [
    ("Canon", "Canon EOS R6", ("Canon", "EOS R6")),
    ("NIKON CORPORATION", "NIKON Z 6_2", ("Nikon", "Z 6_2")),
    ("OLYMPUS IMAGING CORP.  ", "E-M5MarkII", ("Olympus", "E-M5MarkII")),
    ("SONY", "ILCE-7M3", ("Sony", "ILCE-7M3")),
    ("Apple", "iPhone 15 Pro", ("Apple", "iPhone 15 Pro")),
    ("acme optics", "ACME Optics X1", ("Acme", "X1")),  # [metadata.makes] from the config
    ("Leica Camera AG", "LEICA Q2", ("Leica", "Q2")),
    ("Canon", "Canon", ("Canon", "Canon")),                # nothing would be left: keep it
])
def test_camera_make_and_model_are_tidied(berlin: Normaliser, make: str, model: str,
                                          expected: tuple[str, str]) -> None:
    rec = normalise(berlin, {"EXIF:Make": make, "EXIF:Model": model})
    assert (rec["camera_make"], rec["camera_model"]) == expected


@pytest.mark.parametrize(("tags", "lens"), [
    ({"EXIF:LensModel": "RF24-70mm F2.8 L IS USM",
      "Composite:PhotoIngestLens": "Canon RF 24-70mm F2.8L IS USM"}, "RF24-70mm F2.8 L IS USM"),
    # the lens the camera could not name: exiftool's identification from the maker notes
    ({"EXIF:LensModel": "----", "Composite:PhotoIngestLens": "AF-S Nikkor 35mm f/1.8G"},
     "AF-S Nikkor 35mm f/1.8G"),
    ({"EXIF:LensModel": "0.0 mm f/0.0", "MakerNotes:LensModel": "XF35mmF1.4 R"},
     "XF35mmF1.4 R"),
    ({"Composite:PhotoIngestLens": "Unknown (-1)", "XMP:Lens": "Helios 44-2 58mm f/2"},
     "Helios 44-2 58mm f/2"),
    ({"XMP:LensModel": "FE 35mm F1.8"}, "FE 35mm F1.8"),
    ({"EXIF:LensModel": ""}, None),
])
def test_lens_across_tags(berlin: Normaliser, tags: dict[str, Any], lens: str | None) -> None:
    assert normalise(berlin, tags)["lens"] == lens


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.004, "1/250"), (1 / 8000, "1/8000"), (0.25, "1/4"), (0.3, "0.3"), (0.5, "0.5"),
    (1, "1"), (2.5, "2.5"), (30, "30"),
])
def test_exposure_display(berlin: Normaliser, seconds: float, shown: str) -> None:
    rec = normalise(berlin, {"EXIF:ExposureTime": seconds})
    assert (rec["exposure_time"], rec["exposure"]) == (seconds, shown)


def test_exposure_iso_focal_flash(berlin: Normaliser) -> None:
    rec = normalise(berlin, {"EXIF:ISO": 65535, "EXIF:RecommendedExposureIndex": 102400,
                             "EXIF:FNumber": 1.4, "EXIF:FocalLength": 23,
                             "EXIF:FocalLengthIn35mmFormat": 0,
                             "Composite:FocalLength35efl": 34.5, "EXIF:Flash": 24})
    assert (rec["iso"], rec["f_number"], rec["focal_length"], rec["focal_length_35mm"],
            rec["flash"], rec["flash_fired"]) == (102400, 1.4, 23.0, 34.5, 24, False)
    rec = normalise(berlin, {"EXIF:ISO": "100 100", "Composite:Aperture": 8,
                             "XMP:FlashFired": "True"})
    assert (rec["iso"], rec["f_number"], rec["flash"], rec["flash_fired"]) == (
        100, 8.0, None, True)


@pytest.mark.parametrize(("tags", "size"), [
    ({"Composite:ImageSize": "6000 4000", "EXIF:Orientation": 1}, (6000, 4000, 1)),
    ({"Composite:ImageSize": "6000 4000", "EXIF:Orientation": 8}, (4000, 6000, 8)),
    ({"File:ImageWidth": 640, "File:ImageHeight": 480, "EXIF:Orientation": 9},
     (640, 480, None)),
    # a video shot upright: the rotation matrix says 90 degrees
    ({"QuickTime:ImageWidth": 1920, "QuickTime:ImageHeight": 1080, "Composite:Rotation": 90},
     (1080, 1920, 6)),
])
def test_dimensions_as_displayed(berlin: Normaliser, tags: dict[str, Any],
                                 size: tuple[Any, ...]) -> None:
    rec = normalise(berlin, tags)
    assert (rec["width"], rec["height"], rec["orientation"]) == size


@pytest.mark.parametrize(("tags", "gps"), [
    ({"Composite:GPSLatitude": -33.8568, "Composite:GPSLongitude": -70.6693,
      "Composite:GPSAltitude": -12.5}, (-33.8568, -70.6693, -12.5)),
    ({"XMP:GPSLatitude": 51.5, "XMP:GPSLongitude": -0.12, "XMP:GPSAltitude": 20,
      "XMP:GPSAltitudeRef": 1}, (51.5, -0.12, -20.0)),
    ({"Composite:GPSLatitude": 0, "Composite:GPSLongitude": 0}, (None, None, None)),
    ({"Composite:GPSLatitude": 91, "Composite:GPSLongitude": 10}, (None, None, None)),
])
def test_gps(berlin: Normaliser, tags: dict[str, Any], gps: tuple[Any, ...]) -> None:
    rec = normalise(berlin, tags)
    assert (rec["gps_latitude"], rec["gps_longitude"], rec["gps_altitude"]) == gps


@pytest.mark.parametrize(("tags", "video"), [
    ({"QuickTime:Duration": 12.5, "QuickTime:CompressorID": "hvc1",
      "QuickTime:VideoFrameRate": 59.94}, (12.5, "H.265", 59.94)),
    ({"M2TS:Duration": 3, "M2TS:VideoStreamType": 27}, (3.0, "H.264", None)),
    ({"Matroska:Duration": 4, "Matroska:VideoCodecID": "V_VP9"}, (4.0, "VP9", None)),
    ({"QuickTime:CompressorID": "xyz1"}, (None, "xyz1", None)),
])
def test_video(berlin: Normaliser, tags: dict[str, Any], video: tuple[Any, ...]) -> None:
    rec = normalise(berlin, tags)
    assert (rec["duration"], rec["video_codec"], rec["frame_rate"]) == video


def test_keywords_rating_label_and_serials(berlin: Normaliser) -> None:
    rec = normalise(berlin, {"XMP:Subject": ["beach", 2024, " beach ", "", 'say "hi"'],
                             "IPTC:Keywords": "ignored", "XMP:Rating": -1, "XMP:Label": "Red",
                             "MakerNotes:SerialNumber": 1234567, "MakerNotes:ShutterCount": 4242})
    assert rec["keywords"] == '{"beach","2024","say \\"hi\\""}'  # a PostgreSQL array literal
    assert (rec["rating"], rec["label"], rec["camera_serial"], rec["shutter_count"]) == (
        -1, "Red", "1234567", 4242)
    assert normalise(berlin, {"IPTC:Keywords": "solo", "EXIF:Rating": 7})["keywords"] == '{"solo"}'
    assert normalise(berlin, {"EXIF:Rating": 7})["rating"] is None


def test_sidecars_fill_gaps_and_xmp_wins_rating(berlin: Normaliser) -> None:
    raw_file = {"File:FileType": "CR2", "File:MIMEType": "image/x-canon-cr2",
                "EXIF:DateTimeOriginal": "2024:06:01 09:15:03", "XMP:Rating": 1}
    xmp = {"File:FileType": "XMP", "XMP:Rating": 5, "XMP:Subject": ["edited"],
           "XMP:DateTimeOriginal": "2020:01:01 00:00:00+00:00", "XMP:GPSLatitude": 10.5,
           "XMP:GPSLongitude": 20.5}
    thm = {"File:FileType": "THM", "EXIF:Make": "Canon", "EXIF:Model": "Canon EOS 5D"}
    rec = normalise(berlin, raw_file, sidecars=(xmp, thm))
    assert rec["rating"] == 5 and rec["keywords"] == '{"edited"}'     # the editor's
    assert rec["capture_source"] == "EXIF:DateTimeOriginal"           # the camera's
    assert (rec["gps_latitude"], rec["camera_model"]) == (10.5, "EOS 5D")  # gaps filled
    assert [d["File:FileType"] for d in json.loads(rec["raw_sidecars"])] == ["XMP", "THM"]
    assert json.loads(rec["raw"])["File:FileType"] == "CR2"
    # a capture time only a sidecar has is marked as such
    rec = normalise(berlin, {"File:FileType": "MOV", "File:MIMEType": "video/quicktime"},
                    sidecars=({"File:FileType": "THM",
                               "EXIF:DateTimeOriginal": "2024:06:01 09:15:03"},))
    assert rec["capture_source"] == "sidecar EXIF:DateTimeOriginal"


def test_errors_and_warnings(berlin: Normaliser) -> None:
    rec = normalise(berlin, {"ExifTool:Error": "File format error"})
    assert (rec["error"], rec["warnings"]) == ("File format error", None)
    rec = normalise(berlin, {"ExifTool:Warning": "JPEG format error"},
                    sidecars=({"ExifTool:Error": "File is empty", "File:FileType": "XMP"},))
    assert rec["error"] is None
    assert rec["warnings"] == "JPEG format error; sidecar XMP: File is empty"
    rec = normalise(berlin, {"File:FileType": "TXT", "File:MIMEType": "text/plain"})
    assert rec["warnings"] == "content is TXT (text/plain), not an image or video"
