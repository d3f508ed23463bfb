"""Line-level three-way merge (merge3), shaped to match ``git merge-file``.

Clean merges are byte-identical to ``git merge-file -p`` (tested
differentially).  Conflicts are refined the way git's default "zealous alnum"
level does: lines both sides agree on are moved out of the conflict, and
conflicts separated only by up to three lines, or by lines without a letter
or digit, become one.  diff3 style (with the base section) is not refined,
like git.  Lines are split on ``\\n`` only, so CRLF endings, a missing final
newline and bytes that are not UTF-8 pass through untouched.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import merge3

from .base import ConflictInfo, FileReport, MergeOptions, MergeResult
from .identity import is_text, trivial_merge

_ALNUM = re.compile(rb"[A-Za-z0-9]")


def split_lines(data: bytes) -> list[bytes]:
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


class _Matcher(difflib.SequenceMatcher):
    """difflib without the 'popular lines are junk' heuristic, which would
    make long files with repeated lines (blank lines, braces) merge badly."""

    def __init__(self, isjunk=None, a=(), b=(), autojunk: bool = False) -> None:  # type: ignore[no-untyped-def]
        super().__init__(isjunk, a, b, autojunk=False)


@dataclass
class Chunk:
    kind: str  # "clean" | "change" | "same" | "conflict"
    lines: list[bytes]  # non-conflicts: result lines
    base: list[bytes] | None = None
    ours: list[bytes] | None = None
    theirs: list[bytes] | None = None
    i1: int = 0  # where the conflict starts in ours (line index)
    i2: int = 0  # ... and in theirs (git picks marker line endings from there)


def _regions(m: merge3.Merge3) -> list[tuple[str, int, int, int, int, int, int]]:
    """merge3's regions, with positions in all three files."""
    out = []
    iz = ia = ib = 0
    for zmatch, zend, amatch, aend, bmatch, bend in m.find_sync_regions():
        if amatch - ia or bmatch - ib:
            a, b, z = m.a[ia:amatch], m.b[ib:bmatch], m.base[iz:zmatch]
            if a == b:
                kind = "same"
            elif a == z:
                kind = "b"
            elif b == z:
                kind = "a"
            else:
                kind = "conflict"
            out.append((kind, iz, zmatch, ia, amatch, ib, bmatch))
            ia, ib = amatch, bmatch
        iz = zmatch
        if zend > zmatch:
            out.append(("unchanged", zmatch, zend, amatch, aend, bmatch, bend))
            iz, ia, ib = zend, aend, bend
    return out


def _chunks(base: list[bytes], ours: list[bytes], theirs: list[bytes], refine: bool) -> list[Chunk]:
    out: list[Chunk] = []
    m = merge3.Merge3(base, ours, theirs, sequence_matcher=_Matcher)
    for kind, z0, z1, a0, a1, b0, b1 in _regions(m):
        if kind == "conflict":
            b, a, t = base[z0:z1], ours[a0:a1], theirs[b0:b1]
            if refine and a and t:
                out.extend(_refine(b, a, t, a0, b0))
            else:
                out.append(Chunk("conflict", [], b, a, t, a0, b0))
        elif kind == "same":
            out.append(Chunk("same", ours[a0:a1]))
        elif kind == "unchanged":
            out.append(Chunk("clean", base[z0:z1]))
        elif kind == "a":
            out.append(Chunk("change", ours[a0:a1]))
        else:
            out.append(Chunk("change", theirs[b0:b1]))
    return _simplify(out) if refine else out


def _refine(base: list[bytes], ours: list[bytes], theirs: list[bytes], i1: int, i2: int) -> list[Chunk]:
    """Split one conflict into the parts where ours and theirs really differ."""
    res: list[Chunk] = []
    for op, a0, a1, b0, b1 in _Matcher(None, ours, theirs).get_opcodes():
        if op == "equal":
            res.append(Chunk("clean", ours[a0:a1]))
        else:
            res.append(Chunk("conflict", [], base, ours[a0:a1], theirs[b0:b1], i1 + a0, i2 + b0))
    return res


def _simplify(chunks: list[Chunk]) -> list[Chunk]:
    """git's xdl_simplify_non_conflicts at the ZEALOUS_ALNUM level."""
    res: list[Chunk] = []
    for c in chunks:
        if c.kind == "clean" and res and res[-1].kind == "clean":
            res[-1] = Chunk("clean", res[-1].lines + c.lines)
            continue
        if (
            c.kind == "conflict" and len(res) >= 2 and res[-1].kind == "clean"
            and res[-2].kind == "conflict"
            and (len(res[-1].lines) <= 3 or not any(_ALNUM.search(ln) for ln in res[-1].lines))
        ):
            between = res.pop().lines
            prev = res.pop()
            assert prev.ours is not None and prev.theirs is not None
            assert c.ours is not None and c.theirs is not None
            c = Chunk("conflict", [], prev.base, prev.ours + between + c.ours,
                      prev.theirs + between + c.theirs, prev.i1, prev.i2)
        res.append(c)
    return res


