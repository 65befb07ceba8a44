"""Driving the pure core with facts that live elsewhere and expire.

The core (``resolver/core/decide.py``) decides from the jurisdictions it is given. Some facts of a
jurisdiction are published elsewhere and have an expiry: its ``_open311`` TXT record (DNS TTL), its
service discovery document and services list (HTTP caching, discovery ``changeset``). A
:class:`FactSource` knows whether its facts about a jurisdiction are missing or expired and how to
refresh them. The :class:`Answerer` asks the core first; only when the decision's candidates have
missing or expired facts does it ask the sources for those jurisdictions (once each, however many
requests wait for them), swap in a new :class:`~resolver.core.decide.Resolver` that shares the
spatial index, and answer again. Like dnspython's resolver: the core says what is needed, the
driver asks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Protocol, TypeVar

from common.errors import GeoWebError
from common.models import Answer, Decision, Jurisdiction
from resolver.core.decide import Resolver

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Seconds a jurisdiction whose refresh failed unexpectedly is answered from its previous facts
#: before it is asked again.
FAILURE_BACKOFF = 300.0


class FactSource(Protocol):
    """One kind of outside fact about jurisdictions (DNS records, discovery documents, ...)."""

    name: str

    def needs(self, jurisdiction: Jurisdiction, now: float) -> bool:
        """True when this source's facts about the jurisdiction are missing or expired at ``now``
        (seconds since the epoch)."""
        ...

    async def refresh(self, jurisdiction: Jurisdiction) -> Jurisdiction:
        """The jurisdiction with this source's facts brought up to date, provenance included.

        Network failures are not raised: the jurisdiction comes back with its stale facts and a
        provenance entry saying what failed, so answers keep flowing (serve-stale).
        """
        ...


class Answerer:
    """Answers points with facts refreshed on demand; the one entry point for request handlers."""

    def __init__(
        self,
        resolver: Resolver,
        sources: Sequence[FactSource] = (),
        *,
        on_update: Callable[[list[Jurisdiction]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._resolver = resolver
        self.sources = tuple(sources)
        self._on_update = on_update
        self._clock = clock
        self._in_flight: dict[str, asyncio.Task[Jurisdiction]] = {}
        #: Jurisdictions whose refresh raised, and until when they are not asked again.
        self._failed_until: dict[str, float] = {}
        #: By id of a core decision (kept here, so the id is not reused): it as served from the
        #: cache. One decision object per core decision, so what is kept per decision downstream
        #: (HTTP bodies, cache lifetimes) is found again.
        self._served: dict[int, tuple[Decision, Decision]] = {}

    @property
    def resolver(self) -> Resolver:
        """The current resolver (it changes when refreshed facts come in)."""
        return self._resolver

    async def answer(self, lat: float, long: float, concern: str | None = None) -> Answer:
        """The core's answer for a point, after refreshing the candidates' missing or expired
        facts (only then: a fresh answer costs one core lookup)."""
        answer = self._resolver.resolve(lat, long, concern)
        if not self.sources:
            return answer
        decision = answer.decision
        candidates = [
            c.jurisdiction for c in (decision.chosen, *decision.alternatives) if c is not None
        ]
        now = self._clock()
        stale = [
            j
            for j in candidates
            if self._failed_until.get(j.id, 0.0) <= now
            and any(s.needs(j, now) for s in self.sources)
        ]
        if not stale:
            return self._from_cache(answer)
        await self.refresh(stale)
        return self._resolver.resolve(lat, long, concern)

    def answer_rows(
        self, rows: Sequence[T], read_point: Callable[[T], tuple[float, float, str | None]]
    ) -> list[Answer | GeoWebError]:
        """Answers for many records, in order (see :meth:`Resolver.resolve_rows`), from the facts
        already known: a batch of thousands of points never waits for fetches."""
        return self._resolver.resolve_rows(rows, read_point)

    async def update(self, changed: Sequence[Jurisdiction], removed: Sequence[str] = ()) -> None:
        """Take registry changes (an import, a mirror sync, a registration): facts already
        refreshed for an entry whose registry copy did not change are kept.

        The new resolver (a new index when a boundary changed) is built in a worker thread, so
        answers go on meanwhile; when a refresh swapped in another resolver during the build, the
        build starts again from that one, so neither change is lost.
        """
        while True:
            base = self._resolver
            new = await asyncio.to_thread(base.replace, changed, removed=removed)
            if self._resolver is base:
                self._resolver = new
                return

    async def refresh(self, jurisdictions: Sequence[Jurisdiction]) -> list[Jurisdiction]:
        """Refresh these jurisdictions from every source that needs to, concurrently; one refresh
        per jurisdiction at a time however many callers ask."""
        tasks = []
        for jurisdiction in jurisdictions:
            task = self._in_flight.get(jurisdiction.id)
            if task is None:
                task = asyncio.ensure_future(self._refresh_one(jurisdiction))
                self._in_flight[jurisdiction.id] = task
                task.add_done_callback(partial(self._forget, jurisdiction.id))
            tasks.append(task)
        return list(await asyncio.gather(*tasks))

    def _from_cache(self, answer: Answer) -> Answer:
        """The answer as served without asking anyone (see :func:`_from_cache`)."""
        decision = answer.decision
        found = self._served.get(id(decision))
        if found is None:
            if len(self._served) >= SERVED_KEPT:
                self._served.clear()
            found = self._served[id(decision)] = (decision, _from_cache(decision))
        served = found[1]
        if served is decision:
            return answer
        return Answer(answer.lat, answer.long, served, answer.index_generation)

    def _forget(self, key: str, _task: object) -> None:
        self._in_flight.pop(key, None)

    async def _refresh_one(self, jurisdiction: Jurisdiction) -> Jurisdiction:
        """Refresh one jurisdiction. A fault in a source or in the refreshed facts (any
        exception: the sources report the failures they expect themselves) stays with this
        jurisdiction: its previous facts are kept, and it is not asked again for
        :data:`FAILURE_BACKOFF` seconds, while answers go on from what is known."""
        now = self._clock()
        before = jurisdiction
        for source in self.sources:
            if source.needs(jurisdiction, now):
                try:
                    jurisdiction = await source.refresh(jurisdiction)
                except Exception:
                    log.exception("%s facts of %s failed; kept", source.name, before.id)
                    self._failed_until[before.id] = now + FAILURE_BACKOFF
        try:
            self._resolver = self._resolver.replace([jurisdiction])
        except Exception:
            log.exception("the refreshed facts of %s cannot be answered from; kept", before.id)
            self._failed_until[before.id] = now + FAILURE_BACKOFF
            return before
        if self._on_update is not None:
            self._on_update([jurisdiction])
        return jurisdiction


#: Sources whose facts were fetched from the outside world when first obtained.
_FETCHED = ("dns", "discovery")
#: Decisions an answerer remembers as served from the cache (it forgets them all when full).
SERVED_KEPT = 16384


def _from_cache(decision: Decision) -> Decision:
    """The decision as served without asking anyone: its DNS and discovery facts, fetched by an
    earlier request and still fresh, are reported as coming from the cache."""
    if not any(p.source in _FETCHED for p in decision.provenance):
        return decision
    provenance = tuple(
        replace(p, source="cache") if p.source in _FETCHED else p for p in decision.provenance
    )
    return replace(decision, provenance=provenance)
