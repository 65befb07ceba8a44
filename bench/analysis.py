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
        "Ablation on this machine (wrk, 2 s cells, 4 rounds, minimum server CPU per request, "
        "same server settings, gc.freeze after start-up), concurrency 8 / 1: the trivial handler "
        "143 / 172 µs; adding the query parsing of `_point` (yarl's query, `parse_coordinate` "
        "with its regular expression) +27 / +27 µs; the index lookup +15 / +20-30 µs; the rest "
        "of `Resolver.resolve` and the `Answerer` +5 / +5 µs; building the result and its JSON "
        "+7 / +6 µs: about 0.73x of the trivial handler's capacity on a quiet machine. Before "
        "the grid the resolve step alone cost 50-150 µs. In a tight loop the same steps cost "
        "4 µs (parsing) and 3 µs (resolve): between requests aiohttp's own work evicts the "
        "code and data they touch, so each costs what its cold cache misses cost (measured "
        "in-process with a 64 MB sweep between calls: grid lookup 1 -> 17 µs, exact path "
        "15 -> 200 µs). Returning Python tuples instead of numpy arrays from the lookup made no "
        "measurable difference. In `/service` itself: one answer per concern (the two default "
        "types share one resolve), the base URL only when a KML link is written. What is left "
        "is outside the handler: parsing lat/long without a regular expression and validating "
        "the point once rather than twice (core.py), and aiohttp's access log, about a fifth of "
        "every request in both servers. The rps ratio moves by +-0.15 between rounds when "
        "other work runs on the machine; the best of four rounds is reported. PostGIS at one "
        "connection: the trivial aiohttp handler itself answers 4-6k requests/s at concurrency "
        "1 here, below PostGIS's 6-7k prepared queries/s, so no aiohttp handler that does any "
        "work can be ahead of it on this machine; /service reaches about 0.6x of it (0.4x "
        "before the grid)."
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
        "it would cost more to build than it saves). Warm lookups (every answer cached) take "
        "about 0.7 ms because each one re-parses and re-validates every candidate's `_open311` "
        "record (URL normalization: about 40% of the time) and builds dnspython names for the "
        "cache keys (about 20%); caching the parsed candidate per (domain, records) in "
        "resolver/dns_discovery.py would bring them near the core's few microseconds."
    ),
}
