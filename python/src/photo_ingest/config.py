"""The TOML configuration: typed, validated, with errors that name the bad key.

Every key has a default, so an empty file (or none) is a valid configuration for a
by-hand run; the NixOS module and Debian installs write /etc/photo-ingest/config.toml.
Secrets are never values in this file, only paths to files holding them.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from photo_ingest.immich.config import ImmichConfig
    from photo_ingest.mirror.config import MirrorConfig, VerifyConfig
    from photo_ingest.notify.config import NotifyConfig
    from photo_ingest.watch.config import WatchConfig

DEFAULT_PATH = Path("/etc/photo-ingest/config.toml")
ENV_VAR = "PHOTO_INGEST_CONFIG"

DEFAULT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "photo": ("jpg", "jpeg", "heic", "heif", "hif", "png", "tif", "tiff", "webp", "avif"),
    "raw": ("cr2", "cr3", "crw", "nef", "nrw", "arw", "srf", "sr2", "dng", "raf", "orf",
            "rw2", "pef", "srw", "x3f", "3fr", "iiq", "erf", "mef", "mos", "rwl"),
    "video": ("mp4", "m4v", "mov", "mts", "m2ts", "avi", "3gp", "mkv", "insv"),
    "sidecar": ("xmp", "thm"),
}


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the file."""


@dataclass(frozen=True)
class LibraryConfig:
    path: Path = Path("/var/lib/photo-ingest/library")
    layout: str = "{year}/{month}/{day}/{filename}"


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "postgresql:///photo_ingest"
    password_file: Path | None = None

    def conninfo(self) -> str:
        """The libpq connection string, with the password read from its file."""
        if self.password_file is None:
            return self.url
        password = read_secret(self.password_file, "database.password_file")
        from psycopg.conninfo import make_conninfo

        return make_conninfo(self.url, password=password)


@dataclass(frozen=True)
class IngestConfig:
    verify: str = "full"
    timezone: str | None = None
    buffer_size: int = 8 * 1024 * 1024
    exiftool: str = "exiftool"
    # seconds an ingest waits for a lost catalog connection to come back (0: fail at once)
    catalog_wait: int = 300
    extensions: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(DEFAULT_EXTENSIONS)
    )

    def zone(self) -> ZoneInfo | None:
        """The configured zone; None means the machine's local time zone."""
        return ZoneInfo(self.timezone) if self.timezone else None


NO_TIMEZONE = "none"   # metadata.timezone value: assume no zone for times without an offset
MACHINE_ZONE = ""      # MetadataConfig.zone_name() for "the machine's own zone"


@dataclass(frozen=True)
class MetadataConfig:
    """The metadata job (`photo-ingest extract`)."""

    batch_size: int = 500
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    # None: the ingest's zone (ingest.timezone, else the machine's); "none": assume no zone.
    timezone: str | None = None
    timeout: float = 120.0
    makes: dict[str, str] = field(default_factory=dict)

    def zone_name(self, ingest: IngestConfig) -> str | None:
        """The IANA zone assumed for wall-clock times without an offset: this table's, else
        the ingest's (so both stages agree), else MACHINE_ZONE; None when set to "none"."""
        if self.timezone == NO_TIMEZONE:
            return None
        return self.timezone or ingest.timezone or MACHINE_ZONE


CARD_MATCH_KINDS = ("uuid", "label", "serial")


@dataclass(frozen=True)
class CardConfig:
    """Cards given as block devices (`ingest /dev/sdb1`, the card-ingest@ unit)."""

    user: str | None = None          # the library's owner: the copy runs as this user
    eject: bool = True               # power the card off after a completed session
    require_dcim: bool = True        # a medium without DCIM/ is reported and left alone
    allow: tuple[str, ...] = ()      # "uuid:…", "label:…", "serial:…"; empty: every card
    deny: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetricsConfig:
    textfile_dir: Path | None = None  # node-exporter textfile collector folder


