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
        "Within aiohttp's `_handle_request`, the handler is under a third of the time; the access "
        "log (formatted with `strftime` for every request, since `geoweb serve` configures INFO "
        "logging) and writing the response are each about as large. The trivial baseline pays the "
        "same log and send costs, so the gap is the handler: `Resolver.resolve`, query parsing "
        "(regex-checked floats), type dispatch and `orjson.dumps`. The server-CPU gap per request "
        "is larger than the in-process resolve cost alone; GEOS and R-tree lookups likely run "
        "with cold CPU caches between aiohttp's own work. On 2 cores shared with the load "
        "generator the rps figures are noisy; compare rounds in results.json."
    ),
    "startup": (
        "Store load is dominated by SQLAlchemy ORM row population and `_to_model` (WKB decode, "
        "JSON columns to models); the Resolver build by subdivision and GEOS preparation."
    ),
}
