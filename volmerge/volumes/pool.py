"""Where a volume's bytes live on disk, and the commit points.

Layout below ``<store>/volumes/`` (volume names start with a letter or digit,
so the ``_`` entries can never clash with a volume)::

    _layers/<id>/diff     one layer's content (an overlay diff: whiteouts,
                          opaque dirs); shared by every volume naming it
    _layers/<id>/work     the overlay workdir, only while the layer is live
    _journal/<id>.json    an operation that changes several manifests at once
    <name>/manifest.json  the volume (model.Manifest), the whole truth
    <name>/merged/        mount point of the merged view while it is used

Frozen layers are immutable; a layer is garbage exactly when no manifest (and
no pending journal) names it and no mount in this namespace uses it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from volmerge.runtime import atomicfile, fsutil

from .model import Manifest, new_id

if TYPE_CHECKING:
    from volmerge.runtime.store import Store

TRASH = "~"


class Pool:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.reap_now = True
        self.root = store.path("volumes")
        self.layers = self.root / "_layers"
        self.journal = self.root / "_journal"
        for d in (self.layers, self.journal):
            d.mkdir(parents=True, exist_ok=True)

    # -- paths ------------------------------------------------------------------
    def vdir(self, name: str) -> Path:
        return self.root / name

    def manifest_path(self, name: str) -> Path:
        return self.root / name / "manifest.json"

    def merged(self, name: str) -> Path:
        return self.root / name / "merged"

    def layer(self, lid: str) -> Path:
        return self.layers / lid

    def diff(self, lid: str) -> Path:
        return self.layers / lid / "diff"

    def work(self, lid: str) -> Path:
        return self.layers / lid / "work"

    # -- locks ------------------------------------------------------------------
    def volume_lock(self, name: str) -> contextlib.AbstractContextManager[int]:
        """Serialises operations on one volume (held for the whole operation)."""
        return self.store.lock(f"volume-{name}")

    def commit_lock(self) -> contextlib.AbstractContextManager[int]:
        """Held around adopting layers, commit points and garbage collection,
        always taken after a volume lock (never the other way round)."""
        return self.store.lock("volumes")

    # -- manifests ----------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return self.manifest_path(name).exists()

    def read(self, name: str) -> Manifest | None:
        try:
            data = self.manifest_path(name).read_bytes()
        except FileNotFoundError:
            return None
        return Manifest.from_json(json.loads(data))

    def names(self) -> list[str]:
        out = []
        for e in sorted(os.listdir(self.root)):
            if not e.startswith("_") and (self.root / e / "manifest.json").exists():
                out.append(e)
        return out

    def write(self, m: Manifest) -> None:
        """The commit point of every single-volume operation."""
        d = self.vdir(m.name)
        if not d.exists():
            d.mkdir()
            (d / "merged").mkdir()
            atomicfile.fsync_dir(self.root)
        atomicfile.atomic_write(self.manifest_path(m.name), json.dumps(m.to_json(), indent=1))

    def delete(self, name: str) -> None:
        """Commit point of removal: the manifest goes, then the directory."""
        p = self.manifest_path(name)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            atomicfile.fsync_dir(p.parent)
        fsutil.rmtree(self.vdir(name))

    # -- journal: atomic change of several manifests ------------------------------
    def commit_many(self, changes: dict[str, Manifest | None], fault_prefix: str) -> None:
        from . import faults

        jid = new_id()
        record = {n: (m.to_json() if m is not None else None) for n, m in changes.items()}
        atomicfile.atomic_write(self.journal / f"{jid}.json", json.dumps(record))
        faults.point(f"{fault_prefix}.journal-written")
        self._apply(jid, record, fault_prefix)

    def _apply(self, jid: str, record: dict[str, Any], fault_prefix: str | None = None) -> None:
        from . import faults

        for i, (name, data) in enumerate(record.items()):
            if data is None:
                self.delete(name)
            else:
                self.write(Manifest.from_json(data))
            if i == 0 and fault_prefix:
                faults.point(f"{fault_prefix}.applied-one")
        (self.journal / f"{jid}.json").unlink()
        atomicfile.fsync_dir(self.journal)

    def replay_journal(self) -> None:
        """Roll forward every operation whose journal record is durable."""
        for e in sorted(os.listdir(self.journal)):
            p = self.journal / e
            if e.endswith(".json"):
                self._apply(e[:-5], json.loads(p.read_bytes()))
            else:  # a record that never finished being written: never committed
                p.unlink()

    # -- layers -----------------------------------------------------------------
    def new_layer(self, *, live: bool, like: str | None = None) -> str:
        """An empty layer, made in place: call with the commit lock held, so no
        collector can take it for garbage before the manifest names it.
        ``like``: the layer below it, whose root owner and mode it takes (an
        overlay's root shows the upper's, e.g. a 0700 postgres data dir)."""
        lid = new_id()
        os.mkdir(self.layer(lid))
        os.mkdir(self.diff(lid), 0o755)
        if like is not None:
            st = os.stat(self.diff(like))
            os.chown(self.diff(lid), st.st_uid, st.st_gid)
            os.chmod(self.diff(lid), st.st_mode & 0o7777)
        else:
            os.chmod(self.diff(lid), 0o755)  # not the caller's umask: a volume's root
        if live:
            os.mkdir(self.work(lid), 0o700)
        atomicfile.fsync_dir(self.layer(lid))
        atomicfile.fsync_dir(self.layers)
        return lid

    @contextlib.contextmanager
    def building(self, prefix: str) -> Iterator[Path]:
        """A scratch layer dir (``<dir>/diff``) under the store's tmp/, marked
        incomplete (Store.building) so that a store opened meanwhile by
        another process leaves it alone; swept after a crash."""
        with self.store.building(prefix) as d:
            (d / "diff").mkdir()
            yield d

    def adopt(self, built: Path) -> str:
        """Move a scratch layer into the pool (commit lock held)."""
        lid = new_id()

        atomicfile.syncfs(built)
        os.rename(built, self.layer(lid))
        atomicfile.fsync_dir(self.layers)
        return lid

    def drop_work(self, lid: str) -> None:
        """A frozen layer needs no workdir; best effort (the collector and
        ``compact`` never read it)."""
        with contextlib.suppress(OSError):
            fsutil.rmtree(self.work(lid))

    # -- garbage ------------------------------------------------------------------
    def referenced(self) -> set[str]:
        refs: set[str] = set()
        for name in os.listdir(self.root):
            if name.startswith("_"):
                continue
            m = self.read(name)
            if m is not None:
                refs |= m.layer_ids()
        for e in os.listdir(self.journal):
            if e.endswith(".json"):
                for data in json.loads((self.journal / e).read_bytes()).values():
                    if data is not None:
                        refs |= Manifest.from_json(data).layer_ids()
        return refs

    def mounted_layers(self) -> set[str]:
        """Layers an overlay mount in this namespace still uses."""
        marker = f"{self.layers}/"
        used: set[str] = set()
        with open("/proc/self/mountinfo") as f:
            for line in f:
                if marker not in line:
                    continue
                for opt in line.rsplit(" - ", 1)[-1].split(","):
                    _, _, val = opt.partition("=")
                    if val.startswith(marker):
                        used.add(val[len(marker):].split("/", 1)[0])
        return used

    def collect(self, candidates: set[str] | None = None) -> list[str]:
        """Drop unreferenced layers (commit lock held).  ``candidates``
        limits the scan to layers an operation just released.

        A dropped layer is first renamed to ``_layers/~<id>`` (O(1), so a
        rollback that discards 10 GB stays instant) and deleted by
        :meth:`reap`, right away or, when ``reap_now`` is off (the CLI), by a
        background process after the command has answered."""
        refs = self.referenced() | self.mounted_layers()
        pool = {e for e in os.listdir(self.layers) if not e.startswith(TRASH)} \
            if candidates is None else candidates
        gone = []
        for lid in sorted(pool - refs):
            if self.layer(lid).exists():
                os.rename(self.layer(lid), self.layers / f"{TRASH}{lid}")
                gone.append(lid)
        if gone and self.reap_now:
            self.reap()
        return gone

    def reap(self) -> None:
        """Delete dropped layers (no lock needed: nothing names them).  Best
        effort: a layer that cannot be deleted (a file a container made
        immutable, a mount inside it) stays in the trash for the next reap
        instead of failing every volume command (recover() reaps too)."""
        for e in os.listdir(self.layers):
            if e.startswith(TRASH):
                with contextlib.suppress(OSError):
                    fsutil.rmtree(self.layers / e)

    def has_trash(self) -> bool:
        return any(e.startswith(TRASH) for e in os.listdir(self.layers))

    def reap_in_background(self) -> None:
        """Delete dropped layers in a detached grandchild process, so that the
        command's time does not depend on how much data it discarded."""
        if not self.has_trash():
            return
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.setsid()
                if os.fork() == 0:
                    null = os.open(os.devnull, os.O_RDWR)
                    for fd in (0, 1, 2):
                        os.dup2(null, fd)
                    self.reap()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)

