"""The ad hoc service's requests (``resolver/adhoc``): kept so they survive restarts, read back
by the GeoReport v2 GETs, and marked as they are forwarded to the city that later covers them.

The reporter's own fields are kept in a column of their own, so that the public reads can leave
them out without filtering each row."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, DateTime, Float, String, Text, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from common.errors import StoreError
from resolver.store.database import Database
from resolver.store.schema import Base


class AdhocRequestRow(Base):
    """One service request held by the ad hoc service. ``forward_state``: held (nobody to send
    it to yet), sending (a POST may be under way), forwarded, uncertain (a POST was cut short:
    the operator decides), unmatched, cancelled."""

    __tablename__ = "adhoc_requests"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    service_code: Mapped[str] = mapped_column(String(200), index=True)
    service_name: Mapped[str] = mapped_column(String(200))
    lat: Mapped[float | None] = mapped_column(Float)
    long: Mapped[float | None] = mapped_column(Float)
    address_string: Mapped[str] = mapped_column(String(500), default="")
    address_id: Mapped[str] = mapped_column(String(500), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    media_url: Mapped[str] = mapped_column(String(500), default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    private: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="open", index=True)
    status_notes: Mapped[str] = mapped_column(Text, default="")
    requested: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    forward_state: Mapped[str] = mapped_column(String(20), default="held", index=True)
    forward_endpoint: Mapped[str | None] = mapped_column(String(2000))
    forward_jurisdiction: Mapped[str | None] = mapped_column(String(200))
    forward_service_code: Mapped[str | None] = mapped_column(String(200))
    forward_id: Mapped[str | None] = mapped_column(String(200))
    forward_attempts: Mapped[int | None] = mapped_column(default=0)
    forward_note: Mapped[str | None] = mapped_column(Text)


@dataclass(frozen=True, slots=True)
class AdhocRequest:
    """A held request as read back; ``private`` only on the operator's reads."""

    id: str
    token: str
    service_code: str
    service_name: str
    lat: float | None
    long: float | None
    address_string: str
    address_id: str
    description: str
    media_url: str
    attributes: dict[str, Any]
    status: str
    status_notes: str
    requested: dt.datetime
    updated: dt.datetime
    forward_state: str
    forward_endpoint: str | None
    forward_jurisdiction: str | None
    forward_id: str | None
    private: dict[str, Any] | None = None


def _utc(when: dt.datetime) -> dt.datetime:
    # SQLite hands timezone-aware columns back naive.
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _record(row: AdhocRequestRow, *, private: bool) -> AdhocRequest:
    return AdhocRequest(
        id=row.id,
        token=row.token,
        service_code=row.service_code,
        service_name=row.service_name,
        lat=row.lat,
        long=row.long,
        address_string=row.address_string,
        address_id=row.address_id,
        description=row.description,
        media_url=row.media_url,
        attributes=dict(row.attributes or {}),
        status=row.status,
        status_notes=row.status_notes,
        requested=_utc(row.requested),
        updated=_utc(row.updated),
        forward_state=row.forward_state,
        forward_endpoint=row.forward_endpoint,
        forward_jurisdiction=row.forward_jurisdiction,
        forward_id=row.forward_id,
        private=dict(row.private or {}) if private else None,
    )


class AdhocStore(Database):
    """The ad hoc service's requests."""

    @contextmanager
    def _adhoc_transaction(self) -> Iterator[Session]:
        try:
            with self._transaction() as session:
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"the ad hoc store failed, nothing changed: {exc}") from exc

    def add_adhoc_request(
        self, values: dict[str, Any], *, now: dt.datetime | None = None
    ) -> AdhocRequest:
        """Keep a new request (the columns of :class:`AdhocRequestRow` but id, token and times)
        and return it with its new id and token."""
        now = now or dt.datetime.now(dt.UTC)
        row = AdhocRequestRow(
            id="adhoc-" + secrets.token_hex(6),
            token=secrets.token_urlsafe(18),
            requested=now,
            updated=now,
            status="open",
            status_notes="",
            forward_state="held",
            forward_attempts=0,
            **values,
        )
        with self._adhoc_transaction() as session:
            session.add(row)
            session.flush()
            return _record(row, private=True)

    def adhoc_request(self, request_id: str, *, private: bool = False) -> AdhocRequest | None:
        with self._adhoc_transaction() as session:
            row = session.get(AdhocRequestRow, request_id)
            return _record(row, private=private) if row else None

    def adhoc_request_id_for_token(self, token: str) -> str | None:
        with self._adhoc_transaction() as session:
            found: str | None = session.scalar(
                select(AdhocRequestRow.id).where(AdhocRequestRow.token == token)
            )
            return found

    def adhoc_requests(
        self,
        *,
        ids: tuple[str, ...] = (),
        codes: tuple[str, ...] = (),
        statuses: tuple[str, ...] = (),
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        forward_states: tuple[str, ...] = (),
        limit: int = 1000,
        private: bool = False,
    ) -> list[AdhocRequest]:
        """Requests matching every filter given, newest first, at most ``limit``."""
        query = select(AdhocRequestRow)
        if ids:
            query = query.where(AdhocRequestRow.id.in_(ids))
        if codes:
            query = query.where(AdhocRequestRow.service_code.in_(codes))
        if statuses:
            query = query.where(AdhocRequestRow.status.in_(statuses))
        if start is not None:
            query = query.where(AdhocRequestRow.requested >= start)
        if end is not None:
            query = query.where(AdhocRequestRow.requested <= end)
        if forward_states:
            query = query.where(AdhocRequestRow.forward_state.in_(forward_states))
        query = query.order_by(AdhocRequestRow.requested.desc(), AdhocRequestRow.id).limit(limit)
        with self._adhoc_transaction() as session:
            return [_record(r, private=private) for r in session.scalars(query)]


__all__ = ["AdhocRequest", "AdhocRequestRow", "AdhocStore"]
