"""Every key of the aiohttp application's state, in one module: handlers of every route module
read what :func:`resolver.http.app.create_app` and the runtime put there, typed."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from discovery.fetch import Fetcher
from resolver.adhoc.forwarder import Forwarder
from resolver.config import Settings
from resolver.http.metrics import Metrics
from resolver.registry.follower import RegistryFollower
from resolver.registry.registration import Registrar
from resolver.runtime import Preloaded, Runtime
from resolver.sources.answering import Answerer
from resolver.sources.discovery import DiscoverySource
from resolver.store import Store

SETTINGS = web.AppKey("settings", Settings)
#: Every driver of the process (store, session, fetcher, answerer), built from the settings.
RUNTIME = web.AppKey("runtime", Runtime)
STORE = web.AppKey("store", Store)
ANSWERER = web.AppKey("answerer", Answerer)
#: The one HTTP client session of the app (guarded: see discovery/fetch.py), and its fetcher.
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
FETCHER = web.AppKey("fetcher", Fetcher)
#: Present only when discovery documents are fetched (``--discovery-refresh``).
DISCOVERY = web.AppKey("discovery", DiscoverySource)
#: What the server answers from, following its store; and mirror syncs.
REGISTRY = web.AppKey("registry", RegistryFollower)
#: Registration with proof of domain control.
REGISTRAR = web.AppKey("registrar", Registrar)
#: Serialized ``/service`` bodies by (types, base URL, ids of the parts of the decisions answering
#: them). A body depends on nothing else, and one decision serves every point with the same
#: covering jurisdictions, so most requests reuse a body. Each entry holds the parts it was made
#: of, so their ids are not reused while it lives; the dict is emptied at SERVICE_BODIES_KEPT.
SERVICE_BODIES = web.AppKey("service_bodies", dict[tuple[object, ...], tuple[object, bytes, bool]])
SERVICE_BODIES_KEPT = 4096
#: The app's own Prometheus metrics (``GET /metrics``).
METRICS = web.AppKey("metrics", Metrics)
#: The registry loaded and indexed before the workers were forked (``geoweb serve --workers``).
PRELOADED = web.AppKey("preloaded", Preloaded)
#: Which worker this process is, and of how many: (number from 0, count).
WORKER = web.AppKey("worker", tuple[int, int])
#: The operator's API keys for forwarding (read before start-up), and the forwarder itself,
#: present in one worker only (``geoweb serve --no-adhoc-forward``: in none).
FORWARD_KEYS = web.AppKey("forward_keys", dict[str, str])
FORWARDER = web.AppKey("forwarder", Forwarder)


def first_worker(app: web.Application) -> bool:
    """Whether this process runs the background work one server needs once, however many
    workers answer: the discovery refresh (the others read what it fetched from the store's HTTP
    cache when they answer), mirror syncs (the others follow the store) and forwarding."""
    return app.get(WORKER, (0, 1))[0] == 0


__all__ = [
    "ANSWERER",
    "DISCOVERY",
    "FETCHER",
    "FORWARDER",
    "FORWARD_KEYS",
    "HTTP_SESSION",
    "METRICS",
    "PRELOADED",
    "REGISTRAR",
    "REGISTRY",
    "RUNTIME",
    "SERVICE_BODIES",
    "SERVICE_BODIES_KEPT",
    "SETTINGS",
    "STORE",
    "WORKER",
    "first_worker",
]
