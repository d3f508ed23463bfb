"""The merge again, for only the paths the old version wrote after the merge
was staged (staging.py): the switch's share of the merge work.

The staged upper was merged against the snapshot taken while the old version
served (``ours`` as of ``-prep``).  At the switch the layer frozen between
that snapshot and the one after the stop holds exactly what was written in
between; the volume's own diff lists it.  Those paths (with a SQLite
database's sidecar files, which belong to it) are merged again — base, ours
as of the stop and theirs, each cut down to those paths and the directories
above them, so that the policy sees the same relative paths — and their
results replace the staged ones at those paths.

Path by path is only the same as the whole merge when every path stands
alone: no directory changed shape (added, removed, changed its metadata),
every directory above a path is a directory on every side and plain (not a
whiteout, opaque or replaced) in the staged upper, and no path ends in a
conflict (``keep-both`` picks names from the whole directory).  Anything
else raises :class:`Unsplittable` and the caller merges the whole volume
again, as an upgrade without staging does.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from volmerge.runtime import fsutil, overlayfmt

from ..errors import NotDone

if TYPE_CHECKING:
    from volmerge.strategies.policy import Policy

    from ..volumes.model import Change

SIDECARS = ("-journal", "-wal", "-shm")


class Unsplittable(Exception):
    """The changed paths cannot be merged one by one (see the module doc)."""


def units(changes: list[Change]) -> list[str]:
    """The paths to merge again: each changed path that is not a directory,
    with the sidecar files of a database among them (``x.db`` brings
    ``x.db-wal``, ``x.db-shm`` and ``x.db-journal``, and a sidecar brings its
    database).  A directory change cannot be split: Unsplittable."""
    out: set[str] = set()
    for ch in changes:
        if ch.type == "dir":
            raise Unsplittable(f"directory {ch.path} {ch.kind}")
        main = ch.path
        for s in SIDECARS:
            if main.endswith(s):
                main = main[: -len(s)]
                break
        out.add(main)
        out.update(main + s for s in SIDECARS)
    return sorted(out)


def _lstat(root: Path, rel: str) -> os.stat_result | None:
    try:
        return os.lstat(root / rel)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise Unsplittable(f"{rel}: a parent is not a directory") from None


def _ancestors(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def check_parents(paths: list[str], sides: dict[str, Path | None], staged: Path) -> None:
    """Every directory above each path is a directory on every side (base
    may lack it: the others added it; theirs may lack it with base: ours
    added it and keeps it) and plain in the staged upper.
    Components are read with lstat only: a symlink a container made is
    never followed."""
    for rel in paths:
        for a in _ancestors(rel):
            found = {side: _lstat(root, a) if root is not None else None
                     for side, root in sides.items()}
            for side, st in found.items():
                if st is None and (side == "base" or (side == "theirs" and found["base"] is None)):
                    continue  # added by theirs (or both), or by ours alone: merged child by child
                if st is None or not stat.S_ISDIR(st.st_mode):
                    raise Unsplittable(f"{a} is not a directory in {side}")
            st = _lstat(staged, a)
            if st is not None and (not stat.S_ISDIR(st.st_mode)
                                   or overlayfmt.is_opaque(str(staged / a))):
                raise Unsplittable(f"{a} is not a plain directory in the staged merge")


def _copy_dir_meta(src: Path, dst: Path) -> None:
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    for k in os.listxattr(src, follow_symlinks=False):
        if k.startswith("trusted.overlay."):
            continue
        os.setxattr(dst, k, os.getxattr(src, k, follow_symlinks=False), follow_symlinks=False)


def _copy_entry(src: Path, dst: Path) -> None:
    """One file or symlink, with owner, mode and times (never followed)."""
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            with open(dst, "xb") as out, os.fdopen(os.dup(fd), "rb") as inp:
                shutil.copyfileobj(inp, out, 1 << 20)
        finally:
            os.close(fd)
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    else:
        raise Unsplittable(f"{src.name} is neither a file nor a symlink")
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def sparse(root: Path, paths: list[str], out: Path) -> None:
    """``out`` (made here) holds ``root``'s entries at ``paths`` and the
    directories above them (their owner and mode), nothing else."""
    out.mkdir()
    _copy_dir_meta(root, out)
    for rel in paths:
        st = _lstat(root, rel)
        if st is None:
            continue
        if stat.S_ISDIR(st.st_mode):
            raise Unsplittable(f"{rel} is a directory")
        for a in _ancestors(rel):
            if not (out / a).exists():
                (out / a).mkdir()
                _copy_dir_meta(root / a, out / a)
        _copy_entry(root / rel, out / rel)


def splice(partial: Path, staged: Path, paths: list[str]) -> None:
    """The staged upper takes the partial merge's result at ``paths``:
    whatever it had there goes, then the partial's entry (a file, a symlink
    or a whiteout) moves in; a directory above it that the staged upper
    lacks is made with the partial's owner and mode."""
    for rel in paths:
        target = staged / rel
        st = _lstat(staged, rel)
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                fsutil.rmtree(target)
            else:
                os.unlink(target)
        if _lstat(partial, rel) is None:
            continue
        for a in _ancestors(rel):
            if not os.path.lexists(staged / a):
                (staged / a).mkdir()
                _copy_dir_meta(partial / a, staged / a)
        os.rename(partial / rel, target)


def merge_paths(base: Path | None, ours: Path, theirs: Path, staged: Path, scratch: Path,
                paths: list[str], *, policy: Policy | None, on_conflict: str) -> dict[str, Any]:
    """Merge ``paths`` again (ours as of the stop) and splice the result into
    ``staged``; returns the partial merge's report as JSON.  ``scratch`` is
    an empty directory on the staged upper's file system."""
    from volmerge.runtime.atomicfile import syncfs
    from volmerge.strategies.tree import MergeConflict, merge_trees

    check_parents(paths, {"base": base, "ours": ours, "theirs": theirs}, staged)
    sides = {}
    for side, root in (("base", base), ("ours", ours), ("theirs", theirs)):
        if root is not None:
            sparse(root, paths, scratch / side)
            sides[side] = scratch / side
    try:
        rep = merge_trees(sides.get("base"), sides["ours"], sides["theirs"], scratch / "out",
                          policy=policy, on_conflict=on_conflict, mode="upper")
    except MergeConflict as exc:
        if on_conflict == "fail":
            raise NotDone(f"{len(exc.report.conflicts)} conflict(s), first at "
                          f"{exc.report.conflicts[0].path}; nothing was changed",
                          report=exc.report.to_json()) from None
        raise Unsplittable("a conflict") from None
    if any(f.conflicts for f in rep.files):
        raise Unsplittable("a conflict: keep-both and markers decide names per directory")
    splice(scratch / "out", staged, paths)
    syncfs(staged)
    report: dict[str, Any] = rep.to_json()
    return report
