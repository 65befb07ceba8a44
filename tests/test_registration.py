"""Registering a jurisdiction by proving control of its domain (``resolver/registry/``):
a real Knot DNS on loopback serves ``city.example`` and takes TSIG-signed updates, the real app
serves on a loopback port with a fresh SQLite store and asks Knot, and ``geoweb jurisdiction
publish`` runs end to end in a subprocess against both."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import secrets
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import dns.message
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update
import pytest
import shapely.geometry
from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from dns_server import TSIG_ALGORITHM, TSIG_NAME, TSIG_SECRET, KnotServer

from common.models import boundary_generation
from discovery.dns_records import parse_record
from discovery.validator import validate_discovery
from resolver.cli.main import main
from resolver.config import Settings
from resolver.http.app import create_app
from resolver.store import Store

DOMAIN = "city.example"
NORTH = "north.city.example"  # another domain, in the same test zone
QUIET = "quiet.city.example"  # a domain that never publishes a challenge
CITY = "city-example"
ROOT = Path(__file__).resolve().parents[1]

# Open Atlantic: no jurisdiction of the embedded registry is near. GeoJSON order: [long, lat].
SQUARE = {
    "type": "Polygon",
    "coordinates": [[[-30.0, 30.0], [-29.0, 30.0], [-29.0, 31.0], [-30.0, 31.0], [-30.0, 30.0]]],
}
INSIDE = (30.5, -29.5)  # (lat, long)
EAST = (30.5, -28.5)  # outside SQUARE, inside WIDE
WIDE = {
    "type": "Polygon",
    "coordinates": [[[-30.0, 30.0], [-28.0, 30.0], [-28.0, 31.0], [-30.0, 31.0], [-30.0, 30.0]]],
}
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def digest(token: str) -> str:
    """base64url(SHA-256(token)), unpadded: computed here, not with the code under test."""
    raw = hashlib.sha256(token.encode()).digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def feature(
    id: str = CITY, geometry: dict[str, Any] | None = SQUARE, **properties: Any
) -> dict[str, Any]:
    props = {
        "id": id,
        "name": "City of Example",
        "discovery_url": "https://city.example/open311/discovery.json",
        "endpoints": [{"url": "https://city.example/open311/v2/"}],
        **properties,
    }
    return {"type": "Feature", "geometry": geometry, "properties": props}


@pytest.fixture
def knot(city_knot: KnotServer) -> KnotServer:
    return city_knot


def _update(knot: KnotServer, build: Callable[[dns.update.UpdateMessage], None]) -> None:
    update = dns.update.UpdateMessage(DOMAIN + ".")
    build(update)
    update.use_tsig(dns.tsig.Key(TSIG_NAME, TSIG_SECRET, TSIG_ALGORITHM))
    response = dns.query.tcp(update, knot.address, port=knot.port, timeout=5)
    assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())


def _txt_values(knot: KnotServer, name: str) -> list[str]:
    response = knot.query(name, "TXT")
    return [b"".join(r.strings).decode() for rrset in response.answer for r in rrset]


@dataclass
class Registry:
    """The app under test, the zone it checks, and the store it writes."""

    client: TestClient[Any, Any]
    knot: KnotServer
    db: Path
    published: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, dict[str, Any]]:
        kwargs: dict[str, Any] = {"data": io.BytesIO(raw)} if raw is not None else {"json": body}
        response = await self.client.request(method, path, **kwargs)
        return response.status, await response.json()

    async def challenge(self, domain: str = DOMAIN, jurisdiction: str = CITY) -> dict[str, Any]:
        status, body = await self.call(
            "POST", "/v1/registry/challenges", {"domain": domain, "jurisdiction": jurisdiction}
        )
        assert status == 201, body
        return body

    def publish(self, challenge: dict[str, Any]) -> None:
        """Put the challenge record in the zone, as the jurisdiction would."""
        name, value = challenge["record"]["name"], challenge["record"]["value"]
        _update(self.knot, lambda u: u.add(name, 60, "TXT", f'"{value}"'))
        self.published.add(name)

    async def proven(self, domain: str = DOMAIN, jurisdiction: str = CITY) -> str:
        """A token whose record is published: everything a registration needs."""
        challenge = await self.challenge(domain, jurisdiction)
        self.publish(challenge)
        return str(challenge["token"])

    async def register(
        self, token: str | None, entry: Any, domain: str = DOMAIN
    ) -> tuple[int, dict[str, Any]]:
        body = {"domain": domain, "feature": entry}
        if token is not None:
            body["token"] = token
        return await self.call("POST", "/v1/registry/jurisdictions", body)

    async def answer(self, point: tuple[float, float]) -> dict[str, Any]:
        status, body = await self.call("GET", f"/v1/resolve?lat={point[0]}&long={point[1]}")
        assert status == 200, body
        return body

    async def chosen(self, point: tuple[float, float]) -> str | None:
        jurisdiction = (await self.answer(point))["jurisdiction"]
        return None if jurisdiction is None else str(jurisdiction["id"])

    def state(self) -> tuple[int, list[tuple[Any, ...]]]:
        """The store's serial and entries: what a refused request must leave as it was."""
        with Store(self.db) as store:
            entries = [
                (j.id, j.domain, j.origin, j.version, j.boundary_generation)
                for j in store.jurisdictions()
            ]
            return store.serial, entries


