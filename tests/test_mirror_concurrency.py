"""Two resolver processes syncing the same upstream into one PostgreSQL store at the same time."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from shapely.geometry import box

from common.models import Jurisdiction
from resolver.http.registry import changes_document
from resolver.store import Store

ENTRIES = 40


async def test_two_processes_syncing_into_one_postgresql_store(tmp_path: Path, pg_url: str) -> None:
    origin = Store(tmp_path / "origin.sqlite")
    origin.save(
        [
            Jurisdiction(id=f"j{i:02d}", name=f"J{i}").with_boundary(box(i, 0, i + 1, 1))
            for i in range(ENTRIES)
        ],
        source="test",
    )

    async def changes(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)  # slow enough for the two syncs to interleave
        page = origin.changes(int(request.query["since"]), int(request.query["limit"]))
        return web.Response(
            body=orjson.dumps(changes_document(page)), content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/v1/registry/changes", changes)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    upstream = str(server.make_url("")).rstrip("/")
    with Store(pg_url) as shared:
        shared.add_mirror(upstream)
    command = [
        sys.executable,
        "-m",
        "resolver",
        "mirror",
        "sync",
        "--once",
        "--page-size",
        "3",
        "--allow-network",
        "127.0.0.0/8",
        "--db",
        pg_url,
        "--no-embedded",
    ]
    processes = [
        await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [await p.communicate() for p in processes]
    await server.close()
    for process, (_out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err.decode()
    with Store(pg_url) as shared:
        held = shared.jurisdictions()
        assert sorted(j.id for j in held) == [f"j{i:02d}" for i in range(ENTRIES)]
        # Each entry was taken once: the process that came second found every version held.
        assert shared.serial == ENTRIES
        assert sorted(c.serial for c in shared.changes(0, limit=1000).changes) == list(
            range(1, ENTRIES + 1)
        )
        assert shared.mirror(upstream).last_serial == ENTRIES  # type: ignore[union-attr]
    origin.close()
