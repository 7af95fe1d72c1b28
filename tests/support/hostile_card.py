"""A camera card built to hurt the ingest, and what should become of every entry on it.

`build_hostile_card(root)` writes the tree and returns, for every entry the ingest will see,
the outcome it must end in (copied, duplicate, skipped, failed) and a part of the reason.
The entries (docs/hostile-input.md lists them with their results):

* names: path traversal (`..\\..\\etc\\passwd.JPG`, `\\etc\\shadow.JPG`), leading dashes,
  newlines, control and bidi characters, invalid UTF-8, 255-byte names, names that grow past
  255 bytes when normalised to NFC;
* special entries: a zero-byte file, a hard link, symlinks out of the card, to a sibling, in
  a loop and dangling, a FIFO, character and block device nodes (as root);
* a tree of about 9,000 bytes of path, more than twice PATH_MAX, with files half way down,
  just past the limit and at the bottom;
* `DCIM/100CANON/IMG_0001.JPG` again in `DCIM/101CANON` (same bytes) and `dcim/100CANON`
  (other bytes);
* real media written by exiftool (support.samplecard): truncated JPEG, CR2 and MP4; dates of
  year 0000, 0001, 1904, 2200, February 30; offsets +15:00, -13:00, garbage; MBs of XMP and
  of EXIF; a make and model of `../../../../tmp/evil` and `..`;
* on a filesystem that keeps them (tmpfs), an mtime beyond the year 9999.
"""

from __future__ import annotations

import contextlib
import os
import random
import stat
from dataclasses import dataclass
from pathlib import Path

from support.samplecard import MediaSpec, build_card

MTIME = 1_717_200_000.0  # 2024-06-01 00:00 UTC: the date of every file without EXIF
PATH_MAX = 4096


@dataclass(frozen=True)
class Expect:
    outcome: str                # copied | duplicate | skipped | failed
    reason: str | None = None   # a part of the reason (skipped, failed)
    folder: str | None = None   # the library folder a copied file must land in
    path: bytes = b""           # the entry on the card (relative)


HOSTILE_NAMES = [
    b"..\\..\\etc\\passwd.JPG", b"\\etc\\shadow.JPG", b"C:\\Windows\\win.ini.JPG",
    b"-rf --no-preserve-root.JPG", b"new\nline.JPG", b"ctl\x01\x07\x1b[31m\x7f.JPG",
    b"caf\xe9\xff.JPG", "\u202eGPJ.exe.JPG".encode(), b"A" * 251 + b".JPG",
    "\u0958".encode() * 83 + b".JPG", b"\xe9" * 251 + b".JPG", b" .JPG", b"~.JPG",
    b"$(reboot).JPG", b"%s%n%x.JPG", b"'; DROP TABLE assets; --.JPG",
]


class _Card:
    def __init__(self, root: Path) -> None:
        self.root = os.path.abspath(os.fsencode(root))
        self.expected: dict[str, Expect] = {}

    def put(self, rel: bytes, data: bytes, expect: Expect) -> None:
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        os.utime(path, (MTIME, MTIME))
        self.add(rel, expect)

    def add(self, rel: bytes, expect: Expect) -> None:
        self.expected[rel.decode("utf-8", "backslashreplace")] = Expect(
            expect.outcome, expect.reason, expect.folder, rel)


def build_hostile_card(root: Path, *, seed: int = 7) -> dict[str, Expect]:
    """Write the card under ROOT; the expected outcome of every entry, by display path."""
    rng = random.Random(seed)
    card = _Card(root)
    for name in HOSTILE_NAMES:
        card.put(b"DCIM/100HOST/" + name, rng.randbytes(2000),
                 Expect("copied", folder="2024/06/01"))
    card.put(b"DCIM/100HOST/..JPG", b"x", Expect("skipped", "not a media file: extension (none)"))
    _special(card, rng)
    _deep(card, rng)
    a, b = rng.randbytes(3000), rng.randbytes(3000)
    card.put(b"DCIM/100CANON/IMG_0001.JPG", a, Expect("copied", folder="2024/06/01"))
    card.put(b"DCIM/101CANON/IMG_0001.JPG", a, Expect("duplicate"))
    card.put(b"dcim/100CANON/IMG_0001.JPG", b, Expect("copied", folder="2024/06/01"))
    _media(card, root)
    return card.expected


