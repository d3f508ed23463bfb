"""PostgreSQL major-version upgrade of a data directory, by dump and restore.

PostgreSQL major versions cannot read each other's data directories.  Here
the frozen old data is never touched: it is cloned, a temporary server of
the *old* version runs on the clone (private unix socket, no TCP), roles are
carried, every database is dumped with the old version's own pg_dump
(archive format: owners, grants, sequences, functions, types, views,
triggers all carried), a new data directory is initialised with the *new*
version's initdb and each dump is restored by the *new* pg_restore; finally
every database is compared old server against new server (every table's row
count and an order-independent checksum of its rows, every sequence's
state, the number of objects of each kind).  On any failure the new data
directory is removed.

This is the one implementation: ``upgrade_datadir`` (library level) and
the upgrade transaction (volmerge.upgrade.pgdata, which runs each version
inside its own image) both call ``dump_replay_verify``.

Who runs the binaries is injected: ``old_runner``/``new_runner`` run an argv
as an unprivileged user (PostgreSQL refuses root).  The default runs them on
this host; the upgrade transaction passes runners that execute inside the
old and the new image through the runtime, the directories bind-mounted.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from volmerge.strategies.errors import BadInput, NotDone

from .pgtemp import PgServer, Runner, give, local_runner, rmtree_quiet


@dataclass
class PgMajorResult:
    old_version: str
    new_version: str
    new_data: str
    databases: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"old_version": self.old_version, "new_version": self.new_version,
                "new_data": self.new_data, "databases": self.databases, "seconds": self.seconds}


def data_version(datadir: str) -> str:
    try:
        with open(os.path.join(datadir, "PG_VERSION")) as f:
            return f.read().strip()
    except FileNotFoundError:
        raise BadInput(f"{datadir}: not a PostgreSQL data directory (no PG_VERSION)") from None


def clone_datadir(src: str, dst: str) -> None:
    """A private copy of frozen data (reflinks where the filesystem has them)."""
    proc = subprocess.run(["cp", "-a", "--reflink=auto", src, dst], capture_output=True, text=True)
    if proc.returncode != 0:
        raise NotDone(f"cloning {src} failed: {proc.stderr.strip()}")
    for stale in ("postmaster.pid", "postmaster.opts"):
        try:
            os.unlink(os.path.join(dst, stale))
        except FileNotFoundError:
            pass


def upgrade_datadir(old_data: str, new_data: str, old_bindir: str, new_bindir: str, *,
                    workdir: str, old_runner: Runner | None = None, new_runner: Runner | None = None,
                    superuser: str = "postgres") -> PgMajorResult:
    """Upgrade the PostgreSQL data directory ``old_data`` (frozen, left
    untouched) into the new data directory ``new_data`` (must not exist).
    ``result.databases`` holds one ``verify_database`` dict per database."""
    t0 = time.monotonic()
    old_ver = data_version(old_data)
    if os.path.lexists(new_data):
        raise BadInput(f"{new_data}: already exists")
    for b in (old_bindir, new_bindir):
        if not os.path.exists(os.path.join(b, "postgres")):
            raise BadInput(f"{b}: no PostgreSQL server binaries there")
    os.makedirs(workdir, exist_ok=True)
    dbs = dump_replay_verify(old_data, new_data, workdir, old_bindir, new_bindir,
                             old_runner or local_runner(), new_runner or local_runner(),
                             superuser=superuser)
    result = PgMajorResult(old_ver, data_version(new_data), new_data, dbs)
    result.seconds = round(time.monotonic() - t0, 3)
    return result


Timing = Callable[[str, float], None]
#: the settings pg_upgrade starts its servers with for the bulk work
BULK = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"}


def dump_replay_verify(old_data: str | os.PathLike[str], new_data: str | os.PathLike[str],
                       workdir: str | os.PathLike[str], old_bindir: str, new_bindir: str,
                       old_runner: Runner, new_runner: Runner, *, timing: Timing | None = None,
                       superuser: str = "postgres") -> list[dict[str, Any]]:
    """The old server on a copy of ``old_data``; roles carried, then every
    database dumped with the old pg_dump (archive format, owners and grants
    kept) and restored by the new pg_restore (everything pg_dump carries:
    sequences, functions, types, views, triggers...); then old server
    against new, database by database (``verify_database``).  ``new_data``
    is removed on any failure; ``timing(step, seconds)``, when given, hears
    how long the copy and the verification took."""
    work = os.fspath(workdir)
    new_data = os.fspath(new_data)
    clone = os.path.join(work, "old-data")
    # Both servers run as pg_upgrade runs the new one: nothing fsynced
    # along the way (the clone is thrown away; a failure removes the new
    # directory), the new directory synced once at the end.
    old_srv = PgServer(old_bindir, clone, os.path.join(work, "old-sock"), old_runner, port=5432,
                       superuser=superuser, options=dict(BULK))
    new_srv = PgServer(new_bindir, new_data, os.path.join(work, "new-sock"), new_runner, port=5433,
                       superuser=superuser, options=dict(BULK))
    tick = timing or (lambda step, seconds: None)
    started: list[PgServer] = []
    try:
        t0 = time.monotonic()
        clone_datadir(os.fspath(old_data), clone)
        give(clone, old_runner)
        tick("copy data", time.monotonic() - t0)
        old_srv.start()
        started.append(old_srv)
        enc, collate = _cluster_settings(old_srv)
        _initdb(new_srv, enc, collate)
        new_srv.start()
        started.append(new_srv)
        _roles(old_srv, new_srv)
        dumps = os.path.join(work, "dumps")
        os.makedirs(dumps)
        give(dumps, old_runner)
        out = []
        for db in _databases(old_srv):
            # The archive format, restored straight into the new server by
            # its pg_restore: no psql meta-commands ever run from a dump.
            dump = os.path.join(dumps, f"{len(out)}.dump")
            create = db != "postgres"
            _ok(old_runner([os.path.join(old_bindir, "pg_dump"), "-h", old_srv.sockdir,
                            "-p", str(old_srv.port), "-U", superuser, "-Fc", "-Z", "0",
                            "-f", dump, "-d", conninfo_dbname(db)]),
                f"pg_dump of {db} (old version)")
            _ok(new_runner([os.path.join(new_bindir, "pg_restore"), "--exit-on-error",
                            "-h", new_srv.sockdir, "-p", str(new_srv.port), "-U", superuser]
                           + (["--create", "-d", "postgres"] if create else ["-d", db]) + [dump]),
                f"restore of {db} (new version)")
            os.unlink(dump)
            t0 = time.monotonic()
            out.append(verify_database(old_srv, new_srv, db))
            tick("verify", time.monotonic() - t0)
        for srv in reversed(started):
            srv.stop()
        started.clear()
        t0 = time.monotonic()
        _ok(new_runner([os.path.join(new_bindir, "initdb"), "--sync-only", "-D", new_data]),
            "sync of the new data directory")
        tick("sync", time.monotonic() - t0)
        return out
    except BaseException:
        for srv in reversed(started):
            try:
                srv.stop()
            except Exception:  # noqa: BLE001 - keep the original error
                pass
        rmtree_quiet(new_data)
        raise
    finally:
        rmtree_quiet(clone)
        for d in ("old-sock", "new-sock", "dumps"):
            rmtree_quiet(os.path.join(work, d))


def _ok(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        msg = [ln for ln in (proc.stderr or proc.stdout or "").strip().splitlines() if ln.strip()]
        raise NotDone(f"{what} failed: {msg[-1] if msg else 'exit ' + str(proc.returncode)}")


def _initdb(srv: PgServer, enc: str, collate: str) -> None:
    os.makedirs(srv.datadir, mode=0o700)
    give(srv.datadir, srv.runner)
    proc = srv.runner([os.path.join(srv.bindir, "initdb"), "-D", srv.datadir, "-U", srv.superuser,
                       "--auth=trust", "-E", enc, f"--locale={collate}", "--no-sync"])
    if proc.returncode != 0:
        raise NotDone(f"initdb (new version) failed: {(proc.stderr or proc.stdout).strip()[-300:]}")


def _cluster_settings(srv: PgServer) -> tuple[str, str]:
    import psycopg

    with psycopg.connect(srv.url("postgres")) as c:
        enc, coll = c.execute("SELECT pg_encoding_to_char(encoding), datcollate FROM pg_database "
                              "WHERE datname = 'template1'").fetchone()
    return enc, coll


def conninfo_dbname(name: str) -> str:
    """A database name as a libpq connection string: a name read from a
    (possibly hostile) data directory that starts with ``-`` or holds ``=``
    is never taken as an option or as connection parameters."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _databases(srv: PgServer) -> list[str]:
    import psycopg

    with psycopg.connect(srv.url("postgres")) as c:
        return [r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datallowconn AND "
                                        "datname <> 'template1' ORDER BY datname").fetchall()]


