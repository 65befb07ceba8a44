"""Run in a fresh process: time imports, the store load and the Resolver build; peak RSS.

``python -m bench.startup_probe DB`` prints one JSON object.

``python -m bench.startup_probe DB --serve`` times instead the steps of a one-worker
``geoweb serve`` start up to its app, in the order it takes them, with the index snapshot beside
the store (written first when missing, which is not timed): each step's wall and CPU seconds.
What follows (the app's start, binding, the first ``/healthz``) is what ``bench.serve_start``
measures beyond these.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def serve_steps(db: str) -> dict[str, Any]:
    """Seconds (wall, CPU) of each step of a server's start, as ``resolver.runtime`` and the app
    take them."""
    steps: dict[str, dict[str, float]] = {}
    clock = [time.perf_counter(), time.process_time()]

    def step(name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        steps[name] = {"wall_s": wall - clock[0], "cpu_s": cpu - clock[1]}
        clock[:] = [time.perf_counter(), time.process_time()]

    import gc

    # What `geoweb serve` imports.
    import resolver.cli.main
    from resolver.config import Settings
    from resolver.core.decide import Resolver, choose_fallback
    from resolver.index_snapshot import build_resolver, generation, load, snapshot_path
    from resolver.registry.documents import load_jurisdictions
    from resolver.registry.embedded import open_store

    step("imports")
    settings = Settings(db=db)
    path = snapshot_path(settings.db_path)
    if not path.exists():
        with open_store(settings) as store:
            build_resolver(load_jurisdictions(store)[0], None, path)
        clock[:] = [time.perf_counter(), time.process_time()]
    store = open_store(settings)
    step("open_store")  # the schema check and the embedded layer's
    serial = store.serial
    jurisdictions, _source = load_jurisdictions(store)
    store.close()
    step("load_jurisdictions")
    fallback = choose_fallback(
        settings.fallback_url,
        settings.fallback_name,
        adhoc=settings.adhoc,
        public_url=settings.public_url,
    )
    built_from = generation(jurisdictions)
    step("snapshot_key")
    index = load(path, built_from, [j.boundary for j in jurisdictions])
    if index is None:
        raise RuntimeError(f"the snapshot {path} was not used")
    step("snapshot_load")
    resolver = Resolver(jurisdictions, fallback=fallback, _index=index)
    step("resolver")
    gc.collect()
    gc.freeze()
    step("gc_collect_freeze")
    return {
        "jurisdictions": len(resolver),
        "serial": serial,
        "steps": steps,
        "total_s": sum(s["wall_s"] for s in steps.values()),
        "peak_rss_mib": _rss_kib() / 1024,
        "check": getattr(resolver.resolve(37.7793, -122.4193).jurisdiction, "id", None),
    }


def main() -> None:
    db = sys.argv[1]
    if sys.argv[2:] == ["--serve"]:
        json.dump(serve_steps(db), sys.stdout)
        print()
        return
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
