"""The store: registry entries, mirrors, caches and registration challenges, in SQLite (default) or
PostgreSQL, one module per feature (see ``resolver/store/database.py`` for the map and for how a
feature module registers its tables).

``Store`` is the one object callers open: every feature's methods, on one engine. The feature
classes are plain classes built on :class:`~resolver.store.database.Database` (the engine, the
transactions, the schema), combined here by inheritance; none has state of its own, so combining
them is only a matter of putting their methods on one object.

Async code calls the store through :func:`resolver.store.aio.in_thread`, never directly.
"""

from __future__ import annotations

from resolver.store.adhoc import AdhocStore
from resolver.store.challenges import ChallengeStore
from resolver.store.entries import EntryStore
from resolver.store.mirrors import MirrorStore


class Store(AdhocStore, ChallengeStore, EntryStore, MirrorStore):
    """Jurisdictions and everything kept with them, in a database. Open with ``Store(db)``, close
    with :meth:`close` (or use it as a context manager)."""


__all__ = ["Store"]
