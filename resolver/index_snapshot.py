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

The snapshot of an SQLite store lies beside it (``<store>.index``); that of a database URL in the
per-user cache directory. It holds pickled arrays: it is trusted as much as the store beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
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

_MAGIC = b"GEOWEB-INDEX-SNAPSHOT 2\n"  # 2: the shared state; 1 pickled the index


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


def load(
    path: Path, generation: str, geometries: Sequence[BaseGeometry | None]
) -> BoundaryIndex | None:
    """The index in the snapshot at ``path`` if it was built from ``generation`` by this code;
    else ``None`` (missing, stale or unreadable: said in the log). ``geometries`` are the
    boundaries of that generation, by position: the index holds them."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("index snapshot %s cannot be read (%s): building the index", path, exc)
        return None
    header = _header(generation)
    if not data.startswith(header):
        log.info("index snapshot %s is of other boundaries or code: building the index", path)
        return None
    try:
        state = pickle.loads(memoryview(data)[len(header) :])
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


def save(path: Path, generation: str, index: BoundaryIndex) -> None:
    """Write the snapshot atomically (a reader sees the old file or the new one, whole); a
    store whose directory cannot be written to goes without."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as f:
            f.write(_header(generation))
            pickle.dump(index.shared_state(), f, protocol=pickle.HIGHEST_PROTOCOL)
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
    resolver = Resolver(jurisdictions, fallback=fallback)
    save(path, built_from, resolver.index)
    return resolver


__all__ = ["build_resolver", "generation", "load", "save", "snapshot_path"]
