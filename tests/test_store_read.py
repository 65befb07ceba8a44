"""The store's bulk read (every entry, as a server loads them) on both backends: it gives the same
entries as the ORM's read of the change log, equal JSON values shared, and leaves the garbage
collector as it found it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from shapely.geometry import Polygon, box
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from common.models import Endpoint, Jurisdiction, Provenance, Service
from resolver.store import Store


def _entries() -> list[Jurisdiction]:
    county = (Endpoint("https://county.example/open311/v2/"),)
    provenance = (Provenance("boundary", "import", "counties.geojson", retrieved="2026-01-02"),)
    return [
        Jurisdiction(
            id=f"c{i}", name=f"County {i}", endpoints=county, provenance=provenance
        ).with_boundary(box(i, 0, i + 1, 1))
        for i in range(3)
    ] + [
        Jurisdiction(
            id="city",
            name="Ciudad Ñandú",
            domain="city.example",
            jurisdiction_id="city-jid",
            discovery_url="https://city.example/discovery.json",
            endpoints=(
                Endpoint("https://old.city.example/v2/", deprecated=True, note="retired"),
                Endpoint("https://city.example/v2/", type="test", formats=("text/xml",)),
            ),
            services=(Service("001", "Pothole", "Holes", ("road", "street"), "Streets"),),
            provenance=(
                Provenance(
                    "endpoint", "dns", "_open311.city.example", ttl=300, stale=False, verified=True
                ),
            ),
            notes=("repaired", "second note"),
            expires="2999-01-01T00:00:00Z",
            attested=True,
        ).with_boundary(Polygon([(0, 0), (4, 0), (4, 4), (0, 4)], [[(1, 1), (2, 1), (2, 2)]])),
        Jurisdiction(id="nowhere", name="No boundary", services=()),
    ]


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store(store_url) as store:
        store.save(_entries(), source="test")
        yield store


def test_the_bulk_read_gives_what_the_orm_read_gives(store: Store) -> None:
    # Two reads of the same rows: the bulk one (the driver's rows, unpacked by position, JSON
    # decoded once per text) and the ORM's (the change log); every field equal, of the same type.
    bulk = store.jurisdictions()
    orm = sorted(
        (c.jurisdiction for c in store.changes(0).changes if c.jurisdiction is not None),
        key=lambda j: j.id,
    )
    assert [j.id for j in bulk] == sorted(j.id for j in _entries())
    assert bulk == orm
    for a, b in zip(bulk, orm, strict=True):
        for name in Jurisdiction.__slots__:
            assert type(getattr(a, name)) is type(getattr(b, name)), name
    city = next(j for j in bulk if j.id == "city")
    assert city.attested is True and city.origin == store.registry_id and city.version == 1
    assert city.boundary is not None and len(city.boundary.interiors) == 1


def test_equal_texts_share_a_value_equal_to_a_fresh_decode(store: Store) -> None:
    bulk = {j.id: j for j in store.jurisdictions()}
    counties = [bulk[f"c{i}"] for i in range(3)]
    assert all(c.endpoints is counties[0].endpoints for c in counties)
    assert all(c.provenance is counties[0].provenance for c in counties)
    assert counties[0].endpoints == _entries()[0].endpoints
    assert bulk["city"].endpoints is not counties[0].endpoints
    assert bulk["nowhere"].services == () and bulk["c0"].services is None


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_left_as_it_was(store: Store, enabled: bool) -> None:
    (gc.enable if enabled else gc.disable)()
    try:
        assert len(store.jurisdictions()) == 5
        assert gc.isenabled() is enabled
        with store.engine.begin() as connection:
            connection.execute(text("drop table jurisdictions"))
        with pytest.raises(DBAPIError):
            store.jurisdictions()
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
