"""The store root: directories, the state database, locks, crash sweeping.

Layout below the root (default ``/var/lib/volmerge``; ``--root`` or
``VOLMERGE_ROOT`` override)::

    state.db          SQLite (WAL, foreign keys) shared by every component
    blobs/sha256/     verified image blobs (manifests, configs, compressed layers)
    layers/<hex>/     extracted layers, overlay-ready (whiteouts as 0:0 devices)
    l/<short>         short symlinks to layer dirs, to keep overlay options small
    containers/<id>/  bundles, container layers, logs, supervisor state
    volumes/<name>/   volume layer stacks
    locks/            flock files
    tmp/              work in progress; anything here at open is a crash leftover

Each component owns its tables and migrations and asks the store to bring
them up to date with :meth:`Store.ensure_schema` before first use, so that
components (runtime, volmerge) never edit one shared migration list.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from . import fsutil
from .errors import BadInput

DEFAULT_ROOT = "/var/lib/volmerge"
SUBDIRS = ("blobs/sha256", "layers", "l", "containers", "volumes", "locks", "tmp")

Sweeper = Callable[["Store"], None]
_SWEEPERS: dict[str, Sweeper] = {}


def register_sweeper(name: str, fn: Sweeper) -> None:
    """Register a function run when a store is opened for writing, to remove
    or finish work that a crash left marked incomplete (architecture.md, principle 4)."""
    _SWEEPERS[name] = fn


def default_root() -> Path:
    return Path(os.environ.get("VOLMERGE_ROOT") or DEFAULT_ROOT)


class Store:
    def __init__(self, root: str | os.PathLike[str] | None = None, *, sweep: bool = True) -> None:
        self.root = Path(root) if root is not None else default_root()
        if not self.root.is_absolute():
            self.root = Path.cwd() / self.root
        if self.root.exists() and not self.root.is_dir():
            raise BadInput(f"store root {self.root} is not a directory")
        for sub in SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)
        self._local = threading.local()
        self._schemas_done: set[str] = set()
        if sweep:
            self.sweep()

    # -- paths --------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.root / "state.db"

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def tmpdir(self, prefix: str) -> Path:
        """A fresh directory under ``tmp/``: crash leftovers are swept on open."""
        import tempfile

        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.root / "tmp"))

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
                conn.execute("PRAGMA synchronous = FULL")
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
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``: one writer at a time, across processes."""
        conn = self.db
        if conn.in_transaction:  # nested: join the outer transaction
            yield conn
            return
        for attempt in range(200):
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:  # busy beyond busy_timeout
                if "locked" not in str(exc) or attempt == 199:
                    raise
                time.sleep(0.05)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

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
        with self.lock("sweep"):
            tmp = self.root / "tmp"
            for entry in os.listdir(tmp):
                p = tmp / entry
                # A directory still locked by a live process is work in progress.
                lockfile = self.root / "locks" / f"tmp-{entry}.lock"
                if lockfile.exists():
                    try:
                        with fsutil.flock(lockfile, blocking=False):
                            pass
                    except BlockingIOError:
                        continue
                    lockfile.unlink(missing_ok=True)
                _force_remove(p)
            for fn in list(_SWEEPERS.values()):
                fn(self)


def _schema_version(conn: sqlite3.Connection, component: str) -> int:
    row = conn.execute("SELECT version FROM schema_version WHERE component = ?", (component,)).fetchone()
    return row[0] if row else 0


def _retry_locked(fn: Callable[[], None], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            fn()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


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
