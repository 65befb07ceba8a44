"""The aiohttp API: the GeoWeb DNS protocol (``/service``) and the native ``/v1`` API.

Handlers parse and validate, call the one :class:`~resolver.core.decide.Resolver`, serialize. Every
error leaves through :func:`error_middleware` as ``{"error": ..., "detail": ...}`` with a 4xx
status; nothing else turns exceptions into responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy.exc import SQLAlchemyError

from boundaries.kml import placemark_document
from common.errors import GeoWebError, InvalidInput, MissingParameter, PayloadTooLarge, UnknownType
from common.models import Answer, Jurisdiction
from discovery.fetch import Fetcher, FetchLimits, make_session
from resolver.config import Settings
from resolver.core.decide import Resolver, parse_coordinate
from resolver.http.registry import REGISTRY, RegistryFollower
from resolver.http.registry import add_routes as add_registry_routes
from resolver.registry.documents import jurisdiction_to_feature, load_jurisdictions
from resolver.sources.answering import Answerer, FactSource
from resolver.sources.discovery import DiscoverySource, refresh_all
from resolver.sources.dns import dns_source
from resolver.sources.dns_registry import registry_answerer
from resolver.store import Store, StoreHttpCache, record_refresh, refresh_status

log = logging.getLogger(__name__)

#: GeoWeb DNS type: the Open311 GeoReport v2 endpoint of the jurisdiction responsible for the point
#: (the type the Open311 wiki's GeoWeb DNS page uses as its example).
TYPE_OPEN311 = "http://ns.geowebdns.org/311/jurisdiction"
#: GeoWeb DNS type: the Open311 service discovery document of that jurisdiction.
TYPE_DISCOVERY = "http://ns.geowebdns.org/311/discovery"
#: GeoWeb DNS type prefix: the GeoReport v2 endpoint that takes this concern here, e.g.
#: ``http://ns.geowebdns.org/311/concern/pothole`` (the concern is percent-encoded).
TYPE_CONCERN_PREFIX = "http://ns.geowebdns.org/311/concern/"
DEFAULT_TYPES = (TYPE_OPEN311, TYPE_DISCOVERY)

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
ANSWERER = web.AppKey("answerer", Answerer)
#: The one HTTP client session of the app (guarded: see discovery/fetch.py), and its fetcher.
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
FETCHER = web.AppKey("fetcher", Fetcher)
DISCOVERY = web.AppKey("discovery", DiscoverySource)
#: Serialized ``/service`` bodies by (types, base URL, ids of the parts of the decisions answering
#: them). A body depends on nothing else, and one decision serves every point with the same
#: covering jurisdictions, so most requests reuse a body. Each entry holds the parts it was made
#: of, so their ids are not reused while it lives; the dict is emptied at SERVICE_BODIES_KEPT.
SERVICE_BODIES = web.AppKey("service_bodies", dict[tuple[object, ...], tuple[object, bytes, bool]])
SERVICE_BODIES_KEPT = 4096

JSON = "application/json"


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where failures become responses: a JSON body and a 4xx status."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except GeoWebError as error:
        return json_response(error.to_dict(), status=error.status)
    except web.HTTPRequestEntityTooLarge as exc:
        limit = request.app[SETTINGS].max_body_bytes
        body = PayloadTooLarge(f"the request body is larger than {limit} bytes", limit=limit)
        return json_response(body.to_dict(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return json_response({"error": code, "detail": exc.reason}, status=exc.status)
    except SQLAlchemyError as exc:  # the store went away mid-run (a PostgreSQL restart, say)
        log.warning("store unavailable: %s", exc)
        detail = "the store is unavailable; try again shortly"
        return json_response({"error": "store_unavailable", "detail": detail}, status=503)


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the store and build the resolver at start-up; close the store at shutdown."""
    settings = app[SETTINGS]
    store = Store(settings.db_path)
    serial = store.serial  # before the entries: changes in between are taken again, not missed
    jurisdictions, source = load_jurisdictions(store)
    app[STORE] = store
    limits = FetchLimits(
        connect_timeout=min(5.0, settings.fetch_timeout),
        total_timeout=settings.fetch_timeout,
        max_bytes=settings.fetch_max_bytes,
    )
    session = make_session(allow_networks=settings.allow_network, limits=limits)
    app[HTTP_SESSION] = session
    app[FETCHER] = Fetcher(
        session, limits=limits, allow_networks=settings.allow_network, cache=StoreHttpCache(store)
    )
    sources: list[FactSource] = []
    if settings.dns_nameserver:  # DNS attests first; discovery then reads what DNS names
        sources.append(dns_source(settings, store))  # its cache is kept in the store
    if settings.discovery_refresh:

        def on_result(jurisdiction: str, ok: bool, reason: str | None, url: str | None) -> None:
            record_refresh(store, jurisdiction, ok=ok, reason=reason, url=url)

        app[DISCOVERY] = DiscoverySource(app[FETCHER], on_result=on_result)
        sources.append(app[DISCOVERY])
    resolver = Resolver(jurisdictions, fallback=settings.fallback)
    app[ANSWERER] = registry_answerer(settings, resolver, sources, app[FETCHER])  # DNS cells too
    app[REGISTRY] = RegistryFollower(
        store,
        app[ANSWERER],
        source,
        serial,
        app[FETCHER],
        poll=settings.registry_poll,
        mirror_interval=settings.mirror_interval,
    )
    log.info("serving %d jurisdictions from the %s registry", len(jurisdictions), source)
    # The registry and its index are long-lived: move them out of the collector's way, so that
    # full collections during requests do not walk tens of thousands of objects every time.
    gc.collect()
    gc.freeze()
    yield
    await session.close()
    store.close()


