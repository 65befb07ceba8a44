"""``geoweb import``: a boundary file becomes jurisdictions in the store, in one transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from boundaries.reader import BoundaryReport, read_boundaries
from common.errors import InvalidInput
from common.models import Endpoint, Jurisdiction, Provenance
from discovery.urls import is_hostname, normalize_base_url, normalize_discovery_url
from resolver.core.validation import check_entry
from resolver.store import Store
from resolver.store.entries import JurisdictionRow


@dataclass(frozen=True)
class ImportOptions:
    """What applies to the features of one boundary file: a constant for every feature, or the
    attribute each feature carries its own value in (``*_field``), never both."""

    id_field: str
    name_field: str
    layer: str | None = None
    assume_crs: str | None = None
    domain: str | None = None
    jurisdiction_id: str | None = None
    discovery_url: str | None = None
    endpoint_url: str | None = None
    domain_field: str | None = None
    jurisdiction_id_field: str | None = None
    discovery_url_field: str | None = None
    endpoint_url_field: str | None = None
    replace: bool = False
    #: Let a feature without geometry replace a stored entry that has a boundary (which is then
    #: lost); without it such an import is refused whole.
    allow_missing_geometry: bool = False


@dataclass(frozen=True)
class ImportSummary:
    source: str
    imported: int
    repaired: list[tuple[str, str]]
    without_geometry: list[tuple[str, str]]


#: The per-feature facts: (option of the constant, option of the attribute, ImportOptions names).
_FACTS = (
    ("--domain", "--domain-field", "domain", "domain_field"),
    ("--jurisdiction-id", "--jurisdiction-id-field", "jurisdiction_id", "jurisdiction_id_field"),
    ("--discovery-url", "--discovery-url-field", "discovery_url", "discovery_url_field"),
    ("--endpoint-url", "--endpoint-url-field", "endpoint_url", "endpoint_url_field"),
)


def _value(raw: object) -> str | None:
    """An attribute's value as text; ``None`` for a missing, null or blank one."""
    if raw is None:
        return None
    text = str(raw).strip()
    return text or None


def _clean(option: str, value: str | None, notes: list[str]) -> str | None:
    """One fact checked and normalized; :class:`InvalidInput` naming the option when bad."""
    if value is None:
        return None
    try:
        if option.startswith("--domain"):
            domain = value.lower().rstrip(".")
            if not is_hostname(domain):
                raise ValueError(f"{value!r} is not a DNS host name")
            return domain
        if option.startswith("--discovery-url"):
            url, fixes = normalize_discovery_url(value)
        elif option.startswith("--endpoint-url"):
            url, fixes = normalize_base_url(value)
        else:
            return value
    except ValueError as exc:
        raise InvalidInput(f"{option}: {exc}") from None
    notes.extend(fixes)
    return url


def _facts_of(
    options: ImportOptions, properties: dict[str, Any], feature_id: str, notes: list[str]
) -> dict[str, str | None]:
    """The domain, jurisdiction_id, discovery URL and endpoint of one feature."""
    facts: dict[str, str | None] = {}
    for constant, field_option, name, field_name in _FACTS:
        attribute = getattr(options, field_name)
        if attribute is None:
            facts[name] = _clean(constant, getattr(options, name), notes)
            continue
        try:
            facts[name] = _clean(field_option, _value(properties.get(attribute)), notes)
        except InvalidInput as exc:
            raise InvalidInput(f"feature {feature_id!r}: {exc.detail}") from None
    return facts


def jurisdictions_from_report(report: BoundaryReport, options: ImportOptions) -> list[Jurisdiction]:
    """One jurisdiction per feature, with provenance pointing back at the file and feature."""
    for constant, field_option, name, field_name in _FACTS:
        attribute = getattr(options, field_name)
        if attribute is not None and getattr(options, name) is not None:
            raise InvalidInput(f"give {constant} or {field_option}, not both")
        if attribute is not None and not any(attribute in f.properties for f in report.features):
            fields = sorted({key for f in report.features for key in f.properties})
            raise InvalidInput(
                f"{field_option} {attribute!r}: no feature has this attribute "
                f"(the file has: {', '.join(fields) or 'none'})"
            )
    retrieved = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    name = Path(report.path).name
    jurisdictions = []
    for feature in report.features:
        notes: list[str] = []
        facts = _facts_of(options, feature.properties, feature.id, notes)
        endpoint = facts["endpoint_url"]
        reference = f"{name}#{options.id_field}={feature.id}"
        jurisdictions.append(
            Jurisdiction(
                id=feature.id,
                name=feature.name,
                domain=facts["domain"],
                jurisdiction_id=facts["jurisdiction_id"],
                discovery_url=facts["discovery_url"],
                endpoints=(Endpoint(url=endpoint),) if endpoint else (),
                provenance=(Provenance("boundary", "import", reference, retrieved=retrieved),),
                notes=(*feature.notes, *dict.fromkeys(notes)),
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
    jurisdictions = [
        check_entry(j, allow_http=True)  # the operator's file: plain http may be its choice
        for j in jurisdictions_from_report(report, options)
    ]
    summary = ImportSummary(
        source=str(path),
        imported=len(jurisdictions),
        repaired=[(f.id, "; ".join(f.notes)) for f in report.repaired],
        without_geometry=[(f.id, "; ".join(f.notes)) for f in report.without_geometry],
    )
    missing = [j.id for j in jurisdictions if j.boundary is None]
    keep_boundaries = options.replace and missing and not options.allow_missing_geometry
    store.save(
        jurisdictions,
        replace=options.replace,
        source=str(path),
        report={
            "source_crs": report.source_crs,
            "repaired": summary.repaired,
            "without_geometry": summary.without_geometry,
        },
        check=partial(_no_boundary_lost, missing, dict(summary.without_geometry))
        if keep_boundaries
        else None,
    )
    return summary


def _no_boundary_lost(missing: list[str], why: dict[str, str], session: Session) -> None:
    """Refuse an import that would replace stored boundaries with none (checked inside the
    save's transaction, so it holds at the save)."""
    lost: list[str] = []
    for start in range(0, len(missing), 500):
        lost += session.scalars(
            select(JurisdictionRow.id).where(
                JurisdictionRow.id.in_(missing[start : start + 500]),
                JurisdictionRow.boundary_wkb.is_not(None),
            )
        )
    if lost:
        lost.sort()
        shown = "; ".join(f"{i} ({why.get(i) or 'no geometry'})" for i in lost[:5])
        raise InvalidInput(
            f"{len(lost)} feature(s) have no geometry but would replace a stored boundary: "
            f"{shown}{' ...' if len(lost) > 5 else ''}; nothing imported. Fix the file, or "
            "pass --allow-missing-geometry to keep them without a boundary",
            without_geometry=lost[:100],
        )
