"""Where the fast path of a major upgrade keeps what its servers write,
and how large that may be (pgfast runs the path).

The old servers run on copy-on-write snapshots of the frozen data; the
caller's scratch (a tmpfs in the upgrade transaction: pgsnap) is where
creating files is cheap.  pg_upgrade's snapshot keeps its upper layer in
the scratch when the catalogs fit there (:func:`upper_hint`), and the
check's copy of the new cluster goes there too (:func:`check_home`).  A
scratch that fills up is told apart from a full disk (:class:`ScratchFull`,
:func:`full`): its "no space" is a refusal, and the fallback is taken.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from volmerge.runtime.fsutil import dir_size

from .pgtemp import rmtree_quiet
from .pgupgrade import Refused


class ScratchFull(Refused):
    """A tmpfs of the fast path's filled up (the disk did not): the
    fallback is taken, even though the message says "no space"."""


@contextlib.contextmanager
def plain_dir(path: str) -> Iterator[None]:
    """The default :data:`Scratch`: a directory of the work directory's file system."""
    os.makedirs(path)
    try:
        yield
    finally:
        rmtree_quiet(path)


def upper_hint(old_data: str, room: str) -> dict[str, str]:
    """``{"upper_in": room}`` when pg_upgrade's snapshot may keep its
    copy-on-write layer in the scratch: what its old server writes there
    is the catalogs, the WAL and the like (it reads no table), so the
    data directory's bytes other than the user relations' must fit twice
    over with 64 MiB to spare (else ``{}``: beside the data, on disk).
    Each copy-up creates a file, which a busy ext4 may take a millisecond
    to do; on pg_upgrade's critical path there are hundreds."""
    from .pgmajor import user_bytes

    total = dir_size(old_data, apparent=True)
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


def check_home(new_data: str, work: str) -> str:
    """Where the check's copy of the new cluster goes: the scratch when it
    fits there twice over with 64 MiB to spare (the check's server may add
    a WAL segment; a full scratch must never read as a full disk), else
    the work directory."""
    size = dir_size(new_data, apparent=True)
    scratch = os.path.join(work, "check-scratch")
    st = os.statvfs(scratch)
    if st.f_bavail * st.f_frsize >= 2 * size + (64 << 20):
        return os.path.join(scratch, "new-check")
    return os.path.join(work, "new-check")


__all__ = ["ScratchFull", "plain_dir", "upper_hint", "full", "check_home"]
