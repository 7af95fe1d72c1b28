"""Capture dates: the parsing rules, and exiftool batch reads that survive hostile names."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from support.samplecard import MediaSpec, build_card

from photo_ingest.ingest import capture
from photo_ingest.ingest.capture import CaptureReader, capture_of, parse_exif_date, parse_offset
from photo_ingest.ingest.stops import Stopped

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(("value", "subsec", "expected"), [
    ("2024:06:01 09:15:02", None, datetime(2024, 6, 1, 9, 15, 2)),
    ("2024:06:01 09:15:02", "05", datetime(2024, 6, 1, 9, 15, 2, 50_000)),
    ("2024:06:01 09:15:02", "050", datetime(2024, 6, 1, 9, 15, 2, 50_000)),
    ("2024:06:01 09:15:02.7", "123", datetime(2024, 6, 1, 9, 15, 2, 700_000)),
    ("2024:06:01 09:15:02+02:00", None, datetime(2024, 6, 1, 9, 15, 2)),
    ("0000:00:00 00:00:00", None, None),
    ("    :  :     :  :  ", None, None),
    ("2024:13:01 00:00:00", None, None),
    (None, None, None),
    (20240601, None, None),
])
def test_parse_exif_date(value: object, subsec: object, expected: datetime | None) -> None:
    assert parse_exif_date(value, subsec) == expected


@pytest.mark.parametrize(("value", "minutes"), [
    ("+02:00", 120), ("-03:30", -210), ("+0545", 345), ("Z", None), ("+25:00", None),
])
def test_parse_offset(value: str, minutes: int | None) -> None:
    tz = parse_offset(value)
    assert (tz.utcoffset(None) if tz else None) == (
        timedelta(minutes=minutes) if minutes is not None else None)


def test_precedence_and_zones() -> None:
    tags = {"EXIF:CreateDate": "2024:01:02 03:04:05", "EXIF:OffsetTimeDigitized": "-05:00",
            "QuickTime:CreateDate": "2020:01:01 00:00:00"}
    c = capture_of(tags, 0.0, BERLIN)
    assert (c.source, c.offset) == ("CreateDate", "-05:00")
    assert c.instant == datetime(2024, 1, 2, 8, 4, 5, tzinfo=UTC)
    winter = capture_of({"EXIF:DateTimeOriginal": "2024:01:15 12:00:00"}, 0.0, BERLIN)
    assert winter.instant.utcoffset() == timedelta(hours=1) and winter.offset is None
    qt = capture_of({"QuickTime:CreateDate": "2024:07:01 22:30:00"}, 0.0,
                    timezone(timedelta(hours=-7)))
    assert (qt.local, qt.source) == (datetime(2024, 7, 1, 15, 30), "QuickTime:CreateDate")
    fallback = capture_of({"QuickTime:CreateDate": "0000:00:00 00:00:00"}, 86400.0, UTC)
    assert (fallback.local, fallback.source) == (datetime(1970, 1, 2), "mtime")


def test_reader_handles_hostile_names_in_one_process(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    build_card(tmp_path, [
        MediaSpec(f"DCIM/{i}.JPG", "jpeg", datetime_original="2024:06:01 10:00:00",
                  offset="+02:00", seed=i) for i in range(300)
    ])
    root = os.fsencode(tmp_path / "DCIM")
    hostile = [b"caf\xe9.JPG", b"new\nline.JPG", b"tab\there.JPG", b"-n.JPG"]
    for i, name in enumerate(hostile):
        os.rename(os.path.join(root, f"{i}.JPG".encode()), os.path.join(root, name))
    corrupt = os.path.join(root, b"corrupt.JPG")
    with open(corrupt, "wb") as fh:
        fh.write(b"\xff\xd8\xff\xe1garbage")
    paths = sorted(os.path.join(root, n) for n in os.listdir(root))
    started = []
    real = capture.exiftool.ExifToolHelper.run

    def count_run(self: object) -> None:
        started.append(1)
        real(self)  # type: ignore[arg-type]

    monkeypatch.setattr(capture.exiftool.ExifToolHelper, "run", count_run)
    with CaptureReader() as reader:
        tags = reader.read(paths)
    assert len(started) == 1  # one exiftool process for 301 files
    assert tags[corrupt].get("EXIF:DateTimeOriginal") is None
    for name in hostile:
        assert tags[os.path.join(root, name)]["EXIF:DateTimeOriginal"] == "2024:06:01 10:00:00"
    dated = [p for p in paths if tags[p].get("EXIF:OffsetTimeOriginal") == "+02:00"]
    assert len(dated) == 300


def _boxes(data: bytes) -> list[bytes]:
    boxes, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        boxes.append(data[pos:pos + size])
        pos += size
    return boxes


def test_video_with_mdat_before_moov_still_has_its_date(tmp_path: Path) -> None:
    """Cameras often write mdat first; -fast2 stops there, so the reader asks again."""
    build_card(tmp_path, [MediaSpec("DCIM/MVI_1.MP4", "mp4", create_date="2024:02:03 04:05:06",
                                    seed=1, size=200_000)])
    path = tmp_path / "DCIM/MVI_1.MP4"
    boxes = {b[4:8]: b for b in _boxes(path.read_bytes())}
    assert set(boxes) == {b"ftyp", b"moov", b"mdat"}
    path.write_bytes(boxes[b"ftyp"] + boxes[b"mdat"] + boxes[b"moov"])  # no sample offsets
    with CaptureReader() as reader:
        tags = reader.read([os.fsencode(path)])
    assert tags[os.fsencode(path)]["QuickTime:CreateDate"] == "2024:02:03 04:05:06"


def test_read_ahead_gives_every_file_its_tags_in_growing_batches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy's companion thread: the same answers as one read, batches of 8, 32, 128 …,
    and exiftool still alive after the thread has ended (it is started by the caller's
    thread: pyexiftool's PR_SET_PDEATHSIG would end it with the reading thread)."""
    build_card(tmp_path, [MediaSpec(f"DCIM/{i}.JPG", "jpeg", seed=i,
                                    datetime_original=f"2024:06:{1 + i % 28:02d} 10:00:00")
                          for i in range(50)])
    paths = sorted(os.fsencode(p) for p in (tmp_path / "DCIM").iterdir())
    batches: list[int] = []
    real = CaptureReader.read

    def counted(self: CaptureReader, chunk: list[bytes]) -> dict[bytes, dict[str, object]]:
        batches.append(len(chunk))
        return real(self, chunk)

    monkeypatch.setattr(CaptureReader, "read", counted)
    with CaptureReader() as reader:
        with capture.ReadAhead(reader, paths) as dates:
            got = {p: dates.tags(p).get("EXIF:DateTimeOriginal") for p in reversed(paths)}
        with pytest.raises(subprocess.TimeoutExpired):  # the thread ended, exiftool did not
            reader._et._process.wait(timeout=1)
        again = real(reader, paths)
    assert batches == [8, 32, 10]
    assert got == {p: again[p].get("EXIF:DateTimeOriginal") for p in paths}
    assert len(set(got.values())) == 28 and None not in got.values()


