"""The overlay format, in one place: how a layer says "deleted" and "replaced".

Two spellings of the same two facts exist and volmerge meets both:

* **on disk** (overlayfs, what ``lowerdir``/``upperdir`` hold): a deleted
  name is a character device 0:0 (a *whiteout*); a directory that hides
  everything below it carries the xattr ``trusted.overlay.opaque=y``;
* **in a tar** (OCI image layers): a deleted ``NAME`` is an empty entry
  ``.wh.NAME``; an opaque directory holds an entry ``.wh..wh..opq``; other
  ``.wh..wh.*`` names are AUFS metadata without meaning here.

Every reader and writer of layers (layer extraction, the merge's upper
writer, volume squashing and diffs, the PostgreSQL data upper) asks this
module, so the rules cannot drift apart.  A leaf: it imports nothing of the
runtime (strategies may import it; pyproject.toml, import-linter).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

XATTR_PREFIX = "trusted.overlay."  # every overlay xattr: steers a mount, never copied from input
OPAQUE_XATTR = "trusted.overlay.opaque"
OPAQUE_VALUE = b"y"
WHITEOUT_DEV = 0  # os.makedev(0, 0)

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE_MARKER = ".wh..wh..opq"

PathOrFd = str | os.PathLike[str] | int


# -- on disk --------------------------------------------------------------------------

def is_whiteout(st: os.stat_result) -> bool:
    """Whether an lstat result is an overlay whiteout (a 0:0 character device)."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == WHITEOUT_DEV


def make_whiteout(name: str | os.PathLike[str], *, dir_fd: int | None = None,
                  mode: int = 0o000) -> None:
    """Create the whiteout ``name`` (in ``dir_fd`` when given); needs CAP_MKNOD."""
    os.mknod(name, stat.S_IFCHR | (mode & 0o7777), WHITEOUT_DEV, dir_fd=dir_fd)


def is_opaque(target: PathOrFd) -> bool:
    """Whether the directory ``target`` (a path, never followed, or a
    descriptor) is opaque; unreadable or unsupported counts as not."""
    try:
        if isinstance(target, int):
            return os.getxattr(target, OPAQUE_XATTR) == OPAQUE_VALUE
        return os.getxattr(target, OPAQUE_XATTR, follow_symlinks=False) == OPAQUE_VALUE
    except OSError:
        return False


def set_opaque(target: PathOrFd) -> None:
    """Mark the directory ``target`` (a path, never followed, or a descriptor) opaque."""
    if isinstance(target, int):
        os.setxattr(target, OPAQUE_XATTR, OPAQUE_VALUE)
    else:
        os.setxattr(target, OPAQUE_XATTR, OPAQUE_VALUE, follow_symlinks=False)


def shadow(upper: str | os.PathLike[str], lower: str | os.PathLike[str]) -> None:
    """Make the upper layer ``upper`` show only itself over ``lower``: a
    whiteout for each top-level entry of ``lower`` that ``upper`` lacks, and
    each top-level directory of ``upper`` opaque, so nothing of ``lower``
    shows through (data adopted over an image's seed, a PostgreSQL data
    directory rebuilt over the old one)."""
    up, low = os.fspath(upper), os.fspath(lower)
    have = set(os.listdir(up))
    for name in sorted(have):
        st = os.lstat(os.path.join(up, name))
        if stat.S_ISDIR(st.st_mode):
            set_opaque(os.path.join(up, name))
    for name in sorted(os.listdir(low)):
        if name not in have:
            make_whiteout(os.path.join(up, name), mode=0o600)


def is_overlay_xattr(name: str) -> bool:
    """An xattr of overlayfs itself (``trusted.overlay.*``): input may never
    set one (it would steer the mount), a copy never carries one over."""
    return name.startswith(XATTR_PREFIX)


def wants_opaque(xattrs: dict[str, bytes]) -> bool:
    """Whether a directory's xattrs (name -> value) mark it opaque."""
    return xattrs.get(OPAQUE_XATTR) == OPAQUE_VALUE


# -- in a tar (OCI) ---------------------------------------------------------------------

@dataclass(frozen=True)
class TarMarker:
    """What one tar entry's base name means for the overlay format.

    ``kind`` is ``"whiteout"`` (``target`` the deleted name), ``"opaque"``
    (its directory hides what is below) or ``"meta"`` (AUFS metadata: skip)."""

    kind: str
    target: str | None = None


def tar_marker(base: str) -> TarMarker | None:
    """The meaning of the tar entry base name ``base``: None for an ordinary
    entry; ValueError for a whiteout that names nothing (``.wh.``, ``.wh..``)."""
    if not base.startswith(WHITEOUT_PREFIX):
        return None
    if base == OPAQUE_MARKER:
        return TarMarker("opaque")
    if base.startswith(WHITEOUT_META_PREFIX):
        return TarMarker("meta")
    name = base[len(WHITEOUT_PREFIX):]
    if name in ("", ".", "..") or "/" in name:
        raise ValueError(f"invalid whiteout entry {base!r}")
    return TarMarker("whiteout", name)


def tar_whiteout_name(name: str) -> str:
    """The tar entry base name that deletes ``name`` (inverse of tar_marker)."""
    if name in ("", ".", "..") or "/" in name:
        raise ValueError(f"cannot white out {name!r}")
    return WHITEOUT_PREFIX + name
