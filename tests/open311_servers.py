"""Stand-in city servers: a real aiohttp app on a loopback port serving the recorded real Open311
documents (tests/fixtures/discovery/), and misbehaving on purpose on other paths.

The recorded documents are served as published, except that their endpoint host is rewritten to
this server's address (a stand-in has to point at itself). Every hostile path is named for what it
does; ``StandIn.hits`` counts requests per path and ``StandIn.huge_sent`` how many bytes the huge
path managed to write before the client hung up. ``StandIn.in_flight``/``max_in_flight`` count
requests being answered at once, and ``StandIn.hold`` keeps every request waiting until it is set
(to see how many a client sends at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures" / "discovery"

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<discovery><contact>&lol9;</contact></discovery>
"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE discovery [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<discovery><contact>&xxe;</contact></discovery>
"""

HUGE_BYTES = 50 * 1024 * 1024


def services_xml(services: list[dict[str, object]]) -> bytes:
    """A JSON services list as GeoReport v2 XML (for a stand-in endpoint that lists only XML)."""
    parts = ['<?xml version="1.0" encoding="utf-8"?><services>']
    for service in services:
        parts.append("<service>")
        for key, value in service.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            parts.append(f"<{key}>{escape(text)}</{key}>")
        parts.append("</service>")
    parts.append("</services>")
    return "".join(parts).encode()


@dataclass
class StandIn:
    """State of one stand-in server, readable by tests."""

    hits: Counter[str] = field(default_factory=Counter)
    queries: list[str] = field(default_factory=list)
    huge_sent: int = 0
    etag_version: int = 1
    down: bool = False
    max_age: int = 300
    base: str = ""
    #: What Washington DC's documents are served as (the city's own header was not recorded).
    dc_content_type: str = "text/xml"
    #: Requests being answered now, the most at any one time, and when each arrived (loop time).
    in_flight: int = 0
    max_in_flight: int = 0
    arrivals: list[tuple[str, float]] = field(default_factory=list)
    #: When set, every request waits for this event before it is answered.
    hold: asyncio.Event | None = None

    def fixture(self, name: str, host: str, prefix: str) -> bytes:
        return self.rewritten(name, (host, prefix))

    def rewritten(self, name: str, *hosts: tuple[str, str]) -> bytes:
        """A recorded document, byte for byte, with each city host (in the order given) replaced
        by this server's address and a path prefix."""
        body = (FIXTURES / name).read_bytes()
        for host, prefix in hosts:
            body = body.replace(host.encode(), f"{self.base}{prefix}".encode())
        return body


