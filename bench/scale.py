"""A large registry end to end: ``python -m bench.scale DB [--points N]`` prints one JSON object.

For a store such as bench/synthetic.py writes (``python -m bench.scale --build DB --n 1000000``
writes one first): ``geoweb serve`` from exec to its first 200 without and with the index
snapshot, and its memory; then in this process the store load and the Resolver build timed,
the share of points the grid answers by lookup and batch ÷ raw STRtree on the uniform points
and on the real-report mix (bench/workloads.py).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import shapely

from . import serve_start, synthetic, workloads


def measure(db: Path, points: int, seed: int) -> dict[str, Any]:
    from resolver.core.decide import Resolver
    from resolver.registry.documents import load_jurisdictions
    from resolver.store import Store

    out: dict[str, Any] = {"serve": serve_start.run(db, 1, 1)}
    start = time.perf_counter()
    with Store(db) as store:
        jurisdictions, _ = load_jurisdictions(store)
    loaded = time.perf_counter()
    resolver = Resolver(jurisdictions)
    built = time.perf_counter()
    out.update(
        jurisdictions=len(jurisdictions),
        load_s=loaded - start,
        build_s=built - loaded,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        grid=None if resolver.index.grid is None else resolver.index.grid.__repr__(),
    )
    tree = shapely.STRtree([j.boundary for j in jurisdictions])
    geometries = [j.boundary for j in jurisdictions if j.boundary is not None]
    for kind in ("uniform", "mix"):
        lats, longs = workloads.points(kind, geometries, points, seed)
        out[kind] = workloads.measure(resolver, tree, lats, longs, min(points, 10_000), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db", type=Path)
    parser.add_argument("--build", action="store_true", help="write a synthetic store first")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20240611)
    args = parser.parse_args()
    if args.build:
        synthetic.build_store(args.db, args.n, args.seed)
    json.dump(measure(args.db, args.points, args.seed), sys.stdout)
    print()


if __name__ == "__main__":
    main()
