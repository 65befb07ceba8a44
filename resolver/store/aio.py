"""The one way async code reaches the store: ``await in_thread(store.method, *args)``.

Every store call blocks while SQLite or PostgreSQL answers; made on the event loop it would stall
every request and background task of the server meanwhile. So async code (the HTTP handlers, the
sources, mirror syncs, the registry follower, the caches' coroutines) never calls the store
directly: it goes through :func:`in_thread`, which runs the call in a pool of threads kept for the
store. A pool of its own, sized like the engine's connection pool, so that a slow database makes
store calls queue among themselves, not behind (or in front of) the address lookups and index
builds that use asyncio's default pool.

What is not async (the CLI commands, tests, the blocking halves of the caches) calls the store
as it is.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

#: Store calls running at once at most, per process: SQLAlchemy's default pool (5 connections
#: and 10 more on demand).
MAX_THREADS = 15

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="geoweb-store")
        return _pool


async def in_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` run in one of the store's threads, awaited; its exception raised
    here. The caller's context variables (the log's request id, say) go along."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await loop.run_in_executor(_executor(), call)


__all__ = ["MAX_THREADS", "in_thread"]
