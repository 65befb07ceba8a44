"""Shared fixtures: the real shared data, and a real SQLite store with the US counties imported
through ``geoweb import``."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import shapely
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

# The PostgreSQL server, and the fixture that runs a store test on both backends (pg_server.py).
from dns_server import KnotServer, require_knotd
from pg_server import pg_cluster, pg_database, pg_url, postgres_version, store_url  # noqa: F401

from tests.open311_servers import StandIn, stand_in_app

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COUNTIES = SHARED_DATA / "us-counties.geojson"
IN_CI = os.environ.get("CI") == "true"


def pytest_configure(config: pytest.Config) -> None:
    """Per-user caches (index snapshots of stores that are not files) go to a folder of this run,
    for the servers the tests start too, never to the user's own cache."""
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="geoweb-test-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    import aiohttp
    import dns.version
    import fiona
    import sqlalchemy

    return [
        f"GEOS {shapely.geos_version_string}, shapely {shapely.__version__}, "
        f"GDAL {fiona.__gdal_version__} (fiona {fiona.__version__})",
        f"SQLite {sqlite3.sqlite_version}, SQLAlchemy {sqlalchemy.__version__}, "
        f"dnspython {dns.version.version}, aiohttp {aiohttp.__version__}",
        f"shared data: {SHARED_DATA}",
        f"store tests on PostgreSQL: {postgres_version()}",
    ]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the shared data folder {SHARED_DATA} is missing; it sits beside the checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def counties_db(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A real SQLite store with all 3,231 US counties, imported with ``geoweb import``."""
    from resolver.cli.main import main

    db = tmp_path_factory.mktemp("counties") / "counties.sqlite"
    result = CliRunner().invoke(
        main,
        ["import", str(COUNTIES), "--id-field", "geoid", "--name-field", "name", "--db", str(db)],
    )
    assert result.exit_code == 0, result.output
    return db


#: A test domain whose zone a real Knot serves and lets tests change by TSIG-signed UPDATE: where
#: registration tests publish their challenge records.
CITY_DOMAIN = "city.example"
CITY_ZONE = f"""$ORIGIN {CITY_DOMAIN}.
$TTL 60
@   SOA ns.{CITY_DOMAIN}. hostmaster.{CITY_DOMAIN}. 1 3600 600 86400 1
@   NS  ns.{CITY_DOMAIN}.
ns  A   127.0.0.1
"""


@pytest.fixture(scope="session")
def city_knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    """Knot DNS on loopback, authoritative for ``city.example``, taking signed updates."""
    require_knotd()
    workdir = tmp_path_factory.mktemp("knot-city")
    zone_file = workdir / "city.example.zone"
    zone_file.write_text(CITY_ZONE, encoding="utf-8")
    server = KnotServer(workdir / "server", CITY_DOMAIN, zone_file)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def city(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> tuple[str, StandIn]:
    """Stand-ins for the cities' Open311 servers (tests/open311_servers.py) on a loopback port;
    yields their base URL and the state that counts and steers their requests."""
    state = StandIn()
    server = await aiohttp_server(stand_in_app(state))
    state.base = str(server.make_url("")).rstrip("/")
    return state.base, state
