"""Checks shared by the ingest tests: what is on disk, and does the catalog agree?"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import psycopg


def sha1(path: str | bytes | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def library_files(library: Path) -> dict[str, str]:
    """relative path -> SHA-1 of every published file (the incoming folder excluded)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(library):
        if Path(dirpath) == library:
            dirnames[:] = [d for d in dirnames if d != ".incoming"]
        for name in filenames:
            path = Path(dirpath) / name
            out[str(path.relative_to(library))] = sha1(path)
    return out


def incoming(library: Path) -> list[str]:
    folder = library / ".incoming"
    return sorted(os.listdir(folder)) if folder.exists() else []


def catalogued(db: psycopg.Connection[Any]) -> dict[str, str]:
    rows = db.execute(
        "SELECT library_path, encode(sha1, 'hex') AS sha1 FROM assets UNION ALL "
        "SELECT library_path, encode(sha1, 'hex') FROM sidecars"
    ).fetchall()
    return {r["library_path"]: r["sha1"] for r in rows}


def assert_catalog_matches_disk(db: psycopg.Connection[Any], library: Path) -> dict[str, str]:
    """The invariant: the library on disk and the catalog describe the same files."""
    on_disk = library_files(library)
    assert catalogued(db) == on_disk
    assert incoming(library) == []
    return on_disk


def source_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha1(p) for p in sorted(root.rglob("*")) if p.is_file()}


def ingest_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.stdout, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def random_files(root: Path, count: int, size: int, seed: int, prefix: str = "IMG_",
                 ext: str = ".JPG", mtime: float = 1_717_200_000.0) -> list[Path]:
    """COUNT files of SIZE random bytes (no EXIF: their date is their mtime)."""
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        path = root / f"{prefix}{seed:03d}_{i:04d}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        os.utime(path, (mtime, mtime))
        paths.append(path)
    return paths
