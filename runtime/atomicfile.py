"""Never write state in place (architecture.md, principle 3): one helper.

In the style of dulwich's ``GitFile``: the new content goes to ``NAME.lock``
in the target's directory, created exclusively; on success it is fsync'ed,
renamed over ``NAME`` and the directory fsync'ed; on an exception it is
removed and ``NAME`` is left as it was.  Readers see the old file or the
whole new one, never a torn one.

**The lock file is the lock.**  It appears already holding an exclusive
``flock`` (made as an unnamed ``O_TMPFILE`` file, locked, then linked to
``NAME.lock``; where the file system has no ``O_TMPFILE``, a random name
stands in for it), and the lock dies with its writer.  So a second writer
that finds ``NAME.lock`` can tell a live writer (the flock is held: it
waits up to ``wait`` seconds, then FileLocked) from a dead one's leftover
(nobody holds it: the leftover is removed, under its own flock, and the
write goes on).  A crash therefore never blocks the next write, and no
sweeper has to know about these files.

``private=True`` is for a file the user named (``-o FILE``) in a directory
other users may write: the new file gets a random name (nothing another
user planted at a predictable name can be written through) and no lock.

A leaf: it imports nothing of the runtime but its error root (strategies
may import it; pyproject.toml, import-linter).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from types import TracebackType

from .errors import BadInput, NotDone

LOCK_SUFFIX = ".lock"
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT, errno.EXDEV)


class FileLocked(NotDone):
    """Another live process is writing the same file (its ``.lock`` is held)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} is being written by another process (its {LOCK_SUFFIX} "
                         f"file is held); try again when it is done", path=path)
        self.path = path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, _DIR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: str | os.PathLike[str]) -> None:
    """syncfs(2) on the file system holding the directory ``path``: makes a
    fresh tree durable before it is renamed into place (an extracted layer, a
    volume layer, a merge's output), in one call instead of an fsync per file
    and directory."""
    import ctypes

    fd = os.open(path, _DIR)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs {os.fspath(path)}: {os.strerror(err)}")
    finally:
        os.close(fd)


class AtomicFile:
    """A context manager: ``with AtomicFile(path) as f: f.write(data)``.

    ``mode`` is the new file's mode whatever the umask (None: 0666 less the
    umask, like ``open``); ``dir_fd`` makes ``path`` a name in that
    directory; ``wait`` is how long to wait for another live writer."""

    def __init__(self, path: str | os.PathLike[str], mode: int | None = 0o600, *,
                 dir_fd: int | None = None, wait: float = 0.0, private: bool = False) -> None:
        p = os.fspath(path)
        self.path = p
        self.name = os.path.basename(p)
        self.mode = mode
        self.wait = wait
        self.private = private
        self._parent = os.path.dirname(p) or "."
        self._given_dir = dir_fd
        self._dfd = -1
        self.fd = -1
        self._tmp = ""
        self.closed = False

    # -- the context manager -------------------------------------------------------
    def __enter__(self) -> AtomicFile:
        if self._given_dir is not None:
            self._dfd = os.dup(self._given_dir)
        else:
            self._dfd = os.open(self._parent, _DIR)
        try:
            if self.private:
                self.fd, self._tmp = _create_private(self._dfd, self.name, self.mode)
            else:
                self._tmp = self.name + LOCK_SUFFIX
                self.fd = self._acquire()
        except BaseException:
            os.close(self._dfd)
            self._dfd = -1
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is None:
            self.commit()
        else:
            self.abort()

    # -- writing ---------------------------------------------------------------------
    def write(self, data: bytes | str) -> None:
        view = memoryview(data.encode() if isinstance(data, str) else data)
        while view:
            view = view[os.write(self.fd, view):]

    def commit(self) -> None:
        """fsync, rename over the target, fsync the directory."""
        if self.closed:
            return
        try:
            os.fsync(self.fd)
            os.rename(self._tmp, self.name, src_dir_fd=self._dfd, dst_dir_fd=self._dfd)
        except BaseException:
            self.abort()
            raise
        self._close()  # the flock goes only now: the lock file is the target already
        try:
            os.fsync(self._dfd)
        finally:
            os.close(self._dfd)
            self._dfd = -1

    def abort(self) -> None:
        """Remove the new file (ours: we hold it); the target stays as it was."""
        if self.closed:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp, dir_fd=self._dfd)
        self._close()
        os.close(self._dfd)
        self._dfd = -1

    def _close(self) -> None:
        self.closed = True
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- the lock file -----------------------------------------------------------------
    def _acquire(self) -> int:
        def attempt() -> int:
            for _ in range(3):  # a leftover broken, then a new writer may win the name
                fd = _create_locked(self._dfd, self._tmp, self.mode)
                if fd is not None:
                    return fd
                if not _break_stale(self._dfd, self._tmp, self.path):
                    break
            raise FileLocked(self.path)

        if self.wait <= 0:
            return attempt()
        from .polling import retry

        return retry(attempt, when=lambda e: isinstance(e, FileLocked), timeout=self.wait,
                     interval=0.005, max_interval=0.1)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, mode: int | None = 0o600, *,
                 dir_fd: int | None = None, wait: float = 0.0) -> None:
    """Replace ``path`` with ``data`` through :class:`AtomicFile`."""
    with AtomicFile(path, mode, dir_fd=dir_fd, wait=wait) as f:
        f.write(data)


