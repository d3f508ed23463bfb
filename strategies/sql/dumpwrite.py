"""Replay into a plain .sql dump file (SQLite or PostgreSQL dialect).

The rows are first replayed and verified into a scratch SQLite file beside
the destination; the dump is then streamed out of it (SQLite's own
``iterdump`` for the SQLite dialect; DDL plus COPY blocks for PostgreSQL)
and renamed into place.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from typing import Any

from strategies.errors import BadInput

from . import render
from .schema import quote


def replay_dump(plan: Any, dst: str, progress: Any = None) -> dict[str, Any]:
    from .replay_sqlite import replay_sqlite

    dst = os.path.abspath(dst)
    if os.path.lexists(dst):
        raise BadInput(f"{dst}: already exists (the replay writes a new dump)")
    d = os.path.dirname(dst)
    tag = uuid.uuid4().hex[:8]
    scratch = os.path.join(d, f".{os.path.basename(dst)}.volmerge-{tag}.db")
    tmp = os.path.join(d, f".{os.path.basename(dst)}.volmerge-{tag}.tmp")
    dialect = plan.to_dialect if plan.to_dialect in ("sqlite", "postgres") else "sqlite"
    try:
        plan.to_dialect = "sqlite"
        result = replay_sqlite(plan, scratch, progress)
        conn = sqlite3.connect(scratch)
        try:
            with open(tmp, "x", encoding="utf-8") as f:
                if dialect == "sqlite":
                    # the database settings first: page_size and auto_vacuum
                    # only apply before the first table
                    for name in ("page_size", "auto_vacuum", "user_version", "application_id"):
                        if name in plan.target.settings:
                            f.write(f"PRAGMA {name} = {int(plan.target.settings[name])};\n")
                    for line in conn.iterdump():
                        f.write(line + "\n")
                else:
                    _pg_dump(conn, plan, f)
                f.flush()
                os.fsync(f.fileno())
        finally:
            conn.close()
        os.rename(tmp, dst)
    finally:
        for p in (scratch, tmp):
            if os.path.exists(p):
                os.unlink(p)
    result["dst"] = dst
    return result


def _pg_dump(conn: sqlite3.Connection, plan: Any, f: Any) -> None:
    from .replay_pg import _fmt

    conn.create_function("vm_real", 1, repr, deterministic=True)
    target = plan.target
    f.write("-- volmerge sql replay: PostgreSQL dialect\nSET client_encoding = 'UTF8';\nBEGIN;\n")
    for t in target.tables.values():
        f.write(render.table_ddl(t, target.dialect, "postgres", with_fks=False, with_keys=False) + ";\n")
    for t in target.tables.values():
        cols = [c.name for c in t.columns]
        f.write(f"COPY {quote(t.name)} ({', '.join(quote(c) for c in cols)}) FROM stdin;\n")
        line = " || char(9) || ".join(_fmt(quote(c)) for c in cols)
        for (text,) in conn.execute(f"SELECT {line} FROM {quote(t.name)}"):
            f.write(text + "\n")
        f.write("\\.\n")
        for c in t.columns:
            if c.autoincrement:
                f.write(f"SELECT setval(pg_get_serial_sequence('{quote(t.name)}', '{c.name}'), "
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
