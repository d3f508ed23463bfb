"""``volmerge auto-update``: podman's auto-update, each update a whole
upgrade with its automatic rollback of image and data.  Thin: the work is
in volmerge/autoupdate.py."""

from __future__ import annotations

import typer

from .common import emit_json, store, table


def register(app: typer.Typer) -> None:
    app.command("auto-update")(auto_update)


def auto_update(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Check and preview each update; change nothing."),
    rollback: bool = typer.Option(
        True, "--rollback/--no-rollback",
        help="Put image and data back when an update fails (the default, and the only way: "
             "--no-rollback is refused)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
) -> None:
    """Upgrade every container labelled io.containers.autoupdate=registry|local
    whose image reference names a new image.

    Each update is a full `volmerge upgrade`: the data is merged and replayed,
    the new container health checked, and a failure rolls back image and data.
    Exit 1 when any update was rolled back or failed."""
    import sys

    from volmerge.autoupdate import run
    from volmerge.context import Context

    if not rollback:
        # podman's --no-rollback leaves a failed update running; here that
        # would be a container on data a failed migration changed
        from volmerge.errors import BadInput

        raise BadInput("--no-rollback is refused: a failed update always puts image and data "
                       "back; to watch an update fail without changing anything, run "
                       "`volmerge upgrade NAME --to IMAGE --rehearse`")

    def progress(event: str, text: str, seconds: float | None) -> None:
        if not (quiet or json_out):
            sys.stderr.write(f"  {text}\n")

    c = Context(store(ctx))
    updates = run(c, dry_run=dry_run, pull=_puller(c), progress=progress)
    if json_out:
        emit_json([u.to_json() for u in updates])
    else:
        table(["CONTAINER", "IMAGE", "POLICY", "UPDATED", "DETAIL"],
              [[u.container, u.image, u.policy, u.updated,
                u.detail or _brief(u.summary)] for u in updates])
    if any(u.updated in ("rolled back", "failed") for u in updates):
        raise typer.Exit(1)


def _brief(summary: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in summary.items() if v)


def _puller(c):
    """The registry policy's pull: the reference from its registry into the
    store (layers it has already are not fetched again)."""

    def pull_ref(ref: str) -> None:
        from volmerge.runtime.registry.pull import pull

        pull(c.images, ref)

    return pull_ref
