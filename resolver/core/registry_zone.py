"""How the local registry's answer and the candidates a DNS registry zone lists are weighed.

Pure: the driver (:class:`resolver.sources.dns_registry.DnsRegistryAnswerer`) answers from the
local registry, reads the zone's cell for the point and each listed domain's record and boundary;
these functions decide whether to read the zone at all, which DNS candidates count, and which
answer stands. The rule: the core decides among the local covering jurisdictions and the
candidates only DNS knows by its usual rule (most specific first), so a city the local registry
lacks still wins inside the county it has; when no such candidate covers the point, the local
answer stands as it was, with the facts its sources gave it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final, Literal

from common.errors import InvalidInput
from common.models import Answer, Jurisdiction

#: When a registry zone is asked: ``always`` for every point, ``uncovered`` only for points no
#: jurisdiction of the local registry covers (cheaper; a city missing inside a covered county
#: is then not found).
RegistryMode = Literal["always", "uncovered"]
REGISTRY_MODES: Final[tuple[RegistryMode, ...]] = ("always", "uncovered")


def registry_mode(value: str) -> RegistryMode:
    """``value`` as a :data:`RegistryMode`, or :class:`InvalidInput` naming the choices."""
    if value not in REGISTRY_MODES:
        raise InvalidInput(f"the DNS registry mode must be one of {', '.join(REGISTRY_MODES)}")
    return value


def covering(answer: Answer) -> list[Jurisdiction]:
    """The jurisdictions covering the answer's point: the chosen one, then the alternatives."""
    decision = answer.decision
    return [c.jurisdiction for c in (decision.chosen, *decision.alternatives) if c is not None]


def asks_zone(mode: RegistryMode, local: Answer) -> bool:
    """Whether the registry zone is read for a point, given the local registry's answer."""
    return mode == "always" or not covering(local)


def counts_from_dns(candidate: Jurisdiction | None, local_ids: Collection[str]) -> bool:
    """Whether a DNS candidate is weighed as DNS found it: one with the id of a local entry (a
    DNS candidate's id is its domain) is left to the local registry, whose copy has the facts its
    sources keep fresh. A candidate that could not be used (``None``) is kept, so the answer can
    say why it was left out."""
    return candidate is None or candidate.id not in local_ids


def local_or_dns(local: Answer, combined: Answer) -> Answer:
    """The answer that stands: ``combined`` (decided over the local covering jurisdictions and
    the DNS candidates) when a jurisdiction only DNS knows covers the point, else ``local``."""
    if {j.id for j in covering(combined)} != {j.id for j in covering(local)}:
        return combined
    return local


__all__ = [
    "REGISTRY_MODES",
    "RegistryMode",
    "asks_zone",
    "counts_from_dns",
    "covering",
    "local_or_dns",
    "registry_mode",
]
