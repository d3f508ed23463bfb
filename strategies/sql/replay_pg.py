"""Replay into a PostgreSQL database: the backend for ``postgresql://``
destinations.

Two builds, both made of the steps in :mod:`.pgops`.  From a PostgreSQL
source on more than one core the staged build (:mod:`.pgstage`) spreads
the work over several connections in a private staging schema; it earns
its lines by the benchmark in docs/sql.md (bench/bench_sql.py: 0.91 s
against 1.08 s here, 1,000,000 rows on 2 cores).  Otherwise — a SQLite
source, one core, ``VOLMERGE_PG_JOBS=1``, a user who may not create a
schema — everything runs here, in one transaction on one connection:
tables without foreign keys, rows by COPY, then keys, indexes and foreign
keys (PostgreSQL validates them then, and names the offending key),
sequences set to the source's values, checksums of both sides compared.
A failure leaves nothing (a database the replay created is dropped again).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from volmerge.strategies.errors import BadInput, NotDone

from . import pgops, pgstage, verify
from .pg import pg_connect, redact
from .replaytypes import Progress
from .schema import quote

if TYPE_CHECKING:
    from .plan import ReplayPlan


def replay_pg(plan: ReplayPlan, dst: str, progress: Progress | None = None) -> dict[str, Any]:
    try:
        return _replay(plan, dst, progress)
    except Exception as exc:
        full = _disk_full(exc)
        if full is None or (isinstance(exc, NotDone) and exc.details.get("where")):
            raise
        raise _no_space(plan, dst, full) from None


def _disk_full(exc: BaseException | None) -> BaseException | None:
    """The server's "disk full" (SQLSTATE 53100) in ``exc``'s chain, however
    a step wrapped it."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "sqlstate", None) == "53100":
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _drop(plan: ReplayPlan, dst: str, exc: BaseException) -> None:
    """Drop the database the failed replay created.  On a full disk the
    server may refuse that too (DROP DATABASE asks for a checkpoint, which
    writes WAL): the database stays, marked invalid, and the line says so;
    the next replay to it finishes the drop (pgops.open_dst)."""
    try:
        pgops.drop_db(dst)
    except Exception:
        full = _disk_full(exc)
        if full is None:
            raise
        raise _no_space(plan, dst, full, kept=True) from None


def _no_space(plan: ReplayPlan, dst: str, exc: BaseException, *, kept: bool = False) -> NotDone:
    """One line: the server's disk (its data directory when it tells), what
    PostgreSQL said, and about what the replay writes (the source's size)."""
    where = ""
    try:
        with pg_connect(dst, autocommit=True, dbname="postgres") as admin:
            where = f", data directory {admin.execute('SHOW data_directory').fetchone()[0]}"
    except Exception:  # noqa: BLE001 - not allowed to read it, or gone: the URL says enough
        pass
    need = ""
    path = getattr(plan.ours, "path", None)
    if path:
        import os

        try:
            need = f"; needed ~{os.path.getsize(path) / 1e6:.3g}MB (the source's size)"
        except OSError:
            pass
    done = ("rolled back: free space there and run the command again" if not kept else
            f"rolled back, but the server could not drop the database {pgops.dbname(dst)} it "
            "created (it holds nothing): free space there and run the command again (it "
            "finishes the drop)")
    return NotDone(f"no space left on the PostgreSQL server {redact(dst)}{where}: "
                   f"{pgops.pg_error(exc)}{need}; {done}", where=redact(dst))


