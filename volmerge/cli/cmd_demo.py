"""`volmerge demo`: run the demo story (volmerge/demo.py) with readable output."""

from __future__ import annotations

from typing import List, Optional

import typer

from .common import emit_json, human_size, store


def register(app: typer.Typer) -> None:
    app.command(name="demo")(demo)


def demo(
    ctx: typer.Context,
    only: Optional[List[str]] = typer.Option(
        None, "--only", metavar="KIND",
        help="Load only this fixture image (repeatable): busybox, python, postgres15, "
             "postgres16, demo-v1, demo-v2, demo-v3.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the steps and images as JSON."),
) -> None:
    """Run the demo: build the fixture images from this host's files, load them
    into the store and list them; every step is checked, exit 1 if one fails.

    Example: volmerge --root /var/lib/volmerge-demo demo
    """
    from volmerge.demo import DEMO_KINDS, StepResult, check_kinds, run_demo

    from .common import console

    kinds = tuple(only) if only else DEMO_KINDS
    check_kinds(kinds)  # before the store is opened: bad input changes nothing
    out = console()

    def report(res: StepResult) -> None:
        if as_json:
            return
        if res.skipped:
            out.print(f"[yellow]-[/] {res.title:<11} skipped: {res.detail}")
        elif res.ok:
            out.print(f"[green]✓[/] {res.title:<11} {res.detail}", overflow="ellipsis", no_wrap=True)
        else:
            out.print(f"[bold red]✗ {res.title:<11}[/] {res.detail}")

    st = store(ctx)
    if not as_json:
        out.print(f"[bold]volmerge demo[/] — store {st.root}")
        out.print("Fixture images, built from this host's own files (cached), "
                  "loaded and checked:")
    result = run_demo(st, kinds, report=report)
    if as_json:
        emit_json(result.to_json())
    else:
        from rich.table import Table

        table = Table(title="images in the store", title_justify="left", box=None,
                      header_style="bold")
        for col in ("REPOSITORY", "TAG", "IMAGE ID", "LAYERS", "SIZE"):
            table.add_column(col)
        for img in result.images:
            for tag in img["tags"] or ["<none>:<none>"]:
                repo, t = tag.rsplit(":", 1)
                table.add_row(repo, t, img["id"][7:19], str(img["layers"]), human_size(img["size"]))
        out.print()
        out.print(table)
        n_ok = sum(1 for s in result.steps if s.ok and not s.skipped)
        if result.ok:
            out.print(f"\n[bold green]demo passed[/]: {n_ok} step(s) checked. "
                      "Next: the upgrade story (run v1, upgrade to v2, try v3, roll back).")
        else:
            out.print("\n[bold red]demo failed[/]: see the step marked ✗ above.")
    if not result.ok:
        raise typer.Exit(1)
