"""One check for every registry entry, wherever it comes from: an import, a registration, a
mirrored upstream, a jurisdiction found through DNS alone, a city's discovery ``service_area``.

What an entry may hold does not depend on who sent it: URLs are absolute ``https`` (plain ``http``
only where the operator's own import names it), without credentials; a boundary is a real
WGS84 polygon with area and finite coordinates in range; texts, lists and vertices are bounded.
:class:`InvalidEntry` (400 ``invalid_entry``) says what is wrong; the callers turn it into a
refused registration, a refused mirror page, a failed import or a failed refresh.
"""

from __future__ import annotations

import math
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

from shapely.geometry.base import BaseGeometry

from boundaries.geojson import clean_boundary
from common.errors import InvalidBoundary, InvalidInput
from common.models import Jurisdiction
from discovery.urls import is_hostname
from resolver.core.federation import MAX_VERSION

#: Limits on an entry (a request body is also bounded by ``max_body_bytes``).
MAX_ID = 200
MAX_NAME = 500
MAX_TEXT = 2000
MAX_URL = 2048
MAX_ENDPOINTS = 20
MAX_SERVICES = 5000
MAX_NOTES = 1000
MAX_NOTE = 10_000
MAX_PROVENANCE = 1000
MAX_VERTICES = 1_000_000
#: Deepest nesting accepted in a boundary's GeoJSON ``coordinates`` (a MultiPolygon needs 4).
MAX_COORDINATE_DEPTH = 8


class InvalidEntry(InvalidInput):
    """A registry entry is malformed; nothing was changed."""

    code = "invalid_entry"


