"""Geographic cells for DNS: a geohash grid with one grid level per DNS label.

A cell is a geohash (``9q8y``): each character picks one of 32 children of the cell before it, so
the cell's DNS name lists the characters finest first, one per label, under ``_cells.<zone>``::

    9q8y  ->  y.8.q.9._cells.geoweb.example.

Every level is a label, so the subtree of a region (``9._cells...``, the western United States) can
be delegated to another server with an ordinary NS record.

The grid is adaptive. A registry splits a cell into its 32 children only while more than
``split_above`` jurisdictions touch it and it is shallower than ``max_depth``; the cells it stops at
are *leaves*. A leaf at ``max_depth`` is published as its own name; a shallower leaf is published as
the wildcard ``*.<leaf>`` (RFC 4592), which answers for every name below it. A resolver therefore
always asks for the name of the point's cell at ``max_depth`` and the server's wildcard rule picks
the leaf that holds it: **one query per cold lookup**, however deep the tree is locally. Splitting a
cell creates all its non-empty children, so a wildcard never answers for a region that was split.

A jurisdiction is listed in every leaf whose *closed* rectangle intersects its boundary, and a
point is looked up in the leaf whose half-open rectangle holds it (geohash rounding: a point on a
cell edge belongs to the upper/eastern cell, which contains the edge). A jurisdiction that covers a
point, border included, is therefore always a candidate for it; the candidates that do not cover
the point are the *false candidates* the exact covers test then removes.

Coordinates follow GeoJSON and shapely: x = longitude, y = latitude; functions name ``lat`` and
``long`` explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

__all__ = [
    "ALPHABET",
    "CELLS_LABEL",
    "CellScheme",
    "Leaf",
    "cell_box",
    "cell_from_name",
    "cell_name",
    "children",
    "leaves",
    "point_cell",
    "query_name",
]

#: The geohash alphabet: digits and lowercase letters without a, i, l, o. DNS labels compare
#: case-insensitively, and these 32 characters stay distinct when case is folded.
ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}

#: The label under which a registry zone publishes its cells (an RFC 8552 underscored name).
CELLS_LABEL = "_cells"

#: Deepest level a scheme may use: 12 characters is a few centimetres, far below any boundary.
MAX_DEPTH = 12

Box = tuple[float, float, float, float]  # (west, south, east, north): x = longitude


@dataclass(frozen=True, slots=True)
class CellScheme:
    """How a registry cuts the world into cells.

    ``max_depth``: the level resolvers query (and the deepest cell published). ``split_above``: a
    cell touched by more jurisdictions than this is split, unless it is at ``max_depth``.
    ``min_depth``: cells are split at least down to this level whatever they hold (a test knob and
    a way to keep the top of the tree delegable; the default publishes nothing above level 2).

    The defaults were chosen by measurement on the 3,231 US counties (``docs/dns-records.md``):
    one query for the cell, 2.3 candidates of which 1.3 false per lookup, 31,111 PTR records
    at 13,640 names. Depth 5 halves the false candidates for four times the records; depth 3
    keeps 11 false candidates per lookup.
    """

    max_depth: int = 4
    split_above: int = 3
    min_depth: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.min_depth <= self.max_depth <= MAX_DEPTH:
            raise ValueError(
                f"cell depths must satisfy 1 <= min_depth <= max_depth <= {MAX_DEPTH}, "
                f"not min_depth={self.min_depth}, max_depth={self.max_depth}"
            )
        if self.split_above < 1:
            raise ValueError("split_above must be at least 1")


@dataclass(frozen=True, slots=True)
class Leaf:
    """A cell where splitting stopped, and the positions of the geometries touching it."""

    cell: str
    members: tuple[int, ...]
    wildcard: bool


def point_cell(lat: float, long: float, depth: int) -> str:
    """The geohash of ``depth`` characters whose half-open rectangle holds the point."""
    if not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be between 1 and {MAX_DEPTH}, not {depth}")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= long <= 180.0):
        raise ValueError(f"lat {lat}, long {long} is not a WGS84 point")
    west, south, east, north = -180.0, -90.0, 180.0, 90.0
    chars = []
    even = True  # geohash bits alternate, longitude first
    for _ in range(depth):
        value = 0
        for _bit in range(5):
            if even:
                mid = (west + east) / 2
                if long >= mid:
                    value, west = value * 2 + 1, mid
                else:
                    value, east = value * 2, mid
            else:
                mid = (south + north) / 2
                if lat >= mid:
                    value, south = value * 2 + 1, mid
                else:
                    value, north = value * 2, mid
            even = not even
        chars.append(ALPHABET[value])
    return "".join(chars)


def cell_box(cell: str) -> Box:
    """The closed rectangle ``(west, south, east, north)`` of a geohash cell."""
    west, south, east, north = -180.0, -90.0, 180.0, 90.0
    even = True
    for char in cell:
        value = _VALUE.get(char)
        if value is None:
            raise ValueError(f"{cell!r} is not a geohash: {char!r} is not in its alphabet")
        for shift in range(4, -1, -1):
            bit = (value >> shift) & 1
            if even:
                mid = (west + east) / 2
                west, east = (mid, east) if bit else (west, mid)
            else:
                mid = (south + north) / 2
                south, north = (mid, north) if bit else (south, mid)
            even = not even
    return west, south, east, north


def children(cell: str) -> list[str]:
    """The 32 cells one level below ``cell`` (the 32 top-level cells for ``""``)."""
    return [cell + c for c in ALPHABET]


def cell_name(cell: str, zone: str) -> str:
    """The absolute DNS name of a cell in a registry zone: one label per level, finest first."""
    labels = [*reversed(cell), CELLS_LABEL]
    return ".".join(labels) + "." + zone.strip(".") + "."


def query_name(lat: float, long: float, zone: str, scheme: CellScheme | None = None) -> str:
    """The name a resolver asks for a point: its cell at the scheme's ``max_depth``."""
    depth = (scheme or CellScheme()).max_depth
    return cell_name(point_cell(lat, long, depth), zone)


