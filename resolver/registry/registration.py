"""Registering a jurisdiction with a registry, after it proves control of its domain: the pattern
of ACME's DNS-01 challenge (RFC 8555 section 8.4). The protocol is in docs/registry.md,
"Registration".

1. ``POST /v1/registry/challenges`` ``{"domain", "jurisdiction"}``: a random token, single use,
   valid for ``CHALLENGE_TTL`` seconds, and the TXT record to publish for it:
   ``_open311-challenge.<domain>`` holding base64url(SHA-256(token)). DNS shows the digest, never
   the token, and the registry keeps only the digest too: reading either does not let anyone else
   present the token.
2. ``POST /v1/registry/jurisdictions`` ``{"token", "domain", "feature"}``: the token, the entry and
   the id are checked, then DNS is asked (no cache in between) for the digest; only then is the
   entry saved with origin ``domain:<domain>``, attested, and answered from at once.
3. ``DELETE /v1/registry/jurisdictions/{id}`` ``{"token", "domain"}``: the same proof, to withdraw
   the domain's own entry.

A refusal is a 4xx ``{"error", "detail"}`` and changes nothing: a refused token stays usable until
it expires, so a jurisdiction can fix its record and try again.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import dns.asyncresolver
import dns.exception
import dns.resolver
from shapely.errors import ShapelyError

from common.errors import (
    Forbidden,
    GeoWebError,
    InvalidInput,
    RegistryError,
    UnknownJurisdiction,
)
from common.models import Endpoint, Jurisdiction, Provenance
from discovery.urls import is_hostname, normalize_base_url, normalize_discovery_url
from resolver.core.federation import domain_origin, timestamp
from resolver.core.validation import (
    MAX_ENDPOINTS,
    MAX_ID,
    MAX_NAME,
    MAX_SERVICES,
    InvalidEntry,
    check_entry,
    check_url,
)
from resolver.registry.documents import jurisdiction_from_feature
from resolver.store import Store
from resolver.store.challenges import ChallengeRecord, Claim, Holder, OpenChallenges

log = logging.getLogger(__name__)

#: The label under the domain where the challenge digest is published (RFC 8552 attribute leaf).
CHALLENGE_LABEL = "_open311-challenge"
#: Seconds a token can be used after it is issued.
CHALLENGE_TTL = 3600.0
#: The TTL suggested for the challenge record: short, it is removed after use.
CHALLENGE_RECORD_TTL = 60
#: Seconds used and expired challenges are kept after expiry, so that a reused or expired token
#: is named as such (later it is only unknown).
CHALLENGE_RETENTION = 86400.0
#: Open (unused, unexpired) challenges allowed per domain, and in all.
MAX_OPEN_PER_DOMAIN = 20
MAX_OPEN = 100_000

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


class UnknownToken(Forbidden):
    """No challenge was issued with this token."""

    code = "unknown_token"


class TokenExpired(Forbidden):
    """The token has expired; request a new challenge."""

    code = "token_expired"


class TokenUsed(Forbidden):
    """The token was used already; each token proves control once."""

    code = "token_used"


class TokenMismatch(Forbidden):
    """The token was issued for another domain or jurisdiction."""

    code = "token_mismatch"


class ChallengeAbsent(Forbidden):
    """The domain publishes no challenge record."""

    code = "challenge_absent"


class ChallengeMismatch(Forbidden):
    """The domain's challenge record holds another value than this token's digest."""

    code = "challenge_mismatch"


class JurisdictionHeld(Forbidden):
    """The jurisdiction id is held by an entry for another domain."""

    code = "jurisdiction_held"


class RegistrationClosed(Forbidden):
    """This registry does not take registrations from that domain."""

    code = "registration_closed"


class TooManyChallenges(GeoWebError):
    """Too many challenges are open; wait for some to be used or to expire."""

    status = 429
    code = "too_many_challenges"


class DnsCheckFailed(GeoWebError):
    """DNS could not be asked for the challenge record; nothing was changed, try again."""

    status = 503
    code = "dns_check_failed"


def challenge_digest(token: str) -> str:
    """What the domain publishes for a token: base64url(SHA-256(token)) without padding."""
    digest = hashlib.sha256(token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def challenge_name(domain: str) -> str:
    """The absolute name of a domain's challenge record."""
    return f"{CHALLENGE_LABEL}.{domain.strip('.')}."


