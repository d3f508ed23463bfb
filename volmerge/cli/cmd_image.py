"""`volmerge image ...` (filled in by the image store)."""

from __future__ import annotations

import typer

image_app = typer.Typer(help="Load, list, inspect, tag, remove and save images.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")
