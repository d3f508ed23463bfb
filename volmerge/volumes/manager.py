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
import copy
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from volmerge.runtime import fsutil, incomplete
from volmerge.runtime import sys as rsys
from volmerge.runtime.store import register_sweeper

from ..errors import BadInput, Conflict, NotDone, NotFound
from . import faults
from .model import (
    LIVE,
    SEED,
    Change,
    Generation,
    Layer,
    Manifest,
    Snapshot,
    Volume,
    check_name,
    check_tag,
    new_id,
)
from .pool import Pool

OVERLAY_OPTS = {"redirect_dir": "off", "metacopy": "off", "index": "off"}


@dataclass
class ContainerHooks:
    """What the volume manager needs from the container engine to snapshot a
    volume that a running container uses."""

    pid_of: Callable[[str], int | None]
    pause: Callable[[str], None]
    resume: Callable[[str], None]
    name_of: Callable[[str], str] = lambda cid: cid[:12]


def max_lowers() -> int:
    """Lower layers one overlay may stack (measured: 500 on this kernel with
    ``lowerdir+=``); ``VOLMERGE_VOLUME_MAX_LAYERS`` lowers it for tests."""
    limit = rsys.overlay_max_lowers()
    env = os.environ.get("VOLMERGE_VOLUME_MAX_LAYERS")
    if env and env.isdigit() and 2 <= int(env) <= limit:
        return int(env)
    return limit


# label of a volume made for an image VOLUME nobody mounted (removed with a --rm container)
ANONYMOUS_FOR = "io.volmerge.anonymous-for"

