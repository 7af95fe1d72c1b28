"""Generate realistic camera-card trees of real media files for tests.

Every file is a real, parseable media file; all metadata is written by the
real ``exiftool`` binary (Debian ``libimage-exiftool-perl``), so the tags read
back by the application are exactly what exiftool itself produces.

Kinds (``MediaSpec.kind``)
--------------------------
``jpeg``
    Pillow JPEG (64x48), EXIF written by exiftool into IFD0/ExifIFD
    (``EXIF:DateTimeOriginal``, ``EXIF:SubSecTimeOriginal``,
    ``EXIF:OffsetTimeOriginal``, ``EXIF:CreateDate``, ``EXIF:Make``,
    ``EXIF:Model``; plus ``ExifImageWidth``/``ExifImageHeight`` so that
    ``exiftool -validate`` is clean).  A spec without any tag is left as a
    plain Pillow JFIF file (no EXIF at all) and exiftool is not run on it.
``thm``
    Canon-style video thumbnail: a 160x120 JPEG, tags as for ``jpeg``
    (exiftool reports ``File:FileType`` as ``THM``).
``png``
    Pillow PNG.  Tags are written with an explicit ``EXIF:`` group, so
    exiftool stores them in an ``eXIf`` chunk placed *before* ``IDAT`` (hence
    ``-fast2`` still sees them) and reads them back as group ``EXIF``.  (A bare
    ``-CreateDate``/``-Make`` would also add PNG ``tEXt`` chunks read back as
    ``PNG:CreateDate``/``PNG:Make``; we deliberately avoid that.)
``cr2`` / ``nef`` / ``dng``
    "Raw-like" uncompressed RGB TIFFs written by a tiny TIFF writer in this
    module: ``cr2`` is little-endian with the Canon ``CR\\x02\\x00`` header
    signature at offset 8 and a second IFD that the header points to
    (exiftool's CR2 writer fails with "CR2 image IFD may not be deleted"
    without one), ``nef`` is big-endian ("MM", as Nikon writes),
    ``dng`` carries ``DNGVersion``/``DNGBackwardVersion``/``UniqueCameraModel``.
    exiftool 12.57 writes them directly under their raw extension (no
    ``.tif`` rename trick was needed); it reports ``FileType`` CR2/NEF/DNG and
    the tags as ``EXIF:*``, exactly like for JPEG.
``mp4`` / ``mov``
    Hand-made ISO-BMFF: ``ftyp`` (``isom`` resp. ``qt  `` brand) + ``moov``
    (``mvhd`` + one video ``trak`` with ``tkhd``/``mdhd``/``hdlr``/``vmhd``/
    ``dinf`` and an ``stbl`` with a single ``avc1`` sample description and
    empty sample tables) + ``mdat``.  exiftool refuses to write a file whose
    ``stsd`` has no sample entry ("Can't locate data reference to update
    offsets"), hence the ``avc1`` entry.  ``create_date`` is written as UTC
    (QuickTime spec; no ``-api QuickTimeUTC``, so exiftool stores and reads
    back the value verbatim) to ``QuickTime:CreateDate`` (mvhd),
    ``TrackCreateDate`` and ``MediaCreateDate``.  A ``+HH:MM``/``Z`` suffix
    is converted to UTC here, because exiftool 12.57 silently *drops* such a
    suffix on these tags instead of converting.  ``datetime_original`` (+ ``subsec``/``offset``) is
    written to ``Keys:CreationDate`` (Apple style, read back as group
    ``QuickTime``); exiftool appends the *local* zone when no offset is given,
    so exiftool is run with ``TZ=UTC`` to keep the output machine-independent.
    ``make``/``model`` go to ``UserData:Make``/``UserData:Model``.  Note that
    exiftool, when writing, always moves ``moov`` in front of ``mdat``.
``xmp``
    Sidecar packet created from scratch by ``exiftool -o FILE.xmp``:
    ``XMP-exif:DateTimeOriginal`` (with ``.subsec`` and offset appended when
    given), ``XMP-xmp:CreateDate``, ``XMP-tiff:Make``/``Model`` and
    ``XMP-xmpMM:DocumentID = "samplecard:<seed>"`` (which makes the seed
    visible in the bytes).
``txt``
    Plain text (a non-media file).

More tags
---------
``gps`` ((latitude, longitude[, altitude]) with signs: south, west and below sea level are
negative), ``gps_time`` (UTC), ``lens``, ``iso``, ``f_number``, ``exposure_time``,
``focal_length``, ``focal_length_35mm``, ``flash``, ``orientation``, ``serial``, ``rating``,
``label``, ``keywords`` and ``tags`` (any ``("GROUP:Tag", "value")`` pairs, written as
given).  Photo kinds get them as EXIF (GPS as ``EXIF:GPSLatitude`` + ``GPSLatitudeRef``
etc., ``lens`` as ``EXIF:LensModel``, ``serial`` as ``EXIF:SerialNumber``) except rating,
label and keywords, which go to XMP (``XMP-xmp:Rating``/``Label``, ``XMP-dc:Subject``);
videos take GPS as Apple's ``Keys:GPSCoordinates`` plus the XMP ones; XMP sidecars take GPS
as signed ``XMP-exif`` values, ``lens`` as ``XMP-aux:Lens``, ``serial`` as
``XMP-aux:SerialNumber`` and the XMP ones.  A field a kind cannot carry raises
``ValueError``.  All default to nothing, so older specs produce the same bytes as before.

HEIC is *not* supported: neither Pillow nor exiftool can create a real HEIC
without extra libraries (pillow-heif/libheif), and a hand-made HEIF box tree
would not contain a decodable image.  ``kind="heic"`` raises ``ValueError``;
use ``png`` for that slot.

Seeds, determinism and ``size``
-------------------------------
Pixel content and payloads derive from ``MediaSpec.seed`` only: the same spec
always yields identical bytes, different seeds always yield different bytes
(images carry the low 32 bits of the seed as a block pattern that survives
JPEG compression, plus seeded noise; videos/text/XMP carry the seed as text).
``size`` pads the file *after* exiftool has written it, using a 1 MiB seeded
random block written repeatedly (cheap for tens of MB):

* JPEG/THM: bytes appended after EOI (exiftool reads it without warning);
* PNG: private ancillary ``paDd`` chunks inserted before ``IEND`` (data
  appended after ``IEND`` would trigger a ``[minor] Trailer data`` warning);
* CR2/NEF/DNG: bytes appended after the TIFF data;
* MP4/MOV: the trailing ``mdat`` box is enlarged (its header patched);
* XMP: standard XMP whitespace padding before ``<?xpacket end='w'?>``;
* TXT: seeded text lines.

Batching
--------
:func:`build_card` writes all base files in Python, then runs **one**
``exiftool -@ ARGFILE`` process with one ``-execute`` block per file (no
process at all if no file needs tags); :data:`exiftool_runs` counts the
exiftool processes started by this module.
"""

