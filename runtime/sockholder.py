"""Socket activation: the listening sockets of ``run --socket-activate``,
bound on the host and held by a small process of their own, the *holder*,
so that they outlive any one run of the container (and any one generation:
an upgrade hands them to the successor, volmerge/upgrade/sockets.py).

While the container is stopped or being replaced the socket stays open:
the kernel completes new connections into its backlog and the next process
that is given the socket accepts them.  Nobody sees a refused connection.

One holder per owning container id: it holds the container's TCP sockets
and serves copies of them (SCM_RIGHTS) on a unix socket at
``<root>/sockets/<id>.sock``; the owner is the name of that file, so the
hand-over to a successor is one atomic ``rename(2)``.  The file is ``0600``
in a ``0700`` directory of the ``0700`` store root, and the holder answers
only root (SO_PEERCRED), so no other user and no container (none sees the
store) can get the sockets.  The supervisor of a run fetches them
(:func:`fetch`) and the executor puts them at fd 3.. of the container's
first process, which gets ``LISTEN_FDS``, ``LISTEN_PID=1`` and
``LISTEN_FDNAMES`` as systemd's ``sd_listen_fds`` reads them.

Lifetime: :func:`ensure` (at every start) starts a holder when there is
none or when a dead one left its file (a crash, a reboot); ``rm`` of the
owner ends it (:func:`close`).  A holder that dies while the container
runs costs nothing at once (the container has its copy); the next start
binds anew.

Imported only for a container that asks for socket activation: never on
the plain ``run`` path.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import sys
from pathlib import Path

from .errors import BadInput, NotDone

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from .options import PortSpec

BACKLOG = 4096          # capped by net.core.somaxconn
TIMEOUT = 30.0          # a holder just started may still be importing (a loaded machine)
_MAX_FDS = 64


def sockets_dir(root: str | Path) -> Path:
    """``<root>/sockets``, root's alone (0700), made on first use."""
    d = Path(root) / "sockets"
    try:
        d.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(d)
    if not os.path.isdir(d) or os.path.islink(d) or st.st_uid != os.geteuid():
        raise NotDone(f"{d} is not a directory of this user's")
    if st.st_mode & 0o077:
        os.chmod(d, 0o700)
    return d


def _path(root: str | Path, cid: str) -> Path:
    if not cid or not all(ch in "0123456789abcdef" for ch in cid):
        raise BadInput(f"not a container id: {cid!r}")
    return sockets_dir(root) / f"{cid[:32]}.sock"


def _short(path: Path) -> tuple[str, int]:
    """A path to ``path`` that fits in sun_path (108 bytes) whatever the
    store root's length: through an O_PATH descriptor of its directory."""
    dfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{dfd}/{path.name}", dfd


def names(specs: Sequence[PortSpec]) -> list[str]:
    """``LISTEN_FDNAMES``: each socket named by its container port."""
    return [str(s.container_port) for s in specs]


def env(specs: Sequence[PortSpec]) -> list[str]:
    """The environment the container's first process reads the sockets by
    (sd_listen_fds(3)): it is pid 1 in its pid namespace."""
    return [f"LISTEN_FDS={len(specs)}", "LISTEN_PID=1",
            f"LISTEN_FDNAMES={':'.join(names(specs))}"]


def _key(specs: Sequence[PortSpec]) -> str:
    """What a holder holds, as it says it (json: not imported by the holder itself)."""
    import json

    return json.dumps([[s.host_ip, s.host_port, s.container_port] for s in specs])


# -- the client side ----------------------------------------------------------------

