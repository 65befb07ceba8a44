"""A bounded HTTP load generator (aiohttp client), run in its own process.

``python -m bench.loadgen --base URL --paths FILE --concurrency N --duration S --max-requests M``
sends GET requests over N keep-alive connections for S seconds (or M requests, whichever comes
first), cycling through the paths in FILE (one per line), and prints one JSON object: requests/s,
p50/p99 latency in microseconds, and the status counts. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import aiohttp
import numpy as np


async def run(
    base: str, paths: list[str], concurrency: int, duration: float, max_requests: int
) -> dict:
    if urlsplit(base).hostname != "127.0.0.1":
        raise SystemExit("loadgen only talks to 127.0.0.1")
    latencies: list[int] = []
    statuses: Counter[int] = Counter()
    errors = 0
    issued = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    now = time.perf_counter_ns
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:

        async def fetch(path: str) -> None:
            async with session.get(path) as response:
                await response.read()

        # Warm-up: open every connection once (not counted).
        await asyncio.gather(*(fetch(paths[k % len(paths)]) for k in range(concurrency)))
        deadline = time.perf_counter() + duration

        async def worker(offset: int) -> None:
            nonlocal issued, errors
            i = offset
            while issued < max_requests and time.perf_counter() < deadline:
                issued += 1
                path = paths[i % len(paths)]
                i += concurrency
                start = now()
                try:
                    async with session.get(path) as response:
                        await response.read()
                        statuses[response.status] += 1
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                    continue
                latencies.append(now() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    us = np.asarray(latencies, dtype=np.float64) / 1000.0
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_us": float(np.percentile(us, 50)) if len(us) else None,
        "p99_us": float(np.percentile(us, 99)) if len(us) else None,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--paths", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    args = parser.parse_args()
    with open(args.paths, encoding="utf-8") as f:
        paths = [line.strip() for line in f if line.strip()]
    result = asyncio.run(run(args.base, paths, args.concurrency, args.duration, args.max_requests))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
