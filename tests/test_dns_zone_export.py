"""``geoweb zone export`` writes a zone the stock servers load: checked by BIND's
``named-checkzone`` and by serving it from Knot DNS. A nameserver inside the zone gets its address
(glue) or the export is refused; several nameservers are all written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dns.rdatatype
import pytest
from click.testing import CliRunner
from dns_server import KnotServer, require_named_checkzone
from shapely.geometry import box

from common.models import Jurisdiction
from resolver.cli.main import main
from resolver.store import Store

ZONE = "export.test"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("export") / "registry.sqlite"
    cities = [
        Jurisdiction(
            f"c{n}",
            f"City {n}",
            domain=f"c{n}.{ZONE}",
            discovery_url=f"https://c{n}.{ZONE}/discovery.json",
        ).with_boundary(box(-100.0 + n, 40.0, -99.1 + n, 40.9))
        for n in range(3)
    ]
    with Store(db) as store:
        store.save(cities, source="test: three cities")
    return db


def _export(registry: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main,
        [
            "zone", "export", "--origin", ZONE, "--db", str(registry), "--no-embedded",
            "--boundary-url", "https://registry.example/{id}.geojson", *args,
        ],
    )  # fmt: skip
    return result.exit_code, result.stdout, result.stderr


def _check_with_named(zone_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_named_checkzone(), ZONE, str(zone_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "ns", "glue"),
    [
        # the default nameserver, ns.<origin>, with its address
        (["--nameserver-address", "127.0.0.1"], [f"ns.{ZONE}."], {f"ns.{ZONE}.": ["127.0.0.1"]}),
        # two inside the zone (one with IPv4 and IPv6) and one outside, which needs no glue
        (
            [
                "--nameserver", f"ns1.{ZONE}", "--nameserver", f"ns2.{ZONE}",
                "--nameserver", "ns.dns-host.example",
                "--nameserver-address", f"ns1.{ZONE}=127.0.0.1",
                "--nameserver-address", f"ns1.{ZONE}=::1",
                "--nameserver-address", f"ns2.{ZONE}.=127.0.0.2",
            ],
            [f"ns1.{ZONE}.", f"ns2.{ZONE}.", "ns.dns-host.example."],
            {f"ns1.{ZONE}.": ["127.0.0.1", "::1"], f"ns2.{ZONE}.": ["127.0.0.2"]},
        ),
        # only a nameserver outside the zone: no glue at all
        (["--nameserver", "ns.dns-host.example"], ["ns.dns-host.example."], {}),
    ],
)  # fmt: skip
def test_the_exported_zone_loads_in_named_and_knot(
    registry: Path,
    tmp_path: Path,
    args: list[str],
    ns: list[str],
    glue: dict[str, list[str]],
) -> None:
    code, zone_text, errors = _export(registry, *args)
    assert code == 0, errors
    zone_file = tmp_path / "export.zone"
    zone_file.write_text(zone_text, encoding="utf-8")
    checked = _check_with_named(zone_file)
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.stdout + checked.stderr
    knot = KnotServer(tmp_path / "knot", ZONE, zone_file)
    knot.start()
    try:
        served = knot.query(ZONE, "NS").answer[0]
        assert sorted(r.target.to_text() for r in served) == sorted(ns)
        for name, addresses in glue.items():
            found = []
            for rdtype in ("A", "AAAA"):
                answer = knot.query(name, rdtype).answer
                found += [r.address for rrset in answer for r in rrset]
            assert sorted(found) == sorted(addresses), name
        txt = knot.query(f"_open311.c1.{ZONE}", "TXT").answer[0]
        assert txt.rdtype == dns.rdatatype.TXT
    finally:
        knot.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # the README's old example: an in-zone NS with no address does not load
        ([], f"ns.{ZONE} is inside {ZONE} and has no address"),
        (["--nameserver", f"ns1.{ZONE}", "--nameserver", f"ns2.{ZONE}",
          "--nameserver-address", f"ns1.{ZONE}=127.0.0.1"], f"ns2.{ZONE} is inside"),
        # a bare address with two nameservers inside the zone: whose?
        (["--nameserver", f"ns1.{ZONE}", "--nameserver", f"ns2.{ZONE}",
          "--nameserver-address", "127.0.0.1"], "write NAME=IP"),
        (["--nameserver-address", f"ns9.{ZONE}=127.0.0.1"], "not a --nameserver of the zone"),
        (["--nameserver-address", "not-an-ip"], "is not an IP address"),
        (["--nameserver", "ns.dns-host.example", "--nameserver-address",
          "ns.dns-host.example=192.0.2.1"], "belongs in its own zone"),
        (["--nameserver", "bad name!"], "is not a DNS host name"),
    ],
)  # fmt: skip
def test_a_zone_that_would_not_load_is_refused_with_the_reason(
    registry: Path, args: list[str], message: str
) -> None:
    code, zone_text, errors = _export(registry, *args)
    assert code == 2 and zone_text == "", (code, errors)
    assert message in errors and "Traceback" not in errors, errors
