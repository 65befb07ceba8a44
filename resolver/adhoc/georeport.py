"""GeoReport v2 on the ad hoc service, without I/O: a POSTed form checked against a service
definition, the GET filters read, and every answer (errors included) rendered as the spec's JSON
or XML. The routes only move bytes and call the store."""

from __future__ import annotations

import datetime as dt
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from discovery.georeport import InvalidAttributes, check_attributes, w3c_datetime
from resolver.adhoc.catalogue import AdhocService

#: The spec: "the default query should be the last 90 days" and "1000 requests" at most.
DEFAULT_SPAN = dt.timedelta(days=90)
MAX_RESULTS = 1000

#: The reporter's own fields: kept, forwarded, never shown on a public GET.
PRIVATE_FIELDS = ("email", "first_name", "last_name", "phone")


class GeoReportError(Exception):
    """An answer in the spec's error format, with its HTTP status."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


@dataclass(frozen=True, slots=True)
class Limits:
    """What one POST may carry."""

    max_description: int = 4000
    max_attributes: int = 50
    max_field: int = 500


@dataclass(frozen=True, slots=True)
class NewRequest:
    """A POSTed service request, checked."""

    service_code: str
    lat: float | None
    long: float | None
    address_string: str
    address_id: str
    description: str
    media_url: str
    attributes: dict[str, str | list[str]]
    private: dict[str, str] = field(default_factory=dict)
    device_id: str = ""
    account_id: str = ""


@dataclass(frozen=True, slots=True)
class Filters:
    """``GET requests``: which requests, as the spec's parameters say."""

    ids: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    limit: int = MAX_RESULTS


def _one(form: Mapping[str, Sequence[str]], name: str, limits: Limits) -> str:
    values = form.get(name) or ()
    value = values[-1].strip() if values else ""
    if len(value) > limits.max_field and name != "description":
        raise GeoReportError(400, f"{name} is longer than {limits.max_field} characters")
    return value


