"""The embedded registry as a layer of the store: an origin like any other.

The registry shipped with the package (``registry_data/registry.geojson``) is taken into the store
as the read-only layer ``embedded``: its entries carry the origin ``embedded:<version>`` and are
applied as a mirror's snapshot is (``Store.apply_layer``), so the store's own entries (imported,
registered) add to it and override it by the federation rules, never the other way round, and
every feature that reads the store (answers, ``/v1/registry`` and its changes feed, exports,
zones, mirrors) sees the layer's entries with their origin, with no special case.

A store takes the layer when it is opened for a command that reads the registry
(:func:`open_store`), once per version: an upgraded package replaces the previous version's
entries (those it no longer lists are deleted, with tombstones that reach mirrors) and leaves
local entries as they are. ``--no-embedded`` leaves the layer out: its entries are removed.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from common.errors import RegistryError
from common.models import Jurisdiction
from resolver.config import Settings
from resolver.core.federation import DOMAIN_ORIGIN
from resolver.registry.documents import embedded_registry_path, read_registry
from resolver.store import Store
from resolver.store.entries import ApplyReport

#: The layer's name, and what its rows are marked as coming via.
EMBEDDED = "embedded"
#: The origin prefix of the layer's entries: ``embedded:<version>``.
EMBEDDED_ORIGIN = "embedded:"


@dataclass(frozen=True)
class EmbeddedLayer:
    """One release of the embedded registry: its version and its entries, as the store takes
    them (origin ``embedded:<version>``, version 1, dated at the release)."""

    version: str
    entries: tuple[Jurisdiction, ...]

    @property
    def origin(self) -> str:
        return EMBEDDED_ORIGIN + self.version


def read_layer(path: Path) -> EmbeddedLayer:
    """The layer a registry file describes; :class:`RegistryError` when it has no release."""
    with path.open(encoding="utf-8") as f:
        return _layer(path, json.load(f))


def _release(path: Path, document: dict[str, Any]) -> tuple[str, str]:
    """The (version, released) a registry document names."""
    meta = document.get("registry") or {}
    version, released = meta.get("version"), meta.get("released")
    if not isinstance(version, str) or not isinstance(released, str):
        raise RegistryError(f"{path} names no release (registry.version and registry.released)")
    return version, released


def _layer(path: Path, document: dict[str, Any]) -> EmbeddedLayer:
    version, released = _release(path, document)
    origin = EMBEDDED_ORIGIN + version
    entries = tuple(
        replace(j, origin=origin, version=1, updated=released, expires=None, attested=False)
        for j in read_registry(document)
    )
    return EmbeddedLayer(version, entries)


@cache
def _embedded_document() -> dict[str, Any]:
    with embedded_registry_path().open(encoding="utf-8") as f:
        document: dict[str, Any] = json.load(f)
    return document


def embedded_version() -> str:
    """The release of the registry shipped with this package, without building its entries."""
    return _release(embedded_registry_path(), _embedded_document())[0]


@cache
def embedded_layer() -> EmbeddedLayer:
    """The layer of the registry shipped with this package (read once per process)."""
    return _layer(embedded_registry_path(), _embedded_document())


def sync_embedded(
    store: Store, *, enabled: bool = True, layer: EmbeddedLayer | None = None
) -> ApplyReport | None:
    """Bring the store's embedded layer to ``layer`` (default: this package's), or remove it
    when not ``enabled``; ``None`` when the store already holds what is asked (the usual case:
    one read, and the layer's entries are not built)."""
    wanted = (layer.version if layer else embedded_version()) if enabled else None
    if store.layer_version(EMBEDDED) == wanted:
        return None
    entries = (layer or embedded_layer()).entries if enabled else ()
    return store.apply_layer(EMBEDDED, wanted, entries)


def open_store(settings: Settings) -> Store:
    """The store of these settings, with its embedded layer as ``settings.embedded`` asks."""
    store = Store(settings.db_path)
    try:
        sync_embedded(store, enabled=settings.embedded)
    except BaseException:
        store.close()
        raise
    return store


def layer_of(entry: Jurisdiction, registry_id: str) -> str:
    """Which layer an entry belongs to: ``embedded`` (from any release, also when it came
    through a mirror), ``local`` (written here: imported, or this registry's origin),
    ``registered`` (a jurisdiction's own, proved through its domain), or ``mirrored``."""
    origin = entry.origin or registry_id
    if origin.startswith(EMBEDDED_ORIGIN):
        return EMBEDDED
    if origin == registry_id:
        return "local"
    if origin.startswith(DOMAIN_ORIGIN):
        return "registered"
    return "mirrored"


def layers(entries: list[Jurisdiction], registry_id: str) -> dict[str, Any]:
    """What is served, by layer: how many entries each holds, and the embedded releases."""
    counts = Counter(layer_of(j, registry_id) for j in entries)
    releases = sorted(
        {
            (j.origin or "")[len(EMBEDDED_ORIGIN) :]
            for j in entries
            if (j.origin or "").startswith(EMBEDDED_ORIGIN)
        }
    )
    return {
        "embedded": {"entries": counts[EMBEDDED], "versions": releases},
        "local": {"entries": counts["local"]},
        "registered": {"entries": counts["registered"]},
        "mirrored": {"entries": counts["mirrored"]},
    }


def describe_layers(summary: dict[str, Any]) -> str:
    """``layers()`` as words: "82 from the embedded registry (2026-12-04.5c118643), 3231 local"."""
    parts = []
    embedded = summary["embedded"]
    if embedded["entries"]:
        parts.append(
            f"{embedded['entries']} from the embedded registry ({', '.join(embedded['versions'])})"
        )
    parts += [f"{summary[k]['entries']} {k}" for k in ("local", "registered", "mirrored")]
    return ", ".join(p for p in parts if not p.startswith("0 ")) or "none"


__all__ = [
    "EMBEDDED",
    "EMBEDDED_ORIGIN",
    "EmbeddedLayer",
    "describe_layers",
    "embedded_layer",
    "embedded_version",
    "layer_of",
    "layers",
    "open_store",
    "read_layer",
    "sync_embedded",
]
