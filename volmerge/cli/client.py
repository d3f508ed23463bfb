"""Hand a command to the store's warm command server (server.py).

A fresh Python process spends most of a ``volmerge run`` importing the
standard library and the engine (~40 ms, twice what runc needs to start a
container).  Like Mercurial's chg, a server that has imported everything
once forks a process per command; this client sends it the command line,
the working directory, umask and environment, and its own stdin, stdout
and stderr (SCM_RIGHTS), forwards the signals it receives, and exits with
the command's exit code.  The command itself runs exactly as it would in
this process: same code, same files, same terminal.

This module imports nothing but C built-ins: it runs before anything else.
When there is no server, or the server declines (another namespace, cgroup,
user, root directory, resource limits, locale, or code that changed since it
started), the caller runs the command itself — nothing was done yet.
"""


import os
import sys

PROTOCOL = b"volmerge-cli/1"
DEFAULT_ROOT = "/var/lib/volmerge"
MAX_SOCKET_PATH = 107

ABSENT = "absent"  # no server listens: the caller may start one


def enabled() -> bool:
    return os.environ.get("VOLMERGE_SERVER", "1").lower() not in ("0", "off", "no", "false")


def _globals(args: list[str]) -> tuple[str | None, int]:
    """The leading ``--root PATH`` / ``--root=PATH`` (None: not given) and
    the index of the command after the global options."""
    root, i = None, 0
    while i < len(args):
        a = args[i]
        if a == "--root" and i + 1 < len(args):
            root, i = args[i + 1], i + 2
        elif a.startswith("--root="):
            root, i = a[len("--root="):], i + 1
        else:
            break
    return root, i


def store_root(args: list[str]) -> str:
    """The store root the command will use: a leading ``--root PATH`` /
    ``--root=PATH``, else $VOLMERGE_ROOT, else the default."""
    root = _globals(args)[0] or os.environ.get("VOLMERGE_ROOT") or DEFAULT_ROOT
    return os.path.abspath(root)


def server_command(args: list[str]) -> bool:
    """``volmerge [--root PATH] server ...``: run here, not on the server."""
    i = _globals(args)[1]
    return args[i:i + 1] == ["server"]


def socket_path(root: str) -> str:
    return os.path.join(root, "cli.sock")


def at_socket(sock: object, method: str, path: str) -> None:
    """``sock.connect(path)`` / ``sock.bind(path)``, also for a path longer
    than a unix socket address holds (through the directory's descriptor)."""
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        getattr(sock, method)(path)
        return
    parent, name = os.path.split(path)
    fd = os.open(parent, os.O_PATH | os.O_CLOEXEC)
    try:
        getattr(sock, method)(f"/proc/self/fd/{fd}/{name}")
    finally:
        os.close(fd)


def _payload(args: list[str]) -> bytes:
    mask = os.umask(0o022)
    os.umask(mask)
    fields = [PROTOCOL, os.fsencode(__file__), os.fsencode(os.getcwd()), b"%d" % mask,
              b"%d" % len(args), *(os.fsencode(a) for a in args),
              *(k + b"=" + v for k, v in os.environb.items())]
    return b"\0".join(fields)


def send(sock: object, args: list[str]) -> None:
    """The request for ``args``: its length with this process's stdin,
    stdout and stderr attached, then the payload."""
    import _socket

    data = _payload(args)
    fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2))
    sock.sendmsg([len(data).to_bytes(4, "big")],  # type: ignore[attr-defined]
                 [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
    sock.sendall(data)  # type: ignore[attr-defined]


class _Forwarder:
    """Signals this process receives go to the command's process (TSTP and
    CONT to its whole process group, and this client stops with it)."""

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH",
               "SIGTSTP", "SIGCONT")

    def __init__(self) -> None:
        import _signal

        self._signal = _signal
        self.pid = 0
        self.pending: list[int] = []
        self.old: dict[int, object] = {}
        for name in self.SIGNALS:
            num = getattr(_signal, name)
            self.old[num] = _signal.signal(num, self.handle)

    def handle(self, sig: int, _frame: object) -> None:
        if not self.pid:
            self.pending.append(sig)
            return
        s = self._signal
        try:
            if sig == s.SIGTSTP:
                os.killpg(self.pid, sig)
                os.kill(os.getpid(), s.SIGSTOP)
            elif sig == s.SIGCONT:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def started(self, pid: int) -> None:
        self.pid = pid
        for sig in self.pending:
            self.handle(sig, None)
        self.pending.clear()

    def restore(self) -> None:
        for num, handler in self.old.items():
            self._signal.signal(num, handler)


def run_on_server(args: list[str]) -> int | str | None:
    """The command's exit code when the server ran it; ABSENT when no server
    listens; None when one declined (the caller runs the command).  A
    signal that arrives before the command started is delivered to this
    process again when it runs the command itself."""
    path = socket_path(store_root(args))
    import _socket

    forwarder = _Forwarder()
    result: int | str | None = None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            at_socket(sock, "connect", path)
        except OSError:
            result = ABSENT
            return result
        try:
            send(sock, args)
        except OSError:  # a closed standard stream, a vanished cwd, a server gone
            return None
        result = _await(sock, forwarder)
        return result
    finally:
        sock.close()
        forwarder.restore()
        if not isinstance(result, int):
            for sig in forwarder.pending:  # as if they came now (KeyboardInterrupt...)
                os.kill(os.getpid(), sig)


def _await(sock: object, forwarder: _Forwarder) -> int | None:
    buf = b""
    started = False
    while True:
        nl = buf.find(b"\n")
        if nl < 0:
            try:
                chunk = sock.recv(256)  # type: ignore[attr-defined]
            except OSError:
                chunk = b""
            if not chunk:
                if not started:
                    return None
                sys.stderr.write("volmerge: error: the command server went away\n")
                return 1
            buf += chunk
            continue
        line, buf = buf[:nl], buf[nl + 1:]
        kind, _, value = line.partition(b" ")
        if kind == b"N":  # declined: nothing was done
            return None
        if kind == b"P":
            started = True
            forwarder.started(int(value))
        elif kind == b"X":
            return int(value)
        elif kind == b"K":  # the command died of a signal: so does this process
            sig = int(value)
            forwarder.restore()
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                forwarder._signal.signal(sig, forwarder._signal.SIG_DFL)
            except (OSError, ValueError):  # SIGKILL, SIGSTOP: not to be caught anyway
                pass
            os.kill(os.getpid(), sig)
            return 128 + sig  # a signal this process cannot die of
