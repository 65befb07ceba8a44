"""Store and forward: each request the ad hoc service holds goes, once, to the jurisdiction that
later covers its point (docs/adhoc.md).

A held request is looked up again after every registry change (an import, a registration, a
mirror sync: the store's change log, which ``geoweb serve`` follows) and every discovery refresh,
and when a failure's back-off ends. It is forwarded when the answer names a jurisdiction with a
current GeoReport v2 endpoint, and that city's own services list has exactly one service matching
the ad hoc service's (``ServiceCatalog.choose``, the resolver's matcher: ties and misses are kept
as ``unmatched`` and listed, never guessed).

A request is never filed twice. Each step is a conditional UPDATE of its state
(:meth:`~resolver.store.adhoc.AdhocStore.adhoc_transition`):

1. everything that needs no write to the city (the answer, the services list, the definition) is
   done while the request is still ``held``: a crash there leaves it ``held``, tried again;
2. it is claimed, ``held`` → ``sending``, committed *before* the POST: only one process wins;
3. the POST's outcome is committed: ``forwarded`` (the city's id or token), back to ``held`` with a
   back-off when the city surely did not get it (no connection, or a 5xx), ``refused`` (4xx), or
   ``uncertain`` when it may have (the connection cut after the request was written).

A process that dies during the POST leaves ``sending``; once the POST's own time limit has
certainly passed, any forwarder marks it ``uncertain`` for the operator (``geoweb adhoc``), who
checks with the city and either records the city's id or re-sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.errors import GeoWebError, InvalidInput
from common.models import Jurisdiction
from discovery.fetch import Fetcher
from discovery.georeport import (
    CityFailed,
    GeoReportClient,
    InvalidAttributes,
    NotSent,
    Refused,
    check_attributes,
    report_form,
)
from resolver.core.concerns import ServiceCatalog
from resolver.runtime import Runtime
from resolver.sources.answering import Answerer
from resolver.store import Store
from resolver.store.adhoc import AdhocRequest
from resolver.store.aio import in_thread

log = logging.getLogger(__name__)

#: The longest back-off between two tries of a request whose city failed.
MAX_RETRY = 6 * 3600.0
#: How often a held or unmatched request is looked at again without a registry change.
RECHECK = 6 * 3600.0
#: Requests read from the store at a time during a pass.
PAGE = 500
#: Requests forwarded at once (they may go to different cities).
CONCURRENCY = 4


def load_keys(path: str | Path) -> dict[str, str]:
    """The operator's API keys: a YAML or JSON mapping of an endpoint URL (or a jurisdiction id)
    to the key that city gave this operator."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read the forwarding keys file {path}: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in data.items()
    ):
        raise InvalidInput(
            f"the forwarding keys file {path} must map endpoint URLs or jurisdiction ids to "
            "API keys (strings)"
        )
    return {k.rstrip("/"): v for k, v in data.items()}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one look at a request did: the state it is in now, and why."""

    request_id: str
    state: str
    note: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.request_id, "state": self.state, "note": self.note}


class Forwarder:
    """Forwards the store's held requests and reads their status back.

    ``answerer`` is the process's answerer (it follows the registry). ``lease`` is how long a
    POST can take at most (the fetch time limit, with a margin): a request ``sending`` for longer
    was claimed by a process that stopped.
    """

    def __init__(
        self,
        store: Store,
        answerer: Answerer,
        fetcher: Fetcher,
        *,
        keys: Mapping[str, str] | None = None,
        retry: float = 60.0,
        poll: float = 900.0,
        lease: float = 60.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.store = store
        self.answerer = answerer
        self.fetcher = fetcher
        self.keys = dict(keys or {})
        self.retry = retry
        self.poll = poll
        self.lease = lease
        self.clock = clock
        self._wake = asyncio.Event()
        self._changed = True  # the first pass looks at every held request
        # A city's services list and definitions, read once per pass however many reports go
        # there: (endpoint, service_code or "") -> the read, shared by concurrent forwards.
        self._lists: dict[tuple[str, str], asyncio.Task[Any]] = {}

    def wake(self) -> None:
        """A request was added: look at the due ones now rather than at the next tick."""
        self._wake.set()

    def registry_changed(self) -> None:
        """Something that can change who covers a point happened: look at every held request."""
        self._changed = True
        self._wake.set()

    async def run(self) -> None:
        """Forward and poll for ever, waking on registry changes and when back-offs end."""
        tick = min(self.retry, self.poll, 30.0)
        while True:
            changed, self._changed = self._changed, False
            self._wake.clear()
            try:
                await self.forward_due(changed=changed)
                await self.poll_due()
            except Exception:  # a bug must not stop forwarding for good
                log.exception("forwarding held ad hoc requests failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._wake.wait()

    # -----------------------------------------------------------------------------------------
    # Forwarding

    async def forward_due(self, *, changed: bool = False, ids: Sequence[str] = ()) -> list[Outcome]:
        """Look at the held and unmatched requests that are due (all of them after a registry
        change, or those named), forwarding each that now has somewhere to go."""
        await self.sweep()
        self._lists.clear()
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(row: AdhocRequest) -> Outcome:
            async with gate:
                return await self.forward(row)

        outcomes: list[Outcome] = []
        after: tuple[dt.datetime, str] | None = None
        while True:  # page by page, so one pass sees every due request however many
            rows = await in_thread(
                self.store.adhoc_due,
                self.clock(),
                ("held", "unmatched"),
                waiting_too=changed or bool(ids),
                ids=tuple(ids),
                after=after,
                limit=PAGE,
            )
            outcomes += await asyncio.gather(*(one(r) for r in rows))
            if len(rows) < PAGE:
                return outcomes
            after = (rows[-1].requested, rows[-1].id)

    async def sweep(self) -> list[str]:
        """Mark ``uncertain`` every request whose POST was claimed longer ago than the lease."""
        now = self.clock()
        stale = await in_thread(self.store.adhoc_abandoned, now - dt.timedelta(seconds=self.lease))
        marked = []
        for request_id in stale:
            note = (
                "a POST to the city was under way when the process sending it stopped: the city "
                "may have it; check with the city, then record its id or send it again"
            )
            if await self._move(request_id, ("sending",), "uncertain", forward_note=note):
                log.warning("ad hoc request %s: %s", request_id, note)
                marked.append(request_id)
        return marked

    async def forward(self, request: AdhocRequest, *, resend: bool = False) -> Outcome:
        """Forward one request if it now has somewhere to go; ``resend`` is the operator's word
        that an ``uncertain`` or ``refused`` one may be sent (again)."""
        if request.lat is None or request.long is None:
            return await self._wait(
                request, "held", "it has an address but no point; only a point can be located"
            )
        answer = await self.answerer.answer(request.lat, request.long, request.service_name)
        jurisdiction, endpoint = answer.jurisdiction, answer.endpoint
        if answer.is_fallback or jurisdiction is None or endpoint is None:
            state = "unmatched" if answer.reason == "concern_not_offered" else "held"
            return await self._wait(request, state, answer.message())
        client = GeoReportClient(
            self.fetcher,
            endpoint.url,
            jurisdiction_id=jurisdiction.jurisdiction_id,
            api_key=self._key(endpoint.url, jurisdiction),
        )
        try:
            form, code = await self._form(client, request, jurisdiction)
        except _NoService as exc:
            return await self._wait(request, "unmatched", str(exc))
        except GeoWebError as exc:  # the city's lists could not be read: try again later
            attempts = request.forward_attempts + 1
            note = f"{jurisdiction.name}: {exc}"
            return await self._failed(request.id, request.forward_state, attempts, note)
        return await self._post(request, client, form, code, jurisdiction, resend=resend)

    async def _form(
        self, client: GeoReportClient, request: AdhocRequest, jurisdiction: Jurisdiction
    ) -> tuple[dict[str, list[str]], str]:
        """The city's form for this request, and the service_code it goes under."""
        catalog = ServiceCatalog(await self._read(client, "", client.services))
        choice = catalog.choose(request.service_name)
        if choice.match is None and not choice.ambiguous:
            choice = catalog.choose(request.service_code)
        if choice.match is None:
            raise _NoService(f"{jurisdiction.name} covers the point, but {choice.why}")
        service = choice.match.service
        ours = {k: v if isinstance(v, list) else [str(v)] for k, v in request.attributes.items()}
        given: dict[str, Sequence[str]] = {}
        if service.metadata:
            code = service.service_code
            definition = await self._read(client, code, lambda: client.definition(code))
            codes = {a.code for a in definition.attributes}
            given = {k: v for k, v in ours.items() if k in codes}
            try:
                check_attributes(definition.attributes, given)
            except InvalidAttributes as exc:
                raise _NoService(
                    f"{jurisdiction.name}'s service {service.service_code!r} needs what the "
                    f"report lacks: {exc}"
                ) from None
        # Attributes the city's definition has no place for still reach a person there.
        extra = [f"{k}: {', '.join(v)}" for k, v in ours.items() if k not in given]
        description = "\n".join([request.description, *extra]).strip()
        private = request.private or {}
        form = report_form(
            service_code=service.service_code,
            lat=request.lat,
            long=request.long,
            address_string=request.address_string,
            description=description,
            attributes=given,
            media_url=request.media_url,
            email=private.get("email", ""),
            first_name=private.get("first_name", ""),
            last_name=private.get("last_name", ""),
            phone=private.get("phone", ""),
        )
        return form, service.service_code

    async def _post(
        self,
        request: AdhocRequest,
        client: GeoReportClient,
        form: dict[str, list[str]],
        code: str,
        jurisdiction: Jurisdiction,
        *,
        resend: bool,
    ) -> Outcome:
        now = self.clock()
        allowed = ("held", "unmatched", "uncertain", "refused") if resend else ("held", "unmatched")
        claimed = await self._move(
            request.id,
            allowed,
            "sending",
            forward_endpoint=client.endpoint,
            forward_jurisdiction=jurisdiction.id,
            forward_service_code=code,
            forward_attempts=request.forward_attempts + 1,
            forward_sent=now,
            forward_note=f"sending to {jurisdiction.name} as {code!r}",
        )
        if claimed is None:
            return Outcome(request.id, "sending", "another forwarder took it first")
        try:
            filed = await client.post(form)
        except (NotSent, CityFailed) as exc:
            note = f"{jurisdiction.name}: {exc}"
            return await self._failed(request.id, "sending", claimed.forward_attempts, note)
        except Refused as exc:
            note = f"{jurisdiction.name} refused it: {exc}"
            await self._move(request.id, ("sending",), "refused", forward_note=note)
            return Outcome(request.id, "refused", note)
        except Exception as exc:  # Uncertain, or anything unforeseen once the POST may be out
            note = f"the POST to {jurisdiction.name} may have reached it: {exc}"
            await self._move(request.id, ("sending",), "uncertain", forward_note=note)
            log.warning("ad hoc request %s: %s", request.id, note)
            return Outcome(request.id, "uncertain", note)
        done = self.clock()
        city_ref = filed.service_request_id or f"token {filed.token}"
        note = f"forwarded to {jurisdiction.name} as {city_ref}"
        await self._move(
            request.id,
            ("sending",),
            "forwarded",
            forward_id=filed.service_request_id,
            forward_token=filed.token,
            forward_done=done,
            forward_next=done,  # read its status back at once
            forward_note=note,
            status_notes=f"Forwarded to {jurisdiction.name} ({client.endpoint}) as {city_ref}.",
        )
        log.info("ad hoc request %s %s", request.id, note)
        return Outcome(request.id, "forwarded", note)

    # -----------------------------------------------------------------------------------------
    # Reading the city's status back

    async def poll_due(self, ids: Sequence[str] = ()) -> list[Outcome]:
        """Read back the status of forwarded requests whose time has come (or those named)."""
        rows = await in_thread(
            self.store.adhoc_due,
            self.clock(),
            ("forwarded",),
            waiting_too=bool(ids),
            unscheduled=False,  # a closed request is not polled again
            ids=tuple(ids),
            limit=PAGE,
        )
        return [await self.poll_one(r) for r in rows]

    async def poll_one(self, request: AdhocRequest) -> Outcome:
        endpoint = request.forward_endpoint or ""
        jurisdiction = self._jurisdiction(request.forward_jurisdiction)
        name = jurisdiction.name if jurisdiction else request.forward_jurisdiction or endpoint
        client = GeoReportClient(
            self.fetcher,
            endpoint,
            jurisdiction_id=jurisdiction.jurisdiction_id if jurisdiction else None,
        )
        later = self.clock() + dt.timedelta(seconds=self.poll)
        city_id = request.forward_id
        try:
            if city_id is None and request.forward_token:
                city_id = await client.request_id_for_token(request.forward_token)
                if city_id is None:
                    await self._move(request.id, ("forwarded",), "forwarded", forward_next=later)
                    return Outcome(request.id, "forwarded", f"{name} has no id for it yet")
            if city_id is None:
                return await self._settle(request, "the city answered with neither id nor token")
            city = await client.request(city_id)
        except GeoWebError as exc:
            note = f"cannot read its status from {name}: {exc}"
            await self._move(
                request.id, ("forwarded",), "forwarded", forward_id=city_id, forward_next=later
            )
            return Outcome(request.id, "forwarded", note)
        closed = city.status.lower() == "closed"
        says = f" {name} says: {city.status_notes}" if city.status_notes else ""
        await self._move(
            request.id,
            ("forwarded",),
            "forwarded",
            forward_id=city_id,
            forward_status=city.status,
            forward_status_notes=city.status_notes,
            forward_next=None if closed else later,
            status="closed" if closed else "open",
            status_notes=f"Forwarded to {name} ({endpoint}) as {city_id}; its status is "
            f"{city.status}.{says}",
        )
        return Outcome(request.id, "forwarded", f"{name}: {city.status}")

    async def _settle(self, request: AdhocRequest, note: str) -> Outcome:
        await self._move(request.id, ("forwarded",), "forwarded", forward_next=None)
        return Outcome(request.id, "forwarded", note)

    # -----------------------------------------------------------------------------------------

    async def _read(
        self, client: GeoReportClient, code: str, read: Callable[[], Awaitable[Any]]
    ) -> Any:
        key = (client.endpoint, code)
        task = self._lists.get(key)
        if task is None:
            task = self._lists[key] = asyncio.ensure_future(read())
        return await asyncio.shield(task)

    def _key(self, endpoint: str, jurisdiction: Jurisdiction) -> str | None:
        return self.keys.get(endpoint.rstrip("/")) or self.keys.get(jurisdiction.id)

    def _jurisdiction(self, registry_id: str | None) -> Jurisdiction | None:
        resolver = self.answerer.resolver
        if registry_id is None or registry_id not in resolver:
            return None
        return resolver.jurisdiction(registry_id)

    async def _wait(self, request: AdhocRequest, state: str, note: str) -> Outcome:
        """Keep the request (``held`` or ``unmatched``) until the next registry change, and look
        again after ``RECHECK`` anyway (a city's services list can change without one)."""
        await self._move(
            request.id,
            (request.forward_state,),
            state,
            forward_note=note,
            forward_next=self.clock() + dt.timedelta(seconds=RECHECK),
        )
        return Outcome(request.id, state, note)

    async def _failed(self, request_id: str, current: str, attempts: int, note: str) -> Outcome:
        """Back to ``held`` after the ``attempts``-th failure, tried again after a back-off that
        doubles with each."""
        delay = min(self.retry * 2 ** (max(attempts, 1) - 1), MAX_RETRY)
        await self._move(
            request_id,
            (current,),
            "held",
            forward_note=f"{note}; trying again in {delay:g} s",
            forward_next=self.clock() + dt.timedelta(seconds=delay),
            forward_attempts=attempts,
        )
        return Outcome(request_id, "held", note)

    async def _move(
        self, request_id: str, from_states: tuple[str, ...], to_state: str, **columns: Any
    ) -> AdhocRequest | None:
        return await in_thread(
            self.store.adhoc_transition,
            request_id,
            from_states,
            to_state,
            now=self.clock(),
            **columns,
        )


def open_forwarder(runtime: Runtime, keys: Mapping[str, str]) -> Forwarder:
    """The forwarder of a runtime, as its settings make it, with the operator's API keys
    (:func:`load_keys`)."""
    settings = runtime.settings
    return Forwarder(
        runtime.store,
        runtime.answerer,
        runtime.fetcher,
        keys=keys,
        retry=settings.adhoc_retry,
        poll=settings.adhoc_poll,
        # A POST ends within the fetch time limit; twice that, and its process is gone.
        lease=2 * runtime.limits.total_timeout + 5,
    )


class _NoService(Exception):
    """The covering city has no one service for the request, or needs what it lacks."""


__all__ = ["Forwarder", "Outcome", "load_keys", "open_forwarder"]
