"""The store on real databases, SQLite files and a PostgreSQL server (``store_url`` runs a test on
both): schema, versions, and imports that fail without a trace."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
import shapely
from shapely.geometry import box
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    inspect,
    text,
)

from common.errors import InvalidInput, StoreError
from common.models import Endpoint, Jurisdiction, Provenance, Service, boundary_generation
from discovery.fetch import Fetched
from resolver.store import Store
from resolver.store.caches import StoreHttpCache, record_refresh, refresh_status
from resolver.store.database import SCHEMA_VERSION, database_url


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


def test_equal_json_columns_are_read_once_and_shared(store_url: str) -> None:
    # Entries of one import share their endpoints and provenance word for word: the read decodes
    # each text once and hands every entry the same (immutable) value; a different text, and
    # its own value, stays apart.
    shared = {
        "endpoints": (Endpoint("https://county.example/open311/v2/"),),
        "provenance": (Provenance("boundary", "import", "counties.geojson"),),
        "notes": ("repaired",),
    }
    entries = [_j(f"c{i}", **shared) for i in range(3)]
    other = _j("x", endpoints=(Endpoint("https://x.example/v2/", type="test"),))
    with Store(store_url) as store:
        store.save([*entries, other], source="test")
        loaded = {j.id: j for j in store.jurisdictions()}
    first, *rest = (loaded[f"c{i}"] for i in range(3))
    for j in rest:
        assert j.endpoints is first.endpoints and j.provenance is first.provenance
        assert j.notes is first.notes
    assert first.endpoints == shared["endpoints"] and first.provenance == shared["provenance"]
    assert loaded["x"].endpoints == other.endpoints and loaded["x"].services is None


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


@pytest.mark.parametrize(
    ("given", "url"),
    [
        # a plain PostgreSQL URL means psycopg 3 (the driver the postgresql extra installs)
        ("postgresql://u@localhost/db", "postgresql+psycopg://u@localhost/db"),
        # libpq's short scheme, as hosting providers hand it out
        ("postgres://u:pw@db.example:5433/geo", "postgresql+psycopg://u:pw@db.example:5433/geo"),
        # an explicit driver is kept
        ("postgresql+psycopg2://u@localhost/db", "postgresql+psycopg2://u@localhost/db"),
        ("sqlite:////var/lib/geoweb.sqlite", "sqlite:////var/lib/geoweb.sqlite"),
    ],
)
def test_database_url(given: str, url: str) -> None:
    assert database_url(given) == url


def test_a_path_is_an_absolute_sqlite_url() -> None:
    assert database_url("rel/path.sqlite") == f"sqlite:///{Path('rel/path.sqlite').resolve()}"


def test_a_store_is_reopened_as_it_was(store_url: str) -> None:
    with Store(store_url) as store:
        store.save([_j("a"), _j("b"), _j("c")], source="one")
        assert store.delete(["b"], source="two") == ["b"]
        before = (store.registry_id, store.serial, [j.to_dict() for j in store.jurisdictions()])
    with Store(store_url) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert (store.registry_id, store.serial) == before[:2] == (before[0], 4)
        assert [j.to_dict() for j in store.jurisdictions()] == before[2]
        store.save([_j("d")], source="three")
        page = store.changes(0)
    # entries a, c, d and the tombstone of b, each at its own serial, none missing
    assert [(c.serial, c.id, c.jurisdiction is None) for c in page.changes] == [
        (1, "a", False),
        (3, "c", False),
        (4, "b", True),
        (5, "d", False),
    ]
    assert page.serial == 5 and not page.more


def test_a_replaced_entry_takes_the_next_version_and_serial(store_url: str) -> None:
    with Store(store_url) as store:
        store.save([_j("a", notes=("one",))], source="one")
        store.save([_j("a", notes=("two",))], replace=True, source="two")
        (entry,) = store.jurisdictions()
        (change,) = store.changes(0).changes
    assert (entry.version, entry.notes, change.serial) == (2, ("two",), 2)


#: The schema before federation (version 1), as geoweb 0.1 created it.
_V1 = MetaData()
_V1_META = Table(
    "geoweb_meta", _V1, Column("key", String(64), primary_key=True), Column("value", String(256))
)
_V1_JURISDICTIONS = Table(
    "jurisdictions",
    _V1,
    Column("id", String(200), primary_key=True),
    Column("name", String(500)),
    Column("domain", String(253)),
    Column("jurisdiction_id", String(253)),
    Column("discovery_url", String(2048)),
    Column("boundary_wkb", LargeBinary),
    Column("boundary_generation", String(64)),
    Column("endpoints", JSON),
    Column("services", JSON),
    Column("provenance", JSON),
    Column("notes", JSON),
    Column("updated_at", DateTime(timezone=True)),
)
_V1_IMPORTS = Table(
    "imports",
    _V1,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(2048)),
    Column("imported_at", DateTime(timezone=True)),
    Column("jurisdictions", Integer),
    Column("report", JSON),
)


def test_a_schema_1_store_is_migrated(store_url: str) -> None:
    engine = create_engine(database_url(store_url))
    try:
        _V1.create_all(engine)
        with engine.begin() as conn:
            conn.execute(insert(_V1_META).values(key="schema_version", value="1"))
            for id_ in ("zz", "aa"):
                conn.execute(
                    insert(_V1_JURISDICTIONS).values(
                        id=id_,
                        name=id_.upper(),
                        boundary_wkb=shapely.to_wkb(box(0, 0, 1, 1)),
                        boundary_generation=boundary_generation(box(0, 0, 1, 1)),
                        endpoints=[],
                        services=None,
                        provenance=[],
                        notes=["kept"],
                        updated_at=dt.datetime.now(dt.UTC),
                    )
                )
    finally:
        engine.dispose()
    with Store(store_url) as store:
        assert store.schema_version == SCHEMA_VERSION == 3
        registry_id = store.registry_id
        assert store.serial == 2
        entries = store.jurisdictions()
        page = store.changes(0)
        store.save([_j("new")], source="after")
        assert store.serial == 3
    assert [(j.id, j.notes, j.origin, j.version) for j in entries] == [
        ("aa", ("kept",), registry_id, 1),
        ("zz", ("kept",), registry_id, 1),
    ]
    assert all(j.boundary is not None and j.boundary.equals(box(0, 0, 1, 1)) for j in entries)
    # existing entries take the serials 1.. in id order
    assert [(c.serial, c.id) for c in page.changes] == [(1, "aa"), (2, "zz")]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        # longer than the column: PostgreSQL refuses it, SQLite would keep it
        (_j("x", domain="d" * 254), r"jurisdictions.domain of 'x' is 254 characters long"),
        (_j("y" * 201), r"jurisdictions.id is 201 characters long; the store keeps at most 200"),
        # PostgreSQL's text cannot hold NUL
        (Jurisdiction(id="nul", name="a\x00b"), r"jurisdictions.name of 'nul' contains a NUL"),
        # not JSON: NaN is refused by PostgreSQL's json type
        (Jurisdiction(id="nan", name="N", notes=(float("nan"),)), "notes of 'nan' cannot be"),  # type: ignore[arg-type]
    ],
)
def test_what_postgresql_cannot_store_is_refused_on_every_backend(
    store_url: str, entry: Jurisdiction, message: str
) -> None:
    with Store(store_url) as store:
        store.save([_j("kept")], source="one")
        with pytest.raises(InvalidInput, match=message):
            store.save([_j("fine"), entry], source="two")
        assert [j.id for j in store.jurisdictions()] == ["kept"]
        assert store.serial == 1 and len(store.imports()) == 1


def test_times_come_back_in_utc(store_url: str) -> None:
    """The test server's time zone is not UTC: an instant must not change on the way back."""
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with Store(store_url) as store:
        store.save([_j("a")], source="one")
        store.add_mirror("https://upstream.example/")
        store.record_mirror_failure("https://upstream.example/", "down")
        record_refresh(store, "a", ok=False, reason="timeout", url="https://a.example/d.json")
        imported = store.imports()[0]["imported_at"]
        mirror = store.mirror("https://upstream.example/")
        refresh = refresh_status(store, "a")
    end = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    assert mirror is not None and refresh is not None
    shown = [imported, mirror.added_at, mirror.last_attempt_at, refresh["attempted_at"]]
    for text_ in shown:
        assert text_ is not None and text_.endswith("+00:00"), text_
        assert start <= dt.datetime.fromisoformat(text_) <= end


