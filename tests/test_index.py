"""The boundary index: which positions cover a point (borders included), checked against shapely."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

import boundaries.index
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


# --- the grid of interior cells -----------------------------------------------------------------
#
# The grid must not change a single answer of the exact path (the R-tree of prepared pieces), which
# is what the index answered before it had a grid; where the points are not within rounding of a
# border, that is also shapely.covers on each whole geometry. The points are chosen where a grid
# could go wrong: on cell edges and corners (as the grid computes them, and one ulp to each side),
# on vertices and borders shared by several geometries, next to vertices, outside.


def exact_index(geometries: list[BaseGeometry | None], **options: int) -> BoundaryIndex:
    return BoundaryIndex(geometries, max_grid_cells=0, **options)


def pairs_of(index: BoundaryIndex, lats: np.ndarray, longs: np.ndarray) -> list[tuple[int, int]]:
    points, positions = index.covering_many(lats, longs)
    return list(zip(points.tolist(), positions.tolist(), strict=True))


def assert_same_answers(
    index: BoundaryIndex,
    geometries: list[BaseGeometry | None],
    lats: np.ndarray,
    longs: np.ndarray,
    *,
    near: tuple[np.ndarray, np.ndarray] | None = None,
    singles: int | None = None,
) -> None:
    """The grid's answers are the exact path's, in batches and one by one, and shapely's for the
    points not ``near`` a border (within rounding of one, where cutting the geometries into
    pieces may already decide differently from the whole geometry)."""
    lats, longs = np.asarray(lats, dtype=float), np.asarray(longs, dtype=float)
    count = len(lats)
    if near is not None:
        lats, longs = np.concatenate([lats, near[0]]), np.concatenate([longs, near[1]])
    pairs = pairs_of(index, lats, longs)
    assert pairs == sorted(set(pairs))  # sorted by point, then position; each pair once
    exact = exact_index(geometries, max_vertices=index.max_vertices)
    assert pairs == pairs_of(exact, lats, longs)
    assert {(i, p) for i, p in pairs if i < count} == covers_each(
        geometries, lats[:count], longs[:count]
    )
    by_point: dict[int, list[int]] = {}
    for point, position in pairs:
        by_point.setdefault(point, []).append(position)
    step = 1 if singles is None else max(1, len(lats) // singles)
    for i in range(0, len(lats), step):
        found = index.covering(float(lats[i]), float(longs[i]))
        assert found.tolist() == by_point.get(i, []), (i, lats[i], longs[i])


def edge_points(
    index: BoundaryIndex, n: int, seed: int, box_: tuple[float, float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Points on the grid's cell edges and corners inside ``box_``, and one ulp to each side."""
    origin = index.grid_origin()
    assert origin is not None
    x0, y0, cell = origin
    rng = np.random.default_rng(seed)
    xmin, ymin, xmax, ymax = box_
    i = rng.integers(int((xmin - x0) / cell), int((xmax - x0) / cell) + 1, n)
    j = rng.integers(int((ymin - y0) / cell), int((ymax - y0) / cell) + 1, n)
    on_x = x0 + i * cell  # the edge as the grid computes it
    on_y = y0 + j * cell
    any_x = rng.uniform(xmin, xmax, n)
    any_y = rng.uniform(ymin, ymax, n)
    longs = [on_x, any_x, on_x, np.nextafter(on_x, -np.inf), np.nextafter(on_x, np.inf)]
    lats = [any_y, on_y, on_y, np.nextafter(on_y, np.inf), np.nextafter(on_y, -np.inf)]
    return np.concatenate(lats), np.concatenate(longs)


