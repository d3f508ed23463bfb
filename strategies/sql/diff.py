"""Three-way schema diff and the column mapping.

base = the old image's schema, ours = the live schema (its rows are
carried), theirs = the new image's schema (the target).  The target is
theirs plus what the operator added (tables, columns, indexes, views,
triggers) where that does not clash with theirs; a clash is a conflict.

Without a base nothing can be told apart from "theirs dropped it", so an
ours-only table or column then counts as dropped (refused when it holds data
unless data loss is allowed): the safe reading.  Pass the old schema as base
to keep the operator's own additions.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from volmerge.strategies.errors import BadInput

from .schema import BOOKKEEPING, Column, Schema, Table, family


@dataclass
class ColumnMap:
    """Where one target column's value comes from.  ``expr`` is an SQL
    expression over the source row in the source engine's dialect; None
    means the column is left to the target's default (or NULL)."""

    target: str
    source: str | None
    expr: str | None
    how: str  # same | renamed | cast | policy-default | coalesce | default | null | missing | theirs
    from_type: str | None = None
    to_type: str | None = None
    check: str | None = None  # a family the source values must convert to (validated before replay)
    # the policy's expression filling this column (policy-default, coalesce);
    # plan.fold_fills evaluates one that reads no column once per replay
    fill: str | None = None
    base: str | None = None  # coalesce: the source value COALESCE'd with the fill


@dataclass
class TableMap:
    target: str
    source: str | None  # the ours table rows come from (None: no ours rows)
    origin: str  # ours | theirs | none
    columns: list[ColumnMap] = field(default_factory=list)
    _rows: int | None = 0
    status: str = "same"  # same | changed | added | operator | renamed | bookkeeping
    counter: Callable[[], int] | None = field(default=None, repr=False, compare=False)

    @property
    def rows(self) -> int:
        """Rows to replay; counted on first use when the plan left it to
        later (``counter``: a PostgreSQL source, whose replay on several
        connections gets its counts from its own checksums instead)."""
        if self._rows is None:
            self._rows = self.counter() if self.counter is not None else 0
        return self._rows

    @rows.setter
    def rows(self, value: int) -> None:
        self._rows = value

    @property
    def counted(self) -> bool:
        return self._rows is not None

    @property
    def carried(self) -> list[ColumnMap]:
        return [c for c in self.columns if c.expr is not None]

    @property
    def carried_exprs(self) -> list[str]:
        """The source expressions of :attr:`carried`, in order."""
        return [c.expr for c in self.columns if c.expr is not None]

    @property
    def ours_table(self) -> str:
        """:attr:`source` of a map whose rows come from ours."""
        if self.source is None:
            raise ValueError(f"table {self.target}: no source table")
        return self.source


@dataclass
class Loss:
    table: str
    column: str | None
    count: int  # rows (whole table) or non-NULL values (column)
    reason: str


@dataclass
class SqlConflict:
    location: str
    message: str


@dataclass
class SchemaDiff:
    tables_added: list[str] = field(default_factory=list)
    tables_dropped: list[str] = field(default_factory=list)
    tables_renamed: dict[str, str] = field(default_factory=dict)
    tables_kept_from_ours: list[str] = field(default_factory=list)
    columns_added: list[str] = field(default_factory=list)
    columns_dropped: list[str] = field(default_factory=list)
    columns_renamed: dict[str, str] = field(default_factory=dict)
    columns_retyped: dict[str, str] = field(default_factory=dict)
    columns_kept_from_ours: list[str] = field(default_factory=list)
    indexes_kept_from_ours: list[str] = field(default_factory=list)
    views_kept_from_ours: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Merged:
    target: Schema
    tables: list[TableMap]
    diff: SchemaDiff
    conflicts: list[SqlConflict]
    dropped_tables: list[str]  # ours tables whose rows are not carried (loss candidates)
    dropped_columns: list[tuple[str, str]]  # (ours table, column)
    notes: list[str] = field(default_factory=list)


