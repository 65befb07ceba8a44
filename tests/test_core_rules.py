"""The core's other decisions, with no I/O: attestation ("DNS wins"), the local registry against a
DNS registry zone, and the one endpoint rule. Facts are built by hand, as a driver would gather
them; each table row is one case."""

from __future__ import annotations

from typing import Any

import pytest
from shapely.geometry import box

from common.errors import InvalidInput
from common.models import GEOREPORT_V2, Answer, Endpoint, Jurisdiction, choose_endpoint
from discovery.dns_lookup import DnsAnswer
from discovery.dns_records import MissingKey, Open311Record, RecordSet
from discovery.documents import DiscoveryDocument
from resolver.core.attestation import attest, recheck_at, same_url, ttl_left, unreachable
from resolver.core.decide import Resolver
from resolver.core.registry_zone import (
    asks_zone,
    counts_from_dns,
    covering,
    local_or_dns,
    registry_mode,
)

NOW = 1_800_000_000.0
REFERENCE = "_open311.city.example TXT"
CLAIMED = "https://city.example/open311/discovery.json"
ELSEWHERE = "https://elsewhere.example/open311/discovery.json"
REGISTRY_ENDPOINT = Endpoint("https://city.example/open311/v2/")
RECORD_ENDPOINT = "https://api.city.example/open311/v2/"


def _answer(**overrides: Any) -> DnsAnswer:
    fields: dict[str, Any] = {
        "name": "_open311.city.example.",
        "rdtype": "TXT",
        "records": ((b"v=open311-1",),),
        "ttl": 300,
        "fetched_at": NOW - 100,
    }
    fields.update(overrides)
    return DnsAnswer(**fields)


def _city(discovery_url: str | None = CLAIMED) -> Jurisdiction:
    return Jurisdiction(
        id="city.example",
        name="City",
        domain="city.example",
        discovery_url=discovery_url,
        endpoints=(REGISTRY_ENDPOINT,),
    )


ATTESTATION = [
    # the record names the registry's URL: verified, the registry's endpoints kept
    (CLAIMED, CLAIMED, None, CLAIMED, [REGISTRY_ENDPOINT.url], True, "verified"),
    # the same URL written with another host case and a trailing slash: still the same
    (
        CLAIMED,
        "https://CITY.example/open311/discovery.json",
        None,
        CLAIMED,
        [REGISTRY_ENDPOINT.url],
        True,
        "verified",
    ),
    # DNS wins: the record names another URL and no endpoint, so the registry's endpoints go
    (CLAIMED, ELSEWHERE, None, ELSEWHERE, [], False, "DNS wins: the registry claimed"),
    # DNS wins with an endpoint: the record's e= replaces the registry's endpoints
    (CLAIMED, ELSEWHERE, RECORD_ENDPOINT, ELSEWHERE, [RECORD_ENDPOINT], False, "DNS wins"),
    # the registry claims no URL: the record names it
    (None, ELSEWHERE, None, ELSEWHERE, [REGISTRY_ENDPOINT.url], True, "named by the domain"),
    # agreeing URL, and e= names the endpoint: the record's endpoint is taken
    (CLAIMED, CLAIMED, RECORD_ENDPOINT, CLAIMED, [RECORD_ENDPOINT], True, "verified"),
]


@pytest.mark.parametrize(
    ("claimed", "named", "endpoint", "discovery_url", "endpoints", "verified", "note"),
    ATTESTATION,
)
def test_attestation(
    claimed: str | None,
    named: str,
    endpoint: str | None,
    discovery_url: str,
    endpoints: list[str],
    verified: bool,
    note: str,
) -> None:
    record = Open311Record(discovery_url=named, endpoint_url=endpoint)
    result = attest(
        _city(claimed), RecordSet(record), _answer(), reference=REFERENCE, now=NOW, stale_ttl=30
    )
    assert result.discovery_url == named
    assert same_url(result.discovery_url, discovery_url)
    assert [e.url for e in result.endpoints] == endpoints
    facts = {p.fact: p for p in result.provenance}
    assert facts["discovery_url"].verified is verified
    assert note in (facts["discovery_url"].note or "")
    assert facts["discovery_url"].ttl == 200  # fetched 100 s ago with TTL 300
    assert ("endpoint" in facts) is (endpoint is not None)


