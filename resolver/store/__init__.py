"""The store: jurisdictions, their boundaries and the import log, in SQLite (default) or PostgreSQL.

Schema changes are numbered (``SCHEMA_VERSION``); a database written by a newer version is refused
rather than damaged, an older one is migrated. Every write is one transaction: a failed import or
sync leaves the previous data as it was.

The store is also a registry (docs/registry.md): it has an id and a serial, every change of an entry
takes the next serial, deletions leave tombstones, and changes from mirrored registries are applied
by the rules in ``resolver/core/federation.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from dataclasses import replace as copy_with
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import shapely
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from common.errors import InvalidInput, SnapshotRequired, StoreError
from common.models import Endpoint, Jurisdiction, Provenance, Service
from resolver.core.federation import EntryVersion, timestamp, why_newer
from resolver.store.schema import Base

if TYPE_CHECKING:
    from discovery.fetch import Fetched

#: The schema this code reads and writes. Bump it, and add a step to ``_MIGRATIONS``, on any change.
SCHEMA_VERSION = 2

#: Tombstones older than this are forgotten; mirrors further behind take a snapshot instead.
TOMBSTONE_DAYS = 30

log = logging.getLogger(__name__)


class MetaRow(Base):
    __tablename__ = "geoweb_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


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


class MirrorRow(Base):
    """An upstream registry this one mirrors, and how far it has read its changes."""

    __tablename__ = "mirrors"
    url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    registry_id: Mapped[str | None] = mapped_column(String(100))
    last_serial: Mapped[int] = mapped_column(Integer)
    added_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_success_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(2048))
    failures: Mapped[int] = mapped_column(Integer)


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


class ChallengeRow(Base):
    """A domain-control challenge of a registration (``resolver/registry/registration.py``).
    Keyed by the digest the domain publishes, never the token; times are registry timestamps
    (sort as text).
    A new table: ``create_all`` adds it to older stores, so SCHEMA_VERSION is unchanged."""

    __tablename__ = "challenges"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), index=True)
    jurisdiction: Mapped[str] = mapped_column(String(200))
    issued: Mapped[str] = mapped_column(String(40))
    expires: Mapped[str] = mapped_column(String(40), index=True)
    used: Mapped[str | None] = mapped_column(String(40))


class ImportRow(Base):
    __tablename__ = "imports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(2048))
    imported_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    jurisdictions: Mapped[int] = mapped_column(Integer)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)


def database_url(db: str | Path) -> str:
    """An SQLAlchemy URL from ``--db``: a URL as it is, anything else as an SQLite file path.

    A plain ``postgresql://`` (or libpq's ``postgres://``) URL means psycopg 3, the driver the
    ``postgresql`` extra installs; SQLAlchemy alone would pick psycopg2.
    """
    text = str(db)
    if "://" in text:
        scheme, rest = text.split("://", 1)
        if scheme in ("postgresql", "postgres"):
            return f"postgresql+psycopg://{rest}"
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Store:
    """Jurisdictions kept in a database. Open with ``Store(db)``; close with :meth:`close`."""

    def __init__(self, db: str | Path) -> None:
        self.url = database_url(db)
        #: The URL as messages and logs show it: without the password.
        self.name = _shown(self.url)
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = _engine(self.url, self.name)
        except ImportError as exc:
            raise StoreError(f"cannot open the store {self.name}: {_no_driver(exc)}") from None
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the store {self.name}: {_reason(exc)}") from exc
        except ValueError as exc:  # make_url: a port that is not a number
            raise StoreError(f"cannot open the store {self.name}: not a URL ({exc})") from None
        try:
            self._ensure_schema()
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise StoreError(f"cannot open the store {self.name}: {_reason(exc)}") from exc
        except BaseException:
            self.engine.dispose()
            raise

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, *, write: bool = False, one_snapshot: bool = False) -> Iterator[Session]:
        """One transaction. ``write``: a change of the registry, which first takes the writers'
        lock (see :func:`_lock_for_writing`). ``one_snapshot``: every read sees the same state;
        PostgreSQL's default isolation (read committed) takes a new snapshot per statement."""
        with Session(self.engine) as session, session.begin():
            if one_snapshot and self.engine.dialect.name == "postgresql":
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            if write:
                _lock_for_writing(session)
            yield session

    def _ensure_schema(self) -> None:
        """Create or migrate the schema in one transaction (PostgreSQL's DDL is transactional: a
        failed migration leaves the old schema). On PostgreSQL an advisory lock makes processes
        opening a new database at once take turns: one creates it, the others find it made."""
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
            Base.metadata.create_all(connection)
            with Session(connection) as session:
                row = session.get(MetaRow, "schema_version")
                if row is None:
                    session.add(MetaRow(key="schema_version", value=str(SCHEMA_VERSION)))
                    session.add(MetaRow(key="registry_id", value=_new_registry_id()))
                    session.add(MetaRow(key="serial", value="0"))
                    session.add(MetaRow(key="log_floor", value="0"))
                    session.flush()
                    return
                found = int(row.value)
                if found > SCHEMA_VERSION:
                    raise StoreError(
                        f"the store {self.name} has schema version {found}, newer than this "
                        f"geoweb understands ({SCHEMA_VERSION}); upgrade geoweb",
                        found=found,
                        supported=SCHEMA_VERSION,
                    )
                for step in range(found, SCHEMA_VERSION):
                    _MIGRATIONS[step](session)
                    log.info("migrated the store %s to schema version %d", self.name, step + 1)
                row.value = str(SCHEMA_VERSION)
                session.flush()

    @property
    def schema_version(self) -> int:
        with Session(self.engine) as session:
            row = session.get(MetaRow, "schema_version")
            return int(row.value) if row else 0

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
            rows = session.scalars(select(JurisdictionRow).order_by(JurisdictionRow.id))
            return [_to_model(row) for row in rows]

    def snapshot(self) -> tuple[str, int, list[Jurisdiction]]:
        """Registry id, serial and every entry, read in one transaction so they agree."""
        with self._transaction(one_snapshot=True) as session:
            rows = session.scalars(select(JurisdictionRow).order_by(JurisdictionRow.id))
            entries = [_to_model(row) for row in rows]
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

    def delete(self, ids: Sequence[str], *, source: str) -> list[str]:
        """Delete entries, leaving tombstones that carry the deletion to mirrors; returns the ids
        that existed. The deletion is a new version from the entry's own origin."""
        try:
            with self._transaction(write=True) as session:
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
    ) -> ApplyReport:
        """Apply entries and deletions mirrored from ``via`` by the federation rules, in one
        transaction that also records how far the mirror of ``upstream`` has read."""
        return self._apply(changes, via, upstream, upstream_serial, registry_id, snapshot=False)

    def apply_snapshot(
        self, changes: Sequence[Change], *, via: str, registry_id: str, serial: int
    ) -> ApplyReport:
        """Apply an upstream's whole snapshot: its entries by the federation rules, and entries
        once mirrored from it that it no longer has are deleted. One transaction."""
        return self._apply(changes, via, via, serial, registry_id, snapshot=True)

    def _apply(
        self,
        changes: Sequence[Change],
        via: str,
        upstream: str | None,
        upstream_serial: int | None,
        registry_id: str | None,
        *,
        snapshot: bool,
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
                held = self._held(session, [c.id for c in changes], lock=True)
                for change in changes:
                    self._apply_one(session, change, held.get(change.id), via, report)
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
        via: str,
        report: ApplyReport,
    ) -> None:
        incoming = change.version_info()
        if held is not None:
            why = why_newer(incoming, held)
            if why is None:
                if held.origin != incoming.origin:
                    why_not = why_newer(held, incoming) or "the copy held ranks the same"
                    _log_conflict(session, change.id, held, incoming, why_not, via)
                    report.overruled.append(change.id)
                else:
                    report.unchanged += 1
                return
            if held.origin != incoming.origin:
                _log_conflict(session, change.id, incoming, held, why, via)
                report.overruled.append(change.id)
        elif incoming.deleted:
            report.unchanged += 1  # never seen: nothing to delete, and no need to remember it
            return
        serial = _take_serials(session, 1)
        self._remove(session, [change.id])
        if change.jurisdiction is not None:
            session.add(_to_row(change.jurisdiction, _now(), serial, via=via))
            report.upserted.append(change.id)
        else:
            session.add(_tombstone(change.id, incoming, serial, via=via))
            report.deleted.append(change.id)

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

    # -- mirrors ---------------------------------------------------------------------------------

    def add_mirror(self, url: str) -> bool:
        """Start mirroring the registry at ``url``; False when it was already mirrored."""
        with self._transaction() as session:
            if session.get(MirrorRow, url) is not None:
                return False
            session.add(MirrorRow(url=url, last_serial=0, added_at=_now(), failures=0))
            return True

    def remove_mirror(self, url: str) -> bool:
        with self._transaction() as session:
            row = session.get(MirrorRow, url)
            if row is None:
                return False
            session.delete(row)
            return True

    def mirrors(self) -> list[MirrorState]:
        with Session(self.engine) as session:
            rows = session.scalars(select(MirrorRow).order_by(MirrorRow.url))
            return [_mirror_state(row) for row in rows]

    def mirror(self, url: str) -> MirrorState | None:
        with Session(self.engine) as session:
            row = session.get(MirrorRow, url)
            return None if row is None else _mirror_state(row)

    def record_mirror_failure(self, url: str, error: str) -> None:
        with self._transaction() as session:
            row = session.get(MirrorRow, url)
            if row is not None:
                _record_attempt(row, error=error)

    def reset_mirror(self, url: str) -> None:
        """Read the upstream from the start again (after it was reset or replaced)."""
        with self._transaction() as session:
            row = session.get(MirrorRow, url)
            if row is not None:
                row.last_serial, row.registry_id = 0, None

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


