"""The warm command server: a process that has imported volmerge once and
forks one process per command (the client side and the reasons are in
client.py).

``python -m volmerge.cli.server ROOT`` — started in the background by the
first command that finds no server for its store, in a session of its own,
and gone after ``VOLMERGE_SERVER_IDLE`` seconds (default 300) without a
command, when its store or socket disappears, when the code it loaded
changes, or on ``volmerge server stop``.  One per store (a lock in
``ROOT/locks``); its socket is ``ROOT/cli.sock`` (mode 0600).

It serves only a client that could not tell the difference: the same user,
the same namespaces (mount, network, PID, IPC, UTS, user, cgroup), root
directory, cgroups, resource limits, locale and Python settings, and the
same installed client module; anything else is declined and the client runs
the command itself.  The server never opens the store or runs a command
itself: each command gets a fresh fork of the freshly imported state, in a
process group of its own; the client's signals go to it, its exit code (or
its death by a signal) to the client, and a client that dies takes it along.
"""

from __future__ import annotations

import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time

from . import client

NAMESPACES = ("mnt", "net", "pid", "ipc", "uts", "user", "cgroup")
#: the environment Python reads at start-up, and the locale: a client whose
#: values differ would have started differently, so the server declines it
STARTUP_ENV_PREFIXES = (b"PYTHON", b"LC_")
STARTUP_ENV = (b"LANG", b"LANGUAGE", b"VOLMERGE_SERVER")

PRELOAD = (
    "volmerge.cli.fastrun", "volmerge.cli.runopts", "volmerge.cli.state", "volmerge.context",
    "runtime.store", "runtime.containers", "runtime.supervisor", "runtime.health",
    "runtime.executors.runc", "runtime.executors.builtin", "runtime.terminal",
    "runtime.images", "runtime.layers", "runtime.oci", "runtime.network.links",
    "volmerge.errors", "volmerge.cli.root", "volmerge.volumes.manager", "strategies.errors",
    "typer._click.decorators",
)
OUR_PACKAGES = ("volmerge", "runtime", "strategies")
MAX_REQUEST = 8 << 20  # arguments and environment: Linux caps both together far lower


def lock_path(root: str) -> str:
    return os.path.join(root, "locks", "cli-server.lock")


def preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # an optional part missing here: it loads per command
            pass
    try:
        from .root import command

        command()
    except Exception:
        pass
    import gc

    gc.collect()
    gc.freeze()  # the imported objects stay shared with every fork


