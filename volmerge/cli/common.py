"""Shared bits of the CLI: the store from the global options, output helpers.

Commands are thin: parse arguments, call the library, print (architecture.md, principle 5).
Heavy modules are imported inside commands, so `volmerge --help` and hot
commands stay fast.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from .state import Globals
from .transfers import human_size  # noqa: F401 - shared with the typer-free pull


def g(ctx: typer.Context) -> Globals:
    obj = ctx.find_root().obj
    if obj is None:
        obj = ctx.find_root().obj = Globals()
    return obj


def store(ctx: typer.Context):
    return g(ctx).store()


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def transfer_progress(transient: bool = False):
    """A started rich progress display on stderr for byte transfers (layer
    extraction, registry pulls and pushes): description, bar, bytes, speed."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    p = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                 TransferSpeedColumn(), console=console(stderr=True), transient=transient)
    p.start()
    return p


def table(columns: list[str], rows: list[list[Any]]) -> None:
    """Docker-style plain columns (no box), readable in a pipe."""
    widths = [len(c) for c in columns]
    srows = [["" if v is None else str(v) for v in r] for r in rows]
    for r in srows:
        for i, v in enumerate(r):
            widths[i] = max(widths[i], len(v))
    fmt = "   ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*columns).rstrip())
    for r in srows:
        print(fmt.format(*r).rstrip())