@dataclass(frozen=True)
class Config:
    library: LibraryConfig = LibraryConfig()
    database: DatabaseConfig = DatabaseConfig()
    ingest: IngestConfig = IngestConfig()
    metadata: MetadataConfig = MetadataConfig()
    card: CardConfig = CardConfig()
    metrics: MetricsConfig = MetricsConfig()
    immich: ImmichConfig = field(default_factory=lambda: _immich_default())
    mirrors: tuple[MirrorConfig, ...] = ()
    verify: VerifyConfig = field(default_factory=lambda: _verify_default())
    notify: NotifyConfig = field(default_factory=lambda: _notify_default())
    watch: tuple[WatchConfig, ...] = ()


CREDENTIALS = "$CREDENTIALS_DIRECTORY"


def secret_path(value: str, base: Path) -> Path:
    """A secret file's path from the config. `$CREDENTIALS_DIRECTORY/NAME` stays as written
    and is resolved when read: one config file serves several units, and systemd gives each
    unit its own credentials folder (LoadCredential=)."""
    if value.startswith(CREDENTIALS + "/"):
        return Path(value)
    return base / value


# Secrets read ahead by keep_secrets(), for a process about to give up the right to read them.
_kept: dict[str, str] = {}


def keep_secrets(cfg: Config) -> None:
    """Read every configured secret now and keep it in memory. The card unit runs its copy in
    a child that drops root, and systemd's credentials folder is readable by root only."""
    for key, path in _secret_paths(cfg):
        try:
            _kept[str(path)] = read_secret(path, key)
        except ConfigError:  # not this unit's credential: said when (and if) it is needed
            continue


def _secret_paths(cfg: Config) -> list[tuple[str, Path]]:
    found = [("database.password_file", cfg.database.password_file),
             ("immich.api_key_file", cfg.immich.api_key_file),
             ("notify.webhook_url_file", cfg.notify.webhook_url_file)]
    return [(key, path) for key, path in found if path is not None]


def read_secret(path: Path, key: str) -> str:
    """A secret from a file (a systemd credential, say), without its trailing newline."""
    text = str(path)
    if text in _kept:
        return _kept[text]
    if text.startswith(CREDENTIALS + "/"):
        folder = os.environ.get("CREDENTIALS_DIRECTORY")
        if not folder:
            raise ConfigError(f"{key}: {text} names a systemd credential, but "
                              "$CREDENTIALS_DIRECTORY is not set (run it from a unit with "
                              "LoadCredential=, or give the file's own path)")
        path = Path(folder) / text[len(CREDENTIALS) + 1:]
    try:
        return path.read_text(encoding="utf-8").rstrip("\n")
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from exc


