"""An on-disk snapshot of the built boundary index, so a server starts without rebuilding it.

Building the index (subdivision, R-tree, the grid of interior cells) is most of a start after
the store is read; loading it back from a snapshot takes a few hundredths of that. A snapshot
names what it was built from: every jurisdiction's id and boundary generation, in order (the
index holds positions), and a digest of ``boundaries/index.py``, whose structures it holds. One
that names anything else (or is of another format) is refused and replaced; one that cannot be
read is rebuilt and replaced.

A snapshot of other boundaries by the same code is still of use when few of them changed: the
index is loaded as built and patched with the changes (:mod:`boundaries.patched`), as a running
server patches it, so a restart after a day of registrations does not build a million boundaries
again. For that, the snapshot keeps the names of what it was built from.

It holds the index's shared state (:meth:`BoundaryIndex.shared_state`): a boundary that is its own
piece is named by position, not stored, and the loaded index holds the jurisdictions' own
boundary objects, so a large registry is not held twice in memory.

The arrays (most of a large index: 200 MB at a million jurisdictions) are kept out of the pickle,
each at an aligned offset after it, and loaded by mapping the file: nothing is read or copied up
front (reading and unpickling them took over a second at a million), the pages come from the
page cache when first used, and the workers of one server share them.

The snapshot of an SQLite store lies beside it (``<store>.index``); that of a database URL in the
per-user cache directory. It holds a pickle: it is trusted as much as the store beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import pickle
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
import shapely
from shapely.geometry.base import BaseGeometry

import boundaries.index
from boundaries.index import BoundaryIndex
from boundaries.patched import PatchedIndex, moves, patch_index, patchable
from common.models import Fallback, Jurisdiction
from resolver.core.decide import Resolver

log = logging.getLogger(__name__)

# 4: the names of what it was built from kept; 3: the arrays out of band, mapped; 2: the shared
# state, all in the pickle; 1: the index pickled
_MAGIC = b"GEOWEB-INDEX-SNAPSHOT 4\n"
#: Where each out-of-band array starts: a multiple of this, from the start of the file (the map
#: is page-aligned), so that every array is aligned for its dtype.
_ALIGN = 64


@cache
def _code_digest() -> str:
    source = Path(boundaries.index.__file__).read_bytes()
    return hashlib.sha256(source).hexdigest()[:16]


def snapshot_path(db: str) -> Path:
    """Where the snapshot of the store ``db`` (a path or a database URL) is kept."""
    if "://" not in db:
        return Path(db).with_name(Path(db).name + ".index")
    digest = hashlib.sha256(db.encode()).hexdigest()[:16]
    return platformdirs.user_cache_path("geoweb") / f"index-{digest}.snapshot"


def names(jurisdictions: Sequence[Jurisdiction]) -> list[str]:
    """What an index is built from, one line per position: its id and boundary generation."""
    lines = []
    for j in jurisdictions:
        if j.boundary is None:
            named = "-"
        elif j.boundary_generation:
            named = j.boundary_generation
        else:  # a boundary nobody named: its own bytes
            named = hashlib.sha256(j.boundary.wkb).hexdigest()
        lines.append(f"{j.id}\0{named}\n")
    return lines


def generation(jurisdictions: Sequence[Jurisdiction]) -> str:
    """The digest of :func:`names`: the key of a snapshot."""
    return _digest(names(jurisdictions))


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("".join(lines).encode()).hexdigest()[:32]


def _header(generation: str) -> bytes:
    return _MAGIC + f"{generation} {_code_digest()}\n".encode("ascii")


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def load(
    path: Path, generation: str, geometries: Sequence[BaseGeometry | None]
) -> BoundaryIndex | None:
    """The index in the snapshot at ``path`` if it was built from ``generation`` by this code;
    else ``None`` (missing, stale or unreadable: said in the log). ``geometries`` are the
    boundaries of that generation, by position: the index holds them."""
    opened = _open(path)
    if opened is None:
        return None
    built_from, state = opened
    if built_from != generation:
        log.info("index snapshot %s is of other boundaries: building the index", path)
        return None
    return _restore(path, state, geometries)


def load_for(
    path: Path, jurisdictions: Sequence[Jurisdiction]
) -> BoundaryIndex | PatchedIndex | None:
    """The index of these jurisdictions from the snapshot at ``path``: as saved when it was built
    from the same boundaries; patched when it was built from boundaries of which at most
    :func:`~boundaries.patched.patchable` changed (or came or went) since; else ``None``."""
    opened = _open(path)
    if opened is None:
        return None
    built_from, state = opened
    now = names(jurisdictions)
    if built_from == _digest(now):
        return _restore(path, state, [j.boundary for j in jurisdictions])
    raw = state.get("built_from")
    try:
        if not isinstance(raw, np.ndarray):
            raise TypeError("no names of what it was built from")
        then = [f"{line}\n" for line in raw.tobytes().decode().split("\n")[:-1]]
    except (TypeError, UnicodeDecodeError) as exc:
        log.warning("index snapshot %s is damaged (%s): building the index", path, exc)
        return None
    kept, changed = moves(_keys(then), _keys(now))
    if not patchable(len(changed), len(jurisdictions)):
        log.info("index snapshot %s is of boundaries too far from these: building the index", path)
        return None
    # The boundaries the snapshot was built from, where they are still the same.
    geometries: list[BaseGeometry | None] = [_GONE] * len(then)
    for p in np.flatnonzero(kept >= 0).tolist():
        geometries[p] = jurisdictions[kept[p]].boundary
    base = _restore(path, state, geometries)
    if base is None:
        return None
    found = [jurisdictions[q].boundary for q in changed]
    index = patch_index(base, kept, changed, found, len(jurisdictions))
    if index is not None:
        log.info(
            "index snapshot %s patched: %d boundaries changed or came, %d went or changed",
            path,
            len(changed),
            int((kept < 0).sum()),
        )
    return index


def _keys(lines: list[str]) -> list[tuple[str, str | None]]:
    """(id, the whole line) of each of :func:`names`: the line names the boundary."""
    return [(line.partition("\0")[0], line) for line in lines]


#: What stands in the built index for a boundary that changed or went since: never answered
#: (the patch leaves its position out), so anything that is a geometry will do.
_GONE = shapely.Polygon()


def _open(path: Path) -> tuple[str, dict[str, Any]] | None:
    """The generation a snapshot was built from and its state, when it was written by this code;
    else ``None`` (said in the log)."""
    try:
        with path.open("rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        return None
    except ValueError:  # an empty file cannot be mapped
        log.warning("index snapshot %s is empty: building the index", path)
        return None
    except OSError as exc:
        log.warning("index snapshot %s cannot be read (%s): building the index", path, exc)
        return None
    end = mapped.find(b"\n", len(_MAGIC))
    made_by = mapped[len(_MAGIC) : end].split() if end > 0 else []
    if (
        mapped[: len(_MAGIC)] != _MAGIC
        or len(made_by) != 2
        or made_by[1] != _code_digest().encode()
    ):
        log.info("index snapshot %s is of another format or code: building the index", path)
        return None
    try:
        state = _state(mapped, end + 1)
    except Exception as exc:  # a torn or damaged file: whatever unpickling says
        log.warning("index snapshot %s is damaged (%s): building the index", path, exc)
        return None
    if not isinstance(state, dict) or not isinstance(state.get("index"), dict):
        log.warning("index snapshot %s holds no index: building the index", path)
        return None
    return made_by[0].decode("ascii", "replace"), state


def _restore(
    path: Path, state: dict[str, Any], geometries: Sequence[BaseGeometry | None]
) -> BoundaryIndex | None:
    try:
        return BoundaryIndex.from_shared_state(state["index"], geometries)
    except Exception as exc:  # pieces or arrays that do not fit: damaged all the same
        log.warning("index snapshot %s is damaged (%s): building the index", path, exc)
        return None


def _state(mapped: mmap.mmap, start: int) -> object:
    """The pickle after the header, its arrays read-only views of the map. The line after the
    header gives the pickle's size and each array's, in bytes."""
    end = mapped.find(b"\n", start)
    if end < 0:
        raise ValueError("no layout line")
    stream_size, *sizes = (int(n) for n in mapped[start:end].split())
    if stream_size < 0 or any(size < 0 for size in sizes):
        raise ValueError("a negative size in the layout line")
    view = memoryview(mapped)
    position = end + 1 + stream_size
    stream = view[end + 1 : position]
    buffers = []
    for size in sizes:
        position = _aligned(position)
        buffers.append(view[position : position + size])
        position += size
    if position != len(mapped):
        raise ValueError(f"{len(mapped)} bytes where the layout says {position}")
    return pickle.loads(stream, buffers=buffers)


def save(path: Path, jurisdictions: Sequence[Jurisdiction], index: BoundaryIndex) -> None:
    """Write the snapshot of the index built from these jurisdictions atomically (a reader sees
    the old file or the new one, whole); a store whose directory cannot be written to goes
    without."""
    lines = names(jurisdictions)
    generation = _digest(lines)
    state = {
        "index": index.shared_state(),
        # Out of band, as the arrays: read only when the boundaries are others.
        "built_from": np.frombuffer("".join(lines).encode(), dtype=np.uint8),
    }
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(state, protocol=5, buffer_callback=buffers.append)
    arrays = [buffer.raw() for buffer in buffers]
    layout = " ".join(str(n) for n in (len(stream), *(a.nbytes for a in arrays)))
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as f:
            f.write(_header(generation))
            f.write(f"{layout}\n".encode("ascii"))
            f.write(stream)
            for array in arrays:
                f.write(bytes(_aligned(f.tell()) - f.tell()))
                f.write(array)
        partial.replace(path)
    except OSError as exc:
        log.warning("index snapshot %s not written: %s", path, exc)
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def build_resolver(
    jurisdictions: Sequence[Jurisdiction], fallback: Fallback | None, path: Path | None
) -> Resolver:
    """A resolver over ``jurisdictions``, its index from the snapshot at ``path`` when that was
    built from the same boundaries, else built and written there (``path=None``: no snapshot)."""
    if path is None:
        return Resolver(jurisdictions, fallback=fallback)
    found = load_for(path, jurisdictions)
    if found is not None:
        return Resolver(jurisdictions, fallback=fallback, _index=found)
    index = BoundaryIndex([j.boundary for j in jurisdictions])
    save(path, jurisdictions, index)
    return Resolver(jurisdictions, fallback=fallback, _index=index)


__all__ = ["build_resolver", "generation", "load", "load_for", "names", "save", "snapshot_path"]
