"""Settings, declared once: the CLI builds its options from ``SETTINGS``, and a test checks that
README.md documents each of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import platformdirs

from common.errors import InvalidInput
from common.models import Fallback

DEFAULT_PORT = 8311


def default_db_path() -> Path:
    """The per-user store used when no ``--db`` is given."""
    return platformdirs.user_data_path("geoweb") / "geoweb.sqlite"


@dataclass(frozen=True)
class Settings:
    """How one resolver process runs."""

    db: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    fallback_url: str | None = None
    fallback_name: str = "Ad hoc fallback"
    max_batch_points: int = 50_000
    max_body_bytes: int = 4 * 1024 * 1024
    public_url: str | None = None
    # Discovery (issue 4): fetching discovery documents and services lists.
    discovery_refresh: bool = False
    refresh_concurrency: int = 8
    refresh_interval: float = 300.0
    refresh_jitter: float = 30.0
    fetch_timeout: float = 15.0
    fetch_max_bytes: int = 2 * 1024 * 1024
    allow_network: tuple[str, ...] = ()
    # DNS (issue 3): each jurisdiction's own _open311 record attests the registry's facts.
    dns_nameserver: tuple[str, ...] = ()
    dns_port: int = 53
    dns_timeout: float = 2.0
    dns_registry_zone: str | None = None
    dns_registry_mode: str = "always"
    # Federation (issue 5): following the store, and mirroring other registries.
    registry_poll: float = 10.0
    register_domain: tuple[str, ...] = ()
    mirror_interval: float = 300.0

    def __post_init__(self) -> None:
        if self.dns_registry_zone and not self.dns_nameserver:
            raise InvalidInput("--dns-registry-zone needs --dns-nameserver (the resolver to ask)")
        if self.dns_registry_mode not in ("always", "uncovered"):
            raise InvalidInput("--dns-registry-mode must be 'always' or 'uncovered'")

    @property
    def db_path(self) -> str:
        return self.db if self.db else str(default_db_path())

    @property
    def fallback(self) -> Fallback | None:
        return Fallback(self.fallback_url, self.fallback_name) if self.fallback_url else None


#: One line of help per setting; the CLI options and README.md are held to this table.
SETTINGS_HELP: dict[str, str] = {
    "db": "Store: an SQLite file path or a database URL (default: a per-user data directory).",
    "host": "Address to listen on.",
    "port": "TCP port to listen on.",
    "fallback_url": "Ad hoc endpoint answered when no jurisdiction covers the point or "
    "offers the concern.",
    "fallback_name": "Name shown for the fallback endpoint.",
    "max_batch_points": "Most points accepted by one POST /v1/resolve (larger batches get 413).",
    "max_body_bytes": "Largest request body accepted, in bytes (larger bodies get 413).",
    "public_url": "Base URL used in links (kml); default: the URL the request came in on.",
    "discovery_refresh": "Fetch discovery documents and services lists (on demand and in the "
    "background); off: answer from the registry alone.",
    "refresh_concurrency": "Most jurisdictions refreshed at once in the background.",
    "refresh_interval": "Seconds between background refresh rounds; each round refreshes the "
    "jurisdictions whose facts expired.",
    "refresh_jitter": "Most seconds each jurisdiction's background refresh is delayed at random "
    "(and each round's wait lengthened), so resolvers do not reach a city all at once.",
    "fetch_timeout": "Seconds one fetch may take in all, redirects included (connect: at most 5).",
    "fetch_max_bytes": "Largest document fetched, in bytes; reading stops there.",
    "allow_network": "A network the fetcher may connect to although it is loopback, private or "
    "reserved (e.g. 10.1.0.0/16); repeatable. Default: public addresses only.",
    "dns_nameserver": "Nameserver (IP address) asked for _open311 records; repeatable. Given: "
    "DNS attests each jurisdiction's discovery URL. Default: DNS is not used.",
    "dns_port": "Port of the DNS nameservers (UDP, and TCP for long answers).",
    "dns_timeout": "Seconds one DNS lookup may take before a stale cached answer is used.",
    "dns_registry_zone": "A registry zone whose _cells name the domains that may cover a point: "
    "jurisdictions the local registry lacks are found there (their _open311 record and boundary) "
    "and decided with the local ones. Needs --dns-nameserver.",
    "dns_registry_mode": "When the registry zone is asked: 'always' (a city found in DNS beats the "
    "county it lies in) or 'uncovered' (only where no local jurisdiction covers the point).",
    "registry_poll": "Seconds between checks of the store for changes made by other processes "
    "(imports, registrations, syncs); answers follow within this time.",
    "register_domain": "A domain that may register its jurisdictions here by proving control "
    "(POST /v1/registry/jurisdictions), with its subdomains; repeatable. Default: none, "
    "registration is closed.",
    "mirror_interval": "Seconds between syncs of the mirrored registries (geoweb mirror add); "
    "0: never sync in the background.",
}
