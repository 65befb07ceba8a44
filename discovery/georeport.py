"""The GeoReport v2 client: every call this project makes to a city's Open311 endpoint goes through
:class:`GeoReportClient` (``geoweb report``, the Python client, the ad hoc service's forwarder), and
every request is checked against a service definition by :func:`check_attributes`, the one rule
(the ad hoc service checks the forms posted to it with it too).

All HTTP goes through :class:`~discovery.fetch.Fetcher` (the address guard, size and time bounds);
answers are read with the bounded parsers of :mod:`discovery.documents`. What cities publish
differs from the spec in ways the readers accept (each noted where it is read):

- the POST answer as a bare object, or as ``{"service_requests": [...]}``, instead of a list;
- ids, tokens, codes and value keys as JSON numbers (the spec's own examples write
  ``"service_request_id":293944``);
- a service definition whose lists are wrapped as in the spec's XML (``{"attribute": [...]}``,
  ``{"value": [...]}``), as XML-to-JSON converters write them;
- ``true``/``false`` as strings.

A failed POST says whether the city may have the request, so a caller never files it twice:
:class:`NotSent` (it never reached the city), :class:`Refused` (the city said no),
:class:`CityFailed` (the city failed; taken as not filed), :class:`Uncertain` (it may have been
filed: check with the city before sending it again).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from common.errors import GeoWebError, InvalidInput
from common.models import Service
from discovery.documents import (
    ACCEPT,
    DocumentError,
    detect_format,
    load_json,
    parse_services,
    parse_xml,
)
from discovery.fetch import Fetched, Fetcher, FetchError, PostMaybeSent, PostNotSent

#: The datatypes a GeoReport v2 service definition attribute may have.
DATATYPES = frozenset({"string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"})

#: The W3C date-time profile the spec names: a complete date, time to the second, and a zone
#: ("Timezone information (either Z meaning UTC, or an HH:MM offset from UTC) must be included").
_W3C = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


# ---------------------------------------------------------------------------------------------
# What a city answers


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute of a service definition."""

    code: str
    description: str
    datatype: str = "string"
    required: bool = False
    variable: bool = True
    order: int = 1
    datatype_description: str = ""
    values: tuple[tuple[str, str], ...] = ()  # (key, name) for the list datatypes

    def to_dict(self) -> dict[str, Any]:
        return {
            "variable": self.variable,
            "code": self.code,
            "datatype": self.datatype,
            "required": self.required,
            "datatype_description": self.datatype_description,
            "order": self.order,
            "description": self.description,
            "values": [{"key": k, "name": n} for k, n in self.values],
        }


@dataclass(frozen=True, slots=True)
class Definition:
    """A service definition: the attributes a request for the service may or must carry."""

    service_code: str
    attributes: tuple[Attribute, ...]


@dataclass(frozen=True, slots=True)
class Filed:
    """What a city answered to a POST: its id for the request, or a token to ask for the id
    later (both ``None`` only for a ``blackbox`` service, which gives neither)."""

    service_request_id: str | None
    token: str | None
    notice: str


@dataclass(frozen=True, slots=True)
class CityRequest:
    """One service request as the city shows it (``GET requests/{id}``)."""

    service_request_id: str
    status: str
    status_notes: str
    agency_responsible: str
    service_code: str
    updated: dt.datetime | None


# ---------------------------------------------------------------------------------------------
# Errors


class InvalidAttributes(InvalidInput):
    """The request's attributes do not fit the service definition."""

    code = "invalid_attributes"

    def __init__(self, detail: str, *, attribute: str) -> None:
        super().__init__(detail, attribute=attribute)


class NotSent(GeoWebError):
    """The request never reached the city (no connection, the name does not resolve, the address
    guard refused it, the connect timeout): it is not filed, and may be sent again."""

    status = 502
    code = "city_unreachable"

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"{endpoint} was not reached: {reason}", endpoint=endpoint, reason=reason)


