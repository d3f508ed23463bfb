"""Read-only views of an image's root file system (the *theirs* of a merge)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from volmerge.runtime import fsutil
from volmerge.runtime import sys as rsys

if TYPE_CHECKING:
    from volmerge.runtime.images import Image
    from volmerge.runtime.store import Store


@contextlib.contextmanager
def image_root(store: Store, image: Image) -> Iterator[Path]:
    """The image's merged root, mounted read-only for the duration."""
    d = store.tmpdir("image-view-")
    target = d / "root"
    target.mkdir()
    lowers = [str(p) for p in image.lower_dirs()]
    if not lowers:
        try:
            yield target
        finally:
            fsutil.rmtree(d)
        return
    rsys.mount_overlay(target, lowers, readonly=True)
    try:
        yield target
    finally:
        rsys.umount(target, rsys.MNT_DETACH)
        fsutil.rmtree(d)


def inside(root: Path, path: str) -> Path | None:
    """``path`` inside ``root`` (symlinks resolved within it), or None when
    the image has nothing there or something other than a directory."""
    p = rsys.path_in_root(root, path)
    if p.is_dir() and not p.is_symlink():
        return p
    return None


def read_file(root: Path, path: str, limit: int = 1 << 20) -> bytes | None:
    p = rsys.path_in_root(root, path)
    try:
        if not p.is_file() or p.is_symlink():
            return None
        with open(p, "rb") as f:
            return f.read(limit)
    except OSError:
        return None


def empty_dir(store: Store) -> contextlib.AbstractContextManager[Path]:
    @contextlib.contextmanager
    def cm() -> Iterator[Path]:
        d = store.tmpdir("empty-")
        try:
            os.chmod(d, 0o755)
            yield d
        finally:
            fsutil.rmtree(d)

    return cm()
