"""When was each file captured? Read from the card in exiftool batch mode.

One exiftool process serves the whole card (pyexiftool's stay-open mode) with `-fast2`,
which reads only the metadata blocks at the start of each file. The precedence is:
EXIF DateTimeOriginal (+ SubSecTimeOriginal, OffsetTimeOriginal), EXIF CreateDate,
QuickTime CreateDate (UTC by the QuickTime spec), and finally the file's mtime.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import exiftool

from photo_ingest.ingest.stops import stops_deferred

log = logging.getLogger(__name__)

TAGS = [
    "EXIF:DateTimeOriginal", "EXIF:SubSecTimeOriginal", "EXIF:OffsetTimeOriginal",
    "EXIF:CreateDate", "EXIF:SubSecTimeDigitized", "EXIF:OffsetTimeDigitized",
    "EXIF:OffsetTime", "QuickTime:CreateDate", "EXIF:Make", "EXIF:Model",
    "QuickTime:Make", "QuickTime:Model",
]
DATE_TAGS = ("EXIF:DateTimeOriginal", "EXIF:CreateDate", "QuickTime:CreateDate")
BATCH = 256

# ASCII digits only: int() would also read other scripts' digits and invent a date from them.
_DATE = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(\.\d+)?", re.ASCII)
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$", re.ASCII)
# Offsets in use on Earth run from -12:00 to +14:00; anything beyond is a broken clock.
_EARLIEST, _LATEST = -12 * 60, 14 * 60


@dataclass(frozen=True)
class Capture:
    local: datetime             # naive: the wall clock the layout files by
    instant: datetime           # aware: the moment, exact or assumed via the time zone
    offset: str | None          # "+02:00" when the file stated it
    source: str                 # DateTimeOriginal | CreateDate | QuickTime:CreateDate | mtime
    make: str | None = None
    model: str | None = None


class NoCaptureTime(ValueError):
    """Neither the metadata nor the file's mtime gives a time that can be filed."""


class CaptureReader:
    """A running exiftool; `read` takes many files per call."""

    def __init__(self, executable: str = "exiftool") -> None:
        self._et = exiftool.ExifToolHelper(
            executable=executable, check_execute=False,
            common_args=["-G", "-charset", "filename=utf8"],
        )
        self._aliases = tempfile.TemporaryDirectory(prefix="photo-ingest-names-")

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start exiftool now, from this thread. (pyexiftool has the kernel end exiftool when
        the thread that started it ends: PR_SET_PDEATHSIG. So the thread that will outlive
        the reads starts it, not a short-lived reading thread.)"""
        with stops_deferred():
            if not self._et.running:
                self._et.run()

    def close(self) -> None:
        # A stop cutting the shutdown in half would leave exiftool running and pyexiftool's
        # finaliser failing on a second shutdown: the stop waits until this one is done.
        with stops_deferred():
            if self._et.running:
                self._et.terminate()
            self._aliases.cleanup()

    def read(self, paths: Iterable[bytes]) -> dict[bytes, dict[str, Any]]:
        """exiftool's tags per path; a path exiftool could not read maps to {}.

        `-fast2` stops at a QuickTime `mdat` box, and many cameras write `mdat` before
        `moov`: files that came back without any date are asked again with `-fast`, which
        skips over `mdat` instead of stopping there (still without reading it).
        """
        paths = list(paths)
        out = self._read(paths, "-fast2")
        undated = [p for p in paths if not any(tag in out[p] for tag in DATE_TAGS)]
        if undated:
            out.update(self._read(undated, "-fast"))
        return out

    def _read(self, paths: list[bytes], speed: str) -> dict[bytes, dict[str, Any]]:
        out: dict[bytes, dict[str, Any]] = {p: {} for p in paths}
        for start in range(0, len(paths), BATCH):
            chunk = paths[start:start + BATCH]
            names = {self._name_for(p): p for p in chunk}
            try:
                results = self._et.get_tags(list(names), TAGS, params=[speed])
            except Exception as exc:  # exiftool died or spoke garbage: dates fall back
                log.warning("exiftool failed on a batch of %d files: %s", len(chunk), exc)
                continue
            for tags in results:
                path = names.get(tags.get("SourceFile", ""))
                if path is not None:
                    out[path] = tags
        return out

    def _name_for(self, path: bytes) -> str:
        """A name exiftool's argument file can carry: the path, or a symlink alias to it."""
        try:
            text = path.decode("utf-8")
            if text.isprintable():
                return text
        except UnicodeDecodeError:
            pass
        digest = hashlib.sha1(path, usedforsecurity=False).hexdigest()
        alias = os.path.join(self._aliases.name, f"{digest}{_ext(path)}")
        if not os.path.lexists(alias):
            os.symlink(path, alias)
        return alias


