"""POSTs a second the ad hoc GeoReport v2 endpoint holds: the real routes and a real SQLite store
on a loopback port, form-encoded requests from a few concurrent clients, bounded in time.

    python -m bench.adhoc_posts [--seconds 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from resolver.adhoc import routes
from resolver.http.keys import STORE
from resolver.store import Store


async def run(seconds: float, concurrency: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "bench.sqlite")
        app = web.Application()
        app[STORE] = store
        # The per-address limit would stop one loopback client at once: raised for the measure.
        routes.add_routes(app, routes.AdhocConfig(posts_per_minute=10**9), store_key=STORE)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/adhoc/v2/requests.json"
        form = {
            "service_code": "pothole",
            "lat": "30",
            "long": "-40",
            "description": "bench",
            "attribute[severity]": "low",
        }
        done = 0
        latencies: list[float] = []
        deadline = time.monotonic() + seconds

        async def client(session: aiohttp.ClientSession) -> None:
            nonlocal done
            while time.monotonic() < deadline:
                start = time.perf_counter()
                async with session.post(url, data=form) as response:
                    assert response.status == 201, await response.text()
                    await response.read()
                latencies.append(time.perf_counter() - start)
                done += 1

        started = time.monotonic()
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
        await runner.cleanup()
        stored = len(store.adhoc_requests(limit=10**6, start=None))
        store.close()
    latencies.sort()
    return {
        "posts": done,
        "stored": stored,
        "seconds": round(elapsed, 2),
        "posts_per_second": round(done / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(asyncio.run(run(args.seconds, args.concurrency)))


if __name__ == "__main__":
    main()
