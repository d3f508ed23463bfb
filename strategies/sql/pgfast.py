"""The fast path of a major upgrade, run: pg_upgrade on one snapshot of
the frozen data, the verification's old side read on another.

The critical path is the new cluster's initdb, ``pg_upgrade`` and the new
server's side of the verification; everything else runs beside it.  The
old server of the verification starts at once on its own copy-on-write
snapshot, beside initdb, and its rows are hashed and its configuration
read there while initdb runs (its bootstrap is one process: on two cores
one is spare).

**The check runs beside pg_upgrade, and still decides.**  ``pg_upgrade
--check`` runs live against that old server (the same data as
pg_upgrade's snapshot: both are of one frozen directory) on its own copy
of the freshly made new cluster (the check starts a server on it, which
would collide with pg_upgrade's own; a copy, not an overlay, whose lower
layer pg_upgrade would rewrite meanwhile; in the caller's scratch — a
tmpfs in the upgrade transaction — because creating its thousand files on
a busy ext4 can take a second), while pg_upgrade itself starts at once on
the real new cluster, from the other snapshot, on a socket of its own.
Both are waited for, and the check's refusal is raised first, whatever
pg_upgrade did: pg_upgrade's result is then discarded and the caller
falls back to dump and restore with the check's reason, exactly as when
the check ran first.  Starting pg_upgrade before the verdict changes
nothing that can be observed: in ``--copy`` and ``--clone`` mode it never
writes to the old cluster (a snapshot anyway), the new cluster is scratch
that a refusal removes, and pg_upgrade repeats every check of ``--check``
itself before it writes anything.  What it costs is CPU beside
pg_upgrade, which leaves a core idle much of its time (server starts and
stops, one file copy).

The old server stops, and its snapshot and the check's copy go, once the
check is done, beside pg_upgrade. After it, the new cluster's files'
write-back is started (not waited for) while its server is verified and
ANALYZEd, so the final sync finds little left. What runs beside the
critical path runs at nice 10 (:func:`lower_priority`): it has until
pg_upgrade (or the new side) ends, and on busy cores it yields to what
the upgrade waits for. pg_upgrade's snapshot keeps its copy-on-write
layer in the scratch when it fits there (its old server copies up
hundreds of catalog files, each a file creation). The verification's
keeps its own beside the data: PostgreSQL opens relation files
read-write, so reading a table copies it up whole, and a tmpfs for it was
measured no faster (docs/pg-upgrade.md). A scratch that fills up fails
its server's write (no space): refused, the fallback taken — never a
verification of what could not be read. On two busy cores overlapping saves less than it
does on a quiet machine: what runs beside takes CPU from what it
overlaps. Any refusal (:class:`.pgupgrade.Refused`) or NotDone reaches
pgmajor, which falls back to dump and restore.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from volmerge.runtime import diag
from volmerge.strategies.errors import NotDone

from . import pgconf, pgupgrade
from .pgroom import ScratchFull, check_home, full, plain_dir, upper_hint
from .pgtemp import BULK, PgServer, Timing, Tools, give, rmtree_quiet
from .pgupgrade import OldBeside
from .pgverify import compare, databases, fingerprints
from .pgverify import connect as _connect

#: ``snapshot(frozen, path[, upper_in=dir])``: ``path`` made a private,
#: writable copy of the frozen data directory for the duration (the default:
#: a copy, cp -a); ``upper_in``, when given, a directory of the scratch where
#: a copy-on-write layer may live (pg_upgrade's snapshot: catalogs only)
Snapshot = Callable[..., contextlib.AbstractContextManager[Any]]
#: ``scratch(path)``: ``path`` made an empty directory, where creating files
#: is cheap (a tmpfs), for the duration (the default: a plain directory);
#: entered with the snapshots, before the tools' first use (a container's start)
Scratch = Callable[[str], contextlib.AbstractContextManager[Any]]
#: the old server's configuration, the new one's, and the settings the new one knows
Confs = tuple[pgconf.ServerConf, pgconf.ServerConf, set[str]]


def fast(old_data: str, new_data: str, new: Tools, beside: OldBeside, work: str,
         superuser: str | None, tick: Timing, snapshot: Snapshot,
         scratch: Scratch = plain_dir) -> tuple[list[dict[str, Any]], Confs, str]:
    """pg_upgrade on a snapshot of the frozen data, its ``--check`` beside
    it and deciding; the old side of the verification on a second
    snapshot, read while the new cluster is made; then the new server
    read.  Refused (or NotDone) when this path cannot be taken; the caller
    falls back."""
    clones = [os.path.join(work, "old-data"), os.path.join(work, "old-read")]
    stacks = [contextlib.ExitStack(), contextlib.ExitStack(), contextlib.ExitStack()]
    room = os.path.join(work, "check-scratch")
    try:
        t0 = time.monotonic()
        # the scratch first: pg_upgrade's snapshot may keep its copy-on-write layer there
        stacks[2].enter_context(scratch(room))
        stacks[0].enter_context(snapshot(old_data, clones[0], **upper_hint(old_data, room)))
        stacks[1].enter_context(snapshot(old_data, clones[1]))
        for clone in clones:  # both mounted before the tools' first use (a container's start)
            for stale in ("postmaster.pid", "postmaster.opts"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(clone, stale))
            give(clone, beside.tools.user)
        tick("copy data", time.monotonic() - t0)
        drops = tuple(_timed_drop(tick, what, stack) for what, stack in
                      zip(("pg_upgrade's snapshot", "the read's snapshot", "the check's scratch"),
                          stacks, strict=True))
        try:
            return _fast_on(clones, new_data, new, beside, work, superuser, tick, drops)
        except NotDone as exc:
            if not isinstance(exc, pgupgrade.Refused) and full(room):
                raise ScratchFull(f"the scratch filled up ({exc})") from exc
            raise
    finally:
        t0 = time.monotonic()
        for stack in (stacks[1], stacks[0], stacks[2]):  # what is still there; the scratch last
            stack.close()
        for d in ("old-data", "old-read", "old-sock", "new-sock", "pgu-sock",
                  "pgu-run-sock", "pgu-cwd", "pgu-check-cwd", "new-check"):
            rmtree_quiet(os.path.join(work, d))
        tick("snapshots removed", time.monotonic() - t0)


def _timed_drop(tick: Timing, what: str, stack: contextlib.ExitStack) -> Callable[[], None]:
    """Removes a snapshot early, beside other work (its server stopped)."""
    return lambda: _timed(tick, f"{what} removed (beside)", stack.close)


@dataclass(frozen=True)
class _OldSide:
    """The old cluster as the verification and the configuration carry see it."""

    names: list[str]
    prints: dict[str, Any]
    conf: pgconf.ServerConf


def _read_old(srv: PgServer, tick: Timing) -> _OldSide:
    t0 = time.monotonic()
    names = databases(srv)
    prints = fingerprints(srv, names)
    with _connect(srv.url("postgres")) as c:
        conf = pgconf.read_conf(c, srv.datadir)
    tick("old side read (beside)", time.monotonic() - t0)
    return _OldSide(names, prints, conf)


def _fast_on(clones: list[str], new_data: str, new: Tools, beside: OldBeside, work: str,
             superuser: str | None, tick: Timing, drops: tuple[Callable[[], None], ...]
             ) -> tuple[list[dict[str, Any]], Confs, str]:
    """``clones``: two private snapshots of the old cluster.  On the second
    one the old server starts at once: beside initdb, the old side of the
    verification and its configuration are read there, and then
    ``pg_upgrade --check`` runs live against it (the same data as the
    first: both snapshots of one frozen directory), on a copy of the new
    cluster, beside pg_upgrade itself, which runs on the first snapshot,
    on a socket of its own; the check's refusal decides.  Then the new
    server: collations checked, ANALYZEd, read, and both sides compared.
    ``drops`` remove each snapshot and the check's scratch, beside other
    work, once its last server has stopped."""
    from concurrent.futures import ThreadPoolExecutor

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
    check_data = os.path.join(work, "new-check")  # or in the scratch, once its size is known
    # what runs beside the critical path runs at a lower priority (``low``): on busy cores it
    # yields to initdb and pg_upgrade, and it has until pg_upgrade ends to finish
    with ThreadPoolExecutor(1) as pool, ThreadPoolExecutor(3, initializer=lower_priority) as low:
        made = pool.submit(_timed, tick, "initdb (beside)", pgupgrade.initdb, new, new_data, info)
        up = low.submit(_timed, tick, "old server start (beside)", old_srv.start)
        read = verdict = done = None
        try:
            up.result()
            # read beside initdb, whose bootstrap is one process: a core to spare
            read = low.submit(_read_old, old_srv, tick)
            t0 = time.monotonic()
            made.result()
            tick("initdb (critical)", time.monotonic() - t0)
            t0 = time.monotonic()
            check_data = check_home(new_data, work)
            _copy_cluster(new_data, check_data)
            tick("new cluster copied for the check", time.monotonic() - t0)
            # the check, live against the old server, on its own copy of the new cluster,
            # beside pg_upgrade; its verdict is waited for before pg_upgrade's result is used
            verdict = low.submit(_timed, tick, "pg_upgrade --check (live, beside pg_upgrade)",
                                  _check, new, beside.bindir, clones[1], check_data, info, work,
                                  mode, jobs)
            # the old server goes once its side is read and the check is done
            done = low.submit(_after, (read, verdict), _stop_and_drop, old_srv, tick,
                               (drops[1],), check_data)
            t0 = time.monotonic()
            ran = _attempt(pgupgrade.run, new, beside.bindir, clones[0], new_data, info, work,
                           mode=mode, check_only=False, jobs=jobs,
                           sockdir=os.path.join(work, "pgu-run-sock"))
            tick(f"pg_upgrade {mode}", time.monotonic() - t0)
            t0 = time.monotonic()
            verdict.result()  # the check's refusal decides, whatever pg_upgrade did
            if ran is not None:
                raise ran
            olds = read.result()
            done.result()
            tick("check's verdict, old side read and stopped (waited for)", time.monotonic() - t0)
        finally:
            _settle(made, up, (read, verdict, done), old_srv, tick)
    rmtree_quiet(os.path.join(new_data, "pg_upgrade_output.d"))
    # the copied files' write-back started beside the reads, at a lower priority
    with ThreadPoolExecutor(1, initializer=lower_priority) as pool:
        pool.submit(_timed, tick, "new files' write-back started (beside)", _presync, new_data)
        pool.submit(drops[0])
        pool.submit(drops[2])  # after pg_upgrade's snapshot, whose upper it may hold
        dbs, confs = _new_side(new_srv, olds, tick)
        t0 = time.monotonic()
    tick("the work beside the new side (waited for)", time.monotonic() - t0)
    return dbs, confs, f"pg_upgrade {mode}"


#: the nice value of the work beside the critical path
BESIDE_NICE = 10


def lower_priority(nice: int = BESIDE_NICE) -> None:
    """This thread, and the programs it starts, at ``nice`` at least
    (Linux's nice is a thread's; a child inherits its parent thread's).
    Where it cannot be changed, left as it is."""
    with contextlib.suppress(OSError):
        if os.getpriority(os.PRIO_PROCESS, 0) < nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)


def _check(new: Tools, old_bin: str, old_data: str, check_data: str, info: pgupgrade.ClusterInfo,
           work: str, mode: str, jobs: int) -> None:
    """``pg_upgrade --check`` live against the old server on ``old_data``'s
    socket, on ``check_data`` (a copy of the fresh new cluster: the check
    starts a server on it, which pg_upgrade's own run on the real one
    would collide with), run in a directory of its own."""
    pgupgrade.run(new, old_bin, old_data, check_data, info, work, mode=mode, check_only=True,
                  jobs=jobs, cwd=os.path.join(work, "pgu-check-cwd"))


def _copy_cluster(src: str, dst: str) -> None:
    """A plain copy of the freshly initialised new cluster (a few dozen MiB;
    reflinks where the file system has them).  Not an overlay: its lower
    layer would be the directory pg_upgrade rewrites meanwhile."""
    import subprocess

    proc = subprocess.run(["cp", "-a", "--reflink=auto", "--sparse=always", src, dst],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise NotDone(f"copying the new cluster for pg_upgrade --check failed: "
                      f"{proc.stderr.strip()[-300:]}")


def _attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Exception | None:
    """``fn`` run; its error returned, not raised (None: it succeeded)."""
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - raised by the caller once the check has spoken
        return exc
    return None


def _stop_and_drop(srv: PgServer, tick: Timing, drops: tuple[Callable[[], None], ...],
                   check_data: str) -> None:
    """The old server stopped once read and checked against; its snapshot
    and the check's copy of the new cluster removed."""
    _timed(tick, "old server stop (beside)", srv.stop)
    _timed(tick, "the check's copy removed (beside)", rmtree_quiet, check_data)
    for drop in drops:
        drop()


def _presync(new_data: str) -> None:
    """Start writing the new cluster's files back to disk while its server
    is read, so that the final sync, after the server stops, finds little
    left to do: each regular file's dirty pages handed to the disk
    (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, the first pass of
    ``initdb --sync-only``) — initiated, not waited for: a walk of
    milliseconds, where ``initdb --sync-only`` itself, waiting for every
    write at a lower priority, could outlast the reads and hold the
    critical path.  Advisory: the final sync (or the caller's) is what
    makes them durable; a file that cannot be opened is passed over.  The
    tree is the new cluster's (no symbolic link followed, nothing but
    regular files opened, read-only, never blocking)."""
    import ctypes

    from volmerge.runtime.fsutil import walk

    try:
        start = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError) as exc:
        diag.ignored(__name__, "the early write-back of the new cluster", exc)
        return
    start.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        for e in walk(new_data):
            if not stat.S_ISREG(e.st.st_mode):
                continue
            try:
                fd = os.open(e.name, flags, dir_fd=e.dirfd)
            except OSError:
                continue
            try:
                start(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
            finally:
                os.close(fd)
    except OSError as exc:
        diag.ignored(__name__, "the early write-back of the new cluster", exc)


#: sync_file_range(2): start writing the range's dirty pages, wait for nothing
_SYNC_FILE_RANGE_WRITE = 2


def _new_side(new_srv: PgServer, olds: _OldSide,
              tick: Timing) -> tuple[list[dict[str, Any]], Confs]:
    """The new server up: collations checked and ANALYZE beside the reads
    of every row, both sides compared, the configuration read."""
    from concurrent.futures import ThreadPoolExecutor

    news: dict[str, Any] = {}
    t0 = time.monotonic()
    _timed(tick, "new server start", new_srv.start)
    try:
        # the collation check and ANALYZE beside the verification's reads; a collation
        # risk refuses first, whatever the reads found
        with ThreadPoolExecutor(2) as pool:
            risk = pool.submit(_timed, tick, "collation check (beside)", _collations, new_srv,
                               olds.names)
            stats = pool.submit(_timed, tick, "analyze (beside)", _analyze, new_srv, olds.names)
            t1 = time.monotonic()
            read = _attempt(lambda: news.update(fingerprints(new_srv, olds.names)))
            tick("new side hashed", time.monotonic() - t1)
            risk.result()
            if read is not None:
                raise read
            stats.result()
        dbs = [compare(db, olds.prints[db], news[db]) for db in olds.names]
        with _connect(new_srv.url("postgres")) as c:
            confs = (olds.conf, pgconf.read_conf(c, new_srv.datadir), pgconf.known_settings(c))
    finally:
        _timed(tick, "new server stop", new_srv.stop)
    tick("new side: verify and analyze", time.monotonic() - t0)
    return dbs, confs


def _after(first: tuple[Any, ...], fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` once the futures ``first`` are done, whatever their outcome."""
    for fut in first:
        with contextlib.suppress(BaseException):
            fut.result()
    return fn(*args)


def _settle(made: Any, up: Any, sides: tuple[Any, ...], old_srv: PgServer, tick: Timing) -> None:
    """Every side task finished (their errors already raised or superseded),
    then the old server stopped if it is still up."""
    for fut in (made, *sides):
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


def _collations(srv: PgServer, dbs: list[str]) -> None:
    """Refused when an index pg_upgrade copied could be out of order under
    the new libraries (:func:`.pgupgrade.collation_risk`)."""
    for db in dbs:
        with _connect(srv.url(db)) as c:
            _refuse_collation_risk(c, db)


def _refuse_collation_risk(new_conn: Any, db: str) -> None:

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


__all__ = ["fast", "Snapshot", "Scratch", "Confs", "plain_dir", "ScratchFull"]
