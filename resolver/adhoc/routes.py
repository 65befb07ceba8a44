"""The ad hoc GeoReport v2 endpoint under ``/adhoc/``: its discovery document and the six methods
of the spec, in JSON and XML, with the spec's error bodies. The checks and the rendering are in
:mod:`resolver.adhoc.georeport`; the store is reached through its threads, never on the loop."""

from __future__ import annotations

import datetime as dt
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from resolver.adhoc.catalogue import DEFAULT_SERVICES, AdhocService, load_services
from resolver.adhoc.georeport import (
    GeoReportError,
    Limits,
    check_request,
    definition_dict,
    errors_body,
    read_filters,
    render,
    service_dict,
    w3c,
)
from resolver.config import Settings
from resolver.store.adhoc import AdhocRequest
from resolver.store.aio import in_thread


@dataclass(frozen=True, slots=True)
class AdhocConfig:
    """What the operator chose for the ad hoc endpoint."""

    services: tuple[AdhocService, ...] = DEFAULT_SERVICES
    api_key: str | None = None
    max_body_bytes: int = 64 * 1024
    limits: Limits = field(default_factory=Limits)
    #: POSTs one client address may make per minute.
    posts_per_minute: int = 30
    #: This server's public base URL (``--public-url``); none: the URL the request came in on.
    public_url: str | None = None
    #: Whether held requests are forwarded (``--adhoc-forward``), which the POST's notice says.
    forwards: bool = False


def config_from(settings: Settings) -> AdhocConfig:
    """The ad hoc endpoint as the operator's settings make it (a bad catalogue file is refused
    here, before the server starts)."""
    services = load_services(settings.adhoc_services) if settings.adhoc_services else None
    return AdhocConfig(
        services=services or DEFAULT_SERVICES,
        public_url=settings.public_url,
        api_key=settings.adhoc_api_key,
        posts_per_minute=settings.adhoc_posts_per_minute,
        forwards=settings.adhoc_forward,
    )


ADHOC_CONFIG = web.AppKey("adhoc_config", AdhocConfig)
#: Called after each request is kept (the forwarder looks at it at once: the point may be
#: covered already, by a city that does not offer the concern the app asked about).
NEW_REQUEST_LISTENERS = web.AppKey("adhoc_new_request_listeners", list[Callable[[], None]])
_BUCKETS = web.AppKey("adhoc_buckets", dict)

_FMT = "{fmt:json|xml}"
_CONTENT = {"json": "application/json", "xml": "text/xml"}


#: Where the app keeps the open store. The HTTP layer passes its own key in (it mounts these
#: routes), so that this package does not import the HTTP layer that imports it.
_STORE_KEY = web.AppKey("adhoc_store_key", web.AppKey)


def add_routes(
    app: web.Application, config: AdhocConfig | None = None, *, store_key: web.AppKey[Any]
) -> None:
    """Mount the ad hoc endpoint; the store is read from ``app[store_key]`` once it is open."""
    app[ADHOC_CONFIG] = config or AdhocConfig()
    app[_STORE_KEY] = store_key
    app[_BUCKETS] = {}
    app[NEW_REQUEST_LISTENERS] = []
    r = app.router
    r.add_get(f"/adhoc/discovery.{_FMT}", discovery)
    r.add_get(f"/adhoc/v2/services.{_FMT}", list_services)
    r.add_get("/adhoc/v2/services/{code}." + _FMT, service_definition)
    r.add_post(f"/adhoc/v2/requests.{_FMT}", post_request)
    r.add_get(f"/adhoc/v2/requests.{_FMT}", list_requests)
    r.add_get("/adhoc/v2/requests/{id}." + _FMT, show_request)
    r.add_get("/adhoc/v2/tokens/{token}." + _FMT, token_request)


def _answer(request: web.Request, kind: str, data: Any, status: int = 200) -> web.Response:
    fmt = request.match_info.get("fmt", "json")
    return web.Response(
        body=render(kind, data, fmt), status=status, content_type=_CONTENT[fmt], charset="utf-8"
    )


