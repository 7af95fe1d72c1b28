"""Notifications: delivered to a real local aiohttp receiver, retried on 5xx (not on 4xx),
never failing the ingest, saying what a person needs; stalls and recoveries noticed once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import run_cli
from helpers import random_files
from prometheus_client.parser import text_string_to_metric_families
from support.webhook_receiver import Receiver

from photo_ingest.notify.message import Message
from photo_ingest.notify.session import session_message
from photo_ingest.notify.webhook import WebhookSender
from photo_ingest.watch.service import BATCH_WAIT


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def notify_config(tmp_path: Path, make_config: Callable[..., Path],
                  receiver: Receiver) -> Callable[..., Path]:
    def make(fmt: str = "json", extra: str = "", url: str | None = None) -> Path:
        secret = tmp_path / "webhook-url"
        secret.write_text((url or receiver.url) + "\n")
        config = make_config()
        config.write_text(config.read_text() + extra + f'[metrics]\ntextfile_dir = '
                          f'"{tmp_path}/prom"\n[notify]\nwebhook_url_file = "{secret}"\n'
                          f'format = "{fmt}"\nstall_minutes = 30\n')
        return config
    return make


def metric(path: Path, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    raise KeyError(name)


MESSAGE = Message("success", "photo-ingest: EOS_DIGITAL completed - safe to format",
                  "Safe to format: yes\nCard EOS_DIGITAL: completed", 3, ("white_check_mark",),
                  {"files": {"copied": 2}})


def send(url: str, fmt: str = "json") -> Any:
    return asyncio.run(WebhookSender(url, fmt, base_delay=0.05).send(MESSAGE))


def test_5xx_is_retried_with_backoff_and_4xx_is_not(receiver: Receiver) -> None:
    receiver.statuses = [500, 503, 200]
    d = send(receiver.url)
    assert (d.ok, d.attempts, d.status) == (True, 3, 200)
    assert len(receiver.requests) == 3
    assert receiver.requests[0].body == receiver.requests[2].body  # the same message again
    receiver.requests.clear()
    receiver.statuses = [400]
    d = send(receiver.url)
    assert (d.ok, d.attempts, d.status) == (False, 1, 400)
    assert d.error.startswith("HTTP 400")
    assert len(receiver.requests) == 1
    receiver.requests.clear()
    receiver.statuses = [502, 502, 502, 502]
    d = send(receiver.url)
    assert (d.ok, d.attempts) == (False, 4) and len(receiver.requests) == 4


def test_unreachable_url_is_reported_without_the_secret() -> None:
    d = send("http://127.0.0.1:9/hook/very-secret-topic")
    assert not d.ok and d.attempts == 4
    assert "very-secret-topic" not in (d.error or "")


def test_formats(receiver: Receiver) -> None:
    for fmt in ("json", "ntfy", "slack"):
        assert send(receiver.url, fmt).ok
    js, ntfy, slack = receiver.requests
    assert js.json() == {"event": "success", "title": MESSAGE.title, "message": MESSAGE.body,
                         "priority": 3, "tags": ["white_check_mark"], "files": {"copied": 2}}
    assert js.headers["Content-Type"] == "application/json"
    assert ntfy.body.decode() == MESSAGE.body
    assert (ntfy.headers["Title"], ntfy.headers["Priority"], ntfy.headers["Tags"]) == \
        (MESSAGE.title, "3", "white_check_mark")
    assert slack.json() == {"text": f"*{MESSAGE.title}*\n{MESSAGE.body}"}


def test_ntfy_title_with_non_ascii_is_an_encoded_word(receiver: Receiver) -> None:
    from email.header import decode_header, make_header

    message = Message("success", "photo-ingest: Karte «Urlaub» ist fertig 📷", "ok")
    assert asyncio.run(WebhookSender(receiver.url, "ntfy").send(message)).ok
    title = receiver.requests[0].headers["Title"]
    assert title.isascii() and str(make_header(decode_header(title))) == message.title


def test_card_session_success_and_partial_are_notified(
        tmp_path: Path, notify_config: Callable[..., Path], receiver: Receiver) -> None:
    random_files(tmp_path / "card/DCIM", 3, 10_000, seed=20)
    config = notify_config()
    result = run_cli(config, "ingest", tmp_path / "card", "--label", "EOS_DIGITAL")
    assert result.returncode == 0, result.stderr
    [ok] = receiver.requests
    body = ok.json()
    assert body["event"] == "success" and body["card"] == "EOS_DIGITAL"
    assert body["safe_to_format"] is True
    assert body["files"] == {"seen": 3, "copied": 3, "duplicate": 0, "skipped": 0, "failed": 0}
    assert body["bytes"] == {"total": 30_000, "copied": 30_000}
    assert body["title"] == "photo-ingest: EOS_DIGITAL completed - safe to format"
    assert body["message"].startswith("Safe to format: yes - every file is verified in the "
                                      "library")
    assert "Files: 3 copied, 0 already in the library, 0 skipped, 0 failed" in body["message"]

    # A required mirror that is not there: the files are safe in the library, the card is not
    # safe to format yet.
    random_files(tmp_path / "card/DCIM", 1, 10_000, seed=21)
    config = notify_config(extra=f'[[mirror]]\nname = "nas"\npath = "{tmp_path}/nas"\n')
    result = run_cli(config, "ingest", tmp_path / "card", "--label", "EOS_DIGITAL")
    assert result.returncode == 1
    body = receiver.requests[1].json()
    assert body["event"] == "partial" and body["safe_to_format"] is False
    assert body["title"] == "photo-ingest: EOS_DIGITAL completed - NOT safe to format"
    assert body["safe_reason"].startswith("required mirror nas does not hold 4 file(s) (")
    assert f"Mirror nas (required): lacks 4 file(s); 0 copied, 0 already there, 0 failed " \
           f"({tmp_path}/nas does not exist (not mounted?))" in body["message"]
    assert body["mirrors"][0]["complete"] is False
    prom = tmp_path / "prom/photo_ingest_notify.prom"
    assert metric(prom, "photo_ingest_notify_sent_total", event="partial") == 1


def test_failure_message_lists_reasons() -> None:
    summary = {
        "session": 7, "source": "/run/photo-ingest/cards/sdb1", "status": "partial",
        "error": None, "duration_seconds": 95.2,
        "files": {"seen": 14, "copied": 10, "duplicate": 0, "skipped": 1, "failed": 13},
        "bytes": {"total": 5_000_000_000, "copied": 4_000_000_000},
        "outcomes": [{"path": f"DCIM/100/IMG_{i}.CR3", "outcome": "failed",
                      "reason": "reading the source failed: Input/output error"}
                     for i in range(13)],
        "mirrors": [], "safe_to_format": False, "safe_reason": "13 file(s) failed to copy"}
    m = session_message(summary, {"label": "EOS_DIGITAL", "uuid": "1234-ABCD"})
    assert m.event == "partial" and m.priority == 4
    assert m.title == "photo-ingest: EOS_DIGITAL partial - NOT safe to format"
    lines = m.body.splitlines()
    assert lines[0] == "Safe to format: no - 13 file(s) failed to copy"
    assert lines[1] == "Card EOS_DIGITAL: partial in 1 min 35 s"
    assert lines[3] == "Bytes: 4.0 GB copied of 5.0 GB"
    assert "  DCIM/100/IMG_0.CR3: reading the source failed: Input/output error" in lines
    assert lines[-1] == "  ... and 3 more (photo-ingest sessions 7 --failed)"
    summary |= {"status": "interrupted", "error": "stopped by SIGTERM",
                "safe_reason": "the session was interrupted (stopped by SIGTERM)"}
    m = session_message(summary, {"label": None, "uuid": "1234-ABCD"})
    assert (m.event, m.priority) == ("failure", 5)
    assert m.title == "photo-ingest: 1234-ABCD interrupted - NOT safe to format"
    assert "Error: stopped by SIGTERM" in m.body


def test_a_failed_notification_never_fails_the_ingest(
        tmp_path: Path, notify_config: Callable[..., Path], receiver: Receiver,
        db: psycopg.Connection[Any]) -> None:
    random_files(tmp_path / "card/DCIM", 1, 1000, seed=22)
    receiver.statuses = [404]
    result = run_cli(notify_config(), "ingest", tmp_path / "card", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["files"]["copied"] == 1
    assert "notification failed after 1 attempt(s): HTTP 404" in result.stderr
    row = db.execute("SELECT event, ok, attempts, status_code FROM notify_log").fetchone()
    assert row == {"event": "success", "ok": False, "attempts": 1, "status_code": 404}
    prom = tmp_path / "prom/photo_ingest_notify.prom"
    assert metric(prom, "photo_ingest_notify_failures_total", event="success") == 1
    # An unreadable secret is a failure too, counted, and still not the ingest's.
    config = notify_config()
    (tmp_path / "webhook-url").unlink()
    random_files(tmp_path / "card/DCIM", 1, 1000, seed=23)
    result = run_cli(config, "ingest", tmp_path / "card")
    assert result.returncode == 0, result.stderr
    assert metric(prom, "photo_ingest_notify_failures_total", event="success") == 2


def test_stall_and_recovery_are_notified_once_each(
        tmp_path: Path, notify_config: Callable[..., Path], receiver: Receiver,
        db: psycopg.Connection[Any]) -> None:
    config = notify_config()
    random_files(tmp_path / "card/DCIM", 2, 1000, seed=24)
    assert run_cli(config, "ingest", tmp_path / "card").returncode == 0
    receiver.requests.clear()
    result = run_cli(config, "backlog-check", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["backlogs"]["metadata"] == {"waiting": 2, "done": 0}
    assert receiver.requests == []  # no history yet: no stall
    # The same backlog, with nothing done, 40 minutes ago (stall_minutes = 30).
    db.execute("UPDATE backlog_samples SET sampled_at = now() - interval '40 minutes'")
    assert run_cli(config, "backlog-check").returncode == 0
    [stall] = receiver.requests
    assert stall.json()["event"] == "stall" and stall.json()["backlog"] == "metadata"
    assert stall.json()["title"] == "photo-ingest: metadata backlog stalled"
    assert "2 file(s) are waiting for metadata backlog" in stall.json()["message"]
    assert run_cli(config, "backlog-check").returncode == 0
    assert len(receiver.requests) == 1  # one notification per stall
    prom = tmp_path / "prom/photo_ingest_notify.prom"
    assert metric(prom, "photo_ingest_notify_backlog_stalled", backlog="metadata") == 1

    # The work gets done (random bytes are no JPEG: recorded as failed, which is done too).
    assert run_cli(config, "extract").returncode == 1
    assert run_cli(config, "backlog-check").returncode == 0
    recovered = receiver.requests[1].json()
    assert recovered["event"] == "recovered"
    assert recovered["title"] == "photo-ingest: metadata backlog moving again"
    assert run_cli(config, "backlog-check").returncode == 0
    assert len(receiver.requests) == 2
    assert metric(prom, "photo_ingest_notify_backlog_stalled", backlog="metadata") == 0


def test_events_not_listed_are_not_sent(
        tmp_path: Path, notify_config: Callable[..., Path], receiver: Receiver) -> None:
    config = notify_config()
    config.write_text(config.read_text() + 'events = ["failure"]\n')
    random_files(tmp_path / "card/DCIM", 1, 1000, seed=25)
    assert run_cli(config, "ingest", tmp_path / "card").returncode == 0
    assert receiver.requests == []
    assert run_cli(config, "notify-test").returncode == 0
    assert receiver.requests[0].json()["event"] == "test"


def test_a_watch_folder_session_is_notified(
        tmp_path: Path, notify_config: Callable[..., Path], receiver: Receiver,
        db: psycopg.Connection[Any]) -> None:
    inbox = tmp_path / "phone"
    random_files(inbox / "Camera", 3, 20_000, seed=8)
    (inbox / "Camera/broken.jpg").write_bytes(b"")  # waits (empty): not part of the session
    config = notify_config(extra=f'[[watch]]\npath = "{inbox}"\nname = "phone"\n'
                                 'stable_seconds = 0.2\nafter = "archive"\n'
                                 f'archive_dir = "{tmp_path}/done"\n')
    started = time.monotonic()
    result = run_cli(config, "watch", "--once")
    assert result.returncode == 0, result.stderr
    # the empty file, which only a write can make ready, did not hold the batch back
    assert time.monotonic() - started < BATCH_WAIT - 10
    assert "1 file is still being written or not quiet yet" in result.stderr
    [note] = receiver.requests
    body = note.json()
    assert body["title"] == "photo-ingest: watch folder phone completed"
    assert body["files"]["copied"] == 3 and body["after"] == "archive" and body["watch"] == "phone"
    assert "Source files: moved to the archive folder once verified" in body["message"]
    assert db.execute("SELECT count(*) AS n FROM notify_log").fetchone()["n"] == 1
