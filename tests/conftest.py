"""Shared fixtures: the real shared data, and a real SQLite store with the US counties imported
through ``geoweb import``."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import shapely
from click.testing import CliRunner

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COUNTIES = SHARED_DATA / "us-counties.geojson"
IN_CI = os.environ.get("CI") == "true"


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
    ]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the shared data folder {SHARED_DATA} is missing; it sits beside the checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def counties_db(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A real SQLite store with all 3,231 US counties, imported with ``geoweb import``."""
    from resolver.cli import main

    db = tmp_path_factory.mktemp("counties") / "counties.sqlite"
    result = CliRunner().invoke(
        main,
        ["import", str(COUNTIES), "--id-field", "geoid", "--name-field", "name", "--db", str(db)],
    )
    assert result.exit_code == 0, result.output
    return db
