"""``GET /service``: the GeoWeb DNS protocol as the Open311 wiki defines it."""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import orjson
from aiohttp import web

from common.models import Answer, Decision, Jurisdiction
from resolver.http.errors import JSON
from resolver.http.keys import ANSWERER, SERVICE_BODIES, SERVICE_BODIES_KEPT
from resolver.http.params import base_url, point_in, query_params
from resolver.http.web import WEB

#: GeoWeb DNS type: the Open311 GeoReport v2 endpoint of the jurisdiction responsible for the point
#: (the type the Open311 wiki's GeoWeb DNS page uses as its example).
TYPE_OPEN311 = "http://ns.geowebdns.org/311/jurisdiction"
#: GeoWeb DNS type: the Open311 service discovery document of that jurisdiction.
TYPE_DISCOVERY = "http://ns.geowebdns.org/311/discovery"
#: GeoWeb DNS type prefix: the GeoReport v2 endpoint that takes this concern here, e.g.
#: ``http://ns.geowebdns.org/311/concern/pothole`` (the concern is percent-encoded).
TYPE_CONCERN_PREFIX = "http://ns.geowebdns.org/311/concern/"
DEFAULT_TYPES = (TYPE_OPEN311, TYPE_DISCOVERY)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_type(type_uri: str) -> str:
    """A type URI in the form types are compared in: scheme and host lowercase, ``https`` read
    as ``http`` (the types are names, not addresses: both spellings name one type), the
    scheme's default port dropped, and no trailing slash. The path is kept as written."""
    text = type_uri.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return text.rstrip("/")
    host = parts.hostname
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host += f":{port}"
    path = parts.path.rstrip("/")
    query = f"?{parts.query}" if parts.query else ""
    return f"http://{host}{path}{query}"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/service", geowebdns_service)
    app.router.add_get("/service/types", service_types)


async def service_types(request: web.Request) -> web.Response:
    """``GET /service/types``: the types ``/service`` answers, and how they are compared."""
    body = {
        "types": [
            {
                "type": TYPE_OPEN311,
                "uri": "the Open311 GeoReport v2 endpoint of the jurisdiction responsible",
            },
            {"type": TYPE_DISCOVERY, "uri": "its Open311 service discovery document"},
            {
                "type": TYPE_CONCERN_PREFIX + "{concern}",
                "uri": "the GeoReport v2 endpoint that takes this concern here "
                "(a service_code or words, percent-encoded)",
            },
        ],
        "default": list(DEFAULT_TYPES),
        "compared": "scheme and host in any case, https as http, without the default port "
        "or a trailing slash; unknown types are ignored",
    }
    return web.Response(body=orjson.dumps(body), content_type=JSON)


async def geowebdns_service(request: web.Request) -> web.Response:
    """``GET /service?lat=&long=&type=``: the GeoWeb DNS protocol as the Open311 wiki defines it.
    Results are for "any of the given types": a type this server does not answer is ignored
    (only unknown types: 404 with no results), and each result names its type as asked."""
    params = query_params(request)
    lat, long = point_in(params)
    asked = params.get("type")
    types = tuple(dict.fromkeys(asked)) if asked else DEFAULT_TYPES
    concerns, asked_concerns = _service_concerns(types)
    app = request.app
    answerer = app[ANSWERER]
    # One answer per concern, however many types ask for it (the two default types share one).
    # A body is made of each decision's jurisdiction, endpoint and fallback; its provenance,
    # which may change from one request to the next, is not in the body.
    answers: list[Answer] = []
    decisions: list[Decision] = []
    parts: list[object] = []
    for concern in asked_concerns:
        answer = await answerer.answer(lat, long, concern)
        answers.append(answer)
        decision = answer.decision
        decisions.append(decision)
        parts += (decision.chosen, decision.endpoint, decision.fallback)
    base = base_url(request)
    bodies = app[SERVICE_BODIES]
    key = (types, base, *map(id, parts))
    cached = bodies.get(key)
    if cached is None:
        by_concern = {c: a.at(base) for c, a in zip(asked_concerns, answers, strict=True)}
        results = [
            result
            for type_uri, concern in zip(types, concerns, strict=True)
            if concern is not _UNKNOWN
            and (result := _service_result(base, type_uri, by_concern[concern])) is not None
        ]
        if len(bodies) >= SERVICE_BODIES_KEPT:
            bodies.clear()
        cached = bodies[key] = (parts, orjson.dumps({"results": results}), bool(results))
    _, body, found = cached
    return app[WEB].answer(body, 200 if found else 404, decisions)


@functools.lru_cache(maxsize=256)
def _service_concerns(
    types: tuple[str, ...],
) -> tuple[tuple[str | None, ...], tuple[str | None, ...]]:
    """The concern of each type (:func:`_service_concern`), and the distinct concerns of the
    types this server answers, in order; remembered per list of types."""
    concerns = tuple(_service_concern(type_uri) for type_uri in types)
    return concerns, tuple(c for c in dict.fromkeys(concerns) if c is not _UNKNOWN)


#: What :func:`_service_concern` says of a type this server does not answer.
_UNKNOWN = "\x00unknown"


@functools.lru_cache(maxsize=1024)
def _service_concern(type_uri: str) -> str | None:
    """The concern a GeoWeb DNS ``type`` asks about (``None``: any), or ``_UNKNOWN``.

    Remembered per type text: clients send the same few types with every request, and reading
    one as a URL took a sixth of the handler's time."""
    canonical = canonical_type(type_uri)
    if canonical in (TYPE_OPEN311, TYPE_DISCOVERY):
        return None
    if canonical.startswith(TYPE_CONCERN_PREFIX) and len(canonical) > len(TYPE_CONCERN_PREFIX):
        return unquote(canonical.removeprefix(TYPE_CONCERN_PREFIX))
    return _UNKNOWN


def _service_result(base: str, type_uri: str, answer: Answer) -> dict[str, Any] | None:
    jurisdiction = answer.jurisdiction
    if canonical_type(type_uri) == TYPE_DISCOVERY:
        if jurisdiction is None or not jurisdiction.discovery_url:
            return None
        uri: str | None = jurisdiction.discovery_url
    else:
        uri = answer.endpoint.url if answer.endpoint is not None else None
    if uri is None:
        return None
    fallback = answer.decision.fallback
    kml = _kml_url(base, jurisdiction) if fallback is None else None
    return {
        "type": type_uri,
        "uri": uri,
        "name": fallback.name if fallback is not None else _name(jurisdiction),
        "kml": kml,
        "kml_uri": kml,  # the reference implementation's name for it
        "jurisdiction": jurisdiction.id if jurisdiction is not None else None,
        "fallback": fallback is not None,
    }


def _name(jurisdiction: Jurisdiction | None) -> str:
    return jurisdiction.name if jurisdiction is not None else ""


def _kml_url(base: str, jurisdiction: Jurisdiction | None) -> str | None:
    if jurisdiction is None or jurisdiction.boundary is None:
        return None
    return f"{base}/v1/jurisdictions/{quote(jurisdiction.id, safe='')}.kml"


__all__ = [
    "DEFAULT_TYPES",
    "TYPE_CONCERN_PREFIX",
    "TYPE_DISCOVERY",
    "TYPE_OPEN311",
    "add_routes",
    "canonical_type",
]
