"""Cold resolution with DNS as the only source of candidates.

A resolver that knows nothing about an area answers a point like this::

    point -> its cell at the registry's depth      (_cells.<zone> TXT: depth, live generation G)
          -> PTR <cell>.G._cells.<zone>            (one query; wildcards pick the leaf)
          -> candidate domains -> their _open311 TXT records (b= boundary URL, g= generation)
          -> fetch each boundary (discovery.fetch), check its generation
          -> the core's exact covers test and rule (resolver.core.decide.Resolver) -> Answer

Every step goes through the caches: DNS answers for their TTL (``discovery.dns_lookup``, stale
when the servers fail), boundaries by ``(URL, generation)`` (a new generation in DNS is a new
boundary; an unchanged one is never fetched again), and the small resolver of each candidate
set. A candidate whose record is broken is left out with the reason (it does not poison the
others); a candidate that cannot be checked at all (DNS down with nothing cached, its boundary
unreachable) makes the whole lookup fail with that error: with a candidate unknown, any answer
could be wrong, and none is invented.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace

import orjson
from shapely.geometry.base import BaseGeometry

from boundaries.cells import CELLS_LABEL, point_cell
from boundaries.geojson import boundary_from_geojson
from common.errors import GeoWebError, InvalidBoundary
from common.models import (
    Answer,
    Endpoint,
    Fallback,
    Jurisdiction,
    Provenance,
    boundary_generation,
    generation_matches,
)
from discovery.dns_lookup import DnsAnswer, DnsLookup
from discovery.dns_records import Open311Record, RecordError, UrlPolicy, parse_rrset, record_name
from discovery.fetch import Fetcher
from discovery.zone import CellsPointer, generation_cell_name, parse_cells_pointer
from resolver.config import Settings
from resolver.core.attestation import DnsFacts, ttl_left
from resolver.core.decide import Resolver, check_point, clean_concern
from resolver.core.registry_zone import (
    REGISTRY_MODES,
    asks_zone,
    counts_from_dns,
    covering,
    local_or_dns,
    registry_mode,
)
from resolver.core.validation import InvalidEntry, check_entry
from resolver.sources.answering import Answerer, FactSource
from resolver.sources.dns import DnsSource, dns_lookup, url_policy

log = logging.getLogger(__name__)

BOUNDARY_TYPES = ("application/geo+json", "application/json", "application/vnd.geo+json")


class CellSchemeError(GeoWebError):
    """The registry zone does not say how its cells are cut (``_cells.<zone>`` TXT)."""

    status = 502
    code = "dns_cells_unknown"


class BoundaryError(GeoWebError):
    """A boundary named by an ``_open311`` record cannot be used."""

    status = 502
    code = "dns_boundary_error"


@dataclass(frozen=True, slots=True)
class _Candidate:
    domain: str
    answer: DnsAnswer | None  # None: known locally, not looked up
    record: Open311Record | None
    jurisdiction: Jurisdiction | None
    why_skipped: str | None = None
    #: skipped because its facts could not be read (not because it publishes nothing usable)
    failed: bool = False


@dataclass(frozen=True, slots=True)
class Discovered:
    """What DNS says about a point: the cell name asked, its answer, and each domain it lists."""

    cell: str
    cells: DnsAnswer
    candidates: tuple[_Candidate, ...]

    @property
    def jurisdictions(self) -> list[Jurisdiction]:
        """The candidates found in DNS with a usable record and boundary."""
        return [c.jurisdiction for c in self.candidates if c.jurisdiction is not None]


class DnsDiscovery:
    """Answers points from a registry zone and the jurisdictions' own records and boundaries."""

    def __init__(
        self,
        lookup: DnsLookup,
        fetcher: Fetcher,
        *,
        zone: str,
        fallback: Fallback | None = None,
        url_policy: UrlPolicy | None = None,
        max_boundaries: int = 20_000,
        max_resolvers: int = 20_000,
    ) -> None:
        self.lookup = lookup
        self.fetcher = fetcher
        self.zone = zone.strip(".").lower() + "."
        self.fallback = fallback
        self.url_policy = url_policy or UrlPolicy()
        self._boundaries: OrderedDict[tuple[str, str], BaseGeometry] = OrderedDict()
        self._max_boundaries = max_boundaries
        self._resolvers: OrderedDict[tuple[object, ...], Resolver] = OrderedDict()
        self._max_resolvers = max_resolvers
        self._fetching: dict[tuple[str, str], asyncio.Task[BaseGeometry]] = {}
        self._candidates: OrderedDict[tuple[object, ...], _Candidate] = OrderedDict()

    async def pointer(self) -> CellsPointer:
        """The registry's cell scheme and live generation, from ``_cells.<zone> TXT``.

        Depth and generation come from one record, so a lookup never combines the depth of one
        generation with the cells of another (``docs/dns-records.md``, atomic publishing)."""
        name = f"{CELLS_LABEL}.{self.zone}"
        answer = await self.lookup.txt(name)
        for strings in answer.records:
            pointer = parse_cells_pointer(strings)
            if pointer is not None:
                return pointer
        raise CellSchemeError(f"{name} has no usable v=geoweb-cells-1 record", name=name)

    async def depth(self) -> int:
        """The depth of the registry's cells."""
        return (await self.pointer()).depth

    async def candidates(self, lat: float, long: float) -> tuple[str, DnsAnswer]:
        """The name asked for the point's cell, and the answer (PTR records naming domains)."""
        pointer = await self.pointer()
        cell = point_cell(lat, long, pointer.depth)
        name = generation_cell_name(cell, self.zone, pointer.generation)
        return name, await self.lookup.ptr(name)

    async def discover(
        self, lat: float, long: float, known: Collection[str] = frozenset()
    ) -> Discovered:
        """The candidates DNS lists for a point, each with its record and boundary. Domains in
        ``known`` (a local registry's) are listed but not looked up."""
        check_point(lat, long)
        cell, cells = await self.candidates(lat, long)
        found = await asyncio.gather(
            *(
                self._candidate(d) if d not in known else _async(_Candidate(d, None, None, None))
                for d in cells.records
            )
        )
        return Discovered(cell, cells, tuple(found))

    async def answer(self, lat: float, long: float, concern: str | None = None) -> Answer:
        """The answer for a point, found through DNS alone; :class:`DnsUnavailable`,
        :class:`FetchError` or :class:`CellSchemeError` when that is impossible."""
        concern = clean_concern(concern)
        discovered = await self.discover(lat, long)
        resolver = self.resolver_for([], discovered)
        return self.with_provenance(resolver.resolve(lat, long, concern), discovered)

    def resolver_for(self, local: Sequence[Jurisdiction], discovered: Discovered) -> Resolver:
        """A small resolver over these local jurisdictions and the usable DNS candidates (cached:
        by the local objects, and by the DNS candidates' records)."""
        usable = [c for c in discovered.candidates if c.jurisdiction is not None]
        key = (
            tuple((j.id, id(j)) for j in local),
            tuple((c.domain, c.answer.records if c.answer else ()) for c in usable),
        )
        resolver = self._resolvers.get(key)
        if resolver is None:
            jurisdictions = [*local, *(c.jurisdiction for c in usable if c.jurisdiction)]
            resolver = Resolver(jurisdictions, fallback=self.fallback)
            self._remember(self._resolvers, key, resolver, self._max_resolvers)
        else:
            self._resolvers.move_to_end(key)
        return resolver

    def with_provenance(
        self, answer: Answer, discovered: Discovered, local: Answer | None = None
    ) -> Answer:
        """The answer with what DNS said, each fact with its TTL: the cell's candidates, why any
        was left out, and the chosen jurisdiction's record and boundary when DNS found it. A
        jurisdiction chosen from the local registry keeps the facts ``local`` (its answer from
        the local registry) gives it."""
        cell, cells, found = discovered.cell, discovered.cells, discovered.candidates
        now = self.lookup.clock()
        stale_ttl = self.lookup.stale_answer_ttl
        cell_facts = DnsFacts(
            cells, f"{cell.rstrip('.')} PTR", now, ttl_left(cells, now, stale_ttl)
        )
        domains = ", ".join(cells.records) or "none"
        known = [c.domain for c in found if c.answer is None]
        if known:
            domains += f" (in the local registry: {', '.join(known)})"
        facts: list[Provenance] = [
            cell_facts.make("candidates", f"domains listed for this cell: {domains}", verified=True)
        ]
        for candidate in found:
            if candidate.why_skipped:
                skipped = cell_facts.make(
                    "skipped_candidate",
                    f"{candidate.domain}: {candidate.why_skipped}",
                    verified=False,
                )
                facts.append(replace(skipped, stale=True) if candidate.failed else skipped)
        chosen = answer.jurisdiction
        local_chosen = local.jurisdiction if local is not None else None
        if chosen is not None and local_chosen is not None and local_chosen.id == chosen.id:
            assert local is not None
            facts.extend(p for p in local.decision.provenance if p.source != "fallback")
        for candidate in found:
            if chosen is None or candidate.domain != chosen.id or candidate.answer is None:
                continue
            txt = candidate.answer
            ttl = ttl_left(txt, now, stale_ttl)
            txt_facts = DnsFacts(txt, f"{record_name(candidate.domain).rstrip('.')} TXT", now, ttl)
            note = "named by the domain's own _open311 record"
            facts.append(txt_facts.make("discovery_url", note, verified=True))
            if chosen.endpoints:
                facts.append(txt_facts.make("endpoint", "e= of the same record", verified=True))
            facts.extend(p for p in chosen.provenance if p.fact == "boundary")
        stale = [p for p in facts if p.stale]
        if stale:
            log.warning(
                "answering %s,%s from stale DNS data: %s",
                answer.lat,
                answer.long,
                "; ".join(p.note or p.reference for p in stale[:3]),
            )
        fallback = answer.decision.fallback
        if fallback is not None:
            facts.append(fallback.provenance())
        return replace(answer, decision=replace(answer.decision, provenance=tuple(facts)))

    async def _candidate(self, domain: str) -> _Candidate:
        name = record_name(domain)
        answer = await self.lookup.txt(name)
        # The same records always make the same candidate (a boundary is checked against its
        # generation): parsed once, reused while DNS says the same. Boundary failures are retried.
        key = (domain, answer.negative, answer.records)
        known = self._candidates.get(key)
        if known is not None:
            self._candidates.move_to_end(key)
            return _Candidate(domain, answer, known.record, known.jurisdiction, known.why_skipped)
        try:
            candidate = await self._parse_candidate(domain, name, answer)
        except GeoWebError:
            raise
        except Exception as error:  # one domain's fault stays with that domain
            log.warning("DNS candidate %s skipped", domain, exc_info=True)
            why = f"its facts could not be read ({type(error).__name__}: {str(error)[:200]})"
            return _Candidate(domain, answer, None, None, why, failed=True)
        if candidate.record is None or candidate.jurisdiction is not None:
            self._remember(self._candidates, key, candidate, self._max_boundaries)
        return candidate

    async def _parse_candidate(self, domain: str, name: str, answer: DnsAnswer) -> _Candidate:
        result = parse_rrset(answer.records, name=name.rstrip("."), policy=self.url_policy)
        record = result.record
        if record is None:
            why = (
                f"{answer.negative}: no _open311 record"
                if answer.negative
                else "; ".join(e.detail for e in result.errors)
            )
            return _Candidate(domain, answer, None, None, why)
        if record.boundary_url is None or record.boundary_generation is None:
            return _Candidate(domain, answer, record, None, "its record names no boundary (b=)")
        try:
            boundary = await self._boundary(record.boundary_url, record.boundary_generation)
        except BoundaryError as error:
            return _Candidate(domain, answer, record, None, error.detail)
        jurisdiction = Jurisdiction(
            id=domain,
            name=record.name or domain,
            boundary=boundary,
            boundary_generation=record.boundary_generation,
            domain=domain,
            jurisdiction_id=record.jurisdiction_id,
            discovery_url=record.discovery_url,
            endpoints=(Endpoint(record.endpoint_url),) if record.endpoint_url else (),
            provenance=(
                Provenance(
                    "boundary",
                    "dns",
                    record.boundary_url,
                    note=f"named by b= of {name.rstrip('.')}; generation "
                    f"{record.boundary_generation} checked",
                ),
            ),
        )
        try:  # what every entry, from anywhere, is held to
            check_entry(jurisdiction, allow_http=self.url_policy.allow_http_loopback)
        except InvalidEntry as error:
            return _Candidate(domain, answer, record, None, error.detail)
        return _Candidate(domain, answer, record, jurisdiction)

    async def _boundary(self, url: str, generation: str) -> BaseGeometry:
        """The boundary at ``url`` with this generation: cached by both; fetched once however
        many lookups wait for it."""
        key = (url, generation)
        geometry = self._boundaries.get(key)
        if geometry is not None:
            self._boundaries.move_to_end(key)
            return geometry
        task = self._fetching.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch_boundary(url, generation))
            self._fetching[key] = task
            task.add_done_callback(lambda _t: self._fetching.pop(key, None))
        geometry = await task
        self._remember(self._boundaries, key, geometry, self._max_boundaries)
        return geometry

    async def _fetch_boundary(self, url: str, generation: str) -> BaseGeometry:
        fetched = await self.fetcher.get(url, accept=BOUNDARY_TYPES)  # FetchError: no answer
        geometry = parse_boundary(fetched.body, url)
        found = boundary_generation(geometry)
        if not generation_matches(geometry, generation):
            raise BoundaryError(
                f"the boundary at {url} has generation {found}, not {generation} as its "
                "_open311 record says",
                url=url,
            )
        return geometry

    @staticmethod
    def _remember(cache: OrderedDict, key: object, value: object, limit: int) -> None:  # type: ignore[type-arg]
        cache[key] = value
        while len(cache) > limit:
            cache.popitem(last=False)


