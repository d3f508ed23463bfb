"""The replay plan: the schema diff, the mapping, rows and losses — data.

``plan_replay`` reads everything and decides everything; ``replay`` only
executes a plan.  A dry run is the plan printed (architecture.md, principle 2: dry run lives in
one place).  A plan owns scratch space (staged dumps); close it, or use it as
a context manager.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import weakref
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from volmerge.strategies.errors import BadInput, NotDone

from .diff import Loss, Merged, SqlConflict, TableMap, merge_schemas
from .readers import kind_of, read_schema
from .schema import Schema
from .sources import Source, open_source


@dataclass
class ReplayPlan:
    src: str
    schema_spec: str
    base_spec: str | None
    from_dialect: str
    to_dialect: str
    merged: Merged
    ours: Source
    theirs: Source
    losses: list[Loss] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # NOT NULL target columns with no value
    allow_data_loss: bool = False
    workdir: str | None = None
    settings_from: dict[str, str] = field(default_factory=dict)  # setting -> "ours" | "theirs"
    _finalizer: Any = field(default=None, repr=False)
    _scratch: Any = field(default=None, repr=False)  # its collection removes the scratch directory

    @property
    def target(self) -> Schema:
        return self.merged.target

    @property
    def tables(self) -> list[TableMap]:
        return self.merged.tables

    @property
    def conflicts(self) -> list[SqlConflict]:
        return self.merged.conflicts

    def problems(self) -> list[str]:
        """Why this plan cannot be replayed (empty when it can)."""
        out = [f"conflict: {c.location}: {c.message}" for c in self.conflicts]
        if self.missing:
            out.append("NOT NULL column(s) with no default and no value given: "
                       + ", ".join(self.missing)
                       + " (give one with --default TABLE.COLUMN=SQL_EXPR or [sql] defaults)")
        if self.losses and not self.allow_data_loss:
            out.append("data loss refused: " + "; ".join(_loss_text(x) for x in self.losses)
                       + " (--allow-data-loss to accept)")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()

    def check(self) -> None:
        probs = self.problems()
        if probs:
            raise NotDone("; ".join(probs), problems=probs)

    def to_json(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "schema": self.schema_spec,
            "base": self.base_spec,
            "from_dialect": self.from_dialect,
            "to_dialect": self.to_dialect,
            "diff": self.merged.diff.to_json(),
            "tables": [
                {
                    "table": t.target, "from": t.source, "origin": t.origin, "status": t.status,
                    "rows": t.rows,
                    "columns": [asdict(c) for c in t.columns],
                }
                for t in self.tables
            ],
            "losses": [asdict(x) for x in self.losses],
            "missing": self.missing,
            "conflicts": [asdict(c) for c in self.conflicts],
            "notes": self.merged.notes,
            "problems": self.problems(),
            "rows_total": sum(t.rows for t in self.tables),
            "settings": {k: {"value": v, "from": self.settings_from.get(k)}
                         for k, v in self.target.settings.items()} if self.to_dialect == "sqlite" else {},
        }

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> ReplayPlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Scratch:
    """Owns a plan's scratch directory: removed on close() or when collected."""


def _loss_text(x: Loss) -> str:
    if x.column is None:
        return f"table {x.table} ({x.count} rows, {x.reason})"
    return f"column {x.table}.{x.column} ({x.count} values, {x.reason})"