class Refused(GeoWebError):
    """The city refused the request (an HTTP 4xx, or a 307/308 naming another URL): not filed.
    ``http_status`` is the city's status (``status`` is this error's own, as for every
    :class:`GeoWebError`), ``errors`` its ``(code, description)`` pairs."""

    status = 502
    code = "city_refused"

    def __init__(
        self, endpoint: str, http_status: int, errors: tuple[tuple[str, str], ...] = ()
    ) -> None:
        said = "; ".join(description or code for code, description in errors)
        super().__init__(
            f"{endpoint} refused the request (HTTP {http_status})" + (f": {said}" if said else ""),
            endpoint=endpoint,
            http_status=http_status,
            errors=[list(e) for e in errors],
        )
        self.http_status = http_status
        self.errors = errors


class CityFailed(GeoWebError):
    """The city answered with a server error (HTTP 5xx). Taken as not filed: a 5xx says the
    server could not do what was asked, and GeoReport v2 servers answer a request they filed
    with its id. Sending it again later may file it twice only with a server that files a request
    and then fails to answer, which the spec gives no way to tell apart."""

    status = 502
    code = "city_failed"

    def __init__(
        self, endpoint: str, http_status: int, errors: tuple[tuple[str, str], ...] = ()
    ) -> None:
        said = "; ".join(description or code for code, description in errors)
        super().__init__(
            f"{endpoint} failed (HTTP {http_status})" + (f": {said}" if said else ""),
            endpoint=endpoint,
            http_status=http_status,
            errors=[list(e) for e in errors],
        )
        self.http_status = http_status
        self.errors = errors


class Uncertain(GeoWebError):
    """The request may have reached the city, but no usable answer came back (the connection cut
    or timed out after it was sent, an answer that cannot be read, a redirect, neither id nor
    token): it may be filed. Check with the city before sending it again."""

    status = 502
    code = "city_uncertain"

    def __init__(self, endpoint: str, reason: str, *, http_status: int | None = None) -> None:
        super().__init__(
            f"{endpoint} may have filed the request, but {reason}; check with the city before "
            "sending it again",
            endpoint=endpoint,
            reason=reason,
            http_status=http_status,
        )
        self.http_status = http_status


# ---------------------------------------------------------------------------------------------
# The one rule for attributes


def w3c_datetime(text: str) -> dt.datetime:
    """A W3C date-time with its zone (``2010-01-01T00:00:00Z``), as the spec's dates are;
    :class:`ValueError` otherwise."""
    if not _W3C.fullmatch(text):
        raise ValueError(f"not a W3C date-time: {text[:40]!r}")
    return dt.datetime.fromisoformat(text.upper().replace("Z", "+00:00"))


