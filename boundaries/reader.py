"""Read boundary files (GeoJSON, ESRI Shapefile, GeoPackage) into valid WGS84 polygons.

Whatever the source CRS, geometries come out in WGS84 longitude/latitude (x = longitude), split at
the antimeridian and repaired, each with notes on what was done. A problem with the file as a whole
raises ``BoundaryFileError`` before anything is returned; a problem with one feature's geometry is
kept as a note on that feature (its geometry is then ``None``), never dropped silently.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from boundaries.geojson import clean_boundary
from boundaries.repair import REPAIRED, polygonal_parts
from common.errors import BoundaryFileError, InvalidBoundary

if TYPE_CHECKING:
    from fiona.crs import CRS

__all__ = ["BoundaryFeature", "BoundaryReport", "count_features", "read_boundaries"]


def _fiona() -> Any:
    """fiona (GDAL), imported when a file is read: it takes a tenth of a second to import, and
    ``geoweb serve`` never reads a boundary file."""
    import fiona
    import fiona.crs
    import fiona.transform

    return fiona


#: Target CRS; fiona uses the traditional GIS axis order, so x is the longitude.
WGS84 = "EPSG:4326"

_LISTED = 10  # how many offending ids or features an error message names


@dataclass(frozen=True)
class BoundaryFeature:
    """One feature of a boundary file: WGS84, valid (multi)polygon or ``None``, with notes."""

    id: str
    name: str
    geometry: BaseGeometry | None
    properties: dict[str, Any]
    notes: tuple[str, ...] = ()


@dataclass
class BoundaryReport:
    """What a boundary file holds, and what had to be done to it."""

    path: str
    source_crs: str
    features: list[BoundaryFeature]

    @property
    def repaired(self) -> list[BoundaryFeature]:
        """Features whose geometry was changed to make it usable (split, made valid, trimmed)."""
        return [f for f in self.features if any(REPAIRED in note for note in f.notes)]

    @property
    def without_geometry(self) -> list[BoundaryFeature]:
        """Features kept without a geometry; their notes say why."""
        return [f for f in self.features if f.geometry is None]


class _Row(NamedTuple):
    """One feature as read, before ids are checked and geometries reprojected."""

    id: Any
    name: Any
    properties: dict[str, Any]
    geometry: BaseGeometry | None
    problem: str | None


def count_features(path: str | os.PathLike[str], *, layer: str | None = None) -> int:
    """The number of features in the file's layer (for a progress bar)."""
    where = _existing(path)
    with _open(where, layer) as source:
        return len(source)


def read_boundaries(
    path: str | os.PathLike[str],
    *,
    id_field: str,
    name_field: str,
    layer: str | None = None,
    assume_crs: str | None = None,
    progress: Callable[[int], object] | None = None,
) -> BoundaryReport:
    """Read every feature of a boundary file as WGS84, split at ±180 and repaired.

    ``assume_crs`` (e.g. ``"EPSG:2227"``) is the CRS of a file that declares none, such as a
    shapefile without its ``.prj``; naming a CRS other than the one the file declares is an error.
    ``progress`` is called with ``1`` after each feature is read.
    """
    where = _existing(path)
    name = str(path)
    _check_shapefile_length(where, name)
    _check_no_nul(where, name)
    with _open(where, layer) as source:
        if source.schema.get("geometry") == "None":
            raise BoundaryFileError(name, "not a boundary file: it has no geometry column")
        crs = _source_crs(source, name, assume_crs)
        _check_fields(source, name, id_field, name_field)
        rows: list[_Row] = []
        try:
            for feature in source:
                properties = dict(feature.properties)
                geometry, problem = _shape(feature.geometry)
                rows.append(
                    _Row(
                        properties.get(id_field),
                        properties.get(name_field),
                        properties,
                        geometry,
                        problem,
                    )
                )
                if progress is not None:
                    progress(1)
        except (_fiona().errors.FionaError, OSError, ValueError) as exc:
            raise BoundaryFileError(name, f"cannot read feature #{len(rows) + 1}: {exc}") from exc

    ids = [_as_id(row.id) for row in rows]
    _check_ids(name, ids, [_as_text(row.name) for row in rows])
    geometries = [row.geometry for row in rows]
    found = Counter(g.geom_type for g in geometries if g is not None)
    if not any(polygonal_parts(g) for g in geometries if g is not None):
        kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(found.items())) or "no geometries"
        raise BoundaryFileError(name, f"not a boundary file: no polygon features (found {kinds})")
    if not _is_wgs84(crs):
        geometries = _reproject(geometries, crs, name)
    _check_range(name, ids, geometries, crs)

    features = []
    for row, feature_id, geometry in zip(rows, ids, geometries, strict=True):
        assert feature_id is not None
        notes: list[str] = []
        label = _as_text(row.name)
        if not label:
            label = feature_id
            notes.append(f"no name in {name_field!r}; the id is used")
        if row.problem is not None:
            notes.append(row.problem)
            clean = None
        else:
            clean = _clean(geometry, notes)
        features.append(BoundaryFeature(feature_id, label, clean, row.properties, tuple(notes)))
    return BoundaryReport(path=name, source_crs=crs.to_string(), features=features)


