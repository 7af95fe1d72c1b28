"""Which process a session row belongs to, so that a dead one is known as dead.

A PID alone is not enough: after a crash and a reboot (or a wrap of the PID counter), the
same number can belong to another, living process, and the session would look `running`
for as long as that one lives. The boot id and the process's start time (in clock ticks
since boot, /proc/PID/stat) make the identity exact; where /proc hides them (hidepid), the
PID alone decides, as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str | None:
    try:
        return _BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def started(pid: int) -> int | None:
    """PID's start time in clock ticks after boot; None when /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the name, in (), may hold spaces and ')'
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def alive(pid: int) -> bool:
    """A process with this PID exists (it may not be ours: see Identity.alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Identity:
    pid: int
    boot: str | None
    started: int | None

    @classmethod
    def mine(cls) -> Identity:
        pid = os.getpid()
        return cls(pid, boot_id(), started(pid))

    def alive(self) -> bool:
        """This very process still runs, on this host (the caller checks the host)."""
        now = boot_id()
        if self.boot is not None and now is not None and self.boot != now:
            return False  # recorded before a reboot: everything of that boot is gone
        if not alive(self.pid):
            return False
        if self.started is None:
            return True
        current = started(self.pid)
        return current is None or current == self.started
