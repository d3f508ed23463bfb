"""Whole-file strategies: no content merge, only a choice of side.

One side changed -> that side; both changed differently -> ``ours`` keeps
ours, ``theirs`` takes theirs, ``binary`` reports a conflict (which
--on-conflict then resolves).  The tree merge recognises them by ``pick`` and
decides from file identity alone, so large files are never read into memory.
"""

from __future__ import annotations

from .base import ConflictInfo, FileReport, MergeOptions, MergeResult
from .identity import trivial_merge


class _Whole:
    name = "whole"
    pick: str | None = None  # "ours" | "theirs" | None (conflict)

    def handles(self, path: str, sample: bytes) -> bool:
        return True

    def merge(self, path: str, base: bytes | None, ours: bytes, theirs: bytes,
              opts: MergeOptions) -> MergeResult:
        done = trivial_merge(self.name, path, base, ours, theirs)
        if done is not None:
            return done
        return resolve_whole(self.name, self.pick, path, ours, theirs, opts)


def resolve_whole(name: str, pick: str | None, path: str, ours: bytes, theirs: bytes,
                  opts: MergeOptions) -> MergeResult:
    if pick == "ours":
        return MergeResult(ours, FileReport(path, "kept-ours", name, notes=["both changed: kept ours"]))
    if pick == "theirs":
        return MergeResult(theirs, FileReport(path, "took-theirs", name, notes=["both changed: took theirs"]))
    conflict = ConflictInfo("whole file", "changed on both sides")
    oc = opts.on_conflict
    if oc == "ours":
        return MergeResult(ours, FileReport(path, "kept-ours", name, [conflict], ["conflict resolved: ours"]))
    if oc == "theirs":
        return MergeResult(theirs, FileReport(path, "took-theirs", name, [conflict], ["conflict resolved: theirs"]))
    if oc in ("keep-both", "markers"):
        # markers make no sense in binary data: keep both, like dpkg's .dpkg-dist
        return MergeResult(ours, FileReport(path, "kept-both", name, [conflict]))
    return MergeResult(None, FileReport(path, "conflict", name, [conflict]))


class OursStrategy(_Whole):
    """Whole file; when both sides changed, keep ours (the live data)."""

    name = "ours"
    pick = "ours"


class TheirsStrategy(_Whole):
    """Whole file; when both sides changed, take theirs (the new image)."""

    name = "theirs"
    pick = "theirs"


class BinaryStrategy(_Whole):
    """Whole file; when both sides changed, a conflict."""

    name = "binary"
    pick = None
