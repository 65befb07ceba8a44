"""Cold resolution with DNS as the only source of candidates.

A resolver that knows nothing about an area answers a point like this::

    point -> its cell at the registry's depth      (_cells.<zone> TXT says the depth)
          -> PTR <cell>._cells.<zone>              (one query; wildcards pick the leaf)
          -> candidate domains -> their _open311 TXT records (b= boundary URL, g= generation)
          -> fetch each boundary (discovery.fetch), check its generation
          -> the core's exact covers test and rule (resolver.core.Resolver) -> Answer

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
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import orjson
import shapely.geometry
from shapely.geometry.base import BaseGeometry

from boundaries.cells import CELLS_LABEL, point_cell
from discovery.dns_lookup import DnsAnswer, DnsLookup
from discovery.dns_records import Open311Record, RecordError, UrlPolicy, parse_rrset, record_name
from discovery.fetch import Fetcher

from .core import Resolver, check_point, clean_concern
from .dns_source import DnsFacts
from .errors import GeoWebError
from .models import Answer, Endpoint, Fallback, Jurisdiction, Provenance, boundary_generation

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
    answer: DnsAnswer
    record: Open311Record | None
    jurisdiction: Jurisdiction | None
    why_skipped: str | None = None


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

    async def depth(self) -> int:
        """The depth of the registry's cells, from ``_cells.<zone> TXT``."""
        name = f"{CELLS_LABEL}.{self.zone}"
        answer = await self.lookup.txt(name)
        for strings in answer.records:
            pairs = dict(s.decode("ascii", "replace").partition("=")[::2] for s in strings)
            if pairs.get("v") == "geoweb-cells-1" and pairs.get("depth", "").isdigit():
                depth = int(pairs["depth"])
                if 1 <= depth <= 12:
                    return depth
        raise CellSchemeError(f"{name} has no usable v=geoweb-cells-1 record", name=name)

    async def candidates(self, lat: float, long: float) -> tuple[str, DnsAnswer]:
        """The name asked for the point's cell, and the answer (PTR records naming domains)."""
        name = ".".join([*reversed(point_cell(lat, long, await self.depth())), CELLS_LABEL])
        name = f"{name}.{self.zone}"
        return name, await self.lookup.ptr(name)

    async def resolve(self, lat: float, long: float, concern: str | None = None) -> Answer:
        """The answer for a point, found through DNS alone; :class:`DnsUnavailable`,
        :class:`FetchError` or :class:`CellSchemeError` when that is impossible."""
        check_point(lat, long)
        concern = clean_concern(concern)
        cell, cells = await self.candidates(lat, long)
        found = await asyncio.gather(*(self._candidate(d) for d in cells.records))
        usable = [c for c in found if c.jurisdiction is not None]
        key = tuple((c.domain, c.answer.records) for c in usable)
        resolver = self._resolvers.get(key)
        if resolver is None:
            jurisdictions = [c.jurisdiction for c in usable if c.jurisdiction is not None]
            resolver = Resolver(jurisdictions, fallback=self.fallback)
            self._remember(self._resolvers, key, resolver, self._max_resolvers)
        else:
            self._resolvers.move_to_end(key)
        answer = resolver.resolve(lat, long, concern)
        return self._with_provenance(answer, cell, cells, found)

    def _with_provenance(
        self, answer: Answer, cell: str, cells: DnsAnswer, found: Sequence[_Candidate]
    ) -> Answer:
        now = self.lookup.clock()
        remaining = cells.remaining(now) if not cells.stale else int(self.lookup.stale_answer_ttl)
        cell_facts = DnsFacts(cells, f"{cell.rstrip('.')} PTR", now, remaining)
        domains = ", ".join(cells.records) or "none"
        facts: list[Provenance] = [
            cell_facts.make("candidates", f"domains listed for this cell: {domains}", verified=True)
        ]
        for candidate in found:
            if candidate.why_skipped:
                facts.append(
                    cell_facts.make(
                        "skipped_candidate",
                        f"{candidate.domain}: {candidate.why_skipped}",
                        verified=False,
                    )
                )
        chosen = answer.jurisdiction
        for candidate in found:
            if chosen is None or candidate.domain != chosen.id:
                continue
            txt = candidate.answer
            ttl = txt.remaining(now) if not txt.stale else int(self.lookup.stale_answer_ttl)
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
        if found != generation:
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


def parse_boundary(body: bytes, url: str) -> BaseGeometry:
    """A Polygon or MultiPolygon from a GeoJSON geometry, Feature, or one-feature collection."""
    try:
        document = orjson.loads(body)
        if document.get("type") == "FeatureCollection":
            features = document.get("features") or []
            if len(features) != 1:
                raise BoundaryError(f"{url}: a boundary collection must hold one feature")
            document = features[0]
        if document.get("type") == "Feature":
            document = document.get("geometry")
        geometry = shapely.geometry.shape(document)
    except BoundaryError:
        raise
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BoundaryError(f"{url} is not a GeoJSON boundary: {exc}", url=url) from None
    if geometry.geom_type not in ("Polygon", "MultiPolygon") or geometry.is_empty:
        raise BoundaryError(f"{url}: a boundary must be a Polygon or MultiPolygon", url=url)
    return geometry


__all__ = ["BoundaryError", "CellSchemeError", "DnsDiscovery", "RecordError", "parse_boundary"]
