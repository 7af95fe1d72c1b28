"""Watch folders with real inotify on real directories: files written slowly, renamed into
place, deleted mid-write, new subfolders, catch-up on start, the after-step policies with
duplicates, wait_for_immich against the fake Immich, kill -9 between the after-step's
steps, and a file rewritten between its ingest and its delete. Every test checks bytes on
disk and catalog rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import assert_catalog_matches_disk, sha1

REPO = Path(__file__).resolve().parents[1]
STABLE = 1.0


def payload(n: int, size: int = 64 * 1024) -> bytes:
    """Distinct content per N (random-looking, no EXIF: dated by mtime)."""
    import random

    return random.Random(n).randbytes(size)


def write_config(path: Path, dsn: str, library: Path, watches: list[dict[str, Any]],
                 extra: str = "") -> Path:
    lines = [f'[library]\npath = "{library}"', f'[database]\nurl = "{dsn}"',
             '[ingest]\ntimezone = "Europe/Berlin"', extra]
    for w in watches:
        lines.append("[[watch]]")
        w = {"stable_seconds": STABLE, **w}
        for k, v in w.items():
            value = f'"{v}"' if isinstance(v, str | Path) else str(v).lower()
            lines.append(f"{k} = {value}")
    path.write_text("\n".join(lines) + "\n")
    return path


def argv(config: Path, *args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "photo_ingest", "--config", str(config), "watch",
            *map(os.fspath, args)]


def run_once(config: Path, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv(config, "--once", *args), capture_output=True, text=True,
                            timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result


class Running:
    """A watcher in a child process, stopped with SIGTERM."""

    def __init__(self, config: Path, log: Path, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.log = log
        with open(log, "wb") as err:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(argv(config, *args), stdout=subprocess.PIPE,
                                         stderr=err, env={**os.environ, **(env or {})})
        wait_for(lambda: "watching" in self.stderr(), what="the watcher to start")

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        assert "Traceback" not in self.stderr(), self.stderr()
        return code


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(config: Path, *args: str, env: dict[str, str] | None = None) -> Running:
        w = Running(config, tmp_path / f"watch{len(started)}.log", *args, env=env)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or cond}")


def assets(db: psycopg.Connection[Any]) -> dict[str, str]:
    """original path -> SHA-1 hex of every asset."""
    rows = db.execute("SELECT original_path, encode(sha1, 'hex') AS sha1 FROM assets")
    return {r["original_path"]: r["sha1"] for r in rows}


def outcomes(db: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    rows = db.execute("SELECT relpath, outcome FROM session_files ORDER BY relpath")
    return [(r["relpath"], r["outcome"]) for r in rows]


def watch_rows(db: psycopg.Connection[Any]) -> dict[str, str]:
    rows = db.execute("SELECT convert_from(path, 'UTF8') AS path, state FROM watch_files")
    return {r["path"]: r["state"] for r in rows}


@pytest.mark.parametrize(("text", "message"), [
    ('[[watch]]\nname = "x"\n', "watch[1].path: required"),
    ('[[watch]]\npath = "inbox"\n', "watch[1].path: must be an absolute path"),
    ('[[watch]]\npath = "/in"\nafter = "move"\n',
     "watch[1].after: must be one of leave, archive, delete; got 'move'"),
    ('[[watch]]\npath = "/in"\nafter = "archive"\n',
     'watch[1].archive_dir: required when after = "archive"'),
    ('[[watch]]\npath = "/in"\nstable_seconds = 0\n', "watch[1].stable_seconds: must be"),
    ('[[watch]]\npath = "/in"\nstable = 3\n', "unknown key watch[1].stable"),
    ('[[watch]]\npath = "/in"\nafter = "delete"\nwait_for_immich = true\n',
     "watch[1].wait_for_immich: Immich is not configured"),
    ('[[watch]]\npath = "/in"\nwait_for_immich = true\n',
     'watch[1].wait_for_immich: only used with after = "archive" or "delete"'),
    ('[[watch]]\npath = "/a/in"\n[[watch]]\npath = "/b/in"\n',
     "watch[2].name: 'in' is already the name of watch[1]"),
    ('[[watch]]\npath = "/in"\n[[watch]]\npath = "/in/sub"\n',
     "watch[2].path: /in/sub overlaps watch[1].path /in"),
    ('[library]\npath = "/srv/lib"\n[[watch]]\npath = "/srv"\n',
     "watch[1].path: /srv overlaps the library /srv/lib"),
    ('[watch]\npath = "/in"\n', "watch: must be an array of tables"),
])
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    from photo_ingest import config

    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert message in str(err.value)


def test_config_defaults(tmp_path: Path) -> None:
    from photo_ingest import config

    path = tmp_path / "c.toml"
    path.write_text('[[watch]]\npath = "/srv/inbox/phone/"\n[[watch]]\npath = "/srv/booth"\n'
                    'name = "booth"\nafter = "archive"\narchive_dir = "/srv/done"\n'
                    'stable_seconds = 2.5\n')
    phone, booth = config.load(path).watch
    assert (phone.name, phone.stable_seconds, phone.after, phone.archive_dir,
            phone.wait_for_immich) == ("phone", 10.0, "leave", None, False)
    assert (booth.after, str(booth.archive_dir), booth.stable_seconds) == (
        "archive", "/srv/done", 2.5)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


def test_a_file_written_slowly_is_ingested_only_once_complete(
        tmp_path: Path, dsn: str, library: Path, inbox: Path, watcher: Callable[..., Running],
        db: psycopg.Connection[Any]) -> None:
    config = write_config(tmp_path / "c.toml", dsn, library, [{"path": inbox}])
    w = watcher(config)
    data = payload(1, 512 * 1024)
    target = inbox / "VID_0001.MP4"
    with open(target, "wb") as fh:
        for i in range(8):
            fh.write(data[i * 64 * 1024:(i + 1) * 64 * 1024])
            fh.flush()
            # a stall longer than stable_seconds, the file open for writing all along
            time.sleep(STABLE * 1.6 if i == 3 else 0.3)
            assert assets(db) == {}, f"ingested after {i + 1} of 8 chunks"
    row = wait_for(lambda: assets(db).get("VID_0001.MP4"), what="the ingest")
    assert row == sha1(target)
    on_disk = assert_catalog_matches_disk(db, library)
    assert list(on_disk.values()) == [sha1(target)]
    assert outcomes(db) == [("VID_0001.MP4", "copied")]
    assert target.read_bytes() == data                       # after = leave
    assert watch_rows(db) == {str(target): "kept"}
    session = db.execute("SELECT source, card_label, status FROM ingest_sessions").fetchall()
    assert w.stop() == 0
    session = db.execute("SELECT source, card_label, status FROM ingest_sessions").fetchall()
    assert session == [{"source": str(inbox), "card_label": "inbox", "status": "completed"}]


def test_systemd_hears_ready_status_and_watchdog(
        tmp_path: Path, dsn: str, library: Path, inbox: Path, watcher: Callable[..., Running],
        db: psycopg.Connection[Any]) -> None:
    from test_immich_service import SystemdSocket

    sock = SystemdSocket(tmp_path / "notify.sock")
    config = write_config(tmp_path / "c.toml", dsn, library, [{"path": inbox}])
    w = watcher(config, env={"NOTIFY_SOCKET": str(sock.path), "WATCHDOG_USEC": "1500000"})
    wait_for(lambda: sock.has("READY=1"), what="READY=1")
    assert any("STATUS=watching 1 folders: 0 files pending" in m for m in sock.poll())
    # idle, the loop still wakes for the watchdog (every 0.5 s; waited for, not timed: a
    # loaded machine may be slow to schedule it)
    wait_for(lambda: sum("WATCHDOG=1" in m.splitlines() for m in sock.poll()) >= 3,
             what="three watchdog pings while idle")
    (inbox / "IMG_0001.JPG").write_bytes(payload(1))
    wait_for(lambda: assets(db), what="the ingest")
    assert w.stop() == 0
    assert sock.has("STOPPING=1")
    sock.close()


def test_temp_names_wait_for_their_rename_and_deleted_writes_leave_no_trace(
        tmp_path: Path, dsn: str, library: Path, inbox: Path, watcher: Callable[..., Running],
        db: psycopg.Connection[Any]) -> None:
    config = write_config(tmp_path / "c.toml", dsn, library, [{"path": inbox}])
    w = watcher(config)
    temps = {".IMG_0001.JPG.Xa81Qz": "IMG_0001.JPG",          # rsync
             "IMG_0002.JPG.part": "IMG_0002.JPG",              # curl, browsers, KDE
             "IMG_0003.JPG.crdownload": "IMG_0003.JPG",        # Chrome
             "~$IMG_0004.JPG": "IMG_0004.JPG"}
    for n, name in enumerate(temps, 1):
        (inbox / name).write_bytes(payload(n))
        os.utime(inbox / name, (1_700_000_000, 1_700_000_000))   # old and complete-looking
    doomed = inbox / "IMG_0009.JPG"
    with open(doomed, "wb") as fh:                 # written half, then deleted mid-write
        fh.write(payload(9)[:30_000])
        fh.flush()
        time.sleep(STABLE * 2.5)
        os.unlink(doomed)
        fh.write(payload(9)[30_000:])
    assert assets(db) == {} and outcomes(db) == []   # temp names are never candidates
    for name, final in temps.items():
        os.rename(inbox / name, inbox / final)
    wait_for(lambda: len(outcomes(db)) == 4, what="the renamed files")
    time.sleep(STABLE * 2)
    assert w.stop() == 0
    assert assets(db) == {final: sha1(inbox / final) for final in temps.values()}
    assert outcomes(db) == [(final, "copied") for final in sorted(temps.values())]
    assert all(state == "kept" for state in watch_rows(db).values())
    assert str(doomed) not in watch_rows(db)
    assert len(assert_catalog_matches_disk(db, library)) == 4


def test_new_nested_subfolders_are_watched(
        tmp_path: Path, dsn: str, library: Path, inbox: Path, watcher: Callable[..., Running],
        db: psycopg.Connection[Any]) -> None:
    config = write_config(tmp_path / "c.toml", dsn, library, [{"path": inbox}])
    w = watcher(config)
    deep = inbox / "2024" / "phone" / "DCIM"
    deep.mkdir(parents=True)               # files land at once, before any watch is set
    (deep / "IMG_0001.JPG").write_bytes(payload(1))
    (deep / "IMG_0001.XMP").write_bytes(b"<x:xmpmeta/>")
    later = inbox / "2025"
    later.mkdir()
    time.sleep(0.5)
    (later / "IMG_0002.HEIC").write_bytes(payload(2))
    moved = tmp_path / "elsewhere" / "trip"        # a folder moved in whole
    moved.mkdir(parents=True)
    (moved / "IMG_0003.JPG").write_bytes(payload(3))
    os.rename(moved, inbox / "trip")
    wait_for(lambda: len(outcomes(db)) == 4, what="the nested files")
    assert w.stop() == 0
    assert sorted(assets(db)) == ["2024/phone/DCIM/IMG_0001.JPG", "2025/IMG_0002.HEIC",
                                  "trip/IMG_0003.JPG"]
    assert ("2024/phone/DCIM/IMG_0001.XMP", "copied") in outcomes(db)
    assert_catalog_matches_disk(db, library)


def test_catch_up_on_start_then_nothing_is_taken_twice(
        tmp_path: Path, dsn: str, library: Path, inbox: Path, db: psycopg.Connection[Any],
        watcher: Callable[..., Running]) -> None:
    config = write_config(tmp_path / "c.toml", dsn, library, [{"path": inbox}])
    for n in range(1, 31):      # arrived while no watcher ran: one session, not thirty
        (inbox / f"IMG_{n:04d}.JPG").write_bytes(payload(n))
    (inbox / "notes.txt").write_text("not a photo")
    result = run_once(config, "--json")
    assert result.returncode == 0, result.stderr
    assert len(assets(db)) == 30
    sessions = db.execute("SELECT id, status, files_copied, files_skipped, card_label"
                          " FROM ingest_sessions").fetchall()
    assert [(s["status"], s["files_copied"], s["files_skipped"], s["card_label"])
            for s in sessions] == [("completed", 30, 1, "inbox")]
    assert watch_rows(db)[str(inbox / "notes.txt")] == "skipped"
    # A restart: unchanged files are neither ingested nor hashed again, no new session.
    again = run_once(config)
    assert again.returncode == 0, again.stderr
    assert db.execute("SELECT count(*) AS n FROM ingest_sessions").fetchone()["n"] == 1
    # Files that arrive while it is down are caught up by the long-running watcher too.
    (inbox / "IMG_0100.JPG").write_bytes(payload(100))
    w = watcher(config)
    wait_for(lambda: len(outcomes(db)) == 32, what="the catch-up")
    assert w.stop() == 0
    assert len(assert_catalog_matches_disk(db, library)) == 31
    assert db.execute("SELECT count(*) AS n FROM ingest_sessions").fetchone()["n"] == 2


def ingest_card(tmp_path: Path, dsn: str, library: Path, files: dict[str, bytes]) -> None:
    """Put FILES in the library the ordinary way (a card), so watched copies are duplicates."""
    from conftest import run_cli

    card = tmp_path / "card"
    for name, data in files.items():
        (card / "DCIM" / name).parent.mkdir(parents=True, exist_ok=True)
        (card / "DCIM" / name).write_bytes(data)
    config = write_config(tmp_path / "card.toml", dsn, library, [])
    result = run_cli(config, "ingest", card)
    assert result.returncode == 0, result.stderr


def test_policies_leave_archive_delete_with_duplicates(
        tmp_path: Path, dsn: str, library: Path, db: psycopg.Connection[Any]) -> None:
    known = payload(99)
    ingest_card(tmp_path, dsn, library, {"IMG_9999.JPG": known})
    folders = {p: tmp_path / p for p in ("keep", "archive", "delete")}
    done = tmp_path / "done"
    sources: dict[Path, bytes] = {}
    for n, folder in enumerate(folders.values()):
        for rel, data in {"sub/IMG_0001.JPG": payload(n), "DUP.JPG": known,
                          "sub/IMG_0001.XMP": b"<xmp %d/>" % n}.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
            sources[folder / rel] = data
    (done / "sub").mkdir(parents=True)
    (done / "sub/IMG_0001.JPG").write_bytes(b"an older file of the same name")
    prom = tmp_path / "prom"
    config = write_config(tmp_path / "c.toml", dsn, library, [
        {"path": folders["keep"], "name": "keep"},
        {"path": folders["archive"], "name": "archive", "after": "archive",
         "archive_dir": done},
        {"path": folders["delete"], "name": "delete", "after": "delete"}],
        extra=f'[metrics]\ntextfile_dir = "{prom}"')
    result = run_once(config)
    assert result.returncode == 0, result.stderr

    in_library = set(assert_catalog_matches_disk(db, library).values())
    assert {sha1(p) for p in sources if p.exists()} <= in_library
    assert {__import__("hashlib").sha1(d).hexdigest() for d in sources.values()} <= in_library
    for path, data in sources.items():
        rel = path.relative_to(path.parents[len(path.relative_to(tmp_path).parts) - 2])
        if path.is_relative_to(folders["keep"]):
            assert path.read_bytes() == data                     # left alone
        elif path.is_relative_to(folders["archive"]):
            assert not path.exists()
            if str(rel) == "sub/IMG_0001.JPG":                 # never over another file
                assert (done / "sub/IMG_0001-1.JPG").read_bytes() == data
            else:
                assert (done / rel).read_bytes() == data
        else:
            assert not path.exists()                           # deleted, duplicates too
    assert (done / "sub/IMG_0001.JPG").read_bytes() == b"an older file of the same name"
    assert sorted(str(p.relative_to(done)) for p in done.rglob("*") if p.is_file()) == [
        "DUP.JPG", "sub/IMG_0001-1.JPG", "sub/IMG_0001.JPG", "sub/IMG_0001.XMP"]
    assert [p for p in folders["archive"].rglob("*") if p.is_file()] == []
    assert [p for p in folders["delete"].rglob("*") if p.is_file()] == []
    states = db.execute("SELECT watch_name, state, count(*) AS n FROM watch_files"
                        " GROUP BY 1, 2 ORDER BY 1").fetchall()
    assert [(r["watch_name"], r["state"], r["n"]) for r in states] == [
        ("archive", "archived", 3), ("delete", "deleted", 3), ("keep", "kept", 3)]
    dup = db.execute("SELECT count(*) AS n FROM session_files WHERE relpath = 'DUP.JPG'"
                     " AND outcome = 'duplicate'").fetchone()
    assert dup["n"] == 3

    from prometheus_client.parser import text_string_to_metric_families

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families((prom / "photo_ingest_watch.prom")
                                                         .read_text()) for s in fam.samples}
    assert samples[("photo_ingest_watch_folders", ())] == 3
    assert samples[("photo_ingest_watch_up", ())] == 0           # written at exit
    for name in ("keep", "archive", "delete"):
        w = (("watch", name),)
        assert samples[("photo_ingest_watch_files_seen_total", w)] == 3
        assert samples[("photo_ingest_watch_files_ingested_total",
                        (("outcome", "duplicate"), ("watch", name)))] == 1
        assert samples[("photo_ingest_watch_files_pending", w)] == 0
    assert samples[("photo_ingest_watch_files_archived_total", (("watch", "archive"),))] == 3
    assert samples[("photo_ingest_watch_files_deleted_total", (("watch", "delete"),))] == 3
    assert samples[("photo_ingest_watch_files_deleted_total", (("watch", "keep"),))] == 0
    assert oct((prom / "photo_ingest_watch.prom").stat().st_mode & 0o777) == "0o644"


def immich_config(tmp_path: Path, dsn: str, library: Path, server: Any, key: str,
                  watch: dict[str, Any]) -> Path:
    from support.immich_catalog import immich_table

    key_file = tmp_path / "immich.key"
    key_file.write_text(key + "\n")
    return write_config(tmp_path / "c.toml", dsn, library, [watch],
                        extra=immich_table(server.url, key_file))


def test_wait_for_immich_deletes_only_what_immich_has(
        tmp_path: Path, dsn: str, library: Path, inbox: Path, fake_immich: Any,
        immich_key: str, db: psycopg.Connection[Any]) -> None:
    from support.immich_catalog import run_sync

    config = immich_config(tmp_path, dsn, library, fake_immich, immich_key, {
        "path": inbox, "after": "delete", "wait_for_immich": True})
    files = {inbox / f"IMG_{n}.JPG": payload(n) for n in range(3)}
    for path, data in files.items():
        path.write_bytes(data)
    assert run_once(config).returncode == 0
    assert all(p.read_bytes() == d for p, d in files.items())     # Immich has none yet
    assert set(watch_rows(db).values()) == {"ingested"}
    assert run_sync(config, "--once").returncode == 0
    checksums = {a.checksum for a in fake_immich.assets.values()}
    assert checksums == {sha1(p) for p in files}
    assert run_once(config).returncode == 0
    assert not any(p.exists() for p in files)
    assert set(watch_rows(db).values()) == {"deleted"}
    assert set(assert_catalog_matches_disk(db, library).values()) == checksums


def test_a_file_rewritten_between_ingest_and_delete_is_not_deleted(
        tmp_path: Path, dsn: str, library: Path, inbox: Path, fake_immich: Any,
        immich_key: str, db: psycopg.Connection[Any]) -> None:
    from support.immich_catalog import run_sync

    config = immich_config(tmp_path, dsn, library, fake_immich, immich_key, {
        "path": inbox, "after": "delete", "wait_for_immich": True})
    photo = inbox / "IMG_0001.JPG"
    photo.write_bytes(payload(1))
    first = sha1(photo)
    assert run_once(config).returncode == 0
    st = photo.stat()
    photo.write_bytes(payload(2))                  # same size, and the old mtime put back:
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns))   # only the content tells
    assert run_sync(config, "--once").returncode == 0       # Immich acknowledges version 1
    result = run_once(config)
    assert result.returncode == 0, result.stderr
    assert "rewritten since its ingest" in result.stderr
    assert photo.read_bytes() == payload(2)                  # not deleted
    library_files = set(assert_catalog_matches_disk(db, library).values())
    assert {first, sha1(photo)} <= library_files             # the new version ingested too
    row = db.execute("SELECT state, encode(sha1, 'hex') AS sha1 FROM watch_files").fetchone()
    assert row == {"state": "ingested", "sha1": sha1(photo)}  # waits for Immich in its turn
    assert [p.name for p in inbox.iterdir()] == ["IMG_0001.JPG"]   # no hidden leftovers


# Right after: the intent row, the rename to the hidden name, the archive link (of the
# second file), the removal of the hidden name, the third file's final row.
CRASH_POINTS = [("photo_ingest.watch.store.moving", 1), ("photo_ingest.watch.after.set_aside", 1),
                ("photo_ingest.watch.after.link_archive", 2),
                ("photo_ingest.watch.after.drop_aside", 1),
                ("photo_ingest.watch.store.finished", 3)]


@pytest.mark.parametrize(("after", "point", "nth"), [
    (after, point, nth) for after in ("archive", "delete") for point, nth in CRASH_POINTS
    if after == "archive" or "link_archive" not in point])
def test_kill_9_in_the_after_step_loses_nothing(
        tmp_path: Path, dsn: str, library: Path, inbox: Path, db: psycopg.Connection[Any],
        after: str, point: str, nth: int) -> None:
    done = tmp_path / "done"
    watch: dict[str, Any] = {"path": inbox, "after": after}
    if after == "archive":
        watch["archive_dir"] = done
    config = write_config(tmp_path / "c.toml", dsn, library, [watch])
    files = {f"d{n % 2}/IMG_{n}.JPG": payload(n) for n in range(4)}
    for rel, data in files.items():
        (inbox / rel).parent.mkdir(exist_ok=True)
        (inbox / rel).write_bytes(data)
    wanted = {__import__("hashlib").sha1(d).hexdigest() for d in files.values()}
    crash = subprocess.run([sys.executable, str(REPO / "tests/support/crash_after.py"), point,
                            str(nth), "--", *argv(config, "--once")[3:]],
                           capture_output=True, text=True, timeout=120)
    assert crash.returncode == -signal.SIGKILL, crash.stderr
    # At the instant of the kill, each source is in place, or it is in the library and
    # set aside under a hidden name in its folder, or archived (or deleted).
    in_library = set(assert_catalog_matches_disk(db, library).values())
    for rel, data in files.items():
        digest = __import__("hashlib").sha1(data).hexdigest()
        if (inbox / rel).exists():
            assert (inbox / rel).read_bytes() == data
            continue
        assert digest in in_library
        aside = [p for p in (inbox / rel).parent.glob(".photo-ingest~*")
                 if p.name.endswith(os.path.basename(rel))]
        assert aside or after == "delete" or (done / rel).read_bytes() == data, rel
    assert run_once(config).returncode == 0                 # the restart finishes the job
    assert [p for p in inbox.rglob("*") if p.is_file()] == []
    if after == "archive":
        archived = {str(p.relative_to(done)): p.read_bytes() for p in done.rglob("*")
                    if p.is_file()}
        assert archived == files                           # each exactly once, same names
    assert set(watch_rows(db).values()) == {"archived" if after == "archive" else "deleted"}
    assert wanted <= set(assert_catalog_matches_disk(db, library).values())


def test_a_stream_of_files_makes_one_session(
        tmp_path: Path, dsn: str, library: Path, inbox: Path, watcher: Callable[..., Running],
        db: psycopg.Connection[Any]) -> None:
    config = write_config(tmp_path / "c.toml", dsn, library, [{"path": inbox}])
    w = watcher(config)
    for n in range(25):                  # a phone dump: one file every 0.15 s
        (inbox / f"IMG_{n:04d}.JPG").write_bytes(payload(n))
        time.sleep(0.15)

    def sessions() -> list[dict[str, Any]]:
        return db.execute("SELECT status, files_copied FROM ingest_sessions").fetchall()

    # counts are written at the end of each batch; the session stays open (quiet < 60 s)
    wait_for(lambda: sessions() == [{"status": "running", "files_copied": 25}],
             what="the dump")
    assert w.stop() == 0
    assert sessions() == [{"status": "completed", "files_copied": 25}]
    assert len(assert_catalog_matches_disk(db, library)) == 25


def test_a_changed_policy_applies_to_files_already_kept(
        tmp_path: Path, dsn: str, library: Path, inbox: Path,
        db: psycopg.Connection[Any]) -> None:
    (inbox / "IMG_0001.JPG").write_bytes(payload(1))
    config = write_config(tmp_path / "c.toml", dsn, library, [{"path": inbox}])
    assert run_once(config).returncode == 0
    assert watch_rows(db) == {str(inbox / "IMG_0001.JPG"): "kept"}
    config = write_config(tmp_path / "c.toml", dsn, library, [{"path": inbox,
                                                               "after": "delete"}])
    assert run_once(config).returncode == 0
    assert not (inbox / "IMG_0001.JPG").exists()
    assert watch_rows(db) == {str(inbox / "IMG_0001.JPG"): "deleted"}
    assert db.execute("SELECT count(*) AS n FROM ingest_sessions").fetchone()["n"] == 1
    assert len(assert_catalog_matches_disk(db, library)) == 1
