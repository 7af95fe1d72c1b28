"""What a notification says, independent of where it goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The config's `events` names the kinds a person subscribes to; a recovery belongs to its
# stall, a test message is always sent.
EVENT_CLASS = {"success": "success", "partial": "partial", "failure": "failure",
               "stall": "stall", "recovered": "stall"}


@dataclass(frozen=True)
class Message:
    event: str                      # success | partial | failure | stall | recovered | test
    title: str
    body: str
    priority: int = 3               # 1 (min) … 5 (urgent), ntfy's scale
    tags: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)  # structured fields (json format)
