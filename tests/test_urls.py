"""URL and host name checks, on the defects the real Open311 server lists have."""

from __future__ import annotations

import pytest

from discovery.urls import is_hostname, normalize_base_url, normalize_discovery_url


@pytest.mark.parametrize(
    ("raw", "expected", "fixed"),
    [
        # Gilbert, AZ in open311-servers.yml: the base URL ends in requests.json
        (
            "https://seeclickfix.com/open311/v2/655/requests.json",
            "https://seeclickfix.com/open311/v2/655/",
            ["removed the resource file 'requests.json'"],
        ),
        # Gilbert's test_url has the same defect, over http
        (
            "http://test.seeclickfix.com/open311/v2/655/requests.json",
            "http://test.seeclickfix.com/open311/v2/655/",
            ["removed the resource file 'requests.json'"],
        ),
        # FiksGataMi's r311 "docs" link: a requests file, as people paste it for a base URL
        (
            "https://www.fiksgatami.no/open311/v2/requests.json",
            "https://www.fiksgatami.no/open311/v2/",
            ["removed the resource file 'requests.json'"],
        ),
        # Baltimore's discovery document given where a base URL belongs
        (
            "http://311.baltimorecity.gov/open311/discovery.json",
            "http://311.baltimorecity.gov/open311/",
            ["removed the resource file 'discovery.json'"],
        ),
        # an XML resource file, in capitals
        (
            "https://www.zueriwieneu.ch/open311/v2/SERVICES.XML",
            "https://www.zueriwieneu.ch/open311/v2/",
            ["removed the resource file 'SERVICES.XML'"],
        ),
        # Chicago, IL in the r311 list: the root has no scheme
        (
            "311api.cityofchicago.org/open311/v2/",
            "https://311api.cityofchicago.org/open311/v2/",
            ["added the missing scheme"],
        ),
        # Brühl's host with the doubled slash its discovery URL has, on a base URL
        (
            "https://www.achtet-auf-bruehl.de//georeport/v2/",
            "https://www.achtet-auf-bruehl.de/georeport/v2/",
            ["collapsed duplicate slashes"],
        ),
        # a base URL without its trailing slash gets exactly one
        (
            "https://www.fixmystreet.com/open311/v2",
            "https://www.fixmystreet.com/open311/v2/",
            ["added the trailing slash"],
        ),
        # several trailing slashes become one
        (
            "https://www.fixmystreet.com/open311/v2///",
            "https://www.fixmystreet.com/open311/v2/",
            ["collapsed duplicate slashes"],
        ),
        # a bare host: the path is "/"
        ("https://open311.royalgreenwich.gov.uk", "https://open311.royalgreenwich.gov.uk/", None),
        # scheme and host are lowercased; the path keeps its case (DC's server uses "Open311")
        (
            "HTTP://App.311.DC.gov/cwi/Open311/v2/",
            "http://app.311.dc.gov/cwi/Open311/v2/",
            [],
        ),
        # St. Louis ends in a script name, which is a folder here: left alone
        (
            "https://www.stlouis-mo.gov/powernap/stlouis/api.cfm/",
            "https://www.stlouis-mo.gov/powernap/stlouis/api.cfm/",
            [],
        ),
        # Lisboa's GeoReport v1 URL is a well-formed URL; judging the version is not done here
        (
            "https://open311.cm-lisboa.pt/GeoReport/v1/",
            "https://open311.cm-lisboa.pt/GeoReport/v1/",
            [],
        ),
        # surrounding whitespace from a hand-edited list
        (
            "  https://anliegen.bonn.de/georeport/v2/ ",
            "https://anliegen.bonn.de/georeport/v2/",
            [],
        ),
        # a port is not mistaken for a scheme
        ("localhost:8080/open311/v2/", "https://localhost:8080/open311/v2/", ["missing scheme"]),
    ],
)
def test_normalize_base_url(raw: str, expected: str, fixed: list[str] | None) -> None:
    url, fixes = normalize_base_url(raw)
    assert url == expected
    if fixed is not None:
        assert len(fixes) == len(fixed)
        for fix, fragment in zip(fixes, fixed, strict=True):
            assert fragment in fix


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # an empty base URL
        ("", "empty URL"),
        # blank, as YAML gives ``base_url: " "``
        ("   ", "empty URL"),
        # not http(s)
        ("ftp://open311.example.org/v2/", r"not an http\(s\) URL"),
        # a scheme without "//"
        ("mailto:open311@example.org", r"not an http\(s\) URL"),
        # a typo that loses one slash of the scheme
        ("https:/seeclickfix.com/open311/v2/", "malformed"),
        # no host at all
        ("https:///open311/v2/", "no host"),
        # credentials do not belong in a published URL
        ("https://user:secret@seeclickfix.com/open311/v2/", "credentials"),
        # a base URL is a folder; a query would end up in the middle of every request
        ("https://seeclickfix.com/open311/v2/655/?jurisdiction_id=gilbertaz.gov", "query"),
        # whitespace inside is not a URL
        ("https://seeclickfix.com/open311/v2/ 655/", "whitespace"),
    ],
)
def test_normalize_base_url_refuses(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_base_url(raw)


@pytest.mark.parametrize(
    ("raw", "expected", "fixes"),
    [
        # Zaragoza and Lamía in open311-servers.yml: api_discovery is ""
        ("", None, ["no discovery URL published"]),
        # a missing value (YAML null)
        (None, None, ["no discovery URL published"]),
        # blank
        ("  ", None, ["no discovery URL published"]),
        # Brühl: "//" after the host
        (
            "https://www.achtet-auf-bruehl.de//georeport/v2/discovery.json",
            "https://www.achtet-auf-bruehl.de/georeport/v2/discovery.json",
            ["collapsed duplicate slashes in the path '//georeport/v2/discovery.json'"],
        ),
        # Ottawa: nothing to fix
        (
            "https://city-of-ottawa-prod.apigee.net/open311/v2/discovery.json",
            "https://city-of-ottawa-prod.apigee.net/open311/v2/discovery.json",
            [],
        ),
    ],
)
def test_normalize_discovery_url(raw: str | None, expected: str | None, fixes: list[str]) -> None:
    assert normalize_discovery_url(raw) == (expected, fixes)


def test_normalize_discovery_url_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="not an http"):
        normalize_discovery_url("file:///etc/discovery.json")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # Bonn's jurisdiction_id, as corrected
        ("bonn.de", True),
        # Quebec's, which the servers list also gave Bonn: a host name, just not Bonn's
        ("ville.quebec.qc.ca", True),
        # the misspelled Annaberg-Buchholz id is a valid host name; only evidence shows it is wrong
        ("annberg-buchholz.de", True),
        # a hyphen inside a label
        ("stadt-koeln.de", True),
        # Newport News in the r311 list: an underscore is not allowed in a host name
        ("cityofnewport_news.org", False),
        # Zürich in the servers list: one label, no dot
        ("zurich", False),
        # Philadelphia's PublicStuff id
        ("philadelphia-pa", False),
        # an IPv4 address is not a domain
        ("192.168.0.1", False),
        # one trailing dot (the root) is fine
        ("dc.gov.", True),
        # an empty label
        ("bonn..de", False),
        # a label may not start with a hyphen
        ("-bonn.de", False),
        # nor end with one
        ("bonn-.de", False),
        # labels are at most 63 characters
        ("a" * 63 + ".de", True),
        ("a" * 64 + ".de", False),
        # at most 253 characters in all
        (".".join(["a" * 62] * 4) + ".de", False),
        # non-ASCII must come as an A-label
        ("münchen.de", False),
        ("xn--mnchen-3ya.de", True),
        # nothing
        ("", False),
        # a URL is not a host name
        ("https://bonn.de", False),
    ],
)
def test_is_hostname(name: str, expected: bool) -> None:
    assert is_hostname(name) is expected
