"""A volume's layer stack over time: snapshot (freeze the live layer, swap
the mount of a running container), rollback (drop the layers above a
snapshot), clone (share the frozen layers) and compaction (squash untagged
generations).  Each changes which layer ids a manifest names, at one commit
point (docs/architecture.md, principles 3 and 4)."""

from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import replace
from pathlib import Path

from volmerge.runtime import atomicfile, fsutil
from volmerge.runtime import sys as rsys

from ..errors import BadInput, Conflict, NotDone
from . import faults
from .model import Generation, Manifest, Snapshot, Volume, check_name, check_tag, new_id
from .reader import VolumeReader


def max_lowers() -> int:
    """Lower layers one overlay may stack (measured: 500 on this kernel with
    ``lowerdir+=``); ``VOLMERGE_VOLUME_MAX_LAYERS`` lowers it for tests."""
    limit = rsys.overlay_max_lowers()
    env = os.environ.get("VOLMERGE_VOLUME_MAX_LAYERS")
    if env and env.isdigit() and 2 <= int(env) <= limit:
        return int(env)
    return limit


class VolumeHistory(VolumeReader):
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
            if tag is not None and any(g.id == tag for g in m.generations):
                # --to / --from / --at take a tag or an id: the tag would shadow the id
                raise Conflict(f"invalid snapshot tag {tag!r}: it is the id of another "
                               f"snapshot of volume {name!r}")
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
        out: dict[str, int | None] = {}
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

    def clone_live(self, name: str, new: str, *, pause: bool = True,
                   stamp: str | None = None, labels: dict[str, str] | None = None) -> Volume:
        """A clone of the volume's state *now*, without touching the volume:
        the frozen layers are shared (O(1)) and the live layer's content (only
        what changed since the last snapshot) is copied into the clone's top
        generation while the volume's running users are paused.  Used by the
        upgrade rehearsal, which must leave the live volume and its container
        exactly as they were (a snapshot would swap the container's mount),
        and by the upgrade when a held file refuses the snapshot's swap.

        ``stamp``: the clone gets that label set to the ctime (ns) of a file
        made on the store's file system while the users are paused: every
        change the users make after the copy gets a ctime at or after it
        (the kernel sets ctime from the same clock; nobody can set it).
        ``labels`` are added to the clone's (the volume's own)."""
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
                    faults.point("clone-live.paused")
                    labels = {**m.labels, **(labels or {})}
                    if stamp is not None:
                        labels[stamp] = str(fsutil.ctime_now(built))
                    if rsys.is_mountpoint(self.pool.merged(name)):
                        atomicfile.syncfs(self.pool.merged(name))
                    copy_tree(self.pool.diff(m.live), built / "diff")
                finally:
                    for cid in paused:
                        self.hooks.resume(cid)  # type: ignore[union-attr]
                with self.pool.commit_lock():
                    top = self.pool.adopt(built)
                    gens = copy.deepcopy(m.generations) + [Generation(id=new_id(6), layer=top)]
                    c = Manifest(name=new, seed=m.seed, base=m.base,
                                 live=self.pool.new_layer(live=True, like=top),
                                 generations=gens, labels=labels)
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

    def untag(self, name: str, tags: set[str], *, compact: bool = True) -> tuple[int, int]:
        """Forget the tags ``tags`` (their snapshots become untagged, so that
        compaction may squash them) and, with ``compact``, compact at once;
        returns (layers before, layers after).  Used by ``volmerge prune``
        for the snapshots of upgrade generations nobody can return to."""
        check_name(name)
        with self._lock_existing(name):
            m = self._read(name)
            before = len(m.frozen_layers())
            if any(g.tag in tags for g in m.generations):
                with self.pool.commit_lock():
                    gens = [replace(g, tag=None) if g.tag in tags else g for g in m.generations]
                    m = replace(m, generations=gens)
                    self.pool.write(m)
            if compact:
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
