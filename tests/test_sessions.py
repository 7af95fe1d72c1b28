"""A session's process is known exactly: a PID reused after a crash, or a reboot, does not
keep a dead session `running`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from photo_ingest import catalog
from photo_ingest.ingest import process, sessions
from photo_ingest.ingest.copy import HOST


@pytest.fixture
def sleeper() -> Iterator[int]:
    """A living process that is not ours to claim: its PID stands for a reused one."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def running(db: psycopg.Connection[dict[str, Any]], pid: int, boot: str | None,
            started: int | None, host: str = HOST) -> int:
    row = db.execute("INSERT INTO ingest_sessions (source, host, pid, boot_id, pid_started)"
                     " VALUES ('/card', %s, %s, %s, %s) RETURNING id",
                     (host, pid, boot, started)).fetchone()
    assert row is not None
    return int(row["id"])


def test_the_process_identity_of_this_process() -> None:
    me = process.Identity.mine()
    assert me.boot and len(me.boot) == 36  # /proc/sys/kernel/random/boot_id: a UUID
    assert me.started is not None and me.started > 0
    assert me.alive()
    assert not process.Identity(me.pid, "0" * 36, me.started).alive()   # another boot
    assert not process.Identity(me.pid, me.boot, me.started + 1).alive()  # another process


def test_sessions_of_reused_pids_and_earlier_boots_are_interrupted(
        dsn: str, db: psycopg.Connection[dict[str, Any]], sleeper: int) -> None:
    with catalog.connect(dsn) as conn:
        theirs = process.Identity(sleeper, process.boot_id(), process.started(sleeper))
        live = running(db, sleeper, theirs.boot, theirs.started)
        reused = running(db, sleeper, theirs.boot, (theirs.started or 0) - 1)
        rebooted = running(db, sleeper, "00000000-0000-0000-0000-000000000000",
                           theirs.started)
        legacy = running(db, sleeper, None, None)   # a row from before boot ids: PID only
        elsewhere = running(db, 1, "x", 1, host="another-host")  # its heartbeat is fresh
        assert sorted(sessions.mark_interrupted(conn)) == [reused, rebooted]
    states = {r["id"]: (r["status"], r["error"]) for r in
              db.execute("SELECT id, status, error FROM ingest_sessions")}
    for sid in (live, legacy, elsewhere):
        assert states[sid] == ("running", None)
    for sid in (reused, rebooted):
        assert states[sid][0] == "interrupted"
        assert "ended without finishing" in states[sid][1]


def test_a_new_session_records_who_runs_it(dsn: str,
                                           db: psycopg.Connection[dict[str, Any]]) -> None:
    with catalog.connect(dsn) as conn:
        sid = sessions.start(conn, "/card", sessions.Card())
    row = db.execute("SELECT pid, boot_id, pid_started FROM ingest_sessions WHERE id = %s",
                     (sid,)).fetchone()
    me = process.Identity.mine()
    assert row == {"pid": me.pid, "boot_id": me.boot, "pid_started": me.started}