def parse_renames(maps: dict[str, str] | None) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """``{"notes.body": "notes.content", "old": "new"}`` -> table renames and
    column renames keyed by (ours table, ours column)."""
    tables: dict[str, str] = {}
    cols: dict[tuple[str, str], str] = {}
    for k, v in (maps or {}).items():
        if not isinstance(k, str) or not isinstance(v, str) or not k or not v:
            raise BadInput(f"rename hint {k!r} = {v!r}: expected TABLE.OLD = NEW or OLD_TABLE = NEW_TABLE")
        if "." in k:
            t, c = k.split(".", 1)
            new = v.split(".", 1)[1] if v.startswith(t + ".") or "." in v else v
            if not t or not c or not new:
                raise BadInput(f"rename hint {k!r} = {v!r}: expected TABLE.OLD = NEW")
            cols[(t, c)] = new
        else:
            tables[k] = v
    return tables, cols


def parse_defaults(defaults: dict[str, str] | None) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for k, v in (defaults or {}).items():
        if not isinstance(k, str) or "." not in k or v is None or str(v).strip() == "":
            raise BadInput(f"default {k!r} = {v!r}: expected TABLE.COLUMN = SQL_EXPR")
        t, c = k.split(".", 1)
        out[(t, c)] = str(v)
    return out


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def cast_expr(expr: str, from_fam: str, to_fam: str, engine: str) -> tuple[str, str | None]:
    """A safe cast of ``expr`` between value families, in the source
    engine's SQL; returns (expression, family to validate or None)."""
    if from_fam == to_fam or to_fam in ("any",) or from_fam == "any" and to_fam in ("text", "blob"):
        return expr, None
    if engine == "postgres":
        pg = {"integer": "bigint", "real": "double precision", "numeric": "numeric", "text": "text",
              "boolean": "boolean", "blob": "bytea", "date": "date", "time": "time",
              "timestamp": "timestamp"}.get(to_fam)
        return (f"({expr})::{pg}", None) if pg else (expr, None)
    if to_fam == "text":
        return f"CAST({expr} AS TEXT)", None
    if to_fam == "blob":
        return expr, None
    if to_fam == "integer":
        if from_fam == "boolean":
            return expr, None
        return f"CAST({expr} AS INTEGER)", "integer"
    if to_fam == "real":
        if from_fam in ("integer", "boolean"):
            return f"CAST({expr} AS REAL)", None
        return f"CAST({expr} AS REAL)", "real"
    if to_fam == "boolean":
        if from_fam == "integer":
            return expr, "boolean"
        return (f"CASE lower(CAST({expr} AS TEXT)) WHEN 't' THEN 1 WHEN 'true' THEN 1 WHEN '1' THEN 1 "
                f"WHEN 'yes' THEN 1 WHEN 'on' THEN 1 WHEN 'f' THEN 0 WHEN 'false' THEN 0 WHEN '0' THEN 0 "
                f"WHEN 'no' THEN 0 WHEN 'off' THEN 0 ELSE {expr} END", "boolean")
    if to_fam == "numeric":
        if from_fam in ("integer", "real", "boolean"):
            return expr, None
        return expr, "numeric"
    return expr, None  # temporal targets keep their text