def cell_from_name(name: str, zone: str) -> str | None:
    """The geohash a cell name stands for, or ``None`` when the name is not a cell of ``zone``."""
    suffix = "." + CELLS_LABEL + "." + zone.strip(".").lower() + "."
    text = name.lower() if name.endswith(".") else name.lower() + "."
    if not text.endswith(suffix):
        return None
    labels = text[: -len(suffix)].split(".")
    if labels[0] == "*":
        labels = labels[1:]
    if not labels or any(len(label) != 1 or label not in _VALUE for label in labels):
        return None
    return "".join(reversed(labels))


def _grid(lon_first: bool) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Column and row of each of the 32 children in their parent (5 bits, interleaved)."""
    cols, rows = [], []
    for value in range(32):
        col = row = 0
        lon = lon_first
        for shift in range(4, -1, -1):
            bit = (value >> shift) & 1
            if lon:
                col = col * 2 + bit
            else:
                row = row * 2 + bit
            lon = not lon
        cols.append(col)
        rows.append(row)
    return np.array(cols), np.array(rows), 8 if lon_first else 4, 4 if lon_first else 8


_GRIDS = (_grid(True), _grid(False))


def _child_boxes(cell: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """West, south, east, north arrays of the 32 children, in alphabet order. Exact: every edge
    is a dyadic fraction of the world, as the halvings of :func:`point_cell` make it."""
    west, south, east, north = cell_box(cell)
    cols, rows, ncols, nrows = _GRIDS[(len(cell) * 5) % 2]
    width, height = (east - west) / ncols, (north - south) / nrows
    return (
        west + cols * width,
        south + rows * height,
        west + (cols + 1) * width,
        south + (rows + 1) * height,
    )


def leaves(geometries: Sequence[BaseGeometry | None], scheme: CellScheme) -> Iterator[Leaf]:
    """The non-empty leaves of the adaptive grid for these geometries, depth first.

    A generator: memory holds one path of the tree (at most ``max_depth`` levels of 32 cells and
    their members), never the whole grid, so a zone of millions of cells streams. ``members`` are
    positions into ``geometries``; ``None`` and empty entries are never members.
    """
    array = np.empty(len(geometries), dtype=object)
    array[:] = [g if g is not None and not g.is_empty else None for g in geometries]
    present = np.flatnonzero([g is not None for g in array])
    if len(present) == 0:
        return
    tree = shapely.STRtree(array[present])
    shapely.prepare(array[present])
    yield from _walk("", present, array, tree, present, scheme)


def _walk(
    cell: str,
    members: np.ndarray,
    array: np.ndarray,
    tree: shapely.STRtree,
    present: np.ndarray,
    scheme: CellScheme,
) -> Iterator[Leaf]:
    names = children(cell)
    boxes = shapely.box(*_child_boxes(cell))
    depth = len(cell) + 1
    if cell == "":
        pairs = tree.query(boxes, predicate="intersects")
        child_of, hit = pairs[0], present[pairs[1]]
    else:
        # Only the parent's members can touch a child: test them, not the whole tree.
        child_of = np.repeat(np.arange(len(names)), len(members))
        hit = np.tile(members, len(names))
        touching = shapely.intersects(array[hit], boxes[child_of])
        child_of, hit = child_of[touching], hit[touching]
    order = np.lexsort((hit, child_of))  # by child, then member: members come out sorted
    child_list: list[int] = child_of[order].tolist()
    hit_list: list[int] = hit[order].tolist()
    starts = np.searchsorted(child_list, np.arange(len(names) + 1)).tolist()
    final = depth >= scheme.max_depth
    may_stop = depth >= scheme.min_depth
    wildcard = not final
    for i, name in enumerate(names):
        start, end = starts[i], starts[i + 1]
        if start == end:
            continue
        if final or (may_stop and end - start <= scheme.split_above):
            yield Leaf(name, tuple(hit_list[start:end]), wildcard)
        else:
            inside = np.asarray(hit_list[start:end], dtype=np.intp)
            yield from _walk(name, inside, array, tree, present, scheme)
