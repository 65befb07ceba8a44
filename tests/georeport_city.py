"""A stand-in city's GeoReport v2 endpoint: a real aiohttp server on a loopback port (or over TLS
under a name), answering in JSON and XML as the spec's examples do. It records every POSTed form
and answers POSTs the way the test chooses (``City.post_mode``), so tests can check what reached
the city and how a client takes each kind of answer."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web
from aiohttp.test_utils import TestServer

#: Where the endpoint sits on the stand-in's host.
PATH = "/open311/v2"


def default_services() -> list[dict[str, Any]]:
    return [
        {
            "service_code": "PH-7",
            "service_name": "Pothole",
            "description": "A hole in the road",
            "metadata": True,
            "type": "realtime",
            "keywords": "pothole, road damage",
            "group": "Streets",
        },
        {
            "service_code": "SL-2",
            "service_name": "Street light out",
            "description": "A street light does not work",
            "metadata": False,
            "type": "realtime",
            "keywords": "lamp, lighting",
            "group": "Streets",
        },
    ]


def default_definitions() -> dict[str, dict[str, Any]]:
    """The Pothole service's definition: a required singlevaluelist, an optional number."""
    return {
        "PH-7": {
            "service_code": "PH-7",
            "attributes": [
                {
                    "variable": True,
                    "code": "severity",
                    "datatype": "singlevaluelist",
                    "required": True,
                    "datatype_description": None,
                    "order": 1,
                    "description": "How bad is it?",
                    "values": [
                        {"key": "low", "name": "Low"},
                        {"key": "medium", "name": "Medium"},
                        {"key": "high", "name": "High"},
                    ],
                },
                {
                    "variable": True,
                    "code": "depth",
                    "datatype": "number",
                    "required": False,
                    "datatype_description": "centimetres",
                    "order": 2,
                    "description": "How deep is it?",
                    "values": [],
                },
            ],
        }
    }


@dataclass
class City:
    """The stand-in's state, read and changed by tests.

    ``post_mode`` chooses the answer to a POST: ``id`` (the spec's list with the new
    ``service_request_id``, ``C-<n>``), ``token`` (a token ``tok-<n>``, the id given later
    through ``tokens``), ``bare`` (one object, not a list), ``blackbox`` (neither id nor token),
    ``refuse`` (400 with the spec's errors), ``down`` (503), ``hold`` (no answer until the client
    goes away), ``cut`` (the connection closed once the request is read), ``garbage`` (200 and
    an HTML page), ``huge`` (200 and a body too large to read), ``moved`` (307), ``see_other``
    (303). ``hold_services`` keeps the services list from answering while it is set."""

    post_mode: str = "id"
    services: list[dict[str, Any]] = field(default_factory=default_services)
    definitions: dict[str, dict[str, Any]] = field(default_factory=default_definitions)
    hold_services: bool = False
    #: Every POSTed form, field -> values, in order.
    posts: list[dict[str, list[str]]] = field(default_factory=list)
    #: Requests the city has: id -> (status, status_notes).
    status: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Tokens given -> the id the city has given the request since (None: not yet).
    tokens: dict[str, str | None] = field(default_factory=dict)
    #: The query strings of GETs, in order, and how often the services list was read.
    queries: list[dict[str, str]] = field(default_factory=list)
    services_read: int = 0
    #: The endpoint's base URL, set once the server listens.
    endpoint: str = ""


def _xml(root: str, item: str, rows: list[dict[str, Any]]) -> bytes:
    parts = [f'<?xml version="1.0" encoding="utf-8"?><{root}>']
    for row in rows:
        parts.append(f"<{item}>{_xml_fields(row)}</{item}>")
    parts.append(f"</{root}>")
    return "".join(parts).encode()


def _xml_fields(row: dict[str, Any]) -> str:
    singular = {"attributes": "attribute", "values": "value"}
    parts = []
    for key, value in row.items():
        if isinstance(value, list):
            inner = "".join(f"<{singular[key]}>{_xml_fields(v)}</{singular[key]}>" for v in value)
            parts.append(f"<{key}>{inner}</{key}>")
        elif isinstance(value, bool):
            parts.append(f"<{key}>{str(value).lower()}</{key}>")
        else:
            parts.append(f"<{key}>{escape('' if value is None else str(value))}</{key}>")
    return "".join(parts)


def _answer(
    fmt: str, data: Any, status: int = 200, *, root: str = "service_requests", item: str = "request"
) -> web.Response:
    if fmt == "xml":
        if root == "service_definition":
            body = f'<?xml version="1.0" encoding="utf-8"?><{root}>{_xml_fields(data)}</{root}>'
            xml = body.encode()
        else:
            xml = _xml(root, item, data)
        return web.Response(body=xml, status=status, content_type="text/xml", charset="utf-8")
    return web.Response(
        text=json.dumps(data), status=status, content_type="application/json", charset="utf-8"
    )


def _errors(fmt: str, status: int, *descriptions: str) -> web.Response:
    rows = [{"code": status, "description": d} for d in descriptions]
    return _answer(fmt, rows, status, root="errors", item="error")


