"""The store's bulk read (what a server's start waits for) gives exactly what the ORM gives, on
SQLite and PostgreSQL: boundaries decoded in one vectorized call, JSON columns by orjson."""

from __future__ import annotations

from shapely.geometry import box
from sqlalchemy import select
from sqlalchemy.orm import Session

from common.models import Endpoint, Jurisdiction, Provenance, Service
from resolver.store import Store
from resolver.store.entries import JurisdictionRow, _to_model


def test_bulk_read_matches_the_orm_row_by_row(store_url: str) -> None:
    entries = []
    for k in range(60):
        j = Jurisdiction(
            id=f"j{k:03d}",
            name=f"Place {k} \u00e9\u4e2d",
            endpoints=(Endpoint(f"https://p{k}.example/open311/v2/"),),
            services=None if k % 3 else (Service("001", "Pothole", keywords=("road",)),),
            provenance=(Provenance("boundary", "import", f"f.geojson#id={k}"),),
            notes=("repaired",) if k % 2 else (),
        )
        # every fifth entry has no boundary: the vectorized decode keeps the gaps in place
        entries.append(j if k % 5 == 0 else j.with_boundary(box(k, 0, k + 1, 1)))
    with Store(store_url) as store:
        store.save(entries, source="test")
        bulk = store.jurisdictions()
        registry_id, serial, snapshot = store.snapshot()
        with Session(store.engine) as session:
            rows = session.scalars(select(JurisdictionRow).order_by(JurisdictionRow.id))
            orm = [_to_model(row) for row in rows]
    assert [j.id for j in bulk] == sorted(j.id for j in entries)
    assert bulk == orm == snapshot
    assert [j.boundary is None for j in bulk] == [k % 5 == 0 for k in range(60)]
    assert bulk[1].boundary is not None and bulk[1].boundary.equals(box(1, 0, 2, 1))
    assert registry_id and serial >= 1
