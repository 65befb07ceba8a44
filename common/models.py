"""Typed models shared by every part of GeoWeb DNS.

Coordinates: every public function names its arguments ``lat`` and ``long`` (WGS84 degrees);
geometries are shapely objects in GeoJSON order, x = longitude, y = latitude.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import shapely
from shapely.geometry.base import BaseGeometry

#: The specification string Open311 service discovery documents use for GeoReport v2.
GEOREPORT_V2 = "http://wiki.open311.org/GeoReport_v2"

#: Where a fact came from. ``registry``: a registry entry (embedded or mirrored); ``import``: a
#: boundary file imported by an operator; ``dns``: the jurisdiction's own ``_open311`` TXT record;
#: ``discovery``: its service discovery document or services list; ``cache``: a stored copy of
#: one of those; ``fallback``: the operator's ad hoc fallback endpoint.
SourceKind = Literal["registry", "import", "dns", "discovery", "cache", "fallback"]

#: How a concern relates to the chosen jurisdiction. ``any``: no concern was asked; ``verified``:
#: its services list offers it; ``unverified``: its services are not known yet; ``not_offered``: no
#: covering jurisdiction offers it.
ConcernStatus = Literal["any", "verified", "unverified", "not_offered"]

#: Why an answer needs the fallback: nobody covers the point, nobody covering it offers the concern,
#: or the responsible jurisdiction has no current GeoReport v2 endpoint.
FallbackReason = Literal["no_jurisdiction", "concern_not_offered", "no_endpoint"]


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where one fact of an answer or entry came from, and until when it holds."""

    fact: str
    source: SourceKind
    reference: str
    retrieved: str | None = None
    expires: str | None = None
    note: str | None = None
    #: DNS facts, so a client can tell how fresh and how trustworthy each one is: the TTL left
    #: when answered, in seconds; ``stale``: the fact stands in for one an upstream failed to give
    #: just now (a cached DNS answer served after a failure, RFC 8767; a stored copy served while
    #: a city is down; a failed refresh; DNS or a registry zone that could not be read);
    #: ``verified``: the domain's own record agrees with the registry; ``authenticated``: the
    #: answer had the DNSSEC AD flag from a validating resolver.
    ttl: int | None = None
    stale: bool | None = None
    verified: bool | None = None
    authenticated: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}


