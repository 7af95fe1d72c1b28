"""FAT and exFAT card images, mounted read-only through FUSE (this kernel has neither module).

`fat_with_errors` writes a FAT16 image with mtools and then damages it the way worn cards
and bad card readers do: a cluster chain that runs into a cluster marked bad, a directory
entry whose size is larger than its chain, a file cross-linked to another's clusters, a
directory entry whose 8.3 name holds a '/', and the two FAT copies disagreeing. `exfat`
writes an exFAT image through a read-write FUSE mount of a loop device.
Both return the files written (card path -> bytes) for the tests to compare with.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

TOOLS = ("mkfs.vfat", "mcopy", "mmd", "fusefat", "fsck.vfat", "mkfs.exfat", "mount.exfat-fuse",
         "losetup", "fusermount")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def fat_with_errors(image: Path, files: dict[str, bytes], workdir: Path) -> None:
    """FILES (paths like 'DCIM/100CANON/GOOD.JPG') on a FAT16 image, then the damage."""
    subprocess.run(["mkfs.vfat", "-C", "-n", "HOSTILE", str(image), "16384"], check=True,
                   capture_output=True)
    folders = sorted({str(Path(p).parent) for p in files} | {"DCIM/101BAD"})
    for folder in folders:
        parts = Path(folder).parts
        for i in range(1, len(parts) + 1):
            subprocess.run(["mmd", "-D", "s", "-i", str(image), "::" + "/".join(parts[:i])],
                           capture_output=True, check=False)  # exists already: fine
    for rel, data in {**files, "DCIM/101BAD/SLASHX.JPG": b"hidden by a broken name"}.items():
        src = workdir / "mcopy.tmp"
        src.write_bytes(data)
        subprocess.run(["mcopy", "-i", str(image), str(src), "::" + rel], check=True)
    _damage(image)


def _damage(image: Path) -> None:
    img = bytearray(image.read_bytes())
    bps, = struct.unpack_from("<H", img, 11)
    reserved, = struct.unpack_from("<H", img, 14)
    fat = reserved * bps

    def entry(short: bytes) -> int:
        at = img.find(short)
        assert at >= 0 and img.find(short, at + 1) < 0, short
        return at

    def first_cluster(at: int) -> int:
        return int(struct.unpack_from("<H", img, at + 26)[0])

    # BROKEN.JPG: its chain runs into a cluster marked bad after two clusters
    second = struct.unpack_from("<H", img, fat + 2 * first_cluster(entry(b"BROKEN  JPG")))[0]
    struct.pack_into("<H", img, fat + 2 * second, 0xFFF7)
    # LONGER.JPG: the directory says 10 MB, the chain holds 100 kB
    struct.pack_into("<I", img, entry(b"LONGER  JPG") + 28, 10_000_000)
    # CROSS.JPG: cross-linked to GOOD.JPG's clusters, with its size
    good, cross = entry(b"GOOD    JPG"), entry(b"CROSS   JPG")
    struct.pack_into("<H", img, cross + 26, first_cluster(good))
    img[cross + 28:cross + 32] = img[good + 28:good + 32]
    # SLASHX.JPG: a '/' in its 8.3 name, which no directory listing may return
    slash = entry(b"SLASHX  JPG")
    img[slash:slash + 11] = b"SL/SHX  JPG"
    image.write_bytes(img)


def fsck_errors(image: Path) -> str:
    """What fsck.vfat finds wrong (read-only check); empty when the image is clean."""
    result = subprocess.run(["fsck.vfat", "-n", str(image)], capture_output=True, text=True,
                            check=False)
    return result.stdout if result.returncode else ""


@contextlib.contextmanager
def fusefat_ro(image: Path, mountpoint: Path) -> Iterator[Path]:
    mountpoint.mkdir(exist_ok=True)
    subprocess.run(["fusefat", "-o", "ro", str(image), str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        _unmount(mountpoint)


@contextlib.contextmanager
def loop_device(image: Path) -> Iterator[str]:
    dev = subprocess.run(["losetup", "-f", "--show", str(image)], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@contextlib.contextmanager
def exfat_mount(dev: str, mountpoint: Path, *, read_only: bool) -> Iterator[Path]:
    """exfat-fuse wants a block device (as root it mounts as fuseblk): a loop device."""
    mountpoint.mkdir(exist_ok=True)
    opts = ["-o", "ro"] if read_only else []
    subprocess.run(["mount.exfat-fuse", *opts, dev, str(mountpoint)], check=True,
                   capture_output=True)
    try:
        yield mountpoint
    finally:
        _unmount(mountpoint)


def exfat(dev: str, files: dict[str, tuple[bytes, float]], workdir: Path) -> None:
    """FILES (path -> bytes, mtime) on a fresh exFAT filesystem on DEV (an image's loop)."""
    subprocess.run(["mkfs.exfat", "-L", "EXCARD", dev], check=True, capture_output=True)
    with exfat_mount(dev, workdir / "rw", read_only=False) as mnt:
        for rel, (data, mtime) in files.items():
            path = mnt / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.utime(path, (mtime, mtime))


def _unmount(mountpoint: Path) -> None:
    for _ in range(50):  # a FUSE daemon may still be busy for a moment after the last close
        if subprocess.run(["fusermount", "-u", str(mountpoint)], capture_output=True,
                          check=False).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["fusermount", "-u", "-z", str(mountpoint)], check=False)
