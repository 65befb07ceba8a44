"""An index with a few boundaries changed since it was built, answering without a rebuild.

Building the index of a million boundaries takes about a minute and a few GB (its grid); a
registry that changes one boundary should not cost that, in every worker. A
:class:`PatchedIndex` keeps the built index for the boundaries that did not change (its positions
mapped to the new ones; those changed or removed are left out of its answers) and a small index
of the boundaries that are new or changed. It answers exactly as an index built afresh on the new
boundaries would; a lookup costs a little more (a second, small index, asked only for points in
its bounding box). Patches pile up on the same built index until :data:`PATCH_LIMIT` boundaries
(or an eighth of all) are new, when the caller builds afresh.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from shapely.geometry.base import BaseGeometry

from boundaries.index import BoundaryIndex, GridStats, IntArray

#: The most new or changed boundaries a patch holds, and the most of all boundaries: beyond
#: either, a fresh build costs less than asking a second index of that many on every lookup.
PATCH_LIMIT = 1024
PATCH_SHARE = 1 / 8
#: Answers of the built index a patch remembers mapped (it forgets them all when full).
MAPPED_KEPT = 16384


class PatchedIndex:
    """A built index (``base``) with boundaries changed, added and removed since (see the
    module's docstring). Answers as :class:`~boundaries.index.BoundaryIndex` does."""

    def __init__(
        self,
        base: BoundaryIndex,
        moved: IntArray,
        fresh_positions: IntArray,
        fresh_geometries: Sequence[BaseGeometry],
        positions: int,
    ) -> None:
        #: The index built last: it answers for the boundaries that did not change since.
        self.base = base
        #: Each of the base's positions' position now, or -1: changed or removed since.
        self.moved = moved
        self._dropped = bool((moved < 0).any())
        # The positions kept stay in their order after a registry change; a snapshot patched to
        # a store that reads its entries in another order may not.
        self._ordered = bool((np.diff(moved[moved >= 0]) > 0).all())
        #: The positions of the new and changed boundaries, ascending, and those boundaries.
        self.fresh_positions = fresh_positions
        self.fresh_geometries = tuple(fresh_geometries)
        self.fresh = BoundaryIndex(self.fresh_geometries)
        self._positions = positions
        #: By id of an array the base answered with (kept here): it mapped to the new positions.
        self._mapped: dict[int, tuple[IntArray, IntArray]] = {}
        if self.fresh_geometries:
            x0, y0, x1, y1 = shapely.total_bounds(np.array(self.fresh_geometries, dtype=object))
            self._box = (float(x0), float(y0), float(x1), float(y1))
        else:  # nothing new: no point is in this box
            self._box = (np.inf, np.inf, -np.inf, -np.inf)

    @property
    def pieces(self) -> int:
        """How many pieces the two R-trees hold."""
        return self.base.pieces + self.fresh.pieces

    @property
    def grid(self) -> GridStats | None:
        """The built index's grid (the small one's is not counted)."""
        return self.base.grid

    def grid_paths(self, lats: ArrayLike, longs: ArrayLike) -> NDArray[np.int8]:
        """How the built index answers each point (see
        :meth:`~boundaries.index.BoundaryIndex.grid_paths`): for tests and benchmarks."""
        return self.base.grid_paths(lats, longs)

    def covering(self, lat: float, long: float) -> IntArray:
        """The positions whose geometry covers the point, ascending (borders count).

        The array may be shared between calls: read it, do not change it."""
        base = self.base.covering(lat, long)
        # The grid hands out one array per region: each is mapped once (the mapping took as long
        # as the lookup). Kept with its key, so that the id is not reused while here.
        mapped = self._mapped.get(id(base))
        if mapped is not None:
            found = mapped[1]
        else:
            found = self.moved[base]
            if self._dropped:
                found = found[found >= 0]
            if not self._ordered:
                found = np.sort(found)
            if len(self._mapped) >= MAPPED_KEPT:
                self._mapped.clear()
            self._mapped[id(base)] = (base, found)
        x0, y0, x1, y1 = self._box
        if x0 <= long <= x1 and y0 <= lat <= y1:
            extra = self.fresh.covering(lat, long)
            if len(extra):
                found = np.union1d(found, self.fresh_positions[extra])
        return found

    def covering_many(self, lats: ArrayLike, longs: ArrayLike) -> tuple[IntArray, IntArray]:
        """All (point index, position) pairs where the geometry covers the point, sorted by point
        index, then position."""
        lat = np.asarray(lats, dtype=float)
        long = np.asarray(longs, dtype=float)
        points, positions = self.base.covering_many(lat, long)
        positions = self.moved[positions]
        kept = positions >= 0
        points, positions = points[kept], positions[kept]
        x0, y0, x1, y1 = self._box
        inside = np.flatnonzero((long >= x0) & (long <= x1) & (lat >= y0) & (lat <= y1))
        extra_points, extra = self.fresh.covering_many(lat[inside], long[inside])
        if not len(extra_points) and self._ordered:
            return points, positions
        span = np.intp(max(self._positions, 1))
        keys = np.concatenate(
            [points * span + positions, inside[extra_points] * span + self.fresh_positions[extra]]
        )
        keys.sort()
        return keys // span, keys % span


def moves(
    before: Sequence[tuple[str, str | None]], after: Sequence[tuple[str, str | None]]
) -> tuple[IntArray, list[int]]:
    """Where the positions of one list of (id, boundary generation) went in another: for each
    position before, its position after while its boundary is the same (else -1, as for one
    gone); and the positions after whose boundaries are new or changed (the ``kept`` and
    ``changed`` of :func:`patch_index`)."""
    where = {key[0]: q for q, key in enumerate(after)}
    kept = np.full(len(before), -1, dtype=np.intp)
    for p, key in enumerate(before):
        q = where.get(key[0], -1)
        if q >= 0 and after[q] == key:
            kept[p] = q
    new = np.ones(len(after), dtype=bool)
    new[kept[kept >= 0]] = False
    return kept, np.flatnonzero(new).tolist()


def patchable(fresh: int, positions: int) -> bool:
    """Whether a patch of ``fresh`` new or changed boundaries, of ``positions`` in all, is worth
    it (see :data:`PATCH_LIMIT`)."""
    return fresh <= PATCH_LIMIT and fresh <= PATCH_SHARE * positions


def patch_index(
    index: BoundaryIndex | PatchedIndex,
    kept: NDArray[np.intp],
    changed: Sequence[int],
    geometries: Sequence[BaseGeometry | None],
    positions: int,
) -> PatchedIndex | None:
    """``index`` for ``positions`` positions now: ``kept[p]`` is the position now of its position
    ``p`` when that boundary did not change (else -1), and ``changed[k]`` is the position of
    ``geometries[k]``, each a new or changed boundary (``None``: none now). ``None`` when the
    patch would not be worth it (:func:`patchable`): build afresh then."""
    new_positions = list(changed)
    new_geometries = list(geometries)
    if isinstance(index, PatchedIndex):
        # The earlier patch's boundaries that did not change again come along.
        base = index.base
        moved = np.full(len(index.moved), -1, dtype=np.intp)
        had = index.moved >= 0
        moved[had] = kept[index.moved[had]]
        carried = kept[index.fresh_positions]
        for k in np.flatnonzero(carried >= 0).tolist():
            new_positions.append(int(carried[k]))
            new_geometries.append(index.fresh_geometries[k])
    else:
        base, moved = index, np.asarray(kept, dtype=np.intp)
    present = [
        (p, g)
        for p, g in zip(new_positions, new_geometries, strict=True)
        if g is not None and not g.is_empty
    ]
    if not patchable(len(present), positions):
        return None
    present.sort(key=lambda pair: pair[0])
    fresh_positions = np.array([p for p, _ in present], dtype=np.intp)
    return PatchedIndex(base, moved, fresh_positions, [g for _, g in present], positions)


__all__ = [
    "MAPPED_KEPT",
    "PATCH_LIMIT",
    "PATCH_SHARE",
    "PatchedIndex",
    "moves",
    "patch_index",
    "patchable",
]
