"""Reading boundary files: formats, CRSs, file-level errors, repairs, and the real shared data.

Every file here is written with fiona into ``tmp_path``, or is the real shared data beside the
checkout; nothing is mocked.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import fiona
import numpy as np
import pytest
import shapely
from fiona.transform import transform_geom
from shapely.geometry import MultiPolygon, Polygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry

from boundaries.reader import BoundaryReport, count_features, read_boundaries
from boundaries.repair import repair_polygonal, split_antimeridian
from common.errors import BoundaryFileError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: The shared data always sits beside the checkout: without it these tests fail (conftest).
needs_shared_data = pytest.mark.usefixtures("shared_data")

PROPERTIES = {"geoid": "str", "name": "str"}


def write(
    path: Path,
    features: Iterable[tuple[dict[str, Any], BaseGeometry | None]],
    *,
    driver: str = "GeoJSON",
    crs: str | None = "EPSG:4326",
    geometry_type: str = "Polygon",
    properties: dict[str, str] | None = None,
    layer: str | None = None,
) -> Path:
    """Write a real file with fiona; ``crs=None`` writes no CRS at all."""
    schema = {"geometry": geometry_type, "properties": properties or PROPERTIES}
    options: dict[str, Any] = {"driver": driver, "schema": schema}
    if crs is not None:
        options["crs"] = crs
    if layer is not None:
        options["layer"] = layer
    with fiona.open(path, "w", **options) as sink:
        for props, geometry in features:
            sink.write({"properties": props, "geometry": mapping(geometry) if geometry else None})
    return path


def squares() -> list[tuple[dict[str, Any], BaseGeometry | None]]:
    return [
        ({"geoid": "06001", "name": "Alpha"}, box(-122.0, 37.0, -121.0, 38.0)),
        ({"geoid": "06003", "name": "Beta"}, box(-121.0, 37.0, -120.0, 38.0)),
    ]


def reason(excinfo: pytest.ExceptionInfo[BoundaryFileError]) -> str:
    return str(excinfo.value.fields["reason"])


# --- formats and CRSs ---------------------------------------------------------------------------


def test_geojson(tmp_path: Path) -> None:
    path = write(tmp_path / "two.geojson", squares())
    seen: list[int] = []
    report = read_boundaries(path, id_field="geoid", name_field="name", progress=seen.append)
    assert isinstance(report, BoundaryReport)
    assert report.path == str(path)
    assert report.source_crs == "EPSG:4326"
    assert [f.id for f in report.features] == ["06001", "06003"]  # leading zeros kept
    assert [f.name for f in report.features] == ["Alpha", "Beta"]
    assert report.features[0].geometry is not None
    assert report.features[0].geometry.equals(box(-122.0, 37.0, -121.0, 38.0))
    assert report.features[0].properties == {"geoid": "06001", "name": "Alpha"}
    assert all(f.notes == () for f in report.features)
    assert report.repaired == [] and report.without_geometry == []
    assert seen == [1, 1]
    assert count_features(path) == 2


def test_shapefile_in_state_plane_feet_comes_back_in_lon_lat(tmp_path: Path) -> None:
    # A square around Oakland City Hall, written in California zone III (US survey feet).
    lon_lat = Polygon([(-122.30, 37.78), (-122.24, 37.78), (-122.24, 37.83), (-122.30, 37.83)])
    in_feet = shape(transform_geom("EPSG:4326", "EPSG:2227", mapping(lon_lat)))
    assert 5.9e6 < in_feet.bounds[0] < 6.1e6  # really feet, really State Plane
    path = write(
        tmp_path / "oakland.shp",
        [({"fips": 6001, "name": "Oakland"}, in_feet)],
        driver="ESRI Shapefile",
        crs="EPSG:2227",
        properties={"fips": "int", "name": "str"},
    )
    assert path.with_suffix(".prj").exists()
    report = read_boundaries(path, id_field="fips", name_field="name")
    assert report.source_crs == "EPSG:2227"
    (feature,) = report.features
    assert feature.id == "6001"  # a numeric field: as written in the file
    assert feature.geometry is not None
    got = shapely.get_coordinates(shapely.normalize(feature.geometry))
    want = shapely.get_coordinates(shapely.normalize(lon_lat))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_geopackage_with_layers(tmp_path: Path) -> None:
    path = tmp_path / "areas.gpkg"
    write(path, squares(), driver="GPKG", layer="counties")
    write(path, squares()[:1], driver="GPKG", layer="cities")
    report = read_boundaries(path, id_field="geoid", name_field="name", layer="counties")
    assert [f.id for f in report.features] == ["06001", "06003"]
    assert count_features(path, layer="cities") == 1
    with pytest.raises(BoundaryFileError) as excinfo:
        read_boundaries(path, id_field="geoid", name_field="name")
    assert "2 layers" in reason(excinfo) and "counties" in reason(excinfo)
    with pytest.raises(BoundaryFileError) as excinfo:
        read_boundaries(path, id_field="geoid", name_field="name", layer="states")
    assert "no layer 'states'" in reason(excinfo)


def test_shapefile_without_prj_needs_a_crs(tmp_path: Path) -> None:
    path = write(tmp_path / "bare.shp", squares(), driver="ESRI Shapefile")
    path.with_suffix(".prj").unlink()
    with pytest.raises(BoundaryFileError) as excinfo:
        read_boundaries(path, id_field="geoid", name_field="name")
    assert "pass a CRS explicitly" in reason(excinfo) and "--crs" in reason(excinfo)
    report = read_boundaries(path, id_field="geoid", name_field="name", assume_crs="EPSG:4326")
    assert report.source_crs == "EPSG:4326"
    assert [f.id for f in report.features] == ["06001", "06003"]


def test_assumed_crs_must_not_contradict_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "two.geojson", squares())
    with pytest.raises(BoundaryFileError) as excinfo:
        read_boundaries(path, id_field="geoid", name_field="name", assume_crs="EPSG:2227")
    assert "declares the CRS EPSG:4326" in reason(excinfo)
    assert read_boundaries(path, id_field="geoid", name_field="name", assume_crs="OGC:CRS84")
    with pytest.raises(BoundaryFileError) as excinfo:
        read_boundaries(path, id_field="geoid", name_field="name", assume_crs="EPSG:nonsense")
    assert "unknown CRS" in reason(excinfo)


def test_coordinates_that_are_not_degrees_mean_a_wrong_crs(tmp_path: Path) -> None:
    feet = box(6_050_000.0, 2_110_000.0, 6_060_000.0, 2_120_000.0)
    path = write(tmp_path / "feet.geojson", [({"geoid": "1", "name": "x"}, feet)])
    with pytest.raises(BoundaryFileError) as excinfo:
        read_boundaries(path, id_field="geoid", name_field="name")
    assert "not on the globe" in reason(excinfo) and "feature #1" in reason(excinfo)


# --- file-level errors --------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BoundaryFileError) as excinfo:
        read_boundaries(tmp_path / "nowhere.geojson", id_field="geoid", name_field="name")
    assert reason(excinfo) == "the file does not exist"
    assert excinfo.value.status == 400
    with pytest.raises(BoundaryFileError):
        count_features(tmp_path / "nowhere.geojson")


def test_csv_is_not_a_boundary_file(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("geoid,name\n06001,Alameda\n")
    with pytest.raises(BoundaryFileError) as excinfo:
        read_boundaries(path, id_field="geoid", name_field="name")
    assert "not a boundary file" in reason(excinfo)


def test_text_is_not_a_boundary_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("Alameda County, the one with Oakland in it.\n")
    with pytest.raises(BoundaryFileError) as excinfo:
        read_boundaries(path, id_field="geoid", name_field="name")
    assert "not a boundary file" in reason(excinfo)


def test_points_only_is_not_a_boundary_file(tmp_path: Path) -> None:
    points = [
        ({"geoid": "1", "name": "City Hall"}, shapely.Point(-122.27, 37.80)),
        ({"geoid": "2", "name": "Lake Merritt"}, shapely.Point(-122.26, 37.80)),
    ]
    path = write(tmp_path / "points.geojson", points, geometry_type="Point")
    with pytest.raises(BoundaryFileError) as excinfo:
        read_boundaries(path, id_field="geoid", name_field="name")
    assert reason(excinfo) == "not a boundary file: no polygon features (found Point x2)"


@pytest.mark.parametrize("role", ["id", "name"])
def test_missing_field_lists_the_fields(tmp_path: Path, role: str) -> None:
    path = write(tmp_path / "two.geojson", squares())
    with pytest.raises(BoundaryFileError) as excinfo:
        read_boundaries(
            path,
            id_field="GEOID20" if role == "id" else "geoid",
            name_field="GEOID20" if role == "name" else "name",
        )
    assert reason(excinfo) == f"no {role} field 'GEOID20'; the fields are: geoid, name"


def test_repeated_ids_are_named_with_their_feature_numbers(tmp_path: Path) -> None:
    features = [*squares(), ({"geoid": "06001", "name": "Again"}, box(0, 0, 1, 1))]
    path = write(tmp_path / "twice.geojson", features)
    with pytest.raises(BoundaryFileError) as excinfo:
        read_boundaries(path, id_field="geoid", name_field="name")
    assert reason(excinfo) == "1 id(s) are repeated: '06001' in features #1, #3"


@pytest.mark.parametrize("empty", [None, "", "  "])
def test_empty_id(tmp_path: Path, empty: str | None) -> None:
    features = [*squares(), ({"geoid": empty, "name": "Nobody"}, box(0, 0, 1, 1))]
    path = write(tmp_path / "empty.geojson", features)
    with pytest.raises(BoundaryFileError) as excinfo:
        read_boundaries(path, id_field="geoid", name_field="name")
    assert reason(excinfo) == "1 feature(s) have an empty id: #3 (Nobody)"


# --- features that are kept with notes ----------------------------------------------------------


def test_unusable_geometries_are_kept_with_a_note(tmp_path: Path) -> None:
    features: list[tuple[dict[str, Any], BaseGeometry | None]] = [
        ({"geoid": "1", "name": "Good"}, box(0, 0, 1, 1)),
        ({"geoid": "2", "name": "Nothing"}, None),
        ({"geoid": "3", "name": "Road"}, shapely.LineString([(0, 0), (1, 1)])),
        ({"geoid": "4", "name": ""}, box(2, 2, 3, 3)),
    ]
    path = write(tmp_path / "mixed.geojson", features, geometry_type="Unknown")
    report = read_boundaries(path, id_field="geoid", name_field="name")
    assert [f.id for f in report.features] == ["1", "2", "3", "4"]
    assert [f.id for f in report.without_geometry] == ["2", "3"]
    assert report.features[1].notes == ("no geometry",)
    assert report.features[2].notes == ("not a polygon: LineString",)
    assert report.features[3].name == "4"
    assert report.features[3].notes == ("no name in 'name'; the id is used",)


def test_bow_tie_is_repaired_and_reported(tmp_path: Path) -> None:
    bow_tie = Polygon([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)])
    path = write(tmp_path / "bow.geojson", [({"geoid": "1", "name": "Bow"}, bow_tie)])
    report = read_boundaries(path, id_field="geoid", name_field="name")
    (feature,) = report.repaired
    assert feature.geometry is not None and feature.geometry.is_valid
    assert feature.geometry.area == pytest.approx(2.0)
    assert feature.notes == (
        "Self-intersection[1 1]: repaired with make_valid (structure), area 2 "
        "sq. degrees (the input's rings have no net area: 0)",
    )


def test_antimeridian_jump_in_a_file_is_split(tmp_path: Path) -> None:
    jump = Polygon([(179.5, -16.0), (-179.5, -16.0), (-179.5, -17.0), (179.5, -17.0)])
    path = write(tmp_path / "fiji.geojson", [({"geoid": "242", "name": "Fiji-like"}, jump)])
    report = read_boundaries(path, id_field="geoid", name_field="name")
    (feature,) = report.repaired
    assert isinstance(feature.geometry, MultiPolygon)
    assert sorted(p.bounds for p in feature.geometry.geoms) == [
        (-180.0, -17.0, -179.5, -16.0),
        (179.5, -17.0, 180.0, -16.0),
    ]
    assert feature.notes == (
        "crossed the antimeridian; repaired by splitting at ±180 into 2 part(s)",
    )


def test_projected_polygon_over_the_antimeridian_is_split(tmp_path: Path) -> None:
    # Continuous in Alaska Albers (EPSG:3338), a jump once in lon/lat: the western Aleutians.
    # (NAD83 <-> WGS84 round trips agree to ~1e-6 degrees, hence the tolerance.)
    lon_lat = Polygon([(178.0, 51.5), (182.0, 51.5), (182.0, 52.5), (178.0, 52.5)])
    in_albers = shape(transform_geom("EPSG:4326", "EPSG:3338", mapping(lon_lat)))
    path = write(
        tmp_path / "aleutians.gpkg",
        [({"geoid": "02016", "name": "Aleutians West"}, shapely.segmentize(in_albers, 5000.0))],
        driver="GPKG",
        crs="EPSG:3338",
    )
    report = read_boundaries(path, id_field="geoid", name_field="name")
    (feature,) = report.repaired
    assert isinstance(feature.geometry, MultiPolygon) and feature.geometry.is_valid
    west, east = sorted(feature.geometry.geoms, key=lambda p: p.bounds[0])
    assert west.bounds[0] == -180.0 and west.bounds[2] == pytest.approx(-178.0, abs=1e-5)
    assert east.bounds[2] == 180.0 and east.bounds[0] == pytest.approx(178.0, abs=1e-5)
    assert feature.geometry.covers(shapely.Point(-178.5, 52.0))
    assert feature.geometry.covers(shapely.Point(179.0, 52.0))
    assert not feature.geometry.covers(shapely.Point(0.0, 52.0))


# --- repair and split on their own --------------------------------------------------------------


def test_valid_input_needs_no_repair() -> None:
    square = box(0, 0, 1, 1)
    assert repair_polygonal(square) == (square, [])
    assert repair_polygonal(None) == (None, ["no geometry"])
    assert repair_polygonal(shapely.Point(0, 0)) == (None, ["not a polygon: Point"])


def test_collection_keeps_only_its_polygons() -> None:
    collection = shapely.GeometryCollection(
        [box(0, 0, 1, 1), shapely.LineString([(5, 5), (6, 6)]), shapely.Point(9, 9)]
    )
    geometry, notes = repair_polygonal(collection)
    assert geometry is not None and geometry.equals(box(0, 0, 1, 1))
    assert notes == ["repaired: dropped non-polygonal parts (LineString, Point)"]


def test_overlapping_parts_keep_their_area() -> None:
    # make_valid "structure" keeps the union (7); "linework" would XOR the overlap away (6).
    overlapping = MultiPolygon([box(0, 0, 2, 2), box(1, 1, 3, 3)])
    geometry, notes = repair_polygonal(overlapping)
    assert geometry is not None and geometry.is_valid
    assert geometry.area == pytest.approx(7.0)
    (note,) = notes
    assert note.startswith("Self-intersection[")
    assert note.endswith("]: repaired with make_valid (structure), area kept 87.50%")


def test_fiji_like_polygon_is_split_at_180() -> None:
    fiji = Polygon(
        [(178.5, -17.5), (-179.8, -17.6), (-179.9, -16.2), (179.2, -16.1)],
        [[(179.6, -17.0), (-179.95, -17.0), (-179.95, -16.8), (179.6, -16.8)]],
    )
    split = split_antimeridian(fiji)
    assert isinstance(split, MultiPolygon) and split.is_valid
    east, west = sorted(split.geoms, key=lambda p: -p.bounds[0])
    assert east.bounds[2] == 180.0 and west.bounds[0] == -180.0
    assert len(east.interiors) == 0 and len(west.interiors) == 0  # the hole is cut open too
    assert not split.covers(shapely.Point(0.0, -16.8))  # no band around the world
    assert split.covers(shapely.Point(179.0, -17.0)) and split.covers(shapely.Point(-179.9, -17.2))
    assert not split.covers(shapely.Point(179.8, -16.9))  # inside the hole
    assert split.area == pytest.approx(shape_area_unwrapped(fiji))


def test_aleutian_like_polygon_is_split_at_180() -> None:
    # An island chain stored as one polygon running west from Alaska over the antimeridian.
    aleutian = Polygon(
        [(-176.0, 51.5), (-176.0, 52.5), (178.0, 52.2), (174.0, 52.9), (174.0, 52.0)]
    )
    split = split_antimeridian(aleutian)
    assert isinstance(split, MultiPolygon) and split.is_valid
    west, east = sorted(split.geoms, key=lambda p: p.bounds[0])
    assert west.bounds[0] == -180.0 and west.bounds[2] == -176.0
    assert east.bounds[0] == 174.0 and east.bounds[2] == 180.0
    assert split.covers(shapely.Point(-178.0, 52.0)) and split.covers(shapely.Point(176.0, 52.3))
    assert not split.covers(shapely.Point(0.0, 52.3))
    assert split.area == pytest.approx(shape_area_unwrapped(aleutian))


def test_geometries_that_do_not_cross_are_returned_unchanged() -> None:
    square = box(170.0, 10.0, 180.0, 20.0)  # touches the antimeridian, does not cross it
    assert split_antimeridian(square) is square
    line = shapely.LineString([(179.0, 0.0), (-179.0, 0.0)])
    assert split_antimeridian(line) is line


def test_collection_across_the_antimeridian_keeps_its_other_members() -> None:
    jump = Polygon([(179.5, -16.0), (-179.5, -16.0), (-179.5, -17.0), (179.5, -17.0)])
    split = split_antimeridian(shapely.GeometryCollection([jump, shapely.Point(0.0, 0.0)]))
    assert split.geom_type == "GeometryCollection"
    geometry, notes = repair_polygonal(split)
    assert isinstance(geometry, MultiPolygon) and len(geometry.geoms) == 2
    assert notes == ["repaired: dropped non-polygonal parts (Point)"]


def shape_area_unwrapped(polygon: Polygon) -> float:
    """The polygon's area with its western longitudes moved past 180 (no jump left)."""
    moved = shapely.transform(polygon, lambda c: np.where(c < -90.0, c + 360.0, c))
    return float(moved.area)


