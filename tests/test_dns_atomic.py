"""Publishes larger than one UPDATE are atomic for readers, on a real Knot DNS: the new cell
generation is staged beside the live one and switched to by one small UPDATE. A reader resolving
points from DNS alone between every two messages sees the old registry until the switch and the
new one after it, never a mix; a failure half-way leaves the old generation served; a retired
generation is collected once readers can no longer hold its pointer."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from dns_server import (
    TSIG_ALGORITHM,
    TSIG_NAME,
    TSIG_SECRET,
    DocumentServer,
    KnotServer,
    loopback_discovery,
)

from boundaries.cells import CellScheme
from common.models import Answer, Endpoint, Jurisdiction
from discovery.dns_publish import Plan, Publisher, PublishError, TsigKey
from discovery.zone import ZoneOptions
from resolver.cli.main import main
from resolver.core.decide import Resolver
from resolver.registry.documents import jurisdiction_to_feature
from resolver.sources.dns_registry import DnsDiscovery
from resolver.store import Store

ZONE = "atomic.test"
TTL = 60
STATES = ("32", "41")  # Nevada and Oregon: 53 counties
KEY = TsigKey(TSIG_NAME, TSIG_SECRET, TSIG_ALGORITHM)
OLD_SCHEME = CellScheme(max_depth=4, split_above=3)
NEW_SCHEME = CellScheme(max_depth=5, split_above=3)  # a new depth: the hardest change to mix

Summary = tuple[str | None, str | None, tuple[str | None, ...]]


@dataclass
class Registries:
    old: list[Jurisdiction]
    new: list[Jurisdiction]  # 3 counties gone, 4 with a new endpoint, cells one level deeper
    removed: list[Jurisdiction]
    documents: DocumentServer
    db: Path  # the old registry

    def options(self, scheme: CellScheme) -> ZoneOptions:
        return ZoneOptions(
            ZONE,
            ttl=TTL,
            scheme=scheme,
            boundary_url=f"{self.documents.base}/boundaries/{{id}}.geojson",
        )


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory, counties_db: Path) -> Iterator[Registries]:
    documents = DocumentServer().start()
    with Store(counties_db) as store:
        counties = [j for j in store.jurisdictions() if j.id[:2] in STATES]
    old = [
        replace(
            j,
            domain=f"{j.id}.{ZONE}",
            discovery_url=f"https://{j.id}.{ZONE}/discovery.json",
            endpoints=(Endpoint(f"https://{j.id}.{ZONE}/open311/v2/"),),
        )
        for j in counties
    ]
    for j in old:
        documents.documents[f"/boundaries/{j.id}.geojson"] = (
            "application/geo+json",
            orjson.dumps(jurisdiction_to_feature(j)),
        )
    removed = old[::20]
    changed = {j.id for j in old[3::12]} - {j.id for j in removed}
    new = [
        replace(j, endpoints=(Endpoint(f"https://moved.example/{j.id}/v2/"),))
        if j.id in changed
        else j
        for j in old
        if j not in removed
    ]
    db = tmp_path_factory.mktemp("atomic-registry") / "old.sqlite"
    with Store(db) as store:
        store.save(old, source="test: the old registry")
    yield Registries(old, new, removed, documents, db)
    documents.stop()


@pytest.fixture
def knot(tmp_path: Path, registries: Registries) -> Iterator[KnotServer]:
    """A fresh Knot per test, serving the old registry as ``geoweb zone export`` wrote it."""
    result = CliRunner().invoke(
        main,
        [
            "zone", "export", "--origin", ZONE, "--db", str(registries.db), "--no-embedded",
            "--ttl", str(TTL),
            "--nameserver-address", "127.0.0.1",
            "--cell-depth", str(OLD_SCHEME.max_depth), "--split-above",
            str(OLD_SCHEME.split_above), "--boundary-url",
            f"{registries.documents.base}/boundaries/{{id}}.geojson",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (tmp_path / "zone").write_text(result.stdout, encoding="utf-8")
    server = KnotServer(tmp_path / "knot", ZONE, tmp_path / "zone")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def reader(knot: KnotServer) -> AsyncIterator[DnsDiscovery]:
    async with loopback_discovery(knot, ZONE) as discovery:
        yield discovery


def _summary(answer: Answer) -> Summary:
    j = answer.jurisdiction
    return (
        j.domain if j else None,
        answer.endpoint.url if answer.endpoint else None,
        tuple(c.jurisdiction.domain for c in answer.decision.alternatives),
    )


def _points(registries: Registries) -> list[tuple[float, float]]:
    """Random points in the three states, and one inside every changed or removed county."""
    old = Resolver(registries.old)
    rng = np.random.default_rng(17)
    points: list[tuple[float, float]] = []
    while len(points) < 24:
        lat, long = float(rng.uniform(35.0, 46.2)), float(rng.uniform(-124.5, -114.1))
        if len(old.index.covering(lat, long)):
            points.append((lat, long))
    new_ids = {j.id: j for j in registries.new}
    for j in registries.old:
        if j.id not in new_ids or new_ids[j.id] != j:
            inside = j.boundary.representative_point()  # type: ignore[union-attr]
            points.append((inside.y, inside.x))
    return points


def _expected(
    jurisdictions: list[Jurisdiction], points: list[tuple[float, float]]
) -> list[Summary]:
    resolver = Resolver(jurisdictions)
    return [_summary(resolver.resolve(lat, long)) for lat, long in points]


async def _read_all(reader: DnsDiscovery, points: list[tuple[float, float]]) -> list[Summary]:
    """Every point resolved from DNS as it is now: the DNS cache is emptied first."""
    await reader.lookup.cache.flush()
    answers = await asyncio.gather(*(reader.answer(lat, long) for lat, long in points))
    return [_summary(a) for a in answers]


def _publisher(knot: KnotServer, **options: object) -> Publisher:
    return Publisher(knot.address, ZONE, KEY, port=knot.port, **options)  # type: ignore[arg-type]


async def _send_reading_between_messages(
    publisher: Publisher, plan: Plan, reader: DnsDiscovery, points: list[tuple[float, float]]
) -> list[tuple[str, list[Summary]]]:
    """Send the plan; after every message the server accepted, and before the next one is sent,
    the reader resolves every point. What it saw, with the kind of the message before it."""
    loop = asyncio.get_running_loop()
    seen: list[tuple[str, list[Summary]]] = []

    def between(_number: int, kind: str) -> None:
        future = asyncio.run_coroutine_threadsafe(_read_all(reader, points), loop)
        seen.append((kind, future.result(timeout=60)))

    await asyncio.to_thread(publisher.send, plan, on_message=between)
    return seen


def _pointer(knot: KnotServer) -> str:
    return knot.query(f"_cells.{ZONE}", "TXT").answer[0].to_text()


async def test_readers_see_the_old_registry_then_the_new_never_a_mix(
    knot: KnotServer, registries: Registries, reader: DnsDiscovery
) -> None:
    points = _points(registries)
    old, new = _expected(registries.old, points), _expected(registries.new, points)
    assert sum(a != b for a, b in zip(old, new, strict=True)) >= 7  # the switch is visible
    assert await _read_all(reader, points) == old
    publisher = _publisher(knot)
    plan = publisher.plan(registries.new, registries.options(NEW_SCHEME))
    assert plan.live == "g1" and plan.switch_to == "g2"
    messages = publisher.updates(plan)
    stage = sum(1 for s in plan.steps if s.kind == "stage")
    assert stage == 1 and len(messages) >= 4, plan.summary()
    seen = await _send_reading_between_messages(publisher, plan, reader, points)
    kinds = [kind for kind, _ in seen]
    assert kinds.count("stage") >= 3 and kinds.count("switch") == 1
    for kind, summaries in seen:
        if kind == "stage":
            assert summaries == old, "a reader saw the new cells before the switch"
        else:
            assert summaries == new, f"a reader saw a mix after the {kind} message"
    assert "gen=g2" in _pointer(knot)
    # run again: nothing to send (g1 is kept for readers that still hold its pointer)
    again = publisher.plan(registries.new, registries.options(NEW_SCHEME))
    assert again.empty and again.kept == ["g1"], again.summary()


async def test_a_small_change_is_one_update_in_place(
    knot: KnotServer, registries: Registries, reader: DnsDiscovery
) -> None:
    points = _points(registries)
    one = registries.old[7]
    changed = [
        replace(j, endpoints=(Endpoint("https://one.example/v2/"),)) if j.id == one.id else j
        for j in registries.old
    ]
    publisher = _publisher(knot)
    plan = publisher.plan(changed, registries.options(OLD_SCHEME))
    assert [s.kind for s in plan.steps] == ["update"] and plan.switch_to is None
    assert len(publisher.updates(plan)) == 1
    assert publisher.send(plan) == 1
    assert "gen=g1" in _pointer(knot)
    assert await _read_all(reader, points) == _expected(changed, points)


async def test_a_failure_half_way_leaves_the_old_generation_served(
    knot: KnotServer, registries: Registries, reader: DnsDiscovery
) -> None:
    points = _points(registries)
    old, new = _expected(registries.old, points), _expected(registries.new, points)
    publisher = _publisher(knot)
    plan = publisher.plan(registries.new, registries.options(NEW_SCHEME))
    assert len(publisher.updates(plan)) >= 4

    def die(number: int, kind: str) -> None:
        if number == 2:
            assert kind == "stage"
            knot.stop()  # the server goes away half-way through the staging

    with pytest.raises(PublishError, match="generation g1 is still the one served"):
        await asyncio.to_thread(publisher.send, plan, on_message=die)
    knot.start()
    assert "gen=g1" in _pointer(knot)
    assert await _read_all(reader, points) == old
    # the partial staging of g2 is left alone while it may still be someone's publish in
    # progress, and the next publish stages g3 beside it
    retry = publisher.plan(registries.new, registries.options(NEW_SCHEME))
    assert retry.switch_to == "g3" and "g2" in retry.kept and not retry.collected
    # once it is older than the staging timeout, it is collected
    patient = _publisher(knot, staging_timeout=0.0)
    retry = patient.plan(registries.new, registries.options(NEW_SCHEME))
    assert retry.switch_to == "g3" and retry.collected == ["g2"], retry.summary()
    patient.send(retry)
    assert await _read_all(reader, points) == new
    assert not knot.query(f"g2._cells.{ZONE}", "TXT").answer  # collected


async def test_a_retired_generation_is_collected_after_twice_the_ttl(
    knot: KnotServer, registries: Registries, reader: DnsDiscovery
) -> None:
    points = _points(registries)
    new = _expected(registries.new, points)
    publisher = _publisher(knot)
    publisher.send(publisher.plan(registries.new, registries.options(NEW_SCHEME)))
    gone = f"_open311.{registries.removed[0].domain}"
    assert set(publisher.read().trees) == {"g1", "g2"}
    # g2 went live when the switch was sent; within twice the TTL from then readers may still
    # hold the g1 pointer: g1, and the records of the counties that left (g1 names them), stay
    marker = publisher.read().markers["g2"][1]
    match = re.search(r"live=(\d+)", marker)
    assert match and f'"hold={2 * TTL}"' in marker, marker  # kept with the marker, for later runs
    live = int(match.group(1))
    soon = _publisher(knot, clock=lambda: live + 2 * TTL - 1)
    plan = soon.plan(registries.new, registries.options(NEW_SCHEME))
    assert plan.empty and plan.kept == ["g1"] and plan.deferred == len(registries.removed)
    assert knot.query(gone, "TXT").answer
    later = _publisher(knot, clock=lambda: live + 2 * TTL + 1)
    plan = later.plan(registries.new, registries.options(NEW_SCHEME))
    assert plan.collected == ["g1"] and plan.switch_to is None
    assert all(c.action == "delete" for c in plan.changes)
    later.send(plan)
    assert not knot.query(gone, "TXT").answer
    assert not knot.query(f"g1._cells.{ZONE}", "TXT").answer
    held = later.read()
    assert set(held.trees) == {"g2"} and set(held.markers) == {"g2"}
    assert await _read_all(reader, points) == new
    assert later.plan(registries.new, registries.options(NEW_SCHEME)).empty


async def test_a_zone_from_before_generations_is_read_and_moved_to_one(
    tmp_path: Path, registries: Registries, knot: KnotServer
) -> None:
    # the same registry as cells straight under _cells, as zones were written before generations
    text = knot.zone_file.read_text(encoding="utf-8")
    legacy = "\n".join(
        line.replace(".g1._cells", "._cells").replace(' "gen=g1"', "")
        for line in text.splitlines()
        if not line.startswith("g1._cells ")
    )
    assert "g1" not in legacy
    (tmp_path / "legacy.zone").write_text(legacy + "\n", encoding="utf-8")
    server = KnotServer(tmp_path / "legacy-knot", ZONE, tmp_path / "legacy.zone")
    server.start()
    try:
        async with loopback_discovery(server, ZONE) as reader:
            points = _points(registries)
            assert await _read_all(reader, points) == _expected(registries.old, points)
            publisher = _publisher(server)
            plan = publisher.plan(registries.new, registries.options(NEW_SCHEME))
            assert plan.live is None and plan.switch_to == "g1"
            assert set(publisher.read().trees) == {""}  # the cells from before generations
            publisher.send(plan)
            assert "gen=g1" in _pointer(server)
            assert await _read_all(reader, points) == _expected(registries.new, points)
            later = _publisher(server, keep_retired=0.0)
            later.send(later.plan(registries.new, registries.options(NEW_SCHEME)))
            assert set(later.read().trees) == {"g1"}
    finally:
        server.stop()
