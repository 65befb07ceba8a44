"""In-process benchmarks: single resolves and batches, each against raw shapely STRtree."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import shapely

from boundaries.index import BoundaryIndex
from resolver.core.decide import Resolver

from .common import latency_stats

_now = time.perf_counter_ns


class RtreeIndex:
    """The alternative R-tree: libspatialindex (the ``rtree`` package) over the bounding boxes of
    the original geometries, with prepared ``covers`` as the exact test."""

    def __init__(self, geometries: np.ndarray) -> None:
        from rtree import index

        self.geometries = geometries
        shapely.prepare(geometries)
        bounds = shapely.bounds(geometries)
        self.index = index.Index((i, tuple(b), None) for i, b in enumerate(bounds.tolist()))

    def covering(self, lat: float, long: float) -> list[int]:
        point = shapely.Point(long, lat)
        geometries = self.geometries
        return [
            i
            for i in self.index.intersection((long, lat, long, lat))
            if geometries[i].covers(point)
        ]

    def covering_many(self, lats: np.ndarray, longs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        corners = np.column_stack([longs, lats])
        ids, counts = self.index.intersection_v(corners, corners)
        ids = ids.astype(np.intp)
        which = np.repeat(np.arange(len(lats)), counts.astype(np.intp))
        hit = shapely.covers(self.geometries[ids], shapely.points(longs[which], lats[which]))
        return which[hit], ids[hit]


def _timed_block(
    fn: Callable[[float, float], Any], lats: list[float], longs: list[float], out: np.ndarray
) -> float:
    """Call ``fn(lat, long)`` once per point, each call timed into ``out``; wall seconds."""
    wall_start = _now()
    for i, (lat, long) in enumerate(zip(lats, longs, strict=True)):
        start = _now()
        fn(lat, long)
        out[i] = _now() - start
    return (_now() - wall_start) / 1e9


def _interleaved(
    cases: dict[str, Callable[[float, float], Any]],
    lats: list[float],
    longs: list[float],
    blocks: int = 20,
) -> dict[str, dict[str, float]]:
    """Time every case over every point, in blocks, rotating the case order per block, so that
    noise from other work on the machine falls on all cases alike."""
    n = len(lats)
    durations = {name: np.empty(n, dtype=np.int64) for name in cases}
    walls = dict.fromkeys(cases, 0.0)
    names = list(cases)
    bounds = np.linspace(0, n, blocks + 1).astype(int).tolist()
    gc.collect()
    for k in range(blocks):
        lo, hi = bounds[k], bounds[k + 1]
        for name in names[k % len(names) :] + names[: k % len(names)]:
            walls[name] += _timed_block(
                cases[name], lats[lo:hi], longs[lo:hi], durations[name][lo:hi]
            )
    return {name: latency_stats(durations[name], walls[name]) for name in names}


def without_grid(resolver: Resolver) -> Resolver:
    """The same resolver with an index that has no grid of interior cells: the exact path only,
    which is how every point was answered before the grid."""
    index = BoundaryIndex([j.boundary for j in resolver.jurisdictions], max_grid_cells=0)
    return Resolver(resolver.jurisdictions, fallback=resolver.fallback, _index=index)


def single(
    resolver: Resolver, tree: shapely.STRtree, lats: np.ndarray, longs: np.ndarray
) -> dict[str, Any]:
    """p50/p99 of one resolve per point (warm decision cache) and of the raw STRtree query."""
    lat_list, long_list = lats.tolist(), longs.tolist()
    resolve = resolver.resolve
    resolve_exact = without_grid(resolver).resolve
    query = tree.query
    point = shapely.Point
    rtree_covering = RtreeIndex(tree.geometries).covering

    def ours(lat: float, long: float) -> Any:
        return resolve(lat, long)

    def ours_pothole(lat: float, long: float) -> Any:
        return resolve(lat, long, "pothole")

    def ours_exact(lat: float, long: float) -> Any:
        return resolve_exact(lat, long)

    def raw(lat: float, long: float) -> Any:
        return query(point(long, lat), predicate="covered_by")

    def raw_points(lat: float, long: float) -> Any:
        # Same, with the point built as the resolver builds it (shapely.points, no Point class).
        return query(shapely.points(long, lat), predicate="covered_by")

    cases = {
        "ours": ours,
        "ours_pothole": ours_pothole,
        "ours_exact": ours_exact,
        "raw": raw,
        "raw_shapely_points": raw_points,
        "rtree": rtree_covering,
    }
    for fn in cases.values():
        for lat, long in zip(lat_list, long_list, strict=True):  # warm caches (decisions, GEOS)
            fn(lat, long)
    out: dict[str, Any] = dict(_interleaved(cases, lat_list, long_list))
    hits = sum(1 for lat, long in zip(lat_list, long_list, strict=True) if resolve(lat, long).found)
    out["points"] = len(lat_list)
    out["found_fraction"] = hits / len(lat_list)
    answered = resolver.index.grid_answers(lats, longs)
    out["grid_fraction"] = float(answered.mean())
    found = resolver.index.covering_many(lats, longs)[0]
    covered = np.zeros(len(lats), dtype=bool)
    covered[found] = True
    out["grid_fraction_covered"] = float(answered[covered].mean()) if covered.any() else None
    out["ratio_p50_ours_raw"] = out["ours"]["p50_us"] / out["raw"]["p50_us"]
    out["ratio_p50_pothole_raw"] = out["ours_pothole"]["p50_us"] / out["raw"]["p50_us"]
    return out


def _best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall seconds over ``repeats`` runs, and the last result."""
    times = []
    result = None
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def batch(
    resolver: Resolver,
    tree: shapely.STRtree,
    lats: np.ndarray,
    longs: np.ndarray,
    repeats: int,
) -> dict[str, Any]:
    """Points per second: resolve_many with every answer read, its covers part, raw STRtree."""
    n = len(lats)

    def full() -> int:
        answers = resolver.resolve_many(lats, longs)
        return sum(1 for a in answers if getattr(a, "found", False))

    def resolve_many_only() -> Any:
        return resolver.resolve_many(lats, longs)

    def covers() -> Any:
        return resolver.index.covering_many(lats, longs)

    exact_index = without_grid(resolver).index

    def covers_exact() -> Any:
        return exact_index.covering_many(lats, longs)

    def raw() -> Any:
        return tree.query(shapely.points(longs, lats), predicate="covered_by")

    rtree_index = RtreeIndex(tree.geometries)

    def rtree() -> Any:
        return rtree_index.covering_many(lats, longs)

    full()  # warm the decision cache, as a long-running server would have it
    cases = {
        "resolve_many_iterated": full,
        "resolve_many_lazy": resolve_many_only,
        "covering_many": covers,
        "covering_many_exact": covers_exact,
        "raw_strtree": raw,
        "rtree_libspatialindex": rtree,
    }
    out: dict[str, Any] = {"points": n, "repeats": repeats}
    results: dict[str, Any] = {}
    for name, fn in cases.items():
        seconds, results[name] = _best_of(fn, repeats)
        out[name] = {"seconds": seconds, "points_per_s": n / seconds}
    # Same answers? The raw query returns (point, county) pairs; ours (point, position) pairs.
    raw_pairs = results["raw_strtree"]
    ours_points, _ = results["covering_many"]
    out["raw_pairs"] = int(raw_pairs.shape[1])
    out["ours_pairs"] = len(ours_points)
    out["found"] = int(results["resolve_many_iterated"])
    raw_rate = out["raw_strtree"]["points_per_s"]
    out["ratio_iterated_raw"] = out["resolve_many_iterated"]["points_per_s"] / raw_rate
    out["ratio_lazy_raw"] = out["resolve_many_lazy"]["points_per_s"] / raw_rate
    out["ratio_covers_raw"] = out["covering_many"]["points_per_s"] / raw_rate
    out["ratio_rtree_raw"] = out["rtree_libspatialindex"]["points_per_s"] / raw_rate
    return out
