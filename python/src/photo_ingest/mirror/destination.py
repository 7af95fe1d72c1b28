"""Is a mirror there? The marker rule, and a handle that cannot write anywhere else.

A mirror is usually a mount (an NFS/SMB share, a USB disk). When it is not mounted, its
path is a bare folder on the system disk, or absent; copying there would fill the system
disk with a "mirror" that vanishes when the share is mounted over it. So a destination is
used only when its root folder holds the marker file `.photo-ingest-mirror`:

* root missing or not a folder: unavailable ("not mounted?");
* marker present: available;
* marker absent and the root *is* a mount point: first use; the marker is created;
* marker absent and not a mount point: unavailable. A bare mount point looks exactly like
  this, so the marker is created only on request (`photo-ingest mirror --init NAME`).

Every file operation goes through a directory descriptor opened on the root *after* the
marker was seen there (as /proc/self/fd/N/…): if the share is unmounted meanwhile, writes
still land on the share (or fail), never in the bare mount point below it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from photo_ingest.ingest.copy import INCOMING, fsync_dir, sweep_stale_temps
from photo_ingest.mirror.config import MirrorConfig

MARKER = ".photo-ingest-mirror"


class Unavailable(OSError):
    """The destination cannot be used now; nothing was written to it."""


@dataclass
class Handle:
    """An open destination root: `root` is a path that resolves through the open fd."""

    mirror: MirrorConfig
    fd: int
    root: bytes

    @property
    def incoming(self) -> bytes:
        return os.path.join(self.root, INCOMING)

    def path(self, relpath: str) -> bytes:
        return os.path.join(self.root, relpath.encode())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def open_destination(mirror: MirrorConfig, *, create_marker: bool = True) -> Handle:
    """Open MIRROR's root by the marker rule; raises Unavailable saying why not."""
    where = os.fspath(mirror.path)
    try:
        fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise Unavailable(exc.errno, f"{where} does not exist (not mounted?)") from exc
    except NotADirectoryError as exc:
        raise Unavailable(exc.errno, f"{where} is not a folder") from exc
    except OSError as exc:  # EIO, ESTALE, EACCES, a hung share's ETIMEDOUT
        raise Unavailable(exc.errno, f"{where} cannot be opened: {exc.strerror}") from exc
    try:
        handle = Handle(mirror, fd, _fd_path(fd, where))
        if not _has_marker(fd):
            if not (create_marker and os.path.ismount(where)):
                raise Unavailable(0, f"{where} has no {MARKER} marker and is not a mount "
                                     "point: if the destination's filesystem is not mounted, "
                                     "mount it; if this folder is the mirror, run "
                                     f"`photo-ingest mirror --init {mirror.name}` once")
            write_marker(handle)
        _ensure_incoming(handle)
        return handle
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def opened(mirror: MirrorConfig, *, create_marker: bool = True) -> Iterator[Handle]:
    handle = open_destination(mirror, create_marker=create_marker)
    try:
        yield handle
    finally:
        handle.close()


def init_destination(mirror: MirrorConfig) -> bytes:
    """`mirror --init NAME`: the operator says this existing folder is the mirror."""
    where = os.fspath(mirror.path)
    if not os.path.isdir(where):
        raise Unavailable(0, f"{where} is not an existing folder: create or mount it first")
    fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    handle = Handle(mirror, fd, _fd_path(fd, where))
    try:
        if not _has_marker(fd):
            write_marker(handle)
        _ensure_incoming(handle)
    finally:
        handle.close()
    return os.path.join(os.fsencode(where), MARKER.encode())


def write_marker(handle: Handle) -> None:
    """The marker, written atomically (temp, fsync, rename, fsync the folder)."""
    text = (f"photo-ingest mirror {handle.mirror.name}\ncreated {time.ctime()} on "
            f"{socket.gethostname()}\nDo not delete: without this file photo-ingest treats "
            "the folder as not mounted.\n")
    temp = os.path.join(handle.root, MARKER.encode() + b".tmp")
    with open(temp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    _owned_like_root(handle, temp)
    os.rename(temp, os.path.join(handle.root, MARKER.encode()))
    fsync_dir(handle.root)


def _owned_like_root(handle: Handle, path: bytes) -> None:
    """`sudo photo-ingest mirror --init`: what root creates belongs to the folder's owner
    (the library user, who copies into it later), not to root."""
    if os.geteuid() == 0:
        st = os.fstat(handle.fd)
        os.chown(path, st.st_uid, st.st_gid)


def _has_marker(fd: int) -> bool:
    try:
        os.stat(MARKER, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _ensure_incoming(handle: Handle) -> None:
    try:
        os.mkdir(handle.incoming, 0o755)
    except FileExistsError:
        pass
    else:
        _owned_like_root(handle, handle.incoming)
    sweep_stale_temps(handle.incoming)


def _fd_path(fd: int, fallback: str) -> bytes:
    proc = f"/proc/self/fd/{fd}"
    return os.fsencode(proc if os.path.isdir(proc) else fallback)
