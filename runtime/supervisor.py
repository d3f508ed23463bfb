"""The owner of a running container: starts it, logs it, records its exit.

Detached containers get a supervisor process (double-forked, in a session
of its own) that outlives the CLI: a fresh interpreter running :func:`main`,
or the fast ``start`` forked (runtime.superspawn); either lives in
:func:`own`.  A foreground ``run`` calls :func:`supervise` in the CLI
process itself.  Either way the owner records its pid and start
time with the container, so a dead owner is noticed (runtime.reconcile),
writes the container's output to ``containers/<id>/log`` (detached;
runtime.logfile owns that format), applies the restart policy, runs the
health monitor, and on the final exit tears the run down *before* recording
the exit, so ``exited`` always means "nothing left running or mounted".

The supervisor is handed the container records and the bundles (what the
engine exposes as ``Engine.records`` and ``Engine.bundles``), nothing else
of the engine.  The start notification (:class:`Notice`) is here; the
engine's end of it is runtime.superspawn.

This module must stay light: no typer, no rich (start-up time matters).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from .errors import RuntimeFault
from .records import proc_start_time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, NoReturn

    from .bundle import Bundles
    from .records import Container, ContainerRecords


class Notice:
    """What a detached start reports on its notification pipe, once: the
    container runs (``ok``), or it could not be started (``err CODE MSG``,
    CODE the exit code of the failure: 2 bad input, 1 not done).  Nothing on
    the pipe (the supervisor died first) decodes to None.

    A value, but not a dataclass: this module is on a foreground ``run``'s
    path, where building a frozen dataclass costs ~0.5-2 ms of start-up."""

    __slots__ = ("ok", "code", "message")
    ok: bool
    code: int
    message: str

    def __init__(self, ok: bool, code: int = 1, message: str = "") -> None:
        object.__setattr__(self, "ok", ok)
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "message", message)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Notice is immutable: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Notice):
            return NotImplemented
        return (self.ok, self.code, self.message) == (other.ok, other.code, other.message)

    def __hash__(self) -> int:
        return hash((self.ok, self.code, self.message))

    def __repr__(self) -> str:
        return f"Notice(ok={self.ok!r}, code={self.code!r}, message={self.message!r})"

    def encode(self) -> bytes:
        if self.ok:
            return b"ok\n"
        # one line whatever the message (a path may carry undecodable bytes)
        line = f"err {self.code} {' '.join(self.message.split())}"
        return line.encode(errors="replace") + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> Notice | None:
        text = data.decode(errors="replace").strip()
        if text.startswith("ok"):
            return cls(True, 0)
        if text.startswith("err "):
            code, _, message = text[4:].partition(" ")
            return cls(False, 2 if code == "2" else 1, message)
        return None


class _Notifier:
    """The supervisor's end of the pipe: sends the first notice, ignores the rest."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def send(self, notice: Notice) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, notice.encode())
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def supervise(records: ContainerRecords, bundles: Bundles, cid: str, *, foreground: bool,
              notify_fd: int | None = None) -> int:
    """Own container ``cid`` (prepared) until its final exit: start it, record
    it running, log it (detached), restart it by its policy, tear it down and
    record the exit; its exit code.  ``foreground``: with this process's stdio."""
    from .executors.base import Stdio

    notifier = _Notifier(notify_fd)
    c = records.lookup(cid)
    ex = bundles.executor_for(c)
    me = os.getpid()
    hc = _health_config(c)
    state: dict[str, Any] = {"running": None, "stop": False}

    def forward(sig: int, _frame: Any) -> None:
        if sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            state["stop"] = True
        r = state["running"]
        if r is not None:
            try:
                os.kill(r.pid, sig)
            except OSError:
                pass

    old_handlers = {s: signal.signal(s, forward)
                    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    log = None
    if not foreground:
        from . import logfile  # a detached container's only: not on a foreground run's path

        log = logfile.LogWriter(c.log_path)
    restarts = c.restart_count
    code = 0
    listen: tuple[int, ...] | None = None  # --socket-activate: fetched once, kept for every restart
    try:
        while True:
            child_ends: tuple[int, ...] = ()  # the child's copies, closed once it has them
            if foreground:
                stdio, pipes = Stdio(0, 1, 2), None
            else:
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                child_ends = (os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), out_w, err_w)
                stdio = Stdio(*child_ends)
                pipes = (out_r, err_r)
            try:
                if listen is None:
                    listen = _listen_fds(bundles, c)
                stdio.extra = listen
                running = ex.start(cid, c.bundle, stdio)
            except RuntimeFault as exc:
                _close_stdio(stdio, foreground, pipes)
                bundles.teardown(c)
                records.update(cid, state="exited", exit_code=127, error=str(exc),
                               finished_at=time.time(), pid=None)
                notifier.send(Notice(False, exc.exit_code, str(exc)))
                raise
            state["running"] = running
            for fd in child_ends:
                os.close(fd)
            init = running.init_pid()
            records.update(cid, state="running", pid=init, owner_pid=me,
                           owner_start=proc_start_time(me), started_at=time.time(),
                           finished_at=None, exit_code=None, restart_count=restarts,
                           health="starting" if hc is not None else None,  # health.STARTING
                           health_detail=None)
            notifier.send(Notice(True))
            monitor = None
            if hc is not None and init:
                monitor = _start_monitor(records, c, ex, hc, init)
            if not foreground:
                bundles.ready_for_teardown(c)
            if pipes is not None and log is not None:
                from . import logfile

                logfile.pump(pipes, log, running)
            code = running.wait()
            state["running"] = None
            if monitor is not None:
                monitor.stop()
            cur = records.lookup(cid)
            stop = state["stop"] or cur.stop_requested
            pol = cur.options.restart
            again = not stop and (pol.name == "always" or (
                pol.name == "on-failure" and code != 0 and
                (pol.max_retries == 0 or restarts < pol.max_retries)))
            if not again:
                break
            restarts += 1
            records.update(cid, state="restarting", exit_code=code, pid=None, health=None,
                           restart_count=restarts)
            if _backoff(records, cid, restarts, state):
                break
        listen = _closed(listen)  # before "exited": a start right after may bind them again
        bundles.teardown(records.lookup(cid))
        records.update(cid, state="exited", exit_code=code, finished_at=time.time(), pid=None,
                       health=None)
        if not foreground and c.options.rm:  # run -d --rm: gone once it exits on its own
            from .removal import autoremove

            try:
                autoremove(records, bundles, cid)
            except Exception as exc:  # noqa: BLE001 - it stays exited; `rm` takes it
                from . import diag

                diag.ignored(__name__, f"removing --rm container {cid[:12]}", exc)
        return code
    finally:
        notifier.send(Notice(False, 1, "container exited before it was reported running"))
        _closed(listen)
        if log is not None:
            log.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)


