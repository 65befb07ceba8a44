"""The store on real databases, SQLite files and a PostgreSQL server (``store_url`` runs a test on
both): schema, versions, and imports that fail without a trace."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from shapely.geometry import box
from sqlalchemy import create_engine, inspect, text

from resolver.errors import InvalidInput, StoreError
from resolver.models import Endpoint, Jurisdiction, Provenance, Service
from resolver.store import SCHEMA_VERSION, Store, database_url


def _j(id_: str, **kw: object) -> Jurisdiction:
    return Jurisdiction(id=id_, name=id_.upper(), **kw).with_boundary(box(0, 0, 1, 1))  # type: ignore[arg-type]


def test_schema_is_created_and_versioned(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "geoweb.sqlite"
    with Store(db) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.count() == 0
    tables = {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master")}
    assert {"jurisdictions", "imports", "geoweb_meta"} <= tables


def test_schema_on_both_backends(store_url: str) -> None:
    with Store(store_url) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.count() == 0 and store.serial == 0
        tables = set(inspect(store.engine).get_table_names())
    assert {"jurisdictions", "imports", "geoweb_meta", "tombstones", "http_cache"} <= tables


def test_a_newer_schema_is_refused_not_damaged(store_url: str) -> None:
    with Store(store_url) as store:
        store.save([_j("a")], source="one")
        with store.engine.begin() as conn:
            conn.execute(
                text("update geoweb_meta set value = :v where key = 'schema_version'"),
                {"v": str(SCHEMA_VERSION + 1)},
            )
    with pytest.raises(StoreError, match="newer than this geoweb understands"):
        Store(store_url)
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("select count(*) from jurisdictions")) == 1
    finally:
        engine.dispose()


def test_round_trip_keeps_every_field(store_url: str) -> None:
    original = _j(
        "sf",
        domain="sfgov.org",
        jurisdiction_id="sfgov.org",
        discovery_url="https://example.org/discovery.json",
        endpoints=(Endpoint("https://example.org/open311/v2/", type="test"),),
        services=(Service("001", "Pothole", keywords=("road",), group="Streets"),),
        provenance=(Provenance("boundary", "import", "file.geojson#geoid=06075"),),
        notes=("repaired",),
    )
    with Store(store_url) as store:
        store.save([original], source="test")
        (loaded,) = store.jurisdictions()
        registry_id = store.registry_id
    entry = loaded.to_dict().pop("entry")
    assert {k: v for k, v in loaded.to_dict().items() if k != "entry"} == original.to_dict()
    assert entry["origin"] == registry_id and entry["version"] == 1 and not entry["attested"]
    assert loaded.boundary is not None and loaded.boundary.equals(original.boundary)


def test_existing_ids_need_replace_and_nothing_changes_without_it(store_url: str) -> None:
    with Store(store_url) as store:
        store.save([_j("a", notes=("first",))], source="one")
        with pytest.raises(InvalidInput, match="--replace"):
            store.save([_j("b"), _j("a", notes=("second",))], source="two")
        assert [j.id for j in store.jurisdictions()] == ["a"]
        assert store.jurisdictions()[0].notes == ("first",)
        store.save([_j("a", notes=("second",))], replace=True, source="three")
        assert store.jurisdictions()[0].notes == ("second",)
        assert [i["source"] for i in store.imports()] == ["three", "one"]


def test_a_write_that_fails_half_way_rolls_back(store_url: str) -> None:
    with Store(store_url) as store:
        store.save([_j("kept")], source="one")
        # the second entry cannot be written (bytes are not JSON): the first must not stay either
        broken = _j("broken", notes=(b"\xff",))  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="notes of 'broken' cannot be stored as JSON"):
            store.save([_j("new"), broken], source="two")
        assert [j.id for j in store.jurisdictions()] == ["kept"]
        assert len(store.imports()) == 1


def test_duplicate_ids_in_one_import_are_refused(store_url: str) -> None:
    with Store(store_url) as store, pytest.raises(InvalidInput, match="twice"):
        store.save([_j("a"), _j("a")], source="x")


def test_database_url() -> None:
    assert database_url("postgresql://u@localhost/db") == "postgresql://u@localhost/db"
    assert database_url("rel/path.sqlite").startswith("sqlite:////")
