"""What the browser and operator layers cost ``/service``: the app's one middleware (counting,
CORS, caching, compression, the error body: :mod:`resolver.http.web`) and the headers the
answering routes make up front (:meth:`~resolver.http.web.WebLayer.answer`).

Over sockets: two ``geoweb serve`` processes, each on a store of its own with the embedded
registry, loaded in turns (ABAB..., so a burst of other work on the machine lands on both): *with*
is the server as shipped; *without* is the same app with only the error middleware (no counting,
no ETag, compression or CORS for other routes; the answers still carry the headers they make).
Both answer the same points. Besides requests/s (noisy on a shared machine), each round reports
the server's CPU time per request, which other processes' load does not change.

    python -m bench.webcost [--rounds 4] [--duration 8] [--concurrency 16]

In process (``--inproc``): no sockets and no load generator, so nothing but the server's own
work is timed. Each kind runs in a process of its own (in turns, ``--rounds`` times): raw HTTP
requests are fed to aiohttp's protocol for the app, one at a time, as one keep-alive connection
would send them, and the process's CPU time per request is reported (the median round):

- ``trivial``: bench/trivial_server.py's constant handler, no middleware;
- ``middleware``: the same with one middleware that only passes the request on (what aiohttp
  charges any app for having one);
- ``layer``: a constant body answered through the app's middleware and
  :meth:`~resolver.http.web.WebLayer.answer` (what CORS, caching and counting cost alone);
- ``resolve_only``: the point read and answered, a constant body (what the core adds);
- ``service`` and ``v1_resolve``: the routes as shipped.

    python -m bench.webcost --inproc [--db STORE] [--requests 20000] [--rounds 3]

``--headers-only`` times :func:`~resolver.http.web.answer_cache_headers` alone (microseconds
per call).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .common import REPO
from .httpbench import HOST, TYPE_OPEN311, free_port, load, server, write_paths

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
    """One server: the shipped app, or (``bare``) the same app with only a middleware that turns
    failures into the error body."""
    from aiohttp import web
    from aiohttp.typedefs import Handler

    from resolver.config import Settings
    from resolver.http.app import create_app, run_server
    from resolver.http.errors import error_answer

    @web.middleware
    async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_answer(request, exc)
        except Exception as exc:
            return error_answer(request, exc)

    app = create_app(Settings(db=db, host=HOST, port=port))
    if bare:
        # Still mutable: aiohttp freezes the middleware list when the app starts.
        app.middlewares[:] = [error_middleware]
    run_server(app, HOST, port)


#: The kinds ``--inproc`` times, in the order they run in each round.
INPROC_KINDS = ("trivial", "middleware", "layer", "resolve_only", "service", "v1_resolve")


def inproc_paths(kind: str, lats: list[float], longs: list[float]) -> list[str]:
    """The request targets of one in-process kind (the same points for every kind)."""
    route = {
        "trivial": "/service",
        "middleware": "/service",
        "layer": "/bench/layer",
        "resolve_only": "/bench/resolve",
        "service": "/service",
        "v1_resolve": "/v1/resolve",
    }[kind]
    if kind == "v1_resolve":
        return [f"{route}?lat={a:.6f}&long={b:.6f}" for a, b in zip(lats, longs, strict=True)]
    kind_type = quote(TYPE_OPEN311, safe="")
    return [
        f"{route}?lat={a:.6f}&long={b:.6f}&type={kind_type}"
        for a, b in zip(lats, longs, strict=True)
    ]


def inproc_app(kind: str, db: str) -> Any:
    """The app one in-process kind is timed on."""
    from aiohttp import web

    from bench.trivial_server import BODY, constant
    from resolver.config import Settings
    from resolver.http.app import create_app
    from resolver.http.keys import ANSWERER
    from resolver.http.params import point_in, query_params
    from resolver.http.web import WEB

    if kind in ("trivial", "middleware"):

        @web.middleware
        async def passing(request: web.Request, handler: Any) -> web.StreamResponse:
            return await handler(request)

        middlewares = [passing] if kind == "middleware" else []
        app = web.Application(middlewares=middlewares, client_max_size=4 * 1024 * 1024)
        app.router.add_get("/service", constant)
        return app
    app = create_app(Settings(db=db, host=HOST, port=8080))
    fixed: list[Any] = []

    async def layer(request: web.Request) -> web.Response:
        answerer = request.app[ANSWERER]
        if not fixed:
            fixed.append((await answerer.answer(*AREAS[0][::2])).decision)
        return request.app[WEB].answer(BODY, 200, fixed)

    async def resolve_only(request: web.Request) -> web.Response:
        lat, long = point_in(query_params(request))
        answer = await request.app[ANSWERER].answer(lat, long)
        return request.app[WEB].answer(BODY, 200, [answer.decision])

    app.router.add_get("/bench/layer", layer)
    app.router.add_get("/bench/resolve", resolve_only)
    return app


def inproc_run(kind: str, db: str, points_file: str, requests: int) -> float:
    """CPU microseconds per request of one kind, in this process (after a warm-up pass over
    every point): aiohttp's own protocol, fed one request at a time on one connection."""
    import asyncio
    import os
    import time

    import uvloop

    from resolver.http.serving import ACCESS_BUFFER, JsonErrorRunner, runner_options

    ACCESS_BUFFER.fd = os.open(os.devnull, os.O_WRONLY)  # the log is made, then dropped
    lats, longs = json.loads(Path(points_file).read_text())
    raw = [
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:8080\r\nUser-Agent: wrk\r\n\r\n".encode()
        for path in inproc_paths(kind, lats, longs)
    ]

    class Transport(asyncio.Transport):
        """Takes what the server writes; wakes the sender at each write."""

        def __init__(self) -> None:
            super().__init__()
            self.written: asyncio.Future[None] | None = None

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return {"peername": (HOST, 40000), "sockname": (HOST, 8080)}.get(name, default)

        def is_closing(self) -> bool:
            return False

        def write(self, data: Any) -> None:
            if self.written is not None and not self.written.done():
                self.written.set_result(None)

        def writelines(self, chunks: Any) -> None:
            self.write(b"".join(chunks))

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

        def close(self) -> None:
            pass

    async def main() -> float:
        app = inproc_app(kind, db)
        runner = JsonErrorRunner(app, **runner_options(app))
        await runner.setup()
        assert runner.server is not None
        protocol = runner.server()
        transport = Transport()
        protocol.connection_made(transport)
        loop = asyncio.get_running_loop()

        async def one(request: bytes) -> None:
            transport.written = loop.create_future()
            protocol.data_received(request)
            await transport.written

        try:
            for request in raw:  # warm-up: decisions and bodies made, as after a minute of use
                await one(request)
            started = time.process_time()
            for i in range(requests):
                await one(raw[i % len(raw)])
            return 1e6 * (time.process_time() - started) / requests
        finally:
            protocol.connection_lost(None)
            await runner.cleanup()

    return uvloop.run(main())


