"""The runc executor: ``runc --root <store>/runc run --bundle B <id>``.

``runc run`` stays in the foreground, passes its stdio to the container,
proxies the signals it receives, returns the container's exit code and
deletes the container when it exits, so the caller only has to wait on it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from ..errors import NotDone
from .base import Stdio, close_inherited, read_pid_file


class RuncRunning:
    """``runc run``, a child of this process (see :func:`spawn`)."""

    def __init__(self, pid: int, pid_file: Path) -> None:
        self.pid = pid
        self.pid_file = pid_file
        self._status: int | None = None  # Popen.returncode's convention: -N for signal N

    def wait(self) -> int:
        if self._status is None:
            _, status = os.waitpid(self.pid, 0)  # retried on EINTR (PEP 475)
            self._status = os.waitstatus_to_exitcode(status)
        rc = self._status
        return 128 - rc if rc < 0 else rc

    def poll(self) -> int | None:
        if self._status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == 0:
                return None
            self._status = os.waitstatus_to_exitcode(status)
        return self.wait()

    def init_pid(self, timeout: float = 5.0) -> int | None:
        return read_pid_file(self.pid_file, lambda: self.poll() is None, timeout)


def spawn(argv: list[str], stdio: Stdio) -> int:
    """Start ``argv`` (looked up in PATH) as ``subprocess.Popen`` would: ``stdio``
    on 0-2 (None: this process's) and its ``extra`` on 3.., every other
    descriptor closed, SIGPIPE and SIGXFSZ back to their defaults (Python
    ignores them).  By posix_spawn:
    importing subprocess (selectors, threading...) cost the cold ``run`` ~4 ms.
    Its pid; OSError (FileNotFoundError for a missing runc) when it cannot start."""
    keep: list[int] = []  # a source among the targets that another target would overwrite
    actions: list[tuple[int, ...]] = []
    top = 3 + len(stdio.extra)  # targets: stdio on 0-2, ``extra`` on 3.. (runc --preserve-fds)
    try:
        for target, f in enumerate((stdio.stdin, stdio.stdout, stdio.stderr, *stdio.extra)):
            if f is None:
                continue
            fd = f if isinstance(f, int) else f.fileno()
            if fd < top and fd != target or target > 2:  # (dup2 onto itself keeps close-on-exec)
                import fcntl

                fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, top)
                keep.append(fd)
            actions.append((os.POSIX_SPAWN_DUP2, fd, target))
        actions += close_inherited(first=top)
        return os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions,
                               setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    finally:
        for fd in keep:
            os.close(fd)


class RuncExecutor:
    name = "runc"

    def __init__(self, root: Path) -> None:
        self.state_root = Path(root) / "runc"

    def _cmd(self, *args: str) -> list[str]:
        return ["runc", "--root", str(self.state_root), *args]

    def start(self, cid: str, bundle: Path, stdio: Stdio) -> RuncRunning:
        self.state_root.mkdir(mode=0o700, exist_ok=True)
        pid_file = bundle.parent / "init.pid"
        pid_file.unlink(missing_ok=True)
        extra = ["--preserve-fds", str(len(stdio.extra))] if stdio.extra else []
        pid = spawn(self._cmd("run", "--bundle", str(bundle), "--pid-file", str(pid_file),
                              *extra, cid), stdio)
        return RuncRunning(pid, pid_file)

    def kill(self, cid: str, init_pid: int, sig: int) -> None:
        """``sig`` to the container's first process: straight to it when it
        is provably that process (:func:`_signal_member`), else by ``runc
        kill``, whose Go start-up (~5 ms) was on every stop's path.  SIGKILL
        always goes by ``runc kill``: it also thaws a frozen cgroup (v1),
        where a killed process would otherwise wait, frozen, for ever (a
        crash between ``runc pause`` and the record saying so leaves a
        container frozen that its record calls running)."""
        if init_pid and sig != signal.SIGKILL and _signal_member(cid, init_pid, sig):
            return
        # by spawn, as run does: a stop is timed too (subprocess cost it ~5-10 ms)
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            pid = spawn(self._cmd("kill", cid, str(sig)), Stdio(null, null, null))
        finally:
            os.close(null)
        os.waitpid(pid, 0)

    def exec(self, cid: str, init_pid: int, argv: list[str], *, env: list[str], uid: int,
             gid: int, cwd: str, stdio: Stdio, timeout: float | None = None, tty: bool = False) -> int:
        import subprocess

        cmd = self._cmd("exec", "--user", f"{uid}:{gid}", "--cwd", cwd, *(["--tty"] if tty else []))
        for e in env:
            cmd += ["--env", e]
        cmd += [cid, *argv]
        try:
            # the container's umask (spec.py), not the caller's: runc exec passes its own on
            rc = subprocess.run(cmd, stdin=stdio.stdin, stdout=stdio.stdout, umask=0o022,
                                stderr=stdio.stderr, check=False, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"exec in {cid} timed out") from None
        return 128 - rc if rc < 0 else rc

    def pause(self, cid: str) -> None:
        self._simple("pause", cid)

    def unpause(self, cid: str) -> None:
        self._simple("resume", cid)

    def _simple(self, verb: str, cid: str) -> None:
        import subprocess

        p = subprocess.run(self._cmd(verb, cid), capture_output=True, text=True, check=False)
        if p.returncode != 0:
            msg = (p.stderr.strip().splitlines() or [f"runc {verb} failed"])[-1]
            raise NotDone(f"runc {verb} {cid}: {msg}")

    def cleanup(self, cid: str) -> None:
        if (self.state_root / cid).exists():
            import subprocess

            subprocess.run(self._cmd("delete", "--force", cid), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
        with contextlib.suppress(OSError):
            from ..cgroups import Cgroup, cgroups_path

            Cgroup(cgroups_path(cid)).remove(timeout=2)


def _signal_member(cid: str, pid: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` if it is a process of container ``cid`` (in
    its cgroup, runtime.cgroups.cgroups_path, or one below it); whether it
    was sent.  The pidfd is opened first and the cgroup read after: if the
    pid was reused meanwhile, the pidfd still names the old process, which
    is gone, and the signal reaches nobody (ESRCH), never the newcomer.
    False (the caller asks runc) when the membership cannot be shown: no
    pidfd, the process gone, another cgroup parent than this process's."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        from ..cgroups import cgroups_path

        want = cgroups_path(cid)
        with open(f"/proc/{pid}/cgroup") as f:
            paths = [line.split(":", 2)[2] for line in f.read().splitlines() if line.count(":") >= 2]
        if not any(p == want or p.startswith(want + "/") for p in paths):
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
