"""The OpenAPI 3.1 description (docs/openapi.json, served at /openapi.json) against the app:
every route is documented and every documented operation is a route; and Schemathesis sends
property-based requests from it to a live ``geoweb serve``: no 500, every answer (status, media
type, headers, body) matching the description."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import hdrs
from aiohttp.test_utils import TestClient

from resolver.config import Settings
from resolver.http.app import create_app
from resolver.http.site import openapi_document

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "openapi.json"
CONFIG = Path(__file__).with_name("schemathesis.toml")
#: Examples per operation and phase: 18 operations in about half a minute on a busy machine.
MAX_EXAMPLES = 40


def _routes() -> set[tuple[str, str]]:
    """(method, path) of every route of the app, trailing-slash aliases and HEAD aside (both are
    spellings of a documented operation)."""
    app = create_app(Settings(db=":memory:"))
    routes = set()
    for resource in app.router.resources():
        path = resource.canonical
        if path != "/" and path.endswith("/"):
            continue
        for route in resource:
            if route.method != hdrs.METH_HEAD:
                routes.add((route.method.lower(), path))
    return routes


def _documented() -> set[tuple[str, str]]:
    document = json.loads(DOCS.read_text())
    return {(method, path) for path, item in document["paths"].items() for method in item}


def test_every_route_is_documented_and_every_documented_operation_exists() -> None:
    routes, documented = _routes(), _documented()
    assert routes - documented == set(), "routes missing from docs/openapi.json"
    assert documented - routes == set(), "operations in docs/openapi.json the app does not have"


def test_the_description_is_openapi_3_1_and_names_every_operation() -> None:
    document = json.loads(DOCS.read_text())
    assert document["openapi"].startswith("3.1.")
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)) == len(_documented())
    for item in document["paths"].values():
        for operation in item.values():
            assert operation["summary"] and "responses" in operation


async def test_the_served_description_is_the_one_in_docs(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    assert openapi_document() == DOCS.read_bytes()
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(Settings(db=str(tmp_path / "o.sqlite")))
    )
    response = await client.get("/openapi.json")
    assert response.status == 200 and response.content_type == "application/json"
    assert await response.read() == DOCS.read_bytes()


# --- Schemathesis against a live server ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``geoweb serve`` on a loopback port with the embedded registry and a fallback."""
    folder = tmp_path_factory.mktemp("schemathesis")
    port = _free_port()
    log = (folder / "server.log").open("w")  # a pipe nobody reads would stall the server
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "resolver",
            "serve",
            "--port",
            str(port),
            "--db",
            str(folder / "live.sqlite"),
            "--fallback-url",
            "https://fallback.example/open311/v2/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"geoweb serve exited: {process.stderr.read() if process.stderr else ''}"
                )
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("geoweb serve did not answer /healthz within 90 s")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _schemathesis() -> list[str]:
    found = shutil.which("schemathesis") or shutil.which("st")
    if found is None:
        pytest.fail(
            "schemathesis is not installed: it is a test dependency (pip install -e '.[test]')"
        )
    return [found]


def test_schemathesis_finds_nothing_against_the_live_server(
    live_server: str, tmp_path: Path
) -> None:
    report = tmp_path / "schemathesis.xml"
    command = [
        *_schemathesis(),
        "--config-file",
        str(CONFIG),
        "run",
        f"{live_server}/openapi.json",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "311",
        "--request-timeout",
        "30",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    summary = result.stdout[-8000:]
    generated = re.search(r"(\d+) generated", result.stdout)
    assert generated is not None, summary
    print(f"schemathesis: {generated.group(1)} cases generated")  # shown with pytest -s
    assert int(generated.group(1)) >= 200, summary
    assert result.returncode == 0, summary
    # every operation was exercised (Schemathesis leaves out the description's own URL)
    tested = set(re.findall(r'testcase name="([A-Z]+) ([^"]+)"', report.read_text()))
    expected = {(m.upper(), path) for m, path in _documented()} - {("GET", "/openapi.json")}
    assert tested == expected, summary