class VolumeManager:
    def __init__(self, store, hooks: ContainerHooks | None = None) -> None:  # type: ignore[no-untyped-def]
        self.store = store
        self.hooks = hooks
        self.pool = Pool(store)
        if not getattr(store, "_volumes_recovered", False):
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
        self.store._volumes_recovered = True

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

    def list(self, *, sizes: bool = False) -> list[Volume]:
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

    def snapshots(self, name: str) -> list[Snapshot]:
        m = self._read(name)
        return [self._snap(m, g) for g in m.generations]

    def users(self, name: str) -> list[str]:
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

    def stack(self, name: str, at: str | None = None) -> list[Path]:
        """Layer dirs bottom first: the seed, generations up to ``at``
        (default: all, plus the live layer)."""
        m = self._read(name)
        if at is None or at == LIVE:
            return [self.pool.diff(lid) for lid in m.frozen_layers() + [m.live]]
        idx = m.find(at)
        return [self.pool.diff(lid) for lid in m.frozen_layers()[: idx + 2]]

    # -- mounting ---------------------------------------------------------------
    def _lowers(self, m: Manifest) -> list[str]:
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
                usable = seed is not None and Path(seed).is_dir() and not Path(seed).is_symlink()
                labels = {ANONYMOUS_FOR: container_id} if anonymous else None
                m = self._create_locked(name, Path(seed) if usable else None, labels)
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
            pass  # another container uses it now: it stays, as Docker's would

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

    def prune(self) -> list[str]:
        """Remove every volume no container uses; returns their names."""
        gone = []
        for name in self.pool.names():
            m = self.pool.read(name)
            if m is not None and not m.users:
                with contextlib.suppress(Conflict, NotFound):
                    self.remove(name)
                    gone.append(name)
        with self.pool.commit_lock():
            self.pool.collect()
        return gone

    def _who(self, m: Manifest) -> str:
        names = []
        for cid, mode in m.users.items():
            label = self.hooks.name_of(cid) if self.hooks else cid[:12]
            names.append(f"container {label} ({mode})")
        return ", ".join(names)

    # -- snapshot -----------------------------------------------------------------
    def snapshot(self, name: str, tag: str | None = None, *, pause: bool = False,
                 force: bool = False) -> Snapshot:
        """Freeze the live layer as a generation and start an empty one.

        While a container has the volume mounted read-write the snapshot is
        refused unless ``pause`` (freeze the container around the swap) or
        ``force`` (swap without freezing: writes in flight may straddle it).
        """
        check_name(name)
        if tag is not None:
            check_tag(tag)
        with self._lock_existing(name):
            m = self._read(name)
            if tag is not None and any(g.tag == tag for g in m.generations):
                raise Conflict(f"volume {name!r} already has a snapshot tagged {tag!r}")
            running = self._running_users(m)
            writers = [cid for cid in running if m.users[cid] == "rw"]
            if writers and not (pause or force):
                raise Conflict(
                    f"volume {name!r} is mounted read-write by {self._who(m)}; "
                    "use --pause to freeze it for the snapshot, --force to take it anyway, "
                    "or stop the container"
                )
            compacted = False
            if len(m.frozen_layers()) + 1 > max_lowers():
                self._compact_locked(m, defer_collect=True)
                m = self._read(name)
                compacted = True
                if len(m.frozen_layers()) + 1 > max_lowers():
                    raise NotDone(
                        f"volume {name!r} has {len(m.generations)} tagged snapshots: "
                        f"at most {max_lowers() - 2} fit in one overlay"
                    )
            paused: list[str] = []
            try:
                if pause and self.hooks:
                    for cid in writers:
                        self.hooks.pause(cid)
                        paused.append(cid)
                with self.pool.commit_lock():
                    gen = self._freeze(m, tag, running)
            finally:
                for cid in paused:
                    self.hooks.resume(cid)  # type: ignore[union-attr]
            if compacted:
                with self.pool.commit_lock():
                    self.pool.collect()
            return self._snap(m, gen, compacted)

    def _running_users(self, m: Manifest) -> dict[str, int | None]:
        """Users that may have the volume mounted now, with their pid."""
        if not m.users:
            return {}
        if self.hooks is None:
            return {cid: None for cid in m.users}
        out = {}
        for cid in m.users:
            pid = self.hooks.pid_of(cid)
            if pid is not None:
                out[cid] = pid
        return out

    def _freeze(self, m: Manifest, tag: str | None, running: dict[str, int | None]) -> Generation:
        from . import swap

        merged = self.pool.merged(m.name)
        mounted = rsys.is_mountpoint(merged)
        if running and any(pid is None for pid in running.values()) and mounted:
            raise Conflict(
                f"volume {m.name!r} is used by {self._who(m)} and this command cannot reach "
                "the container engine to swap its mount; stop the container first"
            )
        new_live = self.pool.new_layer(live=True, like=m.live)
        faults.point("snapshot.layer-made")
        ns_mounts = []
        if mounted:
            dev = swap.dev_of(merged)
            ns_mounts = [swap.mounts_of(pid, dev) for pid in running.values() if pid]
        done: list[swap.NsMount] = []
        try:
            for nm in ns_mounts:
                code = swap.unmount_in(nm)
                if code:
                    raise Conflict(f"cannot snapshot volume {m.name!r}: {swap.describe(code)}")
                done.append(nm)
            if mounted:
                self._unmount(m.name)
        except BaseException:
            for nm in done:  # put the old overlay back where it was
                swap.mount_into(nm, merged)
            fsutil.rmtree(self.pool.layer(new_live))
            raise
        faults.point("snapshot.unmounted")
        gen = Generation(id=new_id(6), layer=m.live, tag=tag)
        old_live = m.live
        m.generations.append(gen)
        m.live = new_live
        self.pool.write(m)
        faults.point("snapshot.committed")
        if mounted:
            self._mount(m)
            for nm in ns_mounts:
                code = swap.mount_into(nm, merged)
                if code:
                    raise NotDone(
                        f"snapshot {gen.id} of {m.name!r} taken, but remounting it in pid "
                        f"{nm.pid} failed: {swap.describe(code)}; restart the container"
                    )
        faults.point("snapshot.remounted")
        self.pool.drop_work(old_live)
        return gen

    # -- rollback -----------------------------------------------------------------
    def rollback(self, name: str, to: str | None = None, *, keep_as: str | None = None) -> Snapshot | None:
        """Return to snapshot ``to`` (default: the latest, refused when there
        is none: the seed discards all data, so it must be asked for; ``seed``
        for the seed) by dropping the layers above it.  ``keep_as`` keeps the
        dropped state as a new volume.  Returns the snapshot rolled back to."""
        check_name(name)
        if keep_as is not None:
            check_name(keep_as)
        with self._lock_existing(name):
            m = self._read(name)
            if to is not None:
                check_name(to, "snapshot")
                idx = m.find(to)
            else:
                idx = len(m.generations) - 1
            if m.users:
                raise Conflict(f"volume {name!r} is in use by {self._who(m)}; stop it first")
            if to is None and not m.generations:
                raise BadInput(f"volume {name!r} has no snapshot to roll back to; "
                               "--to seed discards all its data")
            if keep_as is not None and self.pool.exists(keep_as):
                raise Conflict(f"volume {keep_as!r} already exists")
            with self.pool.commit_lock():
                new = replace(m, generations=m.generations[: idx + 1],
                              live=self.pool.new_layer(live=True, like=m.frozen_layers()[idx + 1]),
                              users={})
                faults.point("rollback.layer-made")
                if keep_as is not None:
                    kept = replace(copy.deepcopy(m), name=keep_as, users={}, created=time.time())
                    self.pool.commit_many({name: new, keep_as: kept}, "rollback")
                else:
                    self.pool.write(new)
                    faults.point("rollback.committed")
                    self.pool.collect(m.layer_ids() - new.layer_ids())
                faults.point("rollback.applied")
            return self._snap(new, new.generations[idx]) if idx >= 0 else None

    # -- clone --------------------------------------------------------------------
    def clone(self, name: str, new: str, *, from_: str | None = None) -> Volume:
        """A new volume sharing the frozen layers of ``name`` up to ``from_``
        (default: its current state; the live layer is frozen first by an
        untagged snapshot when it holds anything)."""
        check_name(name)
        check_name(new)
        if from_ is not None:
            check_name(from_, "snapshot")
        if name == new:
            raise Conflict(f"volume {new!r} already exists")
        with self._lock_existing(name):
            m = self._read(name)
            idx = m.find(from_) if from_ is not None else None
            if self.pool.exists(new):
                raise Conflict(f"volume {new!r} already exists")
        if idx is None and any(os.scandir(self.pool.diff(m.live))):
            self.snapshot(name)
        with self._lock_existing(name), self.pool.volume_lock(new):
            m = self._read(name)
            if self.pool.exists(new):
                raise Conflict(f"volume {new!r} already exists")
            gens = m.generations if idx is None else m.generations[: idx + 1]
            with self.pool.commit_lock():
                top = gens[-1].layer if gens else m.seed
                c = Manifest(name=new, seed=m.seed, base=m.base, live=self.pool.new_layer(live=True, like=top),
                             generations=copy.deepcopy(gens), labels=dict(m.labels))
                faults.point("clone.layer-made")
                self.pool.write(c)
                faults.point("clone.committed")
        return self.get(new, sizes=False)

    def clone_live(self, name: str, new: str, *, pause: bool = True) -> Volume:
        """A clone of the volume's state *now*, without touching the volume:
        the frozen layers are shared (O(1)) and the live layer's content (only
        what changed since the last snapshot) is copied into the clone's top
        generation while the volume's running users are paused.  Used by the
        upgrade rehearsal, which must leave the live volume and its container
        exactly as they were (a snapshot would swap the container's mount)."""
        from .tree import copy_tree

        check_name(name)
        check_name(new)
        if name == new or self.pool.exists(new):
            raise Conflict(f"volume {new!r} already exists")
        with self._lock_existing(name), self.pool.volume_lock(new):
            m = self._read(name)
            writers = [cid for cid, mode in m.users.items() if mode == "rw"]
            running = self._running_users(m) if writers else {}
            paused: list[str] = []
            with self.pool.building("vol-clone-") as built:
                try:
                    if pause and self.hooks:
                        for cid in writers:
                            if cid in running:
                                self.hooks.pause(cid)
                                paused.append(cid)
                    if rsys.is_mountpoint(self.pool.merged(name)):
                        rsys.syncfs(self.pool.merged(name))
                    copy_tree(self.pool.diff(m.live), built / "diff")
                finally:
                    for cid in paused:
                        self.hooks.resume(cid)  # type: ignore[union-attr]
                with self.pool.commit_lock():
                    top = self.pool.adopt(built)
                    gens = copy.deepcopy(m.generations) + [Generation(id=new_id(6), layer=top)]
                    c = Manifest(name=new, seed=m.seed, base=m.base,
                                 live=self.pool.new_layer(live=True, like=top),
                                 generations=gens, labels=dict(m.labels))
                    self.pool.write(c)
        return self.get(new, sizes=False)

    # -- compaction -----------------------------------------------------------------
    def compact(self, name: str) -> tuple[int, int]:
        """Squash untagged generations (each run up to the next tagged one);
        returns (layers before, layers after).  Tagged snapshots stay
        restorable; untagged snapshot ids inside a squashed run are gone."""
        check_name(name)
        with self._lock_existing(name):
            m = self._read(name)
            before = len(m.frozen_layers())
            self._compact_locked(m, defer_collect=bool(m.users))
            return before, len(self._read(name).frozen_layers())

    def _compact_locked(self, m: Manifest, *, defer_collect: bool) -> None:
        from .tree import squash

        runs: list[list[Generation]] = [[]]
        for g in m.generations:
            runs[-1].append(g)
            if g.tag is not None:
                runs.append([])
        todo = [r for r in runs if len(r) >= 2]
        if not todo:
            return
        with contextlib.ExitStack() as stack:
            built: dict[str, Path] = {}
            for run in todo:
                d = stack.enter_context(self.pool.building("vol-compact-"))
                squash([self.pool.diff(g.layer) for g in run], d / "diff")
                built[run[-1].id] = d
            faults.point("compact.squashed")
            with self.pool.commit_lock():
                new_layer = {sid: self.pool.adopt(d) for sid, d in built.items()}
                faults.point("compact.in-pool")
                gens = []
                for run in runs:
                    if len(run) >= 2:
                        top = run[-1]
                        gens.append(Generation(top.id, new_layer[top.id], top.tag, top.created))
                    else:
                        gens.extend(run)
                new = replace(m, generations=gens)
                self.pool.write(new)
                faults.point("compact.committed")
                if not defer_collect:
                    self.pool.collect(m.layer_ids() - new.layer_ids())
                faults.point("compact.collected")

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


def _sweep(store) -> None:  # type: ignore[no-untyped-def]
    if store.path("volumes", "_layers").exists():
        VolumeManager(store)


register_sweeper("volumes", _sweep)