def _signature(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def fingerprint() -> dict[str, tuple[int, int] | None]:
    """(mtime, size) of every file of ours this process loaded, and of the
    directories on sys.path (a package installed, upgraded or removed there
    changes its directory): a server whose code changed on disk stops
    serving."""
    paths = [d or "." for d in sys.path]
    paths += [mod.__file__ for name, mod in list(sys.modules.items())
              if getattr(mod, "__file__", None) and name.split(".")[0] in OUR_PACKAGES]
    return {p: sig for p in paths if (sig := _signature(p)) is not None}


def _stale(prints: dict[str, tuple[int, int] | None]) -> bool:
    return any(_signature(p) != sig for p, sig in prints.items())


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def identity(pid: int | str) -> tuple:
    """What a process's commands depend on besides its arguments."""
    base = f"/proc/{pid}"
    ns = tuple(os.stat(f"{base}/ns/{n}").st_ino for n in NAMESPACES)
    rst = os.stat(f"{base}/root")
    return ns, (rst.st_dev, rst.st_ino), _read(f"{base}/cgroup"), _read(f"{base}/limits")


def _startup_env(env: dict[bytes, bytes]) -> dict[bytes, bytes]:
    return {k: v for k, v in env.items() if k in STARTUP_ENV or k.startswith(STARTUP_ENV_PREFIXES)}


class Request:
    def __init__(self, fds: list[int], data: bytes) -> None:
        self.fds = fds
        fields = data.split(b"\0")
        if fields[0] != client.PROTOCOL:
            raise ValueError("protocol")
        self.client_file = fields[1]
        self.cwd = fields[2]
        self.umask = int(fields[3])
        n = int(fields[4])
        self.args = [os.fsdecode(a) for a in fields[5:5 + n]]
        self.env: dict[bytes, bytes] = {}
        for item in fields[5 + n:]:
            k, eq, v = item.partition(b"=")
            if eq:
                self.env[k] = v


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise ConnectionError("short request")
        out += chunk
    return out


def read_request(conn: socket.socket) -> Request:
    fds: list[int] = []
    msg, anc, _flags, _addr = conn.recvmsg(4, socket.CMSG_SPACE(3 * 4))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += [int.from_bytes(data[i:i + 4], sys.byteorder) for i in range(0, len(data) - 3, 4)]
    try:
        if len(msg) != 4 or len(fds) != 3 or int.from_bytes(msg, "big") > MAX_REQUEST:
            raise ConnectionError("malformed request")
        return Request(fds, _recv_exact(conn, int.from_bytes(msg, "big")))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


class Server:
    def __init__(self, root: str, idle: float) -> None:
        self.root = root
        self.idle = idle
        self.path = client.socket_path(root)
        self.started = time.time()
        self.served = 0
        self.prints = fingerprint()
        self.me = identity("self")
        self.env = _startup_env(dict(os.environb))
        self.client_file = os.fsencode(client.__file__)
        self.children: dict[int, tuple[int, int]] = {}  # pidfd -> (pid, client connection)
        self.listener: socket.socket | None = None
        self.stopping = False  # no new commands; gone when the running ones end

    def decline_reason(self, req: Request, pid: int, uid: int) -> str | None:
        if uid != os.geteuid():
            return "another user"
        if req.client_file != self.client_file:
            return "another installation"
        if _startup_env(req.env) != self.env:
            return "another locale or Python setting"
        try:
            theirs = identity(pid)
        except OSError:
            return "client vanished"
        for mine, other, what in zip(self.me, theirs, ("namespaces", "root directory", "cgroups", "resource limits")):
            if mine != other:
                return f"other {what}"
        if _stale(self.prints):
            return "stale"
        return None

    def status(self) -> dict:
        return {"pid": os.getpid(), "root": self.root, "socket": self.path,
                "started": self.started, "served": self.served, "idle_timeout": self.idle}

    def handle(self, conn: socket.socket) -> bool:
        """Serve one connection; False when the server should stop."""
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        try:
            req = read_request(conn)
        except (OSError, ValueError, IndexError):
            return True
        try:
            if req.args[:1] == ["__server__"]:  # status, stop (after the reply)
                if uid != os.geteuid():
                    conn.sendall(b"N another user\n")
                    return True
                conn.sendall(b"S " + json.dumps(self.status()).encode() + b"\n")
                return req.args[1:2] != ["stop"]
            reason = self.decline_reason(req, pid, uid)
            if reason:
                conn.sendall(b"N " + reason.encode() + b"\n")
                return reason != "stale"
            self.served += 1
            child = os.fork()
            if child == 0:
                self.listener.close()  # type: ignore[union-attr]
                for pidfd, (_pid, connfd) in self.children.items():  # other commands'
                    os.close(pidfd)
                    os.close(connfd)
                _run_command(req, conn)  # never returns
            try:
                os.setpgid(child, child)  # before the client can signal it
            except OSError:
                pass
            conn.setblocking(True)
            try:
                conn.sendall(b"P %d\n" % child)
            except OSError:  # the client went away: noticed in serve(), and the command killed
                pass
            self.children[os.pidfd_open(child)] = (child, conn.detach())
            return True
        except OSError:
            return True
        finally:
            for fd in req.fds:
                os.close(fd)

    def reap(self, pidfd: int) -> None:
        """A command finished: its exit status to its client."""
        pid, connfd = self.children.pop(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        with socket.socket(fileno=connfd) as conn:
            try:  # a signal's death: the client dies of the same signal
                conn.sendall(b"K %d\n" % -code if code < 0 else b"X %d\n" % code)
            except OSError:
                pass

    def ours(self) -> bool:
        """The socket path still names this server's socket."""
        try:
            st = os.stat(self.path)  # type: ignore[arg-type]
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.sock_id

    def _close_listener(self) -> None:
        if self.listener is not None:
            self.listener.close()
            if self.ours():
                os.unlink(self.path)  # type: ignore[arg-type]
            self.listener = None

    def serve(self) -> None:
        assert self.path is not None
        tmp = f"{self.path}.{os.getpid()}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            client.at_socket(listener, "bind", tmp)
        finally:
            os.umask(old)
        listener.listen(64)
        os.rename(tmp, self.path)
        st = os.stat(self.path)
        self.sock_id = (st.st_dev, st.st_ino)
        self.listener = listener
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ)
        last = time.monotonic()
        try:
            while True:
                events = sel.select(timeout=min(self.idle, 10.0))
                for key, _ in events:
                    if key.data is not None:
                        kind, pidfd = key.data
                        if kind == "exit":
                            sel.unregister(pidfd)
                            connfd = self.children[pidfd][1]
                            if connfd in sel.get_map():
                                sel.unregister(connfd)
                            self.reap(pidfd)
                        else:
                            # the client is gone (it never writes after its
                            # request): its command dies with it, as the
                            # command would have died with the client's
                            # process — SIGKILL, not a chance to clean up
                            sel.unregister(key.fd)
                            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                        continue
                    try:
                        conn, _ = listener.accept()
                    except OSError:
                        continue
                    conn.settimeout(5.0)
                    before = set(self.children)
                    keep = self.handle(conn)
                    conn.close()  # a detached one is the command's, until it ends
                    for pidfd in set(self.children) - before:
                        sel.register(pidfd, selectors.EVENT_READ, ("exit", pidfd))
                        sel.register(self.children[pidfd][1], selectors.EVENT_READ, ("client", pidfd))
                    if not keep:
                        self.stopping = True
                        sel.unregister(listener)
                        self._close_listener()
                if self.stopping and not self.children:
                    return
                if events:
                    last = time.monotonic()
                elif not self.stopping and (
                        (time.monotonic() - last >= self.idle and not self.children) or not self.ours()):
                    return
        finally:
            self._close_listener()
            for pid, connfd in self.children.values():  # still running: they report no status
                os.close(connfd)


def _run_command(req: Request, conn: socket.socket) -> None:
    """In the command's process: become the client (stdio, cwd, umask,
    environment, signals) and run the command as ``volmerge`` would.  The
    exit code goes to the client from here (and from the server when this
    process dies of a signal): a server killed meanwhile costs nothing."""
    code = 1
    try:
        conn.setblocking(True)
        os.setpgid(0, 0)
        for target, fd in enumerate(req.fds):
            os.dup2(fd, target)
        for fd in req.fds:
            if fd > 2:
                os.close(fd)
        os.chdir(req.cwd)
        os.umask(req.umask)
        os.environb.clear()
        os.environb.update(req.env)
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as the interpreter starts
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _reopen_stdio()
        sys.argv = ["volmerge", *req.args]
        from . import main

        code = main(req.args, served=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # a bug: say it where the user sees it
        try:
            sys.stderr.write(f"volmerge: internal error: {exc!r}\n")
        except Exception:
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        code = code & 0xFF if isinstance(code, int) else 1
        try:
            conn.sendall(b"X %d\n" % code)
        except OSError:
            pass
        os._exit(code)


def _reopen_stdio() -> None:
    """Standard streams as the interpreter would have made them for these
    file descriptors (line-buffered stdout on a terminal, and so on)."""
    enc, errs = sys.stdout.encoding, sys.stdout.errors
    sys.stdin = sys.__stdin__ = open(0, "r", encoding=enc, errors=errs, closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", buffering=1 if os.isatty(1) else -1, encoding=enc,
                                       errors=errs, closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, encoding=enc,
                                       errors="backslashreplace", closefd=False)


def start_background(root: str) -> None:
    """Start a server for this store in a session of its own (the caller
    does not wait for it)."""
    if not os.path.isdir(os.path.join(root, "locks")):
        return  # no store here yet: nothing to serve
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        # -P: nothing imported from the directory the command ran in (a
        # root process must not; and it is not part of the code to watch)
        os.posix_spawn(sys.executable, [sys.executable, "-P", "-m", "volmerge.cli.server", root],
                       dict(os.environ), setsid=True,
                       file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0),
                                     (os.POSIX_SPAWN_DUP2, devnull, 1),
                                     (os.POSIX_SPAWN_DUP2, devnull, 2)])
    except OSError:
        pass
    finally:
        os.close(devnull)


