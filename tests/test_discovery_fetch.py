"""The bounded fetcher against real stand-in servers on loopback: every hostile server is refused
with a recorded reason, in bounded time and memory; caching follows RFC 9111 and survives a
restart in the SQLite store."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from discovery.fetch import Fetcher, FetchError, FetchLimits, MemoryHttpCache, make_session
from resolver.store import Store
from resolver.store.caches import StoreHttpCache
from tests.open311_servers import HUGE_BYTES, StandIn, stand_in_app

LOOPBACK = ("127.0.0.0/8",)
LIMITS = FetchLimits(connect_timeout=1.0, total_timeout=1.5, max_bytes=256 * 1024, max_redirects=3)

ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def city(aiohttp_server: ServerFactory) -> tuple[TestServer, StandIn]:
    state = StandIn()
    server = await aiohttp_server(stand_in_app(state))
    state.base = str(server.make_url("")).rstrip("/")
    return server, state


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    async with make_session(allow_networks=LOOPBACK, limits=LIMITS) as session:
        yield Fetcher(session, limits=LIMITS, allow_networks=LOOPBACK, cache=MemoryHttpCache())


def url(city: tuple[TestServer, StandIn], path: str) -> str:
    return str(city[0].make_url(path))


async def refused(fetcher: Fetcher, target: str, **kwargs: Any) -> FetchError:
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        await fetcher.get(target, **kwargs)
    assert time.monotonic() - started < LIMITS.total_timeout + 1.0
    error = caught.value
    assert error.reason and error.to_dict()["error"] == "fetch_failed"
    return error


async def test_real_document_is_fetched_and_then_served_from_cache(city: Any, fetcher: Fetcher):
    first = await fetcher.get(url(city, "/sf/discovery.xml"), accept=("text/xml",))
    assert first.status == 200 and not first.from_cache and b"<discovery" in first.body
    assert first.media_type == "text/xml"  # served as text/xml; charset=utf-8
    assert first.expires_at is not None and first.expires_at - first.fetched_at == pytest.approx(
        300, abs=2
    )
    second = await fetcher.get(url(city, "/sf/discovery.xml"), accept=("text/xml",))
    assert second.from_cache and second.body == first.body
    assert city[1].hits["/sf/discovery.xml"] == 1


# -- hostile servers: each is refused, with the reason recorded ---------------------------------


async def test_slow_server_times_out(city: Any, fetcher: Fetcher) -> None:
    # the server never answers: the total timeout ends it
    error = await refused(fetcher, url(city, "/hostile/slow"))
    assert "within 1.5 s" in error.reason and error.limit == "total_timeout"


async def test_trickling_body_times_out(city: Any, fetcher: Fetcher) -> None:
    # headers arrive at once, the body a byte at a time: the total timeout covers the body too
    error = await refused(fetcher, url(city, "/hostile/slow-body"))
    assert error.limit == "total_timeout"


async def test_huge_body_stops_at_the_limit_with_bounded_memory(city: Any, fetcher: Fetcher):
    # 50 MB streamed without a Content-Length: reading stops just past max_bytes
    tracemalloc.start()
    try:
        error = await refused(fetcher, url(city, "/hostile/huge"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.limit == "max_bytes"
    assert LIMITS.max_bytes < error.bytes_read <= LIMITS.max_bytes + 2 * 1024 * 1024
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while refusing a {HUGE_BYTES} byte body"
    assert city[1].huge_sent < HUGE_BYTES  # the server was cut off, it did not finish


async def test_declared_huge_length_is_refused_before_reading(city: Any, fetcher: Fetcher):
    error = await refused(fetcher, url(city, "/hostile/huge-declared"))
    assert error.limit == "max_bytes" and error.bytes_read == 0
    assert str(HUGE_BYTES) in error.reason


async def test_wrong_content_type_is_refused(city: Any, fetcher: Fetcher) -> None:
    error = await refused(
        fetcher, url(city, "/hostile/wrong-type"), accept=("application/json", "text/xml")
    )
    assert "text/html" in error.reason and error.content_type == "text/html"


async def test_server_error_is_refused(city: Any, fetcher: Fetcher) -> None:
    error = await refused(fetcher, url(city, "/hostile/error"))
    assert error.reason.startswith("HTTP 500")


async def test_redirect_loop_is_cut_at_max_redirects(city: Any, fetcher: Fetcher) -> None:
    error = await refused(fetcher, url(city, "/hostile/loop/0"))
    assert error.limit == "max_redirects" and "more than 3 redirects" in error.reason
    assert city[1].hits["/hostile/loop/0"] + city[1].hits["/hostile/loop/1"] == 4


@pytest.mark.parametrize(
    ("path", "address"),
    [
        ("/hostile/to-private", "10.0.0.1"),  # a private network address
        ("/hostile/to-metadata", "169.254.169.254"),  # the cloud metadata service
    ],
)
async def test_redirect_to_private_address_is_refused_before_connecting(
    city: Any, fetcher: Fetcher, path: str, address: str
) -> None:
    started = time.monotonic()
    error = await refused(fetcher, url(city, path))
    assert error.limit == "address" and address in error.reason
    assert "refused before connecting" in error.reason
    assert time.monotonic() - started < 0.5  # no connection attempt, no timeout waited


async def test_loopback_is_refused_unless_allow_listed(city: Any) -> None:
    # the address actually connected to is checked after DNS: "localhost" and 127.0.0.1 alike
    async with make_session(limits=LIMITS) as session:
        guarded = Fetcher(session, limits=LIMITS)
        literal = await refused(guarded, url(city, "/sf/discovery.xml"))
        assert "127.0.0.1 is a loopback address" in literal.reason
        port = city[0].port
        named = await refused(guarded, f"http://localhost:{port}/sf/discovery.xml")
        assert "loopback" in named.reason and named.limit == "address"
    assert city[1].hits["/sf/discovery.xml"] == 0  # nothing ever reached the server


async def test_a_plain_session_is_not_accepted() -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match="make_session"):
            Fetcher(session)


async def test_non_http_scheme_is_refused(fetcher: Fetcher) -> None:
    error = await refused(fetcher, "file:///etc/passwd")
    assert error.limit == "scheme"


# -- caching -------------------------------------------------------------------------------------


async def test_changing_etag_is_revalidated(city: Any, fetcher: Fetcher) -> None:
    target = url(city, "/hostile/etag")
    first = await fetcher.get(target)
    assert first.etag == '"v1"' and first.expires_at == first.fetched_at  # no-cache
    again = await fetcher.get(target)  # If-None-Match: "v1" -> 304
    assert again.revalidated and again.from_cache and again.body == first.body
    city[1].etag_version = 2
    changed = await fetcher.get(target)
    assert not changed.from_cache and changed.etag == '"v2"' and b"2" in changed.body
    assert city[1].hits["/hostile/etag"] == 3


async def test_stale_if_error_and_restart_survival(city: Any, tmp_path: Path) -> None:
    db = tmp_path / "cache.sqlite"
    now = [time.time()]
    target = url(city, "/bloomington/discovery.json")
    async with make_session(allow_networks=LOOPBACK, limits=LIMITS) as session:
        with Store(db) as store:
            fetcher = Fetcher(
                session, limits=LIMITS, cache=StoreHttpCache(store), clock=lambda: now[0]
            )
            fresh = await fetcher.get(target)
            assert not fresh.from_cache
    # a new process: a new store object on the same file, the cache is still there
    async with make_session(allow_networks=LOOPBACK, limits=LIMITS) as session:
        with Store(db) as store:
            fetcher = Fetcher(
                session, limits=LIMITS, cache=StoreHttpCache(store), clock=lambda: now[0]
            )
            cached = await fetcher.get(target)
            assert cached.from_cache and cached.body == fresh.body
            now[0] += 3600  # expired, and the city is down: the stale copy is served, marked
            city[1].down = True
            stale = await fetcher.get(target)
            assert stale.stale and stale.from_cache and "HTTP 503" in (stale.error or "")
            now[0] += 30 * 86400  # beyond stale-if-error: refused
            with pytest.raises(FetchError, match="503"):
                await fetcher.get(target)
    assert city[1].hits["/bloomington/discovery.json"] == 3