from __future__ import annotations

import calendar
import dataclasses
import functools
import io
import os
import pathlib
import random
import re
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, ImageChops

__all__ = [
    "KINDS",
    "MediaSpec",
    "build_card",
    "exiftool_runs",
    "sample_card",
    "write_media",
]

EXIFTOOL = "exiftool"

#: Supported values of :attr:`MediaSpec.kind`.
KINDS = frozenset({"jpeg", "png", "mp4", "mov", "dng", "cr2", "nef", "xmp", "thm", "txt"})

_PHOTO_KINDS = frozenset({"jpeg", "png", "thm", "dng", "cr2", "nef"})
_VIDEO_KINDS = frozenset({"mp4", "mov"})
_TIFF_KINDS = frozenset({"dng", "cr2", "nef"})

_MIB = 1 << 20

#: Number of exiftool processes started by this module (for tests).
exiftool_runs = 0


@dataclass(frozen=True)
class MediaSpec:
    """Description of one file on a sample card."""

    relpath: str
    kind: str
    datetime_original: str | None = None
    offset: str | None = None
    subsec: str | None = None
    create_date: str | None = None
    make: str | None = None
    model: str | None = None
    mtime: float | None = None
    size: int | None = None
    seed: int = 0
    # --- more tags (see "More tags" in the module docstring); None/() writes nothing ---
    gps: tuple[float, ...] | None = None    # (latitude, longitude[, altitude m]), signed
    gps_time: str | None = None             # "YYYY:MM:DD HH:MM:SS", UTC
    lens: str | None = None
    iso: int | None = None
    f_number: float | None = None
    exposure_time: float | None = None      # seconds
    focal_length: float | None = None       # mm
    focal_length_35mm: int | None = None
    flash: int | None = None                # EXIF Flash code (bit 0: fired)
    orientation: int | None = None          # EXIF 1..8
    serial: str | None = None
    rating: int | None = None
    label: str | None = None
    keywords: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()  # any other "GROUP:Tag", "value" for exiftool


@dataclass(frozen=True)
class _Job:
    path: Path
    spec: MediaSpec
    tag_args: tuple[str, ...]


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


def write_media(path: pathlib.Path, spec: MediaSpec) -> None:
    """Write one media file described by *spec* at *path* (parents created).

    ``spec.relpath`` is ignored; *path* is used as is.
    """
    _build([(Path(path), spec)])


