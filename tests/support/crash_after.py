"""Run the photo-ingest CLI, killing it with SIGKILL right after the Nth call of a
function returns: `python crash_after.py MODULE.FUNCTION N -- photo-ingest arguments`.

The crash tests use it to stop the watcher between two steps of its after-step, exactly
where a power cut could; the process really dies (no cleanup, no finally blocks)."""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any


def main() -> None:
    target, count, *argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    module_name, name = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    real = getattr(module, name)
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        result = real(*args, **kwargs)
        calls += 1
        if calls == int(count):
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(module, name, wrapper)
    from photo_ingest.cli import main as cli_main

    sys.exit(cli_main(argv))


if __name__ == "__main__":
    main()
