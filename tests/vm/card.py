"""Virtual cards: FAT32 disk images with a DCIM tree of real media files.

The host has no fdisk, so the MBR is written here: one FAT32-LBA (0x0C) partition from
sector 2048 (1 MiB) to the end, as cameras and card readers format them. The filesystem is
made in place with `mkfs.vfat -F 32 --offset 2048` and filled with mtools (`IMG@@1M`); no loop
device, no mount. Without a partition table the card is a superfloppy (the filesystem starts
at sector 0 and the kernel shows it as sdX, not sdX1).
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support.samplecard import MediaSpec, build_card

SECTOR = 512
OFFSET_SECTORS = 2048


@dataclass(frozen=True)
class CardFile:
    relpath: str       # on the card, e.g. DCIM/100CANON/IMG_0001.JPG
    library_path: str  # where photo-ingest must put it: YYYY/MM/DD/NAME
    sha1: str
    size: int


@dataclass(frozen=True)
class Card:
    image: Path
    label: str
    volume_id: str     # the FAT serial, which blkid reports as the UUID "ABCD-1234"
    partitioned: bool
    files: tuple[CardFile, ...]

    @property
    def uuid(self) -> str:
        return f"{self.volume_id[:4]}-{self.volume_id[4:]}".upper()

    def image_sha1(self) -> str:
        return sha1_file(self.image)


def sha1_file(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_mbr(image: Path, total_sectors: int) -> None:
    """One bootable-flag-less FAT32 LBA partition, sector 2048 to the end."""
    count = total_sectors - OFFSET_SECTORS
    # CHS fields are obsolete for LBA partitions: the conventional "beyond 1024" values.
    entry = struct.pack("<B3sB3sII", 0x00, b"\xfe\xff\xff", 0x0C, b"\xfe\xff\xff",
                        OFFSET_SECTORS, count)
    mbr = bytearray(SECTOR)
    mbr[440:444] = struct.pack("<I", 0x5048_4F54)  # disk signature
    mbr[446:462] = entry
    mbr[510:512] = b"\x55\xaa"
    with open(image, "r+b") as f:
        f.write(mbr)


def make_image(image: Path, content: Path | None, *, size_mb: int, label: str,
               volume_id: str, partitioned: bool = True) -> None:
    """A FAT32 image of SIZE_MB with the files under CONTENT (if any) copied in."""
    image.unlink(missing_ok=True)
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    total = (size_mb << 20) // SECTOR
    mkfs = ["mkfs.vfat", "-F", "32", "-n", label, "-i", volume_id]
    if partitioned:
        write_mbr(image, total)
        mkfs += ["--offset", str(OFFSET_SECTORS), str(image),
                 str((total - OFFSET_SECTORS) * SECTOR // 1024)]
    else:
        mkfs.append(str(image))
    subprocess.run(mkfs, check=True, capture_output=True)
    if content is not None and any(content.iterdir()):
        target = f"{image}@@1M" if partitioned else str(image)
        env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
        subprocess.run(["mcopy", "-s", "-m", "-i", target,
                        *(str(p) for p in sorted(content.iterdir())), "::/"],
                       check=True, capture_output=True, env=env)


def photo(relpath: str, when: str, seed: int, size: int | None = None) -> MediaSpec:
    """A real JPEG with EXIF: taken at WHEN ("YYYY:MM:DD HH:MM:SS", no offset)."""
    return MediaSpec(relpath=relpath, kind="jpeg", datetime_original=when, seed=seed,
                     make="Canon", model="Canon EOS R6", size=size)


def build(image: Path, specs: list[MediaSpec], *, size_mb: int, label: str, volume_id: str,
          partitioned: bool = True) -> Card:
    """Write SPECS as real files, put them on a new card image; what the library must get."""
    content = image.with_suffix(".d")
    if content.exists():
        subprocess.run(["rm", "-rf", str(content)], check=True)
    content.mkdir(parents=True)
    paths = build_card(content, specs) if specs else []
    files = []
    for spec, path in zip(specs, paths, strict=True):
        day = (spec.datetime_original or "").split(" ")[0].replace(":", "/")
        files.append(CardFile(spec.relpath, f"{day}/{Path(spec.relpath).name}",
                              sha1_file(path), path.stat().st_size))
    make_image(image, content, size_mb=size_mb, label=label, volume_id=volume_id,
               partitioned=partitioned)
    subprocess.run(["rm", "-rf", str(content)], check=True)
    return Card(image, label, volume_id, partitioned, tuple(files))


def camera_card(image: Path, *, count: int = 12, size: int | None = None, size_mb: int = 64,
                label: str = "EOS_DIGITAL", volume_id: str = "1a2b3c4d",
                partitioned: bool = True, seed: int = 1000) -> Card:
    """A camera's card: DCIM/100CANON with COUNT photos over three days."""
    specs = [photo(f"DCIM/100CANON/IMG_{i:04d}.JPG",
                   f"2024:05:{10 + i % 3:02d} {8 + i % 10:02d}:{i % 60:02d}:00", seed + i, size)
             for i in range(1, count + 1)]
    return build(image, specs, size_mb=size_mb, label=label, volume_id=volume_id,
                 partitioned=partitioned)


def plain_stick(image: Path, *, size_mb: int = 40, label: str = "STICK",
                volume_id: str = "5e6f7a8b") -> Card:
    """A USB stick with documents and a photo, but no DCIM folder: not a camera card."""
    specs = [photo("Pictures/holiday.jpg", "2023:08:01 12:00:00", 77),
             MediaSpec(relpath="notes.txt", kind="txt", seed=78)]
    return build(image, specs, size_mb=size_mb, label=label, volume_id=volume_id)
