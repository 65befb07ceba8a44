"""For the people running the service: ``GET /metrics`` (:mod:`resolver.http.metrics`; every
request is counted by the app's one middleware, :mod:`resolver.http.web`), and the JSON access
log (``--access-log-json``)."""

from __future__ import annotations

import datetime as dt
import time

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from resolver.http.errors import REQUEST_ID_HEADER
from resolver.http.keys import METRICS, REGISTRY
from resolver.http.metrics import MirrorFacts, StoreFacts
from resolver.http.web import resource_label
from resolver.store.aio import in_thread

#: The media type of Prometheus's text exposition format.
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: every metric of this app in Prometheus's text format."""
    follower = request.app[REGISTRY]
    store = follower.store

    def read() -> StoreFacts:
        return StoreFacts(
            serial=store.serial,
            answered_serial=follower.serial,
            mirrors=[MirrorFacts(m.url, m.failures, m.last_success_at) for m in store.mirrors()],
        )

    facts = await in_thread(read)
    body = request.app[METRICS].render(facts, time.time())
    response = web.Response(body=body)
    response.headers["Content-Type"] = PROMETHEUS
    return response


def route_label(request: BaseRequest) -> str:
    """The pattern of the route a request took (a bounded set of labels), or ``unmatched``."""
    try:
        resource = request.match_info.route.resource if isinstance(request, web.Request) else None
    except AssertionError:  # a request aiohttp could not parse never reached the router
        resource = None
    return resource_label(resource)


class JsonAccessLogger(AbstractAccessLogger):
    """The access log as one JSON object a line, for log collectors to read without a pattern."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        entry = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "remote": request.remote,
            "method": request.method,
            "path": request.path,
            "query": request.query_string or None,
            "route": route_label(request),
            "status": response.status,
            "bytes": response.body_length,
            "seconds": round(time, 6),
            "request_id": response.headers.get(REQUEST_ID_HEADER),
            "user_agent": request.headers.get("User-Agent"),
        }
        self.logger.info(orjson.dumps(entry).decode())


__all__ = ["PROMETHEUS", "JsonAccessLogger", "add_routes", "route_label"]
