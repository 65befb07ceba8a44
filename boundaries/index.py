"""Which boundaries cover a point: an adaptive grid of cells in front of an R-tree of small pieces.

Most points are answered by the grid: a few array lookups, and at most a few orientation signs.
The data's bounding box is cut into a grid of cells, and a cell is cut in four again wherever
rings meet, down to a finest cell sized to the data (about 1/64 of the median segment) and within
a budget of entries. A leaf cell is one of:

* free: no piece's ring comes near it, so it lies wholly inside or wholly outside each piece and
  every point in it has the same covering set (a lookup);
* a line: one straight line of ring crosses it (one segment, or several on one line of constant
  longitude or latitude), so each side of the line has one set (one side-of-line test);
* chords: two or three segments cross it, ending outside it: the signs against each line say
  which part of the cell a point is in;
* a star: the segments that end at one vertex in the cell are all that come near it: the signs
  against each ray say which sector a point is in;
* busy: anything else at the finest level, or when the budget is spent: the exact path answers.

The sets are found once, at build time: the exact path is asked at one point of each region. The
exact path is the R-tree:

* Big polygons (coastlines with thousands of vertices) are cut by recursive rectangular clipping
  into pieces of at most ``max_vertices`` vertices, so a point is tested against a few short rings
  rather than a whole coastline, and a country's bounding box no longer answers for half an ocean.
* The pieces are held in shapely's ``STRtree`` (a packed R-tree in GEOS), and those that are worth
  it are prepared (GEOS builds an indexed point-in-area locator); batches are tested with one
  vectorized ``shapely.covers`` call on the R-tree's candidate pairs.

A piece maps back to its boundary through a parallel array (``piece -> position``). The pieces of a
polygon share their cut lines, so a point on a cut is covered by two pieces of the same boundary;
results are deduplicated per position. "Covers" includes the boundary: a point on a border shared by
two jurisdictions is covered by both.

The grid never changes an answer. Every level's cells are made of the finest cells, numbered with
the one floating-point expression that later maps a point to its cell, and a segment of ring
counts for a cell when it comes within a hundred-thousandth of a finest cell of it (far above that
expression's rounding). So a free cell is, with that margin, a box no ring touches; the parts of a
line's, chords' or star's cell are open sets that no ring touches (convex, or for a star's sector
joined through its vertex in the cell), so each has one covering set. Parts of neighbouring cells
are joined where they share a stretch of cell side clear of every line of both (tested with a
tolerance far above rounding), and a connected region's set is taken from the exact path at one
point well inside it. A point is given a part only when each orientation sign is certain (the error
bound of the float expression is far below the test's); GEOS's own orientation tests are exact in
that range, so the exact path puts it in the same part. Points on a border or at a vertex (on the
line of a ray), and within rounding of one, therefore always reach the exact path.
"""

from __future__ import annotations

from collections.abc import Sequence
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

#: The grid holds at most this many cell entries, over all its levels (4 bytes each; the tables of
#: lines, chords and stars and the covering sets grow with the rings and regions, not with this).
#: A million synthetic Voronoi cells use 10 M (212 MiB in all), the US counties 246,000 (2.8 MiB).
DEFAULT_MAX_GRID_CELLS = 1 << 24

#: Smaller indexes get no grid unless a cell size is given: their exact path is short already,
#: and a grid takes milliseconds to build (cold resolution through DNS builds one small index per
#: set of candidates, to answer a few points).
_MIN_GRID_PIECES = 64

_MAX_DEPTH = 40  # halvings of one part; 2**-40 of the world is far below any real vertex spacing

#: Pieces are prepared (a GEOS point locator each, about 450 bytes for a small polygon) when there
#: are at most this many, or when they have more than ``_PREPARE_VERTICES`` vertices. On a million
#: synthetic cells of 7 vertices, preparing took 1.5 s and 450 MiB and made batches no faster; on
#: the counties' pieces it halves the covers test.
_PREPARE_ALL = 1 << 18
_PREPARE_VERTICES = 32

#: The finest cell is about this fraction of the typical (median) segment of ring, so that vertices
#: closer together than segments usually are still get cells of their own: about 0.0005 to 0.001
#: degrees on the US counties, where 0.3% of points 200 m from a border are then left to the exact
#: path (2% at 1/32, 7.5% at 1/16, 17% at 1/8), for a build a third slower than at 1/8.
_FINE_PER_SEGMENT = 64
#: Cells are never smaller than this many degrees (about a metre).
_MIN_CELL = 1e-5
#: At most this many finest cells a side: cell numbers stay exact, and their rounding (below 2e-8
#: cells) far below the margin.
_MAX_LATTICE = 1 << 26
#: The top level has about this many cells per piece (at least ``_MIN_TOP``, at most an eighth of
#: the budget); finer levels go only where rings are. From 8 to 64 the counties build as fast and
#: 64 answers single points 10-15% faster (fewer levels to go down); 100,000 Voronoi cells build 3%
#: slower than at 16.
_TOP_PER_PIECE = 64
_MIN_TOP = 1024
_TOP_SHARE = 8
_MAX_LEVELS = 30
#: A budget below this builds no grid: it could not answer much.
_MIN_ENTRIES = 1024

#: How near a cell, in finest cells, a segment counts for it: far above the rounding of
#: ``(x - x0) * inverse`` (under 2e-8 of a cell with 2**26 cells a side).
_MARGIN = 1e-5
#: Two corners of a cell's box on the same side of a segment's line count as clear of it only
#: beyond this distance (in finest cells, as a share of the segment's length): the rounding of
#: the cross products is below 2e-8.
_CLEAR = 1e-7
#: A stretch of cell side joins parts of two cells only where it lies this far (finest cells) from
#: every line of both.
_JOIN = 1e-6
#: A part's point for the exact path lies at least this far (finest cells) from every line of its
#: cell.
_INSIDE = 1e-3
#: A point's side of a line is certain when the orientation exceeds this share of the sum of the
#: products' magnitudes (the float expression's error bound is 3.3e-16 of it).
_ORIENT = 1e-14
#: Segment-and-cell pairs are tested in batches of at most this many (bounds the memory).
_CHUNK = 1 << 20

#: A star's rays are told apart only when the sine of the angle between neighbours exceeds this.
_ANGLE = 1e-9
#: Cells where more segments than this meet, or more than ``_MAX_CHORDS`` lines cross, are cut
#: further (or left to the exact path).
_MAX_RAYS = 8
_MAX_CHORDS = 3
#: Cells with more segments than this are not looked at for one line along them.
_MAX_ALONG = 32
#: Regions with no free cell get a point from one of their parts; this many tries at most.
_POINT_TRIES = 4

_FALLBACK = -1  # a cell that the exact path answers
_FREE, _LINE, _STAR, _SPLIT, _EXACT = 0, 1, 2, 3, 4  # what a cell is, while building

IntArray = NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class GridStats:
    """What the grid holds (for benchmarks and logs)."""

    cell_degrees: float  # the finest cell's side
    top_cell_degrees: float
    levels: int  # the top one and the finer ones below it, each cell cut in four
    top_cells: int
    blocks: int  # cells cut in four, below the top (four entries each)
    line_cells: int  # cells that one straight line crosses: one side-of-line test
    star_cells: int  # cells where segments meet at one vertex: a test per segment there
    chord_cells: int  # cells that two or three lines cross: a test per line
    regions: int
    nbytes: int


