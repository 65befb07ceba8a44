"""Rebuild ``registry_data/registry.geojson`` from the shared data.

    python -m tools.build_registry [--shared PATH] [--output PATH] [--check] [--table]

Every server of ``open311-servers.yml`` (the Open311 wiki's list) and every endpoint of
``open311-endpoints-r311.json`` (rOpenGov r311, 2025) becomes a jurisdiction; entries naming the
same city in both lists are merged. Known copy-paste errors are corrected here, each with the
evidence for it, and every correction or repair is written into the entry's ``notes``.
Boundaries are attached only where a public body's own limits are at hand: the countries of the
shared data (``BOUNDARIES``) and the city limits extracted into ``tools/sources/`` (``EXTRACTS``,
written by ``python -m tools.extract_places``). The document names its release (``RELEASED``,
``CONTENT_DIGEST``).

The output is deterministic: the same shared data always gives the same bytes, so ``--check``
can tell whether the committed registry is current.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from boundaries.geojson import boundary_from_geojson
from common.errors import InvalidBoundary
from common.models import GEOREPORT_V2, Endpoint, Jurisdiction, Provenance
from discovery.urls import is_hostname, normalize_base_url, normalize_discovery_url
from resolver.registry.documents import read_registry, registry_document

SERVERS = "open311-servers.yml"
R311 = "open311-endpoints-r311.json"
COUNTRIES = "world-countries-50m.geojson"

DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "registry_data" / "registry.geojson"

#: Hosts of platforms that serve many jurisdictions: a jurisdiction_id under one of them names
#: the platform, not the jurisdiction, so it is never taken as the jurisdiction's domain.
SHARED_PLATFORMS = ("seeclickfix.com", "publicstuff.com", "spotreporters.com", "apigee.net")

#: The region part of a list's name ("Bonn, Deutschland", "Ridgway, Pennsylvania") as the
#: short code ids use. Two-letter regions (states, provinces, countries) are used as they are.
REGION_CODES = {
    "deu": "de",
    "deutschland": "de",
    "schweiz": "ch",
    "espana": "es",
    "suomi": "fi",
    "ellada": "gr",
    "portugal": "pt",
    "britain": "uk",
    "california": "ca",
    "iowa": "ia",
    "massachusetts": "ma",
    "pennsylvania": "pa",
}

#: Ids for names that carry no ", region" part.
ID_OVERRIDES = {
    "Washington D.C.": "washington-dc",
    "FixMyStreet": "fixmystreet-uk",
    "Canton OH": "canton-oh",
    "Southern Connecticut State University (SCSU)": "southern-connecticut-state-university-ct",
}


@dataclass(frozen=True)
class Correction:
    """A wrong jurisdiction_id in a source list, the value that replaces it, and the proof."""

    source: str
    name: str
    wrong: str
    right: str
    evidence: str


CORRECTIONS = (
    Correction(
        SERVERS,
        "Bonn, Deutschland",
        "ville.quebec.qc.ca",
        "bonn.de",
        "'ville.quebec.qc.ca' is the jurisdiction_id of the entry above it (Quebec, QC); Bonn's "
        "own hosts are anliegen.bonn.de (base URL, discovery, key request) and the r311 list "
        "gives bonn.de",
    ),
    Correction(
        SERVERS,
        "Annaberg-Buchholz, Deutschland",
        "annberg-buchholz.de",
        "annaberg-buchholz.de",
        "a misspelling of the city's name; every host the lists give for it is "
        "anliegen.annaberg-buchholz.de (base URL, discovery, documentation, key request)",
    ),
    Correction(
        R311,
        "Annaberg-Buchholz, DE",
        "annberg-buchholz.de",
        "annaberg-buchholz.de",
        "a misspelling of the city's name; its root and docs are on anliegen.annaberg-buchholz.de",
    ),
)


@dataclass(frozen=True)
class BoundarySource:
    """Where the honest boundary of one registry entry is in the shared data."""

    jurisdiction: str
    file: str
    key: str
    value: str
    expected_name: str
    why: str


_NATURAL_EARTH = "Natural Earth 1:50m admin-0 via world-atlas 2.0.2"

BOUNDARIES = (
    BoundarySource(
        "fixmystreet-uk",
        COUNTRIES,
        "iso_n3",
        "826",
        "United Kingdom",
        "FixMyStreet takes reports for the whole United Kingdom; its boundary is the country's "
        "(Crown Dependencies are separate countries in Natural Earth and are not included)",
    ),
    BoundarySource(
        "fiksgatami-no",
        COUNTRIES,
        "iso_n3",
        "578",
        "Norway",
        "FiksGataMi takes reports for all of Norway; its boundary is the country's as Natural "
        "Earth draws it, which includes Svalbard and Jan Mayen",
    ),
)

#: City limits extracted from public repositories by ``python -m tools.extract_places`` and
#: committed beside this builder, so that a rebuild needs no network.
SOURCES = Path(__file__).resolve().parent / "sources"
US_PLACES = "us-places-tiger2019.geojson"
GERMAN_AREAS = "de-vg5000-2021.geojson"
EXTRACTS = (US_PLACES, GERMAN_AREAS)

#: Why a city's own limits are its jurisdiction's boundary, by extract.
_EXTRACT_WHY = {
    US_PLACES: "the city's legal limits as the Census Bureau records them (an incorporated "
    "place; for a consolidated city-county or an independent city they are also the county's)",
    GERMAN_AREAS: "the municipality's (or state's) limits as the federal mapping agency "
    "publishes them at 1:5,000,000; points within about 1 km of the limit may fall on the "
    "wrong side",
}

_BOUNDARY_NOTES = {COUNTRIES: _NATURAL_EARTH}

#: The embedded registry's release: when its content last changed, and a digest of that content.
#: Resolvers take the registry as the layer ``embedded:<version>`` (version: the date and the
#: digest's first 8 digits), whose entries are dated ``RELEASED``: a later release wins over an
#: earlier one wherever the two meet (a store, a mirror). When the content changes, the build
#: stops until both are updated, so a changed registry is never shipped as the old release.
RELEASED = "2026-12-04"
CONTENT_DIGEST = "5c118643ff5f9a20"


def content_digest(rows: list[str]) -> str:
    """The first 16 hex digits of the SHA-256 of the features as rendered, one per line."""
    return hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()[:16]


REGISTRY_META: dict[str, Any] = {
    "name": "GeoWeb DNS embedded registry",
    "built_by": "python -m tools.build_registry",
    "sources": [
        {
            "file": SERVERS,
            "what": "the Open311 wiki's GeoReport v2 server list",
            "licence": "facts",
        },
        {"file": R311, "what": "endpoints of the rOpenGov r311 package (2025)", "licence": "MIT"},
        {
            "file": f"tools/sources/{US_PLACES}",
            "what": "US Census TIGER/Line 2019 places, from generalpiston/"
            "geojson-us-city-boundaries, simplified to 20 m",
            "licence": "public domain",
        },
        {
            "file": f"tools/sources/{GERMAN_AREAS}",
            "what": "BKG VG5000 (2021-01-01) municipalities and states, from "
            "Praesklepios/geoGermany",
            "licence": "dl-de/by-2.0, (c) GeoBasis-DE / BKG (2021)",
        },
        {"file": COUNTRIES, "what": _NATURAL_EARTH, "licence": "public domain; packaging ISC"},
    ],
}


class BuildError(Exception):
    """The shared data is not what this builder was written for; nothing was written."""


@dataclass(frozen=True)
class Listing:
    """One entry of one source list, read into the fields both lists share."""

    source: str
    name: str
    base_url: str
    jurisdiction_id: str | None = None
    discovery_url: str | None = None
    test_url: str | None = None
    production_ready: bool | None = None
    version: str | None = None
    deprecated: bool = False
    deprecated_reason: str | None = None
    deprecated_url: str | None = None
    key_required: bool = False
    notes: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        return f"{self.source}#{self.name}"


@dataclass
class Entry:
    """A jurisdiction being assembled from one or two listings."""

    id: str
    listings: list[Listing] = field(default_factory=list)

    def by_source(self, source: str) -> Listing | None:
        return next((item for item in self.listings if item.source == source), None)


# --- reading -------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """A list's string field: ``None`` for missing, null or blank."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _records(data: Any, source: str) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise BuildError(f"{source}: expected a list of mappings")
    return data


