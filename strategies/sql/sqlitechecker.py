"""Checking a SQLite replay's file on other cores while it is written
(the parallel mode of replay_sqlite.py, for SQLite sources on more than
one core): the same checks as the one-transaction build (sqlitecheck.py),
each as soon as what it reads is committed."""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from volmerge.strategies.errors import NotDone

from . import verify
from .replaytypes import cpus
from .schema import quote
from .sqlitecheck import fk_check, fk_children, keyed_check_of, quick_check, verify_table

if TYPE_CHECKING:
    from .diff import TableMap
    from .plan import ReplayPlan


class Checker:
    """Checks a replay's file on another core while it is being written.

    As soon as a table is committed, while the next one loads, it is
    verified against the source; a child table's foreign keys are checked
    once its parent tables are in.  What depends on the indexes waits for
    them: the verification of a table that gets a UNIQUE index (it may be
    the key of the comparison) and foreign keys whose parent key is such
    an index.  The ``quick_check`` of the whole file runs on the writer's
    connection inside its last transaction (:meth:`check_integrity`: the
    file as it is about to be committed, every page in that connection's
    cache) while the workers verify the last tables; after the last
    commit the writer takes over the checks no worker has started.  Each
    commit starts an fsync in the background, so the last one has only the
    last commit's pages to write.  Every check only reads, on its own
    read-only connection with the same ATTACHes, and SQLite runs each
    query without the GIL.  (Memory-mapping the files for the checks saves
    them 15-35% of their CPU but no wall time, and maps count in the
    resident memory: 2 GB for a 1 GB dump instead of 115 MB.)  The writer
    and the checks take turns on the file here (:meth:`commit`), not in
    SQLite's busy handler.  ``finish`` raises the first failure in the
    sequential order (foreign keys, tables in plan order, integrity), so a
    message does not depend on timing."""

    def __init__(self, conn: sqlite3.Connection, plan: ReplayPlan, tmp: str,
                 tables_out: list[dict[str, Any]], phases: dict[str, float]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.conn, self.plan, self.tmp, self.phases = conn, plan, tmp, phases
        self.out = tables_out
        self.local = threading.local()
        self.lock = threading.Lock()
        self.turns = threading.Condition(self.lock)
        self.reading = 0  # checks inside a query on the file
        self.committing = False
        self.writer = threading.get_ident()
        self.runs: dict[str, Callable[[], None]] = {}
        self.integrity: NotDone | None = None
        self.flushing: threading.Thread | None = None
        self.flush_again = False
        self.flush_errors: list[BaseException] = []
        self.opened: list[sqlite3.Connection] = []
        self.attach = [("src", plan.ours.uri())]
        if any(t.origin == "theirs" and t.rows for t in plan.tables):
            self.attach.append(("th", plan.theirs.uri()))
        self.unique_later = {ix.table for ix in plan.target.indexes.values() if ix.unique}
        self.loaded_tables = {r[0] for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type = "
                                                         "'table'")} - {t.target for t in plan.tables}
        self.fk_parents = {child: self._parents(child) for child in fk_children(conn)}
        self.futures: dict[str, Any] = {}  # "fk X" / "verify X" -> future
        self.pool = ThreadPoolExecutor(max_workers=max(1, cpus() - 1), thread_name_prefix="volmerge-check")
        self.closed = False

    def _parents(self, child: str) -> set[str] | None:
        """The parent tables of ``child``'s foreign keys, or None when one of
        their keys only gets its unique index with the indexes."""
        parents: set[str] = set()
        for fk in self.conn.execute("SELECT DISTINCT \"table\", \"to\" FROM pragma_foreign_key_list(?, 'main')",
                                    (child,)).fetchall():
            parent = fk[0]
            parents.add(parent)
            key = [r[0] for r in self.conn.execute(
                "SELECT \"to\" FROM pragma_foreign_key_list(?, 'main') WHERE \"table\" = ?", (child, parent))]
            if any(k is None for k in key):  # the parent's primary key
                continue
            pk = [r[1] for r in sorted((r for r in self.conn.execute(
                f"PRAGMA main.table_info({quote(parent)})") if r[5]), key=lambda r: r[5])]
            uniques = [[r[2] for r in self.conn.execute(f"PRAGMA main.index_info({quote(ix[1])})")]
                       for ix in self.conn.execute(f"PRAGMA main.index_list({quote(parent)})") if ix[2]]
            if set(key) != set(pk) and not any(set(key) == set(u) for u in uniques):
                return None
        return parents

    def _reader(self) -> sqlite3.Connection:
        if threading.get_ident() == self.writer:
            return self.conn  # a check the writer took over at the end
        c = getattr(self.local, "conn", None)
        if c is None:
            from .readers import ro_uri

            c = sqlite3.connect(ro_uri(self.tmp), uri=True, isolation_level=None,
                                check_same_thread=False, timeout=600)
            verify.register(c)
            for name, uri in self.attach:
                c.execute(f"ATTACH ? AS {name}", (uri,))
            c.execute("PRAGMA cache_size=-16384")
            self.local.conn = c
            with self.lock:
                self.opened.append(c)
        return c

    def commit(self) -> None:
        """COMMIT the writer's transaction when no check is reading the
        file, holding new checks back meanwhile.  The readers and the
        writer take turns here rather than in SQLite's busy handler, which
        sleeps 1, 2, 5, 10, 15 ... ms between tries."""
        with self.turns:
            self.committing = True
            while self.reading:
                self.turns.wait()
        try:
            self.conn.execute("COMMIT")
        finally:
            with self.turns:
                self.committing = False
                self.turns.notify_all()
        self._flush()

    def _flush(self) -> None:
        """fsync the file in the background, so that by the end only the
        last commit's pages are left to write."""
        with self.lock:
            if self.flushing is not None and self.flushing.is_alive():
                self.flush_again = True
                return
            self.flush_again = False

        def run() -> None:
            while True:
                try:
                    fd = os.open(self.tmp, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                except BaseException as e:  # noqa: BLE001 - raised by finish
                    self.flush_errors.append(e)
                    return
                with self.lock:
                    if not self.flush_again:
                        return
                    self.flush_again = False

        self.flushing = threading.Thread(target=run, name="volmerge-fsync")
        self.flushing.start()

    def _submit(self, name: str, fn: Callable[[], None]) -> None:
        def run() -> None:
            on_writer = threading.get_ident() == self.writer
            if not on_writer:
                with self.turns:
                    while self.committing:
                        self.turns.wait()
                    self.reading += 1
            t = time.monotonic()
            try:
                fn()
            finally:
                with self.turns:
                    self.phases[f"  {name}"] = round(time.monotonic() - t, 3)
                    if not on_writer:
                        self.reading -= 1
                        self.turns.notify_all()
        self.runs[name] = run
        self.futures[name] = self.pool.submit(run)

    def _take_over(self) -> None:
        """Run here, on the writer's connection, the checks no worker has started."""
        from concurrent.futures import Future

        for name, fut in list(self.futures.items()):
            if fut.cancel():
                done: Future[None] = Future()
                try:
                    self.runs[name]()
                    done.set_result(None)
                except BaseException as e:  # noqa: BLE001 - raised below, in order
                    done.set_exception(e)
                self.futures[name] = done

    def _verify(self, tm: TableMap) -> None:
        out = next(t for t in self.out if t["table"] == tm.target)
        self._submit(f"verify {tm.target}", lambda: verify_table(
            self._reader(), self.plan, tm, out, keyed_check_of(self._reader(), self.plan, tm)))

    def _fk_check(self, child: str) -> None:
        fk_check(self._reader(), child)

    def _ready_fks(self, final: bool) -> None:
        for child, parents in list(self.fk_parents.items()):
            if final or (parents is not None and parents | {child} <= self.loaded_tables):
                del self.fk_parents[child]
                self._submit(f"fk {child}", functools.partial(self._fk_check, child))

    def loaded(self, tm: TableMap) -> None:
        """``tm``'s rows are committed."""
        self.loaded_tables.add(tm.target)
        if tm.target not in self.unique_later:
            self._verify(tm)
        self._ready_fks(final=False)

    def check_integrity(self) -> None:
        """``quick_check`` of the whole file on the writer's warm connection,
        inside its last transaction — the file as it is about to be
        committed, every page of it in this connection's cache — while the
        workers verify the last tables; the verdict waits for ``finish``."""
        t = time.monotonic()
        try:
            quick_check(self.conn)
        except NotDone as e:
            self.integrity = e
        self.phases["  integrity"] = round(time.monotonic() - t, 3)

    def finish(self) -> bool:
        """Everything is committed: the remaining checks, then the verdict."""
        for tm in self.plan.tables:
            if tm.target in self.unique_later:
                self._verify(tm)
        self._ready_fks(final=True)
        self._take_over()
        if self.flushing is not None:
            self.flushing.join()
        try:
            order = ([n for n in self.futures if n.startswith("fk ")]
                     + [f"verify {t.target}" for t in self.plan.tables if f"verify {t.target}" in self.futures])
            for n in order:
                self.futures[n].result()  # the first failure in the sequential order
        finally:
            self.close()
        if self.integrity is not None:
            raise self.integrity
        if self.flush_errors:
            raise self.flush_errors[0]
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.pool.shutdown(wait=True, cancel_futures=True)  # on a failure: no need to go on
        for c in self.opened:
            c.close()
