"""Boston, Washington DC and Zurich over real HTTP: a stand-in server on loopback serves their
recorded documents (tests/open311_servers.py), and the resolver's answers say which endpoint and
services it found, what was not conformant, and what failed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from shapely.geometry import box

from common.models import Jurisdiction
from resolver.config import Settings
from resolver.http.app import create_app
from resolver.store import Store
from tests.open311_servers import StandIn

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

BOSTON = {"lat": "42.3603", "long": "-71.0580"}  # Boston City Hall
DC = {"lat": "38.8951", "long": "-77.0316"}  # the John A. Wilson Building
ZURICH = {"lat": "47.3779", "long": "8.5403"}  # Zurich main station


@pytest.fixture
def db(tmp_path: Path, city: tuple[str, StandIn]) -> Path:
    base, _state = city
    path = tmp_path / "cities.sqlite"
    # jurisdiction_id as the Open311 wiki's server list gives them (DC's as its clients send it)
    cities = [
        Jurisdiction(
            "boston-ma",
            "Boston, MA",
            jurisdiction_id="cityofboston.gov",
            discovery_url=f"{base}/boston/open311/discovery.json",
        ).with_boundary(box(-71.19, 42.23, -70.99, 42.40)),
        Jurisdiction(
            "washington-dc",
            "Washington, DC",
            jurisdiction_id="dc.gov",
            discovery_url=f"{base}/dc/cwi/Open311/discovery.xml",
        ).with_boundary(box(-77.12, 38.79, -76.91, 39.00)),
        Jurisdiction(
            "zurich-ch",
            "Zürich",
            jurisdiction_id="zurich",
            discovery_url=f"{base}/zurich/open311/v2/discovery.json",
        ).with_boundary(box(8.44, 47.32, 8.63, 47.44)),
    ]
    with Store(path) as store:
        store.save(cities, source="test")
    return path


def settings(db: Path) -> Settings:
    return Settings(
        db=str(db), discovery_refresh=True, allow_network=("127.0.0.0/8",), fetch_timeout=3.0
    )


def provenance(answer: dict[str, Any], fact: str) -> dict[str, Any]:
    return next(p for p in answer["provenance"] if p["fact"] == fact)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/xml",
        "application/xml",
        "text/xml; charset=utf-8",
        "application/xml; charset=utf-8",
    ],
)
async def test_dc_pothole_from_its_recorded_documents(
    aiohttp_client: ClientFactory, db: Path, city: tuple[str, StandIn], content_type: str
) -> None:
    base, state = city
    state.dc_content_type = content_type
    client = await aiohttp_client(create_app(settings(db)))
    first = await (await client.get("/v1/resolve", params={**DC, "concern": "pothole"})).json()
    assert first["jurisdiction"]["id"] == "washington-dc"
    assert first["endpoint"]["url"] == f"{base}/dc/cwi/Open311/v2"
    assert first["endpoint"]["formats"] == ["text/xml"]
    assert first["concern"]["status"] == "verified"
    assert [m["service_code"] for m in first["concern"]["matched_services"]] == ["S0301"]
    services = provenance(first, "services")
    # XML only, beside the discovery document's folder, with DC's jurisdiction_id
    assert services["reference"] == f"{base}/dc/cwi/Open311/v2/services.xml?jurisdiction_id=dc.gov"
    assert services["source"] == "discovery" and services["note"] == "16 services"
    assert provenance(first, "discovery")["note"] == "changeset 2012-03-08T16:00:00-05:00"

    shown = await (await client.get("/v1/jurisdictions/washington-dc")).json()
    assert [(e["url"], e["specification"]) for e in shown["endpoints"]] == [
        (f"{base}/dc/cwi/Open311/v2", "http://wiki.open311.org/GeoReport_v2"),
        (f"{base}/dc/cwi/Open311", "http://wiki.open311.org/GeoReport_v2.1_Draft"),
    ]
    assert shown["notes"] == []  # DC's documents are conformant
    assert shown["refresh"]["ok"] is True

    hits = sum(state.hits.values())
    again = await (await client.get("/v1/resolve", params={**DC, "concern": "pothole"})).json()
    assert sum(state.hits.values()) == hits
    assert provenance(again, "services")["source"] == "cache"
    assert again["concern"] == first["concern"]


async def test_boston_production_endpoint_and_its_non_iso_changesets(
    aiohttp_client: ClientFactory, db: Path, city: tuple[str, StandIn]
) -> None:
    base, state = city
    client = await aiohttp_client(create_app(settings(db)))
    answer = await (await client.get("/v1/resolve", params={**BOSTON, "concern": "pothole"})).json()
    assert answer["jurisdiction"]["id"] == "boston-ma"
    assert answer["endpoint"]["url"] == f"{base}/boston/open311/v2"
    assert answer["endpoint"]["type"] == "production"
    # no services list of Boston was recorded (404 here): unknown, so not refused
    assert answer["concern"]["status"] == "unverified"
    failure = provenance(answer, "services")
    assert failure["note"].startswith("refresh failed: HTTP 404")

    shown = await (await client.get("/v1/jurisdictions/boston-ma")).json()
    assert [(e["url"], e["type"]) for e in shown["endpoints"]] == [
        (f"{base}/boston/open311/v2", "production"),
        (f"{base}/boston-test/open311/v2", "test"),  # the test endpoint, on its own port
    ]
    assert [n for n in shown["notes"] if "ISO 8601" in n] == [
        f"discovery: {where}: changeset '2011-09-1 17:35' is not ISO 8601 "
        "(read as 2011-09-01T17:35:00)"
        for where in ("document", "endpoint 1", "endpoint 2")
    ]
    refresh = shown["refresh"]
    assert refresh["ok"] is False and refresh["attempted_at"]
    assert refresh["reason"].startswith("HTTP 404")
    assert refresh["url"] == (
        f"{base}/boston/open311/v2/services.json?jurisdiction_id=cityofboston.gov"
    )
    assert state.hits["/boston/open311/discovery.json"] == 1


async def test_zurich_served_inside_v2(
    aiohttp_client: ClientFactory, db: Path, city: tuple[str, StandIn]
) -> None:
    base, state = city
    client = await aiohttp_client(create_app(settings(db)))
    answer = await (await client.get("/v1/resolve", params=ZURICH)).json()
    assert answer["jurisdiction"]["id"] == "zurich-ch"
    # the document names the unversioned root; GeoReport v2 lives in the v2/ folder it came from
    assert answer["endpoint"]["url"] == f"{base}/zurich/open311/v2"
    assert state.queries.count("/zurich/open311/v2/services.json?jurisdiction_id=zurich") == 1
    assert state.hits["/zurich/open311/services.json"] == 0

    shown = await (await client.get("/v1/jurisdictions/zurich-ch")).json()
    assert shown["notes"] == [
        "discovery: the document is wrapped in a top-level 'discovery' object",
        "discovery: document: no key_service",
        f"discovery: endpoint 1: url '{base}/zurich/open311' is the unversioned root of the "
        f"'v2/' folder the document is served from; GeoReport v2 is read at "
        f"'{base}/zurich/open311/v2'",
    ]
    # no services list of Zurich was recorded: the endpoint is known, the failure recorded
    assert shown["refresh"]["ok"] is False and shown["refresh"]["reason"].startswith("HTTP 404")
    assert shown["services"] is None
