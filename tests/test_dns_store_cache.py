"""The DNS cache kept in the store: answers (TXT as bytes, PTR, NXDOMAIN, NODATA) survive the
process, so that after a restart with the DNS server gone they are still served stale (RFC 8767),
with the staleness in the provenance, through the library, ``geoweb serve`` and ``geoweb resolve``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from dns_server import KnotServer
from shapely.geometry import box

from common.models import Endpoint, Jurisdiction
from discovery.dns_lookup import (
    DnsAnswer,
    DnsLookup,
    DnsUnavailable,
    MemoryDnsCache,
    TieredDnsCache,
)
from resolver.cli.main import main
from resolver.config import Settings
from resolver.http.app import create_app
from resolver.sources.dns import DnsSource
from resolver.store import Store
from resolver.store.caches import StoreDnsCache

ZONE = "cache.test"

ZONE_TEXT = f"""$ORIGIN {ZONE}.
$TTL 60
@ 60 IN SOA ns hostmaster 1 3600 600 86400 30
@ 60 IN NS ns
ns 60 IN A 127.0.0.1
_open311.city 60 IN TXT "v=open311-1" "d=https://city.example/discovery.json" "n=Z\\195\\188rich"
_open311.brief 1 IN TXT "v=open311-1" "d=https://brief.example/discovery.json"
cell 60 IN PTR city.{ZONE}.
nodata 60 IN A 127.0.0.1
"""


@pytest.fixture
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    """A Knot of each test's own: the tests stop it."""
    path = tmp_path_factory.mktemp("cache-zone") / "cache.zone"
    path.write_text(ZONE_TEXT, encoding="utf-8")
    server = KnotServer(tmp_path_factory.mktemp("cache-knot"), ZONE, path)
    server.start()
    yield server
    server.stop()


def _lookup(knot: KnotServer, store: Store, clock: list[float]) -> DnsLookup:
    cache = TieredDnsCache(MemoryDnsCache(), StoreDnsCache(store))
    return DnsLookup(
        [knot.address], port=knot.port, timeout=0.3, cache=cache, clock=lambda: clock[0]
    )


def _claim(name: str) -> Jurisdiction:
    return Jurisdiction(
        name,
        name.title(),
        domain=f"{name}.{ZONE}",
        discovery_url=f"https://{name}.example/discovery.json",
        endpoints=(Endpoint(f"https://{name}.example/v2/"),),
    ).with_boundary(box(0, 0, 1, 1))


async def test_stale_answers_survive_a_restart(knot: KnotServer, tmp_path: Path) -> None:
    db = tmp_path / "cache.sqlite"
    now = [time.time()]
    with Store(db) as store:
        lookup = _lookup(knot, store, now)
        fresh = {
            "txt": await lookup.txt(f"_open311.city.{ZONE}"),
            "ptr": await lookup.ptr(f"cell.{ZONE}"),
            "nxdomain": await lookup.txt(f"_open311.nobody.{ZONE}"),
            "nodata": await lookup.txt(f"nodata.{ZONE}"),
        }
        assert lookup.stats.queries == 4
        assert "n=Zürich".encode() in fresh["txt"].records[0]  # bytes, not text
        assert len(StoreDnsCache(store)) == 4
    knot.stop()  # the DNS server is gone, and the process "restarts": a new store, a new cache
    now[0] += 120  # every answer has expired (TTL 60, negative TTL 30)
    with Store(db) as store:
        lookup = _lookup(knot, store, now)
        stale = {
            "txt": await lookup.txt(f"_open311.city.{ZONE}"),
            "ptr": await lookup.ptr(f"cell.{ZONE}"),
            "nxdomain": await lookup.txt(f"_open311.nobody.{ZONE}"),
            "nodata": await lookup.txt(f"nodata.{ZONE}"),
        }
        for kind, answer in stale.items():
            assert answer.stale and answer.from_cache, kind
            assert answer.error, kind  # why DNS failed (timed out, refused)
            assert answer.records == fresh[kind].records, kind
            assert answer.negative == fresh[kind].negative, kind
        assert stale["nxdomain"].negative == "nxdomain" and stale["nodata"].negative == "nodata"
        assert stale["ptr"].records == (f"city.{ZONE}",)
        assert lookup.stats.stale_served == 4
        # what was never cached is not invented
        with pytest.raises(DnsUnavailable):
            await lookup.txt(f"_open311.never.{ZONE}")
        # the attestation says it is stale
        refreshed = await DnsSource(lookup).refresh(_claim("city"))
        fact = next(p for p in refreshed.provenance if p.fact == "discovery_url")
        assert fact.stale is True and fact.source == "cache" and fact.verified is True
        assert "stale (RFC 8767)" in (fact.note or "")


def test_answers_too_old_to_serve_are_pruned(tmp_path: Path) -> None:
    with Store(tmp_path / "prune.sqlite") as store:
        cache = StoreDnsCache(store, max_age=3600)
        old = time.time() - 10_000
        cache.write(DnsAnswer("old.example.", "TXT", ((b"v=1",),), 60, old))
        cache.write(DnsAnswer("new.example.", "PTR", ("x.example",), 60, time.time()))
        assert len(cache) == 2
        assert cache.prune() == 1
        assert cache.read(("old.example.", "TXT")) is None
        answer = cache.read(("new.example.", "PTR"))
        assert answer is not None and answer.records == ("x.example",)
        cache.remove()
        assert len(cache) == 0


async def test_geoweb_serve_answers_stale_after_a_restart_without_dns(
    knot: KnotServer, tmp_path: Path, aiohttp_client: object
) -> None:
    db = tmp_path / "serve.sqlite"
    with Store(db) as store:
        store.save([_claim("brief")], source="test")
    settings = Settings(
        db=str(db), dns_nameserver=(knot.address,), dns_port=knot.port, dns_timeout=0.5
    )
    params = {"lat": "0.5", "long": "0.5"}
    client = await aiohttp_client(create_app(settings))  # type: ignore[operator]
    body = await (await client.get("/v1/resolve", params=params)).json()
    fact = next(p for p in body["provenance"] if p["fact"] == "discovery_url")
    assert fact["source"] == "dns" and fact["verified"] is True and "stale" not in fact
    await client.close()
    knot.stop()
    await asyncio.sleep(1.2)  # the record's TTL is 1 s: now it is stale
    client = await aiohttp_client(create_app(settings))  # type: ignore[operator]
    response = await client.get("/v1/resolve", params=params)
    assert response.status == 200
    body = await response.json()
    fact = next(p for p in body["provenance"] if p["fact"] == "discovery_url")
    assert fact["source"] == "cache" and fact["stale"] is True and fact["verified"] is True
    assert "stale (RFC 8767)" in fact["note"]
    assert body["endpoint"]["url"] == "https://brief.example/v2/"


def test_geoweb_resolve_keeps_its_dns_cache_in_the_store(knot: KnotServer, tmp_path: Path) -> None:
    db = tmp_path / "cli.sqlite"
    with Store(db) as store:
        store.save([_claim("brief")], source="test")
    args = [
        "resolve", "--lat", "0.5", "--long", "0.5", "--json", "--db", str(db),
        "--dns-nameserver", knot.address, "--dns-port", str(knot.port), "--dns-timeout", "0.5",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    facts = {p["fact"]: p for p in orjson.loads(result.stdout)["provenance"]}
    assert facts["discovery_url"]["source"] == "dns"
    knot.stop()
    time.sleep(1.2)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    facts = {p["fact"]: p for p in orjson.loads(result.stdout)["provenance"]}
    assert facts["discovery_url"]["stale"] is True and facts["discovery_url"]["source"] == "cache"
