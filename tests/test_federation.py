"""Registry entries, serials, the change log and the federation rules, on both store backends."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
from shapely.geometry import box

from common.errors import SnapshotRequired, StoreError
from common.models import Jurisdiction
from resolver.core.federation import EntryVersion, domain_origin, timestamp, why_newer
from resolver.store import Store
from resolver.store.entries import TOMBSTONE_DAYS, Change


def _j(jurisdiction_id: str, x: float = 0.0, **fields: object) -> Jurisdiction:
    return Jurisdiction(id=jurisdiction_id, name=jurisdiction_id.title(), **fields).with_boundary(  # type: ignore[arg-type]
        box(x, 0, x + 1, 1)
    )


def _v(
    origin: str, version: int, updated: str = "2026-01-01T00:00:00.000000Z", **kw: object
) -> EntryVersion:
    return EntryVersion(origin, version, updated, **kw)  # type: ignore[arg-type]


# -- the rules ---------------------------------------------------------------------------------


def test_same_origin_only_a_higher_version_wins() -> None:
    held = _v("a", 3)
    assert why_newer(_v("a", 4), held) == "newer version from the same origin"
    assert why_newer(_v("a", 3), held) is None  # the same copy back round a cycle: no change
    assert why_newer(_v("a", 2, "2027-01-01T00:00:00.000000Z"), held) is None


def test_attested_beats_unattested_whatever_the_time() -> None:
    attested = _v("domain:city.example", 1, "2020-01-01T00:00:00.000000Z", attested=True)
    newer = _v("registry-b", 9, "2026-06-01T00:00:00.000000Z")
    assert why_newer(attested, newer) is not None
    assert "attested" in (why_newer(attested, newer) or "")
    assert why_newer(newer, attested) is None


def test_the_jurisdictions_own_origin_beats_a_registry() -> None:
    own = _v(
        domain_origin("City.Example."), 1, "2020-01-01T00:00:00.000000Z", domain="city.example"
    )
    registry = _v("registry-b", 5, "2026-06-01T00:00:00.000000Z", domain="city.example")
    assert own.authoritative and not registry.authoritative
    assert why_newer(own, registry) == "comes from the jurisdiction's own origin"
    assert why_newer(registry, own) is None


def test_between_registries_the_newer_change_wins_and_ties_are_broken_alike() -> None:
    older = _v("registry-a", 7, "2026-01-01T00:00:00.000000Z")
    newer = _v("registry-b", 1, "2026-02-01T00:00:00.000000Z")
    assert why_newer(newer, older) == "changed more recently at its origin"
    assert why_newer(older, newer) is None
    tie_a, tie_b = _v("registry-a", 1), _v("registry-b", 1)
    assert (why_newer(tie_a, tie_b) is None) != (why_newer(tie_b, tie_a) is None)


# -- serials, versions, tombstones -------------------------------------------------------------


def test_every_change_takes_the_next_serial_and_versions_grow(store_url: str) -> None:
    with Store(store_url) as store:
        assert store.serial == 0 and len(store.registry_id) == 16
        store.save([_j("a"), _j("b", 2)], source="test")
        assert store.serial == 2
        store.save([_j("a", 5)], replace=True, source="test")
        assert store.serial == 3
        entries = {j.id: j for j in store.jurisdictions()}
        assert entries["a"].version == 2 and entries["b"].version == 1
        assert entries["a"].origin == store.registry_id
        page = store.changes(0)
        assert [(c.serial, c.id) for c in page.changes] == [(2, "b"), (3, "a")]
        assert not page.more and page.last == 3
        assert store.delete(["b", "missing"], source="test") == ["b"]
        page = store.changes(3)
        (deletion,) = page.changes
        assert deletion.id == "b" and deletion.jurisdiction is None
        assert deletion.deletion is not None and deletion.deletion.version == 2
        assert store.count() == 1


def test_change_pages_follow_on_without_gaps(store_url: str) -> None:
    with Store(store_url) as store:
        store.save([_j(f"j{i:02d}", i) for i in range(25)], source="test")
        store.delete(["j03", "j07"], source="test")
        seen, since, pages = [], 0, 0
        while True:
            page = store.changes(since, limit=10)
            seen += [c.serial for c in page.changes]
            since, pages = page.last, pages + 1
            if not page.more:
                break
        assert pages == 3
        assert seen == sorted(seen) and len(seen) == len(set(seen)) == 25
        assert since == store.serial == 27


def test_a_serial_the_log_no_longer_reaches_asks_for_the_snapshot(store_url: str) -> None:
    with Store(store_url) as store:
        store.save([_j("a"), _j("b", 2), _j("c", 4)], source="test")
        store.delete(["a"], source="test")
        with pytest.raises(SnapshotRequired, match="ahead of this registry"):
            store.changes(99)
        # Age the tombstone past TOMBSTONE_DAYS: the next write forgets it and raises the floor.
        old = timestamp(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        with store.engine.begin() as connection:
            connection.exec_driver_sql(f"UPDATE tombstones SET origin_updated = '{old}'")
        store.delete(["b"], source="test")
        with pytest.raises(SnapshotRequired) as caught:
            store.changes(0)
        assert caught.value.status == 410 and caught.value.oldest == 4
        assert [c.id for c in store.changes(4).changes] == ["b"]
    assert TOMBSTONE_DAYS >= 7


# -- applying mirrored changes ------------------------------------------------------------------


def _copy_changes(source: Store, since: int = 0) -> list[Change]:
    return source.changes(since, limit=10_000).changes


def test_applying_changes_keeps_origin_and_version_and_a_cycle_stops(tmp_path: Path) -> None:
    with Store(tmp_path / "a.sqlite") as a, Store(tmp_path / "b.sqlite") as b:
        a.save([_j("x"), _j("y", 2)], source="test")
        b.add_mirror("http://a")
        report = b.apply_changes(
            _copy_changes(a), via="http://a", upstream="http://a", upstream_serial=a.serial
        )
        assert sorted(report.upserted) == ["x", "y"]
        (x_b,) = [j for j in b.jurisdictions() if j.id == "x"]
        assert (x_b.origin, x_b.version) == (a.registry_id, 1)
        assert b.mirror("http://a").last_serial == a.serial  # type: ignore[union-attr]
        # B's copy comes back to A (A mirrors B): the same versions, so nothing changes on A.
        serial = a.serial
        a.add_mirror("http://b")
        back = a.apply_changes(
            _copy_changes(b), via="http://b", upstream="http://b", upstream_serial=b.serial
        )
        assert back.upserted == [] and back.unchanged == 2 and a.serial == serial
        assert a.conflicts() == []


def test_a_deletion_reaches_the_mirror_and_an_old_copy_cannot_bring_it_back(tmp_path: Path) -> None:
    with Store(tmp_path / "a.sqlite") as a, Store(tmp_path / "b.sqlite") as b:
        a.save([_j("x")], source="test")
        stale_copy = _copy_changes(a)
        b.apply_changes(stale_copy, via="http://a")
        since = a.serial
        a.delete(["x"], source="test")
        report = b.apply_changes(_copy_changes(a, since), via="http://a")
        assert report.deleted == ["x"] and b.count() == 0
        again = b.apply_changes(stale_copy, via="http://c")  # an old copy via another mirror
        assert again.upserted == [] and b.count() == 0


def test_conflicts_are_decided_by_the_rules_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        Store(tmp_path / "a.sqlite") as a,
        Store(tmp_path / "c.sqlite") as c,
        Store(tmp_path / "m.sqlite") as mirror,
    ):
        a.save([_j("city", 0, domain="city.example")], source="a")
        own = _j(
            "city", 3, domain="city.example", origin=domain_origin("city.example"), attested=True
        )
        c.save([own], source="registration")
        mirror.apply_changes(_copy_changes(a), via="http://a")
        # The domain's own DNS confirmed the attestation here (the mirror checks it).
        report = mirror.apply_changes(
            _copy_changes(c), via="http://c", verified=frozenset({"city"})
        )
        assert report.upserted == ["city"] and report.overruled == ["city"]
        (kept,) = mirror.jurisdictions()
        assert kept.origin == "domain:city.example" and kept.attested
        # A newer registry copy still loses to the attested one, and that is logged too.
        a.save([_j("city", 9, domain="city.example")], replace=True, source="a")
        late = mirror.apply_changes(_copy_changes(a, 1), via="http://a")
        assert late.upserted == [] and late.overruled == ["city"]
        (kept,) = mirror.jurisdictions()
        assert kept.boundary is not None and kept.boundary.bounds[0] == 3
        log = mirror.conflicts()
        assert len(log) == 2 and all("attested" in entry["why"] for entry in log)
        assert "overruled" in caplog.text


def test_a_failed_batch_changes_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "a.sqlite") as a, Store(tmp_path / "b.sqlite") as b:
        a.save([_j("x"), _j("y", 2)], source="test")
        b.add_mirror("http://a")
        changes = _copy_changes(a)
        nameless = Jurisdiction(id="z", name=None, origin="a", version=1, updated=timestamp())  # type: ignore[arg-type]
        broken = Change(99, "z", nameless, None)
        with pytest.raises(StoreError, match="rolled back"):
            b.apply_changes(
                [*changes, broken], via="http://a", upstream="http://a", upstream_serial=99
            )
        assert b.count() == 0 and b.serial == 0
        assert b.mirror("http://a").last_serial == 0  # type: ignore[union-attr]


def test_a_schema_1_store_is_migrated_in_place(tmp_path: Path) -> None:
    db = tmp_path / "v1.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript(
            """
            CREATE TABLE geoweb_meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(256));
            INSERT INTO geoweb_meta VALUES ('schema_version', '1');
            CREATE TABLE jurisdictions (
                id VARCHAR(200) PRIMARY KEY, name VARCHAR(500), domain VARCHAR(253),
                jurisdiction_id VARCHAR(253), discovery_url VARCHAR(2048), boundary_wkb BLOB,
                boundary_generation VARCHAR(64), endpoints JSON, services JSON, provenance JSON,
                notes JSON, updated_at DATETIME);
            INSERT INTO jurisdictions VALUES ('b', 'B', NULL, NULL, NULL, NULL, NULL, '[]', NULL,
                '[]', '[]', '2026-01-01 00:00:00');
            INSERT INTO jurisdictions VALUES ('a', 'A', NULL, NULL, NULL, NULL, NULL, '[]', NULL,
                '[]', '[]', '2026-01-01 00:00:00');
            """
        )
    with Store(db) as store:
        assert store.schema_version == 3 and store.serial == 2
        entries = store.jurisdictions()
        assert [(j.id, j.origin, j.version) for j in entries] == [
            ("a", store.registry_id, 1),
            ("b", store.registry_id, 1),
        ]
        assert [c.id for c in store.changes(0).changes] == ["a", "b"]
        store.save([_j("c")], source="after migration")
        assert store.serial == 3
