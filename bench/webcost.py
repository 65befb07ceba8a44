"""What the browser and operator layers cost ``/service``: CORS, caching headers, ETags and
compression (:mod:`resolver.http.web`) and the request metrics (:mod:`resolver.http.operators`).

Two ``geoweb serve`` processes, each on a store of its own with the embedded registry, loaded
in turns (ABAB..., so a burst of other work on the machine lands on both): *with* is the server
as shipped; *without* is the same app with only the error middleware, as before those layers
existed. Both answer the same points.
Besides requests/s (noisy on a shared machine), each round reports the server's CPU time per
request, which other processes' load does not change.

    python -m bench.webcost [--rounds 4] [--duration 8] [--concurrency 16]

The ``Cache-Control``/``Expires`` computed by the ``/service`` handler itself are in both servers;
``--headers-only`` times that function alone (microseconds per call).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any

from .httpbench import HOST, free_port, load, server, write_paths

#: Points in and around the embedded registry's US cities, and some covered by nobody.
AREAS = [
    (37.70, 37.81, -122.51, -122.36),  # San Francisco
    (39.90, 40.05, -75.25, -75.05),  # Philadelphia
    (38.85, 38.95, -77.10, -76.95),  # Washington D.C.
    (30.00, 31.00, -40.00, -39.00),  # the Atlantic
]


def points(count: int, seed: int = 311) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    lats, longs = [], []
    for i in range(count):
        south, north, west, east = AREAS[i % len(AREAS)]
        lats.append(rng.uniform(south, north))
        longs.append(rng.uniform(west, east))
    return lats, longs


def serve_args(db: Path, port: int, bare: bool) -> list[str]:
    args = ["-m", "bench.webcost", "--serve", "--db", str(db), "--port", str(port)]
    return [*args, "--bare"] if bare else args


def serve(db: str, port: int, bare: bool) -> None:
    """One server: the shipped app, or (``bare``) the same app with the error middleware only."""
    from resolver.config import Settings
    from resolver.http.app import create_app, run_server
    from resolver.http.errors import error_middleware

    app = create_app(Settings(db=db, host=HOST, port=port))
    if bare:
        # Still mutable: aiohttp freezes the middleware list when the app starts.
        app.middlewares[:] = [error_middleware]
    run_server(app, HOST, port)


def headers_cost() -> float:
    """Microseconds per :func:`~resolver.http.web.answer_cache_headers` call, on a San Francisco
    answer from the embedded registry (what ``/service`` computes per request)."""
    import asyncio

    from resolver.config import Settings
    from resolver.http.web import answer_cache_headers
    from resolver.runtime import Runtime

    async def answer() -> Any:
        with tempfile.TemporaryDirectory() as folder:
            settings = Settings(db=str(Path(folder) / "h.sqlite"))
            async with Runtime.open(settings) as runtime:
                return await runtime.answerer.answer(37.7793, -122.4193)

    one = asyncio.run(answer())
    runs = 20_000
    seconds = timeit.timeit(lambda: answer_cache_headers((one,), 1.8e9, 300), number=runs)
    return 1e6 * seconds / runs


def run(rounds: int, duration: float, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        lats, longs = points(2000)
        paths = write_paths(workdir, lats, longs)["service"]
        ports = {"with": free_port(), "without": free_port()}
        samples: dict[str, list[dict[str, Any]]] = {"with": [], "without": []}
        with (
            server(
                serve_args(workdir / "with.sqlite", ports["with"], False),
                ports["with"],
                workdir / "with.log",
            ) as a,
            server(
                serve_args(workdir / "without.sqlite", ports["without"], True),
                ports["without"],
                workdir / "without.log",
            ) as b,
        ):
            pids = {"with": a.pid, "without": b.pid}
            for kind in samples:  # warm-up: decisions and bodies cached on both
                load(pids[kind], ports[kind], paths, concurrency, 2.0, 10**9)
            for index in range(rounds):
                order = ["with", "without"] if index % 2 == 0 else ["without", "with"]
                for kind in order:
                    result = load(pids[kind], ports[kind], paths, concurrency, duration, 10**9)
                    samples[kind].append(result)
    summary: dict[str, Any] = {"rounds": rounds, "duration_s": duration, "concurrency": concurrency}
    for kind, results in samples.items():
        summary[kind] = {
            "rps_median": statistics.median(r["rps"] for r in results),
            "rps_best": max(r["rps"] for r in results),
            "cpu_us_per_request_median": statistics.median(
                r["server_cpu_us_per_request"] for r in results
            ),
            "statuses": results[-1]["statuses"],
        }
    summary["rps_ratio_median"] = summary["with"]["rps_median"] / summary["without"]["rps_median"]
    summary["rps_ratio_best"] = summary["with"]["rps_best"] / summary["without"]["rps_best"]
    summary["cpu_ratio"] = (
        summary["with"]["cpu_us_per_request_median"]
        / summary["without"]["cpu_us_per_request_median"]
    )
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webcost")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--headers-only", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.db, args.port, args.bare)
        return 0
    if args.headers_only:
        print(json.dumps({"answer_cache_headers_us": round(headers_cost(), 2)}))
        return 0
    result = run(args.rounds, args.duration, args.concurrency)
    result["answer_cache_headers_us"] = round(headers_cost(), 2)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
