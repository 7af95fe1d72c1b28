"""The sync stage's SQL: per-asset state, leases, retries and the album directory.

Coordination between sync workers (one host or many, one catalog) is by row locks and
leases, never local files:

* `claim` picks pending rows with `FOR UPDATE SKIP LOCKED` — two workers claiming at
  the same instant get disjoint rows — and stamps them with a lease (owner + expiry).
  Rows under someone else's unexpired lease are not claimable.
* A running worker renews its leases (`renew`, every lease/3); a worker that dies stops
  renewing and its rows become claimable again when the lease runs out.
* Every result is written with `WHERE state = 'pending'`, so a late result can never
  overwrite a final one; and Immich's own checksum dedup means even a double upload
  after a lost lease ends as one asset (the second gets "duplicate").

One connection per sync process; statements are serialised by an asyncio lock, so tasks
can share it safely (transactions never interleave).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
import zlib
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from photo_ingest.catalog.db import CatalogError

Conn = psycopg.AsyncConnection[dict[str, Any]]

#: a Live Photo's still and video are captured within this many seconds of each other
LIVE_SECONDS = 3.0

#: advisory lock namespace for album creation: "immich-a" in ASCII, xor'ed with the name
ALBUM_LOCK = 0x696D6D6963682D61


@dataclass
class Item:
    """A claimed asset with what the sync needs to know about it."""

    asset_id: int
    sha1: bytes
    size: int
    library_path: str
    media_type: str
    original_name: str
    original_path: str
    captured_at: datetime | None
    captured_local: datetime
    capture_offset: str | None
    camera_make: str | None
    camera_model: str | None
    session_id: int
    card_label: str | None
    xmp: str | None                 # library path of its XMP sidecar, if any
    immich_id: str | None
    result: str | None
    album: str | None
    attempts: int
    live_video_id: int | None       # this still's Live Photo video
    live_photo_id: int | None       # this video's Live Photo still


@dataclass(frozen=True)
class Partner:
    asset_id: int
    state: str
    result: str | None
    immich_id: str | None
    checked: bool
    leased_by: str | None           # owner of an unexpired lease


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


async def connect(conninfo: str) -> Conn:
    """An autocommit async connection; the schema is migrated first (synchronously)."""
    from photo_ingest import catalog

    def migrate() -> None:
        catalog.connect(conninfo).close()

    await asyncio.to_thread(migrate)
    try:
        return await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, row_factory=dict_row,
            application_name="photo-ingest sync", connect_timeout=10)
    except psycopg.OperationalError as exc:
        text = str(exc).strip().splitlines()
        raise CatalogError("cannot connect to the catalog database: "
                           f"{text[-1] if text else type(exc).__name__}") from exc


_ITEM_COLUMNS = """
    i.asset_id, i.immich_id::text AS immich_id, i.result, i.album, i.attempts,
    a.sha1, a.size, a.library_path, a.media_type, a.original_name, a.original_path,
    a.captured_at, a.captured_local, a.capture_offset, a.camera_make, a.camera_model,
    a.session_id, s.card_label,
    (SELECT sc.library_path FROM sidecars sc WHERE sc.asset_id = a.id
      AND lower(sc.library_path) LIKE '%%.xmp' ORDER BY sc.id DESC LIMIT 1) AS xmp,
    (SELECT lp.video_id FROM immich_live_pairs lp WHERE lp.photo_id = a.id) AS live_video_id,
    (SELECT lp.photo_id FROM immich_live_pairs lp WHERE lp.video_id = a.id) AS live_photo_id
