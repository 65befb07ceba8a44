"""What a mirrored upstream may change (docs/registry.md, "What a mirror may change").

A stand-in upstream registry on loopback serves one hostile change per case; the mirror holds an
entry its operator imported, an entry a domain registered here with a proof, and an entry taken
from another mirror. No hostile change alters any of them or adds an entry; the conflicts are
logged and shown by ``geoweb registry status``. A legitimate change, from a domain whose own DNS
(a real Knot) confirms it, still travels.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import dns.query
import dns.tsig
import dns.update
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner
from dns_server import TSIG_ALGORITHM, TSIG_NAME, TSIG_SECRET, KnotServer
from shapely.geometry import box

from common.errors import SyncError
from common.models import Endpoint, Jurisdiction
from discovery.fetch import Fetcher, FetchLimits, make_session
from resolver.cli.main import main
from resolver.config import Settings
from resolver.core.decide import Resolver
from resolver.core.federation import domain_origin, timestamp
from resolver.http.app import create_app
from resolver.registry.documents import REGISTRY_FORMAT, jurisdiction_to_feature
from resolver.registry.mirror import MAX_PAGES, dns_attestation, sync_mirror
from resolver.store import Store
from resolver.store.entries import Change

LOOPBACK = ("127.0.0.0/8",)
UPSTREAM_ID = "00000000000000ee"
CITY_HALL = (37.7793, -122.4193)  # San Francisco City Hall, inside the local "sf" entry
SF_BOX = box(-122.52, 37.70, -122.35, 37.84)
CITY_URL = "https://city.example/open311/discovery.json"


def _entry(jurisdiction_id: str, boundary: Any, **fields: Any) -> Jurisdiction:
    return Jurisdiction(
        id=jurisdiction_id,
        name=jurisdiction_id.title(),
        endpoints=(Endpoint(f"https://{jurisdiction_id}.example/open311/v2/"),),
        **fields,
    ).with_boundary(boundary)


@pytest.fixture
def mirror(tmp_path: Path) -> Store:
    """A mirror holding an imported entry ("sf"), an entry city.example registered here with a
    proof ("city") and an entry taken from another mirror ("other")."""
    store = Store(tmp_path / "mirror.sqlite")
    store.save([_entry("sf", SF_BOX)], source="sf.geojson")
    proven = _entry(
        "city",
        box(10, 10, 11, 11),
        domain="city.example",
        discovery_url=CITY_URL,
        origin=domain_origin("city.example"),
        attested=True,
    )
    store.save([proven], source="registration")
    taken = _entry(
        "other", box(20, 20, 21, 21), origin="0000000000000001", version=1, updated=timestamp()
    )
    store.apply_changes([Change(1, "other", taken, None)], via="http://elsewhere")
    return store


def _feature(jurisdiction_id: str, boundary: Any = None, **entry: Any) -> dict[str, Any]:
    """A registry feature as an upstream serves it; ``entry`` overrides origin, version, ..."""
    base = _entry(jurisdiction_id, boundary if boundary is not None else box(0, 0, 1, 1))
    feature = jurisdiction_to_feature(base)
    feature["properties"]["entry"] = {
        "origin": "domain:evil.example",
        "version": 1,
        "updated": timestamp(),
        "attested": False,
        **entry,
    }
    return feature


def _upsert(feature: dict[str, Any]) -> dict[str, Any]:
    return {"serial": 1, "op": "upsert", "feature": feature}


def _hijack(props: dict[str, Any]) -> None:
    props.update(domain="evil.example", endpoints=[{"url": "https://evil.example/v2/"}])


def _case_hijack_claiming_attestation(mirror_id: str) -> dict[str, Any]:
    feature = _feature("sf", SF_BOX, attested=True, version=7)
    _hijack(feature["properties"])
    return _upsert(feature)


def _case_hijack_in_our_own_name(mirror_id: str) -> dict[str, Any]:
    feature = _feature("sf", SF_BOX, origin=mirror_id, version=99)
    _hijack(feature["properties"])
    return _upsert(feature)


def _case_hijack_of_a_domain_proven_here(mirror_id: str) -> dict[str, Any]:
    feature = _feature("city", SF_BOX, origin="domain:city.example", version=9, attested=True)
    feature["properties"].update(domain="city.example", discovery_url=CITY_URL)
    return _upsert(feature)


def _deletion(jurisdiction_id: str, origin: str, version: int = 5) -> dict[str, Any]:
    return {
        "serial": 1,
        "op": "delete",
        "id": jurisdiction_id,
        "domain": "evil.example",
        "entry": {"origin": origin, "version": version, "updated": timestamp(), "attested": True},
    }


def _future(jurisdiction_id: str, updated: str) -> Callable[[str], dict[str, Any]]:
    def case(mirror_id: str) -> dict[str, Any]:
        return _upsert(_feature(jurisdiction_id, box(20, 20, 21, 21), updated=updated))

    return case


def _with_geometry(geometry: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
    def case(mirror_id: str) -> dict[str, Any]:
        feature = _feature("newcomer")
        feature["geometry"] = geometry
        feature["properties"].pop("boundary_generation")  # computed from the geometry on arrival
        return _upsert(feature)

    return case


def _javascript_endpoint(mirror_id: str) -> dict[str, Any]:
    feature = _feature("newcomer")
    feature["properties"]["endpoints"] = [{"url": "javascript:alert(1)//"}]
    return _upsert(feature)


def _credentials_in_discovery_url(mirror_id: str) -> dict[str, Any]:
    feature = _feature("newcomer")
    feature["properties"]["discovery_url"] = "https://user:secret@city.example/d.json"
    return _upsert(feature)


HOSTILE: list[tuple[str, Callable[[str], dict[str, Any]], str]] = [
    # an upstream entry for a locally imported id, claiming attestation by its own domain
    ("hijack claiming attestation", _case_hijack_claiming_attestation, "conflict"),
    # the same, forged in this registry's own origin with a higher version
    ("hijack in this registry's name", _case_hijack_in_our_own_name, "conflict"),
    # a copy of a domain's entry proven here, moved over San Francisco
    ("hijack of a domain proven here", _case_hijack_of_a_domain_proven_here, "conflict"),
    # a deletion claiming attestation, from another origin than the local entry's
    ("attested deletion", lambda mid: _deletion("sf", "domain:evil.example"), "conflict"),
    # a deletion in this registry's own name
    ("deletion in our name", lambda mid: _deletion("sf", mid, 99), "conflict"),
    # a deletion of a domain's entry proven here, from that domain's origin
    (
        "deletion of a proven entry",
        lambda mid: _deletion("city", "domain:city.example"),
        "conflict",
    ),
    # a time from the future would win every later comparison and freeze the entry
    ("updated 9999", _future("other", "9999-12-31T23:59:59.999999Z"), "conflict"),
    # an unparsable time sorts after every real one as text
    ("updated zzzz", _future("other", "zzzz"), "conflict"),
    ("javascript: endpoint", _javascript_endpoint, "refused"),
    ("credentials in a URL", _credentials_in_discovery_url, "refused"),
    # a "polygon" with no area answers the points on its line
    (
        "3-point polygon",
        _with_geometry({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [2, 2], [0, 0]]]}),
        "refused",
    ),
    (
        "latitude 1000",
        _with_geometry(
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1000], [0, 1000], [0, 0]]]}
        ),
        "refused",
    ),
    (
        "NaN coordinates",
        _with_geometry(
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, float("nan")], [0, 0]]]}
        ),
        "refused",
    ),
    ("version 2^70", lambda mid: _upsert(_feature("newcomer", version=2**70)), "refused"),
    (
        "deletion version 2^70",
        lambda mid: _deletion("other", "0000000000000001", 2**70),
        "refused",
    ),
]


def _page(since: int, changes: list[dict[str, Any]], *, more: bool = False) -> dict[str, Any]:
    last = changes[-1]["serial"] if changes else since
    serial = last + (1 if more else 0)
    return {
        "registry": {"format": REGISTRY_FORMAT, "id": UPSTREAM_ID, "serial": serial},
        "since": since,
        "last": last,
        "more": more,
        "changes": changes,
    }


Serve = Callable[[Callable[[int], Any]], Awaitable[str]]


@pytest.fixture
async def upstream() -> AsyncIterator[Serve]:
    """Starts a stand-in upstream registry whose change page for ``since`` a function makes."""
    servers: list[TestServer] = []

    async def start(make_page: Callable[[int], Any]) -> str:
        async def handler(request: web.Request) -> web.Response:
            page = make_page(int(request.query["since"]))
            if inspect.isawaitable(page):
                page = await page
            # The standard library writes NaN, as a careless or hostile upstream might.
            body = json.dumps(page)
            return web.Response(body=body, content_type="application/json")

        app = web.Application()
        app.router.add_get("/v1/registry/changes", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    limits = FetchLimits(connect_timeout=1.0, total_timeout=2.0, max_bytes=1024 * 1024)
    async with make_session(allow_networks=LOOPBACK, limits=limits) as session:
        yield Fetcher(session, limits=limits, allow_networks=LOOPBACK)


def _held(store: Store) -> dict[str, tuple[Any, ...]]:
    return {
        j.id: (j.origin, j.version, j.updated, j.attested, j.boundary_generation, j.endpoints)
        for j in store.jurisdictions()
    }


@pytest.mark.parametrize(("case", "make", "outcome"), HOSTILE, ids=[c[0] for c in HOSTILE])
async def test_a_hostile_upstream_changes_nothing_held_here(
    mirror: Store,
    upstream: Serve,
    fetcher: Fetcher,
    case: str,
    make: Callable[[str], dict[str, Any]],
    outcome: str,
    tmp_path: Path,
) -> None:
    change = make(mirror.registry_id)
    url = await upstream(lambda since: _page(since, [change] if since == 0 else []))
    mirror.add_mirror(url)
    before = _held(mirror)
    if outcome == "refused":
        with pytest.raises(SyncError, match=r"nothing applied|not JSON"):
            await sync_mirror(mirror, url, fetcher)
    else:
        result = await sync_mirror(mirror, url, fetcher)
        assert result.report.upserted == [] and result.report.deleted == []
        assert result.report.overruled == [change.get("id") or change["feature"]["id"]]
        (logged, *_) = mirror.conflicts()
        assert logged["via"] == url and logged["why"].startswith("refused")
    assert _held(mirror) == before, f"{case} changed what the mirror holds"
    # San Francisco City Hall is still answered by the local entry, with its own endpoint.
    answer = Resolver(mirror.jurisdictions()).resolve(*CITY_HALL).decision
    assert answer.chosen is not None and answer.chosen.jurisdiction.id == "sf"
    assert answer.chosen.jurisdiction.endpoints[0].url == "https://sf.example/open311/v2/"
    if outcome == "conflict":  # shown to the operator, as every overruled copy is
        db = str(tmp_path / "mirror.sqlite")
        shown = CliRunner().invoke(main, ["registry", "status", "--db", db])
        assert shown.exit_code == 0 and "refused" in shown.output


@pytest.mark.parametrize("via", ["library", "geoweb mirror sync"])
async def test_a_change_the_domains_own_dns_confirms_still_travels(
    mirror: Store,
    upstream: Serve,
    fetcher: Fetcher,
    city_knot: KnotServer,
    via: str,
    tmp_path: Path,
) -> None:
    """city.example's ``_open311`` record (in a real Knot) names the discovery URL its entry
    gives: the claimed attestation is believed here and the domain's entry replaces the copy
    another registry had sent. A claim the record does not confirm travels as unattested. The
    same from the command line, with --dns-nameserver."""
    update = dns.update.UpdateMessage("city.example.")
    update.replace("_open311", 60, "TXT", f'"v=open311-1" "d={CITY_URL}"')
    update.use_tsig(dns.tsig.Key(TSIG_NAME, TSIG_SECRET, TSIG_ALGORITHM))
    await asyncio.to_thread(dns.query.tcp, update, city_knot.address, port=city_knot.port)

    def claim(jurisdiction_id: str, discovery_url: str, serial: int) -> dict[str, Any]:
        feature = _feature(
            jurisdiction_id, box(20, 20, 20.5, 21), origin="domain:city.example", attested=True
        )
        feature["properties"].update(domain="city.example", discovery_url=discovery_url)
        return {**_upsert(feature), "serial": serial}

    changes = [claim("other", CITY_URL, 1), claim("unconfirmed", CITY_URL + "?x", 2)]
    url = await upstream(lambda since: _page(since, changes if since == 0 else []))
    mirror.add_mirror(url)
    settings = Settings(
        adhoc=False,  # no fallback: an answer is found only once the entry arrives
        dns_nameserver=(city_knot.address,),
        dns_port=city_knot.port,
        allow_network=LOOPBACK,
    )
    if via == "library":
        result = await sync_mirror(mirror, url, fetcher, attest=dns_attestation(settings))
        assert sorted(result.report.upserted) == ["other", "unconfirmed"]
    else:
        command = ["mirror", "sync", "--once", "--db", str(tmp_path / "mirror.sqlite")]
        command += ["--no-embedded", "--allow-network", LOOPBACK[0]]
        command += ["--dns-nameserver", city_knot.address, "--dns-port", str(city_knot.port)]
        synced = await asyncio.to_thread(CliRunner().invoke, main, command)
        assert synced.exit_code == 0, synced.output
        assert json.loads(synced.stdout)["upserted"] == 2
    held = {j.id: j for j in mirror.jurisdictions()}
    assert held["other"].origin == "domain:city.example" and held["other"].attested
    assert held["other"].boundary is not None and held["other"].boundary.bounds[2] == 20.5
    assert held["unconfirmed"].attested is False
    (logged,) = mirror.conflicts()
    assert logged["jurisdiction"] == "other" and "attested" in logged["why"]


async def test_an_endless_change_log_ends_the_sync(
    mirror: Store, upstream: Serve, fetcher: Fetcher
) -> None:
    """An upstream whose log never ends (``more`` always true, serials always growing): one run
    reads at most ``max_pages`` pages, keeps them, and the next run goes on from there."""
    asked: list[int] = []

    def endless(since: int) -> dict[str, Any]:
        asked.append(since)
        feature = _feature(f"e{since}", box(30, 30, 31, 31), origin="0000000000000002")
        return _page(since, [{**_upsert(feature), "serial": since + 1}], more=True)

    url = await upstream(endless)
    mirror.add_mirror(url)
    result = await asyncio.wait_for(sync_mirror(mirror, url, fetcher, max_pages=5), 30)
    assert not result.complete and result.pages == 5 and asked == [0, 1, 2, 3, 4]
    assert mirror.mirror(url).last_serial == 5  # type: ignore[union-attr]
    result = await sync_mirror(mirror, url, fetcher, max_pages=3)
    assert asked[-3:] == [5, 6, 7] and result.serial == 8
    assert MAX_PAGES >= 1  # the default bound of every run, documented in docs/registry.md


async def test_more_without_progress_is_refused(
    mirror: Store, upstream: Serve, fetcher: Fetcher
) -> None:
    """``more: true`` on a page that already reaches the upstream's serial would be asked for
    again for ever."""

    def stuck(since: int) -> dict[str, Any]:
        page = _page(since, [{**_upsert(_feature("s")), "serial": since + 1}])
        page["more"] = True
        return page

    url = await upstream(stuck)
    mirror.add_mirror(url)
    with pytest.raises(SyncError, match="reaches the registry's serial"):
        await sync_mirror(mirror, url, fetcher)


async def test_following_the_store_never_waits_for_a_mirror(
    tmp_path: Path, upstream: Serve, aiohttp_client: Any
) -> None:
    """A server whose upstream hangs (each page takes longer than the test) still answers an
    import made by another process within its poll."""
    hanging = asyncio.Event()

    async def never(since: int) -> dict[str, Any]:  # pragma: no cover - never answers
        await hanging.wait()
        return _page(since, [])

    url = await upstream(never)
    db = tmp_path / "serve.sqlite"
    with Store(db) as store:
        store.add_mirror(url)
        store.save([_entry("seed", box(50, 50, 51, 51))], source="test")
    settings = Settings(
        adhoc=False,  # no fallback: an answer is found only once the entry arrives
        db=str(db),
        allow_network=LOOPBACK,
        registry_poll=0.05,
        mirror_interval=0.05,
        fetch_timeout=60.0,
    )
    client = await aiohttp_client(create_app(settings))
    await asyncio.sleep(0.3)  # the mirror task is now waiting for the upstream
    with Store(db) as other_process:
        other_process.save([_entry("late", box(40, 40, 41, 41))], source="another process")
    found = False
    for _ in range(60):  # at most 3 s
        body = await (await client.get("/v1/resolve", params={"lat": 40.5, "long": 40.5})).json()
        if body["found"]:
            found = True
            break
        await asyncio.sleep(0.05)
    assert found and body["jurisdiction"]["id"] == "late"
    hanging.set()
