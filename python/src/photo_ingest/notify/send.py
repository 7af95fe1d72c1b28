"""Sending a message without ever holding up or failing the work it reports on.

The webhook URL is read when the job starts (a card unit's child has dropped the right to
read credentials by the time the session ends). Every attempt, delivered or not, is
recorded in the catalog's notify_log, which the notify metrics count.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from photo_ingest import catalog
from photo_ingest.config import Config, ConfigError
from photo_ingest.ingest.copy import HOST
from photo_ingest.notify.message import EVENT_CLASS, Message
from photo_ingest.notify.webhook import Delivery, Sender, WebhookSender

log = logging.getLogger(__name__)

DEADLINE = 45.0  # seconds for all attempts: within a stopping unit's TimeoutStopSec


class Notifications:
    def __init__(self, cfg: Config, sender: Sender | None = None,
                 problem: str | None = None) -> None:
        self.cfg = cfg
        self.sender = sender
        self.problem = problem  # why no sender could be made (an unreadable URL file)

    @classmethod
    def from_config(cls, cfg: Config) -> Notifications:
        if not cfg.notify.enabled:
            return cls(cfg)
        try:
            url = cfg.notify.webhook_url()
        except ConfigError as exc:
            log.error("notifications will fail: %s", exc)
            return cls(cfg, problem=str(exc))
        return cls(cfg, WebhookSender(url, cfg.notify.format))

    @property
    def enabled(self) -> bool:
        return self.cfg.notify.enabled

    def wants(self, event: str) -> bool:
        return self.enabled and (event == "test" or
                                 EVENT_CLASS.get(event, event) in self.cfg.notify.events)

    def send(self, message: Message) -> bool:
        """Deliver MESSAGE if its event is wanted; True when delivered. Never raises."""
        if not self.wants(message.event):
            return False
        try:
            if self.sender is None:
                delivery = Delivery(False, 0, None, self.problem or "no sender")
            else:
                delivery = asyncio.run(asyncio.wait_for(self.sender.send(message), DEADLINE))
        except TimeoutError:
            delivery = Delivery(False, 0, None, f"not delivered within {DEADLINE:g}s")
        except Exception as exc:  # a notification must never fail the job it reports on
            delivery = Delivery(False, 0, None, f"{type(exc).__name__}: {exc}")
        if delivery.ok:
            log.info("notification sent: %s", message.title)
        else:
            log.warning("notification failed after %d attempt(s): %s (%s)", delivery.attempts,
                        delivery.error, message.title)
        self._record(message, delivery)
        return delivery.ok

    def _record(self, message: Message, d: Delivery) -> None:
        try:
            with catalog.connect(self.cfg.database.conninfo()) as conn:
                record(conn, message, d)
        except Exception as exc:
            log.warning("could not record the notification in the catalog: %s", exc)


def record(conn: Any, message: Message, d: Delivery) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO notify_log (event, title, host, ok, attempts, status_code, error)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (message.event, message.title[:500], HOST, d.ok, d.attempts, d.status,
             (d.error or "")[:2000] or None))