def starting(root: str) -> bool:
    """A server for this store holds its lock (it may not listen yet)."""
    try:
        fd = os.open(lock_path(root), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # (closing also releases a lock taken here)
    return False


def control(root: str, command: str) -> dict | None:
    """Ask the server of this store for its status, or to stop (its status
    before stopping); None when no server listens."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            client.at_socket(s, "connect", client.socket_path(root))
        except OSError:
            return None
        s.settimeout(5.0)
        client.send(s, ["__server__", command])
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                return None
            buf += chunk
    except OSError:
        return None
    finally:
        s.close()
    if not buf.startswith(b"S "):
        return None
    info = json.loads(buf[2:])
    if command == "stop":
        _wait_gone(info["pid"])
    return info


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.005)


def _detach() -> None:
    """Hold nothing of the process that started it: no directory (it would
    keep a file system busy), no inherited descriptor (it would keep a pipe
    open for its reader) beyond stdio, which is /dev/null."""
    os.chdir("/")
    for name in os.listdir("/proc/self/fd"):
        if int(name) > 2:
            try:
                os.close(int(name))
            except OSError:
                pass


def main(argv: list[str]) -> int:
    root = os.path.abspath(argv[0])
    _detach()
    idle = float(os.environ.get("VOLMERGE_SERVER_IDLE", "300"))
    try:
        lock = os.open(lock_path(root), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return 1
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # one is already serving this store
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    preload()
    if threading.active_count() != 1:
        return 1  # a preloaded module started a thread: forking would not be safe
    Server(root, idle).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
