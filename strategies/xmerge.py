"""git's three-way file merge (xdiff's ``xdl_merge``) through libgit2.

The text merge must give exactly what ``git merge-file -p`` gives: the same
bytes when the merge is clean, conflicts where git has them.  libgit2 carries
git's own xdiff, and pygit2 (a declared dependency) ships libgit2; pygit2 does
not wrap ``git_merge_file`` (the merge of three buffers, no repository), so
this module declares that one function with cffi (pygit2's own dependency) and
calls it in the library pygit2 loaded.  Myers' diff is O(ND): a 100,000-line
file merges in milliseconds (difflib, used before, was quadratic).

pygit2 is imported on the first merge, never at start-up.

Markers: libgit2 leaves out the label of a side that is empty, git does not.
So a merge with conflicts runs once more with markers longer than any marker-
like line of the inputs and unique labels; that run is parsed into regions
(:func:`merge_regions`) and the markers are written here with git's labels
(and libgit2's line endings, which follow git's ``is_cr_needed``).
"""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass
from typing import Any

_CDEF = """
typedef struct { unsigned int version; const char *ptr; size_t size; const char *path;
                 unsigned int mode; } git_merge_file_input;
typedef struct { unsigned int version; const char *ancestor_label; const char *our_label;
                 const char *their_label; int favor; uint32_t flags;
                 unsigned short marker_size; } git_merge_file_options;
typedef struct { unsigned int automergeable; const char *path; unsigned int mode;
                 const char *ptr; size_t len; } git_merge_file_result;
int git_merge_file(git_merge_file_result *out, const git_merge_file_input *ancestor,
                   const git_merge_file_input *ours, const git_merge_file_input *theirs,
                   const git_merge_file_options *opts);
void git_merge_file_result_free(git_merge_file_result *result);
"""
STYLE_DIFF3 = 2
SIMPLIFY_ALNUM = 4  # git merge-file's default level (XDL_MERGE_ZEALOUS_ALNUM)
FAVOR = {"normal": 0, "ours": 1, "theirs": 2}

_lock = threading.Lock()
_lib: tuple[Any, Any] | None = None


def _load() -> tuple[Any, Any]:
    global _lib
    with _lock:
        if _lib is None:
            import pygit2  # noqa: F401 - loads libgit2 and runs git_libgit2_init
            from cffi import FFI
            from pygit2 import _libgit2

            ffi = FFI()
            ffi.cdef(_CDEF)
            # the extension module links libgit2: its symbols resolve through it
            _lib = (ffi, ffi.dlopen(_libgit2.__file__))
        return _lib


def xmerge(base: bytes, ours: bytes, theirs: bytes, *, diff3: bool = False,
           favor: str = "normal", marker_size: int = 7,
           labels: tuple[bytes, bytes, bytes] = (b"ours", b"base", b"theirs")) -> tuple[bool, bytes]:
    """(clean, result) of git's merge of three buffers, as ``git merge-file -p``
    with ``-L ours -L base -L theirs`` (labels are bytes: names can be any)."""
    ffi, lib = _load()
    keep: list[Any] = []

    def inp(data: bytes) -> Any:
        i = ffi.new("git_merge_file_input *")
        i.version = 1
        buf = ffi.from_buffer(data or b"\0")  # never NULL, even when empty
        keep.append(buf)
        i.ptr, i.size = buf, len(data)
        return i

    opts = ffi.new("git_merge_file_options *")
    opts.version = 1
    names = [ffi.new("char[]", x) for x in labels]
    keep.extend(names)
    opts.our_label, opts.ancestor_label, opts.their_label = names
    opts.favor = FAVOR[favor]
    opts.flags = SIMPLIFY_ALNUM | (STYLE_DIFF3 if diff3 else 0)
    opts.marker_size = marker_size
    res = ffi.new("git_merge_file_result *")
    if lib.git_merge_file(res, inp(base), inp(ours), inp(theirs), opts) != 0:
        raise MemoryError("libgit2 could not merge the files")
    try:
        return bool(res.automergeable), bytes(ffi.buffer(res.ptr, res.len))
    finally:
        lib.git_merge_file_result_free(res)


@dataclass(frozen=True)
class Region:
    """A stretch of the merge result: ``clean`` lines, or a conflict with
    each side's lines (``base`` only in diff3 style) and the marker lines'
    endings libgit2 chose."""

    clean: tuple[bytes, ...] = ()
    ours: tuple[bytes, ...] | None = None
    base: tuple[bytes, ...] | None = None
    theirs: tuple[bytes, ...] | None = None
    eols: tuple[bytes, ...] = ()  # of <<<, |||, ===, >>> (||| only in diff3)

    @property
    def conflict(self) -> bool:
        return self.ours is not None


_MARKERISH = re.compile(rb"^([<|=>])\1{6,}", re.M)


def merge_regions(base: bytes, ours: bytes, theirs: bytes, diff3: bool) -> list[Region]:
    """The merge as regions, from a run whose markers cannot be mistaken for
    a line of the inputs (longer than any run of marker characters starting
    a line, labelled with a random token)."""
    longest = max((len(m.group(0)) for x in (base, ours, theirs) for m in _MARKERISH.finditer(x)),
                  default=0)
    size = min(max(longest + 1, 16), 65535)
    tok = secrets.token_hex(8).encode()
    _clean, out = xmerge(base, ours, theirs, diff3=diff3, marker_size=size,
                         labels=(b"o" + tok, b"b" + tok, b"t" + tok))
    marks = {c * size: c for c in (b"<", b"|", b"=", b">")}
    regions: list[Region] = []
    clean: list[bytes] = []
    cur: dict[bytes, list[bytes]] | None = None
    section = b""
    eols: list[bytes] = []
    for line in out.splitlines(keepends=True):
        body = line.rstrip(b"\r\n")
        kind = marks.get(body[:size]) if len(body) >= size and body[size:size + 1] in (b"", b" ") else None
        if kind is None or (kind == b"<") == (cur is not None):
            (clean if cur is None else cur[section]).append(line)
            continue
        eols.append(line[len(body):])
        if kind == b"<":
            if clean:
                regions.append(Region(clean=tuple(clean)))
                clean = []
            cur, section, eols = {b"<": [], b"|": [], b"=": []}, b"<", eols[-1:]
        elif kind == b">":
            assert cur is not None
            regions.append(Region(ours=tuple(cur[b"<"]),
                                  base=tuple(cur[b"|"]) if diff3 else None,
                                  theirs=tuple(cur[b"="]), eols=tuple(eols)))
            cur, eols = None, []
        else:
            section = kind
    if cur is not None:  # cannot happen with libgit2's output; never lose lines
        clean.extend(cur[b"<"])
    if clean:
        regions.append(Region(clean=tuple(clean)))
    return regions


def render(regions: list[Region], labels: tuple[str, str, str] = ("ours", "base", "theirs")) -> bytes:
    """The regions with git's markers (7 characters, labels as given)."""
    out: list[bytes] = []
    lo, lb, lt = (x.encode("utf-8", "surrogateescape") for x in labels)
    for r in regions:
        if not r.conflict:
            out.extend(r.clean)
            continue
        assert r.ours is not None and r.theirs is not None
        e = list(r.eols)
        out.append(b"<<<<<<< " + lo + e[0])
        out.extend(r.ours)
        if r.base is not None:
            out.append(b"||||||| " + lb + e[1])
            out.extend(r.base)
        out.append(b"=======" + e[-2])
        out.extend(r.theirs)
        out.append(b">>>>>>> " + lt + e[-1])
    return b"".join(out)
