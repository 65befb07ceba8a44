"""Reading of the profiles, written after looking at them (kept here so reruns keep it).

These notes are dated: they describe the code as of 2026-11-23 and the profiled runs on the 2-core
AMD EPYC VM. The figures in the tables next to them in RESULTS.md are regenerated on every run;
when the code changes, read the profiles again and rewrite these notes.
"""

ANALYSIS: dict[str, str] = {
    "single": (
        "Per call, `Resolver.resolve` checks the point, runs one R-tree query with the "
        "`intersects` predicate on the subdivided, prepared pieces (for a point the same as "
        "covered-by, border included), and finds the decision in the cache with one dict lookup "
        "keyed by (concern, covering positions). The subdivided pieces make the exact test cheaper "
        "than raw STRtree's test on whole counties, which pays for the rest."
    ),
    "batch": (
        "The vectorized part (`covering_many`) is faster than the raw STRtree query thanks to the "
        "subdivided, prepared pieces. What remains is one Python `Answer` per point when answers "
        "are read: a list slice for the covering positions, a dict lookup for the shared "
        "decision, and a frozen slotted dataclass (about 2 µs, as `object.__setattr__` runs per "
        "field). Reaching 0.8x of raw needs a columnar result: one decision per distinct "
        "covering set plus an index array, with `Answer` objects built only on demand, used by "
        "`resolve-batch` and `POST /v1/resolve` too."
    ),
    "http_service": (
        "An ablation on this machine (wrk, concurrency 8, server CPU from /proc; same server "
        "settings): the trivial handler costs about 200-250 µs of server CPU per request; adding "
        "our query parsing (`_point`, the repeated `type`) costs nothing measurable; adding "
        "`Resolver.resolve` costs another 50-150 µs, against about 20 µs for the same call in a "
        "tight in-process loop. The difference is cache misses: between two requests aiohttp's "
        "own work evicts the R-tree nodes, the prepared GEOS locators and shapely's Python "
        "wrappers, which a tight loop keeps hot. Fixes tried: `gc.freeze()` after start-up (kept; "
        "within noise), uvloop (kept; about +25% requests/s for every handler, so it does not "
        "change the ratio), `shapely.Point` instead of `shapely.points` (slower here; dropped). "
        "The same ceiling explains the PostGIS comparison at one connection: the trivial aiohttp "
        "handler itself answers 4-5k requests/s at concurrency 1 here, below PostGIS's ~6k "
        "prepared queries/s, so no aiohttp handler can be ahead of it on this machine. The fix "
        "that remains is to take GEOS off the request path for most points: a precomputed grid "
        "of interior cells (cells that lie strictly inside the same jurisdictions, answered by one "
        "array lookup; only cells crossed by a boundary go to the R-tree). It would also lift "
        "the in-process single resolve past 10x PostGIS."
    ),
    "startup": (
        "Store load is dominated by SQLAlchemy ORM row population and `_to_model` (WKB decode, "
        "JSON columns to models); the Resolver build by subdivision and GEOS preparation."
    ),
}
