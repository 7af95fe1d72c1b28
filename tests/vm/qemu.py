"""One boot of the guest under qemu: QMP for hot-plugging, the agent on ttyS1 for commands.

Always TCG (`-accel tcg,thread=multi`): on these hosts /dev/kvm exists but does not boot a
stock kernel (it hangs in the decompressor, without an error). KVM only on explicit request
($PHOTO_INGEST_VM_ACCEL=kvm). `-snapshot` keeps the cached image pristine: every boot starts
from the same state.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vm.image import Image

BOOT_TIMEOUT = float(os.environ.get("PHOTO_INGEST_VM_BOOT_TIMEOUT", "180"))
CMDLINE = ("root=/dev/vda rw console=ttyS0 usb_storage.delay_use=0 panic=-1 "
           "systemd.show_status=0 quiet loglevel=4")


class VMError(RuntimeError):
    pass


@dataclass
class Result:
    cmd: str
    rc: int
    out: str
    err: str
    seconds: float

    def check(self) -> str:
        if self.rc != 0:
            raise VMError(f"guest command failed ({self.rc}): {self.cmd}\n{self.out}{self.err}")
        return self.out


class _Lines:
    """A Unix stream socket read as lines, with a deadline per read."""

    def __init__(self, path: Path, deadline: float) -> None:
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise VMError(f"qemu never opened {path}") from None
                time.sleep(0.05)
        self.buf = b""

    def readline(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError from None
            if not chunk:
                raise VMError("qemu closed the socket (did the guest or qemu die?)")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


class VM:
    """`with VM(image, workdir) as vm:` boots; vm.sh() runs a command in the guest."""

    def __init__(self, image: Image, workdir: Path, *, memory: int = 1024, cpus: int = 2,
                 disks: tuple[Path, ...] = (), unsafe_disks: tuple[Path, ...] = ()) -> None:
        self.image, self.workdir = image, workdir
        self.memory, self.cpus, self.disks = memory, cpus, disks
        self.unsafe_disks = unsafe_disks
        self.console = workdir / "console.log"
        self.events: list[dict[str, Any]] = []
        self.boot_seconds = 0.0
        self._ids = itertools.count(1)
        self._proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        accel = os.environ.get("PHOTO_INGEST_VM_ACCEL", "tcg")
        argv = ["qemu-system-x86_64", "-machine", "pc", "-nodefaults", "-no-user-config",
                "-display", "none", "-m", str(self.memory), "-smp", str(self.cpus),
                "-accel", "kvm" if accel == "kvm" else "tcg,thread=multi",
                # qemu64 lacks SSE4.2/POPCNT, and DuckDB's wheels die of SIGILL without them.
                "-cpu", "host" if accel == "kvm" else "max",
                "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
                "-append", CMDLINE, "-snapshot", "-no-reboot",
                "-drive", f"file={self.image.rootfs},format=raw,if=virtio,cache=unsafe",
                "-device", "qemu-xhci,id=xhci",
                "-qmp", f"unix:{self.workdir / 'qmp.sock'},server=on,wait=off",
                "-chardev", f"socket,id=agent,path={self.workdir / 'agent.sock'},"
                            "server=on,wait=off",
                "-serial", f"file:{self.console}", "-serial", "chardev:agent"]
        for disk in self.disks:
            argv += ["-drive", f"file={disk},format=raw,if=virtio"]
        # Kept across boots (not -snapshot), and cache=unsafe: qemu ignores the guest's
        # flushes, so what the guest never wrote out is simply gone when qemu is killed.
        for disk in self.unsafe_disks:
            argv += ["-drive", f"file={disk},format=raw,if=virtio,cache=unsafe,snapshot=off"]
        return argv

    # -- life cycle --------------------------------------------------------------------

    def __enter__(self) -> VM:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in ("qmp.sock", "agent.sock"):
            (self.workdir / name).unlink(missing_ok=True)
        started = time.monotonic()
        deadline = started + BOOT_TIMEOUT
        stderr = open(self.workdir / "qemu.stderr", "wb")  # noqa: SIM115 (lives with qemu)
        self._proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                      stdout=stderr, stderr=stderr)
        try:
            self._qmp = _Lines(self.workdir / "qmp.sock", deadline)
            self._agent = _Lines(self.workdir / "agent.sock", deadline)
            json.loads(self._qmp.readline(30))  # the greeting
            self.qmp("qmp_capabilities")
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or self._proc.poll() is not None:
                    raise VMError(f"the guest did not come up within {BOOT_TIMEOUT:.0f}s "
                                  f"(qemu exit {self._proc.poll()}); console:\n"
                                  + self.console_tail())
                try:
                    line = self._agent.readline(min(left, 2.0))
                except TimeoutError:
                    continue
                try:
                    if "hello" in json.loads(base64.b64decode(line)):
                        break
                except ValueError:
                    continue
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - started

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(Exception):  # killed below anyway
                self.qmp("quit")
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for conn in ("_qmp", "_agent"):
            if hasattr(self, conn):
                getattr(self, conn).close()

    def kill(self) -> None:
        """Pull the plug: SIGKILL qemu, no shutdown, no flush of anything the guest holds."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self.stop()

    def console_tail(self, lines: int = 60) -> str:
        try:
            text = self.console.read_text(errors="replace").replace("\r", "")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- the agent -----------------------------------------------------------------------

    def sh(self, cmd: str, *, timeout: float = 120, stdin: bytes = b"") -> Result:
        ident = next(self._ids)
        request = {"id": ident, "sh": cmd, "timeout": timeout,
                   "stdin": base64.b64encode(stdin).decode()}
        self._agent.send(base64.b64encode(json.dumps(request).encode()) + b"\n")
        deadline = time.monotonic() + timeout + 30
        while True:
            try:
                line = self._agent.readline(deadline - time.monotonic())
            except TimeoutError:
                raise VMError(f"no answer from the guest agent for: {cmd}\n"
                              + self.console_tail()) from None
            try:
                answer = json.loads(base64.b64decode(line))
            except ValueError:
                continue
            if answer.get("id") == ident:
                return Result(cmd, answer["rc"], answer["out"], answer["err"],
                              answer["seconds"])

    def check(self, cmd: str, *, timeout: float = 120) -> str:
        return self.sh(cmd, timeout=timeout).check()

    def wait_until(self, cmd: str, *, timeout: float, interval: float = 0.5,
                   what: str = "") -> str:
        """Run CMD until it succeeds; its output."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.sh(cmd)
            if result.rc == 0:
                return result.out
            if time.monotonic() > deadline:
                raise VMError(f"timed out after {timeout:.0f}s waiting for {what or cmd}: "
                              f"{result.out}{result.err}")
            time.sleep(interval)

    # -- QMP -----------------------------------------------------------------------------

    def qmp(self, command: str, **arguments: Any) -> Any:
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self._qmp.send(json.dumps(message).encode() + b"\n")
        while True:
            reply = json.loads(self._qmp.readline(60))
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                raise VMError(f"QMP {command} {arguments}: {reply['error']}")
            elif "return" in reply:
                return reply["return"]

    def wait_event(self, name: str, *, timeout: float = 30, **data: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["event"] == name and all(event.get("data", {}).get(k) == v
                                                  for k, v in data.items()):
                    self.events.remove(event)
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise VMError(f"no QMP event {name} {data} within {timeout}s")
            try:
                reply = json.loads(self._qmp.readline(left))
            except TimeoutError:
                continue
            if "event" in reply:
                self.events.append(reply)

    def plug_usb(self, ident: str, image: Path, *, removable: bool = True,
                 serial: str | None = None) -> None:
        """Insert IMAGE as a USB mass-storage device on the xhci controller."""
        self.qmp("blockdev-add", **{"node-name": ident, "driver": "raw",
                                    "file": {"driver": "file", "filename": str(image)}})
        props: dict[str, Any] = {"driver": "usb-storage", "id": ident, "bus": "xhci.0",
                                 "drive": ident, "removable": removable}
        if serial:
            props["serial"] = serial
        self.qmp("device_add", **props)

    def plug_virtio(self, ident: str, image: Path) -> None:
        """Hot-plug IMAGE as a (non-removable) virtio disk."""
        self.qmp("blockdev-add", **{"node-name": ident, "driver": "raw",
                                    "file": {"driver": "file", "filename": str(image)}})
        self.qmp("device_add", driver="virtio-blk-pci", id=ident, drive=ident)

    def unplug(self, ident: str, *, timeout: float = 30) -> None:
        """Pull the device out; returns once qemu has let go of it (DEVICE_DELETED)."""
        self.qmp("device_del", id=ident)
        self.wait_event("DEVICE_DELETED", timeout=timeout, device=ident)
        self.qmp("blockdev-del", **{"node-name": ident})