def merge_schemas(base: Schema | None, ours: Schema, theirs: Schema, *,
                  renames: dict[str, str] | None = None, defaults: dict[str, str] | None = None,
                  bookkeeping: list[str] | tuple[str, ...] = (), engine: str = "sqlite") -> Merged:
    """Merge the three schemas; map every target column to its source."""
    table_renames, col_renames = parse_renames(renames)
    pol_defaults = parse_defaults(defaults)
    keep = {b.lower() for b in (*BOOKKEEPING, *bookkeeping)}
    target = Schema(dialect=theirs.dialect, source=theirs.source)
    diff = SchemaDiff()
    conflicts: list[SqlConflict] = []
    notes: list[str] = []
    maps: list[TableMap] = []
    dropped_tables: list[str] = []
    dropped_columns: list[tuple[str, str]] = []

    for old, new in table_renames.items():
        if ours.table(old) is None:
            raise BadInput(f"rename hint {old} -> {new}: the source has no table {old}")
        if theirs.table(new) is None:
            raise BadInput(f"rename hint {old} -> {new}: the new schema has no table {new}")
    for (t, c), new in col_renames.items():
        ot = ours.table(t)
        if ot is None or ot.col(c) is None:
            raise BadInput(f"rename hint {t}.{c} -> {new}: the source has no column {t}.{c}")
    for (t, c) in pol_defaults:
        tt = theirs.table(t)
        if tt is None or tt.col(c) is None:
            if not ((ot := ours.table(t)) is not None and ot.col(c) is not None):
                raise BadInput(f"default for {t}.{c}: no such column in the new schema")

    renamed_to = {v.lower(): k for k, v in table_renames.items()}
    consumed_ours: set[str] = set()

    for tt in theirs.tables.values():
        tgt = copy.deepcopy(tt)
        target.tables[tgt.name] = tgt
        src_name = renamed_to.get(tt.name.lower())
        if src_name is None and (same := ours.table(tt.name)) is not None:
            src_name = same.name
        if tt.name.lower() in keep:
            maps.append(TableMap(tgt.name, None, "theirs", status="bookkeeping"))
            if src_name:
                consumed_ours.add(src_name)
                notes.append(f"{tt.name}: migration bookkeeping table, the new version's rows win")
            continue
        if src_name is None:
            diff.tables_added.append(tt.name)
            maps.append(TableMap(tgt.name, None, "theirs", status="added"))
            continue
        consumed_ours.add(src_name)
        ot = ours.table(src_name)
        assert ot is not None
        bt = base.table(src_name) if base is not None else None
        if src_name != tt.name:
            diff.tables_renamed[src_name] = tt.name
        tm = TableMap(tgt.name, ot.name, "ours", status="renamed" if src_name != tt.name else "same")
        # operator-added columns carried into the target
        mapped_from: dict[str, str] = {}  # target col -> ours col
        for (t, c), new in col_renames.items():
            if t.lower() == ot.name.lower():
                renamed, was = tgt.col(new), ot.col(c)
                if renamed is None:
                    raise BadInput(f"rename hint {t}.{c} -> {new}: the new schema has no column "
                                   f"{tt.name}.{new}")
                assert was is not None  # checked with the hints above
                mapped_from[renamed.name] = was.name
                diff.columns_renamed[f"{ot.name}.{c}"] = f"{tt.name}.{new}"
        used = set(mapped_from.values())
        for oc in ot.columns:
            if oc.name in used:
                continue
            tc = tgt.col(oc.name)
            if tc is not None:
                if tc.name not in mapped_from:
                    mapped_from[tc.name] = oc.name
                    used.add(oc.name)
                continue
            in_base = bt is not None and bt.col(oc.name) is not None
            if base is not None and bt is not None and not in_base:
                # the operator added this column: keep it
                newc = copy.deepcopy(oc)
                if ours.dialect != theirs.dialect:
                    newc.type = _port_type(oc, ours.dialect, theirs.dialect)
                    newc.default = None
                newc.pk = 0
                newc.autoincrement = False
                if newc.notnull and newc.default is None:
                    newc.notnull = False  # its old rows carry values; new rows may not
                    notes.append(f"{tt.name}.{oc.name}: operator column kept as nullable")
                tgt.columns.append(newc)
                tgt.sql = None  # rendered from the model now
                mapped_from[newc.name] = oc.name
                used.add(oc.name)
                diff.columns_kept_from_ours.append(f"{tt.name}.{oc.name}")
                continue
            dropped_columns.append((ot.name, oc.name))
            diff.columns_dropped.append(f"{ot.name}.{oc.name}")
        for tc in tgt.columns:
            src_col = mapped_from.get(tc.name)
            pdef = pol_defaults.get((tt.name, tc.name)) or pol_defaults.get((ot.name, tc.name))
            if src_col is not None:
                sc = ot.col(src_col)
                assert sc is not None
                expr, check = cast_expr(_qi(sc.name), sc.family, tc.family, engine)
                how = "renamed" if sc.name != tc.name else "same"
                if expr != _qi(sc.name):
                    how = "cast"
                    diff.columns_retyped[f"{tt.name}.{tc.name}"] = f"{sc.type or '(none)'} -> {tc.type}"
                carried = None
                if pdef is not None:
                    carried, expr = expr, f"COALESCE({expr}, {pdef})"
                    how = "coalesce"
                tm.columns.append(ColumnMap(tc.name, sc.name, expr, how, sc.type, tc.type, check,
                                            fill=pdef, base=carried))
                continue
            diff.columns_added.append(f"{tt.name}.{tc.name}")
            if pdef is not None:
                tm.columns.append(ColumnMap(tc.name, None, pdef, "policy-default", None, tc.type, fill=pdef))
            elif tc.default is not None or tc.autoincrement or _rowid_alias(tgt, tc):
                tm.columns.append(ColumnMap(tc.name, None, None, "default", None, tc.type))
            elif not tc.notnull:
                tm.columns.append(ColumnMap(tc.name, None, None, "null", None, tc.type))
            else:
                tm.columns.append(ColumnMap(tc.name, None, None, "missing", None, tc.type))
        if tm.status == "same" and (any(c.how != "same" for c in tm.columns)
                                    or any(t == ot.name for t, _ in dropped_columns)):
            tm.status = "changed"
        maps.append(tm)

    # ours tables the new schema does not have
    for ot in ours.tables.values():
        if ot.name in consumed_ours:
            continue
        in_base = base is not None and base.table(ot.name) is not None
        if base is not None and not in_base and ot.name.lower() not in keep:
            if ot.name in target.views or ot.name in target.indexes:
                conflicts.append(SqlConflict(ot.name, f"the operator's table {ot.name} clashes with the "
                                                      f"new schema's view or index of that name"))
                continue
            tgt = copy.deepcopy(ot)
            tgt.dialect = ours.dialect
            target.tables[tgt.name] = tgt
            tm = TableMap(tgt.name, ot.name, "ours", status="operator")
            tm.columns = [ColumnMap(c.name, c.name, _qi(c.name), "same", c.type, c.type) for c in ot.columns]
            maps.append(tm)
            diff.tables_kept_from_ours.append(ot.name)
            continue
        if ot.name.lower() in keep:
            continue
        dropped_tables.append(ot.name)
        diff.tables_dropped.append(ot.name)

    _carry_extras(base, ours, theirs, target, diff, conflicts)
    return Merged(target, maps, diff, conflicts, dropped_tables, dropped_columns, notes)


