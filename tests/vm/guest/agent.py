#!/usr/bin/python3
"""The VM test's agent inside the guest: runs the host's commands, answers on ttyS1.

The guest has no network and nobody logs in. This agent, started by vm-agent.service,
reads one request per line from the second serial port and writes one answer per line.
Both are base64-encoded JSON, so the tty sees only printable bytes:

    request  {"id": 7, "sh": "systemctl is-active foo", "timeout": 60, "stdin": "<base64>"}
    answer   {"id": 7, "rc": 0, "out": "active\\n", "err": "", "seconds": 0.01}

It says {"hello": <uptime>} once it listens. Commands run one at a time, as root.
"""

import base64
import json
import os
import subprocess
import sys
import termios
import time
import tty

PORT = "/dev/ttyS1"


def send(fd: int, message: dict) -> None:
    data = base64.b64encode(json.dumps(message).encode()) + b"\n"
    while data:
        data = data[os.write(fd, data):]


def run(request: dict) -> dict:
    started = time.monotonic()
    stdin = base64.b64decode(request.get("stdin", ""))
    try:
        done = subprocess.run(["/bin/sh", "-c", request["sh"]], input=stdin,
                              capture_output=True, timeout=request.get("timeout", 120))
        rc, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = -1, exc.stdout or b"", (exc.stderr or b"") + b"\n[agent: timed out]"
    return {"id": request["id"], "rc": rc, "out": out.decode("utf-8", "replace"),
            "err": err.decode("utf-8", "replace"), "seconds": time.monotonic() - started}


def main() -> None:
    fd = os.open(PORT, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    termios.tcflush(fd, termios.TCIOFLUSH)
    with open("/proc/uptime") as f:
        send(fd, {"hello": float(f.read().split()[0])})
    buf = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            time.sleep(0.05)
            continue
        buf += chunk.replace(b"\r", b"")
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            try:
                request = json.loads(base64.b64decode(line))
            except ValueError:
                print(f"agent: ignoring a garbled line of {len(line)} bytes", file=sys.stderr)
                continue
            send(fd, run(request))


if __name__ == "__main__":
    main()
