"""DNS lookups for GeoWeb DNS: dnspython's async resolver, with a cache that keeps what DNS says and
for how long.

- Positive answers are kept for their TTL.
- NXDOMAIN and NODATA are kept for the negative TTL of RFC 2308 section 5: the smaller of the SOA
  record's TTL and its MINIMUM field, from the authority section; without an SOA they are not
  cached.
- When the servers fail (timeout, SERVFAIL, refused, unreachable), an expired answer up to
  ``max_stale`` seconds old is served instead, marked ``stale`` with the reason (RFC 8767
  serve-stale); the servers are not asked again about that name for ``stale_answer_ttl`` seconds
  (RFC 8767's failure recheck timer, 30 s), so a dead server costs one timeout per name, not one
  per request. With nothing cached, :class:`DnsUnavailable` says so: nothing is invented; the
  failure itself is remembered for ``stale_answer_ttl`` seconds too (RFC 9520), so asking again
  at once fails at once instead of waiting for the same timeout.
- Queries carry the AD bit (RFC 6840 5.7): a validating resolver answers with AD set when it
  authenticated the data with DNSSEC, and the answer reports it (``authenticated``). An
  authoritative server never sets it.

The cache is small and swappable like dnspython's: :class:`DnsCache` (``get``, ``put``, ``flush``,
``stats``) with :class:`MemoryDnsCache`, an LRU bounded by entries, and :class:`TieredDnsCache`,
a memory cache in front of a persistent one (``resolver.store.caches.StoreDnsCache``: the store,
so that stale answers survive a restart of the process; asked only on a memory miss).
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

from common.errors import GeoWebError

#: RFC 8767 section 5: how long a stale answer is used before the servers are asked again.
DEFAULT_STALE_ANSWER_TTL = 30.0
#: RFC 8767 section 5 suggests one to three days of serving stale data.
DEFAULT_MAX_STALE = 24 * 3600.0

NegativeKind = Literal["nxdomain", "nodata"]
TxtStrings = tuple[bytes, ...]


class DnsUnavailable(GeoWebError):
    """DNS could not answer and nothing usable is cached."""

    status = 503
    code = "dns_unavailable"

    def __init__(self, name: str, rdtype: str, reason: str) -> None:
        super().__init__(
            f"no answer for {name} {rdtype} and none cached: {reason}",
            name=name,
            rdtype=rdtype,
            reason=reason,
        )


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """What DNS said about one name and type, and how long it holds.

    ``records``: TXT records as their character-strings, PTR and other types as text (names
    lowercased without the final dot), sorted. ``negative``: ``nxdomain`` or ``nodata`` for an
    empty answer. ``ttl``: the TTL the answer was given with (the negative TTL for a negative
    answer). ``from_cache``: not asked of a server this time; ``stale``: expired and served because
    the servers failed (``error`` says how).
    """

    name: str
    rdtype: str
    records: tuple[Any, ...]
    ttl: int
    fetched_at: float
    negative: NegativeKind | None = None
    authenticated: bool = False
    from_cache: bool = False
    stale: bool = False
    error: str | None = None

    @property
    def expires_at(self) -> float:
        return self.fetched_at + self.ttl

    def remaining(self, now: float) -> int:
        """Seconds the answer still holds (0 when expired)."""
        return max(0, int(self.expires_at - now))


class DnsCache(Protocol):
    """Where answers are kept, keyed by ``(name, rdtype)``. Coroutines, because lookups call them
    on the event loop: a cache kept in memory answers at once, one kept in a database does its
    blocking work in a thread."""

    async def get(self, key: tuple[str, str]) -> DnsAnswer | None: ...

    async def put(self, answer: DnsAnswer) -> None: ...

    async def flush(self, key: tuple[str, str] | None = None) -> None: ...


@dataclass
class DnsStats:
    hits: int = 0
    misses: int = 0
    queries: int = 0
    negative_hits: int = 0
    stale_served: int = 0
    failures: int = 0


class MemoryDnsCache:
    """An in-process LRU :class:`DnsCache`; expired entries stay (for serve-stale) until evicted."""

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], DnsAnswer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: tuple[str, str]) -> DnsAnswer | None:
        answer = self._entries.get(key)
        if answer is not None:
            self._entries.move_to_end(key)
        return answer

    async def put(self, answer: DnsAnswer) -> None:
        key = (answer.name, answer.rdtype)
        self._entries[key] = answer
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def flush(self, key: tuple[str, str] | None = None) -> None:
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)


class TieredDnsCache:
    """A fast cache in front of a slow, persistent one: reads try the front first and copy what
    the back had into it; writes go to both."""

    def __init__(self, front: DnsCache, back: DnsCache) -> None:
        self.front = front
        self.back = back

    async def get(self, key: tuple[str, str]) -> DnsAnswer | None:
        answer = await self.front.get(key)
        if answer is None:
            answer = await self.back.get(key)
            if answer is not None:
                await self.front.put(answer)
        return answer

    async def put(self, answer: DnsAnswer) -> None:
        await self.front.put(answer)
        await self.back.put(answer)

    async def flush(self, key: tuple[str, str] | None = None) -> None:
        await self.front.flush(key)
        await self.back.flush(key)


@functools.lru_cache(maxsize=65_536)
def canonical(name: str) -> str:
    """A name as cache keys use it: lowercase, absolute (final dot). Remembered: every lookup,
    cached or not, needs it."""
    return dns.name.from_text(name).to_text().lower()


class DnsLookup:
    """Asks the configured nameservers (``port`` for all), with caching and serve-stale."""

    def __init__(
        self,
        nameservers: Sequence[str],
        *,
        port: int = 53,
        timeout: float = 2.0,
        cache: DnsCache | None = None,
        clock: Callable[[], float] = time.time,
        max_stale: float = DEFAULT_MAX_STALE,
        stale_answer_ttl: float = DEFAULT_STALE_ANSWER_TTL,
    ) -> None:
        if not nameservers:
            raise ValueError("at least one nameserver is needed")
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = list(nameservers)
        resolver.port = port
        resolver.timeout = timeout
        resolver.lifetime = timeout
        resolver.cache = None  # ours keeps negative and stale answers too
        resolver.use_edns(0, 0, 1232)
        resolver.flags = dns.flags.RD | dns.flags.AD
        self._resolver = resolver
        self.nameservers = tuple(nameservers)
        self.port = port
        self.cache: DnsCache = cache if cache is not None else MemoryDnsCache()
        self.clock = clock
        self.max_stale = max_stale
        self.stale_answer_ttl = stale_answer_ttl
        self.stats = DnsStats()
        self._recheck_at: dict[tuple[str, str], float] = {}
        self._failed: dict[tuple[str, str], tuple[float, str]] = {}

    async def txt(self, name: str) -> DnsAnswer:
        return await self.query(name, "TXT")

    async def ptr(self, name: str) -> DnsAnswer:
        return await self.query(name, "PTR")

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        """The answer for ``name``/``rdtype``: cached while its TTL lasts, else asked; a stale
        cached answer when the servers fail; else :class:`DnsUnavailable`."""
        key = (canonical(name), rdtype.upper())
        now = self.clock()
        cached = await self.cache.get(key)
        if cached is not None and now < cached.expires_at:
            self.stats.hits += 1
            self.stats.negative_hits += cached.negative is not None
            return replace(cached, from_cache=True, stale=False, error=None)
        recheck = self._recheck_at.get(key)
        if cached is not None and recheck is not None and now < recheck:
            self.stats.stale_served += 1
            return replace(cached, from_cache=True, stale=True, error=cached.error)
        failed = self._failed.get(key)
        if cached is None and failed is not None and now < failed[0]:
            self.stats.failures += 1
            raise DnsUnavailable(key[0], key[1], f"{failed[1]} (a moment ago; not asked again yet)")
        self.stats.misses += 1
        try:
            answer = await self._ask(key[0], key[1], now)
        except (dns.exception.DNSException, OSError) as exc:
            self.stats.failures += 1
            reason = _reason(exc)
            if cached is not None and now <= cached.expires_at + self.max_stale:
                self.stats.stale_served += 1
                if len(self._recheck_at) > 10_000:
                    self._recheck_at.clear()
                self._recheck_at[key] = now + self.stale_answer_ttl
                stale = replace(cached, from_cache=True, stale=True, error=reason)
                await self.cache.put(replace(stale, from_cache=False))
                return stale
            if len(self._failed) > 10_000:
                self._failed.clear()
            self._failed[key] = (now + self.stale_answer_ttl, reason)
            raise DnsUnavailable(key[0], key[1], reason) from None
        self._recheck_at.pop(key, None)
        self._failed.pop(key, None)
        if answer.ttl > 0:
            await self.cache.put(answer)
        return answer

    async def _ask(self, name: str, rdtype: str, now: float) -> DnsAnswer:
        self.stats.queries += 1
        qname = dns.name.from_text(name)
        try:
            result = await self._resolver.resolve(
                qname, rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN as exc:
            response = exc.response(qname)  # type: ignore[no-untyped-call]
            return _negative(name, rdtype, response, "nxdomain", now)
        response = result.response
        if result.rrset is None:
            return _negative(name, rdtype, response, "nodata", now)
        return DnsAnswer(
            name=name,
            rdtype=rdtype,
            records=_records(result.rrset, rdtype),
            ttl=result.rrset.ttl,
            fetched_at=now,
            authenticated=bool(response.flags & dns.flags.AD),
        )


def _records(rrset: dns.rrset.RRset, rdtype: str) -> tuple[Any, ...]:
    if rdtype == "TXT":
        return tuple(sorted(tuple(rdata.strings) for rdata in rrset))
    if rdtype == "PTR":
        return tuple(sorted(rdata.target.to_text(omit_final_dot=True).lower() for rdata in rrset))
    return tuple(sorted(rdata.to_text() for rdata in rrset))


def _negative(
    name: str, rdtype: str, response: dns.message.Message, kind: NegativeKind, now: float
) -> DnsAnswer:
    """RFC 2308 section 5: the negative TTL is min(SOA TTL, SOA MINIMUM); no SOA, no caching."""
    ttl = 0
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and rrset.rdclass == dns.rdataclass.IN:
            ttl = min(rrset.ttl, rrset[0].minimum)
            break
    return DnsAnswer(
        name=name,
        rdtype=rdtype,
        records=(),
        ttl=ttl,
        fetched_at=now,
        negative=kind,
        authenticated=bool(response.flags & dns.flags.AD),
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "timed out"
    if isinstance(exc, dns.resolver.NoNameservers):
        errors = exc.kwargs.get("errors") or []
        parts = [f"{e[0]} port {e[2]}: {_error_text(e[3])}" for e in errors[:3] if len(e) >= 4]
        return "no server answered" + (": " + "; ".join(parts) if parts else "")
    return f"{type(exc).__name__}: {exc}"


def _error_text(error: object) -> str:
    if isinstance(error, str):
        return error
    if isinstance(error, dns.exception.Timeout):
        return "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return f"{type(error).__name__} {error}".strip()


__all__ = [
    "DnsAnswer",
    "DnsCache",
    "DnsLookup",
    "DnsStats",
    "DnsUnavailable",
    "MemoryDnsCache",
    "TieredDnsCache",
    "canonical",
]