def load(path: Path | None = None) -> Config:
    """Load --config PATH, else $PHOTO_INGEST_CONFIG, else the default file if it exists."""
    if path is None and os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR])
    if path is None:
        if not DEFAULT_PATH.exists():
            return Config()
        path = DEFAULT_PATH
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    try:
        return parse(raw, base=path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def parse(raw: dict[str, Any], base: Path = Path()) -> Config:
    _check_keys(raw, {"library", "database", "ingest", "metadata", "card", "metrics", "immich",
                      "mirror", "verify", "notify", "watch"}, "")
    lib = _table(raw, "library")
    _check_keys(lib, {"path", "layout"}, "library.")
    db = _table(raw, "database")
    _check_keys(db, {"url", "password_file"}, "database.")
    ing = _table(raw, "ingest")
    _check_keys(ing, {"verify", "timezone", "buffer_size", "exiftool", "extensions",
                      "catalog_wait"}, "ingest.")

    library = LibraryConfig(
        path=base / _get(lib, "path", str, "library.", str(LibraryConfig.path)),
        layout=_layout(_get(lib, "layout", str, "library.", LibraryConfig.layout)),
    )
    pw = _get(db, "password_file", str, "database.", None)
    database = DatabaseConfig(
        url=_get(db, "url", str, "database.", DatabaseConfig.url),
        password_file=secret_path(pw, base) if pw else None,
    )
    ingest = IngestConfig(
        verify=_choice(ing, "verify", ("full", "size"), "full"),
        timezone=_zone(_get(ing, "timezone", str, "ingest.", None)),
        buffer_size=_size(_get(ing, "buffer_size", int, "ingest.", IngestConfig.buffer_size)),
        exiftool=_get(ing, "exiftool", str, "ingest.", "exiftool"),
        extensions=_extensions(_table(ing, "extensions", "ingest.")),
        catalog_wait=_seconds(ing, "catalog_wait", IngestConfig.catalog_wait),
    )
    immich = _immich(raw, base)
    return Config(library=library, database=database, ingest=ingest,
                  metadata=_metadata(_table(raw, "metadata")),
                  card=_card(_table(raw, "card")), metrics=_metrics(_table(raw, "metrics"), base),
                  immich=immich, watch=_watch(raw, library.path, immich),
                  **_mirror_tables(raw, base, library, ingest))


def _immich(raw: dict[str, Any], base: Path) -> ImmichConfig:
    from photo_ingest.immich.config import parse_immich  # it imports this module

    return parse_immich(_table(raw, "immich"), base)


def _mirror_tables(raw: dict[str, Any], base: Path, library: LibraryConfig,
                   ingest: IngestConfig) -> dict[str, Any]:
    """[[mirror]], [verify] and [notify]: parsed by their own packages."""
    from photo_ingest.mirror.config import parse_mirrors, parse_verify
    from photo_ingest.notify.config import parse_notify

    return {"mirrors": parse_mirrors(raw.get("mirror"), library.path, ingest.verify),
            "verify": parse_verify(_table(raw, "verify")),
            "notify": parse_notify(_table(raw, "notify"), base)}


def _verify_default() -> VerifyConfig:
    from photo_ingest.mirror.config import VerifyConfig

    return VerifyConfig()


def _notify_default() -> NotifyConfig:
    from photo_ingest.notify.config import NotifyConfig

    return NotifyConfig()


def _watch(raw: dict[str, Any], library: Path, immich: ImmichConfig,
           ) -> tuple[WatchConfig, ...]:
    from photo_ingest.watch.config import check_library, parse_watches

    watches = parse_watches(raw.get("watch", []))
    check_library(watches, library)
    for i, w in enumerate(watches, 1):
        if w.wait_for_immich and not immich.enabled:
            raise ConfigError(f"watch[{i}].wait_for_immich: Immich is not configured "
                              "(set immich.url), so the files would wait for ever")
    return watches


def _immich_default() -> ImmichConfig:
    from photo_ingest.immich.config import ImmichConfig

    return ImmichConfig()


def _card(table: dict[str, Any]) -> CardConfig:
    _check_keys(table, {"user", "eject", "require_dcim", "allow", "deny"}, "card.")
    lists = {}
    for key in ("allow", "deny"):
        items = _get(table, key, list, "card.", [])
        for item in items:
            kind, _, value = str(item).partition(":")
            if kind not in CARD_MATCH_KINDS or not value:
                raise ConfigError(f"card.{key}: {item!r} must look like uuid:…, label:… or "
                                  "serial:…")
        lists[key] = tuple(items)
    return CardConfig(
        user=_get(table, "user", str, "card.", None),
        eject=_get(table, "eject", bool, "card.", True),
        require_dcim=_get(table, "require_dcim", bool, "card.", True),
        **lists,
    )


def _metrics(table: dict[str, Any], base: Path) -> MetricsConfig:
    _check_keys(table, {"textfile_dir"}, "metrics.")
    directory = _get(table, "textfile_dir", str, "metrics.", None)
    return MetricsConfig(textfile_dir=base / directory if directory else None)


def _check_keys(table: dict[str, Any], allowed: set[str], prefix: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]} (allowed here: {', '.join(sorted(allowed))})"
        )


