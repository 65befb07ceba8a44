"""Three resolvers on loopback mirror one another over real HTTP: A is the origin, B mirrors A,
C mirrors B, and A mirrors C. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import dns.query
import dns.tsig
import dns.update
import pytest
import shapely.geometry
from aiohttp import web
from aiohttp.test_utils import TestServer
from dns_server import TSIG_ALGORITHM, TSIG_NAME, TSIG_SECRET, KnotServer
from shapely.geometry import box

from common.models import Endpoint, Jurisdiction
from resolver.config import Settings
from resolver.http.app import ANSWERER, FETCHER, STORE, create_app
from resolver.http.registry import REGISTRY
from resolver.registry.mirror import sync_mirror
from resolver.store import Store

LOOPBACK = ("127.0.0.0/8",)
# Somewhere no embedded or county entry is: the South Atlantic.
WEST, EAST = box(-20.0, -30.0, -19.0, -29.0), box(-19.0, -30.0, -18.0, -29.0)
IN_WEST, IN_EAST, IN_BOTH_NOW = (-29.5, -19.5), (-29.5, -18.5), (-29.5, -18.9)


def _entry(jurisdiction_id: str, boundary: Any) -> Jurisdiction:
    return Jurisdiction(
        id=jurisdiction_id,
        name=f"Town of {jurisdiction_id}",
        endpoints=(Endpoint(f"https://{jurisdiction_id}.example/open311/v2"),),
    ).with_boundary(boundary)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """Three empty stores on one backend."""
    if request.param == "sqlite":
        yield [f"sqlite:///{tmp_path / name}.sqlite" for name in "abc"]
        return
    cluster = request.getfixturevalue("pg_cluster")
    names = [cluster.create_database() for _ in range(3)]
    yield [cluster.url(name) for name in names]
    for name in names:
        cluster.drop_database(name)


@dataclass
class Node:
    name: str
    server: TestServer

    @property
    def app(self) -> web.Application:
        return self.server.app

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def store(self) -> Store:
        return self.app[STORE]

    async def sync(self, upstream: Node) -> Any:
        attest = self.app[REGISTRY].attest  # the server's own check against the city's DNS
        result = await sync_mirror(self.store, upstream.url, self.app[FETCHER], attest=attest)
        await self.app[REGISTRY].catch_up()
        return result

    async def resolve(self, lat: float, long: float) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            params = {"lat": str(lat), "long": str(long)}
            async with session.get(f"{self.url}/v1/resolve", params=params) as response:
                return dict(await response.json())


@pytest.fixture
async def nodes(store_urls: list[str], city_knot: KnotServer) -> AsyncIterator[list[Node]]:
    started = []
    for name, url in zip("ABC", store_urls, strict=True):
        settings = Settings(
            adhoc=False,  # no fallback: an answer is found only once the entry arrives
            db=url,
            allow_network=LOOPBACK,
            registry_poll=3600,
            mirror_interval=0,
            dns_nameserver=(city_knot.address,),
            dns_port=city_knot.port,
            register_domain=("city.example",),
            embedded=False,  # the entries of these tests only
        )
        server = TestServer(create_app(settings), host="127.0.0.1")
        await server.start_server()
        started.append(Node(name, server))
    yield started
    for node in started:
        await node.server.close()


async def _register(node: Node, knot: KnotServer, jurisdiction: str, boundary: Any) -> None:
    """Register on ``node`` as city.example would: ask for a challenge, publish its record in the
    city's zone by signed UPDATE, then send the entry. The city's ``_open311`` record names the
    same discovery URL, which is what lets mirrors believe the entry's attestation."""
    async with aiohttp.ClientSession(node.url) as session:
        body = {"domain": "city.example", "jurisdiction": jurisdiction}
        async with session.post("/v1/registry/challenges", json=body) as response:
            assert response.status == 201
            challenge = await response.json()
        record = challenge["record"]
        update = dns.update.UpdateMessage("city.example.")
        update.replace(record["name"], 60, "TXT", f'"{record["value"]}"')
        update.replace(
            "_open311", 60, "TXT", '"v=open311-1" "d=https://city.example/open311/discovery.json"'
        )
        update.use_tsig(dns.tsig.Key(TSIG_NAME, TSIG_SECRET, TSIG_ALGORITHM))
        await asyncio.to_thread(dns.query.tcp, update, knot.address, port=knot.port, timeout=5)
        feature = {
            "type": "Feature",
            "geometry": shapely.geometry.mapping(boundary),
            "properties": {
                "id": jurisdiction,
                "name": "City of Example",
                "discovery_url": "https://city.example/open311/discovery.json",
                "endpoints": [{"url": "https://city.example/open311/v2"}],
            },
        }
        registration = {"token": challenge["token"], "domain": "city.example", "feature": feature}
        async with session.post("/v1/registry/jurisdictions", json=registration) as response:
            assert response.status in (200, 201), await response.text()


async def _round(a: Node, b: Node, c: Node) -> list[int]:
    """One sync round round the cycle; the serials afterwards."""
    await b.sync(a)
    await c.sync(b)
    await a.sync(c)
    return [a.store.serial, b.store.serial, c.store.serial]


