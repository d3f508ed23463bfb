"""Line-level three-way merge: git's own (``git merge-file``), through libgit2.

Clean merges are byte-identical to ``git merge-file -p`` and conflicts are
where git has them, refined the way git's default "zealous alnum" level does
(tested differentially on generated triples): :mod:`.xmerge` calls the xdiff
merge that libgit2 carries.  Lines are split on ``\\n`` only, so CRLF endings,
a missing final newline and bytes that are not UTF-8 pass through untouched.
"""

from __future__ import annotations

from .base import ConflictInfo, FileReport, MergeOptions, MergeResult
from .identity import is_text, trivial_merge


def split_lines(data: bytes) -> list[bytes]:
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def conflicts_of(base: bytes, ours: bytes, theirs: bytes) -> list[ConflictInfo]:
    """git's conflicts, located by line in ours' numbering (ours' side of
    each conflict counted), with the base lines of the diff3 hunk around it."""
    from .xmerge import merge_regions

    refined = merge_regions(base, ours, theirs, diff3=False)
    hunks: list[tuple[int, int, tuple[bytes, ...]]] = []
    line = 1
    for r in merge_regions(base, ours, theirs, diff3=True):
        n = len(r.ours if r.ours is not None else r.clean)
        if r.conflict:
            hunks.append((line, line + n, r.base or ()))
        line += n
    out: list[ConflictInfo] = []
    line = 1
    for r in refined:
        if not r.conflict:
            line += len(r.clean)
            continue
        assert r.ours is not None
        n = len(r.ours)
        base_lines = next((b for s, e, b in hunks if s <= line < e or s == line), None)
        loc = f"line {line}" if n <= 1 else f"lines {line}-{line + n - 1}"
        out.append(ConflictInfo(loc, "changed on both sides", _show(r.ours), _show(r.theirs),
                                _show(base_lines)))
        line += n
    return out


def merge_text(path: str, base: bytes | None, ours: bytes, theirs: bytes, opts: MergeOptions,
               name: str = "text") -> MergeResult:
    """Three-way line merge; the MergeResult follows opts.on_conflict."""
    from .xmerge import merge_regions, render, xmerge

    done = trivial_merge(name, path, base, ours, theirs)
    if done is not None:
        return done
    notes = [] if base is not None else ["no base version: two-way merge against an empty base"]
    b = base or b""
    clean, out = xmerge(b, ours, theirs)
    if clean:
        return MergeResult(out, FileReport(path, "merged", name, notes=notes))
    conflicts = conflicts_of(b, ours, theirs)
    oc = opts.on_conflict
    if oc in ("ours", "theirs"):
        _c, res = xmerge(b, ours, theirs, favor=oc)
        return MergeResult(res, FileReport(path, "merged", name, conflicts,
                                           notes + [f"conflicts resolved: {oc}"]))
    if oc == "markers":
        res = render(merge_regions(b, ours, theirs, opts.diff3))
        return MergeResult(res, FileReport(path, "conflict", name, conflicts, notes))
    if oc == "keep-both":
        new = path.rsplit("/", 1)[-1] + ".volmerge-new"
        return MergeResult(ours, FileReport(path, "kept-both", name, conflicts, notes + [
            f"ours kept; the new release's file written beside it as {new}"]))
    return MergeResult(None, FileReport(path, "conflict", name, conflicts, notes))


def _show(lines: tuple[bytes, ...] | list[bytes] | None) -> str | None:
    if lines is None:
        return None
    s = b"".join(lines).decode("utf-8", "replace")
    return s if len(s) <= 400 else s[:400] + "..."


class TextStrategy:
    """Line-level three-way merge: git's (xdiff through libgit2), byte-identical when clean."""

    name = "text"

    def handles(self, path: str, sample: bytes) -> bool:
        return is_text(sample)

    def merge(self, path: str, base: bytes | None, ours: bytes, theirs: bytes,
              opts: MergeOptions) -> MergeResult:
        return merge_text(path, base, ours, theirs, opts, self.name)
