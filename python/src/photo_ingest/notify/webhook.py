"""The webhook sender: one HTTP POST per message through aiohttp, in one of three shapes.

* `json`: `{"event", "title", "message", "priority", "tags", …structured fields}` - for
  Home Assistant webhooks, Gotify-style JSON endpoints, anything generic;
* `ntfy`: the text as body, with `Title`, `Priority` and `Tags` headers (a non-ASCII title
  is sent as an RFC 2047 encoded word, which ntfy decodes);
* `slack`: `{"text": …}` - Slack, Mattermost, Discord's /slack endpoints, Rocket.Chat.

Timeouts, connection errors, 5xx and 429 are retried with exponential backoff and jitter;
any other 4xx is not (the request itself is wrong: retrying cannot help).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from email.header import Header
from typing import Any, Protocol

import aiohttp

from photo_ingest.notify.message import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None


class Sender(Protocol):
    """Anything that can deliver a message (the webhook; MQTT could be another)."""

    async def send(self, message: Message) -> Delivery: ...


class WebhookSender:
    def __init__(self, url: str, fmt: str = "json", *, timeout: float = 10.0,
                 attempts: int = 4, base_delay: float = 1.0, max_delay: float = 20.0) -> None:
        self.url = url
        self.fmt = fmt
        self.timeout = timeout
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay

    async def send(self, message: Message) -> Delivery:
        body, headers = render(message, self.fmt)
        status, error = None, None
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for attempt in range(1, self.attempts + 1):
                status, error = await self._post(session, body, headers)
                if status is not None and status < 300:
                    return Delivery(True, attempt, status)
                if status is not None and 400 <= status < 500 and status != 429:
                    return Delivery(False, attempt, status, error)
                if attempt < self.attempts:
                    delay = self._delay(attempt)
                    log.info("notification not delivered (%s); retrying in %.1fs", error, delay)
                    await asyncio.sleep(delay)
        return Delivery(False, self.attempts, status, error)

    async def _post(self, session: aiohttp.ClientSession, body: bytes,
                    headers: dict[str, str]) -> tuple[int | None, str | None]:
        try:
            async with session.post(self.url, data=body, headers=headers) as resp:
                text = (await resp.text(errors="replace"))[:200].strip()
                if resp.status < 300:
                    return resp.status, None
                return resp.status, f"HTTP {resp.status} {resp.reason}" + (
                    f": {text}" if text else "")
        except TimeoutError:
            return None, f"no answer within {self.timeout:g}s"
        except aiohttp.ClientError as exc:
            # Never the URL itself: it is a secret (an ntfy topic, a webhook id).
            return None, f"{type(exc).__name__}: {_without_url(str(exc), self.url)}"

    def _delay(self, attempt: int) -> float:
        """Exponential, with jitter so that many stations do not retry in lockstep."""
        ceiling: float = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def render(message: Message, fmt: str) -> tuple[bytes, dict[str, str]]:
    """The request body and headers of MESSAGE in format FMT."""
    if fmt == "ntfy":
        headers = {"Title": _header(message.title), "Priority": str(message.priority),
                   "Content-Type": "text/plain; charset=utf-8"}
        if message.tags:
            headers["Tags"] = ",".join(message.tags)
        return message.body.encode(), headers
    payload: dict[str, Any]
    if fmt == "slack":
        payload = {"text": f"*{message.title}*\n{message.body}"}
    else:
        payload = {"event": message.event, "title": message.title, "message": message.body,
                   "priority": message.priority, "tags": list(message.tags), **message.data}
    return (json.dumps(payload, default=str).encode(),
            {"Content-Type": "application/json"})


def _header(text: str) -> str:
    try:
        text.encode("ascii")
    except UnicodeEncodeError:
        return Header(text, "utf-8").encode(linesep="")  # folded: one line
    return text


def _without_url(text: str, url: str) -> str:
    return text.replace(url, "<webhook URL>")