"""

PHASES = {
    "check": "i.checked_at IS NULL AND i.immich_id IS NULL",
    "upload": "i.checked_at IS NOT NULL AND i.immich_id IS NULL",
    "album": "i.immich_id IS NOT NULL",
    "any": "TRUE",
}


class Store:
    def __init__(self, conn: Conn, owner: str | None = None, lease: float = 300.0) -> None:
        self.conn = conn
        self.owner = owner or worker_id()
        self.lease = lease
        self.target_id = 0
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        async with self._lock:
            await self.conn.close()

    # Every database round trip runs shielded: cancelling a caller (a stopping heartbeat,
    # an abandoned upload) never interrupts psycopg in the middle of a statement, which
    # would leave the shared connection unusable. The statement finishes; the caller is
    # cancelled after it.

    async def _all(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        async def run() -> list[dict[str, Any]]:
            async with self._lock:
                cur = await self.conn.execute(sql.encode(), params)
                return await cur.fetchall() if cur.description else []
        return await asyncio.shield(run())

    async def _atomic(self, statements: Sequence[tuple[str, Any]]) -> None:
        """Several statements in one transaction."""
        async def run() -> None:
            async with self._lock, self.conn.transaction():
                for sql, params in statements:
                    await self.conn.execute(sql.encode(), params)
        await asyncio.shield(run())

    async def _one(self, sql: str, params: Any = None) -> dict[str, Any] | None:
        rows = await self._all(sql, params)
        return rows[0] if rows else None

    # --- targets ------------------------------------------------------------------------

    async def register_target(self, user_id: str, mode: str, url: str,
                              email: str | None) -> dict[str, Any]:
        row = await self._one(
            "INSERT INTO immich_targets (user_id, mode, url, user_email)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, mode) DO UPDATE"
            " SET url = EXCLUDED.url, user_email = EXCLUDED.user_email, seen_at = now()"
            " RETURNING id, library_id::text AS library_id, last_scan_at",
            (user_id, mode, url, email))
        assert row is not None
        self.target_id = int(row["id"])
        return row

    async def set_library(self, library_id: str) -> None:
        await self._all("UPDATE immich_targets SET library_id = %s WHERE id = %s",
                        (library_id, self.target_id))

    async def pass_ok(self) -> None:
        await self._all("UPDATE immich_targets SET last_error = NULL, last_error_at = NULL,"
                        " seen_at = now() WHERE id = %s AND last_error IS NOT NULL",
                        (self.target_id,))

    async def pass_failed(self, error: str) -> None:
        if self.target_id:
            await self._all("UPDATE immich_targets SET last_error = %s, last_error_at = now()"
                            " WHERE id = %s", (error[:2000], self.target_id))

    async def scanned(self) -> None:
        await self._all("UPDATE immich_targets SET last_scan_at = now() WHERE id = %s",
                        (self.target_id,))

    # --- the queue ------------------------------------------------------------------------

    async def enqueue(self) -> int:
        """A pending row for every catalogued asset without one, and the Live Photo pairs
        of the sessions those assets came from. Returns the number of new rows."""
        rows = await self._all(
            """
            WITH new AS (
                INSERT INTO immich_assets (target_id, asset_id)
                SELECT %(t)s, a.id FROM assets a
                WHERE NOT EXISTS (SELECT 1 FROM immich_assets i
                                  WHERE i.target_id = %(t)s AND i.asset_id = a.id)
                ON CONFLICT DO NOTHING
                RETURNING asset_id
            )
            SELECT a.session_id, count(*) AS n FROM new JOIN assets a ON a.id = new.asset_id
            GROUP BY a.session_id
            """, {"t": self.target_id})
        if rows:
            await self._pair_live_photos([r["session_id"] for r in rows])
        return sum(int(r["n"]) for r in rows)

    async def _pair_live_photos(self, sessions: Sequence[int]) -> int:
        """Stills (HEIC/HEIF/JPEG) and videos (MOV/MP4) of one session and folder with one
        name stem, captured within LIVE_SECONDS: each still gets the nearest such video."""
        candidates = await self._all(
            r"""
            SELECT id, session_id, media_type, captured_at, captured_local,
                   lower(regexp_replace(original_path, '\.[^./]*$', '')) AS stem
            FROM assets
            WHERE session_id = ANY(%s) AND (
                (media_type = 'photo' AND lower(original_name) ~ '\.(heic|heif|hif|jpe?g)$')
                OR (media_type = 'video' AND lower(original_name) ~ '\.(mov|mp4)$'))
            """, (list(sessions),))
        groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for c in candidates:
            groups.setdefault((c["session_id"], c["stem"]), []).append(c)
        pairs: list[tuple[int, int]] = []
        for members in groups.values():
            stills = sorted((m for m in members if m["media_type"] == "photo"),
                            key=lambda m: m["id"])
            videos = [m for m in members if m["media_type"] == "video"]
            for still in stills:
                near = sorted((abs(_seconds_between(still, v)), v["id"], v) for v in videos)
                if near and near[0][0] <= LIVE_SECONDS:
                    video = near[0][2]
                    videos.remove(video)
                    pairs.append((still["id"], video["id"]))
        if pairs:
            await self._all(
                "INSERT INTO immich_live_pairs (photo_id, video_id)"
                " SELECT * FROM unnest(%s::bigint[], %s::bigint[]) ON CONFLICT DO NOTHING",
                ([p for p, _ in pairs], [v for _, v in pairs]))
        return len(pairs)

    async def retry_failed(self) -> int:
        """Failed, trashed and skipped rows back to pending (album-only failures keep
        their Immich id and only redo the album)."""
        row = await self._one(
            "WITH r AS (UPDATE immich_assets SET state = 'pending', reason = NULL,"
            "  attempts = 0, next_attempt_at = now(), checked_at = NULL, last_error = NULL,"
            "  immich_id = CASE WHEN state = 'failed' THEN immich_id END,"
            "  result = CASE WHEN state = 'failed' THEN result END,"
            "  lease_owner = NULL, lease_expires_at = NULL, updated_at = now()"
            " WHERE target_id = %s AND state IN ('failed', 'trashed', 'skipped')"
            " RETURNING 1) SELECT count(*) AS n FROM r", (self.target_id,))
        return int(row["n"]) if row else 0

    async def claim(self, phase: str, limit: int,
                    ids: Sequence[int] | None = None) -> list[Item]:
        """Lease up to LIMIT due pending rows of PHASE (optionally only IDS), in asset
        order. Rows locked or leased by another worker are skipped, not waited for."""
        only = "AND i.asset_id = ANY(%(ids)s)" if ids is not None else ""
        rows = await self._all(
            f"""
            WITH c AS (
                SELECT i.asset_id FROM immich_assets i
                WHERE i.target_id = %(t)s AND i.state = 'pending'
                  AND i.next_attempt_at <= now()
                  AND (i.lease_expires_at IS NULL OR i.lease_expires_at < now())
                  AND {PHASES[phase]} {only}
                ORDER BY i.asset_id LIMIT %(n)s
                FOR UPDATE OF i SKIP LOCKED
            )
            UPDATE immich_assets i
            SET lease_owner = %(me)s, lease_expires_at = now() + make_interval(secs => %(l)s)
            FROM c JOIN assets a ON a.id = c.asset_id
                   JOIN ingest_sessions s ON s.id = a.session_id
            WHERE i.target_id = %(t)s AND i.asset_id = c.asset_id
            RETURNING {_ITEM_COLUMNS}
            """,
            {"t": self.target_id, "me": self.owner, "n": limit, "l": self.lease,
             "ids": list(ids or ())})
        items = [Item(**{**r, "sha1": bytes(r["sha1"])}) for r in rows]
        items.sort(key=lambda it: it.asset_id)
        return items

    async def partners(self, asset_ids: Iterable[int]) -> dict[int, Partner]:
        ids = sorted(set(asset_ids))
        if not ids:
            return {}
        rows = await self._all(
            "SELECT asset_id, state, result, immich_id::text AS immich_id,"
            " checked_at IS NOT NULL AS checked,"
            " CASE WHEN lease_expires_at > now() THEN lease_owner END AS leased_by"
            " FROM immich_assets WHERE target_id = %s AND asset_id = ANY(%s)",
            (self.target_id, ids))
        return {r["asset_id"]: Partner(**r) for r in rows}

    async def renew(self) -> int:
        row = await self._one(
            "WITH r AS (UPDATE immich_assets"
            " SET lease_expires_at = now() + make_interval(secs => %s)"
            " WHERE target_id = %s AND lease_owner = %s AND state = 'pending' RETURNING 1)"
            " SELECT count(*) AS n FROM r", (self.lease, self.target_id, self.owner))
        return int(row["n"]) if row else 0

    async def release(self, ids: Sequence[int] | None = None, delay: float = 0.0) -> int:
        """Give leases back without counting an attempt (stop, deferral, server down)."""
        only = "AND asset_id = ANY(%(ids)s)" if ids is not None else ""
        row = await self._one(
            "WITH r AS (UPDATE immich_assets SET lease_owner = NULL, lease_expires_at = NULL,"
            " next_attempt_at = greatest(next_attempt_at,"
            "                            now() + make_interval(secs => %(d)s))"
            f" WHERE target_id = %(t)s AND lease_owner = %(me)s {only} RETURNING 1)"
            " SELECT count(*) AS n FROM r",
            {"t": self.target_id, "me": self.owner, "ids": list(ids or ()), "d": delay})
        return int(row["n"]) if row else 0

    async def mark_checked(self, ids: Sequence[int]) -> None:
        """Bulk check said "accept": ready for upload, by whichever worker claims it."""
        await self._all(
            "UPDATE immich_assets SET checked_at = now(), lease_owner = NULL,"
            " lease_expires_at = NULL, updated_at = now()"
            " WHERE target_id = %s AND asset_id = ANY(%s) AND state = 'pending'",
            (self.target_id, list(ids)))

    async def record_found(self, rows: Sequence[tuple[int, str, str, str | None, int | None]],
                           ) -> None:
        """(asset id, uploaded|duplicate, Immich id, album or None, bytes sent): done now
        when no album is wanted, else pending until it is in its album."""
        if not rows:
            return
        statements: list[tuple[str, Any]] = [(
                "UPDATE immich_assets i SET result = r.result, immich_id = r.immich_id::uuid,"
                " album = r.album, bytes_sent = r.bytes, last_error = NULL,"
                " state = CASE WHEN r.album IS NULL THEN 'done' ELSE 'pending' END,"
                " lease_owner = CASE WHEN r.album IS NULL THEN NULL ELSE i.lease_owner END,"
                " lease_expires_at = CASE WHEN r.album IS NULL THEN NULL"
                "                    ELSE i.lease_expires_at END,"
                " updated_at = now()"
                " FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::bigint[])"
                "   AS r(asset_id, result, immich_id, album, bytes)"
                " WHERE i.target_id = %s AND i.asset_id = r.asset_id AND i.state = 'pending'",
                ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                 [r[3] for r in rows], [r[4] for r in rows], self.target_id))]
        if any(r[3] is None for r in rows):
            statements.append(("UPDATE immich_targets SET last_success_at = now()"
                               " WHERE id = %s", (self.target_id,)))
        await self._atomic(statements)

    async def record_problem(self, rows: Sequence[tuple[int, str, str, str | None]]) -> None:
        """(asset id, trashed|skipped|failed, reason, Immich id or None)."""
        if not rows:
            return
        await self._all(
            "UPDATE immich_assets i SET state = r.state, reason = r.reason,"
            " immich_id = coalesce(r.immich_id::uuid, i.immich_id),"
            " result = CASE WHEN r.state = 'trashed' THEN 'duplicate' ELSE i.result END,"
            " lease_owner = NULL, lease_expires_at = NULL, updated_at = now()"
            " FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[])"
            "   AS r(asset_id, state, reason, immich_id)"
            " WHERE i.target_id = %s AND i.asset_id = r.asset_id AND i.state = 'pending'",
            ([r[0] for r in rows], [r[1] for r in rows], [r[2][:2000] for r in rows],
             [r[3] for r in rows], self.target_id))

    async def record_retry(self, ids: Sequence[int], error: str, max_attempts: int,
                           base_delay: float) -> list[tuple[int, str, int]]:
        """A transient failure: back to the queue after an exponential delay with jitter
        (base * 2^attempts * [0.5, 1.5), at most an hour), or failed once MAX_ATTEMPTS are
        used up. Returns (asset id, new state, attempts)."""
        if not ids:
            return []
        rows = await self._all(
            "UPDATE immich_assets SET attempts = attempts + 1,"
            " state = CASE WHEN attempts + 1 >= %(max)s THEN 'failed' ELSE 'pending' END,"
            " reason = CASE WHEN attempts + 1 >= %(max)s THEN 'gave up after '"
            "   || (attempts + 1) || ' attempt(s): ' || %(err)s END,"
            " last_error = %(err)s,"
            " next_attempt_at = now() + make_interval(secs =>"
            "   least(3600, %(base)s * power(2, attempts)) * (0.5 + random())),"
            " lease_owner = NULL, lease_expires_at = NULL, updated_at = now()"
            " WHERE target_id = %(t)s AND asset_id = ANY(%(ids)s) AND state = 'pending'"
            " RETURNING asset_id, state, attempts",
            {"max": max_attempts, "err": error[:2000], "base": base_delay,
             "t": self.target_id, "ids": list(ids)})
        return [(r["asset_id"], r["state"], r["attempts"]) for r in rows]

    async def album_done(self, ids: Sequence[int], album_id: str) -> None:
        if not ids:
            return
        await self._atomic([
            ("UPDATE immich_assets SET state = 'done', album_id = %s, last_error = NULL,"
             " lease_owner = NULL, lease_expires_at = NULL, updated_at = now()"
             " WHERE target_id = %s AND asset_id = ANY(%s) AND state = 'pending'",
             (album_id, self.target_id, list(ids))),
            ("UPDATE immich_targets SET last_success_at = now() WHERE id = %s",
             (self.target_id,))])

    # --- library mode ---------------------------------------------------------------------

    async def claim_library(self, limit: int) -> list[int]:
        rows = await self._all(
            """
            WITH c AS (
                SELECT asset_id FROM immich_assets
                WHERE target_id = %(t)s AND state = 'pending' AND next_attempt_at <= now()
                  AND (lease_expires_at IS NULL OR lease_expires_at < now())
                ORDER BY asset_id LIMIT %(n)s FOR UPDATE SKIP LOCKED
            )
            UPDATE immich_assets i SET lease_owner = %(me)s,
                   lease_expires_at = now() + make_interval(secs => %(l)s)
            FROM c WHERE i.target_id = %(t)s AND i.asset_id = c.asset_id
            RETURNING i.asset_id
            """, {"t": self.target_id, "me": self.owner, "n": limit, "l": self.lease})
        return [r["asset_id"] for r in rows]

    async def mark_scanned(self, ids: Sequence[int]) -> None:
        await self._atomic([
            ("UPDATE immich_assets SET state = 'done', result = 'scanned', last_error = NULL,"
             " lease_owner = NULL, lease_expires_at = NULL, updated_at = now()"
             " WHERE target_id = %s AND asset_id = ANY(%s) AND state = 'pending'",
             (self.target_id, list(ids))),
            ("UPDATE immich_targets SET last_success_at = now(), last_scan_at = now()"
             " WHERE id = %s", (self.target_id,))])

    # --- albums -----------------------------------------------------------------------------

    async def album_id(self, name: str) -> str | None:
        row = await self._one("SELECT album_id::text AS id FROM immich_albums"
                              " WHERE target_id = %s AND name = %s", (self.target_id, name))
        return str(row["id"]) if row else None

    async def remember_album(self, name: str, album_id: str) -> None:
        await self._all(
            "INSERT INTO immich_albums (target_id, name, album_id) VALUES (%s, %s, %s)"
            " ON CONFLICT (target_id, name) DO UPDATE SET album_id = EXCLUDED.album_id",
            (self.target_id, name, album_id))

    async def forget_album(self, name: str) -> None:
        await self._all("DELETE FROM immich_albums WHERE target_id = %s AND name = %s",
                        (self.target_id, name))

    @asynccontextmanager
    async def album_lock(self, name: str) -> AsyncIterator[None]:
        """A catalog-wide lock on creating album NAME (session advisory lock, polled so
        that this process's other tasks keep the shared connection)."""
        key = _lock_key(self.target_id, name)
        deadline = time.monotonic() + 120
        while True:
            row = await self._one("SELECT pg_try_advisory_lock(%s) AS ok", (key,))
            if row and row["ok"]:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"album {name!r}: another worker holds its lock")
            await asyncio.sleep(0.05)
        try:
            yield
        finally:
            await self._all("SELECT pg_advisory_unlock(%s)", (key,))

    # --- questions ---------------------------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        rows = await self._all(
            "SELECT state, count(*) AS n FROM immich_assets WHERE target_id = %s"
            " GROUP BY state", (self.target_id,))
        out = {r["state"]: int(r["n"]) for r in rows}
        row = await self._one(
            "SELECT count(*) AS n FROM immich_assets WHERE target_id = %s"
            " AND state = 'pending' AND attempts > 0", (self.target_id,))
        out["retrying"] = int(row["n"]) if row else 0
        row = await self._one(
            "SELECT count(*) AS n FROM assets a WHERE NOT EXISTS (SELECT 1 FROM immich_assets"
            " i WHERE i.target_id = %s AND i.asset_id = a.id)", (self.target_id,))
        out["pending"] = out.get("pending", 0) + (int(row["n"]) if row else 0)
        return out

    async def next_due(self) -> float | None:
        """Seconds until the earliest pending row not leased by another worker is due."""
        row = await self._one(
            "SELECT extract(epoch FROM min(greatest(next_attempt_at,"
            "   CASE WHEN lease_owner <> %s THEN lease_expires_at END)) - now()) AS s"
            " FROM immich_assets WHERE target_id = %s AND state = 'pending'",
            (self.owner, self.target_id))
        if row is None or row["s"] is None:
            return None
        return max(0.0, float(row["s"]))


def _seconds_between(a: dict[str, Any], b: dict[str, Any]) -> float:
    if a["captured_at"] is not None and b["captured_at"] is not None:
        return float((b["captured_at"] - a["captured_at"]).total_seconds())
    return float((b["captured_local"] - a["captured_local"]).total_seconds())


def _lock_key(target_id: int, name: str) -> int:
    value = ALBUM_LOCK ^ (target_id << 32) ^ zlib.crc32(name.encode())
    return value - (1 << 64) if value >= 1 << 63 else value
