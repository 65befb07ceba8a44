"""Extract the city limits the embedded registry uses into small committed files.

    python -m tools.extract_places us GIT_DIR [--output PATH]
    python -m tools.extract_places de GIT_DIR [--output PATH]

``us``: ``GIT_DIR`` is a clone of the public repository ``generalpiston/geojson-us-city-boundaries``
(US Census TIGER/Line 2019 places, one GeoJSON file per place). Each place named in
:data:`PLACES` is read at the repository's ``HEAD``, checked (one feature, the expected GEOID,
an incorporated place), simplified to :data:`TOLERANCE_DEGREES` and rounded to
:data:`DECIMALS`, and written with its repository, commit, file and blob id to
``tools/sources/us-places-tiger2019.geojson``.

``de``: ``GIT_DIR`` is a clone of ``Praesklepios/geoGermany``, which holds the German federal
mapping agency's (BKG) VG5000 shapefiles of 1 January 2021 as published. Each municipality or
state named in :data:`GERMAN` is read (checked by its official key, ``ARS``), reprojected to
WGS84, rounded, and written to ``tools/sources/de-vg5000-2021.geojson``.

The registry build reads these files offline, so the network (or a clone) is needed only to
refresh an extract, never to rebuild.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import shapely
import shapely.geometry

REPOSITORY = "generalpiston/geojson-us-city-boundaries"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "sources" / "us-places-tiger2019.geojson"
GERMAN_REPOSITORY = "Praesklepios/geoGermany"
GERMAN_OUTPUT = Path(__file__).resolve().parent / "sources" / "de-vg5000-2021.geojson"
GERMAN_FOLDER = "geogermany/bkgdata/vg5000_01-01.gk3.shape.ebenen/vg5000_ebenen_0101"

#: Douglas-Peucker tolerance in degrees. 0.00018 degrees is 20 m of latitude and less of
#: longitude, so no simplified vertex or edge moves more than 20 m from the Census line.
TOLERANCE_DEGREES = 0.00018
TOLERANCE_METRES = 20
#: Coordinates are rounded to 6 decimals (0.11 m at most): more is noise at a 20 m tolerance.
DECIMALS = 6

#: Registry id -> (file in the repository, Census GEOID it must hold). Only incorporated places
#: (class C*: the legal limits of a city, town or borough) are used: a census-designated place
#: (class U*) is a statistical area, not the limit of any government.
PLACES: dict[str, tuple[str, str]] = {
    "albuquerque-nm": ("cities/nm/albuquerque.json", "3502000"),
    "austin-tx": ("cities/tx/austin.json", "4805000"),
    "baltimore-md": ("cities/md/baltimore.json", "2404000"),
    "bloomington-in": ("cities/in/bloomington.json", "1805860"),
    "boston-ma": ("cities/ma/boston.json", "2507000"),
    "burlingame-ca": ("cities/ca/burlingame.json", "0609066"),
    "burlington-vt": ("cities/vt/burlington.json", "5010675"),
    "canton-oh": ("cities/oh/canton.json", "3912000"),
    "chicago-il": ("cities/il/chicago.json", "1714000"),
    "chula-vista-ca": ("cities/ca/chula-vista.json", "0613392"),
    "college-station-tx": ("cities/tx/college-station.json", "4815976"),
    "columbus-in": ("cities/in/columbus.json", "1814734"),
    "coral-gables-fl": ("cities/fl/coral-gables.json", "1214250"),
    "corona-ca": ("cities/ca/corona.json", "0616350"),
    "dunwoody-ga": ("cities/ga/dunwoody.json", "1324768"),
    "fayetteville-nc": ("cities/nc/fayetteville.json", "3722920"),
    "gilbert-az": ("cities/az/gilbert.json", "0427400"),
    "grand-rapids-mi": ("cities/mi/grand-rapids.json", "2634000"),
    "hammond-in": ("cities/in/hammond.json", "1831000"),
    "huntsville-al": ("cities/al/huntsville.json", "0137000"),
    "lake-elsinore-ca": ("cities/ca/lake-elsinore.json", "0639486"),
    "macon-ga": ("cities/ga/macon-bibb-county.json", "1349008"),
    "mason-city-ia": ("cities/ia/mason-city.json", "1950160"),
    "milton-ga": ("cities/ga/milton.json", "1351670"),
    "minneapolis-mn": ("cities/mn/minneapolis.json", "2743000"),
    "new-haven-ct": ("cities/ct/new-haven.json", "0952000"),
    "newark-oh": ("cities/oh/newark.json", "3954040"),
    "newport-news-va": ("cities/va/newport-news.json", "5156000"),
    "northfield-nj": ("cities/nj/northfield.json", "3452950"),
    "oakland-ca": ("cities/ca/oakland.json", "0653000"),
    "palm-springs-ca": ("cities/ca/palm-springs.json", "0655254"),
    "peoria-il": ("cities/il/peoria.json", "1759000"),
    "philadelphia-pa": ("cities/pa/philadelphia.json", "4260000"),
    "raleigh-nc": ("cities/nc/raleigh.json", "3755000"),
    "ridgway-pa": ("cities/pa/ridgway.json", "4264784"),
    "saint-petersburg-fl": ("cities/fl/st.-petersburg.json", "1263000"),
    "san-diego-ca": ("cities/ca/san-diego.json", "0666000"),
    "san-francisco-ca": ("cities/ca/san-francisco.json", "0667000"),
    "shoreline-wa": ("cities/wa/shoreline.json", "5363960"),
    "st-louis-mo": ("cities/mo/st.-louis.json", "2965000"),
    "tucson-az": ("cities/az/tucson.json", "0477000"),
    "union-city-ga": ("cities/ga/union-city.json", "1378324"),
    "walnut-creek-ca": ("cities/ca/walnut-creek.json", "0683346"),
    "washington-dc": ("cities/dc/washington.json", "1150000"),
}

#: Registry id -> (VG5000 layer, official regional key ARS, name it must have). VG5000 is the
#: 1:5,000,000 generalisation: a few dozen vertices a city, already smaller than any tolerance
#: would make it, so it is only reprojected and rounded, not simplified.
GERMAN: dict[str, tuple[str, str, str]] = {
    "annaberg-buchholz-de": ("GEM", "145210020020", "Annaberg-Buchholz"),
    "bonn-de": ("GEM", "053140000000", "Bonn"),
    "bruhl-de": ("GEM", "053620012012", "Brühl"),
    "giessen-de": ("GEM", "065310005005", "Gießen"),
    "greifswald-de": ("GEM", "130750039039", "Greifswald"),
    "koln-de": ("GEM", "053150000000", "Köln"),
    "krefeld-de": ("GEM", "051140000000", "Krefeld"),
    "mecklenburg-vorpommern-de": ("LAN", "13", "Mecklenburg-Vorpommern"),
    "munchen-de": ("GEM", "091620000000", "München"),
    "paderborn-de": ("GEM", "057740032032", "Paderborn"),
    "rostock-de": ("GEM", "130030000000", "Rostock"),
    "schwerin-de": ("GEM", "130040000000", "Schwerin"),
    "siegburg-de": ("GEM", "053820060060", "Siegburg"),
}
GERMAN_KEPT = ("ARS", "AGS", "GEN", "BEZ", "GF")

#: The properties of the Census record kept beside each extract.
KEPT = ("GEOID", "NAME", "NAMELSAD", "CLASSFP", "FUNCSTAT")


class ExtractError(Exception):
    """The repository does not hold what an entry of :data:`PLACES` expects."""


def _git(git_dir: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "--git-dir", str(git_dir), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ExtractError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, DECIMALS)
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def simplify(geometry: shapely.Geometry) -> shapely.Geometry:
    """The boundary simplified to the stated tolerance, rounded, and valid."""
    simplified = shapely.simplify(geometry, TOLERANCE_DEGREES, preserve_topology=True)
    mapped = shapely.geometry.mapping(simplified)
    result = shapely.geometry.shape(
        {"type": mapped["type"], "coordinates": _rounded(mapped["coordinates"])}
    )
    if not result.is_valid:
        result = shapely.make_valid(result, method="structure", keep_collapsed=False)
    return result


def extract(git_dir: Path) -> dict[str, Any]:
    """The extract document for every entry of :data:`PLACES`."""
    commit = _git(git_dir, "rev-parse", "HEAD").strip()
    features = []
    for jurisdiction, (path, geoid) in sorted(PLACES.items()):
        blob = _git(git_dir, "rev-parse", f"HEAD:{path}").strip()
        data = json.loads(_git(git_dir, "show", f"HEAD:{path}"))
        found = data.get("features") or []
        if len(found) != 1:
            raise ExtractError(f"{path}: {len(found)} features, expected 1")
        props = found[0]["properties"]
        if props.get("GEOID") != geoid:
            raise ExtractError(f"{path}: GEOID {props.get('GEOID')!r}, expected {geoid!r}")
        if not str(props.get("CLASSFP", "")).startswith("C"):
            raise ExtractError(f"{path}: class {props.get('CLASSFP')!r} is not incorporated")
        original = shapely.geometry.shape(found[0]["geometry"])
        geometry = simplify(original)
        features.append(
            {
                "type": "Feature",
                "id": jurisdiction,
                "properties": {
                    **{k: props[k] for k in KEPT},
                    "jurisdiction": jurisdiction,
                    "file": path,
                    "blob": blob,
                    "vertices_original": int(shapely.get_num_coordinates(original)),
                },
                "geometry": shapely.geometry.mapping(geometry),
            }
        )
    return {
        "type": "FeatureCollection",
        "source": {
            "repository": REPOSITORY,
            "commit": commit,
            "data": "US Census Bureau TIGER/Line 2019 places",
            "licence": "public domain (a work of the US government)",
            "tolerance_metres": TOLERANCE_METRES,
            "tolerance_degrees": TOLERANCE_DEGREES,
            "decimals": DECIMALS,
            "extracted_by": "python -m tools.extract_places",
        },
        "features": features,
    }


def extract_german(git_dir: Path, scratch: Path) -> dict[str, Any]:
    """The extract document for every entry of :data:`GERMAN`."""
    import fiona  # only this extract reads shapefiles
    from fiona.transform import transform_geom

    commit = _git(git_dir, "rev-parse", "HEAD").strip()
    blobs: dict[str, str] = {}
    for layer in sorted({layer for layer, _, _ in GERMAN.values()}):
        for ext in ("shp", "shx", "dbf", "prj", "cpg"):
            path = f"{GERMAN_FOLDER}/VG5000_{layer}.{ext}"
            done = subprocess.run(
                ["git", "--git-dir", str(git_dir), "show", f"HEAD:{path}"],
                capture_output=True,
                check=False,
            )
            if done.returncode != 0:
                raise ExtractError(f"git show HEAD:{path}: {done.stderr.decode().strip()}")
            (scratch / f"VG5000_{layer}.{ext}").write_bytes(done.stdout)
        blobs[layer] = _git(git_dir, "rev-parse", f"HEAD:{GERMAN_FOLDER}/VG5000_{layer}.shp")
    features = []
    for jurisdiction, (layer, ars, name) in sorted(GERMAN.items()):
        with fiona.open(scratch / f"VG5000_{layer}.shp") as source:
            crs = source.crs.to_string()
            # GF 4 and 9 are the land area; the state layer also holds its coastal waters (GF 9
            # first): the whole territory is what a state-wide service answers for.
            found = [
                f
                for f in source
                if f["properties"]["ARS"] == ars and f["properties"]["GF"] in (4, 9)
            ]
            if len(found) != 1:
                raise ExtractError(f"VG5000_{layer}: {len(found)} features with ARS {ars}")
            record = found[0]
            props = dict(record["properties"])
            if props["GEN"] != name:
                raise ExtractError(f"VG5000_{layer} ARS {ars} is {props['GEN']!r}, not {name!r}")
            wgs84 = transform_geom(crs, "EPSG:4326", record["geometry"])
        geometry = shapely.geometry.shape(
            {"type": wgs84["type"], "coordinates": _rounded(wgs84["coordinates"])}
        )
        if not geometry.is_valid:
            geometry = shapely.make_valid(geometry, method="structure", keep_collapsed=False)
        features.append(
            {
                "type": "Feature",
                "id": jurisdiction,
                "properties": {
                    **{k: props[k] for k in GERMAN_KEPT},
                    "jurisdiction": jurisdiction,
                    "file": f"{GERMAN_FOLDER}/VG5000_{layer}.shp",
                    "blob": blobs[layer].strip(),
                },
                "geometry": shapely.geometry.mapping(geometry),
            }
        )
    return {
        "type": "FeatureCollection",
        "source": {
            "repository": GERMAN_REPOSITORY,
            "commit": commit,
            "data": "BKG VG5000 administrative areas 1:5,000,000, as of 2021-01-01",
            "licence": "Data licence Germany - attribution - version 2.0 (dl-de/by-2.0); "
            "(c) GeoBasis-DE / BKG (2021), reprojected to WGS84 and rounded",
            "decimals": DECIMALS,
            "extracted_by": "python -m tools.extract_places de",
        },
        "features": features,
    }


def render(document: dict[str, Any]) -> str:
    """One feature per line, sorted keys, a final newline: stable diffs, stable bytes."""
    rows = [json.dumps(f, sort_keys=True, ensure_ascii=False) for f in document["features"]]
    source = json.dumps(document["source"], sort_keys=True, ensure_ascii=False)
    body = ",\n".join(rows)
    return f'{{"type": "FeatureCollection",\n "source": {source},\n "features": [\n{body}\n]}}\n'


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.extract_places", description="Extract US city limits."
    )
    parser.add_argument("which", choices=("us", "de"), help="which extract to refresh")
    parser.add_argument(
        "git_dir",
        type=Path,
        help=f"a clone (git directory) of {REPOSITORY} (us) or {GERMAN_REPOSITORY} (de)",
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    output: Path = args.output or (DEFAULT_OUTPUT if args.which == "us" else GERMAN_OUTPUT)
    try:
        if args.which == "us":
            document = extract(args.git_dir)
        else:
            with tempfile.TemporaryDirectory() as scratch:
                document = extract_german(args.git_dir, Path(scratch))
        text = render(document)
    except (ExtractError, OSError, ValueError, KeyError) as exc:
        print(f"extract failed: {exc}", file=sys.stderr)
        return 2
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    count = len(document["features"])
    print(f"wrote {output}: {count} boundaries, {len(text.encode())} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
