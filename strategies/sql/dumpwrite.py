"""Replay into a plain .sql dump file (SQLite or PostgreSQL dialect).

The rows are first replayed and verified into a scratch SQLite file beside
the destination; the dump is then streamed out of it (the statements
SQLite stored plus one ``INSERT … VALUES`` per row for the SQLite dialect;
DDL plus COPY blocks for PostgreSQL) and renamed into place.

A dump is data: it is fed to ``sqlite3`` or ``psql``, which also run shell
commands (``.system``, ``\\!``), so every name and value goes through
:mod:`.quote` (Python's ``iterdump`` pastes table names into SQL text
unescaped and writes newlines raw: not used).
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from typing import TYPE_CHECKING, Any

from volmerge.runtime.atomicfile import AtomicFile
from volmerge.strategies.errors import BadInput, NotDone

from . import render
from .pgops import copy_field
from .quote import ident, pg_literal, pg_regclass, shell_safe, sqlite_text
from .replaytypes import Progress
from .schema import quote

if TYPE_CHECKING:
    from .plan import ReplayPlan


def replay_dump(plan: ReplayPlan, dst: str, dialect: str = "sqlite",
                progress: Progress | None = None) -> dict[str, Any]:
    """Replay ``plan`` into a new dump file ``dst`` of ``dialect`` (sqlite or postgres)."""
    from .replay_sqlite import replay_sqlite

    if dialect not in ("sqlite", "postgres"):
        raise BadInput(f"unknown dump dialect {dialect!r} (sqlite or postgres)")
    dst = os.path.abspath(dst)
    if os.path.lexists(dst):
        raise BadInput(f"{dst}: already exists (the replay writes a new dump)")
    d = os.path.dirname(dst)
    tag = uuid.uuid4().hex[:8]
    scratch = os.path.join(d, f".{os.path.basename(dst)}.volmerge-{tag}.db")
    try:
        result = replay_sqlite(plan, scratch, progress)
        conn = sqlite3.connect(scratch)
        try:
            # a name the user gave, maybe in a directory others write: private
            with AtomicFile(dst, None, private=True) as f:
                if dialect == "sqlite":
                    _sqlite_dump(conn, plan.target.settings, f)
                else:
                    _pg_dump(conn, plan, f)
        finally:
            conn.close()
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
    result["dst"] = dst
    return result


def _sqlite_value(col: str) -> str:
    """SQL giving the literal of column ``col``'s value, in SQLite (C speed):
    ``quote()``, except for text with a newline, CR or NUL (written as
    ``'a'||char(10)||'b'`` by :func:`sqlite_text`: no raw newline in a dump,
    no NUL cut off) and infinities (``quote()`` gives ``Inf``)."""
    return (f"CASE typeof({col}) WHEN 'text' THEN iif(instr({col}, char(10)) "
            f"OR instr({col}, char(13)) OR instr({col}, char(0)), vm_lit({col}), quote({col})) "
            f"WHEN 'real' THEN iif(abs({col}) = 9e999, iif({col} > 0, '9e999', '-9e999'), "
            f"quote({col})) ELSE quote({col}) END")


def _sqlite_dump(conn: sqlite3.Connection, settings: dict[str, int], f: Any) -> None:
    """The scratch database as a SQLite dump the sqlite3 shell reads back
    into the same tables and rows, and nothing else (see :mod:`.quote`)."""
    conn.create_function("vm_lit", 1, sqlite_text, deterministic=True)
    # the database settings first: page_size and auto_vacuum only apply before the first table
    for name in ("page_size", "auto_vacuum", "user_version", "application_id"):
        if name in settings:
            f.write(f"PRAGMA {name} = {int(settings[name])};\n")
    f.write("PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n")
    objects = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                           "ORDER BY rowid").fetchall()
    sequence = False
    for type_, name, sql in objects:
        if type_ != "table":
            continue
        if name.startswith("sqlite_"):
            sequence = sequence or name == "sqlite_sequence"
            continue
        f.write(shell_safe(sql) + ";\n")
        _sqlite_rows(conn, name, f)
    if sequence:  # after the tables: the first AUTOINCREMENT table creates it
        f.write('DELETE FROM "sqlite_sequence";\n')
        _sqlite_rows(conn, "sqlite_sequence", f)
    for type_, _name, sql in objects:
        if type_ in ("index", "trigger", "view"):
            f.write(shell_safe(sql) + ";\n")
    f.write("COMMIT;\n")


def _sqlite_rows(conn: sqlite3.Connection, table: str, f: Any) -> None:
    cols = [r[1] for r in conn.execute(f"PRAGMA table_info({ident(table)})")]
    if not cols:
        return
    head = shell_safe(f"INSERT INTO {ident(table)} VALUES(")
    values = " || ',' || ".join(_sqlite_value(ident(c)) for c in cols)
    for (text,) in conn.execute(f"SELECT {values} FROM {ident(table)}"):
        f.write(head + text + ");\n")


def _pg_dump(conn: sqlite3.Connection, plan: ReplayPlan, f: Any) -> None:
    conn.create_function("vm_real", 1, repr, deterministic=True)
    target = plan.target
    f.write("-- volmerge sql replay: PostgreSQL dialect\nSET client_encoding = 'UTF8';\n"
            "SET standard_conforming_strings = on;\nBEGIN;\n")
    for t in target.tables.values():
        f.write(render.table_ddl(t, target.dialect, "postgres", with_fks=False, with_keys=False) + ";\n")
    for t in target.tables.values():
        cols = [c.name for c in t.columns]
        f.write(f"COPY {quote(t.name)} ({', '.join(quote(c) for c in cols)}) FROM stdin;\n")
        line = " || char(9) || ".join(copy_field(quote(c)) for c in cols)
        for (text,) in conn.execute(f"SELECT {line} FROM {quote(t.name)}"):
            if "\x00" in text:  # psql would cut the line there
                raise NotDone(f"table {t.name}: a text value holds a NUL character, "
                              f"which PostgreSQL text cannot hold")
            f.write(text + "\n")
        f.write("\\.\n")
        for c in t.columns:
            if c.autoincrement:
                seq = f"pg_get_serial_sequence({pg_regclass(t.name)}, {pg_literal(c.name)})"
                f.write(f"SELECT setval({seq}, "
                        f"(SELECT coalesce(max({quote(c.name)}), 1) FROM {quote(t.name)}));\n")
    for t in target.tables.values():
        for clause in render.key_clauses(t):
            f.write(f"ALTER TABLE {quote(t.name)} ADD {clause};\n")
    for ix in target.indexes.values():
        ddl = render.index_ddl(ix, target.dialect, "postgres")
        if ddl:
            f.write(ddl + ";\n")
    for t in target.tables.values():
        for fk in t.fks:
            f.write(f"ALTER TABLE {quote(t.name)} ADD {render.fk_clause(fk)};\n")
    f.write("COMMIT;\n")
