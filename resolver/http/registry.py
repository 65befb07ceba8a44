"""The registry over HTTP (docs/registry.md).

``GET /v1/registry`` is the whole snapshot, ``GET /v1/registry/changes?since=SERIAL`` the change
log a mirror pulls, ``GET /v1/registry/status`` the registry's id, serial, upstreams and recent
conflicts. The :class:`~resolver.registry.follower.RegistryFollower` that keeps the answers in
step with the store, and the mirror syncs, run in the background tasks of :func:`registry_ctx`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from common.errors import InvalidInput
from resolver.http.errors import json_response
from resolver.http.keys import REGISTRY, first_worker
from resolver.http.params import query_value
from resolver.registry.documents import REGISTRY_FORMAT, jurisdiction_to_feature, registry_document
from resolver.registry.embedded import layers
from resolver.registry.follower import RegistryFollower, follow_store, sync_mirrors
from resolver.store.aio import in_thread
from resolver.store.entries import Change, ChangePage

log = logging.getLogger(__name__)

#: Entries per change page unless the mirror asks for fewer; the most it may ask for.
PAGE_SIZE = 500
MAX_PAGE_SIZE = 5000


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/registry", registry_snapshot)
    app.router.add_get("/v1/registry/changes", registry_changes)
    app.router.add_get("/v1/registry/status", registry_status)


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
    registry_id, serial = await in_thread(lambda: (store.registry_id, store.serial))
    etag = f'"{registry_id}.{serial}"'
    if etag in _etags(request.headers.get("If-None-Match")):
        return web.Response(status=304, headers={"ETag": etag})
    registry_id, serial, entries = await in_thread(store.snapshot)
    document = registry_document(entries, id=registry_id, serial=serial)
    response = json_response(document, content_type="application/geo+json")
    response.headers["ETag"] = f'"{registry_id}.{serial}"'
    return response


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


async def registry_changes(request: web.Request) -> web.Response:
    """``GET /v1/registry/changes?since=SERIAL[&limit=N]``: the change log after a serial;
    410 ``snapshot_required`` when it no longer reaches back that far."""
    # An empty value (``since=``) is refused like any other that is not a number.
    since_text, limit_text = query_value(request, "since"), query_value(request, "limit")
    since = _non_negative("0" if since_text is None else since_text, "since")
    limit = min(
        _non_negative(str(PAGE_SIZE) if limit_text is None else limit_text, "limit"),
        MAX_PAGE_SIZE,
    )
    if limit == 0:
        raise InvalidInput("limit must be at least 1", parameter="limit")
    store = request.app[REGISTRY].store
    page = await in_thread(store.changes, since, limit)
    return json_response(changes_document(page))


def _non_negative(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidInput(
            f"{name} must be a whole number, not {text[:40]!r}", parameter=name
        ) from None
    if not 0 <= value <= MAX_SERIAL:
        raise InvalidInput(f"{name} must be between 0 and {MAX_SERIAL}", parameter=name)
    return value


#: The largest serial a request may name (a store's serials are 64-bit integers).
MAX_SERIAL = 2**63 - 1


async def registry_status(request: web.Request) -> web.Response:
    """``GET /v1/registry/status``: id, serial, what is answered from, upstreams, conflicts."""
    follower = request.app[REGISTRY]
    store = follower.store

    def read() -> dict[str, Any]:
        registry_id, serial, entries = store.snapshot()
        return {
            "id": registry_id,
            "serial": serial,
            "entries": len(entries),
            "layers": layers(entries, registry_id),
            "answering_from": follower.source,
            "answered_serial": follower.serial,
            "mirrors": [m.to_dict() for m in store.mirrors()],
            "conflicts": store.conflicts(20),
        }

    return json_response(await in_thread(read))


async def registry_ctx(app: web.Application) -> AsyncIterator[None]:
    """Follow the store, and sync the mirrored upstreams (in the first worker), in two background
    tasks: the follower never waits for a sync."""
    follower = app[REGISTRY]
    tasks = [asyncio.create_task(follow_store(follower))]
    if follower.mirror_interval > 0 and first_worker(app):
        tasks.append(asyncio.create_task(sync_mirrors(follower)))
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


__all__ = ["REGISTRY", "RegistryFollower", "add_routes", "changes_document", "registry_ctx"]