async def refresh_ctx(app: web.Application) -> AsyncIterator[None]:
    """Refresh discovery facts in the background (when enabled): every ``refresh_interval``
    seconds (plus up to ``refresh_jitter``), the jurisdictions whose facts expired,
    ``refresh_concurrency`` at a time, each after a random delay of up to ``refresh_jitter``."""
    task = None
    if DISCOVERY in app:
        task = asyncio.create_task(_refresh_loop(app))
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _refresh_loop(app: web.Application) -> None:
    answerer, source, settings = app[ANSWERER], app[DISCOVERY], app[SETTINGS]
    rng = random.Random()
    while True:
        now = source.clock()
        due = [j for j in answerer.resolver.jurisdictions if source.needs(j, now)]
        if due:
            log.info("background refresh of %d jurisdictions", len(due))
            try:
                await refresh_all(
                    answerer,
                    due,
                    concurrency=settings.refresh_concurrency,
                    jitter=settings.refresh_jitter,
                    rng=rng,
                )
            except Exception:  # pragma: no cover - a bug must not stop the loop
                log.exception("background refresh failed")
        await asyncio.sleep(settings.refresh_interval + rng.uniform(0, settings.refresh_jitter))


def create_app(settings: Settings) -> web.Application:
    """The whole HTTP service for these settings."""
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[SERVICE_BODIES] = {}
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(refresh_ctx)
    app.router.add_get("/service", geowebdns_service)
    app.router.add_get("/v1/resolve", resolve_one)
    app.router.add_post("/v1/resolve", resolve_batch)
    app.router.add_get("/v1/jurisdictions", list_jurisdictions)
    app.router.add_get("/v1/jurisdictions/{id}", show_jurisdiction)
    app.router.add_get("/v1/jurisdictions/{id}/services", jurisdiction_services)
    app.router.add_get("/v1/concerns", concerns_here)
    app.router.add_get("/healthz", healthz)
    add_registry_routes(app)
    return app


def _point(request: web.Request) -> tuple[float, float]:
    query = request.query
    lat, long = query.get("lat"), query.get("long")
    if lat is None:
        raise MissingParameter("lat")
    if long is None:
        raise MissingParameter("long")
    return parse_coordinate(lat, "lat"), parse_coordinate(long, "long")