def _create_locked(dfd: int, lock: str, mode: int | None) -> int | None:
    """The file ``lock`` in ``dfd``, made already flock'ed; None if it exists."""
    try:
        fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666 if mode is None else mode,
                     dir_fd=dfd)
    except OSError as exc:
        if exc.errno not in _NO_TMPFILE:
            raise
        return _create_locked_named(dfd, lock, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # unnamed: nobody else can hold it
        _set_mode(fd, mode)
        os.link(f"/proc/self/fd/{fd}", lock, dst_dir_fd=dfd, follow_symlinks=True)
    except FileExistsError:
        os.close(fd)
        return None
    except OSError as exc:
        os.close(fd)
        if exc.errno not in _NO_TMPFILE:
            raise
        return _create_locked_named(dfd, lock, mode)  # no /proc: the named way
    except BaseException:
        os.close(fd)
        raise
    return fd


def _create_locked_named(dfd: int, lock: str, mode: int | None) -> int | None:
    tmp = f".{lock[:200]}.{os.urandom(6).hex()}"
    fd = os.open(tmp, _NEW, 0o666 if mode is None else mode, dir_fd=dfd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _set_mode(fd, mode)
        os.link(tmp, lock, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
    except FileExistsError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dfd)
    return fd


def _break_stale(dfd: int, lock: str, path: str) -> bool:
    """Remove ``lock`` if its writer is dead (nobody holds its flock).  True
    when the name is free now (removed, or already gone); False while a live
    writer holds it."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENXIO):
            raise
        raise BadInput(f"{path}{LOCK_SUFFIX} is a symlink or not a file; remove it") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadInput(f"{path}{LOCK_SUFFIX} is not a regular file; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        # Holding its flock: no other breaker can act on it, and its writer is gone.
        try:
            now = os.stat(lock, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(lock, dir_fd=dfd)
        return True
    finally:
        os.close(fd)


def _create_private(dfd: int, name: str, mode: int | None) -> tuple[int, str]:
    for _ in range(100):
        tmp = f".{name[:200]}.{os.urandom(8).hex()}.tmp"
        try:
            fd = os.open(tmp, _NEW, 0o666 if mode is None else mode, dir_fd=dfd)
        except FileExistsError:
            continue
        try:
            _set_mode(fd, mode)
        except BaseException:
            os.close(fd)
            os.unlink(tmp, dir_fd=dfd)
            raise
        return fd, tmp
    raise FileExistsError(f"no free temporary name beside {name}")


def _set_mode(fd: int, mode: int | None) -> None:
    if mode is not None:
        os.fchmod(fd, mode)
