"""The ``geoweb`` options of settings, made from their declarations in :mod:`resolver.config`:
name, type, default, range or choices, help and ``GEOWEB_<NAME>`` environment variable all come
from there, so no command can disagree with another, with ``Settings`` or with README."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from resolver.config import SETTINGS_BY_NAME, Setting, default_db_path

F = TypeVar("F", bound=Callable[..., Any])

#: Every command takes ``-h`` as well as ``--help``.
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


class SettingOption(click.Option):
    """An option of a setting. Its value may come from ``GEOWEB_<COMMAND>_<OPTION>`` (click's
    automatic name, the more specific) or else ``GEOWEB_<NAME>``, the setting's own, which every
    command taking the setting reads."""

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        if self.allow_from_autoenv and ctx.auto_envvar_prefix is not None and self.name:
            value = os.environ.get(f"{ctx.auto_envvar_prefix}_{self.name.upper()}")
            if value:
                return value
        return super().resolve_envvar_value(ctx)


def click_type(declared: Setting) -> click.ParamType[Any]:
    """The click type that checks what :meth:`Setting.check` checks, at the command line."""
    if declared.choices:
        return click.Choice(list(declared.choices))
    if declared.type is int:
        return click.IntRange(
            None if declared.low is None else int(declared.low),
            None if declared.high is None else int(declared.high),
        )
    if declared.type is float:
        return click.FloatRange(declared.low, declared.high)
    if declared.type is bool:
        return click.BOOL
    return click.STRING


def setting_option(name: str) -> Callable[[F], F]:
    """The option of one setting, e.g. ``--fetch-timeout``."""
    declared = SETTINGS_BY_NAME[name]
    help_text = declared.help
    if name == "db":  # the default depends on the machine: show the path it is here
        help_text += f" [default: {default_db_path()}]"
    if declared.type is bool:
        decls = [f"{declared.option}/--no-{declared.option[2:]}"]
    else:
        decls = [declared.option]
    show_default = not declared.repeats and declared.default is not None
    return click.option(
        *decls,
        cls=SettingOption,
        envvar=declared.envvar,
        show_envvar=True,
        type=None if declared.type is bool else click_type(declared),
        default=declared.default,
        multiple=declared.repeats,
        show_default=show_default,
        metavar=declared.metavar,
        help=help_text,
    )


def setting_options(*names: str) -> Callable[[F], F]:
    """The options of these settings, listed in ``--help`` in this order."""

    def apply(f: F) -> F:
        for name in reversed(names):
            f = setting_option(name)(f)
        return f

    return apply


db_option = setting_options("db")
#: ``--embedded/--no-embedded``: whether the embedded registry is a layer of the store served.
embedded_option = setting_options("embedded")
fallback_options = setting_options("fallback_url", "fallback_name")
#: Limits on fetching: ``--fetch-timeout``, ``--fetch-max-bytes``, ``--allow-network``.
fetch_options = setting_options("fetch_timeout", "fetch_max_bytes", "allow_network")
refresh_concurrency_option = setting_options("refresh_concurrency")
#: The background refresh of ``serve``.
refresh_loop_options = setting_options("refresh_interval", "refresh_jitter")
#: Following the store, and mirroring.
registry_loop_options = setting_options("registry_poll", "mirror_interval")
#: Where DNS is asked.
dns_options = setting_options("dns_nameserver", "dns_port", "dns_timeout")
#: Finding jurisdictions through a registry zone's cells.
dns_registry_options = setting_options("dns_registry_zone", "dns_registry_mode")


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
