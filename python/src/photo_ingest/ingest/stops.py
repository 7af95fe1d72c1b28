"""Stop signals: the exception they raise and a way to hold them while a step must end whole.

The unit's SIGTERM (a pulled card, `systemctl stop`) is turned into `Stopped` in the main
thread, wherever it happens to be. Some steps must not be cut in half by it: recording a
session's end, or shutting down exiftool (cut mid-shutdown, pyexiftool's finaliser tries
the shutdown again and fails with a traceback).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Stopped(BaseException):
    """A signal asked us to stop (SIGTERM when the card is pulled or the unit stops)."""


# SIGINT too: a Ctrl-C at the wrong instant must not cut those steps in half either.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP raise Stopped in the main thread (the ingest and mirror commands;
    Ctrl-C stays KeyboardInterrupt)."""
    def stop(signum: int, _frame: FrameType | None) -> None:
        raise Stopped(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


@contextlib.contextmanager
def stops_deferred(*, honoured: bool = False) -> Iterator[None]:
    """Hold a stop signal until the block is done. It is then handed on, unless HONOURED:
    the block was itself the answer to that stop (a session recorded as interrupted).
    Outside the main thread signals are not delivered anyway, so nothing is changed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[signal.Signals] = []
    before = {s: signal.signal(s, lambda signum, _frame: held.append(signal.Signals(signum)))
              for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        if held and not honoured:
            handler = before[held[0]]
            if callable(handler):
                handler(held[0], None)
