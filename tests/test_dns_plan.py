"""The publish plan as a pure function of what the zone holds, what the registry wants and the
time: no server. What the zone holds is made the way a transfer delivers it (records as text),
from the records ``zone export`` writes; the AXFR parser is checked on messages dnspython builds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import dns.tsig
import pytest
from shapely.geometry import box

from common.models import Endpoint, Jurisdiction
from discovery.axfr import AxfrReader, Malformed, Record
from discovery.dns_publish import Held, Planner
from discovery.dns_records import txt_zone_text
from discovery.zone import ZoneOptions, cells_root, marker_strings, zone_records

ZONE = "plan.test"
SOA = f"ns.{ZONE}. hostmaster.{ZONE}. 1 3600 600 1209600 60"
NOW = 1_800_000_000.0


def _city(number: int, endpoint: str | None = None) -> Jurisdiction:
    west = -100.0 + number
    return Jurisdiction(
        id=f"c{number}",
        name=f"City {number}",
        domain=f"c{number}.{ZONE}",
        discovery_url=f"https://c{number}.{ZONE}/discovery.json",
        endpoints=(Endpoint(endpoint or f"https://c{number}.{ZONE}/open311/v2/"),),
        boundary=box(west, 40.0, west + 0.9, 40.9),
    )


CITIES = [_city(n) for n in range(6)]


def _options(generation: str = "g1", **changes: object) -> ZoneOptions:
    options = ZoneOptions(
        ZONE,
        ttl=60,
        boundary_url="https://registry.example/{id}.geojson",
        generation=generation,
    )
    return replace(options, **changes)  # type: ignore[arg-type]


def _transfer(
    jurisdictions: Sequence[Jurisdiction],
    options: ZoneOptions,
    *,
    since: float = NOW - 3600,
    extra: Iterable[Record] = (),
) -> list[Record]:
    """The records a transfer of a zone published from ``jurisdictions`` reads: the registry's,
    the generation's marker (live since ``since``), and what else the zone holds."""
    numbers = {"TXT": 16, "PTR": 12}
    records = [
        Record(r.name, numbers[r.rdtype], r.ttl, r.rdata)
        for r in zone_records(jurisdictions, options)
    ]
    marker = txt_zone_text(marker_strings(int(since) - 60, int(since)))
    records.append(Record(cells_root(f"{ZONE}.", options.generation), 16, 60, marker))
    records.append(Record(f"ns.{ZONE}.", 1, 60, None))  # not managed: ignored
    return records + list(extra)


def _held(planner: Planner, records: list[Record]) -> Held:
    return planner.held(SOA, records)


def test_the_zone_as_wanted_plans_nothing() -> None:
    planner = Planner(ZONE)
    held = _held(planner, _transfer(CITIES, _options()))
    plan = planner.plan(held, planner.wanted(CITIES, _options()), NOW)
    assert plan.empty and plan.live == "g1" and plan.soa == SOA


def test_an_empty_zone_gets_a_first_generation_staged_then_switched_to() -> None:
    planner = Planner(ZONE)
    plan = planner.plan(Held(soa=SOA), planner.wanted(CITIES, _options()), NOW)
    assert [s.kind for s in plan.steps] == ["stage", "switch"]
    assert plan.switch_to == "g1" and plan.live is None
    switch = plan.steps[1]
    # the pointer must still be absent when the switch arrives
    assert (f"_cells.{ZONE}.", "TXT", ()) in switch.requires
    added = {c.name for c in plan.changes if c.action == "add"}
    assert {f"_open311.c{n}.{ZONE}." for n in range(6)} <= added


def test_one_changed_endpoint_is_one_record_replaced_in_place() -> None:
    planner = Planner(ZONE)
    held = _held(planner, _transfer(CITIES, _options()))
    moved = [*CITIES[:2], _city(2, "https://moved.example/v2/"), *CITIES[3:]]
    plan = planner.plan(held, planner.wanted(moved, _options()), NOW)
    name = f"_open311.c2.{ZONE}."
    assert [(s.kind, len(s.changes)) for s in plan.steps] == [("update", 2)]
    assert [(c.action, c.name) for c in plan.changes] == [("delete", name), ("add", name)]
    assert "moved.example" in (plan.changes[1].rdata or "")


def test_a_new_cell_depth_goes_through_a_new_generation() -> None:
    planner = Planner(ZONE)
    held = _held(planner, _transfer(CITIES, _options()))
    deeper = replace(_options(), scheme=replace(_options().scheme, max_depth=5))
    plan = planner.plan(held, planner.wanted(CITIES, deeper), NOW)
    assert plan.switch_to == "g2" and plan.live == "g1"
    # the generation it retires is not collected by the publish that retires it
    assert plan.collected == [] and plan.steps[-1].kind == "switch"


