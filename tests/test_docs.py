"""The docs are tested (architecture.md, principle 10): every command has help text and
appears in README.md."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

try:  # typer >= 0.29 vendors click
    from typer import _click as click
except ImportError:  # pragma: no cover
    import click  # type: ignore[no-redef]

from volmerge.cli import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _commands(group, prefix: str = "") -> list:  # type: ignore[no-untyped-def]
    out = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        full = f"{prefix} {name}".strip()
        out.append((full, cmd))
        if hasattr(cmd, "list_commands"):
            out.extend(_commands(cmd, full))
    return out


COMMANDS = _commands(typer.main.get_command(app))


def test_there_are_commands() -> None:
    assert COMMANDS


def test_every_command_has_help() -> None:
    missing = [name for name, cmd in COMMANDS if not (cmd.help or cmd.short_help)]
    assert not missing, f"commands without help: {missing}"


def test_every_command_is_in_the_readme() -> None:
    missing = [
        name for name, _ in COMMANDS
        if not re.search(r"volmerge " + re.escape(name) + r"\b", README)
    ]
    assert not missing, f"commands missing from README.md: {missing}"


def test_readme_keeps_the_two_commands() -> None:
    assert "make demo" in README and "make test" in README