def check_attributes(
    attributes: Sequence[Attribute], given: Mapping[str, Sequence[str]], *, max_field: int = 500
) -> dict[str, str | list[str]]:
    """The ``given`` attribute values (code -> values) checked against a service definition's
    ``attributes``: each code is one the definition has, every required one that asks for input
    (``variable``) is there, list values are among the definition's keys, numbers are finite
    numbers and datetimes W3C date-times. Empty values count as not given. The result has one
    string per attribute, a list for a ``multivaluelist`` (what :func:`report_form` writes).
    :class:`InvalidAttributes` names the first attribute that does not fit.

    A datatype the spec does not name is checked as a string (a city's extension is its own
    business)."""
    values_of: dict[str, list[str]] = {}
    for code, values in given.items():
        listed = [values] if isinstance(values, str) else list(values)
        values_of[code] = [v.strip() for v in listed if v.strip()]
    defined = {a.code: a for a in attributes}
    unknown = sorted(set(values_of) - set(defined))
    if unknown:
        known = ", ".join(repr(c) for c in sorted(defined)) or "none"
        raise InvalidAttributes(
            f"no attribute {unknown[0]!r} in the service definition (it has: {known})",
            attribute=unknown[0],
        )
    result: dict[str, str | list[str]] = {}
    for attr in sorted(attributes, key=lambda a: a.order):
        values = values_of.get(attr.code, [])
        if not values:
            if attr.required and attr.variable:
                raise InvalidAttributes(
                    f"attribute {attr.code!r} is required ({_describe(attr)})", attribute=attr.code
                )
            continue
        if any(len(v) > max_field for v in values):
            raise InvalidAttributes(
                f"attribute {attr.code!r} is longer than {max_field} characters",
                attribute=attr.code,
            )
        keys = {k for k, _ in attr.values}
        if attr.datatype == "multivaluelist":
            bad = [v for v in values if v not in keys]
            if bad:
                raise InvalidAttributes(
                    f"attribute {attr.code!r}: {bad[0]!r} is not one of {sorted(keys)}",
                    attribute=attr.code,
                )
            result[attr.code] = values
            continue
        value = values[-1]
        if attr.datatype == "singlevaluelist" and value not in keys:
            raise InvalidAttributes(
                f"attribute {attr.code!r}: {value!r} is not one of {sorted(keys)}",
                attribute=attr.code,
            )
        if attr.datatype == "number" and not _finite(value):
            raise InvalidAttributes(
                f"attribute {attr.code!r} must be a number", attribute=attr.code
            )
        if attr.datatype == "datetime":
            try:
                w3c_datetime(value)
            except ValueError:
                raise InvalidAttributes(
                    f"attribute {attr.code!r} is not a W3C date-time: {value[:40]!r}",
                    attribute=attr.code,
                ) from None
        result[attr.code] = value
    return result


def _describe(attr: Attribute) -> str:
    what = attr.description or attr.datatype
    if attr.values:
        what += "; one of " + ", ".join(f"{k} ({n})" if n != k else k for k, n in attr.values)
    return what


def _finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def report_form(
    *,
    service_code: str,
    lat: float | None = None,
    long: float | None = None,
    address_string: str = "",
    description: str = "",
    attributes: Mapping[str, str | Sequence[str]] = {},
    media_url: str = "",
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    phone: str = "",
) -> dict[str, list[str]]:
    """The form of ``POST requests``, as the spec names its fields. An attribute with one value
    (a string, or a list of one) is ``attribute[code]=value``; one with several (a
    ``multivaluelist``) is ``attribute[code][]=value`` once per value, as the spec writes "multiple
    values for the same code in the case of a multivaluelist datatype
    (attribute[code1][]=value1&attribute[code1][]=value2...)". Empty fields are left out: the spec
    treats an empty parameter as one not given."""
    form: dict[str, list[str]] = {"service_code": [service_code]}
    if lat is not None and long is not None:
        form["lat"], form["long"] = [repr(float(lat))], [repr(float(long))]
    for name, value in (
        ("address_string", address_string),
        ("description", description),
        ("media_url", media_url),
        ("email", email),
        ("first_name", first_name),
        ("last_name", last_name),
        ("phone", phone),
    ):
        if value:
            form[name] = [value]
    for code, values in attributes.items():
        listed = [values] if isinstance(values, str) else [v for v in values if v]
        if len(listed) == 1:
            form[f"attribute[{code}]"] = listed
        elif listed:
            form[f"attribute[{code}][]"] = listed
    return form


