"""Shared helpers of the volume tests: tree digests and data writers."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def digest(root: Path) -> dict[str, tuple]:
    """Every entry below ``root`` with type, mode, owner and content hash
    (symlinks by target, never followed)."""
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    body = hashlib.sha256(f.read()).hexdigest()
            else:
                body = st.st_rdev
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, body)
    return out


def write(root: Path, files: dict[str, str | bytes | None]) -> None:
    """Write (or, for None, delete) files below ``root``, making parents."""
    for rel, data in files.items():
        p = root / rel
        if data is None:
            if p.is_dir() and not p.is_symlink():
                import shutil

                shutil.rmtree(p)
            else:
                p.unlink()
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)


def seed_dir(base: Path) -> Path:
    """An image's content at the mount path, as a plain directory."""
    s = base / "seed"
    write(s, {
        "etc/app.conf": "port = 80\nmode = prod\n",
        "etc/keep.conf": "keep\n",
        "data/README": "initial data\n",
        "data/old/a.txt": "a\n",
        "data/old/b.txt": "b\n",
    })
    os.symlink("app.conf", s / "etc/link.conf")
    return s


def deep_tree(top: Path, levels: int, leaf: str = "f") -> None:
    """``top/d/d/.../d/<leaf>``, ``levels`` directories deep, built through
    directory descriptors (its paths are far longer than PATH_MAX)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir("d", dir_fd=fd)
            sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        os.close(os.open(leaf, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
