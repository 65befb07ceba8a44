"""The answering routes' short path: the query read in one pass (as aiohttp reads it), points
read as the core reads them, answers with their headers made up front (the same headers the
middleware gives any other response), bodies serialized once per decision, and the one
middleware still counting what it passes on."""

from __future__ import annotations

import gzip
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from common.errors import GeoWebError
from common.models import Endpoint, Jurisdiction, Provenance, Service
from resolver.config import Settings
from resolver.core.decide import Resolver, parse_coordinate
from resolver.http.app import create_app
from resolver.http.errors import JSON
from resolver.http.keys import ANSWERER
from resolver.http.params import point_in, query_params
from resolver.http.resolve import answer_body
from resolver.http.web import COMPRESS_ABOVE, Keep, max_age
from resolver.runtime import Runtime
from resolver.sources.answering import Answerer

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
SF = {"lat": "37.7793", "long": "-122.4193"}
TYPE = "http://ns.geowebdns.org/311/jurisdiction"


# --- the query, the point ------------------------------------------------------------------------


def _as_aiohttp_reads_it(query_string: str) -> dict[str, list[str]]:
    query = make_mocked_request("GET", "/service?" + query_string).query
    return {name: query.getall(name) for name in query}


@pytest.mark.parametrize(
    "query_string",
    [
        "lat=37.7793&long=-122.4193&type=http%3A%2F%2Fns.geowebdns.org%2F311%2Fjurisdiction",
        "lat=1&lat=2&long=3",
        "lat=+37.7&long=1+2",
        "la%74=1&long=%2B2",
        "lat&long=&=x&&type",
        "lat=%zz&long=%e9%e9x&type=%C3%A9%",
        "a=%3D%26&b=x%2Fy&a=%F0%9F%98%80",
        "",
    ],
)
def test_the_query_is_read_as_aiohttp_reads_it(query_string: str) -> None:
    request = make_mocked_request("GET", "/service?" + query_string)
    params = query_params(request)
    assert params == _as_aiohttp_reads_it(query_string)
    assert list(params) == list(dict.fromkeys(request.query))  # in the same order


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab=&%+2Fe9zC3A -é", max_size=40))
def test_any_query_is_read_as_aiohttp_reads_it(query_string: str) -> None:
    request = make_mocked_request("GET", "/service?" + query_string)
    assert query_params(request) == {n: request.query.getall(n) for n in request.query}


def _read(read: Callable[[], float]) -> object:
    try:
        return read()
    except GeoWebError as error:
        return (type(error), str(error), error.to_dict())


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(alphabet="0123456789.-+eE _naifINF\t\u00a0\u0661\x1c", max_size=12),
        st.floats().map(repr),
    )
)
def test_a_coordinate_is_read_as_the_core_reads_it(text: str) -> None:
    assert _read(lambda: point_in({"lat": [text], "long": ["0"]})[0]) == _read(
        lambda: parse_coordinate(text, "lat")
    )


@pytest.mark.parametrize(
    ("params", "refused"),
    [
        ({}, "the parameter 'lat' is required"),
        ({"long": ["1"]}, "the parameter 'lat' is required"),
        ({"lat": ["1"]}, "the parameter 'long' is required"),
        ({"lat": ["1", "2"]}, "lat is given 2 times; give it once"),
        ({"long": ["1", "2", "3"]}, "long is given 3 times; give it once"),
        ({"lat": ["1", "2"], "long": ["1", "2"]}, "lat is given 2 times; give it once"),
    ],
)
def test_a_point_is_refused_for_the_first_thing_wrong(
    params: dict[str, list[str]], refused: str
) -> None:
    with pytest.raises(GeoWebError, match=refused):
        point_in(params)