def _replay(plan: ReplayPlan, dst: str, progress: Progress | None) -> dict[str, Any]:
    plan.check()
    t0 = time.monotonic()
    phases: dict[str, float] = {}
    conn, created = pgops.open_dst(dst)
    src_sqlite = src_pg = None
    try:
        existing = {r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema()").fetchall()}
        clash = sorted(set(plan.target.tables) & existing)
        if clash:
            raise BadInput(f"{redact(dst)}: table(s) {', '.join(clash)} already exist "
                           f"(the replay writes into an empty database)")
        tables_out = None
        if pgstage.applies(plan):
            try:
                tables_out = pgstage.build(plan, conn, dst, progress, phases)
            except pgstage.Unavailable:
                conn.autocommit = False
        if tables_out is None:
            snapshot = None
            if plan.ours.engine == "sqlite":
                src_sqlite = _sqlite_src(plan)
            else:
                src_pg = pg_connect(plan.ours.pg_url())
                src_pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                snapshot = pgops.export_snapshot(src_pg, plan.ours.pg_url())
            tables_out = _load(plan, conn, src_sqlite, src_pg, snapshot, progress, phases)
        t1 = time.monotonic()
        conn.commit()
        phases["commit"] = time.monotonic() - t1
    except BaseException as exc:
        try:
            conn.rollback()
        finally:
            conn.close()
            if created:
                _drop(plan, dst, exc)
        raise
    finally:
        for c in (src_sqlite, src_pg):
            if c is not None:
                c.close()
    conn.close()
    return {"dst": redact(dst), "tables": tables_out, "verified": True,
            "seconds": round(time.monotonic() - t0, 3),
            "phases": {k: round(v, 3) for k, v in phases.items()}}


def _sqlite_src(plan: ReplayPlan) -> sqlite3.Connection:
    conn = sqlite3.connect(plan.ours.uri(), uri=True, isolation_level=None)
    verify.register(conn)
    conn.create_function("vm_real", 1, repr, deterministic=True)
    conn.execute("BEGIN")  # one read transaction: one snapshot for rows and checksums
    if any(t.origin == "theirs" and t.rows for t in plan.tables):
        conn.execute("ATTACH ? AS th", (plan.theirs.uri(),))
    return conn


def _load(plan: ReplayPlan, conn: Any, src_sqlite: sqlite3.Connection | None, src_pg: Any,
          snapshot: pgops.Snapshot | None, progress: Progress | None,
          phases: dict[str, float]) -> list[dict[str, Any]]:
    import psycopg

    target = plan.target
    clock = [time.monotonic()]

    def lap(name: str) -> None:
        now = time.monotonic()
        phases[name] = phases.get(name, 0.0) + now - clock[0]
        clock[0] = now

    pgops.create_tables(target, conn)
    lap("tables")
    out = []
    for tm in plan.tables:
        t1 = time.monotonic()
        if progress:
            progress(tm.target, 0, tm.rows)
        if tm.origin == "ours" and tm.source or tm.origin == "theirs" and tm.rows:
            try:
                pgops.copy_table(plan, tm, conn, src_sqlite=src_sqlite, src_pg=src_pg,
                                 snapshot=snapshot, progress=progress)
            except psycopg.Error as e:
                raise NotDone(f"constraint violation: table {tm.target}: {pgops.pg_error(e)}") from None
        if progress:
            progress(tm.target, tm.rows, tm.rows)
        out.append({"table": tm.target, "from": tm.source, "origin": tm.origin, "rows": tm.rows,
                    "seconds": round(time.monotonic() - t1, 3)})
    lap("rows")
    pgops.set_sequences(plan, conn)
    lap("sequences")
    # The source side of the verification runs on the source connection in
    # a thread while this connection builds keys, indexes and foreign keys.
    sums = pgops.SourceSums(src_pg, pgops.pg_checks(plan, conn, src_pg)) if src_pg is not None else None
    try:
        _build(plan, conn, lap)
        _verify(plan, conn, src_sqlite, sums, out)
        lap("verify")
    finally:
        if sums is not None:
            sums.stop()
    return out


def _build(plan: ReplayPlan, conn: Any, lap: Callable[[str], None]) -> None:
    """Keys, indexes, foreign keys and views, after the rows."""
    target = plan.target
    for t in target.tables.values():  # keys after the load, as pg_dump does: one index build each
        pgops.add_keys(t, conn)
    lap("keys")
    for ix in target.indexes.values():
        pgops.add_index(ix, target, conn)
    lap("indexes")
    for t in target.tables.values():
        for fk in t.fks:
            pgops.add_fk(t, fk, conn)
    pgops.create_views(target, conn)
    lap("foreign keys, views")


def _verify(plan: ReplayPlan, conn: Any, src_sqlite: sqlite3.Connection | None, sums: pgops.SourceSums | None,
            out: list[dict[str, Any]]) -> None:
    by = {t["table"]: t for t in out}
    if sums is not None:
        dst_sums = {ck.target: pgops.pg_sum(conn, ck.dest_sql, quote(ck.target), ck.typed, ck.types)
                    for ck in sums.checks}
        src_sums = sums.result()
        for ck in sums.checks:
            pgops.compare(by, ck.target, src_sums[ck.target], dst_sums[ck.target])
    for tm in plan.tables:
        if tm.origin == "ours" and tm.source:
            if sums is not None:
                continue
            cols = [c.target for c in tm.carried]
            assert src_sqlite is not None  # a PostgreSQL source has its sums
            src = verify.py_checksum(src_sqlite.execute(
                f"SELECT {', '.join(tm.carried_exprs) or 'NULL'} FROM {quote(tm.ours_table)}"))
            dst = pgops.pg_py(conn, cols, tm.target)
        elif tm.origin == "theirs" and tm.rows:
            th = plan.theirs.schema.existing(tm.target)
            cols = [c.name for c in plan.target.tables[tm.target].columns if th.col(c.name) is not None]
            if src_sqlite is None or plan.theirs.engine != "sqlite":
                continue
            src = verify.py_checksum(src_sqlite.execute(
                f"SELECT {', '.join(quote(c) for c in cols)} FROM th.{quote(tm.target)}"))
            dst = pgops.pg_py(conn, cols, tm.target)
        else:
            continue
        pgops.compare(by, tm.target, src, dst)


