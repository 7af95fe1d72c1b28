"""What every command shares at its edges: exit codes (as docs/operations.md lists them) and
argument types."""

import argparse

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
