"""Settle the line merge's conflicts line by line and key by key.

git's line merge stops on a change next to another side's change: the
operator uncommented ``hosts = ...`` right below a comment line that the new
release reworded, or two neighbouring keys were changed, one on each side.
In a configuration file such changes do not touch each other.  Here each
conflict hunk of git's merge (diff3 style: base, ours and theirs lines) is
merged again finer: each side's edits of the hunk's base lines apply
together when they do not overlap (adjacent edits are fine); overlapping
edits settle when they are the same line of the same key and only one side
changed the value (the other side's line keeps its spelling and spacing), or
when both sides only inserted lines with no key in common.  Whatever else
remains is a real conflict.

The result keeps every comment, blank line and spacing change of both sides
that the line merge kept, and the structured strategy accepts it only when it
parses to exactly the data of the key-level merge.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

MAX_HUNK_LINES = 2000  # difflib inside one hunk is quadratic: larger hunks stay unsettled
MAX_WORK = 4_000_000  # sum of the hunks' squared sizes over a file: past it, nothing is settled

# `key = value`, `key: value`, `key=value`, `"key": value,` (comments and section lines are not keys)
_KEY = re.compile(rb"^\s*(?:export\s+)?(\"[^\"]*\"|[^\s=:#;!\[\]\"{}][^=:]*?)\s*[=:]\s*(.*?)\s*,?\s*$")


@dataclass(frozen=True)
class Settled:
    """The result lines and the hunks that stayed conflicts (ours, base, theirs)."""

    lines: list[bytes | None]  # None: a marker (see _MARK)
    conflicts: list[tuple[list[bytes], list[bytes], list[bytes]]]


def key_of(line: bytes) -> tuple[bytes, bytes] | None:
    """(key, value) of a ``key = value`` line, None for anything else."""
    m = _KEY.match(line.rstrip(b"\r\n"))
    return (m.group(1).strip(b'"'), m.group(2)) if m else None


def _sig(line: bytes) -> bytes:
    """What aligns lines: a key line by its indentation and key (its value
    may differ between the sides), any other line by its text."""
    k = key_of(line)
    if k is None:
        return line
    return b"\0K" + line[: len(line) - len(line.lstrip())] + k[0]


@dataclass(frozen=True)
class _Side:
    lines: list[bytes]
    edits: list[tuple[int, int, list[bytes]]]  # (base start, base end, lines instead)
    at: dict[int, int]  # base line -> this side's line, where aligned


def _diff(base: list[bytes], side: list[bytes]) -> _Side:
    sm = difflib.SequenceMatcher(None, [_sig(x) for x in base], [_sig(x) for x in side],
                                 autojunk=False)
    edits: list[tuple[int, int, list[bytes]]] = []
    at: dict[int, int] = {}
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            at.update(zip(range(i1, i2), range(j1, j2)))
        else:
            edits.append((i1, i2, side[j1:j2]))
    return _Side(side, edits, at)


def _overlap(a: tuple[int, int, list[bytes]], b: tuple[int, int, list[bytes]]) -> bool:
    (a1, a2, _), (b1, b2, _) = a, b
    if a1 == a2 and b1 == b2:
        return a1 == b1
    if a1 == a2:
        return b1 < a1 < b2
    if b1 == b2:
        return a1 < b1 < a2
    return a1 < b2 and b1 < a2


def _line_pick(b: bytes, o: bytes, t: bytes, prefer: str | None) -> bytes | None:
    if o == t or t == b:
        return o
    if o == b:
        return t
    ko, kt, kb = key_of(o), key_of(t), key_of(b)
    if ko and kt and kb and ko[0] == kt[0] == kb[0]:
        if ko[1] == kb[1]:
            return _comma_as(t, o, b)  # only theirs changed the value: theirs' line
        if kt[1] == kb[1] or ko[1] == kt[1]:
            return _comma_as(o, t, b)  # only ours changed the value (theirs respaced the line)
    return o if prefer == "ours" else t if prefer == "theirs" else None


def _comma(line: bytes) -> bool:
    return line.rstrip().endswith(b",")


def _comma_as(line: bytes, other: bytes, base: bytes) -> bytes:
    """``line``, with the trailing comma the other side added or removed (a
    JSON key that stopped or started being the last of its object)."""
    if _comma(other) == _comma(base) or _comma(line) == _comma(other):
        return line
    body = line.rstrip(b"\r\n")
    eol = line[len(body):]
    stripped = body.rstrip()
    pad = body[len(stripped):]
    return (stripped + b"," if _comma(other) else stripped[:-1]) + pad + eol


def _settle_group(b: list[bytes], o: list[bytes], t: list[bytes], prefer: str | None) -> list[bytes] | None:
    if o == t or t == b:
        return o
    if o == b:
        return t
    if len(b) == len(o) == len(t):
        picked = [_line_pick(x, y, z, prefer) for x, y, z in zip(b, o, t)]
        out = [x for x in picked if x is not None]
        return out if len(out) == len(picked) else None
    if not b:
        ko = {k[0] for k in map(key_of, o) if k}
        kt = {k[0] for k in map(key_of, t) if k}
        if not ko & kt:
            return o + t
    return o if prefer == "ours" else t if prefer == "theirs" else None


def settle(base: list[bytes], ours: list[bytes], theirs: list[bytes],
           prefer: str | None = None) -> Settled | None:
    """One conflict hunk merged finer; None when it is too large to try."""
    if len(base) + len(ours) + len(theirs) > MAX_HUNK_LINES:
        return None
    so, st = _diff(base, ours), _diff(base, theirs)
    edits = sorted([(e, 0) for e in so.edits] + [(e, 1) for e in st.edits],
                   key=lambda x: (x[0][0], x[0][1], x[1]))
    out: list[bytes | None] = []
    conflicts: list[tuple[list[bytes], list[bytes], list[bytes]]] = []

    def emit(b: list[bytes], o: list[bytes], t: list[bytes]) -> None:
        got = _settle_group(b, o, t, prefer)
        if got is None:
            conflicts.append((o, b, t))
            out.extend([_MARK, *o, _MARK, *t, _MARK])
        else:
            out.extend(got)

    pos = 0
    i = 0
    while i <= len(edits):
        if i < len(edits):
            group = [edits[i]]
            end = edits[i][0][1]
            i += 1
            while i < len(edits) and any(_overlap(edits[i][0], g[0]) for g in group):
                group.append(edits[i])
                end = max(end, edits[i][0][1])
                i += 1
            start = group[0][0][0]
        else:
            i, start, end, group = i + 1, len(base), len(base), []
        for k in range(pos, start):  # aligned on both sides: same key or same text
            emit([base[k]], [ours[so.at[k]]], [theirs[st.at[k]]])
        if group:
            emit(base[start:end], _text(base, start, end, so, [g[0] for g in group if g[1] == 0]),
                 _text(base, start, end, st, [g[0] for g in group if g[1] == 1]))
        pos = max(pos, end)
    return Settled(out, conflicts)


def _text(base: list[bytes], start: int, end: int, side: _Side,
          edits: list[tuple[int, int, list[bytes]]]) -> list[bytes]:
    """What one side has in place of base[start:end]."""
    out: list[bytes] = []
    pos = start
    for i1, i2, lines in sorted(edits, key=lambda e: (e[0], e[1])):
        out.extend(side.lines[side.at[k]] for k in range(pos, i1))
        out.extend(lines)
        pos = i2
    out.extend(side.lines[side.at[k]] for k in range(pos, end))
    return out


_MARK = None  # in Settled.lines: where a conflict's markers go (<<<, ===, >>> in turn)


def settle_all(base: bytes, ours: bytes, theirs: bytes, prefer: str | None = None,
               markers: bool = False, diff3: bool = False,
               comment: bytes | None = None) -> tuple[bytes | None, int]:
    """git's merge with every conflict hunk settled: (result, conflicts left).
    The result is None when a conflict is left and ``markers`` is false;
    with ``markers`` the conflicts left are written with git's markers
    around just the lines that conflict.  ``comment`` (a format's line
    comment, ``#``): the markers and the other sides' lines are written as
    comments, ours' lines stay active, so the file still parses."""
    from .xmerge import merge_regions

    out: list[bytes] = []
    left = 0
    work = 0
    for r in merge_regions(base, ours, theirs, diff3=True):
        if not r.conflict:
            out.extend(r.clean)
            continue
        assert r.ours is not None and r.base is not None and r.theirs is not None
        size = len(r.base) + max(len(r.ours), len(r.theirs))
        work += size * size
        s = settle(list(r.base), list(r.ours), list(r.theirs), prefer) if work <= MAX_WORK else None
        if s is None:
            s = Settled([_MARK, *r.ours, _MARK, *r.theirs, _MARK], [(list(r.ours), list(r.base), list(r.theirs))])
        left += len(s.conflicts)
        if s.conflicts and not markers:
            return None, left
        out.extend(_with_markers(s, diff3, comment))
    return b"".join(out), left


def _with_markers(s: Settled, diff3: bool, comment: bytes | None = None) -> list[bytes]:
    out: list[bytes] = []
    it = iter(s.conflicts)
    state = 0
    lead = comment + b" " if comment else b""

    def inert(line: bytes) -> bytes:
        """A line of the side that is not active: a comment when the format has them."""
        return lead + line if comment and line.strip() else line

    for line in s.lines:
        if line is not _MARK:
            out.append(line if state != 2 else inert(line))
            continue
        eol = b"\r\n" if out and out[-1].endswith(b"\r\n") else b"\n"
        if out and not out[-1].endswith(b"\n"):
            out[-1] += eol
        if state == 0:
            _o, b, _t = next(it)
            out.append(lead + b"<<<<<<< ours" + eol)
        elif state == 1:
            if diff3:
                out.append(lead + b"||||||| base" + eol)
                out.extend(inert(x) for x in b)
                if out and not out[-1].endswith(b"\n"):
                    out[-1] += eol
            out.append(lead + b"=======" + eol)
        else:
            out.append(lead + b">>>>>>> theirs" + eol)
        state = (state + 1) % 3
    return out
