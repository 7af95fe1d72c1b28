"""Helpers for the Immich sync tests: catalogues with real library files, configs with an
[immich] table pointing at the fake, and the sync command run as a user runs it.

`seed` writes the rows the ingest would write (a session, assets, sidecars) for files it
creates in the library, so a test can have 200 assets in a fraction of a second; the
end-to-end tests use the real `photo-ingest ingest` instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

REPO = Path(__file__).resolve().parents[2]

MEDIA = {".jpg": "photo", ".jpeg": "photo", ".heic": "photo", ".png": "photo",
         ".cr2": "raw", ".dng": "raw", ".nef": "raw", ".mef": "raw", ".mos": "raw",
         ".mov": "video", ".mp4": "video"}


@dataclass
class Spec:
    path: str                         # library path, e.g. "2024/06/01/IMG_0001.JPG"
    data: bytes | None = None         # default: random bytes of `size`
    size: int = 2048
    captured: datetime = datetime(2024, 6, 1, 12, 0, 0)
    offset: str | None = "+02:00"     # None: assumed (captured_at in UTC+1 here)
    xmp: bytes | None = None          # an XMP sidecar next to it
    name: str | None = None           # original name (default: the file name)
    session: int = 0                  # index into the sessions made by seed()

    def bytes(self, seed: int) -> bytes:
        if self.data is not None:
            return self.data
        return random.Random(f"{self.path}:{seed}").randbytes(self.size)


def connect(dsn: str) -> psycopg.Connection[dict[str, Any]]:
    from photo_ingest import catalog

    return catalog.connect(dsn)


def seed(dsn: str, library: Path, specs: Sequence[Spec], *, card_label: str | None = "EOS",
         sessions: int = 1, salt: int = 0) -> list[int]:
    """Create the files and their catalog rows; returns the asset ids in SPECS order."""
    ids = []
    with connect(dsn) as conn, conn.transaction():
        session_ids = [conn.execute(
            "INSERT INTO ingest_sessions (source, host, pid, card_label, status)"
            " VALUES ('/media/card', 'test', 1, %s, 'completed') RETURNING id",
            (card_label,)).fetchone()["id"] for _ in range(sessions)]
        for spec in specs:
            data = spec.bytes(salt)
            target = library / spec.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            ext = os.path.splitext(spec.path)[1].lower()
            if spec.offset is not None:
                sign = 1 if spec.offset[0] == "+" else -1
                hours, minutes = spec.offset[1:].split(":")
                tz = timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))
            else:
                tz = timezone(timedelta(hours=1))
            name = spec.name or os.path.basename(spec.path)
            row = conn.execute(
                "INSERT INTO assets (sha1, size, library_path, media_type, original_path,"
                " original_name, captured_at, captured_local, capture_offset, capture_source,"
                " session_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'DateTimeOriginal',"
                " %s) RETURNING id",
                (hashlib.sha1(data).digest(), len(data), spec.path, MEDIA.get(ext, "photo"),
                 "DCIM/100CANON/" + name, name, spec.captured.replace(tzinfo=tz),
                 spec.captured, spec.offset, session_ids[spec.session])).fetchone()
            ids.append(row["id"])
            if spec.xmp is not None:
                xmp_path = os.path.splitext(spec.path)[0] + ".XMP"
                (library / xmp_path).write_bytes(spec.xmp)
                conn.execute(
                    "INSERT INTO sidecars (asset_id, sha1, size, library_path, original_path,"
                    " session_id) VALUES (%s, %s, %s, %s, %s, %s)",
                    (row["id"], hashlib.sha1(spec.xmp).digest(), len(spec.xmp), xmp_path,
                     "DCIM/100CANON/" + os.path.basename(xmp_path), session_ids[spec.session]))
        conn.execute("SELECT pg_notify('photo_ingest_assets', 'batch')")
    return ids


def photos(count: int, *, prefix: str = "IMG_", size: int = 2048, day: int = 1,
           start: int = 0) -> list[Spec]:
    return [Spec(f"2024/06/{day:02d}/{prefix}{i:04d}.JPG", size=size,
                 captured=datetime(2024, 6, day, 10, 0, 0) + timedelta(seconds=i))
            for i in range(start, start + count)]


def immich_table(url: str, key_file: Path, **settings: Any) -> str:
    lines = ["[immich]", f'url = "{url}"', f'api_key_file = "{key_file}"']
    for k, v in {"metrics_listen": "", "retry_delay": 0, **settings}.items():
        if isinstance(v, str):
            lines.append(f'{k} = "{v}"')
        elif isinstance(v, bool):
            lines.append(f"{k} = {str(v).lower()}")
        else:
            lines.append(f"{k} = {v}")
    return "\n".join(lines) + "\n"


def write_config(path: Path, dsn: str, library: Path, url: str, key: str,
                 **settings: Any) -> Path:
    key_file = path.parent / f"{path.stem}.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    path.write_text(f'[library]\npath = "{library}"\n[database]\nurl = "{dsn}"\n'
                    f'[ingest]\ntimezone = "Europe/Berlin"\n'
                    + immich_table(url, key_file, **settings))
    return path


def sync_argv(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "photo_ingest", "--config", str(config), *args]


def run_sync(config: Path, *args: str, timeout: float = 180,
             **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`photo-ingest sync ARGS` in a child process."""
    return run_command(config, "sync", *args, timeout=timeout, **kwargs)


def run_command(config: Path, *args: str, timeout: float = 180,
                **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(sync_argv(config, *args), capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def load(config: Path) -> tuple[Any, Any]:
    from photo_ingest.config import load as load_config

    cfg = load_config(config)
    return cfg, cfg.immich


def sync_once(config: Path, **kwargs: Any) -> Any:
    """`sync --once` in this process (a fresh event loop); returns the Summary."""
    from photo_ingest.immich.sync import Syncer

    cfg, icfg = load(config)
    return asyncio.run(Syncer(cfg, icfg, **kwargs).run_once())


def rows(db: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """library path -> its immich_assets row (+ the asset's sha1 hex)."""
    found = db.execute(
        "SELECT a.library_path, encode(a.sha1, 'hex') AS sha1, i.state, i.result,"
        " i.immich_id::text AS immich_id, i.album, i.album_id::text AS album_id, i.reason,"
        " i.attempts, i.last_error, i.lease_owner, i.checked_at"
        " FROM immich_assets i JOIN assets a ON a.id = i.asset_id").fetchall()
    return {r["library_path"]: r for r in found}


def dict_connect(dsn: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(dsn, autocommit=True, row_factory=dict_row)