def _listen_fds(bundles: Bundles, c: Container) -> tuple[int, ...]:
    """The container's ``--socket-activate`` sockets, from its holder
    (runtime.sockholder); none for the others (nothing imported)."""
    if not c.options.socket_activate:
        return ()
    from . import sockholder

    return tuple(sockholder.fetch(bundles.store.root, c.id, c.options.socket_activate))


def _closed(fds: tuple[int, ...] | None) -> tuple[int, ...]:
    for fd in fds or ():
        os.close(fd)
    return ()


def _has_health(c: Container) -> bool:
    return c.options.health is not None or bool(
        (c.image_config.get("config") or {}).get("Healthcheck"))


def preloads(c: Container) -> tuple[str, ...]:
    """The modules of runtime/ only ``c``'s run needs, which a supervisor
    spawned ahead imports before its go rather than after it (``--preload``,
    :data:`PRELOAD`): health for a health check (~8 ms with dataclasses),
    sockholder (socket, selectors: ~4 ms) for ``--socket-activate``.  A
    forked supervisor, whose time before the go is short, imports them when
    it needs them."""
    return (*(("health",) if _has_health(c) else ()),
            *(("sockholder",) if c.options.socket_activate else ()))


def _health_config(c: Container) -> Any:
    """The container's health check, or None; runtime.health (a module and
    a dataclass to build) is imported for a container that has one (by a
    spawned supervisor before its go, :func:`preloads`)."""
    if not _has_health(c):
        return None
    from . import health

    return health.effective(c.options.health, c.image_config)


