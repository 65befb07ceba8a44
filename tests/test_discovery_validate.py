"""``geoweb discovery validate`` against documents served by a stand-in city on loopback: what
the SeeClickFix open311-validator would fail although the document is right (a lone XML
endpoint, a media type its client does not read) is a warning with the reason, and the
validator's base-name form of a URL (``.../discovery``) checks ``.json`` and ``.xml``."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner, Result
from shapely.geometry import box

from common.models import Endpoint, Jurisdiction
from discovery.generate import discovery_document, to_json, to_xml
from discovery.validator import validate_discovery
from resolver.cli.main import main
from resolver.store import Store

CHANGESET = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


def _document(*endpoints: Endpoint) -> dict[str, object]:
    city = Jurisdiction("city", "City", endpoints=endpoints)
    return discovery_document(
        city, contact="311@city.example", key_service="mail us", changeset=CHANGESET
    )


TWO = _document(
    Endpoint("https://311.city.example/open311/v2"),
    Endpoint("https://311.city.example/test/v2", type="test"),
)
ONE = _document(Endpoint("https://311.city.example/open311/v2"))

#: path -> (media type, body)
DOCUMENTS = {
    "/both/discovery.json": ("application/json", to_json(TWO)),
    "/both/discovery.xml": ("text/xml", to_xml(TWO)),
    "/single/discovery.xml": ("application/xml", to_xml(ONE)),
    "/jsononly/discovery.json": ("application/json", to_json(ONE)),
    "/script/discovery.json": ("text/javascript", to_json(TWO)),
}


@pytest.fixture
async def city(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    async def handle(request: web.Request) -> web.Response:
        found = DOCUMENTS.get(request.path)
        if found is None:
            return web.Response(status=404, text="not found")
        media, body = found
        return web.Response(body=body.encode(), headers={"Content-Type": media})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return await aiohttp_server(app)


async def _validate(city: TestServer, path: str, *more: str) -> Result:
    url = str(city.make_url(path))
    args = ["discovery", "validate", url, "--allow-network", "127.0.0.0/8", *more]
    return await asyncio.to_thread(CliRunner().invoke, main, args)


async def test_the_base_name_checks_the_json_and_the_xml_beside_it(city: TestServer) -> None:
    result = await _validate(city, "/both/discovery")
    assert result.exit_code == 0, result.output
    assert f"{city.make_url('/both/discovery.json')}:" in result.output
    assert f"{city.make_url('/both/discovery.xml')}:" in result.output
    assert result.output.count("\nvalid\n") + result.output.startswith("valid\n") == 2
    assert "warn" not in result.output  # two endpoints, served as the validator reads them
    as_json = await _validate(city, "/both/discovery", "--json")
    payload = json.loads(as_json.output)
    assert payload["passed"] and len(payload["documents"]) == 2


async def test_only_the_json_beside_a_base_name_is_still_checked(city: TestServer) -> None:
    result = await _validate(city, "/jsononly/discovery/")
    assert result.exit_code == 0, result.output
    assert "discovery.json" in result.output and "discovery.xml:" not in result.output


async def test_a_base_name_with_neither_document_is_one_line_and_exit_1(city: TestServer) -> None:
    result = await _validate(city, "/nothing/discovery")
    assert result.exit_code == 1
    assert "discovery.json" in result.output and "HTTP 404" in result.output
    assert "Traceback" not in result.output


async def test_a_lone_xml_endpoint_served_as_application_xml_warns_with_the_reasons(
    city: TestServer,
) -> None:
    result = await _validate(city, "/single/discovery.xml")
    # right by the specification: every rule passes, and the verdict says so
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warn")]
    assert len(warnings) == 2, result.output
    assert any("served as application/xml" in w and "text/xml" in w for w in warnings)
    assert any("lone element into a hash" in w for w in warnings)
    assert result.output.rstrip().endswith("valid (2 warnings)")


async def test_json_served_as_another_json_type_warns(city: TestServer) -> None:
    result = await _validate(city, "/script/discovery.json")
    assert result.exit_code == 0, result.output
    assert "served as text/javascript" in result.output and "application/json" in result.output


@pytest.mark.parametrize(
    ("document", "media", "warned"),
    [
        # what we generate, served right: nothing to warn about
        (to_xml(TWO), "text/xml", set()),
        (to_json(ONE), "application/json", set()),  # a lone endpoint is an array in JSON
        # charset parameters do not matter
        (to_xml(TWO), "text/xml; charset=utf-8", set()),
        (
            to_xml(ONE),
            "application/xml",
            {
                "served with the media type the open311-validator reads",
                "the open311-validator reads the XML endpoints as an array",
            },
        ),
        # one <format> in an endpoint: a string to that validator's reader
        (
            to_xml(TWO).replace("<format>application/json</format>", ""),
            "text/xml",
            {"the open311-validator reads the XML formats as an array"},
        ),
    ],
)
def test_warnings_never_fail_the_verdict(document: str, media: str, warned: set[str]) -> None:
    verdict = validate_discovery(document.encode(), media, name="discovery.xml")
    assert verdict.passed, verdict.failures
    assert {w.rule for w in verdict.warnings} == warned
    for warning in verdict.warnings:
        assert warning.to_dict()["warning"] is True and warning.detail


def test_generate_names_the_media_types_and_warns_about_one_endpoint(tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite"
    city = Jurisdiction(
        "one", "One", endpoints=(Endpoint("https://311.one.example/open311/v2/"),)
    ).with_boundary(box(0, 0, 1, 1))
    with Store(db) as store:
        store.save([city], source="test")
    result = CliRunner().invoke(
        main,
        [
            "discovery", "generate", "one", "--contact", "311@one.example",
            "--key-service", "mail us", "--out", str(tmp_path / "site"), "--db", str(db),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "application/json and text/xml" in result.stdout
    assert "lone <endpoint>" in result.stderr
