"""Walk a source tree and sort what is there into media, sidecars and skips.

Paths stay bytes from the walk to the copy, so names that are not UTF-8 survive intact.
Symlinks are never followed (a card has none; a directory source must not lead us out of
itself), and anything that is not a regular file or a folder is reported and left alone.

A tree deeper than PATH_MAX is walked too: the kernel refuses a path of 4096 bytes or more,
so a folder whose path grows long is reached through a shortcut, a symlink in a private
folder of ours (see _Shortcuts). A file's `path` is then the way to open it; its `relpath`
stays its real name on the card.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

# Folders that filesystems and desktops leave on cards; nothing of the user's is in them.
SYSTEM_FOLDERS = {
    b".Trashes", b".Spotlight-V100", b".fseventsd", b".TemporaryItems",
    b"System Volume Information", b"$RECYCLE.BIN", b"lost+found",
}


@dataclass(frozen=True)
class Sidecar:
    path: bytes
    relpath: bytes
    size: int
    mtime: float


@dataclass
class SourceFile:
    path: bytes
    relpath: bytes
    size: int
    mtime: float
    media_type: str  # photo | raw | video
    sidecars: list[Sidecar] = field(default_factory=list)

    @property
    def name(self) -> bytes:
        return os.path.basename(self.relpath)


@dataclass(frozen=True)
class Skipped:
    relpath: bytes
    reason: str
    size: int | None = None


class _Shortcuts:
    """Symlinks that stand for folders whose path has grown long.

    A symlink's body may be nearly PATH_MAX long, and the kernel follows links in a path up
    to 40 deep, each body measured on its own: a shortcut to a shortcut's subfolder reaches
    about 40 x LONG bytes down, for every process (exiftool too) and without keeping
    folders open. The folder is private (0700), so nobody can swap a link.
    """

    LONG = 3072  # longer paths get a shortcut; a name (<= 255 bytes) still fits after it

    def __init__(self) -> None:
        self.folder: bytes | None = None
        self.made = 0

    def shorten(self, path: bytes) -> bytes:
        if len(path) < self.LONG:
            return path
        if self.folder is None:
            self.folder = os.fsencode(tempfile.mkdtemp(prefix="photo-ingest-deep-"))
        self.made += 1
        link = os.path.join(self.folder, b"%d" % self.made)
        os.symlink(path, link)
        return link

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


@dataclass
class ScanResult:
    files: list[SourceFile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    shortcuts: _Shortcuts = field(default_factory=_Shortcuts)

    @property
    def total_bytes(self) -> int:
        return sum(f.size + sum(s.size for s in f.sidecars) for f in self.files)

    def close(self) -> None:
        """Removes the shortcuts to deep folders: the files' paths below them go too."""
        self.shortcuts.close()


def scan(source: str | bytes, extensions: Mapping[str, tuple[str, ...]]) -> ScanResult:
    """Everything under SOURCE, sorted by relative path. Close the result after use."""
    root = os.path.abspath(os.fsencode(source))
    shortcuts = _Shortcuts()
    try:
        result = _classify(root, _walk(root, shortcuts), extensions)
    except BaseException:
        shortcuts.close()
        raise
    result.shortcuts = shortcuts
    return result


def scan_files(source: str | bytes, paths: Iterable[bytes],
               extensions: Mapping[str, tuple[str, ...]]) -> ScanResult:
    """Only PATHS (files below SOURCE), sorted as scan() sorts everything: a watcher's batch.

    A path that no longer exists is left out (it was deleted or renamed since it was
    chosen; its new name, if any, is seen on its own)."""
    root = os.path.abspath(os.fsencode(source))
    return _classify(root, _stat_each(root, paths), extensions)


def _stat_each(root: bytes, paths: Iterable[bytes]) -> Iterator[Entry]:
    for path in paths:
        rel = os.path.relpath(path, root)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            yield rel, f"cannot stat: {exc.strerror}", path
            continue
        if stat.S_ISLNK(st.st_mode):
            yield rel, _symlink_reason(root, path), path
        elif stat.S_ISREG(st.st_mode):
            yield rel, st, path
        elif not stat.S_ISDIR(st.st_mode):
            yield rel, f"not a regular file: {_special_kind(st.st_mode)}", path


# (relpath, stat or why it is passed over, the path to open it by)
Entry = tuple[bytes, os.stat_result | str, bytes]


