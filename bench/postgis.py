"""The baseline most teams would build: PostGIS with a GiST index and ``ST_Covers``.

A throwaway PostgreSQL cluster (Debian's ``postgresql-15`` and ``postgresql-15-postgis-3``) is
started on a free 127.0.0.1 port inside the benchmark and removed afterwards. Measured: one prepared
query per point over one loopback connection, and one set-based query for a whole batch.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from .httpbench import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
USER = "postgres"


def available() -> str | None:
    """None when PostGIS can run here, else why not."""
    if not (PG_BIN / "initdb").exists():
        return (
            "PostgreSQL 15 is not installed (apt-get install postgresql-15 postgresql-15-postgis-3)"
        )
    if not Path("/usr/share/postgresql/15/extension/postgis.control").exists():
        return "PostGIS is not installed (apt-get install postgresql-15-postgis-3)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    return None


def _as_postgres(args: Sequence[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", USER, "--", *args]
    return list(args)


@contextmanager
def cluster() -> Iterator[str]:
    """A fresh cluster on 127.0.0.1; yields a connection string; stops and deletes it after."""
    root = Path(tempfile.mkdtemp(prefix="geoweb-postgis-"))
    data = root / "data"
    if os.geteuid() == 0:
        entry = pwd.getpwnam(USER)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    port = free_port()
    run = lambda *a: subprocess.run(_as_postgres(a), check=True, capture_output=True, timeout=120)  # noqa: E731
    try:
        run(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", USER, "--no-sync")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "-l",
            str(root / "log"),
            "start",
        )
        yield f"host=127.0.0.1 port={port} user={USER} dbname=postgres"
    finally:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


def load(conninfo: str, ids: Sequence[str], geometries: Sequence[BaseGeometry]) -> float:
    """Create the counties table with a GiST index; seconds taken."""
    import psycopg

    start = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION postgis")
        conn.execute("CREATE TABLE counties (id text PRIMARY KEY, geom geometry(Geometry, 4326))")
        with conn.cursor() as cur, cur.copy("COPY counties (id, geom) FROM STDIN") as copy:
            for id_, geometry in zip(ids, geometries, strict=True):
                copy.write_row(
                    (id_, f"SRID=4326;{shapely.to_wkt(geometry, rounding_precision=-1)}")
                )
        conn.execute("CREATE INDEX counties_geom ON counties USING gist (geom)")
        conn.execute("ANALYZE counties")
    return time.perf_counter() - start


PER_POINT = "SELECT id FROM counties WHERE ST_Covers(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4326))"
SET_BASED = """
SELECT p.i, c.id
FROM unnest(%s::float8[], %s::float8[]) WITH ORDINALITY AS p(x, y, i)
JOIN counties c ON ST_Covers(c.geom, ST_SetSRID(ST_MakePoint(p.x, p.y), 4326))
"""


def _per_point(cur: Any, lats: list[float], longs: list[float]) -> dict[str, Any]:
    """One prepared query per point, one after another, after a warm-up (plan, caches)."""
    for lat, long in zip(lats[:200], longs[:200], strict=True):
        cur.execute(PER_POINT, (long, lat), prepare=True)
        cur.fetchall()
    pairs = 0
    start = time.perf_counter()
    for lat, long in zip(lats, longs, strict=True):
        cur.execute(PER_POINT, (long, lat), prepare=True)
        pairs += len(cur.fetchall())
    seconds = time.perf_counter() - start
    return {
        "points": len(lats),
        "seconds": seconds,
        "points_per_s": len(lats) / seconds,
        "pairs": pairs,
    }


def measure(
    conninfo: str,
    single: tuple[np.ndarray, np.ndarray],
    batch: tuple[np.ndarray, np.ndarray],
    http: tuple[list[float], list[float]] | None = None,
) -> dict[str, Any]:
    """Points/s: one prepared query per point over one connection (on the single points, and on
    the HTTP workload's points when given); one set-based query."""
    import psycopg

    out: dict[str, Any] = {}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        with conn.cursor() as cur:
            out["per_point"] = _per_point(cur, *(a.tolist() for a in single))
            if http is not None:
                out["per_point_http"] = _per_point(cur, *http)
        batch_lats, batch_longs = (a.tolist() for a in batch)
        with conn.cursor() as cur:
            cur.execute(SET_BASED, (batch_longs[:1000], batch_lats[:1000]))  # warm
            cur.fetchall()
            start = time.perf_counter()
            cur.execute(SET_BASED, (batch_longs, batch_lats))
            set_pairs = len(cur.fetchall())
            set_based_s = time.perf_counter() - start
    out["set_based"] = {
        "points": len(batch_lats),
        "seconds": set_based_s,
        "points_per_s": len(batch_lats) / set_based_s,
        "pairs": set_pairs,
    }
    return out


def run(
    ids: Sequence[str],
    geometries: Sequence[BaseGeometry],
    single: tuple[np.ndarray, np.ndarray],
    batch: tuple[np.ndarray, np.ndarray],
    http: tuple[list[float], list[float]] | None = None,
) -> dict[str, Any]:
    reason = available()
    if reason is not None:
        return {"skipped": reason}
    with cluster() as conninfo:
        load_s = load(conninfo, ids, geometries)
        out = measure(conninfo, single, batch, http)
    out["load_s"] = load_s
    out["server"] = "PostgreSQL 15 + PostGIS 3 (Debian), 127.0.0.1, fsync=off, GiST index"
    return out