def inproc(db: str | None, given: str | None, rounds: int, requests: int) -> dict[str, Any]:
    """Every :data:`INPROC_KINDS` in processes of their own, in turns, ``rounds`` times."""
    with tempfile.TemporaryDirectory() as folder:
        store = db or str(Path(folder) / "inproc.sqlite")
        points_file = Path(given) if given else Path(folder) / "points.json"
        if not given:
            points_file.write_text(json.dumps(points(2000)))
        samples: dict[str, list[float]] = {kind: [] for kind in INPROC_KINDS}
        for _ in range(rounds):
            for kind in INPROC_KINDS:
                args = ["--inproc-kind", kind, "--db", store, "--points", str(points_file)]
                done = subprocess.run(
                    [sys.executable, "-m", "bench.webcost", *args, "--requests", str(requests)],
                    cwd=REPO,
                    capture_output=True,
                    check=True,
                    timeout=600,
                )
                samples[kind].append(float(done.stdout.decode().split()[-1]))
    result: dict[str, Any] = {
        "rounds": rounds,
        "requests": requests,
        # Named, not located: the report says what was measured, not where this machine kept it.
        "store": Path(db).name if db else "embedded",
        "points": Path(given).name if given else "2,000 in the embedded registry's cities",
    }
    median = {kind: statistics.median(values) for kind, values in samples.items()}
    trivial = median["trivial"]
    for kind, values in samples.items():
        result[kind] = {
            "cpu_us_per_request_median": round(median[kind], 2),
            "all_rounds": [round(v, 2) for v in values],
            "trivial_over_this": round(trivial / median[kind], 3),
        }
    # The most /service could reach of the trivial handler's rate, CPU-bound, when one part of
    # its work cost nothing: the web layer (the point read and resolved on a bare handler), or
    # all but the web layer (a fixed answer through it).
    result["ceilings"] = {
        "without_web_layer": round(
            trivial / (trivial + median["resolve_only"] - median["layer"]), 3
        ),
        "without_resolve": round(trivial / median["layer"], 3),
        "one_middleware": round(trivial / median["middleware"], 3),
    }
    return result


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
    parser.add_argument("--inproc", action="store_true", help="time the server in process")
    parser.add_argument("--requests", type=int, default=20_000, help="per --inproc round")
    parser.add_argument("--db", help="the store --inproc answers from [a fresh embedded one]")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--inproc-kind", choices=INPROC_KINDS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--points", help="--inproc: a JSON [lats, longs] file [2,000 in the embedded cities]"
    )
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.db, args.port, args.bare)
        return 0
    if args.inproc_kind:
        print(f"{inproc_run(args.inproc_kind, args.db, args.points, args.requests):.3f}")
        return 0
    if args.headers_only:
        print(json.dumps({"answer_cache_headers_us": round(headers_cost(), 2)}))
        return 0
    if args.inproc:
        print(json.dumps(inproc(args.db, args.points, args.rounds, args.requests), indent=1))
        return 0
    result = run(args.rounds, args.duration, args.concurrency)
    result["answer_cache_headers_us"] = round(headers_cost(), 2)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