def level_edge_points(
    index: BoundaryIndex, n: int, seed: int, box_: tuple[float, float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`edge_points` for the cells of every level of the grid: their edges lie on every
    ``2**r``-th edge of the finest cells, ``r`` from 0 (the finest) to ``levels - 1`` (the top)."""
    grid, origin = index.grid, index.grid_origin()
    assert grid is not None and origin is not None
    x0, y0, cell = origin
    rng = np.random.default_rng(seed)
    xmin, ymin, xmax, ymax = box_
    lats, longs = [], []
    for r in range(grid.levels):
        step = cell * 2**r
        i = rng.integers(int((xmin - x0) / step), int((xmax - x0) / step) + 1, n) * 2**r
        j = rng.integers(int((ymin - y0) / step), int((ymax - y0) / step) + 1, n) * 2**r
        on_x, on_y = x0 + i * cell, y0 + j * cell  # as find computes them
        any_x, any_y = rng.uniform(xmin, xmax, n), rng.uniform(ymin, ymax, n)
        longs += [on_x, any_x, on_x, np.nextafter(on_x, -np.inf), np.nextafter(on_x, np.inf)]
        lats += [any_y, on_y, on_y, np.nextafter(on_y, np.inf), np.nextafter(on_y, -np.inf)]
    return np.concatenate(lats), np.concatenate(longs)


def beside_edges(
    geometries: list[BaseGeometry | None], offsets: tuple[float, ...], seed: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Points at these distances (degrees) to each side of ``n`` random edges, at a random place
    along each: the side-of-line tests must give up within rounding of a line, and be right
    beyond it."""
    xy = vertices(geometries)
    rng = np.random.default_rng(seed)
    at = rng.integers(0, len(xy) - 1, n)
    a, b = xy[at], xy[at + 1]
    along = a + (b - a) * rng.uniform(0.0, 1.0, (n, 1))
    normal = np.column_stack([a[:, 1] - b[:, 1], b[:, 0] - a[:, 0]])
    normal /= np.maximum(np.hypot(normal[:, 0], normal[:, 1]), 1e-300)[:, None]
    points = [along + sign * offset * normal for offset in offsets for sign in (1.0, -1.0)]
    both = np.concatenate(points)
    return both[:, 1], both[:, 0]


def vertices(geometries: list[BaseGeometry | None]) -> np.ndarray:
    return np.concatenate(
        [shapely.get_coordinates(shapely.get_rings(g)) for g in geometries if g is not None]
    )


def vertex_points(geometries: list[BaseGeometry | None]) -> tuple[np.ndarray, np.ndarray]:
    """Every vertex (shared vertices count for every geometry that has them)."""
    xy = vertices(geometries)
    return xy[:, 1], xy[:, 0]


def near_border_points(geometries: list[BaseGeometry | None]) -> tuple[np.ndarray, np.ndarray]:
    """The midpoint of every edge (on the border, up to rounding) and the points one ulp beside
    each vertex, on each side."""
    xy = vertices(geometries)
    middle = (xy[:-1] + xy[1:]) / 2.0
    up, down = np.nextafter(xy, np.inf), np.nextafter(xy, -np.inf)
    mixed = np.column_stack([up[:, 0], down[:, 1]]), np.column_stack([down[:, 0], up[:, 1]])
    points = np.concatenate([middle, up, down, *mixed])
    return points[:, 1], points[:, 0]


# Cell sizes for the table's geometries: 0.25 and 0.5 put cell and block edges exactly on the
# squares' borders and corners; 0.1 and 1/3 are not binary fractions, so edges fall beside them.
@pytest.mark.parametrize("cell", [0.25, 0.5, 0.1, 1.0 / 3.0])
def test_grid_on_the_table(cell: float) -> None:
    index = BoundaryIndex(GEOMETRIES, max_vertices=16, grid_cell_degrees=cell)
    assert index.grid is not None and index.grid.cell_degrees == cell
    for _, lat, long, expected in TABLE:
        assert index.covering(lat, long).tolist() == expected
    lats, longs = random_points((-181.0, -18.0, 181.0, 11.0), 20_000)
    # Most of the test geometries sit between longitude 0 and 65: sample there densely too.
    near_lats, near_longs = random_points((-1.0, -1.0, 65.0, 11.0), 20_000)
    edge_lats, edge_longs = edge_points(index, 4_000, 7, (-1.0, -1.0, 65.0, 11.0))
    rim_lats, rim_longs = edge_points(index, 1_000, 8, (-180.0, -18.0, -178.0, -15.0))
    vertex_lats, vertex_longs = vertex_points(GEOMETRIES)
    assert index.grid_answers(near_lats, near_longs).mean() > 0.5  # the grid is in use
    assert_same_answers(
        index,
        GEOMETRIES,
        np.concatenate([lats, near_lats, edge_lats, rim_lats, vertex_lats]),
        np.concatenate([longs, near_longs, edge_longs, rim_longs, vertex_longs]),
        near=near_border_points(GEOMETRIES),
    )


def test_grid_exact_borders_of_unit_squares() -> None:
    # Points exactly on the squares' borders and corners, which are cell edges at this size.
    index = BoundaryIndex(GEOMETRIES, max_vertices=16, grid_cell_degrees=0.125)
    steps = np.arange(0, 17) / 8.0  # 0, 0.125, ..., 2.0: every cell corner over the squares
    longs, lats = (a.ravel() for a in np.meshgrid(steps, steps))
    assert_same_answers(index, GEOMETRIES, lats, longs)
    # The shared corner of the four squares, as in the table.
    assert index.covering(1.0, 1.0).tolist() == [0, 1, 2, 3]


def test_grid_agrees_on_the_antimeridian() -> None:
    index = BoundaryIndex(GEOMETRIES, max_vertices=16, grid_cell_degrees=0.5)
    lats = np.repeat(np.linspace(-18.0, -15.0, 61), 4)
    longs = np.tile([180.0, -180.0, np.nextafter(180.0, 0.0), np.nextafter(-180.0, 0.0)], 61)
    assert_same_answers(index, GEOMETRIES, lats, longs)
    assert index.covering(-16.5, 180.0).tolist() == [5]
    assert index.covering(-16.5, -180.0).tolist() == [5]


def test_grid_outside_and_not_finite() -> None:
    index = BoundaryIndex(GEOMETRIES, max_vertices=16, grid_cell_degrees=0.25)
    lats = np.array([np.nan, 0.5, np.inf, -np.inf, 0.5, 89.0, -89.0, 0.5])
    longs = np.array([0.5, np.nan, 0.5, 0.5, np.inf, 0.5, 0.5, -179.0])
    points, positions = index.covering_many(lats, longs)
    assert points.tolist() == [] and positions.tolist() == []
    for lat, long in zip(lats.tolist(), longs.tolist(), strict=True):
        assert index.covering(lat, long).tolist() == []
    points, positions = index.covering_many([], [])  # no points at all
    assert points.tolist() == [] and positions.tolist() == []


def test_grid_answers_cannot_be_changed() -> None:
    index = BoundaryIndex(GEOMETRIES, max_vertices=16, grid_cell_degrees=0.25)
    found = index.covering(0.5, 0.5)
    assert index.grid_answers([0.5], [0.5]).tolist() == [True]
    with pytest.raises(ValueError, match="read-only"):
        found[0] = 3
    assert index.covering(0.5, 0.5).tolist() == [0]


def test_grid_budget() -> None:
    # No grid at all, a grid chosen within a small budget, and a budget nothing fits in.
    assert exact_index(GEOMETRIES).grid is None
    small = BoundaryIndex(GEOMETRIES, max_vertices=16, max_grid_cells=20_000)
    assert small.grid is not None
    assert small.grid.top_cells + 4 * small.grid.blocks <= 20_000
    tiny = BoundaryIndex(GEOMETRIES, max_vertices=16, max_grid_cells=3)
    assert tiny.grid is None
    for index in (small, tiny):
        for _, lat, long, expected in TABLE:
            assert index.covering(lat, long).tolist() == expected
    with pytest.raises(ValueError, match="more cells"):
        BoundaryIndex(GEOMETRIES, grid_cell_degrees=0.001, max_grid_cells=1_000)
    with pytest.raises(ValueError, match="positive"):
        BoundaryIndex(GEOMETRIES, grid_cell_degrees=0.0)


def test_grid_on_counties(counties: list[BaseGeometry | None]) -> None:
    index = BoundaryIndex(counties)
    grid = index.grid
    # About one region per county piece, plus the sea: a region split at every block (links
    # across cells lost) would not change an answer, but would show here.
    assert grid is not None and len(index) // 2 < grid.regions < 1.3 * index.pieces
    land = (-125.0, 24.0, -66.0, 50.0)
    lats, longs = random_points(land, 20_000)
    assert index.grid_answers(lats, longs).mean() > 0.8
    edge_lats, edge_longs = edge_points(index, 4_000, 11, land)
    # Vertices of about one county in ten, with the counties that share them.
    vertex_lats, vertex_longs = vertex_points(counties[::10])
    assert_same_answers(
        index,
        counties,
        np.concatenate([lats, edge_lats, vertex_lats]),
        np.concatenate([longs, edge_longs, vertex_longs]),
        near=near_border_points(counties[::10]),
        singles=20_000,
    )


def test_grid_on_countries(countries: list[BaseGeometry | None]) -> None:
    index = BoundaryIndex(countries)
    assert index.grid is not None
    world = (-180.0, -90.0, 180.0, 90.0)
    lats, longs = random_points(world, 20_000)
    assert index.grid_answers(lats, longs).mean() > 0.8
    edge_lats, edge_longs = edge_points(index, 4_000, 12, world)
    vertex_lats, vertex_longs = vertex_points(countries[::5])
    assert_same_answers(
        index,
        countries,
        np.concatenate([lats, edge_lats, vertex_lats]),
        np.concatenate([longs, edge_longs, vertex_longs]),
        near=near_border_points(countries[::5]),
        singles=20_000,
    )


def voronoi(n: int, seed: int) -> list[BaseGeometry | None]:
    """Cells that tile a box: every inner vertex is shared by three cells, every edge by two."""
    rng = np.random.default_rng(seed)
    sites = shapely.multipoints(rng.uniform([-10.0, 40.0], [-5.0, 43.0], (n, 2)))
    frame = box(-10.0, 40.0, -5.0, 43.0)
    cells = shapely.get_parts(shapely.voronoi_polygons(sites, extend_to=frame))
    return list(shapely.clip_by_rect(cells, -10.0, 40.0, -5.0, 43.0))


@pytest.mark.parametrize("cell", [None, 0.01, 0.0625])
def test_grid_on_a_tiling(cell: float | None) -> None:
    cells = voronoi(2_000, 5)
    index = BoundaryIndex(cells, grid_cell_degrees=cell)
    assert index.grid is not None
    lats, longs = random_points((-10.5, 39.5, -4.5, 43.5), 10_000)
    assert index.grid_answers(lats, longs).mean() > 0.25  # cells of 0.0625 are wide here
    edge_lats, edge_longs = edge_points(index, 2_000, 13, (-10.0, 40.0, -5.0, 43.0))
    vertex_lats, vertex_longs = vertex_points(cells)
    assert_same_answers(
        index,
        cells,
        np.concatenate([lats, edge_lats, vertex_lats]),
        np.concatenate([longs, edge_longs, vertex_longs]),
        near=near_border_points(cells),
        singles=10_000,
    )
    # Inner vertices count for every cell around them (three, or more where sites are cocircular).
    xy = vertices(cells)
    inner = (xy[:, 0] > -10.0) & (xy[:, 0] < -5.0) & (xy[:, 1] > 40.0) & (xy[:, 1] < 43.0)
    points, _ = index.covering_many(xy[inner, 1], xy[inner, 0])
    assert np.bincount(points).min() >= 3


def test_small_indexes_have_no_grid_unless_asked() -> None:
    # A few geometries: the exact path is short, and a grid would cost more to build than it saves.
    squares = GEOMETRIES[:4]
    assert BoundaryIndex(squares).grid is None
    forced = BoundaryIndex(squares, grid_cell_degrees=0.25)
    assert forced.grid is not None
    assert forced.covering(1.0, 1.0).tolist() == [0, 1, 2, 3]
    assert BoundaryIndex([None], grid_cell_degrees=0.25).grid is None


def test_grid_with_points_and_lines() -> None:
    # A point and a line are covered only where they are; the grid must mark their cells too.
    geometries: list[BaseGeometry | None] = [
        shapely.Point(1.0, 1.0),
        shapely.LineString([(0.0, 0.0), (2.0, 2.0)]),
        box(0.0, 0.0, 3.0, 3.0),
        *(box(i, 5.0, i + 0.5, 5.5) for i in range(80)),
    ]
    index = BoundaryIndex(geometries, grid_cell_degrees=0.1)
    assert index.covering(1.0, 1.0).tolist() == [0, 1, 2]  # the point, on the line, in the box
    assert index.covering(1.5, 1.5).tolist() == [1, 2]
    lats, longs = random_points((-1.0, -1.0, 81.0, 6.0), 20_000)
    assert index.grid_answers(lats, longs).mean() > 0.5
    line = np.linspace(0.0, 2.0, 101)  # on the line (up to rounding, so compared with exact only)
    assert_same_answers(index, geometries, lats, longs, near=(line, line))


# --- the adaptive grid: cells cut in four where rings are, answered by lines, stars and chords --
#
# A cell that one straight line crosses, where segments meet at one vertex (a star) or that two or
# three lines cross (chords) is answered by the signs of a few orientations: where a sign is
# within rounding of zero, the exact path answers. The points here are on the cell edges of every
# level, at vertices, and beside edges from far to within rounding.


@pytest.mark.parametrize("data", ["counties", "tiling"])
def test_adaptive_grid_against_the_exact_path(request: pytest.FixtureRequest, data: str) -> None:
    if data == "counties":
        geometries = request.getfixturevalue("counties")
        area = (-125.0, 24.0, -66.0, 50.0)
        sample = geometries[::7]
    else:
        geometries = voronoi(5_000, 9)
        area = (-10.0, 40.0, -5.0, 43.0)
        sample = geometries[::3]
    index = BoundaryIndex(geometries)
    grid = index.grid
    assert grid is not None and grid.levels >= 4
    assert min(grid.line_cells, grid.star_cells, grid.chord_cells) > 0
    lats, longs = random_points(area, 5_000)
    edge_lats, edge_longs = level_edge_points(index, 200, 21, area)
    vertex_lats, vertex_longs = vertex_points(sample)
    beside = beside_edges(sample, (1e-2, 1e-4, 1e-7, 1e-10, 1e-13, 0.0), 22, 1_000)
    # Near borders the side tests answer; a vertex is on rays' lines, so the exact path does.
    assert (index.grid_paths(*beside) == 2).mean() > 0.5
    assert (index.grid_paths(vertex_lats, vertex_longs) == 0).all()
    assert (index.grid_paths(lats, longs) > 0).mean() > 0.95
    assert_same_answers(
        index,
        geometries,
        np.concatenate([lats, edge_lats, vertex_lats]),
        np.concatenate([longs, edge_longs, vertex_longs]),
        near=beside,
        singles=10_000,
    )


def test_grid_paths_say_how_points_are_answered() -> None:
    index = BoundaryIndex(GEOMETRIES, max_vertices=16, grid_cell_degrees=0.25)
    # In the state, the county and the city: cells no border comes near (lookup), cells where
    # borders are (side tests); on the borders themselves, the exact path.
    lats, longs = random_points((20.0, 0.0, 30.0, 10.0), 2_000)
    paths = index.grid_paths(lats, longs)
    assert set(paths.tolist()) == {1, 2}
    assert (index.grid_answers(lats, longs) == (paths > 0)).all()
    on = index.grid_paths([1.0, 3.0, 2.5, 10.0], [12.0, 23.0, 22.0, 25.0])  # rims and borders
    assert on.tolist() == [0, 0, 0, 0]
    assert (BoundaryIndex(GEOMETRIES, max_grid_cells=0).grid_paths(lats, longs) == 0).all()


def test_grid_where_one_side_of_a_border_has_a_vertex_the_other_has_not() -> None:
    # The left square's east side runs straight through (1, 0.5), where the two squares to its
    # east meet: collinear segments of different lengths, a star whose rays overlap.
    geometries: list[BaseGeometry | None] = [
        box(0.0, 0.0, 1.0, 1.0),
        box(1.0, 0.0, 2.0, 0.5),
        box(1.0, 0.5, 2.0, 1.0),
    ]
    index = BoundaryIndex(geometries, grid_cell_degrees=1 / 64)
    assert index.grid is not None and index.grid.star_cells > 0
    assert index.covering(0.5, 1.0).tolist() == [0, 1, 2]
    assert index.covering(0.5 + 1e-9, 1.0 + 1e-9).tolist() == [2]
    assert index.covering(0.5 - 1e-9, 1.0 - 1e-9).tolist() == [0]
    assert index.grid_paths([0.5 + 1e-9], [1.0 + 1e-9]).tolist() == [2]
    steps = np.linspace(0.3, 0.7, 41)
    lats, longs = (a.ravel() for a in np.meshgrid(steps, np.linspace(0.8, 1.2, 41)))
    assert_same_answers(index, geometries, lats, longs)


def test_grid_where_many_boundaries_meet_at_one_point() -> None:
    # Twelve slices of a disc meet at its centre: more rays than a star holds, so the cells
    # around the centre are cut to the finest level and left to the exact path there.
    centre = shapely.Point(3.0, 3.0)
    disc = centre.buffer(1.0, quad_segs=16)
    angles = np.linspace(0.0, 2 * np.pi, 13)
    slices: list[BaseGeometry | None] = []
    for a, b in itertools.pairwise(angles):
        wedge = Polygon([(3.0, 3.0), (3 + 2 * np.cos(a), 3 + 2 * np.sin(a)),
                         (3 + 2 * np.cos(b), 3 + 2 * np.sin(b))])  # fmt: skip
        slices.append(wedge.intersection(disc))
    index = BoundaryIndex(slices, grid_cell_degrees=1 / 256)
    assert index.covering(3.0, 3.0).tolist() == list(range(12))
    assert index.grid_paths([3.0, 3.0 + 1e-7], [3.0, 3.0 + 1e-7]).tolist() == [0, 0]
    rng = np.random.default_rng(3)
    radius, angle = rng.uniform(0.0, 0.05, 4_000), rng.uniform(0.0, 2 * np.pi, 4_000)
    lats, longs = 3.0 + radius * np.sin(angle), 3.0 + radius * np.cos(angle)
    assert_same_answers(index, slices, lats, longs, near=vertex_points(slices))


def test_a_grid_cut_short_by_its_budget_still_agrees() -> None:
    # With room for few cells below the top, most cells where rings meet stay with the exact
    # path; the cells that were cut (those with the fewest segments first) answer as before.
    cells = voronoi(3_000, 11)
    full = BoundaryIndex(cells)
    assert full.grid is not None
    budget = (full.grid.top_cells + 4 * full.grid.blocks) // 12
    short = BoundaryIndex(cells, max_grid_cells=budget)
    assert short.grid is not None
    assert short.grid.top_cells + 4 * short.grid.blocks <= budget
    lats, longs = random_points((-10.0, 40.0, -5.0, 43.0), 5_000)
    assert (short.grid_paths(lats, longs) == 0).mean() > (full.grid_paths(lats, longs) == 0).mean()
    edge_lats, edge_longs = level_edge_points(short, 200, 23, (-10.0, 40.0, -5.0, 43.0))
    assert_same_answers(
        short,
        cells,
        np.concatenate([lats, edge_lats]),
        np.concatenate([longs, edge_longs]),
        near=beside_edges(cells, (1e-6, 1e-12), 24, 500),
    )


def test_a_pickled_grid_answers_the_same() -> None:
    index = BoundaryIndex(voronoi(2_000, 5))
    again = pickle.loads(pickle.dumps(index))
    assert again.grid == index.grid
    lats, longs = random_points((-10.0, 40.0, -5.0, 43.0), 5_000)
    for a, b in zip(
        index.covering_many(lats, longs), again.covering_many(lats, longs), strict=True
    ):
        assert np.array_equal(a, b)
    points = list(zip(lats[:500].tolist(), longs[:500].tolist(), strict=True))
    expected = [index.covering(lat, long).tolist() for lat, long in points]
    assert [again.covering(lat, long).tolist() for lat, long in points] == expected


def test_the_grid_does_not_depend_on_its_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # The build works through its pairs in batches to bound its memory (a million jurisdictions
    # have tens of millions); batches two thousand times smaller must give the same grid.
    cells = voronoi(2_000, 5)
    whole = BoundaryIndex(cells)._grid
    monkeypatch.setattr(boundaries.index, "_CHUNK", 512)
    batched = BoundaryIndex(cells)._grid
    assert whole is not None and batched is not None
    for a, b in zip(whole.__reduce__()[1], batched.__reduce__()[1], strict=True):
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            assert all(np.array_equal(a[name], b[name]) for name in a)
        else:
            assert np.array_equal(a, b)
