"""Open311 service discovery documents and GeoReport v2 services lists, as cities publish them.

The wiki's Service_Discovery page says one thing and cities publish another. The parsers read the
published variants and say in the result what was not conformant, so an operator can tell a city:

- a top-level ``discovery`` wrapper object around the JSON document;
- ``endpoints`` as an object (``{"endpoint": [...]}``, the XML shape) instead of an array;
- ``formats`` as ``{"format": ...}`` objects instead of strings;
- ``change_set`` / ``environment`` instead of ``changeset`` / ``type``;
- changesets that are not ISO 8601 (``2011-09-1 17:35``), read leniently when the date is clear;
- JSON or XML served under the other's media type; ``text/xml`` and ``application/xml``, with or
  without a charset, are both accepted;
- discovery served beside the ``v2/`` folder (``/open311/discovery.json``, the common form) or
  inside it (``/open311/v2/discovery.json``, FixMyStreet's form). A GeoReport v2 endpoint whose URL
  is the unversioned root above the ``v2/`` folder the document is served from (Zurich's
  FixMyStreet writes ``https://www.zueriwieneu.ch/open311`` in ``/open311/v2/discovery.json``; its
  services list is ``/open311/v2/services.json``) is read at that folder, and the fix is reported;
- services lists with numeric ``service_code`` values (``keywords`` as one comma-separated string
  is the spec's own form and is split; an array is accepted too).

XML is parsed with defusedxml: a document with entity declarations (billion laughs) or external
references (XXE) is refused with :class:`DocumentError`, never expanded or fetched.

An optional ``service_area`` (GeoJSON: a geometry, Feature or FeatureCollection of polygons) in a
discovery document, as proposed in the Open311 wiki's issue 78, is read as the jurisdiction's
boundary.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import defusedxml
import defusedxml.ElementTree as DET
import numpy as np
from shapely.geometry.base import BaseGeometry

from boundaries.geojson import boundary_from_geojson
from common.errors import GeoWebError, InvalidBoundary
from common.models import (
    GEOREPORT_V2,
    Endpoint,
    Service,
    choose_endpoint,
)

#: Media types a discovery document or services list may be served as.
JSON_TYPES = ("application/json", "text/json", "text/javascript", "application/javascript")
XML_TYPES = ("text/xml", "application/xml")
ACCEPT = (*JSON_TYPES, *XML_TYPES)

#: Deepest nesting of JSON arrays and objects, or XML elements, read from a document: far more
#: than any discovery document or services list needs, far less than the depth at which a
#: recursive reader gives up (a document nested 100,000 deep is refused before it is parsed).
MAX_DEPTH = 64

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")

#: A discovery document's file name (the last segment of the URL it was served from).
_DISCOVERY_FILE = re.compile(r"discovery\.(?:json|xml)", re.IGNORECASE)

_LENIENT_DATE = re.compile(
    r"\s*(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2}))?)?\s*"
)


class DocumentError(GeoWebError):
    """A discovery document or services list cannot be read."""

    status = 502
    code = "invalid_document"

    def __init__(self, reason: str, *, url: str | None = None) -> None:
        where = f"{url}: " if url else ""
        super().__init__(f"{where}{reason}", url=url, reason=reason)


@dataclass(frozen=True)
class DiscoveryDocument:
    """A parsed service discovery document; ``issues`` lists what was not conformant."""

    changeset: str | None
    changeset_time: dt.datetime | None
    contact: str
    key_service: str
    endpoints: tuple[Endpoint, ...]
    endpoint_changesets: tuple[str | None, ...]
    service_area: BaseGeometry | None
    issues: tuple[str, ...]
    format: str

    def choose(self) -> tuple[Endpoint | None, tuple[Endpoint, ...]]:
        """The endpoint to use and the alternatives, by the one rule
        (:func:`common.models.choose_endpoint`); document order breaks ties."""
        return choose_endpoint(self.endpoints)


@dataclass(frozen=True)
class ServicesList:
    services: tuple[Service, ...]
    issues: tuple[str, ...]
    format: str


def detect_format(body: bytes, content_type: str, issues: list[str]) -> str:
    """``json`` or ``xml``, from the media type and the first character of the body."""
    media = content_type.split(";", 1)[0].strip().lower()
    start = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    sniffed = "xml" if start == b"<" else "json" if start in (b"{", b"[") else None
    declared = "json" if media in JSON_TYPES else "xml" if media in XML_TYPES else None
    if sniffed is None:
        raise DocumentError("the body is neither JSON nor XML")
    if declared is not None and declared != sniffed:
        issues.append(f"served as {media!r} but the body is {sniffed.upper()}")
    elif declared is None and media:
        issues.append(f"served as {media!r}, not a JSON or XML media type")
    return sniffed


# ---------------------------------------------------------------------------------------------
# Changesets


def parse_changeset(value: str | None, issues: list[str], where: str) -> dt.datetime | None:
    """A changeset as a UTC datetime (naive values are taken as UTC); lenient for the dates
    cities write, with an issue when it is not ISO 8601."""
    if value is None or not value.strip():
        issues.append(f"{where}: no changeset")
        return None
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        match = _LENIENT_DATE.fullmatch(text)
        if match is None:
            issues.append(f"{where}: changeset {text!r} is not a date")
            return None
        parts = [int(p) if p else 0 for p in match.groups()]
        try:
            parsed = dt.datetime(*parts)  # type: ignore[arg-type]
        except ValueError:
            issues.append(f"{where}: changeset {text!r} is not a valid date")
            return None
        issues.append(f"{where}: changeset {text!r} is not ISO 8601 (read as {parsed.isoformat()})")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


# ---------------------------------------------------------------------------------------------
# XML


def check_json_depth(body: bytes, limit: int = MAX_DEPTH) -> None:
    """:class:`DocumentError` when JSON text nests arrays and objects deeper than ``limit``,
    found before any recursive parser sees the text: strings dropped, then the running count of
    the brackets left (at C speed: a 2 MB services list takes milliseconds)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    steps = np.frombuffer(brackets, dtype=np.uint8)
    depth = np.cumsum(np.where((steps == ord("[")) | (steps == ord("{")), 1, -1))
    if depth.size and int(depth.max()) > limit:
        raise DocumentError(f"the JSON nests deeper than {limit} levels; refused")


