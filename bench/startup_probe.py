"""Run in a fresh process: time imports, the store load and the Resolver build; peak RSS.

``python -m bench.startup_probe DB`` prints one JSON object.

``python -m bench.startup_probe DB --serve`` times instead the steps of a one-worker
``geoweb serve`` start up to its app, by calling what the server calls, with the index snapshot
beside the store (written first when missing, which is not timed): each step's wall and CPU
seconds; the server's own log line (on stderr) splits the load into the store read and the index.
What follows (the app's start, binding, the first ``/healthz``) is what ``bench.serve_start``
measures beyond these.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# Not ru_maxrss: this process would report the peak of the bench that started it.
from bench.memory import peak_rss_kib


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
    from resolver.index_snapshot import snapshot_path
    from resolver.registry.embedded import open_store
    from resolver.runtime import load_registry, preload

    step("imports")
    settings = Settings(db=db)
    if not snapshot_path(settings.db_path).exists():
        preload(settings)  # writes the snapshot
        clock[:] = [time.perf_counter(), time.process_time()]
    store = open_store(settings)
    step("open_store")  # the schema check and the embedded layer's
    # The server's own load: its log line splits this step into the store read and the index.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    preloaded = load_registry(settings, store)
    store.close()
    step("load_registry")
    resolver = preloaded.resolver
    gc.collect()
    gc.freeze()
    step("gc_collect_freeze")
    return {
        "jurisdictions": len(resolver),
        "serial": preloaded.serial,
        "steps": steps,
        "total_s": sum(s["wall_s"] for s in steps.values()),
        "peak_rss_mib": peak_rss_kib() / 1024,
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
    rss_imports = peak_rss_kib()
    with Store(db) as store:
        jurisdictions, source = load_jurisdictions(store)
    t2 = time.perf_counter()
    resolver = Resolver(jurisdictions)
    t3 = time.perf_counter()
    answer = resolver.resolve(37.7793, -122.4193)
    rss = peak_rss_kib()
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
