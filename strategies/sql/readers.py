"""Read a schema (and, for dumps, the rows) from where it lives.

``read_schema`` accepts a SQLite file, a ``.sql`` file of any dialect sqlglot
reads, or a ``postgresql://`` URL.  ``stage_dump`` streams a dump into a
scratch SQLite file (the "staging" database) so that every later step — row
counts, the mapping, the replay, the verification — is the same set-based
SQL whatever the dump's dialect.  Rows are executed by SQLite's own parser
(or, for COPY blocks, split in Python); sqlglot sees only DDL and the odd
INSERT that SQLite cannot read as written.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from volmerge.strategies.errors import BadInput

from . import inserts
from .dumpstream import Statement, iter_statements, open_text, sniff_dialect
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
    quote,
)

SQLITE_MAGIC = b"SQLite format 3\x00"


def kind_of(src: str) -> str:
    """'postgres', 'sqlite' or 'dump' for a source/destination spec."""
    if src.startswith(("postgresql://", "postgres://")):
        return "postgres"
    if src.endswith(".sql") or src.endswith(".dump"):
        return "dump"
    try:
        with open(src, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        raise BadInput(f"{src}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{src}: is a directory, not a database") from None
    if head == SQLITE_MAGIC:
        return "sqlite"
    if head == b"" and os.path.getsize(src) == 0:
        return "sqlite"  # an empty file is an empty SQLite database
    raise BadInput(f"{src}: not a database (neither a SQLite file, a .sql dump nor a postgresql:// URL)")


def read_schema(src: str, dialect: str | None = None, frozen: bool = False) -> Schema:
    """The schema model of ``src`` (SQLite file, .sql file, postgresql:// URL).
    ``frozen``: the file cannot change and may sit on a read-only mount (see
    :func:`ro_uri`)."""
    kind = kind_of(src)
    if kind == "postgres":
        from .pg import read_pg

        return read_pg(src)
    if kind == "sqlite":
        if frozen and has_sidecar(src):
            import tempfile

            with tempfile.TemporaryDirectory(prefix="volmerge-sql-") as wd:
                return read_sqlite(recovered_copy(src, wd), frozen=True)
        return read_sqlite(src, frozen=frozen)
    schema, _ = stage_dump(src, dialect=dialect, staging=None)
    return schema


def ro_uri(path: str, frozen: bool = False) -> str:
    """The URI that opens an input database read-only.

    ``frozen`` (a snapshot, a layer of an image, a file under /proc/self/fd/N/):
    ``immutable=1`` as well, so SQLite takes no locks and never creates a
    -journal, -wal or -shm file beside it (the directory may be a read-only
    overlay mount).  A frozen file with a WAL or a hot journal beside it is
    first recovered into a private copy (:func:`recovered_copy`): read as
    immutable, those committed (or half-written) pages would be ignored.
    Otherwise (a live database) ``mode=ro`` alone: SQLite's locks give one
    consistent snapshot while the application keeps running."""
    from urllib.parse import quote as q

    uri = f"file:{q(os.path.abspath(path))}?mode=ro"
    return uri + "&immutable=1" if frozen else uri


def has_sidecar(path: str) -> bool:
    """A non-empty -wal or -journal beside ``path``: pages that are not in the file itself."""
    for ext in ("-wal", "-journal"):
        try:
            if os.path.getsize(path + ext) > 0:
                return True
        except OSError:
            pass
    return False


def recovered_copy(path: str, workdir: str) -> str:
    """Copy ``path`` and its -wal/-journal into ``workdir`` and let SQLite
    recover the copy there (checkpoint the WAL, roll back a hot journal): the
    database as a reader would see it, in one file, without writing beside the
    original."""
    import shutil
    import uuid

    d = os.path.join(workdir, f"recovered-{uuid.uuid4().hex[:8]}")
    os.mkdir(d)
    copy = os.path.join(d, os.path.basename(path) or "db")
    shutil.copyfile(path, copy)
    for ext in ("-wal", "-journal"):
        if os.path.exists(path + ext):
            shutil.copyfile(path + ext, copy + ext)
    try:
        conn = sqlite3.connect(copy, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            conn.execute("PRAGMA journal_mode=DELETE").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise BadInput(f"{path}: not a database ({e})") from None
    return copy


def connect_ro(path: str, frozen: bool = False) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(ro_uri(path, frozen), uri=True,
                               isolation_level=None, check_same_thread=False)
    except sqlite3.DatabaseError as e:
        raise BadInput(f"{path}: not a database ({e})") from None
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as e:
        conn.close()
        raise BadInput(f"{path}: not a database ({e})") from None
    return conn


def read_sqlite(path: str, conn: sqlite3.Connection | None = None, prefix: str = "",
                frozen: bool = False) -> Schema:
    """Model of a SQLite database, from its catalog (PRAGMAs are authoritative
    for types, keys and defaults; the original CREATE text is kept)."""
    own = conn is None
    if conn is None:
        kind_of(path)
        conn = connect_ro(path, frozen)
    p = f"{prefix}." if prefix else ""
    try:
        return _read_sqlite(conn, p, path)
    except sqlite3.DatabaseError as e:
        raise BadInput(f"{path}: not a database ({e})") from None
    finally:
        if own:
            conn.close()


def _read_sqlite(conn: sqlite3.Connection, p: str, path: str) -> Schema:
    s = Schema(dialect="sqlite", source=path)
    rows = conn.execute(f"SELECT type, name, tbl_name, sql FROM {p}sqlite_master "
                        f"WHERE name NOT LIKE 'sqlite_%' ORDER BY rowid").fetchall()
    for type_, name, tbl, sql in rows:
        if type_ == "table":
            if sql and re.match(r"^\s*CREATE\s+VIRTUAL\b", sql, re.I):
                raise BadInput(f"{path}: virtual table {name} is not supported")
            t = Table(name=name, sql=sql, without_rowid=is_without_rowid(sql))
            autoinc = has_autoincrement(sql)
            for _cid, cname, ctype, notnull, dflt, pk, hidden in conn.execute(
                    f"PRAGMA {p}table_xinfo({quote(name)})"):
                if hidden:
                    continue
                t.columns.append(Column(cname, ctype or "", bool(notnull), dflt, pk))
            pkc = [c for c in t.columns if c.pk]
            if len(pkc) == 1 and autoinc:
                pkc[0].autoincrement = True
            fks: dict[int, ForeignKey] = {}
            for fid, _seq, rt, frm, to, on_upd, on_del, _m in conn.execute(
                    f"PRAGMA {p}foreign_key_list({quote(name)})"):
                fk = fks.setdefault(fid, ForeignKey([], rt, [],
                                                    None if on_del == "NO ACTION" else on_del,
                                                    None if on_upd == "NO ACTION" else on_upd))
                fk.columns.append(frm)
                if to is not None:
                    fk.ref_columns.append(to)
            t.fks = [fks[k] for k in sorted(fks)]
            for _seq, iname, _unique, origin, _partial in conn.execute(
                    f"PRAGMA {p}index_list({quote(name)})"):
                if origin == "u":
                    t.uniques.append([r[2] for r in conn.execute(f"PRAGMA {p}index_info({quote(iname)})")])
            s.tables[name] = t
        elif type_ == "index" and sql:
            cols = [r[2] if r[2] is not None else "<expr>"
                    for r in conn.execute(f"PRAGMA {p}index_info({quote(name)})")]
            where = re.search(r"\bWHERE\b(.*)$", sql, re.I | re.S)
            s.indexes[name] = Index(name, tbl, cols, bool(re.match(r"\s*CREATE\s+UNIQUE", sql, re.I)),
                                    where.group(1).strip() if where else None, sql)
        elif type_ == "view":
            s.views[name] = View(name, sql)
        elif type_ == "trigger":
            s.triggers[name] = Trigger(name, tbl, sql)
    try:
        for name, seq in conn.execute(f"SELECT name, seq FROM {p}sqlite_sequence"):
            s.sequences[name] = int(seq)
    except sqlite3.OperationalError:
        pass
    for name in SETTINGS:
        s.settings[name] = int(conn.execute(f"PRAGMA {p}{name}").fetchone()[0])
    return s


# ---------------------------------------------------------------------------
# dumps

def staging_type(col: Column) -> str:
    """Declared type of a staging column: only its affinity matters."""
    return {"integer": "INTEGER", "boolean": "INTEGER", "real": "REAL", "numeric": "NUMERIC",
            "blob": "BLOB", "any": ""}.get(col.family, "TEXT")


def stage_dump(path: str, dialect: str | None = None, staging: str | None = None,
               progress=None) -> tuple[Schema, str | None]:
    """Stream the dump at ``path``: build its schema model and, when
    ``staging`` names a (new) SQLite file, load its rows there.  Returns
    (schema, staging path).  Raises BadInput naming the line of a malformed
    or unsupported statement."""
    from . import ddl

    try:
        f = open_text(path)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory, not a dump") from None
    with f:
        head = f.read(65536)
        if "\x00" in head:
            raise BadInput(f"{path}: not a database (binary file, not a SQL dump)")
        f.seek(0)
        dialect = dialect or sniff_dialect(head)
        schema = Schema(dialect=dialect, source=path)
        conn = None
        if staging is not None:
            conn = sqlite3.connect(staging, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            conn.set_authorizer(inserts.authorize)  # a dump is data: see inserts.py
            conn.execute("BEGIN")
        created: dict[str, Table] = {}
        check = sqlite3.connect(":memory:")  # SQLite's own parser has the last word on SQLite DDL
        try:
            for st in iter_statements(f, dialect):
                kind = ddl.classify(st)
                if kind == "ignore":
                    continue
                if kind == "sequence":
                    ddl.apply_sequence(schema, st)
                elif kind == "setting":
                    ddl.apply_setting(schema, st)
                elif kind == "ddl":
                    ddl.apply_ddl(schema, st, dialect)
                    if dialect == "sqlite":
                        _check_sqlite_ddl(check, st)
                elif kind == "unsupported":
                    raise BadInput(f"unsupported statement at line {st.line}: {st.head}")
                elif conn is None:
                    continue  # schema only: rows are skipped (COPY blocks drained lazily)
                elif kind == "insert":
                    _stage_insert(conn, schema, created, st, dialect)
                elif kind == "copy":
                    _stage_copy(conn, schema, created, st)
            for key, value in list(schema.sequences.items()):
                if key.startswith("seq:"):
                    del schema.sequences[key]
                    table = schema.seq_tables.get(key[4:])
                    if table:
                        schema.sequences[table] = value
            if conn is not None:
                for t in schema.tables.values():
                    _ensure_staged(conn, created, t)
                conn.execute("COMMIT")
        finally:
            check.close()
            if conn is not None:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.close()
    return schema, staging


def _check_sqlite_ddl(check: sqlite3.Connection, st: Statement) -> None:
    try:
        check.execute(st.text)
    except sqlite3.Error as e:
        raise BadInput(f"schema does not parse at line {st.line}: {st.head}: {e}") from None


def _ensure_staged(conn: sqlite3.Connection, created: dict[str, Table], t: Table) -> None:
    if t.name in created:
        return
    if not t.columns:
        raise BadInput(f"schema: table {t.name} has no columns")
    cols = ", ".join(f"{quote(c.name)} {staging_type(c)}" for c in t.columns)
    conn.execute(f"CREATE TABLE {quote(t.name)} ({cols})")
    created[t.name] = t


def _staged_table(conn: sqlite3.Connection, schema: Schema, created: dict[str, Table], name: str,
                  st: Statement) -> Table:
    t = schema.table(name)
    if t is None:
        raise BadInput(f"malformed dump: line {st.line}: rows for table {name} which the dump never creates")
    _ensure_staged(conn, created, t)
    return t


_MYSQL_STRING = re.compile(r"'((?:[^'\\]|\\.|'')*)'|`((?:[^`]|``)*)`", re.S)
_MYSQL_ESC = {"0": "\x00", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "Z": "\x1a"}


def _mysql_literal(m: re.Match[str]) -> str:
    """A MySQL string literal as a standard one, a `name` as a "name"."""
    if m.group(1) is None:
        return quote(m.group(2).replace("``", "`"))
    body = m.group(1)
    if "\\" in body:
        body = re.sub(r"\\(.)|''", _mysql_unescape, body, flags=re.S).replace("'", "''")
    return "'" + body + "'"


def _mysql_unescape(e: re.Match[str]) -> str:
    ch = e.group(1)
    return "'" if ch is None else _MYSQL_ESC.get(ch, ch)


def _stage_insert(conn: sqlite3.Connection, schema: Schema, created: dict[str, Table],
                  st: Statement, dialect: str) -> None:
    text = st.text
    if dialect == "mysql":
        text = _MYSQL_STRING.sub(_mysql_literal, text)
    ins = inserts.check(text, st.line)  # plain INSERT ... VALUES of literals, or BadInput
    t = _staged_table(conn, schema, created, ins.table, st)
    text = f"{ins.verb} {quote(t.name)}{ins.columns} {ins.body}"
    try:
        conn.execute(text)
        return
    except sqlite3.Error as first:
        if dialect == "sqlite" or "not authorized" in str(first):
            raise BadInput(f"malformed dump: line {st.line}: {st.head}: {first}") from None
    import sqlglot

    try:
        rewritten = sqlglot.transpile(text, read=dialect, write="sqlite")[0]
        conn.execute(rewritten)
    except Exception as e:  # noqa: BLE001 - any failure here is a malformed statement
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise BadInput(f"malformed dump: line {st.line}: {st.head}: {msg}") from None


_PG_ESC = re.compile(r"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))")
_PG_ESC_MAP = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _pg_unescape(field: str) -> str:
    def rep(m: re.Match[str]) -> str:
        if m.group(1):
            return chr(int(m.group(1), 8))
        if m.group(2):
            return chr(int(m.group(2), 16))
        return _PG_ESC_MAP.get(m.group(3), m.group(3))

    return _PG_ESC.sub(rep, field)


def _copy_converters(t: Table, cols: list[str]) -> list[Callable[[Any], object] | None]:
    conv: list[Callable[[Any], object] | None] = []
    for name in cols:
        c = t.col(name)
        fam = c.family if c else "text"
        if fam == "boolean":
            conv.append(lambda v: None if v is None else (1 if v in ("t", "true", "1") else 0))
        elif fam == "blob":
            conv.append(lambda v: None if v is None else
                        (bytes.fromhex(v[2:]) if v.startswith("\\x") else v.encode("latin-1", "replace")))
        else:
            conv.append(None)
    return conv


def _stage_copy(conn: sqlite3.Connection, schema: Schema, created: dict[str, Table],
                st: Statement) -> None:
    from .ddl import copy_target

    name, cols = copy_target(st)
    t = _staged_table(conn, schema, created, name, st)
    cols = cols or t.names
    for c in cols:
        if t.col(c) is None:
            raise BadInput(f"malformed dump: line {st.line}: COPY names unknown column {name}.{c}")
    n = len(cols)
    conv = _copy_converters(t, cols)
    needs_conv = any(conv)
    first_data_line = st.line + 1

    def rows() -> Iterator[list[object]]:
        for i, line in enumerate(st.copy_lines or ()):
            text = line.split("\t")
            if len(text) != n:
                raise BadInput(f"malformed dump: COPY data for {name} near line {first_data_line + i}: "
                               f"{len(text)} fields, expected {n}")
            fields: list[object] = [None if v == "\\N" else _pg_unescape(v) if "\\" in v else v
                                    for v in text]
            if needs_conv:
                for j, fn in enumerate(conv):
                    if fn is not None:
                        fields[j] = fn(fields[j])
            yield fields

    sql = (f"INSERT INTO {quote(t.name)} ({', '.join(quote(c) for c in cols)}) "
           f"VALUES ({', '.join('?' * n)})")
    conn.executemany(sql, rows())