@pytest.fixture
async def registry(
    aiohttp_client: ClientFactory, knot: KnotServer, tmp_path: Path
) -> AsyncIterator[Registry]:
    db = tmp_path / "registry.sqlite"
    settings = Settings(
        db=str(db),
        dns_nameserver=(knot.address,),
        register_domain=(DOMAIN,),
        dns_port=knot.port,
        dns_timeout=2.0,
        mirror_interval=0,
        embedded=False,  # the registered entries only
    )
    client = await aiohttp_client(create_app(settings))
    registry = Registry(client, knot, db)
    yield registry
    for name in registry.published:  # the next test starts from a zone without challenges
        _update(knot, lambda u, n=name: u.delete(n, "TXT"))


# -- the proven path ----------------------------------------------------------------------------


async def test_a_proven_registration_is_answered_at_once(registry: Registry) -> None:
    assert await registry.chosen(INSIDE) is None
    challenge = await registry.challenge()
    token = challenge["token"]
    # DNS shows the digest of the token, never the token itself
    assert challenge["record"] == {
        "name": "_open311-challenge.city.example.",
        "type": "TXT",
        "ttl": 60,
        "value": digest(token),
    }
    assert token not in challenge["zone_line"] and digest(token) in challenge["zone_line"]
    registry.publish(challenge)

    started = time.perf_counter()
    status, body = await registry.register(token, feature())
    elapsed = time.perf_counter() - started
    print(f"registration round trip (DNS check, save, catch-up): {elapsed * 1000:.1f} ms")

    assert status == 201, body
    assert body["registered"] == CITY and body["replaced"] is False
    entry = body["jurisdiction"]["entry"]
    assert entry["origin"] == "domain:city.example" and entry["attested"] is True
    assert entry["version"] == 1
    # answered right away, inside the boundary only
    answer = await registry.answer(INSIDE)
    assert answer["jurisdiction"]["id"] == CITY
    assert answer["endpoint"]["url"] == "https://city.example/open311/v2/"
    facts = {p["fact"]: p for p in answer["provenance"]}
    assert facts["boundary"]["source"] == "registry"
    assert facts["boundary"]["reference"] == "domain:city.example"
    assert await registry.chosen(EAST) is None
    status, detail = await registry.call("GET", f"/v1/jurisdictions/{CITY}")
    assert status == 200 and detail["entry"]["origin"] == "domain:city.example"
    assert detail["entry"]["attested"] is True and detail["domain"] == DOMAIN
    # and mirrors see it in the change log, with its origin
    status, changes = await registry.call("GET", "/v1/registry/changes?since=0")
    (change,) = changes["changes"]
    assert change["op"] == "upsert"
    assert change["feature"]["properties"]["entry"]["origin"] == "domain:city.example"


