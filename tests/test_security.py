"""Secrets stay secret and metrics say only what docs/metrics.md promises.

One module-wide run does what an installation does with three secrets configured — the
Immich API key, the database password (a private PostgreSQL that really asks for it) and
the notify webhook URL — plus wrong ones: ingest, extract, mirror, verify, backlog-check,
the sync service with /metrics, status, sessions, check, failing key, password and webhook.
Everything it can see is captured: every stdout and stderr (the journal of a unit), the
sync service's /proc/PID/cmdline and environ, /metrics, every textfile, the catalog dumped
by pg_dump and the server's log. The tests grep all of it.
"""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from conftest import run_cli
from fake_immich import FakeImmich
from faults import record
from helpers import random_files
from prometheus_client.parser import text_string_to_metric_families
from support.immich_catalog import sync_argv
from support.pgserver import TempPostgres, find_bin
from support.webhook_receiver import Receiver

REPO = Path(__file__).resolve().parents[1]
ROLE = "ingest_sec"


@dataclass
class Captured:
    texts: dict[str, str] = field(default_factory=dict)    # what -> everything it showed
    metrics: dict[str, str] = field(default_factory=dict)  # source -> exposition text
    secrets: dict[str, str] = field(default_factory=dict)  # name -> value
    paths: list[str] = field(default_factory=list)         # folders no metric may name
    notes: dict[str, object] = field(default_factory=dict)

    def add(self, what: str, result: subprocess.CompletedProcess[str]) -> None:
        self.texts[f"{what}: stdout"] = result.stdout
        self.texts[f"{what}: stderr"] = result.stderr


def _scram_server(password: str) -> TempPostgres:
    """A private server where our role must log in with its password (SCRAM)."""
    server = TempPostgres().start()  # in /tmp: pytest's folders are root's alone
    hba = server.data / "pg_hba.conf"
    hba.write_text("local all postgres trust\nlocal all all scram-sha-256\n")
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
        conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'")
        conn.execute(f"CREATE DATABASE sec OWNER {ROLE}")
    return server


