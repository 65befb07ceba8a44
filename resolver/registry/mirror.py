"""Mirroring other registries: pull their change logs, apply them by the federation rules.

A sync reads ``GET <upstream>/v1/registry/changes?since=<last serial read>`` page by page. Each page
is checked whole before anything is applied (serials increase, lie after ``since`` and not past the
upstream's serial; every entry parses), then applied in one transaction together with the new
``last serial``: a sync killed half-way keeps every page it finished, and the next one resumes
after it. When the upstream's log no longer reaches back (410) or the upstream was replaced (a new
registry id), the snapshot at ``/v1/registry`` is applied instead, in one transaction.

Upstream URLs are the operator's, but their answers are not trusted: they go through the bounded,
address-guarded :class:`~discovery.fetch.Fetcher` like every other outside document.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from common.errors import RegistryError, SyncError
from discovery.fetch import Fetcher, FetchError
from resolver.core.federation import EntryVersion
from resolver.registry.documents import REGISTRY_FORMAT, jurisdiction_from_feature
from resolver.store import ApplyReport, Change, ChangePage, Store

log = logging.getLogger(__name__)

#: Entries asked for per page.
PAGE_SIZE = 500
_ACCEPT = ("application/json", "application/geo+json")

#: Called with (entries done, entries expected) as pages arrive; the CLI shows a progress bar.
Progress = Callable[[int, int], None]


def normalize_upstream(url: str) -> str:
    """The upstream's base URL, as mirrors are keyed: http(s), no query, no trailing slash."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RegistryError(f"an upstream registry is an http(s) URL, not {url!r}")
    if parts.query or parts.fragment:
        raise RegistryError(f"an upstream registry URL has no query or fragment: {url!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


@dataclass
class SyncResult:
    """What one sync of one upstream did."""

    url: str
    serial: int = 0
    pages: int = 0
    snapshot: bool = False
    report: ApplyReport = field(default_factory=ApplyReport)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "serial": self.serial,
            "pages": self.pages,
            "snapshot": self.snapshot,
            "upserted": len(self.report.upserted),
            "deleted": len(self.report.deleted),
            "overruled": len(self.report.overruled),
            "unchanged": self.report.unchanged,
        }


async def sync_mirror(
    store: Store,
    url: str,
    fetcher: Fetcher,
    *,
    page_size: int = PAGE_SIZE,
    progress: Progress | None = None,
) -> SyncResult:
    """Bring this store up to date with one upstream; :class:`SyncError` when it cannot, after
    recording the failure (pages applied before the failure stay applied)."""
    try:
        return await _sync(store, url, fetcher, page_size, progress)
    except SyncError as error:
        store.record_mirror_failure(url, error.detail)
        raise


async def sync_all(store: Store, fetcher: Fetcher) -> list[SyncResult | SyncError]:
    """Sync every upstream in turn; one failing does not stop the others."""
    results: list[SyncResult | SyncError] = []
    for mirror in store.mirrors():
        try:
            results.append(await sync_mirror(store, mirror.url, fetcher))
        except SyncError as error:
            log.warning("mirror %s: %s", mirror.url, error.detail)
            results.append(error)
    return results


async def _sync(
    store: Store, url: str, fetcher: Fetcher, page_size: int, progress: Progress | None
) -> SyncResult:
    state = store.mirror(url)
    if state is None:
        raise SyncError(f"{url} is not mirrored here; add it with geoweb mirror add", url=url)
    result = SyncResult(url, serial=state.last_serial)
    since, start = state.last_serial, state.last_serial
    while True:
        query = urlencode({"since": since, "limit": page_size})
        try:
            document = await _get_json(fetcher, f"{url}/v1/registry/changes?{query}")
        except _Gone:
            return await _take_snapshot(store, url, fetcher, result)
        page = read_change_page(document, since=since, url=url)
        if state.registry_id is not None and page.registry_id != state.registry_id:
            log.warning("mirror %s: the upstream is a new registry; taking its snapshot", url)
            return await _take_snapshot(store, url, fetcher, result)
        report = store.apply_changes(
            page.changes,
            via=url,
            upstream=url,
            upstream_serial=page.last,
            registry_id=page.registry_id,
        )
        result.report.add(report)
        result.pages += 1
        result.serial = since = page.last
        if progress is not None:
            progress(since - start, max(page.serial - start, since - start))
        if not page.more:
            return result


class _Gone(Exception):
    """The upstream answered 410: its log does not reach back to our serial."""


