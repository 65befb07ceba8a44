"""``geoweb report`` and the Python client: a point resolved by a running resolver app (real HTTP
on loopback), the report filed with a stand-in city that covers it, or with the resolver's own ad
hoc service where nobody does; refused before anything is sent when the service definition says
so. And the client keeps resolver answers exactly as long as their Cache-Control allows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner, Result
from shapely.geometry import box

from common.models import Endpoint, Jurisdiction
from resolver.cli.main import main
from resolver.client import GeoWebClient
from resolver.config import Settings
from resolver.http.app import create_app
from resolver.store import Store
from tests.georeport_city import City, serve_city

LOOPBACK = "127.0.0.0/8"
#: A city in the middle of the Atlantic (nothing embedded covers it), a point in it, and a point
#: nobody covers.
CITY_BOX = (-31.0, 9.0, -29.0, 11.0)
IN_CITY = ("10", "-30")
NOWHERE = ("30", "-40")
ServerFactory = Callable[..., Awaitable[TestServer]]


def _save_city(db: Path, endpoint: str) -> None:
    springfield = Jurisdiction(
        "springfield",
        "Springfield",
        jurisdiction_id="springfield.example",
        endpoints=(Endpoint(url=endpoint),),
    ).with_boundary(box(*CITY_BOX))
    with Store(db) as store:
        store.save([springfield], source="test")


@pytest.fixture
async def city() -> AsyncIterator[City]:
    async with serve_city(City()) as served:
        yield served


@pytest.fixture
async def resolver(tmp_path: Path, city: City, aiohttp_server: ServerFactory) -> str:
    """A `geoweb serve` app (the ad hoc service on, as by default) whose registry has the city."""
    db = tmp_path / "resolver.sqlite"
    _save_city(db, city.endpoint)
    settings = Settings(db=str(db), embedded=False, allow_network=(LOOPBACK,), adhoc_forward=False)
    server = await aiohttp_server(create_app(settings))
    return str(server.make_url("")).rstrip("/")


async def _report(*args: str) -> Result:
    """``geoweb report ARGS`` in a thread (it runs its own event loop), the servers on this one."""
    return await asyncio.to_thread(CliRunner().invoke, main, ["report", *args])


def _at(point: tuple[str, str], concern: str = "pothole") -> list[str]:
    return ["--lat", point[0], "--long", point[1], "--concern", concern]


async def test_a_report_reaches_the_city_that_covers_the_point_once_its_attributes_fit(
    resolver: str, city: City
) -> None:
    remote = ["--resolver", resolver, "--allow-network", LOOPBACK, "--description", "Deep hole"]
    missing = await _report(*_at(IN_CITY), *remote)
    assert missing.exit_code == 2, missing.output
    assert "attribute 'severity' is required" in missing.output
    assert "'PH-7' (Pothole)" in missing.output and len(missing.output.splitlines()) == 1
    bad = await _report(*_at(IN_CITY), *remote, "--attribute", "severity=huge")
    assert bad.exit_code == 2 and "'huge' is not one of ['high', 'low', 'medium']" in bad.output
    unknown = await _report(*_at(IN_CITY), *remote, "--attribute", "colour=red")
    assert unknown.exit_code == 2 and "no attribute 'colour'" in unknown.output
    assert city.posts == []  # nothing was sent

    filed = await _report(
        *_at(IN_CITY),
        *remote,
        "--attribute",
        "severity=high",
        "--attribute",
        "depth=12",
        "--email",
        "ana@example.org",
    )
    assert filed.exit_code == 0, filed.output
    assert filed.output.splitlines() == [
        "filed: service_request_id C-1",
        f"endpoint: {city.endpoint}",
        "jurisdiction: springfield (Springfield), jurisdiction_id springfield.example",
        "service: PH-7 (Pothole)",
        "notice: A crew will look at it.",
    ]
    (sent,) = city.posts
    assert sent["service_code"] == ["PH-7"] and sent["jurisdiction_id"] == ["springfield.example"]
    assert sent["attribute[severity]"] == ["high"] and sent["attribute[depth]"] == ["12"]
    assert sent["email"] == ["ana@example.org"] and sent["description"] == ["Deep hole"]
    assert (sent["lat"], sent["long"]) == (["10.0"], ["-30.0"])


async def test_a_concern_the_city_has_no_single_service_for_is_not_guessed(
    resolver: str, city: City
) -> None:
    remote = ["--resolver", resolver, "--allow-network", LOOPBACK, "--description", "x"]
    unmatched = await _report(*_at(IN_CITY, "graffiti"), *remote)
    assert unmatched.exit_code == 2
    assert "matches 'graffiti'; its services: 'PH-7' (Pothole), 'SL-2'" in unmatched.output
    city.services.append({"service_code": "PH-8", "service_name": "Pothole", "metadata": False})
    ambiguous = await _report(*_at(IN_CITY), *remote)
    assert ambiguous.exit_code == 2
    assert "'pothole' matches 2 services" in ambiguous.output
    assert "'PH-7' (Pothole), 'PH-8' (Pothole)" in ambiguous.output
    assert city.posts == []


async def test_the_citys_refusal_and_a_lost_answer_have_their_own_exit_statuses(
    resolver: str, city: City
) -> None:
    remote = ["--resolver", resolver, "--allow-network", LOOPBACK, "--description", "x"]
    remote += ["--attribute", "severity=low"]
    city.post_mode = "refuse"
    refused = await _report(*_at(IN_CITY), *remote)
    assert refused.exit_code == 1 and "refused the request (HTTP 400)" in refused.output
    assert "needs a photo" in refused.output
    city.post_mode = "cut"
    lost = await _report(*_at(IN_CITY), *remote)
    assert lost.exit_code == 4 and "check with the city before sending it again" in lost.output
    # The city's endpoint on loopback is someone else's: refused without --allow-network.
    guarded = await _report(*_at(IN_CITY), "--resolver", resolver, "--description", "x")
    assert guarded.exit_code == 1 and "refused before connecting" in guarded.output
    assert len(city.posts) == 2


async def test_where_nobody_covers_the_point_the_report_lands_in_the_ad_hoc_service(
    resolver: str, city: City
) -> None:
    # No --allow-network: the resolver's own ad hoc service is trusted as the resolver is.
    filed = await _report(
        *_at(NOWHERE),
        "--resolver",
        resolver,
        "--description",
        "A hole in the ocean road",
        "--attribute",
        "severity=high",
        "--email",
        "ana@example.org",
        "--json",
    )
    assert filed.exit_code == 0, filed.output
    result = json.loads(filed.output)
    assert result["adhoc"] is True and result["reason"] == "no_jurisdiction"
    assert result["endpoint"] == f"{resolver}/adhoc/v2" and result["jurisdiction_id"] is None
    assert result["service_code"] == "pothole" and result["token"]
    request_id = result["service_request_id"]
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{resolver}/adhoc/v2/requests/{request_id}.json") as response,
    ):
        shown = await response.text()
    (held,) = json.loads(shown)
    assert held["service_request_id"] == request_id and held["status"] == "open"
    assert held["description"] == "A hole in the ocean road" and held["lat"] == 30.0
    assert "ana@example.org" not in shown
    assert city.posts == []


async def test_local_resolution_reports_to_the_city_or_says_there_is_nowhere(
    tmp_path: Path, city: City
) -> None:
    db = tmp_path / "local.sqlite"
    _save_city(db, city.endpoint)
    local = ["--db", str(db), "--no-embedded", "--allow-network", LOOPBACK, "--description", "x"]
    filed = await _report(*_at(IN_CITY), *local, "--attribute", "severity=medium")
    assert filed.exit_code == 0, filed.output
    assert "filed: service_request_id C-1" in filed.output
    assert city.posts[0]["jurisdiction_id"] == ["springfield.example"]
    nowhere = await _report(*_at(NOWHERE), *local)
    assert nowhere.exit_code == 3 and "nowhere to send the report" in nowhere.output
    mixed = await _report(*_at(NOWHERE), *local, "--resolver", "http://127.0.0.1:9")
    assert mixed.exit_code == 2 and "--db, --embedded: for local resolution only" in mixed.output


# ---------------------------------------------------------------------------------------------
# The client's answer cache


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def counted_resolver(aiohttp_server: ServerFactory) -> AsyncIterator[tuple[str, list[str]]]:
    """A stand-in resolver answering /v1/resolve with the Cache-Control named by ``concern``'s
    prefix (``max-age=60``, ``no-store``), counting requests."""
    hits: list[str] = []

    async def resolve(request: web.Request) -> web.Response:
        hits.append(request.query_string)
        concern = request.query.get("concern", "")
        cache = "no-store" if concern.startswith("nostore") else "max-age=60"
        answer = {"endpoint": {"url": "https://city.example/v2"}, "fallback": False}
        return web.json_response(answer, headers={"Cache-Control": cache})

    app = web.Application()
    app.router.add_get("/v1/resolve", resolve)
    server = await aiohttp_server(app)
    yield str(server.make_url("")).rstrip("/"), hits


async def test_answers_are_kept_until_they_expire_and_no_store_ones_not_at_all(
    counted_resolver: tuple[str, list[str]],
) -> None:
    url, hits = counted_resolver
    clock = Clock()
    async with GeoWebClient(url, clock=clock) as client:
        first = await client.resolve(10, -30, "pothole")
        assert await client.resolve(10, -30, "pothole") == first
        assert len(hits) == 1  # the second within max-age: no request
        await client.resolve(10, -30, "graffiti")
        await client.resolve(10.5, -30, "pothole")
        assert len(hits) == 3  # another concern, another point: their own answers
        clock.now += 59
        await client.resolve(10, -30, "pothole")
        assert len(hits) == 3
        clock.now += 2  # past max-age: asked again
        await client.resolve(10, -30, "pothole")
        assert len(hits) == 4
        await client.resolve(10, -30, "nostore")
        await client.resolve(10, -30, "nostore")
        assert len(hits) == 6  # no-store: never kept
    assert hits[0] == "lat=10.0&long=-30.0&concern=pothole"


async def test_the_ad_hoc_services_own_required_attribute_is_asked_for_before_sending(
    tmp_path: Path, aiohttp_server: ServerFactory
) -> None:
    """An operator's ad hoc catalogue with a required attribute: `geoweb report` refuses, naming
    it, before anything is sent; given, the report is held with it."""
    catalogue = tmp_path / "services.yaml"
    catalogue.write_text(
        "- service_code: tree\n  service_name: Fallen tree\n  keywords: [tree, Baum]\n"
        "  attributes:\n  - {code: size, datatype: singlevaluelist, required: true,"
        " values: [{key: s, name: Small}, {key: l, name: Large}]}\n"
    )
    settings = Settings(
        db=str(tmp_path / "adhoc.sqlite"), embedded=False, adhoc_services=str(catalogue)
    )
    server = await aiohttp_server(create_app(settings))
    base = str(server.make_url("")).rstrip("/")
    where = [*_at(NOWHERE, "Baum"), "--resolver", base, "--description", "Across the road"]
    missing = await _report(*where)
    assert missing.exit_code == 2 and "attribute 'size' is required" in missing.output
    with Store(tmp_path / "adhoc.sqlite") as store:
        assert store.adhoc_requests(start=None) == []
    filed = await _report(*where, "--attribute", "size=l", "--json")
    assert filed.exit_code == 0, filed.output
    request_id = json.loads(filed.output)["service_request_id"]
    with Store(tmp_path / "adhoc.sqlite") as store:
        held = store.adhoc_request(request_id)
    assert held is not None and held.service_code == "tree" and held.attributes == {"size": "l"}