def _close_stdio(stdio: Any, foreground: bool, pipes: Any) -> None:
    if foreground:
        return
    for fd in (stdio.stdin, stdio.stdout, stdio.stderr, *pipes):
        try:
            os.close(fd)
        except OSError:
            pass


def _backoff(records: ContainerRecords, cid: str, n: int, state: dict[str, Any]) -> bool:
    """Sleep before restart n (100 ms doubling, at most 10 s); True if a stop
    was requested meanwhile."""
    from .polling import wait_until

    wait_until(lambda: state["stop"] or records.stop_requested(cid),
               timeout=min(0.1 * 2 ** (n - 1), 10.0), interval=0.05, max_interval=0.05)
    return bool(state["stop"] or records.stop_requested(cid))


def _start_monitor(records: ContainerRecords, c: Container, ex: Any, hc: Any, init: int) -> Any:
    from .executors.base import Stdio
    from .health import HealthMonitor, HealthStatus

    spec = json.loads((c.bundle / "config.json").read_text())
    proc = spec["process"]

    def exec_check(argv: list[str], timeout: float) -> tuple[int, str]:
        import tempfile

        with tempfile.TemporaryFile(dir=c.dir) as out:
            devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            try:
                code = ex.exec(c.id, init, argv, env=proc["env"], uid=proc["user"]["uid"],
                               gid=proc["user"]["gid"], cwd=proc["cwd"],
                               stdio=Stdio(devnull, out.fileno(), out.fileno()), timeout=timeout)
            finally:
                os.close(devnull)
            out.seek(0)
            return code, out.read(8192).decode(errors="replace")

    def record(st: HealthStatus) -> None:
        records.update(c.id, health=st.status,
                       health_detail={"failing_streak": st.failing_streak, "log": st.log})

    netns = None if c.options.network == "host" else f"/proc/{init}/ns/net"
    mon = HealthMonitor(hc, exec_check=exec_check, netns=netns, record=record)
    mon.start()
    return mon


#: the modules of runtime/ a spawned supervisor may be told to import before its
#: go (``--preload``; what :func:`preloads` names)
PRELOAD = frozenset({"health", "sockholder"})


class _Args:
    """The supervisor's command line: ``CID --root R [--notify-fd N] [--go-fd N]
    [--factory M:F] [--preload MOD,...]``,
    written by :func:`supervisor_argv` only (no argparse: ~7 ms to import)."""

    def __init__(self, argv: list[str]) -> None:
        if not argv or argv[0].startswith("-"):
            raise SystemExit("usage: supervisor CID --root R [--notify-fd N] [--go-fd N] "
                             "[--factory M:F] [--preload MOD,...]")
        self.container_id = argv[0]
        opts = dict(zip(argv[1::2], argv[2::2]))
        unknown = set(opts) - {"--root", "--notify-fd", "--go-fd", "--factory", "--preload"}
        self.preload = tuple(m for m in opts.get("--preload", "").split(",") if m)
        if (unknown or len(argv) % 2 == 0 or "--root" not in opts
                or not PRELOAD.issuperset(self.preload)):
            raise SystemExit(f"supervisor: bad arguments {argv[1:]!r}")
        self.root = opts["--root"]
        self.notify_fd = int(opts["--notify-fd"]) if "--notify-fd" in opts else None
        self.go_fd = int(opts["--go-fd"]) if "--go-fd" in opts else None
        self.factory = opts.get("--factory")


def parts(store: Any, factory: str | None) -> Any:
    """What the supervisor uses of the engine: an object with its ``records``
    and ``bundles``, built by ``factory`` ("module:function" of the store),
    or the engine's defaults (plain directory volumes, no network).  Not the
    engine itself (runtime.containers, runtime.lifecycle): only this."""
    if factory:
        import importlib

        mod, _, fn = factory.partition(":")
        return getattr(importlib.import_module(mod), fn)(store)
    from types import SimpleNamespace

    from .bundle import Bundles
    from .records import ContainerRecords
    from .volumes_api import PlainDirVolumes

    records = ContainerRecords(store)
    return SimpleNamespace(records=records,
                           bundles=Bundles(store, records, PlainDirVolumes(store.root), None))


