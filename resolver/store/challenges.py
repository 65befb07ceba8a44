"""Registration challenges (``resolver/registry/registration.py``): issued, looked up, spent; and a
registration's write, which spends its token, checks who holds the id and saves (or deletes) the
entry in one transaction, so that a refusal or a failure changes nothing and leaves the token
usable.

The store keeps and reads; the registrar decides. The decisions that must hold at the moment of
writing (too many challenges open, the id held by another domain, the token spent meanwhile) are
made by the registrar's callables on what the store read inside that same transaction, and
refused by raising."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import String, delete, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from common.errors import StoreError
from common.models import Jurisdiction
from resolver.store.entries import EntryStore, JurisdictionRow
from resolver.store.schema import Base


class ChallengeRow(Base):
    """A domain-control challenge of a registration. Keyed by the digest the domain publishes,
    never the token; times are registry timestamps (sort as text)."""

    __tablename__ = "challenges"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), index=True)
    jurisdiction: Mapped[str] = mapped_column(String(200))
    issued: Mapped[str] = mapped_column(String(40))
    expires: Mapped[str] = mapped_column(String(40), index=True)
    used: Mapped[str | None] = mapped_column(String(40))


@dataclass(frozen=True, slots=True)
class ChallengeRecord:
    """One challenge as stored (registry timestamps)."""

    digest: str
    domain: str
    jurisdiction: str
    issued: str
    expires: str
    used: str | None = None


@dataclass(frozen=True, slots=True)
class Holder:
    """Whether a live entry holds an id, and the domain it is for (lowercase, no final dot; none
    for an entry of the registry's operator)."""

    exists: bool
    domain: str | None


@dataclass(frozen=True, slots=True)
class OpenChallenges:
    """What a new challenge is admitted on, read in the transaction that adds it: who holds its
    id, and how many challenges are open (unused, unexpired) in all and for its domain."""

    holder: Holder
    total: int
    for_domain: int


@dataclass(frozen=True, slots=True)
class Claim:
    """What a registration's write is decided on, read in its own transaction: whether this
    transaction spent the token (False: it was used, expired or forgotten meanwhile), and who
    holds the id."""

    spent: bool
    holder: Holder


class ChallengeStore(EntryStore):
    """Challenges and the registrations they allow (built on the entries: a registration writes
    one)."""

    @contextmanager
    def _challenge_transaction(self) -> Iterator[Session]:
        try:
            with self._transaction() as session:
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"the challenge store failed, nothing changed: {exc}") from exc

    def add_challenge(
        self,
        record: ChallengeRecord,
        *,
        forget_before: str,
        admit: Callable[[OpenChallenges], None],
    ) -> None:
        """Keep a new challenge, in one transaction that first forgets the challenges that
        expired before ``forget_before``, then lets ``admit`` refuse it (by raising) on what is
        open now and who holds its id."""
        with self._challenge_transaction() as session:
            session.execute(delete(ChallengeRow).where(ChallengeRow.expires < forget_before))
            is_open = ChallengeRow.used.is_(None) & (ChallengeRow.expires > record.issued)
            total = session.scalar(select(func.count()).where(is_open)) or 0
            mine = session.scalar(
                select(func.count()).where(is_open, ChallengeRow.domain == record.domain)
            )
            admit(OpenChallenges(_holder(session, record.jurisdiction), total, mine or 0))
            session.add(
                ChallengeRow(
                    digest=record.digest,
                    domain=record.domain,
                    jurisdiction=record.jurisdiction,
                    issued=record.issued,
                    expires=record.expires,
                    used=record.used,
                )
            )

    def challenge(self, digest: str) -> ChallengeRecord | None:
        """The challenge kept under this digest, used or not; none when unknown or forgotten."""
        with self._challenge_transaction() as session:
            row = session.get(ChallengeRow, digest)
            if row is None:
                return None
            return ChallengeRecord(
                row.digest, row.domain, row.jurisdiction, row.issued, row.expires, row.used
            )

    def holder(self, jurisdiction: str) -> Holder:
        """Who holds an id now."""
        with self._challenge_transaction() as session:
            return _holder(session, jurisdiction)

    def register(
        self,
        entry: Jurisdiction,
        *,
        digest: str,
        at: str,
        source: str,
        report: dict[str, Any],
        check: Callable[[Claim], None],
    ) -> None:
        """Spend the challenge ``digest`` (unused and unexpired at ``at``), let ``check`` refuse
        (by raising) on the claim, and save the entry in place of any with its id: one
        transaction, under the writers' lock."""

        def within(session: Session) -> None:
            check(Claim(_spend(session, digest, at), _holder(session, entry.id)))

        self.save([entry], replace=True, source=source, report=report, check=within)

    def withdraw(
        self,
        jurisdiction: str,
        *,
        digest: str,
        at: str,
        source: str,
        check: Callable[[Claim], None],
    ) -> list[str]:
        """Spend the challenge ``digest``, let ``check`` refuse on the claim, and delete the
        entry: one transaction. The ids deleted."""

        def within(session: Session) -> None:
            check(Claim(_spend(session, digest, at), _holder(session, jurisdiction)))

        return self.delete([jurisdiction], source=source, check=within)


def _spend(session: Session, digest: str, at: str) -> bool:
    """Mark the token used, once: of two requests racing with one token, one spends it."""
    result = session.execute(
        update(ChallengeRow)
        .where(
            ChallengeRow.digest == digest,
            ChallengeRow.used.is_(None),
            ChallengeRow.expires > at,
        )
        .values(used=at)
    )
    return cast(CursorResult[Any], result).rowcount == 1


def _holder(session: Session, jurisdiction: str) -> Holder:
    found = session.execute(
        select(JurisdictionRow.domain).where(JurisdictionRow.id == jurisdiction)
    ).first()
    if found is None:
        return Holder(False, None)
    held = found[0]
    return Holder(True, held.lower().rstrip(".") if held else None)


__all__ = [
    "ChallengeRecord",
    "ChallengeRow",
    "ChallengeStore",
    "Claim",
    "Holder",
    "OpenChallenges",
]
