"""One entry of an input tree, reached only through directory file
descriptors, never through a path that could follow a symlink.

Every open uses ``O_NOFOLLOW`` relative to the parent directory's descriptor,
and every file opened for reading is checked to be the regular file that was
listed (same inode), so a tree whose entries point at /etc/shadow, or that is
changed under us, can never make volmerge read or write outside it.  Device
files, FIFOs and sockets are compared by metadata and never opened.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field

from .errors import BadInput

SMALL = 256 * 1024  # files up to this size are compared by content, bigger ones by sha256
CHUNK = 1024 * 1024
MAX_DEPTH = 1000  # directory levels a merge descends (see check_depth)
RD = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


def kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return "special"


@dataclass
class Node:
    side: str  # "base" | "ours" | "theirs"
    rel: str  # '/'-separated path relative to the tree root
    dirfd: int  # the parent directory (owned by the walk)
    name: str
    st: os.stat_result
    kind: str = field(init=False)
    _target: str | None = field(default=None, init=False, repr=False)
    _data: bytes | None = field(default=None, init=False, repr=False)
    _digest: bytes | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.kind = kind_of(self.st.st_mode)

    @property
    def where(self) -> str:
        """For messages: ``side/rel``, cut when a deep tree makes it long."""
        return _cut(f"{self.side}/{self.rel}")

    # -- metadata ---------------------------------------------------------
    @property
    def meta(self) -> tuple[int, int, int]:
        return (stat.S_IMODE(self.st.st_mode), self.st.st_uid, self.st.st_gid)

    @property
    def size(self) -> int:
        return self.st.st_size

    def target(self) -> str:
        if self._target is None:
            self._target = os.readlink(self.name, dir_fd=self.dirfd)
        return self._target

    # -- content ----------------------------------------------------------
    def open(self) -> int:
        """An fd of this regular file, verified to be the listed inode."""
        try:
            fd = os.open(self.name, RD, dir_fd=self.dirfd)
        except OSError as exc:
            raise BadInput(f"cannot read {self.where}: {exc.strerror}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_ino != self.st.st_ino or st.st_dev != self.st.st_dev:
            os.close(fd)
            raise BadInput(f"{self.where} changed while merging")
        return fd

    def read(self, limit: int | None = None) -> bytes:
        """The whole content (or its first ``limit`` bytes)."""
        if limit is None and self._data is not None:
            return self._data
        fd = self.open()
        try:
            if limit is not None:
                return os.pread(fd, limit, 0)
            parts, n = [], 0
            while True:
                try:
                    b = os.read(fd, max(CHUNK, self.size - n + 1))
                except OSError as exc:
                    raise BadInput(f"cannot read {self.where}: {exc.strerror}") from None
                if not b:
                    break
                parts.append(b)
                n += len(b)
            data = b"".join(parts)
        finally:
            os.close(fd)
        if len(data) <= SMALL:
            self._data = data
        return data

    def digest(self) -> bytes:
        """The content itself for small files, its sha256 for large ones."""
        if self._digest is None:
            if self.size <= SMALL:
                self._digest = self.read()
            else:
                h = hashlib.sha256()
                fd = self.open()
                try:
                    while b := os.read(fd, CHUNK):
                        h.update(b)
                except OSError as exc:
                    raise BadInput(f"cannot read {self.where}: {exc.strerror}") from None
                finally:
                    os.close(fd)
                self._digest = b"sha256:" + h.digest()
        return self._digest

    def sample(self) -> bytes:
        return self._data[:8192] if self._data is not None else self.read(8192)


def content_equal(a: Node, b: Node) -> bool:
    """Same content: sizes first, then content (mtime never trusted)."""
    if a.kind != b.kind:
        return False
    if a.kind == "file":
        if a.size != b.size:
            return False
        if a.st.st_ino == b.st.st_ino and a.st.st_dev == b.st.st_dev:
            return True
        return a.digest() == b.digest()
    if a.kind == "link":
        return a.target() == b.target()
    if a.kind == "special":
        return stat.S_IFMT(a.st.st_mode) == stat.S_IFMT(b.st.st_mode) and a.st.st_rdev == b.st.st_rdev
    return True  # directories: their children are compared by the walk


def same(a: Node | None, b: Node | None) -> bool:
    """Same entry for merge purposes: kind, content and ownership/mode
    (directories: metadata only)."""
    if a is None or b is None:
        return a is None and b is None
    if a.kind != b.kind:
        return False
    if a.kind == "link":
        if (a.st.st_uid, a.st.st_gid) != (b.st.st_uid, b.st.st_gid):
            return False
    elif a.meta != b.meta:
        return False
    return content_equal(a, b)


class DirHandle:
    """An open directory of one input tree and its listing."""

    def __init__(self, side: str, rel: str, fd: int) -> None:
        self.side, self.rel, self.fd = side, rel, fd
        self.entries: dict[str, Node] = {}
        try:
            with os.scandir(fd) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    r = f"{rel}/{e.name}" if rel else e.name
                    self.entries[e.name] = Node(side, r, fd, e.name, st)
        except OSError as exc:
            os.close(fd)
            where = _cut(f"{side}/{rel or '.'}")
            raise BadInput(f"cannot list {where}: {exc.strerror}") from None

    @classmethod
    def open_root(cls, side: str, path: str) -> DirHandle:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise BadInput(f"cannot open {side} {path}: {exc.strerror}") from None
        return cls(side, "", fd)

    def child(self, node: Node) -> DirHandle:
        try:
            fd = os.open(node.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=self.fd)
        except OSError as exc:
            raise BadInput(f"cannot open {node.where}: {exc.strerror}") from None
        st = os.fstat(fd)
        if st.st_ino != node.st.st_ino or st.st_dev != node.st.st_dev:
            os.close(fd)
            raise BadInput(f"{node.where} changed while merging")
        return DirHandle(self.side, node.rel, fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def root_node(side: str, path: str) -> tuple[Node, int]:
    """The node of a single file given by the user, and its parent's fd."""
    parent, name = os.path.split(os.path.abspath(path))
    fd = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    return Node(side, name, fd, name, st), fd


