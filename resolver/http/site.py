"""What people and tools read about the service: the map page at ``/`` (with its files under
``/static/``) and the OpenAPI 3.1 description at ``/openapi.json``.

The files ship in the package (``resolver/http/static/``, ``resolver/http/openapi.json``; the
latter is also ``docs/openapi.json``) and are read once when the app is made: the page needs no
other server, no CDN and, unless ``--map-tile-url`` is given, no tiles.
"""

from __future__ import annotations

from importlib import resources

import orjson
from aiohttp import web

from resolver.http.keys import SETTINGS

#: Files of ``static/`` that are served, by extension, with their media types.
MEDIA_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".txt": "text/plain",
}


def _package_file(name: str) -> bytes:
    return resources.files("resolver.http").joinpath(name).read_bytes()


def openapi_document() -> bytes:
    """The OpenAPI 3.1 description of every route, as shipped."""
    return _package_file("openapi.json")


def static_files() -> dict[str, tuple[bytes, str]]:
    """The files served under ``/static/``: name -> (body, media type)."""
    found = {}
    for entry in resources.files("resolver.http").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in MEDIA_TYPES:
            found[entry.name] = (entry.read_bytes(), MEDIA_TYPES[suffix])
    return found


def page(tile_url: str | None, tile_attribution: str) -> bytes:
    """The map page, with the operator's tile settings in its configuration block."""
    template = _package_file("static/index.html")
    config = orjson.dumps({"tileUrl": tile_url or "", "tileAttribution": tile_attribution})
    # Inside <script>, "</" could end the element: JSON allows writing it "<\/".
    return template.replace(b"{{config}}", config.replace(b"</", b"<\\/"))


def add_routes(app: web.Application) -> None:
    settings = app[SETTINGS]
    html = page(settings.map_tile_url, settings.map_tile_attribution)
    description = openapi_document()
    files = static_files()

    async def map_page(_request: web.Request) -> web.Response:
        """``GET /``: the map page."""
        return web.Response(body=html, content_type="text/html", charset="utf-8")

    async def openapi(_request: web.Request) -> web.Response:
        """``GET /openapi.json``: the OpenAPI 3.1 description of every route."""
        return web.Response(body=description, content_type="application/json")

    async def static(request: web.Request) -> web.Response:
        """``GET /static/{name}``: a file of the page."""
        name = request.match_info["name"]
        if name not in files:
            raise web.HTTPNotFound()
        body, media_type = files[name]
        return web.Response(body=body, content_type=media_type, charset="utf-8")

    app.router.add_get("/", map_page)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/static/{name}", static)


__all__ = ["add_routes", "openapi_document", "page", "static_files"]
