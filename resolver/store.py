"""The store: jurisdictions, their boundaries and the import log, in SQLite (default) or PostgreSQL.

Schema changes are numbered (``SCHEMA_VERSION``); a database written by a newer version is refused
rather than damaged. Every write is one transaction: a failed import leaves the previous data as
it was.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import shapely
from sqlalchemy import (
    JSON,
    DateTime,
    Integer,
    LargeBinary,
    String,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from .errors import InvalidInput, StoreError
from .models import Endpoint, Jurisdiction, Provenance, Service

#: The schema this code reads and writes. Bump it, and add a step to ``_MIGRATIONS``, on any change.
SCHEMA_VERSION = 1


class Base(DeclarativeBase):
    pass


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


class ImportRow(Base):
    __tablename__ = "imports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(2048))
    imported_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    jurisdictions: Mapped[int] = mapped_column(Integer)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)


def database_url(db: str | Path) -> str:
    """An SQLAlchemy URL from ``--db``: a URL as it is, anything else as an SQLite file path."""
    text = str(db)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Store:
    """Jurisdictions kept in a database. Open with ``Store(db)``; close with :meth:`close`."""

    def __init__(self, db: str | Path) -> None:
        self.url = database_url(db)
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = create_engine(self.url)
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            self._ensure_schema()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the store {self.url}: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with Session(self.engine) as session, session.begin():
            yield session

    def _ensure_schema(self) -> None:
        Base.metadata.create_all(self.engine)
        with self._transaction() as session:
            row = session.get(MetaRow, "schema_version")
            if row is None:
                session.add(MetaRow(key="schema_version", value=str(SCHEMA_VERSION)))
                return
            found = int(row.value)
            if found > SCHEMA_VERSION:
                raise StoreError(
                    f"the store {self.url} has schema version {found}, newer than this "
                    f"geoweb understands ({SCHEMA_VERSION}); upgrade geoweb",
                    found=found,
                    supported=SCHEMA_VERSION,
                )

    @property
    def schema_version(self) -> int:
        with Session(self.engine) as session:
            row = session.get(MetaRow, "schema_version")
            return int(row.value) if row else 0

    def count(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(JurisdictionRow)) or 0)

    def jurisdictions(self) -> list[Jurisdiction]:
        """Every stored jurisdiction, ordered by id."""
        with Session(self.engine) as session:
            rows = session.scalars(select(JurisdictionRow).order_by(JurisdictionRow.id))
            return [_to_model(row) for row in rows]

    def save(
        self,
        jurisdictions: Sequence[Jurisdiction],
        *,
        replace: bool = False,
        source: str,
        report: dict[str, Any] | None = None,
    ) -> None:
        """Add jurisdictions (or, with ``replace``, overwrite those with the same ids).

        One transaction: when any entry cannot be written, nothing is, and the error names it.
        """
        ids = [j.id for j in jurisdictions]
        if len(set(ids)) != len(ids):
            raise InvalidInput("the same jurisdiction id appears twice in one import")
        try:
            with self._transaction() as session:
                if not replace:
                    clash = sorted(self._existing(session, ids))
                    if clash:
                        shown = ", ".join(clash[:10]) + (" ..." if len(clash) > 10 else "")
                        raise InvalidInput(
                            f"{len(clash)} jurisdiction id(s) already exist ({shown}); "
                            "pass --replace to overwrite them",
                            existing=clash[:100],
                        )
                now = _now()
                for jurisdiction in jurisdictions:
                    session.merge(_to_row(jurisdiction, now))
                session.add(
                    ImportRow(
                        source=source,
                        imported_at=now,
                        jurisdictions=len(jurisdictions),
                        report=report or {},
                    )
                )
        except SQLAlchemyError as exc:
            raise StoreError(f"the import was rolled back, nothing changed: {exc}") from exc

    @staticmethod
    def _existing(session: Session, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in range(0, len(ids), 500):
            part = ids[chunk : chunk + 500]
            found.update(
                session.scalars(select(JurisdictionRow.id).where(JurisdictionRow.id.in_(part)))
            )
        return found

    def imports(self) -> list[dict[str, Any]]:
        """The import log, newest first."""
        with Session(self.engine) as session:
            rows = session.scalars(select(ImportRow).order_by(ImportRow.id.desc()))
            return [
                {
                    "source": r.source,
                    "imported_at": r.imported_at.isoformat(),
                    "jurisdictions": r.jurisdictions,
                    "report": r.report,
                }
                for r in rows
            ]


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _to_row(j: Jurisdiction, now: dt.datetime) -> JurisdictionRow:
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
    )