async def test_the_domain_changes_its_own_boundary(registry: Registry) -> None:
    status, _body = await registry.register(await registry.proven(), feature())
    assert status == 201
    assert await registry.chosen(EAST) is None
    status, body = await registry.register(await registry.proven(), feature(geometry=WIDE))
    assert status == 200, body
    assert body["replaced"] is True and body["jurisdiction"]["entry"]["version"] == 2
    assert await registry.chosen(EAST) == CITY
    assert body["jurisdiction"]["boundary_generation"] == boundary_generation(
        shapely.geometry.shape(WIDE)
    )


async def test_an_invalid_polygon_is_repaired_with_a_note(registry: Registry) -> None:
    # a bow tie: the ring crosses itself at (-29.5, 30.5); two triangles, west and east
    bowtie = _ring((-30, 30), (-29, 31), (-29, 30), (-30, 31), (-30, 30))
    status, body = await registry.register(await registry.proven(), feature(geometry=bowtie))
    assert status == 201, body
    assert any("repaired" in note for note in body["notes"])
    assert body["jurisdiction"]["notes"] == body["notes"]
    assert await registry.chosen((30.5, -29.2)) == CITY  # inside the eastern triangle
    assert await registry.chosen((30.9, -29.5)) is None  # between the triangles


async def test_a_refused_token_stays_usable(registry: Registry) -> None:
    challenge = await registry.challenge()
    status, body = await registry.register(challenge["token"], feature())
    assert (status, body["error"]) == (403, "challenge_absent")
    assert challenge["zone_line"] in body["detail"]  # says what to publish
    registry.publish(challenge)
    status, body = await registry.register(challenge["token"], feature())
    assert status == 201, body


async def test_two_domains_racing_for_one_id_do_not_both_win(registry: Registry) -> None:
    city, north = await registry.proven(DOMAIN, CITY), await registry.proven(NORTH, CITY)
    results = await asyncio.gather(
        registry.register(city, feature()), registry.register(north, feature(), domain=NORTH)
    )
    outcomes = sorted((status, body.get("error")) for status, body in results)
    assert outcomes == [(201, None), (403, "jurisdiction_held")], results
    winner = next(body for status, body in results if status == 201)
    _status, detail = await registry.call("GET", f"/v1/jurisdictions/{CITY}")
    assert detail["domain"] == winner["domain"] and detail["entry"]["version"] == 1


# -- refusals: a clear 4xx, and the store as it was ---------------------------------------------

Request = tuple[str, str, Any]


async def _missing_token(r: Registry) -> Request:
    await r.proven()
    return "POST", "/v1/registry/jurisdictions", {"domain": DOMAIN, "feature": feature()}


async def _wrong_token(r: Registry) -> Request:
    await r.proven()  # a challenge is open and published, but this is not its token
    return _registration(secrets.token_urlsafe(32))


async def _mangled_token(r: Registry) -> Request:
    return _registration("not a token at all!")


async def _expired_token(r: Registry) -> Request:
    token = await r.proven()
    with sqlite3.connect(r.db) as db:  # an hour and a day later
        db.execute("UPDATE challenges SET expires = '2000-01-01T00:00:00.000000Z'")
    return _registration(token)


async def _reused_token(r: Registry) -> Request:
    token = await r.proven()
    status, _body = await r.register(token, feature())
    assert status == 201
    return _registration(token, feature(name="City of Example, again"))


async def _no_record(r: Registry) -> Request:
    challenge = await r.challenge(QUIET)  # nothing is published under quiet.city.example
    return _registration(challenge["token"], domain=QUIET)


async def _record_for_another_token(r: Registry) -> Request:
    await r.proven()  # the record of this challenge is published ...
    other = await r.challenge()  # ... and this one's is not
    return _registration(other["token"])


async def _token_for_another_domain(r: Registry) -> Request:
    token = await r.proven(NORTH, CITY)
    return _registration(token)  # presented for city.example


async def _token_for_another_jurisdiction(r: Registry) -> Request:
    token = await r.proven(DOMAIN, "city-hall")
    return _registration(token)  # presented for city-example


