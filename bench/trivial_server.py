"""The HTTP baseline: a constant small JSON body, served the way ``geoweb serve`` serves.

Started like ``geoweb serve`` (``resolver.http.app.run_server``: the same event loop,
logging and access log), on the same host. ``python -m bench.trivial_server --port P``.
"""

from __future__ import annotations

import argparse

from aiohttp import web

from resolver.config import Settings
from resolver.http.app import run_server
from resolver.http.keys import SETTINGS

BODY = b'{"results":[{"type":"x","uri":"https://311.example.org/open311/v2/"}]}'


async def constant(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-access-log", action="store_true", help="as geoweb serve's")
    args = parser.parse_args()
    app = web.Application(client_max_size=4 * 1024 * 1024)
    if args.no_access_log:
        app[SETTINGS] = Settings(access_log=False)
    app.router.add_get("/service", constant)
    app.router.add_get("/healthz", constant)
    run_server(app, args.host, args.port)


if __name__ == "__main__":
    main()
