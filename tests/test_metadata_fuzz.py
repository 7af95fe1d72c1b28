"""Fuzzing the metadata normaliser: hostile exiftool-shaped JSON through DuckDB and PostgreSQL.

Records carry every tag the normaliser reads (taken from normalise.sql itself, so new tags are
fuzzed too) with values of the wrong type, numbers as strings and strings as numbers, huge and
tiny numbers, 'NaN'/'inf', nested garbage, absurd dates and offsets, out-of-range GPS. Whatever
comes in: the batch never fails, every typed column holds a value of its domain or NULL, dates
are the ones written (never invented), and PostgreSQL takes every record (or the load records
a failure for it). CI runs a fixed set of examples (conftest.py: profile "ci"); the long run
is in docs/hostile-input.md.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator
from datetime import datetime
from importlib import resources
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row
from support.pgserver import TempPostgres

from photo_ingest import catalog
from photo_ingest.metadata import load
from photo_ingest.metadata.backlog import Versions
from photo_ingest.metadata.extractor import Reading, without_nul
from photo_ingest.metadata.normalise import (
    BUILTIN_MAKES,
    COLUMNS,
    Document,
    Normaliser,
    Settings,
)

_SQL = resources.files("photo_ingest.metadata").joinpath("normalise.sql").read_text()
TAGS = sorted(set(re.findall(r'"([A-Za-z0-9]+:[A-Za-z0-9]+)": "(?:VARCHAR|DOUBLE|JSON)"', _SQL)))
DATE_TAGS = [t for t in TAGS if "Date" in t and "Sub" not in t]

numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1e-300, 1e300, 2**31, 2**63, 65535, 65536, 4_000_000_000]),
)
number_strings = st.one_of(
    numbers.map(str),
    st.sampled_from(["NaN", "nan", "inf", "-inf", "Infinity", "-Infinity", "1e400", "1/0",
                     "undef", "f/2.8", "1/250", "3200 3200", "[100]", "0x10", "", " ", "½"]),
)
dates = st.builds(
    lambda y, mo, d, h, mi, s, sep, tail: f"{y:04d}:{mo:02d}:{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}"
                                          f"{tail}",
    st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25),
    st.integers(0, 61), st.integers(0, 61), st.sampled_from([" ", "T"]),
    st.sampled_from(["", ".5", ".123456789", "Z", "+02:00", "+15:00", "-13:00", "+05:99",
                     "-12:00", "+14:00", "garbage"]),
)
absurd_dates = st.sampled_from(["0000:00:00 00:00:00", "0000:01:01 00:00:00",
                                "1904:01:01 00:00:00", "2200:01:01 00:00:00",
                                "2024:02:30 12:00:00", "0001:01:01 00:00:00",
                                "9999:12:31 23:59:59", "    :  :     :  :  "])
offsets = st.one_of(st.sampled_from(["+15:00", "-13:00", "+05:99", "Z", "+14:00", "-12:00",
                                     "garbage", "+0545", "--01:00"]),
                    st.builds("{}{:02d}:{:02d}".format, st.sampled_from("+-"),
                              st.integers(0, 99), st.integers(0, 99)))
# Text as exiftool prints it after the extractor: any character but NUL and lone surrogates.
texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                max_size=60)
scalars = st.one_of(st.none(), st.booleans(), numbers, number_strings, texts, dates,
                    absurd_dates, offsets)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=3)), max_leaves=8)
gps = st.fixed_dictionaries({
    "Composite:GPSLatitude": st.one_of(numbers, number_strings),
    "Composite:GPSLongitude": st.one_of(numbers, number_strings),
    "Composite:GPSAltitude": st.one_of(numbers, number_strings),
})
records = st.tuples(
    st.dictionaries(st.sampled_from(TAGS), values, max_size=12),
    st.dictionaries(st.sampled_from(DATE_TAGS), st.one_of(dates, absurd_dates), max_size=3),
    st.one_of(st.just({}), gps),
    st.dictionaries(texts, values, max_size=2),  # tags the normaliser does not know
).map(lambda parts: {**parts[3], **parts[0], **parts[1], **parts[2]})
batches = st.lists(records, min_size=1, max_size=6)


def _scaled(n: int) -> int:
    """N examples in CI; the "long" profile's count scaled the same way (a DuckDB query per
    example costs ~0.1 s, 100-fold the pure-Python property tests)."""
    return max(n, settings().max_examples * n // 300)


def feed(n: Normaliser, batch: list[dict[str, Any]]) -> None:
    """The batch as the extractor hands it over: exiftool's JSON text, NULs dropped."""
    objs = [{**doc, "SourceFile": f"/lib/{i}"} for i, doc in enumerate(batch, 1)]
    text = without_nul(json.dumps(objs, ensure_ascii=False))
    documents = [Document(f"/lib/{i}", i, False, 0) for i in range(1, len(batch) + 1)]
    n.add_read(Reading(text, {d.name: d.name for d in documents}), documents)


