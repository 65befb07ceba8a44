"""The ad hoc GeoReport v2 endpoint: a real aiohttp server on loopback over a real store (SQLite
and PostgreSQL), spoken to as the spec says (form-encoded POSTs, JSON and XML answers)."""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from common.errors import InvalidInput
from discovery.validator import validate_discovery
from resolver.adhoc import routes
from resolver.adhoc.catalogue import DEFAULT_SERVICES, load_services
from resolver.adhoc.georeport import GeoReportError, check_request, read_filters
from resolver.core.concerns import ServiceCatalog
from resolver.http.keys import STORE
from resolver.store import Store

Client = TestClient[web.Request, web.Application]
SERVICES = {s.service.service_code: s for s in DEFAULT_SERVICES}


@pytest.fixture
async def adhoc(
    store_url: str, aiohttp_client: Callable[..., Awaitable[Client]]
) -> AsyncIterator[Client]:
    store = Store(store_url)
    app = web.Application()
    app[STORE] = store
    routes.add_routes(app, routes.AdhocConfig(posts_per_minute=5), store_key=STORE)
    client = await aiohttp_client(app)
    yield client
    store.close()


@pytest.mark.parametrize(
    ("concern", "code"),
    [
        ("pothole", "pothole"),
        ("Schlagloch", "pothole"),
        ("nid-de-poule", "pothole"),
        ("bache", "pothole"),
        ("Straßenlaterne", "streetlight"),
        ("lampadaire", "streetlight"),
        ("farola", "streetlight"),
        ("Müllabfuhr", "missed_collection"),
        ("vehículo abandonado", "abandoned_vehicle"),
    ],
)
def test_the_concern_matcher_finds_the_default_services_in_four_languages(
    concern: str, code: str
) -> None:
    matches = ServiceCatalog(s.service for s in DEFAULT_SERVICES).match(concern)
    assert matches and matches[0].service.service_code == code


def test_a_catalogue_file_replaces_the_defaults_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "services.yaml"
    good.write_text(
        "- service_code: tree\n  service_name: Fallen tree\n  keywords: [tree, Baum]\n"
        "  attributes:\n  - {code: size, datatype: singlevaluelist, required: true,"
        " values: [{key: s, name: Small}]}\n"
    )
    (loaded,) = load_services(good)
    assert loaded.service.service_code == "tree" and loaded.attributes[0].required
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            [
                {
                    "service_code": "x",
                    "service_name": "X",
                    "attributes": [{"code": "a", "datatype": "colour"}],
                }
            ]
        )
    )
    with pytest.raises(InvalidInput, match="datatype 'colour'"):
        load_services(bad)


def test_a_request_is_checked_against_its_definition() -> None:
    form = {"service_code": ["pothole"], "lat": ["48.1"], "long": ["11.5"]}
    assert check_request(form, SERVICES).lat == 48.1
    with pytest.raises(GeoReportError, match="'high', 'low', 'medium'"):
        check_request({**form, "attribute[severity]": ["huge"]}, SERVICES)
    with pytest.raises(GeoReportError, match="no attribute 'colour'"):
        check_request({**form, "attribute[colour]": ["red"]}, SERVICES)
    with pytest.raises(GeoReportError, match="a location is required"):
        check_request({"service_code": ["pothole"]}, SERVICES)
    with pytest.raises(GeoReportError) as missing:
        check_request({"service_code": ["nope"], "lat": ["1"], "long": ["1"]}, SERVICES)
    assert missing.value.status == 404


def test_the_filters_default_to_90_days_and_cap_a_longer_span() -> None:
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    f = read_filters({}, now)
    assert f.start == now - dt.timedelta(days=90) and f.limit == 1000
    f = read_filters(
        {"start_date": "2025-01-01T00:00:00Z", "end_date": "2026-01-01T00:00:00Z"}, now
    )
    assert f.end is not None and f.start is not None and f.end - f.start == dt.timedelta(days=90)
    with pytest.raises(GeoReportError, match="open or closed"):
        read_filters({"status": "lost"}, now)


