"""What requests carry, read one way for every route: points, paging, JSON bodies, the base URL."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from common.errors import InvalidInput, MissingParameter
from resolver.core.decide import parse_coordinate
from resolver.http.keys import SETTINGS


def query_value(request: web.Request, name: str) -> str | None:
    """A query parameter given at most once: a repeated one is refused rather than guessed at
    (``?lat=1&lat=2`` could mean either)."""
    values = request.query.getall(name, ())
    if len(values) > 1:
        raise InvalidInput(f"{name} is given {len(values)} times; give it once", parameter=name)
    return values[0] if values else None


def point(request: web.Request) -> tuple[float, float]:
    """The ``lat`` and ``long`` of the query, both required (once each), checked."""
    lat, long = query_value(request, "lat"), query_value(request, "long")
    if lat is None:
        raise MissingParameter("lat")
    if long is None:
        raise MissingParameter("long")
    return parse_coordinate(lat, "lat"), parse_coordinate(long, "long")


def base_url(request: web.Request) -> str:
    """Where links point: ``--public-url``, else the URL the request came in on."""
    public = request.app[SETTINGS].public_url
    return public.rstrip("/") if public else f"{request.scheme}://{request.host}"


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter between ``low`` and ``high``, or ``default``."""
    raw = query_value(request, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, not {raw[:40]!r}") from None
    if not low <= value <= max(low, high):
        raise InvalidInput(f"{name} must be between {low} and {max(low, high)}")
    return value


async def read_json(request: web.Request) -> Any:
    """The request's JSON body (the app's ``client_max_size`` applies: 413 beyond it)."""
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from None


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object."""
    document = await read_json(request)
    if not isinstance(document, dict):
        raise InvalidInput("the body must be a JSON object")
    return document