def stand_in_app(state: StandIn) -> web.Application:
    @web.middleware
    async def count(request: web.Request, handler: object) -> web.StreamResponse:
        state.hits[request.path] += 1
        state.queries.append(request.path_qs)
        if not state.base:
            state.base = f"http://{request.host}"
        state.arrivals.append((request.path, asyncio.get_running_loop().time()))
        if state.down and not request.path.startswith("/hostile"):
            return web.Response(status=503, text="down for maintenance")
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            if state.hold is not None:
                await state.hold.wait()
            response: web.StreamResponse = await handler(request)  # type: ignore[operator]
            return response
        finally:
            state.in_flight -= 1

    def cached(body: bytes, content_type: str, etag: str | None = None) -> web.Response:
        headers = {"Cache-Control": f"max-age={state.max_age}"}
        if etag:
            headers["ETag"] = etag
        return _response(body, content_type, headers)

    def _response(body: bytes, content_type: str, headers: dict[str, str]) -> web.Response:
        response = web.Response(body=body, headers=headers)
        response.headers["Content-Type"] = content_type
        return response

    async def bloomington_discovery(request: web.Request) -> web.StreamResponse:
        body = state.fixture("wiki-discovery.json", "http://open311.mycity.gov", "/bloomington")
        return cached(body, "application/json; charset=utf-8", etag='"bl-disc-1"')

    async def bloomington_services_xml(request: web.Request) -> web.StreamResponse:
        services = json.loads((FIXTURES / "bloomington-services.json").read_bytes())
        etag = f'"bl-svc-{state.etag_version}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(
                status=304, headers={"ETag": etag, "Cache-Control": f"max-age={state.max_age}"}
            )
        return cached(services_xml(services), "text/xml", etag=etag)

    async def bloomington_services_json(request: web.Request) -> web.StreamResponse:
        return cached((FIXTURES / "bloomington-services.json").read_bytes(), "application/json")

    async def sf_discovery(request: web.Request) -> web.StreamResponse:
        body = state.fixture("sf-discovery.xml", "https://open311.sfgov.org", "/sf")
        return cached(body, "text/xml; charset=utf-8")

    async def sf_services(request: web.Request) -> web.StreamResponse:
        return cached((FIXTURES / "sf-services.xml").read_bytes(), "application/xml")

    async def rostock_discovery(request: web.Request) -> web.StreamResponse:
        return cached((FIXTURES / "rostock-discovery.xml").read_bytes(), "text/xml")

    # Boston, Washington DC and Zurich, as recorded (tests/fixtures/discovery/README.md). Their
    # services lists were not recorded for Boston and Zurich, so those paths answer 404 here.

    async def boston_discovery(request: web.Request) -> web.StreamResponse:
        body = state.rewritten(
            "boston-discovery.json",
            ("https://mayors24.cityofboston.gov:6443", "/boston-test"),
            ("https://mayors24.cityofboston.gov", "/boston"),
        )
        return cached(body, "application/json")

    async def dc_discovery(request: web.Request) -> web.StreamResponse:
        body = state.rewritten("dc-discovery.xml", ("http://app.311.dc.gov", "/dc"))
        return cached(body, state.dc_content_type)

    async def dc_services(request: web.Request) -> web.StreamResponse:
        return cached((FIXTURES / "dc-services.xml").read_bytes(), state.dc_content_type)

    async def zurich_discovery(request: web.Request) -> web.StreamResponse:
        body = state.rewritten("zurich-discovery.json", ("https://www.zueriwieneu.ch", "/zurich"))
        # FixMyStreet's Open311 controller (format_output) sends this content type
        return cached(body, "application/json; charset=utf-8")

    # -- hostile ---------------------------------------------------------------------------

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)  # never answers in time
        return web.Response(text="too late")

    async def slow_body(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(300):  # a byte every 100 ms: headers in time, the body never
            await response.write(b" ")
            await asyncio.sleep(0.1)
        return response

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()  # no Content-Length: the client must count
        await response.prepare(request)
        chunk = b"[" + b" " * (1024 * 1024 - 1)
        try:
            while state.huge_sent < HUGE_BYTES:
                await response.write(chunk)
                state.huge_sent += len(chunk)
        except (ConnectionResetError, ConnectionError):
            pass
        return response

    async def huge_declared(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Content-Length": str(HUGE_BYTES)}
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            await response.write(b"[" * 65536)
        return response

    async def wrong_type(request: web.Request) -> web.StreamResponse:
        return _response(b"<html><body>Welcome to our portal</body></html>", "text/html", {})

    async def error(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500, text="Internal Server Error")

    async def loop(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/hostile/loop/{(n + 1) % 2}")

    async def to_private(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("http://10.0.0.1/open311/discovery.json")

    async def to_metadata(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async def to_localhost_name(request: web.Request) -> web.StreamResponse:
        port = request.url.port
        raise web.HTTPFound(f"http://localhost:{port}/bloomington/discovery.json")

    async def etag(request: web.Request) -> web.StreamResponse:
        tag = f'"v{state.etag_version}"'
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers={"ETag": tag, "Cache-Control": "no-cache"})
        body = json.dumps({"version": state.etag_version}).encode()
        return _response(body, "application/json", {"ETag": tag, "Cache-Control": "no-cache"})

    async def bomb(request: web.Request) -> web.StreamResponse:
        return _response(BILLION_LAUGHS, "application/xml", {})

    async def xxe(request: web.Request) -> web.StreamResponse:
        return _response(XXE, "text/xml", {})

    app = web.Application(middlewares=[count])
    app.router.add_get("/bloomington/discovery.json", bloomington_discovery)
    app.router.add_get("/bloomington/v2/services.xml", bloomington_services_xml)
    app.router.add_get("/bloomington/test/v2/services.json", bloomington_services_json)
    app.router.add_get("/sf/discovery.xml", sf_discovery)
    app.router.add_get("/sf/v2/services.xml", sf_services)
    app.router.add_get("/rostock/discovery.xml", rostock_discovery)
    app.router.add_get("/boston/open311/discovery.json", boston_discovery)
    app.router.add_get("/dc/cwi/Open311/discovery.xml", dc_discovery)
    app.router.add_get("/dc/cwi/Open311/v2/services.xml", dc_services)
    app.router.add_get("/zurich/open311/v2/discovery.json", zurich_discovery)
    app.router.add_get("/hostile/slow", slow)
    app.router.add_get("/hostile/slow-body", slow_body)
    app.router.add_get("/hostile/huge", huge)
    app.router.add_get("/hostile/huge-declared", huge_declared)
    app.router.add_get("/hostile/wrong-type", wrong_type)
    app.router.add_get("/hostile/error", error)
    app.router.add_get("/hostile/loop/{n}", loop)
    app.router.add_get("/hostile/to-private", to_private)
    app.router.add_get("/hostile/to-metadata", to_metadata)
    app.router.add_get("/hostile/to-localhost-name", to_localhost_name)
    app.router.add_get("/hostile/etag", etag)
    app.router.add_get("/hostile/bomb.xml", bomb)
    app.router.add_get("/hostile/xxe.xml", xxe)
    return app
