"""A large registry end to end: ``python -m bench.scale DB [--points N]`` prints one JSON object.

For a store such as bench/synthetic.py writes (``python -m bench.scale --build DB --n 1000000``
writes one first): ``geoweb serve`` from exec to its first 200 without and with the index
snapshot, and its memory; then in this process where the start-up goes (the store load, the index
without its grid, the whole Resolver build, the snapshot written and loaded back, with the RSS
after each step), and on the uniform points and on the real-report mix (bench/workloads.py) the
share of points the grid answers (without the exact path, and by lookup alone), single and batch
against the raw STRtree.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import shapely
from shapely import affinity

from . import memory, serve_start, synthetic, workloads


def measure(db: Path, points: int, seed: int, runs: int = 3) -> dict[str, Any]:
    from boundaries.index import BoundaryIndex
    from resolver import index_snapshot
    from resolver.core.decide import Resolver
    from resolver.registry.documents import load_jurisdictions
    from resolver.store import Store

    out: dict[str, Any] = {"serve": serve_start.run(db, 1, runs)}
    steps: dict[str, dict[str, float]] = {}

    def step(name: str, started: float) -> float:
        now = time.perf_counter()
        steps[name] = {"s": now - started, "rss_mib": memory.rss_kib() / 1024}
        return now

    # This runs in the bench's own process: its peak so far (another registry, an earlier run)
    # is not this registry's.
    memory.reset_peak_rss()
    start = time.perf_counter()
    with Store(db) as store:
        jurisdictions, _ = load_jurisdictions(store)
    loaded = step("store_load", start)
    geometries = [j.boundary for j in jurisdictions]
    bare = BoundaryIndex(geometries, max_grid_cells=0)  # pieces, R-tree, prepared pieces
    bare_done = step("index_without_grid", loaded)
    del bare
    gc.collect()
    built_start = time.perf_counter()
    resolver = Resolver(jurisdictions)
    built = step("resolver_build", built_start)
    with tempfile.TemporaryDirectory(prefix="geoweb-scale-") as tmp:
        path = Path(tmp) / "scale.index"
        index_snapshot.save(path, jurisdictions, resolver.index)
        saved = step("snapshot_save", built)
        again = index_snapshot.load_for(path, jurisdictions)  # as a start reads it
        step("snapshot_load", saved)
        snapshot_bytes = path.stat().st_size
        del again
    # Registry changes of one entry: its name (all but the entries are taken over), and its
    # boundary (the index is patched: boundaries/patched.py).
    one = jurisdictions[len(jurisdictions) // 2]
    replace_start = time.perf_counter()
    resolver.replace([dataclasses.replace(one, name=one.name + " (renamed)")])
    renamed = step("replace_one_name", replace_start)
    patched = resolver.replace([one.with_boundary(affinity.translate(one.boundary, 1e-4, 0.0))])
    step("replace_one_boundary", renamed)
    grid = resolver.index.grid
    out.update(
        jurisdictions=len(jurisdictions),
        load_s=steps["store_load"]["s"],
        build_s=steps["resolver_build"]["s"],
        index_without_grid_s=bare_done - loaded,
        snapshot_bytes=snapshot_bytes,
        steps=steps,
        peak_rss_mib=memory.peak_rss_kib() / 1024,
        grid=None if grid is None else repr(grid),
    )
    tree = shapely.STRtree(geometries)
    present = [g for g in geometries if g is not None]
    for kind in ("uniform", "mix"):
        lats, longs = workloads.points(kind, present, points, seed)
        out[kind] = workloads.measure(resolver, tree, lats, longs, min(points, 10_000), 3)
    # How a server answers once a registry change patched its index (until the next build).
    out["mix_patched"] = workloads.measure(patched, tree, lats, longs, min(points, 10_000), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db", type=Path)
    parser.add_argument("--build", action="store_true", help="write a synthetic store first")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--runs", type=int, default=3, help="serve starts from the snapshot")
    args = parser.parse_args()
    if args.build:
        synthetic.build_store(args.db, args.n, args.seed)
    json.dump(measure(args.db, args.points, args.seed, args.runs), sys.stdout)
    print()


if __name__ == "__main__":
    main()