def _classify(root: bytes, entries: Iterable[Entry],
              extensions: Mapping[str, tuple[str, ...]]) -> ScanResult:
    kinds = {ext.encode(): kind for kind, exts in extensions.items() for ext in exts}
    result = ScanResult()
    sidecars: list[Sidecar] = []
    for rel, st_or_reason, path in entries:
        if isinstance(st_or_reason, str):
            result.skipped.append(Skipped(rel, st_or_reason))
            continue
        st = st_or_reason
        name = os.path.basename(rel)
        kind = kinds.get(os.path.splitext(name)[1][1:].lower())
        if name.startswith(b"._"):
            result.skipped.append(Skipped(rel, "macOS resource fork (._ file)", st.st_size))
        elif kind is None:
            ext = os.fsdecode(os.path.splitext(name)[1]) or "(none)"
            result.skipped.append(Skipped(rel, f"not a media file: extension {ext}", st.st_size))
        elif st.st_size == 0:  # a camera's failed write: no content to keep, none to identify
            result.skipped.append(Skipped(rel, "empty file (0 bytes)", 0))
        elif kind == "sidecar":
            sidecars.append(Sidecar(path, rel, st.st_size, st.st_mtime))
        else:
            result.files.append(SourceFile(path, rel, st.st_size, st.st_mtime, kind))
    result.skipped.extend(_attach_sidecars(result.files, sidecars))
    result.files.sort(key=lambda f: f.relpath)
    result.skipped.sort(key=lambda s: s.relpath)
    return result


def _walk(root: bytes, shortcuts: _Shortcuts) -> Iterator[Entry]:
    """(relpath, stat, path) for regular files, (relpath, reason, path) for everything
    passed over."""
    stack = [(b"", root)]  # (relpath, the path to open it by)
    while stack:
        rel_dir, at = stack.pop()
        try:
            entries = sorted(os.scandir(at), key=lambda e: e.name)
        except OSError as exc:
            yield rel_dir or b".", f"unreadable folder: {exc.strerror}", at
            continue
        for entry in entries:
            rel = os.path.join(rel_dir, entry.name) if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                yield rel, f"cannot stat: {exc.strerror}", entry.path
                continue
            if stat.S_ISLNK(st.st_mode):
                yield rel, _symlink_reason(root, entry.path), entry.path
            elif stat.S_ISDIR(st.st_mode):
                if entry.name in SYSTEM_FOLDERS:
                    yield rel, "system folder", entry.path
                else:
                    stack.append((rel, shortcuts.shorten(entry.path)))
            elif stat.S_ISREG(st.st_mode):
                yield rel, st, entry.path
            else:
                yield rel, f"not a regular file: {_special_kind(st.st_mode)}", entry.path


def _symlink_reason(root: bytes, path: bytes) -> str:
    if not os.path.exists(path):  # the kernel follows it (through a shortcut too)
        return "symlink: dangling"
    target = os.path.realpath(path)
    if os.path.commonpath([root, target]) == root:
        return "symlink: not followed (its target inside the source is scanned itself)"
    return "symlink: points outside the source, not followed"


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
        return "device node"
    return "unknown file type"


# Which primary a sidecar belongs to when RAW+JPEG (or video+photo) share a stem.
_SIDECAR_PREFERENCE = {b".xmp": ("raw", "photo", "video"), b".thm": ("video", "raw", "photo")}


def _attach_sidecars(files: list[SourceFile], sidecars: list[Sidecar]) -> list[Skipped]:
    """Give each sidecar to its primary (same folder, same stem); report orphans."""
    by_stem: dict[tuple[bytes, bytes], list[SourceFile]] = {}
    for f in files:
        folder, name = os.path.split(f.relpath)
        by_stem.setdefault((folder, os.path.splitext(name)[0].lower()), []).append(f)
        by_stem.setdefault((folder, name.lower()), []).append(f)  # IMG_1.CR2.xmp style
    orphans = []
    for sc in sidecars:
        folder, name = os.path.split(sc.relpath)
        stem, ext = os.path.splitext(name)
        candidates = by_stem.get((folder, stem.lower()), [])
        order = _SIDECAR_PREFERENCE.get(ext.lower(), ("raw", "photo", "video"))
        candidates = sorted(candidates, key=lambda f: order.index(f.media_type))
        if candidates:
            candidates[0].sidecars.append(sc)
        else:
            orphans.append(Skipped(sc.relpath, "sidecar without a primary file", sc.size))
    return orphans
