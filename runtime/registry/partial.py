"""Downloads kept across ``volmerge pull`` commands.

A pull that gives up on the network (the retries spent: ``NotDone``) or is
interrupted (Ctrl-C) keeps what it had of each unfinished blob as
``<root>/registry/partial/<hex>.part``; the next pull of a blob with that
digest takes the file back into its staging directory and asks only for the
rest (``Range``).  Nothing of a pull refused as bad input (a digest
mismatch, a truncated or hostile blob) is kept: the store stays as it was.
The prefix is not verifiable until the blob is whole; the blob's digest is
checked as always, and a resumed blob that does not match is downloaded
once more from its start.  Partial files older than a day are removed.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from ..store import Store

DIR = ("registry", "partial")
MAX_AGE = 24 * 3600
_HEX = re.compile(r"^[0-9a-f]{64}$")


def _dir(store: Store) -> Path:
    return store.path(*DIR)


def take(store: Store, digest: str, part: Path) -> int:
    """Move a kept partial download of ``digest`` to ``part`` (the staging
    file the download continues); its size, 0 when there is none."""
    hx = digest.removeprefix("sha256:")
    if not _HEX.match(hx):
        return 0
    src = _dir(store) / f"{hx}.part"
    try:
        os.rename(src, part)     # atomic: of two pulls at once, one gets it
        st = os.lstat(part)
    except OSError:              # none, or another file system: start over
        return 0
    if not stat.S_ISREG(st.st_mode):
        os.unlink(part)          # only ever a plain file of ours
        return 0
    return st.st_size


def keep(store: Store, parts: Iterable[tuple[str, Path]]) -> None:
    """Keep the unfinished downloads ``(digest, part file)`` for the next pull
    (best effort: the pull has failed already, and this must not hide why)."""
    d = _dir(store)
    for digest, part in parts:
        hx = digest.removeprefix("sha256:")
        try:
            if not _HEX.match(hx) or os.path.getsize(part) == 0:
                continue
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(part, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(part, d / f"{hx}.part")
        except OSError:
            continue


def sweep(store: Store, now: float | None = None) -> None:
    """Remove partial downloads older than MAX_AGE."""
    now = time.time() if now is None else now
    try:
        entries = list(os.scandir(_dir(store)))
    except FileNotFoundError:
        return
    for e in entries:
        try:
            if now - e.stat(follow_symlinks=False).st_mtime > MAX_AGE:
                os.unlink(e.path)
        except OSError:
            continue
