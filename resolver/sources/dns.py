"""DNS as a :class:`~resolver.sources.answering.FactSource`: each jurisdiction's own
``_open311`` record attests (or contradicts) what a registry claims about it.

The rule (attestation): the registry's discovery URL for a domain is *verified* only when the
domain's own ``_open311`` record names the same URL. When they disagree, DNS wins: the
jurisdiction takes the record's discovery URL (and its endpoint, ``e=``, when the record gives one;
otherwise the registry's endpoints are dropped, since they came with a discovery URL the domain
does not claim), and the provenance says what the registry claimed and why it was overruled. No
record (NXDOMAIN, NODATA) or a broken one leaves the registry's facts in place, marked unverified
with the reason. Every fact carries its TTL: ``Provenance(source="dns" or "cache", ttl=...,
expires=...)``; a stale answer (the servers failed, RFC 8767) is marked ``stale`` and keeps the
facts it had, and a failure with nothing cached changes nothing and says so.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from ipaddress import ip_network

from common.models import Endpoint, Jurisdiction, Provenance
from discovery.dns_lookup import (
    DnsAnswer,
    DnsCache,
    DnsLookup,
    DnsUnavailable,
    MemoryDnsCache,
    TieredDnsCache,
)
from discovery.dns_records import Open311Record, UrlPolicy, parse_rrset, record_name
from discovery.urls import normalize_discovery_url
from resolver.config import Settings
from resolver.store import Store, StoreDnsCache

#: How long to wait before asking again after DNS failed with nothing cached.
RETRY_AFTER_FAILURE = 30.0

#: The facts this source writes; its provenance entries are replaced on each refresh.
FACTS = ("discovery_url", "endpoint", "dns_record")


def iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def same_url(one: str | None, other: str | None) -> bool:
    """Equal discovery URLs after the normalization both sides get (scheme, host case, slashes)."""
    if one is None or other is None:
        return one is other
    try:
        return normalize_discovery_url(one)[0] == normalize_discovery_url(other)[0]
    except ValueError:
        return one == other


class DnsSource:
    """Refreshes jurisdictions from their ``_open311`` records; name ``dns``."""

    name = "dns"

    def __init__(self, lookup: DnsLookup, *, url_policy: UrlPolicy | None = None) -> None:
        self.lookup = lookup
        self.url_policy = url_policy or UrlPolicy()
        self._expires: dict[str, float] = {}

    def needs(self, jurisdiction: Jurisdiction, now: float) -> bool:
        if not jurisdiction.domain:
            return False
        return self._expires.get(jurisdiction.id, 0.0) <= now

    async def refresh(self, jurisdiction: Jurisdiction) -> Jurisdiction:
        domain = jurisdiction.domain
        if not domain:
            return jurisdiction
        name = record_name(domain)
        now = self.lookup.clock()
        reference = f"{name.rstrip('.')} TXT"
        try:
            answer = await self.lookup.txt(name)
        except DnsUnavailable as error:
            self._expires[jurisdiction.id] = now + RETRY_AFTER_FAILURE
            note = f"DNS failed and nothing is cached ({error.reason}); registry facts unverified"
            fact = Provenance("dns_record", "dns", reference, note=note, verified=False)
            return _with_facts(jurisdiction, fact)
        expires = answer.expires_at if not answer.stale else now + self.lookup.stale_answer_ttl
        self._expires[jurisdiction.id] = max(expires, now + 1.0)
        return self.apply(jurisdiction, answer, reference, now)

    def apply(
        self, jurisdiction: Jurisdiction, answer: DnsAnswer, reference: str, now: float
    ) -> Jurisdiction:
        """The jurisdiction as its DNS answer says it is (attestation), with provenance."""
        ttl = answer.remaining(now) if not answer.stale else int(self.lookup.stale_answer_ttl)
        facts = DnsFacts(answer, reference, now, ttl)
        result = parse_rrset(answer.records, name=reference, policy=self.url_policy)
        record = result.record
        problems = "; ".join(e.detail for e in result.errors)
        if record is None:
            why = (
                f"{answer.negative}: the domain publishes no _open311 record"
                if answer.negative
                else f"no usable _open311 record ({problems})"
            )
            fact = facts.make("dns_record", f"{why}; registry facts unverified", verified=False)
            return _with_facts(jurisdiction, fact)
        return _attested(jurisdiction, record, facts, problems)


class DnsFacts:
    """Provenance entries for one DNS answer: source, TTL, expiry, stale and AD flags."""

    def __init__(self, answer: DnsAnswer, reference: str, now: float, ttl: int) -> None:
        self.answer = answer
        self.reference = reference
        self.ttl = ttl
        self.expires = iso(now + ttl)

    def make(self, fact: str, note: str, *, verified: bool) -> Provenance:
        answer = self.answer
        if answer.stale:
            note = f"stale (RFC 8767): DNS {answer.error}; {note}"
        return Provenance(
            fact,
            "cache" if answer.from_cache else "dns",
            self.reference,
            retrieved=iso(answer.fetched_at),
            expires=self.expires,
            note=note,
            ttl=self.ttl,
            stale=True if answer.stale else None,
            verified=verified,
            authenticated=True if answer.authenticated else None,
        )


def _attested(
    jurisdiction: Jurisdiction, record: Open311Record, facts: DnsFacts, problems: str
) -> Jurisdiction:
    claimed = jurisdiction.discovery_url
    extra = f" (ignored: {problems})" if problems else ""
    if claimed is None:
        note = "named by the domain's own _open311 record"
        verified = True
    elif same_url(claimed, record.discovery_url):
        note = "verified: the domain's own _open311 record names the same discovery URL"
        verified = True
    else:
        note = (
            f"DNS wins: the registry claimed {claimed}, but the domain's own _open311 record "
            f"names {record.discovery_url}"
        )
        verified = False
    made = [facts.make("discovery_url", note + extra, verified=verified)]
    endpoints = jurisdiction.endpoints
    if record.endpoint_url is not None:
        if [e.url for e in endpoints] != [record.endpoint_url]:
            endpoints = (Endpoint(record.endpoint_url),)
        made.append(facts.make("endpoint", "e= of the domain's own _open311 record", verified=True))
    elif not verified:
        endpoints = ()  # they came with a discovery URL the domain does not claim
    updated = replace(
        jurisdiction,
        discovery_url=record.discovery_url,
        endpoints=endpoints,
        jurisdiction_id=record.jurisdiction_id or jurisdiction.jurisdiction_id,
    )
    return _with_facts(updated, *made)


def _with_facts(jurisdiction: Jurisdiction, *facts: Provenance) -> Jurisdiction:
    kept = tuple(
        p for p in jurisdiction.provenance if not (p.fact in FACTS and p.source in ("dns", "cache"))
    )
    return replace(jurisdiction, provenance=(*kept, *facts))


def dns_lookup(settings: Settings, store: Store | None = None) -> DnsLookup:
    """The DNS lookups of ``geoweb serve`` and ``geoweb resolve``: the configured nameservers,
    with a memory cache in front of the store's (so stale answers survive a restart)."""
    cache: DnsCache = MemoryDnsCache()
    if store is not None:
        cache = TieredDnsCache(MemoryDnsCache(), StoreDnsCache(store))
    return DnsLookup(
        list(settings.dns_nameserver),
        port=settings.dns_port,
        timeout=settings.dns_timeout,
        cache=cache,
    )


def url_policy(settings: Settings) -> UrlPolicy:
    """URLs in records must be https; plain http only to loopback, and only when
    ``allow_network`` admits loopback addresses (a local stand-in, tests)."""
    loopback = ip_network("127.0.0.0/8")
    admits = any(
        net.version == 4 and net.overlaps(loopback)
        for net in (ip_network(text, strict=False) for text in settings.allow_network)
    )
    return UrlPolicy(allow_http_loopback=admits)


def dns_source(settings: Settings, store: Store | None = None) -> DnsSource:
    """The DNS fact source ``geoweb serve`` uses: the configured nameservers, https only (see
    :func:`url_policy`)."""
    return DnsSource(dns_lookup(settings, store), url_policy=url_policy(settings))


__all__ = ["DnsFacts", "DnsSource", "dns_lookup", "dns_source", "same_url", "url_policy"]
