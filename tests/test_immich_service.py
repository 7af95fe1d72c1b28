"""`photo-ingest sync` as the long-running service: woken by the catalog's NOTIFY,
talking to systemd over $NOTIFY_SOCKET, serving /metrics, stopping cleanly on SIGTERM
(mid-upload too), resuming after kill -9 once the dead worker's leases run out, and the
external-library mode with its debounced scans."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fake_immich import FakeImmich
from support.immich_catalog import photos, rows, run_sync, seed, sync_argv, sync_once, write_config

DEADLINE = 30.0


def wait_for(what: str, check: Callable[[], Any], timeout: float = DEADLINE) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SystemdSocket:
    """The receiving end of $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[str] = []

    def poll(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return self.messages

    def has(self, line: str) -> bool:
        return any(line in m.splitlines() for m in self.poll())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[SystemdSocket]:
    s = SystemdSocket(tmp_path / "notify.sock")
    yield s
    s.close()


def start(config: Path, *args: str, env: dict[str, str] | None = None,
          ) -> subprocess.Popen[str]:
    return subprocess.Popen(sync_argv(config, "sync", *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM,
         timeout: float = DEADLINE) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.communicate(timeout=timeout)


def states(dsn: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        return rows(conn)


def count_done(dsn: str) -> int:
    return sum(r["state"] == "done" for r in states(dsn).values())


def in_flight(server: FakeImmich) -> list[Any]:
    return [r for r in server.requests
            if r.method == "POST" and r.path == "/api/assets" and r.status is None]


def test_service_wakes_on_notify_serves_metrics_and_talks_to_systemd(
        tmp_path: Path, dsn: str, library: Path, fake_immich: FakeImmich, immich_key: str,
        notify_socket: SystemdSocket) -> None:
    seed(dsn, library, photos(3))
    port = free_port()
    config = write_config(tmp_path / "immich.toml", dsn, library, fake_immich.url, immich_key,
                          album="{date}", interval=3600,
                          metrics_listen=f"127.0.0.1:{port}")
    proc = start(config, env={"NOTIFY_SOCKET": str(notify_socket.path),
                              "WATCHDOG_USEC": "400000"})
    try:
        wait_for("READY=1", lambda: notify_socket.has("READY=1"))
        wait_for("the backlog", lambda: count_done(dsn) == 3)
        # New assets: the ingest's NOTIFY wakes the service (the tick is an hour away).
        woken = time.monotonic()
        seed(dsn, library, photos(2, start=10), salt=1)
        wait_for("the NOTIFY wake-up", lambda: count_done(dsn) == 5, timeout=10)
        assert time.monotonic() - woken < 5
        wait_for("WATCHDOG=1", lambda: notify_socket.has("WATCHDOG=1"))
        wait_for("an idle STATUS", lambda: any("STATUS=idle: 5 in Immich, 0 waiting" in m
                                                for m in notify_socket.poll()))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'photo_ingest_immich_assets_total{reason="",result="uploaded"} 5.0' in metrics
        assert "photo_ingest_immich_upload_bytes_total 10240.0" in metrics
        assert 'photo_ingest_immich_request_duration_seconds_count{operation="uploadAsset",' \
               'outcome="201"} 5.0' in metrics
        assert "photo_ingest_immich_backlog_assets 0.0" in metrics
        assert "photo_ingest_immich_up 1.0" in metrics
        last = next(line for line in metrics.splitlines()
                    if line.startswith("photo_ingest_immich_last_success_timestamp_seconds "))
        assert abs(float(last.split()[1]) - time.time()) < 60
    finally:
        _out, err = stop(proc)
    assert proc.returncode == 0, err
    assert notify_socket.has("STOPPING=1")
    assert len(fake_immich.albums_named("2024-06-01")[0].asset_ids) == 5


def test_sigterm_mid_upload_finishes_in_flight_then_resume(
        tmp_path: Path, dsn: str, library: Path,
        fake_immich_factory: Callable[..., FakeImmich]) -> None:
    server = fake_immich_factory(upload_service_time=1.0)
    key = server.create_api_key("alice")
    seed(dsn, library, photos(10, size=100_000))
    config = write_config(tmp_path / "immich.toml", dsn, library, server.url, key,
                          workers=2, stop_timeout=20)
    proc = start(config)
    wait_for("an upload in flight", lambda: in_flight(server))
    started = time.monotonic()
    _out, err = stop(proc)
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 10
    assert "finishing uploads in flight" in err
    after = states(dsn)
    done = {p for p, r in after.items() if r["state"] == "done"}
    # the uploads in flight finished and were recorded; nothing else is half done
    assert 1 <= len(done) < 10
    assert {server.assets[r["immich_id"]].checksum for p, r in after.items() if p in done} \
        == {a.checksum for a in server.assets.values()}
    assert all(r["lease_owner"] is None for r in after.values())
    assert {r["state"] for p, r in after.items() if p not in done} == {"pending"}

    server.upload_service_time = 0.0
    result = run_sync(config, "--once", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["assets"]["uploaded"] == 10 - len(done)
    assert count_done(dsn) == 10
    statuses = [r.status for r in server.requests if r.path == "/api/assets"]
    assert statuses.count(201) == 10 and 200 not in statuses       # nothing sent twice


def test_sigterm_past_stop_timeout_abandons_uploads_cleanly(
        tmp_path: Path, dsn: str, library: Path,
        fake_immich_factory: Callable[..., FakeImmich]) -> None:
    server = fake_immich_factory(upload_service_time=30.0)
    key = server.create_api_key("alice")
    seed(dsn, library, photos(3))
    config = write_config(tmp_path / "immich.toml", dsn, library, server.url, key,
                          stop_timeout=0.5)
    proc = start(config, "--once", "--json")
    wait_for("uploads in flight", lambda: len(in_flight(server)) == 3)
    started = time.monotonic()
    out, _err = stop(proc)
    assert time.monotonic() - started < 5
    assert proc.returncode == 1                          # --once did not drain
    assert json.loads(out)["status"] == "stopped"
    after = states(dsn)
    assert {r["state"] for r in after.values()} == {"pending"}
    assert all(r["lease_owner"] is None and r["attempts"] == 0 for r in after.values())
    assert server.assets == {}


def test_kill_9_then_resume_after_the_lease_runs_out(
        tmp_path: Path, dsn: str, library: Path,
        fake_immich_factory: Callable[..., FakeImmich]) -> None:
    server = fake_immich_factory(upload_service_time=0.5)
    key = server.create_api_key("alice")
    seed(dsn, library, photos(8, size=50_000))
    config = write_config(tmp_path / "immich.toml", dsn, library, server.url, key,
                          lease=2, workers=2)
    proc = start(config, "--once")
    wait_for("an upload in flight", lambda: in_flight(server))
    stop(proc, signal.SIGKILL)
    leased = [r for r in states(dsn).values() if r["lease_owner"]]
    assert leased                                        # the dead worker's leases
    server.upload_service_time = 0.0
    result = run_sync(config, "--once", "--json")
    assert result.returncode == 0, result.stderr
    after = states(dsn)
    assert {r["state"] for r in after.values()} == {"done"}
    assert len(server.assets) == 8                       # each checksum once on the server
    assert len({r["immich_id"] for r in after.values()}) == 8


def test_library_mode(tmp_path: Path, dsn: str, library: Path, fake_immich: FakeImmich,
                      db: psycopg.Connection[Any], notify_socket: SystemdSocket) -> None:
    admin = fake_immich.create_api_key("root", admin=True)
    seed(dsn, library, photos(3))
    config = write_config(tmp_path / "immich.toml", dsn, library, fake_immich.url, admin,
                          mode="library", library_path="/mnt/photos", scan_delay=1.5,
                          interval=3600)
    s = sync_once(config)
    assert (s.scanned, s.uploaded) == (3, 0)
    (lib,) = fake_immich.libraries.values()
    assert lib.import_paths == ["/mnt/photos"] and lib.owner_id == fake_immich.users["root"].id
    assert "**/.incoming/**" in lib.exclusion_patterns and "**/@eaDir/**" in \
        lib.exclusion_patterns
    assert len(lib.scans) == 1
    assert {(r["state"], r["result"]) for r in rows(db).values()} == {("done", "scanned")}
    assert not [r for r in fake_immich.requests if r.path == "/api/assets"]

    # The service scans once after a burst of new assets has settled.
    proc = start(config, env={"NOTIFY_SOCKET": str(notify_socket.path)})
    try:
        wait_for("the first pass", lambda: any(m.startswith("STATUS=idle")
                                               for m in notify_socket.poll()))
        for i in range(3):
            seed(dsn, library, photos(2, start=100 + 10 * i), salt=i + 1)
            time.sleep(0.15)
        wait_for("the debounced scan", lambda: len(fake_immich.libraries[lib.id].scans) == 2)
        time.sleep(1.0)
        assert len(fake_immich.libraries[lib.id].scans) == 2
    finally:
        _out, err = stop(proc)
    assert proc.returncode == 0, err
    assert sum(r["result"] == "scanned" for r in rows(db).values()) == 9
    assert len(fake_immich.libraries) == 1               # the same library, found again

    # a non-admin key is told what it lacks
    user = fake_immich.create_api_key("dave", ["all"])
    bad = write_config(tmp_path / "user.toml", dsn, library, fake_immich.url, user,
                       mode="library")
    result = run_sync(bad, "--once", "--json")
    assert result.returncode == 1
    assert "admin user's key" in json.loads(result.stdout)["error"]