def build_card(root: pathlib.Path, specs: Iterable[MediaSpec]) -> list[Path]:
    """Write every spec under *root*; return the written paths in order.

    All exiftool work is done by a single ``exiftool -@ argfile`` process.
    """
    root = Path(root)
    items: list[tuple[Path, MediaSpec]] = []
    seen: set[str] = set()
    for spec in specs:
        rel = PurePosixPath(spec.relpath)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"relpath must be relative and inside the card: {spec.relpath!r}")
        if str(rel) in seen:
            raise ValueError(f"duplicate relpath: {spec.relpath!r}")
        seen.add(str(rel))
        items.append((root.joinpath(*rel.parts), spec))
    _build(items)
    return [path for path, _ in items]


def sample_card(root: pathlib.Path) -> list[MediaSpec]:
    """Build the README demo card under *root* and return its specs."""
    specs = _demo_specs()
    build_card(root, specs)
    return specs


# --------------------------------------------------------------------------
# demo card
# --------------------------------------------------------------------------


def _epoch(local: str, offset: str | None = None) -> float:
    """``"YYYY:MM:DD HH:MM:SS"`` in zone *offset* (default UTC) -> epoch."""
    base = calendar.timegm(time.strptime(local, "%Y:%m:%d %H:%M:%S"))
    if offset:
        sign = -1 if offset.startswith("-") else 1
        hours, minutes = offset.lstrip("+-").split(":")
        base -= sign * (int(hours) * 3600 + int(minutes) * 60)
    return float(base)


def _demo_specs() -> list[MediaSpec]:
    make, model = "Canon", "Canon EOS R6"
    d100 = "DCIM/100CANON/"
    d101 = "DCIM/101CANON/"

    def photo(
        rel: str,
        kind: str,
        dto: str,
        seed: int,
        offset: str | None = "+02:00",
        subsec: str | None = None,
    ) -> MediaSpec:
        return MediaSpec(
            relpath=rel,
            kind=kind,
            datetime_original=dto,
            offset=offset,
            subsec=subsec,
            create_date=dto,
            mtime=_epoch(dto, offset),
            seed=seed,
            make=make,
            model=model,
        )

    img2 = photo(d100 + "IMG_0002.JPG", "jpeg", "2024:06:01 09:15:03", 2, subsec="120")
    return [
        photo(d100 + "IMG_0001.JPG", "jpeg", "2024:06:01 09:15:02", 1),
        img2,
        # camera without timezone support: no OffsetTimeOriginal
        photo(d100 + "IMG_0003.JPG", "jpeg", "2024:06:01 21:47:30", 3, offset=None),
        # no metadata at all: the file mtime is the only date
        MediaSpec(
            relpath=d100 + "IMG_0004.JPG", kind="jpeg", mtime=_epoch("2024:06:02 08:00:00"), seed=4
        ),
        photo(d100 + "IMG_0005.JPG", "jpeg", "2024:06:02 10:30:00", 5),
        photo(d100 + "IMG_0006.JPG", "jpeg", "2024:06:03 07:05:09", 6, offset="+01:00"),
        photo(d100 + "IMG_0007.CR2", "cr2", "2024:06:02 11:00:00", 7),
        MediaSpec(
            relpath=d100 + "IMG_0007.XMP",
            kind="xmp",
            datetime_original="2024:06:02 11:00:00",
            offset="+02:00",
            mtime=_epoch("2024:06:05 20:00:00"),
            seed=7,
            make=make,
            model=model,
        ),
        photo(d100 + "IMG_0008.DNG", "dng", "2024:06:02 11:05:00", 8),
        MediaSpec(
            relpath=d100 + "MVI_0009.MP4",
            kind="mp4",
            create_date="2024:06:02 14:30:00",  # UTC (16:30 local +02:00)
            mtime=_epoch("2024:06:02 14:30:10"),
            seed=9,
            make=make,
            model=model,
        ),
        MediaSpec(
            relpath=d100 + "MVI_0010.MOV",
            kind="mov",
            create_date="2024:06:03 05:10:00",  # UTC (06:10 local +01:00)
            mtime=_epoch("2024:06:03 05:10:20"),
            seed=10,
            make=make,
            model=model,
        ),
        photo(d100 + "MVI_0010.THM", "thm", "2024:06:03 06:10:00", 10, offset="+01:00"),
        photo(d100 + "IMG_0011.PNG", "png", "2024:06:03 12:00:00", 11, offset="+01:00"),
        photo(d100 + "Été 2024.JPG", "jpeg", "2024:07:14 16:20:00", 12),
        # same name as 100CANON/IMG_0001.JPG, different content
        photo(d101 + "IMG_0001.JPG", "jpeg", "2024:06:04 09:00:00", 101, offset="+01:00"),
        # exact byte duplicate of 100CANON/IMG_0002.JPG under another name
        dataclasses.replace(img2, relpath=d101 + "IMG_0102.JPG"),
        MediaSpec(
            relpath="MISC/notes.txt", kind="txt", mtime=_epoch("2024:06:05 19:00:00"), seed=200
        ),
    ]


