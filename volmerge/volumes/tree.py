"""File-tree work on layer directories: seeding copies, overlay-aware squashing,
safe walks.  Nothing here ever follows a symlink found inside a layer.

Squashing is a *hard-link farm*: frozen layers are immutable (overlayfs never
writes to a lower layer; a write copies the file up into the live layer), so
the squashed layer can link the very same inodes instead of copying bytes.
That makes compaction cost O(entries) instead of O(bytes) and preserves modes,
owners, xattrs, hard links and sparse files exactly, because they *are* the
same inodes.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from volmerge.runtime import fsutil, overlayfmt

from ..errors import BadInput, NotDone

PATH_MAX = os.pathconf("/", "PC_PATH_MAX")


def kind_of(st: os.stat_result) -> str:
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    return "other"


def walk(top: str | os.PathLike[str], rel: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """Yield ``(relative path, lstat)`` for every entry below ``top``, parents
    before children, never descending through a symlink (runtime.fsutil.walk:
    iterative, through directory descriptors).  The callers then work on
    paths, so a path longer than the system's limit stops them with NotDone
    instead of an ENAMETOOLONG traceback."""
    top = os.fspath(top)
    base = os.path.join(top, rel) if rel else top
    if not os.path.isdir(base) or os.path.islink(base):
        return
    for e in fsutil.walk(base):
        r = f"{rel}/{e.rel}" if rel else e.rel
        check_path_len(top, r)
        yield r, e.st


def check_path_len(top: str | os.PathLike[str], rel: str) -> None:
    """NotDone when ``top/rel`` is longer than the kernel takes in a path
    (a container can nest directories far deeper than that)."""
    if len(os.fsencode(top)) + len(os.fsencode(rel)) + 1 >= PATH_MAX:
        raise NotDone(f"the volume holds a path nested too deep to process "
                      f"(over {PATH_MAX} bytes): {fsutil.short(rel)}")


def safe_lstat(root: str | os.PathLike[str], rel: str) -> os.stat_result | None:
    """lstat ``root/rel`` only if every ancestor inside ``root`` is a real
    directory (not a symlink): never resolves a path out of the tree."""
    parts = [p for p in rel.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise BadInput(f"invalid path in volume: {rel!r}")
    cur = os.fspath(root)
    for i, part in enumerate(parts):
        cur = os.path.join(cur, part)
        try:
            st = os.lstat(cur)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            return None
    return os.lstat(cur) if parts else os.lstat(root)


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the *content* of ``src`` into the existing empty dir ``dst`` with
    every attribute, like ``cp -a`` (modes, owners, xattrs, hard links, sparse
    files; symlinks are copied as links, never followed), through directory
    descriptors: a tree of any depth a container wrote is copied."""
    if src.is_symlink() or not src.is_dir():
        raise BadInput(f"seed {src} is not a directory")
    try:
        fsutil.copy_tree(src, dst)
    except OSError as exc:
        raise NotDone(f"copying {src}: {exc.strerror or exc}") from None


def copy_meta(src: str, dst: str, st: os.stat_result, *, keep_opaque: bool = False) -> None:
    """Make directory ``dst`` carry ``src``'s owner, mode and xattrs."""
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    want = {k: os.getxattr(src, k, follow_symlinks=False)
            for k in os.listxattr(src, follow_symlinks=False)}
    for k in os.listxattr(dst, follow_symlinks=False):
        if k not in want and not (keep_opaque and k == overlayfmt.OPAQUE_XATTR):
            os.removexattr(dst, k, follow_symlinks=False)
    for k, v in want.items():
        os.setxattr(dst, k, v, follow_symlinks=False)


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _meta_at(fd: int, st: os.stat_result, want: dict[str, bytes], *, keep_opaque: bool) -> None:
    """Make the open directory ``fd`` carry owner, mode and exactly the
    xattrs ``want`` (plus its opaque marker with ``keep_opaque``)."""
    os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    for k in os.listxattr(fd):
        if k not in want and not (keep_opaque and k == overlayfmt.OPAQUE_XATTR):
            os.removexattr(fd, k)
    for k, v in want.items():
        os.setxattr(fd, k, v)