async def _async(value: _Candidate) -> _Candidate:
    return value


class DnsRegistryAnswerer(Answerer):
    """The :class:`Answerer` of ``geoweb serve`` and ``geoweb resolve`` with a registry zone.

    The local registry answers first (with its fact sources). Then the registry zone's cell for
    the point lists the domains that may cover it; those the local registry does not know are
    looked up (their ``_open311`` record, their boundary by ``b=``/``g=``), and the core decides
    among the local covering jurisdictions and these, by the same rule (most specific first). So
    a city the local registry lacks still wins inside the county it has. With mode
    ``uncovered``, DNS is asked only where no local jurisdiction covers the point.

    When DNS cannot be read (nothing cached, or a candidate's boundary unreachable), the local
    answer is given with a provenance entry saying so: the local registry alone is still an
    answer, and it is labelled as one.
    """

    def __init__(
        self,
        resolver: Resolver,
        sources: Sequence[FactSource],
        discovery: DnsDiscovery,
        *,
        mode: str = "always",
        on_update: Callable[[list[Jurisdiction]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mode = registry_mode(mode)
        super().__init__(resolver, sources, on_update=on_update, clock=clock)
        self.discovery = discovery
        self._known: tuple[Resolver, frozenset[str], frozenset[str]] | None = None

    def _local(self) -> tuple[frozenset[str], frozenset[str]]:
        """The domains and ids of the local registry (recomputed when its resolver changes)."""
        resolver = self.resolver
        if self._known is None or self._known[0] is not resolver:
            domains = frozenset(
                j.domain.strip(".").lower() for j in resolver.jurisdictions if j.domain
            )
            ids = frozenset(j.id for j in resolver.jurisdictions)
            self._known = (resolver, domains, ids)
        return self._known[1], self._known[2]

    async def answer(self, lat: float, long: float, concern: str | None = None) -> Answer:
        """The answer for a point from the local registry and the registry zone; which facts
        count and which answer stands is decided in :mod:`resolver.core.registry_zone`."""
        local = await super().answer(lat, long, concern)
        if not asks_zone(self.mode, local):
            return local
        domains, ids = self._local()
        try:
            discovered = await self.discovery.discover(lat, long, known=domains)
        except Exception as error:  # whatever the zone sends, the local answer stands
            why = error.detail if isinstance(error, GeoWebError) else repr(error)[:200]
            note = (
                f"the registry zone {self.discovery.zone} could not be read ({why}); "
                "answered from the local registry only"
            )
            fact = Provenance(
                "candidates",
                "dns",
                f"_cells.{self.discovery.zone}",
                note=note,
                stale=True,
                verified=False,
            )
            log.warning("DNS discovery for %s,%s failed: %s", lat, long, why)
            return _with_facts(local, fact)
        new = replace(
            discovered,
            candidates=tuple(
                c for c in discovered.candidates if counts_from_dns(c.jurisdiction, ids)
            ),
        )
        answer = local
        if new.jurisdictions:
            combined = self.discovery.resolver_for(covering(local), new).resolve(lat, long, concern)
            answer = local_or_dns(local, combined)
        return self.discovery.with_provenance(answer, new, local)


def _with_facts(answer: Answer, *facts: Provenance) -> Answer:
    decision = answer.decision
    return replace(answer, decision=replace(decision, provenance=(*decision.provenance, *facts)))


def registry_answerer(
    settings: Settings, resolver: Resolver, sources: Sequence[FactSource], fetcher: Fetcher
) -> Answerer:
    """The answerer for these settings: with ``dns_registry_zone``, one that also finds
    candidates through the zone (sharing the DNS source's lookup and cache); else the plain one.
    Plain ``http`` boundary URLs are accepted only on loopback, and only when ``allow_network``
    admits loopback addresses (``dns_source.url_policy``)."""
    if not settings.dns_registry_zone:
        return Answerer(resolver, sources)
    lookup = next((s.lookup for s in sources if isinstance(s, DnsSource)), None)
    if lookup is None:
        lookup = dns_lookup(settings)
    discovery = DnsDiscovery(
        lookup,
        fetcher,
        zone=settings.dns_registry_zone,
        fallback=resolver.fallback,
        url_policy=url_policy(settings),
    )
    return DnsRegistryAnswerer(resolver, sources, discovery, mode=settings.dns_registry_mode)


def parse_boundary(body: bytes, url: str) -> BaseGeometry:
    """The boundary a ``b=`` URL serves (a GeoJSON geometry, Feature, or one-feature collection),
    by the rules every boundary path applies (``boundaries.geojson``)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BoundaryError(f"{url} is not a GeoJSON boundary: {exc}", url=url) from None
    try:
        geometry, _repairs = boundary_from_geojson(document, accept="feature")
    except InvalidBoundary as error:
        raise BoundaryError(f"{url}: {error.detail}", url=url) from None
    return geometry


__all__ = [
    "REGISTRY_MODES",
    "BoundaryError",
    "CellSchemeError",
    "Discovered",
    "DnsDiscovery",
    "DnsRegistryAnswerer",
    "RecordError",
    "parse_boundary",
    "registry_answerer",
]
