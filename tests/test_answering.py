"""The driver: facts refreshed only when the decision needs them, once per jurisdiction, with the
spatial index shared. The source here is a small in-memory FactSource (a real implementation of the
protocol, standing in for DNS and discovery, which have their own tests against real servers)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from shapely.geometry import box

from common.models import Endpoint, Jurisdiction, Provenance, Service
from resolver.core.decide import Resolver
from resolver.sources.answering import Answerer


class ServicesFromMemory:
    """Knows each jurisdiction's services list; facts expire ``ttl`` seconds after fetching."""

    name = "memory"

    def __init__(self, lists: dict[str, list[Service]], ttl: float) -> None:
        self.lists = lists
        self.ttl = ttl
        self.fetched: list[str] = []
        self.now = 1000.0

    def needs(self, jurisdiction: Jurisdiction, now: float) -> bool:
        if jurisdiction.id not in self.lists:
            return False
        expiries = [
            float(p.expires) for p in jurisdiction.provenance if p.fact == "services" and p.expires
        ]
        return jurisdiction.services is None or not expiries or max(expiries) <= now

    async def refresh(self, jurisdiction: Jurisdiction) -> Jurisdiction:
        await asyncio.sleep(0.01)  # let concurrent callers pile up
        self.fetched.append(jurisdiction.id)
        fact = Provenance(
            "services", "discovery", f"memory:{jurisdiction.id}", expires=str(self.now + self.ttl)
        )
        kept = tuple(p for p in jurisdiction.provenance if p.fact != "services")
        return replace(
            jurisdiction, services=tuple(self.lists[jurisdiction.id]), provenance=(*kept, fact)
        )


def _resolver() -> Resolver:
    city = Jurisdiction("city", "City", endpoints=(Endpoint("https://city.example/v2/"),))
    county = Jurisdiction("county", "County", endpoints=(Endpoint("https://county.example/v2/"),))
    return Resolver([city.with_boundary(box(0, 0, 1, 1)), county.with_boundary(box(0, 0, 5, 5))])


async def test_facts_are_fetched_on_demand_once_and_then_cached() -> None:
    source = ServicesFromMemory(
        {"city": [Service("P", "Pothole")], "county": [Service("N", "Noise")]}, ttl=60
    )
    answerer = Answerer(_resolver(), [source], clock=lambda: source.now)
    index = answerer.resolver.index
    first = await answerer.answer(0.5, 0.5, "noise")
    # the city's list says it does not take noise: the county, verified, answers
    assert first.jurisdiction is not None and first.jurisdiction.id == "county"
    assert first.concern_status == "verified"
    assert sorted(source.fetched) == ["city", "county"]
    second = await answerer.answer(0.5, 0.5, "noise")
    # the same answer, now from what was fetched: provenance says so
    assert {k: v for k, v in second.to_dict().items() if k != "provenance"} == {
        k: v for k, v in first.to_dict().items() if k != "provenance"
    }
    assert [p.source for p in first.decision.provenance if p.fact == "services"] == ["discovery"]
    assert [p.source for p in second.decision.provenance if p.fact == "services"] == ["cache"]
    assert sorted(source.fetched) == ["city", "county"]  # served from what was fetched
    assert answerer.resolver.index is index  # no boundary changed: the index is shared
    source.now += 61  # expired: fetched again
    await answerer.answer(0.5, 0.5, "noise")
    assert sorted(source.fetched) == ["city", "city", "county", "county"]


async def test_concurrent_requests_share_one_refresh() -> None:
    source = ServicesFromMemory({"city": [Service("P", "Pothole")]}, ttl=60)
    updates: list[list[str]] = []
    answerer = Answerer(
        _resolver(),
        [source],
        clock=lambda: source.now,
        on_update=lambda js: updates.append([j.id for j in js]),
    )
    answers = await asyncio.gather(*(answerer.answer(0.5, 0.5, "pothole") for _ in range(20)))
    assert source.fetched == ["city"]
    assert updates == [["city"]]
    assert all(a.jurisdiction is not None and a.jurisdiction.id == "city" for a in answers[-1:])


async def test_a_changed_boundary_rebuilds_the_index() -> None:
    resolver = _resolver()
    moved = resolver.jurisdiction("city").with_boundary(box(2, 2, 3, 3))
    new = resolver.replace([moved])
    assert new.index is not resolver.index
    answer = new.resolve(2.5, 2.5)
    assert answer.jurisdiction is not None and answer.jurisdiction.id == "city"
    assert new.index_generation != resolver.index_generation


async def test_a_registry_update_during_a_refresh_loses_neither() -> None:
    source = ServicesFromMemory({"city": [Service("P", "Pothole")]}, ttl=60)
    answerer = Answerer(_resolver(), [source], clock=lambda: source.now)
    # Many new boundaries: the update's index is rebuilt in a worker thread for a while...
    towns = [
        Jurisdiction(f"town{i}", f"Town {i}").with_boundary(box(10 + i, 0, 10.9 + i, 0.9))
        for i in range(400)
    ]
    update = asyncio.create_task(answerer.update(towns, removed=["county"]))
    await asyncio.sleep(0)
    # ...while a refresh swaps in the city's services list.
    await answerer.refresh([answerer.resolver.jurisdiction("city")])
    await update
    resolver = answerer.resolver
    assert resolver.jurisdiction("city").services == (Service("P", "Pothole"),)
    assert "town399" in resolver and "county" not in resolver
    assert (await answerer.answer(0.5, 10.5)).jurisdiction.id == "town0"  # type: ignore[union-attr]