def _check_xml_depth(root: ET.Element, limit: int = MAX_DEPTH) -> None:
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > limit:
            raise DocumentError(f"the XML nests deeper than {limit} elements; refused")
        stack.extend((child, depth + 1) for child in element)


def parse_xml(body: bytes) -> ET.Element:
    """An XML document, with DTD entities and external references refused, and nesting
    bounded (:data:`MAX_DEPTH`)."""
    try:
        root: ET.Element = DET.fromstring(body, forbid_dtd=False, forbid_entities=True)
    except defusedxml.EntitiesForbidden as exc:
        raise DocumentError(
            f"the XML declares entities ({exc.name!r}); refused (entity expansion attack)"
        ) from None
    except defusedxml.ExternalReferenceForbidden as exc:
        raise DocumentError(
            f"the XML references an external resource ({exc.sysid!r}); refused (XXE)"
        ) from None
    except defusedxml.DefusedXmlException as exc:
        raise DocumentError(f"the XML is refused: {exc}") from None
    except ET.ParseError as exc:
        raise DocumentError(f"the XML is malformed: {exc}") from None
    _check_xml_depth(root)
    return root


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in element if _local(c.tag) == name), None)


def _children(element: ET.Element | None, name: str) -> list[ET.Element]:
    return [] if element is None else [c for c in element if _local(c.tag) == name]


def _text(element: ET.Element, *names: str) -> str | None:
    for name in names:
        child = _child(element, name)
        if child is not None:
            return (child.text or "").strip()
    return None


def _xml_to_discovery(root: ET.Element, issues: list[str]) -> dict[str, Any]:
    if _local(root.tag) != "discovery":
        raise DocumentError(f"the XML root is <{_local(root.tag)}>, not <discovery>")
    endpoints = []
    for element in _children(_child(root, "endpoints"), "endpoint"):
        formats = [(f.text or "").strip() for f in _children(_child(element, "formats"), "format")]
        endpoints.append(
            {
                "specification": _text(element, "specification"),
                "url": _text(element, "url"),
                "changeset": _text(element, "changeset"),
                "change_set": _text(element, "change_set"),
                "type": _text(element, "type"),
                "environment": _text(element, "environment"),
                "formats": formats,
            }
        )
    area = _text(root, "service_area")
    return {
        "changeset": _text(root, "changeset"),
        "change_set": _text(root, "change_set"),
        "contact": _text(root, "contact"),
        "key_service": _text(root, "key_service"),
        "endpoints": endpoints,
        "service_area": _json_or_none(area, issues) if area else None,
    }


def _json_or_none(text: str, issues: list[str]) -> Any:
    try:
        check_json_depth(text.encode("utf-8", "replace"))
        return json.loads(text)
    except (ValueError, DocumentError):
        issues.append("service_area is not GeoJSON; ignored")
        return None


