"""The aiohttp application: ``create_app`` puts the routes, the one middleware and the runtime
together (docs/architecture.md).

Route modules: :mod:`~resolver.http.service` (``/service``), :mod:`~resolver.http.resolve`
(``/v1/resolve``, ``/v1/concerns``), :mod:`~resolver.http.jurisdictions`,
:mod:`~resolver.http.registry` and :mod:`~resolver.http.registration`; their state is under the keys
of :mod:`~resolver.http.keys`; every failure leaves through :mod:`~resolver.http.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
from collections.abc import AsyncIterator

from aiohttp import web

from resolver.adhoc import routes as adhoc_routes
from resolver.adhoc.forwarder import load_keys, open_forwarder
from resolver.config import Settings
from resolver.http import (
    jurisdictions,
    operators,
    registration,
    registry,
    resolve,
    service,
    site,
)
from resolver.http.keys import (
    ANSWERER,
    DISCOVERY,
    FETCHER,
    FORWARD_KEYS,
    FORWARDER,
    HTTP_SESSION,
    METRICS,
    PRELOADED,
    REGISTRAR,
    REGISTRY,
    RUNTIME,
    SERVICE_BODIES,
    SETTINGS,
    STORE,
    first_worker,
)
from resolver.http.metrics import Metrics
from resolver.http.service import TYPE_CONCERN_PREFIX, TYPE_DISCOVERY, TYPE_OPEN311
from resolver.http.serving import run_server
from resolver.http.web import WEB, WebLayer, add_slash_aliases
from resolver.runtime import Runtime
from resolver.sources.discovery import refresh_all

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    """The whole HTTP service for these settings."""
    # The one middleware: counting, CORS, caching, compression and the error body, in one layer
    # (each layer of aiohttp's costs every request a coroutine and a call).
    metrics = Metrics(lambda: app.get(RUNTIME))
    layer = WebLayer(settings, metrics)
    app = web.Application(middlewares=[layer.middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[WEB] = layer
    app[SERVICE_BODIES] = {}
    app[METRICS] = metrics
    app.cleanup_ctx.append(runtime_ctx)
    app.cleanup_ctx.append(refresh_ctx)
    app.cleanup_ctx.append(registry.registry_ctx)
    if settings.adhoc and settings.adhoc_forward:
        keys = settings.adhoc_forward_keys
        app[FORWARD_KEYS] = load_keys(keys) if keys else {}  # a bad file stops the start here
        app.cleanup_ctx.append(forward_ctx)
    for routes in (service, resolve, jurisdictions, registry, registration, site, operators):
        routes.add_routes(app)
    if settings.adhoc:
        adhoc_routes.add_routes(app, adhoc_routes.config_from(settings), store_key=STORE)
    add_slash_aliases(app)
    return app


async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the runtime (store, session, sources, answerer) at start-up; close it at shutdown."""
    metrics = app[METRICS]

    def refreshed(jurisdiction: str, ok: bool, reason: str | None, url: str | None) -> None:
        metrics.refreshed(jurisdiction, ok, reason, url)
        if ok and FORWARDER in app:  # new facts (a services list) may take a held request
            app[FORWARDER].registry_changed()

    async with Runtime.open(
        app[SETTINGS], on_refresh=refreshed, preloaded=app.get(PRELOADED)
    ) as runtime:
        app[RUNTIME] = runtime
        app[STORE] = runtime.store
        app[HTTP_SESSION] = runtime.session
        app[FETCHER] = runtime.fetcher
        app[ANSWERER] = runtime.answerer
        if runtime.discovery is not None:
            app[DISCOVERY] = runtime.discovery
        app[REGISTRY] = runtime.follower()
        app[REGISTRAR] = runtime.registrar()
        log.info(
            "serving %d jurisdictions from the %s registry",
            len(runtime.answerer.resolver),
            runtime.source,
        )
        # The registry and its index are long-lived: move them out of the collector's way, so
        # that full collections during requests do not walk tens of thousands of objects.
        gc.collect()
        gc.freeze()
        yield


async def forward_ctx(app: web.Application) -> AsyncIterator[None]:
    """Forward held ad hoc requests in the background (docs/adhoc.md), in the first worker only:
    its claims are safe against other forwarders, but one is enough to poll the cities."""
    task = None
    if first_worker(app):
        forwarder = open_forwarder(app[RUNTIME], app[FORWARD_KEYS])
        app[FORWARDER] = forwarder
        app[REGISTRY].listeners.append(forwarder.registry_changed)
        app[adhoc_routes.NEW_REQUEST_LISTENERS].append(forwarder.wake)
        task = asyncio.create_task(forwarder.run())
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def refresh_ctx(app: web.Application) -> AsyncIterator[None]:
    """Refresh discovery facts in the background (when enabled; in the first worker): every
    ``refresh_interval`` seconds (plus up to ``refresh_jitter``), the jurisdictions whose facts
    expired, ``refresh_concurrency`` at a time, each after a random delay of up to
    ``refresh_jitter``."""
    task = None
    if DISCOVERY in app and first_worker(app):
        task = asyncio.create_task(_refresh_loop(app))
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _refresh_loop(app: web.Application) -> None:
    answerer, source, settings = app[ANSWERER], app[DISCOVERY], app[SETTINGS]
    rng = random.Random()
    while True:
        now = source.clock()
        due = [j for j in answerer.resolver.jurisdictions if source.needs(j, now)]
        if due:
            log.info("background refresh of %d jurisdictions", len(due))
            try:
                await refresh_all(
                    answerer,
                    due,
                    concurrency=settings.refresh_concurrency,
                    jitter=settings.refresh_jitter,
                    rng=rng,
                )
            except Exception:  # pragma: no cover - a bug must not stop the loop
                log.exception("background refresh failed")
        await asyncio.sleep(settings.refresh_interval + rng.uniform(0, settings.refresh_jitter))


__all__ = [
    "ANSWERER",
    "FETCHER",
    "STORE",
    "TYPE_CONCERN_PREFIX",
    "TYPE_DISCOVERY",
    "TYPE_OPEN311",
    "create_app",
    "run_server",
]
