"""Properties of the capture-time rules over generated EXIF values and mtimes.

Parsing never crashes and never invents a date: garbage gives None, a valid value gives the
same wall clock back. capture_of always ends in a capture whose moment PostgreSQL and Python
can both hold, taken from the first usable source, or in NoCaptureTime when even the mtime
is beyond the calendar. CI runs a fixed set of examples (conftest.py: profile "ci").
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from photo_ingest.ingest.capture import (
    NoCaptureTime,
    capture_of,
    format_offset,
    parse_exif_date,
    parse_offset,
)

# Other scripts' digits, which int() reads but no camera writes.
ARABIC_DATE = ("\u0662\u0660\u0662\u0664:\u0660\u0661:\u0660\u0661 "
               "\u0660\u0660:\u0660\u0660:\u0660\u0660")
ARABIC_OFFSET = "+\u0660\u0665:\u0660\u0660"
_WALL = re.compile(r"^([0-9]{4}):([0-9]{2}):([0-9]{2})[ T]([0-9]{2}):([0-9]{2}):([0-9]{2})")

# Date-shaped strings with every field free to be out of range (year 0000, month 13, Feb 30,
# hour 99), with the separators, sub-seconds and inline offsets cameras and tools write.
date_like = st.builds(
    lambda y, mo, d, h, mi, s, sep, tail: f"{y:04d}:{mo:02d}:{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}"
                                          f"{tail}",
    st.integers(0, 9999), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99),
    st.integers(0, 99), st.integers(0, 99), st.sampled_from([" ", "T", ":", "  "]),
    st.sampled_from(["", ".5", ".123456789", "Z", "+02:00", "+15:00", "-13:00", " ", ".²", "x"]),
)
offsets_like = st.builds(lambda sign, h, m, colon: f"{sign}{h:02d}{colon}{m:02d}",
                         st.sampled_from("+-±"), st.integers(0, 99), st.integers(0, 99),
                         st.sampled_from([":", "", "."]))
garbage = st.one_of(st.none(), st.integers(), st.floats(), st.booleans(),
                    st.text(max_size=40), st.lists(st.integers(), max_size=3),
                    st.sampled_from(["0000:00:00 00:00:00", "    :  :     :  :  ", ARABIC_DATE,
                                     "2024:02:30 12:00:00", "1904:01:01 00:00:00",
                                     "2200:01:01 00:00:00", "0001:01:01 00:00:00",
                                     "9999:12:31 23:59:59", "²", "٣", "+15:00", "-13:00",
                                     "+14:00", "-12:00", "garbage", "+05:99"]))
values = st.one_of(date_like, offsets_like, garbage)
subsecs = st.one_of(st.none(), st.integers(-5, 10**9), st.text("0123456789²٣ x", max_size=12))
zones: list[tzinfo | None] = [None, UTC, ZoneInfo("Europe/Berlin"),
                              ZoneInfo("Pacific/Kiritimati"), ZoneInfo("Pacific/Pago_Pago"),
                              timezone(timedelta(hours=-12))]
TAGS = ["EXIF:DateTimeOriginal", "EXIF:SubSecTimeOriginal", "EXIF:OffsetTimeOriginal",
        "EXIF:CreateDate", "EXIF:SubSecTimeDigitized", "EXIF:OffsetTimeDigitized",
        "EXIF:OffsetTime", "QuickTime:CreateDate", "EXIF:Make", "EXIF:Model"]
tag_dicts = st.dictionaries(st.sampled_from(TAGS), values, max_size=len(TAGS))
mtimes = st.one_of(st.floats(-1e12, 1e12, allow_nan=False),
                   st.floats(allow_nan=False, allow_infinity=False),
                   st.sampled_from([0.0, -62135596800.0, 253402300799.0, 1e20, -1e20]))


@given(values, subsecs)
def test_parse_exif_date_never_invents_a_date(value: Any, subsec: Any) -> None:
    parsed = parse_exif_date(value, subsec)
    if parsed is None:
        return
    m = _WALL.match(value.strip())
    assert m is not None, value  # only an ASCII date-shaped string gives a date...
    assert (parsed.year, parsed.month, parsed.day, parsed.hour, parsed.minute,
            parsed.second) == tuple(int(g) for g in m.groups())  # ...and exactly its clock


@given(st.datetimes(min_value=datetime(1, 1, 1)), st.sampled_from([" ", "T"]),
       st.one_of(st.none(), st.text("0123456789", min_size=1, max_size=9)))
def test_valid_dates_give_the_same_wall_clock(when: datetime, sep: str,
                                              subsec: str | None) -> None:
    text = f"{when.year:04d}:{when.month:02d}:{when.day:02d}{sep}{when:%H:%M:%S}"
    micro = int(subsec[:6].ljust(6, "0")) if subsec else 0
    assert parse_exif_date(text, subsec) == when.replace(microsecond=micro)


@given(st.one_of(offsets_like, garbage))
def test_parse_offset_keeps_to_real_offsets(value: Any) -> None:
    tz = parse_offset(value)
    if tz is None:
        return
    minutes = int(tz.utcoffset(None).total_seconds() // 60)
    assert -12 * 60 <= minutes <= 14 * 60
    digits = re.sub(r"[^0-9]", "", value)
    sign = -1 if value.strip()[0] == "-" else 1
    assert minutes == sign * (int(digits[:2]) * 60 + int(digits[2:]))


@pytest.mark.parametrize(("value", "valid"), [
    ("+14:00", True), ("-12:00", True), ("+0545", True), ("+15:00", False), ("-13:00", False),
    ("+05:99", False), ("+05:60", False), ("garbage", False), (ARABIC_OFFSET, False), ("", False),
])
def test_offsets_out_of_range_are_ignored(value: str, valid: bool) -> None:
    assert (parse_offset(value) is not None) == valid


@given(tag_dicts, mtimes, st.sampled_from(zones))
def test_capture_of_falls_back_without_crashing(tags: dict[str, Any], mtime: float,
                                                zone: tzinfo | None) -> None:
    try:
        c = capture_of(tags, mtime, zone)
    except NoCaptureTime:
        with pytest.raises((OverflowError, ValueError, OSError)):  # not even the mtime
            datetime.fromtimestamp(mtime, UTC).astimezone(zone)
        return
    c.instant.astimezone(UTC)  # a moment every layer (Python, psycopg, PostgreSQL) can hold
    assert c.instant.tzinfo is not None and c.local.tzinfo is None
    dto = parse_exif_date(tags.get("EXIF:DateTimeOriginal"), tags.get("EXIF:SubSecTimeOriginal"))
    created = parse_exif_date(tags.get("EXIF:CreateDate"), tags.get("EXIF:SubSecTimeDigitized"))
    quicktime = parse_exif_date(tags.get("QuickTime:CreateDate"), None)
    if c.source == "DateTimeOriginal":
        assert c.local == dto
    elif c.source == "CreateDate":
        assert c.local == created
    elif c.source == "QuickTime:CreateDate":
        assert c.instant == quicktime.replace(tzinfo=UTC)  # type: ignore[union-attr]
    else:
        assert c.source == "mtime"
        assert c.instant == datetime.fromtimestamp(mtime, UTC)
    # a source is passed over only when it is missing, garbage or beyond the calendar
    order = [("DateTimeOriginal", dto), ("CreateDate", created),
             ("QuickTime:CreateDate", quicktime), ("mtime", True)]
    for source, parsed in order[:[s for s, _ in order].index(c.source)]:
        assert parsed is None or parsed.year in (1, 9999), (source, parsed)
    if c.offset is not None:
        assert c.offset == format_offset(c.instant.tzinfo)  # type: ignore[arg-type]
