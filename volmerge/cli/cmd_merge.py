"""`volmerge merge` and `volmerge strategies`: three-way merge of files or
directories with the strategies of the ``strategies`` package."""

from __future__ import annotations

import sys

import typer

from .common import emit_json

ON_CONFLICT_HELP = "What to do with a conflict: fail (write nothing, exit 1), ours, theirs, markers, keep-both."


def merge(
    base: str = typer.Argument(..., metavar="BASE", help="Common ancestor (the old image's content)."),
    ours: str = typer.Argument(..., metavar="OURS", help="The live data with the operator's edits."),
    theirs: str = typer.Argument(..., metavar="THEIRS", help="The new image's content."),
    out: str | None = typer.Option(None, "-o", "--output", metavar="OUT",
                                      help="Where the result goes; must not exist (or be an empty directory)."),
    policy: str | None = typer.Option(None, "--policy", metavar="FILE",
                                         help="TOML policy: ordered [[rule]] glob -> strategy."),
    allow_data_loss: bool = typer.Option(False, "--allow-data-loss",
                                         help="SQL replay even though the new schema drops data."),
    on_conflict: str = typer.Option("fail", "--on-conflict", metavar="MODE", help=ON_CONFLICT_HELP),
    diff3: bool = typer.Option(False, "--diff3", help="Conflict markers include the base section."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write nothing; show per file the action and a diff OURS -> result."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Three-way merge BASE, OURS and THEIRS (three files or three directories) into OUT.

    Example: volmerge merge old/etc live/etc new/etc -o merged/etc --on-conflict keep-both
    """
    from volmerge.strategies.errors import BadInput
    from volmerge.strategies.policy import ON_CONFLICT, Policy, allow_data_loss_policy, load_policy
    from volmerge.strategies.tree import MergeConflict, merge_trees

    if on_conflict not in ON_CONFLICT:
        raise BadInput(f"--on-conflict must be one of {', '.join(ON_CONFLICT)}")
    if out is None and not dry_run:
        raise BadInput("missing -o OUT (or use --dry-run)")
    for what, path in (("BASE", base), ("OURS", ours), ("THEIRS", theirs)):
        _check_input(what, path)
    pol = load_policy(policy) if policy else None
    if allow_data_loss:
        pol = Policy.combined(allow_data_loss_policy(), pol)
    try:
        report = merge_trees(base, ours, theirs, out or ".", policy=pol, on_conflict=on_conflict,
                             dry_run=dry_run, diff=dry_run, diff3=diff3)
    except MergeConflict as exc:
        _show(exc.report, as_json, False)
        raise
    _show(report, as_json, dry_run)
    if dry_run and report.summary["conflicts"] and on_conflict == "fail":
        from volmerge.strategies.errors import NotDone

        raise NotDone(f"{report.summary['conflicts']} conflict(s) would stop this merge")


def _check_input(what: str, path: str) -> None:
    """An input is a regular file or a directory on a real file system:
    not a device, FIFO or socket, nor a kernel interface such as
    /proc/self/mem, which is "regular" but whose read fails or blocks."""
    import os
    import stat

    from volmerge.runtime.sys import PSEUDO_FS, fs_type
    from volmerge.strategies.errors import BadInput

    try:
        st = os.stat(path)
        pseudo = fs_type(path) in PSEUDO_FS
    except FileNotFoundError:
        raise BadInput(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise BadInput(f"{what} {path}: {exc.strerror or exc}") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise BadInput(f"{what} {path} is neither a regular file nor a directory")
    if pseudo:
        raise BadInput(f"{what} {path} is on a kernel file system (proc, sysfs, ...), not data")


def _show(report, as_json: bool, dry_run: bool) -> None:
    if as_json:
        emit_json(report.to_json())
        return
    from .common import console

    con = console()
    colour = sys.stdout.isatty()
    width = max([len(f.action) for f in report.files] + [7])
    for f in report.files:
        path = f.path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        path = path.replace("\n", "\\n")
        line = f"{f.action:<{width}}  {path}  ({f.strategy})"
        if f.rule:
            line += f"  [policy {f.policy} rule {f.rule!r}]"
        for c in f.conflicts:
            line += f"\n{'':<{width}}    conflict at {c.location}: {c.message}"
        for n in f.notes:
            line += f"\n{'':<{width}}    {n}"
        con.print(line, style=_STYLE.get(f.action) if colour else None, markup=False, highlight=False,
                  soft_wrap=True)
        d = report.diffs.get(f.path)
        if d:
            for dl in d.splitlines():
                st = ("green" if dl.startswith("+") else "red" if dl.startswith("-") else
                      "cyan" if dl.startswith("@@") else None) if colour else None
                con.print(dl, style=st, markup=False, highlight=False, soft_wrap=True)
    s = report.summary
    parts = [f"{s[a]} {a}" for a in ("merged", "took-theirs", "added", "deleted", "kept-ours",
                                     "kept-both", "conflict", "unchanged") if s.get(a)]
    verb = "would write" if dry_run else "wrote"
    con.print(f"summary: {', '.join(parts) or 'nothing to merge'}; {s['conflicts']} conflict(s); "
              f"{verb} {s['written']} path(s)", markup=False, highlight=False, soft_wrap=True)


_STYLE = {"conflict": "bold red", "kept-both": "yellow", "merged": "cyan", "took-theirs": "green",
          "added": "green", "deleted": "red", "kept-ours": "yellow"}


def strategies_cmd(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the registered merge strategies (entry-point group volmerge.strategies).

    Example: volmerge strategies --json
    """
    from volmerge.strategies.registry import registry

    rows = []
    for name, reg in sorted(registry().items()):
        rows.append({"name": name, "entry_point": reg.value, "distribution": reg.distribution,
                     "status": "ok" if reg.error is None else "error", "error": reg.error,
                     "description": reg.description})
    if as_json:
        emit_json(rows)
        return
    from .common import table

    table(["NAME", "STATUS", "ENTRY POINT", "DESCRIPTION"],
          [[r["name"], r["status"], r["entry_point"], r["description"] or (r["error"] or "")] for r in rows])


def register(app: typer.Typer) -> None:
    app.command("merge", no_args_is_help=True)(merge)
    app.command("strategies")(strategies_cmd)