def _coordinate(text: str, name: str, low: float, high: float) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise GeoReportError(400, f"{name} is not a number: {text[:40]!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise GeoReportError(400, f"{name} must be between {low:g} and {high:g}")
    return value


def check_request(
    form: Mapping[str, Sequence[str]],
    services: Mapping[str, AdhocService],
    limits: Limits = Limits(),
) -> NewRequest:
    """The form of ``POST requests`` checked against the catalogue: the service exists, a
    location is given, each ``attribute[code]`` is one the definition has, of its type, and every
    required one is there."""
    code = _one(form, "service_code", limits)
    if not code:
        raise GeoReportError(400, "service_code is required")
    service = services.get(code)
    if service is None:
        raise GeoReportError(404, f"no service with service_code {code!r}")
    lat = _coordinate(_one(form, "lat", limits), "lat", -90, 90)
    long = _coordinate(_one(form, "long", limits), "long", -180, 180)
    if (lat is None) != (long is None):
        raise GeoReportError(400, "lat and long go together")
    address_string = _one(form, "address_string", limits)
    address_id = _one(form, "address_id", limits)
    if lat is None and not address_string and not address_id:
        raise GeoReportError(
            400, "a location is required: lat and long, address_string or address_id"
        )
    description = _one(form, "description", limits)
    if len(description) > limits.max_description:
        raise GeoReportError(400, f"description is longer than {limits.max_description} characters")
    media_url = _one(form, "media_url", limits)
    if media_url and not media_url.startswith(("http://", "https://")):
        raise GeoReportError(400, "media_url must be an http(s) URL")
    attributes = _attributes(form, service, limits)
    private = {name: _one(form, name, limits) for name in PRIVATE_FIELDS}
    return NewRequest(
        service_code=code,
        lat=lat,
        long=long,
        address_string=address_string,
        address_id=address_id,
        description=description,
        media_url=media_url,
        attributes=attributes,
        private={k: v for k, v in private.items() if v},
        device_id=_one(form, "device_id", limits),
        account_id=_one(form, "account_id", limits),
    )


def _attributes(
    form: Mapping[str, Sequence[str]], service: AdhocService, limits: Limits
) -> dict[str, str | list[str]]:
    given: dict[str, list[str]] = {}
    for name, values in form.items():
        if name.startswith("attribute[") and name.endswith("]"):
            # multivaluelist values come as attribute[code][] (or repeated attribute[code]).
            code = name[len("attribute[") : -1].removesuffix("][")
            given.setdefault(code, []).extend(values)
    if len(given) > limits.max_attributes:
        raise GeoReportError(400, f"more than {limits.max_attributes} attributes")
    try:
        return check_attributes(service.attributes, given, max_field=limits.max_field)
    except InvalidAttributes as exc:
        code = service.service.service_code
        raise GeoReportError(400, f"service {code!r}: {exc.detail}") from None


def parse_datetime(text: str, name: str) -> dt.datetime:
    """A W3C date-time with its zone (``2010-01-01T00:00:00Z``), as the spec's dates are."""
    try:
        return w3c_datetime(text)
    except ValueError:
        raise GeoReportError(400, f"{name} is not a W3C date-time: {text[:40]!r}") from None


def _list(query: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in query.get(name, "").split(",") if v.strip())


def read_filters(query: Mapping[str, str], now: dt.datetime) -> Filters:
    """The parameters of ``GET requests``. Without ids and dates, the last 90 days; a span given
    is capped at 90 days from its start (or back from its end)."""
    ids = _list(query, "service_request_id")
    if len(ids) > MAX_RESULTS:
        raise GeoReportError(400, f"at most {MAX_RESULTS} service_request_id values")
    raw_status = query.get("status", "")
    statuses = tuple(s.strip(" ") for s in raw_status.split(",")) if raw_status else ()
    for status in statuses:
        if status not in ("open", "closed"):
            raise GeoReportError(400, f"status must be open or closed, not {status[:20]!r}")
    start = parse_datetime(query["start_date"], "start_date") if "start_date" in query else None
    end = parse_datetime(query["end_date"], "end_date") if "end_date" in query else None
    if start and end and start > end:
        raise GeoReportError(400, "start_date is after end_date")
    if ids:
        # "service_request_id ... all other query parameters are ignored" by the spec.
        return Filters(ids=ids)
    if start is None and end is None:
        start, end = now - DEFAULT_SPAN, None
    elif start is None:
        assert end is not None
        start = end - DEFAULT_SPAN
    elif end is None or end - start > DEFAULT_SPAN:
        end = start + DEFAULT_SPAN
    return Filters(codes=_list(query, "service_code"), statuses=statuses, start=start, end=end)


# -- rendering ----------------------------------------------------------------------------------


_XML_HEAD = b'<?xml version="1.0" encoding="utf-8"?>\n'


def _xml(root: str, item: str, rows: Sequence[Mapping[str, Any]]) -> bytes:
    top = ET.Element(root)
    for row in rows:
        el = ET.SubElement(top, item)
        _fill(el, row)
    return _XML_HEAD + ET.tostring(top, encoding="unicode").encode()


def _fill(el: ET.Element, row: Mapping[str, Any]) -> None:
    for key, value in row.items():
        child = ET.SubElement(el, key)
        if isinstance(value, list):
            singular = {"attributes": "attribute", "values": "value", "keywords": "keyword"}
            for v in value:
                sub = ET.SubElement(child, singular.get(key, "item"))
                if isinstance(v, Mapping):
                    _fill(sub, v)
                else:
                    sub.text = str(v)
        elif isinstance(value, Mapping):
            _fill(child, value)
        elif isinstance(value, bool):
            child.text = "true" if value else "false"
        elif value is not None:
            child.text = str(value)


def render(kind: str, data: Any, fmt: str) -> bytes:
    """``data`` in ``fmt`` (``json`` or ``xml``); ``kind`` picks the spec's XML element names:
    services, definition, requests, created, errors."""
    if fmt == "json":
        return json.dumps(data, ensure_ascii=False).encode()
    if kind == "definition":
        top = ET.Element("service_definition")
        _fill(top, data)
        return (
            b'<?xml version="1.0" encoding="utf-8"?>\n'
            + ET.tostring(top, encoding="unicode").encode()
        )
    roots = {
        "services": ("services", "service"),
        "requests": ("service_requests", "request"),
        "created": ("service_requests", "request"),
        "errors": ("errors", "error"),
    }
    root, item = roots[kind]
    return _xml(root, item, data)


def service_dict(s: AdhocService) -> dict[str, Any]:
    svc = s.service
    return {
        "service_code": svc.service_code,
        "service_name": svc.service_name,
        "description": svc.description,
        "metadata": svc.metadata,
        "type": svc.type,
        "keywords": ",".join(svc.keywords),
        "group": svc.group,
    }


def definition_dict(s: AdhocService) -> dict[str, Any]:
    return {
        "service_code": s.service.service_code,
        "attributes": [a.to_dict() for a in sorted(s.attributes, key=lambda a: a.order)],
    }


def errors_body(status: int, description: str) -> list[dict[str, Any]]:
    return [{"code": status, "description": description}]


def w3c(when: dt.datetime | None) -> str | None:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds") if when else None
