"""Persistent network namespaces: an nsfs file bind-mounted under the store.

A namespace is made by a short-lived thread that ``unshare(CLONE_NEWNET)``s
(namespaces are per thread, so the rest of the process stays where it is),
bind-mounts ``/proc/thread-self/ns/net`` on the target file and opens a
netlink socket there before exiting.  A netlink socket stays in the namespace
it was created in, so the caller configures the namespace through it without
forking (``pyroute2.netns`` forks a child per socket; this is ~1.5 ms).

The bind mount lives in the caller's mount namespace: the engine must create
containers from that namespace (it does: the CLI and supervisors share it).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .. import sys as rsys

NETLINK_ROUTE = 0
NSFS_MAGIC = 0x6E736673
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def _in_thread(fn: Callable[[], T]) -> T:
    value: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            value.append(fn())
        except BaseException as exc:  # re-raised in the caller
            error.append(exc)

    t = threading.Thread(target=run, name="volmerge-netns")
    t.start()
    t.join()
    if error:
        raise error[0]
    return value[0]


def create(path: Path) -> socket.socket:
    """Create a network namespace pinned at ``path``; return a NETLINK_ROUTE
    socket that lives in it (the caller closes it)."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)

    def inner() -> socket.socket:
        rsys.unshare(rsys.CLONE_NEWNET)
        rsys.mount("/proc/thread-self/ns/net", path, None, rsys.MS_BIND)
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)

    try:
        return _in_thread(inner)
    except BaseException:
        remove(path)
        raise


def netlink_socket(path: str | os.PathLike[str]) -> socket.socket:
    """A NETLINK_ROUTE socket inside the namespace pinned at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        def inner() -> socket.socket:
            rsys.setns(fd, rsys.CLONE_NEWNET)
            return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)

        return _in_thread(inner)
    finally:
        os.close(fd)


def is_pinned(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a live namespace bind mount (not a bare file left
    after a reboot or a crash between create and mount): statfs says nsfs."""
    buf = ctypes.create_string_buffer(128)  # struct statfs; f_type comes first
    if _libc.statfs(os.fsencode(str(path)), buf) != 0:
        return False
    return int.from_bytes(buf.raw[:8], "little") == NSFS_MAGIC


def remove(path: str | os.PathLike[str]) -> None:
    """Unpin and delete; idempotent.  Processes still inside keep the
    namespace alive until they exit."""
    while True:
        try:
            rsys.umount(path, rsys.MNT_DETACH)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):
                break
            raise
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