def _error(request: web.Request, status: int, description: str) -> web.Response:
    response = _answer(request, "errors", errors_body(status, description), status)
    if status == 429:
        response.headers["Retry-After"] = "60"
    return response


def _store(request: web.Request) -> Any:
    return request.app[request.app[_STORE_KEY]]


def _catalogue(request: web.Request) -> dict[str, AdhocService]:
    return {s.service.service_code: s for s in request.app[ADHOC_CONFIG].services}


def public_base(request: web.Request) -> str:
    """This server's absolute URL: ``--public-url``, else as the client reached it."""
    public_url = request.app[ADHOC_CONFIG].public_url
    if public_url:
        return public_url.rstrip("/")
    return f"{request.scheme}://{request.host}"


async def discovery(request: web.Request) -> web.Response:
    """The service discovery document of the ad hoc endpoint (one production endpoint)."""
    base = public_base(request)
    data: dict[str, Any] = {
        "changeset": "2026-01-01T00:00:00Z",
        "contact": "The operator of this GeoWeb DNS resolver",
        "key_service": "Ask the operator of this resolver",
        "endpoints": [
            {
                "specification": "http://wiki.open311.org/GeoReport_v2",
                "url": f"{base}/adhoc/v2",
                "changeset": "2026-01-01T00:00:00Z",
                "type": "production",
                "formats": ["application/json", "text/xml"],
            }
        ],
    }
    if request.match_info["fmt"] == "json":
        return web.json_response(data)
    top = ET.Element("discovery")
    for key in ("changeset", "contact", "key_service"):
        ET.SubElement(top, key).text = str(data[key])
    eps = ET.SubElement(top, "endpoints")
    for ep in data["endpoints"]:
        el = ET.SubElement(eps, "endpoint")
        for key in ("specification", "url", "changeset", "type"):
            ET.SubElement(el, key).text = ep[key]
        formats = ET.SubElement(el, "formats")
        for f in ep["formats"]:
            ET.SubElement(formats, "format").text = f
    body = (
        b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(top, encoding="unicode").encode()
    )
    return web.Response(body=body, content_type="text/xml", charset="utf-8")


async def list_services(request: web.Request) -> web.Response:
    services = request.app[ADHOC_CONFIG].services
    return _answer(request, "services", [service_dict(s) for s in services])


async def service_definition(request: web.Request) -> web.Response:
    service = _catalogue(request).get(request.match_info["code"])
    if service is None:
        return _error(request, 404, f"no service with service_code {request.match_info['code']!r}")
    return _answer(request, "definition", definition_dict(service))


def _admit(request: web.Request) -> bool:
    """A token bucket per client address: ``posts_per_minute`` a minute, that many at once."""
    rate = request.app[ADHOC_CONFIG].posts_per_minute
    buckets: dict[str, tuple[float, float]] = request.app[_BUCKETS]
    key = request.remote or "?"
    now = time.monotonic()
    tokens, last = buckets.get(key, (float(rate), now))
    tokens = min(float(rate), tokens + (now - last) * rate / 60.0)
    if tokens < 1.0:
        buckets[key] = (tokens, now)
        return False
    buckets[key] = (tokens - 1.0, now)
    if len(buckets) > 100_000:  # forget the quiet addresses rather than grow without end
        for k in [k for k, (t, _) in buckets.items() if t >= rate - 1][:50_000]:
            del buckets[k]
    return True


