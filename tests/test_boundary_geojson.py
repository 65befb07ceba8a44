"""The one GeoJSON-to-boundary function: every path that reads a boundary applies these rules."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, box, mapping
from shapely.geometry.base import BaseGeometry

from boundaries.geojson import boundary_from_geojson, clean_boundary
from common.errors import InvalidBoundary, RegistryError
from discovery.documents import parse_discovery
from resolver.registry.documents import jurisdiction_from_feature
from resolver.sources.dns_registry import BoundaryError, parse_boundary


def _polygon(*rings: list[tuple[float, float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[list(p) for p in ring] for ring in rings]}


SQUARE = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)]
HOLE = [(0.25, 0.25), (0.75, 0.25), (0.75, 0.75), (0.25, 0.75), (0.25, 0.25)]

GOOD = [
    # a plain square: taken as it is, nothing to say
    (_polygon(SQUARE), "Polygon", 1.0, []),
    # a square with a hole: the hole is kept
    (_polygon(SQUARE, HOLE), "Polygon", 0.75, []),
    # a bowtie (the ring crosses itself): repaired into two triangles, the area of both kept
    (
        _polygon([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)]),
        "MultiPolygon",
        2.0,
        ["Self-intersection[1 1]: repaired with make_valid (structure)"],
    ),
    # a ring crossing the antimeridian (179.5 -> -179.5): split at ±180 into two parts
    (
        _polygon([(179.5, -16), (-179.5, -16), (-179.5, -17), (179.5, -17), (179.5, -16)]),
        "MultiPolygon",
        1.0,
        ["crossed the antimeridian; repaired by splitting at ±180 into 2 part(s)"],
    ),
    # a square with a spike: make_valid's default would give a GeometryCollection with a line;
    # the spike is dropped and a polygon remains
    (
        _polygon([(0, 0), (2, 0), (2, 2), (3, 3), (2, 2), (0, 2), (0, 0)]),
        "Polygon",
        4.0,
        ["Ring Self-intersection[2 2]: repaired with make_valid (structure)"],
    ),
    # three dimensions: the heights are dropped
    (_polygon([(0, 0, 5), (1, 0, 5), (1, 1, 5), (0, 0, 5)]), "Polygon", 0.5, []),
]


@pytest.mark.parametrize(("obj", "kind", "area", "notes"), GOOD)
def test_usable_boundaries(obj: dict[str, Any], kind: str, area: float, notes: list[str]) -> None:
    geometry, said = boundary_from_geojson(obj)
    assert geometry.geom_type == kind and geometry.is_valid
    assert geometry.area == pytest.approx(area)
    assert len(said) == len(notes)
    for note, expected in zip(said, notes, strict=True):
        assert note.startswith(expected), note
    minx, miny, maxx, maxy = geometry.bounds
    assert -180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90


BAD = [
    # a point is not a boundary
    ({"type": "Point", "coordinates": [0, 0]}, "must be a Polygon or MultiPolygon, not Point"),
    # nor is a line
    ({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, "not LineString"),
    # a ring of three positions (a line there and back)
    (_polygon([(0, 0), (1, 0), (0, 0)]), "no usable area"),
    # a ring of two positions: not even a ring
    (_polygon([(0, 0), (1, 0)]), "not a usable GeoJSON geometry"),
    # a ring whose points lie on one line: nothing with an area is left after repair
    (_polygon([(0, 0), (1, 0), (2, 0), (0, 0)]), "no usable area"),
    # NaN in a position
    (_polygon([(0, 0), (1, math.nan), (1, 1), (0, 0)]), "not finite numbers"),
    # infinity
    (_polygon([(0, 0), (1, math.inf), (1, 1), (0, 0)]), "not finite numbers"),
    # latitude 1000: not WGS84 (or projected coordinates)
    (_polygon([(0, 0), (1, 1000), (1, 1), (0, 0)]), "not in WGS84 longitude/latitude"),
    # coordinates that are text
    ({"type": "Polygon", "coordinates": "30,-29"}, "nested lists of positions"),
    # no geometry at all
    ({"type": "Polygon", "coordinates": []}, "empty"),
    # not a GeoJSON object
    ([[0, 0], [1, 1]], "not a GeoJSON object"),
    # a Feature where only a geometry is taken
    ({"type": "Feature", "geometry": _polygon(SQUARE)}, "not Feature"),
]


@pytest.mark.parametrize(("obj", "why"), BAD)
def test_unusable_boundaries_say_why(obj: Any, why: str) -> None:
    with pytest.raises(InvalidBoundary) as caught:
        boundary_from_geojson(obj)
    assert why in caught.value.detail
    assert (caught.value.status, caught.value.code) == (400, "invalid_boundary")


def test_too_many_vertices_are_refused_before_shapely_builds_them() -> None:
    ring = [(math.cos(a / 100), math.sin(a / 100)) for a in range(629)]
    obj = _polygon([*ring, ring[0]])
    assert boundary_from_geojson(obj, max_vertices=630)[0].geom_type == "Polygon"
    with pytest.raises(InvalidBoundary, match="more than 629 vertices"):
        boundary_from_geojson(obj, max_vertices=629)
    with pytest.raises(InvalidBoundary, match="more than 10 vertices"):
        clean_boundary(shapely.geometry.shape(obj), max_vertices=10)


FEATURES = [
    # a bare geometry, a Feature, and a collection of one: the same boundary
    ("feature", _polygon(SQUARE), 1.0),
    ("feature", {"type": "Feature", "geometry": _polygon(SQUARE)}, 1.0),
    (
        "feature",
        {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "geometry": _polygon(SQUARE)}],
        },
        1.0,
    ),
    # several features where the caller takes a collection: their union (the shared edge merged)
    (
        "collection",
        {
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "geometry": mapping(box(0, 0, 1, 1))},
                {"type": "Feature", "geometry": mapping(box(1, 0, 2, 1))},
            ],
        },
        2.0,
    ),
]


@pytest.mark.parametrize(("accept", "obj", "area"), FEATURES)
def test_features_where_the_caller_takes_them(
    accept: Any, obj: dict[str, Any], area: float
) -> None:
    geometry, _notes = boundary_from_geojson(obj, accept=accept)
    assert geometry.is_valid and geometry.area == pytest.approx(area)
    assert geometry.geom_type == "Polygon"


FEATURE_ERRORS = [
    # a collection of two where one boundary is expected
    (
        "feature",
        {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "geometry": mapping(box(0, 0, 1, 1))}] * 2,
        },
        "must hold one feature",
    ),
    # an empty collection
    ("collection", {"type": "FeatureCollection", "features": []}, "has no features"),
    # a feature without a geometry
    ("collection", {"type": "Feature", "geometry": None}, "must have a geometry"),
    # a feature with a point
    (
        "feature",
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}},
        "not Point",
    ),
]


@pytest.mark.parametrize(("accept", "obj", "why"), FEATURE_ERRORS)
def test_feature_errors(accept: Any, obj: dict[str, Any], why: str) -> None:
    with pytest.raises(InvalidBoundary) as caught:
        boundary_from_geojson(obj, accept=accept)
    assert why in caught.value.detail


def test_a_clean_boundary_comes_back_unchanged() -> None:
    # What a registry stores is already clean: reading it again keeps it (and its generation).
    fiji = MultiPolygon([box(179, -18, 180, -16), box(-180, -18, -179, -16)])
    for geometry in (box(0, 0, 1, 1), fiji, Polygon(SQUARE, [HOLE])):
        again, notes = boundary_from_geojson(mapping(geometry))
        assert notes == [] and shapely.equals_exact(again, geometry, tolerance=0)


# -- every path that reads a boundary applies the same rules -----------------------------------

BOWTIE = _polygon([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)])
POINT = {"type": "Point", "coordinates": [0, 0]}


def _via_registry(geometry: dict[str, Any]) -> BaseGeometry:
    feature = {"type": "Feature", "geometry": geometry, "properties": {"id": "x", "name": "X"}}
    boundary = jurisdiction_from_feature(feature).boundary
    assert boundary is not None
    return boundary


def _via_service_area(geometry: dict[str, Any]) -> BaseGeometry:
    document = {
        "changeset": "2024-01-01T00:00:00Z",
        "contact": "",
        "key_service": "",
        "endpoints": [
            {
                "specification": "http://wiki.open311.org/GeoReport_v2",
                "url": "https://city.example/open311/v2",
                "changeset": "2024-01-01T00:00:00Z",
                "type": "production",
                "formats": ["application/json"],
            }
        ],
        "service_area": geometry,
    }
    area = parse_discovery(json.dumps(document).encode(), "application/json").service_area
    if area is None:
        raise InvalidBoundary("ignored")
    return area


def _via_dns(geometry: dict[str, Any]) -> BaseGeometry:
    return parse_boundary(json.dumps(geometry).encode(), "https://city.example/boundary.geojson")


PATHS = [
    # a registry document or mirror page (registrations read theirs the same way)
    (_via_registry, RegistryError),
    # a discovery document's service_area: an unusable one is ignored, the document kept
    (_via_service_area, InvalidBoundary),
    # a b= boundary found through DNS
    (_via_dns, BoundaryError),
]


@pytest.mark.parametrize(("read", "error"), PATHS)
def test_every_path_repairs_and_refuses_alike(read: Any, error: type[Exception]) -> None:
    expected, _notes = boundary_from_geojson(BOWTIE)
    assert shapely.equals_exact(read(BOWTIE), expected, tolerance=0)
    with pytest.raises(error):
        read(POINT)
