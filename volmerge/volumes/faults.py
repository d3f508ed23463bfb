"""Fault injection: ``VOLMERGE_FAULT=<step>`` makes the process SIGKILL
itself when it reaches the named step, so tests can prove that a crash at any
step leaves a volume in the state before or the state after.  With
``VOLMERGE_FAULT_FILL=<file>`` as well, the process instead fills the file
system of ``<file>`` there (the file takes every free byte but
``VOLMERGE_FAULT_FILL_LEAVE``, default 0) and goes on: the disk-full tests
make the next write, the journal's own included, meet ENOSPC at a chosen
step.

``STEPS`` lists every step per operation; the crash tests iterate over it, and
a test fails if a listed step is never reached (the list cannot rot).
``VOLMERGE_FAULT=<step>#N`` dies the N-th time the process reaches the step:
a stack upgrade runs the same step kinds once per service.
"""

from __future__ import annotations

import os
import signal

STEPS: dict[str, tuple[str, ...]] = {
    "create": ("create.layers-built", "create.layers-in-pool", "create.committed"),
    "snapshot": (
        "snapshot.layer-made",
        "snapshot.unmounted",
        "snapshot.committed",
        "snapshot.remounted",
    ),
    "rollback": ("rollback.layer-made", "rollback.committed", "rollback.applied"),
    "rollback-keep": (
        "rollback.layer-made",
        "rollback.journal-written",
        "rollback.applied-one",
        "rollback.applied",
    ),
    "clone": ("clone.layer-made", "clone.committed"),
    "compact": (
        "compact.squashed",
        "compact.in-pool",
        "compact.committed",
        "compact.collected",
    ),
    "remove": ("remove.committed",),
}


_REACHED: dict[str, int] = {}


def point(step: str) -> None:
    """Die here, right now, if the environment asks for it."""
    want = os.environ.get("VOLMERGE_FAULT")
    if not want:
        return
    name, _, nth = want.partition("#")
    if name != step:
        return
    _REACHED[step] = _REACHED.get(step, 0) + 1
    if _REACHED[step] == (int(nth) if nth.isdigit() else 1):
        fill = os.environ.get("VOLMERGE_FAULT_FILL")
        if fill:
            _fill(fill, int(os.environ.get("VOLMERGE_FAULT_FILL_LEAVE") or 0))
            return
        os.kill(os.getpid(), signal.SIGKILL)


def _fill(path: str, leave: int) -> None:
    """Leave ``leave`` free bytes on ``path``'s file system (a new file of ours)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        st = os.fstatvfs(fd)
        try:
            os.posix_fallocate(fd, 0, max(st.f_bavail * st.f_frsize - leave, 1))
        except OSError:
            pass  # the writes below take what there is
        if leave:
            return
        os.lseek(fd, 0, os.SEEK_END)
        block = b"\0" * 4096
        while True:  # what the rounding of the allocation left
            os.write(fd, block)
    except OSError:
        pass
    finally:
        os.close(fd)
