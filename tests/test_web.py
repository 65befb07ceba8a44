"""What browsers, HTTP caches and operators get from the server: CORS (and never for
registration), Cache-Control/Expires from the facts' own expiry (no-store for a fallback given
while a city was down), ETags and If-None-Match (``*`` too), gzip above a size, Allow on 405,
trailing-slash spellings, protocol errors in the one JSON body, /metrics, the JSON access log,
and a busy port in one line."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from shapely.geometry import box

from common.models import Answer, Candidate, Decision, Fallback, Jurisdiction, Provenance
from resolver.config import Settings
from resolver.core.attestation import unreachable
from resolver.http.app import create_app
from resolver.http.serving import bind, start
from resolver.http.web import COMPRESS_ABOVE, answer_cache_headers, upstream_failed
from resolver.store import Store
from tests.open311_servers import StandIn

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
SF = {"lat": "37.7793", "long": "-122.4193"}
SF_JURISDICTION = "san-francisco-ca"
ORIGIN = "http://127.0.0.1:9999"
BLOOMINGTON = {"lat": "39.1653", "long": "-86.5264", "concern": "pothole"}


@pytest.fixture
async def client(aiohttp_client: ClientFactory, tmp_path: Path) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(Settings(db=str(tmp_path / "w.sqlite"))))


def _max_age(response: Any) -> int:
    value: str = response.headers["Cache-Control"]
    assert value.startswith("max-age="), value
    return int(value.removeprefix("max-age="))


# --- CORS ----------------------------------------------------------------------------------------


async def test_a_page_of_any_origin_may_read_the_answers(client: TestClient[Any, Any]) -> None:
    response = await client.get("/service", params=SF, headers={"Origin": ORIGIN})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-Request-Id" in response.headers["Access-Control-Expose-Headers"]
    # an error is readable too: the page can show why it was refused
    bad = await client.get("/v1/resolve", params={"lat": "x"}, headers={"Origin": ORIGIN})
    assert bad.status == 400 and bad.headers["Access-Control-Allow-Origin"] == "*"


async def test_the_preflight_is_answered_for_reads_and_refused_for_registration(
    client: TestClient[Any, Any],
) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    batch = await client.options(
        "/v1/resolve", headers={**preflight, "Access-Control-Request-Headers": "content-type"}
    )
    assert batch.status == 204
    assert batch.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in batch.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in batch.headers["Access-Control-Allow-Headers"]
    assert int(batch.headers["Access-Control-Max-Age"]) > 0
    for path in ("/v1/registry/challenges", "/v1/registry/jurisdictions"):
        refused = await client.options(path, headers=preflight)
        assert refused.status == 403, path
        assert "Access-Control-Allow-Origin" not in refused.headers
        assert (await refused.json())["error"] == "cors_not_allowed"
    # a registration posted anyway (a simple request) gets no CORS header to read it with
    posted = await client.post("/v1/registry/challenges", json={}, headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in posted.headers
    # OPTIONS without a preflight says what the route takes
    plain = await client.options("/v1/resolve")
    assert plain.status == 204
    assert set(plain.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"}


async def test_only_the_configured_origins_are_allowed(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = Settings(db=str(tmp_path / "w.sqlite"), cors_origin=("https://app.example",))
    client = await aiohttp_client(create_app(settings))
    allowed = await client.get("/healthz", headers={"Origin": "https://app.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Origin" in allowed.headers.getall("Vary")
    other = await client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Origin" in other.headers.getall("Vary")  # a cache must not serve one to the other
    preflight = await client.options(
        "/service",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status == 403


# --- caching -------------------------------------------------------------------------------------


def _answer(*facts: Provenance, fallback: bool = False, expires: str | None = None) -> Answer:
    jurisdiction = Jurisdiction("x", "X", provenance=facts, expires=expires)
    chosen = Candidate(jurisdiction, "any")
    decision = Decision(
        None,
        chosen,
        (),
        None,
        Fallback("https://fallback.example/") if fallback else None,
        "no_endpoint" if fallback else None,
        facts,
    )
    return Answer(0.0, 0.0, decision, "g")


NOW = 1_800_000_000.0


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(NOW + seconds))


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        # registry facts only: the operator's cap
        ([_answer(Provenance("boundary", "registry", "r"))], "max-age=300"),
        # a services list that expires in 2 minutes
        ([_answer(Provenance("services", "discovery", "u", expires=_iso(120)))], "max-age=120"),
        # a DNS record with 45 s of TTL left, beside a later HTTP expiry
        (
            [
                _answer(
                    Provenance("discovery_url", "dns", "d", ttl=45, expires=_iso(45)),
                    Provenance("services", "cache", "u", expires=_iso(900)),
                )
            ],
            "max-age=45",
        ),
        # the registry entry itself stops being served in 10 s
        ([_answer(expires=_iso(10))], "max-age=10"),
        # the earliest of two answers (/service answers several types)
        (
            [
                _answer(Provenance("services", "discovery", "u", expires=_iso(200))),
                _answer(Provenance("services", "discovery", "v", expires=_iso(60))),
            ],
            "max-age=60",
        ),
        # a fact already expired: do not keep it at all
        ([_answer(Provenance("services", "cache", "u", expires=_iso(-5)))], "max-age=0"),
        # a fallback because the city's refresh failed: must not be kept
        (
            [
                _answer(
                    Provenance(
                        "services",
                        "discovery",
                        "u",
                        expires=_iso(60),
                        note="refresh failed: 503",
                        stale=True,
                    ),
                    fallback=True,
                )
            ],
            "no-store",
        ),
        # the same failure without a fallback: kept only until the retry
        (
            [
                _answer(
                    Provenance(
                        "services",
                        "discovery",
                        "u",
                        expires=_iso(60),
                        note="refresh failed: 503",
                        stale=True,
                    )
                )
            ],
            "max-age=60",
        ),
    ],
)
def test_cache_headers_follow_the_earliest_expiry(answers: list[Answer], expected: str) -> None:
    assert answer_cache_headers(answers, NOW, 300) == {"Cache-Control": expected}


@pytest.mark.parametrize(
    ("fact", "failed"),
    [
        (Provenance("discovery_url", "dns", "d", stale=True), True),  # RFC 8767 stale answer
        # as the sources mark them: a stored copy served while the city is down, DNS unreachable
        (Provenance("services", "cache", "u", note="stale copy served", stale=True), True),
        (unreachable(Jurisdiction("x", "X"), "timeout", "_open311.d").provenance[-1], True),
        (Provenance("services", "discovery", "u", note="revalidated with the origin"), False),
        (Provenance("boundary", "registry", "r"), False),
    ],
)
def test_which_facts_stand_in_for_a_failed_upstream(fact: Provenance, failed: bool) -> None:
    assert upstream_failed(fact) is failed


@pytest.fixture
def bloomington_db(tmp_path: Path, city: tuple[str, StandIn]) -> Path:
    base, _ = city
    path = tmp_path / "b.sqlite"
    bloomington = Jurisdiction(
        "bloomington-in",
        "Bloomington, IN",
        jurisdiction_id="bloomington.in.gov",
        discovery_url=f"{base}/bloomington/discovery.json",
    ).with_boundary(box(-86.60, 39.09, -86.45, 39.23))
    with Store(path) as store:
        store.save([bloomington], source="test")
    return path


def _discovery_settings(db: Path) -> Settings:
    return Settings(
        db=str(db),
        discovery_refresh=True,
        allow_network=("127.0.0.0/8",),
        fetch_timeout=3.0,
        fallback_url="https://fallback.example/open311/v2/",
    )


async def test_an_answer_is_kept_as_long_as_the_citys_documents(
    aiohttp_client: ClientFactory, bloomington_db: Path, city: tuple[str, StandIn]
) -> None:
    """The city says max-age=120 on its documents: the answer built on them says at most that."""
    _, state = city
    state.max_age = 120
    client = await aiohttp_client(create_app(_discovery_settings(bloomington_db)))
    response = await client.get("/v1/resolve", params=BLOOMINGTON)
    body = await response.json()
    assert body["jurisdiction"]["id"] == "bloomington-in" and not body["fallback"]
    assert 100 <= _max_age(response) <= 120
    expires = email.utils.parsedate_to_datetime(response.headers["Expires"]).timestamp()
    assert abs(expires - (time.time() + _max_age(response))) < 5
    service = await client.get("/service", params={k: BLOOMINGTON[k] for k in ("lat", "long")})
    assert 100 <= _max_age(service) <= 120


async def test_a_fallback_given_while_the_city_is_down_is_not_stored(
    aiohttp_client: ClientFactory, bloomington_db: Path, city: tuple[str, StandIn]
) -> None:
    _, state = city
    state.down = True  # never read: no endpoint known, so the fallback answers
    client = await aiohttp_client(create_app(_discovery_settings(bloomington_db)))
    response = await client.get("/v1/resolve", params=BLOOMINGTON)
    body = await response.json()
    assert body["fallback"] and body["reason"] == "no_endpoint"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Expires" not in response.headers


async def test_registry_answers_are_kept_for_the_configured_time(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = Settings(db=str(tmp_path / "w.sqlite"), cache_max_age=42)
    client = await aiohttp_client(create_app(settings))
    for path in ("/service", "/v1/resolve", "/v1/concerns"):
        assert _max_age(await client.get(path, params=SF)) == 42, path
    assert (await client.get("/healthz")).headers["Cache-Control"] == "no-store"
    error = await client.get("/v1/resolve", params={"lat": "91", "long": "0"})
    assert error.status == 400 and error.headers["Cache-Control"] == "no-store"


# --- ETag, If-None-Match -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jurisdictions",
        f"/v1/jurisdictions/{SF_JURISDICTION}",
        f"/v1/jurisdictions/{SF_JURISDICTION}.geojson",
        f"/v1/jurisdictions/{SF_JURISDICTION}.kml",
    ],
)
async def test_jurisdictions_and_boundaries_answer_conditional_requests(
    client: TestClient[Any, Any], path: str
) -> None:
    first = await client.get(path)
    assert first.status == 200
    etag = first.headers["ETag"]
    again = await client.get(path)
    assert again.headers["ETag"] == etag  # the same body, the same tag
    for condition in (etag, f'"other", {etag}', etag.removeprefix("W/"), "*"):
        unchanged = await client.get(path, headers={"If-None-Match": condition})
        assert unchanged.status == 304, condition
        assert await unchanged.read() == b""
        assert unchanged.headers["ETag"] == etag
    changed = await client.get(path, headers={"If-None-Match": '"something-else"'})
    assert changed.status == 200 and await changed.read() == await first.read()


async def test_if_none_match_star_on_the_registry_snapshot(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/v1/registry", headers={"If-None-Match": "*"})).status == 304
    # a jurisdiction that does not exist has no representation: * does not match
    missing = await client.get("/v1/jurisdictions/nowhere", headers={"If-None-Match": "*"})
    assert missing.status == 404


# --- compression ---------------------------------------------------------------------------------


async def test_large_bodies_are_gzipped_when_the_client_accepts_it(
    client: TestClient[Any, Any],
) -> None:
    plain = await client.get("/v1/registry", headers={"Accept-Encoding": "identity"})
    raw = await plain.read()
    assert "Content-Encoding" not in plain.headers and len(raw) > 100_000
    assert "Accept-Encoding" in plain.headers["Vary"]
    zipped = await client.get(
        "/v1/registry", headers={"Accept-Encoding": "gzip, deflate"}, auto_decompress=False
    )
    assert zipped.headers["Content-Encoding"] == "gzip"
    compressed = await zipped.read()
    assert len(compressed) < len(raw) / 3
    assert json.loads(gzip.decompress(compressed)) == json.loads(raw)
    # a small answer is sent as it is
    small = await client.get("/healthz", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert len(await small.read()) < COMPRESS_ABOVE
    assert "Content-Encoding" not in small.headers


# --- routing: Allow, trailing slashes ------------------------------------------------------------


async def test_405_names_the_methods_allowed(client: TestClient[Any, Any]) -> None:
    response = await client.delete("/service")
    assert response.status == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
    assert (await response.json())["error"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/service/", "/healthz/", "/v1/resolve/", "/service/types/"])
async def test_a_trailing_slash_is_answered_like_the_route(
    client: TestClient[Any, Any], path: str
) -> None:
    params = SF if path.startswith(("/service/", "/v1/resolve")) and "types" not in path else {}
    with_slash = await client.get(path, params=params)
    without = await client.get(path.rstrip("/"), params=params)
    assert with_slash.status == without.status == 200
    assert await with_slash.json() == await without.json()


# --- protocol errors, the access log, a busy port ------------------------------------------------


@pytest.fixture
async def live(tmp_path: Path) -> Any:
    """The app on a real socket, started as ``geoweb serve`` starts it (JSON access log on)."""
    settings = Settings(db=str(tmp_path / "w.sqlite"), access_log_json=True)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    runner = await start(create_app(settings), sock)
    yield port
    await runner.cleanup()


async def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        # a request line over 8,190 bytes
        (b"GET /service?lat=" + b"1" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "request_too_large"),
        # a header over 8,190 bytes
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
            "request_too_large",
        ),
        # a method that is no HTTP token
        (b"G(T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "malformed_request"),
        # not HTTP at all
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "malformed_request"),
    ],
    ids=["long-request-line", "long-header", "bad-method", "tls-hello"],
)
async def test_protocol_errors_are_the_one_json_body_without_a_traceback(
    live: int, request_bytes: bytes, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        status, headers, body = await _raw(live, request_bytes)
    assert 400 <= status < 500
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(body)
    assert error["error"] == code and error["detail"] and error["request_id"]
    assert headers["X-Request-Id"] == error["request_id"]
    assert not [r for r in caplog.records if r.exc_info], "a client's mistake logged a traceback"


async def test_the_access_log_is_json(live: int, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        status, _, _ = await _raw(
            live,
            b"GET /service/?lat=37.7793&long=-122.4193 HTTP/1.1\r\n"
            b"Host: x\r\nConnection: close\r\n\r\n",
        )
    assert status == 200
    (entry,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "aiohttp.access"]
    assert entry["method"] == "GET" and entry["path"] == "/service/"
    assert entry["route"] == "/service" and entry["status"] == 200 and entry["bytes"] > 0
    assert entry["query"] == "lat=37.7793&long=-122.4193" and entry["seconds"] >= 0


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def test_serve_on_a_busy_port_says_so_in_one_line(busy_port: int, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "resolver",
            "serve",
            "--port",
            str(busy_port),
            "--db",
            str(tmp_path / "w.sqlite"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"geoweb: 127.0.0.1:{busy_port} is in use by another program; stop it or choose "
        "another --port"
    ]


# --- metrics -------------------------------------------------------------------------------------


def _samples(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_metrics_count_requests_by_route_and_status(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(Settings(db=str(tmp_path / "w.sqlite"))))
    other = await aiohttp_client(create_app(Settings(db=str(tmp_path / "o.sqlite"))))
    for _ in range(3):
        assert (await client.get("/service", params=SF)).status == 200
    assert (await client.get("/service/", params={"lat": "x", "long": "0"})).status == 400
    assert (await client.get("/no/such/path/123")).status == 404
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = _samples(await response.text())
    assert samples['geoweb_requests_total{method="GET",route="/service",status="200"}'] == 3
    assert samples['geoweb_requests_total{method="GET",route="/service",status="400"}'] == 1
    # unknown paths share one label, whatever they are
    assert samples['geoweb_requests_total{method="GET",route="unmatched",status="404"}'] == 1
    assert samples['geoweb_request_duration_seconds_count{route="/service"}'] == 4
    assert samples['geoweb_request_duration_seconds_bucket{le="+Inf",route="/service"}'] == 4
    assert samples["geoweb_registry_serial"] >= 1
    assert samples["geoweb_registry_answered_serial"] == samples["geoweb_registry_serial"]
    assert 'geoweb_http_cache_lookups_total{result="hit"}' in samples
    assert 'geoweb_dns_cache_lookups_total{result="miss"}' in samples
    # another app in the same process counts its own requests only
    others = _samples(await (await other.get("/metrics")).text())
    assert not any(k.startswith("geoweb_requests_total") and "/service" in k for k in others)


async def test_metrics_show_refresh_and_mirror_failures(
    aiohttp_client: ClientFactory, bloomington_db: Path, city: tuple[str, StandIn]
) -> None:
    _, state = city
    state.down = True
    with Store(bloomington_db) as store:
        store.add_mirror("http://127.0.0.1:9/registry")
        store.record_mirror_failure("http://127.0.0.1:9/registry", "connection refused")
    client = await aiohttp_client(create_app(_discovery_settings(bloomington_db)))
    assert (await client.get("/v1/resolve", params=BLOOMINGTON)).status == 200
    samples = _samples(await (await client.get("/metrics")).text())
    assert samples['geoweb_discovery_refreshes_total{outcome="failed"}'] == 1
    # the failure recorded before, and maybe the server's own first sync, failing again
    assert samples['geoweb_mirror_failures{upstream="http://127.0.0.1:9/registry"}'] >= 1
    # never synced: no lag to show
    assert not any(k.startswith("geoweb_mirror_lag_seconds{") for k in samples)


# --- the page's settings ---------------------------------------------------------------------


async def test_the_page_asks_no_tile_server_unless_one_is_set(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    plain = await aiohttp_client(create_app(Settings(db=str(tmp_path / "p.sqlite"))))
    page = await (await plain.get("/")).text()
    assert '"tileUrl":""' in page
    for name in ("map.js", "leaflet.js", "leaflet.css", "map.css"):
        assert (await plain.get(f"/static/{name}")).status == 200, name
    assert (await plain.get("/static/index.html")).status == 404  # only the files the page uses
    assert (await plain.get("/static/..%2Fsite.py")).status == 404
    tiles = "https://tiles.example/{z}/{x}/{y}.png"
    settings = Settings(
        db=str(tmp_path / "t.sqlite"),
        map_tile_url=tiles,
        map_tile_attribution="</script><b>Tiles</b>",
    )
    tiled = await aiohttp_client(create_app(settings))
    page = await (await tiled.get("/")).text()
    assert f'"tileUrl":"{tiles}"' in page
    # the attribution cannot end the configuration block
    assert "</script><b>" not in page and "<\\/script><b>Tiles<\\/b>" in page
