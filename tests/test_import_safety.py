"""An import loses nothing silently: a truncated shapefile is an error and the store is left as
it was; a feature without geometry does not replace a stored boundary unless told to."""

from __future__ import annotations

import json
from pathlib import Path

import fiona
import pytest
from click.testing import CliRunner, Result
from shapely.geometry import box, mapping

from resolver.cli.main import main
from resolver.store import Store

COUNT = 400


def _write_shapefile(path: Path) -> Path:
    schema = {"geometry": "Polygon", "properties": {"id": "str:10", "name": "str:40"}}
    with fiona.open(path, "w", driver="ESRI Shapefile", schema=schema, crs="EPSG:4326") as out:
        for i in range(COUNT):
            x, y = -100 + (i % 20) * 0.5, 30 + (i // 20) * 0.5
            out.write(
                {
                    "geometry": mapping(box(x, y, x + 0.5, y + 0.5)),
                    "properties": {"id": f"c{i:03d}", "name": f"County {i}"},
                }
            )
    return path


def _import(db: Path, file: Path, *more: str) -> Result:
    args = ["import", str(file), "--id-field", "id", "--name-field", "name", "--db", str(db)]
    return CliRunner().invoke(main, [*args, *more])


def _state(db: Path) -> tuple[int, int, int]:
    with Store(db) as store:
        entries = store.jurisdictions()
        return store.serial, len(entries), sum(j.boundary is not None for j in entries)


@pytest.fixture
def shapefile(tmp_path: Path) -> Path:
    return _write_shapefile(tmp_path / "counties.shp")


def _truncate(shp: Path, *, fix_header: bool = False) -> None:
    data = shp.read_bytes()
    cut = data[: int(len(data) * 0.6)]  # records past 60% are cut off
    if fix_header:  # the header agrees with the cut file: only the index (.shx) still tells
        cut = cut[:24] + (len(cut) // 2).to_bytes(4, "big") + cut[28:]
    shp.write_bytes(cut)


@pytest.mark.parametrize(
    ("fix_header", "said"), [(False, "its header says"), (True, "records end past")]
)
def test_a_truncated_shapefile_replaces_nothing(
    tmp_path: Path, shapefile: Path, fix_header: bool, said: str
) -> None:
    db = tmp_path / "store.sqlite"
    assert _import(db, shapefile).exit_code == 0
    before = _state(db)
    assert before == (COUNT, COUNT, COUNT)
    _truncate(shapefile, fix_header=fix_header)
    result = _import(db, shapefile, "--replace")
    assert result.exit_code == 2, result.output
    assert "truncated" in result.output and said in result.output
    assert "Traceback" not in result.output
    assert _state(db) == before  # every boundary still there, not a serial taken


def test_a_truncated_shapefile_into_an_empty_store(tmp_path: Path, shapefile: Path) -> None:
    _truncate(shapefile)
    db = tmp_path / "empty.sqlite"
    result = _import(db, shapefile)
    assert result.exit_code == 2 and "truncated" in result.output, result.output
    assert _state(db) == (0, 0, 0)


def _geojson(path: Path, features: list[tuple[str, str, object]]) -> Path:
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "geometry": g, "properties": {"id": i, "name": n}}
                    for i, n, g in features
                ],
            }
        ),
        encoding="utf-8",
    )
    return path


def test_no_geometry_replaces_a_stored_boundary_only_when_allowed(
    tmp_path: Path, shapefile: Path
) -> None:
    db = tmp_path / "store.sqlite"
    assert _import(db, shapefile).exit_code == 0
    update = _geojson(
        tmp_path / "update.geojson",
        [
            ("c000", "County 0", mapping(box(0, 0, 1, 1))),
            ("c001", "County 1", None),  # the boundary is missing from this file
            ("new", "New Town", None),  # nothing stored: nothing to lose
        ],
    )
    before = _state(db)
    refused = _import(db, update, "--replace")
    assert refused.exit_code == 2, refused.output
    assert "c001" in refused.output and "--allow-missing-geometry" in refused.output
    assert _state(db) == before
    allowed = _import(db, update, "--replace", "--allow-missing-geometry")
    assert allowed.exit_code == 0, allowed.output
    with Store(db) as store:
        held = {j.id: j for j in store.jurisdictions()}
    assert held["c001"].boundary is None and held["c000"].boundary is not None


def test_a_nul_in_a_name_is_refused_not_cut(tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite"
    named = _geojson(
        tmp_path / "nul.geojson", [("x", "Springfield\u0000Annex", mapping(box(0, 0, 1, 1)))]
    )
    result = _import(db, named)
    assert result.exit_code == 2, result.output
    assert "NUL character" in result.output
    assert _state(db) == (0, 0, 0)
