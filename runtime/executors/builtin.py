"""The builtin executor: run an OCI bundle in pure Python, no runtime needed.

Implements the subset of the spec that runtime.spec writes.  Process tree::

    caller ── fork ──> keeper: unshare(mnt, uts, ipc, net, pid) ── fork ──> init
                       waits for init, exits with its code         (pid 1 in the
                                                                    new pid ns)

unshare(CLONE_NEWPID) only applies to children, hence the second fork.  The
init process joins the cgroup, sets up the root (mounts, pivot_root), the
hostname, rlimits, the capability bounding set, uid/gid and no_new_privs,
then execs.  Errors before exec travel back on a close-on-exec pipe, which
also tells the caller the exec happened.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
from collections.abc import Callable
from pathlib import Path

from .. import sys as rsys
from ..cgroups import Cgroup, cgroups_path
from ..errors import NotDone
from .base import Stdio, exit_code, read_pid_file

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from typing import Any, NoReturn

_NS_FLAGS = {
    "mount": rsys.CLONE_NEWNS, "uts": rsys.CLONE_NEWUTS, "ipc": rsys.CLONE_NEWIPC,
    "pid": rsys.CLONE_NEWPID, "network": rsys.CLONE_NEWNET,
}
_DEVICES = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
            ("urandom", 1, 9), ("tty", 5, 0)]
_RLIMITS = {"RLIMIT_NOFILE": resource.RLIMIT_NOFILE, "RLIMIT_NPROC": resource.RLIMIT_NPROC,
            "RLIMIT_CORE": resource.RLIMIT_CORE}
_MOUNT_FLAGS = {"nosuid": rsys.MS_NOSUID, "nodev": rsys.MS_NODEV, "noexec": rsys.MS_NOEXEC,
                "ro": rsys.MS_RDONLY, "strictatime": rsys.MS_STRICTATIME}


def _fd(x: Any) -> int | None:
    if x is None:
        return None
    return x if isinstance(x, int) else x.fileno()


class BuiltinRunning:
    def __init__(self, pid: int, pid_file: Path, relay: Any = None) -> None:
        self.pid = pid
        self.pid_file = pid_file
        self._code: int | None = None
        self._relay = relay  # runtime.terminal.Relay of a -t container

    def _exited(self, code: int) -> int:
        self._code = code
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        return code

    def wait(self) -> int:
        while self._code is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except InterruptedError:
                continue
            except ChildProcessError:
                return self._exited(255)
            self._exited(exit_code(status))
        return self._code

    def poll(self) -> int | None:
        if self._code is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self._exited(255)
            if pid:
                self._exited(exit_code(status))
        return self._code

    def init_pid(self, timeout: float = 5.0) -> int | None:
        return read_pid_file(self.pid_file, lambda: self.poll() is None, timeout)


class BuiltinExecutor:
    name = "builtin"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def start(self, cid: str, bundle: Path, stdio: Stdio) -> BuiltinRunning:
        spec = json.loads((bundle / "config.json").read_text())
        linux = spec.get("linux", {})
        res = linux.get("resources", {})
        cg = Cgroup(linux.get("cgroupsPath") or cgroups_path(cid))
        cg.create(memory=(res.get("memory") or {}).get("limit"),
                  pids=(res.get("pids") or {}).get("limit"))
        pid_file = bundle.parent / "init.pid"
        pid_file.unlink(missing_ok=True)
        pid, err, relay = _fork_keeper(
            lambda w, console: _keeper(spec, bundle, cg, stdio, w, pid_file, console),
            stdio, tty=bool(spec["process"].get("terminal")))
        running = BuiltinRunning(pid, pid_file, relay)
        if err:
            running.wait()
            cg.remove()
            raise NotDone(f"builtin runtime: cannot start container {cid}: "
                          f"{err.decode(errors='replace').strip()}")
        return running

    def kill(self, cid: str, init_pid: int, sig: int) -> None:
        try:
            os.kill(init_pid, sig)
        except ProcessLookupError:
            pass

    def exec(self, cid: str, init_pid: int, argv: list[str], *, env: list[str], uid: int,
             gid: int, cwd: str, stdio: Stdio, timeout: float | None = None, tty: bool = False) -> int:
        spec = json.loads((self.root / "containers" / cid / "bundle" / "config.json").read_text())
        pid, err, relay = _fork_keeper(
            lambda w, console: _exec_keeper(spec, init_pid, argv, env, uid, gid, cwd, stdio, w, console),
            stdio, tty=tty)
        try:
            status = _wait_deadline(pid, timeout)
        finally:
            if relay is not None:
                relay.close()
        if status is None:
            raise TimeoutError(f"exec in {cid} timed out")
        if err:
            raise NotDone(f"exec in {cid} failed: {err.decode(errors='replace').strip()}")
        return exit_code(status)

    def pause(self, cid: str) -> None:
        Cgroup(cgroups_path(cid)).freeze()

    def unpause(self, cid: str) -> None:
        Cgroup(cgroups_path(cid)).thaw()

    def cleanup(self, cid: str) -> None:
        Cgroup(cgroups_path(cid)).remove()


def _wait_deadline(pid: int, timeout: float | None) -> int | None:
    """waitpid with a deadline; on expiry the exec is killed, None returned."""
    import time

    from ..polling import wait_until

    if timeout is None:
        return os.waitpid(pid, 0)[1]

    def reaped() -> tuple[int] | None:
        done, status = os.waitpid(pid, os.WNOHANG)
        return (status,) if done else None  # a tuple: an exit status 0 is falsy

    got = wait_until(reaped, timeout=timeout, interval=0.002, max_interval=0.05)
    if got is not None:
        return got[0]
    _safe_kill(pid, signal.SIGTERM)  # the keeper forwards it to the command
    time.sleep(0.05)
    _safe_kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _fork_keeper(run: Callable[[int, int | None], None], stdio: Stdio,
                 tty: bool) -> tuple[int, bytes, Any]:
    """Fork a keeper doing ``run(w, console)``: ``w`` reports an error before
    the exec (close-on-exec, so EOF means the exec happened); with ``tty``,
    ``console`` is the socket on which the container's process sends its pty
    master (runc's console socket), relayed here to ``stdio``.
    Returns (pid, the error reported, the Relay or None)."""
    parent_sock = child_sock = None
    if tty:
        import socket

        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # keeper
        os.close(r)
        try:
            if parent_sock is not None:
                parent_sock.close()
            # above fd 3.., where _setup_stdio puts the --socket-activate sockets
            top = 3 + len(stdio.extra)
            w = _above(w, top)
            run(w, _above(child_sock.fileno(), top) if child_sock is not None else None)
        except BaseException as exc:  # noqa: BLE001 - report anything, then die
            _report(w, exc)
        os._exit(127)
    os.close(w)
    relay = None
    if parent_sock is not None and child_sock is not None:
        from ..terminal import Relay, receive_fd

        child_sock.close()
        master = receive_fd(parent_sock)  # None: the start failed before
        parent_sock.close()
        if master is not None:
            relay = Relay(master, _fd(stdio.stdin) or 0, _fd(stdio.stdout) or 1)
    err = b""
    while chunk := os.read(r, 65536):
        err += chunk
    os.close(r)
    return pid, err, relay


def _above(fd: int, top: int) -> int:
    """``fd``, moved to a number >= ``top`` if it is below (close-on-exec)."""
    if fd >= top:
        return fd
    import fcntl

    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, top)
    os.close(fd)
    return new


def _reap(child: int, w: int, console: int | None) -> NoReturn:
    """A keeper's last part: forward termination signals to ``child``, as
    runc run does, and exit with its code."""
    os.close(w)
    if console is not None:
        os.close(console)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(s, lambda sig, _f: _safe_kill(child, sig))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    os._exit(exit_code(status))


def _report(w: int, exc: BaseException) -> None:
    try:
        os.write(w, f"{exc}".encode()[:4000] or type(exc).__name__.encode())
    except OSError:
        pass


def _setup_stdio(stdio: Stdio, keep: int, keep2: int | None = None) -> None:
    """Put the container's stdio on 0-2 and close every other descriptor but
    ``keep``: a forked keeper never execs, so close-on-exec does not help,
    and an inherited pipe (the supervisor's start notification, log pipes)
    would never see EOF."""
    top = 3 + len(stdio.extra)  # the --socket-activate sockets on 3.. (LISTEN_FDS)
    extra = [_above(os.dup(fd), top) for fd in stdio.extra]
    for target, src in ((0, stdio.stdin), (1, stdio.stdout), (2, stdio.stderr)):
        fd = _fd(src)
        if fd is not None and fd != target:
            os.dup2(fd, target)
    for target, fd in enumerate(extra, 3):
        os.dup2(fd, target)  # inheritable: the container's first process gets them
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= top and fd not in (keep, keep2):
            try:
                os.close(fd)
            except OSError:
                pass


def _keeper(spec: dict[str, Any], bundle: Path, cg: Cgroup, stdio: Stdio, w: int,
            pid_file: Path, console: int | None = None) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(s, signal.SIG_DFL)
    _setup_stdio(stdio, w, console)
    flags = 0
    netns_path = None
    for ns in spec["linux"]["namespaces"]:
        if ns["type"] == "network" and ns.get("path"):
            netns_path = ns["path"]
        elif ns["type"] in _NS_FLAGS:
            flags |= _NS_FLAGS[ns["type"]]
    rsys.unshare(flags)
    if flags & rsys.CLONE_NEWNET:
        rsys.loopback_up()
    if netns_path:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        rsys.setns(fd, rsys.CLONE_NEWNET)
        os.close(fd)
    rsys.make_private("/")
    # The child's pivot_root moves this process's root too (one mount
    # namespace): the pid file is written through its directory, held open
    # from before the fork, or its path may no longer resolve.
    dirfd = os.open(pid_file.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        os.close(dirfd)
        try:
            _init(spec, bundle, cg, w, has_netns=bool(flags & rsys.CLONE_NEWNET) or bool(netns_path),
                  console=console)
        except BaseException as exc:  # noqa: BLE001
            _report(w, exc)
        os._exit(127)
    fd = os.open(pid_file.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644,
                 dir_fd=dirfd)
    os.write(fd, str(child).encode())
    os.close(fd)
    os.close(dirfd)
    _reap(child, w, console)


def _safe_kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def _mount_flags(options: list[str]) -> tuple[int, str]:
    flags = 0
    data = []
    for o in options:
        if o in _MOUNT_FLAGS:
            flags |= _MOUNT_FLAGS[o]
        elif o in ("rw", "newinstance") or o.startswith(("mode=", "size=", "ptmxmode=", "gid=")):
            if o != "rw":
                data.append(o)
        elif o in ("rbind", "bind", "rprivate", "private", "exec", "dev", "suid"):
            pass
        else:
            data.append(o)
    return flags, ",".join(data)


def _mkdir_p(path: str) -> None:
    os.makedirs(path, exist_ok=True)


def _init(spec: dict[str, Any], bundle: Path, cg: Cgroup, w: int, has_netns: bool,
          console: int | None = None) -> None:
    os.setsid()
    if console is not None:
        # imported before pivot_root: the host's files are out of reach after it
        import socket  # noqa: F401 - used by container_pty

        from ..terminal import container_pty
    cg.add(0)
    rootfs = str((bundle / spec["root"]["path"]).resolve())
    proc = spec["process"]
    if spec.get("hostname"):
        rsys.sethostname(spec["hostname"])
    # The rootfs must be a mount point of its own for pivot_root.
    rsys.mount(rootfs, rootfs, None, rsys.MS_BIND | rsys.MS_REC)
    for m in spec.get("mounts", []):
        # the image's symlinks followed inside the root, never to the host
        dest = str(rsys.path_in_root(Path(rootfs), m["destination"], clamp=True))
        typ = m.get("type")
        flags, data = _mount_flags(m.get("options", []))
        if typ == "bind":
            src = m["source"]
            if os.path.isdir(src):
                _mkdir_p(dest)
            elif not os.path.exists(dest):
                _mkdir_p(os.path.dirname(dest))
                open(dest, "a").close()
            rsys.mount(src, dest, None, rsys.MS_BIND | rsys.MS_REC)
            if flags & rsys.MS_RDONLY:
                rsys.mount(None, dest, None,
                           rsys.MS_BIND | rsys.MS_REMOUNT | rsys.MS_RDONLY | rsys.MS_NOSUID)
            continue
        _mkdir_p(dest)
        if typ == "sysfs" and not has_netns:
            # sysfs cannot be mounted afresh when sharing the host's network.
            rsys.mount("/sys", dest, None, rsys.MS_BIND | rsys.MS_REC)
            rsys.mount(None, dest, None, rsys.MS_BIND | rsys.MS_REMOUNT | rsys.MS_RDONLY)
            continue
        rsys.mount(m.get("source") or typ, dest, typ, flags, data or None)
        if m["destination"] == "/dev":
            _populate_dev(dest)
    os.chdir(rootfs)
    rsys.pivot_root(".", ".")
    rsys.umount(".", rsys.MNT_DETACH)
    os.chdir("/")
    if console is not None:
        user = proc.get("user", {})
        container_pty(console, user.get("uid", 0), user.get("gid", 0))
    linux = spec.get("linux", {})
    for p in linux.get("maskedPaths", []):
        _mask(p)
    for p in linux.get("readonlyPaths", []):
        _readonly(p)
    if spec["root"].get("readonly"):
        rsys.mount(None, "/", None, rsys.MS_BIND | rsys.MS_REMOUNT | rsys.MS_RDONLY)
    for rl in proc.get("rlimits", []):
        if rl["type"] in _RLIMITS:
            resource.setrlimit(_RLIMITS[rl["type"]], (rl["soft"], rl["hard"]))
    caps = proc.get("capabilities", {}).get("bounding")
    if caps is not None:
        rsys.drop_bounding_set(caps)
    user = proc.get("user", {})
    os.setgroups(list(user.get("additionalGids") or []))
    os.setgid(user.get("gid", 0))
    os.setuid(user.get("uid", 0))
    if "umask" in user:
        os.umask(user["umask"])
    if proc.get("noNewPrivileges"):
        rsys.prctl(rsys.PR_SET_NO_NEW_PRIVS, 1)
    os.chdir(proc.get("cwd") or "/")
    env = dict(e.split("=", 1) if "=" in e else (e, "") for e in proc.get("env", []))
    args = proc["args"]
    os.execvpe(args[0], args, env)


def _populate_dev(dev: str) -> None:
    for name, major, minor in _DEVICES:
        path = f"{dev}/{name}"
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(path, 0o666)
    for name, target in (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")


def _mask(path: str) -> None:
    try:
        if os.path.isdir(path):
            rsys.mount("tmpfs", path, "tmpfs", rsys.MS_RDONLY)
        elif os.path.exists(path):
            rsys.mount("/dev/null", path, None, rsys.MS_BIND)
    except OSError:
        pass


def _readonly(path: str) -> None:
    if not os.path.exists(path):
        return
    try:
        rsys.mount(path, path, None, rsys.MS_BIND | rsys.MS_REC)
        rsys.mount(None, path, None,
                   rsys.MS_BIND | rsys.MS_REMOUNT | rsys.MS_RDONLY | rsys.MS_REC)
    except OSError:
        pass


def _exec_keeper(spec: dict[str, Any], init_pid: int, argv: list[str], env: list[str], uid: int,
                 gid: int, cwd: str, stdio: Stdio, w: int, console: int | None = None) -> None:
    """Enter the container's namespaces, root and cgroup; run ``argv``."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(s, signal.SIG_DFL)
    _setup_stdio(stdio, w, console)
    if console is not None:
        import socket  # noqa: F401 - imported before chroot, used by container_pty

        from ..terminal import container_pty
    cg = Cgroup(spec.get("linux", {}).get("cgroupsPath") or "")
    cg.add(0)
    fds = {}
    for ns in ("ipc", "uts", "net", "pid", "mnt"):
        fds[ns] = os.open(f"/proc/{init_pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    root_fd = os.open(f"/proc/{init_pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for ns, fd in fds.items():
        try:
            rsys.setns(fd, 0)
        except OSError:
            if ns != "net":  # --network host: same namespace, setns may refuse
                raise
        os.close(fd)
    os.fchdir(root_fd)
    os.chroot(".")
    os.close(root_fd)
    child = os.fork()
    if child == 0:
        try:
            if console is not None:
                os.setsid()
                container_pty(console, uid, gid)
            proc = spec["process"]
            caps = proc.get("capabilities", {}).get("bounding")
            if caps is not None:
                rsys.drop_bounding_set(caps)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.umask(proc.get("user", {}).get("umask", 0o022))
            if proc.get("noNewPrivileges"):
                rsys.prctl(rsys.PR_SET_NO_NEW_PRIVS, 1)
            os.chdir(cwd)
            envd = {k: v for k, _, v in (e.partition("=") for e in env)}
            os.execvpe(argv[0], argv, envd)
        except BaseException as exc:  # noqa: BLE001
            _report(w, exc)
        os._exit(127)
    _reap(child, w, console)
