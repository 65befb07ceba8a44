"""Property tests of the readers of what strangers send: whatever the input, each raises nothing
but our own typed errors (:class:`~common.errors.GeoWebError` and its subclasses).

Derandomized with a fixed number of examples, so a run in CI is repeatable and the whole file
stays within a few seconds per reader.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import GeoWebError
from common.models import Endpoint, Jurisdiction, Service
from discovery.dns_records import parse_rrset
from discovery.documents import parse_discovery, parse_services
from discovery.validator import validate_discovery
from resolver.cli.main import main
from resolver.core.concerns import ServiceCatalog
from resolver.core.decide import check_point, clean_concern, parse_coordinate
from resolver.core.federation import EntryVersion, Held, judge_mirrored
from resolver.core.validation import check_entry
from resolver.registry.documents import REGISTRY_FORMAT
from resolver.registry.mirror import read_change_page

FUZZ = settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- values strangers send ---------------------------------------------------------------------

numbers = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
)
texts = st.text(max_size=40)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(texts, children, max_size=5)
    ),
    max_leaves=30,
)
positions = st.lists(numbers, min_size=0, max_size=3)
rings = st.lists(positions, max_size=8)
geometries = st.one_of(
    st.none(),
    json_values,
    st.fixed_dictionaries({"type": st.just("Polygon"), "coordinates": st.lists(rings, max_size=2)}),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["MultiPolygon", "Point", "LineString"]),
            "coordinates": st.lists(st.lists(rings, max_size=2), max_size=2),
        }
    ),
)
urls = st.one_of(
    texts,
    st.sampled_from(
        [
            "https://city.example/open311/v2/",
            "javascript:alert(1)",
            "ftp://city.example/x",
            "https://user:pw@city.example/",
            "https://169.254.169.254/",
            "https://[::1]/",
            "https://city.example:99999/",
            "http://city.example/",
        ]
    ),
)
stamps = st.one_of(
    texts,
    st.sampled_from(["9999-12-31T23:59:59.999999Z", "zzzz", "2026-01-01T00:00:00.000000Z"]),
)


def _only_ours(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except GeoWebError:
        return None


# -- coordinates and concerns ------------------------------------------------------------------


@FUZZ
@given(st.one_of(texts, numbers, st.none(), st.booleans()))
def test_the_coordinate_parser_raises_only_its_own_errors(value: Any) -> None:
    parsed = _only_ours(parse_coordinate, value, "lat")
    assert parsed is None or math.isfinite(parsed)
    if parsed is not None and _only_ours(check_point, parsed, 0.0) is not None:
        raise AssertionError("check_point returns nothing")
    if parsed is not None and abs(parsed) > 90:  # the range is the point check's to refuse
        with pytest.raises(GeoWebError):
            check_point(parsed, 0.0)


@FUZZ
@given(
    st.one_of(st.none(), st.text(max_size=300)),
    st.lists(
        st.builds(
            Service,
            service_code=st.text(max_size=10),
            service_name=st.text(max_size=30),
            keywords=st.lists(st.text(max_size=15), max_size=3).map(tuple),
            group=st.text(max_size=15),
        ),
        max_size=8,
    ),
)
def test_the_concern_matcher_raises_only_its_own_errors(
    concern: str | None, services: list[Service]
) -> None:
    cleaned = _only_ours(clean_concern, concern)
    if cleaned:
        matches = ServiceCatalog(services).match(cleaned)
        assert all(0 < m.score <= 1 for m in matches)


# -- DNS records, discovery documents --------------------------------------------------------

txt_strings = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"v=open311-1", b"d=https://city.example/d.json", b"+x", b"g=zz", b"="]),
)


@FUZZ
@given(st.lists(st.lists(txt_strings, max_size=6), max_size=3))
def test_the_txt_record_parser_reports_errors_per_record(records: list[list[bytes]]) -> None:
    result = parse_rrset(records, name="_open311.city.example")
    assert result.record is None or result.record.discovery_url.startswith("https://")


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(
        lambda endpoints, area: json.dumps(
            {"changeset": "2026-01-01T00:00:00Z", "endpoints": endpoints, "service_area": area}
        ).encode(),
        st.lists(
            st.fixed_dictionaries(
                {"url": urls, "specification": texts, "type": texts, "formats": json_values}
            ),
            max_size=3,
        ),
        geometries,
    ),
    st.builds(lambda n: b"[" * n + b"]" * n, st.integers(0, 5000)),
    st.builds(
        lambda n: b"<discovery>" + b"<a>" * n + b"</a>" * n + b"</discovery>", st.integers(0, 500)
    ),
)
media = st.sampled_from(["application/json", "text/xml", "", "text/html"])


@FUZZ
@given(bodies, media)
def test_the_discovery_parsers_raise_only_their_own_errors(body: bytes, content_type: str) -> None:
    _only_ours(parse_discovery, body, content_type, url="https://city.example/discovery.json")
    _only_ours(parse_services, body, content_type, url="https://city.example/v2/services.json")
    verdict = validate_discovery(body, content_type, name="discovery.json")
    assert verdict.failures or verdict.passed


# -- the registry entry validator and the trust rule -------------------------------------------


def _page(changes: list[Any]) -> dict[str, Any]:
    return {
        "registry": {"format": REGISTRY_FORMAT, "id": "00000000000000ee", "serial": 10**6},
        "since": 0,
        "last": 0,
        "more": False,
        "changes": changes,
    }


features = st.fixed_dictionaries(
    {
        "type": st.just("Feature"),
        "id": texts,
        "geometry": geometries,
        "properties": st.fixed_dictionaries(
            {
                "id": st.one_of(texts, numbers),
                "name": st.one_of(texts, st.none()),
                "discovery_url": st.one_of(st.none(), urls),
                "endpoints": st.lists(st.fixed_dictionaries({"url": urls}), max_size=3),
                "entry": st.fixed_dictionaries(
                    {
                        "origin": st.one_of(texts, st.none()),
                        "version": st.one_of(numbers, texts),
                        "updated": stamps,
                        "attested": st.booleans(),
                    }
                ),
            }
        ),
    }
)
changes = st.one_of(
    st.builds(lambda f: {"serial": 1, "op": "upsert", "feature": f}, features),
    st.builds(
        lambda i, o, v, u: {
            "serial": 1,
            "op": "delete",
            "id": i,
            "entry": {"origin": o, "version": v, "updated": u},
        },
        texts,
        scalars,
        numbers,
        stamps,
    ),
    json_values,
)


@FUZZ
@given(st.lists(changes, max_size=2))
def test_a_mirror_page_is_read_or_refused_as_a_whole(items: list[Any]) -> None:
    page = _only_ours(read_change_page, _page(items), since=0, url="https://up.example")
    if page is None:
        return
    for change in page.changes:  # what was read is what every entry is held to
        if change.jurisdiction is not None:
            check_entry(change.jurisdiction)


@FUZZ
@given(
    texts.filter(bool),
    texts,
    st.one_of(st.none(), urls),
    st.lists(urls, max_size=3),
    st.integers(min_value=-(2**70), max_value=2**70),
)
def test_the_entry_validator_raises_only_invalid_entry(
    jurisdiction_id: str, name: str, discovery_url: str | None, endpoints: list[str], version: int
) -> None:
    entry = Jurisdiction(
        jurisdiction_id,
        name,
        discovery_url=discovery_url,
        endpoints=tuple(Endpoint(u) for u in endpoints),
        version=version,
    )
    checked = _only_ours(check_entry, entry)
    if checked is not None:
        assert all(e.url.startswith("https://") for e in checked.endpoints)


versions = st.builds(
    EntryVersion,
    origin=st.sampled_from(["local", "domain:city.example", "other", "third"]),
    version=st.integers(min_value=-5, max_value=2**70),
    updated=stamps,
    attested=st.booleans(),
    domain=st.sampled_from([None, "city.example"]),
    deleted=st.booleans(),
)


@FUZZ
@given(versions, st.one_of(st.none(), versions), st.booleans(), st.booleans())
def test_the_trust_rule_never_lets_a_mirror_change_what_is_held_here(
    incoming: EntryVersion, held: EntryVersion | None, here: bool, verified: bool
) -> None:
    copy = None if held is None else Held(held, here)
    verdict = judge_mirrored(
        incoming,
        copy,
        registry_id="local",
        verified=verified,
        now=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
    )
    if verdict.take:
        assert incoming.origin != "local" and not (copy is not None and copy.here)
        assert verdict.attested <= (verified and incoming.attested)


# -- the CSV batch reader ----------------------------------------------------------------------

cells = st.one_of(
    st.text(max_size=20), st.sampled_from(["37.7793", "-122.4193", "1e999", "nan", "", '"'])
)


@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(st.lists(cells, max_size=4), max_size=6),
    st.binary(max_size=40),
)
def test_resolve_batch_answers_every_row_or_says_why(
    tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]], junk: bytes
) -> None:
    folder: Path = tmp_path_factory.mktemp("batch")
    lines = ["lat,long,concern", *(",".join(r).replace("\n", " ") for r in rows)]
    data = "\n".join(lines).encode("utf-8", "surrogatepass") + b"\n" + junk + b"\n"
    source, out = folder / "in.csv", folder / "out.csv"
    source.write_bytes(data)
    result = CliRunner().invoke(
        main, ["resolve-batch", str(source), str(out), "--db", str(folder / "s.sqlite")]
    )
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