async def _id_held_by_another_domain(r: Registry) -> Request:
    north = await r.proven(NORTH, CITY)  # issued while the id was free, and proven
    status, _body = await r.register(await r.proven(), feature())
    assert status == 201
    return _registration(north, domain=NORTH)


async def _challenge_for_an_id_held(r: Registry) -> Request:
    status, _body = await r.register(await r.proven(), feature())
    assert status == 201
    return "POST", "/v1/registry/challenges", {"domain": NORTH, "jurisdiction": CITY}


def _registration(token: str, entry: Any = None, domain: str = DOMAIN) -> Request:
    body = {"token": token, "domain": domain, "feature": entry or feature()}
    return "POST", "/v1/registry/jurisdictions", body


@pytest.mark.parametrize(
    ("arrange", "status", "code"),
    [
        (_missing_token, 400, "missing_parameter"),
        (_wrong_token, 403, "unknown_token"),
        (_mangled_token, 403, "unknown_token"),
        (_expired_token, 403, "token_expired"),
        (_reused_token, 403, "token_used"),
        (_no_record, 403, "challenge_absent"),
        (_record_for_another_token, 403, "challenge_mismatch"),
        (_token_for_another_domain, 403, "token_mismatch"),
        (_token_for_another_jurisdiction, 403, "token_mismatch"),
        (_id_held_by_another_domain, 403, "jurisdiction_held"),
        (_challenge_for_an_id_held, 403, "jurisdiction_held"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
async def test_refusals_change_nothing(
    registry: Registry, arrange: Callable[[Registry], Awaitable[Request]], status: int, code: str
) -> None:
    method, path, body = await arrange(registry)
    before = registry.state()
    answered = await registry.chosen(INSIDE)
    got, error = await registry.call(method, path, body)
    assert (got, error["error"]) == (status, code), error
    assert error["detail"]
    assert registry.state() == before
    assert await registry.chosen(INSIDE) == answered


def _ring(*points: tuple[float, float]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[list(p) for p in points]]}


@pytest.mark.parametrize(
    ("entry", "code"),
    [
        # not a Feature
        (SQUARE, "invalid_entry"),
        # a Feature without properties
        ({"type": "Feature", "geometry": SQUARE}, "invalid_entry"),
        # no name
        (feature(name=None), "invalid_entry"),
        # an id with a slash
        (feature(id="city/example"), "invalid_entry"),
        # no boundary at all
        (feature(geometry=None), "invalid_entry"),
        # a point, not a polygon
        (feature(geometry={"type": "Point", "coordinates": [-29.5, 30.5]}), "invalid_entry"),
        # a ring of three coordinates
        (feature(geometry=_ring((-30, 30), (-29, 30), (-30, 30))), "invalid_entry"),
        # coordinates as text
        (feature(geometry={"type": "Polygon", "coordinates": "30,-29"}), "invalid_entry"),
        # latitude 95: not WGS84 (or swapped)
        (feature(geometry=_ring((30, 95), (31, 95), (31, 96), (30, 95))), "invalid_entry"),
        # a line with no area
        (feature(geometry=_ring((-30, 30), (-29, 30), (-28, 30), (-30, 30))), "invalid_entry"),
        # plain http discovery URL
        (feature(discovery_url="http://city.example/discovery.json"), "invalid_entry"),
        # no discovery URL
        (feature(discovery_url=None), "invalid_entry"),
        # endpoints not a list
        (feature(endpoints="https://city.example/open311/v2/"), "invalid_entry"),
        # a generation that does not match the geometry
        (feature(boundary_generation="0123456789abcdef"), "invalid_entry"),
        # an expiry in the past
        (feature(entry={"expires": "2001-01-01T00:00:00Z"}), "invalid_entry"),
        # the entry names another domain than the registration
        (feature(domain="elsewhere.example"), "invalid_entry"),
    ],
)
async def test_malformed_entries_are_refused(
    registry: Registry, entry: dict[str, Any], code: str
) -> None:
    token = await registry.proven()
    before = registry.state()
    status, body = await registry.register(token, entry)
    assert (status, body["error"]) == (400, code), body
    assert registry.state() == before
    # nothing changed: the token still registers a good entry
    status, body = await registry.register(token, feature())
    assert status == 201, body


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        # not JSON
        (b"{domain: city.example", 400, "invalid_input"),
        # JSON, not an object
        (b'["token", "domain"]', 400, "invalid_input"),
        # 5 MiB: over the app's max_body_bytes (4 MiB)
        (b'{"token": "' + b"a" * (5 * 1024 * 1024) + b'"}', 413, "payload_too_large"),
    ],
    ids=["not-json", "not-an-object", "huge"],
)
async def test_malformed_bodies_are_refused(
    registry: Registry, raw: bytes, status: int, code: str
) -> None:
    before = registry.state()
    got, body = await registry.call("POST", "/v1/registry/jurisdictions", raw=raw)
    assert (got, body["error"]) == (status, code)
    assert registry.state() == before