def _link_at(e: fsutil.Entry, parent: int) -> None:
    """Hard-link the layer's entry into ``parent`` (a copy when the inode has
    too many links or lives on another filesystem)."""
    try:
        os.link(e.name, e.name, src_dir_fd=e.dirfd, dst_dir_fd=parent, follow_symlinks=False)
        return
    except OSError as exc:
        if exc.errno not in (errno.EMLINK, errno.EXDEV):
            raise
    if overlayfmt.is_whiteout(e.st):
        overlayfmt.make_whiteout(e.name, dir_fd=parent)
        return
    fsutil.copy_entry(e, parent)


def apply_layer(layer: Path, out: Path) -> None:
    """Apply overlay diff ``layer`` on top of diff ``out`` so that ``out``
    becomes the squash of both (still a diff: whiteouts and opaque dirs kept,
    so the layers *below* stay hidden where they were).  Through directory
    descriptors on both sides (fsutil.walk, fsutil.DirStack): any depth."""
    dst = fsutil.DirStack(os.open(out, _DIR))
    try:
        for e in fsutil.walk(layer, post=True):
            cur = dst.top()
            if e.after:
                dst.finish()  # owner and mode again, then the times, children done
                continue
            try:
                dst_st: os.stat_result | None = os.stat(e.name, dir_fd=cur, follow_symlinks=False)
            except FileNotFoundError:
                dst_st = None
            if not e.is_dir:
                if dst_st is not None:
                    fsutil.rmtree_at(cur, e.name)
                _link_at(e, cur)
                continue
            sfd = os.open(e.name, _DIR, dir_fd=e.dirfd)
            try:
                want = fsutil.xattrs(sfd)
            finally:
                os.close(sfd)
            keep_opaque = mark_opaque = False
            if overlayfmt.wants_opaque(want):
                if dst_st is not None:
                    fsutil.rmtree_at(cur, e.name)
                os.mkdir(e.name, 0o700, dir_fd=cur)
            elif dst_st is not None and stat.S_ISDIR(dst_st.st_mode):
                keep_opaque = True
            else:
                if dst_st is not None:  # a file or whiteout in the run hid what is below
                    fsutil.rmtree_at(cur, e.name)
                    mark_opaque = True
                os.mkdir(e.name, 0o700, dir_fd=cur)
            fd = os.open(e.name, _DIR, dir_fd=cur)
            try:
                _meta_at(fd, e.st, want, keep_opaque=keep_opaque)
                if mark_opaque:
                    overlayfmt.set_opaque(fd)
            except BaseException:
                os.close(fd)
                raise
            dst.push(fd, e.st, {})
    finally:
        dst.close()


def squash(layers_bottom_first: list[Path], out: Path) -> None:
    """Build in the empty dir ``out`` one diff equal to the given run of diffs."""
    for layer in layers_bottom_first:
        apply_layer(layer, out)
    top = layers_bottom_first[-1]
    st = os.lstat(top)
    copy_meta(os.fspath(top), os.fspath(out), st)
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))


def same_content(a: str, b: str, sa: os.stat_result, sb: os.stat_result) -> bool:
    """Compare two entries of the same kind, never following symlinks."""
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        return False
    if (stat.S_IMODE(sa.st_mode), sa.st_uid, sa.st_gid) != (
        stat.S_IMODE(sb.st_mode), sb.st_uid, sb.st_gid,
    ):
        return False
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) == os.readlink(b)
    if stat.S_ISDIR(sa.st_mode):
        return True
    if not stat.S_ISREG(sa.st_mode):
        return sa.st_rdev == sb.st_rdev
    if sa.st_size != sb.st_size:
        return False
    fa = os.open(a, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fb = os.open(b, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            while True:
                ca = os.read(fa, 1 << 20)
                cb = os.read(fb, 1 << 20)
                if ca != cb:
                    return False
                if not ca:
                    return True
        finally:
            os.close(fb)
    finally:
        os.close(fa)
