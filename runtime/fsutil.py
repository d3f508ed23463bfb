"""Small file-system primitives: iterative, descriptor-based walks, copies and removal."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import BadInput


def rmtree(path: str | os.PathLike[str]) -> None:
    """Remove a tree, including read-only directories; missing is fine.

    Iterative and descriptor-based (like ``rm -rf``): a tree of any depth a
    container wrote goes without RecursionError (Python 3.11's shutil.rmtree
    recurses) or ENAMETOOLONG, and no symlink inside it is ever followed."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)  # removed meanwhile by another process: fine
        return
    try:
        _empty(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise
        return
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)


def rmtree_at(dirfd: int, name: str) -> None:
    """Remove the tree ``name`` in the directory ``dirfd`` (descriptor-based
    all the way: for trees whose path would be too long to name)."""
    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, _DIR_FLAGS, dir_fd=dirfd)
        try:
            _empty(fd)
        finally:
            os.close(fd)
        _retry_denied(dirfd, lambda: os.rmdir(name, dir_fd=dirfd))
    else:
        _retry_denied(dirfd, lambda: os.unlink(name, dir_fd=dirfd))


def _empty(top: str | os.PathLike[str] | int) -> None:
    """Remove everything below the directory ``top``."""
    root = os.getuid() == 0
    for e in walk(top, post=True):
        if e.after:
            _retry_denied(e.dirfd, functools.partial(os.rmdir, e.name, dir_fd=e.dirfd))
        elif e.is_dir:
            if not root and stat.S_IMODE(e.st.st_mode) & 0o700 != 0o700:
                _chmod_dir(e.dirfd, e.name)  # unprivileged: make it listable
        else:
            _retry_denied(e.dirfd, functools.partial(os.unlink, e.name, dir_fd=e.dirfd))


def _retry_denied(dirfd: int, op: Callable[[], None]) -> None:
    """Run ``op`` (an unlink or rmdir in ``dirfd``); a read-only parent is
    made writable once; an entry already gone is fine."""
    try:
        op()
    except FileNotFoundError:
        pass
    except PermissionError:
        os.fchmod(dirfd, 0o700)
        with contextlib.suppress(FileNotFoundError):
            op()


def _chmod_dir(dirfd: int, name: str) -> None:
    """chmod 0700 the directory ``name`` in ``dirfd``, never through a symlink
    (an O_PATH descriptor: chmod via /proc acts on that very inode)."""
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            os.chmod(f"/proc/self/fd/{fd}", 0o700)
        finally:
            os.close(fd)


# -- one walk over trees that containers wrote ---------------------------------------

MAX_OPEN = 64  # directory descriptors one walk keeps open, whatever the depth
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TreeChanged(OSError):
    """A directory was moved or replaced while it was being walked."""


class Entry:
    """One entry met by :func:`walk`.  ``dirfd`` (its parent) and :attr:`rel`
    are valid only until the walk moves on.

    Entry and _Frame are the walk's own mutable records, one per file met:
    plain slotted classes (no dataclass to generate at import, on the run
    path's clean-up; faster attribute access in every walk)."""

    __slots__ = ("dirfd", "name", "st", "depth", "after", "skip", "_walk")

    def __init__(self, dirfd: int, name: str, st: os.stat_result, depth: int,
                 after: bool = False, skip: bool = False, _walk: _Walker | None = None) -> None:
        self.dirfd = dirfd
        self.name = name
        self.st = st
        self.depth = depth  # 1 for the children of the top
        self.after = after  # a directory seen again once its children are done
        self.skip = skip  # set by the consumer: do not descend into this directory
        self._walk = _walk

    def __repr__(self) -> str:
        return (f"Entry(dirfd={self.dirfd}, name={self.name!r}, depth={self.depth}, "
                f"after={self.after}, skip={self.skip})")

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def rel(self) -> str:
        """The '/'-joined path below the top (long at depth: built on demand)."""
        assert self._walk is not None
        return self._walk.rel(self)


class _Frame:
    """One open directory of walk()'s descent."""

    __slots__ = ("name", "dev", "ino", "fd", "todo", "entry")

    def __init__(self, name: str, dev: int, ino: int, fd: int, todo: list[str],
                 entry: Entry | None) -> None:
        self.name = name
        self.dev = dev
        self.ino = ino
        self.fd = fd
        self.todo = todo  # children still to visit, last first
        self.entry = entry  # how the parent saw this directory (None: the top)


