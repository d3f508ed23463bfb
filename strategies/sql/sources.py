"""Where rows come from: a SQLite file, a staged dump, or a PostgreSQL database.

Every source is reduced to one of two engines: SQLite (a SQLite file, read
inside one read transaction so it is a consistent snapshot, or the staging
file a dump was streamed into) or PostgreSQL (a live database, read in one
REPEATABLE READ transaction).  The mapping expressions run in the source
engine, set-based.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from volmerge.strategies.errors import BadInput

from .readers import (
    connect_ro,
    has_sidecar,
    kind_of,
    read_sqlite,
    recovered_copy,
    ro_uri,
    stage_dump,
)
from .schema import Schema, quote


@dataclass
class Source:
    spec: str
    kind: str  # sqlite | dump | postgres
    engine: str  # sqlite | postgres
    schema: Schema
    path: str | None = None  # the SQLite file rows are read from (the original or the staging file)
    url: str | None = None
    frozen: bool = False  # the SQLite file cannot change: opened immutable (readers.ro_uri)
    _counts: dict[str, int] = field(default_factory=dict, repr=False)

    def count(self, table: str) -> int:
        if table not in self._counts:
            self._counts[table] = int(self.scalar(f"SELECT count(*) FROM {quote(table)}"))
        return self._counts[table]

    def count_all(self, tables: list[str]) -> None:
        """Count the rows of ``tables`` ahead (PostgreSQL: one connection,
        one statement, the tables scanned side by side when the server
        runs it in parallel), for :meth:`count`."""
        todo = [t for t in dict.fromkeys(tables) if t not in self._counts]
        if self.engine != "postgres" or len(todo) < 2:
            return
        from .pg import pg_connect

        sql = " UNION ALL ".join(f"SELECT {i}, count(*) FROM {quote(t)}" for i, t in enumerate(todo))
        with pg_connect(self.pg_url()) as conn:
            for i, n in conn.execute(sql).fetchall():
                self._counts[todo[i]] = int(n)

    def count_values(self, table: str, column: str) -> int:
        return int(self.scalar(f"SELECT count({quote(column)}) FROM {quote(table)}"))

    def pg_url(self) -> str:
        """The connection URL of this PostgreSQL source."""
        assert self.url is not None, f"{self.spec}: not a PostgreSQL source"
        return self.url

    def uri(self) -> str:
        """The read-only URI to ATTACH or open this SQLite source with."""
        assert self.path is not None
        return ro_uri(self.path, self.frozen)

    def scalar(self, sql: str) -> Any:
        if self.engine == "sqlite":
            assert self.path is not None
            conn = connect_ro(self.path, self.frozen)
            try:
                return conn.execute(sql).fetchone()[0]
            finally:
                conn.close()
        from .pg import pg_connect

        with pg_connect(self.pg_url()) as conn:
            return conn.execute(sql).fetchone()[0]


def open_source(spec: str, dialect: str | None, workdir: str, role: str, frozen: bool = False) -> Source:
    """Open ``spec`` as a row source; dumps are staged under ``workdir``.
    ``frozen``: a SQLite file that cannot change, opened immutable (a WAL or
    hot journal beside it is recovered into a copy under ``workdir`` first)."""
    kind = kind_of(spec)
    if kind == "postgres":
        from .pg import read_pg

        return Source(spec, kind, "postgres", read_pg(spec), url=spec)
    if kind == "sqlite":
        path = recovered_copy(spec, workdir) if frozen and has_sidecar(spec) else spec
        return Source(spec, kind, "sqlite", read_sqlite(path, frozen=frozen), path=path, frozen=frozen)
    staging = os.path.join(workdir, f"{role}.staging.db")
    schema, _ = stage_dump(spec, dialect=dialect, staging=staging)
    return Source(spec, kind, "sqlite", schema, path=staging, frozen=True)


def sqlite_ok(path: str) -> None:
    try:
        conn = sqlite3.connect(path)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
        conn.close()
    except sqlite3.DatabaseError as e:
        raise BadInput(f"{path}: not a database ({e})") from None
