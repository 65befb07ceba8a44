"""The boundary index: which positions cover a point (borders included), checked against shapely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from boundaries.index import DEFAULT_MAX_VERTICES, BoundaryIndex
from boundaries.reader import read_boundaries
from boundaries.repair import split_antimeridian

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# A densified square (4,000 vertices) and a circle (4,096 vertices), cut into many pieces below.
LARGE_SQUARE = shapely.segmentize(box(40.0, 0.0, 50.0, 10.0), 0.01)
CIRCLE = shapely.Point(60.0, 5.0).buffer(4.0, quad_segs=1024)
CIRCLE_VERTEX = CIRCLE.exterior.coords[100]
SQUARE_VERTEX = LARGE_SQUARE.exterior.coords[1234]

GEOMETRIES: list[BaseGeometry | None] = [
    box(0.0, 0.0, 1.0, 1.0),  # 0: four unit squares in a 2x2 grid
    box(1.0, 0.0, 2.0, 1.0),  # 1
    box(0.0, 1.0, 1.0, 2.0),  # 2
    box(1.0, 1.0, 2.0, 2.0),  # 3
    Polygon(  # 4: a square with a square hole
        [(10, 0), (14, 0), (14, 4), (10, 4)], [[(11, 1), (13, 1), (13, 3), (11, 3)]]
    ),
    split_antimeridian(  # 5: an island across the antimeridian, stored as a jump
        Polygon([(179.0, -17.0), (-179.0, -17.0), (-179.0, -16.0), (179.0, -16.0)])
    ),
    box(20.0, 0.0, 30.0, 10.0),  # 6: a state
    box(21.0, 1.0, 25.0, 5.0),  # 7: a county in the state
    box(22.0, 2.0, 23.0, 3.0),  # 8: a city in the county
    None,  # 9: a jurisdiction without a boundary
    LARGE_SQUARE,  # 10
    CIRCLE,  # 11
    Polygon(),  # 12: empty
]

TABLE: list[tuple[str, float, float, list[int]]] = [
    # inside one square
    ("inside", 0.5, 0.5, [0]),
    # point on the border between two squares
    ("shared-border", 0.5, 1.0, [0, 1]),
    # on a shared vertex of four squares
    ("shared-vertex", 1.0, 1.0, [0, 1, 2, 3]),
    # on the outer corner of one square
    ("outer-corner", 0.0, 0.0, [0]),
    # on the outer edge of one square
    ("outer-edge", 0.0, 0.5, [0]),
    # just outside a square: the border is exact, not fuzzy
    ("just-outside", 0.5, 2.000001, []),
    # inside a hole
    ("in-hole", 2.0, 12.0, []),
    # on the rim of a hole: the rim belongs to the polygon
    ("hole-rim", 2.0, 11.0, [4]),
    # in the ring around a hole
    ("around-hole", 0.5, 10.5, [4]),
    # outside everything
    ("outside", 50.0, 100.0, []),
    # across the antimeridian (east side)
    ("antimeridian-east", -16.5, 179.5, [5]),
    # across the antimeridian (west side)
    ("antimeridian-west", -16.5, -179.5, [5]),
    # on the antimeridian, written as +180
    ("antimeridian-plus-180", -16.5, 180.0, [5]),
    # on the antimeridian, written as -180
    ("antimeridian-minus-180", -16.5, -180.0, [5]),
    # on the antimeridian north of the island
    ("antimeridian-outside", -15.5, 180.0, []),
    # overlapping jurisdictions: city inside county inside state
    ("city-county-state", 2.5, 22.5, [6, 7, 8]),
    # on the city's border: still city, county and state
    ("city-border", 2.0, 22.5, [6, 7, 8]),
    # in the county and state, outside the city
    ("county-state", 4.0, 24.0, [6, 7]),
    # in the state only
    ("state-only", 9.0, 29.0, [6]),
    # on the outer boundary of a large subdivided polygon, between two vertices
    ("large-boundary-between-vertices", 0.0, 45.005, [10]),
    # on the outer boundary of a large subdivided polygon, at one of its vertices
    ("large-boundary-vertex", SQUARE_VERTEX[1], SQUARE_VERTEX[0], [10]),
    # on the outer boundary of a large subdivided polygon, where the first cut meets it
    ("large-boundary-at-cut", 0.0, 45.0, [10]),
    # on an internal cut line of a subdivided polygon
    ("internal-cut-line", 7.5, 45.0, [10]),
    # where two internal cut lines cross
    ("internal-cut-crossing", 5.0, 45.0, [10]),
    # on a vertex of a subdivided circle
    ("circle-vertex", CIRCLE_VERTEX[1], CIRCLE_VERTEX[0], [11]),
    # inside a subdivided circle, next to its rim
    ("circle-inside-rim", 5.3, 63.98, [11]),
    # in a subdivided circle's bounding box, outside the circle
    ("circle-bbox-corner", 1.2, 56.2, []),
]


CASES = [pytest.param(lat, long, expected, id=name) for name, lat, long, expected in TABLE]


@pytest.fixture(scope="module")
def index() -> BoundaryIndex:
    return BoundaryIndex(GEOMETRIES, max_vertices=16)


@pytest.mark.parametrize(("lat", "long", "expected"), CASES)
def test_covering(index: BoundaryIndex, lat: float, long: float, expected: list[int]) -> None:
    found = index.covering(lat, long)
    assert found.dtype.kind == "i"
    assert found.tolist() == expected


def test_covering_many_on_the_table(index: BoundaryIndex) -> None:
    lats = [lat for _, lat, _, _ in TABLE]
    longs = [long for _, _, long, _ in TABLE]
    points, positions = index.covering_many(lats, longs)
    expected = [(i, p) for i, (*_, positions_) in enumerate(TABLE) for p in positions_]
    assert list(zip(points.tolist(), positions.tolist(), strict=True)) == expected


def test_subdivision_does_not_change_answers(index: BoundaryIndex) -> None:
    whole = BoundaryIndex(GEOMETRIES, max_vertices=10**9)
    assert whole.pieces == 12  # one piece per polygon part; None and empty are skipped
    assert index.pieces > 100
    for _, lat, long, _ in TABLE:
        assert index.covering(lat, long).tolist() == whole.covering(lat, long).tolist()


def test_size_and_empty_index(index: BoundaryIndex) -> None:
    assert len(index) == 11  # 13 positions, one None, one empty
    empty = BoundaryIndex([None])
    assert len(empty) == 0 and empty.pieces == 0
    assert empty.covering(0.0, 0.0).tolist() == []
    points, positions = empty.covering_many([0.0, 1.0], [0.0, 1.0])
    assert points.tolist() == [] and positions.tolist() == []
    with pytest.raises(ValueError, match="equal length"):
        index.covering_many([0.0, 1.0], [0.0])


# --- agreement with shapely on the real shared data ---------------------------------------------


def load(name: str, id_field: str) -> list[BaseGeometry | None]:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the shared data folder {SHARED_DATA} is missing")
    report = read_boundaries(SHARED_DATA / name, id_field=id_field, name_field="name")
    return [f.geometry for f in report.features]


@pytest.fixture(scope="module")
def counties() -> list[BaseGeometry | None]:
    return load("us-counties.geojson", "geoid")


@pytest.fixture(scope="module")
def countries() -> list[BaseGeometry | None]:
    return load("world-countries-50m.geojson", "name")


def covers_each(
    geometries: list[BaseGeometry | None], lats: np.ndarray, longs: np.ndarray
) -> set[tuple[int, int]]:
    """(point, position) pairs by ``shapely.covers`` on each whole geometry, no index involved."""
    points = shapely.points(longs, lats)
    pairs: set[tuple[int, int]] = set()
    for position, geometry in enumerate(geometries):
        if geometry is None:
            continue
        xmin, ymin, xmax, ymax = geometry.bounds
        near = np.flatnonzero((longs >= xmin) & (longs <= xmax) & (lats >= ymin) & (lats <= ymax))
        inside = near[shapely.covers(geometry, points[near])]
        pairs.update((int(i), position) for i in inside)
    return pairs


def random_points(box_: tuple[float, float, float, float], n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20240311)
    xmin, ymin, xmax, ymax = box_
    return rng.uniform(ymin, ymax, n), rng.uniform(xmin, xmax, n)


@pytest.mark.parametrize("max_vertices", [DEFAULT_MAX_VERTICES, 16])
def test_counties_agree_with_shapely(
    counties: list[BaseGeometry | None], max_vertices: int
) -> None:
    index = BoundaryIndex(counties, max_vertices=max_vertices)
    lats, longs = random_points((-125.0, 24.0, -66.0, 50.0), 20_000)
    points, positions = index.covering_many(lats, longs)
    pairs = list(zip(points.tolist(), positions.tolist(), strict=True))
    assert pairs == sorted(set(pairs))  # sorted by point, then position; each pair once
    expected = covers_each(counties, lats, longs)
    assert len(expected) > 10_000  # most of the box is land
    assert set(pairs) == expected
    for i in range(0, 20_000, 40):  # covering() says the same, point by point
        assert index.covering(lats[i], longs[i]).tolist() == [p for k, p in pairs if k == i]


def test_countries_agree_with_shapely(countries: list[BaseGeometry | None]) -> None:
    index = BoundaryIndex(countries)
    assert index.pieces > len(index) * 5  # coastlines were cut into pieces
    lats, longs = random_points((-180.0, -90.0, 180.0, 90.0), 20_000)
    points, positions = index.covering_many(lats, longs)
    assert set(zip(points.tolist(), positions.tolist(), strict=True)) == covers_each(
        countries, lats, longs
    )


@pytest.mark.parametrize("data", ["counties", "countries"])
def test_every_vertex_is_covered_by_its_own_boundary(
    request: pytest.FixtureRequest, data: str
) -> None:
    # Points on the original boundary stay covered after cutting (shared vertices by all sides).
    geometries: list[BaseGeometry | None] = request.getfixturevalue(data)
    index = BoundaryIndex(geometries, max_vertices=32)
    owners, coords = [], []
    for position, geometry in enumerate(geometries):
        if geometry is not None:
            vertices = shapely.get_coordinates(geometry)
            coords.append(vertices)
            owners.append(np.full(len(vertices), position))
    xy, owner = np.concatenate(coords), np.concatenate(owners)
    points, positions = index.covering_many(xy[:, 1], xy[:, 0])
    found = set(zip(points.tolist(), positions.tolist(), strict=True))
    missing = [i for i, p in enumerate(owner.tolist()) if (i, p) not in found]
    assert missing == []
