"""What a team would build instead of this project: PostGIS behind a minimal aiohttp handler.

``python -m bench.postgis_http --conninfo C --port P [--pool N]``: ``GET /service?lat=&long=``
runs the same prepared ``ST_Covers`` query as bench/postgis.py on one of ``N`` pooled
connections (psycopg 3, async) and answers the covering ids as JSON. Started by
``resolver.http.app.run_server`` like ``geoweb serve`` and the trivial server: the same event
loop, logging and access log.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from resolver.http.app import run_server

from .postgis import PER_POINT

POOL = web.AppKey("pool", asyncio.Queue)


async def service(request: web.Request) -> web.Response:
    try:
        lat, long = float(request.query["lat"]), float(request.query["long"])
    except (KeyError, ValueError):
        return web.json_response({"error": "bad_coordinates"}, status=400)
    pool = request.app[POOL]
    conn = await pool.get()
    try:
        cursor = await conn.execute(PER_POINT, (long, lat), prepare=True)
        ids = [row[0] for row in await cursor.fetchall()]
    finally:
        pool.put_nowait(conn)
    body = {"results": [{"jurisdiction": id_} for id_ in ids]}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(conninfo: str, size: int) -> web.Application:
    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        import psycopg

        pool: asyncio.Queue[psycopg.AsyncConnection] = asyncio.Queue()
        connections = [
            await psycopg.AsyncConnection.connect(conninfo, autocommit=True) for _ in range(size)
        ]
        for conn in connections:
            pool.put_nowait(conn)
        app[POOL] = pool
        yield
        for conn in connections:
            await conn.close()

    app = web.Application()
    app.cleanup_ctx.append(pool_ctx)
    app.router.add_get("/service", service)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conninfo", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pool", type=int, default=32)
    args = parser.parse_args()
    run_server(make_app(args.conninfo, args.pool), args.host, args.port)


if __name__ == "__main__":
    main()
