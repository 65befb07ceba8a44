"""Parsing the recorded real discovery documents and services lists, their published variants,
and hostile XML; the validator's verdicts on the real fixtures and on our generated documents."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from shapely.geometry import box

from common.models import GEOREPORT_V2, Endpoint, Jurisdiction
from discovery.documents import DocumentError, parse_discovery, parse_services
from discovery.generate import discovery_document, to_json, to_xml
from discovery.validator import validate_discovery
from resolver.core.concerns import ServiceCatalog
from tests.open311_servers import BILLION_LAUGHS, XXE

FIXTURES = Path(__file__).parent / "fixtures" / "discovery"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("wiki-discovery.json", "application/json"),
        ("wiki-discovery.xml", "application/xml"),  # application/xml, no charset
        ("wiki-discovery.xml", "text/xml; charset=utf-8"),  # text/xml with a charset
    ],
)
def test_wiki_example_in_both_formats(name: str, content_type: str) -> None:
    document = parse_discovery(fixture(name), content_type)
    chosen, alternatives = document.choose()
    # GeoReport v2 production first, then v2 test, then the v3 test endpoint
    assert chosen is not None and chosen.url == "http://open311.mycity.gov/v2"
    assert [e.url for e in alternatives] == [
        "http://open311.mycity.gov/test/v2",
        "http://open311.mycity.gov/v3",
    ]
    assert document.changeset_time == dt.datetime(2011, 2, 3, 14, 18, tzinfo=dt.UTC)
    assert document.contact.startswith("You can email")
    assert not document.issues  # lenient reading: the wiki's own example is accepted as is


def test_san_francisco_recorded_xml() -> None:
    document = parse_discovery(fixture("sf-discovery.xml"), "text/xml")
    chosen, alternatives = document.choose()
    assert chosen is not None and chosen.url == "https://open311.sfgov.org/v2"
    assert chosen.type == "production" and chosen.formats == ("text/xml",)
    assert [e.specification for e in alternatives].count(
        "http://wiki.open311.org/GeoReport_v1"
    ) == 2
    assert any("'text/XML' is not lowercase" in issue for issue in document.issues)


def test_rostock_sample_is_not_well_formed() -> None:
    # <dicovery> ... </discovery>: refused with a clear reason, not a crash
    with pytest.raises(DocumentError, match="malformed"):
        parse_discovery(fixture("rostock-discovery.xml"), "text/xml")


def test_bloomington_services_list_matches_pothole() -> None:
    services = parse_services(fixture("bloomington-services.json"), "application/json")
    assert len(services.services) == 18
    assert "18 service_code value(s) are numbers, not strings" in services.issues
    (best, *_rest) = ServiceCatalog(services.services).match("pothole")
    assert best.service.service_code == "25"
    assert best.service.service_name == "Potholes, Other Street Repair"
    assert best.service.group == "Streets, Parking & Traffic"


def test_san_francisco_services_xml() -> None:
    services = parse_services(fixture("sf-services.xml"), "application/xml")
    codes = {s.service_code: s for s in services.services}
    assert codes["001"].keywords == ("lorem", "ipsum", "dolor") and codes["001"].metadata is True


VARIANT = {
    "discovery": {
        "change_set": "2011-09-1 17:35",
        "contact": "311@city.example",
        "key_service": "https://city.example/key",
        "endpoints": {
            "endpoint": [
                {
                    "specification": "http://wiki.open311.org/GeoReport_v2",
                    "url": "https://city.example/open311/v2",
                    "change_set": "2011-09-1 17:35",
                    "environment": "test",
                    "formats": [{"format": "application/json"}, {"format": "text/xml"}],
                },
                {
                    "specification": "http://wiki.open311.org/GeoReport_v2/",
                    "url": "https://city.example/open311/prod/v2",
                    "changeset": "2011-09-01T17:35:00Z",
                    "type": "production",
                    "formats": {"format": ["text/xml"]},
                },
            ]
        },
        "service_area": {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[10, 50], [11, 50], [11, 51], [10, 51], [10, 50]]],
            },
        },
    }
}


def test_published_variants_are_read_and_reported() -> None:
    document = parse_discovery(json.dumps(VARIANT).encode(), "text/plain")
    issues = "\n".join(document.issues)
    for expected in (
        "wrapped in a top-level 'discovery' object",  # a discovery wrapper
        "'endpoints' is an object, not an array",  # endpoints as an object
        "'change_set' instead of 'changeset'",
        "'environment' instead of 'type'",
        "formats given as {'format': ...} objects",
        "formats is an object, not an array",
        "is not ISO 8601 (read as 2011-09-01T17:35:00)",  # non-ISO changeset, read leniently
        "has a trailing slash",  # the specification URL with a slash
        "served as 'text/plain'",
    ):
        assert expected in issues
    chosen, alternatives = document.choose()
    assert chosen is not None and chosen.url == "https://city.example/open311/prod/v2"
    assert chosen.specification == GEOREPORT_V2
    assert alternatives[0].formats == ("application/json", "text/xml")
    assert document.service_area is not None and document.service_area.equals(box(10, 50, 11, 51))


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (BILLION_LAUGHS, "entity expansion"),  # billion laughs: refused, never expanded
        (XXE, "entities|XXE"),  # an external entity: refused, never fetched or read
        (b"{not json", "JSON is malformed"),
        (b"hello", "neither JSON nor XML"),
        (b"<services/>", "not <discovery>"),
    ],
)
def test_hostile_and_broken_documents_fail_safely(body: bytes, match: str) -> None:
    with pytest.raises(DocumentError, match=match):
        parse_discovery(body, "text/xml", url="http://city.example/discovery.xml")


def test_hostile_services_list_fails_safely() -> None:
    with pytest.raises(DocumentError, match="entity expansion"):
        parse_services(BILLION_LAUGHS.replace(b"discovery", b"services"), "text/xml")


# -- the open311-validator rules ------------------------------------------------------------------


def test_generated_documents_pass_the_validator(tmp_path: Path) -> None:
    city = Jurisdiction(
        "city",
        "City",
        endpoints=(
            Endpoint("https://311.city.example/open311/v2/"),
            Endpoint("https://311.city.example/test/v2/", type="test"),
        ),
    )
    document = discovery_document(
        city, contact="311@city.example", key_service="mail us", changeset=dt.datetime(2024, 5, 1)
    )
    for text, content_type in ((to_json(document), "application/json"), (to_xml(document), "")):
        verdict = validate_discovery(text.encode(), content_type, name="discovery.json")
        assert verdict.passed, verdict.failures
        parsed = parse_discovery(text.encode(), content_type)
        assert not parsed.issues
        assert parsed.choose()[0] == Endpoint(
            "https://311.city.example/open311/v2", formats=("text/xml", "application/json")
        )


@pytest.mark.parametrize(
    ("name", "failed"),
    [
        # the wiki's example: "2011-02-03 14:18" is not ISO 8601 as Ruby's Time.iso8601 reads it
        ("wiki-discovery.json", {"changeset is ISO 8601"}),
        ("wiki-discovery.xml", {"changeset is ISO 8601"}),
        # San Francisco: formats written text/XML, so no v2 endpoint lists text/xml
        ("sf-discovery.xml", {"GeoReport v2 endpoints support text/xml"}),
        # Rostock's sample is not well-formed XML
        ("rostock-discovery.xml", {"document is readable"}),
    ],
)
def test_validator_verdicts_on_real_fixtures_match_their_known_defects(
    name: str, failed: set[str]
) -> None:
    content_type = "application/json" if name.endswith(".json") else "text/xml"
    verdict = validate_discovery(fixture(name), content_type)
    assert verdict.failed_rules() == failed


def test_validator_catches_each_rule() -> None:
    bad = {
        "changeset": "2999-01-01T00:00:00Z",
        "contact": "",
        "key_service": " ",
        "endpoints": [
            {
                "specification": "http://wiki.open311.org/GeoReport_v2/",
                "url": "https://city.example/v2/",
                "changeset": "2011-09-1 17:35",
                "type": "live",
                "formats": [{"format": "text/xml"}],
            }
        ],
    }
    verdict = validate_discovery(json.dumps(bad).encode(), "application/json", name="d.json")
    assert verdict.failed_rules() == {
        "name ends in discovery.<format>",
        "contact is not empty",
        "key_service is not empty",
        "changeset is in the past",
        "GeoReport v2 specification string is exact",
        "endpoint url has no trailing slash",
        "changeset is ISO 8601",
        "endpoint type is production or test",
        "formats is an array of MIME types",
    }