@dataclass(frozen=True, slots=True)
class MirrorState:
    url: str
    registry_id: str | None
    last_serial: int
    added_at: str | None
    last_attempt_at: str | None
    last_success_at: str | None
    last_error: str | None
    failures: int

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def _new_registry_id() -> str:
    return secrets.token_hex(8)


def _meta(session: Session, key: str) -> str:
    row = session.get(MetaRow, key)
    if row is None:
        raise StoreError(f"the store has no {key!r}; it was not created by geoweb")
    return row.value


#: The advisory lock key ("geoweb") under which a PostgreSQL store is created or migrated.
_SCHEMA_LOCK = 0x67656F776562


def _engine(url: str, shown: str) -> Engine:
    """SQLite with WAL and a busy timeout; PostgreSQL with a bounded connect timeout and pooled
    connections checked before use (so a restarted server costs no failed request)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        options: dict[str, Any] = {"pool_pre_ping": True}
        driver = parsed.get_driver_name()
        if driver in ("psycopg", "psycopg2") and "connect_timeout" not in parsed.query:
            options["connect_args"] = {"connect_timeout": 10}
        return create_engine(parsed, **options)
    if backend != "sqlite":
        raise StoreError(
            f"cannot open the store {shown}: geoweb keeps its store in SQLite or PostgreSQL, "
            f"not {backend}"
        )
    engine = create_engine(parsed)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _shown(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return re.sub(r"(://[^/@:]*:)[^@]*@", r"\1***@", url)


def _no_driver(exc: ImportError) -> str:
    if "psycopg" in (exc.name or str(exc)):
        return (
            "PostgreSQL needs the psycopg driver, which is not installed: "
            "pip install 'geowebdns[postgresql]'"
        )
    return f"its database driver is not installed ({exc})"


def _reason(exc: SQLAlchemyError) -> str:
    """The database's own words on one line, without SQLAlchemy's statement dump and link."""
    original = getattr(exc, "orig", None)
    return " ".join(str(original if original is not None else exc).split())


def _lock_for_writing(session: Session) -> None:
    """Writers take turns: each locks the serial row, until it commits or rolls back, before it
    reads what the store holds. On PostgreSQL a writer waiting here then reads what the one before
    it committed instead of deciding on older reads and overwriting it, and serials are committed
    in the order they were handed out, without gaps."""
    session.execute(select(MetaRow.key).where(MetaRow.key == "serial").with_for_update())


def _check_values(table: Table, values: Mapping[str, Any]) -> None:
    """Refuse, on every backend alike and before anything is sent, what PostgreSQL would refuse:
    a string longer than its column or containing NUL, a JSON value that is not JSON. SQLite
    would keep such strings, and then a mirror on PostgreSQL could not."""
    key = next(iter(table.primary_key.columns)).key
    for column in table.columns:
        value = values.get(column.key)
        where = f"{table.name}.{column.key}"
        if column.key != key and isinstance(values.get(key), str):
            where += f" of {values[key][:100]!r}"
        if isinstance(column.type, JSON) and value is not None:
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InvalidInput(
                    f"{where} cannot be stored as JSON: {exc}", column=f"{table.name}.{column.key}"
                ) from None
        if not isinstance(value, str):
            continue
        limit = getattr(column.type, "length", None)
        if limit is not None and len(value) > limit:
            raise InvalidInput(
                f"{where} is {len(value)} characters long; the store keeps at most {limit}",
                column=f"{table.name}.{column.key}",
                limit=limit,
            )
        if "\x00" in value:
            raise InvalidInput(
                f"{where} contains a NUL character, which PostgreSQL cannot store",
                column=f"{table.name}.{column.key}",
            )


@event.listens_for(Base, "before_insert", propagate=True)
@event.listens_for(Base, "before_update", propagate=True)
def _values_fit(mapper: Any, _connection: Any, target: Any) -> None:
    _check_values(mapper.local_table, inspect(target).dict)  # loaded values: no SQL mid-flush


def _upsert(session: Session, model: type[Base], values: dict[str, Any], **update: Any) -> None:
    """Insert a row, or update the one with the same primary key, in one statement: two processes
    writing one key at once both succeed (the later wins), where reading first and then inserting
    fails one of them on the key. ``update``: what to set on an existing row instead of ``values``
    (SQL expressions allowed)."""
    table = cast(Table, model.__table__)
    _check_values(table, values)
    keys = [c.key for c in table.primary_key.columns]
    if session.get_bind().dialect.name == "postgresql":
        pg = postgresql.insert(table).values(values)
        changes = {k: pg.excluded[k] for k in values if k not in keys} | update
        session.execute(pg.on_conflict_do_update(index_elements=keys, set_=changes))
    else:
        lite = sqlite.insert(table).values(values)
        changes = {k: lite.excluded[k] for k in values if k not in keys} | update
        session.execute(lite.on_conflict_do_update(index_elements=keys, set_=changes))


def _take_serials(session: Session, count: int) -> int:
    """Reserve ``count`` serials and return the first. The meta row is locked until commit, so
    concurrent writers (several processes on one PostgreSQL) take turns."""
    row = session.execute(
        select(MetaRow).where(MetaRow.key == "serial").with_for_update()
    ).scalar_one()
    first = int(row.value) + 1
    row.value = str(int(row.value) + count)
    return first


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
    session: Session, jurisdiction: str, kept: EntryVersion, lost: EntryVersion, why: str, via: str
) -> None:
    log.warning(
        "jurisdiction %s: kept the %s; overruled the %s: %s",
        jurisdiction,
        kept.describe(),
        lost.describe(),
        why,
    )
    session.add(
        ConflictRow(
            jurisdiction=jurisdiction,
            kept=kept.describe()[:600],
            overruled=lost.describe()[:600],
            why=why[:300],
            via=via,
            at=_now(),
        )
    )


def _record_attempt(row: MirrorRow, *, error: str | None) -> None:
    now = _now()
    row.last_attempt_at = now
    if error is None:
        row.last_success_at, row.last_error, row.failures = now, None, 0
    else:
        row.last_error, row.failures = error[:2048], (row.failures or 0) + 1


def _mirror_state(row: MirrorRow) -> MirrorState:
    return MirrorState(
        url=row.url,
        registry_id=row.registry_id,
        last_serial=row.last_serial,
        added_at=_utc_iso(row.added_at),
        last_attempt_at=_utc_iso(row.last_attempt_at),
        last_success_at=_utc_iso(row.last_success_at),
        last_error=row.last_error,
        failures=row.failures or 0,
    )


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


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


def _to_model(row: JurisdictionRow) -> Jurisdiction:
    return Jurisdiction(
        id=row.id,
        name=row.name,
        boundary=shapely.from_wkb(row.boundary_wkb) if row.boundary_wkb is not None else None,
        boundary_generation=row.boundary_generation,
        domain=row.domain,
        jurisdiction_id=row.jurisdiction_id,
        discovery_url=row.discovery_url,
        endpoints=tuple(Endpoint.from_dict(e) for e in row.endpoints),
        services=None
        if row.services is None
        else tuple(Service.from_dict(s) for s in row.services),
        provenance=tuple(Provenance(**p) for p in row.provenance),
        notes=tuple(row.notes),
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


def _migrate_1_to_2(session: Session) -> None:
    """Schema 2 (federation): registry id and serial; origin, version and serial per entry."""
    for column, kind in (
        ("origin", "VARCHAR(300)"),
        ("version", "INTEGER"),
        ("origin_updated", "VARCHAR(40)"),
        ("expires", "VARCHAR(40)"),
        ("attested", "BOOLEAN"),
        ("serial", "INTEGER"),
        ("via", "VARCHAR(2048)"),
    ):
        session.execute(text(f"ALTER TABLE jurisdictions ADD COLUMN {column} {kind}"))
    session.execute(text("CREATE INDEX ix_jurisdictions_serial ON jurisdictions (serial)"))
    registry_id = _new_registry_id()
    session.add(MetaRow(key="registry_id", value=registry_id))
    session.add(MetaRow(key="log_floor", value="0"))
    ids = list(session.scalars(select(JurisdictionRow.id).order_by(JurisdictionRow.id)))
    session.add(MetaRow(key="serial", value=str(len(ids))))
    stamp = timestamp()
    for serial, jurisdiction in enumerate(ids, start=1):
        session.execute(
            text(
                "UPDATE jurisdictions SET origin = :origin, version = 1, origin_updated = :stamp, "
                "attested = :no, serial = :serial WHERE id = :id"
            ),
            {
                "origin": registry_id,
                "stamp": stamp,
                "no": False,
                "serial": serial,
                "id": jurisdiction,
            },
        )


#: ``_MIGRATIONS[n]`` brings a store from schema ``n`` to ``n + 1``.
_MIGRATIONS = {1: _migrate_1_to_2}


# ---------------------------------------------------------------------------------------------
# Discovery (issue 4): the HTTP cache and per-jurisdiction refresh status. New tables only; they
# are created by ``create_all`` on existing stores, so SCHEMA_VERSION is unchanged.


class HttpCacheRow(Base):
    """One stored HTTP response (RFC 9111), keyed by the URL asked for."""

    __tablename__ = "http_cache"
    url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    status: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(256))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    fetched_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float)
    etag: Mapped[str | None] = mapped_column(String(1024))
    last_modified: Mapped[str | None] = mapped_column(String(128))
    final_url: Mapped[str | None] = mapped_column(String(2048))


class RefreshStatusRow(Base):
    """The last discovery refresh of one jurisdiction: when, whether it worked, and why not."""

    __tablename__ = "refresh_status"
    jurisdiction: Mapped[str] = mapped_column(String(200), primary_key=True)
    attempted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(String(2048))
    url: Mapped[str | None] = mapped_column(String(2048))
    last_success_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    failures: Mapped[int] = mapped_column(Integer, default=0)


class StoreHttpCache:
    """The :class:`discovery.fetch.HttpCache` kept in the store, so it survives restarts."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, url: str) -> Fetched | None:
        from discovery.fetch import Fetched

        with Session(self.store.engine) as session:
            row = session.get(HttpCacheRow, url)
            if row is None:
                return None
            return Fetched(
                url=row.url,
                status=row.status,
                content_type=row.content_type,
                body=row.body,
                fetched_at=row.fetched_at,
                expires_at=row.expires_at,
                etag=row.etag,
                last_modified=row.last_modified,
                from_cache=True,
                stale=False,
                final_url=row.final_url,
            )

    def put(self, fetched: Fetched) -> None:
        """Store a response; one whose URL or headers are too long for the table is not kept."""
        values = {
            "url": fetched.url,
            "status": fetched.status,
            "content_type": fetched.content_type,
            "body": fetched.body,
            "fetched_at": fetched.fetched_at,
            "expires_at": fetched.expires_at,
            "etag": fetched.etag,
            "last_modified": fetched.last_modified,
            "final_url": fetched.final_url,
        }
        try:
            with self.store._transaction() as session:
                _upsert(session, HttpCacheRow, values)
        except InvalidInput as exc:
            log.info("not cached: %s", exc.detail)

    def flush(self, url: str | None = None) -> None:
        with self.store._transaction() as session:
            query = delete(HttpCacheRow)
            session.execute(query if url is None else query.where(HttpCacheRow.url == url))


