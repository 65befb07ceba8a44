"""One set of rules for a boundary, wherever it comes from.

A boundary arrives as GeoJSON from many places: registry documents and mirror pages, a
registration, a jurisdiction's own ``b=`` file found through DNS, a discovery document's
``service_area``, a boundary file. Every one of them goes through :func:`boundary_from_geojson`
(or, for geometries a file reader already built, :func:`clean_boundary`), so a boundary one path
accepts is accepted, and repaired the same way, by all the others:

- a GeoJSON Polygon or MultiPolygon (a Feature or FeatureCollection only where the caller says);
- at most :data:`MAX_VERTICES` positions, counted before shapely builds anything;
- finite numbers, latitudes in [-90, 90], longitudes in [-540, 540] (0-360 data is split at the
  antimeridian; the result lies in [-180, 180]);
- split at the antimeridian and repaired by ``boundaries.repair`` (``make_valid`` with the
  ``structure`` method), keeping only polygons with an area: the result is always a valid Polygon
  or MultiPolygon with an area, never a GeometryCollection, a line or a point.

What was changed is said in notes; what cannot be used is an :class:`InvalidBoundary` saying why.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import numpy as np
import shapely
import shapely.geometry
from shapely.errors import ShapelyError
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from boundaries.repair import REPAIRED, polygonal_parts, repair_polygonal, split_antimeridian
from common.errors import InvalidBoundary

__all__ = [
    "MAX_VERTICES",
    "Accept",
    "InvalidBoundary",
    "boundary_from_geojson",
    "clean_boundary",
]

#: The most positions one boundary may have. The largest real boundaries (a country's coast at
#: full resolution) stay well below; more is an accident or an attack on the repair's CPU time.
MAX_VERTICES: Final = 1_000_000

#: What a caller takes besides a bare geometry: ``geometry`` nothing else; ``feature`` a Feature,
#: or a FeatureCollection of exactly one feature (a file that holds one boundary); ``collection``
#: a Feature or a FeatureCollection of any number, whose polygons together are the boundary.
Accept = Literal["geometry", "feature", "collection"]

_POLYGONAL: Final = ("Polygon", "MultiPolygon")


def boundary_from_geojson(
    obj: Any, *, accept: Accept = "geometry", max_vertices: int = MAX_VERTICES
) -> tuple[Polygon | MultiPolygon, list[str]]:
    """The boundary a GeoJSON object describes (parsed JSON), and a note per repair.

    :class:`InvalidBoundary` says why there is none: not GeoJSON, not polygons, too many
    vertices, coordinates that are not WGS84 longitude/latitude, nothing with an area left.
    """
    geometries = _geometries(obj, accept)
    if sum(_positions(g) for g in geometries) > max_vertices:
        raise InvalidBoundary(f"the boundary has more than {max_vertices} vertices")
    try:
        # NaN is refused below, with the rest of the coordinate rules, not warned about here.
        with np.errstate(invalid="ignore"):
            shapes = [shapely.geometry.shape(g) for g in geometries]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, ShapelyError) as exc:
        raise InvalidBoundary(f"the boundary is not a usable GeoJSON geometry: {exc}") from None
    if len(shapes) == 1:
        return clean_boundary(shapes[0], max_vertices=max_vertices)
    parts = [p for s in shapes for p in polygonal_parts(s)]
    # Several features: their polygons together; where they overlap or share an edge, the
    # repair merges them.
    return clean_boundary(MultiPolygon(parts), max_vertices=max_vertices)


def clean_boundary(
    geometry: BaseGeometry | None, *, max_vertices: int = MAX_VERTICES
) -> tuple[Polygon | MultiPolygon, list[str]]:
    """The rules of :func:`boundary_from_geojson` for a geometry already built (a file reader's):
    a valid Polygon or MultiPolygon in WGS84 with an area, split at ±180, and a note per repair."""
    if geometry is None or geometry.is_empty:
        raise InvalidBoundary("the boundary is empty")
    if shapely.get_num_coordinates(geometry) > max_vertices:
        raise InvalidBoundary(f"the boundary has more than {max_vertices} vertices")
    geometry = shapely.force_2d(geometry)
    coordinates = shapely.get_coordinates(geometry)
    if not np.isfinite(coordinates).all():
        raise InvalidBoundary("the boundary has coordinates that are not finite numbers")
    if (np.abs(coordinates[:, 1]) > 90.0).any() or (np.abs(coordinates[:, 0]) > 540.0).any():
        raise InvalidBoundary(
            "the boundary is not in WGS84 longitude/latitude (GeoJSON order: [long, lat])"
        )
    notes: list[str] = []
    try:
        split = split_antimeridian(geometry)
        if split is not geometry:
            reason = "" if geometry.is_valid else f"{explain_validity(geometry)}: "
            notes.append(
                f"{reason}crossed the antimeridian; {REPAIRED} by splitting at ±180 "
                f"into {len(polygonal_parts(split))} part(s)"
            )
        repaired, repair_notes = repair_polygonal(split)
    except shapely.errors.GEOSException as exc:
        # GEOS gives up on some pathological rings.
        raise InvalidBoundary(f"the boundary cannot be repaired: {exc}") from None
    notes.extend(repair_notes)
    if repaired is None or not repaired.area > 0.0:
        raise InvalidBoundary(f"the boundary has no usable area: {'; '.join(notes)}")
    minx, _miny, maxx, _maxy = repaired.bounds
    if minx < -180.0 or maxx > 180.0:
        raise InvalidBoundary("the boundary's longitudes are outside [-180, 180]")
    return repaired, notes


def _geometries(obj: Any, accept: Accept) -> list[dict[str, Any]]:
    """The GeoJSON geometry objects the boundary is made of."""
    if not isinstance(obj, dict):
        raise InvalidBoundary("the boundary is not a GeoJSON object")
    kind = obj.get("type")
    if kind == "FeatureCollection" and accept != "geometry":
        features = obj.get("features")
        if not isinstance(features, list | tuple) or not features:
            raise InvalidBoundary("the boundary's FeatureCollection has no features")
        if accept == "feature" and len(features) != 1:
            raise InvalidBoundary("a boundary collection must hold one feature")
        return [_feature_geometry(f) for f in features]
    if kind == "Feature" and accept != "geometry":
        return [_feature_geometry(obj)]
    if kind not in _POLYGONAL:
        raise InvalidBoundary(f"a boundary must be a Polygon or MultiPolygon, not {kind}")
    return [obj]


def _feature_geometry(feature: Any) -> dict[str, Any]:
    geometry = feature.get("geometry") if isinstance(feature, dict) else None
    if not isinstance(geometry, dict):
        raise InvalidBoundary("a boundary feature must have a geometry")
    kind = geometry.get("type")
    if kind not in _POLYGONAL:
        raise InvalidBoundary(f"a boundary must be a Polygon or MultiPolygon, not {kind}")
    return geometry


def _positions(geometry: dict[str, Any]) -> int:
    """How many positions the geometry has, counted ring by ring (cheap: no position is
    visited) so a huge boundary is refused before shapely builds it."""
    coordinates = geometry.get("coordinates")
    polygons = [coordinates] if geometry.get("type") == "Polygon" else coordinates
    if not isinstance(polygons, list | tuple):
        raise InvalidBoundary("the boundary's coordinates must be nested lists of positions")
    count = 0
    for polygon in polygons:
        if not isinstance(polygon, list | tuple):
            raise InvalidBoundary("the boundary's coordinates must be nested lists of positions")
        for ring in polygon:
            if not isinstance(ring, list | tuple):
                raise InvalidBoundary("the boundary's rings must be lists of positions")
            count += len(ring)
    return count
