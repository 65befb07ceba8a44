"""The recorded real documents of Boston, Washington DC and Zurich (tests/fixtures/discovery/,
sources in its README): what the parser reads in them, what it reports as not conformant, the
endpoint it chooses and the open311-validator's verdicts. Over HTTP: test_discovery_cities.py."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from common.models import GEOREPORT_V2, Endpoint
from discovery.documents import parse_discovery, parse_services
from discovery.validator import validate_discovery
from resolver.core.concerns import ServiceCatalog

FIXTURES = Path(__file__).parent / "fixtures" / "discovery"

# Where each city served its discovery document: beside the v2/ folder (Boston, DC) or inside it
# (Zurich; the Open311 wiki's server list names https://www.zueriwieneu.ch/open311/v2/discovery.json).
BOSTON_URL = "https://mayors24.cityofboston.gov/open311/discovery.json"
DC_URL = "http://app.311.dc.gov/cwi/Open311/discovery.xml"
ZURICH_URL = "https://www.zueriwieneu.ch/open311/v2/discovery.json"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# -- Boston: changesets that are not ISO 8601 ---------------------------------------------------


def test_boston_changesets_are_read_leniently_and_reported() -> None:
    document = parse_discovery(fixture("boston-discovery.json"), "application/json", url=BOSTON_URL)
    assert document.changeset == "2011-09-1 17:35"
    assert document.changeset_time == dt.datetime(2011, 9, 1, 17, 35, tzinfo=dt.UTC)
    # the only defect, once for the document and once per endpoint
    assert document.issues == tuple(
        f"{where}: changeset '2011-09-1 17:35' is not ISO 8601 (read as 2011-09-01T17:35:00)"
        for where in ("document", "endpoint 1", "endpoint 2")
    )
    assert document.endpoint_changesets == ("2011-09-1 17:35", "2011-09-1 17:35")


def test_boston_production_before_test_on_another_port() -> None:
    document = parse_discovery(fixture("boston-discovery.json"), "application/json", url=BOSTON_URL)
    chosen, alternatives = document.choose()
    formats = ("text/xml", "application/json")
    # beside v2/: the endpoint URLs are used as published
    assert chosen == Endpoint("https://mayors24.cityofboston.gov/open311/v2", formats=formats)
    assert alternatives == (
        Endpoint("https://mayors24.cityofboston.gov:6443/open311/v2", type="test", formats=formats),
    )
    assert document.key_service.endswith("https://mayors24.cityofboston.gov:6443/open311")


# -- Washington DC: XML, a draft specification beside GeoReport v2 ------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/xml",
        "application/xml",
        "text/xml; charset=utf-8",
        "application/xml; charset=UTF-8",
    ],
)
def test_dc_xml_under_each_xml_media_type(content_type: str) -> None:
    document = parse_discovery(fixture("dc-discovery.xml"), content_type, url=DC_URL)
    assert document.format == "xml" and document.issues == ()
    # 2012-03-08T16:00:00-05:00, with its offset
    assert document.changeset_time == dt.datetime(2012, 3, 8, 21, 0, tzinfo=dt.UTC)
    assert document.contact == "You can email or call for assistance octo@dc.gov +1 (202) 727-2277"
    chosen, alternatives = document.choose()
    assert chosen == Endpoint("http://app.311.dc.gov/cwi/Open311/v2", formats=("text/xml",))
    (draft,) = alternatives  # kept, though nobody can use it as GeoReport v2
    assert draft.specification == "http://wiki.open311.org/GeoReport_v2.1_Draft"
    assert draft.url == "http://app.311.dc.gov/cwi/Open311" and not draft.usable


def test_dc_xml_served_as_json_is_read_and_reported() -> None:
    document = parse_discovery(fixture("dc-discovery.xml"), "application/json", url=DC_URL)
    assert document.issues == ("served as 'application/json' but the body is XML",)
    assert document.choose()[0] == Endpoint(
        "http://app.311.dc.gov/cwi/Open311/v2", formats=("text/xml",)
    )


def test_dc_services_list() -> None:
    services = parse_services(fixture("dc-services.xml"), "text/xml")
    assert len(services.services) == 16 and services.issues == ()
    by_code = {s.service_code: s for s in services.services}
    pothole = by_code["S0301"]
    assert pothole.service_name == "Pothole" and pothole.keywords == ("Pothole",)
    assert pothole.group == "Toa - Street & Bridge Maintenance"  # &amp; decoded
    assert pothole.metadata is True and pothole.type == "realtime"
    assert by_code["11"].service_name == "Dead Animal Pickup"  # a numeric-looking code, a string
    assert by_code["S04TP"].service_name == "Tree Planting"  # published with a trailing space
    assert "<br>" in by_code["S0016"].description  # &lt;br&gt; is text, not markup
    catalog = ServiceCatalog(services.services)
    # "Street Repair" and "Alley Repair" mention potholes only in their descriptions
    assert [m.service.service_code for m in catalog.match("pothole")] == ["S0301"]
    assert [m.service.service_code for m in catalog.match("potholes")] == ["S0301"]
    # DC's Street Sweeping code is SO392 (a letter O), kept as published
    assert catalog.match("SO392")[0].service.service_name == "Street Sweeping"


# -- Zurich: a top-level wrapper, served inside v2/ ---------------------------------------------


def _rendered_paths(text: str) -> list[tuple[str, Any]]:
    """The R rendering of a parsed JSON document as (path, value) pairs in printed order:
    ``#> $discovery$endpoints[[1]]$url`` then ``#> [1] "https://..."``; containers have no
    value (``None``)."""
    pairs: list[tuple[str, Any]] = []
    for line in text.splitlines():
        if not line.startswith("#> "):
            continue
        item = line[3:]
        if item.startswith("$"):
            pairs.append((item, None))
        elif item.startswith("[1] "):
            path, _ = pairs[-1]
            pairs[-1] = (path, json.loads(item[4:]))
    return pairs


def _json_paths(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """The same pairs for a JSON value (R's ``$name`` for keys, ``[[n]]`` for array items)."""
    if isinstance(value, dict):
        pairs = [(path, None)] if path else []
        for key, item in value.items():
            pairs.extend(_json_paths(item, f"{path}${key}"))
        return pairs
    if isinstance(value, list):
        pairs = [(path, None)]
        for i, item in enumerate(value, 1):
            pairs.extend(_json_paths(item, f"{path}[[{i}]]"))
        return pairs
    return [(path, value)]


def test_zurich_transcription_matches_the_recorded_rendering() -> None:
    rendered = _rendered_paths((FIXTURES / "zurich-discovery.r311.md").read_text(encoding="utf-8"))
    transcribed = _json_paths(json.loads(fixture("zurich-discovery.json")))
    assert len(rendered) == 14  # 4 containers, 10 values
    assert transcribed == rendered


def test_zurich_wrapper_missing_key_service_and_v2_folder() -> None:
    document = parse_discovery(
        fixture("zurich-discovery.json"), "application/json; charset=utf-8", url=ZURICH_URL
    )
    assert document.issues == (
        "the document is wrapped in a top-level 'discovery' object",
        "document: no key_service",
        "endpoint 1: url 'https://www.zueriwieneu.ch/open311' is the unversioned root of the "
        "'v2/' folder the document is served from; GeoReport v2 is read at "
        "'https://www.zueriwieneu.ch/open311/v2'",
    )
    chosen, alternatives = document.choose()
    assert chosen == Endpoint(
        "https://www.zueriwieneu.ch/open311/v2",
        formats=("text/xml", "application/json", "text/html"),
    )
    assert alternatives == ()
    assert document.contact == "Send email to zurich@fixmystreet.com."
    assert document.changeset_time == dt.datetime(2021, 3, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "url",
    [
        None,  # read from a file: nothing says where it was served
        "https://www.zueriwieneu.ch/open311/discovery.json",  # beside v2/
        "https://www.zueriwieneu.ch/other/v2/discovery.json",  # inside another folder's v2/
    ],
)
def test_zurich_endpoint_is_read_as_published_without_that_evidence(url: str | None) -> None:
    document = parse_discovery(fixture("zurich-discovery.json"), "application/json", url=url)
    chosen, _ = document.choose()
    assert chosen is not None and chosen.url == "https://www.zueriwieneu.ch/open311"
    assert chosen.specification == GEOREPORT_V2
    assert not any("unversioned root" in issue for issue in document.issues)


# -- the open311-validator's verdicts -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "url", "failed"),
    [
        # Boston: "2011-09-1 17:35" is not ISO 8601 (document and both endpoints)
        ("boston-discovery.json", BOSTON_URL, {"changeset is ISO 8601"}),
        # DC passes every rule (the GeoReport_v2.1_Draft endpoint is another specification)
        ("dc-discovery.xml", DC_URL, set()),
        # Zurich: wrapped in "discovery", and no key_service inside the wrapper
        (
            "zurich-discovery.json",
            ZURICH_URL,
            {"fields are at the top level", "key_service is not empty"},
        ),
    ],
)
def test_validator_verdicts_on_the_recorded_cities(name: str, url: str, failed: set[str]) -> None:
    content_type = "application/json" if name.endswith(".json") else "text/xml"
    verdict = validate_discovery(fixture(name), content_type, name=url)
    assert verdict.failed_rules() == failed
    assert verdict.passed is (not failed)


def test_validator_names_each_non_iso_changeset_of_boston() -> None:
    verdict = validate_discovery(fixture("boston-discovery.json"), "application/json")
    details = [f.detail for f in verdict.failures]
    assert details == [
        "changeset '2011-09-1 17:35' is not ISO 8601",
        "endpoint 1 changeset '2011-09-1 17:35' is not ISO 8601",
        "endpoint 2 changeset '2011-09-1 17:35' is not ISO 8601",
    ]
