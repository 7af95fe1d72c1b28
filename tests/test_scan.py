"""The source walk: media sorted from everything else, never following links out."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from photo_ingest.config import DEFAULT_EXTENSIONS
from photo_ingest.ingest.scan import scan


def touch(path: Path | bytes, data: bytes = b"x") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def skipped(result: object) -> dict[bytes, str]:
    return {s.relpath: s.reason for s in result.skipped}  # type: ignore[attr-defined]


def test_media_kinds_and_non_media(tmp_path: Path) -> None:
    for name in ["DCIM/100/A.JPG", "DCIM/100/B.cr3", "DCIM/100/C.MP4", "DCIM/100/D.heic",
                 "DCIM/100/E.MTS", "DCIM/100/F.Rw2", "MISC/readme.txt", "DCIM/100/noext"]:
        touch(tmp_path / name)
    result = scan(tmp_path, DEFAULT_EXTENSIONS)
    kinds = {f.relpath: f.media_type for f in result.files}
    assert kinds == {b"DCIM/100/A.JPG": "photo", b"DCIM/100/B.cr3": "raw",
                     b"DCIM/100/C.MP4": "video", b"DCIM/100/D.heic": "photo",
                     b"DCIM/100/E.MTS": "video", b"DCIM/100/F.Rw2": "raw"}
    assert skipped(result) == {b"MISC/readme.txt": "not a media file: extension .txt",
                               b"DCIM/100/noext": "not a media file: extension (none)"}


def test_sidecars_travel_with_their_primary(tmp_path: Path) -> None:
    for name in ["IMG_1.CR2", "IMG_1.JPG", "IMG_1.XMP", "MVI_2.MOV", "MVI_2.THM",
                 "IMG_3.NEF", "IMG_3.NEF.xmp", "ORPHAN.XMP"]:
        touch(tmp_path / "DCIM" / name)
    result = scan(tmp_path, DEFAULT_EXTENSIONS)
    cars = {f.relpath: [s.relpath for s in f.sidecars] for f in result.files}
    assert cars[b"DCIM/IMG_1.CR2"] == [b"DCIM/IMG_1.XMP"]  # RAW wins over its JPEG
    assert cars[b"DCIM/IMG_1.JPG"] == []
    assert cars[b"DCIM/MVI_2.MOV"] == [b"DCIM/MVI_2.THM"]
    assert cars[b"DCIM/IMG_3.NEF"] == [b"DCIM/IMG_3.NEF.xmp"]
    assert skipped(result) == {b"DCIM/ORPHAN.XMP": "sidecar without a primary file"}


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    src, outside = tmp_path / "card", tmp_path / "outside"
    touch(outside / "secret.JPG")
    touch(src / "DCIM/real.JPG")
    (src / "DCIM/out.JPG").symlink_to(outside / "secret.JPG")
    (src / "DCIM/in.JPG").symlink_to(src / "DCIM/real.JPG")
    (src / "DCIM/loop").symlink_to(src)
    (src / "DCIM/dangling.JPG").symlink_to(tmp_path / "nowhere")
    result = scan(src, DEFAULT_EXTENSIONS)
    assert [f.relpath for f in result.files] == [b"DCIM/real.JPG"]
    reasons = skipped(result)
    assert reasons[b"DCIM/out.JPG"] == "symlink: points outside the source, not followed"
    assert reasons[b"DCIM/loop"].startswith("symlink: not followed")
    assert reasons[b"DCIM/in.JPG"].startswith("symlink: not followed")
    assert reasons[b"DCIM/dangling.JPG"] == "symlink: dangling"


def test_special_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "DCIM").mkdir()
    os.mkfifo(tmp_path / "DCIM/pipe.JPG")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "DCIM/sock.JPG"))
    try:
        os.mknod(tmp_path / "DCIM/dev.JPG", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        has_dev = True
    except PermissionError:
        has_dev = False
    result = scan(tmp_path, DEFAULT_EXTENSIONS)
    sock.close()
    assert result.files == []
    reasons = skipped(result)
    assert reasons[b"DCIM/pipe.JPG"] == "not a regular file: named pipe (FIFO)"
    assert reasons[b"DCIM/sock.JPG"] == "not a regular file: socket"
    if has_dev:
        assert reasons[b"DCIM/dev.JPG"] == "not a regular file: device node"


def test_hostile_names_survive_as_bytes(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path)
    names = [b"caf\xe9.JPG", b"new\nline.JPG", b"-rf .JPG", ("é" * 125).encode() + b".JPG"]
    for name in names:
        touch(os.path.join(root, b"DCIM", name), name)
    result = scan(tmp_path, DEFAULT_EXTENSIONS)
    assert sorted(f.name for f in result.files) == sorted(names)
    for f in result.files:
        with open(f.path, "rb") as fh:
            assert fh.read() == f.name


def test_system_folders_and_resource_forks(tmp_path: Path) -> None:
    touch(tmp_path / ".Trashes/501/IMG.JPG")
    touch(tmp_path / "System Volume Information/x.JPG")
    touch(tmp_path / "DCIM/._IMG_1.JPG")
    touch(tmp_path / "DCIM/IMG_1.JPG")
    result = scan(tmp_path, DEFAULT_EXTENSIONS)
    assert [f.relpath for f in result.files] == [b"DCIM/IMG_1.JPG"]
    assert skipped(result) == {b".Trashes": "system folder",
                               b"System Volume Information": "system folder",
                               b"DCIM/._IMG_1.JPG": "macOS resource fork (._ file)"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_unreadable_folder_is_reported(tmp_path: Path) -> None:
    touch(tmp_path / "DCIM/locked/IMG.JPG")
    os.chmod(tmp_path / "DCIM/locked", 0)
    try:
        result = scan(tmp_path, DEFAULT_EXTENSIONS)
    finally:
        os.chmod(tmp_path / "DCIM/locked", 0o755)
    assert skipped(result)[b"DCIM/locked"].startswith("unreadable folder")


def test_trees_deeper_than_path_max_are_walked_through_shortcuts(tmp_path: Path) -> None:
    """12,000 bytes of path: the files below are found and readable by their path (through
    nested shortcuts), keep their real relpath, and the shortcuts go with close()."""
    level = b"L" * 199
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    rel = b""
    try:
        for i in range(60):
            os.mkdir(level, dir_fd=fd)
            child = os.open(level, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, rel = child, rel + level + b"/"
            if i in (5, 30, 59):
                out = os.open(b"IMG_%d.JPG" % i, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(out, b"level %d" % i)
                os.close(out)
            if i == 45:  # a link deep down is judged like any other
                os.symlink(b"../" + level, b"UP.JPG", dir_fd=fd)
    finally:
        os.close(fd)
    result = scan(tmp_path, DEFAULT_EXTENSIONS)
    try:
        found = {f.relpath: f for f in result.files}
        assert set(found) == {(level + b"/") * (i + 1) + b"IMG_%d.JPG" % i
                              for i in (5, 30, 59)}
        assert len(max(found, key=len)) > 12_000
        for relpath, f in found.items():
            assert len(f.path) < 4096
            with open(f.path, "rb") as fh:
                assert fh.read() == b"level " + relpath.split(b"_")[-1].split(b".")[0]
        assert list(skipped(result).values()) == [
            "symlink: not followed (its target inside the source is scanned itself)"]
        shortcuts = result.shortcuts.folder
        assert shortcuts is not None and len(os.listdir(shortcuts)) >= 3  # nested 3 deep
    finally:
        result.close()
    assert not os.path.lexists(shortcuts)