@pytest.mark.parametrize(
    "domain",
    ["localhost", "127.0.0.1", "-city.example", "city..example", "a" * 64 + ".example", 42, ""],
)
async def test_challenges_need_a_real_domain(registry: Registry, domain: Any) -> None:
    status, body = await registry.call(
        "POST", "/v1/registry/challenges", {"domain": domain, "jurisdiction": CITY}
    )
    assert status == 400, body


# -- withdrawing ------------------------------------------------------------------------------


async def test_a_domain_withdraws_its_own_entry_and_no_one_else_can(registry: Registry) -> None:
    north = await registry.proven(NORTH, CITY)  # issued while the id was free
    status, _body = await registry.register(await registry.proven(), feature())
    assert status == 201
    path = f"/v1/registry/jurisdictions/{CITY}"
    # another domain, even with a proven token of its own, cannot
    before = registry.state()
    status, body = await registry.call("DELETE", path, {"token": north, "domain": NORTH})
    assert (status, body["error"]) == (403, "jurisdiction_held")
    assert registry.state() == before
    # nor can the domain itself without proof
    token = (await registry.challenge())["token"]
    status, body = await registry.call("DELETE", path, {"token": token, "domain": DOMAIN})
    assert (status, body["error"]) == (403, "challenge_mismatch")  # earlier tokens' records only
    assert await registry.chosen(INSIDE) == CITY
    # with it, it can
    status, body = await registry.call(
        "DELETE", path, {"token": await registry.proven(), "domain": DOMAIN}
    )
    assert status == 200, body
    assert await registry.chosen(INSIDE) is None
    status, changes = await registry.call("GET", "/v1/registry/changes?since=1")
    assert [c["op"] for c in changes["changes"]] == ["delete"]
    # an id nobody holds
    token = await registry.proven(DOMAIN, "nowhere")
    status, body = await registry.call(
        "DELETE", "/v1/registry/jurisdictions/nowhere", {"token": token, "domain": DOMAIN}
    )
    assert (status, body["error"]) == (404, "unknown_jurisdiction")


# -- geoweb jurisdiction publish ----------------------------------------------------------------


