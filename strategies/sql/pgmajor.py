"""PostgreSQL major-version upgrade of a data directory, by dump and restore.

PostgreSQL major versions cannot read each other's data directories.  Here
the frozen old data is never touched: it is cloned, a temporary server of
the *old* version runs on the clone (private unix socket, no TCP), roles are
carried, every database is dumped with the old version's own pg_dump
(custom format: owners, grants, sequences, functions, types, views,
triggers all carried), a new data directory is initialised with the *new*
version's initdb and each dump is restored by the *new* pg_restore; every
database is compared old server against new server (every table's row
count and an order-independent checksum of its rows, every sequence's
state, the number of objects of each kind), and the operator's
configuration is carried (pgconf.py, read from the servers'
``pg_file_settings``).  On any failure the new data directory is removed.

This is the one implementation: the library (``upgrade_datadir`` with
:class:`.pgtemp.HostTools`: this host's programs) and the upgrade
transaction (volmerge.upgrade.pgdata: each version's programs inside a
container of its own image) call the same functions with other
:class:`.pgtemp.Tools`.  ``preview_datadir`` is the dry run: the old server
on a clone, counted with the same listings, nothing written.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from volmerge.runtime import diag
from volmerge.strategies.errors import BadInput, NotDone

from . import pgconf
from .pgtemp import HostTools, PgServer, Tools, bootstrap_superuser, check, give, rmtree_quiet

Timing = Callable[[str, float], None]
#: the settings pg_upgrade starts its servers with for the bulk work
BULK = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"}


@dataclass
class PgMajorResult:
    old_version: str
    new_version: str
    new_data: str
    databases: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    config: pgconf.Carried = field(default_factory=pgconf.Carried)

    def to_json(self) -> dict[str, Any]:
        return {"old_version": self.old_version, "new_version": self.new_version,
                "new_data": self.new_data, "databases": self.databases, "seconds": self.seconds,
                "config": {"carried": self.config.carried, "dropped": self.config.dropped}}


def read_version(datadir: str | os.PathLike[str]) -> str | None:
    """The major version in ``datadir/PG_VERSION``, or None when it is not a data directory."""
    try:
        with open(os.path.join(datadir, "PG_VERSION")) as f:
            return f.read().strip() or None
    except OSError:
        return None


def data_version(datadir: str | os.PathLike[str]) -> str:
    v = read_version(datadir)
    if v is None:
        raise BadInput(f"{datadir}: not a PostgreSQL data directory (no PG_VERSION)")
    return v


def clone_datadir(src: str, dst: str) -> None:
    """A private copy of frozen data (reflinks where the filesystem has them)."""
    proc = subprocess.run(["cp", "-a", "--reflink=auto", src, dst], capture_output=True, text=True)
    if proc.returncode != 0:
        raise NotDone(f"cloning {src} failed: {proc.stderr.strip()}")
    for stale in ("postmaster.pid", "postmaster.opts"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(dst, stale))


@contextlib.contextmanager
def old_server(old_data: str, old: Tools, work: str, superuser: str | None,
               tick: Timing) -> Iterator[PgServer]:
    """The old version's server running on a clone of ``old_data`` (removed
    after), connected to as ``superuser`` (None: the data directory's own
    bootstrap superuser, whatever the image named it)."""
    clone = os.path.join(work, "old-data")
    srv = PgServer(old, clone, os.path.join(work, "old-sock"), port=5432,
                   options=dict(BULK))
    started = False
    try:
        t0 = time.monotonic()
        clone_datadir(old_data, clone)
        give(clone, old.user)
        tick("copy data", time.monotonic() - t0)
        srv.superuser = superuser or bootstrap_superuser(old, clone)
        srv.start()
        started = True
        yield srv
    finally:
        if started:
            try:
                srv.stop()
            except Exception as exc:  # noqa: BLE001 - keep the original error
                diag.ignored(__name__, "stopping the old version's temporary server", exc)
        rmtree_quiet(clone)
        rmtree_quiet(os.path.join(work, "old-sock"))


def preview_datadir(old_data: str | os.PathLike[str], old: Tools, *, workdir: str | os.PathLike[str],
                    superuser: str | None = None, timing: Timing | None = None) -> list[dict[str, Any]]:
    """The dry run of :func:`upgrade_datadir`: what it would replay — each
    database's tables and their rows, listed as the upgrade lists them —
    read from the old server on a clone; nothing else is written."""
    data_version(old_data)
    work = os.fspath(workdir)
    os.makedirs(work, exist_ok=True)
    with old_server(os.fspath(old_data), old, work, superuser, timing or _no_timing) as srv:
        out = []
        for db in _databases(srv):
            with _connect(srv.url(db)) as c:
                tables = [{"table": t, "rows": c.execute(f"SELECT count(*) FROM ONLY {t}").fetchone()[0]}
                          for t in _names(c, "'r', 'p'")]
            out.append({"database": db, "tables": tables})
        return out


def _no_timing(step: str, seconds: float) -> None:
    pass


def upgrade_datadir(old_data: str | os.PathLike[str], new_data: str | os.PathLike[str], old: Tools,
                    new: Tools, *, workdir: str | os.PathLike[str], superuser: str | None = None,
                    timing: Timing | None = None) -> PgMajorResult:
    """Upgrade the PostgreSQL data directory ``old_data`` (frozen, left
    untouched) into the new data directory ``new_data`` (must not exist),
    ``old``'s programs reading and ``new``'s writing.  ``result.databases``
    holds one ``verify_database`` dict per database; ``timing(step,
    seconds)``, when given, hears how long the copy, the verification and
    the sync took.  Both servers run as pg_upgrade runs the new one: nothing
    fsynced along the way (the clone is thrown away; a failure removes the
    new directory), the new directory synced once at the end."""
    t0 = time.monotonic()
    old_data, new_data, work = os.fspath(old_data), os.fspath(new_data), os.fspath(workdir)
    old_ver = data_version(old_data)
    if os.path.lexists(new_data):
        raise BadInput(f"{new_data}: already exists")
    os.makedirs(work, exist_ok=True)
    tick = timing or _no_timing
    new_srv = PgServer(new, new_data, os.path.join(work, "new-sock"), port=5433,
                       options=dict(BULK))
    try:
        with old_server(old_data, old, work, superuser, tick) as old_srv:
            new_srv.superuser = old_srv.superuser  # the same bootstrap role on both sides
            enc, collate = _cluster_settings(old_srv)
            new_srv.initdb(enc, collate)
            new_srv.start()
            try:
                _roles(old_srv, new_srv)
                dbs = [_dump_restore_verify(old_srv, new_srv, db, work, i, tick)
                       for i, db in enumerate(_databases(old_srv))]
                old_conf, new_conf, known = _confs(old_srv, new_srv)
            finally:
                new_srv.stop()
        carried = pgconf.carry(old_data, new_data, old_conf, new_conf, known, old_ver)
        check(new.run("postgres", "-D", new_data, "-C", "data_directory"),
              "the new server's check of the carried configuration")
        t1 = time.monotonic()
        check(new.run("initdb", "--sync-only", "-D", new_data), "sync of the new data directory")
        tick("sync", time.monotonic() - t1)
    except BaseException:
        rmtree_quiet(new_data)
        raise
    finally:
        for d in ("new-sock", "dumps"):
            rmtree_quiet(os.path.join(work, d))
    return PgMajorResult(old_ver, data_version(new_data), new_data, dbs,
                         round(time.monotonic() - t0, 3), carried)


def _dump_restore_verify(old: PgServer, new: PgServer, db: str, work: str, n: int,
                         tick: Timing) -> dict[str, Any]:
    """One database: the old pg_dump (custom format), restored straight into
    the new server by its pg_restore — no psql meta-command ever runs from a
    dump —, then compared."""
    dumps = os.path.join(work, "dumps")
    if not os.path.isdir(dumps):
        os.makedirs(dumps)
        give(dumps, old.tools.user)
    dump = os.path.join(dumps, f"{n}.dump")
    check(old.tools.run("pg_dump", "-h", old.sockdir, "-p", str(old.port), "-U", old.superuser,
                        "-Fc", "-Z", "0", "-f", dump, "-d", conninfo_dbname(db)),
          f"pg_dump of {db} (old version)")
    target = ["--create", "-d", "postgres"] if db != "postgres" else ["-d", db]
    check(new.tools.run("pg_restore", "--exit-on-error", "-h", new.sockdir, "-p", str(new.port),
                        "-U", new.superuser, *target, dump), f"restore of {db} (new version)")
    os.unlink(dump)
    t0 = time.monotonic()
    out = verify_database(old, new, db)
    tick("verify", time.monotonic() - t0)
    return out


def _connect(url: str, autocommit: bool = False) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=autocommit)


def _confs(old: PgServer, new: PgServer) -> tuple[pgconf.ServerConf, pgconf.ServerConf, set[str]]:
    """Each server's configuration files as it read them, and the settings the new one knows."""
    with _connect(old.url("postgres")) as a, _connect(new.url("postgres")) as b:
        return (pgconf.read_conf(a, old.datadir), pgconf.read_conf(b, new.datadir),
                pgconf.known_settings(b))


