"""The registries this one mirrors: each upstream's URL, its registry id, how far its change log
was read, and how the last attempts went (docs/registry.md, "Mirroring"). The entries a sync
brings are applied by :meth:`~resolver.store.entries.EntryStore.apply_changes`, which moves the
upstream's position in the same transaction."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import DateTime, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from resolver.store.database import Database, _now, _utc_iso
from resolver.store.schema import Base


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


class MirrorStore(Database):
    """Adding, listing and removing mirrored upstreams, and recording their failures."""

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
