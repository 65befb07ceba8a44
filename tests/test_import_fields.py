"""``geoweb import`` takes what real files carry: each feature's own domain, jurisdiction_id,
discovery URL and endpoint from attributes; ``zone export`` says what it needs and what it
skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from resolver.cli.main import main
from resolver.store import Store


def geoweb(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def _town(number: int, **properties: object) -> dict[str, object]:
    x = -20.0 + number
    return {
        "type": "Feature",
        "properties": {"id": f"t{number}", "name": f"Town {number}", **properties},
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[x, -30], [x + 1, -30], [x + 1, -29], [x, -29], [x, -30]]],
        },
    }


def _file(path: Path, features: list[dict[str, object]]) -> str:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return str(path)


FIELDS = ("--domain-field", "dom", "--discovery-url-field", "disc", "--endpoint-url-field", "ep",
          "--jurisdiction-id-field", "jid")  # fmt: skip


def test_each_feature_brings_its_own_facts(tmp_path: Path) -> None:
    towns = _file(
        tmp_path / "towns.geojson",
        [
            _town(1, dom="One.Towns.Example.", disc="https://one.towns.example/d.json",
                  ep="https://one.towns.example/open311/v2", jid="one"),
            _town(2, dom=None, disc="", ep="https://two.towns.example/georeport/v2/", jid="7"),
            _town(3),  # the attributes absent: nothing for this feature
        ],
    )  # fmt: skip
    db = str(tmp_path / "t.sqlite")
    code, out, err = geoweb("import", towns, "--id-field", "id", "--name-field", "name",
                            *FIELDS, "--db", db)  # fmt: skip
    assert code == 0, err
    assert out.startswith("imported 3 jurisdictions")
    with Store(db) as store:
        entries = {j.id: j for j in store.jurisdictions()}
    one, two, three = entries["t1"], entries["t2"], entries["t3"]
    assert (one.domain, one.jurisdiction_id) == ("one.towns.example", "one")
    assert one.discovery_url == "https://one.towns.example/d.json"
    assert [e.url for e in one.endpoints] == ["https://one.towns.example/open311/v2/"]
    assert any("trailing slash" in note for note in one.notes)
    assert (two.domain, two.discovery_url, two.jurisdiction_id) == (None, None, "7")
    assert [e.url for e in two.endpoints] == ["https://two.towns.example/georeport/v2/"]
    assert (three.domain, three.discovery_url, three.endpoints) == (None, None, ())


def test_discovery_url_and_endpoint_url_together(tmp_path: Path) -> None:
    towns = _file(tmp_path / "towns.geojson", [_town(1)])
    db = str(tmp_path / "t.sqlite")
    code, _, err = geoweb("import", towns, "--id-field", "id", "--name-field", "name", "--db", db,
                          "--discovery-url", "https://t.example/discovery.json",
                          "--endpoint-url", "https://t.example/open311/v2/")  # fmt: skip
    assert code == 0, err
    with Store(db) as store:
        (entry,) = store.jurisdictions()
    assert entry.discovery_url == "https://t.example/discovery.json"
    assert [e.url for e in entry.endpoints] == ["https://t.example/open311/v2/"]


@pytest.mark.parametrize(
    ("args", "features", "message"),
    [
        (["--domain", "a.example", "--domain-field", "dom"], [_town(1, dom="b.example")],
         "give --domain or --domain-field, not both"),
        (["--endpoint-url-field", "url"], [_town(1, ep="https://x.example/")],
         "--endpoint-url-field 'url': no feature has this attribute (the file has: ep, id, name)"),
        (["--domain-field", "dom"], [_town(1, dom="ok.example"), _town(2, dom="not a host")],
         "feature 't2': --domain-field: 'not a host' is not a DNS host name"),
        (["--discovery-url-field", "disc"], [_town(1, disc="ftp://x.example/d.json")],
         "feature 't1': --discovery-url-field:"),
    ],
)  # fmt: skip
def test_bad_fields_refuse_the_whole_import(
    tmp_path: Path, args: list[str], features: list[dict[str, object]], message: str
) -> None:
    towns = _file(tmp_path / "towns.geojson", features)
    db = str(tmp_path / "t.sqlite")
    code, _, err = geoweb("import", towns, "--id-field", "id", "--name-field", "name", *args,
                          "--db", db)  # fmt: skip
    assert code == 2 and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    with Store(db) as store:
        assert store.count() == 0


def _export(db: str, origin: str = "towns.example") -> tuple[int, str, str]:
    return geoweb("zone", "export", "--origin", origin, "--db", db, "--no-embedded",
                  "--nameserver", "ns.dns-host.example")  # fmt: skip


def test_zone_export_says_what_it_needs_and_lists_what_it_skipped(tmp_path: Path) -> None:
    db = str(tmp_path / "z.sqlite")
    published = _town(0, dom="t0.towns.example", disc="https://t0.towns.example/d.json")
    towns = [published] + [_town(n, dom=None, disc=None) for n in range(1, 61)]
    code, _, err = geoweb("import", _file(tmp_path / "towns.geojson", towns), "--id-field", "id",
                          "--name-field", "name", "--domain-field", "dom",
                          "--discovery-url-field", "disc", "--db", db)  # fmt: skip
    assert code == 0, err
    code, zone, err = _export(db)
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0] == (
        "; a jurisdiction is published when it has a domain (a DNS host name) and an https "
        "discovery URL (the d= key): 1 of 61 jurisdictions have both"
    )
    assert "; skipped: 60 no domain" in lines
    listed = [line for line in lines if line.startswith(";   skipped ")]
    assert len(listed) == 50 and ";   and 10 more skipped" in lines
    assert '_open311.t0 300 IN TXT "v=open311-1" "d=https://t0.towns.example/d.json"' in zone


def test_zone_export_that_publishes_nothing_fails(tmp_path: Path) -> None:
    db = str(tmp_path / "z.sqlite")
    towns = [_town(n) for n in range(3)]
    code, _, err = geoweb("import", _file(tmp_path / "towns.geojson", towns), "--id-field", "id",
                          "--name-field", "name", "--db", db)  # fmt: skip
    assert code == 0, err
    code, _, err = _export(db)
    assert code == 1
    assert "0 of 3 jurisdictions have both" in err
    assert err.count(";   skipped ") == 3 and "more skipped" not in err
    assert err.splitlines()[-1].startswith("geoweb: nothing was published")
