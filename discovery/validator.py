"""The SeeClickFix ``open311-validator`` rules for service discovery documents, as findings.

The rules (from that validator's ``tests/discovery.rb`` and the Service_Discovery page), applied to
one document as published, without the lenient reading :mod:`discovery.documents` does:

- the URL or file name ends in ``discovery.json`` / ``discovery.xml``;
- a JSON document's fields are at the top level (a document wrapped in a ``discovery`` object
  fails this rule, and the other rules are applied to what the wrapper holds);
- ``contact`` and ``key_service`` are not empty;
- the changesets (document and every endpoint) are ISO 8601 date-times as Ruby's
  ``Time.iso8601`` reads them (``2011-04-05T17:48:34Z``; ``2011-02-03 14:18`` is not) and lie in
  the past;
- ``endpoints`` is an array with at least one endpoint;
- each endpoint has a ``specification`` (a GeoReport v2 one spelled exactly
  ``http://wiki.open311.org/GeoReport_v2``), a ``url`` without a trailing slash, a ``type`` of
  ``production`` or ``test``, and ``formats`` as a non-empty array of MIME types;
- every GeoReport v2 endpoint supports ``text/xml`` (the spec requires XML).

Warnings, which do not fail the verdict, name what that validator rejects although the document
is right by the specification, with the reason: its XML reader (MultiXml under HTTParty) turns a
lone ``<endpoint>`` (or a lone ``<format>``) into a hash (a string) instead of an array, so a
single-endpoint ``discovery.xml`` fails ten of its rules; and its client reads only a document
served as ``text/xml`` or ``application/json``, so one served as ``application/xml`` fails its
MIME rule (likewise JSON served as anything but ``application/json``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.models import GEOREPORT_V2

from .documents import DocumentError, detect_format, load_json, parse_xml

#: Ruby's ``Time.iso8601`` (``xmlschema``): a date, or a date and a time with seconds.
_XMLSCHEMA = re.compile(
    r"\s*-?\d+-\d\d-\d\d(?:T\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d(?::?\d\d)?)?)?\s*", re.IGNORECASE
)


#: The media types the open311-validator's client reads, by format.
SERVED_AS = {"xml": "text/xml", "json": "application/json"}


@dataclass(frozen=True)
class Finding:
    """One rule applied to one document (or one endpoint of it). A ``warning`` is something the
    open311-validator would fail although the specification allows it: reported, never failing
    the verdict."""

    rule: str
    passed: bool
    detail: str = ""
    warning: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "passed": self.passed, "detail": self.detail}
        if self.warning:
            out["warning"] = True
        return out


@dataclass(frozen=True)
class Verdict:
    findings: tuple[Finding, ...]

    @property
    def passed(self) -> bool:
        return all(f.passed or f.warning for f in self.findings)

    @property
    def failures(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.passed and not f.warning)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.passed and f.warning)

    def failed_rules(self) -> set[str]:
        return {f.rule for f in self.failures}


def iso8601_time(value: Any) -> dt.datetime | None:
    """The changeset as Ruby's ``Time.iso8601`` would read it, or ``None``."""
    if not isinstance(value, str) or not _XMLSCHEMA.fullmatch(value):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _strict_xml(root: ET.Element) -> dict[str, Any]:
    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    def text(element: ET.Element, name: str) -> str | None:
        child = next((c for c in element if local(c.tag) == name), None)
        return None if child is None else (child.text or "").strip()

    endpoints_el = next((c for c in root if local(c.tag) == "endpoints"), None)
    endpoints = []
    for element in endpoints_el if endpoints_el is not None else []:
        if local(element.tag) != "endpoint":
            continue
        formats_el = next((c for c in element if local(c.tag) == "formats"), None)
        endpoints.append(
            {
                "specification": text(element, "specification"),
                "url": text(element, "url"),
                "changeset": text(element, "changeset"),
                "type": text(element, "type"),
                "formats": None
                if formats_el is None
                else [(f.text or "").strip() for f in formats_el if local(f.tag) == "format"],
            }
        )
    return {
        "_root": local(root.tag),
        "changeset": text(root, "changeset"),
        "contact": text(root, "contact"),
        "key_service": text(root, "key_service"),
        "endpoints": endpoints if endpoints_el is not None else None,
    }


