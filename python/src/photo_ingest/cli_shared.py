"""What every command shares at its edges: exit codes (as docs/operations.md lists them),
argument types and --json output."""

import argparse
import json
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

EXIT_OK = 0           # done; nothing failed
EXIT_FAILED = 1       # ran, and something failed (files, a scrub's findings, a mirror behind)
EXIT_USAGE = 2        # a wrong command line or configuration
EXIT_UNAVAILABLE = 3  # could not start: catalog, library, exiftool or Immich unreachable


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    return _whole(text, 1, "must be a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return _whole(text, 0, "must be a whole number >= 0")


def _whole(text: str, minimum: int, rule: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{rule}, got {text!r}")
    return value


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=_json_default)
    sys.stdout.write("\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
