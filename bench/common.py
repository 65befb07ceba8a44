"""Shared helpers: seeded points, latency statistics, the counties store, the machine."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
#: The shared data beside the repository (``python -m bench --data`` names another file).
COUNTIES = REPO.parent / "shared" / "data" / "us-counties.geojson"
#: The US bounding box the random points are drawn from.
LAT_RANGE = (24.5, 49.5)
LONG_RANGE = (-125.0, -66.9)
#: Every imported county gets this GeoReport v2 endpoint, so /service answers with a real uri.
ENDPOINT_URL = "https://311.example.org/open311/v2/"


def random_points(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` seeded uniform points (lats, longs) in the US bounding box."""
    rng = np.random.default_rng(seed)
    lats = rng.uniform(*LAT_RANGE, n)
    longs = rng.uniform(*LONG_RANGE, n)
    return lats, longs


def latency_stats(durations_ns: np.ndarray, wall_s: float | None = None) -> dict[str, float]:
    """p50/p99/mean in microseconds and operations per second."""
    us = np.asarray(durations_ns, dtype=np.float64) / 1000.0
    wall = wall_s if wall_s is not None else float(us.sum()) / 1e6
    return {
        "n": len(us),
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "mean_us": float(us.mean()),
        "per_s": len(us) / wall if wall > 0 else float("nan"),
    }


def build_store(workdir: Path, counties: Path = COUNTIES) -> tuple[Path, float]:
    """Import the US counties into a fresh SQLite store with ``geoweb import``; (path, seconds)."""
    db = workdir / "counties.sqlite"
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "resolver",
            "import",
            str(counties),
            "--id-field",
            "geoid",
            "--name-field",
            "name",
            "--endpoint-url",
            ENDPOINT_URL,
            "--db",
            str(db),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=300,
        cwd=REPO,
    )
    return db, time.perf_counter() - start


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    import aiohttp
    import shapely

    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "geos": shapely.geos_version_string,
        "shapely": shapely.__version__,
        "numpy": np.__version__,
        "aiohttp": aiohttp.__version__,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
