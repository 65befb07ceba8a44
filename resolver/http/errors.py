"""The one way the API answers a failure: ``{"error", "detail", "request_id", ...}`` as JSON.

Every exception raised by a handler (or by routing: 404, 405) leaves through
:func:`error_answer`, called by the app's one middleware (:mod:`resolver.http.web`). A
:class:`~common.errors.GeoWebError` says its own status and code; an aiohttp ``HTTPException``
keeps its status; an unreachable store is 503; anything else is a bug, logged with the request id
and answered 500 with nothing internal in the body. The request id is
the caller's ``X-Request-Id`` when it is a sane one, so a client can quote it to an operator.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from common.errors import GeoWebError, PayloadTooLarge
from resolver.http.keys import SETTINGS

log = logging.getLogger(__name__)

JSON = "application/json"
REQUEST_ID_HEADER = "X-Request-Id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
#: Headers of an aiohttp ``HTTPException`` worth keeping on the JSON answer (405 names the
#: methods allowed).
_KEPT_HEADERS = ("Allow",)


def json_response(
    body: Any,
    status: int = 200,
    *,
    content_type: str = JSON,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A JSON answer (orjson): the one helper every handler uses."""
    return web.Response(
        body=orjson.dumps(body), status=status, content_type=content_type, headers=headers
    )


def request_id(request: web.Request) -> str:
    """The caller's ``X-Request-Id`` when it is short and plain, else a new one."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _SANE_ID.fullmatch(given) else uuid.uuid4().hex


def error_body(code: str, detail: str, request_id: str, **fields: Any) -> dict[str, Any]:
    """The body of every error answer: a code to branch on, a sentence to show, the request id
    to quote, and the fields of the error (a limit, a parameter name...)."""
    return {"error": code, "detail": detail, "request_id": request_id, **fields}


def error_response(
    status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> web.Response:
    return json_response(
        body,
        status=status,
        headers={**(headers or {}), REQUEST_ID_HEADER: body["request_id"]},
    )


def _detail(request: web.Request, exc: web.HTTPException) -> str:
    """A sentence for aiohttp's own refusals (routing: 404, 405)."""
    path = request.path[:200]
    if isinstance(exc, web.HTTPNotFound):
        return f"nothing is served at {path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"{request.method[:20]} is not answered at {path} (allowed: {allowed})"
    return exc.reason


def error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The one error answer for a failure (see the module's docstring). An aiohttp
    ``HTTPException`` below 400 (a redirect, a 304) is an answer, not a failure: the caller
    passes it on as raised."""
    if isinstance(exc, GeoWebError):
        fields = exc.to_dict()
        code, detail = fields.pop("error"), fields.pop("detail")
        return error_response(exc.status, error_body(code, detail, request_id(request), **fields))
    if isinstance(exc, web.HTTPException):
        rid = request_id(request)
        kept = {k: exc.headers[k] for k in _KEPT_HEADERS if k in exc.headers}
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            limit = request.app[SETTINGS].max_body_bytes
            too_large = PayloadTooLarge(
                f"the request body is larger than {limit} bytes", limit=limit
            )
            body = error_body(too_large.code, too_large.detail, rid, limit=limit)
        else:
            body = error_body(exc.reason.lower().replace(" ", "_"), _detail(request, exc), rid)
        return error_response(exc.status, body, kept)
    if isinstance(exc, SQLAlchemyError):  # the store went away mid-run (a PostgreSQL restart)
        rid = request_id(request)
        log.warning("store unavailable (request %s): %s", rid, exc)
        detail = "the store is unavailable; try again shortly"
        return error_response(503, error_body("store_unavailable", detail, rid))
    if isinstance(exc, ConnectionResetError):  # the client went away mid-request
        log.info(
            "client disconnected during %s %s (request %s)",
            request.method,
            request.path[:200],
            request_id(request),
        )
        body = error_body(
            "client_disconnected", "the client closed the connection", request_id(request)
        )
        return error_response(400, body)
    rid = request_id(request)
    log.error(
        "unexpected failure answering %s %s (request %s)",
        request.method,
        request.path,
        rid,
        exc_info=exc,
    )
    detail = "the server failed to answer this request; the failure is logged under this request id"
    return error_response(500, error_body("internal_error", detail, rid))


__all__ = [
    "JSON",
    "REQUEST_ID_HEADER",
    "error_answer",
    "error_body",
    "error_response",
    "json_response",
    "request_id",
]
