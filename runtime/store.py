"""The store: the state database, locks, temporary work and crash sweeping,
below a root that runtime.storeroot checks and prepares (its layout and
permissions are described there).

Each component owns its tables and migrations and asks the store to bring
them up to date with :meth:`Store.ensure_schema` before first use, so that
components (runtime, volmerge) never edit one shared migration list.
"""

from __future__ import annotations

import contextlib
import os

# threading.local itself (threading.py binds this name), without importing
# threading (~0.5 ms) on the run path, which starts no thread
from _thread import _local as _ThreadLocal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from . import fsutil, incomplete
from .errors import BadInput
from .storeroot import default_root, prepare_root

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    import sqlite3
else:
    # The sqlite3 package is _sqlite3 plus the default date and time adapters
    # (deprecated since Python 3.12, never used here), whose datetime import is
    # ~1 ms of a cold ``run``; its classes are _sqlite3's, so code that imports
    # sqlite3 sees the same connections, rows and errors.
    import _sqlite3 as sqlite3

#: what a locked, busy or missing table raises (sqlite3.OperationalError)
OperationalError = sqlite3.OperationalError
#: the base of every error of the database (sqlite3.Error)
DatabaseError = sqlite3.Error

Sweeper = Callable[["Store"], None]
_SWEEPERS: dict[str, Sweeper] = {}


def register_sweeper(name: str, fn: Sweeper) -> None:
    """Register a function run when a store is opened for writing, to remove
    or finish work that a crash left marked incomplete (architecture.md, principle 4)."""
    _SWEEPERS[name] = fn


