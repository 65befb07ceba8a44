"""What requests carry, read one way for every route: points, paging, JSON bodies, the base URL."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote_plus

import orjson
from aiohttp import web

from common.errors import InvalidInput, MissingParameter
from resolver.core.decide import parse_coordinate
from resolver.http.keys import SETTINGS


def query_params(request: web.Request) -> dict[str, list[str]]:
    """The query's parameters by name, each name's values in order: what ``request.query``
    holds, decoded the same way (as ``urllib.parse.parse_qsl`` with blank values kept), read in
    one pass over the raw query string, without yarl's multidict.

    Only pieces with a ``%`` or ``+`` are decoded; decodings are remembered, since clients send
    the same few percent-encoded values (a GeoWeb DNS type) with every request."""
    params: dict[str, list[str]] = {}
    for piece in request.rel_url.raw_query_string.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            if "%" in piece or "+" in piece:
                name, value = _decoded(name), _decoded(value)
            values = params.get(name)
            if values is None:
                params[name] = [value]
            else:
                values.append(value)
    return params


#: ``unquote_plus``, remembered for the last 256 pieces (each at most a request line long).
_decoded = functools.lru_cache(maxsize=256)(unquote_plus)


def once(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    """A parameter given at most once: a repeated one is refused rather than guessed at
    (``?lat=1&lat=2`` could mean either)."""
    return _single(name, params.get(name, ()))


def query_value(request: web.Request, name: str) -> str | None:
    """A query parameter given at most once (see :func:`once`)."""
    return _single(name, request.query.getall(name, ()))


def _single(name: str, values: Sequence[str]) -> str | None:
    if len(values) > 1:
        raise InvalidInput(f"{name} is given {len(values)} times; give it once", parameter=name)
    return values[0] if values else None


def point_in(params: Mapping[str, Sequence[str]]) -> tuple[float, float]:
    """The ``lat`` and ``long`` of these parameters, both required (once each), checked."""
    lats, longs = params.get("lat", ()), params.get("long", ())
    if len(lats) != 1 or len(longs) != 1:  # a repeated one is refused first, lat before long
        lat = _single("lat", lats)
        _single("long", longs)
        raise MissingParameter("lat" if lat is None else "long")
    return _coordinate(lats[0], "lat"), _coordinate(longs[0], "long")


def point(request: web.Request) -> tuple[float, float]:
    """The ``lat`` and ``long`` of the query (see :func:`point_in`)."""
    return point_in(query_params(request))


def _coordinate(text: str, name: str) -> float:
    # The usual form, plain ASCII decimal, in one float(); any other is parse_coordinate's to
    # accept or refuse (and say why): it reads what it accepts the same way.
    if text.isascii() and "_" not in text:
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    return parse_coordinate(text, name)


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
