"""The GeoReport v2 client against a stand-in city on loopback (tests/georeport_city.py): real HTTP
through the guarded fetcher, JSON and XML, and every way a POST can end, each told apart by
whether the city may have the request."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from discovery.fetch import Fetcher, FetchError, FetchLimits, MemoryHttpCache, make_session
from discovery.georeport import (
    Attribute,
    CityFailed,
    Filed,
    GeoReportClient,
    InvalidAttributes,
    NotSent,
    Refused,
    Uncertain,
    check_attributes,
    parse_definition,
    parse_filed,
    report_form,
)
from tests.georeport_city import City, serve_city

LOOPBACK = ("127.0.0.0/8",)
LIMITS = FetchLimits(connect_timeout=2.0, total_timeout=2.0, max_bytes=256 * 1024)
FORM = report_form(
    service_code="PH-7",
    lat=39.8,
    long=-89.65,
    description="Deep hole",
    attributes={"severity": "high"},
    email="ana@example.org",
)


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    async with make_session(allow_networks=LOOPBACK, limits=LIMITS) as session:
        yield Fetcher(session, limits=LIMITS, allow_networks=LOOPBACK, cache=MemoryHttpCache())


@pytest.fixture
async def city() -> AsyncIterator[City]:
    async with serve_city(City()) as served:
        yield served


def client(fetcher: Fetcher, city: City, fmt: str = "json") -> GeoReportClient:
    return GeoReportClient(
        fetcher, city.endpoint, jurisdiction_id="springfield.example", api_key="k3y", fmt=fmt
    )


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_services_and_a_definition_in_json_and_xml(
    fetcher: Fetcher, city: City, fmt: str
) -> None:
    city.services.append({"service_code": 42, "service_name": "Graffiti", "metadata": False})
    services = await client(fetcher, city, fmt).services()
    assert [s.service_code for s in services] == ["PH-7", "SL-2", "42"]  # a number read as text
    assert services[0].metadata and services[0].keywords == ("pothole", "road damage")
    definition = await client(fetcher, city, fmt).definition("PH-7")
    severity, depth = definition.attributes
    assert definition.service_code == "PH-7"
    assert severity == Attribute(
        code="severity",
        description="How bad is it?",
        datatype="singlevaluelist",
        required=True,
        variable=True,
        order=1,
        values=(("low", "Low"), ("medium", "Medium"), ("high", "High")),
    )
    assert depth.datatype == "number" and not depth.required and depth.values == ()
    assert city.queries[0] == {"jurisdiction_id": "springfield.example"}  # and no api_key on GETs
    with pytest.raises(FetchError, match="HTTP 404"):
        await client(fetcher, city, fmt).definition("NOPE")


def test_attributes_are_checked_against_the_definition_by_one_rule() -> None:
    definition = parse_definition(
        b'{"service_code": "X", "attributes": {"attribute": [{"code": "kind", "required": "true",'
        b' "datatype": "multivaluelist", "values": {"value": [{"key": 1, "name": "One"},'
        b' {"key": 2, "name": "Two"}]}}, {"code": "when", "datatype": "datetime", "order": 3},'
        b' {"code": "note", "variable": false, "required": true, "order": 2}]}}'
    )
    kind, note, _when = sorted(definition.attributes, key=lambda a: a.order)
    assert kind.values == (("1", "One"), ("2", "Two")) and kind.required
    assert note.code == "note" and not note.variable
    checks = definition.attributes
    with pytest.raises(InvalidAttributes, match=r"attribute 'kind' is required") as missing:
        check_attributes(checks, {})
    assert missing.value.fields["attribute"] == "kind"
    with pytest.raises(InvalidAttributes, match=r"no attribute 'colour'.*'kind', 'note', 'when'"):
        check_attributes(checks, {"kind": ["1"], "colour": ["red"]})
    with pytest.raises(InvalidAttributes, match=r"'3' is not one of \['1', '2'\]"):
        check_attributes(checks, {"kind": ["1", "3"]})
    with pytest.raises(InvalidAttributes, match="'when' is not a W3C date-time"):
        check_attributes(checks, {"kind": ["1"], "when": ["2026-03-01 10:00"]})
    number = [Attribute(code="depth", description="", datatype="number")]
    with pytest.raises(InvalidAttributes, match="'depth' must be a number"):
        check_attributes(number, {"depth": ["nan"]})
    # a non-variable attribute is information for the user, never asked for
    assert check_attributes(checks, {"kind": ["1", "2"], "when": ["2026-03-01T10:00:00Z"]}) == {
        "kind": ["1", "2"],
        "when": "2026-03-01T10:00:00Z",
    }
    form = report_form(
        service_code="X", attributes={"kind": ["1", "2"], "when": "now", "one": ["x"]}
    )
    assert form == {
        "service_code": ["X"],
        "attribute[kind][]": ["1", "2"],
        "attribute[when]": ["now"],
        "attribute[one]": ["x"],
    }


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_a_post_is_filed_with_the_jurisdiction_and_key_and_its_status_read_back(
    fetcher: Fetcher, city: City, fmt: str
) -> None:
    filed = await client(fetcher, city, fmt).post(FORM)
    assert filed == Filed("C-1", None, "A crew will look at it.")
    (sent,) = city.posts
    assert sent["service_code"] == ["PH-7"] and sent["attribute[severity]"] == ["high"]
    assert sent["jurisdiction_id"] == ["springfield.example"] and sent["api_key"] == ["k3y"]
    assert sent["lat"] == ["39.8"] and sent["long"] == ["-89.65"]
    city.status["C-1"] = ("closed", "Filled on Tuesday")
    found = await client(fetcher, city, fmt).request("C-1")
    assert (found.status, found.status_notes, found.service_code) == (
        "closed",
        "Filled on Tuesday",
        "PH-7",
    )
    assert found.updated == dt.datetime(2026, 3, 1, 15, 0, tzinfo=dt.UTC)
    city.status["C-1"] = ("open", "Reopened")  # read again, never from the cache
    assert (await client(fetcher, city, fmt).request("C-1")).status == "open"


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_a_token_is_exchanged_for_the_id_once_the_city_has_one(
    fetcher: Fetcher, city: City, fmt: str
) -> None:
    city.post_mode = "token"
    georeport = client(fetcher, city, fmt)
    filed = await georeport.post(FORM)
    assert filed == Filed(None, "tok-1", "Queued.")
    assert await georeport.request_id_for_token("tok-1") is None  # not processed yet
    assert await georeport.request_id_for_token("tok-unknown") is None  # 404: not yet either
    city.tokens["tok-1"] = "C-9"
    assert await georeport.request_id_for_token("tok-1") == "C-9"


async def test_a_bare_object_and_a_blackbox_answer(fetcher: Fetcher, city: City) -> None:
    city.post_mode = "bare"
    assert (await client(fetcher, city).post(FORM)).service_request_id == "C-1"
    city.post_mode = "blackbox"
    assert await client(fetcher, city).post(FORM, blackbox=True) == Filed(None, None, "Thank you.")
    with pytest.raises(Uncertain, match="neither a service_request_id nor a token"):
        await client(fetcher, city).post(FORM)


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_a_refusal_carries_the_citys_errors(fetcher: Fetcher, city: City, fmt: str) -> None:
    city.post_mode = "refuse"
    with pytest.raises(Refused) as refused:
        await client(fetcher, city, fmt).post(FORM)
    assert refused.value.http_status == 400
    assert refused.value.errors == (
        ("400", "This service needs a photo (media_url)"),
        ("400", "lat is outside"),
    )
    assert "needs a photo" in refused.value.detail


@pytest.mark.parametrize(
    ("mode", "error", "words"),
    [
        ("down", CityFailed, "HTTP 503"),
        ("cut", Uncertain, "after the request was sent"),
        ("garbage", Uncertain, "cannot be read"),
        ("huge", Uncertain, "more than the limit"),
        ("see_other", Uncertain, "HTTP 303"),
        ("moved", Refused, "repeat the request at http"),
    ],
)
async def test_each_failed_post_says_whether_the_city_may_have_it(
    fetcher: Fetcher, city: City, mode: str, error: type[Exception], words: str
) -> None:
    city.post_mode = mode
    with pytest.raises(error, match=words):
        await client(fetcher, city).post(FORM)
    assert len(city.posts) == 1  # it did reach the city


async def test_no_answer_in_time_after_sending_is_uncertain(city: City) -> None:
    limits = FetchLimits(connect_timeout=1.0, total_timeout=0.3)
    async with make_session(allow_networks=LOOPBACK, limits=limits) as session:
        fetcher = Fetcher(session, limits=limits, allow_networks=LOOPBACK)
        city.post_mode = "hold"
        with pytest.raises(Uncertain, match=r"within 0\.3 s"):
            await client(fetcher, city).post(FORM)
    assert len(city.posts) == 1


class SlowNames(AbstractResolver):
    """A name server that answers after the POST's time limit has passed."""

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[ResolveResult]:
        await asyncio.sleep(5)
        raise OSError("too late")

    async def close(self) -> None:
        return None


