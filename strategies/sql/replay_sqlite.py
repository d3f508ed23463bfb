"""Replay into a fresh SQLite file: set-based, verified, renamed into place.

The source is ATTACHed read-only and every table is one
``INSERT INTO main.t (...) SELECT <mapping expressions> FROM src.t``: SQLite
does the work in C, and an identity mapping takes SQLite's transfer
optimisation (records copied without decoding).  The file is built beside
the destination under a temporary name and renamed into place only when
verified; any failure deletes it, so nothing is ever half done.

From a SQLite source on a machine with more than one core, each table is
committed into that file as soon as it is loaded and checked on another
core while the next one loads (:class:`_Checker`); the checks read the
source again, so a live source that was written meanwhile (``PRAGMA
data_version``) sends the replay round again the sequential way: schema,
rows, sequences, indexes, checks and verification in one transaction,
inside which the source is one consistent snapshot.  A PostgreSQL source
always goes that way.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from volmerge.strategies.errors import BadInput, NotDone

from . import keyed, render, verify
from .diff import TableMap
from .replay import Progress, cpus
from .schema import quote


def replay_sqlite(plan: Any, dst: str, progress: Progress | None = None) -> dict[str, Any]:
    from .plan import ReplayPlan

    assert isinstance(plan, ReplayPlan)
    plan.check()
    dst = os.path.abspath(dst)
    if os.path.lexists(dst):
        raise BadInput(f"{dst}: already exists (the replay writes a new database)")
    d = os.path.dirname(dst)
    if not os.path.isdir(d):
        raise BadInput(f"{d}: no such directory")
    _sweep(d, os.path.basename(dst))
    stem = os.path.join(d, f".{os.path.basename(dst)}.volmerge-{uuid.uuid4().hex[:8]}")
    tmp = stem + ".tmp"
    lock = _hold(stem + ".lock")
    t0 = time.monotonic()
    # see the module's docstring
    parallel = plan.ours.engine == "sqlite" and cpus() > 1
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
                _remove(tmp)
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
        os.rename(tmp, dst)
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        _remove(tmp)
        raise
    finally:
        _let_go(stem + ".lock", lock)
    result["seconds"] = round(time.monotonic() - t0, 3)
    result["dst"] = dst
    return result


def _hold(path: str) -> int:
    """A lock file beside the temporary file, flock()ed for as long as the
    replay runs (and let go with the process, however it ends): how a later
    replay tells a live build's files from those of one that was killed."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _let_go(path: str, fd: int) -> None:
    _unlink([path])  # first: a file without its lock file is a dead one's
    os.close(fd)


STALE = 10.0  # seconds: younger unlocked files may be a build between creating its lock and taking it


def _sweep(d: str, base: str) -> list[str]:
    """Remove what replays into ``d/base`` that were killed left beside it
    (a temporary database, its journal, a lock file nobody holds).  Returns
    the paths removed."""
    import fcntl
    import glob

    gone: list[str] = []
    now = time.time()
    stems: dict[str, list[str]] = {}
    for path in glob.glob(os.path.join(glob.escape(d), f".{glob.escape(base)}.volmerge-*")):
        name = os.path.basename(path)[len(base) + 2:]  # ".BASE." off: volmerge-XXXXXXXX.tmp[-journal] | .lock
        stem = name.split(".", 1)[0]
        stems.setdefault(stem, []).append(path)
    for paths in stems.values():
        try:
            if any(now - os.lstat(p).st_mtime < STALE for p in paths):
                continue
        except FileNotFoundError:
            continue
        lock = next((p for p in paths if p.endswith(".lock")), None)
        if lock is not None:
            try:
                fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # a replay is running there
            try:
                gone += _unlink(sorted(paths, key=lambda p: p == lock))  # the lock file last
            finally:
                os.close(fd)
        else:
            gone += _unlink(paths)
    return gone


def _unlink(paths: list[str]) -> list[str]:
    """Remove what exists of ``paths``; the ones removed."""
    gone = []
    for p in paths:
        try:
            os.unlink(p)
            gone.append(p)
        except OSError:
            pass
    return gone


def _remove(tmp: str) -> None:
    _unlink([tmp, tmp + "-journal", tmp + "-wal", tmp + "-shm"])


class _SourceGuard:
    """Tells whether a live (not frozen) SQLite input was written while the
    replay ran: ``PRAGMA data_version`` of one connection changes when any
    other connection — any process — commits to the file."""

    def __init__(self, plan: Any) -> None:
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


def _key_exprs(plan: Any, tm: TableMap) -> list[str]:
    """Source expressions that identify a row in messages: its primary key, else rowid."""
    src_t = plan.ours.schema.table(tm.source)
    if src_t is not None and src_t.pk:
        return [quote(c) for c in src_t.pk]
    return ["rowid"]