class ReadAhead:
    """CaptureReader's answers for PATHS, read in a thread of its own while the caller
    copies: the capture-date pass overlaps the copy instead of preceding it.

    `tags(path)` waits for that path's batch only. Batches grow from FIRST files (so the
    first copy starts soon) to BATCH (so exiftool is called few times). Closing stops
    after the batch in progress; the reader is the caller's to close afterwards.
    """

    FIRST = 8

    def __init__(self, reader: CaptureReader, paths: Sequence[bytes]) -> None:
        self._reader = reader
        self._paths = list(paths)
        self._index = {p: i for i, p in enumerate(self._paths)}
        self._tags: dict[bytes, dict[str, Any]] = {}
        self._done = 0                          # paths[:done] have their answer
        self._error: BaseException | None = None
        self._stop = False
        self._cond = threading.Condition()
        reader.start()
        self._thread = threading.Thread(target=self._run, name="capture-dates", daemon=True)
        self._thread.start()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with stops_deferred():  # the batch in progress still uses exiftool: wait for it
            with self._cond:
                self._stop = True
            self._thread.join()

    def tags(self, path: bytes) -> dict[str, Any]:
        i = self._index[path]
        with self._cond:
            self._cond.wait_for(lambda: self._done > i or self._error is not None)
            if self._done <= i:
                raise RuntimeError("reading capture dates failed") from self._error
            return self._tags.get(path, {})

    def _run(self) -> None:
        size = self.FIRST
        try:
            while self._done < len(self._paths):
                with self._cond:
                    if self._stop:
                        return
                chunk = self._paths[self._done:self._done + size]
                found = self._reader.read(chunk)
                with self._cond:
                    self._tags.update(found)
                    self._done += len(chunk)
                    self._cond.notify_all()
                size = min(size * 4, BATCH)
        except BaseException as exc:  # a bug, not a file: CaptureReader takes those
            with self._cond:
                self._error = exc
                self._cond.notify_all()


def _ext(path: bytes) -> str:
    ext = os.path.splitext(path)[1].decode("ascii", "replace")
    return ext if ext.isalnum() or ext[1:].isalnum() else ""


def capture_of(tags: dict[str, Any], mtime: float, zone: tzinfo | None) -> Capture:
    """The capture time by the precedence rules, with the source it came from.

    A date that parses but cannot be placed in time (year 1 shifted past the start of the
    calendar, 9999-12-31 past its end) counts as missing: the next source is tried.
    Raises NoCaptureTime when none is left, not even the mtime."""
    for candidate in (_exif_capture, _quicktime_capture, _mtime_capture):
        try:
            found = candidate(tags, mtime, zone)
        except (OverflowError, ValueError, OSError):
            continue
        if found is not None:
            make = _text(tags.get("EXIF:Make") or tags.get("QuickTime:Make"))
            model = _text(tags.get("EXIF:Model") or tags.get("QuickTime:Model"))
            return Capture(found.local, found.instant, found.offset, found.source, make, model)
    raise NoCaptureTime(f"no usable capture time: no date in the metadata and the file's "
                        f"mtime ({mtime!r}) is out of range")


def _exif_capture(tags: dict[str, Any], mtime: float, zone: tzinfo | None) -> Capture | None:
    for source, date_tag, subsec_tag, offset_tags in (
        ("DateTimeOriginal", "EXIF:DateTimeOriginal", "EXIF:SubSecTimeOriginal",
         ("EXIF:OffsetTimeOriginal", "EXIF:OffsetTime")),
        ("CreateDate", "EXIF:CreateDate", "EXIF:SubSecTimeDigitized",
         ("EXIF:OffsetTimeDigitized", "EXIF:OffsetTime")),
    ):
        local = parse_exif_date(tags.get(date_tag), tags.get(subsec_tag))
        if local is None:
            continue
        offset = next((o for t in offset_tags if (o := parse_offset(tags.get(t)))), None)
        try:
            if offset is not None:
                found = Capture(local, local.replace(tzinfo=offset), format_offset(offset),
                                source)
            else:
                found = Capture(local, _assume(local, zone), None, source)
            found.instant.astimezone(UTC)  # raises if the moment falls outside the calendar
        except (OverflowError, ValueError):
            continue
        return found
    return None


def _quicktime_capture(tags: dict[str, Any], mtime: float,
                       zone: tzinfo | None) -> Capture | None:
    utc = parse_exif_date(tags.get("QuickTime:CreateDate"), None)
    if utc is None:
        return None
    instant = utc.replace(tzinfo=UTC)
    return Capture(_wall(instant, zone), instant, None, "QuickTime:CreateDate")


def _mtime_capture(tags: dict[str, Any], mtime: float, zone: tzinfo | None) -> Capture:
    instant = datetime.fromtimestamp(mtime, UTC)
    return Capture(_wall(instant, zone), instant, None, "mtime")


def parse_exif_date(value: Any, subsec: Any) -> datetime | None:
    """'2024:07:01 14:03:22' (+ '123' sub-seconds) as a naive datetime; None if unusable."""
    if not isinstance(value, str):
        return None
    m = _DATE.match(value.strip())
    if not m:
        return None
    try:
        y, mo, d, h, mi, sec = (int(g) for g in m.groups()[:6])
        dt = datetime(y, mo, d, h, mi, sec)
    except ValueError:  # 0000:00:00 00:00:00 and friends
        return None
    fraction = m.group(7)[1:] if m.group(7) else _digits(subsec)
    if fraction:
        dt = dt.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    return dt


def parse_offset(value: Any) -> timezone | None:
    if not isinstance(value, str):
        return None
    m = _OFFSET.match(value.strip())
    if not m:
        return None
    if int(m.group(3)) >= 60:
        return None
    minutes = (int(m.group(2)) * 60 + int(m.group(3))) * (-1 if m.group(1) == "-" else 1)
    if not _EARLIEST <= minutes <= _LATEST:
        return None
    return timezone(timedelta(minutes=minutes))


def format_offset(tz: timezone) -> str:
    delta = tz.utcoffset(None)
    minutes = int(delta.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _assume(local: datetime, zone: tzinfo | None) -> datetime:
    """The instant of a wall-clock time with no stated offset, in the configured zone."""
    return local.replace(tzinfo=zone) if zone is not None else local.astimezone()


def _wall(instant: datetime, zone: tzinfo | None) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _digits(value: Any) -> str:
    text = str(value).strip() if value is not None else ""
    return text if text.isascii() and text.isdigit() else ""  # not '²', not '٣'



def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None
