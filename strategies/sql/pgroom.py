"""Where the fast path of a major upgrade keeps what its servers write,
and how large that may be (pgfast runs the path).

The old servers run on copy-on-write snapshots of the frozen data; the
caller's scratch (a tmpfs in the upgrade transaction: pgsnap) is where
creating files is cheap.  pg_upgrade's snapshot keeps its upper layer in
the shared scratch when the catalogs fit there (:func:`upper_hint`), the
check's copy of the new cluster goes there too (:func:`check_home`), and
the verification's snapshot gets a tmpfs of its own, sized from the data,
when the data fits in memory (:func:`read_tmpfs_size`,
``VOLMERGE_PG_READ_TMPFS_MB``).  A tmpfs that fills up is told apart from
a full disk (:class:`ScratchFull`, :func:`in_memory`): its "no space" is a
refusal, and the fallback is taken.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from typing import Any

from volmerge.strategies.errors import BadInput

from .pgtemp import rmtree_quiet
from .pgupgrade import Refused


class ScratchFull(Refused):
    """A tmpfs of the fast path's filled up (the disk did not): the
    fallback is taken, even though the message says "no space"."""


@contextlib.contextmanager
def plain_dir(path: str, size: int | None = None) -> Iterator[None]:
    """The default :data:`Scratch`: a directory of the work directory's file
    system (``size`` unused)."""
    os.makedirs(path)
    try:
        yield
    finally:
        rmtree_quiet(path)


def data_bytes(old_data: str) -> int | None:
    """Bytes of the regular files of the frozen data directory (None: unreadable)."""
    from volmerge.runtime.fsutil import walk

    try:
        return sum(e.st.st_size for e in walk(old_data) if stat.S_ISREG(e.st.st_mode))
    except OSError:
        return None


#: the most MiB the tmpfs of the verification's snapshot may be sized to, by default
#: (``VOLMERGE_PG_READ_TMPFS_MB``); memory is taken only as the read copies files up
READ_TMPFS_MB = 1024


def read_tmpfs_limit() -> int:
    """Bytes up to which the verification's old-side snapshot may keep its
    copy-on-write layer in a tmpfs: ``VOLMERGE_PG_READ_TMPFS_MB`` (0: always
    on disk), else :data:`READ_TMPFS_MB`.  BadInput for a value that is not
    a whole number (checked when the upgrade is planned)."""
    raw = os.environ.get("VOLMERGE_PG_READ_TMPFS_MB", "").strip()
    if not raw:
        return READ_TMPFS_MB << 20
    if not raw.isdigit() or len(raw) > 9:
        raise BadInput(f"VOLMERGE_PG_READ_TMPFS_MB={raw!r}: not a whole number of MiB")
    return int(raw) << 20


def read_tmpfs_size(total: int, available: int | None = None) -> int | None:
    """The size of the tmpfs for the verification's snapshot of a data
    directory of ``total`` bytes: twice them plus 64 MiB (reading every
    table copies the relation files up; hint bits set by the read may add
    as much WAL again where data checksums are on), when that is at most
    :func:`read_tmpfs_limit` and half the memory ``available`` (default:
    the kernel's MemAvailable now; tmpfs pages are not reclaimable without
    swap).  None: it goes on disk."""
    size = 2 * total + (64 << 20)
    if available is None:
        available = _mem_available()
    return size if size <= min(read_tmpfs_limit(), available // 2) else None


def _mem_available() -> int:
    """The kernel's estimate of the memory available without swapping (0: unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        pass
    return 0


def upper_hint(old_data: str, room: str, total: int | None = None) -> dict[str, str]:
    """``{"upper_in": room}`` when pg_upgrade's snapshot may keep its
    copy-on-write layer in the scratch: what its old server writes there
    is the catalogs, the WAL and the like (it reads no table), so the
    data directory's bytes other than the user relations' must fit twice
    over with 64 MiB to spare (else ``{}``: beside the data, on disk).
    Each copy-up creates a file, which a busy ext4 may take a millisecond
    to do; on pg_upgrade's critical path there are hundreds.  ``total``:
    the data directory's bytes (:func:`data_bytes`), when already known."""
    from .pgmajor import user_bytes

    total = data_bytes(old_data) if total is None else total
    if total is None:
        return {}
    try:
        st = os.statvfs(room)
    except OSError:
        return {}
    other = max(0, total - user_bytes(old_data))
    return {"upper_in": room} if st.f_bavail * st.f_frsize >= 2 * other + (64 << 20) else {}


def full(room: str) -> bool:
    """Whether the scratch is (nearly) full: a "no space" then is its own,
    not the disk's, and the fallback is taken instead."""
    try:
        st = os.statvfs(room)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (16 << 20)


def in_memory(fn: Callable[..., Any], datadir: str) -> Callable[..., Any]:
    """``fn`` (the old server's start, its read, the check against it) on
    a snapshot whose copy-on-write layer is in a tmpfs: a failure while
    the server's log says "no space" (a copy-up or a write it could not
    make), or with the tmpfs (nearly) full, is a refusal, and the fallback
    is taken — the disk is not full."""
    from .pgmajor import _no_space

    def run(*args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            if _no_space(_log_tail(datadir)) or full(datadir):
                raise ScratchFull("the verification's snapshot filled its tmpfs "
                                  f"(VOLMERGE_PG_READ_TMPFS_MB): {exc}") from exc
            raise
    return run


def _log_tail(datadir: str) -> str:
    """The end of a temporary server's log (empty when unreadable)."""
    try:
        with open(os.path.join(datadir, "server.log"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def check_home(new_data: str, work: str) -> str:
    """Where the check's copy of the new cluster goes: the scratch when it
    fits there twice over with 64 MiB to spare (the check's server may add
    a WAL segment; a full scratch must never read as a full disk), else
    the work directory."""
    from volmerge.runtime.fsutil import walk

    size = sum(e.st.st_size for e in walk(new_data) if stat.S_ISREG(e.st.st_mode))
    scratch = os.path.join(work, "check-scratch")
    st = os.statvfs(scratch)
    if st.f_bavail * st.f_frsize >= 2 * size + (64 << 20):
        return os.path.join(scratch, "new-check")
    return os.path.join(work, "new-check")


__all__ = ["ScratchFull", "plain_dir", "data_bytes", "READ_TMPFS_MB", "read_tmpfs_limit",
           "read_tmpfs_size", "upper_hint", "full", "in_memory", "check_home"]
