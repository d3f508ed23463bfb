"""The files of a SQLite replay beside its destination, and what a killed
replay left there.

A build into ``DIR/BASE`` works on ``DIR/.BASE.volmerge-XXXXXXXX.tmp``
(and SQLite's journal beside it) and holds ``….lock``, a file it created
and ``flock()``ed before anything else: the kernel lets the lock go with
the process however it ends, so a lock nobody holds is a dead build's.
There is no age rule: the window between creating the lock file and
locking it is closed by the builder, which checks after locking that its
path still names its file (a sweep that took the lock in between removed
it) and starts again under another name otherwise.
"""

from __future__ import annotations

import fcntl
import glob
import os
import uuid


def hold(d: str, base: str) -> tuple[str, int]:
    """A new stem for a build into ``d/base`` and the descriptor of its
    lock file, created and flock()ed (released with :func:`let_go`)."""
    while True:
        stem = os.path.join(d, f".{base}.volmerge-{uuid.uuid4().hex[:8]}")
        fd = os.open(stem + ".lock", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _names(stem + ".lock", fd):
            return stem, fd
        os.close(fd)  # swept between its creation and its lock: not ours any more


def _names(path: str, fd: int) -> bool:
    """Whether ``path`` still names the file open on ``fd``."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def let_go(stem: str, fd: int) -> None:
    unlink([stem + ".lock"])  # before the lock goes: a lock file nobody holds is a dead one's
    os.close(fd)


def sweep(d: str, base: str) -> list[str]:
    """Remove what replays into ``d/base`` that were killed left beside it
    (a temporary database, its journal, a lock file nobody holds).  A
    build's lock file exists from before its temporary database until
    after it, so a stem whose lock file is missing, or held by nobody, is
    dead.  Returns the paths removed."""
    gone: list[str] = []
    stems: dict[str, list[str]] = {}
    prefix = os.path.join(d, f".{base}.volmerge-")
    for path in glob.glob(glob.escape(prefix) + "*"):
        stem = prefix + path[len(prefix):].split(".", 1)[0]
        stems.setdefault(stem, []).append(path)
    for stem, paths in stems.items():
        lock = stem + ".lock"
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            gone += unlink(paths)  # no lock file (any more): no build there
            continue
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a replay is running there
            rest = sorted(set(paths) - {lock}) + [lock]  # the lock file last
            gone += unlink(rest)
        finally:
            os.close(fd)
    return gone


def unlink(paths: list[str]) -> list[str]:
    """Remove what exists of ``paths``; the ones removed."""
    gone = []
    for p in paths:
        try:
            os.unlink(p)
            gone.append(p)
        except OSError:
            pass
    return gone


def remove_db(tmp: str) -> None:
    """A temporary database and SQLite's files beside it."""
    unlink([tmp, tmp + "-journal", tmp + "-wal", tmp + "-shm"])
