"""PostgreSQL major-version upgrade of a data directory: pg_upgrade, or dump and restore.

PostgreSQL major versions cannot read each other's data directories.  Here
the frozen old data is never touched.  The fast path (pgupgrade.py) runs
``pg_upgrade`` — ``--check`` first, then ``--copy`` or ``--clone`` — on a
snapshot of it, when the old version's programs can run beside the new
ones.  The fallback, whenever that path is refused, clones the data, runs a
temporary server of the *old* version on the clone (private unix socket,
no TCP), carries roles, dumps every database with the old version's own
pg_dump (custom format: owners, grants, sequences, functions, types,
views, triggers all carried), initialises a new data directory with the
*new* version's initdb and restores each dump with the *new* pg_restore.
Either way every database is compared old server against new server
(pgverify.py: every table's row count and an order-independent checksum of
its rows, every sequence's state, the number of objects of each kind), and
the operator's configuration is carried (pgconf.py, read from the servers'
``pg_file_settings``).  On any failure the new data directory is removed.

This is the one implementation: the library (``upgrade_datadir`` with
:class:`.pgtemp.HostTools`: this host's programs) and the upgrade
transaction (volmerge.upgrade.pgdata: each version's programs inside a
container of its own image, the old ones also in the new image's
container for pg_upgrade) call the same functions with other
:class:`.pgtemp.Tools`.  ``preview_datadir`` is the dry run: the old
server on a clone, counted with the same listings, nothing written.
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
from .pgverify import compare, fingerprints, verify_database
from .pgverify import connect as _connect
from .pgverify import names as _names

__all__ = ["PgMajorResult", "OldBeside", "upgrade_datadir", "preview_datadir", "pg_upgrade_copy",
           "verify_database", "read_version", "data_version", "clone_datadir", "conninfo_dbname"]

Timing = Callable[[str, float], None]
#: ``snapshot(frozen, path)``: ``path`` made a private, writable copy of the
#: frozen data directory for the duration (the default: a copy, cp -a)
Snapshot = Callable[[str, str], contextlib.AbstractContextManager[Any]]
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
    #: how the data was carried: "pg_upgrade --copy", "pg_upgrade --clone", "dump and restore"
    method: str = "dump and restore"
    #: why pg_upgrade was not used (None: it was, or it was not asked for)
    fallback: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"old_version": self.old_version, "new_version": self.new_version,
                "new_data": self.new_data, "databases": self.databases, "seconds": self.seconds,
                "method": self.method, "fallback": self.fallback,
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


@contextlib.contextmanager
def copied(frozen: str, path: str) -> Iterator[None]:
    """The default :data:`Snapshot`: a copy (reflinks where the filesystem has them)."""
    try:
        clone_datadir(frozen, path)
        yield
    finally:
        rmtree_quiet(path)


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


@dataclass(frozen=True)
class OldBeside:
    """The old installation's programs where the new ones run, as the same
    user: what ``pg_upgrade`` needs.  ``tools`` runs them; ``bindir`` is
    their directory as the new programs see it (``pg_upgrade -b``)."""

    tools: Tools
    bindir: str


def _beside(old: Tools, new: Tools) -> OldBeside | None:
    """Both installations on this host: the old one runs beside the new one as is."""
    if isinstance(old, HostTools) and isinstance(new, HostTools):
        return OldBeside(HostTools(old.bindir, new.user), old.bindir)
    return None


def upgrade_datadir(old_data: str | os.PathLike[str], new_data: str | os.PathLike[str], old: Tools,
                    new: Tools, *, workdir: str | os.PathLike[str], superuser: str | None = None,
                    timing: Timing | None = None, method: str = "auto",
                    beside: OldBeside | None = None,
                    snapshot: Snapshot | None = None, sync: bool = True) -> PgMajorResult:
    """Upgrade the PostgreSQL data directory ``old_data`` (frozen, left
    untouched) into the new data directory ``new_data`` (must not exist),
    ``old``'s programs reading and ``new``'s writing.

    ``method``: ``"auto"`` runs ``pg_upgrade`` (checked first, then
    ``--clone`` or ``--copy``) when the old programs can run beside the new
    ones (``beside``; found by itself when both are this host's), and falls
    back to dump and restore when that path is refused (the reason is in
    ``result.fallback``); ``"dump"`` only dumps and restores;
    ``"pg_upgrade"`` only runs pg_upgrade (Refused when it cannot).
    ``snapshot`` makes the old cluster pg_upgrade starts (default: a copy;
    the upgrade transaction passes a copy-on-write overlay).
    Either way every database is verified old server against new and the
    configuration is carried.  ``result.databases`` holds one
    ``verify_database`` dict per database; ``timing(step, seconds)`` hears
    each step's time.  The servers run as pg_upgrade runs its new one:
    nothing fsynced along the way (the clone is thrown away; a failure
    removes the new directory), the new directory synced once at the end —
    or not at all when ``sync`` is False: the caller makes it durable itself
    (the upgrade transaction: one ``os.sync()`` after moving it into the
    volume's layer, before the journal moves on)."""
    from . import pgupgrade

    t0 = time.monotonic()
    old_data, new_data, work = os.fspath(old_data), os.fspath(new_data), os.fspath(workdir)
    old_ver = data_version(old_data)
    if os.path.lexists(new_data):
        raise BadInput(f"{new_data}: already exists")
    if method not in ("auto", "dump", "pg_upgrade"):
        raise BadInput(f"unknown upgrade method {method!r} (auto, dump, pg_upgrade)")
    os.makedirs(work, exist_ok=True)
    tick = timing or _no_timing
    beside = beside or _beside(old, new)
    fallback, how = None, "dump and restore"
    try:
        if method != "dump" and beside is None:
            fallback = "the old version's programs cannot run beside the new ones"
            if method == "pg_upgrade":
                raise pgupgrade.Refused(fallback)
        confs = None
        if method != "dump" and beside is not None:
            try:
                dbs, confs, how = _fast(old_data, new_data, new, beside, work, superuser, tick,
                                        snapshot or copied)
            except NotDone as exc:
                if method == "pg_upgrade" or _no_space(str(exc)):
                    raise
                fallback = str(exc)
                rmtree_quiet(new_data)
        if confs is None:
            dbs, confs = _dump_restore(old_data, new_data, old, new, work, superuser, tick)
        t1 = time.monotonic()
        carried = pgconf.carry(old_data, new_data, *confs, old_ver)
        check(new.run("postgres", "-D", new_data, "-C", "data_directory"),
              "the new server's check of the carried configuration")
        tick("configuration carried", time.monotonic() - t1)
        if sync:
            t1 = time.monotonic()
            check(new.run("initdb", "--sync-only", "-D", new_data), "sync of the new data directory")
            tick("sync", time.monotonic() - t1)
    except BaseException:
        rmtree_quiet(new_data)
        raise
    return PgMajorResult(old_ver, data_version(new_data), new_data, dbs,
                         round(time.monotonic() - t0, 3), carried, how, fallback)


def _no_space(text: str) -> bool:
    """A full disk: no other path would do better (the CLI names the file system)."""
    return "No space left on device" in text or "Disk quota exceeded" in text


Confs = tuple[pgconf.ServerConf, pgconf.ServerConf, set[str]]


def _dump_restore(old_data: str, new_data: str, old: Tools, new: Tools, work: str,
                  superuser: str | None, tick: Timing) -> tuple[list[dict[str, Any]], Confs]:
    """The path that always works: roles, then every database dumped by the
    old pg_dump and restored by the new pg_restore, each verified."""
    new_srv = PgServer(new, new_data, os.path.join(work, "new-sock"), port=5433,
                       options=dict(BULK))
    try:
        with old_server(old_data, old, work, superuser, tick) as old_srv:
            new_srv.superuser = old_srv.superuser  # the same bootstrap role on both sides
            enc, collate = _cluster_settings(old_srv)
            t0 = time.monotonic()
            new_srv.initdb(enc, collate)
            tick("initdb", time.monotonic() - t0)
            new_srv.start()
            try:
                _roles(old_srv, new_srv)
                dbs = [_dump_restore_verify(old_srv, new_srv, db, work, i, tick)
                       for i, db in enumerate(_databases(old_srv))]
                return dbs, _confs(old_srv, new_srv)
            finally:
                new_srv.stop()
    finally:
        for d in ("new-sock", "dumps"):
            rmtree_quiet(os.path.join(work, d))


def _fast(old_data: str, new_data: str, new: Tools, beside: OldBeside, work: str,
          superuser: str | None, tick: Timing,
          snapshot: Snapshot) -> tuple[list[dict[str, Any]], Confs, str]:
    """pg_upgrade on a snapshot of the frozen data (``--check`` first); the
    old side of the verification on a second snapshot, read while the new
    cluster is made and pg_upgrade runs; then the new server read.  Refused
    (or NotDone) when this path cannot be taken; the caller falls back."""
    clones = [os.path.join(work, "old-data"), os.path.join(work, "old-read")]
    try:
        t0 = time.monotonic()
        with snapshot(old_data, clones[0]), snapshot(old_data, clones[1]):
            for clone in clones:
                for stale in ("postmaster.pid", "postmaster.opts"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(clone, stale))
                give(clone, beside.tools.user)
            tick("copy data", time.monotonic() - t0)
            return _fast_on(clones, new_data, new, beside, work, superuser, tick)
    finally:
        for d in ("old-data", "old-read", "old-sock", "new-sock", "pgu-sock", "pgu-run-sock",
                  "pgu-cwd"):
            rmtree_quiet(os.path.join(work, d))


@dataclass(frozen=True)
class _OldSide:
    """The old cluster as the verification and the configuration carry see it."""

    names: list[str]
    prints: dict[str, Any]
    conf: pgconf.ServerConf


def _read_old(srv: PgServer, tick: Timing) -> _OldSide:
    t0 = time.monotonic()
    names = _databases(srv)
    prints = fingerprints(srv, names)
    with _connect(srv.url("postgres")) as c:
        conf = pgconf.read_conf(c, srv.datadir)
    tick("old side read (beside)", time.monotonic() - t0)
    return _OldSide(names, prints, conf)


def _fast_on(clones: list[str], new_data: str, new: Tools, beside: OldBeside, work: str,
             superuser: str | None, tick: Timing) -> tuple[list[dict[str, Any]], Confs, str]:
    """``clones``: two private snapshots of the old cluster.  On the second
    one the old server starts at once: ``pg_upgrade --check`` runs live
    against it (the same data as the first: both snapshots of one frozen
    directory) and, beside the new cluster's initdb, the check and
    pg_upgrade, the old side of the verification and its configuration are
    read there.  pg_upgrade itself runs on the first snapshot, on a socket
    of its own.  Then the new server: collations checked, ANALYZEd, read,
    and both sides compared."""
    from concurrent.futures import ThreadPoolExecutor

    from . import pgupgrade

    t0 = time.monotonic()
    info = pgupgrade.cluster_info(beside.tools, clones[0])
    if superuser is not None and superuser != info.superuser:
        raise pgupgrade.Refused(f"pg_upgrade runs as the bootstrap superuser {info.superuser}")
    tick("old cluster settings", time.monotonic() - t0)
    # the old server where pg_upgrade --check looks for it
    old_srv = PgServer(beside.tools, clones[1], os.path.join(work, "pgu-sock"),
                       port=pgupgrade.OLD_PORT, options=dict(BULK), superuser=info.superuser)
    new_srv = PgServer(new, new_data, os.path.join(work, "new-sock"), port=5433,
                       options=dict(BULK), superuser=info.superuser)
    mode = "--clone" if pgupgrade.clone_supported(work) else "--copy"
    jobs = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(2) as pool:
        made = pool.submit(_timed, tick, "initdb (beside)", pgupgrade.initdb, new, new_data, info)
        up = pool.submit(_timed, tick, "old server start (beside)", old_srv.start)
        read = None
        try:
            t0 = time.monotonic()
            made.result()
            tick("initdb (critical)", time.monotonic() - t0)
            up.result()
            # read beside the check and pg_upgrade, which wait on I/O and
            # servers more than initdb's bootstrap does
            read = pool.submit(_read_old, old_srv, tick)
            t0 = time.monotonic()
            pgupgrade.run(new, beside.bindir, clones[1], new_data, info, work, mode=mode,
                          check_only=True, jobs=jobs)
            tick("pg_upgrade --check (live)", time.monotonic() - t0)
            # the old server goes once its side is read, beside pg_upgrade
            done = pool.submit(_after, read, _timed, tick, "old server stop (beside)", old_srv.stop)
            t0 = time.monotonic()
            pgupgrade.run(new, beside.bindir, clones[0], new_data, info, work, mode=mode,
                          check_only=False, jobs=jobs, sockdir=os.path.join(work, "pgu-run-sock"))
            tick(f"pg_upgrade {mode}", time.monotonic() - t0)
            t0 = time.monotonic()
            olds = read.result()
            done.result()
            tick("old side read and stopped (waited for)", time.monotonic() - t0)
        finally:
            _settle(made, up, read, old_srv, tick)
    rmtree_quiet(os.path.join(new_data, "pg_upgrade_output.d"))
    with ThreadPoolExecutor(1) as pool:  # the copied files written back beside the reads
        pool.submit(_timed, tick, "new files written back (beside)", _presync, new, new_data)
        dbs, confs = _new_side(new_srv, olds, tick)
    return dbs, confs, f"pg_upgrade {mode}"


def _presync(new: Tools, new_data: str) -> None:
    """Write the new cluster's files back to disk while its server is read:
    the final sync, after the server stops, then finds little left to do.
    Advisory: the final sync (or the caller's) is what makes them durable."""
    proc = new.run("initdb", "--sync-only", "-D", new_data)
    if proc.returncode != 0:
        diag.ignored(__name__, "the early write-back of the new cluster",
                     NotDone((proc.stderr or proc.stdout).strip()[-300:]))


def _new_side(new_srv: PgServer, olds: _OldSide,
              tick: Timing) -> tuple[list[dict[str, Any]], Confs]:
    """The new server up: collations checked, ANALYZE beside the reads of
    every row, both sides compared, the configuration read."""
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.monotonic()
    _timed(tick, "new server start", new_srv.start)
    try:
        t1 = time.monotonic()
        for db in olds.names:
            with _connect(new_srv.url(db)) as c:
                _refuse_collation_risk(c, db)
        tick("collation check", time.monotonic() - t1)
        with ThreadPoolExecutor(1) as pool:  # ANALYZE beside the verification's reads
            stats = pool.submit(_timed, tick, "analyze (beside)", _analyze, new_srv, olds.names)
            news = _timed(tick, "new side hashed", fingerprints, new_srv, olds.names)
            stats.result()
        dbs = [compare(db, olds.prints[db], news[db]) for db in olds.names]
        with _connect(new_srv.url("postgres")) as c:
            confs = (olds.conf, pgconf.read_conf(c, new_srv.datadir), pgconf.known_settings(c))
    finally:
        _timed(tick, "new server stop", new_srv.stop)
    tick("new side: verify and analyze", time.monotonic() - t0)
    return dbs, confs


def _after(first: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` once the future ``first`` is done, whatever its outcome."""
    with contextlib.suppress(BaseException):
        first.result()
    return fn(*args)


def _settle(made: Any, up: Any, read: Any, old_srv: PgServer, tick: Timing) -> None:
    """Every side task finished (their errors already raised or superseded),
    then the old server stopped if it is still up."""
    for fut in (made, read):
        if fut is not None:
            with contextlib.suppress(BaseException):
                fut.result()
    try:
        up.result()
    except BaseException:  # noqa: BLE001 - it never started: nothing to stop
        return
    try:
        old_srv.stop()  # nothing to do when it stopped already
    except Exception as exc:  # noqa: BLE001 - keep the original error
        diag.ignored(__name__, "stopping the old version's temporary server", exc)


def _timed(tick: Timing, step: str, fn: Callable[..., Any], *args: Any) -> Any:
    t0 = time.monotonic()
    try:
        return fn(*args)
    finally:
        tick(step, time.monotonic() - t0)


def _refuse_collation_risk(new_conn: Any, db: str) -> None:
    from . import pgupgrade

    risk = pgupgrade.collation_risk(new_conn, db)
    if risk is not None:
        raise pgupgrade.Refused(risk)


def _analyze(srv: PgServer, dbs: list[str]) -> None:
    """Planner statistics for the new cluster (pg_upgrade carries none, and
    autovacuum would not gather them before enough rows change), the
    databases side by side."""
    from concurrent.futures import ThreadPoolExecutor

    def one(db: str) -> None:
        with _connect(srv.url(db), autocommit=True) as c:
            c.execute("ANALYZE")

    with ThreadPoolExecutor(max(1, min(4, len(dbs)))) as pool:
        list(pool.map(one, dbs))


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
