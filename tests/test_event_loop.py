"""No store call blocks the event loop: with a store made slow for real (every statement sent to the
database waits ``SLOW`` seconds first), the paths that reach the store from async code (a discovery
fetch through the store's HTTP cache, a DNS lookup through the store's DNS cache, a mirror sync, a
registry follower's catch-up, the refresh log of a discovery refresh) keep the loop answering: a
ticker task that should wake every ``TICK`` seconds is never late by ``MAX_LAG`` or more.

Each path runs against real servers on loopback: a stand-in city, Knot, an upstream registry."""

from __future__ import annotations

import ast
import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from shapely.geometry import box
from sqlalchemy import event

from common.models import Jurisdiction
from discovery.dns_lookup import DnsLookup, MemoryDnsCache, TieredDnsCache
from discovery.fetch import Fetcher, FetchLimits, make_session
from resolver.config import Settings
from resolver.core.decide import Resolver
from resolver.http.registry import changes_document
from resolver.registry.follower import RegistryFollower
from resolver.registry.mirror import sync_mirror
from resolver.runtime import Runtime
from resolver.sources.answering import Answerer
from resolver.store import Store
from resolver.store.caches import StoreDnsCache, StoreHttpCache, refresh_status
from tests.dns_server import KnotServer
from tests.open311_servers import StandIn

#: Seconds every statement of the slow store waits before it is sent.
SLOW = 0.25
#: How often the ticker wakes, and how late it may be.
TICK = 0.01
MAX_LAG = 0.1
LOOPBACK = ("127.0.0.0/8",)
LIMITS = FetchLimits(connect_timeout=1.0, total_timeout=3.0, max_bytes=256 * 1024)


def _slow_down(store: Store) -> Callable[[], int]:
    """Make every statement of this store wait ``SLOW`` seconds (in whichever thread sends it);
    returns a function counting the statements sent since, so a test knows the store was used."""
    sent = [0]

    @event.listens_for(store.engine, "before_cursor_execute")
    def wait(*_args: Any) -> None:
        sent[0] += 1
        time.sleep(SLOW)

    return lambda: sent[0]


