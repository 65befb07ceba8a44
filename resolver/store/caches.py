"""What the store keeps for the outside world's answers, so that it survives restarts: HTTP
responses (RFC 9111) for the discovery fetcher, DNS answers for serve-stale (RFC 8767), and the
last discovery refresh of each jurisdiction. New tables only; ``create_all`` adds them to older
stores, so ``SCHEMA_VERSION`` is unchanged.

The caches are called from the event loop: their ``get``, ``put`` and ``flush`` are coroutines that
do the database work in the store's threads (:func:`resolver.store.aio.in_thread`); the blocking
work itself is ``read``, ``write`` and ``remove``, for code that is not async.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    String,
    delete,
    func,
    select,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from common.errors import InvalidInput
from resolver.store.aio import in_thread
from resolver.store.database import Database, _now, _upsert, _utc_iso
from resolver.store.schema import Base

if TYPE_CHECKING:
    from discovery.dns_lookup import DnsAnswer
    from discovery.fetch import Fetched

log = logging.getLogger(__name__)


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


class StoreHttpCache:
    """The :class:`discovery.fetch.HttpCache` kept in the store, so it survives restarts. Every
    fetch reads it: the reads and writes run in the store's threads, never on the event loop."""

    def __init__(self, store: Database) -> None:
        self.store = store

    async def get(self, url: str) -> Fetched | None:
        return await in_thread(self.read, url)

    async def put(self, fetched: Fetched) -> None:
        await in_thread(self.write, fetched)

    async def flush(self, url: str | None = None) -> None:
        await in_thread(self.remove, url)

    def read(self, url: str) -> Fetched | None:
        from discovery.fetch import Fetched  # aiohttp: loaded by cache users, not every store user

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

    def write(self, fetched: Fetched) -> None:
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

    def remove(self, url: str | None = None) -> None:
        with self.store._transaction() as session:
            query = delete(HttpCacheRow)
            session.execute(query if url is None else query.where(HttpCacheRow.url == url))


def record_refresh(
    store: Database, jurisdiction: str, *, ok: bool, reason: str | None, url: str | None
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


def refresh_status(store: Database, jurisdiction: str) -> dict[str, Any] | None:
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


class StoreDnsCache:
    """The :class:`discovery.dns_lookup.DnsCache` kept in the store. Put it behind a memory cache
    (``TieredDnsCache``, which asks it only on a memory miss); its reads and writes run in the
    store's threads, never on the event loop. Answers more than ``max_age`` seconds past their
    expiry, too old to be served even stale, are deleted when the cache is opened and every 1,000
    writes. A failed write is logged, never raised: a cache must not fail a lookup."""

    def __init__(self, store: Database, *, max_age: float = 24 * 3600.0) -> None:
        self.store = store
        self.max_age = max_age
        self._writes = 0
        self.prune()

    async def get(self, key: tuple[str, str]) -> DnsAnswer | None:
        return await in_thread(self.read, key)

    async def put(self, answer: DnsAnswer) -> None:
        await in_thread(self.write, answer)

    async def flush(self, key: tuple[str, str] | None = None) -> None:
        await in_thread(self.remove, key)

    def read(self, key: tuple[str, str]) -> DnsAnswer | None:
        from discovery.dns_lookup import DnsAnswer  # dnspython: loaded by cache users only

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

    def write(self, answer: DnsAnswer) -> None:
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

    def remove(self, key: tuple[str, str] | None = None) -> None:
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
    if rdtype == "TXT":
        return [[base64.b64encode(s).decode("ascii") for s in strings] for strings in records]
    return list(records)


def _dns_records_from_json(rdtype: str, records: Sequence[Any]) -> tuple[Any, ...]:
    if rdtype == "TXT":
        return tuple(tuple(base64.b64decode(s) for s in strings) for strings in records)
    return tuple(records)
