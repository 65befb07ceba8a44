"""Boundaries as KML 2.2 (the format the GeoWeb DNS protocol links to from each result)."""

from __future__ import annotations

from xml.sax.saxutils import escape

from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

KML_NAMESPACE = "http://www.opengis.net/kml/2.2"


def _ring(coords: object) -> str:
    points = " ".join(f"{x:.7f},{y:.7f}" for x, y, *_ in coords)  # type: ignore[attr-defined]
    return f"<LinearRing><coordinates>{points}</coordinates></LinearRing>"


def _polygon(polygon: Polygon) -> str:
    inner = "".join(
        f"<innerBoundaryIs>{_ring(r.coords)}</innerBoundaryIs>" for r in polygon.interiors
    )
    outer = f"<outerBoundaryIs>{_ring(polygon.exterior.coords)}</outerBoundaryIs>"
    return f"<Polygon>{outer}{inner}</Polygon>"


def geometry_kml(geometry: BaseGeometry) -> str:
    """A KML geometry element for a Polygon or MultiPolygon (longitude,latitude order)."""
    if isinstance(geometry, Polygon):
        return _polygon(geometry)
    if isinstance(geometry, MultiPolygon):
        return "<MultiGeometry>" + "".join(_polygon(p) for p in geometry.geoms) + "</MultiGeometry>"
    raise ValueError(f"KML boundaries are polygons, not {geometry.geom_type}")


def placemark_document(name: str, geometry: BaseGeometry | None, description: str = "") -> str:
    """A whole KML document with one Placemark; no geometry gives a Placemark without one."""
    body = geometry_kml(geometry) if geometry is not None else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<kml xmlns="{KML_NAMESPACE}"><Document><Placemark>'
        f"<name>{escape(name)}</name><description>{escape(description)}</description>"
        f"{body}</Placemark></Document></kml>\n"
    )