def _wait(what: str, check: object, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(path: Path, *, root: Path, socket_dir: Path, immich_url: str, key_file: Path,
            password_file: Path, webhook_file: Path, port: int) -> Path:
    path.write_text(f"""
[library]
path = "{root}/library"
[database]
url = "postgresql:///sec?host={socket_dir}&user={ROLE}"
password_file = "{password_file}"
[ingest]
timezone = "Europe/Berlin"
[metrics]
textfile_dir = "{root}/prom"
[[mirror]]
name = "nas"
path = "{root}/nas"
[notify]
webhook_url_file = "{webhook_file}"
[immich]
url = "{immich_url}"
api_key_file = "{key_file}"
metrics_listen = "127.0.0.1:{port}"
retry_delay = 0
""")
    return path


def _secret_file(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def _run_service(cap: Captured, config: Path, port: int, dsn: str, expected: int) -> None:
    """The sync service: its argv, environment and /metrics while it runs, its output."""
    proc = subprocess.Popen(sync_argv(config, "sync"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        def done() -> bool:
            with psycopg.connect(dsn) as conn:
                row = conn.execute("SELECT count(*) FROM immich_assets WHERE state = 'done'"
                                   ).fetchone()
            return bool(row and row[0] == expected)

        _wait("the sync service to upload everything", done)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            cap.metrics["/metrics"] = r.read().decode()
        pids = [proc.pid] + [int(p) for t in Path(f"/proc/{proc.pid}/task").iterdir()
                             for p in (t / "children").read_text().split()]
        for pid in pids:
            for what in ("cmdline", "environ"):
                raw = Path(f"/proc/{pid}/{what}").read_bytes()
                cap.texts[f"sync service /proc/{pid}/{what}"] = raw.replace(b"\0", b"\n"
                                                                           ).decode()
        cap.notes["service pids"] = pids
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    cap.texts["sync service: stdout"], cap.texts["sync service: stderr"] = out, err
    assert proc.returncode == 0, err


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Captured]:
    root = tmp_path_factory.mktemp("security")
    cap = Captured(paths=[str(root)], notes={"started": time.monotonic()})
    cap.secrets = {
        "database password": "pw-" + secrets.token_hex(12),
        "wrong database password": "wrongpw-" + secrets.token_hex(12),
        "webhook token": "hook-" + secrets.token_hex(12),
        "unreachable webhook token": "deadhook-" + secrets.token_hex(12),
        "wrong API key": "wrongkey-" + secrets.token_hex(16),
    }
    s = cap.secrets
    server = _scram_server(s["database password"])
    immich = FakeImmich(storage_dir=root / "immich")
    immich.start()
    receiver = Receiver().start()
    try:
        s["API key"] = immich.create_api_key(user="alice", permissions=["all"])
        dsn = f"host={server.socket_dir} dbname=sec user={ROLE} password={s['database password']}"
        port = _free_port()
        hook = f"http://127.0.0.1:{receiver.port}/hook/{s['webhook token']}"
        files = dict(
            root=root, socket_dir=server.socket_dir, immich_url=immich.url, port=port,
            key_file=_secret_file(root / "immich.key", s["API key"]),
            password_file=_secret_file(root / "db.password", s["database password"]),
            webhook_file=_secret_file(root / "webhook.url", hook))
        config = _config(root / "config.toml", **files)  # type: ignore[arg-type]
        (root / "nas").mkdir()
        random_files(root / "card/DCIM/100TEST", 4, 20_000, seed=70)
        (root / "card/DCIM/100TEST/notes.txt").write_text("not a photo")

        def cli(what: str, *args: str, cfg: Path = config) -> subprocess.CompletedProcess[str]:
            result = run_cli(cfg, *args)
            cap.add(what, result)
            return result

        assert cli("mirror --init", "mirror", "--init", "--destination", "nas"
                   ).returncode == 0
        assert cli("ingest", "ingest", str(root / "card"), "--label", "SEC_CARD",
                   "--json").returncode == 0
        assert cli("extract", "extract").returncode in (0, 1)  # random bytes: no metadata
        assert cli("mirror", "mirror").returncode == 0
        assert cli("verify", "verify").returncode == 0
        assert cli("backlog-check", "backlog-check", "--json").returncode == 0
        assert cli("notify-test", "notify-test").returncode == 0
        _run_service(cap, config, port, dsn, expected=4)
        for args in (["status"], ["status", "--json"], ["sessions"], ["sessions", "--json"],
                     ["sessions", "1"], ["check"], ["check", "--json"],
                     ["sync", "--once", "--json"]):
            assert cli(" ".join(args), *args).returncode == 0, cap.texts
        # What goes wrong must say so without the secret it was given.
        bad_key = _config(root / "bad-key.toml", **{
            **files, "key_file": _secret_file(root / "bad.key", s["wrong API key"])})
        assert cli("sync with a wrong key", "sync", "--once", cfg=bad_key).returncode != 0
        assert cli("check with a wrong key", "check", cfg=bad_key).returncode != 0
        bad_pw = _config(root / "bad-pw.toml", **{
            **files, "password_file": _secret_file(root / "bad.pw",
                                                   s["wrong database password"])})
        bad = cli("status with a wrong password", "status", cfg=bad_pw)
        assert bad.returncode != 0 and "password authentication failed" in bad.stderr
        dead = f"http://127.0.0.1:9/hook/{s['unreachable webhook token']}"
        dead_hook = _config(root / "dead-hook.toml", **{
            **files, "webhook_file": _secret_file(root / "dead.url", dead)})
        assert cli("notify-test, unreachable", "notify-test", cfg=dead_hook).returncode != 0
        receiver.statuses = [404]
        assert cli("notify-test, 404", "notify-test").returncode != 0

        for prom in sorted((root / "prom").glob("*.prom")):
            cap.metrics[prom.name] = prom.read_text()
        dump = subprocess.run(["runuser", "-u", "postgres", "--", find_bin("pg_dump"),
                               "-h", str(server.socket_dir), "-U", "postgres", "sec"],
                              capture_output=True, text=True, check=True)
        cap.texts["pg_dump of the catalog"] = dump.stdout
        cap.texts["PostgreSQL's log"] = (server.dir / "server.log").read_text()
        cap.notes.update(
            uploaded=len(immich.assets) if hasattr(immich, "assets") else None,
            webhook_paths=[r.path for r in receiver.requests])
        yield cap
    finally:
        receiver.stop()
        immich.stop()
        server.stop()


def test_secrets_appear_nowhere(captured: Captured) -> None:
    # The right secrets were used: webhooks reached their secret path, the password was
    # asked for (a wrong one was refused), the key uploaded (the service reached `done`).
    assert f"/hook/{captured.secrets['webhook token']}" in captured.notes["webhook_paths"]
    assert captured.texts["pg_dump of the catalog"].count("COPY public.assets") == 1
    leaks = [(name, what) for name, secret in captured.secrets.items()
             for what, text in {**captured.texts, **captured.metrics}.items()
             if secret in text]
    assert not leaks, f"secrets found: {leaks}"
    record("security: secrets never shown", 1,
           f"0 of {len(captured.secrets)} secrets (API key, DB password, webhook URL; right "
           f"and wrong) in {len(captured.texts) + len(captured.metrics)} captures: outputs, "
           "argv, environ, /metrics, textfiles, pg_dump, server log",
           float(captured.notes["started"]))  # type: ignore[arg-type]


def test_failures_say_why_without_the_secret(captured: Captured) -> None:
    t = captured.texts
    assert "does not accept the API key" in (t["sync with a wrong key: stdout"]
                                             + t["sync with a wrong key: stderr"])
    assert "password authentication failed" in t["status with a wrong password: stderr"]
    dead = t["notify-test, unreachable: stdout"] + t["notify-test, unreachable: stderr"]
    assert "127.0.0.1" in dead or "connect" in dead.lower(), dead
    assert "404" in t["notify-test, 404: stdout"] + t["notify-test, 404: stderr"]


# -- metrics: only what docs/metrics.md documents ---------------------------------------


@dataclass
class Documented:
    labels: dict[str, set[str]] = field(default_factory=dict)            # family -> names
    values: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # listed values


def documented_metrics() -> Documented:
    """Every metric family in docs/metrics.md (and docs/immich.md's table), its label
    names, and for labels whose values the docs list in full, those values."""
    doc = Documented()
    texts = [(REPO / "docs/metrics.md").read_text(), (REPO / "docs/immich.md").read_text()]
    for text in texts:
        header: list[str] = []
        for line in text.replace("\\|", "¦").splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("| metric"):
                header = cells
                continue
            if not line.startswith("|"):
                header = []
            for m in re.finditer(r"`(photo_ingest_[a-z_]+)(?:\{([^}]*)\})?`", line):
                name, inline = m.group(1), m.group(2)
                if header and cells[0].find(m.group(0)) < 0:
                    continue  # a metric named in a meaning column
                names = doc.labels.setdefault(name, set())
                for part in (inline or "").split(","):
                    label, _, vals = part.partition("=")
                    if label.strip():
                        names.add(label.strip())
                        if vals:
                            doc.values[(name, label.strip())] = set(
                                re.findall(r'"([^"]*)"', vals))
                if header and "labels" in header and len(cells) == len(header):
                    _table_labels(doc, name, cells[header.index("labels")])
    return doc


def _table_labels(doc: Documented, name: str, cell: str) -> None:
    """`outcome` (copied, duplicate) / `destination`, `state` (a, b) / `reason` (e.g. …)"""
    for m in re.finditer(r"`([a-z_]+)`(?:\s*\(([^)]*)\))?", cell):
        doc.labels[name].add(m.group(1))
        listed = [v.strip() for v in (m.group(2) or "").split(",") if v.strip()]
        # "(copied, pending)" lists them all; "(e.g. …)" or "(label, else UUID)" does not.
        if listed and all(re.fullmatch(r"[a-z0-9_]+(:[A-Z]+)?", v) for v in listed):
            doc.values[(name, m.group(1))] = set(listed)


def _family(doc: Documented, sample: str) -> str | None:
    for suffix in ("", "_total", "_created", "_bucket", "_sum", "_count"):
        base = sample.removesuffix(suffix) if suffix else sample
        if sample.endswith(suffix) and (base in doc.labels or base + "_total" in doc.labels):
            return base if base in doc.labels else base + "_total"
    return None


def _listed(value: str, listed: set[str]) -> bool:
    """VALUE is one of LISTED, where `mirror:NAME` stands for `mirror:` and any name."""
    return any(value == v or (":" in v and v.split(":")[1].isupper()
                              and value.startswith(v.split(":")[0] + ":")) for v in listed)


def test_docs_list_the_metrics_and_their_labels() -> None:
    doc = documented_metrics()
    assert doc.labels["photo_ingest_ingest_files_total"] == {"outcome"}
    assert doc.values[("photo_ingest_ingest_files_total", "outcome")] == \
        {"copied", "duplicate", "skipped", "failed"}
    assert doc.labels["photo_ingest_mirror_files"] == {"destination", "state"}
    assert doc.labels["photo_ingest_immich_assets_total"] == {"result", "reason"}
    assert doc.values[("photo_ingest_metadata_assets", "status")] == {"ok", "failed"}
    assert ("photo_ingest_ingest_skipped_files_total", "reason") not in doc.values  # e.g.
    assert ("photo_ingest_ingest_card_sessions_total", "card") not in doc.values
    assert _listed("mirror:nas", doc.values[("photo_ingest_notify_backlog_files", "backlog")])


def test_metrics_expose_only_documented_names_labels_and_values(captured: Captured) -> None:
    doc = documented_metrics()
    assert set(captured.metrics) >= {"/metrics", "photo_ingest_ingest.prom",
                                     "photo_ingest_metadata.prom", "photo_ingest_mirror.prom",
                                     "photo_ingest_verify.prom", "photo_ingest_notify.prom"}
    problems, seen = [], 0
    for source, text in captured.metrics.items():
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                seen += 1
                name = _family(doc, s.name)
                if name is None:
                    problems.append(f"{source}: {s.name} is not in docs/metrics.md")
                    continue
                allowed = doc.labels[name] | ({"le"} if s.name.endswith("_bucket") else set())
                for label, value in s.labels.items():
                    if label not in allowed:
                        problems.append(f"{source}: {s.name} has label {label}")
                    listed = doc.values.get((name, label))
                    if listed is not None and not _listed(value, listed):
                        problems.append(f"{source}: {s.name}{{{label}={value!r}}} not listed")
                    if "/" in value or any(p in value for p in captured.paths):
                        problems.append(f"{source}: {s.name}{{{label}={value!r}}} is a path")
    assert seen > 50
    assert not problems, "\n".join(problems)
    record("security: metrics vs docs/metrics.md", 1,
           f"{seen} samples from /metrics and {len(captured.metrics) - 1} textfiles: every "
           "name, label and listed value documented, no path in any label",
           float(captured.notes["started"]))  # type: ignore[arg-type]

