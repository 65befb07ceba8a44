"""Cold resolution through DNS in ``geoweb serve`` and ``geoweb resolve`` (``--dns-registry-zone``):
the local registry holds California's counties; a registry zone on a real Knot DNS lists them, a
city inside San Francisco and Nevada's counties, whose boundaries a loopback HTTP server publishes.
The answer decides among local and DNS-found jurisdictions by the one rule, and its provenance says
which facts came from DNS, with their TTLs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from dns_server import DocumentServer, KnotServer
from shapely.geometry import box

from common.errors import InvalidInput
from common.models import Endpoint, Jurisdiction
from resolver.cli.main import main
from resolver.config import Settings
from resolver.http.app import create_app
from resolver.registry.documents import jurisdiction_to_feature
from resolver.store import Store

ZONE = "registry.test"
TTL = 300
LOOPBACK = ("127.0.0.0/8",)

IN_THE_CITY = (37.765, -122.425)  # inside the city, inside San Francisco county
IN_SF_COUNTY = (37.73, -122.47)  # San Francisco county, outside the city
IN_LAS_VEGAS = (36.17, -115.14)  # Clark County, Nevada: only DNS knows it
CITY = f"city.{ZONE}"
SF = f"06075.{ZONE}"
CLARK = f"32003.{ZONE}"


@dataclass
class World:
    knot: KnotServer
    documents: DocumentServer
    local_db: Path  # California's counties


def _published(j: Jurisdiction) -> Jurisdiction:
    return replace(
        j,
        domain=f"{j.id}.{ZONE}",
        discovery_url=f"https://{j.id}.{ZONE}/discovery.json",
        endpoints=(Endpoint(f"https://{j.id}.{ZONE}/open311/v2/"),),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, counties_db: Path) -> Iterator[World]:
    documents = DocumentServer().start()
    with Store(counties_db) as store:
        counties = [_published(j) for j in store.jurisdictions() if j.id[:2] in ("06", "32")]
    city = Jurisdiction(
        "city",
        "The City",
        domain=CITY,
        discovery_url=f"https://{CITY}/discovery.json",
        endpoints=(Endpoint(f"https://{CITY}/open311/v2/"),),
    ).with_boundary(box(-122.45, 37.74, -122.40, 37.79))
    everything = [*counties, city]
    for j in everything:
        documents.documents[f"/boundaries/{j.id}.geojson"] = (
            "application/geo+json",
            orjson.dumps(jurisdiction_to_feature(j)),
        )
    work = tmp_path_factory.mktemp("dns-registry")
    with Store(work / "registry.sqlite") as store:
        store.save(everything, source="test: the registry the zone publishes")
    result = CliRunner().invoke(
        main,
        [
            "zone", "export", "--origin", ZONE, "--db", str(work / "registry.sqlite"),
            "--no-embedded",
            "--nameserver-address", "127.0.0.1",
            "--ttl", str(TTL), "--boundary-url", f"{documents.base}/boundaries/{{id}}.geojson",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (work / "zone").write_text(result.stdout, encoding="utf-8")
    local_db = work / "local.sqlite"
    with Store(local_db) as store:
        store.save([j for j in counties if j.id.startswith("06")], source="test: California")
    knot = KnotServer(work / "knot", ZONE, work / "zone")
    knot.start()
    yield World(knot, documents, local_db)
    knot.stop()
    documents.stop()


def _settings(world: World, db: Path | None = None, **more: Any) -> Settings:
    return Settings(
        db=str(db or world.local_db),
        dns_nameserver=(world.knot.address,),
        dns_port=world.knot.port,
        dns_timeout=1.0,
        dns_registry_zone=ZONE,
        allow_network=LOOPBACK,
        embedded=False,  # the local counties and what DNS knows, nothing else
        **more,
    )


async def _resolve(client: Any, point: tuple[float, float]) -> dict[str, Any]:
    response = await client.get("/v1/resolve", params={"lat": point[0], "long": point[1]})
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


def _facts(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["fact"]: p for p in body["provenance"]}


async def test_a_city_only_dns_knows_wins_inside_a_local_county(
    world: World, tmp_path: Path, aiohttp_client: Any
) -> None:
    db = tmp_path / "local.sqlite"
    db.write_bytes(world.local_db.read_bytes())
    client = await aiohttp_client(create_app(_settings(world, db)))
    before = world.documents.requests
    body = await _resolve(client, IN_THE_CITY)
    assert body["jurisdiction"]["id"] == CITY
    assert body["endpoint"]["url"] == f"https://{CITY}/open311/v2/"
    assert [a["jurisdiction"]["id"] for a in body["alternatives"]] == ["06075"]  # the county
    facts = _facts(body)
    # which facts came from DNS, with their TTLs
    assert facts["candidates"]["source"] == "dns" and 0 < facts["candidates"]["ttl"] <= TTL
    assert (
        CITY in facts["candidates"]["note"]
        and "local registry: 06075" in facts["candidates"]["note"]
    )
    assert facts["discovery_url"]["source"] == "dns" and 0 < facts["discovery_url"]["ttl"] <= TTL
    assert facts["endpoint"]["reference"] == f"_open311.{CITY} TXT"
    assert facts["boundary"]["source"] == "dns"
    assert facts["boundary"]["reference"].endswith("/boundaries/city.geojson")
    # only the city's boundary was fetched: the counties the local registry has were not
    assert world.documents.requests - before == 1
    # outside the city, San Francisco county (local) answers, with the DNS cell said
    body = await _resolve(client, IN_SF_COUNTY)
    assert body["jurisdiction"]["id"] == "06075"
    facts = _facts(body)
    assert facts["candidates"]["source"] in ("dns", "cache")
    assert "discovery_url" in facts, body["provenance"]
    assert facts["discovery_url"]["verified"] is True  # its own _open311 record attests it


async def test_a_point_the_local_registry_does_not_cover_is_found_through_dns(
    world: World, tmp_path: Path, aiohttp_client: Any
) -> None:
    db = tmp_path / "local.sqlite"
    db.write_bytes(world.local_db.read_bytes())
    for mode in ("always", "uncovered"):
        client = await aiohttp_client(create_app(_settings(world, db, dns_registry_mode=mode)))
        body = await _resolve(client, IN_LAS_VEGAS)
        assert body["jurisdiction"]["id"] == CLARK, mode
        assert body["jurisdiction"]["name"] == "Clark"
        assert _facts(body)["candidates"]["ttl"] <= TTL
        await client.close()


async def test_mode_uncovered_leaves_covered_points_to_the_local_registry(
    world: World, tmp_path: Path, aiohttp_client: Any
) -> None:
    db = tmp_path / "local.sqlite"
    db.write_bytes(world.local_db.read_bytes())
    client = await aiohttp_client(create_app(_settings(world, db, dns_registry_mode="uncovered")))
    body = await _resolve(client, IN_THE_CITY)
    assert body["jurisdiction"]["id"] == "06075"
    assert "candidates" not in _facts(body)


async def test_when_dns_cannot_be_read_the_local_answer_says_so(
    world: World, tmp_path: Path, aiohttp_client: Any
) -> None:
    db = tmp_path / "local.sqlite"
    db.write_bytes(world.local_db.read_bytes())
    settings = replace(_settings(world, db), dns_port=1, dns_timeout=0.2)  # nobody there
    client = await aiohttp_client(create_app(settings))
    body = await _resolve(client, IN_THE_CITY)
    assert body["jurisdiction"]["id"] == "06075"
    fact = _facts(body)["candidates"]
    assert fact["verified"] is False and "answered from the local registry only" in fact["note"]


def test_geoweb_resolve_finds_jurisdictions_through_dns(world: World, tmp_path: Path) -> None:
    db = tmp_path / "local.sqlite"
    db.write_bytes(world.local_db.read_bytes())
    args = [
        "resolve", "--lat", str(IN_LAS_VEGAS[0]), "--long", str(IN_LAS_VEGAS[1]),
        "--db", str(db), "--dns-nameserver", world.knot.address,
        "--dns-port", str(world.knot.port), "--dns-registry-zone", ZONE,
        "--allow-network", LOOPBACK[0], "--no-embedded",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"jurisdiction: {CLARK} (Clark)" in result.output
    result = CliRunner().invoke(main, [*args, "--json"])
    facts = _facts(orjson.loads(result.stdout))
    assert (
        facts["candidates"]["source"] in ("dns", "cache") and facts["boundary"]["source"] == "dns"
    )
    # without the registry zone the store alone does not cover Las Vegas
    plain = [a for a in args if a not in ("--dns-registry-zone", ZONE)]
    assert CliRunner().invoke(main, plain).exit_code == 3


def test_a_registry_zone_needs_a_nameserver() -> None:
    with pytest.raises(InvalidInput, match="needs --dns-nameserver"):
        Settings(dns_registry_zone=ZONE)
    result = CliRunner().invoke(
        main, ["resolve", "--lat", "1", "--long", "1", "--dns-registry-zone", ZONE]
    )
    assert result.exit_code == 2 and "needs --dns-nameserver" in result.output