class BoundaryIndex:
    """The positions of the geometries that cover a point (``lat``, ``long`` in WGS84 degrees).

    ``geometries[i]`` is the boundary of the caller's item ``i``; ``None`` or empty entries are
    skipped. Geometries are valid (``boundaries.repair``) and in GeoJSON order (x = longitude,
    y = latitude), with no ring crossing the antimeridian as a jump. The index is immutable,
    and what GEOS would build lazily on the first lookups (the tree, the point locators) is built
    in the constructor, as is the grid for indexes of 64 pieces or more (``max_grid_cells=0``
    leaves it out; ``grid_cell_degrees`` sets the finest cell instead of choosing it from the
    data, refines down to it wherever rings meet, and builds a grid whatever the size). A polygon
    small enough to be its own piece is held as the caller's object, not a copy.
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
        present = [(p, g) for p, g in enumerate(geometries) if g is not None and not g.is_empty]
        array = np.empty(len(present), dtype=object)
        array[:] = [g for _, g in present]
        positions = np.fromiter((p for p, _ in present), dtype=np.intp, count=len(present))
        # A polygon within the vertex limit is its own piece: the caller's object, shared.
        whole = (shapely.get_type_id(array) == shapely.GeometryType.POLYGON) & (
            shapely.get_num_coordinates(array) <= max_vertices
        )
        pieces: list[BaseGeometry] = list(array[whole])
        owners: list[int] = positions[whole].tolist()
        for position, geometry in zip(
            positions[~whole].tolist(), array[~whole].tolist(), strict=True
        ):
            for part in shapely.get_parts(geometry):
                cut = _subdivide(part, max_vertices) if part.geom_type == "Polygon" else [part]
                pieces.extend(cut)
                owners.extend([position] * len(cut))
        self._size = len(present)
        self._positions = len(geometries)
        self._pieces: NDArray[np.object_] = np.empty(len(pieces), dtype=object)
        self._pieces[:] = pieces
        self._owners: IntArray = np.asarray(owners, dtype=np.intp)
        #: Which pieces are a caller's whole geometry (the rest were cut, or are parts).
        self._whole = np.zeros(len(pieces), dtype=bool)
        self._whole[: int(whole.sum())] = True
        self._make_tree()
        self._grid: _Grid | None = None
        if self.pieces and (
            grid_cell_degrees is not None
            or (max_grid_cells >= _MIN_ENTRIES and self.pieces >= _MIN_GRID_PIECES)
        ):
            self._grid = _build_grid(self, max_grid_cells, grid_cell_degrees)

    def _make_tree(self) -> None:
        #: How many pieces the R-tree holds (for stats).
        self.pieces = len(self._pieces)
        self._tree = shapely.STRtree(self._pieces)
        if self.pieces <= _PREPARE_ALL:
            self._prepared = self._pieces
        else:
            vertices = shapely.get_num_coordinates(self._pieces)
            self._prepared = self._pieces[vertices > _PREPARE_VERTICES]
        shapely.prepare(self._prepared)
        self._warm_up()

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
        """(longitude, latitude) of the grid's south-west corner and the finest cell size in
        degrees: the edges of every level's cells lie at ``origin + k * size`` (as computed in
        floating point), those of level ``l`` at multiples ``k`` of ``2 ** (levels - 1 - l)``."""
        grid = self._grid
        return None if grid is None else (grid.x0, grid.y0, grid.cell)

    def grid_answers(self, lats: ArrayLike, longs: ArrayLike) -> NDArray[np.bool_]:
        """Which of these points the grid answers without the exact path (by lookup, or by
        lookup and one side-of-line test): for tests and benchmarks."""
        answered: NDArray[np.bool_] = self.grid_paths(lats, longs) > 0
        return answered

    def grid_paths(self, lats: ArrayLike, longs: ArrayLike) -> NDArray[np.int8]:
        """How each point is answered: 0 by the exact path, 1 by lookup alone, 2 by lookup and one
        side-of-line test (for tests and benchmarks)."""
        lat = np.asarray(lats, dtype=float)
        long = np.asarray(longs, dtype=float)
        paths = np.zeros(lat.shape, dtype=np.int8)
        if self._grid is not None:
            which, sided = self._grid.find_many(lat, long)
            paths[which >= 0] = 1
            paths[(which >= 0) & sided] = 2
        return paths

    def covering(self, lat: float, long: float) -> IntArray:
        """The positions whose geometry covers the point, ascending (borders count).

        The array may be shared between calls: read it, do not change it.
        """
        grid = self._grid
        if grid is not None:
            which = grid.find(lat, long)
            if which >= 0:
                found = grid.sets[which]
                return found if found is not None else grid.make_set(which)
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
        which = grid.find_many(lat, long)[0]
        exact = np.flatnonzero(which < 0)
        points, positions = self._covering_many_exact(lat[exact], long[exact])
        answered = np.flatnonzero(which >= 0)
        sets = which[answered]
        counts = grid.set_sizes[sets]
        grid_points = np.repeat(answered, counts)
        # Members of each point's set: its offset plus 0, 1, ... within the set.
        starts = np.repeat(grid.set_starts[sets] - (np.cumsum(counts) - counts), counts)
        grid_positions = grid.members[starts + np.arange(len(grid_points))]
        if not len(points):
            return grid_points, grid_positions
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
        return _restore_index, (self._state(shared=False),)

    def shared_state(self) -> dict[str, Any]:
        """What :meth:`from_shared_state` needs, less the pieces that are a caller's whole
        geometry (named by position): for a snapshot kept beside the geometries it was built
        from, so that the loaded index holds the caller's objects rather than copies."""
        return self._state(shared=True)

    @classmethod
    def from_shared_state(
        cls, state: dict[str, Any], geometries: Sequence[BaseGeometry | None]
    ) -> BoundaryIndex:
        """The index of :meth:`shared_state`, given the same geometries it was built from."""
        return _restore_index(state, geometries)

    def _state(self, *, shared: bool) -> dict[str, Any]:
        kept = ~self._whole if shared else np.ones(len(self._pieces), dtype=bool)
        return {
            "max_vertices": self.max_vertices,
            "size": self._size,
            "positions": self._positions,
            "pieces": shapely.to_wkb(self._pieces[kept]),
            "whole": self._whole,
            "shared": shared,
            "owners": self._owners,
            "grid": self._grid,
        }

    def _warm_up(self) -> None:
        """Build the R-tree and the prepared pieces' point locators now; GEOS builds them on
        first use."""
        self._tree.query(shapely.points((0.0, 0.0)))
        if len(self._prepared):
            shapely.covers(
                self._prepared, shapely.get_point(shapely.get_exterior_ring(self._prepared), 0)
            )


def _restore_index(
    state: dict[str, Any], geometries: Sequence[BaseGeometry | None] | None = None
) -> BoundaryIndex:
    index = BoundaryIndex.__new__(BoundaryIndex)
    index.max_vertices = state["max_vertices"]
    index._size = state["size"]
    index._positions = state["positions"]
    index._owners = state["owners"]
    index._whole = state["whole"]
    pieces = np.empty(len(index._owners), dtype=object)
    kept = shapely.from_wkb(state["pieces"])
    if state["shared"]:
        if geometries is None or len(geometries) != index._positions:
            raise ValueError("this index state names the geometries it was built from")
        named = np.empty(len(geometries), dtype=object)
        named[:] = list(geometries)
        pieces[index._whole] = named[index._owners[index._whole]]
        pieces[~index._whole] = kept
    else:
        pieces[:] = list(kept)
    if len(index._whole) != len(pieces) or shapely.is_missing(pieces).any():
        raise ValueError("the index state does not fit these geometries")
    index._pieces = pieces
    index._make_tree()
    index._grid = state["grid"]
    return index


