"""The store on a real PostgreSQL server: what only a server shows. A transaction the server
refuses half-way, several processes writing one registry at once, processes creating one store at
once, ``--db postgresql://...`` through the command line, and a server that is not there.

The tests that race processes make the race certain rather than likely: the test holds the lock
the store takes, waits until every process is queued behind it, then lets them all go at once."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import shapely
from click.testing import CliRunner
from pg_server import PgCluster
from shapely.geometry import box
from sqlalchemy import Connection, create_engine, make_url, text

from common.errors import StoreError
from common.models import Jurisdiction
from resolver.cli.main import main
from resolver.store import Store
from resolver.store.caches import StoreHttpCache, refresh_status
from resolver.store.database import _SCHEMA_LOCK


def _j(id_: str, **kw: Any) -> Jurisdiction:
    return Jurisdiction(id=id_, name=id_.upper(), **kw).with_boundary(box(0, 0, 1, 1))


#: A separate Python process writing to the store: ``job`` names the URL, the batches to save, and
#: a URL to cache or a refresh to record.
_WRITER = """
import json, sys
from shapely.geometry import box
from discovery.fetch import Fetched
from common.errors import InvalidInput
from common.models import Jurisdiction
from resolver.store import Store
from resolver.store.caches import StoreHttpCache, record_refresh

job = json.loads(sys.argv[1])
with Store(job["url"]) as store:
    print("opened", store.registry_id, flush=True)
    for batch in job["batches"]:
        square = box(0, 0, 1, 1)
        entries = [Jurisdiction(id=i, name=job["name"]).with_boundary(square) for i in batch]
        try:
            store.save(entries, replace=job["replace"], source=job["name"])
            print("saved", flush=True)
        except InvalidInput as exc:
            print("refused", exc.detail, flush=True)
    if job["cache"]:
        name = job["name"]
        fetched = Fetched(job["cache"], 200, "text/plain", name.encode(), 0, None, name, None, 0, 0)
        StoreHttpCache(store).write(fetched)
        print("cached", flush=True)
    if job["refresh"]:
        record_refresh(store, job["refresh"], ok=False, reason=job["name"], url=None)
        print("recorded", flush=True)
"""


def _start(
    url: str,
    name: str,
    batches: Sequence[Sequence[str]] = (),
    *,
    replace: bool = False,
    cache: str | None = None,
    refresh: str | None = None,
) -> Any:
    job = {"url": url, "name": name, "batches": batches, "replace": replace}
    job |= {"cache": cache, "refresh": refresh}
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, json.dumps(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(processes: Sequence[Any]) -> list[list[str]]:
    """Each process's output lines; fails the test (with its stderr) if one did not succeed."""
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
        outputs.append(out.splitlines())
    return outputs


def _wait_until_queued(cluster: PgCluster, url: str, count: int, processes: Sequence[Any]) -> None:
    """Until ``count`` connections of this test wait for a lock (the one the test holds)."""
    name = make_url(url).query["application_name"]
    admin = cluster.admin()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        waiting = admin.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = %s AND wait_event_type = 'Lock'",
            (name,),
        ).fetchone()[0]
        if waiting >= count:
            return
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"a writer ended before it queued: {process.communicate()}")
        time.sleep(0.05)
    pytest.fail(f"{count} writers did not queue for the lock")


def _holding_the_serial(engine: Any) -> Connection:
    """A connection in a transaction that holds the row every writer locks first."""
    connection: Connection = engine.connect()
    connection.begin()
    connection.execute(text("SELECT value FROM geoweb_meta WHERE key = 'serial' FOR UPDATE"))
    return connection


