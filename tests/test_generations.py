"""Boundary generations are a content hash that float round-off cannot change.

A generation names a boundary everywhere (registry entries, ``g=`` in DNS, the index): the same
area must keep the same generation when it comes back through a projected file, is drawn from
another vertex or in the other direction, or its parts are listed in another order; and a real
change must change it. Stores written by older versions have their generations recomputed once.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import fiona
import pytest
import shapely
from fiona.transform import transform_geom
from shapely.geometry import MultiPolygon, Polygon

from boundaries.reader import read_boundaries
from common.models import (
    GENERATION_GRID,
    GENERATION_SCHEME,
    Jurisdiction,
    boundary_generation,
    generation_matches,
)
from resolver.registry.documents import jurisdiction_from_feature, jurisdiction_to_feature
from resolver.store import Store

COUNTIES_FIELDS = {"id_field": "geoid", "name_field": "name"}


def _legacy(geometry: shapely.Geometry) -> str:
    """The first scheme's generation: normalized, not snapped."""
    wkb = shapely.to_wkb(shapely.normalize(geometry), output_dimension=2, byte_order=1)
    return hashlib.sha256(wkb).hexdigest()[:16]


def _projected_copy(source: Path, crs: str, out: Path) -> Path:
    """The counties file written as a GeoPackage in ``crs``: what an operator's GIS exports."""
    with fiona.open(source) as src:
        schema = {"geometry": "Unknown", "properties": {"geoid": "str", "name": "str"}}
        with fiona.open(out, "w", driver="GPKG", crs=crs, schema=schema) as dst:
            for feature in src:
                geometry = feature.geometry
                dst.write(
                    {
                        "geometry": None
                        if geometry is None
                        else transform_geom("EPSG:4326", crs, geometry),
                        "properties": {
                            "geoid": feature.properties["geoid"],
                            "name": feature.properties["name"],
                        },
                    }
                )
    return out


@pytest.mark.parametrize("crs", ["EPSG:3857", "EPSG:2263"])
def test_a_projected_round_trip_leaves_every_county_generation_unchanged(
    shared_data: Path, tmp_path: Path, crs: str
) -> None:
    counties = shared_data / "us-counties.geojson"
    original = read_boundaries(counties, **COUNTIES_FIELDS)
    projected = _projected_copy(counties, crs, tmp_path / f"counties-{crs[5:]}.gpkg")
    back = read_boundaries(projected, **COUNTIES_FIELDS)
    assert back.source_crs != original.source_crs
    before = {f.id: f.geometry for f in original.features if f.geometry is not None}
    after = {f.id: f.geometry for f in back.features if f.geometry is not None}
    assert len(before) > 3000 and before.keys() == after.keys()
    # the round trip really moved coordinates (by float round-off): the old scheme saw it
    moved = [i for i in before if not shapely.equals_exact(before[i], after[i], tolerance=0)]
    assert len(moved) > len(before) / 2
    assert sum(_legacy(before[i]) != _legacy(after[i]) for i in moved) > len(before) / 2
    changed = [i for i in before if boundary_generation(before[i]) != boundary_generation(after[i])]
    assert changed == []


# Coordinates off the 1e-7 grid, as real boundaries' are.
A, B, C, D = (0.123456789, 0.0), (1.0, 0.1), (1.0, 1.0), (0.0, 1.0)
HOLE = [(0.2, 0.2), (0.4, 0.2), (0.4, 0.4)]
SQUARE = Polygon([A, B, C, D], holes=[HOLE])
OTHER = Polygon([(2, 2), (3, 2), (3, 3.000000123)])


def test_ring_start_direction_and_part_order_do_not_count() -> None:
    reference = boundary_generation(MultiPolygon([SQUARE, OTHER]))
    turned = Polygon([C, D, A, B][::-1], holes=[HOLE[::-1]])
    assert boundary_generation(MultiPolygon([OTHER, turned])) == reference
    # a repeated vertex is the same ring
    doubled = Polygon([A, B, B, C, D], holes=[HOLE])
    assert boundary_generation(MultiPolygon([doubled, OTHER])) == reference


def test_round_off_does_not_count_but_a_moved_vertex_does() -> None:
    reference = boundary_generation(SQUARE)
    jitter = shapely.transform(SQUARE, lambda c: c + 3e-12)
    assert boundary_generation(jitter) == reference
    moved = Polygon([A, B, (1.0, 1.0 + 10 * GENERATION_GRID), D], holes=[HOLE])
    assert boundary_generation(moved) != reference


def test_a_part_smaller_than_one_grid_cell_is_round_off() -> None:
    sliver = Polygon([(5.0, 5.0), (5.00000001, 5.0), (5.0, 5.00000001)])
    assert boundary_generation(MultiPolygon([SQUARE, sliver])) == boundary_generation(SQUARE)


def test_a_registry_entry_with_an_older_scheme_generation_is_read() -> None:
    entry = Jurisdiction(id="sq", name="Square").with_boundary(SQUARE)
    feature = jurisdiction_to_feature(entry)
    feature["properties"]["boundary_generation"] = _legacy(SQUARE)
    assert _legacy(SQUARE) != entry.boundary_generation
    assert jurisdiction_from_feature(feature).boundary_generation == entry.boundary_generation
    assert generation_matches(SQUARE, _legacy(SQUARE))
    assert not generation_matches(SQUARE, "0123456789abcdef")


def test_an_older_store_has_its_generations_recomputed_once(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    entries = [
        Jurisdiction(id="sq", name="Square").with_boundary(SQUARE),
        Jurisdiction(id="tri", name="Triangle").with_boundary(OTHER),
        Jurisdiction(id="none", name="No boundary"),
    ]
    with Store(db) as store:
        store.save(entries, source="test")
        serial = store.serial
    # what a store written before the current scheme holds: old generations, no scheme key
    with sqlite3.connect(db) as connection:
        connection.execute("DELETE FROM geoweb_meta WHERE key = 'generation_scheme'")
        for j in entries[:2]:
            assert j.boundary is not None
            connection.execute(
                "UPDATE jurisdictions SET boundary_generation = ? WHERE id = ?",
                (_legacy(j.boundary), j.id),
            )
    with Store(db) as store:
        stored = {j.id: j.boundary_generation for j in store.jurisdictions()}
        assert stored == {j.id: j.boundary_generation for j in entries}
        # derived data: no new versions, nothing for mirrors to fetch again
        assert store.serial == serial
    with sqlite3.connect(db) as connection:
        (scheme,) = connection.execute(
            "SELECT value FROM geoweb_meta WHERE key = 'generation_scheme'"
        ).fetchone()
    assert int(scheme) == GENERATION_SCHEME
