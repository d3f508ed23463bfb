"""Differences between two points of one layer stack, read from the layers
themselves: no mount, and overlay's rules applied by hand (a whiteout or a
non-directory hides everything below it, an opaque directory hides the
directories below).  Only ``lstat`` is used, never through a symlink.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from volmerge.runtime.overlayfmt import is_opaque, is_whiteout

from .model import Change
from .tree import check_path_len, kind_of, same_content, walk


def resolve(top_first: list[Path], rel: str) -> tuple[str, os.stat_result] | None:
    """Where ``rel`` lives in the merged view of the layers, or None."""
    parts = rel.split("/")
    for layer in top_first:
        cur = os.fspath(layer)
        opaque = False
        missing = False
        for part in parts[:-1]:
            cur = os.path.join(cur, part)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                missing = True
                break
            if not stat.S_ISDIR(st.st_mode):
                return None  # a whiteout, file or symlink hides the path
            if is_opaque(cur):
                opaque = True
        if not missing:
            p = os.path.join(layer, rel)
            found: os.stat_result | None
            try:
                found = os.lstat(p)
            except (FileNotFoundError, NotADirectoryError):
                found = None
            if found is not None:
                return None if is_whiteout(found) else (p, found)
        if opaque:
            return None
    return None


def _children(top_first: list[Path], rel: str) -> list[str]:
    names: set[str] = set()
    for layer in top_first:
        try:
            names.update(os.listdir(os.path.join(layer, rel)))
        except (FileNotFoundError, NotADirectoryError):
            pass
    return sorted(names)


def subtree(top_first: list[Path], rel: str) -> list[str]:
    """Every path strictly below directory ``rel`` in the merged view."""
    out = []
    stack = [rel]
    while stack:
        d = stack.pop()
        for name in _children(top_first, d):
            r = f"{d}/{name}"
            check_path_len(top_first[0], r)
            hit = resolve(top_first, r)
            if hit is None:
                continue
            out.append(r)
            if stat.S_ISDIR(hit[1].st_mode):
                stack.append(r)
    return out


def diff_stacks(a: list[Path], b: list[Path]) -> list[Change]:
    """Changes from stack ``a`` to stack ``b`` (both bottom first; ``b``
    extends ``a`` with more layers on top)."""
    a_top, b_top = list(reversed(a)), list(reversed(b))
    candidates: set[str] = set()
    for layer in b[len(a):]:
        for rel, st in walk(layer):
            candidates.add(rel)
            plain_dir = stat.S_ISDIR(st.st_mode) and not is_opaque(os.path.join(layer, rel))
            if not plain_dir:
                hit = resolve(a_top, rel)
                if hit is not None and stat.S_ISDIR(hit[1].st_mode):
                    candidates.update(subtree(a_top, rel))
    return changes_among(a_top, b_top, candidates)


def changes_among(a_top: list[Path], b_top: list[Path], candidates: set[str]) -> list[Change]:
    """Which of ``candidates`` differ from stack ``a`` to stack ``b`` (both
    top first), in path order: added, deleted, or modified (kind, mode,
    owner, content)."""
    changes = []
    for rel in sorted(candidates):
        ra, rb = resolve(a_top, rel), resolve(b_top, rel)
        if ra is None and rb is None:
            continue
        if ra is None:
            assert rb is not None  # both None: skipped above
            changes.append(Change(rel, "added", kind_of(rb[1])))
        elif rb is None:
            changes.append(Change(rel, "deleted", kind_of(ra[1])))
        elif not same_content(ra[0], rb[0], ra[1], rb[1]):
            changes.append(Change(rel, "modified", kind_of(rb[1])))
    return changes