def _boundary_file(path: Path, *geometries: dict[str, Any]) -> Path:
    features = [
        {"type": "Feature", "properties": {"name": f"part {i}"}, "geometry": g}
        for i, g in enumerate(geometries)
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


PUBLISH = [
    "--id", CITY, "--name", "City of Example", "--domain", DOMAIN,
    "--discovery-url", "https://city.example/open311/discovery.json",
    "--endpoint-url", "https://city.example/open311/v2/",
    "--contact", "311@city.example", "--key-service", "https://city.example/open311/key",
]  # fmt: skip


def test_publish_writes_what_the_jurisdiction_hosts(tmp_path: Path) -> None:
    bowtie = _ring((-30, 30), (-29, 31), (-29, 30), (-30, 31), (-30, 30))
    source = _boundary_file(tmp_path / "city.geojson", bowtie)
    out = tmp_path / "site"
    result = CliRunner().invoke(
        main, ["jurisdiction", "publish", str(source), *PUBLISH, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "boundary: " in result.output and "repaired" in result.output
    hosted = json.loads((out / "boundary.geojson").read_text())
    geometry = shapely.geometry.shape(hosted["geometry"])
    generation = hosted["properties"]["boundary_generation"]
    assert generation == boundary_generation(geometry) and geometry.is_valid
    discovery = (out / "discovery.json").read_bytes()
    verdict = validate_discovery(discovery, "application/json", name="discovery.json")
    assert verdict.passed, [f.rule for f in verdict.failures]
    assert shapely.geometry.shape(json.loads(discovery)["service_area"]).equals(geometry)
    # the printed record, read back as a resolver reads it
    line = next(x for x in result.output.splitlines() if x.startswith("_open311.city.example."))
    text = line.split(" IN TXT ", 1)[1]
    txt = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, text)
    record = parse_record(txt.strings)
    assert record.boundary_url == "https://city.example/open311/boundary.geojson"
    assert record.boundary_generation == generation
    assert record.discovery_url == "https://city.example/open311/discovery.json"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        # registry options without a registry
        (["--update-server", "127.0.0.1:53"], "need --registry"),
        # a TSIG key in the wrong form
        (
            [
                "--registry",
                "http://127.0.0.1:9",
                "--update-server",
                "127.0.0.1",
                "--tsig-key",
                "just-a-name",
            ],
            "NAME:ALGORITHM:SECRET",
        ),
        # not a domain
        (["--domain", "localhost"], "not a usable domain"),
        # plain http for the discovery document
        (["--discovery-url", "http://city.example/discovery.json"], "https"),
    ],
)
def test_publish_refuses_bad_options(tmp_path: Path, extra: list[str], message: str) -> None:
    source = _boundary_file(tmp_path / "city.geojson", SQUARE)
    args = ["jurisdiction", "publish", str(source), *PUBLISH, "--out", str(tmp_path), *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "boundary.geojson").exists()


def test_publish_needs_one_feature_or_a_choice(tmp_path: Path) -> None:
    source = _boundary_file(tmp_path / "two.geojson", SQUARE, WIDE)
    base = ["jurisdiction", "publish", str(source), *PUBLISH, "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, base)
    assert result.exit_code == 2 and "--feature" in result.output
    result = CliRunner().invoke(main, [*base, "--feature", "name=part 1"])
    assert result.exit_code == 0, result.output
    hosted = json.loads((tmp_path / "out" / "boundary.geojson").read_text())
    assert shapely.geometry.shape(hosted["geometry"]).equals(shapely.geometry.shape(WIDE))


async def _geoweb(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "resolver",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def _geoweb_here(*args: str) -> tuple[int, str]:
    """The command in this process (a thread of its own: the app keeps serving meanwhile)."""
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args))
    return result.exit_code, result.output


def _dns_args(knot: KnotServer, *, update: bool = True) -> list[str]:
    args = ["--dns-nameserver", knot.address, "--dns-port", str(knot.port)]
    args += ["--poll-interval", "0.1"]
    if update:
        key = f"{TSIG_NAME}:{TSIG_ALGORITHM}:{TSIG_SECRET}"
        args += ["--update-server", f"{knot.address}:{knot.port}", "--tsig-key", key]
    return args


async def test_publish_registers_end_to_end(registry: Registry, tmp_path: Path) -> None:
    source = _boundary_file(tmp_path / "city.geojson", SQUARE)
    code, output = await _geoweb(
        "jurisdiction", "publish", str(source), *PUBLISH, "--out", str(tmp_path / "site"),
        "--registry", registry.url, *_dns_args(registry.knot), "--wait", "30",
    )  # fmt: skip
    assert code == 0, output
    assert f"registered {CITY} for {DOMAIN}" in output and "attested" in output
    assert await registry.chosen(INSIDE) == CITY
    _status, detail = await registry.call("GET", f"/v1/jurisdictions/{CITY}")
    assert detail["entry"]["origin"] == "domain:city.example" and detail["entry"]["attested"]
    # the challenge record was removed once used
    assert _txt_values(registry.knot, "_open311-challenge.city.example.") == []
    # and the same proof withdraws it
    code, output = await _geoweb(
        "jurisdiction", "withdraw", CITY, "--domain", DOMAIN, "--registry", registry.url,
        *_dns_args(registry.knot), "--wait", "30",
    )  # fmt: skip
    assert code == 0, output
    assert await registry.chosen(INSIDE) is None