def plan_replay(src: str, schema: str, base: str | None = None, maps: dict[str, str] | None = None,
                defaults: dict[str, str] | None = None, allow_data_loss: bool = False,
                from_dialect: str | None = None, to_dialect: str | None = None,
                bookkeeping: list[str] | tuple[str, ...] = (), workdir: str | None = None,
                frozen: bool = False) -> ReplayPlan:
    """Plan the replay of ``src``'s rows into the schema ``schema`` (NEW).

    ``src``/``schema``/``base``: SQLite files, .sql files or postgresql:// URLs.
    ``maps``: rename hints {"table.old": "new", "oldtable": "newtable"};
    ``defaults``: {"table.column": "SQL expression"} for new NOT NULL columns
    (evaluated in the source engine); ``bookkeeping``: more migration tables;
    ``frozen``: the SQLite inputs cannot change (snapshots, image layers): they
    are opened immutable, so nothing is ever created beside them.
    """
    for d in (from_dialect, to_dialect):
        if d is not None and d not in ("sqlite", "postgres", "mysql"):
            raise BadInput(f"unknown dialect {d!r} (sqlite, postgres or mysql)")
    kind_of(src)
    kind_of(schema)
    wd = tempfile.mkdtemp(prefix="volmerge-sql-", dir=workdir)
    holder = _Scratch()
    fin = weakref.finalize(holder, shutil.rmtree, wd, True)
    try:
        base_schema = read_schema(base, dialect=None, frozen=frozen) if base else None
        ours = open_source(src, from_dialect, wd, "ours", frozen)
        if ours.engine == "postgres" and schema == src:
            # the same database as the new schema (a copy to a fresh one, or a
            # major upgrade): read once
            theirs = replace(ours, schema=copy.deepcopy(ours.schema), _counts={})
        else:
            theirs = open_source(schema, None, wd, "theirs", frozen)
        if to_dialect is None:
            to_dialect = theirs.schema.dialect if theirs.schema.dialect != "mysql" else "sqlite"
        merged = merge_schemas(base_schema, ours.schema, theirs.schema, renames=maps, defaults=defaults,
                               bookkeeping=bookkeeping, engine=ours.engine)
        plan = ReplayPlan(src, schema, base, ours.schema.dialect, to_dialect, merged, ours, theirs,
                          allow_data_loss=allow_data_loss, workdir=wd, _finalizer=fin, _scratch=holder)
        # A PostgreSQL source's tables are counted when first asked (the
        # dry run, a replay on one connection); a replay on several takes
        # the exact counts from its checksums, in its own snapshot, instead
        # of scanning every table once more before it starts.
        lazy = ours.engine == "postgres"
        ours.count_all(list(merged.dropped_tables))
        for tm in merged.tables:
            if tm.origin == "ours" and tm.source:
                if lazy:
                    tm._rows, tm.counter = None, (lambda t=tm.source: ours.count(t))
                else:
                    tm.rows = ours.count(tm.source)
            elif tm.origin == "theirs" and theirs.schema.table(tm.target) is not None:
                tm.rows = theirs.count(tm.target)
            if any(c.how == "missing" for c in tm.columns):
                if tm.rows:
                    plan.missing += [f"{tm.target}.{c.target}" for c in tm.columns if c.how == "missing"]
                else:
                    merged.notes.append(f"{tm.target}: NOT NULL column(s) without default, but no rows to carry")
        fold_fills(merged.tables, ours)
        merged.target.settings, plan.settings_from = target_settings(ours.schema, theirs.schema)
        for t in merged.dropped_tables:
            n = ours.count(t)
            if n:
                plan.losses.append(Loss(t, None, n, "table dropped by the new schema"))
        for t, c in merged.dropped_columns:
            n = ours.count_values(t, c)
            if n:
                plan.losses.append(Loss(t, c, n, "column dropped by the new schema"))
        return plan
    except BaseException:
        fin()
        raise


def target_settings(ours: Schema, theirs: Schema) -> tuple[dict[str, int], dict[str, str]]:
    """The new database's settings (schema.SETTINGS) and where each comes
    from: the new version's (its database, or the PRAGMAs of its .sql
    file), else the live database's.  user_version is the schema's version
    number to apps that migrate by it, so it goes with the schema: a new
    file left at 0 would send such an app into its first-run migrations."""
    values: dict[str, int] = {}
    origin: dict[str, str] = {}
    for side, schema in (("ours", ours), ("theirs", theirs)):
        for k, v in schema.settings.items():
            values[k], origin[k] = v, side
    return values, origin


def fold_fills(tables: list[Any], src: Any) -> None:
    """Evaluate, once per replay, each policy fill expression that reads no
    column of the row (``CURRENT_TIMESTAMP``, ``now()``, ``random()``, a
    literal) and put its value in the mapping as a literal.

    Every row then gets one value, as PostgreSQL's ``ALTER TABLE ... ADD
    COLUMN ... DEFAULT now()`` gives existing rows; and the verification,
    which evaluates the mapping again on the source, sees the same value
    instead of a later clock or another random number.  An expression that
    reads the row (``name || ' (old)'``) stays per row."""
    if not any(c.fill is not None for tm in tables for c in tm.columns):
        return
    import sqlglot
    from sqlglot import exp

    dialect = "postgres" if src.engine == "postgres" else "sqlite"
    folded: dict[str, str] = {}
    for tm in tables:
        for c in tm.columns:
            if c.fill is None:
                continue
            if c.fill not in folded:
                try:
                    tree = sqlglot.parse_one(c.fill, read=dialect)
                except sqlglot.errors.ParseError:
                    continue
                if tree is None or any(True for _ in tree.find_all(exp.Column, exp.Select)):
                    continue
                folded[c.fill] = _literal(src, c.fill)
            lit = folded[c.fill]
            c.expr = lit if c.how == "policy-default" else f"COALESCE({c.base}, {lit})"


def _literal(src: Any, expr: str) -> str:
    """The value of a row-free expression, evaluated once in the source
    engine, as an SQL literal of that engine (the engine writes it)."""
    if src.engine == "postgres":
        from .pg import pg_connect

        with pg_connect(src.url) as conn:
            return str(conn.execute(
                "SELECT CASE WHEN v IS NULL THEN 'NULL' ELSE format('CAST(%L AS %s)', v::text, pg_typeof(v)) "
                f"END FROM (SELECT ({expr}) AS v) AS s").fetchone()[0])
    return str(src.scalar(f"SELECT quote(({expr}))"))
