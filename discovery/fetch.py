"""The bounded HTTP client every outside document goes through.

Every URL it fetches came from someone else's data (a registry, a TXT record, a discovery document),
so everything is bounded and checked:

- **time**: a connect timeout and a total timeout for the whole fetch, redirects included;
- **size**: the body is streamed and reading stops at ``max_bytes`` (a declared ``Content-Length``
  over the limit is refused before any of the body is read); memory never holds more than the
  limit plus one chunk;
- **redirects**: followed here, not by aiohttp, at most ``max_redirects``, each hop checked again;
- **content types**: the caller says what it accepts (parameters like ``charset`` are ignored);
- **addresses** (the SSRF guard): loopback, private, link-local, multicast, reserved and unspecified
  addresses are refused unless an operator allow-lists their network. The check is made on the
  address the socket is about to connect to, after DNS, by the connector's ``socket_factory`` (so a
  name that resolves to ``127.0.0.1`` or a DNS answer that changes between lookups cannot slip
  through), and again on every redirect hop's URL before it is requested.

Caching follows RFC 9111 for a cache shared by one resolver's users: freshness from
``Cache-Control: s-maxage``/``max-age``, ``Expires``, ``Age``, or the heuristic of 10% of the time
since ``Last-Modified`` (at most a day); ``no-store`` is not stored and ``no-cache`` is always
revalidated; stored ``ETag``/``Last-Modified`` validators make the next request conditional, and a
``304`` refreshes the stored response. When the origin fails (timeout, refused, 5xx, over a limit),
a stored response up to ``stale_if_error`` seconds past its freshness is served marked ``stale``
with the reason (RFC 5861's stale-if-error, applied by default).

:meth:`Fetcher.post` sends a form (a GeoReport v2 service request) under the same guard and bounds,
never cached and never redirected, and its errors say whether anything was written: a request
that may have reached the server must not be sent again blindly.

Use :func:`make_session` for the :class:`aiohttp.ClientSession` a :class:`Fetcher` gets: a plain
session has no address guard, and the fetcher refuses it.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any, Protocol
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver

from common.errors import GeoWebError

#: Chunk size for streaming bodies; memory holds at most ``max_bytes`` plus one chunk.
CHUNK = 64 * 1024

#: How long past its freshness a stored response may still be served when the origin fails.
DEFAULT_STALE_IF_ERROR = 7 * 24 * 3600.0

#: Heuristic freshness (RFC 9111 4.2.2) is at most this long.
MAX_HEURISTIC_FRESHNESS = 24 * 3600.0

_REDIRECTS = frozenset({301, 302, 303, 307, 308})

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchError(GeoWebError):
    """A document could not be fetched."""

    status = 502
    code = "fetch_failed"

    def __init__(self, url: str, reason: str, **fields: Any) -> None:
        super().__init__(f"cannot fetch {url}: {reason}", url=url, reason=reason, **fields)


class PostNotSent(FetchError):
    """A POST failed before any of it was written: the server cannot have it."""


class PostMaybeSent(FetchError):
    """A POST failed after its request was (being) written: the server may have it.
    ``http_status`` is set when its answer's status line arrived."""


class AddressRefused(OSError):
    """The SSRF guard refused to connect to an address."""


@dataclass(frozen=True)
class FetchLimits:
    """Bounds on one fetch (the defaults are the documented ``geoweb serve`` defaults)."""

    connect_timeout: float = 5.0
    total_timeout: float = 15.0
    max_bytes: int = 2 * 1024 * 1024
    max_redirects: int = 3


@dataclass(frozen=True)
class Fetched:
    """A response body with what caching needs to know about it.

    ``expires_at`` is ``None`` when the response carries no freshness information (the caller
    chooses how long to trust it; the next fetch revalidates). ``from_cache``: the body came from
    the cache (fresh, or revalidated by a 304 when ``revalidated``); ``stale``: the origin failed
    and this is an expired stored copy, ``error`` says why.
    """

    url: str
    status: int
    content_type: str
    body: bytes
    fetched_at: float
    expires_at: float | None
    etag: str | None
    last_modified: str | None
    from_cache: bool
    stale: bool
    error: str | None = None
    revalidated: bool = False
    final_url: str | None = None

    @property
    def media_type(self) -> str:
        """The content type without parameters, lowercased (``text/xml; charset=utf-8``:
        ``text/xml``)."""
        return media_type(self.content_type)

    def fresh(self, now: float) -> bool:
        return self.expires_at is not None and now < self.expires_at


