"""DDL statements of any dialect sqlglot reads -> the schema model.

Statements are classified by their first words (cheap, no parsing) so that
the rows of a dump never reach sqlglot; only DDL is parsed.  Statements a
dump carries that do not change the schema or the rows (SET, GRANT, OWNER
TO, COMMENT ON, ...) are skipped; anything else is refused with its line,
rather than silently dropped.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from volmerge.strategies.errors import BadInput

from . import inserts
from .dumpstream import Statement
from .schema import (
    SETTINGS,
    Column,
    ForeignKey,
    Index,
    Schema,
    Table,
    Trigger,
    View,
    has_autoincrement,
    is_without_rowid,
)

_IGNORED = re.compile(
    r"""^\s*(?:
        SET\b | RESET\b | BEGIN\b | COMMIT\b | END\b | START\s+TRANSACTION\b | ROLLBACK\b
      | PRAGMA\b | ANALYZE\b | VACUUM\b | GRANT\b | REVOKE\b | COMMENT\s+ON\b
      | LOCK\s+TABLES?\b | UNLOCK\s+TABLES\b | DROP\s+(?:TABLE|VIEW|INDEX|TRIGGER|SEQUENCE)\s+IF\s+EXISTS\b
      | SELECT\s+pg_catalog\.set_config\b | CREATE\s+SCHEMA\b | ALTER\s+SCHEMA\b
      | CREATE\s+EXTENSION\b | ALTER\s+DEFAULT\s+PRIVILEGES\b
      | DELETE\s+FROM\s+(?:main\.)?"?sqlite_sequence"?\s*$
      | ALTER\s+\w+\s+(?:ONLY\s+)?\S+\s+OWNER\s+TO\b
      | ALTER\s+(?:TABLE\s+(?:ONLY\s+)?\S+\s+)?(?:OWNER\s+TO|REPLICA\s+IDENTITY|CLUSTER\s+ON)\b
      | ALTER\s+TABLE\s+\S+\s+(?:DISABLE|ENABLE)\s+KEYS\b
    )""",
    re.I | re.X,
)
_INSERT = re.compile(r"^\s*(?:INSERT|REPLACE)\b", re.I)
_SETVAL = re.compile(r"^\s*SELECT\s+(?:pg_catalog\.)?setval\(\s*'((?:[^']|'')+)'\s*,\s*(-?\d+)\s*"
                     r"(?:,\s*(\w+)\s*)?\)\s*$", re.I)
_COPY = re.compile(rf"^\s*COPY\s+({inserts.QNAME})\s*"
                   rf"(\(\s*{inserts.IDENT}(?:\s*,\s*{inserts.IDENT})*\s*\))?"
                   r"\s+FROM\s+stdin\s*$", re.I | re.S)
_CREATE = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:GLOBAL|LOCAL)\s+)?(?:TEMP\w*\s+|UNLOGGED\s+)?"
                     r"(UNIQUE\s+INDEX|INDEX|TABLE|VIEW|MATERIALIZED\s+VIEW|TRIGGER|SEQUENCE)\b", re.I)
_ALTER_TABLE = re.compile(r"^\s*ALTER\s+TABLE\b", re.I)
_ADD_IDENTITY = re.compile(r"^\s*ALTER\s+TABLE\s+(?:ONLY\s+)?(\S+)\s+ALTER\s+COLUMN\s+(\S+)\s+ADD\s+GENERATED\s+"
                           r"(?:ALWAYS|BY\s+DEFAULT)\s+AS\s+IDENTITY(?:\s*\(\s*SEQUENCE\s+NAME\s+(\S+))?", re.I | re.S)
_OWNED_BY = re.compile(r"^\s*ALTER\s+SEQUENCE\s+(\S+)\s+OWNED\s+BY\s+(\S+)\s*$", re.I)
_CREATE_AS = re.compile(r"\)\s*AS\s+SELECT\b|^\s*CREATE\s+TABLE\s+\S+\s+AS\b", re.I)


_SETTING = re.compile(r"^\s*PRAGMA\s+(?:\"?main\"?\.)?\"?(\w+)\"?\s*(?:=\s*(\S+?)|\(\s*(\S+?)\s*\))\s*;?\s*$",
                      re.I)
_AUTO_VACUUM = {"none": 0, "full": 1, "incremental": 2}


def _setting(text: str) -> tuple[str, int] | None:
    """``PRAGMA user_version = 5`` (a setting of SETTINGS) -> ("user_version", 5)."""
    m = _SETTING.match(text)
    if m is None or m.group(1).lower() not in SETTINGS:
        return None
    name, raw = m.group(1).lower(), (m.group(2) or m.group(3)).strip("'\"")
    if name == "auto_vacuum" and raw.lower() in _AUTO_VACUUM:
        return name, _AUTO_VACUUM[raw.lower()]
    try:
        return name, int(raw, 0)
    except ValueError:
        return None


def apply_setting(schema: Schema, st: Statement) -> None:
    found = _setting(st.text)
    text = " ".join(st.text.split())[:80]
    if found is None:
        raise BadInput(f"setting at line {st.line} is not a number: {text}")
    name, value = found
    valid = {"page_size": lambda v: 512 <= v <= 65536 and v & (v - 1) == 0,
             "auto_vacuum": lambda v: v in (0, 1, 2)}.get(name, lambda v: -2**31 <= v < 2**31)
    if not valid(value):
        raise BadInput(f"setting at line {st.line} is out of range: {text}")
    schema.settings[name] = value


def classify(st: Statement) -> str:
    """'ignore', 'insert', 'copy', 'sequence', 'setting', 'ddl' or 'unsupported'."""
    text = st.text
    if st.copy_lines is not None:
        return "copy"
    m = _SETTING.match(text)
    if m is not None and m.group(1).lower() in SETTINGS:
        return "setting"
    if _INSERT.match(text):
        return "sequence" if insert_table(text) == "sqlite_sequence" else "insert"
    if _SETVAL.match(text) or _OWNED_BY.match(text):
        return "sequence"
    if _IGNORED.match(text):
        return "ignore"
    if _CREATE.match(text) or _ALTER_TABLE.match(text):
        return "ddl"
    return "unsupported"


def unqualify(name: str) -> str:
    """``public.t`` / ``"main"."t"`` / `` `t` `` -> ``t``."""
    parts = re.findall(r'"((?:[^"]|"")+)"|`([^`]+)`|\[([^\]]+)\]|([^."`\[\]\s]+)', name)
    if not parts:
        return name
    last = parts[-1]
    return next(p for p in last if p).replace('""', '"')


def insert_table(text: str) -> str | None:
    found = inserts.head(text)
    return found[1] if found else None


def copy_target(st: Statement) -> tuple[str, list[str] | None]:
    m = _COPY.match(st.text)
    if not m:
        raise BadInput(f"unsupported statement at line {st.line}: {st.head} (COPY form not understood)")
    cols = None
    if m.group(2):
        cols = [inserts.unquote(c) for c in re.findall(inserts.IDENT, m.group(2)[1:-1])]
    return inserts.unquote(re.findall(inserts.IDENT, m.group(1))[-1]), cols


def apply_sequence(schema: Schema, st: Statement) -> None:
    m = _OWNED_BY.match(st.text)
    if m:
        owner = m.group(2).split(".")
        if len(owner) >= 2:
            schema.seq_tables[unqualify(m.group(1))] = unqualify(".".join(owner[:-1]))
        return
    if _INSERT.match(st.text):  # INSERT INTO sqlite_sequence VALUES('table', N)
        for row in inserts.literal_rows(inserts.check(st.text, st.line), st.line):
            if len(row) != 2 or not isinstance(row[0], str) or not isinstance(row[1], int):
                raise BadInput(f"malformed dump: line {st.line}: sqlite_sequence row {row!r}")
            schema.sequences[row[0]] = row[1]
        return
    m = _SETVAL.match(st.text)
    if m:
        seq = unqualify(m.group(1).replace("''", "'"))
        value = int(m.group(2))
        if m.group(3) and m.group(3).lower() == "false":
            value -= 1
        schema.sequences["seq:" + seq] = value


def _parse(st: Statement, dialect: str) -> exp.Expr:
    try:
        e = sqlglot.parse_one(st.text, read=dialect)
    except (ParseError, TokenError) as err:
        first = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise BadInput(f"schema does not parse at line {st.line}: {st.head}: {first}") from None
    return e


def apply_ddl(schema: Schema, st: Statement, dialect: str) -> None:
    """Apply one DDL statement to ``schema``."""
    m = _CREATE.match(st.text)
    if m:
        kind = m.group(1).upper().split()[-1] if "INDEX" not in m.group(1).upper() else "INDEX"
        if kind == "TABLE":
            if _CREATE_AS.search(st.text):
                raise BadInput(f"unsupported statement at line {st.line}: CREATE TABLE ... AS SELECT")
            t = table_from_ast(_parse(st, dialect), dialect, st)
            t.sql = st.text
            t.without_rowid = is_without_rowid(st.text)
            schema.tables[t.name] = t
        elif kind == "INDEX":
            ix = index_from_ast(_parse(st, dialect), st)
            schema.indexes[ix.name] = ix
        elif kind == "VIEW":
            name = re.match(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\w*\s+)?(?:MATERIALIZED\s+)?VIEW\s+"
                            r"(?:IF\s+NOT\s+EXISTS\s+)?((?:\"[^\"]+\"|[`\w.])+)", st.text, re.I)
            schema.views[unqualify(name.group(1)) if name else f"view{st.line}"] = View(
                unqualify(name.group(1)) if name else f"view{st.line}", st.text)
        elif kind == "TRIGGER":
            m2 = re.match(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\w*\s+)?TRIGGER\s+(?:IF\s+NOT\s+EXISTS\s+)?"
                          r"((?:\"[^\"]+\"|[`\w.])+).*?\bON\s+((?:\"[^\"]+\"|[`\w.])+)", st.text, re.I | re.S)
            if m2:
                schema.triggers[unqualify(m2.group(1))] = Trigger(unqualify(m2.group(1)),
                                                                  unqualify(m2.group(2)), st.text)
        # SEQUENCE: values come from setval / sqlite_sequence
        return
    m = _ADD_IDENTITY.match(st.text)
    if m:
        altered = schema.table(unqualify(m.group(1)))
        col = altered.col(unqualify(m.group(2))) if altered else None
        if altered is not None and col is not None:
            col.autoincrement = True
            if m.group(3):
                schema.seq_tables[unqualify(m.group(3))] = altered.name
        return
    if _ALTER_TABLE.match(st.text):
        _apply_alter(schema, _parse(st, dialect), dialect, st)
        return
    raise BadInput(f"unsupported statement at line {st.line}: {st.head}")


def _ident_list(nodes: list[exp.Expression]) -> list[str]:
    out = []
    for n in nodes:
        if isinstance(n, exp.Ordered):
            n = n.this
        out.append(n.name if isinstance(n, (exp.Identifier, exp.Column)) else n.sql())
    return out


def _fk_from_reference(cols: list[str], ref: exp.Reference) -> ForeignKey:
    target = ref.this
    if isinstance(target, exp.Schema):
        rt = target.this.name
        rcols = _ident_list(target.expressions)
    else:
        rt, rcols = target.name, []
    on_delete = on_update = None
    for opt in ref.args.get("options") or []:
        o = opt if isinstance(opt, str) else opt.sql() if hasattr(opt, "sql") else str(opt)
        mo = re.match(r"ON\s+(DELETE|UPDATE)\s+(.+)", o, re.I)
        if mo:
            if mo.group(1).upper() == "DELETE":
                on_delete = mo.group(2).upper()
            else:
                on_update = mo.group(2).upper()
    return ForeignKey(cols, rt, rcols, on_delete, on_update)


def _type_sql(kind: exp.Expression | None, dialect: str) -> str:
    if kind is None:
        return ""
    try:
        return kind.sql(dialect=dialect)
    except Exception:  # noqa: BLE001 - an exotic type is kept as written
        return kind.sql()


def table_from_ast(e: exp.Expr, dialect: str, st: Statement) -> Table:
    schema_node = e.this
    if not isinstance(schema_node, exp.Schema):
        raise BadInput(f"schema does not parse at line {st.line}: CREATE TABLE without columns")
    t = Table(name=schema_node.this.name)
    pk_cols: list[str] = []
    autoinc = has_autoincrement(st.text)
    for item in schema_node.expressions:
        node = item
        if isinstance(item, exp.Constraint):
            for sub in item.expressions:
                _table_constraint(t, sub, pk_cols, st)
            continue
        if isinstance(node, exp.Identifier):  # a column without a type (SQLite)
            t.columns.append(Column(name=node.name))
            continue
        if isinstance(node, exp.ColumnDef):
            col = Column(name=node.name, type=_type_sql(node.args.get("kind"), dialect))
            if col.type.upper() in ("SERIAL", "BIGSERIAL", "SMALLSERIAL"):
                col.autoincrement = True
                col.notnull = True
            for cc in node.args.get("constraints") or []:
                k = cc.args.get("kind") if isinstance(cc, exp.ColumnConstraint) else cc
                if isinstance(k, exp.NotNullColumnConstraint):
                    col.notnull = not k.args.get("allow_null")
                elif isinstance(k, exp.PrimaryKeyColumnConstraint):
                    pk_cols.append(col.name)
                elif isinstance(k, exp.DefaultColumnConstraint):
                    col.default = k.this.sql(dialect=dialect)
                elif isinstance(k, exp.AutoIncrementColumnConstraint):
                    col.autoincrement = True
                elif isinstance(k, exp.GeneratedAsIdentityColumnConstraint):
                    col.autoincrement = True
                    col.notnull = True
                elif isinstance(k, exp.UniqueColumnConstraint):
                    t.uniques.append([col.name])
                elif isinstance(k, exp.Reference):
                    t.fks.append(_fk_from_reference([col.name], k))
                elif isinstance(k, exp.CheckColumnConstraint):
                    t.checks.append(k.this.sql(dialect=dialect))
            t.columns.append(col)
            continue
        _table_constraint(t, node, pk_cols, st)
    for i, name in enumerate(pk_cols, 1):
        c = t.col(name)
        if c is not None:
            c.pk = i
            if len(pk_cols) == 1 and autoinc:
                c.autoincrement = True
    return t


def _table_constraint(t: Table, node: exp.Expression, pk_cols: list[str], st: Statement) -> None:
    if isinstance(node, exp.PrimaryKey):
        pk_cols[:] = _ident_list(node.expressions)
    elif isinstance(node, exp.PrimaryKeyColumnConstraint):
        pk_cols[:] = _ident_list(node.this.expressions if isinstance(node.this, exp.Schema) else [])
    elif isinstance(node, exp.UniqueColumnConstraint):
        cols = node.this.expressions if isinstance(node.this, exp.Schema) else []
        if cols:
            t.uniques.append(_ident_list(cols))
    elif isinstance(node, exp.ForeignKey):
        t.fks.append(_fk_from_reference(_ident_list(node.expressions), node.args["reference"]))
    elif isinstance(node, exp.CheckColumnConstraint):
        t.checks.append(node.this.sql())
    # mysql's inline KEY/INDEX entries and other extras are ignored here


def index_from_ast(e: exp.Expr, st: Statement) -> Index:
    ix = e.this
    if not isinstance(ix, exp.Index):
        raise BadInput(f"schema does not parse at line {st.line}: CREATE INDEX not understood")
    params = ix.args.get("params")
    cols = _ident_list(params.args.get("columns") or []) if params else []
    where = params.args.get("where") if params else None
    return Index(name=ix.name, table=ix.args["table"].name, columns=cols,
                 unique=bool(e.args.get("unique")),
                 where=where.this.sql() if where is not None else None, sql=st.text)


def _apply_alter(schema: Schema, e: exp.Expr, dialect: str, st: Statement) -> None:
    if not isinstance(e, exp.Alter):
        raise BadInput(f"unsupported statement at line {st.line}: {st.head}")
    t = schema.table(e.this.name)
    if t is None:
        raise BadInput(f"schema does not parse at line {st.line}: ALTER TABLE of unknown table {e.this.name}")
    for action in e.args.get("actions") or []:
        if isinstance(action, exp.AddConstraint):
            for c in action.expressions:
                subs = c.expressions if isinstance(c, exp.Constraint) else [c]
                for sub in subs:
                    pk: list[str] = []
                    _table_constraint(t, sub, pk, st)
                    for i, name in enumerate(pk, 1):
                        col = t.col(name)
                        if col is not None:
                            col.pk = i
        elif isinstance(action, exp.AlterColumn):
            col = t.col(action.name)
            if col is None:
                continue
            d = action.args.get("default")
            if d is not None:
                text = d.sql(dialect=dialect)
                if "nextval" in text.lower():
                    col.autoincrement = True
                    mseq = re.search(r"nextval\(\s*(?:CAST\()?'([^']+)'", text, re.I)
                    if mseq:
                        schema.seq_tables[unqualify(mseq.group(1))] = t.name
                else:
                    col.default = text
            if action.args.get("allow_null") is False:
                col.notnull = True
        elif isinstance(action, exp.ColumnDef):
            col = Column(name=action.name, type=_type_sql(action.args.get("kind"), dialect))
            t.columns.append(col)
        else:
            raise BadInput(f"unsupported statement at line {st.line}: ALTER TABLE {type(action).__name__}")