# ---------------------------------------------------------------------------------------------
# Reading answers


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(value: Any) -> str:
    """A scalar as text: ids and codes may come as JSON numbers; ``null`` is empty."""
    if value is None or isinstance(value, dict | list):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def _flag(value: Any, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    return default if not text else text in ("true", "1", "yes")


def _xml_value(element: ET.Element) -> Any:
    """An XML element as JSON would carry it: text for a leaf, else a dict of its children, a
    list for a name that repeats or is a list item in the spec (:data:`_REPEATED`)."""
    children = list(element)
    if not children:
        return (element.text or "").strip()
    grouped: dict[str, list[Any]] = {}
    for child in children:
        grouped.setdefault(_local(child.tag), []).append(_xml_value(child))
    return {k: v if k in _REPEATED or len(v) > 1 else v[0] for k, v in grouped.items()}


#: Elements that are list items in the spec's XML (``<attributes><attribute>``...), read as
#: lists even when only one is there.
_REPEATED = frozenset({"attribute", "value", "request", "error", "service"})


def read_document(body: bytes, content_type: str = "") -> Any:
    """A GeoReport v2 answer (JSON or XML, by its media type and first character) as JSON
    values; an XML root becomes ``{root: value}``. :class:`DocumentError` when unreadable."""
    fmt = detect_format(body, content_type, [])
    if fmt == "json":
        return load_json(body)
    root = parse_xml(body)
    return {_local(root.tag): _xml_value(root)}


def _unwrap(data: Any, *names: str) -> Any:
    """``data`` without the wrappers JSON from XML conversions (and some servers) put around a
    list: ``{"service_requests": {"request": [...]}}`` -> ``[...]``."""
    for name in names:
        if isinstance(data, dict) and name in data and len(data) == 1:
            data = data[name]
    return data


def _items(data: Any, *wrappers: str) -> list[dict[str, Any]]:
    data = _unwrap(data, *wrappers)
    if isinstance(data, dict):
        # A bare object where the spec has a list of one (several servers answer so).
        return [data]
    if isinstance(data, list):
        return [item for item in data if isinstance(item, dict)]
    return []


def parse_errors(body: bytes, content_type: str = "") -> tuple[tuple[str, str], ...]:
    """The ``(code, description)`` pairs of the spec's error body (JSON
    ``[{"code", "description"}]`` or XML ``<errors><error>``); none when it is not one."""
    try:
        data = read_document(body, content_type)
    except DocumentError:
        return ()
    return tuple(
        (_text(item.get("code")), _text(item.get("description"))[:500])
        for item in _items(data, "errors", "error")
        if "code" in item or "description" in item
    )


def parse_filed(body: bytes, content_type: str = "") -> Filed | None:
    """The answer to ``POST requests``: the spec's list of one ``request`` with
    ``service_request_id`` or ``token`` (and ``service_notice``, ``account_id``), or a bare
    object (real servers answer so). A request with neither id nor token is read as such (a
    ``blackbox`` service's answer); ``None`` when there is no request in it at all;
    :class:`DocumentError` when it cannot be read."""
    items = _items(read_document(body, content_type), "service_requests", "request")
    filed = [
        Filed(
            _text(item.get("service_request_id")) or None,
            _text(item.get("token")) or None,
            _text(item.get("service_notice")),
        )
        for item in items
    ]
    return next((f for f in filed if f.service_request_id or f.token), None) or next(
        iter(filed), None
    )


def _attribute(raw: dict[str, Any], position: int) -> Attribute:
    values = _unwrap(raw.get("values"), "value")
    if isinstance(values, dict):
        values = [values]
    pairs = tuple(
        (_text(v.get("key")), _text(v.get("name")) or _text(v.get("key")))
        for v in (values if isinstance(values, list) else [])
        if isinstance(v, dict) and _text(v.get("key"))
    )
    try:
        order = int(_text(raw.get("order")) or position)
    except ValueError:
        order = position
    return Attribute(
        code=_text(raw.get("code")),
        description=_text(raw.get("description")),
        datatype=_text(raw.get("datatype")).lower() or "string",
        required=_flag(raw.get("required"), False),
        variable=_flag(raw.get("variable"), True),
        order=order,
        datatype_description=_text(raw.get("datatype_description")),
        values=pairs,
    )


def parse_definition(body: bytes, content_type: str = "", *, service_code: str = "") -> Definition:
    """A service definition (JSON object or ``<service_definition>`` XML)."""
    data = _unwrap(read_document(body, content_type), "service_definition")
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        raise DocumentError("a service definition must be an object")
    raw = _unwrap(data.get("attributes"), "attribute")
    if isinstance(raw, dict):
        raw = [raw]
    attributes = tuple(
        _attribute(item, n)
        for n, item in enumerate(raw if isinstance(raw, list) else [], 1)
        if isinstance(item, dict) and _text(item.get("code"))
    )
    return Definition(_text(data.get("service_code")) or service_code, attributes)


def _datetime(text: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def parse_requests(body: bytes, content_type: str = "") -> tuple[CityRequest, ...]:
    """Service requests as ``GET requests`` and ``GET requests/{id}`` answer them."""
    return tuple(
        CityRequest(
            service_request_id=_text(item.get("service_request_id")),
            status=_text(item.get("status")),
            status_notes=_text(item.get("status_notes")),
            agency_responsible=_text(item.get("agency_responsible")),
            service_code=_text(item.get("service_code")),
            updated=_datetime(_text(item.get("updated_datetime"))),
        )
        for item in _items(read_document(body, content_type), "service_requests", "request")
        if _text(item.get("service_request_id"))
    )


# ---------------------------------------------------------------------------------------------
# The client


class GeoReportClient:
    """One city's GeoReport v2 endpoint, spoken to through a guarded :class:`Fetcher`.

    ``endpoint`` is the base URL (``https://city.example/open311/v2``); ``jurisdiction_id`` is
    sent with every call when set (the spec: "only required if the endpoint serves multiple
    jurisdictions"); ``api_key`` only with POSTs, the one method the spec says requires it (a key
    in a GET URL would be kept in caches and logs); ``fmt`` is ``json`` or ``xml`` (the spec makes
    XML the required format, JSON optional)."""

    def __init__(
        self,
        fetcher: Fetcher,
        endpoint: str,
        *,
        jurisdiction_id: str | None = None,
        api_key: str | None = None,
        fmt: str = "json",
    ) -> None:
        if fmt not in ("json", "xml"):
            raise ValueError(f"fmt must be json or xml, not {fmt!r}")
        self.fetcher = fetcher
        self.endpoint = endpoint.rstrip("/")
        self.jurisdiction_id = jurisdiction_id or None
        self.api_key = api_key or None
        self.fmt = fmt

    def url(self, path: str) -> str:
        """The URL of a method (``services``, ``requests/123``), with the format and the
        jurisdiction_id."""
        query = f"?{urlencode({'jurisdiction_id': self.jurisdiction_id})}"
        return f"{self.endpoint}/{path}.{self.fmt}" + (query if self.jurisdiction_id else "")

    async def _get(self, path: str, *, revalidate: bool = False) -> Fetched:
        fetched = await self.fetcher.get(self.url(path), accept=ACCEPT, revalidate=revalidate)
        if revalidate and fetched.stale:
            # A status read must be current; a stored copy served while the city fails is not.
            raise FetchError(fetched.url, fetched.error or "the city did not answer")
        return fetched

    async def services(self) -> tuple[Service, ...]:
        """The services list (``GET services``); a cached copy while it is fresh."""
        fetched = await self._get("services")
        return parse_services(fetched.body, fetched.content_type, url=fetched.url).services

    async def definition(self, service_code: str) -> Definition:
        """The service definition of ``service_code`` (``GET services/{code}``)."""
        fetched = await self._get(f"services/{quote(service_code, safe='')}")
        try:
            return parse_definition(fetched.body, fetched.content_type, service_code=service_code)
        except DocumentError as error:
            raise DocumentError(error.fields["reason"], url=fetched.url) from None

    async def request(self, service_request_id: str) -> CityRequest:
        """One request as the city shows it now (``GET requests/{id}``, never from a cache)."""
        fetched = await self._get(f"requests/{quote(service_request_id, safe='')}", revalidate=True)
        try:
            found = parse_requests(fetched.body, fetched.content_type)
        except DocumentError as error:
            raise DocumentError(error.fields["reason"], url=fetched.url) from None
        for city_request in found:
            if city_request.service_request_id == service_request_id:
                return city_request
        raise DocumentError(f"the answer has no request {service_request_id!r}", url=fetched.url)

    async def request_id_for_token(self, token: str) -> str | None:
        """The city's id for a request it gave a token for (``GET tokens/{token}``); ``None``
        while it has none: an answer without ``service_request_id``, or a 404 (the spec's "token
        not found", which a server that files in batches answers until the batch has run)."""
        try:
            fetched = await self._get(f"tokens/{quote(token, safe='')}", revalidate=True)
        except FetchError as error:
            if error.fields.get("http_status") == 404:
                return None
            raise
        try:
            document = read_document(fetched.body, fetched.content_type)
            items = _items(document, "service_requests", "request")
        except DocumentError as error:
            raise DocumentError(error.fields["reason"], url=fetched.url) from None
        return next((_text(i.get("service_request_id")) or None for i in items), None)

    async def post(
        self, form: Mapping[str, str | Sequence[str]], *, blackbox: bool = False
    ) -> Filed:
        """File a service request (``POST requests``, form-encoded) with the jurisdiction_id and
        api_key added. ``blackbox``: the service's ``type`` is ``blackbox`` ("No service request
        ID will be returned"), so an answer without id or token is still filed.

        Raises :class:`NotSent`, :class:`Refused`, :class:`CityFailed` or :class:`Uncertain`
        (see the module's docstring). A redirect is not followed: a 307 or 308 asks for the POST
        to be repeated at another URL, so nothing was filed here (:class:`Refused`, naming it);
        any other 3xx (303 is what servers answer after filing a form) is :class:`Uncertain`."""
        sent: dict[str, str | Sequence[str]] = dict(form)
        if self.jurisdiction_id:
            sent["jurisdiction_id"] = self.jurisdiction_id
        if self.api_key:
            sent["api_key"] = self.api_key
        url = f"{self.endpoint}/requests.{self.fmt}"
        try:
            posted = await self.fetcher.post(url, sent, accept=ACCEPT)
        except PostNotSent as error:
            raise NotSent(self.endpoint, error.fields["reason"]) from None
        except PostMaybeSent as error:
            status = error.fields.get("http_status")
            if isinstance(status, int) and 400 <= status < 500:
                raise Refused(self.endpoint, status) from None
            if isinstance(status, int) and status >= 500:
                raise CityFailed(self.endpoint, status) from None
            raise Uncertain(self.endpoint, error.fields["reason"], http_status=status) from None
        status = posted.status
        if status in (307, 308):
            where = posted.location or "(no Location)"
            moved = ("moved", f"the endpoint answered {status}: repeat the request at {where}")
            raise Refused(self.endpoint, status, (moved,))
        if 400 <= status < 500:
            raise Refused(self.endpoint, status, parse_errors(posted.body, posted.content_type))
        if status >= 500:
            raise CityFailed(self.endpoint, status, parse_errors(posted.body, posted.content_type))
        if not 200 <= status < 300:
            raise Uncertain(
                self.endpoint,
                f"it answered HTTP {status} instead of the request's id",
                http_status=status,
            )
        try:
            filed = parse_filed(posted.body, posted.content_type) if posted.body.strip() else None
        except DocumentError as error:
            raise Uncertain(
                self.endpoint,
                f"its answer cannot be read: {error.fields['reason']}",
                http_status=status,
            ) from None
        if filed is None or not (filed.service_request_id or filed.token):
            if blackbox:
                return filed or Filed(None, None, "")
            raise Uncertain(
                self.endpoint,
                "its answer names neither a service_request_id nor a token",
                http_status=status,
            )
        return filed


__all__ = [
    "DATATYPES",
    "Attribute",
    "CityFailed",
    "CityRequest",
    "Definition",
    "Filed",
    "GeoReportClient",
    "InvalidAttributes",
    "NotSent",
    "Refused",
    "Uncertain",
    "check_attributes",
    "parse_definition",
    "parse_errors",
    "parse_filed",
    "parse_requests",
    "report_form",
    "w3c_datetime",
]
