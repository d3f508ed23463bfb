"""`volmerge sql ...`: replay a database's rows into a new schema, inspect and
diff schemas.  Thin: the work is in strategies.sql (architecture.md, principle 5)."""

from __future__ import annotations

import sys
from typing import Any

import typer

sql_app = typer.Typer(help="Replay database rows into a new schema; inspect and diff schemas.",
                      no_args_is_help=True)


def _pairs(values: list[str], what: str) -> dict[str, str]:
    from volmerge.strategies.errors import BadInput

    out = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k.strip() or not val.strip():
            raise BadInput(f"{what} {v!r}: expected {'TABLE.OLD=NEW' if what == '--map' else 'TABLE.COLUMN=SQL_EXPR'}")
        out[k.strip()] = val.strip()
    return out


def _check_dialect(d: str | None, option: str) -> None:
    from volmerge.strategies.errors import BadInput
    from volmerge.strategies.sql.schema import DIALECTS

    if d is not None and d not in DIALECTS:
        raise BadInput(f"{option} {d!r}: unknown dialect (use {', '.join(DIALECTS)})")


def _check_expressions(defaults: dict[str, str], dialect: str | None) -> None:
    """Each default must parse as one SQL expression (in ``dialect``, or in
    any dialect when none is given): bad input is refused before a replay
    starts, not found as a syntax error half-way through one."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError, TokenError

    from volmerge.strategies.errors import BadInput
    from volmerge.strategies.sql.schema import DIALECTS

    for key, expr in defaults.items():
        for d in [dialect] if dialect else [None, *DIALECTS]:
            try:
                tree = sqlglot.parse_one(f"SELECT {expr}", read=d)
            except (ParseError, TokenError, ValueError):
                continue
            if (isinstance(tree, exp.Select) and len(tree.expressions) == 1
                    and {k for k, v in tree.args.items() if v} == {"expressions"}):
                break  # one expression: no FROM, WHERE, a second column, ...
        else:
            raise BadInput(f"--default {key}={expr!r}: not a valid SQL expression")


def _progress():
    """A rich progress bar per table on a terminal (stderr); None otherwise."""
    if not sys.stderr.isatty():
        return None, None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), transient=False,
                   console=__import__("volmerge.cli.common", fromlist=["console"]).console(stderr=True))
    tasks: dict[str, TaskID] = {}

    def cb(table: str, done: int, total: int) -> None:
        if table not in tasks:
            tasks[table] = bar.add_task(table, total=max(total, 1))
        bar.update(tasks[table], completed=done if total else 1)

    return bar, cb


@sql_app.command("replay")
def replay_cmd(
    src: str = typer.Argument(..., metavar="SRC", help="The live data: SQLite file, .sql dump or postgresql:// URL."),
    schema: str = typer.Option(..., "--schema", metavar="NEW", help="The new version's schema (SQLite file, .sql file or URL)."),
    out: str | None = typer.Option(None, "-o", "--output", metavar="DST", help="Where to write: a new SQLite file, .sql file or postgresql:// URL."),
    maps: list[str] = typer.Option([], "--map", metavar="TABLE.OLD=NEW", help="Rename hint (column TABLE.OLD=NEW, or table OLD=NEW)."),
    defaults: list[str] = typer.Option([], "--default", metavar="TABLE.COLUMN=SQL_EXPR", help="Value for a new NOT NULL column (SQL over the old row)."),
    policy: str | None = typer.Option(None, "--policy", metavar="FILE", help="Policy TOML whose [sql] table gives rename/defaults/allow_data_loss."),
    base: str | None = typer.Option(None, "--base", metavar="OLD_SCHEMA", help="The old version's schema: keeps the operator's own additions."),
    from_dialect: str | None = typer.Option(None, "--from-dialect", metavar="D", help="Dialect of a SRC dump (sqlite, postgres, mysql; sniffed by default)."),
    to_dialect: str | None = typer.Option(None, "--to-dialect", metavar="D", help="Dialect of a DST dump (sqlite or postgres)."),
    allow_data_loss: bool = typer.Option(False, "--allow-data-loss", help="Replay even though dropped tables/columns hold data."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the diff, mapping, rows and losses; write nothing."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Carry SRC's rows into a fresh database with the NEW schema, verify, then rename into place."""
    from volmerge.strategies.errors import BadInput
    from volmerge.strategies.sql import plan_replay, replay

    from .common import emit_json

    opts: dict = {}
    if policy:
        from volmerge.strategies.policy import load_policy

        opts = load_policy(policy, check_strategies=False).table("sql")
    rename = dict(opts.get("rename") or {})
    rename.update(_pairs(maps, "--map"))
    dflt = {k: str(v) for k, v in (opts.get("defaults") or {}).items()}
    dflt.update(_pairs(defaults, "--default"))
    loss = allow_data_loss or bool(opts.get("allow_data_loss", False))
    _check_dialect(from_dialect, "--from-dialect")
    _check_dialect(to_dialect, "--to-dialect")
    _check_expressions(dflt, from_dialect)
    if not dry_run and not out:
        raise BadInput("missing -o DST (or use --dry-run)")
    with plan_replay(src, schema=schema, base=base, maps=rename, defaults=dflt, allow_data_loss=loss,
                     from_dialect=from_dialect, to_dialect=to_dialect,
                     bookkeeping=tuple(opts.get("bookkeeping_tables") or ())) as plan:
        if dry_run:
            data = plan.to_json()
            if as_json:
                emit_json(data)
            else:
                _print_plan(data)
            raise typer.Exit(0 if plan.ok else 1)
        assert out is not None  # no -o without --dry-run: refused above
        bar, cb = _progress() if not as_json else (None, None)
        if bar is not None:
            with bar:
                result = replay(plan, out, progress=cb)
        else:
            result = replay(plan, out)
    if as_json:
        emit_json(result.to_json())
    else:
        print(f"replayed {result.rows} rows in {len(result.tables)} tables into {result.dst} "
              f"(verified, {result.seconds:.2f}s)")


