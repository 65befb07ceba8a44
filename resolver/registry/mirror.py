"""Mirroring other registries: pull their change logs, apply them by the federation rules.

A sync reads ``GET <upstream>/v1/registry/changes?since=<last serial read>`` page by page. Each page
is checked whole before anything is applied (serials increase, lie after ``since`` and not past the
upstream's serial; every entry parses), then applied in one transaction together with the new
``last serial``: a sync killed half-way keeps every page it finished, and the next one resumes
after it. When the upstream's log no longer reaches back (410) or the upstream was replaced (a new
registry id), the snapshot at ``/v1/registry`` is applied instead, in one transaction.

Upstream URLs are the operator's, but their answers are not trusted: they go through the bounded,
address-guarded :class:`~discovery.fetch.Fetcher` like every other outside document, every entry
is checked as an import or a registration is (:func:`~resolver.core.validation.check_entry`),
an entry's ``attested`` counts only when the domain's own ``_open311`` record confirms it here
(:class:`DnsAttestation`), and the store applies each copy by the trust rule of
:func:`~resolver.core.federation.judge_mirrored`. One run reads at most ``max_pages`` pages
(:data:`MAX_PAGES`); the next run goes on from there.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from common.errors import InvalidInput, RegistryError, SyncError
from common.models import Jurisdiction
from discovery.dns_lookup import DnsLookup, DnsUnavailable
from discovery.dns_records import UrlPolicy, parse_rrset, record_name
from discovery.fetch import Fetcher, FetchError
from resolver.config import Settings
from resolver.core.attestation import same_url
from resolver.core.federation import EntryVersion, domain_origin
from resolver.core.validation import MAX_ID, check_coordinates, check_entry, check_text
from resolver.registry.documents import REGISTRY_FORMAT, jurisdiction_from_feature
from resolver.registry.embedded import EMBEDDED_ORIGIN
from resolver.sources.dns import dns_lookup, url_policy
from resolver.store import Store
from resolver.store.aio import in_thread
from resolver.store.entries import ApplyReport, Change, ChangePage

log = logging.getLogger(__name__)

#: Entries asked for per page.
PAGE_SIZE = 500
#: Pages one sync of one upstream reads at most (500,000 entries at the default page size): an
#: upstream whose log never ends cannot keep a sync, or the server running it, busy for ever.
MAX_PAGES = 1000
#: Domains whose attestation one sync checks in DNS at most; beyond, claims stay unverified.
MAX_ATTESTATIONS = 1000
_ACCEPT = ("application/json", "application/geo+json")

#: Called with (entries done, entries expected) as pages arrive; the CLI shows a progress bar.
Progress = Callable[[int, int], None]
#: Whether the domain's own DNS confirms a mirrored entry that claims to be attested.
Attestation = Callable[[Jurisdiction], Awaitable[bool]]


class DnsAttestation:
    """Checks an upstream's claim that an entry is attested, here, against the domain's own DNS:
    the claim counts when the entry's origin is its own domain and that domain's ``_open311``
    record names the entry's discovery URL (docs/dns-records.md, "Attestation")."""

    def __init__(self, lookup: DnsLookup, policy: UrlPolicy | None = None) -> None:
        self.lookup = lookup
        self.policy = policy or UrlPolicy()

    async def __call__(self, jurisdiction: Jurisdiction) -> bool:
        domain, url = jurisdiction.domain, jurisdiction.discovery_url
        if not domain or not url or jurisdiction.origin != domain_origin(domain):
            return False
        name = record_name(domain)
        try:
            answer = await self.lookup.txt(name)
        except DnsUnavailable as error:
            log.info("attestation of %s not checked: %s", jurisdiction.id, error.detail)
            return False
        record = parse_rrset(answer.records, name=name, policy=self.policy).record
        return record is not None and same_url(record.discovery_url, url)


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
    #: False when the run stopped at ``max_pages`` with more to read (the next run goes on).
    complete: bool = True
    report: ApplyReport = field(default_factory=ApplyReport)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "serial": self.serial,
            "pages": self.pages,
            "snapshot": self.snapshot,
            "complete": self.complete,
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
    attest: Attestation | None = None,
    max_pages: int = MAX_PAGES,
) -> SyncResult:
    """Bring this store up to date with one upstream, reading at most ``max_pages`` pages;
    :class:`SyncError` when it cannot, after recording the failure (pages applied before the
    failure stay applied). ``attest`` checks attestation claims; without it none counts."""
    checker = _Attester(attest)
    try:
        return await _sync(store, url, fetcher, page_size, progress, checker, max_pages)
    except SyncError as error:
        await in_thread(store.record_mirror_failure, url, error.detail)
        raise


async def sync_all(
    store: Store, fetcher: Fetcher, attest: Attestation | None = None
) -> list[SyncResult | SyncError]:
    """Sync every upstream in turn; one failing does not stop the others."""
    results: list[SyncResult | SyncError] = []
    for mirror in await in_thread(store.mirrors):
        try:
            results.append(await sync_mirror(store, mirror.url, fetcher, attest=attest))
        except SyncError as error:
            log.warning("mirror %s: %s", mirror.url, error.detail)
            results.append(error)
    return results