def main(argv: list[str] | None = None) -> int:
    """The spawned supervisor process (see :func:`own`)."""
    args = _Args(sys.argv[1:] if argv is None else argv)
    os.chdir("/")
    for fd in (args.notify_fd, args.go_fd):
        if fd is not None:
            os.set_inheritable(fd, False)
    if os.fork():  # double fork: the CLI waits for this parent only
        os._exit(0)
    own(args.root, args.factory, args.container_id, args.notify_fd, args.go_fd,
        preload=args.preload)


def own(root: str | None, factory: str | None, cid: str, notify_fd: int | None,
        go_fd: int | None, *, inherited: frozenset[str] | None = None,
        preload: tuple[str, ...] = ()) -> NoReturn:
    """A supervisor's life, spawned (:func:`main`) or forked (runtime.superspawn):
    get ready while the engine prepares, wait for its go on ``go_fd`` (end of
    file: cancelled, or the engine died: nothing was started), own the run.
    The go may name the container, the store root and the factory (a
    forked supervisor learns them then: ``go\0CID\0ROOT\0FACTORY``).

    Ends with os._exit once the exit is recorded: ``stop`` waits for this
    process to be gone, and the interpreter's teardown (SQLite's checkpoint
    of the last connection, a write and two fsyncs) would only delay it;
    every commit is durable already.  ``inherited``: the modules a forked
    supervisor had from the command it was forked from (for the module list);
    ``preload``: what only this container's run needs, imported before the
    go (:data:`PRELOAD`; a spawned one's ``--preload``)."""
    from . import bundle, executors, logfile  # noqa: F401 - while the engine prepares

    if preload:
        import importlib

        for name in preload:  # (checked against PRELOAD by _Args)
            importlib.import_module(f"{__package__}.{name}")
    from .store import Store

    code = 0
    try:
        store = None
        try:
            store = Store(root, sweep=False)
        except Exception:  # noqa: BLE001 - a forked one's guess of the root: told below
            if inherited is None:
                raise
        if go_fd is not None:
            told = _told_to_go(go_fd)
            if told is None:
                os._exit(0)  # cancelled, or the engine died: nothing was started
            if told:
                cid, root, factory = told[0], told[1], told[2] or None
                if store is None or str(store.root) != root:
                    store = Store(root, sweep=False)
        assert store is not None
        # the records (a SQLite connection) only now: one cancelled (the start found
        # the container running, or failed) opens none, racing the command's
        p = parts(store, factory)
        if go_fd is not None and inherited is not None:
            _stderr_to(p.records.lookup(cid).dir / "supervisor.err")
        supervise(p.records, p.bundles, cid, foreground=False, notify_fd=notify_fd)
    except RuntimeFault:
        code = 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        _list_modules(os.environ.get("VOLMERGE_SUPERVISOR_MODULES"), inherited)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    os._exit(code)


def _told_to_go(fd: int) -> list[str] | None:
    """Wait for the engine's go (the container is prepared): the fields it
    carries after ``go`` (none for a plain ``go``); None on end of file."""
    chunks = []
    try:
        while chunk := os.read(fd, 65536):  # the engine closes it after its one write
            chunks.append(chunk)
    except OSError:
        chunks = []
    os.close(fd)
    data = b"".join(chunks)
    if not data.startswith(b"go"):
        return None
    fields = [f.decode(errors="surrogateescape") for f in data.rstrip(b"\n").split(b"\0")[1:]]
    return fields if len(fields) == 3 else []


def _stderr_to(path: Path) -> None:
    """This process's stderr from now on (a forked supervisor's, the CLI's until then)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(fd, 2)
    os.close(fd)


def _list_modules(path: str | None, inherited: frozenset[str] | None = None) -> None:
    """For tests/runtime/test_supervisor_imports.py: the modules this
    supervisor imported in its life, one a line, to ``path`` (unset:
    nothing); a forked one's ``inherited`` modules follow, each as
    ``inherited:NAME``."""
    if path:
        own = sorted(set(sys.modules) - (inherited or set()))
        with open(path, "w") as f:
            f.write("\n".join([*own, *(f"inherited:{m}" for m in sorted(inherited or ()))])
                    + "\n")


if __name__ == "__main__":
    sys.exit(main())
