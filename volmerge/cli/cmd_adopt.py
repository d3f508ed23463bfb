"""``volmerge adopt podman:NAME``: take over a podman (or Docker) container
with its data.  Thin: the work is in volmerge/adopt.py."""

from __future__ import annotations

import sys

import typer

from .common import emit_json, store


def register(app: typer.Typer) -> None:
    app.command("adopt")(adopt)


def adopt(
    ctx: typer.Context,
    source: str = typer.Argument(..., metavar="podman:NAME|docker:NAME",
                                 help="The container to take over, by its engine and name or id."),
    name: str | None = typer.Option(None, "--name",
                                    help="Name in volmerge (default: the container's name)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be done; change nothing."),
    start: bool | None = typer.Option(None, "--start/--no-start",
                                      help="Start it in volmerge (default: when it was running)."),
    json_out: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Adopt a container that podman or Docker runs: its image, configuration and
    named volumes (data copied, the image's content at each mount path kept as the
    merge base).  The original is stopped, never removed: `podman start NAME` goes back."""
    from volmerge.adopt import adopt as do_adopt
    from volmerge.context import Context

    p = do_adopt(Context(store(ctx)), source, new_name=name, dry_run=dry_run, start=start)
    if json_out:
        emit_json(dict(p.to_json(), dry_run=dry_run))
        return
    out = sys.stdout
    verb = "would adopt" if dry_run else "adopted"
    out.write(f"{verb} {p.engine} container {p.container} ({p.container_id[:12]})"
              f" as {p.options.name}\n")
    out.write(f"  image    {p.image} ({p.image_id[:12]})\n")
    for v in p.volumes:
        out.write(f"  volume   {v.name} -> {v.target}{' (ro)' if v.readonly else ''}"
                  f"  data from {v.source}\n")
    for m in p.options.mounts:
        if m.kind != "volume":
            out.write(f"  {m.kind:<8} {m.spec_string()}\n")
    if p.running:
        out.write(f"  {p.engine} container {'would be' if dry_run else 'is'} stopped"
                  f" (not removed: `{p.engine} start {p.container}` goes back)\n")
    for w in p.warnings:
        sys.stderr.write(f"volmerge: warning: {w}\n")
