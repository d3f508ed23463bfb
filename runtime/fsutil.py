"""Small file-system primitives: never write state in place (architecture.md, principle 3)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import BadInput


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o600) -> None:
    """Write ``path.lock`` with O_EXCL, fsync, rename over, fsync the directory."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    tmp = path.with_name(path.name + ".lock")
    with contextlib.suppress(FileNotFoundError):
        # A stale lock file can only be left by a crash: we hold the object lock.
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(path.parent)


def rmtree(path: str | os.PathLike[str]) -> None:
    """Remove a tree, including read-only directories; missing is fine."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return

    def onerror(func, p, exc_info):  # type: ignore[no-untyped-def]
        exc = exc_info[1]
        if isinstance(exc, FileNotFoundError):
            return
        if isinstance(exc, PermissionError):
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
            return
        raise exc

    shutil.rmtree(path, onerror=onerror)


@contextlib.contextmanager
def flock(path: str | os.PathLike[str], *, blocking: bool = True) -> Iterator[int]:
    """An exclusive advisory lock on ``path`` (created 0600 if missing; a
    symlink or a file that is not ours is refused, BadInput).

    Raises BlockingIOError when ``blocking`` is false and another process
    holds it.  The lock dies with the process, so a crash never leaves it held.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     0o600)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise
        raise BadInput(f"lock file {path} is a symlink or not a file; remove it") from None
    try:
        # Never trust a lock someone else planted: an open lock file shared with
        # another user would let them block root, or learn when it works.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise BadInput(f"lock file {path} is not a regular file owned by uid {os.geteuid()} "
                           f"(owner uid {st.st_uid}); remove it")
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, flags)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise BlockingIOError(exc.errno, f"locked: {path}") from None
            raise
        yield fd
    finally:
        os.close(fd)


def dir_size(path: str | os.PathLike[str]) -> int:
    """Bytes used by regular files below ``path`` (no symlink is followed)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += st.st_blocks * 512 if st.st_blocks else st.st_size
    return total
