"""The one runtime: every command builds its drivers from Settings the same way."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from child import child_output
from click.testing import CliRunner

from resolver.cli.main import main
from resolver.config import Settings
from resolver.runtime import Runtime, fetch_limits
from resolver.sources.discovery import DiscoverySource
from resolver.sources.dns import DnsSource
from resolver.sources.dns_registry import DnsRegistryAnswerer
from resolver.store.caches import StoreHttpCache

SF_CITY_HALL = (37.7793, -122.4193)


async def test_the_plain_runtime_answers_from_the_embedded_registry(tmp_path: Path) -> None:
    settings = Settings(db=str(tmp_path / "e.sqlite"), fetch_timeout=3.0, fetch_max_bytes=4096)
    async with Runtime.open(settings) as runtime:
        assert runtime.sources == [] and runtime.discovery is None
        assert isinstance(runtime.fetcher.cache, StoreHttpCache)  # cached in the store
        assert runtime.limits == fetch_limits(settings)
        assert (runtime.limits.total_timeout, runtime.limits.connect_timeout) == (3.0, 3.0)
        answer = await runtime.answerer.answer(*SF_CITY_HALL)
        assert answer.jurisdiction is not None and answer.jurisdiction.id == "san-francisco-ca"
        session = runtime.session
    assert session.closed


async def test_dns_discovery_and_the_registry_zone_are_built_from_settings(tmp_path: Path) -> None:
    settings = Settings(
        db=str(tmp_path / "e.sqlite"),
        discovery_refresh=True,
        dns_nameserver=("127.0.0.1",),
        dns_registry_zone="registry.example",
        dns_registry_mode="uncovered",
    )
    async with Runtime.open(settings) as runtime:
        dns, discovery = runtime.sources
        assert isinstance(dns, DnsSource)  # DNS attests first, discovery reads what it names
        assert isinstance(discovery, DiscoverySource) and discovery is runtime.discovery
        answerer = runtime.answerer
        assert isinstance(answerer, DnsRegistryAnswerer)
        assert answerer.sources == (dns, discovery)
        follower = runtime.follower()
        assert follower.answerer is answerer and follower.attest is not None
        assert runtime.registrar().nameservers == ("127.0.0.1",)


async def test_a_mirror_sync_runtime_reads_no_registry_and_caches_nothing(tmp_path: Path) -> None:
    async with Runtime.open(Settings(db=str(tmp_path / "e.sqlite")), http_cache=False) as runtime:
        assert runtime.fetcher.cache is None
    assert "answerer" not in vars(runtime)  # the registry was never loaded


def test_the_cli_answers_as_the_runtime_does(tmp_path: Path) -> None:
    """``geoweb resolve`` and ``resolve-batch`` go through the same Answerer as the API."""
    db = str(tmp_path / "e.sqlite")
    single = CliRunner().invoke(
        main, ["resolve", "--lat", "37.7793", "--long", "-122.4193", "--json", "--db", db]
    )
    assert single.exit_code == 0, single.stderr
    batch = CliRunner().invoke(
        main, ["resolve-batch", "--db", db], input="lat,long\n37.7793,-122.4193\n"
    )
    assert batch.exit_code == 0, batch.stderr
    answer = json.loads(single.stdout)
    (row,) = csv.DictReader(io.StringIO(batch.stdout))
    assert row["jurisdiction_id"] == answer["jurisdiction"]["id"] == "san-francisco-ca"
    assert row["endpoint_url"] == answer["endpoint"]["url"]


FREED = """
import numpy as np
from bench.memory import rss_kib
from resolver.runtime import release_freed_memory

blocks = [np.ones(8192) for _ in range(4096)]  # 64 KiB each, from malloc's heap: 256 MiB
del blocks[::2]  # half freed, between blocks still in use: malloc keeps those pages
before = rss_kib()
release_freed_memory()
print(before - rss_kib())
"""


def test_memory_freed_by_a_build_goes_back_to_the_system() -> None:
    # in a process of its own, so that the heap is this test's alone
    released_kib = int(child_output(FREED, timeout=60))
    assert released_kib > 64 * 1024, f"only {released_kib} KiB went back"
