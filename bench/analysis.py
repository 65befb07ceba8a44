"""Reading of the profiles, written after looking at them (kept here so reruns keep it).

Figures in these notes are from the profiled runs of 2026-11 on the 2-core AMD EPYC VM; the
tables next to them in RESULTS.md are regenerated on every run.
"""

ANALYSIS: dict[str, str] = {
    "single": (
        "Per call, `Resolver.resolve` pays for `shapely.points(long, lat)` on two Python floats "
        "(a numpy ufunc round trip, about 15 µs here against about 6 µs for `shapely.Point`), "
        "the R-tree query, a `shapely.covers` call on the candidate pieces, `np.unique`, and the "
        "decision-cache key `tuple(int(p) for p in np.asarray(positions).ravel())`."
    ),
    "batch": (
        "The vectorized part (`covering_many`) is faster than the raw STRtree query, thanks to "
        "the subdivided, prepared pieces. The time goes into materializing one `Answer` per "
        "point in Python: `BatchAnswers.__iter__` calls `__getitem__` per point, which does "
        "three `len()` bounds checks (via `__len__`), two numpy scalar reads turned into "
        "`float`, a numpy slice of positions, and `Resolver.decide`, which rebuilds the key with "
        "a generator of `int()` calls and does an `OrderedDict.move_to_end` on every hit; then a "
        "frozen slotted dataclass `Answer` (about 2 µs to construct here, as `object.__setattr__` "
        "runs per field). A bench-side prototype of the same loop (`tolist()` of the arrays "
        "once, keys from list slices, a local per-batch dict of decisions) reached about 1.5x "
        "the current iteration rate on 100,000 points; a columnar result (one decision per "
        "distinct covering set plus an index array, `Answer` built only on demand) would make "
        "iteration cost independent of the covers test."
    ),
    "http_service": (
        "Within aiohttp's `_handle_request`, the handler (`geowebdns_service`) is under a third "
        "of the time; the access log (`web_log.log`, formatting a line with `strftime` and "
        "writing it through `logging` for every request; `geoweb serve` configures INFO "
        "logging, so it is on) and writing the response (`write_eof` -> socket `send`) are each "
        "as large. The trivial baseline pays the same log and send costs, so the gap between "
        "them is the handler: `Resolver.resolve` (mostly `shapely.points` + `covers`), "
        "`_point` (query parsing, regex-checked floats), `_base_url` (`request.url.origin()` "
        "builds a yarl URL per request for the `kml` link), `unquote`/type dispatch and "
        "`orjson.dumps`. The server-CPU-per-request gap is larger than the in-process resolve "
        "cost alone; a likely part is that GEOS and R-tree lookups run with cold caches "
        "between aiohttp's work, which a tight in-process loop does not see. Under 2 cores "
        "shared with the load generator (and other users of this machine), the rps figures "
        "are noisy; compare rounds in results.json."
    ),
    "startup": (
        "Store load is dominated by SQLAlchemy ORM row population and `_to_model` (WKB decode, "
        "JSON columns to models); the Resolver build by subdivision and GEOS preparation."
    ),
}
