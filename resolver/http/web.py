"""What browsers and HTTP caches need from every answer, in one middleware.

- **CORS**: pages of the origins in ``--cors-origin`` (any, by default) may read the public read
  routes (``GET``/``HEAD`` everywhere, ``POST /v1/resolve``); registration never allows another
  origin. Preflight ``OPTIONS`` is answered here, as is a plain ``OPTIONS`` (its ``Allow``).
- **Caching**: an answer may be kept until the earliest expiry of the facts it used
  (:func:`answer_cache_headers`, called by the answering routes; this middleware adds the
  ``Expires`` every ``max-age`` implies); a fallback given because an upstream failed must not
  be kept at all. Jurisdictions, boundaries, the page and the OpenAPI
  description carry an ``ETag`` of their body; ``If-None-Match`` (a tag or ``*``) gets ``304``.
- **Compression**: bodies above :data:`COMPRESS_ABOVE` bytes are gzipped when the client says
  it accepts it.

Errors go through :mod:`resolver.http.errors` before they reach this middleware, so they carry
the CORS headers too (a page can read why it was refused) and are never cached.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Iterable
from itertools import chain

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from common.models import Answer, Provenance
from resolver.config import Settings
from resolver.http.errors import error_body, error_response, request_id
from resolver.http.keys import SETTINGS

#: Bodies smaller than this are sent as they are: below a packet or two, gzip saves nothing.
COMPRESS_ABOVE = 1400
#: How long a browser may keep a preflight's answer, in seconds.
PREFLIGHT_MAX_AGE = 86400
#: Request headers a cross-origin page may send (beyond the CORS-safelisted ones).
CORS_REQUEST_HEADERS = ("Content-Type", "If-None-Match", "X-Request-Id")
#: Response headers a cross-origin page may read (beyond the CORS-safelisted ones).
CORS_EXPOSED_HEADERS = "ETag, X-Request-Id"
#: Routes answered with an ``ETag`` of their body (and conditional requests on it).
ETAG_ROUTES = frozenset(
    {
        "/",
        "/openapi.json",
        "/v1/jurisdictions",
        "/v1/jurisdictions/{id}",
        "/static/{name}",
    }
)
#: Routes whose answers change with every request (or are about this moment): never kept.
NO_STORE_ROUTES = frozenset({"/healthz", "/metrics", "/v1/registry/status"})
#: Writes other than GET/HEAD that any allowed origin may still make (batch answers are reads).
PUBLIC_POSTS = frozenset({"/v1/resolve"})
_READS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD})


def upstream_failed(fact: Provenance) -> bool:
    """Whether a fact stands in for one the outside world failed to give just now (its source
    marks it ``stale``): an answer resting on such a fact is right for now only."""
    return bool(fact.stale)


def _epoch(text: str) -> float | None:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def http_date(timestamp: float) -> str:
    """An HTTP date (RFC 9110 IMF-fixdate), in a third of the time ``email.utils`` takes."""
    t = time.gmtime(timestamp)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def answer_cache_headers(answers: Iterable[Answer], now: float, cap: int) -> dict[str, str]:
    """``Cache-Control`` for a response made of these answers (the middleware adds the
    ``Expires`` it implies, for HTTP/1.0 caches): kept until the
    earliest expiry of any fact they used (the provenance of the decision and of every candidate
    weighed, a DNS TTL, a registry entry's own expiry), at most ``cap`` seconds, since the
    registry itself may change at any time. A fallback given while an upstream failed is
    ``no-store``: once the upstream is back, the answer may well be another jurisdiction."""
    earliest = now + cap
    for answer in answers:
        decision = answer.decision
        facts = [decision.provenance]
        for candidate in (decision.chosen, *decision.alternatives):
            if candidate is not None:
                jurisdiction = candidate.jurisdiction
                if jurisdiction.provenance is not decision.provenance:  # often the same tuple
                    facts.append(jurisdiction.provenance)
                if jurisdiction.expires and (when := _epoch(jurisdiction.expires)) is not None:
                    earliest = min(earliest, when)
        if decision.fallback is not None and any(upstream_failed(f) for f in chain(*facts)):
            return {hdrs.CACHE_CONTROL: "no-store"}
        for fact in chain(*facts):
            if fact.expires and (when := _epoch(fact.expires)) is not None:
                earliest = min(earliest, when)
            if fact.ttl is not None:
                earliest = min(earliest, now + fact.ttl)
    return {hdrs.CACHE_CONTROL: f"max-age={max(0, int(earliest - now))}"}


def answer_headers(request: web.Request, answers: Iterable[Answer]) -> dict[str, str]:
    """:func:`answer_cache_headers` for a request, now, with the operator's ``cache_max_age``."""
    return answer_cache_headers(answers, time.time(), request.app[SETTINGS].cache_max_age)


def body_etag(body: bytes) -> str:
    """A weak entity tag of a body: weak, since the same body is also sent gzipped."""
    return f'W/"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'


def _tags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def cors_public(method: str, path: str) -> bool:
    """Whether pages of other origins may make this request: reads, and batch answers."""
    return method in _READS or (method == hdrs.METH_POST and path.rstrip("/") in PUBLIC_POSTS)


def add_slash_aliases(app: web.Application) -> None:
    """Answer every route also with a trailing slash (``/service/``, ``/healthz/``): people and
    some clients write it, and a 404 for it helps nobody. Call after every route is added."""
    for resource in list(app.router.resources()):
        path = resource.canonical
        if path == "/" or path.endswith("/"):
            continue
        for route in list(resource):
            if route.method == hdrs.METH_GET:
                app.router.add_get(path + "/", route.handler)
            elif route.method != hdrs.METH_HEAD:
                app.router.add_route(route.method, path + "/", route.handler)


def web_middleware(settings: Settings) -> Middleware:
    """The middleware of this module, for these settings (see the module's docstring)."""
    any_origin = "*" in settings.cors_origin
    origins = frozenset(settings.cors_origin)
    cap = settings.cache_max_age
    static_cache = f"max-age={cap}"

    def allowed_origin(origin: str | None) -> str | None:
        if origin is None:
            return None
        if any_origin:
            return "*"
        return origin if origin in origins else None

    async def options(request: web.Request, handler: Handler) -> web.StreamResponse:
        exc = request.match_info.http_exception
        if not isinstance(exc, web.HTTPMethodNotAllowed):
            return await handler(request)  # no such route (404), or one that takes OPTIONS
        methods = set(exc.allowed_methods) | {hdrs.METH_OPTIONS}
        requested = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_METHOD)
        origin = request.headers.get(hdrs.ORIGIN)
        if requested is None or origin is None:
            return web.Response(status=204, headers={hdrs.ALLOW: ", ".join(sorted(methods))})
        granted = allowed_origin(origin)
        if granted is None or requested not in methods or not cors_public(requested, request.path):
            rid = request_id(request)
            detail = (
                f"pages of {origin[:100]} may not make {requested[:20]} requests to "
                f"{request.path[:200]}"
            )
            return error_response(403, error_body("cors_not_allowed", detail, rid))
        public = sorted(m for m in methods if cors_public(m, request.path))
        headers = {
            hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: granted,
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ", ".join(public),
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ", ".join(CORS_REQUEST_HEADERS),
            hdrs.ACCESS_CONTROL_MAX_AGE: str(PREFLIGHT_MAX_AGE),
            hdrs.VARY: "Origin",
        }
        return web.Response(status=204, headers=headers)

    #: The last Expires made, by the second it names: most answers in one second share it.
    last_expires: list[tuple[int, str]] = [(0, http_date(0))]

    def expires(max_age: int) -> str:
        when = int(time.time()) + max_age
        second, text = last_expires[0]
        if second != when:
            text = http_date(when)
            last_expires[0] = (when, text)
        return text

    #: By resource (None: no route matched): the Cache-Control of a successful read that
    #: says none, and whether the body gets an ETag. Computed once per route.
    policies: dict[object, tuple[str, bool]] = {}

    def policy(request: web.Request) -> tuple[str, bool]:
        resource = request.match_info.route.resource
        found = policies.get(resource)
        if found is None:
            route = (resource.canonical.rstrip("/") or "/") if resource is not None else ""
            if route in NO_STORE_ROUTES:
                default = "no-store"
            elif route in ETAG_ROUTES:
                default = static_cache
            else:
                default = "no-cache"
            found = policies[resource] = (default, route in ETAG_ROUTES)
        return found

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == hdrs.METH_OPTIONS:
            return await options(request, handler)
        response = await handler(request)
        headers = response.headers
        status = response.status

        if cors_public(request.method, request.path):
            # Any origin: said on every answer, so a shared cache may give it to anyone. Some
            # origins: said to those only, and the answer varies with the Origin header.
            granted = "*" if any_origin else allowed_origin(request.headers.get(hdrs.ORIGIN))
            if granted is not None:
                headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = granted
                headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = CORS_EXPOSED_HEADERS
        if not any_origin:
            headers.add(hdrs.VARY, "Origin")

        default, etag_route = policy(request)
        control = headers.get(hdrs.CACHE_CONTROL)
        if control is None:
            reads = request.method in _READS
            control = headers[hdrs.CACHE_CONTROL] = (
                default if status < 400 and reads else "no-store"
            )
        if control.startswith("max-age=") and hdrs.EXPIRES not in headers:
            headers[hdrs.EXPIRES] = expires(int(control[8:]))

        if status != 200 or not isinstance(response, web.Response):
            return response
        body = response.body
        if not isinstance(body, bytes):
            return response
        if etag_route and hdrs.ETAG not in headers:
            headers[hdrs.ETAG] = body_etag(body)
        condition = request.headers.get(hdrs.IF_NONE_MATCH)
        if condition is not None and request.method in _READS:
            tags = _tags(condition)
            etag = headers.get(hdrs.ETAG)
            if "*" in tags or (etag is not None and etag.removeprefix("W/") in tags):
                kept = {k: v for k, v in headers.items() if k not in _ENTITY_HEADERS}
                return web.Response(status=304, headers=kept)
        if len(body) > COMPRESS_ABOVE and hdrs.CONTENT_ENCODING not in headers:
            headers.add(hdrs.VARY, "Accept-Encoding")
            if "gzip" in request.headers.get(hdrs.ACCEPT_ENCODING, ""):
                response.enable_compression(web.ContentCoding.gzip)
        return response

    return middleware


#: Headers that describe a body: a 304 has none.
_ENTITY_HEADERS = frozenset(
    {hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH, hdrs.CONTENT_ENCODING, hdrs.TRANSFER_ENCODING}
)

__all__ = [
    "COMPRESS_ABOVE",
    "add_slash_aliases",
    "answer_cache_headers",
    "answer_headers",
    "body_etag",
    "cors_public",
    "http_date",
    "upstream_failed",
    "web_middleware",
]
