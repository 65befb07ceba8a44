"""The decision core, with no I/O: synthetic jurisdictions laid out so every rule is exercised."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Polygon, box

from common.errors import InvalidCoordinates, InvalidInput, UnknownJurisdiction
from common.models import Answer, Endpoint, Fallback, Jurisdiction, Service
from resolver.core.decide import Resolver, check_point, clean_concern, parse_coordinate


def _jurisdiction(
    id_: str,
    boundary: Polygon | MultiPolygon | None,
    services: list[Service] | None = None,
    endpoint: bool = True,
) -> Jurisdiction:
    endpoints = (Endpoint(url=f"https://{id_}.example/open311/v2/"),) if endpoint else ()
    return Jurisdiction(
        id=id_,
        name=id_.title(),
        endpoints=endpoints,
        services=None if services is None else tuple(services),
    ).with_boundary(boundary)


POTHOLE = Service("POT-1", "Pothole", keywords=("road", "asphalt"), group="Streets")
GRAFFITI = Service("GRF", "Graffiti removal", group="Sanitation")
STREETLIGHT = Service("STL", "Street light out", group="Lighting")

JURISDICTIONS = [
    # a city inside a county inside a state; the city knows its services, the county does not
    _jurisdiction("state", box(0, 0, 10, 10), [STREETLIGHT]),
    _jurisdiction("county", box(0, 0, 4, 4)),
    _jurisdiction("city", box(1, 1, 2, 2), [POTHOLE, GRAFFITI]),
    # two equal squares sharing the border long=21
    _jurisdiction("west", box(20, 0, 21, 1)),
    _jurisdiction("east", box(21, 0, 22, 1)),
    # four squares sharing the vertex (lat=1, long=31)
    _jurisdiction("q1", box(30, 0, 31, 1)),
    _jurisdiction("q2", box(31, 0, 32, 1)),
    _jurisdiction("q3", box(30, 1, 31, 2)),
    _jurisdiction("q4", box(31, 1, 32, 2)),
    # a square with a square hole
    _jurisdiction(
        "donut", Polygon(box(40, 0, 44, 4).exterior.coords, [box(41, 1, 43, 3).exterior.coords])
    ),
    # a Fiji-like jurisdiction split at the antimeridian
    _jurisdiction("fiji", MultiPolygon([box(179, -18, 180, -16), box(-180, -18, -179, -16)])),
    # responsible, but publishes no endpoint
    _jurisdiction("silent", box(60, 0, 61, 1), endpoint=False),
    # listed without a boundary: never found by location
    _jurisdiction("nowhere", None),
]


@pytest.fixture(scope="module")
def resolver() -> Resolver:
    return Resolver(JURISDICTIONS)


CASES = [
    # inside the city: the most specific wins, the county and state are alternatives
    (1.5, 1.5, None, "city", ["county", "state"], None),
    # the city's services list offers potholes: verified
    (1.5, 1.5, "pothole", "city", ["county", "state"], None),
    # the city refuses noise, the county's services are unknown: the county, unverified
    (1.5, 1.5, "noise", "county", ["city", "state"], None),
    # on the city's border: still the city (covers, not contains)
    (1.5, 1.0, None, "city", ["county", "state"], None),
    # on the city's corner vertex
    (2.0, 2.0, None, "city", ["county", "state"], None),
    # in the county outside the city
    (3.0, 3.0, "pothole", "county", ["state"], None),
    # only the state covers, and its services list has no pothole: nobody offers it
    (6.0, 6.0, "pothole", None, ["state"], "concern_not_offered"),
    # only the state covers, and it offers street lights
    (6.0, 6.0, "street light", "state", [], None),
    # on the border between two equal squares: both cover, the tie goes to the smaller id
    (0.5, 21.0, None, "east", ["west"], None),
    # on a shared vertex of four squares: all four cover; the two nearer the pole are smaller
    # on the ground (cos(latitude)), and of those the smaller id wins
    (1.0, 31.0, None, "q3", ["q1", "q2", "q4"], None),
    # inside the hole: nobody
    (2.0, 42.0, None, None, [], "no_jurisdiction"),
    # on the hole's edge: the donut covers its own boundary
    (1.0, 42.0, None, "donut", [], None),
    # in the ring of the donut
    (0.5, 40.5, None, "donut", [], None),
    # across the antimeridian, east side
    (-17.0, 179.5, None, "fiji", [], None),
    # across the antimeridian, west side
    (-17.0, -179.5, None, "fiji", [], None),
    # on the antimeridian itself, written as +180 and as -180
    (-17.0, 180.0, None, "fiji", [], None),
    (-17.0, -180.0, None, "fiji", [], None),
    # outside everything
    (50.0, 50.0, None, None, [], "no_jurisdiction"),
    # responsible but without an endpoint
    (0.5, 60.5, None, "silent", [], "no_endpoint"),
]


@pytest.mark.parametrize(("lat", "long", "concern", "chosen", "alternatives", "reason"), CASES)
def test_decision_table(
    resolver: Resolver,
    lat: float,
    long: float,
    concern: str | None,
    chosen: str | None,
    alternatives: list[str],
    reason: str | None,
) -> None:
    answer = resolver.resolve(lat, long, concern)
    assert (answer.jurisdiction.id if answer.jurisdiction else None) == chosen
    assert sorted(c.jurisdiction.id for c in answer.decision.alternatives) == sorted(alternatives)
    assert answer.reason == reason
    if chosen is not None and reason is None:
        assert answer.endpoint is not None
        assert answer.endpoint.url == f"https://{chosen}.example/open311/v2/"
        assert answer.jurisdiction is not None
        assert answer.to_dict()["boundary_generation"] == answer.jurisdiction.boundary_generation


def test_concern_statuses_and_why(resolver: Resolver) -> None:
    verified = resolver.resolve(1.5, 1.5, "Pothole")
    assert verified.concern_status == "verified"
    assert [m.service.service_code for m in verified.decision.chosen.matches] == ["POT-1"]
    unverified = resolver.resolve(1.5, 1.5, "noise")
    assert unverified.concern_status == "unverified"
    assert "unverified" in unverified.message()
    refused = {c.jurisdiction.id: c for c in unverified.decision.alternatives}["city"]
    assert refused.concern_status == "not_offered"
    assert "noise" in (refused.why_not or "")
    less_specific = {c.jurisdiction.id: c for c in verified.decision.alternatives}["county"]
    assert "less specific than City" in (less_specific.why_not or "")


def test_fallback_says_so_plainly() -> None:
    fallback = Fallback("https://adhoc.example/open311/v2/", "Ad hoc 311")
    with_fallback = Resolver(JURISDICTIONS, fallback=fallback)
    answer = with_fallback.resolve(50.0, 50.0)
    assert answer.is_fallback and answer.found
    assert answer.endpoint is not None and answer.endpoint.url == fallback.url
    assert answer.to_dict()["fallback"] is True
    assert answer.to_dict()["reason"] == "no_jurisdiction"
    assert any(p.source == "fallback" for p in answer.decision.provenance)
    # the concern case names the concern
    assert "pothole" in with_fallback.resolve(6.0, 6.0, "pothole").message()
    # the jurisdiction without endpoint keeps being named, the fallback takes the report
    silent = with_fallback.resolve(0.5, 60.5)
    assert silent.jurisdiction is not None and silent.jurisdiction.id == "silent"
    assert silent.is_fallback

    no_fallback = Resolver(JURISDICTIONS).resolve(50.0, 50.0)
    assert not no_fallback.found and not no_fallback.is_fallback
    assert "no fallback service is configured" in no_fallback.message()


def test_answers_are_deterministic_and_carry_generations(resolver: Resolver) -> None:
    again = Resolver(list(reversed(JURISDICTIONS)))
    for lat, long, concern, *_ in CASES:
        a, b = resolver.resolve(lat, long, concern), again.resolve(lat, long, concern)
        assert a.to_dict() == b.to_dict()
    assert resolver.index_generation == again.index_generation
    moved = [j if j.id != "city" else j.with_boundary(box(1, 1, 2.5, 2)) for j in JURISDICTIONS]
    assert Resolver(moved).index_generation != resolver.index_generation


def test_batch_agrees_with_single_answers(resolver: Resolver) -> None:
    rng = np.random.default_rng(7)
    lats = np.concatenate([rng.uniform(-20, 12, 3000), [case[0] for case in CASES]])
    longs = np.concatenate([rng.uniform(-5, 65, 3000), [case[1] for case in CASES]])
    concerns = [None, "pothole", "noise", "street light"] * (len(lats) // 4) + [None] * (
        len(lats) % 4
    )
    batch = resolver.resolve_many(lats, longs, concerns)
    assert len(batch) == len(lats)
    for i in range(len(lats)):
        single = resolver.resolve(float(lats[i]), float(longs[i]), concerns[i])
        got = batch[i]
        assert isinstance(got, Answer)
        assert got.to_dict() == single.to_dict()


def test_batch_keeps_bad_points_in_place(resolver: Resolver) -> None:
    batch = resolver.resolve_many(
        [1.5, 95.0, math.nan, 1.5, 1.5],
        [1.5, 0.0, 0.0, 1.5, 1.5],
        [None, None, None, "x" * 201, ""],
    )
    answers = list(batch)
    assert isinstance(answers[0], Answer) and isinstance(answers[4], Answer)
    assert isinstance(answers[1], InvalidCoordinates) and "outside" in answers[1].detail
    assert isinstance(answers[2], InvalidCoordinates) and "finite" in answers[2].detail
    assert isinstance(answers[3], InvalidInput) and "at most" in answers[3].detail
    assert [type(batch[i]) for i in range(5)] == [type(a) for a in answers]
    # columnar: the two good points share one decision
    assert batch.decision_index.tolist()[0] == batch.decision_index.tolist()[4]
    assert batch.decision_index.tolist()[1:4] == [-1, -1, -1]


def test_unknown_jurisdiction_and_duplicate_ids(resolver: Resolver) -> None:
    assert resolver.jurisdiction("city").name == "City"
    with pytest.raises(UnknownJurisdiction):
        resolver.jurisdiction("atlantis")
    with pytest.raises(InvalidInput, match="appears twice"):
        Resolver([JURISDICTIONS[0], JURISDICTIONS[0]])


def test_a_jurisdiction_without_boundary_is_listed_but_never_found(resolver: Resolver) -> None:
    assert "nowhere" in resolver
    rng = np.random.default_rng(1)
    batch = resolver.resolve_many(rng.uniform(-90, 90, 2000), rng.uniform(-180, 180, 2000))
    assert all(
        not isinstance(a, Answer) or a.jurisdiction is None or a.jurisdiction.id != "nowhere"
        for a in batch
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("37.7793", 37.7793),  # plain decimal
        (" -122.4193 ", -122.4193),  # spaces around are forgiven
        ("1e1", 10.0),  # exponent notation is a decimal number
        ("+5", 5.0),  # explicit sign
        (12, 12.0),  # numbers from JSON
    ],
)
def test_parse_coordinate_accepts(text: str | int, expected: float) -> None:
    assert parse_coordinate(text, "lat") == expected


@pytest.mark.parametrize(
    "text",
    [
        "",  # empty
        None,  # missing
        "abc",  # not a number
        "nan",  # NaN is not a place
        "NaN",  # in any case
        "inf",  # nor is infinity
        "-Infinity",  # spelled out
        "1_000",  # Python digit separators are not decimal degrees
        "0x10",  # hex
        "37,7793",  # a decimal comma
        "37.7793N",  # hemisphere letters are not parsed
        "\u0663\u0667.5",  # digits of other scripts, which float() would take
        "1e999",  # overflows to infinity
        True,  # JSON true is not a number
        math.nan,  # NaN from JSON-like input
    ],
)
def test_parse_coordinate_refuses(text: str | float | None) -> None:
    with pytest.raises(InvalidCoordinates):
        parse_coordinate(text, "lat")


@pytest.mark.parametrize(
    ("lat", "long", "ok"),
    [
        (90.0, 180.0, True),  # the corners of the range are valid
        (-90.0, -180.0, True),
        (90.000001, 0.0, False),  # just past the pole
        (-91.0, 0.0, False),
        (0.0, 180.5, False),  # past the antimeridian
        (-122.4193, 37.7793, False),  # swapped San Francisco: refused as given, never swapped
        (-75.16, 39.95, True),  # swapped Philadelphia: in range, answered as given
        (math.inf, 0.0, False),
    ],
)
def test_check_point(lat: float, long: float, ok: bool) -> None:
    if ok:
        check_point(lat, long)
    else:
        with pytest.raises(InvalidCoordinates):
            check_point(lat, long)


def test_clean_concern() -> None:
    assert clean_concern("  pothole ") == "pothole"
    assert clean_concern("   ") is None
    with pytest.raises(InvalidInput, match="at most"):
        clean_concern("x" * 201)


def test_the_rank_is_area_then_id_as_python_sorts_them() -> None:
    # Ranked for all jurisdictions at once (numpy): the order must be Python's on (area, id),
    # ids compared by code point, equal areas included, and no boundary last.
    rng = random.Random(7)
    names = ["a", "B", "é", "z1", "z10", "z2", "Ω", "ä", "_", "0"]
    jurisdictions = [
        Jurisdiction(
            f"{name}{i}",
            name,
            boundary=None if i % 7 == 0 else box(0, 0, size, size),
            endpoints=(Endpoint("https://x.example/v2/"),),
        )
        for i, (name, size) in enumerate(
            (rng.choice(names), rng.choice([0.5, 1.0, 2.0])) for _ in range(200)
        )
    ]
    resolver = Resolver(jurisdictions)
    expected = sorted(
        range(len(jurisdictions)),
        key=lambda p: (
            jurisdictions[p].boundary.area if jurisdictions[p].boundary else math.inf,
            jurisdictions[p].id,
        ),
    )
    assert sorted(range(len(jurisdictions)), key=lambda p: resolver._rank[p]) == expected


def test_a_batch_leaves_the_decisions_kept_for_single_points() -> None:
    # 64 side-by-side cells, a cache of 8: the batch takes 64 decisions, more than the cache holds
    cells = [_jurisdiction(f"cell-{i}", box(i, 0, i + 1, 1)) for i in range(64)]
    resolver = Resolver(cells, decision_cache_size=8)
    first = resolver.resolve(0.5, 0.5)
    batch = resolver.resolve_many([0.5] * 64, [i + 0.5 for i in range(64)])
    assert [a.jurisdiction.id for a in batch] == [f"cell-{i}" for i in range(64)]  # type: ignore[union-attr]
    assert batch[0].decision is first.decision  # type: ignore[union-attr]  # read from the cache
    assert resolver.resolve(0.25, 0.75).decision is first.decision  # still kept
    assert resolver.resolve(0.5, 10.5).decision is not batch[10].decision  # type: ignore[union-attr]


def test_a_replaced_resolver_answers_as_one_built_afresh(resolver: Resolver) -> None:
    # replace takes over what did not change (positions; ranks and the generation when no
    # boundary moved): what it takes over must be what a fresh build works out.
    by_id = {j.id: j for j in JURISDICTIONS}
    renamed = dataclasses.replace(by_id["city"], name="Town", services=(STREETLIGHT,))
    # The county shrinks to inside the city: there, it is now the more specific of the two.
    shrunk = by_id["county"].with_boundary(box(1.2, 1.2, 1.6, 1.6))
    points = [(lat, long, concern) for lat, long, concern, *_ in CASES] + [
        (1.4, 1.4, None),
        (1.4, 1.4, "street light"),
        (1.8, 1.8, None),
    ]
    for changes, removed in (([renamed], []), ([shrunk], []), ([shrunk, renamed], ["q2"])):
        replaced = resolver.replace(changes, removed=removed)
        given = {j.id: j for j in changes}
        fresh = Resolver([given.get(j.id, j) for j in JURISDICTIONS if j.id not in removed])
        assert replaced.index_generation == fresh.index_generation
        for lat, long, concern in points:
            expected = fresh.resolve(lat, long, concern).to_dict()
            assert replaced.resolve(lat, long, concern).to_dict() == expected
    chosen = resolver.replace([shrunk]).resolve(1.4, 1.4).jurisdiction
    assert chosen is not None and chosen.id == "county"
