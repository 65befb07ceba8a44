"""The embedded registry is a layer of the store: an origin like any other.

Imports add to it, never replace it; a mirror of a default resolver answers as it does; it can be
left out; an upgraded package replaces the layer, and the change reaches answers and mirrors
while local entries stay as they were. Real servers on loopback, real HTTP between them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner
from test_registry_city_halls import CITY_HALLS

from common.models import Endpoint
from resolver.cli.main import main
from resolver.config import Settings
from resolver.core.federation import timestamp
from resolver.http.app import FETCHER, STORE, create_app
from resolver.http.registry import REGISTRY
from resolver.registry.embedded import (
    EMBEDDED_ORIGIN,
    EmbeddedLayer,
    embedded_layer,
    sync_embedded,
)
from resolver.registry.mirror import sync_mirror
from resolver.store import Store

LOOPBACK = ("127.0.0.0/8",)
SF_CITY_HALL = ("37.7793", "-122.4193")
SF_ENDPOINT = "https://mobile311.sfgov.org/open311/v2/"


def geoweb(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_importing_counties_into_a_default_store_adds_to_the_embedded_layer(
    tmp_path: Path, shared_data: Path
) -> None:
    db = str(tmp_path / "default.sqlite")
    code, out, _ = geoweb("jurisdictions", "--db", db)  # a default store: the layer only
    assert code == 0 and out.startswith("# 82 jurisdictions: 82 from the embedded registry")
    code, out, err = geoweb(
        "import",
        str(shared_data / "us-counties.geojson"),
        "--id-field",
        "geoid",
        "--name-field",
        "name",
        "--db",
        db,
    )
    assert code == 0, err
    code, out, _ = geoweb("resolve", "--lat", SF_CITY_HALL[0], "--long", SF_CITY_HALL[1],
                          "--json", "--db", db)  # fmt: skip
    answer = json.loads(out)
    assert code == 0 and answer["found"] is True
    assert answer["jurisdiction"]["id"] == "san-francisco-ca"
    assert answer["endpoint"]["url"] == SF_ENDPOINT
    county = [a for a in answer["alternatives"] if a["jurisdiction"]["id"] == "06075"]
    assert len(county) == 1 and "names no way to reach it" in county[0]["why_not_chosen"]
    # Chicago's city hall: the city (embedded) inside Cook County (imported)
    code, out, _ = geoweb("resolve", "--lat", "41.8838", "--long", "-87.6321", "--json",
                          "--db", db)  # fmt: skip
    chicago = json.loads(out)
    assert chicago["jurisdiction"]["id"] == "chicago-il"
    assert [a["jurisdiction"]["id"] for a in chicago["alternatives"]] == ["17031"]
    code, out, _ = geoweb("registry", "status", "--db", db)
    status = json.loads(out)
    assert status["entries"] == 82 + 3231
    assert status["layers"]["embedded"]["entries"] == 82
    assert status["layers"]["local"]["entries"] == 3231


def test_no_embedded_leaves_the_layer_out_and_the_removal_is_a_change(tmp_path: Path) -> None:
    db = str(tmp_path / "s.sqlite")
    code, out, _ = geoweb("jurisdictions", "--db", db, "--no-embedded")
    assert code == 0 and out.startswith("# 0 jurisdictions: none")
    code, _, _ = geoweb("resolve", "--lat", SF_CITY_HALL[0], "--long", SF_CITY_HALL[1],
                        "--db", db, "--no-embedded")  # fmt: skip
    assert code == 3
    with Store(db) as store:
        assert sync_embedded(store) is not None  # taken in
        serial = store.serial
        assert store.count() == 82
        assert sync_embedded(store) is None  # once per version: nothing to do
        report = sync_embedded(store, enabled=False)
        assert report is not None and len(report.deleted) == 82 and store.count() == 0
        # the removal is in the changes feed, for mirrors
        page = store.changes(serial, 1000)
        assert len(page.changes) == 82 and all(c.jurisdiction is None for c in page.changes)
        # and taken back: the deletions do not shadow the entries
        sync_embedded(store)
        assert store.count() == 82
    code, _, _ = geoweb("resolve", "--lat", SF_CITY_HALL[0], "--long", SF_CITY_HALL[1],
                        "--db", db)  # fmt: skip
    assert code == 0


def test_the_layer_is_taken_left_out_and_taken_back_on_both_backends(store_url: str) -> None:
    with Store(store_url) as store:
        assert store.layer_version("embedded") is None
        first = sync_embedded(store)
        assert first is not None and len(first.upserted) == 82
        assert store.layer_version("embedded") == embedded_layer().version
        assert {j.origin for j in store.jurisdictions()} == {embedded_layer().origin}
        gone = sync_embedded(store, enabled=False)
        assert gone is not None and len(gone.deleted) == 82 and store.count() == 0
        back = sync_embedded(store)
        assert back is not None and len(back.upserted) == 82 and store.count() == 82


def test_a_default_store_exports_the_embedded_entries(tmp_path: Path) -> None:
    out = tmp_path / "registry.geojson"
    code, stdout, err = geoweb("registry", "export", str(out), "--db", str(tmp_path / "d.sqlite"))
    assert code == 0, err
    assert stdout.startswith("wrote 82 jurisdictions")
    features = json.loads(out.read_text())["features"]
    assert {f["properties"]["entry"]["origin"] for f in features} == {embedded_layer().origin}


def test_a_local_entry_with_an_embedded_id_wins(tmp_path: Path) -> None:
    db = tmp_path / "local.sqlite"
    with Store(db) as store:
        sync_embedded(store)
        mine = {j.id: j for j in store.jurisdictions()}["san-francisco-ca"]
        ours = replace(mine, origin=None, version=0, endpoints=(Endpoint("https://ours.example/"),))
        store.save([ours], replace=True, source="test: our own San Francisco")
        # a new release of the layer does not take it back
        sync_embedded(store, layer=_release(embedded_layer(), "next", lambda j: j))
        kept = {j.id: j for j in store.jurisdictions()}["san-francisco-ca"]
        assert kept.endpoints[0].url == "https://ours.example/"
        assert kept.origin == store.registry_id


def _release(
    layer: EmbeddedLayer, name: str, change: Callable[[Any], Any], drop: str | None = None
) -> EmbeddedLayer:
    """A later release of the layer (dated now), ``change`` applied, ``drop`` left out."""
    version = f"{layer.version}+{name}"
    entries = tuple(
        change(replace(j, origin=EMBEDDED_ORIGIN + version, updated=timestamp()))
        for j in layer.entries
        if j.id != drop
    )
    return EmbeddedLayer(version, entries)


@dataclass
class Node:
    server: TestServer

    @property
    def app(self) -> web.Application:
        return self.server.app

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def store(self) -> Store:
        return self.app[STORE]

    async def sync(self, upstream: Node) -> None:
        await sync_mirror(self.store, upstream.url, self.app[FETCHER])
        await self.app[REGISTRY].catch_up()

    async def get(self, path: str, **params: str) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}{path}", params=params) as response,
        ):
            return await response.json()

    async def answers(self) -> dict[str, tuple[str | None, str | None]]:
        """Each city hall's answer: the jurisdiction and the endpoint."""
        out = {}
        for jurisdiction, lat, long, *_ in CITY_HALLS:
            body = await self.get("/v1/resolve", lat=str(lat), long=str(long))
            chosen = body["jurisdiction"]["id"] if body["jurisdiction"] else None
            out[jurisdiction] = (chosen, (body["endpoint"] or {}).get("url"))
        return out


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[list[Node]]:
    """A: a default resolver; B: a default resolver mirroring A; C: a resolver with no
    embedded layer of its own, mirroring A."""
    started = []
    for name, embedded in (("a", True), ("b", True), ("c", False)):
        settings = Settings(
            adhoc=False,  # no fallback: an answer is found only once the entry arrives
            db=str(tmp_path / f"{name}.sqlite"),
            allow_network=LOOPBACK,
            registry_poll=3600,
            mirror_interval=0,
            embedded=embedded,
        )
        server = TestServer(create_app(settings), host="127.0.0.1")
        await server.start_server()
        started.append(Node(server))
    a, b, c = started
    b.store.add_mirror(a.url)
    c.store.add_mirror(a.url)
    yield started
    for node in started:
        await node.server.close()


