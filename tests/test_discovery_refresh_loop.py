"""The background refresh inside ``geoweb serve``: the real app (``create_app`` with discovery
refresh on, loopback allow-listed) against a stand-in server for six cities, five serving their
recorded documents and one failing. Nothing here sends the app a request to make it fetch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from shapely.geometry import box

from common.models import Jurisdiction
from resolver.config import Settings
from resolver.http.app import STORE, create_app
from resolver.store import Store
from resolver.store.caches import refresh_status
from tests.open311_servers import StandIn

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

#: jurisdiction id -> discovery path on the stand-in, and a box around the city
CITIES = {
    "boston-ma": ("/boston/open311/discovery.json", (-71.19, 42.23, -70.99, 42.40)),
    "washington-dc": ("/dc/cwi/Open311/discovery.xml", (-77.12, 38.79, -76.91, 39.00)),
    "zurich-ch": ("/zurich/open311/v2/discovery.json", (8.44, 47.32, 8.63, 47.44)),
    "bloomington-in": ("/bloomington/discovery.json", (-86.60, 39.09, -86.45, 39.23)),
    "san-francisco-ca": ("/sf/discovery.xml", (-122.52, 37.70, -122.35, 37.83)),
    "broken-city": ("/hostile/error", (10.0, 50.0, 11.0, 51.0)),  # answers 500, always
}
DISCOVERY_PATHS = {path for path, _ in CITIES.values()}
DC = {"lat": "38.8951", "long": "-77.0316", "concern": "pothole"}


@pytest.fixture
def db(tmp_path: Path, city: tuple[str, StandIn]) -> Path:
    base, _state = city
    path = tmp_path / "loop.sqlite"
    jurisdiction_ids = {"washington-dc": "dc.gov", "bloomington-in": "bloomington.in.gov"}
    cities = [
        Jurisdiction(
            key,
            key,
            jurisdiction_id=jurisdiction_ids.get(key),
            discovery_url=f"{base}{discovery}",
        ).with_boundary(box(*bounds))
        for key, (discovery, bounds) in CITIES.items()
    ]
    with Store(path) as store:
        store.save(cities, source="test")
    return path


def settings(db: Path, **loop: Any) -> Settings:
    return Settings(
        db=str(db),
        discovery_refresh=True,
        allow_network=("127.0.0.0/8",),
        fetch_timeout=3.0,
        embedded=False,  # the stand-in cities only: no refresh of the real ones
        **loop,
    )


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for something the loop does on its own (a bound on the wait, not on the loop)."""
    try:
        async with asyncio.timeout(10):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def test_the_loop_fetches_on_its_own_a_bounded_number_at_a_time(
    aiohttp_client: ClientFactory, db: Path, city: tuple[str, StandIn]
) -> None:
    _base, state = city
    state.hold = asyncio.Event()  # every request at the cities waits until released
    app = create_app(
        settings(db, refresh_concurrency=2, refresh_jitter=0.01, refresh_interval=3600)
    )
    client = await aiohttp_client(app)
    await until(lambda: state.in_flight >= 2, "two cities being asked at once")
    await asyncio.sleep(0.2)  # time for a third request to arrive, were the bound not kept
    assert state.in_flight == 2 and state.max_in_flight == 2
    state.hold.set()
    store = client.app[STORE]
    await until(
        lambda: all(refresh_status(store, key) is not None for key in CITIES),
        "every jurisdiction refreshed",
    )
    assert state.max_in_flight == 2
    # each city asked once in this round (the app itself was sent no request)
    assert {path: state.hits[path] for path in DISCOVERY_PATHS} == dict.fromkeys(DISCOVERY_PATHS, 1)
    statuses = {key: refresh_status(store, key) for key in CITIES}
    assert {key for key, s in statuses.items() if s and s["ok"]} == {
        "washington-dc",
        "bloomington-in",
        "san-francisco-ca",
    }


async def test_the_loop_spreads_its_fetches_over_the_jitter(
    aiohttp_client: ClientFactory, db: Path, city: tuple[str, StandIn]
) -> None:
    _base, state = city
    jitter = 0.5
    app = create_app(
        settings(db, refresh_concurrency=8, refresh_jitter=jitter, refresh_interval=3600)
    )
    await aiohttp_client(app)

    def arrivals() -> list[float]:
        return [when for path, when in state.arrivals if path in DISCOVERY_PATHS]

    await until(lambda: len(arrivals()) == len(CITIES), "every city asked")
    times = arrivals()
    # Each city is asked after its own random delay of up to `jitter`; with 8 allowed at once,
    # nothing else holds them back. Six delays within a tenth of the window have a probability
    # below 1e-4; without the jitter, all six arrive within milliseconds.
    assert max(times) - min(times) > jitter / 10


async def test_the_loop_records_failures_and_serves_stale_facts_when_a_city_goes_down(
    aiohttp_client: ClientFactory, db: Path, city: tuple[str, StandIn]
) -> None:
    base, state = city
    state.max_age = 0  # every fact expires at once, so every round asks the cities again
    app = create_app(
        settings(db, refresh_concurrency=8, refresh_jitter=0.01, refresh_interval=0.05)
    )
    client = await aiohttp_client(app)
    store = client.app[STORE]

    def status(key: str) -> dict[str, Any] | None:
        return refresh_status(store, key)

    await until(lambda: (s := status("washington-dc")) is not None and s["ok"], "DC refreshed")
    rounds = state.hits["/dc/cwi/Open311/discovery.xml"]
    await until(lambda: state.hits["/dc/cwi/Open311/discovery.xml"] > rounds, "another round")

    broken = await (await client.get("/v1/jurisdictions/broken-city")).json()
    assert broken["refresh"]["ok"] is False and broken["refresh"]["attempted_at"]
    assert broken["refresh"]["reason"].startswith("HTTP 500")
    assert broken["refresh"]["url"] == f"{base}/hostile/error"

    before = await (await client.get("/v1/resolve", params=DC)).json()
    assert before["concern"]["status"] == "verified"

    state.down = True  # DC (and every city but the broken one) now answers 503
    await until(lambda: (s := status("washington-dc")) is not None and not s["ok"], "DC failing")
    shown = await (await client.get("/v1/jurisdictions/washington-dc")).json()
    refresh = shown["refresh"]
    assert "HTTP 503" in refresh["reason"] and "stale" in refresh["reason"]
    assert refresh["consecutive_failures"] >= 1
    assert refresh["last_success_at"] is not None
    assert refresh["attempted_at"] >= refresh["last_success_at"]

    after = await (await client.get("/v1/resolve", params=DC)).json()
    assert after["endpoint"] == before["endpoint"]
    assert after["concern"] == before["concern"]  # the pothole service, from the stored copy
    services = next(p for p in after["provenance"] if p["fact"] == "services")
    assert "stale copy served" in services["note"] and "503" in services["note"]
