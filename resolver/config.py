"""Settings, declared once.

Each field of :class:`Settings` carries its whole declaration: the name and type (the field's), the
default, the range or choices, the help text, the option's metavar. The checks in
:meth:`Settings.__post_init__`, the ``geoweb`` options (:mod:`resolver.cli.options`), their
``GEOWEB_<NAME>`` environment variables and README's settings table
(``python -m resolver.config --markdown``, held to README by tests/test_docs.py) are all made
from it, so none of them can disagree with another.
"""

from __future__ import annotations

import ipaddress
import sys
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import platformdirs

from common.errors import InvalidInput

#: Environment variables of settings are ``GEOWEB_<NAME>``, e.g. ``GEOWEB_DB``.
ENV_PREFIX = "GEOWEB"
DAY = 86400.0


def default_db_path() -> Path:
    """The per-user store used when no ``--db`` is given."""
    return platformdirs.user_data_path("geoweb") / "geoweb.sqlite"


@dataclass(frozen=True)
class Setting:
    """One setting's declaration: what it is, what it may hold, and how to explain it."""

    name: str
    #: ``str``, ``int``, ``float`` or ``bool``: of the value, or of each value when it repeats.
    type: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    #: Given any number of times (a tuple of values).
    repeats: bool = False
    #: Optional: ``None`` is a valid value (no default).
    optional: bool = False
    metavar: str | None = None
    #: How README shows the default, when the value itself says little.
    default_text: str | None = None
    #: What a text value must be: ``ip`` (an IP address), ``cidr`` (a network), ``url`` (an
    #: absolute http(s) URL with a host and no credentials).
    form: str | None = None

    @property
    def option(self) -> str:
        """The command-line option, e.g. ``--fetch-timeout``."""
        return "--" + self.name.replace("_", "-")

    @property
    def envvar(self) -> str:
        """The environment variable, e.g. ``GEOWEB_FETCH_TIMEOUT``."""
        return f"{ENV_PREFIX}_{self.name.upper()}"

    def describe_default(self) -> str:
        """The default as README's table says it."""
        if self.default_text is not None:
            return self.default_text
        if self.type is bool:
            return "on" if self.default else "off"
        if self.default is None or self.default in ((), ""):
            return "none"
        if isinstance(self.default, tuple):
            return ", ".join(f"`{value}`" for value in self.default)
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)

    def describe_range(self) -> str:
        """The values allowed, as README and error messages say them."""
        if self.choices:
            return " or ".join(repr(c) for c in self.choices)
        if self.low is not None and self.high is not None:
            return f"between {self.low:g} and {self.high:g}"
        if self.low is not None:
            return f"at least {self.low:g}"
        return ""

    def check(self, value: Any) -> None:
        """Raise :class:`InvalidInput` unless ``value`` is one this setting may hold."""
        if self.repeats:
            if not isinstance(value, tuple):
                raise InvalidInput(f"{self.option} takes a list of values, not {value!r}")
            for item in value:
                self._check_one(item)
            return
        if value is None and self.optional:
            return
        self._check_one(value)

    def _check_one(self, value: Any) -> None:
        expected: tuple[type, ...] = (int, float) if self.type is float else (self.type,)
        if not isinstance(value, expected) or (self.type is not bool and isinstance(value, bool)):
            raise InvalidInput(f"{self.option} must be {self.type.__name__}, not {value!r}")
        if self.choices and value not in self.choices:
            raise InvalidInput(f"{self.option} must be {self.describe_range()}, not {value!r}")
        low = self.low if self.low is not None else -float("inf")
        high = self.high if self.high is not None else float("inf")
        if self.type in (int, float) and not low <= cast(float, value) <= high:
            raise InvalidInput(f"{self.option} must be {self.describe_range()}, not {value!r}")
        if self.form is not None:
            text = str(value)
            problem = _FORMS[self.form](text)
            if problem:
                raise InvalidInput(f"{self.option} must be {problem}, not {text[:200]!r}")


