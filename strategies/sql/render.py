"""The schema model -> DDL of a target dialect.

Same dialect and an unchanged object: its original text, verbatim.
Otherwise the DDL is rendered from the model with types, defaults and
expressions transpiled by sqlglot and a few fix-ups sqlglot leaves to us:
SQLite's INTEGER is 64-bit (BIGINT in PostgreSQL), SQLite booleans are 0/1
(FALSE/TRUE defaults), AUTOINCREMENT <-> identity, and SQLite wants
non-literal defaults in parentheses.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp

from .schema import Column, ForeignKey, Index, Table, Trigger, View, quote

_PG_BY_FAMILY = {"integer": "BIGINT", "boolean": "BOOLEAN", "real": "DOUBLE PRECISION",
                 "numeric": "NUMERIC", "text": "TEXT", "blob": "BYTEA", "date": "DATE",
                 "time": "TIME", "timestamp": "TIMESTAMP", "any": "TEXT"}
_SQLITE_BY_FAMILY = {"integer": "INTEGER", "boolean": "BOOLEAN", "real": "REAL", "numeric": "NUMERIC",
                     "text": "TEXT", "blob": "BLOB", "date": "DATE", "time": "TIME",
                     "timestamp": "TIMESTAMP", "any": ""}


# A type name as it may go into DDL: words or quoted identifiers (schema-qualified),
# with a size, and array brackets; nothing a statement could be smuggled through
# (SQLite keeps any declared type text, e.g. ``x); DROP TABLE y; --``).
_W = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"\x00]|"")+")'
_MOD = r'(?:\s*\(\s*-?\d+\s*(?:,\s*-?\d+\s*)?\))'
_SAFE_TYPE = re.compile(rf'{_W}{_MOD}?(?:(?:\s+|\s*\.\s*){_W}{_MOD}?)*(?:\s*\[\s*\d*\s*\])*')


def render_type(c: Column, src: str, dst: str) -> str:
    """The column's type in ``dst``'s DDL; a type that is not a plain type
    name falls back to its family's type."""
    t = _render_type(c, src, dst)
    if t and not _SAFE_TYPE.fullmatch(t):
        by = _PG_BY_FAMILY if dst == "postgres" else _SQLITE_BY_FAMILY
        return by.get(c.family, "TEXT" if dst == "postgres" else "")
    return t


def _render_type(c: Column, src: str, dst: str) -> str:
    if src == dst:
        return c.type or ("TEXT" if dst == "postgres" else "")
    fam = c.family
    if dst == "postgres":
        if fam in ("integer", "boolean", "real", "blob", "any"):
            if fam == "integer" and src != "sqlite":
                return _transpile_type(c.type, src, dst) or "BIGINT"
            return _PG_BY_FAMILY[fam]
        t = _transpile_type(c.type, src, dst)
        return t or _PG_BY_FAMILY[fam]
    if dst == "sqlite":
        if fam == "integer":
            return "INTEGER"
        if fam in ("text", "numeric"):
            return _transpile_type(c.type, src, dst) or _SQLITE_BY_FAMILY[fam]
        return _SQLITE_BY_FAMILY[fam]
    return _transpile_type(c.type, src, dst) or c.type


def _transpile_type(t: str, src: str, dst: str) -> str | None:
    if not t:
        return None
    try:
        return exp.DataType.build(t, dialect=src).sql(dialect=dst)
    except Exception:  # noqa: BLE001 - an unknown type falls back to its family
        return None


_LITERAL = re.compile(r"^(?:-?\d+(?:\.\d+)?|'(?:[^']|'')*'|NULL|TRUE|FALSE|CURRENT_TIMESTAMP|"
                      r"CURRENT_DATE|CURRENT_TIME)$", re.I)


def render_default(c: Column, src: str, dst: str) -> str | None:
    d = c.default
    if d is None:
        return None
    if src == dst:
        return d
    if "nextval" in d.lower():
        return None
    if dst == "postgres" and c.family == "boolean" and d.strip().strip("'") in ("0", "1"):
        return "TRUE" if d.strip().strip("'") == "1" else "FALSE"
    if dst == "sqlite" and c.family == "boolean" and d.strip().upper() in ("TRUE", "FALSE"):
        return "1" if d.strip().upper() == "TRUE" else "0"
    tree = _one(d, src)
    if tree is None:  # an untranslatable default is dropped (and reported)
        return None
    try:
        out = tree.sql(dialect=dst)
    except Exception:  # noqa: BLE001
        return None
    if dst == "sqlite" and not _LITERAL.match(out.strip()):
        out = f"({out})"
    return out


