"""Crash points for the fault-injection tests (tests/test_faults_crash.py, docs/reliability.md).

Inert unless the environment variable PHOTO_INGEST_FAULT is set when the process starts.
Then the process kills itself with SIGKILL - no cleanup, no `finally`, exactly like a
crash or `kill -9` - at one chosen instant, so a test can hit instants that random timing
almost never finds (between the link and the catalog row, around a directory fsync).

    PHOTO_INGEST_FAULT=publish.linked:3    die the 3rd time the point is reached
    PHOTO_INGEST_FAULT=copy.bytes:5000000  die once 5,000,000 bytes were written to temps

The points are listed in POINTS; each call site says where it is.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "copy.bytes",          # a temp file being written, at a byte offset (the value)
    "copy.written",        # a temp file fully written, not yet fsynced
    "copy.fsynced",        # a temp file fsynced, not yet verified
    "dir.created",         # a new library folder made, its parent not yet fsynced
    "publish.linked",      # a library file linked into place, its folder not yet fsynced
    "publish.dir_fsynced", # its folder fsynced, the temp name not yet removed
    "publish.inserted",    # its catalog row written, the transaction not yet committed
    "publish.committed",   # committed, the next file not yet begun
)

_SPEC = os.environ.get("PHOTO_INGEST_FAULT", "")
_POINT, _, _VALUE = _SPEC.partition(":")
_AT = int(_VALUE or "1") if _SPEC else 0
_count = 0


def point(name: str) -> None:
    """Die here if this is the chosen point and its chosen occurrence."""
    global _count
    if name != _POINT:
        return
    _count += 1
    if _count >= _AT:
        os.kill(os.getpid(), signal.SIGKILL)


def written(nbytes: int) -> None:
    """Count bytes written to temp files; die once the chosen offset is crossed."""
    global _count
    if _POINT != "copy.bytes":
        return
    _count += nbytes
    if _count >= _AT:
        os.kill(os.getpid(), signal.SIGKILL)
