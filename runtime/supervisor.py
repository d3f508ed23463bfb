"""The owner of a running container: starts it, logs it, records its exit.

Detached containers get a supervisor process (``python -m runtime.supervisor
<id> --root R``, double-forked, in a session of its own) that outlives the
CLI; a foreground ``run`` calls :func:`supervise` in the CLI process itself.
Either way the owner records its pid and start time with the container, so
a dead owner is noticed (runtime.containers reconciles), writes the
container's output as json lines to ``containers/<id>/log`` (detached),
applies the restart policy, runs the health monitor, and on the final exit
tears the run down *before* recording the exit, so ``exited`` always means
"nothing left running or mounted".

This module must stay light: no typer, no rich (start-up time matters).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from .errors import RuntimeFault

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from typing import Any


class _Notifier:
    """The pipe on which a detached start reports "ok" or "err CODE MSG"."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def send(self, msg: str) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, (msg.replace("\n", " ") + "\n").encode())
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def supervise(engine: Any, cid: str, *, foreground: bool, notify_fd: int | None = None) -> int:
    from . import health as health_mod
    from .containers import proc_start_time
    from .executors.base import Stdio

    notifier = _Notifier(notify_fd)
    c = engine._lookup(cid)
    ex = engine.executor_for(c)
    me = os.getpid()
    hc = health_mod.effective(c.options.health, c.image_config)
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
    log_fd = None
    if not foreground:
        log_fd = os.open(c.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    restarts = c.restart_count
    code = 0
    try:
        while True:
            if foreground:
                stdio, pipes = Stdio(0, 1, 2), None
            else:
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                stdio = Stdio(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), out_w, err_w)
                pipes = (out_r, err_r)
            try:
                running = ex.start(cid, c.bundle, stdio)
            except RuntimeFault as exc:
                _close_stdio(stdio, foreground, pipes)
                engine.teardown(c)
                engine._update(cid, state="exited", exit_code=127, error=str(exc),
                               finished_at=time.time(), pid=None)
                notifier.send(f"err {exc.exit_code} {exc}")
                raise
            state["running"] = running
            if not foreground:
                os.close(stdio.stdin)  # type: ignore[arg-type]
                os.close(stdio.stdout)  # type: ignore[arg-type]
                os.close(stdio.stderr)  # type: ignore[arg-type]
            init = running.init_pid()
            engine._update(cid, state="running", pid=init, owner_pid=me,
                           owner_start=proc_start_time(me), started_at=time.time(),
                           finished_at=None, exit_code=None, restart_count=restarts,
                           health=health_mod.STARTING if hc is not None else None,
                           health_detail=None)
            notifier.send("ok")
            monitor = None
            if hc is not None and init:
                monitor = _start_monitor(engine, c, ex, hc, init)
            if pipes is not None:
                _pump(pipes, log_fd, running)
            code = running.wait()
            state["running"] = None
            if monitor is not None:
                monitor.stop()
            cur = engine._lookup(cid)
            stop = state["stop"] or cur.stop_requested
            pol = cur.options.restart
            again = not stop and (pol.name == "always" or (
                pol.name == "on-failure" and code != 0 and
                (pol.max_retries == 0 or restarts < pol.max_retries)))
            if not again:
                break
            restarts += 1
            engine._update(cid, state="restarting", exit_code=code, pid=None, health=None,
                           restart_count=restarts)
            if _backoff(engine, cid, restarts, state):
                break
        engine.teardown(engine._lookup(cid))
        engine._update(cid, state="exited", exit_code=code, finished_at=time.time(), pid=None,
                       health=None)
        return code
    finally:
        notifier.send("err 1 container exited before it was reported running")
        if log_fd is not None:
            os.close(log_fd)
        for s, h in old_handlers.items():
            signal.signal(s, h)


