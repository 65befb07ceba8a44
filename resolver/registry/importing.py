"""``geoweb import``: a boundary file becomes jurisdictions in the store, in one transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from boundaries.reader import BoundaryReport, read_boundaries
from common.errors import InvalidInput
from common.models import Endpoint, Jurisdiction, Provenance
from discovery.urls import normalize_base_url, normalize_discovery_url
from resolver.store import Store


@dataclass(frozen=True)
class ImportOptions:
    """What applies to every feature of one boundary file."""

    id_field: str
    name_field: str
    layer: str | None = None
    assume_crs: str | None = None
    domain: str | None = None
    jurisdiction_id: str | None = None
    discovery_url: str | None = None
    endpoint_url: str | None = None
    replace: bool = False


@dataclass(frozen=True)
class ImportSummary:
    source: str
    imported: int
    repaired: list[tuple[str, str]]
    without_geometry: list[tuple[str, str]]


def jurisdictions_from_report(report: BoundaryReport, options: ImportOptions) -> list[Jurisdiction]:
    """One jurisdiction per feature, with provenance pointing back at the file and feature."""
    if options.discovery_url and options.endpoint_url:
        raise InvalidInput("give --discovery-url or --endpoint-url, not both")
    endpoints: tuple[Endpoint, ...] = ()
    notes: list[str] = []
    if options.endpoint_url:
        try:
            url, fixes = normalize_base_url(options.endpoint_url)
        except ValueError as exc:
            raise InvalidInput(f"--endpoint-url: {exc}") from exc
        endpoints = (Endpoint(url=url),)
        notes.extend(fixes)
    discovery_url = None
    if options.discovery_url:
        discovery_url, fixes = normalize_discovery_url(options.discovery_url)
        notes.extend(fixes)
    retrieved = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    name = Path(report.path).name
    jurisdictions = []
    for feature in report.features:
        reference = f"{name}#{options.id_field}={feature.id}"
        jurisdictions.append(
            Jurisdiction(
                id=feature.id,
                name=feature.name,
                domain=options.domain,
                jurisdiction_id=options.jurisdiction_id,
                discovery_url=discovery_url,
                endpoints=endpoints,
                provenance=(Provenance("boundary", "import", reference, retrieved=retrieved),),
                notes=(*feature.notes, *notes),
            ).with_boundary(feature.geometry)
        )
    return jurisdictions


def import_boundary_file(
    store: Store,
    path: str | Path,
    options: ImportOptions,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Read, repair and store a boundary file; a failure at any step changes nothing."""
    report = read_boundaries(
        path,
        id_field=options.id_field,
        name_field=options.name_field,
        layer=options.layer,
        assume_crs=options.assume_crs,
        progress=progress,
    )
    jurisdictions = jurisdictions_from_report(report, options)
    summary = ImportSummary(
        source=str(path),
        imported=len(jurisdictions),
        repaired=[(f.id, "; ".join(f.notes)) for f in report.repaired],
        without_geometry=[(f.id, "; ".join(f.notes)) for f in report.without_geometry],
    )
    store.save(
        jurisdictions,
        replace=options.replace,
        source=str(path),
        report={
            "source_crs": report.source_crs,
            "repaired": summary.repaired,
            "without_geometry": summary.without_geometry,
        },
    )
    return summary
