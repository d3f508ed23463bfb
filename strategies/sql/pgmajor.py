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
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from volmerge.runtime import diag
from volmerge.strategies.errors import BadInput, NotDone

from . import pgconf
from .pgfast import Confs, Scratch, Snapshot, fast
from .pgroom import ScratchFull, plain_dir
from .pgtemp import (
    BULK,
    HostTools,
    PgServer,
    Timing,
    Tools,
    bootstrap_superuser,
    check,
    give,
    rmtree_quiet,
)
from .pgupgrade import OldBeside
from .pgverify import connect as _connect
from .pgverify import databases as _databases
from .pgverify import names as _names
from .pgverify import verify_database

__all__ = ["PgMajorResult", "OldBeside", "upgrade_datadir", "preview_datadir", "pg_upgrade_copy",
           "verify_database", "read_version", "data_version", "clone_datadir", "conninfo_dbname",
           "user_bytes"]

#: a relation file: base/<database>/<relfilenode>[_<fork>][.<segment>]
_REL_FILE = re.compile(r"(\d+)(?:_[a-z]+)?(?:\.\d+)?")
#: the first relfilenode of user objects (FirstNormalObjectId): the catalogs are below
_FIRST_USER = 16384


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
def copied(frozen: str, path: str, upper_in: str | None = None) -> Iterator[None]:
    """The default :data:`Snapshot`: a copy (reflinks where the filesystem
    has them); ``upper_in`` (where a copy-on-write layer could go) unused."""
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


def _beside(old: Tools, new: Tools) -> OldBeside | None:
    """Both installations on this host: the old one runs beside the new one as is."""
    if isinstance(old, HostTools) and isinstance(new, HostTools):
        return OldBeside(HostTools(old.bindir, new.user), old.bindir)
    return None


def upgrade_datadir(old_data: str | os.PathLike[str], new_data: str | os.PathLike[str], old: Tools,
                    new: Tools, *, workdir: str | os.PathLike[str], superuser: str | None = None,
                    timing: Timing | None = None, method: str = "auto",
                    beside: OldBeside | None = None,
                    snapshot: Snapshot | None = None, scratch: Scratch | None = None,
                    sync: bool = True, small_bytes: int = 0) -> PgMajorResult:
    """Upgrade the PostgreSQL data directory ``old_data`` (frozen, left
    untouched) into the new data directory ``new_data`` (must not exist),
    ``old``'s programs reading and ``new``'s writing.

    ``method``: ``"auto"`` runs ``pg_upgrade`` (checked first, then
    ``--clone`` or ``--copy``) when the old programs can run beside the new
    ones (``beside``; found by itself when both are this host's), and falls
    back to dump and restore when that path is refused (the reason is in
    ``result.fallback``); ``"dump"`` only dumps and restores;
    ``"pg_upgrade"`` only runs pg_upgrade (Refused when it cannot).
    ``small_bytes``: under this many bytes of user data (:func:`user_bytes`)
    ``"auto"`` dumps and restores, quicker than pg_upgrade's fixed cost for a
    small cluster (0, the default: pg_upgrade whatever the size; the upgrade
    transaction passes its setting, volmerge/upgrade/settings.py).
    ``snapshot`` makes the old cluster pg_upgrade starts (default: a copy;
    the upgrade transaction passes a copy-on-write overlay); ``scratch``
    the directory where ``pg_upgrade --check`` gets its copy of the new
    cluster (default: a plain one; the upgrade transaction passes a tmpfs).
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
        if method == "auto" and beside is not None:
            size = user_bytes(old_data, stop_at=small_bytes) if small_bytes else 0
            if size < small_bytes:  # pg_upgrade's fixed cost would outweigh the copy it saves
                fallback = (f"a small cluster ({size / 2**20:.1f} MiB of user data, under "
                            f"{small_bytes >> 20} MiB): dump and restore is quicker")
                beside = None
        confs = None
        if method != "dump" and beside is not None:
            try:
                dbs, confs, how = fast(old_data, new_data, new, beside, work, superuser, tick,
                                       snapshot or copied, scratch or plain_dir)
            except NotDone as exc:
                if method == "pg_upgrade" or (_no_space(str(exc))
                                              and not isinstance(exc, ScratchFull)):
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


def user_bytes(datadir: str, stop_at: int | None = None) -> int:
    """Bytes of the user relations' files in ``datadir`` (``base/<db>/<n>``
    with ``n`` >= 16384, every fork and segment; the catalogs, WAL and the
    rest are the same fixed cost on either path), counted up to ``stop_at``.
    Symbolic links are not followed: the data directory is the container's."""
    total = 0
    base = os.path.join(datadir, "base")
    try:
        if not os.path.isdir(base) or os.path.islink(base):
            return 0
        with os.scandir(base) as dbs:
            for db in dbs:
                if not db.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(db.path) as files:
                    for f in files:
                        m = _REL_FILE.fullmatch(f.name)
                        if m and int(m.group(1)) >= _FIRST_USER and f.is_file(follow_symlinks=False):
                            total += f.stat(follow_symlinks=False).st_size
                if stop_at is not None and total >= stop_at:
                    return total
    except OSError:
        pass  # unreadable: counted as far as it went (the choice of path only)
    return total


def _no_space(text: str) -> bool:
    """A full disk: no other path would do better (the CLI names the file system)."""
    return "No space left on device" in text or "Disk quota exceeded" in text


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