def normalize_domain(value: Any) -> str:
    """A domain as registrations use it: lowercase, no final dot; IDNs in their ASCII form."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("domain must be a DNS name such as city.example", parameter="domain")
    text = value.strip().rstrip(".").lower()
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidInput(f"{value[:100]!r} is not a usable domain name") from None
    # The challenge name must fit in 253 characters as well.
    if not is_hostname(text) or len(challenge_name(text)) > 254:
        raise InvalidInput(
            f"{value[:100]!r} is not a usable domain name (letters, digits and inner hyphens, "
            "at least two labels, not an address)",
            parameter="domain",
        )
    return text


def check_jurisdiction_id(value: Any) -> str:
    """A registry id for a new entry: letters, digits and ``. _ : -``, at most 200 characters."""
    if not isinstance(value, str) or len(value) > MAX_ID or not _ID.fullmatch(value):
        shown = value[:100] if isinstance(value, str) else value
        raise InvalidInput(
            f"the jurisdiction id must be 1 to {MAX_ID} letters, digits, '.', '_', ':' or '-', "
            f"starting with a letter or digit (got {shown!r})",
            parameter="jurisdiction",
        )
    return value


@dataclass(frozen=True, slots=True)
class Challenge:
    """One issued challenge, as stored (registry timestamps)."""

    digest: str
    domain: str
    jurisdiction: str
    issued: str
    expires: str
    used: str | None = None

    @classmethod
    def of(cls, record: ChallengeRecord) -> Challenge:
        return cls(
            record.digest,
            record.domain,
            record.jurisdiction,
            record.issued,
            record.expires,
            record.used,
        )

    def record(self) -> ChallengeRecord:
        """The challenge as the store keeps it."""
        return ChallengeRecord(
            self.digest, self.domain, self.jurisdiction, self.issued, self.expires, self.used
        )

    def record_text(self, ttl: int = CHALLENGE_RECORD_TTL) -> str:
        """The record as one master-file line."""
        return f'{challenge_name(self.domain)} {ttl} IN TXT "{self.digest}"'

    def to_dict(self, token: str) -> dict[str, Any]:
        return {
            "token": token,
            "domain": self.domain,
            "jurisdiction": self.jurisdiction,
            "issued": self.issued,
            "expires": self.expires,
            "record": {
                "name": challenge_name(self.domain),
                "type": "TXT",
                "ttl": CHALLENGE_RECORD_TTL,
                "value": self.digest,
            },
            "zone_line": self.record_text(),
            "register": "/v1/registry/jurisdictions",
        }

    def check(self, domain: str, jurisdiction: str) -> None:
        """The token is for this domain and this jurisdiction, or :class:`TokenMismatch`."""
        if domain != self.domain:
            raise TokenMismatch(
                f"the token was issued for the domain {self.domain}, not {domain}",
                issued_for=self.domain,
            )
        if jurisdiction != self.jurisdiction:
            raise TokenMismatch(
                f"the token was issued for the jurisdiction {self.jurisdiction!r}, "
                f"not {jurisdiction!r}",
                issued_for=self.jurisdiction,
            )


async def published_digests(
    domain: str, *, nameservers: Sequence[str] = (), port: int = 53, timeout: float = 2.0
) -> list[str]:
    """The values of the domain's challenge TXT records, asked now with no cache in between: of
    the given nameservers, or the system's resolver when none are given. Empty when the name has
    no TXT records (NXDOMAIN, NODATA); :class:`DnsCheckFailed` when DNS does not answer."""
    name = challenge_name(domain)
    try:
        resolver = dns.asyncresolver.Resolver(configure=not nameservers)
    except dns.resolver.NoResolverConfiguration as exc:
        raise DnsCheckFailed(f"no nameserver to ask for {name}: {exc}", name=name) from None
    if nameservers:
        resolver.nameservers = list(nameservers)
        resolver.port = port
    resolver.cache = None
    resolver.timeout = resolver.lifetime = timeout
    try:
        answer = await resolver.resolve(name, "TXT", search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return []
    except (dns.exception.DNSException, OSError) as exc:
        why = "timed out" if isinstance(exc, dns.exception.Timeout) else str(exc)
        raise DnsCheckFailed(f"DNS did not answer for {name}: {why}", name=name) from None
    if answer.rrset is None:
        return []
    values = (b"".join(rdata.strings).decode("ascii", "replace") for rdata in answer.rrset)
    return sorted(values)


@dataclass
class Registrar:
    """Issues challenges, proves them by DNS and writes the entries they allow, in ``store``.

    Its methods other than :meth:`prove` block on the store: async code calls them through
    :func:`resolver.store.aio.in_thread`."""

    store: Store
    nameservers: tuple[str, ...] = ()
    dns_port: int = 53
    dns_timeout: float = 2.0
    ttl: float = CHALLENGE_TTL
    #: The domains (with their subdomains) that may register themselves; none: registration is
    #: closed. Proving a domain proves who speaks for it, not which area it may claim, so the
    #: operator decides whose claims to take.
    domains: tuple[str, ...] = ()
    #: One registration is saved at a time in this process, so that two of them for one id wait
    #: for each other here rather than on the store's writers' lock in two threads.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def admit(self, domain: str) -> None:
        """Refuse a domain this registry does not take registrations from."""
        allowed = [d.lower().strip(".") for d in self.domains]
        if not any(domain == d or domain.endswith("." + d) for d in allowed):
            if not allowed:
                raise RegistrationClosed(
                    "this registry takes no registrations (its operator lists the domains that "
                    "may register with --register-domain)",
                    domain=domain,
                )
            raise RegistrationClosed(
                f"this registry takes registrations from {', '.join(allowed)} and their "
                f"subdomains, not from {domain}",
                domain=domain,
            )

    def issue(self, domain: str, jurisdiction: str) -> tuple[str, Challenge]:
        """A new token and its challenge; refused when the domain may not register here, another
        domain holds the id or too many challenges are open."""
        self.admit(domain)
        token = secrets.token_urlsafe(32)
        now = dt.datetime.now(dt.UTC)
        challenge = Challenge(
            digest=challenge_digest(token),
            domain=domain,
            jurisdiction=jurisdiction,
            issued=timestamp(now),
            expires=timestamp(now + dt.timedelta(seconds=self.ttl)),
        )

        def admit(open_now: OpenChallenges) -> None:
            _check_holder(open_now.holder, jurisdiction, domain)
            mine, total = open_now.for_domain, open_now.total
            if mine >= MAX_OPEN_PER_DOMAIN or total >= MAX_OPEN:
                limit = MAX_OPEN_PER_DOMAIN if mine >= MAX_OPEN_PER_DOMAIN else MAX_OPEN
                raise TooManyChallenges(
                    f"{limit} challenges are open already"
                    + (f" for {domain}" if limit == MAX_OPEN_PER_DOMAIN else "")
                    + "; use one or wait until they expire",
                    limit=limit,
                )

        forgotten = timestamp(now - dt.timedelta(seconds=CHALLENGE_RETENTION))
        self.store.add_challenge(challenge.record(), forget_before=forgotten, admit=admit)
        log.info("challenge issued for %s (jurisdiction %s)", domain, jurisdiction)
        return token, challenge

    def find(self, token: str) -> Challenge:
        """The open challenge of a token, or why it cannot be used."""
        if not _TOKEN.fullmatch(token):
            raise UnknownToken("the token is not one this registry issues (wrong or mangled?)")
        record = self.store.challenge(challenge_digest(token))
        if record is None:
            raise UnknownToken("no challenge was issued with this token (or it was forgotten)")
        challenge = Challenge.of(record)
        if challenge.used is not None:
            raise TokenUsed(f"the token was used at {challenge.used}; request a new challenge")
        if challenge.expires <= timestamp():
            raise TokenExpired(
                f"the token expired at {challenge.expires}; request a new challenge",
                expired=challenge.expires,
            )
        return challenge

    async def prove(self, challenge: Challenge) -> None:
        """The domain publishes the challenge's digest now, or a refusal saying what it shows."""
        values = await published_digests(
            challenge.domain,
            nameservers=self.nameservers,
            port=self.dns_port,
            timeout=self.dns_timeout,
        )
        name = challenge_name(challenge.domain)
        if not values:
            raise ChallengeAbsent(
                f"{name} has no TXT record; publish {challenge.record_text()} and try again "
                "(the token stays valid until it expires)",
                name=name,
            )
        if challenge.digest not in values:
            raise ChallengeMismatch(
                f"{name} holds {len(values)} TXT value(s), none of them this token's digest "
                f"{challenge.digest}",
                name=name,
                found=[v[:100] for v in values[:5]],
            )

    def check_free(self, jurisdiction: str, domain: str) -> bool:
        """:class:`JurisdictionHeld` unless the id is free or the domain's own entry; True when
        the domain's entry exists."""
        return _check_holder(self.store.holder(jurisdiction), jurisdiction, domain)

    def check_own(self, jurisdiction: str, domain: str) -> None:
        """The store holds the domain's own entry with this id, or 404 / 403 saying why not."""
        _check_own(self.store.holder(jurisdiction), jurisdiction, domain)

    def save(self, challenge: Challenge, entry: Jurisdiction, notes: Sequence[str]) -> bool:
        """Spend the token, check again that the id is free or the domain's own, and save the
        entry: one transaction, so a refusal or a failure changes nothing and the token stays
        usable. True when it replaced an entry."""
        existed = False

        def check(claim: Claim) -> None:
            nonlocal existed
            if not claim.spent:
                raise _spent_meanwhile()
            existed = _check_holder(claim.holder, entry.id, challenge.domain)

        self.store.register(
            entry,
            digest=challenge.digest,
            at=timestamp(),
            source=f"registration by {challenge.domain}",
            report={"domain": challenge.domain, "notes": list(notes)},
            check=check,
        )
        log.info("jurisdiction %s registered by %s", entry.id, challenge.domain)
        return existed

    def withdraw(self, challenge: Challenge) -> None:
        """Spend the token and delete the domain's entry (checked again): one transaction."""

        def check(claim: Claim) -> None:
            _check_own(claim.holder, challenge.jurisdiction, challenge.domain)
            if not claim.spent:
                raise _spent_meanwhile()

        self.store.withdraw(
            challenge.jurisdiction,
            digest=challenge.digest,
            at=timestamp(),
            source=f"withdrawn by {challenge.domain}",
            check=check,
        )
        log.info("jurisdiction %s withdrawn by %s", challenge.jurisdiction, challenge.domain)