def _base_url(request: web.Request) -> str:
    public = request.app[SETTINGS].public_url
    return public.rstrip("/") if public else f"{request.scheme}://{request.host}"


async def geowebdns_service(request: web.Request) -> web.Response:
    """``GET /service?lat=&long=&type=``: the GeoWeb DNS protocol as the Open311 wiki defines it."""
    lat, long = _point(request)
    types = tuple(dict.fromkeys(request.query.getall("type", ()))) or DEFAULT_TYPES
    concerns = {type_uri: _service_concern(type_uri) for type_uri in types}
    answerer = request.app[ANSWERER]
    # One answer per concern, however many types ask for it (the two default types share one).
    # A body is made of each decision's jurisdiction, endpoint and fallback; its provenance,
    # which changes from one request to the next, is not in the body.
    answers: dict[str | None, Answer] = {}
    parts: list[object] = []
    for concern in concerns.values():
        if concern not in answers:
            decision = (answer := await answerer.resolve(lat, long, concern)).decision
            answers[concern] = answer
            parts += (decision.chosen, decision.endpoint, decision.fallback)
    base = _base_url(request)
    bodies = request.app[SERVICE_BODIES]
    key = (types, base, *map(id, parts))
    cached = bodies.get(key)
    if cached is None:
        results = [
            result
            for type_uri, concern in concerns.items()
            if (result := _service_result(base, type_uri, answers[concern])) is not None
        ]
        if len(bodies) >= SERVICE_BODIES_KEPT:
            bodies.clear()
        cached = bodies[key] = (parts, orjson.dumps({"results": results}), bool(results))
    _, body, found = cached
    return web.Response(body=body, status=200 if found else 404, content_type=JSON)


def _service_concern(type_uri: str) -> str | None:
    """The concern a GeoWeb DNS ``type`` asks about (``None``: any), or :class:`UnknownType`."""
    if type_uri in (TYPE_OPEN311, TYPE_DISCOVERY):
        return None
    if type_uri.startswith(TYPE_CONCERN_PREFIX) and len(type_uri) > len(TYPE_CONCERN_PREFIX):
        return unquote(type_uri.removeprefix(TYPE_CONCERN_PREFIX))
    raise UnknownType(
        f"unknown type {type_uri[:200]!r}; this server answers {TYPE_OPEN311}, "
        f"{TYPE_DISCOVERY} and {TYPE_CONCERN_PREFIX}<concern>",
        type=type_uri[:200],
    )


def _service_result(base: str, type_uri: str, answer: Answer) -> dict[str, Any] | None:
    jurisdiction = answer.jurisdiction
    if type_uri == TYPE_DISCOVERY:
        if jurisdiction is None or not jurisdiction.discovery_url:
            return None
        uri: str | None = jurisdiction.discovery_url
    else:
        uri = answer.endpoint.url if answer.endpoint is not None else None
    if uri is None:
        return None
    fallback = answer.decision.fallback
    return {
        "type": type_uri,
        "uri": uri,
        "name": fallback.name if fallback is not None else _name(jurisdiction),
        "kml": _kml_url(base, jurisdiction) if fallback is None else None,
        "jurisdiction": jurisdiction.id if jurisdiction is not None else None,
        "fallback": fallback is not None,
    }


def _name(jurisdiction: Jurisdiction | None) -> str:
    return jurisdiction.name if jurisdiction is not None else ""


def _kml_url(base: str, jurisdiction: Jurisdiction | None) -> str | None:
    if jurisdiction is None or jurisdiction.boundary is None:
        return None
    return f"{base}/v1/jurisdictions/{quote(jurisdiction.id, safe='')}.kml"


async def resolve_one(request: web.Request) -> web.Response:
    """``GET /v1/resolve?lat=&long=&concern=``: one answer with its provenance."""
    lat, long = _point(request)
    answer = await request.app[ANSWERER].resolve(lat, long, request.query.get("concern"))
    return json_response(answer.to_dict())