async def post_request(request: web.Request) -> web.Response:
    """``POST requests``: a form-encoded service request, checked, kept, answered with its id
    and token."""
    config = request.app[ADHOC_CONFIG]
    if not _admit(request):
        return _error(request, 429, "too many requests from this address: try again in a minute")
    if request.content_length is not None and request.content_length > config.max_body_bytes:
        return _error(request, 413, f"the body is larger than {config.max_body_bytes} bytes")
    body = await request.content.read(config.max_body_bytes + 1)
    if len(body) > config.max_body_bytes:
        return _error(request, 413, f"the body is larger than {config.max_body_bytes} bytes")
    if request.content_type not in ("application/x-www-form-urlencoded", ""):
        return _error(
            request, 400, "the body must be form-encoded (application/x-www-form-urlencoded)"
        )
    try:
        form: Mapping[str, list[str]] = parse_qs(
            body.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=config.limits.max_attributes + 30,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        return _error(request, 400, f"the form cannot be read: {exc}")
    if config.api_key is not None and (form.get("api_key") or [""])[-1] != config.api_key:
        return _error(request, 403, "a valid api_key is required")
    try:
        new = check_request(form, _catalogue(request), config.limits)
    except GeoReportError as exc:
        return _error(request, exc.status, exc.description)
    service = _catalogue(request)[new.service_code]
    values = {
        "service_code": new.service_code,
        "service_name": service.service.service_name,
        "lat": new.lat,
        "long": new.long,
        "address_string": new.address_string,
        "address_id": new.address_id,
        "description": new.description,
        "media_url": new.media_url,
        "attributes": new.attributes,
        "private": {**new.private, "device_id": new.device_id, "account_id": new.account_id},
    }
    stored = await in_thread(_store(request).add_adhoc_request, values)
    for listener in request.app[NEW_REQUEST_LISTENERS]:
        listener()
    notice = "Held by the ad hoc service: no jurisdiction known here takes it yet."
    if config.forwards:
        notice += " It will be sent on, once, to the jurisdiction that comes to cover its point."
    return _answer(
        request,
        "created",
        [
            {
                "service_request_id": stored.id,
                "token": stored.token,
                "service_notice": notice,
                "account_id": new.account_id or None,
            }
        ],
        201,
    )


def request_dict(r: AdhocRequest) -> dict[str, Any]:
    """A request as the public GETs show it: never the reporter's e-mail, phone or name.

    Besides the spec's fields, ``forwarding`` says where it went: its state (docs/adhoc.md) and,
    once forwarded, the city's endpoint, service_code, id (or token) and status as last read."""
    forwarding: dict[str, Any] = {"state": r.forward_state}
    if r.forward_state == "forwarded":
        agency = r.forward_jurisdiction or r.forward_endpoint or ""
        forwarding.update(
            jurisdiction=r.forward_jurisdiction,
            endpoint=r.forward_endpoint,
            service_code=r.forward_service_code,
            service_request_id=r.forward_id,
            token=None if r.forward_id else r.forward_token,
            status=r.forward_status,
            status_notes=r.forward_status_notes,
            forwarded_datetime=w3c(r.forward_done),
        )
    else:
        agency = "ad hoc service"
    return {
        "service_request_id": r.id,
        "status": r.status,
        "status_notes": r.status_notes,
        "service_name": r.service_name,
        "service_code": r.service_code,
        "description": r.description,
        "agency_responsible": agency,
        "service_notice": "",
        "requested_datetime": w3c(r.requested),
        "updated_datetime": w3c(r.updated),
        "expected_datetime": None,
        "address": r.address_string,
        "address_id": r.address_id,
        "zipcode": "",
        "lat": r.lat,
        "long": r.long,
        "media_url": r.media_url,
        "forwarding": forwarding,
    }


async def list_requests(request: web.Request) -> web.Response:
    """``GET requests`` with the spec's filters: ids, service_code, status, start/end date."""
    try:
        f = read_filters(request.query, dt.datetime.now(dt.UTC))
    except GeoReportError as exc:
        return _error(request, exc.status, exc.description)
    rows = await in_thread(
        _store(request).adhoc_requests,
        ids=f.ids,
        codes=f.codes,
        statuses=f.statuses,
        start=f.start,
        end=f.end,
        limit=f.limit,
    )
    return _answer(request, "requests", [request_dict(r) for r in rows])


async def show_request(request: web.Request) -> web.Response:
    found = await in_thread(_store(request).adhoc_request, request.match_info["id"])
    if found is None:
        return _error(request, 404, f"no service request {request.match_info['id'][:80]!r}")
    return _answer(request, "requests", [request_dict(found)])


async def token_request(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    found = await in_thread(_store(request).adhoc_request_id_for_token, token)
    if found is None:
        return _error(request, 404, "no service request for this token")
    return _answer(request, "created", [{"service_request_id": found, "token": token}])