# ---------------------------------------------------------------------------------------------
# Discovery documents


def parse_discovery(
    body: bytes, content_type: str = "", *, url: str | None = None
) -> DiscoveryDocument:
    """A discovery document (JSON or XML) in its published variants; :class:`DocumentError`
    when it cannot be read at all. ``url`` is where it was served from: errors name it, and an
    endpoint given as the unversioned root of the ``v2/`` folder it is served from is read at
    that folder."""
    issues: list[str] = []
    try:
        fmt = detect_format(body, content_type, issues)
        data = _xml_to_discovery(parse_xml(body), issues) if fmt == "xml" else load_json(body)
        return _discovery_from(data, issues, fmt, url)
    except DocumentError as error:
        if url is not None and error.fields.get("url") is None:
            raise DocumentError(error.fields["reason"], url=url) from None
        raise


def load_json(body: bytes) -> Any:
    """JSON text as read from a stranger: nesting bounded first, then parsed;
    :class:`DocumentError` when malformed."""
    check_json_depth(body)
    try:
        return json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DocumentError(f"the JSON is malformed: {exc}") from None


def _discovery_from(
    data: Any, issues: list[str], fmt: str, served_from: str | None = None
) -> DiscoveryDocument:
    if isinstance(data, dict) and isinstance(data.get("discovery"), dict) and len(data) == 1:
        issues.append("the document is wrapped in a top-level 'discovery' object")
        data = data["discovery"]
    if not isinstance(data, dict):
        raise DocumentError("a discovery document must be an object")
    changeset = _renamed(data, "changeset", "change_set", issues, "document")
    changeset_time = parse_changeset(changeset, issues, "document")
    contact = _string(data.get("contact"))
    key_service = _string(data.get("key_service"))
    for name, value in (("contact", contact), ("key_service", key_service)):
        if not value:
            issues.append(f"document: no {name}")
    raw_endpoints = data.get("endpoints")
    if isinstance(raw_endpoints, dict):
        issues.append("'endpoints' is an object, not an array")
        inner = raw_endpoints.get("endpoint", raw_endpoints)
        raw_endpoints = inner if isinstance(inner, list) else [inner]
    if not isinstance(raw_endpoints, list) or not raw_endpoints:
        raise DocumentError("the document lists no endpoints")
    endpoints: list[Endpoint] = []
    changesets: list[str | None] = []
    for i, raw in enumerate(raw_endpoints, 1):
        where = f"endpoint {i}"
        if not isinstance(raw, dict):
            issues.append(f"{where}: not an object; skipped")
            continue
        url = _string(raw.get("url"))
        if not url:
            issues.append(f"{where}: no url; skipped")
            continue
        specification = _string(raw.get("specification"))
        if specification != GEOREPORT_V2 and specification.rstrip("/") == GEOREPORT_V2:
            issues.append(f"{where}: specification {specification!r} has a trailing slash")
            specification = GEOREPORT_V2
        kind = (_renamed(raw, "type", "environment", issues, where) or "").lower()
        if kind not in ("production", "test"):
            issues.append(f"{where}: type {kind!r} is neither production nor test")
        endpoint_changeset = _renamed(raw, "changeset", "change_set", issues, where)
        parse_changeset(endpoint_changeset, issues, where)
        formats = _formats(raw.get("formats"), issues, where)
        if specification == GEOREPORT_V2 and served_from is not None:
            url = _versioned_url(url, served_from, issues, where)
        endpoints.append(
            Endpoint(
                url=url,
                specification=specification,
                type=kind or "production",
                formats=formats,
            )
        )
        changesets.append(endpoint_changeset)
    area = data.get("service_area")
    return DiscoveryDocument(
        changeset=changeset,
        changeset_time=changeset_time,
        contact=contact,
        key_service=key_service,
        endpoints=tuple(endpoints),
        endpoint_changesets=tuple(changesets),
        service_area=_service_area(area, issues) if area is not None else None,
        issues=tuple(issues),
        format=fmt,
    )


def _versioned_url(url: str, served_from: str, issues: list[str], where: str) -> str:
    """The GeoReport v2 base URL for an endpoint URL read from a document served at
    ``served_from``: the ``v2/`` folder the document sits in when ``url`` names that folder's
    parent (the unversioned root), else ``url`` unchanged."""
    folder, _, name = served_from.split("?", 1)[0].split("#", 1)[0].rpartition("/")
    if not _DISCOVERY_FILE.fullmatch(name) or not folder.lower().endswith("/v2"):
        return url
    root = folder[: -len("/v2")]
    if url.rstrip("/").lower() != root.lower():
        return url
    issues.append(
        f"{where}: url {url!r} is the unversioned root of the 'v2/' folder the document is "
        f"served from; GeoReport v2 is read at {folder!r}"
    )
    return folder


