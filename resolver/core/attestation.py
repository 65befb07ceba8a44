"""What a jurisdiction's own ``_open311`` record does to a registry's claims about it.

Pure: the DNS source fetches the record and the clock's reading; this module decides. The rule
(attestation): the registry's discovery URL for a domain is *verified* only when the domain's own
``_open311`` record names the same URL. When they disagree, DNS wins: the jurisdiction takes the
record's discovery URL (and its endpoint, ``e=``, when the record gives one; otherwise the
registry's endpoints are dropped, since they came with a discovery URL the domain does not claim),
and the provenance says what the registry claimed and why it was overruled. No record (NXDOMAIN,
NODATA) or a broken one leaves the registry's facts in place, marked unverified with the reason.
Every fact carries its TTL; a stale answer (the servers failed, RFC 8767) is marked ``stale``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from common.models import Endpoint, Jurisdiction, Provenance
from discovery.urls import normalize_discovery_url

if TYPE_CHECKING:
    from discovery.dns_lookup import DnsAnswer
    from discovery.dns_records import Open311Record, RecordSet

#: The facts DNS attests; its earlier provenance entries for them are replaced on each refresh.
FACTS: Final = ("discovery_url", "endpoint", "dns_record")

#: How long to wait before asking again after DNS failed with nothing cached, in seconds.
RETRY_AFTER_FAILURE: Final = 30.0


def iso(timestamp: float) -> str:
    """Seconds since the epoch as the ISO 8601 UTC time provenance entries carry."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def same_url(one: str | None, other: str | None) -> bool:
    """Equal discovery URLs after the normalization both sides get (scheme, host case, slashes)."""
    if one is None or other is None:
        return one is other
    try:
        return normalize_discovery_url(one)[0] == normalize_discovery_url(other)[0]
    except ValueError:
        return one == other


def ttl_left(answer: DnsAnswer, now: float, stale_ttl: float) -> int:
    """Seconds a DNS answer still holds at ``now``; a stale answer holds for ``stale_ttl``
    (RFC 8767's stale-answer TTL), since it is served only until the servers answer again."""
    return int(stale_ttl) if answer.stale else answer.remaining(now)


def recheck_at(answer: DnsAnswer, now: float, stale_ttl: float) -> float:
    """When to ask DNS again about a record: at its expiry, a stale one after ``stale_ttl``, and
    never sooner than a second from ``now`` (an answer with TTL 0 must not make a loop)."""
    expires = now + stale_ttl if answer.stale else answer.expires_at
    return max(expires, now + 1.0)


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


def attest(
    jurisdiction: Jurisdiction,
    parsed: RecordSet,
    answer: DnsAnswer,
    *,
    reference: str,
    now: float,
    stale_ttl: float,
) -> Jurisdiction:
    """The jurisdiction as its own ``_open311`` RRset (``parsed`` from ``answer``) says it is,
    with a provenance entry per fact; ``reference`` names the record (``_open311.<domain> TXT``)."""
    facts = DnsFacts(answer, reference, now, ttl_left(answer, now, stale_ttl))
    record = parsed.record
    problems = "; ".join(e.detail for e in parsed.errors)
    if record is None:
        why = (
            f"{answer.negative}: the domain publishes no _open311 record"
            if answer.negative
            else f"no usable _open311 record ({problems})"
        )
        fact = facts.make("dns_record", f"{why}; registry facts unverified", verified=False)
        return with_dns_facts(jurisdiction, fact)
    return _attested(jurisdiction, record, facts, problems)


def unreachable(jurisdiction: Jurisdiction, reason: str, reference: str) -> Jurisdiction:
    """The jurisdiction when DNS failed with nothing cached: its registry facts kept, marked
    unverified with the reason (an answer from the registry beats no answer)."""
    note = f"DNS failed and nothing is cached ({reason}); registry facts unverified"
    fact = Provenance("dns_record", "dns", reference, note=note, stale=True, verified=False)
    return with_dns_facts(jurisdiction, fact)


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
    return with_dns_facts(updated, *made)


def with_dns_facts(jurisdiction: Jurisdiction, *facts: Provenance) -> Jurisdiction:
    """The jurisdiction with these DNS facts in place of the ones an earlier answer gave."""
    kept = tuple(
        p for p in jurisdiction.provenance if not (p.fact in FACTS and p.source in ("dns", "cache"))
    )
    return replace(jurisdiction, provenance=(*kept, *facts))


__all__ = [
    "FACTS",
    "RETRY_AFTER_FAILURE",
    "DnsFacts",
    "attest",
    "iso",
    "recheck_at",
    "same_url",
    "ttl_left",
    "unreachable",
    "with_dns_facts",
]