def read_servers(path: Path) -> list[Listing]:
    """The Open311 wiki's server list."""
    with path.open(encoding="utf-8") as f:
        records = _records(yaml.safe_load(f), SERVERS)
    listings = []
    for r in records:
        ready = r.get("production_ready")
        listings.append(
            Listing(
                source=SERVERS,
                name=str(r["name"]).strip(),
                base_url=str(r["base_url"]),
                jurisdiction_id=_text(r.get("jurisdiction_id")),
                discovery_url=_text(r.get("api_discovery")),
                test_url=_text(r.get("test_url")),
                production_ready=ready if isinstance(ready, bool) else None,
                version=_text(r.get("version")),
            )
        )
    return listings


def read_r311(path: Path) -> list[Listing]:
    """The rOpenGov r311 package's endpoint list."""
    with path.open(encoding="utf-8") as f:
        records = _records(json.load(f), R311)
    return [
        Listing(
            source=R311,
            name=str(r["name"]).strip(),
            base_url=str(r["root"]),
            jurisdiction_id=_text(r.get("jurisdiction")),
            deprecated=bool(r.get("deprecated", False)),
            deprecated_reason=_text(r.get("deprecated_reason")),
            deprecated_url=_text(r.get("deprecated_url")),
            key_required=bool(r.get("key", False)),
        )
        for r in records
    ]


