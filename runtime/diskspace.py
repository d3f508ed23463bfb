"""A full disk as one clear line (docs/architecture.md, "A full disk").

Any step that writes can meet ENOSPC (or EDQUOT, or SQLite's "database or
disk is full"): an image load, a snapshot, the merge into an upper layer, a
replay, the journal.  Each step already rolls back on any error; what the
operator needs on top is to know it was space, on which file system, and
how much more it would take.  :func:`is_no_space` recognises the error
however it was raised or wrapped, :func:`no_space` makes the message.
Everything here only reads (statvfs, /proc/self/mountinfo): it runs when
the disk is full.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from .errors import NotDone

# What the kernel's strerror, SQLite and GNU tar say when a write found no room.
_TEXTS = ("No space left on device", "Disk quota exceeded", "database or disk is full",
          ": Wrote only ")
_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NEARLY_FULL = 64 * 1024  # less free than a page of SQLite's WAL index and a few pages


class NoSpace(NotDone):
    """A write found no room; the operation was rolled back (exit 1)."""


@dataclass(frozen=True)
class FsSpace:
    """The file system holding a path: where it is mounted, its type, bytes free
    (for an unprivileged writer, statvfs f_bavail) and its size."""

    mount_point: str
    fstype: str
    free: int
    total: int


def is_no_space(exc: BaseException | None, path: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``exc``, or an error it was raised from or while handling, is a
    full disk (an OSError's errno, or the text a subprocess or SQLite gave).
    SQLite says only "disk I/O error" when it cannot even create its
    write-ahead log: that counts when ``path``'s file system is full."""
    seen: set[int] = set()
    io_error = False
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _ERRNOS:
            return True
        if any(t in str(exc) for t in _TEXTS):
            return True
        io_error = io_error or "disk I/O error" in str(exc)
        exc = exc.__cause__ or exc.__context__
    if io_error and path is not None:
        fs = space_of(path)
        return fs is not None and fs.free < _NEARLY_FULL
    return False


def space_of(path: str | os.PathLike[str]) -> FsSpace | None:
    """The file system of ``path`` (or of its nearest existing parent); None
    when nothing on the way can be read."""
    p = os.path.realpath(path)
    while not os.path.exists(p) and p != "/":
        p = os.path.dirname(p)
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    mp, fstype = _mount_of(p)
    return FsSpace(mp, fstype, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)


def no_space(path: str | os.PathLike[str], *, needed: int | None = None,
             what: str = "") -> NoSpace:
    """The error to raise: ``no space left on /mnt (tmpfs, 12kB free of 48MB)
    during import of x.tar: needed ~3.1MB more; free space and run the command
    again``.  ``needed`` is the size the whole step writes, when known."""
    fs = space_of(path)
    where = f"no space left on {path}" if fs is None else (
        f"no space left on {fs.mount_point} ({fs.fstype}, {size_text(fs.free)} free "
        f"of {size_text(fs.total)})")
    if what:
        where += f" during {what}"
    if needed is not None:
        more = needed - (fs.free if fs else 0)
        # what the roll back freed may already cover it: then the step's whole size
        where += (f": needed ~{size_text(more)} more" if more > 0
                  else f": needed ~{size_text(needed)} in all")
    return NoSpace(f"{where}; rolled back: free space and run the command again",
                   path=str(path), needed=needed)


def size_text(n: float) -> str:
    """Bytes as people read them (decimal units, three significant digits)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.3g}{unit}"
        n /= 1000
    return f"{n}"  # pragma: no cover - the loop always returns


def _mount_of(path: str) -> tuple[str, str]:
    """(mount point, type) of the deepest mount holding ``path``, from
    /proc/self/mountinfo; ("?", "?") when it cannot be read."""
    best, fstype = "", "?"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                mp = _unescape(fields[4])
                if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                    best, fstype = mp, fields[fields.index("-") + 1]
    except (OSError, ValueError, IndexError):
        return "?", "?"
    return best or "?", fstype


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
