"""Tar streams in and out of volumes, through GNU tar: it never follows a
symlink when archiving (no ``-h``), refuses members that climb out with
``..``, delays dangerous symlinks on extraction, keeps sparse files, xattrs
and numeric owners, and streams without holding the volume in memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runtime import fsutil

from ..errors import BadInput, NotDone

_COMMON = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]


def write_tar(src: Path, out: str | os.PathLike[str] | int) -> None:
    """Archive the content of ``src`` to ``out``: a path (written beside and
    renamed when complete), ``-`` for stdout, or an open fd."""
    cmd = ["tar", "-C", str(src), "--sparse", *_COMMON, "-cf", "-", "."]
    if isinstance(out, int) or out == "-":
        fd = out if isinstance(out, int) else sys.stdout.fileno()
        if not isinstance(out, int):
            sys.stdout.flush()
        _run(cmd, stdout=fd, what="export")
        return
    dest = Path(out)
    if dest.is_dir():
        raise BadInput(f"output {dest} is a directory")
    if not dest.parent.is_dir():
        raise BadInput(f"output directory {dest.parent} does not exist")
    part = dest.with_name(f".{dest.name}.partial")
    try:
        with open(part, "wb") as f:
            _run(cmd, stdout=f.fileno(), what="export")
            f.flush()
            os.fsync(f.fileno())
        os.rename(part, dest)
    finally:
        part.unlink(missing_ok=True)


def read_tar(path: str | os.PathLike[str] | int, dest: Path) -> None:
    """Extract the tar at ``path`` (``-``: stdin, or an fd) into ``dest``."""
    cmd = ["tar", "-C", str(dest), "--same-owner", "--same-permissions", *_COMMON, "-xf", "-"]
    if isinstance(path, int) or path == "-":
        _run(cmd, stdin=path if isinstance(path, int) else sys.stdin.fileno(), what="import", bad=True)
        return
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"no such file: {p}")
    with open(p, "rb") as f:
        _run(cmd, stdin=f.fileno(), what=f"import of {p}", bad=True)


def _run(cmd: list[str], *, what: str, stdin: int | None = None, stdout: int | None = None,
         bad: bool = False) -> None:
    proc = subprocess.run(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.decode(errors="replace").strip().splitlines()
                 if "Exiting with failure status" not in ln]
        lines.sort(key=lambda ln: "Removing leading" in ln)  # the real error first
        msg = lines[0] if lines else f"tar exited with {proc.returncode}"
        msg = " ".join(fsutil.short(w) for w in msg.split(" "))  # a deep tree's names are long
        raise (BadInput if bad else NotDone)(f"{what} failed: {msg}")