def test_a_transaction_the_server_refuses_half_way_leaves_nothing(pg_url: str) -> None:
    with Store(pg_url) as store:
        store.save([_j("kept")], source="one")
        with store.engine.begin() as conn:
            # the server counts the rows it is sent (a sequence is not rolled back) and refuses
            # the last one, after the import log row, the serial and the other rows were written
            conn.execute(text("CREATE SEQUENCE sent"))
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_kept() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "PERFORM nextval('sent'); "
                    "IF NEW.id = 'kept' THEN RAISE EXCEPTION 'refused by the server'; END IF; "
                    "RETURN NEW; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refused BEFORE INSERT ON jurisdictions "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_kept()"
                )
            )
        with pytest.raises(StoreError, match=r"rolled back.*refused by the server") as caught:
            store.save([_j("a"), _j("b"), _j("kept", notes=("new",))], replace=True, source="two")
        assert "\n" not in caught.value.detail
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT last_value, is_called FROM sent")).one() == (3, True)
            conn.execute(text("DROP TRIGGER refused ON jurisdictions"))
            conn.commit()
        (kept,) = store.jurisdictions()
        assert (kept.id, kept.notes, kept.version) == ("kept", (), 1)
        assert store.serial == 1 and len(store.imports()) == 1
        assert [c.id for c in store.changes(0).changes] == ["kept"]
        # the serials the failed write had taken are handed out again: no gap
        store.save([_j("c")], source="three")
        assert [(c.serial, c.id) for c in store.changes(0).changes] == [(1, "kept"), (2, "c")]


def test_two_processes_saving_at_once_get_distinct_gap_free_serials(
    pg_cluster: PgCluster, pg_url: str
) -> None:
    batches, size = 15, 8
    with Store(pg_url) as store:
        holder = _holding_the_serial(store.engine)
        try:
            writers = [
                _start(
                    pg_url, name, [[f"{name}-{b}-{i}" for i in range(size)] for b in range(batches)]
                )
                for name in ("p", "q")
            ]
            _wait_until_queued(pg_cluster, pg_url, 2, writers)
        finally:
            holder.rollback()
            holder.close()
        outputs = _finish(writers)
        entries = store.jurisdictions()
        changes = store.changes(0, limit=10_000).changes
        serial = store.serial
        imports = store.imports()
    assert [line for out in outputs for line in out[1:]] == ["saved"] * (2 * batches)
    total = 2 * batches * size
    assert serial == total and len(entries) == total and len(imports) == 2 * batches
    assert {j.id for j in entries} == {
        f"{name}-{b}-{i}" for name in "pq" for b in range(batches) for i in range(size)
    }
    # every entry has its own serial, and together they are 1..total: none twice, none skipped
    assert [c.serial for c in changes] == list(range(1, total + 1))
    # one save takes consecutive serials, in the order of its entries
    by_batch: dict[str, list[int]] = {}
    for change in changes:
        by_batch.setdefault(change.id.rsplit("-", 1)[0], []).append(change.serial)
    assert all(s == list(range(s[0], s[0] + size)) for s in by_batch.values())


def test_processes_adding_one_new_entry_at_once(pg_cluster: PgCluster, pg_url: str) -> None:
    """Each writer reads what the store holds only once it is its turn: without ``replace`` the
    second is refused (not silently overwriting the first); with it, it takes the next version."""
    with Store(pg_url) as store:
        holder = _holding_the_serial(store.engine)
        try:
            writers = [_start(pg_url, name, [["added"]]) for name in ("p", "q")]
            writers += [_start(pg_url, name, [["replaced"]], replace=True) for name in ("r", "s")]
            _wait_until_queued(pg_cluster, pg_url, 4, writers)
        finally:
            holder.rollback()
            holder.close()
        outcomes = [out[1].split()[0] for out in _finish(writers)]
        entries = {j.id: j for j in store.jurisdictions()}
        changes = store.changes(0).changes
        serial = store.serial
    assert sorted(outcomes[:2]) == ["refused", "saved"] and outcomes[2:] == ["saved", "saved"]
    # the entry is the one of the writer that saved it
    assert entries["added"].version == 1 and entries["added"].name == "pq"[outcomes.index("saved")]
    assert entries["replaced"].version == 2
    # three saves, three serials; the replaced entry carries the later of its two
    by_id = {c.id: c.serial for c in changes}
    assert serial == 3 and sorted(by_id.values()) in ([1, 3], [2, 3])
    assert by_id["replaced"] >= 2