def _is_eol_crlf(lines: list[bytes], i: int) -> int:
    """git's is_eol_crlf: 1 CRLF, 0 LF, -1 cannot tell."""
    n = len(lines)
    if i < n - 1:
        return int(len(lines[i]) > 1 and lines[i].endswith(b"\r\n"))
    if not n:
        return -1
    if lines[i].endswith(b"\n"):
        return int(lines[i].endswith(b"\r\n"))
    if not i:
        return -1
    return int(lines[i - 1].endswith(b"\r\n"))


def _needs_cr(c: Chunk, files: tuple[list[bytes], list[bytes], list[bytes]]) -> bool:
    base, ours, theirs = files
    nc = _is_eol_crlf(ours, c.i1 - 1 if c.i1 else 0)
    if nc:
        nc = _is_eol_crlf(theirs, c.i2 - 1 if c.i2 else 0)
    if nc:
        nc = _is_eol_crlf(base, 0)
    return nc > 0


def _eol_fix(lines: list[bytes], eol: bytes) -> list[bytes]:
    if lines and not lines[-1].endswith(b"\n"):
        return lines[:-1] + [lines[-1] + eol]
    return lines


def render(chunks: list[Chunk], on_conflict: str, diff3: bool,
           files: tuple[list[bytes], list[bytes], list[bytes]] = ([], [], []),
           labels: tuple[str, str, str] = ("ours", "base", "theirs")) -> bytes:
    out: list[bytes] = []
    for c in chunks:
        if c.kind != "conflict":
            out.extend(c.lines)
            continue
        assert c.ours is not None and c.theirs is not None
        if on_conflict == "ours":
            out.extend(c.ours)
        elif on_conflict == "theirs":
            out.extend(c.theirs)
        else:
            eol = b"\r\n" if _needs_cr(c, files) else b"\n"
            if out and not out[-1].endswith(b"\n"):
                out[-1] += eol
            out.append(b"<<<<<<< " + labels[0].encode() + eol)
            out.extend(_eol_fix(c.ours, eol))
            if diff3:
                out.append(b"||||||| " + labels[1].encode() + eol)
                out.extend(_eol_fix(c.base or [], eol))
            out.append(b"=======" + eol)
            out.extend(_eol_fix(c.theirs, eol))
            out.append(b">>>>>>> " + labels[2].encode() + eol)
    return b"".join(out)


def merge_text(path: str, base: bytes | None, ours: bytes, theirs: bytes, opts: MergeOptions,
               name: str = "text") -> MergeResult:
    """Three-way line merge; the MergeResult follows opts.on_conflict."""
    done = trivial_merge(name, path, base, ours, theirs)
    if done is not None:
        return done
    notes = [] if base is not None else ["no base version: two-way merge against an empty base"]
    files = (split_lines(base or b""), split_lines(ours), split_lines(theirs))
    chunks = _chunks(*files, refine=not opts.diff3)
    conflicts: list[ConflictInfo] = []
    line = 1
    for c in chunks:
        if c.kind == "conflict":
            assert c.ours is not None
            n = len(c.ours)
            loc = f"line {line}" if n <= 1 else f"lines {line}-{line + n - 1}"
            conflicts.append(ConflictInfo(loc, "changed on both sides",
                                          _show(c.ours), _show(c.theirs), _show(c.base)))
            line += n
        else:
            line += len(c.lines)
    if not conflicts:
        return MergeResult(render(chunks, "markers", False), FileReport(path, "merged", name, notes=notes))
    oc = opts.on_conflict
    if oc in ("ours", "theirs"):
        return MergeResult(render(chunks, oc, False),
                           FileReport(path, "merged", name, conflicts, notes + [f"conflicts resolved: {oc}"]))
    if oc == "markers":
        return MergeResult(render(chunks, "markers", opts.diff3, files), FileReport(path, "conflict", name, conflicts, notes))
    if oc == "keep-both":
        return MergeResult(ours, FileReport(path, "kept-both", name, conflicts, notes))
    return MergeResult(None, FileReport(path, "conflict", name, conflicts, notes))


def _show(lines: list[bytes] | None) -> str | None:
    if lines is None:
        return None
    s = b"".join(lines).decode("utf-8", "replace")
    return s if len(s) <= 400 else s[:400] + "..."


class TextStrategy:
    """Line-level three-way merge, byte-identical to git merge-file when clean."""

    name = "text"

    def handles(self, path: str, sample: bytes) -> bool:
        return is_text(sample)

    def merge(self, path: str, base: bytes | None, ours: bytes, theirs: bytes,
              opts: MergeOptions) -> MergeResult:
        return merge_text(path, base, ours, theirs, opts, self.name)