# --- bodies and cache lifetimes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings_", "lat", "long", "concern"),
    [
        ({}, 37.7793, -122.4193, None),
        ({}, 37.7793, -122.4193, "pothole"),
        ({}, 30.5, -39.5, None),  # nobody here, no fallback
        ({"adhoc": True}, 30.5, -39.5, "graffiti"),  # the ad hoc fallback, made absolute
        ({"fallback_url": "https://fallback.example/v2/"}, 30.5, -39.5, None),
    ],
)
async def test_an_answer_body_is_the_answers_json(
    tmp_path: Path, settings_: dict[str, Any], lat: float, long: float, concern: str | None
) -> None:
    async with Runtime.open(Settings(db=str(tmp_path / "b.sqlite"), **settings_)) as runtime:
        for base in ("http://127.0.0.1:8080", "https://geo.example.org"):
            for _ in range(2):  # made, then from what was kept of the decision
                answer = await runtime.answerer.answer(lat, long, concern)
                assert answer_body(answer, base) == orjson.dumps(answer.at(base).to_dict())
        # another point of the same decision: only the query differs
        other = await runtime.answerer.answer(lat + 1e-6, long, concern)
        assert other.decision is answer.decision
        assert json.loads(answer_body(other, base))["query"]["lat"] == lat + 1e-6


def test_a_response_is_kept_as_long_as_its_shortest_lived_decision() -> None:
    now, cap = 1_800_000_000.25, 300
    assert max_age([], now, cap) == cap
    assert max_age([Keep(), Keep(ttl=60), Keep(until=now + 100.9)], now, cap) == 60
    assert max_age([Keep(until=now + 100.9)], now, cap) == 100
    assert max_age([Keep(until=now - 5)], now, cap) == 0  # expired already
    assert max_age([Keep(ttl=30), Keep(no_store=True)], now, cap) is None
    assert Keep(ttl=60).age(now, 30) == 30  # never past the operator's cap


def _fetched_resolver() -> Resolver:
    fact = Provenance("services", "discovery", "https://city.example/services.json")
    city = Jurisdiction(
        "city",
        "City",
        endpoints=(Endpoint("https://city.example/v2/"),),
        services=(Service("P", "Pothole"),),
        provenance=(fact,),
    )
    return Resolver([city.with_boundary(box(0, 0, 1, 1))])


class _NothingToRefresh:
    name = "memory"

    def needs(self, jurisdiction: Jurisdiction, now: float) -> bool:
        return False

    async def refresh(self, jurisdiction: Jurisdiction) -> Jurisdiction:
        raise AssertionError("nothing is stale")


async def test_an_answer_served_from_the_cache_shares_its_decision() -> None:
    answerer = Answerer(_fetched_resolver(), [_NothingToRefresh()])
    first = await answerer.answer(0.5, 0.5, "pothole")
    second = await answerer.answer(0.25, 0.75, "pothole")
    assert [p.source for p in first.decision.provenance if p.fact == "services"] == ["cache"]
    # one decision object, so what is kept per decision (bodies, lifetimes) is found again
    assert second.decision is first.decision
    assert (second.lat, second.long) == (0.25, 0.75)


# --- headers made up front -----------------------------------------------------------------------


async def _plain(_request: web.Request) -> web.Response:
    """A response the middleware completes: what an answer's headers must equal."""
    body = b'{"results":[]}'
    return web.Response(body=body, content_type=JSON, headers={"Cache-Control": "max-age=300"})


