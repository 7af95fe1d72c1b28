"""The after-step: leave, archive or delete a source file once its content is safely in
the library (and, with wait_for_immich, in Immich).

Nothing is moved or deleted unless, right before, (a) the catalog holds the file's SHA-1
with a library file of the right size present, and (b) the source still hashes to that
SHA-1. The order makes every instant safe to die at:

1. intent: watch_files says `archiving`/`deleting`, with the hidden name and the target;
2. the file is renamed to that hidden name in its own folder (`.photo-ingest~…`, which the
   watcher ignores): whatever now appears under the old name is another file, so nothing
   written after this check can be deleted by it;
3. the hidden file is hashed; a mismatch (rewritten since its ingest) puts it back;
4. archive: hard link (or verified copy, across filesystems) at the target, never
   replacing a file; the folder is fsynced;
5. the hidden name is removed, the folder fsynced, the row says `archived`/`deleted`.

A restart finishes rows left in steps 1-5 (`resume`): the hidden file, the original, or
the archived copy tells which step was reached.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from photo_ingest.ingest.copy import (
    copy_to_temp,
    discard,
    ensure_dir,
    fsync_dir,
    hash_file,
    link_into_place,
    sweep_stale_temps,
)
from photo_ingest.ingest.layout import display
from photo_ingest.watch import store
from photo_ingest.watch.config import WatchConfig
from photo_ingest.watch.store import Conn, Row

log = logging.getLogger(__name__)

ASIDE_PREFIX = b".photo-ingest~"
_NAME_MAX = 255


class After:
    def __init__(self, conn: Conn, watch: WatchConfig, library: bytes, buffer_size: int) -> None:
        self.conn = conn
        self.watch = watch
        self.root = os.fsencode(watch.path)
        self.library = library
        self.buffer_size = buffer_size
        self.archived = self.deleted = 0

    def step(self, row: Row) -> str:
        """Take ROW (state ingested, archiving or deleting) as far as it may go now; the
        state it is left in ("ingested" while it must wait, "gone" when it vanished)."""
        assert row.sha1 is not None
        if row.state in ("archiving", "deleting"):
            return self._resume(row, row.sha1)  # decided before: finished as decided
        if self.watch.after == "leave":         # the folder's policy changed since
            store.finished(self.conn, row.path, "kept")
            return "kept"
        if not os.path.lexists(row.path):
            store.forget(self.conn, row.path)  # the user took it away: nothing to do
            return "gone"
        problem = self.unsafe(row.sha1)
        if problem:
            log.warning("%s stays: %s", display(row.path), problem)
            return "ingested"
        if self.watch.wait_for_immich and not store.in_immich(self.conn, row.sha1):
            return "ingested"
        aside = _aside_name(row.path)
        target = self._free_target(row.path) if self.watch.after == "archive" else None
        state = "archiving" if target is not None else "deleting"
        store.moving(self.conn, row.path, state, aside, target)
        try:
            set_aside(row.path, aside)
        except FileNotFoundError:
            store.forget(self.conn, row.path)
            return "gone"
        return self._finish(row.path, aside, target, row.sha1)

    def unsafe(self, sha1: bytes) -> str | None:
        """Why the library does not (verifiably) hold this content; None when it does."""
        copies = store.library_copies(self.conn, sha1)
        if not copies:
            return f"SHA-1 {sha1.hex()} is not in the catalog"
        for relpath, size in copies:
            try:
                if os.stat(os.path.join(self.library, relpath.encode())).st_size == size:
                    return None
            except OSError:
                continue
        return f"the library file for SHA-1 {sha1.hex()} is missing or has the wrong size"

    def _resume(self, row: Row, sha1: bytes) -> str:
        assert row.aside is not None
        if os.path.lexists(row.aside):
            return self._finish(row.path, row.aside, row.target, sha1)
        if os.path.lexists(row.path):  # died before the rename: start again
            store.finished(self.conn, row.path, "ingested")
            return self.step(store.get(self.conn, row.path) or row)
        if row.state == "deleting":
            store.finished(self.conn, row.path, "deleted")
            self.deleted += 1
            return "deleted"
        assert row.target is not None
        if os.path.exists(row.target) and hash_file(row.target, self.buffer_size)[0] == sha1:
            store.finished(self.conn, row.path, "archived")
            self.archived += 1
            return "archived"
        log.error("%s: neither the file, its hidden name nor its archived copy %s is there "
                  "any more (removed by hand?)", display(row.path), display(row.target))
        store.forget(self.conn, row.path)
        return "gone"

    def _finish(self, path: bytes, aside: bytes, target: bytes | None, sha1: bytes) -> str:
        """Steps 3-5, from the hidden name."""
        digest, _ = hash_file(aside, self.buffer_size)
        problem = self.unsafe(sha1) if digest == sha1 else (
            f"rewritten since its ingest (SHA-1 now {digest.hex()}, was {sha1.hex()})")
        if problem:
            restored = put_back(aside, path)
            if digest == sha1 and restored == path:
                store.finished(self.conn, path, "ingested")  # tried again later
                log.warning("%s stays: %s", display(path), problem)
                return "ingested"
            store.forget(self.conn, path)  # taken again as the file it now is
            log.warning("%s left in place as %s: %s", display(path), display(restored),
                        problem)
            return "changed"
        if target is not None:
            try:
                target = self._archive(path, aside, target, sha1)
            except OSError as exc:  # archive folder unwritable, full…: back in place for now
                restored = put_back(aside, path)
                if restored == path:
                    store.finished(self.conn, path, "ingested")
                else:
                    store.forget(self.conn, path)
                log.error("%s stays (as %s): cannot archive it to %s: %s", display(path),
                          display(restored), display(target), exc.strerror or exc)
                return "ingested"
        drop_aside(aside)
        if target is not None:
            store.finished(self.conn, path, "archived", target)
            self.archived += 1
            log.info("archived %s -> %s", display(path), display(target))
            return "archived"
        store.finished(self.conn, path, "deleted")
        self.deleted += 1
        log.info("deleted %s (in the library)", display(path))
        return "deleted"

    def _archive(self, path: bytes, aside: bytes, target: bytes, sha1: bytes) -> bytes:
        """Put the hidden file at TARGET (or the next free name); the name it got."""
        folder = os.path.dirname(target)
        ensure_dir(b"/", folder.lstrip(b"/"))
        for stale in sweep_stale_temps(folder):
            log.info("removed a dead run's temp file %s", display(stale))
        while True:
            try:
                link_archive(aside, target)
                return target
            except FileExistsError:
                if _same_content(aside, target, sha1, self.buffer_size):
                    return target  # ours, linked or copied before a restart
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                    raise
                if self._copy_archive(aside, target, sha1):
                    return target
            target = self._free_target(path, after=target)
            store.moving(self.conn, path, "archiving", aside, target)

    def _copy_archive(self, aside: bytes, target: bytes, sha1: bytes) -> bool:
        """Another filesystem: a verified copy linked in place; False if TARGET is taken."""
        size = os.stat(aside).st_size
        copied = copy_to_temp(aside, os.path.dirname(target), expected_size=size,
                              buffer_size=self.buffer_size, verify="full")
        if copied.sha1 != sha1:
            discard(copied.temp)
            raise OSError(errno.EIO, f"the copy of {display(aside)} does not match")
        try:
            link_into_place(copied.temp, target)
            return True
        except FileExistsError:
            discard(copied.temp)
            return _same_content(aside, target, sha1, self.buffer_size)

    def _archive_dir(self) -> Path:
        assert self.watch.archive_dir is not None
        return self.watch.archive_dir

    def _free_target(self, path: bytes, after: bytes | None = None) -> bytes:
        """archive_dir/<path relative to the watched folder>, suffixed -1, -2… when taken."""
        rel = os.path.relpath(path, self.root)
        wanted = os.path.join(os.fsencode(self._archive_dir()), rel)
        stem, ext = os.path.splitext(wanted)
        n = 0
        candidate = wanted
        while os.path.lexists(candidate) or candidate == after:
            n += 1
            candidate = stem + f"-{n}".encode() + ext
        return candidate


# The file operations of the steps, one function each (the crash tests stop the process
# right after each of them).

def set_aside(path: bytes, aside: bytes) -> None:
    os.rename(path, aside)
    fsync_dir(os.path.dirname(path))


def link_archive(aside: bytes, target: bytes) -> None:
    os.link(aside, target)
    fsync_dir(os.path.dirname(target))


def drop_aside(aside: bytes) -> None:
    os.unlink(aside)
    fsync_dir(os.path.dirname(aside))


def put_back(aside: bytes, path: bytes) -> bytes:
    """The hidden file under its own name again, or a free variant if that is taken."""
    stem, ext = os.path.splitext(path)
    candidate, n = path, 0
    while True:
        try:
            os.link(aside, candidate)
            break
        except FileExistsError:
            if os.path.samefile(aside, candidate):
                break
            n += 1
            candidate = stem + f"-{n}".encode() + ext
    drop_aside(aside)
    return candidate


def _aside_name(path: bytes) -> bytes:
    folder, name = os.path.split(path)
    prefix = ASIDE_PREFIX + os.urandom(4).hex().encode() + b"~"
    return os.path.join(folder, prefix + name[:_NAME_MAX - len(prefix)])


def _same_content(aside: bytes, target: bytes, sha1: bytes, buffer_size: int) -> bool:
    try:
        return os.path.samefile(aside, target) or hash_file(target, buffer_size)[0] == sha1
    except OSError:
        return False