# --- the real shared data -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def counties() -> BoundaryReport:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the shared data folder {SHARED_DATA} is missing")
    return read_boundaries(SHARED_DATA / "us-counties.geojson", id_field="geoid", name_field="name")


@needs_shared_data
def test_real_counties(counties: BoundaryReport) -> None:
    assert len(counties.features) == 3231
    assert counties.source_crs == "EPSG:4326"
    by_id = {f.id: f for f in counties.features}
    assert len(by_id) == 3231
    repaired = {f.id for f in counties.repaired}
    assert len(repaired) == 22
    assert {"53007", "06099", "02105", "53037"} <= repaired
    for feature_id in ("53007", "06099", "02105"):
        feature = by_id[feature_id]
        assert feature.geometry is not None and feature.geometry.is_valid
        (note,) = feature.notes
        assert "Self-intersection" in note and "repaired with make_valid" in note
        assert "area kept 100.0" in note
    falls_church = by_id["51610"]
    assert falls_church.name == "Falls Church"
    assert falls_church.geometry is None and falls_church.notes == ("no geometry",)
    assert [f.id for f in counties.without_geometry] == ["51610"]
    geometries = [f.geometry for f in counties.features if f.geometry is not None]
    assert all(g.geom_type in ("Polygon", "MultiPolygon") for g in geometries)
    assert shapely.is_valid(np.array(geometries, dtype=object)).all()


