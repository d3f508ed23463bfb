"""Reading volumes and mounting their layer stacks: a manifest as a
``Volume`` value, the layer directories up to a snapshot, the merged overlay
a container bind-mounts, a read-only view at any point; and, when the store
is opened, finishing what a crash interrupted (:meth:`VolumeReader.recover`).
The operations that change volumes build on this class
(volumes.history, volumes.manager)."""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from volmerge.runtime import fsutil, incomplete
from volmerge.runtime import sys as rsys
from volmerge.runtime.store import Store

from ..errors import Conflict, NotFound
from .hooks import ContainerHooks
from .model import LIVE, Generation, Layer, Manifest, Snapshot, Volume, check_name
from .pool import Pool

OVERLAY_OPTS = {"redirect_dir": "off", "metacopy": "off", "index": "off"}


class VolumeReader:
    def __init__(self, store: Store, hooks: ContainerHooks | None = None) -> None:
        self.store = store
        self.hooks = hooks
        self.pool = Pool(store)
        if "volumes" not in store.recovered:
            self.recover()

    # -- crash recovery -----------------------------------------------------------
    def recover(self) -> None:
        """Finish or undo what a crash interrupted: replay committed journal
        records, drop volume dirs without a manifest, collect unreferenced
        layers, and remount the merged view of volumes that containers use."""
        with self.pool.commit_lock():
            self.pool.replay_journal()
            for e in os.listdir(self.pool.root):
                if e.startswith("_") or self.pool.exists(e):
                    continue
                with contextlib.suppress(OSError):
                    rsys.umount_tree(self.pool.vdir(e))
                self.pool.delete(e)
            self.pool.collect()
            self.pool.reap()
            for lid in os.listdir(self.pool.layers):  # a merge's output a crash left half done
                incomplete.sweep(self.pool.layer(lid))
            for name in self.pool.names():
                m = self.pool.read(name)
                if m is not None and m.users and not rsys.is_mountpoint(self.pool.merged(name)):
                    self._mount(m)
        self.store.recovered.add("volumes")

    # -- reading ----------------------------------------------------------------
    def _read(self, name: str) -> Manifest:
        check_name(name)
        m = self.pool.read(name)
        if m is None:
            raise NotFound(f"no such volume: {name}")
        return m

    def _lock_existing(self, name: str) -> contextlib.AbstractContextManager[int]:
        """The volume's lock, for an operation on a volume that must exist:
        NotFound first, so that a missing name leaves no lock file behind."""
        self._read(name)
        return self.pool.volume_lock(name)

    def exists(self, name: str) -> bool:
        check_name(name)
        return self.pool.exists(name)

    def get(self, name: str, *, sizes: bool = True) -> Volume:
        return self._volume(self._read(name), sizes=sizes)

    def list(self, *, sizes: bool = False) -> builtins.list[Volume]:
        out = []
        for name in self.pool.names():
            m = self.pool.read(name)
            if m is not None:
                out.append(self._volume(m, sizes=sizes))
        return out

    def _volume(self, m: Manifest, *, sizes: bool) -> Volume:
        shared: dict[str, int] = {}
        if sizes:
            for other in self.pool.names():
                if other != m.name:
                    om = self.pool.read(other)
                    for lid in om.layer_ids() if om else ():
                        shared[lid] = shared.get(lid, 0) + 1

        def size(lid: str) -> int:
            return fsutil.dir_size(self.pool.diff(lid)) if sizes else -1

        layers = [Layer(m.seed, "seed", str(self.pool.diff(m.seed)), size(m.seed),
                        shared=m.seed in shared)]
        for g in m.generations:
            layers.append(Layer(g.layer, "generation", str(self.pool.diff(g.layer)), size(g.layer),
                                snapshot=g.id, tag=g.tag, created=g.created,
                                shared=g.layer in shared))
        layers.append(Layer(m.live, "live", str(self.pool.diff(m.live)), size(m.live)))
        if m.base != m.seed:
            layers.append(Layer(m.base, "base", str(self.pool.diff(m.base)), size(m.base),
                                shared=m.base in shared))
        return Volume(
            name=m.name, mountpoint=str(self.pool.merged(m.name)), created=m.created,
            labels=dict(m.labels), users=dict(m.users),
            snapshots=[self._snap(m, g) for g in m.generations], layers=layers,
            mounted=rsys.is_mountpoint(self.pool.merged(m.name)),
        )

    @staticmethod
    def _snap(m: Manifest, g: Generation, compacted: bool = False) -> Snapshot:
        return Snapshot(m.name, g.id, g.tag, g.created, g.layer, compacted)

    def snapshots(self, name: str) -> builtins.list[Snapshot]:
        m = self._read(name)
        return [self._snap(m, g) for g in m.generations]

    def users(self, name: str) -> builtins.list[str]:
        return list(self._read(name).users)

    def base_path(self, name: str) -> Path | None:
        """The content the volume's data was last merged against (the seed, or
        what :meth:`set_base` recorded): the *base* of the next merge."""
        m = self._read(name)
        return self.pool.diff(m.base)

    def live_upper(self, name: str) -> Path:
        """The live layer's directory: an overlay upper dir (whiteouts for
        deletions).  Write it only while no container uses the volume."""
        return self.pool.diff(self._read(name).live)

    def stack(self, name: str, at: str | None = None) -> builtins.list[Path]:
        """Layer dirs bottom first: the seed, generations up to ``at``
        (default: all, plus the live layer)."""
        m = self._read(name)
        if at is None or at == LIVE:
            return [self.pool.diff(lid) for lid in m.frozen_layers() + [m.live]]
        idx = m.find(at)
        return [self.pool.diff(lid) for lid in m.frozen_layers()[: idx + 2]]

    # -- mounting ---------------------------------------------------------------
    def _lowers(self, m: Manifest) -> builtins.list[str]:
        return [str(self.pool.diff(lid)) for lid in reversed(m.frozen_layers())]

    def _mount(self, m: Manifest) -> None:
        rsys.mount_overlay(self.pool.merged(m.name), self._lowers(m), str(self.pool.diff(m.live)),
                           str(self.pool.work(m.live)), extra=OVERLAY_OPTS)

    def _unmount(self, name: str, *, lazy: bool = False) -> None:
        merged = self.pool.merged(name)
        while rsys.is_mountpoint(merged):
            try:
                rsys.umount(merged, rsys.MNT_DETACH if lazy else 0)
            except OSError as exc:
                if exc.errno == 16:  # EBUSY
                    raise Conflict(
                        f"volume {name!r} is busy on the host ({merged}): a process holds a file there"
                    ) from None
                raise

    @contextlib.contextmanager
    def view(self, name: str, at: str | None = None) -> Iterator[Path]:
        """A read-only mount of the volume's content at snapshot ``at`` (or
        now: every frozen layer plus the live one), unmounted on exit."""
        layers = [str(p) for p in reversed(self.stack(name, at))]
        with self.pool.building("vol-view-") as d:
            target = d / "diff"
            rsys.mount_overlay(target, layers, readonly=True, extra=OVERLAY_OPTS)
            try:
                yield target
            finally:
                rsys.umount(target, rsys.MNT_DETACH)

    def _who(self, m: Manifest) -> str:
        names = []
        for cid, mode in m.users.items():
            label = self.hooks.name_of(cid) if self.hooks else cid[:12]
            names.append(f"container {label} ({mode})")
        return ", ".join(names)
