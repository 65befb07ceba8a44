"""Matching a concern ("pothole", a service_code, "Straßenbeleuchtung") against a services list.

Pure functions, no I/O. Text is compared case- and accent-insensitively: ``Schlaglöcher``,
``SCHLAGLÖCHER`` and ``schlaglocher`` are one word; transliterations (``oe`` for ``ö``) are not
guessed. Rules, in order of strength:

- a service_code equal to the concern (exactly, then case-insensitively);
- the whole service name equal to the concern;
- every concern word found in the service name;
- a concern word found in the keywords, then in the group;

where a concern word *matches* a service word when they are equal, when one starts with the other
the shorter has at least four letters (plurals and inflections: pothole/potholes,
schlagloch/schlaglocher), or when the concern word has at least five letters and stands inside the
service word (compounds: beleuchtung in strassenbeleuchtung).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from common.models import Service, ServiceMatch

_WORD = re.compile(r"[^\W_]+")
#: The longest ending a concern word may add to a service word and still match it by prefix.
MAX_INFLECTION = 4


def fold(text: str) -> str:
    """Case- and accent-insensitive form: ``"Straßenschäden"`` becomes ``"strassenschaden"``."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(fold(text)))


def _word_matches(concern_word: str, service_word: str) -> bool:
    if concern_word == service_word:
        return True
    short, long_ = sorted((concern_word, service_word), key=len)
    if len(short) >= 4 and long_.startswith(short):
        # A longer concern word is an inflection of the service's (potholes, Schlaglöcher), not
        # a compound that merely starts with it (streetlight is not street): a short ending only.
        return len(concern_word) - len(service_word) <= MAX_INFLECTION
    return len(concern_word) >= 5 and concern_word in service_word


def _all_found(concern_words: Sequence[str], target: Iterable[str]) -> bool:
    target = tuple(target)
    return bool(concern_words) and all(
        any(_word_matches(c, t) for t in target) for c in concern_words
    )


@dataclass(frozen=True, slots=True)
class ServiceChoice:
    """What :meth:`ServiceCatalog.choose` found: ``match`` when one service is best, else
    ``None`` with the tied ``matches`` (ambiguous) or none at all (unmatched); ``why`` says
    which, in words for an operator."""

    match: ServiceMatch | None
    matches: tuple[ServiceMatch, ...]
    why: str

    @property
    def ambiguous(self) -> bool:
        return self.match is None and bool(self.matches)


@dataclass(frozen=True, slots=True)
class _IndexedService:
    service: Service
    code_folded: str
    name_folded: str
    name_words: tuple[str, ...]
    keyword_words: tuple[str, ...]
    group_words: tuple[str, ...]


class ServiceCatalog:
    """A services list prepared once for many concern lookups."""

    def __init__(self, services: Iterable[Service]) -> None:
        self._services = tuple(
            _IndexedService(
                service=s,
                code_folded=fold(s.service_code),
                name_folded=" ".join(words(s.service_name)),
                name_words=words(s.service_name),
                keyword_words=tuple(w for k in s.keywords for w in words(k)),
                group_words=words(s.group),
            )
            for s in services
        )

    def __len__(self) -> int:
        return len(self._services)

    def match(self, concern: str) -> tuple[ServiceMatch, ...]:
        """Services matching the concern, best first, each with why it matched."""
        concern_words = words(concern)
        concern_folded = " ".join(concern_words)
        found: list[ServiceMatch] = []
        for entry in self._services:
            result = self._score(entry, concern.strip(), concern_folded, concern_words)
            if result is not None:
                found.append(ServiceMatch(entry.service, *result))
        found.sort(key=lambda m: (-m.score, m.service.service_name, m.service.service_code))
        return tuple(found)

    def choose(self, concern: str) -> ServiceChoice:
        """The one service to file a report about the concern under, or why there is none.

        A report is filed under a service only when one match is strictly better than every
        other: two services matching equally well (two "Street light" services of different
        departments, or a concern naming only a group) are ``ambiguous``, and the caller keeps
        the report rather than guess."""
        matches = self.match(concern)
        if not matches:
            return ServiceChoice(None, (), f"no service matches {concern!r}")
        best = matches[0]
        tied = tuple(m for m in matches if m.score == best.score)
        if len(tied) > 1:
            codes = ", ".join(repr(m.service.service_code) for m in tied)
            return ServiceChoice(
                None, tied, f"{concern!r} matches {len(tied)} services equally: {codes}"
            )
        return ServiceChoice(best, matches, best.why)

    @staticmethod
    def _score(
        entry: _IndexedService, raw: str, folded: str, concern_words: Sequence[str]
    ) -> tuple[float, str] | None:
        code = entry.service.service_code
        if raw == code:
            return 1.0, f"service_code is {code!r}"
        if folded and fold(raw) == entry.code_folded:
            return 0.95, f"service_code is {code!r} (ignoring case)"
        if folded and folded == entry.name_folded:
            return 0.9, "service name equals the concern"
        if _all_found(concern_words, entry.name_words):
            return 0.8, "every word of the concern is in the service name"
        if _all_found(concern_words, entry.keyword_words):
            return 0.7, "the concern is among the service's keywords"
        if _all_found(concern_words, entry.group_words):
            return 0.5, f"the concern names the service's group {entry.service.group!r}"
        return None
