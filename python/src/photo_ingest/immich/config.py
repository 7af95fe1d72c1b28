"""The `[immich]` table of the configuration file: where Immich is and how to sync to it.

Without `immich.url` sync is off: `photo-ingest sync` says so and exits, `status` shows
"not configured". The API key is never a value here, only the file that holds it (a
systemd credential). Errors name the key, like the rest of the configuration:

    immich.workers: must be between 1 and 64, got 0
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# photo_ingest.config imports this module for its Config.immich field, so what this module
# needs from there is imported inside the functions (no import cycle at start-up).

MODES = ("upload", "library")
DEFAULT_METRICS = "127.0.0.1:9467"


@dataclass(frozen=True)
class ImmichConfig:
    url: str | None = None               # None: sync is not configured
    api_key_file: Path | None = None
    mode: str = "upload"                 # upload | library (Immich reads the library in place)
    album: str | None = None             # album name template; None: no albums
    workers: int = 4                     # concurrent uploads
    timeout: float = 60.0                # seconds per API request (uploads add size/rate)
    min_upload_rate: int = 256 * 1024    # bytes/s an upload may not fall below
    retries: int = 4                     # retries of one request (timeouts, resets, 5xx)
    max_attempts: int = 5                # passes that may fail an asset before it is failed
    retry_delay: float = 30.0            # first delay after such a pass; doubles, max 1 h
    interval: float = 300.0              # seconds between periodic passes of the service
    lease: float = 300.0                 # seconds a claimed asset stays claimed (renewed)
    stop_timeout: float = 30.0           # SIGTERM: wait this long for uploads in flight
    metrics_listen: str = DEFAULT_METRICS  # host:port of /metrics ("" = off); service only
    ca_file: Path | None = None          # extra CA bundle for a self-signed Immich
    library_path: str | None = None      # library mode: the library as Immich sees it
    library_name: str = "photo-ingest"
    scan_delay: float = 30.0             # library mode: quiet seconds before a scan

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def api_key(self) -> str:
        """The key, read from its file now (so a rotated credential is picked up)."""
        from photo_ingest.config import ConfigError, read_secret

        if self.api_key_file is None:
            raise ConfigError("immich.api_key_file: not set")
        key = read_secret(self.api_key_file, "immich.api_key_file").strip()
        if not key:
            raise ConfigError(f"immich.api_key_file: {self.api_key_file} is empty")
        return key

    def metrics_address(self) -> tuple[str, int] | None:
        if not self.metrics_listen:
            return None
        host, _, port = self.metrics_listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)


_KEYS = {
    "url", "api_key_file", "mode", "album", "workers", "timeout", "min_upload_rate",
    "retries", "max_attempts", "retry_delay", "interval", "lease", "stop_timeout", "metrics_listen",
    "ca_file", "library_path", "library_name", "scan_delay",
}


def parse_immich(table: dict[str, Any], base: Path = Path()) -> ImmichConfig:
    """The `[immich]` table (a dict from tomllib) -> ImmichConfig; relative paths are
    relative to BASE (the config file's folder)."""
    from photo_ingest.config import ConfigError

    if not isinstance(table, dict):
        raise ConfigError(f"immich: must be a table, got {type(table).__name__}")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"unknown key immich.{unknown[0]} "
                          f"(allowed here: {', '.join(sorted(_KEYS))})")
    from photo_ingest.config import secret_path

    d = ImmichConfig()
    url = _get(table, "url", str, None)
    if url is not None:
        url = _url(url)
    key_file = _get(table, "api_key_file", str, None)
    if url is not None and not key_file:
        raise ConfigError("immich.api_key_file: required when immich.url is set "
                          "(a file holding the API key, e.g. a systemd credential)")
    mode = _get(table, "mode", str, d.mode)
    if mode not in MODES:
        raise ConfigError(f"immich.mode: must be one of {', '.join(MODES)}; got {mode!r}")
    album = _get(table, "album", str, "")
    ca = _get(table, "ca_file", str, None)
    metrics = _get(table, "metrics_listen", str, d.metrics_listen).strip()
    if metrics:
        _listen(metrics)
    library_path = _get(table, "library_path", str, None)
    if library_path is not None and not library_path.startswith("/"):
        raise ConfigError("immich.library_path: must be an absolute path (the library "
                          f"as the Immich server sees it), got {library_path!r}")
    name = _get(table, "library_name", str, d.library_name).strip()
    if not name:
        raise ConfigError("immich.library_name: must not be empty")
    return ImmichConfig(
        url=url,
        api_key_file=secret_path(key_file, base) if key_file else None,
        mode=mode,
        album=check_album_template(album) if album.strip() else None,
        workers=_int(table, "workers", 1, 64, d.workers),
        timeout=_seconds(table, "timeout", d.timeout),
        min_upload_rate=_int(table, "min_upload_rate", 1024, 1 << 40, d.min_upload_rate),
        retries=_int(table, "retries", 0, 20, d.retries),
        max_attempts=_int(table, "max_attempts", 1, 1000, d.max_attempts),
        retry_delay=_seconds(table, "retry_delay", d.retry_delay, minimum=0.0),
        interval=_seconds(table, "interval", d.interval),
        lease=_seconds(table, "lease", d.lease, minimum=1.0),
        stop_timeout=_seconds(table, "stop_timeout", d.stop_timeout, minimum=0.0),
        metrics_listen=metrics,
        ca_file=base / ca if ca else None,
        library_path=library_path,
        library_name=name,
        scan_delay=_seconds(table, "scan_delay", d.scan_delay, minimum=0.0),
    )