def _print_plan(d: dict) -> None:
    diff = d["diff"]
    print(f"schema diff ({d['from_dialect']} -> {d['to_dialect']}):")
    shown = False
    for key, label in (("tables_added", "table added"), ("tables_dropped", "table dropped"),
                       ("tables_kept_from_ours", "table kept (operator's)"),
                       ("columns_added", "column added"), ("columns_dropped", "column dropped"),
                       ("columns_kept_from_ours", "column kept (operator's)"),
                       ("indexes_kept_from_ours", "index kept (operator's)"),
                       ("views_kept_from_ours", "view kept (operator's)")):
        for item in diff[key]:
            print(f"  {label:<26} {item}")
            shown = True
    for key, label in (("tables_renamed", "table renamed"), ("columns_renamed", "column renamed"),
                       ("columns_retyped", "column retyped")):
        for a, b in diff[key].items():
            print(f"  {label:<26} {a} -> {b}")
            shown = True
    if not shown:
        print("  (no changes)")
    print("mapping:")
    for t in d["tables"]:
        origin = {"ours": f"from {t['from']}", "theirs": "new version's rows"}.get(t["origin"], "")
        print(f"  {t['table']}: {t['rows']} rows ({origin}, {t['status']})")
        for c in t["columns"]:
            if c["how"] != "same":
                src = c["expr"] if c["expr"] is not None else "-"
                if c.get("fill") and c["fill"] not in src:  # evaluated once for every row
                    src += f"  (= {c['fill']}, evaluated once)"
                print(f"    {c['target']:<20} <- {src}  [{c['how']}]")
    shown_settings = {k: v for k, v in d.get("settings", {}).items()
                      if k in ("user_version", "application_id") or v["from"] == "theirs"}
    if shown_settings:
        print("settings: " + ", ".join(
            f"{k} {v['value']} ({'new version' if v['from'] == 'theirs' else 'live database'})"
            for k, v in shown_settings.items()))
    for x in d["losses"]:
        what = f"{x['table']}.{x['column']}: {x['count']} values" if x["column"] else \
            f"{x['table']}: {x['count']} rows"
        print(f"would lose: {what} ({x['reason']})")
    for n in d["notes"]:
        print(f"note: {n}")
    for p in d["problems"]:
        print(f"problem: {p}")
    print(f"total: {d['rows_total']} rows to replay" + ("" if not d["problems"] else " (blocked)"))


@sql_app.command("schema")
def schema_cmd(
    src: str = typer.Argument(..., metavar="SRC", help="SQLite file, .sql file or postgresql:// URL."),
    dialect: str | None = typer.Option(None, "--dialect", metavar="D", help="Dialect of a .sql file."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Print the schema model: tables, columns, keys, indexes, views, triggers."""
    from volmerge.strategies.sql import read_schema

    from .common import emit_json

    _check_dialect(dialect, "--dialect")
    s = read_schema(src, dialect=dialect)
    if as_json:
        emit_json(s.to_json())
        return
    for t in s.tables.values():
        print(f"table {t.name}")
        for c in t.columns:
            flags = [f for f, on in (("NOT NULL", c.notnull), (f"PK{c.pk}", c.pk),
                                     ("AUTOINCREMENT", c.autoincrement)) if on]
            dflt = f" DEFAULT {c.default}" if c.default is not None else ""
            print(f"  {c.name:<24} {c.type or '(none)':<16} {' '.join(flags)}{dflt}".rstrip())
        for fk in t.fks:
            print(f"  foreign key ({', '.join(fk.columns)}) -> {fk.ref_table}({', '.join(fk.ref_columns)})")
    for i in s.indexes.values():
        print(f"index {i.name} on {i.table} ({', '.join(i.columns)}){' unique' if i.unique else ''}")
    for v in s.views.values():
        print(f"view {v.name}")
    for tr in s.triggers.values():
        print(f"trigger {tr.name} on {tr.table}")


@sql_app.command("diff")
def diff_cmd(
    base: str = typer.Argument(..., metavar="BASE", help="The old version's schema."),
    ours: str = typer.Argument(..., metavar="OURS", help="The live schema."),
    theirs: str = typer.Argument(..., metavar="THEIRS", help="The new version's schema."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Three-way schema diff: what the target schema takes from each side, and conflicts."""
    from volmerge.strategies.sql import read_schema
    from volmerge.strategies.sql.diff import merge_schemas

    from .common import emit_json

    m = merge_schemas(read_schema(base), read_schema(ours), read_schema(theirs))
    data: dict[str, Any] = {"diff": m.diff.to_json(), "conflicts": [c.__dict__ for c in m.conflicts],
            "notes": m.notes}
    if as_json:
        emit_json(data)
    else:
        for k, v in data["diff"].items():
            if v:
                print(f"{k}: {', '.join(v) if isinstance(v, list) else ', '.join(f'{a} -> {b}' for a, b in v.items())}")
        for c in m.conflicts:
            print(f"conflict: {c.location}: {c.message}")
    raise typer.Exit(1 if m.conflicts else 0)


def register(app: typer.Typer) -> None:
    app.add_typer(sql_app, name="sql")
