"""The `[[watch]]` tables of the configuration file: one per watched folder.

    [[watch]]
    path = "/srv/inbox/phone"          # required, absolute
    name = "phone"                     # default: the folder's last component; unique
    stable_seconds = 10                # size and mtime unchanged this long
    after = "leave"                    # leave | archive | delete
    archive_dir = "/srv/inbox/done"    # required when after = "archive"
    wait_for_immich = false            # archive/delete only once Immich has the asset

Errors name the table by its position, like the rest of the configuration:
`watch[2].after: must be one of leave, archive, delete; got 'move'`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# photo_ingest.config imports this module for its Config.watch field, so what this module
# needs from there is imported inside the functions (no import cycle at start-up).

POLICIES = ("leave", "archive", "delete")
_KEYS = {"path", "name", "stable_seconds", "after", "archive_dir", "wait_for_immich"}


@dataclass(frozen=True)
class WatchConfig:
    path: Path
    name: str
    stable_seconds: float = 10.0
    after: str = "leave"
    archive_dir: Path | None = None
    wait_for_immich: bool = False


def parse_watches(value: Any) -> tuple[WatchConfig, ...]:
    """The `watch` array of tables (from tomllib) -> one WatchConfig per folder."""
    from photo_ingest.config import ConfigError

    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError("watch: must be an array of tables ([[watch]] ...), got "
                          f"{type(value).__name__}")
    watches = tuple(_one(table, f"watch[{i}].") for i, table in enumerate(value, 1))
    check_distinct(watches, "watch")
    return watches


def check_distinct(watches: tuple[WatchConfig, ...], where: str) -> None:
    """Names unique; no folder inside another (a file would belong to two watches)."""
    from photo_ingest.config import ConfigError

    names: dict[str, int] = {}
    for i, w in enumerate(watches, 1):
        if w.name in names:
            raise ConfigError(f"{where}[{i}].name: {w.name!r} is already the name of "
                              f"{where}[{names[w.name]}] (names must be unique)")
        names[w.name] = i
        for j, other in enumerate(watches[:i - 1], 1):
            if inside(w.path, other.path) or inside(other.path, w.path):
                raise ConfigError(f"{where}[{i}].path: {w.path} overlaps {where}[{j}].path "
                                  f"{other.path} (a file may belong to one watch only)")


def check_library(watches: tuple[WatchConfig, ...], library: Path) -> None:
    """A watched folder holding the library would ingest the library into itself."""
    from photo_ingest.config import ConfigError

    lib = Path(os.path.abspath(library))
    for i, w in enumerate(watches, 1):
        if inside(lib, w.path) or inside(w.path, lib):
            raise ConfigError(f"watch[{i}].path: {w.path} overlaps the library {lib}")
        if w.archive_dir is not None and (inside(w.archive_dir, lib) or
                                          inside(lib, w.archive_dir)):
            raise ConfigError(f"watch[{i}].archive_dir: {w.archive_dir} overlaps the "
                              f"library {lib}")


def inside(path: Path, folder: Path) -> bool:
    """PATH is FOLDER or below it."""
    return path == folder or folder in path.parents


def _one(table: dict[str, Any], prefix: str) -> WatchConfig:
    from photo_ingest.config import ConfigError

    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} "
                          f"(allowed here: {', '.join(sorted(_KEYS))})")
    if "path" not in table:
        raise ConfigError(f"{prefix}path: required (the folder to watch)")
    path = _absolute(table["path"], prefix + "path")
    name = table.get("name", path.name)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{prefix}name: must be a non-empty string, got {name!r}")
    stable = table.get("stable_seconds", WatchConfig.stable_seconds)
    if isinstance(stable, bool) or not isinstance(stable, int | float) or \
            not 0 < stable <= 86400:
        raise ConfigError(f"{prefix}stable_seconds: must be a number of seconds above 0 "
                          f"and at most 86400, got {stable!r}")
    after = table.get("after", "leave")
    if after not in POLICIES:
        raise ConfigError(f"{prefix}after: must be one of {', '.join(POLICIES)}; "
                          f"got {after!r}")
    archive = table.get("archive_dir")
    if after == "archive" and archive is None:
        raise ConfigError(f"{prefix}archive_dir: required when after = \"archive\"")
    if archive is not None and after != "archive":
        raise ConfigError(f"{prefix}archive_dir: only used with after = \"archive\"")
    archive_dir = _absolute(archive, prefix + "archive_dir") if archive is not None else None
    if archive_dir is not None and inside(path, archive_dir):
        raise ConfigError(f"{prefix}archive_dir: {archive_dir} holds the watched folder")
    wait = table.get("wait_for_immich", False)
    if not isinstance(wait, bool):
        raise ConfigError(f"{prefix}wait_for_immich: must be true or false, got {wait!r}")
    if wait and after == "leave":
        raise ConfigError(f"{prefix}wait_for_immich: only used with after = \"archive\" "
                          "or \"delete\"")
    return WatchConfig(path=path, name=name.strip(), stable_seconds=float(stable),
                       after=after, archive_dir=archive_dir, wait_for_immich=wait)


def _absolute(value: Any, key: str) -> Path:
    from photo_ingest.config import ConfigError

    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"{key}: must be an absolute path, got {value!r}")
    return Path(os.path.normpath(value))