# --------------------------------------------------------------------------
# build pipeline
# --------------------------------------------------------------------------


def _build(items: Sequence[tuple[Path, MediaSpec]]) -> None:
    for path, spec in items:  # validate everything before touching the disk
        if spec.kind == "heic":
            raise ValueError("HEIC cannot be produced without extra libraries; use 'png'")
        if spec.kind not in KINDS:
            raise ValueError(f"unknown kind {spec.kind!r}; expected one of {sorted(KINDS)}")
        _check_args(path, spec)

    jobs: list[_Job] = []
    for path, spec in items:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            path.unlink()
        if spec.kind != "xmp":  # xmp is created from scratch by exiftool -o
            path.write_bytes(_base_bytes(spec))
        jobs.append(_Job(path, spec, tuple(_tag_args(spec))))

    _run_exiftool_batch([job for job in jobs if job.tag_args])

    for job in jobs:
        if job.spec.size is not None:
            _pad(job.path, job.spec)
        if job.spec.mtime is not None:
            os.utime(job.path, (job.spec.mtime, job.spec.mtime))


def _check_args(path: Path, spec: MediaSpec) -> None:
    text = str(path.absolute())
    if text != text.strip() or "\n" in text or "\r" in text:
        raise ValueError(f"path unusable in an exiftool argfile: {text!r}")
    texts = [(name, getattr(spec, name)) for name in (
        "datetime_original", "offset", "subsec", "create_date", "make", "model", "gps_time",
        "lens", "serial", "label")]
    texts += [("keywords", k) for k in spec.keywords] + [(t, v) for t, v in spec.tags]
    for name, value in texts:
        if value is not None and ("\n" in value or "\r" in value or value != value.strip()):
            raise ValueError(f"{name} must be a single stripped line: {value!r}")


def _tag_args(spec: MediaSpec) -> list[str]:
    tags: list[tuple[str, str]] = []
    kind = spec.kind
    if kind in _PHOTO_KINDS:
        if spec.datetime_original:
            tags.append(("EXIF:DateTimeOriginal", spec.datetime_original))
        if spec.subsec:
            tags.append(("EXIF:SubSecTimeOriginal", spec.subsec))
        if spec.offset:
            tags.append(("EXIF:OffsetTimeOriginal", spec.offset))
        if spec.create_date:
            tags.append(("EXIF:CreateDate", spec.create_date))
        if spec.make:
            tags.append(("EXIF:Make", spec.make))
        if spec.model:
            tags.append(("EXIF:Model", spec.model))
        if tags and kind in ("jpeg", "thm"):
            width, height = _image_size(kind)
            tags.append(("EXIF:ExifImageWidth", str(width)))
            tags.append(("EXIF:ExifImageHeight", str(height)))
    elif kind in _VIDEO_KINDS:
        if spec.create_date:
            utc = _as_utc(spec.create_date)
            for tag in ("CreateDate", "TrackCreateDate", "MediaCreateDate"):
                tags.append((f"QuickTime:{tag}", utc))
        if spec.datetime_original:
            tags.append(("Keys:CreationDate", _xmp_date(spec)))
        if spec.make:
            tags.append(("UserData:Make", spec.make))
        if spec.model:
            tags.append(("UserData:Model", spec.model))
    elif kind == "xmp":
        if spec.datetime_original:
            tags.append(("XMP-exif:DateTimeOriginal", _xmp_date(spec)))
        if spec.create_date:
            tags.append(("XMP-xmp:CreateDate", spec.create_date))
        if spec.make:
            tags.append(("XMP-tiff:Make", spec.make))
        if spec.model:
            tags.append(("XMP-tiff:Model", spec.model))
        tags.append(("XMP-xmpMM:DocumentID", f"samplecard:{spec.seed}"))
    tags += _more_tags(spec)
    return [f"-{tag}={value}" for tag, value in tags]


# Which group each of the "more tags" fields is written to, per kind ("#": a number, no
# print conversion). A field a kind cannot carry is an error, never silently dropped.
_EXIF_MORE = {
    "lens": "EXIF:LensModel", "iso": "EXIF:ISO", "f_number": "EXIF:FNumber",
    "exposure_time": "EXIF:ExposureTime", "focal_length": "EXIF:FocalLength",
    "focal_length_35mm": "EXIF:FocalLengthIn35mmFormat", "flash": "EXIF:Flash#",
    "orientation": "EXIF:Orientation#", "serial": "EXIF:SerialNumber",
    "rating": "XMP-xmp:Rating", "label": "XMP-xmp:Label",
}
_MORE_BY_KIND = {
    **{kind: _EXIF_MORE for kind in _PHOTO_KINDS},
    **{kind: {"rating": "XMP-xmp:Rating", "label": "XMP-xmp:Label"} for kind in _VIDEO_KINDS},
    "xmp": {"lens": "XMP-aux:Lens", "serial": "XMP-aux:SerialNumber",
            "rating": "XMP-xmp:Rating", "label": "XMP-xmp:Label"},
}