class _Attester:
    """One sync's attestation checks: each domain and URL asked once, at most
    :data:`MAX_ATTESTATIONS` of them."""

    def __init__(self, attest: Attestation | None) -> None:
        self.attest = attest
        self.known: dict[tuple[str, str], bool] = {}

    async def verified(self, changes: list[Change]) -> frozenset[str]:
        ids = set()
        for change in changes:
            j = change.jurisdiction
            if j is None or not j.attested or self.attest is None:
                continue
            key = (j.domain or "", j.discovery_url or "")
            if key not in self.known:
                if len(self.known) >= MAX_ATTESTATIONS:
                    continue
                self.known[key] = await self.attest(j)
            if self.known[key]:
                ids.add(change.id)
        return frozenset(ids)


async def _sync(
    store: Store,
    url: str,
    fetcher: Fetcher,
    page_size: int,
    progress: Progress | None,
    attester: _Attester,
    max_pages: int,
) -> SyncResult:
    state = await in_thread(store.mirror, url)
    if state is None:
        raise SyncError(f"{url} is not mirrored here; add it with geoweb mirror add", url=url)
    result = SyncResult(url, serial=state.last_serial)
    since, start = state.last_serial, state.last_serial
    while True:
        query = urlencode({"since": since, "limit": page_size})
        try:
            document = await _get_json(fetcher, f"{url}/v1/registry/changes?{query}")
        except _Gone:
            return await _take_snapshot(store, url, fetcher, result, attester)
        page = read_change_page(document, since=since, url=url)
        if state.registry_id is not None and page.registry_id != state.registry_id:
            log.warning("mirror %s: the upstream is a new registry; taking its snapshot", url)
            return await _take_snapshot(store, url, fetcher, result, attester)
        verified = await attester.verified(page.changes)
        report = await in_thread(
            store.apply_changes,
            page.changes,
            via=url,
            upstream=url,
            upstream_serial=page.last,
            registry_id=page.registry_id,
            verified=verified,
        )
        result.report.add(report)
        result.pages += 1
        result.serial = since = page.last
        if progress is not None:
            progress(since - start, max(page.serial - start, since - start))
        if not page.more:
            return result
        if result.pages >= max_pages:
            log.warning(
                "mirror %s: stopped after %d pages at serial %d of %d; the next sync goes on",
                url,
                result.pages,
                since,
                page.serial,
            )
            result.complete = False
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
        except (RegistryError, InvalidInput) as error:
            raise bad(f"change {position}: {error.detail}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as error:
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
    if more and previous >= serial:
        raise bad(f"'more' is true, but the page reaches the registry's serial {serial}")
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
        feature = item["feature"]
        check_coordinates(feature.get("geometry"))
        jurisdiction = jurisdiction_from_feature(feature)
        if jurisdiction.origin is None or jurisdiction.version < 1 or not jurisdiction.updated:
            raise ValueError(f"entry {jurisdiction.id!r} has no origin, version or updated time")
        check_text(jurisdiction.origin, "origin", MAX_ID + 10, required=True)
        # An embedded registry's entries carry the public Open311 lists' URLs as published,
        # some plain http; a resolver serving that layer fetches them itself, so its mirrors
        # take them as served (every other entry must name https URLs).
        check_entry(jurisdiction, allow_http=jurisdiction.origin.startswith(EMBEDDED_ORIGIN))
        return Change(serial, jurisdiction.id, jurisdiction, None)
    if item["op"] == "delete":
        entry, domain = item["entry"], item.get("domain")
        version, origin = entry["version"], entry["origin"]
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError("the deletion's version must be a whole number")
        if domain is not None and not isinstance(domain, str):
            raise ValueError("the deletion's domain must be text")
        check_text(item["id"], "id", MAX_ID, required=True)
        check_text(origin, "origin", MAX_ID + 10, required=True)
        deletion = EntryVersion(
            origin=origin,
            version=version,
            updated=str(entry["updated"])[:100],
            attested=entry.get("attested") is True,
            domain=domain,
            deleted=True,
        )
        return Change(serial, item["id"], None, deletion)
    raise ValueError(f"unknown op {item['op']!r}")


async def _take_snapshot(
    store: Store, url: str, fetcher: Fetcher, result: SyncResult, attester: _Attester
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
        except (RegistryError, InvalidInput) as error:
            raise bad(f"feature {position}: {error.detail}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise bad(f"feature {position}: {error}") from None
        changes.append(change)
    ids = [c.id for c in changes]
    if len(set(ids)) != len(ids):
        raise bad("an entry id appears twice")
    verified = await attester.verified(changes)
    report = await in_thread(
        store.apply_snapshot,
        changes,
        via=url,
        registry_id=registry_id,
        serial=serial,
        verified=verified,
    )
    result.report.add(report)
    result.snapshot, result.serial = True, serial
    return result


def dns_attestation(settings: Settings) -> Attestation | None:
    """How a server or ``geoweb mirror sync`` checks attestation claims: the configured
    nameservers, https URLs only (:func:`~resolver.sources.dns.url_policy`); none configured,
    no claim counts."""
    if not settings.dns_nameserver:
        return None
    return DnsAttestation(dns_lookup(settings), url_policy(settings))
