"""The Python client of GeoWeb DNS: ``resolve`` a point, and ``report`` a problem there as the
Open311 system architecture's steps 1-4 do (resolve the point; read the endpoint's services list
and choose the service; read its definition and fill it in; POST), falling back to the ad hoc
service when the answer says so. ``geoweb report`` is this client on the command line.

    async with GeoWebClient("https://geoweb.example.org") as client:
        result = await client.report(48.137, 11.575, "pothole", "Deep hole by the bus stop",
                                     attributes={"severity": "high"})
        print(result.service_request_id or result.token)

With a resolver URL, answers come from its ``GET /v1/resolve`` and are kept in memory as long as
its ``Cache-Control`` allows (the architecture's "if not already cached"): ``max-age`` and
``Expires`` as RFC 9111 reads them, nothing kept for ``no-store``. Without one, the local registry
answers, through the same :class:`~resolver.runtime.Runtime` as ``geoweb resolve``.

Whom it trusts: the resolver chosen (and the operator's own fallback URL, in local mode) is
reached on whatever address it has, like any service one configures; every endpoint an answer
names is other people's data, reached only through the guarded fetcher (public addresses, unless
``allow_networks`` lists more).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from common.errors import GeoWebError, InvalidInput
from common.models import Service
from discovery.documents import DocumentError, load_json
from discovery.fetch import Fetcher, FetchLimits, MemoryHttpCache, make_session
from discovery.georeport import (
    GeoReportClient,
    InvalidAttributes,
    check_attributes,
    report_form,
)
from resolver.config import Settings
from resolver.core.concerns import ServiceCatalog, ServiceChoice
from resolver.core.decide import check_point, parse_coordinate
from resolver.runtime import Runtime

#: Every address: for the resolver one chose, which may well be on this machine or a LAN.
_ANY_ADDRESS = ("0.0.0.0/0", "::/0")
#: Services named when a concern matches none of them.
_LISTED = 30
_LIMITS = FetchLimits()


class ConcernNotMatched(InvalidInput):
    """No single service of the endpoint matches the concern: none does, or several do equally.
    ``candidates`` are the service codes to choose from."""

    code = "concern_not_matched"

    def __init__(self, detail: str, *, concern: str, candidates: Sequence[str]) -> None:
        super().__init__(detail, concern=concern, candidates=list(candidates))


class NowhereToReport(GeoWebError):
    """The answer names no endpoint: nobody covering the point takes reports, and there is no
    fallback service."""

    status = 404
    code = "nowhere_to_report"


@dataclass(frozen=True, slots=True)
class ReportResult:
    """Where a report went and what the city called it: its ``service_request_id``, or a
    ``token`` to ask for the id later (neither, for a ``blackbox`` service)."""

    service_request_id: str | None
    token: str | None
    notice: str
    endpoint: str
    service_code: str
    service_name: str
    #: The responsible jurisdiction as the answer names it (``id``, ``name``,
    #: ``jurisdiction_id``...), ``None`` when nobody covers the point.
    jurisdiction: dict[str, Any] | None
    #: The ``jurisdiction_id`` sent to the endpoint (never to the ad hoc service).
    jurisdiction_id: str | None
    #: The report went to the ad hoc fallback service, not to a jurisdiction's endpoint.
    adhoc: bool
    #: Why the fallback was needed (``no_jurisdiction``, ``concern_not_offered``, ``no_endpoint``).
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return (
        scheme,
        (parts.hostname or "").lower(),
        parts.port or {"http": 80, "https": 443}.get(scheme),
    )


class GeoWebClient:
    """Resolves points and files reports. Use it as ``async with`` (it holds HTTP sessions, and in
    local mode the store).

    ``resolver_url``: a GeoWeb DNS server's base URL; ``None`` answers from the local registry
    with ``settings`` (the store, the embedded layer, DNS, the fetch limits; ``geoweb resolve``'s
    defaults when not given). ``fetcher``: a guarded :class:`Fetcher` to reach the endpoints with
    (an application's own; by default one is made with ``allow_networks`` and ``limits``).
    ``clock``: seconds since the epoch, for the answers' expiry."""

    def __init__(
        self,
        resolver_url: str | None = None,
        *,
        settings: Settings | None = None,
        fetcher: Fetcher | None = None,
        allow_networks: Sequence[str] = (),
        limits: FetchLimits = _LIMITS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if resolver_url is not None and settings is not None:
            raise ValueError("give a resolver URL or local settings, not both")
        self.resolver_url = resolver_url.rstrip("/") if resolver_url else None
        if resolver_url is not None and _origin(resolver_url)[0] not in ("http", "https"):
            raise InvalidInput(f"the resolver URL {resolver_url!r} is not an http(s) URL")
        # Answered here, not by a server: there is no ad hoc service of ours to send to.
        self.settings = (
            None if resolver_url else dataclasses.replace(settings or Settings(), adhoc=False)
        )
        self._fetcher = fetcher
        self._allow_networks = tuple(allow_networks)
        self._limits = limits
        self._clock = clock
        self._stack: contextlib.AsyncExitStack | None = None
        self._trusted: Fetcher | None = None
        self._trusted_origins: set[tuple[str, str, int | None]] = set()
        self._runtime: Runtime | None = None

    async def __aenter__(self) -> GeoWebClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the sessions (and, in local mode, the store and the runtime)."""
        if self._stack is not None:
            return
        stack = contextlib.AsyncExitStack()
        try:
            if self.settings is not None:
                self._runtime = await stack.enter_async_context(Runtime.open(self.settings))
                limits = self._runtime.limits
                if self._fetcher is None:
                    self._fetcher = self._runtime.fetcher
                if self.settings.fallback_url:
                    self._trusted_origins.add(_origin(self.settings.fallback_url))
            else:
                limits = self._limits
                assert self.resolver_url is not None
                self._trusted_origins.add(_origin(self.resolver_url))
            if self._fetcher is None:
                session = make_session(allow_networks=self._allow_networks, limits=limits)
                await stack.enter_async_context(session)
                self._fetcher = Fetcher(
                    session,
                    limits=limits,
                    allow_networks=self._allow_networks,
                    cache=MemoryHttpCache(),
                    clock=self._clock,
                )
            trusted = make_session(allow_networks=_ANY_ADDRESS, limits=limits)
            await stack.enter_async_context(trusted)
            # Answers are kept while fresh, and not served once expired even if the resolver
            # is down: an old answer may name an endpoint that has changed since.
            self._trusted = Fetcher(
                trusted,
                limits=limits,
                allow_networks=_ANY_ADDRESS,
                cache=MemoryHttpCache(),
                clock=self._clock,
                stale_if_error=0.0,
            )
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        self._runtime = self._trusted = None

    def _fetcher_for(self, url: str) -> Fetcher:
        """The trusted fetcher for the resolver's own origin, the guarded one for the rest."""
        if self._trusted is None or self._fetcher is None:
            raise RuntimeError("the client is not open: use it as `async with GeoWebClient(...)`")
        return self._trusted if _origin(url) in self._trusted_origins else self._fetcher

    async def resolve(self, lat: float, long: float, concern: str | None = None) -> dict[str, Any]:
        """Who takes reports about ``concern`` at this point: the answer as ``/v1/resolve`` gives
        it (``endpoint``, ``fallback``, ``reason``, ``jurisdiction``, ``provenance``...)."""
        lat, long = parse_coordinate(lat, "lat"), parse_coordinate(long, "long")
        check_point(lat, long)
        if self._runtime is not None:
            answer = await self._runtime.answerer.answer(lat, long, concern)
            return answer.to_dict()
        assert self.resolver_url is not None
        query = {"lat": repr(lat), "long": repr(long)}
        if concern:
            query["concern"] = concern
        url = f"{self.resolver_url}/v1/resolve?{urlencode(query)}"
        fetched = await self._fetcher_for(url).get(url, accept=("application/json",))
        try:
            body = load_json(fetched.body)
        except DocumentError as error:
            raise DocumentError(error.fields["reason"], url=url) from None
        if not isinstance(body, dict) or "endpoint" not in body:
            raise DocumentError("the answer is not a GeoWeb DNS answer (no 'endpoint')", url=url)
        return body

    async def report(
        self,
        lat: float,
        long: float,
        concern: str,
        description: str,
        attributes: Mapping[str, str | Sequence[str]] | None = None,
        *,
        email: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        phone: str | None = None,
        media_url: str | None = None,
        address_string: str | None = None,
        api_key: str | None = None,
    ) -> ReportResult:
        """File a report about ``concern`` at this point where the answer says, under the one
        service that matches the concern, with ``attributes`` (code -> value, or values for a
        ``multivaluelist``) checked against its definition first.

        Raises :class:`ConcernNotMatched` (no service, or several equally: the candidates are
        listed, none is guessed), :class:`~discovery.georeport.InvalidAttributes` (a required one
        missing, an unknown one, a bad value: nothing is sent), :class:`NowhereToReport`, and for
        the POST itself :class:`~discovery.georeport.NotSent`, ``Refused``, ``CityFailed`` or
        ``Uncertain`` (it may have been filed: do not send it again without checking)."""
        answer = await self.resolve(lat, long, concern)
        endpoint = answer.get("endpoint") or {}
        url = endpoint.get("url") if isinstance(endpoint, dict) else None
        if not url:
            raise NowhereToReport(str(answer.get("message") or NowhereToReport.__doc__))
        adhoc = bool(answer.get("fallback"))
        jurisdiction = (
            answer.get("jurisdiction") if isinstance(answer.get("jurisdiction"), dict) else None
        )
        jurisdiction_id = (
            None if adhoc or jurisdiction is None else jurisdiction.get("jurisdiction_id")
        )
        formats = endpoint.get("formats") or ["application/json"]
        city = GeoReportClient(
            self._fetcher_for(url),
            url,
            jurisdiction_id=jurisdiction_id,
            api_key=api_key,
            fmt="json" if "application/json" in formats else "xml",
        )
        services = await city.services()
        service = _one_service(ServiceCatalog(services).choose(concern), concern, services, url)
        definition = await city.definition(service.service_code) if service.metadata else None
        given = {k: [v] if isinstance(v, str) else list(v) for k, v in (attributes or {}).items()}
        try:
            checked = check_attributes(definition.attributes if definition else (), given)
        except InvalidAttributes as error:
            raise InvalidAttributes(
                f"service {service.service_code!r} ({service.service_name}) at {url}: "
                f"{error.detail}",
                attribute=error.fields["attribute"],
            ) from None
        form = report_form(
            service_code=service.service_code,
            lat=lat,
            long=long,
            address_string=address_string or "",
            description=description,
            attributes=checked,
            media_url=media_url or "",
            email=email or "",
            first_name=first_name or "",
            last_name=last_name or "",
            phone=phone or "",
        )
        filed = await city.post(form, blackbox=service.type == "blackbox")
        return ReportResult(
            service_request_id=filed.service_request_id,
            token=filed.token,
            notice=filed.notice,
            endpoint=city.endpoint,
            service_code=service.service_code,
            service_name=service.service_name,
            jurisdiction=jurisdiction,
            jurisdiction_id=jurisdiction_id,
            adhoc=adhoc,
            reason=answer.get("reason"),
        )


def _named(services: Sequence[Service]) -> str:
    shown = ", ".join(f"{s.service_code!r} ({s.service_name})" for s in services[:_LISTED])
    more = len(services) - _LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _one_service(
    choice: ServiceChoice, concern: str, services: Sequence[Service], endpoint: str
) -> Service:
    """The matched service, or :class:`ConcernNotMatched` listing the candidates."""
    if choice.match is not None:
        return choice.match.service
    if choice.ambiguous:
        tied = [m.service for m in choice.matches]
        raise ConcernNotMatched(
            f"{concern!r} matches {len(tied)} services of {endpoint} equally: {_named(tied)}; "
            "give one of these service_codes as the concern",
            concern=concern,
            candidates=[s.service_code for s in tied],
        )
    raise ConcernNotMatched(
        f"no service of {endpoint} matches {concern!r}; its services: {_named(services) or 'none'}",
        concern=concern,
        candidates=[s.service_code for s in services],
    )


__all__ = ["ConcernNotMatched", "GeoWebClient", "NowhereToReport", "ReportResult"]
