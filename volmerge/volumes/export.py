"""Tar streams in and out of volumes, through GNU tar: it never follows a
symlink when archiving (no ``-h``), refuses members that climb out with
``..``, delays dangerous symlinks on extraction, keeps sparse files, xattrs,
ACLs and numeric owners, and streams without holding the volume in memory.
(Why not tarfile with its ``data`` filter: it would drop the owners, xattrs
and ACLs that a volume's data depends on; the two things of it that matter
here, no device nodes and no set-user-ID files, are done in read_tar.)"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from volmerge.runtime import diskspace, fsutil

from ..errors import BadInput, NotDone

_COMMON = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]


def write_tar(src: Path, out: str | os.PathLike[str] | int) -> None:
    """Archive the content of ``src`` to ``out``: a path (written to a new
    file beside it and renamed when complete: runtime.outfile), ``-`` for
    stdout, or an open fd."""
    cmd = ["tar", "-C", str(src), "--sparse", *_COMMON, "-cf", "-", "."]
    if isinstance(out, int) or out == "-":
        fd = out if isinstance(out, int) else sys.stdout.fileno()
        if not isinstance(out, int):
            sys.stdout.flush()
        _run(cmd, stdout=fd, what="export")
        return
    from volmerge.runtime.outfile import atomic_output

    with atomic_output(out) as fd:  # a new file beside it, never a planted one
        _run(cmd, stdout=fd, what=f"export to {out}", dest=Path(out))


def read_tar(path: str | os.PathLike[str] | int, dest: Path) -> list[str]:
    """Extract the tar at ``path`` (``-``: stdin, or an fd) into ``dest``.

    tar runs without CAP_MKNOD, so the kernel itself refuses every character
    or block device in the archive (the import is then refused, naming it:
    a volume holds data, and a device node in it would hand a container
    that mounts it the host's disk).  Set-user-ID and set-group-ID bits are
    cleared from regular files afterwards, as the standard library's ``data``
    tar filter does: a volume is data, not programs to run with someone
    else's rights.  Returns the paths whose bits were cleared."""
    cmd = ["tar", "-C", str(dest), "--same-owner", "--same-permissions", *_COMMON, "-xf", "-"]
    if isinstance(path, int) or path == "-":
        _run(cmd, stdin=path if isinstance(path, int) else sys.stdin.fileno(), what="import",
             bad=True, nodev=True, dest=dest)
    else:
        p = Path(path)
        if not p.is_file():
            raise BadInput(f"no such file: {p}")
        with open(p, "rb") as f:
            _run(cmd, stdin=f.fileno(), what=f"import of {p}", bad=True, nodev=True, dest=dest,
                 size=os.fstat(f.fileno()).st_size)
    return clear_setid(dest)


def clear_setid(top: Path) -> list[str]:
    """Clear S_ISUID/S_ISGID on every regular file below ``top`` (through
    descriptors; directories keep set-group-ID, which only passes a group on)."""
    cleared = []
    for e in fsutil.walk(top):
        if not stat.S_ISREG(e.st.st_mode) or not e.st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            continue
        fd = os.open(e.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=e.dirfd)
        try:
            os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
        finally:
            os.close(fd)
        cleared.append(e.rel)
    return cleared


def _drop_mknod() -> None:  # pragma: no cover - runs in the child, before exec
    from volmerge.runtime import sys as rsys

    rsys.prctl(rsys.PR_CAPBSET_DROP, rsys.CAPABILITIES["CAP_MKNOD"])


def _run(cmd: list[str], *, what: str, stdin: int | None = None, stdout: int | None = None,
         bad: bool = False, nodev: bool = False, dest: Path | None = None,
         size: int | None = None) -> None:
    """Run tar; its first real error as one line.  A write that found no room
    on ``dest``'s file system is that, not bad input (runtime.diskspace);
    ``size``: what the whole step writes, when known."""
    proc = subprocess.run(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                          preexec_fn=_drop_mknod if nodev else None)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.decode(errors="replace").strip().splitlines()
                 if "Exiting with failure status" not in ln]
        for ln in lines:
            if nodev and ln.endswith(": Cannot mknod: Operation not permitted"):
                entry = ln[len("tar: "):-len(": Cannot mknod: Operation not permitted")]
                raise BadInput(f"{what} refused: {fsutil.short(entry)} is a device node "
                               "(a volume holds data, not devices); nothing imported")
        if dest is not None and any(diskspace.is_no_space(Exception(ln)) for ln in lines):
            raise diskspace.no_space(dest, needed=size, what=what)
        lines.sort(key=lambda ln: "Removing leading" in ln)  # the real error first
        msg = lines[0] if lines else f"tar exited with {proc.returncode}"
        msg = " ".join(fsutil.short(w) for w in msg.split(" "))  # a deep tree's names are long
        raise (BadInput if bad else NotDone)(f"{what} failed: {msg}")
