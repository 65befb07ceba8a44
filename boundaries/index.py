"""Which boundaries cover a point: an R-tree over small pieces of the boundaries.

Lookups go through shapely's ``STRtree`` (a packed R-tree in GEOS). Two things keep them fast:

* Big polygons (coastlines with thousands of vertices) are cut by recursive rectangular clipping
  into pieces of at most ``max_vertices`` vertices, so a point is tested against a few short rings
  rather than a whole coastline, and a country's bounding box no longer answers for half an ocean.
* The pieces are prepared (GEOS builds an indexed point-in-area locator for each), and batches are
  tested with one vectorized ``shapely.covers`` call on the R-tree's candidate pairs.

A piece maps back to its boundary through a parallel array (``piece -> position``). The pieces of a
polygon share their cut lines, so a point on a cut is covered by two pieces of the same boundary;
results are deduplicated per position. "Covers" includes the boundary: a point on a border shared by
two jurisdictions is covered by both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from shapely.geometry.base import BaseGeometry

__all__ = ["DEFAULT_MAX_VERTICES", "BoundaryIndex"]

#: Pieces are cut until they have at most this many vertices. Measured on the shared US counties and
#: Natural Earth 1:50m countries (random points, uniform and on land): single lookups take 14-15 us
#: from 32 to 256 (a raw STRtree of the whole boundaries: 15-17 us counties, 25-32 us world) and
#: batches run at 0.5-0.7 M points/s (raw: 0.4-0.5 M/s counties, 0.05-0.1 M/s world), while the
#: world's index takes 345 ms to build at 32, 190 ms at 64 and 76 ms at 128.
DEFAULT_MAX_VERTICES = 128

_MAX_DEPTH = 40  # halvings of one part; 2**-40 of the world is far below any real vertex spacing

IntArray = NDArray[np.intp]


class BoundaryIndex:
    """The positions of the geometries that cover a point (``lat``, ``long`` in WGS84 degrees).

    ``geometries[i]`` is the boundary of the caller's item ``i``; ``None`` or empty entries are
    skipped. Geometries are valid (``boundaries.repair``) and in GeoJSON order (x = longitude,
    y = latitude), with no ring crossing the antimeridian as a jump. The index is immutable,
    and what GEOS would build lazily on the first lookups (the tree, the point locators) is built
    in the constructor.
    """

    def __init__(
        self,
        geometries: Sequence[BaseGeometry | None],
        *,
        max_vertices: int = DEFAULT_MAX_VERTICES,
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

    def __len__(self) -> int:
        """The number of geometries indexed (``None`` and empty entries are not counted)."""
        return self._size

    def __repr__(self) -> str:
        return f"<BoundaryIndex {self._size} geometries in {self.pieces} pieces>"

    def covering(self, lat: float, long: float) -> IntArray:
        """The positions whose geometry covers the point, ascending (borders count)."""
        # For a point, "intersects" is "covered by" (boundary included), and it is GEOS's fastest
        # single-point path: one call, the point prepared, each candidate piece a short ring.
        point = shapely.points((long, lat))
        hits: IntArray = self._owners[self._tree.query(point, predicate="intersects")]
        if len(hits) < 2:
            return hits
        unique: IntArray = np.array(sorted(set(hits.tolist())), dtype=np.intp)
        return unique

    def covering_many(self, lats: ArrayLike, longs: ArrayLike) -> tuple[IntArray, IntArray]:
        """All (point index, position) pairs where the geometry covers the point.

        Sorted by point index, then position; each pair once. ``lats`` and ``longs`` are
        one-dimensional and of equal length.
        """
        lat = np.asarray(lats, dtype=float)
        long = np.asarray(longs, dtype=float)
        if lat.ndim != 1 or lat.shape != long.shape:
            raise ValueError("lats and longs must be one-dimensional and of equal length")
        points = shapely.points(long, lat)
        which, candidates = self._tree.query(points)
        hit = shapely.covers(self._pieces[candidates], points[which])
        which, owners = which[hit], self._owners[candidates[hit]]
        # One key per pair: sorting the keys sorts by point, then position, and dedupes cut lines.
        span = np.intp(max(self._positions, 1))
        keys = np.unique(which.astype(np.intp) * span + owners)
        return keys // span, keys % span

    def _warm_up(self) -> None:
        """Build the R-tree and every piece's point locator now; GEOS builds them on first use."""
        self._tree.query(shapely.points((0.0, 0.0)))
        if self.pieces:
            shapely.covers(
                self._pieces, shapely.get_point(shapely.get_exterior_ring(self._pieces), 0)
            )


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
