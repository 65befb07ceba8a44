"""A resolver whose boundaries changed patches its index (boundaries/patched.py) and answers
exactly as one built afresh on the same boundaries."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import shapely
from shapely import affinity
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

import boundaries.patched
from boundaries.index import BoundaryIndex
from boundaries.patched import PatchedIndex
from common.models import Endpoint, Jurisdiction
from resolver.core.decide import Resolver
from tests.test_index import beside_edges, near_border_points, random_points, voronoi

FRAME = (-10.0, 40.0, -5.0, 43.0)


def cell(id_: str, boundary: BaseGeometry | None) -> Jurisdiction:
    endpoint = Endpoint(url=f"https://{id_}.example/open311/v2/")
    return Jurisdiction(id=id_, name=id_, endpoints=(endpoint,)).with_boundary(boundary)


def assert_answers_as_built(resolver: Resolver, points: tuple[np.ndarray, np.ndarray]) -> None:
    """The resolver's index answers as an index built afresh on its boundaries: in batches (pairs
    sorted by point, then position), one point at a time, and in the decisions taken."""
    lats, longs = points
    built = BoundaryIndex([j.boundary for j in resolver.jurisdictions])
    expected = built.covering_many(lats, longs)
    found = resolver.index.covering_many(lats, longs)
    assert np.array_equal(found[0], expected[0]) and np.array_equal(found[1], expected[1])
    for i in range(len(lats)):
        lat, long = float(lats[i]), float(longs[i])
        assert resolver.index.covering(lat, long).tolist() == built.covering(lat, long).tolist()
    fresh = Resolver(resolver.jurisdictions)
    for i in range(0, len(lats), 97):
        lat, long = float(lats[i]), float(longs[i])
        assert resolver.resolve(lat, long).to_dict() == fresh.resolve(lat, long).to_dict()


def test_changes_patch_the_index_and_answers_stay_those_of_a_fresh_build() -> None:
    cells = voronoi(1_500, 9)
    first = Resolver([cell(f"c{k}", g) for k, g in enumerate(cells)])
    built = first.index
    assert isinstance(built, BoundaryIndex)

    # Round 1: boundaries shrunk, moved and dropped; entries removed (the positions after them
    # move up) and added, one overlapping others, one with no boundary.
    by_id = {j.id: j for j in first.jurisdictions}
    updated = [
        by_id["c3"].with_boundary(affinity.scale(cells[3], 0.5, 0.5)),
        by_id["c10"].with_boundary(affinity.translate(cells[10], 0.01, 0.0)),
        by_id["c11"].with_boundary(None),
        cell("new-1", box(-8.0, 41.0, -7.5, 41.5)),
        cell("new-2", None),
    ]
    second = first.replace(updated, removed=["c0", "c20", "c700"])
    assert isinstance(second.index, PatchedIndex) and second.index.base is built
    lats, longs = random_points(FRAME, 6_000)
    near = beside_edges([j.boundary for j in updated[:4]], (1e-9, 1e-6), 4, 400)
    border = near_border_points([j.boundary for j in updated[:4] if j.boundary is not None])
    points = (
        np.concatenate([lats, near[0], border[0]]),
        np.concatenate([longs, near[1], border[1]]),
    )
    assert_answers_as_built(second, points)

    # Round 2, on the patch: a changed boundary changed again, an added one removed, another
    # cell changed; the patch stays on the same built index.
    by_id = {j.id: j for j in second.jurisdictions}
    third = second.replace(
        [
            by_id["c3"].with_boundary(affinity.scale(cells[3], 1.2, 1.2)),
            by_id["c500"].with_boundary(box(-6.0, 42.0, -5.5, 42.5)),
        ],
        removed=["new-1", "c1"],
    )
    assert isinstance(third.index, PatchedIndex) and third.index.base is built
    assert_answers_as_built(third, points)

    # Details only: the index is shared, not patched.
    renamed = third.replace([dataclasses.replace(by_id["c42"], name="x")])
    assert renamed.index is third.index


def test_a_patch_beyond_the_limit_builds_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boundaries.patched, "PATCH_LIMIT", 3)
    cells = voronoi(300, 2)
    first = Resolver([cell(f"c{k}", g) for k, g in enumerate(cells)])
    moved = [
        j.with_boundary(affinity.translate(j.boundary, 0.001, 0.0)) for j in first.jurisdictions
    ]
    patched = first.replace(moved[:3])
    assert isinstance(patched.index, PatchedIndex)
    # One more change takes the patch past the limit: counted with the earlier patch's.
    again = patched.replace(moved[3:4])
    assert isinstance(again.index, BoundaryIndex)
    assert_answers_as_built(again, random_points(FRAME, 2_000))


def test_a_patch_with_removals_only_answers_without_a_second_index() -> None:
    cells = voronoi(200, 3)
    first = Resolver([cell(f"c{k}", g) for k, g in enumerate(cells)])
    second = first.replace([], removed=[f"c{k}" for k in range(0, 200, 3)])
    assert isinstance(second.index, PatchedIndex)
    assert second.index.fresh_geometries == ()
    assert_answers_as_built(second, random_points(FRAME, 3_000))
    # What a removed cell covered is nobody's now.
    centre = shapely.get_coordinates(cells[0].representative_point())[0]
    assert second.resolve(float(centre[1]), float(centre[0])).jurisdiction is None
