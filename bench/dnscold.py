"""Workload 5: cold resolution through DNS alone, with a real Knot DNS on loopback.

The US counties, each with a domain of its own (``<geoid>.counties.bench``), are exported with
``geoweb zone export`` and served by ``knotd``; their boundaries are published by
:mod:`bench.docserver` in a process of its own. ``resolver.sources.dns_registry.DnsDiscovery`` then
answers points knowing nothing else: the cell's PTR record, the candidates' ``_open311`` TXT
records, their boundaries over HTTP, the core's covers test.

Measured: per cold lookup (a new resolver each time: empty DNS cache, empty boundary cache, new
HTTP session) the DNS queries, HTTP fetches and latency; then one resolver that keeps its caches,
over many points one after another (neighbours share cells and boundaries), with 32 lookups in
flight, and warm (every answer cached). Every answer is checked against the direct polygon answer.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import numpy as np
import orjson

from common.models import Answer, Endpoint, Jurisdiction
from discovery.dns_lookup import DnsLookup
from discovery.dns_records import UrlPolicy
from discovery.fetch import Fetcher, make_session
from resolver.core.decide import Resolver
from resolver.registry.documents import jurisdiction_to_feature
from resolver.sources.dns_registry import DnsDiscovery
from resolver.store import Store

from .common import REPO, latency_stats
from .httpbench import HOST, server

ZONE = "counties.bench"
#: Long enough that nothing expires during a run: "warm" means every answer cached.
TTL = 3600
LOOPBACK = ["127.0.0.0/8"]


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (Knot listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no loopback port free for both UDP and TCP")


@contextmanager
def knot(binary: str, workdir: Path, zone_file: Path, timeout: float = 60.0):
    """``knotd`` serving the zone on a free loopback port (yields the port); stopped by its id."""
    port = free_udp_tcp_port()
    (workdir / "db").mkdir(parents=True, exist_ok=True)
    config = workdir / "knot.conf"
    config.write_text(
        f"""server:
    rundir: "{workdir}"
    listen: {HOST}@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{workdir / "db"}"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "{workdir}"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: {ZONE}.
    file: "{zone_file}"
""",
        encoding="utf-8",
    )
    with run_knotd(binary, workdir, config, "knotd.log", port, timeout):
        yield port


@contextmanager
def run_knotd(
    binary: str, workdir: Path, config: Path, log_name: str, port: int, timeout: float
) -> Iterator[None]:
    """Start ``knotd`` with ``config``, wait until it answers for the zone, stop it by its own
    process id on leaving."""
    with (workdir / log_name).open("wb") as log:
        process = subprocess.Popen(
            [binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=workdir
        )
    try:
        deadline = time.monotonic() + timeout
        query = dns.message.make_query(f"{ZONE}.", "SOA")
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"knotd exited with {process.returncode}")
            try:
                response = dns.query.udp(query, HOST, timeout=0.5, port=port)
                if response.rcode() == dns.rcode.NOERROR and response.answer:
                    break
            except (OSError, dns.exception.DNSException):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"knotd did not serve {ZONE} within {timeout} s")
            time.sleep(0.1)
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def publish(db: Path, workdir: Path, base: str) -> tuple[list[Jurisdiction], Path, Path]:
    """The counties with domains, their boundary files, and the zone ``geoweb zone export`` wrote
    for them (boundaries named at ``base``)."""
    with Store(db) as store:
        counties = [
            replace(
                j,
                domain=f"{j.id}.{ZONE}",
                discovery_url=f"{base}/discovery/{j.id}.json",
                endpoints=(Endpoint(f"https://{j.id}.{ZONE}/open311/v2/"),),
            )
            for j in store.jurisdictions()
        ]
    boundaries = workdir / "boundaries"
    boundaries.mkdir(exist_ok=True)
    for j in counties:
        if j.boundary is not None:
            (boundaries / f"{j.id}.geojson").write_bytes(orjson.dumps(jurisdiction_to_feature(j)))
    registry = workdir / "dns-registry.sqlite"
    with Store(registry) as store:
        store.save(counties, source="bench: counties with domains")
    zone = workdir / f"{ZONE}.zone"
    with zone.open("wb") as out:
        subprocess.run(
            [
                sys.executable, "-m", "resolver", "zone", "export", "--origin", ZONE,
                "--db", str(registry), "--ttl", str(TTL), "--nameserver-address", HOST,
                "--boundary-url", f"{base}/boundaries/{{id}}.geojson",
            ],
            cwd=REPO, stdout=out, stderr=subprocess.PIPE, check=True, timeout=600,
        )  # fmt: skip
    return counties, boundaries, zone


def land_points(direct: Resolver, count: int, seed: int) -> list[tuple[float, float]]:
    """Random points on US land (each covered by a county): 85% lower 48, 10% Alaska, 5% Hawaii."""
    rng = np.random.default_rng(seed)
    boxes = [(-125, 24, -66, 50), (-170, 51, -130, 72), (-161, 18.5, -154, 22.5)]
    points: list[tuple[float, float]] = []
    while len(points) < count:
        west, south, east, north = boxes[rng.choice(3, p=[0.85, 0.1, 0.05])]
        lat, long = float(rng.uniform(south, north)), float(rng.uniform(west, east))
        if len(direct.index.covering(lat, long)):
            points.append((lat, long))
    return points


def answer_summary(answer: Answer) -> tuple[str | None, str | None, tuple[str | None, ...]]:
    """What a DNS answer and the direct polygon answer must agree on: the chosen domain, the
    endpoint, the alternatives' domains."""
    j = answer.jurisdiction
    return (
        j.domain if j else None,
        answer.endpoint.url if answer.endpoint else None,
        tuple(c.jurisdiction.domain for c in answer.decision.alternatives),
    )