def validate_discovery(
    body: bytes,
    content_type: str = "",
    *,
    name: str | None = None,
    served: bool = True,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> Verdict:
    """Apply the open311-validator rules to one discovery document. ``name`` is its URL or file
    name (for the naming rule); ``served``: ``content_type`` is what a server sent (a file's is
    guessed from its name, and not checked)."""
    findings: list[Finding] = []

    def check(rule: str, passed: bool, detail: str = "") -> None:
        findings.append(Finding(rule, passed, "" if passed else detail))

    def warn(rule: str, passed: bool, detail: str) -> None:
        findings.append(Finding(rule, passed, "" if passed else detail, warning=True))

    if name is not None:
        stem = name.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        check(
            "name ends in discovery.<format>",
            stem.rsplit(".", 1)[0] == "discovery",
            f"{stem!r} is not discovery.json or discovery.xml",
        )
    try:
        fmt = detect_format(body, content_type, [])
        if fmt == "xml":
            data: Any = _strict_xml(parse_xml(body))
        else:
            data = load_json(body)
    except (DocumentError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.detail if isinstance(exc, DocumentError) else str(exc)
        check("document is readable", False, reason)
        return Verdict(tuple(findings))
    check("document is readable", True)
    if served:
        media = content_type.split(";", 1)[0].strip().lower()
        warn(
            "served with the media type the open311-validator reads",
            media == SERVED_AS[fmt],
            f"served as {media or 'no media type'}: the open311-validator expects "
            f"{SERVED_AS[fmt]} for {fmt.upper()} and fails the document on its MIME rule; "
            f"serve it as {SERVED_AS[fmt]}",
        )
    if fmt == "xml":
        check("root element is <discovery>", data["_root"] == "discovery", f"<{data['_root']}>")
        count = len(data["endpoints"] or [])
        warn(
            "the open311-validator reads the XML endpoints as an array",
            count != 1,
            "one <endpoint>: the open311-validator's XML reader turns a lone element into a "
            "hash, not an array, and fails ten of its rules on a valid document; listing a "
            "second endpoint (a test one, say) satisfies it",
        )
        lone = [
            i
            for i, e in enumerate(data["endpoints"] or [], 1)
            if isinstance(e.get("formats"), list) and len(e["formats"]) == 1
        ]
        warn(
            "the open311-validator reads the XML formats as an array",
            not lone,
            f"endpoint(s) {', '.join(map(str, lone))} list one <format>: the open311-validator "
            "reads a lone element as a string and fails 'each endpoint should have an array "
            "of formats'",
        )
    elif not isinstance(data, dict) or "endpoints" not in data:
        wrapped = isinstance(data, dict) and isinstance(data.get("discovery"), dict)
        check(
            "fields are at the top level",
            False,
            "wrapped in a 'discovery' object" if wrapped else "not a discovery object",
        )
        if not wrapped:
            return Verdict(tuple(findings))
        data = data["discovery"]  # the other rules apply to what the wrapper holds
    check("contact is not empty", bool(str(data.get("contact") or "").strip()), "no contact")
    check(
        "key_service is not empty",
        bool(str(data.get("key_service") or "").strip()),
        "no key_service",
    )
    current = now()
    _changeset(check, data.get("changeset"), "changeset", current)
    endpoints = data.get("endpoints")
    check(
        "endpoints is an array",
        isinstance(endpoints, list),
        f"endpoints is {type(endpoints).__name__}",
    )
    endpoints = endpoints if isinstance(endpoints, list) else []
    check("at least one endpoint", bool(endpoints), "no endpoints")
    for i, endpoint in enumerate(endpoints, 1):
        where = f"endpoint {i}"
        if not isinstance(endpoint, dict):
            check("endpoint is an object", False, f"{where} is {type(endpoint).__name__}")
            continue
        spec = str(endpoint.get("specification") or "")
        check("endpoint has a specification", bool(spec), f"{where}: no specification")
        if re.search(r"georeport_v2(?![.\d])", spec, re.IGNORECASE):
            check(
                "GeoReport v2 specification string is exact",
                spec == GEOREPORT_V2,
                f"{where}: {spec!r} is not {GEOREPORT_V2!r}",
            )
        url = str(endpoint.get("url") or "")
        check("endpoint has a url", bool(url), f"{where}: no url")
        check(
            "endpoint url has no trailing slash",
            not url.endswith("/"),
            f"{where}: {url!r} ends in a slash",
        )
        _changeset(check, endpoint.get("changeset"), f"{where} changeset", current)
        kind = endpoint.get("type")
        check(
            "endpoint type is production or test",
            kind in ("production", "test"),
            f"{where}: type {kind!r}",
        )
        formats = endpoint.get("formats")
        plain = isinstance(formats, list) and all(isinstance(f, str) and f for f in formats)
        check(
            "formats is an array of MIME types",
            plain,
            f"{where}: formats is {json.dumps(formats)[:80]}",
        )
        check(
            "at least one format",
            isinstance(formats, list) and bool(formats),
            f"{where}: no formats",
        )
        if spec == GEOREPORT_V2:
            check(
                "GeoReport v2 endpoints support text/xml",
                isinstance(formats, list) and "text/xml" in formats,
                f"{where}: formats {formats!r} lack 'text/xml'",
            )
    return Verdict(tuple(findings))


def _changeset(
    check: Callable[[str, bool, str], None], value: Any, where: str, current: dt.datetime
) -> None:
    parsed = iso8601_time(value)
    check("changeset is ISO 8601", parsed is not None, f"{where} {value!r} is not ISO 8601")
    if parsed is not None:
        check("changeset is in the past", parsed < current, f"{where} {value!r} is in the future")


__all__ = ["SERVED_AS", "Finding", "Verdict", "iso8601_time", "validate_discovery"]