def _not_ip(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "an IP address such as 192.0.2.53 or 2001:db8::53"
    return None


def _not_cidr(value: str) -> str | None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return "a network such as 10.1.0.0/16 or an address"
    return None


def _not_url(value: str) -> str | None:
    why = "an absolute http(s) URL with a host and no credentials"
    if any(c.isspace() or ord(c) < 32 for c in value):
        return why
    try:
        parts = urlsplit(value)
        credentials = parts.username is not None or parts.password is not None
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError:
        return why
    if parts.scheme not in ("http", "https") or not parts.hostname or credentials:
        return why
    return None


_FORMS = {"ip": _not_ip, "cidr": _not_cidr, "url": _not_url}


def setting(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] = (),
    metavar: str | None = None,
    default_text: str | None = None,
    form: str | None = None,
) -> Any:
    """A field of :class:`Settings` with its declaration (the rest comes from the field)."""
    spec = {
        "help": help,
        "low": low,
        "high": high,
        "choices": choices,
        "metavar": metavar,
        "default_text": default_text,
        "form": form,
    }
    return field(default=default, metadata={"setting": spec})


@dataclass(frozen=True)
class Settings:
    """How one resolver process runs; every value is checked when the settings are made."""

    db: str | None = setting(
        None,
        "Store: an SQLite file path or a database URL.",
        metavar="PATH|URL",
        default_text="`geoweb.sqlite` in the per-user data directory (`~/.local/share/geoweb/` "
        "on Linux)",
    )
    embedded: bool = setting(
        True,
        "Serve the embedded registry as a read-only base layer (origin embedded:<version>) under "
        "the store's own entries, which add to it and override it; off: the layer is left out "
        "(its entries are removed from the store).",
    )
    host: str = setting("127.0.0.1", "Address to listen on.", metavar="HOST")
    port: int = setting(8311, "TCP port to listen on (0: any free port).", low=0, high=65535)
    fallback_url: str | None = setting(
        None,
        "Ad hoc endpoint answered when no jurisdiction covers the point or offers the concern.",
        metavar="URL",
        form="url",
    )
    fallback_name: str = setting("Ad hoc fallback", "Name shown for the fallback endpoint.")
    adhoc: bool = setting(
        True,
        "Serve this resolver's own ad hoc GeoReport v2 service under /adhoc/ and answer with it "
        "when nobody covers the point or offers the concern (unless --fallback-url is given).",
    )
    adhoc_services: str | None = setting(
        None,
        "YAML or JSON file of the ad hoc service's catalogue, replacing the default one.",
        metavar="FILE",
        default_text="pothole, graffiti, street light, waste, abandoned vehicle, dumping, other",
    )
    adhoc_api_key: str | None = setting(
        None,
        "API key the ad hoc service requires on POST requests (none: anyone may post).",
        metavar="KEY",
    )
    adhoc_posts_per_minute: int = setting(
        30, "POSTs to the ad hoc service one client address may make a minute (then 429).", low=1
    )
    adhoc_forward: bool = setting(
        True,
        "Forward each held ad hoc request, once, to the jurisdiction that later covers its point "
        "and offers a matching service (after an import, a registration, a mirror sync or a "
        "discovery refresh), and poll the city's status back.",
    )
    adhoc_forward_keys: str | None = setting(
        None,
        "YAML or JSON file mapping a GeoReport v2 endpoint URL (or a jurisdiction id) to the API "
        "key this operator was given for it; forwarded requests carry it as api_key.",
        metavar="FILE",
    )
    adhoc_retry: float = setting(
        60.0,
        "Seconds before a forward that failed (the city unreachable or answering 5xx) is tried "
        "again; doubled on each failure, up to 6 hours.",
        low=0.1,
        high=86_400,
    )
    adhoc_poll: float = setting(
        900.0,
        "Seconds between reads of a forwarded request's status from the city, until it is closed.",
        low=1,
        high=7 * 86_400,
    )
    max_batch_points: int = setting(
        50_000, "Most points accepted by one POST /v1/resolve (larger batches get 413).", low=1
    )
    max_body_bytes: int = setting(
        4 * 1024 * 1024,
        "Largest request body accepted, in bytes (larger bodies get 413).",
        low=1024,
    )
    public_url: str | None = setting(
        None,
        "Base URL used in links (kml); default: the URL the request came in on.",
        metavar="URL",
        form="url",
    )
    discovery_refresh: bool = setting(
        False,
        "Fetch discovery documents and services lists, on demand and in the background; "
        "off: answers come from the registry alone.",
    )
    refresh_concurrency: int = setting(
        8,
        "Most jurisdictions refreshed at once (in the background, or by refresh).",
        low=1,
        high=256,
    )
    refresh_interval: float = setting(
        300.0,
        "Seconds between background refresh rounds; each round refreshes the jurisdictions "
        "whose facts expired.",
        low=0.01,
        high=7 * DAY,
    )
    refresh_jitter: float = setting(
        30.0,
        "Most seconds each jurisdiction's background refresh is delayed at random (and each "
        "round's wait lengthened), so resolvers do not reach a city all at once.",
        low=0,
        high=DAY,
    )
    fetch_timeout: float = setting(
        15.0,
        "Seconds one fetch may take in all, redirects included (connecting: at most 5).",
        low=0.1,
        high=300,
    )
    fetch_max_bytes: int = setting(
        2 * 1024 * 1024, "Largest document fetched, in bytes; reading stops there.", low=1024
    )
    allow_network: tuple[str, ...] = setting(
        (),
        "A network the fetcher may connect to although it is loopback, private, link-local or "
        "reserved (e.g. 10.1.0.0/16); repeatable. Default: public addresses only.",
        metavar="CIDR",
        form="cidr",
    )
    dns_nameserver: tuple[str, ...] = setting(
        (),
        "Nameserver (IP address) asked for _open311 records; repeatable. Given: DNS attests "
        "each jurisdiction's discovery URL. Default: DNS is not used.",
        metavar="IP",
        form="ip",
    )
    dns_port: int = setting(
        53, "Port of the DNS nameservers (UDP, and TCP for long answers).", low=1, high=65535
    )
    dns_timeout: float = setting(
        2.0,
        "Seconds one DNS lookup may take before a stale cached answer is used.",
        low=0.1,
        high=60,
    )
    dns_registry_zone: str | None = setting(
        None,
        "A registry zone whose _cells name the domains that may cover a point: jurisdictions "
        "the local registry lacks are found there (their _open311 record and boundary) and "
        "decided with the local ones. Needs --dns-nameserver.",
        metavar="ZONE",
    )
    dns_registry_mode: str = setting(
        "always",
        "When the registry zone is asked: 'always' (a city found in DNS beats the county it "
        "lies in) or 'uncovered' (only where no local jurisdiction covers the point).",
        choices=("always", "uncovered"),
    )
    registry_poll: float = setting(
        10.0,
        "Seconds between checks of the store for changes made by other processes (imports, "
        "registrations, syncs); answers follow within this time.",
        low=0.05,
        high=DAY,
    )
    register_domain: tuple[str, ...] = setting(
        (),
        "A domain that may register its jurisdictions here by proving control of it (POST "
        "/v1/registry/jurisdictions), with its subdomains; repeatable. Default: none, "
        "registration is closed.",
        metavar="DOMAIN",
    )
    mirror_interval: float = setting(
        300.0,
        "Seconds between syncs of the mirrored registries (geoweb mirror add); 0: never sync "
        "in the background.",
        low=0,
        high=7 * DAY,
    )
    cors_origin: tuple[str, ...] = setting(
        ("*",),
        "An origin (scheme://host[:port]) whose pages may read the answers from a browser "
        "(GET routes and POST /v1/resolve; registration never); repeatable. '*': any origin.",
        metavar="ORIGIN",
    )
    cache_max_age: int = setting(
        300,
        "Most seconds a client or cache may keep an answer (Cache-Control max-age); answers "
        "resting on facts that expire sooner say so, a fallback given while an upstream failed "
        "says no-store.",
        low=0,
        high=DAY,
    )
    map_tile_url: str | None = setting(
        None,
        "Tile URL template ({z}/{x}/{y}) drawn under the boundaries of the map page at /. "
        "Default: none, the boundaries on a plain background (the page asks no other server).",
        metavar="URL",
        form="url",
    )
    map_tile_attribution: str = setting(
        "", "Attribution shown for the tiles of --map-tile-url (their licence usually asks it)."
    )
    access_log: bool = setting(
        True,
        "Write an access log line per request to stderr, buffered and written every half "
        "second; off: no access log (what the log costs a request is measured in bench/).",
    )
    access_log_json: bool = setting(
        False,
        "Write the access log as one JSON object a line (time, method, path, route, status, "
        "bytes, seconds, request id, remote address); off: the combined log format's text lines.",
    )
    index_snapshot: bool = setting(
        True,
        "Keep the built boundary index in a snapshot beside the store (<store>.index; for a "
        "database URL, in the per-user cache directory) and start from it while the boundaries "
        "are the same; off: build the index at every start.",
    )
    workers: int = setting(
        0,
        "Server processes answering on the one listening port (0: one per core). The registry "
        "and its index are loaded once, before the workers start, and shared; each worker then "
        "follows the store on its own.",
        low=0,
        high=256,
        default_text="0 (one per core)",
    )

    def __post_init__(self) -> None:
        for declared in SETTINGS:
            value = getattr(self, declared.name)
            if declared.repeats and isinstance(value, list):  # a list is as good as a tuple
                value = tuple(value)
                object.__setattr__(self, declared.name, value)
            declared.check(value)
        if self.dns_registry_zone and not self.dns_nameserver:
            raise InvalidInput("--dns-registry-zone needs --dns-nameserver (the resolver to ask)")

    @property
    def db_path(self) -> str:
        return self.db if self.db else str(default_db_path())