def _port_type(c: Column, src: str, dst: str) -> str:
    from .render import render_type

    return render_type(c, src, dst)


def _rowid_alias(t: Table, c: Column) -> bool:
    """SQLite's INTEGER PRIMARY KEY is the rowid: it is assigned when omitted."""
    return c.pk == 1 and len(t.pk) == 1 and (c.type or "").upper() in ("INTEGER", "INT", "BIGINT")


def _carry_extras(base: Schema | None, ours: Schema, theirs: Schema, target: Schema,
                  diff: SchemaDiff, conflicts: list[SqlConflict]) -> None:
    target.indexes = {k: copy.deepcopy(v) for k, v in theirs.indexes.items()}
    target.views = {k: copy.deepcopy(v) for k, v in theirs.views.items()}
    target.triggers = {k: copy.deepcopy(v) for k, v in theirs.triggers.items()}
    if base is None:
        return
    for name, ix in ours.indexes.items():
        if name in base.indexes or ix.table not in target.tables:
            continue
        if name in theirs.indexes:
            if theirs.indexes[name].columns != ix.columns or theirs.indexes[name].table != ix.table:
                conflicts.append(SqlConflict(f"index {name}", "added by the operator and by the new "
                                                              "version with different definitions"))
            continue
        t = target.tables[ix.table]
        if all(c == "<expr>" or t.col(c) is not None for c in ix.columns):
            target.indexes[name] = copy.deepcopy(ix)
            target.indexes[name].dialect = ours.dialect
            diff.indexes_kept_from_ours.append(name)
    for name, v in ours.views.items():
        if name in base.views:
            continue
        if name in theirs.views:
            if theirs.views[name].sql.strip() != v.sql.strip():
                conflicts.append(SqlConflict(f"view {name}", "added by the operator and by the new "
                                                             "version with different definitions"))
            continue
        if name in target.tables:
            conflicts.append(SqlConflict(f"view {name}", "clashes with a table of the new schema"))
            continue
        target.views[name] = copy.deepcopy(v)
        target.views[name].dialect = ours.dialect
        diff.views_kept_from_ours.append(name)
    for name, tr in ours.triggers.items():
        if name in base.triggers or name in theirs.triggers or tr.table not in target.tables:
            continue
        target.triggers[name] = copy.deepcopy(tr)
        target.triggers[name].dialect = ours.dialect


def family_of(type_: str) -> str:
    return family(type_)
