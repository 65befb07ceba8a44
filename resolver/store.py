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
from typing import TYPE_CHECKING, Any

import shapely
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    String,
    create_engine,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from .errors import InvalidInput, StoreError
from .models import Endpoint, Jurisdiction, Provenance, Service

if TYPE_CHECKING:
    from discovery.fetch import Fetched

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
                for chunk in range(0, len(ids), 500):
                    part = ids[chunk : chunk + 500]
                    session.execute(delete(JurisdictionRow).where(JurisdictionRow.id.in_(part)))
                session.add_all(_to_row(jurisdiction, now) for jurisdiction in jurisdictions)
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
        with self.store._transaction() as session:
            session.merge(
                HttpCacheRow(
                    url=fetched.url,
                    status=fetched.status,
                    content_type=fetched.content_type,
                    body=fetched.body,
                    fetched_at=fetched.fetched_at,
                    expires_at=fetched.expires_at,
                    etag=fetched.etag,
                    last_modified=fetched.last_modified,
                    final_url=fetched.final_url,
                )
            )

    def flush(self, url: str | None = None) -> None:
        with self.store._transaction() as session:
            query = delete(HttpCacheRow)
            session.execute(query if url is None else query.where(HttpCacheRow.url == url))


def record_refresh(
    store: Store, jurisdiction: str, *, ok: bool, reason: str | None, url: str | None
) -> None:
    """Record one refresh attempt of a jurisdiction (time, outcome, reason)."""
    now = _now()
    with store._transaction() as session:
        row = session.get(RefreshStatusRow, jurisdiction)
        if row is None:
            row = RefreshStatusRow(jurisdiction=jurisdiction, failures=0)
            session.add(row)
        row.attempted_at = now
        row.ok = ok
        row.reason = None if ok else (reason or "unknown")[:2048]
        row.url = url
        if ok:
            row.last_success_at = now
            row.failures = 0
        else:
            row.failures = (row.failures or 0) + 1


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


def _utc_iso(when: dt.datetime | None) -> str | None:
    """SQLite hands back naive datetimes; they were written in UTC."""
    if when is None:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).isoformat(timespec="seconds")
