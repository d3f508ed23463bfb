"""Where a tree merge's decisions land.  The walk (strategies.walk) decides;
a writer applies, through the interface :class:`TreeWriter`.  Three are
here: ``FullWriter`` builds the complete result tree, ``UpperWriter`` writes
only what differs from ours as a diff layer, in the diff format its caller
supplies (:class:`DiffFormat`: for overlayfs, runtime.overlayfmt, whose
whiteouts mark deletions and opaque directories replacements), and
``DryWriter`` writes nothing and records diffs.  A caller may hand
``merge_trees`` any other writer.  Dry run lives here and only here
(architecture.md, principle 2): the walk never asks whether it is a dry run.

All writes go through directory file descriptors of directories this writer
created itself, with O_EXCL/O_NOFOLLOW, and sources are read through the
verified descriptors of strategies.nodes.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from volmerge.runtime.overlayfmt import is_overlay_xattr

from .nodes import DirHandle, Node, check_depth

WR = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
DIFF_LIMIT = 1024 * 1024
Meta = tuple[int, int, int]  # mode, uid, gid


class TreeWriter(Protocol):
    """What the walk calls for each decision (``rel`` the '/'-joined path,
    ``name`` its last part; ``ours`` the entry ours has there, if any).
    ``active`` turns false once a conflict stops writing; ``written``
    counts the paths written."""

    active: bool
    written: int

    def begin_dir(self, rel: str, name: str, meta: Meta, src: Node | None,
                  src_dir: DirHandle | None, ours: Node | None) -> None: ...
    def end_dir(self, remains: bool) -> None: ...
    def keep(self, rel: str, name: str, ours: Node | None, src_dir: DirHandle | None) -> None: ...
    def take(self, rel: str, name: str, node: Node, src_dir: DirHandle | None,
             ours: Node | None) -> None: ...
    def delete(self, rel: str, name: str, ours: Node | None) -> None: ...
    def content(self, rel: str, name: str, data: bytes, meta: Meta, ours: Node | None) -> None: ...
    def file_out(self, rel: str, name: str) -> str: ...
    def finish_file(self, rel: str, name: str, meta: Meta) -> None: ...
    def set_root_meta(self, meta: Meta, src: Node | None) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


# A writer for the empty directory it is given (merge_trees makes it).
WriterFactory = Callable[[str], TreeWriter]


class DiffFormat(Protocol):
    """How a diff layer spells "deleted" and "replaced" (runtime.overlayfmt
    is the overlayfs one; the module itself satisfies this protocol)."""

    def make_whiteout(self, name: str, *, dir_fd: int | None = None, mode: int = 0) -> None: ...
    def set_opaque(self, target: int) -> None: ...


def _rmtree(path: str) -> None:
    """Remove a tree this writer made (iterative: shutil.rmtree recurses)."""
    from volmerge.runtime.fsutil import rmtree

    rmtree(path)


def _copy_fd(src: int, dst: int, size: int) -> None:
    """Stream without holding the file in memory (copy_file_range, then read/write)."""
    try:
        while True:
            n = os.copy_file_range(src, dst, 1 << 30)
            if n == 0:
                return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    os.lseek(src, 0, os.SEEK_SET)
    os.lseek(dst, 0, os.SEEK_SET)
    os.ftruncate(dst, 0)
    while b := os.read(src, 1 << 20):
        os.write(dst, b)


def _copy_xattrs(src: int, dst: int) -> None:
    try:
        names = os.listxattr(src)
    except OSError:
        return
    for n in names:
        if is_overlay_xattr(n):  # would steer a mount of the result
            continue
        try:
            os.setxattr(dst, n, os.getxattr(src, n))
        except OSError:
            pass


def _set_meta_fd(fd: int, meta: tuple[int, int, int]) -> None:
    mode, uid, gid = meta
    os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)


@dataclass
class _Dir:
    rel: str
    name: str
    meta: tuple[int, int, int]
    times: tuple[int, int] | None
    ours: Node | None
    replace: bool  # ours has something else here: the directory must hide it
    fd: int = -1  # -1: not created yet (upper mode creates lazily)
    src_fd: int = -1  # for xattrs


class _Base:
    """Shared copying code for the writers that write."""

    def __init__(self, root: str) -> None:
        """``root``: an empty directory that receives the result."""
        self.root = root
        self.rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.stack: list[_Dir] = []
        self.links: dict[tuple[int, int], tuple[int, str]] = {}  # src inode -> (dirfd, name)
        self.active = True
        self.written = 0

    # -- the parent of the next entry -------------------------------------
    def _parent(self) -> int:
        if not self.stack:
            return self.rootfd
        self._ensure()
        return self.stack[-1].fd

    def _ensure(self) -> None:
        parent = self.rootfd
        for d in self.stack:
            if d.fd < 0:
                os.mkdir(d.name, 0o700, dir_fd=parent)
                d.fd = os.open(d.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                               dir_fd=parent)
                if d.replace and d.ours is not None:
                    self._replaces(d.fd)
            parent = d.fd

    def _replaces(self, fd: int) -> None:
        """The new directory ``fd`` replaces what ours had there (a diff marks it)."""

    def _finish_dir(self, d: _Dir) -> None:
        _set_meta_fd(d.fd, d.meta)
        if d.src_fd >= 0:
            _copy_xattrs(d.src_fd, d.fd)
        if d.times:
            os.utime(d.fd, ns=d.times)

    # -- copies -----------------------------------------------------------
    def _copy(self, node: Node, parent: int, name: str, src_dir: DirHandle | None = None) -> None:
        """Copy one entry; a directory with everything below it, iteratively
        (an explicit stack of open source/destination directory pairs)."""
        if node.kind != "dir":
            self._copy_entry(node, parent, name)
            return
        assert src_dir is not None
        stack: list[tuple[DirHandle, int, Node, Iterator[Node]]] = []
        try:
            self._open_copy(stack, node, parent, name, src_dir)
            while stack:
                sub, fd, dnode, children = stack[-1]
                child = next(children, None)
                if child is None:
                    stack.pop()
                    try:
                        _set_meta_fd(fd, dnode.meta)
                        _copy_xattrs(sub.fd, fd)
                        os.utime(fd, ns=(dnode.st.st_atime_ns, dnode.st.st_mtime_ns))
                    finally:
                        os.close(fd)
                        sub.close()
                elif child.kind == "dir":
                    self._open_copy(stack, child, fd, child.name, sub)
                else:
                    self._copy_entry(child, fd, child.name)
        finally:
            for sub, fd, _, _ in stack:
                os.close(fd)
                sub.close()

    def _open_copy(self, stack: list[tuple[DirHandle, int, Node, Iterator[Node]]], node: Node,
                   parent: int, name: str, src_dir: DirHandle) -> None:
        self.written += 1
        check_depth(node)
        sub = src_dir.child(node)
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=parent)
        except BaseException:
            sub.close()
            raise
        stack.append((sub, fd, node, iter(list(sub.entries.values()))))

    def _copy_entry(self, node: Node, parent: int, name: str) -> None:
        """Copy a file, symlink or special file."""
        self.written += 1
        st = node.st
        if node.kind == "file":
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.links:
                ldir, lname = self.links[key]
                try:
                    os.link(lname, name, src_dir_fd=ldir, dst_dir_fd=parent, follow_symlinks=False)
                    return
                except OSError:
                    pass
            src = node.open()
            try:
                dst = os.open(name, WR, 0o600, dir_fd=parent)
                try:
                    _copy_fd(src, dst, node.size)
                    _set_meta_fd(dst, node.meta)
                    _copy_xattrs(src, dst)
                    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
                finally:
                    os.close(dst)
            finally:
                os.close(src)
            if st.st_nlink > 1:
                self.links[key] = (parent, name)
        elif node.kind == "link":
            os.symlink(node.target(), name, dir_fd=parent)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=parent, follow_symlinks=False)
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=parent, follow_symlinks=False)
        elif node.kind == "special":
            os.mknod(name, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev, dir_fd=parent)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=parent, follow_symlinks=False)
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=parent)
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=parent)
    def _write(self, name: str, data: bytes, meta: tuple[int, int, int]) -> None:
        self.written += 1
        fd = os.open(name, WR, 0o600, dir_fd=self._parent())
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            _set_meta_fd(fd, meta)
        finally:
            os.close(fd)

    # -- the writer interface ---------------------------------------------
    def begin_dir(self, rel: str, name: str, meta: tuple[int, int, int], src: Node | None,
                  src_dir: DirHandle | None, ours: Node | None) -> None:
        times = (src.st.st_atime_ns, src.st.st_mtime_ns) if src is not None else None
        replace = ours is not None and ours.kind != "dir"
        self.stack.append(_Dir(rel, name, meta, times, ours, replace,
                               src_fd=src_dir.fd if src_dir is not None else -1))

    def end_dir(self, remains: bool) -> None:
        raise NotImplementedError

    def take(self, rel: str, name: str, node: Node, src_dir: DirHandle | None, ours: Node | None) -> None:
        if self.active:
            self._copy(node, self._parent(), name, src_dir)

    def content(self, rel: str, name: str, data: bytes, meta: tuple[int, int, int], ours: Node | None) -> None:
        if self.active:
            self._write(name, data, meta)

    def file_out(self, rel: str, name: str) -> str:
        """A path where a file strategy writes its output (then finish_file)."""
        self._parent()
        return os.path.join(self.root, *rel.split("/")[:-1], name)

    def finish_file(self, rel: str, name: str, meta: tuple[int, int, int]) -> None:
        self.written += 1
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._parent())
        try:
            _set_meta_fd(fd, meta)
        finally:
            os.close(fd)

    def set_root_meta(self, meta: tuple[int, int, int], src: Node | None) -> None:
        _set_meta_fd(self.rootfd, meta)
        if src is not None:
            os.utime(self.rootfd, ns=(src.st.st_atime_ns, src.st.st_mtime_ns))

    def close(self) -> None:
        for d in self.stack:
            if d.fd >= 0:
                os.close(d.fd)
        self.stack.clear()
        if self.rootfd >= 0:
            os.close(self.rootfd)
            self.rootfd = -1

    def abort(self) -> None:
        self.close()
        with contextlib.suppress(OSError):
            _rmtree(self.root)

    def _close_dir(self, d: _Dir, remains: bool) -> None:
        """Close a directory the walk has left: its metadata set last when it
        stays (writing into it would change its times)."""
        try:
            if remains:
                self._finish_dir(d)
        finally:
            os.close(d.fd)


class FullWriter(_Base):
    """The complete merged tree."""

    def begin_dir(self, rel: str, name: str, meta: Meta, src: Node | None,
                  src_dir: DirHandle | None, ours: Node | None) -> None:
        super().begin_dir(rel, name, meta, src, src_dir, ours)
        if self.active:
            self._ensure()

    def end_dir(self, remains: bool) -> None:
        d = self.stack.pop()
        if d.fd < 0:
            return
        self._close_dir(d, remains)
        if not remains:
            os.rmdir(d.name, dir_fd=self._parent())

    def keep(self, rel: str, name: str, ours: Node | None, src_dir: DirHandle | None) -> None:
        if self.active and ours is not None:
            self._copy(ours, self._parent(), name, src_dir)

    def delete(self, rel: str, name: str, ours: Node | None) -> None:
        pass


class UpperWriter(_Base):
    """Only what differs from ours, as a diff layer over ours in the format
    ``fmt`` (deletions and replacements marked the way it says)."""

    def __init__(self, root: str, fmt: DiffFormat) -> None:
        super().__init__(root)
        self.fmt = fmt

    def _replaces(self, fd: int) -> None:
        self.fmt.set_opaque(fd)

    def keep(self, rel: str, name: str, ours: Node | None, src_dir: DirHandle | None) -> None:
        pass

    def delete(self, rel: str, name: str, ours: Node | None) -> None:
        if self.active and ours is not None:
            self.written += 1
            self.fmt.make_whiteout(name, dir_fd=self._parent())

    def take(self, rel: str, name: str, node: Node, src_dir: DirHandle | None,
             ours: Node | None) -> None:
        if not self.active:
            return
        parent = self._parent()
        self._copy(node, parent, name, src_dir)
        if node.kind == "dir" and ours is not None:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
            try:
                self.fmt.set_opaque(fd)
            finally:
                os.close(fd)

    def end_dir(self, remains: bool) -> None:
        d = self.stack[-1]
        if not self.active:
            self.stack.pop()
            if d.fd >= 0:
                os.close(d.fd)
            return
        must = d.ours is None or d.ours.kind != "dir" or d.meta != d.ours.meta
        if remains and d.fd < 0 and must:
            self._ensure()
        self.stack.pop()
        if d.fd >= 0:
            self._close_dir(d, remains)
            if not remains:
                from volmerge.runtime.fsutil import rmtree_at

                rmtree_at(self._parent(), d.name)
        if not remains and d.ours is not None:
            self.delete(d.rel, d.name, d.ours)


class DryWriter:
    """Writes nothing; records a unified diff (ours -> result) per file."""

    def __init__(self, diff: bool) -> None:
        self.diff = diff
        self.diffs: dict[str, str] = {}
        self.stack: list[str] = []
        self.written = 0
        self._scratch: str | None = None

    @property
    def active(self) -> bool:  # a preview goes on after a conflict, to show everything
        return True

    @active.setter
    def active(self, value: bool) -> None:
        pass

    def _record(self, rel: str, old: bytes | None, new: bytes | None) -> None:
        if not self.diff:
            return
        self.diffs[rel] = unified_diff(rel, old, new)

    def begin_dir(self, rel: str, name: str, meta: Meta, src: Node | None,
                  src_dir: DirHandle | None, ours: Node | None) -> None:
        self.stack.append(rel)

    def end_dir(self, remains: bool) -> None:
        self.stack.pop()

    def keep(self, rel: str, name: str, ours: Node | None, src_dir: DirHandle | None) -> None:
        pass

    def take(self, rel: str, name: str, node: Node, src_dir: DirHandle | None,
             ours: Node | None) -> None:
        self.written += 1
        if self.diff and node.kind == "file":
            self._record(rel, _content(ours), _content(node))

    def delete(self, rel: str, name: str, ours: Node | None) -> None:
        if ours is not None:
            self.written += 1
            if self.diff and ours.kind == "file":
                self._record(rel, _content(ours), None)

    def content(self, rel: str, name: str, data: bytes, meta: Meta, ours: Node | None) -> None:
        self.written += 1
        if self.diff:
            self._record(rel, _content(ours), data)

    def file_out(self, rel: str, name: str) -> str:
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix="volmerge-dry-")
        p = os.path.join(self._scratch, str(len(self.diffs)) + "-" + name)
        return p

    def finish_file(self, rel: str, name: str, meta: tuple[int, int, int]) -> None:
        self.written += 1

    def set_root_meta(self, meta: Meta, src: Node | None) -> None:
        pass

    def close(self) -> None:
        if self._scratch is not None:
            with contextlib.suppress(OSError):
                _rmtree(self._scratch)
            self._scratch = None

    def abort(self) -> None:
        self.close()


def _content(node: Node | None) -> bytes | None:
    if node is None or node.kind != "file":
        return None
    if node.size > DIFF_LIMIT:
        return b"\0(large file)"
    return node.read()


def unified_diff(rel: str, old: bytes | None, new: bytes | None) -> str:
    """A unified diff from ours to the result; binary or huge content is summarised."""
    a, b = old or b"", new or b""
    if b"\0" in a[:8000] or b"\0" in b[:8000]:
        return f"Binary files a/{rel} and b/{rel} differ\n" if a != b else ""
    al = a.decode("utf-8", "surrogateescape").splitlines(keepends=True)
    bl = b.decode("utf-8", "surrogateescape").splitlines(keepends=True)
    out = []
    for line in difflib.unified_diff(al, bl, "/dev/null" if old is None else f"a/{rel}",
                                     "/dev/null" if new is None else f"b/{rel}"):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
