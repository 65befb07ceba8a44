"""Points drawn like real reports, beside the uniform box, and what the index does on each.

A uniform box over the US puts four points in ten outside every county, which the grid answers
by lookup; reports come from where people are, and many lie near a border. So every in-process
target is also judged on:

- ``near_border``: a random vertex of a random county's boundary, moved by a normal offset of
  ``BORDER_SIGMA`` degrees (about 200 m) in each axis;
- ``clustered``: around city centres, stood in for by the representative points of counties
  drawn with a weight of one over their area (small counties are the dense ones), with a normal
  offset of ``CITY_SIGMA`` degrees (about 5 km);
- ``mix`` (the real-report mix): a third uniform, a third near a border, a third clustered,
  shuffled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from resolver.core.decide import Resolver

from .common import random_points
from .inproc import _interleaved

BORDER_SIGMA = 0.002
CITY_SIGMA = 0.05
KINDS = ("uniform", "near_border", "clustered", "mix")


def _near_border(geometries: Sequence[BaseGeometry], n: int, rng: np.random.Generator) -> Any:
    coords = shapely.get_coordinates(shapely.boundary(np.asarray(geometries, dtype=object)))
    picked = coords[rng.integers(0, len(coords), n)]
    picked += rng.normal(0.0, BORDER_SIGMA, picked.shape)
    return picked[:, 1], picked[:, 0]


def _clustered(geometries: Sequence[BaseGeometry], n: int, rng: np.random.Generator) -> Any:
    array = np.asarray(geometries, dtype=object)
    centres = shapely.get_coordinates(shapely.point_on_surface(array))
    weight = 1.0 / np.maximum(shapely.area(array), 1e-6)
    picked = centres[rng.choice(len(centres), n, p=weight / weight.sum())]
    picked += rng.normal(0.0, CITY_SIGMA, picked.shape)
    return picked[:, 1], picked[:, 0]


def points(
    kind: str, geometries: Sequence[BaseGeometry], n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` seeded points (lats, longs) of one workload."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return random_points(n, seed)
    if kind == "near_border":
        return _near_border(geometries, n, rng)
    if kind == "clustered":
        return _clustered(geometries, n, rng)
    if kind == "mix":
        third = n // 3
        parts = [
            random_points(n - 2 * third, seed),
            _near_border(geometries, third, rng),
            _clustered(geometries, third, rng),
        ]
        lats = np.concatenate([p[0] for p in parts])
        longs = np.concatenate([p[1] for p in parts])
        order = rng.permutation(n)
        return lats[order], longs[order]
    raise ValueError(f"unknown workload {kind!r}")


def _best(fn: Any, repeats: int) -> float:
    import time

    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(
    resolver: Resolver,
    tree: shapely.STRtree,
    lats: np.ndarray,
    longs: np.ndarray,
    single_points: int,
    repeats: int,
) -> dict[str, Any]:
    """On one workload: the share the grid answers without the exact path (by lookup alone, or
    by lookup and side-of-line tests: both are given); single resolve p50 against the raw
    STRtree's (interleaved blocks, warm); batch points/s against the raw vectorized query."""
    index = resolver.index
    paths = index.grid_paths(lats, longs)
    answered = paths > 0
    found = index.covering_many(lats, longs)[0]
    covered = np.zeros(len(lats), dtype=bool)
    covered[found] = True
    lat_list, long_list = lats[:single_points].tolist(), longs[:single_points].tolist()
    resolve, query, point = resolver.resolve, tree.query, shapely.Point

    def ours(lat: float, long: float) -> Any:
        return resolve(lat, long)

    def raw(lat: float, long: float) -> Any:
        return query(point(long, lat), predicate="covered_by")

    cases = {"ours": ours, "raw": raw}
    for fn in cases.values():
        for lat, long in zip(lat_list, long_list, strict=True):
            fn(lat, long)
    single = _interleaved(cases, lat_list, long_list)

    def batch() -> None:
        for _answer in resolver.resolve_many(lats, longs):
            pass

    def raw_batch() -> None:
        tree.query(shapely.points(longs, lats), predicate="covered_by")

    batch()  # warm the decision cache, as the uniform batch is measured
    ours_s, raw_s = _best(batch, repeats), _best(raw_batch, repeats)
    return {
        "points": len(lats),
        "covered_fraction": float(covered.mean()),
        "grid_fraction": float(answered.mean()),
        "lookup_fraction": float((paths == 1).mean()),
        "side_test_fraction": float((paths == 2).mean()),
        "grid_fraction_covered": float(answered[covered].mean()) if covered.any() else None,
        "single": single,
        "single_p50_ratio": single["ours"]["p50_us"] / single["raw"]["p50_us"],
        "batch_points_per_s": len(lats) / ours_s,
        "raw_points_per_s": len(lats) / raw_s,
        "batch_ratio": raw_s / ours_s,
    }


def run(
    resolver: Resolver,
    tree: shapely.STRtree,
    n: int,
    single_points: int,
    repeats: int,
    seed: int,
) -> dict[str, Any]:
    geometries = [j.boundary for j in resolver.jurisdictions if j.boundary is not None]
    out = {}
    for k, kind in enumerate(KINDS):
        lats, longs = points(kind, geometries, n, seed + 100 + k)
        out[kind] = measure(resolver, tree, lats, longs, single_points, repeats)
    return out
