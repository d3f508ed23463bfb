"""The checks of a new SQLite file against its source: every row
(keyed.py where a table has a usable key, else verify.py's checksums),
foreign keys, the file's integrity, its settings.  Called in order by the
one-transaction build and on other cores by :class:`.sqlitechecker.Checker`."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from volmerge.strategies.errors import NotDone

from . import keyed, verify
from .schema import quote

if TYPE_CHECKING:
    from .diff import TableMap
    from .plan import ReplayPlan


def check_settings(conn: sqlite3.Connection, plan: ReplayPlan) -> None:
    for name, want in plan.target.settings.items():
        got = conn.execute(f"PRAGMA main.{name}").fetchone()[0]
        if got != want:
            raise NotDone(f"the new database's {name} is {got}, not {want}")


def keyed_check_of(conn: sqlite3.Connection, plan: ReplayPlan, tm: TableMap) -> keyed.KeyedCheck | None:
    """The keyed comparison for a table whose source is ATTACHed, when it has a usable key."""
    if tm.origin == "ours" and tm.source and plan.ours.engine == "sqlite":
        pairs = [(c.target, expr, c.source if c.how in ("same", "renamed") else None)
                 for c, expr in zip(tm.carried, tm.carried_exprs)]
        return keyed.keyed_check(conn, tm.target, "src", tm.source, pairs)
    if tm.origin == "theirs" and tm.rows:
        cols = [c.name for c in plan.target.tables[tm.target].columns
                if plan.theirs.schema.existing(tm.target).col(c.name) is not None]
        return keyed.keyed_check(conn, tm.target, "th", tm.target, [(c, quote(c), c) for c in cols])
    return None


def verify_sqlite(conn: sqlite3.Connection, plan: ReplayPlan, tables_out: list[dict[str, Any]],
                  pg_src: Any = None) -> bool:
    """Every carried column of every row, both sides: by key in one join
    where the table has a usable key (keyed.py), else row counts and
    order-independent checksums (verify.py)."""
    by_name = {t["table"]: t for t in tables_out}
    for tm in plan.tables:
        verify_table(conn, plan, tm, by_name[tm.target], keyed_check_of(conn, plan, tm), pg_src)
    return True


def verify_table(conn: sqlite3.Connection, plan: ReplayPlan, tm: TableMap, out: dict[str, Any],
                 kc: keyed.KeyedCheck | None, pg_src: Any = None) -> None:
    """One table, source against destination; ``pg_src``: the connection
    (in the replay's snapshot) of a PostgreSQL source."""
    if kc is not None:
        n_src, n_dst, n_same = conn.execute(kc.sql()).fetchone()
        out["verified_by"] = "key"
        out["checksum"] = f"{n_src}:keyed"
        if n_src != n_dst:
            raise NotDone(f"verification failed: table {tm.target}: {n_src} rows in the source, "
                          f"{n_dst} in the destination")
        if n_same != n_src:
            raise NotDone(f"verification failed: table {tm.target}: {n_src - n_same} row(s) differ, "
                          f"first {kc.first_mismatch(conn)}")
        return
    if tm.origin == "ours" and tm.source:
        carried = tm.carried
        if plan.ours.engine == "sqlite":
            src = verify.sqlite_checksum(conn, tm.carried_exprs, f"src.{quote(tm.ours_table)}")
        else:
            from .pg import pg_checksum_py

            src = pg_checksum_py(pg_src, tm)
        dst = verify.sqlite_checksum(conn, [quote(c.target) for c in carried],
                                     f"main.{quote(tm.target)}")
        if plan.ours.engine != "sqlite":
            dst = verify.py_checksum(conn.execute(
                f"SELECT {', '.join(quote(c.target) for c in carried) or 'NULL'} "
                f"FROM main.{quote(tm.target)}"))
    elif tm.origin == "theirs" and tm.rows:
        cols = [quote(c.name) for c in plan.target.tables[tm.target].columns
                if plan.theirs.schema.existing(tm.target).col(c.name) is not None]
        src = verify.sqlite_checksum(conn, cols, f"th.{quote(tm.target)}")
        dst = verify.sqlite_checksum(conn, cols, f"main.{quote(tm.target)}")
    else:
        return
    out["verified_by"] = "checksum"
    out["checksum"] = src.hex()
    if src.rows != dst.rows:
        raise NotDone(f"verification failed: table {tm.target}: {src.rows} rows in the source, "
                      f"{dst.rows} in the destination")
    if src.digest != dst.digest:
        cols = mismatched_columns(conn, plan, tm)
        raise NotDone(f"verification failed: table {tm.target}: checksum differs"
                      + (f" in column(s) {', '.join(cols)}" if cols else ""))


def mismatched_columns(conn: sqlite3.Connection, plan: ReplayPlan, tm: TableMap) -> list[str]:
    if plan.ours.engine != "sqlite" or tm.origin != "ours":
        return []
    bad = []
    for c, expr in zip(tm.carried, tm.carried_exprs):
        a = verify.sqlite_checksum(conn, [expr], f"src.{quote(tm.ours_table)}")
        b = verify.sqlite_checksum(conn, [quote(c.target)], f"main.{quote(tm.target)}")
        if a.digest != b.digest:
            bad.append(c.target)
    return bad
def fk_children(conn: sqlite3.Connection) -> list[str]:
    """Tables that have foreign keys, as the new file itself says."""
    return [r[0] for r in conn.execute(
        "SELECT DISTINCT m.name FROM main.sqlite_master AS m, "
        "pragma_foreign_key_list(m.name, 'main') WHERE m.type = 'table' ORDER BY m.rowid")]


def fk_check(conn: sqlite3.Connection, child: str) -> None:
    fk = conn.execute(f"PRAGMA main.foreign_key_check({quote(child)})").fetchone()
    if fk is not None:
        table, rowid, parent, _ = fk
        raise NotDone(f"constraint violation: table {table} row {rowid}: foreign key to {parent} "
                      f"has no matching row")


def quick_check(conn: sqlite3.Connection) -> None:
    # quick_check, not integrity_check: what the latter adds (index entries
    # against table rows) is a given for indexes SQLite has just built from
    # those rows; b-tree soundness and NOT NULL/CHECK are checked
    bad = conn.execute("PRAGMA main.quick_check").fetchone()[0]
    if bad != "ok":
        raise NotDone(f"integrity check failed on the new database: {bad}")
