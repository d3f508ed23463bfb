"""Build and read small trees for the strategy tests."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any


class Link(str):
    """A symlink target in a tree spec."""


def build(root: Path, spec: dict[str, Any]) -> Path:
    """spec: name -> bytes (file) | Link(target) | dict (directory)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, v in spec.items():
        p = root / name
        if isinstance(v, dict):
            build(p, v)
        elif isinstance(v, Link):
            os.symlink(str(v), p)
        else:
            p.write_bytes(v)
    return root


def read(root: Path) -> dict[str, Any]:
    """The inverse of build (plus ('dev', rdev) for device files)."""
    out: dict[str, Any] = {}
    for e in os.scandir(root):
        st = e.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            out[e.name] = Link(os.readlink(e.path))
        elif stat.S_ISDIR(st.st_mode):
            out[e.name] = read(Path(e.path))
        elif stat.S_ISREG(st.st_mode):
            out[e.name] = Path(e.path).read_bytes()
        else:
            out[e.name] = ("special", stat.S_IFMT(st.st_mode), st.st_rdev)
    return out


def three(tmp: Path, base: dict, ours: dict, theirs: dict) -> tuple[Path, Path, Path]:
    return build(tmp / "base", base), build(tmp / "ours", ours), build(tmp / "theirs", theirs)
