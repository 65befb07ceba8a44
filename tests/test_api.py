"""The HTTP API over real loopback HTTP (aiohttp test server and client), on the embedded registry
and on the imported US counties."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from common.models import Endpoint
from resolver.config import Settings
from resolver.http.app import (
    ANSWERER,
    TYPE_CONCERN_PREFIX,
    TYPE_DISCOVERY,
    TYPE_OPEN311,
    create_app,
)

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

SF_CITY_HALL = {"lat": "37.7793", "long": "-122.4193"}
NEVADA_DESERT = {"lat": "38.5", "long": "-116.5"}
FALLBACK = "https://adhoc.example.org/open311/v2/"


@pytest.fixture
async def client(aiohttp_client: ClientFactory, tmp_path: Path) -> TestClient[Any, Any]:
    """The service on an empty store: it serves the embedded registry; no fallback at all."""
    settings = Settings(db=str(tmp_path / "empty.sqlite"), adhoc=False)
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def fallback_client(aiohttp_client: ClientFactory, tmp_path: Path) -> TestClient[Any, Any]:
    settings = Settings(db=str(tmp_path / "empty.sqlite"), fallback_url=FALLBACK)
    return await aiohttp_client(create_app(settings))


async def _json(response: Any) -> Any:
    assert response.content_type in ("application/json", "application/geo+json")
    return await response.json(content_type=None)


async def test_service_names_san_francisco(client: TestClient[Any, Any]) -> None:
    response = await client.get("/service", params={**SF_CITY_HALL, "type": TYPE_OPEN311})
    assert response.status == 200
    (result,) = (await _json(response))["results"]
    assert result["type"] == TYPE_OPEN311
    assert result["name"].startswith("San Francisco")
    assert result["uri"] == "https://mobile311.sfgov.org/open311/v2/"
    assert result["kml"].endswith("/v1/jurisdictions/san-francisco-ca.kml")
    kml = await client.get(result["kml"].removeprefix(str(client.make_url(""))))
    assert kml.status == 200
    assert "<Polygon>" in await kml.text()


async def test_service_without_type_answers_every_type(client: TestClient[Any, Any]) -> None:
    response = await client.get("/service", params=SF_CITY_HALL)
    results = (await _json(response))["results"]
    assert {r["type"] for r in results} == {TYPE_OPEN311, TYPE_DISCOVERY}
    discovery = next(r for r in results if r["type"] == TYPE_DISCOVERY)
    assert discovery["uri"].endswith("discovery.json")


async def test_service_with_repeated_types_and_a_concern_type(client: TestClient[Any, Any]) -> None:
    params = [
        ("lat", "37.7793"),
        ("long", "-122.4193"),
        ("type", TYPE_OPEN311),
        ("type", TYPE_CONCERN_PREFIX + "pothole"),
    ]
    results = (await _json(await client.get("/service", params=params)))["results"]
    assert [r["type"] for r in results] == [TYPE_OPEN311, TYPE_CONCERN_PREFIX + "pothole"]
    assert results[0]["uri"] == results[1]["uri"]


async def test_service_bodies_follow_registry_changes_and_the_host(
    client: TestClient[Any, Any],
) -> None:
    """/service keeps serialized bodies per decision; a changed entry or another host is a new
    body, and the order of the types is kept."""
    params = {**SF_CITY_HALL, "type": TYPE_OPEN311}
    first = (await _json(await client.get("/service", params=params)))["results"][0]
    assert first["uri"] == "https://mobile311.sfgov.org/open311/v2/"
    answerer = client.app[ANSWERER]
    sf = answerer.resolver.jurisdiction("san-francisco-ca")
    moved = replace(sf, endpoints=(Endpoint(url="https://new.sfgov.example/open311/v2/"),))
    await answerer.update([moved])
    second = (await _json(await client.get("/service", params=params)))["results"][0]
    assert second["uri"] == "https://new.sfgov.example/open311/v2/"
    other_host = await client.get("/service", params=params, headers={"Host": "geoweb.example"})
    assert (await _json(other_host))["results"][0]["kml"].startswith("http://geoweb.example/")
    both = [("type", TYPE_DISCOVERY), ("type", TYPE_OPEN311)]
    for order in (both, both[::-1]):
        results = await _json(await client.get("/service", params=[*SF_CITY_HALL.items(), *order]))
        assert [r["type"] for r in results["results"]] == [t for _, t in order]


@pytest.mark.parametrize(
    ("types", "status", "answered"),
    [
        # only types this server does not answer: the protocol's "no results"
        (["urn:x-unknown"], 404, []),
        (["urn:x-unknown", "http://ns.geowebdns.org/311/elsewhere"], 404, []),
        # an unknown type beside a known one: "any of the given types", the unknown ignored
        (["urn:x-unknown", TYPE_OPEN311], 200, [TYPE_OPEN311]),
        ([TYPE_DISCOVERY, "", TYPE_CONCERN_PREFIX], 200, [TYPE_DISCOVERY]),
        # other spellings of the same types: https, a trailing slash, the host's case, the port
        (["https://ns.geowebdns.org/311/jurisdiction"], 200, ["https://ns.geowebdns.org/311/jurisdiction"]),
        ([TYPE_OPEN311 + "/"], 200, [TYPE_OPEN311 + "/"]),
        (["HTTP://NS.GeoWebDNS.org:80/311/discovery"], 200, ["HTTP://NS.GeoWebDNS.org:80/311/discovery"]),
        (["https://ns.geowebdns.org/311/concern/pothole/"], 200, ["https://ns.geowebdns.org/311/concern/pothole/"]),
        # the path is compared as written: another path is another (unknown) type
        (["http://ns.geowebdns.org/311/Jurisdiction"], 404, []),
        # a port that is not the scheme's default names another host
        (["http://ns.geowebdns.org:8080/311/jurisdiction"], 404, []),
    ],
)  # fmt: skip
async def test_service_types_as_the_wiki_page_reads_them(
    client: TestClient[Any, Any], types: list[str], status: int, answered: list[str]
) -> None:
    params = [*SF_CITY_HALL.items(), *(("type", t) for t in types)]
    response = await client.get("/service", params=params)
    assert response.status == status
    results = (await _json(response))["results"]
    assert [r["type"] for r in results] == answered  # each result names its type as asked
    for result in results:
        assert result["uri"].startswith("https://mobile311.sfgov.org/") or result["uri"].endswith(
            "discovery.json"
        )
        assert result["kml_uri"] == result["kml"] and result["kml"].endswith(".kml")


async def test_service_types_lists_the_types_served(client: TestClient[Any, Any]) -> None:
    body = await _json(await client.get("/service/types"))
    listed = [t["type"] for t in body["types"]]
    assert listed == [TYPE_OPEN311, TYPE_DISCOVERY, TYPE_CONCERN_PREFIX + "{concern}"]
    assert body["default"] == [TYPE_OPEN311, TYPE_DISCOVERY]
    assert "https as http" in body["compared"]


async def test_nevada_desert_is_404_with_empty_results(client: TestClient[Any, Any]) -> None:
    response = await client.get("/service", params={**NEVADA_DESERT, "type": TYPE_OPEN311})
    assert response.status == 404
    assert await _json(response) == {"results": []}


async def test_nevada_desert_gets_the_fallback_when_configured(
    fallback_client: TestClient[Any, Any],
) -> None:
    response = await fallback_client.get("/service", params={**NEVADA_DESERT, "type": TYPE_OPEN311})
    assert response.status == 200
    (result,) = (await _json(response))["results"]
    assert result["uri"] == FALLBACK and result["fallback"] is True
    native = await _json(await fallback_client.get("/v1/resolve", params=NEVADA_DESERT))
    assert native["fallback"] is True and native["reason"] == "no_jurisdiction"
    assert native["endpoint"]["url"] == FALLBACK


@pytest.mark.parametrize(
    ("path", "params", "status", "error"),
    [
        # latitude out of range
        ("/service", {"lat": "91", "long": "0"}, 400, "invalid_coordinates"),
        # longitude out of range
        ("/v1/resolve", {"lat": "0", "long": "-180.5"}, 400, "invalid_coordinates"),
        # NaN
        ("/v1/resolve", {"lat": "nan", "long": "0"}, 400, "invalid_coordinates"),
        # infinity
        ("/service", {"lat": "0", "long": "inf"}, 400, "invalid_coordinates"),
        # empty value
        ("/v1/resolve", {"lat": "", "long": "0"}, 400, "invalid_coordinates"),
        # not a number
        ("/service", {"lat": "north", "long": "0"}, 400, "invalid_coordinates"),
        # swapped San Francisco: refused as given (lat out of range), never swapped
        ("/service", {"lat": "-122.4193", "long": "37.7793"}, 400, "invalid_coordinates"),
        # missing long
        ("/service", {"lat": "37"}, 400, "missing_parameter"),
        # missing both
        ("/v1/resolve", {}, 400, "missing_parameter"),
        # a concern that is absurdly long
        ("/v1/resolve", {**SF_CITY_HALL, "concern": "x" * 500}, 400, "invalid_input"),
        # an unknown jurisdiction
        ("/v1/jurisdictions/atlantis", {}, 404, "unknown_jurisdiction"),
        ("/v1/jurisdictions/atlantis.kml", {}, 404, "unknown_jurisdiction"),
        # a bad page size
        ("/v1/jurisdictions", {"limit": "lots"}, 400, "invalid_input"),
        # a path that does not exist
        ("/nope", {}, 404, "not_found"),
    ],
)
async def test_bad_requests_get_a_json_error(
    client: TestClient[Any, Any], path: str, params: dict[str, str], status: int, error: str
) -> None:
    response = await client.get(path, params=params)
    assert response.status == status
    body = await _json(response)
    assert body["error"] == error
    assert body["detail"]


async def test_swapped_looking_values_in_range_are_answered_as_given(
    client: TestClient[Any, Any],
) -> None:
    # Philadelphia's coordinates swapped land in the Southern Ocean: answered, as nobody's
    response = await client.get("/v1/resolve", params={"lat": "-75.1652", "long": "39.9526"})
    body = await _json(response)
    assert response.status == 200
    assert body["found"] is False and body["reason"] == "no_jurisdiction"
    assert "no fallback service is configured" in body["message"]


async def test_native_resolve_has_provenance_and_generation(client: TestClient[Any, Any]) -> None:
    body = await _json(
        await client.get("/v1/resolve", params={**SF_CITY_HALL, "concern": "pothole"})
    )
    assert body["jurisdiction"]["id"] == "san-francisco-ca"
    assert body["endpoint"]["url"] == "https://mobile311.sfgov.org/open311/v2/"
    assert body["concern"]["status"] == "unverified"  # services not read yet
    assert body["boundary_generation"] and body["index_generation"]
    sources = {(p["fact"], p["source"]) for p in body["provenance"]}
    assert ("boundary", "registry") in sources and ("endpoints", "registry") in sources


async def test_batch_as_array_and_as_geojson_in_order(client: TestClient[Any, Any]) -> None:
    points = [
        {"lat": 37.7793, "long": -122.4193},
        {"lat": 38.5, "long": -116.5},
        {"lat": 95, "long": 0},
        {"long": 1},
        "not an object",
        {"lat": 51.5074, "long": -0.1278, "concern": "pothole"},
    ]
    body = await _json(await client.post("/v1/resolve", data=orjson.dumps(points)))
    answers = body["answers"]
    assert body["count"] == len(points) == len(answers)
    assert answers[0]["jurisdiction"]["id"] == "san-francisco-ca"
    assert answers[1]["found"] is False
    assert answers[2]["error"] == "invalid_coordinates"
    assert answers[3]["error"] == "missing_parameter"
    assert answers[4]["error"] == "invalid_input"
    assert answers[5]["jurisdiction"]["id"] == "fixmystreet-uk"
    assert answers[5]["query"]["concern"] == "pothole"

    collection = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [10.7522, 59.9139]}},
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]},
            },
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [-75.1652, 39.9526]}},
        ],
    }
    answers = (await _json(await client.post("/v1/resolve", json=collection)))["answers"]
    assert answers[0]["jurisdiction"]["id"] == "fiksgatami-no"
    assert answers[1]["error"] == "invalid_input"
    assert answers[2]["jurisdiction"]["id"] == "philadelphia-pa"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "not valid JSON"),  # malformed JSON
        (b'{"points": []}', "JSON array"),  # an object that is not a FeatureCollection
        (b"42", "JSON array"),  # a bare number
    ],
)
async def test_batch_malformed_bodies(
    client: TestClient[Any, Any], body: bytes, detail: str
) -> None:
    response = await client.post("/v1/resolve", data=body)
    assert response.status == 400
    assert detail in (await _json(response))["detail"]


async def test_a_10_mb_body_is_refused_with_413(client: TestClient[Any, Any]) -> None:
    response = await client.post(
        "/v1/resolve", data=io.BytesIO(b"[" + b" " * (10 * 1024 * 1024) + b"]")
    )
    assert response.status == 413
    body = await _json(response)
    assert body["error"] == "payload_too_large" and body["limit"] == Settings.max_body_bytes


async def test_a_batch_of_1_000_001_points_is_refused(
    aiohttp_client: ClientFactory, tmp_path: Path, client: TestClient[Any, Any]
) -> None:
    body_bytes = orjson.dumps([{"lat": 1.0, "long": 2.0}] * 1_000_001)
    # with the default limits the body alone is too large
    assert (await client.post("/v1/resolve", data=io.BytesIO(body_bytes))).status == 413
    # with room for the body, the point count limit refuses it, naming the limit
    roomy = Settings(db=str(tmp_path / "e.sqlite"), max_body_bytes=len(body_bytes) + 1)
    roomy_client = await aiohttp_client(create_app(roomy))
    response = await roomy_client.post("/v1/resolve", data=io.BytesIO(body_bytes))
    assert response.status == 413
    body = await _json(response)
    assert body["count"] == 1_000_001 and body["limit"] == Settings.max_batch_points


async def test_jurisdictions_listing_detail_geojson_kml(client: TestClient[Any, Any]) -> None:
    listing = await _json(await client.get("/v1/jurisdictions"))
    assert listing["source"] == "store"  # the embedded registry is a layer of the store
    ids = {j["id"] for j in listing["jurisdictions"]}
    assert {"san-francisco-ca", "bonn-de", "fixmystreet-uk"} <= ids
    assert listing["total"] == len(ids)
    page = await _json(await client.get("/v1/jurisdictions", params={"offset": "2", "limit": "3"}))
    assert [j["id"] for j in page["jurisdictions"]] == [
        j["id"] for j in listing["jurisdictions"][2:5]
    ]

    detail = await _json(await client.get("/v1/jurisdictions/zurich-ch"))
    assert detail["jurisdiction_id"] == "stadt-zuerich.ch" and detail["has_boundary"] is False
    feature = await _json(await client.get("/v1/jurisdictions/san-francisco-ca.geojson"))
    assert feature["type"] == "Feature" and feature["geometry"]["type"] in (
        "Polygon",
        "MultiPolygon",
    )
    kml = await client.get("/v1/jurisdictions/philadelphia-pa.kml")
    assert kml.content_type == "application/vnd.google-earth.kml+xml"
    assert "Philadelphia" in await kml.text()


async def test_healthz(client: TestClient[Any, Any]) -> None:
    body = await _json(await client.get("/healthz"))
    assert body["status"] == "ok" and body["registry"] == "store"
    assert body["with_boundary"] == 59 and body["jurisdictions"] == 82
    assert body["layers"]["embedded"]["entries"] == 82
    assert body["layers"]["local"]["entries"] == 0
    # worked out once per registry: a change is counted at once
    answerer = client.app[ANSWERER]
    sf = answerer.resolver.jurisdiction("san-francisco-ca")
    await answerer.update([replace(sf, id="sf-local", origin=None)])  # this registry's own
    again = await _json(await client.get("/healthz"))
    assert again["jurisdictions"] == 83 and again["with_boundary"] == 60
    assert again["layers"]["local"]["entries"] == 1


async def test_counties_store_over_http(aiohttp_client: ClientFactory, counties_db: Path) -> None:
    # the counties alone (tests/test_embedded_layer.py answers them with the embedded layer)
    client = await aiohttp_client(
        create_app(Settings(db=str(counties_db), embedded=False, adhoc=False))
    )
    body = await _json(await client.get("/v1/resolve", params=SF_CITY_HALL))
    assert body["jurisdiction"]["id"] == "06075"
    # counties have no endpoint of their own: named, but the answer says so
    assert body["reason"] == "no_endpoint" and body["found"] is False
    assert (await client.get("/service", params=SF_CITY_HALL)).status == 404
    health = await _json(await client.get("/healthz"))
    assert health["registry"] == "store" and health["jurisdictions"] == 3231