def test_a_snapshot_does_not_see_a_write_committed_while_it_reads(
    pg_cluster: PgCluster, pg_url: str
) -> None:
    """Entries and serial are read by two statements; a write committed between them must not
    show in the second only (a mirror would record a serial whose entries it never got)."""
    with Store(pg_url) as store:
        store.save([_j("a")], source="one")
        registry_id = store.registry_id
        writer = store.engine.connect()
        writer.begin()
        # the reader gets the entries, then waits for this lock before it reads the serial
        writer.execute(text("LOCK TABLE geoweb_meta IN ACCESS EXCLUSIVE MODE"))
        result: list[Any] = []
        reader = threading.Thread(target=lambda: result.append(store.snapshot()))
        try:
            reader.start()
            _wait_until_queued(pg_cluster, pg_url, 1, [])
            # as a save would: the next serial, and an entry carrying it
            writer.execute(text("UPDATE geoweb_meta SET value = '2' WHERE key = 'serial'"))
            writer.execute(
                text(
                    "INSERT INTO jurisdictions (id, name, endpoints, provenance, notes, "
                    "updated_at, origin, version, origin_updated, attested, serial) VALUES "
                    "('b', 'B', '[]', '[]', '[]', now(), :origin, 1, '2026-01-01T00:00:00Z', "
                    "false, 2)"
                ),
                {"origin": registry_id},
            )
            writer.commit()
        finally:
            writer.close()
            reader.join(60)
        assert [j.id for j in store.jurisdictions()] == ["a", "b"] and store.serial == 2
    (snapshot,) = result
    assert (snapshot[1], [j.id for j in snapshot[2]]) == (1, ["a"])


def test_processes_creating_one_store_at_once_agree(pg_cluster: PgCluster, pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        with engine.connect() as holder:
            holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK})
            try:
                openers = [_start(pg_url, name) for name in ("p", "q", "r")]
                _wait_until_queued(pg_cluster, pg_url, 3, openers)
            finally:
                holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK})
                holder.commit()
            outputs = _finish(openers)
            meta = holder.execute(text("SELECT key, value FROM geoweb_meta ORDER BY key")).all()
    finally:
        engine.dispose()
    # one registry, created once: every process sees the same id
    ids = {out[0] for out in outputs}
    assert len(ids) == 1 and ids.pop().startswith("opened ")
    assert [key for key, _ in meta] == [
        "generation_scheme",
        "log_floor",
        "registry_id",
        "schema_version",
        "serial",
    ]


def test_processes_caching_one_url_at_once_both_succeed(pg_cluster: PgCluster, pg_url: str) -> None:
    """Several servers share one HTTP cache and refresh log: two of them storing the same URL, or
    recording a refresh of the same jurisdiction, at the same moment must both succeed."""
    url = "https://city.example/discovery.json"
    with Store(pg_url) as store:
        # the table locks let the writers read (and find nothing) but hold back their inserts
        holder = store.engine.connect()
        holder.begin()
        holder.execute(text("LOCK TABLE http_cache, refresh_status IN EXCLUSIVE MODE"))
        try:
            writers = [_start(pg_url, name, cache=url) for name in ("p", "q")]
            writers += [_start(pg_url, name, refresh="city") for name in ("r", "s")]
            _wait_until_queued(pg_cluster, pg_url, 4, writers)
        finally:
            holder.rollback()
            holder.close()
        outputs = _finish(writers)
        cached = StoreHttpCache(store).read(url)
        status = refresh_status(store, "city")
    assert [out[1:] for out in outputs] == [["cached"], ["cached"], ["recorded"], ["recorded"]]
    # the later write wins, whole: body and validator from the same response
    assert cached is not None and cached.body.decode() == cached.etag and cached.etag in "pq"
    assert status is not None and status["reason"] in ("r", "s")
    assert status["consecutive_failures"] == 2  # both failures counted