ALBUM_TOKENS = ("year", "month", "day", "hour", "minute", "second", "date", "filename",
                "stem", "ext", "make", "model", "camera", "media_type", "card_label",
                "session")


def check_album_template(template: str) -> str:
    """The template if it is usable, else ConfigError naming immich.album."""
    from photo_ingest.config import ConfigError
    from photo_ingest.immich.albums import example_album

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"immich.album: {exc}") from exc
    for field in fields:
        if field not in ALBUM_TOKENS:
            raise ConfigError(f"immich.album: unknown token {{{field}}}; known: "
                              f"{', '.join(ALBUM_TOKENS)}")
    try:
        example_album(template)
    except (ValueError, KeyError, IndexError) as exc:
        raise ConfigError(f"immich.album: cannot be rendered: {exc}") from exc
    return template


def _error(message: str) -> Exception:
    from photo_ingest.config import ConfigError

    return ConfigError(message)


def _get(table: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _error(f"immich.{key}: must be {kind.__name__}, got "
                          f"{type(value).__name__} {value!r}")
    return value


def _int(table: dict[str, Any], key: str, low: int, high: int, default: int) -> int:
    value: int = _get(table, key, int, default)
    if not low <= value <= high:
        raise _error(f"immich.{key}: must be between {low} and {high}, got {value}")
    return value


def _seconds(table: dict[str, Any], key: str, default: float, minimum: float = 0.001) -> float:
    value = table.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _error(f"immich.{key}: must be a number of seconds, got "
                          f"{type(value).__name__} {value!r}")
    if value < minimum or value != value or value == float("inf"):
        raise _error(f"immich.{key}: must be at least {minimum:g} seconds, got {value}")
    return float(value)


def _url(url: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _error("immich.url: must be an http:// or https:// URL such as "
                          f"https://photos.example.org (with or without /api), got {url!r}")
    if parts.query or parts.fragment:
        raise _error(f"immich.url: must not have a query or fragment, got {url!r}")
    if parts.username or parts.password:
        raise _error("immich.url: must not contain credentials; put the API key in "
                          "immich.api_key_file")
    return url.rstrip("/")


def _listen(value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise _error(f"immich.metrics_listen: must be HOST:PORT such as {DEFAULT_METRICS}"
                          f" (or \"\" to turn /metrics off), got {value!r}")
    del host