def apply_corrections(listings: list[Listing]) -> list[Listing]:
    """Listings with every :data:`CORRECTIONS` entry applied and noted.

    A correction that no longer matches its source (the list was fixed upstream, or changed)
    stops the build, so that nobody's data is "corrected" on stale evidence.
    """
    out = list(listings)
    for c in CORRECTIONS:
        matches = [
            i for i, item in enumerate(out) if (item.source, item.name) == (c.source, c.name)
        ]
        if len(matches) != 1:
            raise BuildError(f"correction for {c.source}#{c.name}: the entry is not in the list")
        i = matches[0]
        current = out[i].jurisdiction_id
        if current != c.wrong:
            raise BuildError(
                f"correction for {c.source}#{c.name}: expected jurisdiction_id {c.wrong!r}, "
                f"found {current!r}; review the correction"
            )
        note = (
            f"{c.source} gives jurisdiction_id {c.wrong!r}, corrected to {c.right!r}: {c.evidence}."
        )
        out[i] = replace(out[i], jurisdiction_id=c.right, notes=(*out[i].notes, note))
    return out


# --- names, ids and merging ----------------------------------------------------------------------


def fold(text: str) -> str:
    """Case- and accent-folded text: ``"Zürich"`` -> ``"zurich"``, ``"Gießen"`` -> ``"giessen"``."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def slug(text: str) -> str:
    """Lowercase ASCII words joined by hyphens."""
    words = "".join(c if c.isascii() and c.isalnum() else " " for c in fold(text)).split()
    return "-".join(words)


def split_name(name: str) -> tuple[str, str | None]:
    """``"Köln / Cologne, Deutschland"`` -> ``("Köln", "Deutschland")``: first name, region."""
    place, comma, region = name.rpartition(",")
    if not comma:
        place, region = name, ""
    return place.split("/")[0].strip(), (region.strip() or None)


def merge_key(name: str) -> str:
    """What matches the same city across the lists: the folded first name before the comma."""
    return fold(split_name(name)[0])


def region_code(region: str) -> str:
    folded = fold(region)
    if len(folded) == 2 and folded.isalpha():
        return folded
    if folded not in REGION_CODES:
        raise BuildError(f"no region code for {region!r}; add it to REGION_CODES")
    return REGION_CODES[folded]


def jurisdiction_slug(name: str) -> str:
    """The registry id for a list's name: ``"San Francisco, CA"`` -> ``"san-francisco-ca"``."""
    if name in ID_OVERRIDES:
        return ID_OVERRIDES[name]
    place, region = split_name(name)
    if region is None:
        raise BuildError(f"{name!r} has no region; add an id to ID_OVERRIDES")
    if fold(place).startswith("city of "):
        place = place[len("city of ") :]
    return f"{slug(place)}-{region_code(region)}"


