"""Concern matching against services lists, in the languages the real lists use."""

from __future__ import annotations

import itertools

import pytest

from common.models import Service
from resolver.core.concerns import ServiceCatalog, fold

SERVICES = [
    Service("POT-1", "Pothole", keywords=("road", "asphalt"), group="Streets"),
    Service("GRF", "Graffiti removal", group="Sanitation"),
    Service("STL", "Street light out", keywords=("lamp",), group="Lighting"),
    Service("de-12", "Schlaglöcher", group="Straße und Verkehr"),
    Service("de-30", "Straßenbeleuchtung defekt", group="Beleuchtung"),
    Service("fi-7", "Katuvalo rikki", keywords=("valaistus",), group="Kadut ja liikenne"),
    Service("CAN", "Missed trash pickup", group="Sanitation"),
]


@pytest.mark.parametrize(
    ("concern", "first", "why"),
    [
        ("POT-1", "POT-1", "service_code is"),  # exact service_code
        ("pot-1", "POT-1", "ignoring case"),  # service_code, other case
        ("pothole", "POT-1", "service name equals"),  # the whole name
        ("POTHOLES", "POT-1", "every word"),  # plural, shouting
        ("asphalt", "POT-1", "keywords"),  # a keyword
        ("sanitation", "GRF", "group"),  # a group: both sanitation services match, by name order
        ("graffiti", "GRF", "every word"),  # a word of the name
        ("schlagloecher", None, ""),  # transliterations are not guessed
        ("Schlaglöcher", "de-12", "service name equals"),  # German, with umlaut
        ("SCHLAGLOCHER", "de-12", "service name equals"),  # German, accents dropped, shouting
        ("schlagloch", "de-12", "every word"),  # singular of the plural name
        ("beleuchtung", "de-30", "every word"),  # inside a German compound word
        ("strasse", "de-30", "every word"),  # ß folds to ss
        ("katuvalo", "fi-7", "every word"),  # Finnish
        ("valaistus", "fi-7", "keywords"),  # Finnish keyword
        ("noise", None, ""),  # nobody offers it
        ("", None, ""),  # nothing is no concern
    ],
)
def test_match(concern: str, first: str | None, why: str) -> None:
    matches = ServiceCatalog(SERVICES).match(concern)
    if first is None:
        assert matches == ()
    else:
        assert matches[0].service.service_code == first
        assert why in matches[0].why


def test_ranking_puts_the_strongest_reason_first() -> None:
    matches = ServiceCatalog(SERVICES).match("street light")
    assert [m.service.service_code for m in matches][:1] == ["STL"]
    assert all(a.score >= b.score for a, b in itertools.pairwise(matches))


def test_short_words_do_not_match_inside_others() -> None:
    # "out" is too short to match as a prefix or inside a word: only the exact word counts
    codes = {m.service.service_code for m in ServiceCatalog(SERVICES).match("out")}
    assert codes == {"STL"}


def test_fold() -> None:
    assert fold("Straßenschäden") == "strassenschaden"
    assert fold("ZÜRICH") == fold("zurich")


def test_a_compound_concern_is_not_matched_by_its_first_part() -> None:
    catalog = ServiceCatalog(
        [
            Service("S0301", "Street Repair"),
            Service("S0441", "Streetlight Repair Investigation"),
        ]
    )
    assert [m.service.service_code for m in catalog.match("streetlight")] == ["S0441"]
    assert [m.service.service_code for m in catalog.match("streetlights")] == ["S0441"]
    # The other way round a general concern still finds the specific service.
    assert {m.service.service_code for m in catalog.match("street")} == {"S0301", "S0441"}
