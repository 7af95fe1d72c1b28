"""How a run speaks: a progress bar on a terminal, quiet structured lines under systemd."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import ClassVar, TextIO

from photo_ingest.ingest.publish import Outcome

log = logging.getLogger("photo_ingest")


def under_journald(stream: TextIO = sys.stderr) -> bool:
    """True when STREAM is connected to the journal (systemd sets JOURNAL_STREAM=dev:ino)."""
    want = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


class _JournalFormatter(logging.Formatter):
    """`<N>message`: journald reads the priority prefix and adds its own timestamps."""

    PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if under_journald():
        handler.setFormatter(_JournalFormatter("%(message)s"))
    elif sys.stderr.isatty():
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class IngestReporter:
    """Progress for one ingest: a bar redrawn on a terminal, or periodic log lines."""

    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None,
                 log_every: float = 10.0, status: Callable[[str], None] | None = None) -> None:
        self.stream = stream or sys.stderr  # looked up now: sys.stderr may be replaced
        self.status = status  # e.g. sd_notify STATUS=, for `systemctl status`
        self.last_status = 0.0
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.log_every = log_every
        self.files = self.total_bytes = self.done_files = self.done_bytes = 0
        self.started = self.last_draw = time.monotonic()

    def start(self, files: int, total_bytes: int) -> None:
        self.files, self.total_bytes = files, total_bytes
        self.started = time.monotonic()
        log.info("ingesting %d files, %s", files, human_bytes(total_bytes))

    def advance(self, nbytes: int) -> None:
        self.done_bytes += nbytes
        self._maybe_draw()

    def file_done(self, outcome: Outcome) -> None:
        if outcome.outcome == "failed":
            self._clear()
            log.warning("failed: %s: %s", outcome.relpath, outcome.reason)
        elif outcome.outcome in ("copied", "duplicate"):
            self.done_files += 1
            log.debug("%s: %s -> %s", outcome.outcome, outcome.relpath, outcome.library_path)
        self._maybe_draw()

    def close(self) -> None:
        self._clear()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done_bytes / elapsed
        left = max(self.total_bytes - self.done_bytes, 0)
        eta = f"{left / rate:,.0f}s" if rate > 0 else "?"
        return (f"{self.done_files}/{self.files} files  {human_bytes(self.done_bytes)}"
                f"/{human_bytes(self.total_bytes)}  {human_bytes(rate)}/s  ETA {eta}")

    def _maybe_draw(self) -> None:
        now = time.monotonic()
        if self.status and now - self.last_status >= 1.0:
            self.status(f"ingesting: {self.line()}")
            self.last_status = now
        if self.interactive and now - self.last_draw >= 0.1:
            frac = min(self.done_bytes / self.total_bytes, 1.0) if self.total_bytes else 1.0
            bar = "#" * int(frac * 30)
            self.stream.write(f"\r[{bar:<30}] {frac:4.0%}  {self.line()}\x1b[K")
            self.stream.flush()
            self.last_draw = now
        elif not self.interactive and now - self.last_draw >= self.log_every:
            log.info("progress: %s", self.line())
            self.last_draw = now

    def _clear(self) -> None:
        if self.interactive:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