def csv_records(n: Normaliser) -> list[dict[str, str | None]]:
    text = n.write_csv().read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    # COPY's CSV: an unquoted empty field is NULL (DuckDB quotes an empty string)
    raw_fields = [_fields(line) for line in _csv_lines(text)]
    return [{c: (None if v == "" and not quoted else v)
             for c, v, quoted in zip(COLUMNS, row, q, strict=True)}
            for row, q in zip(rows, raw_fields, strict=True)]


def _csv_lines(text: str) -> Iterator[str]:
    start = quotes = 0
    for i, ch in enumerate(text):
        if ch == '"':
            quotes += 1
        elif ch == "\n" and quotes % 2 == 0:
            yield text[start:i]
            start, quotes = i + 1, 0


def _fields(line: str) -> list[bool]:
    """Which fields of a CSV line are quoted."""
    out, quoted, inside, first = [], False, False, True
    for ch in line:
        if ch == '"':
            inside = not inside
            quoted = quoted or first
        elif ch == "," and not inside:
            out.append(quoted)
            quoted, first = False, True
            continue
        first = False
    out.append(quoted)
    return out


def _wall(value: Any) -> str | None:
    m = re.match(r"^\s*([0-9]{4}):([0-9]{2}):([0-9]{2})[ T]([0-9]{2}:[0-9]{2}:[0-9]{2})",
                 value) if isinstance(value, str) else None
    return f"{m.group(1)}-{m.group(2)}-{m.group(3)} {m.group(4)}" if m else None


_POSITIVE = ("f_number", "exposure_time", "focal_length", "focal_length_35mm", "duration",
             "frame_rate")
_WHOLE = {"iso": (1, 2**31 - 1), "width": (1, 2**31 - 1), "height": (1, 2**31 - 1),
          "orientation": (1, 8), "rating": (-1, 5), "flash": (0, 65535),
          "shutter_count": (-(2**63), 2**63 - 1)}


def check_record(rec: dict[str, str | None], doc: dict[str, Any]) -> None:
    """Every typed column holds a value of its domain, and no date is invented."""
    for col in _POSITIVE:
        if rec[col] is not None:
            v = float(rec[col])  # type: ignore[arg-type]
            assert math.isfinite(v) and v > 0, (col, rec[col])
    for col, (lo, hi) in _WHOLE.items():
        if rec[col] is not None:
            assert lo <= int(rec[col]) <= hi, (col, rec[col])  # type: ignore[arg-type]
    lat, lon, alt = (rec[c] for c in ("gps_latitude", "gps_longitude", "gps_altitude"))
    assert (lat is None) == (lon is None)
    if lat is not None and lon is not None:
        assert -90 <= float(lat) <= 90 and -180 <= float(lon) <= 180
        assert (float(lat), float(lon)) != (0.0, 0.0)
    if alt is not None:
        assert lat is not None and math.isfinite(float(alt))
    if rec["flash_fired"] is not None:
        assert rec["flash_fired"] in ("true", "false")
    if rec["capture_offset"] is not None:
        m = re.fullmatch(r"([+-])([0-9]{2}):([0-9]{2})", rec["capture_offset"])
        assert m is not None
        minutes = (int(m.group(2)) * 60 + int(m.group(3))) * (-1 if m.group(1) == "-" else 1)
        assert -720 <= minutes <= 840 and int(m.group(3)) < 60
    for col in ("captured_at", "captured_local", "gps_time"):
        if rec[col] is not None:  # a moment Python, psycopg and PostgreSQL can all hold
            datetime.fromisoformat(rec[col])  # type: ignore[arg-type]
            assert "BC" not in rec[col]  # type: ignore[operator]
    source = rec["capture_source"]
    if source is not None and source != "QuickTime:CreateDate" and rec["captured_local"]:
        assert rec["captured_local"][:19] == _wall(doc.get(source)), (source, doc.get(source))
    json.loads(rec["raw"] or "null")