async def resolve_batch(request: web.Request) -> web.Response:
    """``POST /v1/resolve``: many points (a JSON array or a GeoJSON FeatureCollection of points),
    answered in the same order; a bad point gets an error entry, never a gap."""
    settings = request.app[SETTINGS]
    raw = await request.read()
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from exc
    items = _batch_items(document)
    if len(items) > settings.max_batch_points:
        raise PayloadTooLarge(
            f"{len(items)} points in one batch; at most {settings.max_batch_points} are accepted",
            count=len(items),
            limit=settings.max_batch_points,
        )
    geojson = isinstance(document, dict)
    default_concern = request.query.get("concern")

    def read_point(item: Any) -> tuple[float, float, str | None]:
        lat, long, concern = _feature_point(item) if geojson else _object_point(item)
        return lat, long, concern if concern is not None else default_concern

    resolver = request.app[ANSWERER].resolver
    answers = resolver.resolve_rows(items, read_point)
    return json_response(
        {
            "count": len(answers),
            "index_generation": resolver.index_generation,
            "answers": [answer.to_dict() for answer in answers],
        }
    )


def _batch_items(document: Any) -> list[Any]:
    """The points of a batch body: a JSON array, or the features of a FeatureCollection."""
    if isinstance(document, dict) and document.get("type") == "FeatureCollection":
        items = document.get("features")
    else:
        items = None if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise InvalidInput(
            "the body must be a JSON array of {lat, long, concern} objects "
            "or a GeoJSON FeatureCollection of Point features"
        )
    return items