def _special(card: _Card, rng: random.Random) -> None:
    d = os.path.join(card.root, b"DCIM/special")
    card.put(b"DCIM/special/EMPTY.JPG", b"", Expect("skipped", "empty file (0 bytes)"))
    os.link(os.path.join(card.root, b"DCIM/100HOST/~.JPG"),
            os.path.join(d, b"HARDLINK.JPG"))
    card.add(b"DCIM/special/HARDLINK.JPG", Expect("duplicate"))
    links = {b"OUT.JPG": (b"/etc/passwd", "points outside the source"),
             b"LOOP": (b"..", "symlink: not followed"),
             b"SELF": (b"SELF", "symlink: dangling"),
             b"SIBLING.JPG": (b"../100HOST/~.JPG", "symlink: not followed"),
             b"DANGLING.JPG": (b"/nonexistent/x.JPG", "symlink: dangling")}
    for name, (target, reason) in links.items():
        os.symlink(target, os.path.join(d, name))
        card.add(b"DCIM/special/" + name, Expect("skipped", reason))
    os.mkfifo(os.path.join(d, b"FIFO.JPG"))
    card.add(b"DCIM/special/FIFO.JPG", Expect("skipped", "named pipe (FIFO)"))
    if os.geteuid() == 0:
        os.mknod(os.path.join(d, b"ZERO.JPG"), stat.S_IFCHR | 0o600, os.makedev(1, 5))
        os.mknod(os.path.join(d, b"LOOP0.JPG"), stat.S_IFBLK | 0o600, os.makedev(7, 0))
        for name in (b"ZERO.JPG", b"LOOP0.JPG"):
            card.add(b"DCIM/special/" + name, Expect("skipped", "device node"))
    # An mtime past the year 9999 survives only where the filesystem keeps 64-bit times.
    future = os.path.join(d, b"FUTURE.JPG")
    card.put(b"DCIM/special/FUTURE.JPG", rng.randbytes(500),
        Expect("copied", folder="2024/06/01"))
    with contextlib.suppress(OSError):
        os.utime(future, (1e13, 1e13))
    if os.stat(future).st_mtime > 253402300799:
        card.add(b"DCIM/special/FUTURE.JPG",
            Expect("failed", "no usable capture time"))
    else:
        card.add(b"DCIM/special/FUTURE.JPG",
            Expect("copied", folder=f"{_year(os.stat(future).st_mtime)}"))


def _year(mtime: float) -> str:
    import time
    return time.strftime("%Y", time.gmtime(mtime))


def _deep(card: _Card, rng: random.Random) -> None:
    """DCIM/deep/ddd…/…, 300 levels (about 9,000 bytes of path, made through folder
    handles): a file half way to PATH_MAX, one just past it, one at the bottom. All three
    must be copied."""
    level = b"d" * 29
    rel = b"DCIM/deep"
    os.makedirs(os.path.join(card.root, rel))
    fd = os.open(os.path.join(card.root, rel), os.O_RDONLY | os.O_DIRECTORY)
    past = False
    try:
        for i in range(300):
            os.mkdir(level, dir_fd=fd)
            child = os.open(level, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, rel = child, rel + b"/" + level
            if i == 60 or i == 299 or (not past and len(card.root) + len(rel) > PATH_MAX):
                past = past or i != 60
                name = b"BOTTOM.JPG" if i == 299 else b"LEVEL%d.JPG" % i
                _write_at(fd, name, rng.randbytes(1000))
                card.add(rel + b"/" + name, Expect("copied", folder="2024/06/01"))
    finally:
        os.close(fd)


def _write_at(folder: int, name: bytes, data: bytes) -> None:
    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=folder)
    try:
        os.write(out, data)
    finally:
        os.close(out)
    os.utime(name, (MTIME, MTIME), dir_fd=folder)