NO_RECORD = [
    # NXDOMAIN: the domain publishes no record; the registry's facts stay, unverified
    (_answer(records=(), negative="nxdomain"), RecordSet(None), "nxdomain: the domain publishes"),
    # a record that cannot be used: the reason is given
    (
        _answer(),
        RecordSet(None, (MissingKey("no d= key", name="_open311.city.example"),)),
        "no usable _open311 record (_open311.city.example: no d= key)",
    ),
]


@pytest.mark.parametrize(("answer", "parsed", "note"), NO_RECORD)
def test_no_usable_record_leaves_the_registry_facts(
    answer: DnsAnswer, parsed: RecordSet, note: str
) -> None:
    city = _city()
    result = attest(city, parsed, answer, reference=REFERENCE, now=NOW, stale_ttl=30)
    assert (result.discovery_url, result.endpoints) == (city.discovery_url, city.endpoints)
    (fact,) = result.provenance
    assert (fact.fact, fact.verified) == ("dns_record", False)
    assert note in (fact.note or "")


def test_a_stale_answer_is_marked_and_held_for_the_stale_ttl() -> None:
    stale = _answer(fetched_at=NOW - 10_000, stale=True, from_cache=True, error="timeout")
    record = RecordSet(Open311Record(discovery_url=CLAIMED))
    result = attest(_city(), record, stale, reference=REFERENCE, now=NOW, stale_ttl=30)
    (fact,) = result.provenance
    assert (fact.source, fact.stale, fact.ttl) == ("cache", True, 30)
    assert (fact.note or "").startswith("stale (RFC 8767): DNS timeout; verified")
    assert recheck_at(stale, NOW, 30) == NOW + 30


def test_a_new_answer_replaces_the_facts_of_the_last_one() -> None:
    once = attest(
        _city(),
        RecordSet(Open311Record(discovery_url=ELSEWHERE)),
        _answer(),
        reference=REFERENCE,
        now=NOW,
        stale_ttl=30,
    )
    twice = attest(
        once,
        RecordSet(Open311Record(discovery_url=ELSEWHERE)),
        _answer(fetched_at=NOW),
        reference=REFERENCE,
        now=NOW,
        stale_ttl=30,
    )
    assert [p.fact for p in twice.provenance] == ["discovery_url"]
    assert twice.provenance[0].ttl == 300


def test_dns_down_with_nothing_cached_keeps_the_registry_facts() -> None:
    city = _city()
    result = unreachable(city, "timeout", REFERENCE)
    assert (result.discovery_url, result.endpoints) == (city.discovery_url, city.endpoints)
    assert result.provenance[0].verified is False
    assert "DNS failed and nothing is cached (timeout)" in (result.provenance[0].note or "")


RECHECK = [
    # a fresh answer: asked again at its expiry
    (_answer(fetched_at=NOW, ttl=300), NOW + 300),
    # TTL 0: never sooner than a second from now, so a lookup cannot spin
    (_answer(fetched_at=NOW, ttl=0), NOW + 1),
    # already expired (a record fetched long ago): a second from now
    (_answer(fetched_at=NOW - 1000, ttl=300), NOW + 1),
]


@pytest.mark.parametrize(("answer", "when"), RECHECK)
def test_when_dns_is_asked_again(answer: DnsAnswer, when: float) -> None:
    assert recheck_at(answer, NOW, 30) == when
    assert ttl_left(answer, NOW, 30) == max(0, int(answer.expires_at - NOW))


# -- the local registry against a DNS registry zone -------------------------------------------


def _jurisdiction(id_: str, area: tuple[float, float, float, float]) -> Jurisdiction:
    endpoint = Endpoint(f"https://{id_}/open311/v2/")
    return Jurisdiction(id=id_, name=id_, endpoints=(endpoint,)).with_boundary(box(*area))


COUNTY = _jurisdiction("county.example", (0, 0, 4, 4))
STATE = _jurisdiction("state.example", (0, 0, 10, 10))
CITY = _jurisdiction("city.example", (1, 1, 2, 2))  # known only to DNS
FAR = _jurisdiction("far.example", (20, 20, 21, 21))  # listed in the cell, covers elsewhere
LOCAL = Resolver([COUNTY, STATE])


def _decided(local: Answer, found: list[Jurisdiction]) -> Answer:
    """What the driver does with the facts: the core decides over both sets, the rule picks."""
    combined = Resolver([*covering(local), *found]).resolve(local.lat, local.long, local.concern)
    return local_or_dns(local, combined)