async def test_publish_waits_for_a_record_published_by_hand(
    registry: Registry, tmp_path: Path
) -> None:
    source = _boundary_file(tmp_path / "city.geojson", SQUARE)
    args = [
        "jurisdiction", "publish", str(source), *PUBLISH, "--out", str(tmp_path / "site"),
        "--registry", registry.url, *_dns_args(registry.knot, update=False), "--wait", "60",
    ]  # fmt: skip
    run = asyncio.create_task(_geoweb_here(*args))
    # the jurisdiction's operator reads the printed record and adds it to the zone
    value = None
    while value is None and not run.done():
        await asyncio.sleep(0.05)
        with sqlite3.connect(registry.db) as db:
            row = db.execute("SELECT digest FROM challenges WHERE used IS NULL").fetchone()
        value = row[0] if row else None
    assert value is not None, (await run)[1]
    registry.publish({"record": {"name": "_open311-challenge.city.example.", "value": value}})
    code, output = await run
    assert code == 0, output
    assert f'_open311-challenge.city.example. 60 IN TXT "{value}"' in output
    assert "can be removed now" in output
    assert await registry.chosen(INSIDE) == CITY


async def test_publish_fails_clearly(registry: Registry, tmp_path: Path) -> None:
    source = _boundary_file(tmp_path / "city.geojson", SQUARE)
    base = ["jurisdiction", "publish", str(source), *PUBLISH, "--out", str(tmp_path / "site")]
    before = registry.state()
    # nobody publishes the printed challenge record: the wait ends, nothing is registered
    code, output = await _geoweb_here(
        *base, "--registry", registry.url, *_dns_args(registry.knot, update=False), "--wait", "0"
    )
    assert code == 1, output
    assert "_open311-challenge.city.example. 60 IN TXT" in output  # printed to publish by hand
    assert "did not show the challenge" in output
    # a wrong TSIG secret: the update server refuses, nothing is registered
    wrong = base64.b64encode(b"not the secret of the test key!!").decode()
    args = _dns_args(registry.knot)
    args[args.index("--tsig-key") + 1] = f"{TSIG_NAME}:{TSIG_ALGORITHM}:{wrong}"
    code, output = await _geoweb_here(*base, "--registry", registry.url, *args, "--wait", "5")
    assert code == 1, output
    assert "BADSIG" in output
    # a registry that is not there
    code, output = await _geoweb_here(*base, "--registry", "http://127.0.0.1:9", "--wait", "0")
    assert code == 1 and "cannot reach the registry" in output
    assert registry.state() == before


def test_the_readme_documents_every_jurisdiction_option() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    group = main.commands["jurisdiction"]
    assert isinstance(group, click.Group)
    for name, command in group.commands.items():
        assert f"geoweb jurisdiction {name}" in readme
        for param in command.params:
            for option in getattr(param, "opts", []):
                if option.startswith("--"):
                    assert option in readme, f"geoweb jurisdiction {name} {option}"


async def test_only_listed_domains_may_register(
    aiohttp_client: ClientFactory, knot: KnotServer, tmp_path: Path
) -> None:
    for allowed, domain in (((), DOMAIN), (("other.example",), DOMAIN), ((NORTH,), DOMAIN)):
        settings = Settings(
            db=str(tmp_path / "closed.sqlite"),
            dns_nameserver=(knot.address,),
            dns_port=knot.port,
            register_domain=allowed,
            embedded=False,
            mirror_interval=0,
        )
        client = await aiohttp_client(create_app(settings))
        body = {"domain": domain, "jurisdiction": CITY}
        response = await client.post("/v1/registry/challenges", json=body)
        assert response.status == 403, allowed
        assert (await response.json())["error"] == "registration_closed"
        register = await client.post(
            "/v1/registry/jurisdictions", json={"domain": domain, "token": "x", "feature": {}}
        )
        assert register.status == 403
    with Store(tmp_path / "closed.sqlite") as store:
        assert store.count() == 0