@pytest.mark.parametrize(
    ("age", "collected"),
    [
        (10.0, []),  # retired 10 s ago: readers may still hold the old pointer
        (121.0, [""]),  # retired longer than twice the TTL ago: deleted
    ],
)
def test_a_retired_generation_is_collected_after_the_hold(age: float, collected: list[str]) -> None:
    planner = Planner(ZONE)
    # cells from before generations (under _cells directly) next to the live g1
    old = [
        Record(f"x.y.{cells_root(f'{ZONE}.', None)}", 12, 60, f"c0.{ZONE}."),
    ]
    records = _transfer(CITIES, _options(), since=NOW - age, extra=old)
    plan = planner.plan(_held(planner, records), planner.wanted(CITIES, _options()), NOW)
    assert plan.collected == collected
    assert bool(plan.steps) == bool(collected)


def test_a_staging_left_by_a_failed_publish_is_collected_once_stale() -> None:
    planner = Planner(ZONE, staging_timeout=600)
    staged = Record(cells_root(f"{ZONE}.", "g2"), 16, 60, txt_zone_text(marker_strings(int(NOW))))
    cell = Record(f"a.b.{cells_root(f'{ZONE}.', 'g2')}", 12, 60, f"c1.{ZONE}.")
    records = _transfer(CITIES, _options(), extra=[staged, cell])
    wanted = planner.wanted(CITIES, _options())
    assert planner.plan(_held(planner, records), wanted, NOW + 60).collected == []
    assert planner.plan(_held(planner, records), wanted, NOW + 601).collected == ["g2"]


# -- the AXFR parser, on messages dnspython builds ------------------------------------------------


def _axfr_messages(
    records: list[str], key: dns.tsig.Key | None
) -> tuple[dns.message.Message, list[bytes]]:
    query = dns.message.make_query(ZONE, dns.rdatatype.AXFR)
    if key is not None:
        query.use_tsig(key)
    query.to_wire()  # sets the request MAC
    wires = []
    ctx = None
    soa = dns.rrset.from_text(f"{ZONE}.", 60, "IN", "SOA", SOA)
    chunks = [[soa, *records[:2]], records[2:], [soa]]
    for chunk in chunks:
        response = dns.message.make_response(query)
        response.id = query.id
        for item in chunk:
            rrset = (
                item
                if isinstance(item, dns.rrset.RRset)
                else dns.rrset.from_text(*item.split(" ", 4))
            )
            response.answer.append(rrset)
        if key is not None:
            response.use_tsig(key, original_id=query.id)
            response.request_mac = query.mac
        wire = response.to_wire(multi=True, tsig_ctx=ctx)
        ctx = response.tsig_ctx
        wires.append(wire)
    return query, wires


RECORDS = [
    f'_open311.c1.{ZONE}. 60 IN TXT "v=open311-1" "n=Caf\\195\\169 \\"du\\" Port"',
    f"x.y.g1._cells.{ZONE}. 60 IN PTR C1.{ZONE}.",
    f"ns.{ZONE}. 60 IN A 127.0.0.1",
]


@pytest.mark.parametrize("signed", [False, True])
def test_the_axfr_reader_reads_what_dnspython_writes(signed: bool) -> None:
    key = dns.tsig.Key("k.", "Z2Vvd2ViIHRlc3Qgc2VjcmV0LCAzMiBieXRlcy4uLiE=") if signed else None
    query, wires = _axfr_messages(RECORDS, key)
    reader = AxfrReader(query, key)
    for wire in wires:
        reader.feed(wire)
    assert reader.done and reader.soa == SOA
    assert reader.records == [
        Record(f"_open311.c1.{ZONE}.", 16, 60, '"v=open311-1" "n=Caf\\195\\169 \\"du\\" Port"'),
        Record(f"x.y.g1._cells.{ZONE}.", 12, 60, f"c1.{ZONE}."),
        Record(f"ns.{ZONE}.", 1, 60, None),
    ]


def test_the_axfr_reader_refuses_a_forged_or_unsigned_message() -> None:
    key = dns.tsig.Key("k.", "Z2Vvd2ViIHRlc3Qgc2VjcmV0LCAzMiBieXRlcy4uLiE=")
    query, wires = _axfr_messages(RECORDS, key)
    forged = bytearray(wires[0])
    forged[forged.index(b"v=open311-1")] ^= 1
    with pytest.raises(dns.tsig.BadSignature):
        AxfrReader(query, key).feed(bytes(forged))
    _query, unsigned = _axfr_messages(RECORDS, None)
    with pytest.raises(Malformed, match="requires a TSIG"):
        AxfrReader(query, key).feed(_with_id(unsigned[0], query.id))
    with pytest.raises(Malformed):
        AxfrReader(query, key).feed(wires[0][:40])  # cut inside a record


def _with_id(wire: bytes, ident: int) -> bytes:
    return ident.to_bytes(2, "big") + wire[2:]


def test_a_name_pointing_forward_is_refused() -> None:
    query, wires = _axfr_messages(RECORDS, None)
    wire = bytearray(wires[0])
    # the answer's first owner name (after the 12-byte header and the question) made a pointer
    # to itself: a loop a careless parser would follow forever
    question_end = 12 + len(dns.name.from_text(ZONE).to_wire()) + 4
    wire[question_end : question_end + 2] = (0xC000 | question_end).to_bytes(2, "big")
    with pytest.raises(Malformed, match="backwards"):
        AxfrReader(query).feed(bytes(wire))
