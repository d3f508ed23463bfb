"""Temporary PostgreSQL servers: initdb, start on a private unix socket, stop.

Where PostgreSQL's programs run is a :class:`Tools` value: ``run(tool,
*args)`` runs one program of one installation as an unprivileged user
(PostgreSQL refuses root), and ``user`` says who that is, so files can be
handed to it.  :class:`HostTools` runs a bin directory of this host; the
upgrade transaction passes tools that run an image's own programs inside a
container of that image.  This package creates no users: the caller names
one (volmerge's layer or a test fixture creates it).  Nothing here listens
on TCP: the socket lives in a directory of our own, and dynamic shared
memory uses mmap files in the data directory (never /dev/shm).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from volmerge.strategies.errors import BadInput, NotDone

UidGid = tuple[int, int]
#: ``timing(step, seconds)``: hears how long each step of an upgrade took
Timing = Callable[[str, float], None]
#: the settings pg_upgrade starts its servers with for the bulk work
BULK = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"}


class Tools(Protocol):
    """One PostgreSQL installation's programs and the user they run as."""

    @property
    def user(self) -> UidGid | None:
        """uid and gid the programs run as (None: as this process)."""
        ...

    def run(self, tool: str, *args: str, input: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        """Run program ``tool`` (``initdb``, ``pg_ctl``, ``pg_dump`` ...)
        with ``args`` (``input`` on its stdin); output captured as text,
        never raises on a failure."""
        ...


@dataclass(frozen=True)
class HostTools:
    """The programs in ``bindir`` on this host, run as ``user`` (uid, gid),
    which must be given when this process is root; ``cwd``: where they run."""

    bindir: str
    user: UidGid | None = None
    cwd: str = "/"

    def __post_init__(self) -> None:
        if not os.path.isfile(os.path.join(self.bindir, "postgres")):
            raise BadInput(f"{self.bindir}: no PostgreSQL server binaries there")

    def run(self, tool: str, *args: str, input: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        if self.user is None and os.geteuid() == 0:
            raise BadInput("PostgreSQL refuses to run as root: name an unprivileged user")
        path = os.path.join(self.bindir, tool)
        if not os.path.isfile(path):
            return subprocess.CompletedProcess([path, *args], 127, "", f"{path}: no such program")
        ids = self.user

        def drop() -> None:
            if ids is not None:
                os.setgroups([])
                os.setgid(ids[1])
                os.setuid(ids[0])

        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        if input is None:
            return subprocess.run([path, *args], preexec_fn=drop, env=env, cwd=self.cwd,
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL)
        return subprocess.run([path, *args], preexec_fn=drop, env=env, cwd=self.cwd,
                              capture_output=True, text=True, input=input)


def private_hba(sockdir: str) -> str:
    """An ``hba_file`` for a temporary server: trust on the unix socket only
    (in ``sockdir``, 0700: only its user and root reach it), nothing on TCP."""
    path = os.path.join(sockdir, "hba.conf")
    with open(path, "w") as f:
        f.write("# volmerge: a temporary server on a private socket\nlocal all all trust\n")
    return path


def bootstrap_superuser(tools: Tools, datadir: str) -> str:
    """The bootstrap superuser of a data directory (the role with OID 10,
    the owner of template0: ``postgres``, or the image's ``POSTGRES_USER``),
    read in single-user mode, which needs no role to log in.  Single-user
    mode writes a shutdown checkpoint: call it on a copy."""
    proc = check(tools.run("postgres", "--single", "-D", datadir, "-c", "hba_file=/dev/null",
                           "template1",
                           input="SELECT rolname FROM pg_authid WHERE oid = 10;\n"),
                 "reading the bootstrap superuser")
    m = re.search(r'^\s*1: rolname = "(.*)"\t\(typeid', proc.stdout, re.M)
    if m is None:
        raise NotDone(f"{datadir}: could not read its bootstrap superuser")
    return m.group(1)


def rmtree_quiet(path: str) -> None:
    """Best-effort removal of a tree made from a container's data (iterative:
    shutil.rmtree recurses, and its ignore_errors does not cover RecursionError)."""
    from volmerge.runtime.fsutil import rmtree

    with contextlib.suppress(OSError):
        rmtree(path)


def give(path: str, user: UidGid | None) -> None:
    """Make ``path`` (a directory tree) owned by ``user`` and its parents
    traversable (nothing to do for None)."""
    if user is None:
        return
    from volmerge.runtime.fsutil import (
        walk,  # iterative, through descriptors: the tree is a container's
    )

    def mine(st: os.stat_result) -> bool:
        return (st.st_uid, st.st_gid) == tuple(user)

    # already owned: left alone (on an overlay a chown would copy the file up)
    if not mine(os.lstat(path)):
        os.chown(path, *user, follow_symlinks=False)
    for e in walk(path):  # a symlink is chowned itself, never its target (say /etc/shadow)
        if not mine(e.st):
            os.chown(e.name, *user, dir_fd=e.dirfd, follow_symlinks=False)
    p = os.path.dirname(os.path.abspath(path))
    while p and p != "/":
        st = os.stat(p)
        if not st.st_mode & 0o001:
            os.chmod(p, st.st_mode | 0o001)
        p = os.path.dirname(p)


def check(proc: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    """``proc`` when it succeeded, else NotDone with its last line of output."""
    if proc.returncode != 0:
        msg = [ln for ln in (proc.stderr or proc.stdout or "").strip().splitlines() if ln.strip()]
        raise NotDone(f"{what} failed: {msg[-1] if msg else 'exit ' + str(proc.returncode)}")
    return proc


@dataclass
class PgServer:
    tools: Tools
    datadir: str
    sockdir: str
    port: int = 5432
    options: dict[str, str] = field(default_factory=dict)
    superuser: str = "postgres"
    #: the last ``pg_ctl start``, while it may still be waiting (reaped by stop)
    _ctl: Any = field(default=None, init=False, repr=False, compare=False)

    def initdb(self, encoding: str = "UTF8", locale: str = "C") -> None:
        os.makedirs(self.datadir, mode=0o700, exist_ok=True)
        give(self.datadir, self.tools.user)
        check(self.tools.run("initdb", "-D", self.datadir, "-U", self.superuser, "--auth=trust",
                             "-E", encoding, f"--locale={locale}", "--no-sync"), "initdb")

    def start(self) -> None:
        """Start on the private socket directory, with an ``hba_file`` of its
        own that trusts that socket only: the data directory's pg_hba.conf
        (the operator's: scram, peer...) is never read, and stays as it is.
        ``pg_ctl -w`` polls every 100 ms, where a temporary server is
        usually ready in a few: the pid file is watched here as well, as
        pg_ctl reads it (its status line ``ready``, written by a postmaster
        started after this call), and whichever says so first ends the
        wait; pg_ctl, still waiting, is reaped by :meth:`stop`."""
        import threading

        from volmerge.runtime.polling import wait_until

        os.makedirs(self.sockdir, mode=0o700, exist_ok=True)
        hba = private_hba(self.sockdir)
        give(self.sockdir, self.tools.user)
        opts = {"listen_addresses": "''", "unix_socket_directories": self.sockdir,
                "port": str(self.port), "dynamic_shared_memory_type": "mmap",
                "hba_file": hba}
        opts.update(self.options)
        o = " ".join(f"-c {k}={v}" for k, v in opts.items())
        self._reap()
        since, out = time.time(), []
        ctl = threading.Thread(target=lambda: out.append(self._pg_ctl_start(o)),
                               name="pg_ctl start", daemon=True)
        ctl.start()
        self._ctl = ctl
        ready = wait_until(lambda: not ctl.is_alive() or self._ready(since), timeout=90,
                           interval=0.005, max_interval=0.02)
        if not ctl.is_alive():
            self._reap()
            if not out:
                raise NotDone(f"{self.datadir}: pg_ctl start did not run")
            check(out[0], "pg_ctl start")
        elif ready is None:
            raise NotDone(f"{self.datadir}: the temporary server did not start within 90 s")

    def _pg_ctl_start(self, o: str) -> subprocess.CompletedProcess[str]:
        return self.tools.run("pg_ctl", "-D", self.datadir, "-w", "-s", "-t", "60",
                              "-l", os.path.join(self.datadir, "server.log"), "-o", o, "start")

    def _ready(self, since: float) -> bool:
        """Whether the pid file says a postmaster started since ``since``
        (pg_ctl's two seconds of slack) accepts connections."""
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                lines = f.read().split("\n")
        except OSError:
            return False
        try:
            return len(lines) >= 8 and lines[7].strip() == "ready" and int(lines[2]) >= since - 2
        except ValueError:
            return False

    def _reap(self) -> None:
        """The last ``pg_ctl start`` finished (it ends once it sees the server ready)."""
        ctl, self._ctl = self._ctl, None
        if ctl is not None:
            ctl.join()

    def stop(self) -> None:
        """A fast shutdown, waited for here: ``pg_ctl -w`` polls every
        100 ms, the server of an upgrade stops in a few."""
        from volmerge.runtime.polling import wait_until

        self._reap()
        pid = os.path.join(self.datadir, "postmaster.pid")
        if os.path.exists(pid):
            check(self.tools.run("pg_ctl", "-D", self.datadir, "-W", "-s", "-m", "fast", "stop"),
                  "pg_ctl stop")
        if wait_until(lambda: not os.path.exists(pid), timeout=60, interval=0.005,
                      max_interval=0.02) is None:
            raise NotDone(f"{self.datadir}: the temporary server did not stop within 60 s")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql:///{db}?host={self.sockdir}&port={self.port}&user={self.superuser}"

    def remove(self) -> None:
        rmtree_quiet(self.datadir)