def city_app(city: City) -> web.Application:
    """The six GeoReport v2 methods under :data:`PATH`, each ``.json`` or ``.xml``."""

    async def services(request: web.Request) -> web.Response:
        city.queries.append(dict(request.query))
        city.services_read += 1
        while city.hold_services:
            await asyncio.sleep(0.05)
        return _answer(request.match_info["fmt"], city.services, root="services", item="service")

    async def definition(request: web.Request) -> web.Response:
        city.queries.append(dict(request.query))
        fmt, code = request.match_info["fmt"], request.match_info["code"]
        if code not in city.definitions:
            return _errors(fmt, 404, f"no service {code}")
        return _answer(fmt, city.definitions[code], root="service_definition")

    async def post(request: web.Request) -> web.StreamResponse:
        fmt = request.match_info["fmt"]
        form = await request.post()
        city.posts.append({k: [str(v) for v in form.getall(k)] for k in dict.fromkeys(form)})
        n, mode = len(city.posts), city.post_mode
        if mode in ("id", "bare", "blackbox", "see_other"):
            city.status[f"C-{n}"] = ("open", "")
        if mode == "id":
            rows = [{"service_request_id": f"C-{n}", "service_notice": "A crew will look at it."}]
            return _answer(fmt, rows, 201)
        if mode == "bare":  # one object where the spec has a list, as some servers answer
            return web.json_response({"service_request_id": f"C-{n}", "account_id": None})
        if mode == "blackbox":
            return _answer(fmt, [{"service_notice": "Thank you."}])
        if mode == "token":
            token = f"tok-{len(city.tokens) + 1}"
            city.tokens[token] = None
            return _answer(fmt, [{"token": token, "service_notice": "Queued."}])
        if mode == "refuse":
            return _errors(fmt, 400, "This service needs a photo (media_url)", "lat is outside")
        if mode == "down":
            return web.Response(status=503, text="The CRM is down for maintenance")
        if mode == "hold":
            await asyncio.Event().wait()  # until the client goes away
        if mode == "cut":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()  # never delivered
        if mode == "garbage":
            return web.Response(text="<html><body>Thank you!", content_type="text/html")
        if mode == "huge":
            return web.Response(body=b"[" + b" " * 3_000_000 + b"]", content_type="text/json")
        if mode == "moved":
            raise web.HTTPTemporaryRedirect(f"{city.endpoint.rsplit('/', 1)[0]}/v3/requests.{fmt}")
        if mode == "see_other":
            raise web.HTTPSeeOther(f"{city.endpoint}/requests/C-{n}.{fmt}")
        raise AssertionError(f"unknown post_mode {mode!r}")

    async def one_request(request: web.Request) -> web.Response:
        city.queries.append(dict(request.query))
        fmt, request_id = request.match_info["fmt"], request.match_info["id"]
        if request_id not in city.status:
            return _errors(fmt, 404, f"no request {request_id}")
        status, notes = city.status[request_id]
        row = {
            "service_request_id": request_id,
            "status": status,
            "status_notes": notes,
            "service_name": "Pothole",
            "service_code": "PH-7",
            "agency_responsible": "Streets Department",
            "requested_datetime": "2026-03-01T09:00:00-05:00",
            "updated_datetime": "2026-03-01T10:00:00-05:00",
        }
        return _answer(fmt, [row])

    async def token(request: web.Request) -> web.Response:
        city.queries.append(dict(request.query))
        fmt, name = request.match_info["fmt"], request.match_info["token"]
        if name not in city.tokens:
            return _errors(fmt, 404, f"no token {name}")
        request_id = city.tokens[name]
        if request_id is None:  # known, not processed yet
            return _answer(fmt, [{"token": name}])
        return _answer(fmt, [{"service_request_id": request_id, "token": name}])

    app = web.Application()
    fmt = "{fmt:json|xml}"
    app.router.add_get(f"{PATH}/services.{fmt}", services)
    app.router.add_get(f"{PATH}/services/{{code}}.{fmt}", definition)
    app.router.add_post(f"{PATH}/requests.{fmt}", post)
    app.router.add_get(f"{PATH}/requests/{{id}}.{fmt}", one_request)
    app.router.add_get(f"{PATH}/tokens/{{token}}.{fmt}", token)
    return app


@asynccontextmanager
async def serve_city(
    city: City, *, ssl_context: ssl.SSLContext | None = None, host_name: str = "127.0.0.1"
) -> AsyncIterator[City]:
    """Serve ``city`` on a free loopback port; ``city.endpoint`` is its URL, under ``host_name``
    (with ``ssl_context``: https, for a name the test resolves to loopback itself)."""
    server = TestServer(city_app(city), host="127.0.0.1")
    await server.start_server(ssl=ssl_context)
    scheme = "https" if ssl_context is not None else "http"
    city.endpoint = f"{scheme}://{host_name}:{server.port}{PATH}"
    try:
        yield city
    finally:
        await server.close()
