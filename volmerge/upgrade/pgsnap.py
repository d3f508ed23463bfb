"""pgmajor's snapshots and scratch directories as the upgrade transaction
takes them (pgdata passes them to ``upgrade_datadir``).

The fast path of a major upgrade starts old servers on the frozen data:
pg_upgrade's, and the verification's, which reads every row.  Each gets a
copy-on-write overlay of the frozen data (:func:`overlay_snapshot`), so
that they write beside it, never into it.  Where such an overlay keeps
what its server writes matters: each copy-up creates a file, which a busy
ext4 (this project's VMs: without a journal, skipping recently freed
inodes) can take a millisecond to do.  :func:`tmpfs_scratch` makes a
size-bounded tmpfs for such layers and for ``pg_upgrade --check``'s copy
of the new cluster; pgfast decides what goes there and how large it may
be.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator

from volmerge.runtime import diag


def _rmtree_quiet(path: str | os.PathLike[str]) -> None:
    """Best-effort removal of a work tree holding a clone of a container's
    data (iterative: shutil.rmtree recurses, and its ignore_errors does not
    cover RecursionError)."""
    from volmerge.runtime.fsutil import rmtree

    with contextlib.suppress(OSError):
        rmtree(path)


@contextlib.contextmanager
def overlay_snapshot(frozen: str, path: str, upper_in: str | None = None) -> Iterator[None]:
    """pgmajor's snapshot of the frozen data as the upgrade takes it: an
    overlay at ``path`` with ``frozen`` as its only lower layer, so that
    the old server pg_upgrade starts writes beside the data, never into it,
    and nothing is copied but what it writes (metadata only for a chown:
    ``metacopy``; no syncs: ``volatile``, the upper is thrown away).
    ``metacopy`` trusts the layers' redirect xattrs: the only lower layer
    is the volume itself, so a crafted one reaches nothing else.  A file
    system without such overlays gets a copy (pgmajor's default).
    ``upper_in``: a directory (a scratch tmpfs of pgmajor's) to keep the
    upper and work directories in: pg_upgrade's snapshot (its copy-ups are
    many catalog files, few bytes), the verification's when the data fits
    (PostgreSQL opens relation files read-write: reading a table copies it
    up whole)."""
    from volmerge.runtime import sys as rsys
    from volmerge.strategies.sql.pgmajor import copied

    base = os.path.join(upper_in, os.path.basename(path) + ".cow") if upper_in else path + ".cow"
    upper, work = os.path.join(base, "upper"), os.path.join(base, "work")
    for d in (path, upper, work):
        os.makedirs(d)
    st = os.stat(frozen)  # the overlay's root is the upper's: the data directory's owner and mode
    os.chown(upper, st.st_uid, st.st_gid)
    os.chmod(upper, stat.S_IMODE(st.st_mode))
    try:
        rsys.mount_overlay(path, [frozen], upper, work,
                           extra={"metacopy": "on", "volatile": None})
    except OSError as exc:
        diag.ignored(__name__, "a copy-on-write overlay of the frozen data", exc)
        _rmtree_quiet(base)
        os.rmdir(path)
        with copied(frozen, path):
            yield
        return
    try:
        yield
    finally:
        rsys.umount(path, rsys.MNT_DETACH)
        _rmtree_quiet(base)
        _rmtree_quiet(path)


#: the default cap of pgmajor's scratch tmpfs (MiB): pg_upgrade's snapshot keeps
#: its copy-on-write layer there, and the check its copy of the new cluster, each
#: only when it fits twice over, else on disk
SCRATCH_MB = 512


@contextlib.contextmanager
def tmpfs_scratch(path: str) -> Iterator[None]:
    """pgmajor's scratch directory as the upgrade takes it: a tmpfs of
    :data:`SCRATCH_MB` MiB at ``path`` (nosuid, nodev, noexec).  pgfast
    keeps there what would otherwise be thousands of file creations on
    disk: ``pg_upgrade --check``'s copy of the freshly made new cluster and
    pg_upgrade's snapshot's upper layer (hundreds of catalog files copied
    up).  Memory is taken only as files are written; a full tmpfs fails the
    write (ENOSPC), which pgfast turns into a refusal.
    Called before the temporary containers start: their bind of the work
    directory is recursive, so they see it.  Where tmpfs cannot be
    mounted: a plain directory."""
    from volmerge.runtime import sys as rsys

    os.makedirs(path)
    try:
        rsys.mount("tmpfs", path, "tmpfs", rsys.MS_NOSUID | rsys.MS_NODEV | rsys.MS_NOEXEC,
                   f"size={SCRATCH_MB}m,mode=0711")
    except OSError as exc:
        diag.ignored(__name__, "a tmpfs scratch for pg_upgrade's work", exc)
        try:
            yield
        finally:
            _rmtree_quiet(path)
        return
    try:
        yield
    finally:
        _rmtree_quiet(path)  # its contents (a container may still see the tmpfs), then the mount
        rsys.umount(path, rsys.MNT_DETACH)
        _rmtree_quiet(path)


__all__ = ["overlay_snapshot", "tmpfs_scratch", "SCRATCH_MB"]
