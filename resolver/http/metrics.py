"""What an operator scrapes at ``GET /metrics`` (Prometheus text format).

Every metric lives in the :class:`Metrics` of one app, in a ``CollectorRegistry`` of its own:
two apps in one process (tests run many) never add to each other's counts, and nothing is kept
at module level. Requests are counted by the middleware of :mod:`resolver.http.operators`; the
caches' counters are read from the runtime's own statistics when scraped; the registry's serial
and the mirrors' state are read from the store just before each scrape.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from discovery.dns_lookup import DnsStats
from discovery.fetch import CacheStats
from resolver.runtime import Runtime

#: Latency buckets, in seconds: answers from memory take well under a millisecond, a refresh
#: that fetches from a city up to the fetch timeout.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15)
#: The route label of a request no route matched: one label, whatever the path.
UNMATCHED = "unmatched"


@dataclass(frozen=True)
class MirrorFacts:
    """One mirrored upstream as a scrape shows it."""

    url: str
    failures: int
    last_success: str | None


@dataclass(frozen=True)
class StoreFacts:
    """What a scrape reads from the store (in a worker thread, before rendering)."""

    serial: int
    answered_serial: int
    mirrors: Sequence[MirrorFacts]


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


class _CacheCollector(Collector):
    """The DNS and HTTP caches' hit and miss counters, read from the runtime when scraped."""

    def __init__(self, runtime: Callable[[], Runtime | None]) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        runtime = self._runtime()
        http = CounterMetricFamily(
            "geoweb_http_cache_lookups",
            "Documents the fetcher looked up in its HTTP cache, by result.",
            labels=["result"],
        )
        dns = CounterMetricFamily(
            "geoweb_dns_cache_lookups",
            "DNS lookups by how they were answered (hit, miss, stale: served after the servers "
            "failed, failure: nothing to answer with).",
            labels=["result"],
        )
        if runtime is not None:
            stats: CacheStats = runtime.fetcher.stats
            for result, value in (
                ("hit", stats.hits),
                ("miss", stats.misses),
                ("revalidated", stats.revalidated),
                ("stale", stats.stale_served),
            ):
                http.add_metric([result], value)
            totals = DnsStats()
            for lookup in _dns_lookups(runtime):
                totals.hits += lookup.stats.hits
                totals.misses += lookup.stats.misses
                totals.stale_served += lookup.stats.stale_served
                totals.failures += lookup.stats.failures
            for result, value in (
                ("hit", totals.hits),
                ("miss", totals.misses),
                ("stale", totals.stale_served),
                ("failure", totals.failures),
            ):
                dns.add_metric([result], value)
        yield http
        yield dns


def _dns_lookups(runtime: Runtime) -> list[Any]:
    """The distinct DNS lookups of the runtime (the DNS source's, the registry zone's)."""
    found: dict[int, Any] = {}
    holders: list[Any] = [*runtime.sources, getattr(runtime.answerer, "discovery", None)]
    for holder in holders:
        lookup = getattr(holder, "lookup", None)
        if lookup is not None and isinstance(getattr(lookup, "stats", None), DnsStats):
            found[id(lookup)] = lookup
    return list(found.values())


class _RequestCollector(Collector):
    """The request counts and latency histograms of :meth:`Metrics.observe`, when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "geoweb_requests",
            "HTTP requests answered, by route (its pattern), method and status.",
            labels=["route", "method", "status"],
        )
        routes = sorted((label, r) for label, r in self._metrics.routes.items() if r.counts)
        counted = sorted(
            ((label, method, status), count)
            for label, route in routes
            for (method, status), count in route.counts.items()
        )
        for (label, method, status), count in counted:
            requests.add_metric([label, method, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "geoweb_request_duration_seconds",
            "Seconds from a request's arrival at the app to its answer, by route.",
            labels=["route"],
        )
        bounds = [*(f"{b:g}" for b in LATENCY_BUCKETS), "+Inf"]
        for label, route in routes:
            counts = route.latency
            buckets = list(zip(bounds, accumulate(counts[:-1]), strict=True))
            latency.add_metric([label], buckets, sum_value=counts[-1])
        yield latency


class RouteMetrics:
    """One route's request counts and latency histogram. The middleware keeps this object per
    route, so counting a request is a few operations on plain numbers, read by the scrape on the
    same event loop: prometheus_client's locked counters and histograms take several
    microseconds."""

    __slots__ = ("counts", "latency")

    def __init__(self) -> None:
        #: Requests by (method, status).
        self.counts: dict[tuple[str, int], int] = {}
        #: The count in each latency bucket (the last one past every bound), then the sum.
        self.latency = [0.0] * (len(LATENCY_BUCKETS) + 2)

    def observe(self, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        key = (method, status)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        latency = self.latency
        latency[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        latency[-1] += seconds


class Metrics:
    """The metrics of one app (see the module's docstring)."""

    def __init__(self, runtime: Callable[[], Runtime | None] = lambda: None) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.refreshes = Counter(
            "geoweb_discovery_refreshes",
            "Discovery refreshes of jurisdictions, by outcome (failed: the city did not answer, "
            "or answered wrongly, and stored facts were kept).",
            ["outcome"],
            registry=registry,
        )
        self.serial = Gauge(
            "geoweb_registry_serial", "The store's registry serial.", registry=registry
        )
        self.answered_serial = Gauge(
            "geoweb_registry_answered_serial",
            "The registry serial the answers reach (behind the store's until the next poll).",
            registry=registry,
        )
        self.mirror_failures = Gauge(
            "geoweb_mirror_failures",
            "Consecutive failed syncs of each mirrored upstream (0: the last one worked).",
            ["upstream"],
            registry=registry,
        )
        self.mirror_lag = Gauge(
            "geoweb_mirror_lag_seconds",
            "Seconds since each mirrored upstream was last synced successfully (absent: never).",
            ["upstream"],
            registry=registry,
        )
        registry.register(_CacheCollector(runtime))
        #: Request counts and latency by route label (a trailing-slash alias shares its route's).
        self.routes: dict[str, RouteMetrics] = {}
        registry.register(_RequestCollector(self))

    def route(self, label: str) -> RouteMetrics:
        """The counts of one route label, made on first use."""
        found = self.routes.get(label)
        if found is None:
            found = self.routes[label] = RouteMetrics()
        return found

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        self.route(route).observe(method, status, seconds)

    def refreshed(
        self, _jurisdiction: str, ok: bool, _reason: str | None, _url: str | None
    ) -> None:
        """The runtime's refresh hook: one discovery refresh and its outcome."""
        self.refreshes.labels("ok" if ok else "failed").inc()

    def render(self, facts: StoreFacts, now: float) -> bytes:
        """The Prometheus text of every metric, with the store's facts as of now."""
        self.serial.set(facts.serial)
        self.answered_serial.set(facts.answered_serial)
        self.mirror_failures.clear()
        self.mirror_lag.clear()
        for mirror in facts.mirrors:
            self.mirror_failures.labels(mirror.url).set(mirror.failures)
            last = _epoch(mirror.last_success)
            if last is not None:
                self.mirror_lag.labels(mirror.url).set(max(0.0, now - last))
        return generate_latest(self.registry)


__all__ = [
    "LATENCY_BUCKETS",
    "UNMATCHED",
    "Metrics",
    "MirrorFacts",
    "RouteMetrics",
    "StoreFacts",
]
