"""A camera card that fails: a read-only FUSE mirror of a folder (mfusepy, libfuse 3).

    python tests/faults/cardfs.py SOURCE MOUNTPOINT [--fail-after N | --vanish-after N]

--fail-after N    every read past the first N bytes served answers EIO (a dying card:
                  the folder is still there, its files cannot be read)
--vanish-after N  once N bytes were served the filesystem process exits at once: every
                  later access answers ENOTCONN, like a card pulled from its reader

Every file is opened with direct_io, so each read reaches this process (no page cache
between the reader and the fault). It runs in the foreground; stop it with SIGTERM, or
unmount the mount point.
"""

from __future__ import annotations

import argparse
import errno
import os
import threading
from typing import Any

import mfusepy


class CardFS(mfusepy.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, root: str, fail_after: int | None, vanish_after: int | None) -> None:
        self.root = root
        self.fail_after = fail_after
        self.vanish_after = vanish_after
        self.served = 0
        self._mutex = threading.Lock()

    def _path(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        st = os.lstat(self._path(path))
        keys = ("st_mode", "st_nlink", "st_size", "st_uid", "st_gid", "st_ino")
        out: dict[str, Any] = {k: getattr(st, k) for k in keys}
        for k in ("st_atime", "st_mtime", "st_ctime"):
            out[k] = getattr(st, k + "_ns")  # use_ns: times in nanoseconds
        return out

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *sorted(os.listdir(self._path(path)))]

    def open(self, path: str, fi: Any) -> int:
        if fi.flags & (os.O_WRONLY | os.O_RDWR):
            raise mfusepy.FuseOSError(errno.EROFS)
        fi.fh = os.open(self._path(path), os.O_RDONLY)
        fi.direct_io = 1
        return 0

    def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
        with self._mutex:
            if self.vanish_after is not None and self.served >= self.vanish_after:
                os._exit(0)  # the card is gone: the kernel answers ENOTCONN from now on
            if self.fail_after is not None and self.served >= self.fail_after:
                raise mfusepy.FuseOSError(errno.EIO)
            data = os.pread(fi.fh, size, offset)
            self.served += len(data)
            return data

    def release(self, path: str, fi: Any) -> int:
        os.close(fi.fh)
        return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source")
    p.add_argument("mountpoint")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fail-after", type=int)
    g.add_argument("--vanish-after", type=int)
    args = p.parse_args()
    fs = CardFS(os.path.abspath(args.source), args.fail_after, args.vanish_after)
    mfusepy.FUSE(fs, args.mountpoint, raw_fi=True, foreground=True, ro=True,
                 fsname="cardfs", allow_other=True)


if __name__ == "__main__":
    main()