@dataclass(frozen=True)
class Posted:
    """The answer to a POST, whatever its status (the caller reads 4xx and 5xx bodies too);
    ``location`` is a redirect's target, never followed."""

    url: str
    status: int
    content_type: str
    body: bytes
    location: str | None = None

    @property
    def media_type(self) -> str:
        return media_type(self.content_type)


class HttpCache(Protocol):
    """Where responses are kept between fetches (and restarts). Small, like dnspython's caches.
    Coroutines, because the fetcher calls them on the event loop: a cache kept in memory answers
    at once, one kept in a database does its blocking work in a thread."""

    async def get(self, url: str) -> Fetched | None: ...

    async def put(self, fetched: Fetched) -> None: ...

    async def flush(self, url: str | None = None) -> None: ...


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    revalidated: int = 0
    stale_served: int = 0


class MemoryHttpCache:
    """An in-process :class:`HttpCache` (the store's table is the persistent one)."""

    def __init__(self) -> None:
        self._entries: dict[str, Fetched] = {}

    async def get(self, url: str) -> Fetched | None:
        return self._entries.get(url)

    async def put(self, fetched: Fetched) -> None:
        self._entries[fetched.url] = fetched

    async def flush(self, url: str | None = None) -> None:
        if url is None:
            self._entries.clear()
        else:
            self._entries.pop(url, None)


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


# ---------------------------------------------------------------------------------------------
# The SSRF guard