def _declarations() -> tuple[Setting, ...]:
    """Every setting, in the order of the fields of :class:`Settings`."""
    hints = typing.get_type_hints(Settings)
    declared = []
    for f in fields(Settings):
        spec = f.metadata.get("setting")
        if spec is None:
            raise TypeError(f"Settings.{f.name} is not declared with setting()")
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        repeats = typing.get_origin(hint) is tuple
        optional = type(None) in typing.get_args(hint)
        value_type = args[0] if (repeats or optional) else hint
        default = f.default if f.default is not MISSING else None
        declared.append(
            Setting(f.name, value_type, default, repeats=repeats, optional=optional, **spec)
        )
    return tuple(declared)


#: Every setting's declaration, in the order README lists them.
SETTINGS: tuple[Setting, ...] = _declarations()
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def markdown_table() -> str:
    """README's settings table, made from :data:`SETTINGS` (tests/test_docs.py compares them)."""
    lines = [
        "| setting | option | environment | default | allowed | meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in SETTINGS:
        option = f"`{s.option}/--no-{s.option[2:]}`" if s.type is bool else f"`{s.option}`"
        lines.append(
            f"| {s.name} | {option} | `{s.envvar}` | {s.describe_default()} | "
            f"{s.describe_range()} | {_cell(s.help)} |"
        )
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text as a Markdown table cell shows it (no HTML tags, no column breaks)."""
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def main(argv: list[str]) -> int:
    """``python -m resolver.config --markdown``: print README's settings table."""
    if argv != ["--markdown"]:
        print("usage: python -m resolver.config --markdown", file=sys.stderr)
        return 2
    sys.stdout.write(markdown_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