def _existing(path: str | os.PathLike[str]) -> Path:
    where = Path(path)
    if not where.exists():
        raise BoundaryFileError(str(path), "the file does not exist")
    return where


def _check_shapefile_length(where: Path, name: str) -> None:
    """Refuse a shapefile whose ``.shp`` is shorter than its header or its index (``.shx``)
    says: GDAL hands back the records cut off as features without geometry, and importing them
    would replace stored boundaries with none."""
    if where.suffix.lower() != ".shp" or not where.is_file():
        return
    size = where.stat().st_size
    with where.open("rb") as shp:
        header = shp.read(100)
    if len(header) < 100:
        raise BoundaryFileError(name, f"the .shp is truncated: {size} bytes, not even a header")
    declared = int.from_bytes(header[24:28], "big") * 2
    if declared > size:
        raise BoundaryFileError(
            name,
            f"the .shp is truncated: its header says {declared} bytes, the file has {size}",
        )
    index = next(
        (p for p in (where.with_suffix(".shx"), where.with_suffix(".SHX")) if p.is_file()), None
    )
    if index is None:
        return
    records = np.frombuffer(index.read_bytes()[100:], dtype=">i4")
    records = records[: len(records) // 2 * 2].reshape(-1, 2).astype(np.int64)
    ends = records[:, 0] * 2 + 8 + records[:, 1] * 2
    short = np.flatnonzero(ends > size)
    if short.size:
        raise BoundaryFileError(
            name,
            f"the .shp is truncated: {short.size} of {len(ends)} records end past its "
            f"{size} bytes (from record #{short[0] + 1}, as its index {index.name} says)",
        )


#: A JSON ``\u0000`` escape (not an escaped backslash followed by ``u0000``).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _check_no_nul(where: Path, name: str) -> None:
    """Refuse a GeoJSON file with a NUL character in it: GDAL reads text up to the first NUL,
    so a name would be cut short without a word."""
    if where.suffix.lower() not in (".geojson", ".json") or not where.is_file():
        return
    with where.open("rb") as file:
        tail = b""
        while chunk := file.read(16 * 1024 * 1024):
            data, tail = tail + chunk, chunk[-64:]  # an escape may straddle two chunks
            if b"\x00" in data or _JSON_NUL.search(data):
                break
        else:
            return
    raise BoundaryFileError(
        name,
        "a text value holds a NUL character (\\u0000), which would cut it short; "
        "remove it from the file",
    )


def _open(where: Path, layer: str | None) -> Any:
    """The opened fiona collection of the one layer meant."""
    name = str(where)
    try:
        layers = _fiona().listlayers(where)
    except (_fiona().errors.FionaError, OSError, ValueError) as exc:
        raise BoundaryFileError(name, f"not a boundary file: GDAL cannot read it ({exc})") from exc
    if layer is None and len(layers) > 1:
        raise BoundaryFileError(
            name, f"the file has {len(layers)} layers ({', '.join(layers)}); choose one"
        )
    if layer is not None and layer not in layers:
        raise BoundaryFileError(
            name, f"no layer {layer!r}; the layers are: {', '.join(layers) or 'none'}"
        )
    try:
        return _fiona().open(where, layer=layer)
    except (_fiona().errors.FionaError, OSError, ValueError) as exc:
        raise BoundaryFileError(name, f"not a boundary file: GDAL cannot read it ({exc})") from exc


def _source_crs(source: Any, name: str, assume_crs: str | None) -> CRS:
    declared: CRS | None = source.crs if source.crs and source.crs.wkt else None
    assumed: CRS | None = None
    if assume_crs is not None:
        try:
            assumed = _fiona().crs.CRS.from_user_input(assume_crs)
        except _fiona().errors.CRSError as exc:
            raise BoundaryFileError(name, f"unknown CRS {assume_crs!r}: {exc}") from exc
    if declared is None and assumed is None:
        raise BoundaryFileError(
            name,
            "the file does not say which CRS its coordinates are in (a shapefile without its "
            ".prj?); pass a CRS explicitly, e.g. --crs EPSG:4326",
        )
    if declared is not None and assumed is not None and not _same_crs(declared, assumed):
        raise BoundaryFileError(
            name,
            f"the file declares the CRS {declared.to_string()}, but {assume_crs} was given; "
            "give no CRS to use the file's own",
        )
    crs = declared if declared is not None else assumed
    assert crs is not None
    return crs


def _is_wgs84(crs: CRS) -> bool:
    return bool(crs.to_epsg() == 4326 or crs.to_string() == "OGC:CRS84")


def _same_crs(one: CRS, other: CRS) -> bool:
    if _is_wgs84(one) and _is_wgs84(other):
        return True
    code = one.to_epsg()
    return bool(one == other) or (code is not None and code == other.to_epsg())


def _check_fields(source: Any, name: str, id_field: str, name_field: str) -> None:
    fields = list(source.schema.get("properties", {}))
    for role, field in (("id", id_field), ("name", name_field)):
        if field not in fields:
            raise BoundaryFileError(
                name,
                f"no {role} field {field!r}; the fields are: {', '.join(fields) or 'none'}",
            )


def _shape(geometry: Any) -> tuple[BaseGeometry | None, str | None]:
    """A 2-D shapely geometry, or ``None`` and why not."""
    if geometry is None:
        return None, "no geometry"
    try:
        result = shapely.force_2d(shape(geometry))
    except (ValueError, TypeError, AttributeError, shapely.errors.ShapelyError) as exc:
        return None, f"unreadable geometry: {exc}"
    if result.is_empty:
        return None, "no geometry (empty)"
    if not polygonal_parts(result):
        return result, f"not a polygon: {result.geom_type}"
    return result, None


def _as_id(value: Any) -> str | None:
    """The id as text: strings as written (leading zeros kept), integral numbers without ``.0``."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def _as_text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _check_ids(name: str, ids: list[str | None], labels: list[str]) -> None:
    empty = [number for number, value in enumerate(ids, start=1) if value is None]
    if empty:
        shown = ", ".join(
            f"#{n} ({labels[n - 1]})" if labels[n - 1] else f"#{n}" for n in empty[:_LISTED]
        )
        more = f" and {len(empty) - _LISTED} more" if len(empty) > _LISTED else ""
        raise BoundaryFileError(name, f"{len(empty)} feature(s) have an empty id: {shown}{more}")
    where: dict[str | None, list[int]] = defaultdict(list)
    for number, value in enumerate(ids, start=1):
        where[value].append(number)
    repeated = [(value, numbers) for value, numbers in where.items() if len(numbers) > 1]
    if repeated:
        shown = "; ".join(
            f"{value!r} in {_numbers(numbers)}" for value, numbers in repeated[:_LISTED]
        )
        more = f"; and {len(repeated) - _LISTED} more" if len(repeated) > _LISTED else ""
        raise BoundaryFileError(name, f"{len(repeated)} id(s) are repeated: {shown}{more}")


def _numbers(numbers: list[int]) -> str:
    shown = ", ".join(f"#{n}" for n in numbers[:_LISTED])
    return f"features {shown}" + (
        f" and {len(numbers) - _LISTED} more" if len(numbers) > _LISTED else ""
    )


def _reproject(
    geometries: list[BaseGeometry | None], crs: CRS, name: str
) -> list[BaseGeometry | None]:
    """All geometries to WGS84 in one transformation (one PROJ pipeline for the whole file)."""
    present = [i for i, g in enumerate(geometries) if g is not None]
    array = np.empty(len(present), dtype=object)
    array[:] = [geometries[i] for i in present]

    def to_wgs84(coords: NDArray[np.float64]) -> NDArray[np.float64]:
        xs, ys = _fiona().transform.transform(
            crs, WGS84, coords[:, 0].tolist(), coords[:, 1].tolist()
        )
        return np.column_stack((np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)))

    try:
        moved = shapely.transform(array, to_wgs84)
    except (_fiona().errors.FionaError, ValueError) as exc:
        raise BoundaryFileError(name, f"cannot reproject from {crs.to_string()}: {exc}") from exc
    result = list(geometries)
    for i, geometry in zip(present, moved, strict=True):
        result[i] = geometry
    return result


def _check_range(
    name: str, ids: list[str | None], geometries: list[BaseGeometry | None], crs: CRS
) -> None:
    """Coordinates that are not longitudes and latitudes mean the CRS is wrong: refuse the file."""
    for number, (feature_id, geometry) in enumerate(zip(ids, geometries, strict=True), start=1):
        if geometry is None:
            continue
        coords = shapely.get_coordinates(geometry)
        if not len(coords):
            continue
        with np.errstate(invalid="ignore"):
            wrong = (
                ~np.isfinite(coords).all(axis=1)
                | (np.abs(coords[:, 1]) > 90.0 + 1e-9)
                | (np.abs(coords[:, 0]) > 540.0)
            )
        if wrong.any():
            example = coords[wrong][0]
            raise BoundaryFileError(
                name,
                f"feature #{number} (id {feature_id!r}) is not on the globe in {crs.to_string()}: "
                f"it comes out at long {example[0]:.6g}, lat {example[1]:.6g}; "
                f"is {crs.to_string()} really the CRS of this file?",
            )


def _clean(geometry: BaseGeometry | None, notes: list[str]) -> BaseGeometry | None:
    """The feature's boundary by the rules every boundary path applies (``boundaries.geojson``:
    split at the antimeridian, repaired); notes say what was done, or why there is none."""
    if geometry is None:
        return None
    coordinates = shapely.get_coordinates(geometry)
    if len(coordinates) and (np.abs(coordinates[:, 1]) > 90.0).any():
        # Reprojection rounds a pole to a hair past it (_check_range allows that much).
        geometry = shapely.transform(
            geometry, lambda c: np.column_stack((c[:, 0], np.clip(c[:, 1], -90.0, 90.0)))
        )
    try:
        repaired, repairs = clean_boundary(geometry)
    except InvalidBoundary as error:
        notes.append(error.detail)
        return None
    notes.extend(repairs)
    return repaired