def _discovery(port: int) -> tuple[DnsDiscovery, Any]:
    lookup = DnsLookup([HOST], port=port, timeout=2.0)
    session = make_session(allow_networks=LOOPBACK)
    fetcher = Fetcher(session, allow_networks=LOOPBACK)
    policy = UrlPolicy(allow_http_loopback=True)
    return DnsDiscovery(lookup, fetcher, zone=ZONE, url_policy=policy), session


def _counts(values: list[int]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "p50": float(np.percentile(array, 50)),
        "p99": float(np.percentile(array, 99)),
        "max": float(array.max()),
    }


async def _cold(port: int, points: list[tuple[float, float]]) -> dict[str, Any]:
    """One new resolver per lookup: nothing cached, no open connection."""
    durations, queries, fetches, answers = [], [], [], []
    for lat, long in points:
        discovery, session = _discovery(port)
        try:
            start = time.perf_counter_ns()
            answers.append(await discovery.answer(lat, long))
            durations.append(time.perf_counter_ns() - start)
            queries.append(discovery.lookup.stats.queries)
            fetches.append(discovery.fetcher.stats.misses)
        finally:
            await session.close()
    return {
        "latency": latency_stats(np.asarray(durations)),
        "dns_queries": _counts(queries),
        "http_fetches": _counts(fetches),
        "answers": answers,
    }


async def _shared(port: int, points: list[tuple[float, float]]) -> dict[str, Any]:
    """One resolver keeping its caches: the points one after another from empty caches, then
    all again (warm); then a fresh resolver with 32 lookups in flight."""
    discovery, session = _discovery(port)
    stats = discovery.lookup.stats
    out: dict[str, Any] = {}
    try:
        for name in ("sequential", "warm"):
            durations, answers = [], []
            queries, fetches = stats.queries, discovery.fetcher.stats.misses
            for lat, long in points:
                start = time.perf_counter_ns()
                answers.append(await discovery.answer(lat, long))
                durations.append(time.perf_counter_ns() - start)
            out[name] = {
                "latency": latency_stats(np.asarray(durations)),
                "dns_queries_per_lookup": (stats.queries - queries) / len(points),
                "http_fetches_per_lookup": (discovery.fetcher.stats.misses - fetches) / len(points),
                "answers": answers,
            }
    finally:
        await session.close()
    discovery, session = _discovery(port)
    limit = asyncio.Semaphore(32)

    async def one(lat: float, long: float) -> Answer:
        async with limit:
            return await discovery.answer(lat, long)

    try:
        start = time.perf_counter()
        answers = list(await asyncio.gather(*(one(lat, long) for lat, long in points)))
        seconds = time.perf_counter() - start
        out["concurrent"] = {
            "in_flight": 32,
            "seconds": seconds,
            "lookups_per_s": len(points) / seconds,
            "dns_queries_per_lookup": discovery.lookup.stats.queries / len(points),
            "http_fetches_per_lookup": discovery.fetcher.stats.misses / len(points),
            "answers": answers,
        }
    finally:
        await session.close()
    return out


def run(db: Path, workdir: Path, cold_points: int, shared_points: int, seed: int) -> dict[str, Any]:
    """Workload 5 on the counties store ``db``; ``{"skipped": why}`` without ``knotd``."""
    binary = shutil.which("knotd") or shutil.which("/usr/sbin/knotd")
    if binary is None:
        return {"skipped": "knotd (Knot DNS) is not installed"}
    work = workdir / "dns"
    work.mkdir(exist_ok=True)
    port = free_udp_tcp_port()
    base = f"http://{HOST}:{port}"
    started = time.perf_counter()
    counties, boundaries, zone = publish(db, work, base)
    direct = Resolver(counties)
    zone_s = time.perf_counter() - started
    cold_set = land_points(direct, cold_points, seed)
    shared_set = land_points(direct, shared_points, seed + 1)
    docs = ["-m", "bench.docserver", str(boundaries), "--port", str(port)]
    with server(docs, port, work / "docserver.log"), knot(binary, work, zone) as dns_port:
        started = time.perf_counter()
        cold = asyncio.run(_cold(dns_port, cold_set))
        shared = asyncio.run(_shared(dns_port, shared_set))
        measured_s = time.perf_counter() - started
    mismatches = 0
    for points, answers in (
        (cold_set, cold.pop("answers")),
        *((shared_set, shared[k].pop("answers")) for k in ("sequential", "warm", "concurrent")),
    ):
        for (lat, long), answer in zip(points, answers, strict=True):
            mismatches += answer_summary(answer) != answer_summary(direct.resolve(lat, long))
    text = zone.read_text(encoding="utf-8")
    return {
        "zone": ZONE,
        "zone_records": sum(1 for line in text.splitlines() if " IN " in line),
        "zone_bytes": len(text.encode()),
        "ttl": TTL,
        "setup_s": zone_s,
        "measured_s": measured_s,
        "cold_points": cold_points,
        "shared_points": shared_points,
        "cold": cold,
        **shared,
        "mismatches": mismatches,
        "knotd": subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
    }
