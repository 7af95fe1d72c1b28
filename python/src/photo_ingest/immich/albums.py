"""Albums: a name per asset from the `immich.album` template, found or created once, and
assets added in batches — uploaded ones and duplicates alike.

Find-or-create is race-safe at two levels. Workers sharing a catalog take an advisory
lock per album name and remember the album's id in `immich_albums`, so only one of them
creates it. Workers that do not share a catalog (or an album made by hand meanwhile) can
still end up with two albums of one name — Immich allows that — so every lookup picks the
oldest album of that name: all workers converge on the same one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from photo_ingest.ingest import layout

if TYPE_CHECKING:
    from photo_ingest.immich.client import ImmichClient
    from photo_ingest.immich.store import Store

log = logging.getLogger("photo_ingest.immich")

MAX_NAME = 200


def album_name(template: str, *, captured_local: datetime, original_name: str,
               media_type: str, make: str | None, model: str | None,
               card_label: str | None, session: int) -> str:
    vals = layout.values(captured=captured_local, name=original_name.encode(),
                         media_type=media_type, make=make, model=model,
                         card_label=card_label, session=session, seq=0)
    name = template.format(**vals)
    name = "".join(ch if ch.isprintable() else " " for ch in name).strip()
    return name[:MAX_NAME] or layout.UNKNOWN


def example_album(template: str) -> str:
    return album_name(template, captured_local=datetime(2024, 7, 1, 12, 0),
                      original_name="IMG_0001.JPG", media_type="photo", make="Canon",
                      model="Canon EOS R5", card_label="EOS_DIGITAL", session=1)


def oldest(albums: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return min(albums, key=lambda a: (str(a.get("createdAt", "")), str(a["id"])))


@dataclass
class AddResult:
    done: list[int] = field(default_factory=list)                    # asset ids
    failed: list[tuple[int, str]] = field(default_factory=list)      # (asset id, reason)


class Albums:
    """The album directory of one Immich account (client + store)."""

    def __init__(self, client: ImmichClient, store: Store) -> None:
        self.client = client
        self.store = store
        self._ids: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.created: list[str] = []

    async def ensure(self, name: str) -> str:
        if name in self._ids:
            return self._ids[name]
        async with self._locks.setdefault(name, asyncio.Lock()):
            if name in self._ids:
                return self._ids[name]
            album_id = await self.store.album_id(name)
            if album_id is None:
                async with self.store.album_lock(name):
                    album_id = await self.store.album_id(name)   # made while we waited?
                    if album_id is None:
                        album_id = await self._find_or_create(name)
                        await self.store.remember_album(name, album_id)
            self._ids[name] = album_id
            return album_id

    async def _find_or_create(self, name: str) -> str:
        found = await self.client.albums_named(name)
        if found:
            return str(oldest(found)["id"])
        created = await self.client.create_album(name)
        log.info("created Immich album %r", name)
        self.created.append(name)
        again = await self.client.albums_named(name)
        return str(oldest(again or [created])["id"])

    async def forget(self, name: str) -> None:
        self._ids.pop(name, None)
        await self.store.forget_album(name)

    async def add(self, name: str, members: Sequence[tuple[int, str]]) -> AddResult:
        """Put (asset id, Immich id) MEMBERS into album NAME. "Already in the album" is
        success. An album deleted in Immich since it was remembered is made again once.
        Raises the client's errors for the whole batch (the caller decides)."""
        from photo_ingest.immich.client import ApiError

        by_immich: dict[str, list[int]] = {}
        for asset_id, immich_id in members:
            by_immich.setdefault(immich_id.lower(), []).append(asset_id)
        for attempt in (1, 2):
            album_id = await self.ensure(name)
            try:
                results = await self.client.add_to_album(album_id, list(by_immich))
                break
            except ApiError as exc:
                if attempt == 1 and exc.status in (400, 404) and "not found" in \
                        exc.message.lower():
                    log.warning("Immich album %r (%s) is gone; making it again", name,
                                album_id)
                    await self.forget(name)
                    continue
                raise
        out = AddResult()
        seen: set[str] = set()
        for r in results:
            immich_id = str(r.get("id", "")).lower()
            assets = by_immich.get(immich_id, [])
            seen.add(immich_id)
            if r.get("success") or r.get("error") == "duplicate":
                out.done += assets
            else:
                why = r.get("error") or "unknown"
                detail = f": {r['errorMessage']}" if r.get("errorMessage") else ""
                hint = ("; it is not this user's asset any more (deleted from Immich?)"
                        if why in ("no_permission", "not_found") else "")
                out.failed += [(a, f"album {name!r}: Immich would not add asset {immich_id}"
                                   f" ({why}{detail}){hint}") for a in assets]
        for immich_id, assets in by_immich.items():
            if immich_id not in seen:
                out.failed += [(a, f"album {name!r}: no answer for asset {immich_id}")
                               for a in assets]
        return out
