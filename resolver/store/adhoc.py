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

from sqlalchemy import JSON, CursorResult, DateTime, Float, String, Text, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from common.errors import StoreError
from resolver.store.database import Database
from resolver.store.schema import Base

#: What the forwarder does with a request in each state (docs/adhoc.md):
#: ``held``: nobody to send it to yet; tried again after every registry change and when
#: ``forward_next`` passes (after a failure). ``unmatched``: a jurisdiction covers it, but no one
#: service of its list matches, or it needs attributes the report lacks; kept and listed, tried
#: again after a registry change. ``sending``: claimed for one POST that may be under way; if its
#: process dies, it becomes ``uncertain`` once the POST's time is up. ``forwarded``: the city has it
#: (its id, or a token until the id is known), polled until the city closes it. ``uncertain``: a
#: POST may have reached the city without its answer reaching us; never re-sent unless the
#: operator says so. ``refused``: the city answered the POST with a 4xx; the operator decides.
#: ``cancelled``: by the operator.
FORWARD_STATES = (
    "held",
    "unmatched",
    "sending",
    "forwarded",
    "uncertain",
    "refused",
    "cancelled",
)


class AdhocRequestRow(Base):
    """One service request held by the ad hoc service, and its forwarding (``FORWARD_STATES``)."""

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
    #: The city's token, when its POST answer had no id yet.
    forward_token: Mapped[str | None] = mapped_column(String(200))
    #: The city's status and notes, as last read back.
    forward_status: Mapped[str | None] = mapped_column(String(20))
    forward_status_notes: Mapped[str | None] = mapped_column(Text)
    #: When to try again (held, after a failure) or to read the city's status (forwarded).
    forward_next: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: When the last claim for a POST was taken, and when the city took the request.
    forward_sent: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    forward_done: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


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
    forward_endpoint: str | None = None
    forward_jurisdiction: str | None = None
    forward_service_code: str | None = None
    forward_id: str | None = None
    forward_token: str | None = None
    forward_attempts: int = 0
    forward_note: str | None = None
    forward_status: str | None = None
    forward_status_notes: str | None = None
    forward_next: dt.datetime | None = None
    forward_sent: dt.datetime | None = None
    forward_done: dt.datetime | None = None
    private: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every field, for the operator (``geoweb adhoc show --json``)."""
        data = {f: getattr(self, f) for f in self.__dataclass_fields__}
        return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in data.items()}


def _utc(when: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands timezone-aware columns back naive.
    if when is None:
        return None
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
        requested=_utc(row.requested) or row.requested,
        updated=_utc(row.updated) or row.updated,
        forward_state=row.forward_state,
        forward_endpoint=row.forward_endpoint,
        forward_jurisdiction=row.forward_jurisdiction,
        forward_service_code=row.forward_service_code,
        forward_id=row.forward_id,
        forward_token=row.forward_token,
        forward_attempts=row.forward_attempts or 0,
        forward_note=row.forward_note,
        forward_status=row.forward_status,
        forward_status_notes=row.forward_status_notes,
        forward_next=_utc(row.forward_next),
        forward_sent=_utc(row.forward_sent),
        forward_done=_utc(row.forward_done),
        private=dict(row.private or {}) if private else None,
    )


#: The columns :meth:`AdhocStore.adhoc_transition` may set besides the state.
_TRANSITION_COLUMNS = frozenset(
    {
        "status",
        "status_notes",
        "forward_endpoint",
        "forward_jurisdiction",
        "forward_service_code",
        "forward_id",
        "forward_token",
        "forward_attempts",
        "forward_note",
        "forward_status",
        "forward_status_notes",
        "forward_next",
        "forward_sent",
        "forward_done",
    }
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

    def adhoc_transition(
        self,
        request_id: str,
        from_states: tuple[str, ...],
        to_state: str,
        *,
        now: dt.datetime | None = None,
        **columns: Any,
    ) -> AdhocRequest | None:
        """Move one request from one of ``from_states`` to ``to_state`` and set ``columns``, in
        one conditional UPDATE; the request as it now is, or ``None`` when it was in no such
        state (another process took it first, or it moved on).

        Every step of forwarding goes through here: two forwarders (two workers, or ``geoweb
        adhoc forward`` beside a server) can never both claim a request for a POST."""
        if to_state not in FORWARD_STATES or not set(from_states) <= set(FORWARD_STATES):
            raise ValueError(f"unknown forwarding state in {from_states!r} -> {to_state!r}")
        unknown = set(columns) - _TRANSITION_COLUMNS
        if unknown:
            raise ValueError(f"not a forwarding column: {sorted(unknown)}")
        now = now or dt.datetime.now(dt.UTC)
        # The spec's updated_datetime moves when what the public sees moves, not on every look.
        seen = to_state in ("forwarded", "cancelled") or {"status", "status_notes"} & set(columns)
        public = {"updated": now} if seen else {}
        with self._adhoc_transaction() as session:
            done: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                update(AdhocRequestRow)
                .where(
                    AdhocRequestRow.id == request_id,
                    AdhocRequestRow.forward_state.in_(from_states),
                )
                .values(forward_state=to_state, **columns, **public)
                .execution_options(synchronize_session=False)
            )
            if not done.rowcount:
                return None
            row = session.get(AdhocRequestRow, request_id)
            return _record(row, private=True) if row else None

    def adhoc_due(
        self,
        now: dt.datetime,
        states: tuple[str, ...],
        *,
        waiting_too: bool = False,
        unscheduled: bool = True,
        ids: tuple[str, ...] = (),
        after: tuple[dt.datetime, str] | None = None,
        limit: int = 1000,
    ) -> list[AdhocRequest]:
        """Requests in ``states`` whose ``forward_next`` has passed (or all of them, with
        ``waiting_too``; those with none count as due unless ``unscheduled`` is false), oldest
        first, with the reporter's fields (they are forwarded). ``after``: the (requested, id) of
        the last request of the previous page."""
        query = select(AdhocRequestRow).where(AdhocRequestRow.forward_state.in_(states))
        if after is not None:
            when, last = after
            query = query.where(
                (AdhocRequestRow.requested > when)
                | ((AdhocRequestRow.requested == when) & (AdhocRequestRow.id > last))
            )
        if ids:
            query = query.where(AdhocRequestRow.id.in_(ids))
        if not unscheduled:
            query = query.where(AdhocRequestRow.forward_next.is_not(None))
        if not waiting_too:
            due = AdhocRequestRow.forward_next <= now
            query = query.where(
                due | AdhocRequestRow.forward_next.is_(None) if unscheduled else due
            )
        query = query.order_by(AdhocRequestRow.requested, AdhocRequestRow.id).limit(limit)
        with self._adhoc_transaction() as session:
            return [_record(r, private=True) for r in session.scalars(query)]

    def adhoc_abandoned(self, before: dt.datetime) -> list[str]:
        """Requests claimed for a POST before ``before`` and still ``sending``: the process that
        claimed them stopped (a POST ends within the fetch timeout), so whether the city got the
        request is unknown."""
        query = select(AdhocRequestRow.id).where(
            AdhocRequestRow.forward_state == "sending", AdhocRequestRow.forward_sent < before
        )
        with self._adhoc_transaction() as session:
            return list(session.scalars(query))

    def adhoc_counts(self) -> dict[str, int]:
        """How many requests are in each forwarding state."""
        query = select(AdhocRequestRow.forward_state, func.count()).group_by(
            AdhocRequestRow.forward_state
        )
        with self._adhoc_transaction() as session:
            return {state: count for state, count in session.execute(query)}

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


__all__ = ["FORWARD_STATES", "AdhocRequest", "AdhocRequestRow", "AdhocStore"]