async def test_a_mirror_of_a_default_resolver_answers_as_it_does(nodes: list[Node]) -> None:
    a, b, c = nodes
    snapshot = await a.get("/v1/registry")
    assert len(snapshot["features"]) == 82
    assert {f["properties"]["entry"]["origin"] for f in snapshot["features"]} == {
        embedded_layer().origin
    }
    await b.sync(a)
    await c.sync(a)
    expected = await a.answers()
    assert sum(chosen == jurisdiction for jurisdiction, (chosen, _) in expected.items()) == 59
    assert await b.answers() == expected
    assert await c.answers() == expected
    health = await c.get("/healthz")
    assert health["jurisdictions"] == 82 and health["layers"]["embedded"]["entries"] == 82
    status = await c.get("/v1/registry/status")
    assert status["layers"]["embedded"] == {"entries": 82, "versions": [embedded_layer().version]}
    assert status["layers"]["mirrored"]["entries"] == 0  # counted by origin, not by the path


async def test_an_upgraded_layer_reaches_answers_and_mirrors(
    nodes: list[Node], tmp_path: Path
) -> None:
    a, b, c = nodes
    local = tmp_path / "square.geojson"
    local.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"code": "sq", "label": "Square"},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [[[-20, -30], [-19, -30], [-19, -29], [-20, -30]]],
                        },
                    }
                ],
            }
        )
    )
    code, _, err = geoweb("import", str(local), "--id-field", "code", "--name-field", "label",
                          "--db", str(a.store.engine.url.database))  # fmt: skip
    assert code == 0, err
    await a.app[REGISTRY].catch_up()
    await c.sync(a)
    before = {j.id: j for j in a.store.jurisdictions()}

    def new_sf(j: Any) -> Any:
        if j.id != "san-francisco-ca":
            return j
        return replace(j, endpoints=(Endpoint("https://sf.example/open311/v2/"),))

    upgraded = _release(embedded_layer(), "next", new_sf, drop="zurich-ch")
    report = sync_embedded(a.store, layer=upgraded)
    assert report is not None and report.deleted == ["zurich-ch"]
    await a.app[REGISTRY].catch_up()
    after = {j.id: j for j in a.store.jurisdictions()}
    assert after["sq"] == before["sq"]  # the local entry is untouched
    assert after["san-francisco-ca"].origin == upgraded.origin
    for node in (a, c):
        if node is c:
            await c.sync(a)
        body = await node.get("/v1/resolve", lat=SF_CITY_HALL[0], long=SF_CITY_HALL[1])
        assert body["endpoint"]["url"] == "https://sf.example/open311/v2/"
        listing = await node.get("/v1/jurisdictions", limit="1000")
        assert "zurich-ch" not in {j["id"] for j in listing["jurisdictions"]}
    # B holds its own (older) release, and takes the newer one from A by the federation rules
    await b.sync(a)
    body = await b.get("/v1/resolve", lat=SF_CITY_HALL[0], long=SF_CITY_HALL[1])
    assert body["endpoint"]["url"] == "https://sf.example/open311/v2/"
