"""PostgreSQL major-version upgrade of a data directory, by dump and replay.

PostgreSQL major versions cannot read each other's data directories.  Here
the frozen old data is never touched: it is cloned, a temporary server of
the *old* version runs on the clone (private unix socket, no TCP), every
database is dumped with the old version's own pg_dump, a new data directory
is initialised with the *new* version's initdb, the dumps are replayed into
it (streamed, COPY, verified), and finally every table is compared old
server against new server (row counts and an order-independent checksum of
every column).  On any failure the new data directory is removed.

Who runs the binaries is injected: ``old_runner``/``new_runner`` run an argv
as an unprivileged user (PostgreSQL refuses root).  The default runs them on
this host; the upgrade transaction passes runners that execute inside the
old and the new image through the runtime, the directories bind-mounted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from strategies.errors import BadInput, NotDone

from .pgtemp import PgServer, Runner, give, local_runner


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
    untouched) into the new data directory ``new_data`` (must not exist)."""
    t0 = time.monotonic()
    old_ver = data_version(old_data)
    if os.path.lexists(new_data):
        raise BadInput(f"{new_data}: already exists")
    for b in (old_bindir, new_bindir):
        if not os.path.exists(os.path.join(b, "postgres")):
            raise BadInput(f"{b}: no PostgreSQL server binaries there")
    old_runner = old_runner or local_runner()
    new_runner = new_runner or local_runner()
    os.makedirs(workdir, exist_ok=True)
    clone = os.path.join(workdir, "old-data")
    old_srv = PgServer(old_bindir, clone, os.path.join(workdir, "old-sock"), old_runner, port=5432,
                       superuser=superuser)
    new_srv = PgServer(new_bindir, new_data, os.path.join(workdir, "new-sock"), new_runner, port=5433,
                       superuser=superuser)
    started: list[PgServer] = []
    try:
        clone_datadir(old_data, clone)
        give(clone, old_runner)
        old_srv.start()
        started.append(old_srv)
        enc, collate = _cluster_settings(old_srv)
        _initdb(new_srv, enc, collate)
        new_srv.start()
        started.append(new_srv)
        new_ver = new_srv.version()
        result = PgMajorResult(old_ver, new_ver, new_data)
        _roles(old_srv, new_srv, workdir)
        for db in _databases(old_srv):
            result.databases.append(_one_database(old_srv, new_srv, db, workdir))
        for s in reversed(started):
            s.stop()
        started.clear()
        result.seconds = round(time.monotonic() - t0, 3)
        return result
    except BaseException:
        for s in reversed(started):
            try:
                s.stop()
            except Exception:  # noqa: BLE001 - keep the original error
                pass
        shutil.rmtree(new_data, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(clone, ignore_errors=True)
        for d in ("old-sock", "new-sock", "dumps"):
            shutil.rmtree(os.path.join(workdir, d), ignore_errors=True)


def _initdb(srv: PgServer, enc: str, collate: str) -> None:
    os.makedirs(srv.datadir, mode=0o700)
    give(srv.datadir, srv.runner)
    proc = srv.runner([os.path.join(srv.bindir, "initdb"), "-D", srv.datadir, "-U", srv.superuser,
                       "--auth=trust", "-E", enc, f"--locale={collate}"])
    if proc.returncode != 0:
        raise NotDone(f"initdb (new version) failed: {(proc.stderr or proc.stdout).strip()[-300:]}")


def _cluster_settings(srv: PgServer) -> tuple[str, str]:
    import psycopg

    with psycopg.connect(srv.url("postgres")) as c:
        enc, coll = c.execute("SELECT pg_encoding_to_char(encoding), datcollate FROM pg_database "
                              "WHERE datname = 'template1'").fetchone()
    return enc, coll


def _databases(srv: PgServer) -> list[str]:
    import psycopg

    with psycopg.connect(srv.url("postgres")) as c:
        return [r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datallowconn AND "
                                        "datname <> 'template1' ORDER BY datname").fetchall()]


def _roles(old: PgServer, new: PgServer, workdir: str) -> None:
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


def _one_database(old: PgServer, new: PgServer, db: str, workdir: str) -> dict[str, Any]:
    import psycopg

    from .plan import plan_replay
    from .replay import replay
    from .replay_pg import _pg_sum

    dumps = os.path.join(workdir, "dumps")
    os.makedirs(dumps, exist_ok=True)
    give(dumps, old.runner)
    dump = os.path.join(dumps, f"dump-{db}.sql")
    proc = old.runner([os.path.join(old.bindir, "pg_dump"), "-h", old.sockdir, "-p", str(old.port),
                       "-U", old.superuser, "--no-owner", "--no-privileges", "-f", dump, db])
    if proc.returncode != 0:
        raise NotDone(f"pg_dump of {db} (old version) failed: {proc.stderr.strip()[-300:]}")
    try:
        if db != "postgres":
            with psycopg.connect(new.url("postgres"), autocommit=True) as c:
                c.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(db)))
        with plan_replay(dump, schema=dump, from_dialect="postgres", workdir=workdir) as plan:
            result = replay(plan, new.url(db))
            tables = [t.target for t in plan.tables]
    finally:
        os.unlink(dump)
    # end to end: the old server against the new one, table by table
    checked = []
    with psycopg.connect(old.url(db)) as a, psycopg.connect(new.url(db)) as b:
        for t in tables:
            q = '"' + t.replace('"', '""') + '"'
            cols = [r[0] for r in a.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum", (q,)).fetchall()]
            exprs = ['"' + c.replace('"', '""') + '"' for c in cols]
            x, y = _pg_sum(a, exprs, q), _pg_sum(b, exprs, q)
            if (x.rows, x.digest) != (y.rows, y.digest):
                raise NotDone(f"verification failed: database {db} table {t}: old server "
                              f"{x.rows} rows, new server {y.rows} rows or checksums differ")
            checked.append({"table": t, "rows": x.rows})
    return {"database": db, "rows": result.rows, "tables": checked, "verified": True}


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
    shutil.rmtree(clone, ignore_errors=True)
    shutil.rmtree(cwd, ignore_errors=True)
    if proc.returncode != 0:
        raise NotDone(f"pg_upgrade failed: {(proc.stdout + proc.stderr).strip()[-400:]}")
