"""Temporary PostgreSQL servers: initdb, start on a private unix socket, stop.

PostgreSQL refuses to run as root, so every server command goes through a
*runner*: a callable that runs an argv as an unprivileged user.  The local
runner drops to a system user on this host; the upgrade transaction injects
one that runs the old image's own binaries inside that image (through the
runtime).  Nothing here listens on TCP: the socket lives in a directory of
our own, and dynamic shared memory uses mmap files in the data directory
(never /dev/shm).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from volmerge.strategies.errors import NotDone

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]

DEFAULT_USER = "volmerge-pg"


def ensure_user(name: str = DEFAULT_USER) -> tuple[int, int]:
    """uid/gid of ``name``, creating it as a system user when missing (root only)."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
        pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid


def local_runner(user: str = DEFAULT_USER, env: dict[str, str] | None = None) -> Runner:
    """Run argv on this host, as ``user`` when we are root."""
    ids = ensure_user(user) if os.geteuid() == 0 else None
    base_env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    base_env.update(env or {})

    def drop() -> None:
        if ids is not None:
            os.setgroups([])
            os.setgid(ids[1])
            os.setuid(ids[0])

    def run(argv: Sequence[str]) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), preexec_fn=drop, env=base_env, cwd="/",
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)

    run.uid_gid = ids  # type: ignore[attr-defined]
    return run


def rmtree_quiet(path: str) -> None:
    """Best-effort removal of a tree made from a container's data (iterative:
    shutil.rmtree recurses, and its ignore_errors does not cover RecursionError)."""
    from volmerge.runtime.fsutil import rmtree

    with contextlib.suppress(OSError):
        rmtree(path)


def give(path: str, runner: Runner) -> None:
    """Make ``path`` (a directory tree) owned by the runner's user and its
    parents traversable."""
    ids = getattr(runner, "uid_gid", None)
    if ids is None:
        return
    from volmerge.runtime.fsutil import (
        walk,  # iterative, through descriptors: the tree is a container's
    )

    os.chown(path, *ids, follow_symlinks=False)
    for e in walk(path):  # a symlink is chowned itself, never its target (say /etc/shadow)
        os.chown(e.name, *ids, dir_fd=e.dirfd, follow_symlinks=False)
    p = os.path.dirname(os.path.abspath(path))
    while p and p != "/":
        st = os.stat(p)
        if not st.st_mode & 0o001:
            os.chmod(p, st.st_mode | 0o001)
        p = os.path.dirname(p)


@dataclass
class PgServer:
    bindir: str
    datadir: str
    sockdir: str
    runner: Runner = field(default_factory=local_runner)
    port: int = 5432
    options: dict[str, str] = field(default_factory=dict)
    superuser: str = "postgres"

    def _run(self, *argv: str, what: str) -> subprocess.CompletedProcess:
        proc = self.runner(list(argv))
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout or "").strip().splitlines()
            raise NotDone(f"{what} failed: {msg[-1] if msg else 'exit ' + str(proc.returncode)}")
        return proc

    def initdb(self) -> None:
        os.makedirs(self.datadir, mode=0o700, exist_ok=True)
        give(self.datadir, self.runner)
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.datadir, "-U", self.superuser,
                  "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync", what="initdb")

    def start(self) -> None:
        os.makedirs(self.sockdir, mode=0o700, exist_ok=True)
        give(self.sockdir, self.runner)
        opts = {"listen_addresses": "''", "unix_socket_directories": self.sockdir,
                "port": str(self.port), "dynamic_shared_memory_type": "mmap"}
        opts.update(self.options)
        o = " ".join(f"-c {k}={v}" for k, v in opts.items())
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-w", "-s", "-t", "60",
                  "-l", os.path.join(self.datadir, "server.log"), "-o", o, "start", what="pg_ctl start")

    def stop(self) -> None:
        if os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-w", "-s", "-t", "60",
                      "-m", "fast", "stop", what="pg_ctl stop")
        deadline = time.monotonic() + 10
        while os.path.exists(os.path.join(self.datadir, "postmaster.pid")) and time.monotonic() < deadline:
            time.sleep(0.05)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql:///{db}?host={self.sockdir}&port={self.port}&user={self.superuser}"

    def version(self) -> str:
        with open(os.path.join(self.datadir, "PG_VERSION")) as f:
            return f.read().strip()

    def remove(self) -> None:
        rmtree_quiet(self.datadir)