def _spent_meanwhile() -> TokenUsed:
    return TokenUsed("the token was used by another request meanwhile; request a new challenge")


def _check_holder(holder: Holder, jurisdiction: str, domain: str) -> bool:
    """Refuse an id held by an entry for another domain (or for none); True when it is the
    domain's own entry."""
    if holder.exists and holder.domain != domain:
        held = holder.domain
        whose = f"the domain {held}" if held else "no domain (an entry of the registry's operator)"
        raise JurisdictionHeld(
            f"the jurisdiction id {jurisdiction!r} is held by an entry for {whose}; only that "
            "domain can change it",
            jurisdiction=jurisdiction,
            held_by=held,
        )
    return holder.exists


def _check_own(holder: Holder, jurisdiction: str, domain: str) -> None:
    if not holder.exists:
        raise UnknownJurisdiction(jurisdiction)
    _check_holder(holder, jurisdiction, domain)


# -- the entry ----------------------------------------------------------------------------------


def entry_from_feature(
    feature: Any, domain: str, *, now: str | None = None
) -> tuple[Jurisdiction, list[str]]:
    """The entry a registration asks for, checked, with its boundary repaired (and a note per
    repair): origin ``domain:<domain>``, attested. :class:`InvalidEntry` says what is wrong.

    Only what a jurisdiction says about itself is taken from the feature: id, name, boundary,
    discovery URL, endpoints, jurisdiction_id, services and an expiry. Origin, version, time,
    attestation and provenance are the registry's to set."""
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise InvalidEntry('feature must be a GeoJSON Feature ({"type": "Feature", ...})')
    props = feature.get("properties")
    if not isinstance(props, dict):
        raise InvalidEntry("the feature has no properties object")
    try:
        jurisdiction = check_jurisdiction_id(props.get("id"))
    except InvalidInput as error:
        raise InvalidEntry(f"properties.id: {error.detail}") from None
    claimed = props.get("domain")
    if claimed is not None and _same_domain(claimed) != domain:
        raise InvalidEntry(f"the entry names the domain {claimed!r}, the registration {domain}")
    entry_meta = props.get("entry") or {}
    if not isinstance(entry_meta, dict):
        raise InvalidEntry("properties.entry must be an object")
    if feature.get("geometry") is None:
        raise InvalidEntry("the entry has no boundary: a registered jurisdiction needs one")
    clean = {
        "id": jurisdiction,
        "name": _name(props.get("name")),
        "domain": domain,
        "jurisdiction_id": _optional_text(props.get("jurisdiction_id"), "jurisdiction_id", 253),
        "discovery_url": _https(props.get("discovery_url"), "discovery_url", base=False),
        "endpoints": _endpoints(props.get("endpoints")),
        "services": _services(props.get("services")),
        "boundary_generation": props.get("boundary_generation"),
    }
    try:
        # The boundary rules every path applies (boundaries.geojson): vertices counted before
        # shapely builds anything, WGS84, split at the antimeridian, repaired to polygons.
        parsed = jurisdiction_from_feature(
            {"type": "Feature", "geometry": feature["geometry"], "properties": clean}
        )
    except RegistryError as error:
        raise InvalidEntry(error.detail) from None
    except (ShapelyError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidEntry(f"the boundary is not a usable GeoJSON geometry: {exc}") from None
    boundary, notes = parsed.boundary, list(parsed.notes)
    stamp = now or timestamp()
    origin = domain_origin(domain)
    proof = f"registered by {domain}, which proved control of the domain by DNS challenge"
    provenance = tuple(
        Provenance(fact, "registry", origin, retrieved=stamp, note=proof)
        for fact in ("boundary", "endpoints")
    )
    entry = replace(
        parsed,
        origin=origin,
        version=0,
        updated=None,
        expires=_expiry(entry_meta.get("expires"), stamp),
        attested=True,
        provenance=provenance,
        notes=tuple(notes),
    ).with_boundary(boundary)
    check_entry(entry)  # what every entry, from anywhere, is held to
    return entry, notes


def _same_domain(value: Any) -> str | None:
    try:
        return normalize_domain(value)
    except InvalidInput:
        return None


def _name(value: Any) -> str:
    text = _optional_text(value, "name", MAX_NAME)
    if text is None:
        raise InvalidEntry("properties.name is required: the jurisdiction's display name")
    return text


def _optional_text(value: Any, key: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidEntry(f"properties.{key} must be text of 1 to {limit} characters")
    if any(ord(c) < 32 for c in value):
        raise InvalidEntry(f"properties.{key} must not contain control characters")
    return value.strip()


def _https(value: Any, key: str, *, base: bool) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidEntry(f"{key} is required: an absolute https URL")
    try:
        url = normalize_base_url(value)[0] if base else normalize_discovery_url(value)[0]
    except ValueError as exc:
        raise InvalidEntry(f"{key}: {exc}") from None
    if url is None or urlsplit(url).scheme != "https" or "://" not in value:
        raise InvalidEntry(f"{key} must be an absolute https URL, not {value[:200]!r}")
    return check_url(url, key)


def _endpoints(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ENDPOINTS:
        raise InvalidEntry(f"properties.endpoints must be a list of at most {MAX_ENDPOINTS}")
    endpoints = []
    for item in value:
        if not isinstance(item, dict):
            raise InvalidEntry("each endpoint must be an object with a url")
        formats = item.get("formats")
        if formats is not None and (
            not isinstance(formats, list) or not all(isinstance(f, str) for f in formats)
        ):
            raise InvalidEntry("an endpoint's formats must be a list of media types")
        for key in ("specification", "type", "note"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise InvalidEntry(f"an endpoint's {key} must be text")
        url = _https(item.get("url"), "endpoint url", base=True)
        endpoints.append(Endpoint.from_dict({**item, "url": url}).to_dict())
    return endpoints


def _services(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_SERVICES:
        raise InvalidEntry(f"properties.services must be a list of at most {MAX_SERVICES}")
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("service_code"), str | int):
            raise InvalidEntry("each service must be an object with a service_code")
        keywords = item.get("keywords")
        if keywords is not None and not isinstance(keywords, list):
            raise InvalidEntry("a service's keywords must be a list")
    return value


def _expiry(value: Any, now: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEntry("entry.expires must be an ISO 8601 time, e.g. 2030-01-01T00:00:00Z")
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEntry(f"entry.expires is not an ISO 8601 time: {value[:60]!r}") from None
    stamp = timestamp(when if when.tzinfo else when.replace(tzinfo=dt.UTC))
    if stamp <= now:
        raise InvalidEntry(f"entry.expires ({stamp}) is in the past")
    return stamp


__all__ = [
    "CHALLENGE_LABEL",
    "CHALLENGE_TTL",
    "Challenge",
    "ChallengeAbsent",
    "ChallengeMismatch",
    "DnsCheckFailed",
    "InvalidEntry",
    "JurisdictionHeld",
    "Registrar",
    "TokenExpired",
    "TokenMismatch",
    "TokenUsed",
    "TooManyChallenges",
    "UnknownToken",
    "challenge_digest",
    "challenge_name",
    "entry_from_feature",
    "normalize_domain",
    "published_digests",
]