def _roles(old: PgServer, new: PgServer) -> None:
    """Roles with the old pg_dumpall; the bootstrap superuser exists already."""
    import psycopg

    proc = old.runner([os.path.join(old.bindir, "pg_dumpall"), "--roles-only", "-h", old.sockdir,
                       "-p", str(old.port), "-U", old.superuser])
    if proc.returncode != 0:
        raise NotDone(f"pg_dumpall --roles-only (old version) failed: {proc.stderr.strip()[-300:]}")
    with psycopg.connect(new.url("postgres"), autocommit=True) as c:
        for line in proc.stdout.splitlines():
            line = line.strip()
            if not line or line.startswith("--") or line.startswith("\\") or line.startswith("SET "):
                continue
            if line.startswith(f"CREATE ROLE {old.superuser};"):
                continue
            try:
                c.execute(line)
            except psycopg.errors.DuplicateObject:
                pass


# -- verification: old server against new ------------------------------------------

_USER_NS = ("n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'")
_OBJECTS = f"""
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


def _names(c: Any, kinds: str) -> list[str]:
    return [r[0] for r in c.execute(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n "
        f"ON n.oid = c.relnamespace WHERE c.relkind IN ({kinds}) AND {_USER_NS} ORDER BY 1").fetchall()]


def _table_sum(c: Any, t: str) -> tuple[int, str]:
    """Row count and an order-independent checksum of every row's text."""
    r = c.execute(
        "SELECT count(*), coalesce(sum(('x' || substr(h, 1, 15))::bit(60)::bigint), 0), "
        "coalesce(sum(('x' || substr(h, 16, 15))::bit(60)::bigint), 0) "
        f"FROM (SELECT md5(t::text) AS h FROM ONLY {t} t) s").fetchone()
    return int(r[0]), f"{r[1]}:{r[2]}"


