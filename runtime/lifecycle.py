"""The lifecycle of created containers: start, stop, kill, pause, exec, wait,
remove.

Every operation reads the container through :meth:`Lifecycle.get` (its
record, reconciled when its owner died), changes the record through the
:class:`~.records.ContainerRecords` and the run through the
:class:`~.bundle.Bundles` it is handed; a detached start goes to a
supervisor process (runtime.supervisor, made by runtime.superspawn), a foreground one is supervised in
this process.  The engine (runtime.containers) is the facade over it.
"""

from __future__ import annotations

import json
import os
import signal
import time

from .errors import BadInput, Conflict, NotDone, NotFound
from .records import Container, ContainerRecords, pid_alive, prestarted, proc_start_time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from typing import Any

    from .bundle import Bundles

_SIGNALS: dict[str, int] = {}


def signals() -> dict[str, int]:
    """Signal names without ``SIG`` to numbers (built on first use: a run never needs it)."""
    if not _SIGNALS:
        _SIGNALS.update((s.name[3:], int(s)) for s in signal.Signals
                        if s.name.startswith("SIG") and "_" not in s.name)
    return _SIGNALS


def parse_signal(sig: str | int) -> int:
    """``9``, ``KILL`` or ``SIGKILL`` to a signal number; BadInput otherwise."""
    if isinstance(sig, int) or str(sig).isdigit():
        n = int(sig)
        if not 0 < n < 65:
            raise BadInput(f"invalid signal {sig!r}")
        return n
    s = str(sig).upper()
    s = s[3:] if s.startswith("SIG") else s
    if s not in signals():
        raise BadInput(f"invalid signal {sig!r}")
    return signals()[s]


def _owner_pidfd(c: Container) -> int | None:
    """A pidfd of the container's owner, checked to be that process (not a
    recycled pid) once open; None when it is gone or pidfds are missing."""
    if not c.owner_pid:
        return None
    try:
        fd = os.pidfd_open(c.owner_pid)
    except OSError:
        return None
    if not pid_alive(c.owner_pid, c.owner_start):
        os.close(fd)
        return None
    return fd