async def test_services_and_definition_in_json_and_xml(adhoc: Client) -> None:
    services = await (await adhoc.get("/adhoc/v2/services.json")).json()
    assert {s["service_code"] for s in services} >= {"pothole", "graffiti", "streetlight"}
    xml = ET.fromstring(await (await adhoc.get("/adhoc/v2/services.xml")).read())
    assert xml.tag == "services" and xml.find("service/service_code") is not None
    definition = await (await adhoc.get("/adhoc/v2/services/pothole.json")).json()
    assert definition["attributes"][0]["code"] == "severity"
    xdef = ET.fromstring(await (await adhoc.get("/adhoc/v2/services/pothole.xml")).read())
    assert xdef.findtext("attributes/attribute/values/value/key") == "low"
    missing = await adhoc.get("/adhoc/v2/services/nope.xml")
    body = ET.fromstring(await missing.read())
    assert missing.status == 404 and body.tag == "errors" and body.findtext("error/code") == "404"


async def test_a_post_is_kept_read_back_and_never_shows_the_reporter(adhoc: Client) -> None:
    posted = await adhoc.post(
        "/adhoc/v2/requests.json",
        data={
            "service_code": "pothole",
            "lat": "-33.9",
            "long": "18.4",
            "description": "deep hole",
            "attribute[severity]": "high",
            "email": "me@example.org",
            "first_name": "Ada",
            "phone": "+1 555-0199",
        },
    )
    assert posted.status == 201
    (created,) = await posted.json()
    rid, token = created["service_request_id"], created["token"]
    (shown,) = await (await adhoc.get(f"/adhoc/v2/requests/{rid}.json")).json()
    assert (
        shown["description"] == "deep hole" and shown["status"] == "open" and shown["lat"] == -33.9
    )
    listing = await (
        await adhoc.get("/adhoc/v2/requests.json?service_code=pothole&status=open")
    ).text()
    token_xml = await (await adhoc.get(f"/adhoc/v2/tokens/{token}.xml")).read()
    for public in (
        json.dumps(shown),
        listing,
        (await (await adhoc.get(f"/adhoc/v2/requests/{rid}.xml")).text()),
    ):
        assert rid in public
        assert "me@example.org" not in public and "Ada" not in public and "555-0199" not in public
    assert ET.fromstring(token_xml).findtext("request/service_request_id") == rid
    assert await (await adhoc.get("/adhoc/v2/requests.json?status=closed")).json() == []
    gone = await adhoc.get("/adhoc/v2/requests/adhoc-nothing.json")
    assert gone.status == 404 and (await gone.json())[0]["code"] == 404


async def test_bad_posts_get_spec_errors_and_a_flood_gets_429(adhoc: Client) -> None:
    bad = await adhoc.post(
        "/adhoc/v2/requests.xml", data={"service_code": "pothole", "lat": "91", "long": "0"}
    )
    assert bad.status == 400 and ET.fromstring(await bad.read()).findtext(
        "error/description", ""
    ).startswith("lat")
    big = await adhoc.post(
        "/adhoc/v2/requests.json", data={"service_code": "pothole", "description": "x" * 70_000}
    )
    assert big.status == 413 and (await big.json())[0]["code"] == 413
    statuses = []
    for _ in range(6):
        r = await adhoc.post(
            "/adhoc/v2/requests.json",
            data={"service_code": "graffiti", "address_string": "Main St 1"},
        )
        statuses.append(r.status)
    assert statuses[-1] == 429 and 201 in statuses  # 5 a minute, and the two bad ones counted
    last = await adhoc.post(
        "/adhoc/v2/requests.json", data={"service_code": "graffiti", "address_string": "x"}
    )
    assert last.status == 429 and last.headers["Retry-After"] == "60"
    assert "too many requests" in (await last.json())[0]["description"]


