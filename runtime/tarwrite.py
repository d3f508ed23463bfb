"""Small regular files of a layer, created by threads while the reader goes on.

Creating a file is a handful of system calls (open, write, fchown, fchmod,
utimensat, close) that run without the GIL, and most of a layer's entries
are small files: :class:`Writers` takes them in batches from the
extraction (:mod:`runtime.tarsafe`), which meanwhile parses and checks the
next entries, so the kernel's work and Python's overlap (``tar -x`` does
them one after the other).  A file's data is a view of the decompressed
chunk it came in: nothing is copied.

Every check stays with the extraction, before a file is queued: its path is
new in the layer (``O_EXCL``) and every ancestor a directory the layer made
(``O_NOFOLLOW`` on the last component).  What could change those ancestors
(removing or replacing an entry, a whiteout) or needs a file to exist (a
hardlink to it) waits for :meth:`Writers.barrier`, as does the end of the
layer; the first error of a writer is raised there (or at the next
:meth:`Writers.add`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

THREADS = 2
_BATCH = 48                 # files handed over at a time
_BATCH_BYTES = 1 << 20
_AHEAD = 8                  # batches queued at most
CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# (path, data, uid, gid, mode, mtime, xattrs: the member for ``set_xattrs`` or None)
Job = tuple[str, Any, int, int, int, "int | float", Any]


def write_file(job: Job, set_xattrs: Callable[[str, Any], None]) -> None:
    path, data, uid, gid, mode, mtime, xa = job
    fd = os.open(path, CREATE, 0o600)
    try:
        while data:
            data = data[os.write(fd, data):]
        os.fchown(fd, uid, gid)
        if xa is not None:
            set_xattrs(path, xa)
        os.fchmod(fd, mode)
        os.utime(fd, (mtime, mtime))
    finally:
        os.close(fd)


class Writers:
    """A few threads writing queued files; use as a context manager (the
    threads end with it, whatever happened)."""

    def __init__(self, set_xattrs: Callable[[str, Any], None], threads: int = THREADS) -> None:
        self.set_xattrs = set_xattrs
        self.cond = threading.Condition()
        self.queue: list[list[Job]] = []
        self.pending = 0             # batches queued or being written
        self.error: BaseException | None = None
        self.closed = False
        self.batch: list[Job] = []
        self.bytes = 0
        self.threads = [threading.Thread(target=self._run, name="tarsafe-write", daemon=True)
                        for _ in range(threads)]

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        with self.cond:
            self.closed = True
            self.queue.clear()
            self.cond.notify_all()
        for t in self.threads:
            t.join()

    def add(self, job: Job) -> None:
        if self.error is not None:
            self.barrier()
        self.batch.append(job)
        self.bytes += len(job[1])
        if len(self.batch) >= _BATCH or self.bytes >= _BATCH_BYTES:
            self._hand_over()

    def _hand_over(self) -> None:
        if not self.batch:
            return
        with self.cond:
            while self.pending >= _AHEAD and self.error is None:  # bounds the chunks held
                self.cond.wait()
            self.queue.append(self.batch)
            self.pending += 1
            self.cond.notify()
        self.batch, self.bytes = [], 0

    def barrier(self) -> None:
        """Every queued file written; raises a writer's first error."""
        self._hand_over()
        with self.cond:
            while self.pending and self.error is None:
                self.cond.wait()
            if self.error is not None:
                raise self.error

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.closed:
                    self.cond.wait()
                if self.closed:
                    return
                batch = self.queue.pop(0)
            try:
                for job in batch:
                    write_file(job, self.set_xattrs)
            except BaseException as exc:  # handed to the extraction, raised there
                with self.cond:
                    if self.error is None:
                        self.error = exc
                    self.cond.notify_all()
            finally:
                with self.cond:
                    self.pending -= 1
                    self.cond.notify_all()