def _build(plan: Any, tmp: str, progress: Progress | None, parallel: bool) -> dict[str, Any]:
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

    checker: _Checker | None = None
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
            checker = _Checker(conn, plan, tmp, tables_out, phases)
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
                    from .pg import copy_pg_to_sqlite

                    copy_pg_to_sqlite(plan, tm, conn)
            elif tm.origin == "theirs" and tm.rows:
                cols = [quote(c.name) for c in plan.target.tables[tm.target].columns
                        if plan.theirs.schema.table(tm.target).col(c.name) is not None]
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
        for what, objects, ddl_of in (("view", target.views, render.view_ddl),
                                      ("trigger", target.triggers, render.trigger_ddl)):
            for obj in objects.values():
                ddl = ddl_of(obj, target.dialect, "sqlite")
                if ddl:
                    try:
                        conn.execute(ddl)
                    except sqlite3.Error as e:
                        raise NotDone(f"{what} {obj.name}: {e}") from None
        phase("indexes")
        if checker is not None:
            checker.check_integrity()
            checker.commit()
            phase("commit")
            checks = checker.finish()
            _check_settings(conn, plan)
            phase("checks (after the load)")
            return {"tables": tables_out, "verified": checks, "phases": phases}
        for child in _fk_children(conn):
            _fk_check(conn, child)
        phase("foreign keys")
        checks = verify_sqlite(conn, plan, tables_out)
        phase("verify")
        conn.execute("COMMIT")
        _quick_check(conn)
        _check_settings(conn, plan)
        phase("integrity")
        return {"tables": tables_out, "verified": checks, "phases": phases}
    finally:
        if checker is not None:
            checker.close()
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
        pgc = getattr(plan, "_pg_src_conn", None)
        if pgc is not None:
            pgc.close()
            plan._pg_src_conn = None


def _settings(conn: sqlite3.Connection, plan: Any, names: tuple[str, ...]) -> None:
    """The target's database settings (plan.target_settings) of ``names``."""
    for name in names:
        value = plan.target.settings.get(name)
        if value is not None:
            conn.execute(f"PRAGMA main.{name} = {int(value)}")


def _check_settings(conn: sqlite3.Connection, plan: Any) -> None:
    for name, want in plan.target.settings.items():
        got = conn.execute(f"PRAGMA main.{name}").fetchone()[0]
        if got != want:
            raise NotDone(f"the new database's {name} is {got}, not {want}")


def _validate_casts(conn: sqlite3.Connection, plan: Any) -> None:
    for tm in plan.tables:
        if tm.origin != "ours" or not tm.rows:
            continue
        for c in tm.columns:
            if c.check and c.source:
                keys = _key_exprs(plan, tm)
                row = conn.execute(
                    f"SELECT {', '.join(keys)}, {quote(c.source)} FROM src.{quote(tm.source)} "
                    f"WHERE vm_bad({quote(c.source)}, ?) LIMIT 1", (c.check,)).fetchone()
                if row is not None:
                    key = ", ".join(f"{k.strip(chr(34))}={v!r}" for k, v in zip(keys, row[:-1]))
                    raise NotDone(f"value does not convert: table {tm.source} row {key}: column "
                                  f"{c.source} value {row[-1]!r} is not {c.check} ({c.from_type} -> "
                                  f"{c.to_type})")


def _identity(plan: Any, tm: TableMap) -> bool:
    src_t = plan.ours.schema.table(tm.source)
    tgt_t = plan.target.tables[tm.target]
    return (len(tm.columns) == len(tgt_t.columns) == len(src_t.columns)
            and all(c.how == "same" and c.source == sc.name and c.target == tc.name
                    for c, sc, tc in zip(tm.columns, src_t.columns, tgt_t.columns)))


def _insert_select(conn: sqlite3.Connection, plan: Any, tm: TableMap) -> None:
    carried = tm.carried
    if _identity(plan, tm):
        sql = f"INSERT INTO main.{quote(tm.target)} SELECT * FROM src.{quote(tm.source)}"
    else:
        sql = (f"INSERT INTO main.{quote(tm.target)} ({', '.join(quote(c.target) for c in carried)}) "
               f"SELECT {', '.join(c.expr for c in carried)} FROM src.{quote(tm.source)}")  # type: ignore[misc]
    try:
        conn.execute(sql)
    except sqlite3.IntegrityError as e:
        raise NotDone(_find_bad_row(conn, plan, tm, str(e))) from None
    except sqlite3.Error as e:
        raise NotDone(f"replay of table {tm.target}: {e}") from None


def _find_bad_row(conn: sqlite3.Connection, plan: Any, tm: TableMap, error: str) -> str:
    """The first source row the target refuses (only on the failure path)."""
    carried = tm.carried
    keys = _key_exprs(plan, tm)
    cur = conn.execute(f"SELECT {', '.join(keys)}, {', '.join(c.expr for c in carried)} "  # type: ignore[misc]
                       f"FROM src.{quote(tm.source)}")
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


def _sequences(conn: sqlite3.Connection, plan: Any) -> None:
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


