"""The HTTP baseline: a constant small JSON body, served the way ``geoweb serve`` serves.

Same ``web.run_app`` defaults, the same INFO logging configuration (so the same access log), the
same host. ``python -m bench.trivial_server --port P``.
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

BODY = b'{"results":[{"type":"x","uri":"https://311.example.org/open311/v2/"}]}'


async def constant(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_get("/service", constant)
    app.router.add_get("/healthz", constant)
    web.run_app(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
