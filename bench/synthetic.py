"""A reproducible synthetic registry: Voronoi cells over the contiguous US from seeded points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely

from common.models import Endpoint, Jurisdiction
from resolver.store import Store

from .common import LAT_RANGE, LONG_RANGE


def voronoi_jurisdictions(n: int, seed: int) -> list[Jurisdiction]:
    """``n`` jurisdictions tiling the US bounding box, each the Voronoi cell of a random site."""
    rng = np.random.default_rng(seed)
    (min_lat, max_lat), (min_long, max_long) = LAT_RANGE, LONG_RANGE
    sites = np.column_stack([rng.uniform(min_long, max_long, n), rng.uniform(min_lat, max_lat, n)])
    frame = shapely.box(min_long, min_lat, max_long, max_lat)
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(sites), extend_to=frame))
    cells = shapely.clip_by_rect(cells, min_long, min_lat, max_long, max_lat)
    endpoint = (Endpoint("https://311.example.org/open311/v2/"),)
    return [
        Jurisdiction(f"syn-{i:06d}", f"Synthetic {i}", endpoints=endpoint).with_boundary(cell)
        for i, cell in enumerate(cells.tolist())
    ]


def build_store(db: Path, n: int, seed: int) -> int:
    """Write the synthetic registry into a fresh store; the number of jurisdictions."""
    jurisdictions = voronoi_jurisdictions(n, seed)
    with Store(db) as store:
        store.save(jurisdictions, source=f"synthetic voronoi n={n} seed={seed}")
    return len(jurisdictions)
