"""An on-disk snapshot of the built boundary index, so a server starts without rebuilding it.

Building the index (subdivision, R-tree, the grid of interior cells) is most of a start after
the store is read; loading it back from a snapshot takes a few hundredths of that. A snapshot
names what it was built from: every jurisdiction's id and boundary generation, in order (the
index holds positions), and a digest of ``boundaries/index.py``, whose structures it holds. One
that names anything else (or is of another format) is refused and replaced; one that cannot be
read is rebuilt and replaced.

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

import platformdirs
from shapely.geometry.base import BaseGeometry

import boundaries.index
from boundaries.index import BoundaryIndex
from common.models import Fallback, Jurisdiction
from resolver.core.decide import Resolver

log = logging.getLogger(__name__)

# 3: the arrays out of band, mapped; 2: the shared state, all in the pickle; 1: the index pickled
_MAGIC = b"GEOWEB-INDEX-SNAPSHOT 3\n"
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


def generation(jurisdictions: Sequence[Jurisdiction]) -> str:
    """What an index is built from: each position's id and boundary generation."""
    digest = hashlib.sha256()
    for j in jurisdictions:
        if j.boundary is None:
            named = "-"
        elif j.boundary_generation:
            named = j.boundary_generation
        else:  # a boundary nobody named: its own bytes
            named = hashlib.sha256(j.boundary.wkb).hexdigest()
        digest.update(f"{j.id}\0{named}\n".encode())
    return digest.hexdigest()[:32]


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
    header = _header(generation)
    if mapped[: len(header)] != header:
        log.info("index snapshot %s is of other boundaries or code: building the index", path)
        return None
    try:
        state = _state(mapped, len(header))
    except Exception as exc:  # a torn or damaged file: whatever unpickling says
        log.warning("index snapshot %s is damaged (%s): building the index", path, exc)
        return None
    if not isinstance(state, dict):
        log.warning("index snapshot %s holds no index: building the index", path)
        return None
    try:
        return BoundaryIndex.from_shared_state(state, geometries)
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


def save(path: Path, generation: str, index: BoundaryIndex) -> None:
    """Write the snapshot atomically (a reader sees the old file or the new one, whole); a
    store whose directory cannot be written to goes without."""
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(index.shared_state(), protocol=5, buffer_callback=buffers.append)
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
    built_from = generation(jurisdictions)
    index = load(path, built_from, [j.boundary for j in jurisdictions])
    if index is not None:
        return Resolver(jurisdictions, fallback=fallback, _index=index)
    index = BoundaryIndex([j.boundary for j in jurisdictions])
    save(path, built_from, index)
    return Resolver(jurisdictions, fallback=fallback, _index=index)


__all__ = ["build_resolver", "generation", "load", "save", "snapshot_path"]