def _more_tags(spec: MediaSpec) -> list[tuple[str, str]]:
    where = _MORE_BY_KIND.get(spec.kind, {})
    tags: list[tuple[str, str]] = []
    for name in _EXIF_MORE:
        value = getattr(spec, name)
        if value is None:
            continue
        if name not in where:
            raise ValueError(f"{spec.kind} files do not carry {name} in samplecard")
        tags.append((where[name], str(value)))
    if spec.keywords:
        if spec.kind == "txt":
            raise ValueError("txt files do not carry keywords")
        tags += [("XMP-dc:Subject", k) for k in spec.keywords]
    tags += _gps_tags(spec)
    return tags + list(spec.tags)


def _gps_tags(spec: MediaSpec) -> list[tuple[str, str]]:
    if spec.gps is None and spec.gps_time is None:
        return []
    if spec.kind not in _PHOTO_KINDS | _VIDEO_KINDS | {"xmp"}:
        raise ValueError(f"{spec.kind} files do not carry GPS in samplecard")
    lat, lon, *alt = spec.gps or (None, None)
    if spec.kind in _VIDEO_KINDS:  # Apple's Keys:GPSCoordinates, "lat, lon[, alt]"
        if spec.gps_time:
            raise ValueError("videos do not carry gps_time in samplecard")
        return [("Keys:GPSCoordinates", ", ".join(str(v) for v in spec.gps or ()))]
    group = "XMP-exif" if spec.kind == "xmp" else "EXIF"
    tags: list[tuple[str, str]] = []
    if lat is not None and lon is not None:
        tags += [(f"{group}:GPSLatitude", str(abs(lat))), (f"{group}:GPSLongitude", str(abs(lon)))]
        if group == "EXIF":  # XMP keeps the sign in the value, EXIF in a separate Ref tag
            tags += [("EXIF:GPSLatitudeRef", "S" if lat < 0 else "N"),
                     ("EXIF:GPSLongitudeRef", "W" if lon < 0 else "E")]
        else:
            tags = [(f"{group}:GPSLatitude", str(lat)), (f"{group}:GPSLongitude", str(lon))]
    if alt:
        tags += [(f"{group}:GPSAltitude", str(abs(alt[0]))),
                 (f"{group}:GPSAltitudeRef#", "1" if alt[0] < 0 else "0")]
    if spec.gps_time:
        if group != "EXIF":
            raise ValueError("xmp files do not carry gps_time in samplecard")
        day, clock = spec.gps_time.split(" ")
        tags += [("EXIF:GPSDateStamp", day), ("EXIF:GPSTimeStamp", clock)]
    return tags


_ZONED = re.compile(r"^(\d{4}:\d\d:\d\d \d\d:\d\d:\d\d)(Z|[+-]\d\d:\d\d)$")


def _as_utc(value: str) -> str:
    """``"... 10:00:00+02:00"`` -> ``"... 08:00:00"``; zone-less values as is."""
    match = _ZONED.match(value)
    if not match:
        return value
    local, zone = match.groups()
    stamp = _epoch(local, None if zone == "Z" else zone)
    return time.strftime("%Y:%m:%d %H:%M:%S", time.gmtime(stamp))


def _xmp_date(spec: MediaSpec) -> str:
    assert spec.datetime_original is not None
    value = spec.datetime_original
    if spec.subsec:
        value += f".{spec.subsec}"
    if spec.offset:
        value += spec.offset
    return value


_SUMMARY = re.compile(r"^\s*(\d+) (?:image )?files? (updated|created|unchanged)", re.MULTILINE)
_FAILED = re.compile(r"^\s*(\d+) files? weren't (?:updated|created)", re.MULTILINE)


def _argfile_lines(jobs: Sequence[_Job]) -> list[str]:
    lines: list[str] = []
    for index, job in enumerate(jobs):
        if index:
            lines.append("-execute")
        target = str(job.path.absolute())
        if job.spec.kind == "xmp":
            lines += ["-o", target, *job.tag_args]
        else:
            lines += ["-overwrite_original", *job.tag_args, target]
    return lines


