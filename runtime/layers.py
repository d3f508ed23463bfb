"""The content-addressed layer store: ``layers/<diff_id hex>/diff``.

A layer is extracted once and shared by every image that lists its diff_id.
Extraction happens in a directory under the store's ``tmp/`` (marked
incomplete while it is built: runtime.incomplete), is verified against the diff_id, synced,
and then renamed into place, so a crash never leaves a partial layer where a
reader could find it.  The row in the ``layers`` table is written under the
layer's lock right after the rename; the sweeper removes directories without
a row and rows without a user (an image) whose lock nobody holds.

Callers hold :meth:`LayerStore.locked` for every layer they are about to
reference until their image row is committed; removal takes the same lock,
so a layer is never deleted under a load that counts on it.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from . import atomicfile, fsutil, incomplete
from .errors import BadInput, NotDone
from .store import Store

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the run path
if TYPE_CHECKING:
    from io import BufferedReader

    from .tarsafe import Extracted

_HEX64 = r"[0-9a-f]{64}"  # compiled (and cached) by re when first used


def work_dir(store: Store, prefix: str) -> contextlib.AbstractContextManager[Path]:
    """A directory under ``tmp/`` marked incomplete while the block runs
    (Store.building: the store's sweeper leaves it alone, and removes it
    after a crash)."""
    return store.building(prefix)


class LayerStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def dir(self, diff_id: str) -> Path:
        return self.store.path("layers", _hex(diff_id))

    def path(self, diff_id: str) -> Path:
        """The overlay-ready tree of the layer (what goes into lowerdir)."""
        return self.dir(diff_id) / "diff"

    @contextlib.contextmanager
    def locked(self, diff_ids: Iterable[str]) -> Iterator[None]:
        """Hold the locks of ``diff_ids`` (taken in sorted order: no deadlock)."""
        with contextlib.ExitStack() as stack:
            for d in sorted(set(diff_ids)):
                stack.enter_context(self.store.lock(f"layer-{_hex(d)}"))
            yield

    def present(self, diff_id: str) -> bool:
        row = self.store.db.execute("SELECT 1 FROM layers WHERE diff_id = ?", (diff_id,)).fetchone()
        return row is not None and self.path(diff_id).is_dir()

    def extract(self, diff_id: str, blob: Path | BufferedReader, work: Path, *, label: str,
                progress: Callable[[int, int], None] | None = None, size: int | None = None,
                verified: Callable[[], None] | None = None) -> Extracted:
        """Extract ``blob`` into ``work/diff`` (``work``: an empty directory
        of :func:`work_dir`) and check it against ``diff_id``.  Touches
        neither the database nor the layer store, so several layers may be
        extracted at once in threads; :meth:`install` moves them into place.
        ``blob`` may be a stream of ``size`` bytes still being downloaded:
        ``verified()`` then blocks until the blob's own digest is checked (or
        raises), before this returns."""
        tree = work / "diff"
        tree.mkdir()
        os.chmod(tree, 0o755)  # as a layer's "./" entry would, not the caller's umask
        from .tarsafe import extract_layer

        try:
            got = extract_layer(blob, tree, label=label, progress=progress, size=size)
        except BadInput:
            if verified is not None:
                verified()  # a blob failing its own digest is the cause to report
            raise
        except OSError as exc:
            raise NotDone(f"extracting {label} failed: {exc.strerror or exc}") from None
        if got.diff_id != diff_id:
            raise BadInput(
                f"digest mismatch for {label}: the image config says diff_id {diff_id}, "
                f"the uncompressed layer is {got.diff_id}"
            )
        if verified is not None:
            verified()
        return got

    def install(self, done: list[tuple[str, Path, Extracted]]) -> None:
        """Move layers :meth:`extract` made (``(diff_id, work, got)``) into
        place and record them in one transaction.  The caller holds
        :meth:`locked` for them and has made their trees durable (one
        ``syncfs`` for all, before this)."""
        if not done:
            return
        for diff_id, work, _got in done:
            final = self.dir(diff_id)
            if os.path.lexists(final):  # a directory without a row: a crash leftover
                self._discard_dir(final)
            os.rename(work, final)
        atomicfile.fsync_dir(self.store.path("layers"))
        now = time.time()
        with self.store.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO layers(diff_id, size, entries, created_at) VALUES (?, ?, ?, ?)",
                [(d, got.size, got.entries, now) for d, _w, got in done],
            )

    def ensure(self, diff_id: str, blob: Path | BufferedReader, *, label: str,
               progress: Callable[[int, int], None] | None = None, size: int | None = None,
               verified: Callable[[], None] | None = None) -> bool:
        """Make one layer present, extracting ``blob`` if needed (as
        :meth:`extract` then :meth:`install`).  The caller holds
        :meth:`locked` for ``diff_id``.  Returns True if it extracted."""
        if self.present(diff_id):
            return False
        with work_dir(self.store, "layer-") as work:
            got = self.extract(diff_id, blob, work, label=label, progress=progress, size=size,
                               verified=verified)
            atomicfile.syncfs(work)
            self.install([(diff_id, work, got)])
        return True

    def size(self, diff_id: str) -> int:
        row = self.store.db.execute("SELECT size FROM layers WHERE diff_id = ?", (diff_id,)).fetchone()
        return int(row[0]) if row else 0

    def remove_unused(self, diff_ids: Iterable[str], *, blocking: bool = True) -> list[str]:
        """Remove each layer that no image references any more."""
        removed = []
        for d in sorted(set(diff_ids)):
            try:
                with self.store.lock(f"layer-{_hex(d)}", blocking=blocking):
                    with self.store.transaction() as db:
                        used = db.execute("SELECT 1 FROM image_layers WHERE diff_id = ? LIMIT 1", (d,)).fetchone()
                        if used:
                            continue
                        db.execute("DELETE FROM layers WHERE diff_id = ?", (d,))
                    self._discard_dir(self.dir(d))
                    removed.append(d)
            except BlockingIOError:
                continue
        return removed

    def _discard_dir(self, path: Path) -> None:
        """Rename into tmp/ first (atomic), then delete: a crash mid-delete
        leaves a tmp/ leftover, never a half-deleted layer.  The directory is
        flock'ed first and renamed to a marked name (runtime.incomplete), so
        that another process's sweep of tmp/ leaves it to us while we delete
        it (it used to remove it under our feet: FileNotFoundError)."""
        import fcntl

        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            trash = self.store.path("tmp", incomplete.marked_name("trash-layer-"))
            os.rename(path, trash)
            fsutil.rmtree(trash)
        finally:
            os.close(fd)

    def sweep(self) -> None:
        """Crash leftovers: dirs without a row, rows without a user (unlocked)."""
        db = self.store.db
        rows = {r[0] for r in db.execute("SELECT diff_id FROM layers")}
        for name in os.listdir(self.store.path("layers")):
            d = "sha256:" + name
            if not re.fullmatch(_HEX64, name) or d in rows:
                continue
            try:
                with self.store.lock(f"layer-{name}", blocking=False):
                    if db.execute(
                        "SELECT 1 FROM layers WHERE diff_id = ?", (d,)
                    ).fetchone():
                        continue
                    self._discard_dir(self.store.path("layers", name))
            except BlockingIOError:
                continue
        orphans = [
            r[0] for r in db.execute(
                "SELECT diff_id FROM layers WHERE diff_id NOT IN (SELECT diff_id FROM image_layers)"
            )
        ]
        if orphans:
            self.remove_unused(orphans, blocking=False)


def _hex(diff_id: str) -> str:
    hx = diff_id.split(":", 1)[1] if diff_id.startswith("sha256:") else diff_id
    if not re.fullmatch(_HEX64, hx):
        raise BadInput(f"invalid layer digest {diff_id!r}")
    return hx
