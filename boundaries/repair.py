"""Make boundary polygons usable: valid, polygonal, and inside [-180, 180] longitude.

Real boundary data is dirty: rings touch or cross themselves where topology was quantized, and rings
that cross the antimeridian are often stored as a jump (179.9 -> -179.9) that a planar library reads
as a band around the whole world. Both are fixed here, and every fix is reported in a note so an
operator can see what changed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

__all__ = ["REPAIRED", "polygonal_parts", "repair_polygonal", "split_antimeridian"]

#: Every note that describes a change to a geometry contains this word (see ``BoundaryReport``).
REPAIRED = "repaired"

#: The ``shapely.make_valid`` method: ``structure`` is the union of the shells minus the union of
#: the holes. On the shared data both methods keep the same area for the 22 invalid US counties
#: (their self-intersections are quantization pinches), and the 3 invalid countries are antimeridian
#: jumps, fixed by ``split_antimeridian`` first. On real errors, ``linework`` applies the even-odd
#: rule: overlapping parts lose their overlap, a ring looping over itself gets a hole, a hole
#: sticking out of its shell adds land outside it. ``structure`` keeps what the shells cover.
MAKE_VALID_METHOD = "structure"

_POLYGONAL = ("Polygon", "MultiPolygon")


def polygonal_parts(geometry: BaseGeometry) -> list[Polygon]:
    """The non-empty polygons inside ``geometry`` (any type; collections are flattened)."""
    parts = shapely.get_parts(geometry)
    polygons: list[Polygon] = []
    for part in parts:
        if part.geom_type == "Polygon":
            if not part.is_empty:
                polygons.append(part)
        elif part.geom_type in ("MultiPolygon", "GeometryCollection"):
            polygons.extend(polygonal_parts(part))
    return polygons


def _as_polygonal(polygons: list[Polygon]) -> Polygon | MultiPolygon | None:
    if not polygons:
        return None
    if len(polygons) == 1:
        return polygons[0]
    return MultiPolygon(polygons)


def _type_counts(geometries: Iterable[BaseGeometry]) -> str:
    counts = Counter(g.geom_type for g in geometries)
    return ", ".join(f"{name} x{n}" if n > 1 else name for name, n in sorted(counts.items()))


def repair_polygonal(
    geometry: BaseGeometry | None,
) -> tuple[Polygon | MultiPolygon | None, list[str]]:
    """A valid Polygon or MultiPolygon with the same area as ``geometry``, and what was done to it.

    Returns ``(None, [why])`` when nothing with an area remains. The notes are empty when the input
    was already a valid polygon or multipolygon; a note that changes the geometry says "repaired".
    """
    if geometry is None or geometry.is_empty:
        return None, ["no geometry"]
    polygons = polygonal_parts(geometry)
    if not polygons:
        return None, [f"not a polygon: {geometry.geom_type}"]
    notes: list[str] = []
    if geometry.geom_type not in _POLYGONAL:
        others = [p for p in shapely.get_parts(geometry) if p.geom_type not in _POLYGONAL]
        if others:
            notes.append(f"{REPAIRED}: dropped non-polygonal parts ({_type_counts(others)})")
    coordinates = shapely.get_coordinates(polygons, include_z=False)
    if not np.isfinite(coordinates).all():
        return None, [*notes, "invalid coordinates (NaN or infinite)"]
    candidate = _as_polygonal(polygons)
    assert candidate is not None
    if candidate.is_valid:
        return candidate, notes

    reason = explain_validity(candidate)
    before = candidate.area
    # Also where a collection's polygons overlap: as one multipolygon, they are invalid.
    fixed = shapely.make_valid(candidate, method=MAKE_VALID_METHOD, keep_collapsed=False)
    kept = [p for p in polygonal_parts(fixed) if p.area > 0.0]
    dropped = len(polygonal_parts(fixed)) - len(kept)
    result = _as_polygonal(kept)
    if result is not None and not result.is_valid:
        # Parts of a collection may touch along an edge; the union is one valid multipolygon.
        merged = shapely.union_all(kept)
        result = _as_polygonal(polygonal_parts(merged))
    if result is None:
        return None, [*notes, f"{reason}: nothing with an area is left after make_valid"]
    after = result.area
    if before > 0.0:
        measure = f"area kept {100.0 * after / before:.2f}%"
    else:
        measure = f"area {after:.6g} sq. degrees (the input's rings have no net area: {before:.6g})"
    note = f"{reason}: {REPAIRED} with make_valid ({MAKE_VALID_METHOD}), {measure}"
    if dropped:
        note += f", dropped {dropped} zero-area part(s)"
    notes.append(note)
    return result, notes


def _unwrap(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Longitudes made continuous: every jump of more than 180 degrees becomes a step of 360."""
    step = np.diff(x)
    shift = np.where(step > 180.0, -360.0, np.where(step < -180.0, 360.0, 0.0))
    return x + np.concatenate(([0.0], np.cumsum(shift)))


