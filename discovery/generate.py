"""Writing conformant ``discovery.json`` and ``discovery.xml`` for a jurisdiction that publishes
through us. The output passes every rule of :mod:`discovery.validator`: the exact specification
string, ISO 8601 changesets (UTC, seconds, ``Z``), non-empty contact and key_service, formats as an
array that includes ``text/xml``, endpoint URLs without a trailing slash. The JSON is the Spark
convention mapping of the XML, as the Service_Discovery page asks."""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET
from typing import Any

from common.models import GEOREPORT_V2, Jurisdiction

FORMATS = ("text/xml", "application/json")


def iso_changeset(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def discovery_document(
    jurisdiction: Jurisdiction, *, contact: str, key_service: str, changeset: dt.datetime
) -> dict[str, Any]:
    """The discovery document as a dict (JSON shape). Raises :class:`ValueError` when the
    jurisdiction has no GeoReport v2 endpoint or contact/key_service is empty."""
    if not contact.strip() or not key_service.strip():
        raise ValueError("contact and key_service must not be empty")
    endpoints = [e for e in jurisdiction.endpoints if e.specification == GEOREPORT_V2]
    if not endpoints:
        raise ValueError(f"{jurisdiction.id} has no GeoReport v2 endpoint to publish")
    stamp = iso_changeset(changeset)
    return {
        "changeset": stamp,
        "contact": contact.strip(),
        "key_service": key_service.strip(),
        "endpoints": [
            {
                "specification": GEOREPORT_V2,
                "url": e.url.rstrip("/"),
                "changeset": stamp,
                "type": e.type if e.type in ("production", "test") else "production",
                "formats": list(FORMATS),
            }
            for e in endpoints
        ],
    }


def to_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def to_xml(document: dict[str, Any]) -> str:
    root = ET.Element("discovery")
    for name in ("changeset", "contact", "key_service"):
        ET.SubElement(root, name).text = document[name]
    endpoints = ET.SubElement(root, "endpoints")
    for endpoint in document["endpoints"]:
        element = ET.SubElement(endpoints, "endpoint")
        for name in ("specification", "url", "changeset", "type"):
            ET.SubElement(element, name).text = endpoint[name]
        formats = ET.SubElement(element, "formats")
        for value in endpoint["formats"]:
            ET.SubElement(formats, "format").text = value
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


__all__ = ["discovery_document", "iso_changeset", "to_json", "to_xml"]
