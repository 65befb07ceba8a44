"""Where the benchmark's jurisdictions publish their boundaries: a small aiohttp file server.

``python -m bench.docserver DIR --port P`` serves ``DIR/<name>.geojson`` at
``/boundaries/<name>.geojson`` on 127.0.0.1 as ``application/geo+json`` with
``Cache-Control: max-age=3600``, and ``/healthz``.
It runs in its own process, so the resolver under test does not share an interpreter with it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aiohttp import web


def make_app(root: Path) -> web.Application:
    async def boundary(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        path = root / f"{name}.geojson"
        if "/" in name or not path.is_file():
            raise web.HTTPNotFound()
        return web.Response(
            body=path.read_bytes(),
            content_type="application/geo+json",
            headers={"Cache-Control": "max-age=3600"},
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/boundaries/{name}.geojson", boundary)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.docserver")
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(args.root), host="127.0.0.1", port=args.port, access_log=None)


if __name__ == "__main__":
    main()
