"""DNS as a :class:`~resolver.sources.answering.FactSource`: each jurisdiction's own
``_open311`` record attests (or contradicts) what a registry claims about it.

This module only asks DNS and keeps when to ask again; what the answer does to the jurisdiction
(attestation, "DNS wins") is decided in :mod:`resolver.core.attestation`. A failure with nothing
cached changes nothing and says so.
"""

from __future__ import annotations

import logging
from ipaddress import ip_network

from common.models import Jurisdiction
from discovery.dns_lookup import (
    DnsAnswer,
    DnsCache,
    DnsLookup,
    DnsUnavailable,
    MemoryDnsCache,
    TieredDnsCache,
)
from discovery.dns_records import UrlPolicy, parse_rrset, record_name
from resolver.config import Settings
from resolver.core.attestation import (
    RETRY_AFTER_FAILURE,
    attest,
    recheck_at,
    same_url,
    unreachable,
)
from resolver.store import Store
from resolver.store.caches import StoreDnsCache

log = logging.getLogger(__name__)


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
            self._expires[jurisdiction.id] = recheck_at(answer, now, self.lookup.stale_answer_ttl)
            return self.apply(jurisdiction, answer, reference, now)
        except DnsUnavailable as error:
            self._expires[jurisdiction.id] = now + RETRY_AFTER_FAILURE
            return unreachable(jurisdiction, error.reason, reference)
        except Exception as error:  # one domain's broken answer stays with that domain
            log.warning("DNS facts of %s failed", jurisdiction.id, exc_info=True)
            self._expires[jurisdiction.id] = now + RETRY_AFTER_FAILURE
            why = f"its answer could not be used ({type(error).__name__}: {str(error)[:200]})"
            return unreachable(jurisdiction, why, reference)

    def apply(
        self, jurisdiction: Jurisdiction, answer: DnsAnswer, reference: str, now: float
    ) -> Jurisdiction:
        """The jurisdiction as its DNS answer says it is (see :func:`attest`)."""
        parsed = parse_rrset(answer.records, name=reference, policy=self.url_policy)
        return attest(
            jurisdiction,
            parsed,
            answer,
            reference=reference,
            now=now,
            stale_ttl=self.lookup.stale_answer_ttl,
        )


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


__all__ = ["DnsSource", "dns_lookup", "dns_source", "same_url", "url_policy"]