def _keyed(conn: sqlite3.Connection, plan: Any, tm: TableMap) -> keyed.KeyedCheck | None:
    """The keyed comparison for a table whose source is ATTACHed, when it has a usable key."""
    if tm.origin == "ours" and tm.source and plan.ours.engine == "sqlite":
        pairs = [(c.target, c.expr, c.source if c.how in ("same", "renamed") else None)
                 for c in tm.carried]
        return keyed.keyed_check(conn, tm.target, "src", tm.source, pairs)  # type: ignore[arg-type]
    if tm.origin == "theirs" and tm.rows:
        cols = [c.name for c in plan.target.tables[tm.target].columns
                if plan.theirs.schema.table(tm.target).col(c.name) is not None]
        return keyed.keyed_check(conn, tm.target, "th", tm.target, [(c, quote(c), c) for c in cols])
    return None


def verify_sqlite(conn: sqlite3.Connection, plan: Any, tables_out: list[dict[str, Any]]) -> bool:
    """Every carried column of every row, both sides: by key in one join
    where the table has a usable key (keyed.py), else row counts and
    order-independent checksums (verify.py)."""
    by_name = {t["table"]: t for t in tables_out}
    for tm in plan.tables:
        _verify_table(conn, plan, tm, by_name[tm.target], _keyed(conn, plan, tm))
    return True


def _verify_table(conn: sqlite3.Connection, plan: Any, tm: TableMap, out: dict[str, Any],
                  kc: keyed.KeyedCheck | None) -> None:
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
            src = verify.sqlite_checksum(conn, [c.expr for c in carried],  # type: ignore[misc]
                                         f"src.{quote(tm.source)}")
        else:
            from .pg import pg_checksum_py

            src = pg_checksum_py(plan, tm)
        dst = verify.sqlite_checksum(conn, [quote(c.target) for c in carried],
                                     f"main.{quote(tm.target)}")
        if plan.ours.engine != "sqlite":
            dst = verify.py_checksum(conn.execute(
                f"SELECT {', '.join(quote(c.target) for c in carried) or 'NULL'} "
                f"FROM main.{quote(tm.target)}"))
    elif tm.origin == "theirs" and tm.rows:
        cols = [quote(c.name) for c in plan.target.tables[tm.target].columns
                if plan.theirs.schema.table(tm.target).col(c.name) is not None]
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
        cols = _mismatched_columns(conn, plan, tm)
        raise NotDone(f"verification failed: table {tm.target}: checksum differs"
                      + (f" in column(s) {', '.join(cols)}" if cols else ""))


def _fk_children(conn: sqlite3.Connection) -> list[str]:
    """Tables that have foreign keys, as the new file itself says."""
    return [r[0] for r in conn.execute(
        "SELECT DISTINCT m.name FROM main.sqlite_master AS m, "
        "pragma_foreign_key_list(m.name, 'main') WHERE m.type = 'table' ORDER BY m.rowid")]


def _fk_check(conn: sqlite3.Connection, child: str) -> None:
    fk = conn.execute(f"PRAGMA main.foreign_key_check({quote(child)})").fetchone()
    if fk is not None:
        table, rowid, parent, _ = fk
        raise NotDone(f"constraint violation: table {table} row {rowid}: foreign key to {parent} "
                      f"has no matching row")


def _quick_check(conn: sqlite3.Connection) -> None:
    # quick_check, not integrity_check: what the latter adds (index entries
    # against table rows) is a given for indexes SQLite has just built from
    # those rows; b-tree soundness and NOT NULL/CHECK are checked
    bad = conn.execute("PRAGMA main.quick_check").fetchone()[0]
    if bad != "ok":
        raise NotDone(f"integrity check failed on the new database: {bad}")


class _Checker:
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

    def __init__(self, conn: sqlite3.Connection, plan: Any, tmp: str,
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
        self.fk_parents = {child: self._parents(child) for child in _fk_children(conn)}
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
        self._submit(f"verify {tm.target}", lambda: _verify_table(
            self._reader(), self.plan, tm, out, _keyed(self._reader(), self.plan, tm)))

    def _ready_fks(self, final: bool) -> None:
        for child, parents in list(self.fk_parents.items()):
            if final or (parents is not None and parents | {child} <= self.loaded_tables):
                del self.fk_parents[child]
                self._submit(f"fk {child}", lambda ch=child: _fk_check(self._reader(), ch))

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
            _quick_check(self.conn)
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


def _mismatched_columns(conn: sqlite3.Connection, plan: Any, tm: TableMap) -> list[str]:
    if plan.ours.engine != "sqlite" or tm.origin != "ours":
        return []
    bad = []
    for c in tm.carried:
        a = verify.sqlite_checksum(conn, [c.expr], f"src.{quote(tm.source)}")  # type: ignore[list-item]
        b = verify.sqlite_checksum(conn, [quote(c.target)], f"main.{quote(tm.target)}")
        if a.digest != b.digest:
            bad.append(c.target)
    return bad
