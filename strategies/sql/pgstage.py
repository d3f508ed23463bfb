"""Replay from PostgreSQL into PostgreSQL on several connections at once.

The one-transaction replay (replay_pg.py) runs every step on one
connection, one after the other: rows, keys, indexes, foreign keys,
verification.  Here, as ``pg_restore --jobs`` does, the work is spread
over one connection per core: each table is copied, keyed, indexed and
read back for its checksum on a worker while the others load theirs, and
the foreign keys are validated side by side (added ``NOT VALID`` first, so
each validation only locks its own two tables lightly).

What makes it as safe as one transaction is where it is built: a private
staging schema, ``volmerge_stage_<random>``, in the destination database.
Nothing appears under the tables' real names until everything is loaded,
keyed, validated and verified; then one short transaction moves the tables
into the destination schema (``ALTER TABLE ... SET SCHEMA`` takes their
indexes, constraints and owned sequences along), creates the views and
drops the empty staging schema.  Any failure drops the staging schema, so
nothing is left behind — the file-system replay's "written beside the
destination, renamed into place when verified", in PostgreSQL terms.

Every worker reads the source in the snapshot the replay exported, so the
tables and their checksums are one consistent state of the source, as in
the one-transaction replay.  Used when the source is PostgreSQL, the
machine has more than one core (``VOLMERGE_PG_JOBS=N`` sets the number of
connections; 1 means the one-transaction replay) and the destination user
may create a schema; otherwise (:class:`Unavailable`) the one-transaction
replay runs.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, ClassVar

from volmerge.runtime import diag
from volmerge.strategies.errors import NotDone

from . import pgops
from .pg import pg_connect
from .replaytypes import Progress, cpus
from .schema import quote

if TYPE_CHECKING:
    from .diff import TableMap
    from .plan import ReplayPlan
    from .schema import ForeignKey


class Unavailable(Exception):
    """The staged build does not apply here; nothing was written."""


def jobs() -> int:
    """Connections to build on: ``VOLMERGE_PG_JOBS``, else one per core."""
    raw = os.environ.get("VOLMERGE_PG_JOBS", "").strip()
    if not raw:
        return cpus()
    if not raw.isdigit() or int(raw) < 1:
        from volmerge.strategies.errors import BadInput

        raise BadInput(f"VOLMERGE_PG_JOBS={raw!r}: not a positive whole number")
    return int(raw)


def applies(plan: ReplayPlan) -> bool:
    """A PostgreSQL source, more than one connection to build on, and
    nothing to read from a non-PostgreSQL new version (its shipped rows
    come through SQLite)."""
    if plan.ours.engine != "postgres" or jobs() < 2:
        return False
    return not any(t.origin == "theirs" and t.rows and plan.theirs.engine != "postgres" for t in plan.tables)


class _Failures:
    """Failures from the workers, raised in the order the one-transaction
    replay would meet them (phase, then table), not in the order they came."""

    RANK: ClassVar[dict[str, int]] = {"rows": 0, "keys": 1, "indexes": 2, "foreign keys": 3, "verify": 4}

    def __init__(self, tables: list[str]) -> None:
        self.tables = tables
        self.lock = threading.Lock()
        self.seen: list[tuple[int, int, int, BaseException]] = []

    def add(self, phase: str, table: str, e: BaseException) -> None:
        with self.lock:
            pos = self.tables.index(table) if table in self.tables else len(self.tables)
            self.seen.append((self.RANK[phase], pos, len(self.seen), e))

    def __bool__(self) -> bool:
        return bool(self.seen)

    def raise_first(self) -> None:
        if self.seen:
            raise min(self.seen, key=lambda s: s[:3])[3]


class _Pool:
    """Worker threads taking the most urgent task first (lowest priority
    number, then first come): a foreign key's validation, long and on the
    way to the end, before a checksum that can wait."""

    def __init__(self, workers: int) -> None:
        import itertools
        import queue

        self.q: queue.PriorityQueue[tuple[int, int, Any, Any]] = queue.PriorityQueue()
        self.seq = itertools.count()
        self.threads = [threading.Thread(target=self._work, name=f"volmerge-pg-{i}", daemon=True)
                        for i in range(workers)]
        for t in self.threads:
            t.start()

    def _work(self) -> None:
        while True:
            _p, _n, fut, fn = self.q.get()
            if fut is None:
                return
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as e:  # noqa: BLE001 - the future carries it
                    fut.set_exception(e)

    def submit(self, priority: int, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        self.q.put((priority, next(self.seq), fut, lambda: fn(*args)))
        return fut

    def shutdown(self) -> None:
        """Cancel what has not started, wait for what has."""
        while True:
            try:
                _p, _n, fut, _fn = self.q.get_nowait()
            except Exception:  # noqa: BLE001 - queue.Empty
                break
            if fut is not None:
                fut.cancel()
        for _ in self.threads:
            self.q.put((1 << 30, next(self.seq), None, None))
        for t in self.threads:
            t.join()


VALIDATE, LOAD, CHECKSUM = 0, 1, 2  # task priorities


STAGE_LOCKS = 0x766D_7374  # advisory-lock space of staging schemas ("vmst")


def lock_key(schema_oid: int) -> int:
    """The advisory lock a build holds on its staging schema."""
    return (STAGE_LOCKS << 32) | int(schema_oid)


def sweep(conn: Any) -> list[str]:
    """Drop the staging schemas that replays which died (killed, a crash)
    left in this database: a live build holds its schema's advisory lock,
    a dead one's went with its connection.  Schemas this user may not drop
    are left alone.  Returns the names dropped."""
    import psycopg

    gone = []
    for name, oid in conn.execute("SELECT nspname, oid FROM pg_namespace WHERE nspname LIKE %s",
                                  ("volmerge\\_stage\\_%",)).fetchall():
        key = lock_key(oid)
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            continue  # a build is running there
        try:
            conn.execute(f"DROP SCHEMA IF EXISTS {quote(name)} CASCADE")
            gone.append(name)
        except psycopg.Error:
            pass  # another user's: theirs to sweep
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    return gone


def build(plan: ReplayPlan, conn: Any, dst: str, progress: Progress | None,
          phases: dict[str, float]) -> list[dict[str, Any]]:
    """Replay ``plan`` into the database ``conn`` is connected to (which
    holds none of the target's tables).  Raises :class:`Unavailable` before
    writing anything when the staging schema cannot be made."""
    import psycopg

    conn.rollback()
    conn.autocommit = True
    target_schema = conn.execute("SELECT current_schema()").fetchone()[0]
    if target_schema is None:
        raise Unavailable("no current schema")
    search_path = conn.execute("SHOW search_path").fetchone()[0]
    stage = f"volmerge_stage_{uuid.uuid4().hex[:12]}"
    sweep(conn)
    try:
        with conn.transaction():
            conn.execute(f"CREATE SCHEMA {stage}")
            # held by this connection for as long as the build runs (and let
            # go with it, however the process ends): how a later replay tells
            # a live build's staging schema from one left by a replay that
            # died.  Taken before the schema is committed, so no sweep ever
            # sees it unlocked.
            oid = conn.execute("SELECT oid FROM pg_namespace WHERE nspname = %s", (stage,)).fetchone()[0]
            conn.execute("SELECT pg_advisory_lock(%s)", (lock_key(oid),))
    except psycopg.Error as e:
        raise Unavailable(pgops.pg_error(e)) from None
    stage_path = f"{stage}, {search_path}"  # the staging schema first, then whatever the user had
    conn.execute(f"SET search_path TO {stage_path}")
    clock = [time.monotonic()]

    def lap(name: str) -> None:
        now = time.monotonic()
        phases[name] = phases.get(name, 0.0) + now - clock[0]
        clock[0] = now

    opened: list[Any] = []
    lock = threading.Lock()
    local = threading.local()
    sums = None
    moved = False
    try:
        target = plan.target
        pgops.create_tables(target, conn)
        # the source: one snapshot, exported by this connection (kept open
        # in its transaction until the end) and imported by every reader
        src = pg_connect(plan.ours.pg_url())
        opened.append(src)
        src.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = pgops.export_snapshot(src, plan.ours.pg_url())

        def source() -> Any:
            c = pgops.open_source(snapshot)
            with lock:
                opened.append(c)
            return c

        checks = {ck.target: ck for ck in pgops.pg_checks(plan, conn, src)}
        lap("tables")

        def worker() -> tuple[Any, Any]:
            w = getattr(local, "conns", None)
            if w is None:
                d = pg_connect(dst, autocommit=True)
                with lock:
                    opened.append(d)
                d.execute(f"SET search_path TO {stage_path}")
                # its own source connection, only for reading without psql
                w = local.conns = (d, source() if snapshot.psql is None else None)
            return w

        out: dict[str, dict[str, Any]] = {
            tm.target: {"table": tm.target, "from": tm.source, "origin": tm.origin} for tm in plan.tables}
        # sizes, not counts, to order the loads by and to size progress bars
        # with (the exact counts come with the checksums)
        size, guess = {}, {}
        for name, nbytes, tuples in src.execute(
                "SELECT c.relname, pg_relation_size(c.oid), greatest(c.reltuples, 0)::bigint FROM pg_class c "
                "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')").fetchall():
            size[name], guess[name] = int(nbytes), int(tuples)

        copied: dict[str, int] = {}  # table -> rows COPY loaded

        def expected(tm: TableMap) -> int:
            return tm.rows if tm.counted or tm.origin != "ours" else int(guess.get(tm.source, 0))
        failures = _Failures([tm.target for tm in plan.tables])
        dst_sums: dict[str, Any] = {}
        say = threading.Lock()

        def told(table: str, done: int, total: int) -> None:
            if progress:
                with say:
                    progress(table, done, total)

        def one_table(tm: TableMap) -> None:
            """Rows, keys and indexes of one table."""
            if failures:
                return  # another table failed: no need to go on
            d, s = worker()
            t1 = time.monotonic()
            step = "rows"
            try:
                told(tm.target, 0, expected(tm))
                if tm.origin == "ours" and tm.source or tm.origin == "theirs" and tm.rows:
                    try:
                        n = pgops.copy_table(plan, tm, d, src_pg=s, snapshot=snapshot)
                        if n is not None:
                            copied[tm.target] = n
                    except psycopg.Error as e:
                        raise NotDone(f"constraint violation: table {tm.target}: {pgops.pg_error(e)}") from None
                n = copied.get(tm.target, expected(tm))
                told(tm.target, n, n)
                out[tm.target]["seconds"] = round(time.monotonic() - t1, 3)
                step = "keys"
                pgops.add_keys(target.tables[tm.target], d)
                step = "indexes"
                pgops.add_indexes_of(tm.target, target, d)
            except BaseException as e:  # noqa: BLE001 - raised in order below
                failures.add(step, tm.target, e)

        def dest_sum(tm: TableMap) -> None:
            ck = checks.get(tm.target)
            if ck is None or failures:
                return
            d, _s = worker()
            try:
                dst_sums[tm.target] = pgops.pg_sum(d, ck.dest_sql, quote(ck.target), ck.typed, ck.types)
            except BaseException as e:  # noqa: BLE001 - raised in order below
                failures.add("verify", tm.target, e)

        # a foreign key is validated as soon as its two tables are loaded
        # and keyed, beside the other tables' work: declared NOT VALID
        # (instant; one at a time, so two never wait on each other's
        # tables), then validated, which locks its tables only lightly
        planned = {tm.target for tm in plan.tables}
        waiting = [(t.name, fk) for t in target.tables.values() for fk in t.fks]
        ready_tables = set(target.tables) - planned
        adding = threading.Lock()
        pool = _Pool(max(2, min(jobs(), len(plan.tables))))
        futures: list[Any] = []

        def validate(table: str, fk: ForeignKey) -> None:
            if failures:
                return
            d, _s = worker()
            try:
                with adding:
                    pgops.add_fk(target.tables[table], fk, d, not_valid=True)
                    name = d.execute(
                        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f' "
                        "AND NOT convalidated ORDER BY oid DESC LIMIT 1", (quote(table),)).fetchone()[0]
                d.execute(f"ALTER TABLE {quote(table)} VALIDATE CONSTRAINT {quote(name)}")
            except psycopg.Error as e:
                failures.add("foreign keys", table,
                             NotDone(f"constraint violation: table {table}: {pgops.pg_error(e)}"))
            except NotDone as e:
                failures.add("foreign keys", table, e)

        def keyed(table: str) -> None:
            with lock:
                ready_tables.add(table)
                now = [(c, fk) for c, fk in waiting if {c, fk.ref_table} <= ready_tables]
                for x in now:
                    waiting.remove(x)
            for c, fk in now:
                futures.append(pool.submit(VALIDATE, validate, c, fk))

        def table_then_keys(tm: TableMap) -> None:
            one_table(tm)
            keyed(tm.target)
            futures.append(pool.submit(CHECKSUM, dest_sum, tm))

        try:
            for t in target.tables.values():  # tables without rows to replay
                if t.name not in planned:
                    pgops.add_keys(t, conn)
                    pgops.add_indexes_of(t.name, target, conn)
            biggest_first = sorted(plan.tables, key=lambda m: -(
                size.get(m.source or "", 0) if m.origin == "ours" else m.rows * 100))
            loads = [pool.submit(LOAD, table_then_keys, tm) for tm in biggest_first]
            # the source's checksums, beside the loads (once they have started)
            sums = pgops.SourceSums(source(), list(checks.values()))
            for f in loads:
                f.result()
            lap("rows, keys, indexes")
            for c, fk in list(waiting):  # a parent outside the target: PostgreSQL says what is wrong
                futures.append(pool.submit(VALIDATE, validate, c, fk))
            while futures:
                futures.pop(0).result()
            failures.raise_first()
            lap("foreign keys")
        except BaseException:
            # Ctrl-C, or a failure: stop what the workers run now instead of waiting for it
            for c in opened[:]:  # a copy: a worker may still open one
                try:
                    c.cancel()
                except Exception as exc:  # noqa: BLE001 - the original error is raised
                    diag.ignored(__name__, "cancelling a worker's query", exc)
            raise
        finally:
            pool.shutdown()
        pgops.set_sequences(plan, conn)
        src_sums = sums.result()
        for ck in checks.values():
            pgops.compare(out, ck.target, src_sums[ck.target], dst_sums[ck.target])
            out[ck.target]["rows"] = src_sums[ck.target].rows  # counted in the snapshot read
        for tm in plan.tables:
            if "rows" not in out[tm.target]:  # no checksum (no carried column): counted
                out[tm.target]["rows"] = copied.get(tm.target, tm.rows)
        lap("verify")
        # into place, in one short transaction
        with conn.transaction():
            for t in target.tables.values():
                conn.execute(f"ALTER TABLE {stage}.{quote(t.name)} SET SCHEMA {quote(target_schema)}")
            conn.execute(f"SET LOCAL search_path TO {search_path}")
            pgops.create_views(target, conn)
            conn.execute(f"DROP SCHEMA {stage}")  # empty by now; RESTRICT says so
        moved = True
        lap("move into place")
        return [out[tm.target] for tm in plan.tables]
    finally:
        if sums is not None:
            sums.stop()
        for c in opened:
            try:
                c.cancel()
            except Exception as exc:  # noqa: BLE001 - closing is what matters
                diag.ignored(__name__, "cancelling a worker's query", exc)
            c.close()
        with contextlib.suppress(psycopg.Error):
            conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(oid),))
        if not moved:
            # the message is the first failure; the caller drops a database it created
            with contextlib.suppress(psycopg.Error):
                if conn.info.transaction_status != 0:  # not idle: a failed move
                    conn.rollback()
                conn.execute(f"DROP SCHEMA IF EXISTS {stage} CASCADE")
