"""Write a file the caller named (``-o FILE``) all at once, safely as root.

The content goes to a new file with a random name in the target's
directory, created with ``O_CREAT|O_EXCL|O_NOFOLLOW``: a symlink or file
another user planted at a predictable temporary name (``.NAME.partial``) can
neither redirect the write nor be written through.  Once complete and
fsync'ed it is renamed over the target (a symlink at the target itself is
replaced, never followed), so readers see the old file or the whole new one.
``-`` is standard output instead (:func:`output`), as ``volume export -o -``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .atomicfile import AtomicFile
from .errors import BadInput

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import BinaryIO


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
    renamed to ``dest``, on an exception it is removed (runtime.atomicfile,
    ``private``: a random new name, no lock file at a predictable one)."""
    p = check_target(dest)
    with AtomicFile(p, None, private=True) as f:
        yield f.fd


class _Stream:
    """Standard output, forward only, with the ``tell()`` that ``tarfile``
    asks of the file it writes (a pipe has none)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.pos = f, 0

    def write(self, data: bytes) -> int:
        self.f.write(data)
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        self.f.flush()


@contextlib.contextmanager
def output(dest: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file to write ``dest``'s content to: :func:`atomic_output`'s,
    or standard output when ``dest`` is ``-`` (flushed at the end; the caller
    refuses a terminal)."""
    if str(dest) == "-":
        with os.fdopen(os.dup(1), "wb") as f:
            yield _Stream(f)  # type: ignore[misc]
        return
    with atomic_output(dest) as fd, os.fdopen(fd, "wb", closefd=False) as f:
        yield f
