"""One hostile city cannot break the answers of its neighbours.

A county around Bloomington is served by a stand-in city on loopback that sends, one case at a
time, documents a careless or hostile server might: nested 100,000 deep (JSON and XML), a
``service_area`` with NaN coordinates, a services list nested 100,000 deep. With
``--discovery-refresh``, ``/v1/resolve`` and ``/service`` still answer for Bloomington (inside the
county) from what is known, and the county's refresh status names what failed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from shapely.geometry import box

from common.models import Jurisdiction
from resolver.config import Settings
from resolver.http.app import create_app
from resolver.store import Store
from tests.open311_servers import StandIn

BLOOMINGTON = {"lat": "39.1653", "long": "-86.5264"}
DEEP = 100_000
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def _discovery(base: str, **more: Any) -> dict[str, Any]:
    return {
        "changeset": "2026-01-01T00:00:00Z",
        "contact": "county@example.org",
        "endpoints": [
            {
                "specification": "http://wiki.open311.org/GeoReport_v2",
                "url": f"{base}/v2",
                "changeset": "2026-01-01T00:00:00Z",
                "type": "production",
                "formats": ["application/json"],
            }
        ],
        **more,
    }


def _deep_json(key: str) -> bytes:
    return b'{"%s": ' % key.encode() + b"[" * DEEP + b"]" * DEEP + b"}"


CASES: dict[str, Callable[[str], tuple[bytes, str, bytes]]] = {
    # the discovery document nested 100,000 deep
    "deep discovery JSON": lambda base: (_deep_json("endpoints"), "application/json", b"[]"),
    "deep discovery XML": lambda base: (
        b"<discovery>" + b"<x>" * DEEP + b"</x>" * DEEP + b"</discovery>",
        "text/xml",
        b"[]",
    ),
    # a service_area whose coordinates are NaN (the standard library writes them)
    "NaN service_area": lambda base: (
        json.dumps(
            _discovery(
                base,
                service_area={
                    "type": "Polygon",
                    "coordinates": [[[-87, 39], [-86, 39], [-86, float("nan")], [-87, 39]]],
                },
            )
        ).encode(),
        "application/json",
        b"[]",
    ),
    # a good discovery document whose services list is nested 100,000 deep
    "deep services list": lambda base: (
        json.dumps(_discovery(base)).encode(),
        "application/json",
        b"[" * DEEP + b"]" * DEEP,
    ),
}


@pytest.fixture(params=sorted(CASES))
async def hostile(request: pytest.FixtureRequest) -> Any:
    """A stand-in county server sending one hostile case; yields (case, base URL)."""
    app = web.Application()
    case = CASES[request.param]

    async def discovery(req: web.Request) -> web.Response:
        body, content_type, _services = case(str(req.url.origin()))
        return web.Response(body=body, content_type=content_type)

    async def services(req: web.Request) -> web.Response:
        return web.Response(body=case(str(req.url.origin()))[2], content_type="application/json")

    app.router.add_get("/discovery", discovery)
    app.router.add_get("/v2/services.json", services)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield request.param, str(server.make_url("")).rstrip("/")
    await server.close()


async def test_a_hostile_county_does_not_break_answers_inside_it(
    aiohttp_client: ClientFactory, tmp_path: Path, city: tuple[str, StandIn], hostile: Any
) -> None:
    base, _state = city
    case, county_base = hostile
    db = tmp_path / "registry.sqlite"
    bloomington = Jurisdiction(
        "bloomington-in",
        "Bloomington, IN",
        jurisdiction_id="bloomington.in.gov",
        discovery_url=f"{base}/bloomington/discovery.json",
    ).with_boundary(box(-86.60, 39.09, -86.45, 39.23))
    county = Jurisdiction(
        "monroe-in", "Monroe County, IN", discovery_url=f"{county_base}/discovery"
    ).with_boundary(box(-86.70, 38.99, -86.30, 39.35))
    with Store(db) as store:
        store.save([bloomington, county], source="test")
    settings = Settings(
        db=str(db), discovery_refresh=True, allow_network=("127.0.0.0/8",), fetch_timeout=5.0
    )
    client = await aiohttp_client(create_app(settings))
    for _ in range(2):  # the second time, from what the first refresh left
        response = await client.get("/v1/resolve", params={**BLOOMINGTON, "concern": "pothole"})
        assert response.status == 200, f"{case}: {await response.text()}"
        body = await response.json()
        assert body["jurisdiction"]["id"] == "bloomington-in", case
        assert body["endpoint"]["url"] == f"{base}/bloomington/v2"
        assert [a["jurisdiction"]["id"] for a in body["alternatives"]] == ["monroe-in"]
        service = await client.get("/service", params=BLOOMINGTON)
        assert service.status == 200, f"{case}: {await service.text()}"
    shown = await (await client.get("/v1/jurisdictions/monroe-in")).json()
    if case == "NaN service_area":  # the document is usable without its area; the area is not
        assert not any(p["fact"] == "boundary" for p in shown.get("provenance", []))
        assert any("service_area" in n and "finite" in n for n in shown["notes"]), shown["notes"]
    else:
        assert shown["refresh"]["ok"] is False, case
        assert "deeper than 64" in shown["refresh"]["reason"], shown["refresh"]
