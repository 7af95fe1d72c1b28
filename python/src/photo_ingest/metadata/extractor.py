"""Reading files with exiftool: one persistent process per worker, many files per call.

pyexiftool keeps exiftool running in `-stay_open` batch mode, so a batch of files costs one
round trip and no process start. The output is exiftool's JSON text, kept as text: DuckDB
parses it (photo_ingest.metadata.normalise), Python never builds per-tag objects.

A file that crashes exiftool or makes it hang must not take its batch down with it, nor stall
the job: the batch is then re-read one file per call (same persistent process, restarted as
needed) so only the culprit is recorded as failed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import select
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import exiftool
import exiftool.exiftool as _pyexiftool

log = logging.getLogger(__name__)

# Bump when the arguments or the config below change what exiftool reports: every file is
# read again. (A change in how the output is interpreted bumps normalise.NORMALISER_VERSION
# instead, which re-uses the stored output.)
EXTRACTOR_VERSION = 1

# (No "-charset filename=utf8": that converts names on Windows only, and costs time here.
# Library paths are UTF-8, passed and printed back byte for byte.)
COMMON_ARGS = [
    "-json", "-n", "-G",                 # numbers as numbers, family-0 group names kept
    "-api", "LargeFileSupport=1",        # videos over 2 GB: read the atoms past the 2 GB mark
]
CONFIG = resources.files(__package__).joinpath("exiftool.config")

_ERROR_LINE = re.compile(r"^Error: (.*?) - (.*)$")
_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


class ExifToolUnavailable(RuntimeError):
    """exiftool cannot be started (not installed, wrong path, too old)."""


class _Died(Exception):
    """exiftool closed its output: it crashed (or was killed)."""


class _Silent(Exception):
    """exiftool printed nothing for longer than the timeout: it hangs on a file."""


@dataclass
class Reading:
    """What exiftool said about one batch."""

    json_text: str                                  # a JSON array, one object per file read
    names: dict[str, str]                           # name given to exiftool -> library path
    failures: dict[str, str] = field(default_factory=dict)  # library path -> why nothing came


class ExifReader:
    """One exiftool process; `read` takes a whole batch of files per call."""

    def __init__(self, executable: str = "exiftool", timeout: float = 120.0) -> None:
        _install_reader()
        self.timeout = timeout
        try:
            self._et = exiftool.ExifTool(executable=executable, common_args=COMMON_ARGS,
                                         config_file=str(CONFIG), encoding="utf-8")
        except FileNotFoundError as exc:  # pyexiftool looks the executable up right away
            raise ExifToolUnavailable(f"cannot start exiftool ({executable}): {exc}") from exc
        self._et.block_size = 1 << 16
        self._aliases: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> ExifReader:
        try:
            self._et.run()
        except (OSError, RuntimeError, exiftool.exceptions.ExifToolException) as exc:
            raise ExifToolUnavailable(f"cannot start exiftool ({self._et.executable}): "
                                      f"{exc}") from exc
        return self

    @property
    def version(self) -> str:
        return str(self._et.version)

    def close(self) -> None:
        with warnings.catch_warnings():  # pyexiftool warns when the process already died
            warnings.simplefilter("ignore")
            if self._et.running:
                self._et.terminate(timeout=2)
        if self._aliases is not None:
            self._aliases.cleanup()
            self._aliases = None

    def __enter__(self) -> ExifReader:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, paths: list[str]) -> Reading:
        """exiftool's output for PATHS (absolute); files it could not read are in failures."""
        names = {self._name_for(p): p for p in paths}
        try:
            text, stderr = self._execute(list(names))
        except (_Died, _Silent) as exc:
            log.warning("exiftool %s on a batch of %d files; reading them one by one",
                        _what(exc, self.timeout), len(paths))
            self._restart()
            return self._read_singly(names)
        return Reading(text, names, _stderr_failures(stderr, names))

    def _read_singly(self, names: dict[str, str]) -> Reading:
        texts: list[str] = []
        failures: dict[str, str] = {}
        for name, path in names.items():
            try:
                text, stderr = self._execute([name])
            except (_Died, _Silent) as exc:
                failures[path] = f"exiftool {_what(exc, self.timeout)} reading this file"
                self._restart()
                continue
            failures.update(_stderr_failures(stderr, {name: path}))
            if text.strip():
                texts.append(text.strip()[1:-1])  # the objects, without the array brackets
        return Reading("[" + ",".join(texts) + "]", names, failures)

    def _execute(self, names: list[str]) -> tuple[str, str]:
        _limits.timeout = self.timeout
        try:
            out = self._et.execute(*names, raw_bytes=True)
        finally:
            _limits.timeout = None
        err = self._et.last_stderr
        assert isinstance(out, bytes) and isinstance(err, bytes)
        # Invalid UTF-8 cannot reach PostgreSQL, nor can NUL characters (without_nul).
        return without_nul(out.decode("utf-8", "replace")), err.decode("utf-8", "replace")

    def _restart(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self._et.running:
                self._et.terminate(timeout=2)
        self.start()

    def _name_for(self, path: str) -> str:
        """PATH, or a symlink to it when a line break would break exiftool's argument
        protocol (one argument a line). The layout never makes such names; be safe anyway."""
        if "\n" not in path and "\r" not in path:
            return path
        if self._aliases is None:
            self._aliases = tempfile.TemporaryDirectory(prefix="photo-ingest-exif-")
        digest = hashlib.sha1(path.encode(), usedforsecurity=False).hexdigest()
        alias = os.path.join(self._aliases.name, digest + Path(path).suffix.replace("\n", ""))
        if not os.path.lexists(alias):
            os.symlink(path, alias)
        return alias


def without_nul(text: str) -> str:
    r"""JSON TEXT without \u0000 escapes, which PostgreSQL accepts neither in jsonb nor in
    text (an escaped backslash followed by 'u0000' is left alone)."""
    return _NUL.sub(r"\1", text) if "\\u0000" in text else text


def _stderr_failures(stderr: str, names: dict[str, str]) -> dict[str, str]:
    """'Error: File not found - NAME' lines: the files exiftool printed no object for."""
    out = {}
    for line in stderr.splitlines():
        m = _ERROR_LINE.match(line.strip())
        if m and m.group(2) in names:
            out[names[m.group(2)]] = m.group(1)
    return out


def _what(exc: Exception, timeout: float) -> str:
    return "crashed" if isinstance(exc, _Died) else f"printed nothing for {timeout:g} s"


# --- pyexiftool's reader, made safe ------------------------------------------------------
#
# pyexiftool 0.5 reads exiftool's output with select() and no timeout, and treats end of file
# as "no data yet": if exiftool dies the read loops forever at full CPU, if it hangs the read
# blocks forever. Its module-level reader is replaced by one that raises in both cases
# (the timeout applies only to calls made by ExifReader, through a thread-local setting).

class _Limits(threading.local):
    timeout: float | None = None


_limits = _Limits()
_install_lock = threading.Lock()


def _read_until(fd: int, end: bytes, block_size: int) -> bytes:
    chunks: list[bytes] = []
    tail = b""
    while not tail.strip().endswith(end):
        ready, _, _ = select.select([fd], [], [], _limits.timeout)
        if not ready:
            raise _Silent()
        data = os.read(fd, block_size)
        if not data:
            raise _Died()
        chunks.append(data)
        tail = (tail + data)[-(len(end) + 4):]  # pyexiftool's own end test: the last bytes
    return b"".join(chunks)


def _install_reader() -> None:
    with _install_lock:
        current = getattr(_pyexiftool, "_read_fd_endswith", None)
        if current is None:  # another pyexiftool: its own reader, without these guarantees
            log.warning("pyexiftool has no _read_fd_endswith; a hanging exiftool will not "
                        "be timed out")
        elif current is not _read_until:
            _pyexiftool._read_fd_endswith = _read_until
