"""The engine's end of a detached start: a supervisor (runtime.supervisor)
made ready while the engine prepares the run, told to go, and waited for
until it reports the container running.

Two ways to make one.  :class:`Pending` spawns a fresh, lean interpreter
(any caller).  :class:`Forked` forks the command itself once it has
imported what a supervisor needs (which the command needs too), before it
imports the lifecycle, opens the store or takes a lock: no second
interpreter start and no imports twice (~50-100 ms of a detached ``start``
under load, the biggest share after runc's), and the child opens its own
store while the command prepares the run (its records, a SQLite connection
of its own, after the go: none is open in the command at the fork).  Only a
short-lived single-threaded command that knows what it holds at that
moment forks (the fast ``start``/``restart``, cli/fastlife.py); the child
has of it only its argument parsing modules besides the supervisor's: it
never returns into the command's code and ends with os._exit.

This module imports nothing at load time beyond os, sys and signal.
"""

from __future__ import annotations

import os
import signal
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from .records import Container


class Pending:
    """A supervisor spawned for container ``c`` before the container is
    prepared, so that its interpreter starts while the engine prepares the
    run (a detached start waits for both); it goes on with :meth:`go`, or
    ends without touching anything on :meth:`cancel` (or when this process
    dies: its go pipe reads end of file).

    The supervisor is a fresh interpreter, so it starts lean: isolated and
    without ``site`` (``-I -S``: no .pth files, no environment lookups,
    ~15 ms less on this VM), on this process's module path, by posix_spawn
    (no subprocess import here)."""

    def __init__(self, c: Container, root: str, factory: str | None) -> None:
        self.c = c
        r, w = os.pipe()
        go_r, self._go = os.pipe()
        errlog = -1
        try:
            errlog = os.open(c.dir / "supervisor.err", os.O_WRONLY | os.O_CREAT | os.O_APPEND
                             | os.O_CLOEXEC, 0o600)
            from .supervisor import preloads  # what it imports before its go

            self.pid = _spawn_session(supervisor_argv(c.id, root, w, factory, go_r, preloads(c)),
                                      errlog, (w, go_r))
        except BaseException:
            for fd in (r, self._go):
                os.close(fd)
            raise
        finally:
            for fd in (w, go_r, errlog):
                if fd >= 0:
                    os.close(fd)
        self._notice = r

    def cancel(self) -> None:
        """The supervisor ends without starting anything."""
        os.close(self._go)
        os.close(self._notice)
        os.waitpid(self.pid, 0)

    def go(self) -> None:
        """Start the container (prepared by now) and return once the
        supervisor reports it running; BadInput or NotDone (with the
        supervisor's last error line when it died) otherwise."""
        await_notice(self.c, b"go\n", self._go, self._notice, self.pid)


def await_notice(c: Container, go: bytes, go_fd: int, notice_fd: int, pid: int) -> None:
    """The engine's end of a start: tell the supervisor ``pid`` (the first
    fork, reaped here) to go on ``go_fd``, and wait for its notice on
    ``notice_fd`` (both closed); BadInput or NotDone unless it reports the
    container running (:class:`Pending`, :class:`Forked`)."""
    try:
        os.write(go_fd, go)
    except BrokenPipeError:
        pass  # it died: its error line is reported below
    os.close(go_fd)
    from .errors import BadInput, NotDone
    from .supervisor import Notice

    with os.fdopen(notice_fd, "rb") as f:
        notice = Notice.decode(f.read())
    os.waitpid(pid, 0)  # the first fork, gone once the supervisor runs on its own
    if notice is not None and notice.ok:
        return
    if notice is not None:
        raise (BadInput if notice.code == 2 else NotDone)(notice.message)
    detail = ""
    try:
        detail = (c.dir / "supervisor.err").read_text().strip().splitlines()[-1]
    except (OSError, IndexError):
        pass
    raise NotDone(f"supervisor of {c.name} failed to start the container"
                  + (f": {detail}" if detail else ""))


#: what the supervisor's interpreter runs: this process's module path, then main()
_BOOT = "import sys; sys.path[:0] = {path!r}; from {mod} import main; main()"
_SUPERVISOR = __name__.rpartition(".")[0] + ".supervisor"


