"""Which boundaries cover a point: a grid of interior cells in front of an R-tree of small pieces.

Most points are answered by two array lookups. The area of the data is cut into a regular grid;
a cell that no piece's boundary touches lies wholly inside or wholly outside each piece, so every
point in it has the same covering set, found once at start-up. Only points in cells that a
boundary crosses go to the exact path:

* Big polygons (coastlines with thousands of vertices) are cut by recursive rectangular clipping
  into pieces of at most ``max_vertices`` vertices, so a point is tested against a few short rings
  rather than a whole coastline, and a country's bounding box no longer answers for half an ocean.
* The pieces are held in shapely's ``STRtree`` (a packed R-tree in GEOS) and prepared (GEOS builds
  an indexed point-in-area locator for each); batches are tested with one vectorized
  ``shapely.covers`` call on the R-tree's candidate pairs.

A piece maps back to its boundary through a parallel array (``piece -> position``). The pieces of a
polygon share their cut lines, so a point on a cut is covered by two pieces of the same boundary;
results are deduplicated per position. "Covers" includes the boundary: a point on a border shared by
two jurisdictions is covered by both.

The grid never changes an answer. Cells are marked as crossed when any piece's ring (cut lines
included) comes within a millionth of a cell of them, measured with the same floating-point
expression that later maps a point to its cell, so a cell left unmarked is, together with that
margin, a connected box that no ring touches: every piece holds all of it in its interior or none
of it. Neighbouring unmarked cells share a side, so a whole connected region of them has one
covering set, taken from the exact path at one point of the region. Points on a border, on a
vertex or on a cell's edge next to a border therefore always reach the exact path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from shapely.geometry.base import BaseGeometry

__all__ = ["DEFAULT_MAX_GRID_CELLS", "DEFAULT_MAX_VERTICES", "BoundaryIndex", "GridStats"]

#: Pieces are cut until they have at most this many vertices. Measured on the shared US counties and
#: Natural Earth 1:50m countries (random points, uniform and on land): single lookups take 14-15 us
#: from 32 to 256 (a raw STRtree of the whole boundaries: 15-17 us counties, 25-32 us world) and
#: batches run at 0.5-0.7 M points/s (raw: 0.4-0.5 M/s counties, 0.05-0.1 M/s world), while the
#: world's index takes 345 ms to build at 32, 190 ms at 64 and 76 ms at 128.
DEFAULT_MAX_VERTICES = 128

#: The grid holds at most this many cells (4 bytes each, 2 when there are few covering sets).
#: The 100,000 Voronoi cells of bench/synthetic.py reach it; the US counties use a seventh.
DEFAULT_MAX_GRID_CELLS = 1 << 24

#: Smaller indexes get no grid unless a cell size is given: their exact path is short already,
#: and a grid takes milliseconds to build (cold resolution through DNS builds one small index per
#: set of candidates, to answer a few points).
_MIN_GRID_PIECES = 64

_MAX_DEPTH = 40  # halvings of one part; 2**-40 of the world is far below any real vertex spacing

#: The cell size aims at this share of the covered area lying in cells that a boundary crosses
#: (mixed cells are about 0.72 x ring length / cell size on the US counties, the world's countries
#: and the synthetic registry; the ring length counts a shared border twice). On the counties,
#: 0.1 gives 2.4 M cells built in about 0.15 s and answers 89% of points in a county by lookup;
#: 0.05 answers 95% with 7 M cells, twice the build time.
_MIXED_SHARE = 0.1
_MIXED_CELLS_PER_LENGTH = 0.72
#: Cells are never smaller than this many degrees (about a metre).
_MIN_CELL = 1e-5
#: At most this many cells a side, so that cell numbers stay exact far beyond the margin below.
_MAX_CELLS_PER_AXIS = 1 << 20
#: How far around a cell, in cells, a ring still marks it as crossed: far above the rounding
#: error of ``(x - x0) * inverse`` (below 1e-9 cells with 2**20 cells a side).
_MARGIN = 1e-6
#: The same, when marking blocks: one cell more, as a fine cell is marked when a segment's
#: piece of at most one cell has it in its bounding box (which can stick out of the blocks marked
#: for a longer piece of the same segment by up to one cell).
_BLOCK_MARGIN = 1.0 + 2.0 * _MARGIN
#: Segments are marked in batches of at most this many sub-segments (bounds the memory).
_CHUNK = 1 << 18
#: A block of fine cells is ``2**shift`` cells a side; the build takes whichever of these gives
#: the grid fewer entries.
_SHIFTS = (3, 4)

_FALLBACK = -1  # a cell or block that the exact path answers

IntArray = NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class GridStats:
    """What the grid of interior cells holds (for benchmarks and logs)."""

    cell_degrees: float
    block_cells: int
    coarse_cells: int
    blocks: int
    fine_cells: int
    regions: int
    nbytes: int


class BoundaryIndex:
    """The positions of the geometries that cover a point (``lat``, ``long`` in WGS84 degrees).

    ``geometries[i]`` is the boundary of the caller's item ``i``; ``None`` or empty entries are
    skipped. Geometries are valid (``boundaries.repair``) and in GeoJSON order (x = longitude,
    y = latitude), with no ring crossing the antimeridian as a jump. The index is immutable,
    and what GEOS would build lazily on the first lookups (the tree, the point locators) is built
    in the constructor, as is the grid of interior cells for indexes of 64 pieces or more
    (``max_grid_cells=0`` leaves it out; ``grid_cell_degrees`` overrides the cell size chosen from
    the data, and builds a grid whatever the size).
    """

    def __init__(
        self,
        geometries: Sequence[BaseGeometry | None],
        *,
        max_vertices: int = DEFAULT_MAX_VERTICES,
        max_grid_cells: int = DEFAULT_MAX_GRID_CELLS,
        grid_cell_degrees: float | None = None,
    ) -> None:
        if max_vertices < 4:
            raise ValueError("max_vertices must be at least 4 (a triangle's ring)")
        self.max_vertices = max_vertices
        pieces: list[BaseGeometry] = []
        owners: list[int] = []
        indexed = 0
        for position, geometry in enumerate(geometries):
            if geometry is None or geometry.is_empty:
                continue
            indexed += 1
            for part in shapely.get_parts(geometry):
                cut = _subdivide(part, max_vertices) if part.geom_type == "Polygon" else [part]
                pieces.extend(cut)
                owners.extend([position] * len(cut))
        self._size = indexed
        self._positions = len(geometries)
        self._pieces: NDArray[np.object_] = np.empty(len(pieces), dtype=object)
        self._pieces[:] = pieces
        self._owners: IntArray = np.asarray(owners, dtype=np.intp)
        #: How many pieces the R-tree holds (for stats).
        self.pieces = len(pieces)
        self._tree = shapely.STRtree(self._pieces)
        shapely.prepare(self._pieces)
        self._warm_up()
        self._grid: _Grid | None = None
        if self.pieces and (
            grid_cell_degrees is not None
            or (max_grid_cells > 0 and self.pieces >= _MIN_GRID_PIECES)
        ):
            self._grid = _Grid.build(self, max_grid_cells, grid_cell_degrees)

    def __len__(self) -> int:
        """The number of geometries indexed (``None`` and empty entries are not counted)."""
        return self._size

    def __repr__(self) -> str:
        return f"<BoundaryIndex {self._size} geometries in {self.pieces} pieces>"

    @property
    def grid(self) -> GridStats | None:
        """The grid's size and resolution, or ``None`` when there is no grid."""
        return None if self._grid is None else self._grid.stats

    def grid_origin(self) -> tuple[float, float, float] | None:
        """(longitude, latitude) of the grid's south-west corner and the fine cell size in degrees:
        cell edges lie at ``origin + k * size`` (as computed in floating point)."""
        grid = self._grid
        return None if grid is None else (grid.x0, grid.y0, grid.cell)

    def grid_answers(self, lats: ArrayLike, longs: ArrayLike) -> NDArray[np.bool_]:
        """Which of these points the grid answers by lookup alone (the others go to the exact
        test): for tests and benchmarks."""
        lat = np.asarray(lats, dtype=float)
        long = np.asarray(longs, dtype=float)
        if self._grid is None:
            return np.zeros(lat.shape, dtype=bool)
        answered: NDArray[np.bool_] = self._grid.find_many(lat, long) >= 0
        return answered

    def covering(self, lat: float, long: float) -> IntArray:
        """The positions whose geometry covers the point, ascending (borders count).

        The array may be shared between calls: read it, do not change it.
        """
        grid = self._grid
        if grid is not None:
            which = grid.find(lat, long)
            if which >= 0:
                return grid.sets[which]
        return self._covering_exact(lat, long)

    def covering_many(self, lats: ArrayLike, longs: ArrayLike) -> tuple[IntArray, IntArray]:
        """All (point index, position) pairs where the geometry covers the point.

        Sorted by point index, then position; each pair once. ``lats`` and ``longs`` are
        one-dimensional and of equal length.
        """
        lat = np.asarray(lats, dtype=float)
        long = np.asarray(longs, dtype=float)
        if lat.ndim != 1 or lat.shape != long.shape:
            raise ValueError("lats and longs must be one-dimensional and of equal length")
        grid = self._grid
        if grid is None:
            return self._covering_many_exact(lat, long)
        which = grid.find_many(lat, long)
        exact = np.flatnonzero(which < 0)
        points, positions = self._covering_many_exact(lat[exact], long[exact])
        answered = np.flatnonzero(which >= 0)
        sets = which[answered]
        counts = grid.set_sizes[sets]
        grid_points = np.repeat(answered, counts)
        # Members of each point's set: its offset plus 0, 1, ... within the set.
        starts = np.repeat(grid.set_starts[sets] - (np.cumsum(counts) - counts), counts)
        grid_positions = grid.members[starts + np.arange(len(grid_points))]
        all_points = np.concatenate([exact[points], grid_points])
        order = np.argsort(all_points, kind="stable")  # each part is sorted by point, position
        return all_points[order], np.concatenate([positions, grid_positions])[order]

    def _covering_exact(self, lat: float, long: float) -> IntArray:
        # For a point, "intersects" is "covered by" (boundary included), and it is GEOS's fastest
        # single-point path: one call, the point prepared, each candidate piece a short ring.
        point = shapely.points((long, lat))
        hits: IntArray = self._owners[self._tree.query(point, predicate="intersects")]
        if len(hits) < 2:
            return hits
        unique: IntArray = np.array(sorted(set(hits.tolist())), dtype=np.intp)
        return unique

    def _covering_many_exact(
        self, lat: NDArray[np.float64], long: NDArray[np.float64]
    ) -> tuple[IntArray, IntArray]:
        points = shapely.points(long, lat)
        which, candidates = self._tree.query(points)
        hit = shapely.covers(self._pieces[candidates], points[which])
        which, owners = which[hit], self._owners[candidates[hit]]
        # One key per pair: sorting the keys sorts by point, then position, and dedupes cut lines.
        span = np.intp(max(self._positions, 1))
        keys = np.unique(which.astype(np.intp) * span + owners)
        return keys // span, keys % span

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as its pieces (WKB), owners and grid; the R-tree and the point locators are
        built again on loading (GEOS objects do not pickle, and they take little of the build)."""
        state = {
            "max_vertices": self.max_vertices,
            "size": self._size,
            "positions": self._positions,
            "pieces": shapely.to_wkb(self._pieces),
            "owners": self._owners,
            "grid": self._grid,
        }
        return _restore_index, (state,)

    def _warm_up(self) -> None:
        """Build the R-tree and every piece's point locator now; GEOS builds them on first use."""
        self._tree.query(shapely.points((0.0, 0.0)))
        if self.pieces:
            shapely.covers(
                self._pieces, shapely.get_point(shapely.get_exterior_ring(self._pieces), 0)
            )


