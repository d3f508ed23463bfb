"""The volume manager: volumes as stacks of overlay layers.

seed (read-only, what the image had) → frozen generations (snapshots) → live
upper, mounted as one overlay while a container uses the volume.  Snapshot,
rollback and clone only change which layer ids a manifest names: no byte of
data is copied, so they cost the same for 1 MB and 100 GB.

Every mutating operation follows one pattern (architecture.md, principles 3 and 4): build new
layers where no manifest names them (the pool, or the store's tmp/), then one
commit point (an atomic manifest rename, or a journal record when two volumes
change), then clean-up that the next command redoes if a crash cut it short
(:meth:`VolumeManager.recover`, also registered as a store sweeper).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from volmerge.runtime import fsutil
from volmerge.runtime import sys as rsys
from volmerge.runtime.store import Store, register_sweeper

from ..errors import BadInput, Conflict, NotFound
from . import faults
from .history import VolumeHistory
from .model import LIVE, SEED, Change, Generation, Manifest, Volume, check_name, new_id

# label of a volume made for an image VOLUME nobody mounted (removed with a --rm container)
ANONYMOUS_FOR = "io.volmerge.anonymous-for"


class VolumeManager(VolumeHistory):
    """The volume API the CLI, the upgrade and the engine use: reading and
    mounting (volumes.reader), history (volumes.history), and here the
    volumes' own lifecycle, the base of the next merge, diff, export and
    import."""

    # -- create / attach / detach / remove -----------------------------------------
    def create(self, name: str, seed: Path | None = None,
               labels: dict[str, str] | None = None) -> Volume:
        check_name(name)
        with self.pool.volume_lock(name):
            self._create_locked(name, seed, labels)
        return self.get(name, sizes=False)

    def _create_locked(self, name: str, seed: Path | None, labels: dict[str, str] | None) -> Manifest:
        if self.pool.exists(name):
            raise Conflict(f"volume {name!r} already exists")
        if seed is not None:
            seed = Path(seed)
            if seed.is_symlink() or not seed.is_dir():
                raise BadInput(f"seed {seed} is not a directory")
        with contextlib.ExitStack() as stack:
            built = stack.enter_context(self.pool.building("vol-seed-")) if seed else None
            if built is not None:
                from .tree import copy_tree

                copy_tree(seed, built / "diff")  # type: ignore[arg-type]
            faults.point("create.layers-built")
            with self.pool.commit_lock():
                seed_id = self.pool.adopt(built) if built else self.pool.new_layer(live=False)
                live = self.pool.new_layer(live=True, like=seed_id)
                faults.point("create.layers-in-pool")
                m = Manifest(name=name, seed=seed_id, base=seed_id, live=live,
                             labels=dict(labels or {}))
                self.pool.write(m)
                faults.point("create.committed")
        return m

    def attach(self, name: str, container_id: str, seed: Path | None, *,
               readonly: bool = False, anonymous: bool = False) -> Path:
        """The engine's entry point (runtime.volumes_api.VolumeProvider):
        create and seed the volume if missing, record the user, mount the
        merged view and return it for the engine to bind-mount."""
        check_name(name)
        with self.pool.volume_lock(name):
            m = self.pool.read(name)
            if m is None:
                src = Path(seed) if seed is not None else None
                usable = src if src is not None and src.is_dir() and not src.is_symlink() else None
                labels = {ANONYMOUS_FOR: container_id} if anonymous else None
                m = self._create_locked(name, usable, labels)
            with self.pool.commit_lock():
                m.users[container_id] = "ro" if readonly else "rw"
                self.pool.write(m)
                if not rsys.is_mountpoint(self.pool.merged(name)):
                    self._mount(m)
        return self.pool.merged(name)

    def detach(self, name: str, container_id: str) -> None:
        check_name(name)
        with self.pool.volume_lock(name):
            m = self.pool.read(name)
            if m is None or container_id not in m.users:
                return
            with self.pool.commit_lock():
                del m.users[container_id]
                self.pool.write(m)
                if not m.users:
                    try:
                        self._unmount(name)
                    except Conflict:
                        self._unmount(name, lazy=True)

    def discard(self, name: str, container_id: str) -> None:
        """The engine's ``run --rm`` clean-up (VolumeProvider.discard)."""
        m = self.pool.read(name)
        if m is None or m.labels.get(ANONYMOUS_FOR) != container_id:
            return
        try:
            self.remove(name)
        except Conflict:
            return  # another container uses it now: it stays, as Docker's would
        # Its lock file too, or every `run --rm` leaves one (found by
        # bench/soak.py): safe for an anonymous volume's name only, which
        # nothing else uses (a named volume's waiter could lock the unlinked file).
        with self.pool.volume_lock(name), contextlib.suppress(FileNotFoundError):
            (self.store.root / "locks" / f"volume-{name}.lock").unlink()

    def remove(self, name: str, force: bool = False) -> None:
        """Remove a volume; refused while a container uses it (``force``
        removes it anyway: only for users that are known to be gone)."""
        check_name(name)
        with self._lock_existing(name):
            m = self._read(name)
            if m.users and not force:
                raise Conflict(f"volume {name!r} is in use by {self._who(m)}")
            with self.pool.commit_lock():
                self._unmount(name, lazy=True)
                self.pool.delete(name)
                faults.point("remove.committed")
                self.pool.collect(m.layer_ids())

    def prune(self, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Remove every volume no container uses, but those in ``keep`` (the
        volumes a stopped container names); returns their names."""
        gone = []
        for name in self.pool.names():
            m = self.pool.read(name)
            if m is not None and not m.users and name not in keep:
                with contextlib.suppress(Conflict, NotFound):
                    self.remove(name)
                    gone.append(name)
        with self.pool.commit_lock():
            self.pool.collect()
        return gone

    # -- base for merges --------------------------------------------------------------
    def set_base(self, name: str, src: Path) -> None:
        """Record ``src`` (the new image's content at the mount path) as the
        base of the next three-way merge; the old base goes if unused."""
        check_name(name)
        src = Path(src)
        with self._lock_existing(name):
            m = self._read(name)
            with self.pool.building("vol-base-") as d:
                from .tree import copy_tree

                copy_tree(src, d / "diff")
                with self.pool.commit_lock():
                    old = m.base
                    m.base = self.pool.adopt(d)
                    self.pool.write(m)
                    self.pool.collect({old} - m.layer_ids())

    # -- diff / export / import -------------------------------------------------------
    def diff(self, name: str, from_: str | None = None, to: str | None = None) -> list[Change]:
        """Paths added, modified and deleted between two points (snapshot tags
        or ids, ``seed``, ``live``).  Default: from the latest snapshot (or the
        seed) to the current state."""
        from .diff import diff_stacks

        m = self._read(name)
        n = len(m.generations)
        def index(point: str | None, default: int) -> int:
            if point is None:
                return default
            if point == LIVE:
                return n + 1
            check_name(point, "snapshot")
            return m.find(point) + 1
        a = index(from_, n)
        b = index(to, n + 1)
        if a > b:
            raise BadInput(f"--from {from_} is newer than --to {to or LIVE}")
        layers = [self.pool.diff(lid) for lid in m.frozen_layers() + [m.live]]
        return diff_stacks(layers[: a + 1], layers[: b + 1])

    def export(self, name: str, out: str | os.PathLike[str] | int, at: str | None = None) -> None:
        """Stream a tar of the merged view to ``out`` (a path, ``-`` or an fd)."""
        from .export import write_tar

        if at is not None and at not in (LIVE, SEED):
            check_name(at, "snapshot")
        m = self._read(name)
        if at is not None and at != LIVE:
            m.find(at)
        with self.view(name, at) as v:
            write_tar(v, out)

    def import_(self, name: str, path: str | os.PathLike[str] | int,
                labels: dict[str, str] | None = None) -> Volume:
        """A new volume whose content is the tar at ``path`` (``-``: stdin):
        empty seed, one generation holding the content, empty live layer."""
        from .export import read_tar

        check_name(name)
        with self.pool.volume_lock(name):
            if self.pool.exists(name):
                raise Conflict(f"volume {name!r} already exists")
            with self.pool.building("vol-import-") as d:
                cleared = read_tar(path, d / "diff")
                if cleared:
                    sys.stderr.write(
                        f"volmerge: warning: set-user-ID/set-group-ID bits cleared on "
                        f"{len(cleared)} file{'s' if len(cleared) > 1 else ''} "
                        f"(first: {fsutil.short(cleared[0])})\n")
                with self.pool.commit_lock():
                    data = self.pool.adopt(d)
                    seed = self.pool.new_layer(live=False)
                    m = Manifest(name=name, seed=seed, base=seed,
                                 live=self.pool.new_layer(live=True, like=data),
                                 generations=[Generation(new_id(6), data, None)],
                                 labels=dict(labels or {}))
                    self.pool.write(m)
        return self.get(name, sizes=False)



def _sweep(store: Store) -> None:
    if store.path("volumes", "_layers").exists():
        VolumeManager(store)


register_sweeper("volumes", _sweep)