def _close_stdio(stdio: Any, foreground: bool, pipes: Any) -> None:
    if foreground:
        return
    for fd in (stdio.stdin, stdio.stdout, stdio.stderr, *pipes):
        try:
            os.close(fd)
        except OSError:
            pass


def _backoff(engine: Any, cid: str, n: int, state: dict[str, Any]) -> bool:
    """Sleep before restart n (100 ms doubling, at most 10 s); True if a stop
    was requested meanwhile."""
    deadline = time.monotonic() + min(0.1 * 2 ** (n - 1), 10.0)
    while time.monotonic() < deadline:
        if state["stop"] or engine._lookup(cid).stop_requested:
            return True
        time.sleep(0.05)
    return bool(state["stop"] or engine._lookup(cid).stop_requested)


def _pump(pipes: tuple[int, int], log_fd: int | None, running: Any) -> None:
    """Copy the container's stdout/stderr into the log until both close."""
    import selectors  # a detached container's only: not on a foreground run's path

    sel = selectors.DefaultSelector()
    names = {pipes[0]: "stdout", pipes[1]: "stderr"}
    partial = {pipes[0]: b"", pipes[1]: b""}
    for fd in pipes:
        sel.register(fd, selectors.EVENT_READ)
    open_fds = set(pipes)
    exited_at = None
    while open_fds:
        events = sel.select(timeout=0.5)
        for key, _ in events:
            fd = key.fd
            try:
                data = os.read(fd, 65536)
            except InterruptedError:
                continue
            if not data:
                sel.unregister(fd)
                os.close(fd)
                open_fds.discard(fd)
                if partial[fd]:
                    _write_log(log_fd, names[fd], partial[fd])
                    partial[fd] = b""
                continue
            buf = partial[fd] + data
            *lines, partial[fd] = buf.split(b"\n")
            for line in lines:
                _write_log(log_fd, names[fd], line + b"\n")
            if len(partial[fd]) > 16384:
                _write_log(log_fd, names[fd], partial[fd])
                partial[fd] = b""
        if not events and running.poll() is not None:
            # The container is gone; a stray holder of the pipe must not
            # keep the supervisor forever.
            exited_at = exited_at or time.monotonic()
            if time.monotonic() - exited_at > 1.0:
                break
    for fd in open_fds:
        if partial[fd]:
            _write_log(log_fd, names[fd], partial[fd])
        sel.unregister(fd)
        os.close(fd)


def _write_log(log_fd: int | None, stream: str, data: bytes) -> None:
    if log_fd is None:
        return
    rec = json.dumps({"t": round(time.time(), 6), "s": stream,
                      "d": data.decode("utf-8", errors="replace")})
    os.write(log_fd, rec.encode() + b"\n")


def _start_monitor(engine: Any, c: Any, ex: Any, hc: Any, init: int) -> Any:
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
        engine._update(c.id, health=st.status,
                       health_detail={"failing_streak": st.failing_streak, "log": st.log})

    netns = None if c.options.network == "host" else f"/proc/{init}/ns/net"
    mon = HealthMonitor(hc, exec_check=exec_check, netns=netns, record=record)
    mon.start()
    return mon


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m volmerge.runtime.supervisor")
    ap.add_argument("container_id")
    ap.add_argument("--root", required=True)
    ap.add_argument("--notify-fd", type=int)
    ap.add_argument("--factory")
    args = ap.parse_args(argv)
    if args.notify_fd is not None:
        os.set_inheritable(args.notify_fd, False)
    if os.fork():  # double fork: the CLI waits for this parent only
        os._exit(0)
    from .store import Store

    store = Store(args.root, sweep=False)
    if args.factory:
        import importlib

        mod, _, fn = args.factory.partition(":")
        engine = getattr(importlib.import_module(mod), fn)(store)
    else:
        from .containers import Engine

        engine = Engine(store)
    try:
        supervise(engine, args.container_id, foreground=False, notify_fd=args.notify_fd)
    except RuntimeFault:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