class Store:
    def __init__(self, root: str | os.PathLike[str] | None = None, *, sweep: bool = True) -> None:
        self.root = prepare_root(root if root is not None else default_root())
        self._local = _ThreadLocal()  # a connection per thread
        self._held: list[int] = []  # descriptors holding this process's tmpdir()s
        self._schemas_done: set[str] = set()
        # components that finished their crash recovery on this object (volumes.reader)
        self.recovered: set[str] = set()
        if sweep:
            self.sweep()

    # -- paths --------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.root / "state.db"

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def tmpdir(self, prefix: str) -> Path:
        """A fresh directory under ``tmp/``, marked incomplete and held (by this
        process, until :meth:`close`) so that a store opened meanwhile leaves it
        alone; the caller removes it, a crash leftover is swept on open.  Prefer
        :meth:`building`, which also removes it."""
        path, fd = incomplete.make(self.root / "tmp", prefix)
        self._held.append(fd)
        return path

    def building(self, prefix: str) -> contextlib.AbstractContextManager[Path]:
        """Work in progress: a directory under ``tmp/`` marked incomplete
        (runtime.incomplete) while the block runs, removed afterwards unless
        renamed into place inside the block; swept on open after a crash."""
        return incomplete.building(self.root / "tmp", prefix)

    # -- database -------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 60000")

            def setup() -> None:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":  # pragma: no cover - depends on the file system
                    raise BadInput(f"state database {self.db_path} cannot use WAL mode")
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA synchronous = FULL")  # see transaction()
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version ("
                    " component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
                )

            # Switching a new database to WAL takes an exclusive lock that a
            # racing process may answer with SQLITE_BUSY at once: try again.
            _retry_locked(setup)
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``: one writer at a time, across processes.

        ``durable`` (the default): when the block returns, the commit is on
        disk (``synchronous = FULL``: the WAL is fsynced at COMMIT), as what
        the product promises needs: the upgrade journal, generations, volume
        manifests, image and layer records that say work is done before
        files go.  ``durable=False`` (``synchronous = NORMAL`` for this one
        commit) is for a state that may be lost on power loss but never
        torn: WAL mode keeps the database consistent, and the commit reaches
        the disk with the next durable commit or checkpoint (at the latest
        when the last connection closes, i.e. a process exits).  Only the
        container engine's run state uses it (runtime/containers.py): a lost
        "running" or "exited" is reconciled from the processes, as ``ps``
        always is.

        A nested transaction joins the outer one; SQLite cannot raise the
        safety level inside a transaction, so a durable block inside a
        non-durable one is refused (RuntimeError: a bug in the caller)."""
        conn = self.db
        if conn.in_transaction:  # nested: join the outer transaction
            if durable and not getattr(self._local, "durable", True):
                raise RuntimeError("a durable transaction cannot join a non-durable one")
            yield conn
            return
        # per transaction, before BEGIN (the only place SQLite allows it)
        conn.execute("PRAGMA synchronous = FULL" if durable else "PRAGMA synchronous = NORMAL")
        self._local.durable = durable
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # busy beyond busy_timeout
                if not _is_locked(exc):
                    raise
                from .polling import retry

                retry(lambda: conn.execute("BEGIN IMMEDIATE"), when=_is_locked, attempts=199,
                      interval=0.05, max_interval=0.05)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")
        finally:
            self._local.durable = True
            if not durable and not conn.in_transaction:
                # anything outside transaction() (an autocommit statement) stays FULL
                conn.execute("PRAGMA synchronous = FULL")

    def ensure_schema(self, component: str, migrations: Sequence[str]) -> None:
        """Apply the component's migrations it has not had yet, atomically.

        ``migrations[i]`` takes the component from version ``i`` to ``i+1``;
        migrations are append-only.
        """
        if component in self._schemas_done:
            return
        # Inside a caller's transaction the migration commits (or rolls back)
        # with it: only remember it as done when it committed by itself.
        nested = self.db.in_transaction
        # Up to date (every open but the first): a read, not a write
        # transaction and its fsync.
        if _schema_version(self.db, component) == len(migrations):
            if not nested:
                self._schemas_done.add(component)
            return
        with self.transaction() as conn:
            have = _schema_version(conn, component)  # again: another process may have migrated
            if have > len(migrations):
                raise BadInput(
                    f"state database {self.db_path} was written by a newer volmerge "
                    f"({component} schema v{have}, this one knows v{len(migrations)})"
                )
            for i in range(have, len(migrations)):
                for stmt in _split_sql(migrations[i]):
                    conn.execute(stmt)
            conn.execute(
                "INSERT INTO schema_version(component, version) VALUES (?, ?)"
                " ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                (component, len(migrations)),
            )
        if not nested:
            self._schemas_done.add(component)

    def close(self) -> None:
        while self._held:  # tmpdir()s of this process: sweepable from now on
            os.close(self._held.pop())
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- locks ----------------------------------------------------------------
    def lock(self, name: str, *, blocking: bool = True) -> contextlib.AbstractContextManager[int]:
        safe = name.replace("/", "_")
        return fsutil.flock(self.root / "locks" / f"{safe}.lock", blocking=blocking)

    # -- crash sweeping ---------------------------------------------------------
    def sweep(self) -> None:
        """Crash leftovers: marked work under ``tmp/`` whose builder is dead
        (runtime.incomplete), anything else there (trash being deleted), then
        every registered sweeper."""
        with self.lock("sweep"):
            tmp = self.root / "tmp"
            incomplete.sweep(tmp, remove=_force_remove)
            for entry in os.listdir(tmp):
                if not incomplete.is_marked(entry):
                    _force_remove(tmp / entry)
            for fn in list(_SWEEPERS.values()):
                fn(self)


def _schema_version(conn: sqlite3.Connection, component: str) -> int:
    row = conn.execute("SELECT version FROM schema_version WHERE component = ?", (component,)).fetchone()
    return row[0] if row else 0


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _retry_locked(fn: Callable[[], None], seconds: float = 60) -> None:
    try:
        fn()
    except sqlite3.OperationalError as exc:
        if not _is_locked(exc):
            raise
        from .polling import retry

        retry(fn, when=_is_locked, timeout=seconds, interval=0.02, max_interval=0.02)


def _force_remove(p: Path) -> None:
    try:
        fsutil.rmtree(p)
    except OSError:
        # A leftover mount point: detach it, then remove.
        from . import sys as rsys

        rsys.umount_tree(p)
        fsutil.rmtree(p)


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (sqlite3 runs one at a time)."""
    out: list[str] = []
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n\t;"):
                out.append(buf.strip())
            buf = ""
    if buf.strip(" \n\t;"):
        out.append(buf.strip())
    return out

