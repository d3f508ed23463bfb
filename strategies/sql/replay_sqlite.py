"""Replay into a fresh SQLite file: set-based, verified, renamed into place.

The source is ATTACHed read-only and every table is one
``INSERT INTO main.t (...) SELECT <mapping expressions> FROM src.t``: SQLite
does the work in C, and an identity mapping takes SQLite's transfer
optimisation (records copied without decoding).  The file is built beside
the destination under a temporary name and renamed into place only when
verified; any failure deletes it, so nothing is ever half done.

From a SQLite source on a machine with more than one core, each table is
committed into that file as soon as it is loaded and checked on another
core while the next one loads (:class:`.sqlitechecker.Checker`); the checks read the
source again, so a live source that was written meanwhile (``PRAGMA
data_version``) sends the replay round again the sequential way: schema,
rows, sequences, indexes, checks and verification in one transaction,
inside which the source is one consistent snapshot.  A PostgreSQL source
always goes that way.

The files beside the destination (temporary database, lock) are
sqlitefiles.py's; the checks are sqlitecheck.py's.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from volmerge.strategies.errors import BadInput, NotDone

from . import render, sqlitefiles, verify
from .replaytypes import Progress, cpus
from .schema import quote
from .sqlitecheck import check_settings, fk_check, fk_children, quick_check, verify_sqlite
from .sqlitechecker import Checker

if TYPE_CHECKING:
    from .diff import TableMap
    from .plan import ReplayPlan


def replay_sqlite(plan: ReplayPlan, dst: str, progress: Progress | None = None) -> dict[str, Any]:
    plan.check()
    dst = os.path.abspath(dst)
    if os.path.lexists(dst):
        raise BadInput(f"{dst}: already exists (the replay writes a new database)")
    d = os.path.dirname(dst)
    if not os.path.isdir(d):
        raise BadInput(f"{d}: no such directory")
    sqlitefiles.sweep(d, os.path.basename(dst))
    stem, lock = sqlitefiles.hold(d, os.path.basename(dst))
    tmp = stem + ".tmp"
    t0 = time.monotonic()
    # see the module's docstring
    parallel = parallel_checks(plan)
    try:
        guard = _SourceGuard(plan) if parallel else None
        try:
            try:
                result = _build(plan, tmp, progress, parallel)
                again = guard is not None and guard.changed()
            except NotDone:
                # a check that failed because the source moved on is no verdict
                if guard is None or not guard.changed():
                    raise
                again = True
            if again:
                sqlitefiles.remove_db(tmp)
                result = _build(plan, tmp, progress, False)
                result["source_changed"] = True
        finally:
            if guard is not None:
                guard.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _place(tmp, dst)
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        sqlitefiles.remove_db(tmp)
        raise
    finally:
        sqlitefiles.let_go(stem, lock)
    result["seconds"] = round(time.monotonic() - t0, 3)
    result["dst"] = dst
    return result


def _place(tmp: str, dst: str) -> None:
    """Put the finished database at ``dst`` unless something is there by now:
    a link, not a rename, so that of two replays into the same new file the
    second is refused instead of silently replacing the first's (the check
    at the start cannot see a build still running)."""
    import errno

    try:
        os.link(tmp, dst)
    except FileExistsError:
        raise BadInput(f"{dst}: already exists (the replay writes a new database)") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        os.rename(tmp, dst)  # a file system without hard links
        return
    os.unlink(tmp)


def parallel_checks(plan: ReplayPlan) -> bool:
    """Check on other cores while the file is written (see the module's docstring)."""
    return plan.ours.engine == "sqlite" and cpus() > 1


class _SourceGuard:
    """Tells whether a live (not frozen) SQLite input was written while the
    replay ran: ``PRAGMA data_version`` of one connection changes when any
    other connection — any process — commits to the file."""

    def __init__(self, plan: ReplayPlan) -> None:
        self._conns: list[tuple[sqlite3.Connection, int]] = []
        for src in (plan.ours, plan.theirs):
            if src is None or src.engine != "sqlite" or src.frozen or src.path is None:
                continue
            c = sqlite3.connect(src.uri(), uri=True)
            self._conns.append((c, c.execute("PRAGMA data_version").fetchone()[0]))

    def changed(self) -> bool:
        return any(c.execute("PRAGMA data_version").fetchone()[0] != v for c, v in self._conns)

    def close(self) -> None:
        for c, _v in self._conns:
            c.close()


def _key_exprs(plan: ReplayPlan, tm: TableMap) -> list[str]:
    """Source expressions that identify a row in messages: its primary key, else rowid."""
    src_t = plan.ours.schema.table(tm.ours_table)
    if src_t is not None and src_t.pk:
        return [quote(c) for c in src_t.pk]
    return ["rowid"]


def _build(plan: ReplayPlan, tmp: str, progress: Progress | None, parallel: bool) -> dict[str, Any]:
    # readers of the committed tables may hold the file for a moment while
    # the next table commits: wait for them (parallel mode)
    conn = sqlite3.connect(tmp, isolation_level=None, timeout=600)
    verify.register(conn)
    tables_out: list[dict[str, Any]] = []
    phases: dict[str, float] = {}
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        phases[name] = round(phases.get(name, 0.0) + now - mark, 3)
        mark = now

    checker: Checker | None = None
    pg_src = None
    try:
        # MEMORY, not OFF: a failed statement must roll back (the row probe
        # relies on it); pages of a fresh file are not journaled anyway.
        _settings(conn, plan, ("page_size", "auto_vacuum"))  # before the file's first page
        conn.execute("PRAGMA journal_mode=MEMORY")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute(f"PRAGMA threads={min(4, cpus())}")  # sorter threads for CREATE INDEX
        src_engine = plan.ours.engine
        if src_engine == "sqlite":
            conn.execute("ATTACH ? AS src", (plan.ours.uri(),))
        if any(t.origin == "theirs" and t.rows for t in plan.tables):
            conn.execute("ATTACH ? AS th", (plan.theirs.uri(),))
        conn.execute("BEGIN")
        phase("open")
        target = plan.target
        for t in target.tables.values():
            try:
                conn.execute(render.table_ddl(t, target.dialect, "sqlite"))
            except sqlite3.Error as e:
                raise BadInput(f"target schema: table {t.name}: {e}") from None
        _settings(conn, plan, ("user_version", "application_id"))
        if src_engine == "sqlite":
            _validate_casts(conn, plan)
        if parallel:
            # Table by table: each is committed (into the file nobody sees
            # until it is renamed) and checked on another core while the
            # next one loads.
            conn.execute("COMMIT")
            checker = Checker(conn, plan, tmp, tables_out, phases)
        for tm in plan.tables:
            t1 = time.monotonic()
            if checker is not None:
                conn.execute("BEGIN")
            if progress:
                progress(tm.target, 0, tm.rows)
            if tm.origin == "ours" and tm.source:
                if src_engine == "sqlite":
                    _insert_select(conn, plan, tm)
                else:
                    from .pg import copy_pg_to_sqlite, open_pg_source

                    if pg_src is None:  # one snapshot for the rows and the checks
                        pg_src = open_pg_source(plan.ours.pg_url())
                    copy_pg_to_sqlite(pg_src, tm, conn)
            elif tm.origin == "theirs" and tm.rows:
                cols = [quote(c.name) for c in plan.target.tables[tm.target].columns
                        if plan.theirs.schema.existing(tm.target).col(c.name) is not None]
                conn.execute(f"INSERT INTO main.{quote(tm.target)} ({', '.join(cols)}) "
                             f"SELECT {', '.join(cols)} FROM th.{quote(tm.target)}")
            if progress:
                progress(tm.target, tm.rows, tm.rows)
            tables_out.append({"table": tm.target, "from": tm.source, "origin": tm.origin,
                               "rows": tm.rows, "seconds": round(time.monotonic() - t1, 3)})
            if checker is not None:
                checker.commit()
                checker.loaded(tm)
        if checker is not None:
            conn.execute("BEGIN")
        _sequences(conn, plan)
        phase("rows")
        for ix in target.indexes.values():
            ddl = render.index_ddl(ix, target.dialect, "sqlite")
            if ddl is None:
                continue
            try:
                conn.execute(ddl)
            except sqlite3.IntegrityError as e:
                raise NotDone(f"constraint violation: index {ix.name} on {ix.table}: {e}") from None
            except sqlite3.Error as e:
                raise NotDone(f"index {ix.name} on {ix.table}: {e}") from None
        objects = [("view", v.name, render.view_ddl(v, target.dialect, "sqlite"))
                   for v in target.views.values()]
        objects += [("trigger", t.name, render.trigger_ddl(t, target.dialect, "sqlite"))
                    for t in target.triggers.values()]
        for what, name, ddl in objects:
            if ddl:
                try:
                    conn.execute(ddl)
                except sqlite3.Error as e:
                    raise NotDone(f"{what} {name}: {e}") from None
        phase("indexes")
        if checker is not None:
            checker.check_integrity()
            checker.commit()
            phase("commit")
            checks = checker.finish()
            check_settings(conn, plan)
            phase("checks (after the load)")
            return {"tables": tables_out, "verified": checks, "phases": phases}
        for child in fk_children(conn):
            fk_check(conn, child)
        phase("foreign keys")
        checks = verify_sqlite(conn, plan, tables_out, pg_src)
        phase("verify")
        conn.execute("COMMIT")
        quick_check(conn)
        check_settings(conn, plan)
        phase("integrity")
        return {"tables": tables_out, "verified": checks, "phases": phases}
    finally:
        if checker is not None:
            checker.close()
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
        if pg_src is not None:
            pg_src.close()


def _settings(conn: sqlite3.Connection, plan: ReplayPlan, names: tuple[str, ...]) -> None:
    """The target's database settings (plan.target_settings) of ``names``."""
    for name in names:
        value = plan.target.settings.get(name)
        if value is not None:
            conn.execute(f"PRAGMA main.{name} = {int(value)}")


def _validate_casts(conn: sqlite3.Connection, plan: ReplayPlan) -> None:
    for tm in plan.tables:
        if tm.origin != "ours" or not tm.rows:
            continue
        for c in tm.columns:
            if c.check and c.source:
                keys = _key_exprs(plan, tm)
                row = conn.execute(
                    f"SELECT {', '.join(keys)}, {quote(c.source)} FROM src.{quote(tm.ours_table)} "
                    f"WHERE vm_bad({quote(c.source)}, ?) LIMIT 1", (c.check,)).fetchone()
                if row is not None:
                    key = ", ".join(f"{k.strip(chr(34))}={v!r}" for k, v in zip(keys, row[:-1]))
                    raise NotDone(f"value does not convert: table {tm.source} row {key}: column "
                                  f"{c.source} value {row[-1]!r} is not {c.check} ({c.from_type} -> "
                                  f"{c.to_type})")


def _identity(plan: ReplayPlan, tm: TableMap) -> bool:
    src_t = plan.ours.schema.existing(tm.ours_table)
    tgt_t = plan.target.tables[tm.target]
    return (len(tm.columns) == len(tgt_t.columns) == len(src_t.columns)
            and all(c.how == "same" and c.source == sc.name and c.target == tc.name
                    for c, sc, tc in zip(tm.columns, src_t.columns, tgt_t.columns)))


def _insert_select(conn: sqlite3.Connection, plan: ReplayPlan, tm: TableMap) -> None:
    carried = tm.carried
    if _identity(plan, tm):
        sql = f"INSERT INTO main.{quote(tm.target)} SELECT * FROM src.{quote(tm.ours_table)}"
    else:
        sql = (f"INSERT INTO main.{quote(tm.target)} ({', '.join(quote(c.target) for c in carried)}) "
               f"SELECT {', '.join(tm.carried_exprs)} FROM src.{quote(tm.ours_table)}")
    try:
        conn.execute(sql)
    except sqlite3.IntegrityError as e:
        raise NotDone(_find_bad_row(conn, plan, tm, str(e))) from None
    except sqlite3.Error as e:
        raise NotDone(f"replay of table {tm.target}: {e}") from None


def _find_bad_row(conn: sqlite3.Connection, plan: ReplayPlan, tm: TableMap, error: str) -> str:
    """The first source row the target refuses (only on the failure path)."""
    carried = tm.carried
    keys = _key_exprs(plan, tm)
    cur = conn.execute(f"SELECT {', '.join(keys)}, {', '.join(tm.carried_exprs)} "
                       f"FROM src.{quote(tm.ours_table)}")
    ins = (f"INSERT INTO main.{quote(tm.target)} ({', '.join(quote(c.target) for c in carried)}) "
           f"VALUES ({', '.join('?' * len(carried))})")
    conn.execute("SAVEPOINT vm_probe")
    try:
        for row in cur:
            try:
                conn.execute(ins, row[len(keys):])
            except sqlite3.IntegrityError as e:
                key = ", ".join(f"{k.strip(chr(34))}={v!r}" for k, v in zip(keys, row[:len(keys)]))
                return f"constraint violation: table {tm.target} row {key}: {e}"
    finally:
        conn.execute("ROLLBACK TO vm_probe")
        conn.execute("RELEASE vm_probe")
    return f"constraint violation: table {tm.target}: {error}"


def _sequences(conn: sqlite3.Connection, plan: ReplayPlan) -> None:
    """AUTOINCREMENT counters continue from the source's, never reuse an id."""
    auto = [t for t in plan.target.tables.values()
            if any(c.autoincrement for c in t.columns) and render.table_ddl(
                t, plan.target.dialect, "sqlite").upper().find("AUTOINCREMENT") >= 0]
    for t in auto:
        tm = next((m for m in plan.tables if m.target == t.name), None)
        if tm is None:
            continue
        seqs = plan.ours.schema.sequences if tm.origin == "ours" else plan.theirs.schema.sequences
        src_name = tm.source if tm.origin == "ours" else tm.target
        want = seqs.get(src_name or "")
        if want is None:
            continue
        conn.execute("INSERT INTO sqlite_sequence (name, seq) SELECT ?, 0 WHERE NOT EXISTS "
                     "(SELECT 1 FROM sqlite_sequence WHERE name = ?)", (t.name, t.name))
        conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (want, t.name))
