"""Mirroring from upstreams that misbehave: down, slow, truncated, malformed, going backwards,
endless, reset. Each upstream is a real aiohttp server on loopback; the pages it serves are made
from a real store's change log, then damaged. Nothing bad is ever applied."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from shapely.geometry import box

from common.errors import SyncError
from common.models import Jurisdiction
from discovery.fetch import Fetcher, FetchLimits, make_session
from resolver.http.registry import changes_document
from resolver.registry.documents import registry_document
from resolver.registry.mirror import normalize_upstream, sync_mirror
from resolver.store import Store

LOOPBACK = ("127.0.0.0/8",)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _entries(n: int) -> list[Jurisdiction]:
    return [
        Jurisdiction(id=f"j{i}", name=f"J{i}").with_boundary(box(i, 0, i + 1, 1)) for i in range(n)
    ]


@pytest.fixture
def origin(tmp_path: Path) -> Store:
    """The registry whose (real) change log the stand-in upstreams serve, damaged or not."""
    store = Store(tmp_path / "origin.sqlite")
    store.save(_entries(6), source="test")
    return store


@pytest.fixture
def mirror(tmp_path: Path) -> Store:
    return Store(tmp_path / "mirror.sqlite")


def _page(store: Store, request: web.Request) -> dict[str, Any]:
    since, limit = int(request.query["since"]), int(request.query["limit"])
    return changes_document(store.changes(since, limit))


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[TestServer] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_get("/v1/registry/changes", handler)
        app.router.add_get("/v1/registry", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    limits = FetchLimits(connect_timeout=1.0, total_timeout=1.5, max_bytes=256 * 1024)
    async with make_session(allow_networks=LOOPBACK, limits=limits) as session:
        yield Fetcher(session, limits=limits, allow_networks=LOOPBACK)


async def _sync_fails(mirror: Store, url: str, fetcher: Fetcher, match: str) -> SyncError:
    mirror.add_mirror(url)
    before = (mirror.serial, mirror.count())
    with pytest.raises(SyncError, match=match) as caught:
        await sync_mirror(mirror, url, fetcher, page_size=2)
    assert (mirror.serial, mirror.count()) == before, "a failed sync changed the store"
    state = mirror.mirror(url)
    assert state is not None and state.failures == 1 and state.last_error
    return caught.value


async def test_a_healthy_upstream_is_read_page_by_page(
    origin: Store, mirror: Store, upstream: Any, fetcher: Fetcher
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return _json(_page(origin, request))

    url = await upstream(handler)
    mirror.add_mirror(url)
    seen: list[tuple[int, int]] = []
    result = await sync_mirror(
        mirror, url, fetcher, page_size=2, progress=lambda *p: seen.append(p)
    )
    assert result.pages == 3 and len(result.report.upserted) == 6
    assert seen[-1] == (6, 6)
    assert mirror.mirror(url).last_serial == 6  # type: ignore[union-attr]


async def test_an_upstream_that_is_down(mirror: Store, fetcher: Fetcher) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = await _sync_fails(mirror, f"http://127.0.0.1:{port}", fetcher, "cannot read")
    assert "cannot connect" in error.detail


async def test_an_upstream_that_is_too_slow(
    origin: Store, mirror: Store, upstream: Any, fetcher: Fetcher
) -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return _json(_page(origin, request))

    await _sync_fails(mirror, await upstream(handler), fetcher, "within 1.5 s")


async def test_a_truncated_page(
    origin: Store, mirror: Store, upstream: Any, fetcher: Fetcher
) -> None:
    async def handler(request: web.Request) -> web.Response:
        body = orjson.dumps(_page(origin, request))
        return web.Response(body=body[: len(body) // 2], content_type="application/json")

    await _sync_fails(mirror, await upstream(handler), fetcher, "not JSON")


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda page: page.pop("registry"), "no 'registry' member"),
        (lambda page: page.update(changes={"not": "a list"}), "'changes' must be a list"),
        (lambda page: page["changes"].reverse(), "serials must increase"),
        (lambda page: page["changes"][0].update(op="rename"), "unknown op"),
        (lambda page: page["changes"][0]["feature"]["properties"].pop("entry"), "no origin"),
        (
            lambda page: page["changes"][0]["feature"].update(
                geometry={"type": "Point", "coordinates": [0, 0]}
            ),
            "Polygon or MultiPolygon",
        ),
        (lambda page: page.update(since=99), "not the 0 asked for"),
    ],
)
async def test_a_malformed_page_is_refused_whole(
    origin: Store, mirror: Store, upstream: Any, fetcher: Fetcher, damage: Any, match: str
) -> None:
    async def handler(request: web.Request) -> web.Response:
        page = _page(origin, request)
        damage(page)
        return _json(page)

    await _sync_fails(mirror, await upstream(handler), fetcher, match)


async def test_serials_that_go_backwards(
    origin: Store, mirror: Store, upstream: Any, fetcher: Fetcher
) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        page = _page(origin, request)
        if int(request.query["since"]) > 0:
            page["registry"]["serial"] = 1  # the upstream now claims to be behind us
        return _json(page)

    url = await upstream(handler)
    mirror.add_mirror(url)
    with pytest.raises(SyncError, match="went backwards"):
        await sync_mirror(mirror, url, fetcher, page_size=2)
    # The first page (serials 1-2) was good and stays; nothing after it was applied.
    assert sorted(j.id for j in mirror.jurisdictions()) == ["j0", "j1"]
    assert mirror.mirror(url).last_serial == 2  # type: ignore[union-attr]


async def test_an_endless_response_is_cut_at_the_limit(
    mirror: Store, upstream: Any, fetcher: Fetcher
) -> None:
    sent = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b" " * 65536
        try:
            while sent < 2 * 1024**3:  # 2 GB, if anyone read it all
                await response.write(chunk)
                sent += len(chunk)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response

    await _sync_fails(mirror, await upstream(handler), fetcher, "larger than the limit")
    assert sent < 64 * 1024 * 1024


async def test_a_410_takes_the_snapshot_and_drops_what_the_upstream_no_longer_has(
    origin: Store, mirror: Store, upstream: Any, fetcher: Fetcher
) -> None:
    forgotten = True

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/v1/registry/changes":
            if forgotten:
                return _json({"error": "snapshot_required"}, status=410)
            return _json(_page(origin, request))
        registry_id, serial, entries = origin.snapshot()
        return _json(registry_document(entries, id=registry_id, serial=serial))

    url = await upstream(handler)
    mirror.add_mirror(url)
    result = await sync_mirror(mirror, url, fetcher)
    assert result.snapshot and len(result.report.upserted) == 6
    origin.delete(["j2", "j3"], source="test")
    result = await sync_mirror(mirror, url, fetcher)  # the log is gone again: snapshot again
    assert result.snapshot and sorted(result.report.deleted) == ["j2", "j3"]
    assert sorted(j.id for j in mirror.jurisdictions()) == ["j0", "j1", "j4", "j5"]
    forgotten = False
    origin.save(_entries(1)[:1], replace=True, source="test")  # j0, version 2
    result = await sync_mirror(mirror, url, fetcher)
    assert not result.snapshot and result.report.upserted == ["j0"]


def test_upstream_urls_are_normalized_and_checked() -> None:
    assert normalize_upstream(" https://r.example/geoweb/ ") == "https://r.example/geoweb"
    for bad in ("ftp://r.example", "r.example", "https://r.example/?since=1"):
        with pytest.raises(Exception, match="upstream registry"):
            normalize_upstream(bad)