def supervisor_argv(cid: str, root: str, notify_fd: int | None, factory: str | None,
                    go_fd: int | None = None, preload: tuple[str, ...] = ()) -> list[str]:
    """The command line of a supervisor for container ``cid``; ``preload``:
    modules of runtime/ it imports before its go (supervisor.PRELOAD)."""
    path = [os.path.abspath(p) for p in sys.path if p]  # it runs in /, not in our directory
    flags = ("-I", "-S", *(("-B",) if sys.flags.dont_write_bytecode else ()))
    argv = [sys.executable, *flags, "-c", _BOOT.format(path=path, mod=_SUPERVISOR), cid,
            "--root", root]
    if notify_fd is not None:
        argv += ["--notify-fd", str(notify_fd)]
    if go_fd is not None:
        argv += ["--go-fd", str(go_fd)]
    if factory:
        argv += ["--factory", factory]
    if preload:
        argv += ["--preload", ",".join(preload)]
    return argv


def _spawn_session(argv: list[str], errlog: int, keep: tuple[int, ...]) -> int:
    """Start ``argv`` in a new session, stdin and stdout on /dev/null,
    stderr on ``errlog``, with descriptors ``keep`` and no other of ours."""
    from .executors.base import close_inherited

    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for fd in keep:
            os.set_inheritable(fd, True)
        actions: list[tuple[int, ...]] = [(os.POSIX_SPAWN_DUP2, null, 0),
                                          (os.POSIX_SPAWN_DUP2, null, 1),
                                          (os.POSIX_SPAWN_DUP2, errlog, 2)]
        actions += close_inherited(keep)
        # posix_spawn has no chdir before 3.13: the supervisor goes to / itself (main)
        return os.posix_spawn(argv[0], argv, os.environ, file_actions=actions, setsid=True,
                              setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    finally:
        os.close(null)


class Forked:
    """A supervisor forked from this process now, with :class:`Pending`'s
    :meth:`go` and :meth:`cancel` once :meth:`bind` named its container.
    ``root`` and ``factory``: the command's guess of the store and the
    factory the engine will use, so that the child opens that store while
    the command goes on; the go names the ones the engine has (the child
    opens those when the guess was wrong).  Fork only where no other thread
    runs and no store or lock is open yet; :meth:`cancel` is idempotent, so
    the command cancels it whatever happened."""

    def __init__(self, root: str | None, factory: str | None) -> None:
        self.c: Any = None
        self.settled = False
        self._where = (root or "", factory)
        _preload(factory)
        go_r, self._go = os.pipe()
        self._notice, notice_w = os.pipe()
        for stream in (sys.stdout, sys.stderr):  # nothing of ours written twice
            stream.flush()
        try:
            pid = os.fork()
        except BaseException:
            for fd in (go_r, self._go, self._notice, notice_w):
                os.close(fd)
            raise
        if pid == 0:
            _child(root, factory, go_r, notice_w, (self._go, self._notice))
        os.close(go_r)
        os.close(notice_w)
        self.pid = pid

    def bind(self, c: Container, root: str, factory: str | None) -> Forked:
        """Make it own ``c`` of the store at ``root``, with ``factory``."""
        self.c = c
        self._where = (root, factory)
        return self

    def go(self) -> None:
        """As :meth:`Pending.go`."""
        self.settled = True
        root, factory = self._where
        go = b"\0".join((b"go", self.c.id.encode(), os.fsencode(root), (factory or "").encode()))
        await_notice(self.c, go, self._go, self._notice, self.pid)

    def cancel(self) -> None:
        """The child ends without starting anything (nothing once settled)."""
        if self.settled:
            return
        self.settled = True
        os.close(self._go)
        os.close(self._notice)
        os.waitpid(self.pid, 0)


def _preload(factory: str | None) -> None:
    """Import what a supervisor runs on (runtime.supervisor.own): once,
    for the command and the child it forks."""
    import importlib

    from . import bundle, executors, logfile, store, supervisor  # noqa: F401
    from .executors import runc  # noqa: F401 - the default executor

    if factory:
        importlib.import_module(factory.partition(":")[0])


def _child(root: str | None, factory: str | None, go_r: int, notice_w: int,
           parents: tuple[int, ...]) -> NoReturn:
    """The forked side: a session of its own, double-forked (the command
    reaps the first), stdin and stdout on /dev/null, stderr the command's
    until the go names the container (then its ``supervisor.err``), no
    descriptor of the command's (its ends of the pipes: the go pipe must
    read end of file when the command dies) or of the command's caller."""
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        inherited = frozenset(sys.modules)
        for fd in parents:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        from .executors.base import close_inherited

        for _action, fd in close_inherited((go_r, notice_w)):
            os.close(fd)
        root = os.path.abspath(root) if root else None  # before leaving the command's directory
        os.chdir("/")
        from .supervisor import own

        own(root, factory, "", notice_w, go_r, inherited=inherited)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(1)
