"""What browsers, HTTP caches and operators need from every answer, in the app's one middleware
(:class:`WebLayer`), outermost first:

- **Counting**: every request is counted and timed by route, method and status into the app's
  :class:`~resolver.http.metrics.Metrics` (``GET /metrics``).
- **CORS**: pages of the origins in ``--cors-origin`` (any, by default) may read the public read
  routes (``GET``/``HEAD`` everywhere, ``POST /v1/resolve``); registration never allows another
  origin. Preflight ``OPTIONS`` is answered here, as is a plain ``OPTIONS`` (its ``Allow``).
- **Caching**: an answer may be kept until the earliest expiry of the facts it used
  (:meth:`WebLayer.answer`, which the answering routes build their answers with, adds the
  ``Cache-Control`` and the ``Expires`` every ``max-age`` implies); a fallback given because an
  upstream failed must not be kept at all. Jurisdictions, boundaries, the page and the OpenAPI
  description carry an ``ETag`` of their body; ``If-None-Match`` (a tag or ``*``) gets ``304``.
- **Compression**: bodies above :data:`COMPRESS_ABOVE` bytes are gzipped when the client says
  it accepts it.
- **Errors**: any failure becomes the one error body (:func:`resolver.http.errors.error_answer`),
  so errors carry the CORS headers too (a page can read why it was refused) and are never cached.

The answers of ``/service`` and ``/v1/resolve`` come from :meth:`WebLayer.answer` with all of
these headers already, copied from a set made once per second and lifetime: most requests cost
the middleware a type check and a count.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import cast

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_urldispatcher import AbstractResource
from multidict import CIMultiDict

from common.models import Answer, Decision, Provenance
from resolver.config import Settings
from resolver.http.errors import JSON, error_answer, error_body, error_response, request_id
from resolver.http.metrics import UNMATCHED, Metrics, RouteMetrics

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
#: Decisions whose lifetime a web layer remembers (it forgets them all when full).
KEEPS_KEPT = 16384
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


@dataclass(frozen=True, slots=True)
class Keep:
    """How long an answer resting on one decision may be kept: not at all (``no_store``), or
    until the earliest of ``until`` (seconds since the epoch) and ``ttl`` seconds from now."""

    no_store: bool = False
    until: float | None = None
    ttl: float | None = None

    def age(self, now: float, cap: int) -> int | None:
        """Seconds from ``now`` an answer may be kept, at most ``cap``; ``None``: not at all."""
        if self.no_store:
            return None
        earliest = now + cap
        if self.until is not None:
            earliest = min(earliest, self.until)
        if self.ttl is not None:
            earliest = min(earliest, now + self.ttl)
        return max(0, int(earliest - now))


def keep_of(decision: Decision) -> Keep:
    """The :class:`Keep` of a decision: the earliest expiry of any fact it used (its provenance
    and that of every candidate weighed, a DNS TTL, a registry entry's own expiry). A fallback
    given while an upstream failed is ``no_store``: once the upstream is back, the answer may
    well be another jurisdiction."""
    facts = [decision.provenance]
    until: float | None = None
    for candidate in (decision.chosen, *decision.alternatives):
        if candidate is not None:
            jurisdiction = candidate.jurisdiction
            if jurisdiction.provenance is not decision.provenance:  # often the same tuple
                facts.append(jurisdiction.provenance)
            if jurisdiction.expires and (when := _epoch(jurisdiction.expires)) is not None:
                until = when if until is None else min(until, when)
    if decision.fallback is not None and any(upstream_failed(f) for f in chain(*facts)):
        return Keep(no_store=True)
    ttl: float | None = None
    for fact in chain(*facts):
        if fact.expires and (when := _epoch(fact.expires)) is not None:
            until = when if until is None else min(until, when)
        if fact.ttl is not None:
            ttl = fact.ttl if ttl is None else min(ttl, fact.ttl)
    return Keep(until=until, ttl=ttl)


def max_age(keeps: Iterable[Keep], now: float, cap: int) -> int | None:
    """Seconds a response resting on decisions of these lifetimes may be kept from ``now``, at
    most ``cap`` (the registry itself may change at any time); ``None``: not at all."""
    age = max(0, int(now + cap - now))
    for keep in keeps:
        mine = keep.age(now, cap)
        if mine is None:
            return None
        # The age of the earliest expiry: rounding each down to whole seconds keeps the order.
        age = min(age, mine)
    return age


def answer_cache_headers(answers: Iterable[Answer], now: float, cap: int) -> dict[str, str]:
    """``Cache-Control`` for a response made of these answers (see :func:`keep_of` and
    :func:`max_age`)."""
    age = max_age((keep_of(answer.decision) for answer in answers), now, cap)
    return {hdrs.CACHE_CONTROL: "no-store" if age is None else f"max-age={age}"}


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


class AnswerResponse(web.Response):
    """An answer made by :meth:`WebLayer.answer` with every header it needs (CORS, caching): the
    middleware only looks at it again when it is conditional or large enough to compress."""


class _Route:
    """What the middleware needs of one route, worked out at its first request."""

    __slots__ = ("cache", "etag", "metrics")

    def __init__(self, cache: str, etag: bool, metrics: RouteMetrics) -> None:
        #: The Cache-Control of a successful read that says none.
        self.cache = cache
        #: Whether its bodies get an ETag.
        self.etag = etag
        self.metrics = metrics


def resource_label(resource: AbstractResource | None) -> str:
    """The pattern of a route (a bounded set of labels), or ``unmatched``. A route's
    trailing-slash alias counts as the route."""
    if resource is None:
        return UNMATCHED
    return resource.canonical.rstrip("/") or "/"


class WebLayer:
    """The web layer of one app: its one middleware, and the complete answers of the answering
    routes (see the module's docstring)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.any_origin = "*" in settings.cors_origin
        self.origins = frozenset(settings.cors_origin)
        self.cap = settings.cache_max_age
        self.metrics = metrics
        self._routes: dict[AbstractResource | None, _Route] = {}
        #: By id of a decision (kept here, so the id is not reused): its lifetime.
        self._keeps: dict[int, tuple[Decision, Keep]] = {}
        #: Cache-Control texts by max-age.
        self._controls: dict[int, str] = {}
        #: The headers of an answer by its Cache-Control, and the second their Expires is for.
        self._answer_headers: dict[str, tuple[int, CIMultiDict[str]]] = {}
        #: The last Expires made, by the second it names: most answers in one second share it.
        self._last_expires = (0, http_date(0))
        self.middleware = self._middleware()

    def keep(self, decision: Decision) -> Keep:
        """:func:`keep_of`, worked out once per decision: the core shares one decision between
        every point with the same covering jurisdictions."""
        found = self._keeps.get(id(decision))
        if found is not None:
            return found[1]
        keeps = self._keeps
        if len(keeps) >= KEEPS_KEPT:
            keeps.clear()
        made = keep_of(decision)
        keeps[id(decision)] = (decision, made)
        return made

    def cache_control(self, decisions: Sequence[Decision], now: float) -> str:
        """The Cache-Control of a response resting on these decisions, at ``now``."""
        if len(decisions) == 1:
            age = self.keep(decisions[0]).age(now, self.cap)
        else:
            age = max_age(map(self.keep, decisions), now, self.cap)
        if age is None:
            return "no-store"
        text = self._controls.get(age)
        if text is None:
            if len(self._controls) >= 4096:
                self._controls.clear()
            text = self._controls[age] = f"max-age={age}"
        return text

    def answer(self, body: bytes, status: int, decisions: Sequence[Decision]) -> web.Response:
        """A JSON answer resting on these decisions, with the headers of the middleware already
        there: kept until the earliest expiry of the facts they used."""
        now = time.time()
        control = self.cache_control(decisions, now)
        if not self.any_origin:  # CORS follows the request's Origin: the middleware says it
            return web.Response(
                body=body, status=status, content_type=JSON, headers={hdrs.CACHE_CONTROL: control}
            )
        second = int(now)
        made = self._answer_headers.get(control)
        if made is None or made[0] != second:
            made = self._make_answer_headers(control, second)
        return AnswerResponse(body=body, status=status, headers=made[1])

    def _make_answer_headers(self, control: str, second: int) -> tuple[int, CIMultiDict[str]]:
        # In the order the middleware would add them to a plain response.
        headers = CIMultiDict(
            {
                hdrs.CACHE_CONTROL: control,
                hdrs.CONTENT_TYPE: JSON,
                hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: "*",
                hdrs.ACCESS_CONTROL_EXPOSE_HEADERS: CORS_EXPOSED_HEADERS,
            }
        )
        if control.startswith("max-age="):
            headers[hdrs.EXPIRES] = http_date(second + int(control[8:]))
        if len(self._answer_headers) >= 256:
            self._answer_headers.clear()
        made = self._answer_headers[control] = (second, headers)
        return made

    def expires(self, seconds: int) -> str:
        """The Expires a ``max-age`` of these seconds implies now."""
        when = int(time.time()) + seconds
        second, text = self._last_expires
        if second != when:
            text = http_date(when)
            self._last_expires = (when, text)
        return text

    def allowed_origin(self, origin: str | None) -> str | None:
        """What ``Access-Control-Allow-Origin`` grants a page of this origin, if anything."""
        if origin is None:
            return None
        if self.any_origin:
            return "*"
        return origin if origin in self.origins else None

    def _route(self, resource: AbstractResource | None) -> _Route:
        label = resource_label(resource)
        if label in NO_STORE_ROUTES:
            cache = "no-store"
        elif label in ETAG_ROUTES:
            cache = f"max-age={self.cap}"
        else:
            cache = "no-cache"
        route = self._routes[resource] = _Route(
            cache, label in ETAG_ROUTES, self.metrics.route(label)
        )
        return route

    async def _options(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        exc = request.match_info.http_exception
        if not isinstance(exc, web.HTTPMethodNotAllowed):
            return await handler(request)  # no such route (404), or one that takes OPTIONS
        methods = set(exc.allowed_methods) | {hdrs.METH_OPTIONS}
        requested = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_METHOD)
        origin = request.headers.get(hdrs.ORIGIN)
        if requested is None or origin is None:
            return web.Response(status=204, headers={hdrs.ALLOW: ", ".join(sorted(methods))})
        granted = self.allowed_origin(origin)
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

    def _finish(
        self, request: web.Request, response: web.StreamResponse, route: _Route
    ) -> web.StreamResponse:
        """CORS, caching, ETag, conditional requests and compression for a response."""
        headers = response.headers
        status = response.status
        reads = request.method in _READS

        if reads or cors_public(request.method, request.path):
            # Any origin: said on every answer, so a shared cache may give it to anyone. Some
            # origins: said to those only, and the answer varies with the Origin header.
            granted = (
                "*" if self.any_origin else self.allowed_origin(request.headers.get(hdrs.ORIGIN))
            )
            if granted is not None:
                headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = granted
                headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = CORS_EXPOSED_HEADERS
        if not self.any_origin:
            headers.add(hdrs.VARY, "Origin")

        control = headers.get(hdrs.CACHE_CONTROL)
        if control is None:
            control = headers[hdrs.CACHE_CONTROL] = (
                route.cache if status < 400 and reads else "no-store"
            )
        if control.startswith("max-age=") and hdrs.EXPIRES not in headers:
            headers[hdrs.EXPIRES] = self.expires(int(control[8:]))

        if status != 200 or not isinstance(response, web.Response):
            return response
        body = response.body
        if not isinstance(body, bytes):
            return response
        if route.etag and hdrs.ETAG not in headers:
            headers[hdrs.ETAG] = body_etag(body)
        condition = request.headers.get(hdrs.IF_NONE_MATCH)
        if condition is not None and reads:
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

    def _middleware(self) -> Middleware:
        routes, new_route = self._routes, self._route
        options, finish = self._options, self._finish
        clock = time.perf_counter

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            start = clock()
            method = request.method
            resource = request.match_info.route.resource
            route = routes.get(resource) or new_route(resource)
            status = 500
            try:
                try:
                    if method == hdrs.METH_OPTIONS:
                        response = await options(request, handler)
                    else:
                        response = await handler(request)
                except web.HTTPException as exc:
                    if exc.status < 400:  # a redirect or a 304: an answer, passed on as raised
                        status = exc.status
                        raise
                    response = error_answer(request, exc)
                except Exception as exc:
                    response = error_answer(request, exc)
                # An OPTIONS answer is sent as it is; a complete one is looked at again only
                # when it is conditional or large enough to compress.
                done = method == hdrs.METH_OPTIONS or (
                    type(response) is AnswerResponse
                    and (
                        response.status != 200
                        or (
                            hdrs.IF_NONE_MATCH not in request.headers
                            and len(cast(bytes, response.body)) <= COMPRESS_ABOVE
                        )
                    )
                )
                if not done:
                    response = finish(request, response, route)
                status = response.status
                return response
            finally:
                route.metrics.observe(method, status, clock() - start)

        return middleware


#: The app's web layer, for the routes that answer with :meth:`WebLayer.answer`.
WEB = web.AppKey("web", WebLayer)


#: Headers that describe a body: a 304 has none.
_ENTITY_HEADERS = frozenset(
    {hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH, hdrs.CONTENT_ENCODING, hdrs.TRANSFER_ENCODING}
)

__all__ = [
    "COMPRESS_ABOVE",
    "WEB",
    "AnswerResponse",
    "Keep",
    "WebLayer",
    "add_slash_aliases",
    "answer_cache_headers",
    "body_etag",
    "cors_public",
    "http_date",
    "keep_of",
    "max_age",
    "resource_label",
    "upstream_failed",
]