def _run_exiftool_batch(jobs: Sequence[_Job]) -> None:
    """Write all tags with ONE ``exiftool -@ argfile`` process (one
    ``-execute`` block per file).  Splitting big batches over several
    concurrent processes was measured and not worth it: each exiftool start
    costs ~0.3-0.4 s of CPU, a write only ~4 ms."""
    global exiftool_runs
    if not jobs:
        return
    env = {**os.environ, "TZ": "UTC"}  # Keys:CreationDate without offset gets the local zone
    with tempfile.TemporaryDirectory(prefix="samplecard-") as tmp:
        argfile = Path(tmp) / "args.txt"
        argfile.write_text("\n".join(_argfile_lines(jobs)) + "\n", encoding="utf-8")
        exiftool_runs += 1
        proc = subprocess.run(
            [EXIFTOOL, "-@", str(argfile)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
            check=False,
        )
    done = sum(int(n) for n, what in _SUMMARY.findall(proc.stdout) if what != "unchanged")
    problems = [line for line in proc.stderr.splitlines() if line.startswith(("Error", "Warning"))]
    if proc.returncode or problems or _FAILED.search(proc.stdout) or done != len(jobs):
        raise RuntimeError(
            f"exiftool wrote {done}/{len(jobs)} files (rc={proc.returncode})\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )


# --------------------------------------------------------------------------
# base files
# --------------------------------------------------------------------------


def _base_bytes(spec: MediaSpec) -> bytes:
    kind = spec.kind
    if kind in ("jpeg", "thm", "png"):
        return _image_bytes(kind, spec.seed)
    if kind in _TIFF_KINDS:
        return _tiff_bytes(kind, spec)
    if kind in _VIDEO_KINDS:
        return _isobmff_bytes(kind, spec.seed)
    if kind == "txt":
        return f"samplecard text file\nseed={spec.seed}\nThis is not a media file.\n".encode()
    raise AssertionError(kind)


def _image_size(kind: str) -> tuple[int, int]:
    return (160, 120) if kind == "thm" else (64, 48)


def _pixels(seed: int, width: int, height: int) -> bytes:
    """RGB pixels: seeded colour + seeded noise + the low 32 seed bits as
    light/dark 8x8 blocks (survives JPEG compression, so different seeds
    always give different JPEG bytes)."""
    rng = random.Random(f"samplecard-pixels-{seed}")
    base = [rng.randrange(60, 196) for _ in range(3)]
    noise = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    # per-channel lookup: base colour + jitter in [-8, 8] (stays within 52..203)
    image = noise.point([base[c] + value % 17 - 8 for c in range(3) for value in range(256)])
    bits = seed & 0xFFFFFFFF
    columns, rows = width // 8, height // 8
    light = bytearray(columns * rows)
    dark = bytearray(columns * rows)
    for block in range(min(32, columns * rows)):
        if (bits >> block) & 1:
            light[block] = 50
        else:
            dark[block] = 50

    def blocks(values: bytearray) -> Image.Image:
        small = Image.frombytes("L", (columns, rows), bytes(values))
        return small.resize((width, height), Image.Resampling.NEAREST).convert("RGB")

    image = ImageChops.subtract(ImageChops.add(image, blocks(light)), blocks(dark))
    return image.tobytes()


def _image_bytes(kind: str, seed: int) -> bytes:
    width, height = _image_size(kind)
    image = Image.frombytes("RGB", (width, height), _pixels(seed, width, height))
    buffer = io.BytesIO()
    if kind == "png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


# TIFF field types
_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL = 1, 2, 3, 4, 5
_TYPE_SIZE = {_BYTE: 1, _ASCII: 1, _SHORT: 2, _LONG: 4, _RATIONAL: 8}
_TYPE_CHAR = {_BYTE: "B", _SHORT: "H", _LONG: "I"}


_Field = tuple[int, int, list[int] | bytes]


def _encode_field(order: str, ftype: int, value: list[int] | bytes) -> tuple[int, bytes]:
    if isinstance(value, bytes):
        return len(value), value
    if ftype == _RATIONAL:
        return len(value) // 2, struct.pack(f"{order}{len(value)}I", *value)
    return len(value), struct.pack(f"{order}{len(value)}{_TYPE_CHAR[ftype]}", *value)


def _ifd_bytes(order: str, fields: Sequence[_Field], at: int, next_ifd: int) -> bytes:
    """One IFD at file offset *at*, followed by its out-of-line values."""
    encoded = [_encode_field(order, ftype, value) for _, ftype, value in fields]
    extra_at = at + 2 + 12 * len(fields) + 4
    ifd = bytearray(struct.pack(f"{order}H", len(fields)))
    extra = bytearray()
    for (tag, ftype, _), (count, data) in zip(fields, encoded, strict=True):
        if len(data) <= 4:
            ifd += struct.pack(f"{order}HHI", tag, ftype, count) + data.ljust(4, b"\0")
        else:
            ifd += struct.pack(f"{order}HHII", tag, ftype, count, extra_at + len(extra))
            extra += data + b"\0" * (len(data) % 2)
    ifd += struct.pack(f"{order}I", next_ifd)
    return bytes(ifd + extra)


def _image_fields(width: int, height: int, strip_at: int, subfile: int) -> list[_Field]:
    return [
        (254, _LONG, [subfile]),  # NewSubfileType
        (256, _LONG, [width]),
        (257, _LONG, [height]),
        (258, _SHORT, [8, 8, 8]),  # BitsPerSample
        (259, _SHORT, [1]),  # Compression: none
        (262, _SHORT, [2]),  # PhotometricInterpretation: RGB
        (273, _LONG, [strip_at]),  # StripOffsets
        (274, _SHORT, [1]),  # Orientation
        (277, _SHORT, [3]),  # SamplesPerPixel
        (278, _LONG, [height]),  # RowsPerStrip
        (279, _LONG, [width * height * 3]),  # StripByteCounts
        (282, _RATIONAL, [72, 1]),
        (283, _RATIONAL, [72, 1]),
        (284, _SHORT, [1]),  # PlanarConfiguration
        (296, _SHORT, [2]),  # ResolutionUnit: inch
    ]


def _tiff_bytes(kind: str, spec: MediaSpec) -> bytes:
    """Minimal uncompressed RGB TIFF shaped like the requested raw format.

    CR2 gets a second IFD because exiftool's CR2 writer insists on a "raw"
    IFD at the end of the IFD chain (the CR2 header points at it); with a
    single IFD it fails with "CR2 image IFD may not be deleted".
    """
    order = ">" if kind == "nef" else "<"
    header_len = 16 if kind == "cr2" else 8
    sizes = [(64, 48)] + ([(16, 12)] if kind == "cr2" else [])
    strips = [_pixels(spec.seed + index, w, h) for index, (w, h) in enumerate(sizes)]
    extra_fields: list[_Field] = []
    if kind == "dng":
        camera = (spec.model or "samplecard").encode("ascii", "replace") + b"\0"
        extra_fields = [
            (50706, _BYTE, [1, 4, 0, 0]),  # DNGVersion
            (50707, _BYTE, [1, 1, 0, 0]),  # DNGBackwardVersion
            (50708, _ASCII, camera),  # UniqueCameraModel
        ]

    def all_fields(strip_offsets: Sequence[int]) -> list[list[_Field]]:
        return [
            _image_fields(w, h, strip_offsets[i], 0 if i == 0 else 1)
            + (extra_fields if i == 0 else [])
            for i, (w, h) in enumerate(sizes)
        ]

    # IFD lengths do not depend on the offset values: lay out once with
    # dummy offsets, then again with the real ones.
    lengths = [len(_ifd_bytes(order, f, 0, 0)) for f in all_fields([0] * len(sizes))]
    ifd_at = [header_len + sum(lengths[:i]) for i in range(len(sizes))]
    strip_at = [
        header_len + sum(lengths) + sum(len(s) for s in strips[:i]) for i in range(len(strips))
    ]
    ifds = [
        _ifd_bytes(order, fields, ifd_at[i], ifd_at[i + 1] if i + 1 < len(sizes) else 0)
        for i, fields in enumerate(all_fields(strip_at))
    ]
    magic = b"MM\0*" if order == ">" else b"II*\0"
    header = magic + struct.pack(f"{order}I", header_len)
    if kind == "cr2":
        header += b"CR\x02\x00" + struct.pack("<I", ifd_at[-1])  # sig + last ("raw") IFD
    return header + b"".join(ifds) + b"".join(strips)


def _box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _isobmff_bytes(kind: str, seed: int) -> bytes:
    """ftyp + moov (one empty video track) + mdat; all dates zero (1904)."""
    width, height, timescale, duration = 64, 48, 1000, 1000
    if kind == "mov":
        ftyp = _box(b"ftyp", b"qt  ", struct.pack(">I", 0x20050300), b"qt  ")
    else:
        ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isom", b"iso2", b"mp41")
    mvhd = _full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, timescale, duration),
        struct.pack(">IH", 0x10000, 0x100),
        b"\0" * 10,
        _MATRIX,
        b"\0" * 24,
        struct.pack(">I", 2),
    )
    tkhd = _full_box(
        b"tkhd",
        0,
        3,
        struct.pack(">IIIII", 0, 0, 1, 0, duration),
        b"\0" * 8,
        struct.pack(">hhhH", 0, 0, 0, 0),
        _MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )
    mdhd = _full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, duration, 0x55C4, 0))
    hdlr = _full_box(b"hdlr", 0, 0, b"\0" * 4, b"vide", b"\0" * 12, b"VideoHandler\0")
    vmhd = _full_box(b"vmhd", 0, 1, b"\0" * 8)
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
    avc1 = _box(
        b"avc1",
        b"\0" * 6,
        struct.pack(">H", 1),
        b"\0" * 16,
        struct.pack(">HHIII", width, height, 0x480000, 0x480000, 0),
        struct.pack(">H", 1),
        bytes([4]) + b"avc1".ljust(31, b"\0"),
        struct.pack(">Hh", 0x18, -1),
    )
    stbl = _box(
        b"stbl",
        _full_box(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
        _full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        _full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        _full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        _full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    minf = _box(b"minf", vmhd, dinf, stbl)
    moov = _box(b"moov", mvhd, _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf)))
    payload = f"samplecard seed={seed}\n".encode() + random.Random(
        f"samplecard-mdat-{seed}"
    ).randbytes(256)
    return ftyp + moov + _box(b"mdat", payload)