@needs_shared_data
def test_real_world_countries() -> None:
    report = read_boundaries(
        SHARED_DATA / "world-countries-50m.geojson", id_field="name", name_field="name"
    )
    assert len(report.features) == 241
    by_id = {f.id: f for f in report.features}
    assert {f.id for f in report.repaired} == {"Russia", "Fiji", "Antarctica"}
    for name in ("Russia", "Fiji", "Antarctica"):
        geometry = by_id[name].geometry
        assert geometry is not None and geometry.is_valid
        assert "crossed the antimeridian" in by_id[name].notes[0]
    russia, fiji, antarctica = (by_id[n].geometry for n in ("Russia", "Fiji", "Antarctica"))
    assert russia is not None and fiji is not None and antarctica is not None
    # Chukotka on both sides of the antimeridian; no band across the Atlantic at its latitude.
    assert russia.covers(shapely.Point(-175.0, 66.5)) and russia.covers(shapely.Point(175.0, 66.5))
    assert not russia.covers(shapely.Point(-40.0, 69.0))
    assert fiji.covers(shapely.Point(178.0, -17.8)) and fiji.covers(shapely.Point(-179.92, -16.82))
    assert antarctica.covers(shapely.Point(0.0, -80.0)) and not antarctica.covers(
        shapely.Point(0.0, -60.0)
    )
    for feature in report.features:
        if feature.geometry is None:
            continue
        for ring in shapely.get_rings(feature.geometry):
            steps = np.abs(np.diff(shapely.get_coordinates(ring)[:, 0]))
            assert (steps <= 180.0).all(), feature.id


@needs_shared_data
def test_real_world_countries_without_iso_codes_are_refused() -> None:
    with pytest.raises(BoundaryFileError) as excinfo:
        read_boundaries(
            SHARED_DATA / "world-countries-50m.geojson", id_field="iso_n3", name_field="name"
        )
    assert "5 feature(s) have an empty id" in reason(excinfo) and "Kosovo" in reason(excinfo)