class _Grid:
    """Cells over the pieces' bounding box, each answered or cut in four, and the covering sets of
    their regions.

    Finest cells are ``cell`` degrees a side, numbered ``i = int((long - x0) * inverse)`` and
    ``j = int((lat - y0) * inverse)``; a top cell is ``2**depth`` of them a side (``top``, one
    entry per cell, row by row), and a cell ``depth - r`` levels down holds the finest cells that
    share ``i >> r`` and ``j >> r``. An entry is a set number, ``-1`` (the exact path answers), or
    ``-2 - ref``, where ``ref & 3`` says what row ``k = ref >> 2`` is:

    * 0: a block (``ref`` itself): the cell is cut in four, ``nodes[ref | 2 y + x]`` for the
      quarter at (x, y);
    * 1: a line that crosses the cell, from vertex ``lines[k, 0]`` towards ``lines[k, 1]``;
      ``sides[k]`` are the sets left and right of it;
    * 2: a star, the segments that meet at vertex ``stars[k]`` in the cell: they run to vertices
      ``rays[star_start[k]:star_start[k + 1]]``, counter-clockwise; ``sectors`` and ``convex``
      say the set between each ray and the next, and whether that angle is under half a turn;
    * 3: two or three lines that cross the cell, rows ``chord_start[k]:chord_start[k + 1]`` of
      ``chords`` (as ``lines``); ``chord_sets[chord_set_start[k] + b]`` is the set where the point
      is left of line ``m`` for each bit ``m`` of ``b``.

    Vertices are ``vertices[v]`` (x, y): a line's direction is the difference of its two, as
    the float expression computes it. A set is ``-1`` where no point of it was found well
    inside. Set ``s`` is ``members[set_starts[s]:][:set_sizes[s]]``; the last set is the empty
    one, for points outside.
    """

    def __init__(
        self,
        frame: tuple[float, float, float, float, float, int, int],
        top: NDArray[np.int32],
        nodes: NDArray[np.int32],
        fans: dict[str, NDArray[Any]],
        members: IntArray,
        set_sizes: IntArray,
        counts: tuple[int, int, int],
    ) -> None:
        self.x0, self.y0, self.x1, self.y1, self.cell, self.depth, self.columns = frame
        self.inverse = 1.0 / self.cell
        self.top, self.nodes = top, nodes
        self.fans = fans
        self.vertices = fans["vertices"].reshape(-1, 2)
        self.lines, self.sides = fans["lines"].reshape(-1, 2), fans["sides"].reshape(-1, 2)
        self.chords = fans["chords"].reshape(-1, 2)
        # memoryviews index to Python ints and floats, faster than numpy scalars
        self._scalar = (
            *(self.x0, self.x1, self.y0, self.y1, self.inverse, self.depth, self.columns),
            *(top.data, nodes.data, fans["vertices"].data, fans["lines"].data, fans["sides"].data),
        )
        self._star_scalar = tuple(
            fans[name].data for name in ("stars", "star_start", "rays", "sectors", "convex")
        )
        self._chord_scalar = tuple(
            fans[name].data for name in ("chords", "chord_start", "chord_sets", "chord_set_start")
        )
        members.flags.writeable = False  # the sets handed out are views of it
        self.members = members
        self.set_sizes = set_sizes
        self.set_starts: IntArray = np.cumsum(set_sizes) - set_sizes
        self._starts_view = self.set_starts.data
        self._sizes_view = set_sizes.data
        #: Each set's array once asked for (made on first use: a million regions would take a
        #: second and 100 MB to split up front).
        self.sets: list[IntArray | None] = [None] * len(set_sizes)
        self.outside = len(set_sizes) - 1
        self._arguments = (frame, top, nodes, fans, members, set_sizes, counts)
        arrays: list[NDArray[Any]] = [top, nodes, members, set_sizes, *fans.values()]
        self.stats = GridStats(
            cell_degrees=self.cell,
            top_cell_degrees=self.cell * (1 << self.depth),
            levels=self.depth + 1,
            top_cells=len(top),
            blocks=len(nodes) // 4,
            line_cells=counts[0],
            star_cells=counts[1],
            chord_cells=counts[2],
            regions=len(set_sizes) - 1,
            nbytes=sum(int(a.nbytes) for a in arrays),
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _Grid, self._arguments

    def make_set(self, which: int) -> IntArray:
        """Set ``which`` as an array (read-only, kept for the next time)."""
        start: int = self._starts_view[which]
        found: IntArray = self.members[start : start + self._sizes_view[which]]
        self.sets[which] = found
        return found

    def find(self, lat: float, long: float) -> int:
        """The set number of the point's cell, or ``-1`` when the exact path must answer."""
        # Every request of a server comes here: locals, not attributes, and no numpy scalars.
        x0, x1, y0, y1, inverse, r, columns, top, nodes, vertices, lines, sides = self._scalar
        if not (x0 <= long <= x1 and y0 <= lat <= y1):
            return self.outside  # NaN lands here too: outside every bounding box, covered by none
        i = int((long - x0) * inverse)
        j = int((lat - y0) * inverse)
        entry: int = top[(j >> r) * columns + (i >> r)]
        while entry < _FALLBACK:
            ref = -2 - entry
            tag = ref & 3
            if not tag:
                r -= 1
                entry = nodes[ref | (((j >> r) & 1) << 1) | ((i >> r) & 1)]
                continue
            k = ref >> 2
            if tag == 1:
                a, b = 2 * lines[2 * k], 2 * lines[2 * k + 1]
                ax, ay = vertices[a], vertices[a + 1]
                left = (vertices[b] - ax) * (lat - ay)
                right = (vertices[b + 1] - ay) * (long - ax)
                bound = _ORIENT * (abs(left) + abs(right))
                if left - right > bound:
                    found: int = sides[2 * k]
                    return found
                if right - left > bound:
                    found = sides[2 * k + 1]
                    return found
                return _FALLBACK
            if tag == 2:
                return self._star(k, lat, long, vertices)
            return self._chords(k, lat, long, vertices)
        return entry

    def _star(self, k: int, lat: float, long: float, vertices: memoryview) -> int:
        """The set of the star's sector that holds the point, or ``-1`` when the point is within
        rounding of a ray's line."""
        stars, star_start, rays, sectors, convex = self._star_scalar
        first, end = star_start[k], star_start[k + 1]
        v = 2 * stars[k]
        vx, vy = vertices[v], vertices[v + 1]
        x, y = long - vx, lat - vy
        left_of = []  # whether the point is left of each ray's line
        for m in range(first, end):
            w = 2 * rays[m]
            left = (vertices[w] - vx) * y
            right = (vertices[w + 1] - vy) * x
            bound = _ORIENT * (abs(left) + abs(right))
            if left - right > bound:
                left_of.append(True)
            elif right - left > bound:
                left_of.append(False)
            else:
                return _FALLBACK
        rays_in = end - first
        for m in range(rays_in):
            # the sector from ray m to the next (index m + 1 - rays_in wraps to 0 after the last)
            after, before = left_of[m], left_of[m + 1 - rays_in]
            if (after and not before) if convex[first + m] else (after or not before):
                found: int = sectors[first + m]
                return found
        return _FALLBACK  # pragma: no cover (a point off every ray is in one sector)

    def _chords(self, k: int, lat: float, long: float, vertices: memoryview) -> int:
        """The set of the part of the cell the chords leave the point in, or ``-1`` when it is
        within rounding of one."""
        chords, chord_start, chord_sets, chord_set_start = self._chord_scalar
        left_of = 0
        first = chord_start[k]
        for m in range(chord_start[k + 1] - first):
            a, b = 2 * chords[2 * (first + m)], 2 * chords[2 * (first + m) + 1]
            ax, ay = vertices[a], vertices[a + 1]
            left = (vertices[b] - ax) * (lat - ay)
            right = (vertices[b + 1] - ay) * (long - ax)
            bound = _ORIENT * (abs(left) + abs(right))
            if left - right > bound:
                left_of |= 1 << m
            elif right - left <= bound:
                return _FALLBACK
        found: int = chord_sets[chord_set_start[k] + left_of]
        return found

    def find_many(
        self, lat: NDArray[np.float64], long: NDArray[np.float64]
    ) -> tuple[IntArray, NDArray[np.bool_]]:
        """:meth:`find` for many points (the same arithmetic, so the same cells), and which of
        them took side-of-line tests."""
        out = np.full(len(lat), self.outside, dtype=np.intp)
        sided = np.zeros(len(lat), dtype=bool)
        inside = np.flatnonzero(
            (long >= self.x0) & (long <= self.x1) & (lat >= self.y0) & (lat <= self.y1)
        )
        i = ((long[inside] - self.x0) * self.inverse).astype(np.intp)
        j = ((lat[inside] - self.y0) * self.inverse).astype(np.intp)
        r = self.depth
        entry = self.top[(j >> r) * self.columns + (i >> r)].astype(np.intp)
        out[inside] = entry
        at = np.flatnonzero(entry < _FALLBACK)  # into inside
        entry = entry[at]
        while len(at):
            ref = -2 - entry
            tag = ref & 3
            for kind, test in ((1, self._lines_at), (2, self._stars_at), (3, self._chords_at)):
                use = tag == kind
                if use.any():
                    point = inside[at[use]]
                    out[point] = test(ref[use] >> 2, lat[point], long[point])
                    sided[point] = True
            at, ref = at[tag == 0], ref[tag == 0]
            r -= 1
            entry = self.nodes[ref | (((j[at] >> r) & 1) << 1) | ((i[at] >> r) & 1)].astype(np.intp)
            out[inside[at]] = entry
            deeper = entry < _FALLBACK
            at, entry = at[deeper], entry[deeper]
        return out, sided

    def _left_of(
        self,
        start: IntArray,
        end: IntArray,
        lat: NDArray[np.float64],
        long: NDArray[np.float64],
    ) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
        """Whether each point is left of the line from vertex ``start`` towards ``end``, and
        whether that is certain (as in :meth:`find`)."""
        a, b = self.vertices[start], self.vertices[end]
        left = (b[:, 0] - a[:, 0]) * (lat - a[:, 1])
        right = (b[:, 1] - a[:, 1]) * (long - a[:, 0])
        bound = _ORIENT * (np.abs(left) + np.abs(right))
        return left - right > bound, np.abs(left - right) > bound

    def _lines_at(
        self, k: IntArray, lat: NDArray[np.float64], long: NDArray[np.float64]
    ) -> IntArray:
        left_of, sure = self._left_of(self.lines[k, 0], self.lines[k, 1], lat, long)
        out = np.full(len(k), _FALLBACK, dtype=np.intp)
        out[sure] = self.sides[k[sure], np.where(left_of[sure], 0, 1)]
        return out

    def _chords_at(
        self, k: IntArray, lat: NDArray[np.float64], long: NDArray[np.float64]
    ) -> IntArray:
        first = self.fans["chord_start"][k].astype(np.intp)
        count = self.fans["chord_start"][k + 1] - first
        bits = np.zeros(len(k), dtype=np.intp)
        sure = np.ones(len(k), dtype=bool)
        for m in range(int(count.max())):
            has = m < count
            row = np.where(has, first + m, 0)
            left_of, certain = self._left_of(self.chords[row, 0], self.chords[row, 1], lat, long)
            bits |= (has & left_of).astype(np.intp) << m
            sure &= ~has | certain
        out = np.full(len(k), _FALLBACK, dtype=np.intp)
        sets = self.fans["chord_sets"][self.fans["chord_set_start"][k] + bits]
        out[sure] = sets[sure]
        return out

    def _stars_at(
        self, k: IntArray, lat: NDArray[np.float64], long: NDArray[np.float64]
    ) -> IntArray:
        fans = self.fans
        first = fans["star_start"][k].astype(np.intp)
        count = fans["star_start"][k + 1] - first
        vertex = fans["stars"][k]
        left_of = np.zeros((len(k), int(count.max())), dtype=bool)
        sure = np.ones(len(k), dtype=bool)
        for m in range(left_of.shape[1]):
            has = m < count
            far = fans["rays"][np.where(has, first + m, 0)]
            left_of[:, m], certain = self._left_of(vertex, far, lat, long)
            sure &= ~has | certain
        out = np.full(len(k), _FALLBACK, dtype=np.intp)
        rows = np.arange(len(k))
        for m in range(left_of.shape[1] - 1, -1, -1):
            has = m < count
            after = left_of[:, m]
            before = left_of[rows, np.where(m + 1 < count, m + 1, 0)]
            sector = np.where(has, first + m, 0)
            inside = np.where(fans["convex"][sector] == 1, after & ~before, after | ~before)
            found = has & inside & sure
            out[found] = fans["sectors"][sector[found]]
        return out


def _build_grid(index: BoundaryIndex, max_entries: int, cell_degrees: float | None) -> _Grid | None:
    """The grid for an index's pieces, or ``None`` when the budget is too small for one."""
    bounds = shapely.bounds(index._pieces)
    x0, y0 = float(bounds[:, 0].min()), float(bounds[:, 1].min())
    x1, y1 = float(bounds[:, 2].max()), float(bounds[:, 3].max())
    segments, ends, vertices = _segments(index._pieces)
    width = max(x1 - x0, y1 - y0, _MIN_CELL)
    if cell_degrees is None:
        if max_entries < _MIN_ENTRIES:
            return None
        lengths = np.abs(segments[:, 2:] - segments[:, :2]).max(axis=1)
        typical = float(np.median(lengths[lengths > 0])) if (lengths > 0).any() else width
        cell = max(typical / _FINE_PER_SEGMENT, _MIN_CELL, width / _MAX_LATTICE)
        top_cells = min(max(_MIN_TOP, _TOP_PER_PIECE * index.pieces), max_entries // _TOP_SHARE)
    else:
        if not cell_degrees > 0.0:
            raise ValueError("grid_cell_degrees must be positive")
        if width / cell_degrees > _MAX_LATTICE:
            raise ValueError(f"a grid of {cell_degrees} degree cells needs more cells than that")
        cell = cell_degrees
        top_cells = max(_MIN_TOP, _TOP_PER_PIECE * index.pieces)
    inverse = 1.0 / cell
    # The last finest cell holds x1 and y1 (see find).
    span_i, span_j = int((x1 - x0) * inverse), int((y1 - y0) * inverse)
    depth = 0
    while ((span_i >> depth) + 1) * ((span_j >> depth) + 1) > top_cells and depth < _MAX_LEVELS:
        depth += 1
    columns, rows = (span_i >> depth) + 1, (span_j >> depth) + 1
    if rows * columns > max_entries:
        if cell_degrees is None:
            return None
        raise ValueError(
            f"a grid of {cell_degrees} degree cells needs more cells than {max_entries}"
        )
    frame = (x0, y0, x1, y1, cell, depth, columns)
    built = _Builder(
        index, frame, rows, (segments, ends, vertices), max_entries, strict=cell_degrees is not None
    )
    return built.grid()


class _Builder:
    """Builds a :class:`_Grid` level by level: which segments of ring come near each cell, what
    each cell is (free, crossed by lines, a star, cut in four, or left to the exact path), which
    parts of cells touch across a shared side, and one exact query per connected region.

    Cells of all levels get global numbers in the order they are made (the top cells first). A
    free cell has one node; a cell crossed by ``k`` lines has ``2**k`` (bit ``m`` set: left of
    line ``m``); a star has one per sector. Lines and stars ("fans") are kept as rays: a point
    and a direction, in finest cells and in degrees.
    """

    def __init__(
        self,
        index: BoundaryIndex,
        frame: tuple[float, float, float, float, float, int, int],
        rows: int,
        linework: tuple[NDArray[np.float64], NDArray[np.int32], NDArray[np.float64]],
        max_entries: int,
        *,
        strict: bool,
    ) -> None:
        self.index = index
        segments, self.ends, self.vertices = linework
        self.frame = frame
        x0, y0, _, _, cell, self.depth, self.columns = frame
        self.rows = rows
        self.max_entries = max_entries
        self.strict = strict
        # Segments in finest cells from the origin, with the arithmetic points are mapped with.
        origin = np.array([x0, y0, x0, y0])
        self.segments = segments
        # (x_a, y_a, x_b, y_b) rows: one contiguous array each, for gathers by segment.
        self.lattice = np.ascontiguousarray(((segments - origin) * (1.0 / cell)).T)
        # Per cell, by global number.
        self.kind = np.zeros(0, dtype=np.int8)
        self.level = np.zeros(0, dtype=np.int8)
        self.block = np.zeros(0, dtype=np.int32)
        self.node = np.zeros(0, dtype=np.int32)
        self.fan = np.zeros(0, dtype=np.int32)
        self.lines = np.zeros(0, dtype=np.int8)  # how many lines or rays its fan has
        self.ii = np.zeros(0, dtype=np.int64)
        self.jj = np.zeros(0, dtype=np.int64)
        self.nodes = 0
        # Per fan: its first ray, how many, and (one line) its segment; per ray: a point and a
        # direction in finest cells (u, v) and in degrees (x, y), and for a star whether the
        # angle to the next ray is under half a turn.
        self._fan_start = _Growing(np.intp)
        self._fan_rays = _Growing(np.intp)
        self._fan_seg = _Growing(np.intp)
        self._ray = _Growing(np.float64, 4)  # rows u, v, du, dv
        self._ray_ends = _Growing(np.int32, 2)  # rows: the vertex it starts at, one it runs to
        self._ray_convex = _Growing(np.int8)
        self.first: list[NDArray[np.int32]] = []  # joined nodes
        self.second: list[NDArray[np.int32]] = []

    fan_start = property(lambda self: self._fan_start.filled)
    fan_rays = property(lambda self: self._fan_rays.filled)
    fan_seg = property(lambda self: self._fan_seg.filled)
    ray = property(lambda self: self._ray.filled)
    ray_convex = property(lambda self: self._ray_convex.filled)
    ray_ends = property(lambda self: self._ray_ends.filled)

    def grid(self) -> _Grid:
        n = self.rows * self.columns
        ii = np.arange(n, dtype=np.int64) % self.columns
        jj = np.arange(n, dtype=np.int64) // self.columns
        cells, segs = self._top_pairs()
        near = self._top_neighbours(ii, jj)
        offset, level, used, blocks = 0, 0, n, 0
        while True:
            kind, fan, count = self._classify(level, ii, jj, cells, segs)
            busy = np.flatnonzero(kind == _SPLIT)
            refine = busy
            room = (self.max_entries - used) // 4
            if level == self.depth:
                refine = busy[:0]
            elif len(busy) > room:
                if self.strict:
                    raise ValueError(
                        "a grid of this cell size needs more cells than "
                        f"{self.max_entries} (max_grid_cells)"
                    )
                # Cells with the fewest segments first: they are the likeliest to come apart.
                refine = np.sort(busy[np.argsort(count[busy], kind="stable")[:room]])
            kind[busy] = _EXACT
            kind[refine] = _SPLIT
            block = np.full(n, -1, dtype=np.int32)
            block[refine] = blocks + np.arange(len(refine), dtype=np.int32)
            node = self._add_level(level, kind, fan, block, ii, jj)
            self._join(level, ii, jj, kind, node, near)
            if not len(refine):
                break
            # The next level: the four quarters of each cell cut, and their segments.
            quarter = np.tile(np.arange(4, dtype=np.int64), len(refine))
            parent = np.repeat(refine, 4)
            child_ii = 2 * ii[parent] + (quarter & 1)
            child_jj = 2 * jj[parent] + (quarter >> 1)
            cells, segs = self._child_pairs(level + 1, refine, cells, segs, child_ii, child_jj)
            near = self._child_neighbours(offset + n, blocks, refine, near, quarter)
            offset += n
            blocks += len(refine)
            used += 4 * len(refine)
            n = 4 * len(refine)
            ii, jj = child_ii, child_jj
            level += 1
        return self._finish()

    # -- which segments come near which cells ---------------------------------------------------

    def _box(
        self, level: int | NDArray[np.int8], ii: NDArray[np.int64], jj: NDArray[np.int64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Cells' south-west corners and side, in finest cells."""
        size = (np.int64(1) << (self.depth - np.asarray(level, dtype=np.int64))).astype(float)
        return ii * size, jj * size, size

    def _near(
        self, segs: NDArray[np.intp], level: int, ii: NDArray[np.int64], jj: NDArray[np.int64]
    ) -> NDArray[np.bool_]:
        """Which segments reach their cell's box with its margin (conservatively: a segment is
        dropped only when its bounding box misses the box, or all four corners lie clearly on
        one side of its line)."""
        x_lo, y_lo, size = self._box(level, ii, jj)
        x_lo, y_lo = x_lo - _MARGIN, y_lo - _MARGIN
        x_hi, y_hi = x_lo + (size + 2 * _MARGIN), y_lo + (size + 2 * _MARGIN)
        ax, ay, bx, by = (column[segs] for column in self.lattice)
        near = (np.maximum(ax, bx) >= x_lo) & (np.minimum(ax, bx) <= x_hi)
        near &= (np.maximum(ay, by) >= y_lo) & (np.minimum(ay, by) <= y_hi)
        dx, dy = bx - ax, by - ay
        clear = _CLEAR * (np.abs(dx) + np.abs(dy))
        above = np.ones(len(segs), dtype=bool)
        below = np.ones(len(segs), dtype=bool)
        for x, y in ((x_lo, y_lo), (x_hi, y_lo), (x_lo, y_hi), (x_hi, y_hi)):
            cross = dx * (y - ay) - dy * (x - ax)
            above &= cross > clear
            below &= cross < -clear
        near &= ~(above | below)
        result: NDArray[np.bool_] = near
        return result

    def _inside(
        self,
        x: NDArray[np.float64],
        y: NDArray[np.float64],
        level: int,
        ii: NDArray[np.int64],
        jj: NDArray[np.int64],
    ) -> NDArray[np.bool_]:
        """Which points (finest cells) lie in their cell's box with its margin."""
        x_lo, y_lo, size = self._box(level, ii, jj)
        inside: NDArray[np.bool_] = (x >= x_lo - _MARGIN) & (x <= x_lo + size + _MARGIN)
        inside &= (y >= y_lo - _MARGIN) & (y <= y_lo + size + _MARGIN)
        return inside

    def _top_pairs(self) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """(top cell, segment) for every segment near a top cell, each pair once, by cell."""
        size = float(1 << self.depth)
        lattice = self.lattice
        delta = lattice[2:] - lattice[:2]
        # Candidates: the cells around pieces of each segment no longer than a cell (each piece
        # with twice the margin reaches at most three cells each way); then the exact test.
        count = np.ceil(np.abs(delta).max(axis=0) / size).astype(np.intp)
        np.maximum(count, 1, out=count)
        total = np.cumsum(count)
        cuts = np.searchsorted(total, np.arange(_CHUNK // 9, int(total[-1]), _CHUNK // 9))
        found_cells: list[NDArray[np.intp]] = []
        found_segs: list[NDArray[np.intp]] = []
        limits = (self.columns, self.rows)
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(count)], strict=True):
            if lo == hi:
                continue
            n = count[lo:hi]
            segment = np.repeat(np.arange(lo, hi), n)
            parts = n.repeat(n).astype(np.float64)
            step = np.arange(len(segment)) - np.repeat(np.cumsum(n) - n, n)
            t0, t1 = step / parts, (step + 1) / parts
            ranges = []
            for axis in (0, 1):
                begin, span = lattice[axis][segment], delta[axis][segment]
                a, b = begin + span * t0, begin + span * t1
                first = np.floor((np.minimum(a, b) - 2 * _MARGIN) / size).astype(np.intp)
                last = np.floor((np.maximum(a, b) + 2 * _MARGIN) / size).astype(np.intp)
                np.clip(first, 0, limits[axis] - 1, out=first)
                np.clip(last, 0, limits[axis] - 1, out=last)
                ranges.append((first, last - first))
            (i0, wide_i), (j0, wide_j) = ranges
            for di in range(3):
                for dj in range(3):
                    use = np.flatnonzero((wide_i >= di) & (wide_j >= dj))
                    ci, cj, s = i0[use] + di, j0[use] + dj, segment[use]
                    near = self._near(s, 0, ci, cj)
                    found_cells.append((cj * self.columns + ci)[near])
                    found_segs.append(s[near])
        span = np.intp(max(len(self.segments), 1))
        keys = np.unique(np.concatenate(found_cells) * span + np.concatenate(found_segs))
        return keys // span, keys % span

    def _child_pairs(
        self,
        level: int,
        refine: NDArray[np.intp],
        cells: NDArray[np.intp],
        segs: NDArray[np.intp],
        child_ii: NDArray[np.int64],
        child_jj: NDArray[np.int64],
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """(quarter, segment) pairs of the cells cut, from their own pairs (a quarter's box with
        its margin lies inside its parent's), by quarter.

        The test is :meth:`_near`'s, on the nine points the quarters' corners share, with the
        margin added to the tolerance instead of to the boxes (which keeps a few more pairs)."""
        rank = np.full(len(cells) and int(cells.max()) + 1, -1, dtype=np.intp)
        rank[refine] = np.arange(len(refine))
        keep = rank[cells] >= 0
        parent, segs = rank[cells[keep]], segs[keep]
        half = float(1 << (self.depth - level))
        out_cells: list[NDArray[np.intp]] = []
        out_segs: list[NDArray[np.intp]] = []
        step = _CHUNK
        for lo in range(0, len(parent), step):
            p, s = parent[lo : lo + step], segs[lo : lo + step]
            x0, y0 = child_ii[4 * p] * half, child_jj[4 * p] * half  # the parent's corner
            ax, ay, bx, by = (column[s] for column in self.lattice)
            low_x, high_x = np.minimum(ax, bx), np.maximum(ax, bx)
            low_y, high_y = np.minimum(ay, by), np.maximum(ay, by)
            dx, dy = bx - ax, by - ay
            slack = (_CLEAR + _MARGIN) * (np.abs(dx) + np.abs(dy))
            base = dx * (y0 - ay) - dy * (x0 - ax)
            step_x, step_y = -dy * half, dx * half
            for x in (0, 1):
                reach_x = (high_x >= x0 + x * half - _MARGIN) & (
                    low_x <= x0 + (x + 1) * half + _MARGIN
                )
                for y in (0, 1):
                    near = reach_x & (high_y >= y0 + y * half - _MARGIN)
                    near &= low_y <= y0 + (y + 1) * half + _MARGIN
                    corner = base + x * step_x + y * step_y
                    crosses = (corner, corner + step_x, corner + step_y, corner + step_x + step_y)
                    above = np.logical_and.reduce([c > slack for c in crosses])
                    below = np.logical_and.reduce([c < -slack for c in crosses])
                    near &= ~(above | below)
                    out_cells.append(4 * p[near] + x + 2 * y)
                    out_segs.append(s[near])
        cells_out = np.concatenate(out_cells) if out_cells else np.zeros(0, dtype=np.intp)
        segs_out = np.concatenate(out_segs) if out_segs else np.zeros(0, dtype=np.intp)
        order = np.argsort(cells_out, kind="stable")
        return cells_out[order], segs_out[order]

    # -- what each cell is ------------------------------------------------------------------------

    def _classify(
        self,
        level: int,
        ii: NDArray[np.int64],
        jj: NDArray[np.int64],
        cells: NDArray[np.intp],
        segs: NDArray[np.intp],
    ) -> tuple[NDArray[np.int8], NDArray[np.int32], NDArray[np.intp]]:
        """Each cell free, crossed by lines, a star, or busy (``_SPLIT`` for now); its fan; how
        many segments come near it.

        Lines: segments (at most ``_MAX_CHORDS``) whose ends all lie outside the cell and its
        margin, or any number that lie on one line of constant longitude or latitude (exactly:
        the cut lines of pieces cut at different depths overlap so). A star: at most
        ``_MAX_RAYS`` segments that all end at one vertex in the cell and its margin, their other
        ends outside, no two rays within ``_ANGLE`` of one line.
        """
        count = np.bincount(cells, minlength=len(ii))
        kind = np.where(count > 0, _SPLIT, _FREE).astype(np.int8)
        fan = np.full(len(ii), -1, dtype=np.int32)
        # Cells along one line of constant longitude or latitude.
        several = np.flatnonzero((count[cells] > 1) & (count[cells] <= _MAX_ALONG))  # by cell
        if len(several):
            c, s = cells[several], segs[several]
            starts = np.flatnonzero(np.diff(c, prepend=-1))
            ax, ay, bx, by = self.segments[s].T
            for a, b, other_a, other_b in ((ax, bx, ay, by), (ay, by, ax, bx)):
                same = np.logical_and.reduceat((a == b) & (other_a != other_b), starts)
                same &= np.minimum.reduceat(a, starts) == np.maximum.reduceat(a, starts)
                first = starts[same]
                first = first[kind[c[first]] == _SPLIT]
                kind[c[first]] = _LINE
                fan[c[first]] = self._add_chords(c[first], s[first])
        # Chords: every segment runs through.
        use = np.flatnonzero((count[cells] <= _MAX_CHORDS) & (kind[cells] == _SPLIT))
        c, s = cells[use], segs[use]
        ax, ay, bx, by = (column[s] for column in self.lattice)
        through = ~self._inside(ax, ay, level, ii[c], jj[c])
        through &= ~self._inside(bx, by, level, ii[c], jj[c])
        if len(c):
            starts, sizes = _runs(c)
            crossed = np.logical_and.reduceat(through, starts)
            chord_cells = c[starts[crossed]]
            kind[chord_cells] = _LINE
            fan[chord_cells] = self._add_chords(
                np.repeat(chord_cells, sizes[crossed]), s[np.repeat(crossed, sizes)]
            )
        stars = np.flatnonzero((count[cells] <= _MAX_RAYS) & (kind[cells] == _SPLIT))
        if len(stars):
            self._find_stars(level, ii, jj, cells[stars], segs[stars], kind, fan)
        return kind, fan, count

    def _add_rays(
        self,
        fans: NDArray[np.intp],
        rays: NDArray[np.float64],
        ends: NDArray[np.int32],
        convex: NDArray[np.int8],
        seg: NDArray[np.intp],
    ) -> NDArray[np.int32]:
        """New fans, one per run of equal numbers in ``fans`` (ascending), with these rays
        (rows u, v, du, dv; and the vertices each starts at and runs to); their numbers."""
        starts, sizes = _runs(fans)
        first = len(self.fan_start)
        self._fan_start.extend(self.ray.shape[1] + starts)
        self._fan_rays.extend(sizes)
        self._fan_seg.extend(seg[starts])
        rays = rays.copy()
        rays[:, 2:4] /= np.hypot(rays[:, 2], rays[:, 3])[:, None]  # unit: heights are distances
        self._ray.extend(rays.T)
        self._ray_ends.extend(ends.T)
        self._ray_convex.extend(convex)
        return first + np.arange(len(starts), dtype=np.int32)

    def _add_chords(self, cells: NDArray[np.intp], seg: NDArray[np.intp]) -> NDArray[np.int32]:
        """New fans for cells crossed by these segments' lines (pairs by cell); one per cell."""
        a = self.lattice[:, seg].T
        rays = np.column_stack([a[:, :2], a[:, 2:] - a[:, :2]])
        return self._add_rays(cells, rays, self.ends[seg], np.zeros(len(seg), dtype=np.int8), seg)

    def _find_stars(
        self,
        level: int,
        ii: NDArray[np.int64],
        jj: NDArray[np.int64],
        c: NDArray[np.intp],
        s: NDArray[np.intp],
        kind: NDArray[np.int8],
        fan: NDArray[np.int32],
    ) -> None:
        """Make stars of the busy cells whose segments (pairs ``c``, ``s``, by cell) all lie on
        rays from one vertex inside the cell and its margin: each ends there (its other end
        outside), or runs through it along a line of constant longitude or latitude (exactly;
        as where one side of a straight border has a vertex that the other has not). Rays on
        one line the same way (exactly, as above) are one ray."""
        ax, ay, bx, by = (column[s] for column in self.lattice)
        in_a = self._inside(ax, ay, level, ii[c], jj[c])
        in_b = self._inside(bx, by, level, ii[c], jj[c])
        seg = self.segments[s]
        # Only cells where each segment has one end in the cell, or none and runs along a line
        # of constant longitude or latitude: most busy cells have two vertices or more.
        one = in_a ^ in_b
        upright = (seg[:, 0] == seg[:, 2]) | (seg[:, 1] == seg[:, 3])
        starts, sizes = _runs(c)
        maybe = np.logical_and.reduceat(one | (~in_a & ~in_b & upright), starts)
        keep = np.repeat(maybe, sizes)
        if not keep.any():
            return
        c, s, seg, in_a, one = c[keep], s[keep], seg[keep], in_a[keep], one[keep]
        # The vertex: the end in the cell of the cell's first segment that has one end there.
        starts, sizes = _runs(c)
        owner = np.repeat(np.arange(len(starts)), sizes)
        first = np.full(len(starts), -1, dtype=np.intp)
        at = np.flatnonzero(one)[::-1]
        first[owner[at]] = at  # written last to first: the first one stays
        has = first >= 0
        pick = np.maximum(first, 0)
        vertex = np.where(in_a[pick][:, None], seg[pick, :2], seg[pick, 2:])
        vertex_id = np.where(in_a[pick], self.ends[s[pick], 0], self.ends[s[pick], 1])
        # Every segment on a ray from it (ending there, or through it along one line).
        star = has & np.logical_and.reduceat(self._on_rays(seg, vertex[owner]), starts)
        if not star.any():
            return
        use = np.repeat(star, sizes)
        c, s, seg = c[use], s[use], seg[use]
        v = np.repeat(vertex[star], sizes[star], axis=0)
        v_id = np.repeat(vertex_id[star], sizes[star])
        # Rays in degrees: to the far end of a segment that ends at the vertex, both ways along
        # one that runs through it.
        at_a = (seg[:, :2] == v).all(axis=1)
        at_b = (seg[:, 2:] == v).all(axis=1)
        through = ~(at_a | at_b)
        far = np.where(at_a[:, None], seg[:, 2:], seg[:, :2])
        far_id = np.where(at_a, self.ends[s, 1], self.ends[s, 0])
        c = np.concatenate([c, c[through]])
        v = np.concatenate([v, v[through]])
        v_id = np.concatenate([v_id, v_id[through]])
        d = np.concatenate([far, seg[through, 2:]]) - v
        far_id = np.concatenate([far_id, self.ends[s[through], 1]])
        # One ray per way along a line of constant longitude or latitude.
        axis = (d[:, 0] == 0.0) | (d[:, 1] == 0.0)
        way = np.where(axis, 2 * np.sign(d[:, 0]) + np.sign(d[:, 1]) + 2, np.arange(len(d)) + 5)
        key = c.astype(np.int64) * (len(d) + 5) + way.astype(np.int64)
        once = np.flatnonzero(np.diff(np.sort(key), prepend=-1))
        once = np.argsort(key, kind="stable")[once]
        c, v, d, v_id, far_id = c[once], v[once], d[once], v_id[once], far_id[once]
        # Counter-clockwise in each cell; then the angle from each ray to the next.
        order = np.lexsort((np.arctan2(d[:, 1], d[:, 0]), c))
        c, v, d, v_id, far_id = c[order], v[order], d[order], v_id[order], far_id[order]
        starts, sizes = _runs(c)
        nxt = np.arange(len(c)) + 1
        nxt[starts + sizes - 1] = starts
        cross = d[:, 0] * d[nxt, 1] - d[:, 1] * d[nxt, 0]
        length = np.hypot(d[:, 0], d[:, 1]) * np.hypot(d[nxt, 0], d[nxt, 1])
        # Rays nearly on one line (same way or opposite) are not told apart: leave the cell;
        # but rays exactly opposite along a line of constant longitude or latitude bound a
        # half-plane, which the tests of either kind of sector tell exactly.
        axis = (d[:, 0] == 0.0) | (d[:, 1] == 0.0)
        straight = axis & axis[nxt] & (cross == 0.0)
        straight &= d[:, 0] * d[nxt, 0] + d[:, 1] * d[nxt, 1] < 0.0
        clear = np.logical_and.reduceat((np.abs(cross) > _ANGLE * length) | straight, starts)
        clear &= (sizes >= 2) & (sizes <= _MAX_RAYS)
        keep = np.repeat(clear, sizes)
        if not keep.any():
            return
        x0, y0, cell = self.frame[0], self.frame[1], self.frame[4]
        origin = np.array([x0, y0])
        rays = np.column_stack([(v - origin) * (1.0 / cell), d * (1.0 / cell)])[keep]
        ends = np.column_stack([v_id, far_id])[keep].astype(np.int32)
        convex = ((cross > 0) | straight)[keep].astype(np.int8)
        made = self._add_rays(c[keep], rays, ends, convex, np.full(int(keep.sum()), -1))
        cells = c[starts[clear]]
        kind[cells] = _STAR
        fan[cells] = made

    @staticmethod
    def _on_rays(seg: NDArray[np.float64], v: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Which segments end at their vertex (one end, not a point), or run through it along a
        line of constant longitude or latitude."""
        at_a = (seg[:, :2] == v).all(axis=1)
        at_b = (seg[:, 2:] == v).all(axis=1)
        ax, ay, bx, by = seg.T
        vx, vy = v.T
        upright = (ax == vx) & (bx == vx) & (np.minimum(ay, by) < vy) & (vy < np.maximum(ay, by))
        level = (ay == vy) & (by == vy) & (np.minimum(ax, bx) < vx) & (vx < np.maximum(ax, bx))
        on: NDArray[np.bool_] = (at_a ^ at_b) | upright | level
        return on

    # -- cells beside each other, and the regions they form ---------------------------------------

    def _top_neighbours(self, ii: NDArray[np.int64], jj: NDArray[np.int64]) -> NDArray[np.int64]:
        """For each top cell, the cell beside it to the east, west, north and south (-1: none)."""
        g = np.arange(len(ii), dtype=np.int64)
        columns, rows = self.columns, self.rows
        return np.column_stack(
            [
                np.where(ii < columns - 1, g + 1, -1),
                np.where(ii > 0, g - 1, -1),
                np.where(jj < rows - 1, g + columns, -1),
                np.where(jj > 0, g - columns, -1),
            ]
        )

    def _child_neighbours(
        self,
        offset: int,
        blocks: int,
        refine: NDArray[np.intp],
        near: NDArray[np.int64],
        quarter: NDArray[np.int64],
    ) -> NDArray[np.int64]:
        """For each quarter (global numbers from ``offset``), the cell of its size beside it in
        each direction, or the larger leaf that holds that place (-1: none)."""
        g = offset + np.arange(len(quarter), dtype=np.int64)
        x, y = quarter & 1, quarter >> 1
        beside = near[np.repeat(refine, 4)]  # the parent's neighbours
        out = np.empty((len(g), 4), dtype=np.int64)
        # direction: (inside the same parent when, step to the sibling, the quarter facing back)
        for d, (sibling, step, back_x, back_y) in enumerate(
            (
                (x == 0, 1, np.zeros_like(x), y),
                (x == 1, -1, np.ones_like(x), y),
                (y == 0, 2, x, np.zeros_like(y)),
                (y == 1, -2, x, np.ones_like(y)),
            )
        ):
            q = beside[:, d]
            result = q.copy()
            cut = q >= 0
            cut[cut] = self.kind[q[cut]] == _SPLIT
            # A neighbour cut in four: its quarter facing this one (its block is at this level).
            result[cut] = offset + 4 * (self.block[q[cut]] - blocks) + back_x[cut] + 2 * back_y[cut]
            out[:, d] = np.where(sibling, g + step, result)
        return out

    def _add_level(
        self,
        level: int,
        kind: NDArray[np.int8],
        fan: NDArray[np.int32],
        block: NDArray[np.int32],
        ii: NDArray[np.int64],
        jj: NDArray[np.int64],
    ) -> NDArray[np.int32]:
        """Record a level's cells; the first node of each free cell, lines or star."""
        width = np.zeros(len(kind), dtype=np.int64)
        width[kind == _FREE] = 1
        lines = kind == _LINE
        width[lines] = 1 << self.fan_rays[fan[lines]]
        stars = kind == _STAR
        width[stars] = self.fan_rays[fan[stars]]
        node = (np.cumsum(width) - width + self.nodes).astype(np.int32)
        node[width == 0] = -1
        self.nodes += int(width.sum())
        self.kind = np.concatenate([self.kind, kind])
        self.level = np.concatenate([self.level, np.full(len(kind), level, dtype=np.int8)])
        self.block = np.concatenate([self.block, block])
        self.node = np.concatenate([self.node, node])
        self.fan = np.concatenate([self.fan, fan])
        lines = np.zeros(len(kind), dtype=np.int8)
        has = fan >= 0
        lines[has] = self.fan_rays[fan[has]]
        self.lines = np.concatenate([self.lines, lines])
        self.ii = np.concatenate([self.ii, ii])
        self.jj = np.concatenate([self.jj, jj])
        return node

    def _lines_of(self, cells: NDArray[np.int64]) -> NDArray[np.float64]:
        """The lines of each cell's fan (none for a free cell): u, v, du, dv in finest cells,
        each ``[cell, line]``, NaN where a cell has fewer."""
        fan = self.fan[cells]
        count = self._line_count(cells)
        out = np.full((4, len(cells), max(int(count.max(initial=0)), 1)), np.nan)
        for m in range(out.shape[2]):
            has = np.flatnonzero(m < count)
            out[:, has, m] = self.ray[:4, self.fan_start[fan[has]] + m]
        return out

    def _part(
        self, cells: NDArray[np.int64], x: NDArray[np.float64], y: NDArray[np.float64]
    ) -> NDArray[np.intp]:
        """Which node of its cell each point (finest cells) is in, counting from the cell's
        first; -1 where it is within ``_JOIN`` of a line."""
        out = np.zeros(len(cells), dtype=np.intp)
        fan = self.fan[cells]
        count = self._line_count(cells)
        star = self.kind[cells] == _STAR
        present = np.flatnonzero(np.bincount(count)) if len(count) else count
        for k in present[present > 0].tolist():
            for is_star in (False, True):
                at = np.flatnonzero((count == k) & (star == is_star))
                if len(at):
                    out[at] = self._part_of(fan[at], k, is_star, x[at], y[at])
        return out

    def _part_of(
        self,
        fan: NDArray[np.int32],
        k: int,
        star: bool,
        x: NDArray[np.float64],
        y: NDArray[np.float64],
    ) -> NDArray[np.intp]:
        """:meth:`_part` for fans of ``k`` rays each, all stars or all lines."""
        first = self.fan_start[fan]
        left_of = np.empty((k, len(fan)), dtype=bool)
        sure = np.ones(len(fan), dtype=bool)
        for m in range(k):
            u, v, du, dv = self.ray[:4, first + m]
            h = du * (y - v) - dv * (x - u)
            left_of[m] = h > _JOIN
            sure &= np.abs(h) > _JOIN
        part = np.full(len(fan), -1, dtype=np.intp)
        if not star:  # bit m: left of line m
            bits = (left_of * (1 << np.arange(k))[:, None]).sum(axis=0)
            part[sure] = bits[sure]
            return part
        for m in range(k):
            after, before = left_of[m], left_of[(m + 1) % k]
            convex = self.ray_convex[first + m] == 1
            inside = np.where(convex, after & ~before, after | ~before)
            part[inside & sure] = m
        return part

    def _join(
        self,
        level: int,
        ii: NDArray[np.int64],
        jj: NDArray[np.int64],
        kind: NDArray[np.int8],
        node: NDArray[np.int32],
        near: NDArray[np.int64],
    ) -> None:
        """Join the nodes of this level's leaves to those of the leaves beside them (of this
        level, or larger), where a stretch of the side they share lies clear of every line of
        both: the side is cut where those lines cross it, and each piece is tested at its middle."""
        leaf = np.flatnonzero((kind == _FREE) | (kind == _LINE) | (kind == _STAR))
        offset = len(self.kind) - len(kind)
        g = np.repeat(leaf, 4)
        d = np.tile(np.arange(4), len(leaf))
        q = near[leaf].ravel()
        ok = q >= 0
        g, d, q = g[ok], d[ok], q[ok]
        kind_q = self.kind[q]
        ok = (kind_q == _FREE) | (kind_q == _LINE) | (kind_q == _STAR)
        # westward and southward only to larger cells (cells of this level join from their side)
        ok &= (d % 2 == 0) | (self.level[q] < level)
        g, d, q, kind_q = g[ok], d[ok], q[ok], kind_q[ok]
        both_free = (kind[g] == _FREE) & (kind_q == _FREE)
        self.first.append(node[g[both_free]])
        self.second.append(self.node[q[both_free]])
        g, d, q = g[~both_free], d[~both_free], q[~both_free]
        if not len(g):
            return
        # The shared side, from (x_a, y_a) to (x_b, y_b).
        size = float(1 << (self.depth - level))
        x_lo, y_lo = ii[g] * size, jj[g] * size
        side = (
            x_lo + size * (d == 0),
            y_lo + size * (d == 2),
            x_lo + size * (d != 1),
            y_lo + size * (d != 3),
        )
        # Cells with one line at most take the short way; the others go by how many lines
        # they have (at most three, or more), so that the arrays are not much wider than needed,
        # and in batches (each pair's arrays up to _MAX_RAYS wide): at a million jurisdictions
        # the top level alone has millions of pairs.
        most = np.maximum(self.lines[offset + g], self.lines[q])
        step = _CHUNK // _MAX_RAYS
        for use, join in (
            (most <= 1, self._join_lines),
            ((most > 1) & (most <= 3), self._join_across),
            (most > 3, self._join_across),
        ):
            pairs = np.flatnonzero(use)
            for start in range(0, len(pairs), step):
                batch = pairs[start : start + step]
                join(node, g[batch], q[batch], offset, tuple(a[batch] for a in side))

    def _line_count(self, cells: NDArray[np.int64]) -> NDArray[np.intp]:
        """How many lines (or rays) each cell's fan has; 0 for a free cell."""
        count: NDArray[np.intp] = self.lines[cells].astype(np.intp)
        return count

    def _join_lines(
        self,
        node: NDArray[np.int32],
        g: NDArray[np.intp],
        q: NDArray[np.int64],
        offset: int,
        side: tuple[NDArray[np.float64], ...],
    ) -> None:
        """:meth:`_join_across` for pairs of cells with one line at most: where each part of
        each lies along the side follows from the line's heights at the side's two ends."""
        x_a, y_a, x_b, y_b = side
        stretches = []
        for cells in (offset + g, q):
            line = self.kind[cells] == _LINE
            u, v, du, dv = self.ray[:4, self.fan_start[self.fan[cells[line]]]]
            h_a, h_b = np.full(len(cells), np.inf), np.full(len(cells), np.inf)
            h_a[line] = du * (y_a[line] - v) - dv * (x_a[line] - u)
            h_b[line] = du * (y_b[line] - v) - dv * (x_b[line] - u)
            # part 0: the cell (free), or right of the line; part 1: left of it
            right = _clear_stretch(np.where(line, -h_a, 1.0), np.where(line, -h_b, 1.0))
            left = _clear_stretch(np.where(line, h_a, -1.0), np.where(line, h_b, -1.0))
            stretches.append((right, left))
        for part_g in (0, 1):
            for part_q in (0, 1):
                (lo_g, hi_g), (lo_q, hi_q) = stretches[0][part_g], stretches[1][part_q]
                use = np.minimum(hi_g, hi_q) - np.maximum(lo_g, lo_q) > 1e-9
                self.first.append(node[g[use]] + part_g)
                self.second.append(self.node[q[use]] + part_q)

    def _join_across(
        self,
        node: NDArray[np.int32],
        g: NDArray[np.intp],
        q: NDArray[np.int64],
        offset: int,
        side: tuple[NDArray[np.float64], ...],
    ) -> None:
        """:meth:`_join` for pairs (``g`` of this level, ``q`` beside it) along the side they
        share, from (x_a, y_a) to (x_b, y_b): t runs from 0 to 1 along it, and it is cut where
        the lines of either cell cross it (where their heights change sign)."""
        x_a, y_a, x_b, y_b = side
        cuts = [np.zeros((len(g), 1)), np.ones((len(g), 1))]
        for cells in (offset + g, q):
            u, v, du, dv = self._lines_of(cells)
            h_a = du * (y_a[:, None] - v) - dv * (x_a[:, None] - u)
            h_b = du * (y_b[:, None] - v) - dv * (x_b[:, None] - u)
            with np.errstate(divide="ignore", invalid="ignore"):
                t = h_a / (h_a - h_b)
            t[~((t > 0.0) & (t < 1.0))] = np.nan
            cuts.append(t)
        t = np.sort(np.concatenate(cuts, axis=1), axis=1)  # NaN sort last
        t = t[:, : int((~np.isnan(t)).sum(axis=1).max())]
        rows, columns = np.nonzero(t[:, 1:] - t[:, :-1] > 1e-9)
        middle = (t[rows, columns] + t[rows, columns + 1]) / 2
        x = x_a[rows] + middle * (x_b[rows] - x_a[rows])
        y = y_a[rows] + middle * (y_b[rows] - y_a[rows])
        part_g = self._part(offset + g[rows], x, y)
        part_q = self._part(q[rows], x, y)
        use = (part_g >= 0) & (part_q >= 0)
        self.first.append(node[g[rows[use]]] + part_g[use].astype(np.int32))
        self.second.append(self.node[q[rows[use]]] + part_q[use].astype(np.int32))

    # -- sets -------------------------------------------------------------------------------------

    def _finish(self) -> _Grid:
        # The joins are handed over, not kept here too: _components drops what it is done with.
        root = _components(self.nodes, _take(self.first), _take(self.second))
        # Each node's cell.
        has = np.flatnonzero(self.node >= 0)
        node_cell = np.repeat(has, np.diff(np.append(self.node[has], self.nodes)))
        # One point per region, well inside it: a free cell's centre when the region has a free
        # cell, else the best point of a part of a fan's cell that has one.
        free = np.flatnonzero(self.kind[node_cell] == _FREE)
        roots, at = np.unique(root[free], return_index=True)
        chosen = free[at]
        x_lo, y_lo, size = self._box(
            self.level[node_cell[chosen]], self.ii[node_cell[chosen]], self.jj[node_cell[chosen]]
        )
        x, y = x_lo + size / 2, y_lo + size / 2
        # The other regions: try one node of each at a time (most have a point at the first).
        other = np.flatnonzero(~np.isin(root, roots))
        for try_ in range(_POINT_TRIES):
            if not len(other):
                break
            other = other[np.argsort(root[other], kind="stable")]
            new_root = np.flatnonzero(np.diff(root[other], prepend=-1))
            tried = other[new_root]
            u, v, ok = self._points(
                node_cell[tried], tried - self.node[node_cell[tried]], 3 if try_ == 0 else 5
            )
            roots = np.concatenate([roots, root[tried[ok]]])
            chosen = np.concatenate([chosen, tried[ok]])
            x, y = np.concatenate([x, u[ok]]), np.concatenate([y, v[ok]])
            untried = np.ones(len(other), dtype=bool)
            untried[new_root] = False
            other = other[untried & ~np.isin(root[other], root[tried[ok]])]
        order = np.argsort(roots)
        roots, chosen, x, y = roots[order], chosen[order], x[order], y[order]
        x0, y0, cell = self.frame[0], self.frame[1], self.frame[4]
        points, positions = self.index._covering_many_exact(y0 + y * cell, x0 + x * cell)
        regions = len(chosen)
        set_sizes = np.bincount(points, minlength=regions + 1).astype(np.intp)
        set_of_root = np.full(max(self.nodes, 1), _FALLBACK, dtype=np.int32)
        set_of_root[roots] = np.arange(regions, dtype=np.int32)
        set_of_node = set_of_root[root] if self.nodes else set_of_root[:0]
        # Entries: sets for free cells, blocks for cells cut, fans for the rest.
        entry = np.full(len(self.kind), _FALLBACK, dtype=np.int32)
        free_cells = np.flatnonzero(self.kind == _FREE)
        entry[free_cells] = set_of_node[self.node[free_cells]]
        cut = np.flatnonzero(self.kind == _SPLIT)
        entry[cut] = -2 - 4 * self.block[cut]
        fans, counts = self._fan_tables(set_of_node, entry)
        top = self.rows * self.columns
        return _Grid(
            self.frame,
            np.ascontiguousarray(entry[:top]),
            np.ascontiguousarray(entry[top:]),
            fans,
            positions.astype(np.intp),
            set_sizes,
            counts,
        )

    def _fan_tables(
        self, set_of_node: NDArray[np.int32], entry: NDArray[np.int32]
    ) -> tuple[dict[str, NDArray[Any]], tuple[int, int, int]]:
        """The tables of lines, chords and stars (see :class:`_Grid`), and their cells' entries."""
        fans: dict[str, NDArray[Any]] = {"vertices": np.ascontiguousarray(self.vertices).ravel()}
        ray_ends = self.ray_ends
        lines = np.flatnonzero(self.kind == _LINE)
        f = self.fan[lines]
        one = self.fan_rays[f] == 1
        # One line: a row per segment and pair of sets (along a segment they are mostly the same).
        cells, f1 = lines[one], f[one]
        left, right = set_of_node[self.node[cells] + 1], set_of_node[self.node[cells]]
        pair = np.unique((left.astype(np.int64) + 1) * (2**32) + right + 1, return_inverse=True)[1]
        key = self.fan_seg[f1].astype(np.int64) * (int(pair.max(initial=0)) + 1) + pair
        _, first_of, row = np.unique(key, return_index=True, return_inverse=True)
        entry[cells] = -2 - (4 * row.astype(np.int32) + 1)
        fans["lines"] = np.ascontiguousarray(ray_ends[:, self.fan_start[f1[first_of]]].T).ravel()
        fans["sides"] = np.column_stack([left[first_of], right[first_of]]).astype(np.int32).ravel()
        # Chords: a row per cell, and a set for each of its 2**k parts (bit m: left of chord m).
        cells, fk = lines[~one], f[~one]
        entry[cells] = -2 - (4 * np.arange(len(cells), dtype=np.int32) + 3)
        count = self.fan_rays[fk]
        chords = ray_ends[:, _spans(self.fan_start[fk], count)]
        fans["chords"] = np.ascontiguousarray(chords.T).ravel()
        fans["chord_start"] = np.concatenate([[0], np.cumsum(count)]).astype(np.int32)
        parts = np.int64(1) << count
        fans["chord_sets"] = np.ascontiguousarray(set_of_node[_spans(self.node[cells], parts)])
        fans["chord_set_start"] = np.concatenate([[0], np.cumsum(parts)]).astype(np.int32)
        # Stars: a row per cell, the vertex, and where each ray runs to.
        cells = np.flatnonzero(self.kind == _STAR)
        entry[cells] = -2 - (4 * np.arange(len(cells), dtype=np.int32) + 2)
        f = self.fan[cells]
        count = self.fan_rays[f]
        ray = _spans(self.fan_start[f], count)
        fans["stars"] = np.ascontiguousarray(ray_ends[0, self.fan_start[f]])
        fans["star_start"] = np.concatenate([[0], np.cumsum(count)]).astype(np.int32)
        fans["rays"] = np.ascontiguousarray(ray_ends[1, ray])
        fans["sectors"] = np.ascontiguousarray(set_of_node[_spans(self.node[cells], count)])
        fans["convex"] = np.ascontiguousarray(self.ray_convex[ray])
        return fans, (int(one.sum()), len(cells), int((~one).sum()))

    def _points(
        self, cells: NDArray[np.intp], part: NDArray[np.intp], side: int
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
        """A point (finest cells) well inside each part of a fan's cell, and whether it has one:
        among a few points of the cell, the one farthest from every line of the cell that lies
        in the part, when that is at least ``_INSIDE``."""
        if len(cells) > _CHUNK // 32:  # bounds the memory: side**2 points and lines per cell
            step = _CHUNK // 32
            parts = [
                self._points(cells[k : k + step], part[k : k + step], side)
                for k in range(0, len(cells), step)
            ]
            u, v, ok = (np.concatenate(column) for column in zip(*parts, strict=True))
            return u, v, ok
        x_lo, y_lo, size = self._box(self.level[cells], self.ii[cells], self.jj[cells])
        u, v, du, dv = self._lines_of(cells)
        steps = np.linspace(0.02, 0.98, side) if side > 3 else np.array([0.2, 0.5, 0.8])
        fx, fy = (a.ravel() for a in np.meshgrid(steps, steps))
        x = (x_lo[:, None] + fx * size[:, None]).ravel()
        y = (y_lo[:, None] + fy * size[:, None]).ravel()
        which = np.repeat(np.arange(len(cells)), len(fx))
        gap = np.abs((x[:, None] - u[which]) * dv[which] - (y[:, None] - v[which]) * du[which])
        clearance = np.nanmin(gap, axis=1)
        clearance[self._part(cells[which], x, y) != part[which]] = -np.inf
        best = clearance.reshape(len(cells), len(fx)).argmax(axis=1)
        pick = np.arange(len(cells)) * len(fx) + best
        return x[pick], y[pick], clearance[pick] > _INSIDE


class _Growing:
    """An array that grows at its end, doubling its room when full (so that appending many
    times costs no more than copying it a few times)."""

    def __init__(self, dtype: type[np.generic], rows: int | None = None) -> None:
        # With rows, each row is one contiguous array (column-major), grown along its length.
        self._data: NDArray[Any] = np.zeros(16 if rows is None else (rows, 16), dtype=dtype)
        self._size = 0

    def extend(self, values: NDArray[Any]) -> None:
        need = self._size + values.shape[-1]
        if need > self._data.shape[-1]:
            room = max(need, 2 * self._data.shape[-1])
            grown = np.zeros((*self._data.shape[:-1], room), self._data.dtype)
            grown[..., : self._size] = self._data[..., : self._size]
            self._data = grown
        self._data[..., self._size : need] = values
        self._size = need

    @property
    def filled(self) -> NDArray[Any]:
        return self._data[..., : self._size]


def _clear_stretch(
    h_a: NDArray[np.float64], h_b: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Where along a side (0 at one end, 1 at the other) the height above a line, ``h_a`` at one
    end and ``h_b`` at the other, exceeds ``_JOIN``: ``[lo, hi]``, empty when ``lo >= hi``."""
    above_a, above_b = h_a > _JOIN, h_b > _JOIN
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = (_JOIN - h_a) / (h_b - h_a)
    lo = np.where(above_a, 0.0, np.where(above_b, cross, 2.0))
    hi = np.where(above_b, 1.0, np.where(above_a, cross, -1.0))
    return lo, hi


def _runs(keys: NDArray[Any]) -> tuple[IntArray, IntArray]:
    """Where each run of equal values in ``keys`` (grouped, as sorted keys are) starts, and its
    length."""
    starts = np.flatnonzero(np.diff(keys, prepend=-1))
    return starts, np.diff(np.append(starts, len(keys)))


def _spans(starts: NDArray[Any], counts: NDArray[Any]) -> IntArray:
    """``starts[k]``, ``starts[k] + 1``, ... (``counts[k]`` numbers) for each ``k``, in order."""
    total = int(counts.sum())
    spans: IntArray = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)
    return spans


def _segments(
    pieces: NDArray[np.object_],
) -> tuple[NDArray[np.float64], NDArray[np.int32], NDArray[np.float64]]:
    """Every segment of the pieces' rings (and lines) once, whichever way and however many
    pieces run along it, as rows (x_a, y_a, x_b, y_b) with a before b (a point is a segment of
    length zero); the numbers of its ends among the vertices; the vertices (x, y)."""
    start, end = _linework(pieces)
    start = start + 0.0  # -0.0 becomes 0.0: one number, one key
    end = end + 0.0
    swap = (start[:, 0] > end[:, 0]) | ((start[:, 0] == end[:, 0]) & (start[:, 1] > end[:, 1]))
    both = np.ascontiguousarray(
        np.hstack([np.where(swap[:, None], end, start), np.where(swap[:, None], start, end)])
    )
    segments = _unique_rows(both)[0]
    vertices, number = _unique_rows(np.ascontiguousarray(segments.reshape(-1, 2)))
    return segments, number.reshape(-1, 2).astype(np.int32), vertices


def _unique_rows(rows: NDArray[np.float64]) -> tuple[NDArray[np.float64], IntArray]:
    """The distinct rows of a C-contiguous float array, and each row's number among them."""
    if not len(rows):
        return rows, np.zeros(0, dtype=np.intp)
    # Equal rows have equal hashes: sort by hash, then a row is new unless it equals the one
    # before it (rows that only share a hash count as new, so a collision costs a duplicate,
    # which is as safe as any other near segment or vertex).
    bits = rows.view(np.uint64)
    hashed = bits[:, 0] * np.uint64(0x9E3779B97F4A7C15)
    factors = (0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5)
    for column in range(1, rows.shape[1]):
        hashed ^= (hashed >> np.uint64(29)) + bits[:, column] * np.uint64(factors[column - 1])
    order = np.argsort(hashed, kind="stable")
    ordered, hashed = rows[order], hashed[order]
    new = np.ones(len(rows), dtype=bool)
    new[1:] = (hashed[1:] != hashed[:-1]) | (ordered[1:] != ordered[:-1]).any(axis=1)
    number = np.empty(len(rows), dtype=np.intp)
    number[order] = np.cumsum(new) - 1
    return ordered[new], number


def _linework(pieces: NDArray[np.object_]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Start and end points of every segment of the pieces' rings (and of any lines), and a
    segment of length zero at each vertex of anything else (points)."""
    kinds = shapely.get_type_id(pieces)
    polygons = kinds == shapely.GeometryType.POLYGON
    # A polygon without holes is its exterior ring: its coordinates, read without making rings.
    simple = polygons & (shapely.get_num_interior_rings(pieces) == 0)
    lines = np.concatenate(
        [pieces[simple], shapely.get_rings(pieces[polygons & ~simple]), pieces[~polygons]]
    )
    coords, owner = shapely.get_coordinates(lines, return_index=True)
    same = owner[1:] == owner[:-1]
    kinds_with_segments = [
        shapely.GeometryType.POLYGON,
        shapely.GeometryType.LINESTRING,
        shapely.GeometryType.LINEARRING,
    ]
    dots = shapely.get_coordinates(pieces[~np.isin(kinds, kinds_with_segments)])
    return np.concatenate([coords[:-1][same], dots]), np.concatenate([coords[1:][same], dots])


def _take(parts: list[NDArray[np.int32]]) -> NDArray[np.int32]:
    """The arrays of a list joined into one; the list is emptied."""
    joined = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    parts.clear()
    return joined


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
    # One array at a time, each dropped as soon as it is replaced: at a million jurisdictions
    # there are tens of millions of pairs, and this was the index build's peak of memory.
    while len(first):
        a = root[first]
        b = root[second]
        apart = a != b
        first = first[apart]
        second = second[apart]
        a = a[apart]
        b = b[apart]
        del apart
        if not len(first):
            break
        high = np.maximum(a, b)
        np.minimum(a, b, out=a)
        del b
        np.minimum.at(root, high, a)
        del a, high
        while True:
            above = root[root]
            if np.array_equal(above, root):
                break
            root = above
    return root


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
