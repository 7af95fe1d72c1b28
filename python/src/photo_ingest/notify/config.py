"""The `[notify]` table: where notifications go, in which format, for which events.

    [notify]
    webhook_url_file = "$CREDENTIALS_DIRECTORY/notify-webhook-url"   # the URL is a secret
    format = "json"              # json | ntfy | slack
    events = ["success", "partial", "failure", "stall"]
    stall_minutes = 60
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = ("json", "ntfy", "slack")
# "failure" covers failed and interrupted sessions (the card stays in the reader either
# way); "stall" covers a backlog that stalls and its recovery.
EVENTS = ("success", "partial", "failure", "stall")


@dataclass(frozen=True)
class NotifyConfig:
    webhook_url_file: Path | None = None   # None: notifications are off
    format: str = "json"
    events: tuple[str, ...] = EVENTS
    stall_minutes: int = 60

    @property
    def enabled(self) -> bool:
        return self.webhook_url_file is not None

    def webhook_url(self) -> str:
        from photo_ingest.config import ConfigError, read_secret

        if self.webhook_url_file is None:
            raise ConfigError("notify.webhook_url_file: not set")
        url = read_secret(self.webhook_url_file, "notify.webhook_url_file").strip()
        if not url.startswith(("http://", "https://")):
            # Never echo the value: it is a secret (an ntfy topic, a webhook id).
            raise ConfigError(f"notify.webhook_url_file: {self.webhook_url_file} does not "
                              "hold an http:// or https:// URL")
        return url


def parse_notify(table: dict[str, Any], base: Path) -> NotifyConfig:
    from photo_ingest.config import ConfigError, secret_path

    allowed = {"webhook_url_file", "format", "events", "stall_minutes"}
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"unknown key notify.{unknown[0]} (allowed here: "
                          f"{', '.join(sorted(allowed))})")
    url_file = table.get("webhook_url_file")
    if url_file is not None and (not isinstance(url_file, str) or not url_file):
        raise ConfigError("notify.webhook_url_file: must be a non-empty string (a file "
                          "holding the URL)")
    fmt = table.get("format", "json")
    if fmt not in FORMATS:
        raise ConfigError(f"notify.format: must be one of {', '.join(FORMATS)}; got {fmt!r}")
    events = table.get("events", list(EVENTS))
    if not isinstance(events, list) or any(e not in EVENTS for e in events):
        raise ConfigError(f"notify.events: must be a list of {', '.join(EVENTS)}; "
                          f"got {events!r}")
    stall = table.get("stall_minutes", 60)
    if not isinstance(stall, int) or isinstance(stall, bool) or stall < 1:
        raise ConfigError(f"notify.stall_minutes: must be a whole number >= 1, got {stall!r}")
    return NotifyConfig(
        webhook_url_file=secret_path(url_file, base) if url_file else None,
        format=fmt, events=tuple(events), stall_minutes=stall)