def _cluster_settings(srv: PgServer) -> tuple[str, str]:
    with _connect(srv.url("postgres")) as c:
        enc, coll = c.execute("SELECT pg_encoding_to_char(encoding), datcollate FROM pg_database "
                              "WHERE datname = 'template1'").fetchone()
    return enc, coll


def conninfo_dbname(name: str) -> str:
    """A database name as a libpq connection string: a name read from a
    (possibly hostile) data directory that starts with ``-`` or holds ``=``
    is never taken as an option or as connection parameters."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _databases(srv: PgServer) -> list[str]:
    with _connect(srv.url("postgres")) as c:
        return [r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datallowconn AND "
                                        "datname <> 'template1' ORDER BY datname").fetchall()]


def _roles(old: PgServer, new: PgServer) -> None:
    """Roles with the old pg_dumpall; the bootstrap superuser exists already."""
    import psycopg

    proc = check(old.tools.run("pg_dumpall", "--roles-only", "-h", old.sockdir, "-p", str(old.port),
                               "-U", old.superuser), "pg_dumpall --roles-only (old version)")
    with _connect(new.url("postgres"), autocommit=True) as c:
        for line in proc.stdout.splitlines():
            line = line.strip()
            if not line or line.startswith("--") or line.startswith("\\") or line.startswith("SET "):
                continue
            quoted = old.superuser.replace('"', '""')
            if line.startswith((f"CREATE ROLE {old.superuser};", f'CREATE ROLE "{quoted}";')):
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
    with _connect(old.url(db)) as a, _connect(new.url(db)) as b:
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


def pg_upgrade_copy(old_data: str, new_data: str, old: HostTools, new: HostTools, *,
                    workdir: str, superuser: str = "postgres") -> None:
    """The peer: ``pg_upgrade --copy`` on a clone of ``old_data`` (for
    comparison in tests and benchmarks; this host's programs only)."""
    os.makedirs(workdir, exist_ok=True)
    clone = os.path.join(workdir, "pgu-old")
    sock = os.path.join(workdir, "pgu-sock")
    clone_datadir(old_data, clone)
    give(clone, old.user)
    srv = PgServer(old, clone, sock, superuser=superuser)
    srv.start()
    try:
        enc, coll = _cluster_settings(srv)
    finally:
        srv.stop()
    PgServer(new, new_data, sock, superuser=superuser).initdb(enc, coll)
    cwd = os.path.join(workdir, "pgu-cwd")  # pg_upgrade writes its logs where it runs
    os.makedirs(cwd, exist_ok=True)
    give(cwd, new.user)
    proc = HostTools(new.bindir, new.user, cwd).run(
        "pg_upgrade", "-b", old.bindir, "-B", new.bindir, "-d", clone, "-D", new_data,
        "-U", superuser, "--copy", "-s", sock)
    rmtree_quiet(clone)
    rmtree_quiet(cwd)
    if proc.returncode != 0:
        raise NotDone(f"pg_upgrade failed: {(proc.stdout + proc.stderr).strip()[-400:]}")
