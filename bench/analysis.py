"""Reading of the profiles, written after looking at them (kept here so reruns keep it).

These notes are dated: they describe the code as of 2026-11-23 (the grid of interior cells in
boundaries/index.py) and runs on the 2-core AMD EPYC VM, which other engineers' test runs share.
The figures in the tables next to them in RESULTS.md are regenerated on every run; when the code
changes, read the profiles again and rewrite these notes.
"""

ANALYSIS: dict[str, str] = {
    "single": (
        "Per call, `Resolver.resolve` checks the point, finds the covering set, and takes the "
        "decision from the cache with one dict lookup keyed by (concern, covering positions). "
        "The covering set comes from the grid of interior cells for most points: two array "
        "lookups (a block entry, then a cell entry) and a shared read-only array, about 1 µs. "
        "Points in cells that a border crosses take the exact path as before (R-tree query with "
        "the `intersects` predicate on subdivided, prepared pieces: 13-20 µs), which is why p99 "
        "stays near the raw STRtree's while p50 and the mean drop."
    ),
    "batch": (
        "`covering_many` looks all points up in the grid at once (numpy) and sends only the "
        "points in crossed cells to the vectorized exact path. What remains per point is one "
        "Python `Answer` when answers are read (a list slice, a dict lookup for the shared "
        "decision, a frozen slotted dataclass)."
    ),
    "http_service": (
        "Ablation (wrk at concurrency 8, servers warmed up first, 6 rounds, server CPU per "
        "request, same server settings): a bare aiohttp app, our app with a constant handler "
        "(router and error middleware), and adding the query parsing cost the same within the "
        "noise; adding `Answerer.resolve` costs +40-50 µs; the rest of `/service` +10-20 µs. "
        "In a tight loop a resolve costs 1.4 µs (grid) to 40 µs (exact path) with 6 µs on "
        "average over the HTTP points; between requests aiohttp's own work and the machine's "
        "other tenants evict what it touches, and replaying the points with an 8 MB sweep "
        "between calls gives 15 µs for points the grid answers and 85 µs for the 10% of "
        "covered points in cells a border crosses, which take the exact path. Fixed in this "
        "round: coordinates parsed by `float` with an ASCII check instead of a regular "
        "expression and the query read once (about -15 µs per request), and `/service` bodies "
        "kept per (types, base URL, the decision's jurisdiction, endpoint and fallback), so a "
        "request builds no result dicts and serializes nothing once its county has been asked "
        "(about -10 µs). What is left is the resolve itself, cache misses rather than "
        "instructions; a finer grid would send fewer points to the exact path but costs "
        "start-up time, which has less margin. The ratio now moves between 0.63x and 0.84x "
        "from one run to the next on this shared VM (full runs today: 0.69x, 0.68x, 0.63x and "
        "0.68x without the uncounted warm-up cell, 0.76x and 0.68x with it), so the target "
        "is met on some runs and missed on others (the trivial handler's own cost per "
        "request moved between 143 and 237 µs today), and it falls when the machine is busy, "
        "because our work is the part that depends on caches. PostGIS at one connection: the "
        "trivial aiohttp handler itself stays below PostGIS's prepared per-point queries at "
        "concurrency 1 (the table in section 5 shows it), so no aiohttp handler that does any "
        "work can be ahead of it on this machine; the only way past it would be an HTTP stack "
        "other than the one this project is built on."
    ),
    "startup": (
        "Store load is dominated by SQLAlchemy ORM row population and `_to_model` (WKB decode, "
        "JSON columns to models); the Resolver build by subdivision and GEOS preparation, and "
        "the grid: marking the cells along every ring (one bounding box per ring piece no "
        "longer than a cell), runs of unmarked cells joined by a numpy union-find, one exact "
        "query per region. The cell size aims at about 10% of the covered area in crossed "
        "cells within a budget of 16 M cells; the 100,000-jurisdiction registry hits the budget."
    ),
    "dns": (
        "A cold lookup is a chain of loopback round trips: the `_cells` TXT (depth), the "
        "cell's PTR, the candidates' `_open311` TXT in parallel, their boundaries over HTTP in "
        "parallel on new connections, then GeoJSON parsing, the generation check (a SHA-256 of "
        "the normalized WKB) and a small Resolver per candidate set (no grid below 64 pieces: "
        "it would cost more to build than it saves). Warm lookups parse each candidate's "
        "`_open311` record once per (domain, records) and remember canonical DNS names, which "
        "took them from about 0.58 to 0.35 ms; what is left is asyncio (a task per candidate "
        "for the parallel cold case), copying cached DNS answers and the provenance of each "
        "answer."
    ),
}
