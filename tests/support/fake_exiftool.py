"""An exiftool that misbehaves on request, for tests of the metadata job's recovery.

It runs the real exiftool behind it with the same arguments (so in `-stay_open` mode when
pyexiftool starts it) and relays every command and its answer, except that a command naming
a file with HANG in its name is never answered, and one naming CRASH kills the process, as
a file that sends exiftool into an endless loop or makes it die would.

Use it as `ingest.exiftool` through a wrapper script: `python3 fake_exiftool.py "$@"`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """The real exiftool goes when this fake goes, however it goes: exiftool in -stay_open
    mode does not exit at the end of its input, it polls for more forever."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def relay(src: int, dst: int, marker: bytes) -> None:
    """Copy SRC to DST up to and including the end-of-command MARKER."""
    tail = b""
    while not tail.rstrip().endswith(marker):
        data = os.read(src, 65536)
        if not data:
            sys.exit(1)  # the real exiftool died
        os.write(dst, data)
        tail = (tail + data)[-(len(marker) + 8):]


def main() -> None:
    real = subprocess.Popen(["exiftool", *sys.argv[1:]], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=die_with_parent)
    assert real.stdin and real.stdout and real.stderr
    command: list[bytes] = []
    for line in sys.stdin.buffer:  # one argument a line; "-executeNNN" ends a command
        command.append(line)
        if not line.startswith(b"-execute"):
            continue
        if any(b"CRASH" in arg for arg in command):
            os._exit(1)
        if any(b"HANG" in arg for arg in command):
            time.sleep(3600)
        real.stdin.write(b"".join(command))
        real.stdin.flush()
        number = line.strip()[len(b"-execute"):]
        relay(real.stdout.fileno(), sys.stdout.fileno(), b"{ready" + number + b"}")
        relay(real.stderr.fileno(), sys.stderr.fileno(), b"post" + number)
        command = []
    real.kill()
    real.wait()


if __name__ == "__main__":
    main()
