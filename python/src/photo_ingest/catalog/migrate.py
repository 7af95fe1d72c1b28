"""Versioned SQL migrations, applied in order under an advisory lock.

The lock makes concurrent starts safe: the first process applies what is missing, the
others wait for it and then find nothing left to do.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from typing import Any

import psycopg

log = logging.getLogger(__name__)

# An arbitrary constant shared by every photo-ingest process: "photo-in" in ASCII.
MIGRATION_LOCK = 0x70686F746F2D696E

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def available() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every shipped migration, in order."""
    found = []
    for entry in resources.files("photo_ingest.catalog").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply missing migrations; returns the versions applied by this call."""
    applied_now: list[int] = []
    was_autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] if isinstance(row, tuple) else row["version"]
                    for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, sql in available():
                if version in done:
                    continue
                log.info("applying catalog migration %04d_%s", version, name)
                conn.execute(sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
                applied_now.append(version)
    finally:
        conn.autocommit = was_autocommit
    return applied_now