def _geojson(path: Path, squares: dict[str, float]) -> Path:
    features = [
        {
            "type": "Feature",
            "properties": {"code": code, "label": f"City {code}"},
            "geometry": shapely.geometry.mapping(shapely.box(x, 0, x + 1, 1)),
        }
        for code, x in squares.items()
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_geoweb_import_into_postgresql(
    pg_cluster: PgCluster, pg_database: str, tmp_path: Path
) -> None:
    """A plain ``postgresql://`` URL, as a user types it."""
    db = pg_cluster.url(pg_database, driver="")
    assert db.startswith("postgresql://")
    runner = CliRunner()
    cities = _geojson(tmp_path / "cities.geojson", {"1": 0.0, "2": 2.0})
    imported = ["import", str(cities), "--id-field", "code", "--name-field", "label", "--db", db]
    result = runner.invoke(main, [*imported, "--endpoint-url", "https://one.example/open311/v2/"])
    assert result.exit_code == 0, result.output
    assert "imported 2 jurisdictions" in result.stdout
    result = runner.invoke(
        main, ["resolve", "--lat", "0.5", "--long", "2.5", "--json", "--db", db, "--no-embedded"]
    )
    answer = json.loads(result.stdout)
    assert answer["jurisdiction"]["id"] == "2" and answer["jurisdiction"]["name"] == "City 2"
    assert answer["endpoint"]["url"] == "https://one.example/open311/v2/"
    # already there: refused, nothing changed
    result = runner.invoke(main, imported)
    assert result.exit_code == 2 and "--replace" in result.stderr
    moved = _geojson(tmp_path / "cities.geojson", {"2": 5.0})
    result = runner.invoke(main, [*imported[:1], str(moved), *imported[2:], "--replace"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        main, ["resolve", "--lat", "0.5", "--long", "5.5", "--json", "--db", db, "--no-embedded"]
    )
    assert json.loads(result.stdout)["jurisdiction"]["id"] == "2"
    result = runner.invoke(main, ["jurisdictions", "--json", "--db", db, "--no-embedded"])
    assert result.exit_code == 0, result.output
    with Store(db) as store:
        assert [j.id for j in store.jurisdictions()] == ["1", "2"]
        assert [j.version for j in store.jurisdictions()] == [1, 2]
        assert store.serial == 3 and len(store.imports()) == 2


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_server_that_is_not_there_is_one_clear_line() -> None:
    port = _closed_port()
    url = f"postgresql://geoweb:secret@127.0.0.1:{port}/registry"
    with pytest.raises(StoreError) as caught:
        Store(url)
    detail = caught.value.detail
    assert detail.startswith(
        f"cannot open the store postgresql+psycopg://geoweb:***@127.0.0.1:{port}"
    )
    assert "Connection refused" in detail and "\n" not in detail and "secret" not in detail
    result = CliRunner().invoke(main, ["jurisdictions", "--db", url])
    assert result.exit_code == 1
    assert (
        result.stderr.startswith("geoweb: cannot open the store") and "secret" not in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_a_malformed_url_is_refused_without_showing_its_password() -> None:
    with pytest.raises(StoreError, match=r"postgresql\+psycopg://u:\*\*\*@db:port/x: not a URL"):
        Store("postgresql://u:pass/word@db:port/x")


def test_without_the_driver_the_message_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    with pytest.raises(StoreError, match=r"psycopg.*pip install 'geowebdns\[postgresql\]'"):
        Store("postgresql://geoweb@127.0.0.1:5432/registry")


def test_other_databases_are_refused_by_name() -> None:
    with pytest.raises(StoreError, match="SQLite or PostgreSQL, not mysql"):
        Store("mysql://geoweb@127.0.0.1/registry")
