"""The `[[mirror]]` tables and the `[verify]` table of the configuration file.

    [[mirror]]
    name = "nas"                 # [a-z0-9_-], unique; "library" is the library itself
    path = "/mnt/nas/photos"     # absolute
    required = true              # the card is ejected only when this mirror has every file
    verify = "full"              # full | size; default: ingest.verify
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAME = re.compile(r"^[a-z0-9_-]{1,64}$")
LIBRARY = "library"  # `verify --destination library`: the library, not a mirror


@dataclass(frozen=True)
class MirrorConfig:
    name: str
    path: Path
    required: bool = True
    verify: str = "full"


@dataclass(frozen=True)
class VerifyConfig:
    sample: int = 0  # files per destination and scrub run; 0: all of them


def parse_mirrors(raw: Any, library: Path, default_verify: str) -> tuple[MirrorConfig, ...]:
    from photo_ingest.config import ConfigError

    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("mirror: must be an array of tables ([[mirror]]), got "
                          f"{type(raw).__name__}")
    mirrors: list[MirrorConfig] = []
    for i, table in enumerate(raw):
        where = f"mirror[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table, got {type(table).__name__}")
        mirrors.append(_mirror(table, where, library, default_verify))
        if mirrors[-1].name in {m.name for m in mirrors[:-1]}:
            raise ConfigError(f"{where}.name: {mirrors[-1].name!r} is used by another mirror")
        if mirrors[-1].path in {m.path for m in mirrors[:-1]}:
            raise ConfigError(f"{where}.path: {mirrors[-1].path} is used by another mirror")
    return tuple(mirrors)


def _mirror(table: dict[str, Any], where: str, library: Path, default_verify: str
            ) -> MirrorConfig:
    from photo_ingest.config import ConfigError

    allowed = {"name", "path", "required", "verify"}
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]} (allowed here: "
                          f"{', '.join(sorted(allowed))})")
    for key in ("name", "path"):
        if key not in table:
            raise ConfigError(f"{where}.{key}: required")
    name = _typed(table, "name", str, where)
    if not NAME.match(name) or name == LIBRARY:
        raise ConfigError(f"{where}.name: must be 1-64 of a-z 0-9 _ - and not "
                          f"{LIBRARY!r}, got {name!r}")
    path = Path(_typed(table, "path", str, where))
    if not path.is_absolute():
        raise ConfigError(f"{where}.path: must be an absolute path, got {str(path)!r}")
    lib = library.absolute()
    if path == lib or lib in path.parents or path in lib.parents:
        raise ConfigError(f"{where}.path: {path} overlaps the library {lib}; a mirror "
                          "must be a separate folder (on a separate disk, ideally)")
    verify = table.get("verify", default_verify)
    if verify not in ("full", "size"):
        raise ConfigError(f"{where}.verify: must be one of full, size; got {verify!r}")
    required = table.get("required", True)
    if not isinstance(required, bool):
        raise ConfigError(f"{where}.required: must be bool, got {type(required).__name__}")
    return MirrorConfig(name=name, path=path, required=required, verify=verify)


def parse_verify(table: dict[str, Any]) -> VerifyConfig:
    from photo_ingest.config import ConfigError

    unknown = sorted(set(table) - {"sample"})
    if unknown:
        raise ConfigError(f"unknown key verify.{unknown[0]} (allowed here: sample)")
    sample = table.get("sample", 0)
    if not isinstance(sample, int) or isinstance(sample, bool) or sample < 0:
        raise ConfigError(f"verify.sample: must be a whole number >= 0 (0: every file), "
                          f"got {sample!r}")
    return VerifyConfig(sample=sample)


def _typed(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    from photo_ingest.config import ConfigError

    value = table[key]
    if not isinstance(value, kind):
        raise ConfigError(f"{where}.{key}: must be {kind.__name__}, got "
                          f"{type(value).__name__} {value!r}")
    return value
