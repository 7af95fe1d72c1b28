"""Copy a file from the card in one pass, hashing as it goes, and make it durable.

The card is read exactly once: each buffer is hashed (SHA-1, Immich's checksum) and
written to a temp file in the library's incoming folder. Then the temp file is fsynced
and verified - by size, or for `verify = "full"` by re-reading it *from storage* (with
O_DIRECT, or after dropping its pages from the cache) and comparing hashes. Only then may
it be published, by a hard link that cannot replace anything, and the folder fsynced.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from queue import Queue

from photo_ingest import faults
from photo_ingest.ingest import process

Progress = Callable[[int], None]

INCOMING = b".incoming"
TEMP_SUFFIX = b".part"
HOST = socket.gethostname()


class SourceError(OSError):
    """Reading the source failed (a pulled card, a bad sector, a file that changed)."""


class VerifyError(RuntimeError):
    """The copy on storage does not match what was read from the source."""


class DestinationFull(OSError):
    """The library's filesystem ran out of space (or quota)."""


@dataclass(frozen=True)
class Copied:
    temp: bytes
    sha1: bytes
    size: int


def hash_file(path: bytes, buffer_size: int, progress: Progress | None = None,
              *, from_storage: bool = False) -> tuple[bytes, int]:
    """SHA-1 and length of a file, read sequentially in large buffers.

    FROM_STORAGE reads what the storage holds, not the page cache: with O_DIRECT where the
    filesystem takes it (no cache filled and copied out: a tenth of the kernel time), else
    after dropping the file's cached pages."""
    if from_storage and buffer_size % DIRECT_ALIGN == 0:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_DIRECT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: this filesystem has no O_DIRECT
                raise
        else:
            try:
                return _hash_fd(fd, _aligned_buffer(buffer_size), progress)
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # alignment it wants and we cannot give
                    raise
            finally:
                os.close(fd)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if from_storage:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        found = _hash_fd(fd, bytearray(buffer_size), progress)
        if from_storage:  # leave no cache behind for a file we will not read again soon
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return found
    finally:
        os.close(fd)


def _hash_fd(fd: int, buf: bytearray | mmap.mmap, progress: Progress | None,
             ) -> tuple[bytes, int]:
    digest = hashlib.sha1(usedforsecurity=False)
    view = memoryview(buf)
    total = 0
    while n := os.readv(fd, [buf]):
        digest.update(view[:n])
        total += n
        if progress:
            progress(n)
    return digest.digest(), total


DIRECT_ALIGN = 4096  # O_DIRECT wants buffer, offsets and lengths aligned to the block size
_DIRECT = threading.local()


def _aligned_buffer(size: int) -> mmap.mmap:
    """A page-aligned buffer for O_DIRECT, kept per thread (a fresh one faults in every page)."""
    buf: mmap.mmap | None = getattr(_DIRECT, "buffer", None)
    if buf is None or len(buf) != size:
        buf = _DIRECT.buffer = mmap.mmap(-1, size)
    return buf


def temp_name(incoming: bytes) -> bytes:
    """A temp path that says which host and process own it, so stale ones can be swept:
    HOST~PID.START~TOKEN, START being the process's start time (a reused PID is not it)."""
    me = process.Identity.mine()
    owner = f"{me.pid}.{me.started}" if me.started is not None else str(me.pid)
    token = os.urandom(6).hex()
    return os.path.join(incoming, f"{HOST}~{owner}~{token}".encode() + TEMP_SUFFIX)


