"""Write a file the caller named (``-o FILE``) all at once, safely as root.

The content goes to a new file with a random name in the target's
directory, created with ``O_CREAT|O_EXCL|O_NOFOLLOW``: a symlink or file
another user planted at a predictable temporary name (``.NAME.partial``) can
neither redirect the write nor be written through.  Once complete and
fsync'ed it is renamed over the target (a symlink at the target itself is
replaced, never followed), so readers see the old file or the whole new one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import BadInput

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def check_target(dest: str | os.PathLike[str]) -> Path:
    """BadInput unless ``dest`` names a file in an existing directory."""
    p = Path(dest)
    if p.is_dir():
        raise BadInput(f"output {p} is a directory; give a file name")
    if not p.parent.is_dir():
        raise BadInput(f"output directory {p.parent} does not exist")
    return p


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike[str]) -> Iterator[int]:
    """An fd open for writing; on a normal exit its file is fsync'ed and
    renamed to ``dest``, on an exception it is removed."""
    p = check_target(dest)
    dfd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd, tmp = _create(dfd, p.name)
        try:
            yield fd
            os.fsync(fd)
            os.rename(tmp, p.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        finally:
            os.close(fd)
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _create(dfd: int, name: str) -> tuple[int, str]:
    for _ in range(100):
        tmp = f".{name[:200]}.{os.urandom(8).hex()}.tmp"
        try:
            return os.open(tmp, _FLAGS, 0o666, dir_fd=dfd), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {name}")
