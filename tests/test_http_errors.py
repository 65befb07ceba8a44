"""One error body for every status: ours, aiohttp's (404, 405, 413), a store that fails, and a
bug (500 that says nothing internal, logged with the request id)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from resolver.config import Settings
from resolver.http.app import create_app
from resolver.http.errors import REQUEST_ID_HEADER

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
SECRET = "password=hunter2 at /srv/geoweb/internal.py line 42"


async def _broken(_request: web.Request) -> web.Response:
    raise RuntimeError(SECRET)


@pytest.fixture
async def client(aiohttp_client: ClientFactory, tmp_path: Path) -> TestClient[Any, Any]:
    app = create_app(Settings(db=str(tmp_path / "e.sqlite"), max_body_bytes=2048))
    app.router.add_get("/broken", _broken)  # a handler with a bug in it
    return await aiohttp_client(app)


async def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status == status
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["request_id"] == response.headers[REQUEST_ID_HEADER]
    return body


async def test_an_unexpected_exception_is_a_json_500_logged_with_its_request_id(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="resolver.http.errors"):
        response = await client.get("/broken")
        body = await _error(response, 500, "internal_error")
    assert SECRET not in await response.text() and "RuntimeError" not in await response.text()
    (record,) = [r for r in caplog.records if body["request_id"] in r.getMessage()]
    assert record.exc_info is not None and SECRET in str(record.exc_info[1])


async def test_the_callers_request_id_is_kept_when_it_is_plain(
    client: TestClient[Any, Any],
) -> None:
    body = await _error(
        await client.get("/broken", headers={REQUEST_ID_HEADER: "lb-7f3a.19"}),
        500,
        "internal_error",
    )
    assert body["request_id"] == "lb-7f3a.19"
    # anything else (too long, odd characters) is replaced, never echoed
    odd = await _error(
        await client.get("/broken", headers={REQUEST_ID_HEADER: "<script>" * 20}),
        500,
        "internal_error",
    )
    assert "<" not in odd["request_id"] and len(odd["request_id"]) == 32


async def test_a_failing_store_is_a_json_503(client: TestClient[Any, Any], tmp_path: Path) -> None:
    """The store loses a table under the running server (a broken database): the request that
    reads it gets the one error body, not a traceback."""
    with sqlite3.connect(tmp_path / "e.sqlite") as db:
        db.execute("DROP TABLE refresh_status")
    body = await _error(
        await client.get("/v1/jurisdictions/san-francisco-ca"), 503, "store_unavailable"
    )
    assert "refresh_status" not in body["detail"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/no/such/route", 404, "not_found"),  # routing, before any handler
        ("DELETE", "/service", 405, "method_not_allowed"),  # a route without that method
        ("GET", "/v1/jurisdictions/nowhere", 404, "unknown_jurisdiction"),  # ours
        ("GET", "/service", 400, "missing_parameter"),  # ours
    ],
)
async def test_every_status_has_the_one_body(
    client: TestClient[Any, Any], method: str, path: str, status: int, code: str
) -> None:
    await _error(await client.request(method, path), status, code)


async def test_a_body_over_the_limit_is_a_json_413(client: TestClient[Any, Any]) -> None:
    body = await _error(
        await client.post("/v1/resolve", data=b"[" + b" " * 4096 + b"]"), 413, "payload_too_large"
    )
    assert body["limit"] == 2048


async def test_405_keeps_the_allowed_methods(client: TestClient[Any, Any]) -> None:
    response = await client.delete("/v1/resolve")
    await _error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].split(",")) >= {"GET", "POST"}