def _unwrapped_ring(coords: NDArray[np.float64]) -> NDArray[np.float64]:
    """A ring's coordinates with continuous longitudes, closed over the pole when it circles one.

    A ring around a pole (Antarctica) unwraps to a line 360 degrees long; it is closed along the
    nearer pole, which is how it looks on a lon/lat map.
    """
    x = _unwrap(coords[:, 0])
    y = coords[:, 1]
    if x[-1] == x[0]:
        return np.column_stack((x, y))
    pole = -90.0 if float(np.mean(y)) < 0.0 else 90.0
    closing_x = np.array([x[-1], x[0], x[0]])
    closing_y = np.array([pole, pole, y[0]])
    return np.column_stack((np.concatenate((x, closing_x)), np.concatenate((y, closing_y))))


def _crosses(polygon: Polygon) -> bool:
    for ring in (polygon.exterior, *polygon.interiors):
        x = np.asarray(ring.coords)[:, 0]
        if len(x) and (np.abs(x).max() > 180.0 or (np.abs(np.diff(x)) > 180.0).any()):
            return True
    return False


def _even_odd(rings: list[NDArray[np.float64]]) -> BaseGeometry:
    """The area inside an odd number of the rings: what rings that do not nest mean."""
    area: BaseGeometry = Polygon()
    for ring in rings:
        area = shapely.symmetric_difference(area, shapely.make_valid(Polygon(ring)))
    return area


def _split_polygon(polygon: Polygon) -> list[Polygon]:
    shell = _unwrapped_ring(np.asarray(polygon.exterior.coords)[:, :2])
    low, high = float(shell[:, 0].min()), float(shell[:, 0].max())
    middle = (low + high) / 2.0
    holes = []
    for interior in polygon.interiors:
        hole = _unwrapped_ring(np.asarray(interior.coords)[:, :2])
        # Each ring is unwrapped on its own; move the hole next to its shell.
        hole[:, 0] += 360.0 * round((middle - float(hole[:, 0].mean())) / 360.0)
        holes.append(hole)
    bottom = min(float(shell[:, 1].min()), -90.0) - 1.0
    top = max(float(shell[:, 1].max()), 90.0) + 1.0
    turns = range(int(np.floor((low + 180.0) / 360.0)), int(np.ceil((high - 180.0) / 360.0)) + 1)
    windows = [
        (360.0 * turn, (360.0 * turn - 180.0, bottom, 360.0 * turn + 180.0, top)) for turn in turns
    ]
    unwrapped: BaseGeometry = Polygon(shell, holes)
    try:
        clipped = [(offset, shapely.clip_by_rect(unwrapped, *box)) for offset, box in windows]
    except shapely.errors.GEOSException:
        # Rings that do not nest, as in Natural Earth's Antarctica: a ring at -89.999 is the shell
        # and the coast, larger, its hole. Closed over the pole, even-odd gives the land.
        unwrapped = _even_odd([shell, *holes])
        clipped = [(offset, shapely.clip_by_rect(unwrapped, *box)) for offset, box in windows]
    pieces: list[Polygon] = []
    for offset, part in clipped:
        for piece in polygonal_parts(part):
            if offset:
                piece = shapely.transform(piece, lambda c, o=offset: c - np.array([o, 0.0]))
            if piece.area > 0.0:
                pieces.append(piece)
    return pieces


def split_antimeridian(geometry: BaseGeometry) -> BaseGeometry:
    """Split polygons that cross the antimeridian into parts on each side, cut at ±180 exactly.

    A crossing is a ring whose consecutive longitudes differ by more than 180 degrees (179.5 ->
    -179.5) or a ring with longitudes beyond ±180 (0-360 data). Anything else is returned unchanged
    (the same object). The result may be invalid where the input was; repair it afterwards.
    """
    polygons = polygonal_parts(geometry)
    if not polygons or not any(_crosses(p) for p in polygons):
        return geometry
    out: list[Polygon] = []
    for polygon in polygons:
        out.extend(_split_polygon(polygon) if _crosses(polygon) else [polygon])
    if geometry.geom_type in _POLYGONAL:
        return MultiPolygon(out)
    # A collection keeps its other members; repair_polygonal drops them, with a note.
    others = [p for p in shapely.get_parts(geometry) if p.geom_type not in _POLYGONAL]
    return shapely.GeometryCollection([*out, *others])
