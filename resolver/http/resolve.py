"""``GET /v1/resolve`` (one point, with provenance), ``POST /v1/resolve`` (many points) and
``GET /v1/concerns`` (what can be reported here)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from common.errors import InvalidInput, MissingParameter, PayloadTooLarge
from common.models import Answer, Decision
from resolver.core.decide import parse_coordinate
from resolver.http.errors import json_response
from resolver.http.keys import ANSWERER, SETTINGS
from resolver.http.params import (
    base_url,
    once,
    point,
    point_in,
    query_params,
    query_value,
    read_json,
)
from resolver.http.web import WEB


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/resolve", resolve_one)
    app.router.add_post("/v1/resolve", resolve_batch)
    app.router.add_get("/v1/concerns", concerns_here)


async def resolve_one(request: web.Request) -> web.Response:
    """``GET /v1/resolve?lat=&long=&concern=``: one answer with its provenance."""
    params = query_params(request)
    lat, long = point_in(params)
    app = request.app
    answer = await app[ANSWERER].answer(lat, long, once(params, "concern"))
    return app[WEB].answer(answer_body(answer, base_url(request)), 200, (answer.decision,))


#: By (id of a decision, base URL, index generation): the decision (so its id is not reused
#: while the entry lives) and the JSON of an answer after its ``query``.
_TAILS: dict[tuple[int, str, str], tuple[Decision, bytes]] = {}
#: Entries :data:`_TAILS` holds before it forgets them all.
TAILS_KEPT = 4096


def answer_body(answer: Answer, base: str) -> bytes:
    """``orjson.dumps(answer.at(base).to_dict())``, in a fraction of the time: all but the
    query is the decision's, shared by every point with the same covering jurisdictions, so
    it is serialized once per decision and only the query is serialized per answer."""
    decision = answer.decision
    key = (id(decision), base, answer.index_generation)
    found = _TAILS.get(key)
    if found is None:
        whole = answer.at(base).to_dict()
        del whole["query"]  # the first member: the rest follows it
        if len(_TAILS) >= TAILS_KEPT:
            _TAILS.clear()
        found = _TAILS[key] = (decision, b"," + orjson.dumps(whole)[1:])
    query = {"lat": answer.lat, "long": answer.long, "concern": decision.concern}
    return b'{"query":' + orjson.dumps(query) + found[1]


async def resolve_batch(request: web.Request) -> web.Response:
    """``POST /v1/resolve``: many points (a JSON array or a GeoJSON FeatureCollection of points),
    answered in the same order; a bad point gets an error entry, never a gap."""
    settings = request.app[SETTINGS]
    document = await read_json(request)
    items = _batch_items(document)
    if len(items) > settings.max_batch_points:
        raise PayloadTooLarge(
            f"{len(items)} points in one batch; at most {settings.max_batch_points} are accepted",
            count=len(items),
            limit=settings.max_batch_points,
        )
    geojson = isinstance(document, dict)
    default_concern = query_value(request, "concern")

    def read_point(item: Any) -> tuple[float, float, str | None]:
        lat, long, concern = _feature_point(item) if geojson else _object_point(item)
        return lat, long, concern if concern is not None else default_concern

    answerer = request.app[ANSWERER]
    answers = answerer.answer_rows(items, read_point)
    base = base_url(request)
    return json_response(
        {
            "count": len(answers),
            "index_generation": answerer.resolver.index_generation,
            "answers": [(a.at(base) if isinstance(a, Answer) else a).to_dict() for a in answers],
        }
    )


def _batch_items(document: Any) -> list[Any]:
    """The points of a batch body: a JSON array, or the features of a FeatureCollection."""
    if isinstance(document, dict) and document.get("type") == "FeatureCollection":
        _check_crs(document.get("crs"))
        items = document.get("features")
    else:
        items = None if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise InvalidInput(
            "the body must be a JSON array of {lat, long, concern} objects "
            "or a GeoJSON FeatureCollection of Point features"
        )
    return items


#: The names GeoJSON's old ``crs`` member gives WGS84 longitude/latitude by (RFC 7946 dropped the
#: member: coordinates are WGS84; a document naming another CRS means other numbers).
_WGS84_NAMES = frozenset(
    {
        "urn:ogc:def:crs:ogc:1.3:crs84",
        "urn:ogc:def:crs:ogc::crs84",
        "epsg:4326",
        "urn:ogc:def:crs:epsg::4326",
        "crs84",
        "wgs84",
    }
)


def _check_crs(crs: Any) -> None:
    """Refuse a FeatureCollection that names a CRS other than WGS84: its coordinates are not
    longitude and latitude, and answering them as such would answer other places."""
    if crs is None:
        return
    name = crs.get("properties", {}).get("name") if isinstance(crs, dict) else None
    if not isinstance(name, str) or name.strip().lower() not in _WGS84_NAMES:
        shown = name if isinstance(name, str) else crs
        raise InvalidInput(
            f"the FeatureCollection's crs is {str(shown)[:100]!r}; points must be WGS84 "
            "longitude/latitude (RFC 7946: leave crs out)",
            parameter="crs",
        )


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


async def concerns_here(request: web.Request) -> web.Response:
    """``GET /v1/concerns?lat=&long=[&concern=]``: what can be reported here, from every covering
    jurisdiction, most specific first (with the matches when a concern is given)."""
    lat, long = point(request)
    concern = query_value(request, "concern")
    answer = await request.app[ANSWERER].answer(lat, long, concern)
    decision = answer.decision
    candidates = [c for c in (decision.chosen, *decision.alternatives) if c is not None]
    candidates.sort(key=lambda c: 0 if c is decision.chosen else 1)
    body = orjson.dumps(
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
    return request.app[WEB].answer(body, 200, (decision,))