def check_depth(node: Node) -> None:
    """BadInput for a directory nested deeper than MAX_DEPTH below its tree.

    The merge holds a verified descriptor for every open directory of each
    side (that is what keeps it from being steered by symlinks or swaps), so
    depth costs descriptors; a tree a container nested thousands of levels
    deep is refused, cleanly, before they run out."""
    if node.rel.count("/") >= MAX_DEPTH:
        raise BadInput(f"{node.where}: directories nested more than {MAX_DEPTH} levels deep "
                       f"(volmerge merges trees up to {MAX_DEPTH} levels)")


def _cut(path: str) -> str:
    return path if len(path) <= 120 else f"{path[:60]}...{path[-60:]}"


def deep_equal(a: DirHandle, b: DirHandle) -> bool:
    """Two directory subtrees hold the same entries (used for type changes).
    Iterative: an explicit stack of the open directory pairs."""
    if set(a.entries) != set(b.entries):
        return False
    stack = [(a, b, iter(list(a.entries)))]
    try:
        while stack:
            x, y, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if x is not a:
                    x.close()
                    y.close()
                continue
            n, m = x.entries[name], y.entries[name]
            if not same(n, m):
                return False
            if n.kind == "dir":
                check_depth(n)
                cx = x.child(n)
                try:
                    cy = y.child(m)
                except BaseException:
                    cx.close()
                    raise
                stack.append((cx, cy, iter(list(cx.entries))))
                if set(cx.entries) != set(cy.entries):
                    return False
        return True
    finally:
        for x, y, _ in stack:
            if x is not a:
                x.close()
                y.close()