async def _get_json(fetcher: Fetcher, url: str) -> Any:
    try:
        fetched = await fetcher.get(url, accept=_ACCEPT, revalidate=True)
    except FetchError as error:
        if error.fields.get("http_status") == 410:
            raise _Gone from None
        raise SyncError(f"cannot read {url}: {error.reason}", url=url) from None
    try:
        return orjson.loads(fetched.body)
    except orjson.JSONDecodeError as error:
        raise SyncError(f"{url} is not JSON (truncated?): {error}", url=url) from None


def read_change_page(document: Any, *, since: int, url: str) -> ChangePage:
    """A change page, checked whole: :class:`SyncError` naming the first problem."""

    def bad(why: str) -> SyncError:
        return SyncError(f"{url} sent a malformed change page: {why}; nothing applied", url=url)

    if not isinstance(document, dict):
        raise bad("not a JSON object")
    registry_id, serial = _registry_member(document, bad)
    if document.get("since") != since:
        raise bad(f"it answers since={document.get('since')!r}, not the {since} asked for")
    if serial < since:
        raise bad(f"the registry's serial {serial} went backwards (it was at least {since})")
    raw = document.get("changes")
    more = document.get("more")
    if not isinstance(raw, list) or not isinstance(more, bool):
        raise bad("'changes' must be a list and 'more' true or false")
    changes: list[Change] = []
    previous = since
    for position, item in enumerate(raw):
        try:
            change = _read_change(item)
        except (RegistryError, KeyError, TypeError, ValueError) as error:
            raise bad(f"change {position}: {error}") from None
        if not previous < change.serial <= serial:
            raise bad(
                f"change {position} has serial {change.serial}; serials must increase, after "
                f"{previous}, up to the registry's {serial}"
            )
        previous = change.serial
        changes.append(change)
    if more and not changes:
        raise bad("'more' is true on an empty page")
    return ChangePage(registry_id, serial, since, changes, more)


def _registry_member(document: dict[str, Any], bad: Callable[[str], SyncError]) -> tuple[str, int]:
    registry = document.get("registry")
    if not isinstance(registry, dict) or registry.get("format") != REGISTRY_FORMAT:
        raise bad(f"no 'registry' member with format {REGISTRY_FORMAT!r}")
    registry_id, serial = registry.get("id"), registry.get("serial")
    if not isinstance(registry_id, str) or not 0 < len(registry_id) <= 100:
        raise bad("the registry id must be a short string")
    if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
        raise bad("the registry serial must be a whole number")
    return registry_id, serial


def _read_change(item: Any) -> Change:
    serial = item["serial"]
    if not isinstance(serial, int) or isinstance(serial, bool):
        raise ValueError("serial must be a whole number")
    if item["op"] == "upsert":
        jurisdiction = jurisdiction_from_feature(item["feature"])
        if jurisdiction.origin is None or jurisdiction.version < 1 or not jurisdiction.updated:
            raise ValueError(f"entry {jurisdiction.id!r} has no origin, version or updated time")
        return Change(serial, jurisdiction.id, jurisdiction, None)
    if item["op"] == "delete":
        entry = item["entry"]
        version = EntryVersion(
            origin=str(entry["origin"]),
            version=int(entry["version"]),
            updated=str(entry["updated"]),
            attested=entry.get("attested") is True,
            domain=item.get("domain"),
            deleted=True,
        )
        return Change(serial, str(item["id"]), None, version)
    raise ValueError(f"unknown op {item['op']!r}")


async def _take_snapshot(
    store: Store, url: str, fetcher: Fetcher, result: SyncResult
) -> SyncResult:
    document = await _get_json(fetcher, f"{url}/v1/registry")

    def bad(why: str) -> SyncError:
        return SyncError(f"{url} sent a malformed snapshot: {why}; nothing applied", url=url)

    if not isinstance(document, dict) or not isinstance(document.get("features"), list):
        raise bad("not a GeoJSON FeatureCollection")
    registry_id, serial = _registry_member(document, bad)
    changes = []
    for position, feature in enumerate(document["features"]):
        try:
            change = _read_change({"serial": serial, "op": "upsert", "feature": feature})
        except (RegistryError, KeyError, TypeError, ValueError) as error:
            raise bad(f"feature {position}: {error}") from None
        changes.append(change)
    report = store.apply_snapshot(changes, via=url, registry_id=registry_id, serial=serial)
    result.report.add(report)
    result.snapshot, result.serial = True, serial
    return result
