"""Forwarding latency after a registry change: ``geoweb serve`` holds N reports in a place nobody
covers; ``geoweb import`` (another process) brings that city; how long until the stand-in city
(tests/georeport_city.py, a real aiohttp server on loopback) has the first and the last of them.

    python -m bench.adhoc_forward [--reports 1 100 1000] [--registry-poll 10 1] [--runs 3]

The clock starts when the import process has exited (its transaction committed). The figure is up
to one ``--registry-poll`` until the server reads the change, then per report one answer, the
city's services list and definition (read once per pass), and one POST.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from shapely.geometry import box, mapping

from resolver.store import Store
from tests.georeport_city import City, serve_city

REPO = Path(__file__).resolve().parent.parent
AREA = (-89.70, 39.74, -89.60, 39.84)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _until(check: Any, timeout: float) -> float:
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError
        await asyncio.sleep(0.005)
    return time.perf_counter()


async def run_once(reports: int, registry_poll: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        db = tmp / "geoweb.sqlite"
        with Store(db) as store:
            for i in range(reports):
                store.add_adhoc_request(
                    {
                        "service_code": "pothole",
                        "service_name": "Pothole",
                        "lat": 39.75 + 0.08 * i / max(reports, 1),
                        "long": -89.65,
                        "description": f"report {i}",
                        "attributes": {"severity": "high"},
                    }
                )
        port = _free_port()
        async with serve_city(City()) as city:
            command = [sys.executable, "-m", "resolver", "serve", "--db", str(db)]
            command += ["--no-embedded", "--port", str(port), "--workers", "1"]
            command += ["--allow-network", "127.0.0.0/8", "--registry-poll", str(registry_poll)]
            server = subprocess.Popen(
                command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                async with aiohttp.ClientSession() as http:
                    for _ in range(600):
                        try:
                            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                                if response.status == 200:
                                    break
                        except aiohttp.ClientError:
                            pass
                        await asyncio.sleep(0.05)
                await asyncio.sleep(1.0)  # its first pass over the held reports is done
                feature = {
                    "type": "Feature",
                    "geometry": mapping(box(*AREA)),
                    "properties": {"id": "springfield", "name": "Springfield"},
                }
                source = tmp / "city.geojson"
                source.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
                importing = [sys.executable, "-m", "resolver", "import", str(source)]
                importing += ["--db", str(db), "--id-field", "id"]
                importing += ["--name-field", "name", "--endpoint-url", city.endpoint]
                await asyncio.to_thread(
                    subprocess.run, importing, cwd=REPO, check=True, capture_output=True
                )
                committed = time.perf_counter()
                first = await _until(lambda: len(city.posts) >= 1, 120)
                last = await _until(lambda: len(city.posts) >= reports, 600)
                await asyncio.sleep(0.5)
                posts = len(city.posts)
            finally:
                server.terminate()
                server.wait(timeout=30)
    return {
        "reports": reports,
        "registry_poll_s": registry_poll,
        "first_forwarded_s": round(first - committed, 3),
        "all_forwarded_s": round(last - committed, 3),
        "posts_received": posts,
        "reports_per_second_after_first": round((reports - 1) / (last - first), 1)
        if reports > 1 and last > first
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--registry-poll", type=float, nargs="+", default=[10.0, 1.0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for poll in args.registry_poll:
        for reports in args.reports:
            runs = [asyncio.run(run_once(reports, poll)) for _ in range(args.runs)]
            for run in runs:
                print(json.dumps(run), flush=True)
            summary: dict[str, Any] = {"reports": reports, "registry_poll_s": poll}
            for key in ("first_forwarded_s", "all_forwarded_s"):
                values = sorted(r[key] for r in runs)
                summary[key] = {
                    "min": values[0],
                    "median": statistics.median(values),
                    "max": values[-1],
                }
            print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    main()
