"""Bad input gets a clear refusal: a 4xx JSON error on the API, one line and exit status 2 from
the CLI; never a 500, a traceback, or a silent guess."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from shapely.geometry import box, mapping

from resolver.cli.main import main
from resolver.config import Settings
from resolver.http.app import create_app
from resolver.registry.registration import InvalidEntry, entry_from_feature
from resolver.store import Store

CITY_HALL = {"lat": "37.7793", "long": "-122.4193"}


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: Any) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(Settings(db=str(tmp_path / "store.sqlite")))
    )
    return client


async def _error(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body: dict[str, Any] = await response.json()
    assert body["error"] and body["detail"]
    return body


async def test_a_serial_beyond_64_bits_is_a_400(client: TestClient[Any, Any]) -> None:
    response = await client.get("/v1/registry/changes", params={"since": str(2**64)})
    body = await _error(response)
    assert body["parameter"] == "since"


@pytest.mark.parametrize("name", ["lat", "long"])
async def test_a_repeated_coordinate_is_refused(client: TestClient[Any, Any], name: str) -> None:
    query = f"lat=37.7793&long=-122.4193&{name}=0"  # which one was meant?
    body = await _error(await client.get(f"/v1/resolve?{query}"))
    assert body["parameter"] == name and "2 times" in body["detail"]


@pytest.mark.parametrize(
    ("crs", "status"),
    [
        ("EPSG:3857", 400),  # web mercator metres are not longitudes and latitudes
        ("urn:ogc:def:crs:EPSG::27700", 400),
        ("urn:ogc:def:crs:OGC:1.3:CRS84", 200),  # WGS84 named explicitly is fine
    ],
)
async def test_a_feature_collection_in_another_crs_is_refused(
    client: TestClient[Any, Any], crs: str, status: int
) -> None:
    body = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": crs}},
        "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [-122.4, 37.7]}}
        ],
    }
    response = await client.post("/v1/resolve", json=body)
    if status == 400:
        assert "crs" in (await _error(response))["detail"]
    else:
        assert response.status == 200 and (await response.json())["count"] == 1


async def test_a_client_that_disconnects_mid_body_is_not_a_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Served as ``geoweb serve`` serves (an AppRunner: handlers are not cancelled when the
    client goes, they see the connection reset)."""
    caplog.set_level(logging.INFO)
    runner = web.AppRunner(create_app(Settings(db=str(tmp_path / "store.sqlite"))))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        _reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"POST /v1/resolve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n[" + b'{"lat": 1, "long": 2},' * 50
        )
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
        for _ in range(100):
            if "disconnected" in caplog.text:
                break
            await asyncio.sleep(0.02)
        assert "client disconnected during POST /v1/resolve" in caplog.text
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    finally:
        await runner.cleanup()


def test_registration_refuses_a_discovery_url_on_a_link_local_address() -> None:
    feature = {
        "type": "Feature",
        "geometry": mapping(box(-30, 30, -29, 31)),
        "properties": {
            "id": "city-example",
            "name": "City of Example",
            "discovery_url": "https://169.254.169.254/latest/discovery.json",
        },
    }
    with pytest.raises(InvalidEntry, match="link-local"):
        entry_from_feature(feature, "city.example")


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def _one_line_error(result: Any, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert ("Traceback" not in result.output and result.exception is None) or isinstance(
        result.exception, SystemExit
    )
    assert all(n in result.output for n in needles), result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--allow-network", "garbage"], "--allow-network"),
        (["--dns-nameserver", "not-an-ip"], "--dns-nameserver"),
        (["--port", "99999"], "99999"),  # was bound as 34463 (99999 mod 65536)
        (["--fallback-url", "javascript:alert(1)"], "--fallback-url"),
        (["--fallback-url", "https://user:secret@fallback.example/v2/"], "credentials"),
    ],
)
def test_serve_refuses_bad_settings(args: list[str], needle: str, tmp_path: Path) -> None:
    _one_line_error(_cli("serve", "--db", str(tmp_path / "s.sqlite"), *args), needle)


@pytest.mark.parametrize(
    "url", ["ftp://city.example/discovery.json", "https://user:pw@city.example/discovery.json"]
)
def test_import_refuses_a_discovery_url_that_is_not_https(url: str, tmp_path: Path) -> None:
    file = tmp_path / "one.geojson"
    feature = {
        "type": "Feature",
        "geometry": mapping(box(0, 0, 1, 1)),
        "properties": {"id": "a", "name": "A"},
    }
    file.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    db = tmp_path / "s.sqlite"
    result = _cli(
        "import",
        str(file),
        "--id-field",
        "id",
        "--name-field",
        "name",
        "--discovery-url",
        url,
        "--db",
        str(db),
    )
    _one_line_error(result, "--discovery-url")
    with Store(db) as store:
        assert store.count() == 0


def test_discovery_validate_reports_deep_nesting(tmp_path: Path) -> None:
    deep = tmp_path / "discovery.json"
    deep.write_bytes(b'{"endpoints": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    result = _cli("discovery", "validate", str(deep))
    assert (result.exit_code == 1 and result.exception is None) or isinstance(
        result.exception, SystemExit
    )
    assert "nests deeper than 64" in result.output


def test_resolve_batch_names_a_row_that_is_not_utf8(tmp_path: Path) -> None:
    batch = tmp_path / "points.csv"
    batch.write_bytes(
        b"lat,long,note\n37.7793,-122.4193,ok\n37.7793,-122.4193,caf\xe9\n1,2,after\n"
    )
    out = tmp_path / "out.csv"
    result = _cli("resolve-batch", str(batch), str(out), "--db", str(tmp_path / "s.sqlite"))
    assert result.exit_code == 0, result.output
    rows = out.read_text(encoding="utf-8").splitlines()
    assert len(rows) == 4  # every row answered, none dropped, nothing cut after the header
    assert rows[2].startswith("37.7793,-122.4193,caf\ufffd,") and "not valid UTF-8" in rows[2]
    assert rows[3].startswith("1,2,after,")


def test_resolve_batch_answers_past_a_huge_field(tmp_path: Path) -> None:
    batch = tmp_path / "points.csv"
    batch.write_text(
        "lat,long,concern\n37.7793,-122.4193," + "x" * 200_000 + "\n1,2,\n", encoding="utf-8"
    )
    out = tmp_path / "out.csv"
    result = _cli("resolve-batch", str(batch), str(out), "--db", str(tmp_path / "s.sqlite"))
    assert result.exit_code == 0, result.output
    rows = out.read_text(encoding="utf-8").splitlines()
    assert len(rows) == 3 and "200000 characters" in rows[1]
    assert rows[2].startswith("1,2,,")