class Lifecycle:
    """Operations on the containers of one store (``factory``: how a detached
    supervisor builds the same engine, see runtime.containers.Engine)."""

    def __init__(self, records: ContainerRecords, bundles: Bundles,
                 factory: str | None = None) -> None:
        self.records = records
        self.bundles = bundles
        self.store = records.store
        self.factory = factory
        #: a supervisor forked in advance by the command (runtime.superspawn.Forked),
        #: taken by the next detached start instead of spawning one
        self.spare: Any = None
        #: supervisors spawned by :meth:`prestart`, by container id, each taken by
        #: that container's start (or cancelled by :meth:`unprestart`)
        self.ahead: dict[str, Any] = {}

    def _pending(self, c: Container) -> Any:
        """A supervisor for ``c``, ready to go: the spare, or a spawned one."""
        spare, self.spare = self.spare, None
        if spare is not None:
            return spare.bind(c, str(self.store.root), self.factory)
        from .superspawn import Pending

        return Pending(c, str(self.store.root), self.factory)

    def _cancel_ahead(self, cid: str) -> None:
        """The supervisor :meth:`prestart` spawned for ``cid``, if any, ends
        without touching anything."""
        ahead = self.ahead.pop(cid, None)
        if ahead is not None:
            ahead.cancel()

    def get(self, ref: str) -> Container:
        """The container by name, id or unique id prefix, reconciled."""
        return self.reconciled(self.records.lookup(ref))

    def reconciled(self, c: Container) -> Container:
        if (not c.live and not prestarted(c)) or c.owner_alive():
            return c
        from .reconcile import reconcile_one  # only when an owner died

        return reconcile_one(self.records, self.bundles, c)

    def restart(self, ref: str, timeout: float = 10) -> Container:
        """Stop (as :meth:`stop`) and start detached.  The new supervisor is
        spawned first: its interpreter starts while the old run stops, which
        shortens the time nothing answers."""
        c = self.records.lookup(ref)
        pending = self._pending(c)
        try:
            self.stop(c.id, timeout)
        except BaseException:
            pending.cancel()
            raise
        self.start(c.id, pending=pending)
        return self.get(c.id)

    def start(self, ref: str, *, attach: bool = False, stop_timeout: float = 10,
              pending: Any = None) -> int | None:
        """Start a created or exited container.  ``attach``: run it in this
        process with its stdio and return its exit code; else hand it to a
        supervisor and return once it runs.  A container whose stop is under
        way (its caller may have been killed after the signal) is first seen
        through that stop (SIGKILL after ``stop_timeout``): left alone it
        would exit after this start returned, and not be restarted.
        ``pending``: a supervisor spawned already (:meth:`restart`), used or
        cancelled; else the one :meth:`prestart` spawned, if any."""
        c = self.records.lookup(ref)
        if pending is None:
            pending = self.ahead.pop(c.id, None)
        else:
            self._cancel_ahead(c.id)
        try:
            if c.live and c.stop_requested:
                self.stop(c.id, timeout=stop_timeout)
        except BaseException:
            if pending is not None:
                pending.cancel()
            raise
        if pending is None and not attach and not c.live:
            # spawned first: its interpreter starts while this process prepares
            pending = self._pending(c)
        try:
            with self.store.lock("container-" + c.id):
                c = self.get(ref)
                if c.live:
                    if attach:
                        raise Conflict(f"container {c.name} is already running")
                    return None
                reset = {"stop_requested": False, "error": None, "health": None,
                         "health_detail": None,
                         "restart_count": 0 if c.state == "created" else c.restart_count}
                if prestarted(c):  # from here on the run is this start's (the supervisor's)
                    reset.update(owner_pid=None, owner_start=None)
                # a container just created has these already: no commit (an fsync) for nothing
                self.records.update(c.id, **{k: v for k, v in reset.items()
                                             if getattr(c, k) != v})
                self.bundles.prepare(c)
                if not attach:
                    if pending is None:  # it was live at the first look
                        pending = self._pending(c)
                    go, pending = pending, None
                    try:
                        go.go()
                    except BaseException:
                        self.bundles.teardown(self.records.lookup(c.id))
                        raise
                    return None
        finally:
            if pending is not None:
                pending.cancel()
        from .supervisor import supervise

        return supervise(self.records, self.bundles, c.id, foreground=True)

    def prestart(self, ref: str, ip: str | None = None) -> Container:
        """Prepare, ahead of its start, what a created container's run needs
        that depends neither on its volumes' data nor on its address being
        free (Bundles.prestart: the root, and the network namespace
        configured for ``ip``, which another container may still hold), and
        its supervisor spawned (it waits for the start's go; its interpreter
        starts now, not in the start): an upgrade does it while the old
        version serves, so the switch's start does less.

        The calling process is recorded as the container's owner first
        (state still ``created``): if it dies before the start, the next look
        at the container (``get``, ``ps``) tears the prepared parts down
        (runtime.reconcile), as :meth:`unprestart`, ``teardown`` and ``rm``
        do.  The start takes the run over from it.  Conflict unless the
        container is ``created``."""
        c = self.records.lookup(ref)
        with self.store.lock("container-" + c.id):
            c = self.get(c.id)
            if c.state != "created":
                raise Conflict(f"container {c.name} is {c.state}: only a created container "
                               "is prepared ahead of its start")
            me = os.getpid()
            self.records.update(c.id, owner_pid=me, owner_start=proc_start_time(me))
            try:
                self.bundles.prestart(c, ip)
                if c.id not in self.ahead:  # its interpreter starts now, not at the start
                    self.ahead[c.id] = self._pending(c)
            except BaseException:
                self.bundles.teardown(c)
                self.records.update(c.id, owner_pid=None, owner_start=None)
                raise
            return self.records.lookup(c.id)

    def unprestart(self, ref: str) -> None:
        """Undo :meth:`prestart` of a container that has not started since
        (idempotent; a started one is its run's, and left alone)."""
        c = self.records.lookup(ref)
        self._cancel_ahead(c.id)
        with self.store.lock("container-" + c.id):
            c = self.records.lookup(c.id)
            if c.state != "created":
                return
            self.bundles.teardown(c)
            if c.owner_pid is not None:
                self.records.update(c.id, owner_pid=None, owner_start=None)

    def stop(self, ref: str, timeout: float = 10, *, autoremove: bool = False) -> Container:
        """The image's StopSignal (default SIGTERM), then SIGKILL after
        ``timeout`` seconds; the restart policy does not restart a container
        stopped this way.  ``autoremove`` (the ``stop`` command): a ``--rm``
        container is removed once stopped, as Docker's; a restart or an
        upgrade stops it without (its supervisor removes it only when it
        exits on its own)."""
        c = self.get(ref)
        if autoremove and c.options.rm:
            self.stop(c.id, timeout)
            try:
                self.remove(c.id)
            except NotFound:  # removed meanwhile (its own exit, an `rm`)
                pass
            return c
        if not c.live:
            return c
        self.records.update(c.id, stop_requested=True)
        if c.state == "paused":
            self.unpause(c.id, missing_ok=True)  # a snapshot's --pause may end meanwhile
        try:  # the image's STOPSIGNAL (e.g. SIGINT for PostgreSQL's fast shutdown)
            stopsig = parse_signal(c.options.stop_signal
                                   or (c.image_config.get("config") or {}).get("StopSignal") or "TERM")
        except BadInput:
            stopsig = signal.SIGTERM
        self._signal(c, stopsig)
        if self._wait_stopped(c, timeout):
            return self.get(c.id)
        self._signal(self.get(c.id), signal.SIGKILL)
        if not self._wait_stopped(c, 15):
            raise NotDone(f"container {c.name} did not stop")
        return self.get(c.id)

    def _wait_stopped(self, c: Container, timeout: float) -> bool:
        """Whether the container is recorded stopped within ``timeout`` seconds.

        Woken by its owner's exit (a pidfd): a detached container's
        supervisor records the exit and ends at once, so ``stop`` returns
        within milliseconds of it instead of at its next poll (it polled with
        a backoff to 100 ms, after importing tenacity).  Between wake-ups it
        looks at the record, 5 ms doubling to 100 ms: a foreground owner
        lives on after its container."""
        import select  # not on a run's path

        deadline = time.monotonic() + timeout
        fd = _owner_pidfd(c)
        delay = 0.005
        try:
            while self.get(c.id).live:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if fd is None:
                    time.sleep(min(left, delay))
                elif select.select([fd], [], [], min(left, delay))[0]:
                    os.close(fd)  # gone: the next look reconciles what it left
                    fd = None
                delay = min(delay * 2, 0.1)
            return True
        finally:
            if fd is not None:
                os.close(fd)

    def _signal(self, c: Container, sig: int) -> None:
        if c.pid:
            self.bundles.executor_for(c).kill(c.id, c.pid, sig)

    def kill(self, ref: str, sig: str | int = "TERM") -> Container:
        signum = parse_signal(sig)
        c = self.get(ref)
        if not c.live or not c.pid:
            raise Conflict(f"container {c.name} is not running")
        if signum in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            # SIGKILL keeps the restart policy from restarting it; a --rm container
            # has none, and its supervisor removes it once it exits (runtime.removal)
            self.records.update(c.id, stop_requested=signum == signal.SIGKILL
                                and not c.options.rm)
        if c.state == "paused" and signum == signal.SIGKILL:
            self.unpause(c.id)
        self._signal(c, signum)
        return c

    def remove(self, ref: str, force: bool = False) -> None:
        """Remove a stopped container (``force``: kill it first) and its layer."""
        c = self.get(ref)
        self._cancel_ahead(c.id)
        if c.live:
            if not force:
                raise Conflict(f"container {c.name} is {c.state}: stop it first or use --force")
            self.records.update(c.id, stop_requested=True)
            if c.state == "paused":
                self.unpause(c.id)
            self._signal(c, signal.SIGKILL)
            if not self._wait_stopped(c, 15):
                raise NotDone(f"container {c.name} did not stop")
            c = self.get(c.id)
        from .removal import remove_locked

        with self.store.lock("container-" + c.id):
            remove_locked(self.records, self.bundles, c)

    def pause(self, ref: str) -> None:
        c = self.get(ref)
        if c.state == "paused":  # as podman says it
            raise Conflict(f"container {c.name} is already paused")
        if c.state != "running":
            raise Conflict(f"container {c.name} is not running")
        # recorded first: a crash between the two leaves a record saying paused
        # over a container that runs, which unpause(missing_ok) puts right; the
        # other order left a frozen container its record called running
        self.records.update(c.id, state="paused")
        try:
            self.bundles.executor_for(c).pause(c.id)
        except BaseException:
            self.records.update(c.id, state="running")
            raise

    def unpause(self, ref: str, *, missing_ok: bool = False) -> None:
        """Thaw a paused container.  ``missing_ok``: one that another command
        thawed meanwhile (a stop racing the end of a ``volume snapshot
        --pause``, or the other way round) is fine, not an error."""
        c = self.get(ref)
        if c.state != "paused":
            if missing_ok:
                return
            raise Conflict(f"container {c.name} is not paused")
        try:
            self.bundles.executor_for(c).unpause(c.id)
        except NotDone as exc:  # runc: "container not paused" (thawed by the other)
            if not (missing_ok and "not paused" in str(exc)):
                raise
        self.records.update(c.id, state="running")

    def exec(self, ref: str, argv: list[str], env: dict[str, str] | None = None,
             user: str | None = None, workdir: str | None = None, stdio: Any = None,
             tty: bool = False) -> int:
        """Run ``argv`` in the running container; its exit code.  ``tty``: on
        a pseudo-terminal of the container's (the caller's stdin must be one)."""
        from .executors.base import Stdio
        from .spec import resolve_user

        c = self.get(ref)
        if c.state != "running" or not c.pid:
            raise Conflict(f"container {c.name} is not running")
        if not argv:
            raise BadInput("exec needs a command")
        spec = json.loads((c.bundle / "config.json").read_text())
        proc = spec["process"]
        envd = dict(e.split("=", 1) for e in proc["env"] if "=" in e)
        envd.update(env or {})
        if tty:
            envd.setdefault("TERM", "xterm")
        if user:
            uid, gid, _extra, _home = resolve_user(c.rootfs, user)
        else:
            uid, gid = proc["user"]["uid"], proc["user"]["gid"]
        cwd = workdir or proc["cwd"]
        _check_command(c, argv[0], envd.get("PATH", ""), cwd)
        return self.bundles.executor_for(c).exec(
            c.id, c.pid, argv, env=[f"{k}={v}" for k, v in envd.items()], uid=uid, gid=gid,
            cwd=cwd, stdio=stdio or Stdio(0, 1, 2), tty=tty)

    def wait(self, ref: str, *, healthy: bool = False, timeout: float | None = None) -> int | str:
        """Until the container exits (its exit code) or, with ``healthy``,
        until its health check passes ("healthy"; "running" when it has no
        check).  NotDone (exit 1) on timeout, exit or unhealthy."""
        c = self.records.lookup(ref)
        if healthy:
            from .health import wait_healthy

            def read() -> tuple[str, str | None]:
                cur = self.get(c.id)
                return cur.state, cur.health

            try:
                return wait_healthy(read, timeout)
            except RuntimeError as exc:
                raise NotDone(f"container {c.name} is not healthy: {exc}") from None
        from .polling import wait_until

        def exited() -> tuple[int] | None:  # a tuple: exit code 0 is an answer too
            try:
                cur = self.get(c.id)
            except NotFound:
                if not c.options.rm:
                    raise
                raise NotDone(f"container {c.name} was removed when it exited (--rm): "
                              "its exit code went with it") from None
            if not cur.live and cur.state != "created":
                return (cur.exit_code if cur.exit_code is not None else 0,)
            if cur.state == "created" and not cur.started_at:
                return (cur.exit_code or 0,)
            return None

        got = wait_until(exited, timeout=timeout, interval=0.005, max_interval=0.2)
        if got is None:
            raise NotDone(f"container {c.name} still {self.get(c.id).state} after {timeout:g}s")
        return got[0]


def _check_command(c: Container, argv0: str, path: str, cwd: str) -> None:
    """BadInput, as ``run`` says it, when ``argv0`` is no executable in the
    running container: looked up as execvp would, in the container's root
    as its first process sees it (``/proc/PID/root``: its volumes and other
    mounts included), symbolic links resolved inside it.  runc would fail
    with its own log line and exit 255."""
    import posixpath
    from pathlib import Path

    from .spec import DEFAULT_PATH, find_executable

    path = path or DEFAULT_PATH
    look = argv0
    if "/" in argv0 and not argv0.startswith("/"):  # from the working directory
        look = posixpath.normpath(posixpath.join(cwd, argv0))
    if find_executable(Path(f"/proc/{c.pid}/root"), look, path) is None:
        raise BadInput(f"command {argv0!r} not found in container {c.name}")
