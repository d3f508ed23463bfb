"""PostgreSQL: the catalog reader and row transfer helpers (psycopg 3).

The model is read from pg_catalog of the connection's current schema.  PG
functions and triggers are not part of the model (a new version's own
migration creates them); views, indexes, keys, checks and sequence values
are.
"""

from __future__ import annotations

import datetime
import decimal
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

from volmerge.strategies.errors import BadInput

from .schema import Column, ForeignKey, Index, Schema, Table, View, quote

_FK_ACTION = {"a": None, "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


def pg_connect(url: str, autocommit: bool = False, dbname: str | None = None):
    import psycopg

    try:
        kw: dict[str, Any] = {"dbname": dbname} if dbname else {}
        return psycopg.connect(url, autocommit=autocommit, **kw)
    except psycopg.OperationalError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "connection failed"
        raise BadInput(f"{redact(url)}: cannot connect: {first}") from None
    except psycopg.ProgrammingError as e:
        raise BadInput(f"{redact(url)}: not a PostgreSQL URL ({e})") from None


def redact(url: str) -> str:
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", url)


def read_pg(url: str, conn: Any = None) -> Schema:
    own = conn is None
    if conn is None:
        conn = pg_connect(url)
    try:
        return _read(conn, url)
    finally:
        if own:
            conn.close()


def _read(conn: Any, url: str) -> Schema:
    s = Schema(dialect="postgres", source=redact(url))
    cur = conn.cursor()
    tables = cur.execute(
        "SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') ORDER BY c.oid").fetchall()
    for oid, name in tables:
        t = Table(name=name)
        names: dict[int, str] = {}
        for attnum, att, typ, notnull, dflt, ident in cur.execute(
                "SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                "pg_get_expr(d.adbin, d.adrelid), a.attidentity FROM pg_attribute a "
                "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                (oid,)).fetchall():
            names[attnum] = att
            c = Column(att, typ, bool(notnull), dflt)
            if ident or (dflt and "nextval(" in dflt):
                c.autoincrement = True
                c.default = None
            t.columns.append(c)
        for contype, conkey, confrel, confkey, deltype, updtype, condef in cur.execute(
                "SELECT contype, conkey, (SELECT relname FROM pg_class WHERE oid = confrelid), "
                "(SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(confkey) WITH ORDINALITY k(n, i) "
                " JOIN pg_attribute a ON a.attrelid = confrelid AND a.attnum = k.n), "
                "confdeltype, confupdtype, pg_get_constraintdef(oid) "
                "FROM pg_constraint WHERE conrelid = %s ORDER BY oid", (oid,)).fetchall():
            cols = [names[k] for k in (conkey or [])]
            if contype == "p":
                for i, cname in enumerate(cols, 1):
                    if (col := t.col(cname)) is not None:  # always: a column of t
                        col.pk = i
            elif contype == "u":
                t.uniques.append(cols)
            elif contype == "f":
                # confrel: the table's name (a regclass text would be quoted, maybe qualified)
                t.fks.append(ForeignKey(cols, confrel, list(confkey or []),
                                        _FK_ACTION.get(deltype), _FK_ACTION.get(updtype)))
            elif contype == "c":
                t.checks.append(re.sub(r"^CHECK\s*\((.*)\)$", r"\1", condef, flags=re.S))
        s.tables[name] = t
        for iname, unique, cols, pred, idef in cur.execute(
                "SELECT i.relname, x.indisunique, "
                "(SELECT array_agg(CASE WHEN k.n = 0 THEN NULL ELSE a.attname END ORDER BY k.i) "
                " FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(n, i) "
                " LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n), "
                "pg_get_expr(x.indpred, x.indrelid), pg_get_indexdef(x.indexrelid) "
                "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = %s "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid) "
                "ORDER BY x.indexrelid", (oid,)).fetchall():
            if cols and all(c is not None for c in cols):
                s.indexes[iname] = Index(iname, name, list(cols), bool(unique), pred, None)
            else:
                sql = re.sub(r"\bON\s+(?:ONLY\s+)?\S+\.", "ON ", idef, count=1)
                s.indexes[iname] = Index(iname, name, ["<expr>"], bool(unique), pred, sql)
        for c in t.columns:
            if c.autoincrement:
                row = cur.execute("SELECT pg_get_serial_sequence(%s, %s)",
                                  (quote(name), c.name)).fetchone()
                if row and row[0]:
                    last, called = cur.execute(f"SELECT last_value, is_called FROM {row[0]}").fetchone()
                    s.sequences[name] = int(last) if called else int(last) - 1
    for vname, vdef in cur.execute("SELECT viewname, definition FROM pg_views "
                                   "WHERE schemaname = current_schema() ORDER BY viewname").fetchall():
        s.views[vname] = View(vname, f"CREATE VIEW {quote(vname)} AS {vdef.rstrip().rstrip(';')}")
    conn.rollback()
    return s


def to_sqlite_value(v: Any) -> Any:
    """A psycopg value -> what SQLite stores for it."""
    if v is None or isinstance(v, (int, float, str, bytes)):
        return v
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() and abs(v) < 2 ** 63 else float(v)
    if isinstance(v, datetime.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, (datetime.date, datetime.time, datetime.timedelta)):
        return v.isoformat() if not isinstance(v, datetime.timedelta) else str(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    if isinstance(v, (memoryview, bytearray)):
        return bytes(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    return str(v)


def _select(tm: Any) -> str:
    return (f"SELECT {', '.join(c.expr for c in tm.carried) or 'NULL'} "
            f"FROM {quote(tm.source)}")


def open_pg_source(url: str) -> Any:
    """A read-only connection to a PostgreSQL source in one repeatable-read
    transaction: every table and checksum read through it is one state."""
    conn = pg_connect(url)
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    return conn


def _src_rows(src: Any, tm: Any) -> Iterator[tuple[Any, ...]]:
    with src.cursor(name=f"vm_{abs(hash(tm.target))}") as cur:
        cur.itersize = 5000
        cur.execute(_select(tm))
        for row in cur:
            yield tuple(to_sqlite_value(v) for v in row)


def copy_pg_to_sqlite(src: Any, tm: Any, conn: Any) -> None:
    """Rows of a PostgreSQL source table (read on ``src``, from
    :func:`open_pg_source`) -> the SQLite destination."""
    import sqlite3

    from volmerge.strategies.errors import NotDone

    carried = tm.carried
    ins = (f"INSERT INTO main.{quote(tm.target)} ({', '.join(quote(c.target) for c in carried)}) "
           f"VALUES ({', '.join('?' * len(carried))})")
    try:
        conn.executemany(ins, _src_rows(src, tm))
    except sqlite3.IntegrityError as e:
        raise NotDone(f"constraint violation: table {tm.target}: {e}") from None


def pg_checksum_py(src: Any, tm: Any):
    from . import verify

    return verify.py_checksum(_src_rows(src, tm))