def read_entry(root: Path | bytes, rel: bytes) -> bytes:
    """The bytes of the card's entry REL, however deep (opened folder by folder)."""
    fd = os.open(os.fsencode(root), os.O_RDONLY | os.O_DIRECTORY)
    try:
        *folders, name = rel.split(b"/")
        for folder in folders:
            child = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd), "rb") as fh:
            return fh.read()
    finally:
        os.close(fd)


def _media(card: _Card, root: Path) -> None:
    d = "DCIM/media/"
    date = "2024:06:05 10:00:00"
    specs = [
        (MediaSpec(d + "TRUNC.JPG", "jpeg", datetime_original=date, seed=1, size=200_000),
         "2024/06/05", 0.5),
        (MediaSpec(d + "TRUNC.CR2", "cr2", datetime_original=date, seed=2), "2024/06/05", 0.6),
        (MediaSpec(d + "TRUNC.MP4", "mp4", create_date="2024:06:05 08:00:00", seed=3,
                   size=100_000), "2024/06/05", 0.5),
        (MediaSpec(d + "DATE0000.JPG", "jpeg", seed=4,
                   tags=(("EXIF:DateTimeOriginal#", "0000:00:00 00:00:00"),
                         ("EXIF:CreateDate#", "0000:01:01 00:00:00"))), "2024/06/01", None),
        (MediaSpec(d + "YEAR0001.JPG", "jpeg", datetime_original="0001:01:01 00:00:00",
                   offset="+14:00", seed=5), "2024/06/01", None),
        (MediaSpec(d + "YEAR1904.JPG", "jpeg", datetime_original="1904:01:01 00:00:00",
                   seed=6), "1904/01/01", None),
        (MediaSpec(d + "YEAR2200.JPG", "jpeg", datetime_original="2200:01:01 00:00:00",
                   seed=7), "2200/01/01", None),
        (MediaSpec(d + "FEB30.JPG", "jpeg", datetime_original="2024:02:30 12:00:00",
                   create_date="2024:03:01 12:00:00", seed=8), "2024/03/01", None),
        (MediaSpec(d + "OFF15.JPG", "jpeg", datetime_original="2024:06:03 10:00:00",
                   offset="+15:00", seed=9), "2024/06/03", None),
        (MediaSpec(d + "OFFM13.JPG", "jpeg", datetime_original="2024:06:03 11:00:00", seed=10,
                   tags=(("EXIF:OffsetTimeOriginal#", "-13:00"),)), "2024/06/03", None),
        (MediaSpec(d + "OFFGARB.JPG", "jpeg", datetime_original="2024:06:03 12:00:00", seed=11,
                   tags=(("EXIF:OffsetTime#", "garbage"),)), "2024/06/03", None),
        (MediaSpec(d + "HUGEXMP.JPG", "jpeg", datetime_original=date, seed=12,
                   tags=(("XMP-dc:Description", "x" * 2_000_000),)), "2024/06/05", None),
        (MediaSpec(d + "HUGEEXIF.CR2", "cr2", datetime_original=date, seed=13,
                   tags=(("EXIF:ImageDescription", "y" * 3_000_000),)), "2024/06/05", None),
        (MediaSpec(d + "EVIL.JPG", "jpeg", datetime_original=date, seed=14,
                   make="../../../../tmp/evil", model=".."), "2024/06/05", None),
    ]
    build_card(root, [spec for spec, _, _ in specs])
    for spec, folder, keep in specs:
        path = root / spec.relpath
        if keep is not None:
            data = path.read_bytes()
            path.write_bytes(data[:int(len(data) * keep)])
        os.utime(path, (MTIME, MTIME))
        card.add(spec.relpath.encode(), Expect("copied", folder=folder))
