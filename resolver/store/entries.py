"""Registry entries: the jurisdictions, the tombstones their deletions leave, the import log and the
conflicts between mirrored copies.

The store is a registry (docs/registry.md): it has an id and a serial, every change of an entry
takes the next serial, deletions leave tombstones, and changes from mirrored registries are applied
by the rules in ``resolver/core/federation.py``.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from dataclasses import replace as copy_with
from typing import Any

import numpy as np
import orjson
import shapely
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Text,
    cast,
    delete,
    func,
    select,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from common.errors import InvalidInput, SnapshotRequired, StoreError
from common.models import Endpoint, Jurisdiction, Provenance, Service
from resolver.core.federation import EntryVersion, Held, Verdict, judge_mirrored, timestamp
from resolver.store.database import (
    Database,
    MetaRow,
    _meta,
    _now,
    _reason,
    _take_serials,
    _upsert,
    _utc,
    _utc_iso,
)
from resolver.store.mirrors import MirrorRow, _record_attempt
from resolver.store.schema import Base

#: Tombstones older than this are forgotten; mirrors further behind take a snapshot instead.
TOMBSTONE_DAYS = 30

log = logging.getLogger(__name__)


class JurisdictionRow(Base):
    __tablename__ = "jurisdictions"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(500))
    domain: Mapped[str | None] = mapped_column(String(253))
    jurisdiction_id: Mapped[str | None] = mapped_column(String(253))
    discovery_url: Mapped[str | None] = mapped_column(String(2048))
    boundary_wkb: Mapped[bytes | None] = mapped_column(LargeBinary)
    boundary_generation: Mapped[str | None] = mapped_column(String(64))
    endpoints: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    services: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    provenance: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    notes: Mapped[list[str]] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    # Registry entry (schema 2): see Jurisdiction.origin and docs/registry.md. ``serial`` is this
    # store's serial of the entry's last change; ``via`` the upstream it was mirrored from.
    origin: Mapped[str] = mapped_column(String(300), nullable=True)
    version: Mapped[int] = mapped_column(Integer, nullable=True)
    origin_updated: Mapped[str] = mapped_column(String(40), nullable=True)
    expires: Mapped[str | None] = mapped_column(String(40))
    attested: Mapped[bool] = mapped_column(Boolean, nullable=True)
    serial: Mapped[int] = mapped_column(Integer, index=True, nullable=True)
    via: Mapped[str | None] = mapped_column(String(2048))


class TombstoneRow(Base):
    """A deleted entry: kept so that the deletion reaches mirrors and an older copy coming back
    round a mirror cycle is not taken for new."""

    __tablename__ = "tombstones"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    domain: Mapped[str | None] = mapped_column(String(253))
    origin: Mapped[str] = mapped_column(String(300))
    version: Mapped[int] = mapped_column(Integer)
    origin_updated: Mapped[str] = mapped_column(String(40))
    attested: Mapped[bool] = mapped_column(Boolean)
    serial: Mapped[int] = mapped_column(Integer, index=True)
    via: Mapped[str | None] = mapped_column(String(2048))


class ConflictRow(Base):
    """One overruled copy of an entry, and why it lost."""

    __tablename__ = "conflicts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    jurisdiction: Mapped[str] = mapped_column(String(200))
    kept: Mapped[str] = mapped_column(String(600))
    overruled: Mapped[str] = mapped_column(String(600))
    why: Mapped[str] = mapped_column(String(300))
    via: Mapped[str | None] = mapped_column(String(2048))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ImportRow(Base):
    __tablename__ = "imports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(2048))
    imported_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    jurisdictions: Mapped[int] = mapped_column(Integer)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)


class EntryStore(Database):
    """The registry's entries: read, saved, deleted, listed as a change log, and applied from
    mirrors by the federation rules."""

    @property
    def registry_id(self) -> str:
        """This registry's id: random, made once when the store is created, never changed."""
        with Session(self.engine) as session:
            return _meta(session, "registry_id")

    @property
    def serial(self) -> int:
        """The serial of the last change; it only grows."""
        with Session(self.engine) as session:
            return int(_meta(session, "serial"))

    def count(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(JurisdictionRow)) or 0)

    def jurisdictions(self) -> list[Jurisdiction]:
        """Every stored jurisdiction, ordered by id."""
        with Session(self.engine) as session:
            return _read_all(session)

    def snapshot(self) -> tuple[str, int, list[Jurisdiction]]:
        """Registry id, serial and every entry, read in one transaction so they agree."""
        with self._transaction(one_snapshot=True) as session:
            entries = _read_all(session)
            return _meta(session, "registry_id"), int(_meta(session, "serial")), entries

    def save(
        self,
        jurisdictions: Sequence[Jurisdiction],
        *,
        replace: bool = False,
        source: str,
        report: dict[str, Any] | None = None,
        check: Callable[[Session], None] | None = None,
    ) -> None:
        """Add jurisdictions (or, with ``replace``, overwrite those with the same ids).

        Entries without an origin get this registry's; an entry that replaces one of the same
        origin gets the next version. One transaction: when any entry cannot be written, nothing
        is, and the error names it. ``check`` runs first inside the transaction, under the writers'
        lock, so what it checks (a registration's id still free, say) still holds at the save.
        """
        ids = [j.id for j in jurisdictions]
        if len(set(ids)) != len(ids):
            raise InvalidInput("the same jurisdiction id appears twice in one import")
        try:
            with self._transaction(write=True) as session:
                if check is not None:
                    check(session)
                held = self._held(session, ids)
                present = sorted(i for i, h in held.items() if not h.deleted)
                if not replace and present:
                    shown = ", ".join(present[:10]) + (" ..." if len(present) > 10 else "")
                    raise InvalidInput(
                        f"{len(present)} jurisdiction id(s) already exist ({shown}); "
                        "pass --replace to overwrite them",
                        existing=present[:100],
                    )
                local = _meta(session, "registry_id")
                now, stamp = _now(), timestamp()
                serial = _take_serials(session, len(jurisdictions))
                entries = []
                for jurisdiction in jurisdictions:
                    origin = jurisdiction.origin or local
                    before = held.get(jurisdiction.id)
                    same = before is not None and before.origin == origin
                    version = before.version + 1 if same and before else 1
                    entries.append(
                        copy_with(
                            jurisdiction,
                            origin=origin,
                            version=max(version, jurisdiction.version),
                            updated=stamp,
                        )
                    )
                self._remove(session, ids)
                session.add_all(
                    _to_row(entry, now, serial + i, via=None) for i, entry in enumerate(entries)
                )
                session.add(
                    ImportRow(
                        source=source,
                        imported_at=now,
                        jurisdictions=len(jurisdictions),
                        report=report or {},
                    )
                )
        except SQLAlchemyError as exc:
            raise StoreError(
                f"the import was rolled back, nothing changed: {_reason(exc)}"
            ) from exc

    def delete(
        self,
        ids: Sequence[str],
        *,
        source: str,
        check: Callable[[Session], None] | None = None,
    ) -> list[str]:
        """Delete entries, leaving tombstones that carry the deletion to mirrors; returns the ids
        that existed. The deletion is a new version from the entry's own origin. ``check`` runs
        first inside the transaction, under the writers' lock, as for :meth:`save`."""
        try:
            with self._transaction(write=True) as session:
                if check is not None:
                    check(session)
                held = {i: h for i, h in self._held(session, ids).items() if not h.deleted}
                serial = _take_serials(session, len(held))
                stamp = timestamp()
                self._remove(session, list(held))
                for i, (jurisdiction, before) in enumerate(sorted(held.items())):
                    session.add(
                        _tombstone(
                            jurisdiction,
                            copy_with(before, version=before.version + 1, updated=stamp),
                            serial + i,
                            via=None,
                        )
                    )
                session.add(
                    ImportRow(
                        source=source,
                        imported_at=_now(),
                        jurisdictions=-len(held),
                        report={"deleted": sorted(held)},
                    )
                )
                _prune_tombstones(session)
                return sorted(held)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"the deletion was rolled back, nothing changed: {_reason(exc)}"
            ) from exc

    def changes(self, since: int, limit: int = 500) -> ChangePage:
        """Entries changed and deleted after ``since``, oldest first, at most ``limit`` of them.

        Raises :class:`SnapshotRequired` when the log no longer reaches back that far (forgotten
        tombstones) or ``since`` is ahead of this registry (it was reset or replaced).
        """
        with self._transaction(one_snapshot=True) as session:
            registry_id = _meta(session, "registry_id")
            serial = int(_meta(session, "serial"))
            floor = int(_meta(session, "log_floor"))
            if since < floor:
                raise SnapshotRequired(
                    f"changes after serial {since} are no longer all in the log (it starts after "
                    f"{floor}); take the snapshot at /v1/registry",
                    since=since,
                    oldest=floor,
                    serial=serial,
                )
            if since > serial:
                raise SnapshotRequired(
                    f"serial {since} is ahead of this registry ({serial}): it was reset or "
                    "replaced; take the snapshot at /v1/registry",
                    since=since,
                    serial=serial,
                )
            rows = session.scalars(
                select(JurisdictionRow)
                .where(JurisdictionRow.serial > since)
                .order_by(JurisdictionRow.serial)
                .limit(limit + 1)
            )
            tombs = session.scalars(
                select(TombstoneRow)
                .where(TombstoneRow.serial > since)
                .order_by(TombstoneRow.serial)
                .limit(limit + 1)
            )
            merged: list[Change] = [Change(r.serial, r.id, _to_model(r), None) for r in rows]
            merged += [Change(t.serial, t.id, None, _tomb_version(t)) for t in tombs]
            merged.sort(key=lambda c: c.serial)
            return ChangePage(registry_id, serial, since, merged[:limit], len(merged) > limit)

    def apply_changes(
        self,
        changes: Sequence[Change],
        *,
        via: str,
        upstream: str | None = None,
        upstream_serial: int | None = None,
        registry_id: str | None = None,
        verified: frozenset[str] = frozenset(),
    ) -> ApplyReport:
        """Apply entries and deletions mirrored from ``via`` by the federation rules, in one
        transaction that also records how far the mirror of ``upstream`` has read. ``verified``:
        the ids whose attestation was checked against the domain's own DNS here."""
        return self._apply(
            changes, via, upstream, upstream_serial, registry_id, snapshot=False, verified=verified
        )

    def apply_snapshot(
        self,
        changes: Sequence[Change],
        *,
        via: str,
        registry_id: str,
        serial: int,
        verified: frozenset[str] = frozenset(),
    ) -> ApplyReport:
        """Apply an upstream's whole snapshot: its entries by the federation rules, and entries
        once mirrored from it that it no longer has are deleted. One transaction."""
        return self._apply(changes, via, via, serial, registry_id, snapshot=True, verified=verified)

    def layer_version(self, name: str) -> str | None:
        """The version of the read-only layer ``name`` (``embedded``) the store last took, or
        ``None`` when it never took one (or the layer was left out)."""
        with Session(self.engine) as session:
            row = session.get(MetaRow, f"layer:{name}")
            return row.value if row is not None and row.value else None

    def apply_layer(
        self, name: str, version: str | None, entries: Sequence[Jurisdiction]
    ) -> ApplyReport:
        """Make the read-only layer ``name`` hold ``entries`` (at ``version``; ``None`` and no
        entries: leave the layer out). Its rows are marked as coming via ``name``; they are
        applied by the same federation rules as a mirror's snapshot (an entry written here
        always wins over a layer's), and the layer's rows it no longer lists are deleted, with
        tombstones, so mirrors follow. One transaction for the entries.

        An entry the layer had deleted here (left out, then taken back) comes back as the next
        version of the same origin, so the deletion does not shadow it."""
        ids = [j.id for j in entries]
        listed = set(ids)
        with Session(self.engine) as session:
            held = self._held(session, ids)
            rows = session.scalars(select(JurisdictionRow).where(JurisdictionRow.via == name))
            gone = [(row.id, _row_version(row)) for row in rows if row.id not in listed]
        changes = []
        for entry in entries:
            before = held.get(entry.id)
            if before is not None and before.deleted and before.origin == entry.origin:
                entry = copy_with(entry, version=max(entry.version, before.version + 1))
            changes.append(Change(0, entry.id, entry, None))
        # An entry the layer no longer lists is deleted by its own origin, as a new version, so
        # that mirrors holding the old copy take the deletion too.
        stamp = timestamp()
        for jurisdiction, last in sorted(gone, key=lambda item: item[0]):
            deletion = copy_with(last, version=last.version + 1, updated=stamp, deleted=True)
            changes.append(Change(0, jurisdiction, None, deletion))
        report = self._apply(changes, name, None, None, None, snapshot=False)
        try:
            with self._transaction(write=True) as session:
                _upsert(session, MetaRow, {"key": f"layer:{name}", "value": version or ""})
        except SQLAlchemyError as exc:
            raise StoreError(
                f"the layer {name} was applied but its version was not noted: {_reason(exc)}"
            ) from exc
        return report

    def _apply(
        self,
        changes: Sequence[Change],
        via: str,
        upstream: str | None,
        upstream_serial: int | None,
        registry_id: str | None,
        *,
        snapshot: bool,
        verified: frozenset[str] = frozenset(),
    ) -> ApplyReport:
        report = ApplyReport()
        try:
            with self._transaction(write=True) as session:
                if snapshot:  # what came from this upstream and is gone there: deleted here
                    listed = {c.id for c in changes}
                    rows = session.scalars(
                        select(JurisdictionRow).where(JurisdictionRow.via == via)
                    )
                    for row in [row for row in rows if row.id not in listed]:
                        version = copy_with(_row_version(row), deleted=True)
                        session.delete(row)
                        session.flush()
                        serial = _take_serials(session, 1)
                        session.add(_tombstone(row.id, version, serial, via=via))
                        report.deleted.append(row.id)
                ids = [c.id for c in changes]
                held = self._held(session, ids, lock=True)
                here = self._written_here(session, ids)
                local = _meta(session, "registry_id")
                for change in changes:
                    before = held.get(change.id)
                    copy = None if before is None else Held(before, change.id in here)
                    verdict = judge_mirrored(
                        change.version_info(),
                        copy,
                        registry_id=local,
                        verified=change.id in verified,
                    )
                    self._apply_one(session, change, before, verdict, via, report)
                if upstream is not None:
                    mirror = session.get(MirrorRow, upstream, with_for_update=True)
                    if mirror is None:
                        raise StoreError(f"{upstream} is not a mirrored registry")
                    if upstream_serial is not None:  # another process may have read further
                        behind = mirror.last_serial if not snapshot else 0
                        mirror.last_serial = max(behind, upstream_serial)
                    mirror.registry_id = registry_id or mirror.registry_id
                    _record_attempt(mirror, error=None)
                _prune_tombstones(session)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"the sync batch was rolled back, nothing changed: {_reason(exc)}"
            ) from exc
        return report

    def _apply_one(
        self,
        session: Session,
        change: Change,
        held: EntryVersion | None,
        verdict: Verdict,
        via: str,
        report: ApplyReport,
    ) -> None:
        """Carry out the federation rule's verdict on one mirrored copy."""
        incoming = change.version_info()
        if not verdict.take:
            if verdict.conflict:
                _log_conflict(session, change.id, held, incoming, verdict.why, via)
                report.overruled.append(change.id)
            else:
                report.unchanged += 1
            return
        if verdict.conflict and held is not None:
            taken = copy_with(incoming, attested=verdict.attested)
            _log_conflict(session, change.id, taken, held, verdict.why, via)
            report.overruled.append(change.id)
        serial = _take_serials(session, 1)
        self._remove(session, [change.id])
        if change.jurisdiction is not None:
            entry = copy_with(change.jurisdiction, attested=verdict.attested)
            session.add(_to_row(entry, _now(), serial, via=via))
            report.upserted.append(change.id)
        else:
            session.add(_tombstone(change.id, copy_with(incoming, attested=False), serial, via=via))
            report.deleted.append(change.id)

    @staticmethod
    def _written_here(session: Session, ids: Sequence[str]) -> set[str]:
        """The ids whose entry or tombstone was written here, not taken from a mirror."""
        found: set[str] = set()
        for chunk in range(0, len(ids), 500):
            part = list(ids[chunk : chunk + 500])
            for model in (JurisdictionRow, TombstoneRow):
                found.update(
                    session.scalars(select(model.id).where(model.id.in_(part), model.via.is_(None)))
                )
        return found

    @staticmethod
    def _held(
        session: Session, ids: Sequence[str], *, lock: bool = False
    ) -> dict[str, EntryVersion]:
        """What this store holds for these ids: live entries and tombstones."""
        found: dict[str, EntryVersion] = {}
        for chunk in range(0, len(ids), 500):
            part = list(ids[chunk : chunk + 500])
            rows = select(JurisdictionRow).where(JurisdictionRow.id.in_(part))
            tombs = select(TombstoneRow).where(TombstoneRow.id.in_(part))
            if lock:
                rows, tombs = rows.with_for_update(), tombs.with_for_update()
            for row in session.scalars(rows):
                found[row.id] = _row_version(row)
            for tomb in session.scalars(tombs):
                found[tomb.id] = _tomb_version(tomb)
        return found

    @staticmethod
    def _remove(session: Session, ids: Sequence[str]) -> None:
        for chunk in range(0, len(ids), 500):
            part = list(ids[chunk : chunk + 500])
            session.execute(delete(JurisdictionRow).where(JurisdictionRow.id.in_(part)))
            session.execute(delete(TombstoneRow).where(TombstoneRow.id.in_(part)))

    def conflicts(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest overruled copies, with why each lost."""
        with Session(self.engine) as session:
            rows = session.scalars(select(ConflictRow).order_by(ConflictRow.id.desc()).limit(limit))
            return [
                {
                    "jurisdiction": r.jurisdiction,
                    "kept": r.kept,
                    "overruled": r.overruled,
                    "why": r.why,
                    "via": r.via,
                    "at": _utc_iso(r.at),
                }
                for r in rows
            ]

    def imports(self) -> list[dict[str, Any]]:
        """The import log, newest first."""
        with Session(self.engine) as session:
            rows = session.scalars(select(ImportRow).order_by(ImportRow.id.desc()))
            return [
                {
                    "source": r.source,
                    "imported_at": _utc(r.imported_at).isoformat(),
                    "jurisdictions": r.jurisdictions,
                    "report": r.report,
                }
                for r in rows
            ]


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a change log: the entry as it now is, or its deletion."""

    serial: int
    id: str
    jurisdiction: Jurisdiction | None
    deletion: EntryVersion | None

    def version_info(self) -> EntryVersion:
        if self.deletion is not None:
            return self.deletion
        j = self.jurisdiction
        assert j is not None and j.origin is not None
        return EntryVersion(j.origin, j.version, j.updated or "", j.attested, j.domain)


@dataclass(frozen=True, slots=True)
class ChangePage:
    """A page of changes after ``since``; ``more`` when the log goes on past the last one."""

    registry_id: str
    serial: int
    since: int
    changes: list[Change]
    more: bool

    @property
    def last(self) -> int:
        """The serial to ask from next."""
        return self.changes[-1].serial if self.changes else self.since


@dataclass(slots=True)
class ApplyReport:
    """What a sync batch did: entries taken, deletions taken, copies overruled, no-ops."""

    upserted: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    overruled: list[str] = field(default_factory=list)
    unchanged: int = 0

    def add(self, other: ApplyReport) -> None:
        self.upserted += other.upserted
        self.deleted += other.deleted
        self.overruled += other.overruled
        self.unchanged += other.unchanged


def _prune_tombstones(session: Session) -> None:
    """Forget tombstones older than ``TOMBSTONE_DAYS``; the log then starts after them."""
    cutoff = timestamp(_now() - dt.timedelta(days=TOMBSTONE_DAYS))
    old = select(func.max(TombstoneRow.serial)).where(TombstoneRow.origin_updated < cutoff)
    newest_forgotten = session.scalar(old)
    if newest_forgotten is None:
        return
    session.execute(delete(TombstoneRow).where(TombstoneRow.serial <= newest_forgotten))
    floor = session.get(MetaRow, "log_floor")
    if floor is not None and int(floor.value) < newest_forgotten:
        floor.value = str(newest_forgotten)


def _log_conflict(
    session: Session,
    jurisdiction: str,
    kept: EntryVersion | None,
    lost: EntryVersion,
    why: str,
    via: str,
) -> None:
    held = kept.describe() if kept is not None else "nothing (no copy held)"
    log.warning(
        "jurisdiction %s: kept %s; overruled the %s: %s",
        jurisdiction,
        held,
        lost.describe(),
        why,
    )
    session.add(
        ConflictRow(
            jurisdiction=jurisdiction,
            kept=held[:600],
            overruled=lost.describe()[:600],
            why=why[:300],
            via=via,
            at=_now(),
        )
    )


def _to_row(j: Jurisdiction, now: dt.datetime, serial: int, *, via: str | None) -> JurisdictionRow:
    return JurisdictionRow(
        id=j.id,
        name=j.name,
        domain=j.domain,
        jurisdiction_id=j.jurisdiction_id,
        discovery_url=j.discovery_url,
        boundary_wkb=shapely.to_wkb(j.boundary) if j.boundary is not None else None,
        boundary_generation=j.boundary_generation,
        endpoints=[e.to_dict() for e in j.endpoints],
        services=None if j.services is None else [s.to_dict() for s in j.services],
        provenance=[p.to_dict() for p in j.provenance],
        notes=list(j.notes),
        updated_at=now,
        origin=j.origin,
        version=j.version,
        origin_updated=j.updated,
        expires=j.expires,
        attested=j.attested,
        serial=serial,
        via=via,
    )


#: The columns :func:`_read_all` reads, in the order it unpacks them; the JSON ones cast to text
#: on every backend (PostgreSQL's driver would decode them), for :class:`_Decoded`.
_TABLE = JurisdictionRow.__table__
_SCALARS = (
    "id",
    "name",
    "boundary_generation",
    "domain",
    "jurisdiction_id",
    "discovery_url",
    "origin",
    "version",
    "origin_updated",
    "expires",
    "attested",
)
_JSON_COLUMNS = ("endpoints", "services", "provenance", "notes")
_COLUMNS = [
    _TABLE.c.boundary_wkb,
    *(_TABLE.c[name] for name in _SCALARS),
    *(cast(_TABLE.c[name], Text) for name in _JSON_COLUMNS),
]


def _endpoints(value: list[dict[str, Any]]) -> tuple[Endpoint, ...]:
    return tuple(Endpoint.from_dict(e) for e in value)


def _services(value: list[dict[str, Any]] | None) -> tuple[Service, ...] | None:
    return None if value is None else tuple(Service.from_dict(s) for s in value)


def _provenance(value: list[dict[str, Any]]) -> tuple[Provenance, ...]:
    return tuple(Provenance(**p) for p in value)


def _notes(value: list[str]) -> tuple[str, ...]:
    return tuple(value)


class _Decoded(dict[str | None, Any]):
    """One JSON column's values by their text, each decoded on first sight (``decoded[raw]``).

    The entries of one import or one mirror share their endpoints, provenance and notes word for
    word, and what they decode to is immutable (tuples of frozen models), so equal texts share
    one value: at a million entries this is most of a store read's time, and memory besides. A
    dict, so that a text seen before costs one lookup and no Python call.
    """

    __slots__ = ("_build",)

    def __init__(self, build: Callable[[Any], Any]) -> None:
        super().__init__()
        self._build = build

    def __missing__(self, raw: str | None) -> Any:
        value = self[raw] = self._build(None if raw is None else orjson.loads(raw))  # SQL NULL
        return value


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a while (unless it was off already).

    A bulk read makes millions of objects and no cycles; the collector, triggered by every
    700 new objects, would walk the whole growing heap again and again (a fifth of a store read
    at a million entries). What is made meanwhile is collected as usual afterwards; a pause in
    one thread pauses it in all, which only delays their collections.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read_all(session: Session) -> list[Jurisdiction]:
    """Every stored jurisdiction, ordered by id, read without the ORM: the driver's rows, the JSON
    columns decoded once per distinct text, every boundary decoded by one vectorized
    ``from_wkb``. Loading a large registry is what a server's start waits for."""
    # The driver's own cursor: SQLAlchemy's result rows cost a second per million, and every
    # column read here is a string, a number or bytes that needs no conversion of its.
    connection = session.connection()
    query = select(*_COLUMNS).order_by(_TABLE.c.id).compile(dialect=connection.dialect)
    driver_error = connection.dialect.loaded_dbapi.Error
    with _collector_paused():
        cursor = connection.connection.cursor()
        try:
            cursor.execute(str(query))
            rows = cursor.fetchall()
        except driver_error as exc:  # raised as SQLAlchemy raises it, so callers see one kind
            raise DBAPIError.instance(str(query), None, exc, driver_error) from exc
        finally:
            cursor.close()
        wkbs = np.empty(len(rows), dtype=object)
        wkbs[:] = [row[0] for row in rows]
        boundaries = shapely.from_wkb(wkbs).tolist() if len(rows) else []
        endpoints, services, provenance, notes = (
            _Decoded(build) for build in (_endpoints, _services, _provenance, _notes)
        )
        # Positional arguments, in the order of Jurisdiction's fields, and the row unpacked by
        # position: keywords and a helper call cost a third of this loop (a second per million).
        # _to_model builds the same model by keyword: the tests compare the two reads.
        entries = [
            Jurisdiction(
                id, name, boundary, generation, domain, jurisdiction_id, discovery_url,
                endpoints[endpoints_text], services[services_text], provenance[provenance_text],
                notes[notes_text], origin, version, origin_updated, expires, bool(attested),
            )
            for (
                _, id, name, generation, domain, jurisdiction_id, discovery_url, origin, version,
                origin_updated, expires, attested, endpoints_text, services_text, provenance_text,
                notes_text,
            ), boundary in zip(rows, boundaries, strict=True)
        ]  # fmt: skip
        del rows  # before the collector is back: it would walk a million rows on their way out
    return entries


def _to_model(row: JurisdictionRow) -> Jurisdiction:
    """A stored entry as a model, from the ORM's row (:func:`_read_all` reads the same columns
    without it)."""
    return Jurisdiction(
        id=row.id,
        name=row.name,
        boundary=shapely.from_wkb(row.boundary_wkb) if row.boundary_wkb is not None else None,
        boundary_generation=row.boundary_generation,
        domain=row.domain,
        jurisdiction_id=row.jurisdiction_id,
        discovery_url=row.discovery_url,
        endpoints=_endpoints(row.endpoints),
        services=_services(row.services),
        provenance=_provenance(row.provenance),
        notes=_notes(row.notes),
        origin=row.origin,
        version=row.version,
        updated=row.origin_updated,
        expires=row.expires,
        attested=bool(row.attested),
    )


def _row_version(row: JurisdictionRow) -> EntryVersion:
    return EntryVersion(row.origin, row.version, row.origin_updated, bool(row.attested), row.domain)


def _tomb_version(row: TombstoneRow) -> EntryVersion:
    return EntryVersion(
        row.origin, row.version, row.origin_updated, row.attested, row.domain, deleted=True
    )


def _tombstone(
    jurisdiction: str, version: EntryVersion, serial: int, *, via: str | None
) -> TombstoneRow:
    return TombstoneRow(
        id=jurisdiction,
        domain=version.domain,
        origin=version.origin,
        version=version.version,
        origin_updated=version.updated,
        attested=version.attested,
        serial=serial,
        via=via,
    )