def _concern_value(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidInput("concern must be a string")


def _object_point(item: Any) -> tuple[float, float, str | None]:
    if not isinstance(item, dict):
        raise InvalidInput('each point must be an object like {"lat": 37.7, "long": -122.4}')
    for name in ("lat", "long"):
        if name not in item:
            raise MissingParameter(name)
    return (
        parse_coordinate(item["lat"], "lat"),
        parse_coordinate(item["long"], "long"),
        _concern_value(item.get("concern")),
    )


def _feature_point(item: Any) -> tuple[float, float, str | None]:
    geometry = item.get("geometry") if isinstance(item, dict) else None
    if not isinstance(geometry, dict) or geometry.get("type") != "Point":
        raise InvalidInput("each feature must have a Point geometry")
    coordinates = geometry.get("coordinates")
    if not isinstance(coordinates, list) or len(coordinates) < 2:
        raise InvalidInput("a Point needs [longitude, latitude] coordinates")
    properties = item.get("properties") or {}
    concern = properties.get("concern") if isinstance(properties, dict) else None
    # GeoJSON order is [longitude, latitude].
    return (
        parse_coordinate(coordinates[1], "lat"),
        parse_coordinate(coordinates[0], "long"),
        _concern_value(concern),
    )


async def list_jurisdictions(request: web.Request) -> web.Response:
    """``GET /v1/jurisdictions?offset=&limit=``: summaries, paged."""
    resolver = request.app[ANSWERER].resolver
    offset = _int_param(request, "offset", 0, 0, len(resolver.jurisdictions))
    limit = _int_param(request, "limit", 1000, 1, 10_000)
    page = resolver.jurisdictions[offset : offset + limit]
    base = _base_url(request)
    return json_response(
        {
            "total": len(resolver.jurisdictions),
            "offset": offset,
            "limit": limit,
            "source": request.app[REGISTRY].source,
            "index_generation": resolver.index_generation,
            "jurisdictions": [
                {
                    **j.summary(),
                    "has_boundary": j.boundary is not None,
                    "endpoint": j.endpoint.url if j.endpoint else None,
                    "href": f"{base}/v1/jurisdictions/{quote(j.id, safe='')}",
                }
                for j in page
            ],
        }
    )


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, not {raw[:40]!r}") from None
    if not low <= value <= max(low, high):
        raise InvalidInput(f"{name} must be between {low} and {max(low, high)}")
    return value


async def show_jurisdiction(request: web.Request) -> web.Response:
    """``GET /v1/jurisdictions/{id}`` (JSON), ``{id}.geojson`` (Feature), ``{id}.kml`` (KML)."""
    resolver = request.app[ANSWERER].resolver
    key = request.match_info["id"]
    jurisdiction_id, suffix = key, ""
    for extension in (".geojson", ".kml"):
        if key.endswith(extension) and key not in resolver:
            jurisdiction_id, suffix = key.removesuffix(extension), extension
    jurisdiction = resolver.jurisdiction(jurisdiction_id)
    if suffix == ".geojson":
        feature = jurisdiction_to_feature(jurisdiction)
        return web.Response(body=orjson.dumps(feature), content_type="application/geo+json")
    if suffix == ".kml":
        return web.Response(
            text=placemark_document(jurisdiction.name, jurisdiction.boundary, jurisdiction.id),
            content_type="application/vnd.google-earth.kml+xml",
        )
    body = jurisdiction.to_dict()
    body["refresh"] = refresh_status(request.app[STORE], jurisdiction.id)
    return json_response(body)


async def jurisdiction_services(request: web.Request) -> web.Response:
    """``GET /v1/jurisdictions/{id}/services``: its services list (fetched when missing or
    expired and discovery is on), with where it came from."""
    answerer = request.app[ANSWERER]
    jurisdiction = answerer.resolver.jurisdiction(request.match_info["id"])
    source = request.app.get(DISCOVERY)
    if source is not None and source.needs(jurisdiction, source.clock()):
        (jurisdiction,) = await answerer.refresh([jurisdiction])
    return json_response(
        {
            "jurisdiction": jurisdiction.summary(),
            "endpoint": jurisdiction.endpoint.to_dict() if jurisdiction.endpoint else None,
            "services": None
            if jurisdiction.services is None
            else [s.to_dict() for s in jurisdiction.services],
            "provenance": [p.to_dict() for p in jurisdiction.provenance],
            "refresh": refresh_status(request.app[STORE], jurisdiction.id),
        }
    )


async def concerns_here(request: web.Request) -> web.Response:
    """``GET /v1/concerns?lat=&long=[&concern=]``: what can be reported here, from every covering
    jurisdiction, most specific first (with the matches when a concern is given)."""
    lat, long = _point(request)
    concern = request.query.get("concern")
    answer = await request.app[ANSWERER].resolve(lat, long, concern)
    decision = answer.decision
    candidates = [c for c in (decision.chosen, *decision.alternatives) if c is not None]
    candidates.sort(key=lambda c: 0 if c is decision.chosen else 1)
    return json_response(
        {
            "query": {"lat": lat, "long": long, "concern": decision.concern},
            "chosen": decision.jurisdiction.id if decision.jurisdiction else None,
            "jurisdictions": [
                {
                    **c.jurisdiction.summary(),
                    "endpoint": c.jurisdiction.endpoint.url if c.jurisdiction.endpoint else None,
                    "concern_status": c.concern_status,
                    "matched_services": [m.to_dict() for m in c.matches],
                    "services": None
                    if c.jurisdiction.services is None
                    else [s.to_dict() for s in c.jurisdiction.services],
                    "provenance": [
                        p.to_dict() for p in c.jurisdiction.provenance if p.fact == "services"
                    ],
                }
                for c in candidates
            ],
        }
    )


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: alive, and what it serves."""
    resolver = request.app[ANSWERER].resolver
    return json_response(
        {
            "status": "ok",
            "jurisdictions": len(resolver),
            "with_boundary": sum(j.boundary is not None for j in resolver.jurisdictions),
            "registry": request.app[REGISTRY].source,
            "index_generation": resolver.index_generation,
        }
    )


def run_server(app: web.Application, host: str, port: int) -> None:
    """Serve ``app`` until interrupted: uvloop's event loop when it is installed, INFO logging
    with aiohttp's access log. ``geoweb serve`` and the benchmark's baseline both start this way."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        loop = None
    else:
        loop = uvloop.new_event_loop()
    web.run_app(app, host=host, port=port, loop=loop)


__all__ = [
    "TYPE_CONCERN_PREFIX",
    "TYPE_DISCOVERY",
    "TYPE_OPEN311",
    "create_app",
    "run_server",
]