def _one(text: str, src: str) -> exp.Expr | None:
    """``text`` parsed as exactly one statement or expression, or None.
    sqlglot keeps what it cannot parse as a raw ``Command`` (and parses
    ``a; DROP TABLE t`` as two statements): text from a source database
    never reaches another dialect's DDL that way."""
    try:
        trees = [t for t in sqlglot.parse(text, read=src) if t is not None]
    except Exception:  # noqa: BLE001
        return None
    if len(trees) != 1 or isinstance(trees[0], exp.Command) or trees[0].find(exp.Command):
        return None
    return trees[0]


def _expr(text: str, src: str, dst: str) -> str | None:
    if src == dst:
        return text
    tree = _one(text, src)
    try:
        return tree.sql(dialect=dst) if tree is not None else None
    except Exception:  # noqa: BLE001
        return None


def table_ddl(t: Table, schema_dialect: str, dst: str, with_fks: bool = True,
              with_keys: bool = True) -> str:
    src = t.dialect or schema_dialect
    if t.sql and src == dst and dst == "sqlite":
        return t.sql
    pk = t.pk
    inline_pk = None
    lines = []
    for c in t.columns:
        typ = render_type(c, src, dst)
        parts = [quote(c.name)]
        if dst == "sqlite" and len(pk) == 1 and c.name == pk[0] and c.family == "integer" \
                and (c.autoincrement or (c.type or "").upper() in ("INTEGER", "INT", "BIGINT", "SERIAL")):
            parts.append("INTEGER PRIMARY KEY" + (" AUTOINCREMENT" if c.autoincrement else ""))
            inline_pk = c.name
        elif dst == "postgres" and c.autoincrement:
            parts.append(("BIGINT" if src == "sqlite" or "BIG" in typ.upper() or "SERIAL" in typ.upper()
                          else "INTEGER") + " GENERATED BY DEFAULT AS IDENTITY")
        else:
            if dst == "postgres" and typ.upper() in ("SERIAL", "BIGSERIAL"):
                typ = "BIGINT" if typ.upper() == "BIGSERIAL" else "INTEGER"
            if typ:
                parts.append(typ)
            if c.notnull:
                parts.append("NOT NULL")
            d = render_default(c, src, dst)
            if d is not None:
                parts.append(f"DEFAULT {d}")
        lines.append(" ".join(parts))
    if with_keys:
        lines.extend(key_clauses(t, skip_pk=inline_pk is not None))
    if with_fks:
        lines.extend(fk_clause(fk) for fk in t.fks)
    for chk in t.checks:
        e = _expr(chk, src, dst)
        if e:
            lines.append(f"CHECK ({e})")
    tail = " WITHOUT ROWID" if dst == "sqlite" and t.without_rowid else ""
    return f"CREATE TABLE {quote(t.name)} (\n  " + ",\n  ".join(lines) + f"\n){tail}"


def key_clauses(t: Table, skip_pk: bool = False) -> list[str]:
    out = []
    if t.pk and not skip_pk:
        out.append(f"PRIMARY KEY ({', '.join(quote(c) for c in t.pk)})")
    for u in t.uniques:
        out.append(f"UNIQUE ({', '.join(quote(c) for c in u)})")
    return out


def fk_clause(fk: ForeignKey) -> str:
    s = (f"FOREIGN KEY ({', '.join(quote(c) for c in fk.columns)}) REFERENCES {quote(fk.ref_table)}"
         + (f" ({', '.join(quote(c) for c in fk.ref_columns)})" if fk.ref_columns else ""))
    if fk.on_delete:
        s += f" ON DELETE {fk.on_delete}"
    if fk.on_update:
        s += f" ON UPDATE {fk.on_update}"
    return s


def index_ddl(ix: Index, schema_dialect: str, dst: str) -> str | None:
    src = ix.dialect or schema_dialect
    if ix.sql and src == dst:
        return ix.sql
    if any(c == "<expr>" for c in ix.columns):
        return _unqualified(ix.sql, src, dst) if ix.sql else None
    s = (f"CREATE {'UNIQUE ' if ix.unique else ''}INDEX {quote(ix.name)} ON {quote(ix.table)} "
         f"({', '.join(quote(c) for c in ix.columns)})")
    if ix.where:
        w = _expr(ix.where, src, dst)
        if w is None:
            return None
        s += f" WHERE {w}"
    return s


def _unqualified(sql: str, src: str, dst: str) -> str | None:
    """Transpile a statement, dropping schema qualifiers (public.t -> t)."""
    tree = _one(sql, src)
    if tree is None:
        return None
    try:
        for t in tree.find_all(exp.Table):
            t.set("db", None)
            t.set("catalog", None)
        return tree.sql(dialect=dst)
    except Exception:  # noqa: BLE001
        return None


def view_ddl(v: View, schema_dialect: str, dst: str) -> str | None:
    src = v.dialect or schema_dialect
    return v.sql if src == dst else _unqualified(v.sql, src, dst)


def trigger_ddl(t: Trigger, schema_dialect: str, dst: str) -> str | None:
    src = t.dialect or schema_dialect
    return t.sql if src == dst else None  # trigger bodies are not transpiled
