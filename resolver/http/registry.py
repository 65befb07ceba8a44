"""The registry over HTTP, and how a running server follows its store (docs/registry.md).

``GET /v1/registry`` is the whole snapshot, ``GET /v1/registry/changes?since=SERIAL`` the change
log a mirror pulls, ``GET /v1/registry/status`` the registry's id, serial, upstreams and recent
conflicts. A :class:`RegistryFollower` keeps the server's answers in step with its store: after a
local write (a registration, a sync) and every ``registry_poll`` seconds it reads the store's change
log since the serial it last saw, so several ``geoweb serve`` processes on one PostgreSQL store
converge within one poll. Mirror syncs run in the same background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from common.errors import InvalidInput, SnapshotRequired
from discovery.fetch import Fetcher
from resolver.core.federation import timestamp
from resolver.registry.documents import REGISTRY_FORMAT, jurisdiction_to_feature, registry_document
from resolver.sources.answering import Answerer
from resolver.store import Change, ChangePage, Store

log = logging.getLogger(__name__)

#: Entries per change page unless the mirror asks for fewer; the most it may ask for.
PAGE_SIZE = 500
MAX_PAGE_SIZE = 5000


@dataclass
class RegistryFollower:
    """What a server answers from: the store (up to ``serial``) or the embedded registry."""

    store: Store
    answerer: Answerer
    source: str
    serial: int
    #: The fetcher mirror syncs use, and the background intervals in seconds (0: no syncs).
    fetcher: Fetcher
    poll: float = 10.0
    mirror_interval: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def catch_up(self) -> int:
        """Take the store's changes since the last catch-up; returns how many entries changed."""
        async with self.lock:
            if self.source == "embedded" and not await asyncio.to_thread(self.store.count):
                return 0
            try:
                if self.source == "embedded":
                    raise SnapshotRequired
                changes, serial = await asyncio.to_thread(self._read_changes)
                full = False
            except SnapshotRequired:  # the first entries of an empty store, or a log too short
                _, serial, entries = await asyncio.to_thread(self.store.snapshot)
                changes, full = [Change(serial, j.id, j, None) for j in entries], True
            now = timestamp()
            live = [
                c.jurisdiction
                for c in changes
                if c.jurisdiction and not c.jurisdiction.expired(now)
            ]
            held = self.answerer.resolver.jurisdictions
            removed = {c.id for c in changes} - {j.id for j in live}
            removed |= {j.id for j in held if full or j.expired(now)} - {j.id for j in live}
            if live or removed:
                await self.answerer.update(live, sorted(removed))
            if full:
                log.info(
                    "answering from the store: %d jurisdictions at serial %d", len(live), serial
                )
            self.source, self.serial = "store", serial
            return len(changes)

    def _read_changes(self) -> tuple[list[Change], int]:
        """Every change after our serial, page by page, and the serial they reach."""
        changes: list[Change] = []
        since = self.serial
        while True:
            page: ChangePage = self.store.changes(since, PAGE_SIZE)
            changes += page.changes
            since = page.last
            if not page.more:
                return changes, since


REGISTRY = web.AppKey("registry", RegistryFollower)


def json_body(body: Any, content_type: str = "application/json") -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type=content_type)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/registry", registry_snapshot)
    app.router.add_get("/v1/registry/changes", registry_changes)
    app.router.add_get("/v1/registry/status", registry_status)
    app.cleanup_ctx.append(registry_ctx)
    from resolver.registry import (
        registration,  # not at the top: registration imports REGISTRY from here
    )

    registration.add_routes(app)


def changes_document(page: ChangePage) -> dict[str, Any]:
    """A change page as mirrors read it."""
    return {
        "registry": {"format": REGISTRY_FORMAT, "id": page.registry_id, "serial": page.serial},
        "since": page.since,
        "last": page.last,
        "more": page.more,
        "changes": [_change(c) for c in page.changes],
    }


def _change(change: Change) -> dict[str, Any]:
    if change.jurisdiction is not None:
        feature = jurisdiction_to_feature(change.jurisdiction)
        return {"serial": change.serial, "op": "upsert", "feature": feature}
    deletion = change.version_info()
    return {
        "serial": change.serial,
        "op": "delete",
        "id": change.id,
        "domain": deletion.domain,
        "entry": {
            "origin": deletion.origin,
            "version": deletion.version,
            "updated": deletion.updated,
            "attested": deletion.attested,
        },
    }


async def registry_snapshot(request: web.Request) -> web.StreamResponse:
    """``GET /v1/registry``: every entry as GeoJSON, with the id and serial; ETag per serial."""
    store = request.app[REGISTRY].store
    registry_id, serial = await asyncio.to_thread(lambda: (store.registry_id, store.serial))
    etag = f'"{registry_id}.{serial}"'
    if etag in _etags(request.headers.get("If-None-Match")):
        return web.Response(status=304, headers={"ETag": etag})
    registry_id, serial, entries = await asyncio.to_thread(store.snapshot)
    document = registry_document(entries, id=registry_id, serial=serial)
    response = json_body(document, "application/geo+json")
    response.headers["ETag"] = f'"{registry_id}.{serial}"'
    return response


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


async def registry_changes(request: web.Request) -> web.Response:
    """``GET /v1/registry/changes?since=SERIAL[&limit=N]``: the change log after a serial;
    410 ``snapshot_required`` when it no longer reaches back that far."""
    since = _non_negative(request.query.get("since", "0"), "since")
    limit = min(_non_negative(request.query.get("limit", str(PAGE_SIZE)), "limit"), MAX_PAGE_SIZE)
    if limit == 0:
        raise InvalidInput("limit must be at least 1", parameter="limit")
    store = request.app[REGISTRY].store
    page = await asyncio.to_thread(store.changes, since, limit)
    return json_body(changes_document(page))


def _non_negative(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, not {text!r}", parameter=name) from None
    if value < 0:
        raise InvalidInput(f"{name} must not be negative", parameter=name)
    return value


async def registry_status(request: web.Request) -> web.Response:
    """``GET /v1/registry/status``: id, serial, what is answered from, upstreams, conflicts."""
    follower = request.app[REGISTRY]
    store = follower.store

    def read() -> dict[str, Any]:
        return {
            "id": store.registry_id,
            "serial": store.serial,
            "entries": store.count(),
            "answering_from": follower.source,
            "answered_serial": follower.serial,
            "mirrors": [m.to_dict() for m in store.mirrors()],
            "conflicts": store.conflicts(20),
        }

    return json_body(await asyncio.to_thread(read))


async def registry_ctx(app: web.Application) -> AsyncIterator[None]:
    """Follow the store, and sync the mirrored upstreams, in the background."""
    task = asyncio.create_task(_background(app[REGISTRY]))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _background(follower: RegistryFollower) -> None:
    from resolver.registry.mirror import sync_all

    loop = asyncio.get_running_loop()
    next_sync = loop.time() if follower.mirror_interval > 0 else float("inf")
    rng = random.Random()
    while True:
        try:
            if loop.time() >= next_sync:
                await sync_all(follower.store, follower.fetcher)
                next_sync = loop.time() + follower.mirror_interval * rng.uniform(0.9, 1.1)
            await follower.catch_up()
        except Exception:  # pragma: no cover - a bug must not stop the loop
            log.exception("registry follow/sync failed")
        await asyncio.sleep(follower.poll)
