"""The ad hoc service's catalogue: common concerns with keywords in several languages, so the
resolver's concern matcher finds them whatever language the app speaks; or the operator's own
catalogue from a YAML or JSON file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.errors import InvalidInput
from common.models import Service
from discovery.georeport import DATATYPES, Attribute


@dataclass(frozen=True, slots=True)
class AdhocService:
    """A service of the catalogue and its definition (attributes, possibly none)."""

    service: Service
    attributes: tuple[Attribute, ...] = ()


def _svc(
    code: str, name: str, group: str, keywords: tuple[str, ...], *attributes: Attribute
) -> AdhocService:
    return AdhocService(
        Service(
            service_code=code,
            service_name=name,
            description=name,
            keywords=keywords,
            group=group,
            metadata=bool(attributes),
        ),
        attributes,
    )


_SEVERITY = Attribute(
    code="severity",
    description="How bad is it?",
    datatype="singlevaluelist",
    values=(("low", "Low"), ("medium", "Medium"), ("high", "High: a danger to people")),
)

#: Keywords in English, German, French and Spanish (the matcher folds accents and case).
DEFAULT_SERVICES: tuple[AdhocService, ...] = (
    _svc(
        "pothole",
        "Pothole",
        "Streets",
        ("pothole", "road damage", "Schlagloch", "Straßenschaden", "nid-de-poule", "bache"),
        _SEVERITY,
    ),
    _svc("graffiti", "Graffiti", "Cleanliness", ("graffiti", "tag", "Schmiererei", "pintada")),
    _svc(
        "streetlight",
        "Street light out",
        "Streets",
        ("street light", "lamp", "Straßenlaterne", "Laterne", "lampadaire", "farola"),
    ),
    _svc(
        "missed_collection",
        "Missed waste collection",
        "Waste",
        (
            "missed collection",
            "garbage",
            "trash",
            "Müllabfuhr",
            "Abfall",
            "poubelle",
            "ordures",
            "basura",
            "recogida",
        ),
    ),
    _svc(
        "abandoned_vehicle",
        "Abandoned vehicle",
        "Streets",
        (
            "abandoned vehicle",
            "abandoned car",
            "Autowrack",
            "verlassenes Fahrzeug",
            "véhicule abandonné",
            "vehículo abandonado",
        ),
        Attribute(code="plate", description="Licence plate, if readable", required=False),
    ),
    _svc(
        "illegal_dumping",
        "Illegal dumping",
        "Waste",
        ("illegal dumping", "fly tipping", "wilder Müll", "dépôt sauvage", "vertido ilegal"),
    ),
    _svc(
        "other",
        "Other concern",
        "Other",
        ("other", "sonstiges", "autre", "otro"),
    ),
)


def _attribute(raw: Any, where: str) -> Attribute:
    if not isinstance(raw, dict) or not isinstance(raw.get("code"), str) or not raw["code"]:
        raise InvalidInput(f"{where}: an attribute needs a 'code'")
    datatype = raw.get("datatype", "string")
    if datatype not in DATATYPES:
        raise InvalidInput(f"{where}: datatype {datatype!r} is not one of {sorted(DATATYPES)}")
    values = tuple((str(v["key"]), str(v.get("name", v["key"]))) for v in raw.get("values", ()))
    if datatype.endswith("valuelist") and not values:
        raise InvalidInput(f"{where}: a {datatype} attribute needs 'values'")
    return Attribute(
        code=raw["code"],
        description=str(raw.get("description", raw["code"])),
        datatype=datatype,
        required=bool(raw.get("required", False)),
        variable=bool(raw.get("variable", True)),
        order=int(raw.get("order", 1)),
        datatype_description=str(raw.get("datatype_description", "")),
        values=values,
    )


def load_services(path: str | Path) -> tuple[AdhocService, ...]:
    """The catalogue in a YAML or JSON file: a list (or ``{"services": [...]}``) of services with
    ``service_code``, ``service_name`` and optionally ``description``, ``keywords``, ``group``,
    ``attributes``. A clear error, never a half-read catalogue."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read the ad hoc services {path}: {exc}") from None
    if isinstance(raw, dict):
        raw = raw.get("services")
    if not isinstance(raw, list) or not raw:
        raise InvalidInput(f"{path}: expected a non-empty list of services")
    found: list[AdhocService] = []
    codes: set[str] = set()
    for n, item in enumerate(raw, 1):
        where = f"{path}: service {n}"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where}: not a mapping")
        code, name = item.get("service_code"), item.get("service_name")
        if not isinstance(code, str) or not code or not isinstance(name, str) or not name:
            raise InvalidInput(f"{where}: needs 'service_code' and 'service_name'")
        if code in codes:
            raise InvalidInput(f"{where}: service_code {code!r} twice")
        codes.add(code)
        attributes = tuple(_attribute(a, f"{where}") for a in item.get("attributes") or ())
        keywords = item.get("keywords") or ()
        if isinstance(keywords, str):
            keywords = tuple(k.strip() for k in keywords.split(",") if k.strip())
        found.append(
            AdhocService(
                Service(
                    service_code=code,
                    service_name=name,
                    description=str(item.get("description", name)),
                    keywords=tuple(str(k) for k in keywords),
                    group=str(item.get("group", "")),
                    metadata=bool(attributes),
                ),
                attributes,
            )
        )
    return tuple(found)
