"""Registry exports for GIS users: a GeoPackage layer (through fiona), or registry GeoJSON."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import shapely.geometry
from shapely.geometry import MultiPolygon, Polygon

from common.errors import InvalidInput
from common.models import Jurisdiction
from resolver.registry.documents import registry_document

#: One GeoPackage layer; nested facts (endpoints, services) are JSON text columns.
_SCHEMA: dict[str, Any] = {
    "geometry": "MultiPolygon",
    "properties": {
        "id": "str",
        "name": "str",
        "domain": "str",
        "jurisdiction_id": "str",
        "discovery_url": "str",
        "endpoint": "str",
        "boundary_generation": "str",
        "origin": "str",
        "version": "int",
        "updated": "str",
        "expires": "str",
        "attested": "bool",
        "endpoints_json": "str",
        "services_json": "str",
    },
}


def export_registry(
    jurisdictions: Sequence[Jurisdiction], out: Path, *, registry_id: str, serial: int
) -> None:
    """Write ``out`` by its suffix: ``.gpkg`` (layer ``jurisdictions``, WGS84; entries without a
    boundary have no geometry) or ``.geojson``/``.json``. Written beside and renamed into place,
    so a failed export never leaves half a file."""
    suffix = out.suffix.lower()
    if suffix not in (".gpkg", ".geojson", ".json"):
        raise InvalidInput(f"{out}: export to .gpkg, .geojson or .json")
    partial = out.with_name(f".{out.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        if suffix == ".gpkg":
            _write_gpkg(jurisdictions, partial)
        else:
            document = registry_document(jurisdictions, id=registry_id, serial=serial)
            partial.write_bytes(orjson.dumps(document) + b"\n")
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)


def _write_gpkg(jurisdictions: Sequence[Jurisdiction], path: Path) -> None:
    import fiona  # GDAL: imported when a GeoPackage is written, not by every command
    from fiona.crs import CRS

    with fiona.open(
        path, "w", driver="GPKG", schema=_SCHEMA, crs=CRS.from_epsg(4326), layer="jurisdictions"
    ) as layer:
        layer.writerecords(_record(j) for j in jurisdictions)


def _record(j: Jurisdiction) -> dict[str, Any]:
    boundary = j.boundary
    if isinstance(boundary, Polygon):
        boundary = MultiPolygon([boundary])
    endpoint = j.endpoint
    return {
        "geometry": shapely.geometry.mapping(boundary) if boundary is not None else None,
        "properties": {
            "id": j.id,
            "name": j.name,
            "domain": j.domain,
            "jurisdiction_id": j.jurisdiction_id,
            "discovery_url": j.discovery_url,
            "endpoint": endpoint.url if endpoint else None,
            "boundary_generation": j.boundary_generation,
            "origin": j.origin,
            "version": j.version,
            "updated": j.updated,
            "expires": j.expires,
            "attested": j.attested,
            "endpoints_json": orjson.dumps([e.to_dict() for e in j.endpoints]).decode(),
            "services_json": None
            if j.services is None
            else orjson.dumps([s.to_dict() for s in j.services]).decode(),
        },
    }
