"""A :class:`~resolver.sources.answering.FactSource` for Open311 discovery and services lists.

For a jurisdiction with a ``discovery_url`` it fetches the discovery document, chooses the endpoint
(GeoReport v2, production before test, a format we parse; the others stay as alternatives), reads
an optional ``service_area`` as the boundary, then fetches the services list from the chosen
endpoint (``services.json`` or ``services.xml``, with ``jurisdiction_id`` when the registry has
one). A jurisdiction without a discovery document but with an endpoint gets its services list
only.

Expiry: each fact expires when its HTTP response does (``Cache-Control``/``Expires``/heuristic,
see :mod:`discovery.fetch`), or ``default_ttl`` after it was fetched when the response says
nothing. A discovery ``changeset`` that differs from the one the facts were read under makes the
services list be revalidated with the origin even when its HTTP copy is still fresh.

Provenance: every fact carries ``source="discovery"`` when it came from the network and
``source="cache"`` when it came from the HTTP cache (fresh, revalidated by a 304, or stale after an
origin failure, which its ``note`` says). A failure without any stored copy keeps the previous
facts and adds a provenance entry with the reason that expires after ``retry_after`` seconds, so
answers keep flowing and the origin is not hammered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

from common.errors import GeoWebError
from common.models import Endpoint, Jurisdiction, Provenance, SourceKind
from discovery.documents import ACCEPT, DocumentError, parse_discovery, parse_services
from discovery.fetch import Fetched, Fetcher, FetchError
from resolver.core.validation import check_entry
from resolver.sources.answering import Answerer

log = logging.getLogger(__name__)

#: Facts this source owns.
FACTS = frozenset({"discovery", "endpoints", "services", "boundary"})
_OWN_SOURCES = frozenset({"discovery", "cache"})
_FAILED = "refresh failed: "
_DISCOVERY_NOTE = "discovery: "
_SERVICES_NOTE = "discovery: services list: "

#: Awaited with ``(jurisdiction id, ok, reason, url)`` after every refresh (a store writes it
#: through :func:`resolver.store.aio.in_thread`: see ``resolver.store.caches.refresh_log``).
ResultHook = Callable[[str, bool, str | None, str | None], Awaitable[None]]


def iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


def _own(p: Provenance) -> bool:
    return p.fact in FACTS and p.source in _OWN_SOURCES


def services_url(endpoint: Endpoint, jurisdiction_id: str | None) -> str:
    """The services list of a GeoReport v2 endpoint: JSON when offered, else XML."""
    formats = {f.lower() for f in endpoint.formats}
    extension = "json" if formats & {"application/json", "text/json"} or not formats else "xml"
    url = f"{endpoint.url.rstrip('/')}/services.{extension}"
    if jurisdiction_id:
        url += "?" + urlencode({"jurisdiction_id": jurisdiction_id})
    return url


class DiscoverySource:
    """Discovery documents and services lists, fetched through a bounded, caching
    :class:`~discovery.fetch.Fetcher`."""

    name = "discovery"

    def __init__(
        self,
        fetcher: Fetcher,
        *,
        default_ttl: float = 3600.0,
        retry_after: float = 300.0,
        on_result: ResultHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fetcher = fetcher
        self.default_ttl = default_ttl
        self.retry_after = retry_after
        self.on_result = on_result
        self.clock = clock

    def applies(self, jurisdiction: Jurisdiction) -> bool:
        return bool(jurisdiction.discovery_url) or jurisdiction.endpoint is not None

    def needs(self, jurisdiction: Jurisdiction, now: float) -> bool:
        if not self.applies(jurisdiction):
            return False
        expiries = [
            _timestamp(p.expires)
            for p in jurisdiction.provenance
            if _own(p) and p.fact == "services"
        ]
        known = [e for e in expiries if e is not None]
        return not known or max(known) <= now

    async def refresh(self, jurisdiction: Jurisdiction) -> Jurisdiction:
        """The jurisdiction with fresh facts, or with what could be read and the failure.

        A discovery document that was read updates the endpoints (and boundary) even when the
        services list then fails. A refresh counts as failed (for ``on_result``) when anything
        failed, including when the city did not answer and a stored copy was served instead: the
        facts stay, marked stale, and the reason is recorded.
        """
        now = self.clock()
        url = jurisdiction.discovery_url or ""
        attempt = _Attempt(jurisdiction)
        updated: Jurisdiction | None = None
        reason: str | None
        try:
            updated = await self._refresh(attempt)
            # A city's facts are held to the rules of every registry entry (https or guarded
            # http URLs, a boundary with area, bounded lists).
            check_entry(updated, allow_http=True)
        except (FetchError, DocumentError) as error:
            reason = str(error.fields.get("reason") or error.detail)
            url = str(error.fields.get("url") or url)
        except Exception as error:  # any fault while reading one city stays with that city
            log.warning("refreshing %s failed", jurisdiction.id, exc_info=True)
            reason = (
                error.detail
                if isinstance(error, GeoWebError)
                else f"{type(error).__name__}: {str(error)[:300]}"
            )
            attempt.read = jurisdiction  # what was read may be what failed: none of it is kept
        else:
            reason = None
        if reason is not None:
            if self.on_result is not None:
                await self.on_result(jurisdiction.id, False, reason, url or None)
            failure = Provenance(
                fact="services",
                source="discovery",
                reference=url or "-",
                retrieved=iso(now),
                expires=iso(now + self.retry_after),
                note=_FAILED + reason,
                stale=True,
            )
            read = attempt.read
            kept = tuple(p for p in read.provenance if not (p.note or "").startswith(_FAILED))
            return replace(read, provenance=(*kept, failure))
        assert updated is not None
        if self.on_result is not None:
            if attempt.stale:
                reason = "; ".join(attempt.stale) + " (the stored copy is served, marked stale)"
                await self.on_result(jurisdiction.id, False, reason, url or None)
            else:
                await self.on_result(jurisdiction.id, True, None, url or None)
        return updated

    def _fact(
        self, fact: str, fetched: Fetched, note: str | None = None, attempt: _Attempt | None = None
    ) -> Provenance:
        source: SourceKind = "cache" if fetched.from_cache else "discovery"
        notes = [note] if note else []
        if fetched.stale:
            notes.append(f"stale copy served: the origin failed ({fetched.error})")
            expires = self.clock() + self.retry_after
            if attempt is not None and fetched.url not in attempt.stale_urls:
                attempt.stale_urls.add(fetched.url)
                attempt.stale.append(f"{fetched.url}: {fetched.error}")
        else:
            expires = (
                fetched.expires_at
                if fetched.expires_at is not None
                else fetched.fetched_at + self.default_ttl
            )
            if fetched.revalidated:
                notes.append("revalidated with the origin (304 Not Modified)")
        return Provenance(
            fact=fact,
            source=source,
            reference=fetched.url,
            retrieved=iso(fetched.fetched_at),
            expires=iso(expires),
            note="; ".join(notes) or None,
            stale=True if fetched.stale else None,
        )

    async def _refresh(self, attempt: _Attempt) -> Jurisdiction:
        """Discovery document (when there is one), then services list; ``attempt.read`` holds
        what was read so far when a step fails."""
        jurisdiction = attempt.read
        chosen = jurisdiction.endpoint
        revalidate = False
        if jurisdiction.discovery_url:
            chosen, revalidate = await self._discover(attempt)
        if chosen is None:
            raise DocumentError("no current GeoReport v2 endpoint is known")
        current = attempt.read
        url = services_url(chosen, current.jurisdiction_id)
        fetched = await self.fetcher.get(url, accept=ACCEPT, revalidate=revalidate)
        services = parse_services(fetched.body, fetched.content_type, url=url)
        provenance = [p for p in current.provenance if not (_own(p) and p.fact == "services")]
        provenance.append(
            self._fact("services", fetched, f"{len(services.services)} services", attempt)
        )
        notes = [n for n in current.notes if not n.startswith(_SERVICES_NOTE)]
        notes.extend(f"{_SERVICES_NOTE}{issue}" for issue in services.issues)
        return replace(
            current,
            services=services.services,
            provenance=tuple(provenance),
            notes=tuple(notes),
        )

    async def _discover(self, attempt: _Attempt) -> tuple[Endpoint, bool]:
        """Read the discovery document into ``attempt.read``: the chosen endpoint and whether
        the services list must be revalidated (the changeset moved)."""
        jurisdiction = attempt.read
        url = jurisdiction.discovery_url or ""
        previous = next(
            (p.note for p in jurisdiction.provenance if _own(p) and p.fact == "discovery"), None
        )
        fetched = await self.fetcher.get(url, accept=ACCEPT)
        document = parse_discovery(
            fetched.body, fetched.content_type, url=fetched.final_url or fetched.url
        )
        chosen, alternatives = document.choose()
        if chosen is None:
            raise DocumentError(
                "the discovery document lists no current GeoReport v2 endpoint", url=fetched.url
            )
        changeset_note = f"changeset {document.changeset}"
        replaced = {"discovery", "endpoints"}
        updated = jurisdiction
        new = [
            self._fact("discovery", fetched, changeset_note, attempt),
            self._fact("endpoints", fetched, None, attempt),
        ]
        if document.service_area is not None:
            updated = updated.with_boundary(document.service_area)
            replaced.add("boundary")
            new.append(self._fact("boundary", fetched, "service_area", attempt))
        provenance = [
            p
            for p in updated.provenance
            if not (p.fact in replaced and (_own(p) or p.fact == "boundary"))
        ]
        notes = [
            n
            for n in updated.notes
            if not n.startswith(_DISCOVERY_NOTE) or n.startswith(_SERVICES_NOTE)
        ]
        notes.extend(f"{_DISCOVERY_NOTE}{issue}" for issue in document.issues)
        attempt.read = replace(
            updated,
            endpoints=(chosen, *alternatives),
            provenance=(*provenance, *new),
            notes=tuple(notes),
        )
        return chosen, previous is not None and changeset_note not in previous


@dataclass
class _Attempt:
    """One refresh in progress: the jurisdiction with what has been read so far, and the
    fetches that were answered from a stale stored copy because the city failed."""

    read: Jurisdiction
    stale: list[str] = field(default_factory=list)
    stale_urls: set[str] = field(default_factory=set)


async def refresh_all(
    answerer: Answerer,
    jurisdictions: Sequence[Jurisdiction],
    *,
    concurrency: int = 8,
    jitter: float = 0.0,
    progress: Callable[[Jurisdiction], None] | None = None,
    rng: random.Random | None = None,
) -> list[Jurisdiction]:
    """Refresh these jurisdictions through the answerer, at most ``concurrency`` at a time, each
    after a random delay of up to ``jitter`` seconds (so resolvers do not hit a city at once)."""
    semaphore = asyncio.Semaphore(max(1, concurrency))
    random_ = rng or random.Random()

    async def one(jurisdiction: Jurisdiction) -> Jurisdiction:
        if jitter > 0:
            await asyncio.sleep(random_.uniform(0, jitter))
        async with semaphore:
            (result,) = await answerer.refresh([jurisdiction])
        if progress is not None:
            progress(result)
        return result

    return list(await asyncio.gather(*(one(j) for j in jurisdictions)))


__all__ = ["DiscoverySource", "refresh_all", "services_url"]
