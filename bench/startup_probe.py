"""Run in a fresh process: time imports, the store load and the Resolver build; peak RSS.

``python -m bench.startup_probe DB`` prints one JSON object.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def main() -> None:
    db = sys.argv[1]
    t0 = time.perf_counter()
    from resolver.core.decide import Resolver
    from resolver.registry.documents import load_jurisdictions
    from resolver.store import Store

    t1 = time.perf_counter()
    rss_imports = _rss_kib()
    with Store(db) as store:
        jurisdictions, source = load_jurisdictions(store)
    t2 = time.perf_counter()
    resolver = Resolver(jurisdictions)
    t3 = time.perf_counter()
    answer = resolver.resolve(37.7793, -122.4193)
    rss = _rss_kib()
    # The index alone, without and with its grid of interior cells (after the peak RSS above).
    from dataclasses import asdict

    from boundaries.index import BoundaryIndex

    boundaries = [j.boundary for j in resolver.jurisdictions]
    t4 = time.perf_counter()
    BoundaryIndex(boundaries, max_grid_cells=0)
    t5 = time.perf_counter()
    BoundaryIndex(boundaries)
    t6 = time.perf_counter()
    grid = resolver.index.grid
    json.dump(
        {
            "source": source,
            "jurisdictions": len(resolver),
            "pieces": resolver.index.pieces,
            "import_s": t1 - t0,
            "load_s": t2 - t1,
            "build_s": t3 - t2,
            "load_build_s": t3 - t1,
            "peak_rss_after_imports_mib": rss_imports / 1024,
            "peak_rss_mib": rss / 1024,
            "index_without_grid_s": t5 - t4,
            "index_with_grid_s": t6 - t5,
            "grid": asdict(grid) if grid is not None else None,
            "check": answer.jurisdiction.id if answer.jurisdiction else None,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