def _network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a network (like 127.0.0.0/8 or fd00::/8)") from exc


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses may be connected to: public unicast ones, plus allow-listed networks."""

    allow_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def allowing(cls, networks: Iterable[str | IPNetwork]) -> AddressPolicy:
        parsed = [n if not isinstance(n, str) else _network(n) for n in networks]
        return cls(tuple(parsed))

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why this address is refused, or ``None`` when it may be connected to."""
        try:
            ip = address if not isinstance(address, str) else ipaddress.ip_address(address)
        except ValueError:
            return f"{address!r} is not an IP address"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip.version == n.version and ip in n for n in self.allow_networks):
            return None
        for label, flag in (
            ("loopback", ip.is_loopback),
            ("link-local", ip.is_link_local),
            ("multicast", ip.is_multicast),
            ("unspecified", ip.is_unspecified),
            ("reserved", ip.is_reserved),
            ("private", ip.is_private),
            ("not globally routable", not ip.is_global),
        ):
            if flag:
                return f"{ip} is a {label} address (not allow-listed)"
        return None

    def socket_factory(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """Called by the connector with the exact address it is about to connect to."""
        family, type_, proto, _, sockaddr = addr_info
        reason = self.refusal(str(sockaddr[0]).split("%", 1)[0])
        if reason is not None:
            raise AddressRefused(f"refused before connecting: {reason}")
        return socket.socket(family=family, type=type_, proto=proto)


class GuardedConnector(aiohttp.TCPConnector):
    """A TCP connector that connects only to addresses its :class:`AddressPolicy` allows."""

    def __init__(self, policy: AddressPolicy, **kwargs: Any) -> None:
        self.policy = policy
        super().__init__(socket_factory=policy.socket_factory, **kwargs)


def make_session(
    *,
    allow_networks: Sequence[str] = (),
    limits: FetchLimits = FetchLimits(),
    resolver: AbstractResolver | None = None,
) -> aiohttp.ClientSession:
    """The guarded client session a :class:`Fetcher` needs (one per application).

    Proxies from the environment are not used (``trust_env=False``): the guard must see the
    address actually connected to.
    """
    policy = AddressPolicy.allowing(allow_networks)
    connector = GuardedConnector(policy, resolver=resolver, limit=32, ttl_dns_cache=60)
    timeout = aiohttp.ClientTimeout(
        total=limits.total_timeout,
        connect=limits.connect_timeout,
        sock_connect=limits.connect_timeout,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        trust_env=False,
        auto_decompress=True,
        trace_configs=[WriteTrace()],
    )


class _Written:
    """Set by :class:`WriteTrace` when a request's writing starts."""

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = False


async def _writing(session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
    mark = context.trace_request_ctx
    if isinstance(mark, _Written):
        mark.started = True


class WriteTrace(aiohttp.TraceConfig):
    """Marks the moment a request's headers are handed to the writer (aiohttp signals it just
    before they are buffered), so a failed POST can say whether any of it was written: before
    the mark, the server cannot have it."""

    def __init__(self) -> None:
        super().__init__()
        self.on_request_headers_sent.append(_writing)


# ---------------------------------------------------------------------------------------------
# Caching (RFC 9111)


def cache_directives(header: str | None) -> dict[str, str | None]:
    """``Cache-Control`` as a dict: ``max-age=60, no-cache`` becomes
    ``{"max-age": "60", "no-cache": None}``."""
    directives: dict[str, str | None] = {}
    for part in (header or "").split(","):
        name, sep, value = part.strip().partition("=")
        if name:
            directives[name.strip().lower()] = value.strip().strip('"') if sep else None
    return directives


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(int(value))) if value is not None else None
    except ValueError:
        return None


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def freshness(headers: Any, fetched_at: float) -> tuple[bool, float | None]:
    """Whether a response may be stored, and until when it is fresh (``None``: not known).

    ``headers`` is a case-insensitive mapping of the response headers.
    """
    directives = cache_directives(headers.get("Cache-Control"))
    if "no-store" in directives:
        return False, None
    age = _seconds(headers.get("Age")) or 0.0
    if "no-cache" in directives:
        return True, fetched_at
    lifetime = _seconds(directives.get("s-maxage"))
    if lifetime is None:
        lifetime = _seconds(directives.get("max-age"))
    date = _http_date(headers.get("Date")) or fetched_at
    if lifetime is None and "Expires" in headers:
        expires = _http_date(headers.get("Expires"))
        lifetime = max(0.0, expires - date) if expires is not None else 0.0
    if lifetime is None:
        last_modified = _http_date(headers.get("Last-Modified"))
        if last_modified is None:
            return True, None
        lifetime = min(MAX_HEURISTIC_FRESHNESS, max(0.0, (date - last_modified) / 10))
    return True, fetched_at + max(0.0, lifetime - age)


# ---------------------------------------------------------------------------------------------
# The fetcher


@dataclass
class _Hop:
    url: str
    redirects: list[str] = field(default_factory=list)


class Fetcher:
    """GETs documents from other people's servers, bounded, guarded and cached."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        limits: FetchLimits = FetchLimits(),
        allow_networks: Sequence[str] = (),
        cache: HttpCache | None = None,
        clock: Callable[[], float] = time.time,
        stale_if_error: float = DEFAULT_STALE_IF_ERROR,
        user_agent: str = "geowebdns (+https://github.com/open311)",
    ) -> None:
        connector = session.connector
        if not isinstance(connector, GuardedConnector):
            raise ValueError(
                "the session has no address guard; create it with discovery.fetch.make_session()"
            )
        self.policy = AddressPolicy.allowing(allow_networks) if allow_networks else connector.policy
        if set(self.policy.allow_networks) != set(connector.policy.allow_networks):
            raise ValueError("the session's allow-listed networks differ from the fetcher's")
        self.session = session
        #: Whether the session marks when writing starts (:func:`make_session`'s do); without it,
        #: a POST that failed after connecting counts as possibly sent.
        self.traced = any(isinstance(t, WriteTrace) for t in session.trace_configs)
        self.limits = limits
        self.cache = cache
        self.clock = clock
        self.stale_if_error = stale_if_error
        self.user_agent = user_agent
        self.stats = CacheStats()

    async def get(
        self, url: str, *, accept: Sequence[str] = (), revalidate: bool = False
    ) -> Fetched:
        """The document at ``url``: from the cache while fresh (unless ``revalidate``), else from
        the origin (conditional when validators are stored); a stale stored copy when the origin
        fails; else :class:`FetchError` with the reason."""
        now = self.clock()
        cached = await self.cache.get(url) if self.cache is not None else None
        if (
            cached is not None
            and not revalidate
            and cached.fresh(now)
            and _acceptable(cached.content_type, accept)
        ):
            self.stats.hits += 1
            return replace(cached, from_cache=True, stale=False, error=None, revalidated=False)
        self.stats.misses += 1
        try:
            return await self._fetch(url, accept, cached)
        except FetchError as error:
            if (
                cached is not None
                and _acceptable(cached.content_type, accept)
                and now <= (cached.expires_at or cached.fetched_at) + self.stale_if_error
            ):
                self.stats.stale_served += 1
                return replace(cached, from_cache=True, stale=True, error=error.reason)
            raise

    async def _fetch(self, url: str, accept: Sequence[str], cached: Fetched | None) -> Fetched:
        headers = {"User-Agent": self.user_agent}
        if accept:
            headers["Accept"] = ", ".join(accept)
        if cached is not None:
            if cached.etag:
                headers["If-None-Match"] = cached.etag
            if cached.last_modified:
                headers["If-Modified-Since"] = cached.last_modified
        hop = _Hop(url)
        try:
            async with asyncio.timeout(self.limits.total_timeout):
                return await self._follow(hop, headers, accept, cached)
        except TimeoutError:
            raise FetchError(
                url,
                f"no complete answer within {self.limits.total_timeout:g} s",
                limit="total_timeout",
            ) from None

    async def _follow(
        self, hop: _Hop, headers: dict[str, str], accept: Sequence[str], cached: Fetched | None
    ) -> Fetched:
        origin = hop.url
        while True:
            self._check_url(origin, hop.url)
            try:
                async with self.session.get(
                    hop.url, headers=headers, allow_redirects=False
                ) as response:
                    self._check_peer(origin, response)
                    if response.status in _REDIRECTS:
                        location = response.headers.get("Location")
                        if not location:
                            raise FetchError(origin, f"HTTP {response.status} without a Location")
                        if len(hop.redirects) >= self.limits.max_redirects:
                            raise FetchError(
                                origin,
                                f"more than {self.limits.max_redirects} redirects "
                                f"({' -> '.join([*hop.redirects, hop.url])})",
                                limit="max_redirects",
                            )
                        hop.redirects.append(hop.url)
                        hop.url = urljoin(hop.url, location)
                        continue
                    if response.status == 304 and cached is not None:
                        return await self._revalidated(cached, response)
                    if response.status != 200:
                        raise FetchError(
                            origin,
                            f"HTTP {response.status} {response.reason or ''}".strip(),
                            http_status=response.status,
                        )
                    content_type = response.headers.get("Content-Type", "")
                    if not _acceptable(content_type, accept):
                        raise FetchError(
                            origin,
                            f"content type {content_type or '(none)'!r} is not one of "
                            f"{', '.join(accept)}",
                            content_type=content_type,
                        )
                    body = await self._read(origin, response)
                    return await self._store(origin, hop.url, response, content_type, body)
            except TimeoutError:
                raise FetchError(
                    origin,
                    f"no complete answer within {self.limits.total_timeout:g} s",
                    limit="total_timeout",
                ) from None
            except AddressRefused as exc:
                raise FetchError(origin, str(exc), limit="address") from None
            except aiohttp.ClientConnectorError as exc:
                raise FetchError(origin, _connect_reason(exc), limit=_connect_limit(exc)) from None
            except aiohttp.ClientError as exc:
                raise FetchError(origin, f"{type(exc).__name__}: {exc}") from None
            except OSError as exc:
                raise FetchError(origin, f"{type(exc).__name__}: {exc}") from None

    async def post(
        self,
        url: str,
        form: Mapping[str, str | Sequence[str]],
        *,
        accept: Sequence[str] = (),
    ) -> Posted:
        """POST ``form`` form-encoded (UTF-8) to ``url``, under the guard and the fetch limits;
        the answer whatever its status, redirects included (never followed: a POST is not
        re-sent anywhere). :class:`PostNotSent` when it failed before any of it was written (the
        address refused, the name not resolving, no connection, the connect timeout);
        :class:`PostMaybeSent` when it failed after (cut, timed out, an unreadable answer)."""
        pairs = [
            (name, value)
            for name, values in form.items()
            for value in ([values] if isinstance(values, str) else values)
        ]
        body = urlencode(pairs).encode("ascii")
        headers = {
            "User-Agent": self.user_agent,
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        }
        if accept:
            headers["Accept"] = ", ".join(accept)
        try:
            self._check_url(url, url)
        except FetchError as error:
            raise PostNotSent(url, error.reason, limit=error.fields.get("limit")) from None
        written = _Written()
        status: int | None = None
        try:
            async with asyncio.timeout(self.limits.total_timeout):
                async with self.session.post(
                    url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    trace_request_ctx=written,
                ) as response:
                    status = response.status
                    self._check_peer(url, response)
                    content = await self._read(url, response)
                    return Posted(
                        url=url,
                        status=response.status,
                        content_type=response.headers.get("Content-Type", ""),
                        body=content,
                        location=response.headers.get("Location"),
                    )
        except AddressRefused as exc:
            raise PostNotSent(url, str(exc), limit="address") from None
        except aiohttp.ClientConnectorError as exc:
            raise PostNotSent(url, _connect_reason(exc), limit=_connect_limit(exc)) from None
        except aiohttp.ConnectionTimeoutError:
            raise PostNotSent(
                url,
                f"no connection within {self.limits.connect_timeout:g} s",
                limit="connect_timeout",
            ) from None
        except (TimeoutError, aiohttp.ClientError, OSError, FetchError) as exc:
            if isinstance(exc, TimeoutError):
                reason = f"no complete answer within {self.limits.total_timeout:g} s"
            elif isinstance(exc, FetchError):
                reason = exc.reason
            else:
                reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
            if self.traced and not written.started:
                raise PostNotSent(url, f"{reason} (before anything was sent)") from None
            when = "after the request was sent" if self.traced else "the request may have been sent"
            raise PostMaybeSent(url, f"{reason} ({when})", http_status=status) from None

    def _check_url(self, origin: str, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError(origin, f"{url!r} is not an http(s) URL", limit="scheme")
        host = parts.hostname
        if not host:
            raise FetchError(origin, f"{url!r} has no host", limit="scheme")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return  # a name: the connector checks every address it resolves to
        reason = self.policy.refusal(address)
        if reason is not None:
            raise FetchError(origin, f"refused before connecting: {reason}", limit="address")

    def _check_peer(self, origin: str, response: aiohttp.ClientResponse) -> None:
        """The peer the response came from (the guard already checked it before connecting)."""
        connection = response.connection
        transport = connection.transport if connection is not None else None
        peer = transport.get_extra_info("peername") if transport is not None else None
        if peer:
            reason = self.policy.refusal(str(peer[0]).split("%", 1)[0])
            if reason is not None:  # pragma: no cover - the socket factory refuses first
                raise FetchError(origin, f"connected to a refused address: {reason}")

    async def _read(self, origin: str, response: aiohttp.ClientResponse) -> bytes:
        limit = self.limits.max_bytes
        declared = response.content_length
        if declared is not None and declared > limit:
            response.close()
            raise FetchError(
                origin,
                f"the response declares {declared} bytes, more than the limit of {limit}",
                limit="max_bytes",
                bytes_read=0,
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(CHUNK):
            size += len(chunk)
            if size > limit:
                response.close()
                raise FetchError(
                    origin,
                    f"the response is larger than the limit of {limit} bytes "
                    f"(stopped after {size})",
                    limit="max_bytes",
                    bytes_read=size,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def _store(
        self,
        url: str,
        final_url: str,
        response: aiohttp.ClientResponse,
        content_type: str,
        body: bytes,
    ) -> Fetched:
        now = self.clock()
        storable, expires_at = freshness(response.headers, now)
        fetched = Fetched(
            url=url,
            status=200,
            content_type=content_type,
            body=body,
            fetched_at=now,
            expires_at=expires_at,
            etag=response.headers.get("ETag"),
            last_modified=response.headers.get("Last-Modified"),
            from_cache=False,
            stale=False,
            final_url=final_url if final_url != url else None,
        )
        if self.cache is not None:
            if storable:
                await self.cache.put(fetched)
            else:
                await self.cache.flush(url)
        return fetched

    async def _revalidated(self, cached: Fetched, response: aiohttp.ClientResponse) -> Fetched:
        """A 304: the stored body is current; its freshness and validators are updated."""
        now = self.clock()
        _storable, expires_at = freshness(response.headers, now)
        updated = replace(
            cached,
            fetched_at=now,
            expires_at=expires_at,
            etag=response.headers.get("ETag") or cached.etag,
            last_modified=response.headers.get("Last-Modified") or cached.last_modified,
            from_cache=False,
            stale=False,
            error=None,
            revalidated=False,
        )
        if self.cache is not None:
            await self.cache.put(updated)
        self.stats.revalidated += 1
        return replace(updated, from_cache=True, revalidated=True)


def _acceptable(content_type: str, accept: Sequence[str]) -> bool:
    return not accept or media_type(content_type) in {media_type(a) for a in accept}


def _connect_reason(exc: aiohttp.ClientConnectorError) -> str:
    os_error = exc.os_error
    if isinstance(os_error, AddressRefused):
        return str(os_error)
    text = str(os_error)
    if "refused before connecting" in text:  # several addresses, all refused
        return text
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"the name does not resolve: {text}"
    return f"cannot connect: {text}"


def _connect_limit(exc: aiohttp.ClientConnectorError) -> str | None:
    return "address" if "refused before connecting" in str(exc.os_error) else None


__all__ = [
    "AddressPolicy",
    "FetchError",
    "FetchLimits",
    "Fetched",
    "Fetcher",
    "GuardedConnector",
    "HttpCache",
    "MemoryHttpCache",
    "PostMaybeSent",
    "PostNotSent",
    "Posted",
    "WriteTrace",
    "make_session",
]
