"""The on-disk snapshot of the boundary index: used while the boundaries are the same, refused
when they are not (or when it was written by other index code), rebuilt when damaged."""

from __future__ import annotations

import hashlib
import logging
import mmap
import pickle
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from boundaries import patched
from boundaries.index import BoundaryIndex
from boundaries.patched import PatchedIndex
from common.models import Jurisdiction
from resolver import index_snapshot
from resolver.index_snapshot import build_resolver, generation, load, load_for, snapshot_path
from tests.test_patched_index import assert_answers_as_built


def _grid_of_boxes(n: int = 12, shrink: float = 0.0) -> list[Jurisdiction]:
    """n x n unit squares sharing borders (enough pieces for a grid of interior cells)."""
    out = []
    for i in range(n):
        for j in range(n):
            square = box(i, j, i + 1 - (shrink if (i, j) == (0, 0) else 0.0), j + 1)
            out.append(Jurisdiction(id=f"b{i:02d}{j:02d}", name=f"B {i} {j}").with_boundary(square))
    return out


def boundaries(entries: list[Jurisdiction]) -> list[BaseGeometry | None]:
    return [j.boundary for j in entries]


def _points(seed: int = 7, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lats = rng.uniform(-0.5, 12.5, n)
    longs = rng.uniform(-0.5, 12.5, n)
    # and points on the shared borders and corners, where the exact path answers
    lats[: n // 4] = np.round(lats[: n // 4])
    return lats, longs


def test_a_snapshot_is_written_then_used_with_the_same_answers(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite.index"
    entries = _grid_of_boxes()
    built = build_resolver(entries, None, path)
    assert path.exists()
    assert load(path, generation(entries), boundaries(entries)) is not None
    loaded = build_resolver(entries, None, path)
    assert loaded.index is not built.index and loaded.index.grid == built.index.grid
    lats, longs = _points()
    for a, b in zip(
        built.index.covering_many(lats, longs), loaded.index.covering_many(lats, longs), strict=True
    ):
        assert np.array_equal(a, b)
    for lat, long in zip(lats[:500].tolist(), longs[:500].tolist(), strict=True):
        assert built.resolve(lat, long) == loaded.resolve(lat, long)


def test_a_snapshot_of_other_boundaries_is_refused_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(patched, "PATCH_LIMIT", 0)  # no patch (the test below)
    path = tmp_path / "s.sqlite.index"
    old = _grid_of_boxes()
    build_resolver(old, None, path)
    new = _grid_of_boxes(shrink=0.5)  # one boundary changed: another generation
    assert generation(new) != generation(old)
    with caplog.at_level(logging.INFO, logger=index_snapshot.__name__):
        assert load(path, generation(new), boundaries(new)) is None
        assert load_for(path, new) is None
    assert "other boundaries" in caplog.text and "too far" in caplog.text
    resolver = build_resolver(new, None, path)
    # the stale index would say the changed square still covers (0.75, 0.5)
    assert resolver.resolve(0.5, 0.75).jurisdiction is None
    assert load(path, generation(new), boundaries(new)) is not None  # replaced by the new one
    assert load(path, generation(old), boundaries(old)) is None


def test_the_loaded_index_holds_the_jurisdictions_own_boundaries(tmp_path: Path) -> None:
    # Each square is its own piece: the snapshot names it by position instead of storing it, and
    # the loaded index holds the very objects it was given (a large registry is not held twice).
    path = tmp_path / "s.sqlite.index"
    entries = _grid_of_boxes()
    build_resolver(entries, None, path)
    fresh = [j.with_boundary(box(*j.boundary.bounds)) for j in entries]  # equal, not the same
    index = load(path, generation(entries), boundaries(fresh))
    assert index is not None and index.grid is not None
    given = {id(j.boundary) for j in fresh}
    assert {id(p) for p in index._pieces.tolist()} == given
    lats, longs = _points(seed=5)
    expected = BoundaryIndex(boundaries(entries)).covering_many(lats, longs)
    for a, b in zip(index.covering_many(lats, longs), expected, strict=True):
        assert np.array_equal(a, b)


def test_a_snapshot_of_a_few_boundaries_ago_is_patched_not_built_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A restart after a few registry changes: the snapshot is loaded as built and patched with
    # them (as the server patched its index while running), and it is kept as it is.
    path = tmp_path / "s.sqlite.index"
    old = _grid_of_boxes()
    build_resolver(old, None, path)
    written = path.read_bytes()
    new = _grid_of_boxes(shrink=0.5)  # (0, 0) shrunk
    new = [j for j in new if j.id != "b0505"]  # one gone
    new.append(Jurisdiction(id="a-new", name="New").with_boundary(box(3.5, 3.5, 4.5, 4.5)))
    new.append(Jurisdiction(id="b-none", name="No boundary"))
    with caplog.at_level(logging.INFO, logger=index_snapshot.__name__):
        restarted = build_resolver(new, None, path)
    assert isinstance(restarted.index, PatchedIndex)
    assert "patched: 3 boundaries changed or came, 2 went or changed" in caplog.text
    assert path.read_bytes() == written
    assert_answers_as_built(restarted, _points(seed=5))
    assert restarted.resolve(0.5, 0.75).jurisdiction is None  # the shrunk square's old part
    assert len(new) - 2 in restarted.index.covering(4.0, 4.0).tolist()  # the new one covers


def test_a_snapshot_in_another_order_is_patched_in_order(tmp_path: Path) -> None:
    # The positions kept are mapped to where they are now; answers stay ascending.
    path = tmp_path / "s.sqlite.index"
    old = _grid_of_boxes()
    build_resolver(old, None, path)
    new = [*old[72:], *old[:72]]
    new[0] = new[0].with_boundary(box(6.0, 0.0, 6.5, 1.0))
    restarted = build_resolver(new, None, path)
    assert isinstance(restarted.index, PatchedIndex)
    lats, longs = _points(seed=9)
    longs[-400:] = 6.0  # on the border of the squares now first and those now last
    assert_answers_as_built(restarted, (lats, longs))


def test_a_snapshot_of_the_previous_format_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Format 3 held the index's state alone, without the names of what it was built from; the
    # same boundaries and code in that format are refused by the header, and the snapshot is
    # rebuilt in the new one.
    path = tmp_path / "s.sqlite.index"
    entries = _grid_of_boxes()
    built = build_resolver(entries, None, path)
    assert path.read_bytes().startswith(index_snapshot._MAGIC)
    assert index_snapshot._MAGIC.endswith(b" 4\n")
    made_by = path.read_bytes().split(b"\n")[1]  # generation and code digest
    state = pickle.dumps(built.index.shared_state(), protocol=pickle.HIGHEST_PROTOCOL)
    path.write_bytes(b"GEOWEB-INDEX-SNAPSHOT 3\n" + made_by + b"\n" + state)
    with caplog.at_level(logging.INFO, logger=index_snapshot.__name__):
        assert load(path, generation(entries), boundaries(entries)) is None
        assert load_for(path, entries) is None
    assert "another format or code" in caplog.text
    build_resolver(entries, None, path)
    assert path.read_bytes().startswith(index_snapshot._MAGIC)


def test_the_loaded_arrays_are_read_only_views_of_the_file(tmp_path: Path) -> None:
    # Nothing is copied at loading: the index's arrays are the mapped file's pages, which nothing
    # may write to, and they answer as the index that was saved.
    path = tmp_path / "s.sqlite.index"
    entries = _grid_of_boxes()
    built = build_resolver(entries, None, path)
    index = load(path, generation(entries), boundaries(entries))
    assert index is not None and index._grid is not None
    for array in (index._owners, index._grid.top, index._grid.members):
        assert not array.flags.writeable
        base = array
        while isinstance(base, np.ndarray):
            base = base.base
        assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)
        assert array.ctypes.data % 64 == 0  # aligned at its offset in the file
    lats, longs = _points(seed=11)
    for a, b in zip(
        index.covering_many(lats, longs), built.index.covering_many(lats, longs), strict=True
    ):
        assert np.array_equal(a, b)
    path.unlink()  # as a rebuild elsewhere replaces the file: the mapped pages stay readable
    assert np.array_equal(
        index.covering_many(lats, longs)[1], built.index.covering_many(lats, longs)[1]
    )


@pytest.mark.parametrize("layout", [b"12 -4\n", b"1 2 3\n", b"no sizes here\n"])
def test_a_snapshot_whose_layout_does_not_fit_is_refused(
    tmp_path: Path, layout: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.sqlite.index"
    entries = _grid_of_boxes()
    build_resolver(entries, None, path)
    data = path.read_bytes()
    header_end = data.index(b"\n", len(index_snapshot._MAGIC)) + 1
    rest = data[data.index(b"\n", header_end) + 1 :]
    path.write_bytes(data[:header_end] + layout + rest)
    with caplog.at_level(logging.INFO, logger=index_snapshot.__name__):
        assert load(path, generation(entries), boundaries(entries)) is None
    assert "damaged" in caplog.text


def test_a_snapshot_that_does_not_fit_its_boundaries_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A header that matches over a state of other boundaries (as a file spliced by hand would
    # be): the state does not fit the geometries it names, so it is not used.
    path = tmp_path / "s.sqlite.index"
    entries = _grid_of_boxes()
    small = _grid_of_boxes(4)
    build_resolver(small, None, path)
    other = path.read_bytes()
    index_snapshot.save(path, entries, BoundaryIndex(boundaries(entries)))
    data = path.read_bytes()
    header = data[: data.index(b"\n", len(index_snapshot._MAGIC)) + 1]
    path.write_bytes(header + other[other.index(b"\n", len(index_snapshot._MAGIC)) + 1 :])
    with caplog.at_level(logging.INFO, logger=index_snapshot.__name__):
        assert load(path, generation(entries), boundaries(entries)) is None
        resolver = build_resolver(entries, None, path)
    assert "damaged" in caplog.text
    assert resolver.resolve(11.5, 11.5).jurisdiction is not None  # the 12 x 12 squares
    assert load(path, generation(entries), boundaries(entries)) is not None


def test_the_order_of_the_jurisdictions_is_part_of_the_key(tmp_path: Path) -> None:
    entries = _grid_of_boxes()
    assert generation(entries) != generation(entries[::-1])


def test_the_key_names_each_position_by_id_and_boundary() -> None:
    # One line per position: its id and its boundary's generation, ``-`` for none, and for a
    # boundary nobody named the hash of its own bytes.
    named = _grid_of_boxes(2)
    unnamed = Jurisdiction(id="u", name="U", boundary=box(5, 5, 6, 6))
    entries = [*named, Jurisdiction(id="none", name="None"), unnamed]
    lines = [f"{j.id}\0{j.boundary_generation}\n" for j in named]
    lines += ["none\0-\n", f"u\0{hashlib.sha256(box(5, 5, 6, 6).wkb).hexdigest()}\n"]
    expected = hashlib.sha256("".join(lines).encode()).hexdigest()[:32]
    assert generation(entries) == expected


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_snapshot_is_rebuilt(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.sqlite.index"
    entries = _grid_of_boxes()
    expected = build_resolver(entries, None, None)
    build_resolver(entries, None, path)
    data = path.read_bytes()
    header = data[: data.index(b"\n", len(index_snapshot._MAGIC)) + 1]
    path.write_bytes(
        {
            "truncated": data[: len(data) // 2],
            "garbage": header + b"\x80\x05not a pickle at all",
            "empty": b"",
        }[damage]
    )
    with caplog.at_level(logging.INFO, logger=index_snapshot.__name__):
        resolver = build_resolver(entries, None, path)
    assert "building the index" in caplog.text
    lats, longs = _points(seed=3)
    assert np.array_equal(
        resolver.index.covering_many(lats, longs)[1], expected.index.covering_many(lats, longs)[1]
    )
    assert load(path, generation(entries), boundaries(entries)) is not None  # whole again


def test_where_snapshots_are_kept(tmp_path: Path) -> None:
    assert snapshot_path(str(tmp_path / "g.sqlite")) == tmp_path / "g.sqlite.index"
    url = snapshot_path("postgresql://u@127.0.0.1:5432/geoweb")
    assert url.name.startswith("index-") and url.suffix == ".snapshot"
    assert url != snapshot_path("postgresql://u@127.0.0.1:5432/other")


def test_an_unwritable_place_goes_without(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    entries = _grid_of_boxes(4)
    resolver = build_resolver(entries, None, blocked / "s.index")
    assert resolver.resolve(0.5, 0.5).jurisdiction is not None
