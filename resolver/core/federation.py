"""Which copy of a registry entry wins, when mirrors disagree (docs/registry.md).

Pure: no I/O. Every resolver applies the same total order to the copies it sees, so a set of mirrors
converges on the same entries whatever order changes arrive in, and a change that travels round a
cycle of mirrors comes back no newer than the copy already held and stops there.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

#: The origin of an entry a jurisdiction registered itself, after proving control of its domain.
DOMAIN_ORIGIN = "domain:"


def domain_origin(domain: str) -> str:
    """The origin naming a jurisdiction as authoritative for its own entry."""
    return DOMAIN_ORIGIN + domain.lower().rstrip(".")


def timestamp(when: dt.datetime | None = None) -> str:
    """An entry time as registries exchange it: UTC, microseconds, ``Z``; sorts as text."""
    when = when or dt.datetime.now(dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class EntryVersion:
    """What decides between two copies of one entry (an upsert or a deletion)."""

    origin: str
    version: int
    updated: str
    attested: bool = False
    domain: str | None = None
    deleted: bool = False

    @property
    def authoritative(self) -> bool:
        """The jurisdiction itself is the origin (it proved control of its domain)."""
        return self.domain is not None and self.origin == domain_origin(self.domain)

    def rank(self) -> tuple[bool, bool, str, str, int]:
        """The total order: attested by DNS first, then the jurisdiction's own origin, then the
        newest change, then (ties on the clock) the origin's name and its version."""
        return (self.attested, self.authoritative, self.updated, self.origin, self.version)

    def describe(self) -> str:
        kind = "deletion" if self.deleted else "entry"
        tags = [
            t for t, on in (("attested", self.attested), ("own domain", self.authoritative)) if on
        ]
        extra = f", {', '.join(tags)}" if tags else ""
        return f"{kind} v{self.version} from {self.origin} ({self.updated}{extra})"


def why_newer(incoming: EntryVersion, held: EntryVersion) -> str | None:
    """Why ``incoming`` replaces ``held``, or ``None`` when it does not (it is the same copy or an
    older one). Same origin: only a higher version wins, which is what stops mirror loops."""
    if incoming.origin == held.origin:
        return "newer version from the same origin" if incoming.version > held.version else None
    if incoming.rank() <= held.rank():
        return None
    if incoming.attested != held.attested:
        return "attested by the jurisdiction's own DNS; the other copy is not"
    if incoming.authoritative != held.authoritative:
        return "comes from the jurisdiction's own origin"
    if incoming.updated != held.updated:
        return "changed more recently at its origin"
    return "same time; the origin that sorts last wins ties, on every mirror alike"
