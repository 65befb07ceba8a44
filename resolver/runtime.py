"""Every driver of a resolver process, built from :class:`~resolver.config.Settings` in one place.

``geoweb serve`` (through :mod:`resolver.http.app`), ``resolve``, ``resolve-batch``, ``refresh``
and ``mirror sync`` all open a :class:`Runtime`, so they answer with the same store, the same
guarded HTTP session and fetcher (with the store's HTTP cache), the same DNS source and the same
:class:`~resolver.sources.answering.Answerer` (with the DNS registry answerer when a registry zone
is configured): a point answered by the CLI is answered as the API answers it.

    async with Runtime.open(settings) as rt:
        answer = await rt.answerer.answer(lat, long, concern)
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import cached_property

import aiohttp

from discovery.fetch import Fetcher, FetchLimits, make_session
from resolver.config import Settings
from resolver.core.decide import Resolver, choose_fallback
from resolver.index_snapshot import build_resolver, snapshot_path
from resolver.registry.documents import load_jurisdictions
from resolver.registry.embedded import open_store
from resolver.registry.follower import RegistryFollower
from resolver.registry.mirror import dns_attestation
from resolver.registry.registration import Registrar
from resolver.sources.answering import Answerer, FactSource
from resolver.sources.discovery import DiscoverySource
from resolver.sources.dns import dns_source
from resolver.sources.dns_registry import registry_answerer
from resolver.store import Store
from resolver.store.aio import in_thread
from resolver.store.caches import StoreHttpCache, record_refresh

log = logging.getLogger(__name__)

#: Called with (jurisdiction id, ok, reason, url) after each discovery refresh, once the outcome is
#: recorded in the store.
RefreshHook = Callable[[str, bool, str | None, str | None], None]


@dataclass(frozen=True)
class Preloaded:
    """A registry loaded and indexed before a server's workers are forked: built once, its
    memory shared copy-on-write; each worker follows the store from ``serial`` on."""

    resolver: Resolver
    source: str
    serial: int


def preload(settings: Settings) -> Preloaded:
    """Load the store's registry and build its index, then close the store (a database
    connection must not cross a fork)."""
    store = open_store(settings)
    try:
        return load_registry(settings, store)
    finally:
        store.close()


def load_registry(settings: Settings, store: Store) -> Preloaded:
    """The store's registry and its index: from the snapshot beside the store when the settings
    keep one (:mod:`resolver.index_snapshot`). Logs how long each step took, the most of a
    large registry's start."""
    started = time.perf_counter()
    serial = store.serial  # before the entries: changes after are taken again
    jurisdictions, source = load_jurisdictions(store)
    loaded = time.perf_counter()
    path = snapshot_path(settings.db_path) if settings.index_snapshot else None
    fallback = choose_fallback(
        settings.fallback_url,
        settings.fallback_name,
        adhoc=settings.adhoc,
        public_url=settings.public_url,
    )
    resolver = build_resolver(jurisdictions, fallback, path)
    release_freed_memory()
    log.info(
        "loaded %d jurisdictions in %.2f s; index ready in %.2f s",
        len(jurisdictions),
        loaded - started,
        time.perf_counter() - loaded,
    )
    return Preloaded(resolver, source, serial)