async def test_time_running_out_before_anything_is_written_is_not_sent(city: City) -> None:
    """The time limit ends while the name is still being resolved: the writing never started
    (the session's trace says so), so nothing can have reached the city."""
    limits = FetchLimits(connect_timeout=10.0, total_timeout=0.3)
    session = make_session(allow_networks=LOOPBACK, limits=limits, resolver=SlowNames())
    async with session:
        fetcher = Fetcher(session, limits=limits, allow_networks=LOOPBACK)
        port = city.endpoint.split(":")[2].split("/")[0]
        endpoint = f"http://city.example:{port}/open311/v2"
        with pytest.raises(NotSent, match="before anything was sent"):
            await GeoReportClient(fetcher, endpoint).post(FORM)
    assert city.posts == []


async def test_a_refused_connection_is_not_sent(fetcher: Fetcher) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(NotSent, match="cannot connect"):
        await GeoReportClient(fetcher, f"http://127.0.0.1:{port}/v2").post(FORM)


async def test_the_address_guard_refuses_a_private_address_unless_allow_listed(
    city: City,
) -> None:
    port = city.endpoint.split(":")[2].split("/")[0]
    async with make_session(limits=LIMITS) as session:
        guarded = Fetcher(session, limits=LIMITS)
        for endpoint in (city.endpoint, f"http://localhost:{port}/open311/v2"):
            with pytest.raises(NotSent, match="refused before connecting") as refused:
                await GeoReportClient(guarded, endpoint).post(FORM)
            assert "loopback" in refused.value.detail
            with pytest.raises(FetchError, match="refused before connecting"):
                await GeoReportClient(guarded, endpoint).services()
    assert city.posts == [] and city.queries == []
    async with make_session(allow_networks=LOOPBACK, limits=LIMITS) as session:
        allowed = Fetcher(session, limits=LIMITS, allow_networks=LOOPBACK)
        assert (await GeoReportClient(allowed, city.endpoint).post(FORM)).service_request_id


def test_the_post_answers_the_spec_shows_and_what_servers_send() -> None:
    spec_json = b'[{"service_request_id":293944,"service_notice":"The City will inspect",'
    spec_json += b'"account_id":null}]'
    assert parse_filed(spec_json) == Filed("293944", None, "The City will inspect")
    spec_xml = (
        b'<?xml version="1.0" encoding="utf-8"?><service_requests><request>'
        b"<service_request_id>293944</service_request_id><service_notice>Soon</service_notice>"
        b"<account_id/></request></service_requests>"
    )
    assert parse_filed(spec_xml, "text/xml") == Filed("293944", None, "Soon")
    assert parse_filed(b'{"service_requests": [{"token": 12345}]}') == Filed(None, "12345", "")
    assert parse_filed(b"[]") is None
