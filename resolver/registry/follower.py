"""How a running server follows its store: the :class:`RegistryFollower` (docs/registry.md).

After a local write (a registration, a sync) and every ``registry_poll`` seconds it reads the
store's change log since the serial it last saw and hands the changes to the answerer, so several
``geoweb serve`` processes on one PostgreSQL store converge within one poll. Mirror syncs run in
a background task of their own (:func:`sync_mirrors`), so a slow or endless upstream never delays
following the store (:func:`follow_store`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from common.errors import SnapshotRequired
from discovery.fetch import Fetcher
from resolver.core.federation import timestamp
from resolver.registry.mirror import sync_all
from resolver.sources.answering import Answerer
from resolver.store import Store
from resolver.store.aio import in_thread
from resolver.store.entries import Change, ChangePage

log = logging.getLogger(__name__)

#: Changes read from the store per page while catching up.
READ_PAGE_SIZE = 500


@dataclass
class RegistryFollower:
    """What a server answers from: the store (up to ``serial``) or the embedded registry."""

    store: Store
    answerer: Answerer
    source: str
    serial: int
    #: The fetcher mirror syncs use, and the background intervals in seconds (0: no syncs).
    fetcher: Fetcher
    poll: float = 10.0
    mirror_interval: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Checks a mirrored entry's attestation claim against the domain's own DNS (none: no claim
    #: counts).
    attest: Callable[[Any], Awaitable[bool]] | None = None
    #: Called after each catch-up that changed what is answered (the ad hoc forwarder looks at
    #: its held requests again).
    listeners: list[Callable[[], None]] = field(default_factory=list)

    async def catch_up(self) -> int:
        """Take the store's changes since the last catch-up; returns how many entries changed."""
        async with self.lock:
            if self.source == "embedded" and not await in_thread(self.store.count):
                return 0
            try:
                if self.source == "embedded":
                    raise SnapshotRequired
                changes, serial = await in_thread(self._read_changes)
                full = False
            except SnapshotRequired:  # the first entries of an empty store, or a log too short
                _, serial, entries = await in_thread(self.store.snapshot)
                changes, full = [Change(serial, j.id, j, None) for j in entries], True
            now = timestamp()
            live = [
                c.jurisdiction
                for c in changes
                if c.jurisdiction and not c.jurisdiction.expired(now)
            ]
            held = self.answerer.resolver.jurisdictions
            removed = {c.id for c in changes} - {j.id for j in live}
            removed |= {j.id for j in held if full or j.expired(now)} - {j.id for j in live}
            if live or removed:
                await self.answerer.update(live, sorted(removed))
                for listener in self.listeners:
                    listener()
            if full:
                log.info(
                    "answering from the store: %d jurisdictions at serial %d", len(live), serial
                )
            self.source, self.serial = "store", serial
            return len(changes)

    def _read_changes(self) -> tuple[list[Change], int]:
        """Every change after our serial, page by page, and the serial they reach."""
        changes: list[Change] = []
        since = self.serial
        while True:
            page: ChangePage = self.store.changes(since, READ_PAGE_SIZE)
            changes += page.changes
            since = page.last
            if not page.more:
                return changes, since


async def follow_store(follower: RegistryFollower) -> None:
    """Catch up with the store every ``poll`` seconds, for ever."""
    while True:
        try:
            await follower.catch_up()
        except Exception:  # a bug must not stop the loop
            log.exception("following the store failed")
        await asyncio.sleep(follower.poll)


async def sync_mirrors(follower: RegistryFollower) -> None:
    """Sync the mirrored upstreams every ``mirror_interval`` seconds (give or take a tenth, so
    servers sharing a store spread out), and answer from what each sync brought."""
    rng = random.Random()
    while True:
        try:
            await sync_all(follower.store, follower.fetcher, follower.attest)
            await follower.catch_up()  # answer from what the sync brought at once
        except Exception:  # a bug must not stop the loop
            log.exception("mirror sync failed")
        await asyncio.sleep(follower.mirror_interval * rng.uniform(0.9, 1.1))