async def test_changes_on_a_reach_c_and_the_cycle_stops(
    nodes: list[Node], city_knot: KnotServer
) -> None:
    a, b, c = nodes
    b.store.add_mirror(a.url)
    c.store.add_mirror(b.url)
    a.store.add_mirror(c.url)
    # "west" registers itself on A with a proven token; "east" is A's operator's import.
    await _register(a, city_knot, "west", WEST)
    a.store.save([_entry("east", EAST)], source="test")
    await a.app[REGISTRY].catch_up()

    serials = await _round(a, b, c)
    answer = await c.resolve(*IN_WEST)
    assert answer["jurisdiction"]["id"] == "west"
    generation = answer["boundary_generation"]
    assert generation == a.app[ANSWERER].resolver.jurisdiction("west").boundary_generation
    # Two more rounds: nothing new anywhere, so no serial moves; the cycle does not loop.
    assert await _round(a, b, c) == serials
    assert await _round(a, b, c) == serials
    (west_on_c,) = [j for j in c.store.jurisdictions() if j.id == "west"]
    assert (west_on_c.origin, west_on_c.version) == ("domain:city.example", 1)
    assert west_on_c.attested
    (east_on_c,) = [j for j in c.store.jurisdictions() if j.id == "east"]
    assert (east_on_c.origin, east_on_c.version) == (a.store.registry_id, 1)

    # A boundary change on A (the city registers its new limits) changes C's answers and the
    # generation they name.
    await _register(a, city_knot, "west", box(-19.2, -30.0, -18.8, -29.0))
    await _round(a, b, c)
    moved = await c.resolve(*IN_BOTH_NOW)
    assert moved["jurisdiction"]["id"] == "west"
    assert moved["boundary_generation"] not in (None, generation)
    assert [x["jurisdiction"]["id"] for x in moved["alternatives"]] == ["east"]
    assert (await c.resolve(*IN_WEST))["reason"] == "no_jurisdiction"
    assert [j.version for j in c.store.jurisdictions() if j.id == "west"] == [2]

    # A deletion on A disappears from C.
    a.store.delete(["east"], source="test")
    await a.app[REGISTRY].catch_up()
    serials = await _round(a, b, c)
    gone = await c.resolve(*IN_EAST)
    assert gone["found"] is False and gone["reason"] == "no_jurisdiction"
    assert sorted(j.id for j in c.store.jurisdictions()) == ["west"]
    assert await _round(a, b, c) == serials


class SlowProxy:
    """A loopback proxy that delays each request to an upstream: time to kill a sync mid-way."""

    def __init__(self, upstream: str, delay: float) -> None:
        self.upstream, self.delay = upstream, delay
        self.requests = 0
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.forward)
        self.server = TestServer(app, host="127.0.0.1")

    async def forward(self, request: web.Request) -> web.Response:
        self.requests += 1
        await asyncio.sleep(self.delay)
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.upstream + request.path_qs) as response,
        ):
            body = await response.read()
            return web.Response(
                body=body,
                status=response.status,
                headers={"Content-Type": response.headers["Content-Type"]},
            )


async def test_killing_a_mirror_mid_sync_loses_nothing(nodes: list[Node]) -> None:
    a, b, _c = nodes
    a.store.save(
        [_entry(f"t{i:02d}", box(-20 + i, -30, -19 + i, -29)) for i in range(12)], source="test"
    )
    proxy = SlowProxy(a.url, delay=0.4)
    await proxy.server.start_server()
    upstream = str(proxy.server.make_url("")).rstrip("/")
    b.store.add_mirror(upstream)
    command = [
        sys.executable,
        "-m",
        "resolver",
        "mirror",
        "sync",
        "--once",
        "--page-size",
        "2",
        "--allow-network",
        "127.0.0.0/8",
        "--db",
        b.store.url,
        "--no-embedded",
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        for _ in range(200):  # until at least one page is in, and not all of them
            await asyncio.sleep(0.05)
            state = b.store.mirror(upstream)
            if state is not None and state.last_serial >= 2:
                break
        os.kill(process.pid, signal.SIGKILL)
    finally:
        await process.wait()
    state = b.store.mirror(upstream)
    assert state is not None and 2 <= state.last_serial < 12, "the kill did not land mid-sync"
    # Everything up to the recorded serial is there, nothing after it: a page is all or nothing.
    held = sorted(j.id for j in b.store.jurisdictions())
    assert held == [f"t{i:02d}" for i in range(state.last_serial)]
    # The next sync resumes after it and completes.
    proxy.delay = 0
    asked_before = proxy.requests
    result = await sync_mirror(b.store, upstream, b.app[FETCHER], page_size=2)
    assert len(result.report.upserted) == 12 - state.last_serial
    assert proxy.requests - asked_before == (12 - state.last_serial + 1) // 2
    assert sorted(j.id for j in b.store.jurisdictions()) == [f"t{i:02d}" for i in range(12)]
    await proxy.server.close()


async def test_serve_syncs_its_upstreams_in_the_background(store_urls: list[str]) -> None:
    a_url, b_url, _ = store_urls
    a = TestServer(
        create_app(Settings(db=a_url, mirror_interval=0, embedded=False)), host="127.0.0.1"
    )
    await a.start_server()
    upstream = str(a.make_url("")).rstrip("/")
    with Store(b_url) as b_store:
        b_store.add_mirror(upstream)
    settings = Settings(
        adhoc=False,  # no fallback: an answer is found only once the entry arrives
        db=b_url,
        allow_network=LOOPBACK,
        registry_poll=0.05,
        mirror_interval=0.2,
        embedded=False,
    )
    b = TestServer(create_app(settings), host="127.0.0.1")
    await b.start_server()
    try:
        a.app[STORE].save([_entry("west", WEST)], source="test")
        node = Node("B", b)
        for _ in range(100):  # no sync is asked for: serve's own loop pulls it
            answer = await node.resolve(*IN_WEST)
            if answer["found"]:
                break
            await asyncio.sleep(0.05)
        assert answer["jurisdiction"]["id"] == "west"
        state = b.app[STORE].mirror(upstream)
        assert state is not None and state.last_serial == 1 and state.last_error is None
    finally:
        await b.close()
        await a.close()