def verify_database(old: PgServer, new: PgServer, db: str) -> dict[str, Any]:
    """Old server against new: the same tables (``schema.table`` names), each
    table's row count and checksum, each sequence's state, and the number of
    objects of each kind.  NotDone on any difference."""
    import psycopg

    with psycopg.connect(old.url(db)) as a, psycopg.connect(new.url(db)) as b:
        tables = _names(a, "'r', 'p'")
        if _names(b, "'r', 'p'") != tables:
            raise NotDone(f"verification failed: database {db}: the new server has other tables")
        checked = []
        for t in tables:
            x, y = _table_sum(a, t), _table_sum(b, t)
            if x != y:
                raise NotDone(f"verification failed: database {db} table {t}: old server "
                              f"{x[0]} rows, new server {y[0]} rows, or their checksums differ")
            checked.append({"table": t, "rows": x[0]})
        seqs = []
        for s in _names(a, "'S'"):
            x = a.execute(f"SELECT last_value, is_called FROM {s}").fetchone()
            y = b.execute(f"SELECT last_value, is_called FROM {s}").fetchone()
            if tuple(x) != tuple(y):
                raise NotDone(f"verification failed: database {db} sequence {s}: old {tuple(x)}, "
                              f"new {tuple(y)}")
            seqs.append({"sequence": s, "last_value": int(x[0]), "is_called": bool(x[1])})
        ox = dict(a.execute(_OBJECTS).fetchall())
        oy = dict(b.execute(_OBJECTS).fetchall())
        if ox != oy:
            diff = sorted(k for k in set(ox) | set(oy) if ox.get(k) != oy.get(k))
            raise NotDone(f"verification failed: database {db}: object counts differ ({', '.join(diff)})")
    return {"database": db, "tables": checked, "sequences": seqs, "objects": ox, "verified": True}


def pg_upgrade_copy(old_data: str, new_data: str, old_bindir: str, new_bindir: str, *,
                    workdir: str, runner: Runner | None = None, superuser: str = "postgres") -> None:
    """The peer: ``pg_upgrade --copy`` on a clone of ``old_data`` (for
    comparison in tests and benchmarks)."""
    runner = runner or local_runner()
    os.makedirs(workdir, exist_ok=True)
    clone = os.path.join(workdir, "pgu-old")
    clone_datadir(old_data, clone)
    give(clone, runner)
    srv = PgServer(old_bindir, clone, os.path.join(workdir, "pgu-sock"), runner, superuser=superuser)
    srv.start()
    try:
        enc, coll = _cluster_settings(srv)
    finally:
        srv.stop()
    new = PgServer(new_bindir, new_data, os.path.join(workdir, "pgu-sock"), runner, superuser=superuser)
    _initdb(new, enc, coll)
    cwd = os.path.join(workdir, "pgu-cwd")
    os.makedirs(cwd, exist_ok=True)
    give(cwd, runner)
    proc = runner(["sh", "-c", f"cd {cwd} && exec {os.path.join(new_bindir, 'pg_upgrade')} "
                               f"-b {old_bindir} -B {new_bindir} -d {clone} -D {new_data} "
                               f"-U {superuser} --copy -s {os.path.join(workdir, 'pgu-sock')}"])
    rmtree_quiet(clone)
    rmtree_quiet(cwd)
    if proc.returncode != 0:
        raise NotDone(f"pg_upgrade failed: {(proc.stdout + proc.stderr).strip()[-400:]}")