def test_refresh_status_counts_failures_and_resets_on_success(store_url: str) -> None:
    with Store(store_url) as store:
        assert refresh_status(store, "a") is None
        record_refresh(store, "a", ok=False, reason="timeout", url="https://a.example/d.json")
        record_refresh(store, "a", ok=False, reason="refused", url="https://a.example/d.json")
        failing = refresh_status(store, "a")
        record_refresh(store, "a", ok=True, reason=None, url="https://a.example/d.json")
        ok = refresh_status(store, "a")
        record_refresh(store, "a", ok=False, reason=None, url=None)
        again = refresh_status(store, "a")
    assert failing is not None and ok is not None and again is not None
    assert (failing["consecutive_failures"], failing["reason"], failing["ok"]) == (
        2,
        "refused",
        False,
    )
    assert failing["last_success_at"] is None
    assert (ok["consecutive_failures"], ok["reason"], ok["ok"]) == (0, None, True)
    # a failure after a success keeps when the last success was
    assert (again["consecutive_failures"], again["reason"]) == (1, "unknown")
    assert again["last_success_at"] == ok["last_success_at"] is not None


def _fetched(url: str, body: bytes, etag: str | None = None) -> Fetched:
    return Fetched(
        url=url,
        status=200,
        content_type="application/json; charset=utf-8",
        body=body,
        fetched_at=1_700_000_000.25,
        expires_at=1_700_000_060.5,
        etag=etag,
        last_modified="Tue, 14 Nov 2023 22:13:20 GMT",
        from_cache=False,
        stale=False,
        final_url=None,
    )


def test_the_http_cache_keeps_bytes_and_replaces_by_url(store_url: str) -> None:
    body = bytes(range(256)) * 4  # every byte value, NUL included
    with Store(store_url) as store:
        cache = StoreHttpCache(store)
        assert cache.read("https://a.example/d.json") is None
        cache.write(_fetched("https://a.example/d.json", b"old", etag='"1"'))
        cache.write(_fetched("https://a.example/d.json", body, etag='"2"'))
        cache.write(_fetched("https://b.example/d.json", b"{}"))
        got = cache.read("https://a.example/d.json")
        # a header too long for its column: not cached, and no error
        cache.write(_fetched("https://c.example/d.json", b"{}", etag="x" * 5000))
        assert cache.read("https://c.example/d.json") is None
        cache.remove("https://b.example/d.json")
        assert cache.read("https://b.example/d.json") is None
    assert got is not None and got.from_cache
    assert (got.body, got.etag, got.fetched_at, got.expires_at) == (
        body,
        '"2"',
        1_700_000_000.25,
        1_700_000_060.5,
    )
    assert got.content_type == "application/json; charset=utf-8"