async def test_the_discovery_document_names_the_endpoint(adhoc: Client) -> None:
    doc = await (await adhoc.get("/adhoc/discovery.json")).json()
    assert doc["endpoints"][0]["url"].endswith("/adhoc/v2")
    xml = ET.fromstring(await (await adhoc.get("/adhoc/discovery.xml")).read())
    assert xml.findtext("endpoints/endpoint/url", "").endswith("/adhoc/v2")
    for fmt in ("json", "xml"):
        url = str(adhoc.make_url(f"/adhoc/discovery.{fmt}"))
        answer = await adhoc.get(f"/adhoc/discovery.{fmt}")
        verdict = validate_discovery(await answer.read(), answer.headers["Content-Type"], name=url)
        assert verdict.passed, [f.to_dict() for f in verdict.failures]


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_a_third_party_georeport_client_reads_the_endpoint(adhoc: Client, fmt: str) -> None:
    """The PyPI ``georeport`` client (blocking, so in a thread) against the ad hoc endpoint; it has
    no POST, so the request is posted form-encoded as the spec says."""
    import asyncio

    from georeport import GeoReport

    posted = await adhoc.post(
        f"/adhoc/v2/requests.{fmt}",
        data={"service_code": "streetlight", "lat": "52.5", "long": "13.4", "description": "dark"},
    )
    assert posted.status == 201
    body = await posted.read()
    rid = (
        json.loads(body)[0]["service_request_id"]
        if fmt == "json"
        else ET.fromstring(body).findtext("request/service_request_id")
    )
    client = GeoReport(str(adhoc.make_url("/adhoc/v2")), output_format=fmt)
    services = await asyncio.to_thread(client.get_service_list)
    assert "streetlight" in [s["service_code"] for s in services]
    definition = await asyncio.to_thread(client.get_service_definition, "pothole")
    attributes = definition["attributes"]
    first = attributes[0] if fmt == "json" else attributes["attribute"]
    assert first["code"] == "severity"
    one = await asyncio.to_thread(client.get_service_request, rid)
    assert one["service_request_id"] == rid and one["description"] == "dark"
    many = await asyncio.to_thread(client.get_service_requests, service_code="streetlight")
    rows = many if isinstance(many, list) else [many]
    assert [r["service_request_id"] for r in rows] == [rid]


async def test_by_default_an_uncovered_point_falls_back_to_this_servers_adhoc_service(
    aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path
) -> None:
    """``geoweb serve``'s app with no --fallback-url: the answer names /adhoc/v2 on the URL the
    request came in on, and a report POSTed there is held; --public-url wins; --no-adhoc says
    there is nowhere to send it, and the routes are gone."""
    from resolver.config import Settings
    from resolver.http.app import create_app

    client = await aiohttp_client(create_app(Settings(db=str(tmp_path / "a.sqlite"))))
    ocean = {"lat": "30", "long": "-40", "concern": "pothole"}
    body = await (await client.get("/v1/resolve", params=ocean)).json()
    endpoint = str(client.make_url("/adhoc/v2"))
    assert body["fallback"] is True and body["reason"] == "no_jurisdiction"
    assert body["endpoint"]["url"] == endpoint and endpoint in body["message"]
    service = await (await client.get("/service", params={"lat": "30", "long": "-40"})).json()
    assert service["results"][0]["uri"] == endpoint and service["results"][0]["fallback"] is True
    posted = await client.post(
        "/adhoc/v2/requests.json", data={"service_code": "pothole", "lat": "30", "long": "-40"}
    )
    assert posted.status == 201

    public = Settings(db=str(tmp_path / "b.sqlite"), public_url="https://geoweb.example.org/")
    client = await aiohttp_client(create_app(public))
    body = await (await client.get("/v1/resolve", params=ocean)).json()
    assert body["endpoint"]["url"] == "https://geoweb.example.org/adhoc/v2"

    off = Settings(db=str(tmp_path / "c.sqlite"), adhoc=False)
    client = await aiohttp_client(create_app(off))
    body = await (await client.get("/v1/resolve", params=ocean)).json()
    assert body["fallback"] is False and "nowhere to send the report" in body["message"]
    assert (await client.get("/adhoc/v2/services.json")).status == 404
