"""Cold resolution from DNS at national scale, against a real Knot DNS on loopback and a real
HTTP server for boundaries: the 3,231 US counties exported as a zone with ``geoweb zone export``,
resolved from DNS alone, changed with ``geoweb publish`` (TSIG), and answered from stale cache
when the server stops."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import dns.name
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

from bench.dnscold import answer_summary, land_points
from common.models import Answer, Endpoint, Jurisdiction
from discovery.dns_lookup import DnsUnavailable
from discovery.dns_publish import Change, Plan, Publisher, PublishError, TsigKey
from resolver.cli.main import main
from resolver.core.decide import Resolver
from resolver.registry.documents import jurisdiction_to_feature
from resolver.sources.dns_registry import DnsDiscovery
from resolver.store import Store

ZONE = "counties.test"
TTL = 2  # seconds: small, so that a changed record is seen quickly


@pytest.fixture(scope="module")
def documents() -> Iterator[DocumentServer]:
    server = DocumentServer().start()
    yield server
    server.stop()


def _county(j: Jurisdiction, base: str) -> Jurisdiction:
    return replace(
        j,
        domain=f"{j.id}.counties.test",
        discovery_url=f"{base}/discovery/{j.id}.json",
        endpoints=(Endpoint(f"https://{j.id}.counties.test/open311/v2/"),),
    )


@pytest.fixture(scope="module")
def registry_db(
    tmp_path_factory: pytest.TempPathFactory, counties_db: Path, documents: DocumentServer
) -> Path:
    """The counties with a domain each (``<geoid>.counties.test``) and their boundaries published
    on the loopback document server."""
    with Store(counties_db) as store:
        counties = [_county(j, documents.base) for j in store.jurisdictions()]
    for j in counties:
        documents.documents[f"/boundaries/{j.id}.geojson"] = (
            "application/geo+json",
            orjson.dumps(jurisdiction_to_feature(j)),
        )
    db = tmp_path_factory.mktemp("dns-registry") / "registry.sqlite"
    with Store(db) as store:
        store.save(counties, source="test: counties with domains")
    return db


def _content(documents: DocumentServer) -> list[str]:
    return ["--ttl", str(TTL), "--boundary-url", f"{documents.base}/boundaries/{{id}}.geojson"]


@pytest.fixture(scope="module")
def zone_file(
    tmp_path_factory: pytest.TempPathFactory, registry_db: Path, documents: DocumentServer
) -> Path:
    result = CliRunner().invoke(
        main,
        [
            "zone", "export", "--origin", ZONE, "--db", str(registry_db), "--no-embedded",
            "--nameserver-address", "127.0.0.1", *_content(documents),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    path = tmp_path_factory.mktemp("zone") / "counties.test.zone"
    path.write_text(result.stdout, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory, zone_file: Path) -> Iterator[KnotServer]:
    server = KnotServer(tmp_path_factory.mktemp("knot"), ZONE, zone_file)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def discovery(knot: KnotServer) -> AsyncIterator[DnsDiscovery]:
    """A resolver that knows nothing: empty DNS cache, empty HTTP cache."""
    async with loopback_discovery(knot, ZONE, timeout=1.0) as discovery:
        yield discovery


def _registry(db: Path) -> Resolver:
    with Store(db) as store:
        return Resolver(store.jurisdictions())


async def _resolve_all(discovery: DnsDiscovery, points: list[tuple[float, float]]) -> list[Answer]:
    limit = asyncio.Semaphore(32)

    async def one(lat: float, long: float) -> Answer:
        async with limit:
            return await discovery.answer(lat, long)

    return list(await asyncio.gather(*(one(lat, long) for lat, long in points)))


def test_the_zone_loads_unchanged_in_knot(knot: KnotServer, zone_file: Path) -> None:
    text = zone_file.read_text(encoding="utf-8")
    assert text.count(" IN TXT ") == 3231 + 2  # every county, the cell pointer and marker
    answer = knot.query(f"_cells.{ZONE}", "TXT")
    assert "depth=4" in answer.answer[0].to_text()
    # a county's record, as written
    record = knot.query(f"_open311.06075.{ZONE}", "TXT").answer[0].to_text()
    assert '"v=open311-1"' in record and "g=" in record


async def test_1000_random_points_from_dns_alone_equal_the_polygon_answers(
    discovery: DnsDiscovery, registry_db: Path
) -> None:
    direct = _registry(registry_db)
    points = land_points(direct, 1000, seed=3)
    # and some that no county covers (Gulf of Mexico, Canada, the Pacific)
    points += [(26.0, -90.0), (55.0, -100.0), (30.0, -140.0)]
    answers = await _resolve_all(discovery, points)
    for (lat, long), answer in zip(points, answers, strict=True):
        assert answer_summary(answer) == answer_summary(direct.resolve(lat, long)), (lat, long)
    stats = discovery.lookup.stats
    # one cell query per point at most (neighbours share cells), plus the counties' records
    assert stats.queries < len(points) * 4
    facts = {p.fact: p for p in answers[0].decision.provenance}
    assert facts["candidates"].source in ("dns", "cache")
    assert facts["endpoint"].ttl is not None and facts["endpoint"].ttl <= TTL
    assert facts["boundary"].reference.endswith(".geojson")


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def _publish_args(knot: KnotServer, db: Path, documents: DocumentServer) -> list[str]:
    return [
        "publish", "--server", knot.address, "--port", str(knot.port), "--zone", ZONE,
        "--db", str(db), "--no-embedded", "--tsig-name", TSIG_NAME, "--tsig-secret", TSIG_SECRET,
        "--tsig-algorithm", TSIG_ALGORITHM, *_content(documents),
    ]  # fmt: skip


async def test_publishing_a_changed_endpoint_moves_exactly_that_countys_answers(
    discovery: DnsDiscovery, knot: KnotServer, registry_db: Path, documents: DocumentServer
) -> None:
    direct = _registry(registry_db)
    county = direct.jurisdiction("06075")  # San Francisco
    points = land_points(direct, 150, seed=11)
    points += [(37.77, -122.42), (37.75, -122.45), (37.73, -122.39)]  # inside San Francisco
    before = await _resolve_all(discovery, points)
    args = _publish_args(knot, registry_db, documents)
    moved = replace(county, endpoints=(Endpoint("https://new.sf.example/open311/v2/"),))
    with Store(registry_db) as store:
        store.save([moved], replace=True, source="test: a new endpoint")
    serial = knot.serial()
    code, output = await asyncio.to_thread(_run, [*args, "--dry-run"])
    assert code == 0 and "nothing sent" in output and "new.sf.example" in output, output
    assert knot.serial() == serial  # a dry run changes nothing
    code, output = await asyncio.to_thread(_run, args)
    # only the difference is sent: San Francisco's record, replaced
    assert code == 0 and "1 record(s) to add, 1 to delete" in output, output
    code, output = await asyncio.to_thread(_run, args)
    assert code == 0 and "up to date" in output, output  # idempotent
    await asyncio.sleep(TTL + 0.5)  # the old record expires from the resolver's cache
    after = await _resolve_all(discovery, points)
    changed = [
        (p, a.endpoint.url if a.endpoint else None)
        for p, a, b in zip(points, after, before, strict=True)
        if answer_summary(a) != answer_summary(b)
    ]
    inside = {p for p in points if direct.resolve(*p).jurisdiction == county}
    assert {p for p, _ in changed} == inside and len(inside) >= 3
    assert {url for _, url in changed} == {"https://new.sf.example/open311/v2/"}


def test_a_wrong_tsig_key_is_refused_and_the_zone_is_unchanged(
    knot: KnotServer, registry_db: Path, documents: DocumentServer
) -> None:
    serial = knot.serial()
    args = _publish_args(knot, registry_db, documents)
    wrong_secret = args.copy()
    wrong_secret[wrong_secret.index(TSIG_SECRET)] = "d3Jvbmcgc2VjcmV0IG9mIDMyIGJ5dGVzISEhISEhIQ=="
    code, output = _run(wrong_secret)
    assert code == 1 and "TSIG" in output and "nothing was changed" in output, output
    wrong_name = args.copy()
    wrong_name[wrong_name.index(TSIG_NAME)] = "nobody."
    code, output = _run(wrong_name)
    assert code == 1 and "TSIG" in output, output
    # the UPDATE itself, signed with a wrong key, is refused by the server
    name = f"_open311.06075.{ZONE}."
    held = knot.query(name, "TXT").answer[0]
    plan = Plan(
        dns.name.from_text(ZONE),
        None,
        [
            Change("delete", name, "TXT", TTL, None),
            Change("add", name, "TXT", TTL, '"v=open311-1" "d=https://evil.example/d.json"'),
        ],
    )
    wrong = Publisher(
        knot.address, ZONE, TsigKey(TSIG_NAME, "d3Jvbmcgc2VjcmV0IQ=="), port=knot.port
    )
    with pytest.raises(PublishError, match="TSIG"):
        wrong.send(plan)
    unsigned = Publisher(knot.address, ZONE, None, port=knot.port)
    with pytest.raises(PublishError, match="refused"):
        unsigned.send(plan)
    assert knot.query(name, "TXT").answer[0] == held
    assert knot.serial() == serial
    record = knot.query(f"_open311.06075.{ZONE}", "TXT").answer[0].to_text()
    assert "evil.example" not in record


async def test_a_stopped_dns_server_keeps_answers_flowing_from_stale_cache(
    discovery: DnsDiscovery,
    knot: KnotServer,
    registry_db: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    direct = _registry(registry_db)
    points = land_points(direct, 60, seed=5)
    fresh = await _resolve_all(discovery, points)
    await asyncio.sleep(TTL + 0.5)  # everything cached has expired
    knot.stop()
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="resolver.sources.dns_registry"):
            stale = await _resolve_all(discovery, points)
        assert time.monotonic() - started < 20
        for old, new in zip(fresh, stale, strict=True):
            assert answer_summary(new) == answer_summary(old)
            flags = [p for p in new.decision.provenance if p.source == "cache"]
            assert flags and all(p.stale for p in flags)
            assert any("stale (RFC 8767)" in (p.note or "") for p in flags)
        assert "stale DNS data" in caplog.text
        assert discovery.lookup.stats.stale_served > 0
        # a point whose cell was never asked: no answer is invented
        with pytest.raises(DnsUnavailable):
            await discovery.answer(64.8, -147.7)  # Fairbanks, Alaska
    finally:
        knot.start()
