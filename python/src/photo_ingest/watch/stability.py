"""When is a file in a watched folder complete? The stability rule, per file.

A file is *ready* when all of these hold:

* it is not a temp name that copy tools rename when done (`.name.XXXXXX` of rsync, any
  hidden name, `*.part`, `*.crdownload`, `~$name`…) — those are never candidates;
* it is not empty (a copy that has not written its first byte yet looks like that);
* its size and mtime have not changed for `stable_seconds` (measured from the later of
  our first sight of the current values and the file's own mtime);
* no one holds it open as far as inotify tells (IN_OPEN minus IN_CLOSE_WRITE and
  IN_CLOSE_NOWRITE, as seen since the watch began);
* no process we can see has it open for writing (/proc/PID/fdinfo; the caller checks the
  ready ones in one pass, see `open_for_writing`).

Nothing here sleeps or polls: the watcher feeds events in and asks for the next instant
something may become ready.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

# Suffixes of names that copy tools and browsers write to and rename when complete.
TEMP_SUFFIXES = (b".part", b".partial", b".crdownload", b".download", b".tmp", b".temp",
                 b".filepart", b".!qb", b".opdownload", b".swp", b".lock")


def ignored(rel: bytes) -> bool:
    """Never a candidate: hidden files and folders (rsync's `.name.XXXXXX`, Syncthing's
    `.syncthing.*`, our own `.photo-ingest~*`), `~$` lock files and temp suffixes."""
    parts = rel.split(b"/")
    if any(p.startswith(b".") for p in parts):
        return True
    name = parts[-1]
    return name.startswith(b"~") or name.lower().endswith(TEMP_SUFFIXES)


@dataclass
class Candidate:
    size: int
    mtime_ns: int
    ino: int
    since: float       # monotonic time from which the current size/mtime count as unchanged
    opens: int = 0     # IN_OPEN minus IN_CLOSE_*, as seen; never below 0


class Tracker:
    """The candidates of one watched folder and their stability."""

    def __init__(self, stable_seconds: float) -> None:
        self.stable = stable_seconds
        self.files: dict[bytes, Candidate] = {}

    def touch(self, path: bytes, now: float | None = None) -> None:
        """Look at PATH again (an event named it, or a scan found it)."""
        now = time.monotonic() if now is None else now
        try:
            st = os.lstat(path)
        except OSError:
            self.files.pop(path, None)
            return
        if not stat.S_ISREG(st.st_mode):
            self.files.pop(path, None)
            return
        c = self.files.get(path)
        if c is not None and (c.size, c.mtime_ns, c.ino) == (st.st_size, st.st_mtime_ns,
                                                             st.st_ino):
            return
        # Unchanged since its mtime at best: a file whose last write is an hour old has
        # been stable for an hour, even if we only see it now (a restart's catch-up).
        age = max(0.0, time.time() - st.st_mtime_ns / 1e9)
        since = now - min(age, self.stable) if c is None else now
        opens = c.opens if c is not None else 0
        self.files[path] = Candidate(st.st_size, st.st_mtime_ns, st.st_ino, since, opens)

    def opened(self, path: bytes) -> None:
        self.touch(path)
        c = self.files.get(path)
        if c is not None:
            c.opens += 1

    def closed(self, path: bytes) -> None:
        c = self.files.get(path)
        if c is not None:
            c.opens = max(0, c.opens - 1)
        self.touch(path)

    def forget(self, path: bytes) -> None:
        self.files.pop(path, None)

    def ready(self, now: float | None = None) -> tuple[list[bytes], float | None]:
        """The paths ready now (by size, mtime and inotify), and the next instant another
        may be (None: only an event can change anything)."""
        now = time.monotonic() if now is None else now
        for path in list(self.files):
            self.touch(path, now)
        ready, soonest = [], None
        for path, c in self.files.items():
            if c.size == 0 or c.opens > 0:
                continue
            due = c.since + self.stable
            if due <= now:
                ready.append(path)
            elif soonest is None or due < soonest:
                soonest = due
        return sorted(ready), soonest

    def postpone(self, path: bytes, now: float | None = None) -> None:
        """Someone still writes it (seen in /proc): count its stability from now."""
        c = self.files.get(path)
        if c is not None:
            c.since = time.monotonic() if now is None else now

    def pending(self) -> int:
        return len(self.files)


def open_for_writing(paths: list[bytes], proc: str = "/proc") -> set[bytes]:
    """Those of PATHS that some process we can see holds open for writing.

    Only processes whose /proc entries we may read are seen: our own user's, or every one
    when running as root without ProtectProc=invisible. Files written over NFS or by a
    process in another namespace are not seen here (the inotify count and the quiet
    period still apply)."""
    wanted = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        wanted[(st.st_dev, st.st_ino)] = p
    if not wanted:
        return set()
    folders = {os.fsencode(os.path.dirname(p)) for p in paths}
    found: set[bytes] = set()
    try:
        pids = [e for e in os.listdir(proc) if e.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = os.path.join(proc, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            # A renamed file keeps its open fd: compare by inode, but only read the fdinfo
            # of files in the folders in question (cheap filter, most fds are elsewhere).
            if os.fsencode(os.path.dirname(target)) not in folders:
                continue
            key = _writable_inode(proc, pid, fd)
            if key in wanted:
                found.add(wanted[key])
    return found


def _writable_inode(proc: str, pid: str, fd: str) -> tuple[int, int] | None:
    try:
        with open(os.path.join(proc, pid, "fdinfo", fd), "rb") as fh:
            info = fh.read()
        flags = next(int(line.split()[1], 8) for line in info.splitlines()
                     if line.startswith(b"flags:"))
        if flags & os.O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
            return None
        st = os.stat(os.path.join(proc, pid, "fd", fd))
    except (OSError, StopIteration, ValueError):
        return None
    return st.st_dev, st.st_ino