def copy_to_temp(src: bytes, incoming: bytes, *, expected_size: int, buffer_size: int,
                 verify: str, progress: Progress | None = None) -> Copied:
    """Read SRC once into a fresh temp file; fsync and verify it. Raises on any doubt."""
    temp = temp_name(incoming)
    try:
        sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise SourceError(exc.errno, f"cannot open source file: {exc.strerror}") from exc
    try:
        dfd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        os.close(sfd)
        raise _dest_error(exc, "cannot create temp file") from exc
    try:
        os.posix_fadvise(sfd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        before = _identity(os.fstat(sfd))
        sha1, written = _pump(sfd, dfd, buffer_size, progress)
        faults.point("copy.written")
        if written != expected_size:
            _fstat_source(sfd)  # a card pulled mid-read ends early: say so, not "changed"
            raise SourceError(errno.EIO, f"file changed size while being read: expected "
                                         f"{expected_size} bytes, read {written}")
        if _identity(_fstat_source(sfd)) != before:
            # Rewritten in place (a directory source in use): the bytes read may mix old
            # and new content. Fail it; the next run copies it whole.
            raise SourceError(errno.EIO, "file was modified while being read")
        _fsync(dfd)
        faults.point("copy.fsynced")
        if os.fstat(dfd).st_size != written:
            raise VerifyError(f"size on storage {os.fstat(dfd).st_size} != {written} written")
        os.posix_fadvise(dfd, 0, 0, os.POSIX_FADV_DONTNEED)
    except BaseException:
        os.close(dfd)
        discard(temp)
        raise
    finally:
        os.close(sfd)
    os.close(dfd)
    if verify == "full":
        try:
            again, length = hash_file(temp, buffer_size, from_storage=True)
        except BaseException:
            discard(temp)
            raise
        if again != sha1 or length != written:
            discard(temp)
            raise VerifyError(f"verify failed: the copy on storage has SHA-1 {again.hex()}, "
                              f"the card's file has {sha1.hex()}")
    return Copied(temp, sha1, written)


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    """What changes when a file's content does: size, mtime and ctime (to the nanosecond)."""
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _pump(sfd: int, dfd: int, buffer_size: int, progress: Progress | None) -> tuple[bytes, int]:
    """Read and hash in one thread, write in this one: SHA-1 and write run on two cores.

    Both hashlib and os.write release the GIL on large buffers. The hash follows the read
    order exactly, so it is the hash of the bytes read from the card, and those very bytes
    are written. Memory stays at three buffers, reused from copy to copy.
    """
    buffers = _buffers(buffer_size)
    free: Queue[bytearray] = Queue()
    for buf in buffers:
        free.put(buf)
    full: Queue[tuple[bytearray, int] | BaseException | None] = Queue()
    digest = hashlib.sha1(usedforsecurity=False)

    def reader() -> None:
        try:
            while True:
                buf = free.get()
                if buf is _STOP:
                    return
                n = os.readv(sfd, [buf])
                if n == 0:
                    full.put(None)
                    return
                digest.update(memoryview(buf)[:n])
                full.put((buf, n))
        except OSError as exc:
            full.put(SourceError(exc.errno, f"reading the source failed: {exc.strerror}"))

    thread = threading.Thread(target=reader, name="card-reader", daemon=True)
    thread.start()
    total = 0
    try:
        while (item := full.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            buf, n = item
            _write_all(dfd, memoryview(buf)[:n])
            total += n
            free.put(buf)
            if progress:
                progress(n)
    finally:
        free.put(_STOP)
        thread.join()
    return digest.digest(), total


_POOL: dict[int, list[bytearray]] = {}
_POOL_LOCK = threading.Lock()


def _buffers(size: int) -> list[bytearray]:
    """Three buffers of SIZE, made once: fresh ones per file cost page faults on every copy.

    Copies run one at a time per process, so the pool is handed out whole."""
    with _POOL_LOCK:
        if size not in _POOL:
            _POOL[size] = [bytearray(size) for _ in range(3)]
        return _POOL[size]


_STOP = bytearray()
# The copy is written in slices: writes of 2 MiB or more cost 4-6 s of kernel time per GiB
# on a 6.x kernel in a VM (copied into large page-cache folios, fresh memory the hypervisor
# must back), 1 MiB writes 0.5-1 s; `cp` writes 64 KiB at a time. Reads keep large buffers.
WRITE_SLICE = 1 << 20


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        try:
            n = os.write(fd, data[:WRITE_SLICE])
        except OSError as exc:
            raise _dest_error(exc, "writing the copy failed") from exc
        faults.written(n)
        data = data[n:]


def _fsync(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise _dest_error(exc, "fsync of the copy failed") from exc


def _fstat_source(fd: int) -> os.stat_result:
    """fstat of the source; a source whose filesystem is gone (ENOTCONN, ENODEV …) raises
    the SourceError the pipeline takes for a pulled card."""
    try:
        return os.fstat(fd)
    except OSError as exc:
        raise SourceError(exc.errno, f"reading the source failed: {exc.strerror}") from exc


def _dest_error(exc: OSError, what: str) -> OSError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DestinationFull(exc.errno, f"{what}: library filesystem is full ({exc.strerror})")
    return OSError(exc.errno, f"{what}: {exc.strerror}")


def discard(path: bytes) -> None:
    """Remove a temp file that may already be gone (published or swept)."""
    if path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def fsync_dir(path: bytes) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(root: bytes, rel: bytes) -> bytes:
    """Create ROOT/REL folder by folder, fsyncing each parent so new folders are durable."""
    path = root
    for part in rel.split(b"/"):
        if not part:
            continue
        child = os.path.join(path, part)
        try:
            os.mkdir(child, 0o755)
        except FileExistsError:
            pass
        else:
            faults.point("dir.created")
            fsync_dir(path)
        path = child
    return path


def link_into_place(temp: bytes, final: bytes) -> None:
    """Publish TEMP at FINAL atomically, never replacing a file (FileExistsError if taken)."""
    try:
        os.link(temp, final)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # A filesystem without hard links: rename, after checking the name is free.
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, "exists", final) from exc
        os.rename(temp, final)
        faults.point("publish.linked")
        fsync_dir(os.path.dirname(final))
        return
    faults.point("publish.linked")
    fsync_dir(os.path.dirname(final))
    faults.point("publish.dir_fsynced")
    os.unlink(temp)


def sweep_stale_temps(incoming: bytes, max_age_other_hosts: float = 86400.0) -> list[bytes]:
    """Remove temp files whose writer is gone: dead pids here, day-old ones from elsewhere."""
    import time

    removed = []
    for entry in os.scandir(incoming):
        if not entry.name.endswith(TEMP_SUFFIX):
            continue
        host, _, rest = entry.name.decode("utf-8", "replace").partition("~")
        if host == HOST:
            stale = not _owner_alive(rest.partition("~")[0])
        else:
            stale = time.time() - entry.stat().st_mtime > max_age_other_hosts
        if stale:
            discard(entry.path)
            removed.append(entry.path)
    return removed


def _owner_alive(owner: str) -> bool:
    """OWNER is a temp name's PID.START (or PID, from older versions)."""
    pid, _, started = owner.partition(".")
    if not pid.isdigit() or (started and not started.isdigit()):
        return False
    return process.Identity(int(pid), None, int(started) if started else None).alive()
