"""The store root and its state database."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from volmerge.runtime.errors import BadInput
from volmerge.runtime.store import Store


def test_root_layout_and_pragmas(root: Path) -> None:
    s = Store(root)
    for sub in ("blobs/sha256", "layers", "l", "containers", "volumes", "locks", "tmp"):
        assert (root / sub).is_dir()
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    s.close()


def _synchronous(db: sqlite3.Connection) -> str:
    return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[db.execute("PRAGMA synchronous").fetchone()[0]]


def test_transactions_are_durable_unless_asked_not_to_be(root: Path) -> None:
    """``synchronous = FULL`` (the WAL fsynced at COMMIT) by default and
    outside transactions; NORMAL only inside ``durable=False``; a durable
    block cannot join a non-durable one (SQLite cannot raise the level inside
    a transaction: it would silently not be durable)."""
    s = Store(root)
    s.ensure_schema("demo", ["CREATE TABLE t (a INTEGER);"])
    assert _synchronous(s.db) == "FULL"
    with s.transaction() as db:
        assert _synchronous(db) == "FULL"
        db.execute("INSERT INTO t VALUES (1)")
    with s.transaction(durable=False) as db:
        assert _synchronous(db) == "NORMAL"
        db.execute("INSERT INTO t VALUES (2)")
        with s.transaction(durable=False):  # joins
            db.execute("INSERT INTO t VALUES (3)")
    assert _synchronous(s.db) == "FULL"
    with pytest.raises(RuntimeError, match="durable"):
        with s.transaction(durable=False) as db:
            db.execute("INSERT INTO t VALUES (4)")
            with s.transaction():
                pass
    assert _synchronous(s.db) == "FULL"
    assert [r[0] for r in s.db.execute("SELECT a FROM t ORDER BY a")] == [1, 2, 3]  # 4: undone
    with s.transaction() as db:  # a durable block within a durable one: joins
        with s.transaction() as inner:
            assert _synchronous(inner) == "FULL"
    s.close()


def test_the_upgrade_journals_begin_is_durable(root: Path) -> None:
    """"journal BEGIN durable before anything changes": the commit of its
    rows runs at ``synchronous = FULL``, whatever transaction came before."""
    from volmerge.upgrade.journal import Journal

    s = Store(root)
    with s.transaction(durable=False):  # a container's run state, say
        pass
    statements: list[str] = []
    s.db.set_trace_callback(statements.append)
    try:
        Journal.begin(s, container="c", kind="upgrade", from_image="a", to_image="b", plan={},
                      steps=[("stop", {})])
    finally:
        s.db.set_trace_callback(None)
    first = next(i for i, st in enumerate(statements) if "INSERT INTO upgrade_journal" in st)
    begin = max(i for i, st in enumerate(statements[:first]) if st.startswith("BEGIN"))
    level = [st for st in statements[:begin] if st.startswith("PRAGMA synchronous")][-1]
    assert level == "PRAGMA synchronous = FULL"
    assert "COMMIT" in statements[first:]
    assert not any(st.startswith("PRAGMA synchronous") for st in statements[begin:])
    s.close()


def test_migrations_apply_once_and_in_order(root: Path) -> None:
    s = Store(root)
    migs = ["CREATE TABLE t (a INTEGER);", "ALTER TABLE t ADD COLUMN b TEXT;"]
    s.ensure_schema("demo", migs[:1])
    s.close()
    s2 = Store(root)
    s2.ensure_schema("demo", migs)  # only the second runs
    cols = [r[1] for r in s2.db.execute("PRAGMA table_info(t)")]
    assert cols == ["a", "b"]
    v = s2.db.execute("SELECT version FROM schema_version WHERE component='demo'").fetchone()[0]
    assert v == 2
    s2.close()


def test_newer_schema_is_refused(root: Path) -> None:
    s = Store(root)
    s.ensure_schema("demo", ["CREATE TABLE t (a);", "CREATE TABLE u (a);"])
    s.close()
    with pytest.raises(BadInput, match="newer volmerge"):
        Store(root).ensure_schema("demo", ["CREATE TABLE t (a);"])


def test_failed_migration_rolls_back(root: Path) -> None:
    s = Store(root)
    with pytest.raises(sqlite3.OperationalError):
        s.ensure_schema("demo", ["CREATE TABLE t (a); CREATE TABLE t (a);"])
    assert s.db.execute("SELECT count(*) FROM sqlite_master WHERE name='t'").fetchone()[0] == 0
    s.close()


def test_crash_leftovers_in_tmp_are_swept(root: Path) -> None:
    s = Store(root)
    d = s.tmpdir("extract-")
    (d / "partial").write_bytes(b"x")
    s.close()
    Store(root)  # opening sweeps
    assert os.listdir(root / "tmp") == []


def test_root_that_is_a_file_is_bad_input(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(BadInput, match="not a directory"):
        Store(f)


WRITER = r"""
import sys
from volmerge.runtime.store import Store
s = Store(sys.argv[1])
s.ensure_schema("counter", ["CREATE TABLE c (k TEXT PRIMARY KEY, n INTEGER NOT NULL);"])
for i in range(200):
    with s.transaction() as db:
        row = db.execute("SELECT n FROM c WHERE k='x'").fetchone()
        n = (row[0] if row else 0) + 1
        db.execute("INSERT INTO c(k, n) VALUES('x', ?) ON CONFLICT(k) DO UPDATE SET n=excluded.n", (n,))
