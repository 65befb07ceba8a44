"""Registry documents: jurisdictions as a GeoJSON FeatureCollection.

One feature per jurisdiction; ``geometry`` is the boundary (``null`` when none is known) and
``properties`` carries everything else. The embedded registry (``registry_data/registry.geojson``)
uses this format, and so do registry snapshots served to mirrors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import shapely.geometry
from shapely.geometry.base import BaseGeometry

from boundaries.geojson import boundary_from_geojson
from common.errors import InvalidBoundary, RegistryError
from common.models import (
    Endpoint,
    Jurisdiction,
    Provenance,
    Service,
    boundary_generation,
    generation_matches,
)
from resolver.core.federation import timestamp

if TYPE_CHECKING:
    from resolver.store import Store

REGISTRY_FORMAT = "geowebdns-registry/1"


def jurisdiction_to_feature(jurisdiction: Jurisdiction) -> dict[str, Any]:
    """A GeoJSON Feature for one jurisdiction (boundary included)."""
    geometry = jurisdiction.boundary
    properties = jurisdiction.to_dict()
    for derived in ("has_boundary", "bbox"):
        properties.pop(derived)
    return {
        "type": "Feature",
        "id": jurisdiction.id,
        "geometry": shapely.geometry.mapping(geometry) if geometry is not None else None,
        "properties": properties,
    }


def jurisdiction_from_feature(feature: dict[str, Any]) -> Jurisdiction:
    """Read one Feature back; raises :class:`RegistryError` naming what is wrong."""
    try:
        props = feature["properties"]
        geometry, repairs = _geometry(feature.get("geometry"), props.get("id"))
        generation = props.get("boundary_generation")
        computed = boundary_generation(geometry)
        if (
            generation is not None
            and generation != computed
            and (geometry is None or not generation_matches(geometry, generation))
        ):
            raise RegistryError(
                f"jurisdiction {props.get('id')!r}: boundary_generation {generation} does not "
                f"match its geometry ({computed})"
            )
        services = props.get("services")
        entry = props.get("entry") or {}
        return Jurisdiction(
            id=str(props["id"]),
            name=str(props["name"]),
            boundary=geometry,
            boundary_generation=computed,
            domain=props.get("domain"),
            jurisdiction_id=props.get("jurisdiction_id"),
            discovery_url=props.get("discovery_url"),
            endpoints=tuple(Endpoint.from_dict(e) for e in props.get("endpoints") or ()),
            services=None if services is None else tuple(Service.from_dict(s) for s in services),
            provenance=tuple(Provenance(**p) for p in props.get("provenance") or ()),
            notes=(*(props.get("notes") or ()), *repairs),
            origin=None if entry.get("origin") is None else str(entry["origin"]),
            version=int(entry.get("version") or 0),
            updated=entry.get("updated"),
            expires=entry.get("expires"),
            attested=entry.get("attested") is True,
        )
    except RegistryError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RegistryError(f"malformed registry feature {feature.get('id')!r}: {exc}") from exc


def _geometry(data: dict[str, Any] | None, id_: Any) -> tuple[BaseGeometry | None, list[str]]:
    """The boundary by the rules every path applies (``boundaries.geojson``), and its repairs."""
    if data is None:
        return None, []
    try:
        return boundary_from_geojson(data)
    except InvalidBoundary as error:
        raise RegistryError(f"jurisdiction {id_!r}: {error.detail}") from None


def registry_document(jurisdictions: Iterable[Jurisdiction], **meta: Any) -> dict[str, Any]:
    """A whole registry as a FeatureCollection with a ``registry`` member for its metadata."""
    return {
        "type": "FeatureCollection",
        "registry": {"format": REGISTRY_FORMAT, **meta},
        "features": [jurisdiction_to_feature(j) for j in jurisdictions],
    }


def read_registry(document: dict[str, Any]) -> list[Jurisdiction]:
    """Jurisdictions from a registry document; refuses duplicates and unknown formats."""
    if document.get("type") != "FeatureCollection":
        raise RegistryError("a registry must be a GeoJSON FeatureCollection")
    fmt = (document.get("registry") or {}).get("format", REGISTRY_FORMAT)
    if fmt != REGISTRY_FORMAT:
        raise RegistryError(
            f"unknown registry format {fmt!r} (this version reads {REGISTRY_FORMAT})"
        )
    jurisdictions = [jurisdiction_from_feature(f) for f in document.get("features") or ()]
    seen: set[str] = set()
    for j in jurisdictions:
        if j.id in seen:
            raise RegistryError(f"jurisdiction id {j.id!r} appears twice")
        seen.add(j.id)
    return jurisdictions


EMBEDDED_REGISTRY = "registry.geojson"


def embedded_registry_path() -> Path:
    """Where the registry shipped with the package lives."""
    return Path(str(resources.files("registry_data") / EMBEDDED_REGISTRY))


def load_embedded_registry() -> list[Jurisdiction]:
    """The default registry shipped with the package (real endpoints, real boundaries)."""
    with embedded_registry_path().open(encoding="utf-8") as f:
        return read_registry(json.load(f))


def load_jurisdictions(store: Store) -> tuple[list[Jurisdiction], str]:
    """The store's live jurisdictions (past their expiry: left out), and where they come from
    (``store``). The embedded registry is one of the store's layers
    (:mod:`resolver.registry.embedded`), taken in when the store is opened for serving."""
    stored = store.jurisdictions()
    now = timestamp()
    # Most entries never expire: one comparison each, not a call (a million at a server's start).
    return [j for j in stored if j.expires is None or not j.expired(now)], "store"
