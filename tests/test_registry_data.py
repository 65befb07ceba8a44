"""The embedded registry: current with the shared data, complete, honest about what it knows."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import shapely
from shapely.geometry import Point

from common.models import GEOREPORT_V2, Jurisdiction
from resolver.registry.documents import embedded_registry_path, load_embedded_registry
from tools import build_registry as build

SHARED = build.DEFAULT_SHARED
#: The shared data always sits beside the checkout: without it these tests fail (conftest).
needs_shared = pytest.mark.usefixtures("shared_data")

#: Cities listed in both open311-servers.yml and open311-endpoints-r311.json.
MERGED = {
    "annaberg-buchholz-de",
    "bloomington-in",
    "bonn-de",
    "boston-ma",
    "brookline-ma",
    "chicago-il",
    "gilbert-az",
    "koln-de",
    "ottawa-on",
    "philadelphia-pa",
    "rostock-de",
    "san-francisco-ca",
    "schwerin-de",
    "siegburg-de",
    "surrey-bc",
    "turku-fi",
    "zaragoza-es",
    "zurich-ch",
}
SERVERS_COUNT, R311_COUNT = 31, 69
TOTAL = SERVERS_COUNT + R311_COUNT - len(MERGED)  # 82
WITH_BOUNDARY = 59


@pytest.fixture(scope="module")
def registry() -> dict[str, Jurisdiction]:
    return {j.id: j for j in load_embedded_registry()}


@needs_shared
def test_committed_registry_is_a_fresh_build(tmp_path: Path) -> None:
    output = tmp_path / "registry.geojson"
    assert build.main(["--shared", str(SHARED), "--output", str(output)]) == 0
    assert output.read_bytes() == embedded_registry_path().read_bytes()


@needs_shared
def test_check_mode(tmp_path: Path) -> None:
    # the committed file is current
    assert build.main(["--check"]) == 0
    # a stale file is reported and left as it is
    stale = tmp_path / "registry.geojson"
    stale.write_text("{}\n", encoding="utf-8")
    assert build.main(["--check", "--output", str(stale)]) == 1
    assert stale.read_text(encoding="utf-8") == "{}\n"


@needs_shared
def test_merge_counts() -> None:
    _, entries = build.build(SHARED)
    assert sum(len(e.listings) for e in entries) == SERVERS_COUNT + R311_COUNT
    assert {e.id for e in entries if len(e.listings) == 2} == MERGED


@needs_shared
def test_a_correction_on_stale_evidence_stops_the_build() -> None:
    listings = build.read_servers(SHARED / build.SERVERS) + build.read_r311(SHARED / build.R311)
    bonn = next(i for i, item in enumerate(listings) if item.name == "Bonn, Deutschland")
    listings[bonn] = dataclasses.replace(listings[bonn], jurisdiction_id="bonn.de")
    with pytest.raises(build.BuildError, match="review the correction"):
        build.apply_corrections(listings)


def test_loads(registry: dict[str, Jurisdiction]) -> None:
    assert len(registry) == TOTAL


def test_every_entry_has_endpoint_provenance(registry: dict[str, Jurisdiction]) -> None:
    for j in registry.values():
        facts = [p for p in j.provenance if p.fact == "endpoints"]
        assert facts, j.id
        assert all(p.source == "registry" for p in j.provenance), j.id
        assert all(
            p.reference.startswith((f"{build.SERVERS}#", f"{build.R311}#")) for p in facts
        ), j.id
        assert len(facts) == (2 if j.id in MERGED else 1), j.id


def test_ids_are_readable_slugs(registry: dict[str, Jurisdiction]) -> None:
    for jurisdiction_id in registry:
        assert jurisdiction_id.isascii(), jurisdiction_id
        assert jurisdiction_id == build.slug(jurisdiction_id), jurisdiction_id


def test_services_are_unknown(registry: dict[str, Jurisdiction]) -> None:
    assert all(j.services is None for j in registry.values())


@pytest.mark.parametrize(
    ("jurisdiction", "lat", "long", "reference"),
    [
        # San Francisco City Hall: the city's limits (the City and County are one)
        ("san-francisco-ca", 37.7793, -122.4193, "us-places-tiger2019.geojson#san-francisco-ca"),
        # downtown Baltimore: Baltimore city (an independent city), not Baltimore County
        ("baltimore-md", 39.2904, -76.6122, "us-places-tiger2019.geojson#baltimore-md"),
        # Bonn's market square: the city's limits as the federal mapping agency draws them
        ("bonn-de", 50.7357, 7.1022, "de-vg5000-2021.geojson#bonn-de"),
        # Trafalgar Square, London: FixMyStreet covers the United Kingdom
        ("fixmystreet-uk", 51.5074, -0.1278, "world-countries-50m.geojson#iso_n3=826"),
        # Oslo: FiksGataMi covers Norway
        ("fiksgatami-no", 59.9139, 10.7522, "world-countries-50m.geojson#iso_n3=578"),
    ],
)
def test_boundaries_cover_a_known_point(
    registry: dict[str, Jurisdiction], jurisdiction: str, lat: float, long: float, reference: str
) -> None:
    point = Point(long, lat)
    covering = [
        j.id for j in registry.values() if j.boundary is not None and j.boundary.covers(point)
    ]
    assert covering == [jurisdiction]
    j = registry[jurisdiction]
    assert j.boundary is not None and j.boundary.is_valid
    assert j.boundary.geom_type in ("Polygon", "MultiPolygon")
    assert j.boundary_generation is not None
    boundary_facts = [p for p in j.provenance if p.fact == "boundary"]
    assert len(boundary_facts) == 1
    assert reference in boundary_facts[0].reference
    assert boundary_facts[0].note


def test_every_extracted_boundary_names_its_repository_commit_and_licence(
    registry: dict[str, Jurisdiction],
) -> None:
    for j in registry.values():
        for fact in (p for p in j.provenance if p.fact == "boundary"):
            if fact.reference.startswith("tools/sources/"):
                # "<extract>#<id> (<key>; <repository>@<40-hex commit>:<file>)"
                where = fact.reference.split("; ", 1)[1]
                repository, _, rest = where.partition("@")
                assert "/" in repository, fact.reference
                assert len(rest.split(":", 1)[0]) == 40, fact.reference
                assert fact.note and ("public domain" in fact.note or "dl-de" in fact.note)


def test_only_the_honest_boundaries(registry: dict[str, Jurisdiction]) -> None:
    bounded = {j.id for j in registry.values() if j.boundary is not None}
    assert len(bounded) == WITH_BOUNDARY
    unbounded = [j for j in registry.values() if j.boundary is None]
    assert len(unbounded) == TOTAL - WITH_BOUNDARY  # listed, never found by location
    assert all(j.boundary_generation is None for j in unbounded)
    assert all(not any(p.fact == "boundary" for p in j.provenance) for j in unbounded)
    # census-designated places are statistical areas, not any government's limits
    assert not bounded & {"brookline-ma", "saugus-ma", "swampscott-ma", "palm-harbor-fl"}


def test_the_registry_stays_small(registry: dict[str, Jurisdiction]) -> None:
    vertices = sum(
        int(shapely.get_num_coordinates(j.boundary))
        for j in registry.values()
        if j.boundary is not None
    )
    assert vertices < 30_000
    assert embedded_registry_path().stat().st_size < 1_000_000


def test_bonn_has_its_own_jurisdiction_id(registry: dict[str, Jurisdiction]) -> None:
    bonn = registry["bonn-de"]
    assert bonn.jurisdiction_id == "bonn.de"
    assert bonn.domain == "bonn.de"
    assert any("ville.quebec.qc.ca" in note for note in bonn.notes)
    # Quebec keeps its own
    assert registry["quebec-qc"].jurisdiction_id == "ville.quebec.qc.ca"


def test_gilbert_base_url_has_no_resource_file(registry: dict[str, Jurisdiction]) -> None:
    gilbert = registry["gilbert-az"]
    assert [e.url for e in gilbert.endpoints] == ["https://seeclickfix.com/open311/v2/655/"]
    assert any("requests.json" in note for note in gilbert.notes)
    # the platform's host is not Gilbert's domain, its own jurisdiction_id is
    assert gilbert.domain == "gilbertaz.gov"


def test_no_url_has_a_doubled_slash_in_its_path(registry: dict[str, Jurisdiction]) -> None:
    for j in registry.values():
        urls = [e.url for e in j.endpoints] + ([j.discovery_url] if j.discovery_url else [])
        for url in urls:
            assert "//" not in url.split("://", 1)[1], (j.id, url)


def test_every_endpoint_url_is_a_normalized_base_url(registry: dict[str, Jurisdiction]) -> None:
    for j in registry.values():
        assert j.endpoints, j.id
        for e in j.endpoints:
            assert e.url.startswith(("http://", "https://")), (j.id, e.url)
            assert e.url.endswith("/"), (j.id, e.url)
            assert not e.url.endswith(("requests.json/", "services.json/", "discovery.json/"))


@pytest.mark.parametrize("jurisdiction", ["zaragoza-es", "lamia-gr"])
def test_empty_discovery_url_is_none_with_a_note(
    registry: dict[str, Jurisdiction], jurisdiction: str
) -> None:
    j = registry[jurisdiction]
    assert j.discovery_url is None
    assert any("No discovery URL published" in note for note in j.notes)


def test_bruehl_discovery_url_is_repaired(registry: dict[str, Jurisdiction]) -> None:
    bruehl = registry["bruhl-de"]
    assert bruehl.discovery_url == "https://www.achtet-auf-bruehl.de/georeport/v2/discovery.json"
    assert any("collapsed duplicate slashes" in note for note in bruehl.notes)


@pytest.mark.parametrize("jurisdiction", ["toronto-on", "lisboa-pt"])
def test_discovery_on_a_test_server_is_left_out(
    registry: dict[str, Jurisdiction], jurisdiction: str
) -> None:
    j = registry[jurisdiction]
    assert j.discovery_url is None
    assert any("is on the test server" in note for note in j.notes)


def test_chicago_keeps_the_scheme_a_list_gave(registry: dict[str, Jurisdiction]) -> None:
    chicago = registry["chicago-il"]
    assert [e.url for e in chicago.endpoints] == ["http://311api.cityofchicago.org/open311/v2/"]
    assert any("has none, https:// assumed" in note for note in chicago.notes)


def test_annaberg_buchholz_spelling(registry: dict[str, Jurisdiction]) -> None:
    annaberg = registry["annaberg-buchholz-de"]
    assert annaberg.jurisdiction_id == annaberg.domain == "annaberg-buchholz.de"
    assert sum("'annberg-buchholz.de'" in note for note in annaberg.notes) == 2
    # r311 marks its one endpoint deprecated: nothing current to offer
    assert annaberg.endpoint is None


def test_newport_news_id_is_kept_but_is_no_domain(registry: dict[str, Jurisdiction]) -> None:
    newport = registry["newport-news-va"]
    assert newport.jurisdiction_id == "cityofnewport_news.org"
    assert newport.domain is None
    assert any("not a valid host name" in note for note in newport.notes)


def test_lisboa_georeport_v1_is_kept_but_not_used(registry: dict[str, Jurisdiction]) -> None:
    lisboa = registry["lisboa-pt"]
    assert [e.specification for e in lisboa.endpoints] == ["unknown"]
    assert lisboa.endpoint is None


def test_both_lists_endpoints_are_kept_newest_first(registry: dict[str, Jurisdiction]) -> None:
    boston = registry["boston-ma"]
    assert [e.url for e in boston.endpoints] == [
        "https://311.boston.gov/open311/v2/",
        "https://mayors24.cityofboston.gov/open311/v2/",
    ]
    assert build.R311 in (boston.endpoints[0].note or "")
    assert build.SERVERS in (boston.endpoints[1].note or "")
    assert boston.endpoint is not None and boston.endpoint.url == boston.endpoints[0].url


def test_deprecated_endpoints_say_why(registry: dict[str, Jurisdiction]) -> None:
    deprecated = {
        j.id: e for j in registry.values() for e in j.endpoints if e.deprecated and e.note
    }
    assert set(deprecated) == {"annaberg-buchholz-de", "ottawa-on", "siegburg-de", "northfield-nj"}
    assert "abandoned" in (deprecated["ottawa-on"].note or "")
    assert "mitmachen.siegburg.de" in (deprecated["siegburg-de"].note or "")


def test_domains_are_host_names_and_never_platforms(registry: dict[str, Jurisdiction]) -> None:
    for j in registry.values():
        if j.domain is None:
            continue
        assert j.domain == j.jurisdiction_id, j.id
        assert not j.domain.endswith(build.SHARED_PLATFORMS), j.id


def test_endpoints_are_georeport_v2_except_lisboa(registry: dict[str, Jurisdiction]) -> None:
    others = {
        j.id for j in registry.values() for e in j.endpoints if e.specification != GEOREPORT_V2
    }
    assert others == {"lisboa-pt"}


def test_the_registry_names_its_release(registry: dict[str, Jurisdiction]) -> None:
    document = json.loads(embedded_registry_path().read_text(encoding="utf-8"))
    release = document["registry"]
    assert release["version"] == f"{build.RELEASED}.{build.CONTENT_DIGEST[:8]}"
    assert release["released"] == f"{build.RELEASED}T00:00:00.000000Z"


def test_changed_content_without_a_new_release_stops_the_build(
    registry: dict[str, Jurisdiction],
) -> None:
    changed = sorted(registry.values(), key=lambda j: j.id)
    changed[0] = dataclasses.replace(changed[0], name="Somewhere else")
    with pytest.raises(build.BuildError, match="set RELEASED to today's date"):
        build.render(changed)