async def _redirect(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/service")


@pytest.fixture
async def client(aiohttp_client: ClientFactory, tmp_path: Path) -> TestClient[Any, Any]:
    app = create_app(Settings(db=str(tmp_path / "h.sqlite")))
    app.router.add_get("/plain", _plain)
    app.router.add_get("/moved", _redirect)
    return await aiohttp_client(app)


def _shape(response: Any) -> list[tuple[str, str]]:
    """The headers in order, values of those made at the second (or by length) left out."""
    varying = {"Date", "Expires", "Content-Length"}
    return [(k, "" if k in varying else v) for k, v in response.headers.items()]


@pytest.mark.parametrize("origin", [None, "http://127.0.0.1:9999"])
async def test_an_answer_has_the_headers_the_middleware_gives_any_response(
    client: TestClient[Any, Any], origin: str | None
) -> None:
    headers = {"Origin": origin} if origin else {}
    for _ in range(3):  # first made, then copied
        answer = await client.get("/service", params={**SF, "type": TYPE}, headers=headers)
        plain = await client.get("/plain", headers=headers)
        assert answer.status == plain.status == 200
        assert _shape(answer) == _shape(plain)
        assert "Expires" in answer.headers


async def test_an_answer_still_answers_conditional_and_compressed_requests(
    client: TestClient[Any, Any],
) -> None:
    kept = await client.get("/service", params=SF, headers={"If-None-Match": "*"})
    assert kept.status == 304 and await kept.read() == b""
    assert kept.headers["Access-Control-Allow-Origin"] == "*"
    assert kept.headers["Cache-Control"] == "max-age=300" and "Expires" in kept.headers
    assert "Content-Type" not in kept.headers
    other = await client.get("/service", params=SF, headers={"If-None-Match": 'W/"x"'})
    assert other.status == 200
    # many concern types: a body past the size worth compressing
    many = [f"http://ns.geowebdns.org/311/concern/c{i}" for i in range(40)]
    query = [*SF.items(), *(("type", t) for t in many)]
    zipped = await client.get(
        "/service", params=query, headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers.getall("Vary") == ["Accept-Encoding"]
    body = json.loads(gzip.decompress(await zipped.read()))
    assert len(orjson.dumps(body)) > COMPRESS_ABOVE
    plain = await client.get("/service", params=query, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert plain.headers.getall("Vary") == ["Accept-Encoding"]
    assert await plain.json() == body


async def test_every_request_is_counted_even_when_not_answered_by_the_handler(
    client: TestClient[Any, Any],
) -> None:
    moved = await client.get("/moved", allow_redirects=False)
    assert moved.status == 302 and "Access-Control-Allow-Origin" not in moved.headers
    assert (await client.get("/service/", params=SF)).status == 200
    assert (await client.get("/service", params={"lat": "1"})).status == 400
    assert (await client.options("/service")).status == 204
    text = await (await client.get("/metrics")).text()
    counted = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("geoweb_requests_total{")
    }
    assert counted['geoweb_requests_total{method="GET",route="/moved",status="302"}'] == 1
    assert counted['geoweb_requests_total{method="GET",route="/service",status="200"}'] == 1
    assert counted['geoweb_requests_total{method="GET",route="/service",status="400"}'] == 1
    # a preflight matches no route of its own (the route takes no OPTIONS): one label for all
    assert counted['geoweb_requests_total{method="OPTIONS",route="unmatched",status="204"}'] == 1


async def test_serving_leaves_the_shared_decisions_as_they_were(
    client: TestClient[Any, Any],
) -> None:
    # The core shares one decision between every point with the same covering jurisdictions and
    # every request that asks for it; what serving keeps beside it must not change it.
    resolver = client.app[ANSWERER].resolver
    points = [(37.7793, -122.4193, None), (37.7793, -122.4193, "pothole"), (30.5, -39.5, None)]
    before = [repr(resolver.resolve(lat, long, concern).decision) for lat, long, concern in points]
    for lat, long, concern in points:
        query = {"lat": str(lat), "long": str(long), **({"concern": concern} if concern else {})}
        assert (await client.get("/v1/resolve", params=query)).status == 200
        assert (await client.get("/service", params={**query, "type": TYPE})).status in (200, 404)
    rows = [{"lat": lat, "long": long, "concern": concern or ""} for lat, long, concern in points]
    assert (await client.post("/v1/resolve", json=rows)).status == 200
    after = [repr(resolver.resolve(lat, long, concern).decision) for lat, long, concern in points]
    assert after == before
