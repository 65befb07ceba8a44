"""A registry as DNS: the ``_open311`` records of its jurisdictions and its geographic cells, as
an RFC 1035 master file (``geoweb zone export``) or as records to publish (``dns_publish``).

What a registry zone ``<origin>`` holds (``docs/dns-records.md``):

- ``_cells.<origin> TXT "v=geoweb-cells-1" "depth=D" "split=S" "gen=G"``: the cell scheme and the
  live *generation* of the cells, so resolvers know the depth and where to ask;
- ``G._cells.<origin> TXT "v=geoweb-cells-1" "created=T" "live=T"``: the generation's marker
  (publishers' bookkeeping: when it was staged, since when it is live);
- for each non-empty leaf of the adaptive grid (``boundaries.cells``), PTR records naming the
  domains of the jurisdictions that touch it: at ``<leaf>.G._cells.<origin>`` for leaves at depth
  D, at the wildcard ``*.<leaf>.G._cells.<origin>`` for shallower ones;
- ``_open311.<domain> TXT`` for every jurisdiction domain inside the zone (domains elsewhere publish
  their own record in their own zone; the cells still name them).

A generation's cells never change once it is live except by one atomic UPDATE; a publish too large
for one UPDATE stages a new generation beside it and switches the pointer (``dns_publish``).

Everything streams: records are produced one at a time from the grid's depth-first walk, so a zone
of millions of cells is written with memory bounded by one path of the tree. ``max_cells`` refuses
a zone that would be larger, before a single line is written.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from shapely.geometry.base import BaseGeometry

from boundaries.cells import CELLS_LABEL, CellScheme, leaves
from common.errors import GeoWebError, InvalidInput
from common.models import Jurisdiction

from .dns_records import (
    Open311Record,
    RecordError,
    UrlPolicy,
    parse_record,
    record_name,
    txt_zone_text,
)
from .urls import is_hostname

_ORIGIN_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?", re.IGNORECASE)

#: The version of the cell scheme record at ``_cells.<origin>``.
CELLS_VERSION = "geoweb-cells-1"

#: Default ``--max-cells``: a zone with more leaf cells than this is refused.
DEFAULT_MAX_CELLS = 1_000_000

#: The cell generation ``zone export`` writes; ``publish`` moves on to g2, g3, ...
FIRST_GENERATION = "g1"
_GENERATION = re.compile(r"g[0-9]{1,9}")


def is_generation(label: str) -> bool:
    """A generation label (``g`` and a number): never a geohash label, which is one character."""
    return _GENERATION.fullmatch(label) is not None


def generation_number(label: str) -> int:
    return int(label[1:])


def cells_root(zone: str, generation: str | None) -> str:
    """The absolute name the cells of a generation hang under (``G._cells.<zone>``); without a
    generation, ``_cells.<zone>`` itself (zones written before generations existed)."""
    zone = zone.strip(".").lower() + "."
    return f"{generation}.{CELLS_LABEL}.{zone}" if generation else f"{CELLS_LABEL}.{zone}"


def generation_cell_name(cell: str, zone: str, generation: str | None) -> str:
    """The name of a cell (a geohash) in a generation: one label per level, finest first."""
    return ".".join(reversed(cell)) + "." + cells_root(zone, generation)


@dataclass(frozen=True, slots=True)
class CellsPointer:
    """What ``_cells.<zone> TXT`` says: the depth resolvers query, the split threshold, and the
    live generation (``None``: cells directly under ``_cells``)."""

    depth: int
    split: int | None
    generation: str | None

    def strings(self) -> list[bytes]:
        out = [f"v={CELLS_VERSION}", f"depth={self.depth}"]
        if self.split is not None:
            out.append(f"split={self.split}")
        if self.generation is not None:
            out.append(f"gen={self.generation}")
        return [x.encode() for x in out]


def _cells_pairs(strings: Sequence[bytes]) -> dict[str, str] | None:
    pairs = dict(s.decode("ascii", "replace").partition("=")[::2] for s in strings)
    return pairs if pairs.get("v") == CELLS_VERSION else None


def parse_cells_pointer(strings: Sequence[bytes]) -> CellsPointer | None:
    """The pointer in one TXT record at ``_cells.<zone>``, or ``None`` when the record is not a
    usable ``v=geoweb-cells-1`` pointer (unknown keys are ignored)."""
    pairs = _cells_pairs(strings)
    if pairs is None or not pairs.get("depth", "").isdigit():
        return None
    depth = int(pairs["depth"])
    split = pairs.get("split", "")
    generation = pairs.get("gen")
    if not 1 <= depth <= 12 or (generation is not None and not is_generation(generation)):
        return None
    return CellsPointer(depth, int(split) if split.isdigit() else None, generation)


def marker_strings(created: int, live: int | None = None, hold: int | None = None) -> list[bytes]:
    """The marker at a generation's apex: when it was staged, since when it is live, and how
    long the generation it replaced is kept for readers (seconds)."""
    out = [f"v={CELLS_VERSION}", f"created={created}"]
    if live is not None:
        out.append(f"live={live}")
    if hold is not None:
        out.append(f"hold={hold}")
    return [x.encode() for x in out]


def parse_marker(strings: Sequence[bytes]) -> tuple[int | None, int | None, int | None]:
    """``(created, live, hold)`` from a generation marker; ``None`` for what it does not say."""
    pairs = _cells_pairs(strings) or {}
    values = [pairs.get(key, "") for key in ("created", "live", "hold")]
    created, live, hold = (int(v) if v.isdigit() else None for v in values)
    return created, live, hold


class ZoneTooLarge(GeoWebError):
    """The zone would hold more cells than allowed; nothing was written."""

    status = 413
    code = "zone_too_large"


@dataclass(frozen=True, slots=True)
class ZoneRecord:
    """One resource record: absolute owner name, TTL, type and its master-file rdata text."""

    name: str
    ttl: int
    rdtype: str
    rdata: str


@dataclass(frozen=True)
class ZoneOptions:
    """How a registry becomes a zone.

    ``boundary_url``: where each jurisdiction's boundary is published, a template with ``{id}``
    and ``{domain}`` (e.g. ``https://registry.example/v1/jurisdictions/{id}.geojson``); without it
    the records carry no ``b=``/``g=`` and resolvers cannot discover these jurisdictions by place.
    ``generation``: the label the cells are written under (``g1``, ``g2``, ...).
    ``nameservers``: the zone's NS names (default ``ns.<origin>``); ``nameserver_addresses``:
    their glue, each ``NAME=IP`` or a bare ``IP`` (see :func:`nameserver_glue`).
    """

    origin: str
    ttl: int = 300
    scheme: CellScheme = field(default_factory=CellScheme)
    boundary_url: str | None = None
    nameservers: tuple[str, ...] = ()
    nameserver_addresses: tuple[str, ...] = ()
    hostmaster: str | None = None
    serial: int | None = None
    max_cells: int | None = DEFAULT_MAX_CELLS
    url_policy: UrlPolicy = field(default_factory=lambda: UrlPolicy(allow_http_loopback=True))
    generation: str = FIRST_GENERATION

    def __post_init__(self) -> None:
        labels = self.origin.strip(".").split(".")
        if not self.origin.strip(".") or not all(_ORIGIN_LABEL.fullmatch(x) for x in labels):
            raise InvalidInput(f"--origin {self.origin!r} is not a DNS domain name")
        if not is_generation(self.generation):
            raise InvalidInput(f"{self.generation!r} is not a cell generation label (g1, g2, ...)")
        if not 0 <= self.ttl <= 2**31 - 1:
            raise InvalidInput(f"the TTL must be between 0 and {2**31 - 1} seconds")

    @property
    def zone(self) -> str:
        """The origin as an absolute, lowercase name."""
        return self.origin.strip(".").lower() + "."

    @property
    def pointer(self) -> CellsPointer:
        return CellsPointer(self.scheme.max_depth, self.scheme.split_above, self.generation)


@dataclass
class ZoneSummary:
    """What an export or a plan contains, and what it had to leave out (with why)."""

    cells: int = 0
    ptr_records: int = 0
    txt_records: int = 0
    records: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def jurisdiction_record(j: Jurisdiction, options: ZoneOptions) -> Open311Record:
    """The ``_open311`` record a jurisdiction's facts make, checked as a resolver would read it."""
    if not j.discovery_url:
        raise RecordError("it has no discovery URL (d= is required)")
    boundary_url = None
    if options.boundary_url and j.boundary_generation:
        boundary_url = options.boundary_url.format(id=j.id, domain=j.domain or "")
    endpoint = j.endpoint
    record = Open311Record(
        discovery_url=j.discovery_url,
        endpoint_url=endpoint.url if endpoint is not None else None,
        jurisdiction_id=j.jurisdiction_id,
        name=j.name or None,
        boundary_url=boundary_url,
        boundary_generation=j.boundary_generation if boundary_url else None,
    )
    name = record_name(j.domain or "")
    checked = parse_record(record.strings(), name=name, policy=options.url_policy)
    return checked


def zone_records(
    jurisdictions: Sequence[Jurisdiction], options: ZoneOptions, summary: ZoneSummary | None = None
) -> Iterator[ZoneRecord]:
    """The registry's records (no SOA or NS, no generation marker): the cells pointer, the
    ``_open311`` TXT records, then the cells of ``options.generation`` depth first; streamed."""
    summary = summary if summary is not None else ZoneSummary()
    zone = options.zone
    ttl = options.ttl
    scheme = options.scheme
    yield ZoneRecord(f"{CELLS_LABEL}.{zone}", ttl, "TXT", txt_zone_text(options.pointer.strings()))
    domains, geometries = _published(jurisdictions, options, summary)
    for domain, strings in sorted(domains.items()):
        if strings is None:
            continue
        name = record_name(domain).lower()
        if not _in_zone(name, zone):
            summary.skipped.append((domain, f"outside {zone}: its own zone publishes {name}"))
            continue
        summary.txt_records += 1
        yield ZoneRecord(name, ttl, "TXT", strings)
    targets_of: dict[tuple[int, ...], list[str]] = {}  # the same member sets recur
    for leaf in leaves(geometries, scheme):
        targets = targets_of.get(leaf.members)
        if targets is None:
            if len(targets_of) > 100_000:
                targets_of.clear()
            targets = sorted({_domain(jurisdictions[p]) + "." for p in leaf.members})
            targets_of[leaf.members] = targets
        owner = generation_cell_name(leaf.cell, zone, options.generation)
        if leaf.wildcard:
            owner = "*." + owner
        summary.cells += 1
        for target in targets:
            summary.ptr_records += 1
            yield ZoneRecord(owner, ttl, "PTR", target)


def _domain(j: Jurisdiction) -> str:
    return (j.domain or "").strip(".").lower()


def _published(
    jurisdictions: Sequence[Jurisdiction], options: ZoneOptions, summary: ZoneSummary
) -> tuple[dict[str, str | None], list[BaseGeometry | None]]:
    """Each domain's record as zone text (``None`` for a domain whose jurisdictions disagree),
    and the boundaries the cells are made of: only jurisdictions whose record is published (a
    cell never names a domain a resolver would find nothing at). Reasons go to
    ``summary.skipped``."""
    domains = _domains(jurisdictions, options, summary)
    geometries = [
        j.boundary if domains.get(_domain(j)) is not None else None for j in jurisdictions
    ]
    return domains, geometries


def _domains(
    jurisdictions: Sequence[Jurisdiction], options: ZoneOptions, summary: ZoneSummary
) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for j in jurisdictions:
        if not j.domain:
            summary.skipped.append((j.id, "no domain: not published in DNS"))
            continue
        domain = j.domain.strip(".").lower()
        if not is_hostname(domain):
            summary.skipped.append((j.id, f"{j.domain!r} is not a DNS host name"))
            continue
        try:
            text = txt_zone_text(jurisdiction_record(j, options).strings())
        except RecordError as error:
            summary.skipped.append((j.id, f"no _open311 record: {error.detail}"))
            continue
        if domain in out and out[domain] != text:
            summary.skipped.append((domain, "several jurisdictions with different facts"))
            out[domain] = None
        elif domain not in out:
            out[domain] = text
    return out


def count_cells(
    jurisdictions: Sequence[Jurisdiction], options: ZoneOptions, limit: int | None = None
) -> int:
    """How many leaf cells the zone has; stops counting once past ``limit``."""
    _domains, geometries = _published(jurisdictions, options, ZoneSummary())
    count = 0
    for _leaf in leaves(geometries, options.scheme):
        count += 1
        if limit is not None and count > limit:
            break
    return count


def check_size(jurisdictions: Sequence[Jurisdiction], options: ZoneOptions) -> None:
    """Refuse, before anything is written, a zone with more than ``max_cells`` cells."""
    if options.max_cells is None:
        return
    count = count_cells(jurisdictions, options, options.max_cells)
    if count > options.max_cells:
        raise ZoneTooLarge(
            f"the zone would have more than {options.max_cells} cells; nothing was written "
            "(raise --max-cells, or lower --cell-depth or raise --split-above)",
            limit=options.max_cells,
        )


def _relative(name: str, zone: str) -> str:
    if name.endswith(zone):
        if len(name) == len(zone):
            return "@"
        if name[-len(zone) - 1] == ".":
            return name[: -len(zone) - 1]
    return name


def _absolute_name(name: str) -> str:
    return name.strip().strip(".").lower() + "."


def nameserver_glue(options: ZoneOptions) -> list[tuple[str, list[str]]]:
    """Each NS of the zone (absolute) with the addresses written for it.

    An address is ``NAME=IP`` (for that nameserver) or a bare ``IP``, which belongs to the only
    nameserver inside the zone. A nameserver inside the zone needs at least one address: without
    it the zone does not load (RFC 1034 4.2.1 glue; ``named-checkzone`` refuses it). An address
    for a nameserver outside the zone is refused too: that name's own zone holds it.
    """
    zone = options.zone
    names = [_absolute_name(n) for n in options.nameservers] or [f"ns.{zone}"]
    for name in names:
        if not is_hostname(name.rstrip(".")):
            raise InvalidInput(f"--nameserver {name!r} is not a DNS host name")
    names = list(dict.fromkeys(names))
    inside = [n for n in names if _in_zone(n, zone)]
    glue: dict[str, list[str]] = {n: [] for n in names}
    for given in options.nameserver_addresses:
        name, _, address = given.rpartition("=")
        if name:
            owner = _absolute_name(name)
            if owner not in glue:
                raise InvalidInput(
                    f"--nameserver-address {given!r} names {owner}, which is not a --nameserver "
                    f"of the zone ({', '.join(names)})"
                )
        elif len(inside) == 1:
            owner = inside[0]
        else:
            raise InvalidInput(
                f"--nameserver-address {given!r} has no name and the zone has "
                f"{len(inside) or 'no'} nameserver(s) inside it: write NAME=IP"
            )
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            raise InvalidInput(
                f"--nameserver-address {given!r}: {address!r} is not an IP address"
            ) from None
        if not _in_zone(owner, zone):
            raise InvalidInput(
                f"--nameserver-address {given!r}: {owner} is outside {zone}, so its address "
                "belongs in its own zone, not here"
            )
        if str(ip) not in glue[owner]:
            glue[owner].append(str(ip))
    for name in inside:
        if not glue[name]:
            raise InvalidInput(
                f"the nameserver {name.rstrip('.')} is inside {zone.rstrip('.')} and has no "
                "address, so the zone would "
                f"not load: give --nameserver-address {name.rstrip('.')}=IP, or name a "
                "nameserver outside the zone with --nameserver"
            )
    return [(name, glue[name]) for name in names]


def write_zone(
    out: TextIO, jurisdictions: Sequence[Jurisdiction], options: ZoneOptions
) -> ZoneSummary:
    """Write the whole zone as an RFC 1035 master file to ``out``, line by line."""
    check_size(jurisdictions, options)
    nameservers = nameserver_glue(options)
    zone = options.zone
    summary = ZoneSummary()
    nameserver = nameservers[0][0]
    hostmaster = (options.hostmaster or f"hostmaster.{zone}").strip(".").lower() + "."
    serial = options.serial if options.serial is not None else int(time.time()) % 2**32
    scheme = options.scheme
    out.write(
        f"; GeoWeb DNS registry zone, written by geoweb zone export\n"
        f"; cells: geohash, one label per level, depth {scheme.max_depth}, "
        f"split above {scheme.split_above}, from level {scheme.min_depth}\n"
        f"$ORIGIN {zone}\n"
        f"$TTL {options.ttl}\n"
        f"@ {options.ttl} IN SOA {nameserver} {hostmaster} "
        f"{serial} 3600 600 1209600 {options.ttl}\n"
    )
    for name, _addresses in nameservers:
        out.write(f"@ {options.ttl} IN NS {name}\n")
    for name, addresses in nameservers:
        for address in addresses:
            kind = "AAAA" if ":" in address else "A"
            out.write(f"{_relative(name, zone)} {options.ttl} IN {kind} {address}\n")
    now = int(time.time())
    marker = txt_zone_text(marker_strings(now, now))
    out.write(
        f"{_relative(cells_root(zone, options.generation), zone)} {options.ttl} IN TXT {marker}\n"
    )
    summary.records = 2 + sum(1 + len(addresses) for _name, addresses in nameservers)
    for record in zone_records(jurisdictions, options, summary):
        rdata = record.rdata
        if record.rdtype == "PTR":
            rdata = _relative(rdata, zone)
        out.write(f"{_relative(record.name, zone)} {record.ttl} IN {record.rdtype} {rdata}\n")
        summary.records += 1
    return summary


__all__ = [
    "CELLS_VERSION",
    "FIRST_GENERATION",
    "CellsPointer",
    "ZoneOptions",
    "ZoneRecord",
    "ZoneSummary",
    "ZoneTooLarge",
    "cells_root",
    "check_size",
    "count_cells",
    "generation_cell_name",
    "is_generation",
    "jurisdiction_record",
    "marker_strings",
    "nameserver_glue",
    "parse_cells_pointer",
    "parse_marker",
    "write_zone",
    "zone_records",
]
