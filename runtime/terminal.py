"""A pseudo-terminal for a foreground container (``run -t``), for the
builtin executor (runc allocates and relays its own).

The container's first process opens the pty in the container's own
/dev/pts, takes the slave as its stdin, stdout, stderr and controlling
terminal and sends the master to the caller over a socket (runc's "console
socket"); the caller relays the master to its own terminal, put in raw mode meanwhile (so Ctrl-C reaches the container as
a character, as with ``docker run -it``), its window size copied at start and
on every SIGWINCH.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import termios
import threading
import tty
from typing import Any


def copy_winsize(src: int, dst: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(dst, termios.TIOCSWINSZ, fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8))


def container_pty(console: int, uid: int, gid: int) -> None:
    """In the container's first process, after setsid() and pivot_root: a
    pty from the container's own /dev/pts (so ``tty`` names it there), the
    slave as stdin, stdout, stderr and controlling terminal, owned by the
    container's user; the master sent over ``console`` and closed here."""
    import socket

    master, slave = os.openpty()  # the container's /dev/ptmx
    os.fchown(slave, uid, gid)
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(slave)
    sock = socket.socket(fileno=console)
    try:
        socket.send_fds(sock, [b"m"], [master])
    finally:
        sock.close()
        os.close(master)


def receive_fd(sock: Any) -> int | None:
    """The master sent by container_pty, or None when the container's
    process ended before sending it (its start failed)."""
    import socket

    _msg, fds, _flags, _addr = socket.recv_fds(sock, 1, 1)
    return fds[0] if fds else None


class Relay:
    """Copies the caller's stdin to the master and the master to the caller's
    stdout until the container side of the pty is gone."""

    def __init__(self, master: int, stdin: int, stdout: int) -> None:
        self.master, self.stdin, self.stdout = master, stdin, stdout
        self._saved: Any = None
        self._old_winch: Any = None
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        if os.isatty(stdin):
            copy_winsize(stdin, master)
            self._saved = termios.tcgetattr(stdin)
            tty.setraw(stdin)
            if threading.current_thread() is threading.main_thread():
                self._old_winch = signal.signal(signal.SIGWINCH,
                                                lambda _s, _f: copy_winsize(self.stdin, self.master))
        self._thread = threading.Thread(target=self._run, name="volmerge-tty", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fds = [self.master, self.stdin, self._stop_r]
        while True:
            try:
                ready, _, _ = select.select(fds, [], [])
            except InterruptedError:
                continue
            if self.master in ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO: every holder of the slave is gone
                    data = b""
                if not data:
                    return
                os.write(self.stdout, data)
            if self.stdin in ready:
                data = os.read(self.stdin, 65536)
                if data:
                    os.write(self.master, data)
                else:
                    fds.remove(self.stdin)
            if self._stop_r in ready:
                # the container is gone: drain what is left, then stop
                while select.select([self.master], [], [], 0)[0]:
                    try:
                        data = os.read(self.master, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    os.write(self.stdout, data)
                return

    def close(self) -> None:
        """After the container's process has exited."""
        os.write(self._stop_w, b"x")
        self._thread.join(timeout=5)
        if self._saved is not None:
            termios.tcsetattr(self.stdin, termios.TCSADRAIN, self._saved)
            self._saved = None
        if self._old_winch is not None:
            signal.signal(signal.SIGWINCH, self._old_winch)
            self._old_winch = None
        for fd in (self.master, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