@pytest.fixture(scope="module")
def normaliser() -> Iterator[Normaliser]:
    n = Normaliser(Settings("Europe/Berlin", BUILTIN_MAKES))
    yield n
    n.close()


@settings(max_examples=_scaled(100))
@given(batches)
def test_hostile_records_never_sink_a_batch(normaliser: Normaliser,
                                            batch: list[dict[str, Any]]) -> None:
    feed(normaliser, batch)
    recs = csv_records(normaliser)
    assert [int(r["asset_id"]) for r in recs] == list(range(1, len(batch) + 1))  # type: ignore[arg-type]
    for rec, doc in zip(recs, batch, strict=True):
        assert rec["error"] is None or "ExifTool:Error" in doc, rec["error"]
        check_record(rec, doc)


@pytest.mark.parametrize(("tags", "column", "expected"), [
    ({"EXIF:Flash": 1e300}, "flash", None),
    ({"EXIF:ISO": "99999999999999999999"}, "iso", None),
    ({"Composite:ImageSize": "99999999999 1"}, "width", None),
    ({"EXIF:ImageWidth": 4_000_000_000, "EXIF:ImageHeight": 3000}, "width", None),
    ({"XMP:ImageNumber": 1e300}, "shutter_count", None),
    ({"Composite:Rotation": 1e300}, "orientation", None),
    ({"XMP:ExposureTime": 1e-300}, "exposure", None),
    ({"EXIF:FNumber": "inf"}, "f_number", None),
    ({"EXIF:FNumber": "NaN"}, "f_number", None),
    ({"QuickTime:Duration": "Infinity"}, "duration", None),
    ({"Composite:GPSLatitude": 10, "Composite:GPSLongitude": 5, "Composite:GPSAltitude": "inf"},
     "gps_altitude", None),
    ({"EXIF:ISO": {"x": 5}}, "iso", None),
    ({"XMP:Subject": [{"a": 1}, "kept", [2]]}, "keywords", '{"kept"}'),
    ({"EXIF:DateTimeOriginal": "0000:01:01 00:00:00"}, "captured_local", None),
    ({"EXIF:DateTimeOriginal": "2024:01:01 00:00:00", "EXIF:OffsetTimeOriginal": "+05:99"},
     "capture_offset", None),
    ({"EXIF:DateTimeOriginal": "2024:01:01 00:00:00", "EXIF:OffsetTimeOriginal": "-13:00"},
     "capture_offset", None),
    ({"EXIF:DateTimeOriginal": "2024:01:01 00:00:00", "EXIF:OffsetTimeOriginal": "-12:00"},
     "capture_offset", "-12:00"),
    ({"EXIF:DateTimeOriginal": "9999:12:31 23:59:59", "EXIF:OffsetTimeOriginal": "-12:00"},
     "captured_at", None),
    ({"EXIF:Flash": -7.5}, "flash", None),
    ({"XMP:Rating": 2.5}, "rating", None),
    ({"Composite:Aperture": 0.00390625}, "f_number", None),  # not f/0.0 once rounded
])
def test_what_the_fuzzer_found(normaliser: Normaliser, tags: dict[str, Any], column: str,
                               expected: str | None) -> None:
    """Each of these sank its batch or made a wrong value before normaliser version 2."""
    feed(normaliser, [tags])
    (rec,) = csv_records(normaliser)
    assert rec["error"] is None
    assert rec[column] == expected


