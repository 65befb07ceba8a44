"""Docs that cannot drift: every CLI command, option and setting is in README.md."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click
import pytest

from resolver.cli.main import main
from resolver.config import SETTINGS_HELP, Settings

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


def test_every_setting_has_help() -> None:
    assert set(SETTINGS_HELP) == {f.name for f in fields(Settings)}


@pytest.mark.parametrize("command", [name for name, _ in _commands(main)])
def test_every_command_is_documented(command: str) -> None:
    assert f"geoweb {command}" in README


@pytest.mark.parametrize(("command", "option"), _options())
def test_every_option_is_documented(command: str, option: str) -> None:
    assert option in README, f"geoweb {command} {option} is not in README.md"


def test_architecture_doc_names_the_modules() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for package in ("boundaries", "discovery", "resolver", "registry_data"):
        for module in sorted((ROOT / package).glob("*.py")):
            if module.name not in ("__init__.py", "__main__.py"):
                assert f"{package}/{module.name}" in text, f"{package}/{module.name} undocumented"