def _restore_index(state: dict[str, Any]) -> BoundaryIndex:
    index = BoundaryIndex.__new__(BoundaryIndex)
    index.max_vertices = state["max_vertices"]
    index._size = state["size"]
    index._positions = state["positions"]
    index._pieces = np.empty(len(state["pieces"]), dtype=object)
    index._pieces[:] = list(shapely.from_wkb(state["pieces"]))
    index._owners = state["owners"]
    index.pieces = len(index._pieces)
    index._tree = shapely.STRtree(index._pieces)
    shapely.prepare(index._pieces)
    index._warm_up()
    index._grid = state["grid"]
    return index


class _Grid:
    """Two levels of cells over the pieces' bounding box, and the covering sets of their regions.

    Fine cells are ``cell`` degrees a side, numbered ``i = int((long - x0) * inverse)`` and
    ``j = int((lat - y0) * inverse)``. They are grouped in blocks of ``2**shift`` x ``2**shift``;
    ``coarse`` holds one entry per block: a set number (no ring comes near the block), ``-1`` (the
    exact path answers) or ``-2 - b`` (block ``b`` of ``fine``, one entry per fine cell: a set
    number or ``-1``). Set ``s`` is ``sets[s]``, also stored flat as ``members[set_starts[s]:]``
    (``set_sizes[s]`` entries) for batches; the last set is the empty one, for points outside.
    """

    def __init__(
        self,
        bounds: tuple[float, float, float, float],
        cell: float,
        shift: int,
        columns: int,
        coarse: NDArray[np.int32],
        fine: NDArray[np.signedinteger[Any]],
        members: IntArray,
        set_sizes: IntArray,
        regions: int,
    ) -> None:
        self.x0, self.y0, self.x1, self.y1 = bounds
        self.cell = cell
        self.inverse = 1.0 / cell
        self.shift = shift
        self.mask = (1 << shift) - 1
        self.columns = columns  # blocks per row
        self.coarse = coarse
        self.fine = fine
        # memoryviews index to Python ints, faster than numpy scalars
        self._scalar = (
            *(self.x0, self.x1, self.y0, self.y1, self.inverse),
            *(shift, columns, coarse.data, fine.data),
        )
        self.members = members
        self.set_sizes = set_sizes
        self.set_starts: IntArray = np.cumsum(set_sizes) - set_sizes
        self.sets: list[IntArray] = np.split(members, self.set_starts[1:].tolist())
        for entry in self.sets:
            entry.flags.writeable = False
        self.outside = len(self.sets) - 1
        self._arguments = (bounds, cell, shift, columns, coarse, fine, members, set_sizes, regions)
        self.stats = GridStats(
            cell_degrees=cell,
            block_cells=1 << shift,
            coarse_cells=len(coarse),
            blocks=len(fine) >> (2 * shift),
            fine_cells=len(fine),
            regions=regions,
            nbytes=coarse.nbytes + fine.nbytes + members.nbytes + 2 * set_sizes.nbytes,
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _Grid, self._arguments

    def find(self, lat: float, long: float) -> int:
        """The set number of the point's cell, or ``-1`` when the exact path must answer."""
        # Every request of a server comes here: locals, not attributes, and no numpy scalars.
        x0, x1, y0, y1, inverse, shift, columns, coarse, fine = self._scalar
        if not (x0 <= long <= x1 and y0 <= lat <= y1):
            return self.outside  # NaN lands here too: outside every bounding box, covered by none
        i = int((long - x0) * inverse)
        j = int((lat - y0) * inverse)
        entry: int = coarse[(j >> shift) * columns + (i >> shift)]
        if entry >= _FALLBACK:
            return entry
        mask = (1 << shift) - 1
        found: int = fine[((-2 - entry) << (2 * shift)) | ((j & mask) << shift) | (i & mask)]
        return found

    def find_many(self, lat: NDArray[np.float64], long: NDArray[np.float64]) -> IntArray:
        """:meth:`find` for many points (the same arithmetic, so the same cells)."""
        out = np.full(len(lat), self.outside, dtype=np.intp)
        inside = np.flatnonzero(
            (long >= self.x0) & (long <= self.x1) & (lat >= self.y0) & (lat <= self.y1)
        )
        i = ((long[inside] - self.x0) * self.inverse).astype(np.intp)
        j = ((lat[inside] - self.y0) * self.inverse).astype(np.intp)
        entry = self.coarse[(j >> self.shift) * self.columns + (i >> self.shift)].astype(np.intp)
        in_block = np.flatnonzero(entry < _FALLBACK)
        i, j = i[in_block], j[in_block]
        fine_at = ((-2 - entry[in_block]) << (2 * self.shift)) | (
            ((j & self.mask) << self.shift) | (i & self.mask)
        )
        entry[in_block] = self.fine[fine_at]
        out[inside] = entry
        return out

    @classmethod
    def build(
        cls, index: BoundaryIndex, max_cells: int, cell_degrees: float | None
    ) -> _Grid | None:
        """The grid for an index's pieces, or ``None`` when no cell size fits in ``max_cells``."""
        bounds_array = shapely.bounds(index._pieces)
        bounds = (
            float(bounds_array[:, 0].min()),
            float(bounds_array[:, 1].min()),
            float(bounds_array[:, 2].max()),
            float(bounds_array[:, 3].max()),
        )
        start, end = _linework(index._pieces)
        if cell_degrees is not None:
            if not cell_degrees > 0.0:
                raise ValueError("grid_cell_degrees must be positive")
            sizes = {}
            for shift in _SHIFTS:
                blocks, crossed = _blocks(start, end, bounds, cell_degrees, shift, max_cells)
                sizes[shift] = max_cells + 1 if crossed < 0 else blocks + (crossed << 2 * shift)
            shift = min(sizes, key=sizes.__getitem__)
            if sizes[shift] > max_cells:
                raise ValueError(
                    f"a grid of {cell_degrees} degree cells needs more cells than {max_cells}"
                )
            return cls._build_at(index, bounds, start, end, cell_degrees, shift)
        chosen = _choose_cell(index, start, end, bounds, max_cells)
        if chosen is None:
            return None
        return cls._build_at(index, bounds, start, end, *chosen)

    @classmethod
    def _build_at(
        cls,
        index: BoundaryIndex,
        bounds: tuple[float, float, float, float],
        start: NDArray[np.float64],
        end: NDArray[np.float64],
        cell: float,
        shift: int,
    ) -> _Grid:
        x0, y0, x1, y1 = bounds
        inverse = 1.0 / cell
        side = 1 << shift
        # Fine cells per row and column (the last cell holds x1: see find), rounded up to blocks.
        columns = (int((x1 - x0) * inverse) >> shift) + 1
        rows = (int((y1 - y0) * inverse) >> shift) + 1
        # Blocks that a ring may reach (with a wider margin: a superset of the blocks of the fine
        # cells marked below), then the fine cells of those blocks.
        origin = (x0, y0)
        crossed_blocks = np.zeros(rows * columns, dtype=bool)
        for i, j in _marked(start, end, origin, inverse, (columns, rows), shift, _BLOCK_MARGIN):
            crossed_blocks[j * columns + i] = True
        block_ids = np.flatnonzero(crossed_blocks)
        block_of = np.full(rows * columns, -1, dtype=np.intp)
        block_of[block_ids] = np.arange(len(block_ids))
        crossed = np.zeros(len(block_ids) << (2 * shift), dtype=bool)
        limits = (columns * side, rows * side)
        for i, j in _marked(start, end, origin, inverse, limits, 0, _MARGIN):
            block = block_of[(j >> shift) * columns + (i >> shift)]
            if block.min(initial=0) < 0:  # the wider margin above rules this out
                raise RuntimeError("a cell near a boundary fell outside the marked blocks")
            block <<= 2 * shift
            block |= ((j & (side - 1)) << shift) | (i & (side - 1))
            crossed[block] = True
        del block_of
        # Connected regions of unmarked cells: runs along rows (of plain blocks, and of cells
        # within each marked block), joined where they touch. Run numbers start at 1; 0 marks.
        coarse_runs, coarse_first = _runs(~crossed_blocks.reshape(rows, columns), 0)
        fine_runs, fine_first = _runs(~crossed.reshape(-1, side), len(coarse_first))
        del crossed, crossed_blocks
        first, second = _touching(
            coarse_runs, coarse_first, fine_runs.reshape(-1, side, side), fine_first, block_ids
        )
        nodes = 1 + len(coarse_first) + len(fine_first)
        root = _components(nodes, first, second)
        is_root = root == np.arange(nodes)
        is_root[0] = False
        region_of_run = np.cumsum(is_root) - 1
        region_of_run = region_of_run[root]
        region_of_run[0] = _FALLBACK
        # One point per region: the centre of the first cell of its root run (any point of an
        # unmarked cell is at least a margin away from every ring).
        runs = np.flatnonzero(is_root) - 1
        at = coarse_first[runs[runs < len(coarse_first)]]
        block_x, block_y = at % columns, at // columns
        at = fine_first[runs[runs >= len(coarse_first)] - len(coarse_first)]
        block = block_ids[at >> (2 * shift)]
        i = (block % columns) * side + (at & (side - 1))
        j = (block // columns) * side + ((at >> shift) & (side - 1))
        centre_x = x0 + np.concatenate([(block_x + 0.5) * side, i + 0.5]) * cell
        centre_y = y0 + np.concatenate([(block_y + 0.5) * side, j + 0.5]) * cell
        points, positions = index._covering_many_exact(centre_y, centre_x)
        # Region r's covering set is set r; one more, empty, for points outside the grid.
        regions = len(runs)
        set_sizes = np.bincount(points, minlength=regions + 1).astype(np.intp)
        fine: NDArray[np.signedinteger[Any]]
        if regions < np.iinfo(np.int16).max:
            fine = region_of_run.astype(np.int16)[fine_runs.ravel()]
        else:
            fine = region_of_run.astype(np.int32)[fine_runs.ravel()]
        coarse = region_of_run.astype(np.int32)[coarse_runs.ravel()]
        coarse[block_ids] = -2 - np.arange(len(block_ids), dtype=np.int32)
        return cls(bounds, cell, shift, columns, coarse, fine, positions, set_sizes, regions)


def _linework(pieces: NDArray[np.object_]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Start and end points of every segment of the pieces' rings (and of any lines), and a
    segment of length zero at each vertex of anything else (points)."""
    kinds = shapely.get_type_id(pieces)
    polygons = kinds == shapely.GeometryType.POLYGON
    lines = np.concatenate([shapely.get_rings(pieces[polygons]), pieces[~polygons]])
    coords, owner = shapely.get_coordinates(lines, return_index=True)
    same = owner[1:] == owner[:-1]
    kinds_with_segments = [
        shapely.GeometryType.POLYGON,
        shapely.GeometryType.LINESTRING,
        shapely.GeometryType.LINEARRING,
    ]
    dots = shapely.get_coordinates(pieces[~np.isin(kinds, kinds_with_segments)])
    return np.concatenate([coords[:-1][same], dots]), np.concatenate([coords[1:][same], dots])


def _marked(
    start: NDArray[np.float64],
    end: NDArray[np.float64],
    origin: tuple[float, float],
    inverse: float,
    limits: tuple[int, int],
    shift: int,
    margin: float,
) -> Iterator[tuple[IntArray, IntArray]]:
    """The cells (i, j) within ``margin`` cells of some segment, in batches, with repeats.

    Cells are numbered as :meth:`_Grid.find` numbers them, then grouped by ``2**shift`` a side
    (``i >> shift``); ``limits`` are the numbers of groups per row and column. Segments are cut
    into sub-segments no longer than one group, so each reaches at most three groups each way,
    and every group in a sub-segment's bounding box is marked.
    """
    delta = end - start
    count = np.ceil(np.abs(delta).max(axis=1) * (inverse / (1 << shift))).astype(np.intp)
    np.maximum(count, 1, out=count)
    total = np.cumsum(count)
    cuts = np.searchsorted(total, np.arange(_CHUNK, int(total[-1]), _CHUNK), side="right")
    for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(count)], strict=True):
        if lo == hi:
            continue
        n = count[lo:hi]
        segment = np.repeat(np.arange(lo, hi), n)
        parts = n.repeat(n).astype(np.float64)
        step = np.arange(len(segment)) - np.repeat(np.cumsum(n) - n, n)
        t0 = step / parts
        t1 = (step + 1) / parts
        ranges = []
        for axis in (0, 1):
            begin, span = start[segment, axis], delta[segment, axis]
            a = begin + span * t0
            b = begin + span * t1
            low = (np.minimum(a, b) - origin[axis]) * inverse - margin
            high = (np.maximum(a, b) - origin[axis]) * inverse + margin
            first = np.floor(low, out=low).astype(np.intp)
            last = np.floor(high, out=high).astype(np.intp)
            np.clip(first >> shift, 0, limits[axis] - 1, out=first)
            np.clip(last >> shift, 0, limits[axis] - 1, out=last)
            ranges.append((first, last - first))
        (i0, wide_i), (j0, wide_j) = ranges
        yield i0, j0
        for di in range(3):
            across = np.flatnonzero(wide_i >= di) if di else None
            for dj in range(3):
                if di == dj == 0:
                    continue
                use = across if across is not None else np.flatnonzero(wide_j >= dj)
                if across is not None and dj:
                    use = across[wide_j[across] >= dj]
                if len(use):
                    yield i0[use] + di, j0[use] + dj


def _runs(free: NDArray[np.bool_], offset: int) -> tuple[NDArray[np.int32], IntArray]:
    """Number the runs of free cells along each row, from ``offset + 1`` on (``0`` where not
    free), and give the flat index of each run's first cell."""
    starts = free.copy()
    starts[:, 1:] &= ~free[:, :-1]
    first = np.flatnonzero(starts)
    labels = np.cumsum(starts, axis=None, dtype=np.int32).reshape(free.shape)
    labels += np.int32(offset)
    labels *= free
    return labels, first


def _touching(
    coarse: NDArray[np.int32],
    coarse_first: IntArray,
    fine: NDArray[np.int32],
    fine_first: IntArray,
    block_ids: IntArray,
) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """Pairs of runs that share a side: in neighbouring rows of plain blocks or of one marked
    block, and across the sides of marked blocks (to marked or plain neighbours).

    Two runs in neighbouring rows overlap from the start of one of them on, so looking at the
    cells above and below each run's first cell finds every such pair.
    """
    first: list[NDArray[np.int32]] = []
    second: list[NDArray[np.int32]] = []

    def add(a: NDArray[np.int32], b: NDArray[np.int32]) -> None:
        keep = (a > 0) & (b > 0)
        first.append(a[keep])
        second.append(b[keep])

    rows, columns = coarse.shape
    side = fine.shape[1]
    for flat, starts, width, height in (
        (coarse.ravel(), coarse_first, columns, rows),
        (fine.ravel(), fine_first, side, side),
    ):
        row = (starts // width) % height
        for step, ok in ((width, row < height - 1), (-width, row > 0)):
            at = starts[ok]
            add(flat[at], flat[at + step])
    block_x, block_y = block_ids % columns, block_ids // columns
    block_at = np.full((rows, columns), -1, dtype=np.intp)
    block_at[block_y, block_x] = np.arange(len(block_ids))
    sides = {  # direction -> (this block's cells on that side, the neighbour's facing cells)
        (1, 0): (np.s_[:, :, side - 1], np.s_[:, :, 0]),
        (-1, 0): (np.s_[:, :, 0], np.s_[:, :, side - 1]),
        (0, 1): (np.s_[:, side - 1, :], np.s_[:, 0, :]),
        (0, -1): (np.s_[:, 0, :], np.s_[:, side - 1, :]),
    }
    for (dx, dy), (mine, theirs) in sides.items():
        x, y = block_x + dx, block_y + dy
        has = np.flatnonzero((x >= 0) & (x < columns) & (y >= 0) & (y < rows))
        neighbour = block_at[y[has], x[has]]
        ours = fine[mine][has]
        if dx + dy > 0:  # a marked neighbour (each pair of blocks once)
            add(ours[neighbour >= 0], fine[theirs][neighbour[neighbour >= 0]])
        plain = neighbour < 0  # a plain neighbour: one run along the whole side
        a = ours[plain]
        add(a, np.broadcast_to(coarse[y[has][plain], x[has][plain]][:, None], a.shape))
    return np.concatenate(first), np.concatenate(second)


def _components(
    count: int, first: NDArray[np.int32], second: NDArray[np.int32]
) -> NDArray[np.signedinteger[Any]]:
    """The smallest node of each node's connected component, for ``count`` nodes linked by the
    pairs (``first[k]``, ``second[k]``).

    Each round points every root at the smallest root it is linked to, then follows pointers
    until each node points at a root. A round hooks at least one root of every component that is
    still split, and in practice far more: four rounds on the US counties.
    """
    root: NDArray[np.signedinteger[Any]] = np.arange(count, dtype=np.int64)
    if count < 2**31:  # half the memory for the usual sizes
        root = root.astype(np.int32)
    while len(first):
        a, b = root[first], root[second]
        apart = np.flatnonzero(a != b)
        first, second, a, b = first[apart], second[apart], a[apart], b[apart]
        if not len(first):
            break
        np.minimum.at(root, np.maximum(a, b), np.minimum(a, b))
        while True:
            above = root[root]
            if np.array_equal(above, root):
                break
            root = above
    return root


def _blocks(
    start: NDArray[np.float64],
    end: NDArray[np.float64],
    bounds: tuple[float, float, float, float],
    cell: float,
    shift: int,
    max_cells: int,
) -> tuple[int, int]:
    """How many blocks a grid of this cell size and block shift has, and how many of them a ring
    reaches (not counted, ``-1``, when the blocks alone are more than ``max_cells``)."""
    x0, y0, x1, y1 = bounds
    inverse = 1.0 / cell
    columns = (int((x1 - x0) * inverse) >> shift) + 1
    rows = (int((y1 - y0) * inverse) >> shift) + 1
    if rows * columns > max_cells:
        return rows * columns, -1
    crossed = np.zeros(rows * columns, dtype=bool)
    for i, j in _marked(start, end, (x0, y0), inverse, (columns, rows), shift, _BLOCK_MARGIN):
        crossed[j * columns + i] = True
    return rows * columns, int(crossed.sum())


def _choose_cell(
    index: BoundaryIndex,
    start: NDArray[np.float64],
    end: NDArray[np.float64],
    bounds: tuple[float, float, float, float],
    max_cells: int,
) -> tuple[float, int] | None:
    """The cell size and block shift: the size at which about ``_MIXED_SHARE`` of the covered
    area would lie in cells that a ring crosses, grown until the grid fits in ``max_cells``.

    Each size tried is measured (blocks reached by a ring, counted at block resolution); the
    next is predicted from that count, assuming that blocks fall with the square of the cell
    size and crossed blocks linearly, until every block is crossed.
    """
    x0, y0, x1, y1 = bounds
    width = max(x1 - x0, y1 - y0, _MIN_CELL)
    length = float(np.abs(end - start).max(axis=1).sum())
    area = float(shapely.area(index._pieces).sum())
    cell = width / 1024.0
    if length > 0.0 and area > 0.0:
        cell = _MIXED_SHARE * area / (_MIXED_CELLS_PER_LENGTH * length)
    cell = min(max(cell, _MIN_CELL, width / _MAX_CELLS_PER_AXIS), width)
    shift = max(_SHIFTS)
    while True:
        blocks, crossed = _blocks(start, end, bounds, cell, shift, max_cells)
        if crossed >= 0 and blocks + (crossed << (2 * shift)) <= max_cells:
            break
        if cell >= width:
            return None
        grow = 1.1
        while grow < 1e6:
            scaled = blocks / grow**2
            reached = scaled if crossed < 0 else min(scaled, crossed / grow)
            if scaled + reached * (1 << (2 * shift)) <= max_cells:
                break
            grow *= 1.1
        cell = min(cell * grow, width)
    # The other block sizes at this cell size, if they hold fewer entries (not when a ring
    # reaches every block: then all sizes hold about as many).
    best, entries = shift, blocks + (crossed << (2 * shift))
    for other in _SHIFTS:
        if other != shift and crossed < blocks:
            blocks, crossed = _blocks(start, end, bounds, cell, other, max_cells)
            if crossed >= 0 and blocks + (crossed << (2 * other)) < entries:
                best, entries = other, blocks + (crossed << (2 * other))
    return cell, best


def _subdivide(polygon: BaseGeometry, max_vertices: int, depth: int = 0) -> list[BaseGeometry]:
    """Cut a polygon by halving its bounding box until each piece has at most ``max_vertices``.

    ``clip_by_rect`` keeps the rectangle's edge in both halves, so the pieces share their cut
    lines and their union is the polygon, boundary included.
    """
    if shapely.get_num_coordinates(polygon) <= max_vertices or depth >= _MAX_DEPTH:
        return [polygon]
    xmin, ymin, xmax, ymax = polygon.bounds
    if xmax - xmin >= ymax - ymin:
        middle = (xmin + xmax) / 2.0
        halves = ((xmin, ymin, middle, ymax), (middle, ymin, xmax, ymax))
    else:
        middle = (ymin + ymax) / 2.0
        halves = ((xmin, ymin, xmax, middle), (xmin, middle, xmax, ymax))
    pieces: list[BaseGeometry] = []
    for box in halves:
        clipped = shapely.clip_by_rect(polygon, *box)
        for part in shapely.get_parts(clipped):
            if part.geom_type == "Polygon" and not part.is_empty:
                pieces.extend(_subdivide(part, max_vertices, depth + 1))
    return pieces