def release_freed_memory() -> None:
    """Hand memory freed by the load and the index build back to the system.

    glibc keeps freed blocks in its own lists rather than returning them: after building the
    index of 100,000 jurisdictions the process held 440 MB more than before, of which 365 MB
    were free. A server keeps its registry for days, so those pages would stay resident (and,
    with workers, be counted in each). Elsewhere than glibc this does nothing."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)


def fetch_limits(settings: Settings) -> FetchLimits:
    """The bounds on one fetch: ``fetch_timeout`` in all (connecting: at most 5 s of it) and
    ``fetch_max_bytes``."""
    return FetchLimits(
        connect_timeout=min(5.0, settings.fetch_timeout),
        total_timeout=settings.fetch_timeout,
        max_bytes=settings.fetch_max_bytes,
    )


@dataclass
class Runtime:
    """The drivers of one process. Open it with :meth:`open`; everything is closed on leaving."""

    settings: Settings
    store: Store
    limits: FetchLimits
    session: aiohttp.ClientSession
    fetcher: Fetcher
    #: The fact sources the answerer asks: DNS first (it attests), then discovery (it reads what
    #: DNS names).
    sources: list[FactSource] = field(default_factory=list)
    #: The discovery source, when discovery documents are fetched.
    discovery: DiscoverySource | None = None
    #: What the answers come from (``store`` or ``embedded``) and the store's serial they reach;
    #: set when the answerer is built.
    source: str = "embedded"
    serial: int = 0
    #: The registry as loaded before the workers were forked, used instead of loading it again.
    preloaded: Preloaded | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        settings: Settings,
        *,
        discovery: bool | None = None,
        retry_after: float | None = None,
        on_refresh: RefreshHook | None = None,
        limits: FetchLimits | None = None,
        http_cache: bool = True,
        preloaded: Preloaded | None = None,
    ) -> AsyncIterator[Runtime]:
        """Open the store, the HTTP session and the sources for these settings.

        ``discovery`` overrides ``settings.discovery_refresh`` (``geoweb refresh`` always fetches),
        ``retry_after`` how long a failed refresh is not retried, ``limits`` the fetch limits
        (``geoweb mirror sync`` reads larger documents, more slowly), and ``http_cache=False``
        keeps fetched documents out of the store's HTTP cache (mirror pages are applied once).
        """
        store = open_store(settings)
        try:
            limits = limits or fetch_limits(settings)
            session = make_session(allow_networks=settings.allow_network, limits=limits)
            try:
                fetcher = Fetcher(
                    session,
                    limits=limits,
                    allow_networks=settings.allow_network,
                    cache=StoreHttpCache(store) if http_cache else None,
                )
                runtime = cls(settings, store, limits, session, fetcher, preloaded=preloaded)
                if settings.dns_nameserver:  # its DNS cache is kept in the store
                    runtime.sources.append(dns_source(settings, store))
                if settings.discovery_refresh if discovery is None else discovery:
                    runtime.discovery = runtime._discovery_source(retry_after, on_refresh)
                    runtime.sources.append(runtime.discovery)
                yield runtime
            finally:
                await session.close()
        finally:
            store.close()

    def _discovery_source(
        self, retry_after: float | None, on_refresh: RefreshHook | None
    ) -> DiscoverySource:
        store = self.store

        async def on_result(
            jurisdiction: str, ok: bool, reason: str | None, url: str | None
        ) -> None:
            await in_thread(record_refresh, store, jurisdiction, ok=ok, reason=reason, url=url)
            if on_refresh is not None:
                on_refresh(jurisdiction, ok, reason, url)

        if retry_after is None:
            return DiscoverySource(self.fetcher, on_result=on_result)
        return DiscoverySource(self.fetcher, on_result=on_result, retry_after=retry_after)

    @cached_property
    def answerer(self) -> Answerer:
        """The answerer over the store's registry (the embedded layer included, unless left out),
        with every configured source. Built on first use: ``geoweb mirror sync`` never loads the
        registry."""
        loaded = self.preloaded or load_registry(self.settings, self.store)
        self.serial, self.source = loaded.serial, loaded.source
        return registry_answerer(self.settings, loaded.resolver, self.sources, self.fetcher)

    def follower(self) -> RegistryFollower:
        """What keeps a server's answers in step with its store, and syncs its mirrors."""
        answerer = self.answerer
        return RegistryFollower(
            self.store,
            answerer,
            self.source,
            self.serial,
            self.fetcher,
            poll=self.settings.registry_poll,
            mirror_interval=self.settings.mirror_interval,
            attest=dns_attestation(self.settings),
        )

    def registrar(self) -> Registrar:
        """Registration on this store, proved through the configured nameservers."""
        return Registrar(
            self.store,
            nameservers=self.settings.dns_nameserver,
            dns_port=self.settings.dns_port,
            dns_timeout=self.settings.dns_timeout,
            domains=self.settings.register_domain,
        )


__all__ = [
    "Preloaded",
    "RefreshHook",
    "Runtime",
    "fetch_limits",
    "load_registry",
    "preload",
    "release_freed_memory",
]