ZONE_CASES = [
    # inside the city only DNS knows: the city beats the local county
    (1.5, 1.5, [CITY], "city.example", ["county.example", "state.example"]),
    # in the county outside the city: the local answer stands
    (3.0, 3.0, [CITY], "county.example", ["state.example"]),
    # DNS lists a domain whose boundary does not cover the point: the local answer stands
    (1.5, 1.5, [FAR], "county.example", ["state.example"]),
    # nothing local covers the point; DNS finds the one that does
    (20.5, 20.5, [FAR], "far.example", []),
    # nobody covers the point at all
    (30.0, 30.0, [FAR], None, []),
]


@pytest.mark.parametrize(("lat", "long", "found", "chosen", "alternatives"), ZONE_CASES)
def test_a_city_found_in_dns_beats_the_local_county(
    lat: float, long: float, found: list[Jurisdiction], chosen: str | None, alternatives: list[str]
) -> None:
    local = LOCAL.resolve(lat, long)
    answer = _decided(local, found)
    assert (answer.jurisdiction.id if answer.jurisdiction else None) == chosen
    assert [c.jurisdiction.id for c in answer.decision.alternatives] == alternatives
    if chosen is None or chosen in {j.id for j in covering(local)}:
        assert answer is local  # the local answer, with its own facts, is kept as it was


MODES = [
    # always: the zone is read even where the local registry covers the point
    ("always", 1.5, 1.5, True),
    ("always", 30.0, 30.0, True),
    # uncovered: only where nothing local covers the point
    ("uncovered", 1.5, 1.5, False),
    ("uncovered", 30.0, 30.0, True),
]


@pytest.mark.parametrize(("mode", "lat", "long", "asks"), MODES)
def test_when_the_registry_zone_is_read(mode: str, lat: float, long: float, asks: bool) -> None:
    assert asks_zone(registry_mode(mode), LOCAL.resolve(lat, long)) is asks


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(InvalidInput, match="always, uncovered"):
        registry_mode("sometimes")


COUNTS = [
    # a domain the local registry lacks counts
    (CITY, {"county.example"}, True),
    # a domain the local registry has (by id) is left to the local copy
    (COUNTY, {"county.example"}, False),
    # a candidate that could not be used is kept, so the answer can say why
    (None, {"county.example"}, True),
]


@pytest.mark.parametrize(("candidate", "local_ids", "counts"), COUNTS)
def test_which_dns_candidates_count(
    candidate: Jurisdiction | None, local_ids: set[str], counts: bool
) -> None:
    assert counts_from_dns(candidate, local_ids) is counts


# -- the one endpoint rule -------------------------------------------------------------------

PROD = Endpoint("https://a.example/v2/")
TEST = Endpoint("https://test.example/v2/", type="test")
HTML = Endpoint("https://html.example/v2/", formats=("text/html",))
OLD = Endpoint("https://old.example/v2/", deprecated=True)
OTHER = Endpoint("https://other.example/v3/", specification="http://example.com/other")

ENDPOINTS = [
    # production before test, whatever the order
    ([TEST, PROD], PROD, [TEST]),
    # a format we parse before one we do not
    ([HTML, PROD], PROD, [HTML]),
    # deprecated and other specifications last, never chosen
    ([OLD, OTHER, TEST], TEST, [OLD, OTHER]),
    ([OLD, OTHER], None, [OLD, OTHER]),
    # nothing listed
    ([], None, []),
    # ties keep the given order
    ([PROD, Endpoint("https://b.example/v2/")], PROD, [Endpoint("https://b.example/v2/")]),
    # one alone: chosen when current, never when not (the rule's shortcut for a single one)
    ([TEST], TEST, []),
    ([HTML], HTML, []),
    ([OLD], None, [OLD]),
    ([OTHER], None, [OTHER]),
]


@pytest.mark.parametrize(("endpoints", "chosen", "others"), ENDPOINTS)
def test_one_endpoint_rule_for_documents_and_jurisdictions(
    endpoints: list[Endpoint], chosen: Endpoint | None, others: list[Endpoint]
) -> None:
    assert choose_endpoint(endpoints) == (chosen, tuple(others))
    assert Jurisdiction("j", "J", endpoints=tuple(endpoints)).endpoint == chosen
    document = DiscoveryDocument(
        None, None, "", "", tuple(endpoints), (None,) * len(endpoints), None, (), "json"
    )
    assert document.choose() == (chosen, tuple(others))
    assert all(e.specification == GEOREPORT_V2 for e in (chosen,) if e is not None)