def _ask(path: Path, what: bytes) -> tuple[bytes, list[int]] | None:
    """One request to the holder at ``path``: its answer and the descriptors
    it sent (close-on-exec), or None when no holder answers there."""
    short, dfd = _short(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(TIMEOUT)
        try:
            s.connect(short)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        s.sendall(what)
        msg, fds, _flags, _addr = socket.recv_fds(s, 65536, _MAX_FDS, socket.MSG_CMSG_CLOEXEC)
        for fd in fds:  # (recv_fds does not keep MSG_CMSG_CLOEXEC's promise on every Python)
            os.set_inheritable(fd, False)
        if not msg:
            for fd in fds:
                os.close(fd)
            return None
        return msg, fds
    except OSError as exc:
        raise NotDone(f"the socket holder at {path.name} does not answer: {exc}") from None
    finally:
        s.close()
        os.close(dfd)


def fetch(root: str | Path, cid: str, specs: Sequence[PortSpec]) -> list[int]:
    """Copies of container ``cid``'s listening sockets, in the order of
    ``specs`` (close-on-exec: the executor puts them at fd 3..)."""
    got = _ask(_path(root, cid), b"get")
    if got is None:
        raise NotDone(f"container {cid[:12]}: its socket holder is gone (start it again)")
    msg, fds = got
    if msg.decode(errors="replace") != _key(specs) or len(fds) != len(specs):
        for fd in fds:
            os.close(fd)
        raise NotDone(f"container {cid[:12]}: its socket holder holds other sockets")
    return fds


def ensure(root: str | Path, cid: str, specs: Sequence[PortSpec]) -> None:
    """Container ``cid``'s sockets are bound and held: a holder that holds
    exactly ``specs`` is kept, another one is ended, a dead one's file
    replaced.  BadInput when a port cannot be bound (in use, not an address
    of this host); nothing is left behind then."""
    path = _path(root, cid)
    got = _ask(path, b"get")
    if got is not None:
        for fd in got[1]:
            os.close(fd)
        if got[0].decode(errors="replace") == _key(specs):
            return
        close(root, cid)
    socks: list[socket.socket] = []
    try:
        for spec in specs:
            socks.append(_bind(spec))
        _start_holder(path, specs, socks)
    finally:
        for s in socks:
            s.close()


def _bind(spec: PortSpec) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    where = f"{spec.host_ip or '0.0.0.0'}:{spec.host_port}"
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT leftover is no clash
        s.bind((spec.host_ip or "0.0.0.0", spec.host_port))
        s.listen(BACKLOG)
    except OSError as exc:
        s.close()
        why = {errno.EADDRINUSE: "in use (by a host process, a published port or another "
                                 "container's socket)",
               errno.EADDRNOTAVAIL: "not an address of this host",
               errno.EACCES: "not allowed"}.get(exc.errno or 0, exc.strerror or str(exc))
        raise BadInput(f"--socket-activate {where}: {why}") from None
    return s


def _start_holder(path: Path, specs: Sequence[PortSpec], socks: list[socket.socket]) -> None:
    """Bind the holder's unix socket at ``path`` (a dead holder's file
    replaced) and start the holder with it and ``socks``: detached (its own
    session, reparented to init), stdio on /dev/null.  Clients may connect
    at once: the kernel queues them until the holder accepts."""
    with _unix_listener(path) as unix:
        keep = [unix.fileno(), *(s.fileno() for s in socks)]
        # the unix socket's path first: not used by the holder, but `ps` (and a
        # test) can tell whose holder it is, as conmon's command line does
        argv = [sys.executable, "-m", "volmerge.runtime.sockholder", str(path), _key(specs),
                *map(str, keep)]
        _spawn(argv, keep)


def _spawn(argv: list[str], keep: list[int]) -> None:
    """Start ``argv`` in a session of its own with ``keep`` inherited, stdio
    on /dev/null and no other descriptor: by posix_spawn, safe in a caller
    with threads.  It is this process's child until this process exits (a
    CLI command, short-lived), then init's."""
    actions: list[tuple[int | str, ...]] = [
        (os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    from .executors.base import close_inherited  # the spawner's, not the holder's import

    actions += close_inherited(keep)
    for fd in keep:
        os.set_inheritable(fd, True)  # our own copies, closed by the caller right after
    try:
        os.posix_spawn(argv[0], argv, os.environ, file_actions=actions, setsid=True,
                       setsigdef=(signal.SIGPIPE, signal.SIGINT, signal.SIGTERM))
    except OSError as exc:
        raise NotDone(f"cannot start the socket holder: {exc}") from None
    finally:
        for fd in keep:
            os.set_inheritable(fd, False)


class _unix_listener:
    """The holder's listening unix socket at ``path`` (0600), removed again
    when the holder could not be started."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)

    def __enter__(self) -> socket.socket:
        short, dfd = _short(self.path)
        try:
            try:
                os.unlink(short)  # a dead holder's (ensure found nobody answering)
            except FileNotFoundError:
                pass
            old = os.umask(0o177)
            try:
                self.sock.bind(short)
            finally:
                os.umask(old)
            os.chmod(short, 0o600)
            self.sock.listen(64)
        except BaseException:
            self.sock.close()
            raise
        finally:
            os.close(dfd)
        return self.sock

    def __exit__(self, typ: object, exc: object, tb: object) -> None:
        self.sock.close()
        if exc is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def close(root: str | Path, cid: str) -> None:
    """End container ``cid``'s holder (its sockets close: new connections
    are refused again) and remove its file; nothing when it has none."""
    path = _path(root, cid)
    try:
        _ask(path, b"quit")
    except NotDone:
        pass  # hung: removing the file below orphans it at worst
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def hand_over(root: str | Path, from_id: str, to_id: str) -> bool:
    """Container ``to_id`` owns ``from_id``'s holder from now on (one
    rename: a crash leaves one owner or the other).  A holder ``to_id`` had
    is ended first.  Whether there was one to hand over."""
    src, dst = _path(root, from_id), _path(root, to_id)
    if src == dst or not src.exists():
        return False
    if dst.exists():
        close(root, to_id)
    os.rename(src, dst)
    return True


def owns(root: str | Path, cid: str) -> bool:
    """Whether container ``cid`` has a holder's file (alive or not)."""
    return _path(root, cid).exists()


# -- the holder ---------------------------------------------------------------------

def serve(unix: socket.socket, key: bytes, fds: list[int]) -> None:
    """Answer root's requests until one says ``quit``: ``get`` sends copies
    of ``fds`` with ``key`` (what they are), anything else is dropped."""
    while True:
        try:
            conn, _ = unix.accept()
        except InterruptedError:
            continue
        with conn:
            conn.settimeout(5)
            try:
                cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                       struct.calcsize("3i"))
                _pid, uid, _gid = struct.unpack("3i", cred)
                if uid != 0:
                    continue
                what = conn.recv(64)
                if what == b"get":
                    socket.send_fds(conn, [key], fds)
                elif what == b"quit":
                    for fd in fds:
                        os.close(fd)
                    conn.send(b"bye")
                    return
            except OSError:
                continue


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    key, unix_fd, *fds = args[1].encode(), *map(int, args[2:])  # args[0]: the path
    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(s, signal.SIG_IGN)
    os.chdir("/")  # holds no directory of its starter's busy (an unmount of it)
    for fd in (unix_fd, *fds):
        os.set_inheritable(fd, False)
    serve(socket.socket(fileno=unix_fd), key, fds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
