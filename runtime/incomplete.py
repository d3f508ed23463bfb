"""Mark work incomplete before doing it; sweep on open (architecture.md,
principle 4), with one convention for every directory that is being built.

As containers/storage flags a layer "incomplete" until it is done and
deletes flagged layers when the store is next loaded, a directory being
built here carries the marker ``.incomplete-`` in its name
(``PREFIX.incomplete-RANDOM``) and, while its builder lives, an exclusive
``flock`` on the directory itself.  The builder renames it to its final
name when done (still holding the flock) or removes it on failure.  A
sweep removes a marked entry only when it can take that flock: its
builder is dead, so it is a crash leftover, never work in progress of
another process.  No lock files in another directory, no age rules.

A leaf: it imports nothing of the runtime but its error root and the
file-system leaf (strategies may import it; pyproject.toml, import-linter).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from . import fsutil

MARK = ".incomplete-"
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def is_marked(name: str) -> bool:
    return MARK in name


def marked_name(prefix: str) -> str:
    """A fresh name for work in progress: ``PREFIX.incomplete-RANDOM``."""
    return f"{prefix}{MARK}{os.urandom(6).hex()}"


def make(parent: str | os.PathLike[str], prefix: str, mode: int = 0o700) -> tuple[Path, int]:
    """A new marked directory ``parent/PREFIX.incomplete-RANDOM`` and the
    descriptor that holds its flock: it is work in progress until that
    descriptor is closed (or the process ends).

    Between ``mkdir`` and ``flock`` the new directory is marked but not yet
    held, so a sweep by another process may take it for a dead builder's
    and remove it: then the open finds nothing, the flock finds the
    sweeper's lock, or the path no longer names what was locked, and a new
    name is tried.  What the sweep removed was empty and ours."""
    for _ in range(100):
        path = Path(parent, marked_name(prefix))
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            continue
        try:
            fd = os.open(path, _OPEN | os.O_DIRECTORY)
        except FileNotFoundError:
            continue  # swept before we held it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # a sweep holds it and removes it
            continue
        except BaseException:
            os.close(fd)
            raise
        try:
            st = os.lstat(path)
            mine = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
                raise FileNotFoundError(path)
        except FileNotFoundError:
            os.close(fd)  # swept between our open and our flock
            continue
        try:
            os.fchmod(fd, mode)  # not the umask
        except BaseException:
            os.close(fd)
            os.rmdir(path)
            raise
        return path, fd
    raise FileExistsError(f"no free name in {parent}")


@contextlib.contextmanager
def building(parent: str | os.PathLike[str], prefix: str, mode: int = 0o700) -> Iterator[Path]:
    """A new marked directory (:func:`make`), held while the block runs.
    Rename it to its final place inside the block to keep it; whatever is
    still at the marked name afterwards is removed."""
    path, fd = make(parent, prefix, mode)
    try:
        yield path
    finally:
        try:
            _remove_if_same(path, os.fstat(fd), fsutil.rmtree)
        finally:
            os.close(fd)


def sweep(parent: str | os.PathLike[str], *, prefix: str = "",
          remove: Callable[[Path], None] = fsutil.rmtree) -> list[str]:
    """Remove every marked entry of ``parent`` (starting with ``prefix``)
    whose builder is dead; the names removed.  Work a live process holds is
    left alone, and so is an entry another user owns or that is not a file
    or directory (``parent`` may be a shared directory: ``merge -o``);
    ``remove`` deletes one leftover (default: fsutil.rmtree)."""
    gone: list[str] = []
    try:
        names = os.listdir(parent)
    except (FileNotFoundError, NotADirectoryError):
        return gone
    for name in names:
        if not name.startswith(prefix) or not is_marked(name):
            continue
        path = Path(parent, name)
        try:
            fd = os.open(path, _OPEN)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO):
                raise
            continue  # a symlink or socket: nothing a builder here makes
        try:
            if os.fstat(fd).st_uid != os.geteuid():
                continue  # another user's: never ours to remove (a shared directory)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its builder lives
            if _remove_if_same(path, os.fstat(fd), remove):
                gone.append(name)
        finally:
            os.close(fd)
    return gone


def _remove_if_same(path: Path, st: os.stat_result, remove: Callable[[Path], None]) -> bool:
    """Remove ``path`` if it still is the inode ``st`` (the caller holds its flock)."""
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return False
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        return False
    remove(path)
    return True