class _Walker:
    def __init__(self) -> None:
        self.stack: list[_Frame] = []

    def rel(self, e: Entry) -> str:
        names = [f.name for f in self.stack[1:]]
        return "/".join([*names[: e.depth - 1], e.name])

    def open_dir(self, parent: int, name: str, st: os.stat_result | None) -> int:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        got = os.fstat(fd)
        if st is not None and (got.st_dev, got.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            raise TreeChanged(errno.ESTALE, f"{short(name)} was replaced while it was walked")
        return fd

    def push(self, name: str, fd: int, entry: Entry | None) -> None:
        st = os.fstat(fd)
        try:
            todo = sorted(os.listdir(fd), reverse=True)
        except BaseException:
            os.close(fd)
            raise
        self.stack.append(_Frame(name, st.st_dev, st.st_ino, fd, todo, entry))
        far = len(self.stack) - MAX_OPEN - 1
        if far >= 0 and self.stack[far].fd >= 0:
            os.close(self.stack[far].fd)  # reopened through ".." on the way back
            self.stack[far].fd = -1

    def pop(self) -> _Frame | None:
        """Leave the top frame; returns its parent with an open descriptor."""
        done = self.stack.pop()
        try:
            if not self.stack:
                return None
            parent = self.stack[-1]
            if parent.fd < 0:
                fd = os.open("..", _DIR_FLAGS, dir_fd=done.fd)
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != (parent.dev, parent.ino):
                    os.close(fd)
                    raise TreeChanged(errno.ESTALE,
                                      f"{short(parent.name)} was moved while it was walked")
                parent.fd = fd
            return parent
        finally:
            os.close(done.fd)

    def close(self) -> None:
        for f in self.stack:
            if f.fd >= 0:
                os.close(f.fd)
                f.fd = -1
        self.stack.clear()


def walk(top: str | os.PathLike[str] | int, *, post: bool = False,
         on_error: Callable[[OSError, Entry], None] | None = None) -> Iterator[Entry]:
    """Every entry below ``top`` (a directory path or descriptor, never
    followed if it is a symlink), depth first, names sorted, parents before
    children; with ``post`` each directory is met again (``after``) once its
    children are done, its parent's descriptor still open (so it can be
    removed).  Iterative, through directory descriptors (O_NOFOLLOW, each
    checked to be the inode that was listed), with at most MAX_OPEN of them
    open: depth costs neither recursion nor path length.  An entry that
    vanishes is skipped; a directory that cannot be opened or listed raises,
    or is passed to ``on_error`` and skipped."""
    w = _Walker()
    try:
        fd = os.dup(top) if isinstance(top, int) else os.open(top, _DIR_FLAGS)
        w.push("", fd, None)
        while w.stack:
            f = w.stack[-1]
            if not f.todo:
                parent = w.pop()
                if post and parent is not None and f.entry is not None:
                    f.entry.after = True
                    f.entry.dirfd = parent.fd
                    yield f.entry
                continue
            name = f.todo.pop()
            try:
                st = os.stat(name, dir_fd=f.fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            e = Entry(f.fd, name, st, len(w.stack), _walk=w)
            yield e
            if not e.is_dir or e.skip:
                continue
            try:
                w.push(name, w.open_dir(f.fd, name, st), e)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if on_error is None or isinstance(exc, TreeChanged):
                    raise
                on_error(exc, e)
    finally:
        w.close()


def copy_tree(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy the content of directory ``src`` into the existing empty
    directory ``dst`` like ``cp -a``: types, modes, owners, times, xattrs
    (ACLs and overlay markers included), hard links inside the tree, holes of
    sparse files; symlinks are copied, never followed.  Iterative and through
    descriptors on both sides (fsutil.walk; at most MAX_OPEN more on the
    destination side), so a tree of any depth is copied."""
    out = DirStack(os.open(dst, _DIR_FLAGS))
    links: dict[tuple[int, int], str] = {}  # a multiply linked inode -> its first copy
    try:
        root_fd = os.open(src, _DIR_FLAGS)
        try:
            root_st, root_x = os.fstat(root_fd), xattrs(root_fd)
        finally:
            os.close(root_fd)
        for e in walk(src, post=True):
            cur = out.top()
            if e.after:
                out.finish()
            elif e.is_dir:
                os.mkdir(e.name, 0o700, dir_fd=cur)
                sfd = os.open(e.name, _DIR_FLAGS, dir_fd=e.dirfd)
                try:
                    want = xattrs(sfd)
                finally:
                    os.close(sfd)
                out.push(os.open(e.name, _DIR_FLAGS, dir_fd=cur), e.st, want)
            else:
                copy_entry(e, cur, out.root, links)
        _set_dir_meta(out.root, root_st, root_x)
    finally:
        out.close()


def copy_entry(e: Entry, parent: int, root: int = -1,
               links: dict[tuple[int, int], str] | None = None) -> None:
    """Copy the non-directory ``e`` (met by walk) into the directory
    ``parent`` under its name, with its attributes; ``links`` (with ``root``,
    the destination top) makes later names of a multiply linked file hard
    links to its first copy."""
    if stat.S_ISREG(e.st.st_mode):
        _copy_file(e, parent, root, {} if links is None else links)
    elif stat.S_ISLNK(e.st.st_mode):
        os.symlink(os.readlink(e.name, dir_fd=e.dirfd), e.name, dir_fd=parent)
        os.chown(e.name, e.st.st_uid, e.st.st_gid, dir_fd=parent, follow_symlinks=False)
        os.utime(e.name, ns=(e.st.st_atime_ns, e.st.st_mtime_ns), dir_fd=parent,
                 follow_symlinks=False)
    else:  # device, FIFO, socket, overlay whiteout: made, never opened
        os.mknod(e.name, stat.S_IFMT(e.st.st_mode) | 0o600, e.st.st_rdev, dir_fd=parent)
        os.chown(e.name, e.st.st_uid, e.st.st_gid, dir_fd=parent, follow_symlinks=False)
        os.chmod(e.name, stat.S_IMODE(e.st.st_mode), dir_fd=parent)
        os.utime(e.name, ns=(e.st.st_atime_ns, e.st.st_mtime_ns), dir_fd=parent)


def xattrs(fd: int) -> dict[str, bytes]:
    try:
        return {k: os.getxattr(fd, k) for k in os.listxattr(fd)}
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise


def _set_dir_meta(fd: int, st: os.stat_result, xattrs: dict[str, bytes]) -> None:
    os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    for k, v in xattrs.items():
        os.setxattr(fd, k, v)
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_file(e: Entry, parent: int, root: int, links: dict[tuple[int, int], str]) -> None:
    """One regular file (a hard link to its first copy when it has several)."""
    key = (e.st.st_dev, e.st.st_ino)
    if e.st.st_nlink > 1 and key in links and root >= 0:
        try:
            os.link(links[key], e.name, src_dir_fd=root, dst_dir_fd=parent, follow_symlinks=False)
            return
        except OSError:  # too far to name (PATH_MAX), or too many links: a copy
            pass
    src = os.open(e.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                  dir_fd=e.dirfd)
    try:
        st = os.fstat(src)
        if (st.st_dev, st.st_ino) != key or not stat.S_ISREG(st.st_mode):
            raise TreeChanged(errno.ESTALE, f"{short(e.name)} was replaced while it was copied")
        dst = os.open(e.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=parent)
        try:
            _copy_data(src, dst, st.st_size)
            os.fchown(dst, st.st_uid, st.st_gid)
            os.fchmod(dst, stat.S_IMODE(st.st_mode))
            for k, v in xattrs(src).items():
                os.setxattr(dst, k, v)
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dst)
    finally:
        os.close(src)
    if e.st.st_nlink > 1 and root >= 0:
        links[key] = e.rel


def _copy_data(src: int, dst: int, size: int) -> None:
    """The data segments only (SEEK_DATA/SEEK_HOLE): holes stay holes."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(src, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                break
            raise
        end = os.lseek(src, start, os.SEEK_HOLE)
        while start < end:
            try:
                n = os.copy_file_range(src, dst, end - start, start, start)
            except OSError as exc:  # another filesystem, an old kernel: plain reads
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                data = os.pread(src, min(end - start, 1 << 20), start)
                n = os.pwrite(dst, data, start) if data else 0
            if n == 0:
                break
            start += n
        pos = end
    os.ftruncate(dst, size)


class DirStack:
    """The destination directories of a copy, one per level of the walk
    (push on entering, finish on leaving), with at most MAX_OPEN descriptors
    open (parents reopened through '..' and checked)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.frames: list[list] = []  # [fd, dev, ino, stat of the source, its xattrs]

    def top(self) -> int:
        return self.frames[-1][0] if self.frames else self.root

    def push(self, fd: int, st: os.stat_result, xattrs: dict[str, bytes]) -> None:
        own = os.fstat(fd)
        self.frames.append([fd, own.st_dev, own.st_ino, st, xattrs])
        far = len(self.frames) - MAX_OPEN - 1
        if far >= 0 and self.frames[far][0] >= 0:
            os.close(self.frames[far][0])
            self.frames[far][0] = -1

    def finish(self) -> None:
        """The top directory's children are done: its metadata, then up."""
        fd, _dev, _ino, st, xattrs = self.frames.pop()
        try:
            if self.frames and self.frames[-1][0] < 0:
                parent = self.frames[-1]
                up = os.open("..", _DIR_FLAGS, dir_fd=fd)
                got = os.fstat(up)
                if (got.st_dev, got.st_ino) != (parent[1], parent[2]):
                    os.close(up)
                    raise TreeChanged(errno.ESTALE, "a copied directory was moved")
                parent[0] = up
            _set_dir_meta(fd, st, xattrs)
        finally:
            os.close(fd)

    def close(self) -> None:
        for f in self.frames:
            if f[0] >= 0:
                os.close(f[0])
        self.frames.clear()
        os.close(self.root)


def short(path: str, keep: int = 60) -> str:
    """A path cut for a one-line message (a hostile tree's paths can be 20 kB)."""
    return path if len(path) <= 2 * keep else f"{path[:keep]}...{path[-keep:]}"


def open_private(path: str | os.PathLike[str], flags: int, *, dir_fd: int | None = None,
                 what: str = "file") -> int:
    """Open a file the store trusts: never through a symlink (``O_NOFOLLOW``),
    only a regular file of the effective user (one planted by another user
    could block root, learn when it works, or be a link to a file root would
    write), made 0600 (created so when ``flags`` has ``O_CREAT``).  BadInput
    names it otherwise; FileNotFoundError passes through."""
    flags |= os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise
        raise BadInput(f"{what} {path} is a symlink or not a file ({exc.strerror}); "
                       f"remove it") from None
    try:
        make_private(fd, path, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_private(fd: int, path: str | os.PathLike[str], what: str = "file") -> None:
    """The file open at ``fd`` as :func:`open_private` wants it: a regular
    file of the effective user (BadInput naming ``path`` otherwise), made
    0600.  ``fd`` may be an ``O_PATH | O_NOFOLLOW`` descriptor (a symlink
    then fails as not a regular file; the mode is changed through
    ``/proc/self/fd``, as fchmod refuses such a descriptor)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        raise BadInput(f"{what} {path} is not a regular file owned by uid {os.geteuid()} "
                       f"(owner uid {st.st_uid}); remove it")
    if stat.S_IMODE(st.st_mode) != 0o600:
        try:
            os.fchmod(fd, 0o600)
        except OSError as exc:
            if exc.errno != errno.EBADF:  # an O_PATH descriptor
                raise
            os.chmod(f"/proc/self/fd/{fd}", 0o600)


@contextlib.contextmanager
def flock(path: str | os.PathLike[str], *, blocking: bool = True) -> Iterator[int]:
    """An exclusive advisory lock on ``path`` (created 0600 if missing; a
    symlink or a file that is not ours is refused, BadInput).

    Raises BlockingIOError when ``blocking`` is false and another process
    holds it.  The lock dies with the process, so a crash never leaves it held.
    """
    fd = open_private(path, os.O_RDWR | os.O_CREAT, what="lock file")
    try:
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


def dir_size(path: str | os.PathLike[str], *, apparent: bool = False,
             stop_above: int | None = None) -> int:
    """Bytes used by regular files below ``path`` (no symlink is followed;
    an unreadable directory counts as empty, a hard-linked file once).
    ``apparent``: their sizes rather than the blocks they take;
    ``stop_above``: counted until the sum passes it (a large tree is not
    walked to its end)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    try:
        for e in walk(path, on_error=lambda exc, e: None):
            st = e.st
            if not stat.S_ISREG(st.st_mode):
                continue
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += st.st_size if apparent or not st.st_blocks else st.st_blocks * 512
            if stop_above is not None and total > stop_above:
                break
    except OSError:
        pass  # gone, or changed meanwhile (a running container's): counted as far as it went
    return total


def ctime_now(directory: str | os.PathLike[str]) -> int:
    """The kernel's ctime clock now (ns), as the file system holding
    ``directory`` stamps an inode changed at this instant: read from a
    file made there (and removed).  Userspace cannot set a ctime, so every
    change made after this call carries one at or after it."""
    path = os.path.join(directory, f".ctime-{os.getpid()}-{os.urandom(4).hex()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    try:
        return os.fstat(fd).st_ctime_ns
    finally:
        os.close(fd)
        os.unlink(path)
