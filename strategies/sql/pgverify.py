"""Verification of a major upgrade: the old server against the new one.

For every database: the same tables (``schema.table``), each table's row
count and an order-independent checksum of every row's text, each
sequence's state, and the number of user objects of each kind.  Any
difference is NotDone: the upgrade does not go ahead.

The table checksums are the cost (every row read on both sides); they run
side by side on several connections, largest tables first, both servers
at once — the listing, sequences and object counts are cheap and read on
one connection per server and database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from volmerge.strategies.errors import NotDone

from .pgtemp import PgServer

_USER_NS = ("n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'")
OBJECTS = f"""
SELECT 'relation ' || c.relkind::text, count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE {_USER_NS} GROUP BY c.relkind
UNION ALL SELECT 'function', count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE {_USER_NS}
UNION ALL SELECT 'type', count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE {_USER_NS} AND t.typtype IN ('e', 'd', 'r')
UNION ALL SELECT 'trigger', count(*) FROM pg_trigger WHERE NOT tgisinternal
UNION ALL SELECT 'constraint', count(*) FROM pg_constraint o JOIN pg_namespace n
 ON n.oid = o.connamespace WHERE {_USER_NS} AND o.contype IN ('p', 'u', 'f', 'c', 'x')
"""
#: connections per server for the table checksums
WORKERS = 4


def connect(url: str, autocommit: bool = False) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=autocommit)


def names(c: Any, kinds: str) -> list[str]:
    return [r[0] for r in c.execute(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n "
        f"ON n.oid = c.relnamespace WHERE c.relkind IN ({kinds}) AND {_USER_NS} ORDER BY 1").fetchall()]


def _sizes(c: Any) -> dict[str, int]:
    return dict(c.execute(
        "SELECT format('%I.%I', n.nspname, c.relname), c.relpages FROM pg_class c "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND {_USER_NS}"
    ).fetchall())


def table_sum(c: Any, t: str) -> tuple[int, str]:
    """Row count and an order-independent checksum of every row's text: the
    sum of each row's 64-bit ``hashtextextended`` (the hash PostgreSQL keeps
    stable across major versions: hash partitions rely on it; ~4 times
    cheaper than md5 and a hex round trip).  Both servers run on one host."""
    r = c.execute(
        "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0) "
        f"FROM ONLY {t} t").fetchone()
    return int(r[0]), str(r[1])


class _Conns:
    """One connection per thread, server and database (opened on first use)."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.all: list[Any] = []
        self.lock = threading.Lock()

    def get(self, url: str) -> Any:
        cache = getattr(self.local, "c", None)
        if cache is None:
            cache = self.local.c = {}
        if url not in cache:
            c = cache[url] = connect(url, autocommit=True)
            with self.lock:
                self.all.append(c)
        return cache[url]

    def close(self) -> None:
        for c in self.all:
            c.close()


def verify_databases(old: PgServer, new: PgServer, dbs: list[str], *, workers: int = WORKERS,
                     extra: Callable[[Any, str], None] | None = None) -> list[dict[str, Any]]:
    """:func:`verify_database` of every database in ``dbs``, the table
    checksums of all of them on ``workers`` connections per server.
    ``extra(new_connection, db)``, when given, runs once per database on the
    new server (checks of the caller's own; it raises to refuse)."""
    listed: list[tuple[str, list[str], dict[str, int]]] = []
    for db in dbs:
        with connect(old.url(db)) as a, connect(new.url(db)) as b:
            tables = names(a, "'r', 'p'")
            if names(b, "'r', 'p'") != tables:
                raise NotDone(f"verification failed: database {db}: the new server has other tables")
            listed.append((db, tables, _sizes(a)))
            if extra is not None:
                extra(b, db)
    jobs = sorted(((sizes.get(t, 0), db, t, side) for db, tables, sizes in listed
                   for t in tables for side in (0, 1)), key=lambda j: -j[0])
    conns = _Conns()
    urls = {db: (old.url(db), new.url(db)) for db in dbs}

    def one(job: tuple[int, str, str, int]) -> tuple[str, str, int, tuple[int, str]]:
        _, db, t, side = job
        return db, t, side, table_sum(conns.get(urls[db][side]), t)

    try:
        if jobs:
            with ThreadPoolExecutor(max(1, min(workers * 2, len(jobs)))) as pool:
                sums = {(db, t, side): s for db, t, side, s in pool.map(one, jobs)}
        else:
            sums = {}
    finally:
        conns.close()
    out = []
    for db, tables, _ in listed:
        checked = []
        for t in tables:
            x, y = sums[(db, t, 0)], sums[(db, t, 1)]
            if x != y:
                raise NotDone(f"verification failed: database {db} table {t}: old server "
                              f"{x[0]} rows, new server {y[0]} rows, or their checksums differ")
            checked.append({"table": t, "rows": x[0]})
        out.append(_rest(old, new, db, checked))
    return out


def _rest(old: PgServer, new: PgServer, db: str, checked: list[dict[str, Any]]) -> dict[str, Any]:
    """Sequences and object counts of ``db``; the verification's record."""
    with connect(old.url(db)) as a, connect(new.url(db)) as b:
        seqs = []
        for s in names(a, "'S'"):
            x = a.execute(f"SELECT last_value, is_called FROM {s}").fetchone()
            y = b.execute(f"SELECT last_value, is_called FROM {s}").fetchone()
            if tuple(x) != tuple(y):
                raise NotDone(f"verification failed: database {db} sequence {s}: old {tuple(x)}, "
                              f"new {tuple(y)}")
            seqs.append({"sequence": s, "last_value": int(x[0]), "is_called": bool(x[1])})
        ox = dict(a.execute(OBJECTS).fetchall())
        oy = dict(b.execute(OBJECTS).fetchall())
        if ox != oy:
            diff = sorted(k for k in set(ox) | set(oy) if ox.get(k) != oy.get(k))
            raise NotDone(f"verification failed: database {db}: object counts differ ({', '.join(diff)})")
    return {"database": db, "tables": checked, "sequences": seqs, "objects": ox, "verified": True}


def verify_database(old: PgServer, new: PgServer, db: str) -> dict[str, Any]:
    """Old server against new for one database: the same tables, each
    table's row count and checksum, each sequence's state, and the number of
    objects of each kind.  NotDone on any difference."""
    return verify_databases(old, new, [db])[0]


__all__ = ["verify_databases", "verify_database", "table_sum", "names", "connect", "OBJECTS"]
