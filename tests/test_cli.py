"""The ``geoweb`` command line: resolve, resolve-batch, import, jurisdictions, on real files."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from conftest import COUNTIES
from shapely.geometry import shape

from resolver.cli.main import ANSWER_COLUMNS, main
from resolver.store import Store


def geoweb(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def test_resolve_text_json_and_exit_codes(tmp_path: Path) -> None:
    db = str(tmp_path / "e.sqlite")
    code, out, _ = geoweb("resolve", "--lat", "37.7793", "--long", "-122.4193", "--db", db)
    assert code == 0
    assert "San Francisco" in out and "https://mobile311.sfgov.org/open311/v2/" in out
    code, out, _ = geoweb("resolve", "--lat", "38.5", "--long", "-116.5", "--json", "--db", db)
    assert code == 3
    assert json.loads(out)["reason"] == "no_jurisdiction"
    code, out, _ = geoweb(
        "resolve",
        "--lat",
        "38.5",
        "--long",
        "-116.5",
        "--db",
        db,
        "--fallback-url",
        "https://adhoc.example/v2/",
    )
    assert code == 0 and "Fallback" in out


@pytest.mark.parametrize(
    ("lat", "long", "message"),
    [
        ("91", "0", "outside"),  # out of range
        ("abc", "0", "decimal degrees"),  # not a number
        ("nan", "0", "decimal degrees"),  # NaN
        ("", "0", "empty"),  # empty
    ],
)
def test_resolve_refuses_bad_coordinates(tmp_path: Path, lat: str, long: str, message: str) -> None:
    code, _, err = geoweb(
        "resolve", "--lat", lat, "--long", long, "--db", str(tmp_path / "e.sqlite")
    )
    assert code == 2
    assert message in err and "Traceback" not in err


def test_resolve_batch_keeps_every_row(tmp_path: Path) -> None:
    rows = (
        "lat,long,concern,ref\n"
        "37.7793,-122.4193,pothole,a\n"  # San Francisco, with a concern
        "91,0,,b\n"  # out of range
        "x,y,,c\n"  # not numbers
        "38.5,-116.5,,d\n"  # the Nevada desert
        "39.9526,-75.1652\n"  # Philadelphia, a short row
    )
    code, out, err = geoweb("resolve-batch", "--db", str(tmp_path / "e.sqlite"), input=rows)
    assert code == 0, err
    table = list(csv.DictReader(io.StringIO(out)))
    assert list(table[0]) == ["lat", "long", "concern", "ref", *ANSWER_COLUMNS]
    assert [r["ref"] for r in table[:4]] == ["a", "b", "c", "d"]
    assert len(table) == 5
    assert table[0]["jurisdiction_id"] == "san-francisco-ca"
    assert table[0]["concern_status"] == "unverified"
    assert "outside" in table[1]["error"]
    assert "decimal degrees" in table[2]["error"]
    assert table[3]["reason"] == "no_jurisdiction" and table[3]["error"] == ""
    assert table[4]["jurisdiction_id"] == "philadelphia-pa"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("", "empty"),  # nothing at all
        ("latitude,longitude\n1,2\n", "no lat or long column"),  # wrong header names
    ],
)
def test_resolve_batch_refuses_unusable_input(tmp_path: Path, rows: str, message: str) -> None:
    code, _, err = geoweb("resolve-batch", "--db", str(tmp_path / "e.sqlite"), input=rows)
    assert code == 2 and message in err


def _write_geojson(path: Path, features: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _square(id_: object, name: str, x: float = 0.0) -> dict[str, object]:
    return {
        "type": "Feature",
        "properties": {"code": id_, "label": name},
        "geometry": shapely.geometry.mapping(shapely.box(x, 0, x + 1, 1)),
    }


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        # a file that does not exist
        (lambda d: d / "missing.geojson", [], "does not exist"),
        # not a boundary file at all
        (lambda d: (d / "notes.txt").write_text("hello") and d / "notes.txt", [], ""),
        # the id field is missing
        (
            lambda d: _write_geojson(d / "a.geojson", [_square("1", "One")]),
            ["--id-field", "nope"],
            "nope",
        ),
        # the id is repeated
        (
            lambda d: _write_geojson(
                d / "b.geojson", [_square("1", "One"), _square("1", "Uno", 2)]
            ),
            [],
            "1",
        ),
    ],
)
def test_import_errors_change_nothing(
    tmp_path: Path, make: object, args: list[str], message: str
) -> None:
    db = tmp_path / "s.sqlite"
    good = _write_geojson(tmp_path / "good.geojson", [_square("keep", "Kept")])
    assert (
        geoweb("import", str(good), "--id-field", "code", "--name-field", "label", "--db", str(db))[
            0
        ]
        == 0
    )
    path = make(tmp_path)  # type: ignore[operator]
    options = {"--id-field": "code", "--name-field": "label"}
    for i in range(0, len(args), 2):
        options[args[i]] = args[i + 1]
    flat = [x for kv in options.items() for x in kv]
    code, _, err = geoweb("import", str(path), *flat, "--db", str(db))
    assert code == 2, err
    assert message in err and "Traceback" not in err
    with Store(db) as store:
        assert [j.id for j in store.jurisdictions()] == ["keep"]


def test_import_with_endpoint_then_replace(tmp_path: Path) -> None:
    db = str(tmp_path / "s.sqlite")
    path = _write_geojson(tmp_path / "city.geojson", [_square(7, "Seven")])
    base = ["import", str(path), "--id-field", "code", "--name-field", "label", "--db", db]
    code, out, err = geoweb(
        *base,
        "--endpoint-url",
        "https://city.example/open311/v2/requests.json",
        "--domain",
        "city.example",
        "--jurisdiction-id",
        "city.example",
    )
    assert code == 0, err
    assert "imported 1 jurisdiction from" in out
    code, out, _ = geoweb("resolve", "--lat", "0.5", "--long", "0.5", "--json", "--db", db)
    answer = json.loads(out)
    assert answer["jurisdiction"]["id"] == "7"
    assert answer["endpoint"]["url"] == "https://city.example/open311/v2/"
    assert answer["provenance"][0]["source"] == "import"
    assert geoweb(*base)[0] == 2  # already there
    moved = _write_geojson(tmp_path / "city.geojson", [_square(7, "Seven", 5)])
    assert (
        geoweb(
            "import",
            str(moved),
            "--id-field",
            "code",
            "--name-field",
            "label",
            "--db",
            db,
            "--replace",
        )[0]
        == 0
    )
    code, out, _ = geoweb("resolve", "--lat", "0.5", "--long", "5.5", "--json", "--db", db)
    assert json.loads(out)["jurisdiction"]["id"] == "7"


def test_jurisdictions_listing(tmp_path: Path) -> None:
    code, out, _ = geoweb("jurisdictions", "--db", str(tmp_path / "e.sqlite"))
    assert code == 0 and "from the embedded registry" in out and "san-francisco-ca" in out
    code, out, _ = geoweb("jurisdictions", "--json", "--db", str(tmp_path / "e.sqlite"))
    assert json.loads(out)["layers"]["embedded"]["entries"] == 82


def test_counties_import_reports_repairs_and_missing_geometry(counties_db: Path) -> None:
    with Store(counties_db) as store:
        imports = store.imports()
        jurisdictions = {j.id: j for j in store.jurisdictions()}
    assert len(jurisdictions) == 3231
    report = imports[0]["report"]
    assert len(report["repaired"]) == 22
    assert [i for i, _ in report["without_geometry"]] == ["51610"]
    assert jurisdictions["51610"].boundary is None
    assert jurisdictions["53007"].boundary is not None and jurisdictions["53007"].boundary.is_valid


def test_resolve_batch_20000_us_points_agree_with_shapely(
    counties_db: Path, tmp_path: Path
) -> None:
    """The installed command, as a user runs it, against an independent shapely covers check."""
    rng = np.random.default_rng(20_000)
    lats = rng.uniform(24.5, 49.5, 20_000)
    longs = rng.uniform(-125.0, -66.9, 20_000)
    in_csv = tmp_path / "in.csv"
    in_csv.write_text(
        "lat,long\n"
        + "".join(f"{a!r},{b!r}\n" for a, b in zip(lats.tolist(), longs.tolist(), strict=True))
    )
    out_csv = tmp_path / "out.csv"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "resolver",
            "resolve-batch",
            str(in_csv),
            str(out_csv),
            "--db",
            str(counties_db),
            "--no-embedded",  # the counties alone, as the shapely check below sees them
        ],
        check=True,
    )
    with out_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20_000

    features = json.loads(COUNTIES.read_text())["features"]
    ids = [f["properties"]["geoid"] for f in features if f["geometry"]]
    geoms = [shapely.make_valid(shape(f["geometry"])) for f in features if f["geometry"]]
    points = shapely.points(longs, lats)
    tree = shapely.STRtree(geoms)
    point_idx, geom_idx = tree.query(points, predicate="covered_by")
    expected: dict[int, set[str]] = {}
    for p, g in zip(point_idx, geom_idx, strict=True):
        expected.setdefault(int(p), set()).add(ids[g])
    covered = 0
    for i, row in enumerate(rows):
        assert float(row["lat"]) == lats[i]
        want = expected.get(i, set())
        if want:
            covered += 1
            assert row["jurisdiction_id"] in want, (i, row, want)
        else:
            assert row["jurisdiction_id"] == "", (i, row)
    assert covered > 10_000  # most of the bounding box is land in some county


def test_help_tells_the_truth() -> None:
    for command in ("serve", "resolve", "resolve-batch", "import", "jurisdictions"):
        code, out, _ = geoweb(command, "--help")
        assert code == 0 and "Usage:" in out
    assert "lat,long[,concern]" in geoweb("resolve-batch", "--help")[1]


def _every_command(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in sorted(group.commands.items()):
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _every_command(command, (*prefix, name))
    return found


@pytest.mark.parametrize("command", [(), *_every_command(main)], ids=" ".join)
def test_short_help_on_every_command(command: tuple[str, ...]) -> None:
    code, out, err = geoweb(*command, "-h")
    assert code == 0, err
    assert out.startswith("Usage: ") and "-h, --help" in out
    assert out == geoweb(*command, "--help")[1]


def test_geoweb_db_reaches_every_command(tmp_path: Path) -> None:
    """GEOWEB_DB names the store for every command that takes --db; a command's own
    GEOWEB_<COMMAND>_DB, then --db, win over it."""
    db = tmp_path / "env.sqlite"
    path = _write_geojson(tmp_path / "city.geojson", [_square(7, "Seven")])
    env = {"GEOWEB_DB": str(db)}
    imported = CliRunner(env=env).invoke(
        main, ["import", str(path), "--id-field", "code", "--name-field", "label"]
    )
    assert imported.exit_code == 0, imported.stderr
    assert imported.stdout == f"imported 1 jurisdiction from {path} into {db}\n"
    listed = CliRunner(env=env).invoke(main, ["jurisdictions"])
    assert listed.stdout.startswith("# 83 jurisdictions: 82 from the embedded registry (")
    assert listed.stdout.split("\n")[0].endswith("), 1 local")
    resolved = CliRunner(env=env).invoke(main, ["resolve", "--lat", "0.5", "--long", "0.5"])
    assert resolved.exit_code == 3 and "jurisdiction: 7 (Seven)" in resolved.stdout
    status = CliRunner(env=env).invoke(main, ["registry", "status"])
    assert json.loads(status.stdout)["layers"]["local"]["entries"] == 1
    # more specific names win: the command's own variable, then the option
    other = str(tmp_path / "other.sqlite")
    own = CliRunner(env={**env, "GEOWEB_JURISDICTIONS_DB": other}).invoke(main, ["jurisdictions"])
    assert "from the embedded registry" in own.stdout
    given = CliRunner(env=env).invoke(main, ["jurisdictions", "--db", other])
    assert "from the embedded registry" in given.stdout


def test_settings_from_the_environment_are_checked(tmp_path: Path) -> None:
    result = CliRunner(env={"GEOWEB_REFRESH_CONCURRENCY": "0"}).invoke(
        main, ["refresh", "--db", str(tmp_path / "e.sqlite")]
    )
    assert result.exit_code == 2
    assert "--refresh-concurrency" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["jurisdictions"],
        ["jurisdictions", "--json"],
        ["resolve", "--lat", "37.7793", "--long", "-122.4193"],
        ["resolve", "--lat", "37.7793", "--long", "-122.4193", "--json"],
        ["registry", "status"],
        ["mirror", "list", "--json"],
    ],
    ids=" ".join,
)
def test_outputs_end_with_a_newline(tmp_path: Path, args: list[str]) -> None:
    code, out, err = geoweb(*args, "--db", str(tmp_path / "e.sqlite"))
    assert code == 0, err
    assert out.endswith("\n") and not out.endswith("\n\n")


def test_exported_registry_geojson_ends_with_a_newline(tmp_path: Path) -> None:
    out = tmp_path / "registry.geojson"
    code, stdout, err = geoweb("registry", "export", str(out), "--db", str(tmp_path / "e.sqlite"))
    assert code == 0, err
    assert out.read_bytes().endswith(b"}\n") and stdout.endswith(f"to {out}\n")
