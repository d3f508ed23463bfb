"""`volmerge demo`: run the demo story (volmerge/demo.py) with readable output."""

from __future__ import annotations

import typer

from .common import emit_json, human_size, store


def register(app: typer.Typer) -> None:
    app.command(name="demo")(demo)


def demo(
    ctx: typer.Context,
    only: list[str] | None = typer.Option(
        None, "--only", metavar="KIND",
        help="Only build and load this fixture image (repeatable), no story: busybox, python, "
             "postgres15, postgres16, demo-v1, demo-v2, demo-v3.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the steps and images as JSON."),
    stack: bool = typer.Option(
        False, "--stack",
        help="Tell the story for a compose stack: the notes app beside PostgreSQL, upgraded "
             "together (PostgreSQL 15 -> 16 with the app's new schema), then a broken app "
             "release that rolls the database back with it.",
    ),
) -> None:
    """Run the demo story on the embedded defaults, every claim checked.

    Builds the demo images from this host's own files, runs the notes app v1
    with a volume and a published port, writes notes and edits a setting as
    an operator would, previews and rehearses the upgrade to v2, upgrades
    (setting kept, new settings added, every note replayed into the new
    schema), tries the broken v3 (health check fails, automatic rollback),
    and rolls back to v1 keeping v2's data as a volume.  Runs in a network
    namespace of its own; removes its containers at the end.  Exit 1 if a
    claim fails.

    Example: volmerge --root /var/lib/volmerge-demo demo [--stack]
    """
    from volmerge.demo import (
        STACK_KINDS,
        STORY_KINDS,
        StepResult,
        check_kinds,
        enter_sandbox,
        run_demo,
    )

    from .common import console

    if only and stack:
        from volmerge.errors import BadInput

        raise BadInput("--only loads images without a story; it does not go with --stack")
    story = not only
    kinds = tuple(only) if only else (STACK_KINDS if stack else STORY_KINDS)
    check_kinds(kinds)  # before the store is opened: bad input changes nothing
    out = console()

    from rich.markup import escape

    def report(res: StepResult) -> None:
        if as_json:
            return
        res = StepResult(res.title, res.ok, res.skipped, escape(res.detail), res.seconds, res.data)
        if res.skipped:
            out.print(f"[yellow]-[/] {res.title:<11} skipped: {res.detail}")
        elif res.ok:
            out.print(f"[green]✓[/] {res.title:<11} {res.detail}", overflow="fold")
        else:
            out.print(f"[bold red]✗ {res.title:<11}[/] {res.detail}")

    if story:
        enter_sandbox()
    st = store(ctx)
    if not as_json:
        out.print(f"[bold]volmerge demo[/] — store {st.root}")
        out.print("Fixture images, built from this host's own files (cached), loaded and checked"
                  + (", then the stack's upgrade story:" if stack else
                     ", then the upgrade story:" if story else ":"))
    result = run_demo(st, kinds, report=report, story=story and not stack, stack=stack)
    if as_json:
        emit_json(result.to_json())
    else:
        from rich.table import Table

        if not story:
            table = Table(title="images in the store", title_justify="left", box=None,
                          header_style="bold")
            for col in ("REPOSITORY", "TAG", "IMAGE ID", "LAYERS", "SIZE"):
                table.add_column(col)
            for img in result.images:
                for tag in img["tags"] or ["<none>:<none>"]:
                    repo, t = tag.rsplit(":", 1)
                    table.add_row(repo, t, img["id"][7:19], str(img["layers"]),
                                  human_size(img["size"]))
            out.print()
            out.print(table)
        n_ok = sum(1 for s in result.steps if s.ok and not s.skipped)
        if result.ok:
            out.print(f"\n[bold green]demo passed[/]: {n_ok} step(s), every claim checked.")
        else:
            out.print("\n[bold red]demo failed[/]: see the step marked ✗ above.")
    if not result.ok:
        raise typer.Exit(1)