# --------------------------------------------------------------------------
# padding
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _pad_block(seed: int) -> bytes:
    return random.Random(f"samplecard-pad-{seed}").randbytes(_MIB)


def _pad_chunks(seed: int, count: int) -> Iterable[bytes]:
    block = _pad_block(seed)
    while count > 0:
        piece = block if count >= len(block) else block[:count]
        count -= len(piece)
        yield piece


def _pad(path: Path, spec: MediaSpec) -> None:
    assert spec.size is not None
    current = path.stat().st_size
    kind = spec.kind
    if kind in ("jpeg", "thm") or kind in _TIFF_KINDS:
        missing = spec.size - current
        if missing > 0:
            with path.open("ab") as handle:
                for piece in _pad_chunks(spec.seed, missing):
                    handle.write(piece)
    elif kind == "png":
        _pad_png(path, spec, current)
    elif kind in _VIDEO_KINDS:
        _pad_isobmff(path, spec, current)
    elif kind == "xmp":
        _pad_xmp(path, spec, current)
    elif kind == "txt":
        missing = spec.size - current
        if missing > 0:
            line = f"padding line for seed {spec.seed} ".ljust(79, ".") + "\n"
            text = (line * (missing // len(line) + 1))[:missing]
            with path.open("a", encoding="utf-8") as handle:
                handle.write(text)


_PNG_IEND = b"\0\0\0\0IEND\xaeB`\x82"
_PNG_MAX_CHUNK = 16 * _MIB


def _pad_png(path: Path, spec: MediaSpec, current: int) -> None:
    assert spec.size is not None
    missing = spec.size - current
    if missing <= 12:
        return
    with path.open("r+b") as handle:
        handle.seek(-12, os.SEEK_END)
        if handle.read(12) != _PNG_IEND:
            raise RuntimeError(f"{path}: PNG does not end with IEND")
        handle.seek(-12, os.SEEK_END)
        while missing > 12:
            length = min(missing - 12, _PNG_MAX_CHUNK)
            handle.write(struct.pack(">I", length) + b"paDd")
            crc = zlib.crc32(b"paDd")
            for piece in _pad_chunks(spec.seed, length):
                crc = zlib.crc32(piece, crc)
                handle.write(piece)
            handle.write(struct.pack(">I", crc))
            missing -= length + 12
        handle.write(_PNG_IEND)


def _pad_isobmff(path: Path, spec: MediaSpec, current: int) -> None:
    assert spec.size is not None
    missing = spec.size - current
    if missing <= 0:
        return
    last_at, last_size, last_type = 0, 0, b""
    with path.open("r+b") as handle:
        at = 0
        while at < current:
            handle.seek(at)
            size, box_type = struct.unpack(">I4s", handle.read(8))
            if size == 1:
                (size,) = struct.unpack(">Q", handle.read(8))
            elif size == 0:
                size = current - at
            last_at, last_size, last_type = at, size, box_type
            at += size
        if last_type != b"mdat" or last_at + last_size != current:
            raise RuntimeError(f"{path}: expected mdat as last top-level box")
        handle.seek(last_at)
        (header_size,) = struct.unpack(">I", handle.read(4))
        new_size = last_size + missing
        if header_size in (0, 1) or new_size > 0xFFFFFFFF:
            raise ValueError(f"{path}: padding beyond 4 GiB is not supported")
        handle.seek(last_at)
        handle.write(struct.pack(">I", new_size))
        handle.seek(0, os.SEEK_END)
        for piece in _pad_chunks(spec.seed, missing):
            handle.write(piece)


def _pad_xmp(path: Path, spec: MediaSpec, current: int) -> None:
    assert spec.size is not None
    missing = spec.size - current
    if missing <= 0:
        return
    data = path.read_bytes()
    marker = data.rfind(b"<?xpacket end=")
    if marker < 0:
        raise RuntimeError(f"{path}: no XMP packet trailer")
    line = b" " * 99 + b"\n"
    with path.open("wb") as handle:
        handle.write(data[:marker])
        full, rest = divmod(missing, len(line))
        block = line * (_MIB // len(line))
        while full:
            n = min(full, _MIB // len(line))
            handle.write(block[: n * len(line)])
            full -= n
        handle.write(b" " * rest)
        handle.write(data[marker:])
