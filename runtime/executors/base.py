"""The executor protocol: what the engine needs from a container runtime.

An executor takes a bundle (``config.json`` + ``rootfs``) that the engine
prepared, and runs its process in the foreground of the caller: the caller
(the CLI for a foreground run, the supervisor for a detached one) owns the
stdio and waits for the exit code.  One conformance suite
(tests/runtime/test_lifecycle.py) runs every executor.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import IO, Protocol
else:  # the protocols below are for the type checker; at run time plain classes
    Protocol = object


class Stdio:
    """The container process's stdin/stdout/stderr (None: the caller's).
    A plain slotted class: one is built per start, on the run path, where a
    dataclass would be generated at import for nothing."""

    __slots__ = ("stdin", "stdout", "stderr", "extra")

    def __init__(self, stdin: int | IO[bytes] | None = None,
                 stdout: int | IO[bytes] | None = None,
                 stderr: int | IO[bytes] | None = None,
                 extra: tuple[int, ...] = ()) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.extra = extra  # put at fd 3.. of the container's first process (LISTEN_FDS)


class Running(Protocol):
    """A started container process, owned by the caller."""

    pid: int  # the process the caller waits on (not necessarily the container's init)

    def wait(self) -> int:
        """Block until the container exits; its exit code (128+N if killed by signal N)."""
        ...

    def poll(self) -> int | None:
        ...

    def init_pid(self, timeout: float = 5.0) -> int | None:
        """The host pid of the container's first process, once it exists."""
        ...


class Executor(Protocol):
    name: str

    def start(self, cid: str, bundle: Path, stdio: Stdio) -> Running:
        """Create the container from ``bundle`` and start its process."""
        ...

    def kill(self, cid: str, init_pid: int, sig: int) -> None:
        ...

    def exec(self, cid: str, init_pid: int, argv: list[str], *, env: list[str], uid: int,
             gid: int, cwd: str, stdio: Stdio, timeout: float | None = None, tty: bool = False) -> int:
        """Run ``argv`` inside the running container; its exit code.
        TimeoutError after ``timeout`` seconds (the command is killed).
        ``tty``: on a pseudo-terminal of the container's, relayed to stdio."""
        ...

    def pause(self, cid: str) -> None:
        ...

    def unpause(self, cid: str) -> None:
        ...

    def cleanup(self, cid: str) -> None:
        """Forget the container: runtime state and cgroups.  Idempotent."""
        ...


def exit_code(status: int) -> int:
    """A waitpid status as a shell-style exit code."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def close_inherited(keep: tuple[int, ...] | list[int] = (), first: int = 3
                    ) -> list[tuple[int, int]]:
    """posix_spawn file actions that close every inheritable descriptor from
    ``first`` on that is not in ``keep``: Popen's close_fds.  Ours are close-on-exec (PEP 446),
    but not what the caller of this process may have passed down.  Shared by
    every spawn of the runtime (runc, the supervisor, the socket holder)."""
    actions = []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # no /proc: our own descriptors are close-on-exec all the same
        names = []
    for name in names:
        fd = int(name)
        if fd >= first and fd not in keep:
            try:
                if os.get_inheritable(fd):
                    actions.append((os.POSIX_SPAWN_CLOSE, fd))
            except OSError:  # the listing's own descriptor, closed meanwhile
                pass
    return actions


def read_pid_file(path: Path, alive: Callable[[], bool], timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            text = path.read_text().strip()
            if text:
                return int(text)
        except (FileNotFoundError, ValueError):
            pass
        if not alive() or time.monotonic() > deadline:
            return None
        time.sleep(delay)
        # runc writes the file 30-40 ms in; a 5 ms cap cost 2.5 ms on average
        delay = min(delay * 2, 0.002)