"""


def test_parallel_writers_never_lose_updates(root: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root)]) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    s = Store(root)
    assert s.db.execute("SELECT n FROM c WHERE k='x'").fetchone()[0] == 800
    assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    s.close()


@pytest.mark.parametrize("bad, message", [
    ("", "store root is empty"),
    ("/proc/self/xyz", "kernel's proc file system"),
    ("/sys/volmerge", "kernel's sysfs file system"),
    ("/etc/hostname", "is not a directory"),
    ("/etc/hostname/x", "/etc/hostname is not a directory"),
])
def test_bad_store_roots_are_refused_by_the_cli(tmp_path: Path, bad: str, message: str) -> None:
    """--root "" once made a store in the working directory; /proc paths gave a traceback.
    (``/`` and ``/etc`` are refused too, but not tried here: a regression would
    change the host's own directories.)"""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for args in (["--root", bad, "ps"], ["--root", bad, "run", "img"]):
        p = subprocess.run([sys.executable, "-m", "volmerge", *args], cwd=cwd, capture_output=True,
                           text=True, timeout=60, env={k: v for k, v in os.environ.items()
                                                      if k != "VOLMERGE_ROOT"})
        assert p.returncode == 2, p.stderr
        assert p.stderr.startswith("volmerge: error: ") and message in p.stderr, p.stderr
        assert len(p.stderr.splitlines()) == 1
    assert os.listdir(cwd) == []


@pytest.mark.unit
def test_an_empty_volmerge_root_is_not_the_default(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``VOLMERGE_ROOT=`` (a script's ``VOLMERGE_ROOT=$DIR`` with DIR unset)
    opened the machine's default store, where ``--root ""`` is refused."""
    from volmerge.runtime.storeroot import DEFAULT_ROOT, default_root

    monkeypatch.setenv("VOLMERGE_ROOT", "")
    assert default_root() == ""
    with pytest.raises(BadInput, match="store root is empty"):
        Store()
    monkeypatch.delenv("VOLMERGE_ROOT")
    assert default_root() == DEFAULT_ROOT


def test_an_empty_volmerge_root_is_refused_by_the_cli(tmp_path: Path) -> None:
    for args in (["ps"], ["run", "img"], ["volume", "ls"]):
        p = subprocess.run([sys.executable, "-m", "volmerge", *args], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, VOLMERGE_ROOT=""))
        assert p.returncode == 2, p.stderr
        assert p.stderr.startswith("volmerge: error: store root is empty"), p.stderr
    assert os.listdir(tmp_path) == []


def test_a_directory_with_other_content_is_not_made_a_store(tmp_path: Path) -> None:
    d = tmp_path / "home"
    d.mkdir(mode=0o755)
    (d / "notes.txt").write_text("mine")
    with pytest.raises(BadInput, match="not a volmerge store"):
        Store(d)
    assert os.listdir(d) == ["notes.txt"] and stat.S_IMODE(d.stat().st_mode) == 0o755


def test_opening_the_store_again_keeps_a_live_connections_locks(root: Path) -> None:
    """A second Store in a process whose first one holds a write transaction:
    the root's checks must not close a descriptor of state.db or its -shm
    (POSIX locks die with any close of the file in the process), or another
    process could write under that transaction."""
    first = Store(root)
    first.db.execute("CREATE TABLE IF NOT EXISTS t (x)")
    for f in ("state.db", "state.db-wal", "state.db-shm"):
        os.chmod(root / f, 0o644)  # so the second open has something to tighten
    first.db.execute("BEGIN IMMEDIATE")
    first.db.execute("INSERT INTO t VALUES (1)")
    second = Store(root)  # prepare_root: secure_db_files over the live files
    try:
        assert stat.S_IMODE(os.stat(root / "state.db-shm").st_mode) == 0o600
        other = subprocess.run(
            [sys.executable, "-c",
             "import sqlite3, sys\n"
             "c = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
             "try:\n"
             "    c.execute('BEGIN IMMEDIATE')\n"
             "except sqlite3.OperationalError as e:\n"
             "    print(e)\n",
             str(root / "state.db")], capture_output=True, text=True, timeout=30)
        assert "locked" in other.stdout, (other.stdout, other.stderr)
    finally:
        first.db.execute("ROLLBACK")
        second.close()
        first.close()