def record_refresh(
    store: Store, jurisdiction: str, *, ok: bool, reason: str | None, url: str | None
) -> None:
    """Record one refresh attempt of a jurisdiction (time, outcome, reason)."""
    now = _now()
    values: dict[str, Any] = {
        "jurisdiction": jurisdiction,
        "attempted_at": now,
        "ok": ok,
        "reason": None if ok else (reason or "unknown")[:2048],
        "url": None if url is None else url[:2048],
        "failures": 0 if ok else 1,
    }
    if ok:
        values["last_success_at"] = now
    failures = RefreshStatusRow.__table__.c.failures
    with store._transaction() as session:
        _upsert(session, RefreshStatusRow, values, failures=0 if ok else failures + 1)


def refresh_status(store: Store, jurisdiction: str) -> dict[str, Any] | None:
    """The last refresh of a jurisdiction, or ``None`` when it was never refreshed."""
    with Session(store.engine) as session:
        row = session.get(RefreshStatusRow, jurisdiction)
        if row is None:
            return None
        return {
            "attempted_at": _utc_iso(row.attempted_at),
            "ok": row.ok,
            "reason": row.reason,
            "url": row.url,
            "last_success_at": _utc_iso(row.last_success_at),
            "consecutive_failures": row.failures,
        }


def _utc(when: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes (they were written in UTC); PostgreSQL aware ones in the
    session's time zone. Either way: the same instant, in UTC."""
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _utc_iso(when: dt.datetime | None) -> str | None:
    return None if when is None else _utc(when).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# DNS (issue 3): the DNS answer cache in the store, so that stale answers (RFC 8767 serve-stale)
# survive a restart. A new table only; created by ``create_all`` on existing stores, so
# SCHEMA_VERSION is unchanged.

if TYPE_CHECKING:
    from discovery.dns_lookup import DnsAnswer


class DnsCacheRow(Base):
    """One DNS answer (``discovery.dns_lookup.DnsAnswer``), keyed by name and type. TXT records
    are kept as their character-strings in base64 (they are bytes, not text)."""

    __tablename__ = "dns_cache"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    rdtype: Mapped[str] = mapped_column(String(16), primary_key=True)
    records: Mapped[list[Any]] = mapped_column(JSON)
    ttl: Mapped[int] = mapped_column(Integer)
    fetched_at: Mapped[float] = mapped_column(Float)
    negative: Mapped[str | None] = mapped_column(String(16))
    authenticated: Mapped[bool] = mapped_column(Boolean)
    stale: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(String(1024))


class StoreDnsCache:
    """The :class:`discovery.dns_lookup.DnsCache` kept in the store (put it behind a memory cache:
    ``TieredDnsCache``). Answers more than ``max_age`` seconds past their expiry, too old to be
    served even stale, are deleted when the cache is opened and every 1,000 writes. A failed
    write is logged, never raised: a cache must not fail a lookup."""

    def __init__(self, store: Store, *, max_age: float = 24 * 3600.0) -> None:
        self.store = store
        self.max_age = max_age
        self._writes = 0
        self.prune()

    def get(self, key: tuple[str, str]) -> DnsAnswer | None:
        from discovery.dns_lookup import DnsAnswer

        try:
            with Session(self.store.engine) as session:
                row = session.get(DnsCacheRow, key)
                if row is None:
                    return None
                return DnsAnswer(
                    name=row.name,
                    rdtype=row.rdtype,
                    records=_dns_records_from_json(row.rdtype, row.records),
                    ttl=row.ttl,
                    fetched_at=row.fetched_at,
                    negative=cast(Any, row.negative),
                    authenticated=row.authenticated,
                    stale=row.stale,
                    error=row.error,
                )
        except SQLAlchemyError as exc:
            log.warning("the DNS cache could not be read (%s): asking DNS", exc)
            return None

    def put(self, answer: DnsAnswer) -> None:
        row = DnsCacheRow(
            name=answer.name,
            rdtype=answer.rdtype,
            records=_dns_records_to_json(answer.rdtype, answer.records),
            ttl=answer.ttl,
            fetched_at=answer.fetched_at,
            negative=answer.negative,
            authenticated=answer.authenticated,
            stale=answer.stale,
            error=(answer.error or "")[:1024] or None,
        )
        try:
            with self.store._transaction() as session:
                session.merge(row)
        except SQLAlchemyError as exc:
            log.warning("the DNS cache could not keep %s %s: %s", answer.name, answer.rdtype, exc)
        self._writes += 1
        if self._writes % 1000 == 0:
            self.prune()

    def flush(self, key: tuple[str, str] | None = None) -> None:
        with self.store._transaction() as session:
            query = delete(DnsCacheRow)
            if key is not None:
                query = query.where(DnsCacheRow.name == key[0], DnsCacheRow.rdtype == key[1])
            session.execute(query)

    def prune(self) -> int:
        """Delete answers too old to serve even stale; how many were deleted."""
        now = dt.datetime.now(dt.UTC).timestamp()
        too_old = DnsCacheRow.fetched_at + DnsCacheRow.ttl + self.max_age < now
        try:
            with self.store._transaction() as session:
                result = cast(Any, session.execute(delete(DnsCacheRow).where(too_old)))
                return int(result.rowcount or 0)
        except SQLAlchemyError as exc:
            log.warning("the DNS cache could not be pruned: %s", exc)
            return 0

    def __len__(self) -> int:
        with Session(self.store.engine) as session:
            return int(session.scalar(select(func.count()).select_from(DnsCacheRow)) or 0)


def _dns_records_to_json(rdtype: str, records: Sequence[Any]) -> list[Any]:
    import base64

    if rdtype == "TXT":
        return [[base64.b64encode(s).decode("ascii") for s in strings] for strings in records]
    return list(records)


def _dns_records_from_json(rdtype: str, records: Sequence[Any]) -> tuple[Any, ...]:
    import base64

    if rdtype == "TXT":
        return tuple(tuple(base64.b64decode(s) for s in strings) for strings in records)
    return tuple(records)