def _string(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _renamed(
    data: dict[str, Any], name: str, variant: str, issues: list[str], where: str
) -> str | None:
    value = data.get(name)
    if value in (None, "") and data.get(variant) not in (None, ""):
        issues.append(f"{where}: {variant!r} instead of {name!r}")
        value = data.get(variant)
    return None if value in (None, "") else str(value).strip()


def _formats(raw: Any, issues: list[str], where: str) -> tuple[str, ...]:
    if isinstance(raw, dict):
        issues.append(f"{where}: formats is an object, not an array")
        raw = raw.get("format", [])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        issues.append(f"{where}: no formats")
        return ()
    found: list[str] = []
    wrapped = False
    for item in raw:
        if isinstance(item, dict):
            wrapped = True
            item = item.get("format")
        values = item if isinstance(item, list) else [item]
        found.extend(str(v).strip() for v in values if v)
    if wrapped:
        issues.append(f"{where}: formats given as {{'format': ...}} objects")
    if not found:
        issues.append(f"{where}: no formats")
    for value in found:
        if value != value.lower():
            issues.append(f"{where}: format {value!r} is not lowercase")
    return tuple(f.lower() for f in found)


def _service_area(data: Any, issues: list[str]) -> BaseGeometry | None:
    """The ``service_area`` by the rules every boundary path applies (``boundaries.geojson``);
    one that cannot be used is ignored with the reason, since the document is still useful."""
    try:
        geometry, repairs = boundary_from_geojson(data, accept="collection")
    except InvalidBoundary as error:
        issues.append(f"service_area: {error.detail}; ignored")
        return None
    issues.extend(f"service_area: {note}" for note in repairs)
    return geometry


# ---------------------------------------------------------------------------------------------
# Services lists


def parse_services(body: bytes, content_type: str = "", *, url: str | None = None) -> ServicesList:
    """A GeoReport v2 services list (JSON array or ``<services>`` XML)."""
    issues: list[str] = []
    try:
        fmt = detect_format(body, content_type, issues)
        if fmt == "xml":
            root = parse_xml(body)
            if _local(root.tag) != "services":
                raise DocumentError(f"the XML root is <{_local(root.tag)}>, not <services>")
            items: Any = [
                {_local(c.tag): (c.text or "").strip() for c in element}
                for element in _children(root, "service")
            ]
        else:
            items = load_json(body)
        if isinstance(items, dict):
            for key in ("services", "service"):
                if isinstance(items.get(key), list):
                    issues.append(f"the list is wrapped in a {key!r} object")
                    items = items[key]
                    break
        if not isinstance(items, list):
            raise DocumentError("a services list must be an array of services")
        return ServicesList(_services(items, issues), tuple(issues), fmt)
    except DocumentError as error:
        if url is not None and error.fields.get("url") is None:
            raise DocumentError(error.fields["reason"], url=url) from None
        raise


def _services(items: list[Any], issues: list[str]) -> tuple[Service, ...]:
    services: list[Service] = []
    numeric = skipped = 0
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, dict) or item.get("service_code") in (None, ""):
            skipped += 1
            continue
        code = item["service_code"]
        if not isinstance(code, str):
            numeric += 1
        code = str(code).strip()
        if code in seen:
            issues.append(f"service_code {code!r} appears twice; the first is kept")
            continue
        seen.add(code)
        keywords = item.get("keywords")
        if isinstance(keywords, str):  # the spec's form: one comma-separated string
            keywords = [k.strip() for k in keywords.split(",") if k.strip()]
        elif not isinstance(keywords, list):
            keywords = []
        metadata = item.get("metadata")
        if isinstance(metadata, str):
            metadata = metadata.strip().lower() == "true"
        services.append(
            Service(
                service_code=code,
                service_name=_string(item.get("service_name")) or code,
                description=_string(item.get("description")),
                keywords=tuple(str(k) for k in keywords),
                group=_string(item.get("group")),
                type=_string(item.get("type")) or "realtime",
                metadata=bool(metadata),
            )
        )
    if numeric:
        issues.append(f"{numeric} service_code value(s) are numbers, not strings")
    if skipped:
        issues.append(f"{skipped} entries without a service_code skipped")
    return tuple(services)


__all__ = [
    "ACCEPT",
    "DiscoveryDocument",
    "DocumentError",
    "ServicesList",
    "choose_endpoint",
    "parse_discovery",
    "parse_services",
]
