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


# -- the trust rule for mirrored copies ---------------------------------------------------------

#: Versions above this are refused: every store and every JSON reader holds them exactly.
MAX_VERSION = 2**53 - 1
#: How far an origin's clock may run ahead of ours before its ``updated`` counts as a lie: a
#: time from the future would otherwise win every later comparison and freeze the entry.
CLOCK_SKEW = dt.timedelta(minutes=5)


def parse_timestamp(text: object) -> dt.datetime | None:
    """An entry time as a UTC datetime, or ``None`` when it is not one."""
    if not isinstance(text, str) or not 20 <= len(text) <= 40:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return when.astimezone(dt.UTC)


def version_problem(version: EntryVersion, now: dt.datetime | None = None) -> str | None:
    """Why a copy's version or time cannot be believed, or ``None``: versions run from 1 to
    :data:`MAX_VERSION`; ``updated`` is a UTC time no later than now plus :data:`CLOCK_SKEW`."""
    if isinstance(version.version, bool) or not 1 <= version.version <= MAX_VERSION:
        return f"version {str(version.version)[:30]} is outside 1..{MAX_VERSION}"
    when = parse_timestamp(version.updated)
    if when is None:
        return f"updated {str(version.updated)[:40]!r} is not a UTC time"
    if when > (now or dt.datetime.now(dt.UTC)) + CLOCK_SKEW:
        return f"updated {version.updated} is in the future"
    return None


@dataclass(frozen=True, slots=True)
class Held:
    """The copy this store holds of an entry, and whether it is this store's to keep."""

    version: EntryVersion
    #: Written here (an import, a registration, a local deletion), not taken from a mirror.
    here: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a mirrored copy: take it (``attested`` as verified here), leave it (the
    same copy again: not a conflict), or refuse it (a conflict, logged with ``why``)."""

    take: bool
    why: str
    conflict: bool
    attested: bool = False


def judge_mirrored(
    incoming: EntryVersion,
    held: Held | None,
    *,
    registry_id: str,
    verified: bool,
    now: dt.datetime | None = None,
) -> Verdict:
    """Whether a copy from a mirrored upstream may replace what this store holds.

    The rules (docs/registry.md, "What a mirror may change"): an upstream's copy is a claim. Its
    ``attested`` counts only when ``verified`` here against the domain's own DNS; a copy of this
    registry's own origin is never taken from elsewhere; an entry written here (imported, or
    registered with a proof made here) is changed only here; a deletion travels only from the
    origin of the copy it deletes; unbelievable versions and times are refused. Between the
    copies that remain, :func:`why_newer` decides.
    """
    problem = version_problem(incoming, now)
    if problem is not None:
        return Verdict(False, f"refused: {problem}", conflict=True)
    claimed = incoming
    incoming = EntryVersion(
        incoming.origin,
        incoming.version,
        incoming.updated,
        attested=incoming.attested and verified and not incoming.deleted,
        domain=incoming.domain,
        deleted=incoming.deleted,
    )
    same_origin = held is not None and held.version.origin == incoming.origin
    if same_origin and held is not None and incoming.version <= held.version.version:
        return Verdict(False, "the same copy or an older one", conflict=False)
    if incoming.origin == registry_id:
        return Verdict(
            False,
            "refused: only this registry writes versions of entries whose origin it is",
            conflict=True,
        )
    if held is None:
        if incoming.deleted:
            return Verdict(False, "a deletion of an entry never held", conflict=False)
        return Verdict(True, _taken("new entry", claimed, incoming), False, incoming.attested)
    if held.here:
        whose = (
            "this registry"
            if held.version.origin == registry_id
            else f"{held.version.origin}, proven here"
        )
        return Verdict(
            False,
            f"refused: the entry's origin is {whose}; a mirror cannot change it, only the same "
            "proof made here",
            conflict=True,
        )
    if incoming.deleted and incoming.origin != held.version.origin:
        return Verdict(
            False,
            f"refused: a deletion from {incoming.origin} cannot remove a copy whose origin is "
            f"{held.version.origin}",
            conflict=True,
        )
    why = why_newer(incoming, held.version)
    if why is None:
        why_not = why_newer(held.version, incoming) or "the copy held ranks the same"
        return Verdict(False, why_not, conflict=True)
    conflict = incoming.origin != held.version.origin
    return Verdict(True, _taken(why, claimed, incoming), conflict, incoming.attested)


def _taken(why: str, claimed: EntryVersion, judged: EntryVersion) -> str:
    if claimed.attested and not judged.attested and not claimed.deleted:
        return f"{why} (its attestation is a claim not verified here against the domain's DNS)"
    return why