@dataclass(frozen=True, slots=True)
class Service:
    """One entry of a GeoReport v2 services list."""

    service_code: str
    service_name: str
    description: str = ""
    keywords: tuple[str, ...] = ()
    group: str = ""
    type: str = "realtime"
    metadata: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "service_code": self.service_code,
            "service_name": self.service_name,
            "description": self.description,
            "keywords": list(self.keywords),
            "group": self.group,
            "type": self.type,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Service:
        return cls(
            service_code=str(data["service_code"]),
            service_name=str(data.get("service_name") or ""),
            description=str(data.get("description") or ""),
            keywords=tuple(data.get("keywords") or ()),
            group=str(data.get("group") or ""),
            type=str(data.get("type") or "realtime"),
            metadata=bool(data.get("metadata", False)),
        )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One API endpoint of a jurisdiction, as a service discovery document lists it."""

    url: str
    specification: str = GEOREPORT_V2
    type: str = "production"
    formats: tuple[str, ...] = ("application/json", "text/xml")
    deprecated: bool = False
    note: str | None = None

    @property
    def usable(self) -> bool:
        """A current GeoReport v2 endpoint (production or test) that a client can submit to."""
        return self.specification == GEOREPORT_V2 and not self.deprecated

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "url": self.url,
            "specification": self.specification,
            "type": self.type,
            "formats": list(self.formats),
            "deprecated": self.deprecated,
        }
        if self.note:
            data["note"] = self.note
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Endpoint:
        return cls(
            url=str(data["url"]),
            specification=str(data.get("specification") or GEOREPORT_V2),
            type=str(data.get("type") or "production"),
            formats=tuple(data.get("formats") or ("application/json", "text/xml")),
            deprecated=bool(data.get("deprecated", False)),
            note=data.get("note"),
        )


#: Endpoint formats whose services lists can be read (compared lowercased).
PARSEABLE_FORMATS = frozenset({"application/json", "text/xml", "application/xml", "text/json"})


def parses(endpoint: Endpoint) -> bool:
    """Whether the endpoint offers a format we read services lists in (none listed: assume XML,
    which GeoReport v2 requires)."""
    return not endpoint.formats or any(f.lower() in PARSEABLE_FORMATS for f in endpoint.formats)


def choose_endpoint(endpoints: Sequence[Endpoint]) -> tuple[Endpoint | None, tuple[Endpoint, ...]]:
    """The endpoint clients should use, and the others in order of preference.

    The one rule, for discovery documents and registry entries alike: current GeoReport v2
    first, production before test, one with a format we parse before one without; the given
    order breaks ties. ``None`` when no endpoint is current GeoReport v2.
    """

    if len(endpoints) == 1:  # most entries list one: nothing to order (batches ask per entry)
        only = endpoints[0]
        return (only, ()) if only.usable else (None, (only,))

    def rank(item: tuple[int, Endpoint]) -> tuple[int, int, int, int]:
        position, e = item
        return (
            0 if e.usable else 1,
            0 if e.type == "production" else 1,
            0 if parses(e) else 1,
            position,
        )

    ordered = [e for _, e in sorted(enumerate(endpoints), key=rank)]
    if not ordered or not ordered[0].usable:
        return None, tuple(ordered)
    return ordered[0], tuple(ordered[1:])


#: The grid (degrees) a boundary is snapped to before its generation is computed: 1e-7 degrees
#: is 1.1 cm, far finer than any boundary's survey and far coarser than the 1e-12 degrees of
#: float round-off a reprojection round trip (to EPSG:3857 or a state plane and back) leaves.
GENERATION_GRID = 1e-7

#: What the generation is computed on: bump it when :func:`canonical_boundary` changes, so
#: that stores recompute the generations they hold.
GENERATION_SCHEME = 2


def canonical_boundary(geometry: BaseGeometry) -> BaseGeometry:
    """The form of a boundary its generation is computed on.

    Coordinates snapped to :data:`GENERATION_GRID` (so float round-off does not count), repeated
    vertices and parts smaller than one grid cell dropped, and the geometry normalized (rings
    oriented the same way and started at the same vertex, polygons and holes in a fixed order),
    so the same area drawn in another order or direction has the same generation.
    """
    snapped = shapely.set_precision(geometry, GENERATION_GRID, mode="pointwise")
    # A repair (make_valid) of a self-intersecting ring can leave, or not, a sliver far smaller
    # than one grid cell depending on the last bits of the input: such a part is round-off too.
    parts = shapely.get_parts(snapped)
    kept = parts[shapely.area(parts) >= GENERATION_GRID * GENERATION_GRID]
    if 0 < len(kept) < len(parts):
        snapped = kept[0] if len(kept) == 1 else shapely.multipolygons(kept)
    # A hole that collapsed to a line stays as snapped: the same for every copy.
    with contextlib.suppress(shapely.errors.GEOSException):
        snapped = shapely.remove_repeated_points(snapped)
    return shapely.normalize(snapped)


def boundary_generation(geometry: BaseGeometry | None) -> str | None:
    """A short content hash of a boundary: equal boundaries have equal generations everywhere,
    also after a reprojection round trip (see :func:`canonical_boundary`)."""
    if geometry is None:
        return None
    wkb = shapely.to_wkb(canonical_boundary(geometry), output_dimension=2, byte_order=1)
    return hashlib.sha256(wkb).hexdigest()[:16]


def generation_matches(geometry: BaseGeometry, generation: str) -> bool:
    """Whether ``generation`` names this boundary: in the current scheme, or in the first one
    (normalized, not snapped) that registries, zones and stores of older versions still carry,
    so that upgrading one resolver does not make it refuse its peers' boundaries."""
    if generation == boundary_generation(geometry):
        return True
    wkb = shapely.to_wkb(shapely.normalize(geometry), output_dimension=2, byte_order=1)
    return generation == hashlib.sha256(wkb).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    """A body that takes Open311 service requests for an area.

    ``boundary`` is ``None`` when no honest boundary is known: the entry is listed but is never
    found by location. ``services`` is ``None`` when its services list has not been read yet,
    which makes every concern *unverified* there rather than refused.
    """

    id: str
    name: str
    boundary: BaseGeometry | None = None
    boundary_generation: str | None = None
    domain: str | None = None
    jurisdiction_id: str | None = None
    discovery_url: str | None = None
    endpoints: tuple[Endpoint, ...] = ()
    services: tuple[Service, ...] | None = None
    provenance: tuple[Provenance, ...] = ()
    notes: tuple[str, ...] = ()
    #: Registry entry metadata, what mirrors need to agree on one copy (docs/registry.md): who is
    #: authoritative for the entry (a registry id, or ``domain:<domain>`` for a jurisdiction that
    #: proved control of its domain), the origin's version of it, when the origin last changed it,
    #: when it stops being served, and whether the jurisdiction's own DNS vouched for it.
    #: ``origin`` is ``None`` outside a store (the embedded registry, a file being imported).
    origin: str | None = None
    version: int = 0
    updated: str | None = None
    expires: str | None = None
    attested: bool = False

    def expired(self, now: str) -> bool:
        """Past its expiry at ``now`` (a registry timestamp): kept and mirrored, not answered."""
        return self.expires is not None and self.expires <= now

    def with_boundary(self, geometry: BaseGeometry | None) -> Jurisdiction:
        """A copy with this boundary and its generation."""
        return replace(self, boundary=geometry, boundary_generation=boundary_generation(geometry))

    @property
    def endpoint(self) -> Endpoint | None:
        """The endpoint clients should use (:func:`choose_endpoint`)."""
        return choose_endpoint(self.endpoints)[0]

    def summary(self) -> dict[str, Any]:
        """Identity fields, as answers and listings show a jurisdiction."""
        return {
            "id": self.id,
            "name": self.name,
            "domain": self.domain,
            "jurisdiction_id": self.jurisdiction_id,
            "boundary_generation": self.boundary_generation,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything but the boundary geometry."""
        data = self.summary()
        data.update(
            {
                "discovery_url": self.discovery_url,
                "has_boundary": self.boundary is not None,
                "bbox": list(self.boundary.bounds) if self.boundary is not None else None,
                "endpoints": [e.to_dict() for e in self.endpoints],
                "services": None if self.services is None else [s.to_dict() for s in self.services],
                "provenance": [p.to_dict() for p in self.provenance],
                "notes": list(self.notes),
            }
        )
        if self.origin is not None:
            data["entry"] = {
                "origin": self.origin,
                "version": self.version,
                "updated": self.updated,
                "expires": self.expires,
                "attested": self.attested,
            }
        return data


@dataclass(frozen=True, slots=True)
class ServiceMatch:
    """A service that matches a concern, and why."""

    service: Service
    score: float
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "service_code": self.service.service_code,
            "service_name": self.service.service_name,
            "group": self.service.group,
            "score": self.score,
            "why": self.why,
        }


@dataclass(slots=True)
class Candidate:
    """A jurisdiction covering the point, with how it relates to the concern.

    Not frozen, like :class:`Decision` that holds it: shared by every point with the same
    covering set, so treat it as read-only."""

    jurisdiction: Jurisdiction
    concern_status: ConcernStatus
    matches: tuple[ServiceMatch, ...] = ()
    why_not: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "jurisdiction": self.jurisdiction.summary(),
            "endpoint": _endpoint_dict(self.jurisdiction.endpoint),
            "concern_status": self.concern_status,
            "matched_services": [m.to_dict() for m in self.matches],
        }
        if self.why_not:
            data["why_not_chosen"] = self.why_not
        return data


def _endpoint_dict(endpoint: Endpoint | None) -> dict[str, Any] | None:
    return endpoint.to_dict() if endpoint is not None else None


@dataclass(frozen=True, slots=True)
class Fallback:
    """The operator's ad hoc endpoint for points nobody covers and concerns nobody offers."""

    url: str
    name: str = "Ad hoc fallback"

    def provenance(self) -> Provenance:
        return Provenance(fact="endpoint", source="fallback", reference=self.url)

    @property
    def relative(self) -> bool:
        """A path on the answering server itself (its own ad hoc service), whose scheme and host
        only the HTTP layer knows: it makes the URL absolute with :meth:`Answer.at`."""
        return self.url.startswith("/")

    def at(self, base: str) -> Fallback:
        """This fallback with a relative URL made absolute on ``base`` (``scheme://host``)."""
        return replace(self, url=base.rstrip("/") + self.url) if self.relative else self


@dataclass(slots=True)
class Decision:
    """Who answers for a concern, given the jurisdictions covering a point.

    It depends only on the concern and the set of covering jurisdictions, never on the exact point,
    so the core computes it once per (concern, candidate set) and shares it between points.
    ``chosen`` is the responsible jurisdiction (when one covers the point and does not refuse the
    concern); ``endpoint`` is where to submit: the chosen jurisdiction's own endpoint, else the
    fallback's, else nothing. ``reason`` says why the fallback was needed.

    Not frozen, though the core shares one decision between many points and answers: a batch over
    a large registry takes a new decision for nearly every point, and a frozen dataclass costs
    about three times as much to construct (the core never changes one; nothing else may).
    """

    concern: str | None
    chosen: Candidate | None
    alternatives: tuple[Candidate, ...]
    endpoint: Endpoint | None
    fallback: Fallback | None
    reason: FallbackReason | None
    provenance: tuple[Provenance, ...] = ()

    @property
    def jurisdiction(self) -> Jurisdiction | None:
        return self.chosen.jurisdiction if self.chosen is not None else None

    @property
    def concern_status(self) -> ConcernStatus:
        if self.chosen is not None:
            return self.chosen.concern_status
        return "any" if self.concern is None else "not_offered"

    def message(self) -> str:
        """One plain sentence for people."""
        jurisdiction = self.jurisdiction
        if self.reason is None and jurisdiction is not None:
            text = f"{jurisdiction.name} is responsible here"
            if self.concern_status == "unverified":
                text += f"; whether it handles {self.concern!r} is unverified (services not known)"
            return text + "."
        why = {
            "no_jurisdiction": "no jurisdiction covers this point",
            "concern_not_offered": f"no covering jurisdiction offers {self.concern!r}",
            "no_endpoint": f"{jurisdiction.name if jurisdiction else 'the jurisdiction'} is "
            "responsible but publishes no current GeoReport v2 endpoint",
        }[self.reason or "no_jurisdiction"]
        if self.fallback is not None:
            return f"Fallback: {why}; the ad hoc service {self.fallback.url} takes the report."
        return (
            f"No answer: {why}, and no fallback service is configured: "
            "there is nowhere to send the report."
        )

    def at(self, base: str) -> Decision:
        """This decision with a relative fallback made absolute on ``base``."""
        fallback = self.fallback
        if fallback is None or not fallback.relative:
            return self
        absolute = fallback.at(base)
        endpoint = Endpoint(url=absolute.url, note=absolute.name)
        provenance = tuple(
            absolute.provenance() if p == fallback.provenance() else p for p in self.provenance
        )
        return replace(self, fallback=absolute, endpoint=endpoint, provenance=provenance)


@dataclass(slots=True)
class Answer:
    """The one answer to "who handles this concern at this point?": a point and its decision.

    Not frozen, unlike the other models: batches build one per point, and a frozen dataclass costs
    three times as much to construct. Its decision is frozen and shared; treat answers as read-only.
    """

    lat: float
    long: float
    decision: Decision
    index_generation: str

    @property
    def concern(self) -> str | None:
        return self.decision.concern

    @property
    def jurisdiction(self) -> Jurisdiction | None:
        return self.decision.jurisdiction

    @property
    def endpoint(self) -> Endpoint | None:
        return self.decision.endpoint

    @property
    def reason(self) -> FallbackReason | None:
        return self.decision.reason

    def at(self, base: str) -> Answer:
        """This answer with a relative fallback (this server's own ad hoc service) made absolute
        on ``base``; the same answer when there is none."""
        decision = self.decision.at(base)
        if decision is self.decision:
            return self
        return Answer(self.lat, self.long, decision, self.index_generation)

    @property
    def is_fallback(self) -> bool:
        """True when the endpoint is the operator's fallback rather than a jurisdiction's."""
        return self.decision.fallback is not None

    @property
    def found(self) -> bool:
        """Whether anyone takes the report: a jurisdiction's endpoint or the fallback."""
        return self.decision.endpoint is not None

    @property
    def concern_status(self) -> ConcernStatus:
        return self.decision.concern_status

    def message(self) -> str:
        return self.decision.message()

    def to_dict(self) -> dict[str, Any]:
        decision = self.decision
        chosen = decision.chosen
        jurisdiction = decision.jurisdiction
        endpoint = _endpoint_dict(decision.endpoint)
        if endpoint is not None and decision.fallback is not None:
            endpoint["name"] = decision.fallback.name
        return {
            "query": {"lat": self.lat, "long": self.long, "concern": decision.concern},
            "found": self.found,
            "fallback": self.is_fallback,
            "reason": decision.reason,
            "message": decision.message(),
            "endpoint": endpoint,
            "jurisdiction": jurisdiction.summary() if jurisdiction is not None else None,
            "concern": {
                "query": decision.concern,
                "status": decision.concern_status,
                "matched_services": [m.to_dict() for m in chosen.matches] if chosen else [],
            },
            "alternatives": [c.to_dict() for c in decision.alternatives],
            "provenance": [p.to_dict() for p in decision.provenance],
            "boundary_generation": jurisdiction.boundary_generation if jurisdiction else None,
            "index_generation": self.index_generation,
        }