def check_url(value: Any, key: str, *, allow_http: bool = False) -> str:
    """An absolute ``https`` URL with a host and no credentials, whose host, when an address, is
    a public one. ``allow_http``: the operator's own data, where plain ``http`` and any address
    pass too (a stand-in on loopback)."""
    schemes = ("https", "http") if allow_http else ("https",)
    if not isinstance(value, str) or not value or len(value) > MAX_URL:
        raise InvalidEntry(f"{key} must be an absolute URL of at most {MAX_URL} characters")
    if any(ord(c) <= 32 or ord(c) == 127 for c in value):
        raise InvalidEntry(f"{key} must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
        host, user, password = parts.hostname, parts.username, parts.password
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError as exc:
        raise InvalidEntry(f"{key} is not a usable URL: {exc}") from None
    if parts.scheme.lower() not in schemes:
        shown = " or ".join(schemes)
        raise InvalidEntry(f"{key} must be an absolute {shown} URL, not {value[:200]!r}")
    if not host:
        raise InvalidEntry(f"{key} has no host: {value[:200]!r}")
    if user is not None or password is not None:
        raise InvalidEntry(f"{key} carries credentials; a registry URL must not")
    if not allow_http:
        try:
            address = ip_address(host.split("%")[0])
        except ValueError:
            return value
        if not address.is_global:
            raise InvalidEntry(
                f"{key} names a {_kind(address)} address ({host}); an entry's URLs are public"
            )
    return value


def _kind(address: Any) -> str:
    for kind in ("loopback", "link_local", "private", "multicast", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"


def check_text(value: Any, key: str, limit: int = MAX_TEXT, *, required: bool = False) -> None:
    """Text of 1 to ``limit`` characters without control characters (a NUL would cut it)."""
    if value is None and not required:
        return
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidEntry(f"{key} must be text of 1 to {limit} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidEntry(f"{key} must not contain control characters")


def boundary_problem(geometry: BaseGeometry) -> str | None:
    """Why a boundary cannot be answered from, or ``None``: the rules every boundary is read by
    (:func:`boundaries.geojson.clean_boundary`: a Polygon or MultiPolygon in WGS84, finite, at
    most :data:`MAX_VERTICES` vertices, with area), and already clean: every path repairs a
    boundary when it reads it, so one that still needs a repair was not read by those rules."""
    if geometry.geom_type not in ("Polygon", "MultiPolygon"):
        return f"a boundary must be a Polygon or MultiPolygon, not {geometry.geom_type}"
    try:
        _clean, repairs = clean_boundary(geometry, max_vertices=MAX_VERTICES)
    except InvalidBoundary as error:
        return error.detail
    if repairs:
        return f"the boundary is not a valid polygon ({repairs[0]})"
    return None


def check_boundary(geometry: BaseGeometry | None, key: str = "boundary") -> None:
    """:class:`InvalidEntry` when ``geometry`` is not a boundary to answer from."""
    if geometry is None:
        return
    problem = boundary_problem(geometry)
    if problem is not None:
        raise InvalidEntry(f"{key}: {problem}")


def check_coordinates(geometry: Any) -> None:
    """Bound a GeoJSON geometry's ``coordinates`` before shapely builds anything from them:
    nesting depth, vertex count, and numbers that are finite."""
    count = 0
    stack: list[tuple[Any, int]] = [
        (geometry.get("coordinates") if isinstance(geometry, dict) else None, 0)
    ]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_COORDINATE_DEPTH:
            raise InvalidEntry(
                f"the boundary's coordinates nest deeper than {MAX_COORDINATE_DEPTH}"
            )
        if isinstance(item, list) and item and isinstance(item[0], int | float):
            count += 1
            if count > MAX_VERTICES:
                raise InvalidEntry(f"the boundary has more than {MAX_VERTICES} vertices")
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in item):
                raise InvalidEntry("the boundary has coordinates that are not finite numbers")
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def check_entry(jurisdiction: Jurisdiction, *, allow_http: bool = False) -> Jurisdiction:
    """The entry, unchanged, when every field is within bounds; else :class:`InvalidEntry`
    naming the entry and the first problem. ``allow_http``: plain ``http`` URLs pass too (the
    operator's own import; never a stranger's entry)."""
    try:
        _check(jurisdiction, allow_http)
    except InvalidEntry as error:
        shown = jurisdiction.id[:100] if isinstance(jurisdiction.id, str) else "?"
        raise InvalidEntry(f"entry {shown!r}: {error.detail}") from None
    return jurisdiction


def _check(j: Jurisdiction, allow_http: bool) -> None:
    check_text(j.id, "id", MAX_ID, required=True)
    check_text(j.name, "name", MAX_NAME, required=True)
    check_text(j.jurisdiction_id, "jurisdiction_id", 253)
    if j.domain is not None and not (
        isinstance(j.domain, str) and is_hostname(j.domain.rstrip("."))
    ):
        raise InvalidEntry(f"domain {str(j.domain)[:100]!r} is not a DNS name")
    if j.discovery_url is not None:
        check_url(j.discovery_url, "discovery_url", allow_http=allow_http)
    if len(j.endpoints) > MAX_ENDPOINTS:
        raise InvalidEntry(f"more than {MAX_ENDPOINTS} endpoints")
    for endpoint in j.endpoints:
        check_url(endpoint.url, "endpoint url", allow_http=allow_http)
        check_text(endpoint.note, "endpoint note", MAX_NOTE)
    if j.services is not None and len(j.services) > MAX_SERVICES:
        raise InvalidEntry(f"more than {MAX_SERVICES} services")
    if len(j.notes) > MAX_NOTES or any(len(n) > MAX_NOTE for n in j.notes):
        raise InvalidEntry(f"at most {MAX_NOTES} notes of {MAX_NOTE} characters")
    if len(j.provenance) > MAX_PROVENANCE:
        raise InvalidEntry(f"more than {MAX_PROVENANCE} provenance entries")
    if isinstance(j.version, bool) or not 0 <= j.version <= MAX_VERSION:
        raise InvalidEntry(f"version must be a whole number from 0 to {MAX_VERSION}")
    check_boundary(j.boundary)


__all__ = [
    "MAX_ENDPOINTS",
    "MAX_ID",
    "MAX_NAME",
    "MAX_SERVICES",
    "MAX_VERTICES",
    "InvalidEntry",
    "boundary_problem",
    "check_boundary",
    "check_coordinates",
    "check_entry",
    "check_text",
    "check_url",
]
