"""Options shared by several ``geoweb`` commands, declared once (help from ``SETTINGS_HELP``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from resolver.config import SETTINGS_HELP, Settings, default_db_path

F = TypeVar("F", bound=Callable[..., Any])


def db_option(f: F) -> F:
    """``--db``: the store."""
    return click.option(
        "--db", metavar="PATH|URL", help=SETTINGS_HELP["db"] + f" [{default_db_path()}]"
    )(f)


def fallback_options(f: F) -> F:
    """``--fallback-url`` and ``--fallback-name``."""
    f = click.option(
        "--fallback-name", default="Ad hoc fallback", help=SETTINGS_HELP["fallback_name"]
    )(f)
    return click.option("--fallback-url", metavar="URL", help=SETTINGS_HELP["fallback_url"])(f)


def fetch_options(f: F) -> F:
    """``--fetch-timeout``, ``--fetch-max-bytes`` and ``--allow-network``: limits on fetching."""
    f = click.option(
        "--allow-network", multiple=True, metavar="CIDR", help=SETTINGS_HELP["allow_network"]
    )(f)
    f = click.option(
        "--fetch-max-bytes",
        default=Settings.fetch_max_bytes,
        show_default=True,
        type=click.IntRange(1024),
        help=SETTINGS_HELP["fetch_max_bytes"],
    )(f)
    return click.option(
        "--fetch-timeout",
        default=Settings.fetch_timeout,
        show_default=True,
        type=click.FloatRange(0.1, 300),
        help=SETTINGS_HELP["fetch_timeout"],
    )(f)


def refresh_concurrency_option(f: F) -> F:
    """``--refresh-concurrency``: how many cities are fetched at once."""
    return click.option(
        "--refresh-concurrency",
        default=Settings.refresh_concurrency,
        show_default=True,
        type=click.IntRange(1, 256),
        help=SETTINGS_HELP["refresh_concurrency"],
    )(f)


def refresh_loop_options(f: F) -> F:
    """``--refresh-interval`` and ``--refresh-jitter``: the background refresh of ``serve``."""
    f = click.option(
        "--refresh-jitter",
        default=Settings.refresh_jitter,
        show_default=True,
        type=click.FloatRange(0, 86400),
        help=SETTINGS_HELP["refresh_jitter"],
    )(f)
    return click.option(
        "--refresh-interval",
        default=Settings.refresh_interval,
        show_default=True,
        type=click.FloatRange(0.01, 7 * 86400),
        help=SETTINGS_HELP["refresh_interval"],
    )(f)


def registry_loop_options(f: F) -> F:
    """``--registry-poll`` and ``--mirror-interval``: following the store and mirroring."""
    f = click.option(
        "--mirror-interval",
        default=Settings.mirror_interval,
        show_default=True,
        type=click.FloatRange(0, 7 * 86400),
        help=SETTINGS_HELP["mirror_interval"],
    )(f)
    return click.option(
        "--registry-poll",
        default=Settings.registry_poll,
        show_default=True,
        type=click.FloatRange(0.05, 86400),
        help=SETTINGS_HELP["registry_poll"],
    )(f)


def dns_options(f: F) -> F:
    """``--dns-nameserver``, ``--dns-port``, ``--dns-timeout``: where DNS is asked."""
    f = click.option(
        "--dns-timeout",
        default=Settings.dns_timeout,
        show_default=True,
        type=click.FloatRange(0.1, 60),
        help=SETTINGS_HELP["dns_timeout"],
    )(f)
    f = click.option(
        "--dns-port",
        default=Settings.dns_port,
        show_default=True,
        type=click.IntRange(1, 65535),
        help=SETTINGS_HELP["dns_port"],
    )(f)
    return click.option(
        "--dns-nameserver", multiple=True, metavar="IP", help=SETTINGS_HELP["dns_nameserver"]
    )(f)


def dns_registry_options(f: F) -> F:
    """``--dns-registry-zone`` and ``--dns-registry-mode``: finding jurisdictions through a
    registry zone's cells."""
    f = click.option(
        "--dns-registry-mode",
        default=Settings.dns_registry_mode,
        show_default=True,
        type=click.Choice(["always", "uncovered"]),
        help=SETTINGS_HELP["dns_registry_mode"],
    )(f)
    return click.option(
        "--dns-registry-zone", metavar="ZONE", help=SETTINGS_HELP["dns_registry_zone"]
    )(f)


def boundary_file_options(f: F) -> F:
    """``--layer`` and ``--crs``: reading a boundary file."""
    f = click.option(
        "--crs",
        "assume_crs",
        metavar="CRS",
        help="CRS to assume when the file declares none, e.g. EPSG:4326.",
    )(f)
    return click.option("--layer", help="Layer to read (GeoPackage and other multi-layer files).")(
        f
    )
