"""Swapping a running container's volume mount for a new overlay.

A container sees a volume through a bind mount of ``volumes/<name>/merged``
made in its own mount namespace.  Freezing the live layer while the container
runs needs that mount replaced, or the container would keep writing into the
layer that just became a frozen generation.  How:

1. The mounts to replace are found in ``/proc/<pid>/mountinfo`` by the device
   number of the volume's overlay (a bind mount shares its superblock), with
   paths relative to the container's root.
2. A forked child enters the container's mount namespace (``setns``) and root
   (``chroot`` to ``/proc/<pid>/root``) and unmounts them *without*
   ``MNT_DETACH``: if a process holds a file or its working directory there,
   the kernel says EBUSY and the snapshot is refused.  A lazy unmount would let
   open descriptors write into the frozen layer, so it is never used.
3. After the commit, the new overlay is mounted on the host, cloned into a
   detached mount with ``open_tree(OPEN_TREE_CLONE)`` (same superblock, so
   every user shares one overlay instance), and a forked child attaches it
   inside the namespace with ``move_mount``.

The container is frozen around this (``--pause``), so no write lands between
the unmount and the new mount; with ``--force`` it is not.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from volmerge.runtime import sys as rsys


@dataclass(frozen=True)
class NsMount:
    pid: int
    targets: tuple[str, ...]  # mount points, relative to the process's root, deepest first


def dev_of(path: Path) -> str:
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


def mounts_of(pid: int, dev: str) -> NsMount:
    """Mount points of the overlay ``dev`` in the namespace of ``pid``."""
    found = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[2] == dev:
                found.append(rsys._unescape(parts[4]))
    found.sort(key=lambda p: p.count("/"), reverse=True)
    return NsMount(pid, tuple(found))


def _in_namespace(pid: int, action: Callable[[], None]) -> int:
    """Run ``action()`` in a forked child inside ``pid``'s mount namespace and
    root; return 0 or the errno it failed with."""
    rootfd = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY)
    nsfd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
    try:
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                rsys.setns(nsfd, rsys.CLONE_NEWNS)
                os.fchdir(rootfd)
                os.chroot(".")
                action()
            except OSError as exc:
                code = exc.errno or 1
            except BaseException:
                code = 255
            os._exit(code)
        _, status = os.waitpid(child, 0)
        return os.waitstatus_to_exitcode(status)
    finally:
        os.close(rootfd)
        os.close(nsfd)


def unmount_in(m: NsMount) -> int:
    """Unmount (never lazily) every target; 0 or the errno (EBUSY: in use)."""
    def act() -> None:
        for t in m.targets:
            rsys.umount(t)

    return _in_namespace(m.pid, act) if m.targets else 0


def mount_into(m: NsMount, host_mount: Path) -> int:
    """Attach a clone of the host mount at every target of ``m``."""
    if not m.targets:
        return 0
    fds = [rsys.open_tree_clone(host_mount) for _ in m.targets]
    try:
        def act() -> None:
            for fd, t in zip(fds, reversed(m.targets)):  # parents first
                rsys.move_mount_fd(fd, t)

        return _in_namespace(m.pid, act)
    finally:
        for fd in fds:
            os.close(fd)


def describe(code: int) -> str:
    if code == errno.EBUSY:
        return "a process in the container holds a file or its working directory there"
    return os.strerror(code) if 0 < code < 255 else f"failed ({code})"
