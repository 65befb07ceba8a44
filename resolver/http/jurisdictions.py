"""``GET /v1/jurisdictions`` (paged), ``/v1/jurisdictions/{id}`` (JSON, ``.geojson``, ``.kml``),
``/v1/jurisdictions/{id}/services``, and ``GET /healthz``."""

from __future__ import annotations

import os
import weakref
from typing import Any
from urllib.parse import quote

from aiohttp import web

from boundaries.kml import placemark_document
from resolver.core.decide import Resolver
from resolver.http.errors import json_response
from resolver.http.keys import ANSWERER, DISCOVERY, REGISTRY, STORE, WORKER, first_worker
from resolver.http.params import base_url, int_param
from resolver.registry.documents import jurisdiction_to_feature
from resolver.registry.embedded import layers
from resolver.store.aio import in_thread
from resolver.store.caches import refresh_status


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/jurisdictions", list_jurisdictions)
    app.router.add_get("/v1/jurisdictions/{id}", show_jurisdiction)
    app.router.add_get("/v1/jurisdictions/{id}/services", jurisdiction_services)
    app.router.add_get("/healthz", healthz)


async def list_jurisdictions(request: web.Request) -> web.Response:
    """``GET /v1/jurisdictions?offset=&limit=``: summaries, paged."""
    resolver = request.app[ANSWERER].resolver
    # Past the end is an empty page, as a registry shrinking between two pages makes it.
    offset = int_param(request, "offset", 0, 0, 2**31 - 1)
    limit = int_param(request, "limit", 1000, 1, 10_000)
    page = resolver.jurisdictions[offset : offset + limit]
    base = base_url(request)
    return json_response(
        {
            "total": len(resolver.jurisdictions),
            "offset": offset,
            "limit": limit,
            "source": request.app[REGISTRY].source,
            "index_generation": resolver.index_generation,
            "jurisdictions": [
                {
                    **j.summary(),
                    "has_boundary": j.boundary is not None,
                    "endpoint": j.endpoint.url if j.endpoint else None,
                    "href": f"{base}/v1/jurisdictions/{quote(j.id, safe='')}",
                }
                for j in page
            ],
        }
    )


async def show_jurisdiction(request: web.Request) -> web.Response:
    """``GET /v1/jurisdictions/{id}`` (JSON), ``{id}.geojson`` (Feature), ``{id}.kml`` (KML)."""
    resolver = request.app[ANSWERER].resolver
    key = request.match_info["id"]
    jurisdiction_id, suffix = key, ""
    for extension in (".geojson", ".kml"):
        if key.endswith(extension) and key not in resolver:
            jurisdiction_id, suffix = key.removesuffix(extension), extension
    jurisdiction = resolver.jurisdiction(jurisdiction_id)
    if suffix == ".geojson":
        feature = jurisdiction_to_feature(jurisdiction)
        return json_response(feature, content_type="application/geo+json")
    if suffix == ".kml":
        return web.Response(
            text=placemark_document(jurisdiction.name, jurisdiction.boundary, jurisdiction.id),
            content_type="application/vnd.google-earth.kml+xml",
        )
    body = jurisdiction.to_dict()
    body["refresh"] = await in_thread(refresh_status, request.app[STORE], jurisdiction.id)
    return json_response(body)


async def jurisdiction_services(request: web.Request) -> web.Response:
    """``GET /v1/jurisdictions/{id}/services``: its services list (fetched when missing or
    expired and discovery is on), with where it came from."""
    answerer = request.app[ANSWERER]
    jurisdiction = answerer.resolver.jurisdiction(request.match_info["id"])
    source = request.app.get(DISCOVERY)
    if source is not None and source.needs(jurisdiction, source.clock()):
        (jurisdiction,) = await answerer.refresh([jurisdiction])
    refresh = await in_thread(refresh_status, request.app[STORE], jurisdiction.id)
    return json_response(
        {
            "jurisdiction": jurisdiction.summary(),
            "endpoint": jurisdiction.endpoint.to_dict() if jurisdiction.endpoint else None,
            "services": None
            if jurisdiction.services is None
            else [s.to_dict() for s in jurisdiction.services],
            "provenance": [p.to_dict() for p in jurisdiction.provenance],
            "refresh": refresh,
        }
    )


#: What :func:`healthz` says of each resolver's jurisdictions, by resolver (and registry id):
#: classifying a million entries takes a quarter of a second, and health probes come often.
_SERVED: weakref.WeakKeyDictionary[Resolver, tuple[str, dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def _served(resolver: Resolver, registry_id: str) -> dict[str, Any]:
    kept = _SERVED.get(resolver)
    if kept is None or kept[0] != registry_id:
        entries = resolver.jurisdictions
        summary = {
            "with_boundary": sum(j.boundary is not None for j in entries),
            "layers": layers(list(entries), registry_id),
        }
        kept = _SERVED[resolver] = (registry_id, summary)
    return kept[1]


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: alive, and what it serves: how many jurisdictions, and from which
    layers (the embedded registry, local entries, registered, mirrored)."""
    resolver = request.app[ANSWERER].resolver
    number, count = request.app.get(WORKER, (0, 1))
    registry_id = await in_thread(lambda: request.app[STORE].registry_id)
    served = _served(resolver, registry_id)
    return json_response(
        {
            "status": "ok",
            "jurisdictions": len(resolver),
            "with_boundary": served["with_boundary"],
            "registry": request.app[REGISTRY].source,
            "layers": served["layers"],
            "index_generation": resolver.index_generation,
            # Each worker of `geoweb serve --workers` answers for itself: which one this was, and
            # whether it runs the background work (refresh, mirror syncs, forwarding).
            "worker": {
                "pid": os.getpid(),
                "number": number,
                "of": count,
                "background": first_worker(request.app),
            },
        }
    )
