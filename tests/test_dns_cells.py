"""The geographic cells: a covering jurisdiction is never missed (border points included), and a
zone of a million cells streams in bounded memory or is refused before anything is written."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import shapely
from child import child_output
from click.testing import CliRunner

from boundaries.cells import (
    CellScheme,
    cell_box,
    cell_from_name,
    cell_name,
    leaves,
    point_cell,
    query_name,
)
from common.models import Jurisdiction
from discovery.zone import ZoneOptions, ZoneTooLarge, write_zone
from resolver.cli.main import main
from resolver.core.decide import Resolver
from resolver.store import Store


@pytest.mark.parametrize(
    ("lat", "long", "cell"),
    [
        (37.7793, -122.4193, "9q8y"),  # San Francisco City Hall
        (0.0, 0.0, "s000"),  # on the edges of four cells: the north-eastern one
        (90.0, 180.0, "zzzz"),  # the corner of the world belongs to the last cell
        (-90.0, -180.0, "0000"),
    ],
)
def test_point_cells_are_geohashes(lat: float, long: float, cell: str) -> None:
    assert point_cell(lat, long, 4) == cell
    west, south, east, north = cell_box(cell)
    assert west <= long <= east and south <= lat <= north


def test_cell_names_have_one_label_per_level() -> None:
    name = cell_name("9q8y", "registry.example")
    assert name == "y.8.q.9._cells.registry.example."
    assert cell_from_name(name, "registry.example.") == "9q8y"
    assert cell_from_name("*." + name, "registry.example") == "9q8y"
    assert cell_from_name("y.8.q.9._cells.other.example.", "registry.example") is None
    assert query_name(37.7793, -122.4193, "registry.example") == name


def _leaf_table(resolver: Resolver, scheme: CellScheme) -> dict[str, tuple[int, ...]]:
    return {
        leaf.cell: leaf.members
        for leaf in leaves([j.boundary for j in resolver.jurisdictions], scheme)
    }


def _candidates(table: dict[str, tuple[int, ...]], lat: float, long: float, depth: int) -> set[int]:
    """What the DNS wildcard rule answers: the deepest published ancestor of the point's cell."""
    cell = point_cell(lat, long, depth)
    for size in range(depth, 0, -1):
        if cell[:size] in table:
            return set(table[cell[:size]])
    return set()


def test_a_covering_county_is_never_missed_even_on_borders(counties_db: Path) -> None:
    with Store(counties_db) as store:
        resolver = Resolver(store.jurisdictions())
    scheme = CellScheme()
    table = _leaf_table(resolver, scheme)
    rng = np.random.default_rng(7)
    lats = rng.uniform(18, 72, 20_000)
    longs = rng.uniform(-180, -65, 20_000)
    # every county's boundary vertices: points on a border, covered by both sides
    vertices = shapely.get_coordinates(
        shapely.get_exterior_ring(shapely.get_parts([j.boundary for j in resolver.jurisdictions]))
    )[::7]
    lats = np.concatenate([lats, vertices[:, 1]])
    longs = np.concatenate([longs, vertices[:, 0]])
    points, positions = resolver.index.covering_many(lats, longs)
    covering: dict[int, set[int]] = {}
    for point, position in zip(points.tolist(), positions.tolist(), strict=True):
        covering.setdefault(point, set()).add(position)
    false = []
    for point, truth in covering.items():
        found = _candidates(table, float(lats[point]), float(longs[point]), scheme.max_depth)
        assert truth <= found, (lats[point], longs[point])
        false.append(len(found - truth))
    assert len(covering) > 10_000
    assert np.mean(false) < 2.0  # measured: 1.3 for uniform points on land


MILLION = """
import os, sys
from shapely.geometry import box
from bench.memory import peak_rss_kib
from boundaries.cells import CellScheme
from discovery.zone import ZoneOptions, write_zone
from common.models import Jurisdiction

world = Jurisdiction(
    "world", "World", domain="world.example", discovery_url="https://world.example/d.json"
).with_boundary(box(-180, -90, 180, 90))
# every cell forced down to level 4: 32**4 = 1,048,576 cells, no size limit
options = ZoneOptions(
    "registry.example", scheme=CellScheme(max_depth=4, min_depth=4), max_cells=None,
    nameserver_addresses=("192.0.2.53",),
)
before = peak_rss_kib()  # not ru_maxrss: it starts at the peak of the process that forked this one
with open(os.devnull, "w") as out:
    summary = write_zone(out, [world], options)
after = peak_rss_kib()
print(summary.cells, summary.records, after - before)
"""


def test_a_million_cell_zone_streams_in_bounded_memory() -> None:
    # in a process of its own, so that its peak memory is its own
    cells, records, growth_kib = map(int, child_output(MILLION).split())
    # SOA, NS, the NS's address, the cell pointer and marker
    assert cells == 32**4 and records == cells + 5
    # about 50 MB of zone text went through; the process grew by less than 16 MiB
    assert growth_kib < 16 * 1024, f"peak memory grew by {growth_kib} KiB"


def test_a_zone_over_max_cells_is_refused_before_anything_is_written(counties_db: Path) -> None:
    with Store(counties_db) as store:
        counties = [
            Jurisdiction(
                j.id, j.name, domain=f"{j.id}.counties.test",
                discovery_url=f"https://{j.id}.counties.test/d.json",
            ).with_boundary(j.boundary)
            for j in store.jurisdictions()[:300]
        ]  # fmt: skip
    out = io.StringIO()
    with pytest.raises(ZoneTooLarge, match="more than 100 cells"):
        write_zone(out, counties, ZoneOptions("counties.test", max_cells=100))
    assert out.getvalue() == ""
    result = CliRunner().invoke(
        main, ["zone", "export", "--origin", "counties.test", "--db", str(counties_db),
               "--no-embedded", "--max-cells", "10", "--nameserver-address", "192.0.2.53"]
    )  # fmt: skip
    # the counties store has no domains: nothing to publish, so nothing is too large; a zone
    # that publishes nothing is a failure, with every skip counted
    assert result.exit_code == 1, result.output
    assert "3231 skipped" in result.output and "and 3181 more skipped" in result.output
    assert "0 of 3231 jurisdictions have both" in result.output