async def _max_lag(work: Awaitable[Any]) -> tuple[float, Any]:
    """Run ``work`` while a ticker measures how late the loop wakes it; the worst lag and the
    work's result."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not done.is_set():
            before = loop.time()
            await asyncio.sleep(TICK)
            worst = max(worst, loop.time() - before - TICK)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(TICK)  # the ticker is running before the work starts
    try:
        result = await work
    finally:
        done.set()
        await task
    return worst, result


def _entry(jurisdiction: str, x: float = 0.0) -> Jurisdiction:
    return Jurisdiction(id=jurisdiction, name=jurisdiction.title()).with_boundary(
        box(x, 0, x + 1, 1)
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "slow.sqlite") as store:
        yield store


async def test_a_discovery_fetch_through_the_store_cache(
    city: tuple[str, StandIn], store: Store
) -> None:
    base, state = city
    async with make_session(allow_networks=LOOPBACK, limits=LIMITS) as session:
        fetcher = Fetcher(
            session, limits=LIMITS, allow_networks=LOOPBACK, cache=StoreHttpCache(store)
        )
        sent = _slow_down(store)
        target = f"{base}/bloomington/discovery.json"
        lag, fetched = await _max_lag(fetcher.get(target))  # a miss: read, fetch, write
        assert not fetched.from_cache and b"bloomington" in fetched.body.lower()
        again_lag, again = await _max_lag(fetcher.get(target))  # a hit: read
        assert again.from_cache and again.body == fetched.body
    assert sent() >= 3 and state.hits["/bloomington/discovery.json"] == 1
    assert max(lag, again_lag) < MAX_LAG, f"the loop stalled {max(lag, again_lag):.3f} s"


async def test_a_dns_lookup_through_the_store_cache(city_knot: KnotServer, store: Store) -> None:
    cache = TieredDnsCache(MemoryDnsCache(), StoreDnsCache(store))
    lookup = DnsLookup([city_knot.address], port=city_knot.port, timeout=1.0, cache=cache)
    sent = _slow_down(store)
    lag, answer = await _max_lag(lookup.txt("ns.city.example"))  # nothing held: read, ask, write
    assert answer.negative == "nodata" and not answer.from_cache
    assert sent() >= 2
    assert lag < MAX_LAG, f"the loop stalled {lag:.3f} s"
    # a hit in memory does not wait for the store at all
    started, count = time.monotonic(), sent()
    again = await lookup.txt("ns.city.example")
    assert again.from_cache and sent() == count and time.monotonic() - started < SLOW


async def test_a_mirror_sync(tmp_path: Path, store: Store) -> None:
    with Store(tmp_path / "origin.sqlite") as origin:
        origin.save([_entry("a"), _entry("b", 2)], source="test")

        async def changes(request: web.Request) -> web.Response:
            page = origin.changes(int(request.query["since"]), int(request.query["limit"]))
            return web.Response(
                body=orjson.dumps(changes_document(page)), content_type="application/json"
            )

        app = web.Application()
        app.router.add_get("/v1/registry/changes", changes)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            url = str(server.make_url("")).rstrip("/")
            store.add_mirror(url)
            async with make_session(allow_networks=LOOPBACK, limits=LIMITS) as session:
                fetcher = Fetcher(session, limits=LIMITS, allow_networks=LOOPBACK)
                sent = _slow_down(store)
                lag, result = await _max_lag(sync_mirror(store, url, fetcher))
        finally:
            await server.close()
    assert sorted(result.report.upserted) == ["a", "b"] and sent() >= 3
    assert lag < MAX_LAG, f"the loop stalled {lag:.3f} s"


async def test_a_registry_follower_catch_up(store: Store) -> None:
    store.save([_entry("a")], source="test")
    serial = store.serial
    store.save([_entry("b", 2)], source="test")
    answerer = Answerer(Resolver([_entry("a")]), [])
    async with make_session(allow_networks=LOOPBACK, limits=LIMITS) as session:
        fetcher = Fetcher(session, limits=LIMITS, allow_networks=LOOPBACK)
        follower = RegistryFollower(store, answerer, "store", serial, fetcher)
        sent = _slow_down(store)
        lag, changed = await _max_lag(follower.catch_up())
    assert changed == 1 and "b" in answerer.resolver and sent() >= 1
    assert lag < MAX_LAG, f"the loop stalled {lag:.3f} s"


async def test_the_refresh_log_of_a_discovery_refresh(
    city: tuple[str, StandIn], tmp_path: Path
) -> None:
    base, _state = city
    entry = Jurisdiction(
        id="bloomington",
        name="Bloomington",
        discovery_url=f"{base}/bloomington/discovery.json",
    ).with_boundary(box(0, 0, 1, 1))
    settings = Settings(db=str(tmp_path / "refresh.sqlite"), allow_network=LOOPBACK)
    async with Runtime.open(settings, discovery=True, retry_after=0) as runtime:
        assert runtime.discovery is not None
        sent = _slow_down(runtime.store)  # the HTTP cache and the refresh log
        lag, refreshed = await _max_lag(runtime.discovery.refresh(entry))
        status = refresh_status(runtime.store, "bloomington")
    assert refreshed.services and status is not None and status["ok"] and sent() >= 3
    assert lag < MAX_LAG, f"the loop stalled {lag:.3f} s"


def _blocking_store_uses(path: Path) -> list[str]:
    """Store methods and properties used directly in the async functions of one module: called or
    read on the loop rather than handed to ``in_thread`` (nested functions and lambdas, which are
    what gets handed, are not looked into)."""
    blocking = {n for n in dir(Store) if not n.startswith("__")} - {
        "url",
        "name",
        "engine",
        "close",
    }
    functions = {"record_refresh", "refresh_status", "load_jurisdictions"}
    found = []
    for function in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(function, ast.AsyncFunctionDef):
            continue
        nodes, handed = list(function.body), set()
        while nodes:
            node = nodes.pop()
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "in_thread" and node.args:
                handed.add(id(node.args[0]))
            nodes.extend(ast.iter_child_nodes(node))
            if id(node) in handed:
                continue
            if isinstance(node, ast.Attribute) and node.attr in blocking:
                owner = ast.unparse(node.value).lower()
                if owner.endswith("store") or owner.endswith("[store]"):
                    found.append(f"{path}:{node.lineno} {function.name}: {ast.unparse(node)}")
            if isinstance(node, ast.Call) and ast.unparse(node.func) in functions:
                found.append(f"{path}:{node.lineno} {function.name}: {ast.unparse(node.func)}")
    return found


def test_async_code_reaches_the_store_only_through_in_thread() -> None:
    root = Path(__file__).resolve().parent.parent / "resolver"
    modules = [p for p in root.rglob("*.py") if not {"store", "cli"} & set(p.parts)]
    assert len(modules) > 10
    found = [use for path in modules for use in _blocking_store_uses(path)]
    assert not found, "store calls on the event loop:\n" + "\n".join(found)
