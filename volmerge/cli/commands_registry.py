"""Where every command group is attached to the app.

Each module ``volmerge/cli/cmd_<group>.py`` exposes ``register(app)`` and is
found here by name, so adding a command group touches no shared file.
"""

from __future__ import annotations

import importlib
import os

import typer


def register_all(app: typer.Typer) -> None:
    here = os.path.dirname(__file__)
    for name in sorted(os.listdir(here)):
        if name.startswith("cmd_") and name.endswith(".py"):
            importlib.import_module(f"volmerge.cli.{name[:-3]}").register(app)
