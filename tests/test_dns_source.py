"""Attestation: a registry's claim about a domain is checked against the domain's own ``_open311``
record, served by a real Knot DNS on loopback; DNS wins and the answer says why. Also the lookup
cache (TTLs, RFC 2308 negative caching) and the HTTP API with DNS turned on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dns_server import KnotServer, free_port
from shapely.geometry import box

from common.models import Endpoint, Jurisdiction
from discovery.dns_lookup import DnsLookup, DnsUnavailable
from discovery.dns_records import RecordTooLong, parse_record
from resolver.config import Settings
from resolver.http.app import create_app
from resolver.sources.dns import DnsSource
from resolver.store import Store

ZONE = "attest.test"
LONG = " ".join(['"x=' + "a" * 250 + '"'] * 16)

ZONE_TEXT = f"""$ORIGIN {ZONE}.
$TTL 60
@ 60 IN SOA ns hostmaster 1 3600 600 86400 30
@ 60 IN NS ns
ns 60 IN A 127.0.0.1
_open311.same 60 IN TXT "v=open311-1" "d=https://same.example/discovery.json"
_open311.moved 60 IN TXT "v=open311-1" "d=https://moved.example/new/discovery.json" "e=https://moved.example/v2/"
_open311.moved-bare 60 IN TXT "v=open311-1" "d=https://bare.example/new/discovery.json"
_open311.broken 60 IN TXT "d=https://broken.example/discovery.json"
_open311.twice 60 IN TXT "v=open311-1" "d=https://one.example/discovery.json"
_open311.twice 60 IN TXT "v=open311-1" "d=https://two.example/discovery.json"
_open311.huge 60 IN TXT "v=open311-1" "d=https://huge.example/d.json" {LONG}
nodata 60 IN A 127.0.0.1
_open311.nodata 60 IN AAAA ::1
"""


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    path = tmp_path_factory.mktemp("attest-zone") / "attest.zone"
    path.write_text(ZONE_TEXT, encoding="utf-8")
    server = KnotServer(tmp_path_factory.mktemp("attest-knot"), ZONE, path)
    server.start()
    yield server
    server.stop()


def _claim(name: str, discovery: str | None = None) -> Jurisdiction:
    """What a registry claims about ``<name>.attest.test``."""
    return Jurisdiction(
        name,
        name.title(),
        domain=f"{name}.{ZONE}",
        discovery_url=discovery or f"https://{name}.example/discovery.json",
        endpoints=(Endpoint(f"https://{name}.example/v2/"),),
    ).with_boundary(box(0, 0, 1, 1))


def _facts(j: Jurisdiction) -> dict[str, object]:
    return {p.fact: p for p in j.provenance if p.source in ("dns", "cache")}


@pytest.fixture
def source(knot: KnotServer) -> DnsSource:
    return DnsSource(DnsLookup([knot.address], port=knot.port, timeout=2.0))


async def test_a_matching_record_verifies_the_registrys_claim(source: DnsSource) -> None:
    refreshed = await source.refresh(_claim("same"))
    fact = _facts(refreshed)["discovery_url"]
    assert fact.verified is True and fact.source == "dns"  # type: ignore[attr-defined]
    assert "verified" in fact.note  # type: ignore[attr-defined]
    assert 0 < fact.ttl <= 60  # type: ignore[attr-defined]
    assert fact.reference == f"_open311.same.{ZONE} TXT"  # type: ignore[attr-defined]
    assert fact.authenticated is None  # an authoritative server sets no AD flag  # type: ignore[attr-defined]
    assert refreshed.endpoints == _claim("same").endpoints
    assert not source.needs(refreshed, source.lookup.clock())


async def test_when_they_disagree_dns_wins_and_says_why(source: DnsSource) -> None:
    refreshed = await source.refresh(_claim("moved"))
    assert refreshed.discovery_url == "https://moved.example/new/discovery.json"
    assert [e.url for e in refreshed.endpoints] == ["https://moved.example/v2/"]
    fact = _facts(refreshed)["discovery_url"]
    assert fact.verified is False  # type: ignore[attr-defined]
    assert "DNS wins" in fact.note and "moved.example/discovery.json" in fact.note  # type: ignore[attr-defined]
    # no e= in the record: the registry's endpoint came with a URL the domain does not claim
    bare = await source.refresh(_claim("moved-bare"))
    assert bare.discovery_url == "https://bare.example/new/discovery.json"
    assert bare.endpoints == ()


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("broken", "does not start with the version key"),  # no version key
        ("twice", "disagree"),  # two records that disagree
        ("huge", "at most 2048"),  # a 4,000-byte record (over TCP: too big for UDP)
        ("missing", "nxdomain"),  # no record at all
        ("nodata", "nodata"),  # the name exists, without a TXT record
    ],
)
async def test_without_a_usable_record_the_claim_stays_unverified(
    source: DnsSource, name: str, says: str
) -> None:
    claim = _claim(name)
    refreshed = await source.refresh(claim)
    assert refreshed.discovery_url == claim.discovery_url
    assert refreshed.endpoints == claim.endpoints
    fact = _facts(refreshed)["dns_record"]
    assert fact.verified is False and says in fact.note  # type: ignore[attr-defined]


async def test_the_4000_byte_record_arrives_whole_and_is_refused(knot: KnotServer) -> None:
    lookup = DnsLookup([knot.address], port=knot.port)
    answer = await lookup.txt(f"_open311.huge.{ZONE}")
    assert sum(len(s) for s in answer.records[0]) > 4000
    with pytest.raises(RecordTooLong):
        parse_record(answer.records[0])


async def test_ttls_and_negative_answers_are_cached(knot: KnotServer) -> None:
    now = [1_000_000.0]
    lookup = DnsLookup([knot.address], port=knot.port, clock=lambda: now[0])
    first = await lookup.txt(f"_open311.same.{ZONE}")
    assert first.ttl == 60 and not first.from_cache
    again = await lookup.txt(f"_open311.SAME.{ZONE}")  # names are case-insensitive
    assert again.from_cache and lookup.stats.queries == 1
    missing = await lookup.txt(f"_open311.missing.{ZONE}")
    # RFC 2308: the negative TTL is min(SOA TTL 60, SOA MINIMUM 30)
    assert missing.negative == "nxdomain" and missing.ttl == 30
    nodata = await lookup.txt(f"nodata.{ZONE}")
    assert nodata.negative == "nodata" and nodata.ttl == 30
    now[0] += 29
    assert (await lookup.txt(f"_open311.missing.{ZONE}")).from_cache
    assert lookup.stats.queries == 3
    now[0] += 2  # the negative answer expired; the positive one has not
    assert not (await lookup.txt(f"_open311.missing.{ZONE}")).from_cache
    assert (await lookup.txt(f"_open311.same.{ZONE}")).from_cache
    assert lookup.stats.queries == 4


async def test_the_api_reports_dns_facts_with_their_ttl(
    knot: KnotServer, tmp_path: Path, aiohttp_client: object
) -> None:
    db = tmp_path / "attest.sqlite"
    with Store(db) as store:
        store.save([_claim("same"), _claim("moved")], source="test")
    settings = Settings(db=str(db), dns_nameserver=(knot.address,), dns_port=knot.port)
    client = await aiohttp_client(create_app(settings))  # type: ignore[operator]
    response = await client.get("/v1/resolve", params={"lat": "0.5", "long": "0.5"})
    assert response.status == 200
    body = await response.json()
    dns_facts = [p for p in body["provenance"] if p["source"] == "dns"]
    assert dns_facts and all(0 < p["ttl"] <= 60 and p["expires"] for p in dns_facts)
    # both cover the point; "moved" (same area, id order) answers with the endpoint DNS names
    assert body["jurisdiction"]["id"] == "moved"
    assert body["endpoint"]["url"] == "https://moved.example/v2/"
    assert any("DNS wins" in p.get("note", "") for p in dns_facts)


async def test_a_failure_is_remembered_for_a_moment() -> None:
    """RFC 9520: with nothing cached, a failed name fails at once for a while, instead of
    costing the same timeout on every request; then it is asked again."""
    now = [1_000_000.0]
    lookup = DnsLookup(["127.0.0.1"], port=free_port(), timeout=0.2, clock=lambda: now[0])
    with pytest.raises(DnsUnavailable):
        await lookup.txt(f"_open311.same.{ZONE}")
    with pytest.raises(DnsUnavailable, match="not asked again yet"):
        await lookup.txt(f"_open311.same.{ZONE}")
    assert lookup.stats.queries == 1 and lookup.stats.failures == 2
    now[0] += lookup.stale_answer_ttl + 1
    with pytest.raises(DnsUnavailable):
        await lookup.txt(f"_open311.same.{ZONE}")
    assert lookup.stats.queries == 2