def _table(raw: dict[str, Any], key: str, prefix: str = "") -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{prefix}{key}: must be a table, got {type(value).__name__}")
    return value


def _get(table: dict[str, Any], key: str, kind: type, prefix: str, default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(
            f"{prefix}{key}: must be {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _seconds(table: dict[str, Any], key: str, default: int) -> int:
    value: int = _get(table, key, int, "ingest.", default)
    if not 0 <= value <= 86400:
        raise ConfigError(f"ingest.{key}: must be between 0 and 86400 seconds, got {value}")
    return value


def _choice(table: dict[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value: str = _get(table, key, str, "ingest.", default)
    if value not in choices:
        raise ConfigError(f"ingest.{key}: must be one of {', '.join(choices)}; got {value!r}")
    return value


def _zone(name: str | None, key: str = "ingest.timezone") -> str | None:
    if name is None:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{key}: unknown time zone {name!r}") from exc
    return name


def _size(value: int) -> int:
    if not 64 * 1024 <= value <= 256 * 1024 * 1024:
        raise ConfigError(f"ingest.buffer_size: must be between 65536 and 268435456, got {value}")
    return value


def _layout(template: str) -> str:
    from photo_ingest.ingest.layout import check_template

    try:
        check_template(template)
    except ValueError as exc:
        raise ConfigError(f"library.layout: {exc}") from exc
    return template


def _extensions(table: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    _check_keys(table, set(DEFAULT_EXTENSIONS), "ingest.extensions.")
    result = dict(DEFAULT_EXTENSIONS)
    for kind, exts in table.items():
        if not isinstance(exts, list) or not all(isinstance(e, str) and e for e in exts):
            raise ConfigError(f"ingest.extensions.{kind}: must be a list of non-empty strings")
        result[kind] = tuple(e.lower().lstrip(".") for e in exts)
    seen: dict[str, str] = {}
    for kind, exts in result.items():
        for ext in exts:
            if ext in seen and seen[ext] != kind:
                mine, other = (kind, seen[ext]) if kind in table else (seen[ext], kind)
                raise ConfigError(
                    f"ingest.extensions.{mine}: .{ext} is already listed under {other}; "
                    f"to move it, also set ingest.extensions.{other} without it")
            seen[ext] = kind
    return result


def _metadata(table: dict[str, Any]) -> MetadataConfig:
    _check_keys(table, {"batch_size", "workers", "timezone", "timeout", "makes"}, "metadata.")
    default = MetadataConfig()
    zone = _get(table, "timezone", str, "metadata.", None)
    timeout = table.get("timeout", default.timeout)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise ConfigError(f"metadata.timeout: must be a number of seconds, got "
                          f"{type(timeout).__name__} {timeout!r}")
    return MetadataConfig(
        batch_size=_int_range(table, "batch_size", 1, 10_000, default.batch_size),
        workers=_int_range(table, "workers", 1, 256, default.workers),
        timezone=zone if zone == NO_TIMEZONE else _zone(zone, "metadata.timezone"),
        timeout=_positive(float(timeout), "metadata.timeout"),
        makes=_makes(_table(table, "makes", "metadata.")),
    )


def _int_range(table: dict[str, Any], key: str, low: int, high: int, default: int) -> int:
    value: int = _get(table, key, int, "metadata.", default)
    if not low <= value <= high:
        raise ConfigError(f"metadata.{key}: must be between {low} and {high}, got {value}")
    return value


def _positive(value: float, key: str) -> float:
    if not value > 0:
        raise ConfigError(f"{key}: must be a positive number of seconds, got {value}")
    return value


def _makes(table: dict[str, Any]) -> dict[str, str]:
    """Camera make as written by the camera -> as users call it (matched case-insensitively)."""
    for raw, name in table.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"metadata.makes.{raw}: must be a non-empty string")
    return {raw.strip().upper(): name.strip() for raw, name in table.items()}