def merge(servers: list[Listing], r311: list[Listing]) -> list[Entry]:
    """One entry per city: listings with the same :func:`merge_key` in both lists are merged."""
    entries: dict[str, Entry] = {}
    for listings in (servers, r311):
        seen: set[str] = set()
        for item in listings:
            key = merge_key(item.name)
            if key in seen:
                raise BuildError(
                    f"{item.source}: {key!r} appears twice; merging would be ambiguous"
                )
            seen.add(key)
            entry = entries.get(key)
            if entry is None:
                entries[key] = Entry(id=jurisdiction_slug(item.name), listings=[item])
                continue
            mine, theirs = split_name(item.name)[1], split_name(entry.listings[0].name)[1]
            if mine and theirs and region_code(mine) != region_code(theirs):
                raise BuildError(
                    f"{item.name!r} and {entry.listings[0].name!r} share a name but not a region"
                )
            entry.listings.append(item)
    ids = [e.id for e in entries.values()]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise BuildError(f"ids are not unique: {duplicates}")
    return sorted(entries.values(), key=lambda e: e.id)


# --- one jurisdiction ----------------------------------------------------------------------------


def _same_but_scheme(a: str, b: str) -> bool:
    return a.split("://", 1)[1] == b.split("://", 1)[1]


def _dirname(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/"


def _host(url: str) -> str:
    return urlsplit(url).hostname or ""


def _endpoint(item: Listing, notes: list[str]) -> tuple[Endpoint, bool]:
    """The endpoint a listing gives, and whether its scheme was assumed (not given)."""
    url, fixes = normalize_base_url(item.base_url)
    field_name = "root" if item.source == R311 else "base_url"
    notes.extend(f"{item.source} {field_name} {item.base_url!r}: {fix}." for fix in fixes)
    assumed = "://" not in item.base_url
    remarks = [f"listed in {item.source}" + (" (2025)" if item.source == R311 else "")]
    specification = GEOREPORT_V2
    path = urlsplit(url).path
    if "/georeport/v1/" in path.lower():
        specification = "unknown"
        remarks.append("the base URL names GeoReport v1")
        notes.append(
            f"{item.source} lists {url} as GeoReport v2, but its path names GeoReport v1; kept "
            "with specification 'unknown', so it is not offered as a GeoReport v2 endpoint."
        )
    elif item.version is not None and item.version != "georeport-v2":
        specification = "unknown"
        remarks.append(f"version {item.version!r}")
    elif path.endswith("/v1/"):
        notes.append(
            f"{url} ends in /v1/, but {item.source} declares it georeport-v2 and its path does "
            "not name GeoReport v1; kept as GeoReport v2, as the list declares."
        )
    is_test = item.production_ready is False or (item.test_url is not None and url == item.test_url)
    if item.deprecated:
        reason = item.deprecated_reason or "no reason given"
        if item.deprecated_url:
            reason += f", now {item.deprecated_url}"
        remarks.append(f"deprecated ({item.source}: {reason})")
    if item.key_required:
        remarks.append(f"an API key is required ({item.source})")
    endpoint = Endpoint(
        url=url,
        specification=specification,
        type="test" if is_test else "production",
        deprecated=item.deprecated,
        note="; ".join(remarks),
    )
    return endpoint, assumed


def _endpoints(entry: Entry, notes: list[str]) -> tuple[Endpoint, ...]:
    """r311's endpoint first (the newer list), then the servers list's when its URL differs."""
    newer, older = entry.by_source(R311), entry.by_source(SERVERS)
    if newer is None or older is None:
        return tuple(_endpoint(item, notes)[0] for item in entry.listings)
    first, assumed = _endpoint(newer, notes)
    second, _ = _endpoint(older, notes)
    if first.url == second.url:
        return (replace(first, note=f"{first.note}; also listed in {SERVERS}"),)
    if not _same_but_scheme(first.url, second.url):
        return first, second
    kept = replace(first, url=second.url) if assumed else first
    why = (
        f"{R311} gives no scheme, {SERVERS} gives {second.url}"
        if assumed
        else f"{SERVERS} gives {second.url}, {R311} (2025) gives {first.url}"
    )
    notes.append(f"One endpoint listed with two schemes: {why}; kept as {kept.url}.")
    return (replace(kept, note=f"{first.note}; also listed in {SERVERS} as {second.url}"),)


def _discovery(item: Listing | None, notes: list[str]) -> str | None:
    if item is None:
        return None
    url, fixes = normalize_discovery_url(item.discovery_url)
    if url is None:
        notes.append(f"No discovery URL published: {SERVERS} api_discovery is empty.")
        return None
    notes.extend(f"{SERVERS} api_discovery {item.discovery_url!r}: {fix}." for fix in fixes)
    test, base = item.test_url, normalize_base_url(item.base_url)[0]
    if test is not None:
        on_test_host = _host(url) == _host(test) != _host(base)
        in_test_folder = test.startswith(_dirname(url)) and not base.startswith(_dirname(url))
        if on_test_host or in_test_folder:
            notes.append(
                f"{SERVERS} api_discovery {url} is on the test server (test_url {test}), not "
                f"beside the production base URL {base}; left out (no production discovery URL "
                "is published)."
            )
            return None
    return url


def _jurisdiction_id(entry: Entry, notes: list[str]) -> str | None:
    newer, older = entry.by_source(R311), entry.by_source(SERVERS)
    new_id = newer.jurisdiction_id if newer else None
    old_id = older.jurisdiction_id if older else None
    if new_id and old_id and new_id != old_id:
        notes.append(
            f"{SERVERS} gives jurisdiction_id {old_id!r}, {R311} (2025) gives {new_id!r}; "
            f"the newer {new_id!r} is used."
        )
    if newer and older and old_id and not new_id:
        new_url = normalize_base_url(newer.base_url)[0]
        old_url = normalize_base_url(older.base_url)[0]
        if not _same_but_scheme(new_url, old_url):
            notes.append(
                f"jurisdiction_id {old_id!r} is the one {SERVERS} gives with {old_url}; "
                f"{R311} gives none with {new_url}."
            )
    return new_id or old_id


def _domain(jurisdiction_id: str | None, notes: list[str]) -> str | None:
    """The jurisdiction's own domain: its jurisdiction_id when that is an honest host name."""
    if jurisdiction_id is None:
        return None
    name = jurisdiction_id.lower()
    if any(name == p or name.endswith("." + p) for p in SHARED_PLATFORMS):
        notes.append(f"jurisdiction_id {jurisdiction_id!r} is a shared platform's host: no domain.")
        return None
    if is_hostname(name):
        return name
    if "." in name:
        why = " (it contains an underscore)" if "_" in name else ""
        notes.append(
            f"jurisdiction_id {jurisdiction_id!r} is kept as the list gives it (it is the API "
            f"parameter the server expects), but it is not a valid host name{why}, so it gives "
            "no domain."
        )
    return None


def build_jurisdiction(entry: Entry) -> Jurisdiction:
    """The registry entry for one merged city (without a boundary)."""
    notes: list[str] = []
    for item in entry.listings:
        notes.extend(item.notes)
    jurisdiction_id = _jurisdiction_id(entry, notes)
    older = entry.by_source(SERVERS)
    return Jurisdiction(
        id=entry.id,
        name=(older or entry.listings[0]).name,
        domain=_domain(jurisdiction_id, notes),
        jurisdiction_id=jurisdiction_id,
        discovery_url=_discovery(older, notes),
        endpoints=_endpoints(entry, notes),
        services=None,
        provenance=tuple(
            Provenance(fact="endpoints", source="registry", reference=item.reference)
            for item in entry.listings
        ),
        notes=tuple(notes),
    )


# --- boundaries ----------------------------------------------------------------------------------


def _features(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    features = data.get("features") if isinstance(data, dict) else None
    if not isinstance(features, list):
        raise BuildError(f"{path.name}: not a GeoJSON FeatureCollection")
    return features


def attach_extract(
    jurisdiction: Jurisdiction, feature: dict[str, Any], extract: str, source: dict[str, Any]
) -> Jurisdiction:
    """``jurisdiction`` with the city limits of one extract feature, with their provenance."""
    props = feature["properties"]
    where = f"{source['repository']}@{source['commit']}:{props['file']}"
    key = f"GEOID {props['GEOID']}" if "GEOID" in props else f"ARS {props['ARS']}"
    label = props.get("NAMELSAD") or f"{props.get('BEZ')} {props.get('GEN')}"
    tolerance = source.get("tolerance_metres")
    simplified = f", simplified to {tolerance} m" if tolerance else ""
    notes = [
        f"Boundary: {label} ({key}), {source['data']}, from {where}{simplified} "
        f"({_EXTRACT_WHY[extract]}); licence: {source['licence']}."
    ]
    try:
        geometry, repairs = boundary_from_geojson(feature["geometry"])
    except InvalidBoundary as error:
        raise BuildError(f"{extract}#{jurisdiction.id}: {error.detail}") from None
    notes.extend(f"The boundary was repaired: {note}." for note in repairs)
    provenance = Provenance(
        fact="boundary",
        source="registry",
        reference=f"tools/sources/{extract}#{jurisdiction.id} ({key}; {where})",
        note=f"{source['data']}{simplified}; {source['licence']}",
    )
    return replace(
        jurisdiction,
        provenance=(*jurisdiction.provenance, provenance),
        notes=(*jurisdiction.notes, *notes),
    ).with_boundary(geometry)


def attach_boundary(
    jurisdiction: Jurisdiction, source: BoundarySource, features: list[dict[str, Any]]
) -> Jurisdiction:
    """``jurisdiction`` with the boundary ``source`` names, checked, repaired if need be, noted."""
    found = [f for f in features if f["properties"].get(source.key) == source.value]
    if len(found) != 1:
        raise BuildError(f"{source.file}: {len(found)} features with {source.key}={source.value}")
    props = found[0]["properties"]
    if props.get("name") != source.expected_name:
        raise BuildError(
            f"{source.file}#{source.key}={source.value} is {props.get('name')!r}, "
            f"not {source.expected_name!r}"
        )
    if found[0].get("geometry") is None:
        raise BuildError(f"{source.file}#{source.key}={source.value} has no geometry")
    notes = [f"Boundary: {source.file} {source.key}={source.value} ({source.why})."]
    try:
        geometry, repairs = boundary_from_geojson(found[0]["geometry"])
    except InvalidBoundary as error:
        raise BuildError(f"{source.file}#{source.key}={source.value}: {error.detail}") from None
    notes.extend(f"The boundary was repaired: {note}." for note in repairs)
    provenance = Provenance(
        fact="boundary",
        source="registry",
        reference=f"{source.file}#{source.key}={source.value}",
        note=_BOUNDARY_NOTES[source.file],
    )
    return replace(
        jurisdiction,
        provenance=(*jurisdiction.provenance, provenance),
        notes=(*jurisdiction.notes, *notes),
    ).with_boundary(geometry)


# --- the whole registry --------------------------------------------------------------------------


def build(shared: Path, sources: Path = SOURCES) -> tuple[list[Jurisdiction], list[Entry]]:
    """The registry's jurisdictions (sorted by id) and the merge they came from."""
    listings = apply_corrections(read_servers(shared / SERVERS) + read_r311(shared / R311))
    entries = merge(
        [i for i in listings if i.source == SERVERS], [i for i in listings if i.source == R311]
    )
    jurisdictions = {e.id: build_jurisdiction(e) for e in entries}
    features: dict[str, list[dict[str, Any]]] = {}
    for source in BOUNDARIES:
        if source.jurisdiction not in jurisdictions:
            raise BuildError(f"boundary for {source.jurisdiction!r}, which is not in the lists")
        if source.file not in features:
            features[source.file] = _features(shared / source.file)
        jurisdictions[source.jurisdiction] = attach_boundary(
            jurisdictions[source.jurisdiction], source, features[source.file]
        )
    for extract in EXTRACTS:
        with (sources / extract).open(encoding="utf-8") as f:
            document = json.load(f)
        for feature in document["features"]:
            target = feature["properties"]["jurisdiction"]
            if target not in jurisdictions:
                raise BuildError(f"{extract}: boundary for {target!r}, which is not in the lists")
            if jurisdictions[target].boundary is not None:
                raise BuildError(f"{extract}: {target!r} already has a boundary")
            jurisdictions[target] = attach_extract(
                jurisdictions[target], feature, extract, document["source"]
            )
    return [jurisdictions[i] for i in sorted(jurisdictions)], entries


def render(jurisdictions: list[Jurisdiction]) -> str:
    """The registry document as text: sorted keys, one feature per line, a final newline.

    One feature per line keeps diffs of the committed file readable (a changed entry is a
    changed line) while the geometries stay compact.
    """
    rows = [
        json.dumps(f, sort_keys=True, ensure_ascii=False)
        for f in registry_document(jurisdictions)["features"]
    ]
    digest = content_digest(rows)
    if digest != CONTENT_DIGEST:
        raise BuildError(
            f"the registry's content changed (digest {digest}, the release says "
            f"{CONTENT_DIGEST}): set RELEASED to today's date and CONTENT_DIGEST to "
            f"{digest!r} in tools/build_registry.py"
        )
    release = {"version": f"{RELEASED}.{digest[:8]}", "released": f"{RELEASED}T00:00:00.000000Z"}
    document = registry_document(jurisdictions, **REGISTRY_META, **release)
    document.pop("features")
    lines = ["{", '  "features": [']
    lines.append(",\n".join(f"    {row}" for row in rows))
    lines.append("  ],")
    rest = sorted(document.items())
    for i, (key, value) in enumerate(rest):
        comma = "," if i < len(rest) - 1 else ""
        lines.append(
            f"  {json.dumps(key)}: {json.dumps(value, sort_keys=True, ensure_ascii=False)}{comma}"
        )
    lines.append("}")
    text = "\n".join(lines) + "\n"
    if read_registry(json.loads(text)) != jurisdictions:
        raise BuildError("the rendered registry does not read back as built")
    return text


def merge_table(entries: list[Entry]) -> str:
    """A plain-text table of which listings became which entry."""
    rows = [("id", SERVERS, R311)]
    for e in entries:
        older, newer = e.by_source(SERVERS), e.by_source(R311)
        rows.append((e.id, older.name if older else "-", newer.name if newer else "-"))
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]}" for r in rows]
    merged = sum(1 for e in entries if len(e.listings) == 2)
    lines.append(f"{len(entries)} jurisdictions, {merged} merged from both lists")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.build_registry", description="Rebuild the embedded registry."
    )
    parser.add_argument(
        "--shared", type=Path, default=DEFAULT_SHARED, help="the shared data folder"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the registry to write")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if --output is not current"
    )
    parser.add_argument("--table", action="store_true", help="print the merge table")
    args = parser.parse_args(argv)
    try:
        jurisdictions, entries = build(args.shared)
        text = render(jurisdictions)
    except (BuildError, OSError, ValueError, KeyError) as exc:
        print(f"registry build failed: {exc}", file=sys.stderr)
        return 2
    if args.table:
        print(merge_table(entries))
    output: Path = args.output
    if args.check:
        current = output.read_bytes() if output.exists() else b""
        if current != text.encode("utf-8"):
            print(f"{output} is not current; run python -m tools.build_registry", file=sys.stderr)
            return 1
        print(f"{output} is current ({len(jurisdictions)} jurisdictions)")
        return 0
    temporary = output.with_name(output.name + ".tmp")
    temporary.write_bytes(text.encode("utf-8"))
    temporary.replace(output)
    bounded = sum(1 for j in jurisdictions if j.boundary is not None)
    print(f"wrote {output}: {len(jurisdictions)} jurisdictions, {bounded} with a boundary")
    return 0


if __name__ == "__main__":
    sys.exit(main())
