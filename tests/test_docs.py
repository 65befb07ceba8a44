"""Docs that cannot drift: every CLI command, option and setting is in README.md."""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import fields
from pathlib import Path

import click
import pytest

from common.errors import GeoWebError, InvalidInput
from resolver.cli.main import main
from resolver.config import SETTINGS, Setting, Settings, markdown_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    """Every command, subcommands of groups included, with its full name."""
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        found.append((prefix + name, command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, f"{prefix}{name} "))
    return found


def _options() -> list[tuple[str, str]]:
    found = []
    for name, command in _commands(main):
        for param in command.params:
            if isinstance(param, click.Option):
                found.extend((name, opt) for opt in param.opts if opt.startswith("--"))
    return found


def test_every_setting_is_declared_with_help() -> None:
    assert [s.name for s in SETTINGS] == [f.name for f in fields(Settings)]
    assert all(s.help.strip() for s in SETTINGS)


def test_readme_settings_table_is_the_generated_one() -> None:
    found = re.search(
        r"<!-- settings table: generated, do not edit by hand -->\n"
        r"(.*?)<!-- end of settings table -->",
        README,
        re.S,
    )
    assert found is not None, "README.md has no generated settings table"
    assert found.group(1) == markdown_table(), (
        "README.md's settings table differs: replace it with `python -m resolver.config --markdown`"
    )


def _out_of_range(setting: Setting) -> list[object]:
    """Values just outside what a setting allows, and values of the wrong type."""
    step = 1 if setting.type is int else 0.001
    bad: list[object] = []
    if setting.low is not None and setting.type in (int, float):
        bad.append(setting.type(setting.low - step))
    if setting.high is not None:
        bad.append(setting.type(setting.high + step))
    if setting.choices:
        bad.append("neither")
    if setting.type is float:
        bad += [math.nan, "1.5"]
    if setting.type is int:
        bad += [1.5, True]
    if setting.type is str:
        bad.append(42)
    return [(value,) if setting.repeats else value for value in bad]


@pytest.mark.parametrize(
    ("name", "value"), [(s.name, v) for s in SETTINGS for v in _out_of_range(s)], ids=repr
)
def test_settings_refuse_values_out_of_range(name: str, value: object) -> None:
    with pytest.raises(InvalidInput, match=name.replace("_", "-")):
        Settings(**{name: value})  # type: ignore[arg-type]


def test_refresh_concurrency_zero_is_refused() -> None:
    with pytest.raises(InvalidInput, match="--refresh-concurrency must be between 1 and 256"):
        Settings(refresh_concurrency=0)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_settings_accept_their_bounds_and_defaults(setting: Setting) -> None:
    for value in (setting.low, setting.high):
        if value is not None and setting.type in (int, float):
            value = setting.type(value)
            held = Settings(**{setting.name: (value,) if setting.repeats else value})
            assert getattr(held, setting.name) == ((value,) if setting.repeats else value)
    assert getattr(Settings(), setting.name) == setting.default


#: Options named like a setting that are not the setting: the registering client's DNS is the
#: system resolver unless told otherwise, not the server's attesting nameservers; publish's port
#: is the DNS primary's.
NOT_SETTINGS = {
    ("publish", "--port"),
    ("jurisdiction publish", "--dns-nameserver"),
    ("jurisdiction publish", "--dns-port"),
    ("jurisdiction withdraw", "--dns-nameserver"),
    ("jurisdiction withdraw", "--dns-port"),
}


def _setting_options() -> list[tuple[str, click.Option, Setting]]:
    by_option = {s.option: s for s in SETTINGS}
    found = []
    for name, command in _commands(main):
        for param in command.params:
            if not isinstance(param, click.Option) or (name, param.opts[0]) in NOT_SETTINGS:
                continue
            if param.opts[0] in by_option:
                found.append((name, param, by_option[param.opts[0]]))
    return found


@pytest.mark.parametrize(
    ("command", "option", "setting"), _setting_options(), ids=lambda x: getattr(x, "name", x)
)
def test_setting_options_come_from_the_declaration(
    command: str, option: click.Option, setting: Setting
) -> None:
    """Wherever a command takes a setting, the option is the one made from its declaration."""
    assert option.default == setting.default, f"geoweb {command} {setting.option}"
    assert setting.envvar in (option.envvar if isinstance(option.envvar, list) else [option.envvar])
    assert option.help is not None and option.help.startswith(setting.help)
    assert option.multiple == setting.repeats
    if setting.low is not None or setting.high is not None:
        assert isinstance(option.type, click.IntRange | click.FloatRange)
        assert (option.type.min, option.type.max) == (setting.low, setting.high)


def test_every_setting_reaches_serve() -> None:
    serve = main.commands["serve"]
    names = {p.name for p in serve.params}
    assert {s.name for s in SETTINGS} <= names


@pytest.mark.parametrize("command", [name for name, _ in _commands(main)])
def test_every_command_is_documented(command: str) -> None:
    assert f"geoweb {command}" in README


@pytest.mark.parametrize(("command", "option"), _options())
def test_every_option_is_documented(command: str, option: str) -> None:
    assert option in README, f"geoweb {command} {option} is not in README.md"


def test_architecture_doc_names_the_modules() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for package in ("common", "boundaries", "discovery", "resolver", "registry_data", "tools"):
        for module in sorted((ROOT / package).rglob("*.py")):
            if module.name not in ("__init__.py", "__main__.py"):
                name = module.relative_to(ROOT).as_posix()
                assert name in text, f"{name} undocumented"


def _error_classes() -> set[type[GeoWebError]]:
    """Every GeoWebError class the server's modules define (the CLI's own are not answered over
    HTTP)."""
    for package in ("common", "boundaries", "discovery", "resolver"):
        for module in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(module.relative_to(ROOT).with_suffix("").parts)
            if not name.startswith("resolver.cli") and not name.endswith("__main__"):
                importlib.import_module(name.removesuffix(".__init__"))
    found: set[type[GeoWebError]] = set()
    todo: list[type[GeoWebError]] = [GeoWebError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += [c for c in cls.__subclasses__() if not c.__module__.startswith("resolver.cli")]
    return found


def test_readme_lists_every_status_the_api_returns() -> None:
    table = README[README.index("| status | when |") :].split("\n\n", 1)[0]
    listed = {int(row.split("|")[1]) for row in table.splitlines()[2:]}
    statuses = {cls.status for cls in _error_classes()}
    # besides the errors: answers, created, not modified, and aiohttp's own routing refusals
    assert statuses | {200, 201, 204, 304, 404, 405} == listed