@pytest.fixture
def stop_raises() -> Iterator[None]:
    """SIGTERM raises Stopped in the main thread, as under the ingest and watch commands,
    and SIGINT KeyboardInterrupt: Python's default, unless the tests were started in the
    background by a shell, which ignores SIGINT for them."""
    def stop(signum: int, _frame: object) -> None:
        raise Stopped(signal.Signals(signum).name)

    before = {signal.SIGTERM: signal.signal(signal.SIGTERM, stop),
              signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("stop_raises")
@pytest.mark.parametrize(("signum", "raised"), [(signal.SIGTERM, Stopped),
                                                 (signal.SIGINT, KeyboardInterrupt)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_stop_during_exiftools_shutdown_waits_for_it(
        signum: int, raised: type[BaseException]) -> None:
    """A stop cut exiftool's shutdown in half; pyexiftool's finaliser then printed a
    traceback (seen under `watch`). The shutdown completes, then the stop is handed on:
    SIGTERM as Stopped, Ctrl-C as KeyboardInterrupt."""
    reader = CaptureReader()
    reader.start()
    process = reader._et._process
    real = reader._et.terminate

    def stopped_first(**opts: object) -> None:
        os.kill(os.getpid(), signum)
        real(**opts)

    reader._et.terminate = stopped_first  # type: ignore[method-assign]
    with pytest.raises(raised):
        reader.close()
    assert process.poll() is not None
    assert not reader._et.running


@pytest.mark.usefixtures("stop_raises")
def test_a_stop_during_read_ahead_waits_for_the_batch_in_progress(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing the read-ahead waits for the thread's batch: a stop arriving meanwhile must
    not leave the thread using exiftool while the caller shuts exiftool down."""
    build_card(tmp_path, [MediaSpec("DCIM/1.JPG", "jpeg", seed=1)])
    real = CaptureReader.read
    finished: list[int] = []

    def slow(self: CaptureReader, chunk: list[bytes]) -> dict[bytes, dict[str, object]]:
        time.sleep(0.3)  # the caller is in close() by now; wake it there, as the kernel may
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
        time.sleep(0.3)
        found = real(self, chunk)
        finished.append(len(found))
        return found

    monkeypatch.setattr(CaptureReader, "read", slow)
    with CaptureReader() as reader:
        dates = capture.ReadAhead(reader, [os.fsencode(tmp_path / "DCIM/1.JPG")])
        with pytest.raises(Stopped, match="SIGTERM"):
            dates.close()
        assert finished == [1]  # (Thread.is_alive is wrong after an interrupted join)
        assert reader._et.running
