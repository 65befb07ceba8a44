"""The store's database: the engine and its URL, the schema version and its migrations,
transactions, and the helpers every feature module writes through.

The store is split by feature, one module each, every table declared on
:class:`~resolver.store.schema.Base`: ``entries`` (registry entries, tombstones, conflicts, the
import log), ``mirrors`` (the upstreams mirrored and how far each was read), ``caches`` (HTTP and
DNS answers, refresh status) and ``challenges`` (registration challenges). A feature's methods are
on a class built on :class:`Database` (``EntryStore``, ``MirrorStore``, ``ChallengeStore``);
:class:`resolver.store.Store` is all of them in one object, on one engine. A feature that only
needs a handle on the database (the caches) takes a :class:`Database` instead.

A new feature module registers itself by being named in :data:`TABLE_MODULES`: they are all
imported before the schema is created or checked, so every table exists whichever modules the
caller happened to import. A new table needs no migration (``create_all`` adds it to older stores);
a change to an existing one bumps ``SCHEMA_VERSION`` and adds a step to ``_MIGRATIONS``.

Schema changes are numbered (``SCHEMA_VERSION``); a database written by a newer version is refused
rather than damaged, an older one is migrated. Every write is one transaction: a failed import or
sync leaves the previous data as it was.

Names with a leading underscore are this package's own helpers, shared by its feature modules;
code outside ``resolver/store`` does not use them.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self, cast

import shapely
from sqlalchemy import (
    JSON,
    String,
    Table,
    create_engine,
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

from common.errors import InvalidInput, StoreError
from common.models import GENERATION_SCHEME, boundary_generation
from resolver.core.federation import timestamp
from resolver.store.schema import Base

#: The schema this code reads and writes. Bump it, and add a step to ``_MIGRATIONS``, on any change.
SCHEMA_VERSION = 3

#: The modules that declare the store's tables, each on :class:`Base`. All are imported before
#: the schema is created or checked; a new feature module adds its name here.
TABLE_MODULES = (
    "resolver.store.entries",
    "resolver.store.mirrors",
    "resolver.store.caches",
    "resolver.store.challenges",
    "resolver.store.adhoc",
)

log = logging.getLogger(__name__)


class MetaRow(Base):
    __tablename__ = "geoweb_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


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


class Database:
    """An open store database with the current schema: its engine, its transactions and its meta
    rows. The feature classes build on it; open a whole store with :class:`resolver.store.Store`,
    close it with :meth:`close`."""

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

    def __enter__(self) -> Self:
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
            _import_tables()
            Base.metadata.create_all(connection)
            with Session(connection) as session:
                row = session.get(MetaRow, "schema_version")
                if row is None:
                    session.add(MetaRow(key="schema_version", value=str(SCHEMA_VERSION)))
                    session.add(MetaRow(key="registry_id", value=_new_registry_id()))
                    session.add(MetaRow(key="serial", value="0"))
                    session.add(MetaRow(key="log_floor", value="0"))
                    session.add(MetaRow(key=_GENERATION_KEY, value=str(GENERATION_SCHEME)))
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
                if _recompute_generations(session):
                    log.info("recomputed the boundary generations of the store %s", self.name)
                session.flush()

    @property
    def schema_version(self) -> int:
        with Session(self.engine) as session:
            row = session.get(MetaRow, "schema_version")
            return int(row.value) if row else 0


def _import_tables() -> None:
    """Declare every table on :class:`Base` before the schema is made or read."""
    for name in TABLE_MODULES:
        importlib.import_module(name)


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


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _utc(when: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes (they were written in UTC); PostgreSQL aware ones in the
    session's time zone. Either way: the same instant, in UTC."""
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _utc_iso(when: dt.datetime | None) -> str | None:
    return None if when is None else _utc(when).isoformat(timespec="seconds")


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
    ids = list(session.scalars(text("SELECT id FROM jurisdictions ORDER BY id")))
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


#: The meta key naming the scheme the stored boundary generations were computed in (absent: 1).
_GENERATION_KEY = "generation_scheme"


def _recompute_generations(session: Session) -> bool:
    """Bring every stored boundary generation to the current scheme, once; whether it did.

    A data migration beside the schema ones: the generation is derived from the stored boundary,
    so the entries' versions and serials stay as they are (mirrors recompute generations from the
    geometry they receive, so this is not a change they need to be sent).
    """
    row = session.get(MetaRow, _GENERATION_KEY)
    if row is not None and int(row.value) >= GENERATION_SCHEME:
        return False
    rows = session.execute(
        text("SELECT id, boundary_wkb FROM jurisdictions WHERE boundary_wkb IS NOT NULL")
    ).all()
    for jurisdiction, wkb in rows:
        session.execute(
            text("UPDATE jurisdictions SET boundary_generation = :generation WHERE id = :id"),
            {"generation": boundary_generation(shapely.from_wkb(bytes(wkb))), "id": jurisdiction},
        )
    if row is None:
        session.add(MetaRow(key=_GENERATION_KEY, value=str(GENERATION_SCHEME)))
    else:
        row.value = str(GENERATION_SCHEME)
    return True


def _migrate_2_to_3(session: Session) -> None:
    """Schema 3 (ad hoc forwarding): what the forwarder records of each attempt and of the
    city's answer. A store made at schema 2 before the ad hoc table existed got the table whole
    from ``create_all``, so only the columns missing are added."""
    connection = session.connection()
    have = {c["name"] for c in inspect(connection).get_columns("adhoc_requests")}
    when = "TIMESTAMP WITH TIME ZONE" if connection.dialect.name == "postgresql" else "DATETIME"
    for column, kind in (
        ("forward_token", "VARCHAR(200)"),
        ("forward_status", "VARCHAR(20)"),
        ("forward_status_notes", "TEXT"),
        ("forward_next", when),
        ("forward_sent", when),
        ("forward_done", when),
    ):
        if column not in have:
            session.execute(text(f"ALTER TABLE adhoc_requests ADD COLUMN {column} {kind}"))


#: ``_MIGRATIONS[n]`` brings a store from schema ``n`` to ``n + 1``.
_MIGRATIONS = {1: _migrate_1_to_2, 2: _migrate_2_to_3}
