"""The DNSSEC AD flag, for real: Knot signs the test zones itself, Unbound validates them against
their DS records as trust anchors, and our lookups report ``authenticated`` only for answers a
validating resolver vouched for. An authoritative server never sets AD; a broken signature makes
the validator answer SERVFAIL, which is a failure, never an authenticated answer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from dns_server import KnotServer, UnboundServer
from shapely.geometry import box

from common.models import Endpoint, Jurisdiction
from discovery.dns_lookup import DnsLookup, DnsUnavailable
from resolver.config import Settings
from resolver.http.app import create_app
from resolver.sources.dns import DnsSource
from resolver.store import Store

SIGNED = "signed.test"
BROKEN = "broken.test"
PLAIN = "plain.test"

GOOD_URL = "https://city.example/discovery.json"


def _zone_text(zone: str) -> str:
    return f"""$ORIGIN {zone}.
$TTL 60
@ 60 IN SOA ns hostmaster 1 3600 600 86400 30
@ 60 IN NS ns
ns 60 IN A 127.0.0.1
_open311.city 60 IN TXT "v=open311-1" "d={GOOD_URL}"
"""


@dataclass
class Servers:
    knot: KnotServer  # signs signed.test and broken.test
    tampered: KnotServer  # serves broken.test with a changed record, and plain.test unsigned
    unbound: UnboundServer


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    files = tmp_path_factory.mktemp("dnssec-zones")
    for zone in (SIGNED, BROKEN, PLAIN):
        (files / zone).write_text(_zone_text(zone), encoding="utf-8")
    knot = KnotServer(
        tmp_path_factory.mktemp("knot-signing"),
        SIGNED,
        files / SIGNED,
        signed=True,
        more_zones={BROKEN: files / BROKEN},
    )
    started: list[KnotServer | UnboundServer] = []
    try:
        knot.start()
        started.append(knot)
        # A broken signature: broken.test as Knot signed it, then one TXT record changed (the
        # signature left as it was) and served by a second Knot that does not sign.
        signed = knot.transfer(BROKEN)
        owner = dns.name.from_text(f"_open311.city.{BROKEN}.")
        forged = dns.rdata.from_text(
            dns.rdataclass.IN,
            dns.rdatatype.TXT,
            '"v=open311-1" "d=https://forged.example/discovery.json"',
        )
        rdataset = signed.find_rdataset(owner, dns.rdatatype.TXT)
        ttl = rdataset.ttl
        rdataset.clear()
        rdataset.add(forged, ttl)
        assert signed.find_rdataset(owner, dns.rdatatype.RRSIG, dns.rdatatype.TXT)
        (files / "broken-forged").write_text(signed.to_text(), encoding="utf-8")
        tampered = KnotServer(
            tmp_path_factory.mktemp("knot-tampered"),
            BROKEN,
            files / "broken-forged",
            more_zones={PLAIN: files / PLAIN},
        )
        tampered.start()
        started.append(tampered)
        unbound = UnboundServer(
            tmp_path_factory.mktemp("unbound"),
            {
                f"{SIGNED}.": (knot.address, knot.port),
                f"{BROKEN}.": (tampered.address, tampered.port),
                f"{PLAIN}.": (tampered.address, tampered.port),
            },
            anchors=(knot.trust_anchor(SIGNED), knot.trust_anchor(BROKEN)),
        )
        unbound.start()
        started.append(unbound)
        yield Servers(knot, tampered, unbound)
    finally:
        for server in reversed(started):
            server.stop()


def _through_unbound(servers: Servers) -> DnsLookup:
    return DnsLookup([servers.unbound.address], port=servers.unbound.port, timeout=3.0)


def _claim(zone: str) -> Jurisdiction:
    return Jurisdiction(
        "city",
        "City",
        domain=f"city.{zone}",
        discovery_url=GOOD_URL,
        endpoints=(Endpoint("https://city.example/v2/"),),
    ).with_boundary(box(0, 0, 1, 1))


async def test_answers_validated_by_unbound_are_authenticated(servers: Servers) -> None:
    lookup = _through_unbound(servers)
    answer = await lookup.txt(f"_open311.city.{SIGNED}")
    assert answer.authenticated is True
    assert GOOD_URL.encode() in b"".join(answer.records[0])
    # a validated denial of existence (NSEC) is authenticated too
    missing = await lookup.txt(f"_open311.nobody.{SIGNED}")
    assert missing.negative == "nxdomain" and missing.authenticated is True
    # and the flag survives the cache
    again = await lookup.txt(f"_open311.city.{SIGNED}")
    assert again.from_cache and again.authenticated is True
    refreshed = await DnsSource(lookup).refresh(_claim(SIGNED))
    fact = next(p for p in refreshed.provenance if p.fact == "discovery_url")
    assert fact.verified is True and fact.authenticated is True
    assert fact.to_dict()["authenticated"] is True


async def test_the_authoritative_server_never_sets_ad(servers: Servers) -> None:
    lookup = DnsLookup([servers.knot.address], port=servers.knot.port)
    answer = await lookup.txt(f"_open311.city.{SIGNED}")
    assert answer.records and answer.authenticated is False
    refreshed = await DnsSource(lookup).refresh(_claim(SIGNED))
    fact = next(p for p in refreshed.provenance if p.fact == "discovery_url")
    assert fact.verified is True and "authenticated" not in fact.to_dict()


async def test_an_unsigned_zone_through_unbound_is_answered_but_not_authenticated(
    servers: Servers,
) -> None:
    answer = await _through_unbound(servers).txt(f"_open311.city.{PLAIN}")
    assert answer.records and answer.authenticated is False


async def test_a_broken_signature_is_a_failure_never_an_authenticated_answer(
    servers: Servers,
) -> None:
    name = f"_open311.city.{BROKEN}"
    # the forged record is there, signature and all: only validation stops it
    direct = await DnsLookup([servers.tampered.address], port=servers.tampered.port).txt(name)
    assert b"forged.example" in b"".join(direct.records[0]) and not direct.authenticated
    lookup = _through_unbound(servers)
    with pytest.raises(DnsUnavailable, match="SERVFAIL"):
        await lookup.txt(name)
    assert lookup.stats.failures == 1 and len(lookup.cache) == 0  # type: ignore[arg-type]
    # the DNS source keeps the registry's claim, unverified, and claims no authentication
    claim = _claim(BROKEN)
    refreshed = await DnsSource(lookup).refresh(claim)
    assert refreshed.discovery_url == claim.discovery_url
    facts = [p for p in refreshed.provenance if p.source in ("dns", "cache")]
    assert [p.fact for p in facts] == ["dns_record"]
    assert facts[0].verified is False and facts[0].authenticated is None
    assert "SERVFAIL" in (facts[0].note or "")


async def test_the_api_reports_authenticated_facts(
    servers: Servers, tmp_path: Path, aiohttp_client: object
) -> None:
    db = tmp_path / "dnssec.sqlite"
    with Store(db) as store:
        store.save([_claim(SIGNED)], source="test")
    settings = Settings(
        db=str(db), dns_nameserver=(servers.unbound.address,), dns_port=servers.unbound.port
    )
    client = await aiohttp_client(create_app(settings))  # type: ignore[operator]
    response = await client.get("/v1/resolve", params={"lat": "0.5", "long": "0.5"})
    assert response.status == 200
    body = await response.json()
    dns_facts = [p for p in body["provenance"] if p["source"] == "dns"]
    assert dns_facts and all(p["authenticated"] is True for p in dns_facts)