def test_a_file_the_normaliser_fails_on_fails_alone(normaliser: Normaliser) -> None:
    """Defence in depth: an error the SQL did not foresee costs one record, not the batch."""
    con = normaliser._con
    con.execute("CREATE OR REPLACE MACRO pi_codec(id) AS CAST(CAST(id AS INTEGER) AS VARCHAR)")
    try:
        feed(normaliser, [{"EXIF:Make": "Canon"}, {"QuickTime:CompressorID": "avc1"},
                          {"QuickTime:CompressorID": "27", "EXIF:Model": "X"}])
        recs = csv_records(normaliser)
    finally:
        con.execute(re.search(r"CREATE MACRO pi_codec.*?;\n", _SQL, re.S)
                    .group(0).replace("CREATE", "CREATE OR REPLACE"))  # type: ignore[union-attr]
    assert [r["error"] for r in recs][0::2] == [None, None]
    assert recs[1]["error"].startswith(  # type: ignore[union-attr]
        "the normaliser failed on this file's metadata: Conversion Error")
    assert json.loads(recs[1]["raw"])["QuickTime:CompressorID"] == "avc1"  # type: ignore[arg-type]
    assert (recs[0]["camera_make"], recs[2]["video_codec"]) == ("Canon", "27")


# ---- through PostgreSQL --------------------------------------------------------------------

ASSETS = 6


@pytest.fixture(scope="module")
def catalog_conn(pg: TempPostgres) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    dsn = pg.create_database("fuzz_metadata")
    conn = catalog.connect(dsn, autocommit=False)
    with conn.transaction():
        session = conn.execute("INSERT INTO ingest_sessions (source, host, pid) VALUES"
                               " ('fuzz', 'h', 1) RETURNING id").fetchone()
        for i in range(1, ASSETS + 1):
            conn.execute(
                "INSERT INTO assets (id, sha1, size, library_path, media_type, original_path,"
                " original_name, captured_local, capture_source, session_id) VALUES"
                " (%s, %s, 1, %s, 'photo', 'x', 'x', '2024-01-01', 'mtime', %s)",
                (i, bytes([i]) * 20, f"a/{i}.JPG", session["id"]))  # type: ignore[index]
    conn.commit()
    yield conn
    conn.close()


@settings(max_examples=_scaled(40), suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=1, max_size=ASSETS))
def test_hostile_records_load_into_postgresql(normaliser: Normaliser,
                                              catalog_conn: psycopg.Connection[Any],
                                              batch: list[dict[str, Any]]) -> None:
    conn = catalog_conn
    feed(normaliser, batch)
    facts = [load.Fact(i, "extract") for i in range(1, len(batch) + 1)]
    written = load.load(conn, normaliser.write_csv(), facts, Versions("fuzz"))
    conn.commit()
    for w, doc in zip(written, batch, strict=True):  # failed only where exiftool said so
        assert w.status == "ok" or "ExifTool:Error" in doc, (w, doc)
    with conn.cursor(row_factory=dict_row) as cur:  # psycopg reads every value back
        rows = cur.execute("SELECT * FROM asset_metadata WHERE asset_id <= %s ORDER BY asset_id",
                           (len(batch),)).fetchall()
    conn.commit()
    for row, doc in zip(rows, batch, strict=True):
        for col in _POSITIVE:
            assert row[col] is None or (math.isfinite(row[col]) and row[col] > 0)
        if row["captured_local"] is not None and row["capture_source"] not in (
                None, "QuickTime:CreateDate"):
            assert str(row["captured_local"])[:19] == _wall(doc.get(row["capture_source"]))
