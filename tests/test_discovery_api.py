"""Answers with facts refreshed from the cities themselves, over real HTTP: a registry pointing
at stand-in city servers built from the recorded real documents; the first answer's services
come from the network, the second (after a restart) from the cache, and provenance says which.
Hostile cities are refused with a recorded reason, visible in GET /v1/jurisdictions/{id};
``geoweb refresh`` does the same on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from shapely.geometry import box

from common.models import Endpoint, Jurisdiction
from resolver.cli.main import main
from resolver.config import Settings
from resolver.http.app import create_app
from resolver.store import Store
from tests.open311_servers import StandIn

BLOOMINGTON = {"lat": "39.1653", "long": "-86.5264"}
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def db(tmp_path: Path, city: tuple[str, StandIn]) -> Path:
    base, _state = city
    path = tmp_path / "registry.sqlite"
    bloomington = Jurisdiction(
        "bloomington-in",
        "Bloomington, IN",
        jurisdiction_id="bloomington.in.gov",
        discovery_url=f"{base}/bloomington/discovery.json",
    ).with_boundary(box(-86.60, 39.09, -86.45, 39.23))
    monroe = Jurisdiction(  # a county around it whose server is hostile
        "monroe-in",
        "Monroe County, IN",
        discovery_url=f"{base}/hostile/to-metadata",
    ).with_boundary(box(-86.70, 38.99, -86.30, 39.35))
    with Store(path) as store:
        store.save([bloomington, monroe], source="test")
    return path


def settings(db: Path) -> Settings:
    return Settings(
        adhoc=False,  # no fallback: an answer is found only once the entry arrives
        db=str(db),
        discovery_refresh=True,
        allow_network=("127.0.0.0/8",),
        fetch_timeout=3.0,
    )


async def test_pothole_from_network_then_from_cache(
    aiohttp_client: ClientFactory, db: Path, city: tuple[str, StandIn]
) -> None:
    base, state = city
    client = await aiohttp_client(create_app(settings(db)))
    first = await (
        await client.get("/v1/resolve", params={**BLOOMINGTON, "concern": "pothole"})
    ).json()
    assert first["endpoint"]["url"] == f"{base}/bloomington/v2"  # production GeoReport v2
    assert first["jurisdiction"]["id"] == "bloomington-in"
    assert first["concern"]["status"] == "verified"
    assert first["concern"]["matched_services"][0]["service_code"] == "25"
    services = next(p for p in first["provenance"] if p["fact"] == "services")
    assert services["source"] == "discovery"  # from the network
    assert (
        services["reference"]
        == f"{base}/bloomington/v2/services.xml?jurisdiction_id=bloomington.in.gov"
    )
    assert {"fact": "discovery", "source": "discovery"}.items() <= next(
        p for p in first["provenance"] if p["fact"] == "discovery"
    ).items()
    # the county's hostile server: refused, recorded, the county only an alternative
    (county,) = first["alternatives"]
    assert county["jurisdiction"]["id"] == "monroe-in"
    hits = sum(state.hits.values())
    again = await (
        await client.get("/v1/resolve", params={**BLOOMINGTON, "concern": "pothole"})
    ).json()
    assert sum(state.hits.values()) == hits  # nothing fetched again: the same answer, from cache
    assert {k: v for k, v in again.items() if k != "provenance"} == {
        k: v for k, v in first.items() if k != "provenance"
    }
    assert next(p for p in again["provenance"] if p["fact"] == "services")["source"] == "cache"

    shown = await (await client.get("/v1/jurisdictions/monroe-in")).json()
    assert shown["refresh"]["ok"] is False
    assert "169.254.169.254" in shown["refresh"]["reason"] and shown["refresh"]["attempted_at"]
    ok = await (await client.get("/v1/jurisdictions/bloomington-in")).json()
    assert ok["refresh"]["ok"] is True and ok["refresh"]["last_success_at"]
    await client.close()

    # a restart: the facts come from the HTTP cache in the store, not from the city
    restarted = await aiohttp_client(create_app(settings(db)))
    second = await (
        await restarted.get("/v1/resolve", params={**BLOOMINGTON, "concern": "pothole"})
    ).json()
    assert second["endpoint"] == first["endpoint"]
    assert second["concern"] == first["concern"]
    services = next(p for p in second["provenance"] if p["fact"] == "services")
    assert services["source"] == "cache"
    assert state.hits["/bloomington/v2/services.xml"] == 1
    assert state.hits["/bloomington/discovery.json"] == 1


async def test_services_and_concerns_routes(
    aiohttp_client: ClientFactory, db: Path, city: tuple[str, StandIn]
) -> None:
    client = await aiohttp_client(create_app(settings(db)))
    listed = await (await client.get("/v1/jurisdictions/bloomington-in/services")).json()
    assert len(listed["services"]) == 18
    assert listed["endpoint"]["type"] == "production"
    here = await (
        await client.get("/v1/concerns", params={**BLOOMINGTON, "concern": "potholes"})
    ).json()
    assert here["chosen"] == "bloomington-in"
    ids = [j["id"] for j in here["jurisdictions"]]
    assert ids == ["bloomington-in", "monroe-in"]
    assert here["jurisdictions"][0]["matched_services"][0]["service_code"] == "25"
    assert here["jurisdictions"][1]["services"] is None  # the county could not be read
    missing = await client.get("/v1/concerns", params={"lat": "39"})
    assert missing.status == 400


async def test_changeset_or_etag_change_is_picked_up(
    aiohttp_client: ClientFactory, db: Path, city: tuple[str, StandIn]
) -> None:
    _base, state = city
    state.max_age = 0  # every answer revalidates with the city
    client = await aiohttp_client(create_app(settings(db)))
    await client.get("/v1/resolve", params={**BLOOMINGTON, "concern": "pothole"})
    second = await (
        await client.get("/v1/resolve", params={**BLOOMINGTON, "concern": "pothole"})
    ).json()
    services = next(p for p in second["provenance"] if p["fact"] == "services")
    assert services["source"] == "cache" and "304" in services["note"]  # revalidated, not refetched
    state.etag_version = 2
    third = await (
        await client.get("/v1/resolve", params={**BLOOMINGTON, "concern": "pothole"})
    ).json()
    services = next(p for p in third["provenance"] if p["fact"] == "services")
    assert services["source"] == "discovery"


async def test_refresh_command(db: Path, city: tuple[str, StandIn]) -> None:
    _base, state = city
    args = ["refresh", "--db", str(db), "--allow-network", "127.0.0.0/8", "--fetch-timeout", "3"]
    # the stand-in city runs on this event loop; the command runs its own loop in a thread
    result = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert result.exit_code == 1  # the county's refresh failed
    assert "failed: monroe-in" in result.output and "169.254.169.254" in result.output
    assert state.hits["/bloomington/v2/services.xml"] == 1
    only = [*args, "--jurisdiction", "bloomington-in"]
    result = await asyncio.to_thread(CliRunner().invoke, main, only)
    assert result.exit_code == 0, result.output


def test_discovery_cli_generate_and_validate(tmp_path: Path) -> None:
    runner = CliRunner()
    fixture = Path(__file__).parent / "fixtures" / "discovery" / "sf-discovery.xml"
    result = runner.invoke(main, ["discovery", "validate", str(fixture)])
    assert result.exit_code == 1
    assert "FAIL  GeoReport v2 endpoints support text/xml" in result.output
    db = tmp_path / "publisher.sqlite"
    publisher = Jurisdiction(
        "pub", "Publisher", endpoints=(Endpoint("https://311.pub.example/open311/v2/"),)
    ).with_boundary(box(0, 0, 1, 1))
    with Store(db) as store:
        store.save([publisher], source="test")
    out = tmp_path / "site"
    result = runner.invoke(
        main,
        [
            "discovery",
            "generate",
            "pub",
            "--contact",
            "311@pub.example",
            "--key-service",
            "https://pub.example/key",
            "--out",
            str(out),
            "--db",
            str(db),
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("discovery.json", "discovery.xml"):
        checked = runner.invoke(main, ["discovery", "validate", str(out / name), "--json"])
        assert checked.exit_code == 0, checked.output
        assert '"passed": true' in checked.output


async def test_a_service_area_in_the_discovery_document_becomes_the_boundary(
    aiohttp_client: ClientFactory,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    tmp_path: Path,
) -> None:
    from aiohttp import web

    area = {
        "type": "Polygon",
        "coordinates": [[[10, 50], [10.5, 50], [10.5, 50.5], [10, 50.5], [10, 50]]],
    }

    async def discovery(request: web.Request) -> web.Response:
        base = f"http://{request.host}"
        return web.json_response(
            {
                "changeset": "2026-01-01T00:00:00Z",
                "contact": "311@town.example",
                "key_service": "https://town.example/keys",
                "endpoints": [
                    {
                        "specification": "http://wiki.open311.org/GeoReport_v2",
                        "url": f"{base}/v2",
                        "changeset": "2026-01-01T00:00:00Z",
                        "type": "production",
                        "formats": ["application/json"],
                    }
                ],
                "service_area": area,
            }
        )

    async def services(request: web.Request) -> web.Response:
        return web.json_response([{"service_code": "1", "service_name": "Pothole"}])

    app = web.Application()
    app.router.add_get("/discovery.json", discovery)
    app.router.add_get("/v2/services.json", services)
    town = await aiohttp_server(app)
    path = tmp_path / "area.sqlite"
    with Store(path) as store:  # the registry only knows a rough box around the town
        rough = Jurisdiction("town", "Town", discovery_url=str(town.make_url("/discovery.json")))
        store.save([rough.with_boundary(box(9.9, 49.9, 11.0, 51.0))], source="test")
    client = await aiohttp_client(create_app(settings(path)))
    inside = await (await client.get("/v1/resolve?lat=50.25&long=10.25")).json()
    assert inside["jurisdiction"]["id"] == "town"
    boundary = next(p for p in inside["provenance"] if p["fact"] == "boundary")
    assert boundary["source"] == "discovery" and boundary["reference"].endswith("/discovery.json")
    assert boundary["note"] == "service_area"
    # Outside the published service area but inside the registry's rough box: not the town's.
    outside = await (await client.get("/v1/resolve?lat=50.8&long=10.8")).json()
    assert outside["found"] is False and outside["reason"] == "no_jurisdiction"
